"""Issue 12, shipping: the OCI image `make oci` writes (read back as Istio's fetcher reads it,
pushed to a real registry on loopback, loaded by Envoy) and the Istio manifests in deploy/istio
(validated against JSON schemas written from Istio's API reference)."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploytools import OCI_DIR, ROOT, WASM_PATH, Layout, Registry, have_registry_tools, plugin_from_layer, sha256
from harness import Envoy, Recorder

try:
    import jsonschema
    import yaml
except ImportError as e:  # not a skip: the manifest checks must run
    pytest.fail(f"{e.name} is missing: `make deploy-deps` installs jsonschema and PyYAML into .venv", pytrace=False)

BUILD = ROOT / "deploy" / "oci" / "build.py"
ISTIO = ROOT / "deploy" / "istio"
RRS = "/azureml-demo/workspaces/ws1/services/svc1/execute?api-version=2.0&details=true"


def build_layout(out: Path, *extra: str) -> dict:
    r = subprocess.run([sys.executable, str(BUILD), str(WASM_PATH), str(out), *extra], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return {"stdout": r.stdout}


def demo_config() -> dict:
    demo = yaml.safe_load((ROOT / "envoy" / "demo.yaml").read_text())
    hcm = demo["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    wasm = next(f for f in hcm["http_filters"] if f["name"] == "mlgate")
    return json.loads(wasm["typed_config"]["config"]["configuration"]["value"])


# --------------------------------------------------------------------------------------------
# The OCI image layout
# --------------------------------------------------------------------------------------------
def test_layout_is_the_compat_variant_and_reproducible(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    build_layout(a)
    time.sleep(1.1)  # a different wall-clock second: nothing of the clock may leak into a digest
    build_layout(b)
    for name in ("oci-layout", "index.json", "mlgate.wasm.sha256", "manifest.sha256"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), f"{name} differs between two builds"
    assert sorted(p.name for p in (a / "blobs" / "sha256").iterdir()) == sorted(p.name for p in (b / "blobs" / "sha256").iterdir())

    assert json.loads((a / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    layout = Layout(a)
    index = layout.index()
    assert index["schemaVersion"] == 2 and index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    manifest, digest = layout.manifest("0.1.0")
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["annotations"]["module.wasm.image/variant"] == "compat"
    assert len(manifest["layers"]) == 1, "the compat variant has exactly one layer"
    layer = manifest["layers"][0]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    # Every blob is present, named by its digest, with the size its descriptor says; nothing else.
    blobs = {p.name for p in (a / "blobs" / "sha256").iterdir()}
    assert blobs == {digest.split(":")[1], manifest["config"]["digest"].split(":")[1], layer["digest"].split(":")[1]}
    config = json.loads(layout.blob(manifest["config"]["digest"]))
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert len(layout.blob(manifest["config"]["digest"])) == manifest["config"]["size"]
    assert config["architecture"] and config["os"]
    import gzip
    tar = gzip.decompress(layout.blob(layer["digest"]))
    assert config["rootfs"] == {"type": "layers", "diff_ids": [f"sha256:{sha256(tar)}"]}
    # The two digests an operator needs.
    assert (a / "mlgate.wasm.sha256").read_text().strip() == sha256(WASM_PATH.read_bytes())
    assert (a / "manifest.sha256").read_text().strip() == digest.split(":")[1]


def test_made_layout_read_back_like_istio_then_served_by_envoy(tmp_path):
    """target/oci as `make oci` left it: index.json -> manifest -> last layer (tar+gzip) ->
    plugin.wasm, the same bytes as the built .wasm; Envoy 1.40 loads that file and serves."""
    assert (OCI_DIR / "index.json").exists(), "target/oci is missing: `make oci` writes it"
    layout = Layout(OCI_DIR)
    manifest, digest = layout.manifest()
    last = manifest["layers"][-1]
    assert last["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    plugin = layout.plugin_wasm()
    assert sha256(plugin) == sha256(WASM_PATH.read_bytes()), "target/oci is stale: run `make oci`"
    assert (OCI_DIR / "mlgate.wasm.sha256").read_text().strip() == sha256(plugin)
    assert (OCI_DIR / "manifest.sha256").read_text().strip() == digest.split(":")[1]

    extracted = tmp_path / "plugin.wasm"
    extracted.write_bytes(plugin)
    up = Recorder()
    cfg = {
        "apis": [{"id": "azureml-demo", "name": "Demo", "path": "azureml-demo", "service_url": "http://127.0.0.1:1",
                  "operations": "azureml-studio",
                  "backend_credentials": [{"workspace": "*", "service": "*", "api_key_env": "OCI_TEST_API_KEY"}]}],
        "products": [{"id": "p", "name": "P", "apis": ["azureml-demo"]}],
        "subscriptions": [{"id": "alice", "product": "p", "state": "active", "primary_key": "alice-oci-key"}],
    }
    # The harness's gateway (use_remote_address, FAIL_RELOAD) with the extracted module.
    e = Envoy(cfg, up.port, env={"OCI_TEST_API_KEY": "aml-from-env"}, wasm=extracted)
    try:
        r = e.request("POST", RRS, {"Ocp-Apim-Subscription-Key": "alice-oci-key", "Content-Type": "application/json"}, b"{}")
        assert r.status == 200, r
        got = up.last()
        assert got["path"] == "/workspaces/ws1/services/svc1/execute"
        assert ("authorization", "Bearer aml-from-env") in got["headers"]
        assert e.request("POST", RRS, {"Ocp-Apim-Subscription-Key": "wrong"}, b"{}").status == 401
        assert str(extracted) in e.admin_get("/config_dump")
    finally:
        e.stop()
        up.close()


def test_push_to_a_registry_and_pull_like_istio(tmp_path):
    """`make oci MLGATE_IMAGE=<registry>/mlgate:0.1.0` (what the Makefile's oci target runs),
    `skopeo copy` to a registry on loopback, then the pull Istio's fetcher does: manifest by tag
    (its digest is what WasmPlugin.sha256 must hold), last layer, plugin.wasm."""
    why = have_registry_tools()
    if why:
        pytest.skip(why)
    reg = Registry(tmp_path)
    try:
        image = f"127.0.0.1:{reg.port}/mlgate:0.1.0"
        out = tmp_path / "oci"
        build_layout(out, "--image", image)
        r = subprocess.run(["skopeo", "copy", "--preserve-digests", "--dest-tls-verify=false",
                            f"oci:{out}:0.1.0", f"docker://{image}"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr

        status, headers, raw = reg.get("/v2/mlgate/manifests/0.1.0",
                                       "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
        assert status == 200
        manifest = json.loads(raw)
        assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
        assert manifest["annotations"]["module.wasm.image/variant"] == "compat"
        digest = headers["docker-content-digest"]
        assert digest == f"sha256:{sha256(raw)}"
        assert digest.split(":")[1] == (out / "manifest.sha256").read_text().strip(), "the registry re-wrote the manifest"
        last = manifest["layers"][-1]
        status, _, blob = reg.get(f"/v2/mlgate/blobs/{last['digest']}")
        assert status == 200 and f"sha256:{sha256(blob)}" == last["digest"]
        assert sha256(plugin_from_layer(last["mediaType"], blob)) == sha256(WASM_PATH.read_bytes())

        # The pinned WasmPlugin names this image and its manifest digest.
        pinned = yaml.safe_load((out / "wasmplugin.yaml").read_text())
        assert pinned["spec"]["url"] == f"oci://{image}"
        assert pinned["spec"]["sha256"] == digest.split(":")[1]
        # skopeo agrees on what is in the registry.
        r = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{image}"], capture_output=True, timeout=60)
        assert r.returncode == 0 and sha256(r.stdout) == digest.split(":")[1]
    finally:
        reg.stop()


# --------------------------------------------------------------------------------------------
# Istio manifests
# --------------------------------------------------------------------------------------------
def schema(name: str) -> dict:
    s = json.loads((ISTIO / "schema" / name).read_text())
    jsonschema.Draft202012Validator.check_schema(s)
    return s


WASMPLUGIN_SCHEMA = "wasmplugin.schema.json"
MESH_SCHEMA = "istiooperator-meshconfig.schema.json"


def errors(doc: dict, schema_name: str) -> list[str]:
    v = jsonschema.Draft202012Validator(schema(schema_name), format_checker=jsonschema.FormatChecker())
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(doc)]


def wasmplugin() -> dict:
    return yaml.safe_load((ISTIO / "wasmplugin.yaml").read_text())


def mesh_config() -> dict:
    return yaml.safe_load((ISTIO / "mesh-config.yaml").read_text())


def test_manifests_are_valid():
    assert errors(wasmplugin(), WASMPLUGIN_SCHEMA) == []
    assert errors(mesh_config(), MESH_SCHEMA) == []
    pinned = OCI_DIR / "wasmplugin.yaml"
    assert pinned.exists(), "target/oci/wasmplugin.yaml is missing: `make oci` writes it"
    doc = yaml.safe_load(pinned.read_text())
    assert errors(doc, WASMPLUGIN_SCHEMA) == []
    assert doc["spec"]["sha256"] == (OCI_DIR / "manifest.sha256").read_text().strip()
    # Apart from url and sha256, the pinned copy is the committed manifest.
    committed = wasmplugin()
    for d in (doc, committed):
        d["spec"].pop("url")
        d["spec"].pop("sha256", None)
    assert doc == committed


def set_path(doc: dict, path: list, value) -> dict:
    d = copy.deepcopy(doc)
    cur = d
    for k in path[:-1]:
        cur = cur[k]
    cur[path[-1]] = value
    return d


def rename(doc: dict, path: list, new: str) -> dict:
    d = copy.deepcopy(doc)
    cur = d
    for k in path[:-1]:
        cur = cur[k]
    cur[new] = cur.pop(path[-1])
    return d


WASMPLUGIN_BAD = [
    ("typo failStrategy", lambda d: rename(d, ["spec", "failStrategy"], "failStrategey"), "failStrategey"),
    ("typo pluginConfig", lambda d: rename(d, ["spec", "pluginConfig"], "pluginconfig"), "pluginconfig"),
    ("typo vmConfig.env.valueFrom", lambda d: rename(d, ["spec", "vmConfig", "env", 0, "valueFrom"], "value_from"), "value_from"),
    ("typo selector.matchLabels", lambda d: rename(d, ["spec", "selector", "matchLabels"], "matchlabels"), "matchlabels"),
    ("bad phase", lambda d: set_path(d, ["spec", "phase"], "AUTHENTICATION"), "AUTHENTICATION"),
    ("bad failStrategy", lambda d: set_path(d, ["spec", "failStrategy"], "FAIL_CLOSED"), "FAIL_CLOSED"),
    ("bad valueFrom", lambda d: set_path(d, ["spec", "vmConfig", "env", 0, "valueFrom"], "SECRET"), "SECRET"),
    ("bad type", lambda d: set_path(d, ["spec", "type"], "HTTPS"), "HTTPS"),
    ("bad imagePullPolicy", lambda d: set_path(d, ["spec", "imagePullPolicy"], "always"), "always"),
    ("HOST env with a value", lambda d: set_path(d, ["spec", "vmConfig", "env", 0, "value"], "inline-secret"), "value"),
    ("url scheme", lambda d: set_path(d, ["spec", "url"], "ftp://registry.example.com/mlgate:0.1.0"), "ftp://"),
    ("sha256 not hex", lambda d: set_path(d, ["spec", "sha256"], "SHA256:ABC"), "SHA256:ABC"),
    ("selector and targetRefs", lambda d: set_path(d, ["spec", "targetRefs"], [{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "gw"}]), "should not be valid"),
    ("wrong apiVersion", lambda d: set_path(d, ["apiVersion"], "extensions.istio.io/v1"), "extensions.istio.io/v1"),
    ("missing url", lambda d: {**d, "spec": {k: v for k, v in d["spec"].items() if k != "url"}}, "'url' is a required property"),
]


@pytest.mark.parametrize("why,mutate,needle", WASMPLUGIN_BAD, ids=[c[0] for c in WASMPLUGIN_BAD])
def test_wasmplugin_schema_refuses(why, mutate, needle):
    errs = errors(mutate(wasmplugin()), WASMPLUGIN_SCHEMA)
    assert errs, f"{why}: accepted"
    assert any(needle in e for e in errs), errs


MESH_BAD = [
    ("typo extraStatTags", lambda d: rename(d, ["spec", "meshConfig", "defaultConfig", "extraStatTags"], "extraStatsTags")),
    ("typo proxyStatsMatcher", lambda d: rename(d, ["spec", "meshConfig", "defaultConfig", "proxyStatsMatcher"], "proxyStatMatcher")),
    ("tag not a label name", lambda d: set_path(d, ["spec", "meshConfig", "defaultConfig", "extraStatTags"], ["api", "op-eration"])),
    ("wrong kind", lambda d: set_path(d, ["kind"], "ProxyConfig")),
]


@pytest.mark.parametrize("why,mutate", MESH_BAD, ids=[c[0] for c in MESH_BAD])
def test_mesh_config_schema_refuses(why, mutate):
    assert errors(mutate(mesh_config()), MESH_SCHEMA), f"{why}: accepted"


def test_wasmplugin_settings():
    text = (ISTIO / "wasmplugin.yaml").read_text()
    spec = wasmplugin()["spec"]
    assert spec["selector"] == {"matchLabels": {"istio": "ingressgateway"}}
    assert spec["phase"] == "AUTHN"
    assert spec["failStrategy"] == "FAIL_RELOAD"
    # The comment says why, against both alternatives.
    before = text.split("failStrategy:")[0].rsplit("\n\n", 1)[-1]
    for word in ("FAIL_OPEN", "FAIL_CLOSE", "shared data", "unauthenticated"):
        assert word in before, f"the failStrategy comment does not mention {word}"
    assert spec["url"].startswith("oci://")
    assert spec["pluginName"] == "mlgate"
    # Every api_key_env of the configuration comes from the host, and no secret is inline.
    envs = {c["api_key_env"] for a in spec["pluginConfig"]["apis"] for c in a.get("backend_credentials", []) if "api_key_env" in c}
    assert envs and {e["name"] for e in spec["vmConfig"]["env"] if e.get("valueFrom") == "HOST"} >= envs
    assert all("value" not in e for e in spec["vmConfig"]["env"])


def test_plugin_config_is_the_demo_config_everywhere():
    demo = demo_config()
    assert wasmplugin()["spec"]["pluginConfig"] == demo, "deploy/istio/wasmplugin.yaml pluginConfig != envoy/demo.yaml"
    assert json.loads((ROOT / "deploy" / "demo.json").read_text()) == demo, "deploy/demo.json != envoy/demo.yaml"


def test_stat_tags_are_mlgates_metric_labels():
    tags = mesh_config()["spec"]["meshConfig"]["defaultConfig"]["extraStatTags"]
    assert tags == ["api", "operation", "product", "outcome", "subscription"]
    assert "wasmcustom." in mesh_config()["spec"]["meshConfig"]["defaultConfig"]["proxyStatsMatcher"]["inclusionPrefixes"]
