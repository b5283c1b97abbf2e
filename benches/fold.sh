#!/usr/bin/env bash
# `loyalty fold` of a log file beside its physical reference: records per second and peak
# memory.
#
#   bash benches/fold.sh [RECORDS] [CUSTOMERS] [RUNS]     (defaults 1000000 200000 3)
#
# Writes a log of RECORDS records of CUSTOMERS customers with `loyalty loadgen` (the
# loadgen's traffic, deploy/programs.example.json), then RUNS times, alternating on the same
# file: `loyalty fold` under that config, and the reference (benches/fold_reference.rs: reads
# the same file, parses each envelope into a typed struct, keeps a balance per customer in a
# hash map, writes two JSON lines per record), both to /dev/null under `/usr/bin/time -v`.
# Prints each run's wall seconds, records per second, CPU seconds (user + system) and peak
# memory (maximum resident set size), then the median of the runs' ratios fold/reference and
# whether the targets are met: at least 0.5x the reference, peak memory under 1 GiB.
# Cleans up after itself.
set -euo pipefail
cd "$(dirname "$0")/.."
records="${1:-1000000}"
customers="${2:-200000}"
runs="${3:-3}"
config=deploy/programs.example.json

# One cargo command builds both: the reference, and with it the package's `loyalty` binary
# (cargo builds a package's binaries for its benchmarks), under the release settings. Its
# shared dependencies' features are unified with the benchmarks' (unlike `cargo build
# --release`): the same output bytes, and no slower (10.5-11.3 s against 11.6-12.4 s on one
# 1M log, alternating).
reference=$(cargo bench --no-run --quiet --bench fold_reference --message-format=json |
  python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "fold_reference" \
            and m.get("executable"):
        print(m["executable"])')
bin="${CARGO_TARGET_DIR:-target}/release/loyalty"
[ -x "$reference" ] || { echo "fold.sh: the reference was not built" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log="$work/log.jsonl"
"$bin" loadgen --out "$log" --events "$records" --customers "$customers" --config "$config"
lines=$(wc -l < "$log")
echo "log: $lines records of $customers customers, $(du -m "$log" | cut -f1) MiB"

source benches/measure.sh

: > "$work/results"
for run in $(seq 1 "$runs"); do
  echo "run $run of $runs"
  measure fold "$bin" fold --config "$config" --events "$log"
  measure reference "$reference" "$log"
done

python3 - "$work/results" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
fold = [(float(r[2]), int(r[4])) for r in rows if r[0] == "fold"]
ref = [(float(r[2]), int(r[4])) for r in rows if r[0] == "reference"]
ratios = [f[0] / r[0] for f, r in zip(fold, ref)]
ratio = statistics.median(ratios)
peak = max(p for _, p in fold)
gib = 1024 * 1024
print(f"fold:      median {statistics.median(r for r, _ in fold):,.0f} records/s, "
      f"peak {max(p for _, p in fold) / 1024:,.0f} MiB")
print(f"reference: median {statistics.median(r for r, _ in ref):,.0f} records/s, "
      f"peak {max(p for _, p in ref) / 1024:,.0f} MiB")
print("ratio fold/reference per run: " + ", ".join(f"{x:.3f}" for x in ratios)
      + f"; median {ratio:.3f}")
print(f"target >= 0.5x the reference: {'met' if ratio >= 0.5 else 'NOT met'} ({ratio:.3f}x)")
print(f"target peak memory < 1 GiB: {'met' if peak < gib else 'NOT met'} "
      f"({peak / 1024:,.0f} MiB)")
PY
