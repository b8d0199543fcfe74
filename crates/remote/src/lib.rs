//! mlgate-remote: the protocol of fleet-wide limits, both sides of it. The filter's side
//! (descriptors, the answer as a verdict, the breaker) is used by the Wasm host; the service's
//! side (descriptors back to a limit plan) by `mlgate-rls`. No host calls, no I/O.
//!
//! May depend on: mlgate-core (the limit plan and verdicts, `limits_store` settings).
//!
//! Fleet-wide limits are the limits of every Envoy counted in one remote store, reached over
//! Envoy's rate limit service protocol (`envoy.service.ratelimit.v3.RateLimitService/
//! ShouldRateLimit`). `mlgate-rls` is that store: it resolves the descriptors against the
//! same configuration and decides with the same `limits` code over Redis.
//!
//! - `limits_store` (`"shared_data"` or `{"rls": {...}}`) is configuration, in the core.
//! - [`wire`]: the hand-written protobuf of `RateLimitRequest` / `RateLimitResponse`.
//! - [`client`]: the filter's side: descriptors, the answer as a verdict, `on_failure`.
//! - [`breaker`]: the circuit breaker.
//! - [`flow`]: what a host does around a check: ask or decide, the answer, the reports after
//!   the response, and what each counts (both Envoy hosts, over their own calls).
//! - [`grpc`]: the check as a plain HTTP/2 request (the dynamic module has no gRPC call).
//! - [`names`]: the descriptor vocabulary both sides use, and the gRPC method.
//! - [`server`]: the service's side: descriptors to a `Plan`, the verdict to statuses.
//! - [`tokens`]: token limits over the protocol: the reservation, the charge, the settle.
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
//! | token limit (after the call limits) | `limit` = `tp:<product>` / `ta:<api>`, `subscription`, descriptor `hits_addend` = tokens reserved |
//! | token settle (after the response) | `limit` = `tp:<product>` / `ta:<api>`, `subscription`, `settle` = `<admitted_ms>:<quota_period>:<reserved>`, descriptor `hits_addend` = actual tokens |
//!
//! A check counts one call (`hits_addend` 0). The answer's `statuses` follow the
//! descriptors: `OVER_LIMIT` on a rate limit is APIM's 429, on a quota its 403 (bandwidth if
//! the status's `current_limit.name` is `quota_bandwidth`), with `Retry-After` =
//! `duration_until_reset` rounded up to seconds. On `OK`, `current_limit.requests_per_unit`,
//! `limit_remaining` and `duration_until_reset` give the `RateLimit-*` headers. A token
//! limit's status carries the reservation's charge in `current_limit.name` (see [`tokens`]).

pub mod breaker;
pub mod client;
pub mod flow;
pub mod grpc;
pub mod names;
pub mod server;
pub mod tokens;
pub mod wire;

pub use names::*;
pub use server::{Resolver, ServeError};
