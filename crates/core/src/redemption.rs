//! Redemption (SPEC section 7): a reward's cost less the tier's discount, the refusal
//! order (not available, tier required, out of stock, limit reached, insufficient points)
//! and the `redemption` transaction, `rdm_` id and stock it consumes.
//!
//! Owns: `Engine::redeem`. Must not touch other accounts.

use crate::dec::Dec;
use crate::engine::Engine;
use crate::envelope::{self, Record};
use crate::ids;
use crate::ledger::{member, Cx};
use crate::output::{Event, Refusal, TxKind, TxMeta};

/// `100 - percent`, exactly.
pub(crate) fn sub_percent(percent: Dec) -> Dec {
    let (m, s) = percent.parts();
    // A discount is validated to at most 100 with at most 18 decimals: no overflow.
    Dec::from_parts(100i128 * 10i128.pow(s) - m, s)
}

impl Engine {
    /// A redemption (SPEC section 7): refused for the first reason that applies, in the
    /// spec's order; otherwise a `redemption` transaction, a `rdm_` id, stock lowered.
    pub(crate) fn redeem(&mut self, rec: &Record, r: &envelope::Redeem, cx: &mut Cx<'_>) {
        let Some(prog) = self.program(&r.program) else {
            return;
        };
        let id = ids::account_id(&prog.id, &r.customer);
        let Some(account) = self.state.accounts.get(&id) else {
            return;
        };
        let (rank, _) = Self::tier_of(&prog, account);
        let discount = account
            .tier
            .as_deref()
            .and_then(|t| prog.tier(t))
            .map_or(Dec::ZERO, |t| t.redemption_discount);
        let key = (prog.id.to_string(), r.reward.clone());
        let used = self.state.stock_used.get(&key).copied().unwrap_or(0);
        let mine = account.redeemed.get(&r.reward).copied().unwrap_or(0);
        let reward = prog.reward(&r.reward).filter(|w| {
            w.starts.is_none_or(|s| rec.created >= s) && w.ends.is_none_or(|e| rec.created < e)
        });
        // cost × quantity, less the tier's discount percent, rounded up.
        let cost = reward.map(|w| {
            let hundred = Dec::from_int(100);
            let keep = crate::dec::round_quotient(
                &[
                    Dec::from_int(w.cost),
                    Dec::from_int(r.quantity),
                    sub_percent(discount),
                ],
                hundred,
                crate::dec::Rounding::Ceil,
            );
            keep.map_or(i64::MAX, |k| i64::try_from(k).unwrap_or(i64::MAX))
        });
        let reason = match (reward, cost) {
            (None, _) | (_, None) => Some(Refusal::NotAvailable),
            (Some(w), Some(cost)) => {
                if rank < w.min_rank || w.max_rank.is_some_and(|m| rank > m) {
                    Some(Refusal::TierRequired)
                } else if w.stock.is_some_and(|s| s - used < r.quantity) {
                    Some(Refusal::OutOfStock)
                } else if w
                    .max_per_member
                    .is_some_and(|m| mine.saturating_add(r.quantity) > m)
                {
                    Some(Refusal::LimitReached)
                } else if account.balance < i128::from(cost)
                    || account.balance < i128::from(prog.minimum_redemption)
                {
                    Some(Refusal::InsufficientPoints)
                } else {
                    None
                }
            }
        };
        if let Some(reason) = reason {
            let event = Event::RedemptionRejected {
                reward: r.reward.clone(),
                reason,
            };
            cx.event(member(account), event);
            return;
        }
        let cost = cost.unwrap_or(0);
        let redemption = ids::redemption_id(&cx.source, cx.n_ev);
        let (tx, balance) = if cost > 0 {
            let md = TxMeta::Redemption {
                redemption: redemption.clone(),
                reward: r.reward.clone(),
            };
            let (tx, balance) = self.post(cx, &id, TxKind::Redemption, -cost, None, vec![], md);
            (Some(tx), balance)
        } else {
            (None, self.state.accounts[&id].balance)
        };
        *self.state.stock_used.entry(key).or_insert(0) += r.quantity;
        self.changes.rewards = true;
        let account = self.account_mut(&id).expect("exists");
        *account.redeemed.entry(r.reward.clone()).or_insert(0) += r.quantity;
        let event = Event::RewardRedeemed {
            redemption,
            reward: r.reward.clone(),
            quantity: r.quantity,
            cost,
            transaction: tx,
            balance,
        };
        cx.event(member(account), event);
    }
}
