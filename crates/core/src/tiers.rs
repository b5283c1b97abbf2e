//! Tiers (SPEC section 5): qualifying values over periods, and when a member's tier is
//! evaluated.
//!
//! A member's qualifying activity is kept by event time (`Account::activity`: payments in
//! the program currency minus refunds, rule and campaign points minus reversals, or
//! recorded custom amounts, by `qualifyOn`). The value at a time is then a sum over the
//! period that holds it: `(t - N months, t]` for a rolling period, `[start of the calendar
//! period, t]` for a calendar one. So a late event counts in the period it belongs to, and
//! a calendar close resets every value by marking where it starts (`Account::reset_at`).
//!
//! Owns: values, period boundaries, the next time a member's tier must be evaluated, and
//! the tier changes themselves: promotion as soon as a value meets a higher threshold,
//! demotion (with soft landing) at a scheduled evaluation or a period close (which the
//! `clock` hands here when they fall due). Must not touch balances.

use chrono::{Datelike, NaiveDate};

use crate::config::QualifyOn;
use crate::dec::Dec;
use crate::engine::Engine;
use crate::envelope::{self, Record};
use crate::ids;
use crate::ledger::{member, Cx};
use crate::output::{Direction, Event, Output};
use crate::state::{Due, Effect};

use crate::config::{Period, Program, Tier};
use crate::state::Account;
use crate::time::{
    add_months, add_months_date, day_bounds, shift_months_date, start_of, Timestamp,
};
use crate::Sym;

pub use crate::manual_tiers::{floor_at, manual_at};

/// The highest tier whose threshold `value` meets; the lowest tier when it meets none.
pub fn highest_met(prog: &Program, value: i64) -> Option<&Tier> {
    let tiers = prog.tier_list();
    tiers
        .iter()
        .rev()
        .find(|t| value >= t.threshold)
        .or_else(|| tiers.first())
}

/// The tier a new member starts in.
pub fn initial(prog: &Program) -> Option<String> {
    highest_met(prog, 0).map(|t| t.name.clone())
}

/// The tier one rank below `tier` (soft landing), if any.
pub fn one_below<'p>(prog: &'p Program, tier: &Tier) -> Option<&'p Tier> {
    prog.tier_list().iter().rev().find(|t| t.rank < tier.rank)
}

fn sum(account: &Account, from_excl: Option<i64>, from_incl: Option<i64>, to_incl: i64) -> i64 {
    let lower = match (from_excl, from_incl) {
        (Some(x), _) => std::ops::Bound::Excluded(x),
        (None, Some(x)) => std::ops::Bound::Included(x),
        (None, None) => std::ops::Bound::Unbounded,
    };
    if let std::ops::Bound::Excluded(x) | std::ops::Bound::Included(x) = lower {
        if x > to_incl {
            return 0;
        }
    }
    account.activity.sum(lower, to_incl)
}

/// `t` minus `months` calendar months in `tz` (the start of a rolling window).
fn months_before(t: Timestamp, months: u32, prog: &Program) -> Option<Timestamp> {
    let local = t.local(prog.tz)?;
    let date = shift_months_date(local.date(), -i64::from(months))?;
    crate::time::from_local(date.and_time(local.time()), prog.tz)
}

/// The calendar period holding `t`: `[start, next start)`.
pub fn calendar_period(
    t: Timestamp,
    months: u32,
    start: (u32, u32),
    prog: &Program,
) -> Option<(Timestamp, Timestamp)> {
    let date = t.local(prog.tz)?.date();
    // Period starts are the anchor (year 0, start month and day) plus k×N months.
    let anchor = NaiveDate::from_ymd_opt(0, start.0, 1)?;
    let since = i64::from(date.year()) * 12 + i64::from(date.month0()) - i64::from(start.0 - 1);
    let mut k = since.div_euclid(i64::from(months.max(1)));
    let boundary = |k: i64| -> Option<Timestamp> {
        let m = u32::try_from(k * i64::from(months)).ok()?;
        let first = add_months_date(anchor, m)?;
        // The start day, clamped to the month's last day.
        let mut day = start.1;
        let d = loop {
            if let Some(d) = first.with_day(day) {
                break d;
            }
            if day <= 28 {
                return None;
            }
            day -= 1;
        };
        start_of(d, prog.tz)
    };
    let mut lo = boundary(k)?;
    while lo > t {
        k -= 1;
        lo = boundary(k)?;
    }
    let mut hi = boundary(k + 1)?;
    while hi <= t {
        k += 1;
        lo = hi;
        hi = boundary(k + 1)?;
    }
    Some((lo, hi))
}

/// The qualifying value of `account` at time `t`.
pub fn value_at(account: &Account, prog: &Program, t: Timestamp) -> i64 {
    let Some(tc) = &prog.tiers else { return 0 };
    match tc.period {
        Period::Rolling { months } => match months_before(t, months, prog) {
            Some(from) => sum(account, Some(from.0), None, t.0),
            None => sum(account, None, None, t.0),
        },
        Period::Calendar { months, start } => match calendar_period(t, months, start, prog) {
            // A close resets the value: nothing before the last reset counts again, even
            // after an update changes the period.
            Some((from, _)) => sum(
                account,
                None,
                Some(from.0.max(account.reset_at.unwrap_or(i64::MIN))),
                t.0,
            ),
            None => 0,
        },
    }
}

/// The value a calendar period closing at `close` ended with: activity in `[start, close)`.
pub fn closing_value(account: &Account, prog: &Program, close: Timestamp) -> i64 {
    let Some(tc) = &prog.tiers else { return 0 };
    let Period::Calendar { months, start } = tc.period else {
        return 0;
    };
    match calendar_period(Timestamp(close.0 - 1), months, start, prog) {
        Some((from, _)) => sum(
            account,
            None,
            Some(from.0.max(account.reset_at.unwrap_or(i64::MIN))),
            close.0 - 1,
        ),
        None => 0,
    }
}

/// The first calendar period close after `t`, for a program with a calendar period.
pub fn next_close(prog: &Program, t: Timestamp) -> Option<Timestamp> {
    let tc = prog.tiers.as_ref()?;
    let Period::Calendar { months, start } = tc.period else {
        return None;
    };
    calendar_period(t, months, start, prog).map(|(_, hi)| hi)
}

/// The first local day boundary after `t` (strictly).
fn next_day_boundary(t: Timestamp, prog: &Program) -> Option<Timestamp> {
    day_bounds(t, prog.tz).map(|(_, next)| next)
}

/// The first local day boundary at or after `t`.
fn day_boundary_at_or_after(t: Timestamp, prog: &Program) -> Option<Timestamp> {
    let (start, next) = day_bounds(t, prog.tz)?;
    Some(if start == t { start } else { next })
}

/// For a rolling period: the first day boundary after `after` at which the member's value
/// would be below the threshold of the tier it holds (given no new activity), no earlier
/// than one period after its last demotion when the program lands softly. `None` when the
/// member cannot be demoted (lowest tier, no tiers, a calendar period).
pub fn next_rolling_evaluation(
    account: &Account,
    prog: &Program,
    after: Timestamp,
) -> Option<Timestamp> {
    let tc = prog.tiers.as_ref()?;
    let Period::Rolling { months } = tc.period else {
        return None;
    };
    let tier = prog.tier(account.tier.as_deref()?)?;
    // The lowest tier cannot be demoted.
    one_below(prog, tier)?;
    let earliest = match (tc.soft_landing, account.last_demotion) {
        // Soft landing: not again within one period length (never, if that is beyond the
        // calendar).
        (true, Some(d)) => Some(add_months(Timestamp(d), months, prog.tz)?),
        _ => None,
    };
    // A manual tier at or above the tier held keeps it until its `until`.
    let earliest = match account.extra.manual.as_ref() {
        Some(m) if prog.tier(&m.tier).is_some_and(|f| f.rank >= tier.rank) => {
            Some(earliest.map_or(Timestamp(m.until), |e| e.max(Timestamp(m.until))))
        }
        _ => earliest,
    };
    let allowed = |b: Timestamp| earliest.is_none_or(|e| b >= e);
    // Demoted at the next day boundary if the value will be below the threshold there.
    let next = next_day_boundary(after, prog)?;
    if allowed(next) && value_at(account, prog, next) < tier.threshold {
        return Some(next);
    }
    // Otherwise the value can only fall when the oldest activity in the window leaves it:
    // check again then (or when soft landing allows the next demotion). A check that finds
    // the value still high enough schedules the next one, so the work per event stays
    // small however much activity a member has.
    let window_start = months_before(after, months, prog);
    let oldest = account.activity.first(
        window_start.map_or(std::ops::Bound::Unbounded, |w| {
            std::ops::Bound::Excluded(w.0)
        }),
        after.0,
    );
    let mut checkpoint: Option<Timestamp> = None;
    if let Some(at) = oldest {
        if let Some(leave) = add_months(Timestamp(at), months, prog.tz) {
            let mut b = day_boundary_at_or_after(leave, prog)?;
            for _ in 0..5 {
                match months_before(b, months, prog) {
                    Some(from) if from.0 < at => b = next_day_boundary(b, prog)?,
                    _ => break,
                }
            }
            checkpoint = Some(b.max(next));
        }
    }
    if let Some(e) = earliest {
        let b = day_boundary_at_or_after(e, prog)?;
        if b > next {
            checkpoint = Some(checkpoint.map_or(b, |c| c.min(b)));
        }
    }
    checkpoint
}

/// True when a rolling-period member may be demoted at `at` (soft landing: one period after
/// its last demotion).
pub fn may_demote_at(account: &Account, prog: &Program, at: Timestamp) -> bool {
    let Some(tc) = &prog.tiers else { return false };
    match (tc.period, tc.soft_landing, account.last_demotion) {
        (Period::Rolling { months }, true, Some(d)) => {
            add_months(Timestamp(d), months, prog.tz).is_some_and(|e| at >= e)
        }
        _ => true,
    }
}

pub(crate) fn tier_changed(from: String, to: String, direction: Direction) -> Event {
    Event::TierChanged {
        from_tier: from,
        to_tier: to,
        direction,
        manual: false,
    }
}

impl Engine {
    /// `loyalty.qualifying_activity.record`: custom qualifying activity, counted when the
    /// program's tiers qualify on it.
    pub(crate) fn apply_qualify(&mut self, rec: &Record, q: &envelope::Qualify, cx: &mut Cx<'_>) {
        let Some(prog) = self.program(&q.program) else {
            return;
        };
        let custom = prog
            .tiers
            .as_ref()
            .is_some_and(|t| t.qualify_on == QualifyOn::Custom);
        let id = ids::account_id(&prog.id, &q.customer);
        if custom {
            self.qualify(&id, rec.created, q.amount, cx);
        }
    }

    /// The rank and earn multiplier of the tier an account holds.
    pub(crate) fn tier_of(prog: &Program, account: &Account) -> (u32, Dec) {
        account
            .tier
            .as_deref()
            .and_then(|t| prog.tier(t))
            .map_or((0, Dec::ONE), |t| (t.rank, t.earn_multiplier))
    }

    /// True when the account's program qualifies on points.
    pub(crate) fn qualifies_on_points(&self, account_id: &str) -> bool {
        self.state
            .accounts
            .get(account_id)
            .and_then(|a| self.state.program(&a.program))
            .and_then(|p| p.tiers.as_ref())
            .is_some_and(|t| t.qualify_on == QualifyOn::Points)
    }

    /// Records qualifying activity for an account at `at`, and marks it for a promotion
    /// check.
    pub(crate) fn qualify(
        &mut self,
        account_id: &str,
        at: Timestamp,
        amount: i64,
        cx: &mut Cx<'_>,
    ) {
        if amount == 0 {
            return;
        }
        let Some(account) = self.account_mut(account_id) else {
            return;
        };
        account.activity.add(at.0, amount);
        if !cx.touched.iter().any(|t| &**t == account_id) {
            cx.touched.push(account.id.clone());
        }
    }

    /// Promotion (SPEC section 5): as soon as the value reaches a higher tier's threshold,
    /// the member moves to the highest tier its value meets. Checked for every account whose
    /// activity the record changed; then its next evaluation is scheduled.
    pub(crate) fn promote_touched(&mut self, cx: &mut Cx<'_>) {
        let now = self.state.clock.unwrap_or(cx.created);
        for id in std::mem::take(&mut cx.touched) {
            let Some(account) = self.state.accounts.get(&*id) else {
                continue;
            };
            let Some(prog) = self.state.program(&account.program).cloned() else {
                continue;
            };
            let value = value_at(account, &prog, now);
            let current = account.tier.as_deref().and_then(|t| prog.tier(t));
            let best = highest_met(&prog, value);
            if let (Some(cur), Some(best)) = (current, best) {
                if best.rank > cur.rank {
                    let (from, to) = (cur.name.clone(), best.name.clone());
                    let account = self.account_mut(&id).expect("exists");
                    account.tier = Some(to.clone());
                    let who = member(account);
                    cx.event(who, tier_changed(from, to, Direction::Up));
                }
            }
            self.reschedule(&id);
        }
    }

    /// Schedules the next evaluation of an account's tier (rolling periods).
    pub(crate) fn reschedule(&mut self, id: &str) {
        let Some(account) = self.state.accounts.get(id) else {
            return;
        };
        let Some(prog) = self.state.program(&account.program) else {
            return;
        };
        let after = self.state.clock.unwrap_or(Timestamp(i64::MIN / 4));
        let due = next_rolling_evaluation(account, prog, after).map(|t| t.0);
        if due == account.tier_due {
            return;
        }
        let old = account.tier_due;
        self.move_due(Effect::Evaluate, id, old, due);
        self.account_mut(id).expect("exists").tier_due = due;
    }

    /// Demotion (SPEC section 5): below the current tier's threshold at an evaluation, the
    /// member drops to the highest tier its value meets, or one rank with soft landing.
    pub(crate) fn demote(
        &mut self,
        id: &str,
        prog: &Program,
        value: i64,
        at: Timestamp,
        kind: &str,
        out: &mut Vec<Output>,
    ) {
        let Some(account) = self.state.accounts.get(id) else {
            return;
        };
        let Some(current) = account.tier.as_deref().and_then(|t| prog.tier(t)) else {
            return;
        };
        if value >= current.threshold {
            return;
        }
        let soft = prog.tiers.as_ref().is_some_and(|t| t.soft_landing);
        let target = if soft {
            one_below(prog, current)
        } else {
            highest_met(prog, value).filter(|t| t.rank < current.rank)
        };
        // Not below a manual tier before its `until` (SPEC section 13).
        let target = match (target, floor_at(account, prog, at)) {
            (Some(t), Some(f)) if f.rank > t.rank => Some(f).filter(|f| f.rank < current.rank),
            (t, _) => t,
        };
        let Some(target) = target else {
            return;
        };
        let (from, to) = (current.name.clone(), target.name.clone());
        let account = self.account_mut(id).expect("exists");
        account.tier = Some(to.clone());
        account.last_demotion = Some(at.0);
        let who = member(account);
        let mut cx = Cx::due(ids::due_source(id, kind, at.0, "").into(), at, out);
        cx.event(who, tier_changed(from, to, Direction::Down));
    }
}

impl Engine {
    /// A calendar period closes: one evaluation per member, at the same instant, so that
    /// they run in account-id order with every other effect of this kind due then (SPEC
    /// section 6); and the next close.
    pub(crate) fn close_period(&mut self, program: &str, at: Timestamp) {
        // A calendar period close: every member of the program, by account id.
        let Some(prog) = self.state.program(program).cloned() else {
            return;
        };
        let members: Vec<Sym> = self
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
                at: at.0,
                account: id,
                effect: Effect::EvaluateAtClose(prog.id.clone()),
            });
        }
        // The next close falls after this one.
        if let Some(next) = next_close(&prog, at) {
            self.state.schedule.insert(Due {
                at: next.0,
                account: "".into(),
                effect: Effect::PeriodClose(prog.id.clone()),
            });
        }
    }

    /// A member's evaluation at its program's period close: demotion on the closing value,
    /// then the value starts over (the balance is untouched).
    pub(crate) fn evaluate_at_close(
        &mut self,
        account_id: &str,
        at: Timestamp,
        out: &mut Vec<Output>,
    ) {
        let Some(account) = self.state.accounts.get(account_id) else {
            return;
        };
        let Some(prog) = self.state.program(&account.program).cloned() else {
            return;
        };
        let value = closing_value(account, &prog, at);
        self.demote(account_id, &prog, value, at, "close", out);
        // The close resets the value; the balance is untouched.
        self.account_mut(account_id).expect("exists").reset_at = Some(at.0);
    }

    /// A member's scheduled evaluation (a rolling period): demotion when the value is below
    /// the tier's threshold and the soft landing allows it, then the next evaluation.
    pub(crate) fn evaluate_tier(&mut self, account_id: &str, at: Timestamp, out: &mut Vec<Output>) {
        let Some(account) = self.state.accounts.get(account_id) else {
            return;
        };
        let Some(prog) = self.state.program(&account.program).cloned() else {
            return;
        };
        if account.tier_due != Some(at.0) {
            return;
        }
        let value = value_at(account, &prog, at);
        let allowed = may_demote_at(account, &prog, at);
        self.account_mut(account_id).expect("exists").tier_due = None;
        if allowed {
            self.demote(account_id, &prog, value, at, "tier", out);
        }
        self.reschedule(account_id);
    }
}

/// Whether a payment in `currency` counts as qualifying spend in `prog` (SPEC section 5):
/// the program qualifies on spend, and the payment is in its currency.
pub(crate) fn counts_as_spend(prog: &Program, currency: Option<&str>) -> bool {
    prog.tiers
        .as_ref()
        .is_some_and(|t| t.qualify_on == QualifyOn::Spend)
        && currency.is_some_and(|c| c.eq_ignore_ascii_case(&prog.currency))
}

/// Whether a member holding `tier` with qualifying `value` at `now` is at risk of losing it:
/// below its threshold with a tier to fall to, unless a manual floor at or above the tier
/// held keeps the member there. (Soft landing's wait of a period after a demotion is not
/// considered: such a member stays at risk.)
pub fn at_risk(a: &Account, prog: &Program, tier: &Tier, value: i64, now: Timestamp) -> bool {
    value < tier.threshold
        && one_below(prog, tier).is_some()
        && manual_at(a, prog, now)
            .and_then(|m| prog.tier(&m.tier))
            .is_none_or(|floor| floor.rank < tier.rank)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_program;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap()
    }

    fn program(period: &str) -> Program {
        parse_program(&format!(
            r#"{{"id":"p","currency":"EUR","tierConfig":{{"period":{period},"softLanding":true,
            "tiers":[{{"name":"A","rank":0,"threshold":0}},{{"name":"B","rank":1,"threshold":100}},{{"name":"C","rank":2,"threshold":200}}]}}}}"#
        ))
        .unwrap()
    }

    fn account(tier: &str, activity: &[(&str, i64)]) -> Account {
        let mut a = Account::new("loy_x".into(), "p".into(), "c".into(), Some(tier.into()));
        a.activity = activity.iter().map(|(t, v)| (ts(t).0, *v)).collect();
        a
    }

    #[test]
    fn calendar_periods_start_on_the_start_day() {
        let p = program(r#"{"type":"calendar","months":3,"start":"01-15"}"#);
        let (lo, hi) = calendar_period(ts("2026-03-01T00:00:00Z"), 3, (1, 15), &p).unwrap();
        assert_eq!(
            (lo.to_string(), hi.to_string()),
            ("2026-01-15T00:00:00Z".into(), "2026-04-15T00:00:00Z".into())
        );
        let (lo, _) = calendar_period(ts("2026-01-14T23:59:59Z"), 3, (1, 15), &p).unwrap();
        assert_eq!(lo.to_string(), "2025-10-15T00:00:00Z");
        assert_eq!(
            next_close(&p, ts("2026-04-15T00:00:00Z"))
                .unwrap()
                .to_string(),
            "2026-07-15T00:00:00Z"
        );
    }

    #[test]
    fn rolling_values_count_the_last_n_months() {
        let p = program(r#"{"type":"rolling","months":1}"#);
        let a = account(
            "B",
            &[("2026-01-10T12:00:00Z", 150), ("2026-01-20T12:00:00Z", 60)],
        );
        assert_eq!(value_at(&a, &p, ts("2026-01-31T00:00:00Z")), 210);
        assert_eq!(
            value_at(&a, &p, ts("2026-02-10T12:00:00Z")),
            60,
            "(t - 1 month, t] excludes t - 1 month"
        );
        assert_eq!(value_at(&a, &p, ts("2026-02-21T00:00:00Z")), 0);
        // B's threshold is 100: the value falls below it when the 150 leaves the window,
        // at the first day boundary after 2026-02-10T12:00.
        let due = next_rolling_evaluation(&a, &p, ts("2026-01-20T12:00:00Z")).unwrap();
        assert_eq!(due.to_string(), "2026-02-11T00:00:00Z");
    }

    #[test]
    fn calendar_closing_values_and_reset() {
        let p = program(r#"{"type":"calendar","months":12,"start":"01-01"}"#);
        let a = account("C", &[("2026-02-01T10:00:00Z", 500)]);
        assert_eq!(closing_value(&a, &p, ts("2027-01-01T00:00:00Z")), 500);
        assert_eq!(
            value_at(&a, &p, ts("2027-01-01T00:00:00Z")),
            0,
            "a new period starts at zero"
        );
        assert_eq!(closing_value(&a, &p, ts("2028-01-01T00:00:00Z")), 0);
    }
}
