//! Transfers and adjustments (SPEC section 7): an operator's signed correction, and points
//! moved between two members of one program; both refused beyond the balance.
//!
//! Owns: `Engine::adjust` and `Engine::transfer`.

use crate::engine::Engine;
use crate::envelope::{self, Reason, Record, Rejection};
use crate::ids;
use crate::ledger::{member, Cx};
use crate::output::{Event, Output, Refusal, TxKind, TxMeta};

impl Engine {
    /// `loyalty.points.adjust`: an operator's signed correction, refused when it would take
    /// the balance below zero.
    pub(crate) fn adjust(&mut self, rec: &Record, a: &envelope::Adjust, cx: &mut Cx<'_>) {
        let Some(prog) = self.program(&a.program) else {
            return;
        };
        let id = ids::account_id(&prog.id, &a.customer);
        let balance = self.state.accounts[&id].balance;
        if a.points < 0 && balance + i128::from(a.points) < 0 {
            cx.out.push(Output::Rejected(Rejection::new(
                Some(&rec.id),
                Reason::Refused(Refusal::InsufficientPoints),
                format!(
                    "data.points: an adjustment of {} would take the balance of {} below zero",
                    a.points, balance
                ),
            )));
            return;
        }
        let md = TxMeta::Adjustment {
            reason: a.reason.clone(),
        };
        let (tx, balance) = self.post(cx, &id, TxKind::Adjustment, a.points, None, vec![], md);
        let event = Event::PointsAdjusted {
            points: a.points,
            transaction: tx,
            balance,
            reason: a.reason.clone(),
        };
        cx.event(member(&self.state.accounts[&id]), event);
    }

    /// `loyalty.points.transfer`: points from one member to another of the same program,
    /// refused beyond the sender's balance.
    pub(crate) fn transfer(&mut self, rec: &Record, t: &envelope::Transfer, cx: &mut Cx<'_>) {
        let Some(prog) = self.program(&t.program) else {
            return;
        };
        let from = ids::account_id(&prog.id, &t.from);
        let to = ids::account_id(&prog.id, &t.to);
        let balance = self.state.accounts[&from].balance;
        if balance < i128::from(t.points) {
            cx.out.push(Output::Rejected(Rejection::new(
                Some(&rec.id),
                Reason::Refused(Refusal::InsufficientPoints),
                format!(
                    "data.points: a transfer of {} is more than the balance of {}",
                    t.points, balance
                ),
            )));
            return;
        }
        let (tx_out, _) = self.post(
            cx,
            &from,
            TxKind::TransferOut,
            -t.points,
            None,
            vec![],
            TxMeta::None,
        );
        let (tx_in, _) = self.post(
            cx,
            &to,
            TxKind::TransferIn,
            t.points,
            None,
            vec![],
            TxMeta::None,
        );
        let event = Event::PointsTransferred {
            from: t.from.clone(),
            to: t.to.clone(),
            points: t.points,
            transactions: [tx_out, tx_in],
        };
        cx.event(member(&self.state.accounts[&from]), event);
    }
}
