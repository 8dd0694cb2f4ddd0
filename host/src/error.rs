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
    /// Instantiating it or calling `rulehost_abi_version` failed.
    #[error("instantiation failed: {0}")]
    Instantiate(String),
}

/// The host's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
