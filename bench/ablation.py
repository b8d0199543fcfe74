"""Attribution outside the VM, by ablation (issue 20; `make bench-ablation`).

Builds mlgate once as released and once per bench-only feature `ablate-<action>` of mlgate-wasm
(wasm/Cargo.toml), each leaving out exactly one host action; runs no filter, the empty filter,
the release build and every variant side by side (gateway --concurrency 1, pinned as in
`make bench`), measured in interleaved rounds at the same fixed request rate (CPU per request of
the gateway from /proc, bench/common.py); an action's whole cost (VM side plus what Envoy does
because of it) is the per-round difference release minus variant, median over the rounds.
Then `perf record -e cpu-clock` of the gateway, release mlgate and the empty filter, splits
their CPU between V8's generated code (anonymous maps: the Wasm code, no perf map is written),
the envoy binary, libc and the other shared objects, and the kernel.
Writes bench/results/<date>-ablation.json and .md.

  python bench/ablation.py [--no-build]    ABLATION_ROUNDS (9), ABLATION_SECONDS (4)
"""
from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlgate_harness import EMPTY_WASM, ENVOY, ROOT, WASM, free_port

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    FIXED_RPS, LOAD_CPUS, PIN, RESULTS, SUBS, Proc, bootstrap, check_forwarding, h2load_inputs, key, keyless_status,
    mlgate_config, pinned, prefix_route, run_fixed_rate, run_wrk, upstream_config, wasm_filter, wrk_script)
from run import median_ci  # noqa: E402

ROUNDS = int(os.environ.get("ABLATION_ROUNDS", "9"))
SECONDS = int(os.environ.get("ABLATION_SECONDS", "4"))
PERF_SECONDS = int(os.environ.get("ABLATION_PERF_SECONDS", "8"))
PERF_HZ = 2000
# The action each variant leaves out (its feature is mlgate-wasm/ablate-<name>).
ACTIONS = {
    "header-write": "the upstream header edits (replace/remove/add_header_map_value; also the route re-match they cause)",
    "export": "the filter-state export (4 set_property)",
    "response-headers": "the 3 RateLimit-* response headers (add_header_map_value)",
    "metrics": "the usage metric updates in on_log (increment_metric / record_metric)",
    "cas": "shared data (get + CAS set of the limit records, the report bucket) -> a per-VM map",
    "body": "the body callbacks (on_request_body / on_response_body not exported)",
}
VARIANT_TARGET = ROOT / "target" / "variants" / "ablate"   # never touches target/wasm32-wasip1/release/mlgate.wasm
OUT_DIR = WASM.parent / "ablation"
WASM_OPT_FLAGS = re.search(r"^WASM_OPT_FLAGS := (.+)$", (ROOT / "Makefile").read_text(), re.M).group(1).split()


def build(name: str | None) -> Path:
    """mlgate.wasm with mlgate-wasm/ablate-<name> (None: as released), through wasm-opt as `make build`."""
    features = ["--features", f"mlgate-wasm/ablate-{name}"] if name else []
    subprocess.run(["cargo", "build", "-q", "--release", "--target", "wasm32-wasip1", "-p", "mlgate",
                    "--target-dir", str(VARIANT_TARGET), *features], cwd=ROOT, check=True)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = OUT_DIR / f"mlgate-{name or 'release'}.wasm"
    subprocess.run(["wasm-opt", *WASM_OPT_FLAGS, str(VARIANT_TARGET / "wasm32-wasip1" / "release" / "deps" / "mlgate.wasm"),
                    "-o", str(out)], check=True)
    return out


DSO_CLASSES = (("kernel", re.compile(r"^\[kernel")), ("envoy", re.compile(r"(^|/)envoy$")),
               ("libc", re.compile(r"^(libc|libm|libpthread|ld-linux)[.-]")),
               ("JIT (V8 code, anonymous maps)", re.compile(r"^(\[unknown\]|\[anon|//anon|\[JIT\]|perf-\d+\.map|memfd:)")))


def dso_class(dso: str) -> str:
    return next((c for c, rx in DSO_CLASSES if rx.search(dso)), "other shared objects")


def perf_split(name: str, gw: Proc, fixed: tuple[str, str], workdir: str) -> dict:
    """The gateway sampled with cpu-clock while it serves the fixed rate: its samples by shared
    object (self time), grouped into classes, as shares of the run."""
    data = os.path.join(workdir, f"perf-{name}.data")
    rec = subprocess.Popen(pinned(["perf", "record", "-q", "-e", "cpu-clock", "-F", str(PERF_HZ), "-p", str(gw.pid),
                                   "-o", data, "--", "sleep", str(PERF_SECONDS)], LOAD_CPUS),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    run = run_fixed_rate(gw, gw.port, fixed[0], fixed[1], PERF_SECONDS - 2)
    _, err = rec.communicate(timeout=PERF_SECONDS + 60)
    report = subprocess.run(["perf", "report", "-i", data, "--sort", "dso", "--stdio", "-q", "--percent-limit", "0"],
                            capture_output=True, text=True).stdout
    dsos: dict[str, float] = {}
    for line in report.splitlines():
        m = re.match(r"^\s*([\d.]+)%\s+(.+?)\s*$", line)
        if m:
            dsos[m.group(2)] = dsos.get(m.group(2), 0.0) + float(m.group(1))
    classes: dict[str, float] = {}
    for dso, pct in dsos.items():
        classes[dso_class(dso)] = classes.get(dso_class(dso), 0.0) + pct
    head = subprocess.run(["perf", "report", "-i", data, "--stdio", "--sort", "dso"], capture_output=True, text=True).stdout
    samples, ns = re.search(r"# Samples: (\S+)", head), re.search(r"# Event count \(approx\.\): (\d+)", head)
    return {"dsos": dsos, "classes": classes, "cpu_us_per_req_under_perf": run["cpu_us_per_req"], "perf_stderr": err[-500:],
            "samples": samples.group(1) if samples else None, "sampled_cpu_s": int(ns.group(1)) / 1e9 if ns else None}


def main():
    if not shutil.which("perf"):
        raise SystemExit("perf is missing (make perf-deps installs it)")
    started = time.time()
    if "--no-build" in sys.argv:
        paths = {n: OUT_DIR / f"mlgate-{n or 'release'}.wasm" for n in (None, *ACTIONS)}
    else:
        paths = {n: build(n) for n in (*ACTIONS, None)}   # the release build last
    if not EMPTY_WASM.exists():
        raise SystemExit(f"{EMPTY_WASM} is missing (make bench-ablation builds it)")
    workdir = tempfile.mkdtemp(prefix="mlgate-ablation-")
    up_port, up_admin = free_port(), free_port()
    upstream = Proc("upstream", upstream_config(up_port, up_admin), workdir, 1, up_port, up_admin)
    script, fixed = wrk_script(workdir, SUBS), h2load_inputs(workdir, SUBS)
    configs = {"no-filter": [], "empty-wasm": [wasm_filter(EMPTY_WASM, None, "empty")]}
    configs["mlgate"] = [wasm_filter(paths[None], mlgate_config(SUBS), "mlgate")]
    for n in ACTIONS:
        configs[f"without {n}"] = [wasm_filter(paths[n], mlgate_config(SUBS), "mlgate")]
    gateways = {}
    for name, filters in configs.items():
        port, admin = free_port(), free_port()
        safe = re.sub(r"[^a-z0-9-]", "-", name)
        gateways[name] = Proc(safe, bootstrap(port, admin, up_port, filters, prefix_route()), workdir, 1, port, admin)
        check_forwarding(port, key(7))
    assert keyless_status(gateways["mlgate"].port) == 401
    for gw in gateways.values():                 # warm-up
        run_wrk(gw.port, script, 2)
        run_fixed_rate(gw, gw.port, fixed[0], fixed[1], 2)
    rounds: dict[str, list[float]] = {n: [] for n in gateways}
    fails: dict[str, int] = {n: 0 for n in gateways}
    for _ in range(ROUNDS):                      # interleaved: drift and the neighbours' builds hit all alike
        for name, gw in gateways.items():
            r = run_fixed_rate(gw, gw.port, fixed[0], fixed[1], SECONDS)
            rounds[name].append(r["cpu_us_per_req"])
            fails[name] += r["fixed_done"] - r["fixed_2xx"]
    perf = {n: perf_split(n, gateways[n], fixed, workdir) for n in ("empty-wasm", "mlgate")}
    for gw in gateways.values():
        gw.stop()
    upstream.stop()

    res: dict[str, dict] = {}
    for name, cpu in rounds.items():
        over = [c - b for c, b in zip(cpu, rounds["no-filter"])]
        res[name] = dict(zip(("cpu", "cpu_lo", "cpu_hi"), median_ci(cpu)))
        res[name].update(zip(("overhead", "overhead_lo", "overhead_hi"), median_ci(over)))
        res[name]["non2xx"] = fails[name]
        if name.startswith("without "):
            cost = [m - c for m, c in zip(rounds["mlgate"], cpu)]
            res[name].update(zip(("cost", "cost_lo", "cost_hi"), median_ci(cost)))
    for n, p in perf.items():
        p["us_per_req"] = {c: pct / 100 * res[n]["cpu"] for c, pct in p["classes"].items()}

    cpu_model = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                      if l.startswith("model name")), "?")
    envoy_v = subprocess.run([str(ENVOY), "--version"], capture_output=True, text=True).stdout.strip().split("version: ")[-1]
    load = Path("/proc/loadavg").read_text().split()[:3]
    lines = [f"Machine: {cpu_model}, {os.cpu_count()} cores; Envoy {envoy_v}; gateway --concurrency 1"
             f"{', pinned' if PIN else ''}; {ROUNDS} interleaved rounds x {SECONDS} s at a fixed {FIXED_RPS} req/s (h2load); "
             f"load average at the end {' '.join(load)} (other builds on the machine). CPU us/req: median "
             f"[95% interval from the rounds; n <= 5 gives min-max]. An action's cost: median over the rounds of "
             f"(release mlgate - the variant without it), paired by round.", "",
             "| configuration | CPU us/req | overhead vs no filter | action's whole cost | non-2xx |", "|---|---:|---:|---:|---:|"]
    for name, r in res.items():
        cost = f"{r['cost']:.2f} [{r['cost_lo']:.2f}, {r['cost_hi']:.2f}]" if "cost" in r else ""
        lines.append(f"| {name} | {r['cpu']:.2f} [{r['cpu_lo']:.2f}, {r['cpu_hi']:.2f}] | "
                     f"{r['overhead']:.2f} [{r['overhead_lo']:.2f}, {r['overhead_hi']:.2f}] | {cost} | {r['non2xx']} |")
    lines += ["", "What each variant leaves out:", ""] + [f"- without {n}: {what}" for n, what in ACTIONS.items()]
    classes = sorted({c for p in perf.values() for c in p["classes"]}, key=lambda c: -perf["mlgate"]["classes"].get(c, 0))
    lines += ["", f"perf record -e cpu-clock -F {PERF_HZ} of the gateway, {PERF_SECONDS} s at the fixed rate; self samples by "
              f"shared object; us/req = share x the configuration's median CPU us/req above "
              f"(samples: empty {perf['empty-wasm']['samples']}, mlgate {perf['mlgate']['samples']}).", "",
              "| where | empty filter % | mlgate % | empty us/req | mlgate us/req | mlgate - empty us/req |",
              "|---|---:|---:|---:|---:|---:|"]
    for c in classes:
        e, m = perf["empty-wasm"], perf["mlgate"]
        lines.append(f"| {c} | {e['classes'].get(c, 0):.1f} | {m['classes'].get(c, 0):.1f} | {e['us_per_req'].get(c, 0):.2f} | "
                     f"{m['us_per_req'].get(c, 0):.2f} | {m['us_per_req'].get(c, 0) - e['us_per_req'].get(c, 0):+.2f} |")
    elapsed = time.time() - started
    lines += ["", f"Wall time: {elapsed:.0f} s."]
    table = "\n".join(lines)
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    (RESULTS / f"{stamp}-ablation.md").write_text(table + "\n")
    (RESULTS / f"{stamp}-ablation.json").write_text(json.dumps({
        "machine": cpu_model, "cores": os.cpu_count(), "envoy": envoy_v, "rounds": ROUNDS, "seconds": SECONDS,
        "fixed_rps": FIXED_RPS, "loadavg_end": load, "actions": ACTIONS, "cpu_rounds": rounds, "results": res,
        "perf": perf, "wall_seconds": elapsed}, indent=2))
    print(f"\nwrote bench/results/{stamp}-ablation.md and .json")


if __name__ == "__main__":
    main()
