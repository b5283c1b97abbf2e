#!/usr/bin/env bash
# The whole path, Kafka in, RocksDB, Kafka out: events per second, on Apache Kafka (BROKER=tansu
# for tansu; benches/broker.sh).
#
#   bash benches/whole_path.sh [EVENTS] [CUSTOMERS] [RATE] [CONFIG]
#
# Starts the broker (on a free loopback port) and the engine, produces EVENTS
# records of CUSTOMERS customers with `loyalty loadgen` (payments, refunds, adjustments,
# redemptions), as fast as the broker takes them or at RATE records a second, and measures
# from the first record produced until the last `loyalty.points.earned` is read back (the
# loadgen knows how many by folding the same traffic with CONFIG, default
# deploy/programs.example.json), and the latency from produce to readable. Cleans up after
# itself. At full speed (RATE 0), then, with the engine stopped, the broker alone over the
# same hops (benches/broker_hops.rs): the physical reference.
set -euo pipefail
cd "$(dirname "$0")/.."
events="${1:-100000}"
customers="${2:-20000}"
rate="${3:-0}"
config="${4:-deploy/programs.example.json}"
source benches/broker.sh
mport=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
LOYALTY_LOG=info "$bin" --log-format json run --brokers "127.0.0.1:$port" --config "$config" --state "$work/state" \
  --signing-secret bench --batch-size 5000 --metrics-addr "127.0.0.1:$mport" > "$work/engine.log" 2>&1 &
engine_pid=$!
# Wait for the engine to create its topics.
for _ in $(seq 1 300); do
  grep -q "running" "$work/engine.log" 2>/dev/null && break
  sleep 0.1
done
# Then until its input consumer has had a first answer from every input partition (the
# lag metric exists from then on): the consumer's start-up (metadata, leaders of topics
# just created) is not what the latency measures.
python3 - "$mport" "$(grep -o '"inputs":[0-9]*' "$work/engine.log" | head -1 | cut -d: -f2)" <<'PY'
import sys, time, urllib.request
port, inputs = sys.argv[1], int(sys.argv[2] or 0)
if not inputs:
    print("whole_path: the engine's log does not say how many inputs it reads; not waiting for them", file=sys.stderr)
deadline = time.time() + 30
while True:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    lags = [l for l in text.splitlines() if l.startswith("loyalty_consumer_lag{") and 'topic="loyalty.log"' not in l]
    if len(lags) >= inputs or time.time() > deadline:
        break
    time.sleep(0.05)
PY
# A warm-up on other customers (not measured): the first second of a new engine and of
# new topics (connections, metadata, fetch sessions, RocksDB's first files) is not the
# steady state the latency target is about. Its figures are printed, marked as warm-up.
warm=$(( events / 5 < 5000 ? events / 5 : 5000 ))
if [ "$warm" -gt 0 ]; then
  "$bin" loadgen --brokers "127.0.0.1:$port" --events "$warm" --customers "$customers" \
    --customer-offset "$customers" --rate "$rate" --config "$config" --id-prefix "warm_$$" \
    --wait-topic loyalty.points.earned 2>&1 | sed 's/^/warm-up: /' | grep -E "^warm-up: (whole path|latency)" || true
fi
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
          f"{int(pn)} messages published, {1000 * ps / max(pn, 1):.1f} ms from send to acknowledgement each")
PY
# The physical reference of a full-speed run, with the engine stopped: the broker alone
# carrying as many records over the same hops (produce, two relays, read), on the same
# machine. (A paced run measures latency; the broker's top speed says nothing about it.)
if [ "$rate" = "0" ]; then
  kill "$engine_pid" 2>/dev/null || true
  wait "$engine_pid" 2>/dev/null || true
  engine_pid=
  HOPS_BROKERS="$brokers" HOPS_RECORDS="$events" cargo bench --quiet --bench broker_hops
fi
