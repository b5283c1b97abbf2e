//! What the engine produces (SPEC sections 8 and 9): ledger transactions, outbound events,
//! rejections, and the account view, with their exact JSON-lines form.
//!
//! The fold, the streaming service's export and its outbox all print through
//! [`Output::to_json_line`] and [`AccountView::to_json_line`], so they agree byte for byte.
//! Keys appear in the order SPEC section 9 shows them; event `data` keys are sorted.
//!
//! Owns: output types and their serialisation. Must not touch state.

use serde::ser::SerializeMap;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::dec::Dec;
use crate::envelope::Rejection;
use crate::time::Timestamp;

/// A JSON object whose keys are the engine's own names: the `data` of an event and the
/// `metadata` of a transaction. Kept sorted by key, so that it prints exactly as a
/// `serde_json::Map` (a `BTreeMap`) of the same entries would, without allocating a string
/// and a tree node for every key of every event.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Fields(Vec<(&'static str, Value)>);

impl Fields {
    /// No fields.
    pub fn new() -> Fields {
        Fields(Vec::new())
    }

    /// No fields, with room for `n`.
    pub fn with_capacity(n: usize) -> Fields {
        Fields(Vec::with_capacity(n))
    }

    /// Sets `key` to `value`; returns the value it replaces.
    pub fn insert(&mut self, key: &'static str, value: Value) -> Option<Value> {
        match self.0.binary_search_by(|(k, _)| key_cmp(k, key)) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (key, value));
                None
            }
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0
            .binary_search_by(|(k, _)| key_cmp(k, key))
            .ok()
            .map(|i| &self.0[i].1)
    }

    /// The entries, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Value)> {
        self.0.iter().map(|(k, v)| (*k, v))
    }

    /// How many fields.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The same object as a `serde_json::Map`.
    pub fn to_map(&self) -> Map<String, Value> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }
}

/// `a.cmp(b)` for short keys, byte by byte: the keys differ mostly in their first byte, and
/// `str::cmp` calls `memcmp` (a tenth of the engine's time went to such calls).
fn key_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return x.cmp(y);
        }
    }
    a.len().cmp(&b.len())
}

impl std::ops::Index<&str> for Fields {
    type Output = Value;

    /// The value of `key`, or `null` (as indexing a `serde_json::Value` gives).
    fn index(&self, key: &str) -> &Value {
        static NULL: Value = Value::Null;
        self.get(key).unwrap_or(&NULL)
    }
}

impl Serialize for Fields {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
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
    pub metadata: Fields,
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
    /// The id of the record whose application caused it; `None` for an effect that fell
    /// due (SPEC section 8).
    pub source: Option<String>,
    /// The payload; always holds account, customer and program.
    pub data: Fields,
}

impl OutEvent {
    /// The envelope JSON (`{"id","type","created","source","data"}`): the outbound message
    /// value.
    pub fn to_envelope_json(&self) -> String {
        let mut out = Vec::with_capacity(384);
        out.extend_from_slice(br#"{"id":"#);
        self.write_rest(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// The id's value, then `type`, `created`, `source` and `data`, and the closing brace.
    fn write_rest(&self, out: &mut Vec<u8>) {
        jw::str(out, &self.id);
        out.extend_from_slice(br#","type":"#);
        jw::str(out, self.kind);
        out.extend_from_slice(br#","created":"#);
        jw::time(out, self.created);
        out.extend_from_slice(br#","source":"#);
        jw::opt_str(out, self.source.as_deref());
        out.extend_from_slice(br#","data":"#);
        jw::fields(out, &self.data);
        out.push(b'}');
    }
}

/// Writing JSON values exactly as `serde_json`'s compact serializer does.
mod jw {
    use serde_json::Value;

    use super::Fields;
    use crate::time::Timestamp;

    /// A JSON string. One pass finds whether any byte needs an escape (a quote, a
    /// backslash, a control character); the rare string that does is left to serde_json.
    pub fn str(out: &mut Vec<u8>, s: &str) {
        if !needs_escape(s.as_bytes()) {
            out.reserve(s.len() + 2);
            out.push(b'"');
            out.extend_from_slice(s.as_bytes());
            out.push(b'"');
        } else {
            let _ = serde_json::to_writer(&mut *out, s);
        }
    }

    /// Whether any byte of `s` is a quote, a backslash or a control character. (Without an
    /// early exit, the compiler checks many bytes at a time; strings here are short.)
    pub fn needs_escape(s: &[u8]) -> bool {
        s.iter().fold(false, |any, &b| {
            any | (b < 0x20) | (b == b'"') | (b == b'\\')
        })
    }

    /// A string or `null`.
    pub fn opt_str(out: &mut Vec<u8>, s: Option<&str>) {
        match s {
            Some(s) => str(out, s),
            None => out.extend_from_slice(b"null"),
        }
    }

    /// An integer.
    pub fn int<I: itoa::Integer>(out: &mut Vec<u8>, v: I) {
        out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }

    /// A time, as its `Serialize` prints it.
    pub fn time(out: &mut Vec<u8>, t: Timestamp) {
        let mut buf = [0u8; 20];
        if t.write_utc(&mut buf) {
            out.push(b'"');
            out.extend_from_slice(&buf);
            out.push(b'"');
        } else {
            let _ = serde_json::to_writer(&mut *out, &t);
        }
    }

    /// An object of fields, in key order.
    pub fn fields(out: &mut Vec<u8>, f: &Fields) {
        out.push(b'{');
        for (i, (k, v)) in f.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            str(out, k);
            out.push(b':');
            value(out, v);
        }
        out.push(b'}');
    }

    /// Any JSON value.
    pub fn value(out: &mut Vec<u8>, v: &Value) {
        match v {
            Value::Null => out.extend_from_slice(b"null"),
            Value::Bool(true) => out.extend_from_slice(b"true"),
            Value::Bool(false) => out.extend_from_slice(b"false"),
            Value::String(s) => str(out, s),
            Value::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    value(out, item);
                }
                out.push(b']');
            }
            Value::Number(_) | Value::Object(_) => {
                let _ = serde_json::to_writer(&mut *out, v);
            }
        }
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
                jw::fields(out, &tx.metadata);
                out.push(b'}');
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
        }
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::envelope::Reason;

    /// A transaction's line as serde prints it: `kind`, then the transaction's fields in
    /// their order.
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
        metadata: &'a Fields,
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
        source: Option<&'a str>,
        data: &'a Fields,
    }

    #[derive(Serialize)]
    struct RejectedLine<'a> {
        kind: &'static str,
        source: Option<&'a str>,
        reason: &'static str,
        detail: &'a str,
    }

    /// The JSON line as serde prints the line types: the oracle that
    /// [`Output::write_json_line`] must match byte for byte.
    fn serde_line(o: &Output) -> String {
        let s = match o {
            Output::Transaction(tx) => serde_json::to_string(&TxLine::new(tx)),
            Output::Event(event) => serde_json::to_string(&EventLine {
                kind: "event",
                id: &event.id,
                event_kind: event.kind,
                created: event.created,
                source: event.source.as_deref(),
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

    fn tx(s: &str, rule: Option<&str>, campaigns: Vec<String>, balance: i128) -> Output {
        let mut metadata = Fields::new();
        metadata.insert("capped", Value::Bool(true));
        metadata.insert("reason", Value::String(s.to_string()));
        Output::Transaction(Transaction {
            id: format!("ptx_{s}"),
            account: "loy_1".into(),
            customer: s.to_string(),
            program: "prog_a".into(),
            kind: TxKind::TransferOut,
            points: -42,
            balance_after: balance,
            rule: rule.map(str::to_string),
            campaigns,
            source: s.to_string(),
            created: Timestamp(1_767_225_600),
            metadata,
        })
    }

    fn event(s: &str, created: i64) -> Output {
        let mut data = Fields::new();
        data.insert("customer", Value::String(s.to_string()));
        data.insert("account", Value::String("loy_1".into()));
        data.insert("points", json!(-7));
        data.insert("balance", json!("170141183460469231731687303715884105727"));
        data.insert("transactions", json!(["ptx_a", s, null]));
        data.insert("expiresAt", json!({"z": 1, "a": [true, false], "m": s}));
        data.insert("rule", Value::Null);
        data.insert("big", json!(u64::MAX));
        Output::Event(OutEvent {
            id: format!("evt_{s}"),
            kind: "loyalty.points.earned",
            created: Timestamp(created),
            source: (!s.is_empty()).then(|| s.to_string()),
            data,
        })
    }

    fn rejected(s: &str, source: Option<&str>) -> Output {
        Output::Rejected(Rejection::new(source, Reason::Malformed, s))
    }

    const AWKWARD: &[&str] = &[
        "",
        "plain",
        "quote \" inside",
        "back\\slash",
        "new\nline\ttab\r\u{8}\u{c}",
        "\u{1}\u{1f}\u{7f}",
        "unicode é ✓ 🎉",
        "</script>",
    ];

    #[test]
    fn hand_written_lines_are_serdes_bytes() {
        for s in AWKWARD {
            for line in [
                tx(s, Some(s), vec![s.to_string(), "camp_b".into()], i128::MIN),
                tx(s, None, vec![], 0),
                event(s, 1_767_225_600),
                event(s, -62_135_596_801),
                event(s, 253_402_300_800),
                rejected(s, Some(s)),
                rejected(s, None),
            ] {
                assert_eq!(line.to_json_line(), serde_line(&line), "{s:?}");
            }
        }
    }

    #[test]
    fn envelope_is_serdes_bytes() {
        for s in AWKWARD {
            let Output::Event(e) = event(s, 1_767_225_600) else {
                unreachable!()
            };
            assert_eq!(e.to_envelope_json(), serde_json::to_string(&e).unwrap());
        }
    }

    #[test]
    fn key_cmp_is_str_cmp() {
        let keys = [
            "",
            "a",
            "ab",
            "b",
            "fromTier",
            "from",
            "expiresAt",
            "é",
            "Z",
            "transactions",
        ];
        for a in keys {
            for b in keys {
                assert_eq!(key_cmp(a, b), a.cmp(b), "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn fields_keep_key_order_and_replace() {
        let mut f = Fields::new();
        assert_eq!(f.insert("b", json!(1)), None);
        assert_eq!(f.insert("a", json!(2)), None);
        assert_eq!(f.insert("b", json!(3)), Some(json!(1)));
        assert_eq!(serde_json::to_string(&f).unwrap(), r#"{"a":2,"b":3}"#);
        assert_eq!(f["a"], json!(2));
        assert_eq!(f["missing"], Value::Null);
        assert_eq!(f.len(), 2);
        assert_eq!(Value::Object(f.to_map()), json!({"a": 2, "b": 3}));
    }

    #[test]
    fn needs_escape_finds_every_byte_that_does() {
        for len in 0..20 {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut s = vec![b'a'; len];
                    s[at] = b;
                    let want = b < 0x20 || b == b'"' || b == b'\\';
                    assert_eq!(jw::needs_escape(&s), want, "byte {b} at {at} of {len}");
                }
            }
        }
        assert!(!jw::needs_escape(b""));
        assert!(!jw::needs_escape(
            "plain ids, caf\u{e9} and \u{1f389}".as_bytes()
        ));
    }

    proptest! {
        #[test]
        fn any_strings_print_as_serde_prints_them(
            s in "\\PC*|[\\x00-\\x7f]{0,40}",
            n in any::<i64>(),
            b in any::<i128>(),
            t in -70_000_000_000i64..300_000_000_000,
        ) {
            let mut line = tx(&s, Some(&s), vec![s.clone()], b);
            if let Output::Transaction(t) = &mut line {
                t.points = n;
            }
            prop_assert_eq!(line.to_json_line(), serde_line(&line));
            let e = event(&s, t);
            prop_assert_eq!(e.to_json_line(), serde_line(&e));
            let r = rejected(&s, Some(&s));
            prop_assert_eq!(r.to_json_line(), serde_line(&r));
        }
    }
}
