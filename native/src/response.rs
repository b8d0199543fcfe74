//! Response headers and the end of the stream: the limits' response headers, the response of
//! a metered call set up for reading its token usage, and the finished call counted, its body
//! bytes against a bandwidth quota and its tokens settled (in the process table, or reported to
//! the remote store: `reports.rs`); a call's admissions held under an
//! `increment_condition` are settled by its status.

use crate::abi;
use crate::reports;
use crate::state::{guard, now_ms, now_ns, stream};
use crate::store::ProcessStore;
use abi::Filter;
use mlgate_core::admit::condition::settle_status;
use std::ffi::c_void;
use std::sync::Arc;

/// # Safety
/// As `envoy_dynamic_module_on_http_filter_request_headers`.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    filter_envoy: abi::FilterEnvoy,
    filter_module: *const c_void,
    end_of_stream: bool,
) -> u32 {
    guard(abi::CONTINUE, || {
        // SAFETY: abi.h: Envoy passes this stream's filter pointer (valid until the filter is
        // destroyed) and the pointer on_http_filter_new returned, and runs one filter's hooks on
        // its worker, one at a time; both are used only within this hook.
        let (mut f, st) = unsafe { (Filter::new(filter_envoy), stream(filter_module)) };
        if let Some(st) = st {
            // The clock and `:status` are read only for a call that went upstream.
            let (now, status) = if st.acct.upstream() { (now_ns(), f.header(abi::RESPONSE_HEADER, b":status")) } else { (0, None) };
            for (k, v) in st.acct.response_started(now, status.as_deref()) {
                f.add_header(abi::RESPONSE_HEADER, k.as_bytes(), v.as_bytes());
            }
            if let Some((held, status)) = st.acct.status_known(status.as_deref()) {
                // What the call held in limits that do not count its status is given back.
                let events = settle_status(&st.config.gateway, &held, status, now_ms(), &mut ProcessStore);
                st.config.stats.count(&f, &events);
            }
            // A call that carries tokens: its content type says how to read its usage, and
            // whether to hold it whole (the headers too) to add what it consumed.
            if st.acct.metering() {
                let config = Arc::clone(&st.config);
                let content_type = f.header(abi::RESPONSE_HEADER, b"content-type");
                st.holding_response = st.acct.meter_response(&config.gateway, content_type.as_deref()) && !end_of_stream;
                if st.holding_response {
                    return abi::STOP_ITERATION;
                }
            }
        }
        abi::CONTINUE
    })
}

/// # Safety
/// As `envoy_dynamic_module_on_http_filter_request_headers`.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(filter_envoy: abi::FilterEnvoy, filter_module: *const c_void) {
    guard((), || {
        // SAFETY: abi.h: Envoy passes this stream's filter pointer (valid until the filter is
        // destroyed) and the pointer on_http_filter_new returned, and runs one filter's hooks on
        // its worker, one at a time; both are used only within this hook.
        let (f, st) = unsafe { (Filter::new(filter_envoy), stream(filter_module)) };
        let Some(st) = st else { return };
        let config = Arc::clone(&st.config);
        // The clock is read only for a measured call (the bandwidth has its own reading).
        let now = if st.acct.measure.is_some() { now_ns() } else { 0 };
        let ended = st.acct.end(now);
        if let Some(call) = ended.call {
            config.usage.record(&f, &config.gateway, &call, now_ms());
        }
        if let Some(held) = ended.conditional {
            // Ended without a response: no status counts it.
            let events = settle_status(&config.gateway, &held, 0, now_ms(), &mut ProcessStore);
            config.stats.count(&f, &events);
        }
        if let Some((metered, usage)) = ended.tokens {
            // The reservation settled to the usage the backend reported (kept whole without one).
            let events = reports::settle(&f, &config, st.charged_locally, &metered, usage);
            config.stats.count(&f, &events);
        }
        let Some((sub, bytes)) = ended.bandwidth else { return };
        let events = reports::bandwidth(&f, &config, sub, bytes);
        config.stats.count(&f, &events);
    })
}
