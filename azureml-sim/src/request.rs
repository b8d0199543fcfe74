//! What every request goes through: the API key (a middleware), the workspace and service
//! scope and the api-version, and request bodies read with a bound.

use crate::errors::{shown, too_large, unauthorized, BAD_VERSION_CALL, REQUEST_BODY_INVALID, WEB_SERVICE_NOT_FOUND, WORKSPACE_NOT_FOUND};
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

/// The value of the first `name=` parameter of a query string, as given (not decoded).
pub fn query_value<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
}

/// The workspace and web service (`--workspace`, `--service`; any when none is given), then
/// the api-version (2.0, the only one the classic services answer).
pub fn check_scope(app: &App, ws: &str, svc: &str, query: &Option<String>) -> Result<(), Response> {
    let known = |list: &[String], id: &str| list.is_empty() || list.iter().any(|k| k == id);
    if !known(&app.opts.workspaces, ws) {
        return Err(WORKSPACE_NOT_FOUND.reply(&[]));
    }
    if !known(&app.opts.services, svc) {
        return Err(WEB_SERVICE_NOT_FOUND.reply(&[]));
    }
    match query_value(query.as_deref(), "api-version") {
        Some("2.0") => Ok(()),
        Some(v) => Err(BAD_VERSION_CALL.reply(&[&format!("\"{}\"", shown(v))])),
        None => Err(BAD_VERSION_CALL.reply(&["none (the api-version query parameter is required; use api-version=2.0)"])),
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
        let frame = frame.map_err(|_| REQUEST_BODY_INVALID.reply(&[]))?;
        if let Ok(chunk) = frame.into_data() {
            if data.len().saturating_add(chunk.len()) > max {
                return Err(too_large(max));
            }
            data.extend_from_slice(&chunk);
        }
    }
    Ok(Bytes::from(data))
}

/// A JSON object; anything else (no body, not JSON, another JSON value) is RequestBodyInvalid.
fn parse_json(body: &Bytes) -> Result<Value, Response> {
    serde_json::from_slice::<Value>(body).ok().filter(Value::is_object).ok_or_else(|| REQUEST_BODY_INVALID.reply(&[]))
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
