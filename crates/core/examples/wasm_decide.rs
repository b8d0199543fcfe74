//! The core's decision per request in V8 (node's WASI), as mlgate.wasm runs it: built for
//! wasm32-wasip1 with the release .wasm's flags. Prints ns per step.
#![allow(clippy::panic, clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

#[path = "../benches/support/fixture.rs"]
mod fixture;

use fixture::{config, headers, Mem, NoConn, SUBS};
use mlgate_core::{admit, Outcome, Request};
use std::hint::black_box;
use std::time::Instant;

fn time(name: &str, n: usize, mut f: impl FnMut(usize)) {
    for i in 0..n / 10 {
        f(i);
    }
    let t = Instant::now();
    for i in 0..n {
        f(i);
    }
    println!("{name:<24} {:>8.0} ns", t.elapsed().as_nanos() as f64 / n as f64);
}

fn main() {
    let plain = config(false);
    let gw = config(true);
    let all: Vec<Vec<(Vec<u8>, Vec<u8>)>> = (0..SUBS).map(headers).collect();
    let mut store = Mem::default();
    let mut now = 1_700_000_000_000u64;
    let n = 50_000;
    time("sha256 of a key", n, |i| {
        black_box(mlgate_core::keys::Digest::of(&all[i % SUBS][5].1));
    });
    time("request view", n, |i| {
        let view: Vec<(&[u8], &[u8])> = all[i % SUBS].iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
        black_box(Request::from_headers(&view).headers.len());
    });
    for (name, g) in [("admit, no limits", &plain), ("admit + limits", &gw)] {
        time(name, n, |i| {
            now += 1;
            let view: Vec<(&[u8], &[u8])> = all[i % SUBS].iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
            let req = Request::from_headers(&view);
            black_box(matches!(admit(g, &req, now, &mut NoConn, &mut store).outcome, Outcome::Forward(_)));
        });
    }
    time("admit + limits + headers", n, |i| {
        now += 1;
        let view: Vec<(&[u8], &[u8])> = all[i % SUBS].iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
        let req = Request::from_headers(&view);
        if let Outcome::Forward(fwd) = admit(&gw, &req, now, &mut NoConn, &mut store).outcome {
            let mut edits = Vec::with_capacity(8);
            fwd.upstream_edits(&gw, &req, &mut edits);
            black_box(&edits);
        }
    });
}
