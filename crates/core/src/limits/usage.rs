//! How much of its limits a subscription has used, read from the very records the decisions
//! write ("My subscription" in the developer portal). Read-only: one `get`, never a write,
//! never a key created, so asking is free of side effects and counts nowhere.

use super::record::{find_seg, rd64, QuotaSeg, Ring, KIND_QUOTA, KIND_RATE, KIND_TOKENS, SUB_BASE, VERSION};
use super::spec::{period_start, Spec};
use super::store::{HostError, Store};

/// One token limit's use by a subscription, at `now`: tokens counted in the current minute
/// window (reservations of calls in flight included) and in the current quota period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUse {
    pub window_used: Option<u64>,
    pub quota_used: Option<u64>,
    /// Milliseconds until the quota period ends.
    pub quota_renews_in_ms: Option<u64>,
}

/// The use of token limit `tl` in the subscription record `record_key`: one `get`, never a
/// write (a missing record is unused).
pub fn token_usage(store: &mut dyn Store, record_key: &str, tl: &crate::model::TokenLimit, now_ms: u64) -> Result<TokenUse, HostError> {
    let rec = match store.get(record_key)? {
        Some((rec, _)) if rec.first() == Some(&VERSION) => rec,
        _ => Vec::new(),
    };
    let window =
        find_seg(&rec, SUB_BASE, KIND_TOKENS, tl.id.as_bytes()).map(|s| super::tokens::window_used(&rec, s.payload, now_ms / 1000));
    let mut out = TokenUse { window_used: tl.tokens_per_minute.map(|_| window.unwrap_or(0)), ..TokenUse::default() };
    if let Some((_, period)) = tl.quota {
        let (start, end) = crate::time::calendar_period(now_ms, period);
        let used = find_seg(&rec, SUB_BASE, KIND_QUOTA, tl.quota_id.as_bytes()).map_or(0, |s| QuotaSeg::counts(&rec, s.payload, start).0);
        out.quota_used = Some(used);
        out.quota_renews_in_ms = Some(end.saturating_sub(now_ms));
    }
    Ok(out)
}

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
            let (calls, bytes, cur) = match find_seg(rec, SUB_BASE, KIND_QUOTA, q.id.as_bytes()) {
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
