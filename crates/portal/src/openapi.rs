//! The OpenAPI export of one API, as APIM exports it (`openapi+json`): OpenAPI 3.0.1, the
//! subscription key as two `apiKey` security schemes (the API's own header and query names),
//! one operation per configured operation with `operationId` = its id, path and query
//! parameters from its URL template (required query literals as single-value enums), and for
//! the presets' operations their request and response schemas and examples ([`presets`]):
//! AzureML Studio, the online endpoint's `score`, the OpenAI-compatible LLM calls (with the
//! gateway's own 400, 413 and token-limit answers for the calls that carry tokens). Generated
//! from the model on every call; nothing here is written per API by hand.
//!
//! Operations OpenAPI cannot tell apart (same path and method, told apart by a query literal)
//! go under `x-ms-paths`, APIM's extension for exactly that, keyed `path?name=value`.

use super::json::Json;
use super::presets::{self, Family, Text};
use mlgate_core::model::{Api, Gateway, Operation};
use mlgate_core::route::{QueryPart, Template};

/// The export of API `api_id`, or `None` if there is no such API. `origin`
/// (`https://gw.example.com`) makes the server URL absolute; without it the URL is the API's
/// path alone (a relative server URL, which OpenAPI resolves against the document's own).
pub fn openapi(gw: &Gateway, api_id: &str, origin: Option<&str>) -> Option<String> {
    let api = gw.apis.iter().find(|a| a.id == api_id)?;
    Some(document(api, origin, gw.settings.max_request_body_bytes))
}

fn document(api: &Api, origin: Option<&str>, max_body: u32) -> String {
    let text = Text::new();
    let mut j = Json::new();
    j.obj().kv_str("openapi", "3.0.1");
    j.key("info").obj().kv_str("title", &api.name).kv_str("description", &api.description).kv_str("version", "1.0").end_obj();
    let base = format!("{}{}", origin.unwrap_or(""), api.prefix);
    j.key("servers").arr().obj().kv_str("url", if base.is_empty() { "/" } else { &base }).end_obj().end_arr();

    // (path key, method, operation index) in declaration order; the first of a path and
    // method goes under `paths`, later ones under `x-ms-paths`.
    let mut plain: Vec<(String, Vec<(String, usize)>)> = Vec::new();
    let mut extra: Vec<(String, Vec<(String, usize)>)> = Vec::new();
    for i in 0..api.operations.len() {
        let Some((method, t)) = api.route.operation(i) else { continue };
        let method = method.to_ascii_lowercase();
        if !matches!(method.as_str(), "get" | "put" | "post" | "delete" | "options" | "head" | "patch" | "trace") {
            // OpenAPI has no place for other methods; the portal still lists them.
            continue;
        }
        let taken = plain.iter().any(|(p, ms)| *p == t.path && ms.iter().any(|(m, _)| *m == method));
        let (table, key) = if taken { (&mut extra, template_text(t)) } else { (&mut plain, t.path.clone()) };
        match table.iter_mut().find(|(p, _)| *p == key) {
            Some((_, ms)) => ms.push((method, i)),
            None => table.push((key, vec![(method, i)])),
        }
    }
    for (name, table) in [("paths", &plain), ("x-ms-paths", &extra)] {
        if name == "x-ms-paths" && table.is_empty() {
            continue;
        }
        j.key(name).obj();
        for (path, methods) in table {
            j.key(path).obj();
            for (method, i) in methods {
                if let (Some(op), Some((_, t))) = (api.operations.get(*i), api.route.operation(*i)) {
                    j.key(method);
                    operation(&mut j, &text, api, op, t, max_body);
                }
            }
            j.end_obj();
        }
        j.end_obj();
    }

    j.key("components").obj();
    j.key("securitySchemes").obj();
    j.key("apiKeyHeader").obj().kv_str("type", "apiKey").kv_str("name", &api.key_header).kv_str("in", "header").end_obj();
    j.key("apiKeyQuery").obj().kv_str("type", "apiKey").kv_str("name", &api.key_query).kv_str("in", "query").end_obj();
    j.end_obj();
    j.key("schemas").obj().key("GatewayError").raw(GATEWAY_ERROR);
    // The schemas the presets' operations name, members written as text: `raw` puts the comma
    // before them.
    for f in presets::schemas(api) {
        j.raw(text.get(f));
    }
    j.end_obj();
    j.end_obj();
    j.key("security")
        .arr()
        .obj()
        .key("apiKeyHeader")
        .arr()
        .end_arr()
        .end_obj()
        .obj()
        .key("apiKeyQuery")
        .arr()
        .end_arr()
        .end_obj()
        .end_arr();
    j.end_obj();
    j.finish()
}

/// `path?name=value&…`: the URL template as configured (APIM's `x-ms-paths` keys).
pub(super) fn template_text(t: &Template) -> String {
    let mut k = t.path.clone();
    for (i, (name, part)) in t.query.iter().enumerate() {
        k.push(if i == 0 { '?' } else { '&' });
        k.push_str(name);
        k.push('=');
        match part {
            QueryPart::Literal(v) => k.push_str(v),
            QueryPart::Capture(c) => {
                k.push('{');
                k.push_str(c);
                k.push('}');
            }
        }
    }
    k
}

fn parameter(j: &mut Json, name: &str, location: &str, description: &str, fixed: &[&str], default: Option<&str>) {
    j.obj().kv_str("name", name).kv_str("in", location).kv_str("description", description).key("required").bool(true);
    j.key("schema").obj().kv_str("type", "string");
    if !fixed.is_empty() {
        j.key("enum").arr();
        for v in fixed {
            j.str(v);
        }
        j.end_arr();
    }
    if let Some(d) = default {
        j.kv_str("default", d);
    }
    j.end_obj().end_obj();
}

fn operation(j: &mut Json, text: &Text, api: &Api, op: &Operation, t: &Template, max_body: u32) {
    j.obj().kv_str("summary", &op.name).kv_str("description", &op.description).kv_str("operationId", &op.id);
    j.key("parameters").arr();
    let preset = presets::of(api, op);
    let backend = preset.map(|p| p.family.errors());
    let either = backend.map(|(schema, _)| text.get(schema));
    let doc = |capture: &str| if preset.is_some() { presets::param(capture) } else { ("", &[][..], None) };
    for p in &t.path_params {
        let (description, fixed, default) = doc(p);
        parameter(j, p, "path", description, fixed, default);
    }
    for (name, part) in &t.query {
        match part {
            QueryPart::Capture(c) => {
                let (description, fixed, default) = doc(c);
                parameter(j, name, "query", description, fixed, default);
            }
            QueryPart::Literal(v) => parameter(j, name, "query", "Fixed by the operation's URL template.", &[v.as_str()], Some(v)),
        }
    }
    if preset.is_some_and(|p| p.family == Family::Online) {
        j.raw(text.get(presets::DEPLOYMENT_HEADER));
    }
    j.end_arr();
    if let Some(body) = preset.and_then(|p| p.request) {
        j.key("requestBody").raw(text.get(body));
    }
    j.key("responses").obj();
    match preset {
        Some(p) => {
            j.key("200").raw(text.get(p.ok));
        }
        None => {
            j.key("200").obj().kv_str("description", "The backend's answer.").end_obj();
        }
    }
    // Token limits and the body checks apply to the calls that carry tokens only.
    let tokens = op.tokens.is_some();
    if tokens {
        gateway_response(
            j,
            "400",
            "The body is not one the gateway can bound (not JSON, a bad max_tokens, over a token limit), or the model refused it.",
            either,
            &[("overLimit", "This request may use up to 5000 tokens, more than its token limit of 1000 allows at once.")],
        );
    }
    gateway_response(
        j,
        "401",
        "Access denied: the subscription key is missing or invalid, or its subscription is not active.",
        either,
        &[("missingKey", mlgate_core::reply::MISSING_KEY), ("invalidKey", mlgate_core::reply::INVALID_KEY)],
    );
    // The token examples go with the call examples for the calls that carry tokens.
    let shown = 1 + usize::from(tokens);
    let quotas = [
        ("callQuota", "Out of call volume quota. Quota will be replenished in 00:59:59."),
        ("tokenQuota", "Token quota is exceeded. Try again in 21 minutes and 33 seconds."),
    ];
    gateway_response(
        j,
        "403",
        "A quota of the subscription's product is used up until its period renews.",
        None,
        quotas.get(..shown).unwrap_or_default(),
    );
    gateway_response(
        j,
        "404",
        "No operation matches the path, method and required query parameters.",
        either,
        &[("notFound", mlgate_core::reply::NOT_FOUND)],
    );
    if tokens {
        let too_large = format!("The request body is larger than {max_body} bytes.");
        gateway_response(j, "413", "The body is larger than the gateway reads.", None, &[("tooLarge", &too_large)]);
    }
    let rates = [
        ("rateLimit", "Rate limit is exceeded. Try again in 42 seconds."),
        ("tokenLimit", "Token limit is exceeded. Try again in 42 seconds."),
    ];
    gateway_response(
        j,
        "429",
        "A rate limit is exceeded; Retry-After says when to try again.",
        None,
        rates.get(..shown).unwrap_or_default(),
    );
    if let Some((_, default)) = backend {
        j.key("default").raw(text.get(default));
    }
    j.end_obj();
    j.end_obj();
}

/// A response the gateway itself may answer (APIM's error body). `or_backend`: the backend
/// answers this status too, with its own error shape (this schema: either).
fn gateway_response(j: &mut Json, status: &str, description: &str, or_backend: Option<&str>, examples: &[(&str, &str)]) {
    j.key(status).obj().kv_str("description", description);
    if status == "429" || status == "403" {
        j.key("headers").obj().key("Retry-After").obj().kv_str("description", "Seconds until the call can succeed.");
        j.key("schema").obj().kv_str("type", "integer").end_obj().end_obj().end_obj();
    }
    j.key("content").obj().key("application/json").obj();
    j.key("schema").raw(or_backend.unwrap_or(r##"{"$ref":"#/components/schemas/GatewayError"}"##));
    j.key("examples").obj();
    for (name, message) in examples {
        let code: u64 = status.parse().unwrap_or(0);
        j.key(name).obj().key("value").obj().kv_num("statusCode", code).kv_str("message", message).end_obj().end_obj();
    }
    j.end_obj().end_obj().end_obj().end_obj();
}

const GATEWAY_ERROR: &str = r#"{"type":"object","description":"An answer of the gateway itself, as APIM's.","required":["statusCode","message"],"properties":{"statusCode":{"type":"integer"},"message":{"type":"string"}}}"#;
