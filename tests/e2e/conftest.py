import os
import tempfile

import pytest

from mlgate_harness import AZURITE, ENVOY, SIM, WASM, Process, free_port
from mlgate_harness.native import NATIVE_MODULE, check_pinned_envoy, is_native_module
import harness
from harness import Recorder

# The forms of mlgate the suites marked `forms(...)` run against: both by default;
# MLGATE_FORMS=native (or wasm) runs one.
FORMS = [f for f in os.environ.get("MLGATE_FORMS", "wasm,native").split(",") if f]


def pytest_configure(config):
    config.addinivalue_line("markers", "forms(*forms): run the test (module) once per form of mlgate, "
                                       "'wasm' and/or 'native' (a test's own marker narrows its module's)")


def pytest_sessionstart(session):
    missing = [str(p) for p in (ENVOY, WASM, SIM) if not p.exists()]
    if "native" in FORMS and not NATIVE_MODULE.exists():
        missing.append(str(NATIVE_MODULE))
    if missing:
        raise pytest.UsageError(f"build first (make test does): missing {missing}")
    if "native" in FORMS:
        if not is_native_module(NATIVE_MODULE):
            raise pytest.UsageError(f"{NATIVE_MODULE} is not mlgate-native's module (no hook symbols; "
                                    f"a stale or foreign file?): `make native` builds it")
        check_pinned_envoy()


def pytest_generate_tests(metafunc):
    marker = metafunc.definition.get_closest_marker("forms")
    if marker and "form" in metafunc.fixturenames:
        metafunc.parametrize("form", [f for f in marker.args if f in FORMS], indirect=True, scope="module")


@pytest.fixture(scope="module", autouse=True)
def form(request):
    """The form of mlgate this test runs against ("wasm" unless the module is marked `forms`):
    every harness.Envoy started meanwhile runs it. Module-scoped fixtures that start an Envoy
    take `form` too, so they are started once per form."""
    f = getattr(request, "param", "wasm")
    harness.FORM = f
    yield f
    harness.FORM = "wasm"


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
