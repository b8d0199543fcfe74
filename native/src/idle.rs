//! Hooks mlgate has no work in: Envoy 1.40 refuses a module that lacks any of them.

use super::abi;
use std::ffi::c_void;

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _filter_envoy: abi::FilterEnvoy,
    _filter_module: *const c_void,
    _stream_id: u64,
    _headers: *mut abi::Header,
    _headers_size: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _filter_envoy: abi::FilterEnvoy,
    _filter_module: *const c_void,
    _stream_id: u64,
    _data: *const abi::Buffer,
    _data_count: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _filter_envoy: abi::FilterEnvoy,
    _filter_module: *const c_void,
    _stream_id: u64,
    _trailers: *mut abi::Header,
    _trailers_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _filter_envoy: abi::FilterEnvoy,
    _filter_module: *const c_void,
    _stream_id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _filter_envoy: abi::FilterEnvoy,
    _filter_module: *const c_void,
    _stream_id: u64,
    _reason: u32,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    _filter_envoy: abi::FilterEnvoy,
    _filter_module: *const c_void,
    _event_id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _filter_envoy: abi::FilterEnvoy,
    _filter_module: *const c_void,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _filter_envoy: abi::FilterEnvoy,
    _filter_module: *const c_void,
) {
}
