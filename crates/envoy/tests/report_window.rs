//! Reports over a time window: the timeline's quarter-hour buckets (what a call adds, where,
//! the ring of 25 hours, a reconfiguration, racing workers, a failing store), `byTime` with its
//! intervals, `$filter`/`$top`/`$skip`/`$orderby` on every report, the admin API's answers to a
//! bad request, and the buckets' memory against the estimate.

// Test code: panics and indexing are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use mlgate_core::admit::Request;
use mlgate_core::limits::Store;
use mlgate_core::local::LocalHost;
use mlgate_core::memory;
use mlgate_core::model::Gateway;
use mlgate_core::testkit::{demo, gateway, headers, sha_hex, view, MemStore};
use mlgate_core::time::parse_rfc3339_ms;
use mlgate_core::usage::{self, Call, Matched, TIMELINE_HOURS};
use mlgate_usage::query::{parse, Query};
use mlgate_usage::report::{answer, Refused, Report};
use mlgate_usage::timeline::Timeline;
use serde_json::{json, Value};
use std::collections::HashMap;

const ADMIN_KEY: &str = "the-admin-key";
const MIN: u64 = 60_000;

fn t(s: &str) -> u64 {
    parse_rfc3339_ms(s).unwrap()
}

/// 2026-01-01T10:00:00Z, a quarter (and an hour) boundary.
fn t0() -> u64 {
    t("2026-01-01T10:00:00Z")
}

struct Host {
    store: MemStore,
    metrics: HashMap<(u32, usize), u64>,
}

impl Host {
    fn new() -> Host {
        Host { store: MemStore::default(), metrics: HashMap::new() }
    }
}

impl LocalHost for Host {
    fn store(&mut self) -> &mut dyn Store {
        &mut self.store
    }
    fn metric(&mut self, slot: u32, index: usize) -> Option<u64> {
        Some(self.metrics.get(&(slot, index)).copied().unwrap_or(0))
    }
}

fn admin_demo() -> Value {
    let mut c = demo();
    c["admin"] = json!({"path": "/mlgate-admin", "key_sha256": sha_hex(ADMIN_KEY)});
    c
}

/// The slot of an identified call of `sub` to the demo API's operation `op`.
fn slot(gw: &Gateway, op: u16, sub: u32) -> u32 {
    gw.usage_slot(&Matched { api: Some(0), op: Some(op), sub: Some(sub) }).unwrap()
}

fn call(slot: u32, status: u16, api_ms: u64) -> Call {
    Call {
        slot,
        status,
        request_bytes: 10,
        response_bytes: 5,
        api_time_us: api_ms * 1000,
        service_time_us: (status == 200).then_some(api_ms * 500),
        prompt_tokens: 0,
        completion_tokens: 0,
    }
}

fn report(gw: &Gateway, kind: Report, query: &str, host: &mut Host, now: u64) -> Value {
    let q = parse(query.as_bytes()).unwrap();
    let body = answer(gw, kind, &q, host, now, &mut |skip| format!("next:{skip}")).unwrap();
    serde_json::from_str(&body).unwrap()
}

fn window(from: &str, to: &str) -> String {
    format!("$filter=timestamp ge datetime'{from}' and timestamp le datetime'{to}'")
}

#[test]
fn calls_count_in_the_quarter_they_end_and_by_time_adds_quarters_up() {
    let gw = gateway(&admin_demo());
    let tl = Timeline::new(&gw);
    let mut h = Host::new();
    let (alice, bob) = (slot(&gw, 0, 0), slot(&gw, 0, 1));
    let t0 = t0();
    tl.record(&call(alice, 200, 4), t0 + MIN, &mut h.store);
    tl.record(&call(alice, 200, 2), t0 + 14 * MIN + 59_999, &mut h.store);
    tl.record(&call(alice, 429, 1), t0 + 15 * MIN, &mut h.store); // the next quarter's first millisecond
    tl.record(&call(bob, 500, 8), t0 + 16 * MIN, &mut h.store);
    tl.record(&call(bob, 200, 6), t0 + 61 * MIN, &mut h.store);
    let now = t0 + 70 * MIN;

    let v = report(&gw, Report::ByTime, &format!("{}&interval=PT15M", window("2026-01-01T10:00:00", "2026-01-01T11:00:00")), &mut h, now);
    let rows: Vec<_> = v["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["timestamp"].clone(), r["interval"].clone(), r["callCountTotal"].clone()))
        .collect();
    assert_eq!(
        rows,
        [
            (json!("2026-01-01T10:00:00Z"), json!("PT15M"), json!(2)),
            (json!("2026-01-01T10:15:00Z"), json!("PT15M"), json!(2)),
            (json!("2026-01-01T11:00:00Z"), json!("PT15M"), json!(1)),
        ]
    );
    assert_eq!(v["count"], 3);
    // The first quarter's record in full: APIM's names, the times in milliseconds.
    assert_eq!(
        v["value"][0],
        json!({"timestamp": "2026-01-01T10:00:00Z", "interval": "PT15M", "callCountSuccess": 2, "callCountBlocked": 0,
               "callCountFailed": 0, "callCountOther": 0, "callCountTotal": 2, "bandwidth": 30, "apiTimeAvg": 3,
               "apiTimeMin": 2, "apiTimeMax": 4, "serviceTimeAvg": 1.5, "serviceTimeMin": 1, "serviceTimeMax": 2,
               "promptTokens": 0, "completionTokens": 0, "totalTokens": 0})
    );
    // A quarter with a 429 and a 500: blocked and failed, and no backend time for the 429.
    assert_eq!((v["value"][1]["callCountBlocked"].clone(), v["value"][1]["callCountFailed"].clone()), (json!(1), json!(1)));

    // Hours: the quarters add up.
    let v = report(&gw, Report::ByTime, &format!("{}&interval=PT1H", window("2026-01-01T10:00:00", "2026-01-01T11:00:00")), &mut h, now);
    let rows: Vec<_> = v["value"].as_array().unwrap().iter().map(|r| (r["timestamp"].clone(), r["callCountTotal"].clone())).collect();
    assert_eq!(rows, [(json!("2026-01-01T10:00:00Z"), json!(4)), (json!("2026-01-01T11:00:00Z"), json!(1))]);
    // Intervals start at the window's first quarter: gt 10:00 starts at 10:15.
    let q = "$filter=timestamp gt '2026-01-01T10:00:00Z'&interval=PT30M";
    let v = report(&gw, Report::ByTime, q, &mut h, now);
    let rows: Vec<_> = v["value"].as_array().unwrap().iter().map(|r| (r["timestamp"].clone(), r["callCountTotal"].clone())).collect();
    assert_eq!(rows, [(json!("2026-01-01T10:15:00Z"), json!(2)), (json!("2026-01-01T10:45:00Z"), json!(1))]);
    // No window: every kept quarter, intervals from multiples of the interval (P1D: midnight).
    let v = report(&gw, Report::ByTime, "interval=P1D", &mut h, now);
    assert_eq!((v["count"].clone(), v["value"][0]["callCountTotal"].clone()), (json!(1), json!(5)));
    assert_eq!((v["value"][0]["timestamp"].clone(), v["value"][0]["interval"].clone()), (json!("2026-01-01T00:00:00Z"), json!("P1D")));
    let v = report(&gw, Report::ByTime, "interval=PT45M", &mut h, now);
    let rows: Vec<_> = v["value"].as_array().unwrap().iter().map(|r| (r["timestamp"].clone(), r["callCountTotal"].clone())).collect();
    assert_eq!(rows, [(json!("2026-01-01T09:45:00Z"), json!(4)), (json!("2026-01-01T10:30:00Z"), json!(1))]);
    // Bounds: le excludes the next quarter, lt its own start.
    let v = report(&gw, Report::ByTime, &format!("{}&interval=PT15M", window("2026-01-01T10:00:00", "2026-01-01T10:14:59")), &mut h, now);
    assert_eq!(v["count"], 1);
    let v = report(&gw, Report::ByTime, "$filter=timestamp lt '2026-01-01T10:15:00Z'&interval=PT15M", &mut h, now);
    assert_eq!(v["count"], 1);

    // The other reports over the same window: per subscription's product, in configuration order.
    let w = window("2026-01-01T10:15:00", "2026-01-01T11:45:00");
    let v = report(&gw, Report::ByProduct, &w, &mut h, now);
    let totals: Vec<_> = v["value"].as_array().unwrap().iter().map(|r| (r["name"].clone(), r["callCountTotal"].clone())).collect();
    assert_eq!(totals, [(json!("Starter"), json!(1)), (json!("Unlimited"), json!(2))]);
    let v = report(&gw, Report::ByApi, &w, &mut h, now);
    assert_eq!(v["value"][0]["callCountTotal"], 3);
    assert_eq!(v["value"][1]["callCountTotal"], 0, "every API has a record, zero ones too");
    assert!(v["value"][0].get("timestamp").is_none(), "only byTime's records carry timestamp and interval");
    // An identifier filter narrows the calls and the records.
    let v = report(&gw, Report::ByTime, &format!("{w} and productId eq '/products/unlimited'&interval=PT15M"), &mut h, now);
    assert_eq!(v["value"].as_array().unwrap().iter().map(|r| r["callCountTotal"].as_u64().unwrap()).sum::<u64>(), 2);
    let v = report(&gw, Report::ByProduct, &format!("{w} and productId eq 'starter'"), &mut h, now);
    assert_eq!((v["count"].clone(), v["value"][0]["callCountTotal"].clone()), (json!(1), json!(1)));
    // Without a timestamp clause the metrics answer (none here), whatever the buckets hold.
    assert_eq!(report(&gw, Report::ByApi, "", &mut h, now)["value"][0]["callCountTotal"], 0);
}

#[test]
fn the_ring_keeps_24_hours_and_every_record_is_bounded() {
    let gw = gateway(&admin_demo());
    let est = memory::estimate(&gw);
    let tl = Timeline::new(&gw);
    let mut h = Host::new();
    let slots = gw.usage.len() as u32;
    let t0 = t0();
    // A call in every slot, every hour, for 30 hours.
    for hour in 0..30 {
        for s in 0..slots {
            tl.record(&call(s, 200, 1), t0 + hour * 60 * MIN + 7 * MIN, &mut h.store);
        }
    }
    let now = t0 + 29 * 60 * MIN + 8 * MIN;
    let map = h.store.inner.borrow().map.clone();
    let records: Vec<_> = map.iter().filter(|(k, _)| k.starts_with("mlgate/t/")).collect();
    assert_eq!(records.len() as u64, u64::from(slots) * TIMELINE_HOURS, "one record per slot per ring hour, no more");
    assert_eq!(est.timeline.entries, u64::from(slots) * TIMELINE_HOURS);
    let bytes: u64 = records.iter().map(|(k, (v, _))| memory::entry(k.len() as u64, v.len() as u64)).sum();
    assert_eq!(bytes, est.timeline.bytes, "the estimate is exactly what full buckets take");
    assert!(est.store_bytes() >= est.timeline.bytes + est.usage_records.bytes);
    // The last 25 hours are there (the current one and 24 before it), older ones are gone.
    let v = report(&gw, Report::ByTime, "interval=PT1H", &mut h, now);
    assert_eq!(v["count"], 25);
    assert_eq!(v["value"][0]["timestamp"], "2026-01-01T15:00:00Z");
    assert!(v["value"].as_array().unwrap().iter().all(|r| r["callCountTotal"] == slots));
    // A window reaching further back than the ring finds what is kept.
    let v = report(&gw, Report::ByApi, &window("2026-01-01T00:00:00", "2026-01-03T00:00:00"), &mut h, now);
    let total = v["value"].as_array().unwrap().iter().map(|r| r["callCountTotal"].as_u64().unwrap()).sum::<u64>();
    let api_slots = gw.usage.slots().iter().filter(|s| s.api.is_some()).count() as u64;
    assert_eq!(total, 25 * api_slots);
    // Later, with no new calls, the old hours age out.
    let v = report(&gw, Report::ByTime, "interval=PT1H", &mut h, now + 24 * 60 * MIN);
    assert_eq!(v["count"], 1);
    assert_eq!(report(&gw, Report::ByTime, "interval=PT1H", &mut h, now + 25 * 60 * MIN)["count"], 0);
}

#[test]
fn a_reconfiguration_that_renumbers_slots_starts_their_buckets_afresh() {
    let gw = gateway(&admin_demo());
    let mut h = Host::new();
    let alice = slot(&gw, 0, 0);
    Timeline::new(&gw).record(&call(alice, 200, 1), t0(), &mut h.store);
    let now = t0() + MIN;
    assert_eq!(report(&gw, Report::ByTime, "interval=PT15M", &mut h, now)["count"], 1);
    // The products swapped: the same slot numbers now mean other labels.
    let mut c = admin_demo();
    let products = c["products"].as_array().unwrap().iter().rev().cloned().collect::<Vec<_>>();
    c["products"] = json!(products);
    let gw2 = gateway(&c);
    assert_ne!(gw2.usage_labels(alice), gw.usage_labels(alice));
    assert_eq!(report(&gw2, Report::ByTime, "interval=PT15M", &mut h, now)["count"], 0);
    // The unchanged configuration still reads them.
    assert_eq!(report(&gw, Report::ByTime, "interval=PT15M", &mut h, now)["count"], 1);
}

#[test]
fn racing_workers_lose_no_call_and_a_failing_store_loses_only_the_buckets() {
    let gw = gateway(&admin_demo());
    let mut h = Host::new();
    let alice = slot(&gw, 0, 0);
    let (w1, w2) = (Timeline::new(&gw), Timeline::new(&gw));
    for i in 0..10 {
        // Another worker writes between every read and write.
        h.store.inner.borrow_mut().forced_conflicts = 3;
        w1.record(&call(alice, 200, 1), t0() + i, &mut h.store);
        w2.record(&call(alice, 200, 1), t0() + i, &mut h.store);
    }
    assert_eq!(report(&gw, Report::ByTime, "interval=PT15M", &mut h, t0() + MIN)["value"][0]["callCountTotal"], 20);
    h.store.inner.borrow_mut().fail_sets = true;
    w1.record(&call(alice, 200, 1), t0() + 2, &mut h.store);
    h.store.inner.borrow_mut().fail_gets = true;
    w1.record(&call(alice, 200, 1), t0() + 3, &mut h.store);
    let v = report(&gw, Report::ByTime, "interval=PT15M", &mut h, t0() + MIN);
    assert_eq!(v["count"], 0, "an unreadable store is no buckets, not an error");
    h.store.inner.borrow_mut().fail_gets = false;
    assert_eq!(report(&gw, Report::ByTime, "interval=PT15M", &mut h, t0() + MIN)["value"][0]["callCountTotal"], 20);
}

#[test]
fn top_skip_and_orderby_page_any_report() {
    let gw = gateway(&admin_demo());
    let mut h = Host::new();
    // Metrics: alice's rrs-execute 3 calls, bob's bes-status 5, bob's other/ping 1.
    let bob_status = slot(&gw, 3, 1);
    let ping = gw.usage_slot(&Matched { api: Some(1), op: Some(0), sub: Some(1) }).unwrap();
    for (s, n) in [(slot(&gw, 0, 0), 3), (bob_status, 5), (ping, 1)] {
        h.metrics.insert((s, usage::calls(usage::Bucket::Success)), n);
    }
    let all = report(&gw, Report::ByOperation, "", &mut h, 0);
    let n = all["count"].as_u64().unwrap();
    assert!(n >= 4);
    let v = report(&gw, Report::ByOperation, "$orderby=callCountTotal desc&$top=2", &mut h, 0);
    let totals: Vec<_> = v["value"].as_array().unwrap().iter().map(|r| r["callCountTotal"].as_u64().unwrap()).collect();
    assert_eq!(totals, [5, 3]);
    assert_eq!(v["count"], n, "count is every record; the page is value");
    assert_eq!(v["nextLink"], "next:2");
    let v = report(&gw, Report::ByOperation, "$orderby=callCountTotal desc&$top=2&$skip=2", &mut h, 0);
    assert_eq!(v["value"][0]["callCountTotal"], 1);
    let v = report(&gw, Report::ByOperation, &format!("$skip={n}"), &mut h, 0);
    assert_eq!((v["value"].as_array().unwrap().len(), v.get("nextLink")), (0, None));
    // Ties keep configuration order; names sort as strings; several keys.
    let v = report(&gw, Report::ByOperation, "$orderby=callCountTotal,name desc", &mut h, 0);
    let rows = v["value"].as_array().unwrap();
    let totals: Vec<_> = rows.iter().map(|r| r["callCountTotal"].as_u64().unwrap()).collect();
    assert_eq!(totals[totals.len() - 3..], [1, 3, 5]);
    let zero: Vec<_> = rows[..rows.len() - 3].iter().map(|r| r["name"].as_str().unwrap()).collect();
    let mut sorted = zero.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(zero, sorted, "zero rows by name, descending");
    let v = report(&gw, Report::ByApi, "$orderby=name desc", &mut h, 0);
    assert_eq!(v["value"][0]["name"], "Other");
    // Operation filters: the bare id, or APIM's path.
    let v = report(&gw, Report::ByOperation, "$filter=operationId eq '/apis/other/operations/ping'", &mut h, 0);
    assert_eq!((v["count"].clone(), v["value"][0]["callCountTotal"].clone()), (json!(1), json!(1)));
    assert_eq!(report(&gw, Report::ByOperation, "$filter=operationId eq 'ping'", &mut h, 0)["count"], 1);
    assert_eq!(report(&gw, Report::ByApi, "$filter=apiId eq 'nothing'", &mut h, 0)["count"], 0);
}

fn serve(gw: &Gateway, path: &str, host: &mut Host) -> mlgate_core::reply::Reply {
    let bearer = format!("Bearer {ADMIN_KEY}");
    let h = headers(&[(":method", "GET"), (":path", path), (":scheme", "https"), (":authority", "gw"), ("authorization", &bearer)]);
    let v = view(&h);
    mlgate_envoy::local::serve(gw, &Request::from_headers(&v), t0(), host).unwrap()
}

#[test]
fn the_admin_api_answers_a_bad_request_in_apims_error_shape() {
    let gw = gateway(&admin_demo());
    let mut h = Host::new();
    for (path, target) in [
        ("/mlgate-admin/reports/byApi?$filter=timestamp%20ge%20yesterday", "$filter"),
        ("/mlgate-admin/reports/byApi?$filter=timestamp%20ge%20'2026-01-01T00:00:00'%20or%20apiId%20eq%20'x'", "$filter"),
        ("/mlgate-admin/reports/byTime", "interval"),
        ("/mlgate-admin/reports/byTime?interval=PT10M", "interval"),
        ("/mlgate-admin/reports/byProduct?$top=0", "$top"),
        ("/mlgate-admin/reports/byOperation?$orderby=colour", "$orderby"),
    ] {
        let r = serve(&gw, path, &mut h);
        assert_eq!((r.status, r.content_type), (400, "application/json; charset=utf-8"), "{path}");
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["error"]["code"], "ValidationError", "{path}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
        assert_eq!(v["error"]["details"][0], json!({"code": "ValidationError", "target": target, "message": v["error"]["message"]}));
        assert!(r.headers.iter().any(|(k, v)| k == "cache-control" && v == "no-store"));
    }
    // bySubscription, and a subscriptionId filter, need per-subscription metrics.
    assert_eq!(serve(&gw, "/mlgate-admin/reports/bySubscription", &mut h).status, 404);
    assert_eq!(serve(&gw, "/mlgate-admin/reports/byApi?$filter=subscriptionId%20eq%20'alice'", &mut h).status, 404);
    // A good one, paged: nextLink is the same request with $skip moved on.
    let r = serve(&gw, "/mlgate-admin/reports/byTime?interval=PT15M&$top=1", &mut h);
    assert_eq!(r.status, 200);
    Timeline::new(&gw).record(&call(slot(&gw, 0, 0), 200, 1), t0() - 20 * MIN, &mut h.store);
    Timeline::new(&gw).record(&call(slot(&gw, 0, 0), 200, 1), t0() - MIN, &mut h.store);
    let r = serve(&gw, "/mlgate-admin/reports/byTime?interval=PT15M&$top=1&$skip=0&api-version=2022-08-01", &mut h);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!((v["count"].clone(), v["value"][0]["timestamp"].clone()), (json!(2), json!("2026-01-01T09:30:00Z")));
    assert_eq!(v["nextLink"], "https://gw/mlgate-admin/reports/byTime?interval=PT15M&$top=1&api-version=2022-08-01&$skip=1");
}

#[test]
fn a_per_subscription_window_and_its_filter() {
    let mut c = admin_demo();
    c["metrics"] = json!({"per_subscription": true});
    let gw = gateway(&c);
    let mut h = Host::new();
    let tl = Timeline::new(&gw);
    tl.record(&call(slot(&gw, 0, 0), 200, 1), t0(), &mut h.store);
    tl.record(&call(slot(&gw, 0, 1), 200, 1), t0(), &mut h.store);
    tl.record(&call(slot(&gw, 0, 1), 200, 1), t0(), &mut h.store);
    let w = window("2026-01-01T10:00:00", "2026-01-01T10:00:00");
    let v = report(&gw, Report::BySubscription, &format!("{w}&$orderby=callCountTotal desc"), &mut h, t0() + MIN);
    let rows: Vec<_> = v["value"].as_array().unwrap().iter().map(|r| (r["subscriptionId"].clone(), r["callCountTotal"].clone())).collect();
    assert_eq!(
        rows,
        [(json!("/subscriptions/bob"), json!(2)), (json!("/subscriptions/alice"), json!(1)), (json!("/subscriptions/carol"), json!(0))]
    );
    let v = report(&gw, Report::ByTime, &format!("{w} and subscriptionId eq '/subscriptions/alice'&interval=PT15M"), &mut h, t0() + MIN);
    assert_eq!(v["value"][0]["callCountTotal"], 1);
    let q = Query { subscription: Some("alice".into()), ..Query::default() };
    assert!(answer(&gw, Report::ByApi, &q, &mut h, t0(), &mut |_| String::new()).is_ok());
    let plain = gateway(&admin_demo());
    assert_eq!(answer(&plain, Report::ByApi, &q, &mut h, t0(), &mut |_| String::new()), Err(Refused::NoSubscriptions));
}

#[test]
fn orderby_is_a_stable_sort_of_many_records() {
    let mut c = admin_demo();
    c["metrics"] = json!({"per_subscription": true});
    let subs: Vec<Value> = (0..70)
        .map(|i| json!({"id": format!("s{i:02}"), "product": "unlimited", "state": "active", "primary_key": format!("k-{i}")}))
        .collect();
    c["subscriptions"] = json!(subs);
    let gw = gateway(&c);
    let mut h = Host::new();
    let mut x: u64 = 12345;
    let mut want = Vec::new();
    for u in 0..70u32 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let n = (x >> 33) % 5;
        h.metrics.insert((slot(&gw, 0, u), usage::calls(usage::Bucket::Success)), n);
        want.push((format!("/subscriptions/s{u:02}"), n));
    }
    want.sort_by_key(|w| std::cmp::Reverse(w.1));
    let v = report(&gw, Report::BySubscription, "$orderby=callCountTotal desc", &mut h, 0);
    let got: Vec<_> = v["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["subscriptionId"].as_str().unwrap().to_string(), r["callCountTotal"].as_u64().unwrap()))
        .collect();
    assert_eq!(got, want);
    let v = report(&gw, Report::BySubscription, "$orderby=callCountTotal,name desc&$skip=60&$top=20", &mut h, 0);
    let mut want2 = want.clone();
    want2.sort_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)));
    let got: Vec<_> = v["value"].as_array().unwrap().iter().map(|r| r["subscriptionId"].as_str().unwrap().to_string()).collect();
    assert_eq!(got, want2[60..].iter().map(|w| w.0.clone()).collect::<Vec<_>>());
    assert!(v.get("nextLink").is_none());
}
