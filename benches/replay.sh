#!/usr/bin/env bash
# `loyalty replay` of a long log into a fresh state: records per second.
#
#   bash benches/replay.sh [RECORDS] [CUSTOMERS] [CONFIG]
#
# Starts the broker (Apache Kafka, or tansu with BROKER=tansu; on a free loopback port), writes a log straight into the log
# topic with `loyalty loadgen --topic` (the program first, then RECORDS records of the
# loadgen's traffic), reads it once with `loyalty log` as the physical reference (the
# broker's and client's raw speed), then times `loyalty replay` into a new directory and
# checks the result with `loyalty verify`. Cleans up after itself.
set -euo pipefail
cd "$(dirname "$0")/.."
records="${1:-1000000}"
customers="${2:-200000}"
config="${3:-deploy/programs.example.json}"
source benches/broker.sh
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
