//! Calls that carry tokens against the fake Envoy: the request held and judged with its body
//! (however Envoy hands it over), the rewritten body in place of the client's, the response
//! read for its usage (held whole when a consumed-tokens header must be added), and the
//! reservation settled at the end. The fake's body callbacks are here; Envoy's buffering (a
//! chunk a hook held moves from the received body to the buffered one) is `held()`.

use super::*;
use crate::abi::body::{BUFFERED_REQUEST_BODY, BUFFERED_RESPONSE_BODY, STOP_ITERATION_AND_BUFFER, STOP_ITERATION_NO_BUFFER};
use crate::abi::{RECEIVED_REQUEST_BODY, RECEIVED_RESPONSE_BODY};

// ---- the fake's body callbacks ------------------------------------------------------------------

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_get_body_chunks_size(_f: abi::FilterEnvoy, t: u32) -> usize {
    fake(|f| f.bodies[t as usize].len())
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_get_body_chunks(_f: abi::FilterEnvoy, t: u32, out: *mut Buffer) -> bool {
    fake(|f| {
        for (i, c) in f.bodies[t as usize].iter().enumerate() {
            unsafe { *out.add(i) = Buffer::of(c) };
        }
    });
    true
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_drain_body(_f: abi::FilterEnvoy, t: u32, n: usize) -> bool {
    fake(|f| {
        let body = &mut f.bodies[t as usize];
        // A buffered body is absent until something was buffered (Envoy answers false).
        if (t == BUFFERED_REQUEST_BODY || t == BUFFERED_RESPONSE_BODY) && body.is_empty() {
            return false;
        }
        let mut all: Vec<u8> = body.concat();
        all.drain(..n.min(all.len()));
        *body = if all.is_empty() { Vec::new() } else { vec![all] };
        true
    })
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_append_body(_f: abi::FilterEnvoy, t: u32, data: Buffer) -> bool {
    let d = unsafe { owned(data) };
    fake(|f| f.bodies[t as usize].push(d));
    true
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_received_buffered_request_body(_f: abi::FilterEnvoy) -> bool {
    fake(|f| f.same[0])
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_received_buffered_response_body(_f: abi::FilterEnvoy) -> bool {
    fake(|f| f.same[1])
}

// ---- helpers -------------------------------------------------------------------------------------

const CHAT: &[u8] = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

/// An OpenAI-compatible API; the product's token limit, and the settings given (with the
/// combined export on, which the tests read).
fn llm_config(sub: &str, settings: &str) -> String {
    format!(
        r#"{{{settings} "export_metadata": "combined", "apis": [{{"id": "llm", "name": "LLM", "path": "llm", "service_url": "http://backend.test/v1", "operations": "openai",
            "backend_credentials": [{{"workspace": "*", "service": "*", "api_key": "sk-backend"}}]}}],
          "products": [{{"id": "tok", "name": "Tok", "apis": ["llm"],
                         "token_limit": {{"tokens_per_minute": 200, "default_max_completion_tokens": 50, "tokens_consumed_header": "x-tokens-consumed"}}}}],
          "subscriptions": [{{"id": "{sub}", "product": "tok", "state": "active", "primary_key": "{sub}-key"}}]}}"#
    )
}

fn chat(key: &str, length: usize) -> Vec<(&'static str, String)> {
    vec![
        (":method", "POST".into()),
        (":scheme", "http".into()),
        (":authority", "gw.test".into()),
        (":path", "/llm/chat/completions".into()),
        ("ocp-apim-subscription-key", key.into()),
        ("authorization", "Bearer client".into()),
        ("content-type", "application/json".into()),
        ("content-length", length.to_string()),
        ("accept-encoding", "gzip".into()),
    ]
}

/// One request body hook with `chunk` received.
fn body_hook(st: *const c_void, chunk: &[u8], end: bool) -> u32 {
    fake(|f| f.bodies[RECEIVED_REQUEST_BODY as usize] = vec![chunk.to_vec()]);
    unsafe { envoy_dynamic_module_on_http_filter_request_body(FILTER, st, end) }
}

/// What Envoy does when a body hook returned StopIterationAndBuffer: the received chunk joins
/// the buffered body.
fn held(request: bool) {
    let (r, b) = if request { (RECEIVED_REQUEST_BODY, BUFFERED_REQUEST_BODY) } else { (RECEIVED_RESPONSE_BODY, BUFFERED_RESPONSE_BODY) };
    fake(|f| {
        let chunk = std::mem::take(&mut f.bodies[r as usize]);
        f.bodies[b as usize].extend(chunk);
    });
}

/// The body that goes upstream once the hook continued: the buffered body, then the received one.
fn upstream_body() -> Vec<u8> {
    fake(|f| [f.bodies[BUFFERED_REQUEST_BODY as usize].concat(), f.bodies[RECEIVED_REQUEST_BODY as usize].concat()].concat())
}

fn reply_of() -> Option<(u32, String)> {
    fake(|f| f.reply.as_ref().map(|(s, _, b, _)| (*s, String::from_utf8_lossy(b).into_owned())))
}

fn sum(suffix: &str) -> u64 {
    fake(|f| {
        f.metric_names
            .iter()
            .enumerate()
            .filter(|(_, (n, _))| n.ends_with(suffix))
            .map(|(i, _)| f.metrics.get(&i).copied().unwrap_or(0))
            .sum()
    })
}

fn response_header(name: &str) -> Vec<String> {
    fake(|f| f.response.iter().filter(|(k, _)| k == name.as_bytes()).map(|(_, v)| String::from_utf8_lossy(v).into_owned()).collect())
}

/// A JSON response with `usage` (total 20), held whole and given the consumed-tokens header.
fn json_response(st: *const c_void) {
    fake(|f| f.response = vec![(b":status".to_vec(), b"200".to_vec()), (b"content-type".to_vec(), b"application/json".to_vec())]);
    assert_eq!(unsafe { envoy_dynamic_module_on_http_filter_response_headers(FILTER, st, false) }, abi::STOP_ITERATION, "held");
    let body =
        br#"{"id":"c","choices":[{"message":{"content":"hello"}}],"usage":{"prompt_tokens":12,"completion_tokens":8,"total_tokens":20}}"#;
    let (a, b) = body.split_at(40);
    fake(|f| f.bodies[RECEIVED_RESPONSE_BODY as usize] = vec![a.to_vec()]);
    assert_eq!(unsafe { envoy_dynamic_module_on_http_filter_response_body(FILTER, st, false) }, STOP_ITERATION_AND_BUFFER);
    held(false);
    assert!(response_header("x-tokens-consumed").is_empty(), "not before the usage is read");
    fake(|f| f.bodies[RECEIVED_RESPONSE_BODY as usize] = vec![b.to_vec()]);
    assert_eq!(unsafe { envoy_dynamic_module_on_http_filter_response_body(FILTER, st, true) }, abi::CONTINUE);
    assert_eq!(response_header("x-tokens-consumed"), ["20"]);
}

// ---- tests -------------------------------------------------------------------------------------

#[test]
fn a_token_call_is_held_judged_with_its_body_rewritten_metered_and_settled() {
    let cfg = config_new("mlgate", &llm_config("tok1", ""));
    assert!(!cfg.is_null());
    // 1. Held: the headers wait for the body, which is held chunk by chunk.
    let (st, status) = run_request(&chat("tok1-key", CHAT.len()), cfg);
    assert_eq!(status, abi::STOP_ITERATION);
    assert_eq!(header("authorization"), ["Bearer client"], "nothing rewritten yet");
    let (a, b) = CHAT.split_at(20);
    assert_eq!(body_hook(st, a, false), STOP_ITERATION_AND_BUFFER);
    held(true);
    // 2. Whole: judged with buffered + received, forwarded with the bound added.
    assert_eq!(body_hook(st, b, true), abi::CONTINUE);
    assert_eq!(reply_of(), None);
    let sent = String::from_utf8(upstream_body()).unwrap();
    assert!(sent.contains(r#""max_tokens":50"#) && sent.contains(r#""content":"hi""#), "{sent}");
    assert!(fake(|f| f.bodies[BUFFERED_REQUEST_BODY as usize].is_empty()), "the client's body is gone");
    assert_eq!(header("authorization"), ["Bearer sk-backend"]);
    assert_eq!(header("content-length"), Vec::<String>::new(), "Envoy frames the new body");
    assert_eq!(header("accept-encoding"), Vec::<String>::new());
    assert_eq!(header(":path"), ["/v1/chat/completions"]);
    assert_eq!(fake(|f| f.route_cleared), 1);
    assert!(fake(|f| f.filter_state.contains_key(b"wasm.mlgate".as_slice())));
    // 3. The response: held whole, the consumed header added; then settled to 20 tokens.
    json_response(st);
    unsafe { envoy_dynamic_module_on_http_filter_stream_complete(FILTER, st) };
    unsafe { envoy_dynamic_module_on_http_filter_destroy(st) };
    assert_eq!(sum("mlgate_request_bytes"), CHAT.len() as u64, "the client's body, counted once");
    assert_eq!(sum("mlgate_prompt_tokens"), 12);
    assert_eq!(sum("mlgate_completion_tokens"), 8);

    // Reserved 50 + 57 (the prompt bound), settled to 20: a second call fits in 200 a minute.
    let (st, status) = run_request(&chat("tok1-key", CHAT.len()), cfg);
    assert_eq!(status, abi::STOP_ITERATION);
    assert_eq!(body_hook(st, CHAT, true), abi::CONTINUE, "{:?}", reply_of());
    // No usage reported: the reservation (107) stays whole.
    unsafe { envoy_dynamic_module_on_http_filter_stream_complete(FILTER, st) };
    unsafe { envoy_dynamic_module_on_http_filter_destroy(st) };
    // 20 + 107 + 107 > 200.
    let (st, _) = run_request(&chat("tok1-key", CHAT.len()), cfg);
    assert_eq!(body_hook(st, CHAT, true), STOP_ITERATION_NO_BUFFER);
    let (code, body) = reply_of().unwrap();
    assert_eq!(code, 429);
    assert!(body.contains("Token limit is exceeded. Try again in "), "{body}");
    assert_eq!(metric("mlgate.token_rate_limited"), 1);
    unsafe { envoy_dynamic_module_on_http_filter_destroy(st) };
    unsafe { envoy_dynamic_module_on_http_filter_config_destroy(cfg) };
}

#[test]
fn a_body_past_the_limit_is_refused_without_holding_more() {
    let cfg = config_new("mlgate", &llm_config("tok2", r#""max_request_body_bytes": 100,"#));
    assert!(!cfg.is_null());
    let (st, _) = run_request(&chat("tok2-key", 130), cfg);
    assert_eq!(body_hook(st, &[b' '; 60], false), STOP_ITERATION_AND_BUFFER);
    held(true);
    assert_eq!(body_hook(st, &[b' '; 60], false), STOP_ITERATION_NO_BUFFER, "120 > 100: judged before the end");
    let (code, body) = reply_of().unwrap();
    assert_eq!((code, body.as_str()), (413, r#"{ "statusCode": 413, "message": "The request body is larger than 100 bytes." }"#));
    assert_eq!(metric("mlgate.bad_request_body"), 1);
    // Whatever else comes is not judged again.
    assert_eq!(body_hook(st, b"x", true), abi::CONTINUE);
    unsafe { envoy_dynamic_module_on_http_filter_destroy(st) };
    unsafe { envoy_dynamic_module_on_http_filter_config_destroy(cfg) };
}

#[test]
fn a_request_without_a_body_is_judged_as_empty_at_once() {
    let cfg = config_new("mlgate", &llm_config("tok3", ""));
    let hs = chat("tok3-key", 0);
    let pairs: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    request(&pairs);
    let st = unsafe { envoy_dynamic_module_on_http_filter_new(cfg, FILTER) };
    assert_eq!(unsafe { envoy_dynamic_module_on_http_filter_request_headers(FILTER, st, true) }, abi::STOP_ITERATION);
    assert_eq!(reply_of().map(|r| r.0), Some(400), "an empty body cannot be bounded");
    unsafe { envoy_dynamic_module_on_http_filter_destroy(st) };
    unsafe { envoy_dynamic_module_on_http_filter_config_destroy(cfg) };
}

#[test]
fn trailers_end_a_held_body_and_it_is_judged_there() {
    let cfg = config_new("mlgate", &llm_config("tok4", ""));
    let (st, _) = run_request(&chat("tok4-key", CHAT.len()), cfg);
    assert_eq!(body_hook(st, CHAT, false), STOP_ITERATION_AND_BUFFER);
    held(true);
    // Envoy would continue a held request whose trailers hook says Continue: it is judged first.
    assert_eq!(unsafe { envoy_dynamic_module_on_http_filter_request_trailers(FILTER, st) }, abi::CONTINUE);
    assert_eq!(reply_of(), None);
    let sent = String::from_utf8(fake(|f| f.bodies[BUFFERED_REQUEST_BODY as usize].concat())).unwrap();
    assert!(sent.contains(r#""max_tokens":50"#), "{sent}");
    assert_eq!(header("authorization"), ["Bearer sk-backend"]);
    unsafe { envoy_dynamic_module_on_http_filter_destroy(st) };
    unsafe { envoy_dynamic_module_on_http_filter_config_destroy(cfg) };
}

#[test]
fn a_body_an_earlier_filter_buffered_is_read_once() {
    let cfg = config_new("mlgate", &llm_config("tok5", ""));
    let (st, _) = run_request(&chat("tok5-key", CHAT.len()), cfg);
    // The received chunk is the buffered body itself: read twice it would be no JSON (400).
    fake(|f| {
        f.same[0] = true;
        f.bodies[BUFFERED_REQUEST_BODY as usize] = vec![CHAT.to_vec()];
    });
    assert_eq!(body_hook(st, CHAT, true), abi::CONTINUE, "{:?}", reply_of());
    let sent = String::from_utf8(fake(|f| f.bodies[RECEIVED_REQUEST_BODY as usize].concat())).unwrap();
    assert!(sent.contains(r#""max_tokens":50"#), "{sent}");
    unsafe { envoy_dynamic_module_on_http_filter_destroy(st) };
    unsafe { envoy_dynamic_module_on_http_filter_config_destroy(cfg) };
}

#[test]
fn a_streamed_response_is_metered_as_it_passes() {
    let cfg = config_new("mlgate", &llm_config("tok6", ""));
    let (st, _) = run_request(&chat("tok6-key", CHAT.len()), cfg);
    assert_eq!(body_hook(st, CHAT, true), abi::CONTINUE);
    fake(|f| f.response = vec![(b":status".to_vec(), b"200".to_vec()), (b"content-type".to_vec(), b"text/event-stream".to_vec())]);
    assert_eq!(unsafe { envoy_dynamic_module_on_http_filter_response_headers(FILTER, st, false) }, abi::CONTINUE, "never held");
    let events = [
        &b"data: {\"choices\":[{\"delta\":{\"content\":\"he\"}}]}\n\n"[..],
        b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"comp",
        b"letion_tokens\":3,\"total_tokens\":10}}\n\ndata: [DONE]\n\n",
    ];
    for (i, e) in events.iter().enumerate() {
        fake(|f| f.bodies[RECEIVED_RESPONSE_BODY as usize] = vec![e.to_vec()]);
        assert_eq!(unsafe { envoy_dynamic_module_on_http_filter_response_body(FILTER, st, i == 2) }, abi::CONTINUE);
    }
    assert!(response_header("x-tokens-consumed").is_empty(), "a stream's headers went before its usage");
    unsafe { envoy_dynamic_module_on_http_filter_stream_complete(FILTER, st) };
    unsafe { envoy_dynamic_module_on_http_filter_destroy(st) };
    assert_eq!(sum("mlgate_prompt_tokens"), 7);
    assert_eq!(sum("mlgate_completion_tokens"), 3);
    let bytes: usize = events.iter().map(|e| e.len()).sum();
    assert_eq!(sum("mlgate_response_bytes"), bytes as u64);
    unsafe { envoy_dynamic_module_on_http_filter_config_destroy(cfg) };
}
