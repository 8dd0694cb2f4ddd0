//! The subscription-billing policy set (`shared/domain.md`, SUB-1..SUB-8).
//!
//! A locked customer keeps its data and its open receivables, but nothing
//! about it changes: no master-data or contract edits, no orders, no billing
//! runs. The contract actions that stay possible are configurable and default
//! to the four the product allows (SUB-4).

use rulehost_sdk::periods::due_periods;
use rulehost_sdk::settings::{list_errors, verdict};
use rulehost_sdk::wire::{
    ActorKind, AuthorizeDecision, AuthorizeInput, BillingDecision, BillingInput, Effect, Lock,
    SubjectKind, Timestamp, TransitionDecision, TransitionInput, Trigger,
};
use rulehost_sdk::{Context, Policy};
use serde::Deserialize;

/// The contract actions still possible on a locked customer (SUB-4).
pub const CONTRACT_ACTIONS_WHILE_LOCKED: [&str; 4] = [
    "end_contract",
    "terminate_extraordinarily",
    "annul_contract",
    "postpone_contract",
];

/// Actions a lock does not touch: payments of open receivables and a running
/// dunning go on (SUB-5).
pub const UNAFFECTED_BY_LOCK: [&str; 2] = ["collect_payment", "run_dunning"];

/// The switch that lets billing run for a contract (SUB-6, SUB-7).
pub const AUTOMATIC_BILLING: &str = "automatic_billing";

/// The contract switches an unlock turns off, to be turned on again by hand
/// (SUB-6).
pub const OFF_AFTER_UNLOCK: [&str; 4] = [
    "recurring_payments",
    AUTOMATIC_BILLING,
    "payment_escalation",
    "threshold_billing",
];

/// At most this many missed periods are billed in one catch-up (SUB-7); a
/// contract further behind needs a look by staff.
pub const MAX_CATCH_UP_PERIODS: usize = 120;

/// Operator settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Contract actions still possible while the customer is locked;
    /// [`CONTRACT_ACTIONS_WHILE_LOCKED`] when not set.
    #[serde(default)]
    pub allowed_while_locked: Option<Vec<String>>,
}

impl Settings {
    /// The contract actions still possible while the customer is locked.
    pub fn allowed_while_locked(&self) -> impl Iterator<Item = &str> {
        let configured = self
            .allowed_while_locked
            .as_deref()
            .map(|list| list.iter().map(String::as_str));
        let defaults = configured
            .is_none()
            .then_some(CONTRACT_ACTIONS_WHILE_LOCKED.into_iter());
        configured
            .into_iter()
            .flatten()
            .chain(defaults.into_iter().flatten())
    }
}

/// The parameters of `lock` and `unlock` (SUB-1).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockParams {
    /// Why; required.
    pub reason: String,
    /// A message to the customer.
    #[serde(default)]
    pub message: Option<String>,
    /// When a temporary lock ends by itself.
    #[serde(default)]
    pub until: Option<Timestamp>,
    /// The lock's kind; `full` when absent.
    #[serde(default)]
    pub kind: Option<String>,
}

/// The subscription policy set.
pub struct Subscription;

impl Policy for Subscription {
    type Settings = Settings;

    fn validate_settings(settings: &Settings) -> Result<(), Vec<String>> {
        let allowed = settings.allowed_while_locked.as_deref().unwrap_or_default();
        verdict(list_errors("allowed_while_locked", "action", allowed))
    }

    fn authorize(ctx: &Context<Settings>, input: &AuthorizeInput) -> AuthorizeDecision {
        let action = input.action.as_str();
        if matches!(action, "lock" | "unlock") && input.actor.kind != ActorKind::Staff {
            return AuthorizeDecision::deny(
                "staff_only",
                format!("only staff may {action} a customer (SUB-1)"),
            );
        }
        if action == "delete_customer" {
            return retention(input);
        }
        let lock = input.subject.active_locks(ctx.now).next();
        match (action, lock) {
            ("lock", Some(lock)) => AuthorizeDecision::deny(
                "already_locked",
                format!("the customer is already locked: {}", describe(lock)),
            ),
            ("unlock", None) => AuthorizeDecision::deny("not_locked", "the customer is not locked"),
            ("lock" | "unlock", _) => AuthorizeDecision::Allow,
            (_, None) => AuthorizeDecision::Allow,
            (_, Some(_)) if UNAFFECTED_BY_LOCK.contains(&action) => AuthorizeDecision::Allow,
            (_, Some(_))
                if input.subject.kind == SubjectKind::Contract
                    && ctx.settings.allowed_while_locked().any(|a| a == action) =>
            {
                AuthorizeDecision::Allow
            }
            (_, Some(lock)) => refuse_while_locked(ctx, input, lock),
        }
    }

    fn billing(ctx: &Context<Settings>, input: &BillingInput) -> BillingDecision {
        let contract = &input.contract;
        if let Some(lock) = contract.active_locks(ctx.now).next() {
            return skip(
                "customer_locked",
                format!(
                    "no billing while the customer is locked: {}",
                    describe(lock)
                ),
            );
        }
        if !contract.switch(AUTOMATIC_BILLING) {
            return skip(
                "automatic_billing_off",
                format!("automatic billing is off for contract `{}`", contract.id),
            );
        }
        match due_periods(input, ctx.now, MAX_CATCH_UP_PERIODS) {
            Ok(periods) if periods.is_empty() => skip(
                "nothing_due",
                format!(
                    "contract `{}` is billed until {}",
                    contract.id, input.billed_until
                ),
            ),
            Ok(periods) => BillingDecision::Proceed { periods },
            Err(why) => skip("cannot_compute_periods", why),
        }
    }

    fn transition(ctx: &Context<Settings>, input: &TransitionInput) -> TransitionDecision {
        let action = input.action.as_str();
        match input.trigger {
            // The host lifts a lock whose time is up; nothing else follows.
            Trigger::Expired => return TransitionDecision::Apply { effects: vec![] },
            Trigger::Scheduled => {
                return TransitionDecision::refuse(
                    "unknown_schedule",
                    format!("this policy set schedules no `{action}`"),
                );
            }
            Trigger::Action if matches!(action, "switch_on" | "switch_off") => {
                return switch(ctx, input);
            }
            Trigger::Action if !matches!(action, "lock" | "unlock") => {
                return TransitionDecision::refuse(
                    "no_transition",
                    format!("`{action}` changes no lifecycle state"),
                );
            }
            Trigger::Action => {}
        }
        let check = input.authorize_input();
        if let Some(refusal) = Self::authorize(ctx, &check).into_refusal() {
            return refusal;
        }
        let params: LockParams = match serde_json::from_value(input.params.clone()) {
            Ok(params) => params,
            Err(error) => {
                return TransitionDecision::refuse(
                    "invalid_params",
                    format!("params of `{action}`: {error}"),
                );
            }
        };
        if params.reason.trim().is_empty() {
            return TransitionDecision::refuse(
                "reason_required",
                format!("`{action}` needs a reason"),
            );
        }
        let subject = input.subject.reference();
        let effect = if action == "lock" {
            Effect::SetLock {
                subject,
                kind: params.kind.unwrap_or_else(|| "full".to_owned()),
                reason: params.reason,
                message: params.message,
                until: params.until,
            }
        } else {
            Effect::LiftLock {
                subject,
                kind: params.kind,
                reason: params.reason,
            }
        };
        let mut effects = vec![effect];
        if action == "unlock" {
            // SUB-6: the customer's contracts come back with these off.
            for contract in input
                .subject
                .children
                .iter()
                .filter(|child| child.kind == SubjectKind::Contract)
            {
                effects.extend(OFF_AFTER_UNLOCK.iter().map(|switch| Effect::SetSwitch {
                    subject: contract.clone(),
                    switch: (*switch).to_owned(),
                    on: false,
                }));
            }
        }
        TransitionDecision::Apply { effects }
    }
}

rulehost_sdk::export_policy!(Subscription);

/// `switch_on` / `switch_off` of a contract switch: refused while the
/// customer is locked like any contract change (SUB-2); turning
/// `automatic_billing` on again is how billing resumes after an unlock, and
/// the next billing run catches up every missed period (SUB-7).
fn switch(ctx: &Context<Settings>, input: &TransitionInput) -> TransitionDecision {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct SwitchParams {
        switch: String,
    }
    let action = input.action.as_str();
    if input.subject.kind != SubjectKind::Contract {
        return TransitionDecision::refuse(
            "not_a_contract",
            format!(
                "`{action}` applies to contracts, not a `{}`",
                input.subject.kind.name()
            ),
        );
    }
    let params: SwitchParams = match serde_json::from_value(input.params.clone()) {
        Ok(params) => params,
        Err(error) => {
            return TransitionDecision::refuse(
                "invalid_params",
                format!("params of `{action}`: {error}"),
            );
        }
    };
    if !OFF_AFTER_UNLOCK.contains(&params.switch.as_str()) {
        return TransitionDecision::refuse(
            "unknown_switch",
            format!(
                "unknown switch `{}`: expected one of {}",
                params.switch,
                OFF_AFTER_UNLOCK.map(|s| format!("`{s}`")).join(", ")
            ),
        );
    }
    let check = input.authorize_input();
    if let Some(refusal) = Subscription::authorize(ctx, &check).into_refusal() {
        return refusal;
    }
    TransitionDecision::Apply {
        effects: vec![Effect::SetSwitch {
            subject: input.subject.reference(),
            switch: params.switch,
            on: action == "switch_on",
        }],
    }
}

/// SUB-8: a customer with invoices or payments is kept for the retention
/// periods; the backend passes their counts as the subject's `invoices` and
/// `payments` attributes.
fn retention(input: &AuthorizeInput) -> AuthorizeDecision {
    let customer = &input.subject;
    let (invoices, payments) = (customer.count("invoices"), customer.count("payments"));
    if invoices + payments == 0 {
        return AuthorizeDecision::Allow;
    }
    AuthorizeDecision::deny(
        "retention",
        format!(
            "a customer with invoices or payments ({invoices} invoices, {payments} payments) \
             must be kept for the retention periods and cannot be deleted: lock the customer instead (SUB-8)"
        ),
    )
}

fn refuse_while_locked(
    ctx: &Context<Settings>,
    input: &AuthorizeInput,
    lock: &Lock,
) -> AuthorizeDecision {
    // One buffer for the whole reason: this is the decision a locked
    // customer's every edit gets, so it is worth not allocating per part.
    // Plain pushes rather than `write!`: formatting machinery costs more
    // than the copying in a policy module.
    let mut reason = String::with_capacity(256);
    for part in [
        "`",
        &input.action,
        "` is refused while the customer is locked (",
    ] {
        reason.push_str(part);
    }
    write_lock(&mut reason, lock);
    match input.subject.kind {
        // Most operators keep the default actions: their sentence is one
        // copy, not a dozen.
        SubjectKind::Contract if ctx.settings.allowed_while_locked.is_none() => {
            reason.push_str(DEFAULT_ACTIONS_ON_A_LOCKED_CONTRACT);
        }
        SubjectKind::Contract => {
            write_actions_on_a_locked_contract(&mut reason, ctx.settings.allowed_while_locked());
        }
        _ => reason.push_str("): its data cannot be changed and no orders are accepted"),
    }
    AuthorizeDecision::deny("customer_locked", reason)
}

/// What [`write_actions_on_a_locked_contract`] writes for
/// [`CONTRACT_ACTIONS_WHILE_LOCKED`] (a test checks it).
const DEFAULT_ACTIONS_ON_A_LOCKED_CONTRACT: &str = "): only `end_contract`, \
    `terminate_extraordinarily`, `annul_contract`, `postpone_contract` are possible on a contract";

/// The end of a refusal on a locked contract: the actions still possible.
fn write_actions_on_a_locked_contract<'a>(
    out: &mut String,
    actions: impl Iterator<Item = &'a str>,
) {
    out.push_str("): only ");
    for (i, action) in actions.enumerate() {
        out.push_str(if i == 0 { "`" } else { ", `" });
        out.push_str(action);
        out.push('`');
    }
    out.push_str(" are possible on a contract");
}

/// The lock in words: its reason, who locked, since and until when.
fn describe(lock: &Lock) -> String {
    let mut text = String::with_capacity(96);
    write_lock(&mut text, lock);
    text
}

fn write_lock(out: &mut String, lock: &Lock) {
    for part in [
        "reason `",
        &lock.reason,
        "`, by `",
        &lock.actor.id,
        "` since ",
    ] {
        out.push_str(part);
    }
    lock.since.push_to(out);
    if let Some(until) = lock.until {
        out.push_str(" until ");
        until.push_to(out);
    }
}

fn skip(code: &str, reason: String) -> BillingDecision {
    BillingDecision::Skip {
        code: code.to_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rulehost_sdk::wire::{Actor, Cycle, CycleUnit, Subject};

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn ctx(now: &str) -> Context<Settings> {
        Context {
            now: at(now),
            settings: Settings::default(),
        }
    }

    fn locked_contract() -> Subject {
        let mut customer = Subject::new(SubjectKind::Customer, "c-1");
        customer.locks.push(Lock {
            id: None,
            kind: "full".into(),
            actor: Actor::staff("anna"),
            reason: "payment_default".into(),
            message: None,
            since: at("2026-11-01T00:00:00Z"),
            until: None,
        });
        let mut contract = Subject::new(SubjectKind::Contract, "k-1");
        contract.parent = Some(Box::new(customer));
        contract
    }

    fn request(action: &str, subject: Subject) -> AuthorizeInput {
        AuthorizeInput {
            action: action.into(),
            actor: Actor::staff("anna"),
            subject,
            acknowledgements: vec![],
            params: serde_json::Value::Null,
        }
    }

    #[test]
    fn the_default_actions_on_a_locked_contract_are_written_as_any_others() {
        let mut written = String::new();
        write_actions_on_a_locked_contract(&mut written, CONTRACT_ACTIONS_WHILE_LOCKED.into_iter());
        assert_eq!(DEFAULT_ACTIONS_ON_A_LOCKED_CONTRACT, written);
    }

    #[test]
    fn locked_contract_allows_the_four_contract_actions_natively() {
        for action in CONTRACT_ACTIONS_WHILE_LOCKED {
            let decision = Subscription::authorize(
                &ctx("2026-11-22T00:00:00Z"),
                &request(action, locked_contract()),
            );
            assert_eq!(decision, AuthorizeDecision::Allow, "{action}");
        }
        let decision = Subscription::authorize(
            &ctx("2026-11-22T00:00:00Z"),
            &request("upgrade", locked_contract()),
        );
        assert!(
            matches!(decision, AuthorizeDecision::Deny { ref code, .. } if code == "customer_locked")
        );
    }

    #[test]
    fn catch_up_lists_every_missed_month() {
        let mut contract = Subject::new(SubjectKind::Contract, "k-1");
        contract.switches.insert(AUTOMATIC_BILLING.into(), true);
        let input = BillingInput {
            contract,
            billed_until: at("2026-08-01T00:00:00Z"),
            cycle: Cycle {
                every: 1,
                unit: CycleUnit::Month,
            },
        };
        let BillingDecision::Proceed { periods } =
            Subscription::billing(&ctx("2026-11-15T00:00:00Z"), &input)
        else {
            panic!("expected proceed");
        };
        let starts: Vec<String> = periods.iter().map(|p| p.start.to_string()).collect();
        assert_eq!(
            starts,
            [
                "2026-08-01T00:00:00Z",
                "2026-09-01T00:00:00Z",
                "2026-10-01T00:00:00Z",
                "2026-11-01T00:00:00Z"
            ]
        );
        assert_eq!(periods[3].end, at("2026-12-01T00:00:00Z"));
    }

    #[test]
    fn settings_errors_name_the_field_and_value() {
        let settings = Settings {
            allowed_while_locked: Some(vec![
                "end_contract".into(),
                " ".into(),
                "end_contract".into(),
            ]),
        };
        assert_eq!(
            Subscription::validate_settings(&settings),
            Err(vec![
                "allowed_while_locked[1]: action ` ` is empty".to_owned(),
                "allowed_while_locked[2]: action `end_contract` is listed twice".to_owned(),
            ])
        );
    }
}
