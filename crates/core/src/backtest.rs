//! What-if (SPEC section 12): one log folded twice, with the baseline programs and with a
//! candidate's programs in their place, and what differs.
//!
//! Both folds run this crate's engine on the same parsed records (each line is parsed
//! once), so the report is exactly two plain folds side by side. The candidate's programs
//! are in place from the start, or from a time on (`from`), where they take effect as a
//! program update there would; the log's own updates of those programs are skipped in the
//! candidate's fold.
//!
//! Owns: the two folds and their tallies. Must not read or write anything: the caller
//! hands the lines in and prints the report.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::config::{parse_config, Config};
use crate::engine::Engine;
use crate::envelope::{Body, Record, Rejection};
use crate::fold::parse_line;
use crate::output::{Event, Output, TxKind};
use crate::time::Timestamp;

/// How many accounts the report lists as changing most.
pub const TOP_CHANGES: usize = 20;

/// What one fold awarded and redeemed, by program.
#[derive(Clone, Debug, Default)]
struct Tally {
    /// Points awarded by each rule (awards only, not net of reversals), by program.
    rules: BTreeMap<String, BTreeMap<String, i128>>,
    /// Redemptions, by program.
    redemptions: BTreeMap<String, i64>,
    /// Points awarded (rules and bonuses) by day, local to the program, by program.
    days: BTreeMap<String, BTreeMap<String, i128>>,
}

impl Tally {
    fn add(&mut self, engine: &Engine, out: &[Output]) {
        for o in out {
            match o {
                Output::Transaction(t) if t.kind == TxKind::Award => {
                    if let Some(rule) = &t.rule {
                        *self
                            .rules
                            .entry(t.program.to_string())
                            .or_default()
                            .entry(rule.to_string())
                            .or_default() += i128::from(t.points);
                    }
                    let tz = engine
                        .state()
                        .program(&t.program)
                        .map_or(chrono_tz::UTC, |p| p.tz);
                    let day = t
                        .created
                        .local(tz)
                        .map_or_else(String::new, |d| d.date().to_string());
                    *self
                        .days
                        .entry(t.program.to_string())
                        .or_default()
                        .entry(day)
                        .or_default() += i128::from(t.points);
                }
                Output::Event(e) if matches!(e.event, Event::RewardRedeemed { .. }) => {
                    *self
                        .redemptions
                        .entry(e.member.program.to_string())
                        .or_default() += 1;
                }
                _ => {}
            }
        }
    }
}

/// Why a backtest cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BacktestError {
    /// Neither a baseline nor the log gives any program.
    #[error("the log holds no programs: give the baseline programs (--baseline)")]
    NoBaseline,
    /// The candidate names no program.
    #[error("the candidate holds no programs")]
    NoCandidate,
    /// The candidate does not validate.
    #[error("the candidate does not validate: {0}")]
    Candidate(crate::config::ConfigError),
}

/// One of the two folds: an engine, what it is to skip or take in, and its tally.
#[derive(Debug)]
pub struct Side {
    engine: Engine,
    /// The candidate's programs, `(id, JSON text)` (empty for the baseline): the log's own
    /// updates of them are skipped once they are in place.
    programs: Vec<(String, String)>,
    /// When they take effect, while they have not yet.
    pending: Option<Timestamp>,
    tally: Tally,
    out: Vec<Output>,
}

impl Side {
    fn new(engine: Engine, programs: Vec<(String, String)>, pending: Option<Timestamp>) -> Side {
        let mut engine = engine;
        engine.track_changes(false);
        Side {
            engine,
            programs,
            pending,
            tally: Tally::default(),
            out: Vec::new(),
        }
    }

    /// Puts the candidate's programs in as program updates at `at`.
    fn put_candidate(&mut self, at: Timestamp) {
        self.pending = None;
        let created = serde_json::to_string(&at).unwrap_or_default();
        for (id, text) in &self.programs {
            let record = format!(
                r#"{{"id":"backtest_{id}","type":"loyalty.program.updated","created":{created},"data":{text}}}"#
            );
            self.engine.apply(record.as_bytes(), &mut self.out);
        }
        self.tally.add(&self.engine, &self.out);
        self.out.clear();
    }

    /// Folds one parsed line of the log.
    pub fn apply(&mut self, parsed: &Result<Record, Rejection>) {
        if let (Some(from), Ok(rec)) = (self.pending, parsed) {
            if rec.created >= from {
                self.put_candidate(from);
            }
        }
        match parsed {
            Ok(rec) => {
                // The log's own update of a program the candidate replaces is skipped once
                // the candidate's is in place.
                let replaced = self.pending.is_none()
                    && match &rec.body {
                        Body::ProgramUpdated(text) => serde_json::from_str::<Value>(text)
                            .ok()
                            .and_then(|v| v["id"].as_str().map(str::to_string))
                            .is_some_and(|id| self.programs.iter().any(|(p, _)| *p == id)),
                        _ => false,
                    };
                if !replaced {
                    self.engine.apply_record(rec, &mut self.out);
                }
            }
            Err(r) => self.out.push(Output::Rejected(r.clone())),
        }
        self.tally.add(&self.engine, &self.out);
        self.out.clear();
    }

    /// Ends the fold at `end` (carrying out what falls due there, as a fold does).
    fn end(&mut self, end: Option<Timestamp>) {
        // A candidate still waiting takes effect after the last record: nothing it would
        // change is in the log (the report shows no difference).
        self.pending = None;
        if let Some(end) = end.filter(|e| self.engine.clock().is_none_or(|c| c <= *e)) {
            let _ = self.engine.advance_to(end, &mut self.out);
            self.tally.add(&self.engine, &self.out);
            self.out.clear();
        }
    }
}

/// The two folds of a backtest of `candidate` (the config file's text) against `baseline`
/// (the baseline config, or `None` when the log holds its programs), with the candidate's
/// programs in place from the start, or from `from` on. Hand every parsed line of the log
/// to both (on one thread or two), then [`compare`] them.
pub fn sides(
    baseline: Option<&Config>,
    candidate: &str,
    from: Option<Timestamp>,
) -> Result<(Side, Side), BacktestError> {
    let config = parse_config(candidate).map_err(BacktestError::Candidate)?;
    if config.programs.is_empty() {
        return Err(BacktestError::NoCandidate);
    }
    // Each program's own text: its decimals exactly as written.
    #[derive(serde::Deserialize)]
    struct Texts {
        programs: Vec<Box<serde_json::value::RawValue>>,
    }
    let texts: Vec<String> = serde_json::from_str::<Texts>(candidate)
        .map(|t| t.programs.iter().map(|p| p.get().to_string()).collect())
        .unwrap_or_default();
    let programs: Vec<(String, String)> = config
        .programs
        .iter()
        .map(|p| p.id.to_string())
        .zip(texts)
        .collect();
    let start = baseline.map_or_else(Engine::empty, Engine::new);
    let candidate = match from {
        Some(_) => start.clone(),
        // In place from the start: the baseline's programs with the candidate's instead,
        // as one config.
        None => {
            let mut merged = baseline.cloned().unwrap_or(Config { programs: vec![] });
            for p in &config.programs {
                match merged.programs.iter_mut().find(|m| m.id == p.id) {
                    Some(slot) => *slot = p.clone(),
                    None => merged.programs.push(p.clone()),
                }
            }
            Engine::new(&merged)
        }
    };
    Ok((
        Side::new(start, Vec::new(), None),
        Side::new(candidate, programs, from),
    ))
}

/// Ends both folds at the later of their clocks and compares them.
pub fn compare(mut baseline: Side, mut candidate: Side) -> Result<Report, BacktestError> {
    let end = baseline.engine.clock().max(candidate.engine.clock());
    baseline.end(end);
    candidate.end(end);
    if baseline.engine.state().programs.is_empty() {
        return Err(BacktestError::NoBaseline);
    }
    Ok(Report::compare(
        &baseline.engine,
        &candidate.engine,
        &[baseline.tally, candidate.tally],
    ))
}

/// Both folds on one thread, a line at a time.
#[derive(Debug)]
pub struct Backtest {
    sides: (Side, Side),
    records: u64,
}

impl Backtest {
    /// See [`sides`].
    pub fn new(
        baseline: Option<&Config>,
        candidate: &str,
        from: Option<Timestamp>,
    ) -> Result<Backtest, BacktestError> {
        Ok(Backtest {
            sides: sides(baseline, candidate, from)?,
            records: 0,
        })
    }

    /// Folds one line of the log (blank lines are skipped) through both.
    pub fn apply(&mut self, line: &[u8]) {
        let Some(parsed) = parse_line(line) else {
            return;
        };
        self.records += 1;
        self.sides.0.apply(&parsed);
        self.sides.1.apply(&parsed);
    }

    /// Records folded so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Ends both folds and compares them.
    pub fn finish(self) -> Result<Report, BacktestError> {
        compare(self.sides.0, self.sides.1)
    }
}

/// A baseline beside a candidate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pair {
    /// With the baseline programs.
    pub baseline: i128,
    /// With the candidate's.
    pub candidate: i128,
}

impl Pair {
    /// `candidate - baseline`.
    pub fn difference(self) -> i128 {
        self.candidate - self.baseline
    }

    fn json(self) -> Value {
        json!({"baseline": self.baseline, "candidate": self.candidate, "difference": self.difference()})
    }
}

/// One account's balance, baseline beside candidate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The account.
    pub account: String,
    /// Its customer.
    pub customer: String,
    /// The balances.
    pub balance: Pair,
}

/// What differs for one program.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgramReport {
    /// The program.
    pub program: String,
    /// Points awarded by each rule, the candidate's rules first in its order, then the
    /// baseline's others.
    pub rules: Vec<(String, Pair)>,
    /// The sum of the balances at the end.
    pub points_outstanding: Pair,
    /// Members per tier name at the end.
    pub members_by_tier: BTreeMap<String, Pair>,
    /// Redemptions.
    pub redemptions: Pair,
    /// The [`TOP_CHANGES`] accounts whose balance changes most (by absolute difference,
    /// then account id); accounts whose balance does not change are not listed.
    pub top_changes: Vec<Change>,
    /// Points awarded per day (local to the program).
    pub days: Vec<(String, Pair)>,
}

/// What differs, program by program.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Every program of either fold, the candidate's order first.
    pub programs: Vec<ProgramReport>,
}

impl Report {
    fn compare(baseline: &Engine, candidate: &Engine, tally: &[Tally; 2]) -> Report {
        let mut order: Vec<String> = Vec::new();
        for e in [candidate, baseline] {
            for p in &e.state().programs {
                if !order.iter().any(|o| **o == *p.id) {
                    order.push(p.id.to_string());
                }
            }
        }
        let mut views: [BTreeMap<String, crate::output::AccountView>; 2] = Default::default();
        for (i, e) in [baseline, candidate].into_iter().enumerate() {
            views[i] = e.accounts().map(|a| (a.id.clone(), a)).collect();
        }
        let programs = order
            .into_iter()
            .map(|program| {
                let mut r = ProgramReport {
                    program: program.clone(),
                    ..ProgramReport::default()
                };
                let mut rule_ids: Vec<String> = Vec::new();
                for e in [candidate, baseline] {
                    for rule in e
                        .state()
                        .program(&program)
                        .into_iter()
                        .flat_map(|p| &p.rules)
                    {
                        if !rule_ids.iter().any(|r| **r == *rule.id) {
                            rule_ids.push(rule.id.to_string());
                        }
                    }
                }
                for t in tally {
                    for rule in t.rules.get(&program).into_iter().flat_map(|m| m.keys()) {
                        if !rule_ids.contains(rule) {
                            rule_ids.push(rule.clone());
                        }
                    }
                }
                let side = |i: usize, rule: &str| {
                    tally[i]
                        .rules
                        .get(&program)
                        .and_then(|m| m.get(rule))
                        .copied()
                        .unwrap_or(0)
                };
                r.rules = rule_ids
                    .iter()
                    .map(|rule| {
                        let pair = Pair {
                            baseline: side(0, rule),
                            candidate: side(1, rule),
                        };
                        (rule.clone(), pair)
                    })
                    .collect();
                let mut tiers: BTreeSet<String> = BTreeSet::new();
                for e in [candidate, baseline] {
                    if let Some(p) = e.state().program(&program) {
                        tiers.extend(p.tier_list().iter().map(|t| t.name.clone()));
                    }
                }
                for t in tiers {
                    r.members_by_tier.insert(t, Pair::default());
                }
                let mut balances: BTreeMap<&str, (Pair, &str)> = BTreeMap::new();
                for (i, side) in views.iter().enumerate() {
                    for a in side.values().filter(|a| a.program == program) {
                        let pair = if i == 0 {
                            &mut r.points_outstanding.baseline
                        } else {
                            &mut r.points_outstanding.candidate
                        };
                        *pair += a.balance;
                        if let Some(t) = &a.tier {
                            let p = r.members_by_tier.entry(t.name.clone()).or_default();
                            if i == 0 {
                                p.baseline += 1;
                            } else {
                                p.candidate += 1;
                            }
                        }
                        let b = balances
                            .entry(&a.id)
                            .or_insert((Pair::default(), &a.customer));
                        if i == 0 {
                            b.0.baseline = a.balance;
                        } else {
                            b.0.candidate = a.balance;
                        }
                    }
                }
                let mut changes: Vec<Change> = balances
                    .into_iter()
                    .filter(|(_, (p, _))| p.difference() != 0)
                    .map(|(id, (p, customer))| Change {
                        account: id.to_string(),
                        customer: customer.to_string(),
                        balance: p,
                    })
                    .collect();
                changes.sort_by(|a, b| {
                    b.balance
                        .difference()
                        .unsigned_abs()
                        .cmp(&a.balance.difference().unsigned_abs())
                        .then_with(|| a.account.cmp(&b.account))
                });
                changes.truncate(TOP_CHANGES);
                r.top_changes = changes;
                r.redemptions = Pair {
                    baseline: i128::from(tally[0].redemptions.get(&program).copied().unwrap_or(0)),
                    candidate: i128::from(tally[1].redemptions.get(&program).copied().unwrap_or(0)),
                };
                let mut days: BTreeMap<String, Pair> = BTreeMap::new();
                for (i, t) in tally.iter().enumerate() {
                    for (day, n) in t.days.get(&program).into_iter().flatten() {
                        let p = days.entry(day.clone()).or_default();
                        if i == 0 {
                            p.baseline += n;
                        } else {
                            p.candidate += n;
                        }
                    }
                }
                r.days = days.into_iter().collect();
                r
            })
            .collect();
        Report { programs }
    }

    /// `{"programs": [...]}` as SPEC section 12 gives it, each program with its `days`
    /// beside (points awarded per day, for charts).
    pub fn to_json(&self) -> Value {
        let programs: Vec<Value> = self
            .programs
            .iter()
            .map(|p| {
                json!({
                    "program": p.program,
                    "rules": p.rules.iter().map(|(rule, pair)| {
                        let mut v = pair.json();
                        v["rule"] = json!(rule);
                        v
                    }).collect::<Vec<_>>(),
                    "pointsOutstanding": p.points_outstanding.json(),
                    "membersByTier": p.members_by_tier.iter()
                        .map(|(t, pair)| (t.clone(), pair.json()))
                        .collect::<serde_json::Map<String, Value>>(),
                    "redemptions": p.redemptions.json(),
                    "topChanges": p.top_changes.iter().map(|c| {
                        let mut v = c.balance.json();
                        v["account"] = json!(c.account);
                        v["customer"] = json!(c.customer);
                        v
                    }).collect::<Vec<_>>(),
                    "days": p.days.iter().map(|(d, pair)| {
                        json!({"date": d, "baseline": pair.baseline, "candidate": pair.candidate})
                    }).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({ "programs": programs })
    }
}
