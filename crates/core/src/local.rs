//! Local endpoints: requests the gateway answers itself from the model, like an APIM error. Never forwarded,
//! never counted as API calls, never touching a subscription's limits. This is their contract with a
//! host ([`LocalHost`]) and what every endpoint shares; the endpoints themselves are crates above the
//! core (`mlgate-portal`, `mlgate-admin`), and `mlgate-envoy` routes a request to them.

use crate::admit::Request;
use crate::limits::Store;
use crate::reply::Reply;

/// What local endpoints may read from the host: the limit store (read-only use: they never
/// count) and the usage metrics (the admin reports).
pub trait LocalHost {
    fn store(&mut self) -> &mut dyn Store;
    /// The current value of usage metric `index` of usage slot `slot` (a counter or a gauge,
    /// see [`crate::usage`]); `None` if the host has no such metric.
    fn metric(&mut self, slot: u32, index: usize) -> Option<u64>;
}

/// Whether `path` (a request's `:path`, query included) is `prefix` or below it: the next
/// byte after the prefix is the end, '/' or '?'. `/developer` is under `/developer`, but
/// `/developers` is not.
pub fn under(path: &[u8], prefix: &str) -> bool {
    path.starts_with(prefix.as_bytes()) && matches!(path.get(prefix.len()), None | Some(b'/' | b'?'))
}

/// The part of the request path below `prefix` (without the query), or APIM-style 405 for
/// anything but GET and HEAD: local endpoints only read.
pub fn below<'r>(req: &Request<'r>, prefix: &str) -> Result<&'r [u8], Reply> {
    if req.method != b"GET" && req.method != b"HEAD" {
        return Err(Reply::json(405, "Method not allowed").with_header("allow", "GET, HEAD".to_string()));
    }
    let path = match req.path.iter().position(|&b| b == b'?') {
        Some(i) => req.path.get(..i).unwrap_or_default(),
        None => req.path,
    };
    Ok(path.get(prefix.len()..).unwrap_or_default())
}

/// Adds the security headers every local page carries, with the page's own CSP. `private`:
/// never stored by any cache.
pub fn secure(mut r: Reply, csp: &str, private: bool) -> Reply {
    r.headers.push(("content-security-policy".into(), csp.into()));
    r.headers.push(("x-content-type-options".into(), "nosniff".into()));
    r.headers.push(("x-frame-options".into(), "DENY".into()));
    r.headers.push(("referrer-policy".into(), "no-referrer".into()));
    r.headers.push(("cache-control".into(), if private { "no-store" } else { "no-cache" }.into()));
    r
}
