//! The only module that talks to Envoy. It reads the request, asks the core for a decision,
//! and applies it: local reply, or header rewrite + limits + filter state. No policy here.

use crate::config::{ExportMetadata, FailureMode, Gateway, ProcessEnv};
use crate::gateway::{Decision, Request};
use crate::limits::{self, Ctx, HostError, Outcome, SetError, Store};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType, Status};
use std::rc::Rc;
use std::time::UNIX_EPOCH;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { gateway: None, stats: None }) });
}}

/// Counters in Envoy's stats (`wasmcustom.mlgate.*`).
#[derive(Clone, Copy)]
struct Stats {
    shared_data_failures: u32,
    failure_mode_allowed: u32,
    rate_limited: u32,
    quota_exceeded: u32,
    shared_counter_slots: u32,
    shared_data_keys: u32,
}

impl Stats {
    fn define() -> Option<Stats> {
        let c = |name: &str| proxy_wasm::hostcalls::define_metric(MetricType::Counter, name).ok();
        let g = |name: &str| proxy_wasm::hostcalls::define_metric(MetricType::Gauge, name).ok();
        Some(Stats {
            shared_data_failures: c("mlgate.shared_data_failures")?,
            failure_mode_allowed: c("mlgate.failure_mode_allowed")?,
            rate_limited: c("mlgate.rate_limited")?,
            quota_exceeded: c("mlgate.quota_exceeded")?,
            shared_counter_slots: c("mlgate.counter_slot_shared")?,
            shared_data_keys: g("mlgate.shared_data_keys")?,
        })
    }
    fn inc(id: u32) {
        let _ = proxy_wasm::hostcalls::increment_metric(id, 1);
    }
}

struct Root {
    gateway: Option<Rc<Gateway>>,
    stats: Option<Stats>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(bytes) = self.get_plugin_configuration() else {
            log(LogLevel::Error, "invalid mlgate configuration: configuration: missing (set the plugin's `configuration`)");
            return false;
        };
        let started = now_ms();
        match Gateway::from_json(&bytes, &ProcessEnv) {
            Ok(gw) => {
                // Linear memory of this VM after configuring, in 64 KiB pages.
                let pages = core::arch::wasm32::memory_size(0);
                log(
                    LogLevel::Info,
                    &format!(
                        "mlgate configured: {} APIs, {} products, {} subscriptions in {} ms; wasm memory {} KiB",
                        gw.apis.len(),
                        gw.products.len(),
                        gw.subscriptions.len(),
                        now_ms().saturating_sub(started),
                        pages * 64
                    ),
                );
                self.gateway = Some(Rc::new(gw));
                if self.stats.is_none() {
                    self.stats = Stats::define();
                }
                true
            }
            Err(e) => {
                // One line naming the field; never a value.
                log(LogLevel::Error, &e.to_string());
                false
            }
        }
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        let gateway = self.gateway.clone()?;
        Some(Box::new(Stream { gateway, stats: self.stats, state: None, body_bytes: 0, rate_limit: None, response_headers: Vec::new() }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// What a forwarded stream remembers for its response and log phases.
struct Admitted {
    sub_index: u32,
    count_bandwidth: bool,
}

struct Stream {
    gateway: Rc<Gateway>,
    stats: Option<Stats>,
    state: Option<Admitted>,
    body_bytes: u64,
    rate_limit: Option<limits::RateLimitStatus>,
    response_headers: Vec<(String, String)>,
}

impl Context for Stream {}

fn log(level: LogLevel, msg: &str) {
    let _ = proxy_wasm::hostcalls::log(level, msg);
}

fn now_ms() -> u64 {
    proxy_wasm::hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

/// The downstream IP without its port (`source.address` is `ip:port` or `[v6]:port`).
fn client_ip() -> String {
    let raw = proxy_wasm::hostcalls::get_property(vec!["source", "address"]).ok().flatten().unwrap_or_default();
    let s = String::from_utf8_lossy(&raw).into_owned();
    match s.rsplit_once(':') {
        Some((ip, port)) if port.bytes().all(|b| b.is_ascii_digit()) => ip.trim_matches(['[', ']']).to_string(),
        _ => s,
    }
}

impl Stream {
    fn reply(&self, r: &crate::reply::Reply) {
        let mut headers: Vec<(&str, &str)> = Vec::with_capacity(r.headers.len() + 1);
        headers.push(("content-type", "application/json"));
        for (k, v) in &r.headers {
            headers.push((k.as_str(), v.as_str()));
        }
        self.send_http_response(u32::from(r.status), headers, Some(r.body.as_bytes()));
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _n: usize, _end_of_stream: bool) -> Action {
        let headers = self.get_http_request_headers();
        let gw = Rc::clone(&self.gateway);
        let req = Request::from_headers(&headers);
        let fwd = match gw.evaluate(&req) {
            Decision::PassThrough => return Action::Continue,
            Decision::Reply(r) => {
                self.reply(&r);
                return Action::Pause;
            }
            Decision::Forward(f) => f,
        };

        let mut count_bandwidth = false;
        if limits::any(&fwd) {
            let ip = if fwd_needs_ip(&fwd) { client_ip() } else { String::new() };
            let mut store = SharedData { keys_created: 0 };
            let outcome = {
                let mut ctx = Ctx {
                    store: &mut store,
                    now_ms: now_ms(),
                    max_retries: gw.settings.max_cas_retries,
                    client_ip: &ip,
                    headers: &headers,
                    counter_slots: gw.settings.counter_slots,
                };
                limits::check(&gw, &fwd, &mut ctx)
            };
            if let Some(s) = self.stats {
                if store.keys_created > 0 {
                    let _ = proxy_wasm::hostcalls::increment_metric(s.shared_data_keys, i64::from(store.keys_created));
                }
            }
            match outcome {
                Outcome::Admit(a) => {
                    if a.shared_counter_slots > 0 {
                        if let Some(s) = self.stats {
                            Stats::inc(s.shared_counter_slots);
                        }
                    }
                    count_bandwidth = a.count_bandwidth;
                    self.response_headers = a.headers;
                    self.rate_limit = a.rate_limit;
                }
                Outcome::Deny(r) => {
                    if let Some(s) = self.stats {
                        Stats::inc(if r.status == 429 { s.rate_limited } else { s.quota_exceeded });
                    }
                    self.reply(&r);
                    return Action::Pause;
                }
                Outcome::Unavailable => {
                    if let Some(s) = self.stats {
                        Stats::inc(s.shared_data_failures);
                    }
                    match gw.settings.failure_mode {
                        FailureMode::Deny => {
                            self.reply(&crate::reply::limits_unavailable());
                            return Action::Pause;
                        }
                        FailureMode::Allow => {
                            if let Some(s) = self.stats {
                                Stats::inc(s.failure_mode_allowed);
                            }
                        }
                    }
                }
            }
        }

        // One host call for the whole rewrite (each crossing costs more than the planning).
        let mut upstream = Vec::with_capacity(headers.len() + 3);
        gw.upstream_headers(&req, &fwd, &mut upstream);
        self.set_http_request_headers(upstream);
        let set = |k: &str, v: &str| {
            let _ = proxy_wasm::hostcalls::set_property(vec![k], Some(v.as_bytes()));
        };
        match gw.settings.export_metadata {
            ExportMetadata::Combined => set("mlgate", &fwd.metadata()),
            ExportMetadata::Fields => {
                set("mlgate.api", &fwd.api.id);
                set("mlgate.operation", &fwd.op.id);
                set("mlgate.subscription", &fwd.sub.id);
                set("mlgate.product", &fwd.product.id);
                set("mlgate.params", &fwd.params_query());
            }
            ExportMetadata::Off => {}
        }
        self.state = Some(Admitted { sub_index: fwd.sub_index, count_bandwidth });
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, _end_of_stream: bool) -> Action {
        if self.state.as_ref().is_some_and(|s| s.count_bandwidth) {
            self.body_bytes += body_size as u64;
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _n: usize, _end_of_stream: bool) -> Action {
        if let Some(rl) = self.rate_limit.take() {
            for (k, v) in rl.headers() {
                self.add_http_response_header(k, &v);
            }
        }
        for (k, v) in std::mem::take(&mut self.response_headers) {
            self.add_http_response_header(&k, &v);
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, _end_of_stream: bool) -> Action {
        if self.state.as_ref().is_some_and(|s| s.count_bandwidth) {
            self.body_bytes += body_size as u64;
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        let Some(st) = self.state.take().filter(|s| s.count_bandwidth && self.body_bytes > 0) else { return };
        let gw = Rc::clone(&self.gateway);
        let Some(sub) = gw.subscriptions.get(st.sub_index as usize) else { return };
        let Some(product) = gw.products.get(sub.product as usize) else { return };
        let mut store = SharedData { keys_created: 0 };
        let mut ctx = Ctx {
            store: &mut store,
            now_ms: now_ms(),
            max_retries: gw.settings.max_cas_retries,
            client_ip: "",
            headers: &[],
            counter_slots: gw.settings.counter_slots,
        };
        if limits::add_bandwidth(sub, product, self.body_bytes, &mut ctx).is_err() {
            if let Some(s) = self.stats {
                Stats::inc(s.shared_data_failures);
            }
        }
    }
}

fn fwd_needs_ip(fwd: &crate::gateway::Forward<'_, '_>) -> bool {
    limits::specs(fwd).any(|s| matches!(s, limits::Spec::Rate { cfg, .. } if cfg.counter.as_deref() == Some("ip")))
}

// ---------------------------------------------------------------------------------------------
// Shared data through the raw ABI: the SDK's wrappers panic on any status but Ok/CasMismatch,
// and a panic would take the VM down. Here every status becomes an error value.
// ---------------------------------------------------------------------------------------------

extern "C" {
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> Status;
    fn proxy_set_shared_data(key_data: *const u8, key_size: usize, value_data: *const u8, value_size: usize, cas: u32) -> Status;
}

struct SharedData {
    keys_created: u32,
}

impl Store for SharedData {
    fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError> {
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut size: usize = 0;
        let mut cas: u32 = 0;
        // SAFETY: the host writes a buffer it allocated through our exported
        // `proxy_on_memory_allocate` (the SDK's, backed by the global allocator), which we then own.
        let status = unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
        match status {
            Status::Ok => {
                let value = if data.is_null() || size == 0 {
                    Vec::new()
                } else {
                    // SAFETY: see above; capacity equals the allocated size.
                    unsafe { Vec::from_raw_parts(data, size, size) }
                };
                Ok(Some((value, cas)))
            }
            Status::NotFound => Ok(None),
            _ => Err(HostError),
        }
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError> {
        // SAFETY: pointers and lengths come from live slices.
        let status = unsafe { proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas) };
        match status {
            Status::Ok => Ok(()),
            Status::CasMismatch => Err(SetError::CasMismatch),
            _ => Err(SetError::Host),
        }
    }

    fn created(&mut self) {
        self.keys_created += 1;
    }
}
