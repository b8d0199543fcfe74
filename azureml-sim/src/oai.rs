//! The OpenAI-compatible LLM's rules: its error bodies, the test knobs (request headers), the
//! token counts and what a chat or completions request asks for, validated as OpenAI does.
//!
//! Token counting is deterministic (no tokenizer), with `ceil(b / 4)` for a string of `b` UTF-8
//! bytes:
//! - chat: `prompt_tokens = 3 + Σ over messages (ceil(bytes(content text) / 4) + 3)`, the
//!   content text being the string, or the `text` fields of a list of parts together;
//! - completions and embeddings: `Σ over prompt/input strings (ceil(bytes / 4) + 1)`.
//!
//! Both stay at or under "UTF-8 bytes of the strings + 4 per message + 3", a bound a gateway may
//! count with. The completion of each choice is `N = min(max tokens, T)` tokens, each the word
//! `"tok "`: max tokens from the body (`max_completion_tokens`, `max_tokens`, the smaller if
//! both; 16 when neither) and `T` from `x-sim-completion-tokens` (16 when absent).

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// One completion token, as text.
pub const TOKEN: &str = "tok ";
/// `max_tokens` when the body has none, and `T` when `x-sim-completion-tokens` is absent.
pub const DEFAULT_TOKENS: u64 = 16;
/// The largest `x-sim-completion-tokens`.
pub const MAX_KNOB_TOKENS: u64 = 100_000;
/// The largest `n`, OpenAI's.
pub const MAX_N: u64 = 128;
/// The largest `x-sim-chunk-delay-ms`.
pub const MAX_DELAY_MS: u64 = 60_000;

/// OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`.
pub fn oai_error(status: StatusCode, kind: &str, code: &str, param: Option<&str>, message: &str) -> Response {
    (status, Json(json!({"error": {"message": message, "type": kind, "param": param, "code": code}}))).into_response()
}

pub fn invalid(param: Option<&str>, message: &str) -> Response {
    oai_error(StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_request_error", param, message)
}

pub fn invalid_key() -> Response {
    let msg = "Incorrect API key provided. Give the key as `Authorization: Bearer <key>` or `api-key: <key>`.";
    oai_error(StatusCode::UNAUTHORIZED, "invalid_request_error", "invalid_api_key", None, msg)
}

/// The answer `x-sim-status: <code>` asks for: that status, an error body, no usage.
pub fn simulated(status: StatusCode) -> Response {
    let (kind, code) = match status.as_u16() {
        401 => ("invalid_request_error", "invalid_api_key"),
        429 => ("requests", "rate_limit_exceeded"),
        500..=599 => ("server_error", "server_error"),
        _ => ("invalid_request_error", "sim_status"),
    };
    oai_error(status, kind, code, None, &format!("Simulated error {} (x-sim-status).", status.as_u16()))
}

/// The test knobs, request headers all optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Knobs {
    /// `x-sim-completion-tokens` (0..=100000): `T`, the tokens the model would write unbounded.
    pub tokens: u64,
    /// `x-sim-chunk-delay-ms` (0..=60000): the pause before each streamed chunk.
    pub delay_ms: u64,
    /// `x-sim-cut-after: K` (streams only): K content chunks, then the connection is aborted.
    pub cut_after: Option<u64>,
    /// `x-sim-status: <400..=599>`: answer that error instead.
    pub status: Option<StatusCode>,
}

fn knob(headers: &HeaderMap, name: &str, max: u64) -> Result<Option<u64>, Response> {
    let Some(v) = headers.get(name) else { return Ok(None) };
    let n = v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()).filter(|n| *n <= max);
    n.map(Some).ok_or_else(|| invalid(None, &format!("The header {name} must be an integer in 0..={max}.")))
}

impl Knobs {
    pub fn from_headers(headers: &HeaderMap) -> Result<Knobs, Response> {
        let status = match knob(headers, "x-sim-status", 599)? {
            None => None,
            Some(s) => Some(
                StatusCode::from_u16(s as u16)
                    .ok()
                    .filter(|s| s.as_u16() >= 400)
                    .ok_or_else(|| invalid(None, "The header x-sim-status must be a status in 400..=599."))?,
            ),
        };
        Ok(Knobs {
            tokens: knob(headers, "x-sim-completion-tokens", MAX_KNOB_TOKENS)?.unwrap_or(DEFAULT_TOKENS),
            delay_ms: knob(headers, "x-sim-chunk-delay-ms", MAX_DELAY_MS)?.unwrap_or(0),
            cut_after: knob(headers, "x-sim-cut-after", u64::MAX)?,
            status,
        })
    }
}

/// `ceil(bytes / 4)`.
pub fn quarter(s: &str) -> u64 {
    (s.len() as u64).div_ceil(4)
}

/// The text of a message's content: the string, or the `text` fields of its parts together.
fn content_text(content: Option<&Value>) -> Result<String, Response> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => Ok(parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect()),
        Some(_) => Err(invalid(Some("messages"), "A message's content must be a string or a list of content parts.")),
    }
}

/// Chat: `3 + Σ (ceil(bytes(content text) / 4) + 3)`.
pub fn chat_prompt_tokens(messages: &Value) -> Result<u64, Response> {
    let list = messages.as_array().ok_or_else(|| invalid(Some("messages"), "'messages' is a required property and must be a list."))?;
    if list.is_empty() {
        return Err(invalid(Some("messages"), "'messages' must hold at least one message."));
    }
    let mut sum = 3u64;
    for m in list {
        if m.get("role").and_then(Value::as_str).is_none() {
            return Err(invalid(Some("messages"), "Each message must be an object with a string 'role'."));
        }
        sum = sum.saturating_add(quarter(&content_text(m.get("content"))?)).saturating_add(3);
    }
    Ok(sum)
}

/// A completions `prompt` or embeddings `input`: a string or a non-empty list of strings.
pub fn strings(v: Option<&Value>, param: &str) -> Result<Vec<String>, Response> {
    let bad = || invalid(Some(param), &format!("'{param}' is required and must be a string or a non-empty list of strings."));
    match v {
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(l)) if !l.is_empty() => l.iter().map(|s| s.as_str().map(str::to_string).ok_or_else(bad)).collect(),
        _ => Err(bad()),
    }
}

/// Completions and embeddings: `Σ (ceil(bytes / 4) + 1)`.
pub fn string_tokens(list: &[String]) -> u64 {
    list.iter().fold(0u64, |sum, s| sum.saturating_add(quarter(s)).saturating_add(1))
}

/// What a chat or completions request asks for, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gen {
    /// `chat` or `completions`.
    pub kind: &'static str,
    /// The deployment (Azure form) or the body's `model` (`sim-chat` when absent).
    pub model: String,
    pub prompt_tokens: u64,
    /// The choices: `n`, times the prompts of a completions request.
    pub choices: u64,
    /// N, the completion tokens of each choice.
    pub tokens: u64,
    /// The max tokens N was bounded by (`finish_reason` is `length` when N reaches it).
    pub max: u64,
    pub stream: bool,
    pub include_usage: bool,
}

impl Gen {
    pub fn finish_reason(&self) -> &'static str {
        if self.tokens == self.max {
            "length"
        } else {
            "stop"
        }
    }

    pub fn completion_tokens(&self) -> u64 {
        self.choices.saturating_mul(self.tokens)
    }
}

/// A positive integer parameter, or None when absent (or null).
fn positive(body: &Value, name: &str) -> Result<Option<u64>, Response> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            v.as_u64().filter(|n| *n >= 1).map(Some).ok_or_else(|| invalid(Some(name), &format!("'{name}' must be a positive integer.")))
        }
    }
}

fn flag(v: Option<&Value>, name: &str) -> Result<bool, Response> {
    match v {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(invalid(Some(name), &format!("'{name}' must be a boolean."))),
    }
}

/// Validates a chat (`kind` "chat") or completions ("completions") body.
pub fn parse_gen(kind: &'static str, deployment: Option<&str>, body: &Value, knobs: &Knobs) -> Result<Gen, Response> {
    if !body.is_object() {
        return Err(invalid(None, "The request body must be a JSON object."));
    }
    let (prompt_tokens, prompts) = if kind == "chat" {
        (chat_prompt_tokens(body.get("messages").unwrap_or(&Value::Null))?, 1)
    } else {
        let p = strings(body.get("prompt"), "prompt")?;
        (string_tokens(&p), p.len() as u64)
    };
    let max = match (positive(body, "max_completion_tokens")?, positive(body, "max_tokens")?) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).unwrap_or(DEFAULT_TOKENS),
    };
    let n = positive(body, "n")?.unwrap_or(1);
    if n > MAX_N {
        return Err(invalid(Some("n"), &format!("'n' must be at most {MAX_N}.")));
    }
    let stream = flag(body.get("stream"), "stream")?;
    let options = body.get("stream_options").filter(|v| !v.is_null());
    if options.is_some() && !stream {
        return Err(invalid(Some("stream_options"), "The 'stream_options' parameter is only allowed when 'stream' is enabled."));
    }
    let include_usage = flag(options.and_then(|o| o.get("include_usage")), "stream_options.include_usage")?;
    let model = match deployment {
        Some(d) => d.to_string(),
        None => body.get("model").and_then(Value::as_str).unwrap_or("sim-chat").to_string(),
    };
    Ok(Gen { kind, model, prompt_tokens, choices: n.saturating_mul(prompts), tokens: max.min(knobs.tokens), max, stream, include_usage })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_tokens_follow_the_formula_and_stay_under_the_bound() {
        let msgs = json!([{"role": "system", "content": "abcde"}, {"role": "user", "content": [{"type": "text", "text": "abcd"}, {"type": "image_url"}]},
                          {"role": "assistant", "content": null}]);
        // 3 + (2 + 3) + (1 + 3) + (0 + 3)
        assert_eq!(chat_prompt_tokens(&msgs).unwrap(), 15);
        // The bound: UTF-8 bytes + 4 per message + 3, for every length.
        for len in 0..64 {
            let text = "é".repeat(len);
            let two = json!([{"role": "user", "content": text}, {"role": "user", "content": [{"text": text}]}]);
            assert!(chat_prompt_tokens(&two).unwrap() <= (4 * len as u64) + 2 * 4 + 3, "{len}");
            assert!(string_tokens(std::slice::from_ref(&text)) <= 2 * len as u64 + 4, "{len}");
        }
        assert_eq!(string_tokens(&["".into(), "héllo".into()]), 1 + 3);
        for bad in [json!(null), json!("hi"), json!([]), json!([{"content": "x"}]), json!([{"role": "user", "content": 5}])] {
            assert_eq!(chat_prompt_tokens(&bad).unwrap_err().status(), StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn max_tokens_bound_the_completion() {
        let k = Knobs { tokens: 16, delay_ms: 0, cut_after: None, status: None };
        let chat = |b: Value| parse_gen("chat", None, &b, &k);
        let m = json!([{"role": "user", "content": "hi"}]);
        let g = chat(json!({"messages": m, "max_tokens": 5, "n": 2})).unwrap();
        assert_eq!((g.tokens, g.max, g.choices, g.completion_tokens(), g.finish_reason()), (5, 5, 2, 10, "length"));
        let g = chat(json!({"messages": m, "max_tokens": 50, "max_completion_tokens": 40, "model": "x"})).unwrap();
        assert_eq!((g.tokens, g.max, g.finish_reason(), g.model.as_str()), (16, 40, "stop", "x"));
        for bad in [
            json!({"messages": m, "max_tokens": 0}),
            json!({"messages": m, "max_tokens": "5"}),
            json!({"messages": m, "max_tokens": 1.5}),
            json!({"messages": m, "n": 0}),
            json!({"messages": m, "stream_options": {"include_usage": true}}),
            json!([]),
        ] {
            assert_eq!(chat(bad.clone()).unwrap_err().status(), StatusCode::BAD_REQUEST, "{bad}");
        }
        let g = parse_gen("completions", Some("dep"), &json!({"prompt": ["a", "b"], "n": 3}), &k).unwrap();
        assert_eq!((g.choices, g.prompt_tokens, g.model.as_str()), (6, 4, "dep"));
    }
}
