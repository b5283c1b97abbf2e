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
use serde_json::{json, Value};

use crate::dec::Dec;
use crate::envelope::Rejection;
use crate::time::Timestamp;

mod event;
pub(crate) mod jw;

pub use event::{Direction, Event, Member, OutEvent, Refusal};

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
    /// What more the entry says, by kind.
    pub metadata: TxMeta,
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

    /// The same object as a `serde_json::Value`.
    pub fn to_value(&self) -> Value {
        match self {
            TxMeta::None => json!({}),
            TxMeta::Award { capped } => json!({ "capped": capped }),
            TxMeta::Adjustment { reason } => json!({ "reason": reason }),
            TxMeta::Redemption { redemption, reward } => {
                json!({ "redemption": redemption, "reward": reward })
            }
        }
    }
}

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
                tx.metadata.write(out);
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
        metadata: &'a TxMeta,
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
        data: Value,
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
                event_kind: event.kind(),
                created: event.created,
                source: event.source.as_deref(),
                data: event.data_value(),
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
            metadata: TxMeta::Adjustment {
                reason: s.to_string(),
            },
        })
    }

    /// One event of every type, every string field `s`, every number `n`.
    fn events(s: &str, n: i64, balance: i128, created: i64) -> Vec<Output> {
        let st = || s.to_string();
        let opt = || (!s.is_empty()).then(st);
        let all = vec![
            Event::AccountCreated {
                referral_code: st(),
            },
            Event::PointsEarned {
                points: n,
                rule: opt(),
                campaigns: vec![st(), "camp_b".into()],
                transaction: st(),
                balance,
                capped: n % 2 == 0,
            },
            Event::PointsAdjusted {
                points: n,
                transaction: st(),
                balance,
                reason: st(),
            },
            Event::PointsTransferred {
                from: st(),
                to: st(),
                points: n,
                transactions: [st(), "ptx_b".into()],
            },
            Event::PointsReversed {
                points: n,
                transaction: st(),
                balance,
                payment: st(),
                refund: st(),
                rule: opt(),
            },
            Event::PointsExpired {
                points: n,
                transaction: st(),
                balance,
            },
            Event::PointsExpiring {
                points: n,
                expires_at: Timestamp(created),
            },
            Event::CashbackEarned {
                rule: st(),
                payment: opt(),
                amount: n,
                currency: st(),
            },
            Event::RewardRedeemed {
                redemption: st(),
                reward: st(),
                quantity: n,
                cost: n,
                transaction: opt(),
                balance,
            },
            Event::RedemptionRejected {
                reward: st(),
                reason: Refusal::OutOfStock,
            },
            Event::StampCardCompleted {
                card: st(),
                reward: st(),
                redemption: st(),
            },
            Event::TierChanged {
                from_tier: st(),
                to_tier: st(),
                direction: Direction::Down,
            },
        ];
        all.into_iter()
            .map(|event| {
                Output::Event(OutEvent {
                    id: format!("evt_{s}"),
                    created: Timestamp(created),
                    source: opt(),
                    member: Member {
                        account: format!("loy_{s}"),
                        customer: st(),
                        program: st(),
                    },
                    event,
                })
            })
            .collect()
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
                rejected(s, Some(s)),
                rejected(s, None),
            ]
            .into_iter()
            .chain(events(s, -7, i128::MAX, 1_767_225_600))
            .chain(events(s, i64::MAX, 0, -62_135_596_801))
            .chain(events(s, 0, -1, 253_402_300_800))
            {
                assert_eq!(line.to_json_line(), serde_line(&line), "{s:?}");
            }
        }
    }

    #[test]
    fn envelope_is_serdes_bytes() {
        for s in AWKWARD {
            for o in events(s, 3, 170, 1_767_225_600) {
                let Output::Event(e) = o else { unreachable!() };
                assert_eq!(e.to_envelope_json(), serde_json::to_string(&e).unwrap());
            }
        }
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
            for e in events(&s, n, b, t) {
                prop_assert_eq!(e.to_json_line(), serde_line(&e));
            }
            let r = rejected(&s, Some(&s));
            prop_assert_eq!(r.to_json_line(), serde_line(&r));
        }
    }
}
