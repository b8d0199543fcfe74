//! `token_limit` (APIM's `llm-token-limit`) and the `tokens` kind of an operation, compiled.

use super::common::{is_header_name, ConfigError};
use super::schema::RawTokenLimit;
use crate::model::{QuotaPeriod, TokenLimit, TokenOp};
use crate::tokens::MAX_COMPLETION_TOKENS;

/// The largest `tokens_per_minute` or `token_quota`.
pub const MAX_TOKENS: u64 = 1 << 50;

pub(super) fn token_op(name: &str, field: &str) -> Result<TokenOp, ConfigError> {
    match name {
        "chat" => Ok(TokenOp::Chat),
        "completions" => Ok(TokenOp::Completions),
        "embeddings" => Ok(TokenOp::Embeddings),
        _ => Err(ConfigError::new(field, "expected \"chat\", \"completions\" or \"embeddings\"")),
    }
}

pub(super) fn token_limit(t: RawTokenLimit, id: String, field: &str) -> Result<TokenLimit, ConfigError> {
    let f = |name: &str| format!("{field}.{name}");
    let bounded = |v: Option<u64>, name: &str| match v {
        Some(n) if n == 0 || n > MAX_TOKENS => Err(ConfigError::new(f(name), format!("must be 1..={MAX_TOKENS}"))),
        v => Ok(v),
    };
    let tokens_per_minute = bounded(t.tokens_per_minute, "tokens_per_minute")?;
    let quota = match (bounded(t.token_quota, "token_quota")?, t.token_quota_period.as_deref()) {
        (None, None) => None,
        (Some(q), Some(p)) => Some((
            q,
            period(p).ok_or_else(|| {
                ConfigError::new(f("token_quota_period"), "expected \"hourly\", \"daily\", \"weekly\", \"monthly\" or \"yearly\"")
            })?,
        )),
        (Some(_), None) => return Err(ConfigError::new(f("token_quota_period"), "required with token_quota")),
        (None, Some(_)) => return Err(ConfigError::new(f("token_quota"), "required with token_quota_period")),
    };
    if tokens_per_minute.is_none() && quota.is_none() {
        return Err(ConfigError::new(field, "give tokens_per_minute, token_quota (with token_quota_period) or both"));
    }
    if t.default_max_completion_tokens == 0 || t.default_max_completion_tokens > MAX_COMPLETION_TOKENS {
        return Err(ConfigError::new(f("default_max_completion_tokens"), format!("must be 1..={MAX_COMPLETION_TOKENS}")));
    }
    let header = |name: &str, v: Option<String>| -> Result<Option<String>, ConfigError> {
        match v {
            Some(h) if !is_header_name(&h) => Err(ConfigError::new(f(name), "not a valid HTTP header name")),
            v => Ok(v.map(|h| h.to_ascii_lowercase())),
        }
    };
    Ok(TokenLimit {
        quota_id: format!("{id}/q"),
        id,
        tokens_per_minute,
        quota,
        estimate_prompt_tokens: t.estimate_prompt_tokens,
        default_max_completion_tokens: t.default_max_completion_tokens,
        remaining_tokens_header: header("remaining_tokens_header", t.remaining_tokens_header)?,
        remaining_quota_tokens_header: header("remaining_quota_tokens_header", t.remaining_quota_tokens_header)?,
        tokens_consumed_header: header("tokens_consumed_header", t.tokens_consumed_header)?,
        retry_after_header: header("retry_after_header", t.retry_after_header)?,
    })
}

fn period(p: &str) -> Option<QuotaPeriod> {
    Some(match p.to_ascii_lowercase().as_str() {
        "hourly" => QuotaPeriod::Hourly,
        "daily" => QuotaPeriod::Daily,
        "weekly" => QuotaPeriod::Weekly,
        "monthly" => QuotaPeriod::Monthly,
        "yearly" => QuotaPeriod::Yearly,
        _ => return None,
    })
}
