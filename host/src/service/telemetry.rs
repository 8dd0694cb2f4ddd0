//! Prometheus metrics: decisions by operator, hook and outcome, evaluation
//! latency, fail-closed decisions, the scheduler's lag, held schedules and
//! webhook posts.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use rulehost_sdk::wire::{AuthorizeDecision, BillingDecision, SettingsVerdict, TransitionDecision};

use crate::Evaluation;

const DECISIONS: &str = "rulehost_decisions_total";
const LATENCY: &str = "rulehost_evaluation_seconds";
const FAIL_CLOSED: &str = "rulehost_fail_closed_total";
const SCHEDULER_LAG: &str = "rulehost_scheduler_lag_seconds";
const HELD: &str = "rulehost_schedules_held";
const WEBHOOK_POSTS: &str = "rulehost_webhook_posts_total";

/// Latency buckets, in seconds: 10 µs to 1 s.
const BUCKETS: [f64; 12] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.1,
    1.0,
];

/// The process's recorder. Metrics are process-wide, like the registry a
/// scraper reads; several services in one process share them.
fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(LATENCY.to_owned()), &BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder installed by the embedding program wins; this
        // handle then renders only what is recorded through it, nothing.
        let _ = metrics::set_global_recorder(recorder);
        metrics::describe_counter!(DECISIONS, "Decisions by operator, hook and outcome.");
        metrics::describe_histogram!(LATENCY, metrics::Unit::Seconds, "Hook evaluation time.");
        metrics::describe_counter!(FAIL_CLOSED, "Fail-closed decisions by operator and hook.");
        metrics::describe_gauge!(
            SCHEDULER_LAG,
            metrics::Unit::Seconds,
            "How long the earliest pending schedule is overdue (0 when none is)."
        );
        metrics::describe_gauge!(
            HELD,
            "Schedules held by operator: their policy failed; they fire once a version is activated."
        );
        metrics::describe_counter!(
            WEBHOOK_POSTS,
            "Posts of events to webhooks by operator and outcome (`delivered`, `failed`)."
        );
        handle
    })
}

/// Makes sure the recorder is installed before anything is recorded.
pub(super) fn init() {
    handle();
}

/// A decision's outcome label.
pub(super) trait OutcomeName {
    fn outcome(&self) -> &'static str;
}

impl OutcomeName for AuthorizeDecision {
    fn outcome(&self) -> &'static str {
        match self {
            AuthorizeDecision::Allow => "allow",
            AuthorizeDecision::Deny { .. } => "deny",
            AuthorizeDecision::NeedsConfirmation { .. } => "needs_confirmation",
        }
    }
}

impl OutcomeName for BillingDecision {
    fn outcome(&self) -> &'static str {
        match self {
            BillingDecision::Proceed { .. } => "proceed",
            BillingDecision::Skip { .. } => "skip",
        }
    }
}

impl OutcomeName for TransitionDecision {
    fn outcome(&self) -> &'static str {
        match self {
            TransitionDecision::Apply { .. } => "apply",
            TransitionDecision::Refuse { .. } => "refuse",
        }
    }
}

impl OutcomeName for SettingsVerdict {
    fn outcome(&self) -> &'static str {
        match self {
            SettingsVerdict::Valid => "valid",
            SettingsVerdict::Invalid { .. } => "invalid",
        }
    }
}

/// Records one evaluation and how long it took.
pub(super) fn record<T: OutcomeName>(operator: &str, evaluation: &Evaluation<T>, took: Duration) {
    metrics::histogram!(LATENCY, "hook" => evaluation.hook.name()).record(took.as_secs_f64());
    count(operator, evaluation);
}

/// Counts one decision (for a `transition` whose time is mostly the
/// commit's, which is not the policy's latency).
pub(super) fn count<T: OutcomeName>(operator: &str, evaluation: &Evaluation<T>) {
    let hook = evaluation.hook.name();
    metrics::counter!(DECISIONS, "operator" => operator.to_owned(), "hook" => hook,
        "outcome" => evaluation.decision.outcome())
    .increment(1);
    if evaluation.failed_closed() {
        metrics::counter!(FAIL_CLOSED, "operator" => operator.to_owned(), "hook" => hook)
            .increment(1);
    }
}

/// Counts one post to the operator's webhook.
pub(super) fn webhook_post(operator: &str, delivered: bool) {
    let outcome = if delivered { "delivered" } else { "failed" };
    metrics::counter!(WEBHOOK_POSTS, "operator" => operator.to_owned(), "outcome" => outcome)
        .increment(1);
}

/// The Prometheus text, with the scheduler's lag and each operator's held
/// schedules as of now.
pub(super) fn render(lag: Duration, held: &[(String, u64)]) -> String {
    let handle = handle();
    metrics::gauge!(SCHEDULER_LAG).set(lag.as_secs_f64());
    for (operator, count) in held {
        metrics::gauge!(HELD, "operator" => operator.clone()).set(*count as f64);
    }
    handle.run_upkeep();
    handle.render()
}
