//! What is decided: the limits of a request ([`Spec`], [`Plan`]), the context of a decision, its
//! verdicts and grants, and the decision of one limit over its segment of a record ([`decide`],
//! [`count`]). The pure parts the subscription record ([`super::decide`]) and the counter tables
//! ([`super::keyed`]) both use.

use super::record::{find_seg, rd64, QuotaSeg, Ring, KIND_QUOTA, KIND_RATE};
use super::store::Store;
use crate::model::{Api, Operation, Product, Quota, RateLimit, StatusSet, TokenLimit};
use crate::reply::{self, Reply};

/// One limit that applies to a request, borrowed from the model.
#[derive(Debug, Clone, Copy)]
pub enum Spec<'g> {
    Rate(&'g RateLimit),
    Quota(&'g Quota),
}

/// At most this many limits apply to one request: product, API and operation rate limits,
/// then product, API and operation quotas.
pub const MAX_SPECS: usize = 6;

/// The limits that apply to `op` of `api` for a subscription of `product`, in APIM's order:
/// product, API, operation rate limits, then the product, API and operation quotas.
pub fn limits_of<'g>(api: &'g Api, op: &'g Operation, product: &'g Product) -> [Option<Spec<'g>>; MAX_SPECS] {
    [
        product.rate_limit.as_ref().map(Spec::Rate),
        api.rate_limit.as_ref().map(Spec::Rate),
        op.rate_limit.as_ref().map(Spec::Rate),
        product.quota.as_ref().map(Spec::Quota),
        api.quota.as_ref().map(Spec::Quota),
        op.quota.as_ref().map(Spec::Quota),
    ]
}

/// The limits of one request, in APIM's order, with what each counts per.
pub struct Plan<'g, 'v> {
    pub specs: [Option<Spec<'g>>; MAX_SPECS],
    /// For each keyed rate limit (`counter: ip | header:<name>`), the counter's value.
    pub values: [&'v [u8]; MAX_SPECS],
    /// The subscription's record key and quota start.
    pub record_key: &'g str,
    pub start_ms: u64,
    /// Token limits and the call's bound (none for a call that carries no tokens).
    pub tokens: TokenPlan<'g>,
}

/// The token limits of one call (product's, API's) and the bound it reserves.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenPlan<'g> {
    pub limits: [Option<&'g TokenLimit>; 2],
    /// Tokens reserved at admission: the bound of the call.
    pub cost: u64,
}

/// What an admission reserved, to settle when the response ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenCharge {
    pub admitted_ms: u64,
    pub reserved: u64,
    /// The quota period each limit counted in (0: that limit has no quota).
    pub quota_periods: [u64; 2],
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
    /// A token limit's tokens per minute (429).
    TokenRate,
    /// A token limit's quota (403).
    TokenQuota,
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
    /// The tokens reserved, to settle when the response ends.
    pub tokens: Option<TokenCharge>,
    /// Admissions of limits with an `increment_condition`, held until the status is known.
    pub held: Held,
}

/// The admissions a call holds in limits with an `increment_condition` (by index in
/// `Plan::specs`): given back with [`super::give_back`] if its status does not count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    pub at: [Option<HeldAt>; MAX_SPECS],
}

impl Held {
    pub fn any(&self) -> bool {
        self.at.iter().any(Option::is_some)
    }
}

/// One held admission: the time written into a rate limit's ring (and the counter-table slot
/// of a keyed one), or the quota period the call was counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldAt {
    pub mark: u64,
    pub slot: u32,
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
    pub fn offer(&mut self, limit: u64, remaining: u64, reset_secs: u64) {
        let better = self.rate_limit.is_none_or(|b| remaining < b.remaining || (remaining == b.remaining && reset_secs > b.reset_secs));
        if better {
            self.rate_limit = Some(RateLimitStatus { limit, remaining, reset_secs });
        }
    }
}

pub fn ceil_secs(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

/// What a lifetime quota (`renewal_period: 0`, APIM's "the period is set to infinite") waits:
/// .NET's `TimeSpan.MaxValue` in whole seconds, which APIM's message prints as
/// `10675199.02:48:05` (inferred: the reference documents the infinite period, not the reply).
pub const LIFETIME_WAIT_SECS: u64 = 922_337_203_685;

/// Seconds until the quota period starting at `cur` ends (at least 1; a lifetime quota never does).
pub fn quota_wait_secs(cur: u64, period_ms: u64, now: u64) -> u64 {
    if period_ms == 0 {
        return LIFETIME_WAIT_SECS;
    }
    ceil_secs(cur.saturating_add(period_ms).saturating_sub(now)).max(1)
}

/// Start of the quota period containing `now` (periods of `period_ms` from `start_ms`; a
/// lifetime quota, `period_ms` 0, has one period, from the epoch on).
pub fn period_start(now: u64, start_ms: u64, period_ms: u64) -> u64 {
    if period_ms == 0 {
        return 0;
    }
    if now < start_ms {
        // Before the subscription's start: the period that ends at its start.
        return start_ms.saturating_sub(period_ms);
    }
    start_ms + (now - start_ms) / period_ms.max(1) * period_ms
}

/// Would `spec` admit one more call now? `Err` is the APIM denial.
pub fn decide(rec: &[u8], p: usize, spec: &Spec<'_>, now: u64, start_ms: u64) -> Result<(), (DenialKind, Reply)> {
    match spec {
        Spec::Rate(rl) => Ring::decide(rec, p, now, rl.period_ms)
            .map_err(|wait| (DenialKind::RateLimit, reply::rate_limited(ceil_secs(wait).max(1), rl.retry_after_header.as_deref()))),
        Spec::Quota(q) => {
            let cur = period_start(now, q.start(start_ms), q.period_ms).max(rd64(rec, p));
            let (calls, bytes) = QuotaSeg::counts(rec, p, cur);
            let wait = quota_wait_secs(cur, q.period_ms, now);
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

/// Counts one admitted call and reports its limit status into `grant`. Returns what a refund
/// needs ([`HeldAt::mark`]): the admission time written, or the quota period counted in.
pub fn count(rec: &mut [u8], p: usize, spec: &Spec<'_>, now: u64, start_ms: u64, grant: &mut Grant) -> u64 {
    match spec {
        Spec::Rate(rl) => {
            let (slot, _) = Ring::admit(rec, p, now);
            let (remaining, reset) = Ring::status(rec, p, now, rl.period_ms);
            grant.offer(u64::from(rl.calls), remaining, ceil_secs(reset));
            if let Some(h) = &rl.remaining_calls_header {
                grant.headers.push((h.clone(), remaining.to_string()));
            }
            if let Some(h) = &rl.total_calls_header {
                grant.headers.push((h.clone(), rl.calls.to_string()));
            }
            rd64(rec, slot)
        }
        Spec::Quota(q) => {
            let cur = period_start(now, q.start(start_ms), q.period_ms).max(rd64(rec, p));
            let calls = QuotaSeg::add(rec, p, cur, 1, 0);
            if let Some(limit) = q.calls {
                grant.offer(limit, limit - calls.min(limit), quota_wait_secs(cur, q.period_ms, now));
            }
            grant.count_bandwidth |= q.bandwidth_bytes.is_some();
            cur
        }
    }
}

/// Undoes one [`count`] of `spec` in a record with `base` header bytes: the ring entry written
/// at `mark` is taken out, or the quota call counted in period `mark`. `false` when there is
/// nothing to take back (the entry already left the window, the period renewed).
pub fn take_back(rec: &mut [u8], base: usize, spec: &Spec<'_>, mark: u64) -> bool {
    match spec {
        Spec::Rate(rl) => find_seg(rec, base, KIND_RATE, rl.id.as_bytes()).is_some_and(|s| Ring::remove(rec, s.payload, mark)),
        Spec::Quota(q) => find_seg(rec, base, KIND_QUOTA, q.id.as_bytes()).is_some_and(|s| QuotaSeg::take_back(rec, s.payload, mark)),
    }
}

impl Quota {
    /// Where this quota's periods start: the subscription's start, or for a quota by key the
    /// grid of its `first_period_start`.
    pub fn start(&self, subscription_start_ms: u64) -> u64 {
        match self.counter {
            crate::model::Counter::Subscription => subscription_start_ms,
            _ => self.anchor_ms,
        }
    }
}

impl Spec<'_> {
    /// The counter a limit counts per (a subscription, or a key's table).
    pub fn counter(&self) -> &crate::model::Counter {
        match self {
            Spec::Rate(rl) => &rl.counter,
            Spec::Quota(q) => &q.counter,
        }
    }
    /// Its id in records and counter tables.
    pub fn id(&self) -> &str {
        match self {
            Spec::Rate(rl) => &rl.id,
            Spec::Quota(q) => &q.id,
        }
    }
    fn condition(&self) -> Option<&StatusSet> {
        match self {
            Spec::Rate(rl) => rl.increment_condition.as_ref(),
            Spec::Quota(q) => q.increment_condition.as_ref(),
        }
    }
    /// Whether a call answered with `status` counts in this limit (0: no response).
    pub fn counts(&self, status: u16) -> bool {
        self.condition().is_none_or(|c| c.contains(status))
    }
    /// Whether admissions are held until the status is known.
    pub fn conditional(&self) -> bool {
        self.condition().is_some()
    }
}
