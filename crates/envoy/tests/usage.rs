//! Usage metrics, reports and the admin API: which slot a call counts in, the outcome
//! buckets, stat names (labels, encoding, no subscription unless asked), the updates per call,
//! the exact min/max across racing workers, APIM's report JSON from the metric values, the
//! admin key check, and the admin endpoints.

// Test code: panics and indexing are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use mlgate_core::admit::{admit, Request};
use mlgate_core::limits::Store;
use mlgate_core::local::LocalHost;
use mlgate_core::model::Gateway;
use mlgate_core::testkit::{demo, gateway, headers, sha_hex, view, Conn, MemStore};
use mlgate_core::usage::{self, updates, Bucket, Call, Kind, Update};
use mlgate_envoy::local::{self, any};
use mlgate_usage::extremes::Extremes;
use mlgate_usage::report::{report, Report};
use serde_json::{json, Value};
use std::collections::HashMap;

const RRS: &str = "/azureml-demo/workspaces/ws1/services/svc1/execute?api-version=2.0&details=true";
const T0: u64 = 1_700_000_000_000;
const ADMIN_KEY: &str = "the-admin-key";

fn req(method: &str, path: &str, key: Option<&str>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut h = vec![(":method", method), (":path", path), (":scheme", "https"), (":authority", "gw")];
    if let Some(k) = key {
        h.push(("ocp-apim-subscription-key", k));
    }
    headers(&h)
}

/// The usage slot `admit` puts a request in.
fn slot_of(gw: &Gateway, store: &mut MemStore, h: &[(Vec<u8>, Vec<u8>)]) -> Option<u32> {
    let v = view(h);
    admit(gw, &Request::from_headers(&v), T0, &mut Conn::default(), store).events.usage
}

/// The slot's labels as (api, operation, product, subscription) ids.
fn labels(gw: &Gateway, slot: u32) -> (Option<&str>, Option<&str>, Option<&str>, Option<&str>) {
    let s = gw.usage.get(slot).unwrap();
    let api = s.api.map(|a| &gw.apis[a as usize]);
    (
        api.map(|a| a.id.as_str()),
        s.op.map(|o| api.unwrap().operations[o as usize].id.as_str()),
        s.product.map(|p| gw.products[p as usize].id.as_str()),
        s.sub.map(|u| gw.subscriptions[u as usize].id.as_str()),
    )
}

#[test]
fn outcome_buckets_are_apims() {
    for (status, b) in [
        (200, Bucket::Success),
        (201, Bucket::Success),
        (204, Bucket::Success),
        (301, Bucket::Success),
        (304, Bucket::Success),
        (307, Bucket::Success),
        (302, Bucket::Other),
        (308, Bucket::Other),
        (401, Bucket::Blocked),
        (403, Bucket::Blocked),
        (429, Bucket::Blocked),
        (400, Bucket::Failed),
        (500, Bucket::Failed),
        (503, Bucket::Failed),
        (599, Bucket::Failed),
        (404, Bucket::Other),
        (405, Bucket::Other),
        (413, Bucket::Other),
        (600, Bucket::Other),
        (0, Bucket::Other),
    ] {
        assert_eq!(Bucket::of(status), b, "{status}");
    }
    assert_eq!(Bucket::ALL.map(Bucket::label), ["success", "blocked", "failed", "other"]);
}

#[test]
fn each_call_counts_in_the_slot_of_what_it_matched() {
    let mut cfg = demo();
    cfg["products"][0]["rate_limit"] = json!({"calls": 1, "renewal_period": 60});
    let gw = gateway(&cfg);
    let mut store = MemStore::default();
    let s = |h: Vec<(Vec<u8>, Vec<u8>)>, store: &mut MemStore| slot_of(&gw, store, &h).map(|s| labels(&gw, s));
    let full = (Some("azureml-demo"), Some("rrs-execute"), Some("starter"), None);
    assert_eq!(s(req("POST", RRS, Some("alice-1")), &mut store), Some(full));
    // The 429 of the same subscription counts in the same slot.
    assert_eq!(s(req("POST", RRS, Some("alice-2")), &mut store), Some(full));
    assert_eq!(s(req("POST", RRS, Some("bob-1")), &mut store), Some((Some("azureml-demo"), Some("rrs-execute"), Some("unlimited"), None)));
    // 401s: the API and operation are known, the caller is not.
    let op_only = (Some("azureml-demo"), Some("rrs-execute"), None, None);
    assert_eq!(s(req("POST", RRS, None), &mut store), Some(op_only));
    assert_eq!(s(req("POST", RRS, Some("wrong")), &mut store), Some(op_only));
    assert_eq!(s(req("POST", RRS, Some("carol-1")), &mut store), Some(op_only), "suspended");
    let other = |key: &str| req("GET", &format!("/other/ping/1?v=2&mode=fast&key={key}"), None);
    assert_eq!(s(other("alice-1"), &mut store), Some((Some("other"), Some("ping"), None, None)), "product without the API");
    assert_eq!(s(other("bob-1"), &mut store), Some((Some("other"), Some("ping"), Some("unlimited"), None)));
    // 404s: the API only, or nothing.
    assert_eq!(s(req("GET", "/azureml-demo/nothing", Some("alice-1")), &mut store), Some((Some("azureml-demo"), None, None, None)));
    assert_eq!(s(req("GET", "/elsewhere", Some("alice-1")), &mut store), Some((None, None, None, None)));
    // A pass-through is not an API call.
    cfg["unmatched_requests"] = json!("pass_through");
    let gw = gateway(&cfg);
    assert_eq!(slot_of(&gw, &mut store, &req("GET", "/elsewhere", None)), None);
}

#[test]
fn per_subscription_slots_carry_the_subscription() {
    let mut cfg = demo();
    cfg["metrics"] = json!({"per_subscription": true});
    let gw = gateway(&cfg);
    let mut store = MemStore::default();
    let a = slot_of(&gw, &mut store, &req("POST", RRS, Some("alice-1"))).unwrap();
    let b = slot_of(&gw, &mut store, &req("POST", RRS, Some("bob-1"))).unwrap();
    assert_eq!(labels(&gw, a), (Some("azureml-demo"), Some("rrs-execute"), Some("starter"), Some("alice")));
    assert_eq!(labels(&gw, b), (Some("azureml-demo"), Some("rrs-execute"), Some("unlimited"), Some("bob")));
    // Every slot maps back to itself.
    for (i, s) in gw.usage.slots().iter().enumerate() {
        let m = usage::Matched { api: s.api, op: s.op, sub: s.sub };
        if s.product.is_some() == s.sub.is_some() {
            assert_eq!(gw.usage_slot(&m), Some(i as u32), "{s:?}");
        }
    }
    // 1 + APIs + operations without a product, then each subscription's operations.
    assert_eq!(gw.usage.len(), 1 + 2 + 6 + 5 + 6 + 5);
    let off = gateway(&demo());
    assert_eq!(off.usage.len(), 1 + 2 + 6 + 5 + 6);
}

#[test]
fn stat_names_carry_labels_and_no_subscription_unless_asked() {
    let gw = gateway(&demo());
    let names: Vec<String> = (0..gw.usage.len() as u32).flat_map(|s| gw.usage_definitions(s)).map(|(_, _, n)| n).collect();
    assert!(
        names.contains(&"api=.=azureml-demo;.;operation=.=rrs-execute;.;product=.=starter;.;outcome=.=success;.;mlgate_calls".to_string())
    );
    assert!(names.contains(&"outcome=.=other;.;mlgate_calls".to_string()));
    assert!(names.contains(&"api=.=azureml-demo;.;operation=.=rrs-execute;.;mlgate_api_time_max_microseconds".to_string()));
    for sub in ["alice", "bob", "carol"] {
        assert!(!names.iter().any(|n| n.contains(sub)), "{sub}");
    }
    assert!(!names.iter().any(|n| n.contains("subscription=")));
    // No two metrics share a name.
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len());
    // A slot that only sees 401s has no success/failed buckets and no backend metrics.
    let op_slot = gw.usage_slot(&usage::Matched { api: Some(0), op: Some(0), sub: None }).unwrap();
    let defs = gw.usage_definitions(op_slot);
    assert_eq!(defs.len(), 4 * 2 + 3);
    assert!(defs.iter().all(|(_, _, n)| !n.contains("success") && !n.contains("service")));
    // Histograms are the two time metrics, per outcome.
    let full = gw.usage_definitions(gw.usage_slot(&usage::Matched { api: Some(0), op: Some(0), sub: Some(0) }).unwrap());
    // Every metric but the token counters (this operation carries no tokens).
    assert_eq!(full.len(), usage::METRICS - 2);
    assert!(!full.iter().any(|(_, _, n)| n.contains("tokens")));
    assert_eq!(full.iter().filter(|(_, k, _)| *k == Kind::Histogram).count(), 8);
    assert_eq!(full.iter().filter(|(_, k, _)| *k == Kind::Gauge).count(), 4);

    let mut cfg = demo();
    cfg["metrics"] = json!({"per_subscription": true});
    let gw = gateway(&cfg);
    let names: Vec<String> = (0..gw.usage.len() as u32).flat_map(|s| gw.usage_definitions(s)).map(|(_, _, n)| n).collect();
    assert!(names.contains(
        &"api=.=azureml-demo;.;operation=.=rrs-execute;.;product=.=starter;.;subscription=.=alice;.;outcome=.=blocked;.;mlgate_calls"
            .to_string()
    ));
}

#[test]
fn label_values_are_encoded_so_no_id_can_forge_a_label() {
    let mut cfg = demo();
    cfg["products"][0]["id"] = json!("gold;.;api=.=x ü");
    cfg["subscriptions"][0]["product"] = json!("gold;.;api=.=x ü");
    cfg["subscriptions"][2]["product"] = json!("gold;.;api=.=x ü");
    let gw = gateway(&cfg);
    let slot = gw.usage_slot(&usage::Matched { api: Some(0), op: Some(0), sub: Some(0) }).unwrap();
    assert_eq!(gw.usage_labels(slot), "api=.=azureml-demo;.;operation=.=rrs-execute;.;product=.=gold%3B.%3Bapi%3D.%3Dx%20%C3%BC;.;");
}

#[test]
fn slots_are_bounded_at_configure_time() {
    let mut cfg = demo();
    cfg["metrics"] = json!({"per_subscription": true});
    let subs: Vec<Value> = (0..4_000)
        .map(|i| json!({"id": format!("s{i}"), "product": "starter", "state": "active", "primary_key": format!("k{i}")}))
        .collect();
    cfg["subscriptions"] = json!(subs);
    let err = mlgate_core::model::Gateway::from_json(cfg.to_string().as_bytes(), &mlgate_core::testkit::Env(vec![])).err().unwrap();
    assert_eq!(err.field, "metrics.per_subscription");
    cfg["metrics"] = json!({"per_subscription": false});
    assert_eq!(gateway(&cfg).usage.len(), 20);
}

#[test]
fn updates_per_call() {
    let fwd = Call {
        slot: 3,
        status: 200,
        request_bytes: 10,
        response_bytes: 20,
        api_time_us: 2_500,
        service_time_us: Some(1_999),
        prompt_tokens: 0,
        completion_tokens: 0,
    };
    let got: Vec<Update> = updates(&fwd).collect();
    assert_eq!(
        got,
        vec![
            Update::Add(usage::calls(Bucket::Success), 1),
            Update::Add(usage::request_bytes(Bucket::Success), 10),
            Update::Add(usage::response_bytes(Bucket::Success), 20),
            Update::Record(12, 2),
            Update::Add(usage::API_TIME_SUM, 2_500),
            Update::Record(16, 1),
            Update::Add(usage::SERVICE_TIME_SUM, 1_999),
            Update::Add(usage::SERVICE_CALLS, 1),
        ]
    );
    // A local reply: no request body, never upstream.
    let local = Call {
        slot: 2,
        status: 401,
        request_bytes: 0,
        response_bytes: 152,
        api_time_us: 40,
        service_time_us: None,
        prompt_tokens: 0,
        completion_tokens: 0,
    };
    let got: Vec<Update> = updates(&local).collect();
    assert_eq!(
        got,
        vec![
            Update::Add(usage::calls(Bucket::Blocked), 1),
            Update::Add(usage::response_bytes(Bucket::Blocked), 152),
            Update::Record(13, 0),
            Update::Add(usage::API_TIME_SUM, 40),
        ]
    );
}

/// A host's metrics for tests: values by (slot, index), histograms as sample lists.
#[derive(Default)]
struct Metrics {
    values: HashMap<(u32, usize), u64>,
    samples: HashMap<(u32, usize), Vec<u64>>,
}

impl Metrics {
    fn apply(&mut self, gw: &Gateway, call: &Call, ex: &mut Extremes, store: &mut MemStore) {
        let s = gw.usage.get(call.slot).unwrap();
        for u in updates(call) {
            match u {
                Update::Add(i, n) => {
                    assert!(s.has(i), "{i} not defined in {s:?}");
                    *self.values.entry((call.slot, i)).or_default() += n;
                }
                Update::Record(i, v) => {
                    assert!(s.has(i), "{i} not defined in {s:?}");
                    self.samples.entry((call.slot, i)).or_default().push(v);
                }
            }
        }
        let values = &mut self.values;
        ex.observe(gw, call.slot, call.api_time_us, call.service_time_us, store, &mut |i, v| {
            values.insert((call.slot, i), v);
        });
    }
}

struct Host<'a> {
    store: MemStore,
    metrics: &'a Metrics,
}

impl LocalHost for Host<'_> {
    fn store(&mut self) -> &mut dyn Store {
        &mut self.store
    }
    fn metric(&mut self, slot: u32, index: usize) -> Option<u64> {
        Some(self.metrics.values.get(&(slot, index)).copied().unwrap_or(0))
    }
}

fn slot(gw: &Gateway, api: Option<u16>, op: Option<u16>, sub: Option<u32>) -> u32 {
    gw.usage_slot(&usage::Matched { api, op, sub }).unwrap()
}

/// A known mix: alice 200 and 429, bob a backend 500, a 401 and two 404s.
fn mix(gw: &Gateway) -> Metrics {
    let mut m = Metrics::default();
    let mut ex = Extremes::new(gw.usage.len());
    let mut store = MemStore::default();
    let c = |slot, status, request_bytes, response_bytes, api_time_us, service_time_us| Call {
        slot,
        status,
        request_bytes,
        response_bytes,
        api_time_us,
        service_time_us,
        prompt_tokens: 0,
        completion_tokens: 0,
    };
    let alice = slot(gw, Some(0), Some(0), Some(0));
    let bob = slot(gw, Some(0), Some(0), Some(1));
    for call in [
        c(alice, 200, 100, 50, 2_000, Some(1_500)),
        c(alice, 429, 0, 80, 100, None),
        c(bob, 500, 10, 20, 3_000, Some(2_900)),
        c(slot(gw, Some(0), Some(0), None), 401, 0, 150, 50, None),
        c(slot(gw, Some(0), None, None), 404, 0, 40, 20, None),
        c(slot(gw, None, None, None), 404, 0, 40, 5, None),
    ] {
        m.apply(gw, &call, &mut ex, &mut store);
    }
    m
}

fn zero(head: Value) -> Value {
    let mut r = head;
    for k in ["callCountSuccess", "callCountBlocked", "callCountFailed", "callCountOther", "callCountTotal", "bandwidth"] {
        r[k] = json!(0);
    }
    for k in ["apiTimeAvg", "apiTimeMin", "apiTimeMax", "serviceTimeAvg", "serviceTimeMin", "serviceTimeMax"] {
        r[k] = json!(0);
    }
    for k in ["promptTokens", "completionTokens", "totalTokens"] {
        r[k] = json!(0);
    }
    r
}

#[test]
fn reports_from_the_metric_values() {
    let gw = gateway(&demo());
    let m = mix(&gw);
    let mut value = |s: u32, i: usize| m.values.get(&(s, i)).copied().unwrap_or(0);
    let by_api = report(&gw, Report::ByApi, &mut value).unwrap();
    // The exact bytes of the first record: APIM's field names, in APIM's order, then the tokens
    // (none here: no operation of the demo carries tokens).
    assert!(
        by_api.starts_with(
            "{\"value\":[{\"name\":\"AzureML Demo API\",\"apiId\":\"/apis/azureml-demo\",\"callCountSuccess\":1,\"callCountBlocked\":2,\
             \"callCountFailed\":1,\"callCountOther\":1,\"callCountTotal\":5,\"bandwidth\":450,\"apiTimeAvg\":1.034,\"apiTimeMin\":0.02,\
             \"apiTimeMax\":3,\"serviceTimeAvg\":2.2,\"serviceTimeMin\":1.5,\"serviceTimeMax\":2.9,\"promptTokens\":0,\
             \"completionTokens\":0,\"totalTokens\":0},"
        ),
        "{by_api}"
    );
    let v: Value = serde_json::from_str(&by_api).unwrap();
    assert_eq!(v["count"], 2);
    assert_eq!(v["value"][1], zero(json!({"name": "Other", "apiId": "/apis/other"})));

    let by_op: Value = serde_json::from_str(&report(&gw, Report::ByOperation, &mut value).unwrap()).unwrap();
    assert_eq!(by_op["count"], 6);
    let rrs = &by_op["value"][0];
    assert_eq!(rrs["name"], "RRS Execute");
    assert_eq!(rrs["operationId"], "/apis/azureml-demo/operations/rrs-execute");
    // The 404 without an operation is the API's, not any operation's.
    assert_eq!((rrs["callCountTotal"].clone(), rrs["callCountOther"].clone(), rrs["bandwidth"].clone()), (json!(4), json!(0), json!(410)));
    assert_eq!(by_op["value"][1]["callCountTotal"], 0);

    let by_product: Value = serde_json::from_str(&report(&gw, Report::ByProduct, &mut value).unwrap()).unwrap();
    assert_eq!(
        by_product,
        json!({"value": [
            {"name": "Starter", "productId": "/products/starter", "callCountSuccess": 1, "callCountBlocked": 1, "callCountFailed": 0,
             "callCountOther": 0, "callCountTotal": 2, "bandwidth": 230, "apiTimeAvg": 1.05, "apiTimeMin": 0.1, "apiTimeMax": 2,
             "serviceTimeAvg": 1.5, "serviceTimeMin": 1.5, "serviceTimeMax": 1.5, "promptTokens": 0, "completionTokens": 0,
             "totalTokens": 0},
            {"name": "Unlimited", "productId": "/products/unlimited", "callCountSuccess": 0, "callCountBlocked": 0, "callCountFailed": 1,
             "callCountOther": 0, "callCountTotal": 1, "bandwidth": 30, "apiTimeAvg": 3, "apiTimeMin": 3, "apiTimeMax": 3,
             "serviceTimeAvg": 2.9, "serviceTimeMin": 2.9, "serviceTimeMax": 2.9, "promptTokens": 0, "completionTokens": 0,
             "totalTokens": 0}
        ], "count": 2})
    );
    // bySubscription needs the subscription label.
    assert_eq!(report(&gw, Report::BySubscription, &mut value), None);

    let mut cfg = demo();
    cfg["metrics"] = json!({"per_subscription": true});
    let gw = gateway(&cfg);
    let m = mix(&gw);
    let mut value = |s: u32, i: usize| m.values.get(&(s, i)).copied().unwrap_or(0);
    let by_sub: Value = serde_json::from_str(&report(&gw, Report::BySubscription, &mut value).unwrap()).unwrap();
    assert_eq!(by_sub["count"], 3);
    assert_eq!(by_sub["value"][0]["name"], "alice");
    assert_eq!(by_sub["value"][0]["productId"], "/products/starter");
    assert_eq!(by_sub["value"][0]["subscriptionId"], "/subscriptions/alice");
    assert_eq!(by_sub["value"][0]["callCountTotal"], 2);
    assert_eq!(by_sub["value"][1]["callCountFailed"], 1);
    assert_eq!(
        by_sub["value"][2],
        zero(json!({"name": "carol", "productId": "/products/starter", "subscriptionId": "/subscriptions/carol"}))
    );
    // The same totals by product either way.
    let by_product2: Value = serde_json::from_str(&report(&gw, Report::ByProduct, &mut value).unwrap()).unwrap();
    assert_eq!(by_product2, by_product);
}

/// The token counters of an LLM API's slots, summed per record like the call counts.
#[test]
fn reports_carry_the_tokens_the_backends_reported() {
    let mut cfg = demo();
    cfg["apis"].as_array_mut().unwrap().push(json!({"id": "llm", "name": "LLM", "path": "llm", "service_url": "http://llm.internal",
        "operations": "openai", "backend_credentials": [{"workspace": "*", "service": "*", "api_key": "llm-key"}]}));
    cfg["products"][0]["apis"] = json!(["azureml-demo", "llm"]);
    cfg["products"][1]["apis"] = json!(["azureml-demo", "other", "llm"]);
    cfg["metrics"] = json!({"per_subscription": true});
    let gw = gateway(&cfg);
    let mut m = mix(&gw);
    let (mut ex, mut store) = (Extremes::new(gw.usage.len()), MemStore::default());
    let c = |slot, status, prompt_tokens, completion_tokens| Call {
        slot,
        status,
        request_bytes: 100,
        response_bytes: 200,
        api_time_us: 1_000,
        service_time_us: Some(900),
        prompt_tokens,
        completion_tokens,
    };
    // The LLM API is the third; chat-completions its first operation, embeddings its third.
    let (alice_chat, bob_chat, alice_embeddings) =
        (slot(&gw, Some(2), Some(0), Some(0)), slot(&gw, Some(2), Some(0), Some(1)), slot(&gw, Some(2), Some(2), Some(0)));
    for call in [
        c(alice_chat, 200, 20, 7),
        c(alice_chat, 200, 30, 5),
        c(bob_chat, 200, 11, 4),
        c(alice_embeddings, 200, 9, 0),
        c(bob_chat, 429, 0, 0),
    ] {
        m.apply(&gw, &call, &mut ex, &mut store);
    }
    let mut value = |s: u32, i: usize| m.values.get(&(s, i)).copied().unwrap_or(0);
    let mut get = |kind| -> (String, Value) {
        let raw = report(&gw, kind, &mut value).unwrap();
        let v = serde_json::from_str(&raw).unwrap();
        (raw, v)
    };
    let tokens = |r: &Value| [&r["promptTokens"], &r["completionTokens"], &r["totalTokens"]].map(|v| v.as_u64().unwrap());

    let (raw, by_api) = get(Report::ByApi);
    assert_eq!(by_api["value"].as_array().unwrap().iter().map(tokens).collect::<Vec<_>>(), [[0, 0, 0], [0, 0, 0], [70, 16, 86]]);
    assert_eq!((by_api["value"][2]["callCountSuccess"].as_u64(), by_api["value"][2]["callCountBlocked"].as_u64()), (Some(4), Some(1)));
    // The tokens come last in every record, in this order.
    assert!(raw.ends_with("\"serviceTimeMax\":0.9,\"promptTokens\":70,\"completionTokens\":16,\"totalTokens\":86}],\"count\":3}"), "{raw}");
    assert_eq!(raw.matches("\"totalTokens\":").count(), 3);

    let (_, by_op) = get(Report::ByOperation);
    let ops: Vec<(&str, [u64; 3])> =
        by_op["value"].as_array().unwrap().iter().map(|r| (r["operationId"].as_str().unwrap(), tokens(r))).collect();
    assert_eq!(ops.len(), 5 + 1 + 4);
    assert_eq!(
        ops[6..],
        [
            ("/apis/llm/operations/chat-completions", [61, 16, 77]),
            ("/apis/llm/operations/completions", [0, 0, 0]),
            ("/apis/llm/operations/embeddings", [9, 0, 9]),
            ("/apis/llm/operations/models", [0, 0, 0])
        ]
    );
    assert!(ops[..6].iter().all(|(_, t)| *t == [0, 0, 0]));
    let (_, by_product) = get(Report::ByProduct);
    assert_eq!(by_product["value"].as_array().unwrap().iter().map(tokens).collect::<Vec<_>>(), [[59, 12, 71], [11, 4, 15]]);
    let (_, by_sub) = get(Report::BySubscription);
    assert_eq!(by_sub["value"].as_array().unwrap().iter().map(tokens).collect::<Vec<_>>(), [[59, 12, 71], [11, 4, 15], [0, 0, 0]]);
    // The dashboard has a column for each.
    let dashboard = include_str!("../../admin/src/assets/dashboard.js");
    assert!(["promptTokens", "completionTokens", "totalTokens"].iter().all(|k| dashboard.contains(&format!("['{k}', "))));
}

#[test]
fn extremes_are_exact_when_workers_race() {
    let gw = gateway(&demo());
    let slot = slot(&gw, Some(0), Some(0), Some(0));
    let store = MemStore::default();
    let gauges: std::rc::Rc<std::cell::RefCell<HashMap<usize, u64>>> = Default::default();
    // Worker B raises the max to 70 between worker A's read and its write of 50; then A's
    // gauge write lands last. The gauge must still end at 70.
    let mut a = Extremes::new(gw.usage.len());
    let mut b = Extremes::new(gw.usage.len());
    let mut sa = store.clone();
    let sb = std::rc::Rc::new(std::cell::RefCell::new(store.clone()));
    {
        let (gw2, sb, g) = (gateway(&demo()), sb.clone(), gauges.clone());
        let raced = std::rc::Rc::new(std::cell::Cell::new(false));
        let hook_raced = raced.clone();
        // Prime the record so A's first set is its CAS write.
        a.observe(&gw, slot, 10, None, &mut sa, &mut |i, v| {
            gauges.borrow_mut().insert(i, v);
        });
        *sa.before_set.borrow_mut() = Some(Box::new(move || {
            if !hook_raced.get() {
                hook_raced.set(true);
                b.observe(&gw2, slot, 70, None, &mut *sb.borrow_mut(), &mut |i, v| {
                    g.borrow_mut().insert(i, v);
                });
            }
        }));
        let mut a_sets = Vec::new();
        a.observe(&gw, slot, 50, None, &mut sa, &mut |i, v| {
            a_sets.push((i, v));
            gauges.borrow_mut().insert(i, v);
        });
        assert!(raced.get());
        // A's CAS failed once; it re-read 70 and had nothing to set.
        assert!(a_sets.is_empty(), "{a_sets:?}");
    }
    assert_eq!(gauges.borrow().get(&usage::API_TIME_MAX), Some(&70));
    assert_eq!(gauges.borrow().get(&usage::API_TIME_MIN), Some(&10));

    // A gauge write that lands late is corrected by its writer's re-read.
    let gw = gateway(&demo());
    let store = MemStore::default();
    let mut a = Extremes::new(gw.usage.len());
    let mut sa = store.clone();
    let sb = std::rc::Rc::new(std::cell::RefCell::new(store.clone()));
    let gauges: std::rc::Rc<std::cell::RefCell<HashMap<usize, u64>>> = Default::default();
    let mut b = Extremes::new(gw.usage.len());
    let g = gauges.clone();
    let gw2 = gateway(&demo());
    let mut fired = false;
    a.observe(&gw, slot, 50, None, &mut sa, &mut |i, v| {
        // A's record write succeeded; before A's gauge write, B moves the max to 90 and sets
        // its gauge. Then A writes its stale 50.
        if i == usage::API_TIME_MAX && !fired {
            fired = true;
            b.observe(&gw2, slot, 90, None, &mut *sb.borrow_mut(), &mut |j, w| {
                g.borrow_mut().insert(j, w);
            });
        }
        gauges.borrow_mut().insert(i, v);
    });
    assert_eq!(gauges.borrow().get(&usage::API_TIME_MAX), Some(&90));

    // Within what a worker knows: no store access at all.
    let gets = store.inner.borrow().gets;
    a.observe(&gw, slot, 60, None, &mut sa, &mut |_, _| panic!("no gauge to set"));
    assert_eq!(store.inner.borrow().gets, gets);
}

#[test]
fn admin_key_is_checked_in_constant_time_against_its_digest() {
    let mut cfg = demo();
    cfg["admin"] = json!({"path": "/mlgate-admin", "key_sha256": sha_hex(ADMIN_KEY)});
    let gw = gateway(&cfg);
    let admin = gw.admin.as_ref().unwrap();
    let with = |auth: Option<&str>| {
        let mut h = vec![(":method", "GET"), (":path", "/mlgate-admin/reports/byApi")];
        if let Some(a) = auth {
            h.push(("authorization", a));
        }
        let h = headers(&h);
        let v = view(&h);
        mlgate_admin::authorized(admin, &Request::from_headers(&v))
    };
    assert!(with(Some("Bearer the-admin-key")));
    assert!(with(Some("bearer  the-admin-key ")));
    assert!(!with(None));
    assert!(!with(Some("Bearer")));
    assert!(!with(Some("Bearer ")));
    assert!(!with(Some("Bearer the-admin-kez")));
    assert!(!with(Some("Bearerthe-admin-key")));
    assert!(!with(Some("Basic the-admin-key")));
    assert!(!with(Some("the-admin-key")));
    assert!(!with(Some("Bearer \u{fc}")));
}

fn serve(
    gw: &Gateway,
    method: &str,
    path: &str,
    auth: Option<&str>,
    metrics: &Metrics,
    store: &MemStore,
) -> Option<mlgate_core::reply::Reply> {
    let mut h = vec![(":method", method), (":path", path), (":scheme", "https"), (":authority", "gw")];
    if let Some(a) = auth {
        h.push(("authorization", a));
    }
    let h = headers(&h);
    let v = view(&h);
    let mut host = Host { store: store.clone(), metrics };
    local::serve(gw, &Request::from_headers(&v), T0, &mut host)
}

#[test]
fn admin_endpoints() {
    let mut cfg = demo();
    cfg["admin"] = json!({"path": "/mlgate-admin", "key_sha256": sha_hex(ADMIN_KEY)});
    let gw = gateway(&cfg);
    assert!(any(&gw));
    let m = mix(&gw);
    let store = MemStore::default();
    let bearer = format!("Bearer {ADMIN_KEY}");
    let ok = Some(bearer.as_str());
    let csp = |r: &mlgate_core::reply::Reply| r.headers.iter().find(|(k, _)| k == "content-security-policy").map(|(_, v)| v.clone());

    // The page and its assets need no key (they hold no data); every response has the CSP.
    let page = serve(&gw, "GET", "/mlgate-admin/", None, &m, &store).unwrap();
    assert_eq!((page.status, page.content_type), (200, "text/html; charset=utf-8"));
    assert!(page.body.contains("dashboard.js"));
    assert!(csp(&page).unwrap().starts_with("default-src 'none'; script-src 'self'"));
    let js = serve(&gw, "GET", "/mlgate-admin/dashboard.js", None, &m, &store).unwrap();
    assert_eq!((js.status, js.content_type), (200, "text/javascript; charset=utf-8"));
    assert!(js.gzip_body.is_some_and(|g| g.starts_with(&[0x1f, 0x8b])));
    assert!(!include_str!("../../admin/src/assets/dashboard.js").contains("innerHTML"));
    let redirect = serve(&gw, "GET", "/mlgate-admin", None, &m, &store).unwrap();
    assert_eq!(redirect.status, 308);
    assert!(redirect.headers.contains(&("location".to_string(), "/mlgate-admin/".to_string())));

    // Reports and quotas: 401 without the right key, whatever the path.
    for path in ["/mlgate-admin/reports/byApi", "/mlgate-admin/quotas", "/mlgate-admin/reports/nothing", "/mlgate-admin/x"] {
        for auth in [None, Some("Bearer wrong"), Some("Bearer ")] {
            let r = serve(&gw, "GET", path, auth, &m, &store).unwrap();
            assert_eq!(r.status, 401, "{path} {auth:?}");
            assert!(r.headers.contains(&("www-authenticate".to_string(), "Bearer realm=\"mlgate-admin\"".to_string())));
            assert!(csp(&r).is_some());
        }
    }
    // Without a timestamp clause, the metrics (the process's life); other parameters are ignored.
    let r = serve(&gw, "GET", "/mlgate-admin/reports/byApi?api-version=2022-08-01&$filter=apiId%20eq%20'azureml-demo'", ok, &m, &store)
        .unwrap();
    assert_eq!((r.status, r.content_type), (200, "application/json; charset=utf-8"));
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["value"][0]["callCountTotal"], 5);
    let r = serve(&gw, "GET", "/mlgate-admin/reports/bySubscription", ok, &m, &store).unwrap();
    assert_eq!(r.status, 404);
    assert!(r.body.contains("per_subscription"));
    assert_eq!(serve(&gw, "GET", "/mlgate-admin/reports/byUser", ok, &m, &store).unwrap().status, 404);
    assert_eq!(serve(&gw, "POST", "/mlgate-admin/reports/byApi", ok, &m, &store).unwrap().status, 405);
    // Not the admin's: /mlgate-admins is not under /mlgate-admin.
    assert!(serve(&gw, "GET", "/mlgate-admins", ok, &m, &store).is_none());

    // Keys, key digests and backend keys appear nowhere.
    let secrets = ["alice-1", "alice-2", "bob-1", "carol-1", "any-key", "ws1-key", "other-key", ADMIN_KEY];
    let digests: Vec<String> = secrets.iter().map(|s| sha_hex(s)).collect();
    for path in ["byApi", "byOperation", "byProduct"] {
        let body = serve(&gw, "GET", &format!("/mlgate-admin/reports/{path}"), ok, &m, &store).unwrap().body;
        for s in secrets.iter().map(|s| s.to_string()).chain(digests.iter().cloned()) {
            assert!(!body.contains(&s), "{path} contains {s}");
        }
    }
    let names: Vec<String> = (0..gw.usage.len() as u32).flat_map(|s| gw.usage_definitions(s)).map(|(_, _, n)| n).collect();
    for s in secrets.iter().map(|s| s.to_string()).chain(digests.iter().cloned()) {
        assert!(!names.iter().any(|n| n.contains(&s)), "a stat name contains {s}");
    }
}

#[test]
fn quota_counters_come_from_the_limit_records() {
    let mut cfg = demo();
    cfg["admin"] = json!({"path": "/mlgate-admin", "key_sha256": sha_hex(ADMIN_KEY)});
    cfg["subscriptions"][0]["start"] = json!("2023-11-14T00:00:00Z");
    let gw = gateway(&cfg);
    let mut store = MemStore::default();
    for t in 0..3 {
        let h = req("POST", RRS, Some("alice-1"));
        let v = view(&h);
        admit(&gw, &Request::from_headers(&v), T0 + t, &mut Conn::default(), &mut store);
    }
    let keys = store.keys();
    let m = Metrics::default();
    let r = serve(&gw, "GET", "/mlgate-admin/quotas", Some(&format!("Bearer {ADMIN_KEY}")), &m, &store).unwrap();
    assert_eq!(r.status, 200);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    // alice and carol are on Starter (with a quota); bob's product has none.
    assert_eq!(v["count"], 2);
    assert_eq!(
        v["value"][0],
        json!({"counterKey": "alice", "productId": "/products/starter", "productName": "Starter", "subscriptionId": "/subscriptions/alice",
               "periodStartTime": "2023-11-14T00:00:00Z", "periodEndTime": "2023-11-21T00:00:00Z",
               "value": {"callsCount": 3, "kbTransferred": 0}, "callsLimit": 100, "kbLimit": null})
    );
    assert_eq!(v["value"][1]["counterKey"], "carol");
    assert_eq!(v["value"][1]["value"]["callsCount"], 0);
    // Reading created nothing.
    assert_eq!(store.keys(), keys);
}

#[test]
fn admin_path_must_be_its_own() {
    for (path, field) in [
        ("/azureml-demo", "admin.path"),
        ("/azureml-demo/admin", "admin.path"),
        ("/", "admin.path"),
        ("mlgate-admin", "admin.path"),
        ("/mlgate-admin/", "admin.path"),
        ("/a<b", "admin.path"),
        ("/developer", "admin.path"),
    ] {
        let mut cfg = demo();
        cfg["portal"] = json!({"path": "/developer"});
        cfg["admin"] = json!({"path": path, "key_sha256": sha_hex(ADMIN_KEY)});
        let err = mlgate_core::model::Gateway::from_json(cfg.to_string().as_bytes(), &mlgate_core::testkit::Env(vec![])).err();
        assert_eq!(err.map(|e| e.field), Some(field.to_string()), "{path}");
    }
    let mut cfg = demo();
    cfg["admin"] = json!({"path": "/mlgate-admin", "key_sha256": "abc"});
    let err = mlgate_core::model::Gateway::from_json(cfg.to_string().as_bytes(), &mlgate_core::testkit::Env(vec![])).err().unwrap();
    assert_eq!(err.field, "admin.key_sha256");
    cfg["admin"] = json!({"path": "/mlgate-admin", "key_sha256": sha_hex(ADMIN_KEY), "extra": 1});
    assert!(mlgate_core::model::Gateway::from_json(cfg.to_string().as_bytes(), &mlgate_core::testkit::Env(vec![])).is_err());
    assert!(!any(&gateway(&demo())));
}

#[test]
fn report_numbers_are_exact_decimals_without_float_formatting() {
    use mlgate_usage::report::thousandths;
    assert_eq!(thousandths(0), "0");
    assert_eq!(thousandths(20), "0.02");
    assert_eq!(thousandths(1035), "1.035");
    assert_eq!(thousandths(3000), "3");
    assert_eq!(thousandths(1_500), "1.5");
    assert_eq!(thousandths(u64::MAX), "18446744073709551.615");
}
