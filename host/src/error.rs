//! The host's errors: faults of loading, configuration and the host itself.
//! A policy that fails while deciding is not an error; it yields a
//! fail-closed decision with a [`crate::Diagnostic`].

use std::path::PathBuf;

use crate::Diagnostic;

/// Everything that can go wrong in the host outside a policy's decision.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The wasm engine could not be set up with this configuration.
    #[error("cannot configure the engine: {0}")]
    Engine(String),

    /// The store could not be backed up to this file.
    #[error("cannot back up to `{}`: {reason}", path.display())]
    Backup {
        /// The backup file.
        path: PathBuf,
        /// Why.
        reason: String,
    },

    /// The module cache directory could not be pruned.
    #[error("module cache: {0}")]
    ModuleCache(String),

    /// A policy module could not be loaded.
    #[error("cannot load policy `{policy}`: {reason}")]
    Load {
        /// The file or name the module was loaded from.
        policy: String,
        /// What is wrong with it.
        reason: LoadError,
    },

    /// A policy file could not be read.
    #[error("cannot read policy file `{}`: {io}", path.display())]
    ReadPolicy {
        /// The file.
        path: PathBuf,
        /// The I/O error, part of the message.
        io: std::io::Error,
    },

    /// No operator with this id is installed.
    #[error("unknown operator `{0}`")]
    UnknownOperator(String),

    /// An operator with this id exists already.
    #[error("operator `{0}` exists already")]
    OperatorExists(String),

    /// An operator id that cannot be used.
    #[error("invalid operator id `{0}`: use 1 to 64 of a-z, 0-9, `-` and `_`")]
    InvalidOperatorId(String),

    /// No such token (for that operator).
    #[error("no token `{0}`")]
    UnknownToken(u64),

    /// A policy set refused an operator's settings.
    #[error("policy `{policy}` refused the settings of operator `{operator}`: {}", errors.join("; "))]
    InvalidSettings {
        /// The operator.
        operator: String,
        /// The policy set, `name@version`.
        policy: String,
        /// One message per problem.
        errors: Vec<String>,
    },

    /// The policy failed while validating settings (trap, budget, garbage).
    #[error("{0}")]
    PolicyFailed(Box<Diagnostic>),

    /// Operator settings are not a JSON object.
    #[error("settings of operator `{operator}` must be a JSON object, got `{got}`")]
    SettingsNotObject {
        /// The operator.
        operator: String,
        /// What was given, abbreviated.
        got: String,
    },

    /// The store failed (I/O, corruption, a full disk).
    #[error("store: {0}")]
    Store(String),

    /// The store is full (the disk, or the size it is allowed): nothing of
    /// the write was stored; what was acknowledged before stays.
    #[error("the store is full, nothing of this write was stored: {0}")]
    StoreFull(String),

    /// Another connection held the store's write lock past the busy
    /// timeout: nothing of the write was stored; try again.
    #[error("the store is locked by another connection, nothing of this write was stored: {0}")]
    StoreBusy(String),

    /// The store file could not be opened or migrated.
    #[error("cannot open store `{}`: {reason}", path.display())]
    OpenStore {
        /// The database file.
        path: PathBuf,
        /// Why.
        reason: String,
    },

    /// That policy version is already installed for the operator.
    #[error("operator `{operator}` already has policy `{policy}` installed")]
    PolicyVersionExists {
        /// The operator.
        operator: String,
        /// `name@version`.
        policy: String,
    },

    /// The operator requires signed policy sets and none was given.
    #[error("operator `{operator}` requires signed policy sets: `{policy}` has no signature{hint}")]
    SignatureRequired {
        /// The operator.
        operator: String,
        /// `name@version`.
        policy: String,
        /// What to do about it.
        hint: &'static str,
    },

    /// The signature of a policy set does not verify.
    #[error("the signature of `{policy}` for operator `{operator}` is refused: {reason}")]
    SignatureInvalid {
        /// The operator.
        operator: String,
        /// `name@version`.
        policy: String,
        /// Why.
        reason: String,
    },

    /// A webhook URL the service cannot post to.
    #[error("invalid webhook URL `{url}`: {reason}")]
    InvalidWebhook {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A public key that cannot be trusted as given.
    #[error("invalid key: {0}")]
    InvalidKey(String),

    /// A stored module no longer matches the sha256 it was installed with.
    #[error(
        "policy `{policy}` of operator `{operator}` no longer matches its pinned sha256 `{pinned}` (the store holds a module with sha256 `{found}`)"
    )]
    PinMismatch {
        /// The operator.
        operator: String,
        /// `name@version`.
        policy: String,
        /// The sha256 recorded at install.
        pinned: String,
        /// The sha256 of the module found.
        found: String,
    },

    /// That policy version is not installed for the operator.
    #[error("operator `{operator}` has no policy `{policy}` installed")]
    UnknownPolicyVersion {
        /// The operator.
        operator: String,
        /// `name@version`.
        policy: String,
    },

    /// Rollback without an earlier active version.
    #[error("operator `{0}` has no earlier policy version to roll back to")]
    NothingToRollBack(String),

    /// A subject changed between reading its state and applying a decision
    /// about it; the caller may try again.
    #[error("subject `{0}` changed while the decision was made; try again")]
    Conflict(String),

    /// The scheduled transition already fired or was cancelled.
    #[error("scheduled transition `{0}` already fired or was cancelled")]
    AlreadyFired(i64),

    /// The operator has no scheduled transition with that id.
    #[error("operator `{operator}` has no schedule `{id}`")]
    UnknownSchedule {
        /// The operator.
        operator: String,
        /// The schedule's id.
        id: i64,
    },

    /// Only a schedule held because its policy failed can be retried or
    /// dropped by hand.
    #[error("schedule `{id}` is {state}, not held: only a held schedule can be retried or dropped")]
    ScheduleNotHeld {
        /// The schedule's id.
        id: i64,
        /// What it is instead: `pending`, `fired` or `cancelled`.
        state: &'static str,
    },

    /// Retrying or dropping a held schedule is recorded with a reason.
    #[error("a reason is required to {resolution} schedule `{id}`")]
    ReasonRequired {
        /// `retry` or `drop`.
        resolution: &'static str,
        /// The schedule's id.
        id: i64,
    },

    /// A write of a change could not be applied; nothing of the change was.
    #[error("write {index} cannot be applied: {reason}")]
    Write {
        /// Its position in the change, from 0.
        index: usize,
        /// Why.
        reason: String,
    },

    /// An effect of a decision could not be applied; nothing of the
    /// decision was.
    #[error(
        "effect {index} (`{effect}`) of policy `{policy}` cannot be applied, nothing was changed: {reason}"
    )]
    Effect {
        /// Its position in the decision's effects, from 0.
        index: usize,
        /// The effect's name (`lift_lock`).
        effect: &'static str,
        /// The deciding policy, `name@version`.
        policy: String,
        /// Why.
        reason: String,
    },

    /// The operator has no event with that sequence number.
    #[error("operator `{operator}` has no event `{seq}`")]
    UnknownEvent {
        /// The operator.
        operator: String,
        /// The sequence number.
        seq: u64,
    },

    /// No audit record with that sequence number.
    #[error("no audit record `{0}`")]
    UnknownAuditRecord(u64),

    /// The audit record is not a recorded decision, so it cannot be replayed.
    #[error("audit record `{seq}` is a `{kind}` record, not a decision")]
    NotADecision {
        /// The record.
        seq: u64,
        /// Its kind.
        kind: String,
    },

    /// The audit record's payload was anonymized, so it cannot be replayed.
    #[error("audit record `{0}` was anonymized and cannot be replayed")]
    Redacted(u64),

    /// A legacy import was refused; nothing of it was imported.
    #[error("import refused, nothing was imported: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Import(Vec<crate::import::RowError>),
}

/// Why a module was refused at load time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// Not a wasm binary and not valid WAT text.
    #[error("not a wasm module: {0}")]
    NotWasm(String),
    /// Wasmtime could not compile it.
    #[error("cannot compile: {0}")]
    Compile(String),
    /// It imports something the sandbox does not provide.
    #[error("imports `{module}`.`{name}`, but a policy may import only `rulehost`.`log`")]
    DisallowedImport {
        /// Import module.
        module: String,
        /// Import name.
        name: String,
    },
    /// It exports a name the host adds to every module itself.
    #[error("exports `{0}`, a name the host reserves")]
    ReservedExport(&'static str),
    /// A required export is missing.
    #[error("could not find export `{0}`")]
    MissingExport(&'static str),
    /// An export has the wrong kind or signature.
    #[error("export `{name}` has type `{found}`, expected `{expected}`")]
    ExportType {
        /// Export name.
        name: String,
        /// What the module declares.
        found: String,
        /// What ABI v1 requires.
        expected: &'static str,
    },
    /// The module is built for another ABI version.
    #[error("exports ABI version `{found}`, but this host supports version `{supported}`")]
    AbiVersion {
        /// What `rulehost_abi_version` returned.
        found: i32,
        /// What this host supports.
        supported: i32,
    },
    /// The module exports no hook at all.
    #[error(
        "exports no hook: expected at least one of `rulehost_authorize`, `rulehost_billing`, `rulehost_transition`"
    )]
    NoHooks,
    /// Its initial memory is larger than the sandbox allows.
    #[error(
        "declares {pages} pages ({bytes} bytes) of initial memory, over the limit of {limit} bytes"
    )]
    InitialMemory {
        /// Pages declared.
        pages: u64,
        /// Their size in bytes.
        bytes: u64,
        /// The sandbox's memory limit.
        limit: usize,
    },
    /// The module is larger than the host accepts.
    #[error("is {bytes} bytes, over the limit of {limit} bytes for a module")]
    TooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// Instantiating it or calling `rulehost_abi_version` failed.
    #[error("instantiation failed: {0}")]
    Instantiate(String),
}

/// The host's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
