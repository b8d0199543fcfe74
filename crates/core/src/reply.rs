//! The responses mlgate writes itself, byte for byte as APIM's gateway writes them:
//! `application/json` bodies of the form `{ "statusCode": 401, "message": "..." }`.

use crate::model::Api;

pub const MISSING_KEY: &str =
    "Access denied due to missing subscription key. Make sure to include subscription key when making requests to an API.";
pub const INVALID_KEY: &str = "Access denied due to invalid subscription key. Make sure to provide a valid key for an active subscription.";
pub const NOT_FOUND: &str = "Resource not found";

/// A local reply: status, content type, extra headers, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    /// `application/json` for APIM's errors; local endpoints (portal, admin) set their own.
    pub content_type: &'static str,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// A gzip-compressed body embedded in the `.wasm` (the portal's script and style sheet),
    /// sent instead of `body` with `content-encoding: gzip`.
    pub gzip_body: Option<&'static [u8]>,
}

impl Reply {
    pub fn json(status: u16, message: &str) -> Reply {
        let mut body = String::with_capacity(message.len() + 40);
        body.push_str("{ \"statusCode\": ");
        body.push_str(&status.to_string());
        body.push_str(", \"message\": ");
        crate::json::push_str(&mut body, message);
        body.push_str(" }");
        Reply { status, content_type: "application/json", headers: Vec::new(), body, gzip_body: None }
    }

    pub fn with_header(mut self, name: &str, value: String) -> Reply {
        self.headers.push((name.to_string(), value));
        self
    }
}

pub fn not_found() -> Reply {
    Reply::json(404, NOT_FOUND)
}

pub fn invalid_key() -> Reply {
    Reply::json(401, INVALID_KEY)
}

/// 401 with APIM's `WWW-Authenticate` challenge naming the API's key header.
pub fn missing_key(scheme: &str, authority: &str, api: &Api) -> Reply {
    let scheme = if scheme.is_empty() { "https" } else { scheme };
    let realm = format!("AzureApiManagementKey realm=\"{scheme}://{authority}{}\",name=\"{}\",type=\"header\"", api.prefix, api.key_header);
    Reply::json(401, MISSING_KEY).with_header("www-authenticate", realm)
}

/// No `backend_credentials` entry covers this workspace/service: mlgate will not send the
/// request upstream unauthenticated.
pub fn no_backend_credential() -> Reply {
    Reply::json(500, "No backend credential is configured for this workspace and service.")
}

/// 429 from a rate limit, with `Retry-After` (or the policy's own header name).
pub fn rate_limited(retry_after_secs: u64, header: Option<&str>) -> Reply {
    let msg = format!("Rate limit is exceeded. Try again in {retry_after_secs} seconds.");
    Reply::json(429, &msg).with_header(header.unwrap_or("retry-after"), retry_after_secs.to_string())
}

/// 403 from a quota: calls or bandwidth.
pub fn quota_exceeded(bandwidth: bool, retry_after_secs: u64) -> Reply {
    let what = if bandwidth { "bandwidth" } else { "call volume" };
    let msg = format!("Out of {what} quota. Quota will be replenished in {}.", crate::time::timespan(retry_after_secs));
    Reply::json(403, &msg).with_header("retry-after", retry_after_secs.to_string())
}

/// 429 from a token limit's tokens per minute: APIM's `llm-token-limit` wording (as its
/// gateways answer; the policy reference names only the status).
pub fn token_limited(retry_after_secs: u64, header: Option<&str>) -> Reply {
    let msg = format!("Token limit is exceeded. Try again in {retry_after_secs} seconds.");
    Reply::json(429, &msg).with_header(header.unwrap_or("retry-after"), retry_after_secs.to_string())
}

/// 403 from a token quota: "Token quota is exceeded. Try again in 21 minutes and 33 seconds."
pub fn token_quota_exceeded(retry_after_secs: u64, header: Option<&str>) -> Reply {
    let msg = format!("Token quota is exceeded. Try again in {}.", crate::time::wait_words(retry_after_secs));
    Reply::json(403, &msg).with_header(header.unwrap_or("retry-after"), retry_after_secs.to_string())
}

/// 503 when the shared counters could not be updated and `failure_mode` is `deny`.
pub fn limits_unavailable() -> Reply {
    Reply::json(503, "Service unavailable: rate limit state could not be updated. Try again later.")
}

/// 500 when the gateway cannot do its job for a request (no valid configuration, or the host
/// refused the rewrite): fail closed, never forward.
pub fn internal_error() -> Reply {
    Reply::json(500, "Internal server error")
}

/// A client's `Host`, reduced to the characters a host may have, for text mlgate echoes back
/// (the 401 challenge's realm, the portal's base URLs): nothing else may pass.
pub fn host_chars(authority: &[u8]) -> String {
    authority.iter().filter(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(b)).map(|&b| char::from(b)).collect()
}
