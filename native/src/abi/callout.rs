//! The callbacks of ABI v0.2.0 behind the remote limit store (declared by hand, like the rest of
//! [`super`]): an HTTP callout of a filter and the filter resumed, a gauge moved down, and, for
//! the reports that outlive their stream, the configuration's own callouts on the main thread,
//! reached through the configuration's scheduler, and its counters.
//!
//! Checked as the others were (native/README.md, "The ABI and how it was checked"): the text is
//! abi.h v0.2.0 and `source/extensions/filters/http/dynamic_modules/{abi_impl,filter,filter_config}.cc`
//! of the same ABI (agrawroh/envoy, read through the code search), and the 1.40.0 binary exports
//! each symbol and reads the registers declared here:
//!
//! | callback | declaration | binary (1.40) |
//! |---|---|---|
//! | `http_filter_http_callout` | `(filter, uint64_t* id_out, module_buffer cluster, module_http_header* headers, size_t n, module_buffer body, uint64_t timeout_ms) -> init_result` | `rsi` id, `rdx/rcx` cluster, `r8` headers (32-byte stride), `r9` count, body at `0x10(%rbp)`, timeout at `0x20(%rbp)` |
//! | `http_filter_config_http_callout` | the same with the config pointer first | the same registers |
//! | `http_filter_continue_decoding` | `(filter)` | `rdi` only (a tail call) |
//! | `http_filter_decrement_gauge` | `(filter, id, labels*, n, value) -> metrics_result` | as `increment_gauge`: `rsi` id, `rcx` count, `r8` value |
//! | `http_filter_config_increment_counter` | `(config, id, labels*, n, value) -> metrics_result` | as the filter's: `rsi` id, `rcx` count, `r8` value |
//! | `http_filter_config_scheduler_new` / `_commit` / `_delete` | `(config) -> scheduler*`, `(scheduler*, uint64_t event_id)`, `(scheduler*)` | `rdi` (a weak pointer to the config copied out of it) / `rdi`, `rsi` / `rdi` |
//!
//! The hooks these answer to (`on_http_filter_http_callout_done`, `on_http_filter_config_scheduled`,
//! `on_http_filter_config_http_callout_done`) are in `rls.rs` and `reports.rs`. What Envoy does:
//! a filter's callouts are cancelled when the filter is destroyed (so a report sent at the end of
//! a stream would never arrive: reports go through the configuration); a callout answered by
//! Envoy itself (timeout, no connection) is a success with status 504 or 503; a callout Envoy
//! fails at once may be answered *inside* the callout call (its answer hook runs before the call
//! returns `CannotCreateRequest`), so the answer hook ignores answers while a call is made.

use super::{Buffer, ConfigEnvoy, Filter, FilterEnvoy, Header};
use std::ffi::c_void;

// envoy_dynamic_module_type_http_callout_init_result
pub const CALLOUT_SUCCESS: u32 = 0;
// envoy_dynamic_module_type_http_callout_result
pub const CALLOUT_RESULT_SUCCESS: u32 = 0;

/// `envoy_dynamic_module_type_http_filter_config_scheduler_module_ptr`.
pub type SchedulerPtr = *mut c_void;

extern "C" {
    pub fn envoy_dynamic_module_callback_http_filter_http_callout(
        filter: FilterEnvoy,
        callout_id_out: *mut u64,
        cluster_name: Buffer,
        headers: *mut Header,
        headers_size: usize,
        body: Buffer,
        timeout_milliseconds: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_continue_decoding(filter: FilterEnvoy);
    pub fn envoy_dynamic_module_callback_http_filter_decrement_gauge(
        filter: FilterEnvoy,
        id: usize,
        label_values: *mut Buffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;

    pub fn envoy_dynamic_module_callback_http_filter_config_http_callout(
        config: ConfigEnvoy,
        callout_id_out: *mut u64,
        cluster_name: Buffer,
        headers: *mut Header,
        headers_size: usize,
        body: Buffer,
        timeout_milliseconds: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
        config: ConfigEnvoy,
        id: usize,
        label_values: *mut Buffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(config: ConfigEnvoy) -> SchedulerPtr;
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(scheduler: SchedulerPtr, event_id: u64);
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(scheduler: SchedulerPtr);
}

/// The filter's and the configuration's callout functions: the same arguments after the pointer.
type CalloutFn<P> = unsafe extern "C" fn(P, *mut u64, Buffer, *mut Header, usize, Buffer, u64) -> u32;

/// Starts a callout through `f` for `ptr`; `Err` is Envoy's reason it was not made.
///
/// # Safety
/// `ptr` is live for `f` during the call. The id is written into a live local; the cluster,
/// the header array and the body are read during the call (Envoy copies them into the request).
unsafe fn callout<P>(
    f: CalloutFn<P>,
    ptr: P,
    cluster: &str,
    hs: &[(&'static str, String)],
    body: &[u8],
    timeout_ms: u64,
) -> Result<u64, u32> {
    let mut hs: Vec<Header> = hs.iter().map(|(k, v)| Header::of(k.as_bytes(), v.as_bytes())).collect();
    let mut id = 0u64;
    // SAFETY: per this function's contract.
    let r = unsafe { f(ptr, &mut id, Buffer::of(cluster.as_bytes()), hs.as_mut_ptr(), hs.len(), Buffer::of(body), timeout_ms) };
    if r == CALLOUT_SUCCESS {
        Ok(id)
    } else {
        Err(r)
    }
}

impl Filter {
    /// Starts an HTTP callout of this filter; its answer comes to
    /// `envoy_dynamic_module_on_http_filter_http_callout_done` with the id. `Err`: Envoy's
    /// reason it was not made.
    pub fn http_callout(&mut self, cluster: &str, hs: &[(&'static str, String)], body: &[u8], timeout_ms: u64) -> Result<u64, u32> {
        // SAFETY: live filter; Envoy copies the rest into the request during the call.
        unsafe { callout(envoy_dynamic_module_callback_http_filter_http_callout, self.ptr, cluster, hs, body, timeout_ms) }
    }

    /// Resumes a request a hook stopped (Envoy ignores it for one that is not stopped).
    pub fn continue_decoding(&mut self) {
        // SAFETY: live filter; no other argument.
        unsafe { envoy_dynamic_module_callback_http_filter_continue_decoding(self.ptr) }
    }

    /// Moves a gauge defined (without labels) by this filter's config down by `by`.
    pub fn decrement_gauge(&self, id: usize, by: u64) {
        // SAFETY: live filter, created from the config that defined `id`; no labels.
        unsafe { envoy_dynamic_module_callback_http_filter_decrement_gauge(self.ptr, id, std::ptr::null_mut(), 0, by) };
    }
}

/// The config pointer Envoy passes to a configuration's hooks on the main thread
/// (`on_http_filter_config_scheduled`, `on_http_filter_config_http_callout_done`).
pub struct ConfigHook {
    ptr: ConfigEnvoy,
}

impl ConfigHook {
    /// # Safety
    /// `ptr` is the `filter_config_envoy_ptr` of the configuration hook that is running now, and
    /// the value is dropped before it returns.
    pub unsafe fn new(ptr: ConfigEnvoy) -> ConfigHook {
        ConfigHook { ptr }
    }

    /// Starts a callout of the configuration (it lives as long as the configuration, not a
    /// stream); its answer comes to `envoy_dynamic_module_on_http_filter_config_http_callout_done`.
    pub fn http_callout(&self, cluster: &str, hs: &[(&'static str, String)], body: &[u8], timeout_ms: u64) -> Result<u64, u32> {
        // SAFETY: the live config of the running hook (main thread, where its callouts are made).
        unsafe { callout(envoy_dynamic_module_callback_http_filter_config_http_callout, self.ptr, cluster, hs, body, timeout_ms) }
    }

    /// Adds `by` to a counter this configuration defined (without labels).
    pub fn increment_counter(&self, id: usize, by: u64) {
        // SAFETY: the live config that defined `id`; no labels.
        unsafe { envoy_dynamic_module_callback_http_filter_config_increment_counter(self.ptr, id, std::ptr::null_mut(), 0, by) };
    }
}

/// The configuration's scheduler: a commit from any thread runs
/// `on_http_filter_config_scheduled` on the main thread, if the configuration still exists then
/// (Envoy's scheduler holds a weak pointer to it).
pub struct Scheduler {
    ptr: SchedulerPtr,
}

// SAFETY: Envoy's scheduler is a weak pointer to the configuration, copied per commit, and the
// main dispatcher's `post`, which is thread-safe; `delete` happens once, in `Drop`.
unsafe impl Send for Scheduler {}
// SAFETY: as above: `commit` only reads the scheduler.
unsafe impl Sync for Scheduler {}

impl Scheduler {
    /// # Safety
    /// `config` is the config pointer of the running `on_http_filter_config_new` (main thread).
    pub unsafe fn new(config: ConfigEnvoy) -> Option<Scheduler> {
        // SAFETY: per the contract; Envoy allocates the scheduler, we delete it in `Drop`.
        let ptr = unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_new(config) };
        (!ptr.is_null()).then_some(Scheduler { ptr })
    }

    pub fn commit(&self, event_id: u64) {
        // SAFETY: a scheduler Envoy made and not yet deleted (deleted only in `Drop`).
        unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_commit(self.ptr, event_id) }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        // SAFETY: made by Envoy, deleted once.
        unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_delete(self.ptr) }
    }
}
