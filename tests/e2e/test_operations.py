"""Operations against a running engine on Apache Kafka: /metrics, /healthz and /readyz as a
Prometheus scraper and a Kubernetes probe see them, JSON logs, and a checkpoint taken while
the engine runs."""
import json
import re
import subprocess
import urllib.error
import urllib.request

from conftest import Engine, fold, free_port, loyalty_bin, wait_for
from test_streaming import lines_of, now_minus, payments, send_all, write_config

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')


def get(url):
    """(status, body) of a GET; (None, reason) when nothing listens."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return None, str(e)


def scrape(base):
    """The samples of /metrics: {(name, frozenset(labels)): value}."""
    status, text = get(base + "/metrics")
    assert status == 200, text
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"not a Prometheus sample: {line!r}"
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_health_and_json_logs_of_a_running_engine(broker, workdir, prefix):
    cfg = write_config(workdir)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    eng = Engine(broker["bootstrap"], cfg, prefix, workdir / "state",
                 extra=["--metrics-addr", f"127.0.0.1:{port}", "--log-format", "json"])
    assert get(base + "/healthz")[0] is None
    eng.start()
    wait_for(lambda: get(base + "/readyz")[0] == 200, 60, "/readyz")
    assert get(base + "/healthz") == (200, "ok\n")

    good = payments(40, 7, seed=71)
    dup = dict(good[3])
    future = dict(payments(1, 1, seed=72)[0], id="evt_future", created=now_minus(-86_400))
    send_all(broker["bootstrap"], eng.topics["payments"], good + [dup, dup, future],
             raw=[(b"cus_x", b"{not json")])
    expected = fold(cfg, [json.dumps(e) for e in good])
    awards = len([t for t in lines_of(expected, "transaction") if t["type"] == "award"])
    earned = len([e for e in lines_of(expected, "event")
                  if e["type"] == "loyalty.points.earned"])
    created = len([e for e in lines_of(expected, "event")
                   if e["type"] == "loyalty.account.created"])

    seen = []

    def settled():
        s = scrape(base)
        seen[:] = [{f"{k[0]}{sorted(k[1])}": v for k, v in s.items()
                    if "bucket" not in k[0] and "loyalty" in k[0]}]
        done = (value(s, "loyalty_records_consumed_total", topic=eng.topics["payments"]) == 44
                and value(s, "loyalty_messages_published_total", topic=eng.topics["dlq"]) == 4
                and value(s, "loyalty_outbox_depth") == 0
                and value(s, "loyalty_consumer_lag", topic=eng.topics["log"], partition="0") == 0)
        return s if done else None

    try:
        s = wait_for(settled, 60, "the engine to fold and publish everything")
    except AssertionError as e:
        raise AssertionError(f"{e}: the metrics were {seen}") from None
    assert value(s, "loyalty_up") == 1
    # 43 records entered the log (the future one did not), and the configured program.
    assert value(s, "loyalty_records_sequenced_total") == 43
    assert value(s, "loyalty_records_folded_total") == 44
    assert value(s, "loyalty_records_rejected_total", reason="duplicate") == 2
    assert value(s, "loyalty_records_rejected_total", reason="malformed") == 1
    assert value(s, "loyalty_records_rejected_total", reason="invalid") == 1
    assert value(s, "loyalty_transactions_total", type="award") == awards
    assert value(s, "loyalty_messages_published_total", topic=eng.topics["earned"]) == earned
    assert value(s, "loyalty_messages_published_total", topic=eng.topics["created"]) == created
    assert value(s, "loyalty_consumer_lag", topic=eng.topics["payments"], partition="0") == 0
    assert value(s, "loyalty_log_offset", partition="0") == 44
    assert value(s, "loyalty_batch_size_count") >= 1
    assert value(s, "loyalty_batch_size_sum") == 44
    assert value(s, "loyalty_batch_duration_seconds_count") == value(s, "loyalty_batch_size_count")
    # Every account of this small state stays in the working set; none was read back.
    assert value(s, "loyalty_accounts_in_memory") == created
    assert value(s, "loyalty_accounts_loaded_total") == 0

    # A checkpoint of the running engine's state is a sound copy of it.
    cp = workdir / "checkpoint"
    subprocess.run([loyalty_bin(), "checkpoint", "--state", str(eng.state), "--to", str(cp)],
                   check=True, capture_output=True)
    verify = subprocess.run([loyalty_bin(), "verify", "--state", str(cp)], capture_output=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    live = eng.export()
    copy = subprocess.run([loyalty_bin(), "export", "--state", str(cp)],
                          capture_output=True, check=True).stdout.decode()
    assert copy == live, "the checkpoint differs from the live state"

    eng.stop()
    assert get(base + "/healthz")[0] is None
    # Logs: one JSON object a line, with a level and a message.
    log = (workdir / "state.engine.log").read_text().splitlines()
    records = [json.loads(line) for line in log if line.strip()]
    assert records and all("level" in r and "fields" in r for r in records)
    assert any(r["fields"].get("message") == "running" for r in records)


def program_records(broker, eng):
    """The `loyalty.program.updated` records of the engine's log, in order."""
    out = subprocess.run([loyalty_bin(), "log", "--brokers", broker["bootstrap"],
                          "--log-topic", eng.topics["log"]], capture_output=True, check=True)
    return [r for r in map(json.loads, out.stdout.decode().splitlines())
            if r["type"] == "loyalty.program.updated"]


def test_config_is_applied_only_when_the_file_changed(broker, workdir, prefix):
    """SPEC section 10: a restart with the file last applied does not revert a program
    changed since through loyalty.commands; an edited file is applied."""
    cfg = write_config(workdir)
    eng = Engine(broker["bootstrap"], cfg, prefix, workdir / "state")
    program = json.loads(cfg.read_text())["programs"][0]
    pid = program["id"]

    def earned_for(payment_id):
        """Waits for the award of one payment and returns its points."""
        def award():
            got = [t for t in lines_of(eng.export(), "transaction")
                   if t["rule"] == "rule_purchase" and t["source"] == payment_id]
            return got[0]["points"] if got else None
        return wait_for(award, 60, f"the award of {payment_id}")

    def pay(n):
        rec = {"id": f"evt_cfg_{n}", "type": "payment.completed", "created": now_minus(60),
               "data": {"id": f"pay_cfg_{n}", "customer": "cus_cfg", "amount": 1000,
                        "currency": "EUR"}}
        send_all(broker["bootstrap"], eng.topics["payments"], [rec])
        return earned_for(rec["id"])

    try:
        eng.start()
        base_points = pay(1)  # 10 EUR, 1 point per EUR, x1.5
        assert base_points == 15
        assert len(program_records(broker, eng)) == 1
        # The program changed through a command: 3 points per EUR.
        changed = json.loads(json.dumps(program))
        changed["earningRules"][0]["award"]["points"] = 3
        send_all(broker["bootstrap"], eng.topics["commands"], [
            {"id": "cmd_cfg_prog", "type": "loyalty.program.updated", "created": now_minus(30),
             "data": changed}])
        assert pay(2) == 45
        eng.stop()

        # A restart with the same file: nothing appended, the command's program holds.
        eng.start()
        assert pay(3) == 45
        assert [r["id"] for r in program_records(broker, eng)][1:] == ["cmd_cfg_prog"]
        eng.stop()

        # The file edited (2 points per EUR): applied at the next start, once.
        edited = json.loads(cfg.read_text())
        edited["programs"][0]["earningRules"][0]["award"]["points"] = 2
        cfg.write_text(json.dumps(edited))
        eng.start()
        assert pay(4) == 30
        records = program_records(broker, eng)
        assert len(records) == 3 and records[2]["id"].startswith(f"cfg_{pid}_")
        eng.stop()
        eng.start()
        assert pay(5) == 30
        assert len(program_records(broker, eng)) == 3
    finally:
        eng.stop()
