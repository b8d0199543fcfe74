"""Where the project's binaries are. The package is installed editable, so this file sits in
the source tree: tools/mlgate_harness/mlgate_harness/paths.py."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(os.environ.get("MLGATE_ROOT") or Path(__file__).resolve().parents[3])
ENVOY = ROOT / ".venv" / "bin" / "envoy"
RELEASE_WASM = ROOT / "target" / "wasm32-wasip1" / "release"
WASM = Path(os.environ.get("MLGATE_WASM") or RELEASE_WASM / "mlgate.wasm")
# mlgate built with the `fault-injection` feature (`make build-fault`): a request carrying
# `x-mlgate-fault: trap` makes the VM trap, to test Envoy's failure_policy.
FAULT_WASM = RELEASE_WASM / "mlgate-fault.wasm"
EMPTY_WASM = RELEASE_WASM / "empty_filter.wasm"
SIM = ROOT / "target" / "release" / "azureml-sim"
# The mlgate command (`make cli`), and the OCI image layout `make oci` writes.
MLGATE = ROOT / "target" / "release" / "mlgate"
OCI_DIR = ROOT / "target" / "oci"
AZURITE = ROOT / ".tools" / "node" / "node_modules" / ".bin" / "azurite-blob"
