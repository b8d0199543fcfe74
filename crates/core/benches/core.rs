//! The host-free core per request, natively: `admit` without limits (match + key check +
//! rewrite plan), and with them (plus one read and one CAS write on an in-memory store) and
//! the upstream header list: everything the host asks of the core for one request.
//! Prints `allocs <step> <n>` lines (allocations per request) before criterion runs.

// A benchmark is test code: panics and indexing are fine here.
#![allow(clippy::panic, clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, Criterion};
use mlgate_core::{admit, Connection, Gateway, HostError, Outcome, ProcessEnv, Request, SetError, Store};
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
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

/// FNV-1a: the stand-in store should cost as little as the host's hash map, not SipHash.
#[derive(Default)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        self.0 = h;
    }
}

/// Shared data as the host keeps it: a map of value + CAS token.
#[derive(Default)]
struct Mem {
    map: HashMap<String, (Vec<u8>, u32), std::hash::BuildHasherDefault<Fnv>>,
    cas: u32,
}

impl Store for Mem {
    fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError> {
        Ok(self.map.get(key).cloned())
    }
    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError> {
        self.cas += 1;
        match self.map.get_mut(key) {
            Some(e) if cas != 0 && cas != e.1 => Err(SetError::CasMismatch),
            Some(e) => {
                // The host copies the value into its own buffer, as here.
                e.0.clear();
                e.0.extend_from_slice(value);
                e.1 = self.cas;
                Ok(())
            }
            None => {
                self.map.insert(key.to_string(), (value.to_vec(), self.cas));
                Ok(())
            }
        }
    }
}

const SUBS: usize = 1000;

/// A connection that is never asked anything expensive (no `ip` limits here).
struct NoConn;

impl Connection for NoConn {
    fn address(&mut self) -> Option<Vec<u8>> {
        None
    }
    fn is_tls(&mut self) -> bool {
        false
    }
}

fn config(limits: bool) -> Gateway {
    let product_limits = if limits {
        r#", "rate_limit": {"calls": 100, "renewal_period": 1}, "quota": {"calls": 1000000000000, "renewal_period": 86400}"#
    } else {
        ""
    };
    let subs: Vec<String> = (0..SUBS)
        .map(|i| format!(r#"{{"id": "sub-{i:06}", "product": "bench", "state": "active", "primary_key": "bench-key-{i:06}"}}"#))
        .collect();
    let json = format!(
        r#"{{"apis": [{{"id": "azureml-demo", "name": "AzureML Demo API", "path": "azureml-demo",
            "service_url": "https://ussouthcentral.services.azureml.net", "operations": "azureml-studio",
            "backend_credentials": [{{"workspace": "*", "service": "*", "api_key": "k"}}]}}],
          "products": [{{"id": "bench", "name": "Bench", "apis": ["azureml-demo"]{}}}],
          "subscriptions": [{}]}}"#,
        product_limits,
        subs.join(",")
    );
    match Gateway::from_json(json.as_bytes(), &ProcessEnv) {
        Ok(g) => g,
        Err(e) => panic!("{e}"),
    }
}

fn headers(i: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    [
        (":method", "POST".to_string()),
        (":path", "/azureml-demo/workspaces/ws1/services/svc1/execute?api-version=2.0&details=true".to_string()),
        (":scheme", "http".to_string()),
        (":authority", "gw.example.com".to_string()),
        ("content-type", "application/json".to_string()),
        ("ocp-apim-subscription-key", format!("bench-key-{:06}", i % SUBS)),
    ]
    .into_iter()
    .map(|(k, v)| (k.as_bytes().to_vec(), v.into_bytes()))
    .collect()
}

/// One whole request through the core, as the host asks it: the admission and the upstream
/// header list. `now` advances so the rate limit never denies.
fn decide(gw: &Gateway, store: &mut Mem, hs: &[(Vec<u8>, Vec<u8>)], now: u64) -> bool {
    let view: Vec<(&[u8], &[u8])> = hs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
    let req = Request::from_headers(&view);
    let Outcome::Forward(fwd) = admit(gw, &req, now, &mut NoConn, store).outcome else { return false };
    let mut local = Vec::with_capacity(hs.len() + 3);
    fwd.upstream_headers(gw, &req, &mut local);
    black_box(&local);
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
