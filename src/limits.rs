//! Rate limits and quotas, exact across Envoy workers.
//!
//! State lives in a [`Store`] with proxy-wasm shared-data semantics (one map per VM id, values
//! versioned by a CAS token, `cas == 0` writes unconditionally, the CAS is not checked when a
//! key does not exist yet, keys can never be deleted). Every decision is a read, a pure
//! decision, and a compare-and-swap write; a conflict re-reads and decides again. So with a
//! limit of N, exactly N requests are admitted per window however many workers race.
//!
//! Layout:
//! - One *subscription record* (`mlgate/s/<subscription id>`) holds every limit counted per
//!   subscription: the product's rate limit and quota, and API- and operation-scoped rate
//!   limits. Several limits on one request are therefore decided and counted in one atomic
//!   write: a request is admitted only if all admit it, and then counted in all.
//! - A rate limit with a `counter` (`ip`, `header:<name>`) counts in a bounded table of
//!   `counter_slots` records per limit (`mlgate/c/<scope>/<slot>`). A request that needs both
//!   kinds commits them in a fixed order and undoes earlier commits if a later one denies.
//!
//! Keys are created only for configured subscriptions and table slots, never for what a
//! client sends, so shared-data memory is bounded by configuration, not by traffic.

use crate::config::{Gateway, Product, QuotaConfig, RateLimitConfig, Subscription};
use crate::gateway::Forward;
use crate::reply::{self, Reply};

/// The shared-data operations mlgate needs, with the host's semantics.
pub trait Store {
    /// The value and its CAS token, or `None` if the key does not exist.
    fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError>;
    /// Writes if `cas` still matches (or is 0, or the key does not exist yet).
    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError>;
    /// Told when [`create_if_absent`] created a key (for the key-count gauge).
    fn created(&mut self) {}
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetError {
    CasMismatch,
    Host,
}

/// The key whose fresh CAS token makes "create if absent" safe (see [`create_if_absent`]).
pub const SENTINEL_KEY: &str = "mlgate/cas-sentinel";

/// Creates `key` with `value` unless it exists; never overwrites a value another worker wrote.
///
/// The host ignores the CAS of a set on a missing key, and a set with CAS 0 always writes.
/// So we write with a CAS that no existing value can carry: the token the host just issued
/// for our own write of the sentinel key. Tokens come from one process-wide counter, so that
/// token belongs to the sentinel alone; on an existing key the set fails with a mismatch.
pub fn create_if_absent(store: &mut dyn Store, key: &str, value: &[u8]) -> Result<(), HostError> {
    store.set(SENTINEL_KEY, b"", 0).map_err(|_| HostError)?;
    let token = match store.get(SENTINEL_KEY)? {
        Some((_, cas)) if cas != 0 => cas,
        _ => return Err(HostError),
    };
    match store.set(key, value, token) {
        Ok(()) => {
            store.created();
            Ok(())
        }
        Err(SetError::CasMismatch) => Ok(()),
        Err(SetError::Host) => Err(HostError),
    }
}

// ---------------------------------------------------------------------------------------------
// What applies to a request.
// ---------------------------------------------------------------------------------------------

/// One limit that applies to a request, borrowed from the configuration.
#[derive(Debug, Clone, Copy)]
pub enum Spec<'g> {
    /// `id` names the limit's state inside a record (`p:<product>`, `a:<api>`, `o:<api>/<op>`).
    Rate { id: &'g str, cfg: &'g RateLimitConfig },
    Quota { cfg: &'g QuotaConfig, start_ms: u64 },
}

/// At most this many limits apply to one request: product, API and operation rate limits,
/// and the product quota.
const MAX_SPECS: usize = 4;

/// The limits of a forwarded request, in APIM's order: product, API, operation, quota.
pub fn specs<'g>(fwd: &Forward<'g, '_>) -> impl Iterator<Item = Spec<'g>> {
    let p = fwd.product;
    let a = fwd.api;
    let o = fwd.op;
    let rate = |id: &'g String, cfg: &'g Option<RateLimitConfig>| cfg.as_ref().map(|cfg| Spec::Rate { id: id.as_str(), cfg });
    [
        rate(&p.limit_id, &p.rate_limit),
        rate(&a.limit_id, &a.rate_limit),
        rate(&o.limit_id, &o.rate_limit),
        p.quota.as_ref().map(|cfg| Spec::Quota { cfg, start_ms: fwd.sub.start_ms }),
    ]
    .into_iter()
    .flatten()
}

/// Whether any limit applies (no shared data is touched otherwise).
pub fn any(fwd: &Forward<'_, '_>) -> bool {
    specs(fwd).next().is_some()
}

// ---------------------------------------------------------------------------------------------
// Record encoding. A record is a list of segments:
//   id_len u8 | id | kind u8 | payload
//   kind 1 (rate):  n u32 | head u32 | n × u64 admission times (ms), oldest at `head`
//   kind 2 (quota): period_start u64 | calls u64 | bytes u64
// A counter-table record starts with the owner tag (u64 hash of the counter value).
// All integers little-endian.
// ---------------------------------------------------------------------------------------------

const KIND_RATE: u8 = 1;
const KIND_QUOTA: u8 = 2;
const QUOTA_ID: &[u8] = b"q";

fn rd32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}
fn rd64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}
fn wr32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn wr64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Where a segment's payload sits in a record.
#[derive(Debug, Clone, Copy)]
struct Seg {
    id_start: usize,
    id_end: usize,
    kind: u8,
    payload: usize,
    end: usize,
}

/// The segment starting at `at`, if it is complete and well-formed. State that cannot be
/// read ends the walk (and is dropped on the next write): it is treated as empty, never trusted.
fn next_seg(rec: &[u8], at: usize) -> Option<Seg> {
    let id_len = *rec.get(at)? as usize;
    let id_start = at + 1;
    let id_end = id_start + id_len;
    let kind = *rec.get(id_end)?;
    let payload = id_end + 1;
    let end = match kind {
        KIND_RATE if payload + 8 <= rec.len() => payload + 8 + 8 * rd32(rec, payload) as usize,
        KIND_QUOTA => payload + 24,
        _ => return None,
    };
    (end <= rec.len()).then_some(Seg { id_start, id_end, kind, payload, end })
}

/// Where the well-formed segments from `from` on end.
fn valid_end(rec: &[u8], from: usize) -> usize {
    let mut at = from;
    while let Some(seg) = next_seg(rec, at) {
        at = seg.end;
    }
    at
}

/// The segment of `kind` named `id`, if the record has one.
fn find_seg(rec: &[u8], from: usize, kind: u8, id: &[u8]) -> Option<Seg> {
    let mut at = from;
    while let Some(seg) = next_seg(rec, at) {
        if seg.kind == kind && &rec[seg.id_start..seg.id_end] == id {
            return Some(seg);
        }
        at = seg.end;
    }
    None
}

fn push_rate_segment(rec: &mut Vec<u8>, id: &[u8], n: u32) {
    rec.push(id.len() as u8);
    rec.extend_from_slice(id);
    rec.push(KIND_RATE);
    rec.extend_from_slice(&n.to_le_bytes());
    rec.extend_from_slice(&0u32.to_le_bytes());
    rec.resize(rec.len() + 8 * n as usize, 0);
}

fn push_quota_segment(rec: &mut Vec<u8>) {
    rec.push(QUOTA_ID.len() as u8);
    rec.extend_from_slice(QUOTA_ID);
    rec.push(KIND_QUOTA);
    rec.resize(rec.len() + 24, 0);
}

/// Ring of the last `n` admission times of a sliding-window rate limit.
struct Ring;

impl Ring {
    fn n(rec: &[u8], p: usize) -> usize {
        rd32(rec, p) as usize
    }
    fn head(rec: &[u8], p: usize) -> usize {
        rd32(rec, p + 4) as usize % Ring::n(rec, p).max(1)
    }
    /// The i-th oldest admission time.
    fn at(rec: &[u8], p: usize, i: usize) -> u64 {
        let n = Ring::n(rec, p);
        rd64(rec, p + 8 + 8 * ((Ring::head(rec, p) + i) % n))
    }
    /// Admitted now iff the oldest of the last `n` admissions left the window.
    fn decide(rec: &[u8], p: usize, now: u64, period: u64) -> Result<(), u64> {
        let oldest = Ring::at(rec, p, 0);
        let free_at = oldest.saturating_add(period);
        if free_at <= now {
            Ok(())
        } else {
            Err(free_at - now)
        }
    }
    /// Records an admission at `now` (never before the newest, so the ring stays ordered).
    fn admit(rec: &mut [u8], p: usize, now: u64) -> (usize, u64) {
        let n = Ring::n(rec, p);
        let head = Ring::head(rec, p);
        let newest = rd64(rec, p + 8 + 8 * ((head + n - 1) % n));
        let slot = p + 8 + 8 * head;
        let prev = rd64(rec, slot);
        let t = now.max(newest);
        wr64(rec, slot, t);
        wr32(rec, p + 4, ((head + 1) % n) as u32);
        (head, prev)
    }
    /// (remaining, ms until the oldest admission in the window leaves it).
    fn status(rec: &[u8], p: usize, now: u64, period: u64) -> (u64, u64) {
        let n = Ring::n(rec, p);
        let cutoff = now.saturating_sub(period);
        // Times are ordered oldest first: the first one inside the window by binary search.
        let (mut lo, mut hi) = (0usize, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if Ring::at(rec, p, mid) > cutoff {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        let reset = if lo < n { Ring::at(rec, p, lo).saturating_add(period).saturating_sub(now) } else { 0 };
        (lo as u64, reset)
    }
    /// Copies the newest `min(old n, new n)` admission times into a ring of size `n`.
    fn resized(rec: &[u8], p: usize, n: u32) -> Vec<u64> {
        let old = Ring::n(rec, p);
        let keep = old.min(n as usize);
        let mut times = vec![0u64; n as usize];
        for i in 0..keep {
            times[n as usize - keep + i] = Ring::at(rec, p, old - keep + i);
        }
        times
    }
}

// ---------------------------------------------------------------------------------------------
// Decisions.
// ---------------------------------------------------------------------------------------------

/// What the limits say about a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Admit(Admitted),
    Deny(Reply),
    /// Shared data could not be updated (CAS retries exhausted or a host error).
    Unavailable,
}

/// The most restrictive limit after an admission: `RateLimit-Limit`, `-Remaining`, `-Reset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitStatus {
    pub limit: u64,
    pub remaining: u64,
    pub reset_secs: u64,
}

impl RateLimitStatus {
    /// The three `RateLimit-*` response headers.
    pub fn headers(&self) -> [(&'static str, String); 3] {
        [
            ("ratelimit-limit", self.limit.to_string()),
            ("ratelimit-remaining", self.remaining.to_string()),
            ("ratelimit-reset", self.reset_secs.to_string()),
        ]
    }
}

/// What an admitted response carries, and whether response bytes must be counted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Admitted {
    /// For the `RateLimit-*` headers (unless turned off in config).
    pub rate_limit: Option<RateLimitStatus>,
    /// APIM's optional `remaining_calls_header` / `total_calls_header` (names as configured).
    pub headers: Vec<(String, String)>,
    /// A bandwidth quota applies: report body bytes with [`add_bandwidth`].
    pub count_bandwidth: bool,
    /// Counter-table probes that found no free slot and shared a live one.
    pub shared_counter_slots: u32,
}

/// The most restrictive limit seen so far, for `RateLimit-*` headers.
#[derive(Default)]
struct Tightest {
    best: Option<(u64, u64, u64)>, // (limit, remaining, reset secs)
}

impl Tightest {
    fn offer(&mut self, limit: u64, remaining: u64, reset_secs: u64) {
        let better = match self.best {
            None => true,
            Some((_, r, s)) => remaining < r || (remaining == r && reset_secs > s),
        };
        if better {
            self.best = Some((limit, remaining, reset_secs));
        }
    }
}

fn ceil_secs(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

/// Start of the quota period containing `now` (periods of `period_ms` from `start_ms`).
fn period_start(now: u64, start_ms: u64, period_ms: u64) -> u64 {
    if now < start_ms {
        // Before the subscription's start: the period that ends at its start.
        return start_ms.saturating_sub(period_ms);
    }
    start_ms + (now - start_ms) / period_ms * period_ms
}

/// What a record must hold for one limit: its id and, for a rate limit, the ring size.
type Need<'a> = (&'a [u8], Option<u32>);

/// Finds or adds the segments `needs` in `rec` (whose segments start at `base`), resizing
/// rings whose limit changed, and writes each one's payload offset into `slots`. Segments of
/// other limits are kept untouched.
fn prepare(rec: &mut Vec<u8>, base: usize, needs: &[Need<'_>], slots: &mut [usize; MAX_SPECS]) {
    let end = valid_end(rec, base);
    rec.truncate(end);
    let mut i = 0;
    while i < needs.len() {
        let (id, ring_n) = needs[i];
        let kind = if ring_n.is_some() { KIND_RATE } else { KIND_QUOTA };
        match (find_seg(rec, base, kind, id), ring_n) {
            (Some(s), Some(n)) if Ring::n(rec, s.payload) != n as usize => {
                // The limit changed: rebuild this ring in place of the old one, keeping the
                // newest admissions, then start over (offsets after it moved).
                let times = Ring::resized(rec, s.payload, n);
                let mut seg = Vec::with_capacity(10 + id.len() + 8 * times.len());
                push_rate_segment(&mut seg, id, n);
                let p = 1 + id.len() + 1;
                for (j, t) in times.iter().enumerate() {
                    wr64(&mut seg, p + 8 + 8 * j, *t);
                }
                rec.splice(s.id_start - 1..s.end, seg);
                i = 0;
                continue;
            }
            (Some(s), _) => slots[i] = s.payload,
            (None, Some(n)) => {
                let at = rec.len();
                push_rate_segment(rec, id, n);
                slots[i] = at + 1 + id.len() + 1;
            }
            (None, None) => {
                let at = rec.len();
                push_quota_segment(rec);
                slots[i] = at + 1 + QUOTA_ID.len() + 1;
            }
        }
        i += 1;
    }
}

/// Everything the engine needs from the outside for one decision.
pub struct Ctx<'a> {
    pub store: &'a mut dyn Store,
    pub now_ms: u64,
    pub max_retries: u32,
    /// The downstream address (for `counter: "ip"`).
    pub client_ip: &'a str,
    /// The request's headers (for `counter: "header:<name>"`).
    pub headers: &'a [(String, String)],
    pub counter_slots: u32,
}

/// A record-level decision: Ok(admitted) or the denial (limit index, reply).
enum RecordVerdict {
    Admit,
    Deny(Reply),
}

/// Decides and counts one request against every limit that applies. `Admit` means it was
/// counted in all of them; a denial counted nowhere.
pub fn check(gw: &Gateway, fwd: &Forward<'_, '_>, ctx: &mut Ctx<'_>) -> Outcome {
    // Fixed arrays: no allocation to sort the limits (at most MAX_SPECS apply).
    let mut needs: [Need<'_>; MAX_SPECS] = [(&[], None); MAX_SPECS];
    let mut sub_cfg: [Option<Spec<'_>>; MAX_SPECS] = [None; MAX_SPECS];
    let mut n_sub = 0;
    let mut keyed: [Option<(&str, &RateLimitConfig)>; MAX_SPECS] = [None; MAX_SPECS];
    for (i, spec) in specs(fwd).enumerate() {
        match spec {
            Spec::Rate { id, cfg } if cfg.counter.is_some() => keyed[i] = Some((id, cfg)),
            Spec::Rate { id, cfg } => {
                needs[n_sub] = (id.as_bytes(), Some(cfg.calls));
                sub_cfg[n_sub] = Some(spec);
                n_sub += 1;
            }
            Spec::Quota { .. } => {
                needs[n_sub] = (QUOTA_ID, None);
                sub_cfg[n_sub] = Some(spec);
                n_sub += 1;
            }
        }
    }
    let mut admitted = Admitted::default();
    let mut tight = Tightest::default();
    let mut undo: Vec<Undo> = Vec::new();

    // Keyed counters first (their denials are the cheapest to undo), then the subscription.
    for (id, cfg) in keyed.iter().flatten() {
        let value = counter_value(cfg, ctx);
        match commit_keyed(id, cfg, value, ctx, &mut tight, &mut admitted) {
            Ok((RecordVerdict::Admit, u)) => undo.push(u),
            Ok((RecordVerdict::Deny(r), _)) => {
                rollback(&undo, ctx);
                return Outcome::Deny(r);
            }
            Err(HostError) => {
                rollback(&undo, ctx);
                return Outcome::Unavailable;
            }
        }
    }
    if n_sub > 0 {
        let key = &fwd.sub.record_key;
        match commit_subscription(key, &needs[..n_sub], &sub_cfg[..n_sub], ctx, &mut tight, &mut admitted) {
            Ok(RecordVerdict::Admit) => {}
            Ok(RecordVerdict::Deny(r)) => {
                rollback(&undo, ctx);
                return Outcome::Deny(r);
            }
            Err(HostError) => {
                rollback(&undo, ctx);
                return Outcome::Unavailable;
            }
        }
    }
    if gw.settings.rate_limit_headers {
        admitted.rate_limit = tight.best.map(|(limit, remaining, reset_secs)| RateLimitStatus { limit, remaining, reset_secs });
    }
    Outcome::Admit(admitted)
}

fn counter_value<'a>(cfg: &RateLimitConfig, ctx: &Ctx<'a>) -> &'a str {
    match cfg.counter.as_deref().and_then(|c| c.strip_prefix("header:")) {
        Some(h) => ctx.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(h)).map_or("", |(_, v)| v.as_str()),
        None => ctx.client_ip,
    }
}

/// Reads `key`, creating it empty if absent. Returns the value and its CAS token.
fn load(store: &mut dyn Store, key: &str, empty: &[u8]) -> Result<(Vec<u8>, u32), HostError> {
    if let Some(v) = store.get(key)? {
        return Ok(v);
    }
    create_if_absent(store, key, empty)?;
    store.get(key)?.ok_or(HostError)
}

fn commit_subscription(
    key: &str,
    needs: &[Need<'_>],
    cfgs: &[Option<Spec<'_>>],
    ctx: &mut Ctx<'_>,
    tight: &mut Tightest,
    admitted: &mut Admitted,
) -> Result<RecordVerdict, HostError> {
    let now = ctx.now_ms;
    let mut slots = [0usize; MAX_SPECS];
    for _ in 0..ctx.max_retries {
        let (mut rec, cas) = load(ctx.store, key, b"")?;
        prepare(&mut rec, 0, needs, &mut slots);
        // Decide everything first; write nothing unless all admit.
        for (p, spec) in slots.iter().zip(cfgs.iter().flatten()) {
            if let Err(r) = decide(&rec, *p, spec, now) {
                return Ok(RecordVerdict::Deny(r));
            }
        }
        let mut headers = Vec::new();
        let mut local = Tightest::default();
        for (p, spec) in slots.iter().zip(cfgs.iter().flatten()) {
            count(&mut rec, *p, spec, now, &mut local, &mut headers, &mut admitted.count_bandwidth);
        }
        match ctx.store.set(key, &rec, cas) {
            Ok(()) => {
                if let Some((l, r, s)) = local.best {
                    tight.offer(l, r, s);
                }
                admitted.headers.extend(headers);
                return Ok(RecordVerdict::Admit);
            }
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Host) => return Err(HostError),
        }
    }
    Err(HostError)
}

/// Would `spec` admit one more call now? `Err` is the APIM denial.
fn decide(rec: &[u8], p: usize, spec: &Spec<'_>, now: u64) -> Result<(), Reply> {
    match spec {
        Spec::Rate { cfg, .. } => Ring::decide(rec, p, now, u64::from(cfg.renewal_period) * 1000)
            .map_err(|wait| reply::rate_limited(ceil_secs(wait).max(1), cfg.retry_after_header.as_deref())),
        Spec::Quota { cfg, start_ms } => {
            let period = cfg.renewal_period * 1000;
            let cur = period_start(now, *start_ms, period);
            let (calls, bytes) = if rd64(rec, p) == cur { (rd64(rec, p + 8), rd64(rec, p + 16)) } else { (0, 0) };
            let wait = ceil_secs(cur + period - now).max(1);
            if cfg.calls.is_some_and(|c| calls >= c) {
                return Err(reply::quota_exceeded(false, wait));
            }
            if cfg.bandwidth_kb.is_some_and(|kb| bytes >= kb * 1024) {
                return Err(reply::quota_exceeded(true, wait));
            }
            Ok(())
        }
    }
}

/// Counts one admitted call and reports its limit status.
fn count(
    rec: &mut [u8],
    p: usize,
    spec: &Spec<'_>,
    now: u64,
    tight: &mut Tightest,
    headers: &mut Vec<(String, String)>,
    bandwidth: &mut bool,
) {
    match spec {
        Spec::Rate { cfg, .. } => {
            Ring::admit(rec, p, now);
            let (remaining, reset) = Ring::status(rec, p, now, u64::from(cfg.renewal_period) * 1000);
            tight.offer(u64::from(cfg.calls), remaining, ceil_secs(reset));
            if let Some(h) = &cfg.remaining_calls_header {
                headers.push((h.to_ascii_lowercase(), remaining.to_string()));
            }
            if let Some(h) = &cfg.total_calls_header {
                headers.push((h.to_ascii_lowercase(), cfg.calls.to_string()));
            }
        }
        Spec::Quota { cfg, start_ms } => {
            let period = cfg.renewal_period * 1000;
            let cur = period_start(now, *start_ms, period);
            roll_quota(rec, p, cur);
            let calls = rd64(rec, p + 8) + 1;
            wr64(rec, p + 8, calls);
            if let Some(limit) = cfg.calls {
                tight.offer(limit, limit - calls.min(limit), ceil_secs(cur + period - now));
            }
            *bandwidth |= cfg.bandwidth_kb.is_some();
        }
    }
}

/// Starts a new quota period in the segment at `p` if `cur` is not the one it counts.
fn roll_quota(rec: &mut [u8], p: usize, cur: u64) {
    if rd64(rec, p) != cur {
        wr64(rec, p, cur);
        wr64(rec, p + 8, 0);
        wr64(rec, p + 16, 0);
    }
}

/// Adds body bytes to a subscription's bandwidth quota (after the response).
pub fn add_bandwidth(sub: &Subscription, product: &Product, bytes: u64, ctx: &mut Ctx<'_>) -> Result<(), HostError> {
    let Some(cfg) = product.quota.as_ref().filter(|q| q.bandwidth_kb.is_some()) else { return Ok(()) };
    if bytes == 0 {
        return Ok(());
    }
    let key = &sub.record_key;
    let need: [Need<'_>; 1] = [(QUOTA_ID, None)];
    let mut slots = [0usize; MAX_SPECS];
    let cur = period_start(ctx.now_ms, sub.start_ms, cfg.renewal_period * 1000);
    for _ in 0..ctx.max_retries {
        let (mut rec, cas) = load(ctx.store, key, b"")?;
        prepare(&mut rec, 0, &need, &mut slots);
        let p = slots[0];
        roll_quota(&mut rec, p, cur);
        let total = rd64(&rec, p + 16).saturating_add(bytes);
        wr64(&mut rec, p + 16, total);
        match ctx.store.set(key, &rec, cas) {
            Ok(()) => return Ok(()),
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Host) => return Err(HostError),
        }
    }
    Err(HostError)
}

// ---------------------------------------------------------------------------------------------
// Counter tables (rate-limit-by-key).
// ---------------------------------------------------------------------------------------------

const PROBES: u32 = 4;

fn fnv1a(seed: u64, parts: &[&[u8]]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// How to take back an admission in a keyed record if a later record denies.
struct Undo {
    key: String,
    /// Payload offset of the ring after the 8-byte owner tag.
    time: u64,
    prev: u64,
}

fn keyed_record_key(id: &str, slot: u32) -> String {
    format!("mlgate/c/{id}/{slot}")
}

fn commit_keyed(
    id: &str,
    cfg: &RateLimitConfig,
    value: &str,
    ctx: &mut Ctx<'_>,
    tight: &mut Tightest,
    admitted: &mut Admitted,
) -> Result<(RecordVerdict, Undo), HostError> {
    let owner = fnv1a(0x6d6c_6761_7465, &[id.as_bytes(), value.as_bytes()]) | 1; // 0 = never owned
    let first = (fnv1a(0, &[id.as_bytes(), value.as_bytes()]) % u64::from(ctx.counter_slots)) as u32;
    let period = u64::from(cfg.renewal_period) * 1000;
    let now = ctx.now_ms;
    let need: [Need<'_>; 1] = [(id.as_bytes(), Some(cfg.calls))];
    let spec = Spec::Rate { id, cfg };
    let mut slots = [0usize; MAX_SPECS];

    // Pick the slot: ours, else a free one (never used or all its admissions expired), else
    // share the first probe (counts merge: conservative, never admits more for a key).
    let mut chosen = None;
    for i in 0..PROBES.min(ctx.counter_slots) {
        let slot = (first + i) % ctx.counter_slots;
        let key = keyed_record_key(id, slot);
        let (rec, _) = load(ctx.store, &key, &0u64.to_le_bytes())?;
        let tag = if rec.len() >= 8 { rd64(&rec, 0) } else { 0 };
        let mut r = rec;
        let base = 8.min(r.len());
        prepare(&mut r, base, &need, &mut slots);
        let idle = r.len() < 8 || Ring::status(&r, slots[0], now, period).0 == u64::from(cfg.calls);
        if tag == owner || tag == 0 || idle {
            chosen = Some(key);
            break;
        }
    }
    let shared = chosen.is_none();
    let key = chosen.unwrap_or_else(|| keyed_record_key(id, first));
    if shared {
        admitted.shared_counter_slots += 1;
    }

    for _ in 0..ctx.max_retries {
        let (mut rec, cas) = load(ctx.store, &key, &0u64.to_le_bytes())?;
        if rec.len() < 8 {
            rec = 0u64.to_le_bytes().to_vec();
        }
        let tag = rd64(&rec, 0);
        prepare(&mut rec, 8, &need, &mut slots);
        let p = slots[0];
        if tag != owner && !shared {
            // Taking over a free slot: the previous owner's expired admissions stay, and
            // they no longer count in the window anyway.
            let idle = tag == 0 || Ring::status(&rec, p, now, period).0 == u64::from(cfg.calls);
            if !idle {
                // Someone claimed it meanwhile; count with them (conservative).
                admitted.shared_counter_slots += 1;
            } else {
                wr64(&mut rec, 0, owner);
            }
        }
        if let Err(r) = decide(&rec, p, &spec, now) {
            return Ok((RecordVerdict::Deny(r), Undo { key, time: 0, prev: 0 }));
        }
        let mut local = Tightest::default();
        let mut headers = Vec::new();
        let mut bw = false;
        let (head, prev) = (Ring::head(&rec, p), Ring::at(&rec, p, 0));
        count(&mut rec, p, &spec, now, &mut local, &mut headers, &mut bw);
        let time = rd64(&rec, p + 8 + 8 * head);
        match ctx.store.set(&key, &rec, cas) {
            Ok(()) => {
                if let Some((l, r, s)) = local.best {
                    tight.offer(l, r, s);
                }
                admitted.headers.extend(headers);
                return Ok((RecordVerdict::Admit, Undo { key, time, prev }));
            }
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Host) => return Err(HostError),
        }
    }
    Err(HostError)
}

/// Takes back keyed admissions after a later denial: the newest ring entry equal to our
/// admission time gets its previous value back. Best effort: a failure leaves the
/// admission counted, which errs on the side of admitting fewer.
fn rollback(undo: &[Undo], ctx: &mut Ctx<'_>) {
    for u in undo.iter().rev() {
        for _ in 0..ctx.max_retries {
            let Ok(Some((mut rec, cas))) = ctx.store.get(&u.key) else { break };
            let Some(seg) = next_seg(&rec, 8.min(rec.len())).filter(|s| s.kind == KIND_RATE) else { break };
            let p = seg.payload;
            let n = Ring::n(&rec, p);
            let Some(i) = (0..n).rev().find(|&i| Ring::at(&rec, p, i) == u.time) else { break };
            let head = Ring::head(&rec, p);
            let idx = (head + i) % n;
            if i == n - 1 {
                // Our admission is still the newest: step the ring back.
                wr64(&mut rec, p + 8 + 8 * idx, u.prev);
                wr32(&mut rec, p + 4, idx as u32);
            } else {
                let v = u.prev.min(Ring::at(&rec, p, 0));
                wr64(&mut rec, p + 8 + 8 * idx, v);
            }
            match ctx.store.set(&u.key, &rec, cas) {
                Err(SetError::CasMismatch) => continue,
                _ => break,
            }
        }
    }
}
