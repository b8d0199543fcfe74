import os
import subprocess
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from harness import AZURITE, ENVOY, SIM, WASM, Recorder, free_port, wait_port  # noqa: E402


def pytest_sessionstart(session):
    missing = [str(p) for p in (ENVOY, WASM, SIM) if not p.exists()]
    if missing:
        raise pytest.UsageError(f"build first (make test does): missing {missing}")


@pytest.fixture
def upstream():
    r = Recorder()
    yield r
    r.close()


class Proc:
    def __init__(self, args, port, log):
        self.port = port
        self.log = log
        self.p = subprocess.Popen(args, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
        wait_port(port, 60, self.p)

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()


SIM_KEY = "sim-api-key-0123456789"


@pytest.fixture(scope="session")
def azureml_sim(azurite):
    port = free_port()
    d = tempfile.mkdtemp(prefix="mlgate-sim-")
    p = Proc([str(SIM), "--listen", f"127.0.0.1:{port}", "--api-key", SIM_KEY,
              "--dev-storage", f"http://127.0.0.1:{azurite.port}/devstoreaccount1"],
             port, os.path.join(d, "sim.log"))
    yield p
    p.stop()


@pytest.fixture(scope="session")
def azurite():
    port = free_port()
    d = tempfile.mkdtemp(prefix="mlgate-azurite-")
    p = Proc([str(AZURITE), "--silent", "--disableTelemetry", "--skipApiVersionCheck", "--inMemoryPersistence",
              "--blobHost", "127.0.0.1", "--blobPort", str(port)],
             port, os.path.join(d, "azurite.log"))
    yield p
    p.stop()
