"""End to end: the HTTP API against its own OpenAPI document (SPEC section 11), by schemathesis.

schemathesis 4.32.5 (PyPI, pinned in scripts/e2e-deps; 4.x API), run as its CLI through
`python -m schemathesis.cli`, the program the `st` script starts:

    st --config-file schemathesis.toml run http://127.0.0.1:PORT/v1/openapi.json \\
       --checks all -H "Authorization: Bearer sk_test_1" --origin http://127.0.0.1:PORT \\
       --max-examples 25 --seed 20260301 --workers 4 --request-timeout 20 \\
       --suppress-health-check all --generation-database none --no-color \\
       --report junit --report-junit-path junit.xml

- `--checks all`: not_a_server_error, status_code_conformance, content_type_conformance,
  response_headers_conformance, response_schema_conformance, negative_data_rejection,
  positive_data_acceptance, missing_required_header, unsupported_method (405 to a method a
  path does not take, also one unknown to HTTP such as QUERY), allow_header_conformance (a
  405 carries `Allow`, as RFC 9110 requires), use_after_free, ensure_resource_availability,
  ignored_auth (no key or a wrong one: 401), object_level_authorization.
- `-H`: the `sk_` key on every request, the document's own fetch included (`/v1/` needs one).
- `--origin`: the engine's address, with the base path the document declares (its `servers`
  may name another host).
- The config file widens one check, and says why there: positive_data_acceptance expects a
  request valid by the schema to be accepted, but a valid request can still meet a refusal of
  the rules (402), an id that is not there (404, a cursor that is no id of its list: 400), or a
  program that is well formed JSON but does not validate (400): a JSON schema cannot say these.
- `--suppress-health-check all`: Hypothesis's health checks judge the generation of data
  (too slow, too many filtered), not the API.
- `--generation-database none`: nothing written into the tree; the run is in a temporary
  directory anyway.
"""
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from conftest import wait_for
from test_api import SK, TX, ApiEngine, adjust, assert_error, enroll, payment, redeem, walk

SCHEMATHESIS = "4.32.5"

# Every operation of section 11's tables: (method, path with its ids as {}).
OPERATIONS = [
    ("GET", "/v1/accounts"), ("POST", "/v1/accounts"), ("GET", "/v1/accounts/{}"),
    ("GET", "/v1/accounts/{}/balance"), ("POST", "/v1/accounts/{}/adjustments"),
    ("POST", "/v1/accounts/{}/redemptions"), ("POST", "/v1/accounts/{}/qualifying_activity"),
    ("GET", "/v1/points_transactions"), ("GET", "/v1/points_transactions/{}"),
    ("GET", "/v1/redemptions"), ("GET", "/v1/programs"), ("POST", "/v1/programs"),
    ("GET", "/v1/programs/{}"), ("GET", "/v1/programs/{}/rewards"), ("POST", "/v1/transfers"),
    ("GET", "/v1/commands/{}"), ("GET", "/v1/openapi.json")]

# The query parameters the spec names, per list.
QUERY = {
    ("GET", "/v1/accounts"): {"program", "customer", "tier", "at_risk", "limit", "starting_after",
                              "ending_before"},
    ("GET", "/v1/points_transactions"): {"account", "type", "limit", "starting_after", "ending_before"},
    ("GET", "/v1/accounts/{}/balance"): {"as_of"},
    ("GET", "/v1/redemptions"): {"account", "limit", "starting_after", "ending_before"},
}

TOML = """\
# positive_data_acceptance: a request valid by the schema may still be refused by the rules
# (402), name an id that is not there (404; a cursor that is no id of its list, 400) or carry a
# program that does not validate (400). Everything else stays as schemathesis has it.
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "400", "401", "402", "403", "404", "409"]
"""


def normalized(path):
    return re.sub(r"\{[^}]*\}", "{}", path)


def resolve(doc, obj):
    """Follows a local `$ref` (`#/components/...`)."""
    while isinstance(obj, dict) and "$ref" in obj:
        node = doc
        for part in obj["$ref"].lstrip("#/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        obj = node
    return obj


def server_path(doc):
    """The base path of the document's first server (`/` or none: the empty string)."""
    servers = doc.get("servers") or [{}]
    return re.sub(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/]+", "", servers[0].get("url", "")).rstrip("/")


def documented(doc):
    """{(METHOD, normalized full path): (operation, path-level parameters)}."""
    base = server_path(doc)
    out = {}
    for path, item in doc["paths"].items():
        item = resolve(doc, item)
        for method, op in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                out[(method.upper(), normalized(base + path))] = (op, item.get("parameters", []))
    return out


@pytest.fixture(scope="module")
def api(broker):
    eng = ApiEngine(broker, "openapi")
    try:
        eng.start()
        # Something to read: accounts, transactions of every kind, a redemption.
        a = enroll(eng, "cus_oa_1")["id"]
        enroll(eng, "cus_oa_2")
        eng.ok(adjust(eng, a, 800, "seed"))
        eng.ok(redeem(eng, a, "rwd_coffee"))
        eng.ok(eng.post("/v1/transfers", {"program": "prog_api", "from": "cus_oa_1", "to": "cus_oa_2",
                                          "points": 10}))
        eng.send("payments", [payment(f"evt_oa_{i}", f"cus_oa_{i % 3}", 2500 + i, ago=30 - i)
                              for i in range(6)])
        wait_for(lambda: len(walk(eng, TX)) >= 12, 60, "the seed transactions")
        yield eng
        eng.stop()
    finally:
        eng.cleanup()


def test_openapi_document_describes_every_operation(api):
    assert_error(api.call("GET", "/v1/openapi.json", key=None), 401, "authentication_error")
    reply = api.call("GET", "/v1/openapi.json")
    assert reply.status == 200, reply
    assert reply.headers.get("content-type", "").startswith("application/json"), reply.headers
    doc = reply.json
    assert isinstance(doc, dict) and str(doc.get("openapi", "")).startswith("3.1"), doc.get("openapi")
    ops = documented(doc)
    missing = [op for op in OPERATIONS if op not in ops]
    assert not missing, f"operations the document does not describe: {missing}; it has {sorted(ops)}"
    for key, names in QUERY.items():
        op, shared = ops[key]
        params = [resolve(doc, p) for p in shared + op.get("parameters", [])]
        have = {p["name"] for p in params if p.get("in") == "query"}
        assert names <= have, f"{key}: query parameters {sorted(names - have)} undocumented"
    op, shared = ops[("GET", "/v1/points_transactions")]
    have = {resolve(doc, p)["name"] for p in shared + op.get("parameters", [])}
    assert {"created[gte]", "created[lt]"} <= have or "created" in have, sorted(have)
    for key in OPERATIONS:
        if key[0] == "POST":
            assert "requestBody" in ops[key][0], f"{key}: no request body documented"
    # Every operation answers something it documents, errors included.
    for key, (op, _) in ops.items():
        statuses = set(op.get("responses", {}))
        assert statuses & {"200", "2XX", "default"}, f"{key}: no success answer documented"
        if key[1].startswith("/v1/") and key != ("GET", "/v1/openapi.json"):
            assert statuses & {"401", "4XX", "default"}, f"{key}: 401 undocumented"


def test_schemathesis_finds_no_server_error_and_every_answer_conforms(api, tmp_path):
    import schemathesis

    assert schemathesis.__version__ == SCHEMATHESIS, \
        f"schemathesis {schemathesis.__version__}; scripts/e2e-deps pins {SCHEMATHESIS}"
    config = tmp_path / "schemathesis.toml"
    config.write_text(TOML)
    junit = tmp_path / "junit.xml"
    # One worker: with several, hypothesis's ast.parse in worker threads sometimes hits
    # CPython 3.11's "AST constructor recursion depth mismatch" (a race in the
    # interpreter, python/cpython#106905), which schemathesis reports as a runtime error of
    # its own, not of the server.
    cmd = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config),
           "run", f"{api.base}/v1/openapi.json",
           "--checks", "all",
           "-H", f"Authorization: Bearer {SK}",
           "--origin", api.base,
           "--max-examples", "25", "--seed", "20260301", "--workers", "1",
           "--request-timeout", "20",
           "--suppress-health-check", "all",
           "--generation-database", "none",
           "--no-color",
           "--report", "junit", "--report-junit-path", str(junit)]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    report = (out.stdout + out.stderr)[-12000:]
    assert out.returncode == 0, f"schemathesis exited {out.returncode}:\n{report}\n--- engine log:\n{api.log_tail()}"

    # Every operation was exercised, none skipped (junit names carry the document's own
    # paths, without the servers' base path).
    base = server_path(api.get("/v1/openapi.json"))
    tested = set()
    for case in ET.parse(junit).iter("testcase"):
        name = case.get("name", "")
        if " " in name and case.find("skipped") is None:
            method, path = name.split(" ", 1)
            tested.add((method.upper(), normalized(base + path)))
    # Schemathesis leaves out the operation that serves the document it was given (it
    # selects 16 of the 17); that one is checked by the test above.
    untested = [op for op in OPERATIONS if op not in tested and op != ("GET", "/v1/openapi.json")]
    assert not untested, f"operations schemathesis did not test: {untested}\n{report}"

    # The engine is still up and still answers.
    assert api.engine.proc.poll() is None, api.log_tail()
    assert api.call("GET", "/readyz", key=None).status == 200
    assert json.loads(api.call("GET", "/v1/programs").body)["object"] == "list"
