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

mod due;
mod payment;

pub use due::*;
pub use payment::*;

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
    /// Sorted by time, one entry per time, each with the sum of the amounts before it: one
    /// allocation, so that a record's activity is read from one place in memory.
    entries: Vec<Entry>,
}

/// One time's amount in an [`Activity`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    at: i64,
    amount: i64,
    /// The sum of the amounts of the entries before this one (derived from them).
    before: i128,
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
        s.collect_map(self.entries.iter().map(|e| (e.at, e.amount)))
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
        if let Some(last) = self.entries.last() {
            if last.at < at {
                let before = last.before + i128::from(last.amount);
                self.entries.push(Entry { at, amount, before });
                return;
            }
        }
        let i = self.entries.partition_point(|e| e.at < at);
        match self.entries.get_mut(i) {
            Some(e) if e.at == at => e.amount = e.amount.saturating_add(amount),
            _ => self.entries.insert(
                i,
                Entry {
                    at,
                    amount,
                    before: 0,
                },
            ),
        }
        let mut before = i.checked_sub(1).map_or(0, |j| {
            let e = &self.entries[j];
            e.before + i128::from(e.amount)
        });
        for e in &mut self.entries[i..] {
            e.before = before;
            before += i128::from(e.amount);
        }
    }

    fn index(&self, bound: std::ops::Bound<i64>) -> usize {
        match bound {
            std::ops::Bound::Included(x) => self.entries.partition_point(|e| e.at < x),
            std::ops::Bound::Excluded(x) => self.entries.partition_point(|e| e.at <= x),
            std::ops::Bound::Unbounded => 0,
        }
    }

    /// The sum of the amounts of the entries before the `i`-th (all of them past the end).
    fn before(&self, i: usize) -> i128 {
        match self.entries.get(i) {
            Some(e) => e.before,
            None => self
                .entries
                .last()
                .map_or(0, |e| e.before + i128::from(e.amount)),
        }
    }

    /// The sum of the amounts from `lower` up to and including `to`, saturated to `i64`.
    pub fn sum(&self, lower: std::ops::Bound<i64>, to: i64) -> i64 {
        let (a, b) = (
            self.index(lower),
            self.entries.partition_point(|e| e.at <= to),
        );
        if a >= b {
            return 0;
        }
        let s = self.before(b) - self.before(a);
        i64::try_from(s).unwrap_or(if s < 0 { i64::MIN } else { i64::MAX })
    }

    /// The time of the first entry from `lower` up to and including `to`.
    pub fn first(&self, lower: std::ops::Bound<i64>, to: i64) -> Option<i64> {
        self.entries
            .get(self.index(lower))
            .map(|e| e.at)
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
