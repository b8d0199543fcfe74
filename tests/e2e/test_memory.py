"""Memory under hostile traffic (issue 20), in both forms: Envoy with mlgate on 2 workers stays
within its idle RSS + 32 MiB while a load of valid keys rotating over 2,000 subscriptions,
unknown keys, unknown operations, job ids of their own, bytes 0x80-0xFF in headers and a new
`x-client` value on every request fills every table mlgate has, the keyed counter table to the
most the default `counter_memory_kb` allows. A configuration past that cap is refused.

The load is loopback only and bounded: SOAK_SECONDS of it per form, from LOAD_PROCESSES
processes with keep-alive connections, in front of a direct_response Envoy upstream."""
from __future__ import annotations

import json
import multiprocessing
import os
import re
import socket
import tempfile
import time
from pathlib import Path

import pytest

import mlgate_harness as mh
from harness import Envoy

pytestmark = pytest.mark.forms("wasm", "native")

SUBS = 2000
# 4,096 slots (the default counter_slots) × 3.6 KiB rings: 14.5 MiB when full, the largest table
# the default counter_memory_kb (16 MiB) takes at 4,096 slots is ~446 calls.
KEYED_CALLS = 400
COUNTER_SLOTS = 4096
BOUND_KIB = 32 * 1024
SOAK_SECONDS = 20
LOAD_PROCESSES = 2
CONNECTIONS = 16        # per process, one request in flight on each
HIGH = bytes(range(0x80, 0x100))


def key(i: int) -> str:
    return f"mem-key-{i:06d}"


def config(keyed_calls: int = KEYED_CALLS, **settings) -> dict:
    return {
        "apis": [{"id": "mem", "name": "Memory", "path": "mem", "service_url": "http://backend.internal",
                  "operations": "azureml-studio",
                  "backend_credentials": [{"workspace": "*", "service": "*", "api_key": "backend-key"}],
                  "rate_limit": {"calls": keyed_calls, "renewal_period": 60, "counter": "header:x-client"}}],
        "products": [{"id": "p", "name": "P", "apis": ["mem"], "rate_limit": {"calls": 100, "renewal_period": 60},
                      "quota": {"calls": 10 ** 9, "renewal_period": 86400}}],
        "subscriptions": [{"id": f"sub-{i:06d}", "product": "p", "state": "active", "primary_key": key(i)}
                          for i in range(SUBS)],
        **settings,
    }


def hostile(n: int, tag: str) -> bytes:
    """Request n of the mix: six kinds in turn, every one with a new x-client value."""
    u = f"{tag}-{n}".encode()
    k = key((n * 7919) % SUBS).encode()
    ws = b"/mem/workspaces/ws/services/svc"
    kind = n % 6
    if kind == 0:
        line, hs = b"POST " + ws + b"/execute?api-version=2.0&details=true", [(b"ocp-apim-subscription-key", k)]
    elif kind == 1:
        line, hs = b"POST " + ws + b"/execute?api-version=2.0&details=true", [(b"ocp-apim-subscription-key", b"unknown-" + u)]
    elif kind == 2:
        line, hs = b"GET /mem/no/such/operation/" + u, [(b"ocp-apim-subscription-key", k)]
    elif kind == 3:
        line, hs = b"GET " + ws + b"/jobs/job-" + u + b"?api-version=2.0", [(b"ocp-apim-subscription-key", k)]
    elif kind == 4:
        line, hs = (b"POST " + ws + b"/execute?api-version=2.0&details=true",
                    [(b"ocp-apim-subscription-key", k), (b"x-junk", HIGH), (b"x-" + u, HIGH)])
    else:
        line, hs = b"DELETE " + ws + b"/jobs/job-" + u + b"?api-version=2.0", [(b"ocp-apim-subscription-key", k)]
    client = (HIGH + u) if kind == 4 else b"c" + u
    # No body: Envoy closes an HTTP/1.1 connection after a local reply (401, 404) to a request
    # whose body it has not read, and the load would measure reconnections.
    head = [line + b" HTTP/1.1", b"host: gw.example.test", b"x-client: " + client, b"content-length: 0"]
    head += [name + b": " + value for name, value in hs]
    return b"\r\n".join(head) + b"\r\n\r\n"


def read_responses(sock: socket.socket, buf: bytearray, want: int, statuses: dict) -> int:
    """Reads up to `want` responses (fewer if Envoy closes); returns how many."""
    got = 0
    while got < want:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            chunk = sock.recv(65536)
            if not chunk:
                return got
            buf += chunk
            continue
        head = bytes(buf[:end]).decode("latin-1")
        m = re.search(r"(?im)^content-length:\s*(\d+)", head)
        total = end + 4 + (int(m.group(1)) if m else 0)
        while len(buf) < total:
            chunk = sock.recv(65536)
            if not chunk:
                return got
            buf += chunk
        status = head.split(" ", 2)[1]
        statuses[status] = statuses.get(status, 0) + 1
        del buf[:total]
        got += 1
    return got


def load(port: int, seconds: float, tag: str, out) -> None:
    """One load process: CONNECTIONS keep-alive connections with one request in flight on each
    (Envoy closes a connection that pipelines past a local reply), until `seconds` have passed;
    puts {status: count} on `out`."""
    statuses: dict = {}
    n = 0
    conns: list = [None] * CONNECTIONS
    deadline = time.time() + seconds
    while time.time() < deadline:
        for i in range(CONNECTIONS):
            if conns[i] is None:
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conns[i] = (s, bytearray())
            conns[i][0].sendall(hostile(n, tag))
            n += 1
        for i in range(CONNECTIONS):
            s, buf = conns[i]
            if read_responses(s, buf, 1, statuses) < 1:
                s.close()
                conns[i] = None
                statuses["closed"] = statuses.get("closed", 0) + 1
    out.put(statuses)


def rss_kib(pid: int) -> int:
    m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(m.group(1)) if m else 0


@pytest.fixture(scope="module")
def direct_upstream():
    """An Envoy answering 200 to everything (direct_response): cheaper than a Python upstream."""
    workdir = tempfile.mkdtemp(prefix="mlgate-memory-")
    port, admin = mh.free_port(), mh.free_port()
    routes = [{"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": '{"ok":true}'}}}]
    cfg = mh.bootstrap(admin, [mh.listener("fixed", port, [], routes)], [])
    proc = mh.start_envoy(mh.write_config(os.path.join(workdir, "upstream.json"), cfg),
                          os.path.join(workdir, "upstream.log"), port=port, concurrency=1, log_level="warn")
    yield port
    proc.stop()


def test_rss_stays_within_idle_plus_32_mib_under_hostile_traffic(form, direct_upstream):
    e = Envoy(config(), direct_upstream, concurrency=2)
    try:
        pid = e.proc.pid
        assert e.request("GET", "/mem/workspaces/ws/services/svc/jobs/j?api-version=2.0",
                         {"ocp-apim-subscription-key": key(0), "x-client": "warm"}).status == 200
        time.sleep(2)
        idle = rss_kib(pid)
        out = multiprocessing.Queue()
        procs = [multiprocessing.Process(target=load, args=(e.port, SOAK_SECONDS, f"{form}{i}", out), daemon=True)
                 for i in range(LOAD_PROCESSES)]
        for p in procs:
            p.start()
        peak = idle
        deadline = time.time() + SOAK_SECONDS + 1
        while time.time() < deadline:
            peak = max(peak, rss_kib(pid))
            time.sleep(0.2)
        statuses: dict = {}
        for _ in procs:
            for k, v in out.get(timeout=30).items():
                statuses[k] = statuses.get(k, 0) + v
        for p in procs:
            p.join(10)
        peak = max(peak, rss_kib(pid))
        keys = e.stat("wasmcustom.mlgate.shared_data_keys") or 0
        report = (f"{form}: idle {idle} KiB, peak {peak} KiB (+{peak - idle} KiB), {keys} store keys, "
                  f"responses {json.dumps(statuses, sort_keys=True)}")
        print(report)
        # The load was the hostile mix, and it filled the tables: every subscription's record
        # and nearly every slot of the counter table.
        for status in ("200", "401", "404"):
            assert statuses.get(status, 0) > 1000, report
        assert keys >= SUBS + 0.95 * COUNTER_SLOTS, report
        assert e.proc.poll() is None, "Envoy exited"
        assert peak - idle <= BOUND_KIB, report
    finally:
        e.stop()


def test_counter_tables_past_counter_memory_kb_are_refused(form, direct_upstream):
    """The cap is the filter's: Envoy refuses the configuration (both forms), with the line
    `mlgate check` prints."""
    e = Envoy(config(keyed_calls=10_000), direct_upstream, wait=False)
    try:
        e.wait_exit(60)
        assert re.search(r"invalid mlgate configuration: counter_memory_kb: the counter tables would take \d+ KB "
                         r"when full, over 16384 KB", e.log()), e.log()[-3000:]
    finally:
        e.stop()
    ok = Envoy(config(keyed_calls=10_000, counter_slots=150), direct_upstream)
    ok.stop()
