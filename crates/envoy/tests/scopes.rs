//! Issue 21's shapes above the core: "My subscription" with an API's quota counted per
//! subscription and a subscription scoped to an API (which has no product), and the reports,
//! which list neither the stand-in product of API-scoped subscriptions nor an open product's
//! anonymous subscription.

// Test code: panics and indexing are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use mlgate_core::admit::Request;
use mlgate_core::testkit::{demo, gateway, headers, run_full, view, Conn, MemStore, StoreHost};
use mlgate_envoy::local::serve;
use mlgate_usage::report::{report, Report};
use serde_json::{json, Value};

const T0: u64 = 1_700_000_000_000;
const RRS: &str = "/azureml-demo/workspaces/ws1/services/svc1/execute?api-version=2.0&details=true";

fn mine(gw: &mlgate_core::model::Gateway, store: &MemStore, key: &str) -> Value {
    let owned = headers(&[
        (":method", "GET"),
        (":path", "/developer/subscription"),
        (":scheme", "https"),
        (":authority", "gw"),
        ("ocp-apim-subscription-key", key),
    ]);
    let v = view(&owned);
    let r = serve(gw, &Request::from_headers(&v), T0 + 10, &mut StoreHost { store: store.clone() }).expect("a local reply");
    assert_eq!(r.status, 200, "{}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

#[test]
fn an_api_quota_and_an_api_scoped_subscription() {
    let mut cfg = demo();
    cfg["portal"] = json!({"path": "/developer"});
    cfg["apis"][0]["quota"] = json!({"calls": 10, "renewal_period": 3600});
    cfg["subscriptions"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "dana", "scope": "/apis/azureml-demo", "state": "active", "primary_key": "dana-1"}));
    let gw = gateway(&cfg);
    let store = MemStore::default();
    for key in ["alice-1", "alice-1", "dana-1"] {
        let call =
            headers(&[(":method", "POST"), (":path", RRS), (":scheme", "https"), (":authority", "gw"), ("ocp-apim-subscription-key", key)]);
        assert_eq!(run_full(&gw, &mut store.clone(), T0, &call, &mut Conn::default()).status, 200);
    }
    let alice = mine(&gw, &store, "alice-1");
    let api_quota = alice["limits"].as_array().unwrap().iter().find(|l| l["scope"] == "api" && l["kind"] == "quota").unwrap().clone();
    assert_eq!((api_quota["callsUsed"].as_u64(), api_quota["callsLeft"].as_u64()), (Some(2), Some(8)));
    // The product's own quota is apart from the API's.
    let product_quota =
        alice["limits"].as_array().unwrap().iter().find(|l| l["scope"] == "product" && l["kind"] == "quota").unwrap().clone();
    assert_eq!(product_quota["callsUsed"].as_u64(), Some(2));
    let dana = mine(&gw, &store, "dana-1");
    assert_eq!(dana["product"], Value::Null);
    assert_eq!(dana["apis"], json!([{"id": "azureml-demo", "name": "AzureML Demo API"}]));
    let kinds: Vec<(&str, &str, u64)> = dana["limits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["scope"].as_str().unwrap(), l["kind"].as_str().unwrap(), l["callsUsed"].as_u64().unwrap()))
        .collect();
    assert_eq!(kinds, [("api", "quota", 1)]);
}

#[test]
fn reports_list_configured_products_and_subscriptions_only() {
    let mut cfg = demo();
    cfg["metrics"] = json!({"per_subscription": true});
    cfg["products"].as_array_mut().unwrap().push(json!({"id": "free", "name": "Free", "apis": ["other"], "subscription_required": false}));
    cfg["subscriptions"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "dana", "scope": "/apis/azureml-demo", "state": "active", "primary_key": "dana-1"}));
    let gw = gateway(&cfg);
    let by = |kind: Report, field: &str| -> Vec<Value> {
        let v: Value = serde_json::from_str(&report(&gw, kind, &mut |_, _| 0).unwrap()).unwrap();
        v["value"].as_array().unwrap().iter().map(|r| r[field].clone()).collect()
    };
    assert_eq!(by(Report::ByProduct, "productId"), [json!("/products/starter"), json!("/products/unlimited"), json!("/products/free")]);
    assert_eq!(by(Report::BySubscription, "name"), [json!("alice"), json!("bob"), json!("carol"), json!("dana")]);
    // Dana has no product.
    assert_eq!(by(Report::BySubscription, "productId")[3], Value::Null);
}
