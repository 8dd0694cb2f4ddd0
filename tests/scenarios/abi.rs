//! ABI v1 and the sandbox: a hand-written WAT policy, load-time refusals,
//! fail-closed decisions with exact diagnostics (HOST-2), isolation modes,
//! determinism, the module cache.

use std::path::PathBuf;

use rulehost::wire::{
    Actor, AuthorizeDecision, AuthorizeInput, Billing, BillingDecision, BillingInput, Cycle,
    CycleUnit, Subject, SubjectKind,
};
use rulehost::{
    Engine, EngineConfig, Evaluation, FailureKind, Isolation, Operators, PolicyId, PolicySet,
    Settings,
};

use crate::support::{at, bundled, customer, engine, request};

/// A minimal ABI v1 module whose `rulehost_authorize` runs `body`.
fn module(body: &str, extra: &str) -> String {
    format!(
        r#"(module
             {extra}
             (memory (export "memory") 1)
             (func (export "rulehost_abi_version") (result i32) i32.const 1)
             (func (export "rulehost_alloc") (param i32) (result i32) i32.const 1024)
             (func (export "rulehost_authorize") (param i32 i32) (result i64) {body}))"#
    )
}

fn load_error(name: &str, wat: &str) -> String {
    engine(Isolation::Fresh)
        .load(PolicyId::new(name, 1), wat.as_bytes())
        .expect_err("the module must be refused")
        .to_string()
}

/// Evaluates `authorize` on a module for operator `acme` and returns the
/// decision and its diagnostic.
fn authorize_with(wat: &str, name: &str) -> (AuthorizeDecision, Option<rulehost::Diagnostic>) {
    let engine = engine(Isolation::Fresh);
    let policy = engine
        .load(PolicyId::new(name, 1), wat.as_bytes())
        .expect("module loads");
    let input = request("change_contract", Actor::staff("anna"), customer(vec![]));
    let evaluation = authorize(&policy, &input);
    (evaluation.decision, evaluation.diagnostic)
}

/// Evaluates `authorize` on `input` for operator `acme` at
/// 2026-11-22T10:00:00Z, with no settings.
fn authorize(policy: &PolicySet, input: &AuthorizeInput) -> Evaluation<AuthorizeDecision> {
    policy.evaluate::<rulehost::wire::Authorize>(
        "acme",
        at("2026-11-22T10:00:00Z"),
        &Settings::empty(),
        input,
    )
}

/// Asserts a fail-closed deny whose diagnostic is exactly `message` for a
/// module called `name` evaluated for operator `acme`.
fn assert_fails_closed(wat: &str, name: &str, kind: FailureKind, message: &str) {
    let (decision, diagnostic) = authorize_with(wat, name);
    let diagnostic = diagnostic.expect("a failing policy yields a diagnostic");
    let expected =
        format!("policy `{name}@1` failed in hook `authorize` for operator `acme`: {message}");
    assert_eq!(diagnostic.to_string(), expected);
    assert_eq!(
        (
            diagnostic.kind,
            diagnostic.operator.as_str(),
            diagnostic.policy.to_string()
        ),
        (kind, "acme", format!("{name}@1"))
    );
    assert_eq!(
        decision,
        AuthorizeDecision::deny("policy_failure", expected)
    );
}

fn wat_policy_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("wat/portal_readonly.wat")
}

#[test]
fn a_policy_written_by_hand_in_wat_is_loaded_and_decides() {
    let engine = engine(Isolation::Fresh);
    let policy = engine
        .load_file(&wat_policy_path(), Some(PolicyId::new("portal", 1)))
        .unwrap();
    let operators = Operators::new();
    operators
        .install(
            "acme",
            policy,
            &serde_json::json!({}),
            at("2026-11-22T10:00:00Z"),
        )
        .unwrap();

    let now = at("2026-11-22T10:00:00Z");
    let staff = operators
        .authorize(
            "acme",
            now,
            &request("change_customer", Actor::staff("anna"), customer(vec![])),
        )
        .unwrap();
    assert_eq!(staff.decision, AuthorizeDecision::Allow);
    assert_eq!(staff.diagnostic, None);

    let portal = operators
        .authorize(
            "acme",
            now,
            &request(
                "change_customer",
                Actor::self_service("c-1"),
                customer(vec![]),
            ),
        )
        .unwrap();
    assert_eq!(
        portal.decision,
        AuthorizeDecision::deny("self_service", "the portal may not do this")
    );
}

#[test]
fn a_hook_the_module_does_not_export_fails_closed_naming_it() {
    let engine = engine(Isolation::Fresh);
    let policy = engine
        .load_file(&wat_policy_path(), Some(PolicyId::new("portal", 1)))
        .unwrap();
    assert!(!policy.has_hook(rulehost::wire::Hook::Billing));
    let mut contract = Subject::new(SubjectKind::Contract, "k-1");
    contract.switches.insert("automatic_billing".into(), true);
    let input = BillingInput {
        contract,
        billed_until: at("2026-11-01T00:00:00Z"),
        cycle: Cycle {
            every: 1,
            unit: CycleUnit::Month,
        },
    };
    let evaluation = policy.evaluate::<Billing>(
        "acme",
        at("2026-11-22T10:00:00Z"),
        &Settings::empty(),
        &input,
    );
    let message = "policy `portal@1` failed in hook `billing` for operator `acme`: policy `portal@1` does not export hook `billing`";
    assert_eq!(
        evaluation
            .diagnostic
            .as_ref()
            .map(|d| (d.kind, d.to_string())),
        Some((FailureKind::MissingHook, message.to_owned()))
    );
    assert_eq!(
        evaluation.decision,
        BillingDecision::Skip {
            code: "policy_failure".into(),
            reason: message.into()
        }
    );
}

#[test]
fn a_module_for_another_abi_version_is_refused_at_load() {
    let wat =
        module("i64.const 0", "").replace("(result i32) i32.const 1)", "(result i32) i32.const 2)");
    assert_eq!(
        load_error("wrong-abi", &wat),
        "cannot load policy `wrong-abi@1`: exports ABI version `2`, but this host supports version `1`"
    );
}

#[test]
fn a_module_without_the_allocator_export_is_refused_at_load() {
    let wat = module("i64.const 0", "").replace("(export \"rulehost_alloc\")", "");
    assert_eq!(
        load_error("no-alloc", &wat),
        "cannot load policy `no-alloc@1`: could not find export `rulehost_alloc`"
    );
}

#[test]
fn a_module_importing_wasi_is_refused_at_load() {
    let wat = module("i64.const 0", "")
        .replace("(module", r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))"#);
    assert_eq!(
        load_error("wasi", &wat),
        "cannot load policy `wasi@1`: imports `wasi_snapshot_preview1`.`fd_write`, but a policy may import only `rulehost`.`log`"
    );
}

/// The memory limit (16 MiB by default) holds from the first page: a module
/// starting at the limit loads, one page more is refused naming both sizes.
#[test]
fn a_module_whose_memory_starts_over_the_limit_is_refused_at_load() {
    let starting_at = |pages: u32| {
        format!(
            r#"(module
                 (memory (export "memory") {pages})
                 (func (export "rulehost_abi_version") (result i32) i32.const 1)
                 (func (export "rulehost_alloc") (param i32) (result i32) i32.const 1024)
                 (func (export "rulehost_authorize") (param i32 i32) (result i64) i64.const 0))"#
        )
    };
    engine(Isolation::Fresh)
        .load(PolicyId::new("at-limit", 1), starting_at(256).as_bytes())
        .expect("16 MiB of initial memory is within the limit");
    assert_eq!(
        load_error("over-limit", &starting_at(257)),
        "cannot load policy `over-limit@1`: declares 257 pages (16842752 bytes) of initial memory, over the limit of 16777216 bytes"
    );
}

#[test]
fn a_hook_export_with_the_wrong_signature_is_refused_at_load() {
    let wat = module("i64.const 0", "")
        .replace("(param i32 i32) (result i64)", "(param i32) (result i64)");
    assert_eq!(
        load_error("bad-sig", &wat),
        "cannot load policy `bad-sig@1`: export `rulehost_authorize` has type `(i32) -> i64`, expected `(i32, i32) -> i64`"
    );
}

#[test]
fn a_file_that_is_not_wasm_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.wasm");
    std::fs::write(&path, "hello").unwrap();
    let error = engine(Isolation::Fresh)
        .load_file(&path, None)
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(&format!(
            "cannot load policy `{}`: not a wasm module: ",
            path.display()
        )),
        "{error}"
    );
}

#[test]
fn an_infinite_loop_exhausts_the_cpu_budget_and_fails_closed() {
    assert_fails_closed(
        &module("(loop (br 0)) i64.const 0", ""),
        "loop",
        FailureKind::FuelExhausted,
        "cpu budget of 2000000 fuel exhausted",
    );
}

#[test]
fn unreachable_fails_closed() {
    assert_fails_closed(
        &module("unreachable", ""),
        "trap",
        FailureKind::Trap,
        "wasm trap: wasm `unreachable` instruction executed",
    );
}

#[test]
fn a_memory_grow_bomb_hits_the_memory_limit_and_fails_closed() {
    assert_fails_closed(
        &module(
            "(loop (drop (memory.grow (i32.const 16))) (br 0)) i64.const 0",
            "",
        ),
        "bomb",
        FailureKind::MemoryLimit,
        "memory limit of 16777216 bytes exceeded: the policy asked for 16842752 bytes",
    );
}

#[test]
fn garbage_output_fails_closed() {
    assert_fails_closed(
        &module("i64.const 8", r#"(data (i32.const 0) "not json")"#),
        "garbage",
        FailureKind::MalformedOutput,
        "output is not a valid reply: expected value at line 1 column 1",
    );
}

#[test]
fn output_of_the_wrong_shape_fails_closed() {
    assert_fails_closed(
        &module(
            "i64.const 27",
            r#"(data (i32.const 0) "{\"ok\":{\"decision\":\"maybe\"}}")"#,
        ),
        "shape",
        FailureKind::MalformedOutput,
        "output is not a valid reply: unknown variant `maybe`, expected one of `allow`, `deny`, `needs_confirmation` at line 1 column 25",
    );
}

#[test]
fn invalid_utf8_output_fails_closed() {
    assert_fails_closed(
        &module("i64.const 2", r#"(data (i32.const 0) "\ff\fe")"#),
        "utf8",
        FailureKind::MalformedOutput,
        "output is not valid UTF-8: invalid utf-8 sequence of 1 bytes from index 0",
    );
}

#[test]
fn output_over_the_limit_fails_closed() {
    assert_fails_closed(
        &module("i64.const 2097152", ""),
        "huge",
        FailureKind::OutputTooLarge,
        "output of 2097152 bytes exceeds the limit of 1048576 bytes",
    );
}

#[test]
fn output_outside_memory_fails_closed() {
    assert_fails_closed(
        &module(
            "(i64.or (i64.shl (i64.const 60000) (i64.const 32)) (i64.const 10000))",
            "",
        ),
        "oob",
        FailureKind::OutputOutOfBounds,
        "output at 60000 of 10000 bytes lies outside the policy's memory of 65536 bytes",
    );
}

#[test]
fn a_policy_reporting_an_error_fails_closed_with_its_message() {
    assert_fails_closed(
        &module(
            "i64.const 24",
            r#"(data (i32.const 0) "{\"error\":\"bad input: x\"}")"#,
        ),
        "errs",
        FailureKind::PolicyError,
        "the policy reported an error: bad input: x",
    );
}

#[test]
fn the_host_keeps_serving_other_operators_after_failures() {
    let engine = engine(Isolation::Reuse);
    let operators = Operators::new();
    let now = at("2026-11-22T10:00:00Z");
    let bad = engine
        .load(
            PolicyId::new("trap", 1),
            module("unreachable", "").as_bytes(),
        )
        .unwrap();
    operators
        .install("evil", bad, &serde_json::json!({}), now)
        .unwrap();
    operators
        .install(
            "acme",
            bundled(&engine, "subscription", 1),
            &serde_json::json!({}),
            now,
        )
        .unwrap();
    let input = request("change_customer", Actor::staff("anna"), customer(vec![]));
    for _ in 0..3 {
        assert!(
            operators
                .authorize("evil", now, &input)
                .unwrap()
                .failed_closed()
        );
        let good = operators.authorize("acme", now, &input).unwrap();
        assert_eq!(
            (good.decision, good.diagnostic),
            (AuthorizeDecision::Allow, None)
        );
    }
}

/// A module that counts its `authorize` calls in a global (a static) and
/// answers the count; it traps on its third call.
fn counter() -> String {
    module(
        r#"(global.set $calls (i32.add (global.get $calls) (i32.const 1)))
           (if (i32.eq (global.get $calls) (i32.const 3)) (then unreachable))
           (i32.store8 (i32.const 50) (i32.add (i32.const 48) (global.get $calls)))
           i64.const 54"#,
        r#"(global $calls (mut i32) (i32.const 0))
           (data (i32.const 0) "{\"ok\":{\"decision\":\"deny\",\"code\":\"calls\",\"reason\":\"0\"}}")"#,
    )
}

fn call_counts(isolation: Isolation, calls: usize) -> Vec<String> {
    let engine = engine(isolation);
    let policy = engine
        .load(PolicyId::new("counter", 1), counter().as_bytes())
        .unwrap();
    let input = request("change_contract", Actor::staff("anna"), customer(vec![]));
    (0..calls)
        .map(|_| match authorize(&policy, &input).decision {
            AuthorizeDecision::Deny { code, reason } if code == "calls" => reason,
            AuthorizeDecision::Deny { code, .. } => code,
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

#[test]
fn fresh_isolation_leaks_no_state_between_evaluations() {
    // More evaluations than a store makes instances: the counter starts
    // over in every one, whichever store made it.
    assert_eq!(call_counts(Isolation::Fresh, 20), vec!["1"; 20]);
}

#[test]
fn reuse_isolation_keeps_statics_and_recycles_the_instance_after_a_trap() {
    assert_eq!(
        call_counts(Isolation::Reuse, 5),
        ["1", "2", "policy_failure", "1", "2"]
    );
}

#[test]
fn the_cpu_budget_is_deterministic_in_fresh_isolation() {
    let engine = engine(Isolation::Fresh);
    let policy = bundled(&engine, "subscription", 1);
    let input = request(
        "upgrade",
        Actor::staff("anna"),
        crate::support::contract_of(customer(vec![])),
    );
    let now = at("2026-11-22T10:00:00Z");
    let fuel: Vec<u64> = (0..3)
        .map(|_| {
            policy
                .evaluate::<rulehost::wire::Authorize>("acme", now, &Settings::empty(), &input)
                .fuel_used
        })
        .collect();
    assert!(fuel[0] > 0);
    assert_eq!(fuel, [fuel[0]; 3]);
}

/// The SDK's arena frees a decoded input in bulk, without dropping it
/// string by string, and rewinds once nothing in it is live. Were a call's
/// blocks miscounted, the arena would fill up over a few hundred calls and
/// allocations would move to the general allocator, which costs more fuel,
/// or it would rewind under live data and the decisions would change.
#[test]
fn a_warm_instance_spends_the_same_fuel_on_every_call() {
    let engine = engine(Isolation::Reuse);
    let policy = bundled(&engine, "subscription", 1);
    let locked = || {
        crate::support::contract_of(customer(vec![crate::support::lock(
            "payment_default",
            "2026-11-01T00:00:00Z",
            None,
        )]))
    };
    let cases = [
        request("change_contract", Actor::staff("anna"), locked()),
        request("end_contract", Actor::staff("anna"), locked()),
    ];
    let now = at("2026-11-22T10:00:00Z");
    let mut first: Vec<Option<(AuthorizeDecision, u64)>> = vec![None; cases.len()];
    // Round 0 is the instance's first call, which has no earlier reply to
    // free first; it spends a little less.
    for round in 0..500 {
        for (case, input) in cases.iter().enumerate() {
            let evaluation = policy.evaluate::<rulehost::wire::Authorize>(
                "acme",
                now,
                &Settings::empty(),
                input,
            );
            assert_eq!(evaluation.diagnostic, None);
            if round == 0 {
                continue;
            }
            let seen = (evaluation.decision, evaluation.fuel_used);
            let first = first[case].get_or_insert_with(|| seen.clone());
            assert_eq!(&seen, first, "round {round}, `{}`", input.action);
        }
    }
    let decisions: Vec<bool> = first
        .iter()
        .map(|seen| seen.as_ref().unwrap().0.is_allow())
        .collect();
    assert_eq!(decisions, [false, true]);
}

#[test]
fn policies_may_log_through_the_one_host_function() {
    let wat = module(
        r#"(call $log (i32.const 100) (i32.const 5)) i64.const 27"#,
        r#"(import "rulehost" "log" (func $log (param i32 i32)))
           (data (i32.const 0) "{\"ok\":{\"decision\":\"allow\"}}")
           (data (i32.const 100) "hello")"#,
    );
    let engine = engine(Isolation::Fresh);
    let policy = engine
        .load(PolicyId::new("logs", 1), wat.as_bytes())
        .unwrap();
    let input = request("x", Actor::staff("anna"), customer(vec![]));
    let evaluation = authorize(&policy, &input);
    assert_eq!(
        (evaluation.decision, evaluation.logs),
        (AuthorizeDecision::Allow, vec!["hello".to_owned()])
    );
}

#[test]
fn compiled_modules_are_cached_on_disk_across_engines() {
    let dir = tempfile::tempdir().unwrap();
    let config = cached_in(dir.path());
    let wasm = rulehost::bundled::get("subscription").unwrap();
    let first = Engine::new(config.clone()).unwrap();
    assert!(!first.is_cached(wasm));
    first.load(PolicyId::new("subscription", 1), wasm).unwrap();
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");

    // A restart: a new engine with the same configuration finds it.
    let second = Engine::new(config.clone()).unwrap();
    assert!(second.is_cached(wasm));
    let policy = second.load(PolicyId::new("subscription", 1), wasm).unwrap();
    let input = request(
        "upgrade",
        Actor::staff("anna"),
        crate::support::contract_of(customer(vec![])),
    );
    let evaluation = authorize(&policy, &input);
    assert_eq!(evaluation.decision, AuthorizeDecision::Allow);

    // Another cache directory does not have it.
    let elsewhere = tempfile::tempdir().unwrap();
    let other = Engine::new(cached_in(elsewhere.path())).unwrap();
    assert!(!other.is_cached(wasm));
}

/// The default engine configuration with its module cache in `dir`.
fn cached_in(dir: &std::path::Path) -> EngineConfig {
    EngineConfig {
        cache_dir: Some(dir.to_path_buf()),
        ..EngineConfig::default()
    }
}

/// Compiles the bundled subscription policy set with its module cache in
/// `dir`, which must be empty; the cache file written.
fn cache_subscription(dir: &std::path::Path) -> PathBuf {
    let wasm = rulehost::bundled::get("subscription").unwrap();
    Engine::new(cached_in(dir))
        .unwrap()
        .load(PolicyId::new("subscription", 1), wasm)
        .unwrap();
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.into_iter().next().unwrap()
}

/// A compiled module is machine code the host runs: a cache directory that
/// other users may write to is not used, even when it holds a valid entry,
/// and nothing is written to it.
#[test]
fn a_module_cache_others_may_write_to_is_not_used() {
    use std::os::unix::fs::PermissionsExt as _;
    let wasm = rulehost::bundled::get("subscription").unwrap();
    let own = tempfile::tempdir().unwrap();
    let entry = cache_subscription(own.path());

    let shared = tempfile::tempdir().unwrap();
    let planted = shared.path().join(entry.file_name().unwrap());
    std::fs::copy(&entry, &planted).unwrap();
    let set_mode = |mode| {
        std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(mode)).unwrap()
    };
    set_mode(0o777);
    let engine = Engine::new(cached_in(shared.path())).unwrap();
    assert!(!engine.is_cached(wasm));
    engine.load(PolicyId::new("subscription", 1), wasm).unwrap();
    let files: Vec<_> = std::fs::read_dir(shared.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files, [planted]);

    // The same entry is used once only its owner may write there.
    set_mode(0o700);
    assert!(
        Engine::new(cached_in(shared.path()))
            .unwrap()
            .is_cached(wasm)
    );
}

/// Operators running the same module share one compiled copy in memory:
/// the second load neither compiles nor reads the disk cache (whose file is
/// gone by then, and a compile would write it back). The copy is freed when
/// no policy set uses it any more.
#[test]
fn policy_sets_of_the_same_module_share_one_compiled_copy_while_used() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::new(cached_in(dir.path())).unwrap();
    let cached = || std::fs::read_dir(dir.path()).unwrap().count();
    let gym = rulehost::bundled::get("gym").unwrap();
    let first = engine.load(PolicyId::new("gym", 1), gym).unwrap();
    assert_eq!((engine.compiled_modules(), cached()), (1, 1));
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }

    let second = engine.load(PolicyId::new("gym-acme", 7), gym).unwrap();
    assert_eq!((engine.compiled_modules(), cached()), (1, 0));
    // Each set still runs on instances of its own and names itself.
    let input = request("check_in", Actor::staff("anna"), customer(vec![]));
    let [a, b] = [&first, &second].map(|policy| authorize(policy, &input));
    assert_eq!(
        (a.policy, b.policy),
        (PolicyId::new("gym", 1), PolicyId::new("gym-acme", 7))
    );
    assert_eq!(a.decision, b.decision);

    let subscription = rulehost::bundled::get("subscription").unwrap();
    let _subscription = engine
        .load(PolicyId::new("subscription", 1), subscription)
        .unwrap();
    assert_eq!((engine.compiled_modules(), cached()), (2, 1));
    drop((first, second));
    assert_eq!(engine.compiled_modules(), 1);
    engine.load(PolicyId::new("gym", 1), gym).unwrap();
    assert_eq!(cached(), 2, "compiled again once no policy set used it");
}

/// The module cache does not grow for ever. A prune removes the compiled
/// modules no host has loaded for the given time, whatever engine
/// configuration wrote them, and partial files left by writes that never
/// finished. It keeps what a policy set of the engine uses, however long ago
/// it was loaded, and files that are not the cache's. A load from the cache
/// counts as a use.
#[test]
fn a_module_cache_prune_removes_what_no_host_loaded_for_the_given_time() {
    use std::time::{Duration, SystemTime};
    let day = Duration::from_secs(24 * 60 * 60);
    let dir = tempfile::tempdir().unwrap();
    let files = || {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        files
    };
    let set_used = |path: &PathBuf, at: SystemTime| {
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(at).unwrap();
    };
    let used = |path: &PathBuf| std::fs::metadata(path).unwrap().modified().unwrap();
    let long_ago = SystemTime::now() - 60 * day;

    let engine = Engine::new(cached_in(dir.path())).unwrap();
    let gym_wasm = rulehost::bundled::get("gym").unwrap();
    let subscription_wasm = rulehost::bundled::get("subscription").unwrap();
    let gym = engine.load(PolicyId::new("gym", 1), gym_wasm).unwrap();
    let [gym_file] = <[PathBuf; 1]>::try_from(files()).unwrap();
    drop(engine.load(PolicyId::new("subscription", 1), subscription_wasm));
    let subscription_file = files().into_iter().find(|f| *f != gym_file).unwrap();
    let name = subscription_file.file_name().unwrap().to_str().unwrap();
    let (sha256, _) = name.split_once('-').unwrap();
    let other_configuration = dir.path().join(format!("{sha256}-0123456789abcdef.cwasm"));
    std::fs::copy(&subscription_file, &other_configuration).unwrap();
    let crashed_write = dir.path().join(format!("{name}.partial-4242"));
    let writing_now = dir.path().join(format!("{name}.partial-4343"));
    let not_ours = dir.path().join("notes.txt");
    for file in [&crashed_write, &writing_now, &not_ours] {
        std::fs::write(file, b"partial").unwrap();
    }
    for file in [
        &gym_file,
        &subscription_file,
        &other_configuration,
        &crashed_write,
        &not_ours,
    ] {
        set_used(file, long_ago);
    }
    let removed_bytes: u64 = [&subscription_file, &other_configuration, &crashed_write]
        .iter()
        .map(|file| std::fs::metadata(file).unwrap().len())
        .sum();

    let pruned = engine.prune_module_cache(30 * day).unwrap();
    assert_eq!(
        (pruned.removed, pruned.removed_bytes, pruned.kept),
        (3, removed_bytes, 1)
    );
    let mut kept = vec![gym_file.clone(), writing_now, not_ours];
    kept.sort();
    assert_eq!(files(), kept);
    assert!(
        used(&gym_file) > SystemTime::now() - day,
        "a module in use is marked used by the prune"
    );

    // Unused again for 60 days, and no policy set holds it: it goes.
    drop(gym);
    set_used(&gym_file, long_ago);
    assert_eq!(engine.prune_module_cache(30 * day).unwrap().removed, 1);
    assert!(!gym_file.exists());

    // Another host loading a module from the cache marks it used.
    engine.load(PolicyId::new("gym", 1), gym_wasm).unwrap();
    set_used(&gym_file, long_ago);
    let restarted = Engine::new(cached_in(dir.path())).unwrap();
    assert!(restarted.is_cached(gym_wasm));
    assert!(used(&gym_file) > SystemTime::now() - day);
    assert_eq!(engine.prune_module_cache(30 * day).unwrap().removed, 0);

    // An engine without a cache directory says so.
    let error = Engine::new(EngineConfig::default())
        .unwrap()
        .prune_module_cache(day)
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "module cache: no module cache directory is configured"
    );
}

#[test]
fn a_corrupt_cache_entry_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = rulehost::bundled::get("subscription").unwrap();
    let entry = cache_subscription(dir.path());
    std::fs::write(&entry, b"garbage").unwrap();
    let engine = Engine::new(cached_in(dir.path())).unwrap();
    assert!(!engine.is_cached(wasm));
    engine.load(PolicyId::new("subscription", 1), wasm).unwrap();
    assert!(engine.is_cached(wasm));
}

#[test]
fn evaluations_run_from_many_threads_at_once() {
    for isolation in [Isolation::Fresh, Isolation::Reuse] {
        let engine = engine(isolation);
        let operators = std::sync::Arc::new(Operators::new());
        let now = at("2026-11-22T10:00:00Z");
        operators
            .install(
                "acme",
                bundled(&engine, "subscription", 1),
                &serde_json::json!({}),
                now,
            )
            .unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let operators = operators.clone();
                std::thread::spawn(move || {
                    let locked = customer(vec![crate::support::lock(
                        "fraud",
                        "2026-11-01T00:00:00Z",
                        None,
                    )]);
                    for i in 0..50 {
                        let (action, allowed) = if (i + t) % 2 == 0 {
                            ("end_contract", true)
                        } else {
                            ("upgrade", false)
                        };
                        let input = request(
                            action,
                            Actor::staff("anna"),
                            crate::support::contract_of(locked.clone()),
                        );
                        let evaluation = operators.authorize("acme", now, &input).unwrap();
                        assert_eq!(
                            evaluation.decision.is_allow(),
                            allowed,
                            "{action}: {:?}",
                            evaluation.decision
                        );
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
    }
}

#[test]
fn the_engine_and_policy_sets_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Engine>();
    check::<rulehost::PolicySet>();
    check::<Operators>();
}
