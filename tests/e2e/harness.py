"""Test harness: real processes on loopback. Starts the Envoy from .venv with the built
mlgate.wasm, a recording upstream, azureml-sim and Azurite, and talks real HTTP to them."""
from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENVOY = ROOT / ".venv" / "bin" / "envoy"
WASM = Path(os.environ.get("MLGATE_WASM") or ROOT / "target" / "wasm32-wasip1" / "release" / "mlgate.wasm")
SIM = ROOT / "target" / "release" / "azureml-sim"
AZURITE = ROOT / ".tools" / "node" / "node_modules" / ".bin" / "azurite-blob"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port}")


# --------------------------------------------------------------------------------------------
# A recording upstream: answers 200 with a small JSON body and keeps what it received.
# --------------------------------------------------------------------------------------------
class Recorder:
    def __init__(self, status: int = 200, body: bytes = b'{"ok":true}'):
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self):
                n = int(self.headers.get("content-length") or 0)
                data = self.rfile.read(n) if n else b""
                url = urllib.parse.urlsplit(self.path)
                with recorder.lock:
                    recorder.requests.append({
                        "method": self.command,
                        "path": url.path,
                        "query": url.query,
                        "raw_path": self.path,
                        "headers": [(k.lower(), v) for k, v in self.headers.items()],
                        "body": data,
                    })
                self.send_response(status)
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

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def header_values(req: dict, name: str) -> list[str]:
    return [v for k, v in req["headers"] if k == name.lower()]


# --------------------------------------------------------------------------------------------
# Envoy
# --------------------------------------------------------------------------------------------
ACCESS_LOG_FORMAT = (
    "id=%REQ(X-TEST-ID)% meta=%FILTER_STATE(wasm.mlgate:PLAIN)% api=%FILTER_STATE(wasm.mlgate.api:PLAIN)% op=%FILTER_STATE(wasm.mlgate.operation:PLAIN)% "
    "sub=%FILTER_STATE(wasm.mlgate.subscription:PLAIN)% product=%FILTER_STATE(wasm.mlgate.product:PLAIN)% "
    "params=%FILTER_STATE(wasm.mlgate.params:PLAIN)% status=%RESPONSE_CODE%\n"
)


def listener(listen: int, plugin_config: dict | str, access_log: str,
             env: dict[str, str] | None = None, wasm: Path = WASM) -> dict:
    cfg = plugin_config if isinstance(plugin_config, str) else json.dumps(plugin_config)
    vm_config = {
        "vm_id": "mlgate",
        "runtime": "envoy.wasm.runtime.v8",
        "code": {"local": {"filename": str(wasm)}},
    }
    if env:
        # host_env_keys: the VM sees these variables of Envoy's own environment, so their
        # values never appear in Envoy's configuration (or its config dump).
        vm_config["environment_variables"] = {"host_env_keys": sorted(env)}
    return {
                "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
                "name": "gateway",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "gateway",
                        "access_log": [{
                            "name": "envoy.access_loggers.file",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                                "path": access_log,
                                "log_format": {"text_format_source": {"inline_string": ACCESS_LOG_FORMAT}},
                            },
                        }],
                        "route_config": {"virtual_hosts": [{
                            "name": "all", "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "azureml", "timeout": "30s"}}],
                        }]},
                        "http_filters": [
                            {"name": "mlgate", "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                                "config": {
                                    "name": "mlgate", "root_id": "mlgate", "vm_config": vm_config,
                                    "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": cfg},
                                },
                            }},
                            {"name": "envoy.filters.http.router", "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
                        ],
                    },
                }]}],
    }


def bootstrap(admin: int, upstream: int, listeners: list[dict] | None, lds_path: str | None = None) -> dict:
    b = {
        "node": {"id": "mlgate-e2e", "cluster": "mlgate"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": listeners or [],
            "clusters": [{
                "name": "azureml", "type": "STATIC", "connect_timeout": "2s",
                "load_assignment": {"cluster_name": "azureml", "endpoints": [{"lb_endpoints": [{"endpoint": {
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream}}}}]}]},
            }],
        },
    }
    if lds_path:
        b["dynamic_resources"] = {"lds_config": {
            "path_config_source": {"path": lds_path, "watched_directory": {"path": os.path.dirname(lds_path)}},
            "resource_api_version": "V3"}}
    return b


class Envoy:
    def __init__(self, plugin_config: dict | str, upstream: int, concurrency: int = 2,
                 env: dict[str, str] | None = None, wait: bool = True, dynamic: bool = False):
        """dynamic=True serves the listener over LDS from a file, so `reconfigure` can swap the
        plugin configuration in a running Envoy (the Wasm VM and its shared data are kept)."""
        self.dir = tempfile.mkdtemp(prefix="mlgate-e2e-")
        self.port = free_port()
        self.admin = free_port()
        self.upstream = upstream
        self.concurrency = concurrency
        self.env = env
        self.access_log = os.path.join(self.dir, "access.log")
        self.log_path = os.path.join(self.dir, "envoy.log")
        self.proc: subprocess.Popen | None = None
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

    def write_config(self, plugin_config):
        lst = listener(self.port, plugin_config, self.access_log, self.env)
        if self.dynamic:
            self.write_lds(lst)
            b = bootstrap(self.admin, self.upstream, None, self.lds_path)
        else:
            lst = {k: v for k, v in lst.items() if k != "@type"}
            b = bootstrap(self.admin, self.upstream, [lst])
        with open(self.config_path, "w") as f:
            json.dump(b, f)

    def write_lds(self, lst: dict):
        self.version += 1
        tmp = os.path.join(self.dir, "lds.json.tmp")
        with open(tmp, "w") as f:
            json.dump({"version_info": str(self.version), "resources": [lst]}, f)
        os.rename(tmp, self.lds_path)

    def start(self, wait: bool = True):
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(ENVOY), "-c", self.config_path, "--concurrency", str(self.concurrency),
             "--disable-hot-restart", "--file-flush-interval-msec", "20", "--log-level", "info", "--component-log-level", "wasm:info"],
            stdout=self.logf, stderr=subprocess.STDOUT, env={**os.environ, **(self.env or {})})
        if wait:
            wait_port(self.port, 60, self.proc)
            self.wait_ready()

    def wait_ready(self, timeout: float = 30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if self.admin_get("/ready").strip() == "LIVE":
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError("envoy not ready")

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
        c = http.client.HTTPConnection("127.0.0.1", self.admin, timeout=5)
        c.request("GET", path)
        return c.getresponse().read().decode()

    def stat(self, name: str) -> int | None:
        for line in self.admin_get(f"/stats?filter={urllib.parse.quote(name)}").splitlines():
            k, _, v = line.partition(": ")
            if k == name:
                return int(v)
        return None

    def reconfigure(self, plugin_config, expect: str = "success", timeout: float = 30):
        """Pushes a new plugin configuration over LDS and waits until Envoy applied it
        (expect="success") or refused it (expect="rejected")."""
        assert self.dynamic
        stat = f"listener_manager.lds.update_{expect}"
        before = self.stat(stat) or 0
        self.write_lds(listener(self.port, plugin_config, self.access_log, self.env))
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
                host: str = "gw.example.test"):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        hs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        c.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        c.putheader("Host", host)
        for k, v in hs:
            c.putheader(k, v)
        if body is not None:
            c.putheader("Content-Length", str(len(body)))
        c.endheaders(body)
        r = c.getresponse()
        data = r.read()
        c.close()
        return Response(r.status, [(k.lower(), v) for k, v in r.getheaders()], data)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "logf", None):
            self.logf.close()


def admin_post(port: int, path: str) -> str:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("POST", path)
    return c.getresponse().read().decode()


class Response:
    def __init__(self, status: int, headers: list, body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name.lower():
                return v
        return None

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Response {self.status} {self.body[:200]!r}>"


def simultaneous(port: int, requests: list[bytes], timeout: float = 30) -> list[Response]:
    """Opens one connection per request, then writes every request as close to simultaneously
    as one thread can, so Envoy's workers decide them concurrently. Returns the responses."""
    import selectors
    socks = []
    for _ in requests:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(s)
    time.sleep(0.2)  # let every worker accept its connections first
    for s, raw in zip(socks, requests):
        s.sendall(raw)
    out = []
    for s in socks:
        resp = http.client.HTTPResponse(s)
        resp.begin()
        body = resp.read()
        out.append(Response(resp.status, [(k.lower(), v) for k, v in resp.getheaders()], body))
        s.close()
    return out


def raw_request(method: str, path: str, headers: dict, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: gw.example.test", f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
