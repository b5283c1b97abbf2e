//! Refunds (SPEC section 7): a `payment.refunded` reverses, in proportion to what is
//! refunded so far, the points each award of the payment gave, takes the refund off the
//! qualifying spend the payment added, and leaves a debt where the points were spent.
//!
//! Owns: `Engine::apply_refund`, and the payment's record it reads
//! (`Engine::record_payment`: its amount, currency, awards and the accounts whose
//! qualifying spend it added). The refusals of a refund (unknown payment, currency,
//! amount) are decided with the other rejections in `engine`; lots and debt in `lots`.
//! Must not: take points from lots itself, or decide a rejection.

use crate::config::RefundDebt;
use crate::engine::Engine;
use crate::envelope::{self};
use crate::ledger::{member, Cx};
use crate::lots;
use crate::output::{Event, Status, TxKind, TxMeta, Why};
use crate::state::{AwardRecord, PackedPayment, PaymentRecord};
use crate::time::Timestamp;
use crate::Sym;

/// What a `payment.completed` says of the payment, for its record.
pub(crate) struct Paid<'a> {
    pub(crate) currency: Option<&'a str>,
    pub(crate) amount: Option<i64>,
    pub(crate) created: Timestamp,
}

impl Engine {
    /// Records what a `payment.completed` of payment `id` gave, for a refund to reverse:
    /// its amount (added to an earlier record of the same payment), the awards of each
    /// program it reached, and the accounts whose qualifying spend it added.
    pub(crate) fn record_payment(
        &mut self,
        id: &str,
        paid: &Paid<'_>,
        awards: Vec<AwardRecord>,
        spend_accounts: Vec<Sym>,
    ) {
        let mut entry = self.state.payments.get(id).map_or_else(
            || PaymentRecord {
                currency: paid.currency.map(str::to_string).unwrap_or_default(),
                created: paid.created.0,
                ..PaymentRecord::default()
            },
            PackedPayment::unpack,
        );
        entry.amount = entry.amount.saturating_add(paid.amount.unwrap_or(0));
        entry.awards.extend(awards);
        for acct in spend_accounts {
            if !entry.spend_accounts.contains(&acct) {
                entry.spend_accounts.push(acct);
            }
        }
        self.state.payments.insert(id.to_string(), entry.pack());
        if self.track {
            self.changes.payments.insert(id.to_string());
        }
    }

    pub(crate) fn apply_refund(&mut self, r: &envelope::Refund, cx: &mut Cx<'_>) {
        let Some(mut payment) = self.state.payments.remove(&r.payment).map(|p| p.unpack()) else {
            return;
        };
        payment.refunded += r.amount;
        // The refund comes off the qualifying spend the payment added, at the payment's
        // time: it lowers the value of the period that payment counted in.
        for acct in payment.spend_accounts.clone() {
            self.qualify(&acct, Timestamp(payment.created), -r.amount, cx);
        }
        for award in &mut payment.awards {
            let due = if payment.refunded >= payment.amount {
                i128::from(award.points)
            } else {
                i128::from(award.points) * i128::from(payment.refunded) / i128::from(payment.amount)
            };
            let give = i64::try_from(due).unwrap_or(award.points) - award.reversed;
            if give <= 0 || !self.state.accounts.contains_key(&award.account) {
                continue;
            }
            award.reversed += give;
            if self.reverse_pending(cx, award, give, r, payment.refunded, payment.amount) {
                continue;
            }
            // A vested award's lot is its vest's, and its qualifying points counted from
            // the vest (SPEC section 13).
            let vested = self.state.accounts[&award.account]
                .extra
                .vested
                .iter()
                .find(|v| v.award == award.transaction)
                .map(|v| (v.vest.clone(), v.at));
            let (lot_tx, counted_at) =
                vested.unwrap_or_else(|| (award.transaction.clone(), award.created));
            // Under writeOff the reversal takes only what the lots hold; the rest is
            // written off instead of becoming a debt.
            let write_off = self
                .program(&self.state.accounts[&award.account].program)
                .is_some_and(|p| p.refund_debt == RefundDebt::WriteOff);
            let mut taken = give;
            if let Some(account) = self.account_mut(&award.account) {
                if write_off {
                    let held = lots::total(account).max(0);
                    taken = i64::try_from(held.min(i128::from(give))).unwrap_or(give);
                }
                lots::reverse(account, taken, &lot_tx);
                if award.reversed >= award.points {
                    account
                        .extra
                        .vested
                        .retain(|v| v.award != award.transaction);
                }
            }
            let (tx, balance) = self.post(
                cx,
                &award.account,
                TxKind::Reversal,
                -taken,
                award.rule.clone(),
                award.campaigns.clone(),
                TxMeta::None,
                Why::Reversal {
                    award: award.transaction.clone(),
                    payment: r.payment.clone(),
                    refunded: payment.refunded,
                    amount: payment.amount,
                    written_off: give - taken,
                },
            );
            let event = Event::PointsReversed {
                points: -taken,
                transaction: tx,
                balance,
                payment: r.payment.clone(),
                refund: r.refund_id.clone(),
                rule: award.rule.as_deref().map(str::to_string),
                status: self.status_of(&award.account, TxKind::Reversal, false),
            };
            cx.event(member(&self.state.accounts[&award.account]), event);
            if self.qualifies_on_points(&award.account) {
                self.qualify(&award.account, Timestamp(counted_at), -give, cx);
            }
        }
        self.state
            .payments
            .insert(r.payment.clone(), payment.pack());
        if self.track {
            self.changes.payments.insert(r.payment.clone());
        }
    }

    /// A refund's share `give` of an award still pending (SPEC section 13): it comes off
    /// the pending award, as a `pending` reversal, and never makes a debt. False when the
    /// award is not pending.
    fn reverse_pending(
        &mut self,
        cx: &mut Cx<'_>,
        award: &AwardRecord,
        give: i64,
        r: &envelope::Refund,
        refunded: i64,
        amount: i64,
    ) -> bool {
        let Some(account) = self.account_mut(&award.account) else {
            return false;
        };
        let Some(p) = account
            .extra
            .pending
            .iter_mut()
            .find(|p| p.transaction == award.transaction)
        else {
            return false;
        };
        let give = give.min(p.points);
        p.points -= give;
        let why = Why::Reversal {
            award: award.transaction.clone(),
            payment: r.payment.clone(),
            refunded,
            amount,
            written_off: 0,
        };
        let entry = (
            TxKind::Reversal,
            -give,
            award.rule.clone(),
            award.campaigns.clone(),
            TxMeta::None,
            why,
        );
        let status = Some(Status::Pending);
        let (tx, balance) = self.post_status(cx, &award.account, entry, status);
        let event = Event::PointsReversed {
            points: -give,
            transaction: tx,
            balance,
            payment: r.payment.clone(),
            refund: r.refund_id.clone(),
            rule: award.rule.as_deref().map(str::to_string),
            status,
        };
        cx.event(member(&self.state.accounts[&award.account]), event);
        true
    }
}
