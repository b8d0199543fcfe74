//! mlgate: the file Envoy loads. On wasm32 it is `mlgate.wasm`, the proxy-wasm host
//! ([`mlgate_wasm`]); natively it is `libmlgate.so`, the dynamic module ([`mlgate_native`]).
//! Nothing lives here: the hosts' `#[no_mangle]` exports are this library's exports.
//!
//! May depend on: the two hosts, one per target. Nothing depends on it.

#[cfg(not(target_arch = "wasm32"))]
pub use mlgate_native as host;
#[cfg(target_arch = "wasm32")]
pub use mlgate_wasm as host;
