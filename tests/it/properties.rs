//! Property tests of the engine's invariants, over random logs: the same log gives the same
//! bytes; the ledger (every transaction, balance, refusal, reversal and debt) is what an
//! independent model of SPEC sections 4 and 7 computes from the log; a cap is never exceeded
//! within its window; tiers follow a model of SPEC section 5 day by day; lots, expiry and
//! debt follow a model of section 7; bad input changes nothing; no input makes the engine
//! panic.
//!
//! The expected values come from `model.rs`, which shares no code with the engine; the
//! engine's results are read from the JSON lines it prints.

use std::collections::BTreeMap;

use loyalty_core::fold::fold_to_string;
use loyalty_core::{parse_config, Engine};
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::model::{self, cal, CAP};

fn config(window: &str) -> String {
    json!({"programs": [
        {"id": "prog_a", "currency": "EUR", "timezone": "Europe/Berlin", "autoEnroll": true,
         "points": {"rounding": "nearest"},
         "earningRules": [
            {"id": "rule_spend", "trigger": "payment.completed",
             "award": {"type": "per_amount", "per": 100, "points": 1}, "multiplier": 1.25},
            {"id": "rule_capped", "trigger": "payment.completed",
             "award": {"type": "per_amount", "per": 100, "points": 3},
             "cap": {"points": CAP}, "window": window},
            {"id": "rule_welcome", "trigger": "loyalty.account.created",
             "award": {"type": "fixed", "points": 50}},
            {"id": "rule_erp", "trigger": "erp.order",
             "award": {"type": "fixed", "points": 7}, "conditions": {"maxUses": 3}},
            {"id": "rule_cash", "trigger": "payment.completed",
             "award": {"type": "cashback", "percent": 1.5}}],
         "campaigns": [
            {"id": "camp_x", "starts": "2026-02-01T00:00:00Z", "ends": "2026-04-01T00:00:00Z",
             "multiplier": 1.1, "bonus": {"points": 5}}]},
        {"id": "prog_b", "currency": "GBP",
         "earningRules": [
            {"id": "rule_fx", "trigger": "payment.completed",
             "award": {"type": "per_currency", "rates": {"GBP": 1, "EUR": 0.87}, "per": 100},
             "cap": {"points": 300}, "window": "week"}]}
    ]})
    .to_string()
}

const BASE: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

fn time_text(offset: i64) -> String {
    cal::format(BASE + offset)
}

/// One random record: mostly well-formed, sometimes broken on purpose.
fn record() -> impl Strategy<Value = String> {
    let customer = prop_oneof![
        9 => prop::sample::select(vec!["cus_a", "cus_b", "cus_c", "cus_d"]),
        1 => Just(""),
    ];
    let program = prop_oneof![
        4 => prop::sample::select(vec!["prog_a", "prog_b"]),
        1 => Just("prog_zzz"),
    ];
    let id = (0u32..100).prop_map(|n| format!("evt_{n}"));
    let created = prop_oneof![
        7 => (0i64..(400 * 86_400)).prop_map(time_text),
        // Local midnights in Berlin (winter and summer time): the edges of cap windows.
        2 => (0i64..400, prop::sample::select(vec![3_600i64, 7_200]))
            .prop_map(|(d, before)| time_text(d * 86_400 - before)),
        1 => Just("not a time".to_string()),
    ];
    // Some payments and refunds share round amounts, so that payments are refunded in full
    // (and their points given back after they were spent: debt).
    let round = prop::sample::select(vec![10_000i64, 40_000, 80_000]);
    let amount = prop_oneof![
        6 => (0i64..200_000).prop_map(Value::from),
        2 => round.clone().prop_map(Value::from),
        1 => (-1000i64..0).prop_map(Value::from),
        1 => Just(json!("12")),
    ];
    let refunded = prop_oneof![2 => 0i64..50_000, 1 => round];
    let currency = prop_oneof![6 => Just("EUR"), 2 => Just("GBP"), 1 => Just("usd")];
    let body = prop_oneof![
        6 => (customer.clone(), amount.clone(), currency.clone(), 0u32..20).prop_map(|(c, a, cur, p)| {
            ("payment.completed", json!({"id": format!("pay_{p}"), "customer": c, "amount": a, "currency": cur}))
        }),
        3 => (customer.clone(), refunded, currency.clone(), 0u32..20).prop_map(|(c, a, cur, p)| {
            ("payment.refunded", json!({"id": format!("re_{p}"), "payment": format!("pay_{p}"), "customer": c, "amount": a, "currency": cur}))
        }),
        2 => (customer.clone(), program.clone(), -800i64..800).prop_map(|(c, p, pts)| {
            ("loyalty.points.adjust", json!({"customer": c, "program": p, "points": pts, "reason": "prop"}))
        }),
        2 => (customer.clone(), customer.clone(), program.clone(), 1i64..1200).prop_map(|(f, t, p, pts)| {
            ("loyalty.points.transfer", json!({"from": f, "to": t, "program": p, "points": pts}))
        }),
        2 => (customer.clone(), program.clone()).prop_map(|(c, p)| {
            ("loyalty.account.enroll", json!({"customer": c, "program": p}))
        }),
        1 => customer.clone().prop_map(|c| ("erp.order", json!({"customer": c}))),
        1 => Just(("clock.tick", json!({}))),
        1 => Just(("loyalty.points.earned", json!({}))),
    ];
    (id, created, body, 0u8..20).prop_map(|(id, created, (kind, data), mangle)| {
        let mut env = json!({"id": id, "type": kind, "created": created, "data": data});
        match mangle {
            0 => {
                env.as_object_mut().unwrap().remove("data");
            }
            1 => env["id"] = json!(42),
            2 => return "{\"id\": \"evt_x\", \"type\":".to_string(),
            _ => {}
        }
        env.to_string()
    })
}

/// A payment by a customer who has little else, points spent (sent to another member or
/// adjusted away), then the payment refunded in full: its reversals take what is left and
/// the rest becomes a debt (SPEC section 7).
fn spend_then_refund() -> impl Strategy<Value = Vec<String>> {
    let customer = prop::sample::select(vec!["cus_e", "cus_f", "cus_g"]);
    let to = prop::sample::select(vec!["cus_a", "cus_b"]);
    let amount = prop_oneof![1_000i64..100_000, Just(80_000)];
    let at = 0i64..(400 * 86_400);
    (customer, to, 0u32..20, amount, 1i64..1_500, any::<bool>(), 0u32..1_000, at).prop_map(
        |(c, to, p, amount, points, transfer, n, at)| {
            let spend = if transfer {
                json!({"id": format!("evt_s{n}b"), "type": "loyalty.points.transfer", "created": time_text(at + 60),
                       "data": {"program": "prog_a", "from": c, "to": to, "points": points}})
            } else {
                json!({"id": format!("evt_s{n}b"), "type": "loyalty.points.adjust", "created": time_text(at + 60),
                       "data": {"program": "prog_a", "customer": c, "points": -points, "reason": "prop"}})
            };
            [
                json!({"id": format!("evt_s{n}a"), "type": "payment.completed", "created": time_text(at),
                       "data": {"id": format!("pay_{p}"), "customer": c, "amount": amount, "currency": "EUR"}}),
                spend,
                json!({"id": format!("evt_s{n}c"), "type": "payment.refunded", "created": time_text(at + 120),
                       "data": {"id": format!("re_s{n}"), "payment": format!("pay_{p}"), "customer": c,
                                "amount": amount, "currency": "EUR"}}),
            ]
            .iter()
            .map(Value::to_string)
            .collect()
        },
    )
}

fn log() -> impl Strategy<Value = Vec<String>> {
    let chunk = prop_oneof![8 => record().prop_map(|r| vec![r]), 1 => spend_then_refund()];
    prop::collection::vec(chunk, 1..70).prop_map(|chunks| chunks.concat())
}

fn window() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["day", "week", "month", "year", "lifetime"])
}

fn engine(window: &str) -> Engine {
    Engine::new(&parse_config(&config(window)).expect("property config validates"))
}

/// Applies one record and returns the lines the engine printed for it, parsed.
fn apply(e: &mut Engine, record: &str) -> Vec<Value> {
    apply_bytes(e, record.as_bytes())
}

fn apply_bytes(e: &mut Engine, record: &[u8]) -> Vec<Value> {
    let mut out = Vec::new();
    e.apply(record, &mut out);
    let lines: Vec<String> = out.iter().map(|o| o.to_json_line()).collect();
    model::parse_lines(&lines)
}

/// The account lines, parsed.
fn accounts(e: &Engine) -> Vec<Value> {
    let lines: Vec<String> = e.accounts().map(|a| a.to_json_line()).collect();
    model::parse_lines(&lines)
}

fn run(window: &str, log: &[String]) -> Vec<Value> {
    let mut e = engine(window);
    log.iter().flat_map(|r| apply(&mut e, r)).collect()
}

/// A rejected line's reason, for a line that is one.
fn rejection(line: &Value) -> Option<&str> {
    (line["kind"] == "rejected").then(|| line["reason"].as_str().unwrap())
}

/// Compares what the engine printed with what the model expects, entry by entry, naming
/// the first difference.
fn same(what: &str, got: &[Value], want: &[Value]) -> Result<(), TestCaseError> {
    let n = got.iter().zip(want).take_while(|(g, w)| g == w).count();
    if n == got.len() && n == want.len() {
        return Ok(());
    }
    let show = |v: Option<&Value>| v.map_or("(nothing)".to_string(), Value::to_string);
    Err(TestCaseError::fail(format!(
        "{what}: entry {n} differs\n engine: {}\n  model: {}",
        show(got.get(n)),
        show(want.get(n))
    )))
}

fn secs(line: &Value) -> i64 {
    cal::parse(line["created"].as_str().unwrap()).unwrap()
}

proptest! {
    // The model is cheap next to the engine: many cases.
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Every record prints what the model of SPEC sections 2, 4 and 7 says it prints: its
    /// transactions (points, balance after, rule, campaigns, capped), its cashback and its
    /// rejection; every account ends with the model's balance. And, from the output alone:
    /// each account's balances are the running sum of its transactions, and only a
    /// reversal takes a balance below zero.
    #[test]
    fn the_ledger_is_the_models(w in window(), log in log()) {
        let mut e = engine(w);
        let mut m = model::Ledger::new(w);
        let mut sums: BTreeMap<String, i64> = BTreeMap::new();
        for r in &log {
            let got = apply(&mut e, r);
            let view: Vec<Value> = got.iter().filter_map(|l| match l["kind"].as_str() {
                Some("transaction") => Some(model::tx_view(l)),
                Some("rejected") => Some(json!({"kind": "rejected", "reason": l["reason"]})),
                Some("event") if l["type"] == "loyalty.cashback.earned" => {
                    let d = &l["data"];
                    Some(json!({"kind": "cashback", "customer": d["customer"], "program": d["program"],
                                "amount": d["amount"], "currency": d["currency"]}))
                }
                _ => None,
            }).collect();
            same(&format!("record {r}"), &view, &m.apply(r))?;
            for t in got.iter().filter(|l| l["kind"] == "transaction") {
                let points = t["points"].as_i64().unwrap();
                let s = sums.entry(t["account"].as_str().unwrap().to_string()).or_default();
                *s += points;
                prop_assert_eq!(Some(*s), t["balanceAfter"].as_i64(), "balanceAfter of {}", t);
                prop_assert!(points != 0 || t["type"] == "reversal", "{}", t);
                prop_assert!(*s >= 0 || points >= 0 || t["type"] == "reversal",
                    "only a reversal takes a balance below zero: {}", t);
            }
        }
        let lines = accounts(&e);
        let got: BTreeMap<(String, String), i64> = lines.iter().map(|a| {
            prop_assert_eq!(a["balance"].as_i64(), Some(sums.get(a["id"].as_str().unwrap()).copied().unwrap_or(0)),
                "account {}", a);
            Ok(((a["program"].as_str().unwrap().to_string(), a["customer"].as_str().unwrap().to_string()),
                a["balance"].as_i64().unwrap()))
        }).collect::<Result<_, TestCaseError>>()?;
        let want: BTreeMap<(String, String), i64> =
            m.balances().iter().map(|((p, c), b)| ((p.to_string(), c.clone()), *b)).collect();
        prop_assert_eq!(got, want);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn the_same_log_gives_the_same_bytes(w in window(), log in log()) {
        let text = log.join("\n");
        let a = fold_to_string(&mut engine(w), text.as_bytes(), None).unwrap();
        let b = fold_to_string(&mut engine(w), text.as_bytes(), None).unwrap();
        prop_assert_eq!(a, b);
    }

    #[test]
    fn a_cap_is_never_exceeded_within_its_window(w in window(), log in log()) {
        let tz = chrono_tz::Europe::Berlin;
        let mut per_window: BTreeMap<(String, Option<(i64, i64)>), i64> = BTreeMap::new();
        for t in run(w, &log) {
            if t["kind"] == "transaction" && t["type"] == "award" && t["rule"] == "rule_capped" {
                let key = (t["account"].as_str().unwrap().to_string(), cal::window(w, secs(&t), tz));
                let total = per_window.entry(key).or_default();
                *total += t["points"].as_i64().unwrap();
                prop_assert!(*total <= CAP, "{} points in one {} window", total, w);
            }
        }
    }

    /// A record rejected as bad input leaves no trace (SPEC section 2): it prints its
    /// rejection and nothing else, and the log without it prints the same lines, accounts
    /// and clock. Which records are bad is the model's call, not the engine's: a record the
    /// engine rejects only because an earlier rejected one left a trace (its id "seen", say)
    /// is still applied to the engine that never saw the earlier one.
    #[test]
    fn bad_input_changes_nothing(w in window(), log in log()) {
        let mut m = model::Ledger::new(w);
        let mut with = engine(w);
        let mut without = engine(w);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for r in &log {
            let bad = matches!(m.apply(r).as_slice(),
                [v] if rejection(v).is_some_and(|reason| reason != "insufficient_points"));
            let got = apply(&mut with, r);
            if bad {
                prop_assert!(got.len() == 1 && rejection(&got[0]).is_some(),
                    "a rejected record did more: {:?}", got);
                continue;
            }
            a.extend(got);
            b.extend(apply(&mut without, r));
        }
        prop_assert_eq!(a, b, "the log with its bad records and without them");
        prop_assert_eq!(accounts(&with), accounts(&without));
        prop_assert_eq!(with.clock(), without.clock());
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let mut e = engine("month");
        let got = apply_bytes(&mut e, &bytes);
        prop_assert!(got.len() == 1 && rejection(&got[0]).is_some(), "{:?}", got);
        prop_assert!(e.clock().is_none());
        prop_assert_eq!(e.accounts().count(), 0);
    }

    #[test]
    fn random_envelopes_never_panic(
        id in prop_oneof![any::<String>().prop_map(Value::from), any::<i64>().prop_map(Value::from), Just(Value::Null)],
        kind in prop_oneof![
            prop::sample::select(vec!["payment.completed", "payment.refunded", "invoice.paid",
                "subscription.created", "referral.converted", "clock.tick", "loyalty.account.enroll",
                "loyalty.points.adjust", "loyalty.points.transfer", "loyalty.program.updated",
                "loyalty.redemption.create", "x.custom"]).prop_map(Value::from),
            any::<String>().prop_map(Value::from)],
        created in prop_oneof![any::<String>().prop_map(Value::from),
            (-100_000_000_000i64..300_000_000_000).prop_map(|s| Value::from(cal::format(s)))],
        fields in prop::collection::btree_map(
            prop::sample::select(vec!["id", "customer", "amount", "currency", "metadata", "payment",
                "referrer", "referee", "program", "points", "reason", "from", "to", "reward",
                "quantity", "birthday", "referralCode", "earningRules", "tierConfig"]),
            prop_oneof![any::<String>().prop_map(Value::from), any::<i64>().prop_map(Value::from),
                Just(json!(1e300)), Just(json!(-0.5)), Just(json!({"loyalty_account": "loy_x"})),
                Just(json!([1, "a"])), Just(Value::Null), Just(json!(true))],
            0..8),
    ) {
        let mut data = serde_json::Map::new();
        for (k, v) in fields {
            data.insert(k.to_string(), v);
        }
        let env = json!({"id": id, "type": kind, "created": created, "data": data}).to_string();
        let mut e = engine("week");
        // A record either applies or is rejected; it never panics. One that applied without
        // a word was seen: the same record again is a duplicate.
        let first = apply(&mut e, &env);
        if first.is_empty() {
            let again = apply(&mut e, &env);
            prop_assert!(again.len() == 1 && rejection(&again[0]) == Some("duplicate"), "{:?}", again);
        }
    }
}

mod tiers {
    //! Section 5 over random payments and refunds, against `model::Tiers`: the model reads
    //! the thresholds, multipliers, period and time zone from the config below, computes
    //! each member's qualifying value from the log and evaluates every local day boundary.
    use super::*;

    fn config(soft: bool, tz: &str) -> String {
        json!({"programs": [{"id": "prog_t", "currency": "EUR", "autoEnroll": true, "timezone": tz,
            "earningRules": [{"id": "rule_p", "trigger": "payment.completed",
                "award": {"type": "per_amount", "per": 100, "points": 1}}],
            "tierConfig": {"qualifyOn": "spend", "period": {"type": "rolling", "months": 2},
                "softLanding": soft,
                "tiers": [{"name": "M", "rank": 0, "threshold": 0},
                          {"name": "S", "rank": 1, "threshold": 20000, "earnMultiplier": 1.5},
                          {"name": "G", "rank": 2, "threshold": 50000, "earnMultiplier": 2},
                          {"name": "P", "rank": 3, "threshold": 90000, "earnMultiplier": 3}]}}]})
        .to_string()
    }

    /// Payments (and refunds of them) by three customers over a year, in time order with
    /// some late records.
    fn log() -> impl Strategy<Value = Vec<String>> {
        // Some times are local midnights (in UTC, Berlin or New York), where days and
        // windows begin; some amounts add up to thresholds exactly.
        let time = prop_oneof![
            3 => 0i64..(330 * 86_400),
            1 => (0i64..330, prop::sample::select(vec![0i64, -3_600, -7_200, 14_400, 18_000]))
                .prop_map(|(d, off)| (d * 86_400 + off).max(0)),
        ];
        let amount = prop_oneof![
            3 => 1i64..60_000,
            1 => prop::sample::select(vec![2_500i64, 5_000, 10_000, 20_000, 40_000]),
        ];
        prop::collection::vec((0u8..3, time, amount, 0u8..10), 1..60).prop_map(|items| {
            let mut out = Vec::new();
            let mut t = 0;
            for (i, (c, step, amount, kind)) in items.into_iter().enumerate() {
                t = if kind == 0 { step / 3 } else { t.max(step) };
                let created = time_text(t);
                if kind == 1 && i > 0 {
                    out.push(json!({"id": format!("r{i}"), "type": "payment.refunded", "created": created,
                        "data": {"id": format!("re{i}"), "payment": format!("pay{}", i - 1), "customer": "x",
                                 "amount": amount / 4, "currency": "EUR"}}).to_string());
                } else {
                    out.push(json!({"id": format!("e{i}"), "type": "payment.completed", "created": created,
                        "data": {"id": format!("pay{i}"), "customer": format!("cus_{c}"), "amount": amount,
                                 "currency": "EUR"}}).to_string());
                }
            }
            out
        })
    }

    /// Folds `log` and then a tick at `end` (a function of the model's clock) through the
    /// engine and the model of SPEC section 5, and compares, per customer, every
    /// transaction (the award uses the tier held before the payment) and every
    /// `loyalty.tier.changed` (tiers, direction, time), then the account lines (balance,
    /// tier, qualifying value, at risk). Returns the model and the engine's tier changes.
    fn fold_both(
        soft: bool,
        tz: &str,
        log: &[String],
        end: impl Fn(i64, chrono_tz::Tz) -> i64,
    ) -> Result<(model::Tiers, Vec<Value>, i64), TestCaseError> {
        let text = config(soft, tz);
        let mut e = Engine::new(&parse_config(&text).unwrap());
        let mut m = model::Tiers::new(&text);
        let mut lines = Vec::new();
        for r in log {
            let got = apply(&mut e, r);
            let refused: Vec<&str> = got.iter().filter_map(rejection).collect();
            prop_assert_eq!(
                refused,
                m.apply(r).into_iter().collect::<Vec<_>>(),
                "record {}",
                r
            );
            lines.extend(got);
        }
        let end = end(m.clock().unwrap(), m.tz());
        let tick = json!({"id": "tick_end", "type": "clock.tick", "created": cal::format(end), "data": {}});
        lines.extend(apply(&mut e, &tick.to_string()));
        prop_assert_eq!(m.apply(&tick.to_string()), None);

        let mut got: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        let mut changes = Vec::new();
        for l in &lines {
            if l["kind"] == "transaction" {
                got.entry(l["customer"].as_str().unwrap().to_string())
                    .or_default()
                    .push(model::tx_view(l));
            } else if l["type"] == "loyalty.tier.changed" {
                let d = &l["data"];
                got.entry(d["customer"].as_str().unwrap().to_string())
                    .or_default()
                    .push(json!({
                    "kind": "tier", "from": d["fromTier"], "to": d["toTier"],
                    "direction": d["direction"], "created": l["created"]}));
                changes.push(l.clone());
            }
        }
        for (c, want) in &m.log {
            same(
                &format!("customer {c}"),
                got.get(c).map_or(&[], |v| v),
                want,
            )?;
        }
        prop_assert_eq!(got.len(), m.log.len(), "customers");
        let accounts: BTreeMap<String, Value> = accounts(&e)
            .iter()
            .map(|a| {
                (
                    a["customer"].as_str().unwrap().to_string(),
                    json!({"balance": a["balance"], "tier": a["tier"]["name"],
                    "qualifyingValue": a["qualifyingValue"], "atRisk": a["atRisk"]}),
                )
            })
            .collect();
        prop_assert_eq!(accounts, m.accounts());
        Ok((m, changes, end))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 120, ..ProptestConfig::default() })]

        /// Right after a day boundary is evaluated, every member's tier is exactly the one its
        /// value meets (no soft landing): promotion is immediate, demotion at the boundary;
        /// and every tier change on the way is the model's.
        #[test]
        fn a_members_tier_matches_its_value(log in log(), tz in prop::sample::select(vec!["UTC", "Europe/Berlin", "America/New_York"])) {
            let (m, _, boundary) = fold_both(false, tz, &log, |clock, tz| cal::next_day_boundary(clock + 86_400, tz))?;
            for c in m.accounts().keys() {
                let (held, met) = m.held_and_met(c, boundary);
                prop_assert_eq!(held, met, "customer {}", c);
            }
        }

        /// With soft landing, a member is demoted one rank at a time, at most once within one
        /// period length, on the model's days, over a year after the last record.
        #[test]
        fn soft_landing_demotes_at_most_once_per_period(log in log(), tz in prop::sample::select(vec!["UTC", "Europe/Berlin"])) {
            let (m, changes, _) = fold_both(true, tz, &log, |clock, _| clock + 400 * 86_400)?;
            let mut last: BTreeMap<String, i64> = BTreeMap::new();
            for ev in changes.iter().filter(|ev| ev["data"]["direction"] == "down") {
                let (from, to) = (ev["data"]["fromTier"].as_str().unwrap(), ev["data"]["toTier"].as_str().unwrap());
                prop_assert_eq!(m.rank(from), m.rank(to) + 1, "one rank at a time");
                let acct = ev["data"]["account"].as_str().unwrap().to_string();
                let at = secs(ev);
                if let Some(prev) = last.get(&acct) {
                    prop_assert!(m.period_after(*prev) <= at,
                        "demoted at {} and again at {}", cal::format(*prev), ev["created"]);
                }
                last.insert(acct, at);
            }
        }

        /// Replay equals live: folding a log straight through prints what folding it in two
        /// parts prints, with the state stored in RocksDB and loaded back in between.
        #[test]
        fn replay_equals_live_across_a_store_round_trip(log in log(), cut in 0usize..60) {
            let cfg = parse_config(&config(true, "Europe/Berlin")).unwrap();
            let text = log.join("\n");
            let straight = fold_to_string(&mut Engine::new(&cfg), text.as_bytes(), None).unwrap();

            // The streaming engine starts with no programs and learns them from its log.
            let update = |p: &serde_json::Value| json!({"id": "cfg", "type": "loyalty.program.updated",
                "created": "1970-01-01T00:00:00Z", "data": p}).to_string();
            let program: serde_json::Value = serde_json::from_str::<serde_json::Value>(&config(true, "Europe/Berlin")).unwrap()["programs"][0].clone();
            let mut records = vec![update(&program)];
            records.extend(log.iter().cloned());
            let cut = cut.min(records.len());
            let dir = std::env::temp_dir().join(format!("loyalty-prop-{}-{}", std::process::id(), cut));
            let _ = std::fs::remove_dir_all(&dir);
            let mut lines = Vec::new();
            for part in [&records[..cut], &records[cut..]] {
                let store = loyalty_store::Store::open(&dir).unwrap();
                let mut e = store.load_engine().unwrap();
                let mut out = Vec::new();
                for r in part {
                    e.apply(r.as_bytes(), &mut out);
                }
                lines.extend(out.iter().map(|o| o.to_json_line()));
                let batch = loyalty_store::Batch { changes: e.take_changes(), ..Default::default() };
                store.commit(&e, batch).unwrap();
            }
            let store = loyalty_store::Store::open(&dir).unwrap();
            let e = store.load_engine().unwrap();
            lines.extend(e.accounts().map(|a| a.to_json_line()));
            drop(store);
            let _ = std::fs::remove_dir_all(&dir);
            let mut joined = lines.join("\n");
            joined.push('\n');
            prop_assert_eq!(joined, straight);
        }
    }
}

mod lots {
    //! Section 7 against the model: lots, expiry and its warnings, deductions from the lots
    //! that expire first, refunds that take from their award's lot and then make a debt,
    //! credits that pay the debt off, redemption refusals; every balance ends as the model's,
    //! which keeps "a balance is the sum of its open lots minus its debt".
    use super::*;

    const CONFIG: &str = r#"{"programs":[{"id":"prog_l","currency":"EUR","autoEnroll":true,
        "pointsExpiry":{"months":1,"warnDays":5},
        "earningRules":[{"id":"rule_p","trigger":"payment.completed","award":{"type":"per_amount","per":100,"points":1}}],
        "rewards":[{"id":"rwd_a","cost":40,"stock":3},{"id":"rwd_b","cost":15,"maxPerMember":2}]}]}"#;

    fn record() -> impl Strategy<Value = (u8, u8, i64, i64)> {
        // Some records at midnight: lots credited then expire at a midnight, where other
        // records fall on the same instant.
        let time = prop_oneof![3 => 0i64..(90 * 86_400), 1 => (0i64..90).prop_map(|d| d * 86_400)];
        (0u8..6, 0u8..3, 1i64..20_000, time)
    }

    /// The engine's lines, per customer, in the model's terms.
    fn per_customer(lines: &[Value]) -> BTreeMap<String, Vec<Value>> {
        let mut got: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for l in lines {
            let (customer, view) = match (l["kind"].as_str(), l["type"].as_str()) {
                (Some("transaction"), _) => (&l["customer"], model::tx_view(l)),
                (Some("event"), Some("loyalty.points.expiring")) => (
                    &l["data"]["customer"],
                    json!({
                    "kind": "expiring", "points": l["data"]["points"],
                    "expiresAt": l["data"]["expiresAt"], "created": l["created"]}),
                ),
                (Some("event"), Some("loyalty.redemption.rejected")) => (
                    &l["data"]["customer"],
                    json!({
                    "kind": "redemption.rejected", "reward": l["data"]["reward"],
                    "reason": l["data"]["reason"], "created": l["created"]}),
                ),
                _ => continue,
            };
            got.entry(customer.as_str().unwrap().to_string())
                .or_default()
                .push(view);
        }
        got
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

        #[test]
        fn balances_equal_open_lots_minus_debt(items in prop::collection::vec(record(), 1..80)) {
            let mut e = Engine::new(&parse_config(CONFIG).unwrap());
            let mut m = model::Lots::new();
            let mut lines = Vec::new();
            let mut t = 0;
            let mut records = Vec::new();
            // The amounts of the payments so far (refunds are of one of the last few
            // records, in full or in part, often after its points were spent).
            let mut amounts: BTreeMap<usize, i64> = BTreeMap::new();
            for (i, (kind, c, n, step)) in items.into_iter().enumerate() {
                t = t.max(step);
                let created = time_text(t);
                let cus = format!("cus_{c}");
                let data = match kind {
                    0 | 1 => {
                        amounts.insert(i, n);
                        json!({"type": "payment.completed", "data": {"id": format!("pay{i}"), "customer": cus, "amount": n, "currency": "EUR"}})
                    }
                    2 => {
                        let of = i.saturating_sub(1 + n as usize % 6);
                        let amount = match amounts.get(&of) {
                            Some(a) if n % 2 == 0 => *a,
                            _ => n / 3,
                        };
                        json!({"type": "payment.refunded", "data": {"id": format!("re{i}"), "payment": format!("pay{of}"), "customer": cus, "amount": amount, "currency": "EUR"}})
                    }
                    3 => json!({"type": "loyalty.points.adjust", "data": {"customer": cus, "program": "prog_l", "points": n % 200 - 100, "reason": "p"}}),
                    4 => json!({"type": "loyalty.points.transfer", "data": {"program": "prog_l", "from": cus, "to": format!("cus_{}", (c + 1) % 3), "points": n % 150 + 1}}),
                    _ => json!({"type": "loyalty.redemption.create", "data": {"customer": cus, "program": "prog_l", "reward": if n % 2 == 0 { "rwd_a" } else { "rwd_b" }, "quantity": n % 2 + 1}}),
                };
                let mut env = data;
                env["id"] = json!(format!("r{i}"));
                env["created"] = json!(created);
                records.push(env.to_string());
            }
            // Then a tick four months on: every lot has expired by then.
            let end = BASE + t + 120 * 86_400;
            records.push(json!({"id": "tick_end", "type": "clock.tick", "created": cal::format(end), "data": {}}).to_string());
            for r in &records {
                let got = apply(&mut e, r);
                let refused: Vec<&str> = got.iter().filter_map(rejection).collect();
                prop_assert_eq!(refused, m.apply(r).into_iter().collect::<Vec<_>>(), "record {}", r);
                if let Err(why) = m.check_invariants() {
                    return Err(TestCaseError::fail(why));
                }
                lines.extend(got);
            }
            let got = per_customer(&lines);
            for (c, want) in &m.log {
                same(&format!("customer {c}"), got.get(c).map_or(&[], |v| v), want)?;
            }
            prop_assert_eq!(got.len(), m.log.len(), "customers");
            let balances: BTreeMap<String, i64> = accounts(&e).iter()
                .map(|a| (a["customer"].as_str().unwrap().to_string(), a["balance"].as_i64().unwrap()))
                .collect();
            prop_assert_eq!(balances, m.balances());
            // What is left of each balance is only debt.
            prop_assert!(m.all_expired());
        }
    }
}
