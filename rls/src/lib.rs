//! mlgate-rls: fleet-wide limits for mlgate, as an Envoy rate limit service (RLS v3) whose
//! counts live in Redis. It runs mlgate's own limit code (`mlgate::rls::Resolver` over
//! `limits::check_at`) against the same JSON configuration as the filter.

pub mod service;
pub mod store;
