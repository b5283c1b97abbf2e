//! The input envelope (SPEC section 2): bytes in, a typed [`Record`] or a [`Rejection`] out.
//!
//! This module decides `malformed` and `invalid`, the two reasons that depend on the record
//! alone; the reasons that depend on state (`duplicate`, `unknown_program`, …) are decided
//! by the engine. Numbers are read from their JSON text; no float is made.
//!
//! Owns: the envelope, every input type's data schema, rejection reasons. Must not touch
//! state.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::config::parse_month_day;
use crate::dec::{Dec, MAX_ABS};
use crate::output::Refusal;
use crate::time::Timestamp;

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

/// Which step of a referral across partitions a message is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ReferralStep {
    /// A code and its holder, to the code's partition.
    Claim,
    /// A referee's conversion, to the code's partition.
    Convert,
    /// The referrer's rules, on the referrer's partition.
    AwardReferrer,
    /// The referee's rules, on the referee's partition.
    AwardReferee,
}

/// A referral across partitions: what each step carries (the fields a step does not use
/// are empty).
#[derive(Clone, PartialEq, Eq, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ReferralMessage {
    /// The program.
    pub program: String,
    /// The referral code.
    pub code: String,
    /// The code's holder (a claim) or the referrer (an award): its customer.
    pub referrer: String,
    /// The referee's customer (a conversion, an award).
    pub referee: String,
    /// The record that caused it: the new member's enrolment, or the referee's payment.
    pub source: String,
}

/// Which step of a reward's stock across partitions a message is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum StockStep {
    /// `loyalty.stock.request`, to the owner.
    Request,
    /// `loyalty.stock.granted`, to the member's partition.
    Granted,
    /// `loyalty.stock.refused`, to the member's partition.
    Refused,
    /// `loyalty.stock.release`, to the owner.
    Release,
}

/// Units of a reward, for one redemption, as the partitions tell each other.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StockMessage {
    /// The program.
    pub program: String,
    /// The reward.
    pub reward: String,
    /// The redeeming customer.
    pub customer: String,
    /// Units.
    pub quantity: i64,
    /// The cost held for them.
    pub points: i64,
    /// The id of the `loyalty.redemption.create` record.
    pub source: String,
}

/// An event that concerns one customer.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Activity {
    /// `data.id` (the payment, invoice or subscription id), when present.
    pub object_id: Option<String>,
    /// `data.customer`.
    pub customer: String,
    /// `data.metadata.loyalty_account`, which wins over the customer.
    pub loyalty_account: Option<String>,
    /// Minor units.
    pub amount: Option<i64>,
    /// Upper-case ISO code.
    pub currency: Option<String>,
    /// The string values of `data.metadata`.
    pub metadata: BTreeMap<String, String>,
}

/// `payment.refunded`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Refund {
    /// The refund id.
    pub refund_id: String,
    /// The refunded payment's `data.id`.
    pub payment: String,
    /// `data.customer`.
    pub customer: String,
    /// Minor units refunded now.
    pub amount: i64,
    /// Upper-case ISO code.
    pub currency: String,
}

/// `referral.converted`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Referral {
    /// The member who referred.
    pub referrer: String,
    /// The member who was referred.
    pub referee: String,
    /// The code used, if given.
    pub code: Option<String>,
}

/// `loyalty.account.enroll`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Enroll {
    /// The customer.
    pub customer: String,
    /// The program.
    pub program: String,
    /// Another member's referral code.
    pub referral_code: Option<String>,
    /// `(month, day)`.
    pub birthday: Option<(u32, u32)>,
    /// Points to open the account with (SPEC section 13): 0 for none.
    pub opening_balance: i64,
}

/// `loyalty.points.adjust`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Adjust {
    /// The customer.
    pub customer: String,
    /// The program.
    pub program: String,
    /// Signed points.
    pub points: i64,
    /// Why.
    pub reason: String,
}

/// `loyalty.qualifying_activity.record`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Qualify {
    /// The customer.
    pub customer: String,
    /// The program.
    pub program: String,
    /// The qualifying amount.
    pub amount: i64,
    /// Why.
    pub reason: String,
    /// An outside reference.
    pub reference: Option<String>,
}

/// `loyalty.tier.set` (SPEC section 13): a tier granted by hand.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TierSet {
    /// The customer.
    pub customer: String,
    /// The program.
    pub program: String,
    /// The tier's name.
    pub tier: String,
    /// Until when it holds (default: one period length after the command).
    pub until: Option<Timestamp>,
    /// Why.
    pub reason: String,
}

/// `loyalty.redemption.create`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Redeem {
    /// The customer.
    pub customer: String,
    /// The program.
    pub program: String,
    /// The reward id.
    pub reward: String,
    /// Units (default 1).
    pub quantity: i64,
}

/// `loyalty.points.transfer`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Transfer {
    /// The program.
    pub program: String,
    /// The sending customer.
    pub from: String,
    /// The receiving customer.
    pub to: String,
    /// Points moved (positive).
    pub points: i64,
}

/// A transfer's credit or its return, as one partition tells another
/// ([`crate::partition`]): the transfer, the record that asked for it, and its
/// `transfer_out`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TransferMessage {
    /// The transfer.
    pub transfer: Transfer,
    /// The id of the `loyalty.points.transfer` record: the `source` of every effect.
    pub source: String,
    /// The sender's `transfer_out` transaction.
    pub transaction: String,
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

#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow, rename = "type")]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    created: Option<&'a RawValue>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawData<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    customer: Option<&'a RawValue>,
    #[serde(borrow)]
    amount: Option<&'a RawValue>,
    #[serde(borrow)]
    currency: Option<&'a RawValue>,
    #[serde(borrow)]
    metadata: Option<&'a RawValue>,
    #[serde(borrow)]
    payment: Option<&'a RawValue>,
    #[serde(borrow)]
    subscription: Option<&'a RawValue>,
    #[serde(borrow)]
    plan: Option<&'a RawValue>,
    #[serde(borrow)]
    interval: Option<&'a RawValue>,
    #[serde(borrow)]
    referrer: Option<&'a RawValue>,
    #[serde(borrow)]
    referee: Option<&'a RawValue>,
    #[serde(borrow)]
    code: Option<&'a RawValue>,
    #[serde(borrow)]
    program: Option<&'a RawValue>,
    #[serde(borrow)]
    referral_code: Option<&'a RawValue>,
    #[serde(borrow)]
    birthday: Option<&'a RawValue>,
    #[serde(borrow)]
    opening_balance: Option<&'a RawValue>,
    #[serde(borrow)]
    points: Option<&'a RawValue>,
    #[serde(borrow)]
    reason: Option<&'a RawValue>,
    #[serde(borrow)]
    reference: Option<&'a RawValue>,
    #[serde(borrow)]
    reward: Option<&'a RawValue>,
    #[serde(borrow)]
    quantity: Option<&'a RawValue>,
    #[serde(borrow)]
    from: Option<&'a RawValue>,
    #[serde(borrow)]
    to: Option<&'a RawValue>,
    #[serde(borrow)]
    source: Option<&'a RawValue>,
    #[serde(borrow)]
    transaction: Option<&'a RawValue>,
    #[serde(borrow)]
    role: Option<&'a RawValue>,
    #[serde(borrow)]
    tier: Option<&'a RawValue>,
    #[serde(borrow)]
    until: Option<&'a RawValue>,
}

/// A JSON string value's text, or `None` when the raw value is not a string.
fn as_string(raw: &RawValue) -> Option<String> {
    let text = raw.get();
    if !text.starts_with('"') {
        return None;
    }
    // Fast path: no escapes.
    let inner = &text[1..text.len() - 1];
    if !inner.contains('\\') {
        return Some(inner.to_string());
    }
    serde_json::from_str(text).ok()
}

fn is_null(raw: Option<&RawValue>) -> bool {
    raw.is_none_or(|r| r.get() == "null")
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
    let Ok(env) = serde_json::from_str::<RawEnvelope<'_>>(text) else {
        return malformed(None, NOT_AN_OBJECT);
    };
    let id = env.id.and_then(as_string);
    let source = id.as_deref();
    let Some(id) = id.clone() else {
        return malformed(None, "id: missing or not a string");
    };
    let Some(kind) = env.kind.and_then(as_string) else {
        return malformed(source, "type: missing or not a string");
    };
    let Some(created_text) = env.created.and_then(as_string) else {
        return malformed(source, "created: missing or not a string");
    };
    let Some(data) = env.data.filter(|d| d.get().starts_with('{')) else {
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
        && !COMMANDS.contains(&kind.as_str())
        && !crate::partition::INTERNAL.contains(&kind.as_str())
    {
        return invalid(format!("type: {kind} is not a command"));
    }
    let body = if kind == "loyalty.program.updated" {
        Body::ProgramUpdated(data.get().to_string())
    } else {
        let raw: RawData<'_> = match serde_json::from_str(data.get()) {
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
        kind,
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

type Field<'a> = Option<&'a RawValue>;

fn req_str(name: &str, raw: Field<'_>) -> Result<String, String> {
    if is_null(raw) {
        return Err(format!("data.{name}: missing"));
    }
    let s = raw
        .and_then(as_string)
        .ok_or_else(|| format!("data.{name}: must be a string"))?;
    if s.is_empty() {
        return Err(format!("data.{name}: must not be empty"));
    }
    Ok(s)
}

fn opt_str(name: &str, raw: Field<'_>) -> Result<Option<String>, String> {
    if is_null(raw) {
        Ok(None)
    } else {
        req_str(name, raw).map(Some)
    }
}

/// A signed integer of at most 10^15 in absolute value.
fn req_int(name: &str, raw: Field<'_>) -> Result<i64, String> {
    if is_null(raw) {
        return Err(format!("data.{name}: missing"));
    }
    let text = raw.map(RawValue::get).unwrap_or_default();
    let dec: Dec = text
        .parse()
        .map_err(|_| format!("data.{name}: must be an integer of at most 10^15"))?;
    let v = dec
        .to_i64()
        .ok_or_else(|| format!("data.{name}: must be an integer"))?;
    if i128::from(v).abs() > MAX_ABS {
        return Err(format!(
            "data.{name}: must be at most 10^15 in absolute value"
        ));
    }
    Ok(v)
}

fn req_amount(name: &str, raw: Field<'_>) -> Result<i64, String> {
    let v = req_int(name, raw)?;
    if v < 0 {
        return Err(format!("data.{name}: must not be negative"));
    }
    Ok(v)
}

fn opt_amount(name: &str, raw: Field<'_>) -> Result<Option<i64>, String> {
    if is_null(raw) {
        Ok(None)
    } else {
        req_amount(name, raw).map(Some)
    }
}

fn currency(name: &str, raw: Field<'_>) -> Result<String, String> {
    Ok(req_str(name, raw)?.to_ascii_uppercase())
}

fn metadata(raw: Field<'_>) -> Result<(BTreeMap<String, String>, Option<String>), String> {
    if is_null(raw) {
        return Ok((BTreeMap::new(), None));
    }
    let text = raw.map(RawValue::get).unwrap_or_default();
    if !text.starts_with('{') {
        return Err("data.metadata: must be an object".into());
    }
    let map: BTreeMap<String, &RawValue> =
        serde_json::from_str(text).map_err(|e| format!("data.metadata: {e}"))?;
    let mut out = BTreeMap::new();
    let mut account = None;
    for (k, v) in map {
        if k == "loyalty_account" {
            if v.get() == "null" {
                continue;
            }
            let s = as_string(v)
                .filter(|s| !s.is_empty())
                .ok_or("data.metadata.loyalty_account: must be a loy_ id string")?;
            account = Some(s.clone());
            out.insert(k, s);
        } else if let Some(s) = as_string(v) {
            // Stripe-style metadata values are strings; other values never match a condition.
            out.insert(k, s);
        }
    }
    Ok((out, account))
}

fn activity(raw: &RawData<'_>, id_required: bool) -> Result<Activity, String> {
    let object_id = if id_required {
        Some(req_str("id", raw.id)?)
    } else {
        opt_str("id", raw.id).unwrap_or(None)
    };
    let customer = req_str("customer", raw.customer)?;
    let (metadata, loyalty_account) = metadata(raw.metadata)?;
    Ok(Activity {
        object_id,
        customer,
        loyalty_account,
        amount: None,
        currency: None,
        metadata,
    })
}

fn data_body(kind: &str, raw: &RawData<'_>) -> Result<Body, String> {
    Ok(match kind {
        "payment.completed" => {
            let mut a = activity(raw, true)?;
            a.amount = Some(req_amount("amount", raw.amount)?);
            a.currency = Some(currency("currency", raw.currency)?);
            Body::Event(a)
        }
        "invoice.paid" => {
            let mut a = activity(raw, true)?;
            a.amount = Some(req_amount("amount", raw.amount)?);
            a.currency = Some(currency("currency", raw.currency)?);
            opt_str("subscription", raw.subscription)?;
            Body::Event(a)
        }
        "subscription.created" => {
            let mut a = activity(raw, true)?;
            opt_str("plan", raw.plan)?;
            opt_str("interval", raw.interval)?;
            a.amount = opt_amount("amount", raw.amount)?;
            a.currency = opt_str("currency", raw.currency)?.map(|c| c.to_ascii_uppercase());
            Body::Event(a)
        }
        "payment.refunded" => Body::Refund(Refund {
            refund_id: req_str("id", raw.id)?,
            payment: req_str("payment", raw.payment)?,
            customer: req_str("customer", raw.customer)?,
            amount: req_amount("amount", raw.amount)?,
            currency: currency("currency", raw.currency)?,
        }),
        "referral.converted" => {
            req_str("id", raw.id)?;
            let referral = Referral {
                referrer: req_str("referrer", raw.referrer)?,
                referee: req_str("referee", raw.referee)?,
                code: opt_str("code", raw.code)?,
            };
            if referral.referrer == referral.referee {
                return Err("data.referee: a customer cannot refer themselves".into());
            }
            Body::Referral(referral)
        }
        "clock.tick" => Body::Tick,
        "loyalty.account.enroll" => Body::Enroll(Enroll {
            customer: req_str("customer", raw.customer)?,
            program: req_str("program", raw.program)?,
            referral_code: opt_str("referralCode", raw.referral_code)?,
            birthday: opt_str("birthday", raw.birthday)?
                .map(|b| {
                    parse_month_day(&b)
                        .ok_or_else(|| format!("data.birthday: {b:?} is not a month-day \"MM-DD\""))
                })
                .transpose()?,
            opening_balance: opt_amount("openingBalance", raw.opening_balance)?.unwrap_or(0),
        }),
        "loyalty.points.adjust" => {
            let points = req_int("points", raw.points)?;
            if points == 0 {
                return Err("data.points: must not be zero".into());
            }
            Body::Adjust(Adjust {
                customer: req_str("customer", raw.customer)?,
                program: req_str("program", raw.program)?,
                points,
                reason: req_str("reason", raw.reason)?,
            })
        }
        "loyalty.qualifying_activity.record" => Body::Qualify(Qualify {
            customer: req_str("customer", raw.customer)?,
            program: req_str("program", raw.program)?,
            amount: req_amount("amount", raw.amount)?,
            reason: req_str("reason", raw.reason)?,
            reference: opt_str("reference", raw.reference)?,
        }),
        "loyalty.tier.set" => Body::TierSet(TierSet {
            customer: req_str("customer", raw.customer)?,
            program: req_str("program", raw.program)?,
            tier: req_str("tier", raw.tier)?,
            until: opt_str("until", raw.until)?
                .map(|u| {
                    Timestamp::parse_rfc3339(&u)
                        .ok_or_else(|| format!("data.until: {u:?} is not an RFC 3339 time"))
                })
                .transpose()?,
            reason: req_str("reason", raw.reason)?,
        }),
        "loyalty.redemption.create" => {
            let quantity = if is_null(raw.quantity) {
                1
            } else {
                req_int("quantity", raw.quantity)?
            };
            if quantity < 1 {
                return Err("data.quantity: must be at least 1".into());
            }
            Body::Redeem(Redeem {
                customer: req_str("customer", raw.customer)?,
                program: req_str("program", raw.program)?,
                reward: req_str("reward", raw.reward)?,
                quantity,
            })
        }
        "loyalty.points.transfer" => {
            let points = req_int("points", raw.points)?;
            if points <= 0 {
                return Err("data.points: must be greater than 0".into());
            }
            let t = Transfer {
                program: req_str("program", raw.program)?,
                from: req_str("from", raw.from)?,
                to: req_str("to", raw.to)?,
                points,
            };
            if t.from == t.to {
                return Err("data.to: must differ from data.from".into());
            }
            Body::Transfer(t)
        }
        crate::partition::TRANSFER_CREDIT | crate::partition::TRANSFER_RETURN => {
            let points = req_int("points", raw.points)?;
            if points <= 0 {
                return Err("data.points: must be greater than 0".into());
            }
            let m = TransferMessage {
                transfer: Transfer {
                    program: req_str("program", raw.program)?,
                    from: req_str("from", raw.from)?,
                    to: req_str("to", raw.to)?,
                    points,
                },
                source: req_str("source", raw.source)?,
                transaction: req_str("transaction", raw.transaction)?,
            };
            if kind == crate::partition::TRANSFER_CREDIT {
                Body::TransferCredit(m)
            } else {
                Body::TransferReturn(m)
            }
        }
        crate::partition::CODE_CLAIM
        | crate::partition::REFERRAL_CONVERT
        | crate::partition::REFERRAL_AWARD => {
            use crate::partition as p;
            let step = match (kind, opt_str("role", raw.role)?.as_deref()) {
                (p::CODE_CLAIM, _) => ReferralStep::Claim,
                (p::REFERRAL_CONVERT, _) => ReferralStep::Convert,
                (_, Some("referrer")) => ReferralStep::AwardReferrer,
                (_, Some("referee")) => ReferralStep::AwardReferee,
                _ => return Err("data.role: must be \"referrer\" or \"referee\"".into()),
            };
            let m = ReferralMessage {
                program: req_str("program", raw.program)?,
                code: opt_str("code", raw.code)?.unwrap_or_default(),
                referrer: opt_str("referrer", raw.referrer)?.unwrap_or_default(),
                referee: opt_str("referee", raw.referee)?.unwrap_or_default(),
                source: req_str("source", raw.source)?,
            };
            Body::Referral2(step, m)
        }
        crate::partition::STOCK_REQUEST
        | crate::partition::STOCK_GRANTED
        | crate::partition::STOCK_REFUSED
        | crate::partition::STOCK_RELEASE => {
            use crate::partition as p;
            let step = match kind {
                p::STOCK_REQUEST => StockStep::Request,
                p::STOCK_GRANTED => StockStep::Granted,
                p::STOCK_REFUSED => StockStep::Refused,
                _ => StockStep::Release,
            };
            let quantity = req_int("quantity", raw.quantity)?;
            let points = req_int("points", raw.points)?;
            if quantity < 1 || points < 0 {
                return Err("data.quantity: must be at least 1, data.points at least 0".into());
            }
            Body::Stock(
                step,
                StockMessage {
                    program: req_str("program", raw.program)?,
                    reward: req_str("reward", raw.reward)?,
                    customer: req_str("customer", raw.customer)?,
                    quantity,
                    points,
                    source: req_str("source", raw.source)?,
                },
            )
        }
        _ => {
            // A custom trigger: any other type, for one customer.
            let mut a = activity(raw, false)?;
            a.amount = opt_amount("amount", raw.amount)?;
            a.currency = opt_str("currency", raw.currency)?.map(|c| c.to_ascii_uppercase());
            Body::Event(a)
        }
    })
}

#[cfg(test)]
mod tests;
