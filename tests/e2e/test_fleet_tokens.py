"""Issue 19 on the remote store: token limits counted in mlgate-rls over redis-server, shared by
two Envoys (--concurrency 2 each) in front of azureml-sim's LLM. Each call's bound is reserved
in the check's descriptors, the charge comes back in the answer, and the end of the stream
settles it with a second ShouldRateLimit; all real processes on loopback."""
import json
import os
import tempfile
import time

import pytest

import mlgate_harness as mh
from mlgate_harness import fleet
from conftest import SIM_KEY
from harness import raw_request
from test_fleet import FleetEnvoy, simultaneous_multi, stat
from test_tokens import chat_body, check_burst, sim_get, sim_reset, usage_of_sse

pytestmark = pytest.mark.forms("wasm", "native")

LIMIT = 3000
# One subscription per test (counts never mix).
SUBS = {"tok": ["race", "settle", "stream", "lost"], "quota": ["capped"]}


def config() -> dict:
    creds = [{"workspace": "*", "service": "*", "api_key": SIM_KEY}]
    tpm = {"tokens_per_minute": LIMIT, "default_max_completion_tokens": 30, "remaining_tokens_header": "x-remaining-tokens"}
    quota = {"token_quota": 300, "token_quota_period": "Hourly", "default_max_completion_tokens": 30,
             "remaining_quota_tokens_header": "x-quota-left"}
    return {
        "apis": [{"id": "llm", "name": "LLM", "path": "llm", "service_url": "http://llm.internal/v1",
                  "operations": "openai", "backend_credentials": creds}],
        "products": [{"id": "tok", "name": "Tokens", "apis": ["llm"], "token_limit": tpm},
                     {"id": "quota", "name": "Quota", "apis": ["llm"], "token_limit": quota}],
        "subscriptions": [{"id": s, "product": p, "state": "active", "primary_key": f"{s}-key"}
                          for p, subs in SUBS.items() for s in subs],
        "limits_store": fleet.rls_store(timeout_ms=500, on_failure="deny"),
    }


class TokenFleet:
    def __init__(self, sim_port: int):
        self.dir = tempfile.mkdtemp(prefix="mlgate-fleet-tokens-")
        self.redis_port, rls_port = mh.free_port(), mh.free_port()
        self.redis = fleet.start_redis(os.path.join(self.dir, "redis"), self.redis_port, os.path.join(self.dir, "redis.log"))
        self.config_path = os.path.join(self.dir, "mlgate.json")
        with open(self.config_path, "w") as f:
            json.dump(config(), f)
        self.rls_port = rls_port
        self.rls = self.start_rls()
        self.envoys = []
        try:
            for _ in range(2):
                self.envoys.append(FleetEnvoy(config(), sim_port, rls_port, concurrency=2))
        except Exception:
            self.close()
            raise

    def start_rls(self):
        return fleet.start_rls(self.config_path, self.rls_port, self.redis_port, os.path.join(self.dir, "rls.log"))

    def close(self):
        for e in self.envoys:
            e.stop()
        self.rls.stop()
        self.redis.stop()


@pytest.fixture(scope="module")
def tf(azureml_sim, form):
    f = TokenFleet(azureml_sim.port)
    yield f
    f.close()


def chat(e, key: str, body: bytes, completion: int, extra: dict | None = None):
    h = {"Ocp-Apim-Subscription-Key": key, "Content-Type": "application/json", "x-sim-completion-tokens": str(completion)}
    return e.request("POST", "/llm/chat/completions", {**h, **(extra or {})}, body)


def test_concurrent_calls_through_two_envoys_never_exceed_tokens_per_minute(tf, azureml_sim):
    sim_reset(azureml_sim)
    body = chat_body(100)
    cost = len(body) + 100
    raw = raw_request("POST", "/llm/chat/completions", {"Ocp-Apim-Subscription-Key": "race-key", "Content-Type": "application/json",
                                                        "x-sim-completion-tokens": "100"}, body)
    # The invariant, across both Envoys.
    reported = check_burst(simultaneous_multi([(tf.envoys[i % 2].port, raw) for i in range(50)]), azureml_sim, LIMIT, cost)
    # Settled (fire and forget from each stream's end) to what the backend reported, the
    # unused part of the bounds is free again: calls fit exactly while it holds their bound.
    time.sleep(1)
    free = LIMIT - reported["total_tokens"]
    for i in range(LIMIT // cost + 1):
        r = chat(tf.envoys[i % 2], "race-key", body, 100)
        if free < cost:
            assert r.status == 429, (r, free)
            break
        assert r.status == 200, (r, free)
        assert int(r.header("x-remaining-tokens")) == free - cost
        free -= r.json()["usage"]["total_tokens"]
        time.sleep(0.3)
    else:
        pytest.fail("never refused")
    assert all(stat(e, "rls_failures") == 0 and stat(e, "rls_settle_failures") == 0 for e in tf.envoys)


def test_one_envoy_settles_what_the_other_reserved_exactly(tf):
    a, b = tf.envoys
    b1 = chat_body(20)
    r1 = chat(a, "settle-key", b1, 7)
    assert r1.status == 200, r1
    assert int(r1.header("x-remaining-tokens")) == LIMIT - (len(b1) + 20)
    time.sleep(0.5)
    b2 = chat_body(50)
    r2 = chat(b, "settle-key", b2, 3)
    assert r2.status == 200, r2
    # Envoy b sees the first call settled to its usage in the shared count.
    assert int(r2.header("x-remaining-tokens")) == LIMIT - r1.json()["usage"]["total_tokens"] - (len(b2) + 50)


def test_a_stream_through_the_remote_store_settles_to_its_usage_event(tf):
    a, b = tf.envoys
    body = chat_body(40, stream=True)
    r = chat(a, "stream-key", body, 9)
    assert r.status == 200 and r.header("content-type").startswith("text/event-stream")
    u = usage_of_sse(r.body)
    assert u["completion_tokens"] == 9
    time.sleep(0.5)
    b2 = chat_body(10)
    r2 = chat(b, "stream-key", b2, 1)
    assert int(r2.header("x-remaining-tokens")) == LIMIT - u["total_tokens"] - (len(b2) + 10)


def test_a_token_quota_across_envoys_refuses_with_403(tf):
    a, b = tf.envoys
    body = chat_body(150)
    r1 = chat(a, "capped-key", body, 150)
    assert r1.status == 200, r1
    assert int(r1.header("x-quota-left")) == 300 - (len(body) + 150)
    time.sleep(0.5)
    r2 = chat(b, "capped-key", body, 150)
    assert r2.status == 403, r2
    msg = r2.json()["message"]
    assert msg.startswith("Token quota is exceeded. Try again in ") and msg.endswith("seconds.")
    assert 1 <= int(r2.header("retry-after")) <= 3600
    assert "panicked" not in open(tf.rls.log_path).read()


def test_a_settle_the_store_never_gets_leaves_the_reservation_charged(tf):
    # The store goes away while a stream runs: its settle fails (counted), and the whole bound
    # stays charged in the shared count, never less than the call produced.
    import threading
    a, b = tf.envoys
    body = chat_body(40, stream=True)
    t = threading.Thread(target=chat, args=(a, "lost-key", body, 10),
                         kwargs={"extra": {"x-sim-chunk-delay-ms": "200"}})
    t.start()
    time.sleep(0.8)
    fleet.kill(tf.rls)
    t.join(30)
    time.sleep(0.5)
    assert stat(a, "rls_settle_failures") == 1
    tf.rls = tf.start_rls()
    b2 = chat_body(10)
    deadline = time.time() + 10
    while True:
        r2 = chat(b, "lost-key", b2, 1)
        if r2.status == 200 or time.time() > deadline:
            break
        time.sleep(0.2)
    assert r2.status == 200, r2
    assert int(r2.header("x-remaining-tokens")) == LIMIT - (len(body) + 40) - (len(b2) + 10)


def test_on_failure_local_reserves_and_settles_in_shared_data(azureml_sim):
    # No service behind the cluster: every check fails, so calls are counted in this Envoy's
    # shared data, and their settles go there too (never to the store that did not count them).
    c = config()
    c["limits_store"] = fleet.rls_store(timeout_ms=200, on_failure="local")
    e = FleetEnvoy(c, azureml_sim.port, mh.free_port(), concurrency=1)
    try:
        b1 = chat_body(20)
        r1 = chat(e, "settle-key", b1, 7)
        assert r1.status == 200, r1
        assert int(r1.header("x-remaining-tokens")) == LIMIT - (len(b1) + 20)
        time.sleep(0.3)
        b2 = chat_body(50)
        r2 = chat(e, "settle-key", b2, 3)
        assert int(r2.header("x-remaining-tokens")) == LIMIT - r1.json()["usage"]["total_tokens"] - (len(b2) + 50)
        assert stat(e, "rls_local_fallback") == 2
        assert stat(e, "rls_settle_failures") == 0
    finally:
        e.stop()
