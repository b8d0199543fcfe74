//! mlgate-portal: the developer portal, a local endpoint (answered by the gateway itself, never
//! forwarded, never counted), under `portal.path` (APIM's developer portal, for the APIs this
//! gateway fronts). May depend on: mlgate-core.
//!
//! The portal is: one static page with its script and style sheet
//! (hand-written, embedded in the `.wasm`), and the JSON they read, generated from the live
//! model on each request:
//!
//! | `GET <path>…` | answer |
//! |---|---|
//! | `` `/` | the page (`assets/index.html`; the title and path escaped into it) |
//! | `/portal.js` `/portal.css` `/favicon.svg` | the script, the style sheet, the icon |
//! | `/apis.json` | the catalog: APIs, their base URLs, products, limits and operations |
//! | `/apis/<api id>/openapi.json` | the API's OpenAPI 3.0.1 export ([`openapi`]) |
//! | `/subscription` | "My subscription": the caller's own subscription and its usage (token limits as configured) |
//!
//! Nothing here carries a key, a key hash, a backend credential or another subscription's
//! data: the catalog and the export are built from ids, names, templates and limits only,
//! and "My subscription" answers only the subscription whose key was presented (APIM's 401
//! otherwise). Every page response has a strict Content-Security-Policy: scripts and styles
//! from the portal's own files, no inline code, nothing framed, requests to this origin only.

mod json;
pub mod openapi;
mod presets;
mod unpack;

pub use json::escape_html;
use json::Json;
use mlgate_core::admit::Request;
use mlgate_core::limits::{self, Spec, Usage};
use mlgate_core::local::LocalHost;
use mlgate_core::model::{Api, Counter, Gateway, Portal, Quota, QuotaPeriod, RateLimit, SubscriptionState, TokenLimit};
use mlgate_core::reply::{self, Reply};
pub use openapi::openapi;

const PAGE: &str = include_str!("assets/index.html");
const ICON: &str = include_str!("assets/favicon.svg");
/// The script and style sheet, gzip-compressed (`make build` makes them from the sources next
/// to them with `gzip -9n`; a test checks they are current). Every browser accepts gzip.
const SCRIPT_GZ: &[u8] = include_bytes!("assets/portal.js.gz");
const STYLE_GZ: &[u8] = include_bytes!("assets/portal.css.gz");

/// Sent with every portal response.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; \
                       base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The header "My subscription" reads the key from (APIM's default key header).
const KEY_HEADER: &[u8] = b"ocp-apim-subscription-key";

/// The reply to a request under the portal's path.
pub fn serve(gw: &Gateway, portal: &Portal, req: &Request<'_>, now_ms: u64, host: &mut dyn LocalHost) -> Reply {
    let sub = match mlgate_core::local::below(req, &portal.path) {
        Ok(sub) => sub,
        Err(r) => return secure(r, true),
    };
    match sub {
        b"" | b"/" | b"/index.html" => secure(page(portal), false),
        b"/portal.js" => secure(compressed("text/javascript; charset=utf-8", SCRIPT_GZ), false),
        b"/portal.css" => secure(compressed("text/css; charset=utf-8", STYLE_GZ), false),
        b"/favicon.svg" => {
            secure(Reply { status: 200, content_type: "image/svg+xml", headers: Vec::new(), body: ICON.into(), gzip_body: None }, false)
        }
        b"/apis.json" => secure(json_reply(catalog(gw, portal, &origin(req))), true),
        b"/subscription" => secure(subscription(gw, req, now_ms, host), true),
        _ => match sub.strip_prefix(b"/apis/").and_then(|s| s.strip_suffix(b"/openapi.json")) {
            Some(id) => {
                // A path segment: %XX decoded, '+' is itself (catalog links encode every id byte).
                let id: Vec<u8> = percent_encoding::percent_decode(id).collect();
                let doc = std::str::from_utf8(&id).ok().and_then(|id| openapi::openapi(gw, id, Some(&origin(req))));
                secure(doc.map_or_else(reply::not_found, json_reply), true)
            }
            None => secure(reply::not_found(), true),
        },
    }
}

fn compressed(content_type: &'static str, gz: &'static [u8]) -> Reply {
    Reply { status: 200, content_type, headers: Vec::new(), body: String::new(), gzip_body: Some(gz) }
}

fn json_reply(body: String) -> Reply {
    Reply { status: 200, content_type: "application/json; charset=utf-8", headers: Vec::new(), body, gzip_body: None }
}

/// The page, with the portal's title and path (operator input) escaped into it.
pub fn page(portal: &Portal) -> Reply {
    let body = PAGE.replace("{{TITLE}}", &escape_html(&portal.title)).replace("{{BASE}}", &escape_html(&portal.path));
    Reply { status: 200, content_type: "text/html; charset=utf-8", headers: Vec::new(), body, gzip_body: None }
}

/// Adds the portal's security headers. `private`: never stored by any cache.
fn secure(r: Reply, private: bool) -> Reply {
    mlgate_core::local::secure(r, CSP, private)
}

/// `scheme://host` as the client reached the gateway, for base URLs; the host is reduced to
/// the characters a host may have (it comes from the client). Empty if there is none.
fn origin(req: &Request<'_>) -> String {
    let host = mlgate_core::reply::host_chars(req.authority);
    if host.is_empty() {
        return String::new();
    }
    let scheme = if req.scheme == b"http" { "http" } else { "https" };
    format!("{scheme}://{host}")
}

fn rate_limit_json(j: &mut Json, scope: &str, rl: &RateLimit) {
    j.obj().kv_str("scope", scope).kv_str("kind", "rate-limit").kv_num("calls", u64::from(rl.calls));
    j.kv_num("renewalPeriod", rl.period_ms / 1000).kv_str("counter", &counter_text(&rl.counter)).end_obj();
}

fn quota_json(j: &mut Json, scope: &str, q: &Quota) {
    j.obj().kv_str("scope", scope).kv_str("kind", "quota").kv_opt_num("calls", q.calls);
    j.kv_opt_num("bandwidthKb", q.bandwidth_bytes.map(|b| b / 1024)).kv_num("renewalPeriod", q.period_ms / 1000);
    j.kv_str("counter", &counter_text(&q.counter)).end_obj();
}

/// A token limit (`llm-token-limit`) as configured and, for "My subscription", its use (`used`:
/// read from the subscription's record, reservations of calls in flight included).
fn token_limit_json(j: &mut Json, scope: &str, api: Option<&Api>, t: &TokenLimit, used: Option<(&limits::TokenUse, u64)>) {
    j.obj().kv_str("scope", scope);
    where_json(j, api, None);
    j.kv_str("kind", "token-limit").kv_opt_num("tokensPerMinute", t.tokens_per_minute).kv_opt_num("tokenQuota", t.quota.map(|q| q.0));
    let period = t.quota.map(|q| match q.1 {
        QuotaPeriod::Hourly => "hourly",
        QuotaPeriod::Daily => "daily",
        QuotaPeriod::Weekly => "weekly",
        QuotaPeriod::Monthly => "monthly",
        QuotaPeriod::Yearly => "yearly",
    });
    match period {
        Some(p) => j.kv_str("tokenQuotaPeriod", p),
        None => j.key("tokenQuotaPeriod").null(),
    };
    if let Some((u, now_ms)) = used {
        j.kv_opt_num("tokensUsedThisMinute", u.window_used);
        j.kv_opt_num("tokensLeftThisMinute", u.window_used.zip(t.tokens_per_minute).map(|(w, l)| l.saturating_sub(w)));
        j.kv_opt_num("quotaTokensUsed", u.quota_used);
        j.kv_opt_num("quotaTokensLeft", u.quota_used.zip(t.quota).map(|(q, (l, _))| l.saturating_sub(q)));
        if let Some(ms) = u.quota_renews_in_ms {
            j.kv_num("renewsInSeconds", ms.div_ceil(1000));
            j.kv_str("renewsAt", &mlgate_core::time::format_rfc3339(now_ms.saturating_add(ms)));
        }
    }
    j.end_obj();
}

fn counter_text(c: &Counter) -> String {
    match c {
        Counter::Subscription => "subscription".into(),
        Counter::Ip => "ip".into(),
        Counter::Header(h) => format!("header:{h}"),
    }
}

/// `apis.json`: what the pages list. Ids, names, descriptions, paths, templates, limits.
pub fn catalog(gw: &Gateway, portal: &Portal, origin: &str) -> String {
    let mut j = Json::new();
    j.obj().kv_str("title", &portal.title).kv_str("path", &portal.path);
    j.key("apis").arr();
    for (i, api) in gw.apis.iter().enumerate() {
        api_json(&mut j, gw, portal, i, api, origin);
    }
    j.end_arr().end_obj();
    j.finish()
}

fn api_json(j: &mut Json, gw: &Gateway, portal: &Portal, index: usize, api: &Api, origin: &str) {
    j.obj().kv_str("id", &api.id).kv_str("name", &api.name).kv_str("description", &api.description);
    j.kv_str("path", &api.prefix).kv_str("baseUrl", &format!("{origin}{}", api.prefix));
    j.key("protocols").arr();
    for (on, name) in [(api.protocols.http, "http"), (api.protocols.https, "https")] {
        if on {
            j.str(name);
        }
    }
    j.end_arr();
    j.kv_str("subscriptionKeyHeader", &api.key_header).kv_str("subscriptionKeyQuery", &api.key_query);
    j.kv_str("openapi", &format!("{}/apis/{}/openapi.json", portal.path, percent_encode(&api.id)));
    j.key("limits").arr();
    if let Some(rl) = &api.rate_limit {
        rate_limit_json(j, "api", rl);
    }
    if let Some(q) = &api.quota {
        quota_json(j, "api", q);
    }
    if let Some(t) = &api.token_limit {
        token_limit_json(j, "api", None, t, None);
    }
    j.end_arr();
    j.key("products").arr();
    for p in gw.products.iter().filter(|p| p.listed && p.apis.iter().any(|&a| usize::from(a) == index)) {
        j.obj().kv_str("id", &p.id).kv_str("name", &p.name).kv_str("description", &p.description);
        j.key("limits").arr();
        if let Some(rl) = &p.rate_limit {
            rate_limit_json(j, "product", rl);
        }
        if let Some(q) = &p.quota {
            quota_json(j, "product", q);
        }
        if let Some(t) = &p.token_limit {
            token_limit_json(j, "product", None, t, None);
        }
        j.end_arr().end_obj();
    }
    j.end_arr();
    j.key("operations").arr();
    for (i, op) in api.operations.iter().enumerate() {
        let Some((method, t)) = api.route.operation(i) else { continue };
        j.obj().kv_str("id", &op.id).kv_str("name", &op.name).kv_str("description", &op.description);
        j.kv_str("method", method).kv_str("urlTemplate", &openapi::template_text(t));
        j.key("limits").arr();
        if let Some(rl) = &op.rate_limit {
            rate_limit_json(j, "operation", rl);
        }
        if let Some(q) = &op.quota {
            quota_json(j, "operation", q);
        }
        j.end_arr().end_obj();
    }
    j.end_arr().end_obj();
}

/// Everything but RFC 3986's unreserved characters is percent-encoded (an id in a URL path
/// segment).
const UNRESERVED_KEPT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, UNRESERVED_KEPT).to_string()
}

/// One limit of a subscription and where it applies.
struct Entry<'g> {
    scope: &'static str,
    api: Option<&'g Api>,
    operation: Option<&'g str>,
    spec: Spec<'g>,
}

/// "My subscription": the subscription of the presented key, its product and, per limit, what
/// is used and left and when it renews, read from the limit records (no count of its own).
/// Only for a valid key of an active subscription, found as the gateway finds it (digest,
/// constant-time confirmation); APIM's 401 otherwise.
pub fn subscription(gw: &Gateway, req: &Request<'_>, now_ms: u64, host: &mut dyn LocalHost) -> Reply {
    let key = req.header(KEY_HEADER).map(<[u8]>::trim_ascii).unwrap_or_default();
    if key.is_empty() {
        return Reply::json(401, reply::MISSING_KEY);
    }
    let Some(sub) = gw.keys.find(key).and_then(|i| gw.subscriptions.get(i as usize)) else { return reply::invalid_key() };
    let Some(product) = gw.products.get(sub.product as usize) else { return reply::invalid_key() };
    if sub.state != SubscriptionState::Active {
        return reply::invalid_key();
    }

    // Every limit counted per subscription, in the record's terms; keyed ones are listed apart.
    let apis: Vec<&Api> = product.apis.iter().filter_map(|&a| gw.apis.get(usize::from(a))).collect();
    let mut rates: Vec<(&'static str, Option<&Api>, Option<&str>, &RateLimit)> = Vec::new();
    if let Some(rl) = &product.rate_limit {
        rates.push(("product", None, None, rl));
    }
    for api in &apis {
        if let Some(rl) = &api.rate_limit {
            rates.push(("api", Some(api), None, rl));
        }
        for op in &api.operations {
            if let Some(rl) = &op.rate_limit {
                rates.push(("operation", Some(api), Some(op.id.as_str()), rl));
            }
        }
    }
    let (per_sub, keyed): (Vec<_>, Vec<_>) = rates.into_iter().partition(|r| r.3.counter == Counter::Subscription);
    let mut entries: Vec<Entry<'_>> =
        per_sub.into_iter().map(|(scope, api, operation, rl)| Entry { scope, api, operation, spec: Spec::Rate(rl) }).collect();
    // Quotas counted per subscription: the product's, then its APIs' and operations'.
    let per_sub_quota = |q: &&mlgate_core::model::Quota| q.counter == Counter::Subscription;
    if let Some(q) = product.quota.as_ref().filter(per_sub_quota) {
        entries.push(Entry { scope: "product", api: None, operation: None, spec: Spec::Quota(q) });
    }
    for api in &apis {
        if let Some(q) = api.quota.as_ref().filter(per_sub_quota) {
            entries.push(Entry { scope: "api", api: Some(api), operation: None, spec: Spec::Quota(q) });
        }
        for op in &api.operations {
            if let Some(q) = op.quota.as_ref().filter(per_sub_quota) {
                entries.push(Entry { scope: "operation", api: Some(api), operation: Some(op.id.as_str()), spec: Spec::Quota(q) });
            }
        }
    }
    let specs: Vec<Spec<'_>> = entries.iter().map(|e| e.spec).collect();
    let token_limits: Vec<(&str, Option<&Api>, &TokenLimit)> = product
        .token_limit
        .iter()
        .map(|t| ("product", None, t))
        .chain(apis.iter().filter_map(|a| Some(("api", Some(*a), a.token_limit.as_ref()?))))
        .collect();
    let Ok(usage) = limits::usage(host.store(), &sub.record_key, sub.start_ms, &specs, now_ms) else {
        return reply::limits_unavailable();
    };

    let mut j = Json::new();
    j.obj().kv_str("id", &sub.id).kv_str("state", "active");
    // A subscription scoped to APIs has no product.
    if product.listed {
        j.key("product").obj().kv_str("id", &product.id).kv_str("name", &product.name).end_obj();
    } else {
        j.key("product").null();
    }
    j.key("apis").arr();
    for api in &apis {
        j.obj().kv_str("id", &api.id).kv_str("name", &api.name).end_obj();
    }
    j.end_arr();
    j.kv_str("asOf", &mlgate_core::time::format_rfc3339(now_ms));
    j.key("limits").arr();
    for (e, u) in entries.iter().zip(usage.iter()) {
        limit_usage_json(&mut j, e, u, now_ms);
    }
    for (scope, api, operation, rl) in keyed {
        j.obj().kv_str("scope", scope);
        where_json(&mut j, api, operation);
        j.kv_str("kind", "rate-limit").kv_num("calls", u64::from(rl.calls)).kv_num("renewalPeriod", rl.period_ms / 1000);
        // Counted per client address or header value, not per subscription: no count here.
        j.kv_str("counter", &counter_text(&rl.counter)).key("callsUsed").null().key("callsLeft").null().end_obj();
    }
    for (scope, api, t) in token_limits {
        let Ok(u) = limits::token_usage(host.store(), &sub.record_key, t, now_ms) else {
            return reply::limits_unavailable();
        };
        token_limit_json(&mut j, scope, api, t, Some((&u, now_ms)));
    }
    j.end_arr().end_obj();
    json_reply(j.finish())
}

fn where_json(j: &mut Json, api: Option<&Api>, operation: Option<&str>) {
    if let Some(api) = api {
        j.kv_str("api", &api.id).kv_str("apiName", &api.name);
    }
    if let Some(op) = operation {
        j.kv_str("operation", op);
        if let Some(o) = api.and_then(|a| a.operations.iter().find(|o| o.id == op)) {
            j.kv_str("operationName", &o.name);
        }
    }
}

fn limit_usage_json(j: &mut Json, e: &Entry<'_>, u: &Usage, now_ms: u64) {
    j.obj().kv_str("scope", e.scope);
    where_json(j, e.api, e.operation);
    match e.spec {
        Spec::Rate(rl) => {
            j.kv_str("kind", "rate-limit").kv_num("renewalPeriod", rl.period_ms / 1000).kv_str("counter", "subscription");
        }
        Spec::Quota(q) => {
            j.kv_str("kind", "quota").kv_num("renewalPeriod", q.period_ms / 1000);
            j.kv_opt_num("bandwidthKb", q.bandwidth_bytes.map(|b| b / 1024)).kv_num("bandwidthUsedBytes", u.bytes_used);
            j.kv_opt_num("bandwidthLeftBytes", u.bytes_limit.map(|l| l.saturating_sub(u.bytes_used)));
        }
    }
    j.kv_opt_num("calls", u.calls_limit).kv_num("callsUsed", u.calls_used).kv_opt_num("callsLeft", u.calls_left());
    j.kv_num("renewsInSeconds", u.renews_in_ms.div_ceil(1000));
    j.kv_str("renewsAt", &mlgate_core::time::format_rfc3339(now_ms.saturating_add(u.renews_in_ms)));
    j.end_obj();
}
