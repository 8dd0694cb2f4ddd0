//! Memory while hostile policies run in a loop (issue 6): every module of
//! `tests/hostile/` is loaded (the refused ones again each round) and the
//! loadable ones evaluated through a `Host`, round after round, beside good
//! evaluations of another operator. Prints the process's resident memory
//! after chosen rounds and its peak.
//!
//! `cargo bench -p rulehost --bench hostile [-- ROUNDS]` (default 300).

use std::path::PathBuf;

use rulehost::wire::{Actor, AuthorizeInput, Subject, SubjectKind};
use rulehost::{EngineConfig, Host, PolicyId};
use serde_json::json;

/// `VmRSS` and `VmHWM` of this process, in KiB.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(300);
    let corpus_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/hostile");
    let mut corpus: Vec<(String, Vec<u8>)> = std::fs::read_dir(&corpus_dir)
        .expect("tests/hostile exists")
        .map(|entry| entry.expect("readable").path())
        .filter(|path| path.extension().is_some_and(|e| e == "wat"))
        .map(|path| {
            let name = path
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .replace('_', "-");
            (name, std::fs::read(&path).expect("readable"))
        })
        .collect();
    corpus.sort();

    let dir = tempfile::tempdir().expect("a temporary directory");
    let host = Host::open(dir.path().join("hostile.db"), EngineConfig::default()).expect("a host");
    let now = "2026-11-22T10:00:00Z".parse().unwrap();
    let by = Actor::system("bench");
    let good = PolicyId::new("subscription", 1);
    host.install(
        "acme",
        good.clone(),
        rulehost::bundled::get("subscription").unwrap(),
        &json!({}),
        &by,
        now,
    )
    .unwrap();
    host.activate("acme", &good, &by, now).unwrap();
    let mut loadable = Vec::new();
    let mut refused = Vec::new();
    for (name, bytes) in &corpus {
        let operator = format!("hostile-{name}");
        let id = PolicyId::new(name.clone(), 1);
        match host.install(&operator, id.clone(), bytes, &json!({}), &by, now) {
            Ok(_) => {
                host.activate(&operator, &id, &by, now).unwrap();
                loadable.push(operator);
            }
            Err(_) => refused.push((name.clone(), bytes.clone())),
        }
    }
    let input = AuthorizeInput {
        action: "change_customer".into(),
        actor: Actor::staff("anna"),
        subject: Subject::new(SubjectKind::Customer, "c-1"),
        acknowledgements: vec![],
        params: serde_json::Value::Null,
    };
    println!(
        "hostile corpus: {} modules ({} evaluated, {} refused at load), {rounds} rounds",
        corpus.len(),
        loadable.len(),
        refused.len()
    );
    let (start_rss, _) = memory();
    println!("before the loop: rss {start_rss} KiB");
    let mut failed_closed = 0u64;
    let mut good_served = 0u64;
    for round in 1..=rounds {
        for operator in &loadable {
            let evaluation = host.authorize(operator, now, input.clone()).unwrap();
            assert!(evaluation.failed_closed(), "{operator} must fail closed");
            failed_closed += 1;
            let good = host.authorize("acme", now, input.clone()).unwrap();
            assert!(!good.failed_closed());
            good_served += 1;
        }
        for (name, bytes) in &refused {
            assert!(
                host.engine()
                    .load(PolicyId::new(name.clone(), 1), bytes)
                    .is_err()
            );
        }
        if [1, 10, 50, 100, 200].contains(&round) || round == rounds {
            let (rss, peak) = memory();
            println!("after round {round:>4}: rss {rss} KiB, peak {peak} KiB");
        }
    }
    let (rss, peak) = memory();
    println!(
        "done: {failed_closed} fail-closed and {good_served} good evaluations; rss {rss} KiB ({:+} KiB over the loop), peak {peak} KiB",
        rss as i64 - start_rss as i64
    );
}
