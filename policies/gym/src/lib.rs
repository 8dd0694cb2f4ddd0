//! The gym policy set (`shared/domain.md`, GYM-1..GYM-12; seeds
//! `001_222ffef3228435c3.txt` and `002_c1eefda10f7eed0c.txt`): ending and
//! pausing memberships, deactivating members, locking a member and their
//! card.
//!
//! A membership (a contract whose parent is the member) ends at once or at
//! an end date that can be moved while it is in the future; the host ends
//! it on that date, after which it gives no access and is not billed
//! (GYM-1..GYM-3). Invoices dated after the end are named for staff to
//! delete or credit (GYM-5). Portal access goes only when the member is
//! deactivated, at once or at a date (GYM-4). A pause stops access and
//! billing until its end, when the host resumes the membership (GYM-6).
//!
//! Staff lock a member naming themselves and a reason from the operator's
//! list (GYM-7). A timed lock runs 5 days, 14 days, a month or until a
//! chosen date and ends by itself (GYM-8); a lock without end needs a
//! message to the member and stays until lifted by hand (GYM-9). Lifting by
//! hand always needs a reason (GYM-10). While locked, the member is refused
//! at check-in and for bookings (GYM-11).

use rulehost_sdk::periods::{add_months, due_periods};
use rulehost_sdk::settings::{list_errors, verdict};
use rulehost_sdk::wire::{
    ActorKind, AuthorizeDecision, AuthorizeInput, BillingDecision, BillingInput, Effect, Lock,
    SubjectKind, SubjectRef, Timestamp, TransitionDecision, TransitionInput, Trigger,
};
use rulehost_sdk::{Context, Policy};
use serde::Deserialize;

/// The lock reasons an operator gets without configuring any (GYM-7).
pub const DEFAULT_LOCK_REASONS: [&str; 4] = [
    "missing_documents",
    "payment_deferral",
    "payment_default",
    "house_rules",
];

/// What a locked member cannot do (GYM-11), nor a member whose membership
/// ended (GYM-1, GYM-2) or is paused (GYM-6).
pub const REFUSED_WHILE_LOCKED: [&str; 3] = ["check_in", "book_class", "book_service"];

/// Contract and customer statuses this policy sets.
pub mod status {
    /// An end date is scheduled.
    pub const ENDING: &str = "ending";
    /// The membership has ended.
    pub const ENDED: &str = "ended";
    /// The membership is paused.
    pub const PAUSED: &str = "paused";
    /// The membership runs (again).
    pub const ACTIVE: &str = "active";
    /// The member has no portal access any more.
    pub const DEACTIVATED: &str = "deactivated";
}

/// The scheduled actions this policy set fires.
pub mod scheduled {
    /// A membership's end date has come.
    pub const END_MEMBERSHIP: &str = "end_membership";
    /// A pause is over.
    pub const RESUME_MEMBERSHIP: &str = "resume_membership";
    /// A member's deactivation date has come.
    pub const DEACTIVATE_CUSTOMER: &str = "deactivate_customer";
}

/// Operator settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The reasons staff choose from when locking; [`DEFAULT_LOCK_REASONS`]
    /// when not set.
    #[serde(default)]
    pub lock_reasons: Option<Vec<String>>,
    /// The timed-lock durations staff may choose (GYM-8); all of `5_days`,
    /// `14_days`, `1_month` and `until_date` when not set. A lock without
    /// end is always possible.
    #[serde(default)]
    pub timed_durations: Option<Vec<Duration>>,
}

impl Settings {
    /// Whether `reason` is one of the operator's lock reasons.
    pub fn knows_reason(&self, reason: &str) -> bool {
        match &self.lock_reasons {
            Some(reasons) => reasons.iter().any(|r| r == reason),
            None => DEFAULT_LOCK_REASONS.contains(&reason),
        }
    }

    /// Whether staff may choose `duration`.
    pub fn allows(&self, duration: Duration) -> bool {
        duration == Duration::OpenEnded
            || self
                .timed_durations
                .as_ref()
                .is_none_or(|allowed| allowed.contains(&duration))
    }

    fn reasons(&self) -> String {
        let listed: Vec<&str> = match &self.lock_reasons {
            Some(reasons) => reasons.iter().map(String::as_str).collect(),
            None => DEFAULT_LOCK_REASONS.to_vec(),
        };
        listed
            .iter()
            .map(|r| format!("`{r}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// How long a lock runs (GYM-8, GYM-9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Duration {
    /// Five days.
    #[serde(rename = "5_days")]
    FiveDays,
    /// Fourteen days.
    #[serde(rename = "14_days")]
    FourteenDays,
    /// One calendar month.
    #[serde(rename = "1_month")]
    OneMonth,
    /// Until `until` (the end of a payment deferral).
    UntilDate,
    /// Until lifted by hand; needs a message.
    OpenEnded,
}

impl Duration {
    /// Its name in params and settings.
    pub fn name(self) -> &'static str {
        match self {
            Duration::FiveDays => "5_days",
            Duration::FourteenDays => "14_days",
            Duration::OneMonth => "1_month",
            Duration::UntilDate => "until_date",
            Duration::OpenEnded => "open_ended",
        }
    }
}

/// The parameters of `lock`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockParams {
    /// One of the operator's lock reasons.
    pub reason: String,
    /// How long.
    pub duration: Duration,
    /// The end, for `until_date`.
    #[serde(default)]
    pub until: Option<Timestamp>,
    /// The message to the member; required for `open_ended`.
    #[serde(default)]
    pub message: Option<String>,
}

/// The parameters of `unlock`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnlockParams {
    /// Why the lock is lifted (GYM-10).
    pub reason: String,
}

/// The gym policy set.
pub struct Gym;

impl Policy for Gym {
    type Settings = Settings;

    fn validate_settings(settings: &Settings) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        for (index, duration) in settings.timed_durations.iter().flatten().enumerate() {
            if *duration == Duration::OpenEnded {
                errors.push(format!(
                    "timed_durations[{index}]: `open_ended` is not a timed duration"
                ));
            } else if settings.timed_durations.as_deref().unwrap_or_default()[..index]
                .contains(duration)
            {
                errors.push(format!(
                    "timed_durations[{index}]: duration `{}` is listed twice",
                    duration.name()
                ));
            }
        }
        if settings.lock_reasons.as_ref().is_some_and(Vec::is_empty) {
            errors.push("lock_reasons: the list is empty; staff could not lock".to_owned());
        }
        let reasons = settings.lock_reasons.as_deref().unwrap_or_default();
        errors.extend(list_errors("lock_reasons", "reason", reasons));
        verdict(errors)
    }

    fn authorize(ctx: &Context<Settings>, input: &AuthorizeInput) -> AuthorizeDecision {
        let action = input.action.as_str();
        if matches!(action, "lock" | "unlock") && input.actor.kind != ActorKind::Staff {
            return AuthorizeDecision::deny(
                "staff_only",
                format!("only staff may {action} a member (GYM-7, GYM-10)"),
            );
        }
        if let Some(refusal) = membership_refusal(input) {
            return refusal;
        }
        let lock = input.subject.active_locks(ctx.now).next();
        match (action, lock) {
            ("lock", Some(lock)) => AuthorizeDecision::deny(
                "already_locked",
                format!("the member is already locked: {}", describe(lock)),
            ),
            ("unlock", None) => AuthorizeDecision::deny("not_locked", "the member is not locked"),
            (_, Some(lock)) if REFUSED_WHILE_LOCKED.contains(&action) => AuthorizeDecision::deny(
                "member_locked",
                format!(
                    "`{action}` is refused while the member is locked: {}",
                    describe(lock)
                ),
            ),
            _ => AuthorizeDecision::Allow,
        }
    }

    fn transition(ctx: &Context<Settings>, input: &TransitionInput) -> TransitionDecision {
        let action = input.action.as_str();
        match input.trigger {
            // The host lifts a lock whose time is up (GYM-8).
            Trigger::Expired => return TransitionDecision::Apply { effects: vec![] },
            Trigger::Scheduled => return fire(input),
            Trigger::Action
                if matches!(
                    action,
                    "end_membership"
                        | "change_end_date"
                        | "pause_membership"
                        | "deactivate_customer"
                ) =>
            {
                return membership(ctx, input);
            }
            Trigger::Action if !matches!(action, "lock" | "unlock") => {
                return TransitionDecision::refuse(
                    "no_transition",
                    format!("`{action}` changes no lifecycle state"),
                );
            }
            Trigger::Action => {}
        }
        if input.subject.kind != SubjectKind::Customer {
            return TransitionDecision::refuse(
                "not_a_member",
                format!(
                    "only members (customers) are locked, not a `{}`",
                    input.subject.kind.name()
                ),
            );
        }
        let check = input.authorize_input();
        if let Some(refusal) = Self::authorize(ctx, &check).into_refusal() {
            return refusal;
        }
        let subject = input.subject.reference();
        if action == "unlock" {
            return match serde_json::from_value::<UnlockParams>(input.params.clone()) {
                Ok(params) if !params.reason.trim().is_empty() => TransitionDecision::Apply {
                    effects: vec![Effect::LiftLock {
                        subject,
                        kind: None,
                        reason: params.reason,
                    }],
                },
                Ok(_) => TransitionDecision::refuse(
                    "reason_required",
                    "lifting a lock needs a reason (GYM-10)".to_owned(),
                ),
                Err(error) => TransitionDecision::refuse(
                    "invalid_params",
                    format!("params of `unlock`: {error}"),
                ),
            };
        }
        let params: LockParams = match serde_json::from_value(input.params.clone()) {
            Ok(params) => params,
            Err(error) => {
                return TransitionDecision::refuse(
                    "invalid_params",
                    format!("params of `lock`: {error}"),
                );
            }
        };
        if !ctx.settings.knows_reason(&params.reason) {
            return TransitionDecision::refuse(
                "unknown_reason",
                format!(
                    "reason `{}` is not one of the operator's lock reasons: {} (GYM-7)",
                    params.reason,
                    ctx.settings.reasons()
                ),
            );
        }
        if !ctx.settings.allows(params.duration) {
            return TransitionDecision::refuse(
                "duration_not_allowed",
                format!(
                    "duration `{}` is not one this operator allows (GYM-8)",
                    params.duration.name()
                ),
            );
        }
        let now = ctx.now.get();
        let until = match params.duration {
            Duration::FiveDays => Some(now + time::Duration::days(5)),
            Duration::FourteenDays => Some(now + time::Duration::days(14)),
            Duration::OneMonth => add_months(now, 1),
            Duration::UntilDate => match params.until {
                Some(until) if until > ctx.now => Some(until.get()),
                Some(until) => {
                    return TransitionDecision::refuse(
                        "date_in_past",
                        format!("the lock's end `{until}` is not after now `{}`", ctx.now),
                    );
                }
                None => {
                    return TransitionDecision::refuse(
                        "until_required",
                        "`until_date` needs `until`".to_owned(),
                    );
                }
            },
            Duration::OpenEnded => None,
        };
        let message = params.message.filter(|m| !m.trim().is_empty());
        if params.duration == Duration::OpenEnded && message.is_none() {
            return TransitionDecision::refuse(
                "message_required",
                "a lock without end needs a message to the member (GYM-9)".to_owned(),
            );
        }
        TransitionDecision::Apply {
            effects: vec![Effect::SetLock {
                subject,
                kind: "full".to_owned(),
                reason: params.reason,
                message,
                until: until.map(Timestamp),
            }],
        }
    }

    fn billing(ctx: &Context<Settings>, input: &BillingInput) -> BillingDecision {
        let contract = &input.contract;
        let skip = |code: &str, reason: String| BillingDecision::Skip {
            code: code.to_owned(),
            reason,
        };
        match contract.status.as_deref() {
            Some(status::ENDED) => skip(
                "membership_ended",
                format!(
                    "membership `{}` has ended: no further invoices (GYM-2)",
                    contract.id
                ),
            ),
            Some(status::PAUSED) => skip(
                "membership_paused",
                format!("membership `{}` is paused: no billing (GYM-6)", contract.id),
            ),
            _ => match due_periods(input, ctx.now, MAX_CATCH_UP_PERIODS) {
                Ok(periods) if periods.is_empty() => skip(
                    "nothing_due",
                    format!(
                        "membership `{}` is billed until {}",
                        contract.id, input.billed_until
                    ),
                ),
                Ok(periods) => BillingDecision::Proceed { periods },
                Err(why) => skip("cannot_compute_periods", why),
            },
        }
    }
}

rulehost_sdk::export_policy!(Gym);

/// At most this many missed periods are billed at once.
pub const MAX_CATCH_UP_PERIODS: usize = 120;

/// Access a membership's or member's status refuses (GYM-1, GYM-2, GYM-4,
/// GYM-6).
fn membership_refusal(input: &AuthorizeInput) -> Option<AuthorizeDecision> {
    let action = input.action.as_str();
    let subject = &input.subject;
    let status = subject.status.as_deref();
    match subject.kind {
        SubjectKind::Contract if REFUSED_WHILE_LOCKED.contains(&action) => match status {
            Some(status::ENDED) => Some(AuthorizeDecision::deny(
                "membership_ended",
                format!(
                    "`{action}` is refused: membership `{}` has ended (GYM-1)",
                    subject.id
                ),
            )),
            Some(status::PAUSED) => Some(AuthorizeDecision::deny(
                "membership_paused",
                format!(
                    "`{action}` is refused: membership `{}` is paused (GYM-6)",
                    subject.id
                ),
            )),
            _ => None,
        },
        SubjectKind::Customer
            if action == "portal_login" && status == Some(status::DEACTIVATED) =>
        {
            Some(AuthorizeDecision::deny(
                "member_deactivated",
                format!(
                    "member `{}` is deactivated and has no portal access (GYM-4)",
                    subject.id
                ),
            ))
        }
        _ => None,
    }
}

/// When a membership change takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// Now.
    Immediately,
    /// At `date` (for memberships, the end date).
    AtDate,
}

/// An invoice the backend already created for a membership (GYM-5).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invoice {
    /// The backend's invoice id.
    pub id: String,
    /// Its date.
    pub date: Timestamp,
}

/// The parameters of `end_membership`, `change_end_date`,
/// `pause_membership` and `deactivate_customer`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembershipParams {
    /// For `end_membership` and `deactivate_customer`.
    #[serde(default)]
    pub when: Option<When>,
    /// The end date, deactivation date or (for a pause) its end.
    #[serde(default)]
    pub date: Option<Timestamp>,
    /// Invoices already created for the membership (GYM-5).
    #[serde(default)]
    pub invoices: Vec<Invoice>,
}

fn membership(ctx: &Context<Settings>, input: &TransitionInput) -> TransitionDecision {
    let action = input.action.as_str();
    if input.actor.kind != ActorKind::Staff {
        return TransitionDecision::refuse("staff_only", format!("only staff may {action}"));
    }
    let wanted = if action == "deactivate_customer" {
        SubjectKind::Customer
    } else {
        SubjectKind::Contract
    };
    let subject = &input.subject;
    if subject.kind != wanted {
        return TransitionDecision::refuse(
            "wrong_subject",
            format!(
                "`{action}` applies to a `{}`, not a `{}`",
                wanted.name(),
                subject.kind.name()
            ),
        );
    }
    let params: MembershipParams = match serde_json::from_value(input.params.clone()) {
        Ok(params) => params,
        Err(error) => {
            return TransitionDecision::refuse(
                "invalid_params",
                format!("params of `{action}`: {error}"),
            );
        }
    };
    let status = subject.status.as_deref();
    let here = subject.reference();
    let future_date = |what: &str| -> Result<Timestamp, TransitionDecision> {
        match params.date {
            Some(date) if date > ctx.now => Ok(date),
            Some(date) => Err(TransitionDecision::refuse(
                "date_in_past",
                format!("the {what} `{date}` is not after now `{}`", ctx.now),
            )),
            None => Err(TransitionDecision::refuse(
                "date_required",
                format!("`{action}` needs `date`"),
            )),
        }
    };
    let schedule = |at: Timestamp, what: &str| Effect::Schedule {
        subject: here.clone(),
        at,
        action: what.to_owned(),
        params: serde_json::Value::Null,
    };
    let set = |to: &str| Effect::SetStatus {
        subject: here.clone(),
        status: to.to_owned(),
    };
    let cancel = |what: &str| Effect::CancelSchedule {
        subject: here.clone(),
        action: what.to_owned(),
    };
    if status == Some(status::ENDED) {
        return TransitionDecision::refuse(
            "already_ended",
            format!("membership `{}` has already ended", subject.id),
        );
    }
    let effects = match (action, params.when) {
        ("deactivate_customer", _) if status == Some(status::DEACTIVATED) => {
            return TransitionDecision::refuse(
                "already_deactivated",
                format!("member `{}` is already deactivated", subject.id),
            );
        }
        ("deactivate_customer", Some(When::Immediately)) => vec![set(status::DEACTIVATED)],
        ("deactivate_customer", Some(When::AtDate)) => match future_date("deactivation date") {
            Ok(date) => vec![schedule(date, scheduled::DEACTIVATE_CUSTOMER)],
            Err(refusal) => return refusal,
        },
        ("end_membership", Some(When::Immediately)) => {
            let mut effects = vec![set(status::ENDED)];
            match status {
                Some(status::ENDING) => effects.push(cancel(scheduled::END_MEMBERSHIP)),
                Some(status::PAUSED) => effects.push(cancel(scheduled::RESUME_MEMBERSHIP)),
                _ => {}
            }
            effects.extend(invoices_after(&params.invoices, ctx.now));
            effects
        }
        ("end_membership", Some(When::AtDate)) if status == Some(status::ENDING) => {
            return TransitionDecision::refuse(
                "end_already_scheduled",
                "an end date is already set; use `change_end_date` (GYM-3)".to_owned(),
            );
        }
        ("end_membership", Some(When::AtDate)) => match future_date("end date") {
            Ok(date) => {
                let mut effects = vec![
                    schedule(date, scheduled::END_MEMBERSHIP),
                    set(status::ENDING),
                ];
                effects.extend(invoices_after(&params.invoices, date));
                effects
            }
            Err(refusal) => return refusal,
        },
        ("end_membership" | "deactivate_customer", None) => {
            return TransitionDecision::refuse(
                "when_required",
                format!("`{action}` needs `when`: `immediately` or `at_date`"),
            );
        }
        ("change_end_date", _) if status != Some(status::ENDING) => {
            return TransitionDecision::refuse(
                "no_end_scheduled",
                format!(
                    "membership `{}` has no end date to change (GYM-3)",
                    subject.id
                ),
            );
        }
        ("change_end_date", _) => match future_date("new end date") {
            Ok(date) => vec![
                cancel(scheduled::END_MEMBERSHIP),
                schedule(date, scheduled::END_MEMBERSHIP),
            ],
            Err(refusal) => return refusal,
        },
        (_, _) if status == Some(status::ENDING) => {
            return TransitionDecision::refuse(
                "end_scheduled",
                format!(
                    "membership `{}` ends at a set date and cannot be paused",
                    subject.id
                ),
            );
        }
        (_, _) if status == Some(status::PAUSED) => {
            return TransitionDecision::refuse(
                "already_paused",
                format!("membership `{}` is already paused", subject.id),
            );
        }
        (_, _) => match future_date("end of the pause") {
            Ok(date) => vec![
                set(status::PAUSED),
                schedule(date, scheduled::RESUME_MEMBERSHIP),
            ],
            Err(refusal) => return refusal,
        },
    };
    TransitionDecision::Apply { effects }
}

/// GYM-5: invoices dated after the end are not deleted; each is named for
/// staff to delete or credit.
fn invoices_after(invoices: &[Invoice], end: Timestamp) -> impl Iterator<Item = Effect> + '_ {
    invoices
        .iter()
        .filter(move |invoice| invoice.date > end)
        .map(move |invoice| Effect::Backend {
            action: "delete_or_credit_invoice".to_owned(),
            subject: SubjectRef::new(SubjectKind::Invoice, invoice.id.clone()),
            data: serde_json::json!({
                "date": invoice.date,
                "reason": format!("dated after the membership's end {end} (GYM-5)"),
            }),
        })
}

/// A scheduled action falling due.
fn fire(input: &TransitionInput) -> TransitionDecision {
    let here = input.subject.reference();
    let status = input.subject.status.as_deref();
    let set = |to: &str| TransitionDecision::Apply {
        effects: vec![Effect::SetStatus {
            subject: here.clone(),
            status: to.to_owned(),
        }],
    };
    match input.action.as_str() {
        scheduled::END_MEMBERSHIP if status != Some(status::ENDED) => set(status::ENDED),
        scheduled::RESUME_MEMBERSHIP if status == Some(status::PAUSED) => set(status::ACTIVE),
        scheduled::DEACTIVATE_CUSTOMER if status != Some(status::DEACTIVATED) => {
            set(status::DEACTIVATED)
        }
        scheduled::END_MEMBERSHIP
        | scheduled::RESUME_MEMBERSHIP
        | scheduled::DEACTIVATE_CUSTOMER => TransitionDecision::Apply { effects: vec![] },
        other => TransitionDecision::refuse(
            "unknown_schedule",
            format!("this policy set schedules no `{other}`"),
        ),
    }
}

fn describe(lock: &Lock) -> String {
    let until = lock
        .until
        .map(|u| format!(" until {u}"))
        .unwrap_or_else(|| " without end".to_owned());
    format!(
        "reason `{}`, by `{}` since {}{until}",
        lock.reason, lock.actor.id, lock.since
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_errors_name_the_field_and_value() {
        let settings = Settings {
            lock_reasons: Some(vec!["debt".into(), " ".into(), "debt".into()]),
            timed_durations: Some(vec![
                Duration::FiveDays,
                Duration::OpenEnded,
                Duration::FiveDays,
            ]),
        };
        assert_eq!(
            Gym::validate_settings(&settings),
            Err(vec![
                "timed_durations[1]: `open_ended` is not a timed duration".to_owned(),
                "timed_durations[2]: duration `5_days` is listed twice".to_owned(),
                "lock_reasons[1]: reason ` ` is empty".to_owned(),
                "lock_reasons[2]: reason `debt` is listed twice".to_owned(),
            ])
        );
    }
}
