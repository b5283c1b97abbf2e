//! The input envelope (SPEC section 2): bytes in, a typed [`Record`] or a [`Rejection`] out.
//!
//! This module decides `malformed` and `invalid`, the two reasons that depend on the record
//! alone; the reasons that depend on state (`duplicate`, `unknown_program`, …) are decided
//! by the engine. Numbers are read from their JSON text; no float is made.
//!
//! Owns: the envelope, every input type's data schema, rejection reasons. Must not touch
//! state.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::config::parse_month_day;
use crate::dec::{Dec, MAX_ABS};
use crate::output::Refusal;
use crate::time::Timestamp;

mod data;
mod fields;
mod scan;

pub use data::*;
use fields::data_body;

/// Why a record was not applied (SPEC section 2), in the order of precedence.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Reason {
    /// Not a JSON object envelope.
    Malformed,
    /// A field missing, mistyped or out of range.
    Invalid,
    /// An id seen before.
    Duplicate,
    /// A command naming no configured program.
    UnknownProgram,
    /// A command for a customer with no account.
    NotEnrolled,
    /// A refund of a payment never applied.
    UnknownPayment,
    /// A program update that does not validate.
    InvalidConfig,
    /// Not bad input: a command the rules refuse (an adjustment or a transfer beyond the
    /// balance is `insufficient_points`).
    Refused(Refusal),
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Reason {
    /// The machine-readable name, as printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::Invalid => "invalid",
            Reason::Duplicate => "duplicate",
            Reason::UnknownProgram => "unknown_program",
            Reason::NotEnrolled => "not_enrolled",
            Reason::UnknownPayment => "unknown_payment",
            Reason::InvalidConfig => "invalid_config",
            Reason::Refused(r) => r.as_str(),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A record the engine did not apply, with why.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Rejection {
    /// The record's id, when it has one.
    pub source: Option<String>,
    /// The machine-readable reason.
    pub reason: Reason,
    /// A human-readable detail that names the field.
    pub detail: String,
}

impl Rejection {
    /// A rejection of `source` for `reason`.
    pub fn new(source: Option<&str>, reason: Reason, detail: impl Into<String>) -> Rejection {
        Rejection {
            source: source.map(str::to_string),
            reason,
            detail: detail.into(),
        }
    }
}

/// A well-formed, valid input record.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Record {
    /// The envelope id (unique among applied records).
    pub id: crate::Sym,
    /// The envelope type.
    pub kind: String,
    /// The event time.
    pub created: Timestamp,
    /// The typed data.
    pub body: Body,
}

/// The data of a record, by type.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Body {
    /// `payment.completed`, `invoice.paid`, `subscription.created` and custom types: the
    /// events that trigger rules for one customer.
    Event(Activity),
    /// `payment.refunded`.
    Refund(Refund),
    /// `referral.converted` from upstream.
    Referral(Referral),
    /// `clock.tick`.
    Tick,
    /// `loyalty.account.enroll`.
    Enroll(Enroll),
    /// `loyalty.points.adjust`.
    Adjust(Adjust),
    /// `loyalty.qualifying_activity.record`.
    Qualify(Qualify),
    /// `loyalty.tier.set` (SPEC section 13).
    TierSet(TierSet),
    /// `loyalty.redemption.create`.
    Redeem(Redeem),
    /// `loyalty.points.transfer`.
    Transfer(Transfer),
    /// `loyalty.program.updated`: the program object's JSON text, validated by the engine.
    ProgramUpdated(String),
    /// `loyalty.transfer.credit`: a transfer's credit, from the sender's partition
    /// ([`crate::partition`]).
    TransferCredit(TransferMessage),
    /// `loyalty.transfer.return`: a credit given back to the sender's partition.
    TransferReturn(TransferMessage),
    /// `loyalty.stock.*`: a reward's units asked of, granted or refused by, or given back
    /// to the partition that counts them ([`crate::partition`]).
    Stock(StockStep, StockMessage),
    /// `loyalty.code.claim`, `loyalty.referral.convert`, `loyalty.referral.award`: a
    /// referral across partitions ([`crate::partition`]).
    Referral2(ReferralStep, ReferralMessage),
}

impl Record {
    /// Whether it is a message one partition sent another (never from upstream).
    pub fn is_message(&self) -> bool {
        matches!(
            self.body,
            Body::TransferCredit(_)
                | Body::TransferReturn(_)
                | Body::Stock(..)
                | Body::Referral2(..)
        )
    }

    /// The customer whose partition a record belongs to, when it has one: the customer of
    /// an event, refund or command, the sender of a transfer, the referee of a referral
    /// (messages and ticks belong where they are sent).
    pub fn home_customer(&self) -> Option<&str> {
        match &self.body {
            Body::Event(a) if a.loyalty_account.is_none() => Some(&a.customer),
            Body::Refund(r) => Some(&r.customer),
            Body::Referral(r) => Some(&r.referee),
            Body::Enroll(c) => Some(&c.customer),
            Body::Adjust(c) => Some(&c.customer),
            Body::Qualify(c) => Some(&c.customer),
            Body::TierSet(c) => Some(&c.customer),
            Body::Redeem(c) => Some(&c.customer),
            Body::Transfer(t) => Some(&t.from),
            _ => None,
        }
    }

    /// The program a command names, if it is a command.
    pub fn command_program(&self) -> Option<&str> {
        match &self.body {
            Body::Enroll(c) => Some(&c.program),
            Body::Adjust(c) => Some(&c.program),
            Body::Qualify(c) => Some(&c.program),
            Body::TierSet(c) => Some(&c.program),
            Body::Redeem(c) => Some(&c.program),
            Body::Transfer(c) => Some(&c.program),
            _ => None,
        }
    }
}

/// The command types of SPEC sections 2 and 13.
pub const COMMANDS: [&str; 7] = [
    "loyalty.tier.set",
    "loyalty.account.enroll",
    "loyalty.points.adjust",
    "loyalty.qualifying_activity.record",
    "loyalty.redemption.create",
    "loyalty.points.transfer",
    "loyalty.program.updated",
];

/// A JSON value's text, borrowed from the input: what a field of the envelope or of its
/// `data` is read from, by the scanner or by `serde_json`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Json<'a>(pub(crate) &'a str);

impl<'de: 'a, 'a> Deserialize<'de> for Json<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'de RawValue>::deserialize(d).map(|r| Json(r.get()))
    }
}

/// A field read the way `serde_json` reads an `Option`: `null` is `None`.
fn field(value: &str) -> Option<Json<'_>> {
    (value != "null").then_some(Json(value))
}

/// The envelope's fields and their JSON names; and `slot`, the field a key names.
macro_rules! fields {
    ($name:ident { $($field:ident = $key:literal),* $(,)? }) => {
        #[derive(Deserialize, Default, PartialEq, Debug)]
        struct $name<'a> {
            $(
                #[serde(borrow, rename = $key)]
                $field: Option<Json<'a>>,
            )*
        }

        impl<'a> $name<'a> {
            /// The field `key` names, if any.
            fn slot(&mut self, key: &str) -> Option<&mut Option<Json<'a>>> {
                match key {
                    $($key => Some(&mut self.$field),)*
                    _ => None,
                }
            }

            /// The fields of the object `text`, as `serde_json` reads them into this
            /// struct; `None` when [`scan`] declines the text, or when a field is given
            /// twice (`serde_json` refuses that, with a detail of its own).
            fn scan(text: &'a str) -> Option<$name<'a>> {
                let mut out = $name::default();
                let mut given = 0u64;
                scan::Scan::new(text).whole_object(|key, value| {
                    if let Some(slot) = out.slot(key) {
                        let bit = 1u64 << [$($key),*].iter().position(|k| *k == key)?;
                        if given & bit != 0 {
                            return None;
                        }
                        given |= bit;
                        *slot = field(value);
                    }
                    Some(())
                })?;
                Some(out)
            }
        }
    };
}

fields!(RawEnvelope {
    id = "id",
    kind = "type",
    created = "created",
    data = "data",
});

fields!(RawData {
    id = "id",
    customer = "customer",
    amount = "amount",
    currency = "currency",
    metadata = "metadata",
    payment = "payment",
    subscription = "subscription",
    plan = "plan",
    interval = "interval",
    referrer = "referrer",
    referee = "referee",
    code = "code",
    program = "program",
    referral_code = "referralCode",
    birthday = "birthday",
    opening_balance = "openingBalance",
    points = "points",
    reason = "reason",
    reference = "reference",
    reward = "reward",
    quantity = "quantity",
    from = "from",
    to = "to",
    source = "source",
    transaction = "transaction",
    role = "role",
    tier = "tier",
    until = "until",
});

/// A JSON string value's text, or `None` when the raw value is not a string.
fn as_string(raw: Json<'_>) -> Option<String> {
    as_str(raw).map(Cow::into_owned)
}

/// [`as_string`], borrowed from the input when the string has no escape.
fn as_str(raw: Json<'_>) -> Option<Cow<'_, str>> {
    let text = raw.0;
    if !text.starts_with('"') {
        return None;
    }
    // Fast path: no escapes.
    let inner = &text[1..text.len() - 1];
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(text).ok().map(Cow::Owned)
}

fn is_null(raw: Option<Json<'_>>) -> bool {
    raw.is_none_or(|r| r.0 == "null")
}

/// Parses one input record.
pub fn parse(bytes: &[u8]) -> Result<Record, Rejection> {
    let malformed =
        |source: Option<&str>, detail: &str| Err(Rejection::new(source, Reason::Malformed, detail));
    // One detail for every record that is not a JSON object, whatever the cause, so that a
    // record printed by `loyalty log` (as a JSON string, when it is not an object) is
    // rejected with the very same line by a fold over that output.
    const NOT_AN_OBJECT: &str = "the record is not a JSON object";
    let Ok(text) = std::str::from_utf8(bytes) else {
        return malformed(None, NOT_AN_OBJECT);
    };
    if !text.trim_start().starts_with('{') {
        return malformed(None, NOT_AN_OBJECT);
    }
    let Some(env) = RawEnvelope::scan(text).or_else(|| serde_json::from_str(text).ok()) else {
        return malformed(None, NOT_AN_OBJECT);
    };
    let id = env.id.and_then(as_str);
    let source = id.as_deref();
    let Some(id) = source else {
        return malformed(None, "id: missing or not a string");
    };
    let Some(kind) = env.kind.and_then(as_str) else {
        return malformed(source, "type: missing or not a string");
    };
    let Some(created_text) = env.created.and_then(as_str) else {
        return malformed(source, "created: missing or not a string");
    };
    let Some(data) = env.data.filter(|d| d.0.starts_with('{')) else {
        return malformed(source, "data: missing or not an object");
    };
    let invalid = |detail: String| Err(Rejection::new(source, Reason::Invalid, detail));
    if id.is_empty() {
        return invalid("id: must not be empty".into());
    }
    let Some(created) = Timestamp::parse_rfc3339(&created_text) else {
        return invalid(format!("created: {created_text:?} is not an RFC 3339 time"));
    };
    if kind.is_empty() {
        return invalid("type: must not be empty".into());
    }
    if kind == "customer.birthday" {
        return invalid("type: customer.birthday is raised by the engine, not sent to it".into());
    }
    // A partition's message to another (`crate::partition`) parses; only an engine that
    // folds one partition of several applies it (`Engine::check` refuses it otherwise,
    // with this same line).
    if kind.starts_with("loyalty.")
        && !COMMANDS.contains(&&*kind)
        && !crate::partition::INTERNAL.contains(&&*kind)
    {
        return invalid(format!("type: {kind} is not a command"));
    }
    let body = if kind == "loyalty.program.updated" {
        Body::ProgramUpdated(data.0.to_string())
    } else {
        let raw = match RawData::scan(data.0).map_or_else(|| serde_json::from_str(data.0), Ok) {
            Ok(raw) => raw,
            Err(e) => return invalid(format!("data: {e}")),
        };
        match data_body(&kind, &raw) {
            // Out of range, from the record alone (SPEC section 13): before `duplicate`.
            Ok(Body::TierSet(t)) if t.until.is_some_and(|u| u <= created) => {
                return invalid("data.until: must be after the command's created".into())
            }
            Ok(body) => body,
            Err(detail) => return invalid(detail),
        }
    };
    Ok(Record {
        id: id.into(),
        kind: kind.into_owned(),
        created,
        body,
    })
}

/// A log record as one line of JSON text: a JSON object keeps its bytes, with line breaks
/// (which JSON allows only as whitespace between tokens) turned into spaces; anything else
/// (not UTF-8, not JSON, not an object, empty) becomes a JSON string of its text, which the
/// engine rejects exactly as it rejected the original: `malformed`, with the same detail.
pub fn log_line(bytes: &[u8]) -> String {
    if let Ok(text) = std::str::from_utf8(bytes) {
        if text.trim_start().starts_with('{')
            && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
        {
            return text.replace(['\n', '\r'], " ");
        }
    }
    serde_json::to_string(&String::from_utf8_lossy(bytes)).unwrap_or_else(|_| "\"\"".into())
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod scan_tests;
