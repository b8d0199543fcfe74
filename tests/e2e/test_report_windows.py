"""Reports over a time window, in a real Envoy (both forms): calls counted in the quarter-hour
buckets as they end, APIM's byTime with an interval, a `$filter` on timestamp over the other
reports (the same numbers as the metrics' whole-life report, since every call is in the window),
`$top`/`$orderby` with `nextLink`, and a bad option's 400 in APIM's error shape.
"""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from harness import Envoy, Recorder
from test_usage import ADMIN_KEY, BODY, KEYS, RRS, STATUS, admin, config, wait_for

pytestmark = pytest.mark.forms("wasm", "native")

QUARTER = timedelta(minutes=15)


def stamp(t: datetime) -> str:
    """APIM's example literal: datetime'yyyy-MM-ddTHH:mm:ss', UTC."""
    return "datetime'" + t.strftime("%Y-%m-%dT%H:%M:%S") + "'"


def window(start: datetime, end: datetime) -> str:
    return f"$filter=timestamp%20ge%20{stamp(start)}%20and%20timestamp%20le%20{stamp(end)}"


def total(report: dict) -> int:
    return sum(r["callCountTotal"] for r in report["value"])


@pytest.fixture(scope="module")
def gateway(form):
    upstream = Recorder()
    e = Envoy(config(), upstream.port, concurrency=2)
    try:
        key = lambda who: {"Ocp-Apim-Subscription-Key": KEYS[who]}
        statuses = [e.request("POST", RRS, key("alice"), BODY).status for _ in range(4)]   # 3 per minute, then 429
        statuses += [e.request("GET", STATUS, key("bob")).status for _ in range(2)]
        statuses += [e.request("POST", RRS, {}, BODY).status]                              # 401
        assert statuses == [200, 200, 200, 429, 200, 200, 401]
        start = datetime.now(timezone.utc)
        # The buckets are written as each stream ends (after the client has its answer).
        wait_for(lambda: total(admin(e, "/reports/byTime?interval=PT15M").json()) == 7, what="calls in the buckets")
        yield e, start
    finally:
        e.stop()
        upstream.close()


def test_by_time_counts_every_call_in_its_quarter(gateway):
    e, start = gateway
    last_hour = window(start - timedelta(hours=1), start + timedelta(hours=1))
    r = admin(e, f"/reports/byTime?{last_hour}&interval=PT15M")
    assert r.status == 200, r.body
    v = r.json()
    assert total(v) == 7 and v["count"] == len(v["value"]) >= 1
    for rec in v["value"]:
        assert rec["interval"] == "PT15M"
        t = datetime.strptime(rec["timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        assert t.minute % 15 == 0 and t.second == 0
        assert start - 2 * QUARTER <= t <= start + QUARTER
        assert rec["callCountSuccess"] + rec["callCountBlocked"] == rec["callCountTotal"]
    assert sum(rec["callCountBlocked"] for rec in v["value"]) == 2   # the 429 and the 401
    # Hours add the quarters up; a window in the past has nothing.
    hours = admin(e, f"/reports/byTime?{last_hour}&interval=PT1H").json()
    assert total(hours) == 7 and all(rec["interval"] == "PT1H" for rec in hours["value"])
    past = window(start - timedelta(days=3), start - timedelta(days=2))
    assert admin(e, f"/reports/byTime?{past}&interval=PT15M").json() == {"value": [], "count": 0}


def test_a_window_with_every_call_is_the_whole_life_report(gateway):
    e, start = gateway
    last_hour = window(start - timedelta(hours=1), start + timedelta(hours=1))
    for kind in ("byApi", "byOperation", "byProduct"):
        whole = admin(e, f"/reports/{kind}").json()
        windowed = admin(e, f"/reports/{kind}?{last_hour}").json()
        assert windowed == whole, kind
        assert total(whole) >= 6
    past = window(start - timedelta(days=3), start - timedelta(days=2))
    assert total(admin(e, f"/reports/byApi?{past}").json()) == 0


def test_top_orderby_and_next_link(gateway):
    e, start = gateway
    since = f"$filter=timestamp%20ge%20{stamp(start - timedelta(hours=1))}"
    v = admin(e, f"/reports/byProduct?{since}&$orderby=callCountTotal%20desc&$top=1").json()
    assert [(r["productId"], r["callCountTotal"]) for r in v["value"]] == [("/products/starter", 4)]
    assert v["count"] == 3
    assert v["nextLink"].endswith("/mlgate-admin/reports/byProduct?" + since + "&$orderby=callCountTotal%20desc&$top=1&$skip=1")
    page2 = admin(e, v["nextLink"].split("/mlgate-admin", 1)[1]).json()
    assert [r["productId"] for r in page2["value"]] == ["/products/unlimited"]


def test_a_bad_option_is_apims_400(gateway):
    e, _ = gateway
    for path, target in [
        ("/reports/byApi?$filter=timestamp%20ge%20yesterday", "$filter"),
        ("/reports/byApi?$filter=timestamp%20ge%20datetime'2026-01-01T00:00:00'%20or%20apiId%20eq%20'x'", "$filter"),
        ("/reports/byTime", "interval"),
        ("/reports/byTime?interval=PT10M", "interval"),
        ("/reports/byProduct?$top=0", "$top"),
    ]:
        r = admin(e, path)
        assert r.status == 400, (path, r.body)
        err = r.json()["error"]
        assert err["code"] == "ValidationError" and err["details"][0]["target"] == target, (path, err)
    assert admin(e, "/reports/byTime?interval=PT15M", key="wrong").status == 401


def test_a_worker_writes_its_usage_before_it_serves_a_report(form):
    """A worker keeps its usage (counter sums, report buckets) in a batch it writes once a
    second; a report it serves writes its own batch first. With one worker, a report asked
    for right after the calls ended has every one of them, in both the whole-life numbers and
    the buckets, without waiting for the tick."""
    upstream = Recorder()
    e = Envoy(config(), upstream.port, concurrency=1)
    try:
        for i in range(3):
            r = e.request("GET", STATUS, {"Ocp-Apim-Subscription-Key": KEYS["bob"], "X-Test-Id": f"batch-{i}"})
            assert r.status == 200, r
        for i in range(3):
            e.access_line(f"batch-{i}")   # the stream ended (mlgate's on_log ran before the access log)
        assert total(admin(e, "/reports/byApi").json()) == 3
        assert total(admin(e, "/reports/byTime?interval=PT15M").json()) == 3
    finally:
        e.stop()
        upstream.close()
