"""Issue 12, the `mlgate` command (target/release/mlgate), run as a user runs it: exit codes,
stdout/stderr, --help; `check` agrees with the filter in Envoy on every refusal; `key new` /
`key hash`; `envoy` prints a bootstrap that Envoy validates, starts and serves mlgate with."""
from __future__ import annotations

import copy
import hashlib
import json
import re
import subprocess
from pathlib import Path

import pytest

from deploytools import ROOT, WASM_PATH, BootstrapEnvoy, free_port, mlgate, validate_bootstrap
from harness import Envoy, Recorder

DEMO = ROOT / "deploy" / "demo.json"
RRS = "/azureml-demo/workspaces/ws1/services/svc1/execute?api-version=2.0&details=true"
REFUSAL = re.compile(r"^invalid mlgate configuration: \S+: .+$")
LABELS = ["api", "operation", "product", "outcome", "subscription"]


def env_without(*names: str) -> dict:
    import os
    return {k: v for k, v in os.environ.items() if k not in names}


def env_with(**kv) -> dict:
    import os
    return {**os.environ, **kv}


# --------------------------------------------------------------------------------------------
# Conventions: --help, usage errors, exit codes
# --------------------------------------------------------------------------------------------
def test_help_lists_the_subcommands():
    r = mlgate("--help")
    assert r.returncode == 0 and r.stderr == b""
    out = r.stdout.decode()
    for sub in ("check", "key", "envoy"):
        assert re.search(rf"^\s+{sub}\s", out, re.M), out
    for args in (["check", "--help"], ["key", "--help"], ["key", "new", "--help"], ["key", "hash", "--help"], ["envoy", "--help"]):
        r = mlgate(*args)
        assert r.returncode == 0, args
        assert b"Usage: mlgate" in r.stdout
    envoy_help = mlgate("envoy", "--help").stdout.decode()
    for flag in ("--wasm", "--listen", "--admin", "--tls-cert", "--tls-key"):
        assert flag in envoy_help
    assert mlgate("--version").stdout.decode().startswith("mlgate ")


@pytest.mark.parametrize("args", [[], ["frobnicate"], ["check"], ["key"], ["envoy", str(DEMO), "--listen", "not-an-address"],
                                  ["envoy", str(DEMO), "--tls-cert", "c.pem"]])
def test_usage_errors_exit_2_on_stderr(args):
    r = mlgate(*args)
    assert r.returncode == 2, (args, r)
    assert r.stdout == b""
    assert b"Usage: mlgate" in r.stderr or b"error:" in r.stderr


def test_unreadable_file_is_exit_2_not_a_refusal(tmp_path):
    r = mlgate("check", str(tmp_path / "missing.json"))
    assert r.returncode == 2
    assert r.stderr.decode().startswith(f"mlgate: cannot read {tmp_path / 'missing.json'}: ")
    assert r.stdout == b""


# --------------------------------------------------------------------------------------------
# check
# --------------------------------------------------------------------------------------------
def test_check_demo_config_prints_a_summary():
    r = mlgate("check", str(DEMO), env=env_with(AZUREML_API_KEY="demo-aml-key"))
    assert r.returncode == 0, r.stderr
    assert r.stderr == b""
    out = r.stdout.decode()
    assert out.splitlines()[0] == f"{DEMO}: valid mlgate configuration"
    fields = dict(re.findall(r"^  (\w[\w ]*?)\s{2,}(.+)$", out, re.M))
    assert fields["apis"] == "3"
    assert fields["operations"] == "10"  # the azureml-studio set, the openai set, score
    assert fields["products"] == "2"
    assert fields["subscriptions"] == "2"
    assert fields["limits"] == "3"  # Starter's rate limit, quota and token limit
    m = re.fullmatch(r"at most (\d+) bytes", fields["shared data"])
    assert m and int(m.group(1)) > 5 * 8, fields["shared data"]  # at least alice's 5-call ring
    assert re.findall(r"^  upstream\s+(.+)$", out, re.M) == ["http://127.0.0.1:8081", "http://127.0.0.1:8081/v1"]
    assert fields["api_key_env"] == "AZUREML_API_KEY"
    assert "alice-demo-key" not in out and "demo-aml-key" not in out


def test_check_reads_stdin_and_the_process_environment():
    cfg = DEMO.read_bytes()
    ok = mlgate("check", "-", stdin=cfg, env=env_with(AZUREML_API_KEY="k"))
    assert ok.returncode == 0 and ok.stdout.startswith(b"-: valid mlgate configuration")
    # api_key_env is resolved like the filter does: unset -> the filter's refusal.
    r = mlgate("check", "-", stdin=cfg, env=env_without("AZUREML_API_KEY"))
    assert r.returncode == 1
    assert r.stdout == b""
    line = r.stderr.decode()
    assert line.endswith("\n") and line.count("\n") == 1
    assert line.startswith("invalid mlgate configuration: apis[0].backend_credentials[0].api_key_env: "), line


def test_the_istio_plugin_config_passes_check(tmp_path):
    yaml = pytest.importorskip("yaml")
    spec = yaml.safe_load((ROOT / "deploy" / "istio" / "wasmplugin.yaml").read_text())["spec"]
    f = tmp_path / "plugin.json"
    f.write_text(json.dumps(spec["pluginConfig"]))
    r = mlgate("check", str(f), env=env_with(**{e["name"]: "from-host" for e in spec["vmConfig"]["env"]}))
    assert r.returncode == 0, r.stderr


def refusal_cases():
    """Every refusal case of the suite (test_config.CASES) plus an empty configuration."""
    from test_config import CASES
    return [(why, cfg) for why, cfg, _ in CASES] + [("empty configuration", "")]


def envoy_refusal(cfg, env) -> str:
    """The refusal line Envoy's log shows for `cfg`, from 'invalid mlgate configuration' on."""
    up = Recorder()
    e = Envoy(cfg, up.port, env=env, wait=False)
    try:
        assert e.wait_exit(60) != 0, "Envoy must refuse to start"
        lines = [l for l in e.log().splitlines() if "invalid mlgate configuration" in l]
        assert lines, e.log()[-2000:]
        return lines[0][lines[0].index("invalid mlgate configuration"):]
    finally:
        e.stop()
        up.close()


@pytest.mark.parametrize("why,cfg", refusal_cases(), ids=[c[0] for c in refusal_cases()])
def test_check_prints_what_envoy_logs(tmp_path, why, cfg):
    from test_gateway import ENV
    f = tmp_path / "config.json"
    f.write_text(cfg if isinstance(cfg, str) else json.dumps(cfg))
    r = mlgate("check", str(f), env=env_with(**ENV))
    assert r.returncode == 1, (why, r)
    assert r.stdout == b""
    cli_line = r.stderr.decode()
    assert cli_line.count("\n") == 1 and REFUSAL.match(cli_line.rstrip("\n")), cli_line
    assert envoy_refusal(cfg, ENV) == cli_line.rstrip("\n")
    # `mlgate envoy` refuses the same configuration with the same line and prints nothing, except
    # for a variable that only Envoy's environment has to provide: it names it instead.
    r = mlgate("envoy", str(f), env=env_with(**ENV))
    if why == "missing env variable":
        assert r.returncode == 0 and b"NOT_SET_ANYWHERE" in r.stderr
        return
    assert r.returncode == 1 and r.stdout == b""
    assert r.stderr.decode() == cli_line


# --------------------------------------------------------------------------------------------
# key new / key hash
# --------------------------------------------------------------------------------------------
def key_new() -> tuple[str, str]:
    r = mlgate("key", "new")
    assert r.returncode == 0 and r.stderr == b""
    lines = r.stdout.decode().splitlines()
    assert len(lines) == 2, lines
    key, digest = lines[0].split(" ")[1], lines[1].split(" ")[1]
    assert lines[0].startswith("key ") and lines[1].startswith("sha256 ")
    return key, digest


def test_key_new_and_hash_round_trip():
    key, digest = key_new()
    assert re.fullmatch(r"[0-9a-f]{64}", key), key  # 32 random bytes
    assert digest == hashlib.sha256(key.encode()).hexdigest()
    assert key_new()[0] != key, "two fresh keys must differ"
    for stdin in (key.encode() + b"\n", key.encode(), key.encode() + b"\r\n"):
        r = mlgate("key", "hash", stdin=stdin)
        assert r.returncode == 0 and r.stdout.decode() == digest + "\n", stdin
    # Only one trailing newline is removed: a key is hashed as the subscriber sends it.
    assert mlgate("key", "hash", stdin=b"a \n").stdout.decode().strip() == hashlib.sha256(b"a ").hexdigest()
    r = mlgate("key", "hash", stdin=b"")
    assert r.returncode == 2 and r.stderr.decode().startswith("mlgate: ")


# --------------------------------------------------------------------------------------------
# envoy
# --------------------------------------------------------------------------------------------
def two_api_config(up_a: int, up_b: int, key_sha: str) -> dict:
    return {
        # Exported, so the generated access log reads the match (`mlgate`).
        "export_metadata": "combined",
        "apis": [
            {"id": "azureml-demo", "name": "Demo", "path": "azureml-demo", "service_url": f"http://127.0.0.1:{up_a}",
             "operations": "azureml-studio",
             "backend_credentials": [{"workspace": "*", "service": "*", "api_key_env": "CLI_TEST_AML_KEY"}]},
            {"id": "scoring", "name": "Scoring", "path": "score", "service_url": f"http://localhost:{up_b}/base",
             "operations": [{"id": "predict", "name": "Predict", "method": "POST", "url_template": "/models/{model}/predict"}],
             "backend_credentials": [{"workspace": "*", "service": "*", "api_key": "scoring-key"}]},
        ],
        "products": [{"id": "starter", "name": "Starter", "apis": ["azureml-demo", "scoring"],
                      "rate_limit": {"calls": 3, "renewal_period": 60}}],
        "subscriptions": [{"id": "alice", "product": "starter", "state": "active", "primary_key_sha256": key_sha}],
    }


def generate(tmp_path: Path, cfg: dict | Path, *extra: str, env: dict | None = None) -> tuple[Path, dict, int, int]:
    if isinstance(cfg, dict):
        src = tmp_path / "mlgate.json"
        src.write_text(json.dumps(cfg, indent=1))
    else:
        src = cfg
    listen, admin = free_port(), free_port()
    r = mlgate("envoy", str(src), "--wasm", str(WASM_PATH), "--listen", f"127.0.0.1:{listen}",
               "--admin", f"127.0.0.1:{admin}", *extra, env=env)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "envoy.json"
    out.write_bytes(r.stdout)
    return out, json.loads(r.stdout), listen, admin


def hcm_of(listener: dict) -> dict:
    return listener["filter_chains"][0]["filters"][0]["typed_config"]


def test_bootstrap_content(tmp_path):
    cfg = two_api_config(18001, 18002, "0" * 64)
    path, doc, listen, admin = generate(tmp_path, cfg)
    res = doc["static_resources"]
    assert doc["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": admin}
    [lst] = res["listeners"]
    assert lst["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": listen}
    hcm = hcm_of(lst)
    assert hcm["use_remote_address"] is True
    wasm, router = hcm["http_filters"]
    assert router["name"] == "envoy.filters.http.router"
    pc = wasm["typed_config"]["config"]
    assert pc["failure_policy"] == "FAIL_RELOAD"
    assert pc["vm_config"]["vm_id"] == "mlgate" and pc["vm_config"]["runtime"] == "envoy.wasm.runtime.v8"
    assert pc["vm_config"]["code"]["local"]["filename"] == str(WASM_PATH.resolve())
    assert pc["vm_config"]["environment_variables"]["host_env_keys"] == ["CLI_TEST_AML_KEY"]
    assert pc["configuration"]["@type"] == "type.googleapis.com/google.protobuf.StringValue"
    assert pc["configuration"]["value"] == (tmp_path / "mlgate.json").read_text(), "the configuration, verbatim"
    # A cluster per distinct service_url; a virtual host per service authority, plus a catch-all.
    clusters = {c["name"]: c for c in res["clusters"]}
    assert len(clusters) == 2
    vhosts = hcm["route_config"]["virtual_hosts"]
    by_domain = {d: vh for vh in vhosts for d in vh["domains"]}
    assert set(by_domain) == {"127.0.0.1:18001", "localhost:18002", "*"}
    for domain, port in (("127.0.0.1:18001", 18001), ("localhost:18002", 18002)):
        c = clusters[by_domain[domain]["routes"][0]["route"]["cluster"]]
        ep = c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
        assert ep["port_value"] == port
    assert clusters[by_domain["localhost:18002"]["routes"][0]["route"]["cluster"]]["type"] == "LOGICAL_DNS"
    # JSON access log on stdout; the stats tags for mlgate's labels (Istio's encoding).
    log = hcm["access_log"][0]
    assert log["name"] == "envoy.access_loggers.stdout"
    assert "json_format" in log["typed_config"]["log_format"]
    tags = {t["tag_name"]: t["regex"] for t in doc["stats_config"]["stats_tags"]}
    assert sorted(tags) == sorted(LABELS)
    assert tags["api"] == r"(api=\.=(.*?);\.;)"
    # The same labels as deploy/istio/mesh-config.yaml's extraStatTags.
    yaml = pytest.importorskip("yaml")
    mesh = yaml.safe_load((ROOT / "deploy" / "istio" / "mesh-config.yaml").read_text())
    assert sorted(mesh["spec"]["meshConfig"]["defaultConfig"]["extraStatTags"]) == sorted(tags)
    # No secret in the bootstrap.
    assert "scoring-key" in pc["configuration"]["value"]  # (inline api_key: the operator's choice)
    r = mlgate("envoy", str(tmp_path / "mlgate.json"), env=env_without("CLI_TEST_AML_KEY"))
    assert r.returncode == 0, "api_key_env need not be set where the bootstrap is generated"
    assert b"CLI_TEST_AML_KEY" in r.stderr  # ...but it says Envoy needs it


def test_bootstrap_runs_in_envoy_and_routes_each_api_to_its_service(tmp_path):
    """`envoy --mode validate`, then a real start: mlgate admits a key made by `mlgate key new`,
    rewrites, and each API reaches its own service through the authority's virtual host."""
    key, digest = key_new()
    a, b = Recorder(), Recorder()
    env = {"CLI_TEST_AML_KEY": "aml-key-from-envoy-env"}
    path, doc, listen, admin = generate(tmp_path, two_api_config(a.port, b.port, digest))
    v = validate_bootstrap(path, env)
    assert v.returncode == 0, v.stdout.decode()[-2000:] + v.stderr.decode()[-2000:]
    e = BootstrapEnvoy(path, env=env)
    try:
        status, headers, _ = e.request("POST", RRS + f"&subscription-key={key}", {"Content-Type": "application/json"}, b"{}")
        assert status == 200
        got = a.last()
        assert got["path"] == "/workspaces/ws1/services/svc1/execute"
        assert "subscription-key" not in got["query"]
        assert ("authorization", "Bearer aml-key-from-envoy-env") in got["headers"]
        assert ("host", f"127.0.0.1:{a.port}") in got["headers"]
        assert b.count() == 0

        status, _, _ = e.request("POST", "/score/models/m1/predict", {"Ocp-Apim-Subscription-Key": key}, b"{}")
        assert status == 200
        got = b.last()
        assert got["path"] == "/base/models/m1/predict"
        assert ("host", f"localhost:{b.port}") in got["headers"]
        assert ("authorization", "Bearer scoring-key") in got["headers"]
        assert a.count() == 1

        # The filter's answers, unchanged by the generated wiring.
        status, headers, body = e.request("POST", RRS, {}, b"{}")
        assert status == 401 and "www-authenticate" in headers
        status, _, body = e.request("POST", "/azureml-demo/nothing-here", {"Ocp-Apim-Subscription-Key": key}, b"{}")
        assert status == 404 and json.loads(body) == {"statusCode": 404, "message": "Resource not found"}
        # The product allows 3 calls a minute across both APIs: the third is admitted, the fourth not.
        status, _, _ = e.request("POST", RRS, {"Ocp-Apim-Subscription-Key": key}, b"{}")
        assert status == 200
        status, headers, body = e.request("POST", RRS, {"Ocp-Apim-Subscription-Key": key}, b"{}")
        assert status == 429 and "retry-after" in headers
        assert a.count() == 2 and b.count() == 1

        # The JSON access log: one line per request, mlgate's match, and no query (keys).
        lines = e.access_log(6)
        assert len(lines) == 6, lines
        first = lines[0]
        assert first["status"] == 200 and first["method"] == "POST"
        assert first["path"] == "/workspaces/ws1/services/svc1/execute"  # as sent upstream
        assert "subscription=alice" in first["mlgate"]
        assert lines[2]["status"] == 401 and lines[2]["path"] == "/azureml-demo/workspaces/ws1/services/svc1/execute"
        assert key not in e.stdout_path.read_text()
        # use_remote_address: the client address is the peer's.
        assert first["client"] == "127.0.0.1"
    finally:
        e.stop()
        a.close()
        b.close()


def test_bootstrap_of_the_demo_config_validates(tmp_path):
    path, doc, _, _ = generate(tmp_path, DEMO)
    v = validate_bootstrap(path, {"AZUREML_API_KEY": "x"})
    assert v.returncode == 0, v.stderr.decode()[-2000:]


def test_stats_tags_turn_encoded_names_into_labels(tmp_path):
    """mlgate's metrics carry their labels in the name, `<label>=.=<value>;.;` (Istio's
    encoding); the bootstrap's stats_tags make them Prometheus labels. Shown on an Envoy stat
    whose name carries the same encoding (the HTTP connection manager's stat_prefix)."""
    path, doc, listen, admin = generate(tmp_path, DEMO)
    encoded = "".join(f"{l}=.={v};.;" for l, v in zip(LABELS, ["azureml-demo", "rrs-execute", "starter", "admitted", "alice"]))
    hcm_of(doc["static_resources"]["listeners"][0])["stat_prefix"] = encoded + "mlgate_http"
    path.write_text(json.dumps(doc))
    e = BootstrapEnvoy(path, env={"AZUREML_API_KEY": "x"})
    try:
        e.request("GET", "/nothing")
        prom = e.admin_get("/stats/prometheus")
        line = next((l for l in prom.splitlines() if l.startswith("envoy_http_mlgate_http_downstream_rq_total{")), None)
        assert line is not None, prom[:2000]
        for label, value in zip(LABELS, ["azureml-demo", "rrs-execute", "starter", "admitted", "alice"]):
            assert f'{label}="{value}"' in line, line
    finally:
        e.stop()
