//! The engine's state: everything a fold carries from one record to the next.
//!
//! Maps whose iteration can reach output are `BTreeMap`s, or are sorted where they are
//! iterated (the accounts); hash maps use a fixed hasher (no per-process random seed), so
//! the fold reads no randomness.
//!
//! Owns: accounts, rule usage (for caps and `maxUses`), seen ids, applied payments, the
//! clock. Must not decide anything: the rules live in their own modules (see the crate's
//! map in `lib.rs`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::Program;
use crate::dec::Dec;
use crate::time::Timestamp;
use crate::vecmap::VecMap;
use crate::Sym;

/// A hasher with fixed keys: deterministic across runs and machines (FxHash).
pub type FixedState = BuildHasherDefault<rustc_hash::FxHasher>;

/// The whole state of a fold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct State {
    /// The largest `created` applied so far.
    pub clock: Option<Timestamp>,
    /// Ids of every applied or refused record.
    pub seen: HashSet<Sym, FixedState>,
    /// Programs in application order (file order, then programs added by updates).
    pub programs: Vec<Arc<Program>>,
    /// Accounts by `loy_` id. A hash map: every iteration whose order can reach output
    /// sorts the ids first ([`State::account_ids`]). Boxed, so that growing the map moves
    /// pointers, not accounts.
    pub accounts: HashMap<Sym, Box<Account>, FixedState>,
    /// Referral code → account id, per program: `(program, code)`. Only looked up, never
    /// iterated.
    pub referral_codes: HashMap<(String, String), String, FixedState>,
    /// Payments applied, by `data.id`, for refunds: packed, since there is one for almost
    /// every record and a refund needs one of them now and then.
    pub payments: HashMap<String, PackedPayment, FixedState>,
    /// The JSON text of each program set by a `loyalty.program.updated`, so that a store
    /// can persist the programs as the log defined them.
    pub program_texts: BTreeMap<String, String>,
    /// How many updates each program has had.
    pub program_revisions: BTreeMap<String, u64>,
    /// Units of each reward redeemed so far, by `(program, reward)` (stock left is `stock`
    /// minus this).
    pub stock_used: BTreeMap<(String, String), i64>,
    /// Costs held by redemptions waiting for another partition to grant a reward's units
    /// ([`crate::partition`]), by the redemption record's id. Always empty in an engine that
    /// folds every partition.
    pub holds: BTreeMap<String, Hold>,
    /// The referral code each referee enrolled with, until its first payment converts it,
    /// by account: the code's partition knows the referrer ([`crate::partition`]). Always
    /// empty in an engine that folds every partition.
    pub pending_codes: BTreeMap<String, String>,
    /// On the partition that keeps a referral code: the customer holding it, by
    /// `(program, code)` (the smaller account id when two accounts share one), with that
    /// account.
    pub code_holders: BTreeMap<(String, String), (String, String)>,
    /// Conversions whose code's claim has not arrived yet, by `(program, code)`: carried out
    /// when it does, so that the outcome does not depend on which message came first.
    /// Each with the time it was converted at, which its awards keep.
    pub parked: BTreeMap<(String, String), Vec<(Timestamp, crate::envelope::ReferralMessage)>>,
    /// Time-driven effects, in the order they fall due. Derived from the accounts and the
    /// programs (rebuilt when a state is loaded), so it is never stored.
    pub schedule: crate::schedule::Schedule,
}

/// A redemption's cost held until the partition that counts the reward's stock answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// The redeeming account.
    pub account: Sym,
    /// The reward.
    pub reward: String,
    /// Units asked for.
    pub quantity: i64,
    /// Points held.
    pub cost: i64,
    /// The reward's cost of one unit when it was asked for (for the redemption's `why`;
    /// `None` in a hold an earlier version wrote).
    #[serde(default)]
    pub unit_cost: Option<i64>,
    /// The tier's discount, percent, when it was asked for (`None` as above).
    #[serde(default, with = "dec_text")]
    pub discount: Option<Dec>,
}

/// A decimal stored as its exact text.
mod dec_text {
    use crate::dec::Dec;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Option<Dec>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.to_string()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Dec>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(text) => text.parse().map(Some).map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

/// A time-driven effect that falls due (SPEC section 6): ordered by time, then kind, then
/// account, then item (lots of one account in the order they were awarded).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "DueText", try_from = "DueText")]
pub struct Due {
    /// When, in unix seconds.
    pub at: i64,
    /// The kind, in the order kinds run at one instant.
    pub kind: DueKind,
    /// The account (empty for a program-wide effect).
    pub account: Sym,
    /// What else identifies it.
    pub item: DueItem,
}

/// What identifies a due effect besides its time, kind and account. The variants are in
/// the order effects of one kind and account run at one instant: lots by number, then the
/// member's own evaluation, then its evaluation at a period close.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DueItem {
    /// A lot of the account (its expiry or its warning), by number.
    Lot(u64),
    /// Nothing more: a member's rolling tier evaluation, a birthday.
    None,
    /// A member's evaluation at its program's calendar period close.
    Close(Sym),
    /// A program's calendar period close itself (no account): it schedules every member's
    /// evaluation.
    ProgramClose(Sym),
}

/// A [`Due`] as a store keeps it (`m/overdue`): the item as text, as earlier versions
/// wrote it (a lot number, nothing, a program id, or `close:` and a program id).
#[derive(Serialize, Deserialize)]
struct DueText {
    at: i64,
    kind: DueKind,
    account: Sym,
    item: String,
}

impl From<Due> for DueText {
    fn from(d: Due) -> DueText {
        let item = match d.item {
            DueItem::Lot(n) => n.to_string(),
            DueItem::None => String::new(),
            DueItem::ProgramClose(p) => p.to_string(),
            DueItem::Close(p) => format!("close:{p}"),
        };
        DueText {
            at: d.at,
            kind: d.kind,
            account: d.account,
            item,
        }
    }
}

impl TryFrom<DueText> for Due {
    type Error = String;

    fn try_from(d: DueText) -> Result<Due, String> {
        let number = |s: &str| s.parse::<u64>().ok().filter(|n| n.to_string() == s);
        let item = if d.account.is_empty() && !d.item.is_empty() {
            DueItem::ProgramClose(d.item.into())
        } else if let Some(p) = d.item.strip_prefix("close:") {
            DueItem::Close(p.into())
        } else if d.item.is_empty() {
            DueItem::None
        } else if let Some(n) = number(&d.item) {
            DueItem::Lot(n)
        } else {
            return Err(format!("a due effect with the item {:?}", d.item));
        };
        Ok(Due {
            at: d.at,
            kind: d.kind,
            account: d.account,
            item,
        })
    }
}

/// Kinds of time-driven effects, in the order they run at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DueKind {
    /// A pending award vests (SPEC section 13): first, so that the lot it forms and the
    /// qualifying points it brings are there for what else falls due at that instant.
    Vest,
    /// What is left of a lot expires.
    Expiry,
    /// The warning before a lot expires.
    Warning,
    /// A tier evaluation (rolling period) or a period close (calendar period).
    Tier,
    /// The start of a member's birthday.
    Birthday,
}

/// A loyalty account: one per (program, customer).
///
/// The store keeps accounts in postcard, which writes these fields in this order with no
/// names: adding, removing, reordering or retyping a field (here or in the types it holds)
/// makes stored accounts unreadable, `#[serde(default)]` notwithstanding. Such a change
/// needs a new format byte in the store (`ACCOUNT_POSTCARD`) and a reader for the old one;
/// the store's pinned-bytes test fails until then.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// `loy_…`.
    pub id: Sym,
    /// `prog_…`.
    pub program: Sym,
    /// The customer.
    pub customer: Sym,
    /// The points balance (may go negative only through refunds).
    pub balance: i128,
    /// The tier held, by name (`None` when the program has no tiers).
    pub tier: Option<String>,
    /// Qualifying activity by event time (seconds): what counts towards the tier under the
    /// program's `qualifyOn`, signed (refunds and reversals count negative).
    pub activity: Activity,
    /// When the member was last demoted (soft landing: not again within a period).
    pub last_demotion: Option<i64>,
    /// When a calendar period close last reset its value (activity before it never counts
    /// again).
    #[serde(default)]
    pub reset_at: Option<i64>,
    /// When its tier is next evaluated (a rolling period), as scheduled.
    pub tier_due: Option<i64>,
    /// Open lots (SPEC section 7).
    #[serde(default)]
    pub lots: Vec<crate::lots::Lot>,
    /// Points owed: what reversals took beyond the open lots.
    #[serde(default)]
    pub debt: i64,
    /// The number of the next lot.
    #[serde(default)]
    pub next_lot: u64,
    /// Units redeemed, by reward id (for `maxPerMember`).
    #[serde(default)]
    pub redeemed: BTreeMap<String, i64>,
    /// Whether this member's referral has converted (one conversion per referee).
    #[serde(default)]
    pub referral_converted: bool,
    /// When its next birthday starts, as scheduled.
    #[serde(default)]
    pub birthday_due: Option<i64>,
    /// This account's referral code.
    pub referral_code: String,
    /// The account that referred this one.
    pub referred_by: Option<String>,
    /// `(month, day)`.
    pub birthday: Option<(u32, u32)>,
    /// Stamps by card id.
    pub stamps: VecMap<String, u32>,
    /// What each rule has awarded this member, by rule id.
    pub rule_usage: VecMap<Sym, RuleUsage>,
    /// The hash of its last transaction (zeros before the first): the link the next one
    /// chains to (SPEC section 13). Stored beside the account's fields, not among them.
    #[serde(skip)]
    pub ledger_hash: [u8; 32],
    /// What the features of SPEC section 13 keep: stored after the account's fields, and
    /// only when not empty, so that accounts without them keep their stored bytes.
    #[serde(skip)]
    pub extra: Extra,
}

/// An account's manual tier and pending awards (SPEC section 13).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extra {
    /// A tier set by hand, which no evaluation before its `until` demotes the member below.
    pub manual: Option<ManualTier>,
    /// Awards waiting to vest, in the order they were awarded.
    pub pending: Vec<PendingAward>,
    /// Vested awards whose lot may still be open, for a later refund of one: it takes
    /// from that lot first, and comes off the qualifying points of the vest's time.
    pub vested: Vec<Vested>,
}

impl Extra {
    /// True when there is nothing to keep.
    pub fn is_empty(&self) -> bool {
        self.manual.is_none() && self.pending.is_empty() && self.vested.is_empty()
    }
}

/// A tier set by `loyalty.tier.set`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManualTier {
    /// The tier's name.
    pub tier: String,
    /// Unix seconds: evaluations before it do not demote the member below the tier.
    pub until: i64,
    /// The operator's reason.
    pub reason: String,
}

/// An award written as pending, until it vests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingAward {
    /// Its number within the account (the vest's due item).
    pub seq: u64,
    /// The award transaction.
    pub transaction: Sym,
    /// Its rule (`None`: a campaign bonus).
    pub rule: Option<Sym>,
    /// Its campaigns.
    pub campaigns: Vec<Sym>,
    /// Points awarded.
    pub awarded: i64,
    /// Points still pending (the award less what refunds took).
    pub points: i64,
    /// When it was awarded.
    pub created: i64,
    /// When it vests.
    pub vests: i64,
}

/// A vested award: its vest transaction formed the award's lot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vested {
    /// The award transaction.
    pub award: Sym,
    /// The vest transaction (the lot's).
    pub vest: Sym,
    /// When it vested.
    pub at: i64,
}

impl Account {
    /// Points pending: awarded, not yet vested (SPEC section 13).
    pub fn pending_balance(&self) -> i128 {
        self.extra
            .pending
            .iter()
            .map(|p| i128::from(p.points))
            .sum()
    }
}

impl Account {
    /// A new account of `customer` in `program`, holding `tier`, with its referral code.
    pub fn new(id: Sym, program: Sym, customer: Sym, tier: Option<String>) -> Account {
        let referral_code = crate::ids::referral_code(&id);
        Account {
            id,
            program,
            customer,
            balance: 0,
            tier,
            activity: Activity::default(),
            last_demotion: None,
            reset_at: None,
            tier_due: None,
            lots: Vec::new(),
            debt: 0,
            next_lot: 0,
            redeemed: BTreeMap::new(),
            referral_converted: false,
            birthday_due: None,
            referral_code,
            referred_by: None,
            birthday: None,
            stamps: VecMap::new(),
            rule_usage: VecMap::new(),
            ledger_hash: [0; 32],
            extra: Extra::default(),
        }
    }
}

/// Qualifying activity by event time (seconds), with running sums, so that the value of any
/// window is two binary searches instead of a walk over every entry (a frequent buyer has
/// thousands). Stored as the map of time to amount.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "BTreeMap<i64, i64>")]
pub struct Activity {
    /// `(time, amount)`, sorted by time, one entry per time.
    entries: Vec<(i64, i64)>,
    /// `prefix[i]`: the sum of the amounts of `entries[..i]` (derived from `entries`).
    prefix: Vec<i128>,
}

impl From<BTreeMap<i64, i64>> for Activity {
    fn from(m: BTreeMap<i64, i64>) -> Activity {
        m.into_iter().collect()
    }
}

/// The map of time to amount, written straight from the sorted entries (the same JSON as
/// the `BTreeMap` it was once converted into for every write).
impl Serialize for Activity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.entries.iter().map(|(t, v)| (t, v)))
    }
}

impl FromIterator<(i64, i64)> for Activity {
    fn from_iter<I: IntoIterator<Item = (i64, i64)>>(iter: I) -> Activity {
        let mut a = Activity::default();
        for (at, amount) in iter {
            a.add(at, amount);
        }
        a
    }
}

impl Activity {
    /// Adds `amount` at time `at` (appending is the common case: records come in time
    /// order).
    pub fn add(&mut self, at: i64, amount: i64) {
        if self.prefix.is_empty() {
            self.prefix.push(0);
        }
        if let Some(&(last, _)) = self.entries.last() {
            if last < at {
                let sum = self.prefix[self.entries.len()] + i128::from(amount);
                self.entries.push((at, amount));
                self.prefix.push(sum);
                return;
            }
        }
        let i = self.entries.partition_point(|(t, _)| *t < at);
        match self.entries.get_mut(i) {
            Some((t, v)) if *t == at => *v = v.saturating_add(amount),
            _ => {
                self.entries.insert(i, (at, amount));
                self.prefix.push(0);
            }
        }
        for j in i..self.entries.len() {
            self.prefix[j + 1] = self.prefix[j] + i128::from(self.entries[j].1);
        }
    }

    fn index(&self, bound: std::ops::Bound<i64>) -> usize {
        match bound {
            std::ops::Bound::Included(x) => self.entries.partition_point(|(t, _)| *t < x),
            std::ops::Bound::Excluded(x) => self.entries.partition_point(|(t, _)| *t <= x),
            std::ops::Bound::Unbounded => 0,
        }
    }

    /// The sum of the amounts from `lower` up to and including `to`, saturated to `i64`.
    pub fn sum(&self, lower: std::ops::Bound<i64>, to: i64) -> i64 {
        let (a, b) = (
            self.index(lower),
            self.entries.partition_point(|(t, _)| *t <= to),
        );
        if a >= b {
            return 0;
        }
        let s = self.prefix[b] - self.prefix[a];
        i64::try_from(s).unwrap_or(if s < 0 { i64::MIN } else { i64::MAX })
    }

    /// The time of the first entry from `lower` up to and including `to`.
    pub fn first(&self, lower: std::ops::Bound<i64>, to: i64) -> Option<i64> {
        self.entries
            .get(self.index(lower))
            .map(|(t, _)| *t)
            .filter(|t| *t <= to)
    }
}

/// What one rule has awarded one member: for caps and `maxUses`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleUsage {
    /// Times it awarded (transactions written, cashback paid).
    pub uses: u64,
    /// Points awarded, ever.
    pub total: i128,
    /// Points awarded by event time (seconds), so that any window, in any time zone, can
    /// be summed after a program update changes the window or the zone.
    pub by_time: VecMap<i64, i128>,
}

impl RuleUsage {
    /// Points awarded with event times in `[from, to)`.
    pub fn awarded_between(&self, from: Timestamp, to: Timestamp) -> i128 {
        if from >= to {
            return 0;
        }
        self.by_time.range(&from.0, &to.0).map(|(_, p)| *p).sum()
    }

    /// Records an award of `points` at `at`.
    pub fn record(&mut self, at: Timestamp, points: i64) {
        self.uses += 1;
        self.total += i128::from(points);
        *self.by_time.get_or_insert_with(&at.0, |k| (*k, 0)) += i128::from(points);
    }
}

/// A payment the engine applied: what a refund may give back.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRecord {
    /// Minor units paid.
    pub amount: i64,
    /// Upper-case currency.
    pub currency: String,
    /// Minor units refunded so far.
    pub refunded: i64,
    /// The award transactions it caused, in order.
    pub awards: Vec<AwardRecord>,
    /// The accounts whose qualifying spend it added to.
    #[serde(default)]
    pub spend_accounts: Vec<Sym>,
    /// When it was paid (a refund comes off the spend of that time).
    #[serde(default)]
    pub created: i64,
}

/// One award of a payment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwardRecord {
    /// The account credited.
    pub account: Sym,
    /// The rule, or `None` for a campaign bonus.
    pub rule: Option<Sym>,
    /// Campaigns on the award.
    pub campaigns: Vec<Sym>,
    /// Points awarded.
    pub points: i64,
    /// Points given back so far.
    pub reversed: i64,
    /// The award transaction (its lots are taken back first).
    #[serde(default = "empty")]
    pub transaction: Sym,
    /// When it was awarded (a reversal comes off the qualifying points of that time).
    #[serde(default)]
    pub created: i64,
}

fn empty() -> Sym {
    "".into()
}

/// A [`PaymentRecord`] packed into bytes: varints and length-prefixed strings, a quarter of
/// the size of the record with its own allocations (a million payments held by a fold are
/// 400 MB less). Packing is deterministic, so two packs are equal when their records are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedPayment(Box<[u8]>);

impl PaymentRecord {
    /// The record packed.
    pub fn pack(&self) -> PackedPayment {
        let mut w = Vec::with_capacity(64 + 96 * self.awards.len());
        put_int(&mut w, self.amount);
        put_str(&mut w, &self.currency);
        put_int(&mut w, self.refunded);
        put_int(&mut w, self.created);
        put_uint(&mut w, self.spend_accounts.len() as u64);
        for a in &self.spend_accounts {
            put_str(&mut w, a);
        }
        put_uint(&mut w, self.awards.len() as u64);
        for a in &self.awards {
            put_str(&mut w, &a.account);
            match &a.rule {
                None => put_uint(&mut w, 0),
                Some(r) => {
                    put_uint(&mut w, 1);
                    put_str(&mut w, r);
                }
            }
            put_uint(&mut w, a.campaigns.len() as u64);
            for c in &a.campaigns {
                put_str(&mut w, c);
            }
            put_int(&mut w, a.points);
            put_int(&mut w, a.reversed);
            put_str(&mut w, &a.transaction);
            put_int(&mut w, a.created);
        }
        PackedPayment(w.into_boxed_slice())
    }
}

impl PackedPayment {
    /// The record it packs.
    pub fn unpack(&self) -> PaymentRecord {
        let mut r = Reader(&self.0);
        let mut p = PaymentRecord {
            amount: r.int(),
            currency: r.string(),
            refunded: r.int(),
            created: r.int(),
            ..PaymentRecord::default()
        };
        let n = r.count();
        p.spend_accounts = (0..n).map(|_| r.string().into()).collect();
        let n = r.count();
        p.awards = (0..n)
            .map(|_| AwardRecord {
                account: r.string().into(),
                rule: (r.uint() == 1).then(|| r.string().into()),
                campaigns: {
                    let n = r.count();
                    (0..n).map(|_| r.string().into()).collect()
                },
                points: r.int(),
                reversed: r.int(),
                transaction: r.string().into(),
                created: r.int(),
            })
            .collect();
        p
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never: a packed record has at least its amount.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn put_uint(w: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        w.push(v as u8 | 0x80);
        v >>= 7;
    }
    w.push(v as u8);
}

fn put_int(w: &mut Vec<u8>, v: i64) {
    put_uint(w, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_str(w: &mut Vec<u8>, s: &str) {
    put_uint(w, s.len() as u64);
    w.extend_from_slice(s.as_bytes());
}

/// Reads what `put_*` wrote. Only ever given bytes [`PaymentRecord::pack`] made; past the
/// end (which would be a bug) it reads zeros and empty strings rather than panic.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    /// A number of items: each takes at least a byte, so never more than are left.
    fn count(&mut self) -> u64 {
        self.uint().min(self.0.len() as u64)
    }

    fn uint(&mut self) -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        while let Some((&b, rest)) = self.0.split_first() {
            self.0 = rest;
            if shift < 64 {
                v |= u64::from(b & 0x7f) << shift;
            }
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        v
    }

    fn int(&mut self) -> i64 {
        let v = self.uint();
        ((v >> 1) as i64) ^ -((v & 1) as i64)
    }

    fn string(&mut self) -> String {
        let n = usize::try_from(self.uint())
            .unwrap_or(usize::MAX)
            .min(self.0.len());
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        String::from_utf8_lossy(s).into_owned()
    }
}

impl State {
    /// Points of an account held by redemptions waiting for their units.
    pub fn held(&self, account: &str) -> i64 {
        self.holds
            .values()
            .filter(|h| &*h.account == account)
            .map(|h| h.cost)
            .sum()
    }

    /// Units of a reward an account is waiting for.
    pub fn held_units(&self, account: &str, reward: &str) -> i64 {
        self.holds
            .values()
            .filter(|h| &*h.account == account && h.reward == reward)
            .map(|h| h.quantity)
            .sum()
    }

    /// The ids of the accounts for which `keep` holds, sorted.
    pub fn account_ids(&self, keep: impl Fn(&Account) -> bool) -> Vec<Sym> {
        let mut ids: Vec<Sym> = self
            .accounts
            .values()
            .filter(|a| keep(a))
            .map(|a| a.id.clone())
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The program of that id.
    pub fn program(&self, id: &str) -> Option<&Arc<Program>> {
        self.programs.iter().find(|p| &*p.id == id)
    }
}

#[cfg(test)]
mod tests;
