//! The data-driven scenarios: one JSON story per behaviour id under
//! `tests/cases/<flavour>/`, each run through a fresh `Host` on a SQLite file
//! with the flavour's compiled policy set. A story is a list of steps, each
//! at its own time: a request (`authorize`, `billing`, `transition`), the
//! host's view of a subject (`subject`), its export (`export`) and
//! anonymization (`anonymize`), the scheduler
//! firing what is due (`fire_due`) or a legacy import (`import`), with the
//! exact decision, error, events and count expected after it. A failing step
//! is reported with its file and number.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use rulehost::import::{ImportFormat, OnBadRow};
use rulehost::wire::{Actor, AuthorizeInput, BillingInput, SubjectRef, TransitionInput};
use rulehost::{EngineConfig, Host, PolicyId};
use serde::Deserialize;
use serde_json::Value;

use crate::support::at;

const OPERATOR: &str = "operator";
const CONSUMER: &str = "cases";

/// A case file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// The behaviour id it proves (`GYM-8`).
    behaviour: String,
    /// What happens, in a sentence.
    #[allow(dead_code)]
    story: String,
    /// The operator's settings; `{}` when absent.
    #[serde(default)]
    settings: Option<Value>,
    steps: Vec<Step>,
}

#[derive(Deserialize)]
struct Step {
    at: String,
    #[serde(flatten)]
    request: Request,
    #[serde(default)]
    expect: Expect,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Request {
    Authorize(AuthorizeInput),
    Billing(BillingInput),
    Transition(TransitionInput),
    FireDue {},
    Import { lines: Vec<Value> },
    Subject(SubjectRef),
    Export(SubjectRef),
    Anonymize(SubjectRef),
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    /// The exact decision.
    decision: Option<Value>,
    /// The exact error text.
    error: Option<String>,
    /// The events queued by this step, as `kind subject`.
    events: Option<Vec<String>>,
    /// Schedules fired with the policy's effects applied (`fire_due`).
    fired: Option<usize>,
    /// The subject's active locks as `reason until` (`subject`).
    locks: Option<Vec<String>>,
    /// Text the export must contain (`export`).
    export_contains: Option<Vec<String>>,
    /// Text the export must not contain (`export`).
    export_lacks: Option<Vec<String>>,
    /// Whether the audit trail verifies after the step.
    audit_intact: Option<bool>,
}

fn case_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("cases");
    let mut files = Vec::new();
    for flavour in std::fs::read_dir(&root).expect("tests/cases") {
        let flavour = flavour.expect("tests/cases entry").path();
        for file in std::fs::read_dir(&flavour).expect("flavour directory") {
            let file = file.expect("case file").path();
            if file.extension().is_some_and(|e| e == "json") {
                files.push(file);
            }
        }
    }
    files.sort();
    files
}

/// Runs one case; the first failing step as `step N: what`.
fn run(flavour: &str, case: &Case) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let host = Host::open(dir.path().join("rulehost.db"), EngineConfig::default())
        .map_err(|e| e.to_string())?;
    let wasm = rulehost::bundled::get(flavour).ok_or(format!("no bundled policy `{flavour}`"))?;
    let id = PolicyId::new(flavour, 1);
    let settings = case
        .settings
        .clone()
        .unwrap_or_else(|| Value::Object(Default::default()));
    let first = at(&case.steps.first().ok_or("no steps")?.at);
    let installer = Actor::staff("installer");
    host.install(OPERATOR, id.clone(), wasm, &settings, &installer, first)
        .and_then(|_| host.activate(OPERATOR, &id, &installer, first))
        .map_err(|e| format!("install: {e}"))?;
    for (number, step) in case.steps.iter().enumerate() {
        check_step(&host, step).map_err(|why| format!("step {}: {why}", number + 1))?;
    }
    Ok(())
}

fn check_step(host: &Host, step: &Step) -> Result<(), String> {
    let now = at(&step.at);
    let expect = &step.expect;
    let answer: Result<Value, String> = match &step.request {
        Request::Authorize(input) => host
            .authorize(OPERATOR, now, input.clone())
            .map(|e| serde_json::to_value(e.decision).expect("decision")),
        Request::Billing(input) => host
            .billing(OPERATOR, now, input.clone())
            .map(|e| serde_json::to_value(e.decision).expect("decision")),
        Request::Transition(input) => host
            .transition(OPERATOR, now, input.clone())
            .map(|o| serde_json::to_value(o.evaluation.decision).expect("decision")),
        Request::FireDue {} => host
            .fire_due(now)
            .map(|report| serde_json::json!({ "fired": report.fired })),
        Request::Import { lines } => {
            let text: Vec<String> = lines.iter().map(Value::to_string).collect();
            host.import_locks(
                OPERATOR,
                &text.join("\n"),
                ImportFormat::JsonLines,
                OnBadRow::Refuse,
                &Actor::staff("migration"),
                now,
            )
            .map(|report| serde_json::json!({ "imported": report.lock_ids.len() }))
        }
        Request::Export(subject) => host.export_subject(OPERATOR, subject, now).map(|records| {
            Value::String(serde_json::to_string(&records).expect("export serializes"))
        }),
        Request::Anonymize(subject) => host
            .anonymize_subject(OPERATOR, subject, &Actor::staff("privacy-officer"), now)
            .map(|done| serde_json::json!({ "audit_records": done.audit_records.len() })),
        Request::Subject(subject) => host.subject(OPERATOR, subject, now).map(|state| {
            let locks: Vec<String> = state
                .locks
                .iter()
                .map(|lock| match lock.until {
                    Some(until) => format!("{} until {until}", lock.reason),
                    None => format!("{} without end", lock.reason),
                })
                .collect();
            serde_json::json!({ "locks": locks })
        }),
    }
    .map_err(|e| e.to_string());
    match (&answer, &expect.error) {
        (Err(got), Some(want)) if got == want => {}
        (Err(got), _) => return Err(format!("unexpected error: {got}")),
        (Ok(got), Some(want)) => return Err(format!("expected error `{want}`, got {got}")),
        (Ok(_), None) => {}
    }
    let got = answer.unwrap_or(Value::Null);
    if let Some(want) = &expect.decision
        && &got != want
    {
        return Err(format!("decision\n  expected {want}\n  got      {got}"));
    }
    if let Some(want) = expect.fired
        && got["fired"] != want
    {
        return Err(format!("expected {want} fired, got {}", got["fired"]));
    }
    if let Some(want) = &expect.locks
        && got["locks"] != serde_json::json!(want)
    {
        return Err(format!(
            "locks\n  expected {want:?}\n  got      {}",
            got["locks"]
        ));
    }
    let export = got.as_str().unwrap_or_default();
    for text in expect.export_contains.iter().flatten() {
        if !export.contains(text.as_str()) {
            return Err(format!("the export lacks `{text}`: {export}"));
        }
    }
    for text in expect.export_lacks.iter().flatten() {
        if export.contains(text.as_str()) {
            return Err(format!("the export still contains `{text}`"));
        }
    }
    if let Some(want) = expect.audit_intact {
        let verification = host.verify_audit().map_err(|e| e.to_string())?;
        if verification.is_intact() != want {
            return Err(format!("audit verification: {verification:?}"));
        }
    }
    let events = host
        .events(OPERATOR, CONSUMER, 1000)
        .map_err(|e| e.to_string())?;
    if let Some(last) = events.last() {
        host.ack(OPERATOR, CONSUMER, last.seq)
            .map_err(|e| e.to_string())?;
    }
    let events: Vec<String> = events
        .iter()
        .map(|event| format!("{} {}", event.kind, event.subject))
        .collect();
    match &expect.events {
        Some(want) if &events != want => Err(format!(
            "events\n  expected {want:?}\n  got      {events:?}"
        )),
        _ => Ok(()),
    }
}

#[test]
fn every_case_file_passes_through_the_host_with_the_compiled_policies() {
    let mut passed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut failures = Vec::new();
    for file in case_files() {
        let flavour = file
            .parent()
            .and_then(Path::file_name)
            .and_then(|name| name.to_str())
            .expect("flavour directory name")
            .to_owned();
        let name = file
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap_or(&file)
            .display()
            .to_string();
        let case: Case = match std::fs::read_to_string(&file)
            .map_err(|e| e.to_string())
            .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()))
        {
            Ok(case) => case,
            Err(why) => {
                failures.push(format!("{name}: cannot read: {why}"));
                continue;
            }
        };
        match run(&flavour, &case) {
            Ok(()) => passed.entry(flavour).or_default().push(case.behaviour),
            Err(why) => failures.push(format!("{name} ({}): {why}", case.behaviour)),
        }
    }
    let summary: Vec<String> = passed
        .iter()
        .map(|(flavour, ids)| format!("{flavour} {}", ids.len()))
        .collect();
    // Written past the test harness's capture, so every run shows it.
    let _ = writeln!(
        std::io::stderr(),
        "cases passed per flavour: {}",
        summary.join(", ")
    );
    assert!(
        failures.is_empty(),
        "failing cases:\n{}",
        failures.join("\n")
    );
    assert!(!passed.is_empty(), "no case files under tests/cases");
}
