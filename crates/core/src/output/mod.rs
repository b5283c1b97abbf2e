//! What the engine produces (SPEC sections 8 and 9): ledger transactions, outbound events,
//! rejections, and the account view, with their exact JSON-lines form.
//!
//! The fold, the streaming service's export and its outbox all print through
//! [`Output::to_json_line`] and [`AccountView::to_json_line`], so they agree byte for byte.
//! Keys appear in the order SPEC section 9 shows them; event `data` keys are sorted.
//!
//! Owns: output types and their serialisation. Must not touch state.

#[cfg(test)]
use serde::Serialize;
#[cfg(test)]
use serde_json::value::RawValue;
#[cfg(test)]
use serde_json::{json, Value};

use crate::dec::Dec;
use crate::envelope::Rejection;
use crate::time::Timestamp;
use crate::Sym;

mod event;
pub(crate) mod jw;
#[cfg(test)]
mod oracle;
mod why;

pub use event::{Event, Member, OutEvent};
pub use why::{CapWhy, RuleWhy, Why};

/// A business refusal (SPEC sections 2 and 7): the input was good, the rules say no. A
/// redemption's is reported as a `loyalty.redemption.rejected` event; an adjustment's or a
/// transfer's as a `rejected` line whose reason is [`crate::Reason::Refused`]. Apart from
/// the input rejections, which say the record itself was wrong.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Refusal {
    /// No such reward, or outside its window.
    NotAvailable,
    /// The member's tier is outside the reward's ranks.
    TierRequired,
    /// The reward's stock is used up.
    OutOfStock,
    /// The member reached the reward's limit.
    LimitReached,
    /// The balance is below the cost or the program's minimum.
    InsufficientPoints,
}

impl Refusal {
    /// Every refusal.
    pub const ALL: [Refusal; 5] = [
        Refusal::NotAvailable,
        Refusal::TierRequired,
        Refusal::OutOfStock,
        Refusal::LimitReached,
        Refusal::InsufficientPoints,
    ];

    /// The reason as the event prints it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Refusal::NotAvailable => "not_available",
            Refusal::TierRequired => "tier_required",
            Refusal::OutOfStock => "out_of_stock",
            Refusal::LimitReached => "limit_reached",
            Refusal::InsufficientPoints => "insufficient_points",
        }
    }
}

/// Which way a tier changed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Direction {
    /// To a higher rank (or the same rank, after a program update renamed the tiers).
    Up,
    /// To a lower rank.
    Down,
}

impl Direction {
    /// `up` or `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

/// Whether an award or a reversal moved the balance or the pending balance (SPEC section
/// 13): only in a program with `pendingDays`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(test, derive(Serialize), serde(rename_all = "snake_case"))]
pub enum Status {
    /// Pending: counted in `pendingBalance`, not in the balance.
    Pending,
    /// Posted: in the balance.
    Posted,
}

impl Status {
    /// `pending` or `posted`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Posted => "posted",
        }
    }
}

/// One thing the engine did, in the order it happened.
#[derive(Clone, PartialEq, Debug)]
pub enum Output {
    /// A ledger entry.
    Transaction(Transaction),
    /// An outbound loyalty event.
    Event(OutEvent),
    /// A record not applied (bad input), or a refused command.
    Rejected(Rejection),
    /// A record for another partition's log ([`crate::partition`]).
    Message(Message),
}

/// A record one partition's engine hands to another partition's log
/// ([`crate::partition`]): published through the outbox, applied there once.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Message {
    /// The log partition it goes to.
    pub partition: u32,
    /// The key it is produced with: the customer it is for.
    pub key: String,
    /// The record, an envelope as JSON text.
    pub record: String,
}

/// The kind of a ledger entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(test, derive(Serialize), serde(rename_all = "snake_case"))]
pub enum TxKind {
    /// Points earned by a rule or a campaign bonus.
    Award,
    /// An operator's signed correction.
    Adjustment,
    /// Points given back by a refund.
    Reversal,
    /// Points that expired.
    Expiry,
    /// Points spent on a reward.
    Redemption,
    /// Points received from another member.
    TransferIn,
    /// A pending award's points reaching the balance (SPEC section 13).
    Vest,
    /// Points sent to another member.
    TransferOut,
}

impl TxKind {
    /// The name the ledger prints.
    pub fn as_str(self) -> &'static str {
        match self {
            TxKind::Award => "award",
            TxKind::Adjustment => "adjustment",
            TxKind::Reversal => "reversal",
            TxKind::Expiry => "expiry",
            TxKind::Redemption => "redemption",
            TxKind::TransferIn => "transfer_in",
            TxKind::TransferOut => "transfer_out",
            TxKind::Vest => "vest",
        }
    }
}

/// A points transaction: one entry of the append-only ledger.
#[derive(Clone, PartialEq, Eq, Debug)]
#[cfg_attr(test, derive(Serialize), serde(rename_all = "camelCase"))]
pub struct Transaction {
    /// `ptx_…`.
    pub id: Sym,
    /// `loy_…`.
    pub account: Sym,
    /// The account's customer.
    pub customer: Sym,
    /// The account's program.
    pub program: Sym,
    /// What kind of entry.
    #[cfg_attr(test, serde(rename = "type"))]
    pub kind: TxKind,
    /// Signed points.
    pub points: i64,
    /// `pending` or `posted`: on awards and reversals in a program with pending points.
    pub status: Option<Status>,
    /// The balance right after this entry.
    pub balance_after: i128,
    /// The rule that awarded it.
    pub rule: Option<Sym>,
    /// Campaigns that contributed.
    pub campaigns: Vec<Sym>,
    /// The record (or the due effect) that caused it.
    pub source: Sym,
    /// When it happened (the record's time, or the time an effect fell due).
    pub created: Timestamp,
    /// What more the entry says, by kind.
    pub metadata: TxMeta,
    /// What its points are made of (SPEC section 12).
    pub why: Why,
    /// The SHA-256 of the account's previous hash (as hex) and this line without its hash
    /// (SPEC section 13).
    pub hash: [u8; 32],
    /// The text of its fields as the engine wrote them for its hash, so that printing it
    /// does not write them again. Only the engine sets it, on a transaction it has just
    /// posted and that nothing changes after; a transaction made otherwise has none and is
    /// written from its fields.
    #[cfg_attr(test, serde(skip))]
    pub(crate) written: Written,
}

/// [`Transaction::written`]: not part of the value (equal, and not printed, whatever it
/// holds).
#[derive(Clone, Default)]
pub(crate) struct Written(pub(crate) Option<Box<[u8]>>);

impl PartialEq for Written {
    fn eq(&self, _: &Written) -> bool {
        true
    }
}

impl Eq for Written {}

impl std::fmt::Debug for Written {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("..")
    }
}

/// Lower-case hex of a hash.
pub fn hex32(h: &[u8; 32]) -> String {
    let mut out = Vec::with_capacity(64);
    push_hex32(&mut out, h);
    String::from_utf8(out).unwrap_or_default()
}

/// Appends [`hex32`] of `h` to `out`.
pub(crate) fn push_hex32(out: &mut Vec<u8>, h: &[u8; 32]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 64];
    for (i, b) in h.iter().enumerate() {
        text[2 * i] = DIGITS[usize::from(b >> 4)];
        text[2 * i + 1] = DIGITS[usize::from(b & 15)];
    }
    out.extend_from_slice(&text);
}

impl Transaction {
    /// The line without its hash: every field up to `why`, then `}`: what the hash covers.
    pub fn unhashed_line(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        self.write_fields(&mut out);
        out.push(b'}');
        out
    }

    /// The hash this transaction's line has when the account's previous one is `prev`:
    /// SHA-256 of `prev` as 64 hex characters, then [`Transaction::unhashed_line`].
    pub fn chain_hash(&self, prev: &[u8; 32]) -> [u8; 32] {
        self.chain_hash_in(prev, &mut Vec::with_capacity(576))
    }

    /// [`Transaction::chain_hash`], writing what it hashes into `buf` (cleared first), so
    /// that the engine hashes every transaction in one buffer of its own.
    pub(crate) fn chain_hash_in(&self, prev: &[u8; 32], buf: &mut Vec<u8>) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        buf.clear();
        push_hex32(buf, prev);
        self.write_fields(buf);
        buf.push(b'}');
        Sha256::digest(&buf[..]).into()
    }

    /// Hashes this transaction, just posted, onto `prev` ([`Transaction::chain_hash`]), and
    /// keeps the text of its fields for printing.
    pub(crate) fn seal(&mut self, prev: &[u8; 32], buf: &mut Vec<u8>) {
        self.hash = self.chain_hash_in(prev, buf);
        self.written = Written(buf.get(64..buf.len() - 1).map(Box::from));
    }

    fn write_fields(&self, out: &mut Vec<u8>) {
        let tx = self;
        out.extend_from_slice(br#"{"kind":"transaction","id":"#);
        jw::str(out, &tx.id);
        out.extend_from_slice(br#","account":"#);
        jw::str(out, &tx.account);
        out.extend_from_slice(br#","customer":"#);
        jw::str(out, &tx.customer);
        out.extend_from_slice(br#","program":"#);
        jw::str(out, &tx.program);
        out.extend_from_slice(br#","type":""#);
        out.extend_from_slice(tx.kind.as_str().as_bytes());
        out.extend_from_slice(br#"","points":"#);
        jw::int(out, tx.points);
        if let Some(s) = tx.status {
            out.extend_from_slice(br#","status":""#);
            out.extend_from_slice(s.as_str().as_bytes());
            out.push(b'"');
        }
        out.extend_from_slice(br#","balanceAfter":"#);
        jw::int(out, tx.balance_after);
        out.extend_from_slice(br#","rule":"#);
        jw::opt_str(out, tx.rule.as_deref());
        out.extend_from_slice(br#","campaigns":["#);
        for (i, c) in tx.campaigns.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            jw::str(out, c);
        }
        out.extend_from_slice(br#"],"source":"#);
        jw::str(out, &tx.source);
        out.extend_from_slice(br#","created":"#);
        jw::time(out, tx.created);
        out.extend_from_slice(br#","metadata":"#);
        tx.metadata.write(out);
        out.extend_from_slice(br#","why":"#);
        tx.why.write(out);
    }
}

/// What a ledger entry's `metadata` says, by kind of entry.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum TxMeta {
    /// Nothing (`{}`): reversals, expiries, transfers.
    None,
    /// An award: whether a cap cut it.
    Award {
        /// `capped`.
        capped: bool,
    },
    /// An adjustment: the operator's reason.
    Adjustment {
        /// `reason`.
        reason: String,
    },
    /// A transfer's credit given back to its sender (`{"returned":true}`): the receiver's
    /// partition could not take it.
    Returned,
    /// A redemption: its id and the reward.
    Redemption {
        /// `rdm_…`.
        redemption: String,
        /// The reward.
        reward: String,
    },
}

impl TxMeta {
    /// Appends the `metadata` object (keys in byte order).
    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            TxMeta::None => out.extend_from_slice(b"{}"),
            TxMeta::Returned => out.extend_from_slice(br#"{"returned":true}"#),
            TxMeta::Award { capped } => out.extend_from_slice(if *capped {
                br#"{"capped":true}"#
            } else {
                br#"{"capped":false}"#
            }),
            TxMeta::Adjustment { reason } => {
                out.extend_from_slice(br#"{"reason":"#);
                jw::str(out, reason);
                out.push(b'}');
            }
            TxMeta::Redemption { redemption, reward } => {
                out.extend_from_slice(br#"{"redemption":"#);
                jw::str(out, redemption);
                out.extend_from_slice(br#","reward":"#);
                jw::str(out, reward);
                out.push(b'}');
            }
        }
    }

    /// The same object as a `serde_json::Value` (the tests' oracle).
    #[cfg(test)]
    pub fn to_value(&self) -> Value {
        match self {
            TxMeta::None => json!({}),
            TxMeta::Returned => json!({ "returned": true }),
            TxMeta::Award { capped } => json!({ "capped": capped }),
            TxMeta::Adjustment { reason } => json!({ "reason": reason }),
            TxMeta::Redemption { redemption, reward } => {
                json!({ "redemption": redemption, "reward": reward })
            }
        }
    }
}

#[cfg(test)]
impl Serialize for TxMeta {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(s)
    }
}

impl Output {
    /// The JSON line of SPEC section 9 (without the newline).
    pub fn to_json_line(&self) -> String {
        let mut out = Vec::with_capacity(512);
        self.write_json_line(&mut out);
        // Only whole UTF-8 strings and ASCII were written.
        String::from_utf8(out).unwrap_or_default()
    }

    /// Appends the JSON line of SPEC section 9 (without the newline) to `out`: the bytes
    /// serde would print for the line types below, written straight (most strings need no
    /// escaping, and serde_json checks every byte of every one; a fold spent a tenth of its
    /// instructions there).
    pub fn write_json_line(&self, out: &mut Vec<u8>) {
        match self {
            Output::Transaction(tx) => {
                match &tx.written.0 {
                    Some(fields) => {
                        // Nothing changes a transaction once sealed: a debug build checks.
                        debug_assert!({
                            let mut again = Vec::new();
                            tx.write_fields(&mut again);
                            again[..] == fields[..]
                        });
                        out.extend_from_slice(fields)
                    }
                    None => tx.write_fields(out),
                }
                out.extend_from_slice(br#","hash":""#);
                push_hex32(out, &tx.hash);
                out.extend_from_slice(br#""}"#);
            }
            Output::Event(event) => {
                out.extend_from_slice(br#"{"kind":"event","id":"#);
                event.write_rest(out);
            }
            Output::Rejected(r) => {
                out.extend_from_slice(br#"{"kind":"rejected","source":"#);
                jw::opt_str(out, r.source.as_deref());
                out.extend_from_slice(br#","reason":"#);
                jw::str(out, r.reason.as_str());
                out.extend_from_slice(br#","detail":"#);
                jw::str(out, &r.detail);
                out.push(b'}');
            }
            Output::Message(m) => {
                out.extend_from_slice(br#"{"kind":"message","partition":"#);
                out.extend_from_slice(itoa::Buffer::new().format(m.partition).as_bytes());
                out.extend_from_slice(br#","key":"#);
                jw::str(out, &m.key);
                out.extend_from_slice(br#","record":"#);
                out.extend_from_slice(m.record.as_bytes());
                out.push(b'}');
            }
        }
    }
}

/// An account as the fold prints it last.
#[derive(Clone, PartialEq, Eq, Debug)]
#[cfg_attr(test, derive(Serialize), serde(rename_all = "camelCase"))]
pub struct AccountView {
    /// Always `"account"`.
    pub kind: &'static str,
    /// `loy_…`.
    pub id: String,
    /// The customer.
    pub customer: String,
    /// The program.
    pub program: String,
    /// The points balance.
    pub balance: i128,
    /// The tier held, if the program has tiers.
    pub tier: Option<TierView>,
    /// The qualifying value now.
    pub qualifying_value: i64,
    /// Below the current tier's threshold right now, with a lower tier to fall to, and no
    /// manual tier in force at or above the tier held.
    pub at_risk: bool,
    /// The member's referral code.
    pub referral_code: String,
    /// Stamps on each card.
    pub stamps: std::collections::BTreeMap<String, u32>,
    /// The hash of its last transaction (64 zeros when it has none).
    pub ledger_hash: String,
    /// Points awarded and not yet vested: in a program with pending points only.
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub pending_balance: Option<i128>,
    /// A tier set by hand that still holds: its name, until when, and why.
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub manual_tier: Option<ManualTierView>,
}

/// A manual tier as the account line shows it, while it holds.
#[derive(Clone, PartialEq, Eq, Debug)]
#[cfg_attr(test, derive(Serialize))]
pub struct ManualTierView {
    /// The tier's name.
    pub tier: String,
    /// Until when no evaluation demotes the member below it.
    pub until: Timestamp,
    /// The operator's reason.
    pub reason: String,
}

/// A tier as the account line shows it.
#[derive(Clone, PartialEq, Eq, Debug)]
#[cfg_attr(test, derive(Serialize), serde(rename_all = "camelCase"))]
pub struct TierView {
    /// Name.
    pub name: String,
    /// Rank.
    pub rank: u32,
    /// The multiplier, printed as the exact JSON number.
    pub earn_multiplier: DecNumber,
}

/// A decimal printed as an exact JSON number.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DecNumber(pub Dec);

#[cfg(test)]
impl Serialize for DecNumber {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let raw = RawValue::from_string(self.0.to_string()).map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

impl AccountView {
    /// The JSON line of SPEC section 9 (without the newline).
    pub fn to_json_line(&self) -> String {
        let mut out = Vec::with_capacity(320);
        self.write_json(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Appends the JSON object, its keys in the order of the fields (as the transactions
    /// and events are written: through `jw`, the one writer of the output; the serde form
    /// of the same fields is the tests' oracle).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(br#"{"kind":"#);
        jw::str(out, self.kind);
        out.extend_from_slice(br#","id":"#);
        jw::str(out, &self.id);
        out.extend_from_slice(br#","customer":"#);
        jw::str(out, &self.customer);
        out.extend_from_slice(br#","program":"#);
        jw::str(out, &self.program);
        out.extend_from_slice(br#","balance":"#);
        jw::int(out, self.balance);
        out.extend_from_slice(br#","tier":"#);
        match &self.tier {
            Some(t) => {
                out.extend_from_slice(br#"{"name":"#);
                jw::str(out, &t.name);
                out.extend_from_slice(br#","rank":"#);
                jw::int(out, t.rank);
                out.extend_from_slice(br#","earnMultiplier":"#);
                t.earn_multiplier.0.write_to(out);
                out.push(b'}');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(br#","qualifyingValue":"#);
        jw::int(out, self.qualifying_value);
        out.extend_from_slice(if self.at_risk {
            br#","atRisk":true"#
        } else {
            br#","atRisk":false"#
        });
        out.extend_from_slice(br#","referralCode":"#);
        jw::str(out, &self.referral_code);
        out.extend_from_slice(br#","stamps":{"#);
        for (i, (card, n)) in self.stamps.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            jw::str(out, card);
            out.push(b':');
            jw::int(out, *n);
        }
        out.extend_from_slice(br#"},"ledgerHash":"#);
        jw::str(out, &self.ledger_hash);
        if let Some(p) = self.pending_balance {
            out.extend_from_slice(br#","pendingBalance":"#);
            jw::int(out, p);
        }
        if let Some(m) = &self.manual_tier {
            out.extend_from_slice(br#","manualTier":{"tier":"#);
            jw::str(out, &m.tier);
            out.extend_from_slice(br#","until":"#);
            jw::time(out, m.until);
            out.extend_from_slice(br#","reason":"#);
            jw::str(out, &m.reason);
            out.push(b'}');
        }
        out.push(b'}');
    }
}

#[cfg(test)]
mod tests;
