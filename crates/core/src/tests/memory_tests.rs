#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::support::{demo, gateway, headers, run_full, Conn, Env, MemStore};
use crate::memory::{self, ENTRY_OVERHEAD};
use crate::model::Gateway;
use serde_json::{json, Value};

const RRS: &str = "/azureml-demo/workspaces/w/services/s/execute?api-version=2.0&details=true";
const T0: u64 = 1_700_000_000_000;

fn call(gw: &Gateway, store: &mut MemStore, now: u64, key: &str, client: &str) -> u16 {
    let hs = headers(&[
        (":method", "POST"),
        (":path", RRS),
        (":scheme", "http"),
        (":authority", "gw"),
        ("ocp-apim-subscription-key", key),
        ("x-client", client),
    ]);
    run_full(gw, store, now, &hs, &mut Conn::default()).status
}

fn keyed(calls: u32) -> Value {
    let mut c = demo();
    c["apis"][0]["rate_limit"] = json!({"calls": calls, "renewal_period": 60, "counter": "header:x-client"});
    c
}

/// A configuration with room for any table.
fn with_budget(mut c: Value) -> Value {
    c["counter_memory_kb"] = json!(u32::MAX);
    c
}

fn refused(v: &Value) -> (String, String) {
    match Gateway::from_json(v.to_string().as_bytes(), &Env(vec![])) {
        Ok(_) => panic!("must be refused"),
        Err(e) => (e.field, e.reason),
    }
}

/// What one store entry really takes by the estimate's rule: its bytes, the host's overhead
/// and the allocator's rounding.
fn cost(key: &str, value: &[u8]) -> u64 {
    memory::entry(key.len() as u64, value.len() as u64)
}

#[test]
fn full_tables_cost_exactly_what_the_estimate_says() {
    let mut c = keyed(7);
    c["counter_slots"] = json!(32);
    let gw = gateway(&c);
    let est = gw.summary().memory;
    let mut store = MemStore::default();
    // alice (a limited product) makes her record; bob (no per-subscription limit) fills the
    // counter table with new values, as a flood of clients would.
    assert_eq!(call(&gw, &mut store, T0, "alice-1", "a"), 200);
    for i in 0..3000u64 {
        call(&gw, &mut store, T0 + i, "bob-1", &format!("client-{i}"));
    }
    let map = store.inner.borrow().map.clone();
    let counters: Vec<_> = map.iter().filter(|(k, _)| k.starts_with("mlgate/c/")).collect();
    assert_eq!(counters.len(), 32, "the table is full, and no larger");
    let [table] = est.counter_tables.as_slice() else { panic!("one keyed limit: {:?}", est.counter_tables) };
    assert_eq!((table.field.as_str(), table.slots), ("apis[0].rate_limit", 32));
    // The widest slot (two-digit number) costs exactly the estimate; the others no more.
    let widest = counters.iter().map(|(k, (v, _))| cost(k, v)).max().unwrap_or(0);
    assert_eq!(widest, table.slot_bytes);
    assert_eq!(est.counter_bytes(), 32 * table.slot_bytes);
    // A subscription record: alice's is what the estimate charges each of the starter product's
    // two subscriptions (carol is suspended and never gets one: the estimate is an upper bound).
    let (k, (v, _)) = map.iter().find(|(k, _)| k.as_str() == "mlgate/s/alice").expect("alice's record");
    assert_eq!(est.subscription_records.entries, 2);
    assert_eq!(est.subscription_records.bytes, 2 * cost(k, v));
    // Everything in the store fits the bound.
    let total: u64 = map.iter().map(|(k, (v, _))| cost(k, v)).sum();
    assert!(total <= est.store_bytes(), "{total} > {}", est.store_bytes());
    assert_eq!(gw.summary().shared_data_bytes_max, est.store_bytes());
}

#[test]
fn the_estimate_counts_every_table() {
    let mut c = keyed(10);
    c["apis"][0]["operations"] = json!([
        {"id": "a", "name": "A", "method": "GET", "url_template": "/a", "rate_limit": {"calls": 3, "renewal_period": 1, "counter": "ip"}},
        {"id": "b", "name": "B", "method": "GET", "url_template": "/b", "rate_limit": {"calls": 4, "renewal_period": 1}}
    ]);
    c["counter_slots"] = json!(100);
    let gw = gateway(&c);
    let est = memory::estimate(&gw);
    let fields: Vec<_> = est.counter_tables.iter().map(|t| (t.field.as_str(), t.slots)).collect();
    assert_eq!(fields, [("apis[0].rate_limit", 100), ("apis[0].operations[0].rate_limit", 100)]);
    assert_eq!(est.usage_stats.entries, gw.usage.len() as u64);
    assert_eq!(est.usage_stats.bytes, est.usage_stats.entries * memory::STATS_PER_SLOT);
    assert_eq!(est.usage_records.entries, est.usage_stats.entries);
    assert_eq!(est.config_per_vm, 3 * memory::CONFIG_PER_SUBSCRIPTION);
    assert_eq!(est.config_host, 3 * memory::HOST_PER_SUBSCRIPTION);
    let idle = memory::WASM_BASELINE + est.usage_stats.bytes + est.config_host + 3 * est.config_per_vm;
    assert_eq!(est.wasm_idle(2), idle);
    // Growth: every entry, and on each worker the histograms of every label set and a usage
    // batch with every label set (fewer than the batch's cap here).
    let hist = est.usage_stats.entries * memory::HISTOGRAMS_PER_SLOT_PER_WORKER;
    let batch = est.usage_stats.entries * memory::USAGE_BATCH_ENTRY;
    assert!(est.usage_stats.entries < memory::USAGE_BATCH_SLOTS);
    assert_eq!(est.growth(2), est.store_bytes() + 2 * (hist + batch));
    assert!(est.wasm_idle(2) > est.native_idle());
    // A rate limit service without a local fallback keeps no counter table here.
    c["limits_store"] = json!({"rls": {"cluster": "rls"}});
    assert!(memory::estimate(&gateway(&c)).counter_tables.is_empty());
    c["limits_store"] = json!({"rls": {"cluster": "rls", "on_failure": "local"}});
    assert_eq!(memory::estimate(&gateway(&c)).counter_tables.len(), 2);
}

#[test]
fn counter_tables_past_counter_memory_kb_are_refused() {
    // 4,096 slots × 80 KB rings: 335 MB when full, against 16 MiB by default.
    let big = keyed(10_000);
    let (field, reason) = refused(&big);
    assert_eq!(field, "counter_memory_kb");
    let slot = memory::slot_bytes(&gateway(&with_budget(keyed(10_000))).apis[0].rate_limit.clone().unwrap(), 4096);
    let kb = (4096 * slot).div_ceil(1024);
    assert_eq!(
        reason,
        format!("the counter tables would take {kb} KB when full, over 16384 KB: lower counter_slots or calls, or raise counter_memory_kb")
    );
    // Fewer slots, or a larger budget, and it loads.
    let mut fewer = big.clone();
    fewer["counter_slots"] = json!(190);
    let gw = gateway(&fewer);
    assert!(gw.summary().memory.counter_bytes() <= u64::from(memory::DEFAULT_COUNTER_MEMORY_KB) * 1024);
    let mut more = big.clone();
    more["counter_memory_kb"] = json!(400_000);
    gateway(&more);
    // The budget is for every table together: two limits that each fit alone may not.
    let mut two = keyed(300);
    assert!(Gateway::from_json(two.to_string().as_bytes(), &Env(vec![])).is_ok());
    two["products"][0]["rate_limit"] = json!({"calls": 300, "renewal_period": 60, "counter": "ip"});
    assert_eq!(refused(&two).0, "counter_memory_kb");
    // Counted only in a rate limit service (no local fallback): no table here, no refusal.
    let mut remote = big.clone();
    remote["limits_store"] = json!({"rls": {"cluster": "rls", "on_failure": "deny"}});
    gateway(&remote);
    remote["limits_store"] = json!({"rls": {"cluster": "rls", "on_failure": "local"}});
    assert_eq!(refused(&remote).0, "counter_memory_kb");
    for bad in [json!(0), json!(-1), json!(5_000_000_000_u64), json!("16384")] {
        let mut c = demo();
        c["counter_memory_kb"] = bad;
        assert_eq!(refused(&c).0, "counter_memory_kb");
    }
}

#[test]
fn the_default_budget_holds_a_default_table_of_a_few_hundred_calls() {
    // With the default 4,096 slots a keyed limit may count up to ~446 calls per window.
    let slot = |calls: u32| gateway(&with_budget(keyed(calls))).summary().memory.counter_tables[0].slot_bytes;
    let budget = u64::from(memory::DEFAULT_COUNTER_MEMORY_KB) * 1024;
    assert!(4096 * slot(440) <= budget);
    assert!(4096 * slot(450) > budget);
    assert_eq!(refused(&keyed(450)).0, "counter_memory_kb");
    // Per entry: key and value, ENTRY_OVERHEAD, and 1/16 of the value for the allocator.
    assert_eq!(memory::entry(10, 1600), 10 + 1600 + 100 + ENTRY_OVERHEAD);
}

#[test]
fn report_buckets_are_counted_per_label_set_and_hour() {
    use crate::usage::{timeline_key, TIMELINE_HOURS, TIMELINE_RECORD};
    let gw = gateway(&demo());
    let est = memory::estimate(&gw);
    let slots = gw.usage.len() as u32;
    assert_eq!(est.timeline.entries, u64::from(slots) * TIMELINE_HOURS);
    // The arithmetic key lengths are the keys' own.
    let exact: u64 =
        (0..slots).flat_map(|s| (0..TIMELINE_HOURS).map(move |h| memory::entry(timeline_key(s, h).len() as u64, TIMELINE_RECORD))).sum();
    assert_eq!(est.timeline.bytes, exact);
    // A record holds four quarters: about 675 bytes, ~169 per quarter-hour bucket.
    assert_eq!(TIMELINE_RECORD, 380);
    assert_eq!(memory::entry("mlgate/t/16/24".len() as u64, TIMELINE_RECORD), 673);
    assert!(est.store_bytes() > est.timeline.bytes + est.usage_records.bytes);
}
