//! What a configuration amounts to, for `mlgate check` and the configure log line: counts,
//! upstreams, and the most store memory its limits can take.

use crate::model::{Counter, Gateway, RateLimit};

/// A distinct upstream service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub service_url: String,
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// `host[:port]`, the `:authority` mlgate sends upstream.
    pub authority: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub apis: usize,
    pub operations: usize,
    pub products: usize,
    pub subscriptions: usize,
    /// Rate limits and quotas configured (product, API and operation scopes).
    pub limits: usize,
    /// Upper bound of the limit store's keys and values, in bytes.
    pub shared_data_bytes_max: u64,
    pub upstreams: Vec<Upstream>,
    /// Environment variables the configuration reads (`api_key_env`).
    pub api_key_envs: Vec<String>,
}

/// Bytes of one rate-limit segment (see `limits::record`).
fn ring_bytes(rl: &RateLimit) -> u64 {
    2 + rl.id.len() as u64 + 1 + 8 + 8 * u64::from(rl.calls)
}
const QUOTA_SEGMENT: u64 = 2 + 1 + 1 + 24;
/// The store keeps a key's name beside its value; CAS token and map overhead are the host's.
const KEY_OVERHEAD: u64 = 64;

impl Gateway {
    pub fn summary(&self) -> Summary {
        let mut limits = 0;
        let mut bytes = 0u64;
        let mut keyed_bytes = 0u64;
        let count_rl = |rl: &RateLimit, keyed: &mut u64| {
            if rl.counter != Counter::Subscription {
                // A table of `counter_slots` records: key, version, owner tag, one ring.
                *keyed += u64::from(self.settings.counter_slots) * (KEY_OVERHEAD + rl.id.len() as u64 + 9 + ring_bytes(rl));
            }
        };
        for api in &self.apis {
            if let Some(rl) = &api.rate_limit {
                limits += 1;
                count_rl(rl, &mut keyed_bytes);
            }
            for op in &api.operations {
                if let Some(rl) = &op.rate_limit {
                    limits += 1;
                    count_rl(rl, &mut keyed_bytes);
                }
            }
        }
        for p in &self.products {
            limits += usize::from(p.rate_limit.is_some()) + usize::from(p.quota.is_some());
            if let Some(rl) = &p.rate_limit {
                count_rl(rl, &mut keyed_bytes);
            }
        }
        // Each subscription's record holds every per-subscription limit it can meet.
        for sub in &self.subscriptions {
            let Some(p) = self.products.get(sub.product as usize) else { continue };
            let mut rec = 1u64;
            let per_sub = |rl: &Option<RateLimit>| rl.as_ref().filter(|r| r.counter == Counter::Subscription).map_or(0, ring_bytes);
            rec += per_sub(&p.rate_limit) + p.quota.as_ref().map_or(0, |_| QUOTA_SEGMENT);
            for api in p.apis.iter().filter_map(|&i| self.apis.get(usize::from(i))) {
                rec += per_sub(&api.rate_limit);
                rec += api.operations.iter().map(|o| per_sub(&o.rate_limit)).sum::<u64>();
            }
            if rec > 1 {
                bytes += KEY_OVERHEAD + sub.record_key.len() as u64 + rec;
            }
        }
        let mut upstreams: Vec<Upstream> = Vec::new();
        for api in &self.apis {
            if upstreams.iter().any(|u| u.service_url == api.service_url) {
                continue;
            }
            let https = api.service_url.starts_with("https://");
            let (host, port) = split_authority(&api.service_authority, if https { 443 } else { 80 });
            upstreams.push(Upstream { service_url: api.service_url.clone(), https, host, port, authority: api.service_authority.clone() });
        }
        Summary {
            apis: self.apis.len(),
            operations: self.apis.iter().map(|a| a.operations.len()).sum(),
            products: self.products.len(),
            subscriptions: self.subscriptions.len(),
            limits,
            shared_data_bytes_max: bytes + keyed_bytes + KEY_OVERHEAD,
            upstreams,
            api_key_envs: self.api_key_envs.clone(),
        }
    }
}

/// `host[:port]` or `[v6][:port]` → (host without brackets, port).
fn split_authority(a: &str, default_port: u16) -> (String, u16) {
    if let Some(rest) = a.strip_prefix('[') {
        if let Some((h, tail)) = rest.split_once(']') {
            let port = tail.strip_prefix(':').and_then(|p| p.parse().ok()).unwrap_or(default_port);
            return (h.to_string(), port);
        }
    }
    match a.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse().unwrap_or(default_port)),
        None => (a.to_string(), default_port),
    }
}
