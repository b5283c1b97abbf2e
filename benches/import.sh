#!/usr/bin/env bash
# `loyalty import` of a whole program (issue 21), on Apache Kafka (BROKER=tansu for tansu):
#
#   bash benches/import.sh [MEMBERS]
#
# 1. Writes a CSV of MEMBERS (default 1,000,000) members of deploy/programs.example.json's
#    prog_default: every one with an opening balance, one in ten with a birthday, one in
#    twenty with a tier (Silver or Gold).
# 2. Starts `loyalty run` (HTTP API on) and waits until it is ready.
# 3. Times, from the start of `loyalty import --config ...`:
#    - produced: the importer done (every record taken by the broker);
#    - folded: the engine has folded every record (`loyalty_records_folded_total`), and the
#      program's statistics count every member (`GET /v1/programs/prog_default/stats`);
#    - verified: the engine stopped and `loyalty verify` of its state exited 0.
#    The target is verified < 120 s. The physical reference in the same run is the
#    importer's own time to hand the records to the broker (`produced`): the broker's intake
#    of the same bytes, below which no import through the log can go.
# 4. Checks through the API that sampled members hold their opening balance and tier, and
#    that a second run of the same import enrols nobody again (every record a duplicate).
set -euo pipefail
cd "$(dirname "$0")/.."
members="${1:-1000000}"
source benches/broker.sh
config=deploy/programs.example.json
key="sk_bench_$$"
hport=$("$PY" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
"$PY" benches/import_check.py write "$members" "$work/members.csv"
LOYALTY_LOG=info "$bin" --log-format json run --brokers "$brokers" --config "$config" --state "$work/state" \
  --signing-secret bench --batch-size "${BATCH:-5000}" --http-addr "127.0.0.1:$hport" --api-keys "$key" \
  > "$work/engine.log" 2>&1 &
engine_pid=$!
export API="http://127.0.0.1:$hport" KEY="$key"
"$PY" benches/import_check.py ready
start=$("$PY" benches/import_check.py folded)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
e0=$(cpu "$engine_pid"); k0=$(cpu "$KAFKA_PID")
t0=$(date +%s.%N)
"$bin" import --brokers "$brokers" --program prog_default --config "$config" "$work/members.csv" \
  2> >(grep -v '^import \[' >&2)
t1=$(date +%s.%N)
records=$("$PY" benches/import_check.py records "$work/members.csv")
"$PY" benches/import_check.py wait "$start" "$records" "$members"
t2=$(date +%s.%N)
e1=$(cpu "$engine_pid"); k1=$(cpu "$KAFKA_PID")
echo "cpu while folding: engine $(( (e1 - e0) / $(getconf CLK_TCK) )) s, broker $(( (k1 - k0) / $(getconf CLK_TCK) )) s"
"$PY" benches/import_check.py sample "$work/members.csv"
kill -TERM "$engine_pid"
wait "$engine_pid" || true
engine_pid=""
tstop=$(date +%s.%N)
"$bin" verify --state "$work/state" > "$work/verify.out"
t3=$(date +%s.%N)
# KEEP_STATE=DIR keeps a copy of the state (to profile verify on it).
if [ -n "${KEEP_STATE:-}" ]; then rm -rf "$KEEP_STATE"; cp -r "$work/state" "$KEEP_STATE"; fi
echo "verify: $(wc -l < "$work/verify.out") problems"
"$PY" - "$t0" "$t1" "$t2" "$t3" "$members" "$records" "$tstop" <<'PY'
import sys
t0, t1, t2, t3 = map(float, sys.argv[1:5])
members, records = int(sys.argv[5]), int(sys.argv[6])
tstop = float(sys.argv[7])
print(f"import of {members} members ({records} records):")
print(f"  produced (reference: the broker's intake) {t1 - t0:7.1f} s  {records / (t1 - t0):9.0f} records/s")
print(f"  folded, every member counted              {t2 - t0:7.1f} s  {records / (t2 - t0):9.0f} records/s")
print(f"  verified (engine stopped, verify exit 0)  {t3 - t0:7.1f} s   target < 120 s: {'met' if t3 - t0 < 120 else 'not met'}")
print(f"    of which: the engine stopping {tstop - t2:.1f} s, verify {t3 - tstop:.1f} s")
print(f"  folded / produced: {(t1 - t0) / (t2 - t0):.2f} of the broker's intake rate")
PY
# A second run: every record is refused as a duplicate, nobody is enrolled twice.
LOYALTY_LOG=info "$bin" --log-format json run --brokers "$brokers" --config "$config" --state "$work/state" \
  --signing-secret bench --batch-size "${BATCH:-5000}" --http-addr "127.0.0.1:$hport" --api-keys "$key" \
  >> "$work/engine.log" 2>&1 &
engine_pid=$!
"$PY" benches/import_check.py ready
start=$("$PY" benches/import_check.py folded)
"$bin" import --brokers "$brokers" --program prog_default --config "$config" "$work/members.csv" \
  2> >(grep -v '^import \[' >&2)
"$PY" benches/import_check.py wait "$start" "$records" "$members"
echo "second run: $members members still, each enrolled once"
