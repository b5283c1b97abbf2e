//! Property tests of the engine's invariants, over random logs: the same log gives the same
//! bytes; a balance is the sum of its transactions; a cap is never exceeded within its
//! window; bad input changes nothing; no input makes the engine panic.

use std::collections::BTreeMap;

use loyalty_core::envelope::Reason;
use loyalty_core::fold::fold_to_string;
use loyalty_core::output::{Output, TxKind};
use loyalty_core::time::{Timestamp, Window};
use loyalty_core::{parse_config, Engine};
use proptest::prelude::*;
use serde_json::{json, Value};

const CAP: i64 = 700;

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
    Timestamp(BASE + offset).to_string()
}

/// One random record: mostly well-formed, sometimes broken on purpose.
fn record() -> impl Strategy<Value = String> {
    let customer = prop::sample::select(vec!["cus_a", "cus_b", "cus_c", "cus_d", ""]);
    let program = prop::sample::select(vec!["prog_a", "prog_b", "prog_zzz"]);
    let id = (0u32..60).prop_map(|n| format!("evt_{n}"));
    let created = prop_oneof![
        9 => (0i64..(400 * 86_400)).prop_map(time_text),
        1 => Just("not a time".to_string()),
    ];
    let amount = prop_oneof![
        8 => (0i64..200_000).prop_map(Value::from),
        1 => (-1000i64..0).prop_map(Value::from),
        1 => Just(json!("12")),
    ];
    let currency = prop::sample::select(vec!["EUR", "GBP", "usd"]);
    let body = prop_oneof![
        6 => (customer.clone(), amount.clone(), currency.clone(), 0u32..20).prop_map(|(c, a, cur, p)| {
            ("payment.completed", json!({"id": format!("pay_{p}"), "customer": c, "amount": a, "currency": cur}))
        }),
        2 => (customer.clone(), (0i64..50_000), currency.clone(), 0u32..20).prop_map(|(c, a, cur, p)| {
            ("payment.refunded", json!({"id": format!("re_{p}"), "payment": format!("pay_{p}"), "customer": c, "amount": a, "currency": cur}))
        }),
        2 => (customer.clone(), program.clone(), -800i64..800).prop_map(|(c, p, pts)| {
            ("loyalty.points.adjust", json!({"customer": c, "program": p, "points": pts, "reason": "prop"}))
        }),
        2 => (customer.clone(), customer.clone(), program.clone(), 1i64..600).prop_map(|(f, t, p, pts)| {
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

fn log() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(record(), 1..80)
}

fn window() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["day", "week", "month", "year", "lifetime"])
}

fn engine(window: &str) -> Engine {
    Engine::new(&parse_config(&config(window)).expect("property config validates"))
}

fn run(window: &str, log: &[String]) -> Vec<Output> {
    let mut e = engine(window);
    let mut out = Vec::new();
    for r in log {
        e.apply(r.as_bytes(), &mut out);
    }
    out
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
    fn a_balance_is_the_sum_of_its_transactions(w in window(), log in log()) {
        let mut e = engine(w);
        let mut out = Vec::new();
        for r in &log {
            e.apply(r.as_bytes(), &mut out);
        }
        let mut sums: BTreeMap<String, i128> = BTreeMap::new();
        for o in &out {
            if let Output::Transaction(t) = o {
                let s = sums.entry(t.account.clone()).or_default();
                *s += i128::from(t.points);
                prop_assert_eq!(*s, t.balance_after, "balanceAfter of {}", t.id);
                if t.kind != TxKind::Reversal {
                    prop_assert!(t.points != 0);
                }
            }
        }
        for a in e.accounts() {
            prop_assert_eq!(a.balance, sums.get(&a.id).copied().unwrap_or(0), "account {}", a.id);
            // only refunds may take a balance below zero; none of them here exceed awards
            prop_assert!(a.balance >= 0 || out.iter().any(|o| matches!(o, Output::Transaction(t) if t.kind == TxKind::Reversal)));
        }
    }

    #[test]
    fn a_cap_is_never_exceeded_within_its_window(w in window(), log in log()) {
        let tz: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
        let win = Window::parse(w).unwrap();
        let mut per_window: BTreeMap<(String, Option<(Timestamp, Timestamp)>), i64> = BTreeMap::new();
        for o in run(w, &log) {
            if let Output::Transaction(t) = o {
                if t.kind == TxKind::Award && t.rule.as_deref() == Some("rule_capped") {
                    let key = (t.account.clone(), win.range(t.created, tz));
                    let total = per_window.entry(key).or_default();
                    *total += t.points;
                    prop_assert!(*total <= CAP, "{} points in one {} window", total, w);
                }
            }
        }
    }

    #[test]
    fn bad_input_changes_nothing(w in window(), log in log()) {
        let mut e = engine(w);
        let mut out = Vec::new();
        for r in &log {
            let before = e.state().clone();
            out.clear();
            e.apply(r.as_bytes(), &mut out);
            if let [Output::Rejected(rej)] = out.as_slice() {
                if !matches!(rej.reason, Reason::Refused(_)) {
                    prop_assert!(e.state() == &before, "{:?} changed the state", rej);
                }
            }
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let mut e = engine("month");
        let before = e.state().clone();
        let mut out = Vec::new();
        e.apply(&bytes, &mut out);
        prop_assert_eq!(out.len(), 1);
        prop_assert!(matches!(&out[0], Output::Rejected(_)));
        prop_assert!(e.state() == &before);
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
            (-100_000_000_000i64..300_000_000_000).prop_map(|s| Value::from(Timestamp(s).to_string()))],
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
        let env = json!({"id": id, "type": kind, "created": created, "data": data});
        let mut e = engine("week");
        let mut out = Vec::new();
        e.apply(env.to_string().as_bytes(), &mut out);
        // A record either applies or is rejected; it never panics.
        prop_assert!(!out.is_empty() || e.state().seen.len() == 1);
    }
}

mod tiers {
    //! Section 5 invariants over random payments and refunds.
    use super::*;
    use loyalty_core::output::OutEvent;
    use loyalty_core::time::add_months;

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
        prop::collection::vec((0u8..3, 0i64..(330 * 86_400), 1i64..60_000, 0u8..10), 1..60).prop_map(|items| {
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

    fn tiers_changed(out: &[Output]) -> Vec<&OutEvent> {
        out.iter()
            .filter_map(|o| match o {
                Output::Event(e) if e.kind() == "loyalty.tier.changed" => Some(e),
                _ => None,
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 120, ..ProptestConfig::default() })]

        /// Right after a day boundary is evaluated, every member's tier is exactly the one its
        /// value meets (no soft landing): promotion is immediate, demotion at the boundary.
        #[test]
        fn a_members_tier_matches_its_value(log in log(), tz in prop::sample::select(vec!["UTC", "Europe/Berlin", "America/New_York"])) {
            let cfg = parse_config(&config(false, tz)).unwrap();
            let mut e = Engine::new(&cfg);
            let mut out = Vec::new();
            for r in &log {
                e.apply(r.as_bytes(), &mut out);
            }
            let prog = e.state().programs[0].clone();
            let clock = e.clock().unwrap();
            let boundary = loyalty_core::time::day_bounds(Timestamp(clock.0 + 86_400), prog.tz).unwrap().1;
            e.advance_to(boundary, &mut out).unwrap();
            for a in e.state().accounts.values() {
                let value = loyalty_core::tiers::value_at(a, &prog, boundary);
                let want = loyalty_core::tiers::highest_met(&prog, value).unwrap();
                prop_assert_eq!(a.tier.as_deref(), Some(want.name.as_str()), "value {}", value);
            }
        }

        /// With soft landing, a member is demoted one rank at a time, at most once within one
        /// period length.
        #[test]
        fn soft_landing_demotes_at_most_once_per_period(log in log()) {
            let cfg = parse_config(&config(true, "UTC")).unwrap();
            let mut e = Engine::new(&cfg);
            let mut out = Vec::new();
            for r in &log {
                e.apply(r.as_bytes(), &mut out);
            }
            let end = Timestamp(e.clock().unwrap().0 + 400 * 86_400);
            e.advance_to(end, &mut out).unwrap();
            let prog = e.state().programs[0].clone();
            let rank = |n: &str| prog.tier(n).unwrap().rank;
            let mut last: BTreeMap<String, Timestamp> = BTreeMap::new();
            for ev in tiers_changed(&out) {
                let data = ev.data_value();
                if data["direction"] != "down" {
                    continue;
                }
                let (from, to) = (data["fromTier"].as_str().unwrap(), data["toTier"].as_str().unwrap());
                prop_assert_eq!(rank(from), rank(to) + 1, "one rank at a time");
                let acct = data["account"].as_str().unwrap().to_string();
                if let Some(prev) = last.get(&acct) {
                    prop_assert!(add_months(*prev, 2, prog.tz).unwrap() <= ev.created,
                        "demoted at {} and again at {}", prev, ev.created);
                }
                last.insert(acct, ev.created);
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
                lines.extend(out.iter().map(Output::to_json_line));
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
    //! Section 7 invariants: a balance is the sum of its open lots minus its debt; no lot
    //! goes negative; stock never goes below zero.
    use super::*;

    const CONFIG: &str = r#"{"programs":[{"id":"prog_l","currency":"EUR","autoEnroll":true,
        "pointsExpiry":{"months":1,"warnDays":5},
        "earningRules":[{"id":"rule_p","trigger":"payment.completed","award":{"type":"per_amount","per":100,"points":1}}],
        "rewards":[{"id":"rwd_a","cost":40,"stock":3},{"id":"rwd_b","cost":15,"maxPerMember":2}]}]}"#;

    fn record() -> impl Strategy<Value = (u8, u8, i64, i64)> {
        (0u8..6, 0u8..3, 1i64..20_000, 0i64..(90 * 86_400))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

        #[test]
        fn balances_equal_open_lots_minus_debt(items in prop::collection::vec(record(), 1..80)) {
            let mut e = Engine::new(&parse_config(CONFIG).unwrap());
            let mut out = Vec::new();
            let mut t = 0;
            for (i, (kind, c, n, step)) in items.into_iter().enumerate() {
                t = t.max(step);
                let created = time_text(t);
                let cus = format!("cus_{c}");
                let data = match kind {
                    0 | 1 => json!({"type": "payment.completed", "data": {"id": format!("pay{i}"), "customer": cus, "amount": n, "currency": "EUR"}}),
                    2 => json!({"type": "payment.refunded", "data": {"id": format!("re{i}"), "payment": format!("pay{}", i.saturating_sub(1)), "customer": cus, "amount": n / 3, "currency": "EUR"}}),
                    3 => json!({"type": "loyalty.points.adjust", "data": {"customer": cus, "program": "prog_l", "points": n % 200 - 100, "reason": "p"}}),
                    4 => json!({"type": "loyalty.points.transfer", "data": {"program": "prog_l", "from": cus, "to": format!("cus_{}", (c + 1) % 3), "points": n % 150 + 1}}),
                    _ => json!({"type": "loyalty.redemption.create", "data": {"customer": cus, "program": "prog_l", "reward": if n % 2 == 0 { "rwd_a" } else { "rwd_b" }, "quantity": n % 2 + 1}}),
                };
                let mut env = data;
                env["id"] = json!(format!("r{i}"));
                env["created"] = json!(created);
                let total = |e: &Engine| e.state().accounts.values().map(|a| a.balance).sum::<i128>();
                let before = total(&e);
                let due_before = e.clock();
                e.apply(env.to_string().as_bytes(), &mut out);
                if kind == 4 && due_before.is_some_and(|c| c.0 >= BASE + t) {
                    // No time-driven effect ran in between: a transfer conserves points.
                    prop_assert_eq!(total(&e), before, "a transfer changed the total");
                }
                for a in e.state().accounts.values() {
                    prop_assert_eq!(loyalty_core::lots::total(a), a.balance, "after record {}", i);
                    prop_assert!(a.lots.iter().all(|l| l.remaining >= 0));
                    prop_assert!(a.debt >= 0);
                }
                for ((_, reward), used) in &e.state().stock_used {
                    prop_assert!(reward != "rwd_a" || *used <= 3, "stock of rwd_a went below zero");
                }
            }
            let end = Timestamp(e.clock().map_or(BASE, |c| c.0) + 120 * 86_400);
            e.advance_to(end, &mut out).unwrap();
            for a in e.state().accounts.values() {
                prop_assert_eq!(loyalty_core::lots::total(a), a.balance);
                // Every lot has expired by now: what is left is only debt.
                prop_assert!(a.lots.is_empty());
                prop_assert_eq!(a.balance, -i128::from(a.debt));
            }
        }
    }
}
