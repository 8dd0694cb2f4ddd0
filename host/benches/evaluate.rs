//! The SUB-4 decision "customer locked, action `change_contract`" (a deny)
//! and an allowed action (`end_contract`), five ways side by side:
//!
//! - (a) `wasm_fresh`: the compiled subscription policy via the host, a
//!   clean instance per evaluation;
//! - (b) `wasm_reuse`: the same with warm instances;
//! - (c) `native_json`: the same policy code compiled natively, called with
//!   the same JSON envelope and decoding the same reply;
//! - (d) `native_typed`: the policy's Rust method, no JSON;
//! - (e) `cedar`: the equivalent rule in Cedar, policies and entities built
//!   once, the request built per call.
//!
//! Beside them, for reference, the host's own share: (f) `floor_fresh` and
//! (g) `floor_reuse` evaluate the same input with a policy written in WAT
//! that reads nothing and answers a constant `allow`. What remains of (a)
//! and (b) above them is the policy reading the envelope, deciding and
//! writing its reply.
//!
//! Run with `cargo bench -p rulehost --bench evaluate`. After criterion's
//! report it prints the medians and the ratios a/e, b/e and b/c; then the
//! same from rounds that time every way in turn (see [`paired_rounds`]),
//! which a noisy machine disturbs less.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime};

use cedar_policy::{
    Authorizer, Context as CedarContext, Decision, Entities, EntityId, EntityTypeName, EntityUid,
    Request,
};
use criterion::Criterion;
use rulehost::wire::{
    Actor, Authorize, AuthorizeDecision, AuthorizeInput, Hook, Lock, Reply, Subject, SubjectKind,
    Timestamp, json,
};
use rulehost::{Engine, EngineConfig, Isolation, PolicyId, PolicySet, Settings};
use rulehost_policy_subscription::Subscription;
use rulehost_sdk::{Context, Policy};

const WAYS: [&str; 7] = [
    "wasm_fresh",
    "wasm_reuse",
    "native_json",
    "native_typed",
    "cedar",
    "floor_fresh",
    "floor_reuse",
];
const CASES: [(&str, &str, bool); 2] = [
    ("sub4_locked_change_contract", "change_contract", false),
    ("sub4_locked_end_contract", "end_contract", true),
];

const CEDAR_POLICIES: &str = r#"
permit(principal, action, resource) unless { resource.customer.locked };
permit(
  principal,
  action in [Action::"end_contract", Action::"terminate_extraordinarily", Action::"annul_contract", Action::"postpone_contract"],
  resource
);
"#;

/// A policy that answers `allow` without reading its input: what an
/// evaluation costs the host (encoding the envelope, the instance, the
/// calls, decoding the reply) when the policy itself costs nothing.
const FLOOR_POLICY: &str = r#"(module
  (memory (export "memory") 1)
  (data (i32.const 0) "{\"ok\":{\"decision\":\"allow\"}}")
  (func (export "rulehost_abi_version") (result i32) i32.const 1)
  (func (export "rulehost_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "rulehost_authorize") (param i32 i32) (result i64) i64.const 27))"#;

fn now() -> Timestamp {
    "2026-11-22T10:00:00Z".parse().expect("timestamp")
}

fn input(action: &str) -> AuthorizeInput {
    let mut customer = Subject::new(SubjectKind::Customer, "c-1");
    customer.locks.push(Lock {
        id: Some("l-1".into()),
        kind: "full".into(),
        actor: Actor::staff("anna"),
        reason: "payment_default".into(),
        message: None,
        since: "2026-11-01T00:00:00Z".parse().expect("timestamp"),
        until: None,
    });
    let mut contract = Subject::new(SubjectKind::Contract, "k-1");
    contract.parent = Some(Box::new(customer));
    AuthorizeInput {
        action: action.into(),
        actor: Actor::staff("anna"),
        subject: contract,
        acknowledgements: vec![],
        params: serde_json::Value::Null,
    }
}

fn load(isolation: Isolation, name: &str, module: &[u8]) -> PolicySet {
    let engine = Engine::new(EngineConfig {
        isolation,
        ..EngineConfig::default()
    })
    .expect("engine");
    engine
        .load(PolicyId::new(name, 1), module)
        .expect("policy loads")
}

/// The native policy called exactly as the host calls the wasm one: encode
/// the envelope, run the policy's JSON entry point, decode the reply, with
/// the JSON code the host uses.
fn native_json(now: Timestamp, input: &AuthorizeInput, settings: &str) -> AuthorizeDecision {
    let mut envelope = Vec::with_capacity(512);
    json::write_envelope(&mut envelope, now, settings, input).expect("encode");
    let reply = rulehost_sdk::handle_json::<Subscription>(Hook::Authorize, &envelope);
    match json::read_reply_bytes::<AuthorizeDecision>(&reply).expect("decode") {
        Reply::Ok(decision) => decision,
        Reply::Error(message) => panic!("{message}"),
    }
}

struct Cedar {
    authorizer: Authorizer,
    policies: cedar_policy::PolicySet,
    entities: Entities,
    staff: EntityTypeName,
    action: EntityTypeName,
    contract: EntityTypeName,
}

impl Cedar {
    fn new() -> Self {
        let entities = serde_json::json!([
            { "uid": { "type": "Customer", "id": "c-1" }, "attrs": { "locked": true }, "parents": [] },
            { "uid": { "type": "Contract", "id": "k-1" }, "attrs": { "customer": { "__entity": { "type": "Customer", "id": "c-1" } } }, "parents": [] },
            { "uid": { "type": "Staff", "id": "anna" }, "attrs": {}, "parents": [] }
        ]);
        Cedar {
            authorizer: Authorizer::new(),
            policies: CEDAR_POLICIES.parse().expect("cedar policies"),
            entities: Entities::from_json_value(entities, None).expect("cedar entities"),
            staff: EntityTypeName::from_str("Staff").expect("type"),
            action: EntityTypeName::from_str("Action").expect("type"),
            contract: EntityTypeName::from_str("Contract").expect("type"),
        }
    }

    /// Builds the request from the same strings the other ways get.
    fn is_allowed(&self, input: &AuthorizeInput) -> bool {
        let uid = |kind: &EntityTypeName, id: &str| {
            EntityUid::from_type_name_and_id(kind.clone(), EntityId::from_str(id).expect("id"))
        };
        let request = Request::new(
            uid(&self.staff, &input.actor.id),
            uid(&self.action, &input.action),
            uid(&self.contract, &input.subject.id),
            CedarContext::empty(),
            None,
        )
        .expect("request");
        self.authorizer
            .is_authorized(&request, &self.policies, &self.entities)
            .decision()
            == Decision::Allow
    }
}

/// One way of deciding a case, as criterion and the paired rounds run it.
type Way<'a> = (&'static str, Box<dyn Fn() + 'a>);

/// Rounds of the paired measurement, and how long each way runs per round.
const ROUNDS: usize = 31;
const ROUND_TIME: Duration = Duration::from_millis(15);

fn main() {
    let started = SystemTime::now();
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("criterion-evaluate");
    let mut criterion = Criterion::default()
        .output_directory(&out_dir)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
        .configure_from_args();

    let wasm = rulehost::bundled::get("subscription").expect("bundled subscription policy");
    let floor = FLOOR_POLICY.as_bytes();
    // The ways through the host: (name, policy set, whether it decides as
    // the subscription policy does; the floor always allows).
    let through_host = [
        (WAYS[0], load(Isolation::Fresh, "subscription", wasm), true),
        (WAYS[1], load(Isolation::Reuse, "subscription", wasm), true),
        (WAYS[5], load(Isolation::Fresh, "floor", floor), false),
        (WAYS[6], load(Isolation::Reuse, "floor", floor), false),
    ];
    let settings = Settings::empty();
    // The time, like the input, is made once: every way gets it as a value,
    // as the native typed way gets it in its context.
    let now = now();
    let ctx = Context {
        now,
        settings: rulehost_policy_subscription::Settings::default(),
    };
    let cedar = Cedar::new();

    // As criterion decides: `cargo bench` passes `--bench`; without it
    // (`cargo test --benches`, which runs each way once) or with `--list`
    // nothing is timed.
    let args: Vec<String> = std::env::args().collect();
    let timing = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--list");
    let mut paired = Vec::new();
    for (name, action, allowed) in CASES {
        let input = input(action);
        let evaluate = |policy: &PolicySet| {
            policy.evaluate::<Authorize>("bench", black_box(now), &settings, black_box(&input))
        };
        // Every way must reach the same decision before it is timed.
        let check = |decision: &AuthorizeDecision| {
            assert_eq!(decision.is_allow(), allowed, "{name}: {decision:?}")
        };
        for (way, policy, decides) in &through_host {
            let evaluation = evaluate(policy);
            assert_eq!(evaluation.diagnostic, None, "{name}: {way}");
            if *decides {
                check(&evaluation.decision);
            } else {
                assert!(evaluation.decision.is_allow(), "{name}: {way}");
            }
        }
        check(&native_json(now, &input, "{}"));
        check(&Subscription::authorize(&ctx, &input));
        assert_eq!(cedar.is_allowed(&input), allowed, "{name}: cedar");

        // In the order of `WAYS`.
        let host = |i: usize| -> Way<'_> {
            let (way, policy, _) = &through_host[i];
            (
                way,
                Box::new(move || {
                    black_box(evaluate(policy));
                }),
            )
        };
        let ways: [Way<'_>; 7] = [
            host(0),
            host(1),
            (
                WAYS[2],
                Box::new(|| {
                    black_box(native_json(black_box(now), black_box(&input), "{}"));
                }),
            ),
            (
                WAYS[3],
                Box::new(|| {
                    black_box(Subscription::authorize(&ctx, black_box(&input)));
                }),
            ),
            (
                WAYS[4],
                Box::new(|| {
                    black_box(cedar.is_allowed(black_box(&input)));
                }),
            ),
            host(2),
            host(3),
        ];
        let mut group = criterion.benchmark_group(name);
        for (way, run) in &ways {
            group.bench_function(*way, |b| b.iter(run));
        }
        group.finish();
        if timing {
            paired.push((name, paired_rounds(&ways)));
        }
    }
    criterion.final_summary();
    // Not timed, criterion's estimates on disk would be an earlier run's.
    if timing {
        report(&out_dir, started, &paired);
    }
}

/// Times the ways in turn, round after round, each for about
/// [`ROUND_TIME`] per round and starting each round with the next way:
/// whatever else the machine does then slows all of them alike, so a ratio
/// taken within a round holds better than one between criterion's runs,
/// which are seconds apart. Returns each round's nanoseconds per decision,
/// way by way.
fn paired_rounds(ways: &[Way<'_>]) -> Vec<Vec<f64>> {
    let iterations: Vec<u32> = ways
        .iter()
        .map(|(_, run)| {
            let start = Instant::now();
            let mut n = 0u32;
            while start.elapsed() < ROUND_TIME / 4 {
                run();
                n += 1;
            }
            n.saturating_mul(4).max(1)
        })
        .collect();
    let mut rounds = vec![vec![0.0; ways.len()]; ROUNDS];
    for (r, round) in rounds.iter_mut().enumerate() {
        for k in 0..ways.len() {
            let i = (r + k) % ways.len();
            let start = Instant::now();
            for _ in 0..iterations[i] {
                (ways[i].1)();
            }
            round[i] = start.elapsed().as_nanos() as f64 / f64::from(iterations[i]);
        }
    }
    rounds
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Criterion's median estimate for one benchmark, in nanoseconds, when it
/// was measured by this run (`since` its start), not left by an earlier one.
fn median_ns(out_dir: &Path, group: &str, way: &str, since: SystemTime) -> Option<f64> {
    let path: PathBuf = out_dir.join(group).join(way).join("new/estimates.json");
    if std::fs::metadata(&path).and_then(|m| m.modified()).ok()? < since {
        return None;
    }
    let estimates: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    estimates["median"]["point_estimate"].as_f64()
}

fn report(out_dir: &Path, since: SystemTime, paired: &[(&str, Vec<Vec<f64>>)]) {
    println!("\nmedians (ns per decision) and ratios");
    for (group, _, _) in CASES {
        let medians: Vec<Option<f64>> = WAYS
            .iter()
            .map(|way| median_ns(out_dir, group, way, since))
            .collect();
        let [
            Some(a),
            Some(b),
            Some(c),
            Some(d),
            Some(e),
            Some(f),
            Some(g),
        ] = medians[..]
        else {
            println!("{group}: not all seven ways ran in this run (filtered?)");
            continue;
        };
        println!(
            "{group}: (a) wasm_fresh {a:.0}  (b) wasm_reuse {b:.0}  (c) native_json {c:.0}  (d) native_typed {d:.0}  (e) cedar {e:.0}"
        );
        println!(
            "{group}: a/e {:.2}  b/e {:.2}  b/c {:.2}",
            a / e,
            b / e,
            b / c
        );
        println!(
            "{group}: host floor (f) fresh {f:.0}  (g) reuse {g:.0}; the policy's share (a-f) {:.0}  (b-g) {:.0}",
            a - f,
            b - g
        );
    }
    println!("\npaired: {ROUNDS} rounds of every way in turn; medians over the rounds");
    for (group, rounds) in paired {
        let way = |i: usize| median(rounds.iter().map(|round| round[i]).collect());
        let ratio = |x: usize, y: usize| median(rounds.iter().map(|r| r[x] / r[y]).collect());
        let ns: Vec<String> = WAYS
            .iter()
            .enumerate()
            .map(|(i, name)| format!("{name} {:.0}", way(i)))
            .collect();
        println!("{group}: {}", ns.join("  "));
        println!(
            "{group}: a/e {:.2}  b/e {:.2}  b/c {:.2}",
            ratio(0, 4),
            ratio(1, 4),
            ratio(1, 2)
        );
    }
}
