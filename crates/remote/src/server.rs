//! The service's side (mlgate-rls): a `RateLimitRequest`'s descriptors are resolved against
//! the same compiled configuration the filter runs, into the same [`Plan`], and decided by
//! the same [`limits::check_at`] over the service's store (Redis). No limit rule lives here.

use super::names::{BANDWIDTH_PREFIX, KEY_COUNTER, KEY_LIMIT, KEY_SETTLE, KEY_SUBSCRIPTION, QUOTA_BANDWIDTH, QUOTA_CALLS, QUOTA_PREFIX};
use super::tokens;
use super::wire::{CurrentLimit, Descriptor, Response, Status, CODE_OK, CODE_OVER_LIMIT};
use super::wire::{UNIT_DAY, UNIT_HOUR, UNIT_MINUTE, UNIT_SECOND, UNIT_UNKNOWN, UNIT_WEEK};
use mlgate_core::limits::tokens::{TokenCharge, TokenPlan};
use mlgate_core::limits::{self, Ctx, DenialKind, PerLimit, Plan, Spec, Store, Verdict, MAX_SPECS};
use mlgate_core::model::{Counter, Gateway, Quota, Subscription, TokenLimit};
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

/// Where a descriptor of a check went: a call limit (its index in the plan's specs) or a
/// token limit (its slot: the product's 0, the API's 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    Call(usize),
    Token(usize),
}

/// Limits and subscriptions by the ids descriptors name.
pub struct Resolver<'g> {
    gw: &'g Gateway,
    rates: HashMap<&'g str, Spec<'g>>,
    quotas: HashMap<&'g str, &'g Quota>,
    /// Token limits by id (`tp:<product>`, `ta:<api>`), with their slot in a `TokenPlan`.
    tokens: HashMap<&'g str, (&'g TokenLimit, usize)>,
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
        let mut tokens = HashMap::new();
        for p in &gw.products {
            if let Some(tl) = &p.token_limit {
                tokens.insert(tl.id.as_str(), (tl, 0));
            }
            if let Some(rl) = &p.rate_limit {
                rates.insert(rl.id.as_str(), Spec::Rate(rl));
            }
            if let Some(q) = &p.quota {
                quotas.insert(p.id.as_str(), q);
            }
        }
        for a in &gw.apis {
            if let Some(tl) = &a.token_limit {
                tokens.insert(tl.id.as_str(), (tl, 1));
            }
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
        Resolver { gw, rates, quotas, tokens, subs, domain }
    }

    /// Decides one `RateLimitRequest`: a check (rate-limit, quota and token descriptors, one
    /// call), a bandwidth report (`b:` descriptors with `hits_addend` = bytes) or a token
    /// settle (descriptors with a `settle` entry).
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
        if descriptors.iter().any(|d| entry(d, KEY_SETTLE).is_some()) {
            return self.settle(descriptors, hits_addend, store, now_ms);
        }
        if descriptors.len() > MAX_SPECS + 2 {
            return bad(format!("at most {MAX_SPECS} call and 2 token descriptors per request"));
        }
        let hits = |d: &Descriptor| d.hits_addend.unwrap_or(u64::from(hits_addend));

        let mut specs: [Option<Spec<'g>>; MAX_SPECS] = [None; MAX_SPECS];
        let mut values: [&[u8]; MAX_SPECS] = [&[]; MAX_SPECS];
        let mut tokens = TokenPlan::default();
        let mut cost: Option<u64> = None;
        let mut sub: Option<&'g Subscription> = None;
        // Where each descriptor went: its index in `specs`, or its token limit's slot.
        let mut at: Vec<At> = Vec::with_capacity(descriptors.len());
        let mut n_calls = 0;
        for (i, d) in descriptors.iter().enumerate() {
            let Some(id) = entry(d, KEY_LIMIT) else { return bad(format!("descriptor {i}: no \"{KEY_LIMIT}\" entry")) };
            if let Some(&(tl, slot)) = self.tokens.get(id) {
                if cost.is_some_and(|c| c != hits(d)) {
                    return bad(format!("descriptor {i}: token limits reserve different amounts"));
                }
                cost = Some(hits(d));
                match tokens.limits.get_mut(slot) {
                    Some(l @ None) => *l = Some(tl),
                    _ => return bad(format!("descriptor {i}: token limit \"{id}\" twice")),
                }
                self.subscription(i, d, &mut sub)?;
                at.push(At::Token(slot));
                continue;
            }
            if hits(d) > 1 {
                return bad(format!("hits_addend {} (mlgate counts one call per request)", hits(d)));
            }
            if n_calls >= MAX_SPECS {
                return bad(format!("at most {MAX_SPECS} call descriptors per request"));
            }
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
                if let Some(slot) = values.get_mut(n_calls) {
                    *slot = v.as_bytes();
                }
            } else {
                self.subscription(i, d, &mut sub)?;
            }
            if let Some(slot) = specs.get_mut(n_calls) {
                *slot = Some(spec);
            }
            at.push(At::Call(n_calls));
            n_calls += 1;
        }
        tokens.cost = cost.unwrap_or(0);
        let (record_key, start_ms) = sub.map_or(("", 0), |s| (s.record_key.as_str(), s.start_ms));
        let plan = Plan { specs, values, record_key, start_ms, tokens };
        let mut ctx = Ctx { store, now_ms, max_retries: self.gw.settings.max_cas_retries, counter_slots: self.gw.settings.counter_slots };
        let mut per = PerLimit::default();
        match limits::check_at(&plan, &mut ctx, &mut per) {
            Verdict::Unavailable => Err(ServeError::Store),
            Verdict::Admit(grant) => {
                let charge = grant.tokens.unwrap_or_default();
                let mut token_statuses = tokens::ok_statuses(&plan.tokens, &charge, &grant.headers);
                let statuses = at
                    .iter()
                    .map(|a| match *a {
                        At::Call(j) => {
                            let spec = specs.get(j).copied().flatten();
                            let st = per.statuses.get(j).copied().flatten();
                            Status {
                                code: CODE_OK,
                                current_limit: st.map(|s| limit_of(spec, s.limit, None)),
                                limit_remaining: st.map_or(0, |s| clamp32(s.remaining)),
                                reset_ms: st.map(|s| s.reset_secs.saturating_mul(1000)),
                            }
                        }
                        At::Token(slot) => token_statuses.get_mut(slot).and_then(Option::take).unwrap_or_default(),
                    })
                    .collect();
                Ok(Response { overall_code: CODE_OK, statuses })
            }
            Verdict::Deny(kind, reply) => {
                let secs = retry_after(&reply);
                let denied = match per.denied_at {
                    Some(j) => Some(At::Call(j)),
                    None if matches!(kind, DenialKind::TokenRate | DenialKind::TokenQuota) => {
                        let header = reply.headers.last().map(|(k, _)| k.as_str());
                        tokens::denied_slot(&plan.tokens, kind, header).map(At::Token)
                    }
                    None => None,
                };
                let statuses = at
                    .iter()
                    .map(|a| match *a {
                        _ if Some(*a) != denied => Status { code: CODE_OK, ..Status::default() },
                        At::Call(j) => {
                            let spec = specs.get(j).copied().flatten();
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
                        }
                        At::Token(slot) => match plan.tokens.limits.get(slot).copied().flatten() {
                            Some(tl) => tokens::over_status(tl, kind, secs),
                            None => Status::default(),
                        },
                    })
                    .collect();
                Ok(Response { overall_code: CODE_OVER_LIMIT, statuses })
            }
        }
    }

    /// The subscription descriptor `i` names; every descriptor of a request names the same.
    fn subscription(&self, i: usize, d: &Descriptor, sub: &mut Option<&'g Subscription>) -> Result<(), ServeError> {
        let bad = |m: String| Err(ServeError::BadRequest(m));
        let Some(name) = entry(d, KEY_SUBSCRIPTION) else { return bad(format!("descriptor {i}: no \"{KEY_SUBSCRIPTION}\" entry")) };
        let Some(s) = self.subs.get(name).copied() else { return bad(format!("descriptor {i}: no subscription \"{name}\"")) };
        if sub.is_some_and(|o| !std::ptr::eq(o, s)) {
            return bad("descriptors name different subscriptions".into());
        }
        *sub = Some(s);
        Ok(())
    }

    /// Settles a finished call's token reservation (see [`tokens`]): one write of the
    /// subscription record by `limits::settle_tokens`, as the filter does over shared data.
    fn settle(&self, descriptors: &[Descriptor], hits_addend: u32, store: &mut dyn Store, now_ms: u64) -> Result<Response, ServeError> {
        let bad = |m: String| Err(ServeError::BadRequest(m));
        if descriptors.len() > 2 {
            return bad("at most 2 settle descriptors per request".into());
        }
        let mut plan = TokenPlan::default();
        let mut charge: Option<TokenCharge> = None;
        let mut actual: Option<u64> = None;
        let mut sub = None;
        for (i, d) in descriptors.iter().enumerate() {
            let Some(&(tl, slot)) = entry(d, KEY_LIMIT).and_then(|id| self.tokens.get(id)) else {
                return bad(format!("descriptor {i}: no token limit of that \"{KEY_LIMIT}\" in this configuration"));
            };
            self.subscription(i, d, &mut sub)?;
            let Some((admitted_ms, period, reserved)) = entry(d, KEY_SETTLE).and_then(tokens::parse_settle) else {
                return bad(format!("descriptor {i}: \"{KEY_SETTLE}\" is not <admitted_ms>:<quota_period>:<reserved>"));
            };
            let a = d.hits_addend.unwrap_or(u64::from(hits_addend));
            let c = charge.get_or_insert(TokenCharge { admitted_ms, reserved, quota_periods: [0; 2] });
            if c.admitted_ms != admitted_ms || c.reserved != reserved || actual.is_some_and(|x| x != a) {
                return bad(format!("descriptor {i}: settles another call"));
            }
            actual = Some(a);
            match (plan.limits.get_mut(slot), c.quota_periods.get_mut(slot)) {
                (Some(l @ None), Some(p)) => {
                    *l = Some(tl);
                    *p = period;
                }
                _ => return bad(format!("descriptor {i}: token limit twice")),
            }
        }
        let (Some(charge), Some(actual), Some(sub)) = (charge, actual, sub) else { return bad("nothing to settle".into()) };
        plan.cost = charge.reserved;
        let mut ctx = Ctx { store, now_ms, max_retries: self.gw.settings.max_cas_retries, counter_slots: self.gw.settings.counter_slots };
        limits::settle_tokens(&sub.record_key, &plan, &charge, actual, &mut ctx).map_err(|_| ServeError::Store)?;
        Ok(Response { overall_code: CODE_OK, statuses: vec![Status { code: CODE_OK, ..Status::default() }; descriptors.len()] })
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
