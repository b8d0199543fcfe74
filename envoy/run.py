"""`make run`: Azurite (blob) on :10000, azureml-sim on :8081 and Envoy + mlgate on :8080 with
envoy/demo.yaml, a sample CSV uploaded for BES, and the calls to paste. Ctrl-C stops all.

`MLGATE_FORM=native make run` runs mlgate as the Envoy dynamic module (libmlgate.so) instead of
the .wasm: the same demo.yaml with its Wasm filter swapped for the native one, same
configuration (written to .run/envoy-native.json)."""
import json
import os
import secrets
import signal
import sys
import time

from mlgate_harness import AZURITE, ROOT, SIM, Process, envoy_args
from mlgate_harness.blobclient import put_blob

RUN = ROOT / ".run"
procs: list[Process] = []


def start(name, args, port, env=None):
    try:
        procs.append(Process(args, RUN / f"{name}.log", port=port, env=env, cwd=ROOT))
    except RuntimeError:
        stop(code=f"{name} did not start; see {RUN / (name + '.log')}")


def stop(*_, code=0):
    for p in reversed(procs):
        p.stop()
    sys.exit(code)


def main():
    RUN.mkdir(exist_ok=True)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    api_key = os.environ.get("AZUREML_API_KEY") or secrets.token_hex(24)
    start("azurite", [AZURITE, "--silent", "--disableTelemetry", "--skipApiVersionCheck", "--inMemoryPersistence",
                      "--blobHost", "127.0.0.1", "--blobPort", "10000"], 10000)
    start("azureml-sim", [SIM, "--listen", "127.0.0.1:8081", "--api-key", api_key], 8081)
    form = os.environ.get("MLGATE_FORM") or "wasm"
    if form == "native":
        import yaml
        from mlgate_harness import write_config
        from mlgate_harness.native import check_pinned_envoy, native_env, wasm_to_native
        check_pinned_envoy()
        config = write_config(RUN / "envoy-native.json", wasm_to_native(yaml.safe_load((ROOT / "envoy" / "demo.yaml").read_text())))
        start("envoy", envoy_args(config, concurrency=2, log_level="warn"), 8080, {"AZUREML_API_KEY": api_key, **native_env()})
    elif form == "wasm":
        start("envoy", envoy_args("envoy/demo.yaml", concurrency=2, log_level="warn"), 8080, {"AZUREML_API_KEY": api_key})
    else:
        stop(code=f"MLGATE_FORM must be wasm or native, not {form!r}")
    put_blob(10000, "demo", "input.csv", b'Col1,Col2\n1,This is a good day\n2,"Hello, gateway"\n')

    gw = "http://127.0.0.1:8080/azureml-demo/workspaces/demo-ws/services/demo-svc"
    rrs = json.dumps({"Inputs": {"input1": {"ColumnNames": ["Col2"], "Values": [["This is a good day"]]}}, "GlobalParameters": {}})
    job = json.dumps({"Input": {"ConnectionString": "UseDevelopmentStorage=true", "RelativeLocation": "/demo/input.csv"},
                      "Outputs": {"output1": {"ConnectionString": "UseDevelopmentStorage=true", "RelativeLocation": "/demo/output.csv"}},
                      "GlobalParameters": {}})
    key = "-H 'Ocp-Apim-Subscription-Key: alice-demo-key'"
    print(f"""
mlgate ({form} form) is up: Envoy :8080 (admin :9901) -> azureml-sim :8081, Azurite :10000. Logs in .run/. Ctrl-C stops all.

Developer portal (APIs, operations, OpenAPI export, Try it, My subscription; key alice-demo-key):
  http://127.0.0.1:8080/developer/

RRS (request-response), subscription alice (Starter: 5 calls/minute, 100 calls/week):
  curl -s -X POST '{gw}/execute?api-version=2.0&details=true' {key} -H 'Content-Type: application/json' -d '{rrs}'

BES (batch), input already uploaded to Azurite as /demo/input.csv:
  JOB=$(curl -s -X POST '{gw}/jobs?api-version=2.0' {key} -H 'Content-Type: application/json' -d '{job}' | tr -d '"')
  curl -s -X POST "{gw}/jobs/$JOB/start?api-version=2.0" {key} -H 'Content-Length: 0'
  curl -s "{gw}/jobs/$JOB?api-version=2.0" {key}
  curl -s "$(curl -s "{gw}/jobs/$JOB?api-version=2.0" {key} | python3 -c 'import json,sys; o=json.load(sys.stdin)["Results"]["output1"]; print(o["BaseLocation"]+o["RelativeLocation"]+o["SasBlobToken"])')"

LLM (OpenAI-compatible, served by azureml-sim), Starter's token limit: 2,000 tokens/minute, 100,000/day,
reserved before the call and settled to its usage (x-remaining-tokens says what is left):
  curl -si -X POST 'http://127.0.0.1:8080/llm/chat/completions' {key} -H 'Content-Type: application/json' -d '{{"messages": [{{"role": "user", "content": "Hello"}}], "max_tokens": 20}}'
  curl -sN -X POST 'http://127.0.0.1:8080/llm/chat/completions' {key} -H 'Content-Type: application/json' -d '{{"messages": [{{"role": "user", "content": "Hello"}}], "stream": true}}'

Online endpoint (Azure ML v2 scoring; azureml-model-deployment picks a deployment):
  curl -s -X POST 'http://127.0.0.1:8080/online/score' {key} -H 'azureml-model-deployment: blue' -H 'Content-Type: application/json' -d '{{"input_data": {{"columns": ["Col2"], "index": [0], "data": [["This is a good day"]]}}}}'

Without a key (401), or bob's key (Unlimited product, stored only as its SHA-256):
  curl -si -X POST '{gw}/execute?api-version=2.0&details=true' -d '{{}}'
  curl -s -X POST '{gw}/execute?api-version=2.0&details=true' -H 'Ocp-Apim-Subscription-Key: bob-demo-key' -d '{rrs}'

Usage (this Envoy since it started): the dashboard (admin key demo-admin-key), APIM's reports, Prometheus:
  http://127.0.0.1:8080/mlgate-admin/
  curl -s http://127.0.0.1:8080/mlgate-admin/reports/byApi -H 'Authorization: Bearer demo-admin-key'
  curl -s http://127.0.0.1:9901/stats/prometheus | grep '^mlgate_calls'
""", flush=True)
    while all(p.poll() is None for p in procs):
        time.sleep(0.5)
    print("a process exited; stopping", file=sys.stderr)
    stop()


if __name__ == "__main__":
    main()
