//! The benchmarks' traffic: `loyalty loadgen`'s generator, in memory.

use loyalty_cli::loadgen::{LoadArgs, Traffic};

/// `n` records of `customers` customers, spread over a year from 2026-01-01.
pub fn traffic(n: u64, customers: u64, config: &str) -> Vec<String> {
    let dir = std::env::temp_dir().join(format!("loyalty-bench-cfg-{}", std::process::id()));
    std::fs::write(&dir, config).expect("write the config");
    let args = LoadArgs {
        out: None,
        brokers: None,
        topic: None,
        events: n,
        customers,
        customer_offset: 0,
        seed: 1,
        id_prefix: "evt".into(),
        refunds_per_mille: 30,
        commands_per_mille: 20,
        config: Some(dir.clone()),
        program_update_every: 0,
        reward: "rwd_free_coffee".into(),
        rate: 0,
        wait_topic: None,
        wait_count: None,
    };
    let t = Traffic::new(&args, 1_767_225_600, 365 * 86_400).expect("traffic");
    let _ = std::fs::remove_file(&dir);
    t.take(n).map(|g| g.value).collect()
}
