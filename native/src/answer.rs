//! The remote store's answer to a held request (`rls.rs` sent the check): judged again with it,
//! then resumed or answered.

use crate::abi::{self, Filter};
use crate::request::{judging, resume, At};
use crate::rls::{dispatching, read_answer, record, CalloutAnswer};
use crate::state::Stream;
use mlgate_remote::{flow, grpc};
use std::ffi::c_void;

/// The answer of a check (the status, the `grpc-status` header and the body as Envoy handed
/// them over; `None`: the callout failed): the request judged again and resumed, or answered.
fn answered(f: &mut Filter, st: &mut Stream, id: u64, answer: Option<CalloutAnswer>) -> u32 {
    let Some(w) = st.rls.as_mut().filter(|w| w.callout == Some(id)) else { return abi::CONTINUE };
    w.callout = None;
    let (probe, body) = (w.probe, w.body.take());
    let message = answer.as_ref().and_then(|(status, grpc_status, body)| grpc::message(status.as_deref(), grpc_status.as_deref(), body));
    let message = message.map(<[u8]>::to_vec).ok_or(());
    let config = std::sync::Arc::clone(&st.config);
    if let Some(settings) = flow::settings(&config.gateway) {
        record(f, st, settings, flow::usable(message.as_deref().map_err(|_| ())), probe);
    }
    if let Some(w) = st.rls.as_mut() {
        w.answer = Some(message);
    }
    let status = resume(f, st, body.as_deref(), At::Resumed);
    // The body held while the request waited, counted once it is judged (judging starts the
    // call's measure afresh, so what a body hook counted before is not counted twice).
    st.acct.body(f.body_size(abi::body::BUFFERED_REQUEST_BODY) as u64, false);
    if status == abi::CONTINUE {
        f.continue_decoding();
    }
    status
}

/// # Safety
/// Envoy passes the stream's filter pointer and the module pointer `on_http_filter_new` returned,
/// on the stream's worker; `headers` and `body_chunks` are Envoy's arrays (or null), valid until
/// this hook returns (abi.h).
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    filter_envoy: abi::FilterEnvoy,
    filter_module: *const c_void,
    callout_id: u64,
    result: u32,
    headers: *mut abi::Header,
    headers_size: usize,
    body_chunks: *mut abi::Buffer,
    body_chunks_size: usize,
) {
    if dispatching() {
        return;
    }
    // Copied out before judging (judging may call setters, after which Envoy's buffers of this
    // hook are no longer promised).
    let answer = (result == abi::callout::CALLOUT_RESULT_SUCCESS).then(|| {
        // SAFETY: per this hook's contract: arrays of the given sizes, or null (then empty).
        unsafe { read_answer(headers, headers_size, body_chunks, body_chunks_size) }
    });
    // SAFETY: the pointers this hook was given, passed on unchanged.
    unsafe { judging(filter_envoy, filter_module, At::Resumed, |f, st| answered(f, st, callout_id, answer)) };
}
