//! The usage batch (`mlgate_usage::batch`): the same counter sums and report buckets as
//! call-by-call writes, flushes only where a quarter changes or the cap is reached.

// Test code: panics and indexing are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use mlgate_core::testkit::{demo, gateway, MemStore};
use mlgate_core::usage::QUARTER_MS;
use mlgate_core::usage::{updates, Call, Update};
use mlgate_usage::acc::Acc;
use mlgate_usage::batch::{Batch, BATCH_ENTRY_BYTES, BATCH_SLOTS};
use mlgate_usage::timeline::quarters;
use mlgate_usage::timeline::Timeline;
use std::collections::HashMap;

fn call(slot: u32, status: u16, api_us: u64) -> Call {
    Call {
        slot,
        status,
        request_bytes: 10,
        response_bytes: 0,
        api_time_us: api_us,
        service_time_us: Some(api_us / 2),
        prompt_tokens: 0,
        completion_tokens: 0,
    }
}

/// What call-by-call writes give: every counter sum and every bucket.
fn one_by_one(calls: &[(Call, u64)], timeline: &Timeline) -> (HashMap<(u32, usize), u64>, MemStore) {
    let mut sums = HashMap::new();
    let mut store = MemStore::default();
    for (c, at) in calls {
        for u in updates(c) {
            if let Update::Add(i, n) = u {
                *sums.entry((c.slot, i)).or_insert(0) += n;
            }
        }
        timeline.record(c, *at, &mut store);
    }
    (sums, store)
}

fn buckets(store: &mut MemStore, slot: u32, timeline_fp: u64, now: u64) -> Vec<(u64, Acc)> {
    let mut out = Vec::new();
    quarters(store, slot, timeline_fp, now, 0, now, &mut |start, a| out.push((start, *a)));
    out
}

#[test]
fn a_batch_writes_the_same_sums_and_buckets_as_call_by_call_writes() {
    let gw = gateway(&demo());
    let slots = u32::try_from(gw.usage.len()).unwrap();
    assert!(slots >= 2);
    let timeline = Timeline::new(&gw);
    let t0 = 1_700_000_000_000u64 / QUARTER_MS * QUARTER_MS;
    // Two slots, three quarters, every outcome; one quarter change forces a flush.
    let calls: Vec<(Call, u64)> = (0..40u64)
        .map(|i| (call(u32::try_from(i % 2).unwrap(), [200, 404, 500, 0][(i % 4) as usize], 1000 + i), t0 + i * QUARTER_MS / 16))
        .collect();
    let (want, mut want_store) = one_by_one(&calls, &timeline);

    let mut batch = Batch::new();
    let mut store = MemStore::default();
    let mut sums: HashMap<(u32, usize), u64> = HashMap::new();
    let mut records = 0;
    let mut flushes = 0;
    for (c, at) in &calls {
        if !batch.add(c, *at, |_, _| records += 1) {
            batch.flush(&timeline, &mut store, |s, i, n| *sums.entry((s, i)).or_insert(0) += n);
            flushes += 1;
            assert!(batch.add(c, *at, |_, _| records += 1));
        }
    }
    batch.flush(&timeline, &mut store, |s, i, n| *sums.entry((s, i)).or_insert(0) += n);
    assert!(batch.is_empty());
    assert_eq!(sums, want);
    // Two histograms per call that went upstream.
    assert_eq!(records, 2 * calls.len());
    // Flushed at each quarter change only (40 calls over 2.5 quarters).
    assert_eq!(flushes, 2);
    let now = t0 + 3 * QUARTER_MS;
    for slot in 0..2 {
        let fp = mlgate_usage::timeline::fingerprint(&gw, slot);
        assert_eq!(buckets(&mut store, slot, fp, now), buckets(&mut want_store, slot, fp, now));
        assert_eq!(buckets(&mut store, slot, fp, now).len(), 3);
    }
}

#[test]
fn a_full_batch_asks_for_a_flush_and_counts_nothing() {
    let mut batch = Batch::new();
    let at = 1_700_000_000_000;
    for slot in 0..u32::try_from(BATCH_SLOTS).unwrap() {
        assert!(batch.add(&call(slot, 200, 5), at, |_, _| {}));
    }
    let mut recorded = false;
    assert!(!batch.add(&call(9_999, 200, 5), at, |_, _| recorded = true));
    assert!(!recorded, "refused whole: nothing recorded");
    // A slot already waiting still adds.
    assert!(batch.add(&call(3, 200, 5), at, |_, _| {}));
    // The memory estimate (`mlgate check`) counts this much a slot.
    assert!(BATCH_ENTRY_BYTES as u64 <= mlgate_core::memory::USAGE_BATCH_ENTRY, "{BATCH_ENTRY_BYTES}");
}
