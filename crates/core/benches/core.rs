//! The host-free core per request, natively: `admit` without limits (match + key check +
//! rewrite plan), and with them (plus one read and one CAS write on an in-memory store) and
//! the upstream header list: everything the host asks of the core for one request.
//! Prints `allocs <step> <n>` lines (allocations per request) before criterion runs.

// A benchmark is test code: panics and indexing are fine here.
#![allow(clippy::panic, clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, Criterion};
#[path = "support/fixture.rs"]
mod fixture;

use fixture::{config, headers, Mem, NoConn, SUBS};
use mlgate_core::{admit, Gateway, Outcome, Request};
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// One whole request through the core, as the host asks it: the admission and the upstream
/// header edits. `now` advances so the rate limit never denies.
fn decide(gw: &Gateway, store: &mut Mem, hs: &[(Vec<u8>, Vec<u8>)], now: u64) -> bool {
    let view: Vec<(&[u8], &[u8])> = hs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
    let req = Request::from_headers(&view);
    let Outcome::Forward(fwd) = admit(gw, &req, now, &mut NoConn, store).outcome else { return false };
    let mut edits = Vec::with_capacity(8);
    fwd.upstream_edits(gw, &req, &mut edits);
    black_box(&edits);
    true
}

fn count_allocs(name: &str, mut f: impl FnMut(usize)) {
    for i in 0..SUBS {
        f(i); // warm: every record exists
    }
    let before = ALLOCS.load(Ordering::Relaxed);
    let n = 10_000;
    for i in 0..n {
        f(i);
    }
    let per = (ALLOCS.load(Ordering::Relaxed) - before) as f64 / n as f64;
    println!("allocs {name} {per:.1}");
}

fn bench(c: &mut Criterion) {
    let plain = config(false);
    let gw = config(true);
    let all: Vec<Vec<(Vec<u8>, Vec<u8>)>> = (0..SUBS).map(headers).collect();
    let mut store = Mem::default();
    let mut now = 1_700_000_000_000u64;

    count_allocs("admit_no_limits", |i| {
        black_box(decide(&plain, &mut store, &all[i % SUBS], now));
    });
    count_allocs("decision", |i| {
        now += 1;
        black_box(decide(&gw, &mut store, &all[i % SUBS], now));
    });

    let mut i = 0usize;
    c.bench_function("admit_no_limits", |b| {
        b.iter(|| {
            i += 1;
            black_box(decide(&plain, &mut store, &all[i % SUBS], now))
        })
    });
    let mut i = 0usize;
    c.bench_function("decision", |b| {
        b.iter(|| {
            i += 1;
            now += 1;
            black_box(decide(&gw, &mut store, &all[i % SUBS], now))
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}

fn main() {
    benches();
}
