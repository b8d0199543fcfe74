//! The limit policies: `rate_limit` (APIM's `rate-limit` / `rate-limit-by-key`) and `quota`,
//! with their `increment_condition`.

use super::common::{is_header_name, ConfigError, MAX_RATE_LIMIT_CALLS};
use super::schema::{RawCondition, RawQuota, RawRateLimit, RawStatus};
use crate::model::{Api, Counter, Product, Quota, RateLimit, StatusSet};

pub(super) fn rate_limit(rl: RawRateLimit, id: String, field: &str) -> Result<RateLimit, ConfigError> {
    if rl.calls == 0 || rl.calls > MAX_RATE_LIMIT_CALLS {
        return Err(ConfigError::new(format!("{field}.calls"), format!("must be 1..={MAX_RATE_LIMIT_CALLS}")));
    }
    if rl.renewal_period == 0 || rl.renewal_period > 31_536_000 {
        return Err(ConfigError::new(format!("{field}.renewal_period"), "must be 1..=31536000 seconds"));
    }
    let counter = match rl.counter.as_deref() {
        None => Counter::Subscription,
        Some("ip") => Counter::Ip,
        Some(c) => match c.strip_prefix("header:") {
            Some(h) if is_header_name(h) => Counter::Header(h.to_ascii_lowercase()),
            _ => return Err(ConfigError::new(format!("{field}.counter"), "expected \"ip\" or \"header:<name>\"")),
        },
    };
    let header = |f: &str, v: Option<String>| -> Result<Option<String>, ConfigError> {
        match v {
            Some(h) if !is_header_name(&h) => Err(ConfigError::new(format!("{field}.{f}"), "not a valid HTTP header name")),
            v => Ok(v.map(|h| h.to_ascii_lowercase())),
        }
    };
    Ok(RateLimit {
        id,
        calls: rl.calls,
        period_ms: u64::from(rl.renewal_period) * 1000,
        counter,
        remaining_calls_header: header("remaining_calls_header", rl.remaining_calls_header)?,
        total_calls_header: header("total_calls_header", rl.total_calls_header)?,
        retry_after_header: header("retry_after_header", rl.retry_after_header)?,
        increment_condition: condition(rl.increment_condition, field)?,
    })
}

pub(super) fn quota(q: RawQuota, field: &str) -> Result<Quota, ConfigError> {
    if q.calls.is_none() && q.bandwidth_kb.is_none() {
        return Err(ConfigError::new(field, "give calls, bandwidth_kb or both"));
    }
    if q.calls == Some(0) {
        return Err(ConfigError::new(format!("{field}.calls"), "must be at least 1"));
    }
    let bandwidth_bytes = match q.bandwidth_kb {
        None => None,
        Some(kb) => match kb.checked_mul(1024).filter(|b| kb > 0 && *b <= u64::MAX / 2) {
            Some(b) => Some(b),
            None => return Err(ConfigError::new(format!("{field}.bandwidth_kb"), "must be at least 1 and fit in bytes")),
        },
    };
    // 0 is APIM's lifetime quota: the period is infinite.
    if q.renewal_period > 100 * 31_536_000 {
        return Err(ConfigError::new(format!("{field}.renewal_period"), "must be 0 (never renews) or up to 100 years"));
    }
    let increment_condition = condition(q.increment_condition, field)?;
    Ok(Quota { calls: q.calls, bandwidth_bytes, period_ms: q.renewal_period * 1000, increment_condition })
}

/// `"2xx"`, `[200, 201]`, `["2xx", 304]`: the statuses whose calls count. A class is `1xx` to
/// `5xx`; a status is 100..=599. An empty list would count nothing and is refused.
pub(super) fn condition(raw: Option<RawCondition>, field: &str) -> Result<Option<StatusSet>, ConfigError> {
    let field = format!("{field}.increment_condition");
    let Some(RawCondition(items)) = raw else { return Ok(None) };
    if items.is_empty() {
        return Err(ConfigError::new(field, "an empty list would count no call: give statuses or classes like \"2xx\""));
    }
    let mut set = StatusSet::default();
    for item in items {
        match item {
            RawStatus::Code(c @ 100..=599) => set.insert(c),
            RawStatus::Class(c) if c.len() == 3 && c.ends_with("xx") && matches!(c.as_bytes().first(), Some(b'1'..=b'5')) => {
                let hundreds = c.as_bytes().first().map_or(0, |d| u16::from(d - b'0')) * 100;
                (hundreds..hundreds + 100).for_each(|s| set.insert(s));
            }
            _ => return Err(ConfigError::new(field, "expected \"1xx\"..\"5xx\", a status 100..599, or a list of them")),
        }
    }
    Ok(Some(set))
}

/// `increment_condition` gives a call's admission back when its status does not count; the
/// rate limit service protocol has no way to take hits back, so with `limits_store.rls` it is
/// refused rather than counted approximately.
pub(super) fn no_remote_conditions(apis: &[Api], products: &[Product]) -> Result<(), ConfigError> {
    let rate = |rl: &Option<RateLimit>| rl.as_ref().is_some_and(|r| r.increment_condition.is_some());
    let conditional = products.iter().any(|p| rate(&p.rate_limit) || p.quota.as_ref().is_some_and(|q| q.increment_condition.is_some()))
        || apis.iter().any(|a| rate(&a.rate_limit) || a.operations.iter().any(|o| rate(&o.rate_limit)));
    if conditional {
        return Err(ConfigError::new(
            "limits_store",
            "increment_condition is counted in shared data only (the rate limit service cannot take a hit back)",
        ));
    }
    Ok(())
}
