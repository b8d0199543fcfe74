//! The only code that talks to Envoy: the proxy-wasm exports. Each callback reads what the
//! host offers (as bytes), calls the core, and applies the result. No policy here.
//!
//! Only the callbacks mlgate has work in are exported, so Envoy does not enter the VM for
//! response trailers or anything else. `rls` (the remote limit store) adds the gRPC
//! callbacks and request trailers (held while a request waits for the store's answer).

mod abi;
mod profile;
mod rls;

use crate::usage::{self, extremes::Extremes, Call, Kind, Update};
use crate::{export, Admission, Connection, Event, Events, Gateway, HostError, Outcome, ProcessEnv, Request, SetError, Store};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

const CONTINUE: u32 = 0;
const PAUSE: u32 = 1;
/// `proxy_on_request_body`: hold the body (while the request waits for a remote store).
const STOP_AND_BUFFER: u32 = 1;

/// Counter ids in Envoy's stats (`wasmcustom.mlgate.*`), one per core event.
#[derive(Clone, Copy)]
struct Stats {
    by_event: [Option<u32>; Event::ALL.len()],
    /// Both quota kinds also count here (the name operators already chart).
    quota_exceeded: Option<u32>,
}

impl Stats {
    fn define() -> Stats {
        let mut by_event = [None; Event::ALL.len()];
        for (slot, e) in by_event.iter_mut().zip(Event::ALL) {
            let (name, gauge) = e.stat();
            *slot = abi::define_metric(if gauge { abi::GAUGE } else { abi::COUNTER }, name);
        }
        Stats { by_event, quota_exceeded: abi::define_metric(abi::COUNTER, Event::QUOTA_EXCEEDED_STAT) }
    }

    fn count(&self, events: &Events) {
        for (e, n) in events.iter() {
            if let Some(id) = self.by_event.get(e as usize).copied().flatten() {
                abi::increment_metric(id, i64::from(n));
            }
            if e.is_quota_denial() {
                if let Some(id) = self.quota_exceeded {
                    abi::increment_metric(id, i64::from(n));
                }
            }
        }
    }
}

/// A plugin (root context): its configuration, once `on_configure` accepted it.
struct Root {
    gateway: Option<Rc<Gateway>>,
    stats: Option<Stats>,
    usage: Option<Rc<Usage>>,
}

/// No metric in this cell of a slot's table (ids are the host's; this one it never issues
/// for a defined metric in practice, and a wrong id only fails the host call).
const NO_METRIC: u32 = u32::MAX;

/// The usage metrics of one configuration ([`crate::usage`]): each slot's metric ids, defined
/// at configure time, and this worker's view of the min/max extremes. Per request: a table
/// lookup and the increments, no name formatted, nothing allocated.
struct Usage {
    ids: Vec<[u32; usage::METRICS]>,
    extremes: RefCell<Extremes>,
}

impl Usage {
    fn define(gw: &Gateway) -> Usage {
        let mut ids = vec![[NO_METRIC; usage::METRICS]; gw.usage.len()];
        for (slot, row) in (0u32..).zip(ids.iter_mut()) {
            for (i, kind, name) in gw.usage.definitions(gw, slot) {
                let kind = match kind {
                    Kind::Counter => abi::COUNTER,
                    Kind::Gauge => abi::GAUGE,
                    Kind::Histogram => abi::HISTOGRAM,
                };
                if let (Some(cell), Some(id)) = (row.get_mut(i), abi::define_metric(kind, &name)) {
                    *cell = id;
                }
            }
        }
        Usage { ids, extremes: RefCell::new(Extremes::new(gw.usage.len())) }
    }

    fn id(&self, slot: u32, index: usize) -> Option<u32> {
        self.ids.get(slot as usize)?.get(index).copied().filter(|id| *id != NO_METRIC)
    }

    /// Counts one finished call: up to eight increments, and the extremes (no host call
    /// unless the call is outside what this worker has seen).
    fn record(&self, gw: &Gateway, call: &Call) {
        for u in usage::updates(call) {
            match u {
                Update::Add(i, n) => {
                    if let Some(id) = self.id(call.slot, i) {
                        abi::increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX));
                    }
                }
                Update::Record(i, v) => {
                    if let Some(id) = self.id(call.slot, i) {
                        abi::record_metric(id, v);
                    }
                }
            }
        }
        if let Ok(mut ex) = self.extremes.try_borrow_mut() {
            let mut gauge = |i: usize, v: u64| {
                if let Some(id) = self.id(call.slot, i) {
                    abi::record_metric(id, v);
                }
            };
            ex.observe(gw, call.slot, call.api_time_us, call.service_time_us, &mut SharedData, &mut gauge);
        }
    }
}

/// A judged call, measured for the usage metrics until the stream ends.
struct Measure {
    slot: u32,
    start_ns: u64,
    /// When the backend's response headers arrived (forwarded calls).
    response_ns: Option<u64>,
    status: u16,
    request_bytes: u64,
    response_bytes: u64,
    /// Sent upstream: the status and response bytes come from the response; otherwise they
    /// are mlgate's own reply's.
    upstream: bool,
}

/// One HTTP stream.
struct Stream {
    /// `None`: the plugin has no valid configuration; every request is refused (fail closed).
    gateway: Option<Rc<Gateway>>,
    stats: Option<Stats>,
    usage: Option<Rc<Usage>>,
    measure: Option<Measure>,
    /// When the request headers first arrived: a call decided by a remote store is judged
    /// again on its answer, and its apiTime still starts here.
    started_ns: Option<u64>,
    /// Set for an admitted request whose body bytes count against a bandwidth quota.
    bandwidth_of: Option<u32>,
    body_bytes: u64,
    response_headers: Vec<(String, String)>,
}

thread_local! {
    static ROOTS: RefCell<HashMap<u32, Root>> = RefCell::new(HashMap::new());
    static STREAMS: RefCell<HashMap<u32, Stream>> = RefCell::new(HashMap::new());
}

/// Runs `f` on stream `id`. A missing stream or a re-entrant call (neither happens in
/// Envoy) is `None`, never a panic.
fn with_stream<T>(id: u32, f: impl FnOnce(&mut Stream) -> T) -> Option<T> {
    STREAMS.with(|s| s.try_borrow_mut().ok().and_then(|mut m| m.get_mut(&id).map(f)))
}

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[cfg(target_os = "wasi")]
extern "C" {
    fn __wasm_call_ctors();
}

/// A reactor's entry point: run static constructors once (what the SDK's `main!` did).
#[no_mangle]
pub extern "C" fn _initialize() {
    #[cfg(target_os = "wasi")]
    // SAFETY: called once by the host before any other export, as WASI reactors expect.
    unsafe {
        __wasm_call_ctors()
    };
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_root: u32, _size: usize) -> bool {
    true
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(id: u32, parent: u32) {
    let _p = profile::callback(profile::Cb::ContextCreate);
    if parent == 0 {
        ROOTS.with(|r| {
            if let Ok(mut m) = r.try_borrow_mut() {
                m.insert(id, Root { gateway: None, stats: None, usage: None });
            }
        });
        return;
    }
    let (gateway, stats, usage) = ROOTS
        .with(|r| r.try_borrow().ok().and_then(|m| m.get(&parent).map(|root| (root.gateway.clone(), root.stats, root.usage.clone()))))
        .unwrap_or((None, None, None));
    STREAMS.with(|s| {
        if let Ok(mut m) = s.try_borrow_mut() {
            let st = Stream {
                gateway,
                stats,
                usage,
                measure: None,
                started_ns: None,
                bandwidth_of: None,
                body_bytes: 0,
                response_headers: Vec::new(),
            };
            m.insert(id, st);
        }
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(root: u32, size: usize) -> bool {
    let _p = profile::callback(profile::Cb::Configure);
    // An absent configuration is an empty one: `from_json` refuses it with its own line.
    let bytes = abi::plugin_configuration(size).unwrap_or_default();
    let started = abi::now_ms();
    match Gateway::from_json(&bytes, &ProcessEnv) {
        Ok(gw) => {
            // Linear memory of this VM after configuring, in 64 KiB pages.
            let pages = core::arch::wasm32::memory_size(0);
            abi::log(
                abi::LOG_INFO,
                &format!(
                    "mlgate configured: {} APIs, {} products, {} subscriptions in {} ms; wasm memory {} KiB",
                    gw.apis.len(),
                    gw.products.len(),
                    gw.subscriptions.len(),
                    abi::now_ms().saturating_sub(started),
                    pages * 64
                ),
            );
            ROOTS.with(|r| {
                if let Ok(mut m) = r.try_borrow_mut() {
                    let entry = m.entry(root).or_insert(Root { gateway: None, stats: None, usage: None });
                    // Every usage metric of this configuration, defined once here.
                    entry.usage = Some(Rc::new(Usage::define(&gw)));
                    entry.gateway = Some(Rc::new(gw));
                    if entry.stats.is_none() {
                        entry.stats = Some(Stats::define());
                    }
                }
            });
            true
        }
        Err(e) => {
            // One line naming the field; never a value.
            abi::log(abi::LOG_ERROR, &e.to_string());
            false
        }
    }
}

/// The downstream connection, asked lazily.
struct Downstream;

impl Connection for Downstream {
    fn address(&mut self) -> Option<Vec<u8>> {
        // `source.address` is `ip:port` or `[v6]:port`, as Envoy established it (with
        // `use_remote_address`, not from X-Forwarded-For).
        abi::property(b"source\0address").map(crate::admit::address_without_port)
    }

    fn is_tls(&mut self) -> bool {
        abi::property(b"connection\0tls_version").is_some_and(|v| !v.is_empty())
    }
}

/// Shared data through the raw ABI: every status is a value, never a panic.
struct SharedData;

impl Store for SharedData {
    fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError> {
        abi::get_shared_data(key).map_err(|_| HostError)
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError> {
        match abi::set_shared_data(key, value, cas) {
            abi::OK => Ok(()),
            abi::CAS_MISMATCH => Err(SetError::CasMismatch),
            _ => Err(SetError::Host),
        }
    }
}

/// What local endpoints (portal, admin) read from the host: shared data, which they only
/// read, and metrics.
struct LocalAbi<'u> {
    store: SharedData,
    usage: Option<&'u Usage>,
}

impl crate::local::LocalHost for LocalAbi<'_> {
    fn store(&mut self) -> &mut dyn Store {
        &mut self.store
    }

    fn metric(&mut self, slot: u32, index: usize) -> Option<u64> {
        abi::get_metric(self.usage?.id(slot, index)?)
    }
}

fn send_reply(r: &crate::Reply) {
    let mut headers: Vec<(&[u8], &[u8])> = Vec::with_capacity(r.headers.len() + 1);
    headers.push((b"content-type", r.content_type.as_bytes()));
    headers.extend(r.headers.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())));
    if let Some(gz) = r.gzip_body {
        headers.push((b"content-encoding", b"gzip"));
        abi::send_local_response(r.status, &headers, gz);
        return;
    }
    abi::send_local_response(r.status, &headers, r.body.as_bytes());
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(id: u32, _headers: usize, _end_of_stream: bool) -> u32 {
    let _p = profile::callback(profile::Cb::RequestHeaders);
    with_stream(id, |st| on_request_headers(id, st)).unwrap_or(CONTINUE)
}

/// Also the second pass of a request paused for a remote store's answer (`rls`).
fn on_request_headers(id: u32, st: &mut Stream) -> u32 {
    let Some(gw) = st.gateway.clone() else {
        send_reply(&crate::reply::internal_error());
        return PAUSE;
    };
    let Some(buf) = abi::header_map(abi::REQUEST_HEADERS) else {
        send_reply(&crate::reply::internal_error());
        return PAUSE;
    };
    let headers = abi::parse_header_map(&buf);
    let req = Request::from_headers(&headers);
    #[cfg(feature = "fault-injection")]
    if req.header(b"x-mlgate-fault") == Some(b"trap") {
        // Test builds only: a Wasm runtime error, to exercise Envoy's failure_policy.
        core::arch::wasm32::unreachable();
    }
    // One clock reading: the decision's time and the start of the call's apiTime.
    let now_ns = abi::now_ns();
    let now_ms = now_ns / 1_000_000;
    let start_ns = *st.started_ns.get_or_insert(now_ns);
    // Local endpoints (portal, admin) answer here: never forwarded, never counted. Without
    // any in the configuration this is the one check the request pays.
    if crate::local::any(&gw) {
        if let Some(r) = crate::local::serve(&gw, &req, now_ms, &mut LocalAbi { store: SharedData, usage: st.usage.as_deref() }) {
            send_reply(&r);
            return PAUSE;
        }
    }
    let Some(Admission { outcome, events }) = rls::admit(id, &gw, &req, now_ms, &mut Downstream, &mut SharedData) else {
        // Asked a remote store: paused until its answer (or the timeout) comes.
        return PAUSE;
    };
    if let Some(s) = &st.stats {
        s.count(&events);
    }
    st.measure = events.usage.map(|slot| Measure {
        slot,
        start_ns,
        response_ns: None,
        status: 0,
        request_bytes: 0,
        response_bytes: 0,
        upstream: false,
    });
    match outcome {
        Outcome::Reply(r) => {
            // The access log's record of a refusal: what it was matched to.
            for (name, value) in export::refused(&gw, &events.matched, gw.settings.export_metadata) {
                abi::set_property(name, value.as_bytes());
            }
            reply(st, &r);
            PAUSE
        }
        Outcome::PassThrough { strip } => {
            for name in strip.iter().flatten() {
                abi::remove_header(abi::REQUEST_HEADERS, name);
            }
            CONTINUE
        }
        Outcome::Forward(fwd) => {
            // One host call for the whole rewrite (each crossing costs more than the planning).
            let mut upstream = Vec::with_capacity(headers.len() + 3);
            fwd.upstream_headers(&gw, &req, &mut upstream);
            if !abi::set_header_map(abi::REQUEST_HEADERS, &upstream) {
                // Never forward a request whose key and credentials were not rewritten.
                reply(st, &crate::reply::internal_error());
                return PAUSE;
            }
            if let Some(m) = st.measure.as_mut() {
                m.upstream = true;
            }
            for (name, value) in export::properties(gw.settings.export_metadata, &fwd.identity) {
                abi::set_property(name, value.as_bytes());
            }
            st.response_headers = fwd.response_headers(&gw);
            if fwd.grant.count_bandwidth {
                st.bandwidth_of = Some(fwd.identity.sub_index);
            }
            CONTINUE
        }
    }
}

/// A response's `:status` (three ASCII digits).
fn parse_status(v: &[u8]) -> Option<u16> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Sends mlgate's own reply; a measured call takes its status and body size from it.
fn reply(st: &mut Stream, r: &crate::Reply) {
    send_reply(r);
    if let Some(m) = st.measure.as_mut() {
        m.status = r.status;
        m.response_bytes = r.body.len() as u64;
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_request_body(id: u32, size: usize, _end_of_stream: bool) -> u32 {
    let _p = profile::callback(profile::Cb::RequestBody);
    add_body(id, size, false);
    if rls::waiting(id) {
        // Held with the paused headers until the remote store answers.
        STOP_AND_BUFFER
    } else {
        CONTINUE
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_response_body(id: u32, size: usize, _end_of_stream: bool) -> u32 {
    let _p = profile::callback(profile::Cb::ResponseBody);
    add_body(id, size, true);
    CONTINUE
}

fn add_body(id: u32, size: usize, response: bool) {
    with_stream(id, |st| {
        if st.bandwidth_of.is_some() {
            st.body_bytes = st.body_bytes.saturating_add(size as u64);
        }
        if let Some(m) = st.measure.as_mut() {
            // A reply of mlgate's own was counted whole when it was sent.
            if !response {
                m.request_bytes = m.request_bytes.saturating_add(size as u64);
            } else if m.upstream {
                m.response_bytes = m.response_bytes.saturating_add(size as u64);
            }
        }
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(id: u32, _headers: usize, _end_of_stream: bool) -> u32 {
    let _p = profile::callback(profile::Cb::ResponseHeaders);
    with_stream(id, |st| {
        if let Some(m) = st.measure.as_mut().filter(|m| m.upstream) {
            // The backend answered (or Envoy did for it): serviceTime ends, the status is set.
            m.response_ns = Some(abi::now_ns());
            m.status = abi::header_value(abi::RESPONSE_HEADERS, ":status").as_deref().and_then(parse_status).unwrap_or(0);
        }
        for (k, v) in std::mem::take(&mut st.response_headers) {
            abi::add_header(abi::RESPONSE_HEADERS, &k, &v);
        }
    });
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_log(id: u32) {
    let _p = profile::callback(profile::Cb::Log);
    with_stream(id, |st| {
        let Some(gw) = st.gateway.clone() else { return };
        // One clock reading for the end of the call and its bandwidth.
        let now_ns = abi::now_ns();
        if let (Some(m), Some(u)) = (st.measure.take(), st.usage.as_ref()) {
            let call = Call {
                slot: m.slot,
                status: m.status,
                request_bytes: m.request_bytes,
                response_bytes: m.response_bytes,
                api_time_us: now_ns.saturating_sub(m.start_ns) / 1000,
                service_time_us: m.response_ns.map(|t| t.saturating_sub(m.start_ns) / 1000),
            };
            u.record(&gw, &call);
        }
        let Some(sub) = st.bandwidth_of.take() else { return };
        if st.body_bytes == 0 {
            return;
        }
        let events = rls::record_bandwidth(&gw, sub, st.body_bytes, now_ns / 1_000_000, &mut SharedData);
        if let Some(s) = &st.stats {
            s.count(&events);
        }
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_done(_id: u32) -> bool {
    let _p = profile::callback(profile::Cb::Done);
    true
}

#[no_mangle]
pub extern "C" fn proxy_on_delete(id: u32) {
    on_delete(id);
    // After the callback's span: the flush is not part of any request's time.
    profile::flush_maybe();
}

fn on_delete(id: u32) {
    let _p = profile::callback(profile::Cb::Delete);
    rls::forget(id);
    STREAMS.with(|s| {
        if let Ok(mut m) = s.try_borrow_mut() {
            m.remove(&id);
        }
    });
    ROOTS.with(|r| {
        if let Ok(mut m) = r.try_borrow_mut() {
            m.remove(&id);
        }
    });
}
