"""Issue "Exact rate limits and quotas": one count across all Envoy workers (--concurrency 4),
proven with real concurrent traffic."""
import copy
import re
from collections import Counter
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness import Envoy, raw_request, simultaneous

# Both forms of mlgate (the .wasm and the native module) pass the same suite.
pytestmark = pytest.mark.forms("wasm", "native")

RRS = "/azureml-demo/workspaces/ws1/services/svc1/execute?api-version=2.0&details=true"


def config(product: dict, subs=("alice",), **top) -> dict:
    cfg = {
        "apis": [{
            "id": "azureml-demo", "name": "AzureML Demo API", "path": "azureml-demo",
            "service_url": "https://ussouthcentral.services.azureml.net", "operations": "azureml-studio",
            "backend_credentials": [{"workspace": "*", "service": "*", "api_key": "aml-key"}],
        }],
        "products": [{"id": "starter", "name": "Starter", "apis": ["azureml-demo"], **product}],
        "subscriptions": [{"id": s, "product": "starter", "state": "active", "primary_key": f"{s}-key"} for s in subs],
    }
    cfg.update(top)
    return cfg


def call(e, key="alice-key", headers=None, body=b"{}"):
    return e.request("POST", RRS, {"Ocp-Apim-Subscription-Key": key, **(headers or {})}, body)


def burst(e, n, key="alice-key", workers=48, headers_for=None):
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda i: call(e, key, headers_for(i) if headers_for else None), range(n)))


def check_429(r, period):
    assert r.status == 429, r
    assert r.header("content-type") == "application/json"
    retry = int(r.header("retry-after"))
    assert 1 <= retry <= period
    assert r.json() == {"statusCode": 429, "message": f"Rate limit is exceeded. Try again in {retry} seconds."}


def test_exactly_n_across_four_workers_over_consecutive_windows(upstream):
    limit, period = 100, 3
    e = Envoy(config({"rate_limit": {"calls": limit, "renewal_period": period}}), upstream.port, concurrency=4)
    raw = raw_request("POST", RRS, {"Ocp-Apim-Subscription-Key": "alice-key"}, b"{}")
    try:
        for window in range(3):
            before = upstream.count()
            results = simultaneous(e.port, [raw] * 300)
            ok = [r for r in results if r.status == 200]
            statuses = sorted(Counter(r.status for r in results).items())
            assert len(ok) == limit, f"window {window}: {len(ok)} admitted; statuses {statuses}"
            for r in results:
                if r.status != 200:
                    check_429(r, period)
            assert upstream.count() - before == limit, "only admitted requests reach the upstream"
            # Every admission of this burst leaves the sliding window `period` s after it.
            time.sleep(period + 0.3)
        # Envoy really spread the load over its workers.
        per_worker = [int(v) for k, v in (l.split(": ") for l in e.admin_get("/stats?filter=^listener.127.0.0.1_.*worker_.*downstream_cx_total$").splitlines())]
        assert sum(1 for v in per_worker if v > 0) >= 2, per_worker
        assert e.stat("wasmcustom.mlgate.rate_limited") == 3 * (300 - limit)
    finally:
        e.stop()


def test_sliding_window_frees_one_slot_per_expired_admission(upstream):
    e = Envoy(config({"rate_limit": {"calls": 2, "renewal_period": 4}}), upstream.port, concurrency=4)
    try:
        assert call(e).status == 200
        time.sleep(2.0)
        assert call(e).status == 200
        check_429(call(e), 4)
        # The first admission leaves the window 4 s after it (we are past that, by ~0.2 s);
        # the second still counts for ~1.8 s more.
        time.sleep(2.2)
        assert [call(e).status for _ in range(3)] == [200, 429, 429]
    finally:
        e.stop()


def test_rate_limit_headers(upstream):
    cfg = config({"rate_limit": {"calls": 3, "renewal_period": 60, "remaining_calls_header": "X-Calls-Left",
                                 "total_calls_header": "X-Calls-Total"},
                  "quota": {"calls": 100, "renewal_period": 3600}}, rate_limit_headers=True)
    e = Envoy(cfg, upstream.port)
    try:
        r = call(e)
        assert (r.header("ratelimit-limit"), r.header("ratelimit-remaining")) == ("3", "2")
        assert 59 <= int(r.header("ratelimit-reset")) <= 60
        assert (r.header("x-calls-left"), r.header("x-calls-total")) == ("2", "3")
        r = call(e)
        assert r.header("ratelimit-remaining") == "1"
    finally:
        e.stop()
    # Off, and off when not configured (APIM adds no such headers unless a policy names them).
    for off in ({**cfg, "rate_limit_headers": False}, {k: v for k, v in cfg.items() if k != "rate_limit_headers"}):
        e = Envoy(off, upstream.port)
        try:
            r = call(e)
            assert r.status == 200 and r.header("ratelimit-limit") is None and r.header("ratelimit-remaining") is None
            assert r.header("x-calls-left") == "2"    # APIM's own header names are explicit opt-ins
        finally:
            e.stop()


def test_call_quota_exhaustion_and_renewal(upstream):
    period = 3
    e = Envoy(config({"quota": {"calls": 20, "renewal_period": period}}), upstream.port, concurrency=4)
    try:
        # Align to a period start, so the burst stays inside one period.
        time.sleep(period - time.time() % period + 0.05)
        results = burst(e, 100)
        assert sum(r.status == 200 for r in results) == 20
        for r in results:
            if r.status != 200:
                assert r.status == 403
                retry = int(r.header("retry-after"))
                assert 1 <= retry <= period
                assert r.json() == {"statusCode": 403,
                                    "message": f"Out of call volume quota. Quota will be replenished in 00:00:0{retry}."}
        time.sleep(period - time.time() % period + 0.05)
        assert sum(r.status == 200 for r in burst(e, 50)) == 20
    finally:
        e.stop()


def test_quota_period_counts_from_subscription_start(upstream):
    cfg = config({"quota": {"calls": 1, "renewal_period": 86400 * 30}})
    cfg["subscriptions"][0]["start"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 86400 * 9 - 3600))
    e = Envoy(cfg, upstream.port)
    try:
        assert call(e).status == 200
        r = call(e)
        assert r.status == 403
        # 30-day periods from 9 days 1 hour ago: about 20 days 23 hours remain (.NET TimeSpan format).
        assert re.fullmatch(r"Out of call volume quota\. Quota will be replenished in 20\.22:59:\d\d\.", r.json()["message"]) \
            or re.fullmatch(r"Out of call volume quota\. Quota will be replenished in 20\.23:00:00\.", r.json()["message"]), r
    finally:
        e.stop()


def test_bandwidth_quota(upstream):
    e = Envoy(config({"quota": {"bandwidth_kb": 2, "renewal_period": 3600}}), upstream.port, concurrency=2)
    try:
        assert call(e, body=b"x" * 1500).status == 200     # 1500 B up + 11 B down: under 2 KB
        assert call(e, body=b"x" * 600).status == 200      # the bytes are counted once the exchange ends
        # Now 2122 B are counted; bandwidth is added after each response, so allow a moment for it.
        for _ in range(100):
            r = call(e, body=b"{}")
            if r.status == 403:
                break
            time.sleep(0.02)
        assert r.status == 403
        msg = r.json()["message"]
        assert re.fullmatch(r"Out of bandwidth quota\. Quota will be replenished in 00:\d\d:\d\d\.", msg), msg
    finally:
        e.stop()


def test_counts_survive_reconfiguration(upstream):
    e = Envoy(config({"rate_limit": {"calls": 5, "renewal_period": 600}}), upstream.port, concurrency=4, dynamic=True)
    try:
        assert [call(e).status for _ in range(3)] == [200] * 3
        # A new subscription and a higher limit: alice keeps her 3 admissions.
        e.reconfigure(config({"rate_limit": {"calls": 6, "renewal_period": 600}}, subs=("alice", "dave")))
        assert sum(r.status == 200 for r in burst(e, 30)) == 3
        assert sum(r.status == 200 for r in burst(e, 30, key="dave-key")) == 6
        assert e.stat("wasm.mlgate.vm_reload") in (0, None)
    finally:
        e.stop()


def test_floods_leave_shared_data_flat(upstream):
    cfg = config({"rate_limit": {"calls": 1000, "renewal_period": 60}}, counter_slots=8)
    cfg["apis"][0]["rate_limit"] = {"calls": 1000, "renewal_period": 60, "counter": "header:X-Client"}
    e = Envoy(cfg, upstream.port, concurrency=4)
    try:
        assert call(e, headers={"X-Client": "first"}).status == 200
        keys = e.stat("wasmcustom.mlgate.shared_data_keys")
        assert keys == 2                     # alice's record + one counter slot
        invalid = burst(e, 500, key="stolen-or-guessed", workers=32)
        assert {r.status for r in invalid} == {401}
        assert e.stat("wasmcustom.mlgate.shared_data_keys") == keys
        # 500 distinct counter values fit in the 8-slot table.
        distinct = burst(e, 500, workers=32, headers_for=lambda i: {"X-Client": f"client-{i}"})
        assert {r.status for r in distinct} == {200}
        assert e.stat("wasmcustom.mlgate.shared_data_keys") <= 1 + 8
    finally:
        e.stop()


def test_rate_limit_by_client_ip(upstream):
    """counter: "ip" counts the downstream address (from Envoy's source.address), shared by
    every subscription calling from it."""
    cfg = config({}, subs=("alice", "bob"))
    cfg["apis"][0]["rate_limit"] = {"calls": 3, "renewal_period": 60, "counter": "ip"}
    e = Envoy(cfg, upstream.port, concurrency=2)
    try:
        got = [call(e, key=k).status for k in ("alice-key", "bob-key", "alice-key", "bob-key", "alice-key")]
        assert got == [200, 200, 200, 429, 429]
        check_429(call(e, key="bob-key"), 60)
    finally:
        e.stop()


def test_a_lifetime_quota_never_renews(upstream):
    """APIM's quota with renewal-period 0 (issue 21): the period is infinite."""
    e = Envoy(config({"quota": {"calls": 3, "renewal_period": 0}}), upstream.port, concurrency=4)
    try:
        results = simultaneous(e.port, [raw_request("POST", RRS, {"Ocp-Apim-Subscription-Key": "alice-key"}, b"{}")] * 20)
        assert sorted(r.status for r in results) == [200] * 3 + [403] * 17
        r = call(e)
        assert r.status == 403 and r.header("retry-after") == "922337203685"
        assert r.json() == {"statusCode": 403,
                            "message": "Out of call volume quota. Quota will be replenished in 10675199.02:48:05."}
        assert upstream.count() == 3
    finally:
        e.stop()
