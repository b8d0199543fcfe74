//! Token limits over the protocol, both sides: the reservation travels with the check, the
//! charge comes back in the answer, and the settle is a request of its own.
//!
//! - **Check**: after the call limits' descriptors, one per token limit of the call (the
//!   product's, then the API's): `limit` = `tp:<product>` / `ta:<api>`, `subscription`, and
//!   descriptor `hits_addend` = the tokens reserved (the call's bound). The service decides
//!   them with the call limits in the one write of the subscription record, as locally.
//! - **Answer**: a token descriptor's `OK` status carries the charge in `current_limit.name`
//!   (the field the answer already uses for mlgate's markers):
//!   `<admitted_ms>:<quota_period>:<remaining_tokens>:<remaining_quota_tokens>` (the time the
//!   service counted the call, the start of the quota period it counted in, 0 without a
//!   quota, and what the limit's `remaining_*_header`s say, empty if not configured);
//!   `requests_per_unit` is the limit (tokens per minute, else the quota). `OVER_LIMIT` names
//!   `tokens_per_minute` (429) or `token_quota` (403), `duration_until_reset` the wait.
//! - **Settle** (when the response ends, if the usage differs from the reservation): one
//!   descriptor per token limit: `limit`, `subscription`, `settle` =
//!   `<admitted_ms>:<quota_period>:<reserved>` (from the answer), `hits_addend` = the tokens
//!   the backend reported. The service settles with the core's `limits::settle_tokens`; the
//!   answer only says whether it was applied (without it the reservation stays charged).

use super::names::{KEY_LIMIT, KEY_SETTLE, KEY_SUBSCRIPTION, TOKEN_QUOTA, TOKEN_RATE};
use super::wire::{self, CurrentLimit, Status, CODE_OK, CODE_OVER_LIMIT, UNIT_MINUTE, UNIT_UNKNOWN};
use mlgate_core::admit::tokens::{token_limits, Metered};
use mlgate_core::limits::tokens::{TokenCharge, TokenPlan};
use mlgate_core::limits::{DenialKind, Verdict};
use mlgate_core::model::{Gateway, TokenLimit};
use mlgate_core::{reply, RlsSettings};

/// The check's token descriptors (after the call limits').
pub(crate) fn check_descriptors(enc: &mut wire::RequestEncoder, tokens: &TokenPlan<'_>, subscription: &str) {
    for tl in tokens.limits.iter().flatten() {
        enc.descriptor(&[(KEY_LIMIT, &tl.id), (KEY_SUBSCRIPTION, subscription)], Some(tokens.cost));
    }
}

/// The denial of token limit `tl` (`name`: its status's `current_limit.name`).
pub(crate) fn denied(tl: &TokenLimit, name: Option<&str>, secs: u64) -> Verdict {
    let retry = tl.retry_after_header.as_deref();
    if name == Some(TOKEN_QUOTA) {
        Verdict::Deny(DenialKind::TokenQuota, reply::token_quota_exceeded(secs, retry))
    } else {
        Verdict::Deny(DenialKind::TokenRate, reply::token_limited(secs, retry))
    }
}

/// The charge of an admitted call from its token statuses (in `tokens.limits` order), and the
/// token headers it answers with. `None`: a status without a charge (not mlgate-rls's answer).
pub(crate) fn charge_of(tokens: &TokenPlan<'_>, statuses: &[Status], headers: &mut Vec<(String, String)>) -> Option<TokenCharge> {
    let mut charge = TokenCharge { admitted_ms: 0, reserved: tokens.cost, quota_periods: [0; 2] };
    let mut statuses = statuses.iter();
    for (tl, period) in tokens.limits.iter().zip(charge.quota_periods.iter_mut()) {
        let Some(tl) = tl else { continue };
        let name = &statuses.next().filter(|s| s.code == CODE_OK)?.current_limit.as_ref()?.name;
        let [admitted, counted_in, left, quota_left] = fields(name)?;
        charge.admitted_ms = admitted?;
        *period = counted_in?;
        for (h, v) in [(&tl.remaining_tokens_header, left), (&tl.remaining_quota_tokens_header, quota_left)] {
            if let (Some(h), Some(v)) = (h, v) {
                headers.push((h.clone(), v.to_string()));
            }
        }
    }
    Some(charge)
}

/// A charge's `:`-separated decimal fields (`None` where empty), read by hand (`str::split`
/// and `parse` cost the Wasm filter more). `None`: anything else in it.
fn fields(s: &str) -> Option<[Option<u64>; 4]> {
    let mut out = [None; 4];
    let (mut i, mut digits) = (0, 0);
    for &b in s.as_bytes() {
        if b == b':' {
            (i, digits) = (i + 1, 0);
            continue;
        }
        let d = b.checked_sub(b'0').filter(|d| *d < 10 && digits < 19)?;
        digits += 1;
        let o = out.get_mut(i)?;
        // 19 digits never overflow a u64.
        *o = Some(o.unwrap_or(0u64).wrapping_mul(10).wrapping_add(u64::from(d)));
    }
    Some(out)
}

/// The `RateLimitRequest` that settles a finished call's reservation to `actual` tokens.
/// `None`: nothing to settle (no reservation, or the usage is what was reserved).
pub fn settle_request(settings: &RlsSettings, gw: &Gateway, m: &Metered, actual: u64) -> Option<Vec<u8>> {
    let charge = m.charge.filter(|c| c.reserved != actual)?;
    let sub = gw.subscriptions.get(m.sub as usize)?;
    let mut enc = wire::RequestEncoder::new(&settings.domain);
    for (tl, period) in token_limits(gw, sub.product, m.api).iter().zip(charge.quota_periods) {
        if let Some(tl) = tl {
            let settle = format!("{}:{period}:{}", charge.admitted_ms, charge.reserved);
            enc.descriptor(&[(KEY_LIMIT, &tl.id), (KEY_SUBSCRIPTION, &sub.id), (KEY_SETTLE, &settle)], Some(actual));
        }
    }
    Some(enc.finish(0))
}

/// A settle descriptor's `settle` entry: (admitted_ms, quota_period, reserved).
pub(crate) fn parse_settle(v: &str) -> Option<(u64, u64, u64)> {
    let mut p = v.split(':').map(|p| p.parse::<u64>().ok());
    let out = (p.next()??, p.next()??, p.next()??);
    p.next().is_none().then_some(out)
}

fn clamp32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// What a token limit's status reports: tokens per minute, else its quota.
fn limit(tl: &TokenLimit, name: String) -> CurrentLimit {
    let unit = if tl.tokens_per_minute.is_some() { UNIT_MINUTE } else { UNIT_UNKNOWN };
    CurrentLimit { name, requests_per_unit: clamp32(tl.tokens_per_minute.or(tl.quota.map(|q| q.0)).unwrap_or(0)), unit }
}

/// Each token limit's remaining tokens and remaining quota tokens, as its configured headers
/// say: `limits::check_at` adds them last, per limit in order (tokens, then quota).
fn left<'h>(tokens: &TokenPlan<'_>, headers: &'h [(String, String)]) -> [[Option<&'h str>; 2]; 2] {
    let wanted = |tl: &TokenLimit| {
        [
            tl.tokens_per_minute.is_some() && tl.remaining_tokens_header.is_some(),
            tl.quota.is_some() && tl.remaining_quota_tokens_header.is_some(),
        ]
    };
    let k: usize = tokens.limits.iter().flatten().map(|tl| wanted(tl).iter().filter(|w| **w).count()).sum();
    let mut tail = headers.iter().skip(headers.len().saturating_sub(k)).map(|(_, v)| v.as_str());
    let mut out = [[None; 2]; 2];
    for (tl, o) in tokens.limits.iter().zip(out.iter_mut()) {
        let Some(tl) = tl else { continue };
        for (w, slot) in wanted(tl).iter().zip(o.iter_mut()) {
            if *w {
                *slot = tail.next();
            }
        }
    }
    out
}

/// The `OK` statuses of an admitted call's token descriptors, by slot (product 0, API 1).
pub(crate) fn ok_statuses(tokens: &TokenPlan<'_>, charge: &TokenCharge, headers: &[(String, String)]) -> [Option<Status>; 2] {
    let left = left(tokens, headers);
    let mut out = [None, None];
    for (slot, ((tl, o), [t, q])) in tokens.limits.iter().zip(out.iter_mut()).zip(left).enumerate() {
        let Some(tl) = tl else { continue };
        let period = charge.quota_periods.get(slot).copied().unwrap_or(0);
        let name = format!("{}:{period}:{}:{}", charge.admitted_ms, t.unwrap_or(""), q.unwrap_or(""));
        *o = Some(Status { code: CODE_OK, current_limit: Some(limit(tl, name)), limit_remaining: 0, reset_ms: None });
    }
    out
}

/// Which token limit (slot) denied, from the denial: the first with the part that denies,
/// preferring one whose retry header the reply carries (`limits::check_at` does not say).
pub(crate) fn denied_slot(tokens: &TokenPlan<'_>, kind: DenialKind, retry_header: Option<&str>) -> Option<usize> {
    let has = |tl: &TokenLimit| if kind == DenialKind::TokenQuota { tl.quota.is_some() } else { tl.tokens_per_minute.is_some() };
    let named = |tl: &TokenLimit| tl.retry_after_header.as_deref().unwrap_or("retry-after") == retry_header.unwrap_or("retry-after");
    let slots = || tokens.limits.iter().enumerate().filter_map(|(i, tl)| tl.filter(|t| has(t)).map(|t| (i, t)));
    slots().find(|(_, t)| named(t)).or_else(|| slots().next()).map(|(i, _)| i)
}

/// The `OVER_LIMIT` status of the token limit that denied.
pub(crate) fn over_status(tl: &TokenLimit, kind: DenialKind, secs: u64) -> Status {
    let name = if kind == DenialKind::TokenQuota { TOKEN_QUOTA } else { TOKEN_RATE };
    Status {
        code: CODE_OVER_LIMIT,
        current_limit: Some(limit(tl, name.to_string())),
        limit_remaining: 0,
        reset_ms: Some(secs.saturating_mul(1000)),
    }
}
