//! Points lots (SPEC section 7): every credit is a lot that expires a number of months after
//! it was awarded; deductions consume the lots that expire first; a reversal takes first
//! from the lots its award created; what no lot covers is a debt that later credits pay off
//! first. A balance is always the sum of its open lots minus its debt.
//!
//! Owns: the lots and debt of one account. Must not write transactions or events: the
//! engine does, with the amounts this module returns.

use serde::{Deserialize, Serialize};

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
    pub transaction: String,
}

impl Lot {
    fn order(&self) -> (i64, i64, u64) {
        (self.expires.unwrap_or(i64::MAX), self.created, self.seq)
    }
}

/// Credits `points`: pays the debt off first, and what is left forms a lot. Returns the new
/// lot, if one was formed.
pub fn credit(
    account: &mut Account,
    points: i64,
    at: Timestamp,
    expires: Option<Timestamp>,
    warn: Option<Timestamp>,
    transaction: &str,
) -> Option<Lot> {
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
        transaction: transaction.to_string(),
    };
    account.next_lot += 1;
    account.lots.push(lot.clone());
    Some(lot)
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
