//! mlgate-core: everything a request is judged by, with no host in sight. Plain Rust, tested
//! natively and on wasm32.
//!
//! May depend on: serde, matchit, sha2, percent-encoding. Never on a host, the portal, the admin
//! API, the usage reports or the remote store protocol: those are crates above this one.
//!
//! The request path, in reading order:
//! - [`config`]: the operator's JSON (a private schema), compiled at configure time into the
//!   [`Gateway`] model ([`model`]).
//! - [`admit()`]: the one pipeline every request goes through. It matches the API and
//!   operation ([`route`], in `admit/identify.rs`), checks the subscription key ([`keys`]),
//!   decides the limits over a [`Store`] ([`limits`]), and plans the upstream rewrite
//!   (`admit/rewrite.rs`), or returns an APIM reply ([`reply`]).
//! - [`usage`]: which usage-metric slot a call counts in, and what to add (the events a host
//!   counts are [`Event`]s).
//! - [`local`]: the contract of local endpoints (requests a gateway answers itself); the
//!   endpoints are the portal and admin crates.

pub mod admit;
pub mod config;
pub mod json;
pub mod keys;
pub mod limits;
pub mod local;
pub mod memory;
pub mod model;
pub mod reply;
pub mod route;
pub mod summary;
pub mod time;
pub mod tokens;
pub mod usage;

#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

pub use admit::{
    address_without_port, admit, export, record_bandwidth, Admission, Connection, Edit, Event, Events, Forward, Identity, Outcome, Request,
};
pub use config::{ConfigError, Environment, ProcessEnv, MAX_ID_BYTES, MAX_RATE_LIMIT_CALLS};
pub use keys::Digest;
pub use limits::{create_if_absent, HostError, SetError, Store, SENTINEL_KEY};
pub use model::{ExportMetadata, FailureMode, Gateway, LimitsStore, OnFailure, RlsSettings, SubscriptionState, Unmatched};
pub use reply::Reply;
pub use summary::{Summary, Upstream};

#[cfg(test)]
mod tests;
