"""Envoy: the command line every launcher uses (start and wait until LIVE, validate, the admin's
GET/POST), and builders for the pieces of the configs the project generates (the e2e gateway,
the benchmark's gateways and upstream).

Every HTTP connection manager built here sets
- `use_remote_address: true`: the client address (`source.address`, what `counter: "ip"`
  counts) is the TCP peer, not whatever the client wrote into X-Forwarded-For. Behind N
  trusted proxies, add `xff_num_trusted_hops: N`;
- `codec_type: AUTO`: HTTP/1.1, and HTTP/2 over cleartext with prior knowledge (h2c).
Every Wasm filter sets `failure_policy: FAIL_RELOAD`: after a runtime error (a trap) Envoy
creates a new VM for the next request, and the limit counts carry on because shared data
lives in the host, per vm_id. FAIL_CLOSED (Envoy's default) would answer 503 to every
request on that worker until Envoy restarts; FAIL_OPEN would pass requests unchecked.
"""
from __future__ import annotations

import json
import os
import subprocess

from .client import http_get, http_request
from .paths import ENVOY
from .process import Process

HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
STRING_VALUE_TYPE = "type.googleapis.com/google.protobuf.StringValue"
FILE_ACCESS_LOG_TYPE = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
FAILURE_POLICY = "FAIL_RELOAD"


# --------------------------------------------------------------------------------------------
# Launcher
# --------------------------------------------------------------------------------------------

def envoy_args(config_path, concurrency: int = 2, log_level: str = "info", extra=()) -> list[str]:
    """The Envoy command line (Envoy from .venv, no hot restart, the Wasm and dynamic-module logs
    at info so the filter's own lines show, in either form)."""
    return [str(ENVOY), "-c", str(config_path), "--concurrency", str(concurrency), "--disable-hot-restart",
            "--log-level", log_level, "--component-log-level", "wasm:info,dynamic_modules:info", *extra]


def write_config(path, config: dict) -> str:
    """Writes a bootstrap as JSON (Envoy reads .json as JSON, .yaml as YAML)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(config, f)
    os.replace(tmp, path)
    return str(path)


def start_envoy(config_path, log_path, *, port: int | None, concurrency: int = 2, log_level: str = "info",
                env: dict[str, str] | None = None, cwd=None, append: bool = False, extra=(),
                timeout: float = 60.0, admin: int | None = None, stdout_path=None) -> Process:
    """Starts Envoy with `config_path`; with `port`, returns once that listener accepts; with
    `admin` (its admin port), once the admin says LIVE (/ready). `stdout_path`: Envoy's stdout
    (e.g. a stdout access log) there instead of in the log."""
    return Process(envoy_args(config_path, concurrency, log_level, extra), log_path, port=port,
                   timeout=timeout, env=env, cwd=cwd, append=append, stdout_path=stdout_path,
                   ready=(lambda: envoy_ready(admin)) if admin is not None else None)


def validate_config(config_path, env: dict[str, str] | None = None, timeout: float = 120.0) -> subprocess.CompletedProcess:
    """`envoy --mode validate -c config_path` (bytes output; exit 0 when Envoy accepts it)."""
    return subprocess.run([str(ENVOY), "--mode", "validate", "-c", str(config_path)], capture_output=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def admin_get(admin: int, path: str) -> str:
    """GET `path` from the Envoy admin on 127.0.0.1:admin; the body as text."""
    return http_get(admin, path)[2].decode()


def admin_post(admin: int, path: str) -> str:
    return http_request(admin, "POST", path, timeout=5.0)[2].decode()


def envoy_ready(admin: int) -> bool:
    """Whether the Envoy with its admin on 127.0.0.1:admin is LIVE (initialized, serving)."""
    return http_get(admin, "/ready", timeout=2.0)[2].strip() == b"LIVE"


# --------------------------------------------------------------------------------------------
# Config builders
# --------------------------------------------------------------------------------------------

def wasm_filter(wasm, configuration: str | None, *, vm_id: str = "mlgate", env_keys=(),
                failure_policy: str = FAILURE_POLICY) -> dict:
    """An HTTP Wasm filter. `configuration` is the plugin's JSON string (None: none at all);
    `env_keys` are variables of Envoy's environment the VM may read (host_env_keys), so their
    values stay out of Envoy's config and config dump."""
    vm_config = {"vm_id": vm_id, "runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": str(wasm)}}}
    if env_keys:
        vm_config["environment_variables"] = {"host_env_keys": sorted(env_keys)}
    cfg = {"name": vm_id, "root_id": vm_id, "vm_config": vm_config, "failure_policy": failure_policy}
    if configuration is not None:
        cfg["configuration"] = {"@type": STRING_VALUE_TYPE, "value": configuration}
    return {"name": vm_id, "typed_config": {"@type": WASM_TYPE, "config": cfg}}


def file_access_log(path, fmt: str) -> dict:
    return {"name": "envoy.access_loggers.file", "typed_config": {
        "@type": FILE_ACCESS_LOG_TYPE, "path": str(path), "log_format": {"text_format_source": {"inline_string": fmt}}}}


def prefix_route(cluster: str, timeout: str | None = None) -> list:
    route = {"cluster": cluster}
    if timeout:
        route["timeout"] = timeout
    return [{"match": {"prefix": "/"}, "route": route}]


def http_connection_manager(http_filters: list, routes: list, *, stat_prefix: str = "gateway",
                            access_log: list | None = None) -> dict:
    """The HTTP connection manager network filter: `http_filters` then the router, one virtual
    host for every domain with `routes`."""
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": stat_prefix,
        "codec_type": "AUTO",
        "use_remote_address": True,
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]},
        "http_filters": list(http_filters) + [ROUTER],
    }
    if access_log:
        hcm["access_log"] = access_log
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}


def listener(name: str, port: int, http_filters: list, routes: list, *, stat_prefix: str | None = None,
             access_log: list | None = None) -> dict:
    """A listener on 127.0.0.1:port with one HTTP connection manager."""
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [http_connection_manager(
            http_filters, routes, stat_prefix=stat_prefix or name, access_log=access_log)]}],
    }


def static_cluster(name: str, port: int, address: str = "127.0.0.1") -> dict:
    return {
        "name": name, "type": "STATIC", "connect_timeout": "2s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": address, "port_value": port}}}}]}]},
    }


# mlgate's usage metrics carry their labels in the stat name, `<label>=.=<value>;.;` (Istio's
# encoding, what `extraStatTags` extracts); one stats tag per label makes them Prometheus labels:
# `wasmcustom.api=.=azureml-demo;.;...;.;outcome=.=success;.;mlgate_calls` is
# `mlgate_calls{api="azureml-demo",...,outcome="success"}` in /stats/prometheus.
METRIC_LABELS = ("api", "operation", "product", "subscription", "outcome")
STATS_TAGS = [{"tag_name": label, "regex": f"({label}=\\.=(.*?);\\.;)"} for label in METRIC_LABELS]


def bootstrap(admin: int, listeners: list, clusters: list, *, node: dict | None = None, secrets: list | None = None,
              lds_path: str | None = None) -> dict:
    """A bootstrap with an admin on 127.0.0.1:admin and mlgate's STATS_TAGS. With `lds_path`,
    listeners also come from that file over LDS (Envoy watches its directory; replace the file
    to push an update)."""
    b: dict = {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
               "stats_config": {"stats_tags": STATS_TAGS},
               "static_resources": {"listeners": list(listeners), "clusters": list(clusters)}}
    if node:
        b["node"] = node
    if secrets:
        b["static_resources"]["secrets"] = secrets
    if lds_path:
        b["dynamic_resources"] = {"lds_config": {
            "path_config_source": {"path": str(lds_path), "watched_directory": {"path": os.path.dirname(str(lds_path))}},
            "resource_api_version": "V3"}}
    return b


def typed_configs(config, type_url: str) -> list[dict]:
    """Every typed config of `type_url` anywhere in a bootstrap or listener (for checks)."""
    found = []

    def walk(v):
        if isinstance(v, dict):
            if v.get("@type") == type_url:
                found.append(v)
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
    walk(config)
    return found


def http_connection_managers(config: dict) -> list[dict]:
    """Every HTTP connection manager config in a bootstrap or listener (for checks)."""
    return typed_configs(config, HCM_TYPE)


def wasm_plugin_configs(config: dict) -> list[dict]:
    """Every Wasm filter's PluginConfig in a bootstrap or listener (for checks)."""
    return [f["typed_config"]["config"] for hcm in http_connection_managers(config)
            for f in hcm.get("http_filters", []) if f.get("typed_config", {}).get("@type") == WASM_TYPE]
