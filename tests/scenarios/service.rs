//! The HTTP/JSON service, in process (no network): every route's success
//! and error answers, tokens and tenant isolation, on a SQLite file with the
//! bundled policy sets and a manual clock.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine as _;
use rulehost::service::{AppState, ServiceClock, ServiceConfig, seed_demo};
use rulehost::{EngineConfig, Host, ManualClock, PolicyId, Scheduler, host_actor};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::support::{at, fixed_transition};

const START: &str = "2026-11-22T10:00:00Z";

/// A service on a fresh database with the demo operators.
struct Service {
    app: Router,
    state: AppState,
    host: Arc<Host>,
    admin: String,
    gym: String,
    subscription: String,
    _dir: tempfile::TempDir,
}

impl Service {
    fn start() -> Service {
        Service::with_config(ServiceConfig::default())
    }

    fn with_config(config: ServiceConfig) -> Service {
        let dir = tempfile::tempdir().unwrap();
        let host =
            Arc::new(Host::open(dir.path().join("rulehost.db"), EngineConfig::default()).unwrap());
        let admin = seed_demo(&host, at(START))
            .unwrap()
            .expect("a fresh database is seeded");
        let gym = host
            .create_token(Some("demo-gym"), "gym-backend", false, None, at(START))
            .unwrap()
            .0;
        let subscription = host
            .create_token(Some("demo-subscription"), "billing", false, None, at(START))
            .unwrap()
            .0;
        let clock = Arc::new(ManualClock::new(at(START)));
        let scheduler = Scheduler::start(host.clone(), clock.clone());
        let state = AppState::new(
            host.clone(),
            ServiceClock::Manual(clock),
            Some(scheduler),
            config,
        );
        Service {
            app: state.router(),
            state,
            host,
            admin,
            gym,
            subscription,
            _dir: dir,
        }
    }

    async fn raw(&self, request: Request<Body>) -> (StatusCode, String) {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    /// Calls a route with a token and an optional JSON body.
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        }
        .unwrap();
        let (status, text) = self.raw(request).await;
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    /// The gym's member `m-1` locked by staff with [`lock_body`].
    async fn lock_m1(&self) -> (StatusCode, Value) {
        self.post(
            &format!("{GYM}/subjects/customer/m-1/lock"),
            &self.gym,
            lock_body(),
        )
        .await
    }

    /// How many audit records and events the store holds: what a failed
    /// request must not change.
    fn written(&self) -> (u64, usize) {
        let records = self.host.verify_audit().unwrap().records;
        let events = self
            .host
            .events("demo-gym", "written-check", 10_000)
            .unwrap()
            .len();
        (records, events)
    }
}

const GYM: &str = "/v1/operators/demo-gym";

/// Lists the gym's events for consumer `crm` with `?wait=SECONDS` in a task
/// of its own, and checks that it is still waiting a moment later: there
/// were no events when it looked.
async fn wait_for_events(service: &Service, seconds: u64) -> tokio::task::JoinHandle<Value> {
    let app = service.app.clone();
    let request = Request::get(format!("{GYM}/events?consumer=crm&wait={seconds}"))
        .header(header::AUTHORIZATION, format!("Bearer {}", service.gym))
        .body(Body::empty())
        .unwrap();
    let waiting = tokio::spawn(async move {
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the listing did not wait");
    waiting
}

/// A service whose consumers may wait up to 60 s and that looks for other
/// processes' events every `event_poll`, with the gym's events for consumer
/// `crm` acknowledged.
async fn waiting_service(event_poll: std::time::Duration) -> Service {
    let service = Service::with_config(ServiceConfig {
        max_event_wait: std::time::Duration::from_secs(60),
        event_poll,
        ..ServiceConfig::default()
    });
    ack_all(&service).await;
    service
}

/// Acknowledges every event of the gym for consumer `crm`, if any.
async fn ack_all(service: &Service) {
    let (_, listed) = service
        .get(&format!("{GYM}/events?consumer=crm"), &service.gym)
        .await;
    let Some(last) = listed["events"].as_array().unwrap().last() else {
        return;
    };
    let (status, _) = ack(service, last["seq"].clone()).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

/// Acknowledges the gym's events up to `seq` for consumer `crm`.
async fn ack(service: &Service, seq: Value) -> (StatusCode, Value) {
    service
        .post(
            &format!("{GYM}/events/ack"),
            &service.gym,
            json!({ "consumer": "crm", "seq": seq }),
        )
        .await
}

fn kinds(listed: &Value) -> Vec<&str> {
    listed["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["kind"].as_str().unwrap())
        .collect()
}

/// A consumer may wait for events instead of polling. An empty listing
/// with `wait` is held back until an event comes: here a lock made while it
/// waits, with the service's look for other processes' writes set to an
/// hour, so only the service's own signal can end the wait early. A wait
/// that nothing ends answers what there is; one over the limit is refused
/// naming the value; and a service that begins to stop ends the waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_waits_for_events_instead_of_polling() {
    use std::time::{Duration, Instant};
    let service = waiting_service(Duration::from_secs(3600)).await;

    let started = Instant::now();
    let waiting = wait_for_events(&service, 60).await;
    let (status, _) = service.lock_m1().await;
    assert_eq!(status, StatusCode::OK);
    let listed = waiting.await.unwrap();
    assert_eq!(kinds(&listed), ["customer.locked"]);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    ack_all(&service).await;

    let started = Instant::now();
    let (status, listed) = service
        .get(&format!("{GYM}/events?consumer=crm&wait=1"), &service.gym)
        .await;
    assert_eq!((status, &listed["events"]), (StatusCode::OK, &json!([])));
    assert!(started.elapsed() >= Duration::from_secs(1));

    let (status, body) = service
        .get(&format!("{GYM}/events?consumer=crm&wait=61"), &service.gym)
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_query")
    );
    assert!(
        error_message(&body).contains("`wait` must be 0 to 60 seconds, got `61`"),
        "{body}"
    );

    let started = Instant::now();
    let waiting = wait_for_events(&service, 60).await;
    service.state.begin_stopping();
    assert_eq!(waiting.await.unwrap()["events"], json!([]));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

/// Events that another process writes on the same file end a wait too,
/// found when the service looks again (here every 100 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_consumer_gets_the_events_another_process_writes() {
    use std::time::{Duration, Instant};
    let service = waiting_service(Duration::from_millis(100)).await;
    let elsewhere = Host::open(
        service._dir.path().join("rulehost.db"),
        EngineConfig::default(),
    )
    .unwrap();

    let started = Instant::now();
    let waiting = wait_for_events(&service, 60).await;
    let lock = rulehost::wire::TransitionInput {
        trigger: rulehost::wire::Trigger::Action,
        action: "lock".to_owned(),
        actor: rulehost::wire::Actor::staff("anna"),
        subject: rulehost::wire::Subject::new(rulehost::wire::SubjectKind::Customer, "m-1"),
        params: json!({ "reason": "payment_deferral", "duration": "14_days" }),
    };
    elsewhere.transition("demo-gym", at(START), lock).unwrap();
    let listed = waiting.await.unwrap();
    assert_eq!(kinds(&listed), ["customer.locked"]);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

fn staff(id: &str) -> Value {
    json!({ "kind": "staff", "id": id })
}

fn lock_body() -> Value {
    json!({ "actor": staff("anna"), "reason": "payment_deferral", "duration": "14_days" })
}

fn check_in(member: &str) -> Value {
    json!({ "action": "check_in", "actor": { "kind": "self_service", "id": member },
            "subject": { "kind": "customer", "id": member } })
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {body}"))
}

fn error_message(body: &Value) -> &str {
    body["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {body}"))
}

/// Every route: method and path template. The OpenAPI document must list
/// exactly these, and the router must serve each.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/v1/openapi.json"),
    ("GET", "/v1/clock"),
    ("POST", "/v1/clock"),
    ("GET", "/v1/operators"),
    ("POST", "/v1/operators"),
    ("GET", "/v1/operators/{operator}/tokens"),
    ("POST", "/v1/operators/{operator}/tokens"),
    ("DELETE", "/v1/operators/{operator}/tokens/{id}"),
    ("POST", "/v1/operators/{operator}/hooks/{hook}"),
    ("GET", "/v1/operators/{operator}/subjects/{kind}/{id}"),
    (
        "POST",
        "/v1/operators/{operator}/subjects/{kind}/{id}/actions/{action}",
    ),
    ("POST", "/v1/operators/{operator}/subjects/{kind}/{id}/lock"),
    (
        "POST",
        "/v1/operators/{operator}/subjects/{kind}/{id}/unlock",
    ),
    (
        "GET",
        "/v1/operators/{operator}/subjects/{kind}/{id}/export",
    ),
    (
        "POST",
        "/v1/operators/{operator}/subjects/{kind}/{id}/anonymize",
    ),
    ("GET", "/v1/operators/{operator}/events"),
    ("POST", "/v1/operators/{operator}/events/ack"),
    ("GET", "/v1/operators/{operator}/schedules"),
    (
        "POST",
        "/v1/operators/{operator}/schedules/{id}/{resolution}",
    ),
    ("GET", "/v1/operators/{operator}/webhook"),
    ("PUT", "/v1/operators/{operator}/webhook"),
    ("DELETE", "/v1/operators/{operator}/webhook"),
    ("GET", "/v1/operators/{operator}/audit"),
    ("GET", "/v1/operators/{operator}/audit/{seq}"),
    ("POST", "/v1/operators/{operator}/audit/verify"),
    ("POST", "/v1/operators/{operator}/audit/{seq}/replay"),
    ("GET", "/v1/operators/{operator}/policies"),
    ("POST", "/v1/operators/{operator}/policies"),
    (
        "POST",
        "/v1/operators/{operator}/policies/{name}/{version}/activate",
    ),
    (
        "GET",
        "/v1/operators/{operator}/policies/{name}/{version}/compare",
    ),
    ("POST", "/v1/operators/{operator}/policies/rollback"),
    ("GET", "/v1/operators/{operator}/keys"),
    ("POST", "/v1/operators/{operator}/keys"),
    ("POST", "/v1/operators/{operator}/imports"),
];

const PUBLIC: &[&str] = &["/healthz", "/v1/openapi.json"];

/// A template with sample values, for another operator than the token's
/// where one is named.
fn concrete(template: &str, operator: &str) -> String {
    template
        .replace("/tokens/{id}", "/tokens/1")
        .replace("/schedules/{id}/{resolution}", "/schedules/1/retry")
        .replace("{operator}", operator)
        .replace("{kind}", "customer")
        .replace("{id}", "m-1")
        .replace("{action}", "lock")
        .replace("{hook}", "authorize")
        .replace("{seq}", "1")
        .replace("{name}", "gym")
        .replace("{version}", "1")
}

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_routes_served() {
    let service = Service::start();
    let (status, document) = service
        .call(Method::GET, "/v1/openapi.json", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut documented = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    documented.sort();
    let mut expected: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    expected.sort();
    assert_eq!(documented, expected);
    assert!(document["components"]["securitySchemes"]["bearer"].is_object());

    // Each route is served: without a token it answers 401 (or 200 when
    // public), never the 404 or 405 of an unknown route.
    for (method, template) in ROUTES {
        let path = concrete(template, "demo-gym");
        let body = (*method != "GET" && *method != "DELETE").then(|| json!({}));
        let (status, answer) = service
            .call(method.parse().unwrap(), &path, None, body)
            .await;
        if PUBLIC.contains(template) {
            assert_eq!(status, StatusCode::OK, "{method} {path}: {answer}");
        } else {
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path}: {answer}"
            );
            assert_eq!(error_code(&answer), "unauthorized");
        }
    }
}

/// The demo gym's schedules, listed with `query`.
async fn schedules(service: &Service, query: &str) -> Vec<Value> {
    let (status, body) = service
        .get(&format!("{GYM}/schedules{query}"), &service.gym)
        .await;
    assert_eq!(status, StatusCode::OK, "{query}: {body}");
    body["schedules"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_lock_refuses_check_in_and_lifts_itself_when_the_clock_passes_its_end() {
    let service = Service::start();
    let (status, locked) = service.lock_m1().await;
    assert_eq!(status, StatusCode::OK, "{locked}");
    assert_eq!(locked["events"][0]["kind"], "customer.locked");
    assert_eq!(
        locked["decision"]["decision"]["effects"][0]["until"],
        "2026-12-06T10:00:00Z"
    );

    let (status, decision) = service
        .post(
            &format!("{GYM}/hooks/authorize"),
            &service.gym,
            check_in("m-1"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(decision["decision"]["decision"], "deny");
    assert_eq!(decision["decision"]["code"], "member_locked");

    let (_, state) = service
        .get(&format!("{GYM}/subjects/customer/m-1"), &service.gym)
        .await;
    assert_eq!(state["state"]["locks"][0]["reason"], "payment_deferral");
    // The lock's end is a pending schedule of the operator.
    let pending = schedules(&service, "?state=pending").await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(
        (
            &pending[0]["subject"],
            &pending[0]["at"],
            &pending[0]["state"]
        ),
        (
            &json!({ "kind": "customer", "id": "m-1" }),
            &json!("2026-12-06T10:00:00Z"),
            &json!("pending")
        )
    );
    assert_eq!(schedules(&service, "").await, pending);
    assert!(schedules(&service, "?state=fired").await.is_empty());
    let id = pending[0]["id"].as_i64().unwrap();
    assert!(
        schedules(&service, &format!("?after={id}"))
            .await
            .is_empty()
    );
    let (status, refused) = service
        .get(&format!("{GYM}/schedules?state=due"), &service.gym)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_eq!(
        error_message(&refused),
        "unknown schedule state `due`: expected one of `pending`, `held`, `fired`, `cancelled`"
    );

    let (status, moved) = service
        .post(
            "/v1/clock",
            &service.admin,
            json!({ "advance_seconds": 14 * 86_400 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(
        moved,
        json!({ "now": "2026-12-06T10:00:00Z", "fired": { "fired": 1, "fired_without_effects": 0, "held": 0 } })
    );

    let (_, state) = service
        .get(&format!("{GYM}/subjects/customer/m-1"), &service.gym)
        .await;
    assert_eq!(state["state"]["locks"], json!([]));
    let fired = schedules(&service, "?state=fired").await;
    assert_eq!(
        (fired[0]["id"].as_i64(), &fired[0]["attempts"]),
        (Some(id), &json!(1))
    );
    assert!(schedules(&service, "?state=pending").await.is_empty());
    let (_, decision) = service
        .post(
            &format!("{GYM}/hooks/authorize"),
            &service.gym,
            check_in("m-1"),
        )
        .await;
    assert_eq!(decision["decision"]["decision"], "allow");

    let (status, events) = service
        .get(&format!("{GYM}/events?consumer=crm"), &service.gym)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(kinds(&events), ["customer.locked", "lock.expired"]);
    let (status, _) = ack(&service, events["events"][1]["seq"].clone()).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, events) = service
        .get(&format!("{GYM}/events?consumer=crm"), &service.gym)
        .await;
    assert_eq!(events["events"], json!([]));
    let (status, unknown) = ack(&service, json!(999)).await;
    assert_eq!(
        (status, error_code(&unknown)),
        (StatusCode::NOT_FOUND, "unknown_event")
    );
}

/// Calls `look` every 20 ms until `done` holds of what it returns, for at
/// most 30 s; then fails showing the last look.
async fn eventually<T: std::fmt::Debug, F: std::future::Future<Output = T>>(
    mut look: impl FnMut() -> F,
    done: impl Fn(&T) -> bool,
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let seen = look().await;
        if done(&seen) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still {seen:?} after 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn staff_retry_and_drop_a_held_schedule() {
    let service = Service::start();
    // A timed lock whose end comes under a version answering garbage: the
    // lock is lifted all the same, and the schedule held.
    let (status, locked) = service.lock_m1().await;
    assert_eq!(status, StatusCode::OK, "{locked}");
    let broken = PolicyId::new("broken", 2);
    let by = host_actor();
    let garbage = fixed_transition("not json");
    let host = &service.host;
    host.install(
        "demo-gym",
        broken.clone(),
        garbage.as_bytes(),
        &json!({}),
        &by,
        at(START),
    )
    .unwrap();
    host.activate("demo-gym", &broken, &by, at(START)).unwrap();
    let (_, moved) = service
        .post(
            "/v1/clock",
            &service.admin,
            json!({ "advance_seconds": 14 * 86_400 }),
        )
        .await;
    assert_eq!(moved["fired"]["held"], 1, "{moved}");
    let id = schedules(&service, "?state=held").await[0]["id"]
        .as_i64()
        .unwrap();
    let resolve = |path: String, token: &str, body: Value| {
        let service = &service;
        let token = token.to_owned();
        async move { service.post(&path, &token, body).await }
    };
    let path = |id: i64, resolution: &str| format!("{GYM}/schedules/{id}/{resolution}");
    let anna = |reason: &str| json!({ "actor": staff("anna"), "reason": reason });

    let refusals = [
        (
            path(id, "later"),
            anna("why"),
            StatusCode::BAD_REQUEST,
            "invalid_path",
            "unknown resolution `later`: expected `retry` or `drop`".to_owned(),
        ),
        (
            path(id, "retry"),
            anna(""),
            StatusCode::BAD_REQUEST,
            "reason_required",
            format!("a reason is required to retry schedule `{id}`"),
        ),
        (
            path(id + 1, "drop"),
            anna("why"),
            StatusCode::NOT_FOUND,
            "unknown_schedule",
            format!("operator `demo-gym` has no schedule `{}`", id + 1),
        ),
    ];
    for (path, body, status, code, message) in refusals {
        let (got, refused) = resolve(path.clone(), &service.gym, body).await;
        assert_eq!(
            (got, error_code(&refused), error_message(&refused)),
            (status, code, message.as_str()),
            "{path}"
        );
    }
    let (status, refused) = resolve(
        path(id, "retry"),
        &service.gym,
        json!({ "actor": staff("anna") }),
    )
    .await;
    assert_eq!(
        (status, error_code(&refused)),
        (StatusCode::BAD_REQUEST, "invalid_body"),
        "{refused}"
    );
    // Another operator's token does not see the schedule.
    let other = format!("/v1/operators/demo-subscription/schedules/{id}/retry");
    let (status, refused) = resolve(other, &service.subscription, anna("why")).await;
    assert_eq!(
        (status, error_code(&refused)),
        (StatusCode::NOT_FOUND, "unknown_schedule"),
        "{refused}"
    );
    let (status, refused) = resolve(path(id, "retry"), &service.subscription, anna("why")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{refused}");
    assert_eq!(schedules(&service, "?state=held").await.len(), 1);

    // A retry wakes the scheduler; `broken@2` fails again and holds it.
    let (status, retried) = resolve(path(id, "retry"), &service.gym, anna("store was full")).await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    assert_eq!(
        (&retried["resolution"], &retried["schedule"]["state"]),
        (&json!("retry"), &json!("pending"))
    );
    eventually(
        || schedules(&service, "?state=held"),
        |held| held.first().is_some_and(|held| held["attempts"] == 2),
    )
    .await;

    let (status, dropped) = resolve(path(id, "drop"), &service.gym, anna("member left")).await;
    assert_eq!(status, StatusCode::OK, "{dropped}");
    assert_eq!(dropped["schedule"]["state"], "cancelled");
    let (status, refused) = resolve(path(id, "drop"), &service.gym, anna("again")).await;
    assert_eq!(
        (status, error_code(&refused), error_message(&refused)),
        (
            StatusCode::CONFLICT,
            "schedule_not_held",
            format!("schedule `{id}` is cancelled, not held: only a held schedule can be retried or dropped").as_str()
        )
    );
    let (_, listed) = service
        .get(&format!("{GYM}/events?consumer=crm"), &service.gym)
        .await;
    let listed = kinds(&listed);
    assert_eq!(
        listed[listed.len() - 4..],
        [
            "schedule.held",
            "schedule.retried",
            "schedule.held",
            "schedule.dropped"
        ]
    );
}

/// One post to a webhook endpoint: its signature and delivery headers,
/// its body as sent and the status it was answered.
type Post = (String, String, String, u16);

/// What a webhook endpoint received.
#[derive(Clone, Default)]
struct Endpoint {
    posts: Arc<std::sync::Mutex<Vec<Post>>>,
    /// Posts still to be answered 500.
    failing: Arc<std::sync::atomic::AtomicUsize>,
    /// Whether posts are received but never answered.
    silent: Arc<std::sync::atomic::AtomicBool>,
}

impl Endpoint {
    /// Listens on loopback; answers the first `failing` posts 500.
    async fn start(failing: usize) -> (String, Endpoint) {
        use std::sync::atomic::Ordering;
        let endpoint = Endpoint::default();
        endpoint.failing.store(failing, Ordering::SeqCst);
        let receive = |axum::extract::State(endpoint): axum::extract::State<Endpoint>,
                       headers: axum::http::HeaderMap,
                       body: String| async move {
            let fail = endpoint
                .failing
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            let status = if fail { 500 } else { 200 };
            let header = |name: &str| {
                headers
                    .get(name)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            endpoint.posts.lock().unwrap().push((
                header("x-rulehost-signature"),
                header("x-rulehost-delivery"),
                body,
                status,
            ));
            if endpoint.silent.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            StatusCode::from_u16(status).unwrap()
        };
        let app = Router::new()
            .route("/hooks", axum::routing::post(receive))
            .with_state(endpoint.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{address}/hooks"), endpoint)
    }

    fn posts(&self) -> Vec<Post> {
        self.posts.lock().unwrap().clone()
    }

    /// Waits up to 30 s until `done` holds of the posts received.
    async fn until(&self, done: impl Fn(&[Post]) -> bool) {
        eventually(|| std::future::ready(self.posts()), |posts| done(posts)).await;
    }
}

#[tokio::test]
async fn events_are_pushed_to_a_webhook_signed_and_again_until_it_answers_2xx() {
    let service = Service::start();
    let (url, endpoint) = Endpoint::start(1).await;
    let webhook = format!("{GYM}/webhook");
    // What happened before the webhook was set is not pushed.
    assert_eq!(service.lock_m1().await.0, StatusCode::OK);

    let put = |token: &str, body: Value| {
        let (service, token, webhook) = (&service, token.to_owned(), webhook.clone());
        async move {
            service
                .call(Method::PUT, &webhook, Some(&token), Some(body))
                .await
        }
    };
    let (status, refused) = put(&service.gym, json!({ "url": url })).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    for (bad, reason) in [
        (
            "https://crm.example/hooks",
            "this build posts plain `http://` only",
        ),
        (
            "ftp://crm.example/hooks",
            "expected `http://HOST[:PORT]/PATH`",
        ),
        ("crm.example/hooks", "not a URL"),
    ] {
        let (status, refused) = put(&service.admin, json!({ "url": bad })).await;
        assert_eq!(
            (status, error_code(&refused)),
            (StatusCode::BAD_REQUEST, "invalid_webhook")
        );
        assert!(
            error_message(&refused).starts_with(&format!("invalid webhook URL `{bad}`: {reason}")),
            "{refused}"
        );
    }
    let (status, refused) = service.get(&webhook, &service.gym).await;
    assert_eq!(
        (status, error_code(&refused)),
        (StatusCode::NOT_FOUND, "no_webhook")
    );
    assert!(endpoint.posts().is_empty());

    let (status, set) = put(&service.admin, json!({ "url": url })).await;
    assert_eq!(status, StatusCode::OK, "{set}");
    assert_eq!(set["url"], url.as_str());
    let secret = set["secret"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 68, "{secret}");

    let unlock = format!("{GYM}/subjects/customer/m-1/unlock");
    let (status, unlocked) = service
        .post(
            &unlock,
            &service.gym,
            json!({ "actor": staff("anna"), "reason": "paid" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{unlocked}");
    let seq = unlocked["events"][0]["seq"].as_u64().unwrap();
    // The first post is answered 500; the same batch comes again a second
    // later and is answered 200.
    endpoint
        .until(|posts| posts.iter().any(|post| post.3 == 200))
        .await;
    let posts = endpoint.posts();
    assert_eq!(posts.len(), 2, "{posts:?}");
    assert_eq!((posts[0].3, posts[1].3), (500, 200));
    assert_eq!(posts[0].2, posts[1].2);
    let (signature, delivery, sent, _) = &posts[1];
    assert_eq!(delivery, &format!("{seq}-{seq}"));
    let body: Value = serde_json::from_str(sent).unwrap();
    assert_eq!(body["operator"], "demo-gym");
    let events = body["events"].as_array().unwrap();
    assert_eq!(
        events.len(),
        1,
        "only what happened after the webhook was set: {body}"
    );
    assert_eq!(
        (&events[0]["seq"], &events[0]["kind"]),
        (&json!(seq), &json!("customer.unlocked"))
    );
    assert_eq!(
        signature,
        &rulehost::service::webhooks::signature(&secret, sent.as_bytes())
    );
    assert_ne!(
        signature,
        &rulehost::service::webhooks::signature("another secret", sent.as_bytes())
    );

    // The endpoint records its answer before the service has read it, and
    // the service acknowledges, counts and reports the delivery after.
    eventually(
        || service.get(&webhook, &service.gym),
        |(_, got)| got["delivery"]["delivered_through"] == json!(seq),
    )
    .await;
    let (status, got) = service.get(&webhook, &service.gym).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["url"], url.as_str());
    assert_eq!(
        got["delivery"],
        json!({ "delivered_through": seq, "failures": 0, "last_error": null, "retry_in_seconds": null })
    );
    assert!(got.get("secret").is_none());
    let (_, metrics) = service
        .call(Method::GET, "/metrics", Some(&service.admin), None)
        .await;
    let metrics = metrics.as_str().unwrap().to_owned();
    for line in [
        r#"rulehost_webhook_posts_total{operator="demo-gym",outcome="failed"} 1"#,
        r#"rulehost_webhook_posts_total{operator="demo-gym",outcome="delivered"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }
    // Delivered is acknowledged for consumer `webhook`; other consumers
    // poll as before.
    assert!(
        service
            .host
            .events("demo-gym", "webhook", 10)
            .unwrap()
            .is_empty()
    );
    assert_eq!(service.host.events("demo-gym", "crm", 10).unwrap().len(), 2);

    let (status, removed) = service
        .call(Method::DELETE, &webhook, Some(&service.admin), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{removed}");
    assert_eq!(
        service.get(&webhook, &service.gym).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(service.lock_m1().await.0, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(endpoint.posts().len(), 2);
    let kinds: Vec<String> = service
        .host
        .audit_records("demo-gym", 0, 100)
        .unwrap()
        .into_iter()
        .map(|record| record.kind)
        .filter(|kind| kind.starts_with("webhook."))
        .collect();
    assert_eq!(kinds, ["webhook.set", "webhook.removed"]);
}

/// Sets `operator`'s webhook to `url` with the admin token.
async fn set_webhook(service: &Service, operator: &str, url: &str) {
    let path = format!("/v1/operators/{operator}/webhook");
    let (status, set) = service
        .call(
            Method::PUT,
            &path,
            Some(&service.admin),
            Some(json!({ "url": url })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{set}");
}

#[tokio::test]
async fn a_webhook_that_does_not_answer_holds_up_only_its_own_operator() {
    let service = Service::start();
    let (silent_url, silent) = Endpoint::start(0).await;
    silent
        .silent
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (url, endpoint) = Endpoint::start(0).await;
    set_webhook(&service, "demo-gym", &silent_url).await;
    set_webhook(&service, "demo-subscription", &url).await;
    let subscription = "/v1/operators/demo-subscription/subjects/customer/c-1";
    let body = json!({ "actor": staff("anna"), "reason": "fraud_check" });

    assert_eq!(service.lock_m1().await.0, StatusCode::OK);
    silent.until(|posts| posts.len() == 1).await;
    for (action, posted) in [("lock", 1), ("unlock", 2)] {
        let path = format!("{subscription}/{action}");
        let (status, done) = service
            .post(&path, &service.subscription, body.clone())
            .await;
        assert_eq!(status, StatusCode::OK, "{done}");
        endpoint.until(|posts| posts.len() == posted).await;
    }
    // Both of the subscription operator's posts came while the gym's was
    // still waiting for its answer, before its 10 s time-out.
    let (_, gym) = service.get(&format!("{GYM}/webhook"), &service.gym).await;
    assert_eq!(gym["delivery"]["failures"], 0, "{gym}");
    assert_eq!(silent.posts().len(), 1);
}

#[tokio::test]
async fn tokens_are_refused_when_missing_malformed_unknown_revoked_or_expired() {
    let service = Service::start();
    let path = format!("{GYM}/subjects/customer/m-1");
    let (status, body) = service.call(Method::GET, &path, None, None).await;
    assert_eq!(
        (status, error_message(&body)),
        (
            StatusCode::UNAUTHORIZED,
            "no bearer token: send `Authorization: Bearer <token>`"
        )
    );

    let request = Request::get(&path)
        .header(header::AUTHORIZATION, format!("Basic {}", service.gym))
        .body(Body::empty())
        .unwrap();
    let (status, text) = service.raw(request).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(text.contains("is not `Bearer <token>`"), "{text}");

    let (status, body) = service.get(&path, "rht_0000").await;
    assert_eq!(
        (status, error_message(&body)),
        (StatusCode::UNAUTHORIZED, "the bearer token is not known")
    );

    // A token made, used, revoked.
    let (status, made) = service
        .post(
            &format!("{GYM}/tokens"),
            &service.admin,
            json!({ "name": "front-desk" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let secret = made["token"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("rht_"));
    assert_eq!(service.get(&path, &secret).await.0, StatusCode::OK);
    let (_, listed) = service.get(&format!("{GYM}/tokens"), &service.admin).await;
    assert!(
        !listed.to_string().contains(&secret),
        "listings never show secrets"
    );
    let id = made["record"]["id"].as_u64().unwrap();
    let (status, _) = service
        .call(
            Method::DELETE,
            &format!("{GYM}/tokens/{id}"),
            Some(&service.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = service.get(&path, &secret).await;
    assert_eq!(
        (status, error_message(&body)),
        (StatusCode::UNAUTHORIZED, "the bearer token was revoked")
    );
    let (status, body) = service
        .call(
            Method::DELETE,
            &format!("{GYM}/tokens/9999"),
            Some(&service.admin),
            None,
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "unknown_token")
    );

    // A token that expires when the clock passes its end.
    let (_, made) = service
        .post(
            &format!("{GYM}/tokens"),
            &service.admin,
            json!({ "name": "temp", "expires_at": "2026-11-23T10:00:00Z" }),
        )
        .await;
    let temporary = made["token"].as_str().unwrap().to_owned();
    assert_eq!(service.get(&path, &temporary).await.0, StatusCode::OK);
    service
        .post(
            "/v1/clock",
            &service.admin,
            json!({ "set": "2026-11-23T10:00:00Z" }),
        )
        .await;
    let (status, body) = service.get(&path, &temporary).await;
    assert_eq!(
        (status, error_message(&body)),
        (StatusCode::UNAUTHORIZED, "the bearer token has expired")
    );
    let (status, body) = service
        .post(
            &format!("{GYM}/tokens"),
            &service.admin,
            json!({ "name": "late", "expires_at": "2026-11-01T00:00:00Z" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error_message(&body).contains("`2026-11-01T00:00:00Z` is not after now"),
        "{body}"
    );
}

#[tokio::test]
async fn an_operator_token_sees_nothing_of_another_operator() {
    let service = Service::start();
    // The gym's data, with a free-text message another operator must not see.
    let (status, _) = service
        .post(
            &format!("{GYM}/subjects/customer/m-1/lock"),
            &service.gym,
            json!({ "actor": staff("anna"), "reason": "payment_default", "duration": "open_ended", "message": "SECRET-GYM-NOTE" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    for (method, template) in ROUTES {
        if !template.contains("{operator}") {
            continue;
        }
        let path = concrete(template, "demo-gym");
        let body =
            (*method != "GET" && *method != "DELETE").then(|| json!({ "actor": staff("eve") }));
        let (status, answer) = service
            .call(
                method.parse().unwrap(),
                &path,
                Some(&service.subscription),
                body,
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {answer}");
        assert_eq!(
            answer,
            json!({ "error": { "code": "unknown_operator", "message": "unknown operator `demo-gym`" } }),
            "{method} {path}"
        );
    }
    // Exactly the answer for an operator that does not exist.
    let (_, missing) = service
        .get(
            "/v1/operators/nobody/events?consumer=x",
            &service.subscription,
        )
        .await;
    assert_eq!(error_message(&missing), "unknown operator `nobody`");
    // Its own listing shows only itself; admin routes are closed to it.
    let (_, operators) = service.get("/v1/operators", &service.subscription).await;
    assert_eq!(operators["operators"].as_array().unwrap().len(), 1);
    assert_eq!(operators["operators"][0]["id"], "demo-subscription");
    let (status, _) = service
        .post(
            "/v1/operators",
            &service.subscription,
            json!({ "id": "mine" }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = service.get("/metrics", &service.subscription).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The gym's audit record seq 1 exists, but is not the subscription's.
    let gym_record = service.host.audit_records("demo-gym", 0, 1).unwrap()[0].seq;
    let (status, body) = service
        .get(
            &format!("/v1/operators/demo-subscription/audit/{gym_record}"),
            &service.subscription,
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "unknown_audit_record")
    );
    let (_, own) = service
        .get(
            "/v1/operators/demo-subscription/audit",
            &service.subscription,
        )
        .await;
    assert!(!own.to_string().contains("SECRET-GYM-NOTE"));
    assert!(!own.to_string().contains("demo-gym"), "{own}");
    // The admin sees the gym.
    let (status, export) = service
        .get(
            &format!("{GYM}/subjects/customer/m-1/export"),
            &service.admin,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(export.to_string().contains("SECRET-GYM-NOTE"));
}

#[tokio::test]
async fn bad_requests_get_the_right_status_and_write_nothing() {
    let service = Service::with_config(ServiceConfig {
        body_limit: 2048,
        ..ServiceConfig::default()
    });
    let (status, _) = service.lock_m1().await;
    assert_eq!(status, StatusCode::OK);
    let before = service.written();

    // 400: names the field and the value.
    let (status, body) = service
        .post(
            &format!("{GYM}/subjects/customer/m-2/lock"),
            &service.gym,
            json!({ "actor": { "kind": "boss", "id": "x" }, "reason": "r" }),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_body")
    );
    assert!(
        error_message(&body).contains("`actor.kind`") && error_message(&body).contains("`boss`"),
        "{body}"
    );
    let (status, body) = service
        .post(
            &format!("{GYM}/subjects/person/m-2/lock"),
            &service.gym,
            lock_body(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error_message(&body).contains("unknown subject kind `person`"),
        "{body}"
    );
    let (status, body) = service
        .post(
            &format!("{GYM}/hooks/decide"),
            &service.gym,
            check_in("m-1"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_message(&body).contains("`decide`"), "{body}");
    let (status, body) = service
        .get(&format!("{GYM}/events?consumer=x&limit=0"), &service.gym)
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_query")
    );
    assert!(error_message(&body).contains("got `0`"), "{body}");
    let (status, body) = service.get(&format!("{GYM}/events"), &service.gym).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_message(&body).contains("consumer"), "{body}");
    let request = Request::post(format!("{GYM}/hooks/authorize"))
        .header(header::AUTHORIZATION, format!("Bearer {}", service.gym))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"action\": "))
        .unwrap();
    let (status, text) = service.raw(request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains("invalid_body"), "{text}");

    // 404 and 405 for routes.
    let (status, body) = service.get("/v2/anything", &service.gym).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "no_route")
    );
    let (status, body) = service
        .call(
            Method::DELETE,
            &format!("{GYM}/policies"),
            Some(&service.gym),
            None,
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );

    // 413 over the body limit, 415 for another media type.
    let big = json!({ "actor": staff("anna"), "reason": "x".repeat(4096) });
    let (status, body) = service
        .post(
            &format!("{GYM}/subjects/customer/m-3/lock"),
            &service.gym,
            big,
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
    );
    assert_eq!(
        error_message(&body),
        "the body is over the limit of 2048 bytes"
    );
    let request = Request::post(format!("{GYM}/subjects/customer/m-3/lock"))
        .header(header::AUTHORIZATION, format!("Bearer {}", service.gym))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(lock_body().to_string()))
        .unwrap();
    let (status, text) = service.raw(request).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(text.contains("got `text/plain`"), "{text}");

    // 422: the policy refused; its decision comes along.
    let (status, body) = service
        .post(
            &format!("{GYM}/subjects/customer/m-1/unlock"),
            &service.gym,
            json!({ "actor": { "kind": "self_service", "id": "m-1" }, "reason": "paid" }),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "staff_only")
    );
    assert_eq!(body["decision"]["decision"]["decision"], "deny");
    let (status, body) = service
        .post(
            &format!("{GYM}/subjects/customer/m-4/lock"),
            &service.gym,
            json!({ "actor": staff("anna"), "reason": "bored", "duration": "14_days" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // 409: a conflicting state change.
    let (status, body) = service
        .post(
            &format!("{GYM}/policies/rollback"),
            &service.admin,
            json!({}),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "nothing_to_roll_back")
    );

    assert_eq!(
        service.written(),
        before,
        "no failed request wrote anything"
    );
    let (_, state) = service
        .get(&format!("{GYM}/subjects/customer/m-1"), &service.gym)
        .await;
    assert_eq!(state["state"]["locks"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn actions_ask_for_acknowledgements_then_apply_and_hand_back_backend_effects() {
    let service = Service::start();
    let collections = service
        .host
        .create_token(Some("demo-collections"), "c", false, None, at(START))
        .unwrap()
        .0;
    let path = "/v1/operators/demo-collections/subjects/case/case-1/actions/deactivate_case";
    let subject = json!({ "attributes": { "published": true, "reminders_sent": 2 } });
    let (status, body) = service
        .post(
            path,
            &collections,
            json!({ "actor": staff("clerk"), "subject": subject }),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "needs_confirmation")
    );
    let required: Vec<&str> = body["decision"]["decision"]["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap())
        .collect();
    assert_eq!(required, ["case_published", "reminder_sent"]);

    let (status, body) = service
        .post(
            path,
            &collections,
            json!({ "actor": staff("clerk"), "subject": subject, "acknowledgements": ["case_published", "reminder_sent"],
                    "params": { "invoices": [ { "id": "inv-1", "paid": false }, { "id": "inv-2", "paid": true } ] } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let kinds: Vec<&str> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"case.deactivated"), "{kinds:?}");
    assert!(body["audit_seq"].as_u64().is_some());

    let (_, state) = service
        .get(
            "/v1/operators/demo-collections/subjects/case/case-1",
            &collections,
        )
        .await;
    assert_eq!(state["state"]["status"], "deactivated");
    let (status, body) = service
        .post(
            path,
            &collections,
            json!({ "actor": staff("clerk"), "subject": { "kind": "invoice" } }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_message(&body).contains("`subject.kind`"), "{body}");
}

#[tokio::test]
async fn hooks_evaluate_without_applying() {
    let service = Service::start();
    let sub = "/v1/operators/demo-subscription";
    let input = json!({ "trigger": "action", "action": "lock", "actor": staff("anna"),
                        "subject": { "kind": "customer", "id": "c-1" }, "params": { "reason": "payment_default" } });
    let (status, preview) = service
        .post(
            &format!("{sub}/hooks/transition"),
            &service.subscription,
            input,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(preview["hook"], "transition");
    assert_eq!(preview["policy"], "subscription@1");
    let (_, state) = service
        .get(
            &format!("{sub}/subjects/customer/c-1"),
            &service.subscription,
        )
        .await;
    assert_eq!(
        state["state"]["revision"], 0,
        "a preview changes nothing: {state}"
    );

    let billing = json!({ "contract": { "kind": "contract", "id": "k-1", "switches": { "automatic_billing": true }, "parent": { "kind": "customer", "id": "c-1" } },
                          "billed_until": "2026-11-01T00:00:00Z", "cycle": { "every": 1, "unit": "month" } });
    let (status, decision) = service
        .post(
            &format!("{sub}/hooks/billing"),
            &service.subscription,
            billing,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{decision}");
    assert_eq!(decision["decision"]["decision"], "proceed", "{decision}");

    let (status, verdict) = service
        .post(
            &format!("{GYM}/hooks/validate_settings"),
            &service.gym,
            json!({ "lock_reasons": [] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(verdict["decision"]["decision"], "invalid", "{verdict}");
    let (status, body) = service
        .post(
            &format!("{GYM}/hooks/billing"),
            &service.gym,
            json!({ "contract": 5 }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_message(&body).contains("`contract`"), "{body}");
}

#[tokio::test]
async fn policy_versions_are_installed_activated_and_rolled_back() {
    let service = Service::start();
    let policies = format!("{GYM}/policies");
    // An operator token needs the right to install.
    let (status, _) = service
        .post(
            &policies,
            &service.gym,
            json!({ "name": "gym", "version": 2, "bundled": "gym" }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let installer = service
        .host
        .create_token(Some("demo-gym"), "ci", true, None, at(START))
        .unwrap()
        .0;

    let wasm =
        base64::engine::general_purpose::STANDARD.encode(rulehost::bundled::get("gym").unwrap());
    let (status, body) = service
        .post(&policies, &installer, json!({ "name": "gym", "version": 2, "wasm_base64": wasm, "settings": { "lock_reasons": ["payment_default"] }, "activate": true }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["sha256"].as_str().unwrap().len(), 64);
    let (status, refused) = service.lock_m1().await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "version 2 lists only `payment_default`: {refused}"
    );

    let (status, body) = service
        .post(&format!("{policies}/rollback"), &installer, json!({}))
        .await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({ "active": "gym@1" }))
    );
    assert_eq!(service.lock_m1().await.0, StatusCode::OK);
    // Before activating version 2 again: it would have refused that lock.
    let (status, comparison) = service
        .get(&format!("{policies}/gym/2/compare"), &service.gym)
        .await;
    assert_eq!(status, StatusCode::OK, "{comparison}");
    assert_eq!(comparison["candidate"], "gym@2");
    let changed = comparison["changed"].as_array().unwrap();
    assert_eq!(changed.len(), 1, "{comparison}");
    assert_eq!(
        (
            &changed[0]["recorded"]["decision"],
            &changed[0]["replayed"]["decision"]
        ),
        (&json!("apply"), &json!("refuse"))
    );
    let (status, body) = service
        .get(&format!("{policies}/gym/9/compare?limit=5"), &service.gym)
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "unknown_policy_version")
    );
    let (status, body) = service
        .get(&format!("{policies}/gym/2/compare?after=x"), &service.gym)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = service
        .post(&format!("{policies}/gym/2/activate"), &installer, json!({}))
        .await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({ "active": "gym@2" }))
    );
    let (_, versions) = service.get(&policies, &service.gym).await;
    let active: Vec<(u64, bool)> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["id"].as_str().unwrap().ends_with('2') as u64,
                v["active"].as_bool().unwrap(),
            )
        })
        .collect();
    assert!(
        active.contains(&(1, true)) && active.contains(&(0, false)),
        "{versions}"
    );

    let (status, body) = service
        .post(
            &policies,
            &installer,
            json!({ "name": "gym", "version": 2, "bundled": "gym" }),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "policy_version_exists")
    );
    let (status, body) = service
        .post(
            &policies,
            &installer,
            json!({ "name": "gym", "version": 3, "wasm_base64": "%%%" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_message(&body).contains("`wasm_base64`"), "{body}");
    let not_wasm = base64::engine::general_purpose::STANDARD.encode("(module");
    let (status, body) = service
        .post(
            &policies,
            &installer,
            json!({ "name": "gym", "version": 3, "wasm_base64": not_wasm }),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_policy")
    );
    let (status, body) = service
        .post(&policies, &installer, json!({ "name": "gym", "version": 3, "bundled": "gym", "settings": { "lock_reasons": "all" } }))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "settings_refused")
    );
    assert!(error_message(&body).contains("lock_reasons"), "{body}");
    let (status, body) = service
        .post(&format!("{policies}/gym/9/activate"), &installer, json!({}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "unknown_policy_version")
    );
}

#[tokio::test]
async fn the_audit_trail_is_listed_verified_and_replayed() {
    let service = Service::start();
    let (_, locked) = service.lock_m1().await;
    let seq = locked["audit_seq"].as_u64().unwrap();
    let (status, page) = service
        .get(
            &format!("{GYM}/audit?after={}&limit=5", seq - 1),
            &service.gym,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["records"][0]["seq"], seq);
    assert_eq!(page["records"][0]["kind"], "decision");
    let (status, record) = service
        .get(&format!("{GYM}/audit/{seq}"), &service.gym)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(record["actor"], staff("anna"));
    let (status, verified) = service
        .post(&format!("{GYM}/audit/verify"), &service.gym, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(verified["intact"], true);
    assert_eq!(verified["broken"], Value::Null);
    let (status, replay) = service
        .post(
            &format!("{GYM}/audit/{seq}/replay"),
            &service.gym,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{replay}");
    assert_eq!(replay["difference"], Value::Null);
    assert_eq!(replay["replayed"], replay["recorded"]);
    let (status, body) = service
        .post(
            &format!("{GYM}/audit/{seq}/replay?with=tomorrow"),
            &service.gym,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_message(&body).contains("`tomorrow`"), "{body}");
    let (status, body) = service
        .post(&format!("{GYM}/audit/1/replay"), &service.gym, json!({}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "not_a_decision")
    );
    let (status, body) = service
        .get(&format!("{GYM}/audit/99999"), &service.gym)
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "unknown_audit_record")
    );
}

#[tokio::test]
async fn legacy_locks_are_imported_and_a_subject_exported_and_anonymized() {
    let service = Service::start();
    let imports = format!("{GYM}/imports");
    let good = r#"{"subject_kind":"customer","subject_id":"m-7","kind":"full","actor_kind":"staff","actor":"olga","reason":"payment_default","message":"call Olga","since":"2026-10-01T00:00:00Z"}"#;
    let (status, report) = service
        .post(
            &imports,
            &service.gym,
            json!({ "format": "jsonl", "content": good, "actor": staff("admin") }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["lock_ids"].as_array().unwrap().len(), 1);
    let bad = "subject_kind,subject_id\ncustomer,m-8\n";
    let (status, body) = service
        .post(
            &imports,
            &service.gym,
            json!({ "format": "csv", "content": bad, "actor": staff("admin") }),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_import")
    );
    assert!(error_message(&body).contains("line 2"), "{body}");
    let (status, body) = service
        .post(
            &imports,
            &service.gym,
            json!({ "format": "xml", "content": "", "actor": staff("admin") }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_message(&body).contains("`xml`"), "{body}");

    let subject = format!("{GYM}/subjects/customer/m-7");
    let (status, export) = service
        .get(&format!("{subject}/export"), &service.gym)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(export.to_string().contains("call Olga"));
    let (status, done) = service
        .post(
            &format!("{subject}/anonymize"),
            &service.gym,
            json!({ "actor": staff("dpo") }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["locks"], 1);
    let (_, export) = service
        .get(&format!("{subject}/export"), &service.gym)
        .await;
    assert!(!export.to_string().contains("call Olga"));
    assert!(export.to_string().contains("olga"), "actors stay");
    let (_, verified) = service
        .post(&format!("{GYM}/audit/verify"), &service.gym, json!({}))
        .await;
    assert_eq!(verified["intact"], true);
}

#[tokio::test]
async fn the_admin_creates_operators_and_scrapes_metrics() {
    let service = Service::start();
    let (status, created) = service
        .post(
            "/v1/operators",
            &service.admin,
            json!({ "id": "acme-gym", "flavour": "gym" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["active_policy"], "gym@1");
    let (_, token) = service
        .post(
            "/v1/operators/acme-gym/tokens",
            &service.admin,
            json!({ "name": "acme" }),
        )
        .await;
    let acme = token["token"].as_str().unwrap().to_owned();
    let (status, decision) = service
        .post(
            "/v1/operators/acme-gym/hooks/authorize",
            &acme,
            check_in("m-1"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(decision["decision"]["decision"], "allow");

    let (status, body) = service
        .post("/v1/operators", &service.admin, json!({ "id": "acme-gym" }))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "operator_exists")
    );
    let (status, body) = service
        .post(
            "/v1/operators",
            &service.admin,
            json!({ "id": "Acme Gym!" }),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_operator_id")
    );
    let (status, body) = service
        .post(
            "/v1/operators",
            &service.admin,
            json!({ "id": "bowling", "flavour": "bowling" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_message(&body).contains("`bowling`"), "{body}");
    let (status, body) = service
        .post(
            "/v1/operators",
            &service.admin,
            json!({ "id": "strict", "flavour": "gym", "settings": { "lock_reasons": [] } }),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "settings_refused"),
        "{body}"
    );
    let (_, all) = service.get("/v1/operators", &service.admin).await;
    let ids: Vec<&str> = all["operators"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"acme-gym") && !ids.contains(&"strict"),
        "a refused operator leaves nothing: {ids:?}"
    );

    // A policy that traps fails closed and is counted.
    let trap = base64::engine::general_purpose::STANDARD.encode(
        r#"(module (memory (export "memory") 1)
             (func (export "rulehost_abi_version") (result i32) i32.const 1)
             (func (export "rulehost_alloc") (param i32) (result i32) i32.const 1024)
             (func (export "rulehost_authorize") (param i32 i32) (result i64) unreachable))"#,
    );
    let (status, body) = service
        .post(
            "/v1/operators/acme-gym/policies",
            &service.admin,
            json!({ "name": "trap", "version": 1, "wasm_base64": trap, "activate": true }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, failed) = service
        .post(
            "/v1/operators/acme-gym/hooks/authorize",
            &acme,
            check_in("m-1"),
        )
        .await;
    assert_eq!(failed["decision"]["decision"], "deny");
    assert!(failed["diagnostic"]["message"].is_string(), "{failed}");

    let request = Request::get("/metrics")
        .header(header::AUTHORIZATION, format!("Bearer {}", service.admin))
        .body(Body::empty())
        .unwrap();
    let (status, text) = service.raw(request).await;
    assert_eq!(status, StatusCode::OK);
    for line in [
        r#"rulehost_decisions_total{operator="acme-gym",hook="authorize",outcome="allow"}"#,
        r#"rulehost_fail_closed_total{operator="acme-gym",hook="authorize"}"#,
        r#"rulehost_evaluation_seconds_bucket{hook="authorize",le="0.01"}"#,
        "rulehost_scheduler_lag_seconds 0",
        r#"rulehost_schedules_held{operator="acme-gym"} 0"#,
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
}

#[tokio::test]
async fn the_clock_moves_only_when_manual_and_only_for_the_admin() {
    let service = Service::start();
    let (status, clock) = service.get("/v1/clock", &service.gym).await;
    assert_eq!(
        (status, clock),
        (StatusCode::OK, json!({ "now": START, "manual": true }))
    );
    let (status, _) = service
        .post("/v1/clock", &service.gym, json!({ "advance_seconds": 60 }))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = service
        .post(
            "/v1/clock",
            &service.admin,
            json!({ "advance_seconds": -60 }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_message(&body).contains("`-60`"), "{body}");
    let (status, _) = service.post("/v1/clock", &service.admin, json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = service
        .post(
            "/v1/clock",
            &service.admin,
            json!({ "advance_seconds": i64::MAX }),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a clock past the year 9999 is refused, not a panic"
    );
    assert!(
        error_message(&body).contains("past the year 9999"),
        "{body}"
    );
    let (_, clock) = service.get("/v1/clock", &service.gym).await;
    assert_eq!(clock["now"], START, "the refused move left the clock alone");

    let host = service.host.clone();
    let state = AppState::new(host, ServiceClock::System, None, ServiceConfig::default());
    let app = state.router();
    let request = Request::post("/v1/clock")
        .header(header::AUTHORIZATION, format!("Bearer {}", service.admin))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"advance_seconds": 60}"#))
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
}

#[tokio::test]
async fn every_route_refuses_missing_malformed_unknown_expired_and_revoked_tokens() {
    let service = Service::start();
    let (_, expiring) = service
        .post(
            &format!("{GYM}/tokens"),
            &service.admin,
            json!({ "name": "short", "expires_at": "2026-11-22T11:00:00Z" }),
        )
        .await;
    let expiring = expiring["token"].as_str().unwrap().to_owned();
    let (_, revoked) = service
        .post(
            &format!("{GYM}/tokens"),
            &service.admin,
            json!({ "name": "gone" }),
        )
        .await;
    let revoked_id = revoked["record"]["id"].as_u64().unwrap();
    let revoked = revoked["token"].as_str().unwrap().to_owned();
    let (status, _) = service
        .call(
            Method::DELETE,
            &format!("{GYM}/tokens/{revoked_id}"),
            Some(&service.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    service
        .post(
            "/v1/clock",
            &service.admin,
            json!({ "set": "2026-11-22T12:00:00Z" }),
        )
        .await;

    let headers: [(&str, Option<String>, &str); 6] = [
        (
            "missing",
            None,
            "no bearer token: send `Authorization: Bearer <token>`",
        ),
        (
            "empty",
            Some("Bearer ".to_owned()),
            "the `Authorization` header is not `Bearer <token>`",
        ),
        (
            "not bearer",
            Some(format!("Token {}", service.gym)),
            "the `Authorization` header is not `Bearer <token>`",
        ),
        (
            "unknown",
            Some("Bearer rht_forged".to_owned()),
            "the bearer token is not known",
        ),
        (
            "expired",
            Some(format!("Bearer {expiring}")),
            "the bearer token has expired",
        ),
        (
            "revoked",
            Some(format!("Bearer {revoked}")),
            "the bearer token was revoked",
        ),
    ];
    let mut checked = 0;
    for (method, template) in ROUTES {
        if PUBLIC.contains(template) {
            continue;
        }
        let path = concrete(template, "demo-gym");
        for (what, header, message) in &headers {
            let mut request = Request::builder()
                .method(*method)
                .uri(&path)
                .header(header::CONTENT_TYPE, "application/json");
            if let Some(value) = header {
                request = request.header(header::AUTHORIZATION, value);
            }
            let body = if *method == "GET" || *method == "DELETE" {
                Body::empty()
            } else {
                Body::from(lock_body().to_string())
            };
            let (status, text) = service.raw(request.body(body).unwrap()).await;
            let answer: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{what} token on {method} {path}: {text}"
            );
            assert_eq!(
                answer,
                json!({ "error": { "code": "unauthorized", "message": message } }),
                "{what} token on {method} {path}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, (ROUTES.len() - PUBLIC.len()) * headers.len());
}
