"""Helpers for the deployment tests (OCI image, Istio manifests, the mlgate CLI): run the CLI,
start an Envoy from a complete bootstrap file, read an OCI image as Istio's fetcher does.
Independent of harness.Envoy, which builds its own bootstrap."""
from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import os
import ssl
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

from harness import free_port

ROOT = Path(__file__).resolve().parents[2]
ENVOY_BIN = ROOT / ".venv" / "bin" / "envoy"
MLGATE = ROOT / "target" / "release" / "mlgate"
WASM_PATH = Path(os.environ.get("MLGATE_WASM") or ROOT / "target" / "wasm32-wasip1" / "release" / "mlgate.wasm")
OCI_DIR = ROOT / "target" / "oci"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def mlgate(*args: str, stdin: bytes | None = None, env: dict | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    """Runs target/release/mlgate as a user would; returns the finished process (bytes)."""
    assert MLGATE.exists(), f"{MLGATE} is missing: `make cli` builds it"
    return subprocess.run([str(MLGATE), *args], input=stdin, capture_output=True, timeout=timeout,
                          env=env if env is not None else os.environ.copy())


# --------------------------------------------------------------------------------------------
# OCI: read an image the way Istio's image fetcher does (pkg/wasm/imagefetcher.go): the
# manifest's last layer, which must be tar+gzip, gunzipped and untarred, the file plugin.wasm.
# --------------------------------------------------------------------------------------------
def plugin_from_layer(media_type: str, blob: bytes) -> bytes:
    assert media_type in (OCI_LAYER, DOCKER_LAYER), f"layer media type {media_type}"
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob)), mode="r:") as tar:
        for member in tar:
            if os.path.basename(member.name) == "plugin.wasm":
                f = tar.extractfile(member)
                assert f is not None
                return f.read()
    raise AssertionError("plugin.wasm not found in the last layer")


class Layout:
    """An OCI image layout directory."""

    def __init__(self, path: Path):
        self.path = path

    def blob(self, digest: str) -> bytes:
        algo, _, hexd = digest.partition(":")
        assert algo == "sha256"
        data = (self.path / "blobs" / "sha256" / hexd).read_bytes()
        assert sha256(data) == hexd, f"blob {digest} does not hash to its name"
        return data

    def index(self) -> dict:
        return json.loads((self.path / "index.json").read_text())

    def manifest_descriptor(self, tag: str | None = None) -> dict:
        ms = self.index()["manifests"]
        if tag is not None:
            ms = [m for m in ms if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
        assert len(ms) == 1, ms
        return ms[0]

    def manifest(self, tag: str | None = None) -> tuple[dict, str]:
        d = self.manifest_descriptor(tag)
        raw = self.blob(d["digest"])
        assert len(raw) == d["size"]
        return json.loads(raw), d["digest"]

    def plugin_wasm(self, tag: str | None = None) -> bytes:
        m, _ = self.manifest(tag)
        last = m["layers"][-1]
        blob = self.blob(last["digest"])
        assert len(blob) == last["size"]
        return plugin_from_layer(last["mediaType"], blob)


# --------------------------------------------------------------------------------------------
# Envoy from a complete bootstrap file (e.g. `mlgate envoy` output)
# --------------------------------------------------------------------------------------------
def minimal_bootstrap(wasm: Path, plugin_config: str, listen: int, admin: int, upstream: int,
                      env_keys: list[str] | None = None) -> dict:
    """The smallest Envoy bootstrap running mlgate from `wasm`, everything to one upstream."""
    vm = {"vm_id": "mlgate", "runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": str(wasm)}}}
    if env_keys:
        vm["environment_variables"] = {"host_env_keys": env_keys}
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "gw",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": "up", "timeout": "30s"}}]}]},
        "http_filters": [
            {"name": "mlgate", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {"name": "mlgate", "root_id": "mlgate", "vm_config": vm, "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue", "value": plugin_config}}}},
            {"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
        ],
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{"name": "gw", "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                           "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                           "typed_config": hcm}]}]}],
            "clusters": [{"name": "up", "type": "STATIC", "connect_timeout": "2s", "load_assignment": {
                "cluster_name": "up", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": upstream}}}}]}]}}],
        },
    }


def validate_bootstrap(path: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(ENVOY_BIN), "--mode", "validate", "-c", str(path)], capture_output=True, timeout=120,
                          env={**os.environ, **(env or {})})


class BootstrapEnvoy:
    """A real Envoy started from a bootstrap file; stdout (the access log) and stderr (Envoy's
    log) go to separate files."""

    def __init__(self, bootstrap: Path | dict, env: dict | None = None, concurrency: int = 2, wait: bool = True):
        self.dir = Path(tempfile.mkdtemp(prefix="mlgate-deploy-"))
        if isinstance(bootstrap, dict):
            path = self.dir / "bootstrap.json"
            path.write_text(json.dumps(bootstrap))
            bootstrap = path
        self.path = Path(bootstrap)
        doc = json.loads(self.path.read_text())
        self.admin = doc["admin"]["address"]["socket_address"]["port_value"]
        self.ports = [l["address"]["socket_address"]["port_value"] for l in doc["static_resources"]["listeners"]]
        self.stdout_path = self.dir / "stdout.log"
        self.log_path = self.dir / "envoy.log"
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(ENVOY_BIN), "-c", str(self.path), "--concurrency", str(concurrency), "--disable-hot-restart",
             "--file-flush-interval-msec", "20", "--log-level", "info"],
            stdout=self._out, stderr=self._err, env={**os.environ, **(env or {})})
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"envoy exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.admin, timeout=2)
                c.request("GET", "/ready")
                if c.getresponse().read().decode().strip() == "LIVE":
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError("envoy not ready")

    def wait_exit(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def access_log(self, n: int | None = None, timeout: float = 10) -> list[dict]:
        """The JSON access-log lines Envoy wrote to stdout (waiting for at least n of them)."""
        deadline = time.time() + timeout
        while True:
            lines = [json.loads(l) for l in self.stdout_path.read_text().splitlines() if l.startswith("{")]
            if n is None or len(lines) >= n or time.time() > deadline:
                return lines
            time.sleep(0.05)

    def admin_get(self, path: str) -> str:
        c = http.client.HTTPConnection("127.0.0.1", self.admin, timeout=5)
        c.request("GET", path)
        return c.getresponse().read().decode()

    def request(self, method: str, path: str, headers: dict | None = None, body: bytes | None = None,
                host: str = "gw.example.test", port: int | None = None, tls: ssl.SSLContext | None = None):
        port = port or self.ports[0]
        if tls is not None:
            # The certificate is verified for 127.0.0.1 (self_signed_cert puts it in the SAN).
            c = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=tls)
        else:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        c.putheader("Host", host)
        for k, v in (headers or {}).items():
            c.putheader(k, v)
        if body is not None:
            c.putheader("Content-Length", str(len(body)))
        c.endheaders(body)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        self._err.close()


def tls_client_context(cafile: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cafile))


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1 made with the openssl CLI, valid one day."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


__all__ = ["ROOT", "ENVOY_BIN", "MLGATE", "WASM_PATH", "OCI_DIR", "Layout", "BootstrapEnvoy", "free_port", "mlgate",
           "minimal_bootstrap", "validate_bootstrap", "sha256", "self_signed_cert", "tls_client_context", "plugin_from_layer"]
