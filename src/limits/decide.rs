//! The decision: is one more call allowed by every limit that applies, and if so count it in
//! all of them at once. Counter-table limits are committed first, then the subscription's
//! record in one compare-and-swap; a later denial undoes the earlier commits.

use super::keyed;
use super::record::{self, prepare, rd64, Need, QuotaSeg, Ring, QUOTA_ID, SUB_BASE};
use super::store::{cas_update, HostError, Step, Store};
use crate::model::{Counter, Quota, RateLimit};
use crate::reply::{self, Reply};

/// One limit that applies to a request, borrowed from the model.
#[derive(Debug, Clone, Copy)]
pub enum Spec<'g> {
    Rate(&'g RateLimit),
    Quota(&'g Quota),
}

/// At most this many limits apply to one request: product, API and operation rate limits,
/// and the product quota.
pub const MAX_SPECS: usize = 4;

/// The limits of one request, in APIM's order, with what each counts per.
pub struct Plan<'g, 'v> {
    pub specs: [Option<Spec<'g>>; MAX_SPECS],
    /// For each keyed rate limit (`counter: ip | header:<name>`), the counter's value.
    pub values: [&'v [u8]; MAX_SPECS],
    /// The subscription's record key and quota start.
    pub record_key: &'g str,
    pub start_ms: u64,
}

/// Everything the engine needs from the outside for one decision.
pub struct Ctx<'a> {
    pub store: &'a mut dyn Store,
    pub now_ms: u64,
    pub max_retries: u32,
    pub counter_slots: u32,
}

/// Which limit denied a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenialKind {
    RateLimit,
    QuotaCalls,
    QuotaBandwidth,
}

/// What the limits say about a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Counted in every limit.
    Admit(Grant),
    /// Counted nowhere; the APIM reply to send.
    Deny(DenialKind, Reply),
    /// The store could not be read or updated (CAS retries exhausted or a host error).
    Unavailable,
}

/// The most restrictive limit after an admission: `RateLimit-Limit`, `-Remaining`, `-Reset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitStatus {
    pub limit: u64,
    pub remaining: u64,
    pub reset_secs: u64,
}

/// What an admitted request's response carries, and whether its bytes must be counted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Grant {
    /// The tightest limit, for the `RateLimit-*` headers.
    pub rate_limit: Option<RateLimitStatus>,
    /// APIM's optional `remaining_calls_header` / `total_calls_header` (names as configured).
    pub headers: Vec<(String, String)>,
    /// A bandwidth quota applies: report body bytes with [`add_bandwidth`].
    pub count_bandwidth: bool,
    /// Counter-table probes that found no free slot and shared a live one.
    pub shared_counter_slots: u32,
}

/// What [`check_at`] adds to the verdict, for a remote store that answers per limit.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PerLimit {
    /// For a denial, the index in `Plan::specs` of the limit that denied.
    pub denied_at: Option<usize>,
    /// After an admission, each limit's own status in `Plan::specs` order (`None`: a quota
    /// without calls, or no limit there).
    pub statuses: [Option<RateLimitStatus>; MAX_SPECS],
}

impl Grant {
    /// Keeps the most restrictive status: fewest remaining, then the longest reset.
    pub(crate) fn offer(&mut self, limit: u64, remaining: u64, reset_secs: u64) {
        let better = self.rate_limit.is_none_or(|b| remaining < b.remaining || (remaining == b.remaining && reset_secs > b.reset_secs));
        if better {
            self.rate_limit = Some(RateLimitStatus { limit, remaining, reset_secs });
        }
    }
}

pub(super) fn ceil_secs(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

/// Start of the quota period containing `now` (periods of `period_ms` from `start_ms`).
pub(super) fn period_start(now: u64, start_ms: u64, period_ms: u64) -> u64 {
    if now < start_ms {
        // Before the subscription's start: the period that ends at its start.
        return start_ms.saturating_sub(period_ms);
    }
    start_ms + (now - start_ms) / period_ms.max(1) * period_ms
}

/// Decides and counts one request against every limit in `plan`. `Admit` means it was
/// counted in all of them; a denial counted nowhere.
pub fn check(plan: &Plan<'_, '_>, ctx: &mut Ctx<'_>) -> Verdict {
    check_at(plan, ctx, &mut PerLimit::default())
}

/// [`check`], also telling which limit denied, or each limit's status (a remote store
/// answers per limit).
pub fn check_at(plan: &Plan<'_, '_>, ctx: &mut Ctx<'_>, per: &mut PerLimit) -> Verdict {
    let mut grant = Grant::default();
    let mut undo: Vec<keyed::Undo> = Vec::new();
    let mut needs: [Need<'_>; MAX_SPECS] = [(&[], None); MAX_SPECS];
    let mut sub_specs: [Option<Spec<'_>>; MAX_SPECS] = [None; MAX_SPECS];
    // The index in `plan.specs` of each subscription-record limit.
    let mut sub_at = [0usize; MAX_SPECS];
    let mut n_sub = 0;

    // Keyed counters first (their admissions are the cheapest to undo), then the subscription.
    for (i, (spec, value)) in plan.specs.iter().zip(plan.values.iter()).enumerate() {
        let (need, spec) = match spec {
            Some(Spec::Rate(rl)) if rl.counter != Counter::Subscription => {
                match keyed::commit(rl, value, ctx, &mut grant) {
                    Ok(keyed::Commit::Admitted(u, status)) => {
                        undo.push(u);
                        if let Some(s) = per.statuses.get_mut(i) {
                            *s = status;
                        }
                    }
                    Ok(keyed::Commit::Denied(r)) => {
                        keyed::rollback(&undo, ctx);
                        per.denied_at = Some(i);
                        return Verdict::Deny(DenialKind::RateLimit, r);
                    }
                    Err(HostError) => {
                        keyed::rollback(&undo, ctx);
                        return Verdict::Unavailable;
                    }
                }
                continue;
            }
            Some(s @ Spec::Rate(rl)) => ((rl.id.as_bytes(), Some(rl.calls)), *s),
            Some(s @ Spec::Quota(_)) => ((QUOTA_ID, None), *s),
            None => continue,
        };
        if let (Some(n), Some(c), Some(at)) = (needs.get_mut(n_sub), sub_specs.get_mut(n_sub), sub_at.get_mut(n_sub)) {
            *n = need;
            *c = Some(spec);
            *at = i;
            n_sub += 1;
        }
    }
    if n_sub > 0 {
        let needs = needs.get(..n_sub).unwrap_or(&[]);
        let now = ctx.now_ms;
        let start = plan.start_ms;
        let outcome = cas_update(ctx.store, plan.record_key, &record::empty(SUB_BASE), ctx.max_retries, |rec| {
            let slots: [usize; MAX_SPECS] = prepare(rec, SUB_BASE, needs);
            // Decide everything first; write nothing unless all admit.
            for (j, (p, spec)) in slots.iter().zip(sub_specs.iter().flatten()).enumerate() {
                if let Err(d) = decide(rec, *p, spec, now, start) {
                    return Step::Keep(Err((d, j)));
                }
            }
            let mut local = Grant::default();
            let mut each = [None; MAX_SPECS];
            for ((p, spec), e) in slots.iter().zip(sub_specs.iter().flatten()).zip(each.iter_mut()) {
                let mut one = Grant::default();
                count(rec, *p, spec, now, start, &mut one);
                if let Some(s) = one.rate_limit {
                    local.offer(s.limit, s.remaining, s.reset_secs);
                }
                *e = one.rate_limit;
                local.headers.append(&mut one.headers);
                local.count_bandwidth |= one.count_bandwidth;
            }
            Step::Write(Ok((local, each)))
        });
        match outcome {
            Ok(Ok((local, each))) => {
                if let Some(s) = local.rate_limit {
                    grant.offer(s.limit, s.remaining, s.reset_secs);
                }
                for (at, st) in sub_at.iter().zip(each).take(n_sub) {
                    if let Some(slot) = per.statuses.get_mut(*at) {
                        *slot = st;
                    }
                }
                grant.headers.extend(local.headers);
                grant.count_bandwidth |= local.count_bandwidth;
            }
            Ok(Err(((kind, r), j))) => {
                keyed::rollback(&undo, ctx);
                per.denied_at = sub_at.get(j).copied();
                return Verdict::Deny(kind, r);
            }
            Err(HostError) => {
                keyed::rollback(&undo, ctx);
                return Verdict::Unavailable;
            }
        }
    }
    Verdict::Admit(grant)
}

/// Would `spec` admit one more call now? `Err` is the APIM denial.
pub(super) fn decide(rec: &[u8], p: usize, spec: &Spec<'_>, now: u64, start_ms: u64) -> Result<(), (DenialKind, Reply)> {
    match spec {
        Spec::Rate(rl) => Ring::decide(rec, p, now, rl.period_ms)
            .map_err(|wait| (DenialKind::RateLimit, reply::rate_limited(ceil_secs(wait).max(1), rl.retry_after_header.as_deref()))),
        Spec::Quota(q) => {
            let cur = period_start(now, start_ms, q.period_ms).max(rd64(rec, p));
            let (calls, bytes) = QuotaSeg::counts(rec, p, cur);
            let wait = ceil_secs((cur + q.period_ms).saturating_sub(now)).max(1);
            if q.calls.is_some_and(|c| calls >= c) {
                return Err((DenialKind::QuotaCalls, reply::quota_exceeded(false, wait)));
            }
            if q.bandwidth_bytes.is_some_and(|b| bytes >= b) {
                return Err((DenialKind::QuotaBandwidth, reply::quota_exceeded(true, wait)));
            }
            Ok(())
        }
    }
}

/// Counts one admitted call and reports its limit status into `grant`.
pub(super) fn count(rec: &mut [u8], p: usize, spec: &Spec<'_>, now: u64, start_ms: u64, grant: &mut Grant) {
    match spec {
        Spec::Rate(rl) => {
            Ring::admit(rec, p, now);
            let (remaining, reset) = Ring::status(rec, p, now, rl.period_ms);
            grant.offer(u64::from(rl.calls), remaining, ceil_secs(reset));
            if let Some(h) = &rl.remaining_calls_header {
                grant.headers.push((h.clone(), remaining.to_string()));
            }
            if let Some(h) = &rl.total_calls_header {
                grant.headers.push((h.clone(), rl.calls.to_string()));
            }
        }
        Spec::Quota(q) => {
            let cur = period_start(now, start_ms, q.period_ms).max(rd64(rec, p));
            let calls = QuotaSeg::add(rec, p, cur, 1, 0);
            if let Some(limit) = q.calls {
                grant.offer(limit, limit - calls.min(limit), ceil_secs((cur + q.period_ms).saturating_sub(now)));
            }
            grant.count_bandwidth |= q.bandwidth_bytes.is_some();
        }
    }
}

/// Adds body bytes to a subscription's bandwidth quota (after the response).
pub fn add_bandwidth(record_key: &str, start_ms: u64, quota: &Quota, bytes: u64, ctx: &mut Ctx<'_>) -> Result<(), HostError> {
    if quota.bandwidth_bytes.is_none() || bytes == 0 {
        return Ok(());
    }
    let need: [Need<'_>; 1] = [(QUOTA_ID, None)];
    let now = ctx.now_ms;
    cas_update(ctx.store, record_key, &record::empty(SUB_BASE), ctx.max_retries, |rec| {
        let [p]: [usize; 1] = prepare(rec, SUB_BASE, &need);
        let cur = period_start(now, start_ms, quota.period_ms).max(rd64(rec, p));
        QuotaSeg::add(rec, p, cur, 0, bytes);
        Step::Write(())
    })
}
