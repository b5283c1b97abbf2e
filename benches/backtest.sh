#!/usr/bin/env bash
# `loyalty backtest` beside `loyalty fold` of the same log: the backtest folds it twice (the
# baseline and the candidate), and its target is at least half the fold's speed.
#
#   bash benches/backtest.sh [RECORDS] [CUSTOMERS] [RUNS]     (defaults 1000000 200000 3)
#
# Writes a log of RECORDS records of CUSTOMERS customers with `loyalty loadgen`
# (deploy/programs.example.json), then RUNS times, alternating on the same file:
# `loyalty backtest --format json` of a candidate with every rule's multiplier doubled against
# that config, and `loyalty fold` under it, both to /dev/null under `/usr/bin/time -v`.
# Prints each run's wall seconds, records per second, CPU seconds and peak memory, then the
# median of the runs' ratios backtest/fold in records per second, against the target 0.5.
set -euo pipefail
cd "$(dirname "$0")/.."
records="${1:-1000000}"
customers="${2:-200000}"
runs="${3:-3}"
config=deploy/programs.example.json

cargo build --release --quiet --bin loyalty
bin="${CARGO_TARGET_DIR:-target}/release/loyalty"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log="$work/log.jsonl"
"$bin" loadgen --out "$log" --events "$records" --customers "$customers" --config "$config"
lines=$(wc -l < "$log")
echo "log: $lines records of $customers customers, $(du -m "$log" | cut -f1) MiB"
python3 - "$config" "$work/candidate.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
for p in c["programs"]:
    for r in p.get("earningRules", []):
        r["multiplier"] = 2 * r.get("multiplier", 1)
json.dump(c, open(sys.argv[2], "w"))
PY

source benches/measure.sh

: > "$work/results"
for run in $(seq 1 "$runs"); do
  echo "run $run of $runs"
  measure backtest "$bin" backtest --config "$work/candidate.json" --baseline "$config" \
    --events "$log" --format json
  measure fold "$bin" fold --config "$config" --events "$log"
done

python3 - "$work/results" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
bt = [float(r[2]) for r in rows if r[0] == "backtest"]
fold = [float(r[2]) for r in rows if r[0] == "fold"]
ratio = statistics.median(b / f for b, f in zip(bt, fold))
print(f"backtest / fold, records per second, median of {len(bt)}: {ratio:.2f} "
      f"(target at least 0.5: {'met' if ratio >= 0.5 else 'not met'})")
PY
