//! The remote limit store in Envoy: the proxy-wasm gRPC calls behind `limits_store: {"rls":
//! ...}`. Everything decided here is the core's (`mlgate-remote`): which descriptors, what an
//! answer means, the breaker, `on_failure`. This module only dispatches, pauses, resumes.
//!
//! The flow: the first pass of `proxy_on_request_headers` ([`admit`]) returns `None` when the
//! limits must be asked remotely; the call is dispatched (it belongs to the root context) and
//! the request pauses (its body and trailers are held too). The answer comes to the root
//! context with the call's token; [`on_answer`] says which stream waited, and `request.rs` makes it the effective context again,
//! runs the same `proxy_on_request_headers` with the answer, and resumes the stream if the
//! request goes upstream (a reply has already ended it). If the stream ended meanwhile, the
//! answer only updates the breaker. Bandwidth is reported, and token reservations settled,
//! from `proxy_on_log` with the same protocol; the call outlives the stream (its answer only
//! matters if it fails: a failed settle leaves the reservation charged, counted in
//! `rls_settle_failures`). A reservation made in shared data (`on_failure: local`) is settled
//! there.

use super::abi;
use mlgate_core::admit::tokens::Metered;
use mlgate_core::admit::{Admission, Connection, Request};
use mlgate_core::tokens::TokenUsage;
use mlgate_core::RlsSettings;
use mlgate_core::{Events, Gateway, Store};
use mlgate_remote::flow::{self, Breakers, Counts, Finish, First, Judge, Report};
use mlgate_remote::wire;
use std::cell::RefCell;
use std::rc::Rc;

/// What a dispatched call was for.
enum Pending {
    /// A request's check: the stream waiting for it, and whether it is the breaker's probe.
    Check { stream: u32, settings: RlsSettings, probe: bool },
    /// A finished call's report (bandwidth, a settle), with the configuration it was made under.
    Report { gw: Rc<Gateway>, report: Report },
}

/// A call's response message, or `Err` if the call failed.
type Answer = Result<Vec<u8>, ()>;

// Small lists, not hash maps: a worker has few calls out at once, and every map type costs
// Wasm size.
thread_local! {
    /// Calls out, by token.
    static PENDING: RefCell<Vec<(u32, Pending)>> = const { RefCell::new(Vec::new()) };
    /// Streams paused for an answer, with the answer once it came (`Err`: the call failed).
    static WAITING: RefCell<Vec<(u32, Option<Answer>)>> = const { RefCell::new(Vec::new()) };
    /// One breaker per store (cluster) in this VM.
    static BREAKERS: RefCell<Breakers> = RefCell::new(Breakers::default());
    /// Counter ids (`wasmcustom.mlgate.rls_*`, `flow::STATS`), defined on first use in this VM.
    static STATS: RefCell<Option<[Option<u32>; 6]>> = const { RefCell::new(None) };
    /// Streams decided in shared data (`on_failure: local`): their tokens are settled there.
    static LOCAL_CHARGES: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

fn take_pending(token: u32) -> Option<Pending> {
    PENDING.with(|p| {
        let mut p = p.borrow_mut();
        let i = p.iter().position(|(t, _)| *t == token)?;
        Some(p.swap_remove(i).1)
    })
}

/// Removes a stream from the waiting list; its answer, if one came.
pub(super) fn unwait(stream: u32) -> Option<Option<Answer>> {
    WAITING.with(|w| {
        let mut w = w.borrow_mut();
        let i = w.iter().position(|(s, _)| *s == stream)?;
        Some(w.swap_remove(i).1)
    })
}

/// Adds what a step counted to the `rls_*` stats.
fn count(c: &Counts) {
    if c.is_empty() {
        return;
    }
    let ids = STATS.with(|s| {
        *s.borrow_mut()
            .get_or_insert_with(|| flow::STATS.map(|(name, gauge)| abi::define_metric(if gauge { abi::GAUGE } else { abi::COUNTER }, name)))
    });
    for (id, by) in ids.iter().zip(c.values()) {
        if let (Some(id), true) = (id, by != 0) {
            abi::increment_metric(*id, by);
        }
    }
}

fn breakers<T>(f: impl FnOnce(&mut Breakers) -> T) -> T {
    BREAKERS.with(|b| f(&mut b.borrow_mut()))
}

/// Judges a request with the configured store. `None`: the limits are being asked remotely
/// (the caller pauses the request; the answer comes through [`on_answer`]).
pub(super) fn admit<'g, 'r>(
    stream: u32,
    gw: &'g Gateway,
    req: &Request<'r>,
    now_ms: u64,
    conn: &mut dyn Connection,
    shared: &mut dyn Store,
) -> Option<Admission<'g, 'r>> {
    let Some(settings) = flow::settings(gw) else { return Some(mlgate_core::admit(gw, req, now_ms, conn, shared)) };
    let mut c = Counts::default();
    // The second pass: the answer is in.
    let answer = WAITING.with(|w| w.borrow_mut().iter_mut().find(|(s, _)| *s == stream).and_then(|(_, a)| a.take()));
    let decided = match answer {
        Some(answer) => flow::second(settings, answer.as_deref().map_err(|_| ()), Judge { gw, req, now_ms, conn, shared }, &mut c),
        None => match breakers(|b| flow::first(settings, b, Judge { gw, req, now_ms, conn, shared: &mut *shared }, &mut c)) {
            First::Decided { admission, local } => (admission, local),
            First::Ask { request, probe } => {
                let service = wire::grpc_service(&settings.cluster);
                match abi::grpc_call(&service, mlgate_remote::SERVICE, mlgate_remote::METHOD, &request, settings.timeout_ms) {
                    Ok(token) => {
                        count(&c);
                        PENDING.with(|p| p.borrow_mut().push((token, Pending::Check { stream, settings: settings.clone(), probe })));
                        WAITING.with(|w| w.borrow_mut().push((stream, None)));
                        return None;
                    }
                    Err(_) => {
                        // The host would not even make the call (no such cluster, ...): a failure now.
                        breakers(|b| b.record(settings, false, probe, now_ms, &mut c));
                        flow::second(settings, Err(()), Judge { gw, req, now_ms, conn, shared }, &mut c)
                    }
                }
            }
        },
    };
    count(&c);
    let (a, local) = decided;
    if local {
        LOCAL_CHARGES.with(|l| l.borrow_mut().push(stream));
    }
    Some(a)
}

/// Whether the stream's tokens were reserved in shared data (forgetting it).
fn charged_locally(stream: u32) -> bool {
    LOCAL_CHARGES.with(|l| {
        let mut l = l.borrow_mut();
        let i = l.iter().position(|s| *s == stream);
        i.map(|i| l.swap_remove(i)).is_some()
    })
}

/// Whether a stream is paused for an answer (its body and trailers are held meanwhile).
pub(super) fn waiting(stream: u32) -> bool {
    WAITING.with(|w| w.borrow().iter().any(|(s, _)| *s == stream))
}

/// The stream is gone: a call still out for it is cancelled.
pub(super) fn forget(stream: u32) {
    charged_locally(stream);
    if unwait(stream).is_none() {
        return;
    }
    let token = PENDING.with(|p| {
        let mut p = p.borrow_mut();
        let i = p.iter().position(|(_, v)| matches!(v, Pending::Check { stream: s, .. } if *s == stream))?;
        Some(p.swap_remove(i).0)
    });
    if let Some(t) = token {
        abi::grpc_cancel(t);
    }
}

/// Reports an admitted call's body bytes to a bandwidth quota. Under a remote store the
/// report is a call of its own (its answer only matters if it fails); events are the local
/// path's.
pub(super) fn record_bandwidth(gw: &Rc<Gateway>, sub: u32, bytes: u64, now_ms: u64, shared: &mut dyn Store) -> Events {
    finish(gw, flow::bandwidth(gw, sub, bytes, now_ms, shared), now_ms, shared)
}

/// Settles a finished call's token reservation to its usage where it was made: the remote
/// store (a call of its own, fire and forget) or shared data. Without a usage, or when the
/// store cannot be asked, the reservation stays charged.
pub(super) fn settle_tokens(
    stream: u32,
    gw: &Rc<Gateway>,
    m: &Metered,
    usage: Option<TokenUsage>,
    now_ms: u64,
    shared: &mut dyn Store,
) -> Events {
    let local = charged_locally(stream);
    finish(gw, flow::settle(gw, local, m, usage, now_ms, shared), now_ms, shared)
}

/// Sends a report of a finished call unless the breaker is open; one not sent counts as failed.
fn finish(gw: &Rc<Gateway>, f: Finish, now_ms: u64, shared: &mut dyn Store) -> Events {
    let (report, request) = match f {
        Finish::Done(events) => return events,
        Finish::Send(report, request) => (report, request),
    };
    let mut c = Counts::default();
    let events = match flow::settings(gw) {
        Some(settings) if !breakers(|b| b.is_open(&settings.cluster)) => {
            let service = wire::grpc_service(&settings.cluster);
            c.calls += 1;
            match abi::grpc_call(&service, mlgate_remote::SERVICE, mlgate_remote::METHOD, &request, settings.timeout_ms) {
                Ok(token) => {
                    PENDING.with(|m| m.borrow_mut().push((token, Pending::Report { gw: gw.clone(), report })));
                    Events::default()
                }
                Err(_) => {
                    breakers(|b| b.record(settings, false, false, now_ms, &mut c));
                    flow::report_failed(report, gw, now_ms, shared, &mut c)
                }
            }
        }
        _ => flow::report_failed(report, gw, now_ms, shared, &mut c),
    };
    count(&c);
    events
}

/// A call's answer (`Ok`: the response message; `Err`: its gRPC status). Returns the stream
/// to judge again, if one is waiting.
pub(super) fn on_answer(token: u32, answer: Result<Vec<u8>, u32>, shared: &mut dyn Store) -> Option<u32> {
    let pending = take_pending(token)?;
    let now_ms = abi::now_ms();
    let ok = flow::usable(answer.as_deref().map_err(|_| ()));
    let mut c = Counts::default();
    let stream = match pending {
        Pending::Check { stream, settings, probe } => {
            breakers(|b| b.record(&settings, ok, probe, now_ms, &mut c));
            WAITING.with(|w| {
                let mut w = w.borrow_mut();
                let (_, slot) = w.iter_mut().find(|(s, _)| *s == stream)?;
                *slot = Some(answer.map_err(|_| ()));
                Some(stream)
            })
        }
        Pending::Report { gw, report } => {
            if let Some(settings) = flow::settings(&gw) {
                breakers(|b| b.record(settings, ok, false, now_ms, &mut c));
            }
            if !ok {
                let _ = flow::report_failed(report, &gw, now_ms, shared, &mut c);
            }
            None
        }
    };
    count(&c);
    stream
}
