//! The publishing policy set (`shared/domain.md`, PUB-1..PUB-8; seed
//! `004_5ebd0723d6e3ea22.txt`): a subscription-commerce customer account.
//!
//! Locking access keeps the login but takes the products away (PUB-1);
//! locking the customer takes the login too (PUB-2). An account is deleted
//! only while it holds no transaction data (PUB-3). The host exports what it
//! holds about a customer (PUB-4); anonymizing locks the account for
//! editing, stops purchases and mail, and keeps invoice corrections possible
//! (PUB-5). Goodwill grants free issues, free re-deliveries and free billing
//! periods, which billing skips (PUB-6). Activities take notes and files of
//! at most 800 KB in pdf, image or office formats (PUB-7). Password resets,
//! two-factor resets and opt-in changes are refused on an anonymized or
//! deleted account (PUB-8).
//!
//! The backend passes what it knows as attributes: a customer's `orders`,
//! `invoices` and `subscriptions` counts, a contract's `free_periods`.

use rulehost_sdk::periods::due_periods;
use rulehost_sdk::wire::{
    ActorKind, AuthorizeDecision, AuthorizeInput, BillingDecision, BillingInput, Effect, Period,
    Subject, SubjectKind, Timestamp, TransitionDecision, TransitionInput, Trigger,
};
use rulehost_sdk::{Context, Policy};
use serde::Deserialize;

/// The largest activity file, in bytes: 800 KB (PUB-7).
pub const MAX_FILE_BYTES: u64 = 800 * 1024;

/// The file types an activity takes (PUB-7): pdf, images, office files.
pub const ALLOWED_CONTENT_TYPES: [&str; 12] = [
    "application/pdf",
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "application/msword",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.ms-excel",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.ms-powerpoint",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.oasis.opendocument.text",
];

/// Lock kinds: product access only (PUB-1), the login as well (PUB-2), and
/// editing of an anonymized account (PUB-5).
pub mod kind {
    /// No product access; the customer still logs in.
    pub const ACCESS: &str = "access";
    /// No login (and so no access).
    pub const LOGIN: &str = "login";
    /// The account cannot be edited.
    pub const EDITING: &str = "editing";
}

/// Customer statuses this policy sets.
pub mod status {
    /// Anonymized (PUB-5).
    pub const ANONYMIZED: &str = "anonymized";
    /// Deleted (PUB-3).
    pub const DELETED: &str = "deleted";
}

/// At most this many missed periods are billed at once.
pub const MAX_CATCH_UP_PERIODS: usize = 120;

/// Operator settings: none yet; unknown fields are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {}

/// A file attached to an activity (PUB-7).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    /// Its name.
    pub name: String,
    /// Its size.
    pub size_bytes: u64,
    /// Its media type (`application/pdf`).
    pub content_type: String,
}

/// The publishing policy set.
pub struct Publishing;

impl Policy for Publishing {
    type Settings = Settings;

    fn authorize(ctx: &Context<Settings>, input: &AuthorizeInput) -> AuthorizeDecision {
        let action = input.action.as_str();
        let subject = &input.subject;
        let status = subject.status.as_deref();
        let locked = |kinds: &[&str]| {
            subject
                .active_locks(ctx.now)
                .find(|lock| kinds.contains(&lock.kind.as_str()))
                .map(|lock| {
                    format!(
                        "reason `{}`, by `{}` since {}",
                        lock.reason, lock.actor.id, lock.since
                    )
                })
        };
        if status == Some(status::DELETED) {
            return AuthorizeDecision::deny(
                "deleted",
                format!("customer `{}` was deleted", subject.id),
            );
        }
        match action {
            "login" => match locked(&[kind::LOGIN]) {
                Some(lock) => AuthorizeDecision::deny(
                    "customer_locked",
                    format!("the customer is locked and cannot log in ({lock}) (PUB-2)"),
                ),
                None => AuthorizeDecision::Allow,
            },
            "access_product" => match locked(&[kind::LOGIN, kind::ACCESS]) {
                Some(lock) => AuthorizeDecision::deny(
                    "access_locked",
                    format!("the customer has no access to products ({lock}) (PUB-1)"),
                ),
                None => AuthorizeDecision::Allow,
            },
            "delete_customer" => delete_check(subject),
            "add_activity" => activity_check(input),
            "purchase" | "send_mail" | "edit_customer" | "reset_password" | "disable_2fa"
            | "change_opt_in"
                if status == Some(status::ANONYMIZED) =>
            {
                AuthorizeDecision::deny(
                    "anonymized",
                    format!(
                        "`{action}` is refused: customer `{}` is anonymized (PUB-5, PUB-8)",
                        subject.id
                    ),
                )
            }
            _ => AuthorizeDecision::Allow,
        }
    }

    fn billing(ctx: &Context<Settings>, input: &BillingInput) -> BillingDecision {
        let contract = &input.contract;
        let free: Vec<Period> = contract
            .attributes
            .get("free_periods")
            .and_then(|periods| serde_json::from_value(periods.clone()).ok())
            .unwrap_or_default();
        let skip = |code: &str, reason: String| BillingDecision::Skip {
            code: code.to_owned(),
            reason,
        };
        let due = match due_periods(input, ctx.now, MAX_CATCH_UP_PERIODS) {
            Ok(due) => due,
            Err(why) => return skip("cannot_compute_periods", why),
        };
        if due.is_empty() {
            return skip(
                "nothing_due",
                format!(
                    "contract `{}` is billed until {}",
                    contract.id, input.billed_until
                ),
            );
        }
        // PUB-6: a free billing period granted as goodwill is not billed.
        let billed: Vec<Period> = due
            .iter()
            .filter(|period| {
                !free
                    .iter()
                    .any(|f| f.start <= period.start && period.end <= f.end)
            })
            .copied()
            .collect();
        if billed.is_empty() {
            return skip(
                "free_period",
                format!(
                    "every due period of contract `{}` is a free period granted as goodwill (PUB-6)",
                    contract.id
                ),
            );
        }
        BillingDecision::Proceed { periods: billed }
    }

    fn transition(ctx: &Context<Settings>, input: &TransitionInput) -> TransitionDecision {
        let action = input.action.as_str();
        if input.trigger != Trigger::Action {
            return TransitionDecision::Apply { effects: vec![] };
        }
        if input.actor.kind != ActorKind::Staff {
            return TransitionDecision::refuse("staff_only", format!("only staff may {action}"));
        }
        let subject = &input.subject;
        let here = subject.reference();
        let reason = input
            .params
            .get("reason")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .trim()
            .to_owned();
        let lock_kind = match action {
            "lock_access" | "unlock_access" => Some(kind::ACCESS),
            "lock_customer" | "unlock_customer" => Some(kind::LOGIN),
            _ => None,
        };
        if let Some(lock_kind) = lock_kind {
            if reason.is_empty() {
                return TransitionDecision::refuse(
                    "reason_required",
                    format!("`{action}` needs a reason"),
                );
            }
            let has = subject
                .active_locks(ctx.now)
                .any(|lock| lock.kind == lock_kind);
            let effect = match (action.starts_with("lock"), has) {
                (true, true) => {
                    return TransitionDecision::refuse(
                        "already_locked",
                        format!("customer `{}` already has a `{lock_kind}` lock", subject.id),
                    );
                }
                (false, false) => {
                    return TransitionDecision::refuse(
                        "not_locked",
                        format!("customer `{}` has no `{lock_kind}` lock", subject.id),
                    );
                }
                (true, false) => Effect::SetLock {
                    subject: here,
                    kind: lock_kind.to_owned(),
                    reason,
                    message: None,
                    until: None,
                },
                (false, true) => Effect::LiftLock {
                    subject: here,
                    kind: Some(lock_kind.to_owned()),
                    reason,
                },
            };
            return TransitionDecision::Apply {
                effects: vec![effect],
            };
        }
        let effects = match action {
            "delete_customer" => {
                if let Some(refusal) = delete_check(subject).into_refusal() {
                    return refusal;
                }
                vec![Effect::SetStatus {
                    subject: here,
                    status: status::DELETED.to_owned(),
                }]
            }
            "anonymize_customer" => {
                if subject.status.as_deref() == Some(status::ANONYMIZED) {
                    return TransitionDecision::refuse(
                        "already_anonymized",
                        format!("customer `{}` is already anonymized", subject.id),
                    );
                }
                vec![
                    Effect::SetStatus {
                        subject: here.clone(),
                        status: status::ANONYMIZED.to_owned(),
                    },
                    Effect::SetLock {
                        subject: here.clone(),
                        kind: kind::EDITING.to_owned(),
                        reason: "anonymized".to_owned(),
                        message: None,
                        until: None,
                    },
                    Effect::Backend {
                        action: "anonymize_account".to_owned(),
                        subject: here,
                        data: serde_json::Value::Null,
                    },
                ]
            }
            "grant_goodwill" => match goodwill(input) {
                Ok(effect) => vec![effect],
                Err(refusal) => return refusal,
            },
            other => {
                return TransitionDecision::refuse(
                    "no_transition",
                    format!("`{other}` changes no lifecycle state"),
                );
            }
        };
        TransitionDecision::Apply { effects }
    }
}

rulehost_sdk::export_policy!(Publishing);

/// PUB-3: deleting is irrevocable and only for an account without
/// transaction data.
fn delete_check(customer: &Subject) -> AuthorizeDecision {
    let held: Vec<String> = ["orders", "invoices", "subscriptions"]
        .into_iter()
        .filter(|name| customer.count(name) > 0)
        .map(|name| format!("{} {name}", customer.count(name)))
        .collect();
    if held.is_empty() {
        return AuthorizeDecision::Allow;
    }
    AuthorizeDecision::deny(
        "has_transactions",
        format!(
            "customer `{}` holds transaction data ({}) and cannot be deleted (PUB-3)",
            customer.id,
            held.join(", ")
        ),
    )
}

/// PUB-7: notes always; files of an allowed type up to 800 KB.
fn activity_check(input: &AuthorizeInput) -> AuthorizeDecision {
    let Some(file) = input.params.get("file") else {
        return AuthorizeDecision::Allow;
    };
    let file: Attachment = match serde_json::from_value(file.clone()) {
        Ok(file) => file,
        Err(error) => {
            return AuthorizeDecision::deny("invalid_file", format!("params `file`: {error}"));
        }
    };
    if file.size_bytes > MAX_FILE_BYTES {
        return AuthorizeDecision::deny(
            "file_too_large",
            format!(
                "file `{}` has {} bytes; an activity takes at most {MAX_FILE_BYTES} bytes (800 KB) (PUB-7)",
                file.name, file.size_bytes
            ),
        );
    }
    if !ALLOWED_CONTENT_TYPES.contains(&file.content_type.as_str()) {
        return AuthorizeDecision::deny(
            "file_type_not_allowed",
            format!(
                "file `{}` of type `{}` is refused: only pdf, image and office files are taken (PUB-7)",
                file.name, file.content_type
            ),
        );
    }
    AuthorizeDecision::Allow
}

/// PUB-6: free issues, free re-delivery and free billing periods, carried
/// out by the backend; a free period is then passed back in the contract's
/// `free_periods` for billing to skip.
fn goodwill(input: &TransitionInput) -> Result<Effect, TransitionDecision> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, tag = "grant")]
    enum Grant {
        #[serde(rename = "free_issues")]
        Issues { count: u32 },
        #[serde(rename = "free_redelivery")]
        Redelivery { issue: String },
        #[serde(rename = "free_period")]
        Period { start: Timestamp, end: Timestamp },
    }
    let grant: Grant = serde_json::from_value(input.params.clone()).map_err(|error| {
        TransitionDecision::refuse(
            "invalid_params",
            format!("params of `grant_goodwill`: {error}"),
        )
    })?;
    let data = match grant {
        Grant::Issues { count: 0 } => {
            return Err(TransitionDecision::refuse(
                "invalid_params",
                "`count` of free issues is `0`".to_owned(),
            ));
        }
        Grant::Issues { count } => {
            serde_json::json!({ "grant": "free_issues", "count": count })
        }
        Grant::Redelivery { issue } => {
            serde_json::json!({ "grant": "free_redelivery", "issue": issue })
        }
        Grant::Period { start, end } if end <= start => {
            return Err(TransitionDecision::refuse(
                "invalid_params",
                format!("the free period's end `{end}` is not after its start `{start}`"),
            ));
        }
        Grant::Period { start, end } => {
            serde_json::json!({ "grant": "free_period", "start": start, "end": end })
        }
    };
    if input.subject.kind == SubjectKind::Invoice {
        return Err(TransitionDecision::refuse(
            "wrong_subject",
            "goodwill is granted on a customer or contract".to_owned(),
        ));
    }
    Ok(Effect::Backend {
        action: "grant_goodwill".to_owned(),
        subject: input.subject.reference(),
        data,
    })
}
