"""Throughput and start-up of the Kafka Streams peer on a real broker.

    python bench.py BOOTSTRAP PEER_JAR [--events 100000] [--customers 20000]
                    [--partitions 1] [--threads 1] [--program ../bench-config.json]
                    [--java-opts "-Xmx512m"] [--set KEY=VALUE ...]

Produces EVENTS payments (the same sequence as `loyalty loadgen --out` with
--refunds-per-mille 0 --commands-per-mille 0: same customers, amounts and ids) to a fresh
input topic of PARTITIONS partitions, and only then starts the peer (fresh application id
and state), so that it meets a full backlog. The output topic stamps records with the
broker's append time (LogAppendTime); from those stamps: start-up = peer launched -> first
award appended; rate = awards / (last append - first append). Also when the first and the
last award became readable to a read_committed consumer.
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, time, uuid
from fractions import Fraction

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

p = argparse.ArgumentParser()
p.add_argument("bootstrap")
p.add_argument("jar")
p.add_argument("--events", type=int, default=100_000)
p.add_argument("--customers", type=int, default=20_000)
p.add_argument("--seed", type=int, default=1)
p.add_argument("--partitions", type=int, default=1)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--program", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench-config.json"))
p.add_argument("--java-opts", default="-Xmx512m")
p.add_argument("--set", action="append", default=[])
p.add_argument("--broker-pid", type=int, default=0, help="to report the broker's CPU time too")
p.add_argument("--kill-after", type=float, default=0,
               help="kill -9 the peer this many seconds after launch and start it again (same state): "
                    "exactly-once means no award twice and the same balances")
args = p.parse_args()
M64 = (1 << 64) - 1


def traffic(n, customers, seed, start=1_767_225_600, span=365 * 86400, prefix="evt_load"):
    """loadgen.rs's Traffic with no refunds, commands or program updates."""
    x = ((seed * 0x9E3779B97F4A7C15) & M64) | 1
    def nxt():
        nonlocal x
        x = (x * 6364136223846793005 + 1442695040888963407) & M64
        return x >> 11
    for i in range(n):
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start + (i * span) // n))
        eid = f"{prefix}_{i}"
        nxt()  # roll
        r = nxt() & 0xFFFFFFFF
        c = f"cus_{(r * r * customers) >> 64:06d}"
        amount = 100 + nxt() % 25000
        channel = "pos" if nxt() % 10 < 8 else "web"
        nxt()  # refund slot
        yield c, (f'{{"id":"{eid}","type":"payment.completed","created":"{created}","data":{{"id":"pay_{eid}",'
                  f'"customer":"{c}","amount":{amount},"currency":"EUR","metadata":{{"channel":"{channel}"}}}}}}'), amount


prog = json.load(open(args.program))["programs"][0]
rule = prog["earningRules"][0]
rate = Fraction(str(rule["award"]["points"])) * Fraction(str(rule.get("multiplier", 1))) / Fraction(str(rule["award"]["per"]))
assert "cap" not in rule, "bench.py counts awards for uncapped programs only"

run = uuid.uuid4().hex[:8]
tin, tout = f"payment.completed.bench.{run}", f"loyalty.peer.earned.bench.{run}"
admin = KafkaAdminClient(bootstrap_servers=args.bootstrap)
admin.create_topics([NewTopic(tin, args.partitions, 1),
                     NewTopic(tout, args.partitions, 1, topic_configs={"message.timestamp.type": "LogAppendTime"})])
admin.close()
prod = KafkaProducer(bootstrap_servers=args.bootstrap, acks="all", linger_ms=20, batch_size=512 * 1024)
t = time.time()
want = 0
model = {}
for key, value, amount in traffic(args.events, args.customers, args.seed):
    prod.send(tin, key=key.encode(), value=value.encode())
    pts = int(amount * rate)
    want += pts > 0
    model[key] = model.get(key, 0) + pts
prod.flush()
prod.close()
print(f"bench: produced {args.events} payments of {args.customers} customers to {tin} ({args.partitions} partitions) "
      f"in {time.time() - t:.1f} s; expecting {want} awards")

state = tempfile.mkdtemp(prefix="peer-bench-")
cmd = ["java", *args.java_opts.split(), "-jar", args.jar, "run", "--bootstrap-servers", args.bootstrap,
       "--input", tin, "--output", tout, "--application-id", f"peer-bench-{run}", "--program", args.program,
       "--state-dir", state, "--threads", str(args.threads), "--report-every", "2"]
for s in args.set:
    cmd += ["--set", s]
cons = KafkaConsumer(bootstrap_servers=args.bootstrap, isolation_level="read_committed", enable_auto_commit=False,
                     max_poll_records=10000, fetch_max_bytes=64 << 20)
tps = [TopicPartition(tout, i) for i in range(args.partitions)]
cons.assign(tps)
cons.seek_to_beginning(*tps)
def cpu(pid):
    """User + system CPU seconds of a process."""
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(") ", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError):
        return 0.0


def machine():
    """Busy and total CPU seconds of the whole machine."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    tck = os.sysconf("SC_CLK_TCK")
    return (sum(f) - f[3] - f[4]) / tck, sum(f) / tck


log = open(os.path.join(state, "peer.log"), "w")
broker0, machine0, self0 = cpu(args.broker_pid), machine(), time.process_time()
t0 = time.time()
peer = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
last_balance = {}
got, ts_min, ts_max, seen_first, seen_last = 0, None, None, None, None
rss = 0
# While the peer runs, only end offsets are asked for (cheap): a Python consumer decoding
# every record would take CPU from the peer and the broker on a small machine. Under
# read_committed the end offset is the last stable offset: it moves when a transaction
# commits. Records are read only once it has passed the number expected (transaction
# markers take offsets too, so it passes it a little before the last award).
prev_lso, lso_moved = 0, None
try:
    deadline = t0 + 600
    while got < want and time.time() < deadline:
        time.sleep(0.05)
        lso = sum(cons.end_offsets(tps).values())
        if lso != prev_lso:
            prev_lso, lso_moved = lso, time.time()
            if seen_first is None:
                seen_first = lso_moved
        try:
            rss = max(rss, int(open(f"/proc/{peer.pid}/status").read().split("VmRSS:")[1].split()[0]))
        except Exception:
            pass
        if args.kill_after and time.time() - t0 > args.kill_after:
            peer.kill()
            peer.wait()
            print(f"bench: killed the peer (SIGKILL) {time.time() - t0:.2f} s after launch; starting it again", flush=True)
            log.write("--- killed; restarted\n")
            log.flush()
            peer = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            args.kill_after = 0
        if lso >= want:
            while True:
                batch = cons.poll(timeout_ms=200)
                if not batch:
                    break
                for recs in batch.values():
                    for r in recs:
                        got += 1
                        v = json.loads(r.value)
                        last_balance[v["customer"]] = v["balance"]
                        ts_min = r.timestamp if ts_min is None else min(ts_min, r.timestamp)
                        ts_max = r.timestamp if ts_max is None else max(ts_max, r.timestamp)
    seen_last = lso_moved  # when the last award became readable (within 50 ms)
    peer_cpu, broker_cpu, machine1, self_cpu = cpu(peer.pid), cpu(args.broker_pid) - broker0, machine(), time.process_time() - self0
finally:
    peer.terminate()
    peer.wait(60)
    log.close()
print(open(os.path.join(state, "peer.log")).read().strip())
shutil.rmtree(state, ignore_errors=True)
if got < want:
    sys.exit(f"bench: only {got} of {want} awards after 600 s")
# Anything more than expected would be an award made twice.
for recs in cons.poll(timeout_ms=2000).values():
    for r in recs:
        got += 1
        v = json.loads(r.value)
        last_balance[v["customer"]] = v["balance"]
cons.close()
model = {c: b for c, b in model.items() if b > 0}
print(f"bench: {got} awards read (expected {want}); balances of {len(last_balance)} customers "
      + ("match the model" if last_balance == model else "DIFFER from the model")
      + ("" if got == want else " -- COUNT MISMATCH"))
first, last = ts_min / 1000, ts_max / 1000
print(f"bench: {args.events} records, {args.partitions} partition(s), {args.threads} stream thread(s), {args.java_opts}")
print(f"bench: start-up: first award appended {first - t0:.2f} s after launch, readable {seen_first - t0:.2f} s")
print(f"bench: rate: {want / max(last - first, 1e-9):,.0f} records/s between the first and last append "
      f"({last - first:.2f} s); {want / (seen_last - t0):,.0f} records/s from launch to the last award readable "
      f"({seen_last - t0:.2f} s); peak RSS {rss / 1024:.0f} MB")
busy, total = machine1[0] - machine0[0], machine1[1] - machine0[1]
others = busy - peer_cpu - self_cpu - (broker_cpu if args.broker_pid else 0)
print(f"bench: CPU from launch to the end: peer {peer_cpu:.1f} s"
      + (f", broker {broker_cpu:.1f} s" if args.broker_pid else "")
      + f", this script {self_cpu:.1f} s, everything else on the machine {others:.1f} s"
      + f" (of {total:.1f} CPU-seconds, {os.cpu_count()} CPUs)")
