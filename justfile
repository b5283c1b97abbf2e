# Everyday recipes. Everything runs under the release profile, so the tests, the demo and
# the benchmarks share one build of the dependencies.

default: test

# Build the `loyalty` binary (target/release/loyalty).
build:
    cargo build --release

# The whole test suite (what CI runs, minus the public scenarios of ../shared).
test:
    bash scripts/test

# Fold a config and an events file: just fold examples/programs.json examples/events.jsonl
fold config="examples/programs.json" events="examples/events.jsonl":
    cargo run --release --quiet -- fold --config {{config}} --events {{events}}

# The demo: the sample program and events, summarised.
demo:
    bash scripts/demo

# Criterion benchmarks: the pure engine, the fold, the durable path (BENCHMARKS.md).
bench:
    cargo bench --bench engine --bench durable

# Kafka in, RocksDB, Kafka out on tansu: rate at full speed, then latency at 10,000/s.
bench-whole-path:
    bash benches/whole_path.sh 100000 20000
    bash benches/whole_path.sh 30000 20000 10000

# `loyalty replay` of a log of RECORDS records into a fresh state.
bench-replay records="1000000":
    bash benches/replay.sh {{records}}

# Formatting, lints and the API docs, warnings denied.
lint:
    cargo fmt --all -- --check
    cargo clippy --release --workspace --all-targets -- -D warnings
    RUSTDOCFLAGS="-D warnings" cargo doc --release --workspace --no-deps

# The public acceptance scenarios of ../shared, when it is there.
scenarios:
    cargo build --release
    ../shared/tools/check-scenarios --bin target/release/loyalty ../shared/scenarios/
