//! What a configuration and a stream keep, and what every hook uses: the clocks, the panic
//! guard at the FFI boundary, and the stream behind Envoy's module pointer.

use crate::metrics::{Stats, Usage};
use crate::pending::{Reports, Wait};
use mlgate_core::Gateway;
use mlgate_envoy::stream::Accounting;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, LazyLock};
use std::time::Instant;

/// A filter configuration (one per `filter_config`), shared by every worker's streams.
pub(crate) struct Config {
    pub(crate) gateway: Gateway,
    pub(crate) stats: Stats,
    pub(crate) usage: Usage,
    /// The reports finished calls send to a remote limit store (`limits_store.rls` only).
    pub(crate) reports: Option<Reports>,
}

/// One HTTP stream.
pub(crate) struct Stream {
    pub(crate) config: Arc<Config>,
    /// The usage measure, bandwidth and response headers (shared with the Wasm host).
    pub(crate) acct: Accounting,
    /// A local reply was sent (never send a second one, even after a panic).
    pub(crate) replied: bool,
    /// The request is held while its body is read (an operation that carries tokens), since
    /// this clock reading: the start of the call's apiTime when it is judged with the body.
    pub(crate) reading_body: Option<u64>,
    /// The response is held until it ends (to add `tokens_consumed_header`).
    pub(crate) holding_response: bool,
    /// The request asked the remote limit store (`limits_store.rls`) and is held for its answer.
    pub(crate) rls: Option<Wait>,
    /// The call was decided in the process table instead (`on_failure: local`): its tokens are
    /// settled there too.
    pub(crate) charged_locally: bool,
}

impl Stream {
    pub(crate) fn new(config: Arc<Config>) -> Stream {
        Stream {
            config,
            acct: Accounting::default(),
            replied: false,
            reading_body: None,
            holding_response: false,
            rls: None,
            charged_locally: false,
        }
    }
}

/// Nanoseconds of a monotonic clock (from the module's first reading): the stream accounting's
/// times.
pub(crate) fn now_ns() -> u64 {
    static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
    u64::try_from(EPOCH.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Runs a hook body; a panic is caught here, at the FFI boundary, and becomes `fallback`.
pub(crate) fn guard<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

/// The stream behind a module pointer.
///
/// # Safety
/// `ptr` is a pointer [`envoy_dynamic_module_on_http_filter_new`] returned and Envoy has not
/// destroyed yet; Envoy calls one filter's hooks on one worker thread, one at a time, so this
/// is the only reference while the hook runs.
pub(crate) unsafe fn stream<'a>(ptr: *const c_void) -> Option<&'a mut Stream> {
    // SAFETY: per the contract above; null (never returned by filter_new) is `None`.
    unsafe { ptr.cast_mut().cast::<Stream>().as_mut() }
}
