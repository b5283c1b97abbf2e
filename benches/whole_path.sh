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
source benches/tansu.sh
mport=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
LOYALTY_LOG=info "$bin" run --brokers "127.0.0.1:$port" --config "$config" --state "$work/state" \
  --signing-secret bench --batch-size 5000 --metrics-addr "127.0.0.1:$mport" > "$work/engine.log" 2>&1 &
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
# The engine's own view of the run: its batches, and the time each stage took per round.
python3 - "$mport" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
v = {}
for line in text.splitlines():
    if line.startswith("loyalty_") and " " in line and "{" not in line:
        name, value = line.rsplit(" ", 1)
        v[name] = float(value)
n, s = v.get("loyalty_batch_size_count", 0), v.get("loyalty_batch_size_sum", 0)
fs = v.get("loyalty_batch_duration_seconds_sum", 0)
pn, ps = v.get("loyalty_publish_duration_seconds_count", 0), v.get("loyalty_publish_duration_seconds_sum", 0)
if n:
    print(f"engine: {int(n)} folded batches, {s / n:.0f} records and {1000 * fs / n:.1f} ms (fold and commit) each; "
          f"{int(pn)} publish rounds, {1000 * ps / max(pn, 1):.1f} ms each")
PY
