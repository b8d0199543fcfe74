//! What a configuration amounts to, for `mlgate check` and the configure log line: counts,
//! upstreams, and what it costs in memory ([`crate::memory`]).

use crate::model::Gateway;

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
    /// Rate limits, quotas and token limits configured (product, API and operation scopes).
    pub limits: usize,
    /// Upper bound of the limit store's memory at full tables, in bytes (entries, their keys
    /// and values, the host's overhead per entry).
    pub shared_data_bytes_max: u64,
    /// What the configuration costs in Envoy's memory (`mlgate check` prints it).
    pub memory: crate::memory::Estimate,
    pub upstreams: Vec<Upstream>,
    /// Environment variables the configuration reads (`api_key_env`).
    pub api_key_envs: Vec<String>,
}

impl Gateway {
    pub fn summary(&self) -> Summary {
        let mut limits = 0;
        for api in &self.apis {
            limits += usize::from(api.rate_limit.is_some()) + usize::from(api.token_limit.is_some());
            limits += usize::from(api.quota.is_some());
            limits += api.operations.iter().map(|o| usize::from(o.rate_limit.is_some()) + usize::from(o.quota.is_some())).sum::<usize>();
        }
        for p in &self.products {
            limits += usize::from(p.rate_limit.is_some()) + usize::from(p.quota.is_some()) + usize::from(p.token_limit.is_some());
        }
        let memory = crate::memory::estimate(self);
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
            products: self.products.iter().filter(|p| p.listed).count(),
            subscriptions: self.subscriptions.iter().filter(|s| !s.id.is_empty()).count(),
            limits,
            shared_data_bytes_max: memory.store_bytes(),
            memory,
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
