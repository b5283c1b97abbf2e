"""End to end: the operator console (/console/) in headless Chromium, against a real engine.

The engine runs on the session's Apache Kafka broker with its HTTP API (test_api's
ApiEngine); payments for a handful of customers are produced with kafka-python, then one
refund puts a member at risk. Once the API shows all of it, tests/console/console.mjs (Node,
playwright-core driving Debian's Chromium) walks through the console: the key form, the
overview, a member's page and an adjustment, a simulation and a backtest, checking what the
page shows against the API; it saves screenshots under $LOYALTY_ARTIFACTS/console-screenshots
(or target/console-screenshots).

Needs `node`, Chromium and tests/console/node_modules: `source scripts/console-deps` installs
the last two. Without `node` the test is skipped; without the others it fails and says so.
"""
import os
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import ROOT, wait_for
from test_api import SK, TX, ApiEngine, PERIOD_START, call
from test_streaming import now_minus

PROGRAM = "prog_console"
CONSOLE_DIR = ROOT / "tests" / "console"


def _iso(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def config(pending=True):
    """The console's program; `pending`: payments' awards stay pending for 30 days."""
    now = datetime.now(timezone.utc)
    cfg = {"programs": [
        {"id": PROGRAM, "name": "Console Club", "currency": "EUR", "autoEnroll": True,
         "points": {"name": "points", "rounding": "floor"},
         "pointsExpiry": {"months": 12, "warnDays": 14},
         "earningRules": [
             {"id": "rule_spend", "trigger": "payment.completed",
              "award": {"type": "per_amount", "per": 100, "points": 1}, "multiplier": 2},
             {"id": "rule_welcome", "trigger": "loyalty.account.created",
              "award": {"type": "fixed", "points": 50}}],
         # A calendar period whose close is months away: no demotion while the test runs.
         "tierConfig": {"qualifyOn": "spend",
                        "period": {"type": "calendar", "months": 12, "start": PERIOD_START},
                        "tiers": [{"name": "Member", "rank": 0, "threshold": 0},
                                  {"name": "Silver", "rank": 1, "threshold": 20000, "earnMultiplier": 1.5},
                                  {"name": "Gold", "rank": 2, "threshold": 60000, "earnMultiplier": 2}]},
         "campaigns": [{"id": "camp_console", "name": "Console week", "multiplier": 1.5,
                        "starts": _iso(now - timedelta(days=1)), "ends": _iso(now + timedelta(days=6)),
                        "triggers": ["payment.completed"]}],
         "rewards": [{"id": "rwd_coffee", "name": "Coffee", "cost": 100, "kind": "product"},
                     {"id": "rwd_mug", "name": "Mug", "cost": 500, "kind": "product", "stock": 20}]}]}
    if pending:
        cfg["programs"][0]["pendingDays"] = 30
    return cfg


# Per customer, the amounts of their payments (minor units): one Gold, two Silver (the first
# of which a refund later puts at risk), the rest Members; 30 payments for 8 customers.
PLAN = {
    "cus_con_gold": [16000, 15000, 17000, 14000],
    "cus_con_risky": [6000, 6000, 6000, 6000],
    "cus_con_silver": [7000, 8000, 6000, 5000],
    "cus_con_a": [1200, 3400, 900, 2500],
    "cus_con_b": [4500, 800, 2100, 1900],
    "cus_con_c": [3000, 2000, 1000, 1500],
    "cus_con_d": [2500, 700, 5100],
    "cus_con_e": [999, 4200, 1800],
}
CUSTOMER = "cus_con_risky"


def payments():
    """The payments, interleaved across customers, an hour ago up to a few minutes ago."""
    rows = [(c, i, amount) for c, amounts in PLAN.items() for i, amount in enumerate(amounts)]
    rows.sort(key=lambda r: (r[1], r[0]))
    out = []
    for n, (c, i, amount) in enumerate(rows):
        out.append({"id": f"evt_con_{c}_{i}", "type": "payment.completed",
                    "created": now_minus(3600 - n * 100),
                    "data": {"id": f"pay_con_{c}_{i}", "customer": c, "amount": amount, "currency": "EUR"}})
    return out


def screenshot_dir():
    artifacts = os.environ.get("LOYALTY_ARTIFACTS")
    base = Path(artifacts) if artifacts else ROOT / "target"
    return base / "console-screenshots"


@pytest.fixture
def console_tools():
    """node, Chromium and playwright-core: skip without node, fail without the others."""
    node = shutil.which("node")
    if not node:
        pytest.skip("node is not installed: the console's browser test runs on Node")
    chromium = os.environ.get("CHROMIUM") or "/usr/bin/chromium"
    missing = []
    if not os.access(chromium, os.X_OK):
        missing.append(f"Chromium ({chromium})")
    if not (CONSOLE_DIR / "node_modules" / "playwright-core").is_dir():
        missing.append("tests/console/node_modules/playwright-core")
    if missing:
        pytest.fail(f"missing {' and '.join(missing)}: source scripts/console-deps first "
                    "(it installs Debian's chromium and runs npm ci in tests/console)")
    return node, chromium


def test_console_in_a_browser(broker, console_tools):
    node, chromium = console_tools
    api = ApiEngine(broker, "console", config=config())
    try:
        api.start()

        # The console is served by the engine itself.
        page = call(api.port, "GET", "/console/", key=None)
        assert page.status == 200, page
        assert page.headers.get("content-type", "").startswith("text/html"), page.headers

        records = payments()
        api.send("payments", records)
        per_customer = {c: len(a) for c, a in PLAN.items()}

        def accounts():
            body = api.get("/v1/accounts", program=PROGRAM, limit=100)
            return {a["customer"]: a for a in body["data"]}

        def all_folded():
            accts = accounts()
            if set(accts) != set(PLAN):
                return False
            for c, acct in accts.items():
                txs = api.get(TX, account=acct["id"], limit=100)["data"]
                if sum(1 for t in txs if t["rule"] == "rule_spend" and t["type"] == "award") != per_customer[c]:
                    return False
            last = records[-1]
            last_txs = api.get(TX, account=accts[last["data"]["customer"]]["id"], limit=100)["data"]
            return any(t["source"] == last["id"] for t in last_txs) and accts

        accts = wait_for(all_folded, 120, "every account and every payment's award in the API")
        assert any(a["tier"] and a["tier"]["rank"] >= 1 for a in accts.values()), accts

        # A refund takes the risky member below Silver's threshold: at risk, with a reversal.
        paid = f"pay_con_{CUSTOMER}_3"
        api.send("refunds", [{"id": "evt_con_refund", "type": "payment.refunded", "created": now_minus(30),
                              "data": {"id": "re_con_1", "payment": paid, "customer": CUSTOMER,
                                       "amount": 6000, "currency": "EUR"}}])
        wait_for(lambda: accounts()[CUSTOMER]["atRisk"], 60, "the refund to put a member at risk")

        shots = screenshot_dir()
        env = dict(os.environ, CONSOLE_URL=api.base, CONSOLE_KEY=SK, CONSOLE_PROGRAM=PROGRAM,
                   CONSOLE_CUSTOMER=CUSTOMER, SCREENSHOT_DIR=str(shots), CHROMIUM=chromium)
        try:
            run = subprocess.run([node, str(CONSOLE_DIR / "console.mjs")], cwd=ROOT, env=env,
                                 capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired as e:
            raise AssertionError(f"console.mjs did not finish in 600 s\n{e.stdout or ''}\n{e.stderr or ''}")
        print(run.stdout)
        print(run.stderr)
        assert run.returncode == 0, (f"console.mjs exited {run.returncode}\n--- stdout:\n{run.stdout}\n"
                                     f"--- stderr:\n{run.stderr}\n--- engine log:\n{api.log_tail()}")
        for name in ("overview.png", "overview-phone.png", "member.png", "member-after-adjust.png", "member-tier-set.png",
                     "backtest.png"):
            assert (shots / name).is_file(), f"no screenshot {shots / name}"
        api.stop()
    finally:
        api.cleanup()
