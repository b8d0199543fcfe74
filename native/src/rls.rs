//! The remote limit store (`limits_store.rls`) in the dynamic module: the check as an HTTP
//! callout of the stream's filter (gRPC over plain HTTP/2, `mlgate_remote::grpc`), the request
//! held until the answer, then judged again with it. What is decided is `mlgate_remote::flow`'s,
//! the same as the Wasm host's: which descriptors, what an answer means, `on_failure`, the
//! breaker. Reports after the response (bandwidth, token settles) are `reports.rs`.
//!
//! The flow: the first pass ([`admit`]) asks when limits apply and the breaker lets it; the
//! request hook that judged (headers, the last body chunk, or the trailers) dispatches the
//! callout and stops the request (body and trailers are held meanwhile: `body.rs`). The answer
//! comes to `envoy_dynamic_module_on_http_filter_http_callout_done` (`answer.rs`) on the same worker; the
//! request is judged again with it (with the body it was judged with, for a call that carries
//! tokens), and either goes on (`continue_decoding`) or gets its reply. A stream that ends
//! first takes its callout with it (Envoy cancels a filter's callouts when it is destroyed).
//! One breaker per store and worker thread, as the Wasm form's per VM.

use crate::abi::{self, Filter};
use crate::pending::Wait;
use crate::state::Stream;
use crate::store::ProcessStore;
use mlgate_core::admit::{Connection, Request};
use mlgate_core::{Gateway, RlsSettings};
use mlgate_remote::flow::{self, Breakers, Counts, First, Judge};
use mlgate_remote::grpc;
use std::cell::{Cell, RefCell};

thread_local! {
    /// This worker's breakers, one per store.
    static BREAKERS: RefCell<Breakers> = RefCell::new(Breakers::default());
    /// A callout is being made: an answer Envoy hands over inside that call (a callout it
    /// failed at once) is not taken; the call's own result says it failed.
    static DISPATCHING: Cell<bool> = const { Cell::new(false) };
}

/// Whether a callout is being made on this worker (see `DISPATCHING`).
pub(crate) fn dispatching() -> bool {
    DISPATCHING.with(Cell::get)
}

/// Runs `f` on this worker's breakers.
pub(crate) fn breakers<T>(f: impl FnOnce(&mut Breakers) -> T) -> T {
    BREAKERS.with(|b| f(&mut b.borrow_mut()))
}

impl Stream {
    /// Whether the request is held for the store's answer.
    pub(crate) fn waiting(&self) -> bool {
        self.rls.as_ref().is_some_and(|w| w.callout.is_some())
    }
}

/// A callout's answer: `:status`, `grpc-status` (if any), the body.
pub(crate) type CalloutAnswer = (Option<Vec<u8>>, Option<Vec<u8>>, Vec<u8>);

/// Judges a request with the configured store: decided (locally, by the store's answer, or by
/// `on_failure`), or to be asked (then the request goes to [`ask`]).
pub(crate) fn admit<'g, 'r>(
    f: &Filter,
    st: &mut Stream,
    gw: &'g Gateway,
    req: &Request<'r>,
    now_ms: u64,
    conn: &mut dyn Connection,
) -> First<'g, 'r> {
    let shared = &mut ProcessStore;
    let Some(settings) = flow::settings(gw) else {
        return First::Decided { admission: mlgate_core::admit(gw, req, now_ms, conn, shared), local: false };
    };
    let mut c = Counts::default();
    let answer = st.rls.as_mut().and_then(|w| w.answer.take());
    let (admission, local) = match answer {
        Some(answer) => flow::second(settings, answer.as_deref().map_err(|_| ()), Judge { gw, req, now_ms, conn, shared }, &mut c),
        None => match breakers(|b| flow::first(settings, b, Judge { gw, req, now_ms, conn, shared }, &mut c)) {
            First::Decided { admission, local } => (admission, local),
            ask @ First::Ask { .. } => {
                st.config.stats.rls(f, &c);
                return ask;
            }
        },
    };
    st.config.stats.rls(f, &c);
    st.charged_locally |= local;
    First::Decided { admission, local }
}

/// Sends the check and holds the request (`start_ns`: when the call started; `body`: what it
/// was judged with; `hold`: what the judging hook returns to hold it). `Ok(hold)`: held; `Err`: the callout could not
/// even be made (a failure now, its answer set): the caller judges the request again at once,
/// with the body handed back.
pub(crate) fn ask(
    f: &mut Filter,
    st: &mut Stream,
    request: &[u8],
    probe: bool,
    body: Option<Vec<u8>>,
    start_ns: u64,
    hold: u32,
) -> Result<u32, Option<Vec<u8>>> {
    let config = std::sync::Arc::clone(&st.config);
    let Some(settings) = flow::settings(&config.gateway) else { return Err(body) };
    DISPATCHING.with(|d| d.set(true));
    let sent =
        f.http_callout(&settings.cluster, &grpc::request_headers(&settings.cluster), &grpc::frame(request), u64::from(settings.timeout_ms));
    DISPATCHING.with(|d| d.set(false));
    match sent {
        Ok(id) => {
            st.rls = Some(Wait { callout: Some(id), probe, answer: None, body, start_ns });
            Ok(hold)
        }
        Err(_) => {
            // No such cluster, no healthy host: a failed call, decided at once by `on_failure`.
            record(f, st, settings, false, probe);
            st.rls = Some(Wait { callout: None, probe, answer: Some(Err(())), body: None, start_ns });
            Err(body)
        }
    }
}

/// A check's outcome in this worker's breaker.
pub(crate) fn record(f: &Filter, st: &Stream, settings: &RlsSettings, ok: bool, probe: bool) {
    let mut c = Counts::default();
    breakers(|b| b.record(settings, ok, probe, crate::state::now_ms(), &mut c));
    st.config.stats.rls(f, &c);
}

/// `(:status, grpc-status, body)` of a callout's answer.
///
/// # Safety
/// `headers` and `chunks` are null or arrays of `n_headers` / `n_chunks` entries whose buffers
/// are valid for the call.
pub(crate) unsafe fn read_answer(
    headers: *const abi::Header,
    n_headers: usize,
    chunks: *const abi::Buffer,
    n_chunks: usize,
) -> CalloutAnswer {
    let (mut status, mut grpc_status, mut body) = (None, None, Vec::new());
    if !headers.is_null() {
        // SAFETY: per the contract, `n_headers` initialised entries.
        for h in unsafe { std::slice::from_raw_parts(headers, n_headers) } {
            // SAFETY: Envoy's buffers, valid for the call; copied out now.
            let (k, v) = unsafe {
                (
                    abi::Buffer { ptr: h.key_ptr, length: h.key_length }.bytes(),
                    abi::Buffer { ptr: h.value_ptr, length: h.value_length }.bytes(),
                )
            };
            match k {
                b":status" => status = Some(v.to_vec()),
                b"grpc-status" => grpc_status = Some(v.to_vec()),
                _ => {}
            }
        }
    }
    if !chunks.is_null() {
        // SAFETY: per the contract, `n_chunks` initialised entries.
        for c in unsafe { std::slice::from_raw_parts(chunks, n_chunks) } {
            // SAFETY: Envoy's buffer, valid for the call; copied out now.
            body.extend_from_slice(unsafe { c.bytes() });
        }
    }
    (status, grpc_status, body)
}
