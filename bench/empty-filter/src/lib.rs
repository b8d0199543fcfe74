//! The floor of the Wasm boundary for `make bench`: a filter that only returns Continue.
//!
//! SDK-free (issue 13): it exports by hand every callback the proxy-wasm Rust SDK 0.2 exports
//! for an HTTP filter, so Envoy enters the VM exactly where it entered the SDK-based empty
//! filter, but each entry returns at once (no SDK dispatch, no context boxes). With the
//! `profile` feature each entry is timed with the host's nanosecond clock and the sums are
//! published as the same `mlgate.profile.cb.<callback>.ns` / `.calls` counters as mlgate's.
#![allow(clippy::missing_safety_doc)]

#[cfg(feature = "profile")]
mod profile {
    use std::cell::RefCell;

    pub const NAMES: [&str; 9] = [
        "context_create",
        "request_headers",
        "request_body",
        "request_trailers",
        "response_headers",
        "response_body",
        "response_trailers",
        "log",
        "done",
    ];
    pub const DELETE: usize = NAMES.len();
    const N: usize = NAMES.len() + 1;

    #[link(wasm_import_module = "env")]
    extern "C" {
        fn proxy_get_current_time_nanoseconds(t: *mut u64) -> u32;
        fn proxy_define_metric(kind: u32, name: *const u8, len: usize, id: *mut u32) -> u32;
        fn proxy_increment_metric(id: u32, by: i64) -> u32;
    }

    struct State {
        ns: [u64; N],
        calls: [u64; N],
        clock_calls: u64,
        ids: Option<Vec<u32>>,
    }

    thread_local! {
        static S: RefCell<State> = const { RefCell::new(State { ns: [0; N], calls: [0; N], clock_calls: 0, ids: None }) };
    }

    pub fn clock() -> u64 {
        let mut t = 0;
        unsafe { proxy_get_current_time_nanoseconds(&mut t) };
        t
    }

    pub fn done(i: usize, start: u64) {
        let ns = clock().saturating_sub(start);
        S.with(|s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                if let (Some(a), Some(c)) = (s.ns.get(i).copied(), s.calls.get(i).copied()) {
                    s.ns[i] = a + ns;
                    s.calls[i] = c + 1;
                }
                s.clock_calls += 2;
            }
        });
        if i == DELETE {
            flush_maybe();
        }
    }

    fn define(name: &str) -> u32 {
        let mut id = 0;
        unsafe { proxy_define_metric(0, name.as_ptr(), name.len(), &mut id) };
        id
    }

    fn bump(id: u32, v: u64) {
        if v > 0 {
            unsafe { proxy_increment_metric(id, v as i64) };
        }
    }

    fn flush_maybe() {
        S.with(|s| {
            let Ok(mut s) = s.try_borrow_mut() else { return };
            if s.calls.get(DELETE).copied().unwrap_or(0) < 64 {
                return;
            }
            let t0 = clock();
            let mut t = t0;
            for _ in 0..32 {
                t = clock();
            }
            let ids = s
                .ids
                .get_or_insert_with(|| {
                    let mut v = Vec::new();
                    for name in NAMES.iter().chain(["delete"].iter()) {
                        v.push(define(&format!("mlgate.profile.cb.{name}.ns")));
                        v.push(define(&format!("mlgate.profile.cb.{name}.calls")));
                        v.push(define(&format!("mlgate.profile.own.{name}.ns")));
                    }
                    v.push(define("mlgate.profile.clock.ns"));
                    v.push(define("mlgate.profile.clock.calls"));
                    v.push(define("mlgate.profile.clock_calls"));
                    v.push(define("mlgate.profile.streams"));
                    v
                })
                .clone();
            for i in 0..N {
                bump(ids[3 * i], s.ns[i]);
                bump(ids[3 * i + 1], s.calls[i]);
                bump(ids[3 * i + 2], s.ns[i]); // no host call inside: all of it is own time
            }
            bump(ids[3 * N], t.saturating_sub(t0));
            bump(ids[3 * N + 1], 32);
            bump(ids[3 * N + 2], s.clock_calls);
            bump(ids[3 * N + 3], s.calls[DELETE]);
            s.ns = [0; N];
            s.calls = [0; N];
            s.clock_calls = 0;
        });
    }
}

/// Times the body (profile builds) as callback `i` of `profile::NAMES` (or `DELETE`).
macro_rules! entry {
    ($i:expr, $v:expr) => {{
        #[cfg(feature = "profile")]
        let start = profile::clock();
        let v = $v;
        #[cfg(feature = "profile")]
        profile::done($i, start);
        v
    }};
}

const CONTINUE: u32 = 0;

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    Box::into_raw(vec![0u8; size].into_boxed_slice()).cast::<u8>()
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_root: u32, _size: usize) -> bool {
    true
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(_root: u32, _size: usize) -> bool {
    true
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(_id: u32, _parent: u32) {
    entry!(0, ())
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(_id: u32, _n: usize, _eos: bool) -> u32 {
    entry!(1, CONTINUE)
}

#[no_mangle]
pub extern "C" fn proxy_on_request_body(_id: u32, _size: usize, _eos: bool) -> u32 {
    entry!(2, CONTINUE)
}

#[no_mangle]
pub extern "C" fn proxy_on_request_trailers(_id: u32, _n: usize) -> u32 {
    entry!(3, CONTINUE)
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(_id: u32, _n: usize, _eos: bool) -> u32 {
    entry!(4, CONTINUE)
}

#[no_mangle]
pub extern "C" fn proxy_on_response_body(_id: u32, _size: usize, _eos: bool) -> u32 {
    entry!(5, CONTINUE)
}

#[no_mangle]
pub extern "C" fn proxy_on_response_trailers(_id: u32, _n: usize) -> u32 {
    entry!(6, CONTINUE)
}

#[no_mangle]
pub extern "C" fn proxy_on_log(_id: u32) {
    entry!(7, ())
}

#[no_mangle]
pub extern "C" fn proxy_on_done(_id: u32) -> bool {
    entry!(8, true)
}

#[no_mangle]
pub extern "C" fn proxy_on_delete(_id: u32) {
    #[cfg(feature = "profile")]
    entry!(profile::DELETE, ());
}

// The SDK's other exports (never entered for an HTTP stream), kept so the module's shape is the same.
#[no_mangle]
pub extern "C" fn proxy_on_tick(_root: u32) {}
#[no_mangle]
pub extern "C" fn proxy_on_queue_ready(_root: u32, _queue: u32) {}
#[no_mangle]
pub extern "C" fn proxy_on_http_call_response(_id: u32, _token: u32, _h: usize, _b: usize, _t: usize) {}
#[no_mangle]
pub extern "C" fn proxy_on_grpc_receive(_id: u32, _token: u32, _size: usize) {}
#[no_mangle]
pub extern "C" fn proxy_on_grpc_close(_id: u32, _token: u32, _status: u32) {}
#[no_mangle]
pub extern "C" fn proxy_on_grpc_receive_initial_metadata(_id: u32, _token: u32, _h: u32) {}
#[no_mangle]
pub extern "C" fn proxy_on_grpc_receive_trailing_metadata(_id: u32, _token: u32, _t: u32) {}
