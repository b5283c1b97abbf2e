"""The engine beside its Kafka Streams peer: the same input, the same broker, the same program.

    python versus.py BOOTSTRAP LOYALTY_BIN PEER_JAR [--events 100000] [--customers 20000]
                     [--program benches/peer/programs/capped.json] [--rate 2000] [--seconds 10]

1. Backlog: EVENTS payments (the traffic of bench.py: `loyalty loadgen`'s customers, amounts
   and ids, spread over the year before now, so that monthly caps bite) are produced to one input topic.
   Then the engine alone (`loyalty run`, its own state and topics) folds them, and stops;
   then the peer alone (fresh application id and state) folds the same topic, and stops.
   Each one's output topic stamps records with the broker's append time (LogAppendTime):
   rate = awards / (last append - first append), and launch -> last award readable.
   Every customer's balance must be the same in both (the engine's `loyalty export`, the
   peer's last `balance` per customer), and the number of awards too.
2. Latency at a fixed rate: each processor in turn, started on an empty topic and warmed up
   with one record, is sent RATE payments a second for SECONDS seconds, each of a new
   customer (one award each, keyed by it); latency = the award's append time on the output
   topic - the payment's send time (one machine, one clock). p50 and p99.

Prints the figures and the ratio engine / peer. Exit 1 when a balance or a count differs.
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time, uuid

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

here = os.path.dirname(os.path.abspath(__file__))
p = argparse.ArgumentParser()
p.add_argument("bootstrap")
p.add_argument("loyalty")
p.add_argument("jar")
p.add_argument("--events", type=int, default=100_000)
p.add_argument("--customers", type=int, default=20_000)
p.add_argument("--seed", type=int, default=1)
p.add_argument("--program", default=os.path.join(here, "programs", "capped.json"))
p.add_argument("--rate", type=int, default=2000)
p.add_argument("--seconds", type=float, default=10)
p.add_argument("--java-opts", default="-Xmx512m")
p.add_argument("--skip-latency", action="store_true")
args = p.parse_args()
M64 = (1 << 64) - 1
run = uuid.uuid4().hex[:8]
work = tempfile.mkdtemp(prefix="versus-")


def traffic(n, customers, seed, start=None, span=365 * 86400, prefix="evt_load"):
    """loadgen.rs's Traffic with no refunds, commands or program updates (as bench.py), over
    the year before now: the engine refuses a record more than 5 minutes ahead of its wall
    clock (the fold has no wall clock and would count it)."""
    start = int(time.time()) - span - 3600 if start is None else start
    x = ((seed * 0x9E3779B97F4A7C15) & M64) | 1

    def nxt():
        nonlocal x
        x = (x * 6364136223846793005 + 1442695040888963407) & M64
        return x >> 11
    for i in range(n):
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start + (i * span) // n))
        eid = f"{prefix}_{i}"
        nxt()
        r = nxt() & 0xFFFFFFFF
        c = f"cus_{(r * r * customers) >> 64:06d}"
        amount = 100 + nxt() % 25000
        channel = "pos" if nxt() % 10 < 8 else "web"
        nxt()
        yield c, (f'{{"id":"{eid}","type":"payment.completed","created":"{created}","data":{{"id":"pay_{eid}",'
                  f'"customer":"{c}","amount":{amount},"currency":"EUR","metadata":{{"channel":"{channel}"}}}}}}')


def create(*topics, append_time=()):
    admin = KafkaAdminClient(bootstrap_servers=args.bootstrap)
    admin.create_topics([NewTopic(t, 1, 1, topic_configs={"message.timestamp.type": "LogAppendTime"}
                                  if t in append_time else {}) for t in topics])
    admin.close()


def end(topic, committed=False):
    c = KafkaConsumer(bootstrap_servers=args.bootstrap, isolation_level="read_committed" if committed else "read_uncommitted")
    tp = TopicPartition(topic, 0)
    n = c.end_offsets([tp])[tp]
    c.close()
    return n


def read_all(topic, committed=False):
    c = KafkaConsumer(bootstrap_servers=args.bootstrap, enable_auto_commit=False, max_poll_records=10000,
                      isolation_level="read_committed" if committed else "read_uncommitted")
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    last = c.end_offsets([tp])[tp]
    out = []
    while c.position(tp) < last:
        for recs in c.poll(timeout_ms=500).values():
            out.extend(recs)
    c.close()
    return out


class Engine:
    name = "engine"

    def __init__(self, tag, input_topic):
        self.prefix = f"v{run}{tag}."
        self.input = input_topic
        self.output = f"{self.prefix}loyalty.points.earned"
        self.state = os.path.join(work, f"engine-{tag}")
        # The output topic stamped by the broker (created before the engine, which then
        # leaves it as it is).
        create(self.output, append_time=(self.output,))

    def start(self):
        cmd = [args.loyalty, "run", "--brokers", args.bootstrap, "--config", args.program,
               "--state", self.state, "--signing-secret", "versus", "--input-topics", self.input,
               "--log-topic", f"{self.prefix}loyalty.log", "--dlq-topic", f"{self.prefix}loyalty.dlq",
               "--output-prefix", self.prefix, "--batch-size", "5000", "--tick-interval-secs", "3600"]
        self.proc = subprocess.Popen(cmd, stdout=open(self.state + ".log", "ab"), stderr=subprocess.STDOUT)
        return self

    def stop(self):
        self.proc.terminate()
        self.proc.wait(60)

    def balances(self):
        out = subprocess.run([args.loyalty, "export", "--state", self.state], capture_output=True, check=True)
        return {a["customer"]: a["balance"] for a in map(json.loads, out.stdout.decode().splitlines())
                if a["kind"] == "account"}

    def award(self, value):
        return json.loads(value)["data"]


class Peer:
    name = "peer"
    committed = True

    def __init__(self, tag, input_topic):
        self.input = input_topic
        self.tag = tag
        self.output = f"loyalty.peer.earned.{run}{tag}"
        self.state = os.path.join(work, f"peer-{tag}")
        create(self.output, append_time=(self.output,))

    def start(self):
        cmd = ["java", *args.java_opts.split(), "-jar", args.jar, "run", "--bootstrap-servers", args.bootstrap,
               "--input", self.input, "--output", self.output, "--application-id", f"versus-{run}-{self.tag}",
               "--program", args.program, "--state-dir", self.state]
        os.makedirs(self.state, exist_ok=True)
        self.proc = subprocess.Popen(cmd, stdout=open(self.state + ".log", "ab"), stderr=subprocess.STDOUT)
        return self

    def stop(self):
        self.proc.terminate()
        self.proc.wait(60)

    def award(self, value):
        return json.loads(value)


def backlog(proc_cls, input_topic, want):
    proc = proc_cls("b", input_topic)
    committed = getattr(proc, "committed", False)
    t0 = time.time()
    proc.start()
    deadline = t0 + 900
    while end(proc.output, committed) < want and time.time() < deadline:
        if proc.proc.poll() is not None:
            sys.exit(f"versus: the {proc.name} exited {proc.proc.returncode}; see {proc.state}.log")
        time.sleep(0.05)
    readable = time.time() - t0
    proc.stop()
    recs = [r for r in read_all(proc.output, committed)]
    stamps = [r.timestamp / 1000 for r in recs]
    last = {}
    for r in recs:
        a = proc.award(r.value)
        last[a["customer"]] = a["balance"]
    rate = len(recs) / max(max(stamps) - min(stamps), 1e-9)
    print(f"versus: {proc.name}: {len(recs)} awards; {rate:,.0f} records/s between the first and last award "
          f"({max(stamps) - min(stamps):.2f} s); launch -> last award readable {readable:.2f} s "
          f"({args.events / readable:,.0f} records/s)")
    return proc, len(recs), rate, readable, last


def latency(proc_cls, tag):
    topic = f"payment.completed.versus.{run}{tag}"
    create(topic)
    proc = proc_cls(tag, topic)
    committed = getattr(proc, "committed", False)
    proc.start()
    prod = KafkaProducer(bootstrap_servers=args.bootstrap, acks="all", linger_ms=0)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def pay(i, c):
        return (f'{{"id":"evt_lat_{tag}_{i}","type":"payment.completed","created":"{now}","data":{{"id":"pay_lat_{tag}_{i}",'
                f'"customer":"{c}","amount":10000,"currency":"EUR"}}}}').encode()
    # Warm-up: one record, until its award is readable (start-up is not latency).
    prod.send(topic, key=b"cus_warm", value=pay("w", "cus_warm"))
    prod.flush()
    deadline = time.time() + 120
    while end(proc.output, committed) < 1:
        if time.time() > deadline or proc.proc.poll() is not None:
            sys.exit(f"versus: the {proc.name} did not warm up; see {proc.state}.log")
        time.sleep(0.05)
    n = int(args.rate * args.seconds)
    sent = {}
    t0 = time.time()
    for i in range(n):
        due = t0 + i / args.rate
        while time.time() < due:
            time.sleep(max(0, min(due - time.time(), 0.001)))
        c = f"cus_lat_{i:07d}"
        sent[c] = time.time()
        prod.send(topic, key=c.encode(), value=pay(i, c))
    prod.flush()
    offered = n / (time.time() - t0)
    deadline = time.time() + 120
    while end(proc.output, committed) < n + 1 and time.time() < deadline:
        time.sleep(0.1)
    proc.stop()
    lat = sorted(r.timestamp / 1000 - sent[r.key.decode()] for r in read_all(proc.output, committed)
                 if r.key.decode() in sent)
    q = lambda f: lat[min(len(lat) - 1, int(f * (len(lat) - 1)))] * 1000
    print(f"versus: {proc.name}: {len(lat)} of {n} awards at {offered:,.0f} payments/s: latency p50 {q(0.5):.1f} ms, "
          f"p99 {q(0.99):.1f} ms, max {q(1.0):.1f} ms")
    return q(0.5), q(0.99)


try:
    topic = f"payment.completed.versus.{run}"
    create(topic)
    prod = KafkaProducer(bootstrap_servers=args.bootstrap, acks="all", linger_ms=20, batch_size=512 * 1024)
    lines = []
    for key, value in traffic(args.events, args.customers, args.seed):
        prod.send(topic, key=key.encode(), value=value.encode())
        lines.append(value)
    prod.flush()
    prod.close()
    # How many awards to wait for: the engine's own fold of the same input.
    events = os.path.join(work, "events.jsonl")
    open(events, "w").write("\n".join(lines) + "\n")
    folded = subprocess.run([args.loyalty, "fold", "--config", args.program, "--events", events],
                            capture_output=True, check=True).stdout.decode().splitlines()
    want = sum(1 for l in folded if '"type":"loyalty.points.earned"' in l)
    print(f"versus: {args.events} payments of {args.customers} customers on {topic}; {want} awards expected; "
          f"program {os.path.relpath(args.program)}")
    eng, eng_n, eng_rate, eng_wall, _ = backlog(Engine, topic, want)
    engine_balances = eng.balances()
    peer, peer_n, peer_rate, peer_wall, peer_balances = backlog(Peer, topic, want)
    # A customer whose payments earned nothing has an account (balance 0) in the engine and
    # no award in the peer.
    differ = sorted(c for c in set(engine_balances) | set(peer_balances)
                    if engine_balances.get(c, 0) != peer_balances.get(c, 0))
    print(f"versus: ratio engine / peer: {eng_rate / peer_rate:.2f} (between first and last award), "
          f"{peer_wall / eng_wall:.2f} (launch -> last award)")
    ok = not differ and eng_n == peer_n == want
    print(f"versus: balances of {len(engine_balances)} customers: "
          + ("the same in both" if not differ else f"{len(differ)} DIFFER, e.g. " + ", ".join(
              f"{c}: engine {engine_balances.get(c, 0)}, peer {peer_balances.get(c, 0)}" for c in differ[:5]))
          + f"; awards: engine {eng_n}, peer {peer_n}, expected {want}")
    if not args.skip_latency:
        e50, e99 = latency(Engine, "l")
        p50, p99 = latency(Peer, "m")
        print(f"versus: latency at {args.rate}/s, engine / peer: p50 {e50 / p50:.2f}, p99 {e99 / p99:.2f}")
    sys.exit(0 if ok else 1)
finally:
    shutil.rmtree(work, ignore_errors=True)
