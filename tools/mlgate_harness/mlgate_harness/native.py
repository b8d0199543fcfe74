"""The native form of mlgate: the same core as an Envoy dynamic module (native/, `make native`).
Where the built module is, the Envoy HTTP filter that loads it, the environment Envoy needs to
find it, and the Envoy version it is pinned to. Import it by name (`from mlgate_harness.native
import ...`), like blobclient.

Envoy 1.40 loads `lib<name>.so` for `dynamic_module_config: {name: <name>}` from the directory
in ENVOY_DYNAMIC_MODULES_SEARCH_PATH. `make native` (`cargo build --release -p mlgate`) writes `libmlgate.so` (and `make native-fault`
the test-only `libmlgate_fault.so`) in target/release/.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

from .envoy import typed_configs
from .paths import ENVOY, ROOT

NATIVE_DIR = ROOT / "target" / "release"
NATIVE_MODULE = NATIVE_DIR / "libmlgate.so"
# Built with the `fault-injection` feature: a request carrying `x-mlgate-fault: panic` panics
# inside the request hook, to test that the panic is caught at the FFI boundary. Never shipped.
NATIVE_FAULT_MODULE = NATIVE_DIR / "libmlgate_fault.so"
DYNAMIC_MODULE_TYPE = "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter"
STRING_VALUE_TYPE = "type.googleapis.com/google.protobuf.StringValue"
SEARCH_PATH_ENV = "ENVOY_DYNAMIC_MODULES_SEARCH_PATH"
# The Envoy release the module's hand-declared ABI is checked against (the Makefile pins the same).
PINNED_ENVOY = "1.40.0"
# Envoy's stats prefix for a dynamic module's metrics (`wasmcustom.` for the Wasm form's).
STATS_PREFIX = "dynamicmodulescustom."


def native_filter(configuration: str | None, module: str = "mlgate") -> dict:
    """The HTTP filter that runs mlgate natively: module `module` (libmodule.so), filter
    `mlgate`, and `configuration` (the same JSON as the Wasm plugin's) as a StringValue.
    `do_not_close`: the module, and with it the process-wide limit table, stays loaded when the
    last listener using it goes away, so counts are kept as long as the process lives."""
    cfg: dict = {"@type": DYNAMIC_MODULE_TYPE, "dynamic_module_config": {"name": module, "do_not_close": True},
                 "filter_name": "mlgate"}
    if configuration is not None:
        cfg["filter_config"] = {"@type": STRING_VALUE_TYPE, "value": configuration}
    return {"name": "mlgate", "typed_config": cfg}


def native_env(directory: Path = NATIVE_DIR) -> dict[str, str]:
    """What Envoy's environment needs for it to find the module."""
    return {SEARCH_PATH_ENV: str(directory)}


def is_native_module(path: Path) -> bool:
    """Whether `path` is mlgate-native's module (its hooks are there), not a stale or foreign
    file of that name. The test and bench variants are built elsewhere (see the Makefile)."""
    try:
        return b"envoy_dynamic_module_on_http_filter_request_headers" in path.read_bytes()
    except OSError:
        return False


def envoy_version(envoy: Path = ENVOY) -> str | None:
    """The release number of an Envoy binary (`1.40.0`), from `envoy --version`."""
    out = subprocess.run([str(envoy), "--version"], capture_output=True, text=True, timeout=60).stdout
    m = re.search(r"/(\d+\.\d+\.\d+)/", out)
    return m.group(1) if m else None


def check_pinned_envoy(envoy: Path = ENVOY) -> None:
    """Refuses to go on with an Envoy other than the pinned one: the module's ABI declarations
    are checked against 1.40.0 only, and a mismatch loads silently and is undefined behaviour."""
    v = envoy_version(envoy)
    if v != PINNED_ENVOY:
        raise RuntimeError(f"mlgate-native is built for Envoy {PINNED_ENVOY}; {envoy} is {v or 'unknown'}. "
                           f"Use Envoy {PINNED_ENVOY} (make deps installs it) or the Wasm form.")


def native_filters(config: dict) -> list[dict]:
    """Every mlgate-native filter config in a bootstrap or listener (for checks)."""
    return typed_configs(config, DYNAMIC_MODULE_TYPE)


def wasm_to_native(config: dict, module: str = "mlgate") -> dict:
    """A copy of an Envoy config with every mlgate Wasm filter replaced by the native filter
    with the same configuration (how `make run MLGATE_FORM=native` derives its config from
    envoy/demo.yaml, so the demo has one source)."""
    wasm_type = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"

    def walk(v):
        if isinstance(v, dict):
            tc = v.get("typed_config")
            if isinstance(tc, dict) and tc.get("@type") == wasm_type and tc.get("config", {}).get("root_id") == "mlgate":
                value = tc["config"].get("configuration", {}).get("value")
                return native_filter(value, module)
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v
    return walk(config)
