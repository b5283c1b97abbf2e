//! `loyalty run`: sequence the input topics into the log, fold the log into the store,
//! publish the outbox. One loop, three steps, each batched:
//!
//! 1. Sequence: poll up to a batch of input records; reject those whose `created` is too
//!    far ahead of the wall clock (to the DLQ); append the rest to the log with their
//!    source in headers (program updates to every partition); once the log has
//!    acknowledged them, store the next input offsets. A crash in between appends the same
//!    records again on restart; the folder recognises them by their source and skips them.
//! 2. Fold: poll up to a batch of log records, fold them, and write state, ledger lines,
//!    outbox and log offsets in one RocksDB batch.
//! 3. Publish: send the outbox with an idempotent producer; remove each entry once its
//!    delivery is acknowledged. What a crash leaves in the outbox is sent again, with the
//!    same bytes.
//!
//! The wall clock is read here, and only here: for the skew check and for the `clock.tick`
//! records the engine appends to its log.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{Context, Result, StreamError};
use loyalty_core::config::parse_program;
use loyalty_core::time::Timestamp;
use loyalty_store::Store;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::runtime::Runtime;

use crate::folder::Folder;
use crate::logrec::{self, Source};
use crate::metrics::{label, Metrics, Stage};
use crate::outbox;
use crate::watermark::cached_high;
use crate::{failpoint, topics, Settings};
use loyalty_core::envelope::{Reason, Rejection};
use loyalty_core::output::Output;
use loyalty_store::OutboxEntry;

/// A Kafka consumer that reads assigned partitions (no group join: the engine keeps its
/// offsets in its own store).
pub fn consumer(settings: &Settings) -> Result<BaseConsumer> {
    ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", "loyalty-engine")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .context("cannot create a Kafka consumer")
}

/// The producer's client context: librdkafka's log lines go to `tracing`, as rdkafka's
/// default context sends them, but for one warning. `enable.gapless.guarantee` is marked
/// experimental by librdkafka, which says so at every start; the engine relies on it on
/// purpose (a record that fails for good must fail the producer, never let a later record
/// of the same input partition pass first: the folder would take the earlier one, sent
/// again, for a redelivery and drop it). That warning is logged at debug level.
#[derive(Clone, Copy, Debug, Default)]
pub struct EngineContext;

impl rdkafka::client::ClientContext for EngineContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        if fac == "CONFWARN" && message.contains("enable.gapless.guarantee") {
            tracing::debug!(target: "librdkafka", "librdkafka: {fac} {message}");
            return;
        }
        rdkafka::client::DefaultClientContext.log(level, fac, message);
    }
}

/// The engine's producer.
pub type Producer = FutureProducer<EngineContext>;

/// The idempotent producer that writes the log and publishes the outbox.
pub fn producer(settings: &Settings) -> Result<Producer> {
    ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        // Ride out a broker outage of minutes; and never deliver a record after one of its
        // predecessors failed (a gap would let a later record pass for the earlier one).
        .set("message.timeout.ms", "300000")
        .set("enable.gapless.guarantee", "true")
        .set("queue.buffering.max.messages", "1000000")
        .create_with_context(EngineContext)
        .context("cannot create the Kafka producer")
}

/// The wall clock, in unix seconds.
pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The log partition of a key ([`loyalty_core::partition::of`]: FNV-1a, the same in every
/// run); a record without a key goes to partition 0.
pub fn partition_of(key: Option<&[u8]>, partitions: i32) -> i32 {
    let Some(key) = key else { return 0 };
    loyalty_core::partition::of(key, partitions.max(1) as u32) as i32
}

fn send(producer: &Producer, record: FutureRecord<'_, [u8], [u8]>) -> Result<DeliveryFuture> {
    try_send(producer, record).context("cannot queue a message")
}

/// Queues a record, waiting while the producer's queue is full.
fn try_send(
    producer: &Producer,
    mut record: FutureRecord<'_, [u8], [u8]>,
) -> std::result::Result<DeliveryFuture, KafkaError> {
    loop {
        match producer.send_result(record) {
            Ok(f) => return Ok(f),
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                r,
            )) => {
                record = r;
                producer.poll(Duration::from_millis(10));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Queues one outbox (or dead-letter) entry, exactly as stored.
fn send_entry(producer: &Producer, e: &OutboxEntry) -> Result<DeliveryFuture> {
    let mut headers = OwnedHeaders::new_with_capacity(e.headers.len());
    for (k, v) in &e.headers {
        headers = headers.insert(Header {
            key: k,
            value: Some(v.as_slice()),
        });
    }
    let mut rec = FutureRecord::to(&e.topic)
        .payload(e.payload.as_slice())
        .headers(headers);
    if let Some(k) = &e.key {
        rec = rec.key(k.as_slice());
    }
    if let Some(p) = e.partition {
        rec = rec.partition(p);
    }
    send(producer, rec)
}

/// Awaits one delivery. While it takes long (a broker outage: the producer retries for up to
/// `message.timeout.ms`), the service is alive but not ready: the loop keeps beating for
/// `/healthz` and `/readyz` says why it waits.
fn deliver(
    rt: &Runtime,
    mut f: DeliveryFuture,
    metrics: Option<&Metrics>,
    stage: Stage,
) -> Result<rdkafka::producer::future_producer::OwnedDeliveryResult, ()> {
    let Some(m) = metrics else {
        return rt.block_on(f).map_err(|_| ());
    };
    let started = Instant::now();
    loop {
        match rt.block_on(async { tokio::time::timeout(Duration::from_secs(1), &mut f).await }) {
            Ok(r) => {
                m.set_waiting(stage, None);
                return r.map_err(|_| ());
            }
            Err(_) => {
                m.beat_stage(stage);
                note_waiting(m, stage, started);
            }
        }
    }
}

/// After five seconds without an acknowledgement, `/readyz` says the stage waits for it.
fn note_waiting(m: &Metrics, stage: Stage, since: Instant) {
    if since.elapsed() >= Duration::from_secs(5) {
        m.set_waiting(
            stage,
            Some(format!(
                "waiting {} s for the broker to acknowledge",
                since.elapsed().as_secs()
            )),
        );
    }
}

fn await_all(
    rt: &Runtime,
    futures: Vec<DeliveryFuture>,
    metrics: Option<&Metrics>,
    stage: Stage,
) -> Result<()> {
    for f in futures {
        match deliver(rt, f, metrics, stage) {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(e).context("a message was not delivered"),
            Err(_) => {
                return Err(StreamError::broken(
                    "the producer went away before delivering",
                ))
            }
        }
    }
    Ok(())
}

/// Entries a publish round holds in memory at most (a publisher behind the folder, or a
/// large outbox left by a run that could not reach the broker, is sent in rounds).
const OUTBOX_ROUND: usize = 20_000;

/// Sends every outbox entry numbered `from` or more and removes the delivered ones; `from`
/// moves past them (to the first one not delivered). Returns how many were delivered. Stops
/// at the first round in which a delivery failed (the rest waits for the next call).
pub fn publish_outbox(
    rt: &Runtime,
    producer: &Producer,
    store: &Store,
    metrics: Option<&Metrics>,
    from: &mut u64,
) -> Result<usize> {
    let mut delivered = 0;
    loop {
        let (n, read, failed) = publish_round(rt, producer, store, metrics, from)?;
        delivered += n;
        if let Some(m) = metrics {
            m.beat_stage(Stage::Publish);
        }
        if failed || read < OUTBOX_ROUND {
            return Ok(delivered);
        }
    }
}

/// One round: up to [`OUTBOX_ROUND`] entries sent and awaited. Returns how many were
/// delivered, how many read, and whether a delivery failed.
fn publish_round(
    rt: &Runtime,
    producer: &Producer,
    store: &Store,
    metrics: Option<&Metrics>,
    from: &mut u64,
) -> Result<(usize, usize, bool)> {
    let entries = store
        .outbox_from(*from, OUTBOX_ROUND)
        .context("cannot read the outbox")?;
    if entries.is_empty() {
        if let Some(m) = metrics {
            m.outbox_depth.set(0);
        }
        return Ok((0, 0, false));
    }
    let mut pending = Vec::with_capacity(entries.len());
    let sent = Instant::now();
    for e in &entries {
        pending.push((e.seq, send_entry(producer, e)?));
    }
    let mut delivered = Vec::with_capacity(pending.len());
    let mut failed = None;
    for (i, (seq, f)) in pending.into_iter().enumerate() {
        match deliver(rt, f, metrics, Stage::Publish) {
            Ok(Ok(_)) => {
                delivered.push(seq);
                if let Some(m) = metrics {
                    m.published
                        .get_or_create(&label("topic", entries[i].topic.clone()))
                        .inc();
                    m.publish_seconds.observe(sent.elapsed().as_secs_f64());
                }
            }
            Ok(Err((e, _))) => failed = Some(e.to_string()),
            Err(_) => failed = Some("the producer went away".into()),
        }
    }
    if !delivered.is_empty() {
        failpoint::hit("publish-after-ack");
    }
    store
        .remove_outbox(&delivered)
        .context("cannot trim the outbox")?;
    // Entries are numbered in commit order: what comes later has larger numbers.
    *from = match entries
        .iter()
        .find(|e| delivered.binary_search(&e.seq).is_err())
    {
        Some(e) => e.seq,
        None => entries.last().map_or(*from, |e| e.seq + 1),
    };
    if let Some(m) = metrics {
        m.outbox_depth.set((entries.len() - delivered.len()) as i64);
    }
    let failed = failed.inspect(|e| {
        tracing::warn!(error = %e, left = entries.len() - delivered.len(), "outbox not fully delivered; will retry");
    });
    Ok((delivered.len(), entries.len(), failed.is_some()))
}

/// Polls up to `max` messages, waiting at most `wait` for the first.
fn poll_batch<'c>(
    consumer: &'c BaseConsumer,
    max: usize,
    wait: Duration,
) -> Result<Vec<rdkafka::message::BorrowedMessage<'c>>> {
    let mut out = Vec::new();
    let mut timeout = wait;
    while out.len() < max {
        match consumer.poll(timeout) {
            Some(Ok(m)) => out.push(m),
            Some(Err(e)) if crate::error::fatal(&e) => return Err(e).context("cannot consume"),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "consumer error");
                break;
            }
            None => break,
        }
        timeout = Duration::ZERO;
    }
    Ok(out)
}

/// Assigns every partition of `topic` at the given next offsets (the beginning where none).
fn assign(
    consumer: &BaseConsumer,
    topics_and_offsets: &[(String, i32, Option<i64>)],
) -> Result<()> {
    let mut tpl = TopicPartitionList::new();
    for (t, p, off) in topics_and_offsets {
        let offset = off.map_or(Offset::Beginning, Offset::Offset);
        tpl.add_partition_offset(t, *p, offset)
            .context("cannot build the assignment")?;
    }
    consumer.assign(&tpl).context("cannot assign partitions")?;
    Ok(())
}

/// The high watermark of every partition of the log.
pub fn log_ends(
    consumer: &BaseConsumer,
    settings: &Settings,
    partitions: i32,
) -> Result<BTreeMap<i32, i64>> {
    (0..partitions)
        .map(|p| {
            retry_while_leaderless(|| {
                consumer.fetch_watermarks(&settings.log_topic, p, Duration::from_secs(30))
            })
            .map(|(_, high)| (p, high))
            .with_context(|| format!("cannot read the end of {} [{p}]", settings.log_topic))
        })
        .collect()
}

/// Runs `f` again, for up to 30 s, while it fails because a partition has no leader yet
/// (or the broker does not know the topic yet). Apache Kafka answers so for a moment after
/// a topic is created or a broker restarts, while the partition's leader is elected and
/// the metadata reaches every listener; tansu never did.
pub fn retry_while_leaderless<T>(
    mut f: impl FnMut() -> std::result::Result<T, KafkaError>,
) -> std::result::Result<T, KafkaError> {
    use rdkafka::types::RDKafkaErrorCode as C;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f() {
            Err(e)
                if Instant::now() < deadline
                    && matches!(
                        e.rdkafka_error_code(),
                        Some(
                            C::NotLeaderForPartition
                                | C::LeaderNotAvailable
                                | C::UnknownTopicOrPartition
                                | C::UnknownPartition
                                | C::UnknownTopic
                        )
                    ) =>
            {
                tracing::debug!(error = %e, "no leader yet; asking again");
                std::thread::sleep(Duration::from_millis(100));
            }
            r => return r,
        }
    }
}

/// True for a produce error that retrying will never cure.
fn refused_for_good(e: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::MessageSizeTooLarge
                | C::InvalidMessageSize
                | C::InvalidRecord
                | C::MessageBatchTooLarge
        )
    )
}

/// Appends a record the engine writes itself (a tick, a program update) to every log
/// partition.
fn broadcast(
    producer: &Producer,
    settings: &Settings,
    partitions: i32,
    value: &[u8],
    futures: &mut Vec<DeliveryFuture>,
) -> Result<()> {
    for p in 0..partitions {
        let rec = FutureRecord::to(&settings.log_topic)
            .payload(value)
            .partition(p)
            .headers(logrec::headers(None, true, None));
        futures.push(send(producer, rec)?);
    }
    Ok(())
}

/// The running service's counters, for logs and the demo's live view.
#[derive(Debug, Default)]
pub struct Counters {
    /// Input records sequenced into the log.
    pub sequenced: std::sync::atomic::AtomicU64,
    /// Log records folded.
    pub folded: std::sync::atomic::AtomicU64,
    /// Messages published from the outbox.
    pub published: std::sync::atomic::AtomicU64,
    /// Points awarded.
    pub awarded: std::sync::atomic::AtomicI64,
    /// Tier changes.
    pub tier_changes: std::sync::atomic::AtomicU64,
    /// The Prometheus metrics and health (`--metrics-addr`).
    pub metrics: Arc<Metrics>,
    /// Bumped after every batch committed: the HTTP API waits on it for a command's
    /// outcome (read-your-writes).
    pub committed: tokio::sync::watch::Sender<u64>,
}

/// What a running engine (one instance or one of a group) starts with: its runtime for
/// awaiting deliveries, its topics created, its producer.
pub(crate) fn start(settings: &Settings) -> Result<(Runtime, Producer)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(topics::ensure(settings))?;
    Ok((rt, producer(settings)?))
}

/// Runs the service until `stop` is set. Returns after the last batch is stored and the
/// outbox is flushed.
pub fn run(
    settings: &Settings,
    store: &Arc<Store>,
    stop: &AtomicBool,
    counters: &Arc<Counters>,
) -> Result<()> {
    let (rt, producer) = start(settings)?;
    let metrics = &counters.metrics;
    metrics.set_ready(Err("catching up with the log".into()));
    let mut folder = Folder::open(store, true).context("cannot load the state")?;
    folder.metrics = Some(metrics.clone());
    folder.ws.account_cache = settings.account_cache;
    // Each batch is reported committed from the thread that wrote it, once written: the
    // API answers, and the publisher sends, without waiting for the next batch to fold.
    let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
    folder.on_written = Some(on_written(counters.clone(), wake.clone()));

    // Whatever a previous run stored but did not deliver goes out first.
    publish_outbox(&rt, &producer, store, Some(&counters.metrics), &mut 0)?;

    let log_consumer = consumer(settings)?;
    let log_partitions = topics::partitions(&log_consumer, &settings.log_topic)?;
    let assignment: Vec<_> = (0..log_partitions)
        .map(|p| {
            (
                settings.log_topic.clone(),
                p,
                folder.positions.get(&p).copied(),
            )
        })
        .collect();
    assign(&log_consumer, &assignment)?;

    // Catch up with the log as it is now, so that the engine holds all it has.
    // ListOffsets gives a lower bound (tansu's is too low); every fetch then tells the end,
    // so poll at least once before deciding.
    let catch_up = |folder: &mut Folder| -> Result<()> {
        let mut ends = log_ends(&log_consumer, settings, log_partitions)?;
        loop {
            fold_step(settings, store, &log_consumer, folder, counters)?;
            counters.published.fetch_add(
                publish_outbox(&rt, &producer, store, Some(&counters.metrics), &mut 0)? as u64,
                Ordering::Relaxed,
            );
            for (p, end) in ends.iter_mut() {
                if let Some(high) = cached_high(&log_consumer, &settings.log_topic, *p) {
                    *end = (*end).max(high);
                }
            }
            let behind = ends
                .iter()
                .any(|(p, end)| folder.positions.get(p).copied().unwrap_or(0) < *end);
            record_log_lag(metrics, settings, &log_consumer, log_partitions, folder);
            metrics.beat();
            if !behind || stop.load(Ordering::Relaxed) {
                break;
            }
        }
        // All of it written before anything reads the state (the config last applied,
        // the input offsets, the API once ready).
        settle(store, folder)?;
        Ok(())
    };
    catch_up(&mut folder)?;

    // Program config changes enter the log, so that replay sees them where they happened;
    // only when the file differs from the one last applied (SPEC section 10), so that a
    // program changed since through a command or the API is not reverted by a restart.
    let mut futures = Vec::new();
    let last_applied = store.config_digest()?;
    let unchanged = settings.config_digest.is_some() && settings.config_digest == last_applied;
    if unchanged {
        tracing::info!("the config file is the one last applied: not applied again");
    }
    let mut appended_config = false;
    for (id, text) in settings.programs.iter().filter(|_| !unchanged) {
        let wanted =
            parse_program(text).with_context(|| format!("program {id} does not validate"))?;
        let state = folder.ws.engine.state();
        if state.program(id).is_some_and(|p| **p == wanted) {
            continue;
        }
        let revision = state.program_revisions.get(id).copied().unwrap_or(0) + 1;
        // Stamped like a tick, with the engine's wall clock (never behind the clock): the
        // time the program took effect. (It was 1970-01-01 on a first start.)
        let created = Timestamp(now()).max(state.clock.unwrap_or(Timestamp(i64::MIN)));
        // The id only has to be new (a record left in the log by a crashed run may already
        // carry this revision number).
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        // The id names the file's digest: the folder records it as the file last applied
        // (`m/config`), so a replayed state knows it too.
        let digest = settings.config_digest.as_deref().unwrap_or("");
        let record = format!(
            r#"{{"id":{},"type":"loyalty.program.updated","created":"{created}","data":{text}}}"#,
            serde_json::Value::String(format!(
                "cfg_{id}_{revision}_{nanos}{}{digest}",
                crate::CONFIG_ID_MARK
            ))
        );
        appended_config = true;
        tracing::info!(program = %id, revision, "appending the configured program to the log");
        broadcast(
            &producer,
            settings,
            log_partitions,
            record.as_bytes(),
            &mut futures,
        )?;
    }
    await_all(
        &rt,
        std::mem::take(&mut futures),
        Some(metrics),
        Stage::Fold,
    )?;
    if let (false, false, Some(digest)) = (unchanged, appended_config, &settings.config_digest) {
        // Nothing differed: the file is applied all the same.
        store.set_config_digest(digest)?;
    }
    if appended_config {
        // The configured programs are folded before the engine says it is ready: a request
        // right after /readyz finds them (the API reads the state, not the log).
        catch_up(&mut folder)?;
    }

    let input_consumer = consumer(settings)?;
    // Resume each input partition after the last record already in the log (BROKER.md):
    // records appended before a crash that came before their input offsets were stored
    // are not appended again. Only with one log partition: across partitions a later
    // record may have landed while an earlier one did not, and then the stored offsets
    // (with the folder's per-partition check against records appended twice) are right.
    let mut input_offsets = store.positions()?.input;
    if log_partitions == 1 {
        for (source, last) in folder.appended() {
            let next = input_offsets.entry(source).or_insert(0);
            *next = (*next).max(last + 1);
        }
    }
    let mut assignment = Vec::new();
    for t in &settings.input_topics {
        for p in 0..topics::partitions(&input_consumer, t)? {
            assignment.push((t.clone(), p, input_offsets.get(&(t.clone(), p)).copied()));
        }
    }
    assign(&input_consumer, &assignment)?;

    metrics.set_ready(Ok(()));
    tracing::info!(log_partitions, inputs = assignment.len(), "running");

    // Three stages, each on its own thread, so that the broker's round trips and RocksDB's
    // `fsync` overlap instead of adding up: the sequencer appends input to the log, the
    // folder (this thread) folds the log into the store, the publisher sends the outbox.
    // They meet only in the broker and in RocksDB, in keys each owns (input offsets; state,
    // ledger and log offsets; outbox trims), so each keeps its own crash guarantee. The
    // first to fail stops the others, and its error is the run's.
    let failed = AtomicBool::new(false);
    let halt = || stop.load(Ordering::Relaxed) || failed.load(Ordering::Relaxed);
    let keep_offsets = |_: &BaseConsumer, touched: &BTreeMap<(String, i32), i64>| {
        store
            .store_input_offsets(touched)
            .context("cannot store the input offsets")
    };
    let sequencer = SequencerArgs {
        settings,
        producer: &producer,
        consumer: input_consumer,
        offsets: input_offsets,
        keep_offsets: &keep_offsets,
        writes_ticks: &|| true,
        log_partitions,
        counters,
    };
    metrics.start_stages();
    std::thread::scope(|s| {
        let sequenced = s.spawn(|| {
            let _guard = FailOnPanic(&failed);
            let r = sequence_loop(sequencer, &halt);
            if r.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            r
        });
        let producer = &producer;
        let failed = &failed;
        let published = s.spawn(move || {
            let _guard = FailOnPanic(failed);
            let r = publish_loop(store, producer, counters, &woken);
            if r.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            r
        });
        let _guard = FailOnPanic(failed);
        let folded = (|| -> Result<()> {
            while !halt() {
                fold_step(settings, store, &log_consumer, &mut folder, counters)?;
                record_log_lag(metrics, settings, &log_consumer, log_partitions, &folder);
                metrics.beat_stage(Stage::Fold);
            }
            Ok(())
        })();
        if folded.is_err() {
            failed.store(true, Ordering::Relaxed);
        }
        let sequenced = sequenced
            .join()
            .unwrap_or_else(|_| Err(StreamError::broken("the sequencer panicked")));
        // What the sequencer appended last is folded before the publisher's last round.
        let last = if folded.is_ok() && sequenced.is_ok() {
            settle(store, &mut folder)
                .and_then(|()| fold_step(settings, store, &log_consumer, &mut folder, counters))
                .and_then(|_| settle(store, &mut folder))
        } else {
            Ok(())
        };
        // The publisher's last round comes once nothing can wake it any more (a batch
        // still being written after a failure holds the callback until it is written).
        folder.on_written = None;
        drop(wake);
        let published = published
            .join()
            .unwrap_or_else(|_| Err(StreamError::broken("the publisher panicked")));
        folded.and(sequenced).and(last).and(published)
    })?;
    tracing::info!("stopped");
    Ok(())
}

/// Stops the other stages when a stage's thread panics (it has no error to return then).
pub(crate) struct FailOnPanic<'a>(pub(crate) &'a AtomicBool);

impl Drop for FailOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::Relaxed);
        }
    }
}

/// The next offset of each input partition a batch read, by (topic, partition).
pub(crate) type InputOffsets = BTreeMap<(String, i32), i64>;

/// Keeps the next input offsets a batch read once the log holds the batch.
pub(crate) type KeepOffsets<'a> = dyn Fn(&BaseConsumer, &InputOffsets) -> Result<()> + Sync + 'a;

/// What the sequencer owns.
pub(crate) struct SequencerArgs<'a> {
    pub settings: &'a Settings,
    pub producer: &'a Producer,
    pub consumer: BaseConsumer,
    /// The next input offset of each partition.
    pub offsets: BTreeMap<(String, i32), i64>,
    /// Keeps the next input offsets of the partitions a batch read, once the log holds
    /// the batch (in the store for one instance, committed to Kafka for a group).
    pub keep_offsets: &'a KeepOffsets<'a>,
    /// Whether this instance writes the clock's ticks (one of a group does).
    pub writes_ticks: &'a (dyn Fn() -> bool + Sync),
    pub log_partitions: i32,
    pub counters: &'a Counters,
}

/// Stage 1: appends input records to the log, and ticks, until `halt`.
/// Why a record from an input topic may not enter the log, if it may not: its `created` is
/// more than `skew` ahead of the wall clock (SPEC section 10), or its type is one only the
/// engine writes (a partition's message to another, [`loyalty_core::partition::INTERNAL`]:
/// from upstream it would move points no record asked for).
pub fn refused_at_entry(rec: &loyalty_core::Record, wall: i64, skew: Duration) -> Option<String> {
    if rec.created.0 > wall + skew.as_secs() as i64 {
        return Some(format!(
            "created: {} is more than {} s ahead of the wall clock",
            rec.created,
            skew.as_secs()
        ));
    }
    if rec.is_message() || loyalty_core::partition::INTERNAL.contains(&rec.kind.as_str()) {
        return Some(format!(
            "type: {} is written by the engine to its own log, never by upstream",
            rec.kind
        ));
    }
    None
}

pub(crate) fn sequence_loop(args: SequencerArgs<'_>, halt: &dyn Fn() -> bool) -> Result<()> {
    let SequencerArgs {
        settings,
        producer,
        consumer: input_consumer,
        offsets: mut input_offsets,
        keep_offsets,
        writes_ticks,
        log_partitions,
        counters,
    } = args;
    let producer = producer.clone();
    let metrics = &*counters.metrics;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the sequencer's runtime")?;
    let mut futures = Vec::new();
    let mut last_tick = Instant::now();
    while !halt() {
        let messages = poll_batch(
            &input_consumer,
            settings.batch_size,
            Duration::from_millis(5),
        )?;
        let wall = now();
        let mut touched = BTreeMap::new();
        let mut appends: Vec<(DeliveryFuture, usize)> = Vec::new();
        let mut refused: Vec<usize> = Vec::new();
        // Dead letters sent straight from the sequencer (they never enter the log).
        let mut dead_letters = 0u64;
        for (index, m) in messages.iter().enumerate() {
            let value = m.payload().unwrap_or_default();
            let meta = logrec::meta(m.headers());
            let parsed = logrec::parse(meta.content_type.as_deref(), value).ok();
            let src = Source {
                topic: m.topic().to_string(),
                partition: m.partition(),
                offset: m.offset(),
            };
            touched.insert((src.topic.clone(), src.partition), src.offset + 1);
            metrics
                .consumed
                .get_or_create(&label("topic", src.topic.clone()))
                .inc();
            if let Some((rec, detail)) = parsed
                .as_ref()
                .and_then(|r| refused_at_entry(r, wall, settings.max_skew).map(|d| (r, d)))
            {
                let rejection = Rejection::new(Some(&rec.id), Reason::Invalid, detail);
                metrics
                    .rejected
                    .get_or_create(&label("reason", Reason::Invalid.as_str()))
                    .inc();
                if let Some(e) = outbox::entry(
                    settings,
                    &Output::Rejected(rejection),
                    None,
                    value,
                    Some(&src),
                ) {
                    futures.push(send_entry(&producer, &e)?);
                    dead_letters += 1;
                }
                continue;
            }
            let is_update = parsed
                .as_ref()
                .is_some_and(|r| r.kind == "loyalty.program.updated");
            let headers = logrec::headers(Some(&src), is_update, meta.content_type.as_deref());
            // A record goes to its own customer's partition (docs/scale-out.md), whatever
            // key upstream gave it; one that does not parse, by its key (it is refused
            // there all the same).
            let home = parsed.as_ref().and_then(|r| r.home_customer());
            let parts: Vec<i32> = if is_update {
                (0..log_partitions).collect()
            } else {
                vec![partition_of(
                    home.map(str::as_bytes).or(m.key()),
                    log_partitions,
                )]
            };
            for p in parts {
                let mut rec = FutureRecord::to(&settings.log_topic)
                    .payload(value)
                    .partition(p)
                    .headers(headers.clone());
                if let Some(k) = m.key() {
                    rec = rec.key(k);
                }
                match try_send(&producer, rec) {
                    Ok(f) => appends.push((f, index)),
                    Err(e) if refused_for_good(&e) => refused.push(index),
                    Err(e) => return Err(e).context("cannot queue a log record"),
                }
            }
        }
        // Ticks, so that time-driven effects happen without traffic.
        if last_tick.elapsed() >= settings.tick_interval && writes_ticks() {
            last_tick = Instant::now();
            let created = Timestamp(wall);
            // The id only has to be new: nanoseconds of the wall clock, so that a restart
            // within the same second does not write a tick the engine takes for a duplicate.
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let tick = format!(
                r#"{{"id":"tick_{nanos}","type":"clock.tick","created":"{created}","data":{{}}}}"#
            );
            broadcast(
                &producer,
                settings,
                log_partitions,
                tick.as_bytes(),
                &mut futures,
            )?;
        }
        await_all(
            &rt,
            std::mem::take(&mut futures),
            Some(metrics),
            Stage::Sequence,
        )?;
        let mut appended = std::collections::BTreeSet::new();
        for (f, index) in appends.drain(..) {
            match deliver(&rt, f, Some(metrics), Stage::Sequence) {
                Ok(Ok(_)) => {
                    appended.insert(index);
                }
                Ok(Err((e, _))) if refused_for_good(&e) => refused.push(index),
                Ok(Err((e, _))) => return Err(e).context("a log record was not delivered"),
                Err(_) => {
                    return Err(StreamError::broken(
                        "the producer went away before delivering",
                    ))
                }
            }
        }
        // A record the broker will never take (too large once in the log) must not stop
        // the engine: it goes to the dead-letter topic, with its reason, and is skipped.
        refused.sort_unstable();
        refused.dedup();
        for index in refused.drain(..) {
            let m = &messages[index];
            let size = m.payload().map_or(0, <[u8]>::len);
            let detail = format!("the record ({size} bytes) is too large for the log");
            tracing::warn!(
                topic = m.topic(),
                offset = m.offset(),
                size,
                "record too large for the log"
            );
            let src = Source {
                topic: m.topic().to_string(),
                partition: m.partition(),
                offset: m.offset(),
            };
            let rejection = Rejection::new(None, Reason::Invalid, detail);
            metrics
                .rejected
                .get_or_create(&label("reason", Reason::Invalid.as_str()))
                .inc();
            // The value is left out: the broker would refuse it on the DLQ as well.
            if let Some(e) = outbox::entry(
                settings,
                &Output::Rejected(rejection),
                None,
                &[],
                Some(&src),
            ) {
                futures.push(send_entry(&producer, &e)?);
                dead_letters += 1;
            }
        }
        await_all(
            &rt,
            std::mem::take(&mut futures),
            Some(metrics),
            Stage::Sequence,
        )?;
        if dead_letters > 0 {
            metrics
                .published
                .get_or_create(&label("topic", settings.dlq_topic.clone()))
                .inc_by(dead_letters);
        }
        if !touched.is_empty() {
            failpoint::hit("sequence-after-log-ack");
            keep_offsets(&input_consumer, &touched)?;
            input_offsets.extend(touched);
            counters
                .sequenced
                .fetch_add(messages.len() as u64, Ordering::Relaxed);
            metrics.sequenced.inc_by(appended.len() as u64);
        }
        drop(messages);

        // What an operator watches: how far behind each input partition is.
        if let Ok(assigned) = input_consumer.assignment() {
            for e in assigned.elements() {
                let (t, p) = (e.topic(), e.partition());
                let next = input_offsets.get(&(t.to_string(), p)).copied().unwrap_or(0);
                record_lag(metrics, &input_consumer, t, p, next);
            }
        }
        metrics.beat_stage(Stage::Sequence);
    }
    Ok(())
}

/// Stage 3: publishes the outbox whenever the folder has committed a batch (or every 100 ms,
/// for what an earlier round could not deliver), and once more after the folder's last batch.
/// A round sends every entry not yet sent and awaits their acknowledgements. Sending each
/// entry the moment it is stored, with acknowledgements collected as they come, was tried:
/// it did not measure better on tansu (an acknowledgement takes ~13 ms there either way)
/// and needs a thread polling for acknowledgements.
fn publish_loop(
    store: &Store,
    producer: &Producer,
    counters: &Counters,
    woken: &std::sync::mpsc::Receiver<()>,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the publisher's runtime")?;
    let metrics = &*counters.metrics;
    let mut from = 0;
    loop {
        let last = matches!(
            woken.recv_timeout(Duration::from_millis(100)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
        );
        let n = publish_outbox(&rt, producer, store, Some(metrics), &mut from)?;
        counters.published.fetch_add(n as u64, Ordering::Relaxed);
        metrics.beat_stage(Stage::Publish);
        if last {
            return Ok(());
        }
    }
}

/// Sets the consumer lag of one partition: its high watermark minus the next offset to read.
fn record_lag(metrics: &Metrics, consumer: &BaseConsumer, topic: &str, partition: i32, next: i64) {
    if let Some(high) = cached_high(consumer, topic, partition) {
        metrics
            .lag
            .get_or_create(&vec![
                ("topic", topic.to_string()),
                ("partition", partition.to_string()),
            ])
            .set((high - next).max(0));
    }
}

/// The lag of every log partition behind the folder.
fn record_log_lag(
    metrics: &Metrics,
    settings: &Settings,
    consumer: &BaseConsumer,
    partitions: i32,
    folder: &Folder,
) {
    for p in 0..partitions {
        let next = folder.positions.get(&p).copied().unwrap_or(0);
        record_lag(metrics, consumer, &settings.log_topic, p, next);
    }
}

/// Folds what the log holds next into a batch and hands it to the store, to be written
/// while the next batch folds ([`Folder::commit_pipelined`]); with nothing to fold, waits
/// for the batch being written, if any. A batch is reported committed once written, by the
/// folder's callback ([`on_written`]). Returns the records folded.
fn fold_step(
    settings: &Settings,
    store: &Arc<Store>,
    consumer: &BaseConsumer,
    folder: &mut Folder,
    counters: &Counters,
) -> Result<usize> {
    // While a batch is written, what has arrived folds beside it, without waiting for
    // more: with nothing there, the write is waited for.
    let wait = if folder.is_writing() {
        Duration::ZERO
    } else {
        Duration::from_millis(5)
    };
    let messages = poll_batch(consumer, settings.batch_size, wait)?;
    let n = messages.len();
    for m in &messages {
        let meta = logrec::meta(m.headers());
        folder
            .fold(
                store,
                settings,
                m.partition(),
                m.offset(),
                &meta,
                m.payload().unwrap_or_default(),
            )
            .context("cannot read the state")?;
    }
    drop(messages);
    if folder.pending > 0 {
        folder
            .commit_pipelined(store)
            .context("cannot store a folded batch")?;
    } else {
        folder.finish().context("cannot store a folded batch")?;
    }
    // The live view's totals, as folded.
    counters.awarded.store(
        i64::try_from(folder.awarded).unwrap_or(i64::MAX),
        Ordering::Relaxed,
    );
    counters
        .tier_changes
        .store(folder.tier_changes, Ordering::Relaxed);
    Ok(n)
}

/// Waits until every folded record is written.
fn settle(store: &Store, folder: &mut Folder) -> Result<()> {
    folder
        .commit(store)
        .context("cannot store a folded batch")
        .map(drop)
}

/// What a batch tells once written, on the thread that wrote it: counts, metrics, the
/// signal the HTTP API waits on; and the publisher woken.
fn on_written(
    counters: Arc<Counters>,
    wake: std::sync::mpsc::SyncSender<()>,
) -> crate::folder::OnWritten {
    Arc::new(move |n, took, log| {
        failpoint::hit("fold-after-commit");
        counters.folded.fetch_add(n as u64, Ordering::Relaxed);
        counters.committed.send_modify(|c| *c += 1);
        let m = &counters.metrics;
        m.folded.inc_by(n as u64);
        m.batch_size.observe(n as f64);
        m.batch_seconds.observe(took.as_secs_f64());
        for (p, next) in log {
            m.log_offset
                .get_or_create(&label("partition", p.to_string()))
                .set(*next);
        }
        let _ = wake.try_send(());
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// More entries than a round holds all go out, in order, round after round, and the
    /// outbox is empty after (on librdkafka's mock cluster, which speaks the protocol).
    #[test]
    fn publish_outbox_sends_round_after_round() {
        let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
        cluster
            .create_topic("rounds", 1, 1)
            .expect("create the topic");
        let dir = std::env::temp_dir().join(format!("loyalty-rounds-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).expect("open the store");
        let n = OUTBOX_ROUND * 2 + 7;
        let outbox = (0..n)
            .map(|i| OutboxEntry {
                seq: 0,
                topic: "rounds".into(),
                key: None,
                payload: i.to_string().into_bytes(),
                headers: vec![],
                partition: None,
                line: None,
            })
            .collect();
        let config = loyalty_core::parse_config(r#"{"programs":[]}"#).expect("config");
        let engine = loyalty_core::Engine::new(&config);
        store
            .commit(
                &engine,
                loyalty_store::Batch {
                    outbox,
                    ..Default::default()
                },
            )
            .expect("commit");
        let brokers = cluster.bootstrap_servers();
        let producer: Producer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("enable.idempotence", "true")
            .create_with_context(EngineContext)
            .expect("producer");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut from = 0;
        let sent = publish_outbox(&rt, &producer, &store, None, &mut from).expect("publish");
        assert_eq!(sent, n);
        assert!(store.outbox().expect("outbox").is_empty());
        assert_eq!(
            publish_outbox(&rt, &producer, &store, None, &mut from).expect("again"),
            0
        );

        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "rounds")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("rounds", 0, Offset::Beginning)
            .expect("partition");
        consumer.assign(&tpl).expect("assign");
        let mut got = Vec::with_capacity(n);
        let deadline = Instant::now() + Duration::from_secs(60);
        while got.len() < n && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                got.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
            }
        }
        let want: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        assert_eq!(got, want);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A record of a type only the engine writes (a partition's message) never enters the
    /// log from upstream: it would move points no command asked for. The skew is checked
    /// first, and an ordinary record passes.
    #[test]
    fn upstream_may_not_write_the_engines_messages() {
        let rec = |kind: &str, created: &str, data: &str| {
            let line =
                format!(r#"{{"id":"m1","type":"{kind}","created":"{created}","data":{data}}}"#);
            loyalty_core::envelope::parse(line.as_bytes()).expect("parses")
        };
        let credit =
            r#"{"program":"p","from":"a","to":"b","points":5,"source":"t1","transaction":"ptx_1"}"#;
        let wall = 1_767_225_600; // 2026-01-01T00:00:00Z
        let skew = Duration::from_secs(300);
        let stock =
            r#"{"program":"p","reward":"r","customer":"a","quantity":1,"points":5,"source":"t1"}"#;
        for kind in loyalty_core::partition::INTERNAL {
            let award =
                r#"{"program":"p","role":"referrer","referrer":"a","referee":"b","source":"t1"}"#;
            let data = if kind.starts_with("loyalty.stock.") {
                stock
            } else if kind.starts_with("loyalty.transfer.") {
                credit
            } else {
                award
            };
            let why = refused_at_entry(&rec(kind, "2026-01-01T00:00:00Z", data), wall, skew);
            assert!(
                why.is_some_and(|w| w.contains("never by upstream")),
                "{kind}"
            );
        }
        let pay = r#"{"id":"pay_1","customer":"a","amount":100,"currency":"EUR"}"#;
        let ok = rec("payment.completed", "2026-01-01T00:05:00Z", pay);
        assert_eq!(refused_at_entry(&ok, wall, skew), None);
        let ahead = rec("payment.completed", "2026-01-01T00:05:01Z", pay);
        assert!(refused_at_entry(&ahead, wall, skew).is_some_and(|w| w.contains("ahead")));
    }

    #[test]
    fn partitions_are_stable() {
        assert_eq!(partition_of(Some(b"cus_A"), 1), 0);
        assert_eq!(partition_of(None, 8), 0);
        let p = partition_of(Some(b"cus_A"), 8);
        assert_eq!(p, partition_of(Some(b"cus_A"), 8));
        assert!((0..8).contains(&p));
    }
}
