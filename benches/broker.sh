# Sourced by the benchmark scripts: builds the engine and starts the broker they run on,
# `BROKER=kafka` (the default: Apache Kafka 4.x from Maven Central, scripts/kafka) or
# `BROKER=tansu` (benches/tansu.sh), on a free loopback port. Sets `bin`, `work` (a scratch
# directory), `port` and `brokers`; on exit stops the broker and `$engine_pid` (if the script
# set it) and removes `$work`.
broker_kind="${BROKER:-kafka}"
case "$broker_kind" in
  tansu) source benches/tansu.sh ;;
  kafka)
    source scripts/setup
    source scripts/e2e-deps
    source scripts/kafka
    cargo build --release --quiet
    bin="${CARGO_TARGET_DIR:-target}/release/loyalty"
    work=$(mktemp -d)
    cleanup() {
      kill "${engine_pid:-}" 2>/dev/null || true
      kafka_stop 2>/dev/null || true
      wait 2>/dev/null || true
      rm -rf "$work"
    }
    trap cleanup EXIT
    # Partitions of topics created on first use (the loadgen's, replay's log topic) as the
    # engine would create them: one.
    kafka_start "$work/kafka" >&2
    port="$KAFKA_PORT"
    brokers="$KAFKA_BOOTSTRAP"
    ;;
  *) echo "BROKER must be kafka or tansu, not $broker_kind" >&2; exit 2 ;;
esac
echo "broker: $broker_kind on $brokers"
