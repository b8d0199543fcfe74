//! Token limits through the remote store's protocol: the reservation in the check, the charge
//! in the answer, the settle as a request of its own, all through the same code as the filter
//! and mlgate-rls (the service over the in-memory store here; mlgate-rls's tests run Redis).

// Test code: panics and indexing are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use mlgate_core::admit::tokens::{settle, Metered};
use mlgate_core::admit::{admit, admit_with, Admission, Event, Events, Outcome, Request};
use mlgate_core::model::Gateway;
use mlgate_core::reply::Reply;
use mlgate_core::testkit::{gateway, headers, view, Conn, MemStore};
use mlgate_core::tokens::TokenUsage;
use mlgate_core::{LimitsStore, RlsSettings};
use mlgate_remote::breaker::Breaker;
use mlgate_remote::client::{Answered, Ask};
use mlgate_remote::tokens::settle_request;
use mlgate_remote::wire::{self, Descriptor, Response, CODE_OK};
use mlgate_remote::{Resolver, ServeError};
use serde_json::{json, Value};

const T0: u64 = 1_700_000_000_000;
const PATH: &str = "/llm/chat/completions";

fn llm(product_limit: Value, api_limit: Option<Value>, on_failure: &str) -> Value {
    let mut api = json!({"id": "llm", "name": "LLM", "path": "llm", "service_url": "http://127.0.0.1:1/v1",
                         "operations": "openai", "backend_credentials": [{"workspace": "*", "service": "*", "api_key": "sk-1"}]});
    if let Some(l) = api_limit {
        api["token_limit"] = l;
    }
    json!({
        "apis": [api],
        "products": [{"id": "tok", "name": "Tok", "apis": ["llm"], "token_limit": product_limit,
                      "rate_limit": {"calls": 1000, "renewal_period": 60}}],
        "subscriptions": [{"id": "alice", "product": "tok", "state": "active", "primary_key": "k1"}],
        "limits_store": {"rls": {"cluster": "rls", "domain": "mlgate", "timeout_ms": 50, "on_failure": on_failure}}
    })
}

fn local_of(mut c: Value) -> Gateway {
    c.as_object_mut().unwrap().remove("limits_store");
    gateway(&c)
}

fn rls_of(gw: &Gateway) -> RlsSettings {
    match &gw.settings.limits_store {
        LimitsStore::Rls(r) => r.clone(),
        LimitsStore::SharedData => panic!("not an rls config"),
    }
}

fn body(max_tokens: u64) -> Vec<u8> {
    format!(r#"{{"model":"m","messages":[{{"role":"user","content":"hello there"}}],"max_tokens":{max_tokens}}}"#).into_bytes()
}

/// One call reduced to what the client sees and what the host keeps to settle.
#[derive(Debug, PartialEq)]
struct Call {
    status: u16,
    reply: Option<Reply>,
    headers: Vec<(String, String)>,
    metered: Option<Metered>,
    events: Events,
}

fn call_of(gw: &Gateway, a: Admission<'_, '_>) -> Call {
    match a.outcome {
        Outcome::Reply(r) => Call { status: r.status, reply: Some(r), headers: vec![], metered: None, events: a.events },
        Outcome::Forward(f) => {
            let metered = f.tokens.as_ref().map(|t| t.metered);
            Call { status: 200, reply: None, headers: f.response_headers(gw), metered, events: a.events }
        }
        _ => panic!("neither a reply nor a forward"),
    }
}

fn with_req<T>(b: &[u8], f: impl FnOnce(&Request<'_>) -> T) -> T {
    let h =
        headers(&[(":method", "POST"), (":path", PATH), (":scheme", "http"), (":authority", "gw"), ("ocp-apim-subscription-key", "k1")]);
    let v = view(&h);
    let mut req = Request::from_headers(&v);
    req.body = Some(b);
    f(&req)
}

fn local_call(gw: &Gateway, store: &mut MemStore, now: u64, b: &[u8]) -> Call {
    with_req(b, |req| call_of(gw, admit(gw, req, now, &mut Conn::default(), store)))
}

/// The service's answer to `request` (as mlgate-rls decides it), encoded.
fn serve(gw: &Gateway, store: &mut MemStore, now: u64, request: &[u8]) -> Result<Response, ServeError> {
    let (domain, d, hits) = wire::decode_request(request).unwrap();
    Resolver::new(gw).decide(&domain, &d, hits, store, now)
}

/// One call the way the Wasm host runs it under `limits_store: rls`: the first pass yields
/// the request, the service answers, the second pass applies the answer.
fn remote_call(gw: &Gateway, store: &mut MemStore, now: u64, b: &[u8]) -> (Call, Vec<u8>) {
    let settings = rls_of(gw);
    with_req(b, |req| {
        let (mut breaker, mut local) = (Breaker::default(), MemStore::default());
        let mut ask = Ask::new(&settings, &mut breaker, &mut local);
        assert!(admit_with(gw, req, now, &mut Conn::default(), &mut ask).is_none(), "asks the store");
        let request = ask.request.take().unwrap();
        let answer = wire::encode_response(&serve(gw, store, now, &request).unwrap());
        let mut answered = Answered::new(&settings, Ok(&answer), &mut local);
        let a = admit_with(gw, req, now, &mut Conn::default(), &mut answered).unwrap();
        assert!(!answered.failed);
        (call_of(gw, a), request)
    })
}

fn usage(total: u64) -> Option<TokenUsage> {
    Some(TokenUsage { prompt: 3, completion: total - 3, total })
}

/// The settle the Wasm host sends from `proxy_on_log`, decided by the service.
fn remote_settle(gw: &Gateway, store: &mut MemStore, now: u64, m: &Metered, actual: u64) -> Option<Response> {
    let request = settle_request(&rls_of(gw), gw, m, actual)?;
    Some(serve(gw, store, now, &request).unwrap())
}

#[test]
fn reservations_and_settles_through_the_protocol_answer_like_local_mode() {
    let product = json!({"tokens_per_minute": 1000, "token_quota": 5000, "token_quota_period": "Daily",
                         "default_max_completion_tokens": 50,
                         "remaining_tokens_header": "x-left", "remaining_quota_tokens_header": "x-quota-left"});
    let api = json!({"tokens_per_minute": 800, "default_max_completion_tokens": 50, "remaining_tokens_header": "x-api-left",
                     "retry_after_header": "x-api-retry"});
    let c = llm(product, Some(api), "deny");
    let (lgw, rgw) = (local_of(c.clone()), gateway(&c));
    let (mut local, mut remote) = (MemStore::default(), MemStore::default());
    let mut statuses = vec![];
    for i in 0..14u64 {
        let now = T0 + i * 700;
        let b = body(40 + i * 10);
        let l = local_call(&lgw, &mut local, now, &b);
        let (r, request) = remote_call(&rgw, &mut remote, now, &b);
        // (Shared data also counts the keys it creates.)
        assert_eq!(Call { events: Events::default(), ..r }, Call { events: Events::default(), ..l }, "call {i}");
        for e in [Event::TokenRateLimited, Event::TokenQuota, Event::RateLimited] {
            assert_eq!(r.events.get(e), l.events.get(e), "call {i}: {e:?}");
        }
        statuses.push(l.status);
        if i == 0 {
            // Call limit, then the product's and the API's token limits, each reserving the bound.
            let (_, d, _) = wire::decode_request(&request).unwrap();
            let cost = l.metered.unwrap().charge.unwrap().reserved;
            let e = |k: &str, v: &str| (k.to_string(), v.to_string());
            assert_eq!(d.len(), 3);
            assert_eq!((d[1].entries.clone(), d[1].hits_addend), (vec![e("limit", "tp:tok"), e("subscription", "alice")], Some(cost)));
            assert_eq!((d[2].entries.clone(), d[2].hits_addend), (vec![e("limit", "ta:llm"), e("subscription", "alice")], Some(cost)));
        }
        // Every other call settles to a usage below its bound, one above it (as a backend may).
        if let Some(m) = l.metered.filter(|m| m.charge.is_some()) {
            let reserved = m.charge.unwrap().reserved;
            let actual = if i % 3 == 2 { reserved + 7 } else { reserved / 2 };
            settle(&lgw, &m, usage(actual), now + 300, &mut local);
            assert_eq!(remote_settle(&rgw, &mut remote, now + 300, &m, actual).unwrap().overall_code, CODE_OK);
        }
    }
    assert!(statuses.contains(&200) && statuses.contains(&429), "{statuses:?}");
    // The records are byte for byte the same: the service settled exactly as shared data did.
    let (l, r) = (local.inner.borrow(), remote.inner.borrow());
    for (k, (v, _)) in &l.map {
        assert_eq!(r.map.get(k).map(|e| &e.0), Some(v), "{k}");
    }
}

#[test]
fn token_denials_map_back_to_429_and_403_with_the_limits_retry_header() {
    let c = llm(
        json!({"tokens_per_minute": 300, "default_max_completion_tokens": 50}),
        Some(json!({"token_quota": 400, "token_quota_period": "Hourly", "default_max_completion_tokens": 50,
                            "retry_after_header": "x-api-retry"})),
        "deny",
    );
    let gw = gateway(&c);
    let mut store = MemStore::default();
    let b = body(150);
    let first = remote_call(&gw, &mut store, T0, &b).0;
    assert_eq!(first.status, 200);
    // The product's tokens per minute is full: 429, Retry-After.
    let r = remote_call(&gw, &mut store, T0 + 1000, &b).0;
    assert_eq!(r.status, 429, "{r:?}");
    let reply = r.reply.unwrap();
    assert!(reply.body.contains("Token limit is exceeded. Try again in 60 seconds."), "{}", reply.body);
    assert_eq!(reply.headers, vec![("retry-after".to_string(), "60".to_string())]);
    assert_eq!(r.events.get(Event::TokenRateLimited), 1);
    // A minute later the window is free but the API's hourly quota is not: 403 with its own
    // retry header.
    let r = remote_call(&gw, &mut store, T0 + 62_000, &b).0;
    assert_eq!(r.status, 403, "{r:?}");
    let reply = r.reply.unwrap();
    assert!(reply.body.contains("Token quota is exceeded. Try again in "), "{}", reply.body);
    assert_eq!(reply.headers[0].0, "x-api-retry");
    assert_eq!(r.events.get(Event::TokenQuota), 1);
    // Settled to its usage, the first call leaves room for the next.
    let m = first.metered.unwrap();
    remote_settle(&gw, &mut store, T0 + 62_001, &m, 20).unwrap();
    assert_eq!(remote_call(&gw, &mut store, T0 + 62_002, &b).0.status, 200);
}

#[test]
fn racing_reservations_through_the_service_never_exceed_the_limit() {
    // 20 calls reserve before any settles (as concurrent calls through several Envoys do); the
    // admitted bounds fit the limit, so their actual tokens do; settling frees what was unused.
    let limit = 1000;
    let gw = gateway(&llm(json!({"tokens_per_minute": limit, "default_max_completion_tokens": 50}), None, "deny"));
    let mut store = MemStore::default();
    let b = body(100);
    let calls: Vec<Call> = (0..20).map(|i| remote_call(&gw, &mut store, T0 + i, &b).0).collect();
    let admitted: Vec<Metered> = calls.iter().filter_map(|c| c.metered).collect();
    let cost = admitted[0].charge.unwrap().reserved;
    assert_eq!(admitted.len() as u64, limit / cost);
    assert!(calls.iter().all(|c| c.status == 200 || c.status == 429));
    for m in &admitted {
        assert_eq!(remote_settle(&gw, &mut store, T0 + 50, m, cost / 4).unwrap().overall_code, CODE_OK);
    }
    let more = (0..20).filter(|i| remote_call(&gw, &mut store, T0 + 100 + i, &b).0.status == 200).count() as u64;
    let used = admitted.len() as u64 * (cost / 4);
    assert_eq!(more, (limit - used) / cost, "exactly what the settled tokens left");
}

#[test]
fn nothing_to_settle_sends_nothing_and_a_charge_is_required_of_the_answer() {
    let c = llm(json!({"tokens_per_minute": 1000, "default_max_completion_tokens": 50}), None, "deny");
    let gw = gateway(&c);
    let mut store = MemStore::default();
    let b = body(10);
    let m = remote_call(&gw, &mut store, T0, &b).0.metered.unwrap();
    let reserved = m.charge.unwrap().reserved;
    assert!(settle_request(&rls_of(&gw), &gw, &m, reserved).is_none(), "usage = reservation: nothing to send");
    assert!(settle_request(&rls_of(&gw), &gw, &Metered { charge: None, ..m }, 3).is_none());
    // An answer that admits without the charge (another RLS that ignores token descriptors)
    // is no answer: on_failure applies (deny: 503).
    let settings = rls_of(&gw);
    let plain =
        wire::encode_response(&Response { overall_code: CODE_OK, statuses: vec![wire::Status { code: CODE_OK, ..Default::default() }; 2] });
    let got = with_req(&b, |req| {
        let mut local = MemStore::default();
        let mut answered = Answered::new(&settings, Ok(&plain), &mut local);
        let a = admit_with(&gw, req, T0, &mut Conn::default(), &mut answered).unwrap();
        assert!(answered.failed);
        call_of(&gw, a)
    });
    assert_eq!(got.status, 503);
}

#[test]
fn local_fallback_reserves_in_shared_data() {
    let gw = gateway(&llm(json!({"tokens_per_minute": 1000, "default_max_completion_tokens": 50}), None, "local"));
    let settings = rls_of(&gw);
    let mut local = MemStore::default();
    let got = with_req(&body(10), |req| {
        let mut answered = Answered::new(&settings, Err(()), &mut local);
        let a = admit_with(&gw, req, T0, &mut Conn::default(), &mut answered).unwrap();
        assert!(answered.fell_back_local);
        call_of(&gw, a)
    });
    // Reserved in shared data (the Wasm host remembers the stream and settles it there).
    assert!(got.metered.unwrap().charge.is_some());
    assert!(local.inner.borrow().map.contains_key("mlgate/s/alice"));
}

#[test]
fn the_service_refuses_settles_it_cannot_apply() {
    let gw = gateway(&llm(json!({"tokens_per_minute": 1000, "default_max_completion_tokens": 50}), None, "deny"));
    let r = Resolver::new(&gw);
    let mut s = MemStore::default();
    let d = |entries: &[(&str, &str)], hits: Option<u64>| Descriptor {
        entries: entries.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        hits_addend: hits,
    };
    let bad = |res: Result<Response, ServeError>| matches!(res, Err(ServeError::BadRequest(_)));
    let ok = d(&[("limit", "tp:tok"), ("subscription", "alice"), ("settle", "1700000000000:0:100")], Some(40));
    for wrong in [
        d(&[("limit", "tp:gold"), ("subscription", "alice"), ("settle", "1:0:100")], Some(40)),
        d(&[("limit", "tp:tok"), ("subscription", "mallory"), ("settle", "1:0:100")], Some(40)),
        d(&[("limit", "tp:tok"), ("subscription", "alice"), ("settle", "1:0")], Some(40)),
        d(&[("limit", "tp:tok"), ("subscription", "alice"), ("settle", "1:0:100:5")], Some(40)),
        d(&[("limit", "tp:tok"), ("subscription", "alice"), ("settle", "x:0:100")], Some(40)),
        d(&[("limit", "p:tok"), ("subscription", "alice"), ("settle", "1:0:100")], Some(40)),
    ] {
        assert!(bad(r.decide("mlgate", std::slice::from_ref(&wrong), 0, &mut s, T0)), "{wrong:?}");
    }
    assert!(bad(r.decide("mlgate", &[ok.clone(), ok.clone()], 0, &mut s, T0)), "one limit twice");
    // Token descriptors of a check: one amount per call, each limit once.
    let t = |n: u64| d(&[("limit", "tp:tok"), ("subscription", "alice")], Some(n));
    assert!(bad(r.decide("mlgate", &[t(5), t(5)], 0, &mut s, T0)));
    assert_eq!(s.keys(), 0, "nothing was counted");
    assert_eq!(r.decide("mlgate", std::slice::from_ref(&ok), 0, &mut s, T0).unwrap().overall_code, CODE_OK);
    s.inner.borrow_mut().fail_sets = true;
    assert_eq!(r.decide("mlgate", &[t(5)], 0, &mut s, T0), Err(ServeError::Store));
    s.inner.borrow_mut().fail_sets = false;
    assert_eq!(r.decide("mlgate", &[t(5)], 0, &mut s, T0).unwrap().overall_code, CODE_OK);
    s.inner.borrow_mut().fail_sets = true;
    assert_eq!(r.decide("mlgate", &[ok], 0, &mut s, T0 + 1), Err(ServeError::Store));
}
