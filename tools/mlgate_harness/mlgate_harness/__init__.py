"""mlgate's Python process helpers: one copy, used by the e2e tests (tests/e2e), the benchmark
(bench/run.py) and `make run` (envoy/run.py).

- paths:   where Envoy, the .wasm, azureml-sim and Azurite are (ROOT, ENVOY, WASM, ...);
- process: free_port, wait_port, Process (a child with a log file, waited for, stopped);
- envoy:   the Envoy command line and launcher, and builders for the Envoy configs the
           project generates (use_remote_address, h2c, failure_policy FAIL_RELOAD);
- blobclient (import it by name): a minimal Azure Blob client, to upload BES input.

Installed editable into .venv by the Makefile (`pip install -e tools/mlgate_harness`), so
`import mlgate_harness` works from any script run with .venv/bin/python.
"""
from .envoy import (FAILURE_POLICY, HCM_TYPE, ROUTER, WASM_TYPE, bootstrap, envoy_args, file_access_log,
                    http_connection_manager, http_connection_managers, listener, prefix_route, start_envoy,
                    static_cluster, wasm_filter, wasm_plugin_configs, write_config)
from .paths import AZURITE, EMPTY_WASM, ENVOY, FAULT_WASM, ROOT, SIM, WASM
from .process import Process, free_port, wait_port

__all__ = [
    "AZURITE", "EMPTY_WASM", "ENVOY", "FAULT_WASM", "ROOT", "SIM", "WASM",
    "Process", "free_port", "wait_port",
    "FAILURE_POLICY", "HCM_TYPE", "ROUTER", "WASM_TYPE", "bootstrap", "envoy_args", "file_access_log",
    "http_connection_manager", "http_connection_managers", "listener", "prefix_route", "start_envoy",
    "static_cluster", "wasm_filter", "wasm_plugin_configs", "write_config",
]
