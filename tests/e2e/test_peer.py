"""The engine and its Kafka Streams peer (benches/peer/kafka-streams), two independent
implementations of the same rule, fold the same input on the same Apache Kafka broker: every
customer's balance must be the same in both. A difference is a bug in one of them."""
import json
import random
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from conftest import ROOT, Engine, accounts, fold, wait_for

PROGRAM = ROOT / "benches" / "peer" / "programs" / "capped.json"


@pytest.fixture(scope="session")
def peer_jar():
    out = subprocess.run(["bash", str(ROOT / "benches" / "peer" / "run-peer.sh"), "build"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    jar = Path(out.stdout.strip().splitlines()[-1])
    assert jar.is_file(), jar
    return jar


def stamp(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def traffic(seed=5):
    """Payments of 40 customers over the last 100 days (three or four calendar months, so
    the monthly cap of 500 points bites and resets), some out of time order; upstream
    duplicates; payments in a currency the rule does not count; malformed records."""
    rng = random.Random(seed)
    now = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)
    records = []
    for i in range(1500):
        t = now - timedelta(seconds=(1500 - i) * 100 * 86_400 // 1500)
        c = f"cus_{rng.randrange(40):03d}"
        records.append({"id": f"evt_{i}", "type": "payment.completed", "created": stamp(t),
                        "data": {"id": f"pay_{i}", "customer": c, "amount": rng.randrange(100, 30_000),
                                 "currency": "EUR"}})
    # Late arrivals: a tenth of the records swapped with one up to 200 places later.
    for i in range(0, 1300, 10):
        j = i + rng.randrange(1, 200)
        records[i], records[j] = records[j], records[i]
    dups = [dict(r) for r in rng.sample(records, 30)]
    usd = [{"id": f"evt_usd_{i}", "type": "payment.completed", "created": stamp(now - timedelta(days=i)),
            "data": {"id": f"pay_usd_{i}", "customer": f"cus_{i:03d}", "amount": 50_000, "currency": "USD"}}
           for i in range(20)]
    values = [json.dumps(r).encode() for r in records[:700] + dups[:15] + usd + records[700:] + dups[15:]]
    keys = [json.loads(v)["data"]["customer"].encode() for v in values]
    raw = [(b"cus_000", b"not json"), (b"cus_001", b'{"id": "evt_bad", "type": "payment.completed"}')]
    return list(zip(keys, values)) + raw


def peer_balances(bootstrap, topic, want, timeout=180):
    """The last balance of every customer on the peer's output topic, once `want` awards are
    readable (read_committed: the peer writes in transactions)."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed",
                      enable_auto_commit=False, max_poll_records=5000)
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    awards, last = 0, {}
    deadline = time.monotonic() + timeout
    while awards < want and time.monotonic() < deadline:
        for recs in c.poll(timeout_ms=250).values():
            for r in recs:
                v = json.loads(r.value)
                awards += 1
                last[v["customer"]] = v["balance"]
    # Nothing more: an award beyond those would be one made twice.
    for recs in c.poll(timeout_ms=2000).values():
        awards += len(recs)
    c.close()
    return awards, last


def test_the_engine_and_the_kafka_streams_peer_agree(broker, workdir, prefix, peer_jar):
    cfg = workdir / "programs.json"
    cfg.write_text(PROGRAM.read_text())
    eng = Engine(broker["bootstrap"], cfg, prefix, workdir / "state").start()
    p = KafkaProducer(bootstrap_servers=broker["bootstrap"], acks="all")
    records = traffic()
    for key, value in records:
        p.send(eng.topics["payments"], key=key, value=value)
    p.flush()
    p.close()

    out_topic = f"{prefix}peer.earned"
    log = open(workdir / "peer.log", "wb")
    peer = subprocess.Popen(["java", "-Xmx512m", "-jar", str(peer_jar), "run",
                             "--bootstrap-servers", broker["bootstrap"], "--input", eng.topics["payments"],
                             "--output", out_topic, "--application-id", f"{prefix}peer",
                             "--program", str(cfg), "--state-dir", str(workdir / "peer-state")],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        # Done when the engine's accounts are those of the fold over the same input (only
        # the signal to compare; the comparison is with the peer).
        want = accounts(fold(cfg, [v.decode() for _, v in records]))
        wait_for(lambda: accounts(eng.export()) == want, 180, "the engine to fold every record")
        text = eng.export()
        lines = [json.loads(l) for l in text.splitlines()]
        awards = [l for l in lines if l["kind"] == "transaction" and l["type"] == "award"]
        engine = {a["customer"]: a["balance"] for a in lines if a["kind"] == "account"}
        n, peer_last = peer_balances(broker["bootstrap"], out_topic, len(awards))
    finally:
        peer.terminate()
        peer.wait(60)
        eng.stop()
    assert n == len(awards), f"awards: engine {len(awards)}, peer {n}\n{(workdir / 'peer.log').read_text()[-2000:]}"
    # A customer whose payments earned nothing has an account at 0 in the engine and no
    # award in the peer.
    customers = set(engine) | set(peer_last)
    differ = {c: (engine.get(c, 0), peer_last.get(c, 0)) for c in customers
              if engine.get(c, 0) != peer_last.get(c, 0)}
    assert not differ, f"balances (engine, peer) differ: {differ}"
    # The cap bit: some award was cut to the month's headroom, so the test covers it.
    assert any(a["metadata"]["capped"] for a in awards)
    assert sum(engine.values()) > 0
