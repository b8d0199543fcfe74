//! What `admit` hands back: the outcome the host applies, and the events it counts.

use super::events::Events;
use super::identify::Identity;
use crate::limits::Grant;
use crate::model::Gateway;
use crate::reply::Reply;

/// What the host must do with a request.
pub enum Outcome<'g, 'r> {
    /// Answer now; nothing goes upstream.
    Reply(Reply),
    /// Outside every API and the operator lets such requests through: remove the client's
    /// copies of the identity headers (listed here only when present), change nothing else.
    PassThrough { strip: [Option<&'g str>; 2] },
    /// Authenticated, matched and within limits: rewrite and send upstream.
    Forward(Forward<'g, 'r>),
    /// The operation carries tokens and the body is not read yet: read the whole body (at most
    /// `max_request_body_bytes`) and judge the request again with it. Nothing was counted.
    ///
    /// The forward is the rewrite of the request's headers (key checked, credential, path),
    /// without limits decided. A host that can hold the headers while it reads the body (the
    /// dynamic module: Envoy's `StopIteration`) holds them and applies the second judgement's
    /// outcome whole. The Wasm host cannot (proxy-wasm turns a stopped header callback into
    /// "stop everything", body callbacks included), so it sends these headers on now and holds
    /// the body: the second judgement then releases the body (perhaps rewritten) or refuses
    /// the call, which resets the upstream request before any body reached it.
    ReadBody(Forward<'g, 'r>),
}

/// The outcome and the events to count, whatever the outcome.
pub struct Admission<'g, 'r> {
    pub outcome: Outcome<'g, 'r>,
    pub events: Events,
}

/// An admitted request: who called what, and what changes on its way up and back.
pub struct Forward<'g, 'r> {
    pub identity: Identity<'g, 'r>,
    /// The upstream `:path`: suffix removed, subscription key removed from the query.
    pub upstream_path: Vec<u8>,
    /// The limits' grant: response headers, and whether body bytes must be counted.
    pub grant: Grant,
    /// For an operation that carries tokens: the body to send and what to settle at the end.
    pub tokens: Option<Box<super::tokens::TokenForward>>,
}

impl Forward<'_, '_> {
    /// Response headers to add: `RateLimit-*` (unless turned off) and APIM's optional
    /// remaining/total headers.
    pub fn response_headers(&self, gw: &Gateway) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if gw.settings.rate_limit_headers {
            if let Some(s) = self.grant.rate_limit {
                out.extend(s.headers().into_iter().map(|(k, v)| (k.to_string(), v)));
            }
        }
        out.extend(self.grant.headers.iter().cloned());
        out
    }
}
