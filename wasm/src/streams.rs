//! The VM and its contexts: plugins (root contexts) with their compiled configuration, and
//! HTTP streams with what each keeps until it ends.

use super::metrics::{Stats, Usage, TICK_MS};
use super::{abi, profile, rls};
use mlgate_core::{Gateway, ProcessEnv};
use mlgate_envoy::stream::Accounting;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// A plugin (root context): its configuration, once `on_configure` accepted it.
struct Root {
    gateway: Option<Rc<Gateway>>,
    stats: Option<Stats>,
    usage: Option<Rc<Usage>>,
}

/// One HTTP stream.
pub(crate) struct Stream {
    /// `None`: the plugin has no valid configuration; every request is refused (fail closed).
    pub(crate) gateway: Option<Rc<Gateway>>,
    pub(crate) stats: Option<Stats>,
    pub(crate) usage: Option<Rc<Usage>>,
    /// When the request headers first arrived: a call decided by a remote store is judged
    /// again on its answer, and its apiTime still starts here.
    pub(crate) started_ns: Option<u64>,
    /// The usage measure, bandwidth and response headers (shared with the dynamic module).
    pub(crate) acct: Accounting,
    /// The body is held while it is read (an operation that carries tokens), with the request
    /// headers as they arrived (Envoy's map is gone once the headers went on).
    pub(crate) reading_body: bool,
    pub(crate) held_headers: Option<Vec<u8>>,
}

thread_local! {
    static ROOTS: RefCell<HashMap<u32, Root>> = RefCell::new(HashMap::new());
    static STREAMS: RefCell<HashMap<u32, Stream>> = RefCell::new(HashMap::new());
}

/// Runs `f` on stream `id`. A missing stream or a re-entrant call (neither happens in
/// Envoy) is `None`, never a panic.
pub(crate) fn with_stream<T>(id: u32, f: impl FnOnce(&mut Stream) -> T) -> Option<T> {
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
            m.insert(
                id,
                Stream { gateway, stats, usage, started_ns: None, acct: Accounting::default(), reading_body: false, held_headers: None },
            );
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
                    entry.usage = Some(Usage::shared(&gw));
                    entry.gateway = Some(Rc::new(gw));
                    if entry.stats.is_none() {
                        entry.stats = Some(Stats::define());
                    }
                }
            });
            // Each worker's usage batch goes out on its tick.
            abi::set_tick_period(TICK_MS);
            true
        }
        Err(e) => {
            // One line naming the field; never a value.
            abi::log(abi::LOG_ERROR, &e.to_string());
            false
        }
    }
}

/// This worker's usage batches written out, the current configuration's and any replaced one
/// still finishing streams (counters and report buckets lag by at most a tick).
#[no_mangle]
pub extern "C" fn proxy_on_tick(_root: u32) {
    let _p = profile::callback(profile::Cb::Tick);
    super::metrics::flush_all();
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
