"""Issue 19's two numbers, run by `make bench` after the main rounds (or alone:
`.venv/bin/python bench/tokens.py`):

1. The cost of a token-limited chat call against a call-limited one: the same POST
   /llm/chat/completions through mlgate (Wasm and native), once with a product call `quota`
   and once with a `token_limit` (the body read and bounded, the reservation, the response
   read for its usage, the settle). The upstream is an Envoy direct_response answering a fixed
   chat.completion with `usage`. Gateway CPU per request, closed loop (wrk), interleaved rounds.
2. The body-buffering memory per in-flight call: N clients send a token-limited call's headers
   and all but the last byte of a B-byte body, so mlgate holds N bodies; the gateway's RSS
   with them held, minus its RSS before, over N.

Writes bench/results/<date>-tokens.json and .md and prints the table.
"""
from __future__ import annotations

import datetime
import json
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import mlgate_harness as mh
from mlgate_harness import WASM, free_port
from mlgate_harness.native import native_filter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    RESULTS, ROUNDS, SECONDS, Proc, bootstrap, key, prefix_route, run_wrk, sub_id, wasm_filter)

SUBS = 100
PATH = "/llm/chat/completions"
BODY = '{"model":"m","messages":[{"role":"user","content":"What is the capital of France?"}],"max_tokens":64}'
COMPLETION = ('{"id":"c","object":"chat.completion","model":"m","choices":[{"index":0,"message":'
              '{"role":"assistant","content":"Paris."},"finish_reason":"stop"}],'
              '"usage":{"prompt_tokens":14,"completion_tokens":2,"total_tokens":16}}')
HELD_CALLS = 200
HELD_BODY = 16 * 1024


def config(limit: str) -> str:
    """mlgate in front of one `openai` API: `limit` "calls" (a product rate limit) or "tokens"."""
    product = {"id": "p", "name": "P", "apis": ["llm"]}
    if limit == "calls":
        # A call quota that never runs out: one counter per call, in a record of the token
        # limit's order of size (a rate limit's ring is 8 bytes per allowed call).
        product["quota"] = {"calls": 1 << 50, "renewal_period": 3600}
    else:
        product["token_limit"] = {"tokens_per_minute": 1 << 40, "default_max_completion_tokens": 256}
    return json.dumps({
        "apis": [{"id": "llm", "name": "LLM", "path": "llm", "service_url": "http://llm.internal/v1", "operations": "openai",
                  "backend_credentials": [{"workspace": "*", "service": "*", "api_key": "bench-llm-key"}]}],
        "products": [product],
        "subscriptions": [{"id": sub_id(i), "product": "p", "state": "active", "primary_key": key(i)} for i in range(SUBS)],
        "max_request_body_bytes": 1 << 20,
    })


def upstream(listen: int, admin: int) -> dict:
    routes = [{"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": COMPLETION}},
               "response_headers_to_add": [{"header": {"key": "content-type", "value": "application/json"}}]}]
    return mh.bootstrap(admin, [mh.listener("fixed", listen, [], routes)], [])


def script(workdir: str) -> str:
    path = Path(workdir) / "chat.lua"
    path.write_text(f"""local n = {SUBS}
local i = 0
request = function()
  i = i + 1
  return wrk.format("POST", "{PATH}", {{
    ["Ocp-Apim-Subscription-Key"] = string.format("bench-key-%06d", i % n),
    ["Content-Type"] = "application/json"}}, '{BODY}')
end
""")
    return str(path)


def rss_kib(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in text.splitlines() if line.startswith("VmRSS:")))


def held_rss_per_call(gw: Proc) -> float:
    """KiB of gateway RSS per in-flight call holding a HELD_BODY-byte body."""
    head = (f"POST {PATH} HTTP/1.1\r\nHost: gw\r\nOcp-Apim-Subscription-Key: {key(1)}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {HELD_BODY}\r\n\r\n").encode()
    body = b'{"messages":[{"role":"user","content":"' + b"x" * (HELD_BODY - 60) + b'"}],"max_tokens":8}'
    body = body.ljust(HELD_BODY, b" ")
    time.sleep(1)
    before = rss_kib(gw.pid)
    socks = []
    try:
        for _ in range(HELD_CALLS):
            s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
            s.sendall(head + body[:-1])
            socks.append(s)
        time.sleep(2)
        held = rss_kib(gw.pid)
    finally:
        for s in socks:
            s.close()
    return (held - before) / HELD_CALLS


def main():
    workdir = tempfile.mkdtemp(prefix="mlgate-bench-tokens-")
    up_port, up_admin = free_port(), free_port()
    up = Proc("chat-upstream", upstream(up_port, up_admin), workdir, 1, up_port, up_admin)
    gateways = {}
    for form in ("wasm", "native"):
        for limit in ("calls", "tokens"):
            name = f"{form}-{limit}"
            f = wasm_filter(WASM, config(limit), "mlgate") if form == "wasm" else native_filter(config(limit))
            port, admin = free_port(), free_port()
            gateways[name] = Proc(name, bootstrap(port, admin, up_port, [f], prefix_route()), workdir, 1, port, admin)
    lua = script(workdir)
    for name, gw in gateways.items():
        r = run_wrk(gw.port, lua, 2)
        if r["non2xx"]:
            raise SystemExit(f"{name}: {r['non2xx']} non-2xx answers to valid calls")
    cpu = {n: [] for n in gateways}
    for _ in range(ROUNDS):
        for name, gw in gateways.items():
            c0 = gw.cpu_seconds()
            r = run_wrk(gw.port, lua, SECONDS)
            cpu[name].append((gw.cpu_seconds() - c0) / max(r["requests"], 1) * 1e6)
    held = {n: held_rss_per_call(gw) for n, gw in gateways.items() if n.endswith("tokens")}
    for gw in [*gateways.values(), up]:
        gw.stop()
    med = {n: statistics.median(v) for n, v in cpu.items()}
    lines = [
        f"Token-limited vs call-limited chat calls (gateway CPU per request, median of {ROUNDS} rounds, "
        f"--concurrency 1, body {len(BODY)} B, response {len(COMPLETION)} B):",
        "",
        "| form | call-limited (µs) | token-limited (µs) | difference |",
        "|---|---|---|---|",
    ]
    for form in ("wasm", "native"):
        c, t = med[f"{form}-calls"], med[f"{form}-tokens"]
        lines.append(f"| {form} | {c:.1f} | {t:.1f} | {t - c:+.1f} µs ({t / c:.2f}×) |")
    lines += ["", f"Body-buffering memory per in-flight call ({HELD_CALLS} calls each holding a {HELD_BODY // 1024} KiB body):", ""]
    for n, kib in held.items():
        lines.append(f"- {n.split('-')[0]}: {kib:.1f} KiB per call ({kib * 1024 / HELD_BODY:.2f}× the body)")
    text = "\n".join(lines)
    print(text)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stamp}-tokens.md").write_text(text + "\n")
    (RESULTS / f"{stamp}-tokens.json").write_text(json.dumps({"cpu_us_per_req": cpu, "median": med, "held_kib_per_call": held}, indent=1))


if __name__ == "__main__":
    main()
