//! The host's state: policy set versions, subjects, locks, scheduled
//! transitions, the audit trail and the outbox, always scoped by operator.
//!
//! [`Store`] is the narrow interface the rest of the host uses; the embedded
//! default is [`SqliteStore`], one SQLite file. No other module writes SQL.
//! A store applies a [`Change`] — typed [`Write`]s, the audit record that
//! explains them and the events they announce — in one transaction: all of
//! it or none of it.

mod schema;
mod sqlite;
mod vfs;

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use rulehost_sdk::wire::{Actor, Lock, SubjectRef, Timestamp, Trigger};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::PolicyId;
use crate::error::Result;

pub use sqlite::{SqliteStore, StoreOptions};

/// The action of the schedule a timed lock gets: it fires with trigger
/// `expired` when the lock's `until` has come.
pub const LOCK_EXPIRY_ACTION: &str = "lock.expire";

/// A policy set version as stored: the module, its settings and who
/// installed it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredPolicy {
    /// Flavour and version.
    pub id: PolicyId,
    /// The compiled module's bytes.
    pub wasm: Vec<u8>,
    /// Hex sha256 of `wasm`.
    pub sha256: String,
    /// The operator's settings for this version, as a JSON object.
    pub settings: Value,
    /// When it was installed.
    pub installed_at: Timestamp,
    /// Who installed it.
    pub installed_by: Actor,
}

/// One installed version of an operator's policy set, without its bytes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PolicyVersion {
    /// Flavour and version.
    pub id: PolicyId,
    /// Hex sha256 of the module.
    pub sha256: String,
    /// When it was installed.
    pub installed_at: Timestamp,
    /// Who installed it.
    pub installed_by: Actor,
    /// Whether it is the operator's active version.
    pub active: bool,
}

/// What the host keeps about one subject, as of a point in time.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SubjectState {
    /// Its lifecycle status, once one was set.
    pub status: Option<String>,
    /// Its switches.
    pub switches: BTreeMap<String, bool>,
    /// Its locks active at that time, oldest first.
    pub locks: Vec<Lock>,
    /// Its parent (a contract's customer), once known.
    pub parent: Option<SubjectRef>,
    /// The subjects whose parent it is (a customer's contracts).
    pub children: Vec<SubjectRef>,
    /// Bumped by every change to the subject; a [`Change`] can require it
    /// unchanged since the state was read.
    pub revision: u64,
}

/// How a lock was lifted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LiftMode {
    /// By someone, by hand.
    Manual,
    /// By the host, because its time was up.
    Automatic,
}

impl LiftMode {
    /// `manual` or `automatic`.
    pub fn name(self) -> &'static str {
        match self {
            LiftMode::Manual => "manual",
            LiftMode::Automatic => "automatic",
        }
    }
}

/// The lifting of a lock (HOST-3).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Lifted {
    /// When.
    pub at: Timestamp,
    /// By whom (the host's own actor when automatic).
    pub actor: Actor,
    /// Why.
    pub reason: String,
    /// By hand or on schedule.
    pub mode: LiftMode,
}

/// A lock with its whole history.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LockRecord {
    /// The subject it locks.
    pub subject: SubjectRef,
    /// The lock (its `id` is always set).
    #[serde(flatten)]
    pub lock: Lock,
    /// The id it had in a legacy system it was imported from.
    pub legacy_id: Option<String>,
    /// When and how it was lifted; `None` while it has not been.
    pub lifted: Option<Lifted>,
}

/// A lock to create.
#[derive(Clone, Debug, PartialEq)]
pub struct NewLock {
    /// The subject to lock.
    pub subject: SubjectRef,
    /// Kind, actor, reason, message, start and end (`id` is ignored).
    pub lock: Lock,
    /// Its id in a legacy system, for imported locks.
    pub legacy_id: Option<String>,
}

/// One typed write of a [`Change`].
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    /// Create a lock; a timed lock also gets its expiry scheduled.
    SetLock(NewLock),
    /// Lift the subject's active locks of `kind` (all kinds when `None`);
    /// fails when there is none. Cancels their expiry.
    LiftLocks {
        /// The subject.
        subject: SubjectRef,
        /// Only this kind.
        kind: Option<String>,
        /// Only this lock (for an expiry).
        lock_id: Option<String>,
        /// How, by whom, why, when.
        lifted: Lifted,
    },
    /// Run `action` on `subject` at `at` (trigger `scheduled`).
    Schedule {
        /// The subject.
        subject: SubjectRef,
        /// When.
        at: Timestamp,
        /// The action.
        action: String,
        /// Its parameters.
        params: Value,
    },
    /// Cancel the subject's pending schedules of `action`; fails when there
    /// is none.
    CancelSchedule {
        /// The subject.
        subject: SubjectRef,
        /// The action.
        action: String,
    },
    /// Settle a held schedule of the operator as staff decided; fails when
    /// it is not held.
    ResolveHeld {
        /// The schedule's id.
        schedule: i64,
        /// Retry or drop it.
        resolution: Resolution,
    },
    /// Set the subject's lifecycle status.
    SetStatus {
        /// The subject.
        subject: SubjectRef,
        /// The status.
        status: String,
    },
    /// Turn a switch on or off.
    SetSwitch {
        /// The subject.
        subject: SubjectRef,
        /// The switch.
        switch: String,
        /// On or off.
        on: bool,
    },
    /// Remember the subject's parent (a contract's customer).
    SetParent {
        /// The subject.
        subject: SubjectRef,
        /// Its parent.
        parent: SubjectRef,
    },
}

/// An audit record to append.
#[derive(Clone, Debug, PartialEq)]
pub struct NewAudit {
    /// What happened (`decision`, `policy.installed`, `locks.imported`...).
    pub kind: String,
    /// What it is about, when it is about one subject.
    pub subject: Option<SubjectRef>,
    /// Who caused it.
    pub actor: Actor,
    /// The policy set version that decided, for decisions.
    pub policy: Option<PolicyId>,
    /// Everything else, as JSON text: for decisions the hook's envelope
    /// and output.
    pub payload: String,
}

/// An event for the backend's outbox (HOST-7).
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    /// `customer.locked`, `lock.expired`, `contract.ended`...
    pub kind: String,
    /// What it is about.
    pub subject: SubjectRef,
    /// Details.
    pub data: Value,
}

/// Writes, the audit record explaining them and the events announcing them,
/// applied in one transaction.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// The operator.
    pub operator: String,
    /// When it happens.
    pub at: Timestamp,
    /// Subjects whose [`SubjectState::revision`] must still be these.
    pub expect: Vec<(SubjectRef, u64)>,
    /// The pending schedule this change fires (or holds); fails when it
    /// already fired or is held.
    pub fires: Option<Fires>,
    /// The writes, in order.
    pub writes: Vec<Write>,
    /// The audit record.
    pub audit: NewAudit,
    /// The events.
    pub events: Vec<NewEvent>,
}

/// What a [`Change`] does to the schedule it comes from.
#[derive(Clone, Debug, PartialEq)]
pub struct Fires {
    /// The schedule's id.
    pub schedule: i64,
    /// `None`: the schedule has fired. `Some`: the policy failed, and the
    /// schedule stays pending but held until the operator activates a
    /// version or staff retry or drop it.
    pub held: Option<Held>,
}

/// Why a schedule is held, and by which version.
#[derive(Clone, Debug, PartialEq)]
pub struct Held {
    /// The version that failed, `None` when none was active. The change
    /// fails with [`Error::Conflict`](crate::Error::Conflict) when another
    /// version is active by the time it is committed: the next run fires
    /// the schedule with that one.
    pub policy: Option<PolicyId>,
    /// The failure in words.
    pub error: String,
}

/// What a committed [`Change`] produced.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Committed {
    /// The audit record's sequence number.
    pub audit_seq: u64,
    /// Ids of the locks created, in order.
    pub locks_created: Vec<String>,
    /// Ids of the locks lifted, in order.
    pub locks_lifted: Vec<String>,
    /// Sequence numbers of the events queued.
    pub events: Vec<u64>,
}

/// A pending scheduled transition.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Scheduled {
    /// Its id.
    pub id: i64,
    /// The operator.
    pub operator: String,
    /// The subject.
    pub subject: SubjectRef,
    /// When it is due.
    pub at: Timestamp,
    /// The action.
    pub action: String,
    /// `expired` for a lock's end, `scheduled` otherwise.
    pub trigger: Trigger,
    /// Its parameters (`{"lock": id}` for a lock's end).
    pub params: Value,
    /// How many times it was tried and its policy failed.
    pub attempts: u32,
}

/// One stored audit record, as the chain hashes it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditRecord {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// When.
    pub at: Timestamp,
    /// The operator.
    pub operator: String,
    /// What happened.
    pub kind: String,
    /// What it is about.
    pub subject: Option<SubjectRef>,
    /// Who caused it.
    pub actor: Actor,
    /// The deciding policy set version.
    pub policy: Option<PolicyId>,
    /// The payload as stored: JSON text, or the redaction marker once
    /// anonymized.
    pub payload: String,
    /// Hex sha256 of the payload as first written.
    pub payload_sha256: String,
    /// Whether the payload was anonymized.
    pub redacted: bool,
    /// Hex hash of the previous record (zeros for the first).
    pub prev_hash: String,
    /// Hex hash of this record.
    pub hash: String,
}

/// An operator the host serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OperatorRecord {
    /// Its id.
    pub id: String,
    /// When it was created (or first got a policy set).
    pub created_at: Timestamp,
}

/// An API token to store; only its sha256 is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewToken {
    /// Hex sha256 of the secret.
    pub sha256: String,
    /// The operator it acts for; `None` for an admin token.
    pub operator: Option<String>,
    /// A name for people (`billing-backend`).
    pub name: String,
    /// Whether it may install, activate and roll back policy sets.
    pub can_install: bool,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it stops working, if ever.
    pub expires_at: Option<Timestamp>,
}

/// A stored API token, without its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TokenRecord {
    /// Its id, for listing and revoking.
    pub id: u64,
    /// The operator it acts for; `None` for an admin token.
    pub operator: Option<String>,
    /// A name for people.
    pub name: String,
    /// Whether it may install, activate and roll back policy sets.
    pub can_install: bool,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it stops working, if ever.
    pub expires_at: Option<Timestamp>,
    /// When it was revoked.
    pub revoked_at: Option<Timestamp>,
}

/// The events consumer whose cursor records what an operator's webhook
/// has delivered.
pub const WEBHOOK_CONSUMER: &str = "webhook";

/// Where the service pushes an operator's events (HOST-7).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Webhook {
    /// The operator.
    pub operator: String,
    /// The `http://` URL events are posted to.
    pub url: String,
    /// The key of the HMAC-SHA256 signature of every delivery; never
    /// serialized.
    #[serde(skip)]
    pub secret: String,
    /// When it was set.
    pub created_at: Timestamp,
}

/// An event in the outbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Its position in the outbox: the acknowledgement cursor.
    pub seq: u64,
    /// The operator.
    pub operator: String,
    /// `customer.locked`, `lock.expired`...
    pub kind: String,
    /// What it is about.
    pub subject: SubjectRef,
    /// Details.
    pub data: Value,
    /// When it happened.
    pub at: Timestamp,
    /// The audit record of the change that queued it.
    pub audit_seq: u64,
}

/// What became of a scheduled transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleState {
    /// Waiting for its time.
    Pending,
    /// Its policy failed; it fires again once the operator activates a
    /// version or staff retry it, unless staff drop it.
    Held,
    /// Fired through the policy.
    Fired,
    /// Cancelled by an effect before its time, or dropped by staff while
    /// it was held.
    Cancelled,
}

impl ScheduleState {
    /// Every state.
    pub const ALL: [ScheduleState; 4] = [
        ScheduleState::Pending,
        ScheduleState::Held,
        ScheduleState::Fired,
        ScheduleState::Cancelled,
    ];

    /// Its name: `pending`, `held`, `fired` or `cancelled`.
    pub fn name(self) -> &'static str {
        match self {
            ScheduleState::Pending => "pending",
            ScheduleState::Held => "held",
            ScheduleState::Fired => "fired",
            ScheduleState::Cancelled => "cancelled",
        }
    }
}

impl std::str::FromStr for ScheduleState {
    type Err = String;

    /// Parses a state's name; the error names the value and the states.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        ScheduleState::ALL
            .into_iter()
            .find(|state| state.name() == name)
            .ok_or_else(|| {
                format!(
                    "unknown schedule state `{name}`: expected one of `pending`, `held`, `fired`, `cancelled`"
                )
            })
    }
}

/// What staff do with a schedule held because its policy failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// Let it fire again at the next run, with the active version: for a
    /// failure that depended on the subject's state or on the host's
    /// limits, since changed.
    Retry,
    /// Cancel it for good: what it would have done is not done.
    Drop,
}

impl Resolution {
    /// Its name: `retry` or `drop`.
    pub fn name(self) -> &'static str {
        match self {
            Resolution::Retry => "retry",
            Resolution::Drop => "drop",
        }
    }
}

impl std::str::FromStr for Resolution {
    type Err = String;

    /// Parses `retry` or `drop`; the error names the value.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        [Resolution::Retry, Resolution::Drop]
            .into_iter()
            .find(|resolution| resolution.name() == name)
            .ok_or_else(|| format!("unknown resolution `{name}`: expected `retry` or `drop`"))
    }
}

/// A scheduled transition with what became of it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScheduleRecord {
    /// The schedule.
    #[serde(flatten)]
    pub scheduled: Scheduled,
    /// What became of it.
    pub state: ScheduleState,
    /// The last failure of its policy, if it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Everything a store holds about one subject (PUB-4).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SubjectRecords {
    /// Status, switches, parent and active locks now.
    pub state: SubjectState,
    /// Every lock, lifted ones too.
    pub locks: Vec<LockRecord>,
    /// Every scheduled transition.
    pub schedules: Vec<ScheduleRecord>,
    /// Every audit record about it.
    pub audit: Vec<AuditRecord>,
    /// Every event about it.
    pub events: Vec<Event>,
}

/// Locks brought in from a legacy system (GYM-12), with the audit record
/// of the import.
#[derive(Clone, Debug, PartialEq)]
pub struct LockImport {
    /// The operator.
    pub operator: String,
    /// When.
    pub at: Timestamp,
    /// The locks, with their original data.
    pub locks: Vec<NewLock>,
    /// The import's audit record.
    pub audit: NewAudit,
}

/// The anonymization of one subject's personal data (PUB-5).
#[derive(Clone, Debug, PartialEq)]
pub struct Anonymization {
    /// The operator.
    pub operator: String,
    /// The subject.
    pub subject: SubjectRef,
    /// When.
    pub at: Timestamp,
    /// Who asked for it.
    pub actor: Actor,
    /// What replaces free text (lock reasons and messages).
    pub placeholder: String,
}

/// What an anonymization touched.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Anonymized {
    /// Locks whose reason and message were replaced.
    pub locks: u64,
    /// Audit records whose payload was redacted.
    pub audit_records: Vec<u64>,
    /// Events whose data was dropped.
    pub events: u64,
    /// The audit record of the anonymization itself.
    pub audit_seq: u64,
}

/// The host's state, scoped by operator. Implementations apply each
/// [`Change`] atomically and keep every acknowledged write durable.
pub trait Store: Send + Sync + 'static {
    /// Stores a new policy set version for `operator`, creating the operator
    /// when it has none. With `activation` (its audit record) the version
    /// also becomes the active one, in the same transaction: a fault leaves
    /// neither the version nor the activation.
    ///
    /// # Errors
    ///
    /// [`Error::PolicyVersionExists`](crate::Error::PolicyVersionExists)
    /// when that version is already installed; store faults.
    fn add_policy(
        &self,
        operator: &str,
        policy: StoredPolicy,
        audit: NewAudit,
        activation: Option<NewAudit>,
    ) -> Result<u64>;

    /// Makes an installed version the operator's active one, and releases
    /// the operator's held schedules so that they fire with it.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownPolicyVersion`](crate::Error::UnknownPolicyVersion);
    /// store faults.
    fn activate_policy(
        &self,
        operator: &str,
        id: &PolicyId,
        at: Timestamp,
        audit: NewAudit,
    ) -> Result<u64>;

    /// One installed version, with its bytes.
    ///
    /// # Errors
    ///
    /// Store faults.
    fn policy(&self, operator: &str, id: &PolicyId) -> Result<Option<StoredPolicy>>;

    /// Every installed version of the operator's policy set, oldest first.
    ///
    /// # Errors
    ///
    /// Store faults.
    fn policy_versions(&self, operator: &str) -> Result<Vec<PolicyVersion>>;

    /// The versions the operator activated, most recent first.
    ///
    /// # Errors
    ///
    /// Store faults.
    fn activations(&self, operator: &str) -> Result<Vec<PolicyId>>;

    /// Every operator's active version.
    ///
    /// # Errors
    ///
    /// Store faults.
    fn active_policies(&self) -> Result<Vec<(String, StoredPolicy)>>;

    /// Every operator's active version, by operator id: what
    /// [`Store::active_policies`] names, without the modules.
    ///
    /// # Errors
    ///
    /// Store faults.
    fn active_versions(&self) -> Result<BTreeMap<String, PolicyId>>;

    /// What the store holds about each subject, with the locks active at
    /// `now`, read in one consistent snapshot; in the order asked.
    ///
    /// # Errors
    ///
    /// Store faults.
    fn subjects(
        &self,
        operator: &str,
        subjects: &[SubjectRef],
        now: Timestamp,
    ) -> Result<Vec<SubjectState>> {
        let mut read = Vec::new();
        self.walk_subjects(operator, subjects.to_vec(), now, &mut |states| {
            read = states.into_iter().map(|(_, state)| state).collect();
            Vec::new()
        })?;
        Ok(read)
    }

    /// Reads `subjects` as [`Store::subjects`] does, hands them with their
    /// states to `next`, reads the subjects `next` names (their parents,
    /// say) and so on until `next` names none: every level in the same
    /// snapshot.
    ///
    /// # Errors
    ///
    /// Store faults.
    fn walk_subjects(
        &self,
        operator: &str,
        subjects: Vec<SubjectRef>,
        now: Timestamp,
        next: &mut dyn FnMut(Vec<(SubjectRef, SubjectState)>) -> Vec<SubjectRef>,
    ) -> Result<()>;

    /// Applies each change in its own all-or-nothing unit; the returned
    /// results are in the same order. Changes may share one durable commit.
    fn commit(&self, changes: Vec<Change>) -> Vec<Result<Committed>>;

    /// Pending schedules due at `now` and not held, earliest first, at most
    /// `limit`;
    /// with `after`, only those after that one in this order (to page).
    ///
    /// # Errors
    ///
    /// Store faults.
    fn due(
        &self,
        now: Timestamp,
        after: Option<&Scheduled>,
        limit: usize,
    ) -> Result<Vec<Scheduled>>;

    /// When the earliest pending schedule not held is due.
    ///
    /// # Errors
    ///
    /// Store faults.
    fn next_due(&self) -> Result<Option<Timestamp>>;

    /// The operator's schedules with an id after `after`, in that state
    /// when given, by id, at most `limit`.
    ///
    /// # Errors
    ///
    /// Store faults.
    fn schedules(
        &self,
        operator: &str,
        state: Option<ScheduleState>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<ScheduleRecord>>;

    /// How many schedules each operator has held, for the operators with
    /// any, by operator id.
    ///
    /// # Errors
    ///
    /// Store faults.
    fn held_schedules(&self) -> Result<BTreeMap<String, u64>>;

    /// One audit record.
    ///
    /// # Errors
    ///
    /// Store faults.
    fn audit_record(&self, seq: u64) -> Result<Option<AuditRecord>>;

    /// Calls `visit` with every audit record from `from` on, in order,
    /// until it breaks.
    ///
    /// # Errors
    ///
    /// Store faults.
    fn scan_audit(
        &self,
        from: u64,
        visit: &mut dyn FnMut(AuditRecord) -> ControlFlow<()>,
    ) -> Result<()>;

    /// The operator's events after `consumer`'s acknowledged cursor, at most
    /// `limit`.
    ///
    /// # Errors
    ///
    /// Store faults.
    fn events(&self, operator: &str, consumer: &str, limit: usize) -> Result<Vec<Event>>;

    /// Moves `consumer`'s cursor to `seq` (never backwards).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownEvent`](crate::Error::UnknownEvent) when the
    /// operator has no event `seq`; store faults.
    fn ack(&self, operator: &str, consumer: &str, seq: u64) -> Result<()>;

    /// Creates imported locks (with their expiry schedules) and the import's
    /// audit record in one transaction.
    ///
    /// # Errors
    ///
    /// Store faults; nothing is imported then.
    fn import_locks(&self, import: LockImport) -> Result<Committed>;

    /// Everything held about a subject, with its locks active at `now`,
    /// read in one consistent snapshot.
    ///
    /// # Errors
    ///
    /// Store faults.
    fn subject_records(
        &self,
        operator: &str,
        subject: &SubjectRef,
        now: Timestamp,
    ) -> Result<SubjectRecords>;

    /// Replaces the subject's free text and redacts the payloads of the
    /// audit records about it, recording that in a new audit record.
    ///
    /// # Errors
    ///
    /// Store faults; nothing changes then.
    fn anonymize(&self, anonymization: Anonymization) -> Result<Anonymized>;

    /// Adds an operator.
    ///
    /// # Errors
    ///
    /// [`Error::OperatorExists`](crate::Error::OperatorExists); store faults.
    fn add_operator(&self, operator: &str, at: Timestamp) -> Result<()>;

    /// Every operator, by id.
    ///
    /// # Errors
    ///
    /// Store faults.
    fn operators(&self) -> Result<Vec<OperatorRecord>>;

    /// Stores a token; its id.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownOperator`](crate::Error::UnknownOperator); store
    /// faults.
    fn add_token(&self, token: NewToken) -> Result<u64>;

    /// The token whose secret hashes to `sha256`, revoked or not.
    ///
    /// # Errors
    ///
    /// Store faults.
    fn token(&self, sha256: &str) -> Result<Option<TokenRecord>>;

    /// The tokens of `operator` (`None`: the admin tokens).
    ///
    /// # Errors
    ///
    /// Store faults.
    fn tokens(&self, operator: Option<&str>) -> Result<Vec<TokenRecord>>;

    /// Revokes token `id` of `operator` (`None`: an admin token).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownToken`](crate::Error::UnknownToken); store faults.
    fn revoke_token(&self, operator: Option<&str>, id: u64, at: Timestamp) -> Result<()>;

    /// The operator's audit records after `after`, oldest first, at most
    /// `limit`.
    ///
    /// # Errors
    ///
    /// Store faults.
    fn audit_records(&self, operator: &str, after: u64, limit: usize) -> Result<Vec<AuditRecord>>;

    /// Trusts an ed25519 public key (hex) for the operator's policy sets,
    /// with the audit record saying who did.
    ///
    /// # Errors
    ///
    /// Store faults.
    fn add_trusted_key(
        &self,
        operator: &str,
        key: &str,
        at: Timestamp,
        audit: NewAudit,
    ) -> Result<()>;

    /// The public keys trusted for the operator's policy sets.
    ///
    /// # Errors
    ///
    /// Store faults.
    fn trusted_keys(&self, operator: &str) -> Result<Vec<String>>;

    /// Sets the operator's webhook, replacing the one it had, or removes it
    /// (`None`), with the audit record saying who did.
    ///
    /// # Errors
    ///
    /// Store faults.
    fn set_webhook(
        &self,
        operator: &str,
        webhook: Option<Webhook>,
        at: Timestamp,
        audit: NewAudit,
    ) -> Result<()>;

    /// Every operator's webhook.
    ///
    /// # Errors
    ///
    /// Store faults.
    fn webhooks(&self) -> Result<Vec<Webhook>>;

    /// Writes a consistent copy of the whole store to the new file `to`,
    /// while writes go on; the copy is a store of its own (open it as the
    /// database to restore). `to` appears only once the copy is complete,
    /// checked and durable.
    ///
    /// # Errors
    ///
    /// [`Error::Backup`](crate::Error::Backup) naming `to` when it exists
    /// already, cannot be written or the copy fails its check;
    /// [`Error::StoreFull`](crate::Error::StoreFull) when the disk fills.
    /// Nothing is left at `to` then.
    fn backup(&self, to: &Path) -> Result<Backup>;
}

/// A copy of the store made by [`Store::backup`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Backup {
    /// The copy.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// The audit records it holds.
    pub audit_records: u64,
    /// The sequence number of its last audit record (0 for an empty
    /// trail): which state of the trail the copy holds.
    pub last_audit_seq: u64,
    /// That record's hash.
    pub last_audit_hash: Option<String>,
}
