#!/usr/bin/env bash
# The HTTP API under load (issue 17), on Apache Kafka (BROKER=tansu for tansu):
#
#   bash benches/api.sh [ACCOUNTS] [SECONDS]
#
# CMD_RATE (default 500) and BG_RATE (default 10000) set the commands' and the background
# events' rates of step 3; READS=0 skips step 2.
#
# 1. Bulk-makes ACCOUNTS (default 1,000,000) accounts through the log: one
#    `loyalty.account.enroll` command each, produced to loyalty.commands by kafka-python and
#    folded by the engine (nothing is written to RocksDB but by the engine), plus 12
#    payments for each of 2,000 "busy" customers, so that their ledgers hold 10-item pages.
# 2. Reads, with wrk on the same machine (2 threads, 32 connections, SECONDS each):
#    `GET /v1/accounts/{id}` of random accounts, and a 10-item ledger page of random busy
#    accounts; the physical reference of the same run is wrk against `/healthz` of the same
#    server (the HTTP stack and loopback alone), so each read is also given as a ratio.
# 3. Commands: 500 adjustments a second (open loop: latency from the time each was due,
#    so a slow answer does not hide the ones queued behind it) while `loyalty loadgen`
#    produces 10,000 events a second; p50/p99 from request to answer, and how many were
#    answered 200 (not 202).
set -euo pipefail
cd "$(dirname "$0")/.."
accounts="${1:-1000000}"
secs="${2:-20}"
source benches/broker.sh
if ! command -v wrk >/dev/null; then
  echo "api: installing wrk (Debian)" >&2
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq wrk >&2
fi
key="sk_bench_$$"
hport=$("$PY" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
config=deploy/programs.example.json
LOYALTY_LOG=info "$bin" --log-format json run --brokers "$brokers" --config "$config" --state "$work/state" \
  --signing-secret bench --batch-size 5000 --http-addr "127.0.0.1:$hport" --api-keys "$key" \
  > "$work/engine.log" 2>&1 &
engine_pid=$!
export API="http://127.0.0.1:$hport" KEY="$key" BROKERS="$brokers" WORK="$work" CONFIG="$config"
"$PY" benches/api_load.py bulk "$accounts"
if [ "${READS:-1}" != 0 ]; then
  echo
  echo "reads: wrk -t2 -c32 -d${secs}s on a state of $accounts accounts"
  for what in healthz account ledger; do
    "$PY" benches/api_load.py lua "$what" > "$work/$what.lua"
    wrk -t2 -c32 -d"${secs}s" --latency -s "$work/$what.lua" "$API" > "$work/$what.wrk"
    "$PY" benches/api_load.py wrk "$what" "$work/$what.wrk"
  done
  "$PY" benches/api_load.py ratios
fi
echo
"$PY" benches/api_load.py commands "${CMD_RATE:-500}" "${BG_RATE:-10000}" "$secs" "$bin"
