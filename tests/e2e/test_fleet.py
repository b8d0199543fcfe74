"""Issue 9, fleet-wide limits: 3 Envoys (--concurrency 2 each) share one count through
mlgate-rls and one redis-server, all real processes on loopback. The Envoys differ only in
`on_failure` (deny, allow, local), which matters only when the store fails: while it is up
they count as one."""
import json
import os
import re
import socket
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

import mlgate_harness as mh
from mlgate_harness import fleet
from harness import Envoy, raw_request, Response

import http.client

pytestmark = pytest.mark.forms("wasm", "native")

RRS = "/azureml-demo/workspaces/ws1/services/svc1/execute?api-version=2.0&details=true"
MODES = ("deny", "allow", "local")
TIMEOUT_MS = 500
BREAKER_FAILURES = 3
BREAKER_OPEN_MS = 4000
UNAVAILABLE = {"statusCode": 503, "message": "Service unavailable: rate limit state could not be updated. Try again later."}

# Subscriptions, one per test (counts never mix): product -> subscriptions.
PRODUCTS = {
    "hundred": ({"rate_limit": {"calls": 100, "renewal_period": 3}}, ["alice"]),
    "metered": ({"quota": {"calls": 5, "renewal_period": 3600}}, ["bob"]),
    "bytes": ({"quota": {"bandwidth_kb": 2, "renewal_period": 3600}}, ["bea"]),
    "steady": ({"rate_limit": {"calls": 10, "renewal_period": 120}}, ["held-redis", "held-rls", "held-slow", "restart"]),
    "noise": ({"rate_limit": {"calls": 10000, "renewal_period": 60}}, ["noise"]),
}


def config(on_failure: str) -> dict:
    return {
        "apis": [{
            "id": "azureml-demo", "name": "AzureML Demo API", "path": "azureml-demo",
            "service_url": "https://ussouthcentral.services.azureml.net", "operations": "azureml-studio",
            "backend_credentials": [{"workspace": "*", "service": "*", "api_key": "aml-key"}],
        }],
        "products": [{"id": p, "name": p, "apis": ["azureml-demo"], **limits} for p, (limits, _) in PRODUCTS.items()],
        "subscriptions": [{"id": s, "product": p, "state": "active", "primary_key": f"{s}-key"}
                          for p, (_, subs) in PRODUCTS.items() for s in subs],
        "limits_store": fleet.rls_store(timeout_ms=TIMEOUT_MS, on_failure=on_failure,
                                        breaker_failures=BREAKER_FAILURES, breaker_open_ms=BREAKER_OPEN_MS),
        "rate_limit_headers": True,
    }


class FleetEnvoy(Envoy):
    """The e2e Envoy with one more cluster: `rls`, HTTP/2 to mlgate-rls (through the relay). It
    runs the form of the test module (both forms: the Wasm host's gRPC call, the dynamic
    module's HTTP callout)."""

    def __init__(self, plugin_config, upstream: int, rls_port: int, **kw):
        self.rls_port = rls_port
        super().__init__(plugin_config, upstream, **kw)

    def write_config(self, plugin_config):
        lst = {k: v for k, v in self.listener(plugin_config).items() if k != "@type"}
        b = mh.bootstrap(self.admin, [lst], [mh.static_cluster("azureml", self.upstream),
                                            fleet.grpc_cluster("rls", self.rls_port)],
                         node={"id": "mlgate-e2e", "cluster": "mlgate"})
        mh.write_config(self.config_path, b)


class Fleet:
    def __init__(self, upstream):
        self.dir = tempfile.mkdtemp(prefix="mlgate-fleet-")
        self.redis_port = mh.free_port()
        self.rls_port = mh.free_port()
        self.redis = self.start_redis()
        # mlgate-rls loads the same JSON as the filters (on_failure does not matter to it).
        self.config_path = os.path.join(self.dir, "mlgate.json")
        with open(self.config_path, "w") as f:
            json.dump(config("deny"), f)
        self.rls = self.start_rls()
        self.relay = fleet.Relay(self.rls_port)
        self.envoys = {}
        try:
            for mode in MODES:
                self.envoys[mode] = FleetEnvoy(config(mode), upstream.port, self.relay.port, concurrency=2)
        except Exception:
            self.close()
            raise

    def start_redis(self):
        return fleet.start_redis(os.path.join(self.dir, "redis"), self.redis_port, os.path.join(self.dir, "redis.log"))

    def start_rls(self):
        return fleet.start_rls(self.config_path, self.rls_port, self.redis_port, os.path.join(self.dir, "rls.log"))

    def close(self):
        for e in self.envoys.values():
            e.stop()
        self.relay.close()
        self.rls.stop()
        self.redis.stop()


@pytest.fixture(scope="module")
def fleet_(upstream_module, form):
    f = Fleet(upstream_module)
    yield f
    f.close()


@pytest.fixture(scope="module")
def upstream_module():
    from harness import Recorder
    r = Recorder()
    yield r
    r.close()


def call(e: Envoy, key: str, body: bytes = b"{}"):
    return e.request("POST", RRS, {"Ocp-Apim-Subscription-Key": key}, body)


def simultaneous_multi(targets: list[tuple[int, bytes]], timeout: float = 30) -> list[Response]:
    """One connection per request, to several Envoys; all written as close together as one
    thread can, then every response read."""
    socks = []
    for port, _ in targets:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(s)
    time.sleep(0.3)
    for s, (_, raw) in zip(socks, targets):
        s.sendall(raw)
    out = []
    for s in socks:
        resp = http.client.HTTPResponse(s)
        resp.begin()
        out.append(Response(resp.status, [(k.lower(), v) for k, v in resp.getheaders()], resp.read()))
        s.close()
    return out


def check_429(r, period):
    assert r.status == 429, r
    assert r.header("content-type") == "application/json"
    retry = int(r.header("retry-after"))
    assert 1 <= retry <= period
    assert r.json() == {"statusCode": 429, "message": f"Rate limit is exceeded. Try again in {retry} seconds."}


def stat(e: Envoy, name: str) -> int:
    return e.stat(f"wasmcustom.mlgate.{name}") or 0


def test_exactly_n_across_three_envoys_over_consecutive_windows(fleet_, upstream_module):
    limit, period = 100, 3
    raw = raw_request("POST", RRS, {"Ocp-Apim-Subscription-Key": "alice-key"}, b"{}")
    ports = [e.port for e in fleet_.envoys.values()]
    for window in range(3):
        before = upstream_module.count()
        results = simultaneous_multi([(ports[i % 3], raw) for i in range(300)])
        ok = [r for r in results if r.status == 200]
        statuses = sorted(Counter(r.status for r in results).items())
        assert len(ok) == limit, f"window {window}: {len(ok)} admitted; statuses {statuses}"
        for r in results:
            if r.status != 200:
                check_429(r, period)
        # Admitted responses carry the fleet's count in RateLimit-* as in local mode.
        remaining = sorted(int(r.header("ratelimit-remaining")) for r in ok)
        assert remaining == list(range(limit)), remaining[:10]
        assert all(r.header("ratelimit-limit") == str(limit) for r in ok)
        assert upstream_module.count() - before == limit
        time.sleep(period + 0.3)
    # Each Envoy admitted some: the count really is shared.
    per_envoy = [stat(e, "rls_calls") for e in fleet_.envoys.values()]
    assert all(n >= 100 for n in per_envoy), per_envoy
    assert sum(stat(e, "rate_limited") for e in fleet_.envoys.values()) == 3 * (300 - limit)
    assert sum(stat(e, "rls_failures") for e in fleet_.envoys.values()) == 0


def test_quota_calls_and_bandwidth_across_envoys(fleet_):
    envoys = list(fleet_.envoys.values())
    for i in range(5):
        assert call(envoys[i % 3], "bob-key").status == 200
    r = call(envoys[2], "bob-key")
    assert r.status == 403
    retry = int(r.header("retry-after"))
    h, rem = divmod(retry, 3600)
    m, s = divmod(rem, 60)
    assert r.json() == {"statusCode": 403,
                        "message": f"Out of call volume quota. Quota will be replenished in {h:02d}:{m:02d}:{s:02d}."}
    # Bandwidth: 3 KB through one Envoy (counted after its response), then the next call
    # through another Envoy is over the 2 KB quota.
    assert call(envoys[0], "bea-key", b"x" * 3072).status == 200
    deadline = time.time() + 10
    while True:
        r = call(envoys[1], "bea-key")
        if r.status == 403 or time.time() > deadline:
            break
        time.sleep(0.2)
    assert r.status == 403, r
    assert r.json()["message"].startswith("Out of bandwidth quota. Quota will be replenished in ")


def outage(fleet_, expect_wait: bool):
    """Traffic through each Envoy while the store is down: every request answered as its
    on_failure says, until each worker's breaker opens; then requests skip the store."""
    for mode, e in fleet_.envoys.items():
        calls_before = stat(e, "rls_calls")
        skipped_before = stat(e, "rls_breaker_skipped")
        seen = Counter()
        for _ in range(80):
            r = call(e, "noise-key")
            seen[r.status] += 1
            if mode == "deny":
                assert r.status == 503 and r.json() == UNAVAILABLE, r
            else:
                assert r.status == 200, r
            if stat(e, "rls_breaker_open") == 2:
                break
        assert stat(e, "rls_breaker_open") == 2, f"{mode}: breakers open on {stat(e, 'rls_breaker_open')} of 2 workers"
        # Open: requests no longer call the store (so none waits for the timeout).
        calls = stat(e, "rls_calls")
        for _ in range(10):
            t = time.time()
            r = call(e, "noise-key")
            assert r.status == (503 if mode == "deny" else 200)
        assert stat(e, "rls_calls") == calls, "an open breaker skips the store"
        assert stat(e, "rls_breaker_skipped") >= skipped_before + 10
        assert stat(e, "rls_failures") >= BREAKER_FAILURES * 2
        if mode == "local":
            assert stat(e, "rls_local_fallback") > 0
        assert calls > calls_before


def recover(fleet_):
    """After the store is back, each worker's probe closes its breaker."""
    for mode, e in fleet_.envoys.items():
        deadline = time.time() + 20
        while stat(e, "rls_breaker_open") > 0 and time.time() < deadline:
            call(e, "noise-key")
            time.sleep(0.05)
        assert stat(e, "rls_breaker_open") == 0, f"{mode}: breaker still open"


def held_count_carries_on(fleet_, sub: str, before: int):
    """`before` calls were counted before the outage: exactly 10 - before more are admitted."""
    e = fleet_.envoys["deny"]
    statuses = [call(e, f"{sub}-key").status for _ in range(10 - before + 2)]
    assert statuses == [200] * (10 - before) + [429, 429], statuses


def count_some(fleet_, sub: str, n: int):
    envoys = list(fleet_.envoys.values())
    for i in range(n):
        assert call(envoys[i % 3], f"{sub}-key").status == 200


def test_redis_down_each_failure_mode_breaker_opens_and_closes_counts_hold(fleet_):
    count_some(fleet_, "held-redis", 4)
    fleet.kill(fleet_.redis)
    try:
        outage(fleet_, expect_wait=False)
    finally:
        fleet_.redis = fleet_.start_redis()
    recover(fleet_)
    held_count_carries_on(fleet_, "held-redis", 4)


def test_rls_down_each_failure_mode_breaker_opens_and_closes_counts_hold(fleet_):
    count_some(fleet_, "held-rls", 4)
    fleet.kill(fleet_.rls)
    try:
        outage(fleet_, expect_wait=False)
    finally:
        fleet_.rls = fleet_.start_rls()
    recover(fleet_)
    held_count_carries_on(fleet_, "held-rls", 4)


def test_slow_rls_beyond_the_timeout_opens_the_breaker(fleet_):
    count_some(fleet_, "held-slow", 4)
    fleet_.relay.delay = 2 * TIMEOUT_MS / 1000
    try:
        outage(fleet_, expect_wait=True)
    finally:
        fleet_.relay.delay = 0
    recover(fleet_)
    held_count_carries_on(fleet_, "held-slow", 4)


def test_restarting_one_envoy_keeps_the_count(fleet_, upstream_module):
    e = fleet_.envoys["allow"]
    for _ in range(4):
        assert call(e, "restart-key").status == 200
    e.stop()
    e.start()
    statuses = [call(e, "restart-key").status for _ in range(8)]
    assert statuses == [200] * 6 + [429, 429], statuses
    log = open(fleet_.rls.log_path).read()
    assert "panicked" not in log


def test_mlgate_rls_exits_cleanly_on_sigterm(fleet_):
    fleet_.rls.popen.terminate()
    assert fleet_.rls.popen.wait(10) == 0
    log = open(fleet_.rls.log_path).read()
    assert re.search(r"mlgate-rls: stopped; \d+ requests", log), log[-500:]
    assert "panicked" not in log


class FakeRls:
    """A gRPC server (HTTP/2 by the h2 package) that answers every call with `message` and
    grpc-status 0: a rate limit service answering garbage."""

    def __init__(self, message: bytes):
        import threading
        self.message = message
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.calls = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import threading
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        import h2.config
        import h2.connection
        import h2.events
        c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        c.initiate_connection()
        conn.sendall(c.data_to_send())
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                for ev in c.receive_data(data):
                    if isinstance(ev, h2.events.DataReceived):
                        c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        self.calls += 1
                        frame = b"\x00" + len(self.message).to_bytes(4, "big") + self.message
                        c.send_headers(ev.stream_id, [(":status", "200"), ("content-type", "application/grpc")])
                        c.send_data(ev.stream_id, frame)
                        c.send_headers(ev.stream_id, [("grpc-status", "0")], end_stream=True)
                conn.sendall(c.data_to_send())
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.sock.close()


@pytest.mark.parametrize("message", [b"\xff\xff\xff", b"\x12\x05\x08", b""], ids=["garbage", "truncated", "code-unknown"])
def test_an_rls_answering_garbage_is_a_failure(upstream_module, message):
    fake = FakeRls(message)
    e = FleetEnvoy(config("deny"), upstream_module.port, fake.port, concurrency=1)
    try:
        for i in range(BREAKER_FAILURES):
            r = call(e, "noise-key")
            assert (r.status, r.json()) == (503, UNAVAILABLE), r
        assert fake.calls == BREAKER_FAILURES
        assert stat(e, "rls_failures") == BREAKER_FAILURES
        assert stat(e, "rls_breaker_open") == 1
        r = call(e, "noise-key")
        assert r.status == 503 and fake.calls == BREAKER_FAILURES, "the open breaker skips the store"
        assert "panicked" not in e.log()
    finally:
        e.stop()
        fake.close()
