//! Folding the engine's log: log records in, one atomic store batch out.

use std::collections::{BTreeMap, HashSet};

use loyalty_core::envelope::{self, Body, Record};
use loyalty_core::output::Output;
use loyalty_core::Engine;
use loyalty_store::{Batch, Store, StoreError};

use crate::logrec::{self, Dedupe, Meta};
use crate::metrics::{label, Metrics};
use crate::outbox;
use crate::Settings;

/// The engine over its store, with the log positions it has folded.
pub struct Folder {
    /// The pure engine.
    pub engine: Engine,
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
    /// How many accounts the engine keeps in memory between batches (0: none).
    pub account_cache: usize,
    /// Accounts read from the store into the working set so far.
    pub loaded: u64,
    /// How many due index entries to read past the ones a record needs.
    pub read_ahead: usize,
    /// Accounts changed since the last eviction: kept at the next one.
    recent: HashSet<String>,
    /// The due index has been read up to this time (inclusive), into `ahead`.
    read_to: i64,
    /// Due index entries read and not yet reached by the clock, in time order: `(time,
    /// key, account)`. The index changes only when a batch is committed, so within one
    /// the folder reads ahead instead of seeking for every record.
    ahead: std::collections::VecDeque<(i64, Vec<u8>, String)>,
    /// The due index entries whose accounts were loaded since the last commit: `(time,
    /// key)`.
    scanned: Vec<(i64, Vec<u8>)>,
    /// Programs every member of which is in the working set (until the next eviction).
    whole: HashSet<String>,
}

/// How many due index entries the folder reads past the ones a record needs, by default.
pub const READ_AHEAD: usize = 512;

/// Accounts an engine keeps in memory by default: every account of a batch stays until it
/// is committed; between batches, the least recently changed go once there are more.
pub const DEFAULT_ACCOUNT_CACHE: usize = 100_000;

impl std::fmt::Debug for Folder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Folder")
            .field("positions", &self.positions)
            .finish()
    }
}

impl Folder {
    /// A folder resuming from what `store` holds. The engine holds its working set: the
    /// accounts, programs and schedule, but not every seen id and payment, which the
    /// folder reads from the store when a record needs them.
    pub fn open(store: &Store, publish: bool) -> Result<Folder, StoreError> {
        store.ensure_index()?;
        store.ensure_api_index()?;
        let engine = store.load_engine_lean()?;
        let positions = store.positions()?;
        let read_to = engine.clock().map_or(i64::MIN, |c| c.0);
        let overdue = engine.overdue();
        let mut folder = Folder {
            engine,
            dedupe: Dedupe { max: positions.src },
            positions: positions.log,
            publish,
            batch: Batch::default(),
            out: Vec::new(),
            pending: 0,
            awarded: 0,
            tier_changes: 0,
            metrics: None,
            account_cache: DEFAULT_ACCOUNT_CACHE,
            loaded: 0,
            read_ahead: READ_AHEAD,
            recent: HashSet::new(),
            read_to,
            ahead: Default::default(),
            scanned: Vec::new(),
            whole: HashSet::new(),
        };
        // Effects already due fire at the next advance of the clock: their accounts too.
        for d in overdue {
            folder.load(store, &d.account)?;
        }
        Ok(folder)
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
        self.pending += 1;
        // A record written to every partition (a program update, a tick) is applied from
        // partition 0; its copies elsewhere only mark those partitions' order.
        if meta.broadcast && partition != 0 {
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
        let record = match &parsed {
            Ok(rec) => Some(rec.id.clone()),
            Err(rejection) => rejection.source.clone(),
        };
        match parsed {
            Ok(rec) => {
                // A program of a `--config` file: the file is now the one last applied.
                if rec.kind == "loyalty.program.updated" && rec.id.starts_with("cfg_") {
                    if let Some((_, digest)) = rec.id.rsplit_once(crate::CONFIG_ID_MARK) {
                        self.batch.config = Some(digest.to_string());
                    }
                }
                self.preload(store, &rec)?;
                self.load_working_set(store, &rec)?;
                self.engine.apply_record(&rec, &mut self.out);
            }
            Err(rejection) => self.out.push(Output::Rejected(rejection)),
        }
        for o in &self.out {
            if let Some(m) = &self.metrics {
                match o {
                    Output::Transaction(t) => m
                        .transactions
                        .get_or_create(&label("type", t.kind.as_str()))
                        .inc(),
                    Output::Rejected(r) => m
                        .rejected
                        .get_or_create(&label("reason", r.reason.as_str()))
                        .inc(),
                    Output::Event(_) => 0,
                };
            }
            match o {
                Output::Transaction(t) if t.kind == loyalty_core::output::TxKind::Award => {
                    self.awarded += i128::from(t.points);
                }
                Output::Event(e) if e.kind() == "loyalty.tier.changed" => self.tier_changes += 1,
                _ => {}
            }
            self.batch.lines.push(o.to_json_line());
            self.batch
                .index
                .push(loyalty_store::LineIndex::of_output(o, record.as_deref()));
            if self.publish {
                if let Some(mut e) = outbox::entry(settings, o, value, meta.source.as_ref()) {
                    if let (Output::Rejected(_), Some(why)) = (o, &undecodable) {
                        for (k, v) in &mut e.headers {
                            if k == outbox::DETAIL {
                                *v = why.clone().into_bytes();
                            }
                        }
                    }
                    self.batch.outbox.push(e);
                }
            }
        }
        Ok(())
    }

    /// Reads from the store what applying `rec` needs and the engine's working set lacks:
    /// whether its id was seen, and the payment it pays or refunds.
    fn preload(&mut self, store: &Store, rec: &Record) -> Result<(), StoreError> {
        let state = self.engine.state();
        let seen = (!state.seen.contains(&rec.id) && store.is_seen(&rec.id)?).then_some(&*rec.id);
        let payment = match &rec.body {
            Body::Event(a) if rec.kind == "payment.completed" => a.object_id.as_deref(),
            Body::Refund(r) => Some(r.payment.as_str()),
            _ => None,
        };
        let payment = match payment.filter(|p| !state.payments.contains_key(*p)) {
            Some(p) => store.payment(p)?.map(|record| (p.to_string(), record)),
            None => None,
        };
        self.engine.preload(seen, payment);
        Ok(())
    }

    /// Loads into the engine the stored accounts applying `rec` needs and its working set
    /// lacks: those with effects falling due before it (from the due index), every member
    /// of a program whose period closes before it, and what [`Engine::needs`] lists, each
    /// with the account that referred it. The engine then applies `rec` as it would with
    /// every account in memory.
    fn load_working_set(&mut self, store: &Store, rec: &Record) -> Result<(), StoreError> {
        let to = rec.created.0;
        if to > self.read_to {
            let (entries, read_to) = store.dues_from(self.read_to, to, self.read_ahead)?;
            self.ahead.extend(entries);
            self.read_to = read_to;
        }
        while self.ahead.front().is_some_and(|(at, _, _)| *at <= to) {
            let (at, key, id) = self.ahead.pop_front().expect("checked");
            self.load(store, &id)?;
            self.scanned.push((at, key));
        }
        if self.engine.clock().is_none_or(|c| c.0 < to) {
            for program in self.engine.closes_due_by(rec.created) {
                self.load_members(store, &program)?;
            }
        }
        let needs = self.engine.needs(rec);
        for id in &needs.accounts {
            self.load(store, id)?;
        }
        let opened = needs
            .may_open
            .iter()
            .filter(|(_, id)| !self.engine.has_account(id))
            .map(|(program, id)| (program.clone(), loyalty_core::ids::referral_code(id)));
        let codes: Vec<(String, String)> = needs.codes.iter().cloned().chain(opened).collect();
        for (program, code) in &codes {
            if self.engine.has_code(program, code) {
                continue;
            }
            // The key is `r/{code}/{program}`: a code that is no generated one (it may hold
            // a `/`) could name another program's code, so the holder is checked.
            let Some(holder) = store.code_holder(program, code)? else {
                continue;
            };
            self.load(store, &holder)?;
            let holds = self
                .engine
                .state()
                .accounts
                .get(&holder)
                .is_some_and(|a| a.program == *program && a.referral_code == *code);
            if holds {
                self.engine.load_code(program, code, &holder);
            }
        }
        for program in &needs.members_of {
            self.load_members(store, program)?;
        }
        Ok(())
    }

    /// Loads an account into the working set, and the account that referred it (whose
    /// referral a payment may convert).
    fn load(&mut self, store: &Store, id: &str) -> Result<(), StoreError> {
        let referrer = match self.engine.state().accounts.get(id) {
            Some(a) => a.referred_by.clone(),
            None => match store.account(id)? {
                Some(a) => {
                    let referrer = a.referred_by.clone();
                    self.engine.load_account(a);
                    self.loaded += 1;
                    referrer
                }
                None => None,
            },
        };
        if let Some(r) = referrer.filter(|r| !self.engine.has_account(r)) {
            if let Some(a) = store.account(&r)? {
                self.engine.load_account(a);
                self.loaded += 1;
            }
        }
        Ok(())
    }

    fn load_members(&mut self, store: &Store, program: &str) -> Result<(), StoreError> {
        if !self.whole.insert(program.to_string()) {
            return Ok(());
        }
        for a in store.members(program)? {
            if !self.engine.has_account(&a.id) {
                self.engine.load_account(a);
                self.loaded += 1;
            }
        }
        Ok(())
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

    /// Writes the open batch to the store, atomically. Returns the records it held.
    pub fn commit(&mut self, store: &Store) -> Result<usize, StoreError> {
        if self.pending == 0 {
            return Ok(0);
        }
        let mut batch = std::mem::take(&mut self.batch);
        batch.changes = self.engine.take_changes();
        // The due index entries the clock has passed are done with; the others (read for
        // a record that did not move the clock) are read again when it moves.
        let clock = self.engine.clock().map_or(i64::MIN, |c| c.0);
        batch.dues_passed = std::mem::take(&mut self.scanned)
            .into_iter()
            .filter(|(at, _)| *at <= clock)
            .map(|(_, k)| k)
            .collect();
        // A commit changes the index: what was read ahead is read again.
        self.ahead.clear();
        self.read_to = clock;
        if self.account_cache > 0 {
            self.recent.extend(batch.changes.accounts.iter().cloned());
        }
        store.commit(&self.engine, batch)?;
        // Committed: the store hands them back when a later record needs them.
        self.engine.forget_committed();
        self.evict();
        if let Some(m) = &self.metrics {
            m.accounts_in_memory.set(self.engine.account_count() as i64);
            m.accounts_loaded.inc_by(std::mem::take(&mut self.loaded));
        }
        Ok(std::mem::take(&mut self.pending))
    }

    /// Keeps the working set of accounts within `account_cache` between batches: once it
    /// holds more, the accounts not changed since the last eviction go (they are committed).
    fn evict(&mut self) {
        self.whole.clear();
        if self.account_cache == 0 {
            self.engine.evict(|_| false);
        } else if self.engine.account_count() > self.account_cache {
            let recent = std::mem::take(&mut self.recent);
            self.engine.evict(|id| recent.contains(id));
        }
    }
}
