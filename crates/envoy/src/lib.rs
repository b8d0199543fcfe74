//! mlgate-envoy: what the two Envoy hosts (the proxy-wasm host in `wasm/`, the dynamic module in
//! `native/`) share, so neither keeps a copy: which local endpoint answers a request
//! ([`local`]), the per-stream accounting from request headers to the end of the stream
//! ([`stream`]), and the tables of metric ids a host defines at configure time ([`stats`]).
//! Hosts hand in their own metric ids and clocks; nothing here calls a host.
//!
//! May depend on: mlgate-core, mlgate-usage, mlgate-portal, mlgate-admin.

pub mod local;
pub mod stats;
pub mod stream;
