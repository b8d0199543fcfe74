"""Issue 12, HTTPS per API (APIM's `protocols`): Envoy from `mlgate envoy --tls-cert --tls-key`
with a certificate made at test time. An https-only API refuses plain HTTP with APIM's 404 and
forwards nothing; over HTTPS it admits. The scheme is the one Envoy established for the
downstream connection: a client's X-Forwarded-Proto changes nothing.

Depends on the core's per-API `protocols` setting: where the core does not know the field yet,
this test reports XFAIL with the refusal, and nothing is skipped."""
from __future__ import annotations

import json

import pytest

from deploytools import WASM_PATH, BootstrapEnvoy, free_port, mlgate, self_signed_cert, tls_client_context, validate_bootstrap
from harness import Recorder

NOT_FOUND = {"statusCode": 404, "message": "Resource not found"}
KEY = {"Ocp-Apim-Subscription-Key": "alice-https-key"}
SECURE = "/secure/workspaces/ws1/services/svc1/execute?api-version=2.0&details=true"
PLAIN = "/plain/models/m1/predict"
BOTH = "/both/models/m1/predict"


def config(upstream: int) -> dict:
    predict = [{"id": "predict", "name": "Predict", "method": "POST", "url_template": "/models/{model}/predict"}]
    creds = [{"workspace": "*", "service": "*", "api_key": "aml-key"}]
    svc = f"http://127.0.0.1:{upstream}"
    return {
        "apis": [
            {"id": "secure", "name": "HTTPS only", "path": "secure", "service_url": svc, "operations": "azureml-studio",
             "backend_credentials": creds, "protocols": ["https"]},
            {"id": "plain", "name": "HTTP only", "path": "plain", "service_url": svc, "operations": predict,
             "backend_credentials": creds, "protocols": ["http"]},
            {"id": "both", "name": "Default (both)", "path": "both", "service_url": svc, "operations": predict,
             "backend_credentials": creds},
        ],
        "products": [{"id": "p", "name": "P", "apis": ["secure", "plain", "both"]}],
        "subscriptions": [{"id": "alice", "product": "p", "state": "active", "primary_key": "alice-https-key"}],
    }


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    d = tmp_path_factory.mktemp("https")
    cert, key = self_signed_cert(d)
    up = Recorder()
    cfg = d / "mlgate.json"
    cfg.write_text(json.dumps(config(up.port)))
    http_port, tls_port = free_port(), free_port()
    r = mlgate("envoy", str(cfg), "--wasm", str(WASM_PATH), "--listen", f"127.0.0.1:{http_port}",
               "--admin", f"127.0.0.1:{free_port()}", "--tls-cert", str(cert), "--tls-key", str(key),
               "--tls-listen", f"127.0.0.1:{tls_port}")
    if r.returncode == 1 and b"protocols" in r.stderr:
        up.close()
        pytest.xfail("waits on the core's per-API `protocols` (issue 12); mlgate refused: " + r.stderr.decode().strip())
    assert r.returncode == 0, r.stderr
    boot = d / "envoy.json"
    boot.write_bytes(r.stdout)
    doc = json.loads(r.stdout)
    tls_listener = doc["static_resources"]["listeners"][1]
    assert tls_listener["filter_chains"][0]["transport_socket"]["typed_config"]["@type"].endswith("DownstreamTlsContext")
    v = validate_bootstrap(boot)
    assert v.returncode == 0, v.stderr.decode()[-2000:]
    e = BootstrapEnvoy(boot)
    e.http_port, e.tls_port, e.up, e.tls = http_port, tls_port, up, tls_client_context(cert)
    yield e
    e.stop()
    up.close()


def call(gw, path: str, https: bool, headers: dict | None = None):
    return gw.request("POST", path, {**KEY, "Content-Type": "application/json", **(headers or {})}, b"{}",
                      port=gw.tls_port if https else gw.http_port, tls=gw.tls if https else None)


def test_https_only_api_refuses_plain_http_and_forwards_nothing(gateway):
    before = gateway.up.count()
    status, headers, body = call(gateway, SECURE, https=False)
    assert status == 404
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == NOT_FOUND
    # A client header cannot make a plain connection HTTPS.
    status, _, body = call(gateway, SECURE, https=False, headers={"X-Forwarded-Proto": "https"})
    assert status == 404 and json.loads(body) == NOT_FOUND
    assert gateway.up.count() == before, "a refused request reached the upstream"


def test_https_only_api_admits_https(gateway):
    before = gateway.up.count()
    status, _, _ = call(gateway, SECURE, https=True)
    assert status == 200
    assert gateway.up.count() == before + 1
    assert gateway.up.last()["path"] == "/workspaces/ws1/services/svc1/execute"
    # The 401 challenge names the scheme the client used.
    status, headers, _ = gateway.request("POST", SECURE, {}, b"{}", port=gateway.tls_port, tls=gateway.tls)
    assert status == 401
    assert 'realm="https://gw.example.test/secure"' in headers["www-authenticate"]


def test_http_only_api_refuses_https(gateway):
    before = gateway.up.count()
    status, _, body = call(gateway, PLAIN, https=True)
    assert status == 404 and json.loads(body) == NOT_FOUND
    assert gateway.up.count() == before
    status, _, _ = call(gateway, PLAIN, https=False)
    assert status == 200


def test_default_api_admits_both(gateway):
    assert call(gateway, BOTH, https=False)[0] == 200
    assert call(gateway, BOTH, https=True)[0] == 200
