//! Tests of the host-free core. They run natively (`cargo test`) and on wasm32 under
//! wasm-bindgen-test (`make test-wasm`): on wasm32, `#[test]` below is wasm_bindgen_test.

use crate::testkit as support;

mod admit_tests;
mod condition_tests;
mod config_tests;
mod gateway_tests;
mod hostile_tests;
mod limits_tests;
mod memory_tests;
mod quota_scope_tests;
mod scope_tests;
mod time_tests;
mod token_limits_tests;
mod tokens_tests;
