//! The `loyalty` command line: argument parsing, file reading, exit codes.
//!
//! Thin by design: every decision is made by `loyalty-core`. `anyhow` lives here, at the
//! edge; the core's errors are typed.
//!
//! Exit codes: 0 when the command did its work (even if some records were rejected: that is
//! output, not failure); 2 when an argument is wrong, a file cannot be read or the config
//! does not validate, with the reason on standard error.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use loyalty_core::time::Timestamp;
use loyalty_core::{parse_config, Config, Engine};

mod demo;
pub mod loadgen;
mod streaming;

/// Event-sourced loyalty engine.
#[derive(Parser, Debug)]
#[command(name = "loyalty", version, about, long_about = None, args_override_self = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Fold a file of envelopes through the engine and print JSON lines (SPEC section 9).
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
    /// The whole streaming path on an embedded broker, with a live view (`--offline`: fold
    /// the sample files and print a summary).
    Demo(demo::DemoArgs),
    /// Run the streaming service: input topics in, RocksDB ledger, loyalty events out.
    Run {
        #[command(flatten)]
        args: Box<streaming::RunArgs>,
        /// The state directory (RocksDB).
        #[arg(long)]
        state: PathBuf,
    },
    /// Print a state directory in exactly the JSON lines of `loyalty fold`.
    Export {
        /// The state directory.
        #[arg(long)]
        state: PathBuf,
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
    },
    /// Generate synthetic payments, to a file or to Kafka (benchmarks).
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
    init_tracing();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<Invalid>() => ExitCode::from(1),
        Err(e) => {
            eprintln!("loyalty: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LOYALTY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .try_init();
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Fold {
            config,
            events,
            until,
        } => fold(&config, &events, until.as_deref()),
        Command::Demo(args) => demo::run(&args),
        Command::Run { args, state } => streaming::run(&args, &state),
        Command::Export { state } => streaming::export(&state),
        Command::Log { kafka } => streaming::log(&kafka),
        Command::Replay {
            args,
            state,
            publish,
        } => streaming::replay(&args, &state, publish),
        Command::Loadgen(args) => loadgen::run(&args),
        Command::VerifySignature(args) => {
            if streaming::verify(&args)? {
                Ok(())
            } else {
                Err(Invalid.into())
            }
        }
    }
}

/// Reads and validates a config file.
pub fn load_config(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    parse_config(&text).with_context(|| format!("the config {} does not validate", path.display()))
}

fn fold(config: &Path, events: &Path, until: Option<&str>) -> Result<()> {
    let until = until
        .map(|u| {
            Timestamp::parse_rfc3339(u)
                .with_context(|| format!("--until {u:?} is not an RFC 3339 time"))
        })
        .transpose()?;
    let config = load_config(config)?;
    let log = std::fs::read(events)
        .with_context(|| format!("cannot read the events file {}", events.display()))?;
    let mut engine = Engine::new(&config);
    tracing::info!(bytes = log.len(), "folding");
    // Buffer everything: an --until before the end clock is refused with nothing printed.
    let mut text = Vec::with_capacity(log.len());
    let result = loyalty_core::fold::fold(&mut engine, log.split(|b| *b == b'\n'), until, |line| {
        text.extend_from_slice(line.as_bytes());
        text.push(b'\n');
    });
    if let Err(e) = result {
        bail!("--until: {e}");
    }
    let stdout = io::stdout();
    let mut w = BufWriter::with_capacity(1 << 16, stdout.lock());
    match w.write_all(&text).and_then(|()| w.flush()) {
        Ok(()) => Ok(()),
        // A closed pipe (`loyalty fold ... | head`) is the reader's choice, not a failure.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e).context("cannot write to standard output"),
    }
}
