//! Subscription scopes (a product, one API, all APIs) and open products (no key needed).

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::support::{demo, gateway, headers, run_full, view, Conn, Env, Got, MemStore};
use crate::admit::{admit, Outcome, Request};
use crate::model::Gateway;
use serde_json::{json, Value};

const RRS: &str = "/azureml-demo/workspaces/w/services/s/execute?api-version=2.0&details=true";
const PING: &str = "/other/ping/7?v=1&mode=fast";
const T0: u64 = 1_700_000_000_000;

fn with_subs(subs: Value) -> Value {
    let mut c = demo();
    c["subscriptions"] = subs;
    c
}

fn get(gw: &Gateway, s: &mut MemStore, path: &str, key: Option<(&str, &str)>, client: &str) -> Got {
    let mut pairs = vec![(":method", "POST"), (":path", path), (":scheme", "http"), (":authority", "gw"), ("x-client", client)];
    if path.starts_with("/other") {
        pairs[0] = (":method", "GET");
    }
    pairs.extend(key);
    run_full(gw, s, T0, &headers(&pairs), &mut Conn::default())
}

/// The identity headers the backend gets for a forwarded call.
fn identity_headers(gw: &Gateway, path: &str, key: Option<(&str, &str)>) -> Vec<(String, String)> {
    let method = if path.starts_with("/other") { "GET" } else { "POST" };
    let mut pairs = vec![(":method", method), (":path", path), (":scheme", "http"), (":authority", "gw")];
    pairs.extend(key);
    let hs = headers(&pairs);
    let v = view(&hs);
    let req = Request::from_headers(&v);
    let mut s = MemStore::default();
    let Outcome::Forward(f) = admit(gw, &req, T0, &mut Conn::default(), &mut s).outcome else { panic!("not forwarded") };
    let mut out = Vec::new();
    f.upstream_headers(gw, &req, &mut out);
    out.iter()
        .filter(|(k, _)| k.starts_with(b"x-mlgate-"))
        .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

fn refusal(c: Value) -> (String, String) {
    match Gateway::from_json(c.to_string().as_bytes(), &Env(vec![("AML_KEY", "k")])) {
        Ok(_) => panic!("accepted"),
        Err(e) => (e.field, e.reason),
    }
}

#[test]
fn a_subscription_scoped_to_one_api_calls_only_that_api_with_no_product_limits() {
    let gw = gateway(&with_subs(json!([{"id": "dana", "scope": "/apis/other", "state": "active", "primary_key": "dana-1"}])));
    let mut s = MemStore::default();
    assert_eq!(get(&gw, &mut s, PING, Some(("x-key", "dana-1")), "").status, 200);
    assert_eq!(get(&gw, &mut s, RRS, Some(("ocp-apim-subscription-key", "dana-1")), "").status, 401);
    // No product: the backend gets the subscription id and no product id.
    assert_eq!(identity_headers(&gw, PING, Some(("x-key", "dana-1"))), [("x-mlgate-subscription-id".to_string(), "dana".to_string())]);
}

#[test]
fn a_subscription_scoped_to_all_apis_calls_every_api_without_limits() {
    let gw = gateway(&with_subs(json!([{"id": "erin", "scope": "/apis", "state": "active", "primary_key": "erin-1"}])));
    let mut s = MemStore::default();
    assert_eq!(get(&gw, &mut s, PING, Some(("x-key", "erin-1")), "").status, 200);
    // The starter product's 5 calls a minute do not apply: erin has no product.
    for _ in 0..8 {
        assert_eq!(get(&gw, &mut s, RRS, Some(("ocp-apim-subscription-key", "erin-1")), "").status, 200);
    }
    let summary = gw.summary();
    assert_eq!((summary.products, summary.subscriptions), (2, 1));
}

#[test]
fn a_product_scope_is_the_same_as_product() {
    let gw = gateway(&with_subs(json!([{"id": "fay", "scope": "/products/starter", "state": "active", "primary_key": "fay-1"}])));
    let mut s = MemStore::default();
    let got: Vec<u16> = (0..6).map(|_| get(&gw, &mut s, RRS, Some(("ocp-apim-subscription-key", "fay-1")), "").status).collect();
    assert_eq!(got, [200, 200, 200, 200, 200, 429]);
}

#[test]
fn scope_refusals_name_their_field() {
    let sub = |extra: Value| {
        let mut v = json!({"id": "x", "state": "active", "primary_key": "x-1"});
        v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        with_subs(json!([v]))
    };
    assert_eq!(refusal(sub(json!({"scope": "/apis/nope"}))).0, "subscriptions[0].scope");
    assert_eq!(refusal(sub(json!({"scope": "/products/nope"}))).0, "subscriptions[0].scope");
    assert_eq!(refusal(sub(json!({"scope": "/things"}))).0, "subscriptions[0].scope");
    assert_eq!(refusal(sub(json!({"scope": "/apis", "product": "starter"}))).0, "subscriptions[0].scope");
    assert_eq!(refusal(sub(json!({}))).0, "subscriptions[0].product");
}

fn open_product() -> Value {
    let mut c = demo();
    c["products"].as_array_mut().unwrap().push(json!({"id": "free", "name": "Free", "apis": ["other"], "subscription_required": false,
        "rate_limit": {"calls": 2, "renewal_period": 60, "counter": "header:x-client"}}));
    c
}

#[test]
fn an_open_product_admits_calls_without_a_key_counted_by_their_counter() {
    let gw = gateway(&open_product());
    let mut s = MemStore::default();
    let a: Vec<u16> = (0..3).map(|_| get(&gw, &mut s, PING, None, "a").status).collect();
    assert_eq!(a, [200, 200, 429]);
    assert_eq!(get(&gw, &mut s, PING, None, "b").status, 200);
    // The API not in an open product still needs a key; a wrong key is still refused.
    assert_eq!(get(&gw, &mut s, RRS, None, "c").status, 401);
    assert_eq!(get(&gw, &mut s, PING, Some(("x-key", "nope")), "c").status, 401);
    // A keyless call has no subscription: the backend gets the product id only.
    assert_eq!(identity_headers(&gw, PING, None), [("x-mlgate-product-id".to_string(), "free".to_string())]);
    let summary = gw.summary();
    assert_eq!((summary.products, summary.subscriptions), (3, 3));
    let mut c = open_product();
    c["limits_store"] = json!({"rls": {"cluster": "rls", "domain": "d"}});
    assert_eq!(refusal(c).0, "limits_store");
}

#[test]
fn an_open_products_own_limits_count_every_keyless_caller_together() {
    let mut c = open_product();
    c["products"][2]["rate_limit"] = json!({"calls": 3, "renewal_period": 60});
    let gw = gateway(&c);
    let mut s = MemStore::default();
    let got: Vec<u16> = ["a", "b", "c", "d"].iter().map(|cl| get(&gw, &mut s, PING, None, cl).status).collect();
    assert_eq!(got, [200, 200, 200, 429]);
}
