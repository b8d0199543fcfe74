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
    let counter = counter(rl.counter.as_deref(), field)?;
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

/// `counter`: absent (per subscription), `ip`, or `header:<name>`.
fn counter(c: Option<&str>, field: &str) -> Result<Counter, ConfigError> {
    Ok(match c {
        None => Counter::Subscription,
        Some("ip") => Counter::Ip,
        Some(c) => match c.strip_prefix("header:") {
            Some(h) if is_header_name(h) => Counter::Header(h.to_ascii_lowercase()),
            _ => return Err(ConfigError::new(format!("{field}.counter"), "expected \"ip\" or \"header:<name>\"")),
        },
    })
}

/// APIM's `quota` (per subscription) or `quota-by-key` (with a `counter`), on a product, an
/// API or an operation (`scope`: `p:<product>`, `a:<api>`, `o:<api>/<op>`). A product's quota
/// per subscription keeps the id `q`; the others are `q:<scope>`.
pub(super) fn quota_of(q: RawQuota, scope: String, field: &str) -> Result<Quota, ConfigError> {
    let id = if q.counter.is_none() && scope.starts_with("p:") { "q".to_string() } else { format!("q:{scope}") };
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
    let counter = counter(q.counter.as_deref(), field)?;
    let period_ms = q.renewal_period * 1000;
    let anchor_ms = match (&counter, q.first_period_start.as_deref()) {
        (Counter::Subscription, Some(_)) => {
            return Err(ConfigError::new(
                format!("{field}.first_period_start"),
                "only a quota by key (with a counter) has one; a subscription's quota renews from its start",
            ))
        }
        (_, None) => first_period_anchor(FIRST_PERIOD_START_MS, period_ms),
        (_, Some(t)) => match crate::time::parse_rfc3339_ms(t) {
            Some(ms) => first_period_anchor(i128::from(ms), period_ms),
            None => return Err(ConfigError::new(format!("{field}.first_period_start"), "not an RFC 3339 timestamp at or after 1970")),
        },
    };
    // Bandwidth is counted after the response, per subscription: on the product's own quota.
    if bandwidth_bytes.is_some() && (counter != Counter::Subscription || id != "q") {
        return Err(ConfigError::new(
            format!("{field}.bandwidth_kb"),
            "a bandwidth quota is counted on a product's quota per subscription only",
        ));
    }
    Ok(Quota { id, counter, anchor_ms, calls: q.calls, bandwidth_bytes, period_ms, increment_condition })
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

/// What the remote store does not count, refused rather than counted approximately:
/// `increment_condition` gives a call's admission back when its status does not count, and the
/// rate limit service protocol has no way to take hits back; quotas on APIs and operations or
/// by key, and keyless calls of open products, have no descriptors in it (the remote store
/// counts a product's quota per subscription).
pub(super) fn remote_can_count(apis: &[Api], products: &[Product]) -> Result<(), ConfigError> {
    let rate = |rl: &Option<RateLimit>| rl.as_ref().is_some_and(|r| r.increment_condition.is_some());
    let conditional = products.iter().any(|p| rate(&p.rate_limit) || p.quota.as_ref().is_some_and(|q| q.increment_condition.is_some()))
        || apis.iter().any(|a| rate(&a.rate_limit) || a.operations.iter().any(|o| rate(&o.rate_limit)));
    if conditional {
        return Err(ConfigError::new(
            "limits_store",
            "increment_condition is counted in shared data only (the rate limit service cannot take a hit back)",
        ));
    }
    let scoped = apis.iter().any(|a| a.quota.is_some() || a.operations.iter().any(|o| o.quota.is_some()))
        || products.iter().any(|p| p.quota.as_ref().is_some_and(|q| q.counter != Counter::Subscription));
    if scoped {
        return Err(ConfigError::new("limits_store", "quotas on APIs and operations, and quotas by key, are counted in shared data only"));
    }
    // A keyless call has no subscription id to name in a descriptor.
    if products.iter().any(|p| !p.subscription_required) {
        return Err(ConfigError::new("limits_store", "open products (subscription_required: false) are counted in shared data only"));
    }
    Ok(())
}

/// APIM's default `first-period-start`, 0001-01-01T00:00:00Z, in ms since the Unix epoch.
const FIRST_PERIOD_START_MS: i128 = -62_135_596_800_000;

/// Where the grid of periods from `first` falls, as an offset in [0, period) from the epoch.
fn first_period_anchor(first: i128, period_ms: u64) -> u64 {
    if period_ms == 0 {
        return 0;
    }
    u64::try_from(first.rem_euclid(i128::from(period_ms))).unwrap_or(0)
}
