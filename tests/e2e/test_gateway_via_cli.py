"""The core conformance tests (test_gateway.py) again, against an Envoy started from the bootstrap
`mlgate envoy` prints instead of the harness's own: the listener, HTTP connection manager,
mlgate filter and per-service virtual hosts are the generated ones. Only the clusters' endpoints
are pointed at the recording upstream (the configuration names real AzureML hosts).

Every test of test_gateway.py that uses the shared `gw` gateway is collected here, except those
asserting the harness's text access-log format (the generated access log is JSON)."""
from __future__ import annotations

import inspect
import json

import pytest

import harness
import test_gateway as conformance
from deploytools import WASM_PATH, BootstrapEnvoy, free_port, mlgate
from harness import Recorder


class GeneratedGateway:
    """The parts of harness.Envoy that test_gateway's `gw` tests use, over a BootstrapEnvoy."""

    def __init__(self, envoy: BootstrapEnvoy, up: Recorder):
        self.envoy, self.up = envoy, up

    def request(self, method, path, headers=None, body=None, host="gw.example.test") -> harness.Response:
        return harness.request(self.envoy.ports[0], method, path, headers, body, host)

    def log(self) -> str:
        # Envoy's own log and the JSON access log: neither may show a key.
        return self.envoy.log() + self.envoy.stdout_path.read_text(errors="replace")

    def admin_get(self, path: str) -> str:
        return self.envoy.admin_get(path)


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    d = tmp_path_factory.mktemp("via-cli")
    cfg = d / "mlgate.json"
    cfg.write_text(json.dumps(conformance.CONFIG))
    r = mlgate("envoy", str(cfg), "--wasm", str(WASM_PATH), "--listen", f"127.0.0.1:{free_port()}",
               "--admin", f"127.0.0.1:{free_port()}")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    up = Recorder()
    domains = {vh["routes"][0].get("route", {}).get("cluster"): vh["domains"]
               for vh in doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"]}
    assert len(doc["static_resources"]["clusters"]) == len({a["service_url"] for a in conformance.CONFIG["apis"]})
    for c in doc["static_resources"]["clusters"]:
        assert c["name"] in domains, "every cluster is reached through its service's virtual host"
        c["type"] = "STATIC"
        c.pop("dns_lookup_family", None)
        c.pop("transport_socket", None)  # the recorder speaks plain HTTP
        c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] = {
            "address": "127.0.0.1", "port_value": up.port}
    e = BootstrapEnvoy(doc, env=conformance.ENV)
    yield GeneratedGateway(e, up)
    e.stop()
    up.close()


def _conformance_tests():
    for name, fn in vars(conformance).items():
        if not (name.startswith("test_") and inspect.isfunction(fn)):
            continue
        params = inspect.signature(fn).parameters
        if "gw" in params and "upstream" not in params and "access_line" not in inspect.getsource(fn):
            yield name, fn


for _name, _fn in _conformance_tests():
    globals()[_name] = _fn


def test_the_conformance_tests_were_collected():
    names = [n for n, _ in _conformance_tests()]
    assert len(names) >= 5, names
