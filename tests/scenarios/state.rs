//! Lifecycle state through `rulehost::Host` on a SQLite file, with the
//! compiled subscription policy: locks and their expiry (HOST-3, GYM-8),
//! atomic effects and the audit trail (HOST-4), rollback (HOST-6), the
//! outbox (HOST-7), legacy import (GYM-12), export and anonymization
//! (PUB-4, PUB-5).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rulehost::import::{ImportFormat, OnBadRow};
use rulehost::store::{LiftMode, Resolution, ScheduleState, SqliteStore, Store};
use rulehost::wire::{
    Actor, AuthorizeDecision, Subject, SubjectKind, SubjectRef, Timestamp, TransitionDecision,
    TransitionInput, Trigger,
};
use rulehost::{
    Clock, EngineConfig, Error, FailureKind, Host, Isolation, Limits, ManualClock, Outcome,
    PolicyId, ReplayWith, Scheduler, host_actor,
};
use serde_json::{Value, json};

use crate::support::{at, contract_of, customer, fixed_transition, request};

const OPERATOR: &str = "acme";
const T0: &str = "2026-11-22T10:00:00Z";

fn open(dir: &Path) -> Host {
    Host::open(dir.join("rulehost.db"), EngineConfig::default()).expect("host opens")
}

fn anna() -> Actor {
    Actor::staff("anna")
}

fn c1() -> SubjectRef {
    SubjectRef::new(SubjectKind::Customer, "c-1")
}

/// Installs and activates the bundled subscription policy as `version`.
fn activate_subscription(host: &Host, version: u32, settings: Value) {
    let wasm = rulehost::bundled::get("subscription").expect("bundled");
    let id = PolicyId::new("subscription", version);
    host.install(OPERATOR, id.clone(), wasm, &settings, &anna(), at(T0))
        .expect("install");
    host.activate(OPERATOR, &id, &anna(), at(T0))
        .expect("activate");
}

/// A host in `dir` with subscription@1 active.
fn subscription_host(dir: &Path) -> Host {
    let host = open(dir);
    activate_subscription(&host, 1, json!({}));
    host
}

/// Asks `host` what follows from `action` on `subject` by `actor`.
fn act(
    host: &Host,
    now: &str,
    action: &str,
    actor: Actor,
    subject: Subject,
    params: Value,
) -> rulehost::Result<Outcome> {
    host.transition(
        OPERATOR,
        at(now),
        TransitionInput {
            trigger: Trigger::Action,
            action: action.into(),
            actor,
            subject,
            params,
        },
    )
}

fn customer_c1() -> Subject {
    Subject::new(SubjectKind::Customer, "c-1")
}

fn contract_k1() -> Subject {
    Subject::new(SubjectKind::Contract, "k-1")
}

fn lock_c1(host: &Host, now: &str, params: Value) -> Outcome {
    act(host, now, "lock", anna(), customer_c1(), params).expect("lock transition")
}

/// Anna unlocks `customer:c-1` at 12:00, the identity confirmed.
fn unlock_c1(host: &Host) -> Outcome {
    act(
        host,
        "2026-11-22T12:00:00Z",
        "unlock",
        anna(),
        customer_c1(),
        json!({ "reason": "identity confirmed" }),
    )
    .expect("unlock transition")
}

/// Installs `name@version`, whose `transition` always answers `reply`
/// (JSON), without activating it.
fn install_reply(host: &Host, name: &str, version: u32, reply: &str) -> PolicyId {
    let id = PolicyId::new(name, version);
    host.install(
        OPERATOR,
        id.clone(),
        fixed_transition(reply).as_bytes(),
        &json!({}),
        &anna(),
        at(T0),
    )
    .unwrap();
    id
}

/// Installs and activates `name@version`, whose `transition` always
/// answers `reply` (JSON).
fn activate_reply(host: &Host, name: &str, version: u32, reply: &str) {
    let id = install_reply(host, name, version, reply);
    host.activate(OPERATOR, &id, &anna(), at(T0)).unwrap();
}

/// [`activate_reply`] with `apply` and `effects`, as `fixed@version`.
fn activate_fixed(host: &Host, version: u32, effects: Value) {
    let reply = json!({ "ok": { "decision": "apply", "effects": effects } }).to_string();
    activate_reply(host, "fixed", version, &reply);
}

/// Schedules `end_contract` of `contract:k-1` at 2026-12-31, as `fixed@1`
/// decides for the action `end_contract_at`; returns when it is due.
fn schedule_contract_end(host: &Host) -> Timestamp {
    let k1 = json!({ "kind": "contract", "id": "k-1" });
    activate_fixed(
        host,
        1,
        json!([{ "effect": "schedule", "subject": k1, "at": "2026-12-31T00:00:00Z",
                 "action": "end_contract" }]),
    );
    act(
        host,
        T0,
        "end_contract_at",
        anna(),
        contract_k1(),
        Value::Null,
    )
    .unwrap();
    at("2026-12-31T00:00:00Z")
}

/// Activates `fixed@version`, whose `transition` ends `contract:k-1`.
fn activate_contract_end(host: &Host, version: u32) {
    let k1 = json!({ "kind": "contract", "id": "k-1" });
    activate_fixed(
        host,
        version,
        json!([{ "effect": "set_status", "subject": k1, "status": "ended" }]),
    );
}

/// The status the host keeps for `contract:k-1` at `now`.
fn contract_k1_status(host: &Host, now: Timestamp) -> Option<String> {
    let contract = SubjectRef::new(SubjectKind::Contract, "k-1");
    host.subject(OPERATOR, &contract, now).unwrap().status
}

/// Imports a legacy lock of customer `id` that ended on 2026-11-20, before
/// `T0`, so its expiry is due.
fn import_ended_lock(host: &Host, id: &str) {
    let line = json!({ "subject_id": id, "actor": "legacy", "reason": "deferral",
                       "since": "2026-11-01T00:00:00Z", "until": "2026-11-20T00:00:00Z" });
    host.import_locks(
        OPERATOR,
        &line.to_string(),
        ImportFormat::JsonLines,
        OnBadRow::Refuse,
        &anna(),
        at(T0),
    )
    .unwrap();
}

fn event_kinds(host: &Host) -> Vec<String> {
    host.events(OPERATOR, "test", 100)
        .expect("events")
        .into_iter()
        .map(|event| format!("{} {}", event.kind, event.subject))
        .collect()
}

/// The scheduler's run that fired what is due at `now`, within a minute.
async fn ran_through(scheduler: &mut Scheduler, now: Timestamp) -> rulehost::Run {
    tokio::time::timeout(Duration::from_secs(60), scheduler.ran_through(now))
        .await
        .expect("the scheduler ran within a minute")
        .expect("the scheduler is running")
}

async fn run_through(scheduler: &mut Scheduler, now: Timestamp) -> rulehost::FireReport {
    let run = ran_through(scheduler, now).await;
    run.result.expect("the run succeeded")
}

#[tokio::test]
async fn gym_8_host_3_timed_lock_is_lifted_when_the_clock_passes_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let host = Arc::new(subscription_host(dir.path()));
    let outcome = lock_c1(
        &host,
        T0,
        json!({ "reason": "payment_deferral", "until": "2026-11-27T10:00:00Z" }),
    );
    let lock_id = outcome.committed.expect("committed").locks_created[0].clone();
    assert_eq!(
        host.subject(OPERATOR, &c1(), at(T0)).unwrap().locks.len(),
        1
    );

    let clock = Arc::new(ManualClock::new(at(T0)));
    let mut scheduler = Scheduler::start(Arc::clone(&host), clock.clone());
    assert_eq!(run_through(&mut scheduler, at(T0)).await.fired, 0);

    clock.set(at("2026-11-27T09:59:59Z"));
    assert_eq!(run_through(&mut scheduler, clock.now()).await.fired, 0);
    clock.set(at("2026-11-27T10:00:00Z"));
    let report = run_through(&mut scheduler, clock.now()).await;
    assert_eq!(report.fired, 1);
    scheduler.stop().await;

    let now = at("2026-11-27T10:00:00Z");
    assert!(host.subject(OPERATOR, &c1(), now).unwrap().locks.is_empty());
    let records = host.export_subject(OPERATOR, &c1(), now).unwrap();
    let lifted = records.locks[0].lifted.clone().expect("lifted");
    assert_eq!(records.locks[0].lock.id.as_deref(), Some(lock_id.as_str()));
    assert_eq!(lifted.mode, LiftMode::Automatic);
    assert_eq!(lifted.actor, host_actor());
    assert_eq!(lifted.reason, "expired");
    assert_eq!(lifted.at, now);

    let expiry = records.audit.last().expect("the expiry's audit record");
    assert_eq!(expiry.kind, "decision");
    assert_eq!(expiry.actor, host_actor());
    let payload: Value = serde_json::from_str(&expiry.payload).unwrap();
    assert_eq!(payload["envelope"]["input"]["trigger"], "expired");
    assert_eq!(
        payload["envelope"]["input"]["params"]["lock"],
        lock_id.as_str()
    );
    assert_eq!(
        payload["decision"],
        json!({ "decision": "apply", "effects": [] })
    );

    assert_eq!(
        event_kinds(&host),
        ["customer.locked customer:c-1", "lock.expired customer:c-1"]
    );
    let events = host.events(OPERATOR, "test", 100).unwrap();
    assert_eq!(events[1].data, json!({ "lock": lock_id }));
    assert_eq!(events[1].audit_seq, expiry.seq);
    assert!(host.verify_audit().unwrap().is_intact());
}

#[tokio::test]
async fn host_3_a_lock_that_fell_due_while_the_host_was_down_fires_once_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    {
        let host = subscription_host(dir.path());
        lock_c1(
            &host,
            T0,
            json!({ "reason": "payment_deferral", "until": "2026-11-23T10:00:00Z" }),
        );
    }
    let later = at("2026-11-25T08:00:00Z");
    let host = Arc::new(open(dir.path()));
    assert_eq!(host.next_due().unwrap(), Some(at("2026-11-23T10:00:00Z")));
    let mut scheduler = Scheduler::start(Arc::clone(&host), Arc::new(ManualClock::new(later)));
    assert_eq!(run_through(&mut scheduler, later).await.fired, 1);
    scheduler.stop().await;
    assert_eq!(host.fire_due(later).unwrap().fired, 0);
    drop(host);

    let host = open(dir.path());
    assert_eq!(host.fire_due(later).unwrap().fired, 0);
    assert_eq!(host.next_due().unwrap(), None);
    assert_eq!(
        event_kinds(&host),
        ["customer.locked customer:c-1", "lock.expired customer:c-1"]
    );
    let lifted = host.export_subject(OPERATOR, &c1(), later).unwrap().locks[0]
        .lifted
        .clone()
        .expect("lifted");
    assert_eq!((lifted.at, lifted.mode), (later, LiftMode::Automatic));
}

#[test]
fn host_4_an_effect_batch_that_fails_halfway_leaves_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let host = open(dir.path());
    let reply = json!({ "ok": { "decision": "apply", "effects": [
        { "effect": "set_lock", "subject": { "kind": "customer", "id": "c-1" },
          "kind": "full", "reason": "fraud_check" },
        { "effect": "set_switch", "subject": { "kind": "contract", "id": "k-1" },
          "switch": "automatic_billing", "on": false },
        { "effect": "lift_lock", "subject": { "kind": "customer", "id": "c-2" },
          "reason": "resolved" },
    ]}})
    .to_string();
    activate_reply(&host, "halfway", 1, &reply);
    let records_before = host.verify_audit().unwrap().records;

    let error = act(&host, T0, "lock", anna(), customer_c1(), Value::Null)
        .expect_err("the third effect cannot be applied");
    assert_eq!(
        error.to_string(),
        "effect 2 (`lift_lock`) of policy `halfway@1` cannot be applied, nothing was changed: \
         subject `customer:c-2` has no active lock"
    );
    let state = host.subject(OPERATOR, &c1(), at(T0)).unwrap();
    assert!(state.locks.is_empty());
    assert_eq!(state.revision, 0);
    let contract = SubjectRef::new(SubjectKind::Contract, "k-1");
    assert!(
        host.subject(OPERATOR, &contract, at(T0))
            .unwrap()
            .switches
            .is_empty()
    );
    assert_eq!(host.verify_audit().unwrap().records, records_before);
    assert!(event_kinds(&host).is_empty());
}

#[test]
fn host_4_a_refused_transition_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let host = subscription_host(dir.path());
    let records_before = host.verify_audit().unwrap().records;
    let outcome = act(
        &host,
        T0,
        "lock",
        Actor::self_service("c-1"),
        customer_c1(),
        json!({ "reason": "none" }),
    )
    .unwrap();
    assert_eq!(
        outcome.evaluation.decision,
        TransitionDecision::Refuse {
            code: "staff_only".into(),
            reason: "only staff may lock a customer (SUB-1)".into()
        }
    );
    assert_eq!(outcome.committed, None);
    assert_eq!(host.verify_audit().unwrap().records, records_before);
    assert!(event_kinds(&host).is_empty());
}

/// A host with a few audit records: two policy records and a lock.
fn audited_host(dir: &Path) -> Host {
    let host = subscription_host(dir);
    lock_c1(&host, T0, json!({ "reason": "fraud_check" }));
    let verification = host.verify_audit().unwrap();
    assert_eq!((verification.records, verification.broken), (3, None));
    host
}

fn tamper(dir: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(dir.join("rulehost.db")).unwrap();
    assert_eq!(conn.execute(sql, []).unwrap(), 1, "{sql}");
}

#[test]
fn host_4_verify_finds_a_tampered_payload_at_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let host = audited_host(dir.path());
    tamper(
        dir.path(),
        "UPDATE audit SET payload = replace(payload, 'fraud_check', 'paid_late') WHERE seq = 3",
    );
    let broken = host.verify_audit().unwrap().broken.expect("broken");
    assert_eq!(broken.seq, 3);
    assert_eq!(broken.reason, "its payload does not match its digest");
}

#[test]
fn host_4_verify_finds_a_changed_actor_and_a_removed_record() {
    let dir = tempfile::tempdir().unwrap();
    let host = audited_host(dir.path());
    tamper(
        dir.path(),
        "UPDATE audit SET actor_id = 'bob' WHERE seq = 2",
    );
    let verification = host.verify_audit().unwrap();
    assert_eq!(verification.records, 1);
    let broken = verification.broken.expect("broken");
    assert_eq!(
        (broken.seq, broken.reason.as_str()),
        (2, "its fields do not match its hash")
    );

    tamper(dir.path(), "DELETE FROM audit WHERE seq = 2");
    let broken = host.verify_audit().unwrap().broken.expect("broken");
    assert_eq!(broken.seq, 3);
    assert_eq!(
        broken.reason,
        "expected record `2`, found record `3`: records are missing"
    );
}

#[test]
fn host_4_verify_finds_a_payload_redacted_outside_anonymization() {
    let dir = tempfile::tempdir().unwrap();
    let host = audited_host(dir.path());
    tamper(
        dir.path(),
        r#"UPDATE audit SET payload = '{"redacted":true}', redacted = 1 WHERE seq = 3"#,
    );
    let broken = host.verify_audit().unwrap().broken.expect("broken");
    assert_eq!(broken.seq, 3);
    assert_eq!(
        broken.reason,
        "its payload was removed without an anonymization record"
    );
}

fn authorize_change_contract(host: &Host, now: &str) -> AuthorizeDecision {
    let contract = contract_of(customer(vec![]));
    host.authorize(
        OPERATOR,
        at(now),
        request("change_contract", anna(), contract),
    )
    .unwrap()
    .decision
}

#[test]
fn host_6_rollback_to_the_previous_version_changes_decisions_back() {
    let dir = tempfile::tempdir().unwrap();
    let host = subscription_host(dir.path());
    lock_c1(&host, T0, json!({ "reason": "fraud_check" }));
    let later = "2026-11-22T11:00:00Z";
    // The backend passes no lock: the host adds the customer's lock (SUB-4).
    let AuthorizeDecision::Deny { code, .. } = authorize_change_contract(&host, later) else {
        panic!("subscription@1 refuses contract changes of a locked customer");
    };
    assert_eq!(code, "customer_locked");

    let wasm = rulehost::bundled::get("subscription").unwrap();
    let v2 = PolicyId::new("subscription", 2);
    host.install(
        OPERATOR,
        v2.clone(),
        wasm,
        &json!({ "allowed_while_locked": ["end_contract", "change_contract"] }),
        &anna(),
        at(later),
    )
    .unwrap();
    assert!(matches!(
        authorize_change_contract(&host, later),
        AuthorizeDecision::Deny { .. }
    ));
    host.activate(OPERATOR, &v2, &anna(), at(later)).unwrap();
    assert_eq!(
        authorize_change_contract(&host, later),
        AuthorizeDecision::Allow
    );

    let back = host.rollback(OPERATOR, &anna(), at(later)).unwrap();
    assert_eq!(back, PolicyId::new("subscription", 1));
    assert!(matches!(
        authorize_change_contract(&host, later),
        AuthorizeDecision::Deny { .. }
    ));
    let active: Vec<String> = host
        .policy_versions(OPERATOR)
        .unwrap()
        .into_iter()
        .filter(|version| version.active)
        .map(|version| version.id.to_string())
        .collect();
    assert_eq!(active, ["subscription@1"]);

    // The choice survives a restart.
    drop(host);
    let host = open(dir.path());
    assert!(matches!(
        authorize_change_contract(&host, later),
        AuthorizeDecision::Deny { .. }
    ));
}

#[test]
fn host_6_a_version_activated_by_another_process_is_taken_up_and_fires_what_it_released() {
    let dir = tempfile::tempdir().unwrap();
    // `cli` stands for `rulehost policy activate` run while `service` serves
    // the same file.
    let cli = open(dir.path());
    let end = schedule_under_a_broken_policy(&cli);
    let service = open(dir.path());
    assert_eq!(service.fire_due(end).unwrap().held, 1);

    activate_contract_end(&cli, 3);
    // The store released the hold, but the service still runs `broken@2`:
    // its failure does not hold the schedule again, and nothing is recorded.
    let audit = service.verify_audit().unwrap().records;
    assert_eq!(
        service.fire_due(end).unwrap(),
        rulehost::FireReport::default()
    );
    assert_eq!(service.verify_audit().unwrap().records, audit);
    assert_eq!(service.next_due().unwrap(), Some(end));

    assert_eq!(service.sync_activations().unwrap(), [OPERATOR]);
    assert_eq!(
        *service.operators().active(OPERATOR).unwrap().policy.id(),
        PolicyId::new("fixed", 3)
    );
    assert!(service.sync_activations().unwrap().is_empty());
    assert_eq!(service.fire_due(end).unwrap().fired, 1);
    assert_eq!(contract_k1_status(&service, end).as_deref(), Some("ended"));
}

#[tokio::test]
async fn host_6_a_running_scheduler_takes_up_a_version_activated_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let cli = open(dir.path());
    activate_contract_end(&cli, 1);
    let service = Arc::new(open(dir.path()));
    let scheduler = Scheduler::start(Arc::clone(&service), Arc::new(ManualClock::new(at(T0))));
    activate_contract_end(&cli, 2);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while *service.operators().active(OPERATOR).unwrap().policy.id() != PolicyId::new("fixed", 2) {
        assert!(
            std::time::Instant::now() < deadline,
            "the running scheduler did not take up `fixed@2` within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    scheduler.stop().await;
}

#[test]
fn host_6_installing_a_version_twice_or_activating_an_unknown_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let host = subscription_host(dir.path());
    let wasm = rulehost::bundled::get("subscription").unwrap();
    let again = host
        .install(
            OPERATOR,
            PolicyId::new("subscription", 1),
            wasm,
            &json!({}),
            &anna(),
            at(T0),
        )
        .unwrap_err();
    assert_eq!(
        again.to_string(),
        "operator `acme` already has policy `subscription@1` installed"
    );
    let unknown = host
        .activate(OPERATOR, &PolicyId::new("subscription", 7), &anna(), at(T0))
        .unwrap_err();
    assert_eq!(
        unknown.to_string(),
        "operator `acme` has no policy `subscription@7` installed"
    );
    assert_eq!(
        host.rollback(OPERATOR, &anna(), at(T0))
            .unwrap_err()
            .to_string(),
        "operator `acme` has no earlier policy version to roll back to"
    );
}

#[test]
fn host_4_replay_reports_no_difference_then_the_difference_after_the_policy_changed() {
    let dir = tempfile::tempdir().unwrap();
    let host = subscription_host(dir.path());
    let outcome = lock_c1(&host, T0, json!({ "reason": "fraud_check" }));
    let seq = outcome.committed.unwrap().audit_seq;

    let replay = host.replay(seq, ReplayWith::Recorded).unwrap();
    assert_eq!(replay.difference, None);
    assert_eq!(replay.replayed, replay.recorded);
    assert_eq!(replay.recorded["decision"], "apply");
    assert_eq!(
        host.replay(seq, ReplayWith::Active).unwrap().difference,
        None
    );

    let refuse = r#"{"ok":{"decision":"refuse","code":"frozen","reason":"no changes"}}"#;
    activate_reply(&host, "subscription", 2, refuse);
    let replay = host.replay(seq, ReplayWith::Active).unwrap();
    assert_eq!(replay.recorded_policy.to_string(), "subscription@1");
    assert_eq!(replay.replayed_policy.to_string(), "subscription@2");
    assert_eq!(
        replay.difference.as_deref(),
        Some(r#"at `/code`: recorded `null`, replayed `"frozen"`"#)
    );
    assert_eq!(
        host.replay(seq, ReplayWith::Recorded).unwrap().difference,
        None
    );
    assert_eq!(
        host.replay(1, ReplayWith::Recorded)
            .unwrap_err()
            .to_string(),
        "audit record `1` is a `policy.installed` record, not a decision"
    );
}

/// Before activating a version, the operator sees what it would have
/// decided differently: the recorded decisions replayed with it and the
/// settings it was installed with. A version that reproduces one decision
/// and not the other lists only the other, with where it differs; the
/// recorded version lists none; `after` and `limit` page through the
/// trail; decisions an anonymization redacted are counted, not replayed.
#[test]
fn host_4_host_6_a_version_is_compared_with_the_recorded_decisions_before_it_is_activated() {
    let dir = tempfile::tempdir().unwrap();
    let host = subscription_host(dir.path());
    let locked = lock_c1(&host, T0, json!({ "reason": "fraud_check" }))
        .committed
        .unwrap()
        .audit_seq;
    let unlock = unlock_c1(&host);
    let unlocked = unlock.committed.unwrap().audit_seq;
    let unlock_decision = serde_json::to_value(&unlock.evaluation.decision).unwrap();

    // `fixed@2` answers every transition with the unlock's decision.
    let reply = json!({ "ok": unlock_decision }).to_string();
    let candidate = install_reply(&host, "fixed", 2, &reply);
    let comparison = host.compare(OPERATOR, &candidate, 0, 100).unwrap();
    let installed = host.audit_records(OPERATOR, unlocked, 100).unwrap();
    assert_eq!(
        installed.len(),
        1,
        "the candidate's install is the last record"
    );
    assert_eq!(
        (
            comparison.replayed,
            comparison.redacted,
            comparison.last_seq
        ),
        (2, 0, installed[0].seq)
    );
    let changed: Vec<u64> = comparison.changed.iter().map(|r| r.seq).collect();
    assert_eq!(changed, [locked]);
    let replay = &comparison.changed[0];
    assert_eq!(
        (
            replay.recorded_policy.to_string(),
            replay.replayed_policy.to_string()
        ),
        ("subscription@1".to_owned(), "fixed@2".to_owned())
    );
    assert_eq!(replay.replayed, unlock_decision);
    assert!(
        replay
            .difference
            .as_deref()
            .unwrap()
            .starts_with("at `/effects/0"),
        "{:?}",
        replay.difference
    );
    // Not activated by comparing it.
    let active = host.policy_versions(OPERATOR).unwrap();
    let active: Vec<String> = active
        .iter()
        .filter(|v| v.active)
        .map(|v| v.id.to_string())
        .collect();
    assert_eq!(active, ["subscription@1"]);

    let recorded = PolicyId::new("subscription", 1);
    let same = host.compare(OPERATOR, &recorded, 0, 100).unwrap();
    assert_eq!((same.replayed, same.changed.len()), (2, 0));
    let page = host.compare(OPERATOR, &candidate, locked, 100).unwrap();
    assert_eq!((page.replayed, page.changed.len()), (1, 0));
    let page = host.compare(OPERATOR, &candidate, 0, 1).unwrap();
    assert_eq!(
        page.replayed + page.changed.len(),
        0,
        "record 1 is the install"
    );
    assert_eq!(page.last_seq, 1);

    assert_eq!(
        host.compare(OPERATOR, &PolicyId::new("fixed", 9), 0, 100)
            .unwrap_err()
            .to_string(),
        "operator `acme` has no policy `fixed@9` installed"
    );
    assert_eq!(
        host.compare("nobody", &candidate, 0, 100)
            .unwrap_err()
            .to_string(),
        "unknown operator `nobody`"
    );

    host.anonymize_subject(
        OPERATOR,
        &customer_c1().reference(),
        &Actor::staff("dpo"),
        at(T0),
    )
    .unwrap();
    let redacted = host.compare(OPERATOR, &candidate, 0, 100).unwrap();
    assert_eq!((redacted.replayed, redacted.redacted), (0, 2));
}

#[test]
fn host_7_events_are_delivered_until_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let host = subscription_host(dir.path());
    lock_c1(&host, T0, json!({ "reason": "fraud_check" }));
    unlock_c1(&host);
    let first = host.events(OPERATOR, "billing", 10).unwrap();
    let kinds: Vec<&str> = first.iter().map(|event| event.kind.as_str()).collect();
    assert_eq!(kinds, ["customer.locked", "customer.unlocked"]);
    assert_eq!(
        first[1].data,
        json!({ "kind": null, "actor": { "kind": "staff", "id": "anna" }, "reason": "identity confirmed" })
    );
    // Not acknowledged: delivered again, to this consumer and to others.
    assert_eq!(host.events(OPERATOR, "billing", 10).unwrap(), first);
    host.ack(OPERATOR, "billing", first[0].seq).unwrap();
    assert_eq!(host.events(OPERATOR, "billing", 10).unwrap(), first[1..]);
    assert_eq!(host.events(OPERATOR, "mailer", 10).unwrap(), first);
    // The cursor never moves back.
    host.ack(OPERATOR, "billing", first[1].seq).unwrap();
    host.ack(OPERATOR, "billing", first[0].seq).unwrap();
    assert!(host.events(OPERATOR, "billing", 10).unwrap().is_empty());
    assert!(host.events("other", "billing", 10).unwrap().is_empty());
    assert_eq!(
        host.ack(OPERATOR, "billing", 99).unwrap_err().to_string(),
        "operator `acme` has no event `99`"
    );
}

#[test]
fn host_7_a_new_webhook_pushes_from_now_and_a_replacing_one_goes_on_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let host = subscription_host(dir.path());
    let pending = |host: &Host| -> Vec<String> {
        host.events(OPERATOR, rulehost::store::WEBHOOK_CONSUMER, 10)
            .unwrap()
            .into_iter()
            .map(|event| event.kind)
            .collect()
    };
    lock_c1(&host, T0, json!({ "reason": "fraud_check" }));
    let error = host
        .set_webhook("nobody", "http://127.0.0.1:9/hooks", &anna(), at(T0))
        .unwrap_err();
    assert!(matches!(error, Error::UnknownOperator(_)), "{error}");
    let error = host
        .set_webhook(OPERATOR, "https://crm.example/hooks", &anna(), at(T0))
        .unwrap_err();
    assert!(matches!(error, Error::InvalidWebhook { .. }), "{error}");
    assert!(host.webhooks().unwrap().is_empty());

    let secret = host
        .set_webhook(OPERATOR, "http://127.0.0.1:9/a", &anna(), at(T0))
        .unwrap();
    assert!(
        pending(&host).is_empty(),
        "the lock came before the webhook"
    );
    unlock_c1(&host);
    assert_eq!(pending(&host), ["customer.unlocked"]);
    // Another URL: what the old one did not deliver is still to come.
    let replaced = host
        .set_webhook(OPERATOR, "http://127.0.0.1:9/b", &anna(), at(T0))
        .unwrap();
    assert_ne!(replaced, secret);
    assert_eq!(pending(&host), ["customer.unlocked"]);
    let webhooks = host.webhooks().unwrap();
    assert_eq!(
        (
            webhooks.len(),
            webhooks[0].url.as_str(),
            webhooks[0].secret == replaced
        ),
        (1, "http://127.0.0.1:9/b", true)
    );
    // Removed and set again: from then on.
    host.remove_webhook(OPERATOR, &anna(), at(T0)).unwrap();
    assert!(host.webhooks().unwrap().is_empty());
    host.set_webhook(OPERATOR, "http://127.0.0.1:9/c", &anna(), at(T0))
        .unwrap();
    assert!(pending(&host).is_empty());
    let audited: Vec<String> = host
        .audit_records(OPERATOR, 0, 100)
        .unwrap()
        .into_iter()
        .filter(|record| record.kind.starts_with("webhook."))
        .map(|record| format!("{} {}", record.kind, record.payload))
        .collect();
    assert_eq!(
        audited,
        [
            r#"webhook.set {"url":"http://127.0.0.1:9/a"}"#,
            r#"webhook.set {"url":"http://127.0.0.1:9/b"}"#,
            "webhook.removed {}",
            r#"webhook.set {"url":"http://127.0.0.1:9/c"}"#,
        ]
    );
    assert!(host.verify_audit().unwrap().is_intact());
}

const GOOD_JSONL: &str = r#"{"subject_id":"c-1","actor":"legacy-anna","reason":"payment_deferral","since":"2026-10-01T00:00:00Z","until":"2026-11-30T00:00:00Z","legacy_id":"L-17"}

{"subject_id":"c-2","actor":"legacy-bob","reason":"fraud","message":"call the office","since":"2025-01-01T00:00:00Z"}
{"subject_kind":"contract","subject_id":"k-9","kind":"access","actor":"legacy-anna","reason":"dispute","since":"2026-11-01T00:00:00Z","until":"2026-11-20T00:00:00Z"}
"#;

#[test]
fn gym_12_legacy_locks_are_imported_with_their_data_and_expire_like_native_ones() {
    let dir = tempfile::tempdir().unwrap();
    let host = subscription_host(dir.path());
    let report = host
        .import_locks(
            OPERATOR,
            GOOD_JSONL,
            ImportFormat::JsonLines,
            OnBadRow::Refuse,
            &anna(),
            at(T0),
        )
        .unwrap();
    assert_eq!(report.lock_ids.len(), 3);
    assert!(report.skipped.is_empty());

    let records = host.export_subject(OPERATOR, &c1(), at(T0)).unwrap();
    let imported = &records.locks[0];
    assert_eq!(imported.legacy_id.as_deref(), Some("L-17"));
    assert_eq!(imported.lock.actor, Actor::staff("legacy-anna"));
    assert_eq!(imported.lock.since, at("2026-10-01T00:00:00Z"));
    assert_eq!(imported.lock.until, Some(at("2026-11-30T00:00:00Z")));
    assert_eq!(records.state.locks.len(), 1);
    // A native check sees the imported lock.
    assert!(matches!(
        authorize_change_contract(&host, T0),
        AuthorizeDecision::Deny { .. }
    ));

    // The contract lock ended before the import: it is lifted at the next
    // run; the customer's at its own end.
    assert_eq!(host.fire_due(at(T0)).unwrap().fired, 1);
    assert_eq!(event_kinds(&host), ["lock.expired contract:k-9"]);
    assert_eq!(host.fire_due(at("2026-11-30T00:00:00Z")).unwrap().fired, 1);
    assert_eq!(
        event_kinds(&host),
        ["lock.expired contract:k-9", "lock.expired customer:c-1"]
    );
    let c2 = SubjectRef::new(SubjectKind::Customer, "c-2");
    assert_eq!(
        host.subject(OPERATOR, &c2, at("2030-01-01T00:00:00Z"))
            .unwrap()
            .locks
            .len(),
        1
    );
}

const BAD_CSV: &str = "subject_id,actor,reason,since,until
c-1,legacy-anna,payment_deferral,2026-10-01T00:00:00Z,2026-11-30T00:00:00Z
c-2,legacy-bob,fraud,yesterday,
c-3,legacy-bob,,2026-10-01T00:00:00Z,
c-4,legacy-bob,dispute,2026-10-05T00:00:00Z,2026-10-01T00:00:00Z
";

#[test]
fn gym_12_a_bad_file_is_refused_with_line_numbers_and_nothing_is_imported() {
    let dir = tempfile::tempdir().unwrap();
    let host = subscription_host(dir.path());
    let records_before = host.verify_audit().unwrap().records;
    let error = host
        .import_locks(
            OPERATOR,
            BAD_CSV,
            ImportFormat::Csv,
            OnBadRow::Refuse,
            &anna(),
            at(T0),
        )
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "import refused, nothing was imported: \
         line 3: column `since`: invalid date and time `yesterday`: the 'year' component could not be parsed; \
         line 4: missing field `reason`; \
         line 5: `until` `2026-10-01T00:00:00Z` is not after `since` `2026-10-05T00:00:00Z`"
    );
    assert!(
        host.subject(OPERATOR, &c1(), at(T0))
            .unwrap()
            .locks
            .is_empty()
    );
    assert_eq!(host.verify_audit().unwrap().records, records_before);

    let report = host
        .import_locks(
            OPERATOR,
            BAD_CSV,
            ImportFormat::Csv,
            OnBadRow::Skip,
            &anna(),
            at(T0),
        )
        .unwrap();
    assert_eq!(report.lock_ids.len(), 1);
    let lines: Vec<u64> = report.skipped.iter().map(|row| row.line).collect();
    assert_eq!(lines, [3, 4, 5]);
    assert_eq!(
        host.subject(OPERATOR, &c1(), at(T0)).unwrap().locks.len(),
        1
    );
}

#[test]
fn gym_12_jsonl_errors_name_the_line_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let host = subscription_host(dir.path());
    let text = "{\"subject_id\":\"c-1\",\"actor\":\"a\",\"reason\":\"r\",\"since\":\"2026-10-01T00:00:00Z\",\"colour\":\"red\"}\n{\"subject_kind\":\"person\",\"subject_id\":\"c-1\",\"actor\":\"a\",\"reason\":\"r\",\"since\":\"2026-10-01T00:00:00Z\"}\nnot json\n";
    let error = host
        .import_locks(
            OPERATOR,
            text,
            ImportFormat::JsonLines,
            OnBadRow::Refuse,
            &anna(),
            at(T0),
        )
        .unwrap_err();
    let Error::Import(rows) = error else {
        panic!("an import error");
    };
    let messages: Vec<String> = rows.iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        [
            "line 1: unknown field `colour`, expected one of `subject_kind`, `subject_id`, `kind`, `actor`, `actor_kind`, `reason`, `message`, `since`, `until`, `legacy_id` at line 1 column 84",
            "line 2: unknown subject kind `person`: expected one of `customer`, `contract`, `invoice`, `case`",
            "line 3: expected ident at line 1 column 2",
        ]
    );
}

#[test]
fn pub_4_pub_5_export_then_anonymize_keeps_actors_and_a_verifying_chain() {
    let dir = tempfile::tempdir().unwrap();
    let host = subscription_host(dir.path());
    let secret = "owes 300 EUR after the divorce";
    let outcome = lock_c1(
        &host,
        T0,
        json!({ "reason": "payment_deferral", "message": secret }),
    );
    let seq = outcome.committed.unwrap().audit_seq;

    let export =
        serde_json::to_string(&host.export_subject(OPERATOR, &c1(), at(T0)).unwrap()).unwrap();
    assert!(export.contains(secret), "{export}");
    assert!(export.contains("\"customer.locked\""), "{export}");

    let anonymized = host
        .anonymize_subject(OPERATOR, &c1(), &Actor::staff("dpo"), at(T0))
        .unwrap();
    assert_eq!(anonymized.locks, 1);
    assert_eq!(anonymized.audit_records, [seq]);
    assert_eq!(anonymized.events, 1);

    let records = host.export_subject(OPERATOR, &c1(), at(T0)).unwrap();
    let export = serde_json::to_string(&records).unwrap();
    assert!(!export.contains(secret), "{export}");
    assert!(!export.contains("payment_deferral"), "{export}");
    let lock = &records.locks[0].lock;
    assert_eq!(lock.actor, anna());
    assert_eq!(
        (lock.reason.as_str(), lock.message.as_deref()),
        ("anonymized", Some("anonymized"))
    );
    assert_eq!(records.audit[0].actor, anna());
    assert!(records.audit[0].redacted);
    assert_eq!(records.audit[1].kind, "subject.anonymized");
    assert_eq!(records.audit[1].actor, Actor::staff("dpo"));

    let verification = host.verify_audit().unwrap();
    assert!(verification.is_intact(), "{verification:?}");
    assert_eq!(
        host.replay(seq, ReplayWith::Recorded)
            .unwrap_err()
            .to_string(),
        format!("audit record `{seq}` was anonymized and cannot be replayed")
    );
}

#[test]
fn a_store_from_before_held_schedules_keeps_its_pending_ones_due_after_the_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let host = open(dir.path());
    schedule_contract_end(&host);
    activate_contract_end(&host, 2);
    drop(host);
    // The file as schema version 3 left it: no hold columns, the old index,
    // no webhooks.
    let conn = rusqlite::Connection::open(dir.path().join("rulehost.db")).unwrap();
    conn.execute_batch(
        "DROP TABLE webhooks;
         DROP INDEX schedules_pending;
         DROP INDEX schedules_held;
         ALTER TABLE schedules DROP COLUMN held;
         ALTER TABLE schedules DROP COLUMN attempts;
         ALTER TABLE schedules DROP COLUMN last_error;
         CREATE INDEX schedules_pending ON schedules (at_ns, id) WHERE state = 'pending';
         PRAGMA user_version = 3;",
    )
    .unwrap();
    drop(conn);

    let host = open(dir.path());
    let end = at("2026-12-31T00:00:00Z");
    assert_eq!(host.next_due().unwrap(), Some(end));
    assert_eq!(host.fire_due(end).unwrap().fired, 1);
    let contract = SubjectRef::new(SubjectKind::Contract, "k-1");
    let schedules = host
        .export_subject(OPERATOR, &contract, end)
        .unwrap()
        .schedules;
    assert_eq!(
        (schedules[0].state.name(), schedules[0].scheduled.attempts),
        ("fired", 1)
    );
}

#[test]
fn a_store_from_a_newer_rulehost_or_not_a_database_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let newer = dir.path().join("newer.db");
    rusqlite::Connection::open(&newer)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let error = SqliteStore::open(&newer).unwrap_err().to_string();
    assert_eq!(
        error,
        format!(
            "cannot open store `{}`: its schema version `99` is newer than this rulehost's `5`",
            newer.display()
        )
    );

    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![7u8; 8192]).unwrap();
    let error = SqliteStore::open(&garbage).unwrap_err().to_string();
    assert_eq!(
        error,
        format!(
            "cannot open store `{}`: file is not a database",
            garbage.display()
        )
    );

    // Reopening migrates nothing and keeps the data.
    let store = SqliteStore::open(dir.path().join("ok.db")).unwrap();
    assert_eq!(store.next_due().unwrap(), None);
    drop(store);
    let store = SqliteStore::open(dir.path().join("ok.db")).unwrap();
    assert!(store.active_policies().unwrap().is_empty());
}

/// How many times [`torn_reads`] writes.
const TORN_READ_ROUNDS: usize = 200;

/// Runs `write` [`TORN_READ_ROUNDS`] times while another thread keeps
/// calling `read`; returns every read that `consistent` rejects.
fn torn_reads<T: Send>(
    write: impl Fn(),
    read: impl Fn() -> T + Sync,
    consistent: impl Fn(&T) -> bool + Sync,
) -> Vec<T> {
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let reads = scope.spawn(|| {
            let mut torn = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let state = read();
                if !consistent(&state) {
                    torn.push(state);
                }
            }
            torn
        });
        for _ in 0..TORN_READ_ROUNDS {
            write();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        reads.join().unwrap()
    })
}

#[test]
fn a_subjects_state_is_read_in_one_snapshot_while_writes_commit() {
    let dir = tempfile::tempdir().unwrap();
    let host = subscription_host(dir.path());
    // A second store on the same file reads, as another process would.
    let reader = SqliteStore::open(dir.path().join("rulehost.db")).unwrap();
    let state = || {
        reader
            .subjects(OPERATOR, &[c1()], at(T0))
            .unwrap()
            .remove(0)
    };
    let lock = || lock_c1(&host, T0, json!({ "reason": "fraud_check" }));
    let unlock = || {
        act(
            &host,
            T0,
            "unlock",
            anna(),
            customer_c1(),
            json!({ "reason": "paid" }),
        )
        .unwrap()
    };
    // Each lock and each unlock bumps the revision once: the customer is
    // locked exactly when its revision is odd.
    lock();
    assert_eq!((state().revision, state().locks.len()), (1, 1));
    unlock();
    assert_eq!((state().revision, state().locks.len()), (2, 0));

    // The revision, the locks and the rest are separate queries; a write
    // committing between them must not show in some and not in others.
    let torn = torn_reads(
        || {
            lock();
            unlock();
        },
        || {
            let state = state();
            (state.revision, state.locks.len())
        },
        |&(revision, locks)| (revision % 2 == 1) == (locks == 1),
    );
    assert_eq!(torn, [], "(revision, locks) read from two different states");
    assert_eq!(state().revision, 2 + 2 * TORN_READ_ROUNDS as u64);
}

#[test]
fn a_subject_and_its_parent_are_read_in_one_snapshot_while_writes_commit() {
    let dir = tempfile::tempdir().unwrap();
    let host = open(dir.path());
    let k1 = json!({ "kind": "contract", "id": "k-1" });
    let c1 = json!({ "kind": "customer", "id": "c-1" });
    // Each version's one transition sets the contract's status and the
    // customer's switch together.
    let (hold, release) = (PolicyId::new("fixed", 1), PolicyId::new("fixed", 2));
    activate_fixed(
        &host,
        1,
        json!([
            { "effect": "set_status", "subject": k1, "status": "held" },
            { "effect": "set_switch", "subject": c1, "switch": "held", "on": true }
        ]),
    );
    activate_fixed(
        &host,
        2,
        json!([
            { "effect": "set_status", "subject": k1, "status": "free" },
            { "effect": "set_switch", "subject": c1, "switch": "held", "on": false }
        ]),
    );
    let run = |version: &PolicyId| {
        host.activate(OPERATOR, version, &anna(), at(T0)).unwrap();
        let contract = contract_of(customer_c1());
        act(&host, T0, "toggle", anna(), contract, json!({})).unwrap();
    };
    // The contract's state, then its parent's, as the host reads them.
    let reader = SqliteStore::open(dir.path().join("rulehost.db")).unwrap();
    let k1_and_c1 = || {
        let mut read = Vec::new();
        let k1 = SubjectRef::new(SubjectKind::Contract, "k-1");
        reader
            .walk_subjects(OPERATOR, vec![k1], at(T0), &mut |mut states| {
                let (_, state) = states.remove(0);
                let parent = state.parent.clone();
                read.push(state);
                parent.into_iter().collect()
            })
            .unwrap();
        let held = |state: &rulehost::store::SubjectState| state.switches.get("held").copied();
        (read[0].status.clone(), read.get(1).and_then(held))
    };
    run(&hold);
    assert_eq!(k1_and_c1(), (Some("held".into()), Some(true)));
    run(&release);
    assert_eq!(k1_and_c1(), (Some("free".into()), Some(false)));

    let torn = torn_reads(
        || {
            run(&hold);
            run(&release);
        },
        k1_and_c1,
        |(status, held)| (status.as_deref() == Some("held")) == (*held == Some(true)),
    );
    assert_eq!(
        torn,
        [],
        "(contract status, customer switch) from two different states"
    );
}

fn page_size(path: &Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row("PRAGMA page_size", [], |row| row.get(0))
        .unwrap()
}

#[test]
fn a_new_store_has_2_kib_pages_and_one_with_4_kib_pages_keeps_them_and_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let new = dir.path().join("new.db");
    drop(SqliteStore::open(&new).unwrap());
    assert_eq!(page_size(&new), 2048);

    // A store an earlier rulehost created, with SQLite's default page size:
    // opening it again and writing to it keeps that size and the data.
    let old_dir = dir.path().join("old");
    std::fs::create_dir(&old_dir).unwrap();
    let old = old_dir.join("rulehost.db");
    let conn = rusqlite::Connection::open(&old).unwrap();
    conn.pragma_update(None, "page_size", 4096).unwrap();
    // Switching to WAL writes the file's header, page size included.
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    drop(conn);
    assert_eq!(page_size(&old), 4096);
    let host = subscription_host(&old_dir);
    lock_c1(&host, T0, json!({ "reason": "payment_default" }));
    drop(host);
    assert_eq!(page_size(&old), 4096);

    let host = open(&old_dir);
    let locks = host.subject(OPERATOR, &c1(), at(T0)).unwrap().locks;
    assert_eq!(locks.len(), 1, "{locks:?}");
    assert_eq!(locks[0].reason, "payment_default");
    assert!(host.verify_audit().unwrap().is_intact());
}

/// `PRAGMA integrity_check` and the number of locks, read by plain SQLite
/// (not the store's VFS).
fn plain_sqlite_view(path: &Path) -> (String, i64) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let check = conn
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    let locks = conn
        .query_row("SELECT count(*) FROM locks", [], |row| row.get(0))
        .unwrap();
    (check, locks)
}

/// The store's VFS gathers a commit's WAL writes into few large ones
/// (`host/src/store/vfs.rs`). A commit of several MiB (an import, whose
/// pages also spill to the WAL before the commit and are read back) and
/// many small commits from concurrent callers must leave a file that plain
/// SQLite finds whole, beside the open store and after it closed.
#[test]
fn large_and_concurrent_commits_leave_a_file_plain_sqlite_finds_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rulehost.db");
    let host = subscription_host(dir.path());
    let imported = 10_000;
    let jsonl: String = (0..imported)
        .map(|i| {
            format!(
                r#"{{"subject_id":"legacy-{i}","actor":"legacy","reason":"deferral","since":"2026-01-01T00:00:00Z","until":"2027-06-01T00:00:00Z"}}"#
            ) + "\n"
        })
        .collect();
    let report = host
        .import_locks(
            OPERATOR,
            &jsonl,
            ImportFormat::JsonLines,
            OnBadRow::Refuse,
            &anna(),
            at(T0),
        )
        .unwrap();
    assert_eq!(report.lock_ids.len(), imported);
    let callers = 8;
    let pairs = 25;
    std::thread::scope(|scope| {
        for caller in 0..callers {
            let host = &host;
            scope.spawn(move || {
                for pair in 0..pairs {
                    let customer =
                        Subject::new(SubjectKind::Customer, format!("c-{caller}-{pair}"));
                    for action in ["lock", "unlock"] {
                        let outcome = act(
                            host,
                            T0,
                            action,
                            anna(),
                            customer.clone(),
                            json!({ "reason": "payment_default" }),
                        )
                        .unwrap();
                        assert!(
                            matches!(
                                outcome.evaluation.decision,
                                TransitionDecision::Apply { .. }
                            ),
                            "{action}: {:?}",
                            outcome.evaluation.decision
                        );
                    }
                }
            });
        }
    });
    let expected = (imported + callers * pairs) as i64;
    assert_eq!(plain_sqlite_view(&path), ("ok".to_owned(), expected));
    let audited = host.verify_audit().unwrap();
    assert!(audited.is_intact(), "{audited:?}");

    drop(host);
    assert_eq!(plain_sqlite_view(&path), ("ok".to_owned(), expected));
    let host = open(dir.path());
    let reopened = host.verify_audit().unwrap();
    assert!(reopened.is_intact(), "{reopened:?}");
    assert_eq!(reopened.records, audited.records);
    let legacy = SubjectRef::new(SubjectKind::Customer, format!("legacy-{}", imported - 1));
    assert_eq!(
        host.subject(OPERATOR, &legacy, at(T0)).unwrap().locks.len(),
        1
    );
}

#[test]
fn gym_2_host_7_a_scheduled_transition_fires_once_through_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let host = open(dir.path());
    schedule_contract_end(&host);
    assert_eq!(host.next_due().unwrap(), Some(at("2026-12-31T00:00:00Z")));
    activate_contract_end(&host, 2);

    assert_eq!(host.fire_due(at("2026-12-30T23:59:59Z")).unwrap().fired, 0);
    let end = at("2026-12-31T00:00:00Z");
    assert_eq!(host.fire_due(end).unwrap().fired, 1);
    assert_eq!(host.fire_due(end).unwrap().fired, 0);
    let contract = SubjectRef::new(SubjectKind::Contract, "k-1");
    assert_eq!(contract_k1_status(&host, end).as_deref(), Some("ended"));
    assert_eq!(event_kinds(&host), ["contract.ended contract:k-1"]);
    let records = host.export_subject(OPERATOR, &contract, end).unwrap();
    let fired: Value = serde_json::from_str(&records.audit.last().unwrap().payload).unwrap();
    assert_eq!(fired["envelope"]["input"]["trigger"], "scheduled");
    assert_eq!(fired["envelope"]["input"]["action"], "end_contract");
    assert_eq!(records.schedules[0].state.name(), "fired");
}

#[test]
fn host_3_an_expiry_whose_follow_up_cannot_be_applied_still_lifts_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let host = open(dir.path());
    activate_fixed(
        &host,
        1,
        json!([{ "effect": "lift_lock", "subject": { "kind": "customer", "id": "c-9" },
                 "reason": "follow-up" }]),
    );
    import_ended_lock(&host, "c-1");

    let report = host.fire_due(at(T0)).unwrap();
    assert_eq!((report.fired, report.fired_without_effects), (0, 1));
    assert_eq!(host.fire_due(at(T0)).unwrap().fired_without_effects, 0);
    assert!(
        host.subject(OPERATOR, &c1(), at(T0))
            .unwrap()
            .locks
            .is_empty()
    );
    assert_eq!(event_kinds(&host), ["lock.expired customer:c-1"]);
    let records = host.export_subject(OPERATOR, &c1(), at(T0)).unwrap();
    let payload: Value = serde_json::from_str(&records.audit.last().unwrap().payload).unwrap();
    assert_eq!(
        payload["not_applied"],
        json!({ "effect": 0, "reason": "subject `customer:c-9` has no active lock" })
    );
    assert!(host.verify_audit().unwrap().is_intact());
}

/// [`schedule_contract_end`], after which `broken@2`, whose `transition`
/// answers garbage, is activated.
fn schedule_under_a_broken_policy(host: &Host) -> Timestamp {
    let end = schedule_contract_end(host);
    activate_reply(host, "broken", 2, "not json");
    end
}

#[test]
fn host_7_a_firing_whose_policy_fails_is_held_until_the_operator_activates_a_version() {
    let dir = tempfile::tempdir().unwrap();
    let host = open(dir.path());
    let end = schedule_under_a_broken_policy(&host);
    let contract = SubjectRef::new(SubjectKind::Contract, "k-1");

    let report = host.fire_due(end).unwrap();
    assert_eq!(
        (report.fired, report.fired_without_effects, report.held),
        (0, 0, 1)
    );
    // The same version fails the same way: nothing is tried again.
    assert_eq!(host.fire_due(end).unwrap(), rulehost::FireReport::default());
    assert_eq!(host.next_due().unwrap(), None);
    let failure = "policy `broken@2` failed in hook `transition` for operator `acme`: \
                   output is not a valid reply";
    let records = host.export_subject(OPERATOR, &contract, end).unwrap();
    assert_eq!(records.schedules.len(), 1);
    let schedule = &records.schedules[0];
    assert_eq!(
        (schedule.state.name(), schedule.scheduled.attempts),
        ("held", 1)
    );
    assert!(
        schedule.last_error.as_deref().unwrap().starts_with(failure),
        "{:?}",
        schedule.last_error
    );
    let events = host.events(OPERATOR, "test", 100).unwrap();
    assert_eq!(event_kinds(&host), ["schedule.held contract:k-1"]);
    assert_eq!(events[0].data["schedule"], schedule.scheduled.id);
    assert_eq!(events[0].data["action"], "end_contract");
    assert_eq!(events[0].data["attempts"], 1);
    assert_eq!(
        events[0].data["error"],
        schedule.last_error.clone().unwrap()
    );
    assert_eq!(contract_k1_status(&host, end), None);
    assert_eq!(
        host.held_schedules()
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        [(OPERATOR.to_owned(), 1)]
    );
    let held = host
        .schedules(OPERATOR, Some(ScheduleState::Held), 0, 10)
        .unwrap();
    assert_eq!(held, records.schedules);
    assert!(
        host.schedules(OPERATOR, Some(ScheduleState::Pending), 0, 10)
            .unwrap()
            .is_empty()
    );

    // Held across a restart. Activating the same version again retries it
    // (for a failure that depended on the subject's state): it fails again.
    drop(host);
    let host = open(dir.path());
    assert_eq!(host.next_due().unwrap(), None);
    let broken = PolicyId::new("broken", 2);
    host.activate(OPERATOR, &broken, &anna(), end).unwrap();
    assert_eq!(host.next_due().unwrap(), Some(end));
    assert_eq!(host.fire_due(end).unwrap().held, 1);
    let events = host.events(OPERATOR, "test", 100).unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].data["attempts"], 2);

    // Another version fires it.
    activate_contract_end(&host, 3);
    assert_eq!(host.next_due().unwrap(), Some(end));
    assert!(host.held_schedules().unwrap().is_empty());
    let later = at("2027-01-02T00:00:00Z");
    let report = host.fire_due(later).unwrap();
    assert_eq!((report.fired, report.held), (1, 0));
    assert_eq!(contract_k1_status(&host, later).as_deref(), Some("ended"));
    let records = host.export_subject(OPERATOR, &contract, later).unwrap();
    let schedule = &records.schedules[0];
    assert_eq!(
        (schedule.state.name(), schedule.scheduled.attempts),
        ("fired", 3)
    );
    let fired: Value = serde_json::from_str(&records.audit.last().unwrap().payload).unwrap();
    assert_eq!(fired["envelope"]["input"]["action"], "end_contract");
    assert_eq!(
        records.audit.last().unwrap().policy,
        Some(PolicyId::new("fixed", 3))
    );
}

/// A host on the file in `dir` whose policies may reply at most 16
/// bytes: `fixed@2`'s contract end, some 90 bytes, fails there.
fn open_with_tight_output(dir: &Path) -> Host {
    let config = EngineConfig {
        limits: Limits {
            output_bytes: 16,
            ..Limits::default()
        },
        ..EngineConfig::default()
    };
    Host::open(dir.join("rulehost.db"), config).expect("host opens")
}

/// [`schedule_contract_end`], then `fixed@2` ending the contract, whose
/// firing a host with [`open_with_tight_output`] holds. Returns when it is
/// due and the schedule's id.
fn hold_contract_end_for_its_output(dir: &Path) -> (Timestamp, i64) {
    let host = open(dir);
    let end = schedule_contract_end(&host);
    activate_contract_end(&host, 2);
    assert_eq!(open_with_tight_output(dir).fire_due(end).unwrap().held, 1);
    let held = host
        .schedules(OPERATOR, Some(ScheduleState::Held), 0, 10)
        .unwrap();
    assert_eq!(held.len(), 1);
    (end, held[0].scheduled.id)
}

#[test]
fn host_7_staff_retry_a_held_schedule_once_its_cause_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let (end, id) = hold_contract_end_for_its_output(dir.path());
    // The operator raised the output limit: a host with the defaults.
    let host = open(dir.path());
    let resolve = |id: i64, resolution: Resolution, reason: &str| {
        host.resolve_held(OPERATOR, id, resolution, &anna(), reason, end)
    };

    let error = resolve(id, Resolution::Retry, " ").unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("a reason is required to retry schedule `{id}`")
    );
    let error = resolve(id + 1, Resolution::Retry, "limit raised").unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("operator `acme` has no schedule `{}`", id + 1)
    );
    let error = host
        .resolve_held(
            "nobody",
            id,
            Resolution::Retry,
            &anna(),
            "limit raised",
            end,
        )
        .unwrap_err();
    assert!(matches!(error, Error::UnknownOperator(_)), "{error}");
    // None of those changed anything.
    assert_eq!(
        host.schedule(OPERATOR, id).unwrap().state,
        ScheduleState::Held
    );
    assert_eq!(host.next_due().unwrap(), None);
    let audit = host.verify_audit().unwrap().records;

    let resolved = resolve(id, Resolution::Retry, "output limit raised to 1 MiB").unwrap();
    assert_eq!(resolved.resolution, Resolution::Retry);
    assert_eq!(resolved.schedule.state, ScheduleState::Pending);
    assert_eq!(resolved.schedule.scheduled.attempts, 1);
    assert_eq!(host.verify_audit().unwrap().records, audit + 1);
    let record = host.audit_record(resolved.audit_seq).unwrap();
    assert_eq!(
        (record.kind.as_str(), &record.actor),
        ("schedule.retried", &anna())
    );
    let payload: Value = serde_json::from_str(&record.payload).unwrap();
    assert_eq!(payload["reason"], "output limit raised to 1 MiB");
    assert_eq!(payload["schedule"], id);
    assert!(
        payload["last_error"]
            .as_str()
            .unwrap()
            .contains("policy `fixed@2` failed in hook `transition`"),
        "{payload}"
    );
    let events = host.events(OPERATOR, "test", 100).unwrap();
    let retried = events.last().unwrap();
    assert_eq!(
        (retried.seq, retried.kind.as_str()),
        (resolved.event, "schedule.retried")
    );
    assert_eq!(retried.data, payload);
    assert_eq!(retried.data["by"], json!({ "kind": "staff", "id": "anna" }));

    // It fires at the next run, with the active version.
    assert_eq!(host.next_due().unwrap(), Some(end));
    assert_eq!(host.fire_due(end).unwrap().fired, 1);
    assert_eq!(contract_k1_status(&host, end).as_deref(), Some("ended"));
    let fired = host.schedule(OPERATOR, id).unwrap();
    assert_eq!(
        (fired.state, fired.scheduled.attempts),
        (ScheduleState::Fired, 2)
    );

    let error = resolve(id, Resolution::Drop, "too late").unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "schedule `{id}` is fired, not held: only a held schedule can be retried or dropped"
        )
    );
    assert!(host.verify_audit().unwrap().is_intact());
}

#[test]
fn host_7_staff_drop_a_held_schedule_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let host = open(dir.path());
    let end = schedule_under_a_broken_policy(&host);
    assert_eq!(host.fire_due(end).unwrap().held, 1);
    let id = host
        .schedules(OPERATOR, Some(ScheduleState::Held), 0, 10)
        .unwrap()[0]
        .scheduled
        .id;

    let resolved = host
        .resolve_held(
            OPERATOR,
            id,
            Resolution::Drop,
            &anna(),
            "contract ended by hand",
            end,
        )
        .unwrap();
    assert_eq!(resolved.schedule.state, ScheduleState::Cancelled);
    assert_eq!(
        event_kinds(&host),
        [
            "schedule.held contract:k-1",
            "schedule.dropped contract:k-1"
        ]
    );
    let record = host.audit_record(resolved.audit_seq).unwrap();
    assert_eq!(
        (record.kind.as_str(), &record.actor),
        ("schedule.dropped", &anna())
    );
    assert_eq!(
        serde_json::from_str::<Value>(&record.payload).unwrap()["reason"],
        "contract ended by hand"
    );
    assert!(host.held_schedules().unwrap().is_empty());

    // A version activated later releases what is held, not what was
    // dropped; nor can it be retried any more.
    activate_contract_end(&host, 3);
    assert_eq!(host.next_due().unwrap(), None);
    assert_eq!(host.fire_due(end).unwrap(), rulehost::FireReport::default());
    let error = host
        .resolve_held(
            OPERATOR,
            id,
            Resolution::Retry,
            &anna(),
            "changed my mind",
            end,
        )
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::ScheduleNotHeld {
                state: "cancelled",
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(contract_k1_status(&host, end), None);
    assert!(host.verify_audit().unwrap().is_intact());
}

#[tokio::test]
async fn host_7_a_running_scheduler_fires_a_schedule_another_process_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (end, id) = hold_contract_end_for_its_output(dir.path());
    let service = Arc::new(open(dir.path()));
    // The manual clock never moves: only the look at the store every two
    // seconds can find the retried schedule due.
    let mut scheduler = Scheduler::start(Arc::clone(&service), Arc::new(ManualClock::new(end)));
    let first = scheduler.ran_through(end).await.unwrap();
    assert_eq!(first.result, Ok(rulehost::FireReport::default()));
    // `cli` stands for `rulehost schedule retry` beside the service.
    let cli = open(dir.path());
    cli.resolve_held(
        OPERATOR,
        id,
        Resolution::Retry,
        &anna(),
        "limit raised",
        end,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while service.schedule(OPERATOR, id).unwrap().state != ScheduleState::Fired {
        assert!(
            std::time::Instant::now() < deadline,
            "the running scheduler did not fire the retried schedule within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    scheduler.stop().await;
}

#[test]
fn host_3_a_lock_whose_expiry_policy_fails_is_lifted_once_and_its_follow_up_waits() {
    let dir = tempfile::tempdir().unwrap();
    let host = open(dir.path());
    activate_reply(&host, "broken", 1, "not json");
    import_ended_lock(&host, "c-1");

    assert_eq!(host.fire_due(at(T0)).unwrap().held, 1);
    assert!(
        host.subject(OPERATOR, &c1(), at(T0))
            .unwrap()
            .locks
            .is_empty()
    );
    assert_eq!(
        event_kinds(&host),
        ["lock.expired customer:c-1", "schedule.held customer:c-1"]
    );

    activate_fixed(
        &host,
        2,
        json!([{ "effect": "set_status", "subject": { "kind": "customer", "id": "c-1" },
                 "status": "reminded" }]),
    );
    let report = host.fire_due(at(T0)).unwrap();
    assert_eq!((report.fired, report.held), (1, 0));
    // The lock is not lifted a second time; the follow-up is applied.
    assert_eq!(
        event_kinds(&host),
        [
            "lock.expired customer:c-1",
            "schedule.held customer:c-1",
            "customer.reminded customer:c-1"
        ]
    );
    let state = host.subject(OPERATOR, &c1(), at(T0)).unwrap();
    assert_eq!(state.status.as_deref(), Some("reminded"));
    let records = host.export_subject(OPERATOR, &c1(), at(T0)).unwrap();
    assert_eq!(records.locks.len(), 1);
    assert_eq!(records.schedules[0].state.name(), "fired");
    assert!(records.schedules[0].last_error.is_some());

    // The policy's failure may quote its input: anonymization (PUB-5)
    // replaces it.
    host.anonymize_subject(OPERATOR, &c1(), &Actor::staff("dpo"), at(T0))
        .unwrap();
    let records = host.export_subject(OPERATOR, &c1(), at(T0)).unwrap();
    assert_eq!(
        records.schedules[0].last_error.as_deref(),
        Some("anonymized")
    );
}

/// A module whose `authorize` loops until its budget runs out.
const LOOP_ON_AUTHORIZE: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "rulehost_abi_version") (result i32) i32.const 1)
  (func (export "rulehost_alloc") (param i32) (result i32) i32.const 4096)
  (func (export "rulehost_authorize") (param i32 i32) (result i64) (loop (br 0)) unreachable))"#;

/// A host in `dir` whose engine has one instance in all, with `fixed@1`
/// (applying nothing) active for [`OPERATOR`] and, for the operator `busy`,
/// a policy looping on `authorize` with a budget that keeps it busy for a
/// second or more.
fn one_instance_and_a_busy_operator(dir: &Path) -> Arc<Host> {
    let config = EngineConfig {
        max_instances: 1,
        limits: Limits {
            fuel: 2_000_000_000,
            ..Limits::default()
        },
        ..EngineConfig::default()
    };
    let host = Arc::new(Host::open(dir.join("rulehost.db"), config).unwrap());
    activate_fixed(&host, 1, json!([]));
    let id = PolicyId::new("loop", 1);
    let wat = LOOP_ON_AUTHORIZE.as_bytes();
    host.install("busy", id.clone(), wat, &json!({}), &anna(), at(T0))
        .unwrap();
    host.activate("busy", &id, &anna(), at(T0)).unwrap();
    host
}

/// Starts the `busy` operator's looping evaluation on a thread and returns
/// 300 ms after it began, most likely holding the only instance.
fn keep_the_instance_busy(
    host: &Arc<Host>,
) -> std::thread::JoinHandle<rulehost::Evaluation<AuthorizeDecision>> {
    let started = Arc::new(std::sync::Barrier::new(2));
    let busy = std::thread::spawn({
        let (host, started) = (Arc::clone(host), Arc::clone(&started));
        move || {
            started.wait();
            host.authorize("busy", at(T0), request("x", anna(), customer_c1()))
                .unwrap()
        }
    });
    started.wait();
    std::thread::sleep(Duration::from_millis(300));
    busy
}

#[test]
fn host_3_an_expiry_with_no_instance_to_be_had_stays_due_until_one_is_free() {
    let dir = tempfile::tempdir().unwrap();
    let host = one_instance_and_a_busy_operator(dir.path());
    // Whether the busy policy held the instance all through a run is known
    // only afterwards; a run where it did not is tried again, on another
    // customer.
    for attempt in 0..5 {
        let customer = SubjectRef::new(SubjectKind::Customer, format!("c-{attempt}"));
        import_ended_lock(&host, &customer.id);
        let lifted = |host: &Host| {
            let records = host.export_subject(OPERATOR, &customer, at(T0)).unwrap();
            records.locks[0].lifted.is_some()
        };
        let audit = host.verify_audit().unwrap().records;
        let busy = keep_the_instance_busy(&host);
        let report = host.fire_due(at(T0)).unwrap();
        let held_throughout = !busy.is_finished();
        let busy = busy.join().unwrap();
        let kind = busy.diagnostic.as_ref().map(|d| d.kind);
        if !held_throughout || kind != Some(FailureKind::FuelExhausted) {
            continue;
        }
        // Nothing fired, nothing is consumed or recorded, the lock stays.
        assert_eq!(report, rulehost::FireReport::default());
        assert_eq!(host.next_due().unwrap(), Some(at("2026-11-20T00:00:00Z")));
        assert_eq!(host.verify_audit().unwrap().records, audit);
        assert!(!lifted(&host));

        let report = host.fire_due(at(T0)).unwrap();
        assert_eq!((report.fired, report.held), (1, 0));
        assert!(lifted(&host));
        return;
    }
    panic!("the busy policy never held the instance through a run");
}

#[tokio::test]
async fn host_3_the_scheduler_runs_again_for_an_expiry_left_due_and_reports_both_runs() {
    let dir = tempfile::tempdir().unwrap();
    let host = one_instance_and_a_busy_operator(dir.path());
    // A first run that found the instance taken is known only by the
    // count of runs; an attempt without one is made again.
    for attempt in 0..5 {
        let customer = SubjectRef::new(SubjectKind::Customer, format!("c-{attempt}"));
        import_ended_lock(&host, &customer.id);
        let busy = keep_the_instance_busy(&host);
        let mut scheduler = Scheduler::start(Arc::clone(&host), Arc::new(ManualClock::new(at(T0))));
        let run = ran_through(&mut scheduler, at(T0)).await;
        scheduler.stop().await;
        let busy = busy.join().unwrap();
        assert_eq!(
            busy.diagnostic.map(|d| d.kind),
            Some(FailureKind::FuelExhausted)
        );
        assert!(run.settled, "{run:?}");
        assert_eq!(host.next_due().unwrap(), None);
        let records = host.export_subject(OPERATOR, &customer, at(T0)).unwrap();
        assert!(records.locks[0].lifted.is_some());
        // When the first run fired nothing, a later one the expiry: the
        // run waited for reports what all of them fired.
        let fired_once = rulehost::FireReport {
            fired: 1,
            ..Default::default()
        };
        assert_eq!(run.result, Ok(fired_once), "{run:?}");
        if run.runs >= 2 {
            return;
        }
    }
    panic!("the busy policy never held the instance through the scheduler's first run");
}

/// A module whose `transition` applies nothing.
fn apply_nothing() -> String {
    fixed_transition(r#"{"ok":{"decision":"apply","effects":[]}}"#)
}

#[test]
fn host_1_in_reuse_mode_more_operators_than_instances_take_warm_ones_back() {
    more_operators_than_instances(Isolation::Reuse);
}

#[test]
fn host_1_in_fresh_mode_more_operators_than_instances_take_idle_stores_back() {
    more_operators_than_instances(Isolation::Fresh);
}

fn more_operators_than_instances(isolation: Isolation) {
    let dir = tempfile::tempdir().unwrap();
    // Two instances in all; each policy set keeps one warm after use in
    // reuse mode, and in fresh mode a store with the instances it made.
    let config = EngineConfig {
        isolation,
        max_instances: 2,
        ..EngineConfig::default()
    };
    let host = Host::open(dir.path().join("rulehost.db"), config).unwrap();
    let operators = ["a", "b", "c", "d"];
    let wat = apply_nothing();
    for operator in operators {
        let id = PolicyId::new("nothing", 1);
        host.install(
            operator,
            id.clone(),
            wat.as_bytes(),
            &json!({}),
            &anna(),
            at(T0),
        )
        .unwrap();
        host.activate(operator, &id, &anna(), at(T0)).unwrap();
    }
    for round in 0..3 {
        for operator in operators {
            let input = TransitionInput {
                trigger: Trigger::Action,
                action: "touch".into(),
                actor: anna(),
                subject: customer_c1(),
                params: Value::Null,
            };
            let outcome = host.transition(operator, at(T0), input).unwrap();
            assert_eq!(
                outcome.evaluation.diagnostic, None,
                "round {round}, operator {operator}"
            );
        }
    }
}

#[test]
fn host_7_a_hold_by_a_version_no_longer_active_is_a_conflict_for_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let host = open(dir.path());
    let end = schedule_under_a_broken_policy(&host);
    let contract = SubjectRef::new(SubjectKind::Contract, "k-1");
    let id = host
        .export_subject(OPERATOR, &contract, end)
        .unwrap()
        .schedules[0]
        .scheduled
        .id;
    drop(host);

    let store = SqliteStore::open(dir.path().join("rulehost.db")).unwrap();
    let hold = |failed: PolicyId| rulehost::store::Change {
        operator: OPERATOR.to_owned(),
        at: end,
        expect: Vec::new(),
        fires: Some(rulehost::store::Fires {
            schedule: id,
            held: Some(rulehost::store::Held {
                policy: Some(failed),
                error: "failed".to_owned(),
            }),
        }),
        writes: Vec::new(),
        audit: rulehost::store::NewAudit {
            kind: "decision".to_owned(),
            subject: Some(contract.clone()),
            actor: host_actor(),
            policy: None,
            payload: "{}".to_owned(),
        },
        events: Vec::new(),
    };
    // `fixed@1` failed, but `broken@2` is active by now.
    let results = store.commit(vec![hold(PolicyId::new("fixed", 1))]);
    assert!(
        matches!(&results[0], Err(Error::Conflict(about)) if about == "contract:k-1"),
        "{results:?}"
    );
    assert_eq!(store.due(end, None, 10).unwrap().len(), 1);
    assert!(store.commit(vec![hold(PolicyId::new("broken", 2))])[0].is_ok());
    assert!(store.due(end, None, 10).unwrap().is_empty());
    assert!(matches!(
        store.commit(vec![hold(PolicyId::new("broken", 2))])[0],
        Err(Error::AlreadyFired(held)) if held == id
    ));
}

#[test]
fn host_3_a_policy_scheduling_into_the_past_is_refused_not_looped() {
    let dir = tempfile::tempdir().unwrap();
    let host = open(dir.path());
    activate_fixed(
        &host,
        1,
        json!([{ "effect": "schedule", "subject": { "kind": "contract", "id": "k-1" },
                 "at": "2026-01-01T00:00:00Z", "action": "again" }]),
    );
    let error = act(&host, T0, "loop", anna(), contract_k1(), Value::Null).unwrap_err();
    assert_eq!(
        error.to_string(),
        "effect 0 (`schedule`) of policy `fixed@1` cannot be applied, nothing was changed: \
         the schedule's time `2026-01-01T00:00:00Z` is not after `2026-11-22T10:00:00Z`"
    );
    assert_eq!(host.next_due().unwrap(), None);
}
