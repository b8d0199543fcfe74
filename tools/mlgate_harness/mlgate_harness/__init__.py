"""mlgate's Python process helpers: one copy, used by the e2e tests (tests/e2e), the benchmark
(bench/run.py) and `make run` (envoy/run.py).

- paths:   where Envoy, the .wasm, azureml-sim, Azurite and the mlgate CLI are (ROOT, ENVOY, WASM, ...);
- process: free_port, wait_port, wait_until, Process (a child with a log file, waited for
           (a port, or any readiness check), stopped);
- client:  http_request, http_get: HTTP/1.1 to 127.0.0.1, headers exactly as given;
- envoy:   the Envoy command line, launcher (waits for the admin's /ready), validator and
           admin calls, and builders for the Envoy configs the project generates
           (use_remote_address, h2c, failure_policy FAIL_RELOAD);
- blobclient (import it by name): a minimal Azure Blob client, to upload BES input.

Installed editable into .venv by the Makefile (`pip install -e tools/mlgate_harness`), so
`import mlgate_harness` works from any script run with .venv/bin/python.
"""
from .client import http_get, http_request
from .envoy import (FAILURE_POLICY, HCM_TYPE, ROUTER, WASM_TYPE, admin_get, admin_post, bootstrap, envoy_args,
                    envoy_ready, file_access_log, http_connection_manager, http_connection_managers, listener,
                    prefix_route, start_envoy, static_cluster, validate_config, wasm_filter, wasm_plugin_configs,
                    write_config)
from .paths import AZURITE, EMPTY_WASM, ENVOY, FAULT_WASM, MLGATE, OCI_DIR, ROOT, SIM, WASM
from .process import Process, accepts, free_port, wait_port, wait_until

__all__ = [
    "AZURITE", "EMPTY_WASM", "ENVOY", "FAULT_WASM", "MLGATE", "OCI_DIR", "ROOT", "SIM", "WASM",
    "Process", "accepts", "free_port", "wait_port", "wait_until",
    "http_get", "http_request",
    "FAILURE_POLICY", "HCM_TYPE", "ROUTER", "WASM_TYPE", "admin_get", "admin_post", "bootstrap", "envoy_args",
    "envoy_ready", "file_access_log", "http_connection_manager", "http_connection_managers", "listener",
    "prefix_route", "start_envoy", "static_cluster", "validate_config", "wasm_filter", "wasm_plugin_configs",
    "write_config",
]
