//! The operator's interface: the JSON plugin configuration, parsed and validated into a
//! [`Gateway`]. Everything here runs once per `on_configure`; nothing on the request path
//! allocates from this module.
//!
//! Every refusal is one [`ConfigError`] whose `field` is the JSON path of the offending value
//! (`apis[0].operations[2].url_template`), so the single log line the host writes names it.

use crate::keys::{Digest, KeyIndex};
use crate::route::{Operation, Route, Template};
use serde::Deserialize;
use std::fmt;

/// A configuration refusal: which field, and why. Never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError { field: field.into(), reason: reason.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid mlgate configuration: {}: {}", self.field, self.reason)
    }
}

// ---------------------------------------------------------------------------------------------
// Raw JSON shape (serde). Unknown fields are refused everywhere.
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    apis: Vec<RawApi>,
    #[serde(default)]
    products: Vec<RawProduct>,
    #[serde(default)]
    subscriptions: Vec<RawSubscription>,
    #[serde(default)]
    unmatched_requests: Unmatched,
    #[serde(default = "default_sub_header")]
    subscription_id_header: String,
    #[serde(default = "default_product_header")]
    product_id_header: String,
    #[serde(default = "default_true")]
    rate_limit_headers: bool,
    #[serde(default)]
    export_metadata: ExportMetadata,
    #[serde(default)]
    failure_mode: FailureMode,
    #[serde(default = "default_cas_retries")]
    max_cas_retries: u32,
    #[serde(default = "default_counter_slots")]
    counter_slots: u32,
}

fn default_sub_header() -> String {
    "x-mlgate-subscription-id".into()
}
fn default_product_header() -> String {
    "x-mlgate-product-id".into()
}
fn default_true() -> bool {
    true
}
fn default_cas_retries() -> u32 {
    64
}
fn default_counter_slots() -> u32 {
    4096
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    id: String,
    name: String,
    path: String,
    service_url: String,
    #[serde(default = "default_key_header")]
    subscription_key_header: String,
    #[serde(default = "default_key_query")]
    subscription_key_query: String,
    operations: RawOperations,
    backend_credentials: Vec<RawCredential>,
    #[serde(default)]
    rate_limit: Option<RateLimitConfig>,
}

fn default_key_header() -> String {
    "Ocp-Apim-Subscription-Key".into()
}
fn default_key_query() -> String {
    "subscription-key".into()
}

/// A preset name or a list of operations. A hand-written visitor instead of
/// `#[serde(untagged)]`, which buffers the input and costs ~10 KB of Wasm.
enum RawOperations {
    Preset(String),
    List(Vec<RawOperation>),
}

impl<'de> Deserialize<'de> for RawOperations {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawOperations;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a preset name such as \"azureml-studio\" or a list of operations")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawOperations, E> {
                Ok(RawOperations::Preset(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawOperations, A::Error> {
                let mut ops = Vec::new();
                while let Some(op) = seq.next_element()? {
                    ops.push(op);
                }
                Ok(RawOperations::List(ops))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOperation {
    id: String,
    name: String,
    method: String,
    url_template: String,
    #[serde(default)]
    rate_limit: Option<RateLimitConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredential {
    workspace: String,
    service: String,
    #[serde(default)]
    api_key: Option<String>,
    #[serde(default)]
    api_key_env: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProduct {
    id: String,
    name: String,
    apis: Vec<String>,
    #[serde(default)]
    rate_limit: Option<RateLimitConfig>,
    #[serde(default)]
    quota: Option<QuotaConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubscription {
    id: String,
    product: String,
    state: SubscriptionState,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    primary_key: Option<String>,
    #[serde(default)]
    secondary_key: Option<String>,
    #[serde(default)]
    primary_key_sha256: Option<String>,
    #[serde(default)]
    secondary_key_sha256: Option<String>,
    #[serde(default)]
    start: Option<String>,
}

/// APIM's `rate-limit` / `rate-limit-by-key` policy.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub calls: u32,
    pub renewal_period: u32,
    #[serde(default)]
    pub counter: Option<String>,
    #[serde(default)]
    pub remaining_calls_header: Option<String>,
    #[serde(default)]
    pub total_calls_header: Option<String>,
    #[serde(default)]
    pub retry_after_header: Option<String>,
}

/// APIM's `quota` policy: calls and/or bandwidth per fixed period.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    #[serde(default)]
    pub calls: Option<u64>,
    #[serde(default)]
    pub bandwidth_kb: Option<u64>,
    pub renewal_period: u64,
}

/// APIM's subscription states; only `active` admits.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SubscriptionState {
    Active,
    Suspended,
    Expired,
    Submitted,
    Rejected,
    Cancelled,
}

/// What to do with a request outside every configured API path.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Unmatched {
    /// 404 `Resource not found`, as APIM answers (fail closed).
    #[default]
    Reject,
    /// Let it through untouched (for listeners that also serve other traffic).
    PassThrough,
}

/// How the match is exported as filter state (each property is one host call).
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ExportMetadata {
    /// One property, `wasm.mlgate`: `api=…&operation=…&subscription=…&product=…&<params>`.
    #[default]
    Combined,
    /// Five properties: `wasm.mlgate.api`, `.operation`, `.subscription`, `.product`, `.params`.
    Fields,
    Off,
}

/// What to do when the shared counters cannot be updated.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    #[default]
    Deny,
    Allow,
}

// ---------------------------------------------------------------------------------------------
// Compiled configuration.
// ---------------------------------------------------------------------------------------------

/// The request-time view of the configuration: indices instead of names, keys as digests.
#[derive(Debug)]
pub struct Gateway {
    /// In declaration order; products refer to them by index.
    pub apis: Vec<Api>,
    /// Indices into `apis`, longest URL suffix first: the order requests are matched in.
    pub match_order: Vec<u16>,
    pub products: Vec<Product>,
    pub subscriptions: Vec<Subscription>,
    pub keys: KeyIndex,
    pub settings: Settings,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub unmatched: Unmatched,
    /// Lower-case header names for the caller identity mlgate sets upstream.
    pub subscription_id_header: String,
    pub product_id_header: String,
    pub rate_limit_headers: bool,
    pub export_metadata: ExportMetadata,
    pub failure_mode: FailureMode,
    pub max_cas_retries: u32,
    pub counter_slots: u32,
}

#[derive(Debug)]
pub struct Api {
    pub id: String,
    /// Names this API's rate-limit state inside records (`a:<id>`).
    pub limit_id: String,
    pub name: String,
    /// The URL suffix with a leading slash (`/azureml-demo`), or empty for the root API.
    pub prefix: String,
    /// The configured header name as written (for `WWW-Authenticate`).
    pub key_header: String,
    /// The same, lower-case (Envoy hands header names lower-case).
    pub key_header_lc: String,
    pub key_query: String,
    /// `host[:port]` of `service_url`, used as the upstream `:authority`.
    pub service_authority: String,
    /// Path of `service_url` without a trailing slash, prepended upstream (usually empty).
    pub service_base_path: String,
    pub route: Route,
    pub credentials: Vec<Credential>,
    pub rate_limit: Option<RateLimitConfig>,
}

#[derive(Debug)]
pub struct Credential {
    /// `None` is the `"*"` wildcard.
    pub workspace: Option<String>,
    pub service: Option<String>,
    /// The ready `Authorization` header value: `Bearer <key>`. Never logged.
    pub authorization: String,
}

impl Credential {
    fn specificity(&self) -> u8 {
        (self.workspace.is_some() as u8) * 2 + self.service.is_some() as u8
    }
}

#[derive(Debug)]
pub struct Product {
    pub id: String,
    /// Names this product's rate-limit state inside records (`p:<id>`).
    pub limit_id: String,
    pub name: String,
    /// Indices into `Gateway::apis`.
    pub apis: Vec<u16>,
    pub rate_limit: Option<RateLimitConfig>,
    pub quota: Option<QuotaConfig>,
}

#[derive(Debug)]
pub struct Subscription {
    pub id: String,
    /// Its shared-data record (`mlgate/s/<id>`), built once here rather than per request.
    pub record_key: String,
    pub name: Option<String>,
    pub product: u32,
    pub state: SubscriptionState,
    /// Start of the quota periods, milliseconds since the Unix epoch.
    pub start_ms: u64,
}

/// The environment the configuration is resolved against (the Wasm VM's variables).
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment (in Envoy: `vm_config.environment_variables`).
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

pub const MAX_RATE_LIMIT_CALLS: u32 = 10_000;
const MAX_APIS: usize = u16::MAX as usize;

impl Gateway {
    /// Parses and validates the plugin configuration. Refuses anything doubtful.
    pub fn from_json(json: &[u8], env: &dyn Environment) -> Result<Gateway, ConfigError> {
        let raw: RawConfig = serde_json::from_slice(json).map_err(|e| {
            let path = crate::jsonpath::path_at(json, e.line(), e.column());
            let field = if path.is_empty() { "configuration".to_string() } else { path };
            // serde_json's messages name fields and positions; they echo only the offending
            // scalar for type errors, which is never where a key belongs.
            ConfigError::new(field, strip_position(&e.to_string()))
        })?;
        compile(raw, env)
    }

    /// Finds the credential for a workspace/service pair: the most specific entry wins.
    pub fn credential<'a>(api: &'a Api, workspace: &str, service: &str) -> Option<&'a Credential> {
        let mut best: Option<&Credential> = None;
        for c in &api.credentials {
            let ws_ok = c.workspace.as_deref().is_none_or(|w| w == workspace);
            let svc_ok = c.service.as_deref().is_none_or(|s| s == service);
            if ws_ok && svc_ok && best.is_none_or(|b| c.specificity() > b.specificity()) {
                best = Some(c);
            }
        }
        best
    }
}

/// serde_json appends " at line L column C"; the field path replaces it.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

fn compile(raw: RawConfig, env: &dyn Environment) -> Result<Gateway, ConfigError> {
    let settings = compile_settings(&raw)?;
    if raw.apis.is_empty() {
        return Err(ConfigError::new("apis", "at least one API is required"));
    }
    if raw.apis.len() > MAX_APIS {
        return Err(ConfigError::new("apis", "too many APIs"));
    }
    let mut apis: Vec<Api> = Vec::with_capacity(raw.apis.len());
    for (i, a) in raw.apis.into_iter().enumerate() {
        let api = compile_api(i, a, env)?;
        if apis.iter().any(|b| b.id == api.id) {
            return Err(ConfigError::new(format!("apis[{i}].id"), format!("duplicate API id \"{}\"", api.id)));
        }
        if apis.iter().any(|b| b.prefix == api.prefix) {
            return Err(ConfigError::new(format!("apis[{i}].path"), "another API already uses this path"));
        }
        apis.push(api);
    }
    // Longest suffix first, so `/a/b` wins over `/a`.
    let mut order: Vec<u16> = (0..apis.len() as u16).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(apis[i as usize].prefix.len()));

    let mut products: Vec<Product> = Vec::with_capacity(raw.products.len());
    for (i, p) in raw.products.into_iter().enumerate() {
        let field = |f: &str| format!("products[{i}].{f}");
        nonempty(&p.id, &field("id"))?;
        if products.iter().any(|q| q.id == p.id) {
            return Err(ConfigError::new(field("id"), format!("duplicate product id \"{}\"", p.id)));
        }
        let mut ids = Vec::with_capacity(p.apis.len());
        for (j, name) in p.apis.iter().enumerate() {
            let idx = apis
                .iter()
                .position(|a| &a.id == name)
                .ok_or_else(|| ConfigError::new(format!("products[{i}].apis[{j}]"), format!("no API with id \"{name}\"")))?;
            ids.push(idx as u16);
        }
        if let Some(rl) = &p.rate_limit {
            check_rate_limit(rl, &field("rate_limit"))?;
        }
        if let Some(q) = &p.quota {
            check_quota(q, &field("quota"))?;
        }
        products.push(Product { limit_id: format!("p:{}", p.id), id: p.id, name: p.name, apis: ids, rate_limit: p.rate_limit, quota: p.quota });
    }

    let mut subscriptions = Vec::with_capacity(raw.subscriptions.len());
    let mut keys = KeyIndex::with_capacity(raw.subscriptions.len() * 2);
    let mut seen_ids = std::collections::HashSet::with_capacity(raw.subscriptions.len());
    for (i, s) in raw.subscriptions.into_iter().enumerate() {
        let field = |f: &str| format!("subscriptions[{i}].{f}");
        nonempty(&s.id, &field("id"))?;
        if !seen_ids.insert(s.id.clone()) {
            return Err(ConfigError::new(field("id"), format!("duplicate subscription id \"{}\"", s.id)));
        }
        let product = products
            .iter()
            .position(|p| p.id == s.product)
            .ok_or_else(|| ConfigError::new(field("product"), format!("no product with id \"{}\"", s.product)))?;
        let start_ms = match &s.start {
            None => 0,
            Some(t) => crate::time::parse_rfc3339_ms(t)
                .ok_or_else(|| ConfigError::new(field("start"), "not an RFC 3339 timestamp at or after 1970"))?,
        };
        let idx = subscriptions.len() as u32;
        let mut any_key = false;
        for (slot, plain, hashed) in [
            ("primary_key", &s.primary_key, &s.primary_key_sha256),
            ("secondary_key", &s.secondary_key, &s.secondary_key_sha256),
        ] {
            let digest = match (plain, hashed) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::new(field(slot), format!("give {slot} or {slot}_sha256, not both")))
                }
                (Some(k), None) => {
                    if k.is_empty() {
                        return Err(ConfigError::new(field(slot), "empty key"));
                    }
                    Some(Digest::of(k.as_bytes()))
                }
                (None, Some(h)) => Some(
                    Digest::from_hex(h)
                        .ok_or_else(|| ConfigError::new(field(&format!("{slot}_sha256")), "not 64 hex digits"))?,
                ),
                (None, None) => None,
            };
            if let Some(d) = digest {
                any_key = true;
                if !keys.insert(d, idx) {
                    return Err(ConfigError::new(field(slot), "duplicate subscription key (used by another subscription or slot)"));
                }
            }
        }
        if !any_key {
            return Err(ConfigError::new(field("primary_key"), "a subscription needs a primary or secondary key"));
        }
        subscriptions.push(Subscription { record_key: format!("mlgate/s/{}", s.id), id: s.id, name: s.name, product: product as u32, state: s.state, start_ms });
    }

    Ok(Gateway { apis, match_order: order, products, subscriptions, keys, settings })
}

fn compile_settings(raw: &RawConfig) -> Result<Settings, ConfigError> {
    for (f, v) in [("subscription_id_header", &raw.subscription_id_header), ("product_id_header", &raw.product_id_header)] {
        if !is_header_name(v) {
            return Err(ConfigError::new(f, "not a valid HTTP header name"));
        }
    }
    if raw.max_cas_retries == 0 || raw.max_cas_retries > 10_000 {
        return Err(ConfigError::new("max_cas_retries", "must be 1..=10000"));
    }
    if raw.counter_slots == 0 || raw.counter_slots > 1_000_000 {
        return Err(ConfigError::new("counter_slots", "must be 1..=1000000"));
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
    })
}

fn compile_api(i: usize, a: RawApi, env: &dyn Environment) -> Result<Api, ConfigError> {
    let field = |f: &str| format!("apis[{i}].{f}");
    nonempty(&a.id, &field("id"))?;
    if a.path.starts_with('/') || a.path.ends_with('/') || a.path.contains("//") || a.path.contains(['?', '#', '{', '}', ' ']) {
        return Err(ConfigError::new(field("path"), "a URL suffix without leading or trailing '/' (e.g. \"azureml-demo\")"));
    }
    let prefix = if a.path.is_empty() { String::new() } else { format!("/{}", a.path) };
    if !is_header_name(&a.subscription_key_header) {
        return Err(ConfigError::new(field("subscription_key_header"), "not a valid HTTP header name"));
    }
    if a.subscription_key_query.is_empty() || a.subscription_key_query.contains(['&', '=', '#', ' ']) {
        return Err(ConfigError::new(field("subscription_key_query"), "not a valid query parameter name"));
    }
    let (authority, base_path) =
        parse_service_url(&a.service_url).ok_or_else(|| ConfigError::new(field("service_url"), "expected http(s)://host[:port][/path]"))?;

    let raw_ops = match a.operations {
        RawOperations::Preset(name) if name == "azureml-studio" => azureml_studio_preset(),
        RawOperations::Preset(name) => {
            return Err(ConfigError::new(field("operations"), format!("unknown preset \"{name}\" (known: \"azureml-studio\")")))
        }
        RawOperations::List(l) => l,
    };
    if raw_ops.is_empty() {
        return Err(ConfigError::new(field("operations"), "at least one operation is required"));
    }
    let mut ops = Vec::with_capacity(raw_ops.len());
    for (j, o) in raw_ops.into_iter().enumerate() {
        let ofield = |f: &str| format!("apis[{i}].operations[{j}].{f}");
        nonempty(&o.id, &ofield("id"))?;
        if ops.iter().any(|p: &Operation| p.id == o.id) {
            return Err(ConfigError::new(ofield("id"), format!("duplicate operation id \"{}\"", o.id)));
        }
        if o.method.is_empty() || !o.method.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(ConfigError::new(ofield("method"), "an upper-case HTTP method such as \"POST\""));
        }
        let template = Template::parse(&o.url_template).map_err(|r| ConfigError::new(ofield("url_template"), r))?;
        if let Some(rl) = &o.rate_limit {
            check_rate_limit(rl, &ofield("rate_limit"))?;
        }
        ops.push(Operation { limit_id: format!("o:{}/{}", a.id, o.id), id: o.id, name: o.name, method: o.method, template, rate_limit: o.rate_limit });
    }
    let route = Route::build(ops).map_err(|(j, r)| ConfigError::new(format!("apis[{i}].operations[{j}].url_template"), r))?;

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
            (None, Some(var)) => env
                .var(&var)
                .ok_or_else(|| ConfigError::new(cfield("api_key_env"), format!("environment variable \"{var}\" is not set in the Wasm VM")))?,
            _ => return Err(ConfigError::new(cfield("api_key"), "give exactly one of api_key or api_key_env")),
        };
        if key.is_empty() {
            return Err(ConfigError::new(cfield("api_key"), "empty key"));
        }
        if key.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(ConfigError::new(cfield("api_key"), "key contains spaces or control characters"));
        }
        let wildcard = |s: String| if s == "*" { None } else { Some(s) };
        let cred = Credential { workspace: wildcard(c.workspace), service: wildcard(c.service), authorization: format!("Bearer {key}") };
        if credentials.iter().any(|d| d.workspace == cred.workspace && d.service == cred.service) {
            return Err(ConfigError::new(cfield("workspace"), "duplicate workspace/service pair"));
        }
        credentials.push(cred);
    }
    if let Some(rl) = &a.rate_limit {
        check_rate_limit(rl, &field("rate_limit"))?;
    }
    Ok(Api {
        limit_id: format!("a:{}", a.id),
        id: a.id,
        name: a.name,
        prefix,
        key_header_lc: a.subscription_key_header.to_ascii_lowercase(),
        key_header: a.subscription_key_header,
        key_query: a.subscription_key_query,
        service_authority: authority,
        service_base_path: base_path,
        route,
        credentials,
        rate_limit: a.rate_limit,
    })
}

/// The five AzureML Studio (classic) web-service operations as APIM imports them.
fn azureml_studio_preset() -> Vec<RawOperation> {
    const WS: &str = "/workspaces/{workspace}/services/{service}";
    let op = |id: &str, name: &str, method: &str, tail: &str| RawOperation {
        id: id.into(),
        name: name.into(),
        method: method.into(),
        url_template: format!("{WS}{tail}"),
        rate_limit: None,
    };
    vec![
        op("rrs-execute", "Execute (request-response)", "POST", "/execute?api-version={apiversion}&details={details}"),
        op("bes-submit", "Submit batch job", "POST", "/jobs?api-version={apiversion}"),
        op("bes-start", "Start batch job", "POST", "/jobs/{jobid}/start?api-version={apiversion}"),
        op("bes-status", "Get batch job status", "GET", "/jobs/{jobid}?api-version={apiversion}"),
        op("bes-delete", "Delete batch job", "DELETE", "/jobs/{jobid}?api-version={apiversion}"),
    ]
}

fn check_rate_limit(rl: &RateLimitConfig, field: &str) -> Result<(), ConfigError> {
    if rl.calls == 0 || rl.calls > MAX_RATE_LIMIT_CALLS {
        return Err(ConfigError::new(format!("{field}.calls"), format!("must be 1..={MAX_RATE_LIMIT_CALLS}")));
    }
    if rl.renewal_period == 0 || rl.renewal_period > 31_536_000 {
        return Err(ConfigError::new(format!("{field}.renewal_period"), "must be 1..=31536000 seconds"));
    }
    if let Some(c) = &rl.counter {
        let ok = c == "ip" || c.strip_prefix("header:").is_some_and(is_header_name);
        if !ok {
            return Err(ConfigError::new(format!("{field}.counter"), "expected \"ip\" or \"header:<name>\""));
        }
    }
    for (f, v) in [
        ("remaining_calls_header", &rl.remaining_calls_header),
        ("total_calls_header", &rl.total_calls_header),
        ("retry_after_header", &rl.retry_after_header),
    ] {
        if let Some(h) = v {
            if !is_header_name(h) {
                return Err(ConfigError::new(format!("{field}.{f}"), "not a valid HTTP header name"));
            }
        }
    }
    Ok(())
}

fn check_quota(q: &QuotaConfig, field: &str) -> Result<(), ConfigError> {
    if q.calls.is_none() && q.bandwidth_kb.is_none() {
        return Err(ConfigError::new(field, "give calls, bandwidth_kb or both"));
    }
    if q.calls == Some(0) {
        return Err(ConfigError::new(format!("{field}.calls"), "must be at least 1"));
    }
    if q.bandwidth_kb == Some(0) || q.bandwidth_kb.is_some_and(|b| b > u64::MAX / 2048) {
        return Err(ConfigError::new(format!("{field}.bandwidth_kb"), "must be at least 1 and fit in bytes"));
    }
    if q.renewal_period == 0 || q.renewal_period > 100 * 31_536_000 {
        return Err(ConfigError::new(format!("{field}.renewal_period"), "must be 1 second to 100 years (never-renewing quotas are not supported)"));
    }
    Ok(())
}

fn nonempty(v: &str, field: &str) -> Result<(), ConfigError> {
    if v.is_empty() {
        Err(ConfigError::new(field, "must not be empty"))
    } else {
        Ok(())
    }
}

/// RFC 9110 token characters.
pub(crate) fn is_header_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `http(s)://host[:port][/base]` → (`host[:port]`, `/base` without trailing slash).
fn parse_service_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains(['@', '?', '#', ' ']) || path.contains(['?', '#']) {
        return None;
    }
    Some((authority.to_string(), path.trim_end_matches('/').to_string()))
}
