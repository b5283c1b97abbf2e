//! The ledger's hash chain (SPEC section 13), checked by the auditor's script
//! (docs/verify-chain.py, Python's hashlib: nothing of the engine's): every chain of a fold
//! of random logs verifies, and any single changed byte of a transaction line breaks it;
//! `loyalty verify` names a line changed behind the store's back.

use std::io::Write;
use std::process::{Command, Stdio};

use loyalty_core::fold::fold_to_string;
use loyalty_core::Engine;
use proptest::prelude::*;

use crate::support::root;

/// Runs the auditor's script on `text`: whether it says the chains are sound.
fn script_says_sound(text: &str) -> (bool, String) {
    let mut child = Command::new("python3")
        .arg(root().join("docs/verify-chain.py"))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut stdin = child.stdin.take().unwrap();
    match stdin.write_all(text.as_bytes()) {
        Ok(()) => {}
        // The script may stop reading at the first break it finds (a line that is no
        // longer JSON): what it printed and its exit status say so below.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => panic!("writing to the script: {e}"),
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success() && said.starts_with("sound:"), said)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn every_chain_verifies_and_any_changed_byte_breaks_it(
        (_calendar, _warn, log) in crate::working_set::random::log(),
        pick in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        to in 1u8..=255,
    ) {
        let folded = fold_to_string(&mut Engine::empty(), log.join("\n").as_bytes(), None).unwrap();
        let (sound, said) = script_says_sound(&folded);
        prop_assert!(sound, "{said}");
        let lines: Vec<&str> = folded.lines().collect();
        let txs: Vec<usize> = (0..lines.len()).filter(|i| lines[*i].starts_with(r#"{"kind":"transaction""#)).collect();
        prop_assume!(!txs.is_empty());
        // One byte of one transaction line, changed to another (a newline would split the
        // line; any other byte is fair).
        let i = txs[pick.index(txs.len())];
        let mut bytes = lines[i].as_bytes().to_vec();
        let k = at.index(bytes.len());
        let new = bytes[k].wrapping_add(to);
        prop_assume!(new != b'\n' && new != b'\r');
        bytes[k] = new;
        let mut changed: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        changed[i] = String::from_utf8_lossy(&bytes).into_owned();
        prop_assume!(changed[i].as_bytes() != lines[i].as_bytes());
        let (sound, said) = script_says_sound(&(changed.join("\n") + "\n"));
        prop_assert!(!sound, "a changed byte at {k} of line {i} went unnoticed: {said}");
    }
}

/// Reordering two transactions of one account, or dropping one, breaks the chain too.
#[test]
fn a_dropped_or_reordered_transaction_breaks_the_chain() {
    let text = std::fs::read_to_string(root().join("tests/golden/examples.jsonl")).unwrap();
    assert!(script_says_sound(&text).0);
    let lines: Vec<&str> = text.lines().collect();
    let first = lines
        .iter()
        .position(|l| l.starts_with(r#"{"kind":"transaction""#))
        .unwrap();
    let mut dropped = lines.clone();
    dropped.remove(first);
    assert!(!script_says_sound(&(dropped.join("\n") + "\n")).0);
    let account =
        |l: &str| serde_json::from_str::<serde_json::Value>(l).unwrap()["account"].clone();
    let second = (first + 1..lines.len())
        .find(|i| {
            lines[*i].starts_with(r#"{"kind":"transaction""#)
                && account(lines[*i]) == account(lines[first])
        })
        .unwrap();
    let mut swapped = lines.clone();
    swapped.swap(first, second);
    assert!(!script_says_sound(&(swapped.join("\n") + "\n")).0);
}
