//! Explanations (SPEC section 12), against models of their own:
//! - every award's `why` recomputes its points from the config and the source record
//!   (base × multipliers, rounded, capped) with exact fractions written here, and every
//!   reversal's from its award and the refunds so far;
//! - a program's stats (`GET /v1/programs/{id}/stats`) equal a count over the fold's lines;
//! - `POST /v1/simulate` reports each reason a rule skips, and writes nothing.

use chrono::TimeZone;
use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use loyalty_core::fold::fold_to_string;
use loyalty_core::Engine;
use loyalty_store::Store;
use proptest::prelude::*;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::api_reads::stored;
use crate::support::TempDir;

const KEY: &str = "rk_test_explain";
const BASE: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

/// An exact fraction (numerator, positive denominator), apart from the engine's decimals.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Frac(i128, i128);

impl Frac {
    fn parse(v: &Value) -> Frac {
        let s = match v {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.clone(),
            other => panic!("not a number: {other}"),
        };
        let (int, frac) = s.split_once('.').unwrap_or((&s, ""));
        let den = 10i128.pow(frac.len() as u32);
        let num: i128 = format!("{int}{frac}").parse().unwrap();
        Frac(num, den).reduced()
    }
    fn int(n: i64) -> Frac {
        Frac(i128::from(n), 1)
    }
    fn mul(self, o: Frac) -> Frac {
        Frac(self.0 * o.0, self.1 * o.1).reduced()
    }
    fn div(self, o: Frac) -> Frac {
        let (n, d) = (self.0 * o.1, self.1 * o.0);
        if d < 0 {
            Frac(-n, -d).reduced()
        } else {
            Frac(n, d).reduced()
        }
    }
    fn reduced(self) -> Frac {
        fn gcd(a: i128, b: i128) -> i128 {
            if b == 0 {
                a.abs()
            } else {
                gcd(b, a % b)
            }
        }
        let g = gcd(self.0, self.1).max(1);
        Frac(self.0 / g, self.1 / g)
    }
    fn round(self, how: &str) -> i128 {
        let floor = self.0.div_euclid(self.1);
        let rem = self.0.rem_euclid(self.1);
        match how {
            "floor" => floor,
            "ceil" => floor + i128::from(rem > 0),
            "nearest" => floor + i128::from(2 * rem >= self.1),
            other => panic!("rounding {other}"),
        }
    }
}

/// A program with every part `why` explains: multiplied and capped rules, a per-currency
/// rule, a fixed rule with a use limit, a campaign multiplier and a bonus, tiers with
/// multipliers and a redemption discount, expiry; `rounding` as given.
fn program(rounding: &str, cap: i64) -> Value {
    json!({"id": "prog_x", "currency": "EUR", "autoEnroll": true, "timezone": "America/New_York",
        "points": {"rounding": rounding},
        "pointsExpiry": {"months": 1, "warnDays": 0},
        "earningRules": [
            {"id": "rule_spend", "trigger": "payment.completed", "multiplier": 1.5,
             "award": {"type": "per_amount", "per": 100, "points": 1},
             "cap": {"points": cap}, "window": "month"},
            {"id": "rule_fx", "trigger": "payment.completed",
             "award": {"type": "per_currency", "rates": {"EUR": 1, "GBP": 1.25}, "per": 250}},
            {"id": "rule_third", "trigger": "payment.completed", "multiplier": 1.5,
             "award": {"type": "per_amount", "per": 3, "points": 0.01}},
            {"id": "rule_first", "trigger": "payment.completed", "award": {"type": "fixed", "points": 7},
             "conditions": {"maxUses": 2}},
            {"id": "rule_welcome", "trigger": "loyalty.account.created", "award": {"type": "fixed", "points": 20}}],
        "campaigns": [
            {"id": "camp_double", "name": "double", "multiplier": 2, "triggers": ["payment.completed"],
             "starts": "2026-01-10T00:00:00Z", "ends": "2026-01-20T00:00:00Z"},
            {"id": "camp_bonus", "name": "bonus", "bonus": {"points": 3}, "triggers": ["payment.completed"],
             "starts": "2026-01-15T00:00:00Z", "ends": "2026-02-15T00:00:00Z"}],
        "tierConfig": {"qualifyOn": "spend", "period": {"type": "rolling", "months": 1}, "softLanding": false,
            "tiers": [{"name": "M", "rank": 0, "threshold": 0},
                      {"name": "S", "rank": 1, "threshold": 5000, "earnMultiplier": 1.25, "redemptionDiscount": 10},
                      {"name": "G", "rank": 2, "threshold": 20000, "earnMultiplier": 1.5, "redemptionDiscount": 12.5}]},
        "rewards": [{"id": "rwd_a", "cost": 33}]})
}

fn log() -> impl Strategy<Value = (Value, Vec<String>)> {
    let item = (
        0u8..10,
        0u8..6,
        1i64..30_000,
        0i64..(70 * 86_400),
        any::<bool>(),
    );
    (
        prop::sample::select(vec!["floor", "nearest", "ceil"]),
        prop::sample::select(vec![40i64, 200, 100_000]),
        prop::collection::vec(item, 1..80),
    )
        .prop_map(|(rounding, cap, items)| {
            let prog = program(rounding, cap);
            let at = |t: i64| loyalty_core::time::Timestamp(BASE + t).to_string();
            let mut out = vec![json!({"id": "cfg", "type": "loyalty.program.updated",
                "created": at(0), "data": prog})
            .to_string()];
            let mut t = 0;
            for (i, (kind, c, n, step, gbp)) in items.into_iter().enumerate() {
                t = t.max(step);
                let cus = format!("cus_{c}");
                let other = format!("cus_{}", (c + 1) % 6);
                let currency = if gbp { "GBP" } else { "EUR" };
                let (kind, data) = match kind {
                    0..=4 => ("payment.completed", json!({"id": format!("pay{i}"), "customer": cus, "amount": n, "currency": currency})),
                    5 => ("payment.refunded", json!({"id": format!("re{i}"), "payment": format!("pay{}", i.saturating_sub(2)), "customer": cus, "amount": n / 3, "currency": currency})),
                    6 => ("loyalty.points.adjust", json!({"customer": cus, "program": "prog_x", "points": n % 60 - 20, "reason": format!("r{i}")})),
                    7 => ("loyalty.points.transfer", json!({"program": "prog_x", "from": cus, "to": other, "points": n % 30 + 1})),
                    8 => ("loyalty.redemption.create", json!({"customer": cus, "program": "prog_x", "reward": "rwd_a", "quantity": n % 3 + 1})),
                    _ => ("clock.tick", json!({})),
                };
                out.push(json!({"id": format!("r{i}"), "type": kind, "created": at(t), "data": data}).to_string());
            }
            // The clock a month and more later: what expires, expires.
            out.push(json!({"id": "tick_end", "type": "clock.tick", "created": at(110 * 86_400), "data": {}}).to_string());
            (prog, out)
        })
}

/// The award of section 4 before multipliers, from the config and the record alone.
fn base_of(rule: &Value, record: &Value) -> Frac {
    let award = &rule["award"];
    let amount = || Frac::int(record["data"]["amount"].as_i64().unwrap());
    match award["type"].as_str().unwrap() {
        "per_amount" => amount()
            .mul(Frac::parse(&award["points"]))
            .div(Frac::parse(&award["per"])),
        "fixed" => Frac::parse(&award["points"]),
        "per_currency" => {
            let cur = record["data"]["currency"].as_str().unwrap();
            amount()
                .mul(Frac::parse(&award["rates"][cur]))
                .div(Frac::parse(&award["per"]))
        }
        other => panic!("award {other}"),
    }
}

/// Checks every transaction's `why` against the config and the log.
/// The text of the JSON number at `"key":` in a raw line (serde_json's `Value` would read a
/// decimal as a float).
fn number_text<'a>(raw: &'a str, key: &str) -> &'a str {
    let at = raw.find(&format!("\"{key}\":")).unwrap() + key.len() + 3;
    let rest = &raw[at..];
    &rest[..rest.find([',', '}']).unwrap()]
}

fn check_whys(prog: &Value, log: &[String], folded: &str) -> BTreeMap<String, usize> {
    let raws: Vec<&str> = folded.lines().collect();
    let lines: Vec<Value> = raws
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let records: BTreeMap<String, Value> = log
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| (v["id"].as_str().unwrap().to_string(), v))
        .collect();
    let rules: BTreeMap<&str, &Value> = prog["earningRules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap(), r))
        .collect();
    let tier_mult = |name: &Value| -> Frac {
        prog["tierConfig"]["tiers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == *name)
            .map_or(Frac::int(1), |t| {
                t.get("earnMultiplier").map_or(Frac::int(1), Frac::parse)
            })
    };
    let rounding = prog["points"]["rounding"].as_str().unwrap();
    let mut awards: BTreeMap<&str, &Value> = BTreeMap::new();
    let mut reversed: BTreeMap<&str, i64> = BTreeMap::new();
    let mut checked = BTreeMap::<String, usize>::new();
    // Kept here from the lines themselves: each account's tier (from its tier changes),
    // what the capped rule awarded each account in each New York month, and every credit
    // (a lot) by transaction id.
    let ny: chrono_tz::Tz = "America/New_York".parse().unwrap();
    let time = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    let month = |v: &Value| {
        let t = time(v).with_timezone(&ny);
        (t.format("%Y-%m").to_string(), t)
    };
    let mut tiers: BTreeMap<String, String> = BTreeMap::new();
    let mut capped_use: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut credits: BTreeMap<String, (&Value, i64)> = BTreeMap::new();
    for (tx, raw) in lines.iter().zip(&raws) {
        if tx["kind"] == "event" && tx["type"] == "loyalty.tier.changed" {
            let d = &tx["data"];
            tiers.insert(
                d["account"].as_str().unwrap().into(),
                d["toTier"].as_str().unwrap().into(),
            );
        }
        if tx["kind"] != "transaction" {
            continue;
        }
        let why = &tx["why"];
        let account = tx["account"].as_str().unwrap().to_string();
        if tx["points"].as_i64().unwrap() > 0 {
            credits.insert(
                tx["id"].as_str().unwrap().into(),
                (&tx["created"], tx["points"].as_i64().unwrap()),
            );
        }
        let points = tx["points"].as_i64().unwrap();
        let kind = tx["type"].as_str().unwrap();
        *checked.entry(kind.to_string()).or_default() += 1;
        match kind {
            "award" if tx["rule"].is_string() => {
                awards.insert(tx["id"].as_str().unwrap(), tx);
                let rule = rules[tx["rule"].as_str().unwrap()];
                let record = &records[tx["source"].as_str().unwrap()];
                let base = base_of(rule, record);
                // The tier held before the event: the last change before this line.
                let held = tiers.get(&account).map_or("M", String::as_str);
                assert_eq!(why["tier"], held, "{tx}");
                // Exact, or (a quotient that does not end) within 10^-18 of it.
                let printed = Frac::parse(&Value::String(number_text(raw, "base").into()));
                let gap = Frac(printed.0 * base.1 - base.0 * printed.1, printed.1 * base.1);
                assert!(gap.0.abs() * 10i128.pow(18) <= gap.1, "base of {tx}");
                if gap.0 != 0 {
                    *checked.entry("inexact base".into()).or_default() += 1;
                }
                let rule_m = rule.get("multiplier").map_or(Frac::int(1), Frac::parse);
                assert_eq!(Frac::parse(&why["multipliers"]["rule"]), rule_m, "{tx}");
                assert_eq!(
                    Frac::parse(&why["multipliers"]["tier"]),
                    tier_mult(&why["tier"]),
                    "{tx}"
                );
                let mut effective = base.mul(rule_m).mul(tier_mult(&why["tier"]));
                // What a person recomputes from `why` alone.
                let mut from_why = printed.mul(rule_m).mul(tier_mult(&why["tier"]));
                let campaigns = why["multipliers"]["campaigns"].as_object().unwrap();
                let named: Vec<&str> = tx["campaigns"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_str().unwrap())
                    .collect();
                assert_eq!(
                    campaigns.keys().map(String::as_str).collect::<Vec<_>>(),
                    named,
                    "{tx}"
                );
                for (id, m) in campaigns {
                    let c = prog["campaigns"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|c| c["id"] == **id)
                        .unwrap();
                    assert_eq!(Frac::parse(m), Frac::parse(&c["multiplier"]));
                    // Active at the record's time, for its trigger.
                    let created = record["created"].as_str().unwrap();
                    assert!(
                        c["starts"].as_str().unwrap() <= created
                            && created < c["ends"].as_str().unwrap()
                    );
                    effective = effective.mul(Frac::parse(m));
                    from_why = from_why.mul(Frac::parse(m));
                    *checked.entry("campaign multiplier".into()).or_default() += 1;
                }
                if why["tier"] != "M" {
                    *checked.entry("tier multiplier".into()).or_default() += 1;
                }
                assert_eq!(why["rounding"], rounding);
                let uncapped = effective.round(rounding);
                assert_eq!(
                    from_why.round(rounding),
                    uncapped,
                    "recomputed from why: {tx}"
                );
                assert_eq!(
                    i128::from(why["uncapped"].as_i64().unwrap()),
                    uncapped,
                    "{tx}"
                );
                match rule.get("cap") {
                    Some(cap) => {
                        assert_eq!(why["cap"]["points"], cap["points"]);
                        assert_eq!(why["cap"]["window"], rule["window"]);
                        let headroom = why["cap"]["headroom"].as_i64().unwrap();
                        // The cap less what the rule awarded the member in the event's
                        // month, before this award.
                        let (m, _) = month(&record["created"]);
                        let used = capped_use.entry((account.clone(), m)).or_default();
                        assert_eq!(
                            headroom,
                            (cap["points"].as_i64().unwrap() - *used).max(0),
                            "{tx}"
                        );
                        *used += points;
                        assert_eq!(
                            i128::from(points),
                            uncapped.min(i128::from(headroom)),
                            "{tx}"
                        );
                        assert_eq!(tx["metadata"]["capped"], i128::from(headroom) < uncapped);
                        if i128::from(headroom) < uncapped {
                            *checked.entry("capped".into()).or_default() += 1;
                        }
                    }
                    None => {
                        assert!(why.get("cap").is_none());
                        assert_eq!(i128::from(points), uncapped, "{tx}");
                    }
                }
            }
            "award" => {
                let c = tx["campaigns"][0].as_str().unwrap();
                let camp = prog["campaigns"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|x| x["id"] == c)
                    .unwrap();
                assert_eq!(
                    why,
                    &json!({"bonus": camp["bonus"]["points"], "campaign": c})
                );
                assert_eq!(points, camp["bonus"]["points"].as_i64().unwrap());
                awards.insert(tx["id"].as_str().unwrap(), tx);
            }
            "reversal" => {
                let award = awards[why["award"].as_str().unwrap()];
                let (refunded, amount) = (
                    why["refunded"].as_i64().unwrap(),
                    why["amount"].as_i64().unwrap(),
                );
                let award_points = award["points"].as_i64().unwrap();
                let due = if refunded >= amount {
                    award_points
                } else {
                    (i128::from(award_points) * i128::from(refunded) / i128::from(amount)) as i64
                };
                let so_far = reversed.entry(award["id"].as_str().unwrap()).or_default();
                *so_far += -points;
                assert_eq!(*so_far, due, "reversals of {award} up to {tx}");
                let record = &records[tx["source"].as_str().unwrap()];
                assert_eq!(why["payment"], record["data"]["payment"]);
            }
            "expiry" => {
                // The lot is a credit of this account; it expired a month after it was
                // credited (New York calendar), and the expiry is written then.
                let (created, credited) = credits[why["lot"].as_str().unwrap()];
                // Section 5: the same local time a month later; a time in a daylight-
                // saving gap (New York's is an hour) moves forward by the gap.
                let local = time(created)
                    .with_timezone(&ny)
                    .naive_local()
                    .checked_add_months(chrono::Months::new(1))
                    .unwrap();
                let due = match ny.from_local_datetime(&local) {
                    chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => t,
                    chrono::LocalResult::None => ny
                        .from_local_datetime(&(local + chrono::Duration::hours(1)))
                        .earliest()
                        .unwrap(),
                }
                .with_timezone(&chrono::Utc)
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string();
                assert_eq!(why["expiresAt"], due, "{tx}");
                assert_eq!(why["expiresAt"], tx["created"], "{tx}");
                assert!(-points <= credited, "{tx}");
            }
            "adjustment" => {
                let record = &records[tx["source"].as_str().unwrap()];
                assert_eq!(why, &json!({"reason": record["data"]["reason"]}));
                assert_eq!(points, record["data"]["points"].as_i64().unwrap());
            }
            "redemption" => {
                // cost × quantity, less the discount percent, rounded up
                let unit = why["unitCost"].as_i64().unwrap();
                assert_eq!(unit, 33);
                let q = why["quantity"].as_i64().unwrap();
                let d = Frac::parse(&why["discount"]);
                let keep = Frac(100 * d.1 - d.0, d.1);
                let pay = Frac::int(unit * q).mul(keep).div(Frac::int(100));
                assert_eq!(i128::from(-points), pay.round("ceil"), "{tx}");
                assert!(
                    ["0", "10", "12.5"].contains(&why["discount"].to_string().as_str()),
                    "{tx}"
                );
            }
            "transfer_in" | "transfer_out" => {
                let record = &records[tx["source"].as_str().unwrap()];
                let other = if kind == "transfer_out" { "to" } else { "from" };
                assert_eq!(why, &json!({"counterparty": record["data"][other]}));
            }
            other => panic!("a transaction of type {other}"),
        }
    }
    checked
}

/// The random logs reach every kind of `why`, and the parts of an award.
#[test]
fn the_random_logs_reach_every_kind_of_why() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut totals: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..60 {
        let (prog, log) = log().new_tree(&mut runner).unwrap().current();
        let folded = fold_to_string(&mut Engine::empty(), log.join("\n").as_bytes(), None).unwrap();
        for (k, n) in check_whys(&prog, &log, &folded) {
            *totals.entry(k).or_default() += n;
        }
    }
    for kind in [
        "inexact base",
        "award",
        "capped",
        "campaign multiplier",
        "tier multiplier",
        "reversal",
        "expiry",
        "adjustment",
        "redemption",
        "transfer_in",
        "transfer_out",
    ] {
        assert!(
            totals.get(kind).copied().unwrap_or(0) >= 5,
            "{kind}: {totals:?}"
        );
    }
}

async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let (status, bytes) = send(app, method, path, body).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// POSTs `body` to `path` on the router: the answer's text.
async fn call_raw(app: &axum::Router, path: &str, body: &Value) -> String {
    String::from_utf8(send(app, "POST", path, Some(body)).await.1).unwrap()
}

/// A request with the key, and the answer's status and bytes.
async fn send(
    app: &axum::Router,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (StatusCode, Vec<u8>) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, bytes.to_vec())
}

/// The stats a program's fold lines call for, counted here: accounts by tier and at risk
/// from the account lines, days (New York dates) from the transactions and enrolments.
fn counted_stats(lines: &[Value]) -> Value {
    let tz: chrono_tz::Tz = "America/New_York".parse().unwrap();
    let date = |s: &str| {
        let t = chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .with_timezone(&tz);
        t.date_naive().to_string()
    };
    let accounts: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "account").collect();
    let mut by_tier: BTreeMap<String, i64> =
        ["M", "S", "G"].iter().map(|t| (t.to_string(), 0)).collect();
    for a in &accounts {
        *by_tier
            .get_mut(a["tier"]["name"].as_str().unwrap())
            .unwrap() += 1;
    }
    let mut days: BTreeMap<String, BTreeMap<&str, i64>> = BTreeMap::new();
    for l in lines {
        let (day, what, n) = match (l["kind"].as_str(), l["type"].as_str()) {
            (Some("event"), Some("loyalty.account.created")) => {
                (date(l["created"].as_str().unwrap()), "enrolled", 1)
            }
            (Some("transaction"), Some(t)) => {
                let p = l["points"].as_i64().unwrap();
                let (what, n) = match t {
                    "award" => ("earned", p),
                    "redemption" => ("redeemed", -p),
                    "expiry" => ("expired", -p),
                    "reversal" => ("reversed", -p),
                    "adjustment" => ("adjusted", p),
                    "transfer_out" => ("transferred", -p),
                    _ => continue,
                };
                (date(l["created"].as_str().unwrap()), what, n)
            }
            _ => continue,
        };
        let d = days.entry(day).or_insert_with(|| {
            [
                "enrolled",
                "earned",
                "redeemed",
                "expired",
                "reversed",
                "adjusted",
                "transferred",
            ]
            .into_iter()
            .map(|k| (k, 0))
            .collect()
        });
        if let Some(v) = d.get_mut(what) {
            *v += n;
        }
    }
    json!({
        "object": "program_stats",
        "program": "prog_x",
        "members": accounts.len(),
        "membersByTier": by_tier,
        "atRisk": accounts.iter().filter(|a| a["atRisk"] == true).count(),
        "pointsOutstanding": accounts.iter().map(|a| a["balance"].as_i64().unwrap()).sum::<i64>(),
        "days": days.into_iter().filter(|(_, d)| d.values().any(|v| *v != 0)).map(|(date, mut d)| {
            let mut o = serde_json::Map::new();
            o.insert("date".into(), date.into());
            for (k, v) in std::mem::take(&mut d) { o.insert(k.into(), v.into()); }
            Value::Object(o)
        }).collect::<Vec<_>>(),
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 60, ..ProptestConfig::default() })]

    #[test]
    fn every_why_recomputes_its_points_and_stats_equal_a_count_of_the_fold(
        (prog, log) in log(),
        every in 1usize..15,
    ) {
        let folded = fold_to_string(&mut Engine::empty(), log.join("\n").as_bytes(), None).unwrap();
        let lines: Vec<Value> = folded.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        check_whys(&prog, &log, &folded);
        let dir = TempDir::new("explain-stats");
        let store = stored(&dir.0.join("state"), &log, every);
        prop_assert!(store.verify().unwrap().is_empty(), "verify: {:?}", store.verify().unwrap());
        let api = loyalty_api::Api::new(store, &[KEY.to_string()], None).unwrap();
        let app = loyalty_api::router(Arc::new(api), axum::Router::new());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (status, got) = rt.block_on(call(&app, "GET", "/v1/programs/prog_x/stats", None));
        prop_assert_eq!(status, StatusCode::OK);
        prop_assert_eq!(got, counted_stats(&lines));
    }
}

/// A program with one rule for each reason a rule can skip a payment, and one that awards.
fn skipping_program() -> Value {
    let fixed = json!({"type": "fixed", "points": 10});
    let pay = "payment.completed";
    let rule = |id: &str, extra: Value| {
        let mut r = json!({"id": id, "trigger": pay, "award": fixed});
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        r
    };
    json!({"id": "prog_s", "currency": "EUR", "autoEnroll": true, "timezone": "UTC",
        "earningRules": [
            rule("rule_awards", json!({})),
            rule("rule_third", json!({"award": {"type": "per_amount", "per": 3, "points": 0.01}})),
            rule("rule_trigger", json!({"trigger": "invoice.paid"})),
            rule("rule_min", json!({"conditions": {"minAmount": 1_000_000}})),
            rule("rule_max", json!({"conditions": {"maxAmount": 1}})),
            rule("rule_cur", json!({"conditions": {"currencies": ["USD"]}})),
            rule("rule_from", json!({"conditions": {"validFrom": "2030-01-01T00:00:00Z"}})),
            rule("rule_until", json!({"conditions": {"validUntil": "2026-01-01T00:00:00Z"}})),
            rule("rule_minrank", json!({"conditions": {"minRank": 2}})),
            rule("rule_maxrank", json!({"conditions": {"maxRank": 0}})),
            rule("rule_meta", json!({"conditions": {"metadata": {"channel": "web"}}})),
            rule("rule_uses", json!({"conditions": {"maxUses": 1}})),
            rule("rule_listed", json!({"award": {"type": "per_currency", "rates": {"GBP": 1}, "per": 100}})),
            rule("rule_zero", json!({"award": {"type": "per_amount", "per": 100_000, "points": 1}})),
            rule("rule_cap", json!({"cap": {"points": 10}}))],
        "tierConfig": {"qualifyOn": "spend", "period": {"type": "rolling", "months": 12},
            "tiers": [{"name": "Blue", "rank": 1, "threshold": 0},
                      {"name": "Gold", "rank": 2, "threshold": 1_000_000}]}})
}

/// Every key and value of a store.
fn every_entry(store: &Store) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    store
        .for_each_entry(|k, v| out.push((k.to_vec(), v.to_vec())))
        .unwrap();
    out
}

#[test]
fn a_simulation_gives_each_reason_a_rule_skips_and_writes_nothing() {
    let at = |d: &str| format!("2026-06-0{d}T10:00:00Z");
    let mut log = vec![
        json!({"id": "cfg_s", "type": "loyalty.program.updated", "created": at("1"), "data": skipping_program()}),
        // A program the customer is not a member of (no autoEnroll).
        json!({"id": "cfg_t", "type": "loyalty.program.updated", "created": at("1"), "data": {
            "id": "prog_t", "currency": "EUR", "earningRules": [
                {"id": "rule_closed", "trigger": "payment.completed", "award": {"type": "fixed", "points": 1}}]}}),
        // The first payment uses up the use limit and the cap.
        json!({"id": "evt_1", "type": "payment.completed", "created": at("2"), "data": {
            "id": "pay_1", "customer": "cus_a", "amount": 1000, "currency": "EUR",
            "metadata": {"channel": "pos"}}}),
    ];
    let log: Vec<String> = log.drain(..).map(|v| v.to_string()).collect();
    let dir = TempDir::new("explain-simulate");
    let store = stored(&dir.0.join("state"), &log, 2);
    let before = every_entry(&store);
    let api = loyalty_api::Api::new(store.clone(), &[KEY.to_string()], None).unwrap();
    let app = loyalty_api::router(Arc::new(api), axum::Router::new());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let payment = json!({"id": "evt_sim", "type": "payment.completed", "created": at("3"), "data": {
        "id": "pay_2", "customer": "cus_a", "amount": 500, "currency": "EUR",
        "metadata": {"channel": "pos"}}});
    let (status, sim) = rt.block_on(call(&app, "POST", "/v1/simulate", Some(&payment)));
    assert_eq!(status, StatusCode::OK, "{sim}");
    assert_eq!(sim["object"], "simulation");
    let reasons: BTreeMap<String, Value> = sim["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                format!(
                    "{}/{}",
                    r["program"].as_str().unwrap(),
                    r["rule"].as_str().unwrap()
                ),
                r.clone(),
            )
        })
        .collect();
    let want = [
        ("prog_s/rule_awards", None),
        ("prog_s/rule_third", None),
        ("prog_s/rule_trigger", Some("trigger")),
        ("prog_s/rule_min", Some("condition.minAmount")),
        ("prog_s/rule_max", Some("condition.maxAmount")),
        ("prog_s/rule_cur", Some("condition.currencies")),
        ("prog_s/rule_from", Some("condition.validFrom")),
        ("prog_s/rule_until", Some("condition.validUntil")),
        ("prog_s/rule_minrank", Some("condition.minRank")),
        ("prog_s/rule_maxrank", Some("condition.maxRank")),
        ("prog_s/rule_meta", Some("condition.metadata")),
        ("prog_s/rule_uses", Some("maxUses")),
        ("prog_s/rule_listed", Some("currency_not_listed")),
        ("prog_s/rule_zero", Some("zero")),
        ("prog_s/rule_cap", Some("cap")),
        ("prog_t/rule_closed", Some("not_enrolled")),
    ];
    assert_eq!(reasons.len(), want.len(), "{sim}");
    for (rule, reason) in want {
        let r = &reasons[rule];
        assert_eq!(r["reason"], json!(reason), "{rule}: {r}");
        assert_eq!(
            r["outcome"],
            if reason.is_some() {
                "skipped"
            } else {
                "awarded"
            },
            "{rule}"
        );
    }
    // What it would write: the awarding rule's transaction, with its why, and its event.
    let txs = sim["transactions"].as_array().unwrap();
    assert_eq!(txs.len(), 2, "{sim}");
    assert_eq!(txs[0]["object"], "points_transaction");
    assert_eq!(txs[0]["rule"], "rule_awards");
    assert_eq!(txs[0]["points"], 10);
    assert_eq!(txs[0]["why"]["base"], 10);
    // The answer's decimals are the fold's, digit for digit (a float would round them).
    let with = format!("{}\n{}", log.join("\n"), payment);
    let folded = fold_to_string(&mut Engine::empty(), with.as_bytes(), None).unwrap();
    let third = folded
        .lines()
        .find(|l| l.contains(r#""rule":"rule_third""#) && l.contains("evt_sim"))
        .unwrap();
    let base = number_text(third, "base");
    assert!(base.len() > 15, "{base}");
    let raw = rt.block_on(call_raw(&app, "/v1/simulate", &payment));
    assert!(raw.contains(&format!(r#""base":{base}"#)), "{raw}");
    assert!(sim["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["type"] == "loyalty.points.earned"));
    // Nothing is written: every key and value as before, and the same record simulated
    // again gives the same answer (its id was not marked seen).
    assert_eq!(every_entry(&store), before);
    let (_, again) = rt.block_on(call(&app, "POST", "/v1/simulate", Some(&payment)));
    assert_eq!(again, sim);
    // A record the engine would reject is answered with its rejection, and every rule
    // as not reached.
    let bad = json!({"id": "evt_1", "type": "payment.completed", "created": at("3"), "data": {
        "id": "pay_3", "customer": "cus_a", "amount": 500, "currency": "EUR"}});
    let (status, dup) = rt.block_on(call(&app, "POST", "/v1/simulate", Some(&bad)));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(dup["rejected"][0]["reason"], "duplicate", "{dup}");
    assert!(dup["transactions"].as_array().unwrap().is_empty());
    // What the engine refuses at entry, the dry run refuses too: far ahead of the wall
    // clock, or a type the engine writes itself.
    for (kind, created) in [
        ("payment.completed", "2099-01-01T00:00:00Z"),
        ("loyalty.transfer.credit", "2026-06-03T10:00:00Z"),
    ] {
        let rec = json!({"id": "evt_entry", "type": kind, "created": created, "data": {
            "id": "pay_9", "customer": "cus_a", "amount": 500, "currency": "EUR"}});
        let (status, ans) = rt.block_on(call(&app, "POST", "/v1/simulate", Some(&rec)));
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ans["rejected"][0]["reason"], "invalid", "{ans}");
        assert!(ans["transactions"].as_array().unwrap().is_empty());
    }
    // A body that is no JSON object is a 400, naming the body.
    let (status, err) = rt.block_on(call(&app, "POST", "/v1/simulate", Some(&json!([1]))));
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"]["param"], "body");
    assert_eq!(every_entry(&store), before);
}

/// Days are the program's days as its zone is now, whatever zone the lines were committed
/// under and however the log was cut into batches; `verify` agrees.
#[test]
fn stats_days_follow_the_zone_the_program_has_now() {
    let program = |tz: &str| {
        json!({"id": "prog_z", "currency": "EUR", "autoEnroll": true, "timezone": tz,
            "earningRules": [{"id": "rule_p", "trigger": "payment.completed",
                "award": {"type": "per_amount", "per": 100, "points": 1}}]})
    };
    let mut log = vec![json!({"id": "cfg_1", "type": "loyalty.program.updated",
        "created": "2026-03-01T00:00:00Z", "data": program("America/New_York")})];
    // Payments around midnight in New York, Kolkata (+5:30) and UTC.
    for (i, t) in [
        "2026-03-01T04:50:00Z",
        "2026-03-01T05:10:00Z",
        "2026-03-01T18:20:00Z",
        "2026-03-01T18:40:00Z",
        "2026-03-01T23:59:00Z",
        "2026-03-02T00:01:00Z",
    ]
    .iter()
    .enumerate()
    {
        log.push(
            json!({"id": format!("evt_{i}"), "type": "payment.completed", "created": t,
            "data": {"id": format!("pay_{i}"), "customer": format!("cus_{}", i % 3),
                     "amount": 1000 * (i as i64 + 1), "currency": "EUR"}}),
        );
    }
    log.push(json!({"id": "cfg_2", "type": "loyalty.program.updated",
        "created": "2026-03-02T01:00:00Z", "data": program("Asia/Kolkata")}));
    log.push(
        json!({"id": "evt_last", "type": "payment.completed", "created": "2026-03-02T18:31:00Z",
        "data": {"id": "pay_last", "customer": "cus_0", "amount": 500, "currency": "EUR"}}),
    );
    let log: Vec<String> = log.into_iter().map(|v| v.to_string()).collect();
    let kolkata: chrono_tz::Tz = "Asia/Kolkata".parse().unwrap();
    let folded = fold_to_string(&mut Engine::empty(), log.join("\n").as_bytes(), None).unwrap();
    let mut want: BTreeMap<String, i64> = BTreeMap::new();
    for l in folded
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
    {
        if l["kind"] == "transaction" {
            let t = chrono::DateTime::parse_from_rfc3339(l["created"].as_str().unwrap()).unwrap();
            *want
                .entry(t.with_timezone(&kolkata).date_naive().to_string())
                .or_default() += l["points"].as_i64().unwrap();
        }
    }
    assert!(want.len() >= 2, "{want:?}");
    let mut answers = Vec::new();
    for every in [1, 3, 100] {
        let dir = TempDir::new("explain-zone");
        let store = stored(&dir.0.join("state"), &log, every);
        assert!(
            store.verify().unwrap().is_empty(),
            "{:?}",
            store.verify().unwrap()
        );
        let api = loyalty_api::Api::new(store, &[KEY.to_string()], None).unwrap();
        let app = loyalty_api::router(Arc::new(api), axum::Router::new());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (status, got) = rt.block_on(call(&app, "GET", "/v1/programs/prog_z/stats", None));
        assert_eq!(status, StatusCode::OK, "{got}");
        let days: BTreeMap<String, i64> = got["days"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["date"].as_str().unwrap().to_string(),
                    d["earned"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(days, want, "batches of {every}");
        // A range of one day.
        let first = want.keys().next().unwrap().clone();
        let (_, one) = rt.block_on(call(
            &app,
            "GET",
            &format!("/v1/programs/prog_z/stats?from={first}&to={first}"),
            None,
        ));
        assert_eq!(one["days"].as_array().unwrap().len(), 1, "{one}");
        // A range that ends before it starts is a 400 naming `to`, not an empty answer.
        let (status, bad) = rt.block_on(call(
            &app,
            "GET",
            "/v1/programs/prog_z/stats?from=2026-12-10&to=2026-12-01",
            None,
        ));
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(bad["error"]["param"], "to", "{bad}");
        answers.push(got);
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 80, ..ProptestConfig::default() })]

    /// Under `refundDebt: writeOff` no balance goes below zero, whatever is refunded after
    /// the points were spent, transferred or expired; each reversal's points and what it
    /// wrote off add up to what the award's refund called for.
    #[test]
    fn under_write_off_no_balance_goes_below_zero((_prog, mut log) in log()) {
        let mut cfg: Value = serde_json::from_str(&log[0]).unwrap();
        cfg["data"]["refundDebt"] = json!("writeOff");
        log[0] = cfg.to_string();
        let folded = fold_to_string(&mut Engine::empty(), log.join("\n").as_bytes(), None).unwrap();
        for l in folded.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()) {
            if l["kind"] == "transaction" {
                prop_assert!(l["balanceAfter"].as_i64().unwrap() >= 0, "{l}");
                if l["type"] == "reversal" {
                    prop_assert!(l["points"].as_i64().unwrap() <= 0);
                    prop_assert!(l["why"].get("writtenOff").is_none_or(|w| w.as_i64().unwrap() > 0));
                }
            }
            if l["kind"] == "account" {
                prop_assert!(l["balance"].as_i64().unwrap() >= 0, "{l}");
            }
        }
    }
}

/// The random logs do write points off under `writeOff` (refunds after spending).
#[test]
fn the_random_logs_reach_write_offs() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut written_off = 0;
    for _ in 0..300 {
        let (_, mut log) = log().new_tree(&mut runner).unwrap().current();
        let mut cfg: Value = serde_json::from_str(&log[0]).unwrap();
        cfg["data"]["refundDebt"] = json!("writeOff");
        log[0] = cfg.to_string();
        let folded = fold_to_string(&mut Engine::empty(), log.join("\n").as_bytes(), None).unwrap();
        written_off += folded.matches("\"writtenOff\":").count();
    }
    assert!(written_off >= 5, "{written_off}");
}
