//! What the engine produces (SPEC sections 8 and 9): ledger transactions, outbound events,
//! rejections, and the account view, with their exact JSON-lines form.
//!
//! The fold, the streaming service's export and its outbox all print through
//! [`Output::to_json_line`] and [`AccountView::to_json_line`], so they agree byte for byte.
//! Keys appear in the order SPEC section 9 shows them; event `data` keys are sorted.
//!
//! Owns: output types and their serialisation. Must not touch state.

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::dec::Dec;
use crate::envelope::Rejection;
use crate::time::Timestamp;

/// One thing the engine did, in the order it happened.
#[derive(Clone, PartialEq, Debug)]
pub enum Output {
    /// A ledger entry.
    Transaction(Transaction),
    /// An outbound loyalty event.
    Event(OutEvent),
    /// A record not applied (bad input), or a refused command.
    Rejected(Rejection),
}

/// The kind of a ledger entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
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
        }
    }
}

/// A points transaction: one entry of the append-only ledger.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Transaction {
    /// `ptx_…`.
    pub id: String,
    /// `loy_…`.
    pub account: String,
    /// The account's customer.
    pub customer: String,
    /// The account's program.
    pub program: String,
    /// What kind of entry.
    #[serde(rename = "type")]
    pub kind: TxKind,
    /// Signed points.
    pub points: i64,
    /// The balance right after this entry.
    pub balance_after: i128,
    /// The rule that awarded it.
    pub rule: Option<String>,
    /// Campaigns that contributed.
    pub campaigns: Vec<String>,
    /// The record (or the due effect) that caused it.
    pub source: String,
    /// When it happened (the record's time, or the time an effect fell due).
    pub created: Timestamp,
    /// `capped` on awards; more by kind.
    pub metadata: Map<String, Value>,
}

/// An outbound event (SPEC section 8): the input envelope's shape.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct OutEvent {
    /// Deterministic id.
    pub id: String,
    /// `loyalty.…`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// From what caused it.
    pub created: Timestamp,
    /// The payload; always holds account, customer and program.
    pub data: Map<String, Value>,
}

impl OutEvent {
    /// The envelope JSON (`{"id","type","created","data"}`): the outbound message value.
    pub fn to_envelope_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A transaction's line: `kind`, then the transaction's fields in their order. Spelled
/// out rather than `#[serde(flatten)]`, which goes through serde's map machinery (a tenth
/// of a fold's time went to it).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TxLine<'a> {
    kind: &'static str,
    id: &'a str,
    account: &'a str,
    customer: &'a str,
    program: &'a str,
    #[serde(rename = "type")]
    tx_kind: TxKind,
    points: i64,
    balance_after: i128,
    rule: Option<&'a str>,
    campaigns: &'a [String],
    source: &'a str,
    created: Timestamp,
    metadata: &'a Map<String, Value>,
}

impl<'a> TxLine<'a> {
    fn new(tx: &'a Transaction) -> TxLine<'a> {
        TxLine {
            kind: "transaction",
            id: &tx.id,
            account: &tx.account,
            customer: &tx.customer,
            program: &tx.program,
            tx_kind: tx.kind,
            points: tx.points,
            balance_after: tx.balance_after,
            rule: tx.rule.as_deref(),
            campaigns: &tx.campaigns,
            source: &tx.source,
            created: tx.created,
            metadata: &tx.metadata,
        }
    }
}

/// An event's line: `kind`, then the event's fields in their order.
#[derive(Serialize)]
struct EventLine<'a> {
    kind: &'static str,
    id: &'a str,
    #[serde(rename = "type")]
    event_kind: &'static str,
    created: Timestamp,
    data: &'a Map<String, Value>,
}

#[derive(Serialize)]
struct RejectedLine<'a> {
    kind: &'static str,
    source: Option<&'a str>,
    reason: &'static str,
    detail: &'a str,
}

impl Output {
    /// The JSON line of SPEC section 9 (without the newline).
    pub fn to_json_line(&self) -> String {
        let s = match self {
            Output::Transaction(tx) => serde_json::to_string(&TxLine::new(tx)),
            Output::Event(event) => serde_json::to_string(&EventLine {
                kind: "event",
                id: &event.id,
                event_kind: event.kind,
                created: event.created,
                data: &event.data,
            }),
            Output::Rejected(r) => serde_json::to_string(&RejectedLine {
                kind: "rejected",
                source: r.source.as_deref(),
                reason: r.reason.as_str(),
                detail: &r.detail,
            }),
        };
        // Serialising these types cannot fail: every map key is a string.
        s.unwrap_or_default()
    }
}

/// An account as the fold prints it last.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
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
    /// Below the current tier's threshold right now.
    pub at_risk: bool,
    /// The member's referral code.
    pub referral_code: String,
    /// Stamps on each card.
    pub stamps: std::collections::BTreeMap<String, u32>,
}

/// A tier as the account line shows it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
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

impl Serialize for DecNumber {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let raw = RawValue::from_string(self.0.to_string()).map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

impl AccountView {
    /// The JSON line of SPEC section 9 (without the newline).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}
