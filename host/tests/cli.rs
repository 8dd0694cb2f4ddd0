//! The `rulehost` command as a user runs it: `eval`, `serve` (the README's
//! curl session, crash safety), the operator and policy author commands.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::json;

#[path = "cli/crash.rs"]
mod crash;

fn rulehost(args: &[&str], stdin: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rulehost"));
    command.args(args);
    match stdin {
        Some(text) => {
            use std::io::Write as _;
            let mut child = command
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            // The command may exit before reading its input (bad arguments),
            // which closes the pipe: that write error is not the test's.
            let _ = child.stdin.take().unwrap().write_all(text.as_bytes());
            child.wait_with_output().unwrap()
        }
        None => command.output().unwrap(),
    }
}

/// Runs `rulehost` expecting success and returns what it printed, as JSON.
fn eval_json(args: &[&str], stdin: Option<&str>) -> serde_json::Value {
    let output = rulehost(args, stdin);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A loopback address with a port nothing listens on right now.
fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

const LOCKED_CHANGE: &str = r#"{
  "action": "change_contract",
  "actor": { "kind": "staff", "id": "anna" },
  "subject": { "kind": "contract", "id": "k-1", "parent": { "kind": "customer", "id": "c-1",
    "locks": [ { "kind": "full", "actor": { "kind": "staff", "id": "anna" }, "reason": "payment_default", "since": "2026-11-01T00:00:00Z" } ] } }
}"#;

#[test]
fn eval_prints_the_decision_of_a_wasm_policy_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("subscription.wasm");
    std::fs::write(&wasm, rulehost::bundled::get("subscription").unwrap()).unwrap();
    let evaluation = eval_json(
        &[
            "eval",
            "--policy",
            wasm.to_str().unwrap(),
            "--hook",
            "authorize",
            "--now",
            "2026-11-22T10:00:00Z",
        ],
        Some(LOCKED_CHANGE),
    );
    assert_eq!(evaluation["policy"], "subscription@0");
    assert_eq!(evaluation["decision"]["decision"], "deny");
    assert_eq!(evaluation["decision"]["code"], "customer_locked");
    assert!(evaluation.get("diagnostic").is_none());
}

#[test]
fn eval_runs_a_wat_policy_from_an_input_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.json");
    std::fs::write(
        &input,
        LOCKED_CHANGE.replace(
            "\"staff\", \"id\": \"anna\" },\n  \"subject\"",
            "\"self_service\", \"id\": \"c-1\" },\n  \"subject\"",
        ),
    )
    .unwrap();
    let wat = workspace().join("tests/wat/portal_readonly.wat");
    let evaluation = eval_json(
        &[
            "eval",
            "--policy",
            wat.to_str().unwrap(),
            "--hook",
            "authorize",
            "--input",
            input.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(
        evaluation["decision"],
        json!({ "decision": "deny", "code": "self_service", "reason": "the portal may not do this" })
    );
}

#[test]
fn eval_exits_zero_with_a_diagnostic_for_a_fail_closed_decision() {
    let dir = tempfile::tempdir().unwrap();
    let wat = dir.path().join("trap.wat");
    std::fs::write(
        &wat,
        r#"(module (memory (export "memory") 1)
             (func (export "rulehost_abi_version") (result i32) i32.const 1)
             (func (export "rulehost_alloc") (param i32) (result i32) i32.const 1024)
             (func (export "rulehost_authorize") (param i32 i32) (result i64) unreachable))"#,
    )
    .unwrap();
    let evaluation = eval_json(
        &[
            "eval",
            "--policy",
            wat.to_str().unwrap(),
            "--hook",
            "authorize",
            "--operator",
            "acme",
        ],
        Some(LOCKED_CHANGE),
    );
    assert_eq!(evaluation["decision"]["code"], "policy_failure");
    assert_eq!(evaluation["diagnostic"]["kind"], "trap");
    assert_eq!(
        evaluation["diagnostic"]["message"],
        "wasm trap: wasm `unreachable` instruction executed"
    );
}

fn one_line_error(output: &Output) -> String {
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr.clone()).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    stderr.trim_end().to_owned()
}

#[test]
fn eval_refuses_an_unloadable_policy_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let wat = dir.path().join("wasi.wat");
    std::fs::write(&wat, r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32))))"#).unwrap();
    let output = rulehost(
        &[
            "eval",
            "--policy",
            wat.to_str().unwrap(),
            "--hook",
            "authorize",
        ],
        Some("{}"),
    );
    assert_eq!(
        one_line_error(&output),
        format!(
            "error: cannot load policy `{}`: imports `wasi_snapshot_preview1`.`fd_write`, but a policy may import only `rulehost`.`log`",
            wat.display()
        )
    );
    let missing = rulehost(
        &[
            "eval",
            "--policy",
            "/nonexistent/p.wasm",
            "--hook",
            "authorize",
        ],
        Some("{}"),
    );
    assert_eq!(
        one_line_error(&missing),
        "error: cannot read policy file `/nonexistent/p.wasm`: No such file or directory (os error 2)"
    );
}

#[test]
fn eval_refuses_bad_arguments_and_input_naming_them() {
    let wat = workspace().join("tests/wat/portal_readonly.wat");
    let wat = wat.to_str().unwrap();
    let output = rulehost(&["eval", "--policy", wat, "--hook", "approve"], Some("{}"));
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown hook `approve`"));

    let output = rulehost(
        &["eval", "--policy", wat, "--hook", "authorize"],
        Some(r#"{"action": 3}"#),
    );
    assert_eq!(
        one_line_error(&output),
        "error: input is not a valid `authorize` input: invalid type: integer `3`, expected a string at line 1 column 12"
    );
}

#[test]
fn eval_runs_a_bundled_policy_set_on_the_readme_request() {
    let request = workspace().join("examples/requests/sub4-locked-change-contract.json");
    let evaluation = eval_json(
        &[
            "eval",
            "--policy",
            "bundled:subscription",
            "--hook",
            "authorize",
            "--input",
            request.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(evaluation["decision"]["code"], "customer_locked");

    let unknown = rulehost(
        &["eval", "--policy", "bundled:bakery", "--hook", "authorize"],
        Some("{}"),
    );
    let bundled: Vec<String> = rulehost::bundled::ALL
        .iter()
        .map(|(name, _)| format!("`{name}`"))
        .collect();
    assert!(bundled.contains(&"`subscription`".to_owned()));
    assert_eq!(
        one_line_error(&unknown),
        format!(
            "error: no bundled policy set `bakery`: bundled are {}",
            bundled.join(", ")
        )
    );
}

/// The README's curl session: `$ ` lines are commands, the lines after one
/// its expected answer.
struct SessionStep {
    command: String,
    expected: String,
}

fn readme_session() -> Vec<SessionStep> {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let section = readme
        .split("## Over HTTP: a curl session")
        .nth(1)
        .expect("the README has the curl session");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("the session is a sh block");
    let mut steps: Vec<SessionStep> = Vec::new();
    for line in block.lines() {
        match line.strip_prefix("$ ") {
            Some(command) => steps.push(SessionStep {
                command: command.to_owned(),
                expected: String::new(),
            }),
            None => {
                let step = steps.last_mut().expect("the block starts with a command");
                step.expected.push_str(line);
                step.expected.push('\n');
            }
        }
    }
    steps
}

#[test]
fn the_readme_curl_session_runs_as_written() {
    let steps = readme_session();
    assert!(steps.len() >= 8, "the session has its steps");
    let address = free_address();
    // One shell runs the whole session, so its variables carry over; a
    // marker before each command splits the output per command.
    let mut script = String::from("set -u\n");
    for (index, step) in steps.iter().enumerate() {
        script.push_str(&format!("echo '@@step {index}'\n"));
        script.push_str(&step.command.replace("127.0.0.1:7878", &address));
        script.push_str("\necho\n");
    }
    script.push_str("wait\n");
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_rulehost")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new("timeout")
        .args(["120", "bash", "-c", &script])
        .current_dir(dir.path())
        .env("PATH", path)
        .env("RULEHOST_LISTEN", &address)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the session failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut answers = stdout.split("@@step ").skip(1);
    for (index, step) in steps.iter().enumerate() {
        let answer = answers.next().unwrap_or_default();
        let answer = answer
            .strip_prefix(&format!("{index}\n"))
            .unwrap_or_else(|| panic!("step {index} has no output marker: {answer}"));
        let expected = step.expected.trim();
        let actual = answer.trim();
        if expected.is_empty() {
            assert!(
                actual.is_empty(),
                "`{}` printed `{actual}`, the README shows nothing",
                step.command
            );
            continue;
        }
        let mut expected_json: serde_json::Value = serde_json::from_str(expected)
            .unwrap_or_else(|e| panic!("README answer of `{}` is not JSON: {e}", step.command));
        let mut actual_json: serde_json::Value = serde_json::from_str(actual)
            .unwrap_or_else(|e| panic!("`{}` answered `{actual}`: {e}", step.command));
        // Fuel counts the policy's instructions, which depend on the key
        // order of its JSON input: a test build (whose dev-dependencies turn
        // on serde_json's `preserve_order`) spends a little more or less
        // than the README's `cargo run` build. Everything else must match.
        without_fuel(&mut expected_json);
        without_fuel(&mut actual_json);
        assert_eq!(
            actual_json, expected_json,
            "`{}` answered differently from the README",
            step.command
        );
    }
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(
        log.contains(&format!("listening on http://{address}")),
        "{log}"
    );
    assert!(
        log.trim_end().ends_with("rulehost stopped"),
        "SIGTERM stops it gracefully: {log}"
    );
}

fn without_fuel(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(fields) => {
            fields.remove("fuel_used");
            fields.values_mut().for_each(without_fuel);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(without_fuel),
        _ => {}
    }
}

/// `rulehost lock` or `unlock` of operator `acme`'s customer `m-1`.
fn acme_action(db: &str, command: &str, actor: &str, params: &[&str], now: &str) -> Output {
    let mut args = vec![
        command,
        "--db",
        db,
        "--operator",
        "acme",
        "--subject",
        "customer:m-1",
        "--actor",
        actor,
        "--now",
        now,
    ];
    for param in params {
        args.extend(["--param", param]);
    }
    rulehost(&args, None)
}

/// `rulehost lock` of `acme`'s `m-1` by staff for 14 days from
/// 2026-11-22T10:00:00Z.
fn lock_m1_for_14_days(db: &str) -> Output {
    acme_action(
        db,
        "lock",
        "staff:anna",
        &["reason=payment_deferral", "duration=14_days"],
        "2026-11-22T10:00:00Z",
    )
}

/// `rulehost policy install` of the bundled gym policy set as `gym@VERSION`
/// for operator `acme`, with `extra` arguments.
fn install_gym(db: &str, version: &str, extra: &[&str]) -> serde_json::Value {
    install_acme(db, "bundled:gym", "gym", version, extra)
}

/// `rulehost policy install` of `module` as `NAME@VERSION` for operator
/// `acme`, with `extra` arguments.
fn install_acme(
    db: &str,
    module: &str,
    name: &str,
    version: &str,
    extra: &[&str],
) -> serde_json::Value {
    let mut args = vec![
        "policy",
        "install",
        "--db",
        db,
        "--operator",
        "acme",
        module,
        "--name",
        name,
        "--version",
        version,
    ];
    args.extend_from_slice(extra);
    run_json(&args)
}

/// A database in `dir` where operator `acme` runs the bundled gym policy
/// set as `gym@1`.
fn acme_gym_db(dir: &tempfile::TempDir) -> String {
    let db = dir.path().join("cli.db").to_str().unwrap().to_owned();
    install_gym(&db, "1", &["--activate"]);
    db
}

/// Runs `rulehost` and returns its JSON output.
fn run_json(args: &[&str]) -> serde_json::Value {
    eval_json(args, None)
}

#[test]
fn policy_lock_unlock_audit_import_and_export_commands_share_one_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cli.db");
    let db = db.to_str().unwrap();
    let installed = install_gym(db, "1", &["--activate"]);
    assert_eq!(installed["installed"], "gym@1");
    assert_eq!(installed["active"], true);
    install_gym(db, "2", &[]);
    let activated = run_json(&[
        "policy",
        "activate",
        "--db",
        db,
        "--operator",
        "acme",
        "gym@2",
    ]);
    assert_eq!(activated["active"], "gym@2");
    let versions = run_json(&["policy", "list", "--db", db, "--operator", "acme"]);
    let active: Vec<&str> = versions
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["active"] == true)
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(active, ["gym@2"]);
    let rolled = run_json(&["policy", "rollback", "--db", db, "--operator", "acme"]);
    assert_eq!(rolled["active"], "gym@1");

    let locked = lock_m1_for_14_days(db);
    assert!(locked.status.success());
    let locked: serde_json::Value = serde_json::from_slice(&locked.stdout).unwrap();
    assert_eq!(locked["events"][0]["kind"], "customer.locked");
    let refused = acme_action(
        db,
        "unlock",
        "self_service:m-1",
        &["reason=paid"],
        "2026-11-23T10:00:00Z",
    );
    assert!(!refused.status.success(), "a refused unlock exits non-zero");
    let refusal: serde_json::Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(refusal["decision"]["decision"]["code"], "staff_only");
    let unlocked = acme_action(
        db,
        "unlock",
        "staff:bob",
        &["reason=paid early"],
        "2026-11-23T10:00:00Z",
    );
    assert!(unlocked.status.success());
    let unlocked: serde_json::Value = serde_json::from_slice(&unlocked.stdout).unwrap();
    assert_eq!(unlocked["events"][0]["kind"], "customer.unlocked");
    let seq = locked["audit_seq"].as_u64().unwrap().to_string();

    let verified = run_json(&["audit", "verify", "--db", db]);
    assert_eq!(verified["broken"], serde_json::Value::Null);
    assert!(verified["records"].as_u64().unwrap() >= 7);
    let replay = run_json(&["audit", "replay", "--db", db, &seq]);
    assert_eq!(replay["difference"], serde_json::Value::Null);

    // `policy compare` shows what a version would have decided
    // differently, before it is activated; exit 1 when anything differs.
    let compare = |policy: &str| {
        rulehost(
            &[
                "policy",
                "compare",
                "--db",
                db,
                "--operator",
                "acme",
                policy,
            ],
            None,
        )
    };
    let same = compare("gym@2");
    assert!(same.status.success(), "{same:?}");
    let same: serde_json::Value = serde_json::from_slice(&same.stdout).unwrap();
    assert_eq!(
        (&same["replayed"], &same["changed"]),
        (&json!(2), &json!([]))
    );
    let settings = dir.path().join("strict.json");
    std::fs::write(&settings, r#"{"lock_reasons": ["payment_default"]}"#).unwrap();
    install_gym(db, "3", &["--settings", settings.to_str().unwrap()]);
    let strict = compare("gym@3");
    assert_eq!(strict.status.code(), Some(1), "{strict:?}");
    let strict: serde_json::Value = serde_json::from_slice(&strict.stdout).unwrap();
    assert_eq!(strict["changed"][0]["seq"].to_string(), seq);
    assert_eq!(strict["changed"][0]["replayed"]["decision"], "refuse");
    let unknown = compare("gym@9");
    assert_eq!(
        one_line_error(&unknown),
        "error: operator `acme` has no policy `gym@9` installed"
    );

    let file = dir.path().join("legacy.csv");
    std::fs::write(
        &file,
        "subject_kind,subject_id,kind,actor_kind,actor,reason,message,since,until\n\
         customer,m-9,full,staff,olga,payment_default,call Olga,2026-10-01T00:00:00Z,\n",
    )
    .unwrap();
    let report = run_json(&[
        "import",
        "--db",
        db,
        "--operator",
        "acme",
        file.to_str().unwrap(),
        "--actor",
        "staff:admin",
    ]);
    assert_eq!(report["lock_ids"].as_array().unwrap().len(), 1);
    let export = run_json(&[
        "export",
        "--db",
        db,
        "--operator",
        "acme",
        "--subject",
        "customer:m-9",
    ]);
    assert_eq!(export["locks"][0]["message"], "call Olga");

    // The lock's expiry was cancelled when it was lifted.
    let schedules = |operator: &str, state: &str| {
        let args = [
            "schedules",
            "--db",
            db,
            "--operator",
            operator,
            "--state",
            state,
        ];
        rulehost(&args, None)
    };
    let listed = |state: &str| -> serde_json::Value {
        let output = schedules("acme", state);
        assert!(output.status.success(), "{output:?}");
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()["schedules"].clone()
    };
    let cancelled = listed("cancelled");
    assert_eq!(cancelled.as_array().unwrap().len(), 1, "{cancelled}");
    assert_eq!(
        cancelled[0]["subject"],
        json!({ "kind": "customer", "id": "m-1" })
    );
    assert_eq!(listed("pending"), json!([]));
    for (operator, state, error) in [
        ("acme", "due", "unknown schedule state `due`"),
        ("nobody", "held", "unknown operator `nobody`"),
    ] {
        let refused = schedules(operator, state);
        assert!(!refused.status.success());
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains(error), "{stderr}");
    }

    let bad = rulehost(
        &[
            "lock",
            "--db",
            db,
            "--operator",
            "acme",
            "--subject",
            "person:m-1",
            "--actor",
            "staff:anna",
        ],
        None,
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown subject kind `person`"));
    let bad = rulehost(
        &[
            "lock",
            "--db",
            db,
            "--operator",
            "acme",
            "--subject",
            "customer:m-1",
            "--actor",
            "anna",
        ],
        None,
    );
    assert_eq!(
        one_line_error(&bad),
        "error: actor `anna` is not `KIND:ID` (`staff:anna`)"
    );

    // `backup` copies the database; the copy is a database of its own.
    let copy = dir.path().join("copy.db");
    let copy = copy.to_str().unwrap();
    let backup = run_json(&["backup", "--db", db, "--out", copy]);
    let verified = run_json(&["audit", "verify", "--db", copy]);
    assert_eq!(verified["broken"], serde_json::Value::Null);
    assert_eq!(verified["records"], backup["audit_records"]);
    let original = run_json(&["audit", "verify", "--db", db]);
    assert_eq!(original["records"], backup["audit_records"]);
    let again = rulehost(&["backup", "--db", db, "--out", copy], None);
    assert_eq!(
        one_line_error(&again),
        format!("error: cannot back up to `{copy}`: it exists already; nothing was written")
    );
}

/// A policy whose `transition` traps: every firing under it is held.
const TRAPPING_TRANSITION: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "rulehost_abi_version") (result i32) i32.const 1)
  (func (export "rulehost_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "rulehost_transition") (param i32 i32) (result i64) unreachable))"#;

#[test]
fn schedule_retries_or_drops_a_held_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let db = &acme_gym_db(&dir);
    let locked = lock_m1_for_14_days(db);
    assert!(locked.status.success(), "{locked:?}");
    let trap = dir.path().join("trap.wat");
    std::fs::write(&trap, TRAPPING_TRANSITION).unwrap();
    let trap = trap.to_str().unwrap();
    install_acme(db, trap, "trap", "1", &["--activate"]);
    // What the service's scheduler does, in process: the lock's end is
    // held, as it is again once retried, `trap@1` being still active.
    let fire = || {
        let service = rulehost::Host::open(db, rulehost::EngineConfig::default()).unwrap();
        let end = "2026-12-06T10:00:00Z".parse().unwrap();
        service.fire_due(end).unwrap().held
    };
    assert_eq!(fire(), 1);
    let held = run_json(&[
        "schedules",
        "--db",
        db,
        "--operator",
        "acme",
        "--state",
        "held",
    ]);
    let id = held["schedules"][0]["id"].to_string();

    let schedule = |resolution: &str, reason: &str| {
        let args = [
            "schedule",
            resolution,
            &id,
            "--db",
            db,
            "--operator",
            "acme",
            "--actor",
            "staff:anna",
            "--reason",
            reason,
            "--now",
            "2026-12-06T11:00:00Z",
        ];
        rulehost(&args, None)
    };
    let retried = schedule("retry", "the policy was fixed");
    assert!(retried.status.success(), "{retried:?}");
    let retried: serde_json::Value = serde_json::from_slice(&retried.stdout).unwrap();
    assert_eq!(
        (&retried["resolution"], &retried["schedule"]["state"]),
        (&json!("retry"), &json!("pending"))
    );
    let record = retried["audit_seq"].to_string();
    let replay = rulehost(&["audit", "replay", "--db", db, &record], None);
    assert_eq!(
        one_line_error(&replay),
        format!("error: audit record `{record}` is a `schedule.retried` record, not a decision")
    );
    assert_eq!(fire(), 1);

    let dropped = schedule("drop", "member left");
    assert!(dropped.status.success(), "{dropped:?}");
    let dropped: serde_json::Value = serde_json::from_slice(&dropped.stdout).unwrap();
    assert_eq!(dropped["schedule"]["state"], "cancelled");
    assert_eq!(
        one_line_error(&schedule("drop", "again")),
        format!(
            "error: schedule `{id}` is cancelled, not held: only a held schedule can be retried or dropped"
        )
    );
    assert_eq!(
        one_line_error(&schedule("retry", "")),
        format!("error: a reason is required to retry schedule `{id}`")
    );
    let later = schedule("later", "why");
    assert!(!later.status.success());
    let stderr = String::from_utf8_lossy(&later.stderr);
    assert!(stderr.contains("unknown resolution `later`"), "{stderr}");
}

#[test]
fn webhook_sets_lists_and_removes_an_operators_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let db = &acme_gym_db(&dir);
    // Listed without its secret.
    let webhook = |args: &[&str]| {
        let mut all = vec!["webhook"];
        all.extend_from_slice(args);
        all.extend(["--db", db]);
        rulehost(&all, None)
    };
    let set = webhook(&[
        "set",
        "--operator",
        "acme",
        "--url",
        "http://127.0.0.1:9/hooks",
        "--actor",
        "staff:anna",
    ]);
    assert!(set.status.success(), "{set:?}");
    let set: serde_json::Value = serde_json::from_slice(&set.stdout).unwrap();
    assert_eq!(set["secret"].as_str().map(str::len), Some(68), "{set}");
    let listed: serde_json::Value = serde_json::from_slice(&webhook(&["list"]).stdout).unwrap();
    assert_eq!(listed["webhooks"][0]["url"], "http://127.0.0.1:9/hooks");
    assert_eq!(listed["webhooks"][0].get("secret"), None);
    assert_eq!(
        one_line_error(&webhook(&[
            "set",
            "--operator",
            "acme",
            "--url",
            "https://crm.example",
            "--actor",
            "staff:anna",
        ])),
        "error: invalid webhook URL `https://crm.example`: this build posts plain `http://` only; \
         put a TLS proxy on the way to an `https://` endpoint"
    );
    assert!(
        webhook(&["remove", "--operator", "acme", "--actor", "staff:anna"])
            .status
            .success()
    );
    let listed: serde_json::Value = serde_json::from_slice(&webhook(&["list"]).stdout).unwrap();
    assert_eq!(listed["webhooks"], json!([]));
}

#[test]
fn test_runs_cases_against_a_module_and_fails_on_a_wrong_expectation() {
    let dir = tempfile::tempdir().unwrap();
    let cases = dir.path().join("cases.json");
    let case = |name: &str, code: &str| {
        json!({
            "name": name, "hook": "authorize", "now": "2026-11-22T10:00:00Z",
            "input": serde_json::from_str::<serde_json::Value>(LOCKED_CHANGE).unwrap(),
            "expect": { "decision": "deny", "code": code, "reason": "`change_contract` is refused while the customer is locked (reason `payment_default`, by `anna` since 2026-11-01T00:00:00Z): only `end_contract`, `terminate_extraordinarily`, `annul_contract`, `postpone_contract` are possible on a contract" }
        })
    };
    std::fs::write(
        &cases,
        json!([case("locked", "customer_locked")]).to_string(),
    )
    .unwrap();
    let output = rulehost(
        &["test", "bundled:subscription", cases.to_str().unwrap()],
        None,
    );
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{printed}");
    assert!(printed.contains("pass  "), "{printed}");
    assert!(
        printed.trim_end().ends_with("1 passed, 0 failed"),
        "{printed}"
    );

    std::fs::write(
        &cases,
        json!([case("locked", "customer_locked"), case("wrong", "nope")]).to_string(),
    )
    .unwrap();
    let output = rulehost(
        &["test", "bundled:subscription", cases.to_str().unwrap()],
        None,
    );
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success());
    assert!(
        printed.contains("FAIL  ") && printed.contains("wrong"),
        "{printed}"
    );
    assert!(
        printed.trim_end().ends_with("1 passed, 1 failed"),
        "{printed}"
    );
}

#[test]
fn new_scaffolds_a_policy_crate_that_builds_and_passes_its_sample_case() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_rulehost"))
        .args(["new", "acme-policy"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let again = Command::new(env!("CARGO_BIN_EXE_rulehost"))
        .args(["new", "acme-policy"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));

    let crate_dir = dir.path().join("acme-policy");
    // The workspace's target directory holds the SDK's dependencies built
    // for wasm already.
    let target = workspace().join("target/scaffold");
    let build = Command::new(env!("CARGO"))
        .args(["build", "--release", "--target", "wasm32-unknown-unknown"])
        .current_dir(&crate_dir)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let wasm = target.join("wasm32-unknown-unknown/release/acme_policy.wasm");
    let cases = crate_dir.join("cases/sample.json");
    let output = rulehost(
        &["test", wasm.to_str().unwrap(), cases.to_str().unwrap()],
        None,
    );
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{printed}");
    assert!(
        printed.trim_end().ends_with("2 passed, 0 failed"),
        "{printed}"
    );
}

#[test]
fn every_command_has_help_that_names_its_options() {
    let commands: &[(&[&str], &[&str])] = &[
        (
            &["serve"],
            &[
                "--db",
                "--listen",
                "--body-limit",
                "--isolation",
                "--clock",
                "RULEHOST_DB",
                "--module-cache",
                "RULEHOST_MODULE_CACHE",
                "--module-cache-days",
            ],
        ),
        (&["token"], &["--operator", "--admin", "--can-install"]),
        (
            &["policy", "install"],
            &[
                "--operator",
                "--name",
                "--version",
                "--settings",
                "--activate",
            ],
        ),
        (&["policy", "list"], &["--operator"]),
        (&["policy", "activate"], &["NAME@VERSION"]),
        (&["policy", "rollback"], &["--operator"]),
        (
            &["policy", "compare"],
            &["NAME@VERSION", "--after", "--limit"],
        ),
        (&["lock"], &["--subject", "--param", "--actor", "--now"]),
        (&["unlock"], &["--subject", "--param", "--actor"]),
        (&["audit", "verify"], &["--db", "--module-cache"]),
        (&["audit", "replay"], &["--active"]),
        (&["import"], &["--format", "--skip-bad-rows", "--actor"]),
        (&["export"], &["--subject"]),
        (&["eval"], &["--policy", "--hook", "--input"]),
        (&["test"], &["N passed, N failed"]),
        (&["new"], &["--sdk"]),
        (&["prune-modules"], &["--unused-days", "--module-cache"]),
        (&["backup"], &["--out", "--db"]),
        (&["webhook", "set"], &["--operator", "--url", "--actor"]),
        (&["webhook", "remove"], &["--operator", "--actor"]),
        (&["webhook", "list"], &["--db"]),
        (
            &["schedule"],
            &["<RESOLUTION>", "<ID>", "--operator", "--reason", "--actor"],
        ),
    ];
    for (command, words) in commands {
        let mut args = command.to_vec();
        args.push("--help");
        let output = rulehost(&args, None);
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{command:?}");
        for word in *words {
            assert!(
                help.contains(word),
                "`rulehost {}` --help lacks `{word}`:\n{help}",
                command.join(" ")
            );
        }
    }
}

#[test]
fn policy_keygen_sign_and_trust_make_an_operator_accept_only_signed_modules() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("signed.db");
    let db = db.to_str().unwrap();
    let key = dir.path().join("signing.key");
    let output = rulehost(&["policy", "keygen", "--out", key.to_str().unwrap()], None);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let public = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert_eq!(public.len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "only its owner may read the key");
    }
    let again = rulehost(&["policy", "keygen", "--out", key.to_str().unwrap()], None);
    assert!(String::from_utf8_lossy(&again.stderr).contains("must not exist yet"));

    run_json(&[
        "policy",
        "trust",
        "--db",
        db,
        "--operator",
        "acme",
        "--key",
        &public,
    ]);
    let unsigned = rulehost(
        &[
            "policy",
            "install",
            "--db",
            db,
            "--operator",
            "acme",
            "bundled:gym",
            "--name",
            "gym",
            "--version",
            "1",
        ],
        None,
    );
    assert_eq!(
        one_line_error(&unsigned),
        "error: operator `acme` requires signed policy sets: `gym@1` has no signature"
    );
    let output = rulehost(
        &[
            "policy",
            "sign",
            "--key",
            key.to_str().unwrap(),
            "bundled:gym",
        ],
        None,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let signature = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let installed = run_json(&[
        "policy",
        "install",
        "--db",
        db,
        "--operator",
        "acme",
        "bundled:gym",
        "--name",
        "gym",
        "--version",
        "1",
        "--signature",
        &signature,
        "--activate",
    ]);
    assert_eq!(installed["active"], true);
    let tampered = rulehost(
        &[
            "policy",
            "install",
            "--db",
            db,
            "--operator",
            "acme",
            "bundled:subscription",
            "--name",
            "gym",
            "--version",
            "2",
            "--signature",
            &signature,
        ],
        None,
    );
    assert!(
        one_line_error(&tampered)
            .contains("the signature of `gym@2` for operator `acme` is refused")
    );
}

#[test]
fn token_makes_a_secret_once_and_only_for_a_known_operator() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tokens.db");
    let db = db.to_str().unwrap();
    let unknown = rulehost(&["token", "--db", db, "--operator", "nobody"], None);
    assert_eq!(one_line_error(&unknown), "error: unknown operator `nobody`");
    let admin = rulehost(&["token", "--db", db, "--admin"], None);
    assert!(admin.status.success());
    let secret = String::from_utf8(admin.stdout).unwrap();
    assert!(
        secret.trim().starts_with("rht_") && secret.trim().len() == 68,
        "{secret}"
    );
    let stored = database_contains(Path::new(db), secret.trim().as_bytes());
    assert!(!stored, "the secret itself is never stored");
}

/// Whether `needle` appears anywhere in the database file or its WAL.
fn database_contains(db: &Path, needle: &[u8]) -> bool {
    [db.to_path_buf(), db.with_extension("db-wal")]
        .iter()
        .filter_map(|path| std::fs::read(path).ok())
        .any(|bytes| bytes.windows(needle.len()).any(|window| window == needle))
}

/// The compiled modules in `dir`: `(file name, inode)`, sorted.
fn cached_modules(dir: &Path) -> Vec<(String, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            (name, entry.metadata().unwrap().ino())
        })
        .collect();
    files.sort();
    files
}

/// A command compiles the active policy sets once and keeps them beside the
/// database (`FILE.modules`, only the host's user may enter it); the next
/// command loads them from there instead of compiling again, which would
/// write a new file. `--module-cache` puts them elsewhere.
#[test]
fn commands_keep_compiled_modules_beside_the_database_and_load_them_from_there() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cli.db");
    let db = db.to_str().unwrap();
    let install = |version: &str, extra: &[&str]| {
        install_gym(db, version, &[&["--activate"], extra].concat())
    };
    install("1", &[]);
    let cache = dir.path().join("cli.db.modules");
    let versions = run_json(&["policy", "list", "--db", db, "--operator", "acme"]);
    let sha256 = versions[0]["sha256"].as_str().unwrap();
    let compiled = cached_modules(&cache);
    assert_eq!(compiled.len(), 1, "{compiled:?}");
    assert!(
        compiled[0].0.starts_with(&format!("{sha256}-")),
        "{compiled:?}"
    );
    assert!(compiled[0].0.ends_with(".cwasm"), "{compiled:?}");
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");

    // Loading the active version again, and installing the same module as
    // version 2, compile nothing: the file is the one first written.
    install("2", &[]);
    run_json(&["policy", "rollback", "--db", db, "--operator", "acme"]);
    assert_eq!(cached_modules(&cache), compiled);

    let elsewhere = dir.path().join("elsewhere");
    install("3", &["--module-cache", elsewhere.to_str().unwrap()]);
    let moved = cached_modules(&elsewhere);
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(moved[0].0, compiled[0].0);

    // `prune-modules` removes what no host has loaded for the given days,
    // but never the database's active version: a module installed and not
    // activated goes with `--unused-days 0`, and only then.
    let mut args = vec!["policy", "install", "--db", db, "--operator", "acme"];
    args.extend([
        "bundled:subscription",
        "--name",
        "subscription",
        "--version",
        "4",
    ]);
    run_json(&args);
    assert_eq!(cached_modules(&cache).len(), 2);
    let prune = |days: &str| run_json(&["prune-modules", "--db", db, "--unused-days", days]);
    let pruned = prune("30");
    assert_eq!(
        (&pruned["removed"], &pruned["kept"]),
        (&json!(0), &json!(2))
    );
    let pruned = prune("0");
    assert_eq!(
        (&pruned["removed"], &pruned["kept"]),
        (&json!(1), &json!(1))
    );
    assert_eq!(pruned["dir"], json!(cache.to_str().unwrap()));
    assert_eq!(cached_modules(&cache), compiled);
}
