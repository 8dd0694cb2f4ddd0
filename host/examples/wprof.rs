use rulehost::wire::*;
use rulehost::{Engine, EngineConfig, Isolation, Settings};
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
fn t<F: FnMut()>(name: &str, mut f: F) {
    for _ in 0..20_000 {
        f();
    }
    let mut v = vec![];
    for _ in 0..7 {
        let s = Instant::now();
        for _ in 0..50_000 {
            f();
        }
        v.push(s.elapsed().as_nanos() as f64 / 50_000.0);
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("{name:40} median {:8.0} ns  min {:8.0}", v[3], v[0]);
}
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let settings = Settings::empty();
    let isos: Vec<Isolation> = if std::env::args().nth(2).as_deref() == Some("reuse") {
        vec![Isolation::Reuse]
    } else if std::env::args().nth(2).as_deref() == Some("fresh") {
        vec![Isolation::Fresh]
    } else {
        vec![Isolation::Reuse, Isolation::Fresh]
    };
    for iso in isos {
        let engine = Engine::new(EngineConfig {
            isolation: iso,
            ..EngineConfig::default()
        })
        .unwrap();
        let p = engine.load_file(std::path::Path::new(&path), None).unwrap();
        for action in ["change_contract", "end_contract"] {
            let inp = input(action);
            let e = p.evaluate::<Authorize>("b", now(), &settings, &inp);
            assert!(e.diagnostic.is_none());
            t(&format!("{iso:?} {action} fuel {}", e.fuel_used), || {
                black_box(p.evaluate::<Authorize>("b", now(), &settings, black_box(&inp)));
            });
        }
    }
}
