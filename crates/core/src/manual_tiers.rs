//! Manual tiers (SPEC section 13): `loyalty.tier.set` moves a member to a tier at once and
//! keeps a floor under it until `until`; promotion by value still happens above the floor.
//!
//! Owns: the floor (`Account::extra.manual`), when it is in force, and the tier change a
//! manual set makes. Must not touch balances; evaluations, promotion and demotion stay in
//! `tiers`, which asks [`floor_at`] how low a member may go.

use crate::config::{Period, Program, Tier};
use crate::engine::Engine;
use crate::envelope::{self, Record};
use crate::ids;
use crate::ledger::{member, Cx};
use crate::output::{Direction, Event};
use crate::state::Account;
use crate::time::{add_months, Timestamp};

/// The tier a manual tier keeps the member at or above at `at` (SPEC section 13): while
/// `at` is before its `until`, and the program still has that tier.
pub fn floor_at<'p>(account: &Account, prog: &'p Program, at: Timestamp) -> Option<&'p Tier> {
    account
        .extra
        .manual
        .as_ref()
        .filter(|m| at.0 < m.until)
        .and_then(|m| prog.tier(&m.tier))
}

/// The manual tier still in force at `at`, if any (before its `until`, and a tier the
/// program still has): what the account line shows.
pub fn manual_at<'a>(
    account: &'a Account,
    prog: &Program,
    at: Timestamp,
) -> Option<&'a crate::state::ManualTier> {
    account
        .extra
        .manual
        .as_ref()
        .filter(|m| at.0 < m.until && prog.tier(&m.tier).is_some())
}

impl Engine {
    /// `loyalty.tier.set` (SPEC section 13): the member moves to the tier at once, and no
    /// evaluation before `until` (default: one period length later) demotes it below.
    pub(crate) fn set_tier(&mut self, rec: &Record, t: &envelope::TierSet, cx: &mut Cx<'_>) {
        let Some(prog) = self.program(&t.program) else {
            return;
        };
        let (Some(tc), Some(target)) = (&prog.tiers, prog.tier(&t.tier)) else {
            return;
        };
        let months = match tc.period {
            Period::Rolling { months } | Period::Calendar { months, .. } => months,
        };
        let until = t
            .until
            .or_else(|| add_months(rec.created, months, prog.tz))
            .map_or(i64::MAX, |u| u.0);
        let id = ids::account_id(&prog.id, &t.customer);
        let Some(account) = self.account_mut(&id) else {
            return;
        };
        account.extra.manual = Some(crate::state::ManualTier {
            tier: target.name.clone(),
            until,
            reason: t.reason.clone(),
        });
        let current = account.tier.as_deref().and_then(|n| prog.tier(n));
        if current.is_none_or(|c| c.name != target.name) {
            let direction = match current {
                Some(c) if c.rank > target.rank => Direction::Down,
                _ => Direction::Up,
            };
            let from = account
                .tier
                .replace(target.name.clone())
                .unwrap_or_default();
            let event = Event::TierChanged {
                from_tier: from,
                to_tier: target.name.clone(),
                direction,
                manual: true,
            };
            cx.event(member(account), event);
        }
        self.reschedule(&id);
    }
}
