//! The engine: one per process. Holds the wasmtime engine, the sandbox
//! limits, the linker with the one host function policies may import, and
//! the compiled-module caches (on disk, and the modules in memory); loads
//! policy sets.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use serde::Serialize;
use wasmtime::{Caller, Enabled, InstanceAllocationStrategy, Linker, PoolingAllocationConfig};

use crate::cache::{ModuleCache, PrunedModules, sha256_hex};
use crate::error::{Error, LoadError, Result};
use crate::meter;
use crate::policy::{PolicySet, Sandbox, WarmPools};

/// Bounds every evaluation runs within.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Largest linear memory a policy may have, in bytes.
    pub memory_bytes: usize,
    /// Largest table a policy may have, in elements.
    pub table_elements: usize,
    /// CPU budget per evaluation, in fuel units: one per wasm instruction
    /// of each function body and loop body entered, charged on entry (so
    /// at least one per instruction run), and one per 16 bytes a bulk
    /// memory instruction moves. Deterministic: the same input spends the
    /// same fuel.
    pub fuel: u64,
    /// Largest reply a policy may return, in bytes.
    pub output_bytes: usize,
    /// Largest module (`.wasm` or `.wat`) accepted at load, in bytes.
    pub module_bytes: usize,
}

impl Limits {
    /// The fuel a call starts with: [`Limits::fuel`], at most `i64::MAX`,
    /// the largest the module's counter holds.
    pub(crate) fn full_budget(&self) -> i64 {
        i64::try_from(self.fuel).unwrap_or(i64::MAX)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 16 << 20,
            table_elements: 10_000,
            fuel: 20_000_000,
            output_bytes: 1 << 20,
            module_bytes: 16 << 20,
        }
    }
}

/// How instances are used across evaluations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// A clean instance for every evaluation: nothing one decision does can
    /// reach another. A store makes several instances in turn, each one
    /// used once, and is dropped with them (its slots of the instance pool
    /// are taken back like warm instances when the pool is full).
    #[default]
    Fresh,
    /// Warm instances kept between evaluations, one per concurrent caller,
    /// thrown away after any failure, and dropped when another policy set
    /// finds the instance pool full. Faster; a policy's statics survive
    /// from one evaluation to the next, so the fuel an input spends may vary
    /// with what ran before it.
    Reuse,
}

/// How to build an [`Engine`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Sandbox limits.
    pub limits: Limits,
    /// Fresh or reused instances.
    pub isolation: Isolation,
    /// Where compiled modules are cached; `None` compiles on every load.
    pub cache_dir: Option<PathBuf>,
    /// How many instances may exist at once across all policy sets,
    /// including the idle ones policy sets keep for their next evaluations.
    pub max_instances: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            limits: Limits::default(),
            isolation: Isolation::default(),
            cache_dir: None,
            max_instances: 1000,
        }
    }
}

/// Names a policy set version: `subscription@3`. Cheap to clone: every
/// evaluation's result carries one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyId {
    /// The policy set's name, usually its flavour.
    pub name: Arc<str>,
    /// Its version, counted per operator by the store, or chosen by the caller.
    pub version: u32,
}

impl PolicyId {
    /// A policy id.
    pub fn new(name: impl Into<Arc<str>>, version: u32) -> Self {
        PolicyId {
            name: name.into(),
            version,
        }
    }
}

impl fmt::Display for PolicyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

impl FromStr for PolicyId {
    type Err = String;

    /// Parses `name@version`; the error names the value.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.rsplit_once('@')
            .and_then(|(name, version)| {
                let version = version.parse().ok()?;
                (!name.is_empty()).then(|| PolicyId::new(name, version))
            })
            .ok_or_else(|| format!("invalid policy id `{text}`: expected `name@version`"))
    }
}

impl Serialize for PolicyId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Longest single log line kept from a policy, in bytes.
const LOG_LINE_BYTES: usize = 1024;
/// Most log lines kept from one evaluation.
const LOG_LINES: usize = 32;
/// Linear memory reset by `memset` instead of `madvise` when an instance is
/// dropped, covering the stack, data and arena of an SDK-built policy.
const KEEP_RESIDENT_BYTES: usize = 1 << 20;

/// The policy engine. Create one per process and share it; it is
/// `Send + Sync` and cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub(crate) wasmtime: wasmtime::Engine,
    pub(crate) linker: Linker<Sandbox>,
    pub(crate) config: EngineConfig,
    cache: Option<ModuleCache>,
    /// The compiled modules policy sets use, by the wasm's sha256: operators
    /// that run the same module share one compiled copy. An entry lives as
    /// long as a policy set holds it.
    compiled: Arc<Mutex<HashMap<String, Weak<wasmtime::Module>>>>,
    /// The policy sets' warm instances in reuse mode, which a policy set
    /// that finds the instance pool full may take back.
    pub(crate) warm_pools: Arc<WarmPools>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine with this configuration.
    ///
    /// # Errors
    ///
    /// [`Error::Engine`] when wasmtime refuses the configuration, for example
    /// a memory limit the pooling allocator cannot reserve.
    pub fn new(config: EngineConfig) -> Result<Self> {
        // A fresh instance's memory is reset when its store drops: with the
        // pagemap scan, only the pages the call wrote, found by one `ioctl`.
        // Without it, the memory kept resident is rewritten whole and the
        // rest given back, to fault in again: slower however much is kept
        // (figures in the README, "Benchmarks"). Kernels without the scan
        // fall back to that.
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(config.max_instances)
            .total_memories(config.max_instances)
            .total_tables(config.max_instances)
            .max_memory_size(config.limits.memory_bytes)
            .table_elements(config.limits.table_elements)
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES.min(config.limits.memory_bytes))
            .table_keep_resident(64 << 10)
            .pagemap_scan(Enabled::Auto);

        // The CPU budget is counted by the modules themselves, rewritten at
        // load (`crate::meter`), not by wasmtime's fuel.
        let mut wasm = wasmtime::Config::new();
        wasm.wasm_backtrace_max_frames(None)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let wasmtime = wasmtime::Engine::new(&wasm).map_err(|e| Error::Engine(e.to_string()))?;

        let mut linker = Linker::new(&wasmtime);
        linker
            .func_wrap("rulehost", "log", log)
            .and_then(|linker| {
                linker.func_wrap("rulehost", meter::EXHAUSTED_IMPORT, meter::budget_exhausted)
            })
            .map_err(|e| Error::Engine(e.to_string()))?;
        let cache = config
            .cache_dir
            .as_deref()
            .map(|dir| ModuleCache::new(dir, &wasmtime, config.limits.fuel));
        Ok(Engine {
            wasmtime,
            linker,
            config,
            cache,
            compiled: Arc::default(),
            warm_pools: Arc::default(),
        })
    }

    /// The configuration the engine was built with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Loads a policy set from a wasm binary or WAT text, checking it
    /// against ABI v1.
    ///
    /// # Errors
    ///
    /// [`Error::Load`] naming `id` and the problem: not wasm, a disallowed
    /// import, a missing or mistyped export, another ABI version, an initial
    /// memory over the limit, or a start function that fails.
    pub fn load(&self, id: PolicyId, bytes: &[u8]) -> Result<PolicySet> {
        let source = id.to_string();
        self.load_named(id, &source, bytes)
    }

    /// Loads a policy set from a `.wasm` or `.wat` file; it is named after
    /// the file (`name@0`) unless `id` is given.
    ///
    /// # Errors
    ///
    /// [`Error::ReadPolicy`] when the file cannot be read, otherwise as
    /// [`Engine::load`], naming the file.
    pub fn load_file(&self, path: &Path, id: Option<PolicyId>) -> Result<PolicySet> {
        let bytes = std::fs::read(path).map_err(|io| Error::ReadPolicy {
            path: path.to_path_buf(),
            io,
        })?;
        let id = id.unwrap_or_else(|| {
            let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
            PolicyId::new(stem.unwrap_or_else(|| "policy".to_owned()), 0)
        });
        self.load_named(id, &path.display().to_string(), &bytes)
    }

    fn load_named(&self, id: PolicyId, source: &str, bytes: &[u8]) -> Result<PolicySet> {
        let refuse = |reason: LoadError| Error::Load {
            policy: source.to_owned(),
            reason,
        };
        let limit = self.config.limits.module_bytes;
        if bytes.len() > limit {
            return Err(refuse(LoadError::TooLarge {
                bytes: bytes.len(),
                limit,
            }));
        }
        let (binary, sha256) = binary_and_sha256(bytes).map_err(refuse)?;
        check_initial_memory(&binary, self.config.limits.memory_bytes).map_err(refuse)?;
        let module = self.compiled(&sha256, &binary).map_err(refuse)?;
        PolicySet::new(self, id, sha256, module).map_err(refuse)
    }

    /// How many compiled modules are in memory: one per distinct module
    /// that a policy set still uses, however many operators run it.
    pub fn compiled_modules(&self) -> usize {
        let compiled = self.compiled.lock().unwrap_or_else(PoisonError::into_inner);
        compiled.values().filter(|m| m.strong_count() > 0).count()
    }

    /// The compiled module of `binary`: the one in memory when a policy set
    /// uses it already, else from the disk cache or the compiler.
    fn compiled(&self, sha256: &str, binary: &[u8]) -> Result<Arc<wasmtime::Module>, LoadError> {
        let in_memory = || {
            let compiled = self.compiled.lock().unwrap_or_else(PoisonError::into_inner);
            compiled.get(sha256).and_then(Weak::upgrade)
        };
        if let Some(module) = in_memory() {
            return Ok(module);
        }
        // Compiled without the lock, so other loads go on meanwhile; a load
        // of the same module that finished first wins.
        let module = Arc::new(self.compile(sha256, binary)?);
        let mut compiled = self.compiled.lock().unwrap_or_else(PoisonError::into_inner);
        compiled.retain(|_, m| m.strong_count() > 0);
        if let Some(first) = compiled.get(sha256).and_then(Weak::upgrade) {
            return Ok(first);
        }
        compiled.insert(sha256.to_owned(), Arc::downgrade(&module));
        Ok(module)
    }

    fn compile(&self, sha256: &str, binary: &[u8]) -> Result<wasmtime::Module, LoadError> {
        if let Some(module) = self
            .cache
            .as_ref()
            .and_then(|c| c.get(&self.wasmtime, sha256))
        {
            return Ok(module);
        }
        // Validated as the author wrote it, so that an error names their
        // code, then compiled with the budget's charges added.
        let compile_error = |e: wasmtime::Error| LoadError::Compile(format!("{e:#}"));
        wasmtime::Module::validate(&self.wasmtime, binary).map_err(compile_error)?;
        // Every evaluation begins with the allocator, which then starts it
        // with the full budget.
        let metered = meter::instrument(
            binary,
            self.config.limits.full_budget(),
            crate::policy::ALLOC_EXPORT,
        )?;
        let module =
            wasmtime::Module::from_binary(&self.wasmtime, &metered).map_err(compile_error)?;
        if let Some(cache) = &self.cache
            && let Err(warning) = cache.put(sha256, &module)
        {
            eprintln!("warning: module cache: {warning}");
        }
        Ok(module)
    }

    /// Removes the compiled modules in the module cache directory that no
    /// host has loaded for `unused_for`, and partial files a crashed write
    /// left behind; see [`PrunedModules`]. The modules this engine's policy
    /// sets use are kept, however long ago they were loaded.
    ///
    /// A module removed that is needed again is compiled again (1–2 s for
    /// a bundled policy set); a host that has it loaded keeps running it.
    ///
    /// # Errors
    ///
    /// [`Error::ModuleCache`] when no cache directory is configured, or it
    /// cannot be read, is not private, or a file in it cannot be removed.
    pub fn prune_module_cache(&self, unused_for: Duration) -> Result<PrunedModules> {
        let cache = self.cache.as_ref().ok_or_else(|| {
            Error::ModuleCache("no module cache directory is configured".to_owned())
        })?;
        let in_use: HashSet<String> = {
            let compiled = self.compiled.lock().unwrap_or_else(PoisonError::into_inner);
            compiled
                .iter()
                .filter(|(_, module)| module.strong_count() > 0)
                .map(|(sha256, _)| sha256.clone())
                .collect()
        };
        cache.prune(unused_for, &in_use).map_err(Error::ModuleCache)
    }

    /// Whether a compiled module for this wasm binary is in the cache.
    pub fn is_cached(&self, wasm: &[u8]) -> bool {
        let Ok((_, sha256)) = binary_and_sha256(wasm) else {
            return false;
        };
        self.cache
            .as_ref()
            .is_some_and(|c| c.get(&self.wasmtime, &sha256).is_some())
    }
}

/// The wasm binary of `bytes` (WAT text is translated) and its sha256, the
/// key of a policy set's compiled module.
fn binary_and_sha256(bytes: &[u8]) -> Result<(std::borrow::Cow<'_, [u8]>, String), LoadError> {
    let binary = wat::parse_bytes(bytes).map_err(|e| LoadError::NotWasm(e.to_string()))?;
    let sha256 = sha256_hex(&binary);
    Ok((binary, sha256))
}

/// Refuses, before it is compiled, a module whose memory starts larger than
/// the sandbox allows, naming rulehost's limit (the compiler would refuse it
/// too, in terms of its own allocator). A module that does not parse is left
/// to the compiler to refuse.
fn check_initial_memory(binary: &[u8], limit: usize) -> Result<(), LoadError> {
    use wasmparser::{Parser, Payload};
    for payload in Parser::new(0).parse_all(binary) {
        match payload {
            Ok(Payload::MemorySection(memories)) => {
                for memory in memories {
                    let Ok(memory) = memory else { return Ok(()) };
                    // Pages are 64 KiB, or smaller with custom page sizes;
                    // the bound keeps an unvalidated value from overflowing.
                    let page_size = 1u64 << memory.page_size_log2.unwrap_or(16).min(16);
                    let bytes = memory.initial.saturating_mul(page_size);
                    if bytes > limit as u64 {
                        return Err(LoadError::InitialMemory {
                            pages: memory.initial,
                            bytes,
                            limit,
                        });
                    }
                }
                return Ok(());
            }
            // Memories come before the code; nothing after them matters here.
            Ok(Payload::CodeSectionStart { .. }) | Err(_) => return Ok(()),
            Ok(_) => {}
        }
    }
    Ok(())
}

/// `rulehost`.`log(ptr, len)`: keeps a bounded number of bounded lines.
fn log(mut caller: Caller<'_, Sandbox>, ptr: u32, len: u32) {
    let Some(memory) = caller.get_export("memory").and_then(|e| e.into_memory()) else {
        return;
    };
    let start = ptr as usize;
    let end = start.saturating_add((len as usize).min(LOG_LINE_BYTES));
    let line = memory
        .data(&caller)
        .get(start..end)
        .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
        .unwrap_or_else(|| format!("<log line at {ptr}+{len} is out of bounds>"));
    let logs = &mut caller.data_mut().logs;
    if logs.len() < LOG_LINES {
        logs.push(line);
    }
}
