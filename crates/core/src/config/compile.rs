//! Schema → model: names become indices, keys digests, limits their precomputed ids and
//! periods. Each check names the JSON path of what it refuses.

use super::common::{check_id, is_header_name, nonempty, ConfigError, Environment};
use super::limits::{quota_of, rate_limit};
use super::schema::{RawApi, RawConfig, RawOperations, RawPortal};
use crate::model::{Api, Credential, Gateway, Operation, Portal, Product, Protocols, Settings};
use crate::route::{Route, Template};

const MAX_APIS: usize = u16::MAX as usize;
/// The largest `max_request_body_bytes`: the body is held in memory while it is read.
const MAX_BODY: u32 = 64 << 20;

pub(super) fn compile(raw: RawConfig, env: &dyn Environment) -> Result<Gateway, ConfigError> {
    let settings = compile_settings(&raw)?;
    if raw.apis.is_empty() {
        return Err(ConfigError::new("apis", "at least one API is required"));
    }
    if raw.apis.len() > MAX_APIS {
        return Err(ConfigError::new("apis", "too many APIs"));
    }
    let mut apis: Vec<Api> = Vec::with_capacity(raw.apis.len());
    let mut api_key_envs = Vec::new();
    for (i, a) in raw.apis.into_iter().enumerate() {
        let api = compile_api(i, a, env, &mut api_key_envs)?;
        // The backend's credential and the two identity headers are three different headers:
        // one name for two of them would send the backend two values, or one overwriting the other.
        for (j, c) in api.credentials.iter().enumerate() {
            if c.header == settings.subscription_id_header || c.header == settings.product_id_header {
                return Err(ConfigError::new(
                    format!("apis[{i}].backend_credentials[{j}].header"),
                    "must differ from subscription_id_header and product_id_header",
                ));
            }
        }
        if apis.iter().any(|b| b.id == api.id) {
            return Err(ConfigError::new(format!("apis[{i}].id"), format!("duplicate API id \"{}\"", api.id)));
        }
        if apis.iter().any(|b| b.prefix == api.prefix) {
            return Err(ConfigError::new(format!("apis[{i}].path"), "another API already uses this path"));
        }
        apis.push(api);
    }
    // Longest suffix first, so `/a/b` wins over `/a`.
    let mut order: Vec<u16> = (0..apis.len()).filter_map(|i| u16::try_from(i).ok()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(apis.get(usize::from(i)).map_or(0, |a| a.prefix.len())));

    let mut products: Vec<Product> = Vec::with_capacity(raw.products.len());
    for (i, p) in raw.products.into_iter().enumerate() {
        let field = |f: &str| format!("products[{i}].{f}");
        check_id(&p.id, &field("id"))?;
        if products.iter().any(|q| q.id == p.id) {
            return Err(ConfigError::new(field("id"), format!("duplicate product id \"{}\"", p.id)));
        }
        let mut ids = Vec::with_capacity(p.apis.len());
        for (j, name) in p.apis.iter().enumerate() {
            let idx = apis
                .iter()
                .position(|a| &a.id == name)
                .and_then(|x| u16::try_from(x).ok())
                .ok_or_else(|| ConfigError::new(format!("products[{i}].apis[{j}]"), format!("no API with id \"{name}\"")))?;
            ids.push(idx);
        }
        let rate_limit = p.rate_limit.map(|rl| rate_limit(rl, format!("p:{}", p.id), &field("rate_limit"))).transpose()?;
        let quota = p.quota.map(|q| quota_of(q, format!("p:{}", p.id), &field("quota"))).transpose()?;
        let token_limit =
            p.token_limit.map(|t| super::tokens::token_limit(t, format!("tp:{}", p.id), &field("token_limit"))).transpose()?;
        products.push(Product {
            id: p.id,
            name: p.name,
            description: p.description.unwrap_or_default(),
            apis: ids,
            rate_limit,
            quota,
            token_limit,
            subscription_required: p.subscription_required,
            listed: true,
            anonymous: None,
        });
    }

    let (subscriptions, keys) = super::subscriptions::compile(raw.subscriptions, &apis, &mut products)?;

    if matches!(settings.limits_store, crate::model::LimitsStore::Rls(_)) {
        super::limits::remote_can_count(&apis, &products)?;
    }
    if crate::memory::local_tables(&settings.limits_store) {
        let (slots, budget) = (settings.counter_slots, settings.counter_memory_kb);
        crate::memory::check_counter_budget(&apis, &products, slots, budget).map_err(|kb| {
            let why = format!("the counter tables would take {kb} KB when full, over {budget} KB: lower counter_slots or calls, or raise counter_memory_kb");
            ConfigError::new("counter_memory_kb", why)
        })?;
    }
    let portal = raw.portal.map(|p| compile_portal(p, &apis)).transpose()?;
    let per_subscription = raw.metrics.is_some_and(|m| m.per_subscription);
    let ops_per_api: Vec<usize> = apis.iter().map(|a| a.operations.len()).collect();
    let product_apis: Vec<&[u16]> = products.iter().map(|p| p.apis.as_slice()).collect();
    let sub_products: Vec<u32> = subscriptions.iter().map(|s| s.product).collect();
    let mut usage = crate::usage::Plan::build(&ops_per_api, &product_apis, &sub_products, per_subscription).map_err(|n| {
        let field = if per_subscription { "metrics.per_subscription" } else { "metrics" };
        ConfigError::new(field, format!("the usage metrics would need more than {n} label sets (at most {})", crate::usage::MAX_SLOTS))
    })?;
    usage.mark_tokens(|a, o| apis.get(usize::from(a)).and_then(|a| a.operations.get(usize::from(o))).is_some_and(|o| o.tokens.is_some()));
    let admin =
        raw.admin.map(|a| super::admin::compile(a.path, &a.key_sha256, &apis, portal.as_ref().map(|p| p.path.as_str()))).transpose()?;
    Ok(Gateway { apis, match_order: order, products, subscriptions, keys, settings, api_key_envs, portal, usage, admin })
}

fn compile_settings(raw: &RawConfig) -> Result<Settings, ConfigError> {
    for (f, v) in [("subscription_id_header", &raw.subscription_id_header), ("product_id_header", &raw.product_id_header)] {
        if !is_header_name(v) {
            return Err(ConfigError::new(f, "not a valid HTTP header name"));
        }
    }
    if raw.subscription_id_header.eq_ignore_ascii_case(&raw.product_id_header) {
        return Err(ConfigError::new("product_id_header", "must differ from subscription_id_header"));
    }
    if raw.max_cas_retries == 0 || raw.max_cas_retries > 10_000 {
        return Err(ConfigError::new("max_cas_retries", "must be 1..=10000"));
    }
    if raw.counter_slots == 0 || raw.counter_slots > 1_000_000 {
        return Err(ConfigError::new("counter_slots", "must be 1..=1000000"));
    }
    if raw.counter_memory_kb == 0 {
        return Err(ConfigError::new("counter_memory_kb", "must be at least 1"));
    }
    Ok(Settings {
        unmatched: raw.unmatched_requests,
        subscription_id_header: raw.subscription_id_header.to_ascii_lowercase(),
        product_id_header: raw.product_id_header.to_ascii_lowercase(),
        rate_limit_headers: raw.rate_limit_headers,
        export_metadata: raw.export_metadata,
        failure_mode: raw.failure_mode,
        max_cas_retries: raw.max_cas_retries,
        counter_slots: raw.counter_slots,
        counter_memory_kb: raw.counter_memory_kb,
        limits_store: super::limits_store::compile(raw.limits_store.as_ref())?,
        max_request_body_bytes: match raw.max_request_body_bytes {
            n @ 1..=MAX_BODY => n,
            _ => return Err(ConfigError::new("max_request_body_bytes", format!("must be 1..={MAX_BODY}"))),
        },
    })
}

fn compile_api(i: usize, a: RawApi, env: &dyn Environment, envs: &mut Vec<String>) -> Result<Api, ConfigError> {
    let field = |f: &str| format!("apis[{i}].{f}");
    check_id(&a.id, &field("id"))?;
    let bad_path = a.path.starts_with('/')
        || a.path.ends_with('/')
        || a.path.contains("//")
        || a.path.bytes().any(|b| b <= b' ' || b >= 0x7f || b"?#{}%".contains(&b));
    if bad_path {
        return Err(ConfigError::new(
            field("path"),
            "a URL suffix of visible ASCII without leading or trailing '/' (e.g. \"azureml-demo\")",
        ));
    }
    let prefix = if a.path.is_empty() { String::new() } else { format!("/{}", a.path) };
    if !is_header_name(&a.subscription_key_header) {
        return Err(ConfigError::new(field("subscription_key_header"), "not a valid HTTP header name"));
    }
    if a.subscription_key_query.is_empty() || a.subscription_key_query.bytes().any(|b| b <= b' ' || b >= 0x7f || b"&=#%+".contains(&b)) {
        return Err(ConfigError::new(field("subscription_key_query"), "not a valid query parameter name"));
    }
    let (authority, base_path) =
        parse_service_url(&a.service_url).ok_or_else(|| ConfigError::new(field("service_url"), "expected http(s)://host[:port][/path]"))?;
    let protocols = match &a.protocols {
        None => Protocols { http: true, https: true },
        Some(list) => {
            let mut p = Protocols { http: false, https: false };
            for (j, name) in list.iter().enumerate() {
                match name.as_str() {
                    "http" => p.http = true,
                    "https" => p.https = true,
                    _ => return Err(ConfigError::new(format!("apis[{i}].protocols[{j}]"), "expected \"http\" or \"https\"")),
                }
            }
            if !p.http && !p.https {
                return Err(ConfigError::new(field("protocols"), "give \"http\", \"https\" or both"));
            }
            p
        }
    };

    let azureml_studio = matches!(&a.operations, RawOperations::Preset(name) if name == "azureml-studio");
    let raw_ops = match a.operations {
        RawOperations::Preset(name) => super::presets::operations(&name).ok_or_else(|| {
            ConfigError::new(field("operations"), format!("unknown preset \"{name}\" (known: {})", super::presets::NAMES))
        })?,
        RawOperations::List(l) => l,
    };
    if raw_ops.is_empty() {
        return Err(ConfigError::new(field("operations"), "at least one operation is required"));
    }
    let mut ops: Vec<Operation> = Vec::with_capacity(raw_ops.len());
    let mut shapes = Vec::with_capacity(raw_ops.len());
    for (j, o) in raw_ops.into_iter().enumerate() {
        let ofield = |f: &str| format!("apis[{i}].operations[{j}].{f}");
        check_id(&o.id, &ofield("id"))?;
        if ops.iter().any(|p| p.id == o.id) {
            return Err(ConfigError::new(ofield("id"), format!("duplicate operation id \"{}\"", o.id)));
        }
        if o.method.is_empty() || !o.method.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(ConfigError::new(ofield("method"), "an upper-case HTTP method such as \"POST\""));
        }
        let template = Template::parse(&o.url_template).map_err(|r| ConfigError::new(ofield("url_template"), r))?;
        let rate_limit = o.rate_limit.map(|rl| rate_limit(rl, format!("o:{}/{}", a.id, o.id), &ofield("rate_limit"))).transpose()?;
        let quota = o.quota.map(|q| quota_of(q, format!("o:{}/{}", a.id, o.id), &ofield("quota"))).transpose()?;
        let tokens = o.tokens.as_deref().map(|t| super::tokens::token_op(t, &ofield("tokens"))).transpose()?;
        ops.push(Operation { id: o.id, name: o.name, description: o.description.unwrap_or_default(), rate_limit, quota, tokens });
        shapes.push((o.method, template));
    }
    let route = Route::build(shapes).map_err(|(j, r)| ConfigError::new(format!("apis[{i}].operations[{j}].url_template"), r))?;

    if a.backend_credentials.is_empty() {
        return Err(ConfigError::new(field("backend_credentials"), "at least one credential is required"));
    }
    let mut credentials: Vec<Credential> = Vec::with_capacity(a.backend_credentials.len());
    for (j, c) in a.backend_credentials.into_iter().enumerate() {
        let cfield = |f: &str| format!("apis[{i}].backend_credentials[{j}].{f}");
        nonempty(&c.workspace, &cfield("workspace"))?;
        nonempty(&c.service, &cfield("service"))?;
        let key = match (c.api_key, c.api_key_env) {
            (Some(k), None) => k,
            (None, Some(var)) => {
                let v = env.var(&var).ok_or_else(|| {
                    ConfigError::new(cfield("api_key_env"), format!("environment variable \"{var}\" is not set in the Wasm VM"))
                })?;
                if !envs.contains(&var) {
                    envs.push(var);
                }
                v
            }
            _ => return Err(ConfigError::new(cfield("api_key"), "give exactly one of api_key or api_key_env")),
        };
        if key.is_empty() {
            return Err(ConfigError::new(cfield("api_key"), "empty key"));
        }
        // The value goes into an HTTP header: visible ASCII only.
        if key.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(ConfigError::new(cfield("api_key"), "key must be visible ASCII (no spaces, controls or non-ASCII)"));
        }
        let wildcard = |s: String| if s == "*" { None } else { Some(s) };
        let header = c.header.unwrap_or_else(|| "authorization".into()).to_ascii_lowercase();
        if !is_header_name(&header) {
            return Err(ConfigError::new(cfield("header"), "not a valid HTTP header name"));
        }
        let value = if header == "authorization" { format!("Bearer {key}") } else { key };
        let cred = Credential { workspace: wildcard(c.workspace), service: wildcard(c.service), header, value };
        if credentials.iter().any(|d| d.workspace == cred.workspace && d.service == cred.service) {
            return Err(ConfigError::new(cfield("workspace"), "duplicate workspace/service pair"));
        }
        credentials.push(cred);
    }
    let rate_limit = a.rate_limit.map(|rl| rate_limit(rl, format!("a:{}", a.id), &field("rate_limit"))).transpose()?;
    let quota = a.quota.map(|q| quota_of(q, format!("a:{}", a.id), &field("quota"))).transpose()?;
    let token_limit = a.token_limit.map(|t| super::tokens::token_limit(t, format!("ta:{}", a.id), &field("token_limit"))).transpose()?;
    if token_limit.is_some() && ops.iter().all(|o| o.tokens.is_none()) {
        return Err(ConfigError::new(
            field("token_limit"),
            "this API has no operation that carries tokens (see `tokens` / the LLM presets)",
        ));
    }
    Ok(Api {
        id: a.id,
        name: a.name,
        description: a.description.unwrap_or_default(),
        azureml_studio,
        prefix,
        key_header_lc: a.subscription_key_header.to_ascii_lowercase(),
        key_header: a.subscription_key_header,
        key_query: a.subscription_key_query,
        protocols,
        service_url: a.service_url,
        service_authority: authority,
        service_base_path: base_path,
        operations: ops,
        route,
        credentials,
        rate_limit,
        quota,
        token_limit,
    })
}

/// The portal's path must be its own: not an API's suffix nor under one (the root API, whose
/// suffix is empty, excepted: there the portal's path is taken out of it), nor above one.
fn compile_portal(p: RawPortal, apis: &[Api]) -> Result<Portal, ConfigError> {
    let path = p.path;
    let bad = !path.starts_with('/')
        || path.len() < 2
        || path.len() > 256
        || path.ends_with('/')
        || path.contains("//")
        || path.bytes().any(|b| b <= b' ' || b >= 0x7f || b"?#{}%\"'<>`".contains(&b));
    if bad {
        return Err(ConfigError::new(
            "portal.path",
            "a URL path of visible ASCII, starting with '/', without a trailing '/' (e.g. \"/developer\")",
        ));
    }
    let under = |a: &str, b: &str| a.starts_with(b) && matches!(a.as_bytes().get(b.len()), None | Some(b'/'));
    if let Some(api) = apis.iter().find(|a| !a.prefix.is_empty() && (under(&path, &a.prefix) || under(&a.prefix, &path))) {
        return Err(ConfigError::new("portal.path", format!("overlaps the path of API \"{}\"", api.id)));
    }
    let title = p.title.unwrap_or_else(|| "Developer portal".to_string());
    if title.is_empty() || title.len() > 256 || title.chars().any(char::is_control) {
        return Err(ConfigError::new("portal.title", "1 to 256 bytes without control characters"));
    }
    Ok(Portal { path, title })
}

/// `http(s)://host[:port][/base]` → (`host[:port]`, `/base` without trailing slash).
fn parse_service_url(url: &str) -> Option<(String, String)> {
    if !url.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains(['@', '?', '#']) || path.contains(['?', '#']) {
        return None;
    }
    Some((authority.to_string(), path.trim_end_matches('/').to_string()))
}
