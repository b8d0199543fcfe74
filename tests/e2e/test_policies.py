"""Issue 21, APIM's limit policies operators reach for: `increment_condition` (only calls whose
backend status matches count, exactly, with 300 calls at once through Envoy's workers and a
backend that fails half of them), quotas on APIs and quotas by key."""
from collections import Counter

import pytest

from harness import Envoy, raw_request, simultaneous
from test_limits import RRS, call, config

pytestmark = pytest.mark.forms("wasm", "native")


def test_only_successful_calls_count_exactly_under_concurrency(upstream):
    limit = 100
    e = Envoy(config({"rate_limit": {"calls": limit, "renewal_period": 120, "increment_condition": [200]}}),
              upstream.port, concurrency=2)
    ok = raw_request("POST", RRS, {"Ocp-Apim-Subscription-Key": "alice-key", "X-Want-Status": "200"}, b"{}")
    failing = raw_request("POST", RRS, {"Ocp-Apim-Subscription-Key": "alice-key", "X-Want-Status": "500"}, b"{}")
    try:
        seen, rounds = Counter(), 0
        # Every round sends 300 at once, half of them to fail upstream; a failed call gives its
        # place back, so the next round fills what the last one's failures left, until 100 count.
        while seen[200] < limit and rounds < 40:
            got = simultaneous(e.port, [ok, failing] * 150)
            statuses = Counter(r.status for r in got)
            assert set(statuses) <= {200, 500, 429}, statuses
            assert statuses[200] + statuses[500] >= 1, f"round {rounds}: nothing admitted with {seen[200]} counted"
            seen.update(statuses)
            rounds += 1
        assert seen[200] == limit, f"{seen} in {rounds} rounds"
        # Full: nothing is admitted, not even a call that would fail.
        last = Counter(r.status for r in simultaneous(e.port, [ok, failing] * 150))
        assert last == Counter({429: 300}), last
        # What the backend saw: exactly the calls the client saw answered by it.
        backend = Counter(dict(r["headers"])["x-want-status"] for r in upstream.requests)
        assert backend == Counter({"200": seen[200], "500": seen[500]}), (backend, seen)
        assert rounds > 1 and seen[500] > 0
    finally:
        e.stop()


def test_a_quota_counts_only_the_listed_statuses(upstream):
    e = Envoy(config({"quota": {"calls": 3, "renewal_period": 3600, "increment_condition": "2xx"}}), upstream.port)
    try:
        for _ in range(5):
            assert call(e, headers={"X-Want-Status": "404"}).status == 404
        assert [call(e, headers={"X-Want-Status": "201"}).status for _ in range(4)] == [201, 201, 201, 403]
        assert call(e, headers={"X-Want-Status": "404"}).status == 403
    finally:
        e.stop()


def test_an_api_quota_and_a_quota_by_key(upstream):
    cfg = config({"quota": {"calls": 3, "renewal_period": 3600, "counter": "header:x-client"}}, subs=("alice", "bob"))
    cfg["apis"][0]["quota"] = {"calls": 4, "renewal_period": 3600}
    e = Envoy(cfg, upstream.port, concurrency=2)
    try:
        # Per client value, whoever the subscription: alice and bob share client "a"'s three.
        got = [call(e, key=k, headers={"X-Client": "a"}).status for k in ("alice-key", "bob-key", "alice-key", "bob-key")]
        assert got == [200, 200, 200, 403]
        r = call(e, key="bob-key", headers={"X-Client": "a"})
        assert r.status == 403 and r.json()["message"].startswith("Out of call volume quota. Quota will be replenished in ")
        assert 1 <= int(r.header("retry-after")) <= 3600
        # The API's quota counts per subscription: alice has 2 of 4 used, so 2 more (as "b").
        assert [call(e, headers={"X-Client": "b"}).status for _ in range(3)] == [200, 200, 403]
        # Bob made 1 counted call on the API (his other two were refused, counted nowhere): 3 more.
        assert [call(e, key="bob-key", headers={"X-Client": "c"}).status for _ in range(4)] == [200, 200, 200, 403]
        assert upstream.count() == 8
    finally:
        e.stop()


def test_scoped_subscriptions_and_an_open_product(upstream):
    cfg = config({"rate_limit": {"calls": 1, "renewal_period": 60}})
    cfg["products"].append({"id": "free", "name": "Free", "apis": ["azureml-demo"], "subscription_required": False,
                            "rate_limit": {"calls": 2, "renewal_period": 60, "counter": "header:x-client"}})
    cfg["subscriptions"].append({"id": "dana", "scope": "/apis/azureml-demo", "state": "active", "primary_key": "dana-key"})
    e = Envoy(cfg, upstream.port)
    try:
        # Scoped to the API: no product, so not the starter product's 1 call a minute.
        assert [call(e, key="dana-key").status for _ in range(3)] == [200] * 3
        sent = upstream.last()
        assert ("x-mlgate-subscription-id", "dana") in sent["headers"]
        assert not [v for k, v in sent["headers"] if k == "x-mlgate-product-id"]
        # Without a key: the open product, counted per x-client.
        keyless = [e.request("POST", RRS, {"X-Client": c}, b"{}").status for c in ("a", "a", "a", "b")]
        assert keyless == [200, 200, 429, 200]
        sent = upstream.last()
        assert ("x-mlgate-product-id", "free") in sent["headers"]
        assert not [v for k, v in sent["headers"] if k == "x-mlgate-subscription-id"]
        assert [h for h in sent["headers"] if h[0] == "authorization"] == [("authorization", "Bearer aml-key")]
        # A wrong key is refused as before; the starter subscriber keeps its own limit.
        assert e.request("POST", RRS, {"Ocp-Apim-Subscription-Key": "nope"}, b"{}").status == 401
        assert [call(e).status for _ in range(2)] == [200, 429]
    finally:
        e.stop()
