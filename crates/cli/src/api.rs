//! The HTTP API's wiring: `loyalty run --http-addr` (commands through the commands topic)
//! and `loyalty serve` (a state directory, read-only).

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use loyalty_api::{Api, Commands, LogReadError, Submit, SubmitError};
use loyalty_store::Store;
use loyalty_stream::service::{self, Counters, Producer};
use loyalty_stream::Settings;
use rdkafka::producer::FutureRecord;

/// Options of the HTTP API.
#[derive(Args, Clone)]
pub struct HttpArgs {
    /// Serve the HTTP API (and /healthz, /readyz, /metrics) on this address (`HOST:PORT`).
    #[arg(long, env = "LOYALTY_HTTP_ADDR")]
    pub http_addr: Option<String>,
    /// API keys, comma-separated: `sk_…` read and write (commands: `loyalty run` only),
    /// `rk_…` read only. Never logged.
    #[arg(
        long,
        env = "LOYALTY_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,
    /// How long a command's answer waits for the engine to fold it before answering 202
    /// (`loyalty run` only).
    #[arg(long, default_value_t = 5000, env = "LOYALTY_COMMAND_TIMEOUT_MS")]
    pub command_timeout_ms: u64,
}

/// Never prints the keys themselves.
impl std::fmt::Debug for HttpArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpArgs")
            .field("http_addr", &self.http_addr)
            .field("api_keys", &format!("{} key(s)", self.api_keys.len()))
            .field("command_timeout_ms", &self.command_timeout_ms)
            .finish()
    }
}

/// Produces command records to the commands topic with the engine's own idempotent
/// producer settings.
struct KafkaSubmit {
    producer: Producer,
    topic: String,
}

impl Submit for KafkaSubmit {
    fn submit(
        &self,
        key: String,
        value: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<(), SubmitError>> + Send>> {
        let record = FutureRecord::to(&self.topic)
            .key(key.as_bytes())
            .payload(&value)
            .headers(
                rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
                    key: "content-type",
                    value: Some("application/json"),
                }),
            );
        let sent = self
            .producer
            .send_result(record)
            .map_err(|(e, _)| submit_error(&e));
        Box::pin(async move {
            match sent {
                Ok(delivery) => match delivery.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((e, _))) => Err(submit_error(&e)),
                    Err(_) => Err(SubmitError::Fatal("the producer went away".into())),
                },
                Err(e) => Err(e),
            }
        })
    }
}

/// A producer's error, sorted as the engine sorts Kafka errors
/// ([`loyalty_stream::error::retriable`]).
fn submit_error(e: &rdkafka::error::KafkaError) -> SubmitError {
    if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::MessageSizeTooLarge) {
        SubmitError::TooLarge(e.to_string())
    } else if loyalty_stream::error::retriable(e) {
        SubmitError::Retriable(e.to_string())
    } else {
        SubmitError::Fatal(e.to_string())
    }
}

/// The commands topic among the inputs.
fn commands_topic(settings: &Settings) -> Result<String> {
    match settings
        .input_topics
        .iter()
        .find(|t| t.ends_with("loyalty.commands"))
    {
        Some(t) => Ok(t.clone()),
        None => bail!(
            "--http-addr needs a commands topic among --input-topics (one named \
             ...loyalty.commands)"
        ),
    }
}

/// How the API sends commands: to the commands topic, answered once a fold committed them.
fn commands(http: &HttpArgs, settings: &Settings, counters: &Counters) -> Result<Commands> {
    Ok(Commands {
        sink: Arc::new(KafkaSubmit {
            producer: command_producer(settings, http.command_timeout_ms)?,
            topic: commands_topic(settings)?,
        }),
        committed: counters.committed.subscribe(),
        timeout: Duration::from_millis(http.command_timeout_ms.max(1)),
        max_skew: settings.max_skew,
    })
}

/// Starts the HTTP API of a running engine, when `--http-addr` is given.
pub fn start_for_run(
    http: &HttpArgs,
    settings: &Settings,
    store: Arc<Store>,
    counters: &Counters,
) -> Result<Option<loyalty_api::Server>> {
    let Some(addr) = &http.http_addr else {
        return Ok(None);
    };
    let commands = commands(http, settings, counters)?;
    let mut api = Api::new(store, &http.api_keys, Some(commands)).context("the HTTP API")?;
    api.log = Some(log_reader(settings));
    let app = loyalty_api::router(
        Arc::new(api),
        loyalty_stream::metrics::router(counters.metrics.clone()),
    );
    Ok(Some(loyalty_api::serve(addr, app)?))
}

/// Starts the HTTP API of an instance of a group, when `--http-addr` is given: every
/// request goes through the front, which asks the partition it is for, here or at the
/// instance serving it.
pub fn start_for_group(
    http: &HttpArgs,
    settings: &Settings,
    serving: Arc<loyalty_stream::group::Serving>,
    counters: &Counters,
) -> Result<Option<loyalty_api::Server>> {
    let Some(addr) = &http.http_addr else {
        return Ok(None);
    };
    let commands = commands(http, settings, counters)?;
    let app = loyalty_api::front::group_router(
        Arc::new(GroupPartitions(serving)),
        &http.api_keys,
        Some(commands),
        Some(log_reader(settings)),
        loyalty_stream::metrics::router(counters.metrics.clone()),
    )
    .context("the HTTP API")?;
    Ok(Some(loyalty_api::serve(addr, app)?))
}

/// Reads the engine's log topic whole, as `loyalty log` prints it (for backtests).
fn log_reader(settings: &Settings) -> loyalty_api::LogReader {
    let settings = settings.clone();
    Arc::new(move |emit: &mut dyn FnMut(&[u8])| {
        let mut lines = crate::backtest::LineSplitter::new(emit);
        loyalty_stream::replay::print_log(&settings, &mut lines).map_err(|e| LogReadError {
            why: format!("{e:#}"),
        })?;
        std::io::Write::flush(&mut lines).map_err(|e| LogReadError { why: e.to_string() })
    })
}

/// The group as the API's front sees it.
struct GroupPartitions(Arc<loyalty_stream::group::Serving>);

impl loyalty_api::front::Partitions for GroupPartitions {
    fn count(&self) -> i32 {
        self.0.count.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn local(&self) -> std::collections::BTreeMap<i32, Arc<Store>> {
        self.0
            .stores
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn owner(&self, p: i32) -> Option<String> {
        self.0.directory.owner(p)
    }
}

/// A producer for commands: idempotent, giving up on a message after the command timeout
/// (at least ten seconds, so that a broker back from an outage is reached again: the
/// reconnect backoff is at most a second); the answer is then 503.
fn command_producer(settings: &Settings, timeout_ms: u64) -> Result<Producer> {
    rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "0")
        .set("message.timeout.ms", timeout_ms.max(10_000).to_string())
        .set("reconnect.backoff.max.ms", "1000")
        .create_with_context(service::EngineContext)
        .context("cannot create the command producer")
}

/// `loyalty serve`: the HTTP API over a state directory, read-only, until stopped.
pub fn serve(
    state: &Path,
    http: &HttpArgs,
    log: Option<&crate::streaming::KafkaArgs>,
) -> Result<()> {
    let Some(addr) = &http.http_addr else {
        bail!("loyalty serve needs --http-addr HOST:PORT (the address to serve the API on)");
    };
    let store = Store::open_read_only(state)
        .with_context(|| format!("cannot open the state in {}", state.display()))?;
    if !store.has_api_index()? {
        bail!(
            "{} has no index for the API (written by an earlier version): run the engine on \
             it once, or serve a checkpoint of a running engine",
            state.display()
        );
    }
    let mut api = Api::new(Arc::new(store), &http.api_keys, None).context("the HTTP API")?;
    if let Some(k) = log {
        let mut settings = Settings::new(&k.brokers);
        settings.log_topic = k.log_topic.clone();
        api.log = Some(log_reader(&settings));
    }
    let app = loyalty_api::router(Arc::new(api), serve_health());
    let server = loyalty_api::serve(addr, app)?;
    eprintln!(
        "serving {} read-only on http://{}",
        state.display(),
        server.addr
    );
    let stop = crate::streaming::stop_on_signal();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
    }
    server.stop();
    Ok(())
}

/// Health of a read-only server: live and ready once serving; its metrics say it is up.
fn serve_health() -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ready\n" }))
        .route(
            "/metrics",
            get(|| async {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    "# HELP loyalty_up Whether the server is up.\n# TYPE loyalty_up gauge\nloyalty_up 1\n",
                )
            }),
        )
}
