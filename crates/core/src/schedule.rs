//! The schedule: time-driven effects in the order they fall due (SPEC section 6).
//!
//! Two kinds of entries, kept apart because they are not alike:
//! - lot effects (expiries and warnings, two for almost every award, and vests): never
//!   removed (a lot that is gone by then is found empty when they fall due), so they sit in
//!   a binary heap of 40-byte entries whose account ids are shared;
//! - tier evaluations, period closes and birthdays, a few per account, which move: an
//!   ordered set, from which a moved entry is removed.
//!
//! Together they pop in exactly the order of one ordered set of [`Due`]s: by time, then
//! kind, then account, then item (lots by number: the order they were awarded).
//!
//! Owns: the order of time-driven effects. Must not decide what an effect does.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeSet, BinaryHeap, HashSet};
use std::sync::Arc;

use crate::state::{Due, Effect, FixedState, LotEffect};
use crate::Sym;

/// Time-driven effects, in the order they fall due.
#[derive(Clone, Debug, Default)]
pub struct Schedule {
    /// Lot effects.
    lots: BinaryHeap<Reverse<LotDue>>,
    /// Everything else.
    timed: BTreeSet<Due>,
    /// The account ids the lot entries share.
    names: HashSet<Arc<str>, FixedState>,
    /// Every entry up to this time has been popped ([`Schedule::pop_due_by`] ran dry).
    drained: Option<i64>,
    /// The lot entries added at or before `drained` since: overdue when added (a late
    /// award's lot, a warning due at once). Kept apart so that [`Schedule::due_by`] need not
    /// walk the heap.
    early_lots: Vec<LotDue>,
}

/// A lot's effect: a [`Due`] whose effect is one of [`LotEffect`]'s.
#[derive(Clone, Debug, PartialEq, Eq)]
struct LotDue {
    at: i64,
    kind: LotEffect,
    account: Arc<str>,
    lot: u64,
}

impl LotDue {
    fn to_due(&self) -> Due {
        Due {
            at: self.at,
            account: self.account.clone(),
            effect: self.kind.on(self.lot),
        }
    }
}

impl Ord for LotDue {
    fn cmp(&self, other: &LotDue) -> Ordering {
        self.at
            .cmp(&other.at)
            .then(self.kind.cmp(&other.kind))
            .then_with(|| self.account.cmp(&other.account))
            .then_with(|| self.lot.cmp(&other.lot))
    }
}

impl PartialOrd for LotDue {
    fn partial_cmp(&self, other: &LotDue) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Schedule {
    /// Adds an effect (adding one already there changes nothing).
    pub fn insert(&mut self, due: Due) {
        match due.effect.on_lot() {
            Some((kind, lot)) => self.insert_lot(due.at, kind, &due.account, lot),
            None => {
                self.timed.insert(due);
            }
        }
    }

    /// Adds a lot's effect of `kind` at `at` on the lot numbered `lot`, without making its
    /// strings.
    pub fn insert_lot(&mut self, at: i64, kind: LotEffect, account: &str, lot: u64) {
        let account = match self.names.get(account) {
            Some(a) => a.clone(),
            None => {
                let a: Arc<str> = account.into();
                self.names.insert(a.clone());
                a
            }
        };
        let due = LotDue {
            at,
            kind,
            account,
            lot,
        };
        if self.drained.is_some_and(|d| at <= d) {
            self.early_lots.push(due.clone());
        }
        self.lots.push(Reverse(due));
    }

    /// Removes an effect that moves (a tier evaluation, a birthday; not a lot's).
    pub fn remove(&mut self, due: &Due) {
        self.timed.remove(due);
    }

    /// Keeps only the effects other than lots' for which `keep` holds.
    pub fn retain_timed(&mut self, keep: impl FnMut(&Due) -> bool) {
        self.timed.retain(keep);
    }

    /// Forgets the effects of every account `keep` refuses: an account leaving an engine's
    /// working set takes its effects along (program-wide effects stay). Its effects come
    /// back with it (`Engine::load_account`).
    pub fn retain_accounts(&mut self, keep: impl Fn(&str) -> bool) {
        // Asked once an account, not once a lot: every lot entry shares its account's id
        // with `names` (`insert_lot`), so the ids refused are told by address.
        let address = |a: &Arc<str>| Arc::as_ptr(a) as *const u8 as usize;
        let gone: HashSet<usize, FixedState> = self
            .names
            .iter()
            .filter(|n| !keep(n))
            .map(address)
            .collect();
        if !gone.is_empty() {
            self.lots
                .retain(|Reverse(l)| !gone.contains(&address(&l.account)));
            self.early_lots
                .retain(|l| !gone.contains(&address(&l.account)));
        }
        self.timed
            .retain(|d| d.account.is_empty() || keep(&d.account));
        self.names.retain(|n| Arc::strong_count(n) > 1);
    }

    /// Marks every entry up to `at` as popped, for a schedule built without them (entries
    /// added at or before it later are overdue, [`Schedule::due_by`]).
    pub fn set_drained(&mut self, at: Option<i64>) {
        self.drained = at;
        self.early_lots.clear();
    }

    /// Every effect due at or before `to`, in order. Cheap for `to` up to where the
    /// schedule was last drained (the clock): the lots among them were noted when added.
    pub fn due_by(&self, to: i64) -> Vec<Due> {
        let mut out: Vec<Due> = self
            .timed
            .iter()
            .take_while(|d| d.at <= to)
            .cloned()
            .collect();
        if self.lots.peek().is_some_and(|Reverse(l)| l.at <= to) {
            let as_due = LotDue::to_due;
            if self.drained.is_some_and(|d| to <= d) {
                out.extend(self.early_lots.iter().filter(|l| l.at <= to).map(as_due));
            } else {
                out.extend(
                    self.lots
                        .iter()
                        .map(|Reverse(l)| l)
                        .filter(|l| l.at <= to)
                        .map(as_due),
                );
            }
            out.sort();
            out.dedup();
        }
        out
    }

    /// The programs whose period close falls due at or before `to`, in the order they do.
    pub fn closes_due_by(&self, to: i64) -> Vec<Sym> {
        self.timed
            .iter()
            .take_while(|d| d.at <= to)
            .filter_map(|d| match &d.effect {
                Effect::PeriodClose(p) => Some(p.clone()),
                _ => None,
            })
            .collect()
    }

    /// Removes everything.
    pub fn clear(&mut self) {
        *self = Schedule::default();
    }

    /// How many effects are scheduled.
    pub fn len(&self) -> usize {
        self.lots.len() + self.timed.len()
    }

    /// Whether nothing is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes and returns the first effect, if it falls due at or before `to`.
    pub fn pop_due_by(&mut self, to: i64) -> Option<Due> {
        // Nothing is left at or before `to`: noted, for `due_by`.
        let dry = |s: &mut Schedule| {
            if s.drained.is_none_or(|d| d < to) {
                s.drained = Some(to);
                s.early_lots.clear();
            }
            None
        };
        let lot_first = match (self.lots.peek(), self.timed.first()) {
            (None, None) => return dry(self),
            // The set holds no lot effect, so of one time, kind and account the lot's comes
            // first.
            (Some(Reverse(l)), Some(t)) => {
                (l.at, l.kind.rank())
                    .cmp(&(t.at, t.effect.rank()))
                    .then_with(|| l.account.cmp(&t.account))
                    != Ordering::Greater
            }
            (l, _) => l.is_some(),
        };
        if lot_first {
            if self.lots.peek().is_some_and(|Reverse(l)| l.at > to) {
                return dry(self);
            }
            let Reverse(l) = self.lots.pop()?;
            // A set holds an effect once.
            while self.lots.peek().is_some_and(|Reverse(n)| *n == l) {
                self.lots.pop();
            }
            if self.drained.is_some_and(|d| l.at <= d) {
                self.early_lots.retain(|e| *e != l);
            }
            Some(l.to_due())
        } else {
            if self.timed.first().is_some_and(|t| t.at > to) {
                return dry(self);
            }
            self.timed.pop_first()
        }
    }

    /// Every effect, in order (for tests and tools).
    pub fn to_vec(&self) -> Vec<Due> {
        let mut all: Vec<Due> = self
            .lots
            .iter()
            .map(|Reverse(l)| l.to_due())
            .chain(self.timed.iter().cloned())
            .collect();
        all.sort();
        all.dedup();
        all
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Schedule) -> bool {
        self.to_vec() == other.to_vec()
    }
}

impl Eq for Schedule {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schedule pops what one ordered set of the same entries pops, in the same order,
    /// whatever the order they were added in, duplicates and odd items included.
    #[test]
    fn pops_in_the_order_of_an_ordered_set() {
        let mut x: u64 = 11;
        let mut next = |n: u64| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (x >> 33) % n
        };
        let mut s = Schedule::default();
        let mut set = BTreeSet::new();
        for round in 0..2000 {
            let program = format!("prog_{}", next(2));
            let effect = match next(9) {
                0 => Effect::Evaluate,
                1 => Effect::EvaluateAtClose(program.into()),
                2 => Effect::PeriodClose(program.into()),
                3 => Effect::Birthday,
                4 => Effect::Vest(next(120)),
                5 | 6 => Effect::Warning(next(120)),
                _ => Effect::Expiry(next(120)),
            };
            let account = match effect {
                Effect::PeriodClose(_) => "".into(),
                _ => format!("loy_{}", next(7)).into(),
            };
            let due = Due {
                at: next(50) as i64,
                account,
                effect,
            };
            s.insert(due.clone());
            set.insert(due);
            // What is due up to the point the schedule was drained to (the clock), before
            // it and after it, is what the set holds there.
            if let Some(d) = s.drained {
                for to in [d, d - 3, d + 5] {
                    let want: Vec<Due> = set.iter().filter(|x| x.at <= to).cloned().collect();
                    assert_eq!(s.due_by(to), want, "due by {to}, drained to {d}");
                }
            }
            // An account leaving the working set takes its effects along, lots and all.
            if round % 97 == 0 {
                let gone = format!("loy_{}", next(7));
                let keep = |a: &str| a != gone;
                s.retain_accounts(keep);
                set.retain(|d| d.account.is_empty() || keep(&d.account));
                assert_eq!(s.to_vec(), set.iter().cloned().collect::<Vec<_>>());
                assert!(!s.names.iter().any(|n| **n == *gone), "{gone} still named");
            }
            if round % 7 == 0 {
                let to = next(50) as i64;
                loop {
                    let want = set.first().filter(|d| d.at <= to).cloned();
                    if let Some(d) = &want {
                        set.remove(d);
                    }
                    assert_eq!(s.pop_due_by(to), want);
                    if want.is_none() {
                        break;
                    }
                }
            }
        }
        assert_eq!(s.to_vec(), set.iter().cloned().collect::<Vec<_>>());
        while let Some(d) = set.pop_first() {
            assert_eq!(s.pop_due_by(i64::MAX), Some(d));
        }
        assert!(s.pop_due_by(i64::MAX).is_none());
        assert!(s.is_empty());
    }

    /// At one instant: vests, expiries, warnings, tier effects (a program's close before
    /// its members' evaluations, having no account), birthdays; within a kind by account;
    /// within an account lots by number, and a rolling evaluation before those at a close.
    #[test]
    fn effects_at_one_instant_run_in_the_specs_order() {
        let due = |account: &str, effect: Effect| Due {
            at: 7,
            account: account.into(),
            effect,
        };
        let close = |p: &str| Effect::EvaluateAtClose(p.into());
        let want = vec![
            due("loy_a", Effect::Vest(3)),
            due("loy_b", Effect::Vest(1)),
            due("loy_a", Effect::Expiry(9)),
            due("loy_a", Effect::Expiry(10)),
            due("loy_b", Effect::Expiry(2)),
            due("loy_a", Effect::Warning(1)),
            due("", Effect::PeriodClose("prog_b".into())),
            due("loy_a", Effect::Evaluate),
            due("loy_a", close("prog_a")),
            due("loy_a", close("prog_b")),
            due("loy_b", close("prog_a")),
            due("loy_a", Effect::Birthday),
            due("loy_b", Effect::Birthday),
            Due {
                at: 8,
                ..due("loy_a", Effect::Vest(0))
            },
        ];
        let mut shuffled = want.clone();
        shuffled.reverse();
        shuffled.swap(2, 9);
        shuffled.sort();
        assert_eq!(shuffled, want);
    }

    /// A due effect is stored as its kind's name and its item as text, as earlier versions
    /// wrote them, and read back; shapes no version wrote are refused.
    #[test]
    fn effects_are_stored_as_earlier_versions_wrote_them() {
        let due = |account: &str, effect: Effect| Due {
            at: 5,
            account: account.into(),
            effect,
        };
        for (d, kind, text) in [
            (due("loy_a", Effect::Expiry(12)), "Expiry", "12"),
            (due("loy_a", Effect::Warning(0)), "Warning", "0"),
            (due("loy_a", Effect::Vest(3)), "Vest", "3"),
            (due("loy_a", Effect::Evaluate), "Tier", ""),
            (due("loy_a", Effect::Birthday), "Birthday", ""),
            (
                due("", Effect::PeriodClose("prog_a".into())),
                "Tier",
                "prog_a",
            ),
            (
                due("loy_a", Effect::EvaluateAtClose("prog_a".into())),
                "Tier",
                "close:prog_a",
            ),
        ] {
            let json = serde_json::to_value(&d).unwrap();
            assert_eq!(
                (json["kind"].as_str(), json["item"].as_str()),
                (Some(kind), Some(text))
            );
            assert_eq!(serde_json::from_value::<Due>(json).unwrap(), d);
        }
        for (kind, account, item) in [
            ("Expiry", "loy_a", "01"),
            ("Expiry", "loy_a", ""),
            ("Expiry", "", "3"),
            ("Birthday", "loy_a", "3"),
            ("Tier", "loy_a", "3"),
            ("Tier", "", ""),
            ("Tide", "loy_a", ""),
        ] {
            let odd = serde_json::json!({"at": 1, "kind": kind, "account": account, "item": item});
            assert!(
                serde_json::from_value::<Due>(odd).is_err(),
                "{kind} {account:?} {item:?}"
            );
        }
    }

    /// Twelve lots of one account due at one instant pop in the order they were awarded,
    /// whatever order they were added in.
    #[test]
    fn lots_due_together_pop_by_number() {
        let mut s = Schedule::default();
        for lot in [11u64, 3, 10, 0, 9, 1, 2, 4, 5, 6, 7, 8] {
            s.insert_lot(100, LotEffect::Expiry, "loy_a", lot);
        }
        let popped: Vec<Effect> = std::iter::from_fn(|| s.pop_due_by(100))
            .map(|d| d.effect)
            .collect();
        let want: Vec<Effect> = (0..12).map(Effect::Expiry).collect();
        assert_eq!(popped, want);
    }
}
