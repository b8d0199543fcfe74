"""Usage metrics, APIM's reports and the usage dashboard, in a real Envoy.

One known mix of calls (successes, 401s, 404s, a 429, a 403 and a backend 500) is driven once
through a gateway; then /stats/prometheus must show exactly those counts with real labels,
the histograms exactly those samples, and the admin API's reports exactly the same numbers
(their times computed from the same metrics). The dashboard is opened in headless Chromium
and must show them. The JSON access log and the stats tags are those of the shipped configs.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

import mlgate_harness as mh
from harness import Envoy, Recorder, free_port

# Both forms of mlgate (the .wasm and the native module) pass the same suite.
pytestmark = pytest.mark.forms("wasm", "native")

ROOT = Path(__file__).resolve().parents[2]
ADMIN_KEY = "admin-key-for-the-usage-test-0123456789"
KEYS = {"alice": "alice-usage-key", "carl": "carl-usage-key", "bob": "bob-usage-key"}
BACKEND_KEY = "backend-secret-api-key"
BODY = b'{"Inputs": {"input1": {"ColumnNames": ["Col2"], "Values": [["This is a good day"]]}}, "GlobalParameters": {}}'
RRS = "/azureml-demo/workspaces/ws/services/svc/execute?api-version=2.0&details=true"
STATUS = "/azureml-demo/workspaces/ws/services/svc/jobs/job1?api-version=2.0"
API = "azureml-demo"
ARTIFACTS = ROOT / "target" / "artifacts" / "dashboard"
CHROMIUM = "/usr/bin/chromium"


def sha(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def config(per_subscription: bool = False) -> dict:
    return {
        "apis": [{"id": API, "name": "AzureML Demo API", "path": API, "service_url": "http://127.0.0.1:9",
                  "operations": "azureml-studio",
                  "backend_credentials": [{"workspace": "*", "service": "*", "api_key": BACKEND_KEY}]}],
        "products": [
            {"id": "starter", "name": "Starter", "apis": [API], "rate_limit": {"calls": 3, "renewal_period": 60}},
            {"id": "tiny", "name": "Tiny", "apis": [API], "quota": {"calls": 2, "renewal_period": 3600}},
            {"id": "unlimited", "name": "Unlimited", "apis": [API]},
        ],
        "subscriptions": [
            {"id": "alice", "product": "starter", "state": "active", "primary_key": KEYS["alice"]},
            {"id": "carl", "product": "tiny", "state": "active", "primary_key_sha256": sha(KEYS["carl"])},
            {"id": "bob", "product": "unlimited", "state": "active", "primary_key": KEYS["bob"]},
        ],
        "metrics": {"per_subscription": per_subscription},
        "admin": {"path": "/mlgate-admin", "key_sha256": sha(ADMIN_KEY)},
    }


# --------------------------------------------------------------------------------------------
# Prometheus text
# --------------------------------------------------------------------------------------------
LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def prometheus(e: Envoy) -> dict[tuple, float]:
    """/stats/prometheus as {(name, frozenset(labels)): value}."""
    out = {}
    for line in e.prometheus_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        m = LINE.match(line)
        assert m, line
        out[(m.group(1), frozenset(LABEL.findall(m.group(2) or "")))] = float(m.group(3))
    return out


def series(prom: dict, name: str) -> dict[frozenset, float]:
    return {labels: v for (n, labels), v in prom.items() if n == name}


def labels(product=None, op="rrs-execute", outcome=None, api=API, subscription=None) -> frozenset:
    d = {"api": api, "operation": op, "product": product, "outcome": outcome, "subscription": subscription}
    return frozenset((k, v) for k, v in d.items() if v is not None)


def wait_for(pred, timeout=30.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    raise TimeoutError(what)


# --------------------------------------------------------------------------------------------
# The mix
# --------------------------------------------------------------------------------------------
class Mix:
    """What the gateway was sent, and what came back: per (labels without outcome, outcome),
    the calls, request body bytes and response body bytes."""

    def __init__(self):
        self.calls = defaultdict(int)
        self.req_bytes = defaultdict(int)
        self.resp_bytes = defaultdict(int)
        self.forwarded = defaultdict(int)   # by (slot, outcome)
        self.statuses = []

    def add(self, slot: frozenset, r, expect: int, sent: bytes = b"", forwarded: bool = False):
        assert r.status == expect, (r.status, r.body[:300])
        self.statuses.append(r.status)
        outcome = bucket(r.status)
        self.calls[(slot, outcome)] += 1
        self.resp_bytes[(slot, outcome)] += len(r.body)
        if forwarded:
            # Bodies of refused requests never pass the filter: Envoy stops at the reply.
            self.req_bytes[(slot, outcome)] += len(sent)
            self.forwarded[(slot, outcome)] += 1


def bucket(status: int) -> str:
    if status <= 301 or status in (304, 307):
        return "success"
    if status in (401, 403, 429):
        return "blocked"
    if status == 400 or 500 <= status <= 599:
        return "failed"
    return "other"


def drive(e: Envoy, upstream: Recorder) -> Mix:
    mix = Mix()
    key = lambda who: {"Ocp-Apim-Subscription-Key": KEYS[who]}
    starter, tiny, unlimited = labels("starter"), labels("tiny"), labels("unlimited")
    for expect in (200, 200, 200, 429):   # rate limit 3 per minute
        mix.add(starter, e.request("POST", RRS, key("alice"), BODY), expect, BODY, forwarded=expect == 200)
    for expect in (200, 200, 403):        # quota 2 calls per hour
        mix.add(tiny, e.request("POST", RRS, key("carl"), BODY), expect, BODY, forwarded=expect == 200)
    for _ in range(2):
        mix.add(labels("unlimited", op="bes-status"), e.request("GET", STATUS, key("bob")), 200, forwarded=True)
    upstream.status = 500
    try:
        mix.add(unlimited, e.request("POST", RRS, key("bob"), BODY), 500, BODY, forwarded=True)
    finally:
        upstream.status = 200
    for headers in ({}, {}, {"Ocp-Apim-Subscription-Key": "not-a-key"}):
        mix.add(labels(), e.request("POST", RRS, headers, BODY), 401, BODY)
    mix.add(labels(op=None), e.request("GET", f"/{API}/nothing", key("alice")), 404)
    mix.add(frozenset(), e.request("GET", "/elsewhere", key("alice")), 404)
    return mix


TOTAL = 15


@pytest.fixture(scope="module")
def gateway(form):
    upstream = Recorder()
    e = Envoy(config(), upstream.port, concurrency=2)
    try:
        mix = drive(e, upstream)
        assert len(mix.statuses) == TOTAL
        # The counts land at the end of each stream (after the client has its response), the
        # histograms at Envoy's next stats flush.
        wait_for(lambda: sum(series(prometheus(e), "mlgate_calls").values()) == TOTAL, what="calls counted")
        wait_for(lambda: sum(series(prometheus(e), "mlgate_api_time_milliseconds_count").values()) == TOTAL,
                 what="histograms flushed")
        yield e, upstream, mix
    finally:
        e.stop()
        upstream.close()


def admin(e: Envoy, path: str, key: str | None = ADMIN_KEY):
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return e.request("GET", f"/mlgate-admin{path}", headers)


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------
def test_calls_by_api_operation_product_and_outcome_are_prometheus_labels(gateway):
    e, _, mix = gateway
    prom = prometheus(e)
    calls = {k: v for k, v in series(prom, "mlgate_calls").items() if v}
    expected = {slot | {("outcome", outcome)}: n for (slot, outcome), n in mix.calls.items()}
    assert calls == expected
    # The example, as Prometheus prints it.
    text = e.prometheus_text()
    assert 'mlgate_calls{api="azureml-demo",operation="rrs-execute",product="starter",outcome="success"} 3' in text
    assert 'mlgate_calls{api="azureml-demo",operation="rrs-execute",product="unlimited",outcome="failed"} 1' in text
    # Every series of the per-outcome metrics carries its outcome; the zero ones too.
    per_outcome = ("mlgate_calls", "mlgate_request_bytes", "mlgate_response_bytes", "mlgate_api_time_milliseconds",
                   "mlgate_service_time_milliseconds")
    for (name, lbls), _ in prom.items():
        if name.startswith(per_outcome):
            assert "outcome" in dict(lbls), name
    # Request and response body bytes, per outcome.
    for metric, counted in (("mlgate_request_bytes", mix.req_bytes), ("mlgate_response_bytes", mix.resp_bytes)):
        got = {k: v for k, v in series(prom, metric).items() if v}
        want = {slot | {("outcome", o)}: n for (slot, o), n in counted.items() if n}
        assert got == want, metric


DENIALS = {"mlgate_missing_key", "mlgate_invalid_key", "mlgate_not_found", "mlgate_rate_limited",
           "mlgate_quota_calls_exceeded", "mlgate_quota_bandwidth_exceeded", "mlgate_quota_exceeded",
           "mlgate_shared_data_failures", "mlgate_failure_mode_allowed", "mlgate_counter_slot_shared",
           "mlgate_shared_data_keys"}


def test_denial_reasons_stay_counters(gateway):
    e, _, _ = gateway
    prom = prometheus(e)
    got = {name: prom.get((name, frozenset()), None) for name in DENIALS - {"mlgate_shared_data_keys"}}
    assert got == {"mlgate_missing_key": 2, "mlgate_invalid_key": 1, "mlgate_not_found": 2, "mlgate_rate_limited": 1,
                   "mlgate_quota_calls_exceeded": 1, "mlgate_quota_bandwidth_exceeded": 0, "mlgate_quota_exceeded": 1,
                   "mlgate_shared_data_failures": 0, "mlgate_failure_mode_allowed": 0, "mlgate_counter_slot_shared": 0}


def test_histograms_count_every_call_and_every_backend_call(gateway):
    e, _, mix = gateway
    prom = prometheus(e)
    api = {k: v for k, v in series(prom, "mlgate_api_time_milliseconds_count").items() if v}
    assert api == {slot | {("outcome", o)}: n for (slot, o), n in mix.calls.items()}
    svc = {k: v for k, v in series(prom, "mlgate_service_time_milliseconds_count").items() if v}
    assert svc == {slot | {("outcome", o)}: n for (slot, o), n in mix.forwarded.items()}
    # Buckets are cumulative and end at the count.
    buckets = series(prom, "mlgate_api_time_milliseconds_bucket")
    starter_ok = labels("starter", outcome="success")
    inf = [v for k, v in buckets.items() if k == starter_ok | {("le", "+Inf")}]
    assert inf == [3]
    # The exact counters beside them: backend calls per slot, and time sums.
    backend = {k: v for k, v in series(prom, "mlgate_service_calls").items() if v}
    per_slot = defaultdict(int)
    for (slot, _), n in mix.forwarded.items():
        per_slot[slot] += n
    assert backend == dict(per_slot)
    sums = series(prom, "mlgate_api_time_microseconds_sum")
    for (slot, _), n in mix.calls.items():
        assert sums[slot] > 0, slot
        mn, mx = series(prom, "mlgate_api_time_min_microseconds")[slot], series(prom, "mlgate_api_time_max_microseconds")[slot]
        assert 0 < mn <= mx, slot


def test_no_subscription_in_any_stat_name_unless_asked(gateway):
    e, _, _ = gateway
    stats = e.admin_get("/stats")
    names = [line.partition(":")[0] for line in stats.splitlines()]
    for sub in KEYS:
        assert not [n for n in names if sub in n], sub
    assert not [n for n in names if "subscription=" in n]


def test_no_key_in_metrics_or_reports(gateway):
    e, _, _ = gateway
    secrets = list(KEYS.values()) + [BACKEND_KEY, ADMIN_KEY] + [sha(k) for k in list(KEYS.values()) + [ADMIN_KEY]]
    texts = [e.admin_get("/stats"), e.admin_get("/stats/prometheus")]
    for path in ("/reports/byApi", "/reports/byOperation", "/reports/byProduct", "/quotas"):
        r = admin(e, path)
        assert r.status == 200, path
        texts.append(r.body.decode())
    for t in texts:
        for s in secrets:
            assert s not in t


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------
def record(prom: dict, slots: list[frozenset], head: dict) -> dict:
    """The report record APIM's contract names, computed here from /stats/prometheus alone."""
    calls = series(prom, "mlgate_calls")
    def per_outcome(name, outcome):
        s = series(prom, name)
        return sum(s.get(slot | {("outcome", outcome)}, 0) for slot in slots)
    counts = {o: int(per_outcome("mlgate_calls", o)) for o in ("success", "blocked", "failed", "other")}
    total = sum(counts.values())
    bandwidth = sum(per_outcome(m, o) for m in ("mlgate_request_bytes", "mlgate_response_bytes")
                    for o in ("success", "blocked", "failed", "other"))
    def one(name):
        return sum(series(prom, name).get(slot, 0) for slot in slots)
    def extreme(name, f, present):
        vals = [series(prom, name)[slot] for slot in slots if present(slot) and series(prom, name).get(slot, 0) > 0]
        return f(vals) / 1000.0 if vals else 0
    has_calls = lambda slot: any(calls.get(slot | {("outcome", o)}, 0) for o in ("success", "blocked", "failed", "other"))
    has_backend = lambda slot: series(prom, "mlgate_service_calls").get(slot, 0) > 0
    svc_calls = one("mlgate_service_calls")
    prompt, completion = int(one("mlgate_prompt_tokens")), int(one("mlgate_completion_tokens"))
    return {**head,
            "callCountSuccess": counts["success"], "callCountBlocked": counts["blocked"],
            "callCountFailed": counts["failed"], "callCountOther": counts["other"], "callCountTotal": total,
            "bandwidth": int(bandwidth),
            "apiTimeAvg": avg_ms(one("mlgate_api_time_microseconds_sum"), total),
            "apiTimeMin": extreme("mlgate_api_time_min_microseconds", min, has_calls),
            "apiTimeMax": extreme("mlgate_api_time_max_microseconds", max, has_calls),
            "serviceTimeAvg": avg_ms(one("mlgate_service_time_microseconds_sum"), svc_calls),
            "serviceTimeMin": extreme("mlgate_service_time_min_microseconds", min, has_backend),
            "serviceTimeMax": extreme("mlgate_service_time_max_microseconds", max, has_backend),
            "promptTokens": prompt, "completionTokens": completion, "totalTokens": prompt + completion}


def avg_ms(sum_us, n):
    """The report's mean: milliseconds, rounded half up to the microsecond."""
    return (2 * sum_us + n) // (2 * n) / 1000 if n else 0


OPS = [("rrs-execute", "RRS Execute"), ("bes-submit", "BES Submit"), ("bes-start", "BES Start"),
       ("bes-status", "BES Status"), ("bes-delete", "BES Delete")]
PRODUCTS = [("starter", "Starter"), ("tiny", "Tiny"), ("unlimited", "Unlimited")]


def test_reports_are_apims_collections_computed_from_the_metrics(gateway):
    e, _, mix = gateway
    prom = prometheus(e)
    # Every label set of the API (the 404 without an operation included), as the stats have them.
    all_slots = {lbls - {x for x in lbls if x[0] == "outcome"} for (n, lbls) in prom if n == "mlgate_calls"}
    api_slots = [s for s in all_slots if ("api", API) in s]
    by_api = json.loads(admin(e, "/reports/byApi").body)
    assert by_api == {"value": [record(prom, api_slots, {"name": "AzureML Demo API", "apiId": f"/apis/{API}"})], "count": 1}
    rec = by_api["value"][0]
    assert (rec["callCountSuccess"], rec["callCountBlocked"], rec["callCountFailed"], rec["callCountOther"],
            rec["callCountTotal"]) == (7, 5, 1, 1, 14)
    api_bytes = sum(n for (slot, _), n in list(mix.req_bytes.items()) + list(mix.resp_bytes.items()) if ("api", API) in slot)
    assert rec["bandwidth"] == api_bytes
    assert 0 < rec["apiTimeMin"] <= rec["apiTimeAvg"] <= rec["apiTimeMax"]
    assert 0 < rec["serviceTimeMin"] <= rec["serviceTimeAvg"] <= rec["serviceTimeMax"]

    by_op = json.loads(admin(e, "/reports/byOperation").body)
    want = [record(prom, [s for s in all_slots if ("operation", op) in s],
                   {"name": name, "apiId": f"/apis/{API}", "operationId": f"/apis/{API}/operations/{op}"}) for op, name in OPS]
    assert by_op == {"value": want, "count": 5}
    assert [r["callCountTotal"] for r in by_op["value"]] == [11, 0, 0, 2, 0]

    by_product = json.loads(admin(e, "/reports/byProduct").body)
    want = [record(prom, [s for s in all_slots if ("product", p) in s], {"name": name, "productId": f"/products/{p}"})
            for p, name in PRODUCTS]
    assert by_product == {"value": want, "count": 3}
    assert [(r["callCountSuccess"], r["callCountBlocked"], r["callCountFailed"]) for r in by_product["value"]] == \
        [(3, 1, 0), (2, 1, 0), (2, 0, 1)]
    # Field order is APIM's.
    body = admin(e, "/reports/byProduct").body.decode()
    assert body.startswith('{"value":[{"name":"Starter","productId":"/products/starter","callCountSuccess":3,')

    r = admin(e, "/reports/bySubscription")
    assert r.status == 404 and "per_subscription" in r.json()["error"]["message"]


def test_quota_counters(gateway):
    e, _, _ = gateway
    q = admin(e, "/quotas").json()
    assert q["count"] == 1
    c = q["value"][0]
    assert (c["counterKey"], c["productId"], c["subscriptionId"], c["value"]["callsCount"], c["callsLimit"]) == \
        ("carl", "/products/tiny", "/subscriptions/carl", 2, 2)
    assert c["periodStartTime"] < c["periodEndTime"]


def test_admin_refuses_missing_and_wrong_keys(gateway):
    e, _, _ = gateway
    for path in ("/reports/byApi", "/reports/byProduct", "/quotas", "/reports/nothing"):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {ADMIN_KEY}"},
                        {"Authorization": ADMIN_KEY}, {"Ocp-Apim-Subscription-Key": KEYS["bob"]}):
            r = e.request("GET", f"/mlgate-admin{path}", headers)
            assert r.status == 401, (path, headers)
            assert r.header("www-authenticate") == 'Bearer realm="mlgate-admin"'
            assert r.json()["error"]["code"] == "Unauthorized"
    # The page itself holds no data and needs no key; it is locked down by its CSP.
    page = e.request("GET", "/mlgate-admin/")
    assert page.status == 200
    assert "script-src 'self'" in page.header("content-security-policy")
    assert e.request("GET", "/mlgate-admin").header("location") == "/mlgate-admin/"


def test_local_endpoints_are_not_calls(gateway):
    e, _, _ = gateway
    for _ in range(3):
        admin(e, "/reports/byApi")
        admin(e, "/", key=None)
        admin(e, "/reports/byApi", key="wrong")
    time.sleep(0.3)
    assert sum(series(prometheus(e), "mlgate_calls").values()) == TOTAL


def test_per_subscription_labels_and_report():
    upstream = Recorder()
    e = Envoy(config(per_subscription=True), upstream.port, concurrency=2)
    try:
        for who in ("alice", "alice", "bob"):
            assert e.request("POST", RRS, {"Ocp-Apim-Subscription-Key": KEYS[who]}, BODY).status == 200
        assert e.request("POST", RRS, {"Ocp-Apim-Subscription-Key": "nope"}).status == 401
        wait_for(lambda: sum(series(prometheus(e), "mlgate_calls").values()) == 4, what="calls counted")
        calls = {k: v for k, v in series(prometheus(e), "mlgate_calls").items() if v}
        assert calls == {labels("starter", subscription="alice", outcome="success"): 2,
                         labels("unlimited", subscription="bob", outcome="success"): 1,
                         labels(outcome="blocked"): 1}
        subs = admin(e, "/reports/bySubscription").json()
        assert subs["count"] == 3
        assert [(r["name"], r["productId"], r["subscriptionId"], r["callCountTotal"]) for r in subs["value"]] == [
            ("alice", "/products/starter", "/subscriptions/alice", 2), ("carl", "/products/tiny", "/subscriptions/carl", 0),
            ("bob", "/products/unlimited", "/subscriptions/bob", 1)]
        # By product, the same totals as without the label.
        assert [r["callCountTotal"] for r in admin(e, "/reports/byProduct").json()["value"]] == [2, 0, 1]
    finally:
        e.stop()
        upstream.close()


# --------------------------------------------------------------------------------------------
# The shipped configs: stats tags and the JSON access log
# --------------------------------------------------------------------------------------------
def demo() -> dict:
    return yaml.safe_load((ROOT / "envoy" / "demo.yaml").read_text())


def demo_hcm() -> dict:
    return mh.http_connection_managers(demo())[0]


@pytest.mark.forms("wasm")
def test_shipped_configs_carry_the_same_stats_tags():
    tags = lambda lst: sorted((t["tag_name"], t["regex"]) for t in lst)
    want = tags(demo()["stats_config"]["stats_tags"])
    assert [t for t, _ in want] == sorted(["api", "operation", "product", "subscription", "outcome"])
    from mlgate_harness.envoy import STATS_TAGS
    assert tags(STATS_TAGS) == want
    cli = ROOT / "target" / "release" / "mlgate"
    out = subprocess.run([str(cli), "envoy", str(ROOT / "deploy" / "demo.json"), "--listen", "127.0.0.1:1",
                          "--admin", "127.0.0.1:2"], capture_output=True, env={**os.environ, "AZUREML_API_KEY": "x"},
                         timeout=60, check=True)
    cli_bootstrap = json.loads(out.stdout)
    assert tags(cli_bootstrap["stats_config"]["stats_tags"]) == want
    # The CLI's access log has every field of the demo's.
    cli_log = mh.http_connection_managers(cli_bootstrap)[0]["access_log"][0]["typed_config"]["log_format"]["json_format"]
    demo_log = demo_hcm()["access_log"][0]["typed_config"]["log_format"]["json_format"]
    assert cli_log == demo_log


@pytest.mark.forms("wasm")
def test_json_access_log_of_the_demo_config(tmp_path):
    """The demo's log format (envoy/demo.yaml), to a file: one JSON object per request."""
    upstream = Recorder()
    port, admin_port = free_port(), free_port()
    log = tmp_path / "access.log"
    fmt = demo_hcm()["access_log"][0]["typed_config"]["log_format"]
    access_log = [{"name": "envoy.access_loggers.file", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": str(log), "log_format": fmt}}]
    # The demo's log reads the combined export, which the demo turns on.
    lst = mh.listener("gateway", port, [mh.wasm_filter(mh.WASM, json.dumps({**config(), "export_metadata": "combined"}))],
                      mh.prefix_route("up"), access_log=access_log)
    b = mh.bootstrap(admin_port, [lst], [mh.static_cluster("up", upstream.port)])
    b["stats_config"] = demo()["stats_config"]
    path = mh.write_config(tmp_path / "envoy.json", b)
    p = mh.start_envoy(path, tmp_path / "envoy.log", port=port, concurrency=1, extra=["--file-flush-interval-msec", "20"])
    try:
        from harness import request
        ok = request(port, "POST", RRS, {"Ocp-Apim-Subscription-Key": KEYS["alice"]}, BODY)
        refused = request(port, "POST", RRS + f"&subscription-key={KEYS['carl']}x", {}, BODY)
        limited = [request(port, "POST", RRS, {"Ocp-Apim-Subscription-Key": KEYS["alice"]}, BODY) for _ in range(3)][-1]
        assert (ok.status, refused.status, limited.status) == (200, 401, 429)
        lines = wait_for(lambda: (lambda ls: ls if len(ls) == 5 else None)(log.read_text().splitlines()), what="5 log lines")
        entries = [json.loads(line) for line in lines]
        first = entries[0]
        assert set(first) >= {"time", "method", "path", "status", "bytes_received", "bytes_sent", "duration_ms",
                              "upstream_ms", "mlgate"}
        assert (first["method"], first["path"], first["status"]) == ("POST", "/workspaces/ws/services/svc/execute", 200)
        assert (first["bytes_received"], first["bytes_sent"]) == (len(BODY), len(ok.body))
        assert isinstance(first["duration_ms"], int) and isinstance(first["upstream_ms"], int)
        assert first["mlgate"] == ("api=azureml-demo&operation=rrs-execute&subscription=alice&product=starter"
                                   "&workspace=ws&service=svc&apiversion=2.0&details=true")
        # A 401 knows its API and operation; its path is the client's, without the query (and its key).
        assert (entries[1]["status"], entries[1]["upstream_ms"], entries[1]["mlgate"]) == \
            (401, None, "api=azureml-demo&operation=rrs-execute")
        assert entries[1]["path"] == "/azureml-demo/workspaces/ws/services/svc/execute"
        # A 429 knows who was limited.
        assert (entries[4]["status"], entries[4]["mlgate"]) == \
            (429, "api=azureml-demo&operation=rrs-execute&subscription=alice&product=starter")
        text = log.read_text()
        for s in list(KEYS.values()) + [BACKEND_KEY]:
            assert s not in text
        # And the demo's stats tags make the labels (once the worker's usage batch is out: a tick).
        wait_for(lambda: 'mlgate_calls{api="azureml-demo",operation="rrs-execute",product="starter",outcome="blocked"} 1'
                 in mh.admin_get(admin_port, "/stats/prometheus"), timeout=10, what="the blocked call counted")
    finally:
        p.stop()
        upstream.close()


# --------------------------------------------------------------------------------------------
# The dashboard, in headless Chromium
# --------------------------------------------------------------------------------------------
def cells(page, table_id: str) -> list[dict]:
    return page.eval_on_selector_all(
        f"#{table_id} tbody tr",
        "rows => rows.map(r => Object.fromEntries([...r.querySelectorAll('td[data-key]')].map(td => [td.dataset.key, td.textContent])))")


def test_dashboard_shows_the_mix_in_chromium(gateway, form):
    from playwright.sync_api import sync_playwright
    e, _, mix = gateway
    # Screenshots per form: target/artifacts/dashboard/<form>/NN-step.png.
    shots = ARTIFACTS / form
    shots.mkdir(parents=True, exist_ok=True)
    base = f"http://127.0.0.1:{e.port}/mlgate-admin/"
    by_api = admin(e, "/reports/byApi").json()["value"][0]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            problems = []
            # The refused key's 401 and bySubscription's 404 are logged as failed loads; anything
            # else (a CSP violation above all) is a problem.
            page.on("console", lambda m: problems.append(m.text)
                    if m.type == "error" and "Failed to load resource" not in m.text else None)
            page.on("pageerror", lambda err: problems.append(str(err)))
            page.goto(base)
            page.screenshot(path=str(shots / "01-key.png"), full_page=True)

            # A wrong key: refused, nothing shown.
            page.fill("#key", "wrong-key")
            page.click("#load")
            page.wait_for_selector("#status.error")
            assert page.text_content("#status") == "The admin key was refused (401)."
            assert page.is_hidden("#main")
            page.screenshot(path=str(shots / "02-wrong-key.png"), full_page=True)

            page.fill("#key", ADMIN_KEY)
            page.click("#load")
            page.wait_for_selector("#byApi-table tbody tr")
            page.wait_for_selector("#quotas table")
            page.screenshot(path=str(shots / "03-reports.png"), full_page=True)

            api_rows = cells(page, "byApi-table")
            assert len(api_rows) == 1
            row = api_rows[0]
            assert (row["name"], row["callCountTotal"], row["callCountSuccess"], row["callCountBlocked"],
                    row["callCountFailed"], row["callCountOther"]) == ("AzureML Demo API", "14", "7", "5", "1", "1")
            assert row["bandwidth"] == str(by_api["bandwidth"])
            assert row["apiTimeAvg"] == f"{by_api['apiTimeAvg']:.2f}"

            ops = {r["name"]: r for r in cells(page, "byOperation-table")}
            assert (ops["RRS Execute"]["callCountTotal"], ops["RRS Execute"]["callCountBlocked"]) == ("11", "5")
            assert ops["BES Status"]["callCountSuccess"] == "2"
            products = {r["name"]: (r["callCountSuccess"], r["callCountBlocked"], r["callCountFailed"])
                        for r in cells(page, "byProduct-table")}
            assert products == {"Starter": ("3", "1", "0"), "Tiny": ("2", "1", "0"), "Unlimited": ("2", "0", "1")}
            assert "per_subscription" in page.text_content("#bySubscription")

            # Bar charts per API and per operation: one bar segment per non-zero outcome.
            assert page.locator("#byApi svg rect").count() == 4
            assert page.locator("#byOperation svg rect").count() == 3 + 1   # RRS Execute: 3 outcomes; BES Status: 1
            assert page.locator("#byApi svg rect.failed title").text_content() == "AzureML Demo API: 1 failed"

            # Quota use per product: carl used all of Tiny's 2 calls.
            quota = cells(page, "quota-tiny")
            assert [(r["subscription"], r["callsCount"], r["callsLimit"]) for r in quota] == [("carl", "2", "2")]
            assert page.get_attribute("#quota-tiny progress", "value") == "2"

            # Sorting: by calls, most first, then least first.
            page.click("#byOperation-table th button[data-key=callCountTotal]")
            names = [r["name"] for r in cells(page, "byOperation-table")]
            assert names[:2] == ["RRS Execute", "BES Status"]
            assert page.get_attribute("#byOperation-table th:has(button[data-key=callCountTotal])", "aria-sort") == "descending"
            page.click("#byOperation-table th button[data-key=callCountTotal]")
            assert [r["name"] for r in cells(page, "byOperation-table")][-1] == "RRS Execute"
            page.screenshot(path=str(shots / "04-sorted.png"), full_page=True)

            # No CSP violation, no script error; the key never reached the page's text.
            assert problems == []
            assert ADMIN_KEY not in page.content()
        finally:
            browser.close()
    # The dashboard's own requests are not API calls.
    assert sum(series(prometheus(e), "mlgate_calls").values()) == TOTAL
