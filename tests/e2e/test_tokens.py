"""Token-metered LLM calls (issue 19) in a real Envoy, in front of azureml-sim's OpenAI-compatible
LLM and online endpoint: bounds reserved at admission, settled to the reported usage, exact
under concurrency, APIM's refusals, hostile bodies never forwarded."""
import json
import time
import urllib.request

import pytest

from conftest import SIM_KEY
from harness import Envoy, raw_request, simultaneous

pytestmark = pytest.mark.forms("wasm", "native")

KEY = "alice-llm-key"
# One subscription per test that counts tokens on the module's Envoy: each starts with an empty
# window, so no test waits out another's minute.
KEYS = {name: f"{name}-key" for name in ("settle", "stream", "default", "cut", "hostile", "aoai", "counters")}


def config(token_limit: dict | None, **extra) -> dict:
    creds = [{"workspace": "*", "service": "*", "api_key": SIM_KEY}]
    product = {"id": "tok", "name": "Tokens", "apis": ["llm", "aoai", "online"]}
    if token_limit is not None:
        product["token_limit"] = token_limit
    return {
        "apis": [
            {"id": "llm", "name": "LLM", "path": "llm", "service_url": "http://llm.internal/v1",
             "operations": "openai", "backend_credentials": creds},
            {"id": "aoai", "name": "Azure OpenAI", "path": "aoai", "service_url": "http://aoai.internal",
             "operations": "azure-openai",
             "backend_credentials": [{"workspace": "*", "service": "*", "api_key": SIM_KEY, "header": "api-key"}]},
            {"id": "online", "name": "Online endpoint", "path": "online", "service_url": "http://ep.internal",
             "operations": "azureml-online", "backend_credentials": creds},
        ],
        "products": [product],
        "subscriptions": [{"id": "alice", "product": "tok", "state": "active", "primary_key": KEY}]
        + [{"id": n, "product": "tok", "state": "active", "primary_key": k} for n, k in KEYS.items()],
        **extra,
    }


def sim_get(sim, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{sim.port}{path}", timeout=10) as r:
        return json.loads(r.read())


def sim_reset(sim):
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{sim.port}/sim/usage/reset", method="POST"), timeout=10).read()


def chat_body(max_tokens: int | None = 20, stream: bool = False, text: str = "hello there") -> bytes:
    b = {"model": "sim-chat", "messages": [{"role": "user", "content": text}]}
    if max_tokens is not None:
        b["max_tokens"] = max_tokens
    if stream:
        b["stream"] = True
    return json.dumps(b, separators=(",", ":")).encode()


def chat(env: Envoy, body: bytes, completion: int = 7, extra: dict | None = None, path: str = "/llm/chat/completions",
         key: str = KEY):
    h = {"Ocp-Apim-Subscription-Key": key, "Content-Type": "application/json", "x-sim-completion-tokens": str(completion)}
    h.update(extra or {})
    return env.request("POST", path, h, body)


def usage_of_sse(body: bytes) -> dict | None:
    """The usage of an SSE response's last usage event, and the content it streamed."""
    usage = None
    for line in body.decode().splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            u = json.loads(line[6:]).get("usage")
            if u:
                usage = u
    return usage


@pytest.fixture(scope="module")
def gw(azureml_sim, form):
    e = Envoy(config({"tokens_per_minute": 100_000, "default_max_completion_tokens": 30,
                      "remaining_tokens_header": "x-remaining-tokens", "tokens_consumed_header": "x-tokens-consumed"}),
              upstream=azureml_sim.port)
    yield e
    e.stop()


def remaining(r) -> int:
    return int(r.header("x-remaining-tokens"))


def test_a_chat_call_is_settled_to_its_reported_usage(gw, azureml_sim, form):
    k = KEYS["settle"]
    b1 = chat_body(20)
    r1 = chat(gw, b1, completion=7, key=k)
    assert r1.status == 200, r1
    u1 = r1.json()["usage"]
    assert u1["completion_tokens"] == 7
    # The whole reservation is counted while the call runs: what is left says so.
    assert remaining(r1) == 100_000 - (len(b1) + 20)
    # The dynamic module holds a JSON response until it ended and says what it consumed; the
    # Wasm form cannot hold a response's headers while it reads the body (see README).
    if form == "native":
        assert r1.header("x-tokens-consumed") == str(u1["total_tokens"])
    else:
        assert r1.header("x-tokens-consumed") is None
    b2 = chat_body(50)
    r2 = chat(gw, b2, completion=3, key=k)
    assert r2.status == 200
    # Settled: the first call now counts with what it used, not with its bound.
    assert remaining(r2) == 100_000 - u1["total_tokens"] - (len(b2) + 50)


def test_a_stream_asks_for_its_usage_and_settles_exactly(gw, azureml_sim):
    k = KEYS["stream"]
    b = chat_body(40, stream=True)
    r = chat(gw, b, completion=9, key=k)
    assert r.status == 200 and r.header("content-type").startswith("text/event-stream")
    # The client did not ask for usage; mlgate did (so the stream can be settled), and the
    # client sees the backend's usage event, as OpenAI sends it when asked.
    u = usage_of_sse(r.body)
    assert u == {"prompt_tokens": u["prompt_tokens"], "completion_tokens": 9, "total_tokens": u["prompt_tokens"] + 9}
    assert r.body.rstrip().endswith(b"data: [DONE]")
    # A stream is not held: nothing can say what it consumed before it ends.
    assert r.header("x-tokens-consumed") is None
    b2 = chat_body(10)
    r2 = chat(gw, b2, completion=1, key=k)
    assert remaining(r2) == 100_000 - u["total_tokens"] - (len(b2) + 10)


def test_the_default_completion_bound_reaches_the_backend(gw, azureml_sim):
    b = chat_body(None)
    r = chat(gw, b, completion=1000, key=KEYS["default"])
    assert r.status == 200
    # The backend produced what mlgate's default allowed, not what it wanted to.
    assert r.json()["usage"]["completion_tokens"] == 30
    assert remaining(r) == 100_000 - (len(b) + 30)


def test_a_cut_stream_keeps_its_reservation(gw, azureml_sim):
    k = KEYS["cut"]
    b = chat_body(60, stream=True)
    try:
        chat(gw, b, completion=50, extra={"x-sim-cut-after": "2"}, key=k)
    except Exception:
        pass   # the client sees the stream cut
    time.sleep(0.5)
    b2 = chat_body(10)
    r2 = chat(gw, b2, completion=1, key=k)
    assert r2.status == 200
    # No usage arrived: the cut call's whole bound stays charged (never less than it produced).
    assert remaining(r2) == 100_000 - (len(b) + 60) - (len(b2) + 10)


@pytest.mark.parametrize("body,status", [
    (b"not json", 400),
    (b'{"messages": [], "max_tokens": 1e9}', 400),
    (b'{"messages": [], "max_tokens": 1000000000000}', 400),
    (b'{"messages": [], "max_tokens": -5}', 400),
    (b'{"messages": [], "max_tokens": 5, "max_tokens": 50000}', 400),
    (b"[" * 200 + b"]" * 200, 400),
    (b'{"messages": [], "max_tokens": 5, "stream": "yes"}', 400),
])
def test_hostile_bodies_get_a_clear_4xx_and_never_reach_the_model(gw, azureml_sim, body, status):
    before = sim_get(azureml_sim, "/sim/usage")["calls"]
    r = chat(gw, body, key=KEYS["hostile"])
    assert r.status == status, r
    assert r.json()["statusCode"] == status
    assert sim_get(azureml_sim, "/sim/usage")["calls"] == before


def test_a_body_past_the_limit_is_413(azureml_sim, form):
    e = Envoy(config({"tokens_per_minute": 100_000, "default_max_completion_tokens": 30}, max_request_body_bytes=4096),
              upstream=azureml_sim.port)
    try:
        before = sim_get(azureml_sim, "/sim/usage")["calls"]
        r = chat(e, chat_body(5, text="x" * 5000))
        assert r.status == 413 and "larger than 4096 bytes" in r.json()["message"], r
        assert chat(e, chat_body(5, text="x" * 3000)).status == 200
        assert sim_get(azureml_sim, "/sim/usage")["calls"] == before + 1
    finally:
        e.stop()


def check_burst(got: list, sim, limit: int, cost: int) -> dict:
    """A burst of chat calls against `tokens_per_minute` = `limit`, each bounded by `cost`: the
    backend's reported usage of the admitted calls is within the limit, every bound that fitted
    was admitted (more if a call settled before others arrived), and refusals are APIM's 429.
    Returns what the backend reported."""
    ok = [r for r in got if r.status == 200]
    refused = [r for r in got if r.status == 429]
    assert len(ok) + len(refused) == len(got), [r.status for r in got]
    reported = sim_get(sim, "/sim/usage")
    assert reported["calls"] == len(ok)
    # The invariant: tokens of admitted calls never exceed the limit in the window.
    assert reported["total_tokens"] <= limit, reported
    assert sum(r.json()["usage"]["total_tokens"] for r in ok) == reported["total_tokens"]
    assert len(ok) >= limit // cost, (len(ok), cost)
    for r in refused:
        secs = int(r.header("retry-after"))
        assert 1 <= secs <= 61
        assert r.json() == {"statusCode": 429, "message": f"Token limit is exceeded. Try again in {secs} seconds."}
    return reported


def test_concurrent_calls_never_exceed_tokens_per_minute(azureml_sim, form):
    limit = 3000
    e = Envoy(config({"tokens_per_minute": limit, "default_max_completion_tokens": 30}), upstream=azureml_sim.port,
              concurrency=4)
    try:
        sim_reset(azureml_sim)
        body = chat_body(100)
        cost = len(body) + 100
        reqs = [raw_request("POST", "/llm/chat/completions",
                            {"Ocp-Apim-Subscription-Key": KEY, "Content-Type": "application/json",
                             "x-sim-completion-tokens": "100"}, body) for _ in range(50)]
        check_burst(simultaneous(e.port, reqs), azureml_sim, limit, cost)
    finally:
        e.stop()


def test_a_token_quota_refuses_with_403(azureml_sim, form):
    e = Envoy(config({"token_quota": 300, "token_quota_period": "Hourly", "default_max_completion_tokens": 30,
                      "remaining_quota_tokens_header": "x-quota-left"}), upstream=azureml_sim.port)
    try:
        b = chat_body(150)
        r1 = chat(e, b, completion=150)
        assert r1.status == 200
        assert int(r1.header("x-quota-left")) == 300 - (len(b) + 150)
        # Settled to what it used (about 160 tokens), the first call leaves too little for the
        # second one's bound.
        r2 = chat(e, b, completion=150)
        assert r2.status == 403, r2
        msg = r2.json()["message"]
        assert msg.startswith("Token quota is exceeded. Try again in ") and msg.endswith("seconds.")
        assert 1 <= int(r2.header("retry-after")) <= 3600
    finally:
        e.stop()


def test_azure_openai_goes_up_with_api_key_and_its_deployment(gw, azureml_sim):
    r = chat(gw, chat_body(5), completion=2, path="/aoai/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21", key=KEYS["aoai"])
    assert r.status == 200, r
    # The sim accepted the key (as api-key) and echoes the deployment it was called for.
    assert r.json()["model"] == "gpt-4o"
    # The client's own api-key never reaches the backend as its credential.
    r = chat(gw, chat_body(5), completion=2, extra={"api-key": "client-key"},
             path="/aoai/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21", key=KEYS["aoai"])
    assert r.status == 200, r
    # Without api-version the operation does not match.
    assert chat(gw, chat_body(5), path="/aoai/openai/deployments/gpt-4o/chat/completions", key=KEYS["aoai"]).status == 404


def test_an_online_endpoint_scores_with_the_chosen_deployment(gw, azureml_sim):
    body = json.dumps({"input_data": {"columns": ["Col2"], "index": [0], "data": [["This is a good day"]]}}).encode()
    r = gw.request("POST", "/online/score", {"Ocp-Apim-Subscription-Key": KEY, "Content-Type": "application/json",
                                             "azureml-model-deployment": "green"}, body)
    assert r.status == 200, r
    assert r.header("azureml-model-deployment") == "green"
    assert r.json()[0]["Col2"] == "This is a good day"


def test_token_counters_per_usage_labels(gw, azureml_sim):
    before = gw.stat("wasmcustom.api=.=llm;.;operation=.=chat-completions;.;product=.=tok;.;mlgate_completion_tokens") or 0
    r = chat(gw, chat_body(20), completion=11, key=KEYS["counters"])
    assert r.status == 200
    name = "wasmcustom.api=.=llm;.;operation=.=chat-completions;.;product=.=tok;.;mlgate_completion_tokens"
    deadline = time.time() + 5
    while (gw.stat(name) or 0) < before + 11 and time.time() < deadline:
        time.sleep(0.05)
    assert gw.stat(name) == before + 11
    assert (gw.stat("wasmcustom.api=.=llm;.;operation=.=chat-completions;.;product=.=tok;.;mlgate_prompt_tokens") or 0) > 0
    # Operations that carry no tokens have no token counters.
    assert gw.stat("wasmcustom.api=.=online;.;operation=.=score;.;product=.=tok;.;mlgate_prompt_tokens") is None


def test_the_demo_fronts_the_llm_and_the_online_endpoint(azureml_sim, form):
    """What `make run` shows: deploy/demo.json (= envoy/demo.yaml's configuration) in front of
    azureml-sim, alice on Starter with its token limit."""
    from pathlib import Path
    demo = json.loads((Path(__file__).resolve().parents[2] / "deploy" / "demo.json").read_text())
    demo.pop("portal"), demo.pop("admin")
    e = Envoy(demo, upstream=azureml_sim.port, env={"AZUREML_API_KEY": SIM_KEY})
    try:
        key = {"Ocp-Apim-Subscription-Key": "alice-demo-key", "Content-Type": "application/json"}
        body = chat_body(20)
        r = e.request("POST", "/llm/chat/completions", key, body)
        assert r.status == 200, r
        assert int(r.header("x-remaining-tokens")) == 2000 - (len(body) + 20)
        score = json.dumps({"input_data": {"columns": ["Col2"], "index": [0], "data": [["This is a good day"]]}}).encode()
        r = e.request("POST", "/online/score", {**key, "azureml-model-deployment": "blue"}, score)
        assert r.status == 200 and r.header("azureml-model-deployment") == "blue", r
    finally:
        e.stop()


def test_models_is_not_metered(gw, azureml_sim):
    for path in ("/llm/models", "/aoai/openai/deployments/gpt-4o/models?api-version=2024-10-21"):
        r = gw.request("GET", path, {"Ocp-Apim-Subscription-Key": KEY})
        assert r.status == 200, (path, r)
        assert r.json()["data"][0]["id"] == "sim-chat"
        # Not a call that carries tokens: no token headers.
        assert r.header("x-remaining-tokens") is None


def test_a_body_ended_by_trailers_is_judged(gw, azureml_sim):
    """HTTP/2 with request trailers: no body callback ends the body; the trailers do."""
    from harness import H2c
    c = H2c(gw.port)
    try:
        body = chat_body(12)
        headers = [(b"ocp-apim-subscription-key", KEYS["default"].encode()), (b"content-type", b"application/json"),
                   (b"x-sim-completion-tokens", b"3")]
        r = c.request("POST", b"/llm/chat/completions", headers, body, trailers=[(b"x-checksum", b"1")])
        assert r.status == 200, r
        assert json.loads(r.body)["usage"]["completion_tokens"] == 3
        # Judged: the reservation's header says so (a body forwarded unjudged would have none).
        assert r.header("x-remaining-tokens") is not None, r.headers
        before = sim_get(azureml_sim, "/sim/usage")["calls"]
        r = c.request("POST", b"/llm/chat/completions", headers, b"not json", trailers=[(b"x-checksum", b"1")])
        assert r.status == 400, r
        # mlgate's own refusal, not the backend's.
        assert json.loads(r.body)["statusCode"] == 400
        assert sim_get(azureml_sim, "/sim/usage")["calls"] == before
    finally:
        c.close()
