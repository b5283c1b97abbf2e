"""Watches a group's instances through their /metrics and /readyz (benches/group.sh).

  group_watch.py ready PORT            until the instance on PORT is ready
  group_watch.py split PORT...         until every partition is active, each once
  group_watch.py holder P PORT...      prints the index of the instance holding P
  group_watch.py failover DEAD PORT... the time until the dead instance's partitions are
                                       active on the others, and the records they held
"""
import os
import re
import sys
import time
import urllib.request

PARTITIONS = int(os.environ.get("PARTITIONS", "6"))


def metrics(port):
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return ""


def held(port):
    return {int(p) for p, s, v in re.findall(
        r'loyalty_partitions\{partition="(\d+)",state="(\w+)"\} (\d+)', metrics(port))
        if s == "active" and v == "1"}


def offsets(port):
    return {int(p): int(v) for p, v in re.findall(
        r'loyalty_log_offset\{partition="(\d+)"\} (\d+)', metrics(port))}


def until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    sys.exit(f"group_watch: timed out waiting for {what}")


def ready(port):
    def ok():
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).status == 200
        except OSError:
            return False
    until(ok, 180, f"the instance on {port} to be ready")


def split(ports):
    def done():
        sets = [held(p) for p in ports]
        every = [p for s in sets for p in s]
        return sorted(every) == list(range(PARTITIONS)) and all(sets)
    until(done, 180, "the partitions to be split")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "ready":
        ready(args[0])
    elif cmd == "split":
        split(args)
    elif cmd == "holder":
        p, ports = int(args[0]), args[1:]
        print(next(i for i, port in enumerate(ports) if p in held(port)))
    elif cmd == "failover":
        # The dead instance's partitions and their sizes, as its last metrics said (read
        # just before the kill would be better; its offsets are what it had folded).
        others = args[1:]
        start = time.monotonic()
        until(lambda: sorted(p for port in others for p in held(port)) == list(range(PARTITIONS)),
              600, "the dead instance's partitions to be served again")
        secs = time.monotonic() - start
        sizes = {}
        for port in others:
            sizes.update(offsets(port))
        took = re.findall(r'loyalty_partition_takeovers_total\{from="(\w+)"\} (\d+)',
                          "".join(metrics(port) for port in others))
        print(f"failover: every partition served again {secs:.1f} s after kill -9 "
              f"(the log holds {sum(sizes.values())} records in all; takeovers by the "
              f"survivors so far: {', '.join(f'{k} {v}' for k, v in took) or 'none'})")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
