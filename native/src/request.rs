//! The request hook: the headers as bytes, local endpoints first, then `admit`, and the
//! `Outcome` applied as header edits (the ABI sets one name at a time).

use super::metrics::Usage;
use crate::abi;
use crate::state::{guard, now_ms, now_ns, stream, Config, Stream};
use crate::store::ProcessStore;
use abi::Filter;
use mlgate_core::local::LocalHost;
use mlgate_core::{admit, export, Admission, Connection, Outcome, Reply, Request, Store};
use mlgate_envoy::local;
use mlgate_envoy::stream::{reply_parts, Forwarded};
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
    Forward {
        /// The core's header edits, copied out of Envoy's buffers (lower-case name, new values).
        edits: Vec<(Vec<u8>, Vec<Vec<u8>>)>,
        exports: Vec<(&'static str, String)>,
        /// Applied to the stream's accounting once the edits went through.
        upstream: Forwarded,
    },
}

/// # Safety
/// Envoy passes the stream's filter pointer and the module pointer `on_http_filter_new` returned; one hook of a filter runs at a time, on its worker (abi.h).
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    filter_envoy: abi::FilterEnvoy,
    filter_module: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    #[cfg(feature = "empty-module")]
    if std::hint::black_box(true) {
        // Benchmark builds only: nothing but the boundary (see Cargo.toml).
        return abi::CONTINUE;
    }
    let caught = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: abi.h: Envoy passes this stream's filter pointer (valid until the filter is
        // destroyed) and the pointer on_http_filter_new returned, and runs one filter's hooks on
        // its worker, one at a time; both are used only within this hook.
        let (mut f, st) = unsafe { (Filter::new(filter_envoy), stream(filter_module)) };
        let Some(st) = st else { return abi::STOP_ITERATION };
        on_request_headers(&mut f, st)
    }));
    caught.unwrap_or_else(|_| {
        // The panic is caught; answer 503 unless a reply already went out. A second panic
        // here is caught too, and the stream is left stopped (Envoy's timeouts end it).
        guard(abi::STOP_ITERATION, || {
            // SAFETY: as above (the same hook's pointers); the closure that panicked has
            // dropped its references, so this is again the only one.
            let (mut f, st) = unsafe { (Filter::new(filter_envoy), stream(filter_module)) };
            if let Some(st) = st {
                if let Some(id) = st.config.stats.panics {
                    f.increment_metric(id, false, 1);
                }
                if !st.replied {
                    send_reply(&mut f, st, &panic_reply());
                }
            }
            abi::STOP_ITERATION
        })
    })
}

fn on_request_headers(f: &mut Filter, st: &mut Stream) -> u32 {
    let config = Arc::clone(&st.config);
    let gw = &config.gateway;
    let plan = {
        let Some(headers) = f.headers(abi::REQUEST_HEADER) else {
            send_reply(f, st, &mlgate_core::reply::internal_error());
            return abi::STOP_ITERATION;
        };
        let req = Request::from_headers(&headers);
        #[cfg(any(test, feature = "fault-injection"))]
        if req.header(b"x-mlgate-fault") == Some(b"panic") {
            // Test builds only: a panic inside the hook, to see it caught at the boundary.
            #[allow(clippy::panic)]
            {
                panic!("x-mlgate-fault: panic");
            }
        }
        // One clock reading: the decision's time and the start of the call's apiTime.
        let (start, now) = (now_ns(), now_ms());
        // Local endpoints (portal, admin) answer here: never forwarded, never counted.
        // Without any in the configuration this is the one check the request pays.
        let local_reply =
            if local::any(gw) { local::serve(gw, &req, now, &mut NativeLocal { store: ProcessStore, usage: &config.usage }) } else { None };
        if let Some(r) = local_reply {
            Plan::Local(r)
        } else {
            judge(f, st, &config, &headers, &req, start, now)
        }
    };
    // Envoy's header buffers are no longer borrowed: the map may change from here on.
    apply(f, st, plan)
}

/// `admit`, and what to do with its outcome (while the request headers are borrowed).
fn judge<'g>(
    f: &Filter,
    st: &mut Stream,
    config: &'g Config,
    headers: &[(&[u8], &[u8])],
    req: &Request<'_>,
    start_ns: u64,
    now: u64,
) -> Plan<'g> {
    let gw = &config.gateway;
    let Admission { outcome, events } = admit(gw, req, now, &mut Downstream(f), &mut ProcessStore);
    config.stats.count(f, &events);
    st.acct.judged(events.usage, start_ns);
    match outcome {
        // The access log's record of a refusal: what it was matched to.
        Outcome::Reply(r) => Plan::Reply(r, export::refused(gw, &events.matched, gw.settings.export_metadata)),
        Outcome::PassThrough { strip } => Plan::Strip(strip),
        // TODO(native bodies): read the body and judge again.
        Outcome::ReadBody => Plan::Reply(mlgate_core::reply::internal_error(), Vec::new()),
        Outcome::Forward(fwd) => {
            let mut upstream = Vec::with_capacity(headers.len() + 3);
            fwd.upstream_headers(gw, req, &mut upstream);
            Plan::Forward {
                // The ABI sets or removes one name at a time (no whole-map replace): the names
                // whose values differ, as the core computes them for the Wasm host too.
                edits: mlgate_core::header_edits(headers, &upstream)
                    .into_iter()
                    .map(|e| (e.name.to_ascii_lowercase(), e.values.into_iter().map(<[u8]>::to_vec).collect()))
                    .collect(),
                exports: export::properties(gw.settings.export_metadata, &fwd.identity),
                upstream: Forwarded::of(gw, &fwd),
            }
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

fn apply(f: &mut Filter, st: &mut Stream, plan: Plan<'_>) -> u32 {
    match plan {
        Plan::Local(r) => {
            send_reply(f, st, &r);
            abi::STOP_ITERATION
        }
        Plan::Reply(r, exports) => {
            set_exports(f, &exports);
            send_reply(f, st, &r);
            abi::STOP_ITERATION
        }
        Plan::Strip(strip) => {
            for name in strip.iter().flatten() {
                f.set_header(abi::REQUEST_HEADER, name.as_bytes(), None);
            }
            abi::CONTINUE
        }
        Plan::Forward { edits, exports, upstream } => {
            let mut ok = true;
            for (name, values) in &edits {
                let mut values = values.iter();
                ok &= f.set_header(abi::REQUEST_HEADER, name, values.next().map(Vec::as_slice));
                for v in values {
                    ok &= f.add_header(abi::REQUEST_HEADER, name, v);
                }
            }
            if !ok {
                // Never forward a request whose key and credentials were not rewritten.
                send_reply(f, st, &mlgate_core::reply::internal_error());
                return abi::STOP_ITERATION;
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
