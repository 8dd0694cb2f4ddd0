//! The collections policy set (`shared/domain.md`, COL-1..COL-8; seed
//! `003_b9fab3918c811636.txt`): closing, deactivating and deleting debt
//! collection cases, and what becomes of their invoices.
//!
//! A case (subject `case`) is closed by waiving costs and interest and stays
//! visible to the debtor (COL-1), or deactivated: its invoices are
//! decoupled, it leaves the debtor's portal and stays in the operator's
//! archive (COL-2). If the debtor could already know of it, each step taken
//! must be acknowledged (COL-3). Deactivation is final (COL-4); open invoices
//! are locked with the status `collection_deactivated`, paid ones are left
//! alone (COL-5), and a locked invoice joins a new case only once resumed
//! (COL-6). Only a deactivated case can be deleted, and a deleted one is
//! found nowhere (COL-7). The "closed cases" filter shows deactivated cases
//! only with its "deactivated" option (COL-8).
//!
//! The backend passes what it knows: a case's `published` and
//! `reminders_sent` attributes, and a deactivation's invoices with their
//! balance (`params.invoices`).

use rulehost_sdk::wire::{
    Acknowledgement, ActorKind, AuthorizeDecision, AuthorizeInput, Effect, Subject, SubjectKind,
    SubjectRef, TransitionDecision, TransitionInput, Trigger,
};
use rulehost_sdk::{Context, Policy};
use serde::Deserialize;

/// The kind (and status) of the lock an open invoice gets when its case is
/// deactivated (COL-5).
pub const COLLECTION_DEACTIVATED: &str = "collection_deactivated";

/// Case statuses this policy sets.
pub mod status {
    /// Closed with costs and interest waived (COL-1).
    pub const CLOSED: &str = "closed";
    /// Deactivated, for good (COL-2, COL-4).
    pub const DEACTIVATED: &str = "deactivated";
    /// Deleted (COL-7).
    pub const DELETED: &str = "deleted";
}

/// Operator settings: none yet; unknown fields are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {}

/// An invoice linked to a case, as the backend sees it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkedInvoice {
    /// The backend's invoice id.
    pub id: String,
    /// Whether it is paid in full.
    pub paid: bool,
}

/// The parameters of the case transitions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseParams {
    /// The case's invoices (`close_case`, `deactivate_case`).
    #[serde(default)]
    pub invoices: Vec<LinkedInvoice>,
    /// Also credit the underlying invoices (`close_case`).
    #[serde(default)]
    pub credit_invoices: bool,
    /// The steps acknowledged (`deactivate_case`, COL-3).
    #[serde(default)]
    pub acknowledgements: Vec<String>,
}

/// The collections policy set.
pub struct Collections;

impl Policy for Collections {
    type Settings = Settings;

    fn authorize(ctx: &Context<Settings>, input: &AuthorizeInput) -> AuthorizeDecision {
        let subject = &input.subject;
        let status = subject.status.as_deref();
        match (input.action.as_str(), subject.kind) {
            ("deactivate_case", SubjectKind::Case) => {
                if let Some(refusal) = refuse_deactivation(status) {
                    return AuthorizeDecision::deny(refusal.0, refusal.1);
                }
                let missing = missing_acknowledgements(&input.subject, &input.acknowledgements);
                if missing.is_empty() {
                    AuthorizeDecision::Allow
                } else {
                    AuthorizeDecision::NeedsConfirmation { required: missing }
                }
            }
            ("view_in_portal", SubjectKind::Case) => match status {
                Some(status::DEACTIVATED | status::DELETED) => AuthorizeDecision::deny(
                    "case_not_visible",
                    format!(
                        "case `{}` is no longer shown in the debtor's portal (COL-2)",
                        subject.id
                    ),
                ),
                _ => AuthorizeDecision::Allow,
            },
            ("find_in_archive", SubjectKind::Case) if status == Some(status::DELETED) => {
                AuthorizeDecision::deny(
                    "case_deleted",
                    format!(
                        "case `{}` was deleted and cannot be found (COL-7)",
                        subject.id
                    ),
                )
            }
            ("show_in_list", SubjectKind::Case) => show_in_list(input),
            ("assign_to_case", SubjectKind::Invoice) => {
                match subject
                    .active_locks(ctx.now)
                    .find(|lock| lock.kind == COLLECTION_DEACTIVATED)
                {
                    Some(_) => AuthorizeDecision::deny(
                        "invoice_locked",
                        format!(
                            "invoice `{}` is locked with status `{COLLECTION_DEACTIVATED}`: resume it before it joins a case (COL-6)",
                            subject.id
                        ),
                    ),
                    None => AuthorizeDecision::Allow,
                }
            }
            _ => AuthorizeDecision::Allow,
        }
    }

    fn transition(ctx: &Context<Settings>, input: &TransitionInput) -> TransitionDecision {
        let action = input.action.as_str();
        if input.trigger != Trigger::Action {
            return TransitionDecision::Apply { effects: vec![] };
        }
        if input.actor.kind != ActorKind::Staff {
            return TransitionDecision::refuse("staff_only", format!("only staff may {action}"));
        }
        let params: CaseParams = match serde_json::from_value(match &input.params {
            serde_json::Value::Null => serde_json::json!({}),
            params => params.clone(),
        }) {
            Ok(params) => params,
            Err(error) => {
                return TransitionDecision::refuse(
                    "invalid_params",
                    format!("params of `{action}`: {error}"),
                );
            }
        };
        let subject = &input.subject;
        let here = subject.reference();
        let status = subject.status.as_deref();
        let wanted = if action == "resume_invoice" {
            SubjectKind::Invoice
        } else {
            SubjectKind::Case
        };
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
        let set = |to: &str| Effect::SetStatus {
            subject: here.clone(),
            status: to.to_owned(),
        };
        let backend = |what: &str, about: SubjectRef| Effect::Backend {
            action: what.to_owned(),
            subject: about,
            data: serde_json::Value::Null,
        };
        let invoice = |id: &str| SubjectRef::new(SubjectKind::Invoice, id);
        let effects = match action {
            "close_case" => {
                if status.is_some() {
                    return TransitionDecision::refuse(
                        "not_open",
                        format!(
                            "case `{}` is {} and cannot be closed",
                            subject.id,
                            status.unwrap_or_default()
                        ),
                    );
                }
                let mut effects = vec![
                    set(status::CLOSED),
                    backend("waive_costs_and_interest", here.clone()),
                ];
                if params.credit_invoices {
                    effects.extend(
                        params
                            .invoices
                            .iter()
                            .map(|i| backend("credit_invoice", invoice(&i.id))),
                    );
                }
                effects
            }
            "deactivate_case" => {
                if let Some((code, reason)) = refuse_deactivation(status) {
                    return TransitionDecision::refuse(code, reason);
                }
                let missing = missing_acknowledgements(subject, &params.acknowledgements);
                if !missing.is_empty() {
                    let codes: Vec<String> =
                        missing.iter().map(|a| format!("`{}`", a.code)).collect();
                    return TransitionDecision::refuse(
                        "acknowledgement_required",
                        format!(
                            "deactivating case `{}` needs the acknowledgement of {} (COL-3)",
                            subject.id,
                            codes.join(" and ")
                        ),
                    );
                }
                let mut effects = vec![set(status::DEACTIVATED)];
                for linked in &params.invoices {
                    effects.push(backend("decouple_invoice", invoice(&linked.id)));
                    if !linked.paid {
                        effects.push(Effect::SetLock {
                            subject: invoice(&linked.id),
                            kind: COLLECTION_DEACTIVATED.to_owned(),
                            reason: "collection deactivated".to_owned(),
                            message: None,
                            until: None,
                        });
                    }
                }
                effects
            }
            "reactivate_case" => {
                return TransitionDecision::refuse(
                    "deactivation_final",
                    format!(
                        "case `{}` cannot be reactivated: deactivation is final (COL-4)",
                        subject.id
                    ),
                );
            }
            "delete_case" if status == Some(status::DEACTIVATED) => vec![set(status::DELETED)],
            "delete_case" if status == Some(status::DELETED) => {
                return TransitionDecision::refuse(
                    "already_deleted",
                    format!("case `{}` is already deleted", subject.id),
                );
            }
            "delete_case" => {
                return TransitionDecision::refuse(
                    "not_deactivated",
                    format!(
                        "only a deactivated case can be deleted; case `{}` is not (COL-7)",
                        subject.id
                    ),
                );
            }
            "resume_invoice" => {
                if !subject
                    .active_locks(ctx.now)
                    .any(|lock| lock.kind == COLLECTION_DEACTIVATED)
                {
                    return TransitionDecision::refuse(
                        "not_locked",
                        format!(
                            "invoice `{}` is not locked with status `{COLLECTION_DEACTIVATED}`",
                            subject.id
                        ),
                    );
                }
                vec![Effect::LiftLock {
                    subject: here.clone(),
                    kind: Some(COLLECTION_DEACTIVATED.to_owned()),
                    reason: "resumed to start a new collection case (COL-6)".to_owned(),
                }]
            }
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

rulehost_sdk::export_policy!(Collections);

/// Why a case in `status` cannot be deactivated (COL-4), if it cannot.
fn refuse_deactivation(status: Option<&str>) -> Option<(&'static str, String)> {
    match status {
        Some(status::DEACTIVATED) => Some((
            "already_deactivated",
            "the case is already deactivated, and deactivation is final (COL-4)".to_owned(),
        )),
        Some(status::DELETED) => Some(("case_deleted", "the case was deleted (COL-7)".to_owned())),
        _ => None,
    }
}

/// The steps taken that the deactivation must acknowledge and that are not
/// in `given` (COL-3).
fn missing_acknowledgements(case: &Subject, given: &[String]) -> Vec<Acknowledgement> {
    let attributes = &case.attributes;
    let published = attributes
        .get("published")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    let reminders = case.count("reminders_sent");
    let mut required = Vec::new();
    if published {
        required.push(Acknowledgement {
            code: "case_published".to_owned(),
            reason: "the case was published: the debtor could see it in the portal".to_owned(),
        });
    }
    if reminders > 0 {
        required.push(Acknowledgement {
            code: "reminder_sent".to_owned(),
            reason: format!(
                "{reminders} reminder(s) were sent: the debtor was notified of the case"
            ),
        });
    }
    required.retain(|needed| !given.contains(&needed.code));
    required
}

/// COL-8: whether a case shows in a case list with `params.filter` (`open`
/// or `closed`) and `params.deactivated` (the option that adds deactivated
/// cases to "closed").
fn show_in_list(input: &AuthorizeInput) -> AuthorizeDecision {
    let filter = input
        .params
        .get("filter")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("open");
    let with_deactivated = input
        .params
        .get("deactivated")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    let shown = match (input.subject.status.as_deref(), filter) {
        (Some(status::DELETED), _) => false,
        (Some(status::DEACTIVATED), "closed") => with_deactivated,
        (Some(status::CLOSED), "closed") => true,
        (None, "open") => true,
        _ => false,
    };
    if shown {
        AuthorizeDecision::Allow
    } else {
        AuthorizeDecision::deny(
            "not_in_filter",
            format!(
                "case `{}` does not show with filter `{filter}`{} (COL-8)",
                input.subject.id,
                if with_deactivated {
                    " and deactivated"
                } else {
                    ""
                }
            ),
        )
    }
}
