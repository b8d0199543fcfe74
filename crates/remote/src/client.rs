//! The filter's side: what mlgate sends for a request's limits, how the answer becomes the
//! same verdict (and so the same APIM reply) as a local decision, and what happens when the
//! store fails. The host only dispatches the bytes and hands the answer back.

use super::breaker::{Breaker, Gate};
use super::names::{KEY_COUNTER, KEY_LIMIT, KEY_SUBSCRIPTION, QUOTA_BANDWIDTH};
use super::tokens;
use super::wire::{self, Response, CODE_OK, CODE_OVER_LIMIT};
use mlgate_core::admit::{Identity, Limits, LocalLimits};
use mlgate_core::limits::{DenialKind, Grant, Plan, RateLimitStatus, Spec, Store, Verdict};
use mlgate_core::model::{Counter, FailureMode, Gateway};
use mlgate_core::reply;
use mlgate_core::{OnFailure, RlsSettings};

/// A counter value (a header value or an address: hostile bytes) as a protobuf string:
/// `%`, controls, space and every byte >= 0x7f are percent-encoded, so the encoding is valid
/// UTF-8, injective, and the same in every Envoy.
pub fn counter_value(v: &[u8]) -> String {
    percent_encoding::percent_encode(v, COUNTER_ESCAPED).to_string()
}

/// What [`counter_value`] escapes besides every byte >= 0x80: controls (and 0x7f), space, `%`.
const COUNTER_ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b' ').add(b'%');

/// The descriptor id of a limit: rate limits by their id (`p:<product>`, `a:<api>`,
/// `o:<api>/<operation>`), the product quota as `q:<product>`.
fn limit_id(spec: &Spec<'_>, product: &str) -> String {
    match spec {
        Spec::Rate(rl) => rl.id.clone(),
        Spec::Quota(_) => format!("q:{product}"),
    }
}

/// The `RateLimitRequest` that checks and counts one call against `plan`: one descriptor per
/// limit, in spec order, then one per token limit (so statuses map back to limits).
pub fn check_request(settings: &RlsSettings, plan: &Plan<'_, '_>, subscription: &str, product: &str) -> Vec<u8> {
    let mut enc = wire::RequestEncoder::new(&settings.domain);
    for (spec, value) in plan.specs.iter().zip(plan.values.iter()) {
        let Some(spec) = spec else { continue };
        let id = limit_id(spec, product);
        match spec {
            Spec::Rate(rl) if rl.counter != Counter::Subscription => {
                enc.descriptor(&[(KEY_LIMIT, &id), (KEY_COUNTER, &counter_value(value))], None);
            }
            _ => enc.descriptor(&[(KEY_LIMIT, &id), (KEY_SUBSCRIPTION, subscription)], None),
        }
    }
    tokens::check_descriptors(&mut enc, &plan.tokens, subscription);
    enc.finish(0)
}

/// The `RateLimitRequest` that adds a response's body bytes to a bandwidth quota (sent after
/// the response; it never denies).
pub fn bandwidth_request(settings: &RlsSettings, subscription: &str, product: &str, bytes: u64) -> Vec<u8> {
    let mut enc = wire::RequestEncoder::new(&settings.domain);
    let id = format!("{}{product}", super::names::BANDWIDTH_PREFIX);
    enc.descriptor(&[(KEY_LIMIT, &id), (KEY_SUBSCRIPTION, subscription)], Some(bytes));
    enc.finish(0)
}

fn secs_of(s: &wire::Status) -> u64 {
    s.reset_ms.unwrap_or(0).div_ceil(1000)
}

/// The verdict an answer means for `plan`: the same APIM replies as a local decision.
/// `None`: the answer says nothing usable (code UNKNOWN, or an admission without the charge
/// of its token limits), which counts as a store failure.
pub fn verdict(plan: &Plan<'_, '_>, resp: &Response) -> Option<Verdict> {
    let mut specs = plan.specs.iter().flatten();
    let n_calls = plan.specs.iter().flatten().count();
    match resp.overall_code {
        CODE_OVER_LIMIT => {
            // The first limit over; without statuses, the first limit.
            let k = resp.statuses.iter().position(|s| s.code == CODE_OVER_LIMIT);
            let status = k.and_then(|k| resp.statuses.get(k));
            let secs = status.map_or(1, secs_of).max(1);
            let name = status.and_then(|s| s.current_limit.as_ref()).map(|l| l.name.as_str());
            let k = k.unwrap_or(0);
            let v = match specs.nth(k) {
                Some(Spec::Rate(rl)) => Verdict::Deny(DenialKind::RateLimit, reply::rate_limited(secs, rl.retry_after_header.as_deref())),
                Some(Spec::Quota(_)) => {
                    let bandwidth = name == Some(QUOTA_BANDWIDTH);
                    let kind = if bandwidth { DenialKind::QuotaBandwidth } else { DenialKind::QuotaCalls };
                    Verdict::Deny(kind, reply::quota_exceeded(bandwidth, secs))
                }
                None => tokens::denied(plan.tokens.limits.iter().flatten().nth(k.checked_sub(n_calls)?)?, name, secs),
            };
            Some(v)
        }
        CODE_OK => {
            let mut g = Grant::default();
            let mut k = 0usize;
            for spec in plan.specs.iter() {
                let Some(spec) = spec else { continue };
                let status = resp.statuses.get(k).filter(|s| s.code == CODE_OK);
                k += 1;
                let st = status.and_then(|s| {
                    s.current_limit.as_ref().map(|l| RateLimitStatus {
                        limit: u64::from(l.requests_per_unit),
                        remaining: u64::from(s.limit_remaining),
                        reset_secs: secs_of(s),
                    })
                });
                if let Some(s) = st {
                    g.offer(s.limit, s.remaining, s.reset_secs);
                }
                match spec {
                    Spec::Rate(rl) => {
                        if let (Some(h), Some(s)) = (&rl.remaining_calls_header, st) {
                            g.headers.push((h.clone(), s.remaining.to_string()));
                        }
                        if let Some(h) = &rl.total_calls_header {
                            g.headers.push((h.clone(), rl.calls.to_string()));
                        }
                    }
                    Spec::Quota(q) => g.count_bandwidth |= q.bandwidth_bytes.is_some(),
                }
            }
            if plan.tokens.limits.iter().any(Option::is_some) {
                g.tokens = Some(tokens::charge_of(&plan.tokens, resp.statuses.get(n_calls..)?, &mut g.headers)?);
            }
            Some(Verdict::Admit(g))
        }
        _ => None,
    }
}

/// What a failed or skipped remote check does: `local` decides over this Envoy's shared data;
/// `allow` and `deny` are an `Unavailable` verdict that [`Limits::failure_mode`] maps.
fn fall_back(on_failure: OnFailure, local: &mut LocalLimits<'_>, gw: &Gateway, plan: &Plan<'_, '_>, now_ms: u64) -> (Verdict, bool) {
    match on_failure {
        OnFailure::Local => (local.check(gw, None, plan, now_ms).unwrap_or(Verdict::Unavailable), true),
        OnFailure::Allow | OnFailure::Deny => (Verdict::Unavailable, false),
    }
}

fn failure_mode(on_failure: OnFailure, gw: &Gateway) -> FailureMode {
    match on_failure {
        OnFailure::Deny => FailureMode::Deny,
        OnFailure::Allow => FailureMode::Allow,
        // Counting locally failed too: shared data's own failure mode.
        OnFailure::Local => gw.settings.failure_mode,
    }
}

/// The first pass over a request under a remote store: unless the breaker is open, it asks
/// (the host dispatches `request` and pauses the request); else it falls back at once.
pub struct Ask<'a, 's> {
    pub settings: &'a RlsSettings,
    pub breaker: &'a mut Breaker,
    local: LocalLimits<'s>,
    /// The `RateLimitRequest` to send; set when the decision is pending.
    pub request: Option<Vec<u8>>,
    /// The breaker let this request probe the store.
    pub probe: bool,
    /// The decision was made over shared data (`on_failure: local`).
    pub fell_back_local: bool,
    /// The breaker was open: the store was not asked.
    pub skipped: bool,
}

impl<'a, 's> Ask<'a, 's> {
    pub fn new(settings: &'a RlsSettings, breaker: &'a mut Breaker, local: &'s mut dyn Store) -> Self {
        Ask { settings, breaker, local: LocalLimits::new(local), request: None, probe: false, fell_back_local: false, skipped: false }
    }
}

impl Limits for Ask<'_, '_> {
    fn check(&mut self, gw: &Gateway, who: Option<&Identity<'_, '_>>, plan: &Plan<'_, '_>, now_ms: u64) -> Option<Verdict> {
        let lost_after = u64::from(self.settings.timeout_ms).saturating_mul(4).max(1000);
        match (self.breaker.gate(now_ms, lost_after), who) {
            (gate @ (Gate::Call | Gate::Probe), Some(who)) => {
                self.probe = gate == Gate::Probe;
                self.request = Some(check_request(self.settings, plan, &who.sub.id, &who.product.id));
                None
            }
            _ => {
                self.skipped = true;
                let (v, local) = fall_back(self.settings.on_failure, &mut self.local, gw, plan, now_ms);
                self.fell_back_local = local;
                Some(v)
            }
        }
    }
    fn failure_mode(&self, gw: &Gateway) -> FailureMode {
        failure_mode(self.settings.on_failure, gw)
    }
    fn keys_created(&self) -> u32 {
        self.local.keys_created()
    }
}

/// The second pass, with the store's answer: `Ok(bytes)` is the response message, `Err(())`
/// a failed call (status, timeout, reset). Garbage counts as a failure.
pub struct Answered<'a, 's> {
    pub settings: &'a RlsSettings,
    pub answer: Result<&'a [u8], ()>,
    local: LocalLimits<'s>,
    /// The answer was unusable, so `on_failure` applied.
    pub failed: bool,
    pub fell_back_local: bool,
}

impl<'a, 's> Answered<'a, 's> {
    pub fn new(settings: &'a RlsSettings, answer: Result<&'a [u8], ()>, local: &'s mut dyn Store) -> Self {
        Answered { settings, answer, local: LocalLimits::new(local), failed: false, fell_back_local: false }
    }
}

/// Whether an answer is usable: decodes and has a known overall code.
pub fn usable(answer: Result<&[u8], ()>) -> bool {
    answer.ok().and_then(|b| wire::decode_response(b).ok()).is_some_and(|r| r.overall_code == CODE_OK || r.overall_code == CODE_OVER_LIMIT)
}

impl Limits for Answered<'_, '_> {
    fn check(&mut self, gw: &Gateway, _who: Option<&Identity<'_, '_>>, plan: &Plan<'_, '_>, now_ms: u64) -> Option<Verdict> {
        let decided = self.answer.ok().and_then(|b| wire::decode_response(b).ok()).and_then(|r| verdict(plan, &r));
        Some(match decided {
            Some(v) => v,
            None => {
                self.failed = true;
                let (v, local) = fall_back(self.settings.on_failure, &mut self.local, gw, plan, now_ms);
                self.fell_back_local = local;
                v
            }
        })
    }
    fn failure_mode(&self, gw: &Gateway) -> FailureMode {
        failure_mode(self.settings.on_failure, gw)
    }
    fn keys_created(&self) -> u32 {
        self.local.keys_created()
    }
}
