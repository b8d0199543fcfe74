"""Invalid configuration is refused at configure time, through Envoy: one log line naming the
field, and the filter never runs half-configured."""
import copy
import json

import pytest

from harness import Envoy

# Both forms of mlgate (the .wasm and the native module) pass the same suite.
pytestmark = pytest.mark.forms("wasm", "native")
from test_gateway import CONFIG, ENV, MISSING, RRS, apim_error


def mutate(f):
    cfg = copy.deepcopy(CONFIG)
    f(cfg)
    return cfg


CASES = [
    ("unparsable JSON", "{\"apis\": [", "apis[0]"),   # where the parse broke
    ("unknown field", mutate(lambda c: c["apis"][0].__setitem__("urlTemplate", "/x")), "apis[0].urlTemplate"),
    ("bad template", mutate(lambda c: c["apis"][1]["operations"][0].__setitem__("url_template", "/models/{model")),
     "apis[1].operations[0].url_template"),
    ("duplicate API id", mutate(lambda c: c["apis"][1].__setitem__("id", "azureml-demo")), "apis[1].id"),
    ("duplicate key", mutate(lambda c: c["subscriptions"][2].__setitem__("primary_key", "alice-primary")),
     "subscriptions[2].primary_key"),
    ("product names a missing API", mutate(lambda c: c["products"][0].__setitem__("apis", ["nope"])), "products[0].apis[0]"),
    ("subscription names a missing product", mutate(lambda c: c["subscriptions"][0].__setitem__("product", "gold")),
     "subscriptions[0].product"),
    ("empty key", mutate(lambda c: c["subscriptions"][0].__setitem__("secondary_key", "")), "subscriptions[0].secondary_key"),
    ("missing env variable", mutate(lambda c: c["apis"][0]["backend_credentials"][1].__setitem__("api_key_env", "NOT_SET_ANYWHERE")),
     "apis[0].backend_credentials[1].api_key_env"),
]


@pytest.mark.parametrize("why,cfg,field", CASES, ids=[c[0] for c in CASES])
def test_envoy_refuses_to_start(upstream, why, cfg, field):
    e = Envoy(cfg, upstream.port, env=ENV, wait=False)
    try:
        assert e.wait_exit(60) != 0, "Envoy must not start with a bad mlgate configuration"
        lines = [l for l in e.log().splitlines() if "invalid mlgate configuration" in l]
        # One line per worker-less configure: the main thread refuses before workers start.
        assert len(lines) == 1, lines
        assert f"invalid mlgate configuration: {field}: " in lines[0], lines[0]
        assert "alice-primary" not in e.log()
    finally:
        e.stop()


def test_bad_update_is_rejected_and_old_config_keeps_serving(upstream):
    e = Envoy(CONFIG, upstream.port, env=ENV, dynamic=True)
    try:
        apim_error(e.request("POST", RRS), 401, MISSING)
        bad = mutate(lambda c: c["subscriptions"][0].__setitem__("product", "gold"))
        e.reconfigure(bad, expect="rejected")
        assert "invalid mlgate configuration: subscriptions[0].product: " in e.log()
        # Still the old, whole configuration: alice passes, nothing half-applied.
        r = e.request("POST", RRS, {"Ocp-Apim-Subscription-Key": "alice-primary"}, b"{}")
        assert r.status == 200
        apim_error(e.request("POST", RRS), 401, MISSING)
    finally:
        e.stop()


def test_missing_configuration_is_refused(upstream):
    e = Envoy("", upstream.port, wait=False)
    try:
        assert e.wait_exit(60) != 0
        assert "invalid mlgate configuration: configuration: " in e.log()
    finally:
        e.stop()
