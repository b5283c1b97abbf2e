"""End to end: upstream producers and downstream consumers (kafka-python), Apache Kafka, and the
engine as its own process, killed with SIGKILL and restarted while it works."""
import hashlib
import hmac
import json
import random
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest
import stripe
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from conftest import SECRET, Engine, accounts, fold, loyalty_bin, wait_for

CONFIG = {"programs": [{
    "id": "prog_e2e", "currency": "EUR", "autoEnroll": True,
    "earningRules": [
        {"id": "rule_purchase", "trigger": "payment.completed",
         "award": {"type": "per_amount", "per": 100, "points": 1}, "multiplier": 1.5,
         "cap": {"points": 4000}, "window": "month"},
        {"id": "rule_welcome", "trigger": "loyalty.account.created",
         "award": {"type": "fixed", "points": 50}}]}]}


def now_minus(seconds):
    t = datetime.now(timezone.utc) - timedelta(seconds=seconds)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def payments(n, customers, seed):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        c = f"cus_{rng.randrange(customers):04d}"
        out.append({"id": f"evt_{seed}_{i}", "type": "payment.completed",
                    "created": now_minus(3600 - i % 3600),
                    "data": {"id": f"pay_{seed}_{i}", "customer": c,
                             "amount": rng.randrange(100, 30000), "currency": "EUR"}})
    return out


def producer(bootstrap):
    return KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                         enable_idempotence=True, retries=10)


def send_all(bootstrap, topic, records, raw=()):
    p = producer(bootstrap)
    for r in records:
        p.send(topic, key=r["data"].get("customer", "").encode(), value=json.dumps(r).encode())
    for key, value in raw:
        p.send(topic, key=key, value=value)
    p.flush()
    p.close()


def read_topic(bootstrap, topic, at_least, timeout=60):
    """Every message of partition 0 of `topic`, waiting until there are `at_least`."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                      consumer_timeout_ms=1000)
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    got = []

    def more():
        got.extend(c)
        return len(got) >= at_least

    try:
        wait_for(more, timeout, f"{at_least} messages on {topic}")
    finally:
        c.close()
    return got


def write_config(workdir):
    path = workdir / "programs.json"
    path.write_text(json.dumps(CONFIG))
    return path


def lines_of(text, kind):
    return [json.loads(l) for l in text.splitlines() if json.loads(l)["kind"] == kind]


def balances(text):
    return {k: v["balance"] for k, v in accounts(text).items()}


def check_exactly_once(broker, eng, cfg, expected, n_malformed):
    """The engine's state equals the fold over the same input: nothing lost or doubled;
    every published event id carries one payload and a valid signature; the DLQ holds the
    rejected records' original bytes; the log folds to the live state; replay equals live."""
    live = eng.export()
    # No transaction lost or doubled: the same transactions as the fold.
    assert sorted((t["customer"], t["points"], t["source"]) for t in lines_of(live, "transaction")) == \
        sorted((t["customer"], t["points"], t["source"]) for t in lines_of(expected, "transaction"))
    ids = [t["id"] for t in lines_of(live, "transaction")]
    assert len(ids) == len(set(ids))
    # Rejections: exactly the fold's (a re-appended record is not an upstream duplicate).
    reasons = sorted(r["reason"] for r in lines_of(live, "rejected"))
    assert reasons == sorted(r["reason"] for r in lines_of(expected, "rejected"))

    # Every outbound event id that appears more than once carries the same payload, every
    # event of the ledger was published, and every signature verifies with Stripe's verifier.
    earned = [e for e in lines_of(live, "event") if e["type"] == "loyalty.points.earned"]
    msgs = read_topic(broker["bootstrap"], eng.topics["earned"], len(earned))
    by_id = {}
    for m in msgs:
        h = dict(m.headers)
        eid = h["x-loyalty-event-id"].decode()
        assert by_id.setdefault(eid, m.value) == m.value, f"event {eid} published with two payloads"
        assert json.loads(m.value)["id"] == eid
        sig = h["x-vinr-signature"].decode()
        assert stripe.WebhookSignature.verify_header(m.value.decode(), sig, SECRET, tolerance=None)
    assert set(by_id) == {e["id"] for e in earned}

    # The dead-letter topic holds every rejected record, its original bytes, the reason in a
    # header. The outbox is published at least once (a crash between delivery and trimming
    # sends an entry again): a repeat carries the id of the first (x-loyalty-event-id) and
    # is the same message, byte for byte, so the distinct ids are exactly the rejections.
    by_dlq_id, dlq = {}, []
    for m in read_topic(broker["bootstrap"], eng.topics["dlq"], len(reasons)):
        h = dict(m.headers)
        did = h["x-loyalty-event-id"].decode()
        assert did.startswith("dlq_"), did
        key = (m.key, m.value, tuple(m.headers))
        assert by_dlq_id.setdefault(did, key) == key, f"dead letter {did} sent with two contents"
        if len(by_dlq_id) > len(dlq):
            dlq.append(m)
    assert sorted(dict(m.headers)["x-loyalty-reason"].decode() for m in dlq) == reasons
    assert sorted(m.value for m in dlq if dict(m.headers)["x-loyalty-reason"] == b"malformed") == \
        sorted(v for _, v in MALFORMED[:n_malformed])

    # Every input record entered the log once (the raw log, not `loyalty log`'s view).
    raw = read_topic(broker["bootstrap"], eng.topics["log"], 1)
    sources = [(h.get("x-loyalty-src-topic"), h.get("x-loyalty-src-offset"))
               for h in (dict(m.headers) for m in raw) if "x-loyalty-src-offset" in h]
    assert len(sources) == len(set(sources)), "an input record entered the log twice"

    # `loyalty log` prints each record once; folding it prints what the live engine stored.
    log = subprocess.run([loyalty_bin(), "log", "--brokers", broker["bootstrap"],
                          "--log-topic", eng.topics["log"]], capture_output=True, check=True).stdout.decode()
    assert fold(cfg, log.splitlines()) == live
    # The log carries every program itself: a fold with no configured program agrees too.
    empty = cfg.parent / "no-programs.json"
    empty.write_text('{"programs": []}')
    assert fold(empty, log.splitlines()) == live

    # A replay into a new directory rebuilds the same state, byte for byte, publishing nothing.
    replayed = eng.state.parent / (eng.state.name + ".replayed")
    subprocess.run([loyalty_bin(), "replay", "--state", str(replayed)] + eng.args(),
                   capture_output=True, check=True)
    out = subprocess.run([loyalty_bin(), "export", "--state", str(replayed)], capture_output=True, check=True)
    assert out.stdout.decode() == live
    return live, msgs


MALFORMED = [(b"cus_x", b"this is not json"), (b"cus_y", b'{"id": "evt_bad"}')]


def test_kill9_while_working_loses_and_doubles_nothing(broker, workdir, prefix):
    cfg = write_config(workdir)
    eng = Engine(broker["bootstrap"], cfg, prefix, workdir / "state").start()
    events = payments(3000, 150, seed=1)
    dups = [dict(e) for e in events[:20]]  # upstream duplicates: the same ids again
    expected = fold(cfg, [json.dumps(e) for e in events + dups] + [m.decode() for _, m in MALFORMED])
    n_tx = len(lines_of(expected, "transaction"))
    send_all(broker["bootstrap"], eng.topics["payments"], events + dups, raw=MALFORMED)

    # SIGKILL the engine at several points of its progress, restarting it each time.
    for share in (0.1, 0.35, 0.6, 0.85):
        wait_for(lambda: len(lines_of(eng.export(), "transaction")) >= share * n_tx, 120,
                 f"{share:.0%} of the transactions")
        eng.kill9()
        eng.start()
    # Everything, the records that change no balance (duplicates, malformed) included: the
    # live state is then exactly the fold over the same input.
    wait_for(lambda: eng.export() == expected, 180, "the state to equal the fold over the same input")
    eng.stop()
    live, _ = check_exactly_once(broker, eng, cfg, expected, len(MALFORMED))
    assert [r["reason"] for r in lines_of(live, "rejected")].count("duplicate") == 20


@pytest.mark.parametrize("failpoint", ["sequence-after-log-ack", "fold-after-commit", "publish-after-ack"])
def test_crash_in_each_window_loses_and_doubles_nothing(broker, workdir, prefix, failpoint):
    cfg = write_config(workdir)
    eng = Engine(broker["bootstrap"], cfg, prefix, workdir / "state").start(failpoint=f"{failpoint}:2")
    events = payments(800, 60, seed=7)
    expected = fold(cfg, [json.dumps(e) for e in events] + [m.decode() for _, m in MALFORMED])
    for i in range(0, len(events), 200):
        send_all(broker["bootstrap"], eng.topics["payments"], events[i:i + 200])
    send_all(broker["bootstrap"], eng.topics["payments"], [], raw=MALFORMED)
    # The failpoint aborts the engine (SIGABRT: no unwinding, no flush).
    wait_for(lambda: eng.proc.poll() is not None, 120, f"the failpoint {failpoint}")
    assert eng.proc.returncode == -6, f"exit {eng.proc.returncode}:\n{eng.log_tail()}"
    eng.start()
    # Everything, the records that change no balance (duplicates, malformed) included: the
    # live state is then exactly the fold over the same input.
    wait_for(lambda: eng.export() == expected, 180, "the state to equal the fold over the same input")
    eng.stop()
    check_exactly_once(broker, eng, cfg, expected, len(MALFORMED))


def test_broker_briefly_unreachable(broker, workdir, prefix):
    cfg = write_config(workdir)
    eng = Engine(broker["bootstrap"], cfg, prefix, workdir / "state").start()
    first, second = payments(300, 40, seed=2), payments(300, 40, seed=3)
    send_all(broker["bootstrap"], eng.topics["payments"], first)
    want_first = accounts(fold(cfg, [json.dumps(e) for e in first]))
    wait_for(lambda: {k: v["balance"] for k, v in accounts(eng.export()).items()}
             == {k: v["balance"] for k, v in want_first.items()}, 120, "the first half")
    broker["proxy"].pause()
    try:
        # The outage itself lasts a few seconds (this sleep is the fault, not a wait for a
        # result); the engine must ride it out without exiting.
        time.sleep(4)
        assert eng.proc.poll() is None, "the engine exited while the broker was unreachable"
    finally:
        broker["proxy"].resume()
    send_all(broker["bootstrap"], eng.topics["payments"], second)
    want = accounts(fold(cfg, [json.dumps(e) for e in first + second]))
    wait_for(lambda: {k: v["balance"] for k, v in accounts(eng.export()).items()}
             == {k: v["balance"] for k, v in want.items()}, 180, "every balance after the outage")
    eng.stop()
    assert len(lines_of(eng.export(), "transaction")) == len(lines_of(fold(cfg, [json.dumps(e) for e in first + second]), "transaction"))


def test_a_record_from_the_future_is_rejected_before_the_log(broker, workdir, prefix):
    cfg = write_config(workdir)
    eng = Engine(broker["bootstrap"], cfg, prefix, workdir / "state").start()
    future = payments(1, 1, seed=21)[0]
    future["id"], future["created"] = "evt_future", now_minus(-86_400)
    ok = payments(3, 2, seed=22)
    send_all(broker["bootstrap"], eng.topics["payments"], [future] + ok)
    expected = fold(cfg, [json.dumps(e) for e in ok])
    wait_for(lambda: balances(eng.export()) == balances(expected), 120, "the valid payments")
    dlq = read_topic(broker["bootstrap"], eng.topics["dlq"], 1)
    assert [dict(m.headers)["x-loyalty-reason"] for m in dlq] == [b"invalid"]
    assert json.loads(dlq[0].value)["id"] == "evt_future"
    assert b"ahead" in dict(dlq[0].headers)["x-loyalty-detail"]
    eng.stop()
    # It never entered the log: the state is the fold of the others alone.
    assert eng.export() == expected
    log = subprocess.run([loyalty_bin(), "log", "--brokers", broker["bootstrap"],
                          "--log-topic", eng.topics["log"]], capture_output=True, check=True).stdout.decode()
    assert "evt_future" not in log
    # The configured program entered the log stamped with the engine's wall clock (not 1970).
    update = next(json.loads(l) for l in log.splitlines()
                  if json.loads(l).get("type") == "loyalty.program.updated")
    stamped = datetime.strptime(update["created"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert abs((datetime.now(timezone.utc) - stamped).total_seconds()) < 3600, update["created"]


def test_upstream_cannot_forge_a_partitions_message(broker, workdir, prefix):
    """The record types one partition writes to another's log (a transfer's credit, a
    stock grant, a referral award) are the engine's own: from an input topic they would
    move points no command asked for. The sequencer sends them to the DLQ as invalid, and
    they never enter the log."""
    cfg = write_config(workdir)
    eng = Engine(broker["bootstrap"], cfg, prefix, workdir / "state").start()
    ok = payments(3, 2, seed=31)
    program = CONFIG["programs"][0]["id"]
    target = ok[0]["data"]["customer"]
    forged = [
        {"id": "evt_forged_credit", "type": "loyalty.transfer.credit", "created": now_minus(60),
         "data": {"program": program, "from": "cus_nobody", "to": target, "points": 1000000,
                  "source": "evt_x", "transaction": "ptx_x"}},
        {"id": "evt_forged_award", "type": "loyalty.referral.award", "created": now_minus(60),
         "data": {"program": program, "role": "referee", "referrer": "cus_nobody",
                  "referee": target, "source": "evt_y"}},
    ]
    send_all(broker["bootstrap"], eng.topics["commands"], forged)
    send_all(broker["bootstrap"], eng.topics["payments"], ok)
    expected = fold(cfg, [json.dumps(e) for e in ok])
    wait_for(lambda: balances(eng.export()) == balances(expected), 120, "the valid payments")
    dlq = read_topic(broker["bootstrap"], eng.topics["dlq"], 2)
    assert sorted(json.loads(m.value)["id"] for m in dlq) == ["evt_forged_award", "evt_forged_credit"]
    for m in dlq:
        assert dict(m.headers)["x-loyalty-reason"] == b"invalid"
        assert b"never by upstream" in dict(m.headers)["x-loyalty-detail"]
    eng.stop()
    assert eng.export() == expected
    log = subprocess.run([loyalty_bin(), "log", "--brokers", broker["bootstrap"],
                          "--log-topic", eng.topics["log"]], capture_output=True, check=True).stdout.decode()
    assert "evt_forged" not in log


def test_verify_signature_cli_rejects_wrong_and_stale(workdir):
    payload = workdir / "payload.json"
    payload.write_bytes(b'{"id":"evt_1"}')
    t = 1_800_000_000
    good = f"t={t},v1=" + hmac.new(SECRET.encode(), f"{t}.".encode() + payload.read_bytes(), hashlib.sha256).hexdigest()

    def run(header, *extra):
        return subprocess.run([loyalty_bin(), "verify-signature", "--secret", SECRET, "--header", header,
                               "--payload-file", str(payload), *extra], capture_output=True)

    assert run(good, "--now", str(t + 10)).returncode == 0
    assert run(good.replace(good[-1], "0" if good[-1] != "0" else "1"), "--now", str(t)).returncode == 1
    assert run(good, "--now", str(t + 10_000)).returncode == 1
    assert run(good, "--no-tolerance").returncode == 0


def pb_encode(fields):
    """A protobuf message of string fields {number: text}, encoded by hand (wire type 2)."""
    out = bytearray()
    for number, text in sorted(fields.items()):
        data = text.encode()
        out.append((number << 3) | 2)
        n = len(data)
        while n >= 0x80:
            out.append((n & 0x7F) | 0x80)
            n >>= 7
        out.append(n)
        out += data
    return bytes(out)


def pb_decode(buf):
    """The string fields of a protobuf message, decoded by hand."""
    fields, i = {}, 0
    while i < len(buf):
        key = buf[i]
        i += 1
        n, shift = 0, 0
        while True:
            b = buf[i]
            i += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        assert key & 7 == 2, "only length-delimited fields are expected"
        fields[key >> 3] = buf[i:i + n].decode()
        i += n
    return fields


def test_protobuf_in_and_out_and_replay_publish(broker, workdir, prefix):
    """Inbound protobuf told apart by its content-type header; outbound protobuf with
    --format protobuf, signed over the protobuf bytes; replay --publish sends the same ids
    and signatures again."""
    cfg = write_config(workdir)
    eng = Engine(broker["bootstrap"], cfg, prefix, workdir / "state", extra=["--format", "protobuf"]).start()
    events = payments(50, 10, seed=11)
    p = producer(broker["bootstrap"])
    for e in events[:25]:
        value = pb_encode({1: e["id"], 2: e["type"], 3: e["created"], 4: json.dumps(e["data"])})
        p.send(eng.topics["payments"], key=e["data"]["customer"].encode(), value=value,
               headers=[("content-type", b"application/x-protobuf")])
    for e in events[25:]:
        p.send(eng.topics["payments"], key=e["data"]["customer"].encode(), value=json.dumps(e).encode())
    # A protobuf-flagged value that does not decode: malformed, and the detail says why.
    p.send(eng.topics["payments"], key=b"cus_pb", value=b"\xff\xff\xff",
           headers=[("content-type", b"application/x-protobuf")])
    p.flush()
    p.close()
    expected = fold(cfg, [json.dumps(e) for e in events])
    wait_for(lambda: balances(eng.export()) == balances(expected), 120, "the protobuf and JSON payments")
    bad = read_topic(broker["bootstrap"], eng.topics["dlq"], 1)[0]
    assert dict(bad.headers)["x-loyalty-reason"] == b"malformed"
    detail = dict(bad.headers)["x-loyalty-detail"].decode()
    assert "protobuf" in detail and "JSON object" not in detail, detail
    eng.stop()
    live = eng.export()
    # `loyalty export` is the fold of `loyalty log`, the undecodable record's line included.
    log = subprocess.run([loyalty_bin(), "log", "--brokers", broker["bootstrap"],
                          "--log-topic", eng.topics["log"]], capture_output=True, check=True).stdout.decode()
    assert fold(cfg, log.splitlines()) == live
    earned = [e for e in lines_of(live, "event") if e["type"] == "loyalty.points.earned"]
    msgs = read_topic(broker["bootstrap"], eng.topics["earned"], len(earned))
    first = {}
    for m in msgs:
        h = dict(m.headers)
        assert h["content-type"] == b"application/x-protobuf"
        env = pb_decode(m.value)
        assert env[2] == "loyalty.points.earned" and env[1] == h["x-loyalty-event-id"].decode()
        assert json.loads(env[4])["account"].startswith("loy_")
        # The signature covers the protobuf bytes: t=<created>,v1=HMAC("<t>.<payload>").
        t, v1 = [kv.split("=", 1)[1] for kv in h["x-vinr-signature"].decode().split(",")]
        assert hmac.new(SECRET.encode(), t.encode() + b"." + m.value, hashlib.sha256).hexdigest() == v1
        first[env[1]] = (m.value, h["x-vinr-signature"])
    assert set(first) == {e["id"] for e in earned}

    # Replay with --publish: the same ids, payloads and signatures, published again.
    subprocess.run([loyalty_bin(), "replay", "--publish", "--state", str(workdir / "replayed")] + eng.args(),
                   capture_output=True, check=True)
    again = read_topic(broker["bootstrap"], eng.topics["earned"], 2 * len(msgs))
    for m in again[len(msgs):]:
        h = dict(m.headers)
        eid = h["x-loyalty-event-id"].decode()
        assert first[eid] == (m.value, h["x-vinr-signature"])


def test_demotion_through_clock_ticks_survives_kill9_and_replay(broker, workdir, prefix):
    """A member promoted 40 days ago on a rolling one-month period is demoted by the
    engine's own clock ticks (no traffic carries the clock), and the demotion survives a
    SIGKILL and a replay.

    The program enters the log through loyalty.commands, stamped before the payment: a
    program configured with --config enters the log stamped with the engine's wall clock,
    and a payment 40 days older is then a late event that never counts at the clock."""
    config = {"programs": [{
        "id": "prog_tiers", "currency": "EUR", "autoEnroll": True,
        "earningRules": [{"id": "rule_p", "trigger": "payment.completed",
                          "award": {"type": "per_amount", "per": 100, "points": 1}}],
        "tierConfig": {"qualifyOn": "spend", "period": {"type": "rolling", "months": 1},
                       "tiers": [{"name": "Member", "rank": 0, "threshold": 0},
                                 {"name": "Silver", "rank": 1, "threshold": 10000}]}}]}
    cfg = workdir / "programs.json"
    cfg.write_text('{"programs": []}')
    # No tick before the payment (the first comes an hour after start): the clock is the
    # payment's time when it is applied.
    eng = Engine(broker["bootstrap"], cfg, prefix, workdir / "state").start()
    update = {"id": "cfg_tiers", "type": "loyalty.program.updated", "created": now_minus(41 * 86_400),
              "data": config["programs"][0]}
    payment = {"id": "evt_old", "type": "payment.completed", "created": now_minus(40 * 86_400),
               "data": {"id": "pay_old", "customer": "cus_T", "amount": 15000, "currency": "EUR"}}
    # One producer, one partition each: the update is in the log before the payment.
    send_all(broker["bootstrap"], eng.topics["commands"], [update])
    wait_for(lambda: "cfg_tiers" in subprocess.run(
        [loyalty_bin(), "log", "--brokers", broker["bootstrap"], "--log-topic", eng.topics["log"]],
        capture_output=True, check=True).stdout.decode(), 60, "the program in the log")
    send_all(broker["bootstrap"], eng.topics["payments"], [payment])

    def changes():
        return [e for e in lines_of(eng.export(), "event") if e["type"] == "loyalty.tier.changed"]

    wait_for(lambda: len(changes()) == 1, 60, "the promotion")
    # Restarted with a tick a second: the ticks carry the clock to now.
    eng.kill9()
    eng.extra = ["--tick-interval-secs", "1"]
    eng.start()
    got = wait_for(lambda: (c := changes()) and len(c) == 2 and c, 60, "the promotion and the demotion")
    up, down = got
    assert (up["data"]["direction"], up["data"]["toTier"]) == ("up", "Silver")
    assert (down["data"]["direction"], down["data"]["toTier"]) == ("down", "Member")
    # Stamped with the local day boundary at which it fell due, after the payment left the
    # window: neither the payment's time nor a tick's.
    assert down["created"].endswith("T00:00:00Z") and down["created"] > payment["created"]
    eng.kill9()
    eng.start()
    eng.stop()
    live = eng.export()
    assert [e["id"] for e in lines_of(live, "event") if e["type"] == "loyalty.tier.changed"] == [up["id"], down["id"]]
    assert accounts(live)[("prog_tiers", "cus_T")]["tier"]["name"] == "Member"
    replayed = workdir / "replayed"
    subprocess.run([loyalty_bin(), "replay", "--state", str(replayed)] + eng.args(), capture_output=True, check=True)
    out = subprocess.run([loyalty_bin(), "export", "--state", str(replayed)], capture_output=True, check=True)
    assert out.stdout.decode() == live
    # Published at least once (a kill -9 before the outbox is trimmed sends it again, with
    # the same id and bytes): the distinct events, in order, are the promotion and demotion.
    msgs = read_topic(broker["bootstrap"], f"{prefix}loyalty.tier.changed", 2)
    distinct = {}
    for m in msgs:
        assert distinct.setdefault(dict(m.headers)["x-loyalty-event-id"], m.value) == m.value
    assert [json.loads(v)["data"]["direction"] for v in distinct.values()] == ["up", "down"]


def test_redemption_refund_and_transfer_survive_kill9_and_replay(broker, workdir, prefix):
    config = {"programs": [{
        "id": "prog_life", "currency": "EUR", "pointsExpiry": {"months": 12, "warnDays": 30},
        "earningRules": [{"id": "rule_p", "trigger": "payment.completed",
                          "award": {"type": "per_amount", "per": 100, "points": 1}}],
        "rewards": [{"id": "rwd_tee", "name": "T-shirt", "cost": 300, "stock": 5}]}]}
    cfg = workdir / "programs.json"
    cfg.write_text(json.dumps(config))
    eng = Engine(broker["bootstrap"], cfg, prefix, workdir / "state").start()

    def cmd(i, kind, data, ago):
        return {"id": f"c{i}", "type": kind, "created": now_minus(ago), "data": data}

    phases = [
        (eng.topics["commands"], [cmd(1, "loyalty.account.enroll", {"customer": "cus_A", "program": "prog_life"}, 600),
                                  cmd(2, "loyalty.account.enroll", {"customer": "cus_B", "program": "prog_life"}, 600)]),
        (eng.topics["payments"], [{"id": "p1", "type": "payment.completed", "created": now_minus(500),
                                   "data": {"id": "pay_A", "customer": "cus_A", "amount": 50000, "currency": "EUR"}},
                                  {"id": "p2", "type": "payment.completed", "created": now_minus(500),
                                   "data": {"id": "pay_B", "customer": "cus_B", "amount": 10000, "currency": "EUR"}}]),
        (eng.topics["commands"], [cmd(3, "loyalty.redemption.create", {"customer": "cus_A", "program": "prog_life", "reward": "rwd_tee"}, 400),
                                  cmd(4, "loyalty.points.transfer", {"program": "prog_life", "from": "cus_A", "to": "cus_B", "points": 100}, 400),
                                  cmd(5, "loyalty.redemption.create", {"customer": "cus_B", "program": "prog_life", "reward": "rwd_nope"}, 400)]),
        (eng.topics["refunds"], [{"id": "r1", "type": "payment.refunded", "created": now_minus(300),
                                  "data": {"id": "re_A", "payment": "pay_A", "customer": "cus_A", "amount": 25000, "currency": "EUR"}}]),
    ]
    sent = []
    for i, (topic, records) in enumerate(phases):
        send_all(broker["bootstrap"], topic, records)
        sent += records
        want = fold(cfg, [json.dumps(r) for r in sent])
        wait_for(lambda: eng.export() == want, 120, f"phase {i + 1}")
        if i == 2:
            eng.kill9()
            eng.start()
    eng.stop()
    live = eng.export()
    assert balances(live) == {("prog_life", "cus_A"): -150, ("prog_life", "cus_B"): 200}
    kinds = [t["type"] for t in lines_of(live, "transaction")]
    assert kinds == ["award", "award", "redemption", "transfer_out", "transfer_in", "reversal"]
    rejected = [e for e in lines_of(live, "event") if e["type"] == "loyalty.redemption.rejected"]
    assert [e["data"]["reason"] for e in rejected] == ["not_available"]
    # Published at least once, and always with the same id and payload (downstream
    # deduplicates on the id).
    redeemed = {}
    for m in read_topic(broker["bootstrap"], f"{prefix}loyalty.reward.redeemed", 1):
        assert redeemed.setdefault(json.loads(m.value)["id"], m.value) == m.value
    assert [json.loads(v)["data"]["cost"] for v in redeemed.values()] == [300]
    check_exactly_once(broker, eng, cfg, fold(cfg, [json.dumps(r) for r in sent]), 0)
