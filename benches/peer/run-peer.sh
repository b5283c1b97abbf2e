#!/usr/bin/env bash
# The Kafka Streams peer (benches/peer/kafka-streams): build it (cached) and run it.
#
#   bash benches/peer/run-peer.sh BOOTSTRAP [OPTIONS]      fold payment.completed into
#                                                          loyalty.peer.earned until Ctrl-C
#   bash benches/peer/run-peer.sh BOOTSTRAP dump [OPTIONS] every customer's last balance on
#                                                          the output topic, JSON lines, sorted
#   bash benches/peer/run-peer.sh check [--program FILE]   validate a program file
#   bash benches/peer/run-peer.sh smoke [BOOTSTRAP] [...]  correctness against hand-computed
#                                                          balances (smoke.py)
#   bash benches/peer/run-peer.sh bench [BOOTSTRAP] [...]  throughput and start-up (bench.py)
#   bash benches/peer/run-peer.sh build                    only build; prints the jar's path
#
# run's defaults: --program benches/bench-config.json, --state-dir
# ${TMPDIR:-/tmp}/loyalty-peer-state, --input payment.completed, --output loyalty.peer.earned,
# --application-id loyalty-peer; `java -jar … run --help` lists every option. smoke and bench
# without BOOTSTRAP start a throwaway Apache Kafka with scripts/kafka and stop it after.
#
# Environment: JAVA_OPTS (default -Xmx512m), KAFKA_STREAMS_VERSION (default: KAFKA_VERSION, the
# broker's version for scripts/kafka, else the pom's 4.4.0), PEER_* (see README.md).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
project="$here/kafka-streams"
jar="$project/target/loyalty-peer.jar"
java_opts=(${JAVA_OPTS:--Xmx512m})

# JDK 17+ and Maven, from Debian's packages when missing.
tools() {
  local need=()
  command -v javac >/dev/null 2>&1 || need+=(openjdk-17-jdk-headless)
  command -v mvn >/dev/null 2>&1 || need+=(maven)
  [ ${#need[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  echo "peer: installing ${need[*]}" >&2
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >&2
}

# Build when the jar is missing or older than the pom or a source file (or built for another
# Kafka Streams version).
build() {
  local version="${KAFKA_STREAMS_VERSION:-${KAFKA_VERSION:-}}" stamp="$project/target/.kafka-version"
  if [ -f "$jar" ] && [ -z "$(find "$project/pom.xml" "$project/src" -newer "$jar" -print -quit)" ] \
     && [ "$(cat "$stamp" 2>/dev/null)" = "${version:-default}" ]; then
    return 0
  fi
  tools
  echo "peer: building $jar${version:+ (Kafka Streams $version)}" >&2
  # (Maven 3.8's -q still writes colour resets: filtered out.)
  (cd "$project" && mvn -q -B -Dstyle.color=never ${version:+-Dkafka.version=$version} package -DskipTests 2>&1) \
    | sed 's/\x1b\[[0-9;]*m//g' >&2
  echo "${version:-default}" >"$stamp"
}

is_bootstrap() { [[ "${1:-}" =~ ^[^-][^[:space:]]*:[0-9]+(,.*)?$ ]]; }

# For smoke and bench: the given broker, or a throwaway one.
broker() {
  if is_bootstrap "${1:-}"; then
    bootstrap=$1
    return 0
  fi
  # shellcheck source=../../scripts/kafka
  source "$root/scripts/kafka"
  kdir=$(mktemp -d "${TMPDIR:-/tmp}/peer-kafka.XXXXXX")
  # (kafka_stop's final `wait` returns the broker's exit status: keep it from set -e.)
  trap 'kafka_stop || true; rm -rf "$kdir"' EXIT
  trap 'exit 130' INT TERM
  kafka_start "$kdir"
  bootstrap=$KAFKA_BOOTSTRAP
  return 1
}

# The e2e virtual environment (kafka-python) for smoke and bench.
python() {
  # shellcheck source=../../scripts/e2e-deps
  source "$root/scripts/e2e-deps"
  "$PY" "$@"
}

case "${1:-}" in
  ""|-h|--help)
    sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  build)
    build
    echo "$jar"
    ;;
  check)
    shift
    build
    [ $# -eq 0 ] && set -- --program "$root/benches/bench-config.json"
    exec java "${java_opts[@]}" -jar "$jar" check "$@"
    ;;
  smoke|bench)
    what=$1
    shift
    build
    if broker "${1:-}"; then shift; fi
    python "$here/$what.py" "$bootstrap" "$jar" "--java-opts=${java_opts[*]}" "$@"
    ;;
  *)
    is_bootstrap "$1" || { echo "peer: expected a bootstrap address host:port, got $1 (see --help)" >&2; exit 2; }
    bootstrap=$1
    shift
    build
    if [ "${1:-}" = dump ]; then
      shift
      exec java "${java_opts[@]}" -jar "$jar" dump --bootstrap-servers "$bootstrap" "$@"
    fi
    [ "${1:-}" = run ] && shift
    defaults=()
    [[ " $* " == *" --program"* || -n "${PEER_PROGRAM:-}" ]] || defaults+=(--program "$root/benches/bench-config.json")
    [[ " $* " == *" --state-dir"* || -n "${PEER_STATE_DIR:-}" ]] || defaults+=(--state-dir "${TMPDIR:-/tmp}/loyalty-peer-state")
    exec java "${java_opts[@]}" -jar "$jar" run --bootstrap-servers "$bootstrap" "${defaults[@]}" "$@"
    ;;
esac
