"""End to end: the HTTP API of SPEC section 11, written from the spec alone.

The engine runs as its own process on Apache Kafka (conftest's broker) with `--http-addr` and
`--api-keys`; upstream events are produced with kafka-python, the API is called with the
standard library's http.client, and every answer is compared with `loyalty fold` over the
engine's own log (`loyalty log`), the reference of section 9: an account is the fold's
`account` line minus `kind` plus `"object": "loyalty_account"`, a transaction its
`transaction` line minus `kind` plus `"object": "points_transaction"`.

Most tests share one engine (module scope) and use customers of their own; what a test asserts
about the whole engine (every account, every page) is compared with the fold over the whole
log at that moment. Tests that kill, time out, partition or stop the engine start their own.

Where SPEC.md is silent, these tests assume (and say so where they do):
- a list's `url` is the list's path (Stripe's), possibly as a full URL;
- a program object holds every field of the config it was given, with the same values
  (defaults may be filled in beside them);
- an enrolment or a transfer that names an unknown program or customer answers 400 or 404
  with `invalid_request_error`;
- a cursor (`starting_after`, `ending_before`) that is not an id of the list is a 400 naming
  it in `param`, like any other query parameter out of range; a bad `created[gte]` names
  `created[gte]` (or `created`);
- an `Idempotency-Key` of more than 255 characters is a 400 `invalid_request_error`;
- `asOf` is printed like every time of the fold, `YYYY-MM-DDTHH:MM:SSZ`;
- the idempotent answer survives a kill -9 (the record id is derived from the key, and the
  answer is a pure function of the log), so a repeat after a restart answers the same body.
"""
import http.client
import json
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlencode, urlparse

import pytest

from conftest import Engine, fold, free_port, loyalty_bin, wait_for
from test_operations import scrape
from test_streaming import lines_of, now_minus, producer, send_all

SK, RK = "sk_test_1", "rk_test_1"
KEYS = f"{SK},{RK}"
MIB = 1 << 20
TX = "/v1/points_transactions"

# A calendar period whose only close is about half a year away: no tier evaluation (and so no
# demotion) can happen while the tests run, whatever the time of day, so "at risk" holds still.
PERIOD_START = f"{(datetime.now(timezone.utc).month + 5) % 12 + 1:02d}-01"

# Every refusal of section 7 is reachable: an unknown reward and one past its `ends`
# (not_available), one above a Member's rank (tier_required), one of a single unit
# (out_of_stock), one per member (limit_reached), and costs and a minimum above the welcome
# bonus (insufficient_points).
CONFIG = {"programs": [
    {"id": "prog_api", "name": "API Club", "currency": "EUR", "autoEnroll": True,
     "minimumRedemption": 150,
     "earningRules": [
         {"id": "rule_purchase", "trigger": "payment.completed",
          "award": {"type": "per_amount", "per": 100, "points": 1}},
         {"id": "rule_welcome", "trigger": "loyalty.account.created",
          "award": {"type": "fixed", "points": 100}}],
     "tierConfig": {"qualifyOn": "spend",
                    "period": {"type": "calendar", "months": 12, "start": PERIOD_START},
                    "tiers": [{"name": "Member", "rank": 0, "threshold": 0},
                              {"name": "Gold", "rank": 1, "threshold": 100000, "earnMultiplier": 2}]},
     "rewards": [
         {"id": "rwd_coffee", "name": "Coffee", "cost": 300, "kind": "product"},
         {"id": "rwd_mug", "name": "Mug", "cost": 200, "kind": "product", "stock": 1000,
          "maxPerMember": 1},
         {"id": "rwd_lounge", "name": "Lounge", "cost": 100, "kind": "experience", "minRank": 1},
         {"id": "rwd_rare", "name": "Signed print", "cost": 100, "kind": "product", "stock": 1},
         {"id": "rwd_retired", "name": "Old voucher", "cost": 100, "kind": "discount",
          "ends": "2020-01-01T00:00:00Z"},
         {"id": "rwd_sticker", "name": "Sticker", "cost": 10, "kind": "product"}]},
    {"id": "prog_other", "name": "Partner Club", "currency": "EUR", "autoEnroll": True,
     "earningRules": [
         {"id": "rule_visit", "trigger": "payment.completed", "award": {"type": "fixed", "points": 5}}],
     "tierConfig": {"qualifyOn": "custom",
                    "period": {"type": "calendar", "months": 12, "start": PERIOD_START},
                    "tiers": [{"name": "Basic", "rank": 0, "threshold": 0},
                              {"name": "Plus", "rank": 1, "threshold": 5000}]}}]}


# ---------------------------------------------------------------------------------------------
# The engine with its API, and an HTTP client of the standard library


class Reply:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    def __repr__(self):
        return f"<HTTP {self.status} {self.body[:600]!r}>"


class ApiClient:
    """Calls one HTTP API (`loyalty run --http-addr` or `loyalty serve`) on 127.0.0.1."""

    def __init__(self, port):
        self.port = port
        self.base = f"http://127.0.0.1:{port}"

    def log_tail(self):
        return ""

    def status_of(self, path):
        try:
            return self.call("GET", path, key=None, timeout=5).status
        except OSError:
            return None

    def call(self, method, path, body=None, key=SK, headers=None, raw=None, timeout=60):
        return call(self.port, method, path, body, key, headers, raw, timeout)

    def ok(self, reply, status=200):
        assert reply.status == status, f"{reply}\n--- log:\n{self.log_tail()}"
        return reply.json

    def get(self, path, key=SK, **params):
        return self.ok(self.call("GET", q(path, **params), key=key))

    def post(self, path, body, **kw):
        return self.call("POST", path, body, **kw)


class ApiEngine(ApiClient):
    """`loyalty run` with its HTTP API on a port of its own, with its own topics and config."""

    def __init__(self, broker, name, config=CONFIG, extra=()):
        super().__init__(free_port())
        self.bootstrap = broker["bootstrap"]
        self.dir = Path(tempfile.mkdtemp(prefix=f"loyalty-api-{name}-"))
        self.cfg = self.dir / "programs.json"
        self.cfg.write_text(json.dumps(config))
        self.engine = Engine(self.bootstrap, self.cfg, f"t{uuid.uuid4().hex[:8]}.", self.dir / "state",
                             extra=["--http-addr", f"127.0.0.1:{self.port}", "--api-keys", KEYS, *extra])

    @property
    def topics(self):
        return self.engine.topics

    @property
    def state(self):
        return self.engine.state

    def log_tail(self):
        return self.engine.log_tail()

    def start(self):
        self.engine.start()
        self.wait_ready()
        return self

    def wait_ready(self, timeout=90):
        wait_for(lambda: self.status_of("/readyz") == 200, timeout, f"{self.base}/readyz")

    def kill9(self):
        self.engine.kill9()

    def stop(self):
        self.engine.stop()

    def cleanup(self):
        """Ends the engine if a failed test left it running, and removes its files."""
        try:
            if self.engine.proc and self.engine.proc.poll() is None:
                self.engine.proc.kill()
                self.engine.proc.wait()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def send(self, topic, records):
        send_all(self.bootstrap, self.topics[topic], records)

    def log_lines(self):
        out = subprocess.run([loyalty_bin(), "log", "--brokers", self.bootstrap,
                              "--log-topic", self.topics["log"]], capture_output=True, check=True)
        return out.stdout.decode().splitlines()

    def folded(self):
        """`loyalty fold` over the engine's own log: what every read must answer."""
        return fold(self.cfg, self.log_lines())


class Served(ApiClient):
    """`loyalty serve --state DIR`: the read-only API over a stopped engine's state."""

    def __init__(self, state, logfile):
        super().__init__(free_port())
        self.logfile = logfile
        with open(logfile, "ab") as log:
            self.proc = subprocess.Popen([loyalty_bin(), "serve", "--state", str(state),
                                          "--http-addr", f"127.0.0.1:{self.port}", "--api-keys", KEYS],
                                         stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: self.proc.poll() is None and self.status_of("/readyz") == 200, 60,
                 f"loyalty serve on {self.base}")

    def log_tail(self, lines=40):
        return "\n".join(Path(self.logfile).read_text(errors="replace").splitlines()[-lines:])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def call(port, method, path, body=None, key=SK, headers=None, raw=None, timeout=60):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    h = dict(headers or {})
    if key is not None:
        h["Authorization"] = f"Bearer {key}"
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    if data is not None and "Content-Type" not in h:
        h["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        return Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        conn.close()


def q(path, **params):
    """A path with its query; `created__gte=` spells `created[gte]=`."""
    params = {k.replace("__gte", "[gte]").replace("__lt", "[lt]"): v for k, v in params.items()
              if v is not None}
    return path + ("?" + urlencode(params) if params else "")


@pytest.fixture(scope="module")
def api(broker):
    eng = ApiEngine(broker, "shared")
    try:
        eng.start()
        yield eng
        eng.stop()
    finally:
        eng.cleanup()


# ---------------------------------------------------------------------------------------------
# Expectations from the fold, and list helpers


def as_object(line, obj):
    d = dict(line)
    del d["kind"]
    d["object"] = obj
    return d


def fold_accounts(text):
    """{account id: the API's account object} from the fold's `account` lines."""
    return {a["id"]: as_object(a, "loyalty_account") for a in lines_of(text, "account")}


def fold_transactions(text, account=None):
    """The API's transaction objects, newest first (reverse log order)."""
    return [as_object(t, "points_transaction") for t in lines_of(text, "transaction")
            if account is None or t["account"] == account][::-1]


def fold_redemptions(text, account):
    """The API's redemption objects of an account, newest first, from `loyalty.reward.redeemed`."""
    out = []
    for e in lines_of(text, "event"):
        d = e["data"]
        if e["type"] == "loyalty.reward.redeemed" and d["account"] == account:
            out.append({"object": "redemption", "id": d["redemption"], "account": d["account"],
                        "customer": d["customer"], "program": d["program"], "reward": d["reward"],
                        "quantity": d["quantity"], "cost": d["cost"],
                        "transaction": d["transaction"], "created": e["created"]})
    return out[::-1]


def ids(items):
    return [i["id"] for i in items]


def page(api, path, **params):
    """One page of a list, its shape checked."""
    body = api.get(path, **params)
    assert body["object"] == "list", body
    assert isinstance(body["has_more"], bool) and isinstance(body["data"], list), body
    assert isinstance(body["url"], str) and urlparse(body["url"]).path == path, body["url"]
    if "limit" in params:
        assert len(body["data"]) <= int(params["limit"]), body
    return body


def walk(api, path, limit=100, **params):
    """Every item of a list, page after page with `starting_after`."""
    items, after = [], None
    for _ in range(100_000):
        body = page(api, path, limit=limit, starting_after=after, **params)
        items += body["data"]
        if not body["has_more"]:
            return items
        assert body["data"], f"has_more with an empty page: {body}"
        after = body["data"][-1]["id"]
    raise AssertionError("a walk that never ends")


def walk_back(api, path, limit, cursor, **params):
    """The ids before `cursor` in list order, page after page with `ending_before`."""
    pages = []
    for _ in range(100_000):
        body = page(api, path, limit=limit, ending_before=cursor, **params)
        got = ids(body["data"])
        assert cursor not in got
        pages.append(got)
        if not body["has_more"]:
            return [i for p in reversed(pages) for i in p]
        assert got, f"has_more with an empty page: {body}"
        cursor = got[0]
    raise AssertionError("a walk that never ends")


def check_exact_pages(api, path, want, limit, **params):
    """With nothing arriving: pages of `limit` forward and backward give `want` exactly, with
    `has_more` true exactly when items are left on that side."""
    n = len(want)
    assert n > limit, "too few items to page through"
    after, i = None, 0
    while True:
        body = page(api, path, limit=limit, starting_after=after, **params)
        got = ids(body["data"])
        assert got == want[i:i + limit], (limit, i)
        assert body["has_more"] == (i + limit < n), (limit, i, body["has_more"])
        i += len(got)
        if not body["has_more"]:
            break
        after = got[-1]
    assert i == n
    before, j = want[-1], n - 1
    while True:
        body = page(api, path, limit=limit, ending_before=before, **params)
        got = ids(body["data"])
        assert got == want[max(0, j - limit):j], (limit, j)
        assert body["has_more"] == (j - limit > 0), (limit, j, body["has_more"])
        j -= len(got)
        if not body["has_more"]:
            break
        before = got[0]
    assert j == 0
    for cursor in ({"starting_after": want[-1]}, {"ending_before": want[0]}):
        body = page(api, path, limit=limit, **cursor, **params)
        assert body["data"] == [] and body["has_more"] is False, (cursor, body)


def assert_error(reply, status, type_, code=None, param=None):
    """The error object of section 11: {"error": {"type", "code"?, "message", "param"?}}."""
    assert reply.status == status, reply
    assert reply.headers.get("content-type", "").startswith("application/json"), reply.headers
    assert isinstance(reply.json, dict) and isinstance(reply.json.get("error"), dict), reply
    e = reply.json["error"]
    assert e.get("type") == type_, reply
    assert isinstance(e.get("message"), str) and e["message"], reply
    for field in ("code", "param"):
        assert e.get(field) is None or isinstance(e[field], str), reply
    if code is not None:
        assert e.get("code") == code, reply
    if param is not None:
        assert e.get("param") == param, reply
    return e


def contains(whole, part):
    """Every field of `part` is in `whole` with an equal value (recursively; lists item by item)."""
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(k in whole and contains(whole[k], v) for k, v in part.items())
    if isinstance(part, list):
        return isinstance(whole, list) and len(whole) == len(part) and all(map(contains, whole, part))
    return whole == part


def payment(eid, customer, amount, ago=0, pay=None):
    return {"id": eid, "type": "payment.completed", "created": now_minus(ago),
            "data": {"id": pay or f"pay_{eid}", "customer": customer, "amount": amount, "currency": "EUR"}}


def enroll(api, customer, program="prog_api", **extra):
    acct = api.ok(api.post("/v1/accounts", {"program": program, "customer": customer, **extra}))
    assert acct["object"] == "loyalty_account" and acct["id"].startswith("loy_"), acct
    return acct


def adjust(api, acct, points, reason="test", **kw):
    return api.post(f"/v1/accounts/{acct}/adjustments", {"points": points, "reason": reason}, **kw)


def redeem(api, acct, reward, quantity=None, **kw):
    body = {"reward": reward} if quantity is None else {"reward": reward, "quantity": quantity}
    return api.post(f"/v1/accounts/{acct}/redemptions", body, **kw)


def account_of(api, customer, program="prog_api"):
    got = walk(api, "/v1/accounts", customer=customer, program=program)
    assert len(got) <= 1, got
    return got[0] if got else None


def settled_with_fold(api, account):
    """Waits until the account and its transactions, read from the API, equal the fold over the
    log; returns the fold's text."""
    def same():
        text = api.folded()
        want_acct = fold_accounts(text).get(account)
        got_acct = api.call("GET", f"/v1/accounts/{account}")
        return (want_acct is not None and got_acct.status == 200 and got_acct.json == want_acct
                and walk(api, TX, account=account) == fold_transactions(text, account) and text)
    return wait_for(same, 60, f"account {account} to equal the fold")


def strictly_increasing(xs):
    return all(a < b for a, b in zip(xs, xs[1:]))


# ---------------------------------------------------------------------------------------------
# Health, readiness, metrics


def test_health_readiness_and_metrics_need_no_key(api):
    for path in ("/healthz", "/readyz", "/metrics"):
        assert api.call("GET", path, key=None).status == 200, path
        assert api.call("GET", path, key="sk_not_a_key").status == 200, path
    samples = scrape(api.base)
    assert samples, "no sample on /metrics"
    # Under /v1/ a key is needed, and the key is not needed to say so.
    assert_error(api.call("GET", "/v1/accounts", key=None), 401, "authentication_error")


# ---------------------------------------------------------------------------------------------
# Reads


def test_every_account_listed_and_fetched_equals_the_fold(api):
    rng = random.Random(5)
    customers = [f"cus_all_{i:02d}" for i in range(12)]
    events = [payment(f"evt_all_{i}", rng.choice(customers), rng.randrange(100, 40000), ago=60 - i)
              for i in range(40)]
    # every customer at least once
    events += [payment(f"evt_all_c{i}", c, 1234, ago=10) for i, c in enumerate(customers)]
    api.send("payments", events)
    refunded = events[0]
    api.send("refunds", [{"id": "evt_all_refund", "type": "payment.refunded", "created": now_minus(5),
                          "data": {"id": "re_all", "payment": refunded["data"]["id"],
                                   "customer": refunded["data"]["customer"],
                                   "amount": refunded["data"]["amount"] // 2, "currency": "EUR"}}])

    def same():
        want = fold_accounts(api.folded())
        got = walk(api, "/v1/accounts", limit=7)
        mine = {(a["program"], a["customer"]) for a in want.values()}
        return (got == [want[k] for k in sorted(want)]
                and all((p, c) in mine for p in ("prog_api", "prog_other") for c in customers) and want)

    want = wait_for(same, 120, "GET /v1/accounts to equal the fold's account lines")
    for acct_id, acct in want.items():
        assert api.get(f"/v1/accounts/{acct_id}") == acct
    # The accounts of this test are there with their balances (not only whatever was there).
    mine = [a for a in want.values() if a["customer"] in customers and a["program"] == "prog_api"]
    assert len(mine) == len(customers) and all(a["balance"] > 100 for a in mine)


def test_pages_forward_and_backward_give_every_item_once_while_records_arrive(api):
    cus = "cus_pg_tx"
    backlog = [payment(f"evt_pg_{i}", cus, 1000 + i, ago=120 - i) for i in range(24)]
    backlog += [payment(f"evt_pg_new_{i}", f"cus_pg_{i:02d}", 500, ago=100) for i in range(8)]
    api.send("payments", backlog)
    acct = wait_for(lambda: account_of(api, cus), 60, "the paging account")["id"]
    wait_for(lambda: len(walk(api, TX, account=acct)) == 25, 60, "the backlog's transactions")
    before_acc = ids(walk(api, "/v1/accounts"))
    before_tx = ids(walk(api, TX, account=acct))

    stop, produced = threading.Event(), []

    def produce():
        p = producer(api.bootstrap)
        try:
            i = 0
            while not stop.is_set():
                recs = [payment(f"evt_pgbg_{i}", cus, 700 + i)]
                if i % 4 == 0:
                    recs.append(payment(f"evt_pgbgn_{i}", f"cus_pg_bg_{i:04d}", 300))
                for r in recs:
                    p.send(api.topics["payments"], key=r["data"]["customer"].encode(),
                           value=json.dumps(r).encode())
                p.flush()
                produced.append(i)
                i += 1
                stop.wait(0.05)  # the pace of the load, not a synchronisation
        finally:
            p.close()

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    walks = []
    try:
        wait_for(lambda: len(walk(api, TX, account=acct)) > len(before_tx), 60,
                 "the background records to be folded")
        for limit in (1, 2, 3):
            fwd = ids(walk(api, "/v1/accounts", limit=limit))
            assert strictly_increasing(fwd), f"limit {limit}: accounts out of id order or twice"
            assert set(before_acc) <= set(fwd), f"limit {limit}: an account skipped"
            back = walk_back(api, "/v1/accounts", limit, fwd[-1])
            assert strictly_increasing(back + [fwd[-1]]), f"limit {limit}: backward out of order"
            assert {i for i in before_acc if i < fwd[-1]} <= set(back), f"limit {limit}: skipped backward"

            txf = ids(walk(api, TX, limit=limit, account=acct))
            assert len(set(txf)) == len(txf) and set(before_tx) <= set(txf), f"limit {limit}"
            txb = walk_back(api, TX, limit, txf[-1], account=acct)
            assert len(set(txb)) == len(txb), f"limit {limit}: a transaction twice backward"
            assert set(before_tx) - {txf[-1]} <= set(txb), f"limit {limit}: skipped backward"
            walks.append((limit, txf, txb))
        assert thread.is_alive()
    finally:
        stop.set()
        thread.join(60)
    assert produced

    # Once nothing arrives any more, each walk is a run of the final list, in its order:
    # forward, from the newest of its first page down to the oldest; backward, from just
    # before its cursor up to the newest of its last page.
    text = settled_with_fold(api, acct)
    final = ids(fold_transactions(text, acct))
    assert len(final) > len(before_tx) + 3, "the walks did not run while records arrived"
    for limit, txf, txb in walks:
        k = final.index(txf[0])
        assert final[k:] == txf, f"limit {limit}: forward walk not a run of the list"
        j = final.index(txf[-1])
        assert final[j - len(txb):j] == txb, f"limit {limit}: backward walk not a run of the list"

    accounts = wait_for(lambda: (w := fold_accounts(api.folded())) and
                        ids(walk(api, "/v1/accounts")) == sorted(w) and sorted(w), 60, "all accounts")
    for limit in (1, 2, 3):
        check_exact_pages(api, "/v1/accounts", accounts, limit)
        check_exact_pages(api, TX, final, limit, account=acct)


def test_points_transactions_of_an_account_newest_first_with_filters(api):
    cus = "cus_tx_1"
    ago = [50, 40, 30, 20]
    api.send("payments", [payment(f"evt_tx_{i}", cus, amount, ago=a)
                          for i, (amount, a) in enumerate(zip([1000, 2500, 4000, 10000], ago))])
    acct = wait_for(lambda: account_of(api, cus), 60, "the account")["id"]
    wait_for(lambda: len(walk(api, TX, account=acct)) == 5, 60, "the awards")
    api.ok(adjust(api, acct, 7, "goodwill"))
    text = settled_with_fold(api, acct)
    want = fold_transactions(text, acct)
    assert [t["type"] for t in want] == ["adjustment"] + ["award"] * 5
    assert walk(api, TX, limit=2, account=acct) == want
    for t in want:
        assert api.get(f"{TX}/{t['id']}") == t

    # type=
    for kind in ("award", "adjustment", "redemption"):
        assert walk(api, TX, account=acct, type=kind) == [t for t in want if t["type"] == kind], kind

    # created[gte] / created[lt]: RFC 3339, compared with each transaction's `created`.
    times = sorted({t["created"] for t in want})
    assert len(times) >= 4, times
    pivot, low, high = times[2], times[1], times[3]
    for params, pred in [({"created__gte": pivot}, lambda c: c >= pivot),
                         ({"created__lt": pivot}, lambda c: c < pivot),
                         ({"created__gte": low, "created__lt": high}, lambda c: low <= c < high)]:
        expect = [t for t in want if pred(t["created"])]
        assert expect and len(expect) < len(want)
        assert walk(api, TX, limit=2, account=acct, **params) == expect, params
    # The same instant with another offset is the same bound.
    shifted = (datetime.strptime(pivot, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
               .astimezone(timezone(timedelta(hours=2))).isoformat())
    assert walk(api, TX, account=acct, created__gte=shifted) == [t for t in want if t["created"] >= pivot]
    # Filters combine with type.
    assert walk(api, TX, account=acct, type="award", created__lt=pivot) == \
        [t for t in want if t["type"] == "award" and t["created"] < pivot]

    # Without an account: every transaction of the engine, newest first.
    def newest_first():
        all_tx = fold_transactions(api.folded())
        return page(api, TX, limit=5)["data"] == all_tx[:5]
    wait_for(newest_first, 60, "the newest transactions of the engine")

    assert_error(api.call("GET", f"{TX}/ptx_000000000000000000000000"), 404,
                 "invalid_request_error", code="resource_missing")


def test_balance_as_of_sums_the_transactions_up_to_that_time(api):
    cus = "cus_bal_1"
    api.send("payments", [payment("evt_bal_0", cus, 5000, ago=90), payment("evt_bal_1", cus, 3300, ago=60),
                          payment("evt_bal_2", cus, 12000, ago=30)])
    acct = wait_for(lambda: account_of(api, cus), 60, "the account")["id"]
    wait_for(lambda: len(walk(api, TX, account=acct)) == 4, 60, "the awards")
    api.ok(adjust(api, acct, -20, "correction"))
    text = settled_with_fold(api, acct)
    txs = fold_transactions(text, acct)
    account = fold_accounts(text)[acct]

    def fmt(t):
        return t.strftime("%Y-%m-%dT%H:%M:%SZ")

    times = sorted({datetime.strptime(t["created"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
                    for t in txs})
    probes = {fmt(times[0] - timedelta(days=1))}
    for t in times:
        probes |= {fmt(t - timedelta(seconds=1)), fmt(t)}
    for probe in sorted(probes):
        want = sum(t["points"] for t in txs if t["created"] <= probe)
        got = api.get(f"/v1/accounts/{acct}/balance", as_of=probe)
        assert got == {"object": "balance", "account": acct, "asOf": probe, "balance": want}, probe
    # Another offset of the same instant.
    probe = times[1].astimezone(timezone(timedelta(hours=-5))).isoformat()
    got = api.get(f"/v1/accounts/{acct}/balance", as_of=probe)
    assert got["asOf"] == fmt(times[1])
    assert got["balance"] == sum(t["points"] for t in txs if t["created"] <= fmt(times[1]))
    # Default: the clock, that is every transaction so far: the account's balance.
    got = api.get(f"/v1/accounts/{acct}/balance")
    assert got["object"] == "balance" and got["account"] == acct and isinstance(got["asOf"], str)
    assert got["balance"] == account["balance"] == sum(t["points"] for t in txs)
    assert_error(api.call("GET", "/v1/accounts/loy_000000000000000000000000/balance"), 404,
                 "invalid_request_error", code="resource_missing")


def test_account_filters_tier_at_risk_customer_program(api):
    gold, risky, plain, plus = "cus_flt_gold", "cus_flt_risk", "cus_flt_plain", "cus_flt_plus"
    api.send("payments", [payment("evt_flt_g", gold, 150000, ago=40),
                          payment("evt_flt_r", risky, 120000, ago=40, pay="pay_flt_r"),
                          payment("evt_flt_p", plain, 1000, ago=40)])
    api.send("refunds", [{"id": "evt_flt_rr", "type": "payment.refunded", "created": now_minus(30),
                          "data": {"id": "re_flt_r", "payment": "pay_flt_r", "customer": risky,
                                   "amount": 60000, "currency": "EUR"}}])
    other = enroll(api, plus, program="prog_other")
    api.ok(api.post(f"/v1/accounts/{other['id']}/qualifying_activity", {"amount": 6000, "reason": "visits"}))
    r = wait_for(lambda: (a := account_of(api, risky)) and a["atRisk"] and a, 60, "the refund to put a member at risk")
    assert r["tier"]["name"] == "Gold"

    def settled():
        want = fold_accounts(api.folded())
        return ids(walk(api, "/v1/accounts")) == sorted(want) and want
    want = wait_for(settled, 60, "every account")
    everyone = [want[k] for k in sorted(want)]

    def matches(a, f):
        for k, v in f.items():
            if k == "tier" and (a.get("tier") or {}).get("name") != v:
                return False
            if k == "at_risk" and a.get("atRisk") is not (v == "true"):
                return False
            if k in ("customer", "program") and a[k] != v:
                return False
        return True

    cases = [{"tier": "Gold"}, {"tier": "Member"}, {"tier": "Plus"}, {"at_risk": "true"},
             {"at_risk": "false"}, {"customer": gold}, {"customer": plus}, {"program": "prog_other"},
             {"program": "prog_api", "tier": "Gold"}, {"program": "prog_api", "at_risk": "false"},
             {"customer": risky, "program": "prog_api"}, {"tier": "Gold", "at_risk": "true"}]
    for f in cases:
        expect = [a for a in everyone if matches(a, f)]
        assert expect, f"the filter {f} selects nothing here: not a test"
        assert walk(api, "/v1/accounts", limit=3, **f) == expect, f

    def pick(**f):
        return {(a["program"], a["customer"]) for a in walk(api, "/v1/accounts", **f)}
    assert ("prog_api", gold) in pick(tier="Gold") and ("prog_api", plain) not in pick(tier="Gold")
    assert ("prog_api", risky) in pick(at_risk="true") and ("prog_api", gold) not in pick(at_risk="true")
    assert ("prog_other", plus) in pick(tier="Plus")
    assert {p for p, _ in pick(customer=gold)} == {"prog_api", "prog_other"}
    assert {p for p, _ in pick(program="prog_other")} == {"prog_other"}


def test_programs_and_rewards_with_stock_left(api):
    programs = api.get("/v1/programs")
    assert programs["object"] == "list" and programs["has_more"] is False
    assert urlparse(programs["url"]).path == "/v1/programs"
    got = programs["data"]
    # In config order (programs added by updates come after).
    assert ids(got)[:2] == ["prog_api", "prog_other"]
    for p, conf in zip(got, CONFIG["programs"]):
        assert p["object"] == "program" and contains(p, conf), p
        assert api.get(f"/v1/programs/{p['id']}") == p
    assert_error(api.call("GET", "/v1/programs/prog_nope"), 404, "invalid_request_error", code="resource_missing")

    def redeemed_units(text):
        units = {}
        for e in lines_of(text, "event"):
            if e["type"] == "loyalty.reward.redeemed" and e["data"]["program"] == "prog_api":
                units[e["data"]["reward"]] = units.get(e["data"]["reward"], 0) + e["data"]["quantity"]
        return units

    def check_rewards():
        units = redeemed_units(api.folded())
        rewards = walk(api, "/v1/programs/prog_api/rewards")
        conf = CONFIG["programs"][0]["rewards"]
        assert ids(rewards) == ids(conf)
        for r, c in zip(rewards, conf):
            assert r["object"] == "reward" and contains(r, c), r
            assert r["stockLeft"] == (None if "stock" not in c else c["stock"] - units.get(c["id"], 0)), r
        return {r["id"]: r["stockLeft"] for r in rewards}

    before = check_rewards()
    assert before["rwd_coffee"] is None
    acct = enroll(api, "cus_rw_1")
    api.ok(adjust(api, acct["id"], 500, "stock test"))
    api.ok(redeem(api, acct["id"], "rwd_mug"))
    # Read-your-writes: the stock left moves at once.
    after = {r["id"]: r["stockLeft"] for r in walk(api, "/v1/programs/prog_api/rewards")}
    assert after["rwd_mug"] == before["rwd_mug"] - 1 and after["rwd_coffee"] is None
    check_rewards()
    other = api.get("/v1/programs/prog_other/rewards")
    assert other["object"] == "list" and other["data"] == [] and other["has_more"] is False
    assert_error(api.call("GET", "/v1/programs/prog_nope/rewards"), 404, "invalid_request_error",
                 code="resource_missing")


# ---------------------------------------------------------------------------------------------
# Commands


def test_enroll_answers_the_account_and_again_the_same(api):
    acct = enroll(api, "cus_enr_1")
    assert (acct["customer"], acct["program"], acct["balance"]) == ("cus_enr_1", "prog_api", 100)
    # Read-your-writes.
    assert api.get(f"/v1/accounts/{acct['id']}") == acct
    assert walk(api, "/v1/accounts", customer="cus_enr_1") == [acct]
    # Enrolling again answers the existing account and changes nothing.
    assert enroll(api, "cus_enr_1") == acct
    assert [t["type"] for t in walk(api, TX, account=acct["id"])] == ["award"]
    # referralCode and birthday are taken.
    second = enroll(api, "cus_enr_2", referralCode=acct["referralCode"], birthday="07-14")
    assert second["customer"] == "cus_enr_2" and second["id"] != acct["id"]
    assert second["referralCode"] != acct["referralCode"]
    # An enrolment in another program is another account.
    third = enroll(api, "cus_enr_1", program="prog_other")
    assert third["id"] != acct["id"] and third["program"] == "prog_other"
    text = settled_with_fold(api, acct["id"])
    assert fold_accounts(text)[acct["id"]] == api.get(f"/v1/accounts/{acct['id']}")
    assert fold_accounts(text)[second["id"]] == api.get(f"/v1/accounts/{second['id']}")
    # An unknown program: refused as a request error, and no account (status: an assumption).
    r = api.post("/v1/accounts", {"program": "prog_nope", "customer": "cus_enr_3"})
    assert r.status in (400, 404), r
    assert_error(r, r.status, "invalid_request_error")
    assert walk(api, "/v1/accounts", customer="cus_enr_3") == []


def test_adjustment_answers_the_transaction_and_refuses_beyond_the_balance(api):
    acct = enroll(api, "cus_adj_1")["id"]
    tx = api.ok(adjust(api, acct, 50, "goodwill"))
    assert tx["object"] == "points_transaction" and tx["id"].startswith("ptx_")
    assert (tx["type"], tx["points"], tx["balanceAfter"], tx["account"]) == ("adjustment", 50, 150, acct)
    assert api.get(f"{TX}/{tx['id']}") == tx
    assert api.get(f"/v1/accounts/{acct}")["balance"] == 150
    assert walk(api, TX, account=acct)[0] == tx
    tx2 = api.ok(adjust(api, acct, -30, "correction"))
    assert (tx2["points"], tx2["balanceAfter"]) == (-30, 120)
    before = walk(api, TX, account=acct)
    # Beyond the balance: 402 insufficient_points, and nothing changes.
    assert_error(adjust(api, acct, -121, "too much"), 402, "refusal_error", code="insufficient_points")
    assert walk(api, TX, account=acct) == before
    assert api.get(f"/v1/accounts/{acct}")["balance"] == 120
    # An account nobody has: 404.
    assert_error(adjust(api, "loy_000000000000000000000000", 5), 404, "invalid_request_error",
                 code="resource_missing")
    text = settled_with_fold(api, acct)
    assert fold_transactions(text, acct)[:2] == [tx2, tx]
    assert [r for r in lines_of(text, "rejected") if r["reason"] == "insufficient_points"]


def test_redemption_answers_the_redemption_and_each_refusal(api):
    acct = enroll(api, "cus_rdm_1")["id"]
    rich = enroll(api, "cus_rdm_2")["id"]

    def refused(account, reward, code, quantity=None):
        before_tx, before_rdm = walk(api, TX, account=account), walk(api, "/v1/redemptions", account=account)
        assert_error(redeem(api, account, reward, quantity), 402, "refusal_error", code=code)
        assert walk(api, TX, account=account) == before_tx, f"{reward}: a refusal changed the ledger"
        assert walk(api, "/v1/redemptions", account=account) == before_rdm

    # Balance 100 (welcome), minimumRedemption 150.
    refused(acct, "rwd_nope", "not_available")            # unknown reward: a refusal, not a 404
    refused(acct, "rwd_retired", "not_available")         # past its `ends`
    refused(acct, "rwd_lounge", "tier_required")          # minRank 1
    refused(acct, "rwd_rare", "out_of_stock", quantity=2)  # one unit left
    refused(acct, "rwd_sticker", "insufficient_points")   # 10 points, but below the minimum
    refused(acct, "rwd_coffee", "insufficient_points")    # 300 points

    api.ok(adjust(api, rich, 1000, "for redemptions"))
    rdm = api.ok(redeem(api, rich, "rwd_coffee", 2))
    assert rdm["object"] == "redemption" and rdm["id"].startswith("rdm_")
    assert (rdm["account"], rdm["customer"], rdm["program"], rdm["reward"], rdm["quantity"], rdm["cost"]) == \
        (rich, "cus_rdm_2", "prog_api", "rwd_coffee", 2, 600)
    tx = api.get(f"{TX}/{rdm['transaction']}")
    assert (tx["type"], tx["points"], tx["balanceAfter"]) == ("redemption", -600, 500)
    # Read-your-writes.
    assert api.get(f"/v1/accounts/{rich}")["balance"] == 500
    assert walk(api, "/v1/redemptions", account=rich)[0] == rdm

    # The last unit of a reward, then out_of_stock; one per member, then limit_reached.
    rare = api.ok(redeem(api, rich, "rwd_rare"))
    refused(rich, "rwd_rare", "out_of_stock")
    mug = api.ok(redeem(api, rich, "rwd_mug"))
    refused(rich, "rwd_mug", "limit_reached")
    refused(rich, "rwd_lounge", "tier_required")
    assert api.get(f"/v1/accounts/{rich}")["balance"] == 200
    assert walk(api, "/v1/redemptions", account=rich, limit=1) == [mug, rare, rdm]

    text = settled_with_fold(api, rich)
    assert walk(api, "/v1/redemptions", account=rich) == fold_redemptions(text, rich)
    assert walk(api, "/v1/redemptions", account=acct) == fold_redemptions(text, acct) == []
    reasons = [e["data"]["reason"] for e in lines_of(text, "event")
               if e["type"] == "loyalty.redemption.rejected" and e["data"]["account"] in (acct, rich)]
    assert reasons == ["not_available", "not_available", "tier_required", "out_of_stock",
                       "insufficient_points", "insufficient_points", "out_of_stock", "limit_reached",
                       "tier_required"]
    assert_error(redeem(api, "loy_000000000000000000000000", "rwd_coffee"), 404, "invalid_request_error",
                 code="resource_missing")


def test_qualifying_activity_answers_the_account(api):
    acct = enroll(api, "cus_qa_1", program="prog_other")
    assert acct["tier"]["name"] == "Basic" and acct["qualifyingValue"] == 0
    path = f"/v1/accounts/{acct['id']}/qualifying_activity"
    got = api.ok(api.post(path, {"amount": 3000, "reason": "visit", "reference": "ref_1"}))
    assert got["object"] == "loyalty_account" and got["id"] == acct["id"]
    assert (got["qualifyingValue"], got["tier"]["name"]) == (3000, "Basic")
    got = api.ok(api.post(path, {"amount": 2500, "reason": "visit"}))
    assert (got["qualifyingValue"], got["tier"]["name"]) == (5500, "Plus")
    assert api.get(f"/v1/accounts/{acct['id']}") == got
    text = settled_with_fold(api, acct["id"])
    assert fold_accounts(text)[acct["id"]] == got
    assert_error(api.post(path, {"reason": "no amount"}), 400, "invalid_request_error", param="amount")
    assert_error(api.post(path, {"amount": "many", "reason": "x"}), 400, "invalid_request_error", param="amount")
    assert_error(api.post(path, {"amount": -5, "reason": "x"}), 400, "invalid_request_error", param="amount")
    assert api.get(f"/v1/accounts/{acct['id']}") == got


def test_transfer_answers_both_transactions_or_refuses(api):
    a = enroll(api, "cus_trf_a")["id"]
    b = enroll(api, "cus_trf_b")["id"]
    api.ok(adjust(api, a, 400, "seed"))
    body = {"program": "prog_api", "from": "cus_trf_a", "to": "cus_trf_b", "points": 200}
    got = api.ok(api.post("/v1/transfers", body))
    assert got["object"] == "transfer" and len(got["transactions"]) == 2, got
    out, inn = got["transactions"]
    assert (out["type"], out["account"], out["points"], out["balanceAfter"]) == ("transfer_out", a, -200, 300)
    assert (inn["type"], inn["account"], inn["points"], inn["balanceAfter"]) == ("transfer_in", b, 200, 300)
    assert api.get(f"{TX}/{out['id']}") == out and api.get(f"{TX}/{inn['id']}") == inn
    # Read-your-writes.
    assert api.get(f"/v1/accounts/{a}")["balance"] == 300 and api.get(f"/v1/accounts/{b}")["balance"] == 300
    before = (walk(api, TX, account=a), walk(api, TX, account=b))
    assert_error(api.post("/v1/transfers", dict(body, points=301)), 402, "refusal_error",
                 code="insufficient_points")
    assert (walk(api, TX, account=a), walk(api, TX, account=b)) == before
    assert_error(api.post("/v1/transfers", dict(body, points="lots")), 400, "invalid_request_error",
                 param="points")
    assert_error(api.post("/v1/transfers", {k: v for k, v in body.items() if k != "points"}), 400,
                 "invalid_request_error", param="points")
    # A sender with no account (status: an assumption).
    r = api.post("/v1/transfers", dict(body, **{"from": "cus_trf_nobody"}))
    assert r.status in (400, 404), r
    assert_error(r, r.status, "invalid_request_error")
    assert (walk(api, TX, account=a), walk(api, TX, account=b)) == before
    text = settled_with_fold(api, a)
    assert fold_transactions(text, b) == walk(api, TX, account=b)
    assert fold_transactions(text, a)[0] == out and fold_transactions(text, b)[0] == inn


def test_program_update_answers_the_program_and_names_an_invalid_field(api):
    program = {"id": "prog_upd", "name": "Updated", "currency": "EUR",
               "earningRules": [
                   {"id": "rule_welcome", "trigger": "loyalty.account.created",
                    "award": {"type": "fixed", "points": 40}},
                   {"id": "rule_buy", "trigger": "payment.completed",
                    "award": {"type": "per_amount", "per": 100, "points": 1}}]}
    got = api.ok(api.post("/v1/programs", program))
    assert got["object"] == "program" and contains(got, program), got
    # Read-your-writes: the program, and its effect on the next enrolment.
    assert api.get("/v1/programs/prog_upd") == got
    listed = api.get("/v1/programs")["data"]
    assert ids(listed)[:2] == ["prog_api", "prog_other"] and "prog_upd" in ids(listed)[2:]
    assert enroll(api, "cus_upd_1", program="prog_upd")["balance"] == 40

    program["earningRules"][0]["award"]["points"] = 70
    got = api.ok(api.post("/v1/programs", program))
    assert contains(got, program) and api.get("/v1/programs/prog_upd") == got
    assert enroll(api, "cus_upd_2", program="prog_upd")["balance"] == 70
    assert account_of(api, "cus_upd_1", "prog_upd")["balance"] == 40  # nothing already written changes

    # An invalid program: 400 naming the field, and nothing of it applied.
    bad = json.loads(json.dumps(program))
    bad["earningRules"][0]["award"]["points"] = 999
    bad["earningRules"][1]["award"]["per"] = 0
    assert_error(api.post("/v1/programs", bad), 400, "invalid_request_error",
                 param="earningRules[1].award.per")
    assert api.get("/v1/programs/prog_upd") == got
    assert enroll(api, "cus_upd_3", program="prog_upd")["balance"] == 70
    assert_error(api.post("/v1/programs", program, key=RK), 403, "permission_error")
    assert api.get("/v1/programs/prog_upd") == got


# ---------------------------------------------------------------------------------------------
# Idempotency


def test_idempotency_key_same_body_same_answer_other_body_409(api):
    acct = enroll(api, "cus_idem_1")["id"]
    key = f"idem-{uuid.uuid4().hex}"
    first = adjust(api, acct, 10, "idempotent goodwill", headers={"Idempotency-Key": key})
    assert first.status == 200, first
    second = adjust(api, acct, 10, "idempotent goodwill", headers={"Idempotency-Key": key})
    assert (second.status, second.json) == (first.status, first.json)
    # The same parameters serialized otherwise (key order, spacing) are the same body.
    raw = b'{ "reason" : "idempotent goodwill",\n  "points": 10 }\n'
    third = api.call("POST", f"/v1/accounts/{acct}/adjustments", headers={"Idempotency-Key": key}, raw=raw)
    assert (third.status, third.json) == (first.status, first.json)
    # Another body under the same key: 409, nothing applied.
    assert_error(adjust(api, acct, 11, "idempotent goodwill", headers={"Idempotency-Key": key}), 409,
                 "idempotency_error")
    txs = walk(api, TX, account=acct)
    assert [t["type"] for t in txs] == ["adjustment", "award"] and txs[0] == first.json
    assert api.get(f"/v1/accounts/{acct}")["balance"] == 110

    # A refusal is answered again the same.
    key2 = f"idem-{uuid.uuid4().hex}"
    r1 = adjust(api, acct, -1000, "too much", headers={"Idempotency-Key": key2})
    assert_error(r1, 402, "refusal_error", code="insufficient_points")
    r2 = adjust(api, acct, -1000, "too much", headers={"Idempotency-Key": key2})
    assert (r2.status, r2.json) == (r1.status, r1.json)

    # Without the header each request is a new command.
    a = api.ok(adjust(api, acct, 1, "no key"))
    b = api.ok(adjust(api, acct, 1, "no key"))
    assert a["id"] != b["id"] and b["balanceAfter"] == 112

    # A key of 256 characters is no key (400, an assumption), and nothing is applied.
    assert_error(adjust(api, acct, 5, "long key", headers={"Idempotency-Key": "k" * 256}), 400,
                 "invalid_request_error")
    ok = adjust(api, acct, 5, "longest key", headers={"Idempotency-Key": "k" * 255})
    assert ok.status == 200, ok

    text = settled_with_fold(api, acct)
    adjustments = [t for t in lines_of(text, "transaction") if t["account"] == acct and t["type"] == "adjustment"]
    assert len(adjustments) == 4  # goodwill once, "no key" twice, the 255-character key once
    events = [e for e in lines_of(text, "event")
              if e["type"] == "loyalty.points.adjusted" and e["data"]["account"] == acct]
    assert sorted(e["data"]["reason"] for e in events) == \
        ["idempotent goodwill", "longest key", "no key", "no key"]


# ---------------------------------------------------------------------------------------------
# Errors


def test_authentication_and_permission(api):
    acct = enroll(api, "cus_auth_1")["id"]
    for key in (None, "sk_unknown", "rk_unknown", "", SK + "x"):
        assert_error(api.call("GET", "/v1/accounts", key=key), 401, "authentication_error")
        assert_error(api.call("GET", f"/v1/accounts/{acct}", key=key), 401, "authentication_error")
    assert_error(api.call("GET", "/v1/accounts", key=None, headers={"Authorization": f"Basic {SK}"}), 401,
                 "authentication_error")
    assert_error(adjust(api, acct, 5, key=None), 401, "authentication_error")
    # A restricted key reads ...
    assert api.get(f"/v1/accounts/{acct}", key=RK)["id"] == acct
    assert page(api, "/v1/accounts", limit=1, key=RK)["data"]
    assert api.get("/v1/programs", key=RK)["object"] == "list"
    # ... and takes no command: 403, nothing applied.
    commands = [("/v1/accounts", {"program": "prog_api", "customer": "cus_auth_2"}),
                (f"/v1/accounts/{acct}/adjustments", {"points": 5, "reason": "x"}),
                (f"/v1/accounts/{acct}/redemptions", {"reward": "rwd_sticker"}),
                (f"/v1/accounts/{acct}/qualifying_activity", {"amount": 5, "reason": "x"}),
                ("/v1/transfers", {"program": "prog_api", "from": "cus_auth_1", "to": "cus_enr_1", "points": 1}),
                ("/v1/programs", CONFIG["programs"][1])]
    for path, body in commands:
        assert_error(api.post(path, body, key=RK), 403, "permission_error")
    assert walk(api, "/v1/accounts", customer="cus_auth_2") == []
    assert len(walk(api, TX, account=acct)) == 1


def test_not_found(api):
    missing = "loy_000000000000000000000000"
    for path in (f"/v1/accounts/{missing}", f"/v1/accounts/{missing}/balance", f"{TX}/ptx_nope",
                 "/v1/programs/prog_nope", "/v1/programs/prog_nope/rewards", "/v1/commands/cmd_nope",
                 "/v1/nothing_here", "/v1/accounts/x/y/z"):
        assert_error(api.call("GET", path), 404, "invalid_request_error", code="resource_missing")
    for path, body in [(f"/v1/accounts/{missing}/adjustments", {"points": 5, "reason": "x"}),
                       (f"/v1/accounts/{missing}/redemptions", {"reward": "rwd_coffee"}),
                       (f"/v1/accounts/{missing}/qualifying_activity", {"amount": 5, "reason": "x"}),
                       ("/v1/nothing_here", {})]:
        assert_error(api.post(path, body), 404, "invalid_request_error", code="resource_missing")


def test_method_not_allowed(api):
    acct = enroll(api, "cus_405_1")["id"]
    for method, path in [("DELETE", "/v1/accounts"), ("PUT", f"/v1/accounts/{acct}"),
                         ("DELETE", f"/v1/accounts/{acct}"), ("PATCH", f"/v1/accounts/{acct}"),
                         ("GET", f"/v1/accounts/{acct}/adjustments"), ("GET", "/v1/transfers"),
                         ("POST", TX), ("POST", "/v1/programs/prog_api"), ("DELETE", "/v1/programs"),
                         ("POST", f"/v1/accounts/{acct}/balance"), ("POST", "/v1/openapi.json")]:
        body = {} if method in ("POST", "PUT", "PATCH") else None
        assert_error(api.call(method, path, body), 405, "invalid_request_error")
    assert len(walk(api, TX, account=acct)) == 1


def test_body_over_one_mib_is_413(api):
    head = json.dumps({"program": "prog_api", "customer": "cus_big_1"}).encode()
    exact = head + b" " * (MIB - len(head))  # exactly 1 MiB of JSON: taken
    assert len(exact) == MIB
    assert api.ok(api.call("POST", "/v1/accounts", raw=exact))["customer"] == "cus_big_1"
    head = json.dumps({"program": "prog_api", "customer": "cus_big_2"}).encode()
    over = head + b" " * (MIB + 1 - len(head))
    assert_error(api.call("POST", "/v1/accounts", raw=over), 413, "invalid_request_error")
    # Also without a Content-Length (chunked).
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=60)
    try:
        chunks = iter([over[i:i + 65536] for i in range(0, len(over), 65536)])
        conn.request("POST", "/v1/accounts", body=chunks, encode_chunked=True,
                     headers={"Authorization": f"Bearer {SK}", "Content-Type": "application/json"})
        r = conn.getresponse()
        reply = Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        conn.close()
    assert_error(reply, 413, "invalid_request_error")
    assert walk(api, "/v1/accounts", customer="cus_big_2") == []
    # Under 1 MiB, but its record (the reason kept whole, in an envelope) is over what the
    # producer and the broker take (about 1 MB): 413 at once, not a 503 asking for a retry
    # that can never succeed; nothing applied, and the same again on a repeat.
    acct = enroll(api, "cus_big_3")["id"]
    before = api.get(f"/v1/accounts/{acct}")["balance"]
    body = json.dumps({"points": 5, "reason": "r" * (MIB - 100)}).encode()
    assert len(body) < MIB
    for _ in range(2):
        big = api.call("POST", f"/v1/accounts/{acct}/adjustments", raw=body, headers={"Idempotency-Key": "big-3"})
        assert_error(big, 413, "invalid_request_error")
        assert "broker" in big.json["error"]["message"], big.json
    assert api.get(f"/v1/accounts/{acct}")["balance"] == before


def test_bad_requests_are_400_naming_the_parameter(api):
    acct = enroll(api, "cus_400_1")["id"]
    adj = f"/v1/accounts/{acct}/adjustments"
    for raw in (b"{not json", b"", b"[1, 2]", b'"a string"', b"\xff\xfe"):
        assert_error(api.call("POST", "/v1/accounts", raw=raw), 400, "invalid_request_error")
        assert_error(api.call("POST", adj, raw=raw), 400, "invalid_request_error")
    assert_error(api.post("/v1/accounts", {"program": "prog_api"}), 400, "invalid_request_error",
                 param="customer")
    assert_error(api.post("/v1/accounts", {"program": "prog_api", "customer": 42}), 400,
                 "invalid_request_error", param="customer")
    for body in ({"reason": "x"}, {"points": "ten", "reason": "x"}, {"points": 1.5, "reason": "x"},
                 {"points": None, "reason": "x"}, {"points": 10 ** 16, "reason": "x"}):
        assert_error(api.post(adj, body), 400, "invalid_request_error", param="points")
    assert_error(api.post(f"/v1/accounts/{acct}/redemptions", {"reward": "rwd_sticker", "quantity": "two"}),
                 400, "invalid_request_error", param="quantity")
    assert_error(api.post(f"/v1/accounts/{acct}/redemptions", {"quantity": 1}), 400,
                 "invalid_request_error", param="reward")
    # Nothing of these was applied.
    assert len(walk(api, TX, account=acct)) == 1

    for limit in ("0", "101", "-1", "ten", "1.5"):
        assert_error(api.call("GET", q("/v1/accounts", limit=limit)), 400, "invalid_request_error", param="limit")
        assert_error(api.call("GET", q(TX, limit=limit, account=acct)), 400, "invalid_request_error",
                     param="limit")
    assert len(page(api, "/v1/accounts", limit=1)["data"]) == 1
    assert len(page(api, "/v1/accounts", limit=100)["data"]) >= 1
    default = page(api, "/v1/accounts")
    assert len(default["data"]) == min(10, len(walk(api, "/v1/accounts")))

    for cursor in ("starting_after", "ending_before"):
        for bad in ("not-an-id", "loy_000000000000000000000000"):
            assert_error(api.call("GET", q("/v1/accounts", **{cursor: bad})), 400, "invalid_request_error",
                         param=cursor)
        assert_error(api.call("GET", q(TX, account=acct, **{cursor: "ptx_nope"})), 400,
                     "invalid_request_error", param=cursor)
    for bad in ("yesterday", "2026-13-01T00:00:00Z", "2026-03-01"):
        assert_error(api.call("GET", q(f"/v1/accounts/{acct}/balance", as_of=bad)), 400,
                     "invalid_request_error", param="as_of")
    for name in ("created__gte", "created__lt"):
        e = assert_error(api.call("GET", q(TX, account=acct, **{name: "last week"})), 400,
                         "invalid_request_error")
        assert e.get("param") in (name.replace("__", "[") + "]", "created"), e
    assert_error(api.call("GET", q("/v1/accounts", at_risk="maybe")), 400, "invalid_request_error",
                 param="at_risk")


# ---------------------------------------------------------------------------------------------
# Engines of their own: timeouts, outages, crashes, and `loyalty serve`


def settle_command(api, cmd_id, timeout=60):
    def done():
        r = api.call("GET", f"/v1/commands/{cmd_id}")
        assert r.status == 200, r
        c = r.json
        assert c["object"] == "command" and c["id"] == cmd_id, c
        assert c["status"] in ("pending", "applied", "refused"), c
        return c if c["status"] != "pending" else None
    return wait_for(done, timeout, f"command {cmd_id} to be folded")


def pending(reply):
    assert reply.status == 202, reply
    c = reply.json
    assert c["object"] == "command" and c["status"] == "pending" and isinstance(c["id"], str) and c["id"], c
    return c["id"]


def test_a_command_not_folded_in_time_is_202_then_applied_with_its_outcome(broker):
    api = ApiEngine(broker, "timeout", extra=["--command-timeout-ms", "1"])
    try:
        api.start()
        cid = pending(api.post("/v1/accounts", {"program": "prog_api", "customer": "cus_to_1"}))
        c = settle_command(api, cid)
        assert c["status"] == "applied", c
        acct = c["outcome"]
        assert acct["object"] == "loyalty_account" and acct["customer"] == "cus_to_1"
        assert api.get(f"/v1/accounts/{acct['id']}") == acct

        cid = pending(adjust(api, acct["id"], 250, "late"))
        c = settle_command(api, cid)
        assert c["status"] == "applied", c
        tx = c["outcome"]
        assert (tx["object"], tx["type"], tx["points"], tx["balanceAfter"]) == \
            ("points_transaction", "adjustment", 250, 350)
        assert api.get(f"{TX}/{tx['id']}") == tx

        cid = pending(redeem(api, acct["id"], "rwd_lounge"))
        c = settle_command(api, cid)
        assert c["status"] == "refused", c
        assert c["outcome"]["error"]["type"] == "refusal_error"
        assert c["outcome"]["error"]["code"] == "tier_required"
        # A command answered once stays answered.
        assert api.get(f"/v1/commands/{cid}") == c
        assert_error(api.call("GET", "/v1/commands/cmd_nope"), 404, "invalid_request_error",
                     code="resource_missing")
        text = settled_with_fold(api, acct["id"])
        assert fold_transactions(text, acct["id"])[0] == tx
        api.stop()
    finally:
        api.cleanup()


def test_broker_unreachable_command_is_202_or_503_and_never_applied_twice(broker):
    api = ApiEngine(broker, "outage", extra=["--command-timeout-ms", "2000"])
    try:
        api.start()
        acct = enroll(api, "cus_out_1")["id"]
        broker["proxy"].pause()
        try:
            r = adjust(api, acct, 30, "during the outage")
            assert api.call("GET", "/healthz", key=None).status == 200
        finally:
            broker["proxy"].resume()
        # Not folded in time (202, applied later), or not taken (503).
        assert r.status in (202, 503), r
        if r.status == 503:
            assert_error(r, 503, "api_error")
        else:
            c = settle_command(api, pending(r), timeout=120)
            assert c["status"] == "applied", c
            assert (c["outcome"]["type"], c["outcome"]["points"]) == ("adjustment", 30), c
            assert c["outcome"] in walk(api, TX, account=acct)
        api.wait_ready()
        # The engine takes commands again, and a read right after reflects them.
        r2 = adjust(api, acct, 1, "after the outage")
        if r2.status == 202:
            c = settle_command(api, pending(r2), timeout=120)
            assert c["status"] == "applied", c
            tx = c["outcome"]
        else:
            tx = api.ok(r2)
        assert tx in walk(api, TX, account=acct)
        text = settled_with_fold(api, acct)
        reasons = [e["data"]["reason"] for e in lines_of(text, "event")
                   if e["type"] == "loyalty.points.adjusted" and e["data"]["account"] == acct]
        assert reasons.count("after the outage") == 1
        if r.status == 202:
            assert reasons.count("during the outage") == 1
        else:
            assert reasons.count("during the outage") <= 1
        api.stop()
    finally:
        broker["proxy"].resume()
        api.cleanup()


def test_idempotency_key_across_kill9_gives_one_transaction(broker):
    api = ApiEngine(broker, "kill9")
    try:
        api.start()
        acct = enroll(api, "cus_k9_1")["id"]
        key = f"k9-{uuid.uuid4().hex}"
        first = adjust(api, acct, 25, "k9 goodwill", headers={"Idempotency-Key": key})
        assert first.status == 200, first
        api.kill9()
        api.start()
        again = adjust(api, acct, 25, "k9 goodwill", headers={"Idempotency-Key": key})
        assert (again.status, again.json) == (first.status, first.json)

        # A kill -9 while a request is in flight: whatever became of it, the repeat after the
        # restart applies it once.
        key2 = f"k9-{uuid.uuid4().hex}"
        conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=60)
        conn.request("POST", f"/v1/accounts/{acct}/adjustments",
                     body=json.dumps({"points": 5, "reason": "k9 in flight"}).encode(),
                     headers={"Authorization": f"Bearer {SK}", "Content-Type": "application/json",
                              "Idempotency-Key": key2})
        api.kill9()
        try:
            conn.getresponse().read()
        except (OSError, http.client.HTTPException):
            pass  # the connection went down with the engine
        finally:
            conn.close()
        api.start()
        tx = api.ok(adjust(api, acct, 5, "k9 in flight", headers={"Idempotency-Key": key2}))
        assert (tx["type"], tx["points"]) == ("adjustment", 5)
        repeat = adjust(api, acct, 5, "k9 in flight", headers={"Idempotency-Key": key2})
        assert (repeat.status, repeat.json) == (200, tx)
        assert api.get(f"/v1/accounts/{acct}")["balance"] == 130

        text = settled_with_fold(api, acct)
        reasons = sorted(e["data"]["reason"] for e in lines_of(text, "event")
                         if e["type"] == "loyalty.points.adjusted" and e["data"]["account"] == acct)
        assert reasons == ["k9 goodwill", "k9 in flight"]
        api.stop()
    finally:
        api.cleanup()


def test_serve_answers_reads_of_a_stopped_engine_and_405_to_commands(broker):
    api = ApiEngine(broker, "serve")
    served = None
    try:
        api.start()
        a = enroll(api, "cus_srv_1")["id"]
        b = enroll(api, "cus_srv_2")["id"]
        api.ok(adjust(api, a, 500, "seed"))
        api.ok(redeem(api, a, "rwd_coffee"))
        api.ok(api.post("/v1/transfers", {"program": "prog_api", "from": "cus_srv_1", "to": "cus_srv_2",
                                          "points": 50}))
        live = {"accounts": walk(api, "/v1/accounts"), "tx": walk(api, TX),
                "redemptions": walk(api, "/v1/redemptions", account=a), "programs": api.get("/v1/programs")}
        api.stop()
        text = api.folded()
        want_accounts = fold_accounts(text)

        served = Served(api.state, api.dir / "serve.log")
        accounts = walk(served, "/v1/accounts", limit=3)
        assert accounts == live["accounts"] == [want_accounts[k] for k in sorted(want_accounts)]
        for acct in accounts:
            assert served.get(f"/v1/accounts/{acct['id']}") == acct
        assert walk(served, TX, limit=4) == live["tx"] == fold_transactions(text)
        assert walk(served, "/v1/redemptions", account=a) == live["redemptions"] == fold_redemptions(text, a)
        assert served.get("/v1/programs") == live["programs"]
        assert served.get(f"/v1/accounts/{b}/balance")["balance"] == want_accounts[b]["balance"]
        assert walk(served, TX, account=a, key=RK) == fold_transactions(text, a)
        assert_error(served.call("GET", "/v1/accounts", key=None), 401, "authentication_error")
        assert served.call("GET", "/healthz", key=None).status == 200

        commands = [("/v1/accounts", {"program": "prog_api", "customer": "cus_srv_3"}),
                    (f"/v1/accounts/{a}/adjustments", {"points": 5, "reason": "x"}),
                    (f"/v1/accounts/{a}/redemptions", {"reward": "rwd_sticker"}),
                    (f"/v1/accounts/{a}/qualifying_activity", {"amount": 5, "reason": "x"}),
                    ("/v1/transfers", {"program": "prog_api", "from": "cus_srv_1", "to": "cus_srv_2", "points": 1}),
                    ("/v1/programs", CONFIG["programs"][1])]
        for path, body in commands:
            assert_error(served.post(path, body), 405, "invalid_request_error")
            assert_error(served.post(path, body, headers={"Idempotency-Key": "srv"}), 405,
                         "invalid_request_error")
        assert walk(served, "/v1/accounts") == live["accounts"]
        assert walk(served, TX) == live["tx"]
    finally:
        if served is not None:
            served.stop()
        api.cleanup()
