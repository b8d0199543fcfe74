//! Fleet-wide limits: the limits of every Envoy counted in one remote store, reached over
//! Envoy's rate limit service protocol (`envoy.service.ratelimit.v3.RateLimitService/
//! ShouldRateLimit`). `mlgate-rls` is that store: it resolves the descriptors against the
//! same configuration and decides with the same `limits` code over Redis.
//!
//! - [`settings`]: `limits_store` (`"shared_data"` or `{"rls": {...}}`).
//! - [`wire`]: the hand-written protobuf of `RateLimitRequest` / `RateLimitResponse`.
//! - [`client`]: the filter's side: descriptors, the answer as a verdict, `on_failure`.
//! - [`breaker`]: the circuit breaker.
//! - [`server`]: the service's side: descriptors to a `Plan`, the verdict to statuses.
//!
//! **Descriptors** (what mlgate sends, for operators running another RLS). Domain: `domain`
//! (default `mlgate`). One descriptor per limit of the request, in this order: product rate
//! limit, API rate limit, operation rate limit, product quota (only those configured):
//!
//! | limit | entries |
//! |---|---|
//! | rate limit per subscription | `limit` = `p:<product>` / `a:<api>` / `o:<api>/<operation>`, `subscription` = `<subscription id>` |
//! | rate limit by key (`counter`) | `limit` = as above, `counter` = the client address or header value (`%XX` for `%`, controls, space, bytes >= 0x7f) |
//! | quota | `limit` = `q:<product>`, `subscription` = `<subscription id>` |
//! | bandwidth report (after the response) | `limit` = `b:<product>`, `subscription`, descriptor `hits_addend` = body bytes |
//!
//! A check counts one call (`hits_addend` 0). The answer's `statuses` follow the
//! descriptors: `OVER_LIMIT` on a rate limit is APIM's 429, on a quota its 403 (bandwidth if
//! the status's `current_limit.name` is `quota_bandwidth`), with `Retry-After` =
//! `duration_until_reset` rounded up to seconds. On `OK`, `current_limit.requests_per_unit`,
//! `limit_remaining` and `duration_until_reset` give the `RateLimit-*` headers.

// The filter's side (the wasm host and the tests use it); not part of the public surface.
#[cfg_attr(not(all(feature = "host", target_arch = "wasm32")), allow(dead_code))]
pub(crate) mod breaker;
#[cfg_attr(not(all(feature = "host", target_arch = "wasm32")), allow(dead_code))]
pub(crate) mod client;
pub mod server;
mod settings;
pub mod wire;

pub use server::{Resolver, ServeError};
pub(crate) use settings::{compile as compile_settings, RawLimitsStore};
pub use settings::{LimitsStore, OnFailure, RlsSettings};

/// Descriptor entry keys.
pub const KEY_LIMIT: &str = "limit";
pub const KEY_SUBSCRIPTION: &str = "subscription";
pub const KEY_COUNTER: &str = "counter";
/// `limit` values of quotas (`q:<product>`) and bandwidth reports (`b:<product>`).
pub const QUOTA_PREFIX: &str = "q:";
pub const BANDWIDTH_PREFIX: &str = "b:";
/// `current_limit.name` of a quota status: which part of the quota it is about.
pub const QUOTA_CALLS: &str = "quota_calls";
pub const QUOTA_BANDWIDTH: &str = "quota_bandwidth";

/// The gRPC service and method mlgate calls.
pub const SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
pub const METHOD: &str = "ShouldRateLimit";
