//! Streamed completions: the events, usage only with `include_usage`, a frame per chunk, the
//! max tokens, `x-sim-cut-after` and what the tally records of streams.

use super::*;

const NO_STORAGE: &str = "http://127.0.0.1:1/devstoreaccount1";
const AUTH: (&str, &str) = ("authorization", "Bearer sim-key-0123456789");
const MSGS: &str = r#"[{"role": "user", "content": "Hello there"}]"#;
/// 3 + (ceil(11/4) + 3).
const MSGS_TOKENS: u64 = 9;

/// What a stream delivered: the content type, the body frames as they arrived, its `data:`
/// payloads (the JSON ones parsed; `[DONE]` as a string) and whether it broke off.
struct Sse {
    content_type: String,
    frames: usize,
    text: String,
    events: Vec<Value>,
    broken: bool,
}

async fn stream(url: &str, headers: &[(&str, &str)], body: &str) -> Sse {
    let mut req = reqwest::Client::new().post(url).header("content-type", "application/json").body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    let (mut frames, mut bytes, mut broken) = (0, Vec::new(), false);
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                frames += 1;
                bytes.extend_from_slice(&c);
            }
            Ok(None) => break,
            Err(_) => {
                broken = true;
                break;
            }
        }
    }
    let text = String::from_utf8(bytes).unwrap();
    let events = text
        .split_terminator("\n\n")
        .map(|e| {
            let data = e.strip_prefix("data: ").unwrap_or_else(|| panic!("not an SSE data line: {e:?}"));
            serde_json::from_str(data).unwrap_or_else(|_| json!(data))
        })
        .collect();
    Sse { content_type, frames, text, events, broken }
}

fn content(events: &[Value]) -> String {
    events.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect()
}

#[tokio::test]
async fn a_stream_without_include_usage_has_no_usage() {
    let (app, url) = start_sim(NO_STORAGE, |_| {}).await;
    let body = format!(r#"{{"messages": {MSGS}, "stream": true, "max_tokens": 3}}"#);
    let s = stream(&format!("{url}/chat/completions"), &[AUTH, ("x-sim-chunk-delay-ms", "20")], &body).await;
    assert_eq!(s.content_type, "text/event-stream");
    assert!(!s.broken);
    assert!(!s.text.contains("usage"), "{}", s.text);
    assert_eq!(s.events.len(), 4);
    assert_eq!(s.frames, 4, "a body frame per event");
    assert_eq!(s.events[3], json!("[DONE]"));
    assert_eq!(s.events[0]["object"], "chat.completion.chunk");
    assert_eq!(s.events[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(content(&s.events), "tok tok tok ");
    let finish: Vec<&Value> = s.events[..3].iter().map(|e| &e["choices"][0]["finish_reason"]).collect();
    assert_eq!(finish, [&Value::Null, &Value::Null, &json!("length")]);
    let log = app.tally().to_json()["log"][0].clone();
    assert_eq!(
        log,
        json!({"kind": "chat", "prompt_tokens": MSGS_TOKENS, "completion_tokens": 3, "total_tokens": MSGS_TOKENS + 3,
                           "stream": true, "cut": false})
    );
}

#[tokio::test]
async fn include_usage_adds_a_last_chunk_with_the_usage() {
    let (_, url) = start_sim(NO_STORAGE, |_| {}).await;
    let body = format!(r#"{{"messages": {MSGS}, "stream": true, "n": 2, "stream_options": {{"include_usage": true}}}}"#);
    let azure = format!("{url}/openai/deployments/d1/chat/completions?api-version=2024-10-21");
    let s = stream(&azure, &[("api-key", KEY), ("x-sim-completion-tokens", "5")], &body).await;
    // 2 choices × 5 tokens, the usage chunk, [DONE].
    assert_eq!(s.events.len(), 12, "{}", s.text);
    let usage = &s.events[10];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"], json!({"prompt_tokens": MSGS_TOKENS, "completion_tokens": 10, "total_tokens": MSGS_TOKENS + 10}));
    assert_eq!(usage["model"], "d1");
    assert!(s.events[..10].iter().all(|e| e["usage"].is_null() && e["choices"].as_array().unwrap().len() == 1));
    assert_eq!(s.events[8]["choices"][0]["finish_reason"], "stop");
    assert_eq!(s.events[9]["choices"][0]["index"], 1);
    assert_eq!(s.events[11], json!("[DONE]"));
}

#[tokio::test]
async fn streams_respect_max_tokens_and_stream_completions() {
    let (_, url) = start_sim(NO_STORAGE, |_| {}).await;
    let body =
        format!(r#"{{"messages": {MSGS}, "stream": true, "max_completion_tokens": 7, "stream_options": {{"include_usage": true}}}}"#);
    let s = stream(&format!("{url}/v1/chat/completions"), &[AUTH, ("x-sim-completion-tokens", "500")], &body).await;
    assert_eq!(content(&s.events), "tok ".repeat(7));
    assert_eq!(s.events[7]["usage"]["completion_tokens"], 7);
    // No tokens: one empty chunk with its finish_reason.
    let s = stream(&format!("{url}/chat/completions"), &[AUTH, ("x-sim-completion-tokens", "0")], &body).await;
    assert_eq!(s.events.len(), 3);
    assert_eq!(s.events[0]["choices"][0]["finish_reason"], "stop");
    assert_eq!(s.events[1]["usage"]["completion_tokens"], 0);
    let s = stream(&format!("{url}/completions"), &[AUTH], r#"{"prompt": "abc", "stream": true, "max_tokens": 2}"#).await;
    assert_eq!(s.events.len(), 3);
    assert_eq!((s.events[1]["object"].as_str(), s.events[1]["choices"][0]["text"].as_str()), (Some("text_completion"), Some("tok ")));
}

#[tokio::test]
async fn cut_after_aborts_the_stream_and_tallies_what_was_sent() {
    let (_, url) = start_sim(NO_STORAGE, |_| {}).await;
    let body = format!(r#"{{"messages": {MSGS}, "stream": true, "max_tokens": 5, "stream_options": {{"include_usage": true}}}}"#);
    let s = stream(&format!("{url}/chat/completions"), &[AUTH, ("x-sim-cut-after", "2")], &body).await;
    assert!(s.broken, "the chunked body must be cut, not ended: {}", s.text);
    assert_eq!(s.events.len(), 2);
    assert_eq!(content(&s.events), "tok tok ");
    assert!(!s.text.contains("[DONE]") && !s.text.contains("\"prompt_tokens\""));
    // Cut after more chunks than there are: all of them, still no usage and no [DONE].
    let s = stream(&format!("{url}/chat/completions"), &[AUTH, ("x-sim-cut-after", "50")], &body).await;
    assert!(s.broken);
    assert_eq!(s.events.len(), 5);
    // A plain stream next to them.
    let s = stream(&format!("{url}/chat/completions"), &[AUTH], &body).await;
    assert!(!s.broken);
    let (_, v, _) = call(Method::GET, &format!("{url}/sim/usage"), None, None).await;
    assert_eq!(v["calls"], 3);
    assert_eq!(v["prompt_tokens"], 3 * MSGS_TOKENS);
    assert_eq!(v["completion_tokens"], 2 + 5 + 5);
    let cut: Vec<(u64, bool, bool)> = v["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["completion_tokens"].as_u64().unwrap(), c["stream"].as_bool().unwrap(), c["cut"].as_bool().unwrap()))
        .collect();
    assert_eq!(cut, [(2, true, true), (5, true, true), (5, true, false)]);
}
