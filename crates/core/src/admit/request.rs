//! The request as a host reads it (hostile bytes), and what a host knows of its connection.

/// The request as the host hands it over: pseudo-headers and every header as raw bytes
/// (lower-case names, as Envoy delivers them). Nothing here is assumed to be UTF-8.
pub struct Request<'r> {
    pub method: &'r [u8],
    pub path: &'r [u8],
    pub scheme: &'r [u8],
    pub authority: &'r [u8],
    pub headers: &'r [(&'r [u8], &'r [u8])],
    /// The whole request body, once read: only for operations that carry tokens, whose
    /// first judgement asks for it ([`super::Outcome::ReadBody`]).
    pub body: Option<&'r [u8]>,
}

impl<'r> Request<'r> {
    /// Builds the view from a header list that contains the pseudo-headers.
    pub fn from_headers(headers: &'r [(&'r [u8], &'r [u8])]) -> Request<'r> {
        let mut r = Request { method: b"", path: b"", scheme: b"", authority: b"", headers, body: None };
        for (k, v) in headers {
            match *k {
                b":method" => r.method = v,
                b":path" => r.path = v,
                b":scheme" => r.scheme = v,
                b":authority" => r.authority = v,
                _ => {}
            }
        }
        r
    }

    /// The first value of a header (`lc_name` lower-case).
    pub fn header(&self, lc_name: &[u8]) -> Option<&'r [u8]> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(lc_name)).map(|(_, v)| *v)
    }
}

/// What the host knows about the downstream connection, asked for only when needed (each
/// answer may cost a host call).
pub trait Connection {
    /// The client address Envoy established (no port), for `counter: "ip"`.
    fn address(&mut self) -> Option<Vec<u8>>;
    /// Whether the downstream connection is TLS (a client header cannot say so).
    fn is_tls(&mut self) -> bool;
}

/// Envoy's `source.address` (`ip:port` or `[v6]:port`) without its port and brackets: what
/// `counter: "ip"` counts. Both hosts read the attribute and hand it here.
pub fn address_without_port(mut a: Vec<u8>) -> Vec<u8> {
    if let Some(i) = a.iter().rposition(|&b| b == b':') {
        if a.get(i + 1..).is_some_and(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit)) {
            a.truncate(i);
        }
    }
    a.retain(|&b| b != b'[' && b != b']');
    a
}
