//! The clock (SPEC section 6): moving it, the schedule of time-driven effects (expiry and
//! its warning, tier evaluations, calendar period closes, birthdays), and carrying out, in
//! time order, each effect that falls due. What an effect does belongs to its rule's
//! module (`lots`, `tiers`, `enrolment`); this module decides when.
//!
//! Owns: the schedule and the clock. Must not read a wall clock.

use crate::config::Program;
use crate::engine::Engine;
use crate::output::Output;
use crate::state::{Account, Due, Effect, LotEffect};
use crate::tiers;
use crate::time::Timestamp;

/// `days` local days before `t`, at the same local time.
pub(crate) fn minus_days(t: Timestamp, days: u32, tz: chrono_tz::Tz) -> Option<Timestamp> {
    shift_days(t, -i64::from(days), tz)
}

/// `days` local days after `t`, at the same local time.
pub(crate) fn plus_days(t: Timestamp, days: u32, tz: chrono_tz::Tz) -> Option<Timestamp> {
    shift_days(t, i64::from(days), tz)
}

/// `t` moved by `days` local days, at the same local time (a time the day lacks moves as
/// section 5 says).
fn shift_days(t: Timestamp, days: i64, tz: chrono_tz::Tz) -> Option<Timestamp> {
    let local = t.local(tz)?;
    let moved = local.checked_add_signed(chrono::Duration::try_days(days)?)?;
    crate::time::from_local(moved, tz)
}

/// Puts an account's effects still to come (after `clock`) into `schedule`, as they were
/// scheduled when the account last changed. Effects that fell due were carried out, and a
/// lot's effects that outlived the lot do nothing, so this is the account's whole share of
/// the schedule.
pub(crate) fn schedule_account(schedule: &mut crate::schedule::Schedule, a: &Account, clock: i64) {
    for (at, effect) in [
        (a.tier_due, Effect::Evaluate),
        (a.birthday_due, Effect::Birthday),
    ] {
        if let Some(at) = at.filter(|at| *at > clock) {
            schedule.insert(Due {
                at,
                account: a.id.clone(),
                effect,
            });
        }
    }
    for l in &a.lots {
        for (at, kind) in [(l.expires, LotEffect::Expiry), (l.warn, LotEffect::Warning)] {
            if let Some(at) = at.filter(|at| *at > clock) {
                schedule.insert_lot(at, kind, &a.id, l.seq);
            }
        }
    }
    for p in a
        .extra
        .pending
        .iter()
        .filter(|p| p.vests > clock && p.vests < i64::MAX)
    {
        schedule.insert_lot(p.vests, LotEffect::Vest, &a.id, p.seq);
    }
}

/// When an account's next effect falls due (after `clock`): what a store indexes to find
/// the accounts an advance of the clock needs (see [`crate::working_set::WorkingSet`]).
pub fn next_due(a: &Account, clock: Option<Timestamp>) -> Option<i64> {
    let clock = clock.map_or(i64::MIN, |c| c.0);
    [a.tier_due, a.birthday_due]
        .into_iter()
        .chain(a.lots.iter().flat_map(|l| [l.expires, l.warn]))
        .flatten()
        .chain(
            a.extra
                .pending
                .iter()
                .map(|p| p.vests)
                .filter(|v| *v < i64::MAX),
        )
        .filter(|at| *at > clock)
        .min()
}

impl Engine {
    /// Carries out every time-driven effect due at or before `to`, in time order, each at
    /// the time it fell due, and moves the clock forward to `to` when it is ahead (SPEC
    /// section 6). Effects can be due at or before the clock itself: a record older than the
    /// clock schedules them (a late payment's lot that expired already, a warning due at
    /// once), and they are carried out before the next record whose `created` reaches them,
    /// whether or not that record moves the clock.
    pub(crate) fn advance_clock(&mut self, to: Timestamp, out: &mut Vec<Output>) {
        let before = self.state.clock;
        let first = before.is_none();
        while let Some(due) = self.state.schedule.pop_due_by(to.0) {
            // Effects see the clock at the time they fell due (or the clock, never back).
            self.state.clock =
                Some(Timestamp(due.at).max(self.state.clock.unwrap_or(Timestamp(due.at))));
            self.carry_out(due, out);
        }
        if before.is_some_and(|c| to <= c) {
            return;
        }
        self.state.clock = Some(to);
        self.changes.clock = true;
        if first {
            for prog in self.state.programs.clone() {
                self.schedule_close(&prog);
            }
        }
    }

    /// Moves an account's scheduled `effect` (its rolling tier evaluation or its birthday)
    /// from `old` to `new`.
    pub(crate) fn move_due(
        &mut self,
        effect: Effect,
        id: &str,
        old: Option<i64>,
        new: Option<i64>,
    ) {
        let due = |at| Due {
            at,
            account: id.into(),
            effect: effect.clone(),
        };
        if let Some(at) = old {
            self.state.schedule.remove(&due(at));
        }
        if let Some(at) = new {
            self.state.schedule.insert(due(at));
        }
    }

    /// Schedules the next period close of a program with a calendar period.
    pub(crate) fn schedule_close(&mut self, prog: &Program) {
        self.state
            .schedule
            .retain_timed(|d| !matches!(&d.effect, Effect::PeriodClose(p) if p == &prog.id));
        let Some(clock) = self.state.clock else {
            return;
        };
        if let Some(close) = tiers::next_close(prog, clock) {
            self.state.schedule.insert(Due {
                at: close.0,
                account: "".into(),
                effect: Effect::PeriodClose(prog.id.clone()),
            });
        }
    }

    /// Rebuilds the schedule from the accounts and programs (after a load).
    pub(crate) fn rebuild_schedule(&mut self) {
        self.state.schedule.clear();
        // Effects that already fell due are not carried out again.
        self.state
            .schedule
            .set_drained(self.state.clock.map(|c| c.0));
        let clock = self.state.clock.map_or(i64::MIN, |c| c.0);
        let schedule = &mut self.state.schedule;
        for a in self.state.accounts.values() {
            schedule_account(schedule, a, clock);
        }
        for prog in self.state.programs.clone() {
            self.schedule_close(&prog);
        }
    }

    /// Carries out one time-driven effect: what it does belongs to its rule's module
    /// (`enrolment` a birthday, `lots` an expiry or its warning, `tiers` a period close or an
    /// evaluation); this module decides when.
    pub(crate) fn carry_out(&mut self, due: Due, out: &mut Vec<Output>) {
        let at = Timestamp(due.at);
        match due.effect {
            Effect::Vest(seq) => self.vest(&due.account, seq, at, out),
            Effect::Expiry(seq) => self.expire_lot(&due.account, seq, at, out),
            Effect::Warning(seq) => self.warn_expiry(&due.account, seq, at, out),
            Effect::Evaluate => self.evaluate_tier(&due.account, at, out),
            Effect::EvaluateAtClose(_) => self.evaluate_at_close(&due.account, at, out),
            Effect::PeriodClose(program) => self.close_period(&program, at),
            Effect::Birthday => self.birthday(&due.account, at, out),
        }
    }
}
