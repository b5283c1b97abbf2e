//! `loyalty demo`: the sample program and events shipped in the repo, folded and summarised
//! for a person.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use loyalty_core::output::{Output, TxKind};
use loyalty_core::{parse_config, Engine};

const PROGRAMS: &str = include_str!("../../../examples/programs.json");
const EVENTS: &str = include_str!("../../../examples/events.jsonl");

pub fn run() -> Result<()> {
    let config = parse_config(PROGRAMS).context("the shipped sample config does not validate")?;
    let mut engine = Engine::new(&config);
    let mut out = Vec::new();
    let mut records = 0usize;
    for line in EVENTS.lines().filter(|l| !l.trim().is_empty()) {
        records += 1;
        engine.apply(line.as_bytes(), &mut out);
    }
    let mut awarded: i128 = 0;
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    let mut events: BTreeMap<&str, usize> = BTreeMap::new();
    let mut rejected: BTreeMap<&str, usize> = BTreeMap::new();
    for o in &out {
        match o {
            Output::Transaction(t) => {
                if t.kind == TxKind::Award {
                    awarded += i128::from(t.points);
                }
                *by_kind.entry(kind_name(t.kind)).or_default() += 1;
            }
            Output::Event(e) => *events.entry(e.kind).or_default() += 1,
            Output::Rejected(r) => *rejected.entry(r.reason.as_str()).or_default() += 1,
        }
    }
    println!("Loyalty engine demo: the sample programs in examples/programs.json");
    println!("folded over the {records} records of examples/events.jsonl\n");
    println!("Ledger transactions:");
    for (k, n) in &by_kind {
        println!("  {k:<14} {n:>6}");
    }
    println!("  points awarded {awarded:>6}\n");
    println!("Outbound events:");
    for (k, n) in &events {
        println!("  {k:<32} {n:>6}");
    }
    println!("\nRejected records (each with a machine-readable reason):");
    for (k, n) in &rejected {
        println!("  {k:<20} {n:>6}");
    }
    println!("\nAccounts:");
    println!(
        "  {:<14} {:<10} {:>8}  {:<8}",
        "program", "customer", "balance", "tier"
    );
    for a in engine.accounts() {
        let tier = a.tier.as_ref().map_or("-".to_string(), |t| t.name.clone());
        println!(
            "  {:<14} {:<10} {:>8}  {:<8}",
            a.program, a.customer, a.balance, tier
        );
    }
    println!("\nThe same fold as JSON lines:");
    println!("  loyalty fold --config examples/programs.json --events examples/events.jsonl");
    Ok(())
}

fn kind_name(k: TxKind) -> &'static str {
    match k {
        TxKind::Award => "award",
        TxKind::Adjustment => "adjustment",
        TxKind::Reversal => "reversal",
        TxKind::Expiry => "expiry",
        TxKind::Redemption => "redemption",
        TxKind::TransferIn => "transfer_in",
        TxKind::TransferOut => "transfer_out",
    }
}
