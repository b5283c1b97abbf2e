//! Transfers and adjustments (SPEC section 7): an operator's signed correction, and points
//! moved between two members of one program; both refused beyond the balance.
//!
//! With the log split into partitions ([`crate::partition`]), a transfer to a customer of
//! another partition is three steps, each applied once: the sender's partition writes the
//! `transfer_out` and sends a credit; the receiver's writes the `transfer_in` and the
//! `loyalty.points.transferred` event, or, when the receiver has no account, sends the
//! credit back; the sender's writes the returned credit as a `transfer_in` with
//! `metadata.returned: true`. Each effect names the transfer record as its `source`.
//!
//! Owns: `Engine::adjust`, `Engine::transfer` and the two messages of a transfer. Must
//! not: take points from lots itself (`lots`), or decide which partition a message goes to
//! (`partition`).

use crate::engine::Engine;
use crate::envelope::{self, Reason, Record, Rejection};
use crate::ids;
use crate::ledger::{member, Cx};
use crate::output::{Event, Member, Output, Refusal, TxKind, TxMeta, Why};
use crate::partition::{TRANSFER_CREDIT, TRANSFER_RETURN};
use crate::Sym;

impl Engine {
    /// `loyalty.points.adjust`: an operator's signed correction, refused when it would take
    /// the balance below zero.
    pub(crate) fn adjust(&mut self, rec: &Record, a: &envelope::Adjust, cx: &mut Cx<'_>) {
        let Some(prog) = self.program(&a.program) else {
            return;
        };
        let id = ids::account_id(&prog.id, &a.customer);
        // Points held by a redemption waiting for its units are not there to take.
        let balance = self.state.accounts[&id].balance - i128::from(self.state.held(&id));
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
        let why = Why::Adjustment {
            reason: a.reason.clone(),
        };
        let (tx, balance) = self.post(cx, &id, TxKind::Adjustment, a.points, None, vec![], md, why);
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
        let balance = self.state.accounts[&from].balance - i128::from(self.state.held(&from));
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
            Why::Transfer {
                counterparty: t.to.as_str().into(),
            },
        );
        if let Some(p) = self.partitioning.filter(|p| !p.holds(&t.to)) {
            let data = message_data(t, &rec.id, &tx_out);
            cx.message(p, &t.to, TRANSFER_CREDIT, &data);
            return;
        }
        self.credit_receiver(t, tx_out, cx);
    }

    /// A transfer's credit, on the receiver's partition: the `transfer_in` and the event,
    /// or the credit sent back when the receiver has no account in the program.
    pub(crate) fn transfer_credit(&mut self, m: &envelope::TransferMessage, cx: &mut Cx<'_>) {
        let t = &m.transfer;
        let to = ids::account_id(&t.program, &t.to);
        if !self.state.accounts.contains_key(&to) {
            match self.partitioning.filter(|p| !p.holds(&t.from)) {
                Some(p) => {
                    let data = message_data(t, &m.source, &m.transaction);
                    cx.message(p, &t.from, TRANSFER_RETURN, &data);
                }
                // The sender is here: the credit goes back at once. (An engine that folds
                // every partition never sends a message.)
                None => self.transfer_return(m, cx),
            }
            return;
        }
        self.credit_receiver(t, m.transaction.as_str().into(), cx);
    }

    /// The receiver's side of a transfer whose `transfer_out` is written: its
    /// `transfer_in`, and `loyalty.points.transferred` about the sender, naming both.
    fn credit_receiver(&mut self, t: &envelope::Transfer, tx_out: Sym, cx: &mut Cx<'_>) {
        let to = ids::account_id(&t.program, &t.to);
        let (tx_in, _) = self.post(
            cx,
            &to,
            TxKind::TransferIn,
            t.points,
            None,
            vec![],
            TxMeta::None,
            Why::Transfer {
                counterparty: t.from.as_str().into(),
            },
        );
        let event = Event::PointsTransferred {
            from: t.from.clone(),
            to: t.to.clone(),
            points: t.points,
            transactions: [tx_out, tx_in],
        };
        // The sender's member: its account may live on another partition.
        let who = Member {
            account: ids::account_id(&t.program, &t.from),
            customer: t.from.as_str().into(),
            program: t.program.as_str().into(),
        };
        cx.event(who, event);
    }

    /// A credit given back, on the sender's partition: the points return as a
    /// `transfer_in` with `metadata.returned: true`.
    pub(crate) fn transfer_return(&mut self, m: &envelope::TransferMessage, cx: &mut Cx<'_>) {
        let t = &m.transfer;
        let from = ids::account_id(&t.program, &t.from);
        if !self.state.accounts.contains_key(&from) {
            // Only a log the engine did not write has a return for a sender it never saw.
            return;
        }
        self.post(
            cx,
            &from,
            TxKind::TransferIn,
            t.points,
            None,
            vec![],
            TxMeta::Returned,
            Why::Transfer {
                counterparty: t.to.as_str().into(),
            },
        );
    }
}

/// The data of a transfer's credit or its return.
fn message_data(t: &envelope::Transfer, source: &str, transaction: &str) -> serde_json::Value {
    serde_json::json!({
        "program": t.program,
        "from": t.from,
        "to": t.to,
        "points": t.points,
        "source": source,
        "transaction": transaction,
    })
}
