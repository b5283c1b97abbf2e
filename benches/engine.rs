//! Criterion benchmarks of the pure engine: records applied per second on one core, and the
//! whole fold (parse, apply, print) over an in-memory log, beside their physical reference:
//! parsing the same JSON lines into `serde_json::Value`s and nothing else.
//!
//! Run with `cargo bench --bench engine` (or `just bench`). Throughput is in records per
//! second. `parse_20k` is the engine's own envelope parsing alone (typed records, no rule);
//! before the timings, each config prints the allocations a record of parsing and of
//! applying. The traffic is `loyalty loadgen`'s (payments of skewed customers, refunds,
//! adjustments, redemptions) over a year; see BENCHMARKS.md for the figures.
//! `floor_sha256_20k` is the SHA-256 alone that the SPEC asks of the same records (each
//! transaction's chain hash and the minted ids): what no representation can go under.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use loyalty_core::fold::fold_to_string;
use loyalty_core::{parse_config, Engine};

/// The binary's allocator, so that the figures are the binary's; it counts allocations
/// while [`COUNTING`] is on (a relaxed load otherwise: the timings are the binary's).
#[global_allocator]
static GLOBAL: Counting = Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

struct Counting;

// A global allocator is an unsafe trait; this one only counts and hands every call to
// mimalloc unchanged.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        }
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

/// The allocations (count, bytes) `f` makes, each divided by `per`.
fn allocations(per: usize, f: impl FnOnce()) -> (f64, f64) {
    ALLOCS.store(0, Ordering::Relaxed);
    BYTES.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    f();
    COUNTING.store(false, Ordering::Relaxed);
    let per = per.max(1) as f64;
    (
        ALLOCS.load(Ordering::Relaxed) as f64 / per,
        BYTES.load(Ordering::Relaxed) as f64 / per,
    )
}

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
        // Allocations a record, apart from time (steadier than timings on a shared machine):
        // parsing the envelope alone, then applying it (parse included).
        let (pa, pb) = allocations(records.len(), || {
            for r in &records {
                black_box(loyalty_core::envelope::parse(r.as_bytes()).is_ok());
            }
        });
        let (aa, ab) = allocations(records.len(), || {
            let mut engine = Engine::new(&config);
            let mut out = Vec::with_capacity(16);
            for r in &records {
                engine.apply(r.as_bytes(), &mut out);
                out.clear();
            }
            black_box(engine.take_changes().accounts.len());
        });
        println!(
            "allocations a record, {name}: parse {pa:.1} ({pb:.0} bytes), apply {aa:.1} ({ab:.0} bytes)"
        );
        g.bench_function(format!("parse_20k/{name}"), |b| {
            b.iter(|| {
                let mut n = 0usize;
                for r in &records {
                    n += usize::from(loyalty_core::envelope::parse(r.as_bytes()).is_ok());
                }
                black_box(n)
            })
        });
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
        // The SHA-256 the SPEC asks of these records, and nothing else: each transaction's
        // chain hash (the previous hash's hex, then its line up to the hash) and the minted
        // ids (a transaction's, an event's: a block each). What the engine cannot go under.
        let hashed: Vec<Vec<u8>> = {
            let mut engine = Engine::new(&config);
            let mut out = Vec::new();
            let mut hashed = Vec::new();
            for r in &records {
                engine.apply(r.as_bytes(), &mut out);
                for o in out.drain(..) {
                    match o {
                        loyalty_core::output::Output::Transaction(t) => {
                            let mut line = vec![b'0'; 64];
                            line.extend_from_slice(&t.unhashed_line());
                            hashed.push(line);
                            hashed.push(format!("transaction\x1f{}\x1f0", t.source).into_bytes());
                        }
                        loyalty_core::output::Output::Event(e) => {
                            hashed.push(format!("event\x1f{}\x1f0", e.id).into_bytes());
                        }
                        _ => {}
                    }
                }
            }
            hashed
        };
        println!(
            "SHA-256 a record, {name}: {:.2} hashes, {:.0} bytes",
            hashed.len() as f64 / records.len() as f64,
            hashed.iter().map(Vec::len).sum::<usize>() as f64 / records.len() as f64
        );
        g.bench_function(format!("floor_sha256_20k/{name}"), |b| {
            b.iter(|| {
                use sha2::{Digest, Sha256};
                let mut x = 0u8;
                for h in &hashed {
                    x ^= Sha256::digest(h)[0];
                }
                black_box(x)
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
