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

# Criterion benchmarks of the engine.
bench:
    cargo bench --bench engine

# Formatting and lints, warnings denied.
lint:
    cargo fmt --all -- --check
    cargo clippy --release --all-targets -- -D warnings

# The public acceptance scenarios of ../shared, when it is there.
scenarios:
    cargo build --release
    ../shared/tools/check-scenarios --bin target/release/loyalty ../shared/scenarios/
