"""An Apache Kafka broker (KRaft, one combined broker+controller node) for the end-to-end
suite, run by scripts/kafka: the jars come from Maven Central and are cached there, and
the configuration, the storage format, the start and the readiness probe are written once,
in that script. This module only drives it.

    kafka = ApacheKafka(workdir, listen_port, advertised_port=proxy_port)
    kafka.start()          # returns once a Metadata request is answered
    ... kafka.bootstrap ... kafka.pid ...
    kafka.stop()

start() again on the same workdir restarts the broker with its data.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "kafka"


class ApacheKafka:
    """A broker listening on 127.0.0.1:listen_port with its files in workdir.

    With advertised_port, clients are told to connect to 127.0.0.1:advertised_port (a proxy
    in front of the broker); the broker's own requests to itself do not go through it.
    """

    def __init__(self, workdir, listen_port, advertised_port=None, partitions=1):
        self.workdir = Path(workdir)
        self.listen_port = int(listen_port)
        self.advertised_port = advertised_port
        self.partitions = partitions
        self.pid = None
        self.bootstrap = f"127.0.0.1:{advertised_port or listen_port}"

    @property
    def log_path(self):
        return self.workdir / "kafka.log"

    def start(self, timeout=60):
        env = dict(os.environ, KAFKA_PARTITIONS=str(self.partitions),
                   KAFKA_START_TIMEOUT=str(timeout))
        env.pop("KAFKA_ADVERTISED", None)
        if self.advertised_port:
            env["KAFKA_ADVERTISED"] = self.bootstrap
        out = subprocess.run(
            ["bash", "-c", 'source "$0" && kafka_start "$1" "$2" && echo "$KAFKA_PID"',
             str(SCRIPT), str(self.workdir), str(self.listen_port)],
            env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"Apache Kafka did not start on 127.0.0.1:{self.listen_port}:\n"
                               f"{out.stderr.strip()}")
        self.pid = int(out.stdout.split()[-1])
        sys.stderr.write(out.stderr)  # the fetch on a cold cache, the time to ready
        return self

    def alive(self):
        if self.pid is None:
            return False
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                return f.read().rsplit(") ", 1)[1][0] != "Z"
        except OSError:
            return False

    def stop(self, timeout=20):
        """SIGTERM (a clean shutdown, about a second), SIGKILL after `timeout` seconds."""
        if self.pid is None:
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
        self.pid = None

    def kill(self):
        self.stop(timeout=0)

    def log_tail(self, lines=30):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
