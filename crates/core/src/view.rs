//! The account view (SPEC section 9's `account` line): what `loyalty fold` prints last
//! for each account, and what the HTTP API answers for one.
//!
//! Owns: putting an account's fields, its tier and qualifying value at the clock, into an
//! [`AccountView`]. Must not: decide a rule (the value, the tier's risk and a manual tier
//! are `tiers`'), or change the account.

use crate::config::Program;
use crate::output::{AccountView, TierView};
use crate::state::Account;
use crate::tiers;
use crate::time::Timestamp;

/// An account as the fold prints it, in its program (`None`: a program the state no longer
/// holds) at the clock: what `loyalty fold` prints last, and what the HTTP API answers.
pub fn view_account(a: &Account, prog: Option<&Program>, clock: Option<Timestamp>) -> AccountView {
    let tier = prog.and_then(|p| a.tier.as_deref().and_then(|t| p.tier(t)));
    let now = clock.unwrap_or(Timestamp(i64::MIN / 4));
    let value = prog.map_or(0, |p| tiers::value_at(a, p, now));
    AccountView {
        kind: "account",
        id: a.id.to_string(),
        customer: a.customer.to_string(),
        program: a.program.to_string(),
        balance: a.balance,
        tier: tier.map(|t| TierView {
            name: t.name.clone(),
            rank: t.rank,
            earn_multiplier: crate::output::DecNumber(t.earn_multiplier),
        }),
        qualifying_value: value,
        at_risk: match (prog, tier) {
            (Some(p), Some(t)) => tiers::at_risk(a, p, t, value, now),
            _ => false,
        },
        referral_code: a.referral_code.clone(),
        stamps: a.stamps.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        ledger_hash: crate::output::hex32(&a.ledger_hash),
        // Also after an update took `pendingDays` away: what is pending still vests.
        pending_balance: (prog.is_some_and(|p| p.pending_days.is_some())
            || !a.extra.pending.is_empty())
        .then(|| a.pending_balance()),
        manual_tier: prog.and_then(|p| tiers::manual_at(a, p, now)).map(|m| {
            crate::output::ManualTierView {
                tier: m.tier.clone(),
                until: Timestamp(m.until),
                reason: m.reason.clone(),
            }
        }),
    }
}
