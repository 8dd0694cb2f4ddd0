//! rulehost: a lifecycle rules host for SaaS backends.
//!
//! The host answers lifecycle questions — may this action run while the
//! customer is locked, should billing proceed, what follows when a case is
//! deactivated — by evaluating hooks of sandboxed WebAssembly policy sets.
//!
//! Types follow their lifetimes: one [`Engine`] per process loads
//! [`PolicySet`]s (compiled once, validated against ABI v1); [`Operators`]
//! maps each operator to its active policy set and settings; every
//! evaluation returns an [`Evaluation`] holding a decision — the policy's,
//! or a fail-closed one with a [`Diagnostic`] when the policy trapped, ran
//! out of fuel or memory, or answered garbage.
//!
//! ```
//! use rulehost::{Engine, EngineConfig, Operators, PolicyId};
//! use rulehost_sdk::wire::{Actor, AuthorizeDecision, AuthorizeInput, Subject, SubjectKind};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Engine::new(EngineConfig::default())?;
//! let policy = engine.load(PolicyId::new("subscription", 1), rulehost::bundled::get("subscription").unwrap())?;
//! let now = "2026-11-22T10:00:00Z".parse()?;
//!
//! let operators = Operators::new();
//! operators.install("acme", policy, &serde_json::json!({}), now)?;
//!
//! let input = AuthorizeInput {
//!     action: "change_contract".into(),
//!     actor: Actor::staff("anna"),
//!     subject: Subject::new(SubjectKind::Contract, "k-1"),
//!     acknowledgements: vec![],
//!     params: serde_json::Value::Null,
//! };
//! let evaluation = operators.authorize("acme", now, &input)?;
//! assert_eq!(evaluation.decision, AuthorizeDecision::Allow);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod access;
mod audit;
mod cache;
mod effects;
mod engine;
mod error;
mod evaluation;
#[doc(hidden)]
pub mod fuzzing;
mod host;
pub mod import;
pub mod integrity;
mod meter;
mod operators;
mod policy;
pub mod scheduler;
pub mod service;
pub mod store;
pub mod testing;

pub use audit::{BrokenLink, Verification};
pub use cache::PrunedModules;
pub use engine::{Engine, EngineConfig, Isolation, Limits, PolicyId};
pub use error::{Error, LoadError, Result};
pub use evaluation::{Diagnostic, Evaluation, FailureKind};
pub use host::{
    Comparison, DECISION, FireReport, Host, Install, Outcome, Replay, ReplayWith, Resolved,
    host_actor,
};
pub use operators::{Active, Operators, Settings};
pub use policy::PolicySet;
pub use rulehost_sdk::wire;
pub use scheduler::{Clock, ManualClock, Run, Scheduler, SystemClock};

/// The policy sets built from `policies/` and bundled into the host.
pub mod bundled {
    include!(concat!(env!("OUT_DIR"), "/bundled.rs"));

    /// The compiled module of a bundled flavour.
    pub fn get(flavour: &str) -> Option<&'static [u8]> {
        ALL.iter()
            .find(|(name, _)| *name == flavour)
            .map(|(_, wasm)| *wasm)
    }
}

/// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
