//! The `rulehost` command.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use rulehost::wire::{Authorize, Billing, Hook, HookKind, Timestamp, Transition, ValidateSettings};
use rulehost::{Engine, EngineConfig, Isolation, PolicyId, PolicySet, Settings};
use serde_json::Value;

/// rulehost: lifecycle rules for SaaS backends, decided by sandboxed
/// WebAssembly policies.
#[derive(Parser)]
#[command(name = "rulehost", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Evaluate one hook of a policy file and print the decision as JSON.
    ///
    /// Exits 0 for any decision, including a fail-closed one (its
    /// `diagnostic` says why); non-zero with a one-line error for bad
    /// arguments, bad input or a policy that cannot be loaded.
    Eval {
        /// The policy module: a `.wasm` binary or `.wat` text, or
        /// `bundled:FLAVOUR` for a policy set built into this binary
        /// (`bundled:subscription`).
        #[arg(long, value_name = "FILE")]
        policy: PathBuf,
        /// The hook: `authorize`, `billing`, `transition` or `validate_settings`.
        #[arg(long, value_name = "HOOK")]
        hook: Hook,
        /// The hook's input as JSON; read from standard input when omitted.
        #[arg(long, value_name = "FILE")]
        input: Option<PathBuf>,
        /// Operator settings as a JSON file (default `{}`).
        #[arg(long, value_name = "FILE")]
        settings: Option<PathBuf>,
        /// The time the policy sees as `now` (RFC 3339; default: the clock).
        #[arg(long, value_name = "TIME")]
        now: Option<Timestamp>,
        /// The operator named in diagnostics.
        #[arg(long, default_value = "cli")]
        operator: String,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Eval {
            policy,
            hook,
            input,
            settings,
            now,
            operator,
        } => {
            let engine = Engine::new(EngineConfig {
                isolation: Isolation::Fresh,
                ..EngineConfig::default()
            })?;
            let policy = load_policy(&engine, &policy)?;
            let input = match input {
                Some(path) => std::fs::read(&path)
                    .with_context(|| format!("cannot read input `{}`", path.display()))?,
                None => {
                    let mut buffer = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut buffer)
                        .context("cannot read input from standard input")?;
                    buffer
                }
            };
            let settings = match settings {
                Some(path) => {
                    let text = std::fs::read(&path)
                        .with_context(|| format!("cannot read settings `{}`", path.display()))?;
                    let value: Value = serde_json::from_slice(&text)
                        .with_context(|| format!("settings `{}` are not JSON", path.display()))?;
                    Settings::from_value(&operator, &value)?
                }
                None => Settings::empty(),
            };
            let now = now.unwrap_or_else(|| Timestamp(time::OffsetDateTime::now_utc()));
            let output = match hook {
                Hook::Authorize => eval::<Authorize>(&policy, &operator, now, &settings, &input),
                Hook::Billing => eval::<Billing>(&policy, &operator, now, &settings, &input),
                Hook::Transition => eval::<Transition>(&policy, &operator, now, &settings, &input),
                Hook::ValidateSettings => {
                    eval::<ValidateSettings>(&policy, &operator, now, &settings, &input)
                }
            }?;
            println!("{output}");
            Ok(())
        }
    }
}

/// Loads a policy file, or a bundled policy set named `bundled:FLAVOUR`.
fn load_policy(engine: &Engine, policy: &std::path::Path) -> Result<PolicySet> {
    let Some(flavour) = policy.to_str().and_then(|p| p.strip_prefix("bundled:")) else {
        return Ok(engine.load_file(policy, None)?);
    };
    let Some(wasm) = rulehost::bundled::get(flavour) else {
        let known: Vec<&str> = rulehost::bundled::ALL
            .iter()
            .map(|(name, _)| *name)
            .collect();
        bail!(
            "no bundled policy set `{flavour}`: bundled are `{}`",
            known.join("`, `")
        );
    };
    Ok(engine.load(PolicyId::new(flavour, 0), wasm)?)
}

/// Decodes `input` as hook `H`'s input, evaluates, and renders the
/// evaluation as JSON.
fn eval<H: HookKind>(
    policy: &PolicySet,
    operator: &str,
    now: Timestamp,
    settings: &Settings,
    input: &[u8],
) -> Result<String> {
    let input: H::Input = match serde_json::from_slice(input) {
        Ok(input) => input,
        Err(error) => bail!("input is not a valid `{}` input: {error}", H::HOOK),
    };
    let evaluation = policy.evaluate::<H>(operator, now, settings, &input);
    Ok(serde_json::to_string_pretty(&evaluation)?)
}
