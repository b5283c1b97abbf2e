"""Helpers of benches/import.sh: the members file, readiness, progress, spot checks."""
import csv
import hashlib
import json
import os
import re
import sys
import time
import urllib.request

API = os.environ.get("API", "")
KEY = os.environ.get("KEY", "")
PROGRAM = "prog_default"
# What deploy/programs.example.json's welcome rule (on loyalty.account.created) adds to
# every new member's opening balance.
WELCOME = 500


def account_id(program, customer):
    h = hashlib.sha256(b"\x1f".join([b"account", program.encode(), customer.encode()]))
    return "loy_" + h.hexdigest()[:24]


def get(path):
    req = urllib.request.Request(API + path, headers={"Authorization": f"Bearer {KEY}"})
    return json.loads(urllib.request.urlopen(req, timeout=30).read())


def row(i):
    tier = ("Silver", "Gold")[i % 2] if i % 20 == 0 else ""
    birthday = f"{1 + i % 12:02d}-{1 + i % 28:02d}" if i % 10 == 3 else ""
    return [f"cus_imp_{i:07d}", str(100 + i % 5000), tier, birthday]


def write(n, path):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["customer", "openingBalance", "tier", "birthday"])
        for i in range(n):
            w.writerow(row(i))


def records(path):
    with open(path, newline="") as f:
        r = csv.DictReader(f)
        return sum(2 if x["tier"] else 1 for x in r)


def folded():
    text = urllib.request.urlopen(API + "/metrics", timeout=10).read().decode()
    m = re.search(r"^loyalty_records_folded_total (\S+)$", text, re.M)
    return int(float(m.group(1))) if m else 0


def ready():
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(API + "/readyz", timeout=5).status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit("import: the engine did not get ready")


def wait(start, want, members):
    deadline = time.time() + 900
    while folded() - start < want:
        if time.time() > deadline:
            sys.exit(f"import: only {folded() - start} of {want} records folded")
        time.sleep(0.25)
    stats = get(f"/v1/programs/{PROGRAM}/stats")
    got = stats.get("members", stats.get("totals", {}).get("members"))
    if got != members:
        sys.exit(f"import: the program counts {got} members, not {members}: {json.dumps(stats)[:400]}")


def sample(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    step = max(1, len(rows) // 200)
    for x in rows[::step] + rows[-1:]:
        a = get(f"/v1/accounts/{account_id(PROGRAM, x['customer'])}")
        assert a["balance"] == int(x["openingBalance"]) + WELCOME, (x, a)
        if x["tier"]:
            assert a["tier"]["name"] == x["tier"], (x, a)
    print(f"sample: {len(rows[::step]) + 1} members hold their opening balance and tier")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "write":
        write(int(sys.argv[2]), sys.argv[3])
    elif cmd == "records":
        print(records(sys.argv[2]))
    elif cmd == "folded":
        print(folded())
    elif cmd == "ready":
        ready()
    elif cmd == "wait":
        wait(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    elif cmd == "sample":
        sample(sys.argv[2])
