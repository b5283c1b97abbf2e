//! What falls due in time (SPEC section 6), as the state keeps it: each effect's time,
//! account and [`Effect`], and the text form a store keeps them in.
//!
//! Owns: the order of due effects at one instant. Must not decide what an effect does (the
//! rule modules, through `clock`).

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::Sym;

/// A time-driven effect that falls due (SPEC section 6): ordered by time, then the kind of
/// effect ([`Effect::rank`]), then account, then what else identifies it (lots of one
/// account in the order they were awarded).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "DueText", try_from = "DueText")]
pub struct Due {
    /// When, in unix seconds.
    pub at: i64,
    /// The account (empty for a program-wide effect, [`Effect::PeriodClose`]).
    pub account: Sym,
    /// What falls due.
    pub effect: Effect,
}

/// Every time-driven effect, one variant each, with what identifies it besides its time and
/// account. The kinds run at one instant in this order: vests, expiries, warnings, tier
/// effects, birthdays ([`Effect::rank`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Effect {
    /// A pending award vests (SPEC section 13), by its number: first, so that the lot it
    /// forms and the qualifying points it brings are there for what else falls due then.
    Vest(u64),
    /// What is left of a lot expires, by the lot's number.
    Expiry(u64),
    /// The warning before a lot expires, by the lot's number.
    Warning(u64),
    /// A member's rolling tier evaluation.
    Evaluate,
    /// A member's evaluation at its program's calendar period close.
    EvaluateAtClose(Sym),
    /// A program's calendar period close itself (no account): it schedules every member's
    /// evaluation.
    PeriodClose(Sym),
    /// The start of a member's birthday.
    Birthday,
}

/// The kinds of lot effects, which a schedule keeps apart (see `crate::schedule`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LotEffect {
    /// [`Effect::Vest`].
    Vest,
    /// [`Effect::Expiry`].
    Expiry,
    /// [`Effect::Warning`].
    Warning,
}

impl LotEffect {
    /// The effect on the lot numbered `lot`.
    pub fn on(self, lot: u64) -> Effect {
        match self {
            LotEffect::Vest => Effect::Vest(lot),
            LotEffect::Expiry => Effect::Expiry(lot),
            LotEffect::Warning => Effect::Warning(lot),
        }
    }

    /// Its kind's place in the order of one instant ([`Effect::rank`]).
    pub fn rank(self) -> u8 {
        self as u8
    }
}

impl Effect {
    /// The kind's place in the order effects run at one instant: vests, expiries, warnings,
    /// tier effects (one kind: an account's evaluations and a program's close sort among
    /// each other by account), birthdays.
    pub fn rank(&self) -> u8 {
        match self {
            Effect::Vest(_) => 0,
            Effect::Expiry(_) => 1,
            Effect::Warning(_) => 2,
            Effect::Evaluate | Effect::EvaluateAtClose(_) | Effect::PeriodClose(_) => 3,
            Effect::Birthday => 4,
        }
    }

    /// The lot effect and its lot, for a lot's expiry, warning or vest.
    pub fn on_lot(&self) -> Option<(LotEffect, u64)> {
        match *self {
            Effect::Vest(n) => Some((LotEffect::Vest, n)),
            Effect::Expiry(n) => Some((LotEffect::Expiry, n)),
            Effect::Warning(n) => Some((LotEffect::Warning, n)),
            _ => None,
        }
    }

    /// The order of two effects of one kind and account at one instant: lots by number, a
    /// rolling evaluation before one at a period close, and those by program.
    fn cmp_within(&self, other: &Effect) -> Ordering {
        let place = |e: &Effect| match e {
            Effect::Vest(n) | Effect::Expiry(n) | Effect::Warning(n) => (*n, 0u8),
            Effect::Evaluate | Effect::Birthday => (0, 1),
            Effect::EvaluateAtClose(_) => (0, 2),
            Effect::PeriodClose(_) => (0, 3),
        };
        fn program(e: &Effect) -> Option<&str> {
            match e {
                Effect::EvaluateAtClose(p) | Effect::PeriodClose(p) => Some(p),
                _ => None,
            }
        }
        (place(self), self.rank())
            .cmp(&(place(other), other.rank()))
            .then_with(|| program(self).cmp(&program(other)))
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Due) -> Ordering {
        self.at
            .cmp(&other.at)
            .then(self.effect.rank().cmp(&other.effect.rank()))
            .then_with(|| self.account.cmp(&other.account))
            .then_with(|| self.effect.cmp_within(&other.effect))
    }
}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Due) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A [`Due`] as a store keeps it (`m/overdue`): a kind's name and the item as text, as
/// earlier versions wrote them (a lot number, nothing, a program id, or `close:` and a
/// program id).
#[derive(Serialize, Deserialize)]
struct DueText {
    at: i64,
    kind: String,
    account: Sym,
    item: String,
}

impl From<Due> for DueText {
    fn from(d: Due) -> DueText {
        let (kind, item) = match d.effect {
            Effect::Vest(n) => ("Vest", n.to_string()),
            Effect::Expiry(n) => ("Expiry", n.to_string()),
            Effect::Warning(n) => ("Warning", n.to_string()),
            Effect::Evaluate => ("Tier", String::new()),
            Effect::EvaluateAtClose(p) => ("Tier", format!("close:{p}")),
            Effect::PeriodClose(p) => ("Tier", p.to_string()),
            Effect::Birthday => ("Birthday", String::new()),
        };
        DueText {
            at: d.at,
            kind: kind.to_string(),
            account: d.account,
            item,
        }
    }
}

/// A stored due entry that names no effect the engine schedules: its kind, and the item
/// and account it came with, do not go together.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a {kind} effect with the item {item:?}")]
pub struct OddDue {
    /// The effect's kind as stored.
    pub kind: String,
    /// Its item as stored.
    pub item: String,
}

impl TryFrom<DueText> for Due {
    type Error = OddDue;

    fn try_from(d: DueText) -> Result<Due, OddDue> {
        let odd = || OddDue {
            kind: d.kind.clone(),
            item: d.item.clone(),
        };
        let lot = || {
            d.item
                .parse::<u64>()
                .ok()
                .filter(|n| n.to_string() == d.item && !d.account.is_empty())
                .ok_or_else(odd)
        };
        let effect = match d.kind.as_str() {
            "Vest" => Effect::Vest(lot()?),
            "Expiry" => Effect::Expiry(lot()?),
            "Warning" => Effect::Warning(lot()?),
            "Birthday" if d.item.is_empty() && !d.account.is_empty() => Effect::Birthday,
            "Tier" if d.account.is_empty() && !d.item.is_empty() => {
                Effect::PeriodClose(d.item.as_str().into())
            }
            "Tier" if d.account.is_empty() => return Err(odd()),
            "Tier" => match d.item.strip_prefix("close:") {
                Some(p) => Effect::EvaluateAtClose(p.into()),
                None if d.item.is_empty() => Effect::Evaluate,
                None => return Err(odd()),
            },
            _ => return Err(odd()),
        };
        Ok(Due {
            at: d.at,
            account: d.account,
            effect,
        })
    }
}
