#!/usr/bin/env bash
# The engine beside its Kafka Streams peer on one Apache Kafka broker (benches/peer/versus.py):
# the same payments folded by each, records/s and the ratio, balances compared, then the
# latency of each at a fixed rate.
#
#   bash benches/peer/versus.sh [EVENTS] [CUSTOMERS] [RATE] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
events="${1:-100000}"
customers="${2:-20000}"
rate="${3:-2000}"
seconds="${4:-10}"
BROKER=kafka source benches/broker.sh
jar=$(bash benches/peer/run-peer.sh build | tail -1)
"$PY" benches/peer/versus.py "$brokers" "$bin" "$jar" --events "$events" --customers "$customers" \
  --rate "$rate" --seconds "$seconds"
