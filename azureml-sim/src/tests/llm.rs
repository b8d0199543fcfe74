//! The OpenAI-compatible LLM without streams: shapes, token counts, max tokens, routes and
//! keys, validation, the knobs and the tally at `/sim/usage`.

use super::*;

const NO_STORAGE: &str = "http://127.0.0.1:1/devstoreaccount1";
const AUTH: (&str, &str) = ("authorization", "Bearer sim-key-0123456789");
const HELLO: &str = r#"[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]"#;
/// 3 + (ceil(9/4) + 3) + (ceil(11/4) + 3).
const HELLO_TOKENS: u64 = 3 + 6 + 6;

async fn chat(url: &str, headers: &[(&str, &str)], body: &str) -> (StatusCode, Value) {
    let (status, _, text) = post(&format!("{url}/chat/completions"), headers, body).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn chat_reports_its_usage() {
    let (app, url) = start_sim(NO_STORAGE, |_| {}).await;
    let (status, v) = chat(&url, &[AUTH], &format!(r#"{{"model": "gpt-x", "messages": {HELLO}}}"#)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-x");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(v["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(v["choices"][0]["message"], json!({"role": "assistant", "content": "tok ".repeat(16)}));
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"], json!({"prompt_tokens": HELLO_TOKENS, "completion_tokens": 16, "total_tokens": HELLO_TOKENS + 16}));
    let tally = app.tally().to_json();
    assert_eq!((tally["calls"].as_u64(), tally["log"][0]["stream"].as_bool()), (Some(1), Some(false)));
}

#[tokio::test]
async fn max_tokens_and_the_knob_bound_the_completion() {
    let (_, url) = start_sim(NO_STORAGE, |_| {}).await;
    for (max, knob, n, want, finish) in [
        (r#""max_tokens": 5"#, None, 1, 5, "length"),
        (r#""max_completion_tokens": 7"#, None, 1, 7, "length"),
        (r#""max_tokens": 10"#, Some("3"), 1, 3, "stop"),
        (r#""max_tokens": 4"#, Some("3000"), 3, 4, "length"),
        (r#""max_tokens": 4"#, Some("0"), 1, 0, "stop"),
        (r#""max_tokens": 1000"#, Some("1000"), 1, 1000, "length"),
    ] {
        let body = format!(r#"{{"messages": {HELLO}, {max}, "n": {n}}}"#);
        let mut h = vec![AUTH];
        if let Some(k) = knob {
            h.push(("x-sim-completion-tokens", k));
        }
        let (status, v) = chat(&url, &h, &body).await;
        assert_eq!(status, StatusCode::OK, "{body}: {v}");
        assert_eq!(v["choices"].as_array().unwrap().len(), n);
        for c in v["choices"].as_array().unwrap() {
            assert_eq!(c["message"]["content"], "tok ".repeat(want), "{body}");
            assert_eq!(c["finish_reason"], finish, "{body}");
        }
        assert_eq!(v["usage"]["completion_tokens"], (want * n) as u64, "{body}");
    }
}

#[tokio::test]
async fn azure_routes_take_the_api_key_header() {
    let (_, url) = start_sim(NO_STORAGE, |_| {}).await;
    let body = format!(r#"{{"messages": {HELLO}, "max_tokens": 2}}"#);
    let azure = format!("{url}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21");
    for auth in [("api-key", KEY), AUTH] {
        let (status, _, text) = post(&azure, &[auth], &body).await;
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!((status, v["model"].as_str()), (StatusCode::OK, Some("gpt-4o")), "{auth:?}");
    }
    // Either header on the plain routes too, `/v1` included; `sim-chat` when the body names no model.
    for path in ["/chat/completions", "/v1/chat/completions"] {
        let (status, _, text) = post(&format!("{url}{path}"), &[("api-key", KEY)], &body).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["model"], "sim-chat");
    }
}

#[tokio::test]
async fn wrong_keys_get_401_and_bad_bodies_400() {
    let (app, url) = start_sim(NO_STORAGE, |_| {}).await;
    let good = format!(r#"{{"messages": {HELLO}}}"#);
    for h in
        [vec![], vec![("authorization", "Bearer nope")], vec![("api-key", "nope")], vec![("api-key", "")], vec![("authorization", KEY)]]
    {
        let (status, v) = chat(&url, &h, &good).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{h:?}");
        assert_eq!(v["error"]["code"], "invalid_api_key");
        assert!(!v.to_string().contains(KEY));
    }
    for bad in [
        "not json",
        "[]",
        "{}",
        r#"{"messages": "hi"}"#,
        r#"{"messages": [{"content": "no role"}]}"#,
        &format!(r#"{{"messages": {HELLO}, "max_tokens": 0}}"#),
        &format!(r#"{{"messages": {HELLO}, "max_tokens": -3}}"#),
        &format!(r#"{{"messages": {HELLO}, "max_tokens": "8"}}"#),
        &format!(r#"{{"messages": {HELLO}, "n": 129}}"#),
        &format!(r#"{{"messages": {HELLO}, "stream_options": {{"include_usage": true}}}}"#),
    ] {
        let (status, v) = chat(&url, &[AUTH], bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{bad}");
        assert!(v.get("usage").is_none());
    }
    for h in [("x-sim-completion-tokens", "100001"), ("x-sim-status", "200"), ("x-sim-chunk-delay-ms", "x")] {
        assert_eq!(chat(&url, &[AUTH, h], &good).await.0, StatusCode::BAD_REQUEST, "{h:?}");
    }
    // x-sim-status: that status, an OpenAI error body, no usage.
    for (code, kind) in [("429", "rate_limit_exceeded"), ("503", "server_error"), ("400", "sim_status")] {
        let (status, v) = chat(&url, &[AUTH, ("x-sim-status", code)], &good).await;
        assert_eq!(status.as_str(), code);
        assert_eq!(v["error"]["code"], kind);
        assert!(v.get("usage").is_none());
    }
    assert_eq!(app.tally().to_json()["calls"], 0, "no failed call is tallied");
}

#[tokio::test]
async fn completions_embeddings_models_and_the_usage_tally() {
    let (_, url) = start_sim(NO_STORAGE, |_| {}).await;
    let (status, _, text) = post(&format!("{url}/completions"), &[AUTH], r#"{"prompt": ["abcde", "xy"], "max_tokens": 3, "n": 2}"#).await;
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((status, v["object"].as_str()), (StatusCode::OK, Some("text_completion")));
    assert_eq!(v["choices"].as_array().unwrap().len(), 4);
    assert_eq!(v["choices"][3]["text"], "tok tok tok ");
    // (ceil(5/4) + 1) + (ceil(2/4) + 1) = 5; 4 choices × 3.
    assert_eq!(v["usage"], json!({"prompt_tokens": 5, "completion_tokens": 12, "total_tokens": 17}));
    let emb = format!("{url}/openai/deployments/emb/embeddings?api-version=2024-10-21");
    let (status, _, text) = post(&emb, &[("api-key", KEY)], r#"{"input": ["hello", "hello", "world"]}"#).await;
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(v["usage"], json!({"prompt_tokens": 9, "total_tokens": 9}));
    assert_eq!((v["model"].as_str(), v["data"].as_array().unwrap().len()), (Some("emb"), 3));
    assert_eq!(v["data"][0]["embedding"], v["data"][1]["embedding"]);
    assert_ne!(v["data"][0]["embedding"], v["data"][2]["embedding"]);
    assert_eq!(v["data"][2]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(post(&format!("{url}/embeddings"), &[AUTH], r#"{"input": [1, 2]}"#).await.0, StatusCode::BAD_REQUEST);
    let (status, v, _) = call(Method::GET, &format!("{url}/models"), bearer(), None).await;
    assert_eq!((status, v["data"][0]["id"].as_str()), (StatusCode::OK, Some("sim-chat")));
    let msgs = format!(r#"{{"messages": {HELLO}, "max_tokens": 2}}"#);
    chat(&url, &[AUTH], &msgs).await;
    // No key needed for the tally.
    let (status, v, _) = call(Method::GET, &format!("{url}/sim/usage"), None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((v["calls"].as_u64(), v["prompt_tokens"].as_u64()), (Some(3), Some(5 + 9 + HELLO_TOKENS)));
    assert_eq!((v["completion_tokens"].as_u64(), v["total_tokens"].as_u64()), (Some(12 + 2), Some(5 + 9 + HELLO_TOKENS + 14)));
    let kinds: Vec<&str> = v["log"].as_array().unwrap().iter().map(|c| c["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["completions", "embeddings", "chat"]);
    assert_eq!(
        v["log"][2],
        json!({"kind": "chat", "prompt_tokens": HELLO_TOKENS, "completion_tokens": 2, "total_tokens": HELLO_TOKENS + 2,
                                   "stream": false, "cut": false})
    );
    let (status, v, _) = call(Method::POST, &format!("{url}/sim/usage/reset"), None, None).await;
    assert_eq!((status, v["calls"].as_u64()), (StatusCode::OK, Some(0)));
}
