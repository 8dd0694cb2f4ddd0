//! The HTTP/JSON service behind `rulehost serve`: the whole library over
//! `/v1`, for backends in any language.
//!
//! Every request but `/healthz` and `/v1/openapi.json` carries a bearer
//! token. An operator's token sees and changes only that operator's data
//! (another operator's resources answer 404, as if they did not exist); an
//! admin token creates operators and tokens and may act for every operator.
//! Errors are JSON `{ "error": { "code", "message" } }` (see [`ApiError`]).

mod api;
mod extract;
mod problem;
mod telemetry;
pub mod webhooks;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rulehost_sdk::wire::{Actor, Timestamp};
use serde_json::json;

pub use problem::{ApiError, ErrorBody};

pub(crate) use api::decode_bodies;

use crate::access::Refusal;
use crate::scheduler::{Clock, ManualClock, Scheduler};
use crate::store::TokenRecord;
use crate::{Host, Install, PolicyId};

/// The operators a fresh database gets, with the bundled policy set each
/// runs.
pub const DEMO_OPERATORS: [(&str, &str); 4] = [
    ("demo-gym", "gym"),
    ("demo-subscription", "subscription"),
    ("demo-collections", "collections"),
    ("demo-publishing", "publishing"),
];

/// How long a checked token is trusted before it is looked up again, so a
/// token revoked by another process stops working within this time.
const TOKEN_TTL: Duration = Duration::from_secs(5);

/// Tokens remembered at most; the memory is dropped whole beyond this.
const MAX_CACHED_TOKENS: usize = 10_000;

/// The service's limits.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Largest request body accepted, in bytes (413 beyond).
    pub body_limit: usize,
    /// Most events or audit records one listing returns.
    pub max_page: usize,
    /// Longest wait a consumer may ask for when it lists events and none
    /// are there (`?wait=SECONDS`).
    pub max_event_wait: Duration,
    /// How often a waiting listing looks for events written by another
    /// process on the same file; events this service writes end the wait
    /// at once.
    pub event_poll: Duration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            body_limit: 1024 * 1024,
            max_page: 1000,
            max_event_wait: Duration::from_secs(30),
            event_poll: Duration::from_secs(1),
        }
    }
}

/// Where the service's time comes from.
#[derive(Clone, Debug)]
pub enum ServiceClock {
    /// The system clock (production).
    System,
    /// A clock moved only through `POST /v1/clock` by an admin: for demos
    /// and tests, never for production.
    Manual(Arc<ManualClock>),
}

/// Who called: the token that authenticated the request.
#[derive(Clone, Debug)]
pub struct Caller {
    token: TokenRecord,
}

impl Caller {
    /// Whether this is an admin token.
    pub fn is_admin(&self) -> bool {
        self.token.operator.is_none()
    }

    /// Whether the caller may act for `operator`.
    fn may_act_for(&self, operator: &str) -> bool {
        self.token
            .operator
            .as_deref()
            .is_none_or(|own| own == operator)
    }

    /// Whether the caller may install, activate and roll back policy sets.
    fn may_install(&self) -> bool {
        self.is_admin() || self.token.can_install
    }

    /// Who the host records for what the caller does itself.
    fn actor(&self) -> Actor {
        Actor::system(format!("token:{}:{}", self.token.id, self.token.name))
    }
}

/// The state every handler shares.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

struct Shared {
    host: Arc<Host>,
    clock: Arc<dyn Clock>,
    manual: Option<Arc<ManualClock>>,
    scheduler: tokio::sync::Mutex<Option<Scheduler>>,
    tokens: Mutex<HashMap<String, (TokenRecord, Instant)>>,
    config: ServiceConfig,
    /// Set when the service begins to stop, which ends waiting requests
    /// and the webhook deliveries.
    stopping: tokio::sync::watch::Sender<bool>,
    deliveries: Arc<webhooks::Deliveries>,
}

impl AppState {
    /// The state for a service over `host`. With `scheduler`, due
    /// transitions fire inside the service. Inside a tokio runtime it also
    /// starts pushing events to the operators' webhooks
    /// ([`webhooks`]), until [`AppState::begin_stopping`] or the state is
    /// dropped.
    pub fn new(
        host: Arc<Host>,
        clock: ServiceClock,
        scheduler: Option<Scheduler>,
        config: ServiceConfig,
    ) -> Self {
        let (clock, manual): (Arc<dyn Clock>, _) = match clock {
            ServiceClock::System => (Arc::new(crate::SystemClock), None),
            ServiceClock::Manual(manual) => (manual.clone(), Some(manual)),
        };
        let stopping = tokio::sync::watch::Sender::new(false);
        let deliveries = Arc::new(webhooks::Deliveries::default());
        // Outside a runtime (a router built only to be inspected) nothing
        // is delivered.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(webhooks::run(
                Arc::clone(&host),
                Arc::clone(&deliveries),
                stopping.subscribe(),
                config.event_poll,
            ));
        }
        AppState(Arc::new(Shared {
            host,
            clock,
            manual,
            scheduler: tokio::sync::Mutex::new(scheduler),
            tokens: Mutex::new(HashMap::new()),
            config,
            stopping,
            deliveries,
        }))
    }

    /// The router: every route, with the OpenAPI document at
    /// `/v1/openapi.json`.
    pub fn router(&self) -> axum::Router {
        api::router(self.clone())
    }

    /// The OpenAPI document of every route.
    pub fn openapi(&self) -> utoipa::openapi::OpenApi {
        api::openapi()
    }

    /// Stops the scheduler, if it runs here.
    pub async fn stop_scheduler(&self) {
        if let Some(scheduler) = self.0.scheduler.lock().await.take() {
            scheduler.stop().await;
        }
    }

    /// Ends the requests that wait for events (they answer what there is),
    /// so a graceful shutdown does not wait for them. Called by [`serve`]
    /// when its shutdown signal comes.
    pub fn begin_stopping(&self) {
        self.0.stopping.send_replace(true);
    }

    /// Changes to `true` when the service begins to stop.
    fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.0.stopping.subscribe()
    }

    fn host(&self) -> &Arc<Host> {
        &self.0.host
    }

    fn deliveries(&self) -> &webhooks::Deliveries {
        &self.0.deliveries
    }

    fn now(&self) -> Timestamp {
        self.0.clock.now()
    }

    fn config(&self) -> &ServiceConfig {
        &self.0.config
    }

    /// Runs `work` on the blocking pool: it waits for the disk or the
    /// policy, which would stall the request workers.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Host) -> crate::Result<T> + Send + 'static,
    ) -> Result<T, ApiError> {
        let host = Arc::clone(&self.0.host);
        tokio::task::spawn_blocking(move || work(&host))
            .await
            .map_err(|e| ApiError::internal(format!("the request's work failed: {e}")))?
            .map_err(ApiError::from)
    }

    /// The caller a bearer secret belongs to.
    async fn authenticate(&self, secret: &str) -> Result<Caller, ApiError> {
        let hash = crate::access::secret_hash(secret);
        let now = self.now();
        let cached = {
            let tokens = self.0.tokens.lock().unwrap_or_else(PoisonError::into_inner);
            tokens
                .get(&hash)
                .filter(|(_, at)| at.elapsed() < TOKEN_TTL)
                .map(|(token, _)| token.clone())
        };
        let token = match cached {
            Some(token) => crate::access::check(Some(token), now),
            None => {
                let secret = secret.to_owned();
                let checked = self
                    .blocking(move |host| host.authenticate(&secret, now))
                    .await?;
                if let Ok(token) = &checked {
                    let mut tokens = self.0.tokens.lock().unwrap_or_else(PoisonError::into_inner);
                    if tokens.len() >= MAX_CACHED_TOKENS {
                        tokens.clear();
                    }
                    tokens.insert(hash, (token.clone(), Instant::now()));
                }
                checked
            }
        };
        token
            .map(|token| Caller { token })
            .map_err(|refusal: Refusal| ApiError::unauthorized(refusal.message()))
    }

    /// Forgets cached tokens (after a revocation here).
    fn forget_tokens(&self) {
        self.0
            .tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// Gives a fresh database its demo operators, each running its bundled
/// policy set as version 1, and an admin token. Returns the admin token's
/// secret, or `None` when the database already had operators.
///
/// # Errors
///
/// Store and load errors.
pub fn seed_demo(host: &Host, now: Timestamp) -> crate::Result<Option<String>> {
    if !host.list_operators()?.is_empty() {
        return Ok(None);
    }
    let by = Actor::system("rulehost-demo");
    for (operator, flavour) in DEMO_OPERATORS {
        let wasm = crate::bundled::get(flavour)
            .ok_or_else(|| crate::Error::Store(format!("no bundled policy set `{flavour}`")))?;
        match host.create_operator(operator, now) {
            // Another process seeding the same file at once got here first.
            Err(crate::Error::OperatorExists(_)) => return Ok(None),
            other => other?,
        }
        let install = Install {
            id: PolicyId::new(flavour, 1),
            wasm,
            signature: None,
            settings: &json!({}),
            activate: true,
        };
        host.install_with(operator, install, &by, now)?;
    }
    let (secret, _) = host.create_token(None, "first-start", false, None, now)?;
    Ok(Some(secret))
}

/// Serves `state` on `listener` until `shutdown` resolves; requests in
/// flight finish first, then the scheduler stops.
///
/// # Errors
///
/// I/O errors of the listener.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stopping = state.clone();
    axum::serve(listener, state.router())
        .with_graceful_shutdown(async move {
            shutdown.await;
            stopping.begin_stopping();
        })
        .await?;
    state.stop_scheduler().await;
    Ok(())
}
