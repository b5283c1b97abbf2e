//! Redemption (SPEC section 7): a reward's cost less the tier's discount, the refusal
//! order (not available, tier required, out of stock, limit reached, insufficient points)
//! and the `redemption` transaction, `rdm_` id and stock it consumes.
//!
//! With the log split into partitions ([`crate::partition`]), a reward with a stock is
//! counted by one partition, its owner. A member of another partition redeems it in
//! three steps: its partition checks everything but the stock and holds the cost (points
//! a later redemption, transfer or adjustment cannot take) and asks the owner; the owner
//! grants the units in its log's order while stock is left, or refuses; the member's
//! partition then redeems (or refuses `out_of_stock`), releasing the hold. A grant the
//! member can no longer pay (points expired meanwhile) is refused `insufficient_points`
//! and the units go back to the owner.
//!
//! Owns: `Engine::redeem` and the stock messages. Must not touch other accounts.

use crate::dec::Dec;
use crate::engine::Engine;
use crate::envelope::{self, Record, StockMessage, StockStep};
use crate::ids;
use crate::ledger::{member, Cx};
use crate::output::{Event, Refusal, TxKind, TxMeta, Why};
use crate::partition::{self, STOCK_GRANTED, STOCK_REFUSED, STOCK_RELEASE, STOCK_REQUEST};
use crate::state::Hold;
use crate::Sym;

/// A redemption nothing refuses, to write.
struct Redeemed<'a> {
    reward: &'a str,
    quantity: i64,
    /// Points: `unit_cost × quantity` less the discount, rounded up.
    cost: i64,
    unit_cost: i64,
    discount: Dec,
}

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
        // Units and points waiting for another partition's grant count as taken.
        let mine = account.redeemed.get(&r.reward).copied().unwrap_or(0)
            + self.state.held_units(&id, &r.reward);
        let balance = account.balance - i128::from(self.state.held(&id));
        let reward = prog.reward(&r.reward).filter(|w| {
            w.starts.is_none_or(|s| rec.created >= s) && w.ends.is_none_or(|e| rec.created < e)
        });
        // When another partition counts this reward's units (every redemption counts, so
        // that a stock set later by a program update counts what was redeemed before, as
        // one engine does), it is asked.
        let owner = match (self.partitioning, reward) {
            (Some(p), Some(_)) => {
                Some(p).filter(|p| partition::stock_owner(&prog.id, &r.reward, p.count) != p.me)
            }
            _ => None,
        };
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
                } else if owner.is_none() && w.stock.is_some_and(|s| s - used < r.quantity) {
                    Some(Refusal::OutOfStock)
                } else if w
                    .max_per_member
                    .is_some_and(|m| mine.saturating_add(r.quantity) > m)
                {
                    Some(Refusal::LimitReached)
                } else if balance < i128::from(cost)
                    || balance < i128::from(prog.minimum_redemption)
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
        if let Some(owner) = owner {
            self.flow_changed(crate::working_set::FlowKey::Hold(rec.id.to_string()));
            self.state.holds.insert(
                rec.id.to_string(),
                Hold {
                    account: id.clone(),
                    reward: r.reward.clone(),
                    quantity: r.quantity,
                    cost,
                    unit_cost: reward.map(|w| w.cost),
                    discount: Some(discount),
                },
            );
            let m = StockMessage {
                program: prog.id.to_string(),
                reward: r.reward.clone(),
                customer: r.customer.clone(),
                quantity: r.quantity,
                points: cost,
                source: rec.id.to_string(),
            };
            let key = partition::stock_key(&prog.id, &r.reward);
            cx.message(owner, &key, STOCK_REQUEST, &data(&m));
            return;
        }
        *self.state.stock_used.entry(key).or_insert(0) += r.quantity;
        let unit_cost = reward.map_or(0, |w| w.cost);
        let redeemed = Redeemed {
            reward: &r.reward,
            quantity: r.quantity,
            cost,
            unit_cost,
            discount,
        };
        self.complete_redemption(&id, redeemed, cx);
    }

    /// Writes a redemption that nothing refuses: its transaction (when it costs anything),
    /// the units on the member, and `loyalty.reward.redeemed`.
    fn complete_redemption(&mut self, id: &Sym, r: Redeemed<'_>, cx: &mut Cx<'_>) {
        let Redeemed {
            reward,
            quantity,
            cost,
            unit_cost,
            discount,
        } = r;
        let redemption = ids::redemption_id(&cx.source, cx.n_ev);
        let (tx, balance) = if cost > 0 {
            let md = TxMeta::Redemption {
                redemption: redemption.clone(),
                reward: reward.to_string(),
            };
            let why = Why::Redemption {
                reward: reward.to_string(),
                quantity,
                unit_cost,
                discount,
            };
            let (tx, balance) = self.post(cx, id, TxKind::Redemption, -cost, None, vec![], md, why);
            (Some(tx), balance)
        } else {
            (None, self.state.accounts[id].balance)
        };
        self.changes.rewards = true;
        let account = self.account_mut(id).expect("exists");
        *account.redeemed.entry(reward.to_string()).or_insert(0) += quantity;
        let event = Event::RewardRedeemed {
            redemption,
            reward: reward.to_string(),
            quantity,
            cost,
            transaction: tx,
            balance,
        };
        cx.event(member(account), event);
    }

    /// A step of a reward's stock across partitions: on the owner, a request granted or
    /// refused in log order, or units given back; on the member's partition, the grant
    /// redeemed (or refused when the held points are gone) or the refusal written.
    pub(crate) fn stock(&mut self, step: StockStep, m: &StockMessage, cx: &mut Cx<'_>) {
        // Only one partition of several applies these (`Engine::check`).
        let Some(p) = self.partitioning else {
            return;
        };
        let key = (m.program.clone(), m.reward.clone());
        match step {
            StockStep::Request => {
                // A reward this partition's copy of the program does not have (yet) is
                // refused: never a unit it cannot count.
                let reward = self
                    .state
                    .program(&m.program)
                    .and_then(|p| p.reward(&m.reward));
                let used = self.state.stock_used.get(&key).copied().unwrap_or(0);
                let granted =
                    reward.is_some_and(|w| w.stock.is_none_or(|s| s - used >= m.quantity));
                if granted {
                    *self.state.stock_used.entry(key).or_insert(0) += m.quantity;
                    self.changes.rewards = true;
                }
                let answer = if granted {
                    STOCK_GRANTED
                } else {
                    STOCK_REFUSED
                };
                cx.message(p, &m.customer, answer, &data(m));
            }
            StockStep::Release => {
                if let Some(used) = self.state.stock_used.get_mut(&key) {
                    *used = (*used - m.quantity).max(0);
                    self.changes.rewards = true;
                }
            }
            StockStep::Granted | StockStep::Refused => {
                // Only a log the engine did not write answers a redemption it never held.
                let Some(hold) = self.state.holds.remove(&m.source) else {
                    return;
                };
                self.flow_changed(crate::working_set::FlowKey::Hold(m.source.clone()));
                let Some(account) = self.state.accounts.get(&hold.account) else {
                    return;
                };
                let refusal = match step {
                    StockStep::Refused => Some(Refusal::OutOfStock),
                    _ if account.balance < i128::from(hold.cost) => {
                        let key = partition::stock_key(&m.program, &m.reward);
                        cx.message(p, &key, STOCK_RELEASE, &data(m));
                        Some(Refusal::InsufficientPoints)
                    }
                    _ => None,
                };
                let account = &self.state.accounts[&hold.account];
                match refusal {
                    Some(reason) => {
                        let event = Event::RedemptionRejected {
                            reward: m.reward.clone(),
                            reason,
                        };
                        cx.event(member(account), event);
                    }
                    None => {
                        // A hold an earlier version wrote: what the program says now.
                        let prog = self.state.program(&m.program);
                        let unit_cost = hold.unit_cost.unwrap_or_else(|| {
                            prog.and_then(|p| p.reward(&m.reward)).map_or(0, |w| w.cost)
                        });
                        let discount = hold.discount.unwrap_or_else(|| {
                            let tier = account.tier.as_deref();
                            prog.and_then(|p| tier.and_then(|t| p.tier(t)))
                                .map_or(Dec::ZERO, |t| t.redemption_discount)
                        });
                        let redeemed = Redeemed {
                            reward: &m.reward,
                            quantity: m.quantity,
                            cost: hold.cost,
                            unit_cost,
                            discount,
                        };
                        self.complete_redemption(&hold.account, redeemed, cx)
                    }
                }
            }
        }
    }
}

/// The data of a stock message.
fn data(m: &StockMessage) -> serde_json::Value {
    serde_json::json!({
        "program": m.program,
        "reward": m.reward,
        "customer": m.customer,
        "quantity": m.quantity,
        "points": m.points,
        "source": m.source,
    })
}
