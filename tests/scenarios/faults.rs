//! Store faults: a full store and a store locked by another connection
//! refuse writes with a clear error, lose nothing acknowledged, and keep
//! serving reads. A backup taken while writes go on is a consistent store.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rulehost::store::{SqliteStore, StoreOptions};
use rulehost::wire::{Actor, Subject, SubjectKind, SubjectRef, TransitionInput, Trigger};
use rulehost::{Engine, EngineConfig, Error, Host, Outcome, PolicyId};
use serde_json::json;

use crate::support::at;

const NOW: &str = "2026-11-22T10:00:00Z";

fn host_on(path: &Path, options: &StoreOptions) -> Host {
    let store = SqliteStore::open_with(path, options).unwrap();
    Host::new(
        Engine::new(EngineConfig::default()).unwrap(),
        Arc::new(store),
    )
    .unwrap()
}

fn with_gym(path: &Path) -> Host {
    let host = host_on(path, &StoreOptions::default());
    let gym = PolicyId::new("gym", 1);
    let by = Actor::system("test");
    host.install(
        "gym",
        gym.clone(),
        rulehost::bundled::get("gym").unwrap(),
        &json!({}),
        &by,
        at(NOW),
    )
    .unwrap();
    host.activate("gym", &gym, &by, at(NOW)).unwrap();
    host
}

fn lock(host: &Host, member: &str) -> rulehost::Result<Outcome> {
    host.transition(
        "gym",
        at(NOW),
        TransitionInput {
            trigger: Trigger::Action,
            action: "lock".into(),
            actor: Actor::staff("anna"),
            subject: Subject::new(SubjectKind::Customer, member),
            params: json!({ "reason": "payment_deferral", "duration": "14_days" }),
        },
    )
}

fn locks_of(host: &Host, member: &str) -> usize {
    host.subject(
        "gym",
        &SubjectRef::new(SubjectKind::Customer, member),
        at(NOW),
    )
    .unwrap()
    .locks
    .len()
}

#[test]
fn a_full_store_refuses_writes_clearly_and_keeps_what_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.db");
    let mut acknowledged = Vec::new();
    {
        let host = with_gym(&path);
        for i in 0..20 {
            let member = format!("m-{i}");
            assert!(lock(&host, &member).unwrap().committed.is_some());
            acknowledged.push(member);
        }
    }
    // The file may not grow past its size now: a full disk.
    let pages: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA page_count", [], |row| row.get(0))
        .unwrap();
    let host = host_on(
        &path,
        &StoreOptions {
            max_page_count: Some(pages as u64),
            ..StoreOptions::default()
        },
    );
    let mut refused = None;
    for i in 20..20_000 {
        let member = format!("m-{i}");
        match lock(&host, &member) {
            Ok(outcome) => {
                assert!(outcome.committed.is_some());
                acknowledged.push(member);
            }
            Err(error) => {
                refused = Some((member, error));
                break;
            }
        }
    }
    let (member, error) = refused.expect("the store fills up");
    assert!(matches!(error, Error::StoreFull(_)), "{error}");
    assert_eq!(
        error.to_string(),
        "the store is full, nothing of this write was stored: database or disk is full"
    );

    // Reads are served; everything acknowledged is there; the refused lock
    // left nothing.
    for acked in &acknowledged {
        assert_eq!(locks_of(&host, acked), 1, "{acked}");
    }
    assert_eq!(locks_of(&host, &member), 0);
    assert_eq!(
        host.events("gym", "crm", 100_000).unwrap().len(),
        acknowledged.len()
    );
    assert!(host.verify_audit().unwrap().is_intact());
    drop(host);

    // With room again, the same write goes through and nothing was lost.
    let host = host_on(&path, &StoreOptions::default());
    assert!(lock(&host, &member).unwrap().committed.is_some());
    for acked in &acknowledged {
        assert_eq!(locks_of(&host, acked), 1, "{acked}");
    }
    assert!(host.verify_audit().unwrap().is_intact());
}

#[test]
fn a_store_locked_by_another_connection_refuses_writes_and_keeps_serving_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("locked.db");
    drop(with_gym(&path));
    let host = host_on(
        &path,
        &StoreOptions {
            busy_timeout: Duration::from_millis(200),
            ..StoreOptions::default()
        },
    );
    assert!(lock(&host, "m-1").unwrap().committed.is_some());

    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let error = lock(&host, "m-2").unwrap_err();
    assert!(matches!(error, Error::StoreBusy(_)), "{error}");
    assert_eq!(
        error.to_string(),
        "the store is locked by another connection, nothing of this write was stored: database is locked"
    );
    assert_eq!(locks_of(&host, "m-1"), 1, "reads are served meanwhile");
    assert_eq!(locks_of(&host, "m-2"), 0);

    other.execute_batch("ROLLBACK").unwrap();
    assert!(lock(&host, "m-2").unwrap().committed.is_some());
    assert_eq!(locks_of(&host, "m-2"), 1);
    assert!(host.verify_audit().unwrap().is_intact());
}

/// Installing and activating a version at once is one write. A fault at the
/// activation (here a trigger that refuses it, standing in for a failing
/// disk) leaves neither the version nor the operator behind, so the same
/// request succeeds once the fault is gone instead of finding the version
/// already installed but never active.
#[test]
fn a_fault_while_activating_a_new_version_leaves_nothing_half_installed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("activate.db");
    drop(host_on(&path, &StoreOptions::default()));
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER refuse_activation BEFORE INSERT ON activations
             BEGIN SELECT RAISE(ABORT, 'activation refused by the test'); END;",
        )
        .unwrap();
    let host = host_on(&path, &StoreOptions::default());
    let gym = PolicyId::new("gym", 1);
    let by = Actor::system("test");
    let settings = json!({});
    let install = || rulehost::Install {
        id: gym.clone(),
        wasm: rulehost::bundled::get("gym").unwrap(),
        signature: None,
        settings: &settings,
        activate: true,
    };

    let error = host
        .install_with("gym", install(), &by, at(NOW))
        .unwrap_err();
    assert!(matches!(error, Error::Store(_)), "{error}");
    assert_eq!(error.to_string(), "store: activation refused by the test");
    assert_eq!(host.policy_versions("gym").unwrap(), vec![]);
    assert!(host.list_operators().unwrap().is_empty());
    assert!(host.operators().active("gym").is_err());
    let audited = host.verify_audit().unwrap();
    assert!(audited.is_intact(), "{audited:?}");
    assert_eq!(audited.records, 0);
    drop(host);

    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("DROP TRIGGER refuse_activation")
        .unwrap();
    let host = host_on(&path, &StoreOptions::default());
    host.install_with("gym", install(), &by, at(NOW)).unwrap();
    assert_eq!(host.operators().active("gym").unwrap().policy.id(), &gym);
    assert!(lock(&host, "m-1").unwrap().committed.is_some());
    drop(host);
    // After a restart the version is still the active one.
    let host = host_on(&path, &StoreOptions::default());
    assert!(lock(&host, "m-2").unwrap().committed.is_some());
}

/// Calls the service with `token`; the status and the error code.
async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
    use tower::ServiceExt as _;
    let request = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(
            body.map(ToString::to_string).unwrap_or_default(),
        ))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

/// Reads are answered during a fault: member `m-1` still has its one lock.
async fn assert_m1_still_locked(app: &axum::Router, token: &str) {
    let path = "/v1/operators/gym/subjects/customer/m-1";
    let (status, state) = call(app, "GET", path, token, None).await;
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["state"]["locks"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn over_http_a_full_store_answers_507_a_locked_one_503_and_reads_go_on() {
    use rulehost::service::{AppState, ServiceClock, ServiceConfig};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("http.db");
    let token = {
        let host = with_gym(&path);
        host.create_token(Some("gym"), "backend", false, None, at(NOW))
            .unwrap()
            .0
    };
    let lock_body = json!({ "actor": { "kind": "staff", "id": "anna" }, "reason": "payment_deferral", "duration": "14_days" });

    // Locked by another connection: 503, reads answered.
    let host = Arc::new(host_on(
        &path,
        &StoreOptions {
            busy_timeout: Duration::from_millis(200),
            ..StoreOptions::default()
        },
    ));
    let app = AppState::new(
        host.clone(),
        ServiceClock::System,
        None,
        ServiceConfig::default(),
    )
    .router();
    let (status, _) = call(
        &app,
        "POST",
        "/v1/operators/gym/subjects/customer/m-1/lock",
        &token,
        Some(&lock_body),
    )
    .await;
    assert_eq!(status, 200);
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let (status, body) = call(
        &app,
        "POST",
        "/v1/operators/gym/subjects/customer/m-2/lock",
        &token,
        Some(&lock_body),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("store_busy")),
        "{body}"
    );
    assert_m1_still_locked(&app, &token).await;
    other.execute_batch("ROLLBACK").unwrap();
    drop((app, host));

    // Full: 507 at the first write that does not fit, reads answered.
    let pages: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA page_count", [], |row| row.get(0))
        .unwrap();
    let host = Arc::new(host_on(
        &path,
        &StoreOptions {
            max_page_count: Some(pages as u64),
            ..StoreOptions::default()
        },
    ));
    let app = AppState::new(host, ServiceClock::System, None, ServiceConfig::default()).router();
    let mut full = None;
    for i in 2..20_000 {
        let path = format!("/v1/operators/gym/subjects/customer/m-{i}/lock");
        let (status, body) = call(&app, "POST", &path, &token, Some(&lock_body)).await;
        if status != 200 {
            full = Some((status, body));
            break;
        }
    }
    let (status, body) = full.expect("the store fills up");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (507, Some("store_full")),
        "{body}"
    );
    assert_eq!(
        body["error"]["message"],
        "the store is full, nothing of this write was stored: database or disk is full"
    );
    assert_m1_still_locked(&app, &token).await;
}

/// A backup is a consistent copy taken while writes go on: every lock in
/// it comes with its decision record and its event, its audit trail is the
/// live one up to where it was taken and verifies, and it opens as a store
/// of its own. A target that exists, or one in a directory that does not,
/// is refused by name, and nothing is written.
#[test]
fn a_backup_taken_while_writes_go_on_is_a_consistent_store_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let host = Arc::new(with_gym(&dir.path().join("live.db")));
    let member = |n: usize| format!("m-{n}");
    for n in 0..20 {
        lock(&host, &member(n)).unwrap();
    }
    let writer = {
        let host = host.clone();
        std::thread::spawn(move || {
            for n in 20..620 {
                lock(&host, &member(n)).unwrap();
            }
        })
    };
    // Taken once the writer is under way.
    while locks_of(&host, &member(100)) == 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let target = dir.path().join("backup.db");
    let backup = host.backup(&target).unwrap();
    writer.join().unwrap();
    assert_eq!(backup.path, target);
    assert_eq!(std::fs::metadata(&target).unwrap().len(), backup.bytes);

    let restored = host_on(&target, &StoreOptions::default());
    let verified = restored.verify_audit().unwrap();
    assert!(verified.is_intact(), "{verified:?}");
    assert_eq!(verified.records, backup.audit_records);
    let last = restored.audit_record(backup.last_audit_seq).unwrap();
    assert_eq!(Some(&last.hash), backup.last_audit_hash.as_ref());
    assert_eq!(
        host.audit_record(backup.last_audit_seq).unwrap().hash,
        last.hash
    );
    // Everything acknowledged before the backup began is in it; each lock
    // in it has its decision record (after the install and the
    // activation) and its event.
    assert!((0..=100).all(|n| locks_of(&restored, &member(n)) == 1));
    let locked = (0..620)
        .filter(|&n| locks_of(&restored, &member(n)) == 1)
        .count();
    assert_eq!(backup.audit_records, locked as u64 + 2);
    assert_eq!(
        restored.events("gym", "check", 10_000).unwrap().len(),
        locked
    );

    let before = std::fs::read(&target).unwrap();
    let error = host.backup(&target).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "cannot back up to `{}`: it exists already; nothing was written",
            target.display()
        )
    );
    assert!(std::fs::read(&target).unwrap() == before);
    let nowhere = dir.path().join("missing").join("backup.db");
    let error = host.backup(&nowhere).unwrap_err().to_string();
    assert!(
        error.starts_with(&format!("cannot back up to `{}`: ", nowhere.display())),
        "{error}"
    );
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("partial"))
        .collect();
    files.sort();
    assert_eq!(files, Vec::<String>::new());
}
