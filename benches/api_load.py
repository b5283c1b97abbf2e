"""The driver of benches/api.sh: bulk accounts through the log, wrk scripts and their
figures, and the open-loop command load. Reads API, KEY, BROKERS, WORK and CONFIG from the
environment."""
import hashlib
import http.client
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime, timezone

API, KEY, WORK = os.environ["API"], os.environ["KEY"], os.environ["WORK"]
BUSY = 2000
PROGRAM = json.load(open(os.environ["CONFIG"]))["programs"][0]["id"]


def account_id(program, customer):
    """The engine's account id: loy_ and 24 hex digits of SHA-256 over the parts."""
    d = hashlib.sha256(b"\x1f".join([b"account", program.encode(), customer.encode()])).hexdigest()
    return "loy_" + d[:24]


def customer(i):
    return f"cus_{i:07d}"


def now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def get(path):
    req = urllib.request.Request(API + path, headers={"Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def folded():
    text = urllib.request.urlopen(API + "/metrics", timeout=10).read().decode()
    m = re.search(r"^loyalty_records_folded_total (\S+)$", text, re.M)
    return int(float(m.group(1))) if m else 0


def bulk(n):
    from kafka import KafkaProducer
    deadline = time.time() + 120
    while True:
        try:
            if urllib.request.urlopen(API + "/readyz", timeout=5).status == 200:
                break
        except OSError:
            pass
        if time.time() > deadline:
            sys.exit("api: the engine did not get ready")
        time.sleep(0.2)
    start = folded()
    p = KafkaProducer(bootstrap_servers=os.environ["BROKERS"], acks="all", linger_ms=20,
                      batch_size=512 * 1024, enable_idempotence=True)
    t0 = time.time()
    created = now()
    for i in range(n):
        c = customer(i)
        p.send("loyalty.commands", key=c.encode(), value=json.dumps(
            {"id": f"enr_{i}", "type": "loyalty.account.enroll", "created": created,
             "data": {"customer": c, "program": PROGRAM}}).encode())
    for j in range(12):
        for i in range(BUSY):
            c = customer(i)
            p.send("payment.completed", key=c.encode(), value=json.dumps(
                {"id": f"pay_{j}_{i}", "type": "payment.completed", "created": created,
                 "data": {"id": f"pay_{j}_{i}", "customer": c, "amount": 2500 + j,
                          "currency": "EUR", "metadata": {"channel": "pos"}}}).encode())
    p.flush()
    p.close()
    produced = time.time() - t0
    total = n + 12 * BUSY
    while folded() - start < total:
        time.sleep(0.5)
    secs = time.time() - t0
    print(f"bulk: {n} enrolments and {12 * BUSY} payments produced in {produced:.1f} s, "
          f"folded in {secs:.1f} s ({total / secs:.0f} records/s through the log)")
    # Spot checks: an account and a busy ledger answer.
    a = get(f"/v1/accounts/{account_id(PROGRAM, customer(n - 1))}")
    assert a["object"] == "loyalty_account", a
    page = get(f"/v1/points_transactions?account={account_id(PROGRAM, customer(0))}&limit=10")
    assert len(page["data"]) == 10, page


def lua(what):
    """A wrk script: random accounts (or busy accounts' ledger pages, or /healthz)."""
    n = int(open(os.path.join(WORK, "accounts")).read()) if os.path.exists(os.path.join(WORK, "accounts")) else None
    rnd = random.Random(7)
    if what == "healthz":
        paths = ["/healthz"]
    elif what == "account":
        total = n or 1_000_000
        paths = [f"/v1/accounts/{account_id(PROGRAM, customer(rnd.randrange(total)))}" for _ in range(20000)]
    else:
        paths = [f"/v1/points_transactions?account={account_id(PROGRAM, customer(rnd.randrange(BUSY)))}&limit=10"
                 for _ in range(5000)]
    body = ",\n".join(json.dumps(p) for p in paths)
    print(f"""paths = {{ {body} }}
n = #paths
i = 0
wrk.headers["Authorization"] = "Bearer {KEY}"
request = function()
  i = i % n + 1
  return wrk.format("GET", paths[i])
end
response = function(status, headers, body)
  if status ~= 200 then
    io.stderr:write("unexpected status " .. status .. "\\n")
  end
end""")


UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def ms(text):
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * UNITS[m.group(2)]


def wrk(what, path):
    text = open(path).read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    lat = {p: ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", text, re.M)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    socket_errors = re.search(r"Socket errors: (.*)", text)
    fig = {"rps": rps, "p50": lat["50"], "p99": lat["99"],
           "non2xx": int(errors.group(1)) if errors else 0}
    json.dump(fig, open(os.path.join(WORK, what + ".json"), "w"))
    print(f"  {what:8} {rps:9.0f} requests/s  p50 {lat['50']:.2f} ms  p99 {lat['99']:.2f} ms"
          f"{'  non-2xx ' + str(fig['non2xx']) if fig['non2xx'] else ''}"
          f"{'  socket errors: ' + socket_errors.group(1) if socket_errors else ''}")


def ratios():
    f = {w: json.load(open(os.path.join(WORK, w + ".json"))) for w in ["healthz", "account", "ledger"]}
    for w in ["account", "ledger"]:
        print(f"  {w}: {f[w]['rps'] / f['healthz']['rps']:.2f} of /healthz's requests/s "
              f"(the same server's HTTP stack alone), p99 {f[w]['p99'] / max(f['healthz']['p99'], 1e-9):.1f}x its p99")


def commands(rate, events_rate, secs, binary):
    """Open loop: command k is due at t0 + k/rate; latency runs from that time."""
    rate, events_rate, secs = int(rate), int(events_rate), float(secs)
    # Background traffic (none at rate 0), at its rate before the commands start.
    load = None
    if events_rate > 0:
        load = subprocess.Popen([binary, "loadgen", "--brokers", os.environ["BROKERS"],
                                 "--events", str(int(events_rate * (secs + 10))), "--customers", "200000",
                                 "--customer-offset", str(BUSY), "--rate", str(events_rate),
                                 "--id-prefix", f"bg_{os.getpid()}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(3)
    start_folded = folded()
    t_fold = time.time()
    n = int(rate * secs)
    lat, statuses = [], {}
    lock = threading.Lock()
    t0 = time.time() + 0.5
    host = API.split("//")[1]

    def worker(w, workers):
        conn = http.client.HTTPConnection(host, timeout=30)
        for k in range(w, n, workers):
            due = t0 + k / rate
            pause = due - time.time()
            if pause > 0:
                time.sleep(pause)
            i = k % BUSY
            body = json.dumps({"points": 1, "reason": "bench"})
            try:
                conn.request("POST", f"/v1/accounts/{account_id(PROGRAM, customer(i))}/adjustments", body,
                             {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json",
                              "Idempotency-Key": f"bench-{os.getpid()}-{k}"})
                r = conn.getresponse()
                r.read()
                status = r.status
            except OSError:
                conn = http.client.HTTPConnection(host, timeout=30)
                status = "error"
            done = time.time()
            with lock:
                lat.append((done - due) * 1000)
                statuses[status] = statuses.get(status, 0) + 1

    workers = 96
    threads = [threading.Thread(target=worker, args=(w, workers)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fold_rate = (folded() - start_folded) / (time.time() - t_fold)
    if load:
        load.terminate()
        load.wait()
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
    print(f"commands: {n} adjustments at {rate}/s while the engine folded {fold_rate:.0f} records/s "
          f"(loadgen at {events_rate}/s): p50 {q(0.5):.1f} ms, p99 {q(0.99):.1f} ms, max {lat[-1]:.1f} ms; "
          f"answers {dict(sorted((str(k), v) for k, v in statuses.items()))}")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "bulk":
        open(os.path.join(WORK, "accounts"), "w").write(sys.argv[2])
        bulk(int(sys.argv[2]))
    elif cmd == "lua":
        lua(sys.argv[2])
    elif cmd == "wrk":
        wrk(sys.argv[2], sys.argv[3])
    elif cmd == "ratios":
        ratios()
    elif cmd == "commands":
        commands(*sys.argv[2:6])
