//! The operator's interface: the JSON plugin configuration exactly as written, as serde
//! types. Private to `config`: the rest of the crate sees only the compiled model. Unknown
//! fields are refused everywhere.

use crate::model::{ExportMetadata, FailureMode, SubscriptionState, Unmatched};
use serde::Deserialize;
use std::fmt;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) apis: Vec<RawApi>,
    #[serde(default)]
    pub(super) products: Vec<RawProduct>,
    #[serde(default)]
    pub(super) subscriptions: Vec<RawSubscription>,
    #[serde(default, with = "UnmatchedDef")]
    pub(super) unmatched_requests: Unmatched,
    #[serde(default = "default_sub_header")]
    pub(super) subscription_id_header: String,
    #[serde(default = "default_product_header")]
    pub(super) product_id_header: String,
    /// Off by default, as in APIM (its `remaining-calls-header-name` and
    /// `total-calls-header-name` have no default).
    #[serde(default)]
    pub(super) rate_limit_headers: bool,
    #[serde(default, with = "ExportDef")]
    pub(super) export_metadata: ExportMetadata,
    #[serde(default, with = "FailureDef")]
    pub(super) failure_mode: FailureMode,
    #[serde(default = "default_cas_retries")]
    pub(super) max_cas_retries: u32,
    #[serde(default = "default_counter_slots")]
    pub(super) counter_slots: u32,
    /// The cap on every keyed limit's full counter table together, in KB.
    #[serde(default = "default_counter_memory_kb")]
    pub(super) counter_memory_kb: u32,
    /// `"shared_data"` (default) or `{"rls": {...}}` (see `limits_store`).
    #[serde(default)]
    pub(super) limits_store: Option<super::limits_store::RawLimitsStore>,
    /// The developer portal (issue 11): absent, there is none.
    #[serde(default)]
    pub(super) portal: Option<RawPortal>,
    /// Usage metrics: `{"per_subscription": true}` adds a subscription label (opt-in: it
    /// multiplies the stats by the subscriptions).
    #[serde(default)]
    pub(super) metrics: Option<RawMetrics>,
    /// The admin API (APIM's reports) and usage dashboard: absent, there is none.
    #[serde(default)]
    pub(super) admin: Option<RawAdmin>,
    /// The largest request body a token-metered operation reads (bytes); larger ones get 413.
    #[serde(default = "default_max_body")]
    pub(super) max_request_body_bytes: u32,
}

fn default_max_body() -> u32 {
    1 << 20
}

/// APIM's `llm-token-limit` policy, on a product or an API.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTokenLimit {
    #[serde(default)]
    pub(super) tokens_per_minute: Option<u64>,
    #[serde(default)]
    pub(super) token_quota: Option<u64>,
    /// `"hourly"`, `"daily"`, `"weekly"`, `"monthly"` or `"yearly"`.
    #[serde(default)]
    pub(super) token_quota_period: Option<String>,
    #[serde(default = "default_true")]
    pub(super) estimate_prompt_tokens: bool,
    pub(super) default_max_completion_tokens: u64,
    #[serde(default)]
    pub(super) remaining_tokens_header: Option<String>,
    #[serde(default)]
    pub(super) remaining_quota_tokens_header: Option<String>,
    #[serde(default)]
    pub(super) tokens_consumed_header: Option<String>,
    #[serde(default)]
    pub(super) retry_after_header: Option<String>,
}

/// `"metrics": {"per_subscription": false}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    #[serde(default)]
    pub(super) per_subscription: bool,
}

/// `"admin": {"path": "/mlgate-admin", "key_sha256": "<hex SHA-256 of the admin key>"}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) path: String,
    pub(super) key_sha256: String,
}

/// `"portal": {"path": "/developer", "title": "…"}`: pages, OpenAPI export and "My
/// subscription", answered by the gateway itself under `path`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPortal {
    pub(super) path: String,
    #[serde(default)]
    pub(super) title: Option<String>,
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
fn default_counter_memory_kb() -> u32 {
    crate::memory::DEFAULT_COUNTER_MEMORY_KB
}
fn default_counter_slots() -> u32 {
    4096
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    pub(super) id: String,
    /// Shown in the developer portal and the OpenAPI export.
    pub(super) name: String,
    #[serde(default)]
    pub(super) description: Option<String>,
    pub(super) path: String,
    pub(super) service_url: String,
    /// APIM's per-API URL schemes: `["https"]`, `["http"]` or both (the default).
    #[serde(default)]
    pub(super) protocols: Option<Vec<String>>,
    #[serde(default = "default_key_header")]
    pub(super) subscription_key_header: String,
    #[serde(default = "default_key_query")]
    pub(super) subscription_key_query: String,
    pub(super) operations: RawOperations,
    pub(super) backend_credentials: Vec<RawCredential>,
    #[serde(default)]
    pub(super) rate_limit: Option<RawRateLimit>,
    #[serde(default)]
    pub(super) quota: Option<RawQuota>,
    #[serde(default)]
    pub(super) token_limit: Option<RawTokenLimit>,
}

fn default_key_header() -> String {
    "Ocp-Apim-Subscription-Key".into()
}
fn default_key_query() -> String {
    "subscription-key".into()
}

/// A preset name or a list of operations. A hand-written visitor instead of
/// `#[serde(untagged)]`, which buffers the input and costs ~10 KB of Wasm.
pub(super) enum RawOperations {
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
pub(super) struct RawOperation {
    pub(super) id: String,
    /// Shown in the developer portal; the OpenAPI `summary`.
    pub(super) name: String,
    #[serde(default)]
    pub(super) description: Option<String>,
    pub(super) method: String,
    pub(super) url_template: String,
    #[serde(default)]
    pub(super) rate_limit: Option<RawRateLimit>,
    #[serde(default)]
    pub(super) quota: Option<RawQuota>,
    /// `"chat"`, `"completions"` or `"embeddings"`: the body carries tokens (the presets set it).
    #[serde(default)]
    pub(super) tokens: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCredential {
    pub(super) workspace: String,
    pub(super) service: String,
    #[serde(default)]
    pub(super) api_key: Option<String>,
    #[serde(default)]
    pub(super) api_key_env: Option<String>,
    /// The header the key goes in: `Authorization` (the default: `Bearer <key>`) or another
    /// name (the key alone, e.g. Azure OpenAI's `api-key`).
    #[serde(default)]
    pub(super) header: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProduct {
    pub(super) id: String,
    /// Shown in the developer portal.
    pub(super) name: String,
    #[serde(default)]
    pub(super) description: Option<String>,
    pub(super) apis: Vec<String>,
    #[serde(default)]
    pub(super) rate_limit: Option<RawRateLimit>,
    #[serde(default)]
    pub(super) quota: Option<RawQuota>,
    #[serde(default)]
    pub(super) token_limit: Option<RawTokenLimit>,
    /// `false`: APIM's open product (calls without a key are admitted).
    #[serde(default = "yes")]
    pub(super) subscription_required: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSubscription {
    pub(super) id: String,
    #[serde(default)]
    pub(super) product: Option<String>,
    /// APIM's subscription scope: `/products/<id>`, `/apis/<id>` or `/apis`.
    #[serde(default)]
    pub(super) scope: Option<String>,
    #[serde(with = "StateDef")]
    pub(super) state: SubscriptionState,
    /// Accepted for APIM parity; nothing reads it, so the model keeps none.
    #[serde(default, rename = "name")]
    pub(super) _name: Option<String>,
    #[serde(default)]
    pub(super) primary_key: Option<String>,
    #[serde(default)]
    pub(super) secondary_key: Option<String>,
    #[serde(default)]
    pub(super) primary_key_sha256: Option<String>,
    #[serde(default)]
    pub(super) secondary_key_sha256: Option<String>,
    #[serde(default)]
    pub(super) start: Option<String>,
}

/// APIM's `rate-limit` / `rate-limit-by-key` policy.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    pub(super) calls: u32,
    pub(super) renewal_period: u32,
    #[serde(default)]
    pub(super) counter: Option<String>,
    #[serde(default)]
    pub(super) remaining_calls_header: Option<String>,
    #[serde(default)]
    pub(super) total_calls_header: Option<String>,
    #[serde(default)]
    pub(super) retry_after_header: Option<String>,
    #[serde(default)]
    pub(super) increment_condition: Option<RawCondition>,
}

/// `increment_condition` as written: one class (`"2xx"`) or a list of statuses and classes.
/// Hand-written visitors instead of `#[serde(untagged)]`, which buffers and costs ~10 KB of Wasm.
pub(super) struct RawCondition(pub(super) Vec<RawStatus>);

pub(super) enum RawStatus {
    Code(u16),
    Class(String),
}

impl<'de> serde::Deserialize<'de> for RawStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RawStatus;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a status such as 200 or a class such as \"2xx\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawStatus, E> {
                Ok(RawStatus::Code(u16::try_from(v).unwrap_or(0)))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<RawStatus, E> {
                Ok(RawStatus::Code(0))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawStatus, E> {
                Ok(RawStatus::Class(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> serde::Deserialize<'de> for RawCondition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawCondition;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a class such as \"2xx\" or a list of statuses and classes")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawCondition, E> {
                Ok(RawCondition(vec![RawStatus::Class(v.to_string())]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawCondition, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(RawCondition(items))
            }
        }
        d.deserialize_any(V)
    }
}

/// APIM's `quota` policy: calls and/or bandwidth per fixed period.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQuota {
    #[serde(default)]
    pub(super) calls: Option<u64>,
    #[serde(default)]
    pub(super) bandwidth_kb: Option<u64>,
    pub(super) renewal_period: u64,
    #[serde(default)]
    pub(super) increment_condition: Option<RawCondition>,
    /// `quota-by-key`'s `counter-key`: `ip` or `header:<name>`.
    #[serde(default)]
    pub(super) counter: Option<String>,
    /// `quota-by-key`'s `first-period-start` (RFC 3339).
    #[serde(default)]
    pub(super) first_period_start: Option<String>,
}

// The model's enums, read with serde's `remote` derive so the model itself stays serde-free.

#[derive(Deserialize)]
#[serde(remote = "SubscriptionState", rename_all = "lowercase")]
pub(super) enum StateDef {
    Active,
    Suspended,
    Expired,
    Submitted,
    Rejected,
    Cancelled,
}

#[derive(Deserialize)]
#[serde(remote = "Unmatched", rename_all = "snake_case")]
pub(super) enum UnmatchedDef {
    Reject,
    PassThrough,
}

#[derive(Deserialize)]
#[serde(remote = "ExportMetadata", rename_all = "snake_case")]
pub(super) enum ExportDef {
    Combined,
    Fields,
    Off,
}

#[derive(Deserialize)]
#[serde(remote = "FailureMode", rename_all = "snake_case")]
pub(super) enum FailureDef {
    Deny,
    Allow,
}
