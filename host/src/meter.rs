//! The CPU budget, counted by the module itself.
//!
//! Before a module is compiled the host rewrites it so that it counts its
//! own work in a global of its own, `rulehost:budget`, and calls the host's
//! `rulehost`.`budget_exhausted`, which ends the call, when the count goes
//! below zero. Every function body charges, on entry, the
//! instructions it holds outside its loops; every loop charges, at the top
//! of each iteration, the instructions of its body outside loops nested in
//! it. Between two charges control only moves forward, so no instruction
//! runs more often than it was charged for: the budget bounds the work a
//! call can do, and, the count depending only on the path taken, the same
//! input exhausts it at the same point on every replay. `memory.copy`,
//! `memory.fill`, `memory.init` and their table counterparts also charge one
//! unit per [`BULK_BYTES_PER_UNIT`] elements they move, as a loop would.
//!
//! The budget global is appended after the module's own globals and is
//! reachable from no code the author wrote (a valid module only names the
//! globals it declares); the host reads it after a call. The export that
//! begins every call from the host (`rulehost_alloc`) is given an added
//! function in front, which sets the budget to its full value and calls
//! the module's own: an evaluation starts with the whole budget without a
//! call from the host into the store to set the global, and the module's
//! code, which can only call the functions it declares, cannot reset it.
//! The import is appended after the module's own imported functions, whose
//! indices stay; the module's own functions move up by one.
//!
//! wasmtime's own fuel counts more finely (the instructions actually run),
//! but keeps its count in a register across each function, saving and
//! reloading it around every call, adding at every block and checking at
//! every function entry and loop header. Here a charge is one subtraction
//! from the global and one test: in the subscription policy's SUB-4 deny,
//! metering's share of the module's time went from 31–42% to 16–21%
//! (README, "Benchmarks").

use crate::error::LoadError;
use wasm_encoder::reencode::{self, Reencode};
use wasm_encoder::{ConstExpr, ExportKind, GlobalType, SectionId, ValType};
use wasmparser::{
    CompositeInnerType, ExternalKind, FunctionBody, KnownCustom, Operator, Parser, Payload, TypeRef,
};

/// The export under which the host finds the budget of an instrumented
/// module; a module that exports this name itself is refused.
pub(crate) const BUDGET_EXPORT: &str = "rulehost:budget";

/// The host function, in module `rulehost`, an instrumented module calls
/// when its budget is spent; a module that imports it itself is refused.
pub(crate) const EXHAUSTED_IMPORT: &str = "budget_exhausted";

/// Elements (bytes for memories) a bulk memory or table instruction may
/// move per unit charged.
pub(crate) const BULK_BYTES_PER_UNIT: u64 = 16;

/// Changes whenever instrumentation changes what it writes, so a compiled
/// module cached by an earlier version is not reused.
pub(crate) const VERSION: u32 = 2;

/// `rulehost`.`budget_exhausted()`, the host function an instrumented
/// module calls when its budget is spent: ends the call with
/// [`BudgetExhausted`].
pub(crate) fn budget_exhausted() -> wasmtime::Result<()> {
    Err(wasmtime::Error::new(BudgetExhausted))
}

/// A module spent its CPU budget (`rulehost`.`budget_exhausted`).
#[derive(Debug, thiserror::Error)]
#[error("cpu budget exhausted")]
pub(crate) struct BudgetExhausted;

/// Rewrites the valid module `wasm` to count its work against a budget of
/// `budget`: what a start function runs under, and what every call of the
/// export `resets_at` (when the module defines that function) starts with.
///
/// # Errors
///
/// The module already exports [`BUDGET_EXPORT`] or imports
/// [`EXHAUSTED_IMPORT`], or is not the valid module it should be.
pub(crate) fn instrument(wasm: &[u8], budget: i64, resets_at: &str) -> Result<Vec<u8>, LoadError> {
    let shape = Shape::read(wasm, resets_at)?;
    let mut metering = Metering {
        budget,
        reset: shape.reset,
        resets_at: resets_at.to_owned(),
        global: shape.imported_globals + shape.defined_globals,
        exhausted: shape.imported_funcs,
        exhausted_type: shape.types,
        params: shape.params,
        memory64: shape.memory64,
        table64: shape.table64,
        next_body: 0,
        added: Added::default(),
    };
    let mut module = wasm_encoder::Module::new();
    metering
        .parse_core_module(&mut module, Parser::new(0), wasm)
        .map_err(|e| LoadError::Compile(format!("cannot add CPU metering: {e}")))?;
    Ok(module.finish())
}

/// What instrumentation needs to know about a module before rewriting it.
struct Shape {
    /// Types in the type section, counting each member of a group.
    types: u32,
    imported_funcs: u32,
    imported_globals: u32,
    defined_globals: u32,
    /// The number of parameters of each function the module defines, in
    /// order: its body's first scratch local comes after them and its
    /// declared locals.
    params: Vec<u32>,
    /// The function to add in front of the export `resets_at`, when the
    /// module defines that function.
    reset: Option<Reset>,
    /// For each memory, imported ones first, whether it is 64-bit.
    memory64: Vec<bool>,
    /// The same for tables.
    table64: Vec<bool>,
}

impl Shape {
    fn read(wasm: &[u8], resets_at: &str) -> Result<Self, LoadError> {
        let invalid = |e: wasmparser::BinaryReaderError| LoadError::Compile(e.to_string());
        let mut type_params: Vec<Option<u32>> = Vec::new();
        // The type of each function the module defines, and the one
        // exported as `resets_at`.
        let mut defined_types: Vec<u32> = Vec::new();
        let mut resets: Option<u32> = None;
        let mut shape = Shape {
            types: 0,
            imported_funcs: 0,
            imported_globals: 0,
            defined_globals: 0,
            params: Vec::new(),
            reset: None,
            memory64: Vec::new(),
            table64: Vec::new(),
        };
        for payload in Parser::new(0).parse_all(wasm) {
            match payload.map_err(invalid)? {
                Payload::TypeSection(types) => {
                    for group in types {
                        for ty in group.map_err(invalid)?.into_types() {
                            type_params.push(match &ty.composite_type.inner {
                                CompositeInnerType::Func(f) => Some(f.params().len() as u32),
                                _ => None,
                            });
                        }
                    }
                }
                Payload::ImportSection(imports) => {
                    for import in imports.into_imports() {
                        let import = import.map_err(invalid)?;
                        if (import.module, import.name) == ("rulehost", EXHAUSTED_IMPORT) {
                            return Err(LoadError::DisallowedImport {
                                module: import.module.to_owned(),
                                name: import.name.to_owned(),
                            });
                        }
                        match import.ty {
                            TypeRef::Func(_) | TypeRef::FuncExact(_) => shape.imported_funcs += 1,
                            TypeRef::Global(_) => shape.imported_globals += 1,
                            TypeRef::Memory(memory) => shape.memory64.push(memory.memory64),
                            TypeRef::Table(table) => shape.table64.push(table.table64),
                            _ => {}
                        }
                    }
                }
                Payload::FunctionSection(functions) => {
                    for ty in functions {
                        let ty = ty.map_err(invalid)?;
                        let params = type_params.get(ty as usize).copied().flatten();
                        shape.params.push(params.ok_or_else(|| {
                            LoadError::Compile(format!("type {ty} is not a function type"))
                        })?);
                        defined_types.push(ty);
                    }
                }
                Payload::MemorySection(memories) => {
                    for memory in memories {
                        shape.memory64.push(memory.map_err(invalid)?.memory64);
                    }
                }
                Payload::TableSection(tables) => {
                    for table in tables {
                        shape.table64.push(table.map_err(invalid)?.ty.table64);
                    }
                }
                Payload::GlobalSection(globals) => shape.defined_globals = globals.count(),
                Payload::ExportSection(exports) => {
                    for export in exports {
                        let export = export.map_err(invalid)?;
                        if export.name == BUDGET_EXPORT {
                            return Err(LoadError::ReservedExport(BUDGET_EXPORT));
                        }
                        if export.name == resets_at && export.kind == ExternalKind::Func {
                            resets = Some(export.index);
                        }
                    }
                }
                _ => {}
            }
        }
        shape.types = type_params.len() as u32;
        // An imported function gets no reset: the host refuses a module
        // whose allocator is not its own.
        let defined = |function: u32| function.checked_sub(shape.imported_funcs);
        shape.reset = resets.and_then(defined).map(|at| Reset {
            function: shape.imported_funcs + at,
            ty: defined_types[at as usize],
            params: shape.params[at as usize],
            // After the imports, `budget_exhausted` and the module's own.
            index: shape.imported_funcs + 1 + shape.params.len() as u32,
        });
        Ok(shape)
    }
}

/// The rewriting: every section as it was, plus the budget global, its
/// export, the import that ends a call and the charges in the code.
struct Metering {
    budget: i64,
    /// The function added in front of the export `resets_at`.
    reset: Option<Reset>,
    resets_at: String,
    /// The budget global's index.
    global: u32,
    /// The index of the imported `budget_exhausted`: the module's imported
    /// functions come before it, its own after.
    exhausted: u32,
    /// The index of `budget_exhausted`'s type, `() -> ()`.
    exhausted_type: u32,
    params: Vec<u32>,
    memory64: Vec<bool>,
    table64: Vec<bool>,
    next_body: usize,
    added: Added,
}

/// The function that sets the budget to its full value and calls the
/// module's `function` with its parameters.
#[derive(Clone, Copy)]
struct Reset {
    /// The module's function, by its index in the module as written.
    function: u32,
    ty: u32,
    params: u32,
    /// Its own index: after every other function.
    index: u32,
}

/// Which of the entries instrumentation adds have been written.
#[derive(Default)]
struct Added {
    ty: bool,
    import: bool,
    global: bool,
}

impl Metering {
    fn add_type(&mut self, types: &mut wasm_encoder::TypeSection) {
        types.ty().function([], []);
        self.added.ty = true;
    }

    fn add_import(&mut self, imports: &mut wasm_encoder::ImportSection) {
        imports.import(
            "rulehost",
            EXHAUSTED_IMPORT,
            wasm_encoder::EntityType::Function(self.exhausted_type),
        );
        self.added.import = true;
    }

    fn add_global(&mut self, globals: &mut wasm_encoder::GlobalSection) {
        globals.global(
            GlobalType {
                val_type: ValType::I64,
                mutable: true,
                shared: false,
            },
            &ConstExpr::i64_const(self.budget),
        );
        self.added.global = true;
    }
}

/// Where a section goes in a module, for adding one the module lacks;
/// custom sections go anywhere and rank nowhere.
fn rank(section: SectionId) -> u8 {
    match section {
        SectionId::Type => 1,
        SectionId::Import => 2,
        SectionId::Function => 3,
        SectionId::Table => 4,
        SectionId::Memory => 5,
        SectionId::Tag => 6,
        SectionId::Global => 7,
        SectionId::Export => 8,
        SectionId::Start => 9,
        SectionId::Element => 10,
        SectionId::DataCount => 11,
        SectionId::Code => 12,
        SectionId::Data => 13,
        _ => 0,
    }
}

/// Scratch locals a function body gets for its charges.
struct Scratch {
    /// `i64`: the budget after a charge.
    left: u32,
    /// `i32`: the length operand of a bulk instruction on a 32-bit memory
    /// or table.
    len32: u32,
    /// `i64`: the same on a 64-bit one.
    len64: u32,
}

impl Reencode for Metering {
    type Error = String;

    fn function_index(&mut self, func: u32) -> Result<u32, reencode::Error<Self::Error>> {
        Ok(if func >= self.exhausted {
            func + 1
        } else {
            func
        })
    }

    fn parse_type_section(
        &mut self,
        types: &mut wasm_encoder::TypeSection,
        section: wasmparser::TypeSectionReader<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        reencode::utils::parse_type_section(self, types, section)?;
        self.add_type(types);
        Ok(())
    }

    fn parse_import_section(
        &mut self,
        imports: &mut wasm_encoder::ImportSection,
        section: wasmparser::ImportSectionReader<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        reencode::utils::parse_import_section(self, imports, section)?;
        self.add_import(imports);
        Ok(())
    }

    fn parse_global_section(
        &mut self,
        globals: &mut wasm_encoder::GlobalSection,
        section: wasmparser::GlobalSectionReader<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        reencode::utils::parse_global_section(self, globals, section)?;
        self.add_global(globals);
        Ok(())
    }

    /// Adds the sections a module lacks for what instrumentation adds, each
    /// before the first section that follows it in a module.
    fn intersperse_section_hook(
        &mut self,
        module: &mut wasm_encoder::Module,
        _after: Option<SectionId>,
        before: Option<SectionId>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        let next = before.map_or(u8::MAX, rank);
        if !self.added.ty && next > rank(SectionId::Type) {
            let mut types = wasm_encoder::TypeSection::new();
            self.add_type(&mut types);
            module.section(&types);
        }
        if !self.added.import && next > rank(SectionId::Import) {
            let mut imports = wasm_encoder::ImportSection::new();
            self.add_import(&mut imports);
            module.section(&imports);
        }
        if !self.added.global && next > rank(SectionId::Global) {
            let mut globals = wasm_encoder::GlobalSection::new();
            self.add_global(&mut globals);
            module.section(&globals);
        }
        Ok(())
    }

    /// Custom sections as they were, except two kinds: a name section is
    /// renumbered for the added import, or dropped when it does not parse
    /// (names only label backtraces, and wasmtime ignores a bad one too);
    /// DWARF (`.debug_*`) is dropped, its code offsets no longer being
    /// those of the code.
    fn parse_custom_section(
        &mut self,
        module: &mut wasm_encoder::Module,
        section: wasmparser::CustomSectionReader<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        match section.as_known() {
            KnownCustom::Name(names) => {
                if let Ok(names) = self.custom_name_section(names) {
                    module.section(&names);
                }
            }
            _ if section.name().starts_with(".debug_") => {}
            _ => {
                module.section(&self.custom_section(section)?);
            }
        }
        Ok(())
    }

    fn parse_function_section(
        &mut self,
        functions: &mut wasm_encoder::FunctionSection,
        section: wasmparser::FunctionSectionReader<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        reencode::utils::parse_function_section(self, functions, section)?;
        if let Some(reset) = self.reset {
            functions.function(reset.ty);
        }
        Ok(())
    }

    fn parse_code_section(
        &mut self,
        code: &mut wasm_encoder::CodeSection,
        section: wasmparser::CodeSectionReader<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        reencode::utils::parse_code_section(self, code, section)?;
        if let Some(reset) = self.reset {
            let mut function = wasm_encoder::Function::new([]);
            let mut sink = function.instructions();
            sink.i64_const(self.budget).global_set(self.global);
            for param in 0..reset.params {
                sink.local_get(param);
            }
            sink.call(self.function_index(reset.function)?).end();
            code.function(&function);
        }
        Ok(())
    }

    fn parse_export(
        &mut self,
        exports: &mut wasm_encoder::ExportSection,
        export: wasmparser::Export<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        match self.reset {
            Some(reset) if export.name == self.resets_at && export.kind == ExternalKind::Func => {
                exports.export(export.name, ExportKind::Func, reset.index);
                Ok(())
            }
            _ => reencode::utils::parse_export(self, exports, export),
        }
    }

    fn parse_export_section(
        &mut self,
        exports: &mut wasm_encoder::ExportSection,
        section: wasmparser::ExportSectionReader<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        reencode::utils::parse_export_section(self, exports, section)?;
        exports.export(BUDGET_EXPORT, ExportKind::Global, self.global);
        Ok(())
    }

    fn parse_function_body(
        &mut self,
        code: &mut wasm_encoder::CodeSection,
        body: FunctionBody<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        let params = *self.params.get(self.next_body).ok_or_else(|| {
            reencode::Error::UserError("more function bodies than functions".to_owned())
        })?;
        self.next_body += 1;
        let mut locals = Vec::new();
        let mut count = params;
        for pair in body.get_locals_reader()? {
            let (n, ty) = pair?;
            count += n;
            locals.push((n, self.val_type(ty)?));
        }
        let scratch = Scratch {
            left: count,
            len32: count + 1,
            len64: count + 2,
        };
        locals.extend([(1, ValType::I64), (1, ValType::I32), (1, ValType::I64)]);
        let charges = charges(&body)?;
        let mut function = wasm_encoder::Function::new(locals);
        let mut next_charge = charges.iter();
        self.charge(&mut function, &scratch, next_charge.next().copied());
        let mut reader = body.get_operators_reader()?;
        while !reader.eof() {
            let op = reader.read()?;
            let bulk = bulk_length(&op, &self.memory64, &self.table64);
            let opens_loop = matches!(op, Operator::Loop { .. });
            if let Some(is_64) = bulk {
                self.charge_bulk(&mut function, &scratch, is_64);
            }
            function.instruction(&self.instruction(op)?);
            if opens_loop {
                self.charge(&mut function, &scratch, next_charge.next().copied());
            }
        }
        code.function(&function);
        Ok(())
    }
}

impl Metering {
    /// Subtracts `units` from the budget and traps when it went below zero.
    fn charge(&self, f: &mut wasm_encoder::Function, scratch: &Scratch, units: Option<u64>) {
        let units = i64::try_from(units.unwrap_or(0)).unwrap_or(i64::MAX);
        f.instructions()
            .global_get(self.global)
            .i64_const(units)
            .i64_sub();
        self.store_and_test(f, scratch);
    }

    /// Before a bulk instruction, whose length operand is on top of the
    /// stack: subtracts a unit per [`BULK_BYTES_PER_UNIT`] of it, leaving
    /// the operand in place.
    fn charge_bulk(&self, f: &mut wasm_encoder::Function, scratch: &Scratch, is_64: bool) {
        let mut sink = f.instructions();
        if is_64 {
            sink.local_tee(scratch.len64)
                .global_get(self.global)
                .local_get(scratch.len64);
        } else {
            sink.local_tee(scratch.len32)
                .global_get(self.global)
                .local_get(scratch.len32)
                .i64_extend_i32_u();
        }
        sink.i64_const(BULK_BYTES_PER_UNIT.trailing_zeros() as i64)
            .i64_shr_u()
            .i64_sub();
        self.store_and_test(f, scratch);
    }

    /// Stores the budget left, on top of the stack, and ends the call if it
    /// is below zero. `budget_exhausted` never returns; the `unreachable`
    /// after it is for a host that would.
    fn store_and_test(&self, f: &mut wasm_encoder::Function, scratch: &Scratch) {
        f.instructions()
            .local_tee(scratch.left)
            .global_set(self.global)
            .local_get(scratch.left)
            .i64_const(0)
            .i64_lt_s()
            .if_(wasm_encoder::BlockType::Empty)
            .call(self.exhausted)
            .unreachable()
            .end();
    }
}

/// Whether `op` moves a number of elements given by its last operand, and
/// if so whether that operand is an `i64`: it is when the memory or table
/// written (and, for a copy, the one read) is 64-bit; segments' lengths are
/// `i32`.
fn bulk_length(op: &Operator<'_>, memory64: &[bool], table64: &[bool]) -> Option<bool> {
    let wide = |kinds: &[bool], index: u32| kinds.get(index as usize).copied().unwrap_or(false);
    match *op {
        Operator::MemoryCopy { dst_mem, src_mem } => {
            Some(wide(memory64, dst_mem) && wide(memory64, src_mem))
        }
        Operator::MemoryFill { mem } => Some(wide(memory64, mem)),
        Operator::TableCopy {
            dst_table,
            src_table,
        } => Some(wide(table64, dst_table) && wide(table64, src_table)),
        Operator::TableFill { table } => Some(wide(table64, table)),
        Operator::MemoryInit { .. } | Operator::TableInit { .. } => Some(false),
        _ => None,
    }
}

/// The units each charge point of a body charges, in the order they come:
/// the function's entry first, then each loop's header. An instruction is
/// counted against the innermost loop holding it, or the entry.
fn charges(body: &FunctionBody<'_>) -> Result<Vec<u64>, wasmparser::BinaryReaderError> {
    let mut charges = vec![0u64];
    // For each open block, loop, if or try: the charge point it counts to.
    let mut owners = vec![0usize];
    let mut reader = body.get_operators_reader()?;
    while !reader.eof() {
        let op = reader.read()?;
        let owner = owners.last().copied().unwrap_or(0);
        charges[owner] += 1;
        match op {
            Operator::Loop { .. } => {
                owners.push(charges.len());
                charges.push(0);
            }
            Operator::Block { .. }
            | Operator::If { .. }
            | Operator::Try { .. }
            | Operator::TryTable { .. } => owners.push(owner),
            Operator::End | Operator::Delegate { .. } => {
                owners.pop();
            }
            _ => {}
        }
    }
    Ok(charges)
}

#[cfg(test)]
mod tests {
    use wasmtime::{Engine, Instance, Linker, Module, Store, Val};

    use super::*;

    /// What the test host's `budget_exhausted` ends a call with.
    #[derive(Debug, thiserror::Error)]
    #[error("exhausted")]
    struct Exhausted;

    /// An instance of `wat` instrumented for `budget`, and its budget
    /// global, with `rulehost`.`log` as a no-op.
    fn instance(wat: &str, budget: i64) -> (Store<()>, Instance) {
        let wasm = wat::parse_str(wat).expect("test WAT");
        let metered = instrument(&wasm, budget, RESET).expect("instruments");
        let engine = Engine::default();
        let module = Module::new(&engine, &metered).expect("instrumented module is valid");
        let mut linker = Linker::new(&engine);
        linker
            .func_wrap("rulehost", "log", |_: u32, _: u32| {})
            .and_then(|l| {
                l.func_wrap("rulehost", EXHAUSTED_IMPORT, || -> wasmtime::Result<()> {
                    Err(wasmtime::Error::new(Exhausted))
                })
            })
            .expect("host functions");
        let mut store = Store::new(&engine, ());
        let instance = linker
            .instantiate(&mut store, &module)
            .expect("instantiates");
        (store, instance)
    }

    fn left(store: &mut Store<()>, instance: &Instance) -> i64 {
        let budget = instance
            .get_global(&mut *store, BUDGET_EXPORT)
            .expect("budget export");
        budget.get(&mut *store).i64().expect("i64 budget")
    }

    const BUDGET: i64 = 1_000_000;

    /// The export the tests' modules begin a call with, when they have it.
    const RESET: &str = "begin";

    /// Counts `$n` down to zero: the entry holds `loop` and the function's
    /// `end` (2 units); each iteration the loop's seven instructions.
    const COUNTDOWN: &str = r#"(module
      (func (export "count") (param $n i32)
        (loop $l
          (local.set $n (i32.sub (local.get $n) (i32.const 1)))
          (br_if $l (local.get $n)))))"#;

    #[test]
    fn a_function_charges_its_entry_once_and_a_loop_each_iteration() {
        for n in [1u32, 10, 1000] {
            let (mut store, instance) = instance(COUNTDOWN, BUDGET);
            let count = instance
                .get_typed_func::<u32, ()>(&mut store, "count")
                .expect("count");
            count.call(&mut store, n).expect("within budget");
            let used = BUDGET - left(&mut store, &instance);
            assert_eq!(used, 2 + 7 * i64::from(n), "n = {n}");
        }
    }

    #[test]
    fn a_spent_budget_ends_the_call_at_the_same_point_every_time() {
        let spend = || {
            let (mut store, instance) = instance(COUNTDOWN, 100);
            let count = instance
                .get_typed_func::<u32, ()>(&mut store, "count")
                .expect("count");
            let error = count.call(&mut store, 1000).expect_err("over budget");
            assert!(error.downcast_ref::<Exhausted>().is_some(), "{error:?}");
            left(&mut store, &instance)
        };
        let first = spend();
        // 100 - 2 = 98 = 14 iterations of 7 exactly; the 15th goes below.
        assert_eq!(first, -7);
        assert_eq!(spend(), first);
    }

    #[test]
    fn bulk_memory_charges_a_unit_per_16_bytes() {
        // Entry: two constants, `local.get`, `memory.fill`, `end`.
        let wat = r#"(module
          (memory 1)
          (func (export "fill") (param $len i32)
            (memory.fill (i32.const 0) (i32.const 0) (local.get $len))))"#;
        for (len, units) in [(0u32, 5i64), (15, 5), (16, 6), (1600, 105)] {
            let (mut store, instance) = instance(wat, BUDGET);
            let fill = instance
                .get_typed_func::<u32, ()>(&mut store, "fill")
                .expect("fill");
            fill.call(&mut store, len).expect("within budget");
            assert_eq!(BUDGET - left(&mut store, &instance), units, "len {len}");
        }
    }

    #[test]
    fn imports_globals_tables_and_calls_keep_working() {
        // The added import comes after `log`: `$two` and `$three` move up
        // by one, in calls, the table and the start function alike.
        let wat = r#"(module
          (import "rulehost" "log" (func $log (param i32 i32)))
          (memory 1)
          (global $g (mut i32) (i32.const 0))
          (table 2 funcref)
          (elem (i32.const 0) $two $three)
          (func $two (result i32) i32.const 2)
          (func $three (result i32) i32.const 3)
          (func $init (global.set $g (i32.const 40)))
          (start $init)
          (func (export "run") (result i32)
            (call $log (i32.const 0) (i32.const 0))
            (global.set $g (i32.add (global.get $g) (call $two)))
            (i32.add (global.get $g) (call_indirect (result i32) (i32.const 1)))))"#;
        let (mut store, instance) = instance(wat, BUDGET);
        let run = instance
            .get_typed_func::<(), i32>(&mut store, "run")
            .expect("run");
        assert_eq!(run.call(&mut store, ()).expect("runs"), 45);
        assert!(left(&mut store, &instance) < BUDGET);
    }

    #[test]
    fn a_module_without_imports_or_globals_gets_both() {
        let (mut store, instance) = instance(
            r#"(module (func (export "seven") (result i32) i32.const 7))"#,
            BUDGET,
        );
        let seven = instance
            .get_typed_func::<(), i32>(&mut store, "seven")
            .expect("seven");
        assert_eq!(seven.call(&mut store, ()).expect("runs"), 7);
        // `i32.const` and `end`.
        assert_eq!(left(&mut store, &instance), BUDGET - 2);
    }

    #[test]
    fn the_host_sets_the_budget_between_calls() {
        let (mut store, instance) = instance(COUNTDOWN, BUDGET);
        let count = instance
            .get_typed_func::<u32, ()>(&mut store, "count")
            .expect("count");
        let budget = instance
            .get_global(&mut store, BUDGET_EXPORT)
            .expect("budget export");
        budget.set(&mut store, Val::I64(9)).expect("mutable");
        count.call(&mut store, 1).expect("exactly the budget");
        assert_eq!(left(&mut store, &instance), 0);
        let error = count.call(&mut store, 1).expect_err("nothing left");
        assert!(error.downcast_ref::<Exhausted>().is_some(), "{error:?}");
    }

    #[test]
    fn the_export_that_begins_a_call_restores_the_budget_for_the_host_only() {
        // `spin` calls the function behind `begin` for ever: from inside
        // the module it must not reset the budget.
        let wat = r#"(module
          (func $begin (export "begin") (param $x i32) (result i32) local.get $x)
          (func (export "spin") (loop $l (drop (call $begin (i32.const 0))) (br $l))))"#;
        let (mut store, instance) = instance(wat, BUDGET);
        let budget = instance
            .get_global(&mut store, BUDGET_EXPORT)
            .expect("budget export");
        budget.set(&mut store, Val::I64(5)).expect("mutable");
        let begin = instance
            .get_typed_func::<i32, i32>(&mut store, "begin")
            .expect("begin");
        assert_eq!(begin.call(&mut store, 7).expect("runs"), 7);
        // The full budget, less `$begin`'s `local.get` and `end`.
        assert_eq!(left(&mut store, &instance), BUDGET - 2);
        let spin = instance
            .get_typed_func::<(), ()>(&mut store, "spin")
            .expect("spin");
        let error = spin.call(&mut store, ()).expect_err("spins out");
        assert!(error.downcast_ref::<Exhausted>().is_some(), "{error:?}");
        assert!(left(&mut store, &instance) < 0);
    }

    #[test]
    fn names_follow_the_functions_and_a_bad_name_section_is_dropped() {
        let wasm = wat::parse_str(
            r#"(module
              (import "rulehost" "log" (func $log (param i32 i32)))
              (func $helper (result i32) i32.const 1))"#,
        )
        .expect("test WAT");
        let names = |wasm: &[u8]| -> Vec<(u32, String)> {
            let mut found = Vec::new();
            for payload in Parser::new(0).parse_all(wasm) {
                if let Ok(Payload::CustomSection(section)) = payload
                    && let KnownCustom::Name(reader) = section.as_known()
                {
                    for name in reader.flatten() {
                        if let wasmparser::Name::Function(map) = name {
                            for naming in map.into_iter().flatten() {
                                found.push((naming.index, naming.name.to_owned()));
                            }
                        }
                    }
                }
            }
            found
        };
        let metered = instrument(&wasm, BUDGET, RESET).expect("instruments");
        // `budget_exhausted` took index 1, after `log`.
        assert_eq!(
            names(&metered),
            [(0, "log".to_owned()), (2, "helper".to_owned())]
        );

        // A name section cut short after its subsection header.
        let mut broken = wat::parse_str("(module)").expect("test WAT");
        broken.extend_from_slice(&[0, 8, 4, b'n', b'a', b'm', b'e', 1, 9, 0]);
        assert!(wasmparser::Validator::new().validate_all(&broken).is_ok());
        let metered = instrument(&broken, BUDGET, RESET).expect("instruments without the names");
        let kept = Parser::new(0).parse_all(&metered).any(|payload| {
            matches!(payload, Ok(Payload::CustomSection(section)) if section.name() == "name")
        });
        assert!(!kept);
        Module::new(&Engine::default(), &metered).expect("still a valid module");
    }

    #[test]
    fn the_host_s_names_are_refused_in_a_module() {
        let export =
            wat::parse_str(r#"(module (global (export "rulehost:budget") i64 (i64.const 0)))"#)
                .expect("test WAT");
        assert!(matches!(
            instrument(&export, BUDGET, RESET),
            Err(LoadError::ReservedExport("rulehost:budget"))
        ));
        let import = wat::parse_str(r#"(module (import "rulehost" "budget_exhausted" (func)))"#)
            .expect("test WAT");
        let error = instrument(&import, BUDGET, RESET).expect_err("refused");
        assert_eq!(
            error.to_string(),
            "imports `rulehost`.`budget_exhausted`, but a policy may import only `rulehost`.`log`"
        );
    }
}
