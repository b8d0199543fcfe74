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
use mlgate_core::admit::{admit_with, Admission, Connection, Request};
use mlgate_core::tokens::TokenUsage;
use mlgate_core::{Events, Gateway, Store};
use mlgate_core::{LimitsStore, OnFailure, RlsSettings};
use mlgate_remote::breaker::Breaker;
use mlgate_remote::client::{self, Answered, Ask};
use mlgate_remote::wire;
use std::cell::RefCell;
use std::rc::Rc;

/// What a dispatched call was for.
enum Pending {
    /// A request's check: the stream waiting for it, and whether it is the breaker's probe.
    Check { stream: u32, cluster: String, probe: bool, breaker: (u32, u64) },
    /// A bandwidth report: counted locally instead if it fails under `on_failure: local`.
    Bandwidth { gw: Rc<Gateway>, sub: u32, bytes: u64, cluster: String },
    /// A token settle: if it fails, the reservation stays charged.
    Settle { cluster: String, breaker: (u32, u64) },
}

/// A call's response message, or `Err` if the call failed.
type Answer = Result<Vec<u8>, ()>;

/// Counter ids (`wasmcustom.mlgate.rls_*`), defined on first use in this VM.
#[derive(Clone, Copy)]
struct RlsStats {
    calls: Option<u32>,
    failures: Option<u32>,
    skipped: Option<u32>,
    local: Option<u32>,
    breaker_open: Option<u32>,
    settle_failures: Option<u32>,
}

// Small lists, not hash maps: a worker has few calls out at once, and every map type costs
// Wasm size.
thread_local! {
    /// Calls out, by token.
    static PENDING: RefCell<Vec<(u32, Pending)>> = const { RefCell::new(Vec::new()) };
    /// Streams paused for an answer, with the answer once it came (`Err`: the call failed).
    static WAITING: RefCell<Vec<(u32, Option<Answer>)>> = const { RefCell::new(Vec::new()) };
    /// One breaker per store (cluster) in this VM.
    static BREAKERS: RefCell<Vec<(String, Breaker)>> = const { RefCell::new(Vec::new()) };
    static STATS: RefCell<Option<RlsStats>> = const { RefCell::new(None) };
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

fn stats() -> RlsStats {
    STATS.with(|s| {
        let mut s = s.borrow_mut();
        *s.get_or_insert_with(|| RlsStats {
            calls: abi::define_metric(abi::COUNTER, "mlgate.rls_calls"),
            failures: abi::define_metric(abi::COUNTER, "mlgate.rls_failures"),
            skipped: abi::define_metric(abi::COUNTER, "mlgate.rls_breaker_skipped"),
            local: abi::define_metric(abi::COUNTER, "mlgate.rls_local_fallback"),
            breaker_open: abi::define_metric(abi::GAUGE, "mlgate.rls_breaker_open"),
            settle_failures: abi::define_metric(abi::COUNTER, "mlgate.rls_settle_failures"),
        })
    })
}

fn bump(id: Option<u32>, by: i64) {
    if let Some(id) = id {
        abi::increment_metric(id, by);
    }
}

fn settings(gw: &Gateway) -> Option<&RlsSettings> {
    match &gw.settings.limits_store {
        LimitsStore::Rls(r) => Some(r),
        LimitsStore::SharedData => None,
    }
}

/// Runs `f` on this store's breaker; counts openings and closings in the gauge.
fn with_breaker<T>(cluster: &str, f: impl FnOnce(&mut Breaker) -> T) -> T {
    BREAKERS.with(|b| {
        let mut list = b.borrow_mut();
        let i = match list.iter().position(|(c, _)| c == cluster) {
            Some(i) => i,
            None => {
                list.push((cluster.to_string(), Breaker::default()));
                list.len() - 1
            }
        };
        let Some((_, br)) = list.get_mut(i) else { return f(&mut Breaker::default()) };
        let was_open = br.is_open();
        let out = f(br);
        match (was_open, br.is_open()) {
            (false, true) => bump(stats().breaker_open, 1),
            (true, false) => bump(stats().breaker_open, -1),
            _ => {}
        }
        out
    })
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
    let Some(settings) = settings(gw) else { return Some(mlgate_core::admit(gw, req, now_ms, conn, shared)) };
    // The second pass: the answer is in.
    let answer = WAITING.with(|w| w.borrow_mut().iter_mut().find(|(s, _)| *s == stream).and_then(|(_, a)| a.take()));
    if let Some(answer) = answer {
        let mut answered = Answered::new(settings, answer.as_deref().map_err(|_| ()), shared);
        let a = admit_with(gw, req, now_ms, conn, &mut answered);
        fell_back_local(stream, answered.fell_back_local);
        return a;
    }
    let (decided, request, probe, skipped, local) = with_breaker(&settings.cluster, |breaker| {
        let mut ask = Ask::new(settings, breaker, shared);
        let decided = admit_with(gw, req, now_ms, conn, &mut ask);
        (decided, ask.request.take(), ask.probe, ask.skipped, ask.fell_back_local)
    });
    if skipped {
        bump(stats().skipped, 1);
    }
    fell_back_local(stream, local);
    if decided.is_some() {
        return decided;
    }
    let request = request.unwrap_or_default();
    bump(stats().calls, 1);
    let service = wire::grpc_service(&settings.cluster);
    match abi::grpc_call(&service, mlgate_remote::SERVICE, mlgate_remote::METHOD, &request, settings.timeout_ms) {
        Ok(token) => {
            let breaker = (settings.breaker_failures, settings.breaker_open_ms);
            PENDING.with(|p| p.borrow_mut().push((token, Pending::Check { stream, cluster: settings.cluster.clone(), probe, breaker })));
            WAITING.with(|w| w.borrow_mut().push((stream, None)));
            None
        }
        Err(_) => {
            // The host would not even make the call (no such cluster, ...): a failure now.
            failed(settings, now_ms, probe);
            let mut answered = Answered::new(settings, Err(()), shared);
            let a = admit_with(gw, req, now_ms, conn, &mut answered);
            fell_back_local(stream, answered.fell_back_local);
            a
        }
    }
}

/// Counts a decision made in shared data instead, and remembers the stream: tokens it
/// reserved there are settled there too.
fn fell_back_local(stream: u32, local: bool) {
    if local {
        bump(stats().local, 1);
        LOCAL_CHARGES.with(|l| l.borrow_mut().push(stream));
    }
}

/// Whether the stream's tokens were reserved in shared data (forgetting it).
fn charged_locally(stream: u32) -> bool {
    LOCAL_CHARGES.with(|l| {
        let mut l = l.borrow_mut();
        let i = l.iter().position(|s| *s == stream);
        i.map(|i| l.swap_remove(i)).is_some()
    })
}

fn failed(settings: &RlsSettings, now_ms: u64, probe: bool) {
    bump(stats().failures, 1);
    with_breaker(&settings.cluster, |b| b.failure(now_ms, probe, settings.breaker_failures, settings.breaker_open_ms));
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
    let Some(settings) = settings(gw) else { return mlgate_core::record_bandwidth(gw, sub, bytes, now_ms, shared) };
    let Some(s) = gw.subscriptions.get(sub as usize) else { return Events::default() };
    let Some(product) = gw.products.get(s.product as usize) else { return Events::default() };
    let request = client::bandwidth_request(settings, &s.id, &product.id, bytes);
    let p = Pending::Bandwidth { gw: gw.clone(), sub, bytes, cluster: settings.cluster.clone() };
    if report(settings, &request, now_ms, p) {
        return Events::default();
    }
    if settings.on_failure == OnFailure::Local {
        bump(stats().local, 1);
        return mlgate_core::record_bandwidth(gw, sub, bytes, now_ms, shared);
    }
    Events::default()
}

/// Settles a finished call's token reservation to its usage where it was made: the remote
/// store (a call of its own, fire and forget) or shared data. Without a usage, or when the
/// store cannot be asked, the reservation stays charged.
pub(super) fn settle_tokens(
    stream: u32,
    gw: &Gateway,
    m: &Metered,
    usage: Option<TokenUsage>,
    now_ms: u64,
    shared: &mut dyn Store,
) -> Events {
    let local = charged_locally(stream);
    let Some(settings) = settings(gw).filter(|_| !local) else {
        return mlgate_core::admit::tokens::settle(gw, m, usage, now_ms, shared);
    };
    let Some(request) = usage.and_then(|u| mlgate_remote::tokens::settle_request(settings, gw, m, u.total)) else {
        return Events::default();
    };
    let p = Pending::Settle { cluster: settings.cluster.clone(), breaker: (settings.breaker_failures, settings.breaker_open_ms) };
    if !report(settings, &request, now_ms, p) {
        bump(stats().settle_failures, 1);
    }
    Events::default()
}

/// Sends a report of a finished call (bandwidth, a settle) unless the breaker is open.
/// `false`: it was not sent.
fn report(settings: &RlsSettings, request: &[u8], now_ms: u64, pending: Pending) -> bool {
    if with_breaker(&settings.cluster, |b| b.is_open()) {
        return false;
    }
    let service = wire::grpc_service(&settings.cluster);
    bump(stats().calls, 1);
    if let Ok(token) = abi::grpc_call(&service, mlgate_remote::SERVICE, mlgate_remote::METHOD, request, settings.timeout_ms) {
        PENDING.with(|m| m.borrow_mut().push((token, pending)));
        return true;
    }
    failed(settings, now_ms, false);
    false
}

/// A call's answer (`Ok`: the response message; `Err`: its gRPC status). Returns the stream
/// to judge again, if one is waiting.
pub(super) fn on_answer(token: u32, answer: Result<Vec<u8>, u32>, shared: &mut dyn Store) -> Option<u32> {
    let pending = take_pending(token)?;
    let now_ms = abi::now_ms();
    let ok = client::usable(answer.as_deref().map_err(|_| ()));
    match pending {
        Pending::Check { stream, cluster, probe, breaker } => {
            record(&cluster, ok, probe, breaker, now_ms);
            WAITING.with(|w| {
                let mut w = w.borrow_mut();
                let (_, slot) = w.iter_mut().find(|(s, _)| *s == stream)?;
                *slot = Some(answer.map_err(|_| ()));
                Some(stream)
            })
        }
        Pending::Bandwidth { gw, sub, bytes, cluster } => {
            let breaker = settings(&gw).map_or((5, 1000), |s| (s.breaker_failures, s.breaker_open_ms));
            record(&cluster, ok, false, breaker, now_ms);
            if !ok && settings(&gw).is_some_and(|s| s.on_failure == OnFailure::Local) {
                bump(stats().local, 1);
                let _ = mlgate_core::record_bandwidth(&gw, sub, bytes, now_ms, shared);
            }
            None
        }
        Pending::Settle { cluster, breaker } => {
            record(&cluster, ok, false, breaker, now_ms);
            if !ok {
                bump(stats().settle_failures, 1);
            }
            None
        }
    }
}

fn record(cluster: &str, ok: bool, probe: bool, (threshold, open_ms): (u32, u64), now_ms: u64) {
    if ok {
        with_breaker(cluster, Breaker::success);
        return;
    }
    bump(stats().failures, 1);
    with_breaker(cluster, |b| b.failure(now_ms, probe, threshold, open_ms));
}
