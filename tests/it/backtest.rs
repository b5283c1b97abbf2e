//! `loyalty backtest` (SPEC section 12) against plain folds: a candidate equal to the
//! baseline differs in nothing, a doubled rule doubles what it awarded, and every total of
//! the report is what two `loyalty fold`s of the same log give, counted here from their
//! lines; with `--from`, the candidate's fold is the fold of the log with the candidate's
//! program updates put in at that time.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::{json, Value};

use crate::support::{bin, fold, lines, stdout_of, TempDir};

/// A log of `n` records of the example programs' traffic (no program updates in it).
fn traffic(dir: &TempDir, n: u32) -> String {
    let out = dir.0.join("log.jsonl");
    let st = Command::new(bin())
        .args([
            "loadgen",
            "--events",
            &n.to_string(),
            "--customers",
            "150",
            "--seed",
            "11",
        ])
        .arg("--config")
        .arg(crate::support::root().join("examples/programs.json"))
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::read_to_string(out).unwrap()
}

fn examples() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(crate::support::root().join("examples/programs.json")).unwrap(),
    )
    .unwrap()
}

/// Runs `loyalty backtest` with `args` (and `--format json`): its report.
fn backtest(
    dir: &TempDir,
    candidate: &Value,
    baseline: Option<&Value>,
    log: &str,
    extra: &[&str],
) -> Value {
    let c = dir.write("candidate.json", &candidate.to_string());
    let e = dir.write("events.jsonl", log);
    let mut cmd = Command::new(bin());
    cmd.arg("backtest")
        .arg("--config")
        .arg(&c)
        .arg("--events")
        .arg(&e);
    if let Some(b) = baseline {
        cmd.arg("--baseline")
            .arg(dir.write("baseline.json", &b.to_string()));
    }
    serde_json::from_str(&stdout_of(cmd.args(["--format", "json"]).args(extra))).unwrap()
}

/// What a plain fold says of a program: points per rule (awards only), outstanding,
/// members per tier, redemptions, and each account's balance with its customer.
#[derive(Debug, Default)]
struct Totals {
    rules: BTreeMap<String, i64>,
    outstanding: i64,
    tiers: BTreeMap<String, i64>,
    redemptions: i64,
    balances: BTreeMap<String, (i64, String)>,
}

fn totals(fold_lines: &[Value], program: &str) -> Totals {
    let mut t = Totals::default();
    for l in fold_lines {
        let mine = l["program"] == program || l["data"]["program"] == program;
        if !mine {
            continue;
        }
        match (l["kind"].as_str().unwrap(), l["type"].as_str()) {
            ("transaction", Some("award")) if l["rule"].is_string() => {
                *t.rules
                    .entry(l["rule"].as_str().unwrap().into())
                    .or_default() += l["points"].as_i64().unwrap();
            }
            ("event", Some("loyalty.reward.redeemed")) => t.redemptions += 1,
            ("account", _) => {
                let b = l["balance"].as_i64().unwrap();
                t.outstanding += b;
                if let Some(tier) = l["tier"]["name"].as_str() {
                    *t.tiers.entry(tier.into()).or_default() += 1;
                }
                t.balances.insert(
                    l["id"].as_str().unwrap().into(),
                    (b, l["customer"].as_str().unwrap().into()),
                );
            }
            _ => {}
        }
    }
    t
}

/// Checks one program's report against the two folds' totals.
fn check_program(report: &Value, base: &Totals, cand: &Totals) {
    let pair = |b: i64, c: i64| json!({"baseline": b, "candidate": c, "difference": c - b});
    for r in report["rules"].as_array().unwrap() {
        let rule = r["rule"].as_str().unwrap();
        let (b, c) = (
            base.rules.get(rule).copied().unwrap_or(0),
            cand.rules.get(rule).copied().unwrap_or(0),
        );
        let mut want = pair(b, c);
        want["rule"] = json!(rule);
        assert_eq!(r, &want, "rule {rule}");
    }
    for rule in base.rules.keys().chain(cand.rules.keys()) {
        assert!(
            report["rules"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["rule"] == *rule),
            "{rule} missing"
        );
    }
    assert_eq!(
        report["pointsOutstanding"],
        pair(base.outstanding, cand.outstanding)
    );
    assert_eq!(
        report["redemptions"],
        pair(base.redemptions, cand.redemptions)
    );
    for (tier, v) in report["membersByTier"].as_object().unwrap() {
        let (b, c) = (
            base.tiers.get(tier).copied().unwrap_or(0),
            cand.tiers.get(tier).copied().unwrap_or(0),
        );
        assert_eq!(v, &pair(b, c), "tier {tier}");
    }
    // The 20 accounts whose balance changes most, by absolute difference then id.
    let mut changes: Vec<(String, String, i64, i64)> = base
        .balances
        .keys()
        .chain(cand.balances.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|id| {
            let b = base.balances.get(id);
            let c = cand.balances.get(id);
            let customer = b.or(c).map(|x| x.1.clone()).unwrap();
            (
                id.clone(),
                customer,
                b.map_or(0, |x| x.0),
                c.map_or(0, |x| x.0),
            )
        })
        .filter(|(_, _, b, c)| b != c)
        .collect();
    changes.sort_by(|x, y| {
        (y.3 - y.2)
            .abs()
            .cmp(&(x.3 - x.2).abs())
            .then(x.0.cmp(&y.0))
    });
    changes.truncate(20);
    let want: Vec<Value> = changes
        .into_iter()
        .map(|(a, cus, b, c)| {
            let mut v = pair(b, c);
            v["account"] = json!(a);
            v["customer"] = json!(cus);
            v
        })
        .collect();
    assert_eq!(report["topChanges"], json!(want));
}

#[test]
fn a_candidate_equal_to_the_baseline_differs_in_nothing() {
    let dir = TempDir::new("backtest-equal");
    let log = traffic(&dir, 3000);
    let cfg = examples();
    for extra in [&[][..], &["--from", "2026-01-15T00:00:00Z"][..]] {
        let report = backtest(&dir, &cfg, Some(&cfg), &log, extra);
        let programs = report["programs"].as_array().unwrap();
        assert_eq!(programs.len(), 2);
        for p in programs {
            for r in p["rules"].as_array().unwrap() {
                assert_eq!(r["difference"], 0, "{r}");
            }
            assert_eq!(p["pointsOutstanding"]["difference"], 0);
            assert_eq!(p["redemptions"]["difference"], 0);
            assert_eq!(p["topChanges"], json!([]));
            for v in p["membersByTier"].as_object().unwrap().values() {
                assert_eq!(v["difference"], 0);
            }
        }
        // Something was folded at all.
        assert!(
            programs[0]["pointsOutstanding"]["baseline"]
                .as_i64()
                .unwrap()
                > 1000
        );
    }
    // A candidate that takes effect after the log's end changes nothing in it, even one
    // that differs.
    let mut doubled = cfg.clone();
    doubled["programs"][0]["earningRules"][0]["multiplier"] = json!(4);
    let report = backtest(
        &dir,
        &doubled,
        Some(&cfg),
        &log,
        &["--from", "2099-01-01T00:00:00Z"],
    );
    for p in report["programs"].as_array().unwrap() {
        assert_eq!(p["pointsOutstanding"]["difference"], 0, "{p}");
        assert_eq!(p["topChanges"], json!([]));
        for v in p["membersByTier"].as_object().unwrap().values() {
            assert_eq!(v["difference"], 0, "{p}");
        }
    }
}

#[test]
fn a_doubled_rule_doubles_what_it_awarded() {
    // Whole points per payment (amounts in whole euros, 1 point a euro), no cap and no
    // tier multiplier: twice the multiplier is exactly twice the points.
    let program = |m: u32| {
        json!({"programs": [{"id": "prog_d", "currency": "EUR", "autoEnroll": true,
            "earningRules": [
                {"id": "rule_spend", "trigger": "payment.completed", "multiplier": m,
                 "award": {"type": "per_amount", "per": 100, "points": 1}},
                {"id": "rule_welcome", "trigger": "loyalty.account.created",
                 "award": {"type": "fixed", "points": 10}}]}]})
    };
    let log: String = (0..200)
        .map(|i| {
            json!({"id": format!("evt_{i}"), "type": "payment.completed",
                "created": format!("2026-03-{:02}T10:00:00Z", i % 28 + 1),
                "data": {"id": format!("pay_{i}"), "customer": format!("cus_{}", i % 17),
                         "amount": (i % 50 + 1) * 100, "currency": "EUR"}})
            .to_string()
                + "\n"
        })
        .collect();
    let dir = TempDir::new("backtest-double");
    let report = backtest(&dir, &program(2), Some(&program(1)), &log, &[]);
    let rules = &report["programs"][0]["rules"];
    assert_eq!(rules[0]["rule"], "rule_spend");
    let b = rules[0]["baseline"].as_i64().unwrap();
    assert!(b > 0);
    assert_eq!(rules[0]["candidate"].as_i64().unwrap(), 2 * b);
    assert_eq!(rules[1]["rule"], "rule_welcome");
    assert_eq!(rules[1]["difference"], 0);
    assert_eq!(
        report["programs"][0]["pointsOutstanding"]["difference"]
            .as_i64()
            .unwrap(),
        b
    );
}

/// A candidate with a trigger a typo away from a known type is warned of on standard error,
/// as `check` warns of it, and the report still says what it would do (award nothing).
#[test]
fn a_mistyped_trigger_in_the_candidate_is_warned_of() {
    let program = |trigger: &str| {
        json!({"programs": [{"id": "prog_t", "currency": "EUR", "autoEnroll": true,
            "earningRules": [{"id": "rule_spend", "trigger": trigger,
                 "award": {"type": "per_amount", "per": 100, "points": 1}}]}]})
    };
    let log: String = (0..5)
        .map(|i| {
            json!({"id": format!("evt_{i}"), "type": "payment.completed",
                "created": format!("2026-03-0{}T10:00:00Z", i + 1),
                "data": {"id": format!("pay_{i}"), "customer": "cus_1",
                         "amount": 1000, "currency": "EUR"}})
            .to_string()
                + "\n"
        })
        .collect();
    let dir = TempDir::new("backtest-typo");
    for (trigger, warned) in [("payment.complete", true), ("payment.completed", false)] {
        let c = dir.write("candidate.json", &program(trigger).to_string());
        let b = dir.write("baseline.json", &program("payment.completed").to_string());
        let e = dir.write("events.jsonl", &log);
        let out = Command::new(bin())
            .arg("backtest")
            .arg("--config")
            .arg(&c)
            .arg("--baseline")
            .arg(&b)
            .arg("--events")
            .arg(&e)
            .args(["--format", "json"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            err.contains("programs[0].earningRules[0].trigger")
                && err.contains("did you mean \"payment.completed\""),
            warned,
            "{trigger}: {err}"
        );
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let candidate = report["programs"][0]["rules"][0]["candidate"]
            .as_i64()
            .unwrap();
        assert_eq!(candidate == 0, warned, "{report}");
    }
}

#[test]
fn the_report_is_two_plain_folds() {
    let dir = TempDir::new("backtest-folds");
    let log = traffic(&dir, 4000);
    let base = examples();
    // The candidate: the coffee rule at 3x with a higher cap, tiers twice as easy, the
    // travel program unchanged.
    let mut cand = base.clone();
    let coffee = &mut cand["programs"][0];
    coffee["earningRules"][0]["multiplier"] = json!(3);
    coffee["earningRules"][0]["cap"] = json!({"points": 900});
    coffee["tierConfig"]["tiers"][1]["threshold"] = json!(10000);
    let candidate = json!({"programs": [cand["programs"][0].clone()]});
    let report = backtest(&dir, &candidate, Some(&base), &log, &[]);
    let folded_base = lines(&fold(&base.to_string(), &log, None));
    let folded_cand = lines(&fold(&cand.to_string(), &log, None));
    for p in report["programs"].as_array().unwrap() {
        let id = p["program"].as_str().unwrap();
        check_program(p, &totals(&folded_base, id), &totals(&folded_cand, id));
    }
    assert_ne!(report["programs"][0]["pointsOutstanding"]["difference"], 0);
    assert_ne!(report["programs"][0]["topChanges"], json!([]));
    // From a time on: the candidate's fold is the log with the candidate's program put in
    // as an update at that time.
    let from = "2026-01-20T00:00:00Z";
    let report = backtest(&dir, &candidate, Some(&base), &log, &["--from", from]);
    let update = json!({"id": "backtest_prog_coffee", "type": "loyalty.program.updated",
        "created": from, "data": cand["programs"][0]})
    .to_string();
    let mut with_update = String::new();
    let mut put = false;
    for l in log.lines() {
        let created = serde_json::from_str::<Value>(l).unwrap()["created"]
            .as_str()
            .unwrap()
            .to_string();
        if !put && created.as_str() >= from {
            with_update.push_str(&update);
            with_update.push('\n');
            put = true;
        }
        with_update.push_str(l);
        with_update.push('\n');
    }
    assert!(put, "the log reaches past {from}");
    let folded_cand = lines(&fold(&base.to_string(), &with_update, None));
    for p in report["programs"].as_array().unwrap() {
        let id = p["program"].as_str().unwrap();
        check_program(p, &totals(&folded_base, id), &totals(&folded_cand, id));
    }
    assert_ne!(report["programs"][0]["pointsOutstanding"]["difference"], 0);
}

#[test]
fn the_html_report_stands_alone_and_the_text_report_reads() {
    let dir = TempDir::new("backtest-html");
    let log = traffic(&dir, 1500);
    let base = examples();
    let mut cand = base.clone();
    cand["programs"][0]["earningRules"][0]["multiplier"] = json!(3);
    let c = dir.write("candidate.json", &cand.to_string());
    let b = dir.write("baseline.json", &base.to_string());
    let e = dir.write("events.jsonl", &log);
    let run = |format: &str| {
        stdout_of(
            Command::new(bin())
                .arg("backtest")
                .arg("--config")
                .arg(&c)
                .arg("--baseline")
                .arg(&b)
                .arg("--events")
                .arg(&e)
                .args(["--format", format]),
        )
    };
    let html = run("html");
    assert!(html.starts_with("<!doctype html>"));
    assert!(
        html.matches("<svg").count() >= 3,
        "charts: rules, days, tiers"
    );
    for outside in ["http://", "https://", "src=", "<script", "<link"] {
        assert!(
            !html.contains(outside),
            "the page needs nothing outside it: {outside}"
        );
    }
    assert!(html.contains("rule_purchase"));
    let text = run("text");
    assert!(text.contains("program prog_coffee"));
    assert!(text.contains("awarded by rule_purchase"));
}

#[test]
fn a_log_without_programs_needs_a_baseline_and_a_bad_candidate_is_named() {
    let dir = TempDir::new("backtest-errors");
    let c = dir.write("candidate.json", &examples().to_string());
    let e = dir.write(
        "events.jsonl",
        r#"{"id":"e1","type":"payment.completed","created":"2026-01-01T00:00:00Z","data":{"id":"p1","customer":"c","amount":100,"currency":"EUR"}}"#,
    );
    let out = Command::new(bin())
        .arg("backtest")
        .arg("--config")
        .arg(&c)
        .arg("--events")
        .arg(&e)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--baseline"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut bad = examples();
    bad["programs"][0]["earningRules"][0]["award"]["per"] = json!(0);
    let c = dir.write("bad.json", &bad.to_string());
    let out = Command::new(bin())
        .arg("backtest")
        .arg("--config")
        .arg(&c)
        .arg("--baseline")
        .arg(&c)
        .arg("--events")
        .arg(&e)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("earningRules[0].award.per"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
