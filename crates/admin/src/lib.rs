//! mlgate-admin: the admin API and the usage dashboard (a local endpoint).
//!
//! May depend on: mlgate-core, mlgate-usage (the reports).
//!
//! The admin API and the usage dashboard, under `admin.path`: APIM's reports and each
//! product's quota use, for the operator. Answered by the gateway itself (a local endpoint:
//! never forwarded, never counted as an API call).
//!
//! | `GET <path>…` | answer | key |
//! |---|---|---|
//! | `/` | the dashboard page (`assets/dashboard.html`) | no (it holds no data) |
//! | `/dashboard.js` `/dashboard.css` `/favicon.svg` | its script, style sheet and icon | no |
//! | `/reports/byApi` `/reports/byOperation` `/reports/byProduct` `/reports/bySubscription` `/reports/byTime` | APIM's reports ([`mlgate_usage::report`]), with `$filter`, `$top`, `$skip`, `$orderby` and `interval` ([`mlgate_usage::query`]) | yes |
//! | `/quotas` | every quota counter: calls and kilobytes in the current period, per subscription | yes |
//!
//! The key is `Authorization: Bearer <admin key>`; only its SHA-256 is configured, and the
//! check hashes what is presented and compares digests in constant time ([`Digest::ct_eq`]).
//! A missing or wrong key is 401, and so is any other path under the prefix, so the API does
//! not tell what exists to someone without the key. Nothing here carries a key or a digest.

use mlgate_core::admit::Request;
use mlgate_core::keys::Digest;
use mlgate_core::limits::{self, Spec};
use mlgate_core::local::LocalHost;
use mlgate_core::model::{Admin, Gateway};
use mlgate_core::reply::Reply;
use mlgate_usage::query;
use mlgate_usage::report::{self, push_str, Refused, Report};

const PAGE: &str = include_str!("assets/dashboard.html");
/// The script and style sheet, gzip-compressed (`make admin-assets` makes them from the sources
/// next to them with `gzip -9n`; a test checks they are current). Every browser accepts gzip.
const SCRIPT_GZ: &[u8] = include_bytes!("assets/dashboard.js.gz");
const STYLE_GZ: &[u8] = include_bytes!("assets/dashboard.css.gz");
const ICON: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 4 4\"><rect width=\"3\" height=\"1\" fill=\"#2e7d32\"/>\
                    <rect y=\"1.5\" width=\"2\" height=\"1\" fill=\"#ef6c00\"/><rect y=\"3\" width=\"1\" height=\"1\" fill=\"#c62828\"/></svg>";

/// Scripts and styles from the dashboard's own files only, no inline code, requests to this
/// origin only, never framed.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; \
                       base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Whether the request carries the admin key: `Authorization: Bearer <key>`. The presented
/// key is hashed and the digests compared in constant time.
pub fn authorized(admin: &Admin, req: &Request<'_>) -> bool {
    let Some(value) = req.header(b"authorization") else { return false };
    let value = value.trim_ascii();
    let Some((scheme, key)) = value.split_at_checked(6) else { return false };
    if !scheme.eq_ignore_ascii_case(b"bearer") || key.first() != Some(&b' ') {
        return false;
    }
    let key = key.trim_ascii();
    !key.is_empty() && Digest::of(key).ct_eq(&admin.key)
}

/// The reply to a request under the admin path.
pub fn serve(gw: &Gateway, admin: &Admin, req: &Request<'_>, now_ms: u64, host: &mut dyn LocalHost) -> Reply {
    let sub = match mlgate_core::local::below(req, &admin.path) {
        Ok(sub) => sub,
        Err(r) => return secure(r, true),
    };
    match sub {
        // The page's relative URLs need the trailing slash.
        b"" => secure(
            Reply { status: 308, content_type: "text/plain; charset=utf-8", headers: Vec::new(), body: String::new(), gzip_body: None },
            false,
        )
        .with_header("location", format!("{}/", admin.path)),
        b"/" | b"/index.html" => secure(asset("text/html; charset=utf-8", PAGE), false),
        b"/dashboard.js" => secure(compressed("text/javascript; charset=utf-8", SCRIPT_GZ), false),
        b"/dashboard.css" => secure(compressed("text/css; charset=utf-8", STYLE_GZ), false),
        // The page's own icon, so a browser does not ask for /favicon.ico (an API call).
        b"/favicon.svg" => secure(asset("image/svg+xml", ICON), false),
        _ if !authorized(admin, req) => secure(unauthorized(), true),
        b"/quotas" => secure(json(quotas(gw, now_ms, host)), true),
        _ => match sub.strip_prefix(b"/reports/").and_then(Report::from_name) {
            Some(kind) => secure(reports(gw, kind, req, now_ms, host), true),
            None => secure(error(404, "NotFound", "No such admin resource."), true),
        },
    }
}

/// A report, with the request's query options: a 400 in APIM's error shape for an option it
/// got wrong.
fn reports(gw: &Gateway, kind: Report, req: &Request<'_>, now_ms: u64, host: &mut dyn LocalHost) -> Reply {
    let (path, raw) = match req.path.iter().position(|&b| b == b'?') {
        Some(i) => (req.path.get(..i).unwrap_or_default(), req.path.get(i + 1..).unwrap_or_default()),
        None => (req.path, &b""[..]),
    };
    let answer = query::parse(raw).map_err(Refused::Invalid).and_then(|q| {
        // The next page: the same request with `$skip` moved on.
        let mut next = |skip: usize| {
            // Absolute, as APIM's: the request's own scheme and authority (when it has them).
            // (Bytes that are not UTF-8 are left out: only parameters this ignores can have them.)
            fn text(b: &[u8]) -> &str {
                std::str::from_utf8(b).unwrap_or_default()
            }
            let mut url = match (req.scheme, req.authority) {
                (b"http" | b"https", a) if !a.is_empty() => format!("{}://{}", text(req.scheme), text(a)),
                _ => String::new(),
            };
            url.push_str(text(path));
            let mut sep = '?';
            for pair in raw.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
                if !pair.starts_with(b"$skip=") && !pair.starts_with(b"%24skip=") {
                    url.push(sep);
                    url.push_str(text(pair));
                    sep = '&';
                }
            }
            format!("{url}{sep}$skip={skip}")
        };
        report::answer(gw, kind, &q, host, now_ms, &mut next)
    });
    match answer {
        Ok(body) => json(body),
        Err(Refused::NoSubscriptions) => error(
            404,
            "NotFound",
            "bySubscription and subscriptionId need per-subscription metrics: \"metrics\": {\"per_subscription\": true}",
        ),
        Err(Refused::Invalid(e)) => invalid(e.target, &e.message),
    }
}

/// APIM's validation error: `{"error": {"code": "ValidationError", "message": …, "details":
/// [{"code": "ValidationError", "target": <parameter>, "message": …}]}}`.
fn invalid(target: &str, message: &str) -> Reply {
    let mut body = String::from("{\"error\":{\"code\":\"ValidationError\",\"message\":");
    push_str(&mut body, message);
    body.push_str(",\"details\":[{\"code\":\"ValidationError\",\"target\":");
    push_str(&mut body, target);
    body.push_str(",\"message\":");
    push_str(&mut body, message);
    body.push_str("}]}}");
    Reply { status: 400, content_type: "application/json; charset=utf-8", headers: Vec::new(), body, gzip_body: None }
}

fn asset(content_type: &'static str, body: &str) -> Reply {
    Reply { status: 200, content_type, headers: Vec::new(), body: body.to_string(), gzip_body: None }
}

fn compressed(content_type: &'static str, gz: &'static [u8]) -> Reply {
    Reply { status: 200, content_type, headers: Vec::new(), body: String::new(), gzip_body: Some(gz) }
}

fn json(body: String) -> Reply {
    Reply { status: 200, content_type: "application/json; charset=utf-8", headers: Vec::new(), body, gzip_body: None }
}

/// APIM's management API error shape: `{"error": {"code": …, "message": …}}`.
fn error(status: u16, code: &str, message: &str) -> Reply {
    let mut body = String::from("{\"error\":{\"code\":");
    push_str(&mut body, code);
    body.push_str(",\"message\":");
    push_str(&mut body, message);
    body.push_str("}}");
    Reply { status, content_type: "application/json; charset=utf-8", headers: Vec::new(), body, gzip_body: None }
}

fn unauthorized() -> Reply {
    error(401, "Unauthorized", "Access denied due to a missing or invalid admin key. Send Authorization: Bearer <admin key>.")
        .with_header("www-authenticate", "Bearer realm=\"mlgate-admin\"".to_string())
}

fn secure(r: Reply, private: bool) -> Reply {
    mlgate_core::local::secure(r, CSP, private)
}

/// Every product quota's counter per subscription, read from the records the limits write
/// (APIM's quota counters: `counterKey`, `periodStartTime`, `periodEndTime`, and `value`
/// with `callsCount` and `kbTransferred`), with the product and its limits beside them.
/// Read-only: nothing is created or counted.
pub fn quotas(gw: &Gateway, now_ms: u64, host: &mut dyn LocalHost) -> String {
    let mut out = String::from("{\"value\":[");
    let mut count = 0u64;
    for sub in &gw.subscriptions {
        let Some(product) = gw.products.get(sub.product as usize) else { continue };
        let Some(quota) = &product.quota else { continue };
        let used = limits::usage(host.store(), &sub.record_key, sub.start_ms, &[Spec::Quota(quota)], now_ms);
        let Some(u) = used.ok().and_then(|v| v.first().copied()) else { continue };
        let end = now_ms.saturating_add(u.renews_in_ms);
        if count > 0 {
            out.push(',');
        }
        count += 1;
        out.push_str("{\"counterKey\":");
        push_str(&mut out, &sub.id);
        out.push_str(",\"productId\":");
        push_str(&mut out, &format!("/products/{}", product.id));
        out.push_str(",\"productName\":");
        push_str(&mut out, &product.name);
        out.push_str(",\"subscriptionId\":");
        push_str(&mut out, &format!("/subscriptions/{}", sub.id));
        out.push_str(",\"periodStartTime\":");
        push_str(&mut out, &mlgate_core::time::format_rfc3339(end.saturating_sub(quota.period_ms)));
        out.push_str(",\"periodEndTime\":");
        push_str(&mut out, &mlgate_core::time::format_rfc3339(end));
        out.push_str(&format!(
            ",\"value\":{{\"callsCount\":{},\"kbTransferred\":{}}},\"callsLimit\":{},\"kbLimit\":{}}}",
            u.calls_used,
            mlgate_usage::report::thousandths(u.bytes_used.saturating_mul(1000).saturating_add(512) / 1024),
            quota.calls.map_or("null".to_string(), |c| c.to_string()),
            quota.bandwidth_bytes.map_or("null".to_string(), |b| (b / 1024).to_string()),
        ));
    }
    out.push_str("],\"count\":");
    out.push_str(&count.to_string());
    out.push('}');
    out
}
