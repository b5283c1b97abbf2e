//! What falls due in time (SPEC section 6), as the state keeps it: each effect's time, kind,
//! account and item, and the text form a store keeps them in.
//!
//! Owns: the order of due effects at one instant. Must not decide what an effect does (the
//! rule modules, through `clock`).

use serde::{Deserialize, Serialize};

use crate::Sym;

/// A time-driven effect that falls due (SPEC section 6): ordered by time, then kind, then
/// account, then item (lots of one account in the order they were awarded).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "DueText", try_from = "DueText")]
pub struct Due {
    /// When, in unix seconds.
    pub at: i64,
    /// The kind, in the order kinds run at one instant.
    pub kind: DueKind,
    /// The account (empty for a program-wide effect).
    pub account: Sym,
    /// What else identifies it.
    pub item: DueItem,
}

/// What identifies a due effect besides its time, kind and account. The variants are in
/// the order effects of one kind and account run at one instant: lots by number, then the
/// member's own evaluation, then its evaluation at a period close.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DueItem {
    /// A lot of the account (its expiry or its warning), by number.
    Lot(u64),
    /// Nothing more: a member's rolling tier evaluation, a birthday.
    None,
    /// A member's evaluation at its program's calendar period close.
    Close(Sym),
    /// A program's calendar period close itself (no account): it schedules every member's
    /// evaluation.
    ProgramClose(Sym),
}

/// A [`Due`] as a store keeps it (`m/overdue`): the item as text, as earlier versions
/// wrote it (a lot number, nothing, a program id, or `close:` and a program id).
#[derive(Serialize, Deserialize)]
struct DueText {
    at: i64,
    kind: DueKind,
    account: Sym,
    item: String,
}

impl From<Due> for DueText {
    fn from(d: Due) -> DueText {
        let item = match d.item {
            DueItem::Lot(n) => n.to_string(),
            DueItem::None => String::new(),
            DueItem::ProgramClose(p) => p.to_string(),
            DueItem::Close(p) => format!("close:{p}"),
        };
        DueText {
            at: d.at,
            kind: d.kind,
            account: d.account,
            item,
        }
    }
}

impl TryFrom<DueText> for Due {
    type Error = String;

    fn try_from(d: DueText) -> Result<Due, String> {
        let number = |s: &str| s.parse::<u64>().ok().filter(|n| n.to_string() == s);
        let item = if d.account.is_empty() && !d.item.is_empty() {
            DueItem::ProgramClose(d.item.into())
        } else if let Some(p) = d.item.strip_prefix("close:") {
            DueItem::Close(p.into())
        } else if d.item.is_empty() {
            DueItem::None
        } else if let Some(n) = number(&d.item) {
            DueItem::Lot(n)
        } else {
            return Err(format!("a due effect with the item {:?}", d.item));
        };
        Ok(Due {
            at: d.at,
            kind: d.kind,
            account: d.account,
            item,
        })
    }
}

/// Kinds of time-driven effects, in the order they run at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DueKind {
    /// A pending award vests (SPEC section 13): first, so that the lot it forms and the
    /// qualifying points it brings are there for what else falls due at that instant.
    Vest,
    /// What is left of a lot expires.
    Expiry,
    /// The warning before a lot expires.
    Warning,
    /// A tier evaluation (rolling period) or a period close (calendar period).
    Tier,
    /// The start of a member's birthday.
    Birthday,
}
