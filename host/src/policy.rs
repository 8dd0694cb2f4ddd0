//! A loaded policy set and the sandbox its hooks run in.
//!
//! Loading checks the module against ABI v1 once (`sdk/ABI.md`); evaluating
//! writes the JSON envelope into an instance's memory, calls the hook's
//! export under the fuel budget and the memory and table limits, reads the
//! reply back and decodes it as the hook's typed output. Whatever goes wrong
//! in there becomes a [`Failure`], and the caller gets the hook's
//! fail-closed decision with a [`Diagnostic`].

use std::cell::Cell;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use rulehost_sdk::wire::{ABI_VERSION, Hook, HookKind, Reply, Timestamp, WireJson, json};
use wasmtime::{
    ExternType, Func, FuncType, Global, Instance, InstancePre, Memory, ModuleExport,
    ResourceLimiter, Store, Trap, TypedFunc, ValRaw,
};

use crate::engine::{Engine, Isolation, Limits, PolicyId};
use crate::error::LoadError;
use crate::evaluation::{Diagnostic, Evaluation, Failure, FailureKind};
use crate::meter::{self, BudgetExhausted};
use crate::operators::Settings;

const ABI_VERSION_EXPORT: &str = "rulehost_abi_version";
pub(crate) const ALLOC_EXPORT: &str = "rulehost_alloc";
const MEMORY_EXPORT: &str = "memory";
const HOOK_SIGNATURE: &str = "(i32, i32) -> i64";

/// The store data of one instance: its limits and what it logged.
pub(crate) struct Sandbox {
    memory_bytes: usize,
    table_elements: usize,
    pub(crate) logs: Vec<String>,
}

/// A policy tried to grow its memory past the limit.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {limit} bytes exceeded: the policy asked for {desired} bytes")]
struct MemoryLimitHit {
    desired: usize,
    limit: usize,
}

/// A policy tried to grow a table past the limit.
#[derive(Debug, thiserror::Error)]
#[error("table limit of {limit} elements exceeded: the policy asked for {desired} elements")]
struct TableLimitHit {
    desired: usize,
    limit: usize,
}

impl ResourceLimiter for Sandbox {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            return Err(wasmtime::Error::new(MemoryLimitHit {
                desired,
                limit: self.memory_bytes,
            }));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            return Err(wasmtime::Error::new(TableLimitHit {
                desired,
                limit: self.table_elements,
            }));
        }
        Ok(true)
    }
}

/// Where a module's ABI exports are, resolved once at load.
struct Exports {
    memory: ModuleExport,
    /// The CPU budget global the host added (`crate::meter`).
    budget: ModuleExport,
    alloc: ModuleExport,
    hooks: [Option<ModuleExport>; Hook::ALL.len()],
}

/// A loaded, validated policy set. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct PolicySet {
    inner: Arc<Inner>,
}

/// A policy set's idle instances: warm ones in reuse mode; in fresh mode,
/// used ones whose stores make the next instances.
///
/// One of them waits in a slot that an evaluation empties and fills with
/// one atomic operation each; the others wait behind a lock, which costs
/// two each. While evaluations of a policy set do not overlap, all go
/// through the slot: here its swap and exchange took 11 ns where the
/// lock's pop and push took 23, of a reused instance's microsecond. Boxed,
/// an instance moves in and out as a pointer.
#[derive(Default)]
struct WarmPool {
    /// Null, or an instance from `Box::into_raw` that only the slot owns.
    slot: AtomicPtr<Warm>,
    #[expect(
        clippy::vec_box,
        reason = "an instance moves between the slot and the list as the box it is"
    )]
    rest: Mutex<Vec<Box<Warm>>>,
}

// `AtomicPtr` is `Send` and `Sync` whatever it points to; the instances
// it hands from thread to thread must be `Send` themselves.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<Warm>();
};

impl WarmPool {
    fn take(&self) -> Option<Box<Warm>> {
        let taken = self.slot.swap(ptr::null_mut(), Ordering::Acquire);
        if !taken.is_null() {
            // SAFETY: the slot held a pointer from `Box::into_raw` (`give`)
            // that it alone owned, and the swap took it out.
            return Some(unsafe { Box::from_raw(taken) });
        }
        self.rest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    /// Keeps `warm` idle, unless `max` instances are idle already.
    fn give(&self, warm: Box<Warm>, max: usize) {
        let raw = Box::into_raw(warm);
        let kept =
            self.slot
                .compare_exchange(ptr::null_mut(), raw, Ordering::Release, Ordering::Relaxed);
        if kept.is_err() {
            // SAFETY: the slot was full and took nothing: `raw` is still
            // the box given, owned here alone.
            let warm = unsafe { Box::from_raw(raw) };
            let mut rest = self.rest.lock().unwrap_or_else(PoisonError::into_inner);
            if rest.len() + 1 < max {
                rest.push(warm);
            }
        }
    }

    /// Takes out every idle instance.
    #[expect(clippy::vec_box, reason = "the boxes as the pool holds them")]
    fn drain(&self) -> Vec<Box<Warm>> {
        let mut all =
            std::mem::take(&mut *self.rest.lock().unwrap_or_else(PoisonError::into_inner));
        let taken = self.slot.swap(ptr::null_mut(), Ordering::Acquire);
        if !taken.is_null() {
            // SAFETY: as in `take`.
            all.push(unsafe { Box::from_raw(taken) });
        }
        all
    }
}

impl Drop for WarmPool {
    fn drop(&mut self) {
        let taken = *self.slot.get_mut();
        if !taken.is_null() {
            // SAFETY: as in `take`; nothing else can reach a pool being dropped.
            drop(unsafe { Box::from_raw(taken) });
        }
    }
}

/// How many instances a store makes in fresh mode before it is dropped, and
/// their slots in the engine's instance pool with it. Each evaluation still
/// gets a new instance; the store's setup and teardown, and the reset of
/// the instances' memories, are shared by this many (about a tenth of a
/// fresh evaluation, measured with the bundled subscription policy).
const FRESH_INSTANCES_PER_STORE: u32 = 8;

/// The idle pools of an engine's policy sets. The instances they keep hold
/// slots of the engine's instance pool; a policy set that finds the pool
/// full takes them back, so that many operators' policy sets can share one
/// pool.
#[derive(Default)]
pub(crate) struct WarmPools(Mutex<Vec<Weak<WarmPool>>>);

impl WarmPools {
    fn register(&self, pool: &Arc<WarmPool>) {
        let mut pools = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        pools.retain(|pool| pool.strong_count() > 0);
        pools.push(Arc::downgrade(pool));
    }

    /// Drops the warm instances of every pool but `keep`; how many.
    fn evict_all_but(&self, keep: &Arc<WarmPool>) -> usize {
        let pools: Vec<Arc<WarmPool>> = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|pool| !Arc::ptr_eq(pool, keep))
            .collect();
        // Taken out of each pool, then dropped, with no lock held.
        let evicted: Vec<Box<Warm>> = pools.iter().flat_map(|pool| pool.drain()).collect();
        evicted.len()
    }
}

struct Inner {
    id: PolicyId,
    sha256: String,
    /// Keeps the module in the engine's in-memory cache while this policy
    /// set lives (`pre` holds the module itself).
    _module: Arc<wasmtime::Module>,
    pre: InstancePre<Sandbox>,
    exports: Exports,
    limits: Limits,
    isolation: Isolation,
    /// Idle instances, warm in reuse mode, used in fresh mode.
    warm: Arc<WarmPool>,
    max_warm: usize,
    /// The engine's idle pools, this one among them.
    pools: Arc<WarmPools>,
}

impl std::fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicySet")
            .field("id", &self.inner.id)
            .field("sha256", &self.inner.sha256)
            .finish_non_exhaustive()
    }
}

impl PolicySet {
    pub(crate) fn new(
        engine: &Engine,
        id: PolicyId,
        sha256: String,
        module: Arc<wasmtime::Module>,
    ) -> Result<Self, LoadError> {
        let limits = engine.config.limits;
        for import in module.imports() {
            // `budget_exhausted` is the host's own, added at load; a module
            // that imported it itself was refused then.
            let allowed = ["log", meter::EXHAUSTED_IMPORT];
            if import.module() != "rulehost" || !allowed.contains(&import.name()) {
                return Err(LoadError::DisallowedImport {
                    module: import.module().to_owned(),
                    name: import.name().to_owned(),
                });
            }
        }
        let memory = memory_export(&module)?;
        let budget = module
            .get_export_index(meter::BUDGET_EXPORT)
            .ok_or(LoadError::MissingExport(meter::BUDGET_EXPORT))?;
        check_func(&module, ABI_VERSION_EXPORT, "() -> i32")?
            .ok_or(LoadError::MissingExport(ABI_VERSION_EXPORT))?;
        let alloc = check_func(&module, ALLOC_EXPORT, "(i32) -> i32")?
            .ok_or(LoadError::MissingExport(ALLOC_EXPORT))?;
        let mut hooks = [None, None, None, None];
        for (slot, hook) in hooks.iter_mut().zip(Hook::ALL) {
            *slot = check_func(&module, hook.export_name(), HOOK_SIGNATURE)?;
        }
        if hooks[..3].iter().all(Option::is_none) {
            return Err(LoadError::NoHooks);
        }
        let pre = engine
            .linker
            .instantiate_pre(&module)
            .map_err(|e| LoadError::Instantiate(format!("{e:#}")))?;

        let max_warm = std::thread::available_parallelism().map_or(4, |n| n.get() * 2);
        let policy = PolicySet {
            inner: Arc::new(Inner {
                id,
                sha256,
                _module: module.clone(),
                pre,
                exports: Exports {
                    memory,
                    budget,
                    alloc,
                    hooks,
                },
                limits,
                isolation: engine.config.isolation,
                warm: Arc::default(),
                max_warm,
                pools: Arc::clone(&engine.warm_pools),
            }),
        };
        engine.warm_pools.register(&policy.inner.warm);
        let mut first = policy
            .inner
            .instantiate()
            .map_err(|f| LoadError::Instantiate(f.message))?;
        let version = first
            .abi_version(&module)
            .map_err(|f| LoadError::Instantiate(f.message))?;
        if version != ABI_VERSION {
            return Err(LoadError::AbiVersion {
                found: version,
                supported: ABI_VERSION,
            });
        }
        policy.inner.release(first);
        Ok(policy)
    }

    /// The policy set's name and version.
    pub fn id(&self) -> &PolicyId {
        &self.inner.id
    }

    /// The sha256 of the wasm binary, in lowercase hex.
    pub fn sha256(&self) -> &str {
        &self.inner.sha256
    }

    /// Whether the module exports `hook`.
    pub fn has_hook(&self, hook: Hook) -> bool {
        self.inner.exports.hooks[hook_index(hook)].is_some()
    }

    /// Evaluates hook `H` for `operator` with its settings. Always returns a
    /// decision: the policy's, or `H`'s fail-closed one with a diagnostic.
    pub fn evaluate<H: HookKind>(
        &self,
        operator: &str,
        now: Timestamp,
        settings: &Settings,
        input: &H::Input,
    ) -> Evaluation<H::Output> {
        // The thread's envelope buffer, taken out for the evaluation so that
        // nothing holds it if the evaluation should come back to this thread.
        let mut envelope = ENVELOPE.take();
        write_envelope(&mut envelope, now, settings, input);
        let evaluation = self.evaluate_envelope::<H>(operator, &envelope);
        if envelope.capacity() <= KEPT_ENVELOPE_BYTES {
            envelope.clear();
            ENVELOPE.set(envelope);
        }
        evaluation
    }

    /// Evaluates hook `H` on an envelope already encoded as JSON.
    pub(crate) fn evaluate_envelope<H: HookKind>(
        &self,
        operator: &str,
        envelope: &[u8],
    ) -> Evaluation<H::Output> {
        let (result, fuel_used, logs) = self.inner.run(H::HOOK, envelope, decode::<H::Output>);
        let (decision, diagnostic) = match result {
            Ok(decision) => (decision, None),
            Err(failure) => {
                let diagnostic = Diagnostic {
                    operator: operator.to_owned(),
                    policy: self.inner.id.clone(),
                    hook: H::HOOK,
                    kind: failure.kind,
                    message: failure.message,
                };
                (
                    H::refusal("policy_failure", diagnostic.to_string()),
                    Some(diagnostic),
                )
            }
        };
        Evaluation {
            policy: self.inner.id.clone(),
            hook: H::HOOK,
            decision,
            diagnostic,
            fuel_used,
            logs,
        }
    }

    /// Runs a hook on a raw envelope and returns the raw reply bytes, for
    /// comparing with expected JSON (`crate::testing`).
    pub(crate) fn evaluate_raw(&self, hook: Hook, envelope: &[u8]) -> Result<Vec<u8>, String> {
        let (result, _, _) = self.inner.run(hook, envelope, |bytes| Ok(bytes.to_vec()));
        result.map_err(|failure| failure.message)
    }
}

impl Inner {
    /// One evaluation: an instance (fresh or warm), the call, the decoded
    /// reply; plus the fuel spent and the lines logged.
    fn run<T>(
        &self,
        hook: Hook,
        envelope: &[u8],
        decode: impl FnOnce(&[u8]) -> Result<T, Failure>,
    ) -> (Result<T, Failure>, u64, Vec<String>) {
        let index = hook_index(hook);
        let Some(export) = &self.exports.hooks[index] else {
            let message = format!("policy `{}` does not export hook `{hook}`", self.id);
            return (
                Err(Failure::new(FailureKind::MissingHook, message)),
                0,
                Vec::new(),
            );
        };
        let warm = match (self.warm.take(), self.isolation) {
            (Some(warm), Isolation::Reuse) => Ok(warm),
            // A clean instance in a store that has run others: their
            // memories, tables and globals are theirs, out of its reach.
            (Some(mut warm), Isolation::Fresh) => match warm.renew(self) {
                Ok(()) => Ok(warm),
                Err(_) => {
                    drop(warm);
                    self.instantiate()
                }
            },
            (None, _) => self.instantiate(),
        };
        let mut warm = match warm {
            Ok(warm) => warm,
            Err(failure) => return (Err(failure), 0, Vec::new()),
        };
        let (result, used) = warm.call(index, export, envelope, decode);
        let logs = std::mem::take(&mut warm.store.data_mut().logs);
        if result.is_ok() {
            self.release(warm);
        }
        (result, used, logs)
    }

    /// A new instance in a new store. When the engine's instance pool is
    /// full, the other policy sets' idle stores are dropped and it is tried
    /// once more; instances in use stay.
    fn instantiate(&self) -> Result<Box<Warm>, Failure> {
        match Warm::new(self) {
            Err(failure)
                if failure.kind == FailureKind::Instantiation
                    && self.pools.evict_all_but(&self.warm) > 0 =>
            {
                Warm::new(self)
            }
            other => other,
        }
    }

    /// Keeps a healthy instance warm in reuse mode, and in fresh mode its
    /// store for the next instances; drops it otherwise.
    fn release(&self, warm: Box<Warm>) {
        let keep = match self.isolation {
            Isolation::Reuse => true,
            Isolation::Fresh => warm.instances < FRESH_INSTANCES_PER_STORE,
        };
        if keep {
            self.warm.give(warm, self.max_warm);
        }
    }
}

/// An instance with its store and the exports every call needs.
struct Warm {
    limits: Limits,
    store: Store<Sandbox>,
    instance: Instance,
    memory: Memory,
    /// The CPU budget left, counted down by the module.
    budget: Global,
    /// `rulehost_alloc`, of type `(i32) -> i32`.
    alloc: Func,
    /// Hook functions, of type `(i32, i32) -> i64`, resolved on first use.
    hooks: [Option<Func>; Hook::ALL.len()],
    /// How many instances the store has made, this one included.
    instances: u32,
}

impl Warm {
    fn new(inner: &Inner) -> Result<Box<Self>, Failure> {
        let limits = inner.limits;
        let mut store = Store::new(
            inner.pre.module().engine(),
            Sandbox {
                memory_bytes: limits.memory_bytes,
                table_elements: limits.table_elements,
                logs: Vec::new(),
            },
        );
        store.limiter(|sandbox| sandbox as &mut dyn ResourceLimiter);
        let (instance, memory, budget, alloc) = instance_in(&mut store, inner)?;
        Ok(Box::new(Warm {
            limits,
            store,
            instance,
            memory,
            budget,
            alloc,
            hooks: [const { None }; Hook::ALL.len()],
            instances: 1,
        }))
    }

    /// Replaces the instance with a new one in the same store: what a new
    /// store would cost, without its setup and teardown.
    fn renew(&mut self, inner: &Inner) -> Result<(), Failure> {
        let (instance, memory, budget, alloc) = instance_in(&mut self.store, inner)?;
        self.instance = instance;
        self.memory = memory;
        self.budget = budget;
        self.alloc = alloc;
        self.hooks = [const { None }; Hook::ALL.len()];
        self.instances += 1;
        Ok(())
    }

    /// The fuel spent of the full budget, which `rulehost_alloc` sets
    /// (`crate::meter`): all of it once it is exhausted.
    fn fuel_used(&mut self) -> u64 {
        let left = self.budget.get(&mut self.store).i64().unwrap_or(0);
        u64::try_from(self.limits.full_budget() - left.max(0)).unwrap_or(0)
    }

    fn abi_version(&mut self, module: &wasmtime::Module) -> Result<i32, Failure> {
        let export = module
            .get_export_index(ABI_VERSION_EXPORT)
            .ok_or_else(|| Failure::new(FailureKind::Instantiation, "no ABI version export"))?;
        let version = func(&mut self.store, self.instance, &export)?;
        let version: TypedFunc<(), i32> = version
            .typed(&self.store)
            .map_err(|e| Failure::new(FailureKind::Instantiation, e.to_string()))?;
        version.call(&mut self.store, ()).map_err(|e| {
            let failure = classify(&e, self.limits);
            Failure::new(
                failure.kind,
                format!("`{ABI_VERSION_EXPORT}` failed: {}", failure.message),
            )
        })
    }

    /// Calls `rulehost_alloc` or a hook: `args` holds the parameters and
    /// receives the one result.
    fn call_export(&mut self, func: Func, args: &mut [ValRaw]) -> Result<(), Failure> {
        // SAFETY: the exports' types were checked at load (`check_func`):
        // `(i32) -> i32` for the allocator, `(i32, i32) -> i64` for a hook.
        // `args` holds that many `i32` parameters, all plain integers, and
        // has room for the one result. Checked once there rather than on
        // every instance, as `Func::typed` would.
        unsafe { func.call_unchecked(&mut self.store, args) }.map_err(|e| classify(&e, self.limits))
    }

    /// Calls hook `index` on `envelope`: the decoded reply and the fuel
    /// spent, none when the call failed before the module ran.
    fn call<T>(
        &mut self,
        index: usize,
        export: &ModuleExport,
        envelope: &[u8],
        decode: impl FnOnce(&[u8]) -> Result<T, Failure>,
    ) -> (Result<T, Failure>, u64) {
        let (hook, len) = match self.prepare(index, export, envelope) {
            Ok(prepared) => prepared,
            Err(failure) => return (Err(failure), 0),
        };
        let result = self.enter(hook, len, envelope, decode);
        (result, self.fuel_used())
    }

    /// The hook's function and the envelope's length, checked before the
    /// module runs.
    fn prepare(
        &mut self,
        index: usize,
        export: &ModuleExport,
        envelope: &[u8],
    ) -> Result<(Func, u32), Failure> {
        let hook = match self.hooks[index] {
            Some(hook) => hook,
            None => *self.hooks[index].insert(func(&mut self.store, self.instance, export)?),
        };
        let len = u32::try_from(envelope.len()).map_err(|_| {
            Failure::new(
                FailureKind::Instantiation,
                format!("input of {} bytes is too large", envelope.len()),
            )
        })?;
        Ok((hook, len))
    }

    /// `rulehost_alloc`, which starts the module on its full budget, the
    /// envelope written, the hook and its reply decoded.
    fn enter<T>(
        &mut self,
        hook: Func,
        len: u32,
        envelope: &[u8],
        decode: impl FnOnce(&[u8]) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let limits = self.limits;
        let mut alloc = [ValRaw::u32(len)];
        self.call_export(self.alloc, &mut alloc)?;
        let ptr = alloc[0].get_u32();
        self.memory.write(&mut self.store, ptr as usize, envelope).map_err(|_| {
            Failure::new(
                FailureKind::OutputOutOfBounds,
                format!(
                    "`{ALLOC_EXPORT}` returned {ptr} for {len} bytes, outside the policy's memory of {} bytes",
                    self.memory.data_size(&self.store)
                ),
            )
        })?;
        let mut call = [ValRaw::u32(ptr), ValRaw::u32(len)];
        self.call_export(hook, &mut call)?;
        let packed = call[0].get_u64();
        let (out_ptr, out_len) = ((packed >> 32) as usize, (packed & 0xffff_ffff) as usize);
        if out_len > limits.output_bytes {
            return Err(Failure::new(
                FailureKind::OutputTooLarge,
                format!(
                    "output of {out_len} bytes exceeds the limit of {} bytes",
                    limits.output_bytes
                ),
            ));
        }
        let data = self.memory.data(&self.store);
        let bytes = data.get(out_ptr..out_ptr + out_len).ok_or_else(|| {
            Failure::new(
                FailureKind::OutputOutOfBounds,
                format!(
                    "output at {out_ptr} of {out_len} bytes lies outside the policy's memory of {} bytes",
                    data.len()
                ),
            )
        })?;
        decode(bytes)
    }
}

/// A new instance of the policy set's module in `store`, with its memory,
/// budget and allocator exports.
fn instance_in(
    store: &mut Store<Sandbox>,
    inner: &Inner,
) -> Result<(Instance, Memory, Global, Func), Failure> {
    let limits = inner.limits;
    let instance = inner
        .pre
        .instantiate(&mut *store)
        .map_err(|e| classify(&e, limits))?;
    let memory = instance
        .get_module_export(&mut *store, &inner.exports.memory)
        .and_then(|e| e.into_memory())
        .ok_or_else(|| Failure::new(FailureKind::Instantiation, "the memory export vanished"))?;
    let budget = instance
        .get_module_export(&mut *store, &inner.exports.budget)
        .and_then(|e| e.into_global())
        .ok_or_else(|| Failure::new(FailureKind::Instantiation, "the budget export vanished"))?;
    let alloc = func(store, instance, &inner.exports.alloc)?;
    Ok((instance, memory, budget, alloc))
}

/// The function export `export` of `instance`, whose type was checked at
/// load.
fn func(
    store: &mut Store<Sandbox>,
    instance: Instance,
    export: &ModuleExport,
) -> Result<Func, Failure> {
    instance
        .get_module_export(&mut *store, export)
        .and_then(|e| e.into_func())
        .ok_or_else(|| Failure::new(FailureKind::Instantiation, "a checked export vanished"))
}

/// Turns a wasmtime error from instantiation or a call into a failure, by
/// the type of what caused it.
fn classify(error: &wasmtime::Error, limits: Limits) -> Failure {
    if let Some(hit) = error.downcast_ref::<MemoryLimitHit>() {
        return Failure::new(FailureKind::MemoryLimit, hit.to_string());
    }
    if let Some(hit) = error.downcast_ref::<TableLimitHit>() {
        return Failure::new(FailureKind::TableLimit, hit.to_string());
    }
    if error.downcast_ref::<BudgetExhausted>().is_some() {
        return Failure::new(
            FailureKind::FuelExhausted,
            format!("cpu budget of {} fuel exhausted", limits.fuel),
        );
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::StackOverflow) => {
            Failure::new(FailureKind::StackOverflow, "call stack exhausted")
        }
        Some(trap) => Failure::new(FailureKind::Trap, trap.to_string()),
        None => Failure::new(FailureKind::Instantiation, format!("{error:#}")),
    }
}

/// Decodes a reply as the hook's output type.
pub(crate) fn decode<T: WireJson>(bytes: &[u8]) -> Result<T, Failure> {
    match json::read_reply_bytes::<T>(bytes) {
        Ok(Reply::Ok(output)) => Ok(output),
        Ok(Reply::Error(message)) => Err(Failure::new(
            FailureKind::PolicyError,
            format!("the policy reported an error: {message}"),
        )),
        Err(json::ReadError::NotUtf8(error)) => Err(Failure::new(
            FailureKind::MalformedOutput,
            format!("output is not valid UTF-8: {error}"),
        )),
        Err(json::ReadError::Json(error)) => Err(Failure::new(
            FailureKind::MalformedOutput,
            format!("output is not a valid reply: {error}"),
        )),
    }
}

/// Largest envelope buffer a thread keeps for its next evaluation; a larger
/// one, written for an unusually large input, is freed.
const KEPT_ENVELOPE_BYTES: usize = 64 << 10;

thread_local! {
    /// Each thread writes its envelopes into one buffer, which saves an
    /// allocation per evaluation.
    static ENVELOPE: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Appends the JSON envelope for one call to `buffer`; settings are
/// already JSON text.
fn write_envelope<I: WireJson>(
    buffer: &mut Vec<u8>,
    now: Timestamp,
    settings: &Settings,
    input: &I,
) {
    buffer.reserve(512);
    // Writing to a Vec cannot fail; the wire types fail only on a time
    // RFC 3339 cannot express (a negative year), which no time the API or
    // the store reads can be.
    json::write_envelope(buffer, now, settings.as_raw().get(), input)
        .expect("wire types serialize to JSON");
}

fn hook_index(hook: Hook) -> usize {
    Hook::ALL
        .iter()
        .position(|h| *h == hook)
        .expect("every hook is in Hook::ALL")
}

fn memory_export(module: &wasmtime::Module) -> Result<ModuleExport, LoadError> {
    let ty = module
        .get_export(MEMORY_EXPORT)
        .ok_or(LoadError::MissingExport(MEMORY_EXPORT))?;
    let ExternType::Memory(_) = ty else {
        return Err(LoadError::ExportType {
            name: MEMORY_EXPORT.to_owned(),
            found: describe(&ty),
            expected: "memory",
        });
    };
    module
        .get_export_index(MEMORY_EXPORT)
        .ok_or(LoadError::MissingExport(MEMORY_EXPORT))
}

/// The export `name`, checked to be a function with `signature`; `None`
/// when the module does not export it.
fn check_func(
    module: &wasmtime::Module,
    name: &str,
    signature: &'static str,
) -> Result<Option<ModuleExport>, LoadError> {
    let Some(ty) = module.get_export(name) else {
        return Ok(None);
    };
    let found = describe(&ty);
    if found != signature {
        return Err(LoadError::ExportType {
            name: name.to_owned(),
            found,
            expected: signature,
        });
    }
    Ok(module.get_export_index(name))
}

fn describe(ty: &ExternType) -> String {
    match ty {
        ExternType::Func(func) => signature(func),
        ExternType::Memory(_) => "memory".to_owned(),
        ExternType::Table(_) => "table".to_owned(),
        ExternType::Global(_) => "global".to_owned(),
        ExternType::Tag(_) => "tag".to_owned(),
    }
}

fn signature(func: &FuncType) -> String {
    let params: Vec<String> = func.params().map(|p| p.to_string()).collect();
    let results: Vec<String> = func.results().map(|r| r.to_string()).collect();
    format!(
        "({}) -> {}",
        params.join(", "),
        match results.len() {
            0 => "()".to_owned(),
            1 => results[0].clone(),
            _ => format!("({})", results.join(", ")),
        }
    )
}

#[cfg(test)]
mod tests {
    use rulehost_sdk::wire::{Authorize, AuthorizeDecision, AuthorizeInput, Timestamp};

    use super::write_envelope;
    use crate::{Engine, EngineConfig, PolicyId, PolicySet, Settings};

    fn subscription() -> PolicySet {
        let engine = Engine::new(EngineConfig::default()).expect("engine");
        let wasm = crate::bundled::get("subscription").expect("bundled");
        engine
            .load(PolicyId::new("subscription", 1), wasm)
            .expect("loads")
    }

    fn at(text: &str) -> Timestamp {
        text.parse().expect("a valid time")
    }

    /// The README's SUB-4 request, a contract of a locked customer, with
    /// another action: every action but the four SUB-4 names is refused
    /// with a reason that quotes the action.
    fn locked_contract(action: &str) -> AuthorizeInput {
        let request = include_str!("../../examples/requests/sub4-locked-change-contract.json");
        let mut input: AuthorizeInput = serde_json::from_str(request).expect("the request");
        input.action = action.to_owned();
        input
    }

    /// The compiled SDK scans strings sixteen bytes at a time and checks
    /// only the ones that are not ASCII: a character beyond ASCII at any
    /// place in a string, first or last of a block or across two, is read
    /// as it was sent.
    #[test]
    fn non_ascii_strings_are_read_at_every_offset_inside_the_module() {
        let policy = subscription();
        for at_offset in 0..40 {
            for extra in ["ä", "€", "𝄞"] {
                let action = format!("{}{extra}ndern", "x".repeat(at_offset));
                let input = locked_contract(&action);
                let evaluation = policy.evaluate::<Authorize>(
                    "op",
                    at("2026-11-22T10:00:00Z"),
                    &Settings::empty(),
                    &input,
                );
                assert_eq!(evaluation.diagnostic, None, "{action}");
                let AuthorizeDecision::Deny { reason, .. } = evaluation.decision else {
                    panic!("{action}: {:?}", evaluation.decision);
                };
                assert!(
                    reason.starts_with(&format!("`{action}` is refused")),
                    "{action}: {reason}"
                );
            }
        }
    }

    /// Bytes that are not UTF-8 inside a string are found although the
    /// module no longer checks the envelope as a whole: the error names
    /// the first bad byte, as `std::str::from_utf8` does.
    #[test]
    fn a_byte_that_is_not_utf8_in_a_string_is_an_error_naming_it_inside_the_module() {
        let policy = subscription();
        let mut envelope = Vec::new();
        write_envelope(
            &mut envelope,
            at("2026-11-22T10:00:00Z"),
            &Settings::empty(),
            &locked_contract(&"x".repeat(40)),
        );
        let first = envelope
            .windows(40)
            .position(|w| w == "x".repeat(40).as_bytes())
            .expect("the action is in the envelope");
        for offset in 0..40 {
            for bad in [&[0xff][..], &[0xc3, b'x'], &[0xe2, 0x82]] {
                let mut bytes = envelope.clone();
                let at_byte = first + offset;
                bytes[at_byte..at_byte + bad.len()].copy_from_slice(bad);
                let reply = policy
                    .evaluate_raw(rulehost_sdk::wire::Hook::Authorize, &bytes)
                    .expect("the module answers");
                let expected = std::str::from_utf8(&bytes).expect_err("not UTF-8");
                let reply: serde_json::Value = serde_json::from_slice(&reply).expect("JSON");
                assert_eq!(
                    reply,
                    serde_json::json!({
                        "error": format!("cannot read `authorize` input: not UTF-8: {expected}")
                    }),
                    "{bad:?} at {offset}"
                );
            }
        }
    }
}
