"""Fleet-wide limits: the processes behind `limits_store: {"rls": ...}` (Debian's redis-server
and target/release/mlgate-rls), the Envoy cluster that reaches mlgate-rls (gRPC needs HTTP/2),
and a TCP relay that can delay traffic (an RLS slower than the filter's timeout). Used by
tests/e2e/test_fleet.py, bench/run.py and `make run-fleet` (envoy/fleet.py).

Import by name: `from mlgate_harness import fleet`.
"""
from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

from .paths import ROOT
from .process import Process

RLS = ROOT / "target" / "release" / "mlgate-rls"
REDIS_SERVER = Path(shutil.which("redis-server") or "/usr/bin/redis-server")
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def grpc_cluster(name: str, port: int, address: str = "127.0.0.1") -> dict:
    """A static cluster speaking HTTP/2 (cleartext), as gRPC needs."""
    return {
        "name": name, "type": "STATIC", "connect_timeout": "1s",
        "typed_extension_protocol_options": {HTTP_PROTOCOL_OPTIONS: {
            "@type": f"type.googleapis.com/{HTTP_PROTOCOL_OPTIONS}",
            "explicit_http_config": {"http2_protocol_options": {}}}},
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": address, "port_value": port}}}}]}]},
    }


def rls_store(cluster: str = "rls", domain: str = "mlgate", timeout_ms: int = 50, on_failure: str = "deny",
              **more) -> dict:
    """The plugin configuration's `limits_store` for a rate limit service."""
    return {"rls": {"cluster": cluster, "domain": domain, "timeout_ms": timeout_ms, "on_failure": on_failure, **more}}


def start_redis(workdir, port: int, log_path, *, fsync: str = "always") -> Process:
    """redis-server on 127.0.0.1:port with its append-only file in `workdir`, so counts survive
    a kill -9 and a restart (`fsync`: "always" for tests, "everysec" for throughput)."""
    os.makedirs(workdir, exist_ok=True)
    return Process([REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
                    "--appendonly", "yes", "--appendfsync", fsync, "--save", "", "--protected-mode", "yes"],
                   log_path, port=port, append=True)


def start_rls(config_path, port: int, redis_port: int, log_path, *, extra=()) -> Process:
    """mlgate-rls serving on 127.0.0.1:port, counting in the Redis on redis_port."""
    return Process([RLS, "--listen", f"127.0.0.1:{port}", "--redis", f"redis://127.0.0.1:{redis_port}",
                    "--config", str(config_path), *extra], log_path, port=port, append=True)


def kill(proc: Process) -> None:
    """SIGKILL (no clean shutdown), and wait for it."""
    if proc.popen.poll() is None:
        proc.popen.kill()
        proc.popen.wait()


class Relay:
    """A TCP relay on 127.0.0.1 in front of `target_port`. `delay` seconds are added before
    every chunk forwarded in either direction (0: plain relay), so a healthy service can be
    made slower than a client's timeout and fast again without restarting anything."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.delay = 0.0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                client.close()
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.settimeout(None)
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self.delay:
                    time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self):
        self.closed = True
        self.sock.close()
