//! [`Host`]: the policy engine with the state the rules depend on.
//!
//! One path for data: a request names a subject; the host adds what it keeps
//! about it (status, switches, active locks) to the hook's input; the
//! operator's active policy set decides; a `transition` decision's effects
//! are applied together with their audit record and events in one
//! transaction, or not at all.

use std::collections::BTreeMap;
use std::sync::Arc;

use rulehost_sdk::wire::{
    Actor, Authorize, AuthorizeDecision, AuthorizeInput, Billing, BillingDecision, BillingInput,
    Effect, Envelope, Hook, HookKind, Subject, SubjectRef, Timestamp, Transition,
    TransitionDecision, TransitionInput, Trigger, ValidateSettings,
};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::audit::{Verification, Verifier};
use crate::effects::{self, Plan};
use crate::error::{Error, Result};
use crate::import::{self, ImportFormat, ImportReport, OnBadRow};
use crate::operators::{Active, Operators, Settings};
use crate::store::{
    Anonymization, Anonymized, AuditRecord, Backup, Change, Committed, Event, Fires, Held,
    LOCK_EXPIRY_ACTION, LockImport, NewAudit, NewEvent, NewToken, OperatorRecord, PolicyVersion,
    Resolution, ScheduleRecord, ScheduleState, Scheduled, SqliteStore, Store, StoredPolicy,
    SubjectRecords, SubjectState, TokenRecord, Webhook, Write,
};
use crate::{Diagnostic, Engine, EngineConfig, Evaluation, FailureKind, PolicyId, PolicySet};

/// The kind of audit record a state-changing decision gets.
pub const DECISION: &str = "decision";

/// How often a decision is re-evaluated when its subject changed meanwhile.
const CONFLICT_ATTEMPTS: usize = 3;

/// Due schedules fired per store commit.
const FIRE_BATCH: usize = 512;

/// Parents followed when adding the host's state to a subject.
const MAX_PARENTS: usize = 8;

/// The actor the host records for what it does on its own.
pub fn host_actor() -> Actor {
    Actor::system("rulehost")
}

/// The policy engine, the operators' active policy sets and the store.
pub struct Host {
    engine: Engine,
    store: Arc<dyn Store>,
    operators: Operators,
    schedules_changed: tokio::sync::Notify,
    /// Counts this host's commits of changes, which carry the events; see
    /// [`Host::watch_events`].
    events_written: tokio::sync::watch::Sender<u64>,
    require_signatures: std::sync::atomic::AtomicBool,
    /// Held while an activation is written and made active, so that
    /// [`Host::sync_activations`] never puts back a version it read before.
    activating: std::sync::Mutex<()>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("operators", &self.operators.ids())
            .finish_non_exhaustive()
    }
}

/// A policy set version to install with [`Host::install_with`].
#[derive(Clone, Debug)]
pub struct Install<'a> {
    /// Its name and version.
    pub id: PolicyId,
    /// The module: a wasm binary or WAT text.
    pub wasm: &'a [u8],
    /// An ed25519 signature (hex) over the module, for an operator that
    /// requires one.
    pub signature: Option<&'a str>,
    /// The operator's settings for it.
    pub settings: &'a Value,
    /// Whether it becomes the active version at once.
    pub activate: bool,
}

/// What a `transition` request did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Outcome {
    /// The policy's decision (or the fail-closed one).
    pub evaluation: Evaluation<TransitionDecision>,
    /// What the store committed; `None` when nothing changed (a refusal or
    /// a failed policy).
    pub committed: Option<Committed>,
    /// Effects only the backend can carry out.
    pub backend: Vec<Effect>,
    /// The events queued for the backend, as it will read them.
    pub events: Vec<Event>,
}

/// What one run of due schedules did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FireReport {
    /// Schedules fired with the policy's effects applied.
    pub fired: usize,
    /// Schedules fired whose policy refused or does not export
    /// `transition`, or whose effects could not be applied: recorded, and
    /// for a lock's end the lock lifted.
    pub fired_without_effects: usize,
    /// Schedules whose policy failed (or with no policy set active): held,
    /// and announced as `schedule.held`, until the operator activates a
    /// version or staff retry or drop them ([`Host::resolve_held`]); for a
    /// lock's end the lock lifted all the same.
    pub held: usize,
}

impl std::ops::AddAssign for FireReport {
    fn add_assign(&mut self, other: FireReport) {
        self.fired += other.fired;
        self.fired_without_effects += other.fired_without_effects;
        self.held += other.held;
    }
}

/// What [`Host::resolve_held`] did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Resolved {
    /// The schedule as it is now: pending again, or cancelled.
    pub schedule: ScheduleRecord,
    /// Retried or dropped.
    pub resolution: Resolution,
    /// The audit record naming who resolved it and why.
    pub audit_seq: u64,
    /// The event announcing it (`schedule.retried`, `schedule.dropped`).
    pub event: u64,
}

/// Which policy set a recorded decision is replayed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayWith {
    /// The version and settings that decided it.
    Recorded,
    /// The operator's active version and settings.
    Active,
}

/// A recorded decision evaluated again.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Replay {
    /// The audit record.
    pub seq: u64,
    /// The version that decided it.
    pub recorded_policy: PolicyId,
    /// The version that decided it now.
    pub replayed_policy: PolicyId,
    /// The recorded decision.
    pub recorded: Value,
    /// The decision now.
    pub replayed: Value,
    /// Where the two differ first; `None` when they are the same.
    pub difference: Option<String>,
}

/// What [`Host::compare`] found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    /// The version compared with what was recorded.
    pub candidate: PolicyId,
    /// How many recorded decisions it evaluated again.
    pub replayed: usize,
    /// Those it decides differently, oldest first.
    pub changed: Vec<Replay>,
    /// Recorded decisions not evaluated because an anonymization redacted
    /// them.
    pub redacted: usize,
    /// The last audit record looked at: `after` for the next page.
    pub last_seq: u64,
}

/// A decision as the audit trail recorded it.
struct RecordedDecision {
    seq: u64,
    policy: PolicyId,
    hook: Hook,
    now: Timestamp,
    envelope: Value,
    decision: Value,
}

impl RecordedDecision {
    /// The decision `record` holds.
    fn read(record: &AuditRecord) -> Result<Self> {
        let seq = record.seq;
        let not_decision = || Error::NotADecision {
            seq,
            kind: record.kind.clone(),
        };
        if record.kind != DECISION {
            return Err(not_decision());
        }
        if record.redacted {
            return Err(Error::Redacted(seq));
        }
        let mut payload: Value = serde_json::from_str(&record.payload)
            .map_err(|e| Error::Store(format!("audit record `{seq}` is not JSON: {e}")))?;
        let (Some(policy), Some(envelope), Some(decision)) = (
            record.policy.clone(),
            payload.get_mut("envelope").map(Value::take),
            payload.get_mut("decision").map(Value::take),
        ) else {
            return Err(not_decision());
        };
        let hook: Hook = payload
            .get("hook")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .parse()
            .map_err(|_| not_decision())?;
        let now = serde_json::from_value(envelope["now"].clone())
            .map_err(|e| Error::Store(format!("audit record `{seq}`: {e}")))?;
        Ok(RecordedDecision {
            seq,
            policy,
            hook,
            now,
            envelope,
            decision,
        })
    }

    /// Evaluates the recorded input again with `policy` and `settings`.
    fn replay(self, operator: &str, policy: &PolicySet, settings: &Settings) -> Result<Replay> {
        let (now, input) = (self.now, &self.envelope["input"]);
        let replayed = match self.hook {
            Hook::Authorize => evaluate_json::<Authorize>(policy, operator, now, settings, input),
            Hook::Billing => evaluate_json::<Billing>(policy, operator, now, settings, input),
            Hook::Transition => evaluate_json::<Transition>(policy, operator, now, settings, input),
            Hook::ValidateSettings => {
                evaluate_json::<ValidateSettings>(policy, operator, now, settings, input)
            }
        }
        .map_err(|e| {
            Error::Store(format!(
                "audit record `{}` has an invalid input: {e}",
                self.seq
            ))
        })?;
        Ok(Replay {
            seq: self.seq,
            difference: first_difference(&self.decision, &replayed, String::new()),
            recorded_policy: self.policy,
            replayed_policy: policy.id().clone(),
            recorded: self.decision,
            replayed,
        })
    }
}

impl Host {
    /// A host on the SQLite store in `path` (created if needed), with every
    /// operator's active policy set loaded.
    ///
    /// # Errors
    ///
    /// Engine, store and load errors.
    pub fn open(path: impl AsRef<std::path::Path>, config: EngineConfig) -> Result<Self> {
        let store = SqliteStore::open(path)?;
        Host::new(Engine::new(config)?, Arc::new(store))
    }

    /// A host on `store`, with every operator's active policy set loaded.
    ///
    /// # Errors
    ///
    /// Store errors; load errors of a stored policy set.
    pub fn new(engine: Engine, store: Arc<dyn Store>) -> Result<Self> {
        let operators = Operators::new();
        for (operator, stored) in store.active_policies()? {
            operators.replace(&operator, load_active(&engine, &operator, &stored)?);
        }
        Ok(Host {
            engine,
            store,
            operators,
            schedules_changed: tokio::sync::Notify::new(),
            events_written: tokio::sync::watch::Sender::new(0),
            require_signatures: std::sync::atomic::AtomicBool::new(false),
            activating: std::sync::Mutex::new(()),
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The operators and their active policy sets.
    pub fn operators(&self) -> &Operators {
        &self.operators
    }

    /// Installs a policy set version for `operator`, after it loaded and
    /// accepted `settings`. It is not active until [`Host::activate`].
    ///
    /// # Errors
    ///
    /// As [`Host::install_with`].
    pub fn install(
        &self,
        operator: &str,
        id: PolicyId,
        wasm: &[u8],
        settings: &Value,
        by: &Actor,
        now: Timestamp,
    ) -> Result<PolicySet> {
        let install = Install {
            id,
            wasm,
            signature: None,
            settings,
            activate: false,
        };
        self.install_with(operator, install, by, now)
    }

    /// Installs a policy set version for `operator` (creating the operator
    /// when new), after it loaded and accepted its settings, and activates
    /// it when asked, with the module it just loaded.
    ///
    /// A signature is required when the operator trusts any key, or for
    /// every operator once [`Host::require_signatures`] is on; it must
    /// verify under one of the operator's trusted keys (see
    /// [`crate::integrity`]).
    ///
    /// # Errors
    ///
    /// Load and settings errors; [`Error::PolicyVersionExists`];
    /// [`Error::SignatureRequired`], [`Error::SignatureInvalid`]; store
    /// errors. A failed activation leaves the version installed, not active.
    pub fn install_with(
        &self,
        operator: &str,
        install: Install<'_>,
        by: &Actor,
        now: Timestamp,
    ) -> Result<PolicySet> {
        let Install {
            id,
            wasm,
            signature,
            settings,
            activate,
        } = install;
        let policy = self.engine.load(id.clone(), wasm)?;
        let signed_by = self.check_signature(operator, &policy, signature)?;
        let active = Active::checked(operator, policy.clone(), settings, now)?;
        let audit = NewAudit {
            kind: "policy.installed".to_owned(),
            subject: None,
            actor: by.clone(),
            policy: Some(id.clone()),
            payload:
                json!({ "sha256": policy.sha256(), "settings": settings, "signed_by": signed_by })
                    .to_string(),
        };
        let stored = StoredPolicy {
            id: id.clone(),
            wasm: wasm.to_vec(),
            sha256: policy.sha256().to_owned(),
            settings: settings.clone(),
            installed_at: now,
            installed_by: by.clone(),
        };
        // Installed and activated in one transaction: a fault leaves no
        // version behind that a retry would find already installed.
        let activation = activate.then(|| activation_audit(&active, by));
        let _activating = activate.then(|| self.activating());
        self.store.add_policy(operator, stored, audit, activation)?;
        if activate {
            self.operators.replace(operator, active);
            // The activation released held schedules.
            self.schedules_changed.notify_one();
        }
        Ok(policy)
    }

    /// Makes an installed version the operator's active policy set, without
    /// a restart (HOST-6). Requests in flight finish on the previous one.
    /// Schedules held because the policy failed fire again, with this one.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownPolicyVersion`]; load and settings errors; store
    /// errors. The previous version stays active then.
    pub fn activate(
        &self,
        operator: &str,
        id: &PolicyId,
        by: &Actor,
        now: Timestamp,
    ) -> Result<()> {
        let stored = self.stored_policy(operator, id)?;
        let policy = self.engine.load(id.clone(), &stored.wasm)?;
        check_pin(operator, &stored, &policy)?;
        let active = Active::checked(operator, policy, &stored.settings, now)?;
        let audit = activation_audit(&active, by);
        let _activating = self.activating();
        self.store.activate_policy(operator, id, now, audit)?;
        self.operators.replace(operator, active);
        // The activation released held schedules.
        self.schedules_changed.notify_one();
        Ok(())
    }

    /// Makes active here the versions another process (the CLI, another
    /// host on the same file) activated in the store since this host
    /// loaded them; returns the operators changed. A running
    /// [`Scheduler`](crate::Scheduler) calls it every two seconds.
    ///
    /// # Errors
    ///
    /// Store errors; load and settings errors of a version activated
    /// elsewhere, which then stays inactive here (the operators before it
    /// in the error are changed).
    pub fn sync_activations(&self) -> Result<Vec<String>> {
        let _activating = self.activating();
        let mut changed = Vec::new();
        for (operator, id) in self.store.active_versions()? {
            let current = self.operators.active(&operator).ok();
            if current.is_some_and(|active| *active.policy.id() == id) {
                continue;
            }
            let stored = self.stored_policy(&operator, &id)?;
            let active = load_active(&self.engine, &operator, &stored)?;
            self.operators.replace(&operator, active);
            changed.push(operator);
        }
        if !changed.is_empty() {
            self.schedules_changed.notify_one();
        }
        Ok(changed)
    }

    fn activating(&self) -> std::sync::MutexGuard<'_, ()> {
        self.activating
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reactivates the version that was active before the current one.
    ///
    /// # Errors
    ///
    /// [`Error::NothingToRollBack`]; as [`Host::activate`].
    pub fn rollback(&self, operator: &str, by: &Actor, now: Timestamp) -> Result<PolicyId> {
        let activations = self.store.activations(operator)?;
        let previous = activations
            .first()
            .and_then(|current| activations.iter().find(|id| *id != current))
            .cloned()
            .ok_or_else(|| Error::NothingToRollBack(operator.to_owned()))?;
        self.activate(operator, &previous, by, now)?;
        Ok(previous)
    }

    /// Every installed version of the operator's policy set.
    ///
    /// # Errors
    ///
    /// Store errors.
    pub fn policy_versions(&self, operator: &str) -> Result<Vec<PolicyVersion>> {
        self.store.policy_versions(operator)
    }

    /// What the host keeps about a subject, with the locks active at `now`.
    ///
    /// # Errors
    ///
    /// Store errors.
    pub fn subject(
        &self,
        operator: &str,
        subject: &SubjectRef,
        now: Timestamp,
    ) -> Result<SubjectState> {
        let mut states = self
            .store
            .subjects(operator, std::slice::from_ref(subject), now)?;
        states
            .pop()
            .ok_or_else(|| Error::Store("the store answered no state".to_owned()))
    }

    /// May this action run? The subject gets the host's state first.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownOperator`]; store errors.
    pub fn authorize(
        &self,
        operator: &str,
        now: Timestamp,
        input: AuthorizeInput,
    ) -> Result<Evaluation<AuthorizeDecision>> {
        self.decide::<Authorize>(operator, now, input, |input| &mut input.subject)
    }

    /// Should billing proceed? The contract gets the host's state first.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownOperator`]; store errors.
    pub fn billing(
        &self,
        operator: &str,
        now: Timestamp,
        input: BillingInput,
    ) -> Result<Evaluation<BillingDecision>> {
        self.decide::<Billing>(operator, now, input, |input| &mut input.contract)
    }

    /// What `transition` would decide now, with the host's state added;
    /// nothing is applied or recorded.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownOperator`]; store errors.
    pub fn preview_transition(
        &self,
        operator: &str,
        now: Timestamp,
        input: TransitionInput,
    ) -> Result<Evaluation<TransitionDecision>> {
        self.decide::<Transition>(operator, now, input, |input| &mut input.subject)
    }

    /// Evaluates hook `H` of the operator's active policy set once the
    /// host's state is added to the input's subject.
    fn decide<H: HookKind>(
        &self,
        operator: &str,
        now: Timestamp,
        mut input: H::Input,
        subject: fn(&mut H::Input) -> &mut Subject,
    ) -> Result<Evaluation<H::Output>> {
        let active = self.operators.active(operator)?;
        self.add_state(operator, subject(&mut input), now)?;
        Ok(active
            .policy
            .evaluate::<H>(operator, now, &active.settings, &input))
    }

    /// What follows from this action? The subject gets the host's state; an
    /// `apply` decision's effects are applied with the decision's audit
    /// record and events in one transaction (HOST-4, HOST-7).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownOperator`]; [`Error::Effect`] when an effect cannot be
    /// applied (nothing is changed then); [`Error::Conflict`] when the
    /// subject kept changing under the decision; store errors.
    pub fn transition(
        &self,
        operator: &str,
        now: Timestamp,
        input: TransitionInput,
    ) -> Result<Outcome> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_transition(operator, now, input.clone()) {
                Err(Error::Conflict(_)) if attempt < CONFLICT_ATTEMPTS => continue,
                outcome => return outcome,
            }
        }
    }

    fn try_transition(
        &self,
        operator: &str,
        now: Timestamp,
        mut input: TransitionInput,
    ) -> Result<Outcome> {
        let active = self.operators.active(operator)?;
        let given_parent = input.subject.parent.as_ref().map(|p| p.reference());
        let StateRead {
            revisions: expect,
            known_parent,
        } = self.add_state(operator, &mut input.subject, now)?;
        let evaluation =
            active
                .policy
                .evaluate::<Transition>(operator, now, &active.settings, &input);
        let TransitionDecision::Apply { effects } = &evaluation.decision else {
            return Ok(Outcome {
                evaluation,
                committed: None,
                backend: Vec::new(),
                events: Vec::new(),
            });
        };
        let mut plan = Plan::default();
        if let Some(parent) = given_parent.filter(|given| known_parent.as_ref() != Some(given)) {
            plan.writes.push(crate::store::Write::SetParent {
                subject: input.subject.reference(),
                parent,
            });
            plan.write_effect.push(usize::MAX);
        }
        let effect_error = |index: usize, reason: String| Error::Effect {
            index,
            effect: effects::name(&effects[index]),
            policy: active.policy.id().to_string(),
            reason,
        };
        plan.effects(effects, &input.actor, now)
            .map_err(|(index, reason)| effect_error(index, reason))?;
        let new_events = plan.events.clone();
        let change = Change {
            operator: operator.to_owned(),
            at: now,
            expect,
            fires: None,
            audit: decision_audit(&active, now, &input, &evaluation),
            writes: plan.writes,
            events: plan.events,
        };
        let committed = self.commit_one(change).map_err(|error| match error {
            Error::Write { index, reason } => match plan.write_effect.get(index) {
                Some(&effect) if effect < effects.len() => effect_error(effect, reason),
                _ => Error::Write { index, reason },
            },
            other => other,
        })?;
        self.schedules_changed.notify_one();
        let events = committed
            .events
            .iter()
            .zip(new_events)
            .map(|(&seq, new)| Event {
                seq,
                operator: operator.to_owned(),
                kind: new.kind,
                subject: new.subject,
                data: new.data,
                at: now,
                audit_seq: committed.audit_seq,
            })
            .collect();
        Ok(Outcome {
            backend: plan.backend,
            committed: Some(committed),
            evaluation,
            events,
        })
    }

    fn commit_one(&self, change: Change) -> Result<Committed> {
        let committed = self
            .store
            .commit(vec![change])
            .pop()
            .unwrap_or_else(|| Err(Error::Store("the store answered no result".to_owned())))?;
        self.wrote_events();
        Ok(committed)
    }

    /// Adds the host's state to `subject` and to each parent along its
    /// chain; attaches the parent the host knows when none was given.
    fn add_state(
        &self,
        operator: &str,
        subject: &mut Subject,
        now: Timestamp,
    ) -> Result<StateRead> {
        let mut reads = self.add_states(operator, std::slice::from_mut(subject), now)?;
        Ok(reads.pop().unwrap_or_default())
    }

    /// [`Host::add_state`] for many subjects of one operator, reading them
    /// and their parent chains in one snapshot.
    fn add_states(
        &self,
        operator: &str,
        subjects: &mut [Subject],
        now: Timestamp,
    ) -> Result<Vec<StateRead>> {
        let mut reads: Vec<StateRead> = subjects.iter().map(|_| StateRead::default()).collect();
        let mut level: Vec<(usize, &mut Subject)> = subjects.iter_mut().enumerate().collect();
        let references = |level: &[(usize, &mut Subject)]| -> Vec<SubjectRef> {
            level
                .iter()
                .map(|(_, subject)| subject.reference())
                .collect()
        };
        let first = references(&level);
        let mut depth = 0;
        self.store
            .walk_subjects(operator, first, now, &mut |states| {
                let mut next = Vec::new();
                for ((index, subject), (reference, state)) in
                    std::mem::take(&mut level).into_iter().zip(states)
                {
                    let read = &mut reads[index];
                    if depth == 0 {
                        read.known_parent.clone_from(&state.parent);
                    }
                    read.revisions.push((reference, state.revision));
                    if let Some(parent) = add_stored(subject, state) {
                        next.push((index, parent));
                    }
                }
                depth += 1;
                if depth <= MAX_PARENTS {
                    level = next;
                }
                references(&level)
            })?;
        Ok(reads)
    }

    /// When the earliest pending schedule is due.
    ///
    /// # Errors
    ///
    /// Store errors.
    pub fn next_due(&self) -> Result<Option<Timestamp>> {
        self.store.next_due()
    }

    /// The operator's schedules with an id after `after`, in `state` when
    /// given, by id, at most `limit`: what is pending, held, fired or
    /// cancelled across its subjects.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownOperator`]; store errors.
    pub fn schedules(
        &self,
        operator: &str,
        state: Option<ScheduleState>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<ScheduleRecord>> {
        self.known_operator(operator)?;
        self.store.schedules(operator, state, after, limit)
    }

    /// How many schedules each operator has held because its policy
    /// failed (see [`Host::fire_due`]), for the operators with any.
    ///
    /// # Errors
    ///
    /// Store errors.
    pub fn held_schedules(&self) -> Result<BTreeMap<String, u64>> {
        self.store.held_schedules()
    }

    fn known_operator(&self, operator: &str) -> Result<()> {
        if self
            .list_operators()?
            .iter()
            .any(|known| known.id == operator)
        {
            Ok(())
        } else {
            Err(Error::UnknownOperator(operator.to_owned()))
        }
    }

    /// One of the operator's schedules, by id.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownOperator`], [`Error::UnknownSchedule`]; store errors.
    pub fn schedule(&self, operator: &str, id: i64) -> Result<ScheduleRecord> {
        self.schedules(operator, None, id.saturating_sub(1), 1)?
            .pop()
            .filter(|record| record.scheduled.id == id)
            .ok_or_else(|| Error::UnknownSchedule {
                operator: operator.to_owned(),
                id,
            })
    }

    /// Settles a schedule held because its policy failed (see
    /// [`Host::fire_due`]), one at a time and without activating anything:
    /// [`Resolution::Retry`] lets it fire again at the next run, for a
    /// failure that depended on the subject's state or the host's limits;
    /// [`Resolution::Drop`] cancels it for good. Who did it and why go into
    /// the audit trail, and the backend hears `schedule.retried` or
    /// `schedule.dropped`.
    ///
    /// # Errors
    ///
    /// [`Error::ReasonRequired`] for a blank reason;
    /// [`Error::UnknownOperator`], [`Error::UnknownSchedule`];
    /// [`Error::ScheduleNotHeld`], also when it fired or was resolved
    /// meanwhile; store errors. Nothing is changed then.
    pub fn resolve_held(
        &self,
        operator: &str,
        id: i64,
        resolution: Resolution,
        by: &Actor,
        reason: &str,
        now: Timestamp,
    ) -> Result<Resolved> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(Error::ReasonRequired {
                resolution: resolution.name(),
                id,
            });
        }
        let not_held = |record: ScheduleRecord| Error::ScheduleNotHeld {
            id,
            state: record.state.name(),
        };
        let mut record = self.schedule(operator, id)?;
        if record.state != ScheduleState::Held {
            return Err(not_held(record));
        }
        let kind = match resolution {
            Resolution::Retry => "schedule.retried",
            Resolution::Drop => "schedule.dropped",
        };
        let subject = record.scheduled.subject.clone();
        let data = json!({
            "schedule": id,
            "action": record.scheduled.action,
            "attempts": record.scheduled.attempts,
            "last_error": record.last_error,
            "by": by,
            "reason": reason,
        });
        let change = Change {
            operator: operator.to_owned(),
            at: now,
            expect: Vec::new(),
            fires: None,
            writes: vec![Write::ResolveHeld {
                schedule: id,
                resolution,
            }],
            audit: NewAudit {
                kind: kind.to_owned(),
                subject: Some(subject.clone()),
                actor: by.clone(),
                policy: None,
                payload: data.to_string(),
            },
            events: vec![NewEvent {
                kind: kind.to_owned(),
                subject,
                data,
            }],
        };
        let committed = match self.commit_one(change) {
            // Fired, or resolved by another caller, since it was read.
            Err(Error::Write { .. }) => return Err(not_held(self.schedule(operator, id)?)),
            other => other?,
        };
        record.state = match resolution {
            Resolution::Retry => {
                self.schedules_changed.notify_one();
                ScheduleState::Pending
            }
            Resolution::Drop => ScheduleState::Cancelled,
        };
        Ok(Resolved {
            schedule: record,
            resolution,
            audit_seq: committed.audit_seq,
            event: committed.events.first().copied().unwrap_or_default(),
        })
    }

    /// Fires every schedule due at `now` through its operator's policy
    /// (`transition` with trigger `expired` or `scheduled`), each at most
    /// once. A lock whose time is up is lifted (automatically, by the
    /// host) whatever the policy answers; the policy adds what follows.
    ///
    /// When the policy fails (a trap, its budget, a bad reply) or no policy
    /// set is active, the schedule is held, not consumed: it stays pending,
    /// the backend hears `schedule.held`, and it fires again once the
    /// operator activates a version (the same failure would repeat with the
    /// same one, since evaluation is deterministic) or staff retry it with
    /// [`Host::resolve_held`]. When no instance can be had, it stays due
    /// for the next run.
    ///
    /// # Errors
    ///
    /// Store errors; schedules not fired stay due.
    pub fn fire_due(&self, now: Timestamp) -> Result<FireReport> {
        let mut report = FireReport::default();
        loop {
            let before = report.clone();
            // One thread plans the next batch (state, policy) while this one
            // commits the last.
            std::thread::scope(|scope| {
                let (planned, batches) = std::sync::mpsc::sync_channel(1);
                scope.spawn(move || {
                    let mut after = None;
                    loop {
                        let batch =
                            self.store
                                .due(now, after.as_ref(), FIRE_BATCH)
                                .and_then(|due| {
                                    after = due.last().cloned();
                                    self.plan_batch(due, now)
                                });
                        let done = matches!(&batch, Ok(firings) if firings.is_empty());
                        if done || planned.send(batch).is_err() {
                            return;
                        }
                    }
                });
                for batch in batches {
                    self.commit_firings(batch?, &mut report)?;
                }
                Ok::<_, Error>(())
            })?;
            if report == before {
                // Nothing more was due, or only conflicts with requests in
                // flight, which the next run retries.
                return Ok(report);
            }
        }
    }

    /// The changes that fire `due`, which may belong to several operators.
    fn plan_batch(&self, due: Vec<Scheduled>, now: Timestamp) -> Result<Vec<Firing>> {
        let mut firings = Vec::with_capacity(due.len());
        let mut due = due.into_iter().peekable();
        while let Some(first) = due.next() {
            let mut group = vec![first];
            while let Some(next) = due.next_if(|s| s.operator == group[0].operator) {
                group.push(next);
            }
            firings.extend(self.plan_firings(group, now)?);
        }
        Ok(firings)
    }

    /// Commits firings; where a write of one cannot be applied, commits only
    /// the host's own writes, and where even those cannot, the record alone,
    /// so nothing stays due for ever.
    fn commit_firings(&self, mut firings: Vec<Firing>, report: &mut FireReport) -> Result<()> {
        for degraded in 0..3 {
            if firings.is_empty() {
                break;
            }
            let results = self
                .store
                .commit(firings.iter().map(|firing| firing.change.clone()).collect());
            if results.iter().any(Result::is_ok) {
                self.wrote_events();
            }
            let mut retry = Vec::new();
            for (result, mut firing) in results.into_iter().zip(firings) {
                match result {
                    Ok(_) if firing.is_held() => report.held += 1,
                    Ok(_) if degraded == 0 && firing.complete => report.fired += 1,
                    Ok(_) => report.fired_without_effects += 1,
                    Err(Error::AlreadyFired(_) | Error::Conflict(_)) => {}
                    Err(Error::Write { index, reason }) if degraded < 2 => {
                        let own = if degraded == 0 { firing.own } else { (0, 0) };
                        let failed = match firing.write_effect.get(index) {
                            Some(&effect) if effect != usize::MAX => ("effect", effect),
                            _ => ("write", index),
                        };
                        firing.change.writes.truncate(own.0);
                        firing.change.events.truncate(own.1);
                        firing.write_effect.truncate(own.0);
                        firing.change.audit.note_not_applied(failed, &reason);
                        firing.own = own;
                        retry.push(firing);
                    }
                    Err(other) => return Err(other),
                }
            }
            firings = retry;
        }
        Ok(())
    }

    /// The changes that fire `due`, all of one operator.
    fn plan_firings(&self, due: Vec<Scheduled>, now: Timestamp) -> Result<Vec<Firing>> {
        let operator = due[0].operator.clone();
        let host = host_actor();
        let mut subjects: Vec<Subject> = due
            .iter()
            .map(|s| Subject::new(s.subject.kind, s.subject.id.clone()))
            .collect();
        let reads = self.add_states(&operator, &mut subjects, now)?;
        let active = self.operators.active(&operator);
        let mut firings = Vec::with_capacity(due.len());
        for ((scheduled, subject), read) in due.into_iter().zip(subjects).zip(reads) {
            let mut plan = Plan::default();
            // The host lifts an expired lock at the first try; a held firing
            // tried again finds it lifted already.
            let expiring = (scheduled.attempts == 0
                && scheduled.trigger == Trigger::Expired
                && scheduled.action == LOCK_EXPIRY_ACTION)
                .then(|| scheduled.params.get("lock").and_then(Value::as_str))
                .flatten();
            if let Some(lock_id) = expiring {
                plan.expire(&scheduled.subject, lock_id, now, &host);
            }
            let mut own = (plan.writes.len(), plan.events.len());
            let input = TransitionInput {
                trigger: scheduled.trigger,
                action: scheduled.action,
                actor: host.clone(),
                subject,
                params: scheduled.params,
            };
            let mut complete = false;
            let mut held = None;
            let audit = match &active {
                Ok(active) => {
                    let evaluation = active.policy.evaluate::<Transition>(
                        &operator,
                        now,
                        &active.settings,
                        &input,
                    );
                    match evaluation.diagnostic.as_ref() {
                        // No instance to be had: the schedule stays due, and
                        // the next run tries again.
                        Some(d) if d.kind == FailureKind::Instantiation => continue,
                        // A policy without the hook has nothing to add.
                        None => {}
                        Some(d) if d.kind == FailureKind::MissingHook => {}
                        Some(failure) => {
                            held = Some(Held {
                                policy: Some(evaluation.policy.clone()),
                                error: failure.to_string(),
                            });
                        }
                    }
                    let mut audit = decision_audit(active, now, &input, &evaluation);
                    if let TransitionDecision::Apply { effects } = &evaluation.decision {
                        complete = true;
                        if let Err((index, reason)) = plan.effects(effects, &host, now) {
                            plan.writes.truncate(own.0);
                            plan.write_effect.truncate(own.0);
                            plan.events.truncate(own.1);
                            audit.note_not_applied(("effect", index), &reason);
                            complete = false;
                        }
                    }
                    audit
                }
                Err(error) => {
                    let error = error.to_string();
                    let payload = json!({ "hook": "transition", "error": error }).to_string();
                    held = Some(Held {
                        policy: None,
                        error,
                    });
                    NewAudit {
                        kind: DECISION.to_owned(),
                        subject: Some(scheduled.subject.clone()),
                        actor: host.clone(),
                        policy: None,
                        payload,
                    }
                }
            };
            if let Some(held) = &held {
                let attempts = scheduled.attempts + 1;
                plan.hold(
                    &input.subject.reference(),
                    scheduled.id,
                    &input.action,
                    attempts,
                    &held.error,
                );
                own.1 = plan.events.len();
            }
            firings.push(Firing {
                change: Change {
                    operator: operator.clone(),
                    at: now,
                    expect: read.revisions,
                    fires: Some(Fires {
                        schedule: scheduled.id,
                        held,
                    }),
                    writes: plan.writes,
                    events: plan.events,
                    audit,
                },
                own,
                write_effect: plan.write_effect,
                complete,
            });
        }
        Ok(firings)
    }

    /// An installed version of the operator's policy set.
    fn stored_policy(&self, operator: &str, id: &PolicyId) -> Result<StoredPolicy> {
        self.store
            .policy(operator, id)?
            .ok_or_else(|| Error::UnknownPolicyVersion {
                operator: operator.to_owned(),
                policy: id.to_string(),
            })
    }

    /// A receiver that sees a change whenever this host has committed a
    /// change, which may carry events, for any operator: a consumer
    /// waits on it instead of polling [`Host::events`] in a loop. Events
    /// written by another process on the same file are not signalled; a
    /// waiting consumer also looks again now and then (the service every
    /// second).
    pub fn watch_events(&self) -> tokio::sync::watch::Receiver<u64> {
        self.events_written.subscribe()
    }

    fn wrote_events(&self) {
        self.events_written
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    /// Wakes a running [`Scheduler`](crate::Scheduler) to look at the
    /// schedules again.
    pub(crate) fn schedules_changed(&self) -> &tokio::sync::Notify {
        &self.schedules_changed
    }

    /// The operator's events `consumer` has not acknowledged, oldest first,
    /// at most `limit`. Delivery is at least once: an event comes back until
    /// acknowledged.
    ///
    /// # Errors
    ///
    /// Store errors.
    pub fn events(&self, operator: &str, consumer: &str, limit: usize) -> Result<Vec<Event>> {
        self.store.events(operator, consumer, limit)
    }

    /// Acknowledges every event of the operator up to `seq` for `consumer`.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownEvent`]; store errors.
    pub fn ack(&self, operator: &str, consumer: &str, seq: u64) -> Result<()> {
        self.store.ack(operator, consumer, seq)
    }

    /// One audit record.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownAuditRecord`]; store errors.
    pub fn audit_record(&self, seq: u64) -> Result<AuditRecord> {
        self.store
            .audit_record(seq)?
            .ok_or(Error::UnknownAuditRecord(seq))
    }

    /// Checks the whole audit trail's hash chain and reports the first
    /// broken link (HOST-4).
    ///
    /// # Errors
    ///
    /// Store errors.
    pub fn verify_audit(&self) -> Result<Verification> {
        let mut verifier = Verifier::new();
        self.store.scan_audit(1, &mut |record| {
            if verifier.check(&record) {
                std::ops::ControlFlow::Continue(())
            } else {
                std::ops::ControlFlow::Break(())
            }
        })?;
        Ok(verifier.finish())
    }

    /// Evaluates a recorded decision again, with the recorded policy set or
    /// the active one, and reports where the decisions differ.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownAuditRecord`], [`Error::NotADecision`],
    /// [`Error::Redacted`]; the recorded version's load errors; store errors.
    pub fn replay(&self, seq: u64, with: ReplayWith) -> Result<Replay> {
        let record = self.audit_record(seq)?;
        let recorded = RecordedDecision::read(&record)?;
        let operator = record.operator.as_str();
        match with {
            ReplayWith::Recorded => {
                let stored = self.stored_policy(operator, &recorded.policy)?;
                let policy = self.engine.load(recorded.policy.clone(), &stored.wasm)?;
                let settings = Settings::from_value(operator, &recorded.envelope["settings"])?;
                recorded.replay(operator, &policy, &settings)
            }
            ReplayWith::Active => {
                let active = self.operators.active(operator)?;
                recorded.replay(operator, &active.policy, &active.settings)
            }
        }
    }

    /// What an installed version would have decided differently: replays
    /// the operator's recorded decisions among its audit records after
    /// `after` (at most `limit` records looked at) with `candidate` and the
    /// settings it was installed with, and lists those it decides
    /// differently. For checking a version before it is activated.
    ///
    /// Decisions are recorded when they change state, so the comparison
    /// shows what the candidate would decide differently about what
    /// happened, not refusals it would lift. Decisions redacted by an
    /// anonymization are counted, not replayed.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownOperator`], [`Error::UnknownPolicyVersion`];
    /// the candidate's load and settings errors; store errors.
    pub fn compare(
        &self,
        operator: &str,
        candidate: &PolicyId,
        after: u64,
        limit: usize,
    ) -> Result<Comparison> {
        self.operators.active(operator)?;
        let stored = self.stored_policy(operator, candidate)?;
        let candidate = load_active(&self.engine, operator, &stored)?;
        let mut comparison = Comparison {
            candidate: stored.id.clone(),
            replayed: 0,
            changed: Vec::new(),
            redacted: 0,
            last_seq: after,
        };
        for record in self.store.audit_records(operator, after, limit)? {
            comparison.last_seq = record.seq;
            if record.kind != DECISION {
                continue;
            }
            if record.redacted {
                comparison.redacted += 1;
                continue;
            }
            let replay = RecordedDecision::read(&record)?.replay(
                operator,
                &candidate.policy,
                &candidate.settings,
            )?;
            comparison.replayed += 1;
            if replay.difference.is_some() {
                comparison.changed.push(replay);
            }
        }
        Ok(comparison)
    }

    /// Imports locks from a legacy system (GYM-12) in JSON Lines or CSV.
    /// With [`OnBadRow::Refuse`] a file with any invalid row imports
    /// nothing; with [`OnBadRow::Skip`] the valid rows are imported and the
    /// invalid ones reported. Timed locks expire like native ones.
    ///
    /// # Errors
    ///
    /// [`Error::Import`] listing each invalid row by line number; store
    /// errors (nothing is imported then).
    pub fn import_locks(
        &self,
        operator: &str,
        text: &str,
        format: ImportFormat,
        on_bad_row: OnBadRow,
        by: &Actor,
        now: Timestamp,
    ) -> Result<ImportReport> {
        let (locks, bad) = import::parse(text, format);
        if !bad.is_empty() && on_bad_row == OnBadRow::Refuse {
            return Err(Error::Import(bad));
        }
        let audit = NewAudit {
            kind: "locks.imported".to_owned(),
            subject: None,
            actor: by.clone(),
            policy: None,
            payload: json!({
                "format": format.name(),
                "imported": locks.len(),
                "skipped_lines": bad.iter().map(|row| row.line).collect::<Vec<_>>(),
            })
            .to_string(),
        };
        let committed = self.store.import_locks(LockImport {
            operator: operator.to_owned(),
            at: now,
            locks,
            audit,
        })?;
        self.schedules_changed.notify_one();
        Ok(ImportReport {
            lock_ids: committed.locks_created,
            skipped: bad,
            audit_seq: committed.audit_seq,
        })
    }

    /// Everything the host holds about one subject (PUB-4): state, every
    /// lock, schedule, audit record and event.
    ///
    /// # Errors
    ///
    /// Store errors.
    pub fn export_subject(
        &self,
        operator: &str,
        subject: &SubjectRef,
        now: Timestamp,
    ) -> Result<SubjectRecords> {
        self.store.subject_records(operator, subject, now)
    }

    /// Anonymizes a subject in the host's own records (PUB-5): the free
    /// text of its locks is replaced, the payloads of the audit records
    /// about it (and about its children) are redacted, its events lose their
    /// data. Actors stay, and the audit chain still verifies.
    ///
    /// # Errors
    ///
    /// Store errors; nothing changes then.
    pub fn anonymize_subject(
        &self,
        operator: &str,
        subject: &SubjectRef,
        by: &Actor,
        now: Timestamp,
    ) -> Result<Anonymized> {
        self.store.anonymize(Anonymization {
            operator: operator.to_owned(),
            subject: subject.clone(),
            at: now,
            actor: by.clone(),
            placeholder: "anonymized".to_owned(),
        })
    }

    /// Requires (or stops requiring) that every operator's policy sets are
    /// signed by one of its trusted keys. Operators that trust a key always
    /// require signatures.
    pub fn require_signatures(&self, required: bool) {
        self.require_signatures
            .store(required, std::sync::atomic::Ordering::Relaxed);
    }

    /// Trusts an ed25519 public key (64 hex characters) to sign the
    /// operator's policy sets; from then on the operator's installs must be
    /// signed.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`]; store errors.
    pub fn trust_key(&self, operator: &str, key: &str, by: &Actor, now: Timestamp) -> Result<()> {
        crate::access::check_operator_id(operator)?;
        let key = key.trim().to_ascii_lowercase();
        crate::integrity::parse_public_key(&key).map_err(Error::InvalidKey)?;
        let audit = NewAudit {
            kind: "key.trusted".to_owned(),
            subject: None,
            actor: by.clone(),
            policy: None,
            payload: json!({ "public_key": key }).to_string(),
        };
        self.store.add_trusted_key(operator, &key, now, audit)
    }

    /// Sets where the service pushes the operator's events (HOST-7): each
    /// batch is posted to `url` as JSON, signed with HMAC-SHA256 under the
    /// secret this returns, shown only now (see `service::webhooks`). A new
    /// webhook delivers the events from now on; one replacing another goes
    /// on where that one stopped.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidWebhook`] for a URL that is not `http://HOST[:PORT]/…`;
    /// [`Error::UnknownOperator`]; store errors.
    pub fn set_webhook(
        &self,
        operator: &str,
        url: &str,
        by: &Actor,
        now: Timestamp,
    ) -> Result<String> {
        crate::service::webhooks::check_url(url)?;
        self.known_operator(operator)?;
        let secret = crate::access::new_secret()?;
        let audit = NewAudit {
            kind: "webhook.set".to_owned(),
            subject: None,
            actor: by.clone(),
            policy: None,
            payload: json!({ "url": url }).to_string(),
        };
        let webhook = Webhook {
            operator: operator.to_owned(),
            url: url.to_owned(),
            secret: secret.clone(),
            created_at: now,
        };
        self.store
            .set_webhook(operator, Some(webhook), now, audit)?;
        // Wakes the service's deliveries, which take the webhook up at once.
        self.wrote_events();
        Ok(secret)
    }

    /// Stops pushing the operator's events; polling goes on as before.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownOperator`]; store errors.
    pub fn remove_webhook(&self, operator: &str, by: &Actor, now: Timestamp) -> Result<()> {
        self.known_operator(operator)?;
        let audit = NewAudit {
            kind: "webhook.removed".to_owned(),
            subject: None,
            actor: by.clone(),
            policy: None,
            payload: "{}".to_owned(),
        };
        self.store.set_webhook(operator, None, now, audit)
    }

    /// Every operator's webhook.
    ///
    /// # Errors
    ///
    /// Store errors.
    pub fn webhooks(&self) -> Result<Vec<Webhook>> {
        self.store.webhooks()
    }

    /// The public keys trusted to sign the operator's policy sets.
    ///
    /// # Errors
    ///
    /// Store errors.
    pub fn trusted_keys(&self, operator: &str) -> Result<Vec<String>> {
        self.store.trusted_keys(operator)
    }

    /// The key that signed `policy`, when a signature is required or given.
    fn check_signature(
        &self,
        operator: &str,
        policy: &PolicySet,
        signature: Option<&str>,
    ) -> Result<Option<String>> {
        let keys = self.store.trusted_keys(operator)?;
        let required = !keys.is_empty()
            || self
                .require_signatures
                .load(std::sync::atomic::Ordering::Relaxed);
        let Some(signature) = signature else {
            if !required {
                return Ok(None);
            }
            return Err(Error::SignatureRequired {
                operator: operator.to_owned(),
                policy: policy.id().to_string(),
                hint: if keys.is_empty() {
                    " and the operator trusts no key yet"
                } else {
                    ""
                },
            });
        };
        crate::integrity::verify(&keys, policy.sha256(), signature)
            .map(Some)
            .map_err(|reason| Error::SignatureInvalid {
                operator: operator.to_owned(),
                policy: policy.id().to_string(),
                reason,
            })
    }

    /// Adds an operator; its policy set is installed and activated after.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOperatorId`], [`Error::OperatorExists`]; store errors.
    pub fn create_operator(&self, operator: &str, now: Timestamp) -> Result<()> {
        crate::access::check_operator_id(operator)?;
        self.store.add_operator(operator, now)
    }

    /// Every operator.
    ///
    /// # Errors
    ///
    /// Store errors.
    pub fn list_operators(&self) -> Result<Vec<OperatorRecord>> {
        self.store.operators()
    }

    /// Makes an API token for `operator` (`None`: an admin token). The
    /// secret is returned once and only its hash is stored.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownOperator`]; store errors.
    pub fn create_token(
        &self,
        operator: Option<&str>,
        name: &str,
        can_install: bool,
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<(String, TokenRecord)> {
        let secret = crate::access::new_secret()?;
        let token = NewToken {
            sha256: crate::access::secret_hash(&secret),
            operator: operator.map(str::to_owned),
            name: name.to_owned(),
            can_install,
            created_at: now,
            expires_at,
        };
        let id = self.store.add_token(token.clone())?;
        let record = TokenRecord {
            id,
            operator: token.operator,
            name: token.name,
            can_install,
            created_at: now,
            expires_at,
            revoked_at: None,
        };
        Ok((secret, record))
    }

    /// The token a secret belongs to, if it is valid at `now`.
    ///
    /// # Errors
    ///
    /// The outer error: store errors; the inner one: why the token is not
    /// accepted.
    pub fn authenticate(
        &self,
        secret: &str,
        now: Timestamp,
    ) -> Result<std::result::Result<TokenRecord, crate::access::Refusal>> {
        let token = self.store.token(&crate::access::secret_hash(secret))?;
        Ok(crate::access::check(token, now))
    }

    /// The tokens of `operator` (`None`: the admin tokens), without secrets.
    ///
    /// # Errors
    ///
    /// Store errors.
    pub fn tokens(&self, operator: Option<&str>) -> Result<Vec<TokenRecord>> {
        self.store.tokens(operator)
    }

    /// Revokes a token of `operator` (`None`: an admin token).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownToken`]; store errors.
    pub fn revoke_token(&self, operator: Option<&str>, id: u64, now: Timestamp) -> Result<()> {
        self.store.revoke_token(operator, id, now)
    }

    /// Writes a consistent copy of the whole database to the new file
    /// `to` while the host keeps serving; see [`Store::backup`]. To
    /// restore, open the copy as the database.
    ///
    /// # Errors
    ///
    /// [`Error::Backup`] naming `to`; [`Error::StoreFull`]. Nothing is left
    /// at `to` then.
    pub fn backup(&self, to: &std::path::Path) -> Result<Backup> {
        self.store.backup(to)
    }

    /// The operator's audit records after `after`, oldest first.
    ///
    /// # Errors
    ///
    /// Store errors.
    pub fn audit_records(
        &self,
        operator: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>> {
        self.store.audit_records(operator, after, limit)
    }
}

/// A stored version, loaded and checked, as the operator's active one.
fn load_active(engine: &Engine, operator: &str, stored: &StoredPolicy) -> Result<Active> {
    let policy = engine.load(stored.id.clone(), &stored.wasm)?;
    check_pin(operator, stored, &policy)?;
    Active::checked(operator, policy, &stored.settings, stored.installed_at)
}

/// Refuses a stored module that no longer has the sha256 it was installed
/// with.
fn check_pin(operator: &str, stored: &StoredPolicy, policy: &PolicySet) -> Result<()> {
    if stored.sha256 == policy.sha256() {
        return Ok(());
    }
    Err(Error::PinMismatch {
        operator: operator.to_owned(),
        policy: stored.id.to_string(),
        pinned: stored.sha256.clone(),
        found: policy.sha256().to_owned(),
    })
}

/// What [`Host::add_state`] read.
#[derive(Default)]
struct StateRead {
    /// Each subject of the chain with the revision read.
    revisions: Vec<(SubjectRef, u64)>,
    /// The parent the host knew for the first subject.
    known_parent: Option<SubjectRef>,
}

/// Adds what the store holds about `subject` (`state`) to it. Returns its
/// parent, whose state is read next.
fn add_stored(subject: &mut Subject, state: SubjectState) -> Option<&mut Subject> {
    if state.status.is_some() {
        subject.status = state.status;
    }
    subject.switches.extend(state.switches);
    subject.locks.extend(state.locks);
    for child in state.children {
        if !subject.children.contains(&child) {
            subject.children.push(child);
        }
    }
    if subject.parent.is_none()
        && let Some(parent) = state.parent
    {
        subject.parent = Some(Box::new(Subject::new(parent.kind, parent.id)));
    }
    subject.parent.as_deref_mut()
}

/// The change firing one schedule, and how many of its first writes and
/// events are the host's own (the lifting of an expired lock).
struct Firing {
    change: Change,
    own: (usize, usize),
    /// For each write, the effect it comes from (`usize::MAX`: the host's).
    write_effect: Vec<usize>,
    /// Whether the policy's decision is applied in full.
    complete: bool,
}

impl Firing {
    fn is_held(&self) -> bool {
        self.change
            .fires
            .as_ref()
            .is_some_and(|fires| fires.held.is_some())
    }
}

impl NewAudit {
    /// Notes in the payload that an effect (or one of the host's own
    /// writes) was not applied, and why.
    fn note_not_applied(&mut self, (what, index): (&str, usize), reason: &str) {
        if let Ok(Value::Object(mut payload)) = serde_json::from_str(&self.payload) {
            payload.insert(
                "not_applied".to_owned(),
                json!({ what: index, "reason": reason }),
            );
            self.payload = Value::Object(payload).to_string();
        }
    }
}

/// The payload of a decision's audit record: enough to replay it.
#[derive(Serialize)]
struct DecisionPayload<'a, I, O> {
    hook: &'static str,
    envelope: Envelope<&'a RawValue, &'a I>,
    decision: &'a O,
    #[serde(skip_serializing_if = "Option::is_none")]
    diagnostic: Option<&'a Diagnostic>,
}

/// The audit record of making `active` the operator's active version.
fn activation_audit(active: &Active, by: &Actor) -> NewAudit {
    NewAudit {
        kind: "policy.activated".to_owned(),
        subject: None,
        actor: by.clone(),
        policy: Some(active.policy.id().clone()),
        payload: json!({ "sha256": active.policy.sha256() }).to_string(),
    }
}

/// The audit record of a `transition` decision.
fn decision_audit(
    active: &Active,
    now: Timestamp,
    input: &TransitionInput,
    evaluation: &Evaluation<TransitionDecision>,
) -> NewAudit {
    let payload = DecisionPayload {
        hook: Transition::HOOK.name(),
        envelope: Envelope {
            now,
            settings: active.settings.as_raw(),
            input,
        },
        decision: &evaluation.decision,
        diagnostic: evaluation.diagnostic.as_ref(),
    };
    NewAudit {
        kind: DECISION.to_owned(),
        subject: Some(input.subject.reference()),
        actor: input.actor.clone(),
        policy: Some(evaluation.policy.clone()),
        payload: serde_json::to_string(&payload).expect("decisions serialize to JSON"),
    }
}

/// Evaluates hook `H` on a JSON input; the decision as JSON.
fn evaluate_json<H: HookKind>(
    policy: &PolicySet,
    operator: &str,
    now: Timestamp,
    settings: &Settings,
    input: &Value,
) -> std::result::Result<Value, serde_json::Error> {
    let input: H::Input = serde_json::from_value(input.clone())?;
    let evaluation = policy.evaluate::<H>(operator, now, settings, &input);
    serde_json::to_value(evaluation.decision)
}

/// The JSON pointer of the first place `recorded` and `replayed` differ,
/// with both values there.
fn first_difference(recorded: &Value, replayed: &Value, at: String) -> Option<String> {
    match (recorded, replayed) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            keys.into_iter().find_map(|key| {
                first_difference(
                    a.get(key).unwrap_or(&Value::Null),
                    b.get(key).unwrap_or(&Value::Null),
                    format!("{at}/{key}"),
                )
            })
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(index, (a, b))| first_difference(a, b, format!("{at}/{index}"))),
        (a, b) if a == b => None,
        (a, b) => Some(format!(
            "at `{}`: recorded `{a}`, replayed `{b}`",
            if at.is_empty() { "/" } else { &at }
        )),
    }
}
