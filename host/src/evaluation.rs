//! What an evaluation returns: always a decision, with a diagnostic when the
//! policy failed and the decision is the fail-closed one.

use std::fmt;

use rulehost_sdk::wire::Hook;
use serde::Serialize;

use crate::PolicyId;

/// The result of evaluating one hook: a decision, always.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Evaluation<T> {
    /// The policy set that decided.
    pub policy: PolicyId,
    /// The hook evaluated.
    pub hook: Hook,
    /// The decision: the policy's, or the fail-closed one when
    /// `diagnostic` is set.
    pub decision: T,
    /// Why the policy's own decision could not be used, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnostic: Option<Diagnostic>,
    /// The CPU budget spent, in fuel units (deterministic for a given input).
    pub fuel_used: u64,
    /// Lines the policy logged through `rulehost`.`log`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<String>,
}

impl<T> Evaluation<T> {
    /// Whether the decision is the fail-closed one.
    pub fn failed_closed(&self) -> bool {
        self.diagnostic.is_some()
    }
}

/// Why a policy's decision could not be used. Names the operator, the policy
/// version and the hook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The operator whose request it was.
    pub operator: String,
    /// The policy set, `name@version`.
    pub policy: PolicyId,
    /// The hook.
    pub hook: Hook,
    /// What kind of failure.
    pub kind: FailureKind,
    /// The failure in words.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "policy `{}` failed in hook `{}` for operator `{}`: {}",
            self.policy, self.hook, self.operator, self.message
        )
    }
}

impl std::error::Error for Diagnostic {}

/// The kinds of policy failure, each leading to a fail-closed decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The policy does not export the hook.
    MissingHook,
    /// The CPU budget ran out.
    FuelExhausted,
    /// The policy tried to grow its memory past the limit.
    MemoryLimit,
    /// The policy tried to grow a table past the limit.
    TableLimit,
    /// The policy's call stack overflowed.
    StackOverflow,
    /// The policy trapped (`unreachable`, out-of-bounds access, panic...).
    Trap,
    /// The reply's pointer or length lies outside the policy's memory.
    OutputOutOfBounds,
    /// The reply is larger than the output limit.
    OutputTooLarge,
    /// The reply is not valid UTF-8, not JSON, or not the hook's output type.
    MalformedOutput,
    /// The policy answered with an error: it could not read its input.
    PolicyError,
    /// The sandbox could not create an instance (capacity, host fault).
    Instantiation,
}

/// A failure inside the sandbox, before it is tied to an operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
        }
    }
}
