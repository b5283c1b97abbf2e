//! A program's statistics (`GET /v1/programs/{id}/stats`), kept current in the same write
//! batch as the state they count, so that a request reads a handful of keys and never the
//! ledger.
//!
//! Keys (parts separated by a NUL byte, as the API's other indexes):
//! - `S/{program}\0q{quarter}` → [`DayStats`]: what the ledger says of one UTC quarter of an
//!   hour (`quarter`: unix seconds / 900, 12 characters), which a read adds up into the days
//!   of the program's time zone as it is then (every zone's offset is a whole number of
//!   quarters), so the counts depend on the ledger alone, not on the zone or the batches;
//! - `S/{program}\0m` → [`Totals`]: members (accounts opened) and points outstanding (the
//!   sum of every transaction's points, which is the sum of the balances);
//! - `S/{program}\0t{tier}` → the number of accounts holding the tier.
//!
//! Each is a pure function of the ledger lines and the accounts, so `loyalty verify`
//! recomputes them with the other indexes, and a state written before them gets them when
//! the engine opens it. Counts that are zero are not kept.

use std::collections::BTreeMap;

use chrono_tz::Tz;
use loyalty_core::output::{Event, Output};
use loyalty_core::time::Timestamp;
use rocksdb::DB;
use serde::{Deserialize, Serialize};

use crate::{corrupt, StoreError};

/// The kind a [`StatLine`] gives a transfer's credit that went back to its sender.
const RETURNED: &str = "transfer_returned";

/// What one output line adds to its program's statistics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatLine {
    /// The program.
    pub program: String,
    /// When (unix seconds).
    pub at: i64,
    /// A transaction's type and points, or `None` for an account opened.
    pub transaction: Option<(String, i64)>,
}

impl StatLine {
    /// What an output adds: transactions and `loyalty.account.created`. A pending award
    /// or reversal adds nothing: its points reach the balance, and these counts, when they
    /// vest (SPEC section 13).
    pub fn of_output(o: &Output) -> Option<StatLine> {
        match o {
            Output::Transaction(t) if t.status == Some(loyalty_core::output::Status::Pending) => {
                None
            }
            Output::Transaction(t) => {
                // A transfer's credit given back: what was sent reached no one.
                let kind = match t.metadata {
                    loyalty_core::output::TxMeta::Returned => RETURNED,
                    _ => t.kind.as_str(),
                };
                Some(StatLine {
                    program: str::to_owned(&t.program),
                    at: t.created.0,
                    transaction: Some((kind.to_string(), t.points)),
                })
            }
            Output::Event(e) if matches!(e.event, Event::AccountCreated { .. }) => Some(StatLine {
                program: str::to_owned(&e.member.program),
                at: e.created.0,
                transaction: None,
            }),
            _ => None,
        }
    }

    /// What a stored output line adds, as [`StatLine::of_output`] gives it for the output
    /// it was printed from.
    pub fn of_line(line: &crate::api::StoredLine<'_>) -> Option<StatLine> {
        let at = line
            .created
            .as_deref()
            .and_then(Timestamp::parse_rfc3339)
            .map(|t| t.0);
        let kind_of = line.kind_of.as_deref();
        match line.kind.as_deref()? {
            "transaction" if line.status.as_deref() == Some("pending") => None,
            "transaction" => {
                let returned = line.metadata.as_ref().and_then(|m| m.returned) == Some(true);
                let kind = if returned { RETURNED } else { kind_of? };
                Some(StatLine {
                    program: line.program.as_deref()?.to_string(),
                    at: at?,
                    transaction: Some((kind.to_string(), line.points?)),
                })
            }
            "event" if kind_of == Some("loyalty.account.created") => Some(StatLine {
                program: line.data.as_ref()?.program.as_deref()?.to_string(),
                at: at?,
                transaction: None,
            }),
            _ => None,
        }
    }
}

/// One day of a program: accounts opened, and points by what moved them. `earned`,
/// `redeemed`, `expired` and `reversed` are magnitudes; `adjusted` is signed (credits less
/// debits); `transferred` is what members sent each other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayStats {
    /// Accounts opened.
    pub enrolled: i64,
    /// Points awarded (rules and campaign bonuses).
    pub earned: i128,
    /// Points spent on rewards.
    pub redeemed: i128,
    /// Points expired.
    pub expired: i128,
    /// Points taken back by refunds.
    pub reversed: i128,
    /// Adjustments, signed.
    pub adjusted: i128,
    /// Points sent from one member to another.
    pub transferred: i128,
}

impl DayStats {
    fn add(&mut self, o: &DayStats) {
        self.enrolled += o.enrolled;
        self.earned += o.earned;
        self.redeemed += o.redeemed;
        self.expired += o.expired;
        self.reversed += o.reversed;
        self.adjusted += o.adjusted;
        self.transferred += o.transferred;
    }
}

/// A program's members and points outstanding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Accounts opened.
    pub members: i64,
    /// The sum of the balances.
    pub outstanding: i128,
}

/// `S/{program}\0`.
pub fn stats_prefix(program: &str) -> Vec<u8> {
    let mut k = b"S/".to_vec();
    k.extend_from_slice(program.as_bytes());
    k.push(0);
    k
}

/// A quarter of an hour: unix seconds / 900.
const QUARTER: i64 = 900;

fn quarter_key(program: &str, quarter: i64) -> Vec<u8> {
    let mut k = stats_prefix(program);
    k.push(b'q');
    // Quarters of the years 0001 to 9999 fit 11 digits either side of 1970.
    let sign = if quarter < 0 { '-' } else { '0' };
    k.extend_from_slice(format!("{sign}{:011}", quarter.unsigned_abs()).as_bytes());
    k
}

fn parse_quarter(digits: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(digits).ok()?;
    match text.strip_prefix('-') {
        Some(rest) => rest.parse::<i64>().ok().map(|q| -q),
        None => text.parse().ok(),
    }
}

fn totals_key(program: &str) -> Vec<u8> {
    let mut k = stats_prefix(program);
    k.push(b'm');
    k
}

fn tier_count_key(program: &str, tier: &str) -> Vec<u8> {
    let mut k = stats_prefix(program);
    k.push(b't');
    k.extend_from_slice(tier.as_bytes());
    k
}

/// The local date of `at` in `tz`, `YYYY-MM-DD`.
pub fn local_date(at: i64, tz: Tz) -> String {
    Timestamp(at)
        .local(tz)
        .map_or_else(|| "0000-00-00".to_string(), |t| t.date().to_string())
}

/// What a batch (or the whole ledger) adds to the statistics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatDeltas {
    days: BTreeMap<Vec<u8>, DayStats>,
    totals: BTreeMap<Vec<u8>, Totals>,
    tiers: BTreeMap<Vec<u8>, i64>,
}

impl StatDeltas {
    /// Counts a line, in its quarter of an hour.
    pub fn add_line(&mut self, s: &StatLine) {
        let mut day = DayStats::default();
        let mut totals = Totals::default();
        match &s.transaction {
            None => {
                day.enrolled = 1;
                totals.members = 1;
            }
            Some((kind, points)) => {
                let p = i128::from(*points);
                totals.outstanding = p;
                match kind.as_str() {
                    "award" | "vest" => day.earned = p,
                    "redemption" => day.redeemed = -p,
                    "expiry" => day.expired = -p,
                    "reversal" => day.reversed = -p,
                    "adjustment" => day.adjusted = p,
                    "transfer_out" => day.transferred = -p,
                    RETURNED => day.transferred = -p,
                    _ => {}
                }
            }
        }
        self.days
            .entry(quarter_key(&s.program, s.at.div_euclid(QUARTER)))
            .or_default()
            .add(&day);
        let t = self.totals.entry(totals_key(&s.program)).or_default();
        t.members += totals.members;
        t.outstanding += totals.outstanding;
    }

    /// Counts `n` more (or fewer) accounts holding `tier`.
    pub fn add_tier(&mut self, program: &str, tier: &str, n: i64) {
        *self.tiers.entry(tier_count_key(program, tier)).or_default() += n;
    }

    /// The entries these counts make on their own (for a rebuild, or `verify`).
    pub fn entries(&self) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, StoreError> {
        self.merged(|_| Ok(None))
    }

    /// The counts added to what `current` holds for each key, as the entries to write:
    /// `None` for a key whose count is now zero.
    fn merged(
        &self,
        current: impl Fn(&[u8]) -> Result<Option<Vec<u8>>, StoreError>,
    ) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, StoreError> {
        let mut out = BTreeMap::new();
        for (k, d) in &self.days {
            let mut now: DayStats = decode(k, current(k)?)?;
            now.add(d);
            if now != DayStats::default() {
                out.insert(k.clone(), json(k, &now)?);
            } else {
                out.insert(k.clone(), Vec::new());
            }
        }
        for (k, d) in &self.totals {
            let mut now: Totals = decode(k, current(k)?)?;
            now.members += d.members;
            now.outstanding += d.outstanding;
            if now != Totals::default() {
                out.insert(k.clone(), json(k, &now)?);
            } else {
                out.insert(k.clone(), Vec::new());
            }
        }
        for (k, d) in &self.tiers {
            let now: i64 = decode::<i64>(k, current(k)?)? + d;
            if now != 0 {
                out.insert(k.clone(), json(k, &now)?);
            } else {
                out.insert(k.clone(), Vec::new());
            }
        }
        Ok(out)
    }

    /// Adds these counts to the stored ones, into the batch that commits what they count.
    pub(crate) fn write(&self, db: &DB, wb: &mut crate::Writes) -> Result<(), StoreError> {
        let keys: Vec<&Vec<u8>> = self
            .days
            .keys()
            .chain(self.totals.keys())
            .chain(self.tiers.keys())
            .collect();
        let values = db.multi_get(keys.iter().map(|k| k.as_slice()));
        let mut stored = BTreeMap::new();
        for (k, v) in keys.into_iter().zip(values) {
            if let Some(v) = v? {
                stored.insert(k.clone(), v);
            }
        }
        for (k, v) in self.merged(|k| Ok(stored.get(k).cloned()))? {
            if v.is_empty() {
                wb.delete(k);
            } else {
                wb.put(k, v);
            }
        }
        Ok(())
    }

    /// True when nothing is counted.
    pub fn is_empty(&self) -> bool {
        self.days.is_empty() && self.totals.is_empty() && self.tiers.is_empty()
    }
}

fn decode<T: Default + serde::de::DeserializeOwned>(
    k: &[u8],
    v: Option<Vec<u8>>,
) -> Result<T, StoreError> {
    match v {
        Some(v) => serde_json::from_slice(&v).map_err(|e| corrupt(k, e)),
        None => Ok(T::default()),
    }
}

fn json<T: Serialize>(k: &[u8], v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| corrupt(k, e))
}

/// A program's statistics as stored: its totals, members per tier, and its days.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredStats {
    /// Members and points outstanding.
    pub totals: Totals,
    /// Accounts per tier name.
    pub tiers: BTreeMap<String, i64>,
    /// Days in order, `(YYYY-MM-DD, counts)`.
    pub days: Vec<(String, DayStats)>,
}

impl crate::View<'_> {
    /// A program's stored statistics, with the days of `tz` from `from` to `to` (inclusive
    /// dates, `YYYY-MM-DD`) that have any activity.
    pub fn program_stats(
        &self,
        program: &str,
        tz: Tz,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<StoredStats, StoreError> {
        let prefix = stats_prefix(program);
        let mut out = StoredStats::default();
        let mut entries = Vec::new();
        let mut days: BTreeMap<String, DayStats> = BTreeMap::new();
        self.scan(&prefix, &prefix, crate::Walk::Up, |k, v| {
            entries.push((k.to_vec(), v.to_vec()));
            Ok(true)
        })?;
        for (k, v) in entries {
            let rest = &k[prefix.len()..];
            match rest.split_first() {
                Some((b'm', [])) => out.totals = decode(&k, Some(v))?,
                Some((b't', tier)) => {
                    let tier = String::from_utf8(tier.to_vec()).map_err(|e| corrupt(&k, e))?;
                    out.tiers.insert(tier, decode(&k, Some(v))?);
                }
                Some((b'q', digits)) => {
                    let quarter = parse_quarter(digits)
                        .ok_or_else(|| corrupt(&k, "not a quarter of an hour"))?;
                    let date = local_date(quarter * QUARTER, tz);
                    if from.is_some_and(|f| date.as_str() < f)
                        || to.is_some_and(|t| date.as_str() > t)
                    {
                        continue;
                    }
                    days.entry(date).or_default().add(&decode(&k, Some(v))?);
                }
                _ => return Err(corrupt(&k, "not a statistics key")),
            }
        }
        out.days = days
            .into_iter()
            .filter(|(_, d)| *d != DayStats::default())
            .collect();
        Ok(out)
    }
}
