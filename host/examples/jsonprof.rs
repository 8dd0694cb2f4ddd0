use rulehost::wire::*;
use rulehost_policy_subscription::Subscription;
use rulehost_sdk::{Context, Policy};
use serde_json::value::RawValue;
use std::hint::black_box;
use std::time::Instant;

fn now() -> Timestamp {
    "2026-11-22T10:00:00Z".parse().unwrap()
}
fn input(action: &str) -> AuthorizeInput {
    let mut customer = Subject::new(SubjectKind::Customer, "c-1");
    customer.locks.push(Lock {
        id: Some("l-1".into()),
        kind: "full".into(),
        actor: Actor::staff("anna"),
        reason: "payment_default".into(),
        message: None,
        since: "2026-11-01T00:00:00Z".parse().unwrap(),
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
fn time<R>(name: &str, mut f: impl FnMut() -> R) {
    for _ in 0..20000 {
        black_box(f());
    }
    let mut best = f64::MAX;
    for _ in 0..5 {
        let n = 200_000;
        let t = Instant::now();
        for _ in 0..n {
            black_box(f());
        }
        best = best.min(t.elapsed().as_nanos() as f64 / n as f64);
    }
    println!("{name:40} {best:8.0} ns");
}
fn main() {
    let raw = RawValue::from_string("{}".to_owned()).unwrap();
    for action in ["change_contract", "end_contract"] {
        let input = input(action);
        let env = serde_json::to_vec(&Envelope {
            now: now(),
            settings: &*raw,
            input: &input,
        })
        .unwrap();
        println!(
            "{} envelope {} bytes: {}",
            action,
            env.len(),
            String::from_utf8_lossy(&env)
        );
        let reply = rulehost_sdk::handle_json::<Subscription>(Hook::Authorize, &env);
        println!(
            "reply {} bytes: {}",
            reply.len(),
            String::from_utf8_lossy(&reply)
        );
        time("encode envelope", || {
            serde_json::to_vec(&Envelope {
                now: now(),
                settings: &*raw,
                input: black_box(&input),
            })
            .unwrap()
        });
        time("decode envelope", || {
            serde_json::from_slice::<Envelope<rulehost_policy_subscription::Settings, AuthorizeInput>>(black_box(&env)).unwrap()
        });
        time("decode input only (Value)", || {
            serde_json::from_slice::<serde_json::Value>(black_box(&env)).unwrap()
        });
        let ctx = Context {
            now: now(),
            settings: rulehost_policy_subscription::Settings::default(),
        };
        time("policy typed", || {
            Subscription::authorize(&ctx, black_box(&input))
        });
        let d = Subscription::authorize(&ctx, &input);
        time("encode reply", || {
            serde_json::to_vec(&Reply::Ok(black_box(&d))).unwrap()
        });
        time("decode reply", || {
            serde_json::from_slice::<Reply<AuthorizeDecision>>(black_box(&reply)).unwrap()
        });
        time("handle_json", || {
            rulehost_sdk::handle_json::<Subscription>(Hook::Authorize, black_box(&env))
        });
        time("timestamp parse", || {
            black_box("2026-11-01T00:00:00Z")
                .parse::<Timestamp>()
                .unwrap()
        });
    }
}
