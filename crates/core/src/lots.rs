//! Points lots (SPEC section 7): every credit is a lot that expires a number of months after
//! it was awarded; deductions consume the lots that expire first; a reversal takes first
//! from the lots its award created; what no lot covers is a debt that later credits pay off
//! first. A balance is always the sum of its open lots minus its debt.
//!
//! Owns: the lots and debt of one account, and expiry: a lot's expiry and warning dates,
//! the `loyalty.points.expiring` warning and the `expiry` transaction when it falls due.
//! Must not move a balance but through the ledger (`Engine::post`).

use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::ids;
use crate::ledger::{member, Cx};
use crate::output::{Event, Output, TxKind, TxMeta, Why};
use crate::state::Account;
use crate::time::Timestamp;

/// Points that arrived together and expire together.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lot {
    /// Its number within the account (in order of creation).
    pub seq: u64,
    /// When it was awarded.
    pub created: i64,
    /// When what is left of it expires (`None`: never).
    pub expires: Option<i64>,
    /// When the expiry warning goes out (`None`: no warning).
    pub warn: Option<i64>,
    /// Points left.
    pub remaining: i64,
    /// The transaction that created it (a reversal takes from it first).
    pub transaction: ids::TxRef,
}

impl Lot {
    fn order(&self) -> (i64, i64, u64) {
        (self.expires.unwrap_or(i64::MAX), self.created, self.seq)
    }
}

/// A lot just formed: what its effects are scheduled by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Formed {
    /// Its number within the account.
    pub seq: u64,
    /// When what is left of it expires.
    pub expires: Option<i64>,
    /// When its expiry warning goes out.
    pub warn: Option<i64>,
}

/// Credits `points`: pays the debt off first, and what is left forms a lot. Returns the new
/// lot's dates, if one was formed.
pub fn credit(
    account: &mut Account,
    points: i64,
    at: Timestamp,
    expires: Option<Timestamp>,
    warn: Option<Timestamp>,
    transaction: &str,
) -> Option<Formed> {
    let pay = points.min(account.debt).max(0);
    account.debt -= pay;
    let rest = points - pay;
    if rest <= 0 {
        return None;
    }
    let lot = Lot {
        seq: account.next_lot,
        created: at.0,
        expires: expires.map(|t| t.0),
        warn: warn.map(|t| t.0),
        remaining: rest,
        transaction: ids::TxRef::new(transaction),
    };
    let formed = Formed {
        seq: lot.seq,
        expires: lot.expires,
        warn: lot.warn,
    };
    account.next_lot += 1;
    account.lots.push(lot);
    Some(formed)
}

/// Consumes `points` from the lots that expire first. The caller has checked the balance;
/// anything the lots cannot cover becomes debt.
pub fn debit(account: &mut Account, points: i64) {
    let mut order: Vec<usize> = (0..account.lots.len()).collect();
    order.sort_by_key(|i| account.lots[*i].order());
    let mut left = points;
    for i in order {
        if left == 0 {
            break;
        }
        let take = left.min(account.lots[i].remaining);
        account.lots[i].remaining -= take;
        left -= take;
    }
    account.debt += left;
    account
        .lots
        .retain(|l| l.remaining > 0 || l.expires.is_some());
}

/// Takes `points` back for a reversal of `transaction`: first from the lots it created, then
/// from those that expire first; the rest becomes debt.
pub fn reverse(account: &mut Account, points: i64, transaction: &str) {
    let mut left = points;
    let transaction = ids::TxRef::new(transaction);
    for lot in account
        .lots
        .iter_mut()
        .filter(|l| l.transaction == transaction)
    {
        let take = left.min(lot.remaining);
        lot.remaining -= take;
        left -= take;
    }
    if left > 0 {
        debit(account, left);
    }
}

/// Removes a lot at its expiry; returns what was left of it.
pub fn expire(account: &mut Account, seq: u64) -> i64 {
    match account.lots.iter().position(|l| l.seq == seq) {
        Some(i) => account.lots.remove(i).remaining,
        None => 0,
    }
}

/// What is left of a lot.
pub fn remaining(account: &Account, seq: u64) -> i64 {
    account
        .lots
        .iter()
        .find(|l| l.seq == seq)
        .map_or(0, |l| l.remaining)
}

/// The sum of the open lots minus the debt (equals the balance).
pub fn total(account: &Account) -> i128 {
    account
        .lots
        .iter()
        .map(|l| i128::from(l.remaining))
        .sum::<i128>()
        - i128::from(account.debt)
}

impl Engine {
    /// A lot's warning fell due: once, with the points still in it; nothing for a lot
    /// with nothing left.
    pub(crate) fn warn_expiry(
        &mut self,
        account_id: &str,
        seq: u64,
        at: Timestamp,
        out: &mut Vec<Output>,
    ) {
        let Some(account) = self.state.accounts.get(account_id) else {
            return;
        };
        let left = remaining(account, seq);
        let mut cx = Cx::due(
            ids::due_source(account_id, "warning", at.0, &seq.to_string()).into(),
            at,
            out,
        );
        let expires = account
            .lots
            .iter()
            .find(|l| l.seq == seq)
            .and_then(|l| l.expires);
        if let (true, Some(expires)) = (left > 0, expires) {
            let event = Event::PointsExpiring {
                points: left,
                expires_at: Timestamp(expires),
            };
            cx.event(member(account), event);
        }
    }

    /// A lot's expiry fell due: what is left of it expires.
    pub(crate) fn expire_lot(
        &mut self,
        account_id: &str,
        seq: u64,
        at: Timestamp,
        out: &mut Vec<Output>,
    ) {
        if !self.state.accounts.contains_key(account_id) {
            return;
        }
        let mut cx = Cx::due(
            ids::due_source(account_id, "expiry", at.0, &seq.to_string()).into(),
            at,
            out,
        );
        let account = self.account_mut(account_id).expect("exists");
        let why = account
            .lots
            .iter()
            .find(|l| l.seq == seq)
            .map(|l| Why::Expiry {
                lot: l.transaction.to_string(),
                expires_at: Timestamp(l.expires.unwrap_or(at.0)),
            });
        let left = expire(account, seq);
        if let (true, Some(why)) = (left > 0, why) {
            let (tx, balance) = self.post(
                &mut cx,
                account_id,
                TxKind::Expiry,
                -left,
                None,
                vec![],
                TxMeta::None,
                why,
            );
            let event = Event::PointsExpired {
                points: -left,
                transaction: tx,
                balance,
            };
            cx.event(member(&self.state.accounts[account_id]), event);
        }
    }
}

/// When a lot credited at `created` expires, and when its warning falls: none without an
/// expiry in the program; no warning with `warnDays` 0.
pub(crate) fn lot_dates(
    expiry: Option<(crate::config::Expiry, chrono_tz::Tz)>,
    created: Timestamp,
) -> (Option<Timestamp>, Option<Timestamp>) {
    match expiry {
        Some((e, tz)) => {
            let expires = crate::time::add_months(created, e.months, tz);
            let warn = expires
                .filter(|_| e.warn_days > 0)
                .and_then(|x| crate::clock::minus_days(x, e.warn_days, tz));
            (expires, warn)
        }
        None => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> Account {
        serde_json::from_str(
            r#"{"id":"loy_x","program":"p","customer":"c","balance":0,"tier":null,"activity":{},
            "last_demotion":null,"tier_due":null,"referral_code":"X","referred_by":null,
            "birthday":null,"stamps":{},"rule_usage":{}}"#,
        )
        .unwrap()
    }

    #[test]
    fn deductions_take_the_lots_that_expire_first() {
        let mut a = account();
        credit(
            &mut a,
            100,
            Timestamp(10),
            Some(Timestamp(1000)),
            None,
            "t1",
        );
        credit(&mut a, 50, Timestamp(20), Some(Timestamp(500)), None, "t2");
        credit(&mut a, 70, Timestamp(30), None, None, "t3");
        debit(&mut a, 120);
        assert_eq!(remaining(&a, 1), 0, "the lot expiring at 500 went first");
        assert_eq!(remaining(&a, 0), 30);
        assert_eq!(remaining(&a, 2), 70, "a lot that never expires goes last");
        assert_eq!(total(&a), 100);
    }

    #[test]
    fn a_reversal_takes_its_own_lot_first_then_debt_is_paid_off() {
        let mut a = account();
        credit(
            &mut a,
            100,
            Timestamp(10),
            Some(Timestamp(1000)),
            None,
            "t1",
        );
        credit(&mut a, 50, Timestamp(20), Some(Timestamp(500)), None, "t2");
        reverse(&mut a, 120, "t1");
        assert_eq!(remaining(&a, 0), 0);
        assert_eq!(remaining(&a, 1), 30, "then the lot that expires first");
        reverse(&mut a, 80, "t2");
        assert_eq!((total(&a), a.debt), (-50, 50));
        assert!(
            credit(&mut a, 30, Timestamp(40), None, None, "t3").is_none(),
            "all of it pays the debt"
        );
        let lot = credit(&mut a, 30, Timestamp(50), None, None, "t4").unwrap();
        assert_eq!((remaining(&a, lot.seq), a.debt, total(&a)), (10, 0, 10));
        assert_eq!(expire(&mut a, lot.seq), 10);
        assert_eq!(total(&a), 0);
    }
}
