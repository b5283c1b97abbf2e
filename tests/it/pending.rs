//! Pending points and manual tiers (SPEC section 13) beyond what scenario files show: a
//! property test against a model of its own, and a state that keeps both through a real
//! RocksDB store, one record a batch, that exports as the fold prints and verifies sound.

use std::collections::BTreeMap;
use std::process::Command;

use loyalty_core::{parse_config, Engine};
use proptest::prelude::*;
use serde_json::Value;

use crate::support::{bin, TempDir};

const DAY: i64 = 86_400;
/// 2026-03-01T00:00:00Z.
const T0: i64 = 1_772_323_200;

fn config(pending_days: u32) -> String {
    format!(
        r#"{{"programs":[{{"id":"prog_p","currency":"EUR","autoEnroll":true,"pendingDays":{pending_days},
        "earningRules":[{{"id":"rule_buy","trigger":"payment.completed","award":{{"type":"per_amount","per":100,"points":1}}}}],
        "campaigns":[{{"id":"camp_bonus","starts":"2026-01-01T00:00:00Z","ends":"2027-01-01T00:00:00Z",
          "triggers":["payment.completed"],"bonus":{{"points":10}}}}],
        "rewards":[{{"id":"rwd_a","cost":25}}]}}]}}"#
    )
}

fn time(t: i64) -> String {
    loyalty_core::time::Timestamp(t).to_string()
}

/// One step of a log: a payment, a refund of an earlier payment, a redemption, or a tick.
#[derive(Clone, Debug)]
enum Step {
    Pay { customer: u8, amount: i64 },
    Refund { payment: usize, percent: i64 },
    Redeem { customer: u8 },
    Tick,
}

fn step() -> impl Strategy<Value = (Step, i64)> {
    let s = prop_oneof![
        4 => (0u8..3, 1i64..40_000).prop_map(|(customer, amount)| Step::Pay { customer, amount }),
        3 => (0usize..40, 1i64..=100).prop_map(|(payment, percent)| Step::Refund { payment, percent }),
        1 => (0u8..3).prop_map(|customer| Step::Redeem { customer }),
        1 => Just(Step::Tick),
    ];
    // Up to two days between records: vests fall between them, on them and after them.
    (s, 1i64..2 * DAY)
}

/// The model's award: its points, what refunds took, when it vests.
struct Award {
    customer: u8,
    points: i64,
    reversed: i64,
    vests: i64,
}

/// What the model expects of each customer: the balance and the pending balance.
fn expected(awards: &[Award], spent: &BTreeMap<u8, i64>, now: i64) -> BTreeMap<u8, (i64, i64)> {
    let mut out: BTreeMap<u8, (i64, i64)> = BTreeMap::new();
    for a in awards {
        let e = out.entry(a.customer).or_default();
        if a.vests <= now {
            e.0 += a.points - a.reversed;
        } else {
            e.1 += a.points - a.reversed;
        }
    }
    for (c, s) in spent {
        out.entry(*c).or_default().0 -= s;
    }
    out
}

fn accounts(e: &Engine) -> BTreeMap<String, (i64, i64)> {
    e.accounts()
        .map(|a| {
            let v: Value = serde_json::from_str(&a.to_json_line()).unwrap();
            (
                v["customer"].as_str().unwrap().to_string(),
                (
                    v["balance"].as_i64().unwrap(),
                    v["pendingBalance"].as_i64().unwrap(),
                ),
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Pending and posted points always sum to what was awarded less what was reversed:
    /// after every record, each member's pending balance is what a model of its own holds
    /// for the awards not yet vested, and its balance what vested less what it spent.
    #[test]
    fn pending_and_posted_sum_to_awarded_less_reversed(
        days in 1u32..4,
        steps in prop::collection::vec(step(), 1..60),
    ) {
        let mut engine = Engine::new(&parse_config(&config(days)).unwrap());
        let mut awards: Vec<Award> = Vec::new();
        // Per payment: (amount, refunded, its awards).
        let mut payments: Vec<(i64, i64, Vec<usize>)> = Vec::new();
        let mut spent: BTreeMap<u8, i64> = BTreeMap::new();
        let mut now = T0;
        // The clock: the time of the last record applied (a record refused as bad input,
        // such as a redemption of a customer without an account, does not move it).
        let mut clock = T0;
        for (i, (s, gap)) in steps.iter().enumerate() {
            now += gap;
            let mut out = Vec::new();
            let enrolled = |c: &u8| awards.iter().any(|a| a.customer == *c);
            if !matches!(s, Step::Redeem { customer } if !enrolled(customer)) {
                clock = now;
            }
            // What vested by now: balances of the model before this record.
            let before = expected(&awards, &spent, clock);
            let record = match s {
                Step::Pay { customer, amount } => {
                    let mut ids = Vec::new();
                    for points in [amount / 100, 10] {
                        if points > 0 {
                            ids.push(awards.len());
                            awards.push(Award {
                                customer: *customer,
                                points,
                                reversed: 0,
                                vests: now + i64::from(days) * DAY,
                            });
                        }
                    }
                    payments.push((*amount, 0, ids));
                    format!(
                        r#"{{"id":"e{i}","type":"payment.completed","created":"{}","data":{{"id":"pay_{}","customer":"cus_{customer}","amount":{amount},"currency":"EUR"}}}}"#,
                        time(now),
                        payments.len() - 1
                    )
                }
                Step::Refund { payment, percent } if !payments.is_empty() => {
                    let p = payment % payments.len();
                    let (amount, refunded, ids) = &mut payments[p];
                    let r = ((*amount - *refunded) * percent / 100).max(1);
                    if *refunded + r > *amount {
                        continue;
                    }
                    *refunded += r;
                    for &a in ids.iter() {
                        let due = if *refunded >= *amount {
                            awards[a].points
                        } else {
                            awards[a].points * *refunded / *amount
                        };
                        awards[a].reversed = due;
                    }
                    let customer = awards.get(ids.first().copied().unwrap_or(usize::MAX)).map_or(0, |a| a.customer);
                    format!(
                        r#"{{"id":"e{i}","type":"payment.refunded","created":"{}","data":{{"id":"re_{i}","payment":"pay_{p}","customer":"cus_{customer}","amount":{r},"currency":"EUR"}}}}"#,
                        time(now)
                    )
                }
                Step::Redeem { customer } => {
                    // Refused below the cost: what counts is the posted balance, never the
                    // pending one.
                    if before.get(customer).is_some_and(|b| b.0 >= 25) {
                        *spent.entry(*customer).or_default() += 25;
                    }
                    format!(
                        r#"{{"id":"e{i}","type":"loyalty.redemption.create","created":"{}","data":{{"customer":"cus_{customer}","program":"prog_p","reward":"rwd_a"}}}}"#,
                        time(now)
                    )
                }
                _ => format!(r#"{{"id":"e{i}","type":"clock.tick","created":"{}","data":{{}}}}"#, time(now)),
            };
            engine.apply(record.as_bytes(), &mut out);
            let want: BTreeMap<String, (i64, i64)> = expected(&awards, &spent, clock)
                .into_iter()
                .map(|(c, v)| (format!("cus_{c}"), v))
                .collect();
            prop_assert_eq!(accounts(&engine), want, "after {}", record);
            for line in out.iter().map(|o| o.to_json_line()) {
                let v: Value = serde_json::from_str(&line).unwrap();
                if v["kind"] == "transaction" && matches!(v["type"].as_str(), Some("award" | "reversal")) {
                    prop_assert!(v["status"] == "pending" || v["status"] == "posted", "{}", line);
                }
            }
        }
    }
}

/// Records of a program with pending points and tiers: awards that vest between batches,
/// refunds before and after vesting, a manual tier and its floor, a program update.
fn records() -> Vec<String> {
    let program = r#"{"id":"prog_q","currency":"EUR","autoEnroll":true,"pendingDays":3,"timezone":"Europe/Berlin",
      "pointsExpiry":{"months":1},
      "earningRules":[{"id":"rule_buy","trigger":"payment.completed","award":{"type":"per_amount","per":100,"points":1}}],
      "tierConfig":{"qualifyOn":"points","period":{"type":"rolling","months":1},
        "tiers":[{"name":"Base","rank":0,"threshold":0},{"name":"Gold","rank":1,"threshold":100}]}}"#
        .replace('\n', "");
    let mut r = vec![format!(
        r#"{{"id":"cfg_1","type":"loyalty.program.updated","created":"2026-03-01T00:00:00Z","data":{program}}}"#
    )];
    let mut t = T0 + 3600;
    for i in 0..12 {
        let c = i % 3;
        r.push(format!(
            r#"{{"id":"p{i}","type":"payment.completed","created":"{}","data":{{"id":"pay_{i}","customer":"cus_{c}","amount":{},"currency":"EUR"}}}}"#,
            time(t),
            4_000 + i * 700
        ));
        if i % 4 == 1 {
            r.push(format!(
                r#"{{"id":"r{i}","type":"payment.refunded","created":"{}","data":{{"id":"re_{i}","payment":"pay_{}","customer":"cus_{}","amount":2000,"currency":"EUR"}}}}"#,
                time(t + 60),
                i - 1,
                (i - 1) % 3
            ));
        }
        if i == 5 {
            r.push(format!(
                r#"{{"id":"m1","type":"loyalty.tier.set","created":"{}","data":{{"customer":"cus_2","program":"prog_q","tier":"Gold","until":"2026-04-20T00:00:00Z","reason":"status match"}}}}"#,
                time(t + 120)
            ));
        }
        t += DAY + 3_000;
    }
    r.push(format!(
        r#"{{"id":"tick","type":"clock.tick","created":"{}","data":{{}}}}"#,
        time(t + 60 * DAY)
    ));
    r
}

#[test]
fn pending_awards_and_a_manual_tier_survive_a_store_and_verify() {
    let records = records();
    let t = TempDir::new("pending-store");
    let dir = t.0.join("state");
    // A working set, one record a batch: only what a record needs is loaded from the store,
    // so every pending award and manual tier comes back from its stored form before it is
    // used, and every vest is found through the store's index of what falls due.
    drop(crate::api_reads::stored(&dir, &records, 1));
    let mut whole = Engine::empty();
    let straight =
        loyalty_core::fold::fold_to_string(&mut whole, records.join("\n").as_bytes(), None)
            .unwrap();
    // The case is not empty: pending awards, pending and posted reversals, vests, a
    // manual tier change, expiries of vests' lots.
    for needle in [
        r#""type":"award","points":40,"status":"pending""#,
        r#""type":"reversal","points":-20,"status":"pending""#,
        r#""type":"vest""#,
        r#""manual":true"#,
        r#""type":"expiry""#,
        r#""type":"loyalty.points.vested""#,
    ] {
        assert!(straight.contains(needle), "{needle} in\n{straight}");
    }
    let export = Command::new(bin())
        .args(["export", "--state"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(export.stdout).unwrap(), straight);
    let verify = Command::new(bin())
        .args(["verify", "--state"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

/// `atRisk` means an evaluation now would demote: a manual floor at or above the tier held
/// keeps it false below the threshold; a floor under the tier held does not, and neither does
/// a floor that has lapsed.
#[test]
fn a_manual_floor_at_the_tier_held_is_not_at_risk() {
    let config = r#"{"programs":[{"id":"prog_t","currency":"EUR","timezone":"UTC",
        "tierConfig":{"qualifyOn":"spend","period":{"type":"rolling","months":1},
          "tiers":[{"name":"Member","rank":0,"threshold":0},{"name":"Silver","rank":1,"threshold":10000},
                   {"name":"Gold","rank":2,"threshold":20000}]}}]}"#;
    let mut events = Vec::new();
    let mut push = |id: &str, kind: &str, t: &str, data: Value| {
        events.push(
            serde_json::json!({"id": id, "type": kind, "created": t, "data": data}).to_string(),
        );
    };
    for c in ["cus_floor", "cus_under", "cus_lapsed"] {
        push(
            &format!("enr_{c}"),
            "loyalty.account.enroll",
            "2026-01-01T09:00:00Z",
            serde_json::json!({"customer": c, "program": "prog_t"}),
        );
    }
    // Gold by hand with no spend at all.
    push(
        "set_floor",
        "loyalty.tier.set",
        "2026-01-02T10:00:00Z",
        serde_json::json!({"customer": "cus_floor", "program": "prog_t", "tier": "Gold",
            "until": "2026-06-01T00:00:00Z", "reason": "status match"}),
    );
    // Silver by hand, then Gold by spend, then a refund takes the spend below Gold's threshold.
    push(
        "set_under",
        "loyalty.tier.set",
        "2026-01-02T10:00:00Z",
        serde_json::json!({"customer": "cus_under", "program": "prog_t", "tier": "Silver",
            "until": "2026-06-01T00:00:00Z", "reason": "status match"}),
    );
    push(
        "pay_under",
        "payment.completed",
        "2026-01-03T10:00:00Z",
        serde_json::json!({"id": "py_under", "customer": "cus_under", "amount": 25000, "currency": "EUR"}),
    );
    push(
        "ref_under",
        "payment.refunded",
        "2026-01-04T10:00:00Z",
        serde_json::json!({"id": "re_under", "payment": "py_under", "customer": "cus_under",
            "amount": 10000, "currency": "EUR"}),
    );
    // Gold by hand until Jan 5, with Silver's spend: held at Gold only while the floor lasts.
    push(
        "set_lapsed",
        "loyalty.tier.set",
        "2026-01-02T10:00:00Z",
        serde_json::json!({"customer": "cus_lapsed", "program": "prog_t", "tier": "Gold",
            "until": "2026-01-05T00:00:00Z", "reason": "goodwill"}),
    );
    push(
        "pay_lapsed",
        "payment.completed",
        "2026-01-03T10:00:00Z",
        serde_json::json!({"id": "py_lapsed", "customer": "cus_lapsed", "amount": 12000, "currency": "EUR"}),
    );
    let events = events.join("\n") + "\n";

    let accounts = |until: &str| -> BTreeMap<String, (String, bool)> {
        let out = crate::support::fold(config, &events, Some(until));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines = crate::support::lines(&out);
        crate::support::of_kind(&lines, "account")
            .into_iter()
            .map(|a| {
                let tier = a["tier"]["name"].as_str().unwrap_or_default().to_string();
                (
                    a["customer"].as_str().unwrap().to_string(),
                    (tier, a["atRisk"].as_bool().unwrap()),
                )
            })
            .collect()
    };
    // Jan 4, 12:00: every floor in force.
    let during = accounts("2026-01-04T12:00:00Z");
    assert_eq!(during["cus_floor"], ("Gold".into(), false), "{during:?}");
    assert_eq!(during["cus_under"], ("Gold".into(), true), "{during:?}");
    assert_eq!(during["cus_lapsed"], ("Gold".into(), false), "{during:?}");
    // Jan 5, 00:00 exactly: cus_lapsed's floor has ended and the day boundary demotes it to
    // Silver, which its spend holds.
    let after = accounts("2026-01-05T00:00:00Z");
    assert_eq!(after["cus_lapsed"], ("Silver".into(), false), "{after:?}");
    assert_eq!(after["cus_floor"], ("Gold".into(), false), "{after:?}");
}
