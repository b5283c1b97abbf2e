//! The `loyalty` command line: argument parsing, file reading, exit codes.
//!
//! Thin by design: every decision is made by `loyalty-core`. `anyhow` lives here, at the
//! edge; the core's errors are typed.
//!
//! Exit codes: 0 when the command did its work (even if some records were rejected: that is
//! output, not failure); 2 when an argument is wrong, a file cannot be read or the config
//! does not validate, with the reason on standard error.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use loyalty_core::time::Timestamp;
use loyalty_core::{parse_config, Config, Engine};

mod api;
pub mod backtest;
mod demo;
pub mod fold;
pub mod import;
pub mod loadgen;
mod streaming;

/// Event-sourced loyalty engine.
#[derive(Parser, Debug)]
#[command(name = "loyalty", version, about, long_about = None, args_override_self = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// A TOML settings file whose keys are the long flag names (`brokers = "kafka:9092"`,
    /// `batch-size = 2000`). Precedence: flag, then environment variable, then this file,
    /// then the built-in default.
    #[arg(long, global = true, env = "LOYALTY_SETTINGS")]
    settings: Option<PathBuf>,
    /// How logs are written to standard error (the level: `LOYALTY_LOG`, e.g. `debug`).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "LOYALTY_LOG_FORMAT"
    )]
    log_format: LogFormat,
}

/// The format of the logs.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line.
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Fold a file of envelopes through the engine and print its JSON lines (transactions,
    /// events, rejections, then every account; docs/output.md).
    Fold {
        /// The program config (`{"programs": [...]}`).
        #[arg(long)]
        config: PathBuf,
        /// The records, one JSON envelope a line, in log order.
        #[arg(long)]
        events: PathBuf,
        /// Advance the clock to this RFC 3339 time at the end, as a `clock.tick` would.
        #[arg(long)]
        until: Option<String>,
    },
    /// Fold a log twice, with the baseline programs and with a candidate's in their place,
    /// and report what differs (points per rule, outstanding, tiers, redemptions, the
    /// members whose balance changes most). Nothing is published or stored.
    Backtest(backtest::BacktestArgs),
    /// The whole streaming path on an embedded broker, with a live view (`--offline`: fold
    /// the sample files and print a summary).
    Demo(demo::DemoArgs),
    /// Run the streaming service: input topics in, RocksDB ledger, loyalty events out.
    Run {
        #[command(flatten)]
        args: Box<streaming::RunArgs>,
        #[command(flatten)]
        http: api::HttpArgs,
        /// The state directory (RocksDB).
        #[arg(long, env = "LOYALTY_STATE")]
        state: PathBuf,
    },
    /// Serve a state directory (a replayed state, a checkpoint) over the HTTP API,
    /// read-only: `--http-addr` is needed, and every command answers 405 (keys `sk_` and
    /// `rk_` both read).
    Serve {
        #[command(flatten)]
        http: api::HttpArgs,
        /// The state directory.
        #[arg(long, env = "LOYALTY_STATE")]
        state: PathBuf,
        /// Bootstrap brokers of the engine's log, for `POST /v1/backtest` (optional: without
        /// them a backtest answers 400 `log_unavailable`).
        #[arg(long, env = "LOYALTY_BROKERS")]
        brokers: Option<String>,
        /// The engine's log topic (with `--brokers`).
        #[arg(long, default_value = "loyalty.log", env = "LOYALTY_LOG_TOPIC")]
        log_topic: String,
    },
    /// Validate a program config and warn of what validates but likely is a mistake (a
    /// trigger a typo away from a known event type, a trigger that never fires).
    Check {
        /// The program config (`{"programs": [...]}`).
        #[arg(long)]
        config: PathBuf,
    },
    /// Print a state directory in exactly the JSON lines of `loyalty fold`.
    Export {
        /// The state directory.
        #[arg(long, env = "LOYALTY_STATE")]
        state: PathBuf,
        /// Only this log partition's ledger, from the state of an instance of a group
        /// (without it, every partition the instance holds a state of, in order).
        #[arg(long)]
        partition: Option<i32>,
    },
    /// Print the engine's log topic as JSON envelopes, one a line, in log order.
    Log {
        #[command(flatten)]
        kafka: streaming::KafkaArgs,
    },
    /// Rebuild the state from the log topic into a new directory.
    Replay {
        #[command(flatten)]
        args: Box<streaming::RunArgs>,
        /// The new state directory.
        #[arg(long)]
        state: PathBuf,
        /// Publish the events again (same ids and signatures).
        #[arg(long)]
        publish: bool,
        /// Rebuild only this log partition's state, as an instance of a group folds it.
        #[arg(long)]
        partition: Option<i32>,
    },
    /// Check every invariant of a stored state (exit 0 sound, 1 problems, one JSON line each).
    Verify {
        /// The state directory.
        #[arg(long, env = "LOYALTY_STATE")]
        state: PathBuf,
    },
    /// Write a consistent copy of a state directory (also of a running engine's) to a new one.
    Checkpoint {
        /// The state directory.
        #[arg(long, env = "LOYALTY_STATE")]
        state: PathBuf,
        /// The new directory.
        #[arg(long)]
        to: PathBuf,
    },
    /// Enrol an existing program's members from a CSV or JSON-lines file (customer,
    /// birthday, openingBalance, tier), through the commands topic. Exit 1 when some rows
    /// were bad (each reported; the good ones are imported).
    Import(import::ImportArgs),
    /// Generate synthetic traffic, to a file or to Kafka (benchmarks).
    Loadgen(loadgen::LoadArgs),
    /// Verify an `x-vinr-signature` header against a payload (exit 0 valid, 1 invalid).
    VerifySignature(streaming::VerifyArgs),
}

/// A signature that does not verify: exit code 1, the answer already printed.
#[derive(Debug)]
struct Invalid;

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the signature does not verify")
    }
}

impl std::error::Error for Invalid {}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let argv = match with_settings_file(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("loyalty: error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(argv);
    let service = matches!(cli.command, Command::Run { .. } | Command::Replay { .. });
    init_tracing(cli.log_format, if service { "info" } else { "warn" });
    let json_logs = cli.log_format == LogFormat::Json;
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<Invalid>() => ExitCode::from(1),
        Err(e) => {
            // A Kafka error the broker or the network may recover from (a timeout, a leader
            // election, brokers down) says so, for whoever restarts the service.
            let retriable = e.chain().any(|c| {
                c.downcast_ref::<loyalty_stream::error::StreamError>()
                    .is_some_and(|s| s.is_retriable())
            });
            if json_logs {
                // A log pipeline reads one JSON object a line, the failure included.
                tracing::error!(error = %format!("{e:#}"), retriable, "loyalty failed");
            } else if retriable {
                eprintln!("loyalty: error (retriable: a restart may succeed): {e:#}");
            } else {
                eprintln!("loyalty: error: {e:#}");
            }
            ExitCode::from(2)
        }
    }
}

fn init_tracing(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LOYALTY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only for a person at a terminal: a file or a pipe gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .with_writer(io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// The subcommands a settings file configures.
const SETTINGS_COMMANDS: [&str; 7] = [
    "run",
    "replay",
    "log",
    "export",
    "verify",
    "checkpoint",
    "serve",
];

/// The command line with the settings file's values added where neither a flag nor an
/// environment variable gives one (flag > environment > file > default). The file is
/// `--settings FILE` or `LOYALTY_SETTINGS`; a key that is no flag of any subcommand is an
/// error, a key of another subcommand is left out.
fn with_settings_file(mut argv: Vec<OsString>) -> Result<Vec<OsString>> {
    let text: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let path = text
        .iter()
        .position(|a| a == "--settings")
        .and_then(|i| text.get(i + 1).cloned())
        .or_else(|| {
            text.iter()
                .find_map(|a| a.strip_prefix("--settings=").map(str::to_string))
        })
        .or_else(|| std::env::var("LOYALTY_SETTINGS").ok())
        .filter(|p| !p.is_empty());
    let Some(path) = path else { return Ok(argv) };
    let root = <Cli as clap::CommandFactory>::command();
    let Some((at, sub)) = text.iter().enumerate().skip(1).find_map(|(i, a)| {
        root.get_subcommands()
            .find(|s| s.get_name() == a)
            .map(|s| (i, s))
    }) else {
        return Ok(argv);
    };
    // The service's settings: the tools (fold, demo, loadgen, verify-signature) take theirs
    // from the command line only, and do not even read the file.
    if !SETTINGS_COMMANDS.contains(&sub.get_name()) {
        return Ok(argv);
    }
    let body = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the settings file {path}"))?;
    let table: toml::Table = body
        .parse()
        .with_context(|| format!("the settings file {path} is not TOML"))?;
    let known = |name: &str| {
        root.get_arguments()
            .chain(root.get_subcommands().flat_map(|s| s.get_arguments()))
            .any(|a| a.get_long() == Some(name))
    };
    let mut added = Vec::new();
    for (key, value) in &table {
        if key == "settings" || !known(key) {
            bail!("the settings file {path}: unknown key {key:?} (keys are the long flag names)");
        }
        let Some(arg) = sub
            .get_arguments()
            .chain(root.get_arguments())
            .find(|a| a.get_long() == Some(key.as_str()))
        else {
            continue;
        };
        let flag = format!("--{key}");
        let on_line = text
            .iter()
            .any(|a| *a == flag || a.starts_with(&format!("{flag}=")));
        let in_env = arg
            .get_env()
            .is_some_and(|e| std::env::var_os(e).is_some_and(|v| !v.is_empty()));
        if on_line || in_env {
            continue;
        }
        let scalar = |v: &toml::Value| match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Boolean(b) => Ok(b.to_string()),
            other => Err(anyhow::anyhow!(
                "the settings file {path}: {key} = {other} is not a string, number or boolean"
            )),
        };
        if !arg.get_action().takes_values() {
            // A switch set in a shared file could not be turned off on the command line
            // (`publish = true` would make every replay publish).
            bail!("the settings file {path}: {key} is a switch; give it on the command line");
        }
        match value {
            toml::Value::Array(items) => {
                let parts: Result<Vec<String>> = items.iter().map(scalar).collect();
                added.push(OsString::from(format!("{flag}={}", parts?.join(","))));
            }
            v => added.push(OsString::from(format!("{flag}={}", scalar(v)?))),
        }
    }
    argv.splice(at + 1..at + 1, added);
    Ok(argv)
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Fold {
            config,
            events,
            until,
        } => fold(&config, &events, until.as_deref()),
        Command::Demo(args) => demo::run(&args),
        Command::Check { config } => check(&config),
        Command::Backtest(args) => backtest::run(&args),
        Command::Run { args, http, state } => streaming::run(&args, &http, &state),
        Command::Serve {
            http,
            state,
            brokers,
            log_topic,
        } => {
            let log = brokers.map(|brokers| streaming::KafkaArgs { brokers, log_topic });
            api::serve(&state, &http, log.as_ref())
        }
        Command::Export { state, partition } => streaming::export(&state, partition),
        Command::Log { kafka } => streaming::log(&kafka),
        Command::Replay {
            args,
            state,
            publish,
            partition,
        } => streaming::replay(&args, &state, publish, partition),
        Command::Loadgen(args) => loadgen::run(&args),
        Command::Import(args) => {
            if import::run(&args)? {
                Ok(())
            } else {
                Err(Invalid.into())
            }
        }
        Command::Verify { state } => {
            if streaming::verify_state(&state)? {
                Ok(())
            } else {
                Err(Invalid.into())
            }
        }
        Command::Checkpoint { state, to } => streaming::checkpoint(&state, &to),
        Command::VerifySignature(args) => {
            if streaming::verify(&args)? {
                Ok(())
            } else {
                Err(Invalid.into())
            }
        }
    }
}

/// Reads and validates a config file, printing its warnings to standard error.
pub fn load_config(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    let config = parse_config(&text)
        .with_context(|| format!("the config {} does not validate", path.display()))?;
    for w in loyalty_core::config::warnings(&config) {
        eprintln!("loyalty: warning: {}: {w}", path.display());
    }
    Ok(config)
}

/// `loyalty check`: validates a config file and prints its warnings; exit 0 when it
/// validates (warnings or not), 2 when it does not.
fn check(path: &Path) -> Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    let config = parse_config(&text)
        .with_context(|| format!("the config {} does not validate", path.display()))?;
    let warnings = loyalty_core::config::warnings(&config);
    for w in &warnings {
        println!("warning: {w}");
    }
    println!(
        "{}: {} program(s) valid, {} warning(s)",
        path.display(),
        config.programs.len(),
        warnings.len()
    );
    Ok(())
}

fn fold(config: &Path, events: &Path, until: Option<&str>) -> Result<()> {
    let until = until
        .map(|u| {
            Timestamp::parse_rfc3339(u)
                .with_context(|| format!("--until {u:?} is not an RFC 3339 time"))
        })
        .transpose()?;
    let config = load_config(config)?;
    let mut engine = Engine::new(&config);
    fold::run(&mut engine, events, until, &mut io::stdout())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(argv: &[&str]) -> Result<streaming::RunArgs> {
        let argv = with_settings_file(argv.iter().map(OsString::from).collect())?;
        match Cli::try_parse_from(argv)?.command {
            Command::Run { args, .. } => Ok(*args),
            other => bail!("not run: {other:?}"),
        }
    }

    /// One test for every precedence case: the environment is the process's, shared by
    /// tests running in parallel.
    #[test]
    fn flag_beats_environment_beats_settings_file_beats_default() {
        let dir = std::env::temp_dir().join(format!("loyalty-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("loyalty.toml");
        std::fs::write(
            &file,
            "brokers = \"file:9092\"\nbatch-size = 77\ntick-interval-secs = 5\n\
             input-topics = [\"a\", \"b\"]\nmetrics-addr = \"0.0.0.0:9464\"\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let base = ["loyalty", "run", "--state", "/tmp/s", "--settings", f];

        let a = run_args(&base).unwrap();
        assert_eq!(a.kafka.brokers, "file:9092");
        assert_eq!(a.batch_size, 77);
        assert_eq!(a.input_topics, vec!["a", "b"]);
        assert_eq!(a.metrics_addr.as_deref(), Some("0.0.0.0:9464"));
        // Not in the file: the default.
        assert_eq!(a.max_skew_secs, 300);

        // A flag beats the file.
        let mut argv = base.to_vec();
        argv.extend(["--batch-size", "5"]);
        assert_eq!(run_args(&argv).unwrap().batch_size, 5);
        let mut argv = base.to_vec();
        argv.push("--batch-size=6");
        assert_eq!(run_args(&argv).unwrap().batch_size, 6);

        // The environment beats the file; a flag beats the environment.
        std::env::set_var("LOYALTY_TICK_INTERVAL_SECS", "9");
        assert_eq!(run_args(&base).unwrap().tick_interval_secs, 9);
        let mut argv = base.to_vec();
        argv.extend(["--tick-interval-secs", "11"]);
        assert_eq!(run_args(&argv).unwrap().tick_interval_secs, 11);
        std::env::remove_var("LOYALTY_TICK_INTERVAL_SECS");
        assert_eq!(run_args(&base).unwrap().tick_interval_secs, 5);

        // A key that is no flag is refused, naming it; a malformed file too.
        std::fs::write(&file, "batch_size = 3\n").unwrap();
        let e = run_args(&base).unwrap_err().to_string();
        assert!(e.contains("unknown key \"batch_size\""), "{e}");
        std::fs::write(&file, "brokers = \n").unwrap();
        let e = run_args(&base).unwrap_err().to_string();
        assert!(e.contains("is not TOML"), "{e}");
        // A key of another subcommand is left out (`to` belongs to `checkpoint`).
        std::fs::write(&file, "brokers = \"b:1\"\nto = \"/x\"\n").unwrap();
        assert_eq!(run_args(&base).unwrap().kafka.brokers, "b:1");
        // A switch is refused: the command line could not turn it off.
        std::fs::write(&file, "publish = true\n").unwrap();
        let argv = ["loyalty", "replay", "--state", "/tmp/s", "--settings", f];
        let e = with_settings_file(argv.iter().map(OsString::from).collect())
            .unwrap_err()
            .to_string();
        assert!(e.contains("publish is a switch"), "{e}");
        // The tools do not read the file at all, even a broken one.
        std::fs::write(&file, "brokers = \n").unwrap();
        let argv = [
            "loyalty",
            "fold",
            "--config",
            "c",
            "--events",
            "e",
            "--settings",
            f,
        ];
        let argv = with_settings_file(argv.iter().map(OsString::from).collect()).unwrap();
        assert!(Cli::try_parse_from(argv).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
