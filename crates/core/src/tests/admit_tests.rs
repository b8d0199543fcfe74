//! The admission pipeline's own decisions: failure mode, denial kinds as events, what is asked
//! of the connection and when, pass-through stripping, schemes, the summary.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::support::{demo, gateway, headers, run_full, view, Conn, MemStore};
use crate::admit::{admit, Event, Outcome, Request};
use serde_json::json;

const RRS: &str = "/azureml-demo/workspaces/ws1/services/svc1/execute?api-version=2.0&details=true";
const T0: u64 = 1_700_000_000_000;

fn call(key: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    headers(&[(":method", "POST"), (":path", RRS), (":scheme", "https"), (":authority", "gw"), ("ocp-apim-subscription-key", key)])
}

#[test]
fn failure_mode_deny_answers_503_and_allow_forwards_uncounted() {
    for (mode, status, allowed) in [("deny", 503, 0), ("allow", 200, 1)] {
        let mut cfg = demo();
        cfg["failure_mode"] = json!(mode);
        let gw = gateway(&cfg);
        let mut store = MemStore::default();
        store.inner.borrow_mut().fail_gets = true;
        let got = run_full(&gw, &mut store, T0, &call("alice-1"), &mut Conn::default());
        assert_eq!(got.status, status, "{mode}");
        assert_eq!(got.events.get(Event::StoreFailure), 1, "{mode}");
        assert_eq!(got.events.get(Event::FailureModeAllowed), allowed, "{mode}");
        if mode == "deny" {
            let body = got.reply.unwrap().body;
            assert!(body.starts_with("{ \"statusCode\": 503, "), "{body}");
        } else {
            // Allowed through, but with no limit status to report.
            assert!(got.response_headers.is_empty());
        }
    }
}

#[test]
fn denials_are_events_by_kind() {
    let mut cfg = demo();
    cfg["products"][0]["rate_limit"] = json!({"calls": 1, "renewal_period": 60});
    cfg["products"][0]["quota"] = json!({"calls": 1, "renewal_period": 3600});
    let gw = gateway(&cfg);
    let mut store = MemStore::default();
    let ev = |t: u64, store: &mut MemStore| run_full(&gw, store, t, &call("alice-1"), &mut Conn::default()).events;
    assert_eq!(ev(T0, &mut store).iter().filter(|(e, _)| *e != Event::StoreKeysCreated).count(), 0);
    assert_eq!(ev(T0 + 1, &mut store).get(Event::RateLimited), 1);
    assert_eq!(ev(T0 + 120_000, &mut store).get(Event::QuotaCalls), 1);
    let e = run_full(&gw, &mut store, T0, &call("nope"), &mut Conn::default()).events;
    assert_eq!(e.get(Event::InvalidKey), 1);
    let h = headers(&[(":method", "POST"), (":path", RRS)]);
    assert_eq!(run_full(&gw, &mut store, T0, &h, &mut Conn::default()).events.get(Event::MissingKey), 1);
    let h = headers(&[(":method", "GET"), (":path", "/nowhere")]);
    assert_eq!(run_full(&gw, &mut store, T0, &h, &mut Conn::default()).events.get(Event::NotFound), 1);
    // The record and the CAS sentinel were created once, and counted as such.
    assert_eq!(ev(T0 + 7_200_000, &mut MemStore::default()).get(Event::StoreKeysCreated), 1);
}

#[test]
fn the_connection_is_asked_only_when_needed() {
    let gw = gateway(&demo());
    let mut conn = Conn::default();
    run_full(&gw, &mut MemStore::default(), T0, &call("alice-1"), &mut conn);
    assert_eq!((conn.address_calls, conn.tls_calls), (0, 0));
    let mut cfg = demo();
    cfg["products"][0]["rate_limit"] = json!({"calls": 1, "renewal_period": 60, "counter": "ip"});
    cfg["apis"][0]["protocols"] = json!(["https"]);
    let gw = gateway(&cfg);
    let mut store = MemStore::default();
    let mut conn = Conn { ip: Some(b"192.0.2.1".to_vec()), tls: true, ..Conn::default() };
    assert_eq!(run_full(&gw, &mut store, T0, &call("alice-1"), &mut conn).status, 200);
    assert_eq!((conn.address_calls, conn.tls_calls), (1, 1));
    // The address counts, not anything the client says: a forged X-Forwarded-For is no help.
    let mut h = call("alice-1");
    h.push((b"x-forwarded-for".to_vec(), b"203.0.113.9".to_vec()));
    assert_eq!(run_full(&gw, &mut store, T0 + 1, &h, &mut conn).status, 429);
    let mut other = Conn { ip: Some(b"192.0.2.2".to_vec()), tls: true, ..Conn::default() };
    assert_eq!(run_full(&gw, &mut store, T0 + 2, &call("alice-1"), &mut other).status, 200);
}

#[test]
fn an_https_only_api_refuses_plain_http_as_not_found() {
    let mut cfg = demo();
    cfg["apis"][0]["protocols"] = json!(["https"]);
    cfg["apis"][1]["protocols"] = json!(["http"]);
    let gw = gateway(&cfg);
    let mut plain = Conn::default();
    let mut tls = Conn { tls: true, ..Conn::default() };
    // A client's `:scheme` says nothing: the connection decides.
    let got = run_full(&gw, &mut MemStore::default(), T0, &call("bob-1"), &mut plain);
    assert_eq!((got.status, got.events.get(Event::NotFound)), (404, 1));
    assert_eq!(run_full(&gw, &mut MemStore::default(), T0, &call("bob-1"), &mut tls).status, 200);
    let other = headers(&[(":method", "GET"), (":path", "/other/ping/1?v=2&mode=fast"), ("x-key", "bob-1")]);
    assert_eq!(run_full(&gw, &mut MemStore::default(), T0, &other, &mut tls).status, 404);
    assert_eq!(run_full(&gw, &mut MemStore::default(), T0, &other, &mut plain).status, 200);
    let mut bad = demo();
    bad["apis"][0]["protocols"] = json!(["ftp"]);
    let e = crate::model::Gateway::from_json(bad.to_string().as_bytes(), &super::support::Env(vec![])).err().unwrap();
    assert_eq!(e.field, "apis[0].protocols[0]");
}

#[test]
fn pass_through_strips_only_client_identity_headers_that_are_present() {
    let mut cfg = demo();
    cfg["unmatched_requests"] = json!("pass_through");
    let gw = gateway(&cfg);
    let h = headers(&[(":method", "GET"), (":path", "/healthz"), ("X-Mlgate-Subscription-Id", "forged"), ("x-other", "kept")]);
    let v = view(&h);
    let out = admit(&gw, &Request::from_headers(&v), T0, &mut Conn::default(), &mut MemStore::default()).outcome;
    let Outcome::PassThrough { strip } = out else { panic!("not a pass-through") };
    assert_eq!(strip, [Some("x-mlgate-subscription-id"), None]);
    let h = headers(&[(":method", "GET"), (":path", "/healthz")]);
    let v = view(&h);
    let out = admit(&gw, &Request::from_headers(&v), T0, &mut Conn::default(), &mut MemStore::default()).outcome;
    assert!(matches!(out, Outcome::PassThrough { strip: [None, None] }));
}

#[test]
fn summary_counts_and_bounds() {
    let mut cfg = demo();
    cfg["apis"][0]["backend_credentials"][0] = json!({"workspace": "*", "service": "*", "api_key_env": "AML_KEY"});
    let gw = crate::model::Gateway::from_json(cfg.to_string().as_bytes(), &super::support::Env(vec![("AML_KEY", "k")])).unwrap();
    let s = gw.summary();
    assert_eq!((s.apis, s.operations, s.products, s.subscriptions, s.limits), (2, 6, 2, 3, 2));
    assert_eq!(s.api_key_envs, ["AML_KEY"]);
    assert_eq!(s.upstreams.len(), 2);
    assert_eq!(
        (s.upstreams[0].host.as_str(), s.upstreams[0].port, s.upstreams[0].https),
        ("ussouthcentral.services.azureml.net", 443, true)
    );
    assert_eq!((s.upstreams[1].host.as_str(), s.upstreams[1].port, s.upstreams[1].https), ("127.0.0.1", 9999, false));
    // The bound holds what the store really takes after every subscription has called.
    let mut store = MemStore::default();
    for key in ["alice-1", "carol-1"] {
        run_full(&gw, &mut store, T0, &call(key), &mut Conn::default());
    }
    assert!(store.bytes() as u64 <= s.shared_data_bytes_max, "{} > {}", store.bytes(), s.shared_data_bytes_max);
}

#[test]
fn every_event_has_one_stat_name_shared_by_both_hosts() {
    let names: Vec<&str> = Event::ALL.iter().map(|e| e.stat().0).collect();
    for (i, n) in names.iter().enumerate() {
        assert!(n.starts_with("mlgate.") && !names[..i].contains(n), "{n}");
    }
    assert!(!names.contains(&Event::QUOTA_EXCEEDED_STAT));
    assert_eq!(Event::ALL.iter().filter(|e| e.is_quota_denial()).count(), 2);
    assert_eq!(Event::ALL.iter().filter(|e| e.stat().1).collect::<Vec<_>>(), [&Event::StoreKeysCreated]);
}
