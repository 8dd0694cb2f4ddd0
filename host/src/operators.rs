//! Operators: each operator id has exactly one active policy set and its own
//! settings (HOST-1). Replacing an operator's policy set is atomic; requests
//! in flight finish on the set they started with.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use rulehost_sdk::wire::{
    Authorize, AuthorizeDecision, AuthorizeInput, Billing, BillingDecision, BillingInput, HookKind,
    SettingsVerdict, Timestamp, Transition, TransitionDecision, TransitionInput, ValidateSettings,
};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::{Evaluation, PolicySet};

/// An operator's settings: a JSON object, kept as compact JSON text so each
/// evaluation copies it into the envelope without encoding it again.
#[derive(Clone, Debug)]
pub struct Settings(Arc<RawValue>);

impl Settings {
    /// No settings: `{}`.
    pub fn empty() -> Self {
        Settings(Arc::from(
            RawValue::from_string("{}".to_owned()).expect("`{}` is JSON"),
        ))
    }

    /// Settings from a JSON value, which must be an object.
    ///
    /// # Errors
    ///
    /// [`Error::SettingsNotObject`] naming `operator` and what was given.
    pub fn from_value(operator: &str, value: &Value) -> Result<Self> {
        if !value.is_object() {
            let mut got = value.to_string();
            if got.len() > 40 {
                got.truncate(got.floor_char_boundary(37));
                got.push_str("...");
            }
            return Err(Error::SettingsNotObject {
                operator: operator.to_owned(),
                got,
            });
        }
        let raw = serde_json::value::to_raw_value(value).expect("a JSON value serializes");
        Ok(Settings(Arc::from(raw)))
    }

    /// The settings as JSON text.
    pub fn as_json(&self) -> &str {
        self.0.get()
    }

    pub(crate) fn as_raw(&self) -> &RawValue {
        &self.0
    }
}

impl PartialEq for Settings {
    fn eq(&self, other: &Self) -> bool {
        self.as_json() == other.as_json()
    }
}

/// An operator's active policy set and settings.
#[derive(Clone, Debug)]
pub struct Active {
    /// The active policy set.
    pub policy: PolicySet,
    /// The operator's settings for it.
    pub settings: Settings,
}

impl Active {
    /// `policy` with `settings`, after the policy accepted the settings.
    ///
    /// # Errors
    ///
    /// As [`Operators::install`].
    pub(crate) fn checked(
        operator: &str,
        policy: PolicySet,
        settings: &Value,
        now: Timestamp,
    ) -> Result<Self> {
        let settings = Settings::from_value(operator, settings)?;
        validate_settings(operator, &policy, &settings, now)?;
        Ok(Active { policy, settings })
    }
}

/// The operators a host serves.
#[derive(Debug, Default)]
pub struct Operators {
    active: RwLock<HashMap<String, Arc<Active>>>,
}

impl Operators {
    /// No operators.
    pub fn new() -> Self {
        Operators::default()
    }

    /// Makes `policy` with `settings` the active policy set of `operator`,
    /// replacing any previous one atomically, after the policy accepted the
    /// settings.
    ///
    /// # Errors
    ///
    /// [`Error::SettingsNotObject`] or [`Error::InvalidSettings`] when the
    /// settings are refused; [`Error::PolicyFailed`] when the policy failed
    /// while checking them. The previous policy set stays active.
    pub fn install(
        &self,
        operator: &str,
        policy: PolicySet,
        settings: &Value,
        now: Timestamp,
    ) -> Result<()> {
        let active = Active::checked(operator, policy, settings, now)?;
        self.replace(operator, active);
        Ok(())
    }

    /// Makes `active` the operator's active policy set, atomically.
    pub(crate) fn replace(&self, operator: &str, active: Active) {
        self.active
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(operator.to_owned(), Arc::new(active));
    }

    /// The operator's active policy set and settings.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownOperator`].
    pub fn active(&self, operator: &str) -> Result<Arc<Active>> {
        self.active
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(operator)
            .cloned()
            .ok_or_else(|| Error::UnknownOperator(operator.to_owned()))
    }

    /// The ids of every operator, sorted.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .active
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        ids.sort();
        ids
    }

    /// Evaluates hook `H` with the operator's active policy set.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownOperator`] only; a failing policy yields a
    /// fail-closed decision, not an error.
    pub fn evaluate<H: HookKind>(
        &self,
        operator: &str,
        now: Timestamp,
        input: &H::Input,
    ) -> Result<Evaluation<H::Output>> {
        let active = self.active(operator)?;
        Ok(active
            .policy
            .evaluate::<H>(operator, now, &active.settings, input))
    }

    /// May this action run? (`authorize` hook.)
    ///
    /// # Errors
    ///
    /// [`Error::UnknownOperator`].
    pub fn authorize(
        &self,
        operator: &str,
        now: Timestamp,
        input: &AuthorizeInput,
    ) -> Result<Evaluation<AuthorizeDecision>> {
        self.evaluate::<Authorize>(operator, now, input)
    }

    /// Should billing proceed? (`billing` hook.)
    ///
    /// # Errors
    ///
    /// [`Error::UnknownOperator`].
    pub fn billing(
        &self,
        operator: &str,
        now: Timestamp,
        input: &BillingInput,
    ) -> Result<Evaluation<BillingDecision>> {
        self.evaluate::<Billing>(operator, now, input)
    }

    /// What follows from this action? (`transition` hook.)
    ///
    /// # Errors
    ///
    /// [`Error::UnknownOperator`].
    pub fn transition(
        &self,
        operator: &str,
        now: Timestamp,
        input: &TransitionInput,
    ) -> Result<Evaluation<TransitionDecision>> {
        self.evaluate::<Transition>(operator, now, input)
    }
}

/// Asks the policy whether it accepts the settings; a policy without the
/// `validate_settings` hook accepts any object.
fn validate_settings(
    operator: &str,
    policy: &PolicySet,
    settings: &Settings,
    now: Timestamp,
) -> Result<()> {
    if !policy.has_hook(ValidateSettings::HOOK) {
        return Ok(());
    }
    let evaluation = policy.evaluate::<ValidateSettings>(operator, now, settings, &Value::Null);
    if let Some(diagnostic) = evaluation.diagnostic {
        return Err(Error::PolicyFailed(Box::new(diagnostic)));
    }
    match evaluation.decision {
        SettingsVerdict::Valid => Ok(()),
        SettingsVerdict::Invalid { errors } => Err(Error::InvalidSettings {
            operator: operator.to_owned(),
            policy: policy.id().to_string(),
            errors,
        }),
    }
}
