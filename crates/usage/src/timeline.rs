//! The report time buckets: every finished call also counts in the quarter hour (UTC) it ended
//! in, per usage slot, so a report can be asked for a time window (APIM's `$filter` on
//! `timestamp`) and `byTime` can add quarters up into intervals.
//!
//! **Layout.** One store record per slot per hour, `mlgate/t/<slot>/<hour % 25>`
//! ([`timeline_key`]), holding that hour's four quarters: a ring of [`TIMELINE_HOURS`] hours, the
//! current one and the 24 before it, so every quarter of the last 24 hours is there (100 quarters
//! kept, at least 96 of them whole). A record of an older hour is reset when its ring position
//! comes round again. Bounded: at most `slots × 25` records of [`TIMELINE_RECORD`] bytes, whatever
//! the traffic (`mlgate_core::memory` counts them). An hour record rather than a quarter record
//! because the store's per-entry overhead (~256 bytes) would otherwise be most of the cost.
//!
//! **Reconfiguration.** Records are keyed by slot number (bounded however often the
//! configuration changes: the store cannot delete a key), and carry a fingerprint of the slot's
//! labels. When a new configuration gives a slot number other labels, the record no longer
//! matches: it reads as empty and the next call there starts it afresh.
//!
//! **Record** (little-endian): labels fingerprint u64, hour u32, then per quarter: calls by
//! outcome (4 × u32), backend calls u32, bandwidth, API time sum, backend time sum, prompt and
//! completion tokens, API time min and max, backend time min and max (u64 each; a minimum of
//! `u64::MAX` is none yet). Counts saturate.

use crate::acc::Acc;
use mlgate_core::limits::{create_if_absent, SetError, Store};
use mlgate_core::model::Gateway;
use mlgate_core::usage::{timeline_key, Call, QUARTER_MS, TIMELINE_HOURS, TIMELINE_QUARTER, TIMELINE_RECORD};

const HOUR_MS: u64 = 4 * QUARTER_MS;
const HEAD: usize = 12;
const QUARTER: usize = TIMELINE_QUARTER as usize;
const RECORD: usize = TIMELINE_RECORD as usize;
const RETRIES: u32 = 16;

/// The slot's labels as a number: FNV-1a of its label string.
pub fn fingerprint(gw: &Gateway, slot: u32) -> u64 {
    gw.usage_labels(slot).bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).and_then(|s| s.try_into().ok()).map_or(0, u32::from_le_bytes)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).and_then(|s| s.try_into().ok()).map_or(0, u64::from_le_bytes)
}

fn put(b: &mut [u8], at: usize, v: &[u8]) {
    if let Some(dst) = b.get_mut(at..at + v.len()) {
        dst.copy_from_slice(v);
    }
}

fn narrow(v: u64) -> [u8; 4] {
    u32::try_from(v).unwrap_or(u32::MAX).to_le_bytes()
}

/// Quarter `q` (0–3) of a record as sums; `None` when it has no call.
fn decode_quarter(rec: &[u8], q: usize) -> Option<Acc> {
    let c = rec.get(HEAD + q * QUARTER..HEAD + (q + 1) * QUARTER)?;
    let mut a = Acc::default();
    for (i, n) in a.calls.iter_mut().enumerate() {
        *n = u64::from(u32_at(c, 4 * i));
    }
    if a.total() == 0 {
        return None;
    }
    a.service_calls = u64::from(u32_at(c, 16));
    [a.bandwidth, a.api_sum_us, a.service_sum_us, a.prompt_tokens, a.completion_tokens] = [0, 1, 2, 3, 4].map(|i| u64_at(c, 20 + 8 * i));
    let [amin, amax, smin, smax] = [5, 6, 7, 8].map(|i| u64_at(c, 20 + 8 * i));
    a.api_min = (amin != u64::MAX).then_some(amin);
    a.api_max = Some(amax);
    if a.service_calls > 0 {
        a.service_min = (smin != u64::MAX).then_some(smin);
        a.service_max = Some(smax);
    }
    Some(a)
}

fn encode_quarter(rec: &mut [u8], q: usize, a: &Acc) {
    let Some(c) = rec.get_mut(HEAD + q * QUARTER..HEAD + (q + 1) * QUARTER) else { return };
    for (i, n) in a.calls.iter().enumerate() {
        put(c, 4 * i, &narrow(*n));
    }
    put(c, 16, &narrow(a.service_calls));
    let sums = [a.bandwidth, a.api_sum_us, a.service_sum_us, a.prompt_tokens, a.completion_tokens];
    let extremes = [a.api_min.unwrap_or(u64::MAX), a.api_max.unwrap_or(0), a.service_min.unwrap_or(u64::MAX), a.service_max.unwrap_or(0)];
    for (i, v) in sums.iter().chain(extremes.iter()).enumerate() {
        put(c, 20 + 8 * i, &v.to_le_bytes());
    }
}

/// An empty record of `hour` for labels `fp`.
fn fresh(fp: u64, hour: u64) -> Vec<u8> {
    let mut rec = vec![0u8; RECORD];
    put(&mut rec, 0, &fp.to_le_bytes());
    put(&mut rec, 8, &narrow(hour));
    for q in 0..4 {
        encode_quarter(&mut rec, q, &Acc::default());
    }
    rec
}

/// Whether `rec` is a whole record of labels `fp` for `hour`.
fn holds(rec: &[u8], fp: u64, hour: u64) -> bool {
    rec.len() == RECORD && u64_at(rec, 0) == fp && u64::from(u32_at(rec, 8)) == hour
}

/// Counts `call`, which ended at `now_ms`, in its quarter. Adds `acc` to quarter `q` of the
/// record (`None`: the record must not be written, it holds a later hour).
fn add(rec: &[u8], fp: u64, hour: u64, q: usize, acc: &Acc) -> Option<Vec<u8>> {
    let mut rec = if holds(rec, fp, hour) {
        rec.to_vec()
    } else if rec.len() == RECORD && u64_at(rec, 0) == fp && u64::from(u32_at(rec, 8)) > hour {
        // The clock went back past an hour: the ring position holds a later one.
        return None;
    } else {
        fresh(fp, hour)
    };
    let mut sum = decode_quarter(&rec, q).unwrap_or_default();
    sum.add(acc);
    encode_quarter(&mut rec, q, &sum);
    Some(rec)
}

/// The hour (since the epoch) and its quarter (0–3) that `now_ms` falls in.
pub fn quarter_of(now_ms: u64) -> (u64, usize) {
    (now_ms / HOUR_MS, usize::try_from(now_ms % HOUR_MS / QUARTER_MS).unwrap_or(0))
}

/// One worker's view of the timeline: each slot's label fingerprint, computed at configure time
/// (8 bytes per slot), so counting a call formats nothing but its key.
pub struct Timeline {
    fingerprints: Vec<u64>,
}

impl Timeline {
    pub fn new(gw: &Gateway) -> Timeline {
        Timeline { fingerprints: (0..gw.usage.len()).filter_map(|s| u32::try_from(s).ok()).map(|s| fingerprint(gw, s)).collect() }
    }

    /// Counts a finished call in the quarter of `now_ms` (UTC milliseconds): one read and one
    /// write of the slot's hour record (again on a CAS conflict with another worker). A store
    /// failure loses this call from the buckets (the metrics still have it): reports are not
    /// worth failing a call for.
    pub fn record(&self, call: &Call, now_ms: u64, store: &mut dyn Store) {
        let (hour, q) = quarter_of(now_ms);
        self.add(call.slot, hour, q, &Acc::call(call), store);
    }

    /// Adds `acc` (calls that ended in quarter `q` of `hour`) to slot `slot`'s record: one read
    /// and one write (again on a CAS conflict with another worker).
    pub fn add(&self, slot: u32, hour: u64, q: usize, acc: &Acc, store: &mut dyn Store) {
        let Some(&fp) = self.fingerprints.get(slot as usize) else { return };
        let key = timeline_key(slot, hour);
        for _ in 0..RETRIES {
            let (cur, cas) = match store.get(&key) {
                Ok(Some(v)) => v,
                Ok(None) => {
                    if create_if_absent(store, &key, &fresh(fp, hour)).is_err() {
                        return;
                    }
                    continue;
                }
                Err(_) => return,
            };
            let Some(new) = add(&cur, fp, hour, q, acc) else { return };
            match store.set(&key, &new, cas) {
                Ok(()) | Err(SetError::Host) => return,
                Err(SetError::CasMismatch) => continue,
            }
        }
    }
}

/// The quarters kept at `now_ms` whose start lies in `[from_ms, to_ms]`: each with the sums of
/// slot `slot` (labels `fp`), oldest first. Reads only the hours the window touches.
pub fn quarters(store: &mut dyn Store, slot: u32, fp: u64, now_ms: u64, from_ms: u64, to_ms: u64, visit: &mut dyn FnMut(u64, &Acc)) {
    let now_hour = now_ms / HOUR_MS;
    let first = now_hour.saturating_sub(TIMELINE_HOURS - 1).max(from_ms / HOUR_MS);
    let last = now_hour.min(to_ms / HOUR_MS);
    for hour in first..=last {
        let Ok(Some((rec, _))) = store.get(&timeline_key(slot, hour)) else { continue };
        if !holds(&rec, fp, hour) {
            continue;
        }
        for q in 0..4u64 {
            let start = hour * HOUR_MS + q * QUARTER_MS;
            if start < from_ms || start > to_ms {
                continue;
            }
            if let Some(a) = usize::try_from(q).ok().and_then(|q| decode_quarter(&rec, q)) {
                visit(start, &a);
            }
        }
    }
}

/// The oldest quarter start the timeline can hold at `now_ms`.
pub fn oldest(now_ms: u64) -> u64 {
    (now_ms / HOUR_MS).saturating_sub(TIMELINE_HOURS - 1) * HOUR_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarters_round_trip_and_saturate() {
        let a = Acc {
            calls: [1, 2, 3, u64::from(u32::MAX) + 5],
            bandwidth: u64::MAX,
            api_sum_us: 7,
            api_min: Some(0),
            api_max: Some(9),
            ..Acc::default()
        };
        let mut rec = fresh(42, 7);
        assert_eq!(rec.len() as u64, TIMELINE_RECORD);
        encode_quarter(&mut rec, 2, &a);
        let b = decode_quarter(&rec, 2).unwrap();
        assert_eq!(b.calls, [1, 2, 3, u64::from(u32::MAX)]);
        assert_eq!((b.bandwidth, b.api_sum_us, b.api_min, b.api_max), (u64::MAX, 7, Some(0), Some(9)));
        assert_eq!((b.service_min, b.service_max), (None, None));
        assert_eq!(decode_quarter(&rec, 1), None);
        assert_eq!(decode_quarter(&rec, 4), None);
        assert_eq!(decode_quarter(&[1, 2, 3], 0), None);
    }

    #[test]
    fn a_record_of_other_labels_or_an_older_hour_starts_afresh_and_a_later_one_is_kept() {
        let one = Acc { calls: [1, 0, 0, 0], api_min: Some(5), api_max: Some(5), ..Acc::default() };
        let rec = add(&[], 1, 10, 0, &one).unwrap();
        let rec = add(&rec, 1, 10, 0, &one).unwrap();
        assert_eq!(decode_quarter(&rec, 0).unwrap().calls, [2, 0, 0, 0]);
        // Another slot's labels, or an hour 25 hours earlier at the same ring position.
        assert_eq!(decode_quarter(&add(&rec, 2, 10, 0, &one).unwrap(), 0).unwrap().calls, [1, 0, 0, 0]);
        assert_eq!(decode_quarter(&add(&rec, 1, 35, 0, &one).unwrap(), 0).unwrap().calls, [1, 0, 0, 0]);
        assert_eq!(add(&rec, 1, 9, 0, &one), None);
        // Garbage reads as nothing and is replaced whole.
        assert!(holds(&add(&[0xff; 7], 1, 10, 3, &one).unwrap(), 1, 10));
    }
}
