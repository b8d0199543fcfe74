"""`make run-fleet`: fleet-wide limits on one machine. redis-server (:6390, append-only file in
.run/fleet/), mlgate-rls (:8091) and two Envoys with the demo configuration sharing one count
through it: :8080 (admin :9901) and :8082 (admin :9902), both in front of azureml-sim (:8081)
and Azurite (:10000). Alice's Starter limits (5 calls/minute, 100/week) hold across both
gateways. Ctrl-C stops all; counts stay in Redis for the next run."""
import json
import os
import secrets
import signal
import sys
import time

import yaml

from mlgate_harness import AZURITE, ROOT, SIM, Process, envoy_args, write_config
from mlgate_harness import fleet
from mlgate_harness.blobclient import put_blob

RUN = ROOT / ".run" / "fleet"
REDIS_PORT, RLS_PORT = 6390, 8091
GATEWAYS = [(8080, 9901), (8082, 9902)]
procs: list[Process] = []


def start(name, make):
    try:
        procs.append(make())
    except RuntimeError as e:
        stop(code=f"{name} did not start: {e}")


def stop(*_, code=0):
    for p in reversed(procs):
        p.stop()
    sys.exit(code)


def wasm_filter(config: dict) -> dict:
    """demo.yaml's mlgate filter config."""
    for lst in config["static_resources"]["listeners"]:
        for chain in lst["filter_chains"]:
            for f in chain["filters"]:
                for hf in f["typed_config"].get("http_filters", []):
                    if hf["name"] == "mlgate":
                        return hf["typed_config"]["config"]
    raise SystemExit("no mlgate filter in envoy/demo.yaml")


def main():
    RUN.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    api_key = os.environ.get("AZUREML_API_KEY") or secrets.token_hex(24)

    demo = yaml.safe_load((ROOT / "envoy" / "demo.yaml").read_text())
    plugin = json.loads(wasm_filter(demo)["configuration"]["value"])
    plugin["limits_store"] = fleet.rls_store(timeout_ms=100, on_failure="deny")
    (RUN / "mlgate.json").write_text(json.dumps(plugin, indent=2))

    start("redis-server", lambda: fleet.start_redis(RUN / "redis", REDIS_PORT, RUN / "redis.log", fsync="everysec"))
    start("mlgate-rls", lambda: fleet.start_rls(RUN / "mlgate.json", RLS_PORT, REDIS_PORT, RUN / "mlgate-rls.log"))
    start("azurite", lambda: Process([AZURITE, "--silent", "--disableTelemetry", "--skipApiVersionCheck",
                                      "--inMemoryPersistence", "--blobHost", "127.0.0.1", "--blobPort", "10000"],
                                     RUN / "azurite.log", port=10000, cwd=ROOT))
    start("azureml-sim", lambda: Process([SIM, "--listen", "127.0.0.1:8081", "--api-key", api_key],
                                         RUN / "azureml-sim.log", port=8081, cwd=ROOT))
    for i, (port, admin) in enumerate(GATEWAYS):
        cfg = yaml.safe_load((ROOT / "envoy" / "demo.yaml").read_text())
        wasm_filter(cfg)["configuration"]["value"] = json.dumps(plugin)
        cfg["admin"]["address"]["socket_address"]["port_value"] = admin
        cfg["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = port
        cfg["static_resources"]["clusters"].append(fleet.grpc_cluster("rls", RLS_PORT))
        path = write_config(RUN / f"envoy-{i}.json", cfg)
        start(f"envoy :{port}", lambda: Process(envoy_args(path, concurrency=2, log_level="warn"), RUN / f"envoy-{i}.log",
                                                port=port, env={"AZUREML_API_KEY": api_key}, cwd=ROOT))
    put_blob(10000, "demo", "input.csv", b'Col1,Col2\n1,This is a good day\n2,"Hello, gateway"\n')

    rrs = json.dumps({"Inputs": {"input1": {"ColumnNames": ["Col2"], "Values": [["This is a good day"]]}}, "GlobalParameters": {}})
    path = "/azureml-demo/workspaces/demo-ws/services/demo-svc/execute?api-version=2.0&details=true"
    print(f"""
mlgate fleet is up: Envoys :8080 and :8082 -> azureml-sim :8081; limits counted once, in
redis-server :{REDIS_PORT} through mlgate-rls :{RLS_PORT}. Logs in .run/fleet/. Ctrl-C stops all.

Alice (Starter: 5 calls/minute) alternating between the two gateways: calls 1-5 answer 200,
the sixth gets APIM's 429, whichever gateway it reaches:
  for i in 1 2 3; do for p in 8080 8082; do
    curl -s -o /dev/null -w "$p %{{http_code}}\\n" -X POST "http://127.0.0.1:$p{path}" \\
      -H 'Ocp-Apim-Subscription-Key: alice-demo-key' -H 'Content-Type: application/json' -d '{rrs}'
  done; done

The records (one hash per subscription: mlgate's record bytes, a version, the last write ids):
  redis-cli -p {REDIS_PORT} keys 'mlgate/*'
""", flush=True)
    while all(p.poll() is None for p in procs):
        time.sleep(0.5)
    print("a process exited; stopping", file=sys.stderr)
    stop()


if __name__ == "__main__":
    main()
