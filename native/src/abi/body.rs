//! The body callbacks of ABI v0.2.0 (declared by hand, like the rest of [`super`]): the chunks of
//! a body read, drained and appended to, and whether the chunk a body hook was handed is the
//! buffered body itself.
//!
//! Checked as the others were (native/README.md, "The ABI and how it was checked"): the text is
//! abi.h at `ENVOY_DYNAMIC_MODULES_ABI_VERSION "v0.2.0"` (agrawroh/envoy at
//! 05f72c01c038709243e7b58d9faccc6e7d1b7754, "HTTP Request/Response body callbacks"), the
//! behaviour is `source/extensions/filters/http/dynamic_modules/abi_impl.cc` and `filter.cc` of
//! the same ABI, and the 1.40.0 binary exports each symbol and reads the registers declared here:
//!
//! | callback | declaration | binary (1.40) |
//! |---|---|---|
//! | `http_get_body_chunks_size` | `(filter, body_type) -> size_t` | `esi` type (≤ 3) |
//! | `http_get_body_chunks` | `(filter, body_type, envoy_buffer* result) -> bool` | `esi` type, `rdx` array |
//! | `http_drain_body` | `(filter, body_type, size_t n) -> bool` | `esi` type, `rdx` count |
//! | `http_append_body` | `(filter, body_type, module_buffer data) -> bool` | `esi` type, `rdx/rcx` data |
//! | `http_received_buffered_{request,response}_body` | `(filter) -> bool` | `rdi` only |
//!
//! Behaviour: the unit tests against the fake Envoy (`tests/bodies.rs`) and a chat call through
//! a real 1.40 (native/README.md, the table); no test in tests/e2e covers them yet.
//!
//! What the body types are (abi_impl.cc, `getBufferByType`): the *received* body is the chunk
//! the running body hook was handed (none outside a body hook); the *buffered* body is what
//! Envoy holds for this stream because a filter returned `StopIterationAndBuffer`
//! (`decodingBuffer()` / `encodingBuffer()`, absent until something was buffered). While a body
//! hook returns `StopIterationAndBuffer`, each call hands the new chunk and the earlier ones are
//! in the buffered body; so the whole body at the last call is buffered + received, unless an
//! earlier filter buffered and resumed, when the received chunk *is* the buffered body (the
//! `received_buffered_*` callbacks say so). Appending to the buffered body calls
//! `addDecodedData`/`addEncodedData` when there is none yet (allowed in the headers hook at the
//! end of the stream and in the trailers hook), `modifyDecodingBuffer` otherwise.

use super::{Buffer, Filter, FilterEnvoy};

// envoy_dynamic_module_type_http_body_type (the received types are in `super`).
pub const BUFFERED_REQUEST_BODY: u32 = 1;
pub const BUFFERED_RESPONSE_BODY: u32 = 3;

// envoy_dynamic_module_type_on_http_filter_{request,response}_body_status (FilterDataStatus):
// Continue = 0 is `super::CONTINUE`.
/// Hold this chunk with the earlier ones; the hook is called again with the next.
pub const STOP_ITERATION_AND_BUFFER: u32 = 1;
/// Stop without keeping the chunk (after a local reply).
pub const STOP_ITERATION_NO_BUFFER: u32 = 3;

extern "C" {
    pub fn envoy_dynamic_module_callback_http_get_body_chunks_size(filter: FilterEnvoy, body_type: u32) -> usize;
    pub fn envoy_dynamic_module_callback_http_get_body_chunks(
        filter: FilterEnvoy,
        body_type: u32,
        result_buffer_vector: *mut Buffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_drain_body(filter: FilterEnvoy, body_type: u32, number_of_bytes: usize) -> bool;
    pub fn envoy_dynamic_module_callback_http_append_body(filter: FilterEnvoy, body_type: u32, data: Buffer) -> bool;
    pub fn envoy_dynamic_module_callback_http_received_buffered_request_body(filter: FilterEnvoy) -> bool;
    pub fn envoy_dynamic_module_callback_http_received_buffered_response_body(filter: FilterEnvoy) -> bool;
}

impl Filter {
    /// The chunks of one body as Envoy holds them (empty when there is none). The slices borrow
    /// `self`: abi.h keeps them valid until the hook returns unless a setter is called, and
    /// every setter takes `&mut self`.
    pub fn body_chunks(&self, body_type: u32) -> Vec<&[u8]> {
        // SAFETY: a plain query on the live filter (`Filter::new`'s contract).
        let n = unsafe { envoy_dynamic_module_callback_http_get_body_chunks_size(self.ptr, body_type) };
        if n == 0 {
            return Vec::new();
        }
        let mut raw = vec![Buffer::NULL; n];
        // SAFETY: `raw` has room for the `n` slices the size call reported (the ABI's
        // precondition), and nothing runs on this worker between the two calls.
        if !unsafe { envoy_dynamic_module_callback_http_get_body_chunks(self.ptr, body_type, raw.as_mut_ptr()) } {
            return Vec::new();
        }
        // SAFETY: Envoy's slices stay valid until the hook returns unless a setter is called;
        // they borrow `self`, and setters need `&mut self`.
        raw.into_iter().map(|b| unsafe { b.bytes() }).collect()
    }

    /// Drains up to `n` bytes from the front of a body; false when that body is not there.
    pub fn drain_body(&mut self, body_type: u32, n: usize) -> bool {
        // SAFETY: live filter; no pointer argument. May invalidate body slices, hence `&mut`.
        unsafe { envoy_dynamic_module_callback_http_drain_body(self.ptr, body_type, n) }
    }

    /// Appends `data` to a body (Envoy copies it during the call); false when that body is
    /// not there (a received body outside its hook).
    pub fn append_body(&mut self, body_type: u32, data: &[u8]) -> bool {
        // SAFETY: live filter; `data` points into a live slice, read during the call only.
        unsafe { envoy_dynamic_module_callback_http_append_body(self.ptr, body_type, Buffer::of(data)) }
    }

    /// Whether the chunk this body hook was handed is the buffered body itself (an earlier
    /// filter buffered the body and resumed): then the two must not be read as one after the
    /// other.
    pub fn received_is_buffered(&self, response: bool) -> bool {
        // SAFETY: a plain query on the live filter.
        unsafe {
            if response {
                envoy_dynamic_module_callback_http_received_buffered_response_body(self.ptr)
            } else {
                envoy_dynamic_module_callback_http_received_buffered_request_body(self.ptr)
            }
        }
    }
}
