//! The remote limit store against the fake Envoy: the check as a callout (gRPC over HTTP/2) and
//! the request held until its answer, each answer applied as the Wasm form applies it (`OK`,
//! `OVER_LIMIT`, failures by `on_failure`), the breaker, a callout Envoy refuses, the body held
//! while waiting, and a finished call's report sent by the configuration on the main thread.
//! The fake's callout, scheduler and resume callbacks are here.

use super::*;
use crate::abi::body::{BUFFERED_REQUEST_BODY, STOP_ITERATION_AND_BUFFER};
use crate::abi::callout::SchedulerPtr;
use crate::abi::RECEIVED_REQUEST_BODY;
use crate::answer::*;
use crate::reports::*;
use mlgate_remote::wire::{self, CurrentLimit, Response, Status, CODE_OK, CODE_OVER_LIMIT, UNIT_MINUTE};

#[derive(Default)]
pub(super) struct FakeRls {
    /// The filters' callouts, then the configuration's: (id, cluster, headers, body, timeout).
    callouts: Vec<(u64, String, Pairs, Vec<u8>, u64)>,
    config_callouts: Vec<(u64, String, Pairs, Vec<u8>, u64)>,
    /// What a callout answers (0: success).
    init_result: u32,
    next_id: u64,
    continued: u32,
    commits: u32,
}

unsafe fn callout(
    out: &mut Vec<(u64, String, Pairs, Vec<u8>, u64)>,
    id: *mut u64,
    cluster: Buffer,
    hs: *mut Header,
    n: usize,
    body: Buffer,
    t: u64,
) -> u32 {
    let headers = (0..n)
        .map(|i| {
            let h = unsafe { *hs.add(i) };
            unsafe { (owned(Buffer { ptr: h.key_ptr, length: h.key_length }), owned(Buffer { ptr: h.value_ptr, length: h.value_length })) }
        })
        .collect();
    let cluster = String::from_utf8(unsafe { owned(cluster) }).unwrap();
    let next = out.len() as u64 + 1;
    out.push((next, cluster, headers, unsafe { owned(body) }, t));
    unsafe { *id = next };
    0
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_filter_http_callout(
    _f: abi::FilterEnvoy,
    id: *mut u64,
    cluster: Buffer,
    hs: *mut Header,
    n: usize,
    body: Buffer,
    t: u64,
) -> u32 {
    let refuse = fake(|f| f.rls.init_result);
    if refuse != 0 {
        return refuse;
    }
    let mut calls = fake(|f| std::mem::take(&mut f.rls.callouts));
    let r = unsafe { callout(&mut calls, id, cluster, hs, n, body, t) };
    fake(|f| {
        f.rls.callouts = calls;
        f.rls.next_id += 1;
    });
    r
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_filter_config_http_callout(
    _c: abi::ConfigEnvoy,
    id: *mut u64,
    cluster: Buffer,
    hs: *mut Header,
    n: usize,
    body: Buffer,
    t: u64,
) -> u32 {
    let mut calls = fake(|f| std::mem::take(&mut f.rls.config_callouts));
    let r = unsafe { callout(&mut calls, id, cluster, hs, n, body, t) };
    fake(|f| f.rls.config_callouts = calls);
    r
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_filter_continue_decoding(_f: abi::FilterEnvoy) {
    fake(|f| f.rls.continued += 1);
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_filter_decrement_gauge(
    _f: abi::FilterEnvoy,
    id: usize,
    _l: *mut Buffer,
    _n: usize,
    v: u64,
) -> u32 {
    fake(|f| *f.metrics.entry(id).or_default() -= v);
    abi::METRICS_SUCCESS
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
    _c: abi::ConfigEnvoy,
    id: usize,
    _l: *mut Buffer,
    _n: usize,
    v: u64,
) -> u32 {
    fake(|f| *f.metrics.entry(id).or_default() += v);
    abi::METRICS_SUCCESS
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(_c: abi::ConfigEnvoy) -> SchedulerPtr {
    0x3000 as SchedulerPtr
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(_s: SchedulerPtr, _event: u64) {
    fake(|f| f.rls.commits += 1);
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(_s: SchedulerPtr) {}

// ---- helpers -------------------------------------------------------------------------------------

const CONFIG: abi::ConfigEnvoy = 0x2000 as abi::ConfigEnvoy;

/// The test configuration under a product of its own (usage mirrors are process-wide, by name).
fn rls_config(sub: &str, on_failure: &str) -> String {
    config(sub).replace("\"starter\"", "\"fleet\"").replacen(
        '{',
        &format!(
            r#"{{"limits_store": {{"rls": {{"cluster": "rls", "timeout_ms": 70, "on_failure": "{on_failure}", "breaker_failures": 2}}}}, "#
        ),
        1,
    )
}

/// The answer of an RLS: HTTP 200 and one framed message.
fn answer(resp: &Response) -> (Vec<u8>, Vec<u8>) {
    let msg = wire::encode_response(resp);
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(&msg);
    (b"200".to_vec(), frame)
}

fn ok(remaining: u32) -> Response {
    let st = |n| Status {
        code: CODE_OK,
        current_limit: Some(CurrentLimit { name: String::new(), requests_per_unit: n, unit: UNIT_MINUTE }),
        limit_remaining: remaining,
        reset_ms: Some(30_000),
    };
    Response { overall_code: CODE_OK, statuses: vec![st(2), st(0)] }
}

/// The callout's answer hook: `result` 0 with `(status, body)`, or a failed callout.
fn done(st: *const c_void, id: u64, result: u32, answer: Option<(Vec<u8>, Vec<u8>)>) {
    let (status, body) = answer.unwrap_or_default();
    let key = b":status".to_vec();
    let mut hs = [Header::of(&key, &status)];
    let mut chunks = [Buffer::of(&body)];
    let (h, n) = if result == 0 { (hs.as_mut_ptr(), 1) } else { (std::ptr::null_mut(), 0) };
    let (c, m) = if result == 0 { (chunks.as_mut_ptr(), 1) } else { (std::ptr::null_mut(), 0) };
    unsafe { envoy_dynamic_module_on_http_filter_http_callout_done(FILTER, st, id, result, h, n, c, m) };
}

fn last_callout() -> (u64, String, Pairs, Vec<u8>, u64) {
    fake(|f| f.rls.callouts.last().cloned()).expect("a callout")
}

fn finish(st: *const c_void) {
    unsafe { envoy_dynamic_module_on_http_filter_stream_complete(FILTER, st) };
    unsafe { envoy_dynamic_module_on_http_filter_destroy(st) };
}

// ---- tests -------------------------------------------------------------------------------------

#[test]
fn a_check_is_a_grpc_callout_and_the_request_waits_for_its_answer() {
    let cfg = config_new("mlgate", &rls_config("rls-ok", "deny"));
    assert!(!cfg.is_null(), "{:?}", fake(|f| f.logs.clone()));
    let (st, status) = run_request(&rrs("rls-ok-key"), cfg);
    assert_eq!(status, abi::STOP_ITERATION, "held for the answer");
    let (id, cluster, headers, body, timeout) = last_callout();
    assert_eq!((cluster.as_str(), timeout), ("rls", 70));
    for (k, v) in [
        (":method", "POST"),
        (":path", "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"),
        (":authority", "rls"),
        ("content-type", "application/grpc"),
    ] {
        assert!(headers.contains(&(k.as_bytes().to_vec(), v.as_bytes().to_vec())), "{k}");
    }
    let (domain, descriptors, _) = wire::decode_request(body.get(5..).unwrap()).unwrap();
    assert_eq!(body.get(1..5).unwrap(), &((body.len() - 5) as u32).to_be_bytes());
    assert_eq!(domain, "mlgate");
    assert_eq!(descriptors.len(), 2, "the product's rate limit and quota");
    assert_eq!(header("authorization"), ["Basic client"], "nothing rewritten while waiting");
    // The body is held, unjudged and uncounted, while the request waits.
    fake(|f| f.bodies[RECEIVED_REQUEST_BODY as usize] = vec![b"{}".to_vec()]);
    assert_eq!(unsafe { envoy_dynamic_module_on_http_filter_request_body(FILTER, st, true) }, STOP_ITERATION_AND_BUFFER);
    fake(|f| f.bodies[BUFFERED_REQUEST_BODY as usize] = vec![std::mem::take(&mut f.bodies[RECEIVED_REQUEST_BODY as usize]).concat()]);
    assert_eq!(unsafe { envoy_dynamic_module_on_http_filter_request_trailers(FILTER, st) }, abi::STOP_ITERATION);
    // A stale id is not this request's answer.
    done(st, id + 7, 0, Some(answer(&ok(1))));
    assert_eq!(fake(|f| f.rls.continued), 0);
    done(st, id, 0, Some(answer(&ok(1))));
    assert_eq!(fake(|f| f.rls.continued), 1, "resumed");
    assert!(fake(|f| f.reply.is_none()));
    assert_eq!(header("authorization"), ["Bearer aml-key"]);
    assert_eq!(metric("mlgate.rls_calls"), 1);
    assert_eq!(metric("mlgate.rls_failures"), 0);
    unsafe { envoy_dynamic_module_on_http_filter_response_headers(FILTER, st, false) };
    let remaining = fake(|f| f.response.iter().find(|(k, _)| k.eq_ignore_ascii_case(b"ratelimit-remaining")).map(|(_, v)| v.clone()));
    assert_eq!(remaining.as_deref(), Some(&b"1"[..]), "the store's count in the RateLimit headers");
    finish(st);
    unsafe { envoy_dynamic_module_on_http_filter_config_destroy(cfg) };
}

#[test]
fn over_limit_is_the_apim_429_and_nothing_goes_on() {
    let cfg = config_new("mlgate", &rls_config("rls-over", "allow"));
    let (st, _) = run_request(&rrs("rls-over-key"), cfg);
    let (id, ..) = last_callout();
    let over = Status { code: CODE_OVER_LIMIT, current_limit: None, limit_remaining: 0, reset_ms: Some(4_200) };
    done(st, id, 0, Some(answer(&Response { overall_code: CODE_OVER_LIMIT, statuses: vec![over] })));
    let (code, headers, body, _) = fake(|f| f.reply.clone()).unwrap();
    assert_eq!(code, 429);
    assert!(headers.contains(&(b"retry-after".to_vec(), b"5".to_vec())), "{headers:?}");
    assert!(String::from_utf8(body).unwrap().contains("Rate limit is exceeded. Try again in 5 seconds."));
    assert_eq!(fake(|f| f.rls.continued), 0);
    assert_eq!(metric("mlgate.rate_limited"), 1);
    finish(st);
    unsafe { envoy_dynamic_module_on_http_filter_config_destroy(cfg) };
}

#[test]
fn failures_follow_on_failure_and_open_the_breaker() {
    let cfg = config_new("mlgate", &rls_config("rls-down", "deny"));
    // A reset, then an answer that is not gRPC (Envoy's own 504 for a timeout): both failures.
    let answers = [(1, None), (0, Some((b"504".to_vec(), b"upstream request timeout".to_vec())))];
    for (result, a) in answers {
        let (st, status) = run_request(&rrs("rls-down-key"), cfg);
        assert_eq!(status, abi::STOP_ITERATION);
        let (id, ..) = last_callout();
        done(st, id, result, a);
        let (code, _, body, _) = fake(|f| f.reply.clone()).unwrap();
        assert_eq!(code, 503);
        assert!(String::from_utf8(body).unwrap().contains("rate limit state could not be updated"));
        assert_eq!(fake(|f| f.rls.continued), 0);
        finish(st);
    }
    assert_eq!(metric("mlgate.rls_failures"), 2);
    assert_eq!(metric("mlgate.rls_breaker_open"), 1, "two failures in a row open it");
    // Open: the store is not asked, the request is answered at once.
    let (st, status) = run_request(&rrs("rls-down-key"), cfg);
    assert_eq!(status, abi::STOP_ITERATION);
    assert!(fake(|f| f.rls.callouts.is_empty()));
    assert_eq!(fake(|f| f.reply.as_ref().map(|r| r.0)), Some(503));
    assert_eq!(metric("mlgate.rls_breaker_skipped"), 1);
    finish(st);
    unsafe { envoy_dynamic_module_on_http_filter_config_destroy(cfg) };
}

#[test]
fn a_callout_envoy_refuses_is_a_failure_decided_at_once() {
    let cfg = config_new("mlgate", &rls_config("rls-refused", "allow"));
    let hs: Vec<(&str, String)> = rrs("rls-refused-key");
    let hs: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    request(&hs);
    fake(|f| f.rls.init_result = 2);
    let st = unsafe { envoy_dynamic_module_on_http_filter_new(cfg, FILTER) };
    let status = unsafe { envoy_dynamic_module_on_http_filter_request_headers(FILTER, st, false) };
    assert_eq!(status, abi::CONTINUE, "on_failure: allow forwards it, uncounted");
    assert_eq!(header("authorization"), ["Bearer aml-key"]);
    assert_eq!(metric("mlgate.rls_failures"), 1);
    assert_eq!(fake(|f| f.rls.continued), 0, "never stopped");
    // An answer Envoy hands over inside the refused call is not taken.
    done(st, 1, 0, Some(answer(&ok(0))));
    assert_eq!(fake(|f| f.rls.continued), 0);
    finish(st);
    unsafe { envoy_dynamic_module_on_http_filter_config_destroy(cfg) };
}

#[test]
fn a_report_goes_through_the_configuration_on_the_main_thread() {
    let cfg = config_new("mlgate", &rls_config("rls-bw", "deny"));
    let (st, _) = run_request(&rrs("rls-bw-key"), cfg);
    let (id, ..) = last_callout();
    done(st, id, 0, Some(answer(&ok(1))));
    fake(|f| f.body_size = 300);
    unsafe { envoy_dynamic_module_on_http_filter_response_body(FILTER, st, true) };
    finish(st);
    assert_eq!(fake(|f| f.rls.commits), 1, "queued for the main thread");
    assert!(fake(|f| f.rls.config_callouts.is_empty()), "nothing sent from the worker");
    unsafe { envoy_dynamic_module_on_http_filter_config_scheduled(CONFIG, cfg, 0) };
    let (rid, cluster, _, body, _) = fake(|f| f.rls.config_callouts.last().cloned()).unwrap();
    assert_eq!(cluster, "rls");
    let (_, descriptors, _) = wire::decode_request(body.get(5..).unwrap()).unwrap();
    let d = descriptors.first().unwrap();
    assert_eq!(d.entries.first().map(|(k, v)| (k.as_str(), v.as_str())), Some(("limit", "b:fleet")));
    assert_eq!(d.hits_addend, Some(300));
    assert_eq!(metric("mlgate.rls_calls"), 2);
    // Its answer is read on the main thread: a failure is counted there.
    let mut chunks = [Buffer::of(b"")];
    unsafe {
        envoy_dynamic_module_on_http_filter_config_http_callout_done(CONFIG, cfg, rid, 1, std::ptr::null_mut(), 0, chunks.as_mut_ptr(), 0)
    };
    assert_eq!(metric("mlgate.rls_failures"), 1);
    // A second answer for the same id, or one for no report, changes nothing.
    unsafe {
        envoy_dynamic_module_on_http_filter_config_http_callout_done(CONFIG, cfg, rid, 1, std::ptr::null_mut(), 0, std::ptr::null_mut(), 0)
    };
    assert_eq!(metric("mlgate.rls_failures"), 1);
    unsafe { envoy_dynamic_module_on_http_filter_config_destroy(cfg) };
}
