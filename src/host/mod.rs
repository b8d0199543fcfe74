//! The only code that talks to Envoy: the proxy-wasm exports. Each callback reads what the
//! host offers (as bytes), calls the core, and applies the result. No policy here.
//!
//! Only the callbacks mlgate has work in are exported, so Envoy does not enter the VM for
//! request trailers, response trailers or anything else.

mod abi;

use crate::{
    admit, export, record_bandwidth, Admission, Connection, Event, Events, Gateway, HostError, Outcome, ProcessEnv, Request, SetError,
    Store,
};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

const CONTINUE: u32 = 0;
const PAUSE: u32 = 1;

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
            let (kind, name) = match e {
                Event::MissingKey => (abi::COUNTER, "mlgate.missing_key"),
                Event::InvalidKey => (abi::COUNTER, "mlgate.invalid_key"),
                Event::NotFound => (abi::COUNTER, "mlgate.not_found"),
                Event::RateLimited => (abi::COUNTER, "mlgate.rate_limited"),
                Event::QuotaCalls => (abi::COUNTER, "mlgate.quota_calls_exceeded"),
                Event::QuotaBandwidth => (abi::COUNTER, "mlgate.quota_bandwidth_exceeded"),
                Event::StoreFailure => (abi::COUNTER, "mlgate.shared_data_failures"),
                Event::FailureModeAllowed => (abi::COUNTER, "mlgate.failure_mode_allowed"),
                Event::CounterSlotShared => (abi::COUNTER, "mlgate.counter_slot_shared"),
                Event::StoreKeysCreated => (abi::GAUGE, "mlgate.shared_data_keys"),
            };
            *slot = abi::define_metric(kind, name);
        }
        Stats { by_event, quota_exceeded: abi::define_metric(abi::COUNTER, "mlgate.quota_exceeded") }
    }

    fn count(&self, events: &Events) {
        for (e, n) in events.iter() {
            if let Some(id) = self.by_event.get(e as usize).copied().flatten() {
                abi::increment_metric(id, i64::from(n));
            }
            if matches!(e, Event::QuotaCalls | Event::QuotaBandwidth) {
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
}

/// One HTTP stream.
struct Stream {
    /// `None`: the plugin has no valid configuration; every request is refused (fail closed).
    gateway: Option<Rc<Gateway>>,
    stats: Option<Stats>,
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
    if parent == 0 {
        ROOTS.with(|r| {
            if let Ok(mut m) = r.try_borrow_mut() {
                m.insert(id, Root { gateway: None, stats: None });
            }
        });
        return;
    }
    let (gateway, stats) = ROOTS
        .with(|r| r.try_borrow().ok().and_then(|m| m.get(&parent).map(|root| (root.gateway.clone(), root.stats))))
        .unwrap_or((None, None));
    STREAMS.with(|s| {
        if let Ok(mut m) = s.try_borrow_mut() {
            m.insert(id, Stream { gateway, stats, bandwidth_of: None, body_bytes: 0, response_headers: Vec::new() });
        }
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(root: u32, size: usize) -> bool {
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
                    let entry = m.entry(root).or_insert(Root { gateway: None, stats: None });
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
        let mut a = abi::property(b"source\0address")?;
        if let Some(i) = a.iter().rposition(|&b| b == b':') {
            if a.get(i + 1..).is_some_and(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit)) {
                a.truncate(i);
            }
        }
        a.retain(|&b| b != b'[' && b != b']');
        Some(a)
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

fn send_reply(r: &crate::Reply) {
    let mut headers: Vec<(&[u8], &[u8])> = Vec::with_capacity(r.headers.len() + 1);
    headers.push((b"content-type", r.content_type.as_bytes()));
    headers.extend(r.headers.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())));
    abi::send_local_response(r.status, &headers, r.body.as_bytes());
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(id: u32, _headers: usize, _end_of_stream: bool) -> u32 {
    with_stream(id, on_request_headers).unwrap_or(CONTINUE)
}

fn on_request_headers(st: &mut Stream) -> u32 {
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
    let Admission { outcome, events } = admit(&gw, &req, abi::now_ms(), &mut Downstream, &mut SharedData);
    if let Some(s) = &st.stats {
        s.count(&events);
    }
    match outcome {
        Outcome::Reply(r) => {
            send_reply(&r);
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
                send_reply(&crate::reply::internal_error());
                return PAUSE;
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

#[no_mangle]
pub extern "C" fn proxy_on_request_body(id: u32, size: usize, _end_of_stream: bool) -> u32 {
    add_body(id, size);
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_response_body(id: u32, size: usize, _end_of_stream: bool) -> u32 {
    add_body(id, size);
    CONTINUE
}

fn add_body(id: u32, size: usize) {
    with_stream(id, |st| {
        if st.bandwidth_of.is_some() {
            st.body_bytes = st.body_bytes.saturating_add(size as u64);
        }
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(id: u32, _headers: usize, _end_of_stream: bool) -> u32 {
    with_stream(id, |st| {
        for (k, v) in std::mem::take(&mut st.response_headers) {
            abi::add_header(abi::RESPONSE_HEADERS, &k, &v);
        }
    });
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_log(id: u32) {
    with_stream(id, |st| {
        let (Some(sub), Some(gw)) = (st.bandwidth_of.take(), st.gateway.as_ref()) else { return };
        if st.body_bytes == 0 {
            return;
        }
        let events = record_bandwidth(gw, sub, st.body_bytes, abi::now_ms(), &mut SharedData);
        if let Some(s) = &st.stats {
            s.count(&events);
        }
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_done(_id: u32) -> bool {
    true
}

#[no_mangle]
pub extern "C" fn proxy_on_delete(id: u32) {
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
