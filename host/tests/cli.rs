//! `rulehost eval` on `.wasm` and `.wat` policies, as a user runs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
        serde_json::json!({ "decision": "deny", "code": "self_service", "reason": "the portal may not do this" })
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
