//! How much of its limits a subscription has used, read from the very records the decisions
//! write ("My subscription" in the developer portal). Read-only: one `get`, never a write,
//! never a key created, so asking is free of side effects and counts nowhere.

use super::record::{find_seg, rd64, QuotaSeg, Ring, KIND_QUOTA, KIND_RATE, QUOTA_ID, SUB_BASE, VERSION};
use super::spec::{period_start, Spec};
use super::store::{HostError, Store};

/// One limit's state for a subscription, at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Calls counted in the current window (rate limit) or period (quota).
    pub calls_used: u64,
    /// The limit's calls (`None`: a quota on bandwidth only).
    pub calls_limit: Option<u64>,
    /// Request and response body bytes counted in the current quota period.
    pub bytes_used: u64,
    pub bytes_limit: Option<u64>,
    /// Milliseconds until the count is back to zero: the end of the quota period, or for a
    /// sliding window the moment its newest counted call leaves it (0: nothing counted).
    pub renews_in_ms: u64,
}

impl Usage {
    pub fn calls_left(&self) -> Option<u64> {
        self.calls_limit.map(|l| l.saturating_sub(self.calls_used))
    }
}

/// The usage of each of `specs` (rate limits counted per subscription, and the quota) in the
/// subscription record `record_key`. A missing or unreadable-as-ours record counts as unused,
/// as the decision would treat it. Keyed rate limits (`counter: ip | header`) do not count
/// per subscription; they are reported as unused here, so callers leave them out.
pub fn usage(store: &mut dyn Store, record_key: &str, start_ms: u64, specs: &[Spec<'_>], now_ms: u64) -> Result<Vec<Usage>, HostError> {
    let rec = match store.get(record_key)? {
        Some((rec, _)) if rec.first() == Some(&VERSION) => rec,
        _ => Vec::new(),
    };
    Ok(specs.iter().map(|spec| of(&rec, spec, start_ms, now_ms)).collect())
}

fn of(rec: &[u8], spec: &Spec<'_>, start_ms: u64, now: u64) -> Usage {
    match spec {
        Spec::Rate(rl) => {
            let limit = u64::from(rl.calls);
            let mut u = Usage { calls_used: 0, calls_limit: Some(limit), bytes_used: 0, bytes_limit: None, renews_in_ms: 0 };
            if let Some(seg) = find_seg(rec, SUB_BASE, KIND_RATE, rl.id.as_bytes()) {
                let p = seg.payload;
                let n = Ring::n(rec, p) as u64;
                // `status` counts the ring slots outside the window; the rest are in it.
                let (outside, _) = Ring::status(rec, p, now, rl.period_ms);
                let inside = n.saturating_sub(outside);
                // A ring sized for an older `calls` is resized at the next decision, keeping
                // the newest admissions: the same cap here.
                u.calls_used = inside.min(limit);
                if inside > 0 {
                    let newest = Ring::at(rec, p, Ring::n(rec, p).saturating_sub(1));
                    u.renews_in_ms = newest.saturating_add(rl.period_ms).saturating_sub(now);
                }
            }
            u
        }
        Spec::Quota(q) => {
            let cur = period_start(now, start_ms, q.period_ms);
            let (calls, bytes, cur) = match find_seg(rec, SUB_BASE, KIND_QUOTA, QUOTA_ID) {
                Some(seg) => {
                    // The decision counts into the newer of the clock's period and the record's.
                    let cur = cur.max(rd64(rec, seg.payload));
                    let (c, b) = QuotaSeg::counts(rec, seg.payload, cur);
                    (c, b, cur)
                }
                None => (0, 0, cur),
            };
            Usage {
                calls_used: calls,
                calls_limit: q.calls,
                bytes_used: bytes,
                bytes_limit: q.bandwidth_bytes,
                // A lifetime quota never renews: 0, as for a limit with nothing counted.
                renews_in_ms: if q.period_ms == 0 { 0 } else { cur.saturating_add(q.period_ms).saturating_sub(now) },
            }
        }
    }
}
