//! Token limits (APIM's `llm-token-limit`), exact by reservation: a call is admitted only if
//! an upper bound of its tokens fits, that bound is counted at once, and when the response
//! ends the count is settled to the backend's reported usage ([`settle`]). So the tokens of
//! admitted calls never exceed a limit, however many run at once.
//!
//! - **Tokens per minute**: a sliding window of 60 s counted in one-second buckets (61 of
//!   them: a call's tokens count for 60 to 61 s, never less). The window holds tokens, not
//!   calls, so its size is fixed (496 bytes) whatever the limit.
//! - **Token quota**: tokens per UTC calendar period (hour, day, ISO week, month, year), in a
//!   quota segment of its own.
//!
//! Both live in the subscription's record, decided and counted in the same write as its call
//! limits.

use super::record::{rd64, token_window, wr64, QuotaSeg, TOKEN_BUCKETS as BUCKETS};
pub use super::spec::TokenCharge;
pub use super::spec::TokenPlan;
use super::spec::{ceil_secs, DenialKind, Grant};
use crate::model::TokenLimit;
use crate::reply::{self, Reply};
use crate::time::calendar_period;

const WINDOW_SECS: u64 = 60;

fn bucket(p: usize, sec: u64) -> usize {
    p + 8 + 8 * (sec % BUCKETS as u64) as usize
}

/// Moves the window at `p` forward to `now_sec` (never back), emptying the buckets of the
/// seconds it passes. Returns the window's newest second.
fn advance(rec: &mut [u8], p: usize, now_sec: u64) -> u64 {
    let head = rd64(rec, p);
    if now_sec <= head {
        return head;
    }
    let from = if now_sec - head >= BUCKETS as u64 { now_sec + 1 - BUCKETS as u64 } else { head + 1 };
    for s in from..=now_sec {
        wr64(rec, bucket(p, s), 0);
    }
    wr64(rec, p, now_sec);
    now_sec
}

/// Tokens counted in the window at `p` as of `now_sec`, without moving it (a read): what a
/// decision now would sum (it moves the window to the later of `now_sec` and its newest second).
pub(super) fn window_used(rec: &[u8], p: usize, now_sec: u64) -> u64 {
    let head = rd64(rec, p);
    let from = now_sec.max(head).saturating_sub(WINDOW_SECS);
    (from..=head).fold(0u64, |a, s| a.saturating_add(rd64(rec, bucket(p, s))))
}

fn window_sum(rec: &[u8], p: usize) -> u64 {
    (0..BUCKETS as u64).fold(0u64, |a, s| a.saturating_add(rd64(rec, bucket(p, s))))
}

/// Segment offsets of one token limit in a record: its window and its quota.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Segs {
    pub window: Option<usize>,
    pub quota: Option<usize>,
}

/// Finds or adds the window segment (appended; the quota segments come from `prepare`).
pub(super) fn window_of(rec: &mut Vec<u8>, base: usize, tl: &TokenLimit) -> Option<usize> {
    tl.tokens_per_minute.map(|_| token_window(rec, base, tl.id.as_bytes()))
}

/// Would `cost` more tokens fit in limit `tl` now? Moves the window forward (the caller
/// writes the record only if every limit admits). `Err` is APIM's refusal.
pub(super) fn decide(rec: &mut [u8], segs: Segs, tl: &TokenLimit, cost: u64, now_ms: u64) -> Result<(), (DenialKind, Reply)> {
    let retry = tl.retry_after_header.as_deref();
    if let (Some(p), Some(tpm)) = (segs.window, tl.tokens_per_minute) {
        let head = advance(rec, p, now_ms / 1000);
        let used = window_sum(rec, p);
        if used.saturating_add(cost) > tpm {
            // The oldest seconds leave first: wait until enough of them have.
            let mut left = used;
            let mut wait_ms = 1000;
            for s in head.saturating_sub(WINDOW_SECS)..=head {
                left = left.saturating_sub(rd64(rec, bucket(p, s)));
                if left.saturating_add(cost) <= tpm {
                    wait_ms = ((s + WINDOW_SECS + 1) * 1000).saturating_sub(now_ms);
                    break;
                }
            }
            return Err((DenialKind::TokenRate, reply::token_limited(ceil_secs(wait_ms).max(1), retry)));
        }
    }
    if let (Some(p), Some((quota, period))) = (segs.quota, tl.quota) {
        let cur = calendar_period(now_ms, period).0.max(rd64(rec, p));
        let (used, _) = QuotaSeg::counts(rec, p, cur);
        if used.saturating_add(cost) > quota {
            let end = calendar_period(cur, period).1;
            return Err((DenialKind::TokenQuota, reply::token_quota_exceeded(ceil_secs(end.saturating_sub(now_ms)).max(1), retry)));
        }
    }
    Ok(())
}

/// Counts `cost` tokens in `tl` (after [`decide`] admitted), reporting what is left in
/// `grant`'s headers. Returns the quota period counted in (0: none).
pub(super) fn count(rec: &mut [u8], segs: Segs, tl: &TokenLimit, cost: u64, now_ms: u64, grant: &mut Grant) -> u64 {
    if let (Some(p), Some(tpm)) = (segs.window, tl.tokens_per_minute) {
        let head = advance(rec, p, now_ms / 1000);
        let b = bucket(p, head);
        wr64(rec, b, rd64(rec, b).saturating_add(cost));
        if let Some(h) = &tl.remaining_tokens_header {
            grant.headers.push((h.clone(), tpm.saturating_sub(window_sum(rec, p)).to_string()));
        }
    }
    let mut counted_in = 0;
    if let (Some(p), Some((quota, period))) = (segs.quota, tl.quota) {
        let cur = calendar_period(now_ms, period).0.max(rd64(rec, p));
        let used = QuotaSeg::add(rec, p, cur, cost, 0);
        if let Some(h) = &tl.remaining_quota_tokens_header {
            grant.headers.push((h.clone(), quota.saturating_sub(used).to_string()));
        }
        counted_in = cur;
    }
    counted_in
}

/// Settles one limit's reservation to the call's actual tokens: the difference goes back to
/// (or, if the backend reported more than the bound, is added to) the second and the quota
/// period the call was counted in, if they are still in the record.
pub(super) fn settle(rec: &mut [u8], segs: Segs, charge: &TokenCharge, quota_period: u64, actual: u64) {
    let adjust = |rec: &mut [u8], at: usize| {
        let v = rd64(rec, at);
        let v =
            if actual >= charge.reserved { v.saturating_add(actual - charge.reserved) } else { v.saturating_sub(charge.reserved - actual) };
        wr64(rec, at, v);
    };
    if let Some(p) = segs.window {
        let (head, sec) = (rd64(rec, p), charge.admitted_ms / 1000);
        if sec <= head && head - sec <= WINDOW_SECS {
            adjust(rec, bucket(p, sec));
        }
    }
    if let Some(p) = segs.quota {
        if quota_period != 0 && rd64(rec, p) == quota_period {
            adjust(rec, p + 8);
        }
    }
}
