"""Test harness: real processes on loopback. Starts the Envoy from .venv with the built
mlgate.wasm, a recording upstream, azureml-sim and Azurite, and talks real HTTP to them.
Processes, ports and the Envoy config pieces come from mlgate_harness (tools/mlgate_harness),
shared with bench/run.py and envoy/run.py."""
from __future__ import annotations

import http.client
import json
import os
import re
import socket
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import mlgate_harness as mh
from mlgate_harness.native import STATS_PREFIX, native_env, native_filter
from mlgate_harness import WASM, free_port


# --------------------------------------------------------------------------------------------
# A recording upstream: answers 200 with a small JSON body and keeps what it received.
# --------------------------------------------------------------------------------------------
class Recorder:
    def __init__(self, status: int = 200, body: bytes = b'{"ok":true}'):
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        # The status it answers; set it to make a healthy upstream fail from now on.
        self.status = status
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body are two writes: without TCP_NODELAY the body waits ~40 ms for
            # Envoy's delayed ACK of the headers on every response.
            disable_nagle_algorithm = True

            def _body(self) -> bytes:
                if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
                    # What Envoy sends upstream for an HTTP/2 request body without content-length.
                    data = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        chunk = self.rfile.read(size + 2)   # the chunk and its CRLF
                        if size == 0:
                            while chunk not in (b"\r\n", b"\n", b""):   # trailers, then the last CRLF
                                chunk = self.rfile.readline()
                            return data
                        data += chunk[:size]
                n = int(self.headers.get("content-length") or 0)
                return self.rfile.read(n) if n else b""

            def _any(self):
                data = self._body()
                url = urllib.parse.urlsplit(self.path)
                with recorder.lock:
                    recorder.requests.append({
                        "method": self.command,
                        "path": url.path,
                        "query": url.query,
                        "raw_path": self.path,
                        "headers": [(k.lower(), v) for k, v in self.headers.items()],
                        # The header values as bytes, exactly as received (http.server decodes
                        # them as Latin-1, so this round-trips every byte 0x00-0xFF).
                        "raw_headers": [(k.lower().encode("latin-1"), v.encode("latin-1"))
                                        for k, v in self.headers.raw_items()],
                        # From the raw request line: http.server's own split also splits on
                        # 0x85 and 0xA0 (Unicode whitespace in Latin-1).
                        "raw_target": self.raw_requestline.rstrip(b"\r\n").split(b" ")[1],
                        "body": data,
                        "time": time.time(),
                    })
                # A request may ask for its status (`x-want-status`), as for increment_condition.
                want = self.headers.get("x-want-status")
                self.send_response(int(want) if want and want.isdigit() else recorder.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _any

            def log_message(self, *a):
                pass

        class Server(ThreadingHTTPServer):
            # The default listen backlog (5) drops connections when a burst of admitted
            # requests arrives at once; Envoy would then answer 503.
            request_queue_size = 1024

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def last(self) -> dict:
        with self.lock:
            assert self.requests, "the upstream received nothing"
            return self.requests[-1]

    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def find(self, test_id: str) -> list[dict]:
        """The requests received with `X-Test-Id: test_id`."""
        with self.lock:
            return [r for r in self.requests if ("x-test-id", test_id) in r["headers"]]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def header_values(req: dict, name: str) -> list[str]:
    return [v for k, v in req["headers"] if k == name.lower()]


# --------------------------------------------------------------------------------------------
# Envoy
# --------------------------------------------------------------------------------------------
# The form of mlgate an Envoy runs unless told otherwise: "wasm" (mlgate.wasm in Envoy's Wasm
# filter) or "native" (libmlgate.so, the dynamic module of native/). conftest's `form` fixture
# sets it for the test modules marked `forms(...)`, so one suite runs against both.
FORM = "wasm"

ACCESS_LOG_FORMAT = (
    "id=%REQ(X-TEST-ID)% meta=%FILTER_STATE(wasm.mlgate:PLAIN)% api=%FILTER_STATE(wasm.mlgate.api:PLAIN)% op=%FILTER_STATE(wasm.mlgate.operation:PLAIN)% "
    "sub=%FILTER_STATE(wasm.mlgate.subscription:PLAIN)% product=%FILTER_STATE(wasm.mlgate.product:PLAIN)% "
    "params=%FILTER_STATE(wasm.mlgate.params:PLAIN)% status=%RESPONSE_CODE%\n"
)


def listener(listen: int, plugin_config: dict | str, access_log: str,
             env: dict[str, str] | None = None, wasm: Path = WASM, failure_policy: str = mh.FAILURE_POLICY,
             form: str | None = None, module: str = "mlgate") -> dict:
    """The gateway listener: mlgate (its plugin configuration as given) in front of the
    `azureml` cluster, every request in the access log with ACCESS_LOG_FORMAT. `form` "native":
    the dynamic module `module` (libmodule.so) with the same configuration, instead of `wasm`."""
    if isinstance(plugin_config, dict) and "export_metadata" not in plugin_config:
        # This access log reads the combined export, so the configuration turns it on (off by
        # default), as an operator's would. A string configuration is passed as it is.
        plugin_config = {**plugin_config, "export_metadata": "combined"}
    cfg = plugin_config if isinstance(plugin_config, str) else json.dumps(plugin_config)
    if (form or FORM) == "native":
        mlgate = native_filter(cfg, module)
    else:
        mlgate = mh.wasm_filter(wasm, cfg, vm_id="mlgate", env_keys=sorted(env or {}), failure_policy=failure_policy)
    lst = mh.listener("gateway", listen, [mlgate],
                      mh.prefix_route("azureml", timeout="30s"),
                      access_log=[mh.file_access_log(access_log, ACCESS_LOG_FORMAT)])
    return {"@type": "type.googleapis.com/envoy.config.listener.v3.Listener", **lst}


def bootstrap(admin: int, upstream: int, listeners: list[dict] | None, lds_path: str | None = None) -> dict:
    return mh.bootstrap(admin, listeners or [], [mh.static_cluster("azureml", upstream)],
                        node={"id": "mlgate-e2e", "cluster": "mlgate"}, lds_path=lds_path)


class Envoy:
    def __init__(self, plugin_config: dict | str, upstream: int, concurrency: int = 2,
                 env: dict[str, str] | None = None, wait: bool = True, dynamic: bool = False,
                 wasm: Path = WASM, failure_policy: str = mh.FAILURE_POLICY, form: str | None = None,
                 module: str = "mlgate"):
        """dynamic=True serves the listener over LDS from a file, so `reconfigure` can swap the
        plugin configuration in a running Envoy (the Wasm VM and its shared data are kept).
        `wasm` and `failure_policy` choose the module and Envoy's Wasm failure policy.
        `form`: "wasm" or "native" (default: FORM); `module`: the native module's name."""
        self.form = form or FORM
        self.module = module
        if self.form == "native":
            env = {**(env or {}), **native_env()}
        self.dir = tempfile.mkdtemp(prefix="mlgate-e2e-")
        self.port = free_port()
        self.admin = free_port()
        self.upstream = upstream
        self.concurrency = concurrency
        self.env = env
        self.wasm = wasm
        self.failure_policy = failure_policy
        self.access_log = os.path.join(self.dir, "access.log")
        self.log_path = os.path.join(self.dir, "envoy.log")
        self.proc: mh.Process | None = None
        self.version = 0
        self.dynamic = dynamic
        self.lds_dir = os.path.join(self.dir, "lds")
        os.makedirs(self.lds_dir)
        self.lds_path = os.path.join(self.lds_dir, "lds.json")
        self.write_config(plugin_config)
        self.start(wait)

    @property
    def config_path(self) -> str:
        return os.path.join(self.dir, "envoy.json")

    def listener(self, plugin_config) -> dict:
        return listener(self.port, plugin_config, self.access_log, self.env, self.wasm, self.failure_policy,
                        self.form, self.module)

    def write_config(self, plugin_config):
        lst = self.listener(plugin_config)
        if self.dynamic:
            self.write_lds(lst)
            b = bootstrap(self.admin, self.upstream, None, self.lds_path)
        else:
            lst = {k: v for k, v in lst.items() if k != "@type"}
            b = bootstrap(self.admin, self.upstream, [lst])
        mh.write_config(self.config_path, b)

    def write_lds(self, lst: dict):
        self.version += 1
        tmp = os.path.join(self.dir, "lds.json.tmp")
        with open(tmp, "w") as f:
            json.dump({"version_info": str(self.version), "resources": [lst]}, f)
        os.rename(tmp, self.lds_path)

    def start(self, wait: bool = True):
        """Starts Envoy; with `wait`, returns once the listener accepts and the admin says LIVE."""
        self.proc = mh.start_envoy(self.config_path, self.log_path, port=self.port if wait else None,
                                   admin=self.admin if wait else None, concurrency=self.concurrency,
                                   env=self.env, append=True, extra=["--file-flush-interval-msec", "20"])

    def wait_ready(self, timeout: float = 30):
        mh.wait_until(lambda: mh.envoy_ready(self.admin), timeout, self.proc, "ready")

    def wait_exit(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def log(self) -> str:
        return Path(self.log_path).read_text(errors="replace")

    def access_lines(self) -> list[str]:
        p = Path(self.access_log)
        return p.read_text().splitlines() if p.exists() else []

    def access_line(self, test_id: str, timeout: float = 10) -> str:
        """The access-log line of the request sent with `X-Test-Id: test_id` (without the id),
        once Envoy has flushed it."""
        deadline = time.time() + timeout
        prefix = f"id={test_id} "
        while time.time() < deadline:
            for line in self.access_lines():
                if line.startswith(prefix):
                    return line[len(prefix):]
            time.sleep(0.02)
        raise TimeoutError(f"no access-log line for {test_id}")

    def admin_get(self, path: str) -> str:
        return mh.admin_get(self.admin, path)

    def stat(self, name: str) -> int | None:
        """A stat's value. mlgate's metrics have the same names in both forms; Envoy prefixes
        them `wasmcustom.` (Wasm) or `dynamicmodulescustom.` (native): ask with the first."""
        if self.form == "native" and name.startswith("wasmcustom."):
            name = STATS_PREFIX + name.removeprefix("wasmcustom.")
        for line in self.admin_get(f"/stats?filter={urllib.parse.quote(name)}").splitlines():
            k, _, v = line.partition(": ")
            if k == name:
                return int(v)
        return None

    def prometheus_text(self) -> str:
        """/stats/prometheus with mlgate's metric names as the Wasm form has them: Envoy 1.40
        prints a dynamic module's stats with its namespace as a prefix
        (`envoy_dynamicmodulescustom_mlgate_calls{...}`), where it drops the Wasm one's
        (`mlgate_calls{...}`). Labels are the same."""
        text = self.admin_get("/stats/prometheus")
        if self.form == "native":
            text = re.sub(r"(?m)^(# (?:TYPE|HELP) )?envoy_dynamicmodulescustom_", r"\1", text)
        return text

    def reconfigure(self, plugin_config, expect: str = "success", timeout: float = 30):
        """Pushes a new plugin configuration over LDS and waits until Envoy applied it
        (expect="success") or refused it (expect="rejected")."""
        assert self.dynamic
        stat = f"listener_manager.lds.update_{expect}"
        before = self.stat(stat) or 0
        self.write_lds(self.listener(plugin_config))
        deadline = time.time() + timeout
        while time.time() < deadline:
            if (self.stat(stat) or 0) > before:
                # A replaced listener drains the old one; wait until only the new one serves.
                if expect == "success":
                    while (self.stat("listener_manager.total_listeners_draining") or 0) > 0 and time.time() < deadline:
                        time.sleep(0.05)
                return
            time.sleep(0.05)
        raise TimeoutError(f"LDS update not {expect}")

    def request(self, method: str, path: str, headers: dict | list | None = None, body: bytes | None = None,
                host: str = "gw.example.test") -> Response:
        return request(self.port, method, path, headers, body, host)

    def stop(self):
        if self.proc:
            self.proc.stop()


admin_post = mh.admin_post


def request(port: int, method: str, path: str, headers: dict | list | None = None, body: bytes | None = None,
            host: str = "gw.example.test") -> Response:
    """One HTTP/1.1 request to the gateway on 127.0.0.1:port, headers exactly as given."""
    return Response(*mh.http_request(port, method, path, headers, body, host=host))


class Response:
    def __init__(self, status: int | None, headers: list, body: bytes):
        self.status = status
        self.headers = headers
        self.body = body
        self.reset: str | None = None   # H2c: why the stream ended without a response
        self.sent: float | None = None   # simultaneous: when the request was written

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name.lower():
                return v
        return None

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        if self.reset:
            return f"<Response reset: {self.reset}>"
        return f"<Response {self.status} {self.body[:200]!r}>"


def simultaneous(port: int, requests: list[bytes], timeout: float = 30, at: float | None = None) -> list[Response]:
    """Opens one connection per request, then writes every request as close to simultaneously
    as one thread can, so Envoy's workers decide them concurrently. Returns the responses, each
    with `.sent`, the time.time() just before its request was written. `at`: write at that
    time.time() instead of 0.2 s after connecting."""
    socks = [connect(port, timeout) for _ in requests]
    # Let every worker accept its connections first.
    time.sleep(0.2 if at is None else max(0.0, at - time.time()))
    sent = []
    for s, raw in zip(socks, requests):
        sent.append(time.time())
        s.sendall(raw)
    out = []
    for s, t in zip(socks, sent):
        resp = http.client.HTTPResponse(s)
        resp.begin()
        body = resp.read()
        r = Response(resp.status, [(k.lower(), v) for k, v in resp.getheaders()], body)
        r.sent = t
        out.append(r)
        s.close()
    return out


def raw_request(method: str, path: str, headers: dict, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: gw.example.test", f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# --------------------------------------------------------------------------------------------
# Raw clients: any bytes in the request line and headers, HTTP/1.1 and h2c.
# --------------------------------------------------------------------------------------------
def connect(port: int, timeout: float) -> socket.socket:
    """A TCP connection to 127.0.0.1:port with TCP_NODELAY (every write goes out at once)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


class _Connection:
    """At most one open connection to 127.0.0.1:port, opened when needed; `connections`
    counts how many were opened."""

    def __init__(self, port: int, timeout: float = 10):
        self.port = port
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.connections = 0

    def _open(self):
        self.sock = connect(self.port, self.timeout)
        self.connections += 1


class RawHttp1(_Connection):
    """One keep-alive HTTP/1.1 connection that sends requests exactly as given (any bytes),
    and reconnects when Envoy closed it."""

    def _connect(self):
        self._open()
        self.fp = self.sock.makefile("rb")

    def close(self):
        if self.sock:
            self.fp.close()
            self.sock.close()
            self.sock = None

    def send(self, raw: bytes) -> Response:
        if self.sock is None:
            self._connect()
        try:
            self.sock.sendall(raw)
            resp = self._read()
        except (OSError, EOFError):
            # Closed by Envoy since the last response (idle, or after an error): once more.
            self.close()
            self._connect()
            self.sock.sendall(raw)
            resp = self._read()
        if (resp.header("connection") or "").lower() == "close":
            self.close()
        return resp

    def _read(self) -> Response:
        line = self.fp.readline()
        if not line:
            raise EOFError("connection closed")
        status = int(line.split(b" ", 2)[1])
        headers = []
        while True:
            h = self.fp.readline()
            if h in (b"\r\n", b"\n", b""):
                break
            k, _, v = h.decode("latin-1").partition(":")
            headers.append((k.strip().lower(), v.strip()))
        r = Response(status, headers, b"")
        if r.header("content-length") is not None:
            r.body = self.fp.read(int(r.header("content-length")))
        elif (r.header("transfer-encoding") or "").lower() == "chunked":
            body = b""
            while True:
                n = int(self.fp.readline().split(b";")[0], 16)
                if n == 0:
                    self.fp.readline()
                    break
                body += self.fp.read(n)
                self.fp.readline()
            r.body = body
        return r


def http1(method: str, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes = b"",
          host: bytes = b"gw.example.test") -> bytes:
    """An HTTP/1.1 request as bytes: the request target and headers exactly as given."""
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: " + host]
    lines += [k + b": " + v for k, v in headers]
    lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class H2c(_Connection):
    """One HTTP/2 cleartext connection (prior knowledge) through the `h2` package, requests
    one at a time; header names and values are sent as the bytes given (no validation).
    A stream or connection reset comes back as a Response with status None and `.reset`
    saying which; the next request then opens a new connection."""

    def _connect(self):
        import h2.config
        import h2.connection
        self._open()
        cfg = h2.config.H2Configuration(client_side=True, header_encoding=None, validate_outbound_headers=False,
                                        normalize_outbound_headers=False, validate_inbound_headers=False)
        self.conn = h2.connection.H2Connection(cfg)
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())

    def close(self):
        if self.sock:
            self.sock.close()
            self.sock = None

    def request(self, method: str, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes = b"",
                authority: bytes = b"gw.example.test", trailers: list[tuple[bytes, bytes]] | None = None) -> Response:
        """`trailers`: sent after the body, ending the request (no DATA frame ends it)."""
        import h2.events
        import h2.exceptions
        if self.sock is None:
            self._connect()
        sid = self.conn.get_next_available_stream_id()
        hs = [(b":method", method.encode()), (b":scheme", b"http"), (b":authority", authority), (b":path", target)]
        hs += [(k.lower(), v) for k, v in headers]
        try:
            self.conn.send_headers(sid, hs, end_stream=not body and not trailers)
            if body:
                self.conn.send_data(sid, body, end_stream=not trailers)
            if trailers:
                self.conn.send_headers(sid, trailers, end_stream=True)
            self.sock.sendall(self.conn.data_to_send())
        except (OSError, h2.exceptions.ProtocolError):
            self.close()
            return self._reset("connection closed before the request was sent")
        status, resp_headers, data = None, [], b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except OSError as e:
                self.close()
                return self._reset(f"connection error {e}")
            if not chunk:
                self.close()
                return self._reset("connection closed")
            for ev in self.conn.receive_data(chunk):
                if getattr(ev, "stream_id", None) not in (sid, None):
                    continue
                if isinstance(ev, h2.events.ResponseReceived):
                    resp_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in ev.headers]
                    status = int(dict(resp_headers)[":status"])
                elif isinstance(ev, h2.events.DataReceived):
                    data += ev.data
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, h2.events.StreamEnded):
                    self.sock.sendall(self.conn.data_to_send())
                    return Response(status, [(k, v) for k, v in resp_headers if not k.startswith(":")], data)
                elif isinstance(ev, h2.events.StreamReset):
                    self.sock.sendall(self.conn.data_to_send())
                    return self._reset(f"stream reset {ev.error_code!r}", keep=True)
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    self.close()
                    return self._reset(f"GOAWAY {ev.error_code!r}")
            out = self.conn.data_to_send()
            if out:
                self.sock.sendall(out)

    def _reset(self, why: str, keep: bool = False) -> Response:
        if not keep:
            self.close()
        r = Response(None, [], b"")
        r.reset = why
        return r
