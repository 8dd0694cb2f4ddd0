//! Runs JSON cases (`rulehost_sdk::testing`) against a compiled policy set,
//! the same cases a policy author runs natively.

pub use rulehost_sdk::testing::{Case, CaseOutcome, Report, parse_cases};

use crate::PolicySet;

/// Runs every case through the sandbox; a policy failure fails the case
/// with the diagnostic.
pub fn run_cases(policy: &PolicySet, cases: &[Case]) -> Report {
    Report {
        outcomes: cases
            .iter()
            .map(
                |case| match policy.evaluate_raw(case.hook, &case.envelope()) {
                    Ok(reply) => case.check(&reply),
                    Err(message) => CaseOutcome {
                        name: case.name.clone(),
                        failure: Some(message),
                    },
                },
            )
            .collect(),
    }
}
