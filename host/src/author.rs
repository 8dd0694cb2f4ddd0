//! The policy author's commands: `rulehost test` and `rulehost new`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use rulehost::testing::{parse_cases, run_cases};
use rulehost::{Engine, EngineConfig, Isolation};

/// Runs every case file against the policy; prints the report.
pub fn test(policy: &Path, files: &[PathBuf]) -> Result<ExitCode> {
    let engine = Engine::new(EngineConfig {
        isolation: Isolation::Fresh,
        ..EngineConfig::default()
    })?;
    let policy = super::load_policy(&engine, policy)?;
    let mut report = rulehost::testing::Report::default();
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read cases `{}`", file.display()))?;
        let cases = parse_cases(&text)
            .with_context(|| format!("`{}` is not a list of cases", file.display()))?;
        let mut outcomes = run_cases(&policy, &cases).outcomes;
        for outcome in &mut outcomes {
            outcome.name = format!("{}: {}", file.display(), outcome.name);
        }
        report.outcomes.extend(outcomes);
    }
    println!("{report}");
    Ok(if report.failed() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Creates a policy crate in directory `name`.
pub fn new(name: &str, sdk: Option<PathBuf>) -> Result<ExitCode> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_lowercase();
    if !valid {
        bail!("`{name}` is not a crate name: start with a-z, then a-z, 0-9, `-`, `_`");
    }
    let dir = Path::new(name);
    if dir.exists() {
        bail!("`{}` exists already; nothing was written", dir.display());
    }
    let sdk = match sdk {
        Some(sdk) => sdk,
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk"),
    };
    let sdk = sdk
        .canonicalize()
        .with_context(|| format!("no rulehost SDK at `{}`: give `--sdk DIR`", sdk.display()))?;
    let lib = name.replace('-', "_");
    let files = [
        ("Cargo.toml", manifest(name, &sdk)),
        ("src/lib.rs", LIB.to_owned()),
        ("cases/sample.json", CASES.to_owned()),
        ("README.md", readme(name, &lib)),
        (".gitignore", "/target\n".to_owned()),
    ];
    for (path, text) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create `{}`", parent.display()))?;
        }
        std::fs::write(&path, text)
            .with_context(|| format!("cannot write `{}`", path.display()))?;
    }
    println!("created policy crate `{name}`; next:");
    println!("  cd {name}");
    println!("  cargo test");
    println!("  cargo build --release --target wasm32-unknown-unknown");
    println!("  rulehost test target/wasm32-unknown-unknown/release/{lib}.wasm cases/*.json");
    Ok(ExitCode::SUCCESS)
}

fn manifest(name: &str, sdk: &Path) -> String {
    let sdk = sdk.display().to_string().replace('\\', "\\\\");
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
rulehost-sdk = {{ path = "{sdk}" }}
serde = {{ version = "1", features = ["derive"] }}

[profile.release]
opt-level = "s"
lto = true

# A crate of its own, not part of an enclosing workspace.
[workspace]
"#
    )
}

fn readme(name: &str, lib: &str) -> String {
    format!(
        r#"# {name}

A rulehost policy set. `src/lib.rs` decides; `cases/` holds JSON cases that
run natively (`cargo test`) and against the compiled module:

```sh
cargo test
cargo build --release --target wasm32-unknown-unknown
rulehost test target/wasm32-unknown-unknown/release/{lib}.wasm cases/*.json
```

The hooks, their inputs and outputs are described in the SDK's `ABI.md`.
"#
    )
}

const LIB: &str = r#"//! A rulehost policy set: while a customer is locked, self-service actions
//! are refused; staff may act.

use rulehost_sdk::wire::{ActorKind, AuthorizeDecision, AuthorizeInput};
use rulehost_sdk::{Context, Policy};
use serde::Deserialize;

/// Operator settings: none yet; unknown fields are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {}

/// The policy.
pub struct Sample;

impl Policy for Sample {
    type Settings = Settings;

    fn authorize(_ctx: &Context<Settings>, input: &AuthorizeInput) -> AuthorizeDecision {
        let locked = !input.subject.locks.is_empty();
        if locked && input.actor.kind == ActorKind::SelfService {
            return AuthorizeDecision::deny(
                "customer_locked",
                format!("`{}` is refused while `{}` is locked", input.action, input.subject.id),
            );
        }
        AuthorizeDecision::Allow
    }
}

rulehost_sdk::export_policy!(Sample);

#[cfg(test)]
mod tests {
    #[test]
    fn sample_cases_pass_natively() {
        let cases = rulehost_sdk::testing::parse_cases(include_str!("../cases/sample.json")).unwrap();
        let report = rulehost_sdk::testing::run_native::<super::Sample>(&cases);
        assert_eq!(report.failed(), 0, "{report}");
    }
}
"#;

const CASES: &str = r#"[
  {
    "name": "a locked customer may not book by self-service",
    "hook": "authorize",
    "now": "2026-11-22T10:00:00Z",
    "input": {
      "action": "book_class",
      "actor": { "kind": "self_service", "id": "c-1" },
      "subject": { "kind": "customer", "id": "c-1",
        "locks": [ { "kind": "full", "actor": { "kind": "staff", "id": "anna" }, "reason": "payment_default", "since": "2026-11-01T00:00:00Z" } ] }
    },
    "expect": { "decision": "deny", "code": "customer_locked", "reason": "`book_class` is refused while `c-1` is locked" }
  },
  {
    "name": "an unlocked customer may",
    "hook": "authorize",
    "now": "2026-11-22T10:00:00Z",
    "input": {
      "action": "book_class",
      "actor": { "kind": "self_service", "id": "c-1" },
      "subject": { "kind": "customer", "id": "c-1" }
    },
    "expect": { "decision": "allow" }
  }
]
"#;
