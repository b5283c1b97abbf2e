//! The clock (SPEC section 6): moving it, the schedule of time-driven effects (expiry and
//! its warning, tier evaluations, calendar period closes, birthdays), and carrying out, in
//! time order, each effect that falls due. What an effect does belongs to its rule's
//! module (`lots`, `tiers`, `earning`); this module decides when.
//!
//! Owns: the schedule and the clock. Must not read a wall clock.

use crate::config::Program;
use crate::earning::{Recipients, Trigger};
use crate::engine::Engine;
use crate::ids;
use crate::ledger::{member, Cx};
use crate::lots;
use crate::output::{Event, Output, TxKind, TxMeta};
use crate::state::{Account, Due, DueItem, DueKind};
use crate::tiers;
use crate::time::Timestamp;

/// The start (local midnight) of the first birthday `(month, day)` after `after`; February
/// 29 falls on February 28 in other years.
pub(crate) fn next_birthday(
    month: u32,
    day: u32,
    after: Timestamp,
    tz: chrono_tz::Tz,
) -> Option<Timestamp> {
    use chrono::Datelike;
    let year = after.local(tz)?.year();
    (year..year + 3).find_map(|y| {
        let date = chrono::NaiveDate::from_ymd_opt(y, month, day)
            .or_else(|| chrono::NaiveDate::from_ymd_opt(y, month, day - 1))?;
        crate::time::start_of(date, tz).filter(|t| *t > after)
    })
}

/// `days` local days before `t`, at the same local time.
pub(crate) fn minus_days(t: Timestamp, days: u32, tz: chrono_tz::Tz) -> Option<Timestamp> {
    let local = t.local(tz)?;
    let earlier = local.checked_sub_signed(chrono::Duration::days(i64::from(days)))?;
    crate::time::from_local(earlier, tz)
}

/// Puts an account's effects still to come (after `clock`) into `schedule`, as they were
/// scheduled when the account last changed. Effects that fell due were carried out, and a
/// lot's effects that outlived the lot do nothing, so this is the account's whole share of
/// the schedule.
pub(crate) fn schedule_account(schedule: &mut crate::schedule::Schedule, a: &Account, clock: i64) {
    for (at, kind) in [
        (a.tier_due, DueKind::Tier),
        (a.birthday_due, DueKind::Birthday),
    ] {
        if let Some(at) = at.filter(|at| *at > clock) {
            schedule.insert(Due {
                at,
                kind,
                account: a.id.clone(),
                item: DueItem::None,
            });
        }
    }
    for l in &a.lots {
        for (at, kind) in [(l.expires, DueKind::Expiry), (l.warn, DueKind::Warning)] {
            if let Some(at) = at.filter(|at| *at > clock) {
                schedule.insert_lot(at, kind, &a.id, l.seq);
            }
        }
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

    /// Schedules the start of an account's next birthday after `after`.
    pub(crate) fn schedule_birthday(&mut self, id: &str, after: Timestamp) {
        let Some(account) = self.state.accounts.get(id) else {
            return;
        };
        let Some((month, day)) = account.birthday else {
            return;
        };
        let Some(prog) = self.state.program(&account.program) else {
            return;
        };
        let due = next_birthday(month, day, after, prog.tz);
        let old = account.birthday_due;
        self.move_due(DueKind::Birthday, id, old, due.map(|t| t.0));
        self.account_mut(id).expect("exists").birthday_due = due.map(|t| t.0);
    }

    /// Moves an account's scheduled effect of `kind` from `old` to `new`.
    pub(crate) fn move_due(&mut self, kind: DueKind, id: &str, old: Option<i64>, new: Option<i64>) {
        let due = |at| Due {
            at,
            kind,
            account: id.to_string(),
            item: DueItem::None,
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
        self.state.schedule.retain_timed(|d| {
            !(d.account.is_empty() && matches!(&d.item, DueItem::Close(p) if *p == prog.id))
        });
        let Some(clock) = self.state.clock else {
            return;
        };
        if let Some(close) = tiers::next_close(prog, clock) {
            self.state.schedule.insert(Due {
                at: close.0,
                kind: DueKind::Tier,
                account: String::new(),
                item: DueItem::Close(prog.id.clone()),
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

    /// Carries out one time-driven effect.
    pub(crate) fn carry_out(&mut self, due: Due, out: &mut Vec<Output>) {
        let at = Timestamp(due.at);
        match due.kind {
            DueKind::Birthday => {
                let Some(account) = self.state.accounts.get(&due.account) else {
                    return;
                };
                if account.birthday_due != Some(due.at) {
                    return;
                }
                let Some(prog) = self.state.program(&account.program).cloned() else {
                    return;
                };
                let mut cx = Cx::due(ids::due_source(&due.account, "birthday", at.0, ""), at, out);
                let trigger = Trigger {
                    kind: "customer.birthday",
                    at,
                    amount: None,
                    currency: None,
                    metadata: None,
                    object_id: None,
                };
                let id = due.account.clone();
                self.earn(
                    &prog,
                    &trigger,
                    Recipients {
                        default: Some(&id),
                        referral: None,
                    },
                    None,
                    &mut cx,
                );
                self.promote_touched(&mut cx);
                self.schedule_birthday(&id, at);
            }
            DueKind::Expiry | DueKind::Warning => {
                let DueItem::Lot(seq) = due.item else {
                    return;
                };
                let Some(account) = self.state.accounts.get(&due.account) else {
                    return;
                };
                let left = lots::remaining(account, seq);
                let kind = if due.kind == DueKind::Expiry {
                    "expiry"
                } else {
                    "warning"
                };
                let mut cx = Cx::due(
                    ids::due_source(&due.account, kind, at.0, &seq.to_string()),
                    at,
                    out,
                );
                if due.kind == DueKind::Warning {
                    // Once, with the amount due; nothing for a lot with nothing left.
                    let expires = account
                        .lots
                        .iter()
                        .find(|l| l.seq == seq)
                        .and_then(|l| l.expires);
                    if let (true, Some(expires)) = (left > 0, expires) {
                        let event = Event::PointsExpiring {
                            points: left,
                            expires_at: Timestamp(expires),
                        };
                        cx.event(member(account), event);
                    }
                    return;
                }
                let left = lots::expire(self.account_mut(&due.account).expect("exists"), seq);
                if left > 0 {
                    let (tx, balance) = self.post(
                        &mut cx,
                        &due.account,
                        TxKind::Expiry,
                        -left,
                        None,
                        vec![],
                        TxMeta::None,
                    );
                    let event = Event::PointsExpired {
                        points: -left,
                        transaction: tx,
                        balance,
                    };
                    cx.event(member(&self.state.accounts[&due.account]), event);
                }
            }
            DueKind::Tier if due.account.is_empty() => {
                // A calendar period close: every member of the program, by account id.
                let DueItem::Close(program) = &due.item else {
                    return;
                };
                let Some(prog) = self.state.program(program).cloned() else {
                    return;
                };
                let members: Vec<String> = self
                    .state
                    .accounts
                    .values()
                    .filter(|a| a.program == prog.id)
                    .map(|a| a.id.clone())
                    .collect();
                // One effect per member, at the same instant, so that they run in account-id
                // order with every other effect of this kind due then (SPEC section 6).
                for id in members {
                    self.state.schedule.insert(Due {
                        at: due.at,
                        kind: DueKind::Tier,
                        account: id,
                        item: DueItem::Close(prog.id.clone()),
                    });
                }
                // The next close falls after this one.
                if let Some(next) = tiers::next_close(&prog, at) {
                    self.state.schedule.insert(Due {
                        at: next.0,
                        kind: DueKind::Tier,
                        account: String::new(),
                        item: DueItem::Close(prog.id.clone()),
                    });
                }
            }
            DueKind::Tier if matches!(due.item, DueItem::Close(_)) => {
                let Some(account) = self.state.accounts.get(&due.account) else {
                    return;
                };
                let Some(prog) = self.state.program(&account.program).cloned() else {
                    return;
                };
                let value = tiers::closing_value(account, &prog, at);
                self.demote(&due.account, &prog, value, at, "close", out);
                // The close resets the value; the balance is untouched.
                self.account_mut(&due.account).expect("exists").reset_at = Some(due.at);
            }
            DueKind::Tier => {
                let Some(account) = self.state.accounts.get(&due.account) else {
                    return;
                };
                let Some(prog) = self.state.program(&account.program).cloned() else {
                    return;
                };
                if account.tier_due != Some(due.at) {
                    return;
                }
                let value = tiers::value_at(account, &prog, at);
                let allowed = tiers::may_demote_at(account, &prog, at);
                self.account_mut(&due.account).expect("exists").tier_due = None;
                if allowed {
                    self.demote(&due.account, &prog, value, at, "tier", out);
                }
                self.reschedule(&due.account);
            }
        }
    }
}
