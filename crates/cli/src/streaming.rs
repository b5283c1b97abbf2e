//! The streaming subcommands: `run`, `export`, `log`, `replay`, `verify-signature`.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use loyalty_store::Store;
use loyalty_stream::{replay, service, signature, Format, Settings};

/// Kafka connection and topic names, shared by the streaming subcommands.
#[derive(Args, Debug, Clone)]
pub struct KafkaArgs {
    /// Bootstrap brokers, `host:port[,host:port]`.
    #[arg(long, env = "LOYALTY_BROKERS")]
    pub brokers: String,
    /// The engine's own log topic.
    #[arg(long, default_value = "loyalty.log", env = "LOYALTY_LOG_TOPIC")]
    pub log_topic: String,
}

/// Outbound encoding.
#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum FormatArg {
    /// JSON envelopes.
    Json,
    /// protobuf `Envelope`s (proto/loyalty.proto).
    Protobuf,
}

/// Options of `loyalty run` (and of `replay --publish`).
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The program config; programs that differ from the state's are appended to the log.
    #[arg(long, env = "LOYALTY_CONFIG")]
    pub config: Option<PathBuf>,
    /// The HMAC key outbound messages are signed with.
    #[arg(long, env = "LOYALTY_SIGNING_SECRET", hide_env_values = true)]
    pub signing_secret: Option<String>,
    /// Outbound value encoding.
    #[arg(long, value_enum, default_value = "json", env = "LOYALTY_FORMAT")]
    pub format: FormatArg,
    /// Input topics, comma-separated.
    #[arg(
        env = "LOYALTY_INPUT_TOPICS",
        long,
        value_delimiter = ',',
        default_value = "payment.completed,payment.refunded,invoice.paid,subscription.created,referral.converted,loyalty.commands"
    )]
    pub input_topics: Vec<String>,
    /// Partitions of the input topics the engine creates.
    #[arg(long, default_value_t = 1, env = "LOYALTY_INPUT_PARTITIONS")]
    pub input_partitions: i32,
    /// Partitions of the log topic, when the engine creates it.
    #[arg(long, default_value_t = 1, env = "LOYALTY_LOG_PARTITIONS")]
    pub log_partitions: i32,
    /// The dead-letter topic.
    #[arg(long, default_value = "loyalty.dlq", env = "LOYALTY_DLQ_TOPIC")]
    pub dlq_topic: String,
    /// Prefix of the outbound topics (each is named after its event type).
    #[arg(long, default_value = "", env = "LOYALTY_OUTPUT_PREFIX")]
    pub output_prefix: String,
    /// Seconds between the `clock.tick` records the engine writes into its log.
    #[arg(long, default_value_t = 60, env = "LOYALTY_TICK_INTERVAL_SECS")]
    pub tick_interval_secs: u64,
    /// How many seconds a record's `created` may be ahead of the wall clock.
    #[arg(long, default_value_t = 300, env = "LOYALTY_MAX_SKEW_SECS")]
    pub max_skew_secs: u64,
    /// Records per batch.
    #[arg(long, default_value_t = 2000, env = "LOYALTY_BATCH_SIZE")]
    pub batch_size: usize,
    /// Accounts kept in memory between batches; the others are read from the state
    /// directory when a record needs them (0: none between batches).
    #[arg(long, default_value_t = loyalty_stream::folder::DEFAULT_ACCOUNT_CACHE, env = "LOYALTY_ACCOUNT_CACHE")]
    pub account_cache: usize,
    /// Serve `/metrics`, `/healthz` and `/readyz` on this address (`HOST:PORT`).
    #[arg(long, env = "LOYALTY_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// `loyalty run` only (replay ignores it; `--partition` rebuilds one partition): run
    /// as one instance of a group: instances started with the same name split the log's
    /// partitions through Kafka's consumer-group protocol, each keeping the state of
    /// the partitions it holds under its own `--state` (docs/scale-out.md).
    #[arg(long, env = "LOYALTY_GROUP")]
    pub group: Option<String>,
    /// `loyalty run --group` only: milliseconds without a heartbeat after which the group gives
    /// a silent instance's partitions to the others.
    #[arg(long, default_value_t = 10_000, env = "LOYALTY_SESSION_TIMEOUT_MS")]
    pub session_timeout_ms: u64,
    /// `loyalty run --group` only: how many other instances keep a warm copy of each partition,
    /// folding its log as its owner does (publishing nothing), so that a partition whose owner
    /// dies is served again from a copy instead of a fold from the start.
    #[arg(long, default_value_t = 0, env = "LOYALTY_STANDBY_REPLICAS")]
    pub standby_replicas: usize,
    /// `loyalty run --group` only: the URL the other instances reach this one's HTTP API at
    /// (`http://HOST:PORT`; by default `http://` and `--http-addr`).
    #[arg(long, env = "LOYALTY_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
}

impl RunArgs {
    pub fn settings(&self, need_secret: bool) -> Result<Settings> {
        let mut s = Settings::new(&self.kafka.brokers);
        s.log_topic = self.kafka.log_topic.clone();
        s.input_topics = self.input_topics.clone();
        s.input_partitions = self.input_partitions.max(1);
        s.log_partitions = self.log_partitions.max(1);
        s.dlq_topic = self.dlq_topic.clone();
        s.output_prefix = self.output_prefix.clone();
        s.format = match self.format {
            FormatArg::Json => Format::Json,
            FormatArg::Protobuf => Format::Protobuf,
        };
        s.tick_interval = Duration::from_secs(self.tick_interval_secs.max(1));
        s.max_skew = Duration::from_secs(self.max_skew_secs);
        s.batch_size = self.batch_size.max(1);
        s.account_cache = self.account_cache;
        match &self.signing_secret {
            Some(secret) if !secret.is_empty() => s.signing_secret = secret.as_bytes().to_vec(),
            _ if need_secret => {
                bail!("a signing secret is needed: --signing-secret or LOYALTY_SIGNING_SECRET")
            }
            _ => {}
        }
        if let Some(path) = &self.config {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the config file {}", path.display()))?;
            s.programs = loyalty_core::config::program_texts(&text)
                .with_context(|| format!("the config {} does not validate", path.display()))?;
            if let Ok(config) = loyalty_core::parse_config(&text) {
                for w in loyalty_core::config::warnings(&config) {
                    tracing::warn!(config = %path.display(), warning = %w, "the config may hold a mistake");
                }
            }
            s.config_digest = Some(loyalty_stream::config_digest(text.as_bytes()));
        }
        Ok(s)
    }
}

/// A flag set by SIGINT or SIGTERM.
pub(crate) fn stop_on_signal() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            #[cfg(unix)]
            {
                let mut term =
                    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    {
                        Ok(t) => t,
                        Err(_) => return,
                    };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
        });
        tracing::info!("stopping");
        flag.store(true, Ordering::SeqCst);
    });
    stop
}

pub fn run(args: &RunArgs, http: &crate::api::HttpArgs, state: &Path) -> Result<()> {
    let settings = args.settings(true)?;
    if let Some(name) = &args.group {
        return run_group(args, http, state, settings, name);
    }
    let store = Arc::new(
        Store::open(state)
            .with_context(|| format!("cannot open the state in {}", state.display()))?,
    );
    let stop = stop_on_signal();
    let counters = Arc::new(service::Counters::default());
    if let Some(addr) = &args.metrics_addr {
        loyalty_stream::metrics::serve(addr, counters.metrics.clone())?;
    }
    let server = crate::api::start_for_run(http, &settings, store.clone(), &counters)?;
    let result = service::run(&settings, &store, &stop, &counters);
    drop(server);
    Ok(result?)
}

/// `loyalty run --group`: one instance of a group.
fn run_group(
    args: &RunArgs,
    http: &crate::api::HttpArgs,
    state: &Path,
    settings: Settings,
    name: &str,
) -> Result<()> {
    if name.is_empty() || name.contains(char::is_whitespace) {
        bail!("--group: {name:?} is no consumer group name (one word, no spaces)");
    }
    if state.join("CURRENT").exists() {
        bail!(
            "{} holds the state of an engine that folds every partition; an instance of a \
             group keeps one state per partition (in partition-P below --state): give it a \
             directory of its own",
            state.display()
        );
    }
    let advertise_url = match (&http.http_addr, &args.advertise_url) {
        (None, _) => None,
        (Some(_), Some(url)) => {
            let ok = url
                .parse::<axum::http::Uri>()
                .is_ok_and(|u| u.scheme_str() == Some("http") && u.host().is_some());
            if !ok {
                bail!("--advertise-url: {url:?} is no http://HOST:PORT URL");
            }
            Some(url.trim_end_matches('/').to_string())
        }
        (Some(addr), None) if addr.starts_with("0.0.0.0") || addr.starts_with("[::]") => bail!(
            "--advertise-url is needed: the other instances cannot reach {addr}; give the \
             address they reach this one at (http://HOST:PORT)"
        ),
        (Some(addr), None) => Some(format!("http://{addr}")),
    };
    let session_timeout = Duration::from_millis(args.session_timeout_ms.max(1000));
    // Stable across restarts, so that the standbys an instance keeps stay its own: its
    // advertised URL, or this machine and state directory.
    let id = advertise_url.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        let _ = std::fs::create_dir_all(state);
        let dir = std::fs::canonicalize(state).unwrap_or_else(|_| state.to_path_buf());
        format!("{host}:{}", dir.display())
    });
    let group = loyalty_stream::group::Group {
        name: name.to_string(),
        state: state.to_path_buf(),
        session_timeout,
        advertise_url,
        id,
        standby_replicas: args.standby_replicas,
    };
    let mut settings = settings;
    if group.announces() {
        settings.instances_topic = Some(loyalty_stream::group::instances_topic(&settings));
    }
    let stop = stop_on_signal();
    let counters = Arc::new(service::Counters::default());
    if let Some(addr) = &args.metrics_addr {
        loyalty_stream::metrics::serve(addr, counters.metrics.clone())?;
    }
    // An instance presumed gone once it has not announced itself for a session timeout
    // (its partitions are given to others by then) and a few announcements more.
    let serving = Arc::new(loyalty_stream::group::Serving::new(
        session_timeout + Duration::from_secs(6),
    ));
    let server = crate::api::start_for_group(http, &settings, serving.clone(), &counters)?;
    let result = loyalty_stream::group::run(&settings, &group, &serving, &stop, &counters);
    drop(server);
    Ok(result?)
}

/// The state directories `export` prints: `state` itself, or with `partition`, or when it
/// is a group instance's, its partitions' (in partition order).
fn partition_states(state: &Path, partition: Option<i32>) -> Result<Vec<PathBuf>> {
    if let Some(p) = partition {
        let dir = loyalty_stream::group::partition_dir(state, p);
        if !dir.join("CURRENT").exists() {
            bail!(
                "{} holds no state of partition {p} (an instance of a group keeps one in \
                 partition-{p} once it has held that partition)",
                state.display()
            );
        }
        return Ok(vec![dir]);
    }
    if state.join("CURRENT").exists() || !state.is_dir() {
        return Ok(vec![state.to_path_buf()]);
    }
    let mut parts: Vec<(i32, PathBuf)> = std::fs::read_dir(state)
        .with_context(|| format!("cannot read {}", state.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let p: i32 = name.strip_prefix("partition-")?.parse().ok()?;
            Some((p, e.path()))
        })
        .collect();
    if parts.is_empty() {
        return Ok(vec![state.to_path_buf()]);
    }
    parts.sort();
    Ok(parts.into_iter().map(|(_, d)| d).collect())
}

/// `loyalty verify`: every problem as a JSON line on standard output; `Ok(false)` when
/// there was any.
pub fn verify_state(state: &Path) -> Result<bool> {
    if !state.join("CURRENT").exists() {
        bail!("{} holds no state", state.display());
    }
    let store = Store::open_read_only(state)
        .with_context(|| format!("cannot open the state in {}", state.display()))?;
    let problems = store.verify().context("cannot read the state")?;
    let stdout = io::stdout();
    let mut w = BufWriter::new(stdout.lock());
    for p in &problems {
        serde_json::to_writer(&mut w, p).context("cannot write to standard output")?;
        writeln!(w).context("cannot write to standard output")?;
    }
    w.flush().context("cannot write to standard output")?;
    if problems.is_empty() {
        eprintln!("loyalty verify: {}: every invariant holds", state.display());
    } else {
        eprintln!(
            "loyalty verify: {}: {} problem(s)",
            state.display(),
            problems.len()
        );
    }
    Ok(problems.is_empty())
}

/// `loyalty checkpoint`: a consistent copy of a state directory, also of a running
/// engine's.
pub fn checkpoint(state: &Path, to: &Path) -> Result<()> {
    if !state.join("CURRENT").exists() {
        bail!("{} holds no state", state.display());
    }
    if to.exists() {
        bail!(
            "{} exists: a checkpoint goes into a new directory",
            to.display()
        );
    }
    // The engine's own handle when it is not running (a RocksDB checkpoint); a read-only
    // view beside a running engine otherwise.
    let store = match Store::open(state) {
        Ok(s) => s,
        Err(_) => Store::open_read_only(state)
            .with_context(|| format!("cannot open the state in {}", state.display()))?,
    };
    store
        .checkpoint(to)
        .with_context(|| format!("cannot write a checkpoint to {}", to.display()))?;
    eprintln!(
        "loyalty checkpoint: {} -> {}",
        state.display(),
        to.display()
    );
    Ok(())
}

pub fn export(state: &Path, partition: Option<i32>) -> Result<()> {
    let stdout = io::stdout();
    let mut w = BufWriter::new(stdout.lock());
    let mut failed = None;
    for dir in partition_states(state, partition)? {
        let store = Store::open_read_only(&dir)
            .with_context(|| format!("cannot open the state in {}", dir.display()))?;
        store.export(|line| {
            if failed.is_none() {
                if let Err(e) = writeln!(w, "{line}") {
                    failed = Some(e);
                }
            }
        })?;
    }
    if let Some(e) = failed {
        return Err(e).context("cannot write to standard output");
    }
    w.flush().context("cannot write to standard output")
}

pub fn log(kafka: &KafkaArgs) -> Result<()> {
    let mut s = Settings::new(&kafka.brokers);
    s.log_topic = kafka.log_topic.clone();
    let stdout = io::stdout();
    let mut w = BufWriter::new(stdout.lock());
    replay::print_log(&s, &mut w)?;
    w.flush().context("cannot write to standard output")
}

pub fn replay(args: &RunArgs, state: &Path, publish: bool, partition: Option<i32>) -> Result<()> {
    let settings = args.settings(publish)?;
    if state.exists()
        && std::fs::read_dir(state)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
    {
        bail!(
            "{} is not empty: replay rebuilds the state into a new directory",
            state.display()
        );
    }
    let mut store = Store::open(state)
        .with_context(|| format!("cannot create the state in {}", state.display()))?;
    store.set_sync(false);
    store.set_wal(false);
    // Every seen id, payment and account of the new state goes through this replay: a
    // lookup of one never written (most are) is answered from memory.
    store.track_written().context("cannot read the new state")?;
    let store = std::sync::Arc::new(store);
    let stop = stop_on_signal();
    replay::replay(&settings, &store, publish, partition, &stop)?;
    store
        .flush()
        .context("cannot write the replayed state to its tables")?;
    Ok(())
}

/// Options of `loyalty verify-signature`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The signing secret.
    #[arg(long, env = "LOYALTY_SIGNING_SECRET", hide_env_values = true)]
    pub secret: String,
    /// The `x-vinr-signature` header value.
    #[arg(long)]
    pub header: String,
    /// A file holding the payload bytes exactly as received.
    #[arg(long, conflicts_with = "payload")]
    pub payload_file: Option<PathBuf>,
    /// The payload, as text.
    #[arg(long)]
    pub payload: Option<String>,
    /// Seconds the timestamp may be from now.
    #[arg(long, default_value_t = 300)]
    pub tolerance: i64,
    /// Do not check the timestamp (for replayed events).
    #[arg(long)]
    pub no_tolerance: bool,
    /// "Now", in unix seconds (default: the wall clock).
    #[arg(long)]
    pub now: Option<i64>,
}

pub fn verify(args: &VerifyArgs) -> Result<bool> {
    let payload = match (&args.payload_file, &args.payload) {
        (Some(f), _) => std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?,
        (None, Some(p)) => p.clone().into_bytes(),
        (None, None) => bail!("give the payload with --payload-file or --payload"),
    };
    let now = args.now.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    });
    let tolerance = (!args.no_tolerance).then_some(args.tolerance);
    match signature::verify(
        &args.header,
        &payload,
        args.secret.as_bytes(),
        tolerance,
        now,
    ) {
        Ok(()) => {
            println!("valid");
            Ok(true)
        }
        Err(e) => {
            println!("invalid: {e}");
            Ok(false)
        }
    }
}
