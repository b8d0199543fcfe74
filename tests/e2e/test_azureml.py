"""AzureML through the gateway: Envoy + mlgate in front of azureml-sim (and Azurite for BES)."""
import json
import time

import pytest

from mlgate_harness import SIM, Process, free_port
from mlgate_harness.blobclient import DEV_ACCOUNT, connection_string, get_url, put_blob
from conftest import SIM_KEY
from harness import Envoy

# Both forms of mlgate (the .wasm and the native module) pass the same suite.
pytestmark = pytest.mark.forms("wasm", "native")

KEY = {"Ocp-Apim-Subscription-Key": "alice-primary"}
BASE = "/azureml-demo/workspaces/ws1/services/svc1"
RRS_BODY = {"Inputs": {"input1": {"ColumnNames": ["Col2"], "Values": [["This is a good day"]]}}, "GlobalParameters": {}}


def config(sim_port: int, api_key: str = SIM_KEY) -> dict:
    return {
        "apis": [{
            "id": "azureml-demo", "name": "AzureML Demo API", "path": "azureml-demo",
            "service_url": f"http://127.0.0.1:{sim_port}",
            "operations": "azureml-studio",
            "backend_credentials": [{"workspace": "*", "service": "*", "api_key": api_key}],
        }],
        "products": [{"id": "starter", "name": "Starter", "apis": ["azureml-demo"]}],
        "subscriptions": [{"id": "alice", "product": "starter", "state": "active", "primary_key": "alice-primary"}],
    }


@pytest.fixture(scope="module")
def env(azurite, azureml_sim, form):
    e = Envoy(config(azureml_sim.port), azureml_sim.port, concurrency=2)
    yield e
    e.stop()


def post(e, path, body, headers=KEY):
    return e.request("POST", path, {**headers, "Content-Type": "application/json"}, json.dumps(body).encode())


def test_rrs_returns_hashed_features(env):
    r = post(env, f"{BASE}/execute?api-version=2.0&details=true", RRS_BODY)
    assert r.status == 200, r
    table = r.json()["Results"]["output1"]
    assert table["type"] == "table"
    value = table["value"]
    assert value["ColumnNames"] == ["Col2"] + [f"Col2_HashingFeature.{i}" for i in range(8)]
    assert value["ColumnTypes"] == ["String"] + ["Int32"] * 8
    # Golden: MurmurHash3 of the 5 tokens and 4 bigrams, 3 bits (see azureml-sim/golden/check.py).
    assert value["Values"] == [["This is a good day", "1", "1", "2", "2", "0", "2", "0", "1"]]


def test_rrs_column_types_only_with_details(env):
    """The RRS help page: `details=true` adds ColumnTypes; `details=false` answers without them."""
    r = post(env, f"{BASE}/execute?api-version=2.0&details=false", RRS_BODY)
    assert r.status == 200, r
    value = r.json()["Results"]["output1"]["value"]
    assert "ColumnTypes" not in value
    assert value["Values"] == [["This is a good day", "1", "1", "2", "2", "0", "2", "0", "1"]]


def test_rrs_several_rows_and_bad_input(env):
    body = {"Inputs": {"input1": {"ColumnNames": ["Col1", "Col2"], "Values": [["1", "hello world"], ["2", "a b c"]]}},
            "GlobalParameters": {}}
    r = post(env, f"{BASE}/execute?api-version=2.0&details=true", body)
    assert r.status == 200
    rows = r.json()["Results"]["output1"]["value"]["Values"]
    assert [row[0] for row in rows] == ["hello world", "a b c"]
    assert sum(int(x) for x in rows[1][1:]) == 5     # 3 tokens + 2 bigrams
    bad = {"Inputs": {"input1": {"ColumnNames": ["Text"], "Values": [["x"]]}}}
    r = post(env, f"{BASE}/execute?api-version=2.0&details=true", bad)
    assert r.status == 400
    # The documented table: a missing input column is a user argument error.
    assert r.json()["error"]["code"] == "BadUserArgument"
    assert r.json()["error"]["details"][0]["code"] == "InputMismatchError"
    r = env.request("POST", f"{BASE}/execute?api-version=2.0&details=true", KEY, b"not json")
    assert r.status == 400 and r.json()["error"]["code"] == "BadArgument"


def test_wrong_backend_key_surfaces_azureml_401(azureml_sim):
    e = Envoy(config(azureml_sim.port, api_key="not-the-sim-key"), azureml_sim.port)
    try:
        r = post(e, f"{BASE}/execute?api-version=2.0&details=true", RRS_BODY)
        assert r.status == 401
        assert r.json() == {"error": {"code": "Unauthorized", "message": "Request is unauthorized to access resource.",
                                      "details": [{"code": "ScoreRequestUnauthorized", "message": "Invalid credentials provided."}]}}
    finally:
        e.stop()


@pytest.mark.parametrize("conn_kind", ["explicit", "development"])
def test_bes_round_trip(env, azurite, conn_kind):
    csv_in = b'Col1,Col2\n1,This is a good day\n2,"hello, world"\n'
    container = f"in-{conn_kind}"
    put_blob(azurite.port, container, "input.csv", csv_in)
    conn = connection_string(azurite.port) if conn_kind == "explicit" else "UseDevelopmentStorage=true"
    job = {"Input": {"ConnectionString": conn, "RelativeLocation": f"/{container}/input.csv"},
           "Outputs": {"output1": {"ConnectionString": conn, "RelativeLocation": f"/out-{conn_kind}/result.csv"}},
           "GlobalParameters": {}}
    r = post(env, f"{BASE}/jobs?api-version=2.0", job)
    assert r.status == 200, r
    job_id = r.json()
    assert isinstance(job_id, str) and job_id
    r = env.request("GET", f"{BASE}/jobs/{job_id}?api-version=2.0", KEY)
    assert r.json()["StatusCode"] == "NotStarted"
    r = env.request("POST", f"{BASE}/jobs/{job_id}/start?api-version=2.0", KEY, b"")
    assert r.status == 200, r
    status = None
    for _ in range(200):
        status = env.request("GET", f"{BASE}/jobs/{job_id}?api-version=2.0", KEY).json()
        if status["StatusCode"] in ("Finished", "Failed", "Cancelled"):
            break
        time.sleep(0.05)
    assert status["StatusCode"] == "Finished", status
    out = status["Results"]["output1"]
    assert out["BaseLocation"] == f"http://127.0.0.1:{azurite.port}/{DEV_ACCOUNT}/"
    assert out["RelativeLocation"] == f"out-{conn_kind}/result.csv"
    assert out["SasBlobToken"].startswith("?sv=")
    # The client downloads the result over plain HTTP with the SAS, as AzureML's samples do.
    code, data = get_url(out["BaseLocation"] + out["RelativeLocation"] + out["SasBlobToken"])
    assert code == 200, data
    lines = data.decode().splitlines()
    assert lines[0] == "Col2," + ",".join(f"Col2_HashingFeature.{i}" for i in range(8))
    assert lines[1] == "This is a good day,1,1,2,2,0,2,0,1"
    assert lines[2].startswith('"hello, world",')
    # Without the SAS the blob is not readable.
    assert get_url(out["BaseLocation"] + out["RelativeLocation"])[0] in (401, 403, 404)
    # Delete; then the job is gone (AzureML's 404 body through the gateway).
    assert env.request("DELETE", f"{BASE}/jobs/{job_id}?api-version=2.0", KEY).status == 200
    r = env.request("GET", f"{BASE}/jobs/{job_id}?api-version=2.0", KEY)
    assert r.status == 404 and r.json()["error"]["code"] == "NotFound"


def test_bes_failure_and_cancel(env, azurite):
    conn = connection_string(azurite.port)
    job = {"Input": {"ConnectionString": conn, "RelativeLocation": "/nowhere/missing.csv"},
           "Outputs": {"output1": {"ConnectionString": conn, "RelativeLocation": "/out/x.csv"}}}
    job_id = post(env, f"{BASE}/jobs?api-version=2.0", job).json()
    assert env.request("POST", f"{BASE}/jobs/{job_id}/start?api-version=2.0", KEY, b"").status == 200
    for _ in range(200):
        st = env.request("GET", f"{BASE}/jobs/{job_id}?api-version=2.0", KEY).json()
        if st["StatusCode"] != "Running":
            break
        time.sleep(0.05)
    assert st["StatusCode"] == "Failed" and "missing.csv" in st["Details"]
    # A job not started yet is cancelled by DELETE.
    job_id = post(env, f"{BASE}/jobs?api-version=2.0", job).json()
    assert env.request("DELETE", f"{BASE}/jobs/{job_id}?api-version=2.0", KEY).status == 200
    assert env.request("GET", f"{BASE}/jobs/{job_id}?api-version=2.0", KEY).json()["StatusCode"] == "Cancelled"
    # Bad job payloads are AzureML 400s.
    r = post(env, f"{BASE}/jobs?api-version=2.0", {"Input": {"ConnectionString": conn}})
    assert r.status == 400 and r.json()["error"]["code"] == "BadArgument"


def test_sim_scope_flags_and_clean_shutdown(azurite, tmp_path):
    """--workspace/--service restrict the sim to one web service; SIGTERM exits cleanly."""
    port = free_port()
    p = Process([SIM, "--listen", f"127.0.0.1:{port}", "--api-key", "k", "--workspace", "ws1",
                 "--service", "svc1", "--bitsize", "2", "--ngrams", "1"], tmp_path / "sim.log", port=port, timeout=30)
    try:
        deadline = time.time() + 10
        while "\n" not in p.log() and time.time() < deadline:
            time.sleep(0.02)
        assert p.log().splitlines()[0] == f"azureml-sim listening on http://127.0.0.1:{port}"
        import http.client
        def rrs(ws):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request("POST", f"/workspaces/{ws}/services/svc1/execute?api-version=2.0&details=true",
                      json.dumps(RRS_BODY), {"Authorization": "Bearer k", "Content-Type": "application/json"})
            r = c.getresponse()
            return r.status, json.loads(r.read())
        status, body = rrs("ws1")
        assert status == 200
        # --bitsize 2, --ngrams 1: four columns, tokens only (5 tokens).
        assert body["Results"]["output1"]["value"]["Values"][0][1:] == ["0", "3", "1", "1"]   # golden/check.py
        status, body = rrs("ws2")
        assert status == 404 and body["error"]["code"] == "NotFound"
    finally:
        assert p.stop() == 0   # SIGTERM: a clean exit
