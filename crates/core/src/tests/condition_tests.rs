//! `increment_condition`: admissions held until the status is known, given back when it does
//! not count, exact under any interleaving of admissions and answers.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::support::{alice_rrs, gateway, starter_with, view, Conn, MemStore};
use crate::admit::condition::{settle_status, Conditional};
use crate::admit::{admit, Outcome, Request};
use crate::model::Gateway;
use serde_json::json;

const T0: u64 = 1_700_000_000_000;

/// One call: `Ok(held)` if forwarded (with what it holds), `Err(status)` if refused.
fn call(gw: &Gateway, s: &mut MemStore, now: u64, client: &str) -> Result<Option<Conditional>, u16> {
    let hs = alice_rrs(client);
    let v = view(&hs);
    let req = Request::from_headers(&v);
    let mut conn = Conn { ip: Some(b"10.0.0.1".to_vec()), ..Conn::default() };
    match admit(gw, &req, now, &mut conn, s).outcome {
        Outcome::Forward(f) => Ok(Conditional::of(&f)),
        Outcome::Reply(r) => Err(r.status),
        _ => Err(0),
    }
}

fn answer(gw: &Gateway, s: &mut MemStore, now: u64, held: Option<Conditional>, status: u16) {
    let held = held.expect("a conditional limit holds its admission");
    let ev = settle_status(gw, &held, status, now, s);
    assert_eq!(ev.get(crate::admit::Event::StoreFailure), 0);
}

#[test]
fn config_reads_classes_and_lists_and_names_the_field_of_a_bad_one() {
    for ok in [json!("2xx"), json!([200, 201]), json!(["2xx", 304])] {
        let c = starter_with(json!({"rate_limit": {"calls": 5, "renewal_period": 60, "increment_condition": ok}}));
        assert!(Gateway::from_json(c.to_string().as_bytes(), &super::support::Env(vec![("AML_KEY", "k")])).is_ok(), "{ok}");
    }
    for (bad, field) in [
        (
            json!({"rate_limit": {"calls": 5, "renewal_period": 60, "increment_condition": "6xx"}}),
            "products[0].rate_limit.increment_condition",
        ),
        (
            json!({"rate_limit": {"calls": 5, "renewal_period": 60, "increment_condition": [99]}}),
            "products[0].rate_limit.increment_condition",
        ),
        (
            json!({"rate_limit": {"calls": 5, "renewal_period": 60, "increment_condition": []}}),
            "products[0].rate_limit.increment_condition",
        ),
        (json!({"quota": {"calls": 5, "renewal_period": 60, "increment_condition": "2XX"}}), "products[0].quota.increment_condition"),
    ] {
        let Err(e) = Gateway::from_json(starter_with(bad).to_string().as_bytes(), &super::support::Env(vec![("AML_KEY", "k")])) else {
            panic!("accepted")
        };
        assert_eq!(e.field, field);
    }
    let mut c = starter_with(json!({"quota": {"calls": 5, "renewal_period": 60, "increment_condition": "2xx"}}));
    c["limits_store"] = json!({"rls": {"cluster": "rls", "domain": "d"}});
    let Err(e) = Gateway::from_json(c.to_string().as_bytes(), &super::support::Env(vec![("AML_KEY", "k")])) else { panic!("accepted") };
    assert_eq!(e.field, "limits_store");
}

#[test]
fn a_call_whose_status_does_not_count_gives_its_place_back() {
    let gw = gateway(&starter_with(json!({"rate_limit": {"calls": 3, "renewal_period": 60, "increment_condition": "2xx"}})));
    let mut s = MemStore::default();
    let held: Vec<_> = (0..3).map(|i| call(&gw, &mut s, T0 + i, "").unwrap()).collect();
    // Three in flight hold the three places.
    assert_eq!(call(&gw, &mut s, T0 + 10, ""), Err(429));
    answer(&gw, &mut s, T0 + 20, held[0], 500);
    let fourth = call(&gw, &mut s, T0 + 30, "").unwrap();
    answer(&gw, &mut s, T0 + 40, held[1], 200);
    answer(&gw, &mut s, T0 + 40, held[2], 201);
    answer(&gw, &mut s, T0 + 40, fourth, 0); // ended without a response
    let fifth = call(&gw, &mut s, T0 + 50, "").unwrap();
    answer(&gw, &mut s, T0 + 60, fifth, 200);
    assert_eq!(call(&gw, &mut s, T0 + 70, ""), Err(429));
    // The window is the counted calls': the first counted at T0+1 leaves at T0+60_001.
    assert!(call(&gw, &mut s, T0 + 60_001, "").is_ok());
}

#[test]
fn a_limit_without_a_condition_holds_nothing() {
    let gw = gateway(&starter_with(json!({"rate_limit": {"calls": 3, "renewal_period": 60}})));
    let mut s = MemStore::default();
    assert_eq!(call(&gw, &mut s, T0, ""), Ok(None));
}

#[test]
fn quota_counts_only_matching_statuses_in_the_period_they_were_admitted() {
    let gw = gateway(&starter_with(json!({"quota": {"calls": 2, "renewal_period": 3600, "increment_condition": [200]}})));
    let mut s = MemStore::default();
    let a = call(&gw, &mut s, T0, "").unwrap();
    let b = call(&gw, &mut s, T0, "").unwrap();
    assert_eq!(call(&gw, &mut s, T0, ""), Err(403));
    answer(&gw, &mut s, T0 + 1, a, 404);
    answer(&gw, &mut s, T0 + 1, b, 200);
    let c = call(&gw, &mut s, T0 + 2, "").unwrap();
    assert_eq!(call(&gw, &mut s, T0 + 3, ""), Err(403));
    // Answered after its period renewed: nothing to give back in the new period.
    let next = T0 + 3_600_000;
    let d = call(&gw, &mut s, next, "").unwrap();
    answer(&gw, &mut s, next + 1, c, 500);
    let e = call(&gw, &mut s, next + 2, "").unwrap();
    assert_eq!(call(&gw, &mut s, next + 3, ""), Err(403));
    answer(&gw, &mut s, next + 4, d, 200);
    answer(&gw, &mut s, next + 4, e, 200);
}

#[test]
fn keyed_limits_give_back_in_their_own_slot() {
    let mut c = starter_with(json!({}));
    c["products"][0] =
        starter_with(json!({"rate_limit": {"calls": 1, "renewal_period": 60, "counter": "header:x-client", "increment_condition": "2xx"}}))
            ["products"][0]
            .clone();
    let gw = gateway(&c);
    let mut s = MemStore::default();
    let a = call(&gw, &mut s, T0, "a").unwrap();
    let b = call(&gw, &mut s, T0, "b").unwrap();
    assert_eq!(call(&gw, &mut s, T0 + 1, "a"), Err(429));
    answer(&gw, &mut s, T0 + 2, a, 503);
    answer(&gw, &mut s, T0 + 2, b, 200);
    assert!(call(&gw, &mut s, T0 + 3, "a").is_ok());
    assert_eq!(call(&gw, &mut s, T0 + 3, "b"), Err(429));
}

#[test]
fn interleaved_answers_never_count_more_than_the_limit() {
    // A deterministic shuffle of admissions and answers: at every moment the counted calls
    // (2xx answered) plus those in flight never pass the limit, and the limit is reached.
    let gw = gateway(&starter_with(json!({"rate_limit": {"calls": 10, "renewal_period": 60, "increment_condition": "2xx"}})));
    let mut s = MemStore::default();
    let mut in_flight = Vec::new();
    let (mut counted, mut x) = (0u32, 12345u64);
    for step in 0..2_000u64 {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let now = T0 + step;
        if x >> 62 == 0 && !in_flight.is_empty() {
            let held = in_flight.remove((x >> 32) as usize % in_flight.len());
            let ok = (x >> 20) & 1 == 0;
            answer(&gw, &mut s, now, held, if ok { 200 } else { 500 });
            counted += u32::from(ok);
        } else if let Ok(held) = call(&gw, &mut s, now, "") {
            in_flight.push(held);
        }
        assert!(counted + in_flight.len() as u32 <= 10, "step {step}");
    }
    assert_eq!(counted, 10);
}
