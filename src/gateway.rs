//! Where a request is judged and its rewrite planned: [`Gateway::evaluate`] takes the
//! request line and headers and returns a [`Decision`]: an APIM error reply, a pass-through,
//! or a [`Forward`] carrying everything the host must change before the request goes
//! upstream. Pure: no clock, no shared data, no host calls.

use crate::config::{Api, Gateway, Product, Subscription, SubscriptionState, Unmatched};
use crate::keys::percent_decode;
use crate::reply::{self, Reply};
use crate::route::Operation;

/// What the host hands over: pseudo-headers plus the full header list (lower-case names, as
/// Envoy delivers them).
pub struct Request<'r> {
    pub method: &'r str,
    pub path: &'r str,
    pub scheme: &'r str,
    pub authority: &'r str,
    pub headers: &'r [(String, String)],
}

impl<'r> Request<'r> {
    /// Builds the view from a header list that contains the pseudo-headers.
    pub fn from_headers(headers: &'r [(String, String)]) -> Request<'r> {
        let mut r = Request { method: "", path: "", scheme: "", authority: "", headers };
        for (k, v) in headers {
            match k.as_str() {
                ":method" => r.method = v,
                ":path" => r.path = v,
                ":scheme" => r.scheme = v,
                ":authority" => r.authority = v,
                _ => {}
            }
        }
        r
    }

    pub fn header(&self, lc_name: &str) -> Option<&'r str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(lc_name)).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
pub enum Decision<'g, 'r> {
    /// Answer the client now; nothing goes upstream.
    Reply(Reply),
    /// Outside every API, and the operator asked to let such requests through untouched.
    PassThrough,
    /// Authenticated and matched: limits next, then the rewrite.
    Forward(Forward<'g, 'r>),
}

/// An authenticated, matched request and its upstream rewrite plan.
#[derive(Debug)]
pub struct Forward<'g, 'r> {
    pub api: &'g Api,
    pub op: &'g Operation,
    pub sub_index: u32,
    pub sub: &'g Subscription,
    pub product: &'g Product,
    /// Template parameters (raw, as in the URL).
    pub params: Vec<(&'g str, &'r str)>,
    /// The upstream `:path`: suffix removed, subscription key removed from the query.
    pub upstream_path: String,
    /// The `Authorization` value for the upstream (`Bearer <api key>`). Never log it.
    pub authorization: &'g str,
}

impl Forward<'_, '_> {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }

    /// Template parameters as `name=value&…` (values as they were in the URL).
    pub fn params_query(&self) -> String {
        let mut out = String::with_capacity(64);
        for (k, v) in &self.params {
            push_pair(&mut out, k, v);
        }
        out
    }

    /// The whole match in one string, for the combined filter-state property:
    /// `api=…&operation=…&subscription=…&product=…` followed by the template parameters.
    pub fn metadata(&self) -> String {
        let mut out = String::with_capacity(96);
        let fixed = [("api", &self.api.id), ("operation", &self.op.id), ("subscription", &self.sub.id), ("product", &self.product.id)];
        for (k, v) in fixed {
            push_pair(&mut out, k, v);
        }
        for (k, v) in &self.params {
            push_pair(&mut out, k, v);
        }
        out
    }
}

/// Appends `k=v`, preceded by `&` unless `out` is empty.
fn push_pair(out: &mut String, k: &str, v: &str) {
    if !out.is_empty() {
        out.push('&');
    }
    out.push_str(k);
    out.push('=');
    out.push_str(v);
}

impl Gateway {
    pub fn evaluate<'g, 'r>(&'g self, req: &Request<'r>) -> Decision<'g, 'r> {
        let (path, query) = match req.path.split_once('?') {
            Some((p, q)) => (p, q),
            None => (req.path, ""),
        };
        let Some(api_index) = self.match_api(path) else {
            return match self.settings.unmatched {
                Unmatched::Reject => Decision::Reply(reply::not_found()),
                Unmatched::PassThrough => Decision::PassThrough,
            };
        };
        let api = &self.apis[api_index as usize];
        let rest = &path[api.prefix.len()..];
        let rest = if rest.is_empty() { "/" } else { rest };
        let Some(m) = api.route.find(req.method, rest, query) else {
            return Decision::Reply(reply::not_found());
        };

        // Header first; the query parameter only if the header is absent.
        let presented = match req.header(&api.key_header_lc) {
            Some(v) => Some(std::borrow::Cow::Borrowed(v.trim())),
            None => match crate::route::query_value(query, &api.key_query) {
                Some(raw) => match percent_decode(raw) {
                    Some(v) => Some(v),
                    None => return Decision::Reply(reply::invalid_key()),
                },
                None => None,
            },
        };
        let key = match presented {
            Some(k) if !k.is_empty() => k,
            _ => return Decision::Reply(reply::missing_key(req.scheme, req.authority, api)),
        };
        let Some(sub_index) = self.keys.find(key.as_bytes()) else {
            return Decision::Reply(reply::invalid_key());
        };
        let sub = &self.subscriptions[sub_index as usize];
        let product = &self.products[sub.product as usize];
        if sub.state != SubscriptionState::Active || !product.apis.contains(&api_index) {
            return Decision::Reply(reply::invalid_key());
        }

        let op = &api.route.operations[m.op as usize];
        let find = |name: &str| m.params.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        let Some(cred) = Gateway::credential(api, find("workspace").unwrap_or(""), find("service").unwrap_or("")) else {
            return Decision::Reply(reply::no_backend_credential());
        };

        Decision::Forward(Forward {
            api,
            op,
            sub_index,
            sub,
            product,
            upstream_path: upstream_path(api, rest, query),
            params: m.params,
            authorization: &cred.authorization,
        })
    }

    fn match_api(&self, path: &str) -> Option<u16> {
        self.match_order.iter().copied().find(|&i| {
            let p = &self.apis[i as usize].prefix;
            path.starts_with(p.as_str()) && (path.len() == p.len() || path.as_bytes()[p.len()] == b'/')
        })
    }

    /// The complete upstream header list for a forwarded request, to be set in one host
    /// call: the client's headers in order, minus the subscription key and any client copies
    /// of `authorization` and the identity headers, with `:path` and `:authority` rewritten,
    /// then the backend key and the caller's identity.
    pub fn upstream_headers<'a>(&'a self, req: &'a Request<'_>, fwd: &'a Forward<'_, '_>, out: &mut Vec<(&'a str, &'a str)>) {
        let s = &self.settings;
        let api = fwd.api;
        for (k, v) in req.headers {
            let k = k.as_str();
            let value = match k {
                ":path" => fwd.upstream_path.as_str(),
                ":authority" => api.service_authority.as_str(),
                _ if k.eq_ignore_ascii_case("authorization")
                    || k.eq_ignore_ascii_case(&api.key_header_lc)
                    || k.eq_ignore_ascii_case(&s.subscription_id_header)
                    || k.eq_ignore_ascii_case(&s.product_id_header) =>
                {
                    continue
                }
                _ => v.as_str(),
            };
            out.push((k, value));
        }
        out.push(("authorization", fwd.authorization));
        out.push((s.subscription_id_header.as_str(), fwd.sub.id.as_str()));
        out.push((s.product_id_header.as_str(), fwd.product.id.as_str()));
    }
}

/// `service_url`'s path + the path under the API suffix + the query without the key.
fn upstream_path(api: &Api, rest: &str, query: &str) -> String {
    let mut out = String::with_capacity(api.service_base_path.len() + rest.len() + query.len() + 1);
    out.push_str(&api.service_base_path);
    out.push_str(rest);
    let mut first = true;
    for pair in query.split('&') {
        if pair.is_empty() {
            continue;
        }
        let name = pair.split_once('=').map_or(pair, |(k, _)| k);
        if name == api.key_query {
            continue;
        }
        out.push(if first { '?' } else { '&' });
        out.push_str(pair);
        first = false;
    }
    out
}
