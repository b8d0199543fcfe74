//! The service's side (mlgate-rls): a `RateLimitRequest`'s descriptors are resolved against
//! the same compiled configuration the filter runs, into the same [`Plan`], and decided by
//! the same [`limits::check_at`] over the service's store (Redis). No limit rule lives here.

use super::names::{BANDWIDTH_PREFIX, KEY_COUNTER, KEY_LIMIT, KEY_SUBSCRIPTION, QUOTA_BANDWIDTH, QUOTA_CALLS, QUOTA_PREFIX};
use super::wire::{CurrentLimit, Descriptor, Response, Status, CODE_OK, CODE_OVER_LIMIT};
use super::wire::{UNIT_DAY, UNIT_HOUR, UNIT_MINUTE, UNIT_SECOND, UNIT_UNKNOWN, UNIT_WEEK};
use mlgate_core::limits::{self, Ctx, DenialKind, PerLimit, Plan, Spec, Store, Verdict, MAX_SPECS};
use mlgate_core::model::{Counter, Gateway, Quota, Subscription};
use mlgate_core::reply::Reply;
use std::collections::HashMap;

/// Why a request got no decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServeError {
    /// The request does not fit this configuration (gRPC INVALID_ARGUMENT).
    BadRequest(String),
    /// The store could not be read or updated (gRPC UNAVAILABLE).
    Store,
}

/// Limits and subscriptions by the ids descriptors name.
pub struct Resolver<'g> {
    gw: &'g Gateway,
    rates: HashMap<&'g str, Spec<'g>>,
    quotas: HashMap<&'g str, &'g Quota>,
    subs: HashMap<&'g str, &'g Subscription>,
    /// The domain requests must name (the configuration's `limits_store.rls.domain`), if any.
    domain: Option<&'g str>,
}

fn unit_of(period_ms: u64) -> (u32, u64) {
    match period_ms {
        1_000 => (UNIT_SECOND, 1),
        60_000 => (UNIT_MINUTE, 1),
        3_600_000 => (UNIT_HOUR, 1),
        86_400_000 => (UNIT_DAY, 1),
        604_800_000 => (UNIT_WEEK, 1),
        _ => (UNIT_UNKNOWN, 1),
    }
}

impl<'g> Resolver<'g> {
    pub fn new(gw: &'g Gateway) -> Self {
        let mut rates = HashMap::new();
        let mut quotas = HashMap::new();
        for p in &gw.products {
            if let Some(rl) = &p.rate_limit {
                rates.insert(rl.id.as_str(), Spec::Rate(rl));
            }
            if let Some(q) = &p.quota {
                quotas.insert(p.id.as_str(), q);
            }
        }
        for a in &gw.apis {
            if let Some(rl) = &a.rate_limit {
                rates.insert(rl.id.as_str(), Spec::Rate(rl));
            }
            for o in &a.operations {
                if let Some(rl) = &o.rate_limit {
                    rates.insert(rl.id.as_str(), Spec::Rate(rl));
                }
            }
        }
        let subs = gw.subscriptions.iter().map(|s| (s.id.as_str(), s)).collect();
        let domain = match &gw.settings.limits_store {
            mlgate_core::LimitsStore::Rls(r) => Some(r.domain.as_str()),
            mlgate_core::LimitsStore::SharedData => None,
        };
        Resolver { gw, rates, quotas, subs, domain }
    }

    /// Decides one `RateLimitRequest`: a check (rate-limit and quota descriptors, one call) or
    /// a bandwidth report (`b:` descriptors with `hits_addend` = bytes).
    pub fn decide(
        &self,
        domain: &str,
        descriptors: &[Descriptor],
        hits_addend: u32,
        store: &mut dyn Store,
        now_ms: u64,
    ) -> Result<Response, ServeError> {
        let bad = |m: String| Err(ServeError::BadRequest(m));
        if let Some(d) = self.domain {
            if d != domain {
                return bad(format!("domain \"{domain}\" is not this service's (\"{d}\")"));
            }
        }
        if descriptors.is_empty() {
            return bad("no descriptors".into());
        }
        if descriptors.iter().all(|d| entry(d, KEY_LIMIT).is_some_and(|l| l.starts_with(BANDWIDTH_PREFIX))) {
            return self.bandwidth(descriptors, hits_addend, store, now_ms);
        }
        if descriptors.len() > MAX_SPECS {
            return bad(format!("at most {MAX_SPECS} descriptors per request"));
        }
        let hits = |d: &Descriptor| d.hits_addend.unwrap_or(u64::from(hits_addend));
        if let Some(d) = descriptors.iter().find(|d| hits(d) > 1) {
            return bad(format!("hits_addend {} (mlgate counts one call per request)", hits(d)));
        }

        let mut specs: [Option<Spec<'g>>; MAX_SPECS] = [None; MAX_SPECS];
        let mut values: [&[u8]; MAX_SPECS] = [&[]; MAX_SPECS];
        let mut sub: Option<&'g Subscription> = None;
        for (i, d) in descriptors.iter().enumerate() {
            let Some(id) = entry(d, KEY_LIMIT) else { return bad(format!("descriptor {i}: no \"{KEY_LIMIT}\" entry")) };
            let spec = if let Some(product) = id.strip_prefix(QUOTA_PREFIX) {
                match self.quotas.get(product) {
                    Some(q) => Spec::Quota(q),
                    None => return bad(format!("descriptor {i}: no quota \"{id}\" in this configuration")),
                }
            } else {
                match self.rates.get(id) {
                    Some(s) => *s,
                    None => return bad(format!("descriptor {i}: no rate limit \"{id}\" in this configuration")),
                }
            };
            let keyed = matches!(spec, Spec::Rate(rl) if rl.counter != Counter::Subscription);
            if keyed {
                let Some(v) = entry(d, KEY_COUNTER) else { return bad(format!("descriptor {i}: keyed limit without \"{KEY_COUNTER}\"")) };
                if let Some(slot) = values.get_mut(i) {
                    *slot = v.as_bytes();
                }
            } else {
                let Some(name) = entry(d, KEY_SUBSCRIPTION) else {
                    return bad(format!("descriptor {i}: no \"{KEY_SUBSCRIPTION}\" entry"));
                };
                let Some(s) = self.subs.get(name).copied() else { return bad(format!("descriptor {i}: no subscription \"{name}\"")) };
                if sub.is_some_and(|o| !std::ptr::eq(o, s)) {
                    return bad("descriptors name different subscriptions".into());
                }
                sub = Some(s);
            }
            if let Some(slot) = specs.get_mut(i) {
                *slot = Some(spec);
            }
        }
        let (record_key, start_ms) = sub.map_or(("", 0), |s| (s.record_key.as_str(), s.start_ms));
        let plan = Plan { specs, values, record_key, start_ms, tokens: Default::default() };
        let mut ctx = Ctx { store, now_ms, max_retries: self.gw.settings.max_cas_retries, counter_slots: self.gw.settings.counter_slots };
        let mut per = PerLimit::default();
        let verdict = limits::check_at(&plan, &mut ctx, &mut per);
        let denied_at = per.denied_at;
        let n = descriptors.len();
        match verdict {
            Verdict::Unavailable => Err(ServeError::Store),
            Verdict::Admit(_) => {
                let statuses = (0..n)
                    .map(|i| {
                        let spec = specs.get(i).copied().flatten();
                        let st = per.statuses.get(i).copied().flatten();
                        Status {
                            code: CODE_OK,
                            current_limit: st.map(|s| limit_of(spec, s.limit, None)),
                            limit_remaining: st.map_or(0, |s| clamp32(s.remaining)),
                            reset_ms: st.map(|s| s.reset_secs.saturating_mul(1000)),
                        }
                    })
                    .collect();
                Ok(Response { overall_code: CODE_OK, statuses })
            }
            Verdict::Deny(kind, reply) => {
                let secs = retry_after(&reply);
                let statuses = (0..n)
                    .map(|i| {
                        if Some(i) != denied_at {
                            return Status { code: CODE_OK, ..Status::default() };
                        }
                        let spec = specs.get(i).copied().flatten();
                        let limit = match spec {
                            Some(Spec::Rate(rl)) => u64::from(rl.calls),
                            Some(Spec::Quota(q)) => q.calls.unwrap_or(0),
                            None => 0,
                        };
                        Status {
                            code: CODE_OVER_LIMIT,
                            current_limit: Some(limit_of(spec, limit, Some(kind))),
                            limit_remaining: 0,
                            reset_ms: Some(secs.saturating_mul(1000)),
                        }
                    })
                    .collect();
                Ok(Response { overall_code: CODE_OVER_LIMIT, statuses })
            }
        }
    }

    fn bandwidth(&self, descriptors: &[Descriptor], hits_addend: u32, store: &mut dyn Store, now_ms: u64) -> Result<Response, ServeError> {
        let mut statuses = Vec::with_capacity(descriptors.len());
        for (i, d) in descriptors.iter().enumerate() {
            let product = entry(d, KEY_LIMIT).and_then(|l| l.strip_prefix(BANDWIDTH_PREFIX)).unwrap_or_default();
            let Some(quota) = self.quotas.get(product) else {
                return Err(ServeError::BadRequest(format!("descriptor {i}: no quota for product \"{product}\"")));
            };
            let Some(sub) = entry(d, KEY_SUBSCRIPTION).and_then(|n| self.subs.get(n)) else {
                return Err(ServeError::BadRequest(format!("descriptor {i}: unknown or missing subscription")));
            };
            let bytes = d.hits_addend.unwrap_or(u64::from(hits_addend));
            let mut ctx =
                Ctx { store, now_ms, max_retries: self.gw.settings.max_cas_retries, counter_slots: self.gw.settings.counter_slots };
            limits::add_bandwidth(&sub.record_key, sub.start_ms, quota, bytes, &mut ctx).map_err(|_| ServeError::Store)?;
            statuses.push(Status { code: CODE_OK, ..Status::default() });
        }
        Ok(Response { overall_code: CODE_OK, statuses })
    }
}

fn entry<'d>(d: &'d Descriptor, key: &str) -> Option<&'d str> {
    d.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn clamp32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// The limit a status reports: a rate limit by its id, a quota as `quota_calls` or
/// `quota_bandwidth` (which one denied is what the filter's 403 message needs).
fn limit_of(spec: Option<Spec<'_>>, limit: u64, denied: Option<DenialKind>) -> CurrentLimit {
    match spec {
        Some(Spec::Rate(rl)) => CurrentLimit { name: rl.id.clone(), requests_per_unit: clamp32(limit), unit: unit_of(rl.period_ms).0 },
        Some(Spec::Quota(q)) => {
            let name = if denied == Some(DenialKind::QuotaBandwidth) { QUOTA_BANDWIDTH } else { QUOTA_CALLS };
            CurrentLimit { name: name.to_string(), requests_per_unit: clamp32(limit), unit: unit_of(q.period_ms).0 }
        }
        None => CurrentLimit::default(),
    }
}

/// The `Retry-After` seconds of a denial reply (what the status's duration carries).
fn retry_after(r: &Reply) -> u64 {
    r.headers.iter().rev().find_map(|(_, v)| v.parse::<u64>().ok()).unwrap_or(1)
}
