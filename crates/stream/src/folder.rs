//! Folding the engine's log: log records in, one atomic store batch out.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use loyalty_core::envelope;
use loyalty_core::output::Output;
use loyalty_core::working_set::WorkingSet;
use loyalty_store::{Batch, Store, StoreError};

use crate::logrec::{self, Dedupe, Meta};
use crate::metrics::{label, Metrics};
use crate::outbox;
use crate::signature::Signer;
use crate::{Format, Settings};

/// The engine over its store, with the log positions it has folded.
pub struct Folder {
    /// The pure engine, on the accounts a batch needs.
    pub ws: WorkingSet,
    dedupe: Dedupe,
    /// Next log offset to fold, by log partition.
    pub positions: BTreeMap<i32, i64>,
    /// Whether folded events go to the outbox (replay leaves them out unless asked).
    publish: bool,
    batch: Batch,
    out: Vec<Output>,
    /// Records folded in the open batch.
    pub pending: usize,
    /// Points awarded so far by this folder (for the live view).
    pub awarded: i128,
    /// Tier changes so far.
    pub tier_changes: u64,
    /// Where rejections and transactions are counted, when watched.
    pub metrics: Option<std::sync::Arc<Metrics>>,
    /// The one log partition this folder folds, of how many (`--group`); `None` when it
    /// folds every partition into one engine.
    partition: Option<(i32, i32)>,
    /// The batch being written on a thread of its own ([`Folder::commit_pipelined`]).
    writing: Option<Writing>,
    /// Whether a pipelined batch's write waits until the next batch is committed.
    late_writes: bool,
    /// The open batch's events whose signatures are written where the batch is written
    /// ([`outbox::event_of_line`]), and the signer they are signed with.
    unsigned: Vec<outbox::Unsigned>,
    signer: Option<Arc<Signer>>,
    /// When the open batch's first record was folded.
    opened: Option<Instant>,
    /// Told of each batch once its write is confirmed ([`OnWritten`]).
    pub on_written: Option<OnWritten>,
}

/// Told of each batch once its write is confirmed, on the thread that wrote it, at once (a
/// pipelined batch's next batch may still be folding): its records, the time from its first
/// record folded to its write confirmed, and the next log offset of each log partition it
/// stored. Only then does a batch count as committed (`loyalty run` answers and publishes
/// on this).
pub type OnWritten = Arc<dyn Fn(usize, Duration, &BTreeMap<i32, i64>) + Send + Sync>;

/// A batch being written while the next one folds (what it changed stays in the working
/// set until then: [`WorkingSet::committed_before`]).
struct Writing {
    /// The writing thread: it hands the batch back once written ([`Folder::recycle`]).
    thread: std::thread::JoinHandle<Result<loyalty_store::Batch, StoreError>>,
    /// Lets a held write go ([`Folder::write_late`]).
    go: Option<std::sync::mpsc::Sender<()>>,
}

pub use loyalty_core::working_set::{DEFAULT_ACCOUNT_CACHE, READ_AHEAD};

impl Drop for Folder {
    /// A batch being written is written before the folder goes (an interrupted replay, an
    /// error): the state is then as of the last batch written, never torn.
    fn drop(&mut self) {
        let Some(mut w) = self.writing.take() else {
            return;
        };
        if let Some(go) = w.go.take() {
            let _ = go.send(());
        }
        // No panic here: this may run while a panic unwinds already.
        match w.thread.join() {
            Ok(Ok(_written)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "the last batch could not be written"),
            Err(_) => tracing::error!("the thread writing the last batch panicked"),
        }
    }
}

impl std::fmt::Debug for Folder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Folder")
            .field("positions", &self.positions)
            .finish()
    }
}

impl Folder {
    /// A folder resuming from what `store` holds. The engine holds its working set: the
    /// accounts, programs and schedule, but not every seen id and payment, which it reads
    /// from the store when a record needs them.
    pub fn open(store: &Store, publish: bool) -> Result<Folder, StoreError> {
        store.ensure_index()?;
        store.ensure_api_index()?;
        let ws = WorkingSet::open(store.load_engine_lean()?, store)?;
        let positions = store.positions()?;
        Ok(Folder {
            ws,
            dedupe: Dedupe { max: positions.src },
            positions: positions.log,
            publish,
            batch: Batch::default(),
            out: Vec::new(),
            pending: 0,
            awarded: 0,
            tier_changes: 0,
            metrics: None,
            partition: None,
            writing: None,
            late_writes: false,
            unsigned: Vec::new(),
            signer: None,
            opened: None,
            on_written: None,
        })
    }

    /// A folder of one log partition of `count` (an instance of a group): its engine keeps
    /// that partition's customers and sends what concerns another partition through the
    /// log (docs/scale-out.md), and it applies its own copy of every record written to all
    /// partitions.
    pub fn open_partition(
        store: &Store,
        publish: bool,
        partition: i32,
        count: i32,
    ) -> Result<Folder, StoreError> {
        let mut f = Folder::open(store, publish)?;
        f.ws.engine
            .set_partitioning(Some(loyalty_core::partition::Partitioning {
                me: partition as u32,
                count: count as u32,
            }));
        f.partition = Some((partition, count));
        Ok(f)
    }

    /// Folds one log record into the open batch.
    pub fn fold(
        &mut self,
        store: &Store,
        settings: &Settings,
        partition: i32,
        offset: i64,
        meta: &Meta,
        value: &[u8],
    ) -> Result<(), StoreError> {
        self.positions.insert(partition, offset + 1);
        self.batch.log.insert(partition, offset + 1);
        if self.pending == 0 {
            self.opened = Some(Instant::now());
        }
        self.pending += 1;
        // A record written to every partition (a program update, a tick) is applied from
        // partition 0 by a folder of every partition; its copies elsewhere only mark those
        // partitions' order. A folder of one partition applies its own copy.
        if meta.broadcast && partition != 0 && self.partition.is_none() {
            return Ok(());
        }
        if let Some(src) = &meta.source {
            if self.dedupe.seen_before(partition, src) {
                tracing::debug!(?src, "skipping a record appended twice to the log");
                return Ok(());
            }
            self.batch
                .src
                .insert((partition, src.topic.clone(), src.partition), src.offset);
        }
        self.out.clear();
        // A protobuf value that does not decode: the ledger's `rejected` line is the one a
        // fold of `loyalty log` prints for it (the log prints it as the bytes it is), so that
        // `loyalty export` stays that fold; the dead letter says why it does not decode.
        let (parsed, undecodable) = match logrec::json_value(meta.content_type.as_deref(), value) {
            Ok(json) => (envelope::parse(&json), None),
            Err(why) => (
                envelope::parse(envelope::log_line(value).as_bytes()),
                Some(why),
            ),
        };
        let record: Option<loyalty_core::Sym> = match &parsed {
            Ok(rec) => Some(rec.id.as_ref().into()),
            Err(rejection) => rejection.source.as_deref().map(Into::into),
        };
        match parsed {
            Ok(rec) => {
                // A program of a `--config` file: the file is now the one last applied.
                if rec.kind == "loyalty.program.updated" && rec.id.starts_with("cfg_") {
                    if let Some((_, digest)) = rec.id.rsplit_once(crate::CONFIG_ID_MARK) {
                        self.batch.config = Some(digest.to_string());
                    }
                }
                self.ws.apply(store, &rec, &mut self.out)?;
            }
            Err(rejection) => self.out.push(Output::Rejected(rejection)),
        }
        if self.publish {
            self.sign_with(&settings.signing_secret);
        }
        let json = settings.format == Format::Json;
        for o in self.out.drain(..) {
            if let Some(m) = &self.metrics {
                match &o {
                    Output::Transaction(t) => m
                        .transactions
                        .get_or_create(&label("type", t.kind.as_str()))
                        .inc(),
                    Output::Rejected(r) => m
                        .rejected
                        .get_or_create(&label("reason", r.reason.as_str()))
                        .inc(),
                    Output::Event(_) | Output::Message(_) => 0,
                };
            }
            match &o {
                Output::Transaction(t) if t.kind == loyalty_core::output::TxKind::Award => {
                    self.awarded += i128::from(t.points);
                }
                Output::Event(e) if e.kind() == "loyalty.tier.changed" => self.tier_changes += 1,
                _ => {}
            }
            // A transaction's line, and an event's whose message is its line's envelope (or
            // that is not published), are made where the batch is written (Batch::render):
            // the folding thread goes on.
            match o {
                Output::Transaction(_) => {
                    self.batch.push_deferred(o, record.clone());
                }
                Output::Event(_) if !self.publish => {
                    self.batch.push_deferred(o, record.clone());
                }
                // An event in JSON publishes its line's envelope: signed where the batch is
                // written too.
                Output::Event(ref e) if json => {
                    let (entry, t) = outbox::event_of_line(settings, e, self.batch.lines.len());
                    self.unsigned.push(outbox::Unsigned {
                        entry: self.batch.outbox.len(),
                        t,
                    });
                    self.batch.outbox.push(entry);
                    self.batch.push_deferred(o, record.clone());
                }
                o => {
                    self.batch.push_line(&o, record.as_deref());
                    if !self.publish {
                        continue;
                    }
                    let at = self.batch.lines.len() - 1;
                    let line = std::str::from_utf8(self.batch.lines[at].as_bytes()).ok();
                    let Some(mut e) =
                        outbox::entry(settings, &o, line, value, meta.source.as_ref())
                    else {
                        continue;
                    };
                    if let (Output::Rejected(_), Some(why)) = (&o, &undecodable) {
                        for (k, v) in &mut e.headers {
                            if k == outbox::DETAIL {
                                *v = why.to_string().into_bytes();
                            }
                        }
                    }
                    // Only an event's message may be its line's envelope.
                    e.line = matches!(o, Output::Event(_)).then_some(at);
                    self.batch.outbox.push(e);
                }
            }
        }
        Ok(())
    }

    /// Makes sure the open batch's events are signed under `secret`: a signer under
    /// another secret signs the events waiting for it first.
    fn sign_with(&mut self, secret: &[u8]) {
        if self.signer.as_ref().is_some_and(|s| s.is_under(secret)) {
            return;
        }
        let before = self.signer.replace(Arc::new(Signer::new(secret)));
        if !self.unsigned.is_empty() {
            let unsigned = std::mem::take(&mut self.unsigned);
            self.batch.render();
            // Signed here, on the batch not yet taken. A message that cannot be signed
            // (none can fail here) is left for the commit, which refuses the batch.
            if outbox::sign_events(before.as_deref(), &mut self.batch, &unsigned).is_err() {
                self.unsigned = unsigned;
            }
        }
    }

    /// The open batch's waiting signatures, with their signer.
    fn take_unsigned(&mut self) -> (Option<Arc<Signer>>, Vec<outbox::Unsigned>) {
        (self.signer.clone(), std::mem::take(&mut self.unsigned))
    }

    /// The highest offset of each input partition that the folded log holds.
    pub fn appended(&self) -> BTreeMap<(String, i32), i64> {
        let mut out: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for ((_, topic, partition), offset) in &self.dedupe.max {
            let e = out.entry((topic.clone(), *partition)).or_insert(*offset);
            *e = (*e).max(*offset);
        }
        out
    }

    /// Writes the open batch to the store, atomically (after the batch being written, if
    /// any). Returns the records it held.
    pub fn commit(&mut self, store: &Store) -> Result<usize, StoreError> {
        self.finish()?;
        if self.pending == 0 {
            return Ok(0);
        }
        let mut batch = std::mem::take(&mut self.batch);
        (batch.changes, batch.dues_passed) = self.ws.take_batch();
        let (signer, unsigned) = self.take_unsigned();
        batch.render();
        outbox::sign_events(signer.as_deref(), &mut batch, &unsigned)?;
        let log = batch.log.clone();
        store.commit(&self.ws.engine, batch)?;
        // Committed: the store hands back what the engine forgets when a record needs it.
        self.ws.committed();
        self.count_accounts();
        let records = std::mem::take(&mut self.pending);
        if let Some(tell) = &self.on_written {
            tell(
                records,
                self.opened.take().map_or(Duration::ZERO, |t| t.elapsed()),
                &log,
            );
        }
        Ok(records)
    }

    /// Whether a batch is being written ([`Folder::commit_pipelined`]).
    pub fn is_writing(&self) -> bool {
        self.writing.is_some()
    }

    /// Starts writing the open batch on a thread of its own, and returns while it is
    /// written, so that the next batch folds meanwhile. What the batch takes from the engine
    /// is taken here; its lines, their indexes and statistics are written on that thread.
    /// The batch before is waited for before this one starts; [`Folder::finish`] waits for
    /// this one. Until a batch is
    /// written, what it changed stays in the working set, where the next batch's records
    /// find it: the outputs are those of [`Folder::commit`], byte for byte. Returns the
    /// records it held.
    pub fn commit_pipelined(&mut self, store: &Arc<Store>) -> Result<usize, StoreError> {
        if self.pending == 0 {
            return Ok(0);
        }
        let mut batch = std::mem::take(&mut self.batch);
        (batch.changes, batch.dues_passed) = self.ws.take_batch();
        let changes = batch.changes.clone();
        let unsigned = self.take_unsigned();
        // Prepared while the batch before is written (it reads nothing of the store).
        let mut prepared = store.prepare(&self.ws.engine, batch)?;
        self.ws.expect_dues(prepared.dues.clone());
        self.wait()?;
        // The batches before are written: what they changed goes, this one's stays.
        self.ws.committed_before(&changes);
        self.count_accounts();
        let writer = store.clone();
        let (go, wait_for) = std::sync::mpsc::channel::<()>();
        let late = self.late_writes;
        let records = std::mem::take(&mut self.pending);
        let opened = self.opened.take();
        let tell = self.on_written.clone();
        let thread = std::thread::Builder::new()
            .name("loyalty-write".into())
            .spawn(move || {
                if late {
                    // Dropped or sent: either way, go.
                    let _ = wait_for.recv();
                }
                let (signer, unsigned) = unsigned;
                prepared.batch_mut().render();
                outbox::sign_events(signer.as_deref(), prepared.batch_mut(), &unsigned)?;
                let written = writer.write_back(prepared)?;
                if let Some(tell) = tell {
                    let took = opened.map_or(Duration::ZERO, |t| t.elapsed());
                    tell(records, took, &written.log);
                }
                Ok(written)
            })
            .map_err(|e| StoreError::Corrupt {
                key: String::new(),
                why: format!("cannot start the writing thread: {e}"),
            })?;
        self.writing = Some(Writing {
            thread,
            go: late.then_some(go),
        });
        Ok(records)
    }

    /// Waits until the batch being written ([`Folder::commit_pipelined`]), if any, is
    /// written; then, when nothing was folded since, the working set lets go of what it
    /// changed (otherwise the next commit does: the accounts the open batch loaded for its
    /// due effects must stay until it is taken).
    pub fn finish(&mut self) -> Result<(), StoreError> {
        if self.wait()? && self.pending == 0 {
            self.ws.committed();
            self.count_accounts();
        }
        Ok(())
    }

    /// Holds each pipelined batch's write until the next batch is committed (for tests: the
    /// order of events in which the next batch's records never find the batch before
    /// written, which a fast disk makes rare).
    #[doc(hidden)]
    pub fn write_late(&mut self, on: bool) {
        self.late_writes = on;
    }

    /// Waits for the batch being written; whether there was one.
    fn wait(&mut self) -> Result<bool, StoreError> {
        let Some(mut w) = self.writing.take() else {
            return Ok(false);
        };
        if let Some(go) = w.go.take() {
            let _ = go.send(());
        }
        match w.thread.join() {
            Ok(written) => {
                self.recycle(written?);
                Ok(true)
            }
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Takes back a batch once written: its lines and messages are freed here, on the
    /// thread that made them, whose allocator reuses their memory at once (freed on the
    /// writing thread, they went back through the allocator's cross-thread lists, and the
    /// folding thread spent a tenth of its time finding and faulting in fresh memory); and
    /// the open batch, when it has none yet, takes its vectors' room.
    fn recycle(&mut self, mut done: loyalty_store::Batch) {
        /// Room kept for no more than this many lines: a batch of a program update that
        /// changed a million members does not keep its room for good.
        const KEEP: usize = 1 << 16;
        done.lines.clear();
        done.index.clear();
        done.outbox.clear();
        done.deferred.clear();
        done.rendered = 0;
        let open = &mut self.batch;
        if open.lines.capacity() == 0 && done.lines.capacity() <= KEEP {
            open.lines = std::mem::take(&mut done.lines);
        }
        if open.index.capacity() == 0 && done.index.capacity() <= KEEP {
            open.index = std::mem::take(&mut done.index);
        }
        if open.outbox.capacity() == 0 && done.outbox.capacity() <= KEEP {
            open.outbox = std::mem::take(&mut done.outbox);
        }
        if open.deferred.capacity() == 0 && done.deferred.capacity() <= KEEP {
            open.deferred = std::mem::take(&mut done.deferred);
        }
    }

    fn count_accounts(&mut self) {
        if let Some(m) = &self.metrics {
            m.accounts_in_memory.set(self.ws.account_count() as i64);
            m.accounts_loaded
                .inc_by(std::mem::take(&mut self.ws.loaded));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logrec::Source;

    const PROGRAM: &str = r#"{"id":"prog_a","currency":"EUR","autoEnroll":true,"earningRules":[{"id":"rule_a","trigger":"payment.completed","award":{"type":"per_amount","per":100,"points":1}}]}"#;

    fn log() -> Vec<String> {
        let mut log = vec![format!(
            r#"{{"id":"u1","type":"loyalty.program.updated","created":"2026-01-01T00:00:00Z","data":{PROGRAM}}}"#
        )];
        for i in 0..40 {
            log.push(format!(
                r#"{{"id":"e{i}","type":"payment.completed","created":"2026-01-02T00:00:{:02}Z","data":{{"id":"p{i}","customer":"c{} \"q\" é","amount":{},"currency":"EUR"}}}}"#,
                i % 60,
                i % 7,
                1000 + i * 37
            ));
        }
        // Not JSON: a dead letter, whose payload is the record itself.
        log.push("{not json".into());
        log
    }

    fn meta(i: usize) -> Meta {
        Meta {
            source: Some(Source {
                topic: "payment.completed".into(),
                partition: 0,
                offset: i as i64,
            }),
            broadcast: false,
            content_type: None,
        }
    }

    /// Folds `log` into a new store in `dir`, publishing, committing every `every`
    /// records one batch at a time (as an instance of a group does) or, `pipelined`, each
    /// written while the next folds (as `loyalty run` and replay do).
    fn folded(dir: &std::path::Path, log: &[String], every: usize, pipelined: bool) -> Arc<Store> {
        let _ = std::fs::remove_dir_all(dir);
        let store = Arc::new(Store::open(dir).unwrap());
        let mut settings = Settings::new("unused:9092");
        settings.signing_secret = b"whsec_folder".to_vec();
        let mut f = Folder::open(&store, true).unwrap();
        for (i, r) in log.iter().enumerate() {
            f.fold(&store, &settings, 0, i as i64, &meta(i), r.as_bytes())
                .unwrap();
            if f.pending >= every {
                if pipelined {
                    f.commit_pipelined(&store).unwrap();
                } else {
                    f.commit(&store).unwrap();
                }
            }
        }
        f.commit(&store).unwrap();
        drop(f);
        store
    }

    /// A pipelined batch is reported written only once its write is confirmed (here held
    /// until the next commit, or `finish`), each batch once, with its own records and the
    /// log positions it stored; a serial commit reports its own batch at once.
    #[test]
    fn a_batch_is_reported_written_once_its_write_is_confirmed() {
        let log = log();
        let dir =
            std::env::temp_dir().join(format!("loyalty-folder-written-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Arc::new(Store::open(&dir).unwrap());
        let settings = Settings::new("unused:9092");
        let mut f = Folder::open(&store, true).unwrap();
        let told = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tell = told.clone();
        f.on_written = Some(Arc::new(move |n, _, log: &BTreeMap<i32, i64>| {
            tell.lock().unwrap().push((n, log.get(&0).copied()));
        }));
        let reported = || std::mem::take(&mut *told.lock().unwrap());
        f.write_late(true);
        let fold = |f: &mut Folder, range: std::ops::Range<usize>| {
            for i in range {
                f.fold(&store, &settings, 0, i as i64, &meta(i), log[i].as_bytes())
                    .unwrap();
            }
        };
        fold(&mut f, 0..10);
        assert_eq!(f.commit_pipelined(&store).unwrap(), 10);
        assert!(f.is_writing());
        // Held until the next commit: not yet written, and not reported.
        assert_eq!(reported(), vec![]);
        assert_eq!(store.positions().unwrap().log.get(&0), None);
        fold(&mut f, 10..25);
        assert_eq!(f.commit_pipelined(&store).unwrap(), 15);
        assert_eq!(reported(), vec![(10, Some(10))], "the first batch, once");
        assert_eq!(store.positions().unwrap().log.get(&0), Some(&10));
        f.finish().unwrap();
        assert!(!f.is_writing());
        assert_eq!(reported(), vec![(15, Some(25))]);
        assert_eq!(store.positions().unwrap().log.get(&0), Some(&25));
        f.finish().unwrap();
        assert_eq!(reported(), vec![], "nothing more to confirm");
        // A serial commit after a pipelined one: each reported, in order.
        fold(&mut f, 25..30);
        f.commit_pipelined(&store).unwrap();
        fold(&mut f, 30..log.len());
        let rest = log.len() - 30;
        assert_eq!(f.commit(&store).unwrap(), rest);
        let end = Some(log.len() as i64);
        assert_eq!(reported(), vec![(5, Some(30)), (rest, end)]);
        assert_eq!(store.positions().unwrap().log.get(&0).copied(), end);
        drop(f);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A secret changed between two records of one open batch: the events folded before
    /// are signed under the secret they were folded with, those after under the new one.
    #[test]
    fn events_folded_before_a_new_secret_keep_the_old_one() {
        let log = log();
        let dir =
            std::env::temp_dir().join(format!("loyalty-folder-secret-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Arc::new(Store::open(&dir).unwrap());
        let mut settings = Settings::new("unused:9092");
        let mut f = Folder::open(&store, true).unwrap();
        let half = log.len() / 2;
        let mut secrets = Vec::new();
        for (i, r) in log.iter().enumerate() {
            settings.signing_secret = if i < half {
                b"first".to_vec()
            } else {
                b"second".to_vec()
            };
            let before = f.batch.outbox.len();
            f.fold(&store, &settings, 0, i as i64, &meta(i), r.as_bytes())
                .unwrap();
            secrets.extend((before..f.batch.outbox.len()).map(|_| settings.signing_secret.clone()));
        }
        f.commit(&store).unwrap();
        let got = store.outbox().unwrap();
        assert_eq!(got.len(), secrets.len());
        let mut signed = [0, 0];
        for (g, secret) in got.iter().zip(&secrets) {
            if let Some((_, sig)) = g
                .headers
                .iter()
                .find(|(k, _)| k == crate::signature::HEADER)
            {
                let sig = std::str::from_utf8(sig).unwrap();
                assert_eq!(
                    crate::signature::verify(sig, &g.payload, secret, None, 0),
                    Ok(())
                );
                signed[usize::from(secret.as_slice() == b"second")] += 1;
            }
        }
        assert!(signed[0] > 0 && signed[1] > 0, "{signed:?}");
        drop(f);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The messages a folder stores, signed where each batch is written, are those its
    /// outputs make one by one ([`outbox::entry`], which signs a copy of each payload),
    /// byte for byte, whether the batches are written in turn or beside the fold; and
    /// each signature verifies under the secret.
    #[test]
    fn published_events_are_signed_as_each_output_alone_signs() {
        let log = log();
        let mut settings = Settings::new("unused:9092");
        settings.signing_secret = b"whsec_folder".to_vec();
        let mut engine = loyalty_core::Engine::empty();
        let mut expected = Vec::new();
        for (i, r) in log.iter().enumerate() {
            let mut out = Vec::new();
            engine.apply_parsed(envelope::parse(r.as_bytes()), &mut out);
            let source = meta(i).source;
            expected.extend(
                out.iter().filter_map(|o| {
                    outbox::entry(&settings, o, None, r.as_bytes(), source.as_ref())
                }),
            );
        }
        assert!(expected.len() > 40, "{}", expected.len());
        let base = std::env::temp_dir().join(format!("loyalty-folder-{}", std::process::id()));
        for (every, pipelined) in [(1000, false), (7, false), (7, true), (1, true)] {
            let dir = base.join(format!("{every}-{pipelined}"));
            let store = folded(&dir, &log, every, pipelined);
            let got = store.outbox().unwrap();
            assert_eq!(
                got.len(),
                expected.len(),
                "every {every}, pipelined {pipelined}"
            );
            for (g, e) in got.iter().zip(&expected) {
                assert_eq!(
                    (&g.topic, &g.key, &g.payload, &g.headers, g.partition),
                    (&e.topic, &e.key, &e.payload, &e.headers, e.partition),
                    "every {every}, pipelined {pipelined}"
                );
                if let Some((_, sig)) = g
                    .headers
                    .iter()
                    .find(|(k, _)| k == crate::signature::HEADER)
                {
                    let sig = std::str::from_utf8(sig).unwrap();
                    assert_eq!(
                        crate::signature::verify(sig, &g.payload, b"whsec_folder", None, 0),
                        Ok(())
                    );
                }
            }
            assert!(store.verify().unwrap().is_empty());
            drop(store);
            let _ = std::fs::remove_dir_all(&dir);
        }
        let _ = std::fs::remove_dir_all(&base);
    }
}
