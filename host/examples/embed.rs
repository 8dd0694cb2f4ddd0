//! The README's curl session, in process: a gym member is locked for 14
//! days, refused at check-in, and the scheduler lifts the lock when the
//! clock passes its end. CI runs it: `cargo run --release -p rulehost
//! --example embed`; it exits non-zero if the host behaves otherwise.

use std::error::Error;
use std::sync::Arc;

use rulehost::wire::{
    Actor, AuthorizeDecision, AuthorizeInput, Subject, SubjectKind, SubjectRef, Timestamp,
    TransitionInput, Trigger,
};
use rulehost::{EngineConfig, Host, ManualClock, PolicyId, Scheduler};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let host = Arc::new(Host::open(
        dir.path().join("rulehost.db"),
        EngineConfig::default(),
    )?);
    let now: Timestamp = "2026-11-22T10:00:00Z".parse()?;
    let clock = Arc::new(ManualClock::new(now));

    // One operator running the bundled gym policy set.
    let gym = PolicyId::new("gym", 1);
    let admin = Actor::system("setup");
    let wasm = rulehost::bundled::get("gym").ok_or("the gym policy set is bundled")?;
    host.create_operator("my-gym", now)?;
    host.install("my-gym", gym.clone(), wasm, &json!({}), &admin, now)?;
    host.activate("my-gym", &gym, &admin, now)?;
    let mut scheduler = Scheduler::start(host.clone(), clock.clone());

    // Staff lock member m-1 for 14 days.
    let member = Subject::new(SubjectKind::Customer, "m-1");
    let locked = host.transition(
        "my-gym",
        now,
        TransitionInput {
            trigger: Trigger::Action,
            action: "lock".into(),
            actor: Actor::staff("anna"),
            subject: member.clone(),
            params: json!({ "reason": "payment_deferral", "duration": "14_days" }),
        },
    )?;
    println!("locked: events {:?}", kinds(&locked.events));

    // The member is refused at check-in.
    let check_in = AuthorizeInput {
        action: "check_in".into(),
        actor: Actor::self_service("m-1"),
        subject: member,
        acknowledgements: vec![],
        params: serde_json::Value::Null,
    };
    let refused = host.authorize("my-gym", now, check_in.clone())?;
    let AuthorizeDecision::Deny { code, reason } = &refused.decision else {
        return Err(format!("check-in was not refused: {:?}", refused.decision).into());
    };
    println!("check-in: {code}: {reason}");

    // Fourteen days later the scheduler has lifted the lock.
    clock.advance(time::Duration::days(14));
    let later = rulehost::Clock::now(clock.as_ref());
    let run = scheduler
        .ran_through(later)
        .await
        .ok_or("the scheduler stopped")?;
    println!("at {}: scheduler {:?}", run.now, run.result);
    let state = host.subject(
        "my-gym",
        &SubjectRef::new(SubjectKind::Customer, "m-1"),
        later,
    )?;
    if !state.locks.is_empty() {
        return Err(format!("the lock is still there: {:?}", state.locks).into());
    }
    let admitted = host.authorize("my-gym", later, check_in)?;
    if admitted.decision != AuthorizeDecision::Allow {
        return Err(format!("check-in after the lock: {:?}", admitted.decision).into());
    }
    let events = host.events("my-gym", "crm", 100)?;
    println!("events for the backend: {:?}", kinds(&events));
    if kinds(&events) != ["customer.locked", "lock.expired"] {
        return Err("unexpected events".into());
    }
    scheduler.stop().await;
    Ok(())
}

fn kinds(events: &[rulehost::store::Event]) -> Vec<&str> {
    events.iter().map(|event| event.kind.as_str()).collect()
}
