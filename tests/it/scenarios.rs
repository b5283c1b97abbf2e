//! The acceptance scenarios of `tests/scenarios/`, written from SPEC.md, run through the
//! binary with the same matching rules as `../shared/tools/check-scenarios`: expected
//! objects are subsets of the output, lists match in length, numbers compare as exact
//! decimals.

use std::path::Path;

use loyalty_core::dec::Dec;
use serde_json::Value;

use crate::support::{fold, lines};

fn same_number(want: &Value, got: &Value) -> bool {
    let as_dec = |v: &Value| -> Option<Dec> {
        match v {
            Value::Number(n) => n.to_string().parse().ok(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    };
    matches!((as_dec(want), as_dec(got)), (Some(a), Some(b)) if a == b)
}

fn subset(want: &Value, got: &Value, path: &str, problems: &mut Vec<String>) {
    match want {
        Value::Object(w) => {
            let Value::Object(g) = got else {
                problems.push(format!("{path}: expected an object, got {got}"));
                return;
            };
            for (k, v) in w {
                match g.get(k) {
                    None if v.is_null() => {}
                    None => problems.push(format!("{path}.{k}: missing (expected {v})")),
                    Some(gv) => subset(v, gv, &format!("{path}.{k}"), problems),
                }
            }
        }
        Value::Array(w) => match got {
            Value::Array(g) if g.len() == w.len() => {
                for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                    subset(wv, gv, &format!("{path}[{i}]"), problems);
                }
            }
            _ => problems.push(format!("{path}: expected {want}, got {got}")),
        },
        Value::Number(_) => {
            if !same_number(want, got) {
                problems.push(format!("{path}: expected {want}, got {got}"));
            }
        }
        _ => {
            if want != got {
                problems.push(format!("{path}: expected {want}, got {got}"));
            }
        }
    }
}

fn seq(want: &[Value], got: &[&Value], label: &str, problems: &mut Vec<String>) {
    if want.len() != got.len() {
        let shown: Vec<String> = got.iter().take(8).map(|g| g.to_string()).collect();
        problems.push(format!(
            "{label}: expected {}, got {}:\n      {}",
            want.len(),
            got.len(),
            shown.join("\n      ")
        ));
        return;
    }
    for (i, (w, g)) in want.iter().zip(got).enumerate() {
        subset(w, g, &format!("{label}[{i}]"), problems);
    }
}

/// Runs one scenario file and returns what did not hold.
pub fn run_scenario(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("read scenario");
    let sc: Value = serde_json::from_str(&text).expect("scenario is JSON");
    let config = sc["config"].to_string();
    let events: String = sc["events"]
        .as_array()
        .expect("events is a list")
        .iter()
        // As check-scenarios does: every event is written as its JSON text, so a string
        // event is a JSON string (a record that is not an object).
        .map(|e| format!("{e}\n"))
        .collect();
    let until = sc["until"].as_str();
    let out = fold(&config, &events, until);
    let mut problems = Vec::new();
    if out.status.code() != Some(0) {
        return vec![format!(
            "exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        )];
    }
    let again = fold(&config, &events, until);
    if again.stdout != out.stdout {
        problems.push("two runs printed different output".into());
    }
    let lines = lines(&out);
    let by = |k: &str| lines.iter().filter(|l| l["kind"] == k).collect::<Vec<_>>();
    let expect = &sc["expect"];
    if let Some(want) = expect["transactions"].as_array() {
        seq(want, &by("transaction"), "transactions", &mut problems);
    }
    if let Some(want) = expect["rejected"].as_array() {
        seq(want, &by("rejected"), "rejected", &mut problems);
    }
    if let Some(types) = expect["eventsOfType"].as_object() {
        for (t, want) in types {
            let got: Vec<&Value> = lines
                .iter()
                .filter(|l| l["kind"] == "event" && l["type"] == t.as_str())
                .collect();
            seq(
                want.as_array().expect("list"),
                &got,
                &format!("events {t}"),
                &mut problems,
            );
        }
    }
    if let Some(want) = expect["accounts"].as_array() {
        let accounts = by("account");
        for w in want {
            let m: Vec<&&Value> = accounts
                .iter()
                .filter(|a| {
                    a["customer"] == w["customer"]
                        && (w.get("program").is_none() || a["program"] == w["program"])
                })
                .collect();
            if m.len() != 1 {
                problems.push(format!(
                    "account {} / {}: found {}",
                    w["customer"],
                    w["program"],
                    m.len()
                ));
            } else {
                subset(
                    w,
                    m[0],
                    &format!("account {}", w["customer"]),
                    &mut problems,
                );
            }
        }
    }
    problems
}

#[test]
fn acceptance_scenarios_hold() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/scenarios exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "expected the acceptance scenarios in {}",
        dir.display()
    );
    let mut failures = Vec::new();
    for f in &files {
        let problems = run_scenario(f);
        if !problems.is_empty() {
            failures.push(format!(
                "FAIL {}:\n    {}",
                f.file_name().unwrap().to_string_lossy(),
                problems.join("\n    ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} scenarios failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn the_matcher_catches_a_mismatch() {
    // The runner must be able to fail: a wrong expectation is reported.
    let mut problems = Vec::new();
    subset(
        &serde_json::json!({"points": 900}),
        &serde_json::json!({"points": 600}),
        "t",
        &mut problems,
    );
    assert_eq!(problems.len(), 1);
    let mut problems = Vec::new();
    subset(
        &serde_json::json!({"x": 1.5}),
        &serde_json::json!({"x": 1.50}),
        "t",
        &mut problems,
    );
    assert!(problems.is_empty());
}
