#!/usr/bin/env bash
# Scale-out (issue 19), on Apache Kafka: the whole path with 1, 2 and 3 instances of one
# group over a log of six partitions, and the time from killing an instance to its
# partitions being served again.
#
#   bash benches/group.sh [EVENTS] [CUSTOMERS]
#   STANDBYS=1 bash benches/group.sh ...   (each partition also kept warm by one other instance)
#   PARTITIONS=2 COUNTS=2 bash benches/group.sh 2000000   (a failover of 1,000,000-record
#                                                          partitions: two of them, two instances)
#
# For each instance count N (a fresh broker each time):
# 1. Starts N instances (`loyalty run --group bench --log-partitions 6`), each with its own
#    state directory, and waits until the six partitions are split between them.
# 2. Produces EVENTS records (default 200,000) of CUSTOMERS customers (default 20,000) with
#    `loyalty loadgen` (payments, refunds, adjustments, redemptions) as fast as the broker
#    takes them, and measures until the last `loyalty.points.earned` is read back: records
#    a second for the group, per instance, and as a ratio to one instance in the same run.
#    The instances share this machine's cores, so N instances measure the cost of the
#    group's work on one machine, not the speed of N machines.
# 3. With N >= 2: kill -9 the instance that holds partition 0 and time until every
#    partition is active again on the others (they have no copy of what they take over, so
#    each folds its new partitions from the start of their log: no standby replicas yet),
#    and how many records those partitions held. With STANDBYS=1 (`--standby-replicas 1`)
#    the instance after each partition's owner keeps a warm copy of it.
set -euo pipefail
cd "$(dirname "$0")/.."
events="${1:-200000}"
customers="${2:-20000}"
config=deploy/programs.example.json
standbys="${STANDBYS:-0}"
export PARTITIONS="${PARTITIONS:-6}"
counts="${COUNTS:-1 2 3}"
results=$(mktemp)

run_group() {
  local n="$1"
  (
    set -e
    source benches/broker.sh
    pids=()
    ports=()
    cleanup_members() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; }
    trap 'cleanup_members; cleanup' EXIT
    for i in $(seq 1 "$n"); do
      mport=$("$PY" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
      LOYALTY_LOG=info "$bin" --log-format json run --brokers "$brokers" --config "$config" \
        --state "$work/state$i" --signing-secret bench --batch-size 5000 \
        --group bench --log-partitions "$PARTITIONS" --input-partitions 6 --session-timeout-ms 6000 \
        --standby-replicas "$standbys" \
        --metrics-addr "127.0.0.1:$mport" > "$work/engine$i.log" 2>&1 &
      pids+=("$!")
      ports+=("$mport")
      # One at a time: the first creates the topics and applies the config.
      "$PY" benches/group_watch.py ready "$mport"
    done
    "$PY" benches/group_watch.py split "${ports[@]}"
    out=$("$bin" loadgen --brokers "$brokers" --events "$events" --customers "$customers" \
      --config "$config" --id-prefix "evt_$$_$n" --wait-topic loyalty.points.earned 2>&1)
    echo "$out" | grep -E "^(whole path|latency)" | sed "s/^/instances=$n: /"
    rate=$(echo "$out" | grep -E "^whole path" | grep -oE "[0-9]+ records/s" | grep -oE "[0-9]+" | head -1 || true)
    echo "$n $rate" >> "$results"
    if [ "$n" -ge 2 ]; then
      victim=$("$PY" benches/group_watch.py holder 0 "${ports[@]}")
      vport=${ports[$victim]}
      others=()
      for j in "${!ports[@]}"; do [ "$j" != "$victim" ] && others+=("${ports[$j]}"); done
      kill -9 "${pids[$victim]}"
      "$PY" benches/group_watch.py failover "$vport" "${others[@]}" | sed "s/^/instances=$n: /"
    fi
  )
}

for n in $counts; do
  set +e
  run_group "$n"
  rc=$?
  set -e
  [ "$rc" = 0 ] || echo "instances=$n: the run failed (exit $rc)"
done
python3 - "$results" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1]) if len(l.split()) == 2]
rates = {int(n): int(r) for n, r in rows}
one = rates.get(1)
for n, r in sorted(rates.items()):
    ratio = f"{r / one:.2f}x one instance" if one else "no one-instance figure"
    print(f"group of {n}: {r} records/s in all, {r // n} per instance, {ratio}")
PY
rm -f "$results"
