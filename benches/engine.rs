//! Criterion benchmarks of the pure engine: records applied per second on one core, and the
//! whole fold (parse, apply, print) over an in-memory log.
//!
//! Run with `cargo bench --bench engine` (or `just bench`). Throughput is reported in
//! records per second.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use loyalty_core::fold::fold_to_string;
use loyalty_core::{parse_config, Engine};

const CONFIG: &str = include_str!("../deploy/programs.example.json");

/// A synthetic log: `n` payments over `customers` customers, one a minute, with a few
/// custom events; deterministic (no randomness: a linear congruential sequence).
fn log(n: usize, customers: u64) -> Vec<String> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let start = 1_767_225_600i64; // 2026-01-01
    (0..n)
        .map(|i| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let customer = (x >> 33) % customers;
            let amount = 500 + (x >> 20) % 20_000;
            let created = loyalty_core::time::Timestamp(start + i as i64 * 60).to_string();
            format!(
                r#"{{"id":"evt_{i}","type":"payment.completed","created":"{created}","data":{{"id":"pay_{i}","customer":"cus_{customer}","amount":{amount},"currency":"EUR","metadata":{{"channel":"pos"}}}}}}"#
            )
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let config = parse_config(CONFIG).expect("example config validates");
    let records = log(20_000, 2_000);
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(records.len() as u64));
    g.sample_size(10);
    g.bench_function("apply_20k_payments", |b| {
        b.iter(|| {
            let mut engine = Engine::new(&config);
            let mut out = Vec::with_capacity(16);
            for r in &records {
                engine.apply(r.as_bytes(), &mut out);
                out.clear();
            }
            black_box(engine.state().accounts.len())
        })
    });
    let text = records.join("\n");
    g.bench_function("fold_20k_payments_to_json_lines", |b| {
        b.iter(|| {
            let mut engine = Engine::new(&config);
            black_box(fold_to_string(&mut engine, text.as_bytes(), None).map(|s| s.len()))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
