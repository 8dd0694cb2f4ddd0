//! Hostile policies (HOST-1, HOST-2): every module of `tests/hostile/` is
//! refused at load or fails closed with an exact diagnostic, through the
//! `Host`, while another operator's evaluations keep succeeding.
//!
//! Each corpus file starts with two comment lines:
//! `;; expect: load_error` or `;; expect: fail_closed KIND` (a
//! `FailureKind`), and `;; message: ...`, the exact error or diagnostic.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rulehost::wire::{Actor, AuthorizeDecision};
use rulehost::{EngineConfig, Host, PolicyId};

use crate::support::{at, customer, request};

/// One hostile module and what must become of it.
pub struct Hostile {
    /// The file's stem.
    pub name: String,
    /// The module's bytes.
    pub bytes: Vec<u8>,
    /// `None` for a load error, else the failure kind's name.
    pub fail_closed: Option<String>,
    /// The exact load error or diagnostic message.
    pub message: String,
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("hostile")
}

/// The corpus files, and one module of many megabytes made here (a file of
/// that size has no place in the repository).
pub fn corpus() -> Vec<Hostile> {
    let mut corpus = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "wat"))
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        let expect = lines
            .next()
            .and_then(|l| l.strip_prefix(";; expect: "))
            .unwrap_or_else(|| panic!("{} lacks `;; expect:`", path.display()));
        let message = lines
            .next()
            .and_then(|l| l.strip_prefix(";; message: "))
            .unwrap_or_else(|| panic!("{} lacks `;; message:`", path.display()));
        corpus.push(Hostile {
            name: path
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .replace('_', "-"),
            bytes: text.clone().into_bytes(),
            fail_closed: expect.strip_prefix("fail_closed ").map(str::to_owned),
            message: message.to_owned(),
        });
    }
    let megabytes = format!(
        r#"(module (memory (export "memory") 1)
             (data (i32.const 0) "{}")
             (func (export "rulehost_abi_version") (result i32) i32.const 1)
             (func (export "rulehost_alloc") (param i32) (result i32) i32.const 1024)
             (func (export "rulehost_authorize") (param i32 i32) (result i64) i64.const 0))"#,
        "x".repeat(20 << 20)
    );
    let size = megabytes.len();
    corpus.push(Hostile {
        name: "many-megabytes".to_owned(),
        bytes: megabytes.into_bytes(),
        fail_closed: None,
        message: format!("cannot load policy `many-megabytes@1`: is {size} bytes, over the limit of 16777216 bytes for a module"),
    });
    corpus
}

#[test]
fn every_hostile_module_is_refused_or_fails_closed_while_another_operator_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let host =
        Arc::new(Host::open(dir.path().join("rulehost.db"), EngineConfig::default()).unwrap());
    let now = at("2026-11-22T10:00:00Z");
    let by = Actor::system("test");
    let good = PolicyId::new("subscription", 1);
    host.install(
        "acme",
        good.clone(),
        rulehost::bundled::get("subscription").unwrap(),
        &serde_json::json!({}),
        &by,
        now,
    )
    .unwrap();
    host.activate("acme", &good, &by, now).unwrap();

    // Good evaluations for `acme`, all the while.
    let stop = Arc::new(AtomicBool::new(false));
    let served = {
        let (host, stop) = (host.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut served = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let input = request("change_customer", Actor::staff("anna"), customer(vec![]));
                let evaluation = host.authorize("acme", now, input).unwrap();
                assert_eq!(
                    (evaluation.decision, evaluation.diagnostic),
                    (AuthorizeDecision::Allow, None)
                );
                served += 1;
            }
            served
        })
    };

    let corpus = corpus();
    assert!(corpus.len() >= 15, "the corpus has its modules");
    let mut outcomes = Vec::new();
    for hostile in &corpus {
        let operator = format!("hostile-{}", hostile.name);
        let id = PolicyId::new(hostile.name.clone(), 1);
        let installed = host.install(
            &operator,
            id.clone(),
            &hostile.bytes,
            &serde_json::json!({}),
            &by,
            now,
        );
        let outcome = match installed {
            Err(error) => (None, error.to_string()),
            Ok(_) => {
                host.activate(&operator, &id, &by, now).unwrap();
                let input = request("change_customer", Actor::staff("anna"), customer(vec![]));
                let evaluation = host.authorize(&operator, now, input).unwrap();
                let diagnostic = evaluation.diagnostic.unwrap_or_else(|| {
                    panic!(
                        "`{}` decided without failing: {:?}",
                        hostile.name, evaluation.decision
                    )
                });
                assert_eq!(
                    evaluation.decision,
                    AuthorizeDecision::deny("policy_failure", diagnostic.to_string())
                );
                assert_eq!(
                    (diagnostic.operator.as_str(), diagnostic.policy.to_string()),
                    (operator.as_str(), format!("{}@1", hostile.name))
                );
                (Some(format!("{:?}", diagnostic.kind)), diagnostic.message)
            }
        };
        outcomes.push((hostile.name.clone(), outcome));
    }
    stop.store(true, Ordering::Relaxed);
    let served = served.join().expect("every good evaluation succeeded");
    assert!(served > 0);

    let expected: Vec<_> = corpus
        .iter()
        .map(|h| (h.name.clone(), (h.fail_closed.clone(), h.message.clone())))
        .collect();
    assert_eq!(outcomes, expected);
}
