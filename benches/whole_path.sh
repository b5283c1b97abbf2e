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
