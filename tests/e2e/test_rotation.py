"""Issue 12, key rotation (APIM's regeneratePrimaryKey / regenerateSecondaryKey) in Envoy: the
operator pushes a configuration where a subscription's key is regenerated (LDS update, same
vm_config). The old key is refused at once, the new key works, and the subscription's counts
carry on: it is the same subscription, so its quota and rate limit do not start again."""
from __future__ import annotations

import copy
import hashlib
import secrets

import pytest

from harness import Envoy

# Both forms of mlgate (the .wasm and the native module) pass the same suite.
pytestmark = pytest.mark.forms("wasm", "native")

RRS = "/azureml-demo/workspaces/ws1/services/svc1/execute?api-version=2.0&details=true"
INVALID = "Access denied due to invalid subscription key. Make sure to provide a valid key for an active subscription."


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def config(primary: str, secondary: str) -> dict:
    return {
        "apis": [{
            "id": "azureml-demo", "name": "AzureML Demo API", "path": "azureml-demo",
            "service_url": "https://ussouthcentral.services.azureml.net", "operations": "azureml-studio",
            "backend_credentials": [{"workspace": "*", "service": "*", "api_key": "aml-key"}],
        }],
        "products": [{"id": "starter", "name": "Starter", "apis": ["azureml-demo"],
                      "rate_limit": {"calls": 100, "renewal_period": 60},
                      "quota": {"calls": 3, "renewal_period": 86400}}],
        "subscriptions": [
            {"id": "alice", "product": "starter", "state": "active",
             "primary_key_sha256": sha(primary), "secondary_key_sha256": sha(secondary),
             "start": "2026-01-01T00:00:00Z"},
            {"id": "bob", "product": "starter", "state": "active", "primary_key": "bob-key"},
        ],
    }


def call(e, key):
    return e.request("POST", RRS, {"Ocp-Apim-Subscription-Key": key}, b"{}")


def test_regenerated_primary_key_keeps_the_counts(upstream):
    old, new, second = (secrets.token_hex(32) for _ in range(3))
    e = Envoy(config(old, second), upstream.port, dynamic=True, concurrency=2)
    try:
        assert call(e, old).status == 200
        assert call(e, second).status == 200  # 2 of alice's 3 calls used, over both keys
        assert call(e, "bob-key").status == 200

        e.reconfigure(config(new, second))  # regeneratePrimaryKey

        r = call(e, old)
        assert r.status == 401 and r.json() == {"statusCode": 401, "message": INVALID}
        before = upstream.count()
        assert call(e, new).status == 200  # alice's third call
        r = call(e, new)
        assert r.status == 403, r  # quota: 3 calls, not 3 more
        assert r.json()["message"].startswith("Out of call volume quota. Quota will be replenished in ")
        assert r.header("retry-after")
        assert call(e, second).status == 403  # the same subscription behind the other key
        assert upstream.count() == before + 1
        # Other subscriptions are untouched by the rotation.
        assert call(e, "bob-key").status == 200
    finally:
        e.stop()


def test_regenerated_secondary_key_and_rate_limit_carry_on(upstream):
    primary, old_second, new_second = (secrets.token_hex(32) for _ in range(3))
    cfg = config(primary, old_second)
    cfg["products"][0]["rate_limit"] = {"calls": 2, "renewal_period": 60}
    cfg["products"][0].pop("quota")
    e = Envoy(cfg, upstream.port, dynamic=True)
    try:
        assert call(e, old_second).status == 200
        rotated = copy.deepcopy(cfg)
        rotated["subscriptions"][0]["secondary_key_sha256"] = sha(new_second)  # regenerateSecondaryKey
        e.reconfigure(rotated)
        assert call(e, old_second).status == 401
        assert call(e, new_second).status == 200  # second of 2 calls this minute
        r = call(e, primary)
        assert r.status == 429, r  # the window carried over the reconfiguration
        assert r.header("retry-after")
    finally:
        e.stop()
