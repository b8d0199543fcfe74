"""The README's "Deploy on plain Envoy" and "Deploy on Istio" commands, run as written (ports,
output paths and the registry moved to free loopback ones). A command added to either section
without a case here fails the test."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess

import pytest

import mlgate_harness as mh
from deploytools import ROOT, WASM_PATH, Layout, Registry, free_port, have_registry_tools, plugin_from_layer, sha256

README = ROOT / "README.md"


def commands(section: str) -> list[str]:
    text = README.read_text()
    m = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## )", text, re.S | re.M)
    assert m, f"README has no section {section!r}"
    blocks = re.findall(r"```sh\n(.*?)```", m.group(1), re.S)
    assert blocks, f"no ```sh block in {section!r}"
    return [l for b in blocks for l in b.splitlines() if l.strip()]


def sh(cmd: str, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", cmd], cwd=ROOT, env=env, capture_output=True, timeout=timeout)


def run_make(cmd: str, env: dict) -> None:
    """Runs a README `make` line. With MLGATE_TEST_NO_MAKE=1 (a developer's checkout where
    someone else is mid-build) only its own recipe lines run, from `make -n`, not the builds."""
    if os.environ.get("MLGATE_TEST_NO_MAKE") == "1":
        r = sh(cmd.replace("make ", "make -n ", 1), env)
        assert r.returncode == 0, r.stderr.decode()[-3000:]
        for line in r.stdout.decode().splitlines():
            if line.startswith("python3 deploy/oci/build.py"):
                r2 = sh(line, env)
                assert r2.returncode == 0, r2.stderr.decode()
        return
    r = sh(cmd, env, timeout=1800)
    assert r.returncode == 0, r.stderr.decode()[-3000:]


def test_deploy_on_plain_envoy(tmp_path):
    cmds = commands("Deploy on plain Envoy")
    env = {k: v for k, v in os.environ.items() if k != "AZUREML_API_KEY"}
    listen, admin = free_port(), free_port()
    subst = [("envoy.json", str(tmp_path / "envoy.json")), ("127.0.0.1:8080", f"127.0.0.1:{listen}"),
             ("127.0.0.1:9901", f"127.0.0.1:{admin}")]
    demo = json.loads((ROOT / "deploy" / "demo.json").read_text())
    seen = set()
    for raw in cmds:
        cmd = raw
        for a, b in subst:
            cmd = cmd.replace(a, b)
        if cmd.startswith("make "):
            run_make(cmd, env)
            seen.add("make")
        elif cmd.startswith("export "):
            name, _, value = cmd[len("export "):].partition("=")
            env[name] = shlex.split(value)[0]
            seen.add("export")
        elif " check " in cmd:
            r = sh(cmd, env)
            assert r.returncode == 0, r.stderr
            assert b"valid mlgate configuration" in r.stdout
            seen.add("check")
        elif cmd.endswith(" key new"):
            r = sh(cmd, env)
            assert r.returncode == 0 and re.fullmatch(rb"key [0-9a-f]{64}\nsha256 [0-9a-f]{64}\n", r.stdout), r.stdout
            seen.add("key new")
        elif " key hash" in cmd:
            r = sh(cmd, env)
            assert r.returncode == 0
            # As the README says: bob's primary_key_sha256 in the demo configuration.
            bob = next(s for s in demo["subscriptions"] if s["id"] == "bob")
            assert r.stdout.decode().strip() == bob["primary_key_sha256"]
            seen.add("key hash")
        elif " envoy " in cmd and ">" in cmd:
            r = sh(cmd, env)
            assert r.returncode == 0, r.stderr
            doc = json.loads((tmp_path / "envoy.json").read_text())
            assert doc["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] == listen
            seen.add("envoy")
        elif "--mode validate" in cmd:
            r = sh(cmd, env)
            assert r.returncode == 0, r.stderr.decode()[-2000:]
            seen.add("validate")
        elif cmd.startswith(".venv/bin/envoy -c"):
            # The command as written, in exactly the environment built above; ready once the
            # admin says LIVE.
            p = mh.Process(shlex.split(cmd) + ["--disable-hot-restart"], tmp_path / "envoy.log", cwd=ROOT, env=env,
                           inherit_env=False, ready=lambda: mh.envoy_ready(admin))
            try:
                status, _, body = mh.http_request(
                    listen, "POST", "/azureml-demo/workspaces/ws/services/svc/execute?api-version=2.0&details=true",
                    body=b"{}", timeout=10)
                assert status == 401 and json.loads(body)["statusCode"] == 401  # mlgate answers
            finally:
                p.stop()
            seen.add("run")
        else:
            pytest.fail(f"README command without a test case: {raw}")
    assert seen == {"make", "export", "check", "key new", "key hash", "envoy", "validate", "run"}, seen


def test_deploy_on_istio(tmp_path):
    why = have_registry_tools()
    if why:
        pytest.skip(why)
    cmds = commands("Deploy on Istio")
    reg = Registry(tmp_path)
    out = tmp_path / "oci"
    try:
        registry = f"127.0.0.1:{reg.port}"
        env = dict(os.environ)
        seen = set()
        for raw in cmds:
            cmd = raw.replace("registry.example.com", registry).replace("target/oci", str(out))
            if cmd.startswith("make oci"):
                # OCI_DIR moves the layout out of target/ (the Makefile's own variable).
                run_make(cmd + f" OCI_DIR={out}", env)
                pinned = (out / "wasmplugin.yaml").read_text()
                assert f"url: oci://{registry}/mlgate:0.1.0" in pinned
                seen.add("make oci")
            elif cmd.startswith("skopeo copy"):
                r = sh(cmd.replace("skopeo copy", "skopeo copy --dest-tls-verify=false", 1), env)
                assert r.returncode == 0, r.stderr
                # What Istio then pulls: the manifest by tag, whose digest the WasmPlugin pins.
                status, _, raw_manifest = reg.get("/v2/mlgate/manifests/0.1.0", "application/vnd.oci.image.manifest.v1+json")
                assert status == 200
                digest = sha256(raw_manifest)
                assert f"sha256: {digest}" in (out / "wasmplugin.yaml").read_text()
                layer = json.loads(raw_manifest)["layers"][-1]
                _, _, blob = reg.get(f"/v2/mlgate/blobs/{layer['digest']}")
                assert sha256(plugin_from_layer(layer["mediaType"], blob)) == sha256(WASM_PATH.read_bytes())
                assert Layout(out).manifest()[1] == f"sha256:{digest}"
                seen.add("skopeo")
            elif cmd.startswith("kubectl apply -f ") or cmd.startswith("istioctl install -f "):
                # No cluster here: the file exists and test_deploy validates it against the schema.
                path = cmd.split(" -f ", 1)[1].strip()
                assert os.path.exists(path if os.path.isabs(path) else ROOT / path), path
                seen.add(cmd.split()[0])
            else:
                pytest.fail(f"README command without a test case: {raw}")
        assert seen == {"make oci", "skopeo", "kubectl", "istioctl"}, seen
    finally:
        reg.stop()
