//! The working set (SPEC section 10's bounded memory): what a record needs loaded before it
//! applies, what a batch changed, and loading, evicting and restoring accounts, referral
//! codes and overdue effects, so that an engine holding some accounts in memory gives the
//! same bytes as one holding them all.
//!
//! Owns: `Changes`, `Needs` and the engine's methods a store calls between records. Must
//! not apply a rule or write an output.

use std::collections::HashMap;

use crate::engine::Engine;
use crate::envelope::{Body, Record};
use crate::ids;
use crate::state::{Account, PaymentRecord};
use crate::Sym;

/// The keys of the state a run of `apply` changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Accounts created or changed (a hash set: a store writes them in any order, and the
    /// engine asks it whether an account is in it for nearly every posting).
    pub accounts: std::collections::HashSet<Sym, crate::state::FixedState>,
    /// Record ids newly seen, in order.
    pub seen: Vec<Sym>,
    /// Payments recorded or refunded.
    pub payments: std::collections::HashSet<String, crate::state::FixedState>,
    /// The program list changed.
    pub programs: bool,
    /// The clock moved.
    pub clock: bool,
    /// Reward stock changed.
    pub rewards: bool,
    /// Referral codes claimed, `(program, code)`, in order.
    pub codes: Vec<(String, String)>,
    /// What the flows across partitions keep between their steps ([`crate::partition`]),
    /// by key: a store writes each key's entry as the state now holds it, or removes it.
    pub flows: std::collections::BTreeSet<FlowKey>,
}

/// A key of what the flows across partitions keep between their steps.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FlowKey {
    /// A redemption's held cost ([`crate::state::State::holds`]), by the redemption's id.
    Hold(String),
    /// A referee's code until its conversion ([`crate::state::State::pending_codes`]), by
    /// account.
    Pending(String),
    /// A referral code's holder and the conversions waiting for it
    /// ([`crate::state::State::code_holders`], [`crate::state::State::parked`]), by
    /// `(program, code)`.
    Code(String, String),
}

/// What a record needs in an engine's working set to apply as it would with the whole state
/// in memory (`Engine::needs`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Needs {
    /// Accounts the record may read or change, by id (with, for each, the account that
    /// referred it: see `Engine::load_account`).
    pub accounts: Vec<Sym>,
    /// Referral codes it looks up, `(program, code)`, with the accounts holding them.
    pub codes: Vec<(String, String)>,
    /// Accounts it may open, `(program, account)`: when one is not stored, the holder of
    /// the referral code it would get is needed too (two accounts may share a code, and
    /// the smaller id keeps it).
    pub may_open: Vec<(Sym, Sym)>,
    /// Programs every member of which it may change (a program update).
    pub members_of: Vec<Sym>,
}

impl Changes {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
            && self.seen.is_empty()
            && self.payments.is_empty()
            && !self.programs
            && !self.clock
            && !self.rewards
            && self.codes.is_empty()
            && self.flows.is_empty()
    }
}

mod engine;

/// Where the state the engine does not hold in memory is kept: a store implements it, and a
/// [`WorkingSet`] reads from it what each record needs before the engine applies it.
pub trait Source {
    /// The store's error: any I/O or corruption error fails the record's application.
    type Error;

    /// Whether a record id was applied before.
    fn is_seen(&self, id: &str) -> Result<bool, Self::Error>;

    /// The payment of that id, as applied.
    fn payment(&self, id: &str) -> Result<Option<PaymentRecord>, Self::Error>;

    /// The stored account of that id.
    fn account(&self, id: &str) -> Result<Option<Account>, Self::Error>;

    /// Every stored member of a program.
    fn members(&self, program: &str) -> Result<Vec<Account>, Self::Error>;

    /// The account the store says holds a program's referral code (checked by the caller:
    /// a code that is no generated one could name another program's).
    fn code_holder(&self, program: &str, code: &str) -> Result<Option<String>, Self::Error>;

    /// The due index after `after`, in time order, `(time, key, account)`: every entry up to
    /// `to`, and up to `ahead` more; with the time up to which they are all there is.
    #[allow(clippy::type_complexity)]
    fn dues_from(
        &self,
        after: i64,
        to: i64,
        ahead: usize,
    ) -> Result<(Vec<(i64, Vec<u8>, String)>, i64), Self::Error>;
}

/// How many due index entries a working set reads past the ones a record needs, by default.
pub const READ_AHEAD: usize = 512;

/// Accounts an engine keeps in memory by default: every account of a batch stays until it
/// is committed; between batches, once there are more, the least recently changed go, down
/// to three quarters of the bound.
pub const DEFAULT_ACCOUNT_CACHE: usize = 100_000;

/// An engine that holds only some of the accounts, and reads the others from a [`Source`]
/// when a record needs them: the result of every record is the same as with the whole
/// state in memory.
#[derive(Debug)]
pub struct WorkingSet {
    /// The engine.
    pub engine: Engine,
    /// How many accounts the engine keeps in memory between batches (0: none).
    pub account_cache: usize,
    /// Accounts read from the source so far (taken by whoever counts them).
    pub loaded: u64,
    /// How many due index entries to read past the ones a record needs.
    pub read_ahead: usize,
    /// The batch in which each account in memory last changed (the count of batches taken
    /// then): between batches, the least recently changed go first.
    used: HashMap<Sym, u64, crate::state::FixedState>,
    /// Batches taken so far.
    batches: u64,
    /// The due index has been read up to this time (inclusive), into `ahead`.
    read_to: i64,
    /// Due index entries read and not yet reached by the clock, in time order. The index
    /// changes only when a batch is committed, so within one the set reads ahead instead of
    /// seeking for every record.
    ahead: std::collections::VecDeque<(i64, Vec<u8>, String)>,
    /// The due index entries whose accounts were loaded since the last commit.
    scanned: Vec<(i64, Vec<u8>)>,
    /// Programs every member of which is in the working set (until the next eviction).
    whole: std::collections::HashSet<String>,
    /// Whether `ahead` holds entries of a batch being written ([`WorkingSet::expect_dues`]),
    /// which entries read from the index must be sorted in with.
    expected: bool,
}

impl WorkingSet {
    /// A working set over an engine loaded without its seen ids and payments (which the
    /// source hands back when a record needs them); the accounts of effects already
    /// overdue are read at once.
    pub fn open<S: Source>(engine: Engine, source: &S) -> Result<WorkingSet, S::Error> {
        let read_to = engine.clock().map_or(i64::MIN, |c| c.0);
        let overdue = engine.overdue();
        let mut ws = WorkingSet {
            engine,
            account_cache: DEFAULT_ACCOUNT_CACHE,
            loaded: 0,
            read_ahead: READ_AHEAD,
            used: HashMap::default(),
            batches: 0,
            read_to,
            ahead: Default::default(),
            scanned: Vec::new(),
            whole: Default::default(),
            expected: false,
        };
        for d in overdue {
            ws.load(source, &d.account)?;
        }
        Ok(ws)
    }

    /// How many accounts it holds in memory.
    pub fn account_count(&self) -> usize {
        self.engine.account_count()
    }

    /// Whether the account of that id is in memory.
    pub fn holds_account(&self, id: &str) -> bool {
        self.engine.holds_account(id)
    }

    /// Reads what applying `rec` needs and the engine lacks, then applies it.
    pub fn apply<S: Source>(
        &mut self,
        source: &S,
        rec: &Record,
        out: &mut Vec<crate::output::Output>,
    ) -> Result<(), S::Error> {
        self.preload(source, rec)?;
        self.load_for(source, rec)?;
        self.engine.apply_record(rec, out);
        Ok(())
    }

    /// Whether its id was seen, and the payment it pays or refunds.
    fn preload<S: Source>(&mut self, source: &S, rec: &Record) -> Result<(), S::Error> {
        let state = self.engine.state();
        let seen = (!state.seen.contains(&rec.id) && source.is_seen(&rec.id)?).then_some(&*rec.id);
        let payment = match &rec.body {
            Body::Event(a) if rec.kind == "payment.completed" => a.object_id.as_deref(),
            Body::Refund(r) => Some(r.payment.as_str()),
            _ => None,
        };
        let payment = match payment.filter(|p| !state.payments.contains_key(*p)) {
            Some(p) => source.payment(p)?.map(|record| (p.to_string(), record)),
            None => None,
        };
        self.engine.preload(seen, payment);
        Ok(())
    }

    /// The stored accounts applying `rec` needs: those with effects falling due before it
    /// (from the due index), every member of a program whose period closes before it, and
    /// what [`Engine::needs`] lists, each with the account that referred it.
    fn load_for<S: Source>(&mut self, source: &S, rec: &Record) -> Result<(), S::Error> {
        let to = rec.created.0;
        if to > self.read_to {
            let (entries, read_to) = source.dues_from(self.read_to, to, self.read_ahead)?;
            let sort = self.expected && !entries.is_empty();
            self.ahead.extend(entries);
            if sort {
                self.sort_ahead();
            }
            self.read_to = read_to;
        }
        while self.ahead.front().is_some_and(|(at, _, _)| *at <= to) {
            let Some((at, key, id)) = self.ahead.pop_front() else {
                break;
            };
            self.load(source, &id)?;
            self.scanned.push((at, key));
        }
        if self.engine.clock().is_none_or(|c| c.0 < to) {
            for program in self.engine.closes_due_by(rec.created) {
                self.load_members(source, &program)?;
            }
        }
        let needs = self.engine.needs(rec);
        for id in &needs.accounts {
            self.load(source, id)?;
        }
        let opened = needs
            .may_open
            .iter()
            .filter(|(_, id)| !self.engine.has_account(id))
            .map(|(program, id)| (program.to_string(), ids::referral_code(id)));
        let codes: Vec<(String, String)> = needs.codes.iter().cloned().chain(opened).collect();
        for (program, code) in &codes {
            if self.engine.has_code(program, code) {
                continue;
            }
            let Some(holder) = source.code_holder(program, code)? else {
                continue;
            };
            self.load(source, &holder)?;
            let holds = self
                .engine
                .state()
                .accounts
                .get(holder.as_str())
                .is_some_and(|a| *a.program == *program.as_str() && a.referral_code == *code);
            if holds {
                self.engine.load_code(program, code, &holder);
            }
        }
        for program in &needs.members_of {
            self.load_members(source, program)?;
        }
        Ok(())
    }

    /// Loads an account, and the account that referred it (whose referral a payment may
    /// convert).
    fn load<S: Source>(&mut self, source: &S, id: &str) -> Result<(), S::Error> {
        let referrer = match self.engine.state().accounts.get(id) {
            Some(a) => a.referred_by.clone(),
            None => match source.account(id)? {
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
            if let Some(a) = source.account(&r)? {
                self.engine.load_account(a);
                self.loaded += 1;
            }
        }
        Ok(())
    }

    fn load_members<S: Source>(&mut self, source: &S, program: &str) -> Result<(), S::Error> {
        if !self.whole.insert(program.to_string()) {
            return Ok(());
        }
        for a in source.members(program)? {
            if !self.engine.has_account(&a.id) {
                self.engine.load_account(a);
                self.loaded += 1;
            }
        }
        Ok(())
    }

    /// What the open batch changed, to commit: the engine's changes, and the due index
    /// entries the clock has passed (the others, read for a record that did not move the
    /// clock, are read again when it moves).
    pub fn take_batch(&mut self) -> (Changes, Vec<Vec<u8>>) {
        let changes = self.engine.take_changes();
        let clock = self.engine.clock().map_or(i64::MIN, |c| c.0);
        let passed = std::mem::take(&mut self.scanned)
            .into_iter()
            .filter(|(at, _)| *at <= clock)
            .map(|(_, k)| k)
            .collect();
        // A commit changes the index: what was read ahead is read again.
        self.ahead.clear();
        self.expected = false;
        self.read_to = clock;
        if self.account_cache > 0 {
            self.batches += 1;
            for id in &changes.accounts {
                self.used.insert(id.clone(), self.batches);
            }
        }
        (changes, passed)
    }

    /// After the batch [`WorkingSet::take_batch`] gave is committed: forget the seen ids and
    /// payments (the source hands them back), and keep the accounts within
    /// `account_cache`: once there are more, the least recently changed go, down to three
    /// quarters of it.
    /// What the records applied since changed stays.
    pub fn committed(&mut self) {
        self.release(None);
    }

    /// [`WorkingSet::committed`] for the batches before `writing`, a batch taken with
    /// [`WorkingSet::take_batch`] and being written while the next is applied: its seen ids,
    /// payments, accounts and referral codes stay in memory, where the next batch's records
    /// find them, until it is written (and this or [`WorkingSet::committed`] is called
    /// again). Pass the due index entries it writes to [`WorkingSet::expect_dues`].
    pub fn committed_before(&mut self, writing: &Changes) {
        self.release(Some(writing));
    }

    fn release(&mut self, writing: Option<&Changes>) {
        self.engine.forget_committed(writing);
        self.whole.clear();
        if self.account_cache == 0 {
            self.engine.evict(|_| false, writing);
        } else if self.engine.account_count() > self.account_cache {
            // Down to three quarters of the bound, the most recently changed kept, so that
            // the next eviction is a quarter of the bound's loads away.
            let keep = self.account_cache - self.account_cache / 4;
            let used = &self.used;
            let stamp = |id: &str| used.get(id).copied().unwrap_or(0);
            let mut stamps: Vec<u64> = self.engine.account_ids().map(stamp).collect();
            let last = stamps.len() - keep.max(1);
            let (_, &mut nth, _) = stamps.select_nth_unstable(last);
            // The accounts changed in batch `nth` may not all fit: then none of them stays.
            let at_least = if stamps[last..].iter().filter(|&&s| s == nth).count()
                == stamps.iter().filter(|&&s| s == nth).count()
            {
                nth
            } else {
                nth + 1
            };
            self.engine.evict(|id| stamp(id) >= at_least, writing);
            let engine = &self.engine;
            self.used.retain(|id, _| engine.holds_account(id));
        }
    }

    /// The due index entries a batch being written adds, `(time, key, account)`: until it
    /// is written, the index the source reads lacks them, and the working set reads them
    /// from here instead (so that each is found, loaded and removed once passed, as if it
    /// had been read from the index).
    pub fn expect_dues(&mut self, dues: Vec<(i64, Vec<u8>, String)>) {
        let before = self.ahead.len();
        self.ahead
            .extend(dues.into_iter().filter(|(at, _, _)| *at > self.read_to));
        if self.ahead.len() > before {
            self.expected = true;
            self.sort_ahead();
        }
    }

    /// `ahead` in time order, each entry once (after expected entries were added, or entries
    /// read beside them).
    fn sort_ahead(&mut self) {
        let v = self.ahead.make_contiguous();
        // After a read, two sorted runs, which a stable sort merges in one pass.
        v.sort();
        let mut all: Vec<_> = std::mem::take(&mut self.ahead).into();
        all.dedup();
        self.ahead = all.into();
    }
}
