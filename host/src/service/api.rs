//! The routes under `/v1`, each documented for the OpenAPI document by its
//! `#[utoipa::path]`.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use rulehost_sdk::wire::{
    Actor, AuthorizeDecision, AuthorizeInput, BillingInput, Hook, Subject, SubjectKind, SubjectRef,
    Timestamp, TransitionDecision, TransitionInput, Trigger,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Json as Body, JsonBytes, Path, Query, Scoped, parse_json};
use super::problem::{ApiError, ErrorBody};
use super::telemetry::{self, OutcomeName};
use super::{AppState, Caller};
use crate::import::{ImportFormat, OnBadRow};
use crate::store::{Resolution, ScheduleState};
use crate::{Evaluation, Install, PolicyId, ReplayWith};

type Reply = Result<Response, ApiError>;

/// The document's frame: title, version, the bearer scheme.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "rulehost",
        description = "Lifecycle rules for SaaS backends, decided by sandboxed WebAssembly policies."
    ),
    modifiers(&BearerAuth),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every documented route.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
        .routes(routes!(get_clock, move_clock))
        .routes(routes!(list_operators, create_operator))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
        .routes(routes!(evaluate))
        .routes(routes!(subject_state))
        .routes(routes!(perform_action))
        .routes(routes!(lock))
        .routes(routes!(unlock))
        .routes(routes!(export_subject))
        .routes(routes!(anonymize_subject))
        .routes(routes!(list_events))
        .routes(routes!(get_webhook, set_webhook, remove_webhook))
        .routes(routes!(ack_events))
        .routes(routes!(list_schedules))
        .routes(routes!(resolve_held))
        .routes(routes!(list_audit))
        .routes(routes!(audit_record))
        .routes(routes!(verify_audit))
        .routes(routes!(replay))
        .routes(routes!(list_policies, install_policy))
        .routes(routes!(list_keys, trust_key))
        .routes(routes!(activate_policy))
        .routes(routes!(compare_policy))
        .routes(routes!(rollback_policy))
        .routes(routes!(import_locks))
}

/// The OpenAPI document.
pub(super) fn openapi() -> utoipa::openapi::OpenApi {
    routes().split_for_parts().1
}

/// The router with its fallbacks and limits.
pub(super) fn router(state: AppState) -> Router {
    telemetry::init();
    let limit = state.config().body_limit;
    let (router, _) = routes().split_for_parts();
    router
        .fallback(async |uri: axum::http::Uri| {
            ApiError::not_found("no_route", format!("no route `{}`", uri.path()))
        })
        .method_not_allowed_fallback(async |method: axum::http::Method, uri: axum::http::Uri| {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("`{method}` is not allowed on `{}`", uri.path()),
            )
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                ApiError::internal("the request failed inside the host; nothing was written")
                    .into_response()
            },
        ))
        .with_state(state)
}

fn ok(value: impl serde::Serialize) -> Reply {
    Ok(axum::Json(value).into_response())
}

fn created(value: impl serde::Serialize) -> Reply {
    Ok((StatusCode::CREATED, axum::Json(value)).into_response())
}

/// 404 for an operator the caller may not see, exactly as for one that
/// does not exist.
fn unknown_operator(operator: &str) -> ApiError {
    ApiError::from(crate::Error::UnknownOperator(operator.to_owned()))
}

/// Checks the caller may act for `operator` and that it exists.
pub(super) async fn scope(
    state: &AppState,
    caller: &Caller,
    operator: &str,
) -> Result<(), ApiError> {
    if !caller.may_act_for(operator) {
        return Err(unknown_operator(operator));
    }
    if state.host().operators().active(operator).is_ok() {
        return Ok(());
    }
    let operators = state.blocking(|host| host.list_operators()).await?;
    if operators.iter().any(|known| known.id == operator) {
        Ok(())
    } else {
        Err(unknown_operator(operator))
    }
}

fn admin_only(caller: &Caller) -> Result<(), ApiError> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(ApiError::forbidden("this needs an admin token"))
    }
}

fn subject_ref(kind: &str, id: &str) -> Result<SubjectRef, ApiError> {
    let kind: SubjectKind = kind
        .parse()
        .map_err(|e: String| ApiError::bad_request("invalid_path", e))?;
    Ok(SubjectRef::new(kind, id))
}

/// Is the service up and its store answering?
#[utoipa::path(get, path = "/healthz", tag = "service",
    responses((status = 200, description = "Up", body = Object), (status = 503, body = ErrorBody)))]
async fn healthz(State(state): State<AppState>) -> Reply {
    match state.blocking(|host| host.next_due()).await {
        Ok(_) => ok(json!({ "status": "ok" })),
        Err(error) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("the store does not answer: {}", error.message),
        )),
    }
}

/// Metrics in Prometheus text format (admin token).
#[utoipa::path(get, path = "/metrics", tag = "service", security(("bearer" = [])),
    responses((status = 200, description = "Prometheus text", content_type = "text/plain"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn metrics(State(state): State<AppState>, caller: Caller) -> Reply {
    admin_only(&caller)?;
    let now = state.now();
    let (next, held, operators) = state
        .blocking(|host| {
            let operators = host.operators().ids();
            Ok((host.next_due()?, host.held_schedules()?, operators))
        })
        .await?;
    // Every operator gets a value, so a count that went back to 0 shows.
    let held = operators
        .into_iter()
        .map(|operator| {
            let count = held.get(&operator).copied().unwrap_or(0);
            (operator, count)
        })
        .collect::<Vec<_>>();
    let lag = next
        .map(|due| now.get() - due.get())
        .filter(|lag| lag.is_positive())
        .and_then(|lag| Duration::try_from(lag).ok())
        .unwrap_or_default();
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        telemetry::render(lag, &held),
    )
        .into_response())
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "service",
    responses((status = 200, description = "The OpenAPI document", body = Object)))]
async fn openapi_json() -> Response {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    let document = DOCUMENT.get_or_init(|| {
        openapi()
            .to_json()
            .unwrap_or_else(|e| json!({ "error": e.to_string() }).to_string())
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.clone(),
    )
        .into_response()
}

/// The service's time.
#[utoipa::path(get, path = "/v1/clock", tag = "service", security(("bearer" = [])),
    responses((status = 200, description = "`now` and whether the clock is manual", body = Object),
        (status = 401, body = ErrorBody)))]
async fn get_clock(State(state): State<AppState>, _caller: Caller) -> Reply {
    ok(json!({ "now": state.now(), "manual": state.0.manual.is_some() }))
}

/// Moves a manual clock.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct MoveClock {
    /// Seconds to move forward.
    advance_seconds: Option<i64>,
    /// A time to move to (RFC 3339).
    #[schema(value_type = Option<String>)]
    set: Option<Timestamp>,
}

/// Moves the manual clock (admin token; only when started with `--clock`),
/// then waits until the scheduler has fired what is due (at most 30 s)
/// and answers what it fired for the new time, over all its runs.
#[utoipa::path(post, path = "/v1/clock", tag = "service", security(("bearer" = [])),
    request_body = MoveClock,
    responses((status = 200, description = "The new `now` and what fired", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn move_clock(
    State(state): State<AppState>,
    caller: Caller,
    Body(request): Body<MoveClock>,
) -> Reply {
    admin_only(&caller)?;
    let Some(clock) = state.0.manual.clone() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "clock_not_manual",
            "the service runs on the system clock; start it with `--clock TIME` to move time",
        ));
    };
    match (request.advance_seconds, request.set) {
        (Some(seconds), None) if seconds >= 0 => {
            let now = state.now().get();
            let later = now
                .checked_add(time::Duration::seconds(seconds))
                .filter(|later| later.year() <= 9999)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_body",
                        format!("`advance_seconds` `{seconds}` moves the clock past the year 9999"),
                    )
                })?;
            clock.set(Timestamp(later));
        }
        (Some(seconds), None) => {
            return Err(ApiError::bad_request(
                "invalid_body",
                format!("`advance_seconds` must not be negative, got `{seconds}`"),
            ));
        }
        (None, Some(at)) => clock.set(at),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_body",
                "give exactly one of `advance_seconds` and `set`",
            ));
        }
    }
    let now = state.now();
    let mut scheduler = state.0.scheduler.lock().await;
    let run = match scheduler.as_mut() {
        Some(scheduler) => {
            match tokio::time::timeout(Duration::from_secs(30), scheduler.ran_through(now)).await {
                Ok(run) => run,
                // Schedules still due after 30 s: what fired so far.
                Err(_) => scheduler.last_run().filter(|run| run.now >= now),
            }
        }
        None => None,
    };
    let fired = run.map(|run| match run.result {
        Ok(report) => json!(report),
        Err(error) => json!({ "error": error }),
    });
    ok(json!({ "now": now, "fired": fired }))
}

/// A new operator.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateOperator {
    /// Its id: 1 to 64 of `a-z`, `0-9`, `-`, `_`.
    id: String,
    /// A bundled policy set to install as version 1 and activate.
    flavour: Option<String>,
    /// Settings for that policy set (default `{}`).
    #[schema(value_type = Option<Object>)]
    settings: Option<Value>,
}

/// Every operator (admin), or the caller's own.
#[utoipa::path(get, path = "/v1/operators", tag = "operators", security(("bearer" = [])),
    responses((status = 200, description = "Operators", body = Object), (status = 401, body = ErrorBody)))]
async fn list_operators(State(state): State<AppState>, caller: Caller) -> Reply {
    let operators = state.blocking(|host| host.list_operators()).await?;
    let visible: Vec<_> = operators
        .into_iter()
        .filter(|operator| caller.may_act_for(&operator.id))
        .collect();
    ok(json!({ "operators": visible }))
}

/// Creates an operator (admin token).
#[utoipa::path(post, path = "/v1/operators", tag = "operators", security(("bearer" = [])),
    request_body = CreateOperator,
    responses((status = 201, description = "Created", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_operator(
    State(state): State<AppState>,
    caller: Caller,
    Body(request): Body<CreateOperator>,
) -> Reply {
    admin_only(&caller)?;
    let wasm = match &request.flavour {
        Some(flavour) => Some(crate::bundled::get(flavour).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_body",
                format!("invalid body at `flavour`: no bundled policy set `{flavour}`"),
            )
        })?),
        None => None,
    };
    crate::access::check_operator_id(&request.id)?;
    let now = state.now();
    let by = caller.actor();
    let settings = request.settings.unwrap_or_else(|| json!({}));
    let flavour = request.flavour.clone();
    let id = request.id.clone();
    let policy = state
        .blocking(move |host| {
            let policy = flavour.map(|flavour| PolicyId::new(flavour, 1));
            let (Some(policy_id), Some(wasm)) = (&policy, wasm) else {
                host.create_operator(&id, now)?;
                return Ok(policy);
            };
            if host.list_operators()?.iter().any(|known| known.id == id) {
                return Err(crate::Error::OperatorExists(id));
            }
            // Installing checks the module and the settings first, then
            // stores the operator with its first version in one
            // transaction: a refused policy set leaves nothing behind.
            let install = Install {
                id: policy_id.clone(),
                wasm,
                signature: None,
                settings: &settings,
                activate: true,
            };
            host.install_with(&id, install, &by, now)?;
            Ok(policy)
        })
        .await?;
    created(json!({ "id": request.id, "created_at": now, "active_policy": policy }))
}

/// A new token.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    /// A name for people (`billing-backend`).
    name: String,
    /// Whether it may install, activate and roll back policy sets.
    #[serde(default)]
    can_install: bool,
    /// When it stops working (RFC 3339).
    #[schema(value_type = Option<String>)]
    expires_at: Option<Timestamp>,
}

/// The operator's tokens, without secrets (admin token).
#[utoipa::path(get, path = "/v1/operators/{operator}/tokens", tag = "operators",
    security(("bearer" = [])), params(("operator" = String, Path)),
    responses((status = 200, description = "Tokens", body = Object),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_tokens(State(state): State<AppState>, Scoped { caller, operator }: Scoped) -> Reply {
    admin_only(&caller)?;
    let tokens = state
        .blocking(move |host| host.tokens(Some(&operator)))
        .await?;
    ok(json!({ "tokens": tokens }))
}

/// Makes a token for the operator (admin token). The secret is in this
/// answer only.
#[utoipa::path(post, path = "/v1/operators/{operator}/tokens", tag = "operators",
    security(("bearer" = [])), params(("operator" = String, Path)), request_body = CreateToken,
    responses((status = 201, description = "The token, with its secret", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn create_token(
    State(state): State<AppState>,
    Scoped { caller, operator }: Scoped,
    Body(request): Body<CreateToken>,
) -> Reply {
    admin_only(&caller)?;
    let now = state.now();
    if let Some(expires_at) = request.expires_at.filter(|at| *at <= now) {
        return Err(ApiError::bad_request(
            "invalid_body",
            format!("invalid body at `expires_at`: `{expires_at}` is not after now `{now}`"),
        ));
    }
    let (secret, record) = state
        .blocking(move |host| {
            host.create_token(
                Some(&operator),
                &request.name,
                request.can_install,
                request.expires_at,
                now,
            )
        })
        .await?;
    created(json!({ "token": secret, "record": record }))
}

/// Revokes a token of the operator (admin token).
#[utoipa::path(delete, path = "/v1/operators/{operator}/tokens/{id}", tag = "operators",
    security(("bearer" = [])), params(("operator" = String, Path), ("id" = u64, Path)),
    responses((status = 204, description = "Revoked"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn revoke_token(
    State(state): State<AppState>,
    Scoped { caller, .. }: Scoped,
    Path((operator, id)): Path<(String, u64)>,
) -> Reply {
    admin_only(&caller)?;
    let now = state.now();
    state
        .blocking(move |host| host.revoke_token(Some(&operator), id, now))
        .await?;
    state.forget_tokens();
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn evaluated<T: OutcomeName + serde::Serialize>(
    operator: &str,
    evaluation: crate::Result<Evaluation<T>>,
    started: Instant,
) -> Reply {
    let evaluation = evaluation?;
    telemetry::record(operator, &evaluation, started.elapsed());
    ok(evaluation)
}

/// Evaluates a hook of the operator's active policy set, with the host's
/// state added to the subject. `transition` is evaluated only: nothing is
/// applied (use an action for that).
#[utoipa::path(post, path = "/v1/operators/{operator}/hooks/{hook}", tag = "decisions",
    security(("bearer" = [])),
    params(("operator" = String, Path),
        ("hook" = String, Path, description = "`authorize`, `billing`, `transition` or `validate_settings`")),
    request_body(content = Object, description = "The hook's input, as in sdk/ABI.md; for `validate_settings`, the settings to check"),
    responses((status = 200, description = "The evaluation: decision, policy, diagnostic", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
async fn evaluate(
    State(state): State<AppState>,
    _scope: Scoped,
    Path((operator, hook)): Path<(String, String)>,
    JsonBytes(body): JsonBytes,
) -> Reply {
    let hook: Hook = hook.parse().map_err(|e: rulehost_sdk::wire::UnknownHook| {
        ApiError::bad_request("invalid_path", e.to_string())
    })?;
    let host = state.host();
    let now = state.now();
    let started = Instant::now();
    match hook {
        Hook::Authorize => {
            let input: AuthorizeInput = parse_json(&body)?;
            evaluated(&operator, host.authorize(&operator, now, input), started)
        }
        Hook::Billing => {
            let input: BillingInput = parse_json(&body)?;
            evaluated(&operator, host.billing(&operator, now, input), started)
        }
        Hook::Transition => {
            let input: TransitionInput = parse_json(&body)?;
            evaluated(
                &operator,
                host.preview_transition(&operator, now, input),
                started,
            )
        }
        Hook::ValidateSettings => {
            // The settings to check are the body; the hook's input is null.
            let settings = crate::Settings::from_value(&operator, &parse_json::<Value>(&body)?)?;
            let active = host.operators().active(&operator)?;
            let evaluation = active
                .policy
                .evaluate::<rulehost_sdk::wire::ValidateSettings>(
                    &operator,
                    now,
                    &settings,
                    &Value::Null,
                );
            evaluated(&operator, Ok(evaluation), started)
        }
    }
}

/// What the host keeps about a subject: status, switches, parent,
/// children and the locks active now.
#[utoipa::path(get, path = "/v1/operators/{operator}/subjects/{kind}/{id}", tag = "subjects",
    security(("bearer" = [])),
    params(("operator" = String, Path), ("kind" = String, Path), ("id" = String, Path)),
    responses((status = 200, description = "The subject's state", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn subject_state(
    State(state): State<AppState>,
    _scope: Scoped,
    Path((operator, kind, id)): Path<(String, String, String)>,
) -> Reply {
    let subject = subject_ref(&kind, &id)?;
    let now = state.now();
    let reference = subject.clone();
    let found = state
        .blocking(move |host| host.subject(&operator, &reference, now))
        .await?;
    ok(json!({ "subject": subject, "state": found }))
}

/// An action on a subject.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ActionRequest {
    /// Who runs it: `{ "kind": "staff" | "self_service" | "system", "id": ... }`.
    #[schema(value_type = Object)]
    actor: Actor,
    /// The action's parameters, as the policy set documents them.
    #[serde(default)]
    #[schema(value_type = Object)]
    params: Value,
    /// Acknowledgements given (COL-3): passed to `authorize`, and to
    /// `transition` as `params.acknowledgements` unless the params have
    /// their own.
    #[serde(default)]
    acknowledgements: Vec<String>,
    /// What the backend knows of the subject beyond the host's state:
    /// `parent`, `attributes`, `status`...
    #[schema(value_type = Option<Object>)]
    subject: Option<Map<String, Value>>,
}

/// Runs an action: `authorize`, then `transition`, then the effects are
/// applied with their audit record and events in one transaction. A refusal
/// by the policy is a 422 carrying its decision.
#[utoipa::path(post, path = "/v1/operators/{operator}/subjects/{kind}/{id}/actions/{action}",
    tag = "subjects", security(("bearer" = [])),
    params(("operator" = String, Path), ("kind" = String, Path), ("id" = String, Path), ("action" = String, Path)),
    request_body = ActionRequest,
    responses((status = 200, description = "The decision, the events queued and the effects left to the backend", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn perform_action(
    State(state): State<AppState>,
    _scope: Scoped,
    Path((operator, kind, id, action)): Path<(String, String, String, String)>,
    Body(request): Body<ActionRequest>,
) -> Reply {
    run_action(state, (operator, kind, id), action, request).await
}

/// A lock or an unlock: the actor, and the action's parameters beside it.
#[derive(Deserialize, ToSchema)]
struct LockRequest {
    /// Who locks or unlocks.
    #[schema(value_type = Object)]
    actor: Actor,
    /// Every other field is a parameter of the policy set's `lock` or
    /// `unlock` action: `reason`, `duration`, `until`, `message`...
    #[serde(flatten)]
    #[schema(value_type = Object)]
    params: Map<String, Value>,
}

impl From<LockRequest> for ActionRequest {
    fn from(request: LockRequest) -> Self {
        ActionRequest {
            actor: request.actor,
            params: Value::Object(request.params),
            acknowledgements: Vec::new(),
            subject: None,
        }
    }
}

/// Locks a subject: the action `lock`, with the other fields as its
/// parameters.
#[utoipa::path(post, path = "/v1/operators/{operator}/subjects/{kind}/{id}/lock",
    tag = "subjects", security(("bearer" = [])),
    params(("operator" = String, Path), ("kind" = String, Path), ("id" = String, Path)),
    request_body = LockRequest,
    responses((status = 200, description = "Locked", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn lock(
    State(state): State<AppState>,
    _scope: Scoped,
    Path(subject): Path<(String, String, String)>,
    Body(request): Body<LockRequest>,
) -> Reply {
    run_action(state, subject, "lock".into(), request.into()).await
}

/// Lifts a lock: the action `unlock`, with the other fields as its
/// parameters.
#[utoipa::path(post, path = "/v1/operators/{operator}/subjects/{kind}/{id}/unlock",
    tag = "subjects", security(("bearer" = [])),
    params(("operator" = String, Path), ("kind" = String, Path), ("id" = String, Path)),
    request_body = LockRequest,
    responses((status = 200, description = "Unlocked", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn unlock(
    State(state): State<AppState>,
    _scope: Scoped,
    Path(subject): Path<(String, String, String)>,
    Body(request): Body<LockRequest>,
) -> Reply {
    run_action(state, subject, "unlock".into(), request.into()).await
}

async fn run_action(
    state: AppState,
    (operator, kind, id): (String, String, String),
    action: String,
    request: ActionRequest,
) -> Reply {
    let reference = subject_ref(&kind, &id)?;
    let subject = backend_subject(&reference, request.subject)?;
    let mut params = request.params;
    if !request.acknowledgements.is_empty() {
        match &mut params {
            Value::Null => params = json!({ "acknowledgements": request.acknowledgements }),
            Value::Object(fields) => {
                fields
                    .entry("acknowledgements")
                    .or_insert_with(|| json!(request.acknowledgements));
            }
            _ => {}
        }
    }
    let now = state.now();
    let authorize = AuthorizeInput {
        action: action.clone(),
        actor: request.actor.clone(),
        subject: subject.clone(),
        acknowledgements: request.acknowledgements,
        params: params.clone(),
    };
    let transition = TransitionInput {
        trigger: Trigger::Action,
        action,
        actor: request.actor,
        subject,
        params,
    };
    let metrics_operator = operator.clone();
    let (authorization, outcome) = state
        .blocking(move |host| {
            let started = Instant::now();
            let authorization = host.authorize(&operator, now, authorize)?;
            telemetry::record(&operator, &authorization, started.elapsed());
            if authorization.decision != AuthorizeDecision::Allow {
                return Ok((authorization, None));
            }
            let outcome = host.transition(&operator, now, transition)?;
            Ok((authorization, Some(outcome)))
        })
        .await?;
    let Some(outcome) = outcome else {
        let decision = json!(authorization);
        return Err(match authorization.decision {
            AuthorizeDecision::Deny { code, reason } => ApiError::refused(code, reason, decision),
            AuthorizeDecision::NeedsConfirmation { required } => ApiError::refused(
                "needs_confirmation".to_owned(),
                format!(
                    "the action needs {} acknowledgement(s) first: see `decision.decision.required`",
                    required.len()
                ),
                decision,
            ),
            AuthorizeDecision::Allow => ApiError::internal("an allowed action was not run"),
        });
    };
    telemetry::count(&metrics_operator, &outcome.evaluation);
    if let TransitionDecision::Refuse { code, reason } = &outcome.evaluation.decision {
        return Err(ApiError::refused(
            code.clone(),
            reason.clone(),
            json!(outcome.evaluation),
        ));
    }
    ok(json!({
        "decision": outcome.evaluation,
        "audit_seq": outcome.committed.as_ref().map(|c| c.audit_seq),
        "locks_created": outcome.committed.as_ref().map(|c| &c.locks_created),
        "locks_lifted": outcome.committed.as_ref().map(|c| &c.locks_lifted),
        "events": outcome.events,
        "backend_effects": outcome.backend,
    }))
}

/// The subject as the policy sees it: what the backend passed, with the
/// kind and id from the path.
fn backend_subject(
    reference: &SubjectRef,
    given: Option<Map<String, Value>>,
) -> Result<Subject, ApiError> {
    let mut fields = given.unwrap_or_default();
    for (field, value) in [
        ("kind", reference.kind.name()),
        ("id", reference.id.as_str()),
    ] {
        if let Some(other) = fields
            .get(field)
            .filter(|other| other.as_str() != Some(value))
        {
            return Err(ApiError::bad_request(
                "invalid_body",
                format!(
                    "invalid body at `subject.{field}`: `{other}` differs from the path's `{value}`"
                ),
            ));
        }
        fields.insert(field.to_owned(), Value::from(value));
    }
    let mut subject: Subject =
        serde_path_to_error::deserialize(Value::Object(fields)).map_err(|error| {
            ApiError::bad_request(
                "invalid_body",
                format!(
                    "invalid body at `subject.{}`: {}",
                    error.path(),
                    error.inner()
                ),
            )
        })?;
    // The host's own state is added by the host; the backend's claims about
    // locks do not count.
    subject.locks.clear();
    Ok(subject)
}

/// Everything the host holds about a subject (PUB-4).
#[utoipa::path(get, path = "/v1/operators/{operator}/subjects/{kind}/{id}/export", tag = "subjects",
    security(("bearer" = [])),
    params(("operator" = String, Path), ("kind" = String, Path), ("id" = String, Path)),
    responses((status = 200, description = "State, locks, schedules, audit records, events", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn export_subject(
    State(state): State<AppState>,
    _scope: Scoped,
    Path((operator, kind, id)): Path<(String, String, String)>,
) -> Reply {
    let subject = subject_ref(&kind, &id)?;
    let now = state.now();
    let records = state
        .blocking(move |host| host.export_subject(&operator, &subject, now))
        .await?;
    ok(records)
}

/// Who anonymizes.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ActorOnly {
    /// The actor recorded.
    #[schema(value_type = Object)]
    actor: Actor,
}

/// Anonymizes a subject in the host's records (PUB-5); the audit chain
/// still verifies.
#[utoipa::path(post, path = "/v1/operators/{operator}/subjects/{kind}/{id}/anonymize", tag = "subjects",
    security(("bearer" = [])),
    params(("operator" = String, Path), ("kind" = String, Path), ("id" = String, Path)),
    request_body = ActorOnly,
    responses((status = 200, description = "What was anonymized", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn anonymize_subject(
    State(state): State<AppState>,
    _scope: Scoped,
    Path((operator, kind, id)): Path<(String, String, String)>,
    Body(request): Body<ActorOnly>,
) -> Reply {
    let subject = subject_ref(&kind, &id)?;
    let now = state.now();
    let done = state
        .blocking(move |host| host.anonymize_subject(&operator, &subject, &request.actor, now))
        .await?;
    ok(done)
}

/// Which events to list.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    /// The consumer whose cursor applies.
    consumer: String,
    /// At most this many (default and maximum: the service's page size).
    limit: Option<usize>,
    /// When there are none, wait up to this many seconds for some (long
    /// polling; at most the service's `max_event_wait`, 30 s by default).
    wait: Option<u64>,
}

/// The operator's events the consumer has not acknowledged, oldest first
/// (at least once). With `wait`, an empty answer is held back until an
/// event comes, the wait is over or the service stops.
#[utoipa::path(get, path = "/v1/operators/{operator}/events", tag = "events",
    security(("bearer" = [])), params(("operator" = String, Path), EventsQuery),
    responses((status = 200, description = "Events", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_events(
    State(state): State<AppState>,
    Scoped { operator, .. }: Scoped,
    Query(query): Query<EventsQuery>,
) -> Reply {
    let limit = page(&state, query.limit)?;
    let max_wait = state.config().max_event_wait;
    let wait = match query.wait.map(Duration::from_secs) {
        None => Duration::ZERO,
        Some(wait) if wait <= max_wait => wait,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!(
                    "`wait` must be 0 to {} seconds, got `{}`",
                    max_wait.as_secs(),
                    query.wait.unwrap_or_default()
                ),
            ));
        }
    };
    let deadline = tokio::time::Instant::now() + wait;
    // Subscribed before the first look, so an event written in between
    // is not missed.
    let mut written = state.host().watch_events();
    let mut stopping = state.stopping();
    loop {
        written.borrow_and_update();
        let (operator, consumer) = (operator.clone(), query.consumer.clone());
        let events = state
            .blocking(move |host| host.events(&operator, &consumer, limit))
            .await?;
        let now = tokio::time::Instant::now();
        if !events.is_empty() || now >= deadline || *stopping.borrow_and_update() {
            return ok(json!({ "events": events }));
        }
        let look_again = deadline.min(now + state.config().event_poll);
        tokio::select! {
            _ = written.changed() => {}
            _ = stopping.changed() => {}
            () = tokio::time::sleep_until(look_again) => {}
        }
    }
}

fn page(state: &AppState, limit: Option<usize>) -> Result<usize, ApiError> {
    let max = state.config().max_page;
    match limit {
        None => Ok(max),
        Some(limit) if (1..=max).contains(&limit) => Ok(limit),
        Some(limit) => Err(ApiError::bad_request(
            "invalid_query",
            format!("`limit` must be 1 to {max}, got `{limit}`"),
        )),
    }
}

/// An acknowledgement.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Ack {
    /// The consumer.
    consumer: String,
    /// Every event up to this one is acknowledged.
    seq: u64,
}

/// Acknowledges the operator's events up to `seq` for a consumer.
#[utoipa::path(post, path = "/v1/operators/{operator}/events/ack", tag = "events",
    security(("bearer" = [])), params(("operator" = String, Path)), request_body = Ack,
    responses((status = 204, description = "Acknowledged"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn ack_events(
    State(state): State<AppState>,
    Scoped { operator, .. }: Scoped,
    Body(ack): Body<Ack>,
) -> Reply {
    state
        .blocking(move |host| host.ack(&operator, &ack.consumer, ack.seq))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A page of audit records.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// Records after this sequence number (default 0).
    after: Option<u64>,
    /// At most this many.
    limit: Option<usize>,
}

/// The operator's audit records, oldest first.
#[utoipa::path(get, path = "/v1/operators/{operator}/audit", tag = "audit",
    security(("bearer" = [])), params(("operator" = String, Path), AuditQuery),
    responses((status = 200, description = "Audit records", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_audit(
    State(state): State<AppState>,
    Scoped { operator, .. }: Scoped,
    Query(query): Query<AuditQuery>,
) -> Reply {
    let limit = page(&state, query.limit)?;
    let after = query.after.unwrap_or(0);
    let records = state
        .blocking(move |host| host.audit_records(&operator, after, limit))
        .await?;
    ok(json!({ "records": records }))
}

/// Which schedules to list.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct ScheduleQuery {
    /// `pending`, `held`, `fired` or `cancelled` (default: all).
    state: Option<String>,
    /// Schedules with an id after this one (default 0).
    after: Option<i64>,
    /// At most this many.
    limit: Option<usize>,
}

/// The operator's scheduled transitions across its subjects, by id: what
/// is pending, held because its policy failed, fired or cancelled.
#[utoipa::path(get, path = "/v1/operators/{operator}/schedules", tag = "subjects",
    security(("bearer" = [])), params(("operator" = String, Path), ScheduleQuery),
    responses((status = 200, description = "Schedules", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_schedules(
    State(state): State<AppState>,
    Scoped { operator, .. }: Scoped,
    Query(query): Query<ScheduleQuery>,
) -> Reply {
    let limit = page(&state, query.limit)?;
    let which = query
        .state
        .as_deref()
        .map(str::parse::<ScheduleState>)
        .transpose()
        .map_err(|message| ApiError::bad_request("invalid_query", message))?;
    let after = query.after.unwrap_or(0);
    let schedules = state
        .blocking(move |host| host.schedules(&operator, which, after, limit))
        .await?;
    ok(json!({ "schedules": schedules }))
}

/// Where to push the operator's events.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SetWebhook {
    /// `http://HOST[:PORT]/PATH`.
    url: String,
}

/// Pushes the operator's events to `url` from now on (HOST-7), replacing
/// the webhook it had (which then goes on where it stopped); an admin
/// token or one that may install. Answers the signing secret, shown only
/// now (see `service::webhooks`).
#[utoipa::path(put, path = "/v1/operators/{operator}/webhook", tag = "events",
    security(("bearer" = [])), params(("operator" = String, Path)), request_body = SetWebhook,
    responses((status = 200, description = "Set; the secret", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn set_webhook(
    State(state): State<AppState>,
    Scoped { caller, operator }: Scoped,
    Body(request): Body<SetWebhook>,
) -> Reply {
    may_install(&caller)?;
    let by = caller.actor();
    let now = state.now();
    let url = request.url.clone();
    let secret = state
        .blocking(move |host| host.set_webhook(&operator, &request.url, &by, now))
        .await?;
    ok(json!({ "url": url, "secret": secret }))
}

/// The operator's webhook and how its deliveries go, or 404 `no_webhook`.
#[utoipa::path(get, path = "/v1/operators/{operator}/webhook", tag = "events",
    security(("bearer" = [])), params(("operator" = String, Path)),
    responses((status = 200, description = "The webhook", body = Object),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_webhook(State(state): State<AppState>, Scoped { operator, .. }: Scoped) -> Reply {
    let lookup = operator.clone();
    let webhook = state
        .blocking(move |host| {
            Ok(host
                .webhooks()?
                .into_iter()
                .find(|webhook| webhook.operator == lookup))
        })
        .await?
        .ok_or_else(|| {
            ApiError::not_found(
                "no_webhook",
                format!("operator `{operator}` has no webhook"),
            )
        })?;
    let delivery = state.deliveries().status(&operator);
    ok(json!({ "url": webhook.url, "created_at": webhook.created_at, "delivery": delivery }))
}

/// Stops pushing the operator's events; an admin token or one that may
/// install.
#[utoipa::path(delete, path = "/v1/operators/{operator}/webhook", tag = "events",
    security(("bearer" = [])), params(("operator" = String, Path)),
    responses((status = 200, description = "Removed", body = Object),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn remove_webhook(
    State(state): State<AppState>,
    Scoped { caller, operator }: Scoped,
) -> Reply {
    may_install(&caller)?;
    let by = caller.actor();
    let now = state.now();
    state
        .blocking(move |host| host.remove_webhook(&operator, &by, now))
        .await?;
    ok(json!({ "removed": true }))
}

/// Who settles a held schedule, and why.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ResolveRequest {
    /// Who retries or drops it.
    #[schema(value_type = Object)]
    actor: Actor,
    /// Why, for the audit trail; required.
    reason: String,
}

/// Settles a schedule held because its policy failed: `retry` lets it fire
/// again at the next run, `drop` cancels it for good (see
/// `Host::resolve_held`). Announced as `schedule.retried` or
/// `schedule.dropped`.
#[utoipa::path(post, path = "/v1/operators/{operator}/schedules/{id}/{resolution}",
    tag = "subjects", security(("bearer" = [])),
    params(("operator" = String, Path), ("id" = i64, Path),
        ("resolution" = String, Path, description = "`retry` or `drop`")),
    request_body = ResolveRequest,
    responses((status = 200, description = "Resolved", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn resolve_held(
    State(state): State<AppState>,
    _scope: Scoped,
    Path((operator, id, resolution)): Path<(String, i64, String)>,
    Body(request): Body<ResolveRequest>,
) -> Reply {
    let resolution: Resolution = resolution
        .parse()
        .map_err(|e: String| ApiError::bad_request("invalid_path", e))?;
    let now = state.now();
    let resolved = state
        .blocking(move |host| {
            host.resolve_held(
                &operator,
                id,
                resolution,
                &request.actor,
                &request.reason,
                now,
            )
        })
        .await?;
    ok(json!(resolved))
}

/// The operator's audit record `seq`, or 404.
async fn own_record(
    state: &AppState,
    operator: &str,
    seq: u64,
) -> Result<crate::store::AuditRecord, ApiError> {
    let record = state.blocking(move |host| host.audit_record(seq)).await?;
    if record.operator == operator {
        Ok(record)
    } else {
        Err(crate::Error::UnknownAuditRecord(seq).into())
    }
}

/// One audit record of the operator.
#[utoipa::path(get, path = "/v1/operators/{operator}/audit/{seq}", tag = "audit",
    security(("bearer" = [])), params(("operator" = String, Path), ("seq" = u64, Path)),
    responses((status = 200, description = "The record", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn audit_record(
    State(state): State<AppState>,
    _scope: Scoped,
    Path((operator, seq)): Path<(String, u64)>,
) -> Reply {
    ok(own_record(&state, &operator, seq).await?)
}

/// Verifies the audit trail's hash chain (HOST-4). The chain is one for
/// the host, so the whole of it is checked; a broken link is reported by
/// position and reason only.
#[utoipa::path(post, path = "/v1/operators/{operator}/audit/verify", tag = "audit",
    security(("bearer" = [])), params(("operator" = String, Path)),
    responses((status = 200, description = "`intact`, records checked, the first broken link", body = Object),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn verify_audit(State(state): State<AppState>, _scope: Scoped) -> Reply {
    let verification = state.blocking(|host| host.verify_audit()).await?;
    ok(json!({
        "intact": verification.is_intact(),
        "records": verification.records,
        "broken": verification.broken,
    }))
}

/// Which policy set a replay uses.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct ReplayQuery {
    /// `recorded` (default): the version that decided; `active`: the
    /// operator's active one.
    with: Option<String>,
}

/// Evaluates a recorded decision again and reports where it differs.
#[utoipa::path(post, path = "/v1/operators/{operator}/audit/{seq}/replay", tag = "audit",
    security(("bearer" = [])), params(("operator" = String, Path), ("seq" = u64, Path), ReplayQuery),
    responses((status = 200, description = "Recorded and replayed decisions, and the first difference", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn replay(
    State(state): State<AppState>,
    _scope: Scoped,
    Path((operator, seq)): Path<(String, u64)>,
    Query(query): Query<ReplayQuery>,
) -> Reply {
    let with = match query.with.as_deref() {
        None | Some("recorded") => ReplayWith::Recorded,
        Some("active") => ReplayWith::Active,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("`with` must be `recorded` or `active`, got `{other}`"),
            ));
        }
    };
    own_record(&state, &operator, seq).await?;
    let replayed = state.blocking(move |host| host.replay(seq, with)).await?;
    ok(replayed)
}

/// Every installed version of the operator's policy set.
#[utoipa::path(get, path = "/v1/operators/{operator}/policies", tag = "policies",
    security(("bearer" = [])), params(("operator" = String, Path)),
    responses((status = 200, description = "Versions, with the active one marked", body = Object),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_policies(State(state): State<AppState>, Scoped { operator, .. }: Scoped) -> Reply {
    let versions = state
        .blocking(move |host| host.policy_versions(&operator))
        .await?;
    ok(json!({ "versions": versions }))
}

/// A policy set version to install.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct InstallPolicy {
    /// The policy set's name.
    name: String,
    /// Its version; each is installed once.
    version: u32,
    /// The module, base64-encoded (`.wasm` binary or `.wat` text).
    wasm_base64: Option<String>,
    /// Or a bundled policy set: `gym`, `subscription`, `collections`,
    /// `publishing`.
    bundled: Option<String>,
    /// The operator's settings for it (default `{}`).
    #[schema(value_type = Option<Object>)]
    settings: Option<Value>,
    /// Activate it right away.
    #[serde(default)]
    activate: bool,
    /// An ed25519 signature over the module, in hex (see `rulehost policy
    /// sign`); required once the operator trusts a key.
    signature: Option<String>,
}

fn may_install(caller: &Caller) -> Result<(), ApiError> {
    if caller.may_install() {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "this token may not install or activate policy sets; use an admin token or one made with `can_install`",
        ))
    }
}

/// Installs a policy set version (admin token, or an operator token with
/// `can_install`); it is loaded and its settings validated first.
#[utoipa::path(post, path = "/v1/operators/{operator}/policies", tag = "policies",
    security(("bearer" = [])), params(("operator" = String, Path)), request_body = InstallPolicy,
    responses((status = 201, description = "Installed", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn install_policy(
    State(state): State<AppState>,
    Scoped { caller, operator }: Scoped,
    Body(request): Body<InstallPolicy>,
) -> Reply {
    may_install(&caller)?;
    let wasm: Vec<u8> = match (&request.wasm_base64, &request.bundled) {
        (Some(text), None) => base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| {
                ApiError::bad_request(
                    "invalid_body",
                    format!("invalid body at `wasm_base64`: not base64: {e}"),
                )
            })?,
        (None, Some(flavour)) => crate::bundled::get(flavour)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_body",
                    format!("invalid body at `bundled`: no bundled policy set `{flavour}`"),
                )
            })?
            .to_vec(),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_body",
                "give exactly one of `wasm_base64` and `bundled`",
            ));
        }
    };
    let id = PolicyId::new(request.name, request.version);
    let settings = request.settings.unwrap_or_else(|| json!({}));
    let by = caller.actor();
    let now = state.now();
    let activate = request.activate;
    let signature = request.signature;
    let installed = id.clone();
    let policy = state
        .blocking(move |host| {
            let install = Install {
                id,
                wasm: &wasm,
                signature: signature.as_deref(),
                settings: &settings,
                activate,
            };
            host.install_with(&operator, install, &by, now)
        })
        .await?;
    created(json!({
        "policy": installed,
        "sha256": policy.sha256(),
        "active": activate,
    }))
}

/// A key to trust.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct TrustKey {
    /// An ed25519 public key, 64 hex characters (`rulehost policy keygen`).
    public_key: String,
}

/// The public keys trusted to sign the operator's policy sets.
#[utoipa::path(get, path = "/v1/operators/{operator}/keys", tag = "policies",
    security(("bearer" = [])), params(("operator" = String, Path)),
    responses((status = 200, description = "Trusted keys", body = Object),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_keys(State(state): State<AppState>, Scoped { operator, .. }: Scoped) -> Reply {
    let keys = state
        .blocking(move |host| host.trusted_keys(&operator))
        .await?;
    ok(json!({ "keys": keys }))
}

/// Trusts a key to sign the operator's policy sets (admin token); from then
/// on every install for the operator must be signed.
#[utoipa::path(post, path = "/v1/operators/{operator}/keys", tag = "policies",
    security(("bearer" = [])), params(("operator" = String, Path)), request_body = TrustKey,
    responses((status = 201, description = "Trusted", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn trust_key(
    State(state): State<AppState>,
    Scoped { caller, operator }: Scoped,
    Body(request): Body<TrustKey>,
) -> Reply {
    admin_only(&caller)?;
    let by = caller.actor();
    let now = state.now();
    state
        .blocking(move |host| host.trust_key(&operator, &request.public_key, &by, now))
        .await?;
    created(json!({ "trusted": true }))
}

/// Makes an installed version the active one, without a restart (HOST-6).
#[utoipa::path(post, path = "/v1/operators/{operator}/policies/{name}/{version}/activate",
    tag = "policies", security(("bearer" = [])),
    params(("operator" = String, Path), ("name" = String, Path), ("version" = u32, Path)),
    responses((status = 200, description = "Active", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn activate_policy(
    State(state): State<AppState>,
    Scoped { caller, .. }: Scoped,
    Path((operator, name, version)): Path<(String, String, u32)>,
) -> Reply {
    may_install(&caller)?;
    let id = PolicyId::new(name, version);
    let by = caller.actor();
    let now = state.now();
    let active = id.clone();
    state
        .blocking(move |host| host.activate(&operator, &id, &by, now))
        .await?;
    ok(json!({ "active": active }))
}

/// What an installed version would have decided differently: the
/// operator's recorded decisions among the audit records after `after`,
/// evaluated again with it and its settings (see `Host::compare`).
#[utoipa::path(get, path = "/v1/operators/{operator}/policies/{name}/{version}/compare",
    tag = "policies", security(("bearer" = [])),
    params(("operator" = String, Path), ("name" = String, Path), ("version" = u32, Path), AuditQuery),
    responses((status = 200, description = "The decisions it changes", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn compare_policy(
    State(state): State<AppState>,
    _scope: Scoped,
    Path((operator, name, version)): Path<(String, String, u32)>,
    Query(query): Query<AuditQuery>,
) -> Reply {
    let limit = page(&state, query.limit)?;
    let after = query.after.unwrap_or(0);
    let id = PolicyId::new(name, version);
    let comparison = state
        .blocking(move |host| host.compare(&operator, &id, after, limit))
        .await?;
    ok(comparison)
}

/// Reactivates the version active before the current one.
#[utoipa::path(post, path = "/v1/operators/{operator}/policies/rollback", tag = "policies",
    security(("bearer" = [])), params(("operator" = String, Path)),
    responses((status = 200, description = "The version now active", body = Object),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn rollback_policy(
    State(state): State<AppState>,
    Scoped { caller, operator }: Scoped,
) -> Reply {
    may_install(&caller)?;
    let by = caller.actor();
    let now = state.now();
    let active = state
        .blocking(move |host| host.rollback(&operator, &by, now))
        .await?;
    ok(json!({ "active": active }))
}

/// Legacy locks to import (GYM-12).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ImportRequest {
    /// `jsonl` or `csv`.
    format: String,
    /// `refuse` (default): a file with any bad row imports nothing;
    /// `skip`: the good rows are imported.
    on_bad_row: Option<String>,
    /// The file's text.
    content: String,
    /// Who imports.
    #[schema(value_type = Object)]
    actor: Actor,
}

/// Imports legacy locks with their original actor, reason, start and end.
#[utoipa::path(post, path = "/v1/operators/{operator}/imports", tag = "subjects",
    security(("bearer" = [])), params(("operator" = String, Path)), request_body = ImportRequest,
    responses((status = 200, description = "Lock ids, skipped rows, the audit record", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody)))]
async fn import_locks(
    State(state): State<AppState>,
    Scoped { operator, .. }: Scoped,
    Body(request): Body<ImportRequest>,
) -> Reply {
    let format = match request.format.as_str() {
        "jsonl" => ImportFormat::JsonLines,
        "csv" => ImportFormat::Csv,
        other => {
            return Err(ApiError::bad_request(
                "invalid_body",
                format!("invalid body at `format`: `{other}` is not `jsonl` or `csv`"),
            ));
        }
    };
    let on_bad_row = match request.on_bad_row.as_deref() {
        None | Some("refuse") => OnBadRow::Refuse,
        Some("skip") => OnBadRow::Skip,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_body",
                format!("invalid body at `on_bad_row`: `{other}` is not `refuse` or `skip`"),
            ));
        }
    };
    let now = state.now();
    let report = state
        .blocking(move |host| {
            host.import_locks(
                &operator,
                &request.content,
                format,
                on_bad_row,
                &request.actor,
                now,
            )
        })
        .await?;
    ok(report)
}

/// Decodes `bytes` as every route's body type, as the routes do (for the
/// fuzz target): an answer or an error, never a panic.
pub(crate) fn decode_bodies(bytes: &[u8]) {
    let _ = parse_json::<MoveClock>(bytes);
    let _ = parse_json::<CreateOperator>(bytes);
    let _ = parse_json::<CreateToken>(bytes);
    let _ = parse_json::<AuthorizeInput>(bytes);
    let _ = parse_json::<BillingInput>(bytes);
    let _ = parse_json::<TransitionInput>(bytes);
    if let Ok(request) = parse_json::<ActionRequest>(bytes) {
        let reference = SubjectRef::new(SubjectKind::Customer, "c-1");
        let _ = backend_subject(&reference, request.subject);
    }
    if let Ok(request) = parse_json::<LockRequest>(bytes) {
        let _ = ActionRequest::from(request);
    }
    let _ = parse_json::<ActorOnly>(bytes);
    let _ = parse_json::<Ack>(bytes);
    let _ = parse_json::<InstallPolicy>(bytes);
    let _ = parse_json::<TrustKey>(bytes);
    let _ = parse_json::<ImportRequest>(bytes);
}
