//! The proxy-wasm ABI (0.2.1), declared by hand. The Rust SDK's wrappers `unwrap` UTF-8
//! conversions and `panic!` on any unexpected status, and a panic is a trap that kills the
//! VM; so mlgate does not use the SDK at all. Every call here returns what the host said,
//! as a value; values from the host are bytes, never assumed to be UTF-8.

use std::ptr::null_mut;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_get_buffer_bytes(buffer_type: u32, start: usize, max_size: usize, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_get_header_map_pairs(map_type: u32, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_add_header_map_value(map_type: u32, key: *const u8, key_size: usize, value: *const u8, value_size: usize) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key: *const u8, key_size: usize) -> u32;
    fn proxy_replace_header_map_value(map_type: u32, key: *const u8, key_size: usize, value: *const u8, value_size: usize) -> u32;
    fn proxy_get_property(path: *const u8, path_size: usize, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_set_property(path: *const u8, path_size: usize, value: *const u8, value_size: usize) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_send_local_response(
        status_code: u32,
        details: *const u8,
        details_size: usize,
        body: *const u8,
        body_size: usize,
        headers: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_get_shared_data(key: *const u8, key_size: usize, data: *mut *mut u8, size: *mut usize, cas: *mut u32) -> u32;
    fn proxy_set_shared_data(key: *const u8, key_size: usize, value: *const u8, value_size: usize, cas: u32) -> u32;
    fn proxy_define_metric(metric_type: u32, name: *const u8, name_size: usize, id: *mut u32) -> u32;
    fn proxy_increment_metric(id: u32, offset: i64) -> u32;
    fn proxy_record_metric(id: u32, value: u64) -> u32;
    fn proxy_get_metric(id: u32, result: *mut u64) -> u32;
    fn proxy_get_header_map_value(map_type: u32, key: *const u8, key_size: usize, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_set_buffer_bytes(buffer_type: u32, start: usize, size: usize, data: *const u8, data_size: usize) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
}

/// What a header or body callback returns: go on, or stop here (a reply was sent, or the
/// request waits for the remote store).
pub const CONTINUE: u32 = 0;
pub const PAUSE: u32 = 1;
/// `proxy_on_request_body`: hold the body (while the request waits for a remote store).
pub const STOP_AND_BUFFER: u32 = 1;

pub const OK: u32 = 0;
pub const NOT_FOUND: u32 = 1;
pub const CAS_MISMATCH: u32 = 8;

pub const REQUEST_HEADERS: u32 = 0;
pub const RESPONSE_HEADERS: u32 = 2;
/// `proxy_get_buffer_bytes` / `proxy_set_buffer_bytes` buffers of the HTTP bodies.
pub const REQUEST_BODY: u32 = 0;
pub const RESPONSE_BODY: u32 = 1;
const PLUGIN_CONFIGURATION: u32 = 7;

pub const LOG_INFO: u32 = 2;
pub const LOG_ERROR: u32 = 4;

pub const COUNTER: u32 = 0;
pub const GAUGE: u32 = 1;
pub const HISTOGRAM: u32 = 2;

/// The host allocates every buffer it returns through this export, and we take ownership.
/// A boxed slice has exactly `size` bytes of capacity, so [`take`] can rebuild it.
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let _p = super::profile::callback(super::profile::Cb::MemoryAllocate);
    Box::into_raw(vec![0u8; size].into_boxed_slice()).cast::<u8>()
}

/// Takes ownership of a buffer the host returned (allocated by [`proxy_on_memory_allocate`]).
fn take(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() || size == 0 {
        return Vec::new();
    }
    // SAFETY: the host filled `data`/`size` from one `proxy_on_memory_allocate(size)` call,
    // which returned a leaked `Box<[u8]>` of exactly `size` bytes; we own it from here on.
    unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(data, size)) }.into_vec()
}

pub fn log(level: u32, msg: &str) {
    let _p = super::profile::host(super::profile::Host::Log);
    // SAFETY: pointer and length come from a live &str.
    unsafe { proxy_log(level, msg.as_ptr(), msg.len()) };
}

/// Milliseconds since the Unix epoch by the host's clock (0 if it will not say).
pub fn now_ms() -> u64 {
    now_ns() / 1_000_000
}

/// Nanoseconds since the Unix epoch by the host's clock (0 if it will not say).
pub fn now_ns() -> u64 {
    let _p = super::profile::host(super::profile::Host::Clock);
    let mut t = 0u64;
    // SAFETY: the host writes one u64 through a pointer to a live local.
    let status = unsafe { proxy_get_current_time_nanoseconds(&mut t) };
    if status == OK {
        t
    } else {
        0
    }
}

pub fn plugin_configuration(size: usize) -> Option<Vec<u8>> {
    let _p = super::profile::host(super::profile::Host::GetBuffer);
    let (mut data, mut len) = (null_mut(), 0usize);
    // SAFETY: out-pointers to live locals; the returned buffer is ours (see `take`).
    let status = unsafe { proxy_get_buffer_bytes(PLUGIN_CONFIGURATION, 0, size, &mut data, &mut len) };
    (status == OK).then(|| take(data, len))
}

/// The serialized header map (`count u32 | (key_len u32, value_len u32)* | (key \0 value \0)*`).
pub fn header_map(map: u32) -> Option<Vec<u8>> {
    let _p = super::profile::host(super::profile::Host::GetHeaderPairs);
    let (mut data, mut len) = (null_mut(), 0usize);
    // SAFETY: out-pointers to live locals; the returned buffer is ours (see `take`).
    let status = unsafe { proxy_get_header_map_pairs(map, &mut data, &mut len) };
    (status == OK).then(|| take(data, len))
}

/// Splits a serialized header map into (name, value) byte slices; `None` (never a panic) for
/// a malformed map. Whole or nothing: the rewrite removes headers by what it read, so a pair
/// it could not read is a request it cannot rewrite.
pub fn parse_header_map(buf: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let rd = |at: usize| buf.get(at..at + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes).map(|n| n as usize);
    let n = rd(0)?;
    if n > buf.len() / 8 {
        return None;
    }
    let mut out = Vec::with_capacity(n);
    let mut at = 4 + 8 * n;
    for i in 0..n {
        let (klen, vlen) = (rd(4 + 8 * i)?, rd(8 + 8 * i)?);
        let k = buf.get(at..at.checked_add(klen)?)?;
        let v = buf.get(at + klen + 1..(at + klen + 1).checked_add(vlen)?)?;
        out.push((k, v));
        at += klen + vlen + 2;
    }
    Some(out)
}

pub fn serialize_header_map(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let size = 4 + pairs.iter().map(|(k, v)| k.len() + v.len() + 10).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    let len32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    out.extend_from_slice(&len32(pairs.len()));
    for (k, v) in pairs {
        out.extend_from_slice(&len32(k.len()));
        out.extend_from_slice(&len32(v.len()));
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

pub fn add_header(map: u32, key: &[u8], value: &[u8]) -> bool {
    let _p = super::profile::host(super::profile::Host::AddHeader);
    // SAFETY: pointers and lengths come from live slices.
    unsafe { proxy_add_header_map_value(map, key.as_ptr(), key.len(), value.as_ptr(), value.len()) == OK }
}

/// Sets the value of a header that is there once (Envoy's `setCopy`).
pub fn replace_header(map: u32, key: &[u8], value: &[u8]) -> bool {
    let _p = super::profile::host(super::profile::Host::ReplaceHeader);
    // SAFETY: pointers and lengths come from live slices.
    unsafe { proxy_replace_header_map_value(map, key.as_ptr(), key.len(), value.as_ptr(), value.len()) == OK }
}

/// Removes every value of a header.
pub fn remove_header(map: u32, key: &[u8]) -> bool {
    let _p = super::profile::host(super::profile::Host::RemoveHeader);
    // SAFETY: pointer and length come from a live slice.
    unsafe { proxy_remove_header_map_value(map, key.as_ptr(), key.len()) == OK }
}

/// A property by its path (parts separated by NUL, e.g. `b"source\0address"`).
pub fn property(path: &[u8]) -> Option<Vec<u8>> {
    let _p = super::profile::host(super::profile::Host::GetProperty);
    let (mut data, mut len) = (null_mut(), 0usize);
    // SAFETY: path from a live slice; out-pointers to live locals; the buffer is ours.
    let status = unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut len) };
    (status == OK).then(|| take(data, len))
}

/// Sets filter state `wasm.<name>`. Failure is ignored: the export is informational.
pub fn set_property(name: &str, value: &[u8]) {
    let _p = super::profile::host(super::profile::Host::SetProperty);
    // SAFETY: pointers and lengths come from live slices.
    unsafe { proxy_set_property(name.as_ptr(), name.len(), value.as_ptr(), value.len()) };
}

pub fn send_local_response(status: u16, headers: &[(&[u8], &[u8])], body: &[u8]) {
    let _p = super::profile::host(super::profile::Host::SendLocalResponse);
    let map = serialize_header_map(headers);
    let details = b"mlgate";
    // SAFETY: every pointer and length comes from a live slice.
    unsafe {
        proxy_send_local_response(
            u32::from(status),
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            map.as_ptr(),
            map.len(),
            -1,
        )
    };
}

/// Shared data: Ok(Some((value, cas))), Ok(None) if absent, Err(status) otherwise.
pub fn get_shared_data(key: &str) -> Result<Option<(Vec<u8>, u32)>, u32> {
    let _p = super::profile::host(super::profile::Host::GetSharedData);
    let (mut data, mut len, mut cas) = (null_mut(), 0usize, 0u32);
    // SAFETY: key from a live &str; out-pointers to live locals; the buffer is ours.
    let status = unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut len, &mut cas) };
    match status {
        OK => Ok(Some((take(data, len), cas))),
        NOT_FOUND => Ok(None),
        s => Err(s),
    }
}

pub fn set_shared_data(key: &str, value: &[u8], cas: u32) -> u32 {
    let _p = super::profile::host(super::profile::Host::SetSharedData);
    // SAFETY: pointers and lengths come from live slices.
    unsafe { proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas) }
}

pub fn define_metric(kind: u32, name: &str) -> Option<u32> {
    let _p = super::profile::host(super::profile::Host::DefineMetric);
    let mut id = 0u32;
    // SAFETY: name from a live &str; out-pointer to a live local.
    let status = unsafe { proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) };
    (status == OK).then_some(id)
}

pub fn increment_metric(id: u32, by: i64) {
    let _p = super::profile::host(super::profile::Host::IncrementMetric);
    // SAFETY: plain values.
    unsafe { proxy_increment_metric(id, by) };
}

/// Sets a gauge, or records a histogram value.
pub fn record_metric(id: u32, value: u64) {
    let _p = super::profile::host(super::profile::Host::RecordMetric);
    // SAFETY: plain values.
    unsafe { proxy_record_metric(id, value) };
}

/// A counter's or gauge's current value (histograms cannot be read back).
pub fn get_metric(id: u32) -> Option<u64> {
    let _p = super::profile::host(super::profile::Host::GetMetric);
    let mut v = 0u64;
    // SAFETY: the host writes one u64 through a pointer to a live local.
    let status = unsafe { proxy_get_metric(id, &mut v) };
    (status == OK).then_some(v)
}

/// One header's value (the first, if repeated).
pub fn header_value(map: u32, key: &str) -> Option<Vec<u8>> {
    let _p = super::profile::host(super::profile::Host::GetHeaderValue);
    let (mut data, mut len) = (null_mut(), 0usize);
    // SAFETY: key from a live &str; out-pointers to live locals; the buffer is ours.
    let status = unsafe { proxy_get_header_map_value(map, key.as_ptr(), key.len(), &mut data, &mut len) };
    (status == OK).then(|| take(data, len))
}

// --- gRPC calls and resuming a paused stream (fleet-wide limits, `host::rls`) ----------------

#[link(wasm_import_module = "env")]
extern "C" {
    #[allow(clippy::too_many_arguments)]
    fn proxy_grpc_call(
        service: *const u8,
        service_size: usize,
        service_name: *const u8,
        service_name_size: usize,
        method: *const u8,
        method_size: usize,
        initial_metadata: *const u8,
        initial_metadata_size: usize,
        message: *const u8,
        message_size: usize,
        timeout_ms: u32,
        token: *mut u32,
    ) -> u32;
    fn proxy_grpc_cancel(token: u32) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
}

/// `proxy_get_buffer_bytes` buffer of a gRPC call's response message.
pub const GRPC_RECEIVE_BUFFER: u32 = 5;
/// `proxy_continue_stream`'s request direction.
pub const STREAM_REQUEST: u32 = 0;

/// A unary gRPC call; the answer comes to `proxy_on_grpc_receive` / `proxy_on_grpc_close`
/// of the root context with the returned token. `service` is a serialized
/// `envoy.config.core.v3.GrpcService`. Err: the host's status (the call was not made).
pub fn grpc_call(service: &[u8], service_name: &str, method: &str, message: &[u8], timeout_ms: u32) -> Result<u32, u32> {
    let _p = super::profile::host(super::profile::Host::GrpcCall);
    let metadata = serialize_header_map(&[]);
    let mut token = 0u32;
    // SAFETY: every pointer and length comes from a live slice; the token is a live local.
    let status = unsafe {
        proxy_grpc_call(
            service.as_ptr(),
            service.len(),
            service_name.as_ptr(),
            service_name.len(),
            method.as_ptr(),
            method.len(),
            metadata.as_ptr(),
            metadata.len(),
            message.as_ptr(),
            message.len(),
            timeout_ms,
            &mut token,
        )
    };
    if status == OK {
        Ok(token)
    } else {
        Err(status)
    }
}

pub fn grpc_cancel(token: u32) {
    let _p = super::profile::host(super::profile::Host::GrpcCancel);
    // SAFETY: a plain value.
    unsafe { proxy_grpc_cancel(token) };
}

/// Makes `context_id` the context later host calls act on (from a root-context callback).
/// False if the host no longer knows that context (the stream ended).
pub fn set_effective_context(context_id: u32) -> bool {
    let _p = super::profile::host(super::profile::Host::SetEffectiveContext);
    // SAFETY: a plain value.
    unsafe { proxy_set_effective_context(context_id) == OK }
}

/// Resumes a stream paused in `proxy_on_request_headers`.
pub fn continue_request() -> bool {
    let _p = super::profile::host(super::profile::Host::ContinueStream);
    // SAFETY: a plain value.
    unsafe { proxy_continue_stream(STREAM_REQUEST) == OK }
}

/// `size` bytes of a host buffer (e.g. [`GRPC_RECEIVE_BUFFER`]).
pub fn buffer(kind: u32, size: usize) -> Option<Vec<u8>> {
    let _p = super::profile::host(super::profile::Host::GetBuffer);
    let (mut data, mut len) = (null_mut(), 0usize);
    // SAFETY: out-pointers to live locals; the returned buffer is ours (see `take`).
    let status = unsafe { proxy_get_buffer_bytes(kind, 0, size, &mut data, &mut len) };
    (status == OK).then(|| take(data, len))
}

/// Replaces the first `size` bytes of a body buffer (the whole body, when `size` is its
/// length) with `data`.
pub fn set_buffer(kind: u32, size: usize, data: &[u8]) -> bool {
    let _p = super::profile::host(super::profile::Host::SetBuffer);
    // SAFETY: `data` is a live slice, read by the host during the call.
    unsafe { proxy_set_buffer_bytes(kind, 0, size, data.as_ptr(), data.len()) == OK }
}

/// Asks the host to call `proxy_on_tick` on this root context every `ms` milliseconds (each
/// worker's root context gets its own ticks).
pub fn set_tick_period(ms: u32) -> bool {
    // SAFETY: a plain value.
    unsafe { proxy_set_tick_period_milliseconds(ms) == OK }
}
