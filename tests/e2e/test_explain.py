"""End to end: explanations on a running engine on Apache Kafka (docs/explain.md).

One engine with the console test's program and payments (tests/e2e/test_console.py), then:
- every transaction the API lists carries `why`, and `GET /v1/programs/{id}/stats` equals a
  count over `loyalty fold` of the engine's own log (`loyalty log`), days and all;
- `POST /v1/simulate` with an `rk_` key answers what the fold of the log plus that record
  prints, and changes nothing (the state's export is the same before and after);
- `loyalty backtest --brokers` over the live log, `loyalty backtest --events` over the same
  log read with `loyalty log`, and `POST /v1/backtest` give the same report.
"""
import json
import subprocess
import tempfile
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from conftest import fold, loyalty_bin, wait_for
from test_api import RK, TX, ApiEngine
from test_console import PLAN, PROGRAM, config, payments


def log_lines(api):
    out = subprocess.run([loyalty_bin(), "log", "--brokers", api.bootstrap, "--log-topic", api.topics["log"]],
                         capture_output=True, check=True, timeout=120)
    return [line for line in out.stdout.decode().splitlines() if line.strip()]


def counted_stats(lines):
    """The stats the fold's lines call for (the program is in UTC)."""
    day = lambda t: datetime.fromisoformat(t.replace("Z", "+00:00")).astimezone(ZoneInfo("UTC")).date().isoformat()
    accounts = [l for l in lines if l["kind"] == "account" and l["program"] == PROGRAM]
    days = defaultdict(Counter)
    # Pending points count when they vest (SPEC 13): a pending line counts nowhere.
    what = {"award": ("earned", 1), "vest": ("earned", 1), "redemption": ("redeemed", -1), "expiry": ("expired", -1),
            "reversal": ("reversed", -1), "adjustment": ("adjusted", 1), "transfer_out": ("transferred", -1)}
    for l in lines:
        if l["kind"] == "event" and l["type"] == "loyalty.account.created":
            days[day(l["created"])]["enrolled"] += 1
        elif l["kind"] == "transaction" and l["type"] in what and l.get("status") != "pending":
            k, sign = what[l["type"]]
            days[day(l["created"])][k] += sign * l["points"]
    keys = ["enrolled", "earned", "redeemed", "expired", "reversed", "adjusted", "transferred"]
    tiers = Counter(a["tier"]["name"] for a in accounts)
    return {
        "object": "program_stats", "program": PROGRAM, "members": len(accounts),
        "membersByTier": {t: tiers.get(t, 0) for t in ("Member", "Silver", "Gold")},
        "atRisk": sum(1 for a in accounts if a["atRisk"]),
        "pointsOutstanding": sum(a["balance"] for a in accounts),
        "days": [dict({"date": d}, **{k: days[d].get(k, 0) for k in keys})
                 for d in sorted(days) if any(days[d].values())],
    }


def test_why_stats_simulate_and_backtest_on_a_running_engine(broker):
    # Without pendingDays: every payment's award is posted at once, and counts as earned.
    # A wider skew than the default 300 s, which the dry run must use as the engine does.
    api = ApiEngine(broker, "explain", config=config(pending=False), extra=["--max-skew-secs", "600"])
    work = Path(tempfile.mkdtemp(prefix="loyalty-explain-"))
    try:
        api.start()
        records = payments()
        api.send("payments", records)

        def folded():
            body = api.get("/v1/accounts", program=PROGRAM, limit=100)
            if len(body["data"]) != len(PLAN):
                return False
            last = records[-1]
            acct = next(a for a in body["data"] if a["customer"] == last["data"]["customer"])
            return any(t["source"] == last["id"] for t in api.get(TX, account=acct["id"], limit=100)["data"])

        wait_for(folded, 120, "every payment in the API")

        # The engine's own log, folded: the reference for the ledger and the stats.
        log = log_lines(api)
        lines = [json.loads(l) for l in fold(api.cfg, log).splitlines()]
        txs = [t for t in lines if t["kind"] == "transaction"]
        got = api.get(TX, limit=100)["data"]
        assert len(got) == len(txs) and all("why" in t for t in got)
        for t in got:
            want = next(x for x in txs if x["id"] == t["id"])
            assert t["why"] == want["why"], t
        assert api.get(f"/v1/programs/{PROGRAM}/stats", key=RK) == counted_stats(lines)

        # A dry run (read-only key): the fold of the log plus the record, and nothing written.
        before = api.engine.export()
        customer = next(iter(PLAN))
        record = {"id": "evt_sim_1", "type": "payment.completed", "created": records[-1]["created"],
                  "data": {"id": "pay_sim_1", "customer": customer, "amount": 12345, "currency": "EUR"}}
        sim = api.ok(api.post("/v1/simulate", record, key=RK))
        with_record = [json.loads(l) for l in fold(api.cfg, log + [json.dumps(record)]).splitlines()]
        want = [t for t in with_record if t["kind"] == "transaction" and t["source"] == "evt_sim_1"]
        assert [{k: v for k, v in t.items() if k != "object"} for t in sim["transactions"]] == \
            [{k: v for k, v in t.items() if k != "kind"} for t in want]
        assert {r["rule"]: r["outcome"] for r in sim["rules"]} == {"rule_spend": "awarded", "rule_welcome": "skipped"}
        assert api.engine.export() == before
        assert api.get(TX, limit=100)["data"] == got

        # What the engine would refuse at entry, the dry run refuses, under the engine's own
        # --max-skew-secs: 450 s ahead passes (the default 300 s would refuse it), 900 s not.
        def ahead(seconds):
            return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")
        near = dict(record, id="evt_sim_2", created=ahead(450), data=dict(record["data"], id="pay_sim_2"))
        sim = api.ok(api.post("/v1/simulate", near, key=RK))
        assert sim["rejected"] == [] and sim["transactions"], sim
        far = dict(record, id="evt_sim_3", created=ahead(900), data=dict(record["data"], id="pay_sim_3"))
        sim = api.ok(api.post("/v1/simulate", far, key=RK))
        assert [r["reason"] for r in sim["rejected"]] == ["invalid"], sim
        assert "more than 600 s ahead of the wall clock" in sim["rejected"][0]["detail"], sim
        assert not sim["transactions"], sim
        assert api.engine.export() == before

        # The engine's log goes to a file here: plain text, no terminal colour codes.
        tail = api.engine.log_tail(400)
        assert "INFO" in tail and "\x1b[" not in tail, tail[-2000:]

        # The same backtest three ways.
        cand = config(pending=False)
        for r in cand["programs"][0]["earningRules"]:
            r["multiplier"] = 2 * r.get("multiplier", 1)
        cand_path = work / "candidate.json"
        cand_path.write_text(json.dumps(cand))
        by_brokers = subprocess.run(
            [loyalty_bin(), "backtest", "--config", str(cand_path), "--brokers", api.bootstrap,
             "--log-topic", api.topics["log"], "--format", "json"], capture_output=True, check=True, timeout=120)
        log_path = work / "log.jsonl"
        log_path.write_text("\n".join(log) + "\n")
        by_file = subprocess.run(
            [loyalty_bin(), "backtest", "--config", str(cand_path), "--events", str(log_path), "--format", "json"],
            capture_output=True, check=True, timeout=120)
        report = json.loads(by_brokers.stdout)
        assert report == json.loads(by_file.stdout)
        by_api = api.ok(api.post("/v1/backtest", {"config": cand}, key=RK))
        assert by_api.pop("object") == "backtest"
        assert by_api == report
        spend = next(r for r in report["programs"][0]["rules"] if r["rule"] == "rule_spend")
        assert spend["candidate"] > spend["baseline"] > 0
        api.stop()
    finally:
        api.cleanup()
