//! mlgate-native: the mlgate core as an Envoy dynamic module, the native sibling of the
//! proxy-wasm host (`wasm/`). Each hook reads what Envoy offers, calls the same
//! [`mlgate_core::admit`], and applies the [`mlgate_core::Outcome`]; there is no second copy of any policy.
//!
//! May depend on: mlgate-core, mlgate-usage (extremes), mlgate-envoy (what it shares with the
//! Wasm host). Only the artefact crate `mlgate` depends on it.
//!
//! Envoy 1.40 loads it with
//! ```yaml
//! - name: mlgate
//!   typed_config:
//!     "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
//!     dynamic_module_config: {name: mlgate, do_not_close: true}
//!     filter_name: mlgate
//!     filter_config: {"@type": type.googleapis.com/google.protobuf.StringValue, value: "<the JSON>"}
//! ```
//! finding `libmlgate.so` on `ENVOY_DYNAMIC_MODULES_SEARCH_PATH`. Envoy hands `filter_config`'s
//! string to `envoy_dynamic_module_on_http_filter_config_new` as the bytes of the JSON, the
//! same configuration the Wasm plugin takes.
//!
//! **Naming.** The package is `mlgate-native`, an rlib; the artefact crate `mlgate` (filter/)
//! links it into `target/release/libmlgate.so` (`cargo build --release -p mlgate`), the name
//! Envoy looks up. The release profile unwinds natively (see the workspace Cargo.toml).
//!
//! | file | hooks |
//! |---|---|
//! | `program.rs` | load (the Envoy build check), `filter_config` compiled, filters created and destroyed |
//! | `request.rs` | the request judged: local endpoints, `admit`, the `Outcome` as header edits (and a new body) |
//! | `body.rs` | bodies and trailers: a token-metered request held and judged with its body, body sizes, a metered response read for its usage |
//! | `response.rs` | response headers, the end of the stream (usage, bandwidth, tokens settled) |
//! | `rls.rs` | the remote limit store's check: an HTTP callout (gRPC), the request held for its answer |
//! | `answer.rs` | the store's answer: the held request judged again, resumed or answered |
//! | `pending.rs` | what a stream and a configuration keep for the remote store |
//! | `reports.rs` | what finished calls report to the remote store, sent by the configuration on the main thread |
//! | `metrics.rs` | the stats of events and usage slots, with in-process mirrors for the reports |
//! | `state.rs` | what a configuration and a stream keep; the clocks and the panic guard |
//! | `store.rs` | the process-wide limit table |
//! | `idle.rs` | hooks with no work (Envoy refuses a module without them) |
//!
//! **The ABI** ([`abi`]) is declared by hand, only the callbacks used, each checked against the
//! 1.40 binary and by an e2e test (see `abi.rs`). `envoy_dynamic_module_on_program_init`
//! returns `v0.2.0`, the ABI 1.40 implements, after checking that the Envoy it was loaded into
//! is 1.40.0 (the ABI cannot say; the executable can): in another Envoy it refuses to load.
//!
//! **No panic crosses the FFI boundary.** Every hook runs under `catch_unwind`: a panic on the
//! request path answers 503 and never forwards (the request was not judged, so no
//! `failure_mode` can let it through), a panic elsewhere is logged, counted
//! (`mlgate.panics`) and contained. The release profile unwinds natively, so this holds there.
//!
//! **Counts** live in [`store::ProcessStore`], one table in the Envoy process shared by every
//! worker, behind the core's [`mlgate_core::Store`] protocol: the same limit code, record format and
//! compare-and-swap loop as the Wasm form, exact across workers.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod abi;
mod answer;
mod body;
mod idle;
mod metrics;
mod pending;
mod program;
mod reports;
mod request;
mod response;
mod rls;
mod state;
pub mod store;

#[cfg(test)]
mod tests;

pub use program::{ABI_VERSION, ENVOY_BUILD, ENVOY_VERSION, UNPINNED_ENV};
