//! mlgate: an APIM-style gateway for AzureML Studio web services, as a proxy-wasm filter.
//!
//! The request path, in reading order:
//! - [`config`]: the operator's JSON, validated into a [`config::Gateway`] at configure time.
//! - [`gateway`]: `Gateway::evaluate` matches the API and operation ([`route`]), checks the
//!   subscription key ([`keys`]) and plans the upstream rewrite, or returns an APIM [`reply`].
//! - [`limits`]: rate limits and quotas over a shared-data [`limits::Store`], exact under
//!   concurrency by compare-and-swap.
//! - `host` (wasm32 only): the one module that talks to Envoy through proxy-wasm.
//!
//! Everything but `host` is plain Rust, tested natively and on wasm32.

pub mod config;
pub mod gateway;
mod jsonpath;
pub mod keys;
pub mod limits;
pub mod reply;
pub mod route;
pub mod time;

#[cfg(all(feature = "host", target_arch = "wasm32"))]
mod host;

#[cfg(test)]
mod tests;
