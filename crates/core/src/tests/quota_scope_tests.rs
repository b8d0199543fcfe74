//! Quotas on APIs and operations, and quotas by key (`quota-by-key`): each counted on its own,
//! the keyed ones in bounded counter tables, renewing on the grid of `first_period_start`.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::support::{alice_rrs, gateway, run_full, starter_with, Conn, Env, Got, MemStore};
use crate::model::Gateway;
use serde_json::{json, Value};

/// 2023-11-14T22:13:20Z.
const T0: u64 = 1_700_000_000_000;

fn cfg(product: Value, api_quota: Option<Value>) -> Value {
    let mut c = starter_with(product);
    if let Some(q) = api_quota {
        c["apis"][0]["quota"] = q;
    }
    c
}

fn call(gw: &Gateway, s: &mut MemStore, now: u64, client: &str) -> Got {
    run_full(gw, s, now, &alice_rrs(client), &mut Conn::default())
}

fn retry_after(g: &Got) -> String {
    let r = g.reply.as_ref().expect("a reply");
    r.headers.iter().find(|(k, _)| k == "retry-after").map(|(_, v)| v.clone()).unwrap_or_default()
}

fn refusal(c: Value) -> String {
    match Gateway::from_json(c.to_string().as_bytes(), &Env(vec![("AML_KEY", "k")])) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.field,
    }
}

#[test]
fn an_api_quota_counts_beside_the_products() {
    let gw = gateway(&cfg(json!({"quota": {"calls": 5, "renewal_period": 3600}}), Some(json!({"calls": 2, "renewal_period": 3600}))));
    let mut s = MemStore::default();
    assert_eq!([call(&gw, &mut s, T0, "").status, call(&gw, &mut s, T0, "").status, call(&gw, &mut s, T0, "").status], [200, 200, 403]);
    let denied = call(&gw, &mut s, T0, "");
    let body: Value = serde_json::from_str(&denied.reply.as_ref().unwrap().body).unwrap();
    assert_eq!(body["message"], "Out of call volume quota. Quota will be replenished in 00:46:40.");
    // The API's denial counted nowhere: the product's quota saw two calls, not four.
    let mut c = cfg(json!({"quota": {"calls": 3, "renewal_period": 3600}}), Some(json!({"calls": 2, "renewal_period": 60})));
    c["apis"][0]["quota"]["renewal_period"] = json!(60);
    let gw = gateway(&c);
    let mut s = MemStore::default();
    let got: Vec<u16> = [0, 0, 0, 61_000, 61_000].iter().map(|dt| call(&gw, &mut s, T0 + dt, "").status).collect();
    assert_eq!(got, [200, 200, 403, 200, 403]);
}

#[test]
fn a_quota_by_key_counts_per_value_on_its_grid() {
    let product = json!({"quota": {"calls": 2, "renewal_period": 3600, "counter": "header:x-client"}});
    let gw = gateway(&cfg(product, None));
    let mut s = MemStore::default();
    for client in ["a", "b"] {
        assert_eq!(call(&gw, &mut s, T0, client).status, 200);
        assert_eq!(call(&gw, &mut s, T0, client).status, 200);
    }
    let denied = call(&gw, &mut s, T0, "a");
    assert_eq!(denied.status, 403);
    // APIM's default grid starts at 0001-01-01T00:00:00Z: hours on the hour, so 22:13:20
    // waits until 23:00:00.
    assert_eq!(retry_after(&denied), "2800");
    assert_eq!(call(&gw, &mut s, T0 + 2_799_000, "a").status, 403);
    assert_eq!(call(&gw, &mut s, T0 + 2_800_000, "a").status, 200);

    // A grid from first_period_start: periods from 22:13:20 on.
    let product =
        json!({"quota": {"calls": 1, "renewal_period": 3600, "counter": "header:x-client", "first_period_start": "2023-11-14T22:13:20Z"}});
    let gw = gateway(&cfg(product, None));
    let mut s = MemStore::default();
    assert_eq!(call(&gw, &mut s, T0, "a").status, 200);
    assert_eq!(retry_after(&call(&gw, &mut s, T0 + 1_000, "a")), "3599");
    assert_eq!(call(&gw, &mut s, T0 + 3_600_000, "a").status, 200);
}

#[test]
fn a_denial_by_a_keyed_quota_takes_back_the_earlier_keyed_counts() {
    // The rate limit by key counts first; the quota by key then denies: the rate limit's count
    // is undone, so it still admits after the quota renews.
    let product = json!({
        "rate_limit": {"calls": 2, "renewal_period": 86400, "counter": "header:x-client"},
        "quota": {"calls": 1, "renewal_period": 3600, "counter": "header:x-client"}
    });
    let gw = gateway(&cfg(product, None));
    let mut s = MemStore::default();
    assert_eq!(call(&gw, &mut s, T0, "a").status, 200);
    assert_eq!(call(&gw, &mut s, T0, "a").status, 403);
    assert_eq!(call(&gw, &mut s, T0, "a").status, 403);
    assert_eq!(call(&gw, &mut s, T0 + 2_800_000, "a").status, 200);
    assert_eq!(call(&gw, &mut s, T0 + 2_800_000 + 3_600_000, "a").status, 429);
}

#[test]
fn quota_refusals_name_their_field() {
    let q = |extra: Value| {
        let mut q = json!({"calls": 1, "renewal_period": 3600});
        q.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        q
    };
    assert_eq!(
        refusal(cfg(json!({"quota": q(json!({"first_period_start": "2024-01-01T00:00:00Z"}))}), None)),
        "products[0].quota.first_period_start"
    );
    assert_eq!(
        refusal(cfg(json!({"quota": q(json!({"counter": "ip", "first_period_start": "yesterday"}))}), None)),
        "products[0].quota.first_period_start"
    );
    assert_eq!(refusal(cfg(json!({"quota": q(json!({"counter": "cookie:x"}))}), None)), "products[0].quota.counter");
    assert_eq!(refusal(cfg(json!({}), Some(q(json!({"bandwidth_kb": 10}))))), "apis[0].quota.bandwidth_kb");
    let mut c = cfg(json!({}), Some(q(json!({}))));
    c["limits_store"] = json!({"rls": {"cluster": "rls", "domain": "d"}});
    assert_eq!(refusal(c), "limits_store");
}

#[test]
fn keyed_quota_tables_are_in_the_memory_estimate() {
    let mut c = cfg(json!({"quota": {"calls": 1, "renewal_period": 3600, "counter": "ip"}}), None);
    c["counter_slots"] = json!(100);
    let gw = gateway(&c);
    let tables = crate::memory::counter_tables(&gw.apis, &gw.products, 100);
    assert_eq!(tables.len(), 1);
    assert_eq!(tables[0].field, "products[0].quota");
    // Key `mlgate/c/q:p:starter/NN`, version and owner, a quota segment.
    let slot = crate::memory::entry(9 + 11 + 1 + 2, 9 + 3 + 11 + 24);
    assert_eq!(tables[0].slot_bytes, slot);
}
