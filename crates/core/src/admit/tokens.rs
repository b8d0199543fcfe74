//! The token steps of `admit` for operations that carry tokens (LLM calls): the body read and
//! bounded before the limits decide, and the reservation settled when the response ends.

use super::counting::Counting;
use super::events::{Event, Events};
use super::identify::Identity;
use super::request::Request;
use crate::limits::tokens::{TokenCharge, TokenPlan};
use crate::limits::{self, Ctx, Store};
use crate::model::{Gateway, TokenLimit};
use crate::reply::Reply;
use crate::tokens::{inspect, TokenUsage};

/// What an admitted call that carries tokens takes upstream and keeps until it ends.
#[derive(Debug)]
pub struct TokenForward {
    /// The body to send instead of the client's (a completion bound or a usage request added).
    pub body: Option<Vec<u8>>,
    pub stream: bool,
    pub metered: Metered,
}

/// What the end of a metered call needs: who to settle, and what was reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metered {
    pub sub: u32,
    pub api: u16,
    /// `None`: no token limit applies; the call is only metered.
    pub charge: Option<TokenCharge>,
}

/// The token limits of a call: the product's, then the API's.
pub fn token_limits(gw: &Gateway, product: u32, api: u16) -> [Option<&TokenLimit>; 2] {
    let p = gw.products.get(product as usize).and_then(|p| p.token_limit.as_ref());
    let a = gw.apis.get(usize::from(api)).and_then(|a| a.token_limit.as_ref());
    [p, a]
}

pub(super) enum Step<'g> {
    /// The body is not read yet: the host holds the request and judges it again with it.
    ReadBody,
    Refuse(Reply, Event),
    /// The plan for the limits, and the body to forward.
    Go(TokenPlan<'g>, Option<Vec<u8>>, bool),
}

/// Reads and bounds the body of a call whose operation carries tokens.
pub(super) fn bound<'g>(gw: &'g Gateway, id: &Identity<'g, '_>, req: &Request<'_>) -> Step<'g> {
    let Some(op) = id.op.tokens else { return Step::Go(TokenPlan::default(), None, false) };
    let Some(body) = req.body else { return Step::ReadBody };
    if body.len() > gw.settings.max_request_body_bytes as usize {
        return Step::Refuse(body_too_large(gw.settings.max_request_body_bytes), Event::BadBody);
    }
    let limits = token_limits(gw, id.sub.product, id.api_index);
    let default_max = limits.iter().flatten().map(|t| t.default_max_completion_tokens).min();
    let t = match inspect(op, body, default_max) {
        Ok(t) => t,
        Err(r) => return Step::Refuse(r, Event::BadBody),
    };
    // APIM estimates the prompt of a stream whatever `estimate_prompt_tokens` says.
    let estimate = t.stream || limits.iter().flatten().any(|l| l.estimate_prompt_tokens);
    let cost = t.completion_bound.saturating_add(if estimate { t.prompt_bound } else { 0 });
    for l in limits.iter().flatten() {
        let most = l.tokens_per_minute.into_iter().chain(l.quota.map(|q| q.0)).min().unwrap_or(u64::MAX);
        if cost > most {
            let msg = format!("This request may use up to {cost} tokens, more than its token limit of {most} allows at once.");
            return Step::Refuse(Reply::json(400, &msg), Event::BadBody);
        }
    }
    Step::Go(TokenPlan { limits, cost }, t.body, t.stream)
}

/// 413 for a body over `max_request_body_bytes` (the host answers it as soon as the body
/// passes the size, without holding more).
pub fn body_too_large(max: u32) -> Reply {
    Reply::json(413, &format!("The request body is larger than {max} bytes."))
}

/// Settles a finished call's reservation to the usage its backend reported. Without a usage
/// (a backend error, a cut stream) the whole reservation stays charged: never less than the
/// call can have produced.
pub fn settle(gw: &Gateway, m: &Metered, usage: Option<TokenUsage>, now_ms: u64, store: &mut dyn Store) -> Events {
    let mut events = Events::default();
    let (Some(charge), Some(usage)) = (m.charge, usage) else { return events };
    let Some(sub) = gw.subscriptions.get(m.sub as usize) else { return events };
    let plan = TokenPlan { limits: token_limits(gw, sub.product, m.api), cost: charge.reserved };
    let mut store = Counting { inner: store, created: 0 };
    let mut ctx = Ctx { store: &mut store, now_ms, max_retries: gw.settings.max_cas_retries, counter_slots: gw.settings.counter_slots };
    if limits::settle_tokens(&sub.record_key, &plan, &charge, usage.total, &mut ctx).is_err() {
        events.add(Event::StoreFailure, 1);
    }
    events.add(Event::StoreKeysCreated, store.created);
    events
}

/// `tokens_consumed_header` of the call's limits, with the tokens it consumed.
pub fn consumed_headers(gw: &Gateway, m: &Metered, usage: TokenUsage) -> Vec<(String, String)> {
    limits_of(gw, m).iter().flatten().filter_map(|l| l.tokens_consumed_header.clone()).map(|h| (h, usage.total.to_string())).collect()
}

/// Whether a limit of the call names a `tokens_consumed_header` (its response is then held to
/// add it, where the host can).
pub fn says_consumed(gw: &Gateway, m: &Metered) -> bool {
    limits_of(gw, m).iter().flatten().any(|l| l.tokens_consumed_header.is_some())
}

fn limits_of<'g>(gw: &'g Gateway, m: &Metered) -> [Option<&'g TokenLimit>; 2] {
    let product = gw.subscriptions.get(m.sub as usize).map_or(u32::MAX, |s| s.product);
    token_limits(gw, product, m.api)
}
