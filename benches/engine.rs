//! Criterion benchmarks of the pure engine: records applied per second on one core, and the
//! whole fold (parse, apply, print) over an in-memory log, beside their physical reference:
//! parsing the same JSON lines into `serde_json::Value`s and nothing else.
//!
//! Run with `cargo bench --bench engine` (or `just bench`). Throughput is in records per
//! second. The traffic is `loyalty loadgen`'s (payments of skewed customers, refunds,
//! adjustments, redemptions) over a year; see BENCHMARKS.md for the figures.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use loyalty_core::fold::fold_to_string;
use loyalty_core::{parse_config, Engine};

/// The binary's allocator, so that the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod traffic;
use traffic::traffic;

/// Tiers, lots with expiry, a monthly cap, campaigns, rewards, stamp cards.
const EXAMPLE: &str = include_str!("../deploy/programs.example.json");
/// One earning rule and nothing else: the floor of the engine's cost per record.
const MINIMAL: &str = include_str!("bench-config.json");

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine");
    g.sample_size(10);
    for (name, text) in [("example", EXAMPLE), ("minimal", MINIMAL)] {
        let config = parse_config(text).expect("config validates");
        let records = traffic(20_000, 2_000, text);
        g.throughput(Throughput::Elements(records.len() as u64));
        g.bench_function(format!("reference_json_parse_20k/{name}"), |b| {
            b.iter(|| {
                let mut n = 0usize;
                for r in &records {
                    let v: serde_json::Value = serde_json::from_slice(r.as_bytes()).unwrap();
                    n += v.as_object().map_or(0, |o| o.len());
                }
                black_box(n)
            })
        });
        g.bench_function(format!("apply_20k/{name}"), |b| {
            b.iter(|| {
                let mut engine = Engine::new(&config);
                let mut out = Vec::with_capacity(16);
                for r in &records {
                    engine.apply(r.as_bytes(), &mut out);
                    out.clear();
                }
                // What the streaming service does once a batch.
                black_box(engine.take_changes().accounts.len())
            })
        });
        let text = records.join("\n");
        g.bench_function(format!("fold_20k_to_json_lines/{name}"), |b| {
            b.iter(|| {
                let mut engine = Engine::new(&config);
                black_box(fold_to_string(&mut engine, text.as_bytes(), None).map(|s| s.len()))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
