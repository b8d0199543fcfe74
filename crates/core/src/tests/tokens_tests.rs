//! The token pieces on their own: the JSON lexer, the request bound and rewrite, the response
//! meter, and the calendar helpers.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use crate::model::{QuotaPeriod, TokenOp};
use crate::time::{calendar_period, parse_rfc3339_ms, wait_words};
use crate::tokens::lexer::{Event, Lexer, MAX_DEPTH};
use crate::tokens::{inspect, Meter, TokenUsage, MEDIA_PART_TOKENS};
use serde_json::Value;

fn lex(s: &[u8]) -> Result<usize, ()> {
    let mut l = Lexer::new();
    let mut n = 0;
    l.feed(s, &mut |_| n += 1).map_err(|_| ())?;
    l.finish(&mut |_| n += 1).map_err(|_| ())?;
    Ok(n)
}

#[test]
fn the_lexer_takes_json_and_refuses_everything_else() {
    for ok in [&b"{}"[..], b"[]", b" {\"a\": [1, -2.5e3, true, false, null, \"x\\u00e9\\n\"], \"b\": {}} ", b"0", b"\"s\"", b"[[],[{}]]"] {
        assert!(lex(ok).is_ok(), "{}", String::from_utf8_lossy(ok));
    }
    for bad in [
        &b""[..],
        b"{",
        b"{\"a\"}",
        b"{\"a\":}",
        b"[1,]",
        b"[,1]",
        b"{\"a\":1,}",
        b"{} {}",
        b"01",
        b"-",
        b"1.",
        b"1e",
        b"tru",
        b"nul",
        b"\"\x01\"",
        b"\"\\x\"",
        b"\"\\u12g4\"",
        b"{1:2}",
        b"[}",
        b"\xff",
    ] {
        assert!(lex(bad).is_err(), "{}", String::from_utf8_lossy(bad));
    }
    let deep = |n: u32| format!("{}{}", "[".repeat(n as usize), "]".repeat(n as usize));
    assert!(lex(deep(MAX_DEPTH).as_bytes()).is_ok());
    assert!(lex(deep(MAX_DEPTH + 1).as_bytes()).is_err());
    // Deep nesting past the limit fails at once, without recursion or growth.
    assert!(lex(deep(100_000).as_bytes()).is_err());
}

#[test]
fn the_lexer_decodes_keys_and_reports_value_spans() {
    let body = br#"{"max\u005ftokens" : 42, "x": "long string past the kept text"}"#;
    let mut seen = Vec::new();
    let mut l = Lexer::new();
    l.feed(body, &mut |ev| {
        if let Event::Scalar { depth: 1, key: Some(k), text, start, end, .. } = ev {
            seen.push((k.exact().map(<[u8]>::to_vec), text.exact().map(<[u8]>::to_vec), start, end));
        }
    })
    .unwrap();
    assert_eq!(seen[0].0.as_deref(), Some(&b"max_tokens"[..]));
    assert_eq!(seen[0].1.as_deref(), Some(&b"42"[..]));
    assert_eq!(&body[seen[0].2..seen[0].3], b"42");
    assert_eq!(seen[1].1, None, "a long value is cut, never compared");
    assert_eq!(&body[seen[1].2..seen[1].3], br#""long string past the kept text""#);
}

fn json(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap()
}

#[test]
fn a_request_is_bounded_by_its_bytes_and_its_completion_limit() {
    let body = br#"{"model":"m","messages":[{"role":"user","content":"hello"}],"max_tokens":50,"n":2}"#;
    let t = inspect(TokenOp::Chat, body, Some(100)).unwrap();
    assert_eq!((t.prompt_bound, t.completion_bound, t.stream, t.body), (body.len() as u64, 100, false, None));
    // Both fields: the larger bounds the call, whichever the backend reads.
    let t = inspect(TokenOp::Chat, br#"{"messages":[],"max_tokens":5,"max_completion_tokens":9}"#, Some(100)).unwrap();
    assert_eq!(t.completion_bound, 9);
    // Media parts are not text: each adds its own bound.
    let img = br#"{"messages":[{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}],"max_tokens":1}"#;
    assert_eq!(inspect(TokenOp::Chat, img, Some(1)).unwrap().prompt_bound, img.len() as u64 + MEDIA_PART_TOKENS);
    // Embeddings have no completion.
    let e = inspect(TokenOp::Embeddings, br#"{"input":["a","b"]}"#, Some(7)).unwrap();
    assert_eq!((e.completion_bound, e.body), (0, None));
}

#[test]
fn a_missing_completion_bound_is_written_into_the_forwarded_body() {
    let t = inspect(TokenOp::Chat, br#"{"messages":[{"role":"user","content":"x"}]}"#, Some(64)).unwrap();
    assert_eq!(t.completion_bound, 64);
    let v = json(&t.body.unwrap());
    assert_eq!(v["max_tokens"], 64);
    assert_eq!(v["messages"][0]["content"], "x");
    // `null` is replaced in place, an empty object gets the field alone.
    let v = json(&inspect(TokenOp::Completions, br#"{ "prompt": "p", "max_tokens": null }"#, Some(3)).unwrap().body.unwrap());
    assert_eq!((v["max_tokens"].as_u64(), v["prompt"].as_str()), (Some(3), Some("p")));
    let v = json(&inspect(TokenOp::Completions, b"{}", Some(3)).unwrap().body.unwrap());
    assert_eq!(v, serde_json::json!({"max_tokens": 3}));
    // With no token limit the body goes as it is: the call is only metered.
    let t = inspect(TokenOp::Chat, br#"{"messages":[]}"#, None).unwrap();
    assert_eq!((t.completion_bound, t.body), (0, None));
}

#[test]
fn a_stream_is_forwarded_asking_for_its_usage() {
    let t = inspect(TokenOp::Chat, br#"{"messages":[],"stream":true,"max_tokens":5}"#, Some(9)).unwrap();
    assert!(t.stream);
    assert_eq!(json(&t.body.unwrap())["stream_options"], serde_json::json!({"include_usage": true}));
    let t = inspect(TokenOp::Chat, br#"{"stream":true,"stream_options":{"include_usage":false},"max_tokens":5}"#, Some(9)).unwrap();
    let v = json(&t.body.unwrap());
    assert_eq!((v["stream_options"]["include_usage"].as_bool(), v["max_tokens"].as_u64()), (Some(true), Some(5)));
    // Already asked for: nothing to change.
    let t = inspect(TokenOp::Chat, br#"{"stream":true,"stream_options":{"include_usage":true},"max_tokens":5}"#, Some(9)).unwrap();
    assert_eq!(t.body, None);
}

#[test]
fn bodies_that_cannot_be_bounded_are_refused() {
    let cases: [&[u8]; 13] = [
        b"not json",
        b"[1]",
        br#"{"max_tokens":-1}"#,
        br#"{"max_tokens":1.5}"#,
        br#"{"max_tokens":"10"}"#,
        br#"{"max_tokens":1e3}"#,
        br#"{"max_tokens":99999999999999999999999}"#,
        br#"{"max_tokens":1,"max_tokens":100000}"#,
        br#"{"max\u005ftokens":1,"max_tokens":100000}"#,
        br#"{"n":1000,"max_tokens":1}"#,
        br#"{"stream":"yes","max_tokens":1}"#,
        br#"{"stream":true,"stream_options":[],"max_tokens":1}"#,
        br#"{"max_tokens":1} trailing"#,
    ];
    for body in cases {
        let r = inspect(TokenOp::Chat, body, Some(10)).expect_err(&String::from_utf8_lossy(body));
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(body));
        assert!(r.body.starts_with("{ \"statusCode\": 400, \"message\": "), "{}", r.body);
    }
}

fn feed_bytewise(m: &mut Meter, s: &[u8]) {
    for b in s {
        m.feed(std::slice::from_ref(b));
    }
}

#[test]
fn the_meter_reads_usage_from_a_json_response_in_any_chunking() {
    let body = br#"{"id":"c","choices":[{"message":{"content":"{\"usage\":1}"}}],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}"#;
    let want = Some(TokenUsage { prompt: 12, completion: 5, total: 17 });
    let mut whole = Meter::new(false);
    whole.feed(body);
    assert_eq!(whole.usage(), want);
    let mut bytewise = Meter::new(false);
    feed_bytewise(&mut bytewise, body);
    assert_eq!(bytewise.usage(), want);
    // A nested `usage` (not the response's own) does not count; neither does garbage.
    let mut m = Meter::new(false);
    m.feed(br#"{"data":{"usage":{"prompt_tokens":99}}}"#);
    assert_eq!(m.usage(), None);
    let mut m = Meter::new(false);
    m.feed(b"<html>upstream error</html>");
    assert_eq!(m.usage(), None);
    // Embeddings report no completion.
    let mut m = Meter::new(false);
    m.feed(br#"{"data":[],"usage":{"prompt_tokens":4,"total_tokens":4}}"#);
    assert_eq!(m.usage(), Some(TokenUsage { prompt: 4, completion: 0, total: 4 }));
}

const STREAM: &[u8] = b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n\
: keep-alive\n\n\
data: {\"choices\":[{\"delta\":{\"content\":\"b\"},\"finish_reason\":\"length\"}],\"usage\":null}\r\n\r\n\
data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2,\"total_tokens\":9}}\n\n\
data: [DONE]\n\n";

#[test]
fn the_meter_reads_the_usage_event_of_a_stream() {
    let want = Some(TokenUsage { prompt: 7, completion: 2, total: 9 });
    let mut m = Meter::new(true);
    m.feed(STREAM);
    assert_eq!(m.usage(), want);
    let mut m = Meter::new(true);
    feed_bytewise(&mut m, STREAM);
    assert_eq!(m.usage(), want);
    // Cut before the usage event ended: nothing reported (the reservation stays charged).
    let cut = STREAM.len() - 30;
    let mut m = Meter::new(true);
    m.feed(&STREAM[..cut]);
    assert_eq!(m.usage(), None);
    // A stream without a usage event.
    let mut m = Meter::new(true);
    m.feed(&STREAM[..60]);
    m.feed(b"\n\ndata: [DONE]\n\n");
    assert_eq!(m.usage(), None);
}

#[test]
fn quota_periods_are_utc_calendar_units() {
    let t = parse_rfc3339_ms("2026-03-18T15:42:07Z").unwrap();
    let at = |s: &str| parse_rfc3339_ms(s).unwrap();
    assert_eq!(calendar_period(t, QuotaPeriod::Hourly), (at("2026-03-18T15:00:00Z"), at("2026-03-18T16:00:00Z")));
    assert_eq!(calendar_period(t, QuotaPeriod::Daily), (at("2026-03-18T00:00:00Z"), at("2026-03-19T00:00:00Z")));
    // 2026-03-18 is a Wednesday: its ISO week began on Monday the 16th.
    assert_eq!(calendar_period(t, QuotaPeriod::Weekly), (at("2026-03-16T00:00:00Z"), at("2026-03-23T00:00:00Z")));
    assert_eq!(calendar_period(t, QuotaPeriod::Monthly), (at("2026-03-01T00:00:00Z"), at("2026-04-01T00:00:00Z")));
    assert_eq!(calendar_period(at("2026-12-31T23:59:59Z"), QuotaPeriod::Monthly).1, at("2027-01-01T00:00:00Z"));
    assert_eq!(calendar_period(t, QuotaPeriod::Yearly), (at("2026-01-01T00:00:00Z"), at("2027-01-01T00:00:00Z")));
    // Before the epoch's first Monday: the week starts at 0, never before.
    assert_eq!(calendar_period(0, QuotaPeriod::Weekly).0, 0);
}

#[test]
fn waits_are_worded_as_apim_words_them() {
    assert_eq!(wait_words(41), "41 seconds");
    assert_eq!(wait_words(1), "1 second");
    assert_eq!(wait_words(21 * 60 + 33), "21 minutes and 33 seconds");
    assert_eq!(wait_words(3 * 3600 + 120 + 1), "3 hours, 2 minutes and 1 second");
    assert_eq!(wait_words(24 * 86_400 + 14 * 3600), "24 days, 14 hours, 0 minutes and 0 seconds");
}

#[test]
fn a_metered_response_costs_a_few_hundred_bytes_whatever_its_size() {
    // The README's "about 200 bytes of meter state" per in-flight call (the meter has no
    // heap part: no field of it grows with the body).
    let size = std::mem::size_of::<Meter>();
    assert!(size <= 256, "Meter is {size} bytes");
}
