"""Issue 8: hostile input never takes the gateway down, never over-admits, never forges
identity. Through a real Envoy 1.40 with the built mlgate.wasm (and, for the failure policy,
mlgate-fault.wasm from `make build-fault`) and a recording upstream on loopback. Each test
checks what the client got and what the upstream received."""
from __future__ import annotations

import heapq
import http.client
import importlib.util
import json
import random
import re
import threading
import time
import urllib.parse

import pytest
import yaml

import mlgate_harness as mh
from mlgate_harness import FAULT_WASM, ROOT
from harness import Envoy, H2c, RawHttp1, Recorder, header_values, http1, listener, raw_request, simultaneous

# Both forms of mlgate (the .wasm and the native module) pass the same suite; the
# Wasm failure policy tests are the Wasm form's (test_native.py has the native form's panic tests).
pytestmark = pytest.mark.forms("wasm", "native")

KEY = "alice-key"
KEY_HEADER = b"Ocp-Apim-Subscription-Key"
RRS = "/azureml-demo/workspaces/ws1/services/svc1/execute?api-version=2.0&details=true"
# APIM's bodies, byte for byte.
INVALID_BODY = (b'{ "statusCode": 401, "message": "Access denied due to invalid subscription key. '
                b'Make sure to provide a valid key for an active subscription." }')
MISSING_BODY = (b'{ "statusCode": 401, "message": "Access denied due to missing subscription key. '
                b'Make sure to include subscription key when making requests to an API." }')
NOT_FOUND_BODY = b'{ "statusCode": 404, "message": "Resource not found" }'
# What Envoy's own codec answers to a request line it refuses (mlgate never sees it).
ENVOY_BAD_REQUEST = 400


def config(product: dict | None = None, api: dict | None = None, subs: list[dict] | None = None, **top) -> dict:
    """One AzureML API, product `starter` (with `product`'s limits), subscription alice."""
    cfg = {
        "apis": [{
            "id": "azureml-demo", "name": "AzureML Demo API", "path": "azureml-demo",
            "service_url": "https://ussouthcentral.services.azureml.net", "operations": "azureml-studio",
            "backend_credentials": [{"workspace": "*", "service": "*", "api_key": "aml-key"}],
            **(api or {}),
        }],
        "products": [{"id": "starter", "name": "Starter", "apis": ["azureml-demo"], **(product or {})}],
        "subscriptions": subs or [{"id": "alice", "product": "starter", "state": "active", "primary_key": KEY}],
    }
    cfg.update(top)
    return cfg


def call(e: Envoy, headers: dict | list | None = None, path: str = RRS, key: str | None = KEY):
    hs = ([("Ocp-Apim-Subscription-Key", key)] if key else []) + (
        list(headers.items()) if isinstance(headers, dict) else list(headers or []))
    return e.request("POST", path, hs, b"{}")


def stats(e: Envoy, *names: str) -> dict[str, int]:
    return {n: e.stat(f"wasmcustom.mlgate.{n}") or 0 for n in names}


def assert_no_trap(e: Envoy):
    """The VM never failed: no runtime error in Envoy's log, no VM reload."""
    log = e.log()
    for needle in ("Uncaught", "RuntimeError", "panicked", "wasm trap", "unreachable"):
        assert needle not in log, [l for l in log.splitlines() if needle in l][:3]
    assert (e.stat("wasm.mlgate.vm_reload_success") or 0) == 0
    assert (e.stat("wasm.mlgate.vm_reload_backoff") or 0) == 0


@pytest.fixture(scope="module")
def gw(form):
    """One gateway for the module: --concurrency 2, unmatched requests rejected."""
    up = Recorder()
    e = Envoy(config(), up.port, concurrency=2)
    e.up = up
    yield e
    e.stop()
    up.close()


# ---- 1. every byte 0x80-0xFF, HTTP/1.1 and h2c -------------------------------------------------

class Http1Client:
    """Raw bytes over one keep-alive HTTP/1.1 connection (reconnects after Envoy closes it)."""
    proto = "h1"

    def __init__(self, port: int):
        self.c = RawHttp1(port)

    def __call__(self, method: str, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes = b""):
        return self.c.send(http1(method, target, headers, body))

    def close(self):
        self.c.close()


class H2cClient:
    """Raw bytes over one HTTP/2 cleartext connection (prior knowledge)."""
    proto = "h2c"

    def __init__(self, port: int):
        self.c = H2c(port)

    def __call__(self, method: str, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes = b""):
        return self.c.request(method, target, headers, body)

    def close(self):
        self.c.close()


def hostile_requests(b: int) -> list[tuple[str, bytes, list, set[int]]]:
    """(case, target, headers, statuses allowed) for byte value b. Every case but `header`
    and `query` must leave nothing upstream."""
    x = bytes([b])
    rrs = RRS.encode()
    key = (KEY_HEADER, KEY.encode())
    return [
        # (a) in another header's value of a valid call: passed on untouched.
        ("header", rrs, [key, (b"X-A", b"v" + x)], {200}),
        # (b) in the key header: APIM's invalid-key 401.
        ("key", rrs, [(KEY_HEADER, KEY.encode() + x)], {401}),
        ("key-alone", rrs, [(KEY_HEADER, x)], {401}),
        # No key, a high byte elsewhere: APIM's missing-key 401 (the one-packet kill,
        # under an API), and outside every API: 404.
        ("no-key", rrs, [(b"X-A", x)], {401}),
        ("outside", b"/x", [(b"X-A", x)], {404}),
        # (c) non-UTF-8 in the path under the API: 404 (or Envoy's 400 first).
        ("path", b"/azureml-demo/workspaces/x" + x + b"/services/svc1/execute?api-version=2.0&details=true", [key],
         {404, ENVOY_BAD_REQUEST}),
        # (d) raw in an unrelated query parameter of a valid call: 200 (or Envoy's 400); as the
        # only key, percent-encoded or raw: 401.
        ("query", rrs + b"&z=" + x, [key], {200, ENVOY_BAD_REQUEST}),
        ("query-key", rrs + b"&subscription-key=%" + b"%02X" % b, [], {401}),
        ("query-key-raw", rrs + b"&subscription-key=" + x, [], {401, ENVOY_BAD_REQUEST}),
    ]


EXPECTED_BODY = {"key": INVALID_BODY, "key-alone": INVALID_BODY, "no-key": MISSING_BODY, "outside": NOT_FOUND_BODY,
                 "path": NOT_FOUND_BODY, "query-key": INVALID_BODY, "query-key-raw": INVALID_BODY}


def worker_connections(e: Envoy) -> list[int]:
    text = e.admin_get(f"/stats?filter=^listener.127.0.0.1_{e.port}.worker_.*downstream_cx_total$")
    return [int(line.rsplit(": ", 1)[1]) for line in text.splitlines()]


@pytest.mark.parametrize("client_class", [Http1Client, H2cClient], ids=["http1", "h2c"])
def test_every_high_byte_leaves_the_vm_alive(gw, client_class):
    """Every byte 0x80-0xFF in a header value, the key header, the path and the query, over a
    new connection per byte value (so both workers get them); a valid call after each hostile
    request on the same connection still gets 200."""
    up = gw.up
    before = stats(gw, "invalid_key", "missing_key", "not_found")
    answered = {"invalid_key": 0, "missing_key": 0, "not_found": 0}
    seen: dict[str, set[int]] = {}
    for b in range(0x80, 0x100):
        client = client_class(gw.port)
        try:
            for case, target, headers, allowed in hostile_requests(b):
                tid = f"{client.proto}-{case}-{b:02x}"
                r = client("POST", target, headers + [(b"X-Test-Id", tid.encode())], b"{}")
                assert r.status in allowed, (case, hex(b), r)
                seen.setdefault(case, set()).add(r.status)
                got = up.find(tid)
                if r.status == 200:
                    assert r.body == b'{"ok":true}', (case, hex(b), r)
                    assert len(got) == 1, (case, hex(b))
                    sent = dict(headers)
                    assert header_values(got[0], "ocp-apim-subscription-key") == []
                    assert header_values(got[0], "authorization") == ["Bearer aml-key"]
                    if case == "header":
                        assert [v for k, v in got[0]["raw_headers"] if k == b"x-a"] == [sent[b"X-A"]], hex(b)
                    if case == "query":
                        assert got[0]["raw_target"] == target[len(b"/azureml-demo"):], hex(b)
                else:
                    assert got == [], (case, hex(b), "reached the upstream")
                    if r.status != ENVOY_BAD_REQUEST:
                        assert r.body == EXPECTED_BODY[case], (case, hex(b), r)
                        kind = {401: "invalid_key", 404: "not_found"}[r.status]
                        answered["missing_key" if r.body == MISSING_BODY else kind] += 1
                # The VM that judged it is alive: a valid call (same connection, same worker) passes.
                ok = client("POST", RRS.encode(), [(KEY_HEADER, KEY.encode())], b"{}")
                assert ok.status == 200, (case, hex(b), "then a valid call got", ok)
        finally:
            client.close()
    print(f"{client_class.proto}: statuses per case {seen}")
    # Every case reached mlgate for some byte (Envoy refuses only raw bytes in the request line).
    assert seen["header"] == {200} and seen["key"] == {401} and seen["query-key"] == {401}
    assert 200 in seen["query"] or client_class is Http1Client
    # Both workers ran the hostile connections.
    assert all(n > 0 for n in worker_connections(gw)) and len(worker_connections(gw)) == 2, worker_connections(gw)
    # The per-reason denial counters counted exactly the denials mlgate answered.
    after = stats(gw, "invalid_key", "missing_key", "not_found")
    assert {k: after[k] - before[k] for k in after} == answered
    assert_no_trap(gw)


def test_release_build_has_no_fault_injection(gw):
    # The fault each test build reacts to: a trap in the .wasm, a panic in the native module.
    r = call(gw, {"x-mlgate-fault": "panic" if gw.form == "native" else "trap", "X-Test-Id": "no-fault"})
    assert r.status == 200, r
    assert len(gw.up.find("no-fault")) == 1
    assert_no_trap(gw)


# ---- 5. `&` and `=` in a template parameter cannot add or override an exported field ------------

def form_encode(raw: str) -> str:
    """Form-style encoding of the raw URL bytes: everything outside A-Za-z0-9-._~ as %XX."""
    return urllib.parse.quote(raw.encode("latin-1"), safe="-._~")


@pytest.mark.parametrize("workspace,encoded", [
    ("x&subscription=bob", "x%26subscription%3Dbob"),
    ("x%26subscription%3Dbob", "x%2526subscription%253Dbob"),
    ("x=y&product=free", "x%3Dy%26product%3Dfree"),
])
def test_template_parameter_cannot_forge_the_export(gw, workspace, encoded):
    assert form_encode(workspace) == encoded
    tid = f"amp-{encoded}"
    path = f"/azureml-demo/workspaces/{workspace}/services/svc/execute?api-version=2.0&details=true"
    r = call(gw, {"X-Test-Id": tid}, path=path)
    assert r.status == 200, r
    got = gw.up.find(tid)
    assert len(got) == 1 and got[0]["raw_path"] == path[len("/azureml-demo"):]
    line = gw.access_line(tid)
    meta = re.fullmatch(r"meta=(\S+) api=- op=- sub=- product=- params=- status=200", line)
    assert meta, line
    meta = meta.group(1)
    assert meta == (f"api=azureml-demo&operation=rrs-execute&subscription=alice&product=starter"
                    f"&workspace={encoded}&service=svc&apiversion=2.0&details=true"), meta
    fields = urllib.parse.parse_qs(meta, keep_blank_values=True, strict_parsing=True)
    assert fields["subscription"] == ["alice"] and fields["product"] == ["starter"]
    assert fields["workspace"] == [workspace]   # decodes back to the raw URL bytes
    assert sorted(fields) == ["api", "apiversion", "details", "operation", "product", "service", "subscription", "workspace"]


# ---- 3. pass-through cannot forge identity; forwarded identity is the gateway's ---------------

def test_pass_through_strips_forged_identity_headers(upstream):
    e = Envoy(config(unmatched_requests="pass_through"), upstream.port)
    try:
        forged = [("X-Mlgate-Subscription-Id", "forged"), ("X-Mlgate-Product-Id", "forged"),
                  ("x-mlgate-subscription-id", "forged-again"), ("X-MLGATE-PRODUCT-ID", "forged-again")]
        kept = [("Authorization", "Basic abc"), ("X-Keep", "1"), ("X-Keep", "2"), ("Content-Type", "text/plain"),
                ("X-Test-Id", "pass")]
        r = e.request("PUT", "/other/thing?a=1&b=%FF&subscription=bob", forged + kept, b"body bytes")
        assert r.status == 200, r
        [got] = upstream.find("pass")
        assert (got["method"], got["raw_path"], got["body"]) == ("PUT", "/other/thing?a=1&b=%FF&subscription=bob",
                                                                 b"body bytes")
        assert header_values(got, "x-mlgate-subscription-id") == []
        assert header_values(got, "x-mlgate-product-id") == []
        for name in ("authorization", "x-keep", "content-type", "host"):
            assert header_values(got, name) == [v for k, v in kept + [("Host", "gw.example.test")] if k.lower() == name]
        # The one-packet kill of the issue, in pass-through mode: the high byte goes upstream untouched.
        c = RawHttp1(e.port)
        r = c.send(http1("GET", b"/x", [(b"X-A", b"\xff"), (b"X-Mlgate-Product-Id", b"\xfe"), (b"X-Test-Id", b"pass-ff")]))
        c.close()
        assert r.status == 200, r
        [got] = upstream.find("pass-ff")
        assert [v for k, v in got["raw_headers"] if k == b"x-a"] == [b"\xff"]
        assert header_values(got, "x-mlgate-product-id") == []
        # A forwarded API call: exactly the gateway's identity, one value each, whatever the client sent.
        r = call(e, forged + [("X-Test-Id", "api")])
        assert r.status == 200, r
        [got] = upstream.find("api")
        assert header_values(got, "x-mlgate-subscription-id") == ["alice"]
        assert header_values(got, "x-mlgate-product-id") == ["starter"]
        assert_no_trap(e)
    finally:
        e.stop()


# ---- 2. a long id keeps its limit ----------------------------------------------------------------

@pytest.mark.parametrize("length", [300, 1024])
def test_long_product_id_keeps_its_rate_limit(upstream, length):
    pid = ("p" * length)[:length]
    cfg = config({"id": pid, "rate_limit": {"calls": 1, "renewal_period": 60}},
                 subs=[{"id": "alice", "product": pid, "state": "active", "primary_key": KEY}])
    e = Envoy(cfg, upstream.port)
    try:
        r = call(e, {"X-Test-Id": f"long-{length}-1"})
        assert r.status == 200, r
        [got] = upstream.find(f"long-{length}-1")
        assert header_values(got, "x-mlgate-product-id") == [pid]
        r = call(e, {"X-Test-Id": f"long-{length}-2"})
        assert r.status == 429, r
        assert 1 <= int(r.header("retry-after")) <= 60
        assert upstream.find(f"long-{length}-2") == []
    finally:
        e.stop()


# ---- 7. a forged X-Forwarded-For does not move a `counter: "ip"` limit ---------------------------

def request_from(e: Envoy, source: str, headers: dict):
    """A call from loopback address `source` (127.0.0.0/8: every address is this machine)."""
    c = http.client.HTTPConnection("127.0.0.1", e.port, timeout=30, source_address=(source, 0))
    c.request("POST", RRS, b"{}", {"Ocp-Apim-Subscription-Key": KEY, **headers})
    r = c.getresponse()
    r.read()
    c.close()
    return r


def test_forged_x_forwarded_for_does_not_bypass_counter_ip(upstream):
    e = Envoy(config(api={"rate_limit": {"calls": 2, "renewal_period": 60, "counter": "ip"}}), upstream.port)
    try:
        rng = random.Random(8)
        statuses = []
        for i in range(3):
            xff = f"198.51.100.{rng.randrange(1, 255)}"
            r = call(e, {"X-Forwarded-For": xff, "X-Test-Id": f"xff-{i}"})
            statuses.append(r.status)
            if r.status == 200:
                # Envoy appends the peer (for a loopback peer, its own local address); mlgate
                # counts the peer (`source.address`), never the client's claim.
                [got] = upstream.find(f"xff-{i}")
                [value] = header_values(got, "x-forwarded-for")
                assert value.startswith(f"{xff},") and value.count(",") == 1, value
        assert statuses == [200, 200, 429]
        # Naming another address does not move the call onto its count ...
        assert request_from(e, "127.0.0.1", {"X-Forwarded-For": "127.0.0.2"}).status == 429
        # ... nor spend that address's allowance (127.0.0.0/8 is all this machine).
        assert [request_from(e, "127.0.0.2", {}).status for _ in range(3)] == [200, 200, 429]
    finally:
        e.stop()


# ---- 4. a quota period never goes back ----------------------------------------------------------

def assign_to_periods(spans: list[tuple[int, int]], calls: int) -> dict[int, int]:
    """Each admission was decided in some period between its span's first and last; assigns
    them earliest deadline first, at most `calls` per period, and fails if that is impossible
    (then some period certainly admitted more than `calls`). Returns the count per period."""
    spans = sorted(spans)
    by_period: dict[int, int] = {}
    heap: list[int] = []
    i = 0
    for p in range(spans[0][0], max(hi for _, hi in spans) + 1):
        while i < len(spans) and spans[i][0] <= p:
            heapq.heappush(heap, spans[i][1])
            i += 1
        taken = 0
        while heap and taken < calls:
            heapq.heappop(heap)
            taken += 1
        by_period[p] = taken
        assert not heap or heap[0] > p, f"period {p} admitted more than {calls}: {by_period}, left {sorted(heap)}"
    return by_period


def test_quota_period_never_goes_back_across_boundaries(upstream):
    """calls 5 per 2 s periods anchored at a known start with a fraction (boundaries at
    x.250 s of even seconds); concurrent bursts just before, at and after four boundaries.
    Each admission was decided somewhere between its send time and the upstream's receive
    time; no assignment of admissions to periods may give a period more than 5."""
    calls, period = 5, 2.0
    start = "2026-01-01T00:00:00.250Z"
    start_s = 1767225600.250
    assert time.time() > start_s
    e = Envoy(config({"quota": {"calls": calls, "renewal_period": int(period)}},
                     subs=[{"id": "alice", "product": "starter", "state": "active", "primary_key": KEY, "start": start}]),
              upstream.port, concurrency=2)
    try:
        first = start_s + (int((time.time() + 0.5 - start_s) // period) + 1) * period
        boundaries = [first + i * period for i in range(4)]
        offsets = (-0.030, -0.004, 0.0, 0.004, 0.030, period / 2)
        n = 8
        results: list = []
        lock = threading.Lock()

        def burst(at: float, tag: str):
            raws = [raw_request("POST", RRS, {"Ocp-Apim-Subscription-Key": KEY, "X-Test-Id": f"{tag}-{i}"}, b"{}")
                    for i in range(n)]
            rs = simultaneous(e.port, raws, at=at)
            with lock:
                results.extend((f"{tag}-{i}", r) for i, r in enumerate(rs))

        threads = []
        for bi, b in enumerate(boundaries):
            for oi, off in enumerate(offsets):
                t = threading.Thread(target=burst, args=(b + off, f"q{bi}.{oi}"))
                threads.append((b + off, t))
        # Each burst connects ~0.3 s before its time.
        for at, t in sorted(threads, key=lambda x: x[0]):
            time.sleep(max(0.0, at - 0.3 - time.time()))
            t.start()
        for _, t in threads:
            t.join(30)
        assert len(results) == len(threads) * n

        slack = 0.005
        admitted = []
        for tid, r in results:
            if r.status == 200:
                [got] = upstream.find(tid)
                admitted.append((r.sent - slack, got["time"] + slack))
            else:
                assert r.status == 403, r
                assert r.json()["message"].startswith("Out of call volume quota. "), r
                assert upstream.find(tid) == []
        by_period = assign_to_periods([(int((lo - start_s) // period), int((hi - start_s) // period))
                                       for lo, hi in admitted], calls)
        # Not vacuous: the bursts met at least one period per boundary, each with calls to spare.
        assert len(admitted) >= calls * len(boundaries), (len(admitted), by_period)
        print(f"admitted per period {by_period}, {len(results)} requests")
    finally:
        e.stop()


# ---- 6. hostile configuration strings: one refusal line, never a panic ---------------------------

def with_sub(**fields):
    def f(c):
        c["subscriptions"][0].update(fields)
    return f


def with_product_id(pid: str):
    def f(c):
        c["products"][0]["id"] = pid
        c["subscriptions"][0]["product"] = pid
    return f


REFUSED = [
    ("start non-ASCII", with_sub(start="2026-01-01T00:00:0\u00e9"), "subscriptions[0].start"),
    ("start non-ASCII in the zone", with_sub(start="2026-01-01T00:00:00\u00e9"), "subscriptions[0].start"),
    ("control character in a subscription id", with_sub(id="ali\u0001ce"), "subscriptions[0].id"),
    ("newline in a product id", with_product_id("star\nter"), "products[0].id"),
    ("2000-byte subscription id", with_sub(id="s" * 2000), "subscriptions[0].id"),
    ("2000-byte product id of multi-byte characters", with_product_id("\u00e9" * 1000), "products[0].id"),
    ("non-ASCII service_url", lambda c: c["apis"][0].__setitem__("service_url", "https://ex\u00e4mple.com"),
     "apis[0].service_url"),
]


@pytest.mark.parametrize("why,mutate,field", REFUSED, ids=[c[0] for c in REFUSED])
def test_hostile_config_strings_are_refused_in_one_line(upstream, why, mutate, field):
    cfg = config()
    mutate(cfg)
    e = Envoy(json.dumps(cfg, ensure_ascii=False), upstream.port, wait=False)
    try:
        assert e.wait_exit(60) != 0, "Envoy must not start with a bad mlgate configuration"
        log = e.log()
        lines = [l for l in log.splitlines() if "invalid mlgate configuration" in l]
        assert len(lines) == 1, lines
        assert f"invalid mlgate configuration: {field}: " in lines[0], lines[0]
        for needle in ("panicked", "RuntimeError", "Uncaught", "unreachable", KEY):
            assert needle not in log, [l for l in log.splitlines() if needle in l][:3]
    finally:
        e.stop()


def test_non_ascii_ids_are_accepted_and_exported_encoded(upstream):
    sub, product = "\u00e5lice-\u2603", "pr\u00f6dukt"
    cfg = config({"id": product}, subs=[{"id": sub, "product": product, "state": "active", "primary_key": KEY}],
                 export_metadata="combined")
    e = Envoy(json.dumps(cfg, ensure_ascii=False), upstream.port)
    try:
        r = call(e, {"X-Test-Id": "utf8"})
        assert r.status == 200, r
        [got] = upstream.find("utf8")
        assert [v for k, v in got["raw_headers"] if k == b"x-mlgate-subscription-id"] == [sub.encode()]
        assert [v for k, v in got["raw_headers"] if k == b"x-mlgate-product-id"] == [product.encode()]
        meta = e.access_line("utf8").split(" ")[0].removeprefix("meta=")
        assert f"&subscription={urllib.parse.quote(sub.encode())}&product={urllib.parse.quote(product.encode())}&" in meta
        fields = urllib.parse.parse_qs(meta, strict_parsing=True)
        assert (fields["subscription"], fields["product"]) == ([sub], [product])
    finally:
        e.stop()


# ---- 8. Envoy's failure policy: what a dead VM does (fault-injection build) -----------------------

def fault_gateway(upstream, policy: str) -> Envoy:
    assert FAULT_WASM.exists(), f"{FAULT_WASM} is missing: `make build-fault` builds it"
    # One worker, so the trap hits the VM every later request goes to.
    return Envoy(config({"quota": {"calls": 5, "renewal_period": 86400}}), upstream.port, concurrency=1,
                 wasm=FAULT_WASM, failure_policy=policy)


def trap(e: Envoy, upstream, tid: str):
    """A request that traps the VM in on_request_headers. Envoy 1.40 answers 503 with an empty
    body and closes the connection; nothing goes upstream."""
    r = call(e, {"x-mlgate-fault": "trap", "X-Test-Id": tid})
    assert (r.status, r.body, r.header("connection")) == (503, b"", "close"), r
    assert upstream.find(tid) == []
    deadline = time.time() + 5
    while "proxy_on_request_headers failed: Uncaught RuntimeError: unreachable" not in e.log():
        assert time.time() < deadline, "the trap is not in Envoy's log"
        time.sleep(0.05)


@pytest.mark.forms("wasm")
def test_fail_reload_recreates_the_vm_and_counts_survive(upstream):
    """The shipped policy: after a trap Envoy answers 503 while it backs off (about 1.4 s in
    1.40), then a new VM serves, and the quota count carried on in the host's shared data."""
    e = fault_gateway(upstream, "FAIL_RELOAD")
    try:
        assert [call(e).status for _ in range(2)] == [200, 200]
        trap(e, upstream, "trap-reload")
        statuses = []
        deadline = time.time() + 10
        while time.time() < deadline:
            statuses.append(call(e).status)
            if statuses[-1] != 503:
                break
            time.sleep(0.1)
        assert statuses[-1] == 200 and set(statuses[:-1]) <= {503}, statuses
        # 1 admitted above; the quota of 5 had 3 left after the first 2: 2 more, then 403.
        after = [call(e).status for _ in range(3)]
        assert after == [200, 200, 403], after
        assert upstream.count() == 5
        assert (e.stat("wasm.mlgate.vm_reload_success") or 0) >= 1
    finally:
        e.stop()


@pytest.mark.forms("wasm")
def test_fail_closed_answers_503_until_restart(upstream):
    """Why the shipped configs do not use FAIL_CLOSED (Envoy's default): a dead VM answers
    503 on its worker from then on."""
    e = fault_gateway(upstream, "FAIL_CLOSED")
    try:
        assert [call(e).status for _ in range(2)] == [200, 200]
        trap(e, upstream, "trap-closed")
        before = upstream.count()
        end = time.time() + 3   # longer than FAIL_RELOAD's backoff above
        statuses = set()
        while time.time() < end:
            statuses.add(call(e).status)
            time.sleep(0.1)
        assert statuses == {503}
        assert upstream.count() == before
        assert (e.stat("wasm.mlgate.vm_reload_success") or 0) == 0
    finally:
        e.stop()


# ---- invariants 6 and 7 in every Envoy config the project ships or generates -----------------------

def load_bench():
    spec = importlib.util.spec_from_file_location("mlgate_bench_run", ROOT / "bench" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def shipped_configs() -> dict[str, dict]:
    configs = {"envoy/demo.yaml": yaml.safe_load((ROOT / "envoy" / "demo.yaml").read_text()),
               "tests/e2e harness listener": listener(8080, config(), "/dev/null")}
    bench = load_bench()
    for quick in (False, True):
        for name, (filters, routes, secrets) in bench.gateway_configs(quick).items():
            configs[f"bench {name}"] = bench.bootstrap(1, 2, 3, filters, routes, secrets)
    configs["bench scale"] = bench.bootstrap(1, 2, 3, *bench.scale_config(10))
    configs["bench upstream"] = bench.upstream_config(1, 2)
    return configs


@pytest.mark.forms("wasm")
def test_shipped_envoy_configs_use_remote_address_and_fail_reload():
    """use_remote_address: the client address (what `counter: "ip"` counts) is the TCP peer,
    not X-Forwarded-For. FAIL_RELOAD: a VM that failed is recreated, counts kept (above)."""
    configs = shipped_configs()
    for name, cfg in configs.items():
        hcms = mh.http_connection_managers(cfg)
        assert hcms, name
        for hcm in hcms:
            assert hcm.get("use_remote_address") is True, name
            assert hcm.get("codec_type") == "AUTO", name   # HTTP/1.1 and h2c with prior knowledge
            assert "xff_num_trusted_hops" not in hcm, name
        for plugin in mh.wasm_plugin_configs(cfg):
            assert plugin.get("failure_policy") == "FAIL_RELOAD", (name, plugin.get("name"))
    assert [p["vm_config"]["vm_id"] for p in mh.wasm_plugin_configs(configs["envoy/demo.yaml"])] == ["mlgate"]
    assert len(mh.wasm_plugin_configs(configs["bench mlgate"])) == 1

