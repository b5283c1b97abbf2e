//! `loyalty run --group G`: one instance of several that split the log's partitions
//! (docs/scale-out.md).
//!
//! Kafka's consumer-group protocol hands out the partitions: the log's to group `G`, the
//! input topics' to group `G.sequencer`, both with the cooperative-sticky assignor, so a
//! rebalance moves only the partitions that change owner. For every log partition it is
//! given, an instance keeps that partition's state in a RocksDB of its own,
//! `{--state}/partition-{P}`, folded by an engine of that partition alone, with the
//! partition's next offset in the same write batch as the state (as one instance does).
//! A partition it is given again (or held before) resumes from that copy's offset; one it
//! never held is folded from the beginning of its log.
//!
//! Owns: the membership (assign, revoke, loss), the partitions' folders, publishing their
//! outboxes, and which instance writes the clock's ticks (the one holding log partition 0).
//! The rules of what crosses partitions are the engine's ([`loyalty_core::partition`]);
//! their messages leave through each partition's outbox like its events.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loyalty_core::config::parse_program;
use loyalty_store::Store;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::error::{Context, Result, StreamError};
use crate::folder::Folder;
use crate::logrec;
use crate::metrics::{label, Metrics};
use crate::service::{self, Counters, SequencerArgs};
use crate::watermark::cached_high;
use crate::{topics, Settings};

/// What an instance of a group is started with.
#[derive(Clone, Debug)]
pub struct Group {
    /// The consumer group's name (`--group`).
    pub name: String,
    /// Where the instance keeps its partitions' states (`--state`).
    pub state: PathBuf,
    /// How long the group waits for a silent member before giving its partitions away.
    pub session_timeout: Duration,
    /// Where the instance's HTTP API is reached by the others (`--advertise-url`), when it
    /// serves one: it is announced on [`instances_topic`].
    pub advertise_url: Option<String>,
    /// The instance's id among the group's (its advertised URL when it has one).
    pub id: String,
    /// How many other instances keep a warm copy of each partition (`--standby-replicas`).
    pub standby_replicas: usize,
}

impl Group {
    /// Whether the instance announces itself on [`instances_topic`] and reads the others'.
    pub fn announces(&self) -> bool {
        self.advertise_url.is_some() || self.standby_replicas > 0
    }
}

/// The compacted topic where a group's instances say what they serve, and where.
pub fn instances_topic(settings: &Settings) -> String {
    format!("{}.instances", settings.log_topic)
}

/// What the instance serves, for its HTTP API: the partitions restored and held, and who
/// serves the others.
#[derive(Debug)]
pub struct Serving {
    /// The stores of the partitions held and restored.
    pub stores: std::sync::RwLock<BTreeMap<i32, Arc<Store>>>,
    /// The log's partition count, once known.
    pub count: std::sync::atomic::AtomicI32,
    /// The other instances' announcements.
    pub directory: crate::instances::Directory,
}

impl Serving {
    /// Nothing served yet; announcements older than `stale_after` are of instances gone.
    pub fn new(stale_after: Duration) -> Serving {
        Serving {
            stores: std::sync::RwLock::new(BTreeMap::new()),
            count: std::sync::atomic::AtomicI32::new(1),
            directory: crate::instances::Directory::new(stale_after),
        }
    }
}

/// The state directory of one log partition.
pub fn partition_dir(state: &Path, partition: i32) -> PathBuf {
    state.join(format!("partition-{partition}"))
}

/// A change of what the instance holds, as the rebalance callback saw it.
#[derive(Debug)]
enum Change {
    Assigned(Vec<i32>),
    Revoked { partitions: Vec<i32>, lost: bool },
}

/// What the rebalance callback (run inside `poll`) shares with the fold loop.
struct Shared {
    dir: PathBuf,
    stores: Mutex<BTreeMap<i32, Arc<Store>>>,
    changes: Mutex<Vec<Change>>,
    failure: Mutex<Option<String>>,
}

impl Shared {
    /// The store of partition `p`, opened once and kept for the instance's life.
    fn store(&self, p: i32) -> Result<Arc<Store>> {
        let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = stores.get(&p) {
            return Ok(s.clone());
        }
        let dir = partition_dir(&self.dir, p);
        let store = Arc::new(
            Store::open(&dir)
                .with_context(|| format!("cannot open the state in {}", dir.display()))?,
        );
        stores.insert(p, store.clone());
        Ok(store)
    }

    fn fail(&self, why: String) {
        tracing::error!(%why, "rebalance failed");
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(why);
    }

    fn push(&self, c: Change) {
        self.changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(c);
    }

    fn pending(&self) -> bool {
        !self
            .changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }
}

/// The log consumer's context: assigns each partition it is given at the offset its own
/// store holds (the one hook that can set where an assigned partition starts), and tells
/// the fold loop what it was given and what it lost.
struct GroupContext(Arc<Shared>);

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let parts: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        let ps: Vec<i32> = parts.iter().map(|(_, p)| *p).collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                for (topic, p) in &parts {
                    let offset = match self.0.store(*p).and_then(|s| {
                        s.positions()
                            .context("cannot read the stored offsets")
                            .map(|pos| pos.log.get(p).copied())
                    }) {
                        Ok(Some(next)) => Offset::Offset(next),
                        Ok(None) => Offset::Beginning,
                        Err(e) => {
                            self.0.fail(format!("partition {p}: {e}"));
                            Offset::Beginning
                        }
                    };
                    if let Err(e) = tpl.set_partition_offset(topic, *p, offset) {
                        self.0.fail(format!("partition {p}: {e}"));
                    }
                }
                tracing::info!(partitions = ?ps, "assigned");
                if let Err(e) = consumer.incremental_assign(tpl) {
                    self.0
                        .fail(format!("cannot take the partitions {ps:?}: {e}"));
                }
                self.0.push(Change::Assigned(ps));
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                // Read before unassigning, which clears it.
                let lost = consumer.assignment_lost();
                tracing::info!(partitions = ?ps, lost, "revoked");
                self.0.push(Change::Revoked {
                    partitions: ps.clone(),
                    lost,
                });
                if let Err(e) = consumer.incremental_unassign(tpl) {
                    tracing::warn!(error = %e, "cannot let the partitions go");
                }
            }
            other => tracing::warn!(error = ?other, "rebalance error"),
        }
    }
}

/// A warm copy of a partition another instance holds: folded like the owner folds it,
/// its outbox kept (never sent) but for what the owner says it delivered.
struct Standby {
    store: Arc<Store>,
    folder: Folder,
    /// After each commit: the position reached and the next outbox sequence number.
    commits: std::collections::VecDeque<(i64, u64)>,
}

/// A log partition the instance holds.
struct Held {
    store: Arc<Store>,
    folder: Folder,
    /// The outbox cursor ([`service::publish_outbox`]).
    from: u64,
    /// While restoring: the end of the partition's log when it was assigned.
    restore_to: Option<i64>,
}

impl Held {
    fn position(&self, p: i32) -> i64 {
        self.folder.positions.get(&p).copied().unwrap_or(0)
    }
}

fn group_consumer<C: ConsumerContext>(
    settings: &Settings,
    group: &str,
    session_timeout: Duration,
    context: C,
) -> Result<BaseConsumer<C>> {
    ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", group)
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set(
            "session.timeout.ms",
            session_timeout.as_millis().to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            (session_timeout.as_millis() / 5).max(100).to_string(),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "10")
        .create_with_context(context)
        .with_context(|| format!("cannot join the consumer group {group}"))
}

/// Folds one log record into a partition's folder, unless the folder has it already (the
/// partition came back, or its copy was taken over, at a stored offset below it).
fn fold_message(
    folder: &mut Folder,
    store: &Store,
    settings: &Settings,
    m: &rdkafka::message::BorrowedMessage<'_>,
) -> Result<()> {
    let p = m.partition();
    if m.offset() < folder.positions.get(&p).copied().unwrap_or(0) {
        return Ok(());
    }
    let meta = logrec::meta(m.headers());
    folder
        .fold(
            store,
            settings,
            p,
            m.offset(),
            &meta,
            m.payload().unwrap_or_default(),
        )
        .with_context(|| format!("cannot read the state of partition {p}"))?;
    Ok(())
}

/// Runs one instance of the group until `stop` is set.
pub fn run(
    settings: &Settings,
    group: &Group,
    serving: &Serving,
    stop: &AtomicBool,
    counters: &Arc<Counters>,
) -> Result<()> {
    std::fs::create_dir_all(&group.state)
        .with_context(|| format!("cannot create {}", group.state.display()))?;
    let (rt, producer) = service::start(settings)?;
    let metrics = &counters.metrics;
    metrics.set_ready(Err("joining the group".into()));
    let shared = Arc::new(Shared {
        dir: group.state.clone(),
        stores: Mutex::new(BTreeMap::new()),
        changes: Mutex::new(Vec::new()),
        failure: Mutex::new(None),
    });
    let log_consumer = group_consumer(
        settings,
        &group.name,
        group.session_timeout,
        GroupContext(shared.clone()),
    )?;
    let log_partitions = topics::partitions(&log_consumer, &settings.log_topic)?;
    serving.count.store(log_partitions, Ordering::Relaxed);
    log_consumer
        .subscribe(&[&settings.log_topic])
        .context("cannot subscribe to the log")?;
    let input_consumer = group_consumer(
        settings,
        &format!("{}.sequencer", group.name),
        group.session_timeout,
        rdkafka::consumer::DefaultConsumerContext,
    )?;
    let inputs: Vec<&str> = settings.input_topics.iter().map(String::as_str).collect();
    input_consumer
        .subscribe(&inputs)
        .context("cannot subscribe to the input topics")?;

    let owns_zero = AtomicBool::new(false);
    let failed = AtomicBool::new(false);
    let halt = || stop.load(Ordering::Relaxed) || failed.load(Ordering::Relaxed);
    // The input offsets of a group live in Kafka (they move with the input partitions);
    // a batch read again by the next owner is recognised in the log by its source.
    let keep_offsets = |c: &BaseConsumer, touched: &BTreeMap<(String, i32), i64>| {
        let mut tpl = TopicPartitionList::new();
        for ((t, p), next) in touched {
            tpl.add_partition_offset(t, *p, Offset::Offset(*next))
                .context("cannot build the offsets to commit")?;
        }
        match c.commit(&tpl, rdkafka::consumer::CommitMode::Sync) {
            Ok(()) => Ok(()),
            // Partitions given away meanwhile: their next owner reads them again.
            Err(e) => {
                tracing::warn!(error = %e, "input offsets not committed");
                Ok(())
            }
        }
    };
    let writes_ticks = || owns_zero.load(Ordering::Relaxed);
    let sequencer = SequencerArgs {
        settings,
        producer: &producer,
        consumer: input_consumer,
        offsets: BTreeMap::new(),
        keep_offsets: &keep_offsets,
        writes_ticks: &writes_ticks,
        log_partitions,
        counters,
    };
    tracing::info!(group = %group.name, log_partitions, "joining");
    metrics.start_stages();
    std::thread::scope(|s| {
        let sequenced = s.spawn(|| {
            let _guard = service::FailOnPanic(&failed);
            let r = service::sequence_loop(sequencer, &halt);
            if r.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            r
        });
        let followed = group.announces().then(|| {
            s.spawn(|| {
                let topic = instances_topic(settings);
                let r = crate::instances::follow(
                    &settings.brokers,
                    &topic,
                    &serving.directory,
                    &|| halt(),
                );
                if r.is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
                r
            })
        });
        let _guard = service::FailOnPanic(&failed);
        let mut fold = FoldLoop {
            settings,
            rt: &rt,
            producer: &producer,
            consumer: &log_consumer,
            shared: &shared,
            counters,
            metrics,
            log_partitions,
            held: BTreeMap::new(),
            config_applied: settings.programs.is_empty(),
            config_sent: Vec::new(),
            serving,
            group,
            announced: (Vec::new(), None),
            published: BTreeMap::new(),
            standby: BTreeMap::new(),
            standby_consumer: service::consumer(settings)?,
        };
        let folded = (|| -> Result<()> {
            while !halt() {
                fold.step()?;
                owns_zero.store(fold.held.contains_key(&0), Ordering::Relaxed);
            }
            fold.commit_all()?;
            fold.publish_all()
        })();
        if folded.is_err() {
            failed.store(true, Ordering::Relaxed);
        }
        let sequenced = sequenced
            .join()
            .unwrap_or_else(|_| Err(StreamError::broken("the sequencer panicked")));
        let followed = followed.map_or(Ok(()), |f| {
            f.join()
                .unwrap_or_else(|_| Err(StreamError::broken("the instances' reader panicked")))
        });
        folded.and(sequenced).and(followed)
    })?;
    tracing::info!("stopped");
    Ok(())
}

/// The fold side of an instance: the partitions it holds, folded and published.
struct FoldLoop<'a> {
    settings: &'a Settings,
    rt: &'a tokio::runtime::Runtime,
    producer: &'a service::Producer,
    consumer: &'a BaseConsumer<GroupContext>,
    shared: &'a Shared,
    counters: &'a Counters,
    metrics: &'a Arc<Metrics>,
    log_partitions: i32,
    held: BTreeMap<i32, Held>,
    serving: &'a Serving,
    group: &'a Group,
    /// What was last announced, and when.
    announced: (Vec<i32>, Option<Instant>),
    /// For each partition held: a log offset below which every record's outbox is
    /// delivered (announced, for its standbys).
    published: BTreeMap<i32, i64>,
    /// The partitions this instance keeps a warm copy of (`--standby-replicas`).
    standby: BTreeMap<i32, Standby>,
    /// Reads the standby partitions, assigned (no group).
    standby_consumer: BaseConsumer,
    config_applied: bool,
    /// The configured programs sent, with their revisions: the instance is ready once
    /// every partition it holds has folded them (a request right after `/readyz` finds them).
    config_sent: Vec<(String, u64)>,
}

impl FoldLoop<'_> {
    /// Polls a batch (cut short by a rebalance), folds it into the partitions it belongs
    /// to, commits them, takes in what the group changed, and publishes.
    fn step(&mut self) -> Result<()> {
        let started = Instant::now();
        let mut n = 0;
        let mut wait = Duration::from_millis(5);
        let consumer = self.consumer;
        while n < self.settings.batch_size && !self.shared.pending() {
            match consumer.poll(wait) {
                Some(Ok(m)) => {
                    n += 1;
                    if self.shared.pending() {
                        // This poll served a rebalance: what it gave is taken up before
                        // the record (perhaps of a partition just given) is folded.
                        self.commit_all()?;
                        self.take_changes()?;
                    }
                    let p = m.partition();
                    // A partition let go meanwhile, or a record already folded (the
                    // partition came back at its stored offset): nothing to do.
                    let Some(h) = self.held.get_mut(&p) else {
                        continue;
                    };
                    fold_message(&mut h.folder, &h.store, self.settings, &m)?;
                }
                Some(Err(e)) if crate::error::fatal(&e) => {
                    return Err(e).context("cannot consume the log")
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "consumer error");
                    break;
                }
                None => break,
            }
            wait = Duration::ZERO;
        }
        let folded = self.commit_all()?;
        if folded > 0 {
            let m = &self.counters.metrics;
            m.batch_size.observe(folded as f64);
            m.batch_seconds.observe(started.elapsed().as_secs_f64());
        }
        self.take_changes()?;
        if let Some(why) = self
            .shared
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            return Err(StreamError::broken(why));
        }
        self.track_restores();
        self.stand_by()?;
        self.announce()?;
        self.apply_config()?;
        self.publish_all()?;
        self.metrics.beat();
        Ok(())
    }

    /// Commits every partition's open batch. Returns the records committed.
    fn commit_all(&mut self) -> Result<usize> {
        let mut total = 0;
        for (p, h) in &mut self.held {
            let n = h
                .folder
                .commit(&h.store)
                .with_context(|| format!("cannot store a folded batch of partition {p}"))?;
            if n > 0 {
                self.metrics
                    .log_offset
                    .get_or_create(&label("partition", p.to_string()))
                    .set(h.position(*p));
            }
            total += n;
        }
        if total > 0 {
            crate::failpoint::hit("fold-after-commit");
            self.counters
                .folded
                .fetch_add(total as u64, Ordering::Relaxed);
            self.metrics.folded.inc_by(total as u64);
            self.counters.committed.send_modify(|c| *c += 1);
        }
        Ok(total)
    }

    /// Takes up the partitions the group gave, and lets go of those it took back (their
    /// batches are committed by now: the store keeps them as a warm copy).
    fn take_changes(&mut self) -> Result<()> {
        let changes = std::mem::take(
            &mut *self
                .shared
                .changes
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for c in changes {
            self.metrics.rebalances.inc();
            match c {
                Change::Assigned(ps) => {
                    for p in ps {
                        // A warm copy stops being one: its folder's batch is committed,
                        // and the owner's folder opens where it ends.
                        if let Some(mut sb) = self.standby.remove(&p) {
                            sb.folder.commit(&sb.store)?;
                            self.reassign_standby()?;
                            self.metrics
                                .takeovers
                                .get_or_create(&label("from", "standby"))
                                .inc();
                        }
                        let store = self.shared.store(p)?;
                        let folder = self.open_folder(&store, p)?;
                        let end = service::retry_while_leaderless(|| {
                            self.consumer.fetch_watermarks(
                                &self.settings.log_topic,
                                p,
                                Duration::from_secs(30),
                            )
                        })
                        .map(|(_, high)| high)
                        .with_context(|| format!("cannot read the end of partition {p}"))?;
                        let mut folder = folder;
                        folder.metrics = Some(self.metrics.clone());
                        tracing::info!(partition = p, from = ?folder.positions.get(&p), end, "taking up");
                        if !folder.positions.contains_key(&p) {
                            self.metrics
                                .takeovers
                                .get_or_create(&label("from", "start"))
                                .inc();
                        }
                        self.held.insert(
                            p,
                            Held {
                                store,
                                folder,
                                from: 0,
                                restore_to: Some(end),
                            },
                        );
                    }
                }
                Change::Revoked { partitions, lost } => {
                    for p in partitions {
                        if self.held.remove(&p).is_some() {
                            tracing::info!(partition = p, lost, "let go");
                        }
                        for state in ["active", "restoring"] {
                            self.partition_gauge(p, state).set(0);
                        }
                        self.metrics
                            .restore_remaining
                            .get_or_create(&label("partition", p.to_string()))
                            .set(0);
                    }
                }
            }
        }
        Ok(())
    }

    fn partition_gauge(&self, p: i32, state: &str) -> prometheus_client::metrics::gauge::Gauge {
        self.metrics
            .partitions
            .get_or_create(&vec![
                ("partition", p.to_string()),
                ("state", state.to_string()),
            ])
            .clone()
    }

    /// Marks each partition restored once it has folded up to the end its log had when
    /// it was taken up (the end seen since, if later); ready when none is restoring.
    fn track_restores(&mut self) {
        let mut restoring = Vec::new();
        let mut states = Vec::new();
        for (p, h) in &mut self.held {
            let pos = h.position(*p);
            if let Some(to) = h.restore_to {
                let end = cached_high(self.consumer, &self.settings.log_topic, *p)
                    .map_or(to, |high| high.max(to));
                if pos >= end {
                    h.restore_to = None;
                    tracing::info!(partition = p, offset = pos, "restored");
                } else {
                    restoring.push(format!("partition {p} ({} records to fold)", end - pos));
                }
                self.metrics
                    .restore_remaining
                    .get_or_create(&label("partition", p.to_string()))
                    .set((end - pos).max(0));
            }
            states.push((*p, h.restore_to.is_none()));
            if let Some(high) = cached_high(self.consumer, &self.settings.log_topic, *p) {
                self.metrics
                    .lag
                    .get_or_create(&vec![
                        ("topic", self.settings.log_topic.clone()),
                        ("partition", p.to_string()),
                    ])
                    .set((high - pos).max(0));
            }
        }
        for (p, active) in states {
            self.partition_gauge(p, "active").set(i64::from(active));
            self.partition_gauge(p, "restoring").set(i64::from(!active));
        }
        if !restoring.is_empty() {
            self.metrics
                .set_ready(Err(format!("restoring {}", restoring.join(", "))));
        } else if !self.config_applied || !self.config_folded() {
            self.metrics
                .set_ready(Err("applying the --config file".into()));
        } else {
            self.metrics.set_ready(Ok(()));
        }
    }

    /// Serves the partitions held and restored through the API, and says so on the
    /// instances topic when that changes (and every 2 s, so that the others know it lives).
    fn announce(&mut self) -> Result<()> {
        let serving: BTreeMap<i32, Arc<Store>> = self
            .held
            .iter()
            .filter(|(_, h)| h.restore_to.is_none())
            .map(|(p, h)| (*p, h.store.clone()))
            .collect();
        let partitions: Vec<i32> = serving.keys().copied().collect();
        *self
            .serving
            .stores
            .write()
            .unwrap_or_else(|e| e.into_inner()) = serving;
        if !self.group.announces() {
            return Ok(());
        }
        let due = self
            .announced
            .1
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(2));
        if partitions == self.announced.0 && !due {
            return Ok(());
        }
        let a = crate::instances::Announcement {
            id: self.group.id.clone(),
            url: self.group.advertise_url.clone(),
            partitions: partitions.clone(),
            published: self.published.clone(),
            at: crate::instances::now_ms(),
        };
        let value = serde_json::to_vec(&a).map_err(|e| StreamError::broken(e.to_string()))?;
        let topic = instances_topic(self.settings);
        let rec = FutureRecord::to(&topic)
            .key(self.group.id.as_bytes())
            .payload(&value);
        // Not awaited: a lost announcement is followed by the next in 2 s.
        if let Err((e, _)) = self.producer.send_result(rec) {
            tracing::warn!(error = %e, "cannot announce the partitions served");
        }
        self.serving.directory.record(a);
        self.announced = (partitions, Some(Instant::now()));
        Ok(())
    }

    /// The folder of partition `p` over its store (held or kept as a copy), once the store
    /// is known to be of this log's partition count: a customer's partition is its hash
    /// modulo the count, so a state built for another count holds other customers.
    fn open_folder(&self, store: &Store, p: i32) -> Result<Folder> {
        match store.partition_count()? {
            Some(n) if n != self.log_partitions => {
                return Err(StreamError::broken(format!(
                    "the state of partition {p} was built from a log of {n} partitions; {} \
                     has {}: the count is fixed (docs/operations.md, \"Scale out\")",
                    self.settings.log_topic, self.log_partitions
                )))
            }
            Some(_) => {}
            None => store.set_partition_count(self.log_partitions)?,
        }
        let mut folder = Folder::open_partition(store, true, p, self.log_partitions)
            .with_context(|| format!("cannot load the state of partition {p}"))?;
        folder.ws.account_cache = self.settings.account_cache;
        Ok(folder)
    }

    /// Keeps the warm copies this instance stands by for (`--standby-replicas`): which
    /// they are follows from the announcements; each is folded from its log as its owner
    /// folds it, publishing nothing, and forgets the outbox entries its owner delivered.
    fn stand_by(&mut self) -> Result<()> {
        if self.group.standby_replicas == 0 {
            return Ok(());
        }
        let dir = &self.serving.directory;
        let mut want: Vec<i32> = dir
            .standby_for(
                &self.group.id,
                self.group.standby_replicas,
                self.log_partitions,
            )
            .into_iter()
            .filter(|p| !self.held.contains_key(p))
            .collect();
        // A copy is kept while its partition has no known owner (one being restored does
        // not announce it yet): the ring is decided again once it has one.
        for p in self.standby.keys() {
            if !want.contains(p) && !self.held.contains_key(p) && dir.owner_of(*p).is_none() {
                want.push(*p);
            }
        }
        want.sort_unstable();
        let have: Vec<i32> = self.standby.keys().copied().collect();
        if want != have {
            for p in have.iter().filter(|p| !want.contains(p)) {
                if let Some(mut sb) = self.standby.remove(p) {
                    sb.folder.commit(&sb.store)?;
                }
                self.partition_gauge(*p, "standby").set(0);
            }
            for p in want.iter().filter(|p| !have.contains(p)) {
                let store = self.shared.store(*p)?;
                let folder = self.open_folder(&store, *p)?;
                tracing::info!(partition = p, from = ?folder.positions.get(p), "standing by");
                self.partition_gauge(*p, "standby").set(1);
                // What the store already holds (an earlier ownership or copy) is forgotten
                // like what this copy folds, once the owner's mark passes it.
                let pos = folder.positions.get(p).copied().unwrap_or(0);
                let commits = std::collections::VecDeque::from([(pos, store.next_sequence())]);
                self.standby.insert(
                    *p,
                    Standby {
                        store,
                        folder,
                        commits,
                    },
                );
            }
            self.reassign_standby()?;
        }
        if self.standby.is_empty() {
            return Ok(());
        }
        let consumer = &self.standby_consumer;
        for _ in 0..self.settings.batch_size {
            match consumer.poll(Duration::ZERO) {
                Some(Ok(m)) => {
                    let p = m.partition();
                    let Some(sb) = self.standby.get_mut(&p) else {
                        continue;
                    };
                    fold_message(&mut sb.folder, &sb.store, self.settings, &m)?;
                }
                Some(Err(e)) if crate::error::fatal(&e) => {
                    return Err(e).context("cannot consume the log")
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "standby consumer error");
                    break;
                }
                None => break,
            }
        }
        for (p, sb) in self.standby.iter_mut() {
            if sb.folder.commit(&sb.store)? > 0 {
                let pos = sb.folder.positions.get(p).copied().unwrap_or(0);
                sb.commits.push_back((pos, sb.store.next_sequence()));
            }
            // What the owner delivered: the entries of every commit below its mark.
            let mark = self
                .serving
                .directory
                .owner_of(*p)
                .and_then(|a| a.published.get(p).copied());
            let mut upto = None;
            while let (Some(mark), Some(&(pos, seq))) = (mark, sb.commits.front()) {
                if pos > mark {
                    break;
                }
                upto = Some(seq);
                sb.commits.pop_front();
            }
            if let Some(upto) = upto {
                let old: Vec<u64> = sb
                    .store
                    .outbox_from(0, usize::MAX)?
                    .into_iter()
                    .map(|e| e.seq)
                    .take_while(|s| *s < upto)
                    .collect();
                sb.store.remove_outbox(&old)?;
            }
        }
        Ok(())
    }

    /// Assigns the standby consumer every partition stood by for, at each copy's position.
    fn reassign_standby(&self) -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        for (p, sb) in &self.standby {
            let offset = sb
                .folder
                .positions
                .get(p)
                .map_or(Offset::Beginning, |o| Offset::Offset(*o));
            tpl.add_partition_offset(&self.settings.log_topic, *p, offset)
                .context("cannot build the standby assignment")?;
        }
        self.standby_consumer
            .assign(&tpl)
            .context("cannot assign the standby partitions")?;
        Ok(())
    }

    /// Whether every partition held has folded the configured programs this instance sent.
    fn config_folded(&mut self) -> bool {
        let held = &self.held;
        self.config_sent.retain(|(id, revision)| {
            held.values().any(|h| {
                let revisions = &h.folder.ws.engine.state().program_revisions;
                revisions.get(id).copied().unwrap_or(0) < *revision
            })
        });
        self.config_sent.is_empty()
    }

    /// `--config`, once the partitions first given are restored: each program that
    /// differs from what those partitions hold enters the commands topic as a program
    /// update, keyed by the program, with an id that two instances with the same view give
    /// alike (a partition applies the first and skips a copy), unless the file is the one
    /// last applied.
    fn apply_config(&mut self) -> Result<()> {
        if self.config_applied
            || self.held.is_empty()
            || self.held.values().any(|h| h.restore_to.is_some())
        {
            return Ok(());
        }
        self.config_applied = true;
        let settings = self.settings;
        let digest = settings.config_digest.as_deref().unwrap_or("");
        let mut unchanged = settings.config_digest.is_some();
        for h in self.held.values() {
            unchanged &= h.store.config_digest()?.as_deref() == Some(digest);
        }
        if unchanged {
            tracing::info!("the config file is the one last applied: not applied again");
            return Ok(());
        }
        let commands = settings
            .input_topics
            .iter()
            .find(|t| t.ends_with("loyalty.commands"))
            .context("--config with --group needs a commands topic among --input-topics")?;
        let Some(h) = self.held.values().next() else {
            return Ok(());
        };
        let state = h.folder.ws.engine.state();
        let mut futures = Vec::new();
        for (id, text) in &settings.programs {
            let wanted =
                parse_program(text).with_context(|| format!("program {id} does not validate"))?;
            if state.program(id).is_some_and(|p| **p == wanted) {
                continue;
            }
            let revision = state.program_revisions.get(id).copied().unwrap_or(0) + 1;
            let created = loyalty_core::time::Timestamp(service::now()).max(
                state
                    .clock
                    .unwrap_or(loyalty_core::time::Timestamp(i64::MIN)),
            );
            let hash = &crate::config_digest(text.as_bytes())[..16];
            let record = format!(
                r#"{{"id":{},"type":"loyalty.program.updated","created":"{created}","data":{text}}}"#,
                serde_json::Value::String(format!(
                    "cfg_{id}_{revision}_{hash}{}{digest}",
                    crate::CONFIG_ID_MARK
                ))
            );
            tracing::info!(program = %id, revision, "sending the configured program to the group");
            self.config_sent.push((id.clone(), revision));
            let rec = FutureRecord::to(commands)
                .key(id.as_bytes())
                .payload(record.as_bytes());
            futures.push(
                self.producer
                    .send_result(rec)
                    .map_err(|(e, _)| e)
                    .context("cannot queue a configured program")?,
            );
        }
        for f in futures {
            match self.rt.block_on(f) {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(e).context("a configured program was not delivered"),
                Err(_) => return Err(StreamError::broken("the producer went away")),
            }
        }
        Ok(())
    }

    /// Sends the outbox of every partition held (events, dead letters, messages to other
    /// partitions). A partition let go is no longer published from here: its new owner
    /// publishes the same entries, with the same ids and bytes.
    fn publish_all(&mut self) -> Result<()> {
        self.published.clear();
        for (p, h) in self.held.iter_mut() {
            let n = service::publish_outbox(
                self.rt,
                self.producer,
                &h.store,
                Some(self.metrics),
                &mut h.from,
            )?;
            self.counters
                .published
                .fetch_add(n as u64, Ordering::Relaxed);
            // Nothing left: every record folded so far has had its outbox delivered.
            if h.store.outbox_from(h.from, 1)?.is_empty() {
                let pos = h.folder.positions.get(p).copied().unwrap_or(0);
                self.published.insert(*p, pos);
            }
        }
        Ok(())
    }
}
