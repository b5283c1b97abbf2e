//! Pending points (SPEC section 13): with `pendingDays` on a program, the awards of a
//! payment or an invoice wait out the return window before they reach the balance. Each is
//! written `pending` (in `pendingBalance`, forming no lot); a refund before it vests takes
//! from it and never makes a debt; when it vests, a `vest` transaction of what is left
//! forms its lot, and its points count towards a tier from then.
//!
//! Owns: the pending awards of an account and their vesting. The award itself is written
//! by `earning`, a refund's share of it decided by `refunds`.
//! Must not: move a balance or form a lot itself (a vest is posted through `ledger`, which
//! forms its lot).

use crate::engine::Engine;
use crate::ids;
use crate::ledger::{member, Cx};
use crate::output::{Event, Output, TxKind, TxMeta, Why};
use crate::state::{LotEffect, PendingAward, Vested};
use crate::time::Timestamp;
use crate::Sym;

impl Engine {
    /// Keeps an award just written as pending until `days` local days after it, at the
    /// same local time, and schedules its vesting.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn hold_pending(
        &mut self,
        cx: &Cx<'_>,
        account_id: &str,
        transaction: &Sym,
        rule: &Option<Sym>,
        campaigns: &[Sym],
        points: i64,
        (days, tz): (u32, chrono_tz::Tz),
    ) {
        let vests = crate::clock::plus_days(cx.created, days, tz);
        let Some(account) = self.account_mut(account_id) else {
            return;
        };
        let seq = account.next_lot;
        account.next_lot += 1;
        account.extra.pending.push(PendingAward {
            seq,
            transaction: transaction.clone(),
            rule: rule.clone(),
            campaigns: campaigns.to_vec(),
            awarded: points,
            points,
            created: cx.created.0,
            // Beyond the calendar: it never vests.
            vests: vests.map_or(i64::MAX, |t| t.0),
        });
        if let Some(at) = vests {
            self.state
                .schedule
                .insert_lot(at.0, LotEffect::Vest, account_id, seq);
        }
    }

    /// A pending award's time came: what is left of it vests, as a `vest` transaction that
    /// forms the award's lot, with `loyalty.points.vested`. Nothing when refunds took it
    /// all.
    pub(crate) fn vest(
        &mut self,
        account_id: &str,
        seq: u64,
        at: Timestamp,
        out: &mut Vec<Output>,
    ) {
        let Some(account) = self.state.accounts.get(account_id) else {
            return;
        };
        let Some(i) = account.extra.pending.iter().position(|p| p.seq == seq) else {
            return;
        };
        let p = self
            .account_mut(account_id)
            .expect("exists")
            .extra
            .pending
            .remove(i);
        if p.points <= 0 {
            return;
        }
        let mut cx = Cx::due(
            ids::due_source(account_id, "vest", at.0, &seq.to_string()).into(),
            at,
            out,
        );
        let why = Why::Vest {
            award: p.transaction.clone(),
            awarded: p.awarded,
            reversed: p.awarded - p.points,
        };
        let (tx, balance) = self.post(
            &mut cx,
            account_id,
            TxKind::Vest,
            p.points,
            p.rule.clone(),
            p.campaigns.clone(),
            TxMeta::None,
            why,
        );
        let account = self.account_mut(account_id).expect("exists");
        // A later refund of the award takes from the vest's lot first, and comes off the
        // qualifying points of the vest's time.
        account.extra.vested.push(Vested {
            award: p.transaction.clone(),
            vest: tx.clone(),
            at: at.0,
        });
        let event = Event::PointsVested {
            points: p.points,
            transaction: tx,
            award: p.transaction,
            balance,
        };
        cx.event(member(account), event);
        if self.qualifies_on_points(account_id) {
            self.qualify(account_id, at, p.points, &mut cx);
            self.promote_touched(&mut cx);
        }
    }
}
