"""Correctness check of the Kafka Streams peer against hand-computed balances.

    python smoke.py BOOTSTRAP PEER_JAR [--program programs/capped.json]

Produces a hand-written scenario (duplicates, cap crossings, a month boundary crossed by a
non-UTC offset, an out-of-order event, another currency, bad records and a corrected record
with a rejected record's id) plus a few hundred generated payments (with re-sent
duplicates) to `payment.completed` on BOOTSTRAP, runs the peer until it has emitted the
expected number of awards, then checks every earned record of the scenario and every
customer's balance from `loyalty-peer dump`. The scenario's expectations are literals,
computed by hand for programs/capped.json (per 100: 1 point, x1.5, cap 500 a calendar month
in UTC, EUR only); the generated part is checked against a small Python model of the same
rule (fractions, no floats). Needs kafka-python (scripts/e2e-deps). Exit status 0 when all
match.
"""
import argparse, json, os, shutil, random, subprocess, sys, tempfile, time, uuid
from datetime import datetime, timezone
from fractions import Fraction

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

p = argparse.ArgumentParser()
p.add_argument("bootstrap")
p.add_argument("jar")
p.add_argument("--program", default=os.path.join(os.path.dirname(__file__), "programs", "capped.json"))
p.add_argument("--partitions", type=int, default=1)
p.add_argument("--java-opts", default="-Xmx512m")
args = p.parse_args()

run = uuid.uuid4().hex[:8]
topic_in, topic_out = f"payment.completed.smoke.{run}", f"loyalty.peer.earned.smoke.{run}"


def env(id, customer, amount, created, currency="EUR", **extra):
    data = {"id": f"pay_{id}", "customer": customer, "amount": amount, "currency": currency}
    data.update(extra)
    return customer, json.dumps({"id": id, "type": "payment.completed", "created": created, "data": data})


# The scenario: (key, value) in produce order, and the earned records it must give,
# (event, customer, points, balance, capped), computed by hand.
S = []
S.append(env("evt_a1", "cus_A", 12000, "2026-03-01T10:00:00Z"))           # 180 -> 180
S.append(env("evt_a1", "cus_A", 12000, "2026-03-01T10:00:00Z"))           # duplicate
S.append(env("evt_a2", "cus_A", 20000, "2026-03-15T12:00:00Z"))           # 300 -> 480
S.append(env("evt_a3", "cus_A", 5000, "2026-03-20T12:00:00Z"))            # 75, 20 left: 20 capped -> 500
S.append(env("evt_a4", "cus_A", 1000, "2026-03-31T23:59:59Z"))            # March full: nothing
S.append(env("evt_a5", "cus_A", 1000, "2026-04-01T00:00:00Z"))            # April: 15 -> 515
S.append(env("evt_a6", "cus_A", 2000, "2026-03-31T23:30:00-01:00"))       # = April 00:30 UTC: 30 -> 545
S.append(env("evt_a7", "cus_A", 10000, "2026-03-10T00:00:00Z"))           # back in March, full: nothing
S.append(env("evt_b1", "cus_B", 99, "2026-03-02T00:00:00Z"))              # 148.5/100 -> 1
S.append(env("evt_b2", "cus_B", 66, "2026-03-02T00:00:01Z"))              # 0.99 -> 0: nothing (but seen)
S.append(env("evt_b2", "cus_B", 6600, "2026-03-02T00:00:02Z"))            # duplicate of a 0 award
S.append(env("evt_b3", "cus_B", 10000, "2026-03-03T00:00:00Z", "USD"))    # not EUR: nothing
S.append(env("evt_b4", "cus_B", -5, "2026-03-04T00:00:00Z"))              # invalid: leaves no trace
S.append(env("evt_b4", "cus_B", 1000, "2026-03-04T00:00:01Z"))            # the corrected record: 15 -> 16
S.append(("cus_B", "{not json"))                                          # malformed
S.append(env("evt_b6", "cus_B", 12.5, "2026-03-05T00:00:00Z"))            # invalid amount
S.append(env("evt_b7", "cus_B", 1000, "yesterday"))                       # invalid created
S.append(env("evt_b8", "cus_B", 1000000, "2026-05-01T00:00:00Z"))         # 15000, cap 500: 500 capped -> 516
S.append(env("evt_c1", "cus_C", 1000, "2026-03-01T00:00:00Z"))            # 15 -> 15
S.append(env("evt_c1", "cus_C", 50000, "2026-03-02T00:00:00Z"))           # duplicate, other content
S.append(env("evt_c2", "cus_C", 33400, "2026-03-31T23:59:59.999Z"))       # 501 -> 485 capped -> 500
EXPECT_EARNED = [
    ("evt_a1", "cus_A", 180, 180, False),
    ("evt_a2", "cus_A", 300, 480, False),
    ("evt_a3", "cus_A", 20, 500, True),
    ("evt_a5", "cus_A", 15, 515, False),
    ("evt_a6", "cus_A", 30, 545, False),
    ("evt_b1", "cus_B", 1, 1, False),
    ("evt_b4", "cus_B", 15, 16, False),
    ("evt_b8", "cus_B", 500, 516, True),
    ("evt_c1", "cus_C", 15, 15, False),
    ("evt_c2", "cus_C", 485, 500, True),
]
EXPECT_BALANCE = {"cus_A": 545, "cus_B": 516, "cus_C": 500}

# The generated part: 400 payments of 25 customers over March to May 2026, every 20th
# re-sent later as a duplicate. Checked against a model of the rule.
rng = random.Random(7)
G = []
sent = []
for i in range(400):
    c = f"cus_g{rng.randrange(25):02d}"
    t = datetime(2026, 3, 1, tzinfo=timezone.utc).timestamp() + rng.randrange(92 * 86400)
    created = datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    rec = env(f"evt_g{i}", c, 100 + rng.randrange(25000), created, "EUR" if rng.random() < 0.95 else "GBP")
    G.append(rec)
    sent.append(rec)
    if i % 20 == 19:
        G.append(sent[rng.randrange(len(sent))])

prog = json.load(open(args.program))["programs"][0]
rule = prog["earningRules"][0]
dec = lambda x: Fraction(str(x))
rate = dec(rule["award"]["points"]) * dec(rule.get("multiplier", 1)) / dec(rule["award"]["per"])
cap = rule.get("cap", {}).get("points")
currencies = rule.get("conditions", {}).get("currencies")
assert rule.get("window", "month") == "month"


def model(records):
    seen, bal, used, earned = set(), {}, {}, []
    for key, value in records:
        try:
            e = json.loads(value)
            d = e["data"]
            month = datetime.fromisoformat(e["created"].replace("Z", "+00:00")).astimezone(timezone.utc).strftime("%Y-%m")
            assert isinstance(d["amount"], int) and d["amount"] >= 0
        except Exception:
            continue
        c = d["customer"]
        if (c, e["id"]) in seen:
            continue
        seen.add((c, e["id"]))
        if currencies is not None and d["currency"] not in currencies:
            continue
        pts = int(d["amount"] * rate)  # floor: non-negative
        capped = False
        if cap is not None:
            left = cap - used.get((c, month), 0)
            if pts > left:
                pts, capped = left, True
        if pts <= 0:
            continue
        used[(c, month)] = used.get((c, month), 0) + pts
        bal[c] = bal.get(c, 0) + pts
        earned.append((e["id"], c, pts, bal[c], capped))
    return earned, bal


model_earned, model_bal = model(S + G)
if args.program.endswith("capped.json"):
    # The model agrees with the hand computation on the scenario (a check of the model).
    assert model(S) == (EXPECT_EARNED, EXPECT_BALANCE), model(S)
want_records = len(model_earned)

admin = KafkaAdminClient(bootstrap_servers=args.bootstrap)
admin.create_topics([NewTopic(topic_in, args.partitions, 1), NewTopic(topic_out, args.partitions, 1)])
admin.close()
prod = KafkaProducer(bootstrap_servers=args.bootstrap, acks="all", linger_ms=5)
for key, value in S + G:
    prod.send(topic_in, key=key.encode(), value=value.encode())
prod.flush()
prod.close()
print(f"smoke: produced {len(S)} scenario and {len(G)} generated records to {topic_in}; expecting {want_records} awards")

state = tempfile.mkdtemp(prefix="peer-smoke-")
log = open(os.path.join(state, "peer.log"), "w")
start = time.time()
peer = subprocess.Popen(["java", *args.java_opts.split(), "-jar", args.jar, "run", "--bootstrap-servers", args.bootstrap,
                         "--input", topic_in, "--output", topic_out, "--application-id", f"peer-smoke-{run}",
                         "--program", args.program, "--state-dir", state], stdout=log, stderr=subprocess.STDOUT)
ok = True
try:
    cons = KafkaConsumer(bootstrap_servers=args.bootstrap, isolation_level="read_committed",
                         enable_auto_commit=False, auto_offset_reset="earliest")
    tps = [TopicPartition(topic_out, i) for i in range(args.partitions)]
    cons.assign(tps)
    cons.seek_to_beginning(*tps)
    got = []
    deadline = time.time() + 120
    first = None
    while len(got) < want_records and time.time() < deadline:
        for recs in cons.poll(timeout_ms=500).values():
            for r in recs:
                if first is None:
                    first = time.time() - start
                v = json.loads(r.value)
                assert r.key.decode() == v["customer"]
                got.append((v["event"], v["customer"], v["points"], v["balance"], v["capped"]))
    time.sleep(3)  # anything beyond the expected count would be a double award
    for recs in cons.poll(timeout_ms=1000).values():
        for r in recs:
            v = json.loads(r.value)
            got.append((v["event"], v["customer"], v["points"], v["balance"], v["capped"]))
    cons.close()
    print(f"smoke: {len(got)} earned records read, the first {first:.1f} s after the peer started")
    # Per customer, the order is the produce order (one partition per customer).
    for c in sorted({r[1] for r in model_earned} | {r[1] for r in got}):
        mine = [r for r in got if r[1] == c]
        want = [r for r in model_earned if r[1] == c]
        if mine != want:
            ok = False
            print(f"smoke: MISMATCH for {c}:\n  peer  {mine}\n  model {want}")
    scen = [r for r in got if r[1] in EXPECT_BALANCE]
    if args.program.endswith("capped.json"):
        if scen != EXPECT_EARNED:
            ok = False
            print(f"smoke: MISMATCH in the scenario:\n  peer {scen}\n  hand {EXPECT_EARNED}")
        else:
            print("smoke: the scenario's earned records match the hand computation:")
            for r in scen:
                print(f"  {r}")
    dump = subprocess.run(["java", *args.java_opts.split(), "-jar", args.jar, "dump", "--bootstrap-servers", args.bootstrap,
                           "--output", topic_out], capture_output=True, text=True, check=True)
    lines = dump.stdout.splitlines()
    balances = {json.loads(l)["customer"]: json.loads(l)["balance"] for l in lines}
    if [json.loads(l)["customer"] for l in lines] != sorted(balances):
        ok = False
        print("smoke: dump is not sorted by customer")
    if balances != model_bal:
        ok = False
        print(f"smoke: MISMATCH in dumped balances:\n  peer  {balances}\n  model {model_bal}")
    for c, b in EXPECT_BALANCE.items():
        if args.program.endswith("capped.json") and balances.get(c) != b:
            ok = False
            print(f"smoke: {c}: dump says {balances.get(c)}, hand computation {b}")
    print(f"smoke: dump: {len(balances)} customers; " + " ".join(f"{c}={balances.get(c)}" for c in EXPECT_BALANCE))
finally:
    peer.terminate()
    peer.wait(60)
    log.close()
print("smoke: peer log:\n  " + open(os.path.join(state, "peer.log")).read().strip().replace("\n", "\n  "))
shutil.rmtree(state, ignore_errors=True)
print("smoke: OK" if ok else "smoke: FAILED")
sys.exit(0 if ok else 1)
