//! The OpenAI-compatible LLM, deterministic (see `oai` for the token rules, `sse` for streams):
//! `POST /chat/completions`, `/completions`, `/embeddings` and `GET /models` (also under
//! `/v1`), the POSTs also in Azure OpenAI's form `/openai/deployments/{deployment}/…`; its API
//! key check; and the test endpoints `GET /sim/usage` and `POST /sim/usage/reset`.

use crate::hashing::murmur3_32;
use crate::key::{ct_eq, sha256};
use crate::oai::{invalid, invalid_key, oai_error, parse_gen, simulated, string_tokens, strings, Gen, Knobs, TOKEN};
use crate::request::{bearer_key, read_body};
use crate::sse::stream_response;
use crate::state::Shared;
use crate::tally::Call;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

/// The one model `GET /models` lists.
pub const MODEL: &str = "sim-chat";
/// The length of an embedding unless the body's `dimensions` asks for another (1..=4096).
pub const EMBEDDING_DIMS: u64 = 8;

/// The key as `Authorization: Bearer <key>` or as `api-key: <key>` (Azure OpenAI's), either on
/// any LLM route; compared by digest in constant time, never echoed.
pub async fn llm_auth(State(app): State<Shared>, req: Request, next: Next) -> Response {
    let h = req.headers();
    let given = h.get("authorization").and_then(|v| bearer_key(v.as_bytes())).or_else(|| h.get("api-key").map(|v| v.as_bytes()));
    if !given.filter(|k| !k.is_empty()).is_some_and(|k| ct_eq(&sha256(k), &app.key_digest)) {
        return invalid_key();
    }
    next.run(req).await
}

pub fn routes() -> Router<Shared> {
    let dep = "/openai/deployments/{deployment}";
    let mut r = Router::new();
    for prefix in ["", "/v1"] {
        r = r
            .route(&format!("{prefix}/chat/completions"), post(chat))
            .route(&format!("{prefix}/completions"), post(completions))
            .route(&format!("{prefix}/embeddings"), post(embeddings))
            .route(&format!("{prefix}/models"), get(models));
    }
    r.route(&format!("{dep}/chat/completions"), post(azure_chat))
        .route(&format!("{dep}/completions"), post(azure_completions))
        .route(&format!("{dep}/embeddings"), post(azure_embeddings))
        // mlgate's `azure-openai` preset keeps `models` under the deployment, as its other operations.
        .route(&format!("{dep}/models"), get(models))
}

/// The routes without a key: the tally of the LLM calls.
pub fn test_routes() -> Router<Shared> {
    Router::new().route("/sim/usage", get(usage)).route("/sim/usage/reset", post(reset))
}

async fn chat(State(app): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    generate(app, "chat", None, &headers, body).await
}
async fn completions(State(app): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    generate(app, "completions", None, &headers, body).await
}
async fn embeddings(State(app): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    embed(app, None, &headers, body).await
}
async fn azure_chat(State(app): State<Shared>, Path(d): Path<String>, headers: HeaderMap, body: Body) -> Response {
    generate(app, "chat", Some(&d), &headers, body).await
}
async fn azure_completions(State(app): State<Shared>, Path(d): Path<String>, headers: HeaderMap, body: Body) -> Response {
    generate(app, "completions", Some(&d), &headers, body).await
}
async fn azure_embeddings(State(app): State<Shared>, Path(d): Path<String>, headers: HeaderMap, body: Body) -> Response {
    embed(app, Some(&d), &headers, body).await
}

async fn models() -> Response {
    Json(json!({"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "azureml-sim"}]})).into_response()
}

async fn usage(State(app): State<Shared>) -> Response {
    Json(app.tally().to_json()).into_response()
}

async fn reset(State(app): State<Shared>) -> Response {
    app.tally().reset();
    Json(app.tally().to_json()).into_response()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

/// The knobs, `x-sim-status`, then the body read within `--max-body-bytes` and parsed.
async fn prelude(app: &Shared, headers: &HeaderMap, body: Body) -> Result<(Knobs, Value), Response> {
    let knobs = Knobs::from_headers(headers)?;
    if let Some(s) = knobs.status {
        return Err(simulated(s));
    }
    let bytes = read_body(headers, body, app.opts.max_body).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            let msg = format!("The request body is larger than {} bytes.", app.opts.max_body);
            oai_error(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", "request_too_large", None, &msg)
        } else {
            invalid(None, "The request body could not be read.")
        }
    })?;
    let v = serde_json::from_slice(&bytes).map_err(|e| invalid(None, &format!("The request body is not valid JSON: {e}")))?;
    Ok((knobs, v))
}

async fn generate(app: Shared, kind: &'static str, deployment: Option<&str>, headers: &HeaderMap, body: Body) -> Response {
    let (knobs, v) = match prelude(&app, headers, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let gen = match parse_gen(kind, deployment, &v, &knobs) {
        Ok(g) => g,
        Err(r) => return r,
    };
    let seq = app.next_completion.fetch_add(1, Ordering::Relaxed);
    let id = if kind == "chat" { format!("chatcmpl-sim-{seq}") } else { format!("cmpl-sim-{seq}") };
    if gen.stream {
        return stream_response(app, gen, knobs, id, now());
    }
    let call = Call { kind, prompt_tokens: gen.prompt_tokens, completion_tokens: gen.completion_tokens(), stream: false, cut: false };
    app.record(call);
    Json(completion_body(&gen, &id, now())).into_response()
}

/// A whole `chat.completion` or `text_completion`: every choice `N` tokens of `"tok "`.
pub fn completion_body(gen: &Gen, id: &str, created: u64) -> Value {
    let text = TOKEN.repeat(usize::try_from(gen.tokens).unwrap_or(0));
    let choices: Vec<Value> = (0..gen.choices)
        .map(|i| {
            if gen.kind == "chat" {
                json!({"index": i, "message": {"role": "assistant", "content": text}, "logprobs": null, "finish_reason": gen.finish_reason()})
            } else {
                json!({"index": i, "text": text, "logprobs": null, "finish_reason": gen.finish_reason()})
            }
        })
        .collect();
    let object = if gen.kind == "chat" { "chat.completion" } else { "text_completion" };
    let (p, c) = (gen.prompt_tokens, gen.completion_tokens());
    json!({"id": id, "object": object, "created": created, "model": gen.model, "system_fingerprint": "azureml-sim", "choices": choices,
           "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p.saturating_add(c)}})
}

/// A deterministic vector for `text`: component `i` is MurmurHash3(text, seed i) scaled to
/// [-1, 1], rounded to 6 decimals.
pub fn embedding(text: &str, dims: u64) -> Vec<f64> {
    (0..dims).map(|i| (f64::from(murmur3_32(text.as_bytes(), i as u32)) / f64::from(u32::MAX) * 2e6 - 1e6).round() / 1e6).collect()
}

async fn embed(app: Shared, deployment: Option<&str>, headers: &HeaderMap, body: Body) -> Response {
    let (_, v) = match prelude(&app, headers, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let inputs = match strings(v.get("input"), "input") {
        Ok(i) => i,
        Err(r) => return r,
    };
    let dims = match v.get("dimensions") {
        None | Some(Value::Null) => EMBEDDING_DIMS,
        Some(d) => match d.as_u64().filter(|n| (1..=4096).contains(n)) {
            Some(n) => n,
            None => return invalid(Some("dimensions"), "'dimensions' must be an integer in 1..=4096."),
        },
    };
    let model = deployment.map(str::to_string).or_else(|| v.get("model").and_then(Value::as_str).map(str::to_string));
    let prompt = string_tokens(&inputs);
    app.record(Call { kind: "embeddings", prompt_tokens: prompt, completion_tokens: 0, stream: false, cut: false });
    let data: Vec<Value> =
        inputs.iter().enumerate().map(|(i, s)| json!({"object": "embedding", "index": i, "embedding": embedding(s, dims)})).collect();
    Json(json!({"object": "list", "data": data, "model": model.as_deref().unwrap_or(MODEL),
                "usage": {"prompt_tokens": prompt, "total_tokens": prompt}}))
    .into_response()
}
