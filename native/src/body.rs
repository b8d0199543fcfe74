//! The body hooks: the request body of a call that carries tokens (held until it is whole or
//! past `max_request_body_bytes`, then judged with it), body sizes for the usage metrics and
//! the bandwidth quota, and the response of a metered call read for its token usage (chunk by
//! chunk as it passes, or held whole when `tokens_consumed_header` must go on its headers).
//!
//! While a hook returns `StopIterationAndBuffer`, Envoy hands each call the new chunk (the
//! received body) and keeps the earlier ones (the buffered body): each chunk is counted once,
//! when it is received, and the whole body is read once, at the end (`abi/body.rs`).

use crate::abi::body::{BUFFERED_REQUEST_BODY, BUFFERED_RESPONSE_BODY, STOP_ITERATION_AND_BUFFER};
use crate::abi::{self, Filter, RECEIVED_REQUEST_BODY, RECEIVED_RESPONSE_BODY};
use crate::request::{judge_with_body, judging, At};
use crate::state::{guard, stream, Stream};
use std::ffi::c_void;
use std::sync::Arc;

/// Runs a body hook's own work (no judging) with its stream; a panic is contained.
///
/// # Safety
/// The pointers a body hook was given (see the hooks' contract).
unsafe fn with_stream<T: Copy>(
    filter_envoy: abi::FilterEnvoy,
    filter_module: *const c_void,
    fallback: T,
    hook: impl FnOnce(&mut Filter, &mut Stream) -> T,
) -> T {
    guard(fallback, || {
        // SAFETY: abi.h: Envoy passes this stream's filter pointer (valid until the filter is
        // destroyed) and the pointer on_http_filter_new returned, and runs one filter's hooks on
        // its worker, one at a time; both are used only within this hook.
        let (mut f, st) = unsafe { (Filter::new(filter_envoy), stream(filter_module)) };
        match st {
            Some(st) => hook(&mut f, st),
            None => fallback,
        }
    })
}

/// Whether the request is held for its body (asked before judging, so that a panic while
/// judging is answered 503 and one while only counting bytes is not).
///
/// # Safety
/// As [`with_stream`].
unsafe fn reading(filter_envoy: abi::FilterEnvoy, filter_module: *const c_void) -> bool {
    // SAFETY: the pointers this hook was given, passed on unchanged.
    unsafe { with_stream(filter_envoy, filter_module, false, |_, st| st.reading_body.is_some()) }
}

/// Whether the request is held for the remote store's answer (its body and trailers with it).
///
/// # Safety
/// As [`with_stream`].
unsafe fn waiting(filter_envoy: abi::FilterEnvoy, filter_module: *const c_void) -> bool {
    // SAFETY: the pointers this hook was given, passed on unchanged.
    unsafe { with_stream(filter_envoy, filter_module, false, |_, st| st.waiting()) }
}

/// The bytes of one or two bodies in order, at most `limit` of them.
fn read(f: &Filter, types: &[u32], limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for t in types {
        for chunk in f.body_chunks(*t) {
            let room = limit.saturating_sub(out.len());
            out.extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
        }
    }
    out
}

/// Counts the received chunk's bytes where they count (the size is asked only then).
fn count(f: &Filter, st: &mut Stream, response: bool) {
    if st.acct.counts_body(response) {
        let t = if response { RECEIVED_RESPONSE_BODY } else { RECEIVED_REQUEST_BODY };
        st.acct.body(f.body_size(t) as u64, response);
    }
}

/// # Safety
/// As `envoy_dynamic_module_on_http_filter_request_headers`.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    filter_envoy: abi::FilterEnvoy,
    filter_module: *const c_void,
    end_of_stream: bool,
) -> u32 {
    // SAFETY (all four): the pointers this hook was given, passed on unchanged.
    if unsafe { waiting(filter_envoy, filter_module) } {
        // Held, unjudged, until the remote store answers (then counted).
        return STOP_ITERATION_AND_BUFFER;
    }
    if !unsafe { reading(filter_envoy, filter_module) } {
        return unsafe {
            with_stream(filter_envoy, filter_module, abi::CONTINUE, |f, st| {
                count(f, st, false);
                abi::CONTINUE
            })
        };
    }
    let at = At::Body { same: false, complete: end_of_stream };
    unsafe { judging(filter_envoy, filter_module, at, |f, st| read_body(f, st, end_of_stream)) }
}

/// A chunk of a held request: held with the earlier ones until the body ends or passes
/// `max_request_body_bytes`, then judged with all of it (or with one byte more than the
/// limit, which the core refuses with 413, rather than holding more).
fn read_body(f: &mut Filter, st: &mut Stream, end_of_stream: bool) -> u32 {
    let same = f.received_is_buffered(false);
    let at = At::Body { same, complete: end_of_stream };
    if st.replied {
        return at.stopped();
    }
    let max = st.config.gateway.settings.max_request_body_bytes as usize;
    let buffered = if same { 0 } else { f.body_size(BUFFERED_REQUEST_BODY) };
    let size = buffered.saturating_add(f.body_size(RECEIVED_REQUEST_BODY));
    if size <= max && !end_of_stream {
        return STOP_ITERATION_AND_BUFFER;
    }
    let types: &[u32] = if same { &[RECEIVED_REQUEST_BODY] } else { &[BUFFERED_REQUEST_BODY, RECEIVED_REQUEST_BODY] };
    let body = read(f, types, max.saturating_add(1));
    let status = judge_with_body(f, st, &body, at);
    // The client's body, counted once now that the call is judged (it was measured by none
    // of the calls that held it).
    st.acct.body(size as u64, false);
    status
}

/// # Safety
/// As `envoy_dynamic_module_on_http_filter_request_headers`.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    filter_envoy: abi::FilterEnvoy,
    filter_module: *const c_void,
) -> u32 {
    // SAFETY (all three): the pointers this hook was given, passed on unchanged.
    if unsafe { waiting(filter_envoy, filter_module) } {
        return abi::STOP_ITERATION;
    }
    if !unsafe { reading(filter_envoy, filter_module) } {
        return abi::CONTINUE;
    }
    // Trailers end the body: judge it now, or Envoy would continue the held request unjudged.
    unsafe {
        judging(filter_envoy, filter_module, At::Trailers, |f, st| {
            if st.replied {
                return At::Trailers.stopped();
            }
            let max = st.config.gateway.settings.max_request_body_bytes as usize;
            let size = f.body_size(BUFFERED_REQUEST_BODY);
            let body = read(f, &[BUFFERED_REQUEST_BODY], max.saturating_add(1));
            let status = judge_with_body(f, st, &body, At::Trailers);
            st.acct.body(size as u64, false);
            status
        })
    }
}

/// # Safety
/// As `envoy_dynamic_module_on_http_filter_request_headers`.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    filter_envoy: abi::FilterEnvoy,
    filter_module: *const c_void,
    end_of_stream: bool,
) -> u32 {
    // SAFETY: the pointers this hook was given, passed on unchanged.
    unsafe {
        with_stream(filter_envoy, filter_module, abi::CONTINUE, |f, st| {
            count(f, st, true);
            if !st.acct.metering() {
                return abi::CONTINUE;
            }
            if st.holding_response && !end_of_stream {
                return STOP_ITERATION_AND_BUFFER;
            }
            if st.holding_response {
                let same = f.received_is_buffered(true);
                if !same {
                    feed(f, st, BUFFERED_RESPONSE_BODY);
                }
                feed(f, st, RECEIVED_RESPONSE_BODY);
                release(f, st);
            } else {
                feed(f, st, RECEIVED_RESPONSE_BODY);
            }
            abi::CONTINUE
        })
    }
}

/// # Safety
/// As `envoy_dynamic_module_on_http_filter_request_headers`.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    filter_envoy: abi::FilterEnvoy,
    filter_module: *const c_void,
) -> u32 {
    // SAFETY: the pointers this hook was given, passed on unchanged.
    unsafe {
        with_stream(filter_envoy, filter_module, abi::CONTINUE, |f, st| {
            // Trailers end a held response: all of it is buffered.
            if st.holding_response {
                feed(f, st, BUFFERED_RESPONSE_BODY);
                release(f, st);
            }
            abi::CONTINUE
        })
    }
}

/// Feeds one body of a metered response to its meter, chunk by chunk, in place.
fn feed(f: &Filter, st: &mut Stream, body_type: u32) {
    for chunk in f.body_chunks(body_type) {
        st.acct.response_chunk(chunk);
    }
}

/// A held response ended: its headers (still held) get what it consumed, and it goes on.
fn release(f: &mut Filter, st: &mut Stream) {
    st.holding_response = false;
    let config = Arc::clone(&st.config);
    for (k, v) in st.acct.consumed_headers(&config.gateway) {
        f.add_header(abi::RESPONSE_HEADER, k.as_bytes(), v.as_bytes());
    }
}
