//! The store on a SQLite file with every acknowledged write durable
//! (WAL, `synchronous = FULL`):
//!
//! - lock + unlock by 1 and by 8 concurrent callers (each on its own
//!   customers), in operations per second, (a) through `Host::transition`
//!   with the compiled subscription policy and (b) the store alone (the same
//!   write, audit record and event, without the policy); target ≥ 10,000
//!   with 8;
//! - the scheduler expiring 10,000 and 100,000 due locks (`Host::fire_due`),
//!   in seconds and peak resident memory above the start; target ≤ 5 s for
//!   100,000 with memory flat;
//! - audit verify over 1,000,000 records; target ≤ 5 s.
//!
//! Run with `cargo bench -p rulehost --bench store`, or name phases to run
//! only those: `cargo bench -p rulehost --bench store -- lock expire verify`.
//! Each figure is the median of several runs, printed with the runs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rulehost::store::{
    Change, LiftMode, Lifted, NewAudit, NewEvent, NewLock, SqliteStore, Store, Write,
};
use rulehost::wire::{
    Actor, Lock, Subject, SubjectKind, SubjectRef, Timestamp, TransitionDecision, TransitionInput,
    Trigger,
};
use rulehost::{EngineConfig, Host, PolicyId};
use serde_json::json;

const OPERATOR: &str = "bench";
const RUNS: usize = 5;

fn at(text: &str) -> Timestamp {
    text.parse().expect("timestamp")
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("store-bench");
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let path = dir.join(name);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    path
}

fn host(name: &str) -> Host {
    let host = Host::open(scratch(name), EngineConfig::default()).expect("host");
    let id = PolicyId::new("subscription", 1);
    let wasm = rulehost::bundled::get("subscription").expect("bundled subscription");
    let now = at("2026-11-22T10:00:00Z");
    host.install(
        OPERATOR,
        id.clone(),
        wasm,
        &json!({}),
        &Actor::staff("bench"),
        now,
    )
    .expect("install");
    host.activate(OPERATOR, &id, &Actor::staff("bench"), now)
        .expect("activate");
    host
}

fn transition(host: &Host, action: &str, customer: &str) {
    let outcome = host
        .transition(
            OPERATOR,
            at("2026-11-22T10:00:00Z"),
            TransitionInput {
                trigger: Trigger::Action,
                action: action.to_owned(),
                actor: Actor::staff("bench"),
                subject: Subject::new(SubjectKind::Customer, customer),
                params: json!({ "reason": "bench" }),
            },
        )
        .expect("transition");
    assert!(
        matches!(
            outcome.evaluation.decision,
            TransitionDecision::Apply { .. }
        ),
        "{:?}",
        outcome.evaluation.decision
    );
}

/// Lock + unlock operations per second with `callers` threads, each on its
/// own customers; `op(action, customer)` runs one operation.
fn lock_unlock(
    op: &(dyn Fn(&str, &str) + Sync),
    callers: usize,
    pairs_per_caller: usize,
    run: usize,
) -> f64 {
    let start = Instant::now();
    std::thread::scope(|scope| {
        for caller in 0..callers {
            scope.spawn(move || {
                for pair in 0..pairs_per_caller {
                    let customer = format!("r{run}-c{caller}-{pair}");
                    op("lock", &customer);
                    op("unlock", &customer);
                }
            });
        }
    });
    (callers * pairs_per_caller * 2) as f64 / start.elapsed().as_secs_f64()
}

/// The store's own lock or unlock: the write, its audit record and its
/// event, as `Host::transition` commits them, without the policy.
fn store_op(store: &SqliteStore, action: &str, customer: &str) {
    let now = at("2026-11-22T10:00:00Z");
    let subject = SubjectRef::new(SubjectKind::Customer, customer);
    let bench = Actor::staff("bench");
    let write = if action == "lock" {
        Write::SetLock(NewLock {
            subject: subject.clone(),
            lock: Lock {
                id: None,
                kind: "full".to_owned(),
                actor: bench.clone(),
                reason: "bench".to_owned(),
                message: None,
                since: now,
                until: None,
            },
            legacy_id: None,
        })
    } else {
        Write::LiftLocks {
            subject: subject.clone(),
            kind: None,
            lock_id: None,
            lifted: Lifted {
                at: now,
                actor: bench.clone(),
                reason: "bench".to_owned(),
                mode: LiftMode::Manual,
            },
        }
    };
    let change = Change {
        operator: OPERATOR.to_owned(),
        at: now,
        expect: Vec::new(),
        fires: None,
        writes: vec![write],
        audit: NewAudit {
            kind: "decision".to_owned(),
            subject: Some(subject.clone()),
            actor: bench,
            policy: Some(PolicyId::new("subscription", 1)),
            payload: json!({ "action": action, "customer": customer }).to_string(),
        },
        events: vec![NewEvent {
            kind: format!("customer.{action}ed"),
            subject,
            data: json!({ "reason": "bench" }),
        }],
    };
    for result in store.commit(vec![change]) {
        result.expect("store lock or unlock");
    }
}

/// Resident memory now, in MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Runs `work` while sampling resident memory every 5 ms; returns its
/// result and the highest sample above the first, in MiB.
fn with_peak_memory<T>(work: impl FnOnce() -> T) -> (T, f64) {
    let done = std::sync::atomic::AtomicBool::new(false);
    let base = rss_mib();
    std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut peak = base;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_mib());
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            peak.max(rss_mib())
        });
        let result = work();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let peak = sampler.join().expect("sampler");
        (result, peak - base)
    })
}

/// Seconds and peak memory (MiB above the start) to expire `count` locks.
fn expire(count: usize) -> (f64, f64) {
    let host = host(&format!("expire-{count}.db"));
    let mut jsonl = String::with_capacity(count * 160);
    for i in 0..count {
        jsonl.push_str(&format!(
            r#"{{"subject_id":"c-{i}","actor":"legacy","reason":"deferral","since":"2026-01-01T00:00:00Z","until":"2026-06-01T00:00:00Z"}}"#
        ));
        jsonl.push('\n');
    }
    let now = at("2026-11-22T10:00:00Z");
    host.import_locks(
        OPERATOR,
        &jsonl,
        rulehost::import::ImportFormat::JsonLines,
        rulehost::import::OnBadRow::Refuse,
        &Actor::staff("bench"),
        now,
    )
    .expect("import");
    drop(jsonl);
    let ((report, seconds), memory) = with_peak_memory(|| {
        let start = Instant::now();
        let report = host.fire_due(now).expect("fire");
        (report, start.elapsed().as_secs_f64())
    });
    assert_eq!(report.fired, count);
    (seconds, memory)
}

/// Fills a store with `count` audit records shaped like recorded decisions.
fn audit_trail(count: usize) -> PathBuf {
    let path = scratch("audit-1m.db");
    let store = SqliteStore::open(&path).expect("store");
    let now = at("2026-11-22T10:00:00Z");
    let payload = json!({
        "hook": "transition",
        "envelope": { "now": now, "settings": {}, "input": {
            "trigger": "action", "action": "lock",
            "actor": { "kind": "staff", "id": "anna" },
            "subject": { "kind": "customer", "id": "c-000000" },
            "params": { "reason": "payment_deferral", "until": "2026-12-22T10:00:00Z" } } },
        "decision": { "decision": "apply", "effects": [{ "effect": "set_lock",
            "subject": { "kind": "customer", "id": "c-000000" }, "kind": "full",
            "reason": "payment_deferral", "until": "2026-12-22T10:00:00Z" }] },
    })
    .to_string();
    let batch = 10_000;
    for first in (0..count).step_by(batch) {
        let changes = (first..(first + batch).min(count))
            .map(|i| Change {
                operator: OPERATOR.to_owned(),
                at: now,
                expect: Vec::new(),
                fires: None,
                writes: Vec::new(),
                audit: NewAudit {
                    kind: "decision".to_owned(),
                    subject: Some(SubjectRef::new(SubjectKind::Customer, format!("c-{i}"))),
                    actor: Actor::staff("anna"),
                    policy: Some(PolicyId::new("subscription", 1)),
                    payload: payload.clone(),
                },
                events: Vec::new(),
            })
            .collect();
        for result in store.commit(changes) {
            result.expect("audit record");
        }
    }
    path
}

fn main() {
    let phases: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with('-'))
        .collect();
    let run = |phase: &str| phases.is_empty() || phases.iter().any(|p| p == phase);
    if run("lock") {
        lock_phase();
    }
    if run("expire") {
        expire_phase();
    }
    if run("verify") {
        verify_phase();
    }
}

fn lock_phase() {
    println!(
        "lock + unlock, durable commits: (a) Host::transition with the compiled policy, (b) the store alone"
    );
    let host = Arc::new(host("lock-unlock.db"));
    let store = SqliteStore::open(scratch("lock-unlock-store.db")).expect("store");
    let via_host = |action: &str, customer: &str| transition(&host, action, customer);
    let via_store = |action: &str, customer: &str| store_op(&store, action, customer);
    // Warm-up: compile caches, SQLite page cache.
    lock_unlock(&via_host, 8, 100, 0);
    lock_unlock(&via_store, 8, 100, 0);
    for callers in [1, 8] {
        let pairs = 4_000 / callers.min(4);
        let mut host_runs = Vec::new();
        let mut store_runs = Vec::new();
        for run in 1..=RUNS {
            host_runs.push(lock_unlock(&via_host, callers, pairs, run * 10 + callers));
            store_runs.push(lock_unlock(&via_store, callers, pairs, run * 10 + callers));
        }
        let (a, b) = (median(host_runs.clone()), median(store_runs.clone()));
        let show = |runs: &[f64]| {
            runs.iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "  {callers} caller(s): (a) median {a:.0} ops/s (runs: {}); (b) median {b:.0} ops/s (runs: {}); a/b {:.2}",
            show(&host_runs),
            show(&store_runs),
            a / b
        );
    }
}

fn expire_phase() {
    println!("scheduler expiring due locks (Host::fire_due)");
    for count in [10_000, 100_000] {
        let runs: Vec<(f64, f64)> = (0..3).map(|_| expire(count)).collect();
        let seconds = median(runs.iter().map(|r| r.0).collect());
        let memory = median(runs.iter().map(|r| r.1).collect());
        println!(
            "  {count} locks: median {seconds:.2} s ({:.0} locks/s), peak memory +{memory:.1} MiB",
            count as f64 / seconds
        );
    }
}

fn verify_phase() {
    println!("audit verify");
    let count = 1_000_000;
    let start = Instant::now();
    let path = audit_trail(count);
    println!(
        "  wrote {count} records in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let host = Host::open(&path, EngineConfig::default()).expect("host");
    let runs: Vec<f64> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            let verification = host.verify_audit().expect("verify");
            assert_eq!(verification.records, count as u64);
            assert!(verification.is_intact());
            start.elapsed().as_secs_f64()
        })
        .collect();
    println!(
        "  {count} records: median {:.2} s  (runs: {})",
        median(runs.clone()),
        runs.iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
