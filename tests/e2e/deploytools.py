"""Helpers for the deployment tests (OCI image, Istio manifests, the mlgate CLI): run the CLI,
start an Envoy from a complete bootstrap file (e.g. `mlgate envoy` output; harness.Envoy builds
its own), read an OCI image as Istio's fetcher does, run a registry on loopback. Paths,
processes and HTTP come from mlgate_harness (tools/mlgate_harness)."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import ssl
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import mlgate_harness as mh
from mlgate_harness import MLGATE, OCI_DIR, ROOT, free_port

WASM_PATH = mh.WASM
# `envoy --mode validate -c PATH` with these variables added to the environment.
validate_bootstrap = mh.validate_config

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
class BootstrapEnvoy:
    """A real Envoy started from a bootstrap file (or dict); stdout (the access log) and stderr
    (Envoy's log) go to separate files."""

    def __init__(self, bootstrap: Path | dict, env: dict | None = None, concurrency: int = 2, wait: bool = True):
        self.dir = Path(tempfile.mkdtemp(prefix="mlgate-deploy-"))
        if isinstance(bootstrap, dict):
            bootstrap = mh.write_config(self.dir / "bootstrap.json", bootstrap)
        self.path = Path(bootstrap)
        doc = json.loads(self.path.read_text())
        self.admin = doc["admin"]["address"]["socket_address"]["port_value"]
        self.ports = [l["address"]["socket_address"]["port_value"] for l in doc["static_resources"]["listeners"]]
        self.stdout_path = self.dir / "stdout.log"
        self.log_path = self.dir / "envoy.log"
        self.proc = mh.start_envoy(self.path, self.log_path, port=None, admin=self.admin if wait else None,
                                   concurrency=concurrency, env=env, stdout_path=self.stdout_path,
                                   extra=["--file-flush-interval-msec", "20"])

    def wait_ready(self, timeout: float = 60):
        mh.wait_until(lambda: mh.envoy_ready(self.admin), timeout, self.proc, "ready")

    def wait_exit(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout)

    def log(self) -> str:
        return self.proc.log()

    def access_log(self, n: int | None = None, timeout: float = 10) -> list[dict]:
        """The JSON access-log lines Envoy wrote to stdout (waiting for at least n of them)."""
        deadline = time.time() + timeout
        while True:
            lines = [json.loads(l) for l in self.stdout_path.read_text().splitlines() if l.startswith("{")]
            if n is None or len(lines) >= n or time.time() > deadline:
                return lines
            time.sleep(0.05)

    def admin_get(self, path: str) -> str:
        return mh.admin_get(self.admin, path)

    def request(self, method: str, path: str, headers: dict | None = None, body: bytes | None = None,
                host: str = "gw.example.test", port: int | None = None, tls: ssl.SSLContext | None = None):
        """(status, headers as a dict of lower-case names, body). With `tls`, HTTPS: the
        certificate is verified for 127.0.0.1 (self_signed_cert puts it in the SAN)."""
        status, hs, data = mh.http_request(port or self.ports[0], method, path, headers, body, host=host, tls=tls)
        return status, dict(hs), data

    def stop(self):
        self.proc.stop()


# --------------------------------------------------------------------------------------------
# A registry on loopback
# --------------------------------------------------------------------------------------------
def have_registry_tools() -> str | None:
    missing = [t for t in ("skopeo", "docker-registry") if shutil.which(t) is None]
    return None if not missing else f"{' and '.join(missing)} not installed (Debian packages; `make deploy-deps` installs them)"


class Registry:
    """Debian's docker-registry (the CNCF distribution registry) on a loopback port."""

    def __init__(self, root: Path):
        self.port = free_port()
        cfg = root / "registry.yml"
        cfg.write_text(json.dumps({
            "version": 0.1, "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(root / "data")}},
            "http": {"addr": f"127.0.0.1:{self.port}", "secret": "mlgate-test"},
        }))
        self.proc = mh.Process(["docker-registry", "serve", cfg], root / "registry.log", timeout=30,
                               ready=lambda: self.get("/v2/")[0] == 200)

    def get(self, path: str, accept: str | None = None) -> tuple[int, dict, bytes]:
        status, headers, body = mh.http_get(self.port, path, {"Accept": accept} if accept else None, timeout=10)
        return status, dict(headers), body

    def stop(self):
        self.proc.stop()


def tls_client_context(cafile: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cafile))


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1 made with the openssl CLI, valid one day."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


__all__ = ["ROOT", "MLGATE", "WASM_PATH", "OCI_DIR", "Layout", "BootstrapEnvoy", "Registry", "free_port", "mlgate",
           "have_registry_tools", "validate_bootstrap", "sha256", "self_signed_cert", "tls_client_context",
           "plugin_from_layer"]
