//! What goes upstream: the API suffix stripped, the subscription key removed from the query
//! and the headers, the client's `Authorization` and identity headers replaced by the
//! backend key and the gateway's own identity.

use super::outcome::Forward;
use super::request::Request;
use crate::model::{Api, Gateway};

/// `service_url`'s path + the path under the API suffix + the query without the key.
pub(super) fn upstream_path(api: &Api, rest: &str, query: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(api.service_base_path.len() + rest.len() + query.len() + 1);
    out.extend_from_slice(api.service_base_path.as_bytes());
    out.extend_from_slice(rest.as_bytes());
    let mut first = true;
    for pair in query.split(|&b| b == b'&') {
        if pair.is_empty() {
            continue;
        }
        let name = pair.split(|&b| b == b'=').next().unwrap_or(pair);
        if name == api.key_query.as_bytes() {
            continue;
        }
        out.push(if first { b'?' } else { b'&' });
        out.extend_from_slice(pair);
        first = false;
    }
    out
}

impl Forward<'_, '_> {
    /// The complete upstream header list for a forwarded request, to be set in one host
    /// call: the client's headers in order, minus the subscription key and any client copies
    /// of `authorization` and the identity headers, with `:path` and `:authority` rewritten,
    /// then the backend key and the caller's identity.
    /// For a call that carries tokens, `accept-encoding` goes too (mlgate reads the usage in
    /// the response, so it must not come compressed), and `content-length` (its body may be
    /// rewritten after these headers went on: Envoy frames whatever body follows).
    pub fn upstream_headers<'a>(&'a self, gw: &'a Gateway, req: &'a Request<'_>, out: &mut Vec<(&'a [u8], &'a [u8])>) {
        let s = &gw.settings;
        let id = &self.identity;
        let api = id.api;
        let metered = self.tokens.is_some();
        for (k, v) in req.headers {
            let value: &[u8] = match *k {
                b":path" => &self.upstream_path,
                b":authority" => api.service_authority.as_bytes(),
                b"accept-encoding" if metered => continue,
                b"content-length" if metered => continue,
                _ if k.eq_ignore_ascii_case(b"authorization")
                    || k.eq_ignore_ascii_case(id.credential.header.as_bytes())
                    || k.eq_ignore_ascii_case(api.key_header_lc.as_bytes())
                    || k.eq_ignore_ascii_case(s.subscription_id_header.as_bytes())
                    || k.eq_ignore_ascii_case(s.product_id_header.as_bytes()) =>
                {
                    continue
                }
                _ => v,
            };
            out.push((k, value));
        }
        out.push((id.credential.header.as_bytes(), id.credential.value.as_bytes()));
        // A keyless call of an open product has no subscription id, a subscription scoped to
        // APIs no product: the backend gets no header rather than an empty one.
        if !id.sub.id.is_empty() {
            out.push((s.subscription_id_header.as_bytes(), id.sub.id.as_bytes()));
        }
        if !id.product.id.is_empty() {
            out.push((s.product_id_header.as_bytes(), id.product.id.as_bytes()));
        }
    }
}
