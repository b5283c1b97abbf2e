//! The hand-written JSON of every output against serde_json's, for awkward strings and
//! extreme numbers.

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
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<Status>,
    balance_after: i128,
    rule: Option<&'a str>,
    campaigns: &'a [Sym],
    source: &'a str,
    created: Timestamp,
    metadata: &'a TxMeta,
    why: Value,
    hash: String,
}

/// `why` as serde prints the object (its unit tests check every kind; the adjustment's,
/// which these lines carry, is made here apart from the writer).
fn oracle_why(why: &Why) -> Value {
    match why {
        Why::Adjustment { reason } => serde_json::json!({ "reason": reason }),
        other => other.to_value(),
    }
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
            status: tx.status,
            balance_after: tx.balance_after,
            rule: tx.rule.as_deref(),
            campaigns: &tx.campaigns,
            source: &tx.source,
            created: tx.created,
            metadata: &tx.metadata,
            why: oracle_why(&tx.why),
            hash: tx.hash.iter().map(|b| format!("{b:02x}")).collect(),
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
        Output::Message(m) => serde_json::to_string(&serde_json::json!({
            "kind": "message",
            "partition": m.partition,
            "key": m.key,
            "record": serde_json::from_str::<serde_json::Value>(&m.record).unwrap_or_default(),
        })),
    };
    // Serialising these types cannot fail: every map key is a string.
    s.unwrap_or_default()
}

fn tx(s: &str, rule: Option<&str>, campaigns: Vec<Sym>, balance: i128) -> Output {
    Output::Transaction(Transaction {
        id: format!("ptx_{s}").into(),
        account: "loy_1".into(),
        customer: s.into(),
        program: "prog_a".into(),
        kind: TxKind::TransferOut,
        points: -42,
        status: rule.map(|_| Status::Pending),
        balance_after: balance,
        rule: rule.map(Sym::from),
        campaigns,
        source: s.into(),
        created: Timestamp(1_767_225_600),
        metadata: TxMeta::Adjustment {
            reason: s.to_string(),
        },
        why: Why::Adjustment {
            reason: s.to_string(),
        },
        hash: [0xa7; 32],
        written: Default::default(),
    })
}

/// One event of every type, every string field `s`, every number `n`.
fn events(s: &str, n: i64, balance: i128, created: i64) -> Vec<Output> {
    let st = || s.to_string();
    let opt = || (!s.is_empty()).then(st);
    let sy = || -> Sym { s.into() };
    let opt_sy = || (!s.is_empty()).then(sy);
    let all = vec![
        Event::AccountCreated {
            referral_code: st(),
        },
        Event::PointsEarned {
            points: n,
            rule: opt_sy(),
            campaigns: vec![sy(), "camp_b".into()],
            transaction: sy(),
            balance,
            capped: n % 2 == 0,
            status: [None, Some(Status::Pending), Some(Status::Posted)][n.rem_euclid(3) as usize],
        },
        Event::PointsVested {
            points: n,
            transaction: sy(),
            award: sy(),
            balance,
        },
        Event::PointsAdjusted {
            points: n,
            transaction: sy(),
            balance,
            reason: st(),
        },
        Event::PointsTransferred {
            from: st(),
            to: st(),
            points: n,
            transactions: [sy(), "ptx_b".into()],
        },
        Event::PointsReversed {
            points: n,
            transaction: sy(),
            balance,
            payment: st(),
            refund: st(),
            rule: opt(),
            status: [Some(Status::Posted), None, Some(Status::Pending)][n.rem_euclid(3) as usize],
        },
        Event::PointsExpired {
            points: n,
            transaction: sy(),
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
            transaction: opt_sy(),
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
            manual: n % 2 != 0,
        },
    ];
    all.into_iter()
        .map(|event| {
            Output::Event(OutEvent {
                id: format!("evt_{s}"),
                created: Timestamp(created),
                source: opt_sy(),
                member: Member {
                    account: format!("loy_{s}").into(),
                    customer: sy(),
                    program: sy(),
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
            tx(s, Some(s), vec![(*s).into(), "camp_b".into()], i128::MIN),
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
        let mut line = tx(&s, Some(&s), vec![s.as_str().into()], b);
        if let Output::Transaction(t) = &mut line {
            t.points = n;
        }
        prop_assert_eq!(line.to_json_line(), serde_line(&line));
        // Sealed as the engine seals what it posts: the hash covers the previous hash's hex
        // and the line up to its hash, and the line printed from what was kept is the line.
        if let Output::Transaction(t) = &line {
            use sha2::{Digest, Sha256};
            let prev = [n as u8; 32];
            let mut sealed = t.clone();
            sealed.seal(&prev, &mut Vec::new());
            let mut covered = prev.iter().map(|b| format!("{b:02x}")).collect::<String>();
            covered.push_str(std::str::from_utf8(&t.unhashed_line()).unwrap());
            let want: [u8; 32] = Sha256::digest(covered.as_bytes()).into();
            prop_assert_eq!(sealed.hash, want);
            let mut plain = t.clone();
            plain.hash = sealed.hash;
            let sealed = Output::Transaction(sealed);
            prop_assert_eq!(sealed.to_json_line(), serde_line(&sealed));
            prop_assert_eq!(sealed.to_json_line(), Output::Transaction(plain).to_json_line());
        }
        for e in events(&s, n, b, t) {
            prop_assert_eq!(e.to_json_line(), serde_line(&e));
        }
        let r = rejected(&s, Some(&s));
        prop_assert_eq!(r.to_json_line(), serde_line(&r));
    }
}

/// An account line with awkward strings in every string field, extreme numbers, and each
/// optional part present or not.
fn account(s: &str, balance: i128, full: bool) -> AccountView {
    AccountView {
        kind: "account",
        id: format!("loy_{s}"),
        customer: s.to_string(),
        program: format!("prog_{s}"),
        balance,
        tier: full.then(|| TierView {
            name: s.to_string(),
            rank: u32::MAX,
            earn_multiplier: DecNumber("1.25".parse().unwrap()),
        }),
        qualifying_value: i64::MIN,
        at_risk: full,
        referral_code: s.to_string(),
        stamps: if full {
            [(s.to_string(), 3), ("card_b".to_string(), u32::MAX)].into()
        } else {
            Default::default()
        },
        ledger_hash: "0".repeat(64),
        pending_balance: full.then_some(-balance / 2),
        manual_tier: full.then(|| ManualTierView {
            tier: s.to_string(),
            until: Timestamp(253_402_300_799),
            reason: s.to_string(),
        }),
    }
}

#[test]
fn account_lines_are_serdes_bytes() {
    for s in AWKWARD {
        for (balance, full) in [
            (0, false),
            (i128::MAX, true),
            (i128::MIN + 1, true),
            (-7, false),
        ] {
            let a = account(s, balance, full);
            assert_eq!(
                a.to_json_line(),
                serde_json::to_string(&a).unwrap(),
                "{s:?}"
            );
        }
    }
}
