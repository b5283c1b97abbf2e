"""End to end: three instances of one group (`loyalty run --group`) over a log of six
partitions on Apache Kafka, each its own process, while one is killed with SIGKILL and
restarted, another is killed during the rebalance that follows, and a third is paused past
its session timeout and resumed (docs/scale-out.md).

The traffic is chosen so that its outcome does not depend on the order in which partitions
read each other's messages: each phase is sent only once the one before has settled (a
transfer's receiver is enrolled, a referral code claimed, well before they are used), and
the requests for a reward with too little stock all ask for one unit, so the number of
units granted is fixed even though which member gets one is not. The checks compare with
`loyalty fold` of the same input by one engine, with each member's redemption cost added
back (who got a unit is the one thing that may differ).
"""
import json
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from conftest import Engine, free_port, fold, loyalty_bin, wait_for

PARTITIONS = 6
KEY = "sk_group_test"
PROGRAM = "prog_g"
STOCK = 3
CONFIG = {"programs": [{
    "id": PROGRAM, "currency": "EUR",
    "earningRules": [
        {"id": "rule_buy", "trigger": "payment.completed",
         "award": {"type": "per_amount", "per": 100, "points": 1}},
        {"id": "rule_referrer", "trigger": "referral.converted", "recipient": "referrer",
         "award": {"type": "fixed", "points": 100}},
        {"id": "rule_referee", "trigger": "referral.converted", "recipient": "referee",
         "award": {"type": "fixed", "points": 50}}],
    "rewards": [{"id": "rwd_mug", "name": "Mug", "cost": 200, "stock": STOCK}]}]}


def fnv1a(text):
    """32-bit FNV-1a, as `loyalty_core::partition::of` computes it."""
    h = 0x811c9dc5
    for b in text.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def partition(customer):
    return fnv1a(customer) % PARTITIONS


def stamp(seconds_ago):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - seconds_ago))


class Member(Engine):
    """One instance of the group, with its own state directory and metrics address."""

    def __init__(self, broker, cfg, prefix, state, group, standbys):
        self.metrics_port, self.http_port = free_port(), free_port()
        super().__init__(broker, cfg, prefix, state, extra=[
            "--standby-replicas", str(standbys),
            "--group", group, "--log-partitions", str(PARTITIONS), "--input-partitions", "3",
            "--session-timeout-ms", "6000", "--tick-interval-secs", "2",
            "--metrics-addr", f"127.0.0.1:{self.metrics_port}",
            "--http-addr", f"127.0.0.1:{self.http_port}", "--api-keys", KEY])

    def call(self, method, path, body=None):
        """The HTTP API: (status, JSON body)."""
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}{path}", method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def metric(self, name):
        try:
            text = urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).read().decode()
        except OSError:
            return None
        m = re.search(rf"^{re.escape(name)} (\d+)", text, re.M)
        return int(m.group(1)) if m else None

    def args(self):
        # Ticks every 2 s instead of the suite's hour: the owner of partition 0 writes them.
        args = super().args()
        i = args.index("--tick-interval-secs")
        return args[:i] + args[i + 2:]

    def held(self):
        """The partitions this instance folds and has restored, from its /metrics."""
        try:
            text = urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).read().decode()
        except OSError:
            return set()
        return {int(p) for p, state, v in re.findall(
            r'loyalty_partitions\{partition="(\d+)",state="(\w+)"\} (\d+)', text)
            if state == "active" and v == "1"}

    def ready(self):
        try:
            return urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}/readyz", timeout=2).status == 200
        except OSError:
            return False

    def export_partition(self, p):
        out = subprocess.run([loyalty_bin(), "export", "--state", str(self.state),
                              "--partition", str(p)], capture_output=True)
        return out.stdout.decode() if out.returncode == 0 else None


def owners(members):
    """Each partition's owner, when every partition has exactly one restored owner."""
    seen = {}
    for m in members:
        if m.proc.poll() is not None:
            continue
        for p in m.held():
            if p in seen:
                return None
            seen[p] = m
    return seen if len(seen) == PARTITIONS else None


def ledgers(members):
    """Each partition's ledger as its owner stored it (None while a partition has none)."""
    own = owners(members)
    if own is None:
        return None
    out = {}
    for p, m in own.items():
        text = m.export_partition(p)
        if text is None:
            return None
        out[p] = [json.loads(l) for l in text.splitlines()]
    return out


def txs(ledger):
    return [l for lines in ledger.values() for l in lines if l["kind"] == "transaction"]


def check_api(members, ledger):
    """Every instance answers for every account, whichever serves it; lists are gathered
    from every partition; a command sent to any instance reaches the account's partition."""
    accounts = {l["id"]: l for lines in ledger.values() for l in lines if l["kind"] == "account"}
    txs_by_account = {}
    for lines in ledger.values():
        for l in lines:
            if l["kind"] == "transaction":
                txs_by_account.setdefault(l["account"], []).append(l["id"])
    for m in members:
        status, body = m.call("GET", "/v1/accounts?limit=100")
        assert status == 200 and [a["id"] for a in body["data"]] == sorted(accounts)
        for aid, line in accounts.items():
            status, body = m.call("GET", f"/v1/accounts/{aid}")
            assert status == 200 and body["balance"] == line["balance"], (aid, body)
        status, body = m.call("GET", "/v1/programs/" + PROGRAM + "/rewards")
        assert status == 200 and [r["stockLeft"] for r in body["data"]] == [0]
    # Pages of 5, forward, gather every account once and in order.
    seen, cursor = [], None
    while True:
        q = "/v1/accounts?limit=5" + (f"&starting_after={cursor}" if cursor else "")
        status, body = members[1].call("GET", q)
        assert status == 200
        seen += [a["id"] for a in body["data"]]
        if not body["has_more"]:
            break
        cursor = seen[-1]
    assert seen == sorted(accounts)
    # Every transaction of every partition once, walking pages of 7.
    seen, cursor = [], None
    while True:
        q = "/v1/points_transactions?limit=7" + (f"&starting_after={cursor}" if cursor else "")
        status, body = members[2].call("GET", q)
        assert status == 200, body
        seen += [t["id"] for t in body["data"]]
        if not body["has_more"]:
            break
        cursor = seen[-1]
    assert sorted(seen) == sorted(t for ts in txs_by_account.values() for t in ts)
    assert len(seen) == len(set(seen))
    all_tx, seen_last = seen, seen[-1]
    # Backwards from the last item, pages of 7, to the first: every item before it once,
    # in the same order (pages reach back across partitions).
    back, cursor = [], seen_last
    while True:
        status, body = members[2].call(
            "GET", f"/v1/points_transactions?limit=7&ending_before={cursor}")
        assert status == 200, body
        back = [t["id"] for t in body["data"]] + back
        if not body["has_more"]:
            break
        cursor = body["data"][0]["id"]
    assert back == all_tx[:-1]
    # One account's transactions through an instance that does not serve it.
    own = owners(members)
    aid, line = next((a, l) for a, l in accounts.items() if own[partition(l["customer"])] is not members[0])
    status, body = members[0].call("GET", f"/v1/points_transactions?account={aid}&limit=100")
    assert status == 200 and sorted(t["id"] for t in body["data"]) == sorted(txs_by_account[aid])
    # A command through that instance: the account's partition applies it.
    status, body = members[0].call("POST", f"/v1/accounts/{aid}/adjustments",
                                   {"points": 7, "reason": "goodwill"})
    assert status == 200, body
    status, body = members[0].call("GET", f"/v1/accounts/{aid}")
    assert body["balance"] == line["balance"] + 7
    status, body = members[0].call("GET", "/v1/accounts/loy_nobody")
    assert status == 404 and body["error"]["code"] == "resource_missing"
    # Refused where it arrives, before any partition is asked.
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{members[0].http_port}/v1/accounts", timeout=10)
        raise AssertionError("a request without a key was answered")
    except urllib.error.HTTPError as e:
        assert e.code == 401 and json.loads(e.read())["error"]["type"] == "authentication_error"
    status, body = members[1].call("GET", "/v1/points_transactions?limit=0")
    assert status == 400 and body["error"]["param"] == "limit"


def send(bootstrap, topic, records):
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    for r in records:
        key = r["data"].get("customer") or r["data"].get("from") or ""
        p.send(topic, key=key.encode(), value=json.dumps(r).encode())
    p.flush()
    p.close()


def read_all(bootstrap, topic):
    """Every message of every partition of `topic` as it is now."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                      consumer_timeout_ms=2000)
    parts = [TopicPartition(topic, p) for p in (c.partitions_for_topic(topic) or [])]
    c.assign(parts)
    c.seek_to_beginning(*parts)
    ends = c.end_offsets(parts)
    got = []
    while any(c.position(tp) < ends[tp] for tp in parts):
        got.extend(c)
    c.close()
    return got


@pytest.mark.parametrize("standbys", [0, 2])
def test_three_instances_six_partitions_kill_pause_and_rebalance(broker, workdir, prefix, standbys):
    """Without standbys a partition taken over is folded from its start (or the new
    owner's earlier copy); with two, every instance keeps a warm copy of every partition it
    does not hold, and takes a dead instance's partitions over from those copies."""
    cfg = workdir / "programs.json"
    cfg.write_text(json.dumps(CONFIG))
    group = f"{prefix}group"
    members = [Member(broker["bootstrap"], cfg, prefix, workdir / f"state{i}", group, standbys)
               for i in range(3)]
    try:
        three_instances(broker["bootstrap"], cfg, prefix, members, workdir, standbys)
    finally:
        for m in members:
            if m.proc and m.proc.poll() is None:
                m.proc.send_signal(signal.SIGCONT)
                m.proc.kill()
                m.proc.wait()


def three_instances(bootstrap, cfg, prefix, members, workdir, standbys):
    for m in members:
        m.start()
        # Each in turn: the first takes every partition and applies the config, the
        # others find it applied in the partitions they are given.
        wait_for(m.ready, 120, f"{m.state.name} to be ready")
    # The group split the partitions: every instance serves some.
    wait_for(lambda: all(m.held() for m in members) and owners(members), 120,
             "every instance to hold partitions")
    topics = members[0].topics

    def settled(want):
        """Waits until the partitions' ledgers hold `want` transactions in all."""
        def check():
            led = ledgers(members)
            return led if led is not None and len(txs(led)) >= want else None
        return wait_for(check, 180, f"{want} transactions across the partitions")

    # Customers on every partition; referees enrol with a referrer's code on another one.
    customers = [f"cus_{i:02d}" for i in range(18)]
    assert {partition(c) for c in customers} == set(range(PARTITIONS))
    referrals = {"cus_12": "cus_02", "cus_13": "cus_07", "cus_14": "cus_05"}
    assert all(partition(a) != partition(b) for a, b in referrals.items())
    plain = [c for c in customers if c not in referrals]

    def cmd(cid, kind, data, ago=120):
        return {"id": cid, "type": kind, "created": stamp(ago), "data": data}

    enrol = [cmd(f"enr_{c}", "loyalty.account.enroll", {"customer": c, "program": PROGRAM})
             for c in plain]
    codes = {json.loads(l)["customer"]: json.loads(l)["referralCode"]
             for l in fold(cfg, [json.dumps(r) for r in enrol]).splitlines()
             if json.loads(l)["kind"] == "account"}
    enrol_referees = [cmd(f"enr_{c}", "loyalty.account.enroll",
                          {"customer": c, "program": PROGRAM, "referralCode": codes[r]})
                      for c, r in referrals.items()]
    pays = [{"id": f"evt_pay_{c}", "type": "payment.completed", "created": stamp(100),
             "data": {"id": f"pay_{c}", "customer": c, "amount": 100_000 + 1000 * i,
                      "currency": "EUR"}} for i, c in enumerate(customers)]
    # Refunds of half of some payments, on their customers' partitions.
    refunds = [{"id": f"evt_ref_{c}", "type": "payment.refunded", "created": stamp(90),
                "data": {"id": f"re_{c}", "payment": f"pay_{c}", "customer": c,
                         "amount": 50_000, "currency": "EUR"}} for c in customers[::4]]
    # Transfers between partitions: to enrolled members, one too large, one to a customer
    # with no account (it comes back to the sender).
    pairs = [(customers[i], customers[(i + 7) % 18]) for i in range(10)]
    pairs = [(a, b) for a, b in pairs if partition(a) != partition(b)]
    assert len(pairs) >= 6
    transfers = [cmd(f"trf_{i}", "loyalty.points.transfer",
                     {"program": PROGRAM, "from": a, "to": b, "points": 100 + i}, 60)
                 for i, (a, b) in enumerate(pairs)]
    stranger = next(f"cus_new_{i}" for i in range(99) if partition(f"cus_new_{i}") != partition("cus_03"))
    transfers.append(cmd("trf_back", "loyalty.points.transfer",
                         {"program": PROGRAM, "from": "cus_03", "to": stranger, "points": 70}, 60))
    transfers.append(cmd("trf_big", "loyalty.points.transfer",
                         {"program": PROGRAM, "from": "cus_04", "to": "cus_09", "points": 10**7}, 60))
    redeemers = customers[:8]
    redemptions = [cmd(f"rdm_{c}", "loyalty.redemption.create",
                       {"customer": c, "program": PROGRAM, "reward": "rwd_mug"}, 50)
                   for c in redeemers]
    updated = dict(CONFIG["programs"][0])
    updated["earningRules"] = [dict(updated["earningRules"][0], award={
        "type": "per_amount", "per": 100, "points": 2})] + updated["earningRules"][1:]
    update = {"id": "upd_1", "type": "loyalty.program.updated", "created": stamp(40),
              "data": updated}
    late = [{"id": f"evt_late_{c}", "type": "payment.completed", "created": stamp(30),
             "data": {"id": f"late_{c}", "customer": c, "amount": 5000, "currency": "EUR"}}
            for c in customers]

    sent = []

    def phase(topic, records, faults=lambda: None):
        sent.extend(records)
        send(bootstrap, topic, records)
        faults()
        want = fold(cfg, [json.dumps(r) for r in sent])
        n = sum(1 for l in want.splitlines() if json.loads(l)["kind"] == "transaction")
        # A transfer to a stranger moves points out and back here; one engine refuses it.
        if any(r["id"] == "trf_back" for r in sent):
            n += 2
        return settled(n)

    a, b, c = members

    def kill_a_then_b_in_its_rebalance():
        a.kill9()
        before = b.metric("loyalty_rebalances_total") or 0
        a.start()
        # The group rebalances to take `a` back in; `b` dies in the middle of it, once it
        # has taken part (its first step of the cooperative rebalance is done).
        wait_for(lambda: (b.metric("loyalty_rebalances_total") or 0) > before, 60,
                 "the rebalance that takes the restarted instance in")
        b.kill9()
        b.start()

    def pause_c():
        c.proc.send_signal(signal.SIGSTOP)
        # Past its session timeout: the others take its partitions.
        wait_for(lambda: len(set().union(a.held(), b.held())) == PARTITIONS, 120,
                 "the others to take the paused instance's partitions")
        c.proc.send_signal(signal.SIGCONT)

    phase(topics["commands"], enrol)
    phase(topics["commands"], enrol_referees)
    phase(topics["payments"], pays, kill_a_then_b_in_its_rebalance)
    phase(topics["refunds"], refunds)
    phase(topics["commands"], transfers, pause_c)
    phase(topics["commands"], redemptions)
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    p.send(topics["commands"], key=PROGRAM.encode(), value=json.dumps(update).encode())
    p.flush()
    p.close()
    sent.append(update)
    # The update is in every partition of the log before the payments that follow it are
    # sent: each partition then folds them after it, as one engine does.
    wait_for(lambda: {m.partition for m in read_all(bootstrap, topics["log"])
                      if json.loads(m.value).get("id") == "upd_1"} == set(range(PARTITIONS)),
             60, "the program update in every log partition")
    ledger = phase(topics["payments"], late)

    expected = [json.loads(l) for l in fold(cfg, [json.dumps(r) for r in sent]).splitlines()]
    live = txs(ledger)

    # No transaction doubled: every id once.
    ids = [t["id"] for t in live]
    assert len(ids) == len(set(ids))
    # Each refund reversed its payment's points once.
    reversals = Counter(t["customer"] for t in live if t["type"] == "reversal")
    assert reversals == Counter(r["data"]["customer"] for r in refunds)
    # Each transfer's two sides exactly once; the refused one writes neither; the one to a
    # customer with no account comes back to its sender.
    by_source = Counter((t["source"], t["type"], t["customer"]) for t in live)
    for i, (x, y) in enumerate(pairs):
        assert by_source[(f"trf_{i}", "transfer_out", x)] == 1
        assert by_source[(f"trf_{i}", "transfer_in", y)] == 1
    assert not [t for t in live if t["source"] == "trf_big"]
    back = [t for t in live if t["source"] == "trf_back"]
    assert sorted((t["type"], t["customer"], t["points"]) for t in back) == \
        [("transfer_in", "cus_03", 70), ("transfer_out", "cus_03", -70)]
    assert [t["metadata"].get("returned") for t in back if t["type"] == "transfer_in"] == [True]
    # Each referral's awards once, on the referrer's and the referee's partitions.
    referral = Counter((t["customer"], t["points"]) for t in live if t["type"] == "award"
                       and t.get("rule") in ("rule_referrer", "rule_referee"))
    want_referral = Counter((t["customer"], t["points"]) for t in expected
                            if t["kind"] == "transaction" and t["type"] == "award"
                            and t.get("rule") in ("rule_referrer", "rule_referee"))
    assert referral == want_referral and sum(referral.values()) == 2 * len(referrals)
    # The units granted are the stock; every other request was refused as out of stock.
    granted = [t["customer"] for t in live if t["type"] == "redemption"]
    assert len(granted) == STOCK
    events = [l for lines in ledger.values() for l in lines if l["kind"] == "event"]
    refused = [e for e in events if e["type"] == "loyalty.redemption.rejected"]
    assert sorted(e["data"]["reason"] for e in refused) == ["out_of_stock"] * (len(redeemers) - STOCK)

    # Every balance equals one engine's fold of the same input, with each member's
    # redemption cost added back on both sides (which members got a unit may differ).
    def balances(accounts, redeemed):
        return {a["customer"]: a["balance"] + 200 * redeemed.count(a["customer"]) for a in accounts}
    fold_granted = [t["customer"] for t in expected
                    if t["kind"] == "transaction" and t["type"] == "redemption"]
    assert len(fold_granted) == STOCK
    live_accounts = [l for lines in ledger.values() for l in lines if l["kind"] == "account"]
    want = balances([l for l in expected if l["kind"] == "account"], fold_granted)
    assert balances(live_accounts, granted) == want
    # Records after the program update earned under the updated rule, on every partition.
    assert sorted(t["points"] for t in live if t["source"].startswith("evt_late_")) == [100] * len(customers)

    # Every event published once or more, never with two payloads.
    for topic in ["loyalty.points.earned", "loyalty.points.transferred", "loyalty.reward.redeemed"]:
        def published():
            payloads = {}
            for m in read_all(bootstrap, prefix + topic):
                eid = dict(m.headers)["x-loyalty-event-id"].decode()
                assert payloads.setdefault(eid, m.value) == m.value, f"{eid} published twice, differently"
            return set(payloads) == {e["id"] for e in events if e["type"] == topic}
        wait_for(published, 60, f"every {topic} event published")

    check_api(members, ledger)
    ledger = ledgers(members)

    # Each partition's ledger equals a replay of that partition from the log.
    own = owners(members)
    assert own is not None
    took = sum(m.metric('loyalty_partition_takeovers_total{from="standby"}') or 0 for m in members)
    if standbys:
        assert took > 0, "no partition was taken over from a standby copy"
    else:
        assert took == 0
    for m in members:
        m.stop()
    for p in range(PARTITIONS):
        stored = own[p].export_partition(p)
        assert [json.loads(l) for l in stored.splitlines()] == ledger[p], f"partition {p} moved"
        new = workdir / f"replayed-{p}"
        args = a.args()
        for flag in ["--http-addr", "--api-keys"]:
            i = args.index(flag)
            args = args[:i] + args[i + 2:]
        subprocess.run([loyalty_bin(), "replay", "--state", str(new), "--partition", str(p)]
                       + args, capture_output=True, check=True)
        out = subprocess.run([loyalty_bin(), "export", "--state", str(new)],
                             capture_output=True, check=True).stdout.decode()
        assert [json.loads(l) for l in out.splitlines()] == ledger[p], f"partition {p}"
