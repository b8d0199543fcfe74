//! Who is calling what: the API by URL suffix, the scheme the API allows, the operation by
//! URL template ([`crate::route`]), then the subscription key ([`crate::keys`]) and the
//! backend credential. Every failure is APIM's reply for it.

use super::events::Event;
use super::request::{Connection, Request};
use crate::keys::query_decode;
use crate::model::{Api, Credential, Gateway, Operation, Product, Subscription, SubscriptionState, Unmatched};
use crate::reply::{self, Reply};
use crate::route::query_value;
use crate::usage::Matched;

/// A matched, authenticated request.
pub struct Identity<'g, 'r> {
    pub api: &'g Api,
    pub api_index: u16,
    pub op: &'g Operation,
    pub op_index: u16,
    pub sub_index: u32,
    pub sub: &'g Subscription,
    pub product: &'g Product,
    /// Template parameters (raw bytes, as in the URL).
    pub params: Vec<(&'g str, &'r [u8])>,
    /// The backend credential (its header and value, e.g. `Bearer <api key>`). Never log it.
    pub credential: &'g Credential,
    /// The path under the API suffix, and the raw query.
    pub rest: &'r str,
    pub query: &'r [u8],
}

impl Identity<'_, '_> {
    pub fn param(&self, name: &str) -> Option<&[u8]> {
        self.params.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }
}

pub(super) enum Early {
    Reply(Reply, Event),
    PassThrough,
}

fn not_found() -> Early {
    Early::Reply(reply::not_found(), Event::NotFound)
}

fn invalid_key() -> Early {
    Early::Reply(reply::invalid_key(), Event::InvalidKey)
}

/// `matched` is filled in as far as the request gets (the usage slot it counts in).
pub(super) fn identify<'g, 'r>(
    gw: &'g Gateway,
    req: &Request<'r>,
    conn: &mut dyn Connection,
    matched: &mut Matched,
) -> Result<Identity<'g, 'r>, Early> {
    let (path, query) = match req.path.iter().position(|&b| b == b'?') {
        Some(i) => (req.path.get(..i).unwrap_or_default(), req.path.get(i + 1..).unwrap_or_default()),
        None => (req.path, &b""[..]),
    };
    let Some(api_index) = match_api(gw, path) else {
        return Err(match gw.settings.unmatched {
            Unmatched::Reject => not_found(),
            Unmatched::PassThrough => Early::PassThrough,
        });
    };
    let api = gw.apis.get(usize::from(api_index)).ok_or_else(not_found)?;
    matched.api = Some(api_index);
    // The scheme Envoy established for the connection, asked only when the API restricts it.
    if !(api.protocols.http && api.protocols.https) {
        let tls = conn.is_tls();
        if (tls && !api.protocols.https) || (!tls && !api.protocols.http) {
            return Err(not_found());
        }
    }
    // No template matches bytes that are not UTF-8.
    let rest = path.get(api.prefix.len()..).and_then(|r| std::str::from_utf8(r).ok()).ok_or_else(not_found)?;
    let rest = if rest.is_empty() { "/" } else { rest };
    let m = api.route.find(req.method, rest, query).ok_or_else(not_found)?;
    matched.op = Some(m.op);

    // Header first; the query parameter only if the header is absent.
    let presented: std::borrow::Cow<'_, [u8]> = match req.header(api.key_header_lc.as_bytes()) {
        Some(v) => v.trim_ascii().into(),
        None => match query_value(query, api.key_query.as_bytes()) {
            Some(raw) => query_decode(raw),
            None => b"".into(),
        },
    };
    let sub_index = if presented.is_empty() {
        // Without a key: the first open product with this API admits it, as its anonymous
        // subscription.
        let open = gw.products.iter().filter(|p| p.apis.contains(&api_index)).find_map(|p| p.anonymous);
        let Some(anonymous) = open else {
            let scheme = if req.scheme == b"http" { "http" } else { "https" };
            return Err(Early::Reply(reply::missing_key(scheme, &reply::host_chars(req.authority), api), Event::MissingKey));
        };
        anonymous
    } else {
        gw.keys.find(&presented).ok_or_else(invalid_key)?
    };
    let sub = gw.subscriptions.get(sub_index as usize).ok_or_else(invalid_key)?;
    let product = gw.products.get(sub.product as usize).ok_or_else(invalid_key)?;
    if sub.state != SubscriptionState::Active || !product.apis.contains(&api_index) {
        return Err(invalid_key());
    }
    matched.sub = Some(sub_index);

    let op = api.operations.get(usize::from(m.op)).ok_or_else(not_found)?;
    let find = |name: &str| m.params.iter().find(|(k, _)| *k == name).map_or(&b""[..], |(_, v)| *v);
    let Some(cred) = Gateway::credential(api, find("workspace"), find("service")) else {
        return Err(Early::Reply(reply::no_backend_credential(), Event::NotFound));
    };
    Ok(Identity { api, api_index, op, op_index: m.op, sub_index, sub, product, params: m.params, credential: cred, rest, query })
}

/// The API whose URL suffix is the longest prefix of `path` on a segment boundary.
fn match_api(gw: &Gateway, path: &[u8]) -> Option<u16> {
    gw.match_order.iter().copied().find(|&i| {
        let Some(api) = gw.apis.get(usize::from(i)) else { return false };
        let p = api.prefix.as_bytes();
        path.starts_with(p) && matches!(path.get(p.len()), None | Some(b'/'))
    })
}
