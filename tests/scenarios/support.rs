//! Shared helpers for the scenarios.

use rulehost::wire::{Actor, AuthorizeInput, Lock, Subject, SubjectKind, Timestamp};
use rulehost::{Engine, EngineConfig, Isolation, Limits, PolicyId, PolicySet};

/// A timestamp from RFC 3339 text.
pub fn at(text: &str) -> Timestamp {
    text.parse().expect("valid RFC 3339 in a test")
}

/// An engine with the default limits but a smaller CPU budget, so runaway
/// policies fail fast.
pub fn engine(isolation: Isolation) -> Engine {
    Engine::new(EngineConfig {
        isolation,
        limits: Limits {
            fuel: 2_000_000,
            ..Limits::default()
        },
        ..EngineConfig::default()
    })
    .expect("engine")
}

/// A bundled policy set, compiled.
pub fn bundled(engine: &Engine, flavour: &str, version: u32) -> PolicySet {
    let wasm = rulehost::bundled::get(flavour).expect("bundled flavour");
    engine
        .load(PolicyId::new(flavour, version), wasm)
        .expect("bundled policy loads")
}

/// A lock by staff member `anna`.
pub fn lock(reason: &str, since: &str, until: Option<&str>) -> Lock {
    Lock {
        id: None,
        kind: "full".into(),
        actor: Actor::staff("anna"),
        reason: reason.into(),
        message: None,
        since: at(since),
        until: until.map(at),
    }
}

/// Customer `c-1`, with these locks.
pub fn customer(locks: Vec<Lock>) -> Subject {
    let mut customer = Subject::new(SubjectKind::Customer, "c-1");
    customer.locks = locks;
    customer
}

/// Contract `k-1` of `customer`.
pub fn contract_of(customer: Subject) -> Subject {
    let mut contract = Subject::new(SubjectKind::Contract, "k-1");
    contract.parent = Some(Box::new(customer));
    contract
}

/// An authorize request.
pub fn request(action: &str, actor: Actor, subject: Subject) -> AuthorizeInput {
    AuthorizeInput {
        action: action.into(),
        actor,
        subject,
        acknowledgements: vec![],
        params: serde_json::Value::Null,
    }
}

/// A module whose `rulehost_transition` always answers `reply` (JSON).
pub fn fixed_transition(reply: &str) -> String {
    let escaped = reply.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        r#"(module
             (memory (export "memory") 1)
             (data (i32.const 0) "{escaped}")
             (func (export "rulehost_abi_version") (result i32) i32.const 1)
             (func (export "rulehost_alloc") (param i32) (result i32) i32.const 4096)
             (func (export "rulehost_transition") (param i32 i32) (result i64) i64.const {len}))"#,
        len = reply.len()
    )
}
