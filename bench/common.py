"""What bench/run.py (`make bench`) and bench/fleet.py share: the load (wrk closed loop,
h2load at a fixed rate, keys rotating over the subscriptions), the gateway and upstream Envoy
configurations, the Envoy processes (pinned when there are 2 cores or more) and the
measurements. Imports neither of them."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import mlgate_harness as mh
from mlgate_harness import ROOT
from mlgate_harness.native import native_env

RESULTS = ROOT / "bench" / "results"
SUBS = 1000
# Issue 13: more, shorter interleaved rounds; medians with a 95% interval from the rounds.
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "3"))
# Pinning (2 cores or more): every gateway Envoy on GATEWAY_CPU, the load generators and the
# upstream on LOAD_CPUS, so the gateway's CPU time is not shared with its own load.
PIN = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None and os.environ.get("BENCH_PIN", "1") == "1"
GATEWAY_CPU = "0"
LOAD_CPUS = ",".join(str(c) for c in range(1, os.cpu_count() or 2))


def pinned(args: list, cpus: str) -> list:
    return ["taskset", "-c", cpus, *args] if PIN else list(args)


CONNECTIONS = 16
PATH = "/azureml-demo/workspaces/ws1/services/svc1/execute?api-version=2.0&details=true"
BODY = '{"Inputs":{"input1":{"ColumnNames":["Col2"],"Values":[["This is a good day"]]}},"GlobalParameters":{}}'
AML_KEY = "bench-azureml-api-key"


def key(i: int) -> str:
    return f"bench-key-{i:06d}"


def sub_id(i: int) -> str:
    return f"sub-{i:06d}"


# --------------------------------------------------------------------------------------------
# Envoy configurations
# --------------------------------------------------------------------------------------------

def bootstrap(listen: int, admin: int, upstream: int, http_filters: list, routes: list, secrets=None) -> dict:
    """A gateway: one listener (mlgate_harness's HTTP connection manager: use_remote_address,
    codec AUTO) with `http_filters` and `routes` in front of the `upstream` cluster."""
    return mh.bootstrap(admin, [mh.listener("gateway", listen, http_filters, routes)],
                        [mh.static_cluster("upstream", upstream)], secrets=secrets)


def prefix_route() -> list:
    return mh.prefix_route("upstream")


def wasm_filter(path: Path, configuration: str | None, vm_id: str) -> dict:
    return mh.wasm_filter(path, configuration, vm_id=vm_id, env_keys=["AZUREML_API_KEY"])


def mlgate_config(n_subs: int, rate_limit: bool = True, quota: bool = True, **settings) -> str:
    product = {"id": "bench", "name": "Bench", "apis": ["azureml-demo"]}
    if quota:
        product["quota"] = {"calls": 10 ** 12, "renewal_period": 86400}
    if rate_limit:
        product["rate_limit"] = {"calls": 100, "renewal_period": 1}
    return json.dumps({
        "apis": [{"id": "azureml-demo", "name": "AzureML Demo API", "path": "azureml-demo",
                  "service_url": "https://ussouthcentral.services.azureml.net", "operations": "azureml-studio",
                  "backend_credentials": [{"workspace": "*", "service": "*", "api_key_env": "AZUREML_API_KEY"}]}],
        "products": [product],
        "subscriptions": [{"id": sub_id(i), "product": "bench", "state": "active", "primary_key": key(i)}
                          for i in range(n_subs)],
        **settings,
    })


# The five AzureML operations as Envoy routes: (method, template under the suffix, required query).
OPERATIONS = [
    ("POST", "/workspaces/{workspace}/services/{service}/execute", ["api-version", "details"]),
    ("POST", "/workspaces/{workspace}/services/{service}/jobs", ["api-version"]),
    ("POST", "/workspaces/{workspace}/services/{service}/jobs/{jobid}/start", ["api-version"]),
    ("GET", "/workspaces/{workspace}/services/{service}/jobs/{jobid}", ["api-version"]),
    ("DELETE", "/workspaces/{workspace}/services/{service}/jobs/{jobid}", ["api-version"]),
]


def native_chain(n_subs: int) -> tuple[list, list, list]:
    routes = []
    for method, template, query in OPERATIONS:
        routes.append({
            "match": {
                "path_match_policy": {"name": "envoy.path.match.uri_template.uri_template_matcher", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig",
                    "path_template": "/azureml-demo" + template}},
                "headers": [{"name": ":method", "string_match": {"exact": method}}],
                "query_parameters": [{"name": q, "present_match": True} for q in query],
            },
            "route": {
                "cluster": "upstream",
                "host_rewrite_literal": "ussouthcentral.services.azureml.net",
                "path_rewrite_policy": {"name": "envoy.path.rewrite.uri_template.uri_template_rewriter", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.path.rewrite.uri_template.v3.UriTemplateRewriteConfig",
                    "path_template_rewrite": template}},
                "rate_limits": [{"actions": [{"request_headers": {"header_name": "x-client-id", "descriptor_key": "client"}}]}],
            },
        })
    filters = [
        {"name": "envoy.filters.http.api_key_auth", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth",
            "credentials": [{"key": key(i), "client": sub_id(i)} for i in range(n_subs)],
            "key_sources": [{"header": "Ocp-Apim-Subscription-Key"}, {"query": "subscription-key"}],
            "forwarding": {"header": "x-client-id", "hide_credentials": True}}},
        {"name": "envoy.filters.http.local_ratelimit", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": "rl",
            "token_bucket": {"max_tokens": 1000000000, "tokens_per_fill": 1000000000, "fill_interval": "1s"},
            "filter_enabled": {"runtime_key": "rl_enabled", "default_value": {"numerator": 100, "denominator": "HUNDRED"}},
            "filter_enforced": {"runtime_key": "rl_enforced", "default_value": {"numerator": 100, "denominator": "HUNDRED"}},
            "descriptors": [{"entries": [{"key": "client", "value": sub_id(i)}],
                             "token_bucket": {"max_tokens": 100, "tokens_per_fill": 100, "fill_interval": "1s"}}
                            for i in range(n_subs)]}},
        {"name": "envoy.filters.http.credential_injector", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.credential_injector.v3.CredentialInjector",
            "overwrite": True,
            "credential": {"name": "envoy.http.injected_credentials.generic", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.http.injected_credentials.generic.v3.Generic",
                "credential": {"name": "azureml-key"}, "header": "Authorization"}}}},
        {"name": "envoy.filters.http.header_mutation", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": {"request_mutations": [{"remove": "ocp-apim-subscription-key"}]}}},
    ]
    secrets = [{"name": "azureml-key", "generic_secret": {"secret": {"inline_string": f"Bearer {AML_KEY}"}}}]
    return filters, routes, secrets

# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------

class Proc(mh.Process):
    """An Envoy started with `cfg` (written to workdir/<name>.json), its log in workdir/<name>.log,
    ready once `port` listens."""

    def __init__(self, name: str, cfg: dict, workdir: str, concurrency: int, port: int, admin: int | None = None):
        self.name = name
        path = mh.write_config(os.path.join(workdir, f"{name}.json"), cfg)
        self.admin = admin
        cpus = LOAD_CPUS if name == "upstream" else GATEWAY_CPU
        super().__init__(pinned(mh.envoy_args(path, concurrency, "warn"), cpus), os.path.join(workdir, f"{name}.log"),
                         port=port, timeout=120, env={"AZUREML_API_KEY": AML_KEY, **native_env()})


def upstream_config(listen: int, admin: int) -> dict:
    """The upstream: an Envoy answering 200 `{"ok":true}` to everything (direct_response)."""
    routes = [{"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": '{"ok":true}'}}}]
    return mh.bootstrap(admin, [mh.listener("fixed", listen, [], routes)], [])


def wrk_script(workdir: str, n_keys: int) -> str:
    path = os.path.join(workdir, f"load-{n_keys}.lua")
    with open(path, "w") as f:
        f.write(f"""-- rotates the subscription key over {n_keys} subscriptions
local n = {n_keys}
local i = 0
local body = '{BODY}'
request = function()
  i = i + 1
  return wrk.format("POST", "{PATH}", {{
    ["Ocp-Apim-Subscription-Key"] = string.format("bench-key-%06d", i % n),
    ["Content-Type"] = "application/json"}}, body)
end
""")
    return path


def run_wrk(port: int, script: str, seconds: int) -> dict:
    out = subprocess.run(pinned(["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "-s", script,
                          f"http://127.0.0.1:{port}"], LOAD_CPUS), capture_output=True, text=True, timeout=seconds + 60).stdout

    def latency_ms(label):
        m = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return None
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    requests = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"requests": requests, "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50_ms": latency_ms("50%"), "p99_ms": latency_ms("99%"),
            "non2xx": int(non2xx.group(1)) if non2xx else 0, "socket_errors": errors.group(1) if errors else ""}


FIXED_RPS = int(os.environ.get("BENCH_FIXED_RPS", "2000"))
H2LOAD_CLIENTS = 10


def h2load_inputs(workdir: str, n_keys: int) -> tuple[str, str]:
    """URIs rotating the key in the query (h2load cannot vary headers), and the POST body."""
    uris = os.path.join(workdir, f"uris-{n_keys}.txt")
    base, query = PATH.split("?")
    with open(uris, "w") as f:
        for i in range(n_keys):
            f.write(f"{base}?{query}&subscription-key={key(i)}\n")
    body = os.path.join(workdir, "body.json")
    Path(body).write_text(BODY)
    return uris, body


def run_fixed_rate(gw: "Proc", port: int, uris: str, body: str, seconds: int) -> dict:
    """CPU per request at one fixed request rate for every configuration, so differences in
    batching (requests per wake-up) do not bias it, as they do under closed-loop load."""
    absolute = f"{uris}.{port}"   # h2load wants absolute URIs in its input file
    if not os.path.exists(absolute):
        Path(absolute).write_text("".join(f"http://127.0.0.1:{port}{line}\n" for line in Path(uris).read_text().splitlines()))
    cpu0 = gw.cpu_seconds()
    out = subprocess.run(pinned(["h2load", "--h1", "-c", str(H2LOAD_CLIENTS), "--rps", str(FIXED_RPS // H2LOAD_CLIENTS),
                          "-D", str(seconds), "-d", body, "-H", "content-type: application/json",
                          "-i", absolute], LOAD_CPUS), capture_output=True, text=True, timeout=seconds + 60).stdout
    cpu = gw.cpu_seconds() - cpu0
    m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    status = re.search(r"status codes: (\d+) 2xx", out)
    done = int(m.group(1)) if m else 0
    return {"fixed_rps": FIXED_RPS, "fixed_done": done, "fixed_2xx": int(status.group(1)) if status else 0,
            "cpu_us_per_req": cpu / max(done, 1) * 1e6}


def measure(gw: Proc, script: str, seconds: int, fixed: tuple[str, str] | None = None) -> dict:
    cpu0 = gw.cpu_seconds()
    r = run_wrk(gw.port, script, seconds)
    r["cpu_us_per_req_closed_loop"] = (gw.cpu_seconds() - cpu0) / max(r["requests"], 1) * 1e6
    if fixed:
        r.update(run_fixed_rate(gw, gw.port, fixed[0], fixed[1], seconds))
    else:
        r["cpu_us_per_req"] = r["cpu_us_per_req_closed_loop"]
    return r


def check_forwarding(port: int, k: str) -> None:
    """Each configuration must really do its job: a keyed request passes, a keyless one
    (for the gateways that check keys) is refused."""
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("POST", PATH, body=BODY, headers={"Ocp-Apim-Subscription-Key": k})
    r = c.getresponse()
    r.read()
    if r.status != 200:
        raise SystemExit(f"gateway on {port} answered {r.status} to a valid request")


def keyless_status(port: int) -> int:
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("POST", PATH, body=BODY)
    r = c.getresponse()
    r.read()
    return r.status
