//! Golden logs: every acceptance scenario of `tests/scenarios/`, the example log, and a
//! mixed synthetic log, folded and compared byte for byte with the output the engine gave
//! before the core was redesigned (`tests/golden/`). The scenario tests check what SPEC.md
//! says of each case; this test checks that nothing else moved either: every id, key order,
//! event, account line and rejection detail. The messages partitions hand each other are
//! compared the same way, with `tests/golden/partitions.txt`, by
//! `partitions::the_partitions_ledgers_and_messages_are_the_golden_bytes` (blessed after the
//! redesign: it keeps them from moving from now on).
//!
//! `GOLDEN_BLESS=1 cargo test --release golden` rewrites the files; do so only for a change
//! of output that is meant, and say why in the commit.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::support::{bin, fold, TempDir};

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn bless() -> bool {
    std::env::var_os("GOLDEN_BLESS").is_some()
}

/// Compares `got` with the golden file `name`, line by line, naming the first difference.
pub(crate) fn check(name: &Path, got: &str, problems: &mut Vec<String>) {
    if bless() {
        std::fs::create_dir_all(name.parent().unwrap()).unwrap();
        std::fs::write(name, got).unwrap();
        return;
    }
    let want = match std::fs::read_to_string(name) {
        Ok(w) => w,
        Err(e) => {
            problems.push(format!("{}: {e}", name.display()));
            return;
        }
    };
    if want == got {
        return;
    }
    let (w, g): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    let at = w.iter().zip(&g).position(|(a, b)| a != b);
    problems.push(match at {
        Some(i) => format!(
            "{} line {}:\n  want {}\n  got  {}",
            name.display(),
            i + 1,
            w[i],
            g[i]
        ),
        None => format!(
            "{}: {} lines wanted, {} given",
            name.display(),
            w.len(),
            g.len()
        ),
    });
}

#[test]
fn every_scenario_folds_to_the_same_bytes() {
    let dir = root().join("tests/scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 60,
        "scenarios not found in {}",
        dir.display()
    );
    let mut problems = Vec::new();
    for path in &files {
        let sc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let config = sc["config"].to_string();
        let events: String = sc["events"]
            .as_array()
            .unwrap()
            .iter()
            // As check-scenarios does: every event written as its JSON text.
            .map(|e| format!("{e}\n"))
            .collect();
        let out = fold(&config, &events, sc["until"].as_str());
        let mut got = String::from_utf8(out.stdout).unwrap();
        got.push_str(&format!("# exit {:?}\n", out.status.code()));
        let stem = path.file_stem().unwrap().to_string_lossy();
        check(
            &root().join(format!("tests/golden/scenarios/{stem}.jsonl")),
            &got,
            &mut problems,
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_example_log_folds_to_the_same_bytes() {
    let out = std::process::Command::new(bin())
        .arg("fold")
        .arg("--config")
        .arg(root().join("examples/programs.json"))
        .arg("--events")
        .arg(root().join("examples/events.jsonl"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut problems = Vec::new();
    check(
        &root().join("tests/golden/examples.jsonl"),
        &String::from_utf8(out.stdout).unwrap(),
        &mut problems,
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// 3,000 records of mixed traffic (payments, refunds, adjustments, redemptions, program
/// updates, unknown members) over the example programs. The log is kept whole; of the
/// 2.3 MB it folds to, only the digest is kept.
#[test]
fn a_mixed_log_folds_to_the_same_digest() {
    let log = root().join("tests/golden/mixed.jsonl");
    let dir = TempDir::new("golden");
    if bless() {
        let st = std::process::Command::new(bin())
            .args(["loadgen", "--events", "3000", "--customers", "300"])
            .args(["--program-update-every", "1000", "--seed", "7"])
            .arg("--config")
            .arg(root().join("examples/programs.json"))
            .arg("--out")
            .arg(&log)
            .status()
            .unwrap();
        assert!(st.success());
    }
    let out = std::process::Command::new(bin())
        .arg("fold")
        .arg("--config")
        .arg(root().join("examples/programs.json"))
        .arg("--events")
        .arg(&log)
        .output()
        .unwrap();
    assert!(out.status.success());
    let digest: String = Sha256::digest(&out.stdout)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let got = format!(
        "{digest}  {} lines\n",
        out.stdout.split(|&b| b == b'\n').count() - 1
    );
    let want_path = root().join("tests/golden/mixed.sha256");
    let mut problems = Vec::new();
    check(&want_path, &got, &mut problems);
    if !problems.is_empty() {
        let kept = dir.write("mixed.out", &String::from_utf8_lossy(&out.stdout));
        let keep = std::env::temp_dir().join("loyalty-golden-mixed.out");
        let _ = std::fs::copy(kept, &keep);
        panic!(
            "{}\nthe fold's output is in {}: fold the same log with the version before \
             the change and diff the two",
            problems.join("\n"),
            keep.display()
        );
    }
}
