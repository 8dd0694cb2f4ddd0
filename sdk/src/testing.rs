//! JSON test cases for policies: one file holds a list of cases, each a hook
//! call and the exact output expected. [`run_native`] runs them against the
//! policy's Rust code; the host (`rulehost::testing`) runs the same cases
//! against the compiled `.wasm`.
//!
//! A case file looks like this:
//!
//! ```json
//! [
//!   {
//!     "name": "locked customer may not change the contract",
//!     "hook": "authorize",
//!     "now": "2026-11-22T10:00:00Z",
//!     "settings": {},
//!     "input": { "action": "change_contract", "...": "..." },
//!     "expect": { "decision": "deny", "code": "customer_locked", "reason": "..." }
//!   }
//! ]
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Policy;
use crate::wire::{Envelope, Hook, Reply, Timestamp};

/// One hook call and the output it must produce.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// What the case shows, printed in reports.
    pub name: String,
    /// The hook to call.
    pub hook: Hook,
    /// The host's clock for the call.
    pub now: Timestamp,
    /// Operator settings; `{}` when absent.
    #[serde(default = "empty_object")]
    pub settings: Value,
    /// The hook's input.
    pub input: Value,
    /// The exact output expected (the reply's `ok` value).
    pub expect: Value,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

impl Case {
    /// The envelope the host writes into guest memory for this case.
    pub fn envelope(&self) -> Vec<u8> {
        let envelope = Envelope {
            now: self.now,
            settings: &self.settings,
            input: &self.input,
        };
        serde_json::to_vec(&envelope).unwrap_or_default()
    }

    /// Compares a policy's raw reply with the expected output.
    pub fn check(&self, reply: &[u8]) -> CaseOutcome {
        let failure = match serde_json::from_slice::<Reply<Value>>(reply) {
            Ok(Reply::Ok(actual)) if actual == self.expect => None,
            Ok(Reply::Ok(actual)) => Some(format!("expected {}, got {actual}", self.expect)),
            Ok(Reply::Error(message)) => Some(format!("the policy reported an error: {message}")),
            Err(error) => Some(format!("the reply is not valid JSON: {error}")),
        };
        CaseOutcome {
            name: self.name.clone(),
            failure,
        }
    }
}

/// Reads a case file: a JSON array of cases.
///
/// # Errors
///
/// The JSON is malformed or a case lacks a field; the message gives the line
/// and column.
pub fn parse_cases(json: &str) -> Result<Vec<Case>, serde_json::Error> {
    serde_json::from_str(json)
}

/// The result of one case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseOutcome {
    /// The case's name.
    pub name: String,
    /// Why it failed; `None` when it passed.
    pub failure: Option<String>,
}

/// The results of a list of cases. Its `Display` prints one line per case
/// and a final `N passed, N failed` line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// One outcome per case, in order.
    pub outcomes: Vec<CaseOutcome>,
}

impl Report {
    /// How many cases passed.
    pub fn passed(&self) -> usize {
        self.outcomes.iter().filter(|o| o.failure.is_none()).count()
    }

    /// How many cases failed.
    pub fn failed(&self) -> usize {
        self.outcomes.len() - self.passed()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for outcome in &self.outcomes {
            match &outcome.failure {
                None => writeln!(f, "pass  {}", outcome.name)?,
                Some(why) => writeln!(f, "FAIL  {}: {why}", outcome.name)?,
            }
        }
        write!(f, "{} passed, {} failed", self.passed(), self.failed())
    }
}

/// Runs cases against the policy's native Rust code, through the same JSON
/// handling the wasm module uses.
pub fn run_native<P: Policy>(cases: &[Case]) -> Report {
    Report {
        outcomes: cases
            .iter()
            .map(|case| case.check(&crate::handle_json::<P>(case.hook, &case.envelope())))
            .collect(),
    }
}
