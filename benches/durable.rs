//! Criterion benchmarks of the durable path: log records folded into RocksDB with their
//! offsets, ledger lines and outbox entries, one synced write batch per batch of records,
//! each written while the next folds as `loyalty run` does (and one batch at a time, as an
//! instance of a group does); beside its physical reference, RocksDB itself writing the same
//! synced batches (recorded from a fold: the same keys and bytes in the same groups), and
//! the earlier, looser one: as many keys and bytes as the fold's state holds, under
//! sequential keys.
//!
//! Run with `cargo bench --bench durable`. Throughput is in records per second.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use loyalty_store::Store;
use loyalty_stream::folder::Folder;
use loyalty_stream::logrec::{Meta, Source};
use loyalty_stream::Settings;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod traffic;

/// The binary's allocator options: the durable path measured as `loyalty run` and `replay`
/// run it.
mod allocator;

const EXAMPLE: &str = include_str!("../deploy/programs.example.json");
const RECORDS: u64 = 20_000;
const BATCH: u64 = 2_000;

/// A fresh directory under the temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "loyalty-bench-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The log as the service folds it: the program first, then the traffic.
fn log() -> Vec<String> {
    let program: serde_json::Value = serde_json::from_str(EXAMPLE).unwrap();
    let update = serde_json::json!({"id": "cfg_0", "type": "loyalty.program.updated",
        "created": "2026-01-01T00:00:00Z", "data": program["programs"][0]});
    std::iter::once(update.to_string())
        .chain(traffic::traffic(RECORDS, 2_000, EXAMPLE))
        .collect()
}

fn bench(c: &mut Criterion) {
    allocator::tune();
    let records = log();
    let mut settings = Settings::new("unused:9092");
    settings.signing_secret = b"bench".to_vec();
    let mut g = c.benchmark_group("durable");
    g.sample_size(10);
    g.throughput(Throughput::Elements(records.len() as u64));

    // What one fold writes, measured once: the batches themselves (for the reference that
    // writes them again), and the keys and bytes of the state they leave (for the older
    // reference, which writes as many keys and bytes under sequential keys).
    let (batches, puts, bytes) = {
        let dir = TempDir::new();
        let store = Arc::new(Store::open(&dir.0).unwrap());
        store.record_batches();
        fold_commit(&store, &settings, &records, false);
        let batches = store.recorded_batches();
        let mut puts = 0u64;
        let mut bytes = 0u64;
        let mut state = std::collections::HashMap::new();
        store
            .for_each_entry(|k, v| {
                puts += 1;
                bytes += (k.len() + v.len()) as u64;
                state.insert(k.to_vec(), v.to_vec());
            })
            .unwrap();
        // The recorded batches are what the store wrote: written again into RocksDB alone,
        // they leave the store's keys and values (but for the few written apart from the
        // batches, when the store is opened).
        let again = TempDir::new();
        let db = rocksdb::DB::open_default(&again.0).unwrap();
        for b in &batches {
            db.write(rocksdb::WriteBatch::from_data(b)).unwrap();
        }
        let mut same = 0u64;
        for kv in db.iterator(rocksdb::IteratorMode::Start) {
            let (k, v) = kv.unwrap();
            assert_eq!(
                state.get(&*k).map(Vec::as_slice),
                Some(&*v),
                "a recorded batch wrote what the store does not hold"
            );
            same += 1;
        }
        assert!(
            same + 16 >= puts,
            "the recorded batches miss keys: {same} of {puts}"
        );
        (batches, puts, bytes)
    };
    let writes: usize = batches
        .iter()
        .map(|b| rocksdb::WriteBatch::from_data(b).len())
        .sum();
    eprintln!(
        "durable: {} records write {} batches of {writes} writes, {} bytes in all; \
         the state they leave holds {puts} keys, {bytes} bytes",
        records.len(),
        batches.len(),
        batches.iter().map(Vec::len).sum::<usize>(),
    );

    // The reference the target names: RocksDB alone (its default options) writing the very
    // batches the fold wrote, synced, one after the other.
    // (The batches are made from their bytes before the clock starts: RocksDB alone would
    // not copy them.)
    g.bench_function("reference_rocksdb_same_batches", |b| {
        b.iter_batched(
            || {
                batches
                    .iter()
                    .map(|b| rocksdb::WriteBatch::from_data(b))
                    .collect::<Vec<_>>()
            },
            |made| {
                let dir = TempDir::new();
                let db = rocksdb::DB::open_default(&dir.0).unwrap();
                let mut opts = rocksdb::WriteOptions::default();
                opts.set_sync(true);
                let n = made.len();
                for batch in made {
                    db.write_opt(batch, &opts).unwrap();
                }
                black_box(n)
            },
            criterion::BatchSize::PerIteration,
        )
    });
    // The earlier reference: as many batches, keys and bytes as the state the fold leaves
    // holds, under sequential 8-byte keys (which a memtable appends), with one value size.
    g.bench_function("reference_rocksdb_synced_batches", |b| {
        b.iter(|| {
            let dir = TempDir::new();
            let db = rocksdb::DB::open_default(&dir.0).unwrap();
            let mut opts = rocksdb::WriteOptions::default();
            opts.set_sync(true);
            let batches = (records.len() as u64).div_ceil(BATCH);
            let per_batch = puts.div_ceil(batches);
            let value = vec![b'x'; (bytes / puts.max(1)) as usize];
            let mut k = 0u64;
            for _ in 0..batches {
                let mut wb = rocksdb::WriteBatch::default();
                for _ in 0..per_batch {
                    wb.put(k.to_be_bytes(), &value);
                    k += 1;
                }
                db.write_opt(wb, &opts).unwrap();
            }
            black_box(k)
        })
    });

    g.bench_function("fold_commit_20k_batches_of_2000", |b| {
        b.iter(|| {
            let dir = TempDir::new();
            let store = Arc::new(Store::open(&dir.0).unwrap());
            black_box(fold_commit(&store, &settings, &records, false))
        })
    });
    // As `loyalty run` and replay commit: each batch written while the next folds.
    g.bench_function("fold_commit_pipelined_20k_batches_of_2000", |b| {
        b.iter(|| {
            let dir = TempDir::new();
            let store = Arc::new(Store::open(&dir.0).unwrap());
            black_box(fold_commit(&store, &settings, &records, true))
        })
    });
    g.finish();
}

/// Folds `records` into `store`, committing every `BATCH` records one batch at a time, as
/// an instance of a group does (`pipelined`: as `loyalty run` and `loyalty replay` do,
/// each batch written while the next folds).
/// Returns the records of the last batch.
fn fold_commit(
    store: &Arc<Store>,
    settings: &Settings,
    records: &[String],
    pipelined: bool,
) -> usize {
    let mut f = Folder::open(store, true).unwrap();
    for (i, r) in records.iter().enumerate() {
        f.fold(store, settings, 0, i as i64, &meta(i), r.as_bytes())
            .unwrap();
        if f.pending as u64 >= BATCH {
            if pipelined {
                f.commit_pipelined(store).unwrap();
            } else {
                f.commit(store).unwrap();
            }
        }
    }
    f.commit(store).unwrap()
}

/// The headers of the `i`-th log record: its source.
fn meta(i: usize) -> Meta {
    Meta {
        source: Some(Source {
            topic: "payment.completed".into(),
            partition: 0,
            offset: i as i64,
        }),
        broadcast: false,
        content_type: None,
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
