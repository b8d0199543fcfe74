#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::support::{demo, gateway, headers, run_full, starter_with, Conn, Got, MemStore};
use crate::admit::{record_bandwidth, Event};
use crate::model::Gateway;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::rc::Rc;

const RRS: &str = "/azureml-demo/workspaces/w/services/s/execute?api-version=2.0&details=true";
const T0: u64 = 1_700_000_000_000;

fn check_with(gw: &Gateway, store: &mut MemStore, now: u64, key: &str, extra: &[(&str, &str)], ip: &str) -> Got {
    let mut pairs =
        vec![(":method", "POST"), (":path", RRS), (":scheme", "http"), (":authority", "gw"), ("ocp-apim-subscription-key", key)];
    pairs.extend_from_slice(extra);
    let hs = headers(&pairs);
    let mut conn = Conn { ip: Some(ip.as_bytes().to_vec()), ..Conn::default() };
    run_full(gw, store, now, &hs, &mut conn)
}

fn check(gw: &Gateway, store: &mut MemStore, now: u64, key: &str) -> Got {
    check_with(gw, store, now, key, &[], "10.0.0.1")
}

fn status(o: &Got) -> u16 {
    o.status
}

fn denial(o: Got) -> (u16, String, String) {
    let Some(r) = o.reply else { panic!("expected a denial, got {o:?}") };
    let v: Value = serde_json::from_str(&r.body).unwrap();
    let retry = r.headers.iter().find(|(k, _)| k == "retry-after").map(|(_, v)| v.clone()).unwrap_or_default();
    (r.status, v["message"].as_str().unwrap().to_string(), retry)
}

/// The store failed and `failure_mode` (default `deny`) answered 503.
fn assert_unavailable(o: Got) {
    assert_eq!(o.status, 503, "{o:?}");
    assert_eq!(o.events.get(Event::StoreFailure), 1);
}

fn header(o: &Got, name: &str) -> Option<String> {
    o.response_headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
}

#[test]
fn sliding_window_admits_exactly_n_and_reports_retry_after() {
    let gw = gateway(&starter_with(json!({"rate_limit": {"calls": 5, "renewal_period": 60}})));
    let mut s = MemStore::default();
    for i in 0..5 {
        let o = check(&gw, &mut s, T0 + i * 1000, "alice-1");
        assert_eq!(status(&o), 200, "call {i}");
        assert_eq!(header(&o, "ratelimit-remaining"), Some((4 - i).to_string()));
        assert_eq!(header(&o, "ratelimit-limit"), Some("5".into()));
    }
    // Oldest admission at T0: the next slot frees at T0 + 60 s.
    let (st, msg, retry) = denial(check(&gw, &mut s, T0 + 10_500, "alice-1"));
    assert_eq!(st, 429);
    assert_eq!(msg, "Rate limit is exceeded. Try again in 50 seconds.");
    assert_eq!(retry, "50");
    // Never less than 1 second.
    let (_, msg, retry) = denial(check(&gw, &mut s, T0 + 59_999, "alice-1"));
    assert_eq!((msg.as_str(), retry.as_str()), ("Rate limit is exceeded. Try again in 1 seconds.", "1"));
    // Denials were not counted: exactly one more is admitted at T0 + 60 s, then T0+61 s...
    assert_eq!(status(&check(&gw, &mut s, T0 + 60_000, "alice-1")), 200);
    assert_eq!(status(&check(&gw, &mut s, T0 + 60_000, "alice-1")), 429);
    assert_eq!(status(&check(&gw, &mut s, T0 + 61_000, "alice-1")), 200);
    // Other subscriptions count separately.
    assert_eq!(status(&check(&gw, &mut s, T0 + 61_000, "bob-1")), 200);
}

#[test]
fn several_consecutive_windows_admit_n_each() {
    let gw = gateway(&starter_with(json!({"rate_limit": {"calls": 3, "renewal_period": 2}})));
    let mut s = MemStore::default();
    for w in 0..5u64 {
        let admitted = (0..10).filter(|i| status(&check(&gw, &mut s, T0 + w * 2000 + i * 10, "alice-1")) == 200).count();
        assert_eq!(admitted, 3, "window {w}");
    }
}

#[test]
fn quota_calls_fixed_periods_from_subscription_start() {
    let mut c = starter_with(json!({"quota": {"calls": 3, "renewal_period": 3600}}));
    c["subscriptions"][0]["start"] = json!("2023-11-14T22:00:00Z"); // T0 is 22:13:20
    let gw = gateway(&c);
    let mut s = MemStore::default();
    for _ in 0..3 {
        assert_eq!(status(&check(&gw, &mut s, T0, "alice-1")), 200);
    }
    let (st, msg, retry) = denial(check(&gw, &mut s, T0, "alice-1"));
    assert_eq!(st, 403);
    // The period runs 22:00–23:00: 46 min 40 s left.
    assert_eq!(msg, "Out of call volume quota. Quota will be replenished in 00:46:40.");
    assert_eq!(retry, "2800");
    assert_eq!(status(&check(&gw, &mut s, T0 + 2_799_999, "alice-1")), 403);
    assert_eq!(status(&check(&gw, &mut s, T0 + 2_800_000, "alice-1")), 200);
}

#[test]
fn a_lifetime_quota_never_renews() {
    // APIM's `renewal-period="0"`: the period is infinite.
    let gw = gateway(&starter_with(json!({"quota": {"calls": 2, "renewal_period": 0}})));
    let mut s = MemStore::default();
    assert_eq!(status(&check(&gw, &mut s, T0, "alice-1")), 200);
    assert_eq!(status(&check(&gw, &mut s, T0 + 3_600_000, "alice-1")), 200);
    for later in [T0 + 3_600_001, T0 + 400 * 86_400_000] {
        let (st, msg, retry) = denial(check(&gw, &mut s, later, "alice-1"));
        assert_eq!(st, 403);
        assert_eq!(msg, "Out of call volume quota. Quota will be replenished in 10675199.02:48:05.");
        assert_eq!(retry, "922337203685");
    }
    // A subscription's own count: bob's product has no quota; carol (suspended) never counts.
    let mut other = starter_with(json!({"quota": {"calls": 1, "renewal_period": 0}}));
    other["subscriptions"][1]["product"] = json!("starter");
    let gw = gateway(&other);
    let mut s = MemStore::default();
    assert_eq!(status(&check(&gw, &mut s, T0, "alice-1")), 200);
    assert_eq!(status(&check(&gw, &mut s, T0, "bob-1")), 200);
    assert_eq!(status(&check(&gw, &mut s, T0 + 1, "bob-1")), 403);
}

#[test]
fn long_quota_messages_use_days() {
    let gw = gateway(&starter_with(json!({"quota": {"calls": 1, "renewal_period": 604800}})));
    let mut s = MemStore::default();
    assert_eq!(status(&check(&gw, &mut s, T0, "alice-1")), 200);
    let (_, msg, _) = denial(check(&gw, &mut s, T0, "alice-1"));
    // Weekly periods from the epoch: T0 is 512,000 s into its period, 92,800 s remain.
    assert_eq!(msg, "Out of call volume quota. Quota will be replenished in 1.01:46:40.");
}

#[test]
fn bandwidth_quota_counts_bytes_after_the_fact() {
    let gw = gateway(&starter_with(json!({"quota": {"bandwidth_kb": 2, "renewal_period": 60}})));
    let mut s = MemStore::default();
    let o = check(&gw, &mut s, T0, "alice-1");
    assert!(o.count_bandwidth);
    let alice = 0;
    assert_eq!(record_bandwidth(&gw, alice, 2047, T0, &mut s).get(Event::StoreFailure), 0);
    assert_eq!(status(&check(&gw, &mut s, T0 + 1, "alice-1")), 200);
    assert_eq!(record_bandwidth(&gw, alice, 1, T0, &mut s).get(Event::StoreFailure), 0);
    let (st, msg, _) = denial(check(&gw, &mut s, T0 + 2, "alice-1"));
    assert_eq!(st, 403);
    assert!(msg.starts_with("Out of bandwidth quota. Quota will be replenished in 00:00:"), "{msg}");
    // Renewed with the next period (periods from the epoch; T0 is 20 s into its minute).
    assert_eq!(status(&check(&gw, &mut s, T0 + 40_000, "alice-1")), 200);
}

#[test]
fn all_limits_must_admit_and_denials_count_nowhere() {
    let mut c = starter_with(json!({"rate_limit": {"calls": 2, "renewal_period": 60}, "quota": {"calls": 3, "renewal_period": 3600}}));
    c["apis"][0]["rate_limit"] =
        json!({"calls": 10, "renewal_period": 3600, "remaining_calls_header": "X-Remaining", "total_calls_header": "X-Total"});
    let gw = gateway(&c);
    let mut s = MemStore::default();
    let o = check(&gw, &mut s, T0, "alice-1");
    assert_eq!(header(&o, "x-remaining"), Some("9".into()));
    assert_eq!(header(&o, "x-total"), Some("10".into()));
    // Most restrictive: the product rate limit (1 left of 2).
    assert_eq!(header(&o, "ratelimit-limit"), Some("2".into()));
    assert_eq!(header(&o, "ratelimit-remaining"), Some("1".into()));
    assert_eq!(header(&o, "ratelimit-reset"), Some("60".into()));
    assert_eq!(status(&check(&gw, &mut s, T0, "alice-1")), 200);
    // Product rate limit denies: neither the API limit nor the quota counted it.
    for _ in 0..5 {
        assert_eq!(status(&check(&gw, &mut s, T0 + 1000, "alice-1")), 429);
    }
    let o = check(&gw, &mut s, T0 + 60_000, "alice-1");
    assert_eq!(header(&o, "x-remaining"), Some("7".into()));
    // Quota is now exhausted (3 calls): 403, and the rate limits did not count it.
    assert_eq!(status(&check(&gw, &mut s, T0 + 60_001, "alice-1")), 403);
    assert_eq!(status(&check(&gw, &mut s, T0 + 60_002, "alice-1")), 403);
}

#[test]
fn cas_conflicts_are_retried_and_exhaustion_is_unavailable() {
    let gw = gateway(&starter_with(json!({"rate_limit": {"calls": 2, "renewal_period": 60}})));
    let mut s = MemStore::default();
    assert_eq!(status(&check(&gw, &mut s, T0 - 120_000, "alice-1")), 200); // creates the record
    s.inner.borrow_mut().forced_conflicts = 5;
    assert_eq!(status(&check(&gw, &mut s, T0, "alice-1")), 200);
    s.inner.borrow_mut().forced_conflicts = 100;
    assert_unavailable(check(&gw, &mut s, T0, "alice-1"));
    s.inner.borrow_mut().forced_conflicts = 0;
    // The failed attempt counted nothing: one call is still left.
    assert_eq!(status(&check(&gw, &mut s, T0, "alice-1")), 200);
    assert_eq!(status(&check(&gw, &mut s, T0, "alice-1")), 429);
    s.inner.borrow_mut().fail_sets = true;
    assert_unavailable(check(&gw, &mut s, T0 + 60_000, "alice-1"));
    s.inner.borrow_mut().fail_sets = false;
    s.inner.borrow_mut().fail_gets = true;
    assert_unavailable(check(&gw, &mut s, T0 + 60_000, "alice-1"));
}

/// Worker B runs a whole decision between worker A's read and A's write.
#[test]
fn interleaved_workers_admit_exactly_the_limit() {
    let gw = Rc::new(gateway(&starter_with(json!({"rate_limit": {"calls": 1, "renewal_period": 60}}))));
    let a = MemStore::default();
    // Create the record first, so both workers race on an existing key.
    assert_eq!(
        status(&check(&gateway(&starter_with(json!({"quota": {"calls": 9, "renewal_period": 60}}))), &mut a.clone(), T0, "alice-1")),
        200
    );
    let b_result = Rc::new(RefCell::new(None));
    {
        let (gw2, b, out) = (Rc::clone(&gw), a.clone(), Rc::clone(&b_result));
        *a.before_set.borrow_mut() = Some(Box::new(move || {
            let mut b = MemStore { inner: Rc::clone(&b.inner), before_set: Default::default() };
            *out.borrow_mut() = Some(status(&check(&gw2, &mut b, T0, "alice-1")));
        }));
    }
    let first = status(&check(&gw, &mut a.clone(), T0, "alice-1"));
    let second = b_result.borrow().expect("worker B ran");
    // B wrote between A's read and write: A's CAS failed, A re-read and was denied.
    assert_eq!((second, first), (200, 429));
}

/// Both workers find the key missing; B creates and counts between A's read and A's create.
#[test]
fn key_creation_race_loses_no_count() {
    let gw = Rc::new(gateway(&starter_with(json!({"rate_limit": {"calls": 1, "renewal_period": 60}}))));
    let a = MemStore::default();
    let b_result = Rc::new(RefCell::new(None));
    {
        let (gw2, b, out) = (Rc::clone(&gw), a.clone(), Rc::clone(&b_result));
        // A's first set is its sentinel write, right after it saw the record missing.
        *a.before_set.borrow_mut() = Some(Box::new(move || {
            let mut b = MemStore { inner: Rc::clone(&b.inner), before_set: Default::default() };
            *out.borrow_mut() = Some(status(&check(&gw2, &mut b, T0, "alice-1")));
        }));
    }
    let first = status(&check(&gw, &mut a.clone(), T0, "alice-1"));
    assert_eq!((b_result.borrow().expect("B ran"), first), (200, 429));
    // A plain unconditional create would have wiped B's count and admitted A as well.
}

#[test]
fn counts_survive_reconfiguration() {
    let mut s = MemStore::default();
    let gw =
        gateway(&starter_with(json!({"rate_limit": {"calls": 3, "renewal_period": 60}, "quota": {"calls": 10, "renewal_period": 3600}})));
    for i in 0..3 {
        assert_eq!(status(&check(&gw, &mut s, T0 + i, "alice-1")), 200);
    }
    assert_eq!(status(&check(&gw, &mut s, T0 + 10, "alice-1")), 429);
    // New subscription, higher limit: alice keeps her 3 admissions, so 2 more fit under 5.
    let mut c = starter_with(json!({"rate_limit": {"calls": 5, "renewal_period": 60}, "quota": {"calls": 10, "renewal_period": 3600}}));
    c["subscriptions"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "dave", "product": "starter", "state": "active", "primary_key": "dave-1"}));
    let gw2 = gateway(&c);
    assert_eq!(status(&check(&gw2, &mut s, T0 + 20, "alice-1")), 200);
    assert_eq!(status(&check(&gw2, &mut s, T0 + 21, "alice-1")), 200);
    assert_eq!(status(&check(&gw2, &mut s, T0 + 22, "alice-1")), 429);
    assert_eq!(status(&check(&gw2, &mut s, T0 + 22, "dave-1")), 200);
    // Lower limit: the newest 2 admissions are kept, so still denied.
    let gw3 =
        gateway(&starter_with(json!({"rate_limit": {"calls": 2, "renewal_period": 60}, "quota": {"calls": 10, "renewal_period": 3600}})));
    let (_, msg, _) = denial(check(&gw3, &mut s, T0 + 30, "alice-1"));
    assert_eq!(msg, "Rate limit is exceeded. Try again in 60 seconds.");
    // And the quota kept its count through all of it: 5 calls so far, 5 more allowed.
    let gw4 = gateway(&starter_with(json!({"quota": {"calls": 10, "renewal_period": 3600}})));
    let ok = (0..20).filter(|i| status(&check(&gw4, &mut s, T0 + 100 + i, "alice-1")) == 200).count();
    assert_eq!(ok, 5);
}

#[test]
fn counter_keys_count_per_ip_and_header_in_bounded_memory() {
    let mut c = starter_with(json!({"rate_limit": {"calls": 2, "renewal_period": 60, "counter": "ip"}}));
    c["counter_slots"] = json!(16);
    let gw = gateway(&c);
    let mut s = MemStore::default();
    // Per IP, shared by subscriptions.
    assert_eq!(status(&check_with(&gw, &mut s, T0, "alice-1", &[], "10.0.0.1")), 200);
    assert_eq!(status(&check_with(&gw, &mut s, T0, "bob-1", &[], "10.0.0.1")), 200); // bob's product has no limit
    assert_eq!(status(&check_with(&gw, &mut s, T0, "alice-1", &[], "10.0.0.1")), 200);
    assert_eq!(status(&check_with(&gw, &mut s, T0, "alice-1", &[], "10.0.0.1")), 429);
    assert_eq!(status(&check_with(&gw, &mut s, T0, "alice-1", &[], "10.0.0.2")), 200);
    // A flood of distinct addresses never grows the store past the table.
    for i in 0..5000u32 {
        let ip = format!("192.168.{}.{}", i / 256, i % 256);
        let _ = check_with(&gw, &mut s, T0 + u64::from(i), "alice-1", &[], &ip);
    }
    // 16 slots + the sentinel; no key for any subscription (none is counted per subscription).
    assert!(s.keys() <= 17, "{} keys", s.keys());
    // Under pressure a key never gets more than its limit.
    let mut s = MemStore::default();
    let mut c = starter_with(json!({"rate_limit": {"calls": 1, "renewal_period": 60, "counter": "header:X-Client"}}));
    c["counter_slots"] = json!(2);
    let gw = gateway(&c);
    let mut admitted = 0;
    for i in 0..50 {
        let client = format!("c{}", i % 10);
        if status(&check_with(&gw, &mut s, T0, "alice-1", &[("x-client", &client)], "")) == 200 {
            admitted += 1;
        }
    }
    assert!(admitted <= 10, "{admitted}");
    assert!(admitted >= 2, "{admitted}");
}

#[test]
fn keyed_admission_is_undone_when_the_subscription_denies() {
    let mut c = starter_with(json!({"rate_limit": {"calls": 1, "renewal_period": 60}}));
    c["apis"][0]["rate_limit"] = json!({"calls": 5, "renewal_period": 60, "counter": "ip"});
    let gw = gateway(&c);
    let mut s = MemStore::default();
    let o = check(&gw, &mut s, T0, "alice-1");
    assert_eq!(header(&o, "ratelimit-limit"), Some("1".into()));
    for _ in 0..10 {
        assert_eq!(status(&check(&gw, &mut s, T0 + 1, "alice-1")), 429);
    }
    // The IP counter saw 1 admission, not 11: bob (no product limit) gets the 4 left.
    let ok = (0..10).filter(|i| status(&check(&gw, &mut s, T0 + 2 + i, "bob-1")) == 200).count();
    assert_eq!(ok, 4);
}

#[test]
fn no_limits_touch_no_shared_data() {
    let gw = gateway(&demo());
    let mut s = MemStore::default();
    assert_eq!(status(&check(&gw, &mut s, T0, "bob-1")), 200);
    assert_eq!((s.inner.borrow().gets, s.inner.borrow().sets), (0, 0));
}

#[test]
fn hot_path_is_one_read_and_one_write() {
    let gw = gateway(&demo());
    let mut s = MemStore::default();
    let _ = check(&gw, &mut s, T0, "alice-1"); // creates the record
    let (g0, s0) = (s.inner.borrow().gets, s.inner.borrow().sets);
    assert_eq!(status(&check(&gw, &mut s, T0 + 1, "alice-1")), 200);
    assert_eq!((s.inner.borrow().gets - g0, s.inner.borrow().sets - s0), (1, 1));
    // The demo product's record: a 5-slot ring and a quota.
    assert!(s.bytes() < 200, "{}", s.bytes());
}

#[test]
fn corrupt_state_is_reset_not_trusted() {
    let gw = gateway(&starter_with(json!({"rate_limit": {"calls": 2, "renewal_period": 60}})));
    let mut s = MemStore::default();
    s.inner.borrow_mut().map.insert("mlgate/s/alice".into(), (vec![200, 1, 2, 3], 7));
    assert_eq!(status(&check(&gw, &mut s, T0, "alice-1")), 200);
    assert_eq!(status(&check(&gw, &mut s, T0, "alice-1")), 200);
    assert_eq!(status(&check(&gw, &mut s, T0, "alice-1")), 429);
}
