//! The gym policy set (`shared/domain.md`, GYM-7..GYM-11; seed
//! `002_c1eefda10f7eed0c.txt`): locking a member and their card.
//!
//! Staff lock a member naming themselves and a reason from the operator's
//! list (GYM-7). A timed lock runs 5 days, 14 days, a month or until a
//! chosen date and ends by itself (GYM-8); a lock without end needs a
//! message to the member and stays until lifted by hand (GYM-9). Lifting by
//! hand always needs a reason (GYM-10). While locked, the member is refused
//! at check-in and for bookings (GYM-11).

use rulehost_sdk::periods::add_months;
use rulehost_sdk::wire::{
    ActorKind, AuthorizeDecision, AuthorizeInput, Effect, Lock, SubjectKind, Timestamp,
    TransitionDecision, TransitionInput, Trigger,
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

/// What a locked member cannot do (GYM-11).
pub const REFUSED_WHILE_LOCKED: [&str; 3] = ["check_in", "book_class", "book_service"];

/// Operator settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The reasons staff choose from when locking; [`DEFAULT_LOCK_REASONS`]
    /// when not set.
    #[serde(default)]
    pub lock_reasons: Option<Vec<String>>,
}

impl Settings {
    /// Whether `reason` is one of the operator's lock reasons.
    pub fn knows_reason(&self, reason: &str) -> bool {
        match &self.lock_reasons {
            Some(reasons) => reasons.iter().any(|r| r == reason),
            None => DEFAULT_LOCK_REASONS.contains(&reason),
        }
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
        let Some(reasons) = &settings.lock_reasons else {
            return Ok(());
        };
        let mut errors = Vec::new();
        if reasons.is_empty() {
            errors.push("lock_reasons: the list is empty; staff could not lock".to_owned());
        }
        for (index, reason) in reasons.iter().enumerate() {
            if reason.trim().is_empty() {
                errors.push(format!("lock_reasons[{index}]: reason `{reason}` is empty"));
            } else if reasons[..index].contains(reason) {
                errors.push(format!(
                    "lock_reasons[{index}]: reason `{reason}` is listed twice"
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn authorize(ctx: &Context<Settings>, input: &AuthorizeInput) -> AuthorizeDecision {
        let action = input.action.as_str();
        if matches!(action, "lock" | "unlock") && input.actor.kind != ActorKind::Staff {
            return AuthorizeDecision::deny(
                "staff_only",
                format!("only staff may {action} a member (GYM-7, GYM-10)"),
            );
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
            Trigger::Scheduled => {
                return refuse(
                    "unknown_schedule",
                    format!("this policy set schedules no `{action}`"),
                );
            }
            Trigger::Action if !matches!(action, "lock" | "unlock") => {
                return refuse(
                    "no_transition",
                    format!("`{action}` changes no lifecycle state"),
                );
            }
            Trigger::Action => {}
        }
        if input.subject.kind != SubjectKind::Customer {
            return refuse(
                "not_a_member",
                format!(
                    "only members (customers) are locked, not a `{}`",
                    input.subject.kind.name()
                ),
            );
        }
        let check = AuthorizeInput {
            action: input.action.clone(),
            actor: input.actor.clone(),
            subject: input.subject.clone(),
            acknowledgements: Vec::new(),
            params: serde_json::Value::Null,
        };
        if let AuthorizeDecision::Deny { code, reason } = Self::authorize(ctx, &check) {
            return TransitionDecision::Refuse { code, reason };
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
                Ok(_) => refuse(
                    "reason_required",
                    "lifting a lock needs a reason (GYM-10)".to_owned(),
                ),
                Err(error) => refuse("invalid_params", format!("params of `unlock`: {error}")),
            };
        }
        let params: LockParams = match serde_json::from_value(input.params.clone()) {
            Ok(params) => params,
            Err(error) => return refuse("invalid_params", format!("params of `lock`: {error}")),
        };
        if !ctx.settings.knows_reason(&params.reason) {
            return refuse(
                "unknown_reason",
                format!(
                    "reason `{}` is not one of the operator's lock reasons: {} (GYM-7)",
                    params.reason,
                    ctx.settings.reasons()
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
                    return refuse(
                        "date_in_past",
                        format!("the lock's end `{until}` is not after now `{}`", ctx.now),
                    );
                }
                None => {
                    return refuse("until_required", "`until_date` needs `until`".to_owned());
                }
            },
            Duration::OpenEnded => None,
        };
        let message = params.message.filter(|m| !m.trim().is_empty());
        if params.duration == Duration::OpenEnded && message.is_none() {
            return refuse(
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
}

rulehost_sdk::export_policy!(Gym);

fn refuse(code: &str, reason: String) -> TransitionDecision {
    TransitionDecision::Refuse {
        code: code.to_owned(),
        reason,
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
        };
        assert_eq!(
            Gym::validate_settings(&settings),
            Err(vec![
                "lock_reasons[1]: reason ` ` is empty".to_owned(),
                "lock_reasons[2]: reason `debt` is listed twice".to_owned(),
            ])
        );
    }
}
