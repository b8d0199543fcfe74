//! mlgate-rls: fleet-wide limits for mlgate, as an Envoy rate limit service (RLS v3) whose
//! counts live in Redis. It runs mlgate's own limit code (`mlgate_remote::Resolver` over
//! `limits::check_at`) against the same JSON configuration as the filter.
//!
//! May depend on: mlgate-core, mlgate-remote (the protocol's server side), tonic, redis.

pub mod service;
pub mod store;
