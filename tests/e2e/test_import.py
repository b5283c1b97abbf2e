"""End to end: `loyalty import` (SPEC section 13, "Opening balances" and "Manual tier").

The engine runs as its own process on Apache Kafka (conftest's broker) with its HTTP API
(test_api's ApiEngine: `--http-addr`, `--api-keys`, topics of its own); `loyalty import` runs
as a subprocess against the same broker and the engine's commands topic. What the import
wrote is read back from the commands topic with kafka-python, and what the engine made of it
is read through the API (section 11).

Barrier. A read of the API right after an import can miss records the engine has not
folded yet, so before asserting that something is absent or unchanged the tests send one
more command through the API after the import has exited (`barrier`): an enrolment of a
new customer, which the API answers only once the engine has folded it, and after which
every read reflects it (read-your-writes). The import exits only once the broker took
every record (it flushes), so its records are in the commands topic before the barrier's.
The engine creates its input topics with one partition (`--input-partitions` defaults to
1; the module fixture asserts it), and a partition is folded in offset order: once the
barrier is answered, every record of the import has been folded, whatever customer it
concerns (a per-customer barrier would be needed with several partitions).

Where SPEC.md is silent, these tests assume (from crates/cli/src/import.rs):
- a bad row is reported on standard error as `loyalty import: line N: REASON`, N counted
  in the file's physical lines from 1 (a CSV header is line 1; a quoted field that spans
  lines counts them; a blank line counts but is no row), REASON naming the field when one
  field is at fault; exit 1 when some rows were bad, 0 when none, 2 when the file as a
  whole cannot be read (an unknown column), sending nothing then;
- `--config` checks every row's tier against the program's, `--topic` names the commands
  topic, `--format jsonl|csv` overrides the detection by extension (`.jsonl`), `--dry-run`
  checks and sends nothing;
- the records are keyed by the customer, an enrolment before the member's
  `loyalty.tier.set`; a row whose openingBalance is 0 may carry it or leave it out.
"""
import json
import re
import subprocess
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from kafka import KafkaConsumer, TopicPartition

from conftest import loyalty_bin, wait_for
from test_api import PERIOD_START, TX, ApiEngine, account_of, pending, settle_command, walk

PROGRAM = "prog_imp"
OPENING = "opening balance"

# Tiers (Member, Silver, Gold) on a calendar period whose only close is about half a year
# away: no evaluation can move a member while the tests run. No rule triggers on
# `loyalty.account.created`, so an imported member's ledger holds its opening balance only.
CONFIG = {"programs": [
    {"id": PROGRAM, "name": "Import Club", "currency": "EUR",
     "earningRules": [
         {"id": "rule_purchase", "trigger": "payment.completed",
          "award": {"type": "per_amount", "per": 100, "points": 1}}],
     "tierConfig": {"qualifyOn": "spend",
                    "period": {"type": "calendar", "months": 12, "start": PERIOD_START},
                    "tiers": [{"name": "Member", "rank": 0, "threshold": 0},
                              {"name": "Silver", "rank": 1, "threshold": 50000},
                              {"name": "Gold", "rank": 2, "threshold": 100000, "earnMultiplier": 2}]}}]}

ENROLL, TIER_SET = "loyalty.account.enroll", "loyalty.tier.set"
BAD_LINE = re.compile(r"^loyalty import: line (\d+): (.*)$", re.M)


@pytest.fixture(scope="module")
def engine(broker):
    eng = ApiEngine(broker, "import", config=CONFIG)
    try:
        eng.start()
        # The premise of `barrier`: the commands topic has one partition.
        c = KafkaConsumer(bootstrap_servers=eng.bootstrap)
        try:
            assert eng.topics["commands"] in c.topics()
            assert c.partitions_for_topic(eng.topics["commands"]) == {0}
        finally:
            c.close()
        yield eng
        eng.stop()
    finally:
        eng.cleanup()


# ---------------------------------------------------------------------------------------------
# Helpers


def run_import(eng, path, *flags, config=True):
    """`loyalty import` into the engine's commands topic; the finished process."""
    cmd = [loyalty_bin(), "import", "--brokers", eng.bootstrap, "--program", PROGRAM,
           "--topic", eng.topics["commands"]]
    if config:
        cmd += ["--config", str(eng.cfg)]
    return subprocess.run(cmd + list(flags) + [str(path)], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=300)


def bad_lines(proc):
    """{line: reason} of the bad rows an import reported; each line reported once."""
    found = BAD_LINE.findall(proc.stderr)
    lines = [int(n) for n, _ in found]
    assert len(lines) == len(set(lines)), f"a line reported twice:\n{proc.stderr}"
    return {int(n): reason for n, reason in found}


def check_bad_lines(proc, want):
    """The bad rows reported are exactly `want` ({line: a field the reason names, or None})."""
    got = bad_lines(proc)
    assert sorted(got) == sorted(want), f"bad lines {sorted(got)}, want {sorted(want)}:\n{proc.stderr}"
    for line, field in want.items():
        if field is not None:
            assert field in got[line], f"line {line}: {got[line]!r} does not name {field!r}"


def end_offset(eng):
    """The end of the commands topic (one partition, asserted by the fixture)."""
    c = KafkaConsumer(bootstrap_servers=eng.bootstrap)
    try:
        tp = TopicPartition(eng.topics["commands"], 0)
        return c.end_offsets([tp])[tp]
    finally:
        c.close()


def read(bootstrap, topic, start=None, end=None, timeout=60):
    """The messages of `topic` (every partition) from `start` ({partition: offset}; default the
    beginning) to `end` (default: the end now), in offset order per partition."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        if topic not in c.topics():
            return []
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic))]
        ends = c.end_offsets(tps) if end is None else {tp: end[tp.partition] for tp in tps}
        c.assign(tps)
        for tp in tps:
            if start is None:
                c.seek_to_beginning(tp)
            else:
                c.seek(tp, start.get(tp.partition, 0))
        got = []
        deadline = time.monotonic() + timeout
        while any(c.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, f"timed out reading {topic} up to {ends}"
            for tp, msgs in c.poll(timeout_ms=500).items():
                got += [m for m in msgs if m.offset < ends[tp]]
        return got
    finally:
        c.close()


def commands_between(eng, start, end):
    """The records written to the commands topic between two of its end offsets, as
    (key, record) pairs in topic order."""
    msgs = read(eng.bootstrap, eng.topics["commands"], {0: start}, {0: end})
    assert [m.offset for m in msgs] == list(range(start, end)), "a gap in the commands topic"
    return [(m.key.decode() if m.key is not None else None, json.loads(m.value)) for m in msgs]


def by_customer(records):
    """{customer: [record, ...]} in topic order, each record's key checked to be its customer."""
    out = {}
    for key, r in records:
        assert r["type"] in (ENROLL, TIER_SET), r
        assert r["data"]["program"] == PROGRAM, r
        assert key == r["data"]["customer"], f"record keyed {key!r}: {r}"
        out.setdefault(key, []).append(r)
    return out


def dead_letters(eng):
    """{source record id: [reasons]} of the engine's dead-letter topic, one per dead letter
    (a dead letter published again after a crash carries the id of the first)."""
    seen, out = set(), {}
    for m in read(eng.bootstrap, eng.topics["dlq"]):
        h = {k: v.decode() for k, v in m.headers}
        if h.get("x-loyalty-event-id") in seen:
            continue
        seen.add(h.get("x-loyalty-event-id"))
        source = h.get("x-loyalty-source-id") or json.loads(m.value).get("id")
        out.setdefault(source, []).append(h.get("x-loyalty-reason"))
    return out


def barrier(eng):
    """One more command through the API, folded after everything already in the commands
    topic (see the module's docstring): an enrolment of a customer of its own."""
    r = eng.post("/v1/accounts", {"program": PROGRAM, "customer": f"imp_barrier_{uuid.uuid4().hex[:10]}"})
    if r.status == 202:
        c = settle_command(eng, pending(r))
        assert c["status"] == "applied", c
    else:
        assert r.status == 200, f"{r}\n{eng.log_tail()}"


def member(eng, customer):
    """(account, its ledger newest first), or None when the customer has no account."""
    acct = account_of(eng, customer, program=PROGRAM)
    if acct is None:
        return None
    assert eng.get(f"/v1/accounts/{acct['id']}") == acct
    return acct, walk(eng, TX, account=acct["id"])


def wait_members(eng, customers):
    """Polls the API until every one of `customers` has an account."""
    wait_for(lambda: all(account_of(eng, c, program=PROGRAM) for c in customers), 120,
             f"the imported members {customers} to be enrolled")


def check_opened(eng, customer, opening, tier="Member", manual=None):
    """The member exists with `opening` points, all of them from one opening-balance
    adjustment and nothing else in its ledger; in `tier`, set by hand when `manual` (the
    tier.set record) is given. Returns (account, ledger)."""
    got = member(eng, customer)
    assert got is not None, f"{customer} was not enrolled\n{eng.log_tail()}"
    acct, ledger = got
    assert acct["object"] == "loyalty_account" and acct["program"] == PROGRAM, acct
    assert acct["balance"] == opening, (customer, acct)
    if opening:
        assert len(ledger) == 1, (customer, ledger)
        tx = ledger[0]
        assert (tx["type"], tx["points"], tx["balanceAfter"]) == ("adjustment", opening, opening), tx
        assert tx["why"]["reason"] == OPENING, tx
    else:
        # An opening balance of 0 (or none) writes nothing.
        assert ledger == [], (customer, ledger)
    assert acct["tier"] is not None and acct["tier"]["name"] == tier, (customer, acct)
    if manual is None:
        assert "manualTier" not in acct or acct["manualTier"] is None, (customer, acct)
    else:
        m = acct.get("manualTier")
        assert m is not None and m["tier"] == tier, (customer, acct)
        assert m["reason"] == manual["data"]["reason"], (customer, acct, manual)
        # No `until` given: one period length (12 months) after the record's `created`.
        created = parse_time(manual["created"])
        assert timedelta(days=365) <= parse_time(m["until"]) - created <= timedelta(days=366), m
    return acct, ledger


def parse_time(text):
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def check_sent(records, want):
    """The records of an import, per customer, are `want` ({customer: (openingBalance,
    birthday, tier)}): an enrolment each with its opening balance and birthday, then a
    tier.set where a tier was given; nothing else, nothing for anyone else."""
    got = by_customer(records)
    assert sorted(got) == sorted(want), f"records for {sorted(got)}, want {sorted(want)}"
    for customer, (opening, birthday, tier) in want.items():
        recs = got[customer]
        assert [r["type"] for r in recs] == [ENROLL] + ([TIER_SET] if tier else []), recs
        data = recs[0]["data"]
        assert data.get("openingBalance", 0) == opening, recs[0]
        assert data.get("birthday") == birthday, recs[0]
        if tier:
            assert recs[1]["data"]["tier"] == tier, recs[1]
            assert isinstance(recs[1]["data"].get("reason"), str) and recs[1]["data"]["reason"], recs[1]
    ids = [r["id"] for recs in got.values() for r in recs]
    assert len(ids) == len(set(ids)), f"two records with one id: {ids}"
    return got


# ---------------------------------------------------------------------------------------------
# Tests


def test_csv_import_reports_bad_rows_enrols_the_good_ones_and_twice_enrols_once(engine, workdir):
    tag = uuid.uuid4().hex[:6]
    a, b, q, zero = f"imp_{tag}_a", f"imp_{tag}_b", f"imp_{tag}_q,quoted", f"imp_{tag}_zero"
    neg, bday, plat, nl, short = (f"imp_{tag}_{s}" for s in ("neg", "bday", "plat", "nl", "short"))
    later = f"imp_{tag}_later"
    good_rows = [f"{a},03-14,1500,",          # line 2
                 f"{b},,250,Gold",            # line 3: a tier
                 f'"{q}","12-31","700",""']   # line 4: every field quoted, a comma in the id
    lines = ["customer,birthday,openingBalance,tier",
             *good_rows,
             f"{neg},,-5,",                   # line 5: a negative opening balance
             "",                              # line 6: blank, no row
             f"{bday},13-45,10,",             # line 7: no such month and day
             f"{plat},,10,Platinum",          # line 8: no such tier (checked with --config)
             f'{nl},"03-',                    # line 9: a quoted birthday over two lines,
             '14",10,',                       # line 10: still no month and day
             f"{short},01-01",                # line 11: two fields of four
             f"{a},01-01,99,",                # line 12: the customer of line 2 again
             ",01-01,5,",                     # line 13: no customer
             f"{zero},,0,"]                   # line 14: an opening balance of 0
    path = workdir / "members.csv"
    path.write_text("\n".join(lines) + "\n")
    good = {a: (1500, "03-14", None), b: (250, None, "Gold"), q: (700, "12-31", None), zero: (0, None, None)}
    bad = [neg, bday, plat, nl, short]

    start = end_offset(engine)
    proc = run_import(engine, path)
    assert proc.returncode == 1, f"exit {proc.returncode}:\n{proc.stderr}"
    check_bad_lines(proc, {5: "openingBalance", 7: "birthday", 8: "tier", 9: "birthday", 11: None,
                           12: "customer", 13: "customer"})
    # The good rows were sent, and only they: everything the commands topic took during the
    # import (nothing else writes to it meanwhile).
    first = check_sent(commands_between(engine, start, end_offset(engine)), good)

    wait_members(engine, list(good))
    barrier(engine)
    before = {c: check_opened(engine, c, opening,
                              tier=tier or "Member", manual=first[c][1] if tier else None)
              for c, (opening, _, tier) in good.items()}
    for c in bad:
        assert member(engine, c) is None, f"{c}, a bad row, was enrolled"
    # The first line of a customer wins: the repeat on line 12 (99 points) was not applied.
    assert before[a][0]["balance"] == 1500

    # The same import again, the bad rows taken out, and one member more.
    fixed = workdir / "members-fixed.csv"
    fixed.write_text("\n".join(["customer,birthday,openingBalance,tier", *good_rows,
                                f"{zero},,0,", f"{later},,60,"]) + "\n")
    second_start = end_offset(engine)
    proc = run_import(engine, fixed)
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stderr}"
    assert bad_lines(proc) == {}, proc.stderr
    again = check_sent(commands_between(engine, second_start, end_offset(engine)),
                       {**good, later: (60, None, None)})
    # Each member's records carry the same ids in both runs: derived from the program and
    # the customer, not from the run.
    for c in good:
        assert [r["id"] for r in again[c]] == [r["id"] for r in first[c]], c

    # The engine refused each repeated record as a duplicate (section 2: a rejection, on the
    # dead-letter topic in streaming mode), once, and nothing of the first run.
    repeated = {r["id"] for c in good for r in first[c]}
    letters = wait_for(lambda: (lambda d: repeated <= set(d) and d)(dead_letters(engine)), 120,
                       "the repeated records to be refused as duplicates")
    for rid in repeated:
        assert letters[rid] == ["duplicate"], (rid, letters[rid])

    wait_members(engine, [later])
    barrier(engine)
    # Nothing doubled and nothing changed: the same accounts (balance, tier, manual tier,
    # ledger hash) and the same ledgers, each with its one opening-balance adjustment.
    for c, (opening, _, tier) in good.items():
        after = check_opened(engine, c, opening, tier=tier or "Member", manual=first[c][1] if tier else None)
        assert after == before[c], c
        assert [t["why"]["reason"] for t in after[1] if t["type"] == "adjustment"].count(OPENING) == \
            (1 if opening else 0)
    check_opened(engine, later, 60)
    for c in bad:
        assert member(engine, c) is None, f"{c}, a bad row, was enrolled"


def test_json_lines_import_by_extension(engine, workdir):
    tag = uuid.uuid4().hex[:6]
    ja, jb, jc, jt = (f"jl_{tag}_{s}" for s in ("a", "b", "c", "t"))
    frac, neg, extra = (f"jl_{tag}_{s}" for s in ("frac", "neg", "extra"))
    rows = [{"customer": ja, "birthday": "07-04", "openingBalance": 300},    # line 1
            {"customer": jb, "openingBalance": 40, "tier": "Gold"},          # line 2
            None,                                                            # line 3: blank
            {"customer": frac, "openingBalance": 1.5},                       # line 4: not whole
            {"customer": neg, "openingBalance": -1},                         # line 5: negative
            {"customer": extra, "email": "x@example.com"},                   # line 6: no such field
            [1, 2],                                                          # line 7: not an object
            {"customer": jc},                                                # line 8
            {"customer": jt, "openingBalance": 15, "tier": "Diamond"}]       # line 9: no such tier
    path = workdir / "members.jsonl"
    path.write_text("".join("\n" if r is None else json.dumps(r) + "\n" for r in rows))

    start = end_offset(engine)
    # Without --config: the tiers are the engine's to check.
    proc = run_import(engine, path, config=False)
    assert proc.returncode == 1, f"exit {proc.returncode}:\n{proc.stderr}"
    check_bad_lines(proc, {4: "openingBalance", 5: "openingBalance", 6: "email", 7: None})
    sent = check_sent(commands_between(engine, start, end_offset(engine)),
                      {ja: (300, "07-04", None), jb: (40, None, "Gold"), jc: (0, None, None),
                       jt: (15, None, "Diamond")})

    wait_members(engine, [ja, jb, jc, jt])
    barrier(engine)
    check_opened(engine, ja, 300)
    check_opened(engine, jb, 40, tier="Gold", manual=sent[jb][1])
    check_opened(engine, jc, 0)
    # An unknown tier is `invalid` (section 13): the member is enrolled, its tier.set refused.
    check_opened(engine, jt, 15)
    for c in (frac, neg, extra):
        assert member(engine, c) is None, f"{c}, a bad row, was enrolled"
    refused = sent[jt][1]["id"]
    letters = wait_for(lambda: (lambda d: refused in d and d)(dead_letters(engine)), 120,
                       "the unknown tier's tier.set to be refused")
    assert letters[refused] == ["invalid"], letters[refused]
    assert sent[jb][1]["id"] not in letters and all(sent[c][0]["id"] not in letters for c in sent)


def test_dry_run_reports_bad_rows_and_sends_nothing(engine, workdir):
    tag = uuid.uuid4().hex[:6]
    da, db, ca = f"dry_{tag}_a", f"dry_{tag}_b", f"dry_{tag}_csv"
    # JSON lines in a file neither its name nor its first character says are JSON lines:
    # --format says so.
    path = workdir / "members.data"
    path.write_text("\n" + json.dumps({"customer": da, "openingBalance": 5}) + "\n"
                    + json.dumps({"customer": db, "birthday": "14-01"}) + "\n")
    csv_path = workdir / "members.csv"
    csv_path.write_text(f"customer,openingBalance\n{ca},25\n")

    start = end_offset(engine)
    proc = run_import(engine, path, "--format", "jsonl", "--dry-run")
    assert proc.returncode == 1, f"exit {proc.returncode}:\n{proc.stderr}"
    check_bad_lines(proc, {3: "birthday"})
    proc = run_import(engine, csv_path, "--dry-run")
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stderr}"
    assert bad_lines(proc) == {}, proc.stderr
    # Nothing reached the commands topic, and so nothing reached the engine.
    assert end_offset(engine) == start
    barrier(engine)
    for c in (da, db, ca):
        assert member(engine, c) is None, f"{c} was enrolled by a dry run"

    # The same CSV file for real: it was the dry run that sent nothing.
    proc = run_import(engine, csv_path)
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stderr}"
    wait_members(engine, [ca])
    barrier(engine)
    check_opened(engine, ca, 25)


def test_a_file_it_cannot_read_is_exit_2_and_sends_nothing(engine, workdir):
    tag = uuid.uuid4().hex[:6]
    cases = {"unknown-column.csv": (f"customer,email\nimp_{tag}_e,x@example.com\n", "email"),
             "no-customer.csv": ("birthday,openingBalance\n01-01,5\n", "customer")}
    start = end_offset(engine)
    for name, (text, named) in cases.items():
        path = workdir / name
        path.write_text(text)
        proc = run_import(engine, path)
        assert proc.returncode == 2, f"{name}: exit {proc.returncode}:\n{proc.stderr}"
        assert named in proc.stderr, f"{name}: the error does not name {named!r}:\n{proc.stderr}"
        assert bad_lines(proc) == {}, proc.stderr
    assert end_offset(engine) == start
    barrier(engine)
    assert member(engine, f"imp_{tag}_e") is None
