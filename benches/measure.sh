# Sourced by fold.sh and backtest.sh: `measure NAME COMMAND...` runs one side under
# /usr/bin/time -v (its output to /dev/null) and appends "name wall records/s cpu peak_kib"
# to $work/results, for a log of $lines records; then prints that row.
measure() {
  local name="$1"
  shift
  local t0 t1
  t0=$(date +%s.%N)
  /usr/bin/time -v "$@" > /dev/null 2> "$work/$name.err"
  t1=$(date +%s.%N)
  python3 - "$name" "$t0" "$t1" "$lines" "$work/$name.err" >> "$work/results" <<'PY'
import re, sys
name, t0, t1, lines, err = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
text = open(err).read()
field = lambda label: float(re.search(re.escape(label) + r": ([0-9.]+)", text).group(1))
wall = t1 - t0
cpu = field("User time (seconds)") + field("System time (seconds)")
print(name, wall, lines / wall, cpu, int(field("Maximum resident set size (kbytes)")))
PY
  tail -1 "$work/results" | awk '{printf "  %-9s %7.2f s  %9.0f records/s  cpu %6.2f s  peak %5.0f MiB\n", $1, $2, $3, $4, $5 / 1024}'
}
