//! `loyalty fold` as a user runs it: output, determinism, exit codes.

use std::process::Command;

use crate::support::{bin, fold, lines, of_kind, TempDir};

const CONFIG: &str = r#"{"programs":[{"id":"prog_default","currency":"EUR","autoEnroll":true,
  "earningRules":[{"id":"rule_purchase","trigger":"payment.completed",
  "award":{"type":"per_amount","per":100,"points":1}}]}]}"#;

const EVENTS: &str = r#"{"id":"evt_1","type":"payment.completed","created":"2026-03-01T10:00:00Z","data":{"id":"pay_1","customer":"cus_A","amount":12000,"currency":"EUR"}}

{"id":"evt_2","type":"payment.completed","created":"2026-03-02T10:00:00+02:00","data":{"id":"pay_2","customer":"cus_A","amount":1234,"currency":"EUR"}}
"#;

#[test]
fn fold_prints_transactions_events_and_accounts() {
    let out = fold(CONFIG, EVENTS, None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let l = lines(&out);
    let txs = of_kind(&l, "transaction");
    assert_eq!(txs.len(), 2);
    assert_eq!(txs[0]["points"], 120);
    assert_eq!(txs[1]["points"], 12);
    assert_eq!(txs[1]["balanceAfter"], 132);
    assert_eq!(
        txs[1]["created"], "2026-03-02T08:00:00Z",
        "times print in UTC"
    );
    assert_eq!(txs[0]["metadata"]["capped"], false);
    assert!(txs[0]["id"].as_str().unwrap().starts_with("ptx_"));
    let accounts = of_kind(&l, "account");
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0]["balance"], 132);
    assert!(accounts[0]["id"].as_str().unwrap().starts_with("loy_"));
    // account lines come last
    assert_eq!(l.last().unwrap()["kind"], "account");
}

#[test]
fn fold_prints_the_same_bytes_every_run() {
    let a = fold(CONFIG, EVENTS, None);
    let b = fold(CONFIG, EVENTS, None);
    assert!(!a.stdout.is_empty());
    assert_eq!(a.stdout, b.stdout);
}

#[test]
fn rejections_keep_exit_code_zero() {
    let events = format!("{EVENTS}not json\n{{\"id\":\"evt_1\",\"type\":\"clock.tick\",\"created\":\"2026-03-05T00:00:00Z\",\"data\":{{}}}}\n");
    let out = fold(CONFIG, &events, None);
    assert_eq!(out.status.code(), Some(0));
    let l = lines(&out);
    let rejected = of_kind(&l, "rejected");
    assert_eq!(rejected.len(), 2);
    assert_eq!(rejected[0]["reason"], "malformed");
    assert_eq!(rejected[0]["source"], serde_json::Value::Null);
    assert_eq!(rejected[1]["reason"], "duplicate");
    assert_eq!(rejected[1]["source"], "evt_1");
    assert!(rejected[1]["detail"]
        .as_str()
        .is_some_and(|d| !d.is_empty()));
}

#[test]
fn until_advances_the_clock_and_refuses_going_back() {
    let out = fold(CONFIG, EVENTS, Some("2027-01-01T00:00:00Z"));
    assert_eq!(out.status.code(), Some(0));
    let out = fold(CONFIG, EVENTS, Some("2026-03-01T00:00:00Z"));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        out.stdout.is_empty(),
        "nothing is printed when --until is refused"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--until"));
    let out = fold(CONFIG, EVENTS, Some("next tuesday"));
    assert_eq!(out.status.code(), Some(2));
}

/// The binary folds on three threads (reader, engine, printer) in chunks of records; the
/// library folds on one. Over traffic of many chunks, with blank and broken lines among
/// the records and with and without `--until`, they print the same bytes.
#[test]
fn the_threaded_fold_prints_what_the_library_fold_prints() {
    let dir = TempDir::new("threaded");
    let config_path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/programs.example.json");
    let config_text = std::fs::read_to_string(config_path).expect("example config");
    let traffic = dir.0.join("traffic.jsonl");
    let gen = Command::new(bin())
        .args(["loadgen", "--events", "6000", "--customers", "700"])
        .args(["--program-update-every", "2500", "--config"])
        .arg(config_path)
        .arg("--out")
        .arg(&traffic)
        .output()
        .expect("run loyalty loadgen");
    assert_eq!(
        gen.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );
    let mut events = std::fs::read_to_string(&traffic).expect("traffic written");
    // A chunk boundary falls between these, wherever it is.
    events.insert_str(events.len() / 2, "\n   \nnot json\n{\"id\":\"x\"}\n");
    let config = loyalty_core::parse_config(&config_text).expect("config validates");
    for until in [None, Some("2030-01-01T00:00:00Z")] {
        let mut engine = loyalty_core::Engine::new(&config);
        let expected = loyalty_core::fold::fold_to_string(
            &mut engine,
            events.as_bytes(),
            until.map(|u| loyalty_core::time::Timestamp::parse_rfc3339(u).expect("a time")),
        )
        .expect("folds");
        let out = fold(&config_text, &events, until);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            expected.lines().count() > 6000,
            "the traffic folds into many lines"
        );
        assert!(
            out.stdout == expected.as_bytes(),
            "the binary's fold differs from the library's (until {until:?})"
        );
    }
}

#[test]
fn bad_files_exit_2_with_the_reason() {
    let dir = TempDir::new("cli");
    let events = dir.write("events.jsonl", EVENTS);
    let config = dir.write("programs.json", CONFIG);
    let missing = dir.0.join("missing.json");
    let run = |c: &std::path::Path, e: &std::path::Path| {
        Command::new(bin())
            .args(["fold", "--config"])
            .arg(c)
            .arg("--events")
            .arg(e)
            .output()
            .unwrap()
    };
    let out = run(&missing, &events);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the config"));
    let out = run(&config, &missing);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the events"));
    // A file that opens and then fails to read (a directory), now that the log is read a
    // line at a time, is the same error.
    let out = run(&config, &dir.0);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the events"));
    assert!(out.stdout.is_empty());

    let invalid = dir.write(
        "bad.json",
        r#"{"programs":[{"id":"p","currency":"EUR","earningRules":[{"id":"r","trigger":"t","award":{"type":"per_amount","per":0,"points":1}}]}]}"#,
    );
    let out = run(&invalid, &events);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("programs[0].earningRules[0].award.per"),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    let not_json = dir.write("nojson.json", "{programs:");
    assert_eq!(run(&not_json, &events).status.code(), Some(2));

    let out = Command::new(bin())
        .args(["fold", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a missing argument is exit 2");
}

/// A mistyped `--state` is an error naming the directory, for every command that reads a
/// state, and leaves no directory behind that would later look like a state.
#[test]
fn a_state_that_is_not_there_is_named_and_not_created() {
    let dir = TempDir::new("nostate");
    let missing = dir.0.join("no-such-state");
    let commands: [&[&str]; 4] = [
        &["export", "--state"],
        &["verify", "--state"],
        &[
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--api-keys",
            "sk_test_1",
            "--state",
        ],
        &["checkpoint", "--to", "/nonexistent/copy", "--state"],
    ];
    for args in commands {
        let out = Command::new(bin())
            .args(args)
            .arg(&missing)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(&format!("{} holds no state", missing.display())),
            "{args:?}: {err}"
        );
        assert!(!err.contains("rocksdb"), "{args:?}: {err}");
        assert!(!missing.exists(), "{args:?} created {}", missing.display());
    }
}

#[test]
fn demo_prints_a_summary() {
    let out = Command::new(bin())
        .args(["demo", "--offline"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("points awarded"), "{text}");
    assert!(text.contains("duplicate"), "{text}");
}

#[test]
fn streaming_demo_runs_the_whole_path_on_the_embedded_broker() {
    let out = Command::new(bin())
        .args(["demo", "--customers", "200", "--payments", "2000"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("2000 payments through Kafka in, RocksDB, Kafka out"),
        "{text}"
    );
    assert_eq!(text.matches("signature verified").count(), 4, "{text}");
    assert!(!text.contains("REJECTED"), "{text}");
    // It ends by showing the HTTP API: three requests answered by the running engine
    // (an account, a redemption through the log, the ledger showing it), and their curl.
    assert!(
        text.contains("The HTTP API, on http://127.0.0.1:"),
        "{text}"
    );
    assert_eq!(text.matches("  -> 200").count(), 3, "{text}");
    assert!(text.contains(r#""object":"loyalty_account""#), "{text}");
    assert!(text.contains(r#""object":"redemption""#), "{text}");
    assert!(text.contains(r#""type":"redemption""#), "{text}");
    assert_eq!(text.matches("curl -s").count(), 3, "{text}");
    // The demo's output is clean: no warning from librdkafka (the experimental
    // `enable.gapless.guarantee` the engine relies on is known, and not warned about).
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("gapless"), "{stderr}");
    assert!(!stderr.contains("WARN"), "{stderr}");
}

/// SPEC section 8: an event names the record whose application caused it in `source`
/// (a payment, a command), and carries `null` for an effect that fell due (an expiry).
#[test]
fn events_name_the_record_that_caused_them() {
    let config = r#"{"programs":[{"id":"prog_s","currency":"EUR","autoEnroll":true,
      "pointsExpiry":{"months":1,"warnDays":7},
      "earningRules":[{"id":"rule_p","trigger":"payment.completed",
      "award":{"type":"per_amount","per":100,"points":1}}]}]}"#;
    let events = r#"{"id":"evt_pay","type":"payment.completed","created":"2026-03-01T10:00:00Z","data":{"id":"pay_1","customer":"cus_A","amount":5000,"currency":"EUR"}}
{"id":"cmd_adj","type":"loyalty.points.adjust","created":"2026-03-02T10:00:00Z","data":{"customer":"cus_A","program":"prog_s","points":5,"reason":"goodwill"}}
{"id":"tick_1","type":"clock.tick","created":"2026-05-01T00:00:00Z","data":{}}
"#;
    let out = fold(config, events, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = lines(&out);
    let events = of_kind(&lines, "event");
    let source_of = |kind: &str| -> Vec<serde_json::Value> {
        events
            .iter()
            .filter(|e| e["type"] == kind)
            .map(|e| {
                assert!(e.get("source").is_some(), "no source: {e}");
                e["source"].clone()
            })
            .collect()
    };
    assert_eq!(source_of("loyalty.account.created"), vec!["evt_pay"]);
    assert_eq!(source_of("loyalty.points.earned"), vec!["evt_pay"]);
    assert_eq!(source_of("loyalty.points.adjusted"), vec!["cmd_adj"]);
    let expired = source_of("loyalty.points.expired");
    assert!(!expired.is_empty(), "the lots expire: {lines:?}");
    assert!(expired.iter().all(|s| s.is_null()), "{expired:?}");
    let expiring = source_of("loyalty.points.expiring");
    assert!(!expiring.is_empty(), "a warning falls due: {lines:?}");
    assert!(expiring.iter().all(|s| s.is_null()), "{expiring:?}");
    // The key sits between `created` and `data`, as SPEC section 9's example prints it.
    let raw = String::from_utf8_lossy(&out.stdout);
    let first = raw
        .lines()
        .find(|l| l.contains(r#""kind":"event""#))
        .unwrap();
    assert!(
        first.contains(r#""created":"2026-03-01T10:00:00Z","source":"evt_pay","data":"#),
        "{first}"
    );
}

/// `loyalty check` names what validates but is most likely a mistake, and refuses what
/// does not validate; `loyalty fold` prints the same warnings to standard error.
#[test]
fn check_warns_of_near_miss_triggers_and_refuses_what_does_not_validate() {
    let dir = TempDir::new("check");
    let config = r#"{"programs": [{"id": "prog_c", "currency": "EUR", "earningRules": [
        {"id": "rule_ok", "trigger": "payment.completed", "award": {"type": "fixed", "points": 1}},
        {"id": "rule_typo", "trigger": "payment.complete", "award": {"type": "fixed", "points": 1}},
        {"id": "rule_custom", "trigger": "review.posted", "award": {"type": "fixed", "points": 1}}]}]}"#;
    let path = dir.write("programs.json", config);
    let out = Command::new(bin())
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("programs[0].earningRules[1].trigger"),
        "{text}"
    );
    assert!(
        text.contains("did you mean \"payment.completed\""),
        "{text}"
    );
    assert!(
        !text.contains("review.posted"),
        "a custom trigger is no mistake: {text}"
    );
    assert!(text.contains("1 warning(s)"), "{text}");
    let events = dir.write("events.jsonl", "");
    let out = Command::new(bin())
        .args(["fold", "--config"])
        .arg(&path)
        .arg("--events")
        .arg(&events)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("earningRules[1].trigger"));
    let bad = dir.write(
        "bad.json",
        &config.replace(
            r#""currency": "EUR""#,
            r#""currency": "EUR", "refundDebt": "never""#,
        ),
    );
    let out = Command::new(bin())
        .arg("check")
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("programs[0].refundDebt"));
}
