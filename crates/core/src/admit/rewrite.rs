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
    /// The complete upstream header list for a forwarded request: the client's headers in
    /// order, minus the subscription key and any client copies of `authorization` and the
    /// identity headers, with `:path` and `:authority` rewritten, then the backend key and the
    /// caller's identity. The definition the hosts' [`Forward::upstream_edits`] are tested
    /// against (no host sets a whole list), so built for tests only.
    /// For a call that carries tokens, `accept-encoding` goes too (mlgate reads the usage in
    /// the response, so it must not come compressed), and `content-length` (its body may be
    /// rewritten after these headers went on: Envoy frames whatever body follows).
    #[cfg(any(test, feature = "testkit"))]
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

/// One change to the client's request headers, one host call each (names as the
/// configuration spells them; Envoy lower-cases them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit<'a> {
    /// The name is not there: add it.
    Add(&'a [u8], &'a [u8]),
    /// The name is there once: its value replaced.
    Replace(&'a [u8], &'a [u8]),
    /// Every value of the name removed.
    Remove(&'a [u8]),
}

impl Forward<'_, '_> {
    /// The upstream request of [`Forward::upstream_headers`], as the few changes that make it
    /// from the client's headers: `:path` and `:authority` replaced, the key and any client
    /// copies of the credential and identity headers removed, then the backend key and the
    /// caller's identity set, each ending with exactly one value. Five or six host calls
    /// instead of rewriting the whole map (issue 20), and no list compared with another.
    pub fn upstream_edits<'a>(&'a self, gw: &'a Gateway, req: &'a Request<'_>, out: &mut Vec<Edit<'a>>) {
        let s = &gw.settings;
        let id = &self.identity;
        let api = id.api;
        let count = |name: &[u8]| req.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).count();
        // What the backend gets set (a keyless call of an open product has no subscription id,
        // a subscription scoped to APIs no product: no header rather than an empty one).
        let sets: [Option<(&'a [u8], &'a [u8])>; 3] = [
            Some((id.credential.header.as_bytes(), id.credential.value.as_bytes())),
            (!id.sub.id.is_empty()).then_some((s.subscription_id_header.as_bytes(), id.sub.id.as_bytes())),
            (!id.product.id.is_empty()).then_some((s.product_id_header.as_bytes(), id.product.id.as_bytes())),
        ];
        let is_set = |name: &[u8]| sets.iter().flatten().any(|(n, _)| n.eq_ignore_ascii_case(name));
        for (name, value) in [(b":path".as_slice(), self.upstream_path.as_slice()), (b":authority", api.service_authority.as_bytes())] {
            if req.headers.iter().find(|(k, _)| *k == name).is_some_and(|(_, v)| *v != value) {
                out.push(Edit::Replace(name, value));
            }
        }
        let metered: [&'a [u8]; 2] = [b"accept-encoding", b"content-length"];
        let stripped: [&'a [u8]; 5] = [
            b"authorization",
            id.credential.header.as_bytes(),
            api.key_header_lc.as_bytes(),
            s.subscription_id_header.as_bytes(),
            s.product_id_header.as_bytes(),
        ];
        let removed = stripped.into_iter().chain(metered.into_iter().filter(|_| self.tokens.is_some()));
        for (i, name) in removed.enumerate() {
            let first = !stripped.iter().chain(&metered).take(i).any(|n| n.eq_ignore_ascii_case(name));
            if first && !is_set(name) && count(name) > 0 {
                out.push(Edit::Remove(name));
            }
        }
        for (name, value) in sets.into_iter().flatten() {
            match count(name) {
                0 => out.push(Edit::Add(name, value)),
                1 => out.push(Edit::Replace(name, value)),
                _ => {
                    out.push(Edit::Remove(name));
                    out.push(Edit::Add(name, value));
                }
            }
        }
    }
}
