"""Memory of Envoy with mlgate under hostile traffic (issue 20): the gateway's RSS (VmRSS of the
Envoy process, /proc/<pid>/status) idle and while wrk sends the hostile mix, for Envoy with no
filter, with the empty Wasm filter, with mlgate.wasm and with the native module, each on
`--concurrency 2` in front of a direct_response upstream Envoy, loopback only.

The mix (one request in six of each): a valid key rotating over the subscriptions with a new
`x-client` value (the API's keyed limit counts `header:x-client`), an unknown key, an unknown
operation, a BES status with a job id of its own, a valid key with bytes 0x80-0xFF in headers
(and in `x-client`), a BES delete with a job id of its own.

    .venv/bin/python bench/memory.py [--forms none,empty,wasm,native] [--seconds 30]
        [--keyed-calls 400] [--counter-slots N] [--no-keyed] [--subs 2000] [--concurrency 2]

Prints one JSON object per run: idle, peak and final RSS in KiB, requests and statuses, the
shared-data keys the gateway counts and the filter's `wasm memory` log line. Needs wrk
(`make wrk`). Bounded: at most --seconds of load per run (60 by default at most).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlgate_harness as mh
from mlgate_harness.native import native_env, native_filter

API_PATH = "mem"
AML_KEY = "memory-bench-azureml-key"


def key(i: int) -> str:
    return f"mem-key-{i:06d}"


def soak_config(n_subs: int = 2000, keyed_calls: int | None = 400, product_calls: int = 100, **settings) -> dict:
    """One AzureML Studio API (five operations) whose rate limit counts per `x-client` header
    value, one product with a per-subscription rate limit and quota, `n_subs` subscriptions."""
    api = {"id": "mem-api", "name": "Memory API", "path": API_PATH, "service_url": "http://backend.example.test",
           "operations": "azureml-studio",
           "backend_credentials": [{"workspace": "*", "service": "*", "api_key": AML_KEY}]}
    if keyed_calls:
        api["rate_limit"] = {"calls": keyed_calls, "renewal_period": 60, "counter": "header:x-client"}
    return {
        "apis": [api],
        "products": [{"id": "mem", "name": "Memory", "apis": ["mem-api"],
                      "rate_limit": {"calls": product_calls, "renewal_period": 60},
                      "quota": {"calls": 10 ** 9, "renewal_period": 86400}}],
        "subscriptions": [{"id": f"sub-{i:06d}", "product": "mem", "state": "active", "primary_key": key(i)}
                          for i in range(n_subs)],
        **settings,
    }


LUA = r"""-- the hostile mix of bench/memory.py
local n = __SUBS__
local i = 0
local hi = {}
for b = 128, 255 do hi[#hi + 1] = string.char(b) end
hi = table.concat(hi)
local tid = 0
local threads = 0
setup = function(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
init = function(args)
  tid = tid or 0
end
local ws = "/__API__/workspaces/ws/services/svc"
request = function()
  i = i + 1
  local u = string.format("%d-%d-%d", tid, i, os.time())
  local k = string.format("mem-key-%06d", (i * 7919) % n)
  local kind = i % 6
  if kind == 0 then
    return wrk.format("POST", ws .. "/execute?api-version=2.0&details=true",
      {["Ocp-Apim-Subscription-Key"] = k, ["x-client"] = "c" .. u})
  elseif kind == 1 then
    return wrk.format("POST", ws .. "/execute?api-version=2.0&details=true",
      {["Ocp-Apim-Subscription-Key"] = "unknown-" .. u, ["x-client"] = "c" .. u})
  elseif kind == 2 then
    return wrk.format("GET", "/__API__/no/such/operation/" .. u,
      {["Ocp-Apim-Subscription-Key"] = k, ["x-client"] = "c" .. u})
  elseif kind == 3 then
    return wrk.format("GET", ws .. "/jobs/job-" .. u .. "?api-version=2.0",
      {["Ocp-Apim-Subscription-Key"] = k, ["x-client"] = "c" .. u})
  elseif kind == 4 then
    return wrk.format("POST", ws .. "/execute?api-version=2.0&details=true",
      {["Ocp-Apim-Subscription-Key"] = k, ["x-client"] = hi .. u, ["x-junk"] = hi .. hi, ["x-" .. u] = hi})
  else
    return wrk.format("DELETE", ws .. "/jobs/job-" .. u .. "?api-version=2.0",
      {["Ocp-Apim-Subscription-Key"] = k, ["x-client"] = "c" .. u})
  end
end
"""


def lua_script(workdir: str, n_subs: int) -> str:
    path = os.path.join(workdir, "hostile.lua")
    Path(path).write_text(LUA.replace("__SUBS__", str(n_subs)).replace("__API__", API_PATH))
    return path


def rss_kib(pid: int) -> int:
    m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(m.group(1)) if m else 0


def linear_memories(pid: int) -> list[tuple[int, int]]:
    """(mapped KiB, resident KiB) of each Wasm VM's linear memory: V8 reserves 8 GiB for one and
    makes its pages accessible as it grows, so a memory is the mapping that ends where a
    reservation of more than 1 GiB begins."""
    maps, cur = [], None
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        m = re.match(r"([0-9a-f]+)-([0-9a-f]+) ", line)
        if m:
            cur = [int(m.group(1), 16), int(m.group(2), 16), 0]
            maps.append(cur)
        elif line.startswith("Rss:") and cur is not None:
            cur[2] = int(line.split()[1])
    by_end = {m[1]: m for m in maps}
    return [((p[1] - p[0]) >> 10, p[2]) for m in maps if m[1] - m[0] > 1 << 30 and (p := by_end.get(m[0]))]


def snapshot(pid: int, admin: int) -> dict:
    """RSS split into anonymous and file-backed pages (Envoy's binary, V8's code in it), the
    Wasm linear memories, and tcmalloc's view (/memory: allocated, free, thread caches)."""
    st = Path(f"/proc/{pid}/status").read_text()
    field = lambda k: int(re.search(rf"{k}:\s+(\d+) kB", st).group(1))  # noqa: E731
    heap = json.loads(mh.admin_get(admin, "/memory"))
    lin = linear_memories(pid)
    return {"rss": field("VmRSS"), "anon": field("RssAnon"), "file": field("RssFile"),
            "linear_kib": [m for m, _ in lin], "linear_rss": sum(r for _, r in lin),
            "allocated": int(heap["allocated"]) >> 10, "heap": int(heap["heap_size"]) >> 10,
            "free": (int(heap["pageheap_free"]) + int(heap["total_thread_cache"])) >> 10}


def gateway_filters(form: str, config: dict, empty_wasm: Path, wasm: Path, vm_options: dict) -> list:
    cfg = json.dumps(config)
    if form == "none":
        return []
    if form == "empty":
        return [mh.wasm_filter(empty_wasm, None, vm_id="empty")]
    if form == "native":
        return [native_filter(cfg)]
    f = mh.wasm_filter(wasm, cfg, vm_id="mlgate")
    f["typed_config"]["config"]["vm_config"].update(vm_options)
    return [f]


def stat(admin: int, name: str) -> int | None:
    for line in mh.admin_get(admin, f"/stats?filter={name}").splitlines():
        k, _, v = line.partition(": ")
        if k.endswith(name):
            return int(v)
    return None


def filter_facts(form: str, admin: int, log: str) -> dict:
    """The store keys and shared counter slots mlgate counts, and its `wasm memory` log lines."""
    if form not in ("wasm", "native"):
        return {}
    prefix = "dynamicmodulescustom." if form == "native" else "wasmcustom."
    return {"shared_data_keys": stat(admin, prefix + "mlgate.shared_data_keys"),
            "counter_slot_shared": stat(admin, prefix + "mlgate.counter_slot_shared"),
            "wasm_memory_kib": [int(x) for x in re.findall(r"wasm memory (\d+) KiB", Path(log).read_text(errors="replace"))]}


def run(form: str, config: dict, seconds: int, workdir: str, *, concurrency: int = 2, connections: int = 16,
        empty_wasm: Path = mh.EMPTY_WASM, wasm: Path = mh.WASM, vm_options: dict | None = None,
        native_dir: Path | None = None, settle: float = 3.0, bootstrap_extra: dict | None = None) -> dict:
    """One gateway Envoy of `form`, idle then under the hostile mix for `seconds`."""
    seconds = min(seconds, 60)
    up_port, up_admin, gw_port, gw_admin = (mh.free_port() for _ in range(4))
    routes = [{"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": '{"ok":true}'}}}]
    up_cfg = mh.bootstrap(up_admin, [mh.listener("fixed", up_port, [], routes)], [])
    up = mh.start_envoy(mh.write_config(os.path.join(workdir, "upstream.json"), up_cfg),
                        os.path.join(workdir, "upstream.log"), port=up_port, concurrency=1, log_level="warn")
    filters = gateway_filters(form, config, empty_wasm, wasm, vm_options or {})
    gw_cfg = mh.bootstrap(gw_admin, [mh.listener("gateway", gw_port, filters, mh.prefix_route("upstream"))],
                          [mh.static_cluster("upstream", up_port)])
    gw_cfg.update(bootstrap_extra or {})
    log = os.path.join(workdir, f"gateway-{form}.log")
    gw = mh.start_envoy(mh.write_config(os.path.join(workdir, f"gateway-{form}.json"), gw_cfg), log,
                        port=gw_port, admin=gw_admin, concurrency=concurrency,
                        env=native_env(native_dir) if native_dir else native_env(), timeout=120)
    try:
        time.sleep(settle)
        idle_snap = snapshot(gw.pid, gw_admin)
        idle = idle_snap["rss"]
        script = lua_script(workdir, len(config.get("subscriptions", [])) or 1)
        samples = [idle]
        if seconds <= 0:
            return {"form": form, "concurrency": concurrency, "idle": idle_snap, **filter_facts(form, gw_admin, log)}
        wrk = subprocess.Popen(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", script,
                                f"http://127.0.0.1:{gw_port}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        while wrk.poll() is None:
            samples.append(rss_kib(gw.pid))
            time.sleep(0.5)
        out = wrk.communicate()[0]
        samples.append(rss_kib(gw.pid))
        time.sleep(settle)
        after = snapshot(gw.pid, gw_admin)
        m = re.search(r"(\d+) requests in", out)
        return {
            "form": form, "concurrency": concurrency, "seconds": seconds, "idle_kib": idle, "peak_kib": max(samples),
            "growth_kib": max(samples) - idle, "idle": idle_snap, "after": after, "requests": int(m.group(1)) if m else 0,
            "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)) if "Requests/sec" in out else 0.0,
            **filter_facts(form, gw_admin, log), "curve_kib": samples[:: max(1, len(samples) // 12)],
        }
    finally:
        gw.stop()
        up.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--forms", default="none,empty,wasm,native")
    p.add_argument("--seconds", type=int, default=30)
    p.add_argument("--subs", type=int, default=2000)
    p.add_argument("--keyed-calls", type=int, default=400)
    p.add_argument("--product-calls", type=int, default=100)
    p.add_argument("--no-keyed", action="store_true")
    p.add_argument("--counter-slots", type=int)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--settings", default="{}", help="more top-level settings, as JSON")
    p.add_argument("--vm-options", default="{}", help="more vm_config fields for the Wasm form, as JSON")
    p.add_argument("--bootstrap", default="{}", help="more top-level fields of the gateway's bootstrap, as JSON")
    p.add_argument("--settle", type=float, default=3.0, help="seconds between ready and the idle reading")
    p.add_argument("--wasm", type=Path, default=mh.WASM)
    p.add_argument("--empty-wasm", type=Path, default=mh.EMPTY_WASM)
    p.add_argument("--native-dir", type=Path, help="where libmlgate.so is (default: target/release)")
    a = p.parse_args()
    settings = json.loads(a.settings)
    if a.counter_slots:
        settings["counter_slots"] = a.counter_slots
    config = soak_config(a.subs, None if a.no_keyed else a.keyed_calls, a.product_calls, **settings)
    with tempfile.TemporaryDirectory(prefix="mlgate-memory-") as workdir:
        for form in a.forms.split(","):
            r = run(form, config, a.seconds, workdir, concurrency=a.concurrency, connections=a.connections,
                    vm_options=json.loads(a.vm_options), wasm=a.wasm, empty_wasm=a.empty_wasm,
                    native_dir=a.native_dir, bootstrap_extra=json.loads(a.bootstrap), settle=a.settle)
            print(json.dumps(r), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
