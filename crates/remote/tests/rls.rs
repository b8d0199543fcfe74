//! The remote store's core: config, wire format, descriptors, the answer as a verdict (the
//! same APIM replies as local mode), failure modes and the breaker. The service side runs
//! over the in-memory store here; mlgate-rls's tests run it over a real Redis.

// Test code: panics and indexing are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use mlgate_core::admit::{admit_with, Admission, Event, Outcome, Request};
use mlgate_core::model::Gateway;
use mlgate_core::testkit::{demo, gateway, headers, run_full, view, Conn, Env, Got, MemStore};
use mlgate_core::{LimitsStore, OnFailure, RlsSettings};
use mlgate_remote::breaker::{Breaker, Gate};
use mlgate_remote::client::{self, Answered, Ask};
use mlgate_remote::wire::{self, CurrentLimit, Descriptor, Response, Status, CODE_OK, CODE_OVER_LIMIT};
use mlgate_remote::{Resolver, ServeError};
use serde_json::{json, Value};

const RRS: &str = "/azureml-demo/workspaces/w/services/s/execute?api-version=2.0&details=true";
const T0: u64 = 1_700_000_000_000;

fn remote(mut c: Value, on_failure: &str) -> Value {
    c["limits_store"] = json!({"rls": {"cluster": "rls", "domain": "mlgate", "timeout_ms": 50, "on_failure": on_failure}});
    c
}

fn rls_of(gw: &Gateway) -> RlsSettings {
    match &gw.settings.limits_store {
        LimitsStore::Rls(r) => r.clone(),
        LimitsStore::SharedData => panic!("not an rls config"),
    }
}

fn req_headers(key: &str, ip_header: Option<&str>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut p = vec![(":method", "POST"), (":path", RRS), (":scheme", "http"), (":authority", "gw"), ("ocp-apim-subscription-key", key)];
    if let Some(v) = ip_header {
        p.push(("x-client", v));
    }
    headers(&p)
}

fn got(gw: &Gateway, a: Admission<'_, '_>) -> Got {
    match a.outcome {
        Outcome::Reply(r) => Got { status: r.status, reply: Some(r), response_headers: vec![], count_bandwidth: false, events: a.events },
        Outcome::PassThrough { .. } => Got { status: 0, reply: None, response_headers: vec![], count_bandwidth: false, events: a.events },
        Outcome::ReadBody(_) => panic!("no operation here carries tokens"),
        Outcome::Forward(f) => Got {
            status: 200,
            reply: None,
            response_headers: f.response_headers(gw),
            count_bandwidth: f.grant.count_bandwidth,
            events: a.events,
        },
    }
}

/// One request the way the filter runs it in remote mode: the first pass yields the request
/// bytes, the "service" (a Resolver over `remote_store`) answers, the second pass applies it.
fn remote_call(gw: &Gateway, remote_store: &mut MemStore, now: u64, h: &[(Vec<u8>, Vec<u8>)]) -> (Got, Vec<u8>) {
    let settings = rls_of(gw);
    let v = view(h);
    let req = Request::from_headers(&v);
    let mut breaker = Breaker::default();
    let mut local = MemStore::default();
    let mut ask = Ask::new(&settings, &mut breaker, &mut local);
    let mut conn = Conn::default();
    if let Some(a) = admit_with(gw, &req, now, &mut conn, &mut ask) {
        return (got(gw, a), Vec::new());
    }
    let request = ask.request.take().expect("a pending request");
    let (domain, descriptors, hits) = wire::decode_request(&request).expect("decodes");
    let resp = Resolver::new(gw).decide(&domain, &descriptors, hits, remote_store, now).expect("decided");
    let bytes = wire::encode_response(&resp);
    let mut answered = Answered::new(&settings, Ok(&bytes), &mut local);
    let a = admit_with(gw, &req, now, &mut conn, &mut answered).expect("decided now");
    (got(gw, a), request)
}

#[test]
fn limits_store_config_names_and_refusals() {
    let gw = gateway(&demo());
    assert_eq!(gw.settings.limits_store, LimitsStore::SharedData);
    let mut c = demo();
    c["limits_store"] = json!("shared_data");
    assert_eq!(gateway(&c).settings.limits_store, LimitsStore::SharedData);
    c["limits_store"] = json!({"rls": {"cluster": "rls"}});
    let r = rls_of(&gateway(&c));
    assert_eq!((r.domain.as_str(), r.timeout_ms, r.on_failure), ("mlgate", 50, OnFailure::Deny));
    for (v, field) in [
        (json!("redis"), "limits_store"),
        (json!({"rls": {"cluster": "rls", "on_failure": "maybe"}}), "limits_store.rls.on_failure"),
        (json!({"rls": {"cluster": "rls", "timeout_ms": 0}}), "limits_store.rls.timeout_ms"),
        (json!({"rls": {"cluster": ""}}), "limits_store.rls.cluster"),
        (json!({"rls": {"cluster": "a b"}}), "limits_store.rls.cluster"),
        (json!({"rls": {"cluster": "rls", "breaker_failures": 0}}), "limits_store.rls.breaker_failures"),
        (json!({"rls": {"cluster": "rls", "extra": 1}}), "limits_store.rls"),
        (json!({"redis": {}}), "limits_store"),
    ] {
        c["limits_store"] = v.clone();
        let e =
            mlgate_core::model::Gateway::from_json(c.to_string().as_bytes(), &Env(vec![])).err().unwrap_or_else(|| panic!("{v} accepted"));
        assert!(e.field.starts_with(field), "{v}: {e}");
    }
    for (name, want) in [("deny", OnFailure::Deny), ("allow", OnFailure::Allow), ("local", OnFailure::Local)] {
        c["limits_store"] = json!({"rls": {"cluster": "rls", "domain": "d", "timeout_ms": 7, "on_failure": name}});
        let r = rls_of(&gateway(&c));
        assert_eq!((r.cluster.as_str(), r.domain.as_str(), r.timeout_ms, r.on_failure), ("rls", "d", 7, want));
    }
}

#[test]
fn request_encoding_is_the_protobuf_of_the_descriptors() {
    let d = vec![Descriptor { entries: vec![("limit".into(), "p:x".into()), ("subscription".into(), "a".into())], hits_addend: None }];
    let b = wire::encode_request("ml", &d, 0);
    // 0a 02 "ml" | 12 len { 0a len { 0a 05 "limit" 12 03 "p:x" } 0a len { 0a 0c "subscription" 12 01 "a" } }
    let mut want = vec![0x0a, 2, b'm', b'l', 0x12, 33, 0x0a, 12, 0x0a, 5];
    want.extend(b"limit");
    want.extend([0x12, 3]);
    want.extend(b"p:x");
    want.extend([0x0a, 17, 0x0a, 12]);
    want.extend(b"subscription");
    want.extend([0x12, 1, b'a']);
    assert_eq!(b, want);
    let (domain, back, hits) = wire::decode_request(&b).unwrap();
    assert_eq!((domain.as_str(), back, hits), ("ml", d, 0));
    let with_hits = vec![Descriptor { entries: vec![("limit".into(), "b:x".into())], hits_addend: Some(300) }];
    assert_eq!(wire::decode_request(&wire::encode_request("ml", &with_hits, 0)).unwrap().1, with_hits);
    // The service the filter names: GrpcService { envoy_grpc { cluster_name } }.
    assert_eq!(wire::grpc_service("rls"), vec![0x0a, 5, 0x0a, 3, b'r', b'l', b's']);
}

#[test]
fn response_decoding_round_trips_and_refuses_garbage_without_panicking() {
    let resp = Response {
        overall_code: CODE_OVER_LIMIT,
        statuses: vec![
            Status { code: CODE_OK, ..Status::default() },
            Status {
                code: CODE_OVER_LIMIT,
                current_limit: Some(CurrentLimit { name: "quota_bandwidth".into(), requests_per_unit: 5, unit: 2 }),
                limit_remaining: 0,
                reset_ms: Some(42_500),
            },
        ],
    };
    let b = wire::encode_response(&resp);
    assert_eq!(wire::decode_response(&b), Ok(resp));
    assert_eq!(wire::decode_response(&[]), Ok(Response::default()));
    for bad in [&[0x08][..], &[0x12, 5, 1], &[0x0b], &[0xff; 11], &[0x12, 0x02, 0x08], &[0x00, 0x01]] {
        assert!(wire::decode_response(bad).is_err(), "{bad:?}");
    }
    // Every prefix and a spread of single-byte corruptions: an answer or an error.
    for i in 0..b.len() {
        let _ = wire::decode_response(&b[..i]);
        for x in [0u8, 1, 0x7f, 0x80, 0xff] {
            let mut c = b.clone();
            c[i] = x;
            let _ = wire::decode_response(&c);
        }
    }
}

#[test]
fn descriptors_follow_the_limits_in_order_with_escaped_counter_values() {
    let mut c = remote(demo(), "deny");
    c["apis"][0]["rate_limit"] = json!({"calls": 3, "renewal_period": 1, "counter": "header:x-client"});
    let gw = gateway(&c);
    let mut store = MemStore::default();
    let (g, request) = remote_call(&gw, &mut store, T0, &req_headers("alice-1", Some("a b%\u{e9}")));
    assert_eq!(g.status, 200, "{g:?}");
    let (domain, d, _) = wire::decode_request(&request).unwrap();
    assert_eq!(domain, "mlgate");
    let e = |k: &str, v: &str| (k.to_string(), v.to_string());
    assert_eq!(d.len(), 3);
    assert_eq!(d[0].entries, vec![e("limit", "p:starter"), e("subscription", "alice")]);
    assert_eq!(d[1].entries, vec![e("limit", "a:azureml-demo"), e("counter", "a%20b%25%C3%A9")]);
    assert_eq!(d[2].entries, vec![e("limit", "q:starter"), e("subscription", "alice")]);
    assert_eq!(client::counter_value(b"\x00\xff%"), "%00%FF%25");
}

/// The counter encoding operators' own RLS configurations match on, byte by byte: every byte
/// from 0x00 to 0xff, as mlgate sends it. A change here breaks deployed descriptors.
#[test]
fn counter_values_are_encoded_exactly_as_documented() {
    let all: Vec<u8> = (0..=255u8).collect();
    let mut golden = String::new();
    for b in 0..=255u8 {
        if b > b' ' && b < 0x7f && b != b'%' {
            golden.push(char::from(b));
        } else {
            golden.push_str(&format!("%{b:02X}"));
        }
    }
    assert_eq!(client::counter_value(&all), golden);
    assert_eq!(client::counter_value(b" !\"#$%&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~\x7f"), "%20!\"#$%25&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~%7F");
    assert_eq!(client::counter_value("10.0.0.1".as_bytes()), "10.0.0.1");
    assert_eq!(client::counter_value("2001:db8::1".as_bytes()), "2001:db8::1");
    assert_eq!(client::counter_value("é\t".as_bytes()), "%C3%A9%09");
}

#[test]
fn remote_decisions_are_exact_and_answer_like_local_mode() {
    // The same requests, at the same clock, through local mode and through the RLS round trip.
    let local_gw = gateway(&demo());
    let remote_gw = gateway(&remote(demo(), "deny"));
    let (mut local, mut redis_like) = (MemStore::default(), MemStore::default());
    for i in 0..8u64 {
        let now = T0 + i * 100;
        let h = req_headers("alice-1", None);
        let mut conn = Conn::default();
        let l = run_full(&local_gw, &mut local, now, &h, &mut conn);
        let (r, _) = remote_call(&remote_gw, &mut redis_like, now, &h);
        assert_eq!(l.status, if i < 5 { 200 } else { 429 });
        assert_eq!(r.status, l.status, "request {i}");
        assert_eq!(r.reply, l.reply, "request {i}: same APIM body and Retry-After");
        assert_eq!(r.response_headers, l.response_headers, "request {i}: same RateLimit-* headers");
        assert_eq!(r.events.get(Event::RateLimited), l.events.get(Event::RateLimited));
    }
}

#[test]
fn quota_denials_map_back_to_calls_and_bandwidth() {
    let mut c = remote(demo(), "deny");
    c["products"][0] = json!({"id": "starter", "name": "Starter", "apis": ["azureml-demo"],
                              "quota": {"calls": 2, "bandwidth_kb": 1, "renewal_period": 3600}});
    let gw = gateway(&c);
    let mut store = MemStore::default();
    let h = req_headers("alice-1", None);
    assert_eq!(remote_call(&gw, &mut store, T0, &h).0.status, 200);
    // A bandwidth report over the same protocol (what the host sends after the response).
    let settings = rls_of(&gw);
    let report = client::bandwidth_request(&settings, "alice", "starter", 2048);
    let (domain, d, hits) = wire::decode_request(&report).unwrap();
    let resp = Resolver::new(&gw).decide(&domain, &d, hits, &mut store, T0 + 1).unwrap();
    assert_eq!(resp.overall_code, CODE_OK);
    let g = remote_call(&gw, &mut store, T0 + 2, &h).0;
    assert_eq!(g.status, 403);
    assert!(g.reply.as_ref().unwrap().body.contains("Out of bandwidth quota"), "{g:?}");
    assert_eq!(g.events.get(Event::QuotaBandwidth), 1);

    let mut c2 = c.clone();
    c2["products"][0]["quota"] = json!({"calls": 2, "renewal_period": 3600});
    let gw2 = gateway(&c2);
    let mut s2 = MemStore::default();
    // On an hour boundary (periods run from the epoch without a `start`).
    let t = 1_699_999_200_000;
    for _ in 0..2 {
        assert_eq!(remote_call(&gw2, &mut s2, t, &h).0.status, 200);
    }
    let g = remote_call(&gw2, &mut s2, t, &h).0;
    let r = g.reply.unwrap();
    assert_eq!(
        (r.status, r.body.as_str()),
        (403, "{ \"statusCode\": 403, \"message\": \"Out of call volume quota. Quota will be replenished in 01:00:00.\" }")
    );
    assert_eq!(r.headers, vec![("retry-after".to_string(), "3600".to_string())]);
}

#[test]
fn service_refuses_what_its_configuration_does_not_know() {
    let gw = gateway(&remote(demo(), "deny"));
    let r = Resolver::new(&gw);
    let mut s = MemStore::default();
    let d = |entries: &[(&str, &str)]| Descriptor {
        entries: entries.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        hits_addend: None,
    };
    let bad = |res: Result<Response, ServeError>| matches!(res, Err(ServeError::BadRequest(_)));
    assert!(bad(r.decide("other", &[d(&[("limit", "p:starter"), ("subscription", "alice")])], 0, &mut s, T0)));
    assert!(bad(r.decide("mlgate", &[d(&[("limit", "p:gold"), ("subscription", "alice")])], 0, &mut s, T0)));
    assert!(bad(r.decide("mlgate", &[d(&[("limit", "p:starter"), ("subscription", "mallory")])], 0, &mut s, T0)));
    assert!(bad(r.decide("mlgate", &[d(&[("limit", "p:starter")])], 0, &mut s, T0)));
    assert!(bad(r.decide("mlgate", &[d(&[("limit", "p:starter"), ("subscription", "alice")])], 5, &mut s, T0)));
    assert!(bad(r.decide("mlgate", &[], 0, &mut s, T0)));
    assert_eq!(s.keys(), 0, "nothing was counted");
    s.inner.borrow_mut().fail_sets = true;
    assert_eq!(r.decide("mlgate", &[d(&[("limit", "p:starter"), ("subscription", "alice")])], 0, &mut s, T0), Err(ServeError::Store));
}

/// The second pass with a failed call, under each `on_failure`.
fn failed_call(on_failure: &str, local: &mut MemStore, answer: Result<&[u8], ()>) -> Got {
    let gw = gateway(&remote(demo(), on_failure));
    let settings = rls_of(&gw);
    let h = req_headers("alice-1", None);
    let v = view(&h);
    let req = Request::from_headers(&v);
    let mut answered = Answered::new(&settings, answer, local);
    let a = admit_with(&gw, &req, T0, &mut Conn::default(), &mut answered).unwrap();
    assert!(answered.failed);
    got(&gw, a)
}

#[test]
fn each_failure_mode_answers_as_configured() {
    for answer in [Err(()), Ok(&b"\xff\xff"[..]), Ok(&b""[..])] {
        let mut local = MemStore::default();
        let g = failed_call("deny", &mut local, answer);
        assert_eq!(g.status, 503, "{g:?}");
        assert_eq!(g.events.get(Event::StoreFailure), 1);
        let g = failed_call("allow", &mut local, answer);
        assert_eq!(g.status, 200);
        assert_eq!(g.events.get(Event::FailureModeAllowed), 1);
        assert_eq!(local.keys(), 0, "allow counts nowhere");
        // local: counted in shared data, exactly as local mode (5 per minute).
        let statuses: Vec<u16> = (0..7).map(|_| failed_call("local", &mut local, answer).status).collect();
        assert_eq!(statuses, vec![200, 200, 200, 200, 200, 429, 429]);
    }
}

#[test]
fn an_open_breaker_skips_the_store() {
    let gw = gateway(&remote(demo(), "allow"));
    let settings = rls_of(&gw);
    let h = req_headers("alice-1", None);
    let v = view(&h);
    let req = Request::from_headers(&v);
    let mut breaker = Breaker::default();
    for _ in 0..settings.breaker_failures {
        breaker.failure(T0, false, settings.breaker_failures, settings.breaker_open_ms);
    }
    let mut local = MemStore::default();
    let mut ask = Ask::new(&settings, &mut breaker, &mut local);
    let a = admit_with(&gw, &req, T0 + 1, &mut Conn::default(), &mut ask).expect("decided without asking");
    assert!(ask.skipped && ask.request.is_none());
    assert_eq!(got(&gw, a).status, 200);
    // Requests that fail identification never reach the store or the breaker.
    let bad = req_headers("wrong", None);
    let bv = view(&bad);
    let mut ask = Ask::new(&settings, &mut breaker, &mut local);
    assert_eq!(got(&gw, admit_with(&gw, &Request::from_headers(&bv), T0, &mut Conn::default(), &mut ask).unwrap()).status, 401);
    assert!(!ask.skipped);
}

#[test]
fn breaker_opens_after_n_failures_probes_once_and_closes_on_success() {
    let (n, open) = (3, 1000);
    let mut b = Breaker::default();
    for _ in 0..n - 1 {
        assert_eq!(b.gate(T0, 200), Gate::Call);
        b.failure(T0, false, n, open);
    }
    b.success();
    for _ in 0..n - 1 {
        b.failure(T0, false, n, open);
    }
    assert!(!b.is_open(), "a success resets the count");
    b.failure(T0, false, n, open);
    assert!(b.is_open());
    assert_eq!(b.gate(T0 + 999, 200), Gate::Skip);
    assert_eq!(b.gate(T0 + 1000, 200), Gate::Probe);
    assert_eq!(b.gate(T0 + 1001, 200), Gate::Skip, "one probe at a time");
    // A late failure of a call made before the breaker opened changes nothing ...
    b.failure(T0 + 1002, false, n, open);
    // ... the probe's does: open again for `open` ms.
    b.failure(T0 + 1050, true, n, open);
    assert_eq!(b.gate(T0 + 2049, 200), Gate::Skip);
    assert_eq!(b.gate(T0 + 2050, 200), Gate::Probe);
    // A lost probe is given up after `lost_after`.
    assert_eq!(b.gate(T0 + 2250, 200), Gate::Probe);
    b.success();
    assert_eq!(b.gate(T0 + 2251, 200), Gate::Call);
    assert!(!b.is_open());
}

#[test]
fn garbage_descriptors_from_a_client_never_panic_the_service() {
    let gw = gateway(&remote(demo(), "deny"));
    let r = Resolver::new(&gw);
    let mut s = MemStore::default();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let words = ["limit", "subscription", "counter", "p:starter", "q:starter", "b:starter", "alice", "bob", "", "a:azureml-demo", "\u{0}"];
    for _ in 0..2000 {
        let n = (next() % 6) as usize;
        let d: Vec<Descriptor> = (0..n)
            .map(|_| Descriptor {
                entries: (0..(next() % 4)).map(|_| (words[(next() % 11) as usize].into(), words[(next() % 11) as usize].into())).collect(),
                hits_addend: if next() % 3 == 0 { Some(next() % 5000) } else { None },
            })
            .collect();
        let _ = r.decide("mlgate", &d, (next() % 3) as u32, &mut s, T0);
    }
}
