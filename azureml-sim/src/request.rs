//! What every request goes through: the API key (a middleware), the workspace and service
//! scope and the api-version, and request bodies read with a bound.

use crate::errors::{bad_argument, not_found, too_large, unauthorized};
use crate::key::{ct_eq, sha256};
use crate::state::{App, Shared};
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use serde_json::Value;

pub async fn auth(State(app): State<Shared>, req: Request, next: Next) -> Response {
    if !bearer_ok(&app, req.headers()) {
        return unauthorized();
    }
    next.run(req).await
}

/// `Bearer <key>`, the scheme in any case (RFC 9110: auth schemes are case-insensitive, and
/// Azure takes `bearer`), one space, the key exactly. The key is neither logged nor echoed;
/// only its digest is compared.
pub fn bearer_ok(app: &App, headers: &HeaderMap) -> bool {
    let given = headers.get("authorization").and_then(|v| bearer_key(v.as_bytes())).map(sha256);
    given.is_some_and(|g| ct_eq(&g, &app.key_digest))
}

/// The key of an `Authorization: Bearer <key>` value.
pub fn bearer_key(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    (scheme.eq_ignore_ascii_case(b"bearer ") && !rest.is_empty()).then_some(rest)
}

pub fn check_scope(app: &App, ws: &str, svc: &str, query: &Option<String>) -> Result<(), Response> {
    if app.opts.workspace.as_deref().is_some_and(|w| w != ws) || app.opts.service.as_deref().is_some_and(|s| s != svc) {
        return Err(not_found("The workspace or web service was not found."));
    }
    let version = query.as_deref().unwrap_or("").split('&').find_map(|p| p.strip_prefix("api-version="));
    match version {
        Some("2.0") => Ok(()),
        Some(_) => Err(bad_argument("InvalidApiVersion", "The api-version is not supported; use api-version=2.0.")),
        None => Err(bad_argument("MissingApiVersion", "The api-version query parameter is required.")),
    }
}

/// Reads a request body of at most `max` bytes, refusing a larger one (by its Content-Length
/// before reading, or once `max` bytes have arrived) with AzureML's 413.
pub async fn read_body(headers: &HeaderMap, mut body: Body, max: usize) -> Result<Bytes, Response> {
    let declared = headers.get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large(max));
    }
    let mut data = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|_| bad_argument("InputParseError", "The request body could not be read."))?;
        if let Ok(chunk) = frame.into_data() {
            if data.len().saturating_add(chunk.len()) > max {
                return Err(too_large(max));
            }
            data.extend_from_slice(&chunk);
        }
    }
    Ok(Bytes::from(data))
}

fn parse_json(body: &Bytes) -> Result<Value, Response> {
    serde_json::from_slice(body).map_err(|_| bad_argument("InputParseError", "The request body is not valid JSON."))
}

/// What a call with a JSON body goes through first: the scope and api-version, the body read
/// within its bound, and parsed.
pub async fn json_request(
    app: &App,
    ws: &str,
    svc: &str,
    query: &Option<String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Value, Response> {
    check_scope(app, ws, svc, query)?;
    let body = read_body(headers, body, app.opts.max_body).await?;
    parse_json(&body)
}
