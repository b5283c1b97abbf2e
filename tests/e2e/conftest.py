"""Fixtures of the end-to-end suite: an Apache Kafka broker (4.x, KRaft, from Maven Central
through scripts/kafka) behind a pausable TCP proxy, the engine as its own process, and Kafka
clients that do not share the engine's librdkafka (kafka-python).

The broker advertises the proxy's address, so every client (the engine and the tests)
talks to the broker through the proxy; pausing the proxy makes the broker unreachable for
everyone, as a network partition would.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec_e2e_secret"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def loyalty_bin():
    explicit = os.environ.get("LOYALTY_BIN")
    if explicit:
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    return str(Path(target) / "release" / "loyalty")


class Proxy:
    """A TCP proxy in front of the broker that can drop and refuse connections."""

    def __init__(self, listen_port, target_port):
        self.listen_port, self.target_port = listen_port, target_port
        self.paused = threading.Event()
        self.conns = []
        self.lock = threading.Lock()
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", listen_port))
        self.server.listen(128)
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.paused.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    def _pipe(self, a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data or self.paused.is_set():
                    break
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.close()
            except OSError:
                pass

    def pause(self):
        """Drop every connection and refuse new ones."""
        self.paused.set()
        with self.lock:
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self.conns = []

    def resume(self):
        self.paused.clear()

    def close(self):
        self.closed = True
        self.pause()
        self.server.close()


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    from kafka_broker import ApacheKafka

    inner, outer = free_port(), free_port()
    proxy = Proxy(outer, inner)
    kafka = ApacheKafka(tmp_path_factory.mktemp("kafka"), inner, advertised_port=outer)
    kafka.start()
    yield {"bootstrap": kafka.bootstrap, "proxy": proxy, "kafka": kafka}
    proxy.close()
    kafka.stop()


class Engine:
    """`loyalty run` as its own process, with unique topic names per test."""

    def __init__(self, bootstrap, config_path, prefix, state_dir, extra=()):
        self.bootstrap, self.config, self.prefix, self.state = bootstrap, config_path, prefix, state_dir
        self.extra = list(extra)
        self.proc = None
        self.log = open(state_dir.parent / f"{state_dir.name}.engine.log", "ab")

    @property
    def topics(self):
        p = self.prefix
        return {"payments": f"{p}payment.completed", "refunds": f"{p}payment.refunded",
                "commands": f"{p}loyalty.commands", "log": f"{p}loyalty.log",
                "dlq": f"{p}loyalty.dlq", "earned": f"{p}loyalty.points.earned",
                "created": f"{p}loyalty.account.created"}

    def args(self):
        p = self.prefix
        inputs = ",".join(p + t for t in ["payment.completed", "payment.refunded", "invoice.paid",
                                          "subscription.created", "referral.converted", "loyalty.commands"])
        return ["--brokers", self.bootstrap, "--config", str(self.config),
                "--input-topics", inputs, "--log-topic", f"{p}loyalty.log",
                "--dlq-topic", f"{p}loyalty.dlq", "--output-prefix", p,
                "--signing-secret", SECRET, "--tick-interval-secs", "3600", "--batch-size", "200"] + self.extra

    def start(self, failpoint=None):
        env = dict(os.environ, LOYALTY_LOG="info")
        env.pop("LOYALTY_FAILPOINT", None)
        if failpoint:
            env["LOYALTY_FAILPOINT"] = failpoint
        self.proc = subprocess.Popen([loyalty_bin(), "run", "--state", str(self.state)] + self.args(),
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        # Upstream produces only once the engine has created its topics (a produce to a
        # missing topic would auto-create it with the broker's default partitions).
        from kafka import KafkaConsumer
        c = KafkaConsumer(bootstrap_servers=self.bootstrap)
        try:
            wait_for(lambda: self.proc.poll() is None and self.topics["log"] in c.topics(), 60,
                     "the engine to create its topics")
        finally:
            c.close()
        return self

    def log_tail(self, lines=40):
        """The end of the engine's log (for failure messages)."""
        self.log.flush()
        path = self.state.parent / f"{self.state.name}.engine.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("the engine did not stop on SIGTERM")
        assert self.proc.returncode in (0, None), f"engine exited {self.proc.returncode}"

    def export(self):
        out = subprocess.run([loyalty_bin(), "export", "--state", str(self.state)],
                             capture_output=True, check=True)
        return out.stdout.decode()


@pytest.fixture
def workdir():
    d = Path(tempfile.mkdtemp(prefix="loyalty-e2e-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def prefix():
    return f"t{uuid.uuid4().hex[:8]}."


def fold(config_path, lines, until=None):
    """`loyalty fold` over a list of JSON-line strings."""
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        f.write("\n".join(lines) + "\n")
        path = f.name
    cmd = [loyalty_bin(), "fold", "--config", str(config_path), "--events", path]
    if until:
        cmd += ["--until", until]
    out = subprocess.run(cmd, capture_output=True, check=True)
    os.unlink(path)
    return out.stdout.decode()


def accounts(text):
    return {(a["program"], a["customer"]): a for a in map(json.loads, text.splitlines())
            if a["kind"] == "account"}


def wait_for(predicate, timeout=120, what="condition"):
    """Polls `predicate` until it returns a true value; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")
