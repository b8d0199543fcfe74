//! The compiled configuration: what every request is judged against. Built once per
//! `on_configure` by [`crate::config`]; read-only afterwards. Names are resolved to indices,
//! keys to digests, limits to their precomputed ids and periods: nothing here is parsed,
//! lower-cased or formatted per request.

use crate::keys::{Digest, KeyIndex};
use crate::route::Route;

/// The request-time view of the configuration.
pub struct Gateway {
    /// In declaration order; products refer to them by index.
    pub apis: Vec<Api>,
    /// Indices into `apis`, longest URL suffix first: the order requests are matched in.
    pub match_order: Vec<u16>,
    pub products: Vec<Product>,
    pub subscriptions: Vec<Subscription>,
    pub keys: KeyIndex,
    pub settings: Settings,
    /// Environment variables named by `api_key_env` (for the CLI's Envoy bootstrap).
    pub api_key_envs: Vec<String>,
    /// The developer portal, if configured (see [`crate::local`]).
    pub portal: Option<Portal>,
    /// The usage metrics' slot table (see [`crate::usage`]).
    pub usage: crate::usage::Plan,
    /// The admin API and usage dashboard, if configured (served by the `mlgate-admin` crate).
    pub admin: Option<Admin>,
}

/// `"admin"`: where the admin API is served, and the digest of its key.
pub struct Admin {
    /// Starts with '/', no trailing '/' (`/mlgate-admin`).
    pub path: String,
    pub key: Digest,
}

/// `"portal"`: where the developer portal is served, and its title.
pub struct Portal {
    /// Starts with '/', no trailing '/' (`/developer`).
    pub path: String,
    pub title: String,
}

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
    /// The most memory every keyed limit's counter table may take when full, in KB of 1024
    /// bytes (`counter_memory_kb`; see `memory`).
    pub counter_memory_kb: u32,
    /// Where limits are counted: this Envoy's shared data, or a rate limit service.
    pub limits_store: LimitsStore,
    /// The largest request body a token-metered operation reads (`max_request_body_bytes`).
    pub max_request_body_bytes: u32,
}

/// Where limits are counted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LimitsStore {
    /// Process-local proxy-wasm shared data (exact across this Envoy's workers).
    #[default]
    SharedData,
    /// A rate limit service (exact across every Envoy that uses it).
    Rls(RlsSettings),
}

/// `limits_store.rls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RlsSettings {
    /// The Envoy cluster of the rate limit service (HTTP/2).
    pub cluster: String,
    /// `RateLimitRequest.domain`.
    pub domain: String,
    /// How long a request waits for the answer.
    pub timeout_ms: u32,
    pub on_failure: OnFailure,
    /// Consecutive failures that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker skips the store before one request probes it.
    pub breaker_open_ms: u64,
}

/// What a request gets when the remote store fails (error, timeout, garbage, breaker open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// 503 (the default).
    Deny,
    /// Forward, uncounted.
    Allow,
    /// Count in this Envoy's shared data instead (per-process limits until the store is back).
    Local,
}

/// What to do with a request outside every configured API path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unmatched {
    /// 404 `Resource not found`, as APIM answers (fail closed).
    #[default]
    Reject,
    /// Let it through, minus any client copy of the identity headers.
    PassThrough,
}

/// How the match is exported as filter state (each property is one host call, and Envoy's
/// work storing it). Off unless configured: nothing is exported that nothing reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExportMetadata {
    /// One property, `wasm.mlgate`: `api=…&operation=…&subscription=…&product=…&<params>`.
    Combined,
    /// Five properties: `wasm.mlgate.api`, `.operation`, `.subscription`, `.product`, `.params`.
    Fields,
    #[default]
    Off,
}

/// What to do when the limit store cannot be read or updated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailureMode {
    #[default]
    Deny,
    Allow,
}

/// APIM's subscription states; only `Active` admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionState {
    Active,
    Suspended,
    Expired,
    Submitted,
    Rejected,
    Cancelled,
}

/// The URL schemes an API accepts (APIM's per-API `protocols`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protocols {
    pub http: bool,
    pub https: bool,
}

pub struct Api {
    pub id: String,
    /// For the developer portal and the OpenAPI export.
    pub name: String,
    pub description: String,
    /// The operations are the `azureml-studio` preset (the export knows their bodies).
    pub azureml_studio: bool,
    /// The URL suffix with a leading slash (`/azureml-demo`), or empty for the root API.
    pub prefix: String,
    /// The configured header name as written (for `WWW-Authenticate`).
    pub key_header: String,
    /// The same, lower-case (Envoy hands header names lower-case).
    pub key_header_lc: String,
    pub key_query: String,
    pub protocols: Protocols,
    /// `service_url` as configured.
    pub service_url: String,
    /// `host[:port]` of `service_url`, used as the upstream `:authority`.
    pub service_authority: String,
    /// Path of `service_url` without a trailing slash, prepended upstream (usually empty).
    pub service_base_path: String,
    pub operations: Vec<Operation>,
    pub route: Route,
    pub credentials: Vec<Credential>,
    pub rate_limit: Option<RateLimit>,
    pub quota: Option<Quota>,
    /// `token_limit` on the API: counted per subscription, beside the product's.
    pub token_limit: Option<TokenLimit>,
}

/// An operation's identity and limit; its method and URL template live in the API's
/// [`Route`] at the same index.
pub struct Operation {
    pub id: String,
    pub name: String,
    pub description: String,
    pub rate_limit: Option<RateLimit>,
    pub quota: Option<Quota>,
    /// The body of this operation carries tokens (an LLM call): mlgate reads it, bounds its
    /// tokens and meters the response's usage.
    pub tokens: Option<TokenOp>,
}

/// The LLM operations whose bodies mlgate reads (the `openai` and `azure-openai` presets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenOp {
    Chat,
    Completions,
    Embeddings,
}

pub struct Credential {
    /// `None` is the `"*"` wildcard.
    pub workspace: Option<String>,
    pub service: Option<String>,
    /// The header the backend key goes in, lower-case (`authorization`, or e.g. `api-key`).
    pub header: String,
    /// Its ready value: `Bearer <key>` for `authorization`, else the key. Never logged, never
    /// printed: this type has no `Debug`.
    pub value: String,
}

impl Credential {
    fn specificity(&self) -> u8 {
        u8::from(self.workspace.is_some()) * 2 + u8::from(self.service.is_some())
    }
}

pub struct Product {
    pub id: String,
    pub name: String,
    pub description: String,
    /// Indices into `Gateway::apis`.
    pub apis: Vec<u16>,
    pub rate_limit: Option<RateLimit>,
    pub quota: Option<Quota>,
    pub token_limit: Option<TokenLimit>,
    /// `false`: an open product; calls without a key count as its anonymous subscription.
    pub subscription_required: bool,
    /// `false`: the stand-in product of subscriptions scoped to APIs (no id, no limits; not
    /// shown in the portal, reports or metrics labels).
    pub listed: bool,
    /// An open product's anonymous subscription (index into `Gateway::subscriptions`).
    pub anonymous: Option<u32>,
}

pub struct Subscription {
    pub id: String,
    /// Its record in the limit store (`mlgate/s/<id>`), built once here.
    pub record_key: String,
    pub product: u32,
    pub state: SubscriptionState,
    /// Start of the quota periods, milliseconds since the Unix epoch.
    pub start_ms: u64,
}

/// APIM's `rate-limit` / `rate-limit-by-key`: `calls` per sliding window of `period_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// Names this limit's state inside records: `p:<product>`, `a:<api>`, `o:<api>/<op>`.
    pub id: String,
    pub calls: u32,
    pub period_ms: u64,
    pub counter: Counter,
    /// Lower-case response header names, as configured.
    pub remaining_calls_header: Option<String>,
    pub total_calls_header: Option<String>,
    pub retry_after_header: Option<String>,
    /// APIM's `increment-condition`: only calls whose response status is in the set count
    /// (`None`: every admitted call counts).
    pub increment_condition: Option<StatusSet>,
}

/// A set of HTTP statuses (`increment_condition`), one bit per status 0..=639.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusSet([u64; 10]);

impl StatusSet {
    pub fn insert(&mut self, status: u16) {
        if let Some(w) = self.0.get_mut(usize::from(status / 64)) {
            *w |= 1 << (status % 64);
        }
    }
    /// Whether `status` counts (0, no response at all, counts only if inserted).
    pub fn contains(&self, status: u16) -> bool {
        self.0.get(usize::from(status / 64)).is_some_and(|w| w & (1 << (status % 64)) != 0)
    }
}

/// What a rate limit counts per.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Counter {
    /// Per subscription (APIM's `rate-limit`).
    Subscription,
    /// Per downstream address, as Envoy established it.
    Ip,
    /// Per value of a request header (lower-case name).
    Header(String),
}

/// APIM's `quota`: calls and/or bytes per fixed period from the subscription's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    /// Names this quota's state: `q` (the product's, in the subscription record), `q:a:<api>`,
    /// `q:o:<api>/<op>`, or `q:p:<product>` for a product quota counted by key.
    pub id: String,
    /// What the quota counts per: the subscription (APIM's `quota`), or a key (`quota-by-key`).
    pub counter: Counter,
    /// A quota counted by key renews on a grid from `first_period_start` (APIM's default is
    /// 0001-01-01T00:00:00Z): here the grid's offset, ms since the Unix epoch modulo the period.
    /// A subscription's quota renews from the subscription's start instead.
    pub anchor_ms: u64,
    pub calls: Option<u64>,
    pub bandwidth_bytes: Option<u64>,
    pub period_ms: u64,
    /// As on [`RateLimit`]: only calls whose status is in the set count.
    pub increment_condition: Option<StatusSet>,
}

/// APIM's `llm-token-limit`: tokens per minute (a sliding window) and/or a token quota per
/// calendar period, each call reserving an upper bound of its tokens at admission and settled
/// to the backend's reported usage when its response ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenLimit {
    /// Names this limit's segments inside records: `tp:<product>` or `ta:<api>` (the quota's
    /// segment adds `/q`).
    pub id: String,
    pub quota_id: String,
    pub tokens_per_minute: Option<u64>,
    pub quota: Option<(u64, QuotaPeriod)>,
    /// Reserve the prompt's bound at admission (`false`: only the completion bound is reserved
    /// and the prompt is charged when the usage arrives, as APIM does; not exact).
    pub estimate_prompt_tokens: bool,
    pub default_max_completion_tokens: u64,
    /// Lower-case response header names, as configured.
    pub remaining_tokens_header: Option<String>,
    pub remaining_quota_tokens_header: Option<String>,
    pub tokens_consumed_header: Option<String>,
    pub retry_after_header: Option<String>,
}

/// `token_quota_period`: UTC calendar units, as APIM truncates the timestamp to the unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaPeriod {
    Hourly,
    Daily,
    /// ISO weeks, from Monday 00:00 UTC.
    Weekly,
    Monthly,
    Yearly,
}

impl Gateway {
    /// The credential for a workspace/service pair: the most specific entry wins.
    pub fn credential<'a>(api: &'a Api, workspace: &[u8], service: &[u8]) -> Option<&'a Credential> {
        let mut best: Option<&Credential> = None;
        for c in &api.credentials {
            let ws_ok = c.workspace.as_deref().is_none_or(|w| w.as_bytes() == workspace);
            let svc_ok = c.service.as_deref().is_none_or(|s| s.as_bytes() == service);
            if ws_ok && svc_ok && best.is_none_or(|b| c.specificity() > b.specificity()) {
                best = Some(c);
            }
        }
        best
    }
}

/// The usage slots, by the model's names.
impl Gateway {
    /// The usage slot a call counts in.
    pub fn usage_slot(&self, m: &crate::usage::Matched) -> Option<u32> {
        let product = m.sub.and_then(|s| self.subscriptions.get(s as usize)).map(|s| s.product);
        self.usage.slot(m, product)
    }

    /// `api=.=…;.;operation=.=…;.;product=.=…;.;subscription=.=…;.;` for the labels the slot has,
    /// ids percent-encoded (configure time and rare paths only: it allocates).
    pub fn usage_labels(&self, slot: u32) -> String {
        let mut out = String::new();
        let Some(s) = self.usage.get(slot) else { return out };
        let api = s.api.and_then(|a| self.apis.get(usize::from(a)));
        let mut push = |label: &str, value: Option<&str>| {
            if let Some(v) = value {
                out.push_str(label);
                out.push_str("=.=");
                out.extend(percent_encoding::percent_encode(v.as_bytes(), crate::usage::LABEL_VALUE));
                out.push_str(";.;");
            }
        };
        push("api", api.map(|a| a.id.as_str()));
        push("operation", s.op.and_then(|o| api?.operations.get(usize::from(o))).map(|o| o.id.as_str()));
        // The stand-in product of API-scoped subscriptions and an open product's anonymous
        // subscription have no id: no label.
        push("product", s.product.and_then(|p| self.products.get(p as usize)).map(|p| p.id.as_str()).filter(|id| !id.is_empty()));
        push("subscription", s.sub.and_then(|u| self.subscriptions.get(u as usize)).map(|u| u.id.as_str()).filter(|id| !id.is_empty()));
        out
    }

    /// Every metric of `slot` the host must define (see [`crate::usage::definitions`]).
    pub fn usage_definitions(&self, slot: u32) -> Vec<(usize, crate::usage::Kind, String)> {
        match self.usage.get(slot) {
            Some(s) => crate::usage::definitions(s, &self.usage_labels(slot)),
            None => Vec::new(),
        }
    }
}
