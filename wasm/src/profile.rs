//! Attribution inside the VM (issue 13), in builds with the `profile` feature only: every
//! exported callback and every host call is timed with the host's nanosecond clock, summed
//! per worker (this VM), and published as Envoy counters every 64 streams from
//! `proxy_on_delete`:
//!
//! - `mlgate.profile.cb.<callback>.ns` / `.calls`: time inside each callback entered;
//! - `mlgate.profile.host.<call>.ns` / `.calls`: time inside each host call (the VM's view:
//!   the crossing, Envoy's work and the copy back);
//! - `mlgate.profile.own.<callback>.ns`: the callback's time minus the host calls inside it
//!   (mlgate's own compute, plus the profiling clock calls it made, see below);
//! - `mlgate.profile.clock.ns` / `.calls`: the cost of one clock call, calibrated at each flush
//!   by back-to-back calls; `mlgate.profile.clock_calls`: clock calls the profiling made;
//! - `mlgate.profile.streams`: streams deleted (the per-request denominator).
//!
//! The host allocating a buffer in the VM (`proxy_on_memory_allocate`, inside a host call) is
//! counted (`cb.memory_allocate.calls`), not timed: its time is the host call's.
//!
//! Without the feature every function here is an empty inline no-op and the metrics do not
//! exist: the release `.wasm` neither defines nor calls anything for profiling.

/// The exported callbacks (VM entries).
#[derive(Clone, Copy)]
pub enum Cb {
    ContextCreate,
    Configure,
    RequestHeaders,
    RequestBody,
    RequestTrailers,
    ResponseHeaders,
    ResponseBody,
    Log,
    Done,
    Delete,
    GrpcReceive,
    GrpcClose,
    MemoryAllocate,
    Tick,
}

/// The host calls mlgate makes.
#[derive(Clone, Copy)]
pub enum Host {
    Log,
    Clock,
    GetBuffer,
    GetHeaderPairs,
    GetHeaderValue,
    AddHeader,
    ReplaceHeader,
    RemoveHeader,
    GetProperty,
    SetProperty,
    SendLocalResponse,
    GetSharedData,
    SetSharedData,
    DefineMetric,
    IncrementMetric,
    RecordMetric,
    GetMetric,
    GrpcCall,
    GrpcCancel,
    SetEffectiveContext,
    ContinueStream,
    SetBuffer,
}

#[cfg(feature = "profile")]
pub use on::{callback, flush_maybe, host};

#[cfg(not(feature = "profile"))]
pub struct Span;

#[cfg(not(feature = "profile"))]
#[inline(always)]
pub fn callback(_cb: Cb) -> Span {
    Span
}

#[cfg(not(feature = "profile"))]
#[inline(always)]
pub fn host(_h: Host) -> Span {
    Span
}

#[cfg(not(feature = "profile"))]
#[inline(always)]
pub fn flush_maybe() {}

#[cfg(feature = "profile")]
mod on {
    use crate::profile::{Cb, Host};

    /// Streams between two flushes of one worker's sums into Envoy's counters.
    pub const FLUSH_EVERY: u64 = 64;
    use std::cell::{Cell, RefCell};

    const CBS: [(Cb, &str); 14] = [
        (Cb::ContextCreate, "context_create"),
        (Cb::Configure, "configure"),
        (Cb::RequestHeaders, "request_headers"),
        (Cb::RequestBody, "request_body"),
        (Cb::RequestTrailers, "request_trailers"),
        (Cb::ResponseHeaders, "response_headers"),
        (Cb::ResponseBody, "response_body"),
        (Cb::Log, "log"),
        (Cb::Done, "done"),
        (Cb::Delete, "delete"),
        (Cb::GrpcReceive, "grpc_receive"),
        (Cb::GrpcClose, "grpc_close"),
        (Cb::MemoryAllocate, "memory_allocate"),
        (Cb::Tick, "tick"),
    ];

    const HOSTS: [(Host, &str); 22] = [
        (Host::Log, "log"),
        (Host::Clock, "get_current_time"),
        (Host::GetBuffer, "get_buffer_bytes"),
        (Host::GetHeaderPairs, "get_header_map_pairs"),
        (Host::GetHeaderValue, "get_header_map_value"),
        (Host::AddHeader, "add_header_map_value"),
        (Host::ReplaceHeader, "replace_header_map_value"),
        (Host::RemoveHeader, "remove_header_map_value"),
        (Host::GetProperty, "get_property"),
        (Host::SetProperty, "set_property"),
        (Host::SendLocalResponse, "send_local_response"),
        (Host::GetSharedData, "get_shared_data"),
        (Host::SetSharedData, "set_shared_data"),
        (Host::DefineMetric, "define_metric"),
        (Host::IncrementMetric, "increment_metric"),
        (Host::RecordMetric, "record_metric"),
        (Host::GetMetric, "get_metric"),
        (Host::GrpcCall, "grpc_call"),
        (Host::GrpcCancel, "grpc_cancel"),
        (Host::SetEffectiveContext, "set_effective_context"),
        (Host::ContinueStream, "continue_stream"),
        (Host::SetBuffer, "set_buffer_bytes"),
    ];

    const NC: usize = CBS.len();
    const NH: usize = HOSTS.len();

    /// One worker's sums since the last flush.
    struct Sums {
        cb_ns: [u64; NC],
        cb_calls: [u64; NC],
        own_ns: [u64; NC],
        host_ns: [u64; NH],
        host_calls: [u64; NH],
        clock_calls: u64,
        streams: u64,
    }

    /// Metric ids, defined at the first flush.
    struct Ids {
        cb_ns: [Option<u32>; NC],
        cb_calls: [Option<u32>; NC],
        own_ns: [Option<u32>; NC],
        host_ns: [Option<u32>; NH],
        host_calls: [Option<u32>; NH],
        clock_ns: Option<u32>,
        clock_samples: Option<u32>,
        clock_calls: Option<u32>,
        streams: Option<u32>,
    }

    thread_local! {
        static SUMS: RefCell<Sums> = const { RefCell::new(Sums {
            cb_ns: [0; NC], cb_calls: [0; NC], own_ns: [0; NC],
            host_ns: [0; NH], host_calls: [0; NH], clock_calls: 0, streams: 0,
        }) };
        static IDS: RefCell<Option<Ids>> = const { RefCell::new(None) };
        /// Host-call time inside the callback being timed (nanoseconds).
        static INNER: Cell<u64> = const { Cell::new(0) };
        /// A callback is being timed (host calls outside one, e.g. at flush, are not counted).
        static DEPTH: Cell<u32> = const { Cell::new(0) };
        static FLUSHING: Cell<bool> = const { Cell::new(false) };
    }

    #[link(wasm_import_module = "env")]
    extern "C" {
        fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
        fn proxy_define_metric(metric_type: u32, name: *const u8, name_size: usize, id: *mut u32) -> u32;
        fn proxy_increment_metric(id: u32, offset: i64) -> u32;
    }

    fn clock() -> u64 {
        let mut t = 0u64;
        // SAFETY: the host writes one u64 through a pointer to a live local.
        unsafe { proxy_get_current_time_nanoseconds(&mut t) };
        t
    }

    fn add(slot: Option<&mut u64>, v: u64) {
        if let Some(s) = slot {
            *s = s.saturating_add(v);
        }
    }

    enum Kind {
        Cb(Cb),
        Host(Host),
        Off,
    }

    /// Times one callback or host call until dropped.
    pub struct Span {
        kind: Kind,
        start: u64,
        /// [`INNER`] when a callback's span started.
        inner_before: u64,
    }

    pub fn callback(cb: Cb) -> Span {
        if matches!(cb, Cb::MemoryAllocate) {
            // Counted, not timed (it runs inside a host call, which is timed).
            SUMS.with(|s| {
                if let Ok(mut s) = s.try_borrow_mut() {
                    add(s.cb_calls.get_mut(cb as usize), 1);
                }
            });
            return Span { kind: Kind::Off, start: 0, inner_before: 0 };
        }
        DEPTH.with(|d| d.set(d.get().saturating_add(1)));
        let inner_before = INNER.with(Cell::get);
        Span { kind: Kind::Cb(cb), start: clock(), inner_before }
    }

    pub fn host(h: Host) -> Span {
        if DEPTH.with(Cell::get) == 0 || FLUSHING.with(Cell::get) {
            return Span { kind: Kind::Off, start: 0, inner_before: 0 };
        }
        Span { kind: Kind::Host(h), start: clock(), inner_before: 0 }
    }

    impl Drop for Span {
        fn drop(&mut self) {
            let kind = match self.kind {
                Kind::Off => return,
                Kind::Cb(c) => Kind::Cb(c),
                Kind::Host(h) => Kind::Host(h),
            };
            let ns = clock().saturating_sub(self.start);
            match kind {
                Kind::Host(h) => {
                    INNER.with(|i| i.set(i.get().saturating_add(ns)));
                    SUMS.with(|s| {
                        if let Ok(mut s) = s.try_borrow_mut() {
                            add(s.host_ns.get_mut(h as usize), ns);
                            add(s.host_calls.get_mut(h as usize), 1);
                            s.clock_calls = s.clock_calls.saturating_add(2);
                        }
                    });
                }
                Kind::Cb(c) => {
                    DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
                    let inner = INNER.with(Cell::get).saturating_sub(self.inner_before);
                    SUMS.with(|s| {
                        if let Ok(mut s) = s.try_borrow_mut() {
                            add(s.cb_ns.get_mut(c as usize), ns);
                            add(s.cb_calls.get_mut(c as usize), 1);
                            add(s.own_ns.get_mut(c as usize), ns.saturating_sub(inner));
                            s.clock_calls = s.clock_calls.saturating_add(2);
                            if matches!(c, Cb::Delete) {
                                s.streams = s.streams.saturating_add(1);
                            }
                        }
                    });
                }
                Kind::Off => {}
            }
        }
    }

    fn define(name: &str) -> Option<u32> {
        let mut id = 0u32;
        // SAFETY: pointer and length from a live &str; the host writes one u32 to a live local.
        let status = unsafe { proxy_define_metric(0, name.as_ptr(), name.len(), &mut id) };
        (status == 0).then_some(id)
    }

    fn bump(id: Option<u32>, v: u64) {
        if let (Some(id), true) = (id, v > 0) {
            // SAFETY: plain values.
            unsafe { proxy_increment_metric(id, i64::try_from(v).unwrap_or(i64::MAX)) };
        }
    }

    fn define_all() -> Ids {
        let mut ids = Ids {
            cb_ns: [None; NC],
            cb_calls: [None; NC],
            own_ns: [None; NC],
            host_ns: [None; NH],
            host_calls: [None; NH],
            clock_ns: define("mlgate.profile.clock.ns"),
            clock_samples: define("mlgate.profile.clock.calls"),
            clock_calls: define("mlgate.profile.clock_calls"),
            streams: define("mlgate.profile.streams"),
        };
        for (i, (_, name)) in CBS.iter().enumerate() {
            if let Some(slot) = ids.cb_ns.get_mut(i) {
                *slot = define(&format!("mlgate.profile.cb.{name}.ns"));
            }
            if let Some(slot) = ids.cb_calls.get_mut(i) {
                *slot = define(&format!("mlgate.profile.cb.{name}.calls"));
            }
            if let Some(slot) = ids.own_ns.get_mut(i) {
                *slot = define(&format!("mlgate.profile.own.{name}.ns"));
            }
        }
        for (i, (_, name)) in HOSTS.iter().enumerate() {
            if let Some(slot) = ids.host_ns.get_mut(i) {
                *slot = define(&format!("mlgate.profile.host.{name}.ns"));
            }
            if let Some(slot) = ids.host_calls.get_mut(i) {
                *slot = define(&format!("mlgate.profile.host.{name}.calls"));
            }
        }
        ids
    }

    /// Called from `proxy_on_delete` after its span ended: every [`FLUSH_EVERY`] streams,
    /// adds this worker's sums to the counters and starts again from zero. Not itself timed.
    pub fn flush_maybe() {
        let due = SUMS.with(|s| s.try_borrow().is_ok_and(|s| s.streams >= FLUSH_EVERY));
        if !due {
            return;
        }
        FLUSHING.with(|f| f.set(true));
        // The clock's own cost: 32 back-to-back calls.
        const SAMPLES: u64 = 32;
        let t0 = clock();
        let mut t = t0;
        for _ in 0..SAMPLES {
            t = clock();
        }
        let clock_ns = t.saturating_sub(t0);
        let taken = SUMS.with(|s| {
            s.try_borrow_mut().ok().map(|mut s| {
                std::mem::replace(
                    &mut *s,
                    Sums {
                        cb_ns: [0; NC],
                        cb_calls: [0; NC],
                        own_ns: [0; NC],
                        host_ns: [0; NH],
                        host_calls: [0; NH],
                        clock_calls: 0,
                        streams: 0,
                    },
                )
            })
        });
        if let Some(s) = taken {
            IDS.with(|ids| {
                if let Ok(mut ids) = ids.try_borrow_mut() {
                    let ids = ids.get_or_insert_with(define_all);
                    for i in 0..NC {
                        bump(ids.cb_ns.get(i).copied().flatten(), s.cb_ns.get(i).copied().unwrap_or(0));
                        bump(ids.cb_calls.get(i).copied().flatten(), s.cb_calls.get(i).copied().unwrap_or(0));
                        bump(ids.own_ns.get(i).copied().flatten(), s.own_ns.get(i).copied().unwrap_or(0));
                    }
                    for i in 0..NH {
                        bump(ids.host_ns.get(i).copied().flatten(), s.host_ns.get(i).copied().unwrap_or(0));
                        bump(ids.host_calls.get(i).copied().flatten(), s.host_calls.get(i).copied().unwrap_or(0));
                    }
                    bump(ids.clock_ns, clock_ns);
                    bump(ids.clock_samples, SAMPLES);
                    bump(ids.clock_calls, s.clock_calls);
                    bump(ids.streams, s.streams);
                }
            });
        }
        FLUSHING.with(|f| f.set(false));
    }
}
