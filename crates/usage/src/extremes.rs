//! The min/max gauges of a slot (`mlgate_{api,service}_time_{min,max}_microseconds`), exact
//! across workers.
//!
//! Envoy's gauges can be set or added to, but not compared-and-swapped, so two workers that
//! both see a new maximum could leave the smaller one in the gauge. The extremes therefore
//! move in a shared-data record per slot (`mlgate/u/<labels>`), by compare-and-swap: each
//! change of an extreme is made by exactly one worker. That worker sets the gauge, then
//! re-reads the record and sets the gauge again until the two agree. Whoever sets a stale
//! value does so before its own re-read, so the last write to a gauge is always the record's
//! final value.
//!
//! Each worker remembers the extremes it last saw, and only a call outside them goes to the
//! store: after the first calls, nearly every call costs no host call at all. The record is
//! bookkeeping for the gauges; the reports read the gauges, like every other number.

use mlgate_core::limits::{SetError, Store};
use mlgate_core::model::Gateway;
use mlgate_core::usage::{API_TIME_MAX, API_TIME_MIN, SERVICE_TIME_MAX, SERVICE_TIME_MIN};

/// The four extremes, in record order, and their indices in a slot's metric table.
const FIELDS: [usize; 4] = [API_TIME_MIN, API_TIME_MAX, SERVICE_TIME_MIN, SERVICE_TIME_MAX];
/// Nothing seen yet: minima at the top, maxima at zero.
const NONE: [u64; 4] = [u64::MAX, 0, u64::MAX, 0];
const RETRIES: u32 = 16;

fn merge(cur: [u64; 4], api_us: u64, svc_us: Option<u64>) -> [u64; 4] {
    let [amin, amax, smin, smax] = cur;
    match svc_us {
        Some(s) => [amin.min(api_us), amax.max(api_us), smin.min(s), smax.max(s)],
        None => [amin.min(api_us), amax.max(api_us), smin, smax],
    }
}

fn encode(v: [u64; 4]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (chunk, x) in out.chunks_exact_mut(8).zip(v) {
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    out
}

/// A record that is not 32 bytes is treated as empty (and fixed by the next write).
fn decode(b: &[u8]) -> [u64; 4] {
    if b.len() != 32 {
        return NONE;
    }
    let mut v = NONE;
    for (x, chunk) in v.iter_mut().zip(b.chunks_exact(8)) {
        if let Ok(bytes) = chunk.try_into() {
            *x = u64::from_le_bytes(bytes);
        }
    }
    v
}

/// The record and its CAS token, created empty if absent (so the CAS is always checked).
fn read(store: &mut dyn Store, key: &str) -> Option<([u64; 4], u32)> {
    if let Some((v, cas)) = store.get(key).ok()? {
        return Some((decode(&v), cas));
    }
    store.create_absent(key, &encode(NONE)).ok()?;
    let (v, cas) = store.get(key).ok()??;
    Some((decode(&v), cas))
}

/// One worker's view of the extremes, per slot.
pub struct Extremes {
    known: Vec<[u64; 4]>,
}

impl Extremes {
    pub fn new(slots: usize) -> Extremes {
        Extremes { known: vec![NONE; slots] }
    }

    /// Takes a call's times into the extremes of `slot`; `gauge(index, value)` sets a gauge
    /// of the slot's table. No host call unless the call is outside what this worker knows.
    /// A store failure leaves the extremes as they were (they are not worth failing a call).
    pub fn observe(
        &mut self,
        gw: &Gateway,
        slot: u32,
        api_us: u64,
        svc_us: Option<u64>,
        store: &mut dyn Store,
        gauge: &mut dyn FnMut(usize, u64),
    ) {
        let Some(known) = self.known.get_mut(slot as usize) else { return };
        if merge(*known, api_us, svc_us) == *known {
            return;
        }
        let key = format!("mlgate/u/{}", gw.usage_labels(slot));
        // What this worker last set each gauge to.
        let mut mine: [Option<u64>; 4] = [None; 4];
        for _ in 0..RETRIES {
            let Some((cur, cas)) = read(store, &key) else { return };
            let new = merge(cur, api_us, svc_us);
            if new == cur {
                *known = cur;
                return;
            }
            match store.set(&key, &encode(new), cas) {
                Ok(()) => {
                    for (((m, field), n), c) in mine.iter_mut().zip(FIELDS).zip(new).zip(cur) {
                        if n != c {
                            gauge(field, n);
                            *m = Some(n);
                        }
                    }
                    *known = new;
                    break;
                }
                Err(SetError::CasMismatch) => continue,
                Err(SetError::Host) => return,
            }
        }
        // Until the record agrees with what we set: a later change by another worker may
        // have set its gauge before we set ours.
        for _ in 0..RETRIES {
            if mine.iter().all(Option::is_none) {
                return;
            }
            let Some((cur, _)) = read(store, &key) else { return };
            *known = cur;
            let mut changed = false;
            for ((m, field), c) in mine.iter_mut().zip(FIELDS).zip(cur) {
                if m.is_some_and(|v| v != c) {
                    gauge(field, c);
                    *m = Some(c);
                    changed = true;
                }
            }
            if !changed {
                return;
            }
        }
    }
}
