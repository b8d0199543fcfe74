"""The developer portal served by mlgate in Envoy: the OpenAPI export through a real validator
and real AzureML traffic (azureml-sim + Azurite) validated against it, no secret in any portal
answer, portal paths never counted or forwarded. The browser flow is test_portal_browser.py."""
import gzip
import hashlib
import json
import time
from pathlib import Path

import pytest
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from openapi_spec_validator import validate

from conftest import SIM_KEY
from harness import Envoy
from mlgate_harness import ROOT

PORTAL = "/developer"
ALICE, ALICE2, BOB = "alice-portal-key-6c1d", "alice-second-key-0f9e", "bob-hashed-key-77aa"
BASE = "/azureml-demo/workspaces/ws1/services/svc1"
RRS_BODY = {"Inputs": {"input1": {"ColumnNames": ["Col2"], "Values": [["This is a good day"]]}}, "GlobalParameters": {}}
HOSTILE = '<img src=x onerror="window.__pwned=1">Gold & "friends"'

# Both forms of mlgate (the .wasm and the native module) serve the same portal.
pytestmark = pytest.mark.forms("wasm", "native")


def sha(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def portal_config(sim_port: int) -> dict:
    return {
        "portal": {"path": PORTAL, "title": "Contoso AzureML developer portal"},
        # The "try it" console shows the RateLimit-* headers.
        "rate_limit_headers": True,
        "apis": [{
            "id": "azureml-demo", "name": "AzureML Demo API", "path": "azureml-demo",
            "description": "Feature hashing of text, as an AzureML Studio web service.",
            "service_url": f"http://127.0.0.1:{sim_port}",
            "operations": "azureml-studio",
            "backend_credentials": [{"workspace": "*", "service": "*", "api_key": SIM_KEY}],
        }, {
            "id": "echo", "name": "Echo API", "path": "echo", "service_url": f"http://127.0.0.1:{sim_port}",
            "subscription_key_header": "X-Echo-Key", "subscription_key_query": "echo-key",
            "operations": [
                {"id": "get-item", "name": "Get item", "method": "GET", "url_template": "/items/{item}?format=json&lang={lang}"},
                {"id": "get-item-xml", "name": "Get item as XML", "method": "GET", "url_template": "/items/{item}?format=xml&lang={lang}"},
                {"id": "put-item", "name": "Put item", "method": "PUT", "url_template": "/items/{item}"},
            ],
            "backend_credentials": [{"workspace": "*", "service": "*", "api_key": "echo-backend-key-31f0"}],
        }],
        "products": [
            {"id": "starter", "name": "Starter", "description": "5 calls a minute, 100 a week.", "apis": ["azureml-demo"],
             "rate_limit": {"calls": 5, "renewal_period": 60}, "quota": {"calls": 100, "renewal_period": 604800}},
            {"id": "gold", "name": HOSTILE, "apis": ["azureml-demo", "echo"]},
        ],
        "subscriptions": [
            {"id": "alice", "product": "starter", "state": "active", "primary_key": ALICE, "secondary_key": ALICE2},
            {"id": "bob", "product": "gold", "state": "active", "primary_key_sha256": sha(BOB)},
            {"id": "carol", "product": "starter", "state": "suspended", "primary_key": "carol-portal-key-1b2c"},
            {"id": "dave", "product": "starter", "state": "active", "primary_key": "dave-portal-key-4e4e"},
        ],
    }


SECRETS = [ALICE, ALICE2, BOB, "carol-portal-key-1b2c", "dave-portal-key-4e4e", SIM_KEY, "echo-backend-key-31f0"]


@pytest.fixture(scope="module")
def env(azurite, azureml_sim, form):
    e = Envoy(portal_config(azureml_sim.port), azureml_sim.port, concurrency=2)
    yield e
    e.stop()


def get(e, path, headers=None):
    return e.request("GET", path, headers or {}, host=f"127.0.0.1:{e.port}")


def spec_of(e, api_id: str) -> dict:
    r = get(e, f"{PORTAL}/apis/{api_id}/openapi.json")
    assert r.status == 200, r
    assert r.header("content-type") == "application/json; charset=utf-8"
    return r.json()


def test_openapi_export_validates(env):
    for api_id in ("azureml-demo", "echo"):
        spec = spec_of(env, api_id)
        validate(spec)   # openapi-spec-validator: raises on any violation of OpenAPI 3.0
        assert spec["openapi"] == "3.0.1"
        assert spec["servers"] == [{"url": f"http://127.0.0.1:{env.port}/{api_id}"}]
        assert spec["security"] == [{"apiKeyHeader": []}, {"apiKeyQuery": []}]
    echo = spec_of(env, "echo")
    assert echo["components"]["securitySchemes"] == {
        "apiKeyHeader": {"type": "apiKey", "name": "X-Echo-Key", "in": "header"},
        "apiKeyQuery": {"type": "apiKey", "name": "echo-key", "in": "query"}}
    get_item = echo["paths"]["/items/{item}"]["get"]
    assert get_item["operationId"] == "get-item"
    fmt = [p for p in get_item["parameters"] if p["name"] == "format"][0]
    assert fmt["schema"] == {"type": "string", "enum": ["json"], "default": "json"}
    assert echo["x-ms-paths"]["/items/{item}?format=xml&lang={lang}"]["get"]["operationId"] == "get-item-xml"
    aml = spec_of(env, "azureml-demo")
    ids = sorted(op["operationId"] for item in aml["paths"].values() for op in item.values())
    assert ids == ["bes-delete", "bes-start", "bes-status", "bes-submit", "rrs-execute"]
    assert get(env, f"{PORTAL}/apis/nope/openapi.json").status == 404


class Checker:
    """Validates each request sent and each response got against the exported document."""

    def __init__(self, env, spec: dict):
        self.env = env
        self.openapi = OpenAPI.from_dict(spec)
        self.server = spec["servers"][0]["url"]
        self.checked = []

    def call(self, method: str, path: str, headers: dict, body: bytes | None = None, expect: int | None = None,
             keyless: bool = False):
        """keyless: the request breaks the document's security requirement on purpose (the
        gateway's missing-key 401); the validator must refuse it, and the answer must match."""
        r = self.env.request(method, path, headers, body, host=f"127.0.0.1:{self.env.port}")
        if expect is not None:
            assert r.status == expect, r
        url_path, _, query = path.partition("?")
        args = dict(p.split("=", 1) for p in query.split("&") if p)
        assert url_path.startswith("/azureml-demo")
        req = MockRequest(f"http://127.0.0.1:{self.env.port}", method.lower(), url_path, args=args,
                          headers={k.lower(): v for k, v in headers.items()}, data=body,
                          content_type=headers.get("Content-Type", "application/json"))
        if keyless:
            from openapi_core.validation.request.exceptions import SecurityValidationError
            with pytest.raises(SecurityValidationError):
                self.openapi.validate_request(req)
        else:
            self.openapi.validate_request(req)
        ctype = (r.header("content-type") or "").split(";")[0]
        resp = MockResponse(r.body, status_code=r.status, headers=dict(r.headers), content_type=ctype or None)
        self.openapi.validate_response(req, resp)
        self.checked.append((method, path.split("?")[0], r.status))
        return r


def test_real_traffic_validates_against_the_export(env, azurite):
    from mlgate_harness.blobclient import put_blob
    check = Checker(env, spec_of(env, "azureml-demo"))
    bob = {"Ocp-Apim-Subscription-Key": BOB}
    json_h = {**bob, "Content-Type": "application/json"}
    r = check.call("POST", f"{BASE}/execute?api-version=2.0&details=true", json_h, json.dumps(RRS_BODY).encode(), 200)
    assert r.json()["Results"]["output1"]["value"]["Values"] == [["This is a good day", "1", "1", "2", "2", "0", "2", "0", "1"]]
    # The gateway's own answers are in the document too.
    check.call("POST", f"{BASE}/execute?api-version=2.0&details=true", {"Content-Type": "application/json",
               "Ocp-Apim-Subscription-Key": "not-a-key"}, json.dumps(RRS_BODY).encode(), 401)
    # The backend's errors (AzureML's shape): a bad body.
    check.call("POST", f"{BASE}/execute?api-version=2.0&details=true", json_h,
               json.dumps({"Inputs": {"input1": {"ColumnNames": ["Nope"], "Values": [["x"]]}}}).encode(), 400)
    # BES over Azurite: submit, status, start, status until finished, delete, then 404.
    put_blob(azurite.port, "portal-in", "input.csv", b"Col1,Col2\n1,This is a good day\n")
    job = {"Input": {"ConnectionString": "UseDevelopmentStorage=true", "RelativeLocation": "/portal-in/input.csv"},
           "Outputs": {"output1": {"ConnectionString": "UseDevelopmentStorage=true", "RelativeLocation": "/portal-out/out.csv"}},
           "GlobalParameters": {}}
    job_id = check.call("POST", f"{BASE}/jobs?api-version=2.0", json_h, json.dumps(job).encode(), 200).json()
    check.call("GET", f"{BASE}/jobs/{job_id}?api-version=2.0", bob, None, 200)
    check.call("POST", f"{BASE}/jobs/{job_id}/start?api-version=2.0", bob, b"", 200)
    status = None
    for _ in range(200):
        status = check.call("GET", f"{BASE}/jobs/{job_id}?api-version=2.0", bob, None, 200).json()
        if status["StatusCode"] in ("Finished", "Failed"):
            break
        time.sleep(0.05)
    assert status["StatusCode"] == "Finished", status
    check.call("DELETE", f"{BASE}/jobs/{job_id}?api-version=2.0", bob, None, 200)
    check.call("GET", f"{BASE}/jobs/{job_id}?api-version=2.0", bob, None, 404)
    # The key as the query parameter the document names (apiKeyQuery).
    check.call("GET", f"{BASE}/jobs/{job_id}?api-version=2.0&subscription-key={BOB}", {}, None, 404)
    # Rate limit (Starter: 5 a minute) and missing key: APIM's 429 and 401 as documented.
    dave = {"Ocp-Apim-Subscription-Key": "dave-portal-key-4e4e", "Content-Type": "application/json"}
    statuses = [check.call("POST", f"{BASE}/execute?api-version=2.0&details=true", dave,
                           json.dumps(RRS_BODY).encode()).status for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    check.call("POST", f"{BASE}/execute?api-version=2.0&details=true", {"Content-Type": "application/json"},
               json.dumps(RRS_BODY).encode(), 401, keyless=True)
    assert {s for _, _, s in check.checked} == {200, 400, 401, 404, 429}
    # And the checker is not a rubber stamp: a response the document does not allow fails it.
    from openapi_core.exceptions import OpenAPIError
    req = MockRequest(f"http://127.0.0.1:{env.port}", "post", f"{BASE}/execute", args={"api-version": "2.0", "details": "true"},
                      headers={"ocp-apim-subscription-key": BOB}, data=json.dumps(RRS_BODY).encode())
    with pytest.raises(OpenAPIError):
        check.openapi.validate_response(req, MockResponse(b'{"Results": {"output1": {"type": 1}}}', 200))


def portal_answers(e) -> dict[str, bytes]:
    """Every portal answer there is for this configuration, by path (keys for My subscription)."""
    out = {}
    for path in ("", "/", "/portal.js", "/portal.css", "/apis.json", "/apis/azureml-demo/openapi.json", "/apis/echo/openapi.json"):
        r = get(e, PORTAL + path)
        assert r.status == 200, (path, r)
        body = gzip.decompress(r.body) if r.header("content-encoding") == "gzip" else r.body
        out[PORTAL + path] = body
    for key in (ALICE, ALICE2, BOB):
        r = get(e, f"{PORTAL}/subscription", {"Ocp-Apim-Subscription-Key": key})
        assert r.status == 200, r
        out[f"subscription of {key[:8]}"] = r.body
    return out


def test_portal_answers_carry_no_secret(env):
    answers = portal_answers(env)
    assert len(answers) == 10
    for name, body in answers.items():
        text = body.decode()
        low = text.lower()
        for s in SECRETS:
            assert s not in text, f"{s} in {name}"
            assert sha(s) not in low, f"SHA-256 of {s} in {name}"
            assert sha(s)[:16] not in low, f"part of the SHA-256 of {s} in {name}"
    # My subscription answers the caller's own subscription only.
    assert b'"bob"' not in answers[f"subscription of {ALICE[:8]}"] and b"alice" not in answers[f"subscription of {BOB[:8]}"]
    # The script and style sheet are the sources in the repository, byte for byte.
    assert answers[PORTAL + "/portal.js"] == (ROOT / "crates/portal/src/assets/portal.js").read_bytes()
    assert answers[PORTAL + "/portal.css"] == (ROOT / "crates/portal/src/assets/portal.css").read_bytes()


def test_portal_pages_have_a_strict_csp(env):
    for path in ("/", "/portal.js", "/apis.json"):
        r = get(env, PORTAL + path)
        csp = r.header("content-security-policy")
        assert csp and csp.startswith("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'"), csp
        assert "unsafe" not in csp
        assert r.header("x-content-type-options") == "nosniff"
    page = get(env, PORTAL + "/").body.decode()
    assert "<title>Contoso AzureML developer portal</title>" in page
    assert page.count("<script") == 1 and "<style" not in page and " on" not in page.split("<body>")[1].split("<footer>")[0]


def test_my_subscription_refuses_bad_keys(env):
    invalid = ('{ "statusCode": 401, "message": "Access denied due to invalid subscription key. '
               'Make sure to provide a valid key for an active subscription." }')
    for key in ("nope", "carol-portal-key-1b2c", sha(BOB)):
        r = get(env, f"{PORTAL}/subscription", {"Ocp-Apim-Subscription-Key": key})
        assert (r.status, r.body.decode()) == (401, invalid), key
    assert get(env, f"{PORTAL}/subscription").status == 401


def stat(e, name: str) -> int:
    return e.stat(name) or 0


def test_portal_paths_are_never_counted_nor_forwarded(env):
    key = {"Ocp-Apim-Subscription-Key": ALICE, "Content-Type": "application/json"}
    r = env.request("POST", f"{BASE}/execute?api-version=2.0&details=true", key, json.dumps(RRS_BODY).encode())
    assert r.status == 200, r
    remaining = int(r.header("ratelimit-remaining"))

    def used() -> dict:
        s = get(env, f"{PORTAL}/subscription", {"Ocp-Apim-Subscription-Key": ALICE}).json()
        return {(lim["scope"], lim["kind"]): lim["callsUsed"] for lim in s["limits"]}

    before = used()
    upstream_before = stat(env, "cluster.azureml.upstream_rq_total")
    for _ in range(3):
        portal_answers(env)
        for path in ("/nope", "/apis/nope/openapi.json", "/subscription?subscription-key=" + ALICE):
            get(env, PORTAL + path, {"Ocp-Apim-Subscription-Key": ALICE})
        env.request("POST", PORTAL + "/apis.json", {"Ocp-Apim-Subscription-Key": ALICE}, b"{}")
    assert used() == before
    assert stat(env, "cluster.azureml.upstream_rq_total") == upstream_before
    # The next API call sees the window exactly as the last one left it, one call later.
    r = env.request("POST", f"{BASE}/execute?api-version=2.0&details=true", key, json.dumps(RRS_BODY).encode())
    assert r.status == 200 and int(r.header("ratelimit-remaining")) == remaining - 1
    after = used()
    assert after[("product", "quota")] == before[("product", "quota")] + 1


def test_without_a_portal_section_there_is_no_portal(azureml_sim):
    cfg = portal_config(azureml_sim.port)
    del cfg["portal"]
    e = Envoy(cfg, azureml_sim.port, concurrency=1)
    try:
        r = get(e, PORTAL + "/")
        assert (r.status, r.body) == (404, b'{ "statusCode": 404, "message": "Resource not found" }')
        assert r.header("content-security-policy") is None
    finally:
        e.stop()


@pytest.mark.forms("wasm")
def test_make_run_prints_the_portal_url():
    text = Path(ROOT / "envoy" / "run.py").read_text()
    assert "/developer/" in text
    demo = Path(ROOT / "envoy" / "demo.yaml").read_text()
    assert '"portal": {"path": "/developer"' in demo
