//! Refunds (SPEC section 7): a `payment.refunded` reverses, in proportion to what is
//! refunded so far, the points each award of the payment gave, takes the refund off the
//! qualifying spend the payment added, and leaves a debt where the points were spent.
//!
//! Owns: `Engine::apply_refund`. The refusals of a refund (unknown payment, currency,
//! amount) are decided with the other rejections in `engine`; lots and debt in `lots`.

use crate::engine::Engine;
use crate::envelope::{self};
use crate::ledger::{member, Cx};
use crate::lots;
use crate::output::{Event, TxKind, TxMeta, Why};
use crate::time::Timestamp;

impl Engine {
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
            if let Some(account) = self.account_mut(&award.account) {
                lots::reverse(account, give, &award.transaction);
            }
            let (tx, balance) = self.post(
                cx,
                &award.account,
                TxKind::Reversal,
                -give,
                award.rule.clone(),
                award.campaigns.clone(),
                TxMeta::None,
                Why::Reversal {
                    award: award.transaction.clone(),
                    payment: r.payment.clone(),
                    refunded: payment.refunded,
                    amount: payment.amount,
                },
            );
            let event = Event::PointsReversed {
                points: -give,
                transaction: tx,
                balance,
                payment: r.payment.clone(),
                refund: r.refund_id.clone(),
                rule: award.rule.as_deref().map(str::to_string),
            };
            cx.event(member(&self.state.accounts[&award.account]), event);
            if self.qualifies_on_points(&award.account) {
                self.qualify(&award.account, Timestamp(award.created), -give, cx);
            }
        }
        self.state
            .payments
            .insert(r.payment.clone(), payment.pack());
        if self.track {
            self.changes.payments.insert(r.payment.clone());
        }
    }
}
