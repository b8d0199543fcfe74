"""Issue "mlgate core": every request-behaviour bullet, through a real Envoy (--concurrency 2)
with the built mlgate.wasm and a recording upstream on loopback."""
import copy
import json

import pytest

from harness import Envoy, header_values

# Both forms of mlgate (the .wasm and the native module) pass the same suite.
pytestmark = pytest.mark.forms("wasm", "native")

MISSING = ("Access denied due to missing subscription key. Make sure to include subscription key "
           "when making requests to an API.")
INVALID = "Access denied due to invalid subscription key. Make sure to provide a valid key for an active subscription."
RRS = "/azureml-demo/workspaces/ws1/services/svc1/execute?api-version=2.0&details=true"

CONFIG = {
    "apis": [{
        "id": "azureml-demo", "name": "AzureML Demo API", "path": "azureml-demo",
        "service_url": "https://ussouthcentral.services.azureml.net",
        "operations": "azureml-studio",
        "backend_credentials": [
            {"workspace": "*", "service": "*", "api_key": "default-aml-key"},
            {"workspace": "ws1", "service": "svc1", "api_key_env": "AML_KEY_WS1"},
        ],
    }, {
        "id": "scoring", "name": "Custom scoring", "path": "score", "service_url": "http://scoring.internal:8080",
        "subscription_key_header": "X-Api-Key", "subscription_key_query": "key",
        "operations": [{"id": "predict", "name": "Predict", "method": "POST", "url_template": "/models/{model}/predict"}],
        "backend_credentials": [{"workspace": "*", "service": "*", "api_key": "scoring-key"}],
    }],
    "products": [
        {"id": "starter", "name": "Starter", "apis": ["azureml-demo"]},
        {"id": "everything", "name": "Everything", "apis": ["azureml-demo", "scoring"]},
    ],
    "subscriptions": [
        {"id": "alice", "product": "starter", "state": "active", "primary_key": "alice-primary", "secondary_key": "alice-secondary"},
        {"id": "bob", "product": "everything", "state": "active",
         # sha256("bob-primary"): the key itself is not in Envoy's config
         "primary_key_sha256": "0c5d1bdf2b3eb3c4c3a1a0d0e3b0f8f1d5c41f7ecb6bf7a69c8a3fb2f1b8a2d4"},
        {"id": "carol", "product": "starter", "state": "suspended", "primary_key": "carol-primary"},
        {"id": "dan", "product": "starter", "state": "expired", "primary_key": "dan-primary"},
    ],
}


def sha256_hex(s: str) -> str:
    import hashlib
    return hashlib.sha256(s.encode()).hexdigest()


CONFIG["subscriptions"][1]["primary_key_sha256"] = sha256_hex("bob-primary")
ENV = {"AML_KEY_WS1": "ws1-svc1-aml-key"}


@pytest.fixture(scope="module")
def gw(form):
    from harness import Recorder
    up = Recorder()
    e = Envoy(CONFIG, up.port, concurrency=2, env=ENV)
    e.up = up
    yield e
    e.stop()
    up.close()


def apim_error(r, status, message):
    assert r.status == status, r
    assert r.header("content-type") == "application/json"
    assert r.body == json.dumps({"statusCode": status, "message": message}).replace('{"', '{ "').replace('"}', '" }').encode()
    body = r.json()
    assert body == {"statusCode": status, "message": message}


# ---- key checks ---------------------------------------------------------------------------

def test_missing_key_is_401_with_challenge(gw):
    before = gw.up.count()
    r = gw.request("POST", RRS, body=b"{}")
    apim_error(r, 401, MISSING)
    assert r.header("www-authenticate") == (
        'AzureApiManagementKey realm="http://gw.example.test/azureml-demo",name="Ocp-Apim-Subscription-Key",type="header"')
    # The challenge names the API's configured header.
    r = gw.request("POST", "/score/models/m1/predict", body=b"{}")
    apim_error(r, 401, MISSING)
    assert 'name="X-Api-Key"' in r.header("www-authenticate")
    assert gw.up.count() == before, "nothing reaches the upstream"


@pytest.mark.parametrize("why,path,headers", [
    ("wrong key", RRS, {"Ocp-Apim-Subscription-Key": "nope"}),
    ("suspended subscription", RRS, {"Ocp-Apim-Subscription-Key": "carol-primary"}),
    ("expired subscription", RRS, {"Ocp-Apim-Subscription-Key": "dan-primary"}),
    ("product without this API", "/score/models/m1/predict", {"X-Api-Key": "alice-primary"}),
    ("header checked first, query ignored", RRS + "&subscription-key=alice-primary", {"Ocp-Apim-Subscription-Key": "nope"}),
    ("wrong key in query", RRS + "&subscription-key=nope", {}),
])
def test_invalid_keys_are_401(gw, why, path, headers):
    before = gw.up.count()
    r = gw.request("POST", path, headers, b"{}")
    apim_error(r, 401, INVALID)
    assert r.header("www-authenticate") is None
    assert gw.up.count() == before


@pytest.mark.parametrize("path,headers,sub", [
    (RRS, {"Ocp-Apim-Subscription-Key": "alice-primary"}, "alice"),
    (RRS, {"Ocp-Apim-Subscription-Key": "alice-secondary"}, "alice"),
    (RRS + "&subscription-key=alice-secondary", {}, "alice"),
    (RRS, {"ocp-apim-subscription-key": "bob-primary"}, "bob"),   # configured only as SHA-256
])
def test_valid_keys_pass(gw, path, headers, sub):
    r = gw.request("POST", path, headers, b'{"Inputs":{}}')
    assert r.status == 200, r
    got = gw.up.last()
    assert header_values(got, "x-mlgate-subscription-id") == [sub]


# ---- operation matching -------------------------------------------------------------------

@pytest.mark.parametrize("method,path", [
    ("GET", RRS),                                                                        # wrong method: 404, not 405
    ("POST", "/azureml-demo/workspaces/ws1/services/svc1/execute?details=true"),         # required api-version missing
    ("POST", "/azureml-demo/workspaces/ws1/services/svc1/execute?api-version=2.0"),      # required details missing
    ("POST", "/azureml-demo/workspaces/ws1/services/svc1/predict?api-version=2.0"),      # no such operation
    ("PATCH", "/azureml-demo/workspaces/ws1/services/svc1/jobs/j1?api-version=2.0"),
    ("GET", "/azureml-demo"),
])
def test_unmatched_operation_is_404(gw, method, path):
    before = gw.up.count()
    r = gw.request(method, path, {"Ocp-Apim-Subscription-Key": "alice-primary"})
    apim_error(r, 404, "Resource not found")
    assert gw.up.count() == before


def test_outside_every_api_is_404_by_default(gw):
    before = gw.up.count()
    apim_error(gw.request("GET", "/healthz"), 404, "Resource not found")
    apim_error(gw.request("GET", "/azureml-demo-other/x", {"Ocp-Apim-Subscription-Key": "alice-primary"}), 404,
               "Resource not found")
    assert gw.up.count() == before


def test_outside_every_api_can_pass_through(upstream):
    cfg = copy.deepcopy(CONFIG)
    cfg["unmatched_requests"] = "pass_through"
    e = Envoy(cfg, upstream.port, env=ENV)
    try:
        r = e.request("GET", "/healthz?x=1", {"Authorization": "Basic abc"})
        assert r.status == 200
        got = upstream.last()
        assert (got["method"], got["path"], got["query"]) == ("GET", "/healthz", "x=1")
        assert header_values(got, "authorization") == ["Basic abc"]   # untouched
        assert header_values(got, "x-mlgate-subscription-id") == []
        # Under an API path, requests are still judged.
        apim_error(e.request("POST", RRS), 401, MISSING)
    finally:
        e.stop()


@pytest.mark.parametrize("method,path,op", [
    ("POST", "/azureml-demo/workspaces/w/services/s/execute?api-version=2.0&details=true", "rrs-execute"),
    ("POST", "/azureml-demo/workspaces/w/services/s/jobs?api-version=2.0", "bes-submit"),
    ("POST", "/azureml-demo/workspaces/w/services/s/jobs/job-1/start?api-version=2.0", "bes-start"),
    ("GET", "/azureml-demo/workspaces/w/services/s/jobs/job-1?api-version=2.0", "bes-status"),
    ("DELETE", "/azureml-demo/workspaces/w/services/s/jobs/job-1?api-version=2.0", "bes-delete"),
])
def test_every_preset_operation_is_forwarded(gw, method, path, op):
    r = gw.request(method, path, {"Ocp-Apim-Subscription-Key": "alice-primary", "X-Test-Id": f"preset-{op}"},
                   b"{}" if method == "POST" else None)
    assert r.status == 200, r
    got = gw.up.last()
    assert got["method"] == method
    assert got["raw_path"] == path[len("/azureml-demo"):]
    line = gw.access_line(f"preset-{op}")
    assert line.startswith(f"meta=api=azureml-demo&operation={op}&subscription=alice&product=starter&workspace=w&"), line


# ---- the upstream request -----------------------------------------------------------------

def test_upstream_request_is_rewritten(gw):
    path = ("/azureml-demo/workspaces/ws1/services/svc1/execute?subscription-key=alice-primary"
            "&api-version=2.0&details=true&format=swagger")
    r = gw.request("POST", path, [
        ("Ocp-Apim-Subscription-Key", "alice-primary"),
        ("Authorization", "Basic Y2xpZW50OnNlY3JldA=="),
        ("X-Mlgate-Subscription-Id", "mallory"),
        ("X-Mlgate-Product-Id", "gold"),
        ("X-Mlgate-Product-Id", "platinum"),
        ("Content-Type", "application/json"),
    ], b'{"Inputs": {}}')
    assert r.status == 200, r
    got = gw.up.last()
    assert got["method"] == "POST"
    assert got["path"] == "/workspaces/ws1/services/svc1/execute"              # API suffix removed
    assert got["query"] == "api-version=2.0&details=true&format=swagger"       # key removed, others kept in order
    assert header_values(got, "ocp-apim-subscription-key") == []               # key header removed
    assert header_values(got, "authorization") == ["Bearer ws1-svc1-aml-key"]  # most specific credential, from env
    assert header_values(got, "host") == ["ussouthcentral.services.azureml.net"]
    assert header_values(got, "x-mlgate-subscription-id") == ["alice"]        # client copies replaced
    assert header_values(got, "x-mlgate-product-id") == ["starter"]
    assert header_values(got, "content-type") == ["application/json"]
    assert got["body"] == b'{"Inputs": {}}'


def test_wildcard_credential_and_custom_api(gw):
    r = gw.request("GET", "/azureml-demo/workspaces/other/services/x/jobs/7?api-version=2.0",
                   {"Ocp-Apim-Subscription-Key": "bob-primary"})
    assert r.status == 200
    assert header_values(gw.up.last(), "authorization") == ["Bearer default-aml-key"]
    r = gw.request("POST", "/score/models/m1/predict?key=bob-primary&trace=1", body=b"{}")
    assert r.status == 200
    got = gw.up.last()
    assert (got["path"], got["query"]) == ("/models/m1/predict", "trace=1")
    assert header_values(got, "host") == ["scoring.internal:8080"]
    assert header_values(got, "authorization") == ["Bearer scoring-key"]
    assert header_values(got, "x-mlgate-product-id") == ["everything"]


def test_match_is_exported_to_filter_state_and_access_log(gw):
    r = gw.request("DELETE", "/azureml-demo/workspaces/ws9/services/svc9/jobs/abc?api-version=2.0",
                   {"Ocp-Apim-Subscription-Key": "alice-primary", "X-Test-Id": "state"})
    assert r.status == 200
    # The combined export (the harness turns it on: its access log reads it): one property,
    # wasm.mlgate (one host call).
    line = gw.access_line("state")
    assert line == ("meta=api=azureml-demo&operation=bes-delete&subscription=alice&product=starter"
                    "&workspace=ws9&service=svc9&jobid=abc&apiversion=2.0 "
                    "api=- op=- sub=- product=- params=- status=200"), line
    # A rejected request carries no match.
    gw.request("GET", "/healthz", {"X-Test-Id": "rejected"})
    assert gw.access_line("rejected") == "meta=- api=- op=- sub=- product=- params=- status=404"


@pytest.mark.parametrize("mode,expected", [
    ("fields", "meta=- api=scoring op=predict sub=bob product=everything params=model=m7 status=200"),
    ("off", "meta=- api=- op=- sub=- product=- params=- status=200"),
    # Not configured: off (nothing is exported unless something is meant to read it). Passed as
    # a string, which the harness leaves as it is.
    ("default", "meta=- api=- op=- sub=- product=- params=- status=200"),
])
def test_match_export_modes(upstream, mode, expected):
    cfg = copy.deepcopy(CONFIG)
    if mode != "default":
        cfg["export_metadata"] = mode
    else:
        cfg.pop("export_metadata", None)
    e = Envoy(cfg if mode != "default" else json.dumps(cfg), upstream.port, env=ENV)
    try:
        r = e.request("POST", "/score/models/m7/predict", {"X-Api-Key": "bob-primary", "X-Test-Id": mode}, b"{}")
        assert r.status == 200
        assert e.access_line(mode) == expected
    finally:
        e.stop()


def test_keys_are_never_logged(gw):
    gw.request("POST", RRS, {"Ocp-Apim-Subscription-Key": "alice-primary"}, b"{}")
    gw.request("POST", RRS, {"Ocp-Apim-Subscription-Key": "wrong-key-xyz"}, b"{}")
    log = gw.log()
    for secret in ("alice-primary", "wrong-key-xyz", "ws1-svc1-aml-key", "default-aml-key"):
        assert secret not in log
    # Keys given as SHA-256 or through the VM environment never appear in Envoy's config dump.
    dump = gw.admin_get("/config_dump")
    assert "bob-primary" not in dump and "ws1-svc1-aml-key" not in dump
