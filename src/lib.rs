//! mlgate: an APIM-style gateway for AzureML Studio web services, as a proxy-wasm filter.
//!
//! The request path, in reading order:
//! - `config`: the operator's JSON (a private schema), compiled at configure time into the
//!   [`Gateway`] model (`model`).
//! - [`admit()`]: the one pipeline every request goes through. It matches the API and
//!   operation (`route`), checks the subscription key (`keys`), decides the limits over a
//!   [`Store`] (`limits`), and plans the upstream rewrite, or returns an APIM reply (`reply`).
//! - `host` (wasm32 only): the one module that talks to Envoy. It reads the request as raw
//!   bytes, calls `admit` and applies the outcome.
//!
//! - `local`: requests the gateway answers itself (the developer portal, `portal`), asked
//!   before `admit` only when the configuration has any.
//!
//! Everything but `host` is plain Rust, tested natively and on wasm32.

mod admin;
mod admit;
mod config;
mod edits;
mod keys;
mod limits;
pub mod local;
mod model;
mod portal;
mod reply;
pub mod rls;
mod route;
mod summary;
mod time;
pub mod usage;

#[cfg(all(feature = "host", target_arch = "wasm32"))]
mod host;

pub use admit::{
    address_without_port, admit, export, record_bandwidth, Admission, Connection, Event, Events, Forward, Identity, Outcome, Request,
};
pub use config::{ConfigError, Environment, ProcessEnv, MAX_ID_BYTES, MAX_RATE_LIMIT_CALLS};
pub use edits::{header_edits, HeaderEdit};
pub use keys::Digest;
pub use limits::{create_if_absent, HostError, SetError, Store, SENTINEL_KEY};
pub use model::{ExportMetadata, FailureMode, Gateway, SubscriptionState, Unmatched};
pub use portal::openapi::openapi;
pub use reply::Reply;
pub use summary::{Summary, Upstream};

#[cfg(test)]
mod tests;
