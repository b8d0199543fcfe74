//! The request hook: the headers as bytes, local endpoints first, then `admit`, and the
//! `Outcome` applied as header edits (the ABI sets one name at a time).

use super::metrics::Usage;
use crate::abi;
use crate::rls;
use crate::state::{guard, now_ms, now_ns, stream, Config, Stream};
use crate::store::ProcessStore;
use abi::Filter;
use mlgate_core::local::LocalHost;
use mlgate_core::{export, Admission, Connection, Edit, Outcome, Reply, Request, Store};
use mlgate_envoy::local;
use mlgate_envoy::stream::{reply_parts, Forwarded};
use mlgate_remote::flow::First;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The downstream connection, asked lazily (each answer is one callback).
struct Downstream<'f>(&'f Filter);

impl Connection for Downstream<'_> {
    fn address(&mut self) -> Option<Vec<u8>> {
        // `source.address` is `ip:port` or `[v6]:port`, as Envoy established it.
        self.0.attribute_string(abi::ATTR_SOURCE_ADDRESS).map(mlgate_core::address_without_port)
    }

    fn is_tls(&mut self) -> bool {
        self.0.attribute_string(abi::ATTR_CONNECTION_TLS_VERSION).is_some_and(|v| !v.is_empty())
    }
}

/// Sends mlgate's own reply; a measured call takes its status and body size from it.
fn send_reply(f: &mut Filter, st: &mut Stream, r: &Reply) {
    let (headers, body) = reply_parts(r);
    st.replied = true;
    st.acct.replied(r);
    f.send_response(r.status, &headers, body, "mlgate");
}

/// What local endpoints (portal, admin) read: the process table, which they only read, and
/// the usage metrics' mirrors.
struct NativeLocal<'u> {
    store: ProcessStore,
    usage: &'u Usage,
}

impl LocalHost for NativeLocal<'_> {
    fn store(&mut self) -> &mut dyn Store {
        &mut self.store
    }

    fn metric(&mut self, slot: u32, index: usize) -> Option<u64> {
        Some(self.usage.metric(slot, index)?.value.as_ref()?.load(Ordering::Relaxed))
    }
}

/// A panic on the request path: the request was not judged, so it is refused whatever
/// `failure_mode` says (that setting waives the limits, never the key check or the rewrite).
fn panic_reply() -> Reply {
    Reply::json(503, "Service unavailable")
}

/// What the request hook decided while Envoy's header buffers were borrowed; applied after.
enum Plan<'g> {
    /// A local endpoint's answer (not an API call: never measured, never exported).
    Local(Reply),
    /// A refusal, with the filter state that records what it was matched to.
    Reply(Reply, Vec<(&'static str, String)>),
    Strip([Option<&'g str>; 2]),
    /// The operation carries tokens: hold the request and judge it again with its body.
    ReadBody,
    /// Ask the remote limit store (`RateLimitRequest`), holding the request for the answer;
    /// `body`: what it was judged with, to judge it again with.
    Ask {
        request: Vec<u8>,
        probe: bool,
        body: Option<Vec<u8>>,
        start_ns: u64,
    },
    Forward {
        /// The core's header edits, copied out of Envoy's buffers: a lower-case name and its one
        /// value, or `None` to remove it.
        edits: Vec<(Vec<u8>, Option<Vec<u8>>)>,
        exports: Vec<(&'static str, String)>,
        /// Applied to the stream's accounting once the edits went through.
        upstream: Forwarded,
        /// A rewritten body that must replace the client's (a completion bound added).
        body: Option<Vec<u8>>,
    },
}

/// Which hook judges the request: where its body is, for a rewritten one to replace it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum At {
    /// The request headers (no body read; at the end of the stream, no body at all).
    Headers,
    /// The last request body hook: the body is the buffered one followed by the received
    /// chunk, or only the received chunk when it is the buffered body (`same`). `complete`:
    /// the body ended (else it passed `max_request_body_bytes` and is judged cut).
    Body { same: bool, complete: bool },
    /// The request trailers: the body is all buffered.
    Trailers,
    /// The remote store's answer, to a request held for it: what body came is all buffered.
    Resumed,
}

impl At {
    /// What the hook returns once a local reply went out.
    pub(crate) fn stopped(self) -> u32 {
        match self {
            At::Body { .. } => abi::body::STOP_ITERATION_NO_BUFFER,
            At::Headers | At::Trailers | At::Resumed => abi::STOP_ITERATION,
        }
    }

    /// What the hook returns to hold the request for the remote store's answer (the body kept).
    pub(crate) fn waiting(self) -> u32 {
        match self {
            At::Body { .. } => abi::body::STOP_ITERATION_AND_BUFFER,
            At::Headers | At::Trailers | At::Resumed => abi::STOP_ITERATION,
        }
    }
}

/// # Safety
/// Envoy passes the stream's filter pointer and the module pointer `on_http_filter_new` returned; one hook of a filter runs at a time, on its worker (abi.h).
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    filter_envoy: abi::FilterEnvoy,
    filter_module: *const c_void,
    end_of_stream: bool,
) -> u32 {
    #[cfg(feature = "empty-module")]
    if std::hint::black_box(true) {
        // Benchmark builds only: nothing but the boundary (see Cargo.toml).
        return abi::CONTINUE;
    }
    // SAFETY: the pointers this hook was given, passed on unchanged.
    unsafe { judging(filter_envoy, filter_module, At::Headers, |f, st| on_request_headers(f, st, end_of_stream)) }
}

/// Runs a hook that judges the request. A panic is caught and answered 503 unless a reply
/// already went out (the request was not judged, so it is never forwarded); a second panic
/// there is caught too, and the stream is left stopped (Envoy's timeouts end it).
///
/// # Safety
/// The pointers a request hook was given (see the hooks' contract).
pub(crate) unsafe fn judging(
    filter_envoy: abi::FilterEnvoy,
    filter_module: *const c_void,
    at: At,
    hook: impl FnOnce(&mut Filter, &mut Stream) -> u32,
) -> u32 {
    let caught = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: abi.h: Envoy passes this stream's filter pointer (valid until the filter is
        // destroyed) and the pointer on_http_filter_new returned, and runs one filter's hooks on
        // its worker, one at a time; both are used only within this hook.
        let (mut f, st) = unsafe { (Filter::new(filter_envoy), stream(filter_module)) };
        let Some(st) = st else { return at.stopped() };
        hook(&mut f, st)
    }));
    caught.unwrap_or_else(|_| {
        guard(at.stopped(), || {
            // SAFETY: as above (the same hook's pointers); the closure that panicked has
            // dropped its references, so this is again the only one.
            let (mut f, st) = unsafe { (Filter::new(filter_envoy), stream(filter_module)) };
            if let Some(st) = st {
                if let Some(id) = st.config.stats.panics {
                    f.increment_metric(id, false, 1);
                }
                st.reading_body = None;
                if !st.replied {
                    send_reply(&mut f, st, &panic_reply());
                }
            }
            at.stopped()
        })
    })
}

fn on_request_headers(f: &mut Filter, st: &mut Stream, end_of_stream: bool) -> u32 {
    let config = Arc::clone(&st.config);
    match decide(f, st, &config, None) {
        // No body will come: judge it as empty.
        Plan::ReadBody if end_of_stream => {
            let plan = decide(f, st, &config, Some(&[]));
            apply(f, st, plan, At::Headers)
        }
        // Held (headers and body) until the body hooks have it whole.
        Plan::ReadBody => abi::STOP_ITERATION,
        plan => apply(f, st, plan, At::Headers),
    }
}

/// The request judged again with its body (`body`: all of it, or its first
/// `max_request_body_bytes + 1` bytes), and the outcome applied as the headers hook applies it.
pub(crate) fn judge_with_body(f: &mut Filter, st: &mut Stream, body: &[u8], at: At) -> u32 {
    resume(f, st, Some(body), at)
}

/// The request judged (again), with the body it has (if one was read), and the outcome applied.
pub(crate) fn resume(f: &mut Filter, st: &mut Stream, body: Option<&[u8]>, at: At) -> u32 {
    let config = Arc::clone(&st.config);
    let plan = decide(f, st, &config, body);
    apply(f, st, plan, at)
}

/// Local endpoints, then `admit` (while Envoy's header buffers are borrowed).
fn decide<'g>(f: &Filter, st: &mut Stream, config: &'g Config, body: Option<&[u8]>) -> Plan<'g> {
    let gw = &config.gateway;
    let Some(headers) = f.headers(abi::REQUEST_HEADER) else {
        return Plan::Local(mlgate_core::reply::internal_error());
    };
    let mut req = Request::from_headers(&headers);
    req.body = body;
    #[cfg(any(test, feature = "fault-injection"))]
    if req.header(b"x-mlgate-fault") == Some(b"panic") {
        // Test builds only: a panic inside the hook, to see it caught at the boundary.
        #[allow(clippy::panic)]
        {
            panic!("x-mlgate-fault: panic");
        }
    }
    // One clock reading: the decision's time and the start of the call's apiTime (for a
    // request held while its body was read or the remote store answered, the start is when
    // its headers came).
    let (now_start, now) = (now_ns(), now_ms());
    let start = st.reading_body.take().or(st.rls.as_ref().map(|w| w.start_ns)).unwrap_or(now_start);
    // Local endpoints (portal, admin) answer here: never forwarded, never counted. Without
    // any in the configuration this is the one check the request pays (and a request judged
    // with its body was no local endpoint's the first time).
    if body.is_none() && local::any(gw) {
        if let Some(r) = local::serve(gw, &req, now, &mut NativeLocal { store: ProcessStore, usage: &config.usage }) {
            return Plan::Local(r);
        }
    }
    judge(f, st, config, &req, start, now)
}

/// `admit`, and what to do with its outcome (while the request headers are borrowed).
fn judge<'g>(f: &Filter, st: &mut Stream, config: &'g Config, req: &Request<'_>, start_ns: u64, now: u64) -> Plan<'g> {
    let gw = &config.gateway;
    let Admission { outcome, events } = match rls::admit(f, st, gw, req, now, &mut Downstream(f)) {
        First::Decided { admission, .. } => admission,
        First::Ask { request, probe } => return Plan::Ask { request, probe, body: req.body.map(<[u8]>::to_vec), start_ns },
    };
    config.stats.count(f, &events);
    st.acct.judged(events.usage, start_ns);
    match outcome {
        // The access log's record of a refusal: what it was matched to.
        Outcome::Reply(r) => Plan::Reply(r, export::refused(gw, &events.matched, gw.settings.export_metadata)),
        Outcome::PassThrough { strip } => Plan::Strip(strip),
        // The native host holds the headers too, and applies the second judgement whole.
        Outcome::ReadBody(_) if req.body.is_none() => {
            st.reading_body = Some(start_ns);
            Plan::ReadBody
        }
        // Asked for the body it was given: never forwarded unjudged.
        Outcome::ReadBody(_) => Plan::Local(mlgate_core::reply::internal_error()),
        Outcome::Forward(mut fwd) => {
            // The ABI sets or removes one name at a time: the core's edits, as the Wasm host
            // applies them (a set replaces every value, so an add is a set too).
            let mut list = Vec::with_capacity(8);
            fwd.upstream_edits(gw, req, &mut list);
            let edits = list
                .into_iter()
                .map(|e| match e {
                    Edit::Add(name, value) | Edit::Replace(name, value) => (name.to_ascii_lowercase(), Some(value.to_vec())),
                    Edit::Remove(name) => (name.to_ascii_lowercase(), None),
                })
                .collect();
            let plan_upstream = Forwarded::of(gw, &fwd);
            let exports = export::properties(gw.settings.export_metadata, &fwd.identity);
            // Taken once the headers that depend on it (no content-length) were planned.
            let body = fwd.tokens.as_mut().and_then(|t| t.body.take());
            Plan::Forward { edits, exports, upstream: plan_upstream, body }
        }
    }
}

fn set_exports(f: &Filter, exports: &[(&'static str, String)]) {
    for (name, value) in exports {
        // The Wasm form's property names (`wasm.mlgate`, ...), so access-log formats and
        // later filters read the match the same way with either form.
        let mut key = String::with_capacity(5 + name.len());
        key.push_str("wasm.");
        key.push_str(name);
        f.set_filter_state(&key, value.as_bytes());
    }
}

fn apply(f: &mut Filter, st: &mut Stream, plan: Plan<'_>, at: At) -> u32 {
    match plan {
        Plan::Local(r) => {
            send_reply(f, st, &r);
            at.stopped()
        }
        Plan::Reply(r, exports) => {
            set_exports(f, &exports);
            send_reply(f, st, &r);
            at.stopped()
        }
        Plan::Strip(strip) => {
            // Never forward a client's copy of the identity headers: a failed removal is a 500.
            if !strip.iter().flatten().all(|name| f.set_header(abi::REQUEST_HEADER, name.as_bytes(), None)) {
                send_reply(f, st, &mlgate_core::reply::internal_error());
                return at.stopped();
            }
            abi::CONTINUE
        }
        Plan::Ask { request, probe, body, start_ns } => match rls::ask(f, st, &request, probe, body, start_ns, at.waiting()) {
            Ok(held) => held,
            Err(body) => resume(f, st, body.as_deref(), at),
        },
        // Judged with a body and asked for one: never forwarded unjudged.
        Plan::ReadBody => {
            send_reply(f, st, &mlgate_core::reply::internal_error());
            at.stopped()
        }
        Plan::Forward { edits, exports, upstream, body } => {
            // A body cut at `max_request_body_bytes` is never forwarded (the core refuses it).
            let mut ok = !matches!(at, At::Body { complete: false, .. });
            for (name, value) in &edits {
                ok &= f.set_header(abi::REQUEST_HEADER, name, value.as_deref());
            }
            if let Some(body) = &body {
                ok = ok && replace_body(f, at, body);
            }
            if !ok {
                // Never forward a request whose key and credentials were not rewritten, nor
                // one whose body lacks the bound its reservation counted on.
                send_reply(f, st, &mlgate_core::reply::internal_error());
                return at.stopped();
            }
            // The route is chosen again for the rewritten :authority and :path (as the Wasm
            // host's header edits make Envoy do).
            f.clear_route_cache();
            set_exports(f, &exports);
            st.acct.went_upstream(upstream);
            abi::CONTINUE
        }
    }
}

/// Replaces the request body with `new`, wherever the judging hook finds it (see [`At`]):
/// what Envoy holds is drained, and `new` appended where it will go upstream from.
fn replace_body(f: &mut Filter, at: At, new: &[u8]) -> bool {
    use abi::body::BUFFERED_REQUEST_BODY as BUFFERED;
    use abi::RECEIVED_REQUEST_BODY as RECEIVED;
    // Draining what is absent fails; there is nothing to drain then.
    let drain = |f: &mut Filter, t: u32| f.body_size(t) == 0 || f.drain_body(t, usize::MAX);
    match at {
        // No body came: `new` is the body (Envoy sends a body a filter adds to a headers-only
        // request).
        At::Headers => new.is_empty() || f.append_body(BUFFERED, new),
        // Continuing moves the received chunk after the buffered body: the buffered one
        // emptied, the received one replaced.
        At::Body { same, .. } => (same || drain(f, BUFFERED)) && drain(f, RECEIVED) && (new.is_empty() || f.append_body(RECEIVED, new)),
        At::Trailers | At::Resumed => drain(f, BUFFERED) && (new.is_empty() || f.append_body(BUFFERED, new)),
    }
}
