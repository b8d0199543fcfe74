//! mlgate-wasm: the proxy-wasm host, the only code that talks to Envoy's Wasm runtime. Each
//! callback reads what the host offers (as bytes), calls the core, and applies the result. No
//! policy here. Built only for wasm32 (natively this crate is empty); the artefact crate
//! `mlgate` (filter/) links it into `mlgate.wasm`.
//!
//! May depend on: mlgate-core, mlgate-usage (extremes), mlgate-remote (the RLS client),
//! mlgate-envoy (what it shares with the dynamic module). No proxy-wasm SDK: its wrappers
//! panic on hostile bytes, so [`abi`] declares the ABI by hand.
//!
//! | file | callbacks |
//! |---|---|
//! | `streams.rs` | the VM and its contexts: `_initialize`, `proxy_on_vm_start`, `proxy_on_context_create`, `proxy_on_configure`, `proxy_on_tick` (the usage batch written), `proxy_on_done`, `proxy_on_delete` |
//! | `request.rs` | `proxy_on_request_headers`: local endpoints, `admit`, applying the `Outcome`; the remote store's answers resume it (`proxy_on_grpc_receive`, `proxy_on_grpc_close`) |
//! | `response.rs` | bodies (a token call's request body held and judged, also at `proxy_on_request_trailers`), `proxy_on_response_headers`, `proxy_on_log` (usage metrics, bandwidth, token settle) |
//! | `metrics.rs` | the stats of events and usage slots, defined at configure time |
//! | `store.rs` | shared data as the core's `Store` |
//! | `rls.rs` | the remote limit store's gRPC calls and what they wait for |
//! | `profile.rs` | bench builds only: every callback and host call timed inside the VM |
//!
//! Only the callbacks mlgate has work in are exported, so Envoy does not enter the VM for
//! response trailers or anything else.

#![cfg(target_arch = "wasm32")]

mod abi;
mod metrics;
mod profile;
mod request;
mod response;
mod rls;
mod store;
mod streams;
