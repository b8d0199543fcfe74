import os
import tempfile

import pytest

from mlgate_harness import AZURITE, ENVOY, SIM, WASM, Process, free_port
from harness import Recorder


def pytest_sessionstart(session):
    missing = [str(p) for p in (ENVOY, WASM, SIM) if not p.exists()]
    if missing:
        raise pytest.UsageError(f"build first (make test does): missing {missing}")


@pytest.fixture
def upstream():
    r = Recorder()
    yield r
    r.close()


SIM_KEY = "sim-api-key-0123456789"


@pytest.fixture(scope="session")
def azureml_sim(azurite):
    port = free_port()
    d = tempfile.mkdtemp(prefix="mlgate-sim-")
    p = Process([SIM, "--listen", f"127.0.0.1:{port}", "--api-key", SIM_KEY,
                 "--dev-storage", f"http://127.0.0.1:{azurite.port}/devstoreaccount1"],
                os.path.join(d, "sim.log"), port=port)
    yield p
    p.stop()


@pytest.fixture(scope="session")
def azurite():
    port = free_port()
    d = tempfile.mkdtemp(prefix="mlgate-azurite-")
    p = Process([AZURITE, "--silent", "--disableTelemetry", "--skipApiVersionCheck", "--inMemoryPersistence",
                 "--blobHost", "127.0.0.1", "--blobPort", str(port)],
                os.path.join(d, "azurite.log"), port=port)
    yield p
    p.stop()
