//! What a finished call reports to the remote limit store: its body bytes for a bandwidth quota
//! and its token settle, fire and forget, as the Wasm host sends them from `proxy_on_log`.
//!
//! A filter's callouts die with the filter (Envoy cancels them when it destroys it, right after
//! the end of the stream), so a report cannot be a callout of the stream. It is one of the
//! configuration's, which lives as long as the configuration: the worker queues the report and
//! commits the configuration's scheduler; on the main thread
//! [`envoy_dynamic_module_on_http_filter_config_scheduled`] sends what is queued and
//! [`envoy_dynamic_module_on_http_filter_config_http_callout_done`] reads the answers. The
//! worker's breaker is asked before queueing (an open one: the report fails at once, as in the
//! Wasm form); the answers on the main thread are counted (`rls_failures`, `rls_settle_failures`,
//! the bandwidth counted in the process table under `on_failure: local`) but move no worker's
//! breaker (the checks do that). A configuration removed meanwhile takes its queue with it.

use crate::abi::callout::{ConfigHook, CALLOUT_RESULT_SUCCESS};
use crate::abi::{self, ConfigEnvoy, Filter};
use crate::pending::Queued;
use crate::rls::{breakers, read_answer};
use crate::state::{guard, now_ms, Config};
use crate::store::ProcessStore;
use mlgate_core::admit::tokens::Metered;
use mlgate_core::tokens::TokenUsage;
use mlgate_core::Events;
use mlgate_remote::flow::{self, Counts, Finish};
use mlgate_remote::grpc;
use std::ffi::c_void;
use std::sync::PoisonError;

/// Reports queued at most: past it (the main thread far behind) a report fails at once.
const MAX_QUEUED: usize = 10_000;

/// An admitted call's body bytes for its bandwidth quota, at the end of its stream.
pub(crate) fn bandwidth(f: &Filter, config: &Config, sub: u32, bytes: u64) -> Events {
    let now = now_ms();
    finish(f, config, flow::bandwidth(&config.gateway, sub, bytes, now, &mut ProcessStore), now)
}

/// A finished call's token reservation settled to its usage where it was made.
pub(crate) fn settle(f: &Filter, config: &Config, local: bool, m: &Metered, usage: Option<TokenUsage>) -> Events {
    let now = now_ms();
    finish(f, config, flow::settle(&config.gateway, local, m, usage, now, &mut ProcessStore), now)
}

/// Queues a report for the main thread, unless this worker's breaker is open (or the queue is
/// full): then it fails now.
fn finish(f: &Filter, config: &Config, fin: Finish, now: u64) -> Events {
    let (report, request) = match fin {
        Finish::Done(events) => return events,
        Finish::Send(report, request) => (report, request),
    };
    let mut c = Counts::default();
    let open = flow::settings(&config.gateway).is_none_or(|s| breakers(|b| b.is_open(&s.cluster)));
    let events = match config.reports.as_ref().filter(|_| !open) {
        Some(r) => {
            let mut q = r.queue.lock().unwrap_or_else(PoisonError::into_inner);
            if q.len() < MAX_QUEUED {
                q.push(Queued { report, request });
                drop(q);
                r.scheduler.commit(0);
                c.calls += 1;
                Events::default()
            } else {
                drop(q);
                c.failures += 1;
                flow::report_failed(report, &config.gateway, now, &mut ProcessStore, &mut c)
            }
        }
        None => flow::report_failed(report, &config.gateway, now, &mut ProcessStore, &mut c),
    };
    config.stats.rls(f, &c);
    events
}

/// The configuration behind its module pointer.
///
/// # Safety
/// `ptr` is a pointer `on_http_filter_config_new` returned, which Envoy keeps alive while it
/// calls the configuration's hooks.
unsafe fn config<'a>(ptr: *const c_void) -> Option<&'a Config> {
    // SAFETY: per the contract (an `Arc<Config>` raw pointer; only shared references are made).
    unsafe { ptr.cast::<Config>().as_ref() }
}

/// # Safety
/// Envoy calls this on the main thread with the configuration's pointers (abi.h).
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    config_envoy: ConfigEnvoy,
    config_module: *const c_void,
    _event_id: u64,
) {
    guard((), || {
        // SAFETY: per this hook's contract.
        let (hook, config) = unsafe { (ConfigHook::new(config_envoy), config(config_module)) };
        let Some(config) = config else { return };
        let (Some(r), Some(settings)) = (config.reports.as_ref(), flow::settings(&config.gateway)) else { return };
        let queued = std::mem::take(&mut *r.queue.lock().unwrap_or_else(PoisonError::into_inner));
        let mut c = Counts::default();
        let headers = grpc::request_headers(&settings.cluster);
        for q in queued {
            match hook.http_callout(&settings.cluster, &headers, &grpc::frame(&q.request), u64::from(settings.timeout_ms)) {
                Ok(id) => r.out.lock().unwrap_or_else(PoisonError::into_inner).push((id, q)),
                Err(_) => {
                    c.failures += 1;
                    let events = flow::report_failed(q.report, &config.gateway, now_ms(), &mut ProcessStore, &mut c);
                    config.stats.count_main(&hook, &events);
                }
            }
        }
        config.stats.rls_main(&hook, &c);
    })
}

/// # Safety
/// Envoy calls this on the main thread with the configuration's pointers; `headers` and
/// `body_chunks` are its arrays (or null), valid until this hook returns (abi.h).
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    config_envoy: ConfigEnvoy,
    config_module: *const c_void,
    callout_id: u64,
    result: u32,
    headers: *mut abi::Header,
    headers_size: usize,
    body_chunks: *mut abi::Buffer,
    body_chunks_size: usize,
) {
    guard((), || {
        // SAFETY: per this hook's contract.
        let (hook, config) = unsafe { (ConfigHook::new(config_envoy), config(config_module)) };
        let Some(config) = config else { return };
        let Some(r) = config.reports.as_ref() else { return };
        let q = {
            let mut out = r.out.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(i) = out.iter().position(|(id, _)| *id == callout_id) else { return };
            out.swap_remove(i).1
        };
        let answer = (result == CALLOUT_RESULT_SUCCESS).then(|| {
            // SAFETY: per this hook's contract.
            unsafe { read_answer(headers, headers_size, body_chunks, body_chunks_size) }
        });
        let message =
            answer.as_ref().and_then(|(status, grpc_status, body)| grpc::message(status.as_deref(), grpc_status.as_deref(), body));
        if flow::usable(message.ok_or(())) {
            return;
        }
        let mut c = Counts { failures: 1, ..Counts::default() };
        let events = flow::report_failed(q.report, &config.gateway, now_ms(), &mut ProcessStore, &mut c);
        config.stats.count_main(&hook, &events);
        config.stats.rls_main(&hook, &c);
    })
}
