//! The `rulehost` command.

mod author;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser, Subcommand};
use rulehost::import::{ImportFormat, OnBadRow};
use rulehost::service::{AppState, ServiceClock, ServiceConfig};
use rulehost::store::{Resolution, ScheduleState};
use rulehost::wire::{
    Actor, Authorize, Billing, Hook, HookKind, Subject, SubjectRef, Timestamp, Transition,
    TransitionDecision, TransitionInput, Trigger, ValidateSettings,
};
use rulehost::{
    Engine, EngineConfig, Host, Install, Isolation, Limits, ManualClock, PolicyId, PolicySet,
    ReplayWith, Scheduler, Settings, SystemClock,
};
use serde_json::{Value, json};

/// rulehost: lifecycle rules for SaaS backends, decided by sandboxed
/// WebAssembly policies.
#[derive(Parser)]
#[command(name = "rulehost", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The database every stateful command works on.
#[derive(Args, Clone)]
struct Db {
    /// The SQLite database file; created on first use. The server and the
    /// commands can use the same file at once.
    #[arg(
        long,
        env = "RULEHOST_DB",
        default_value = "rulehost.db",
        value_name = "FILE"
    )]
    db: PathBuf,
    /// Where compiled policy modules are kept, so that a restart or the
    /// next command does not compile them again (default: `FILE.modules`
    /// beside the database). They are machine code loaded without
    /// validation: a directory another user may write to is not used.
    #[arg(long, env = "RULEHOST_MODULE_CACHE", value_name = "DIR")]
    module_cache: Option<PathBuf>,
}

impl Db {
    /// A host on this database, with `config` and this module cache.
    fn host(&self, config: EngineConfig) -> Result<Host> {
        let beside = || {
            let mut name = self.db.as_os_str().to_owned();
            name.push(".modules");
            PathBuf::from(name)
        };
        let config = EngineConfig {
            cache_dir: Some(self.module_cache.clone().unwrap_or_else(beside)),
            ..config
        };
        Ok(Host::open(&self.db, config)?)
    }
}

/// Who acts and when, for commands that change state.
#[derive(Args, Clone)]
struct Acting {
    /// Who acts, as `KIND:ID`: `staff:anna`, `self_service:m-1`,
    /// `system:billing`.
    #[arg(long, value_name = "KIND:ID")]
    actor: String,
    /// The time the command acts at (RFC 3339; default: the clock).
    #[arg(long, value_name = "TIME")]
    now: Option<Timestamp>,
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
    /// Run the HTTP/JSON service with its scheduler.
    ///
    /// On a new database it creates the demo operators `demo-gym`,
    /// `demo-subscription`, `demo-collections` and `demo-publishing`, each
    /// running its bundled policy set, and prints an admin token once.
    /// SIGINT or SIGTERM stop it after the requests in flight.
    Serve(ServeArgs),
    /// Make an API token and print its secret (shown only this once).
    Token {
        #[command(flatten)]
        db: Db,
        /// The operator the token acts for.
        #[arg(long, conflicts_with = "admin", required_unless_present = "admin")]
        operator: Option<String>,
        /// Make an admin token: creates operators and tokens, acts for all.
        #[arg(long)]
        admin: bool,
        /// A name for people.
        #[arg(long, default_value = "cli")]
        name: String,
        /// Let an operator token install, activate and roll back policy sets.
        #[arg(long)]
        can_install: bool,
    },
    /// Manage an operator's policy set versions.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Lock a subject: runs the operator's `lock` action and prints the
    /// outcome; exits non-zero when the policy refuses.
    Lock(ActionArgs),
    /// Lift a lock: runs the operator's `unlock` action and prints the
    /// outcome; exits non-zero when the policy refuses.
    Unlock(ActionArgs),
    /// Check or replay the audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Push an operator's events to a webhook: set, list, remove.
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// Import legacy locks from a JSON Lines or CSV file (GYM-12).
    Import {
        #[command(flatten)]
        db: Db,
        /// The operator.
        #[arg(long)]
        operator: String,
        /// The file; its format comes from `--format` or the extension
        /// (`.jsonl`, `.csv`).
        file: PathBuf,
        /// `jsonl` or `csv`.
        #[arg(long)]
        format: Option<String>,
        /// Import the valid rows and report the bad ones, instead of
        /// importing nothing when a row is bad.
        #[arg(long)]
        skip_bad_rows: bool,
        #[command(flatten)]
        acting: Acting,
    },
    /// Print everything the host holds about a subject as JSON (PUB-4).
    Export {
        #[command(flatten)]
        db: Db,
        /// The operator.
        #[arg(long)]
        operator: String,
        /// The subject, as `KIND:ID` (`customer:m-1`).
        #[arg(long, value_name = "KIND:ID")]
        subject: SubjectRef,
    },
    /// Print an operator's scheduled transitions as JSON, by id: what is
    /// pending, held because its policy failed, fired or cancelled.
    Schedules {
        #[command(flatten)]
        db: Db,
        /// The operator.
        #[arg(long)]
        operator: String,
        /// Only those in this state: `pending`, `held`, `fired` or
        /// `cancelled`.
        #[arg(long)]
        state: Option<ScheduleState>,
        /// Only those with an id after this one.
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Retry or drop a schedule held because its policy failed, and print
    /// the schedule as it is now as JSON. `retry` lets it fire again at the
    /// next run (within seconds in a running service); `drop` cancels it
    /// for good. Who and why go into the audit trail.
    Schedule {
        #[command(flatten)]
        db: Db,
        /// `retry` or `drop`.
        resolution: Resolution,
        /// The schedule's id (`rulehost schedules --state held`).
        id: i64,
        /// The operator.
        #[arg(long)]
        operator: String,
        /// Why, for the audit trail.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        acting: Acting,
    },
    /// Write a consistent copy of the database to a new file, also while
    /// the service runs, and print what it holds as JSON. To restore, use
    /// the copy as `--db`.
    Backup {
        #[command(flatten)]
        db: Db,
        /// The copy; must not exist yet. It appears only once complete,
        /// checked and on disk.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Remove compiled modules that no host has loaded for DAYS days from
    /// the module cache, and partial files of writes that never finished;
    /// prints what was removed and kept as JSON. The modules of the
    /// database's active versions are kept. A module removed is compiled
    /// again when next needed.
    PruneModules {
        #[command(flatten)]
        db: Db,
        /// Keep what was loaded within this many days.
        #[arg(long, value_name = "DAYS", default_value_t = MODULE_CACHE_DAYS)]
        unused_days: u32,
    },
    /// Run JSON cases against a policy module and print a line per case
    /// and a final `N passed, N failed`; exits non-zero on any failure.
    ///
    /// A case file is a JSON array of cases `{ "name", "hook", "now",
    /// "settings"?, "input", "expect" }`; `expect` is the exact decision
    /// (see the SDK's `testing` module).
    Test {
        /// The policy: `.wasm`, `.wat` or `bundled:FLAVOUR`.
        policy: PathBuf,
        /// Case files.
        #[arg(required = true)]
        cases: Vec<PathBuf>,
    },
    /// Create a policy crate in directory NAME that builds to wasm and
    /// passes its own sample case.
    New {
        /// The crate's name and directory (`acme-policy`).
        name: String,
        /// The rulehost SDK to depend on (default: the one this binary was
        /// built with).
        #[arg(long, value_name = "DIR")]
        sdk: Option<PathBuf>,
    },
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    db: Db,
    /// Where to listen.
    #[arg(
        long,
        env = "RULEHOST_LISTEN",
        default_value = "127.0.0.1:7878",
        value_name = "ADDR"
    )]
    listen: String,
    /// Largest request body, in bytes.
    #[arg(long, env = "RULEHOST_BODY_LIMIT", default_value_t = 1024 * 1024)]
    body_limit: usize,
    /// Largest linear memory of a policy, in bytes.
    #[arg(long, env = "RULEHOST_MEMORY_LIMIT", default_value_t = Limits::default().memory_bytes)]
    memory_limit: usize,
    /// CPU budget per evaluation, in fuel units.
    #[arg(long, env = "RULEHOST_FUEL", default_value_t = Limits::default().fuel)]
    fuel: u64,
    /// `fresh` (a clean instance per evaluation) or `reuse` (a warm
    /// instance per worker, recycled after a trap).
    #[arg(long, env = "RULEHOST_ISOLATION", default_value = "fresh")]
    isolation: String,
    /// Run on a manual clock starting at TIME, moved by an admin with
    /// `POST /v1/clock`: for demos and tests, never production.
    #[arg(long, value_name = "TIME")]
    clock: Option<Timestamp>,
    /// Require every operator's policy sets to be signed by one of its
    /// trusted keys (`rulehost policy trust`).
    #[arg(long, env = "RULEHOST_REQUIRE_SIGNED")]
    require_signed: bool,
    /// Compiled modules that no host has loaded for this many days are
    /// removed from the module cache, at start and then daily (see
    /// `rulehost prune-modules`).
    #[arg(long, env = "RULEHOST_MODULE_CACHE_DAYS", value_name = "DAYS", default_value_t = MODULE_CACHE_DAYS)]
    module_cache_days: u32,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Install a policy set version (not active until activated).
    Install {
        #[command(flatten)]
        db: Db,
        /// The operator; created when new.
        #[arg(long)]
        operator: String,
        /// The module: `.wasm`, `.wat` or `bundled:FLAVOUR`.
        file: PathBuf,
        /// The policy set's name.
        #[arg(long)]
        name: String,
        /// Its version.
        #[arg(long)]
        version: u32,
        /// The operator's settings as a JSON file (default `{}`).
        #[arg(long, value_name = "FILE")]
        settings: Option<PathBuf>,
        /// Activate it right away.
        #[arg(long)]
        activate: bool,
        /// The module's ed25519 signature in hex (`rulehost policy sign`);
        /// required once the operator trusts a key.
        #[arg(long, value_name = "HEX")]
        signature: Option<String>,
    },
    /// Trust an ed25519 public key to sign the operator's policy sets; from
    /// then on its installs must be signed.
    Trust {
        #[command(flatten)]
        db: Db,
        /// The operator.
        #[arg(long)]
        operator: String,
        /// The public key, 64 hex characters (`rulehost policy keygen`).
        #[arg(long, value_name = "HEX")]
        key: String,
    },
    /// Make a signing key: writes its secret seed to FILE (readable by you
    /// only) and prints the public key to trust.
    Keygen {
        /// Where to write the secret seed; refused if it exists.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Sign a policy module with a key from `rulehost policy keygen`; prints
    /// the signature in hex, for `policy install --signature` or the API.
    Sign {
        /// The signing key's file.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The module: `.wasm`, `.wat` or `bundled:FLAVOUR`.
        file: PathBuf,
    },
    /// List the operator's versions; the active one is marked.
    List {
        #[command(flatten)]
        db: Db,
        /// The operator.
        #[arg(long)]
        operator: String,
    },
    /// Make an installed version the active one.
    Activate {
        #[command(flatten)]
        db: Db,
        /// The operator.
        #[arg(long)]
        operator: String,
        /// The version, as `NAME@VERSION` (`gym@2`).
        #[arg(value_name = "NAME@VERSION")]
        policy: PolicyId,
    },
    /// Show what an installed version would have decided differently:
    /// replays the operator's recorded decisions (audit records after
    /// `--after`, at most `--limit` looked at) with it and its settings,
    /// and prints those that differ as JSON; exits 1 when any does.
    Compare {
        #[command(flatten)]
        db: Db,
        /// The operator.
        #[arg(long)]
        operator: String,
        /// The version, as `NAME@VERSION` (`gym@2`).
        #[arg(value_name = "NAME@VERSION")]
        policy: PolicyId,
        /// Only audit records after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At most this many audit records.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Reactivate the version active before the current one.
    Rollback {
        #[command(flatten)]
        db: Db,
        /// The operator.
        #[arg(long)]
        operator: String,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the audit trail's hash chain; exits non-zero when broken.
    Verify {
        #[command(flatten)]
        db: Db,
    },
    /// Evaluate a recorded decision again and print any difference; exits
    /// non-zero when the decisions differ.
    Replay {
        #[command(flatten)]
        db: Db,
        /// The audit record's sequence number.
        seq: u64,
        /// Replay with the operator's active version instead of the
        /// recorded one.
        #[arg(long)]
        active: bool,
    },
}

#[derive(Subcommand)]
enum WebhookCommand {
    /// Push an operator's events to URL from now on (a running `rulehost
    /// serve` takes it up within a second) and print the signing secret,
    /// shown only now. Replaces the webhook the operator had.
    Set {
        #[command(flatten)]
        db: Db,
        /// The operator.
        #[arg(long)]
        operator: String,
        /// Where to post: `http://HOST[:PORT]/PATH`.
        #[arg(long)]
        url: String,
        #[command(flatten)]
        acting: Acting,
    },
    /// Print every operator's webhook as JSON, without secrets.
    List {
        #[command(flatten)]
        db: Db,
    },
    /// Stop pushing an operator's events.
    Remove {
        #[command(flatten)]
        db: Db,
        /// The operator.
        #[arg(long)]
        operator: String,
        #[command(flatten)]
        acting: Acting,
    },
}

#[derive(Args)]
struct ActionArgs {
    #[command(flatten)]
    db: Db,
    /// The operator.
    #[arg(long)]
    operator: String,
    /// The subject, as `KIND:ID` (`customer:m-1`).
    #[arg(long, value_name = "KIND:ID")]
    subject: SubjectRef,
    /// An action parameter as `NAME=VALUE` (`reason=payment_default`,
    /// `duration=14_days`); repeatable.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    #[command(flatten)]
    acting: Acting,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
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
                Some(path) => Settings::from_value(&operator, &read_json(&path, "settings")?)?,
                None => Settings::empty(),
            };
            let now = now.unwrap_or_else(clock_now);
            let output = match hook {
                Hook::Authorize => eval::<Authorize>(&policy, &operator, now, &settings, &input),
                Hook::Billing => eval::<Billing>(&policy, &operator, now, &settings, &input),
                Hook::Transition => eval::<Transition>(&policy, &operator, now, &settings, &input),
                Hook::ValidateSettings => {
                    eval::<ValidateSettings>(&policy, &operator, now, &settings, &input)
                }
            }?;
            println!("{output}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => serve(args),
        Command::Token {
            db,
            operator,
            admin: _,
            name,
            can_install,
        } => {
            let host = open(&db)?;
            let (secret, _) =
                host.create_token(operator.as_deref(), &name, can_install, None, clock_now())?;
            println!("{secret}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy(command) => policy(command),
        Command::Lock(args) => action(args, "lock"),
        Command::Unlock(args) => action(args, "unlock"),
        Command::Webhook(WebhookCommand::Set {
            db,
            operator,
            url,
            acting,
        }) => {
            let (actor, now) = acting.resolve()?;
            let secret = open(&db)?.set_webhook(&operator, &url, &actor, now)?;
            print_json(&json!({ "operator": operator, "url": url, "secret": secret }))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Webhook(WebhookCommand::List { db }) => {
            print_json(&json!({ "webhooks": open(&db)?.webhooks()? }))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Webhook(WebhookCommand::Remove {
            db,
            operator,
            acting,
        }) => {
            let (actor, now) = acting.resolve()?;
            open(&db)?.remove_webhook(&operator, &actor, now)?;
            print_json(&json!({ "operator": operator, "removed": true }))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(AuditCommand::Verify { db }) => {
            let verification = open(&db)?.verify_audit()?;
            print_json(&verification)?;
            Ok(exit(verification.is_intact()))
        }
        Command::Audit(AuditCommand::Replay { db, seq, active }) => {
            let with = if active {
                ReplayWith::Active
            } else {
                ReplayWith::Recorded
            };
            let replay = open(&db)?.replay(seq, with)?;
            print_json(&replay)?;
            Ok(exit(replay.difference.is_none()))
        }
        Command::Import {
            db,
            operator,
            file,
            format,
            skip_bad_rows,
            acting,
        } => {
            let format = match format
                .as_deref()
                .or_else(|| file.extension().and_then(|e| e.to_str()))
            {
                Some("jsonl" | "ndjson") => ImportFormat::JsonLines,
                Some("csv") => ImportFormat::Csv,
                other => bail!(
                    "cannot tell the format of `{}` (`{}`): give `--format jsonl` or `--format csv`",
                    file.display(),
                    other.unwrap_or("")
                ),
            };
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read `{}`", file.display()))?;
            let on_bad_row = if skip_bad_rows {
                OnBadRow::Skip
            } else {
                OnBadRow::Refuse
            };
            let (actor, now) = acting.resolve()?;
            let report =
                open(&db)?.import_locks(&operator, &text, format, on_bad_row, &actor, now)?;
            print_json(&report)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Export {
            db,
            operator,
            subject,
        } => {
            let records = open(&db)?.export_subject(&operator, &subject, clock_now())?;
            print_json(&records)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Schedules {
            db,
            operator,
            state,
            after,
            limit,
        } => {
            let schedules = open(&db)?.schedules(&operator, state, after, limit)?;
            print_json(&json!({ "schedules": schedules }))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Schedule {
            db,
            resolution,
            id,
            operator,
            reason,
            acting,
        } => {
            let (actor, now) = acting.resolve()?;
            let resolved =
                open(&db)?.resolve_held(&operator, id, resolution, &actor, &reason, now)?;
            print_json(&resolved)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Backup { db, out } => {
            print_json(&open(&db)?.backup(&out)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::PruneModules { db, unused_days } => {
            let pruned = open(&db)?.engine().prune_module_cache(days(unused_days))?;
            print_json(&pruned)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Test { policy, cases } => author::test(&policy, &cases),
        Command::New { name, sdk } => author::new(&name, sdk),
    }
}

/// How long compiled modules are kept unused, by default.
const MODULE_CACHE_DAYS: u32 = 30;

fn days(days: u32) -> Duration {
    Duration::from_secs(u64::from(days) * 24 * 60 * 60)
}

fn exit(success: bool) -> ExitCode {
    if success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn clock_now() -> Timestamp {
    use rulehost::Clock as _;
    SystemClock.now()
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn read_json(path: &Path, what: &str) -> Result<Value> {
    let text =
        std::fs::read(path).with_context(|| format!("cannot read {what} `{}`", path.display()))?;
    serde_json::from_slice(&text)
        .with_context(|| format!("{what} `{}` is not JSON", path.display()))
}

fn open(db: &Db) -> Result<Host> {
    db.host(EngineConfig::default())
}

impl Acting {
    fn resolve(&self) -> Result<(Actor, Timestamp)> {
        Ok((
            parse_actor(&self.actor)?,
            self.now.unwrap_or_else(clock_now),
        ))
    }
}

fn parse_actor(text: &str) -> Result<Actor> {
    let Some((kind, id)) = text.split_once(':') else {
        bail!("actor `{text}` is not `KIND:ID` (`staff:anna`)");
    };
    Ok(Actor {
        kind: kind
            .parse()
            .map_err(|e| anyhow::anyhow!("actor `{text}`: {e}"))?,
        id: id.to_owned(),
    })
}

fn serve(args: ServeArgs) -> Result<ExitCode> {
    let isolation = match args.isolation.as_str() {
        "fresh" => Isolation::Fresh,
        "reuse" => Isolation::Reuse,
        other => bail!("`--isolation` must be `fresh` or `reuse`, got `{other}`"),
    };
    let config = EngineConfig {
        isolation,
        limits: Limits {
            memory_bytes: args.memory_limit,
            fuel: args.fuel,
            ..Limits::default()
        },
        ..EngineConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async move {
        let host = Arc::new(args.db.host(config)?);
        let (clock, scheduler_clock): (ServiceClock, Arc<dyn rulehost::Clock>) = match args.clock {
            Some(start) => {
                let manual = Arc::new(ManualClock::new(start));
                (ServiceClock::Manual(manual.clone()), manual)
            }
            None => (ServiceClock::System, Arc::new(SystemClock)),
        };
        let admin = rulehost::service::seed_demo(&host, scheduler_clock.now())?;
        host.require_signatures(args.require_signed);
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("cannot listen on `{}`", args.listen))?;
        let address = listener.local_addr()?;
        let scheduler = Scheduler::start(host.clone(), scheduler_clock);
        tokio::spawn(prune_modules_daily(host.clone(), days(args.module_cache_days)));
        let state = AppState::new(
            host,
            clock,
            Some(scheduler),
            ServiceConfig {
                body_limit: args.body_limit,
                ..ServiceConfig::default()
            },
        );
        println!("rulehost listening on http://{address} (database `{}`)", args.db.db.display());
        if let Some(secret) = admin {
            println!("new database: demo operators {} created", demo_names());
            println!("admin token (shown once): {secret}");
        }
        println!(
            "authenticate with `Authorization: Bearer <token>`; make tokens with `rulehost token --db {} --operator demo-gym`",
            args.db.db.display()
        );
        rulehost::service::serve(state, listener, shutdown_signal()).await?;
        println!("rulehost stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// Prunes the module cache now and then every day, for as long as the
/// service runs. A failure is a warning: it only leaves files behind.
async fn prune_modules_daily(host: Arc<Host>, unused_for: Duration) {
    let mut daily = tokio::time::interval(days(1));
    loop {
        daily.tick().await;
        let host = host.clone();
        let pruned =
            tokio::task::spawn_blocking(move || host.engine().prune_module_cache(unused_for)).await;
        match pruned {
            Ok(Ok(pruned)) if pruned.removed > 0 => println!(
                "module cache `{}`: files removed: {} ({} bytes), unused for {} days",
                pruned.dir.display(),
                pruned.removed,
                pruned.removed_bytes,
                unused_for.as_secs() / 86_400
            ),
            Ok(Ok(_)) => {}
            Ok(Err(error)) => eprintln!("warning: {error}"),
            Err(error) => eprintln!("warning: module cache prune: {error}"),
        }
    }
}

fn demo_names() -> String {
    rulehost::service::DEMO_OPERATORS
        .iter()
        .map(|(name, _)| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        // Without a handler the default (exit) applies; nothing to wait on.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

fn policy(command: PolicyCommand) -> Result<ExitCode> {
    let by = Actor::system("rulehost-cli");
    let now = clock_now();
    match command {
        PolicyCommand::Install {
            db,
            operator,
            file,
            name,
            version,
            settings,
            activate,
            signature,
        } => {
            let wasm = read_module(&file)?;
            let settings = match settings {
                Some(path) => read_json(&path, "settings")?,
                None => json!({}),
            };
            let id = PolicyId::new(name, version);
            let install = Install {
                id: id.clone(),
                wasm: &wasm,
                signature: signature.as_deref(),
                settings: &settings,
                activate,
            };
            let policy = open(&db)?.install_with(&operator, install, &by, now)?;
            print_json(&json!({ "installed": id, "sha256": policy.sha256(), "active": activate }))?;
        }
        PolicyCommand::Trust { db, operator, key } => {
            open(&db)?.trust_key(&operator, &key, &by, now)?;
            print_json(&json!({ "operator": operator, "trusted": key }))?;
        }
        PolicyCommand::Keygen { out } => {
            let (seed, public) = rulehost::integrity::new_key().map_err(anyhow::Error::msg)?;
            write_secret(&out, &seed)?;
            println!("{public}");
        }
        PolicyCommand::Sign { key, file } => {
            let seed = std::fs::read_to_string(&key)
                .with_context(|| format!("cannot read signing key `{}`", key.display()))?;
            let wasm = read_module(&file)?;
            let engine = Engine::new(EngineConfig::default())?;
            let sha256 = engine
                .load(PolicyId::new("signing", 0), &wasm)?
                .sha256()
                .to_owned();
            let signature = rulehost::integrity::sign(&seed, &sha256)
                .map_err(|e| anyhow::anyhow!("`{}`: {e}", key.display()))?;
            println!("{signature}");
        }
        PolicyCommand::List { db, operator } => {
            print_json(&open(&db)?.policy_versions(&operator)?)?;
        }
        PolicyCommand::Activate {
            db,
            operator,
            policy,
        } => {
            open(&db)?.activate(&operator, &policy, &by, now)?;
            print_json(&json!({ "active": policy }))?;
        }
        PolicyCommand::Compare {
            db,
            operator,
            policy,
            after,
            limit,
        } => {
            let comparison = open(&db)?.compare(&operator, &policy, after, limit)?;
            print_json(&comparison)?;
            return Ok(exit(comparison.changed.is_empty()));
        }
        PolicyCommand::Rollback { db, operator } => {
            let id = open(&db)?.rollback(&operator, &by, now)?;
            print_json(&json!({ "active": id }))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes a secret to a new file only its owner may read.
fn write_secret(path: &Path, secret: &str) -> Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create `{}` (it must not exist yet)", path.display()))?;
    writeln!(file, "{secret}").with_context(|| format!("cannot write `{}`", path.display()))
}

/// The bytes of a module file, or of a bundled policy set
/// (`bundled:FLAVOUR`).
fn read_module(file: &Path) -> Result<Vec<u8>> {
    if let Some(flavour) = file.to_str().and_then(|p| p.strip_prefix("bundled:")) {
        return Ok(bundled(flavour)?.to_vec());
    }
    std::fs::read(file).with_context(|| format!("cannot read policy `{}`", file.display()))
}

fn bundled(flavour: &str) -> Result<&'static [u8]> {
    rulehost::bundled::get(flavour).ok_or_else(|| {
        let known: Vec<&str> = rulehost::bundled::ALL
            .iter()
            .map(|(name, _)| *name)
            .collect();
        anyhow::anyhow!(
            "no bundled policy set `{flavour}`: bundled are `{}`",
            known.join("`, `")
        )
    })
}

fn action(args: ActionArgs, action: &str) -> Result<ExitCode> {
    let mut params = serde_json::Map::new();
    for param in &args.params {
        let Some((name, value)) = param.split_once('=') else {
            bail!("parameter `{param}` is not `NAME=VALUE`");
        };
        params.insert(name.to_owned(), Value::from(value));
    }
    let (actor, now) = args.acting.resolve()?;
    let host = open(&args.db)?;
    let input = TransitionInput {
        trigger: Trigger::Action,
        action: action.to_owned(),
        actor,
        subject: Subject::new(args.subject.kind, args.subject.id.clone()),
        params: Value::Object(params),
    };
    let outcome = host.transition(&args.operator, now, input)?;
    print_json(&json!({
        "decision": outcome.evaluation,
        "audit_seq": outcome.committed.as_ref().map(|c| c.audit_seq),
        "events": outcome.events,
    }))?;
    Ok(exit(matches!(
        outcome.evaluation.decision,
        TransitionDecision::Apply { .. }
    )))
}

/// Loads a policy file, or a bundled policy set named `bundled:FLAVOUR`.
fn load_policy(engine: &Engine, policy: &std::path::Path) -> Result<PolicySet> {
    let Some(flavour) = policy.to_str().and_then(|p| p.strip_prefix("bundled:")) else {
        return Ok(engine.load_file(policy, None)?);
    };
    Ok(engine.load(PolicyId::new(flavour, 0), bundled(flavour)?)?)
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
