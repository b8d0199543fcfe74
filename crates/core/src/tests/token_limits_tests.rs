//! Token limits through `admit`: the body asked for, the bound reserved, refusals in APIM's
//! words, the reservation settled, and exactness when workers interleave.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::support::{apply_edits, gateway, headers, sorted_upstream, view, Conn, MemStore};
use crate::admit::tokens::{settle, Metered};
use crate::admit::{admit, Admission, Event, Outcome, Request};
use crate::model::Gateway;
use crate::tokens::TokenUsage;
use serde_json::{json, Value};

const T0: u64 = 1_700_000_000_000;

fn llm(token_limit: Value) -> Value {
    json!({
        "apis": [{"id": "llm", "name": "LLM", "path": "llm", "service_url": "http://127.0.0.1:1/v1",
                  "operations": "azure-openai",
                  "backend_credentials": [{"workspace": "*", "service": "*", "api_key": "sk-1", "header": "api-key"}]}],
        "products": [{"id": "tok", "name": "Tok", "apis": ["llm"], "token_limit": token_limit}],
        "subscriptions": [{"id": "alice", "product": "tok", "state": "active", "primary_key": "k1"}]
    })
}

const PATH: &str = "/llm/openai/deployments/gpt/chat/completions?api-version=2024-10-21";

/// What one call through admit came to: forwarded (with what it reserved) or refused.
struct Call {
    status: u16,
    message: String,
    headers: Vec<(String, String)>,
    metered: Option<Metered>,
    upstream: Vec<(Vec<u8>, Vec<u8>)>,
    body: Option<Vec<u8>>,
    events: crate::admit::Events,
}

fn call_with(gw: &Gateway, store: &mut MemStore, now: u64, key: &str, body: Option<&[u8]>, extra: &[(&str, &str)]) -> Call {
    let mut pairs = vec![(":method", "POST"), (":path", PATH), (":scheme", "http"), (":authority", "gw"), ("api-key", "client-copy")];
    if !key.is_empty() {
        pairs.push(("ocp-apim-subscription-key", key));
    }
    pairs.extend_from_slice(extra);
    let hs = headers(&pairs);
    let v = view(&hs);
    let mut req = Request::from_headers(&v);
    req.body = body;
    let Admission { outcome, events } = admit(gw, &req, now, &mut Conn::default(), store);
    match outcome {
        Outcome::Reply(r) => {
            let m: Value = serde_json::from_str(&r.body).unwrap();
            Call {
                status: r.status,
                message: m["message"].as_str().unwrap().to_string(),
                headers: r.headers.clone(),
                metered: None,
                upstream: vec![],
                body: None,
                events,
            }
        }
        Outcome::Forward(f) => {
            let mut up = Vec::new();
            f.upstream_headers(gw, &req, &mut up);
            // The hosts apply the edits: they make the same upstream request (a metered call
            // loses accept-encoding and content-length too).
            let mut edits = Vec::new();
            f.upstream_edits(gw, &req, &mut edits);
            assert_eq!(apply_edits(&v, &edits), sorted_upstream(&up), "{edits:?}");
            let t = f.tokens.as_ref().unwrap();
            Call {
                status: 200,
                message: String::new(),
                headers: f.response_headers(gw),
                metered: Some(t.metered),
                upstream: up.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect(),
                body: t.body.clone(),
                events,
            }
        }
        Outcome::ReadBody(_) => {
            Call { status: 100, message: String::new(), headers: vec![], metered: None, upstream: vec![], body: None, events }
        }
        Outcome::PassThrough { .. } => panic!("no pass-through here"),
    }
}

fn call(gw: &Gateway, store: &mut MemStore, now: u64, body: &[u8]) -> Call {
    call_with(gw, store, now, "k1", Some(body), &[("accept-encoding", "gzip"), ("content-length", "99")])
}

fn chat(max_tokens: u64) -> Vec<u8> {
    format!(r#"{{"messages":[{{"role":"user","content":"hi"}}],"max_tokens":{max_tokens}}}"#).into_bytes()
}

fn header<'a>(c: &'a Call, name: &str) -> Option<&'a str> {
    c.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[test]
fn the_body_is_asked_for_only_after_the_key_is_checked() {
    let gw = gateway(&llm(json!({"tokens_per_minute": 1000, "default_max_completion_tokens": 10})));
    let mut store = MemStore::default();
    assert_eq!(call_with(&gw, &mut store, T0, "", None, &[]).status, 401);
    assert_eq!(call_with(&gw, &mut store, T0, "wrong", None, &[]).status, 401);
    let c = call_with(&gw, &mut store, T0, "k1", None, &[]);
    assert_eq!((c.status, c.events), (100, crate::admit::Events::default()), "nothing is counted before the body");
    assert_eq!(store.keys(), 0);
}

#[test]
fn a_call_reserves_its_bound_and_goes_up_with_the_backend_key() {
    let gw = gateway(&llm(json!({"tokens_per_minute": 1000, "default_max_completion_tokens": 10,
                                 "remaining_tokens_header": "x-remaining-tokens"})));
    let mut store = MemStore::default();
    let body = chat(100);
    let c = call(&gw, &mut store, T0, &body);
    assert_eq!(c.status, 200);
    let cost = body.len() as u64 + 100;
    assert_eq!(c.metered.unwrap().charge.unwrap().reserved, cost);
    assert_eq!(header(&c, "x-remaining-tokens"), Some((1000 - cost).to_string().as_str()));
    let up = |name: &[u8]| c.upstream.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect::<Vec<_>>();
    assert_eq!(up(b"api-key"), vec![b"sk-1".to_vec()], "the client's copy is replaced by the backend key");
    assert!(up(b"authorization").is_empty() && up(b"ocp-apim-subscription-key").is_empty());
    assert!(up(b"accept-encoding").is_empty(), "the usage must come uncompressed");
    assert!(up(b"content-length").is_empty(), "the body may be rewritten after the headers went on");
    assert_eq!(up(b":path"), vec![b"/v1/openai/deployments/gpt/chat/completions?api-version=2024-10-21".to_vec()]);
    // Without max_tokens: the default is written into the body.
    let c = call(&gw, &mut store, T0, br#"{"messages":[]}"#);
    assert_eq!(serde_json::from_slice::<Value>(c.body.as_ref().unwrap()).unwrap()["max_tokens"], 10);
}

#[test]
fn the_rate_refuses_what_does_not_fit_and_settling_gives_back_the_rest() {
    let gw = gateway(&llm(json!({"tokens_per_minute": 1000, "default_max_completion_tokens": 10})));
    let mut store = MemStore::default();
    let body = chat(400);
    let cost = body.len() as u64 + 400;
    let first = call(&gw, &mut store, T0, &body);
    let second = call(&gw, &mut store, T0 + 10, &body);
    assert_eq!((first.status, second.status), (200, 200));
    let third = call(&gw, &mut store, T0 + 20, &body);
    assert_eq!(third.status, 429);
    // Tokens count for 60 to 61 s (one-second buckets): these leave 61 s after their second began.
    assert_eq!(third.message, "Token limit is exceeded. Try again in 61 seconds.");
    assert_eq!(third.headers, vec![("retry-after".to_string(), "61".to_string())]);
    assert_eq!(third.events.get(Event::TokenRateLimited), 1);
    // The first call used 30 tokens: the rest of its reservation comes back.
    let ev = settle(&gw, &first.metered.unwrap(), Some(TokenUsage { prompt: 10, completion: 20, total: 30 }), T0 + 500, &mut store);
    assert_eq!(ev.get(Event::StoreFailure), 0);
    assert!(2 * cost - (cost - 30) + cost <= 1000, "the third fits after the settle");
    assert_eq!(call(&gw, &mut store, T0 + 600, &body).status, 200);
    // No usage (a cut stream, a backend error): the reservation stays.
    settle(&gw, &second.metered.unwrap(), None, T0 + 700, &mut store);
    assert_eq!(call(&gw, &mut store, T0 + 800, &body).status, 429);
    // A minute (and its one-second bucket) later the window is empty again.
    assert_eq!(call(&gw, &mut store, T0 + 61_000, &body).status, 200);
}

#[test]
fn the_quota_refuses_with_apims_words_until_its_period_ends() {
    let gw = gateway(&llm(json!({"token_quota": 1000, "token_quota_period": "Hourly", "default_max_completion_tokens": 10,
                                 "remaining_quota_tokens_header": "x-quota-left", "retry_after_header": "x-wait"})));
    let mut store = MemStore::default();
    let hour = 3_600_000;
    let t = T0 / hour * hour + 59 * 60_000 + 27_000; // 32 min 33 s... no: 33 s before the hour ends
    let body = chat(600);
    assert_eq!(call(&gw, &mut store, t, &body).status, 200);
    let c = call(&gw, &mut store, t, &body);
    assert_eq!((c.status, c.message.as_str()), (403, "Token quota is exceeded. Try again in 33 seconds."));
    assert_eq!(c.headers, vec![("x-wait".to_string(), "33".to_string())]);
    assert_eq!(c.events.get(Event::TokenQuota), 1);
    let c = call(&gw, &mut store, t - 21 * 60_000, &body);
    assert_eq!(c.message, "Token quota is exceeded. Try again in 21 minutes and 33 seconds.");
    let next = call(&gw, &mut store, t + 33_000, &body);
    assert_eq!(next.status, 200, "a new hour, a new quota");
    let left: u64 = header(&next, "x-quota-left").unwrap().parse().unwrap();
    assert_eq!(left, 1000 - (body.len() as u64 + 600));
}

#[test]
fn a_call_that_could_never_fit_is_a_bad_request() {
    let gw = gateway(&llm(json!({"tokens_per_minute": 500, "default_max_completion_tokens": 10})));
    let mut store = MemStore::default();
    let c = call(&gw, &mut store, T0, &chat(1000));
    assert_eq!(c.status, 400);
    assert!(c.message.contains("more than its token limit of 500"), "{}", c.message);
    assert_eq!(c.events.get(Event::BadBody), 1);
    let big = vec![b' '; (1 << 20) + 1];
    assert_eq!(call(&gw, &mut store, T0, &big).status, 413);
    assert_eq!(store.keys(), 0, "refused bodies count nowhere");
}

#[test]
fn reservations_never_exceed_the_limit_when_workers_interleave() {
    let cfg = llm(json!({"tokens_per_minute": 2000, "token_quota": 5000, "token_quota_period": "daily",
                         "default_max_completion_tokens": 10}));
    let gw = gateway(&cfg);
    let store = MemStore::default();
    let day = 86_400_000;
    let t0 = T0 / day * day;
    // (time, tokens) of every admission, by either worker.
    let admitted = std::rc::Rc::new(std::cell::RefCell::new(Vec::<(u64, u64)>::new()));
    for i in 0..300u64 {
        let now = t0 + i * 700;
        let body = chat(50 + i % 7 * 30);
        // Another worker admits a call between this one's read and its write.
        let (gw2, mut other, other_body, log) = (gateway(&cfg), store.clone(), body.clone(), admitted.clone());
        *store.before_set.borrow_mut() = Some(Box::new(move || {
            let c = call(&gw2, &mut other, now, &other_body);
            if c.status == 200 {
                log.borrow_mut().push((now, c.metered.unwrap().charge.unwrap().reserved));
            }
        }));
        let c = call(&gw, &mut store.clone(), now, &body);
        if c.status == 200 {
            admitted.borrow_mut().push((now, c.metered.unwrap().charge.unwrap().reserved));
        }
    }
    let all = admitted.borrow();
    for &(t, _) in all.iter() {
        let window: u64 = all.iter().filter(|(u, _)| *u >= t && *u < t + 60_000).map(|(_, n)| n).sum();
        assert!(window <= 2000, "{window} tokens reserved in the minute from {t}");
    }
    let total: u64 = all.iter().map(|(_, n)| n).sum();
    assert!(total <= 5000, "reserved {total} tokens in one day");
    assert!(total > 4500, "the quota was used, not refused early ({total})");
}

#[test]
fn token_limits_are_refused_where_they_cannot_hold() {
    let bad = |v: Value| Gateway::from_json(v.to_string().as_bytes(), &super::support::Env(vec![])).err().unwrap().to_string();
    assert!(bad(llm(json!({"default_max_completion_tokens": 10}))).contains("products[0].token_limit: give tokens_per_minute"));
    assert!(bad(llm(json!({"token_quota": 5, "default_max_completion_tokens": 10}))).contains("token_quota_period: required"));
    assert!(bad(llm(json!({"token_quota": 5, "token_quota_period": "fortnightly", "default_max_completion_tokens": 10})))
        .contains("token_quota_period: expected"));
    assert!(bad(llm(json!({"tokens_per_minute": 5}))).contains("default_max_completion_tokens"));
    // A remote store counts token limits too (mlgate-rls settles them with the same code).
    let mut c = llm(json!({"tokens_per_minute": 5, "default_max_completion_tokens": 1}));
    c["limits_store"] = json!({"rls": {"cluster": "rls", "domain": "mlgate"}});
    assert!(Gateway::from_json(c.to_string().as_bytes(), &super::support::Env(vec![])).is_ok());
    let mut c = super::support::demo();
    c["apis"][0]["token_limit"] = json!({"tokens_per_minute": 5, "default_max_completion_tokens": 1});
    assert!(bad(c).contains("apis[0].token_limit: this API has no operation that carries tokens"));
    let mut c = llm(json!({"tokens_per_minute": 5, "default_max_completion_tokens": 1}));
    c["apis"][0]["backend_credentials"][0]["header"] = json!("bad header");
    assert!(bad(c).contains("backend_credentials[0].header"));
    let mut c = llm(json!({"tokens_per_minute": 5, "default_max_completion_tokens": 1}));
    c["apis"][0]["operations"] = json!("gpt");
    assert!(bad(c).contains("unknown preset \"gpt\" (known: \"azureml-studio\", \"azureml-online\", \"openai\", \"azure-openai\")"));
}

#[test]
fn a_subscription_can_read_its_token_use_without_writing() {
    let gw = gateway(&llm(json!({"tokens_per_minute": 1000, "token_quota": 5000, "token_quota_period": "daily",
                                 "default_max_completion_tokens": 10})));
    let mut store = MemStore::default();
    let tl = gw.products[0].token_limit.as_ref().unwrap();
    let sub = &gw.subscriptions[0];
    let unused = crate::limits::token_usage(&mut store, &sub.record_key, tl, T0).unwrap();
    assert_eq!((unused.window_used, unused.quota_used), (Some(0), Some(0)));
    let body = chat(100);
    let c = call(&gw, &mut store, T0, &body);
    let cost = body.len() as u64 + 100;
    let sets = store.inner.borrow().sets;
    let u = crate::limits::token_usage(&mut store, &sub.record_key, tl, T0 + 1000).unwrap();
    assert_eq!((u.window_used, u.quota_used), (Some(cost), Some(cost)));
    let day = 86_400_000;
    assert_eq!(u.quota_renews_in_ms, Some((T0 / day + 1) * day - (T0 + 1000)));
    assert_eq!(store.inner.borrow().sets, sets, "reading writes nothing");
    settle(&gw, &c.metered.unwrap(), Some(TokenUsage { prompt: 5, completion: 5, total: 10 }), T0 + 2000, &mut store);
    let u = crate::limits::token_usage(&mut store, &sub.record_key, tl, T0 + 3000).unwrap();
    assert_eq!((u.window_used, u.quota_used), (Some(10), Some(10)));
    // The minute passes; the day's quota keeps it.
    let u = crate::limits::token_usage(&mut store, &sub.record_key, tl, T0 + 62_000).unwrap();
    assert_eq!((u.window_used, u.quota_used), (Some(0), Some(10)));
}
