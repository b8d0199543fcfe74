"""The fleet-wide limits part of `make bench` (issue 9), also runnable alone
(`.venv/bin/python bench/fleet.py`):

4. mlgate, local store     - shared data (the same gateway as bench/run.py's (4))
5. mlgate, remote store    - `limits_store: {"rls": ...}`, mlgate-rls over redis-server
6. native global ratelimit - Envoy's own chain with `envoy.filters.http.ratelimit` (instead of
                             local_ratelimit) calling the same mlgate-rls with the same
                             descriptors (`limit` p:bench and q:bench, `subscription` from
                             api_key_auth's client id): the anchor for the cost of a remote check

Same load, upstream and rounds as bench/run.py (gateways --concurrency 1). Also the CPU that
mlgate-rls and redis-server spend per request, and throughput with 1 and 3 gateway Envoys in
front of one store.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as base  # noqa: E402  (bench/common.py: configs, processes, measurement)

import mlgate_harness as mh  # noqa: E402
from mlgate_harness import WASM, free_port  # noqa: E402
from mlgate_harness import fleet  # noqa: E402

RLS_CLUSTER = "rls"


def bootstrap(listen: int, admin: int, upstream: int, rls_port: int, http_filters: list, routes: list, secrets=None) -> dict:
    b = base.bootstrap(listen, admin, upstream, http_filters, routes, secrets)
    b["static_resources"]["clusters"].append(fleet.grpc_cluster(RLS_CLUSTER, rls_port))
    return b


def remote_mlgate() -> tuple[list, list, None]:
    cfg = base.mlgate_config(base.SUBS, limits_store=fleet.rls_store(RLS_CLUSTER, timeout_ms=500, on_failure="deny"))
    return [base.wasm_filter(WASM, cfg, "mlgate")], base.prefix_route(), None


def native_global() -> tuple[list, list, list]:
    """bench/run.py's native chain, its local_ratelimit replaced by the global rate limit filter."""
    filters, routes, secrets = base.native_chain(base.SUBS)
    filters = [f for f in filters if f["name"] != "envoy.filters.http.local_ratelimit"]
    auth = next(i for i, f in enumerate(filters) if f["name"] == "envoy.filters.http.api_key_auth")
    filters.insert(auth + 1, {"name": "envoy.filters.http.ratelimit", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
        "domain": "mlgate", "timeout": "0.5s", "failure_mode_deny": True,
        "rate_limit_service": {"grpc_service": {"envoy_grpc": {"cluster_name": RLS_CLUSTER}},
                               "transport_api_version": "V3"}}})
    for r in routes:
        r["route"]["rate_limits"] = [
            {"actions": [{"generic_key": {"descriptor_key": "limit", "descriptor_value": limit}},
                         {"request_headers": {"header_name": "x-client-id", "descriptor_key": "subscription"}}]}
            for limit in ("p:bench", "q:bench")]
    return filters, routes, secrets


def cpu(procs) -> float:
    return sum(p.cpu_seconds() for p in procs)


def run(workdir: str | None = None, upstream_port: int | None = None) -> dict:
    """Measures (4), (5), (6) and the 1 -> 3 Envoy scaling; returns the results and the
    markdown lines of the report."""
    workdir = workdir or tempfile.mkdtemp(prefix="mlgate-bench-fleet-")
    own_upstream = None
    if upstream_port is None:
        upstream_port, up_admin = free_port(), free_port()
        own_upstream = base.Proc("upstream", base.upstream_config(upstream_port, up_admin), workdir, 1, upstream_port)
    redis_port, rls_port = free_port(), free_port()
    redis = fleet.start_redis(os.path.join(workdir, "redis"), redis_port, os.path.join(workdir, "redis.log"), fsync="everysec")
    # mlgate-rls loads the same configuration as the remote filter.
    cfg_path = os.path.join(workdir, "mlgate-remote.json")
    Path(cfg_path).write_text(base.mlgate_config(base.SUBS, limits_store=fleet.rls_store(RLS_CLUSTER)))
    rls = fleet.start_rls(cfg_path, rls_port, redis_port, os.path.join(workdir, "mlgate-rls.log"))
    store = [rls, redis]
    script = base.wrk_script(workdir, base.SUBS)
    fixed = base.h2load_inputs(workdir, base.SUBS)

    configs = {
        "mlgate-local": ([base.wasm_filter(WASM, base.mlgate_config(base.SUBS), "mlgate")], base.prefix_route(), None),
        "mlgate-remote": remote_mlgate(),
        "native-global-ratelimit": native_global(),
    }
    gateways = {}
    try:
        for name, (fs, rs, sec) in configs.items():
            port, admin = free_port(), free_port()
            gateways[name] = base.Proc(name, bootstrap(port, admin, upstream_port, rls_port, fs, rs, sec), workdir, 1, port)
            base.check_forwarding(port, base.key(7))
            assert base.keyless_status(port) == 401, name
        rounds = {n: [] for n in gateways}
        for gw in gateways.values():
            base.run_wrk(gw.port, script, 2)
        for _ in range(base.ROUNDS):
            for name, gw in gateways.items():
                c0 = cpu(store)
                r = base.measure(gw, script, base.SECONDS, fixed)
                r["store_cpu_us_per_req"] = (cpu(store) - c0) / max(r["requests"] + r.get("fixed_done", 0), 1) * 1e6
                rounds[name].append(r)
        summary = {}
        for name, rs in rounds.items():
            c = [r["cpu_us_per_req"] for r in rs]
            summary[name] = {
                "rps": statistics.median(r["rps"] for r in rs),
                "p50_ms": statistics.median(r["p50_ms"] for r in rs),
                "p99_ms": statistics.median(r["p99_ms"] for r in rs),
                "cpu_us_per_req": statistics.median(c), "cpu_us_spread": max(c) - min(c),
                "store_cpu_us_per_req": statistics.median(r["store_cpu_us_per_req"] for r in rs),
                "non2xx": sum(r["non2xx"] for r in rs) + sum(r["fixed_done"] - r["fixed_2xx"] for r in rs),
                "rounds": rs,
            }
        for gw in gateways.values():
            gw.stop()
        gateways.clear()

        # Scaling: the same remote-store gateway, 1 then 3 Envoys (each --concurrency 1) in front
        # of the one mlgate-rls and Redis, all loaded at once (one wrk each).
        scaled = []
        for i in range(3):
            port, admin = free_port(), free_port()
            fs, rs, sec = remote_mlgate()
            scaled.append(base.Proc(f"remote-{i}", bootstrap(port, admin, upstream_port, rls_port, fs, rs, sec), workdir, 1, port))
            base.run_wrk(port, script, 2)
        scaling = {}
        for n in (1, 3):
            results = [None] * n

            def load(i):
                results[i] = base.run_wrk(scaled[i].port, script, base.SECONDS)
            c0 = cpu(store)
            threads = [threading.Thread(target=load, args=(i,)) for i in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            total = sum(r["rps"] for r in results)
            scaling[n] = {"rps": total, "p99_ms": max(r["p99_ms"] for r in results),
                          "non2xx": sum(r["non2xx"] for r in results),
                          "store_cpu_us_per_req": (cpu(store) - c0) / max(sum(r["requests"] for r in results), 1) * 1e6}
        for gw in scaled:
            gw.stop()
    finally:
        for gw in gateways.values():
            gw.stop()
        rls.stop()
        redis.stop()
        if own_upstream:
            own_upstream.stop()

    loc, rem, nat = summary["mlgate-local"], summary["mlgate-remote"], summary["native-global-ratelimit"]
    targets = [
        ("(5) mlgate remote throughput >= (6) native global rate limit", rem["rps"] >= nat["rps"],
         f"{rem['rps']:,.0f} vs {nat['rps']:,.0f} req/s"),
        ("(5) mlgate remote p99 < local mode's + 1 ms", rem["p99_ms"] < loc["p99_ms"] + 1.0,
         f"{rem['p99_ms']:.2f} vs {loc['p99_ms']:.2f} ms"),
    ]
    lines = ["Fleet-wide limits (same load; gateway --concurrency 1; mlgate-rls and redis-server "
             "(append-only, fsync every second) on the same 2 cores; store CPU = mlgate-rls + redis-server "
             "user+sys over both load phases / requests):", "",
             "| configuration | req/s | p50 ms | p99 ms | gateway CPU us/req | store CPU us/req | non-2xx |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for label, name in (("(4) mlgate, local store", "mlgate-local"), ("(5) mlgate, remote store", "mlgate-remote"),
                        ("(6) native chain, global ratelimit filter", "native-global-ratelimit")):
        s = summary[name]
        lines.append(f"| {label} | {s['rps']:,.0f} | {s['p50_ms']:.3f} | {s['p99_ms']:.3f} | {s['cpu_us_per_req']:.2f} "
                     f"(±{s['cpu_us_spread'] / 2:.2f}) | {s['store_cpu_us_per_req']:.2f} | {s['non2xx']} |")
    lines += ["", "Remote store, gateway Envoys in front of one mlgate-rls + Redis (all loaded at once):", "",
              "| Envoys | total req/s | worst p99 ms | store CPU us/req | non-2xx |", "|---:|---:|---:|---:|---:|"]
    for n, s in scaling.items():
        lines.append(f"| {n} | {s['rps']:,.0f} | {s['p99_ms']:.3f} | {s['store_cpu_us_per_req']:.2f} | {s['non2xx']} |")
    lines += ["", "| target | result | measured |", "|---|---|---|"]
    for t, ok, what in targets:
        lines.append(f"| {t} | {'PASS' if ok else 'MISS'} | {what} |")
    return {"summary": summary, "scaling": scaling,
            "targets": [{"target": t, "pass": ok, "measured": w} for t, ok, w in targets], "lines": lines}


if __name__ == "__main__":
    import datetime
    import json
    res = run()
    text = "\n".join(res["lines"])
    print(text)
    base.RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    (base.RESULTS / f"{stamp}-fleet.md").write_text(text + "\n")
    (base.RESULTS / f"{stamp}-fleet.json").write_text(json.dumps({k: v for k, v in res.items() if k != "lines"}, indent=2))
    print(f"\nwrote bench/results/{stamp}-fleet.md and .json")
