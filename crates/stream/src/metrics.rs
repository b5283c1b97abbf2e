//! What an operator watches: Prometheus metrics and the health of the service loop, served
//! on `--metrics-addr` as `/metrics` (text exposition format), `/healthz` and `/readyz`.
//!
//! Owns: the metric names and labels, liveness and readiness. The service updates them;
//! nothing here reads Kafka or the store.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Context, Result};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Label sets: a few `(name, value)` pairs.
pub type Labels = Vec<(&'static str, String)>;

/// How long the service loop may go without completing an iteration before `/healthz`
/// says it is stuck.
pub const STALL: Duration = Duration::from_secs(30);

/// The service's metrics and health.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Input records read, by topic.
    pub consumed: Family<Labels, Counter>,
    /// Input records appended to the log.
    pub sequenced: Counter,
    /// Log records folded.
    pub folded: Counter,
    /// Records rejected, by reason (in the fold, and before the log: skew, too large).
    pub rejected: Family<Labels, Counter>,
    /// Ledger transactions written, by type.
    pub transactions: Family<Labels, Counter>,
    /// Outbound messages delivered, by topic (the DLQ included).
    pub published: Family<Labels, Counter>,
    /// High watermark minus the next offset to read, by topic and partition.
    pub lag: Family<Labels, Gauge>,
    /// Messages stored and not yet acknowledged by the broker.
    pub outbox_depth: Gauge,
    /// The next log offset to fold, by partition.
    pub log_offset: Family<Labels, Gauge>,
    /// Accounts the engine holds in memory after its last commit (its working set).
    pub accounts_in_memory: Gauge,
    /// Accounts read from RocksDB into the working set.
    pub accounts_loaded: Counter,
    /// Records per folded batch.
    pub batch_size: Histogram,
    /// Seconds to fold a batch and commit it to RocksDB.
    pub batch_seconds: Histogram,
    /// Seconds from sending an outbox message to its acknowledgement.
    pub publish_seconds: Histogram,
    /// In a group (`--group`): 1 for each log partition this instance holds, by partition
    /// and state (`active`, `restoring`); the series of a partition it let go is 0.
    pub partitions: Family<Labels, Gauge>,
    /// In a group: records a partition being restored still has to fold, by partition.
    pub restore_remaining: Family<Labels, Gauge>,
    /// In a group: rebalances this instance took part in.
    pub rebalances: Counter,
    /// In a group: partitions taken up, by what they started from (`standby`: a warm copy
    /// kept as a standby; `start`: no copy, folded from the start of the log).
    pub takeovers: Family<Labels, Counter>,
    /// Unix milliseconds of the last completed iteration of each stage's loop
    /// ([`Stage`]).
    last_beat: [AtomicI64; 3],
    /// Whether the stages run on their own threads yet: before, whatever beats, beats for
    /// all of them (one thread does all the work while the engine starts).
    staged: AtomicBool,
    ready: AtomicBool,
    not_ready: Mutex<String>,
    /// Why a stage is waiting on the broker, while it is, by [`Stage`].
    waiting: Mutex<[Option<String>; 3]>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Metrics {
    /// Fresh metrics, registered under the `loyalty_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("loyalty");
        let m = Metrics {
            consumed: Family::default(),
            sequenced: Counter::default(),
            folded: Counter::default(),
            rejected: Family::default(),
            transactions: Family::default(),
            published: Family::default(),
            lag: Family::default(),
            outbox_depth: Gauge::default(),
            log_offset: Family::default(),
            accounts_in_memory: Gauge::default(),
            accounts_loaded: Counter::default(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 15)),
            batch_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            publish_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            partitions: Family::default(),
            restore_remaining: Family::default(),
            rebalances: Counter::default(),
            takeovers: Family::default(),
            last_beat: [AtomicI64::new(0), AtomicI64::new(0), AtomicI64::new(0)],
            staged: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            not_ready: Mutex::new("starting".into()),
            waiting: Mutex::new([None, None, None]),
            registry: Registry::default(),
        };
        let up: Gauge = Gauge::default();
        up.set(1);
        registry.register("up", "1 while the engine runs", up);
        registry.register(
            "records_consumed",
            "Input records read, by topic",
            m.consumed.clone(),
        );
        registry.register(
            "records_sequenced",
            "Input records appended to the engine's log",
            m.sequenced.clone(),
        );
        registry.register(
            "records_folded",
            "Log records folded into the state",
            m.folded.clone(),
        );
        registry.register(
            "records_rejected",
            "Records rejected, by reason",
            m.rejected.clone(),
        );
        registry.register(
            "transactions",
            "Ledger transactions written, by type",
            m.transactions.clone(),
        );
        registry.register(
            "messages_published",
            "Outbound messages acknowledged by the broker, by topic",
            m.published.clone(),
        );
        registry.register(
            "consumer_lag",
            "High watermark minus the next offset to read, by topic and partition",
            m.lag.clone(),
        );
        registry.register(
            "outbox_depth",
            "Messages stored and not yet acknowledged by the broker",
            m.outbox_depth.clone(),
        );
        registry.register(
            "log_offset",
            "The next log offset to fold, by partition",
            m.log_offset.clone(),
        );
        registry.register(
            "accounts_in_memory",
            "Accounts held in memory after the last commit (the working set, --account-cache)",
            m.accounts_in_memory.clone(),
        );
        registry.register(
            "accounts_loaded",
            "Accounts read from RocksDB into the working set",
            m.accounts_loaded.clone(),
        );
        registry.register(
            "batch_size",
            "Records per folded batch",
            m.batch_size.clone(),
        );
        registry.register(
            "batch_duration_seconds",
            "Seconds from a batch's first record folded to its RocksDB write confirmed",
            m.batch_seconds.clone(),
        );
        registry.register(
            "publish_duration_seconds",
            "Seconds from sending an outbox message to the broker's acknowledgement",
            m.publish_seconds.clone(),
        );
        registry.register(
            "partitions",
            "Log partitions this instance holds in a group, by partition and state (active, restoring)",
            m.partitions.clone(),
        );
        registry.register(
            "partition_restore_remaining",
            "Records a log partition being restored still has to fold, by partition",
            m.restore_remaining.clone(),
        );
        registry.register(
            "rebalances",
            "Rebalances of the log's consumer group this instance took part in",
            m.rebalances.clone(),
        );
        registry.register(
            "partition_takeovers",
            "Log partitions this instance took up, by what it started from (standby, start)",
            m.takeovers.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }

    /// The service loop completed an iteration.
    pub fn beat(&self) {
        let now = unix_millis();
        for b in &self.last_beat {
            b.store(now, Ordering::Relaxed);
        }
    }

    /// Marks an iteration of one stage's loop: once the engine runs, the sequencer, the
    /// folder and the publisher each have their own thread, and each must keep beating.
    pub fn beat_stage(&self, stage: Stage) {
        if self.staged.load(Ordering::Relaxed) {
            self.last_beat[stage as usize].store(unix_millis(), Ordering::Relaxed);
        } else {
            self.beat();
        }
    }

    /// The stages start their own threads: from now on each beats for itself.
    pub fn start_stages(&self) {
        self.beat();
        self.staged.store(true, Ordering::Relaxed);
    }

    /// `None` while the loop beats; otherwise why not. Before the first beat (while the
    /// state loads and the engine catches up with its log, which can take minutes) the
    /// answer is "starting": a startup probe waits for it, a liveness probe must not start
    /// before it.
    pub fn stalled(&self) -> Option<String> {
        let (stage, last) = Stage::ALL
            .iter()
            .map(|s| (*s, self.last_beat[*s as usize].load(Ordering::Relaxed)))
            .min_by_key(|(_, last)| *last)?;
        if last == 0 {
            return Some("starting: loading the state".into());
        }
        let since = unix_millis() - last;
        (since > STALL.as_millis() as i64).then(|| {
            format!(
                "the {} loop has not completed an iteration for {since} ms",
                stage.as_str()
            )
        })
    }

    /// Marks the service ready (state open, topics there, caught up with the log once), or
    /// not, with the reason.
    pub fn set_ready(&self, ready: Result<(), String>) {
        match ready {
            Ok(()) => self.ready.store(true, Ordering::SeqCst),
            Err(why) => {
                if let Ok(mut w) = self.not_ready.lock() {
                    *w = why;
                }
                self.ready.store(false, Ordering::SeqCst);
            }
        }
    }

    /// A stage is waiting on the broker (`Some(why)`), or no longer (`None`).
    pub fn set_waiting(&self, stage: Stage, why: Option<String>) {
        if let Ok(mut w) = self.waiting.lock() {
            w[stage as usize] = why;
        }
    }

    /// `Ok` when ready, else why not.
    pub fn ready(&self) -> Result<(), String> {
        if let Some(stall) = self.stalled() {
            return Err(stall);
        }
        if let Some(why) = self
            .waiting
            .lock()
            .ok()
            .and_then(|w| w.iter().flatten().next().cloned())
        {
            return Err(why);
        }
        if self.ready.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(self
                .not_ready
                .lock()
                .map(|w| w.clone())
                .unwrap_or_else(|_| "not ready".into()))
        }
    }
}

/// The stages of the running engine, each a loop on its own thread with its own heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Input topics to the log.
    Sequence = 0,
    /// The log to the store.
    Fold = 1,
    /// The outbox to the output topics.
    Publish = 2,
}

impl Stage {
    /// Every stage.
    pub const ALL: [Stage; 3] = [Stage::Sequence, Stage::Fold, Stage::Publish];

    /// The stage's name, as health reports say it.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Sequence => "sequencer",
            Stage::Fold => "folder",
            Stage::Publish => "publisher",
        }
    }
}

/// One label.
pub fn label(name: &'static str, value: impl Into<String>) -> Labels {
    vec![(name, value.into())]
}

/// `/metrics`, `/healthz` and `/readyz` (served on `--metrics-addr`, and beside the HTTP
/// API on `--http-addr`).
pub fn router(metrics: Arc<Metrics>) -> axum::Router {
    use axum::http::StatusCode;
    use axum::routing::get;

    let (m1, m2, m3) = (metrics.clone(), metrics.clone(), metrics);
    axum::Router::new()
        .route(
            "/metrics",
            get(move || async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    m1.encode(),
                )
            }),
        )
        .route(
            "/healthz",
            get(move || async move {
                match m2.stalled() {
                    None => (StatusCode::OK, "ok\n".to_string()),
                    Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
                }
            }),
        )
        .route(
            "/readyz",
            get(move || async move {
                match m3.ready() {
                    Ok(()) => (StatusCode::OK, "ready\n".to_string()),
                    Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
                }
            }),
        )
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` from a thread of its own, until
/// the process ends. Returns the address bound (for `:0`).
pub fn serve(addr: &str, metrics: Arc<Metrics>) -> Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("cannot listen on {addr} for metrics"))?;
    listener
        .set_nonblocking(true)
        .context("cannot set the metrics socket non-blocking")?;
    let bound = listener.local_addr().context("metrics address")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the metrics runtime")?;
    let app = router(metrics);
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "metrics listener");
                        return;
                    }
                };
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "metrics server stopped");
                }
            });
        })
        .context("cannot start the metrics thread")?;
    tracing::info!(addr = %bound, "serving /metrics, /healthz and /readyz");
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_and_labels() {
        let m = Metrics::new();
        m.consumed
            .get_or_create(&label("topic", "payment.completed"))
            .inc_by(3);
        m.rejected
            .get_or_create(&label("reason", "duplicate"))
            .inc();
        m.outbox_depth.set(7);
        m.accounts_in_memory.set(12);
        m.accounts_loaded.inc_by(5);
        m.batch_size.observe(100.0);
        let text = m.encode();
        assert!(text.contains("loyalty_records_consumed_total{topic=\"payment.completed\"} 3"));
        assert!(text.contains("loyalty_records_rejected_total{reason=\"duplicate\"} 1"));
        assert!(text.contains("loyalty_outbox_depth 7"));
        assert!(text.contains("loyalty_accounts_in_memory 12"));
        assert!(text.contains("loyalty_accounts_loaded_total 5"));
        assert!(text.contains("loyalty_batch_size_count 1"));
        assert!(text.contains("loyalty_up 1"));
    }

    #[test]
    fn readiness_needs_both_a_beat_and_the_flag() {
        let m = Metrics::new();
        assert_eq!(m.stalled(), Some("starting: loading the state".into()));
        m.beat();
        assert_eq!(m.stalled(), None);
        assert_eq!(m.ready(), Err("starting".into()));
        m.set_ready(Ok(()));
        assert_eq!(m.ready(), Ok(()));
        // Waiting on the broker: alive, not ready, with the reason; ready again after.
        m.set_waiting(
            Stage::Publish,
            Some("waiting 6 s for the broker to acknowledge".into()),
        );
        // Another stage that is not waiting does not clear it.
        m.set_waiting(Stage::Sequence, None);
        assert_eq!(m.stalled(), None);
        assert_eq!(
            m.ready(),
            Err("waiting 6 s for the broker to acknowledge".into())
        );
        m.set_waiting(Stage::Publish, None);
        assert_eq!(m.ready(), Ok(()));
        // While one thread does all the work (starting), any beat is every stage's.
        m.last_beat[Stage::Publish as usize].store(unix_millis() - 31_000, Ordering::Relaxed);
        m.beat_stage(Stage::Fold);
        assert_eq!(m.stalled(), None);
        // Once each stage has its thread, one that stops beating is enough to be stalled,
        // and it is named.
        m.start_stages();
        m.last_beat[Stage::Publish as usize].store(unix_millis() - 31_000, Ordering::Relaxed);
        m.beat_stage(Stage::Sequence);
        m.beat_stage(Stage::Fold);
        let stall = m.stalled().expect("the publisher stalled");
        assert!(
            stall.starts_with("the publisher loop has not completed"),
            "{stall}"
        );
        assert!(m.ready().is_err());
        m.beat_stage(Stage::Publish);
        assert_eq!(m.stalled(), None);
        m.last_beat[Stage::Fold as usize].store(0, Ordering::Relaxed);
        assert!(m.stalled().is_some());
        assert!(m.ready().is_err());
    }
}
