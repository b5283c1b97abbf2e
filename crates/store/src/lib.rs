//! The engine's durable state in RocksDB.
//!
//! One [`Store::commit`] writes one batch of folded records atomically: the accounts,
//! payments, seen ids, programs and clock the batch changed, the output lines it produced
//! (the ledger in order: transactions, events, rejections), the outbox of messages to
//! publish, and the log offsets it consumed. A crash leaves either all of a batch or none
//! of it, so the engine resumes from the offsets it stored and never folds a record twice.
//!
//! Keys (one column family, prefixes):
//! - `m/format`: the state's format, [`STATE_FORMAT`], written when the store is created; a
//!   state without it (an earlier version's) or with another is refused when opened, and
//!   rebuilt from the log with `loyalty replay`
//! - `a/{loy}`: an account (a form byte, its ledger hash, then postcard);
//!   `p/{payment}`: a payment (a form byte, then the engine's packed form; JSON in a state
//!   of [`PREVIOUS_FORMAT`]); `s/{id}`: a seen id
//! - `m/programs`, `m/clock`, `m/seq`: programs as the log set them, the clock, the next
//!   output sequence number
//! - `m/partitions`: in the state of one partition of several (an instance of a group),
//!   the log's partition count it was built for
//! - `m/log/{partition}`: the next log offset to fold; `m/src/{log partition}/{topic}/{partition}`:
//!   the highest source offset folded from that log partition (to skip re-appended records)
//! - `m/in/{topic}/{partition}`: the next input offset to sequence into the log
//! - `o/{seq}`: an output line; `x/{seq}`: an outbox entry, removed once delivered (an
//!   event's holds the sequence of its line instead of a copy of the payload: the payload is
//!   the line without its `kind` field)
//! - `d/{time}{loy}` (the time as 8 big-endian bytes, sign bit flipped, so that keys sort by
//!   time): the account's next effect falls due then (empty value), to find the accounts an
//!   advance of the clock needs; written with the account, removed once the clock has passed
//!   it (and the account's next one written); one falls stale when an effect moves later,
//!   and loads the account for nothing
//! - `m/overdue`: effects already due that the next advance of the clock carries out (those
//!   a record older than the clock scheduled; usually absent)
//! - `f/h/{redemption}`, `f/c/{account}`, `f/k/{program}\0{code}`: what the flows across
//!   partitions keep between their steps (a held cost, a referee's pending code, a code's
//!   holder with the conversions waiting for it), written only by an engine that folds one
//!   partition of several, and loaded whole
//! - `r/{code}/{program}`: the account holding a referral code; `m/index`: present once the
//!   `d/` and `r/` keys cover every account, with the log positions they are whole up to
//!   (a state committed to since by a version without them, after a rollback, is indexed
//!   anew when opened, [`Store::ensure_index`])
//!
//! Owns: the layout and atomicity. Must not know Kafka (offsets are plain numbers here).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use loyalty_core::engine::{next_due, Changes};
use loyalty_core::output::Output;
use loyalty_core::state::{Account, Due, PackedPayment, PaymentRecord, State};
use loyalty_core::time::Timestamp;
use loyalty_core::working_set::FlowKey;
use loyalty_core::{config::parse_program, Engine, Sym};
use rocksdb::{Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};

mod api;
mod stats;
mod written;
pub use api::{customer_key, tier_key, ApiCommand, LineIndex, View, Walk};
pub use stats::{local_date, DayStats, StatDeltas, StatLine, StoredStats, Totals};

/// What can go wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// RocksDB failed.
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// A stored value did not decode: the state is corrupt.
    #[error("corrupt state at key {key}: {why}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong.
        why: String,
    },
    /// The state was written in another format than this version's ([`STATE_FORMAT`]): by
    /// an earlier version (`found` is `None`: before formats were marked) or a later one.
    /// It is not read; the log is the source of truth, so the state is rebuilt from it.
    #[error(
        "the state was written {} and this version reads only {STATE_FORMAT} and \
         {PREVIOUS_FORMAT}: rebuild it from \
         the log with `loyalty replay --state NEW_DIR`, then run the engine on NEW_DIR",
        written_by(.found)
    )]
    Format {
        /// The format the state says it is in, if it says.
        found: Option<String>,
    },
    /// A read-only open of a directory that holds no state (no RocksDB `CURRENT` file): a
    /// mistyped `--state`. Nothing is created there.
    #[error("{path} holds no state")]
    NoState {
        /// The directory.
        path: String,
    },
}

/// The format of the state this version writes and reads, stored under `m/format` when a
/// store is created. A state without it (written before it existed) or with another is
/// refused when opened ([`StoreError::Format`]): it is rebuilt with `loyalty replay`.
pub const STATE_FORMAT: &str = "loyalty-state/2";

/// The format before [`STATE_FORMAT`], which this version still reads: it stored payments as
/// JSON, which this version reads as well. A store opened for writing marks such a state
/// as of [`STATE_FORMAT`] (it will hold packed payments), so that a version that reads only
/// this one refuses it at start instead of stopping on the first packed payment it meets.
pub const PREVIOUS_FORMAT: &str = "loyalty-state/1";

const FORMAT_KEY: &[u8] = b"m/format";

fn written_by(found: &Option<String>) -> String {
    match found {
        Some(f) => format!("in the format {f:?}"),
        None => "by an earlier version of loyalty (it has no m/format key)".to_string(),
    }
}

/// Refuses a state of another format than [`STATE_FORMAT`] or [`PREVIOUS_FORMAT`]; marks an
/// empty one, or one of the previous format, as of this format when `mark` (a store opened
/// for writing).
fn check_format(db: &DB, mark: bool) -> Result<(), StoreError> {
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    match db.get(FORMAT_KEY)? {
        Some(v) if v == STATE_FORMAT.as_bytes() => Ok(()),
        Some(v) if v == PREVIOUS_FORMAT.as_bytes() => {
            if mark {
                db.put_opt(FORMAT_KEY, STATE_FORMAT, &wo)?;
            }
            Ok(())
        }
        Some(v) => Err(StoreError::Format {
            found: Some(String::from_utf8_lossy(&v).into_owned()),
        }),
        None => {
            if db
                .iterator(IteratorMode::Start)
                .next()
                .transpose()?
                .is_some()
            {
                return Err(StoreError::Format { found: None });
            }
            if mark {
                db.put_opt(FORMAT_KEY, STATE_FORMAT, &wo)?;
            }
            Ok(())
        }
    }
}

/// A message waiting to be published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Its key in the store (`x/{seq}`), for removal after delivery.
    pub seq: u64,
    /// The topic.
    pub topic: String,
    /// The message key.
    pub key: Option<Vec<u8>>,
    /// The message value.
    pub payload: Vec<u8>,
    /// Headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The partition to produce to, when the record must land in one (a message to another
    /// log partition); otherwise the producer's partitioner picks it from the key.
    pub partition: Option<i32>,
    /// The index in [`Batch::lines`] of the output line this message publishes, if any.
    /// When the payload is that line's envelope (an event in JSON: the line without its
    /// `"kind":"event",`), the store keeps a reference to the line instead of a second copy
    /// of its bytes, and reads the payload back from the line. An empty payload with a
    /// line says so without the copy: that line must then be an event's (a batch whose
    /// entry refers to another line is refused). `None` as read back.
    pub line: Option<usize>,
}

/// Offsets and positions kept beside the state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Positions {
    /// Next log offset to fold, by log partition.
    pub log: BTreeMap<i32, i64>,
    /// Highest source offset folded, by (log partition, topic, partition).
    pub src: BTreeMap<(i32, String, i32), i64>,
    /// Next input offset to sequence, by (topic, partition).
    pub input: BTreeMap<(String, i32), i64>,
}

/// One batch of folded records, ready to be written at once.
#[derive(Debug, Default)]
pub struct Batch {
    /// What the engine changed.
    pub changes: Changes,
    /// Output lines (JSON), in order.
    pub lines: Vec<String>,
    /// What the API's indexes need of each line (empty, or one for each line).
    pub index: Vec<LineIndex>,
    /// Messages to publish (their `seq` is assigned by the store).
    pub outbox: Vec<OutboxEntry>,
    /// New log positions.
    pub log: BTreeMap<i32, i64>,
    /// New source offsets.
    pub src: BTreeMap<(i32, String, i32), i64>,
    /// Keys of the due index (`d/`) the clock has passed, to remove.
    pub dues_passed: Vec<Vec<u8>>,
    /// The digest of the `--config` file whose programs this batch applied (`m/config`).
    pub config: Option<String>,
    /// Outputs whose lines and index entries are made where the batch is written
    /// ([`Batch::render`]), `(place in lines, the record that wrote it, the output)`: their
    /// places in `lines` and `index` are empty until then.
    pub deferred: Vec<(usize, Option<Sym>, Output)>,
    /// How many of `deferred` are made already.
    pub rendered: usize,
}

impl Batch {
    /// Adds an output's line and index entries, made at once.
    pub fn push_line(&mut self, output: &Output, record: Option<&str>) {
        self.lines.push(output.to_json_line());
        self.index.push(LineIndex::of_output(output, record));
    }

    /// Adds an output whose line and index entries are made later ([`Batch::render`]),
    /// by the thread that writes the batch: a transaction's or an event's, which the
    /// folding thread has no more need of. Returns its place in `lines`.
    pub fn push_deferred(&mut self, output: Output, record: Option<Sym>) -> usize {
        let at = self.lines.len();
        self.lines.push(String::new());
        self.index.push(LineIndex::default());
        self.deferred.push((at, record, output));
        at
    }

    /// Makes the lines and index entries of the outputs added by [`Batch::push_deferred`]
    /// since it last ran. The outputs stay (the folding thread frees them, where they were
    /// made, once the batch is written).
    pub fn render(&mut self) {
        for (at, record, output) in self.deferred.iter().skip(self.rendered) {
            if let (Some(line), Some(ix)) = (self.lines.get_mut(*at), self.index.get_mut(*at)) {
                *line = output.to_json_line();
                *ix = LineIndex::of_output(output, record.as_deref());
            }
        }
        self.rendered = self.deferred.len();
    }
}

/// The key of an account's entry in the due index at `at`.
pub fn due_key(at: i64, account: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(10 + account.len());
    k.extend_from_slice(b"d/");
    k.extend_from_slice(&((at as u64) ^ (1 << 63)).to_be_bytes());
    k.extend_from_slice(account.as_bytes());
    k
}

/// The time and account of a due index key.
fn parse_due_key(k: &[u8]) -> Option<(i64, &str)> {
    let rest = k.strip_prefix(b"d/")?;
    let (time, account) = (rest.get(..8)?, rest.get(8..)?);
    let at = (u64::from_be_bytes(time.try_into().ok()?) ^ (1 << 63)) as i64;
    Some((at, std::str::from_utf8(account).ok()?))
}

/// What `m/index` holds: the log positions the indexes are whole up to.
fn index_mark(log: &BTreeMap<i32, i64>) -> String {
    let parts: Vec<String> = log.iter().map(|(p, o)| format!("{p}:{o}")).collect();
    parts.join(",")
}

fn code_key(program: &str, code: &str) -> String {
    format!("r/{code}/{program}")
}

const INDEX_KEY: &[u8] = b"m/index";
/// The digest of the `--config` file last applied to the log (SPEC section 10).
const CONFIG_KEY: &[u8] = b"m/config";
/// The partition count of the log a partition's state was built from.
const PARTITIONS_KEY: &[u8] = b"m/partitions";
const OVERDUE_KEY: &[u8] = b"m/overdue";

#[derive(Serialize, Deserialize, Default)]
struct StoredPrograms {
    order: Vec<String>,
    texts: BTreeMap<String, String>,
    revisions: BTreeMap<String, u64>,
}

/// The engine's RocksDB.
pub struct Store {
    db: DB,
    next_seq: std::sync::atomic::AtomicU64,
    /// The size of the last batch committed: the next one's write batch starts with that
    /// much room, instead of growing (and copying itself) as it fills.
    batch_bytes: std::sync::atomic::AtomicUsize,
    /// The buffers of the last batch written, emptied, for the next one: a batch's few
    /// megabytes allocated anew each time came fresh from the kernel, and zeroing those
    /// pages took a tenth of the folding thread.
    spare: std::sync::Mutex<Option<Writes>>,
    /// The batches [`Store::write`] wrote since [`Store::record_batches`], as RocksDB
    /// serializes them: what a benchmark's reference writes again into RocksDB alone.
    recorded: std::sync::Mutex<Option<Vec<Vec<u8>>>>,
    /// Where the tier index holds the accounts lately written.
    tier_places: std::sync::Mutex<api::TierPlaces>,
    /// Sync the write-ahead log on every batch (durability across power loss).
    sync: bool,
    /// Write batches through the write-ahead log at all.
    wal: bool,
    /// Opened read-only ([`Store::open_read_only`]).
    read_only: bool,
    /// The seen ids, payments and accounts written since the store was created empty, when
    /// it keeps them ([`Store::track_written`]).
    written: Option<std::sync::Mutex<written::Written>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.db.path())
            .finish()
    }
}

const SEQ_KEY: &[u8] = b"m/seq";

/// A stored key and its value.
type KeyValue = (Box<[u8]>, Box<[u8]>);

fn corrupt(key: &[u8], why: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        why: why.to_string(),
    }
}

/// The first byte of a stored payment (`p/`) in its packed form: the bytes of a
/// [`PackedPayment`] follow (varints and length-prefixed strings, a third of its JSON).
/// A payment an earlier version stored is JSON, which starts with `{`.
const PAYMENT_PACKED: u8 = 1;

/// A payment as stored: [`PAYMENT_PACKED`], then its packed bytes.
fn encode_payment(p: &PackedPayment) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + p.len());
    v.push(PAYMENT_PACKED);
    v.extend_from_slice(p.as_bytes());
    v
}

/// A stored payment, in either form (packed, or the JSON of an earlier version).
fn decode_payment(key: &[u8], v: &[u8]) -> Result<PaymentRecord, StoreError> {
    match v.split_first() {
        Some((&PAYMENT_PACKED, rest)) => {
            PackedPayment::read_stored(rest).map_err(|why| corrupt(key, why))
        }
        Some((b'{', _)) => serde_json::from_slice(v).map_err(|e| corrupt(key, e)),
        Some((form, _)) => Err(corrupt(
            key,
            format!("not a payment in a form this version reads (form byte {form})"),
        )),
        None => Err(corrupt(key, "an empty value, not a payment")),
    }
}

/// The first byte of a stored account: the 32 bytes of its ledger hash follow, then the
/// account in postcard, a compact binary form of its serde fields (a busy member's account,
/// thousands of lots, is written back every batch that touches it and read back whenever it
/// left memory; JSON made both several times the bytes and the work). The forms of earlier
/// versions (1, and JSON) are not read: such a state is refused when opened, by its format.
const ACCOUNT_HASHED: u8 = 2;

/// The first byte of a stored account with a manual tier or pending awards (SPEC section
/// 13): as [`ACCOUNT_HASHED`], then its [`loyalty_core::state::Extra`] in postcard. An
/// account without them is stored in the form before, byte for byte.
const ACCOUNT_EXTRA: u8 = 3;

/// An account as stored.
pub fn encode_account(a: &Account) -> Result<Vec<u8>, StoreError> {
    let mut v = Vec::with_capacity(160 + 64 * a.lots.len());
    let extra = !a.extra.is_empty();
    v.push(if extra { ACCOUNT_EXTRA } else { ACCOUNT_HASHED });
    v.extend_from_slice(&a.ledger_hash);
    let v = postcard::to_extend(a, v).map_err(|e| corrupt(a.id.as_bytes(), e))?;
    if !extra {
        return Ok(v);
    }
    postcard::to_extend(&a.extra, v).map_err(|e| corrupt(a.id.as_bytes(), e))
}

/// A stored account (under `key`), in either of its forms.
pub fn decode_account(key: &[u8], v: &[u8]) -> Result<Account, StoreError> {
    fn postcard<T: serde::de::DeserializeOwned>(rest: &[u8], key: &[u8]) -> Result<T, StoreError> {
        match postcard::take_from_bytes::<T>(rest) {
            Ok((a, [])) => Ok(a),
            Ok((_, extra)) => Err(corrupt(
                key,
                format!("{} bytes after the account", extra.len()),
            )),
            Err(e) => Err(corrupt(key, e)),
        }
    }
    match v.split_first() {
        Some((&ACCOUNT_EXTRA, rest)) if rest.len() >= 32 => {
            let (mut a, tail) =
                postcard::take_from_bytes::<Account>(&rest[32..]).map_err(|e| corrupt(key, e))?;
            a.extra = postcard(tail, key)?;
            a.ledger_hash.copy_from_slice(&rest[..32]);
            Ok(a)
        }
        Some((&ACCOUNT_HASHED, rest)) if rest.len() >= 32 => {
            let mut a: Account = postcard(&rest[32..], key)?;
            a.ledger_hash.copy_from_slice(&rest[..32]);
            Ok(a)
        }
        Some((form, _)) => Err(corrupt(
            key,
            format!("not an account in a form this version writes (form byte {form})"),
        )),
        None => Err(corrupt(key, "an empty value, not an account")),
    }
}

/// What `verify` reads of a ledger line (every other field is skipped unread).
#[derive(serde::Deserialize)]
struct LineHead<'a> {
    #[serde(borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    account: Option<std::borrow::Cow<'a, str>>,
    points: Option<i64>,
    #[serde(rename = "balanceAfter")]
    balance_after: Option<i64>,
    #[serde(borrow)]
    status: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, rename = "type")]
    kind_of: Option<std::borrow::Cow<'a, str>>,
}

/// The hash a stored transaction line must carry after `prev` (its account's previous
/// one): the SHA-256 of `prev` as hex and the line up to `,"hash"`, closed. `Err` says
/// why the line breaks the chain.
fn chain_link(prev: &[u8; 32], line: &[u8]) -> Result<[u8; 32], String> {
    use sha2::{Digest, Sha256};
    const KEY: &[u8] = br#","hash":""#;
    let Some(at) = line.windows(KEY.len()).rposition(|w| w == KEY) else {
        return Err(
            "a transaction line without a hash (written before the chain: rebuild \
                    the state with loyalty replay)"
                .into(),
        );
    };
    let stated = &line[at + KEY.len()..];
    let stated = stated.strip_suffix(br#""}"#).unwrap_or(stated);
    let mut h = Sha256::new();
    h.update(loyalty_core::output::hex32(prev).as_bytes());
    h.update(&line[..at]);
    h.update(b"}");
    let hash: [u8; 32] = h.finalize().into();
    if stated != loyalty_core::output::hex32(&hash).as_bytes() {
        return Err(format!(
            "the chain breaks here: the line's hash is {}, its fields and the previous hash \
             give {}",
            String::from_utf8_lossy(stated),
            loyalty_core::output::hex32(&hash)
        ));
    }
    Ok(hash)
}

/// `prefix` then `id`: an account's, payment's or seen id's key.
fn key_of(prefix: &str, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + id.len());
    k.extend_from_slice(prefix.as_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

/// `{prefix}/{seq}` with the number in 20 digits (so that keys sort by number), written
/// without a format string: two keys a record, and `format!` showed in the profile.
fn seq_key(prefix: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 21);
    k.extend_from_slice(prefix.as_bytes());
    k.push(b'/');
    let mut digits = [b'0'; 20];
    let mut v = seq;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
    k.extend_from_slice(&digits);
    k
}

/// Whether an error opening a store read-only says a file it listed was gone when it was
/// opened: a running engine's compaction removed it in between. RocksDB 10 reports a
/// missing table as `Corruption: ... IO error: No such file or directory ...` (the MANIFEST
/// "may be corrupted"), a missing MANIFEST or WAL as `IO error: No such file ...`; both
/// are read again. A table that is truly missing is still missing after the retries.
fn a_file_went_away(message: &str) -> bool {
    message.contains("No such file or directory")
}

impl Store {
    /// Opens (creating if missing) the store in `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // Level 0 uncompressed: its files are the memtables flushed, soon compacted into
        // the levels below (compressed), so compressing them, and decompressing them again
        // to compact them, was CPU spent on files that live minutes. Replay of 1M records:
        // 22.6-24.3 s against 25.3-25.5 s (BENCHMARKS.md, the twentieth round).
        {
            use rocksdb::DBCompressionType::{Lz4, None as Plain};
            opts.set_compression_per_level(&[Plain, Lz4, Lz4, Lz4, Lz4, Lz4, Lz4]);
        }
        opts.increase_parallelism(2);
        // Larger memtables, and level 0 compacted less often: a bulk load (an import of a
        // million members writes ~1.5 GB) spent a third of the engine's CPU compacting.
        opts.set_write_buffer_size(128 << 20);
        opts.set_max_write_buffer_number(4);
        opts.set_level_zero_file_num_compaction_trigger(8);
        opts.set_level_zero_slowdown_writes_trigger(24);
        opts.set_level_zero_stop_writes_trigger(40);
        opts.set_target_file_size_base(128 << 20);
        opts.set_max_bytes_for_level_base(1 << 30);
        // Bloom filters (10 bits a key): most lookups (was this record id seen, the payment
        // a record names) miss, and a miss then skips the tables that cannot hold the key.
        // Replay of 3M records: 119-121 s without, 108 s with (BENCHMARKS.md).
        // The same for the memtables: a whole-key bloom filter answers a lookup of an absent
        // key (an enrolment's new account, a new record id) without searching the skiplist.
        opts.set_memtable_whole_key_filtering(true);
        opts.set_memtable_prefix_bloom_ratio(0.05);
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        opts.set_block_based_table_factory(&table);
        // A state of another format is refused before it is opened for writing, which
        // would recover its write-ahead log into new files: it is left as it was.
        if path.join("CURRENT").exists() {
            let mut ro = Options::default();
            // Table files opened as the lookup needs them, not all at once.
            ro.set_max_open_files(32);
            let existing = DB::open_for_read_only(&ro, path, false)?;
            check_format(&existing, false)?;
        }
        let db = DB::open(&opts, path)?;
        check_format(&db, true)?;
        let next = next_seq(&db)?;
        Ok(Store {
            db,
            next_seq: std::sync::atomic::AtomicU64::new(next),
            batch_bytes: std::sync::atomic::AtomicUsize::new(0),
            spare: std::sync::Mutex::new(None),
            recorded: std::sync::Mutex::new(None),
            tier_places: Default::default(),
            sync: true,
            wal: true,
            read_only: false,
            written: None,
        })
    }

    /// Opens an existing store read-only, as it is at this moment, so that `loyalty export`,
    /// `verify` and `checkpoint` can read a consistent view beside a running engine.
    ///
    /// RocksDB's read-only mode, not a secondary instance: a secondary recovers "to a point
    /// in time", and silently leaves out a table file it cannot open (and every change
    /// after it), so a state with one damaged file read as an older, smaller state. Read-only
    /// mode opens every table file now (`max_open_files = -1`: each footer and index is read)
    /// and fails, naming the file, when one cannot be opened.
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        // RocksDB would create the directory (for its info log) before finding no state in
        // it, leaving an empty directory behind that looks like a state.
        if !path.join("CURRENT").exists() {
            return Err(StoreError::NoState {
                path: path.display().to_string(),
            });
        }
        let mut opts = Options::default();
        opts.set_max_open_files(-1);
        opts.set_paranoid_checks(true);
        let mut attempts = 0;
        let db = loop {
            match DB::open_for_read_only(&opts, path, false) {
                Ok(db) => break db,
                // A running engine's compaction removed a file between the read of the
                // file list and the file's opening: the next read lists the new files.
                Err(e) if attempts < 20 && a_file_went_away(e.as_ref()) => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(e.into()),
            }
        };
        check_format(&db, false)?;
        let next = next_seq(&db)?;
        Ok(Store {
            db,
            next_seq: std::sync::atomic::AtomicU64::new(next),
            batch_bytes: std::sync::atomic::AtomicUsize::new(0),
            spare: std::sync::Mutex::new(None),
            recorded: std::sync::Mutex::new(None),
            tier_places: Default::default(),
            sync: false,
            wal: true,
            read_only: true,
            written: None,
        })
    }

    /// Turns the per-batch WAL sync off (for replay into a fresh directory, which can be
    /// redone from the log if the machine fails).
    pub fn set_sync(&mut self, sync: bool) {
        self.sync = sync;
    }

    /// Keeps, in memory, which seen ids, payments and accounts this process writes (Bloom
    /// filters, 2 to 4 bytes an id), so that looking up one never written (most are: a new
    /// record's id, a new payment, a new member's account) reads nothing from RocksDB.
    /// Only for a store that holds none yet, all of whose ids then go through
    /// [`Store::commit`] (replay into a new directory); otherwise it is left off. Whether
    /// it is on.
    pub fn track_written(&mut self) -> Result<bool, StoreError> {
        for prefix in ["s/", "p/", "a/"] {
            if let Some(first) = self.prefix(prefix).next() {
                first?;
                return Ok(false);
            }
        }
        self.written = Some(std::sync::Mutex::new(written::Written::new()));
        Ok(true)
    }

    /// False when the store kept which ids it wrote ([`Store::track_written`]) and
    /// `prefix` + `id` is not one of them.
    fn may_hold(&self, prefix: &[u8], id: &str) -> bool {
        match &self.written {
            None => true,
            // A poisoned lock (a panic while adding): no longer known.
            Some(w) => w.lock().map_or(true, |w| w.may_hold(prefix, id)),
        }
    }

    /// Writes batches without the write-ahead log (for replay into a fresh directory: a
    /// crash loses the batches not yet flushed to tables, and an interrupted replay is
    /// started again anyway). Call [`Store::flush`] at the end.
    pub fn set_wal(&mut self, wal: bool) {
        self.wal = wal;
    }

    /// Writes everything in memory to tables.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    fn prefix(&self, prefix: &str) -> impl Iterator<Item = Result<KeyValue, StoreError>> + '_ {
        let p = prefix.as_bytes().to_vec();
        self.db
            .iterator(IteratorMode::From(&p.clone(), Direction::Forward))
            .map(|r| r.map_err(StoreError::from))
            .take_while(move |r| r.as_ref().map_or(true, |(k, _)| k.starts_with(&p)))
    }

    /// [`Store::prefix`], for a read of every key once (`verify`): the blocks are read ahead
    /// and not kept in the block cache (where they would only push each other out).
    fn prefix_once(&self, prefix: &str) -> impl Iterator<Item = Result<KeyValue, StoreError>> + '_ {
        let p = prefix.as_bytes().to_vec();
        self.db
            .iterator_opt(
                IteratorMode::From(&p.clone(), Direction::Forward),
                read_once(),
            )
            .map(|r| r.map_err(StoreError::from))
            .take_while(move |r| r.as_ref().map_or(true, |(k, _)| k.starts_with(&p)))
    }

    /// Calls `f` with every stored key and value, in key order (for tools and benchmarks).
    pub fn for_each_entry(&self, mut f: impl FnMut(&[u8], &[u8])) -> Result<(), StoreError> {
        for kv in self.db.iterator(IteratorMode::Start) {
            let (k, v) = kv?;
            f(&k, &v);
        }
        Ok(())
    }

    /// Writes a consistent copy of the store into `to`, which must not exist. On a store
    /// opened for writing, a RocksDB checkpoint (hard links to the immutable files where `to`
    /// is on the same file system); on a read-only view of a running engine's directory
    /// (where RocksDB cannot checkpoint), a copy of every key as of one point in time.
    /// Either way every key of the copy is read back (every block's checksum checked) before
    /// it is called a checkpoint: a damaged file fails the checkpoint, naming the file, and
    /// leaves nothing at `to`.
    pub fn checkpoint(&self, to: &Path) -> Result<(), StoreError> {
        // Into a scratch directory first, renamed when complete and read back: an
        // interrupted or damaged copy never looks like a checkpoint. (`out/` is `out`.)
        let to = to.components().as_path();
        let mut scratch = to.as_os_str().to_owned();
        scratch.push(".partial");
        let scratch = std::path::PathBuf::from(scratch);
        let _ = std::fs::remove_dir_all(&scratch);
        let made = self
            .copy_to(&scratch)
            .and_then(|()| Store::open_read_only(&scratch)?.read_every_key());
        if let Err(e) = made {
            let _ = std::fs::remove_dir_all(&scratch);
            return Err(e);
        }
        std::fs::rename(&scratch, to)
            .map_err(|e| corrupt(b"", format!("cannot rename {}: {e}", scratch.display())))?;
        Ok(())
    }

    fn copy_to(&self, to: &Path) -> Result<(), StoreError> {
        if !self.read_only {
            let cp = rocksdb::checkpoint::Checkpoint::new(&self.db)?;
            cp.create_checkpoint(to)?;
            return Ok(());
        }
        let copy = Store::open(to)?;
        let mut wb = WriteBatch::default();
        // One iterator: an implicit snapshot, so the copy is one consistent state.
        for kv in self.db.iterator(IteratorMode::Start) {
            let (k, v) = kv?;
            wb.put(k, v);
            if wb.len() >= 10_000 {
                copy.db.write(std::mem::take(&mut wb))?;
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        copy.db.write_opt(wb, &wo)?;
        copy.db.flush()?;
        Ok(())
    }

    /// Reads every key and value once, without filling the block cache: every block of
    /// every table is read and its checksum checked.
    pub fn read_every_key(&self) -> Result<(), StoreError> {
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_verify_checksums(true);
        ro.fill_cache(false);
        for kv in self.db.iterator_opt(IteratorMode::Start, ro) {
            kv?;
        }
        Ok(())
    }

    /// Loads the engine's whole state.
    pub fn load_engine(&self) -> Result<Engine, StoreError> {
        self.load(true)
    }

    /// Loads the engine's state without the seen ids and the payments, which grow with
    /// every record: a folder looks up the few a record needs ([`Store::is_seen`],
    /// [`Store::payment`]) before applying it, and the engine forgets them once they are
    /// committed (`loyalty_core::working_set::WorkingSet`).
    pub fn load_engine_lean(&self) -> Result<Engine, StoreError> {
        self.load(false)
    }

    /// Whether a record id was applied (or refused) and committed.
    pub fn is_seen(&self, id: &str) -> Result<bool, StoreError> {
        if !self.may_hold(b"s/", id) {
            return Ok(false);
        }
        Ok(self.db.get_pinned(key_of("s/", id))?.is_some())
    }

    /// A committed payment, by its `data.id`.
    pub fn payment(&self, id: &str) -> Result<Option<PaymentRecord>, StoreError> {
        if !self.may_hold(b"p/", id) {
            return Ok(None);
        }
        let key = key_of("p/", id);
        match self.db.get_pinned(&key)? {
            Some(v) => decode_payment(&key, &v).map(Some),
            None => Ok(None),
        }
    }

    /// A committed account.
    pub fn account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        if !self.may_hold(b"a/", id) {
            return Ok(None);
        }
        let key = key_of("a/", id);
        match self.db.get_pinned(&key)? {
            Some(v) => decode_account(&key, &v).map(Some),
            None => Ok(None),
        }
    }

    /// Every committed account of a program, by id (a whole scan: for a program update or
    /// a period close, which concern every member).
    pub fn members(&self, program: &str) -> Result<Vec<Account>, StoreError> {
        let mut out = Vec::new();
        for kv in self.prefix("a/") {
            let (k, v) = kv?;
            let a = decode_account(&k, &v)?;
            if *a.program == *program {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// The committed holder of a referral code of a program.
    pub fn code_holder(&self, program: &str, code: &str) -> Result<Option<String>, StoreError> {
        let key = code_key(program, code);
        match self.db.get_pinned(&key)? {
            Some(v) => String::from_utf8(v.to_vec())
                .map(Some)
                .map_err(|e| corrupt(key.as_bytes(), e)),
            None => Ok(None),
        }
    }

    /// The due index entries after `after`, in time order, `(time, key, account)`: every
    /// one up to `to`, and up to `ahead` more. Returns them with the time up to which they
    /// are all there is (`i64::MAX` when the index ends).
    #[allow(clippy::type_complexity)]
    pub fn dues_from(
        &self,
        after: i64,
        to: i64,
        ahead: usize,
    ) -> Result<(Vec<(i64, Vec<u8>, String)>, i64), StoreError> {
        let mut out: Vec<(i64, Vec<u8>, String)> = Vec::new();
        let start = due_key(after.saturating_add(1), "");
        let iter = self
            .db
            .iterator(IteratorMode::From(&start, Direction::Forward));
        let mut extra = 0;
        for kv in iter {
            let (k, _) = kv?;
            if !k.starts_with(b"d/") {
                break;
            }
            let (at, account) = parse_due_key(&k).ok_or_else(|| corrupt(&k, "bad due key"))?;
            if at > to {
                if extra == ahead {
                    // Complete up to the time before this entry's: drop the ones read at
                    // its time, which the next read starts with.
                    let complete = at - 1;
                    while out.last().is_some_and(|(t, _, _)| *t > complete) {
                        out.pop();
                    }
                    return Ok((out, complete.max(to)));
                }
                extra += 1;
            }
            out.push((at, k.to_vec(), account.to_string()));
        }
        Ok((out, i64::MAX))
    }

    /// Writes the due index and the referral codes of every stored account when they are not
    /// whole: in a new store (at once, there being no account), and in a state an earlier
    /// version committed to after a rollback (it opens the state, not knowing `m/format`,
    /// and does not keep these keys). The codes go to the smallest account id that has one,
    /// as the engine resolves a shared code.
    pub fn ensure_index(&self) -> Result<(), StoreError> {
        let marked = self.db.get(INDEX_KEY)?;
        let positions = index_mark(&self.log_positions()?);
        if marked.as_deref() == Some(positions.as_bytes()) {
            return Ok(());
        }
        let mut stale = WriteBatch::default();
        if marked.is_some() {
            // A version that does not keep the indexes (nor the overdue effects, which it
            // did not carry out) committed after the last one that did: a rollback and
            // back. They are rebuilt from the accounts.
            tracing::warn!(
                "the state's indexes are marked whole up to other log positions than its \
                 own; rebuilding them"
            );
            stale.delete(OVERDUE_KEY);
        }
        for prefix in ["d/", "r/"] {
            for kv in self.prefix(prefix) {
                stale.delete(kv?.0);
                if stale.len() >= 100_000 {
                    self.db.write(std::mem::take(&mut stale))?;
                }
            }
        }
        self.db.write(stale)?;
        let clock = match self.db.get(b"m/clock")? {
            Some(v) => Some(Timestamp(parse_u64(b"m/clock", &v)? as i64)),
            None => None,
        };
        let mut wb = WriteBatch::default();
        let mut codes = std::collections::HashSet::new();
        let mut n = 0usize;
        for kv in self.prefix("a/") {
            let (k, v) = kv?;
            let a = decode_account(&k, &v)?;
            if let Some(at) = next_due(&a, clock) {
                wb.put(due_key(at, &a.id), b"");
            }
            // Keys come in account id order: the first holder of a code is the smallest.
            let key = code_key(&a.program, &a.referral_code);
            if codes.insert(key.clone()) {
                wb.put(key, a.id.as_bytes());
            }
            n += 1;
            if wb.len() > 100_000 {
                self.db.write(std::mem::take(&mut wb))?;
            }
        }
        wb.put(INDEX_KEY, positions.as_bytes());
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(wb, &wo)?;
        if n > 0 {
            tracing::info!(accounts = n, "indexed the due effects and referral codes");
        }
        Ok(())
    }

    fn load(&self, whole: bool) -> Result<Engine, StoreError> {
        let mut state = State::default();
        for kv in self.prefix("a/").take_while(|_| whole) {
            let (k, v) = kv?;
            let a = decode_account(&k, &v)?;
            state.accounts.insert(a.id.clone(), Box::new(a));
        }
        for kv in self.prefix("p/").take_while(|_| whole) {
            let (k, v) = kv?;
            let p = decode_payment(&k, &v)?;
            state
                .payments
                .insert(String::from_utf8_lossy(&k[2..]).into_owned(), p.pack());
        }
        for kv in self.prefix("s/").take_while(|_| whole) {
            let (k, _) = kv?;
            state.seen.insert(String::from_utf8_lossy(&k[2..]).into());
        }
        if let Some(v) = self.db.get(b"m/programs")? {
            let p: StoredPrograms =
                serde_json::from_slice(&v).map_err(|e| corrupt(b"m/programs", e))?;
            for id in &p.order {
                let text = p
                    .texts
                    .get(id)
                    .ok_or_else(|| corrupt(b"m/programs", format!("no text for {id}")))?;
                let prog = parse_program(text).map_err(|e| corrupt(b"m/programs", e))?;
                state.programs.push(Arc::new(prog));
            }
            state.program_texts = p.texts;
            state.program_revisions = p.revisions;
        }
        if let Some(v) = self.db.get(b"m/stock")? {
            let stock: Vec<((String, String), i64)> =
                serde_json::from_slice(&v).map_err(|e| corrupt(b"m/stock", e))?;
            state.stock_used = stock.into_iter().collect();
        }
        if let Some(v) = self.db.get(b"m/clock")? {
            state.clock = Some(Timestamp(parse_u64(b"m/clock", &v)? as i64));
        }
        self.load_flows(&mut state)?;
        let mut engine = Engine::from_state(state);
        engine.restore_overdue(self.overdue()?);
        Ok(engine)
    }

    /// What the flows across partitions keep between their steps (few entries: one for
    /// each redemption waiting for stock, each referee not yet converted, each code of the
    /// partition's share), read whole into the engine's state.
    fn load_flows(&self, state: &mut State) -> Result<(), StoreError> {
        for kv in self.prefix("f/h/") {
            let (k, v) = kv?;
            let hold = serde_json::from_slice(&v).map_err(|e| corrupt(&k, e))?;
            let id = String::from_utf8(k[4..].to_vec()).map_err(|e| corrupt(&k, e))?;
            state.holds.insert(id, hold);
        }
        for kv in self.prefix("f/c/") {
            let (k, v) = kv?;
            let id = String::from_utf8(k[4..].to_vec()).map_err(|e| corrupt(&k, e))?;
            let code = String::from_utf8(v.to_vec()).map_err(|e| corrupt(&k, e))?;
            state.pending_codes.insert(id, code);
        }
        for kv in self.prefix("f/k/") {
            let (k, v) = kv?;
            let entry: StoredCode = serde_json::from_slice(&v).map_err(|e| corrupt(&k, e))?;
            let key = (entry.program, entry.code);
            if let Some(holder) = entry.holder {
                state.code_holders.insert(key.clone(), holder);
            }
            if !entry.parked.is_empty() {
                let parked = entry.parked.into_iter();
                state
                    .parked
                    .insert(key, parked.map(|(at, m)| (Timestamp(at), m)).collect());
            }
        }
        Ok(())
    }

    /// The effects overdue when the state was committed ([`Engine::overdue`]).
    pub fn overdue(&self) -> Result<Vec<Due>, StoreError> {
        match self.db.get(OVERDUE_KEY)? {
            Some(v) => serde_json::from_slice(&v).map_err(|e| corrupt(OVERDUE_KEY, e)),
            None => Ok(Vec::new()),
        }
    }

    /// The next log offset to fold, by log partition (what the indexes' mark holds).
    fn log_positions(&self) -> Result<BTreeMap<i32, i64>, StoreError> {
        let mut log = BTreeMap::new();
        for kv in self.prefix("m/log/") {
            let (k, v) = kv?;
            let part = parse_i32(&k, &k[6..])?;
            log.insert(part, parse_u64(&k, &v)? as i64);
        }
        Ok(log)
    }

    /// The stored positions.
    pub fn positions(&self) -> Result<Positions, StoreError> {
        let mut p = Positions {
            log: self.log_positions()?,
            ..Positions::default()
        };
        for kv in self.prefix("m/src/") {
            let (k, v) = kv?;
            let rest = String::from_utf8_lossy(&k[6..]).into_owned();
            let (lp, rest) = rest.split_once('/').ok_or_else(|| corrupt(&k, "bad key"))?;
            let (topic, part) = rest
                .rsplit_once('/')
                .ok_or_else(|| corrupt(&k, "bad key"))?;
            let lp: i32 = lp.parse().map_err(|e| corrupt(&k, e))?;
            let part: i32 = part.parse().map_err(|e| corrupt(&k, e))?;
            p.src
                .insert((lp, topic.to_string(), part), parse_u64(&k, &v)? as i64);
        }
        for kv in self.prefix("m/in/") {
            let (k, v) = kv?;
            let rest = String::from_utf8_lossy(&k[5..]).into_owned();
            let (topic, part) = rest
                .rsplit_once('/')
                .ok_or_else(|| corrupt(&k, "bad key"))?;
            let part: i32 = part.parse().map_err(|e| corrupt(&k, e))?;
            p.input
                .insert((topic.to_string(), part), parse_u64(&k, &v)? as i64);
        }
        Ok(p)
    }

    /// Writes a batch of folded records atomically.
    pub fn commit(&self, engine: &Engine, batch: Batch) -> Result<(), StoreError> {
        let prepared = self.prepare(engine, batch)?;
        self.write(prepared)
    }

    /// Makes a batch of folded records ready to write: takes what it needs of the engine
    /// (the accounts, codes, payments and programs the batch changed, the due index entries
    /// of its accounts, the tiers), so that the engine can go on while it is written. It
    /// reads nothing from the store, so the batch before may still be being written; the
    /// [`Store::write`]s must be in the order of the batches.
    pub fn prepare(&self, engine: &Engine, batch: Batch) -> Result<Prepared, StoreError> {
        let state = engine.state();
        let spare = self.spare.lock().ok().and_then(|mut s| s.take());
        let mut wb = spare.unwrap_or_else(|| {
            let room = self.batch_bytes.load(std::sync::atomic::Ordering::Relaxed);
            Writes::with_capacity(room + room / 8)
        });
        let mut dues = Vec::new();
        let c = &batch.changes;
        for id in &c.accounts {
            if let Some(a) = state.accounts.get(id) {
                wb.put(key_of("a/", id), encode_account(a)?);
            }
        }
        // The due index: each account changed, or whose entry the clock passed, is found
        // again by its next effect. (An entry left behind when an effect moves later loads
        // the account for nothing, once, and is then replaced.)
        for key in &batch.dues_passed {
            wb.delete(key);
        }
        let passed = batch
            .dues_passed
            .iter()
            .filter_map(|k| parse_due_key(k).map(|(_, id)| id));
        let mut indexed: std::collections::HashSet<&str, loyalty_core::state::FixedState> =
            std::collections::HashSet::default();
        for id in c.accounts.iter().map(|id| &**id).chain(passed) {
            if !indexed.insert(id) {
                continue;
            }
            if let Some(at) = state
                .accounts
                .get(id)
                .and_then(|a| next_due(a, state.clock))
            {
                let key = due_key(at, id);
                wb.put(&key, b"");
                dues.push((at, key, str::to_owned(id)));
            }
        }
        for (program, code) in &c.codes {
            if let Some(holder) = state.referral_codes.get(&(program.clone(), code.clone())) {
                wb.put(code_key(program, code), holder.as_bytes());
            }
        }
        for id in &c.payments {
            if let Some(p) = state.payments.get(id) {
                wb.put(key_of("p/", id), encode_payment(p));
            }
        }
        for id in &c.seen {
            wb.put(key_of("s/", id), b"");
        }
        // Noted before the batch is written: a lookup meanwhile goes on to RocksDB, as it
        // would without the filter (the working set holds what is being written). A
        // poisoned lock answers "maybe" to every lookup ([`Store::may_hold`]).
        if let Some(Ok(mut w)) = self.written.as_ref().map(|w| w.lock()) {
            for id in &c.payments {
                w.add(b"p/", id);
            }
            for id in &c.seen {
                w.add(b"s/", id);
            }
            for id in c
                .accounts
                .iter()
                .filter(|id| state.accounts.contains_key(*id))
            {
                w.add(b"a/", id);
            }
        }
        if c.programs {
            let p = StoredPrograms {
                order: state.programs.iter().map(|p| p.id.to_string()).collect(),
                texts: state.program_texts.clone(),
                revisions: state.program_revisions.clone(),
            };
            let v = serde_json::to_vec(&p).map_err(|e| corrupt(b"m/programs", e))?;
            wb.put(b"m/programs", v);
        }
        if c.rewards {
            let stock: Vec<(&(String, String), &i64)> = state.stock_used.iter().collect();
            let v = serde_json::to_vec(&stock).map_err(|e| corrupt(b"m/stock", e))?;
            wb.put(b"m/stock", v);
        }
        for key in &c.flows {
            put_flow(&mut wb, state, key)?;
        }
        if let (true, Some(clock)) = (c.clock, state.clock) {
            wb.put(b"m/clock", (clock.0 as u64).to_be_bytes());
        }
        let overdue = engine.overdue();
        if overdue.is_empty() {
            wb.delete(OVERDUE_KEY);
        } else {
            let v = serde_json::to_vec(&overdue).map_err(|e| corrupt(OVERDUE_KEY, e))?;
            wb.put(OVERDUE_KEY, v);
        }
        // The accounts' tiers, for the API's tier index: the rest is written from the batch
        // alone ([`Store::write`]).
        let tiers = c
            .accounts
            .iter()
            .filter_map(|id| state.accounts.get(id))
            .map(|a| api::TierOf {
                id: a.id.clone(),
                program: a.program.clone(),
                tier: a.tier.as_deref().map(str::to_string),
            })
            .collect();
        Ok(Prepared {
            writes: wb,
            tiers,
            batch,
            dues,
        })
    }

    /// Writes a prepared batch atomically (synced unless [`Store::set_sync`] said not): what
    /// [`Store::prepare`] took from the engine, and what the batch's lines call for, which is
    /// written here, on top of the batches written before (their sequence numbers,
    /// statistics, index runs and tiers).
    pub fn write(&self, prepared: Prepared) -> Result<(), StoreError> {
        self.write_back(prepared).map(drop)
    }

    /// [`Store::write`], handing the batch back once written instead of dropping it: a
    /// caller that writes on another thread frees its lines and messages on the thread
    /// that made them (which reuses their memory at once), and may keep its vectors' room
    /// for the next batch.
    pub fn write_back(&self, prepared: Prepared) -> Result<Batch, StoreError> {
        let Prepared {
            writes: mut wb,
            tiers,
            mut batch,
            ..
        } = prepared;
        batch.render();
        let Batch {
            lines,
            index,
            outbox,
            log: positions,
            src,
            config,
            ..
        } = &batch;
        let mut seq = self.next_seq.load(std::sync::atomic::Ordering::SeqCst);
        let first_line = seq;
        let mut stats = StatDeltas::default();
        let mut runs = api::RecordRuns::default();
        if let Some(record) = index.first().and_then(|ix| ix.record.as_deref()) {
            runs.resume(&self.db, record, seq)?;
        }
        for (i, line) in lines.iter().enumerate() {
            wb.put(seq_key("o", seq), line.as_bytes());
            if let Some(ix) = index.get(i) {
                api::put_line_index(&mut wb, &mut runs, seq, ix);
                if let Some(s) = &ix.stat {
                    stats.add_line(s);
                }
            }
            seq += 1;
        }
        runs.finish(&mut wb);
        for entry in outbox {
            // An event's message is its line's envelope: kept as a reference to the line,
            // not a second copy (a third of the bytes an enrolment wrote).
            let line = match entry.line {
                Some(i) if entry.payload.is_empty() => match lines.get(i) {
                    Some(l) if l.as_bytes().starts_with(EVENT_LINE) => Some(first_line + i as u64),
                    _ => {
                        return Err(StoreError::Corrupt {
                            key: String::from_utf8_lossy(&seq_key("x", seq)).into_owned(),
                            why: format!("the outbox entry publishes line {i}, not an event's"),
                        })
                    }
                },
                Some(i) => lines
                    .get(i)
                    .filter(|l| is_envelope_of(&entry.payload, l.as_bytes()))
                    .map(|_| first_line + i as u64),
                None => None,
            };
            wb.put(seq_key("x", seq), encode_outbox(entry, line));
            seq += 1;
        }
        wb.put(SEQ_KEY, seq.to_be_bytes());
        // Read under the lock, noted once written: the writes are one at a time anyway. A
        // poisoned lock knows nothing, and reads every account's place back.
        let mut places = self.tier_places.lock().ok();
        let nothing = api::TierPlaces::default();
        let moved = api::put_tier_index(
            &self.db,
            &mut wb,
            &tiers,
            &mut stats,
            places.as_deref().unwrap_or(&nothing),
        )?;
        stats.write(&self.db, &mut wb)?;
        for (part, off) in positions {
            wb.put(format!("m/log/{part}"), (*off as u64).to_be_bytes());
        }
        // The indexes are whole up to these positions (an earlier version commits without
        // them, and leaves the mark behind).
        let mut log = self.log_positions()?;
        log.extend(positions.iter().map(|(p, o)| (*p, *o)));
        wb.put(INDEX_KEY, index_mark(&log).as_bytes());
        wb.put(api::API_INDEX_KEY, api::api_index_mark(&log).as_bytes());
        for ((lp, topic, part), off) in src {
            wb.put(
                format!("m/src/{lp}/{topic}/{part}"),
                (*off as u64).to_be_bytes(),
            );
        }
        if let Some(digest) = config {
            wb.put(CONFIG_KEY, digest.as_bytes());
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(self.sync && self.wal);
        wo.disable_wal(!self.wal);
        self.batch_bytes
            .store(wb.size(), std::sync::atomic::Ordering::Relaxed);
        let sorted = wb.sorted_batch();
        let copy = match self.recorded.lock() {
            Ok(recorded) if recorded.is_some() => Some(sorted.data().to_vec()),
            _ => None,
        };
        self.db.write_opt(sorted, &wo)?;
        if let Some(places) = places.as_mut() {
            places.note(moved);
        }
        if let (Some(copy), Ok(mut recorded)) = (copy, self.recorded.lock()) {
            if let Some(batches) = recorded.as_mut() {
                batches.push(copy);
            }
        }
        self.next_seq
            .store(seq, std::sync::atomic::Ordering::SeqCst);
        wb.clear();
        if let Ok(mut spare) = self.spare.lock() {
            *spare = Some(wb);
        }
        Ok(batch)
    }

    /// Keeps a copy of every batch [`Store::write`] writes from now on (in RocksDB's own
    /// serialization of a write batch), until [`Store::recorded_batches`] takes them. For
    /// benchmarks: their physical reference writes exactly these batches, the same keys
    /// and bytes in the same groups, into RocksDB alone.
    pub fn record_batches(&self) {
        if let Ok(mut recorded) = self.recorded.lock() {
            recorded.get_or_insert_with(Vec::new);
        }
    }

    /// The batches written since [`Store::record_batches`] (none if it was not called), in
    /// the order written; recording stops.
    pub fn recorded_batches(&self) -> Vec<Vec<u8>> {
        match self.recorded.lock() {
            Ok(mut recorded) => recorded.take().unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    /// The digest of the `--config` file last applied to the log, if any.
    pub fn config_digest(&self) -> Result<Option<String>, StoreError> {
        match self.db.get(CONFIG_KEY)? {
            Some(v) => String::from_utf8(v)
                .map(Some)
                .map_err(|e| corrupt(CONFIG_KEY, e)),
            None => Ok(None),
        }
    }

    /// The partition count of the log this state is one partition of (`m/partitions`),
    /// once an instance of a group has written it.
    pub fn partition_count(&self) -> Result<Option<i32>, StoreError> {
        match self.db.get(PARTITIONS_KEY)? {
            Some(v) => parse_i32(PARTITIONS_KEY, &v).map(Some),
            None => Ok(None),
        }
    }

    /// Records the partition count of the log this state is one partition of.
    pub fn set_partition_count(&self, count: i32) -> Result<(), StoreError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(self.sync);
        self.db
            .put_opt(PARTITIONS_KEY, count.to_string().as_bytes(), &wo)?;
        Ok(())
    }

    /// Records that the `--config` file with this digest was applied (its programs all
    /// equal the state's, so nothing entered the log).
    pub fn set_config_digest(&self, digest: &str) -> Result<(), StoreError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(self.sync);
        self.db.put_opt(CONFIG_KEY, digest.as_bytes(), &wo)?;
        Ok(())
    }

    /// Stores the sequencer's next input offsets.
    pub fn store_input_offsets(
        &self,
        offsets: &BTreeMap<(String, i32), i64>,
    ) -> Result<(), StoreError> {
        let mut wb = WriteBatch::default();
        for ((topic, part), off) in offsets {
            wb.put(format!("m/in/{topic}/{part}"), (*off as u64).to_be_bytes());
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(self.sync);
        self.db.write_opt(wb, &wo)?;
        Ok(())
    }

    /// The sequence number the next line or outbox entry committed will get: every entry
    /// committed so far has a smaller one.
    pub fn next_sequence(&self) -> u64 {
        self.next_seq.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Every outbox entry, in order.
    pub fn outbox(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        self.outbox_from(0, usize::MAX)
    }

    /// The first `limit` outbox entries numbered `from` or more, in order. A publisher that
    /// remembers where it stopped seeks past the entries it removed instead of stepping over
    /// their tombstones.
    pub fn outbox_from(&self, from: u64, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut out = Vec::new();
        let start = seq_key("x", from);
        let iter = self
            .db
            .iterator(IteratorMode::From(&start, Direction::Forward))
            .map(|r| r.map_err(StoreError::from))
            .take_while(|r| r.as_ref().map_or(true, |(k, _)| k.starts_with(b"x/")))
            .take(limit);
        for kv in iter {
            let (k, v) = kv?;
            let seq: u64 = std::str::from_utf8(&k[2..])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| corrupt(&k, "bad sequence"))?;
            let (mut entry, line) =
                decode_outbox(seq, &v).ok_or_else(|| corrupt(&k, "bad outbox entry"))?;
            if let Some(line) = line {
                entry.payload = self.envelope_at(line).map_err(|why| corrupt(&k, why))?;
            }
            out.push(entry);
        }
        Ok(out)
    }

    /// The envelope that the output line `seq` (an event's) publishes, or why there is none.
    fn envelope_at(&self, seq: u64) -> Result<Vec<u8>, String> {
        let line = self
            .db
            .get_pinned(seq_key("o", seq))
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("its line {seq} is missing"))?;
        envelope_of(&line).ok_or_else(|| format!("its line {seq} is not an event"))
    }

    /// Removes delivered outbox entries.
    pub fn remove_outbox(&self, seqs: &[u64]) -> Result<(), StoreError> {
        let mut wb = WriteBatch::default();
        for s in seqs {
            wb.delete(seq_key("x", *s));
        }
        self.db.write(wb)?;
        Ok(())
    }

    /// Prints the state as `loyalty fold` prints it: the output lines in order, then the
    /// accounts sorted by id.
    pub fn export(&self, mut emit: impl FnMut(&str)) -> Result<(), StoreError> {
        for kv in self.prefix("o/") {
            let (k, v) = kv?;
            let line = std::str::from_utf8(&v).map_err(|e| corrupt(&k, e))?;
            emit(line);
        }
        // As the fold does at the end of the log: effects already due at the clock (kept
        // in `m/overdue`) are carried out, on this copy only, before the accounts.
        let mut engine = self.load_engine()?;
        if let Some(clock) = engine.clock() {
            let mut out = Vec::new();
            engine
                .advance_to(clock, &mut out)
                .map_err(|e| corrupt(b"m/clock", e))?;
            for o in &out {
                emit(&o.to_json_line());
            }
        }
        for a in engine.accounts() {
            emit(&a.to_json_line());
        }
        Ok(())
    }
}

/// A referral code's entry of the flows' state (`f/k/`).
#[derive(Serialize, Deserialize)]
struct StoredCode {
    program: String,
    code: String,
    /// Its holder's customer and account.
    holder: Option<(String, String)>,
    /// Conversions waiting for the claim, with their times.
    parked: Vec<(i64, loyalty_core::envelope::ReferralMessage)>,
}

/// Writes one key of the flows' state as `state` holds it, or removes it.
fn put_flow(wb: &mut Writes, state: &State, key: &FlowKey) -> Result<(), StoreError> {
    match key {
        FlowKey::Hold(id) => {
            let k = format!("f/h/{id}");
            match state.holds.get(id) {
                Some(h) => {
                    let v = serde_json::to_vec(h).map_err(|e| corrupt(k.as_bytes(), e))?;
                    wb.put(k, v);
                }
                None => wb.delete(k),
            }
        }
        FlowKey::Pending(id) => {
            let k = format!("f/c/{id}");
            match state.pending_codes.get(id) {
                Some(code) => wb.put(k, code.as_bytes()),
                None => wb.delete(k),
            }
        }
        FlowKey::Code(program, code) => {
            let k = format!("f/k/{program}\0{code}");
            let key = (program.clone(), code.clone());
            let entry = StoredCode {
                program: program.clone(),
                code: code.clone(),
                holder: state.code_holders.get(&key).cloned(),
                parked: state
                    .parked
                    .get(&key)
                    .map(|v| v.iter().map(|(at, m)| (at.0, m.clone())).collect())
                    .unwrap_or_default(),
            };
            if entry.holder.is_none() && entry.parked.is_empty() {
                wb.delete(k);
            } else {
                let v = serde_json::to_vec(&entry).map_err(|e| corrupt(k.as_bytes(), e))?;
                wb.put(k, v);
            }
        }
    }
    Ok(())
}

/// The next output sequence number a store holds.
fn next_seq(db: &DB) -> Result<u64, StoreError> {
    match db.get(SEQ_KEY)? {
        Some(v) => parse_u64(SEQ_KEY, &v),
        None => Ok(0),
    }
}

fn parse_u64(key: &[u8], v: &[u8]) -> Result<u64, StoreError> {
    let b: [u8; 8] = v
        .try_into()
        .map_err(|_| corrupt(key, "not an 8-byte number"))?;
    Ok(u64::from_be_bytes(b))
}

fn parse_i32(key: &[u8], v: &[u8]) -> Result<i32, StoreError> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| corrupt(key, "bad partition"))
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

/// An event's output line begins so; the envelope it publishes is the same line without
/// the `kind` field.
const EVENT_LINE: &[u8] = br#"{"kind":"event","#;

/// Whether `payload` is the envelope of the output line `line`.
fn is_envelope_of(payload: &[u8], line: &[u8]) -> bool {
    match (line.strip_prefix(EVENT_LINE), payload.split_first()) {
        (Some(rest), Some((b'{', tail))) => tail == rest,
        _ => false,
    }
}

/// The envelope an event's output line publishes, but for its first byte (`{`): the line
/// after its `{"kind":"event",` (None: not an event's line).
pub fn envelope_rest(line: &[u8]) -> Option<&[u8]> {
    line.strip_prefix(EVENT_LINE)
}

/// The envelope an event's output line publishes (None: not an event's line).
pub fn envelope_of(line: &[u8]) -> Option<Vec<u8>> {
    let rest = line.strip_prefix(EVENT_LINE)?;
    let mut out = Vec::with_capacity(rest.len() + 1);
    out.push(b'{');
    out.extend_from_slice(rest);
    Some(out)
}

/// The flags byte of a stored outbox entry: a message key follows.
const HAS_KEY: u8 = 1;
/// The flags byte: the payload is the envelope of the output line whose sequence number
/// follows (8 bytes), not the bytes themselves.
const LINE_REF: u8 = 2;

/// An outbox entry's stored form: the topic, a flags byte, the key, the payload (or the
/// sequence number of the line it is the envelope of, `line`), the headers, the partition.
fn encode_outbox(e: &OutboxEntry, line: Option<u64>) -> Vec<u8> {
    let payload_room = if line.is_some() { 12 } else { e.payload.len() };
    let mut out = Vec::with_capacity(payload_room + 128);
    put_bytes(&mut out, e.topic.as_bytes());
    let flags = e.key.as_ref().map_or(0, |_| HAS_KEY) | line.map_or(0, |_| LINE_REF);
    out.push(flags);
    if let Some(k) = &e.key {
        put_bytes(&mut out, k);
    }
    match line {
        Some(seq) => put_bytes(&mut out, &seq.to_be_bytes()),
        None => put_bytes(&mut out, &e.payload),
    }
    out.extend_from_slice(&(e.headers.len() as u32).to_be_bytes());
    for (k, v) in &e.headers {
        put_bytes(&mut out, k.as_bytes());
        put_bytes(&mut out, v);
    }
    // Last and optional: an entry written before partitions were named decodes as before.
    if let Some(p) = e.partition {
        out.extend_from_slice(&p.to_be_bytes());
    }
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn u32(&mut self) -> Option<u32> {
        let (head, rest) = self.0.split_first_chunk::<4>()?;
        self.0 = rest;
        Some(u32::from_be_bytes(*head))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        if self.0.len() < n {
            return None;
        }
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(b)
    }
    fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }
}

/// A stored outbox entry, and the sequence number of the line its payload is the envelope
/// of (the payload is then empty until read from that line, [`Store::outbox_from`]).
fn decode_outbox(seq: u64, v: &[u8]) -> Option<(OutboxEntry, Option<u64>)> {
    let mut r = Reader(v);
    let topic = String::from_utf8(r.bytes()?.to_vec()).ok()?;
    let flags = r.byte()?;
    if flags & !(HAS_KEY | LINE_REF) != 0 {
        return None;
    }
    let key = match flags & HAS_KEY {
        0 => None,
        _ => Some(r.bytes()?.to_vec()),
    };
    let (payload, line) = match flags & LINE_REF {
        0 => (r.bytes()?.to_vec(), None),
        _ => (
            Vec::new(),
            Some(u64::from_be_bytes(r.bytes()?.try_into().ok()?)),
        ),
    };
    let n = r.u32()?;
    let mut headers = Vec::new();
    for _ in 0..n {
        let k = String::from_utf8(r.bytes()?.to_vec()).ok()?;
        headers.push((k, r.bytes()?.to_vec()));
    }
    let partition = match r.0.len() {
        0 => None,
        _ => Some(r.u32()? as i32),
    };
    if !r.0.is_empty() {
        return None;
    }
    let entry = OutboxEntry {
        seq,
        topic,
        key,
        payload,
        headers,
        partition,
        line: None,
    };
    Some((entry, line))
}

/// The store is where a working set reads the accounts, seen ids, payments, codes and due
/// index entries its engine does not hold.
impl loyalty_core::working_set::Source for Store {
    type Error = StoreError;

    fn is_seen(&self, id: &str) -> Result<bool, StoreError> {
        Store::is_seen(self, id)
    }

    fn payment(&self, id: &str) -> Result<Option<PaymentRecord>, StoreError> {
        Store::payment(self, id)
    }

    fn account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        Store::account(self, id)
    }

    fn members(&self, program: &str) -> Result<Vec<Account>, StoreError> {
        Store::members(self, program)
    }

    fn code_holder(&self, program: &str, code: &str) -> Result<Option<String>, StoreError> {
        Store::code_holder(self, program, code)
    }

    fn dues_from(
        &self,
        after: i64,
        to: i64,
        ahead: usize,
    ) -> Result<(Vec<(i64, Vec<u8>, String)>, i64), StoreError> {
        Store::dues_from(self, after, to, ahead)
    }
}

/// The writes of one atomic batch, collected in Rust memory (a RocksDB `WriteBatch` cannot
/// move to another thread) and made into a `WriteBatch` in key order when written
/// ([`Writes::sorted_batch`]).
#[derive(Debug, Default)]
pub(crate) struct Writes {
    bytes: Vec<u8>,
    /// (the key's first bytes, key start, key length, value length or `None` for a
    /// delete); the value follows the key.
    ops: Vec<(u128, usize, usize, Option<usize>)>,
    /// Room for the batch in RocksDB's serialization ([`Writes::sorted_batch`]), kept from
    /// one batch to the next.
    rep: Vec<u8>,
}

impl Writes {
    fn with_capacity(bytes: usize) -> Writes {
        Writes {
            bytes: Vec::with_capacity(bytes),
            ops: Vec::with_capacity(bytes / 128),
            rep: Vec::new(),
        }
    }

    /// Sets `key` to `value`.
    pub(crate) fn put(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        let (key, value) = (key.as_ref(), value.as_ref());
        self.ops.push((
            key_head(key),
            self.bytes.len(),
            key.len(),
            Some(value.len()),
        ));
        self.bytes.extend_from_slice(key);
        self.bytes.extend_from_slice(value);
    }

    /// Removes `key`.
    pub(crate) fn delete(&mut self, key: impl AsRef<[u8]>) {
        let key = key.as_ref();
        self.ops
            .push((key_head(key), self.bytes.len(), key.len(), None));
        self.bytes.extend_from_slice(key);
    }

    /// Empties it, keeping its room.
    fn clear(&mut self) {
        self.bytes.clear();
        self.ops.clear();
        // The serialized batch is made again from the rest: its room is kept only while
        // modest (a replay's batches of 20,000 records, some 40 MB, and a program update's
        // of a million members, do not keep theirs: RocksDB holds a copy meanwhile).
        match self.rep.capacity() > 1 << 23 {
            true => self.rep = Vec::new(),
            false => self.rep.clear(),
        }
    }

    /// The bytes of the keys and values.
    fn size(&self) -> usize {
        self.bytes.len()
    }

    /// How many writes.
    pub(crate) fn len(&self) -> usize {
        self.ops.len()
    }

    /// The writes in the order made: a key, and its value (`None`: a delete).
    pub(crate) fn ops(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.ops.iter().map(|&(_, at, klen, vlen)| {
            let key = &self.bytes[at..at + klen];
            (key, vlen.map(|n| &self.bytes[at + klen..at + klen + n]))
        })
    }

    /// The writes in key order (a stable order: the writes of one key keep theirs, so the
    /// batch means the same). A memtable inserts a run of ordered keys from where the last
    /// one went instead of searching its skiplist from the top for each: a batch of an
    /// import's enrolments (some 35 keys a record, scattered over accounts, lines and
    /// indexes) spent a third of the folding thread in those searches.
    fn sorted_batch(&mut self) -> WriteBatch {
        let bytes = &self.bytes;
        // By key, then in the order written: stable sorts. First by the keys' first 16
        // bytes as one number, which tells most keys apart without reading them; then each
        // run of keys that share those by the rest of the key. Such runs (a batch's lines and
        // messages, under sequence numbers) mostly come in order already, which a stable
        // sort only checks.
        self.ops.sort_by_key(|op| op.0);
        let rest = |a: &(u128, usize, usize, Option<usize>),
                    b: &(u128, usize, usize, Option<usize>)| {
            let (ka, kb) = (&bytes[a.1..a.1 + a.2], &bytes[b.1..b.1 + b.2]);
            match ka.len() >= 16 && kb.len() >= 16 {
                true => ka[16..].cmp(&kb[16..]),
                // A shorter key's number is padded with zeros: "a" and "a\0" share it.
                false => ka.cmp(kb),
            }
        };
        for run in self.ops.chunk_by_mut(|a, b| a.0 == b.0) {
            if run.len() > 1 {
                run.sort_by(rest);
            }
        }
        // Written in RocksDB's own serialization of a batch (db/write_batch.cc: a fixed64
        // sequence number, which the write sets, a fixed32 count, then each record: a tag,
        // and its key and value as varint32-prefixed strings) and handed over whole: one
        // copy, where a call across the FFI for each write copied each (a tenth of the
        // writing thread).
        let fits = |n: usize| u32::try_from(n).is_ok();
        if !fits(self.ops.len()) || !fits(bytes.len()) {
            let mut out = WriteBatch::with_capacity_bytes(bytes.len() + 8 * self.ops.len());
            for &(_, at, klen, vlen) in &self.ops {
                let key = &bytes[at..at + klen];
                match vlen {
                    Some(n) => out.put(key, &bytes[at + klen..at + klen + n]),
                    None => out.delete(key),
                }
            }
            return out;
        }
        let rep = &mut self.rep;
        rep.clear();
        rep.reserve(12 + bytes.len() + 11 * self.ops.len());
        rep.extend_from_slice(&0u64.to_le_bytes());
        rep.extend_from_slice(&(self.ops.len() as u32).to_le_bytes());
        for &(_, at, klen, vlen) in &self.ops {
            let key = &bytes[at..at + klen];
            match vlen {
                Some(n) => {
                    rep.push(TYPE_VALUE);
                    put_varint32(rep, klen as u32);
                    rep.extend_from_slice(key);
                    put_varint32(rep, n as u32);
                    rep.extend_from_slice(&bytes[at + klen..at + klen + n]);
                }
                None => {
                    rep.push(TYPE_DELETION);
                    put_varint32(rep, klen as u32);
                    rep.extend_from_slice(key);
                }
            }
        }
        WriteBatch::from_data(rep)
    }
}

/// RocksDB's tags of a put and a delete in a serialized batch (`kTypeValue`,
/// `kTypeDeletion` of db/dbformat.h).
const TYPE_VALUE: u8 = 0x1;
const TYPE_DELETION: u8 = 0x0;

/// Appends `n` as a varint32 (RocksDB's `PutVarint32`: seven bits a byte, low first).
fn put_varint32(out: &mut Vec<u8>, mut n: u32) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A batch of folded records made ready to write ([`Store::prepare`]): everything taken
/// from the engine, so that it can be written on another thread while the engine folds the
/// next batch ([`Store::write`]).
#[derive(Debug)]
pub struct Prepared {
    writes: Writes,
    /// The tiers of the accounts the batch changed.
    tiers: Vec<api::TierOf>,
    /// The batch: its lines and what they call for are written by [`Store::write`].
    batch: Batch,
    /// The due index entries it writes, `(time, key, account)`: a working set that reads
    /// the index before the batch is written expects them
    /// ([`loyalty_core::working_set::WorkingSet::expect_dues`]).
    pub dues: Vec<(i64, Vec<u8>, String)>,
}

impl Prepared {
    /// The batch it writes: its lines and messages may still be finished (the messages'
    /// signatures, written on the thread that writes the batch) until it is written.
    pub fn batch_mut(&mut self) -> &mut Batch {
        &mut self.batch
    }
}

/// Read options for a scan that reads each key once: read ahead, not cached.
fn read_once() -> rocksdb::ReadOptions {
    let mut ro = rocksdb::ReadOptions::default();
    ro.fill_cache(false);
    ro.set_readahead_size(4 << 20);
    ro
}

/// A key's first 16 bytes (zeros after a shorter one's end) as a number: two keys whose
/// numbers differ are in that order; equal numbers need the whole keys compared.
pub(crate) fn key_head(key: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    let n = key.len().min(16);
    b[..n].copy_from_slice(&key[..n]);
    u128::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys sort as RocksDB orders them (bytewise) whatever their length and their first
    /// 16 bytes: those shorter than 16 bytes that end in zeros, and those that differ only
    /// after the 16th byte.
    #[test]
    fn a_batch_sorts_keys_bytewise() {
        struct Keys(Vec<Vec<u8>>);
        impl rocksdb::WriteBatchIterator for Keys {
            fn put(&mut self, key: &[u8], _: &[u8]) {
                self.0.push(key.to_vec());
            }
            fn delete(&mut self, key: &[u8]) {
                self.0.push(key.to_vec());
            }
        }
        let mut keys: Vec<Vec<u8>> = vec![
            b"a\0".to_vec(),
            b"a".to_vec(),
            b"a\0\0".to_vec(),
            b"o/00000000000000000010".to_vec(),
            b"o/00000000000000000009".to_vec(),
            b"o/0000000000000000".to_vec(),
            b"o/00000000000000".to_vec(),
            b"o/00000000000000\0".to_vec(),
            b"".to_vec(),
        ];
        let mut wb = Writes::default();
        for k in &keys {
            wb.put(k, b"v");
        }
        let mut seen = Keys(Vec::new());
        wb.sorted_batch().iterate(&mut seen);
        keys.sort();
        assert_eq!(seen.0, keys);
    }

    /// Sorting a batch keeps what it means: the writes of one key in their order (the last
    /// one wins), every key once in order.
    #[test]
    fn a_batch_in_key_order_means_the_same() {
        struct Seen(Vec<(Vec<u8>, Option<Vec<u8>>)>);
        impl rocksdb::WriteBatchIterator for Seen {
            fn put(&mut self, key: &[u8], value: &[u8]) {
                self.0.push((key.to_vec(), Some(value.to_vec())));
            }
            fn delete(&mut self, key: &[u8]) {
                self.0.push((key.to_vec(), None));
            }
        }
        let mut wb = Writes::default();
        wb.put(b"b", b"1");
        wb.put(b"a", b"1");
        wb.delete(b"b");
        wb.put(b"c", b"");
        wb.put(b"a", b"2");
        // Lengths of one, two and three bytes as varints.
        let long_key = vec![b'k'; 200];
        let long_value = vec![b'v'; 70_000];
        wb.put(&long_key, &long_value);
        wb.delete(&long_key);
        let mut seen = Seen(Vec::new());
        wb.sorted_batch().iterate(&mut seen);
        let op = |k: &[u8], v: Option<&[u8]>| (k.to_vec(), v.map(<[u8]>::to_vec));
        assert_eq!(
            seen.0,
            vec![
                op(b"a", Some(b"1")),
                op(b"a", Some(b"2")),
                op(b"b", Some(b"1")),
                op(b"b", None),
                op(b"c", Some(b"")),
                op(&long_key, Some(&long_value)),
                op(&long_key, None),
            ]
        );
    }

    /// The batch serialized here is byte for byte the one RocksDB's own `put` and `delete`
    /// make, for keys and values whose lengths take one to three varint bytes and for the
    /// empty ones; and RocksDB writes it.
    #[test]
    fn a_batch_serialized_here_is_rocksdbs_own() {
        let mut wb = Writes::default();
        let sizes = [0usize, 1, 127, 128, 300, 16_383, 16_384, 70_000];
        let mut expected = WriteBatch::default();
        for (i, &k) in sizes.iter().enumerate() {
            for &v in &sizes {
                let mut key = vec![b'k'; k];
                key.extend_from_slice(&[i as u8, (v % 251) as u8, (v / 251) as u8]);
                let value = vec![b'v'; v];
                wb.put(&key, &value);
                expected.put(&key, &value);
            }
            let gone = vec![b'g'; k];
            wb.delete(&gone);
        }
        let made = wb.sorted_batch();
        // RocksDB's batch of the same writes in the order sorted_batch puts them.
        let mut ordered = WriteBatch::default();
        for (key, value) in wb.ops() {
            match value {
                Some(v) => ordered.put(key, v),
                None => ordered.delete(key),
            }
        }
        assert_eq!(made.len(), sizes.len() * (sizes.len() + 1));
        assert_eq!(made.data(), ordered.data());
        assert_ne!(made.data(), expected.data(), "the writes were sorted");
        let dir = tmp("rep");
        let db = rocksdb::DB::open_default(&dir).unwrap();
        db.write(made).unwrap();
        assert_eq!(
            db.get(
                vec![b'k'; 300]
                    .into_iter()
                    .chain([4, 0, 0])
                    .collect::<Vec<_>>()
            )
            .unwrap(),
            Some(Vec::new())
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Both shapes of "a file was gone" from RocksDB 10's read-only open are read again;
    /// other errors are not.
    #[test]
    fn a_file_gone_during_open_is_read_again() {
        assert!(a_file_went_away(
            "Corruption: Corruption: IO error: No such file or directory: While open a file \
             for random read: /s/000046.sst: No such file or directory The file /s/MANIFEST-000005 \
             may be corrupted."
        ));
        assert!(a_file_went_away(
            "IO error: No such file or directory: While opening a file for sequentially \
             reading: /s/MANIFEST-000009: No such file or directory"
        ));
        assert!(!a_file_went_away(
            "Corruption: Bad table magic number: expected 9863518390377041911, found \
             9863518390377041909 in /s/000016.sst"
        ));
    }
    use loyalty_core::output::Output;

    fn tmp(label: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("loyalty-store-{}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// An account with something in every field.
    fn full_account() -> Account {
        let mut a = Account::new(
            "loy_1".into(),
            "prog_a".into(),
            "cus_é \"q\"".into(),
            Some("Gold".into()),
        );
        a.balance = -(1i128 << 80);
        a.ledger_hash = [0xab; 32];
        a.activity = [(-5, 3), (1_767_225_600, -7)].into_iter().collect();
        a.last_demotion = Some(-1);
        a.reset_at = Some(i64::MIN);
        a.tier_due = Some(i64::MAX);
        a.lots = vec![loyalty_core::lots::Lot {
            seq: u64::MAX,
            created: 1,
            expires: None,
            warn: Some(2),
            remaining: -3,
            transaction: loyalty_core::ids::TxRef::new("ptx_x"),
        }];
        a.debt = 4;
        a.next_lot = 5;
        a.redeemed.insert("rwd_a".into(), 6);
        a.referral_converted = true;
        a.birthday_due = Some(7);
        a.referred_by = Some("loy_0".into());
        a.birthday = Some((2, 29));
        a.stamps.insert("card".into(), 8);
        let u = a
            .rule_usage
            .get_or_insert_with("rule_a", |k| (k.into(), Default::default()));
        u.record(Timestamp(9), 10);
        a
    }

    #[test]
    fn sequence_keys_have_twenty_digits_and_sort_by_number() {
        assert_eq!(seq_key("o", 0), b"o/00000000000000000000");
        assert_eq!(seq_key("x", 42), b"x/00000000000000000042");
        assert_eq!(seq_key("o", u64::MAX), b"o/18446744073709551615");
        assert!(seq_key("x", 9) < seq_key("x", 10));
    }

    /// The stored bytes of [`full_account`], pinned: a change to `Account`'s fields (or to
    /// the types it holds) changes them, and stored accounts would no longer read.
    const FULL_ACCOUNT_BYTES: &str = "02abababababababababababababababababababababababababababababababab056c6f795f310670726f675f610a6375735fc3a920227122ffffffffffffffffffffff0f0104476f6c6402090680e4ad950d0d010101ffffffffffffffffff0101feffffffffffffffff0101ffffffffffffffffff010200010405057074785f78080501057277645f610c01010e08485358565457383801056c6f795f3001021d01046361726408010672756c655f610114011214";

    #[test]
    fn the_binary_account_form_is_pinned() {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let bytes = encode_account(&full_account()).unwrap();
        assert_eq!(
            hex(&bytes),
            FULL_ACCOUNT_BYTES,
            "the stored form of an account changed: give the state a new STATE_FORMAT, so \
             that a state of the old one is refused and rebuilt with replay"
        );
    }

    /// A payment is stored packed and read back whole; one an earlier version stored as
    /// JSON still reads; bytes of neither form, or packed bytes cut short, are refused as
    /// corrupt, naming the key.
    #[test]
    fn payments_round_trip_in_both_stored_forms() {
        let p = PaymentRecord {
            amount: 1200,
            currency: "EUR".into(),
            refunded: 300,
            created: 1_780_000_000,
            awards: vec![loyalty_core::state::AwardRecord {
                account: "loy_1".into(),
                rule: Some("rule_a".into()),
                campaigns: vec!["camp_é".into()],
                points: 12,
                reversed: 3,
                transaction: "ptx_1".into(),
                created: 1_780_000_000,
            }],
            spend_accounts: vec!["loy_1".into()],
        };
        let packed = encode_payment(&p.pack());
        assert_eq!(packed[0], PAYMENT_PACKED);
        let json = serde_json::to_vec(&p).unwrap();
        assert!(
            packed.len() * 2 < json.len(),
            "{} vs {}",
            packed.len(),
            json.len()
        );
        assert_eq!(decode_payment(b"p/x", &packed).unwrap(), p);
        assert_eq!(decode_payment(b"p/x", &json).unwrap(), p);
        for bad in [
            &b""[..],
            b"\x07abc",
            &packed[..packed.len() - 1],
            b"{\"amount\":",
        ] {
            match decode_payment(b"p/x", bad) {
                Err(StoreError::Corrupt { key, .. }) => assert_eq!(key, "p/x"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        // Through the store: both forms, as a record needs one and as a state loads.
        let dir = tmp("payments");
        let store = Store::open(&dir).unwrap();
        store.db.put(b"p/new", &packed).unwrap();
        store.db.put(b"p/old", &json).unwrap();
        assert_eq!(store.payment("new").unwrap(), Some(p.clone()));
        assert_eq!(store.payment("old").unwrap(), Some(p.clone()));
        assert_eq!(store.payment("none").unwrap(), None);
        let engine = store.load_engine().unwrap();
        let state = engine.state();
        assert_eq!(state.payments["new"].unpack(), p);
        assert_eq!(state.payments["old"].unpack(), p);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The stored bytes of a payment with something in every field, pinned: a change to
    /// what `PaymentRecord::pack` writes changes them, and stored payments would no longer
    /// read.
    #[test]
    fn the_stored_payment_form_is_pinned() {
        let p = PaymentRecord {
            amount: -1,
            currency: "EUR".into(),
            refunded: i64::MAX,
            created: i64::MIN,
            awards: vec![loyalty_core::state::AwardRecord {
                account: "loy_1".into(),
                rule: Some("rule_a".into()),
                campaigns: vec!["camp_é".into()],
                points: 300,
                reversed: 0,
                transaction: "ptx_1".into(),
                created: 1_780_000_000,
            }],
            spend_accounts: vec!["loy_1".into(), "loy_2".into()],
        };
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(
            hex(&encode_payment(&p.pack())),
            PINNED_PAYMENT,
            "the stored form of a payment changed: give the state a new STATE_FORMAT, so \
             that a state of the old one is refused and rebuilt with replay"
        );
        assert_eq!(
            decode_payment(b"p/x", &encode_payment(&p.pack())).unwrap(),
            p
        );
    }

    const PINNED_PAYMENT: &str = "010103455552feffffffffffffffff01ffffffffffffffffff0102056c6f795f31056c6f795f3201056c6f795f31010672756c655f61010763616d705fc3a9d80400057074785f318094c5a10d";

    /// A state of the format before this one opens: read-only as it is, and for writing
    /// marked as of this format (a version that reads only the previous one then refuses
    /// it at start, rather than stopping on a packed payment).
    #[test]
    fn a_state_of_the_previous_format_opens_and_is_marked_when_written() {
        let dir = tmp("previous_format");
        let format = |dir: &std::path::Path| {
            let db = DB::open_for_read_only(&Options::default(), dir, false).unwrap();
            db.get(FORMAT_KEY).unwrap()
        };
        {
            let store = Store::open(&dir).unwrap();
            store.db.put(FORMAT_KEY, PREVIOUS_FORMAT).unwrap();
        }
        assert_eq!(format(&dir).as_deref(), Some(PREVIOUS_FORMAT.as_bytes()));
        drop(Store::open_read_only(&dir).unwrap());
        assert_eq!(format(&dir).as_deref(), Some(PREVIOUS_FORMAT.as_bytes()));
        drop(Store::open(&dir).unwrap());
        assert_eq!(format(&dir).as_deref(), Some(STATE_FORMAT.as_bytes()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn accounts_round_trip_in_both_stored_forms() {
        let a = full_account();
        let binary = encode_account(&a).unwrap();
        assert_eq!(binary[0], ACCOUNT_HASHED);
        let json = serde_json::to_vec(&a).unwrap();
        assert!(
            binary.len() < json.len() / 2,
            "{} vs {}",
            binary.len(),
            json.len()
        );
        assert_eq!(decode_account(b"a/loy_1", &binary).unwrap(), a);
        // With a manual tier and pending awards (SPEC section 13): the form after, read
        // back whole; without them, the form before, byte for byte (pinned above).
        let mut x = a.clone();
        x.extra.manual = Some(loyalty_core::state::ManualTier {
            tier: "Gold".into(),
            until: 1_800_000_000,
            reason: "status match".into(),
        });
        x.extra.pending.push(loyalty_core::state::PendingAward {
            seq: 9,
            transaction: "ptx_p".into(),
            rule: Some("rule_a".into()),
            campaigns: vec!["camp_b".into()],
            awarded: 120,
            points: 100,
            created: 1_700_000_000,
            vests: 1_700_600_000,
        });
        x.extra.vested.push(loyalty_core::state::Vested {
            award: "ptx_o".into(),
            vest: "ptx_v".into(),
            at: 1_699_000_000,
        });
        let extra = encode_account(&x).unwrap();
        assert_eq!(extra[0], ACCOUNT_EXTRA);
        assert_eq!(decode_account(b"a/loy_1", &extra).unwrap(), x);
        assert!(matches!(
            decode_account(b"a/loy_1", &extra[..extra.len() - 1]),
            Err(StoreError::Corrupt { .. })
        ));
        // Bytes after the account, a cut account, an unknown form, the forms of earlier
        // versions (JSON; postcard without the hash): corrupt, not a panic.
        let mut v1 = binary.clone();
        v1.drain(..33);
        v1.insert(0, 1);
        for bad in [
            [binary.clone(), vec![0]].concat(),
            binary[..binary.len() - 1].to_vec(),
            json,
            v1,
            vec![1],
            vec![ACCOUNT_HASHED, 1, 2],
            vec![7, 1, 2],
            vec![],
        ] {
            match decode_account(b"a/loy_1", &bad) {
                Err(StoreError::Corrupt { key, .. }) => assert_eq!(key, "a/loy_1"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    const PROGRAM: &str = r#"{"id":"prog_a","currency":"EUR","autoEnroll":true,"earningRules":[{"id":"rule_a","trigger":"payment.completed","award":{"type":"per_amount","per":100,"points":1}}]}"#;

    fn fold_into(store: &Store, engine: &mut Engine, records: &[String]) {
        let mut out = Vec::new();
        for r in records {
            engine.apply(r.as_bytes(), &mut out);
        }
        let batch = Batch {
            changes: engine.take_changes(),
            lines: out.iter().map(Output::to_json_line).collect(),
            outbox: vec![OutboxEntry {
                seq: 0,
                topic: "t".into(),
                key: Some(b"k".to_vec()),
                payload: b"\xff payload".to_vec(),
                headers: vec![("h".into(), b"v".to_vec())],
                partition: None,
                line: None,
            }],
            dues_passed: Vec::new(),
            index: Vec::new(),
            config: None,
            deferred: Vec::new(),
            rendered: 0,
            log: [(0, records.len() as i64)].into_iter().collect(),
            src: [((0, "payment.completed".to_string(), 0), 7)]
                .into_iter()
                .collect(),
        };
        store.commit(engine, batch).unwrap();
    }

    #[test]
    fn outbox_entries_keep_their_partition() {
        for partition in [None, Some(0), Some(5)] {
            let e = OutboxEntry {
                seq: 9,
                topic: "loyalty.log".into(),
                key: Some(b"cus_1".to_vec()),
                payload: b"{}".to_vec(),
                headers: vec![("content-type".into(), b"application/json".to_vec())],
                partition,
                line: None,
            };
            assert_eq!(
                decode_outbox(9, &encode_outbox(&e, None)),
                Some((e.clone(), None))
            );
        }
        // Trailing bytes that are no partition are corrupt, not ignored.
        let mut bad = encode_outbox(
            &OutboxEntry {
                seq: 0,
                topic: "t".into(),
                key: None,
                payload: vec![],
                headers: vec![],
                partition: Some(1),
                line: None,
            },
            None,
        );
        bad.push(0);
        assert_eq!(decode_outbox(0, &bad), None);
    }

    #[test]
    fn the_flows_state_is_stored_and_removed_by_key() {
        use loyalty_core::envelope::ReferralMessage;
        use loyalty_core::state::Hold;
        let dir = tmp("flows");
        let store = Store::open(&dir).expect("open");
        let mut state = State::default();
        state.holds.insert(
            "rdm_cmd_1".into(),
            Hold {
                account: "loy_a".into(),
                reward: "mug".into(),
                quantity: 2,
                cost: 300,
                unit_cost: Some(150),
                discount: Some("12.5".parse().unwrap()),
            },
        );
        state.pending_codes.insert("loy_b".into(), "CODE-1".into());
        let key = ("prog/x".to_string(), "CODE-2".to_string());
        state
            .code_holders
            .insert(key.clone(), ("cus_c".into(), "loy_c".into()));
        let waiting = ReferralMessage {
            program: key.0.clone(),
            code: "CODE-3".into(),
            referrer: String::new(),
            referee: "cus_d".into(),
            source: "evt_9".into(),
        };
        let parked_key = (key.0.clone(), "CODE-3".to_string());
        state.parked.insert(
            parked_key.clone(),
            vec![(Timestamp(1_700_000_000), waiting)],
        );
        let keys: std::collections::BTreeSet<FlowKey> = [
            FlowKey::Hold("rdm_cmd_1".into()),
            FlowKey::Pending("loy_b".into()),
            FlowKey::Code(key.0.clone(), key.1.clone()),
            FlowKey::Code(parked_key.0.clone(), parked_key.1.clone()),
        ]
        .into_iter()
        .collect();
        let commit = |engine: &Engine| {
            let mut batch = Batch::default();
            batch.changes.flows = keys.clone();
            store.commit(engine, batch).expect("commit");
        };
        let engine = Engine::from_state(state.clone());
        commit(&engine);
        for loaded in [
            store.load_engine().expect("load"),
            store.load_engine_lean().expect("lean"),
        ] {
            let got = loaded.state();
            assert_eq!(got.holds, state.holds);
            assert_eq!(got.pending_codes, state.pending_codes);
            assert_eq!(got.code_holders, state.code_holders);
            assert_eq!(got.parked, state.parked);
        }
        // Taken out of the state: each key's entry goes.
        commit(&Engine::from_state(State::default()));
        let got = store.load_engine().expect("load");
        let got = got.state();
        assert!(got.holds.is_empty() && got.pending_codes.is_empty());
        assert!(got.code_holders.is_empty() && got.parked.is_empty());
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A store that keeps which ids it wrote answers lookups as RocksDB does: every seen
    /// id, payment and account committed is found, in a later batch and after many others; ids never
    /// written are not. A store already holding ids does not keep them.
    #[test]
    fn a_store_that_keeps_its_written_ids_finds_each() {
        let dir = tmp("written");
        let mut store = Store::open(&dir).unwrap();
        assert!(store.track_written().unwrap());
        let mut engine = Engine::empty();
        let mut out = Vec::new();
        let update = format!(
            r#"{{"id":"u1","type":"loyalty.program.updated","created":"2026-01-01T00:00:00Z","data":{PROGRAM}}}"#
        );
        engine.apply(update.as_bytes(), &mut out);
        let n = 70_000;
        for batch in 0..2 {
            for i in (batch * n / 2)..((batch + 1) * n / 2) {
                let r = format!(
                    r#"{{"id":"e{i}","type":"payment.completed","created":"2026-01-02T00:00:00Z","data":{{"id":"p{i}","customer":"c{}","amount":1000,"currency":"EUR"}}}}"#,
                    i % 100
                );
                engine.apply(r.as_bytes(), &mut out);
            }
            let batch = Batch {
                changes: engine.take_changes(),
                log: [(0, 1)].into_iter().collect(),
                ..Batch::default()
            };
            store.commit(&engine, batch).unwrap();
        }
        for i in 0..n {
            assert!(store.is_seen(&format!("e{i}")).unwrap(), "e{i}");
            assert!(store.payment(&format!("p{i}")).unwrap().is_some(), "p{i}");
        }
        for i in n..2 * n {
            assert!(!store.is_seen(&format!("e{i}")).unwrap());
            assert!(store.payment(&format!("p{i}")).unwrap().is_none());
        }
        // And those are answered from memory, but for fewer than one in a hundred.
        let maybes = (n..2 * n)
            .filter(|i| store.may_hold(b"s/", &format!("e{i}")))
            .count();
        assert!(
            maybes * 100 < n,
            "{maybes} of {n} never written may be held"
        );
        // The ids under one prefix are not taken for the other's.
        assert!(!store.is_seen("p1").unwrap());
        assert!(store.payment("e1").unwrap().is_none());
        // Every account written is found, with what the engine holds; others are not.
        let mut accounts = 0;
        for (id, a) in &engine.state().accounts {
            assert!(store.may_hold(b"a/", id), "{id}");
            assert_eq!(store.account(id).unwrap().as_ref(), Some(&**a));
            accounts += 1;
        }
        assert_eq!(accounts, 100);
        let strangers = (0..n)
            .filter(|i| store.may_hold(b"a/", &format!("loy_{i}")))
            .count();
        assert!(strangers * 100 < n, "{strangers} of {n} never written");
        assert!(store.account("loy_none").unwrap().is_none());
        drop(store);
        let mut again = Store::open(&dir).unwrap();
        assert!(!again.track_written().unwrap(), "it holds ids already");
        assert!(again.is_seen("e1").unwrap());
    }

    /// An entry with no payload of its own publishes its line's envelope, so its line must
    /// be an event's: a batch whose entry names another line is refused whole.
    #[test]
    fn an_entry_without_payload_must_name_an_events_line() {
        let dir = tmp("outbox_bare");
        let store = Store::open(&dir).unwrap();
        let mut engine = Engine::empty();
        let mut out = Vec::new();
        let update = format!(
            r#"{{"id":"u1","type":"loyalty.program.updated","created":"2026-01-01T00:00:00Z","data":{PROGRAM}}}"#
        );
        engine.apply(update.as_bytes(), &mut out);
        engine.apply(br#"{"id":"e1","type":"payment.completed","created":"2026-01-02T00:00:00Z","data":{"id":"p1","customer":"c","amount":1000,"currency":"EUR"}}"#, &mut out);
        let lines: Vec<String> = out.iter().map(Output::to_json_line).collect();
        let not_event = lines
            .iter()
            .position(|l| !l.as_bytes().starts_with(EVENT_LINE))
            .expect("a transaction's line");
        for line in [Some(not_event), Some(lines.len())] {
            let batch = Batch {
                changes: engine.take_changes(),
                lines: lines.clone(),
                outbox: vec![OutboxEntry {
                    seq: 0,
                    topic: "t".into(),
                    key: None,
                    payload: Vec::new(),
                    headers: Vec::new(),
                    partition: None,
                    line,
                }],
                log: [(0, 2)].into_iter().collect(),
                ..Batch::default()
            };
            let err = store.commit(&engine, batch).unwrap_err();
            assert!(
                matches!(&err, StoreError::Corrupt { key, why } if key.starts_with("x/") && why.contains("not an event's")),
                "{err}"
            );
            assert_eq!(store.next_sequence(), 0, "nothing written");
            assert!(store.outbox().unwrap().is_empty());
        }
    }

    /// An event's message is kept as a reference to its output line and read back as the
    /// line's envelope, byte for byte; a payload that is not its line's envelope is kept
    /// whole. `verify` follows each reference, and names an entry whose line is gone.
    #[test]
    fn an_events_message_is_read_back_from_its_line() {
        let dir = tmp("outbox_line");
        let store = Store::open(&dir).unwrap();
        let mut engine = Engine::empty();
        let records = [
            format!(
                r#"{{"id":"u1","type":"loyalty.program.updated","created":"2026-01-01T00:00:00Z","data":{PROGRAM}}}"#
            ),
            r#"{"id":"e1","type":"payment.completed","created":"2026-01-02T00:00:00Z","data":{"id":"p1","customer":"c","amount":1000,"currency":"EUR"}}"#.to_string(),
        ];
        let (mut out, mut index) = (Vec::new(), Vec::new());
        for (r, id) in records.iter().zip(["u1", "e1"]) {
            let from = out.len();
            engine.apply(r.as_bytes(), &mut out);
            index.extend(
                out[from..]
                    .iter()
                    .map(|o| LineIndex::of_output(o, Some(id))),
            );
        }
        let lines: Vec<String> = out.iter().map(Output::to_json_line).collect();
        let mut outbox = Vec::new();
        for (i, o) in out.iter().enumerate() {
            if let Output::Event(e) = o {
                outbox.push(OutboxEntry {
                    seq: 0,
                    topic: e.kind().to_string(),
                    key: Some(b"c".to_vec()),
                    payload: e.to_envelope_json().into_bytes(),
                    headers: vec![("x-signature".into(), b"t=1,v1=ab".to_vec())],
                    partition: None,
                    line: Some(i),
                });
            }
        }
        assert!(outbox.len() >= 2, "an account and an award event");
        // Said to publish a line it is not the envelope of: kept whole.
        let mut odd = outbox[0].clone();
        odd.payload = br#"{"other":1}"#.to_vec();
        outbox.push(odd);
        // Said to publish its line, with no payload of its own: the line's envelope.
        outbox.push(outbox[1].clone());
        let sent = outbox.clone();
        outbox.last_mut().unwrap().payload.clear();
        let record_of: Vec<Option<String>> = index.iter().map(|ix| ix.record.clone()).collect();
        let changes = engine.take_changes();
        let batch = Batch {
            changes,
            lines,
            index,
            outbox,
            log: [(0, 2)].into_iter().collect(),
            ..Batch::default()
        };
        store.record_batches();
        store.commit(&engine, batch).unwrap();
        // The batch, as recorded for a benchmark's reference: written into RocksDB alone,
        // it leaves what the store holds under each of its keys.
        let recorded = store.recorded_batches();
        assert_eq!(recorded.len(), 1);
        assert!(
            store.recorded_batches().is_empty(),
            "taking them stops recording"
        );
        let again = tmp("outbox_line_again");
        let db = DB::open_default(&again).unwrap();
        db.write(WriteBatch::from_data(&recorded[0])).unwrap();
        let mut keys = 0;
        for kv in db.iterator(IteratorMode::Start) {
            let (k, v) = kv.unwrap();
            assert_eq!(store.db.get(&k).unwrap().as_deref(), Some(&*v));
            keys += 1;
        }
        assert!(keys > out.len(), "{keys} keys for {} lines", out.len());
        drop(db);
        let _ = std::fs::remove_dir_all(&again);
        let back = store.outbox().unwrap();
        assert_eq!(back.len(), sent.len());
        for (b, s) in back.iter().zip(&sent) {
            assert_eq!(b.payload, s.payload, "published byte for byte");
            assert_eq!(
                (&b.topic, &b.key, &b.headers),
                (&s.topic, &s.key, &s.headers)
            );
            assert_eq!(b.line, None);
        }
        // Stored: the references hold no copy of the payload; the odd one does.
        let raw = |seq: u64| store.db.get(seq_key("x", seq)).unwrap().unwrap();
        assert!(raw(back[0].seq).len() < 80, "{:?}", raw(back[0].seq));
        let odd = back[back.len() - 2].seq;
        assert!(raw(odd).windows(11).any(|w| w == br#"{"other":1}"#));
        assert_eq!(raw(back.last().unwrap().seq), raw(back[1].seq));
        assert!(store.verify().unwrap().is_empty(), "{:?}", store.verify());
        // The record's lines are one run, kept under one key.
        let e1: Vec<serde_json::Value> = out
            .iter()
            .zip(&record_of)
            .filter(|(_, r)| r.as_deref() == Some("e1"))
            .map(|(o, _)| serde_json::from_str(&o.to_json_line()).unwrap())
            .collect();
        assert!(e1.len() >= 3, "{e1:?}");
        assert_eq!(store.view().record_lines("e1").unwrap(), e1);
        assert_eq!(store.prefix("u/").count(), 1);
        // The first event's line gone: verify names the entry, and reading it fails.
        let line = (0..store.next_sequence())
            .find(|s| {
                store
                    .db
                    .get(seq_key("o", *s))
                    .unwrap()
                    .is_some_and(|l| l.starts_with(EVENT_LINE))
            })
            .unwrap();
        store.db.delete(seq_key("o", line)).unwrap();
        let problems = store.verify().unwrap();
        let key = String::from_utf8(seq_key("x", back[0].seq)).unwrap();
        assert!(
            problems
                .iter()
                .any(|p| p.key == key && p.detail.contains("missing")),
            "{problems:?}"
        );
        assert!(matches!(store.outbox(), Err(StoreError::Corrupt { .. })));
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_reopened_store_continues_where_it_stopped() {
        let dir = tmp("reopen");
        let update = format!(
            r#"{{"id":"u1","type":"loyalty.program.updated","created":"2026-01-01T00:00:00Z","data":{PROGRAM}}}"#
        );
        let pay = |i: u32| {
            format!(
                r#"{{"id":"e{i}","type":"payment.completed","created":"2026-01-0{i}T00:00:00Z","data":{{"id":"p{i}","customer":"c","amount":1000,"currency":"EUR"}}}}"#
            )
        };
        let all = [update.clone(), pay(1), pay(2), pay(3)];
        let mut straight = Engine::empty();
        let mut expected = Vec::new();
        for r in &all {
            straight.apply(r.as_bytes(), &mut expected);
        }
        {
            let store = Store::open(&dir).unwrap();
            let mut e = store.load_engine().unwrap();
            fold_into(&store, &mut e, &all[..2]);
        }
        let store = Store::open(&dir).unwrap();
        let mut e = store.load_engine().unwrap();
        assert_eq!(e.state().accounts.len(), 1);
        fold_into(&store, &mut e, &all[2..]);
        assert_eq!(
            e.state(),
            straight.state(),
            "the reloaded engine is the straight one"
        );
        let mut lines = Vec::new();
        store.export(|l| lines.push(l.to_string())).unwrap();
        let want: Vec<String> = expected
            .iter()
            .map(Output::to_json_line)
            .chain(straight.accounts().map(|a| a.to_json_line()))
            .collect();
        assert_eq!(lines, want);
        let outbox = store.outbox().unwrap();
        assert_eq!(outbox.len(), 2);
        assert_eq!(outbox[0].payload, b"\xff payload");
        store.remove_outbox(&[outbox[0].seq]).unwrap();
        assert_eq!(store.outbox().unwrap().len(), 1);
        let pos = store.positions().unwrap();
        assert_eq!(pos.log.get(&0), Some(&2));
        assert_eq!(
            pos.src.get(&(0, "payment.completed".to_string(), 0)),
            Some(&7)
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// One thing wrong with a stored state, as `loyalty verify` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Which invariant: `decode`, `ledger`, `balance_after`, `lots`, `lot_negative`,
    /// `account_id`, `program`, `stock`, `sequence`, `offsets`, `payment`, `index`, `hash_chain`.
    pub check: &'static str,
    /// The key (or the account) it concerns.
    pub key: String,
    /// What is wrong, in words.
    pub detail: String,
}

impl Store {
    /// Checks every invariant of the stored state and returns what is wrong (nothing when
    /// the state is sound). Reads the whole store once; changes nothing.
    pub fn verify(&self) -> Result<Vec<Problem>, StoreError> {
        // The API's indexes are checked on a thread of their own, beside the rest: both
        // only read, and each is a walk over most of the state.
        std::thread::scope(|s| {
            let api = s.spawn(|| self.verify_api_index());
            let mut problems = self.verify_state()?;
            let api = api
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))?;
            problems.extend(api.into_iter().map(|(key, detail)| Problem {
                check: "api_index",
                key: String::from_utf8_lossy(&key).into_owned(),
                detail,
            }));
            Ok(problems)
        })
    }

    /// Every check of [`Store::verify`] but the API's indexes.
    fn verify_state(&self) -> Result<Vec<Problem>, StoreError> {
        type Fixed = loyalty_core::state::FixedState;
        let mut problems = Vec::new();
        let mut problem = |check, key: &[u8], detail: String| {
            problems.push(Problem {
                check,
                key: String::from_utf8_lossy(key).into_owned(),
                detail,
            })
        };
        // In id order (as the store holds them), and their ids for lookups.
        let mut accounts: Vec<Account> = Vec::new();
        let mut account_ids: std::collections::HashSet<String, Fixed> = Default::default();
        let mut payments: Vec<(String, PaymentRecord)> = Vec::new();
        // Per account: the sum of its transactions and the balance after the last one.
        // Per account: the sum of its posted points, the balance its last line left, and
        // its pending points (pending awards and reversals, less what vested).
        let mut ledger: HashMap<String, (i128, Option<i128>, i128), Fixed> = HashMap::default();
        // Each account's hash chain so far, and whether it broke (reported once, at the
        // first broken link).
        let mut chains: HashMap<String, ([u8; 32], bool), Fixed> = HashMap::default();
        let mut max_seq: Option<u64> = None;
        let mut stored_seq = None;
        let mut programs = None;
        let mut stock = Vec::new();
        let mut clock = None;
        let mut dues: HashMap<String, i64, Fixed> = HashMap::default();
        let mut codes: BTreeMap<(String, String), String> = BTreeMap::new();
        let mut indexed = false;
        // The holder of each referral code, by the accounts: the smallest id with it.
        let mut holders: BTreeMap<(String, String), String> = BTreeMap::new();
        for kv in self.db.iterator_opt(IteratorMode::Start, read_once()) {
            let (k, v) = kv?;
            let key = String::from_utf8_lossy(&k);
            let seq_of = |rest: &str| rest.parse::<u64>().ok();
            if let Some(id) = key.strip_prefix("a/") {
                match decode_account(&k, &v) {
                    Ok(a) if *a.id != *id => {
                        problem("account_id", &k, format!("holds the account {}", a.id))
                    }
                    Ok(a) => {
                        account_ids.insert(a.id.to_string());
                        accounts.push(a);
                    }
                    Err(StoreError::Corrupt { why, .. }) => {
                        problem("decode", &k, format!("not an account: {why}"))
                    }
                    Err(e) => problem("decode", &k, format!("not an account: {e}")),
                }
            } else if let Some(id) = key.strip_prefix("p/") {
                match decode_payment(&k, &v) {
                    Ok(p) => payments.push((id.to_string(), p)),
                    Err(StoreError::Corrupt { why, .. }) => {
                        problem("decode", &k, format!("not a payment: {why}"))
                    }
                    Err(e) => problem("decode", &k, format!("not a payment: {e}")),
                }
            } else if key.starts_with("s/") {
                if !v.is_empty() {
                    problem("decode", &k, "a seen id holds a value".into());
                }
            } else if let Some(rest) = key.strip_prefix("o/") {
                let Some(seq) = seq_of(rest) else {
                    problem("decode", &k, "not a sequence number".into());
                    continue;
                };
                max_seq = max_seq.max(Some(seq));
                // Only the fields checked here, borrowed from the line where they can be.
                let line: LineHead<'_> = match serde_json::from_slice(&v) {
                    Ok(l) => l,
                    Err(e) => {
                        problem("decode", &k, format!("not a JSON line: {e}"));
                        continue;
                    }
                };
                if line.kind.as_deref() == Some("transaction") {
                    let (Some(acct), Some(points), Some(after)) =
                        (line.account.as_deref(), line.points, line.balance_after)
                    else {
                        problem(
                            "decode",
                            &k,
                            "a transaction without account, points or balanceAfter".into(),
                        );
                        continue;
                    };
                    let e = match ledger.get_mut(acct) {
                        Some(e) => e,
                        None => ledger.entry(acct.to_string()).or_insert((0, None, 0)),
                    };
                    // A pending line moves the pending balance, not the balance; a vest
                    // moves what was pending into the balance (SPEC section 13).
                    let pending = line.status.as_deref() == Some("pending");
                    let moves = if pending { 0 } else { points };
                    if pending {
                        e.2 += i128::from(points);
                    } else if line.kind_of.as_deref() == Some("vest") {
                        e.2 -= i128::from(points);
                    }
                    e.0 += i128::from(moves);
                    // Each link: this line's balance is the previous line's plus its points
                    // (so one lost line is reported once, not on every later line).
                    let before = e.1.unwrap_or(0);
                    if before + i128::from(moves) != i128::from(after) {
                        problem(
                            "balance_after",
                            &k,
                            format!(
                                "balanceAfter {after}, but the previous transaction of {acct} \
                                 left {before} and this one moves {points}"
                            ),
                        );
                    }
                    e.1 = Some(i128::from(after));
                    let chain = match chains.get_mut(acct) {
                        Some(c) => c,
                        None => chains.entry(acct.to_string()).or_insert(([0; 32], false)),
                    };
                    if !chain.1 {
                        match chain_link(&chain.0, &v) {
                            Ok(hash) => chain.0 = hash,
                            Err(why) => {
                                chain.1 = true;
                                problem("hash_chain", &k, format!("{acct}: {why}"));
                            }
                        }
                    }
                }
            } else if let Some(rest) = key.strip_prefix("x/") {
                match seq_of(rest) {
                    Some(seq) => {
                        max_seq = max_seq.max(Some(seq));
                        match decode_outbox(seq, &v) {
                            None => problem("decode", &k, "not an outbox entry".into()),
                            Some((_, Some(line))) => {
                                if let Err(why) = self.envelope_at(line) {
                                    problem("decode", &k, why);
                                }
                            }
                            Some((_, None)) => {}
                        }
                    }
                    None => problem("decode", &k, "not a sequence number".into()),
                }
            } else if key == "m/seq" {
                match parse_u64(&k, &v) {
                    Ok(s) => stored_seq = Some(s),
                    Err(e) => problem("decode", &k, e.to_string()),
                }
            } else if key == "m/clock" {
                match parse_u64(&k, &v) {
                    Ok(c) => clock = Some(Timestamp(c as i64)),
                    Err(e) => problem("decode", &k, e.to_string()),
                }
            } else if k.starts_with(b"d/") {
                match parse_due_key(&k) {
                    Some((at, account)) => {
                        // Keys come in time order: the first of an account is its earliest.
                        dues.entry(account.to_string()).or_insert(at);
                    }
                    None => problem("decode", &k, "not a due index key".into()),
                }
            } else if let Some(rest) = key.strip_prefix("r/") {
                match (rest.split_once('/'), std::str::from_utf8(&v)) {
                    (Some((code, program)), Ok(holder)) => {
                        codes.insert((program.to_string(), code.to_string()), holder.to_string());
                    }
                    _ => problem("decode", &k, "not a referral code's holder".into()),
                }
            } else if k.as_ref() == INDEX_KEY {
                // Checked only when whole up to the state's own positions: otherwise the
                // engine rebuilds them when it next opens the state.
                indexed = self
                    .log_positions()
                    .is_ok_and(|p| v.as_ref() == index_mark(&p).as_bytes());
            } else if k.as_ref() == FORMAT_KEY {
                // Checked when the store was opened: it is this version's.
            } else if k.as_ref() == api::API_INDEX_KEY || k.as_ref() == CONFIG_KEY {
                // Checked below (the API's indexes), or free text (the config's digest).
            } else if [
                "i/", "T/", "l/", "e/", "Q/", "q/", "c/", "k/", "K/", "u/", "S/",
            ]
            .iter()
            .any(|p| key.starts_with(p))
            {
                // The API's indexes: checked as a whole below.
            } else if let Some(id) = key.strip_prefix("h/") {
                if serde_json::from_slice::<ApiCommand>(&v).is_err() {
                    problem("decode", &k, format!("not a command the API sent: {id}"));
                }
            } else if k.as_ref() == OVERDUE_KEY {
                if let Err(e) = serde_json::from_slice::<Vec<Due>>(&v) {
                    problem("decode", &k, format!("not the overdue effects: {e}"));
                }
            } else if key == "m/programs" {
                match serde_json::from_slice::<StoredPrograms>(&v) {
                    Ok(p) => programs = Some(p),
                    Err(e) => problem("decode", &k, format!("not the program list: {e}")),
                }
            } else if key == "m/stock" {
                match serde_json::from_slice::<Vec<((String, String), i64)>>(&v) {
                    Ok(s) => stock = s,
                    Err(e) => problem("decode", &k, format!("not the stock: {e}")),
                }
            } else if key.starts_with("m/log/")
                || key.starts_with("m/src/")
                || key.starts_with("m/in/")
            {
                match parse_u64(&k, &v) {
                    Ok(off) if off > i64::MAX as u64 => {
                        problem("offsets", &k, format!("offset {off} is negative"))
                    }
                    Ok(_) => {}
                    Err(e) => problem("offsets", &k, e.to_string()),
                }
            } else {
                problem("decode", &k, "a key the engine never writes".into());
            }
        }
        if let Err(e) = self.positions() {
            problem("offsets", b"m/", e.to_string());
        }
        match (max_seq, stored_seq) {
            (Some(max), Some(next)) if next <= max => problem(
                "sequence",
                SEQ_KEY,
                format!("the next sequence number {next} is not past the last one used, {max}"),
            ),
            (Some(max), None) => problem(
                "sequence",
                SEQ_KEY,
                format!("missing, while entries up to {max} exist"),
            ),
            _ => {}
        }
        // Programs: each parses; accounts belong to one.
        let mut parsed = BTreeMap::new();
        if let Some(p) = &programs {
            for id in &p.order {
                match p.texts.get(id).map(|t| parse_program(t)) {
                    Some(Ok(prog)) => {
                        parsed.insert(id.clone(), prog);
                    }
                    Some(Err(e)) => problem("program", b"m/programs", format!("{id}: {e}")),
                    None => problem("program", b"m/programs", format!("no text for {id}")),
                }
            }
        }
        for a in &accounts {
            let key = format!("a/{}", a.id);
            if a.id != loyalty_core::ids::account_id(&a.program, &a.customer) {
                problem(
                    "account_id",
                    key.as_bytes(),
                    format!("is not the id of {} in {}", a.customer, a.program),
                );
            }
            if programs.is_some() && !parsed.contains_key(&*a.program) {
                problem(
                    "program",
                    key.as_bytes(),
                    format!("unknown program {}", a.program),
                );
            }
            let (last_hash, broken) = chains.remove(&*a.id).unwrap_or(([0; 32], false));
            if !broken && last_hash != a.ledger_hash {
                problem(
                    "hash_chain",
                    key.as_bytes(),
                    format!(
                        "ledgerHash {} but its last transaction's hash is {}",
                        loyalty_core::output::hex32(&a.ledger_hash),
                        loyalty_core::output::hex32(&last_hash)
                    ),
                );
            }
            let (sum, last, pending) = ledger.remove(&*a.id).unwrap_or((0, None, 0));
            if pending != a.pending_balance() {
                problem(
                    "ledger",
                    key.as_bytes(),
                    format!(
                        "pending balance {} but its pending transactions less its vests sum \
                         to {pending}",
                        a.pending_balance()
                    ),
                );
            }
            if sum != a.balance {
                problem(
                    "ledger",
                    key.as_bytes(),
                    format!("balance {} but its transactions sum to {sum}", a.balance),
                );
            }
            if last.is_some_and(|l| l != a.balance) {
                problem(
                    "ledger",
                    key.as_bytes(),
                    format!(
                        "balance {} but its last transaction left {}",
                        a.balance,
                        last.unwrap_or(0)
                    ),
                );
            }
            if let Some(lot) = a.lots.iter().find(|l| l.remaining < 0) {
                problem(
                    "lot_negative",
                    key.as_bytes(),
                    format!("lot {} holds {}", lot.seq, lot.remaining),
                );
            }
            if indexed {
                // The indexes a working set is loaded by: every effect to come, and the code.
                // Its entry may be early (an effect moved later), never late.
                if let Some(at) =
                    next_due(a, clock).filter(|at| dues.get(&*a.id).is_none_or(|first| first > at))
                {
                    problem(
                        "index",
                        key.as_bytes(),
                        format!(
                            "has an effect due at {} that the due index does not find",
                            Timestamp(at)
                        ),
                    );
                }
                let code = (a.program.to_string(), a.referral_code.clone());
                // Accounts come in id order: the first with a code is its holder.
                holders.entry(code).or_insert_with(|| a.id.to_string());
            }
            let open: i128 = a.lots.iter().map(|l| i128::from(l.remaining)).sum();
            if a.debt < 0 || open - i128::from(a.debt) != a.balance {
                problem(
                    "lots",
                    key.as_bytes(),
                    format!(
                        "balance {} but open lots hold {open} and the debt is {}",
                        a.balance, a.debt
                    ),
                );
            }
        }
        for ((program, code), want) in &holders {
            let got = codes.remove(&(program.clone(), code.clone()));
            if got.as_ref() != Some(want) {
                problem(
                    "index",
                    code_key(program, code).as_bytes(),
                    format!("held by {got:?} in the code index, but {want} is its holder"),
                );
            }
        }
        for ((program, code), holder) in codes.iter().filter(|_| indexed) {
            problem(
                "index",
                code_key(program, code).as_bytes(),
                format!("held by {holder}, which is no account of {program} with this code"),
            );
        }
        let mut strays: Vec<(String, i128)> =
            ledger.into_iter().map(|(a, (s, _, _))| (a, s)).collect();
        strays.sort_unstable();
        for (acct, sum) in strays {
            problem(
                "ledger",
                format!("a/{acct}").as_bytes(),
                format!("transactions summing to {sum} for an account the state does not hold"),
            );
        }
        for (id, p) in payments {
            let key = format!("p/{id}");
            if p.refunded < 0 || p.refunded > p.amount {
                problem(
                    "payment",
                    key.as_bytes(),
                    format!("refunded {} of {}", p.refunded, p.amount),
                );
            }
            if let Some(w) = p.awards.iter().find(|w| !account_ids.contains(&*w.account)) {
                problem(
                    "payment",
                    key.as_bytes(),
                    format!("an award to {}, which the state does not hold", w.account),
                );
            }
        }
        for ((prog, reward), used) in stock {
            let limit = parsed
                .get(&prog)
                .and_then(|p| p.rewards.iter().find(|r| r.id == reward))
                .and_then(|r| r.stock);
            if used < 0 || limit.is_some_and(|l| used > l) {
                problem(
                    "stock",
                    b"m/stock",
                    format!("{prog}/{reward}: {used} used of a stock of {limit:?}"),
                );
            }
        }
        Ok(problems)
    }
}
