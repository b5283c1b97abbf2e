//! The indexes the HTTP API reads by (SPEC section 11), written in the same batch as the
//! state they index, and the reads themselves, each from one RocksDB snapshot.
//!
//! Keys (composite parts separated by a NUL byte, which no id of the ledger holds):
//! - `i/{ptx}` → the transaction's output sequence (8 bytes, big-endian); `T/{seq}` → its
//!   id, every transaction in log order; `l/{loy}\0{seq}` → its id, an account's ledger
//! - `e/{rdm}` → the redemption's sequence (its `loyalty.reward.redeemed` line); `Q/{seq}`
//!   and `q/{loy}\0{seq}` → its id, as for transactions
//! - `c/{customer}\0{loy}`: the accounts of a customer; `k/{program}\0{tier}\0{loy}`: the
//!   accounts holding a tier, kept from the accounts the batch changed (not from events: a
//!   program update that adds or removes tiers moves accounts without one), with
//!   `K/{loy}` → `{program}\0{tier}` saying where each account is
//! - `u/{record}\0{seq}` → `n` (4 bytes, big-endian): the output lines a record's
//!   application wrote (what a command's answer is made of), `n` of them from `seq` on; a
//!   refusal as a duplicate is not one
//! - `h/{record}`: a command the API sent ([`ApiCommand`]), with the fingerprint of the
//!   request that made it (Idempotency-Key)
//! - `m/apiindex`: present once the keys above cover the whole state (a state written by an
//!   earlier version is indexed when first opened, [`Store::ensure_api_index`])

use std::borrow::Cow;
use std::collections::BTreeMap;

use loyalty_core::output::{Event, Output};
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};

use crate::{corrupt, decode_account, seq_key, Store, StoreError};

/// The log positions the API's indexes are whole up to, after their version.
pub(crate) const API_INDEX_KEY: &[u8] = b"m/apiindex";

/// What `m/apiindex` holds when the indexes are whole up to `log`.
pub(crate) fn api_index_mark(log: &BTreeMap<i32, i64>) -> String {
    format!("v5|{}", crate::index_mark(log))
}

/// What the API's indexes need to know of one output line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LineIndex {
    /// A transaction: its id and account.
    pub transaction: Option<(String, String)>,
    /// A redemption (`loyalty.reward.redeemed` with a redemption id): its id and account.
    pub redemption: Option<(String, String)>,
    /// A new account (`loyalty.account.created`): its id and customer.
    pub opened: Option<(String, String)>,
    /// The record whose application wrote the line.
    pub record: Option<String>,
    /// What it adds to its program's statistics.
    pub stat: Option<crate::StatLine>,
}

impl LineIndex {
    /// The index entries of an output of the record `record` (None for effects that fell
    /// due before it).
    pub fn of_output(o: &Output, record: Option<&str>) -> LineIndex {
        let mut ix = LineIndex {
            stat: crate::StatLine::of_output(o),
            ..LineIndex::default()
        };
        let mine = |s: Option<&str>| record.filter(|r| s == Some(*r)).map(str::to_string);
        match o {
            Output::Transaction(t) => {
                ix.transaction = Some((str::to_owned(&t.id), str::to_owned(&t.account)));
                ix.record = mine(Some(&t.source));
            }
            Output::Event(e) => {
                ix.record = mine(e.source.as_deref());
                let m = &e.member;
                match &e.event {
                    Event::RewardRedeemed { redemption, .. } => {
                        ix.redemption = Some((redemption.clone(), str::to_owned(&m.account)));
                    }
                    Event::AccountCreated { .. } => {
                        ix.opened = Some((str::to_owned(&m.account), str::to_owned(&m.customer)));
                    }
                    _ => {}
                }
            }
            Output::Rejected(r) => {
                if r.reason != loyalty_core::envelope::Reason::Duplicate {
                    ix.record = mine(r.source.as_deref());
                }
            }
            // A record for another partition: nothing of this partition to find by it.
            Output::Message(_) => {}
        }
        ix
    }

    /// The index entries of a stored output line (JSON), as [`LineIndex::of_output`] gives
    /// them for the output it was printed from: for rebuilding and checking the indexes.
    pub fn of_line(line: &StoredLine<'_>) -> LineIndex {
        let mut ix = LineIndex {
            stat: crate::StatLine::of_line(line),
            ..LineIndex::default()
        };
        let s = |v: &Option<Cow<'_, str>>| v.as_deref().map(str::to_string);
        let empty = LineData::default();
        let d = line.data.as_ref().unwrap_or(&empty);
        match line.kind.as_deref() {
            Some("transaction") => {
                if let (Some(id), Some(a)) = (s(&line.id), s(&line.account)) {
                    ix.transaction = Some((id, a));
                }
                // An effect that fell due names a `due:` source, not a record.
                ix.record = s(&line.source).filter(|r| !r.starts_with("due:"));
            }
            Some("event") => {
                ix.record = s(&line.source);
                match line.kind_of.as_deref() {
                    Some("loyalty.reward.redeemed") => {
                        if let (Some(r), Some(a)) = (s(&d.redemption), s(&d.account)) {
                            ix.redemption = Some((r, a));
                        }
                    }
                    Some("loyalty.account.created") => {
                        if let (Some(a), Some(c)) = (s(&d.account), s(&d.customer)) {
                            ix.opened = Some((a, c));
                        }
                    }
                    _ => {}
                }
            }
            Some("rejected") if line.reason.as_deref() != Some("duplicate") => {
                ix.record = s(&line.source)
            }
            _ => {}
        }
        ix
    }
}

/// The fields of a stored ledger line the indexes and statistics are made of, borrowed
/// from the line where they can be (every other field is skipped unread): rebuilding or
/// checking the indexes of a million members reads several million lines.
#[derive(Deserialize, Default)]
pub struct StoredLine<'a> {
    #[serde(borrow)]
    pub(crate) kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    account: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) program: Option<Cow<'a, str>>,
    #[serde(borrow)]
    source: Option<Cow<'a, str>>,
    #[serde(borrow)]
    reason: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "type")]
    pub(crate) kind_of: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) created: Option<Cow<'a, str>>,
    pub(crate) points: Option<i64>,
    #[serde(borrow)]
    pub(crate) status: Option<Cow<'a, str>>,
    pub(crate) metadata: Option<LineMeta>,
    #[serde(borrow)]
    pub(crate) data: Option<LineData<'a>>,
}

/// What [`StoredLine`] reads of `metadata`.
#[derive(Deserialize, Default)]
pub struct LineMeta {
    pub(crate) returned: Option<bool>,
}

/// What [`StoredLine`] reads of an event's `data`.
#[derive(Deserialize, Default)]
pub struct LineData<'a> {
    #[serde(borrow)]
    redemption: Option<Cow<'a, str>>,
    #[serde(borrow)]
    account: Option<Cow<'a, str>>,
    #[serde(borrow)]
    customer: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) program: Option<Cow<'a, str>>,
}

/// `{prefix}{a}\0{b}`.
fn key2(prefix: &str, a: &str, b: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + a.len() + 1 + b.len());
    k.extend_from_slice(prefix.as_bytes());
    k.extend_from_slice(a.as_bytes());
    k.push(0);
    k.extend_from_slice(b);
    k
}

/// The 20 digits of a sequence number.
fn digits(seq: u64) -> Vec<u8> {
    seq_key("", seq)[1..].to_vec()
}

/// `k/{program}\0{tier}\0{loy}`.
pub fn tier_key(program: &str, tier: &str, account: &str) -> Vec<u8> {
    let mut k = key2("k/", program, tier.as_bytes());
    k.push(0);
    k.extend_from_slice(account.as_bytes());
    k
}

/// `c/{customer}\0{loy}`.
pub fn customer_key(customer: &str, account: &str) -> Vec<u8> {
    key2("c/", customer, account.as_bytes())
}

/// The runs of consecutive lines that one record's application wrote, each kept as one
/// `u/{record}\0{first seq}` key with the run's length as its value, instead of a key a
/// line (an enrolment writes five lines).
#[derive(Default)]
pub(crate) struct RecordRuns {
    /// The run being extended: the record, its first line, its length.
    open: Option<(String, u64, u32)>,
}

impl RecordRuns {
    /// The line `seq` of `record` (None: of no record, which ends any run).
    fn line(&mut self, wb: &mut crate::Writes, seq: u64, record: Option<&str>) {
        if let (Some((r, first, n)), Some(rec)) = (&mut self.open, record) {
            if r == rec && *first + u64::from(*n) == seq {
                *n += 1;
                return;
            }
        }
        self.finish(wb);
        self.open = record.map(|r| (r.to_string(), seq, 1));
    }

    /// Continues, when the batch's first line `seq` is `record`'s, the run of that record
    /// the previous batch ended with: so that runs do not depend on where batches end (a
    /// record refused in one batch and its copy refused in the next are one run, as a
    /// rebuild of the index from the lines finds it).
    pub(crate) fn resume(&mut self, db: &DB, record: &str, seq: u64) -> Result<(), StoreError> {
        let prefix = key2("u/", record, b"");
        let at = key2("u/", record, &digits(seq));
        let mut iter = db.iterator(IteratorMode::From(&at, Direction::Reverse));
        if let Some(kv) = iter.next() {
            let (k, v) = kv?;
            if k.starts_with(&prefix) {
                let (first, n) = run_of(&k, prefix.len(), &v)?;
                if first + u64::from(n) == seq {
                    self.open = Some((record.to_string(), first, n));
                }
            }
        }
        Ok(())
    }

    /// Writes the open run.
    pub(crate) fn finish(&mut self, wb: &mut crate::Writes) {
        if let Some((record, first, n)) = self.open.take() {
            wb.put(key2("u/", &record, &digits(first)), n.to_be_bytes());
        }
    }
}

/// The first line and the length of the run a `u/` key (its record's part `skip` bytes
/// long) and value hold.
fn run_of(k: &[u8], skip: usize, v: &[u8]) -> Result<(u64, u32), StoreError> {
    let first = std::str::from_utf8(&k[skip..])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| corrupt(k, "not a sequence number"))?;
    let n: [u8; 4] = v.try_into().map_err(|_| corrupt(k, "not a line count"))?;
    Ok((first, u32::from_be_bytes(n)))
}

/// The index entries of the line numbered `seq` (its record's through `runs`: call
/// [`RecordRuns::finish`] after the last line).
pub(crate) fn put_line_index(
    wb: &mut crate::Writes,
    runs: &mut RecordRuns,
    seq: u64,
    ix: &LineIndex,
) {
    let d = digits(seq);
    if let Some((id, account)) = &ix.transaction {
        wb.put(format!("i/{id}"), seq.to_be_bytes());
        wb.put(seq_key("T", seq), id.as_bytes());
        wb.put(key2("l/", account, &d), id.as_bytes());
    }
    if let Some((id, account)) = &ix.redemption {
        wb.put(format!("e/{id}"), seq.to_be_bytes());
        wb.put(seq_key("Q", seq), id.as_bytes());
        wb.put(key2("q/", account, &d), id.as_bytes());
    }
    if let Some((account, customer)) = &ix.opened {
        wb.put(customer_key(customer, account), b"");
    }
    runs.line(wb, seq, ix.record.as_deref());
}

/// `K/{loy}`: where the tier index holds an account.
fn tier_place_key(account: &str) -> Vec<u8> {
    format!("K/{account}").into_bytes()
}

/// `{program}\0{tier}`.
fn tier_place(program: &str, tier: &str) -> Vec<u8> {
    key2("", program, tier.as_bytes())
}

/// An account's tier, taken from the engine for [`put_tier_index`].
#[derive(Debug)]
pub(crate) struct TierOf {
    pub(crate) id: loyalty_core::Sym,
    pub(crate) program: loyalty_core::Sym,
    pub(crate) tier: Option<String>,
}

/// Where the tier index holds the accounts lately written (`K/`), as the batches written
/// left it, so that the next batch's accounts found here are not read back from RocksDB.
/// Once the store is open only the writing of batches changes `K/`, one batch at a time,
/// and what a batch moved is noted here only once it is written ([`TierPlaces::note`]).
/// Bounded: emptied when it holds [`TierPlaces::MAX`] accounts.
#[derive(Debug, Default)]
pub(crate) struct TierPlaces {
    /// The distinct places (`{program}\0{tier}`): a handful, shared by every account.
    places: Vec<Box<[u8]>>,
    place_of: rustc_hash::FxHashMap<Box<[u8]>, u32>,
    /// Each account's place, [`NOWHERE`] when it has none.
    of: rustc_hash::FxHashMap<loyalty_core::Sym, u32>,
}

/// An account the tier index does not hold.
const NOWHERE: u32 = u32::MAX;

impl TierPlaces {
    /// The most accounts kept.
    const MAX: usize = 1 << 18;

    /// Where `account` is, if known: `Some(None)` when it is in no tier.
    fn place(&self, account: &str) -> Option<Option<&[u8]>> {
        let &i = self.of.get(account)?;
        Some(self.places.get(i as usize).map(|p| &p[..]))
    }

    /// Notes where the accounts of a batch just written now are.
    pub(crate) fn note(&mut self, moved: TierMoves) {
        if self.of.len() + moved.0.len() > Self::MAX {
            self.of.clear();
        }
        for (id, place) in moved.0 {
            let i = match place {
                None => NOWHERE,
                Some(p) => match self.place_of.get(&p[..]) {
                    Some(&i) => i,
                    None => {
                        let i = self.places.len() as u32;
                        self.places.push(p.clone().into_boxed_slice());
                        self.place_of.insert(p.into_boxed_slice(), i);
                        i
                    }
                },
            };
            self.of.insert(id, i);
        }
    }
}

/// Where each account of a batch is in the tier index once the batch is written
/// ([`put_tier_index`]), for [`TierPlaces::note`].
#[derive(Debug, Default)]
pub(crate) struct TierMoves(Vec<(loyalty_core::Sym, Option<Vec<u8>>)>);

/// Moves the accounts the batch changed to their tier's place in the index (`k/`, `K/`):
/// where each was is known ([`TierPlaces`]) or read in one multi-get, then only the
/// accounts that moved are written.
pub(crate) fn put_tier_index(
    db: &DB,
    wb: &mut crate::Writes,
    accounts: &[TierOf],
    stats: &mut crate::StatDeltas,
    known: &TierPlaces,
) -> Result<TierMoves, StoreError> {
    // Each account's place if known, looked up once; the others are read in one multi-get.
    let known: Vec<Option<Option<&[u8]>>> = accounts.iter().map(|a| known.place(&a.id)).collect();
    let mut read = db
        .multi_get(
            accounts
                .iter()
                .zip(&known)
                .filter(|(_, k)| k.is_none())
                .map(|(a, _)| tier_place_key(&a.id)),
        )
        .into_iter();
    let mut moves = Vec::new();
    for (a, known) in accounts.iter().zip(known) {
        let read_back;
        let was: Option<&[u8]> = match known {
            Some(was) => was,
            None => {
                read_back = read.next().transpose()?.flatten();
                read_back.as_deref()
            }
        };
        let id: &str = &a.id;
        let now = a.tier.as_deref().map(|t| tier_place(&a.program, t));
        if was == now.as_deref() {
            // Noted only when read: a known place that did not move is known already.
            if known.is_none() {
                moves.push((a.id.clone(), now));
            }
            continue;
        }
        if let Some(old) = was {
            if let Some(i) = old.iter().position(|b| *b == 0) {
                let program = String::from_utf8_lossy(&old[..i]);
                let tier = String::from_utf8_lossy(&old[i + 1..]);
                stats.add_tier(&program, &tier, -1);
            }
            let mut k = b"k/".to_vec();
            k.extend_from_slice(old);
            k.push(0);
            k.extend_from_slice(id.as_bytes());
            wb.delete(k);
        }
        match (&a.tier, &now) {
            (Some(t), Some(place)) => {
                stats.add_tier(&a.program, t, 1);
                wb.put(tier_key(&a.program, t, id), b"");
                wb.put(tier_place_key(id), place);
            }
            _ => wb.delete(tier_place_key(id)),
        }
        moves.push((a.id.clone(), now));
    }
    Ok(TierMoves(moves))
}

/// A command the API sent to the log, kept under `h/{id}` so that a repeat of its
/// Idempotency-Key is answered, and `GET /v1/commands/{id}` can tell its outcome.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiCommand {
    /// The SHA-256 (hex) of the request: method, path and body.
    pub fingerprint: String,
    /// What the command is: `enroll`, `adjust`, `redeem`, `qualify`, `transfer`, `program`.
    pub kind: String,
    /// The account it concerns (for a transfer: the sender's).
    pub account: Option<String>,
    /// The program it concerns.
    pub program: Option<String>,
    /// Its answer once folded (status, body), kept so that a repeat and
    /// `GET /v1/commands/{id}` answer the first answer, not today's account.
    #[serde(default)]
    pub answer: Option<(u16, serde_json::Value)>,
}

/// The prefixes of the API's index keys.
const PREFIXES: [&str; 11] = [
    "i/", "T/", "l/", "e/", "Q/", "q/", "c/", "k/", "K/", "u/", "S/",
];

/// Every index key (and value) the state's lines and accounts call for.
/// Index entries by key.
/// Index entries in key order, each key once.
type Expected = Vec<(Vec<u8>, Vec<u8>)>;

/// The index entries the ledger and the accounts call for, in key order. A sorted vector:
/// a state of a million members calls for tens of millions of entries, which a hash map
/// (inserted, then removed one by one as the index is read) held at twice the memory and
/// spent most of `verify`'s time hashing; sorted, they are checked by one merge with the
/// index as RocksDB returns it, in key order.
fn expected_index(store: &Store) -> Result<Expected, StoreError> {
    let mut wb = crate::Writes::default();
    let mut stats = crate::StatDeltas::default();
    let mut runs = RecordRuns::default();
    for kv in store.prefix_once("o/") {
        let (k, v) = kv?;
        // What does not decode is reported by `verify` on its own, and indexes nothing.
        let Some(seq) = std::str::from_utf8(&k[2..])
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        let Ok(line) = serde_json::from_slice::<StoredLine<'_>>(&v) else {
            continue;
        };
        let mut ix = LineIndex::of_line(&line);
        if let Some(s) = &ix.stat {
            stats.add_line(s);
        }
        // Customers and tiers come from the accounts below.
        ix.opened = None;
        put_line_index(&mut wb, &mut runs, seq, &ix);
    }
    runs.finish(&mut wb);
    // Every write in order (`None`: a delete); sorted below, the last write of a key wins.
    let mut out: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::with_capacity(wb.len() * 5 / 4);
    out.extend(wb.ops().map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec))));
    drop(wb);
    for kv in store.prefix_once("a/") {
        let (k, v) = kv?;
        let Ok(a) = decode_account(&k, &v) else {
            continue;
        };
        out.push((customer_key(&a.customer, &a.id), Some(Vec::new())));
        if let Some(t) = &a.tier {
            stats.add_tier(&a.program, t, 1);
            out.push((tier_key(&a.program, t, &a.id), Some(Vec::new())));
            out.push((tier_place_key(&a.id), Some(tier_place(&a.program, t))));
        }
    }
    for (k, v) in stats.entries()? {
        if !v.is_empty() {
            out.push((k, Some(v)));
        }
    }
    // By key, then in the order written (the last write of a key is kept): sorted as
    // (first 16 bytes, place) pairs, which most comparisons settle without reading the
    // keys themselves.
    let mut order: Vec<(u128, usize)> = out
        .iter()
        .enumerate()
        .map(|(i, (k, _))| (crate::key_head(k), i))
        .collect();
    order.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| out[a.1].0.cmp(&out[b.1].0))
            .then(a.1.cmp(&b.1))
    });
    let mut sorted: Expected = Vec::with_capacity(out.len());
    for (n, &(_, i)) in order.iter().enumerate() {
        let later = order.get(n + 1).is_some_and(|&(_, j)| out[j].0 == out[i].0);
        if later {
            continue;
        }
        let (k, v) = std::mem::take(&mut out[i]);
        if let Some(v) = v {
            sorted.push((k, v));
        }
    }
    Ok(sorted)
}

impl Store {
    /// Writes the API's indexes of a state that lacks them (written by an earlier version),
    /// once, from its ledger lines and accounts.
    pub fn ensure_api_index(&self) -> Result<(), StoreError> {
        let mark = api_index_mark(&self.log_positions()?);
        if self.db.get(API_INDEX_KEY)?.as_deref() == Some(mark.as_bytes()) {
            return Ok(());
        }
        // Rewritten whole: what was known of the tier index is read again.
        if let Ok(mut places) = self.tier_places.lock() {
            *places = TierPlaces::default();
        }
        let mut wb = WriteBatch::default();
        for prefix in PREFIXES {
            for kv in self.prefix(prefix) {
                wb.delete(kv?.0);
            }
        }
        let expected = expected_index(self)?;
        let n = expected.len();
        for (k, v) in expected {
            wb.put(k, v);
            if wb.len() >= 100_000 {
                self.db.write(std::mem::take(&mut wb))?;
            }
        }
        wb.put(API_INDEX_KEY, mark.as_bytes());
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(wb, &wo)?;
        if n > 0 {
            tracing::info!(keys = n, "indexed the ledger and the accounts for the API");
        }
        Ok(())
    }

    /// Whether the API's indexes cover the state (a state an earlier version wrote lacks
    /// them until the engine opens it).
    pub fn has_api_index(&self) -> Result<bool, StoreError> {
        let mark = api_index_mark(&self.log_positions()?);
        Ok(self.db.get(API_INDEX_KEY)?.as_deref() == Some(mark.as_bytes()))
    }

    /// The API's index problems (for `loyalty verify`): keys missing, or left over, or
    /// holding another value than the ledger and the accounts call for.
    pub(crate) fn verify_api_index(&self) -> Result<Vec<(Vec<u8>, String)>, StoreError> {
        let Ok(log) = self.log_positions() else {
            // Reported as an offsets problem.
            return Ok(Vec::new());
        };
        if self.db.get(API_INDEX_KEY)?.as_deref() != Some(api_index_mark(&log).as_bytes()) {
            // Indexed anew when the engine next opens it.
            return Ok(Vec::new());
        }
        let expected = expected_index(self)?;
        let mut problems = Vec::new();
        let mut missing: Vec<Vec<u8>> = Vec::new();
        // Which expected entries a prefix's walk covered: what none covers is missing too.
        let mut covered = vec![false; expected.len()];
        for prefix in PREFIXES {
            let p = prefix.as_bytes();
            let start = expected.partition_point(|(k, _)| k.as_slice() < p);
            let len = expected[start..]
                .iter()
                .take_while(|(k, _)| k.starts_with(p))
                .count();
            let want = &expected[start..start + len];
            covered[start..start + len].fill(true);
            // A merge of two key-ordered sequences: the index as stored and as called for.
            let mut i = 0;
            for kv in self.prefix_once(prefix) {
                let (k, v) = kv?;
                while i < want.len() && want[i].0.as_slice() < &*k {
                    missing.push(want[i].0.clone());
                    i += 1;
                }
                if i < want.len() && want[i].0.as_slice() == &*k {
                    if want[i].1 != *v {
                        problems.push((k.to_vec(), "holds another value".to_string()));
                    }
                    i += 1;
                } else {
                    problems.push((
                        k.to_vec(),
                        "an index entry that nothing in the state calls for".to_string(),
                    ));
                }
            }
            missing.extend(want[i..].iter().map(|(k, _)| k.clone()));
        }
        missing.extend(
            expected
                .iter()
                .zip(&covered)
                .filter(|(_, c)| !**c)
                .map(|((k, _), _)| k.clone()),
        );
        missing.sort_unstable();
        for k in missing {
            problems.push((k, "missing from the index".to_string()));
        }
        Ok(problems)
    }

    /// Keeps a command the API sent (`h/{id}`); `sync`: on disk before this returns (a
    /// command about to be sent; its answer, which the ledger can give again, need not be).
    pub fn put_command(
        &self,
        id: &str,
        command: &ApiCommand,
        sync: bool,
    ) -> Result<(), StoreError> {
        let v = serde_json::to_vec(command).map_err(|e| corrupt(id.as_bytes(), e))?;
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db.put_opt(format!("h/{id}"), v, &wo)?;
        Ok(())
    }

    /// A consistent view of the state as of now: every read of it sees the same batches.
    pub fn view(&self) -> View<'_> {
        View {
            db: &self.db,
            snap: self.db.snapshot(),
        }
    }
}

/// A read-only view of the state at one instant (a RocksDB snapshot).
pub struct View<'a> {
    db: &'a DB,
    snap: rocksdb::Snapshot<'a>,
}

impl std::fmt::Debug for View<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View").finish()
    }
}

/// Which way a list is walked from its cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Walk {
    /// Keys ascending, from (and excluding) the cursor.
    Up,
    /// Keys descending, from (and excluding) the cursor.
    Down,
}

impl View<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.snap.get(key)?)
    }

    /// A stored account.
    pub fn account(&self, id: &str) -> Result<Option<loyalty_core::state::Account>, StoreError> {
        let key = format!("a/{id}");
        match self.get(key.as_bytes())? {
            Some(v) => Ok(Some(decode_account(key.as_bytes(), &v)?)),
            None => Ok(None),
        }
    }

    /// The output line numbered `seq`.
    pub fn line(&self, seq: u64) -> Result<serde_json::Value, StoreError> {
        let key = seq_key("o", seq);
        let v = self
            .get(&key)?
            .ok_or_else(|| corrupt(&key, "an index names a line that is not there"))?;
        serde_json::from_slice(&v).map_err(|e| corrupt(&key, e))
    }

    /// The output line numbered `seq`, as stored (JSON text).
    pub fn line_raw(&self, seq: u64) -> Result<Vec<u8>, StoreError> {
        let key = seq_key("o", seq);
        self.get(&key)?
            .ok_or_else(|| corrupt(&key, "an index names a line that is not there"))
    }

    /// The sequence of the line a `i/` or `e/` key names.
    pub fn seq_of(&self, prefix: &str, id: &str) -> Result<Option<u64>, StoreError> {
        let key = format!("{prefix}{id}");
        match self.get(key.as_bytes())? {
            Some(v) => {
                let b: [u8; 8] = v
                    .as_slice()
                    .try_into()
                    .map_err(|_| corrupt(key.as_bytes(), "not a sequence number"))?;
                Ok(Some(u64::from_be_bytes(b)))
            }
            None => Ok(None),
        }
    }

    /// The stored program list (`m/programs`) as its bytes.
    pub fn programs_raw(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(b"m/programs")
    }

    /// The programs of a program list's bytes ([`View::programs_raw`]), in config order:
    /// (id, the program's JSON text).
    pub fn parse_programs(raw: &[u8]) -> Result<Vec<(String, String)>, StoreError> {
        let p: crate::StoredPrograms =
            serde_json::from_slice(raw).map_err(|e| corrupt(b"m/programs", e))?;
        p.order
            .iter()
            .map(|id| {
                p.texts
                    .get(id)
                    .map(|t| (id.clone(), t.clone()))
                    .ok_or_else(|| corrupt(b"m/programs", format!("no text for {id}")))
            })
            .collect()
    }

    /// The clock.
    pub fn clock(&self) -> Result<Option<loyalty_core::time::Timestamp>, StoreError> {
        match self.get(b"m/clock")? {
            Some(v) => Ok(Some(loyalty_core::time::Timestamp(
                crate::parse_u64(b"m/clock", &v)? as i64,
            ))),
            None => Ok(None),
        }
    }

    /// Units of each reward given so far: (program, reward) → units.
    pub fn stock_used(&self) -> Result<BTreeMap<(String, String), i64>, StoreError> {
        match self.get(b"m/stock")? {
            Some(v) => {
                let stock: Vec<((String, String), i64)> =
                    serde_json::from_slice(&v).map_err(|e| corrupt(b"m/stock", e))?;
                Ok(stock.into_iter().collect())
            }
            None => Ok(BTreeMap::new()),
        }
    }

    /// Whether a record was applied (or refused) and committed.
    pub fn is_seen(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.get(format!("s/{id}").as_bytes())?.is_some())
    }

    /// The lines a record's application wrote, in order.
    pub fn record_lines(&self, record: &str) -> Result<Vec<serde_json::Value>, StoreError> {
        let prefix = key2("u/", record, b"");
        let mut seqs = Vec::new();
        self.scan(&prefix, &prefix, Walk::Up, |k, v| {
            let (first, n) = run_of(k, prefix.len(), v)?;
            seqs.extend(first..first + u64::from(n));
            Ok(true)
        })?;
        seqs.into_iter().map(|s| self.line(s)).collect()
    }

    /// A command the API sent.
    pub fn command(&self, id: &str) -> Result<Option<ApiCommand>, StoreError> {
        let key = format!("h/{id}");
        match self.get(key.as_bytes())? {
            Some(v) => Ok(Some(
                serde_json::from_slice(&v).map_err(|e| corrupt(key.as_bytes(), e))?,
            )),
            None => Ok(None),
        }
    }

    /// Calls `f` with the keys under `prefix`, walking `walk` from `from` (excluded when it
    /// is a key; `from == prefix` starts at the first or the last key of the prefix), until
    /// `f` answers false.
    pub fn scan(
        &self,
        prefix: &[u8],
        from: &[u8],
        walk: Walk,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let mut ro = ReadOptions::default();
        ro.set_snapshot(&self.snap);
        let mut end = prefix.to_vec();
        // The first key after every key of the prefix.
        end.push(0xff);
        let start: Vec<u8> = match walk {
            Walk::Up => from.to_vec(),
            Walk::Down if from == prefix => end.clone(),
            Walk::Down => from.to_vec(),
        };
        let dir = match walk {
            Walk::Up => Direction::Forward,
            Walk::Down => Direction::Reverse,
        };
        let iter = self.db.iterator_opt(IteratorMode::From(&start, dir), ro);
        for kv in iter {
            let (k, v) = kv?;
            if !k.starts_with(prefix) {
                break;
            }
            if *k == *from {
                continue;
            }
            if !f(&k, &v)? {
                break;
            }
        }
        Ok(())
    }
}
