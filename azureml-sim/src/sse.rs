//! Streamed completions (`"stream": true`): `text/event-stream`, each event `data: {json}\n\n`
//! in a body frame of its own.
//!
//! One chunk per completion token (choices interleaved: token 1 of every choice, then token 2,
//! …), the first of each choice with `delta.role`, the last with its `finish_reason`; a choice of
//! no tokens gets one chunk of empty content with its `finish_reason`. Then, only with
//! `stream_options.include_usage`, a chunk with `"choices": []` and the `usage` (every other
//! chunk then carries `"usage": null`, as OpenAI's do), and `data: [DONE]`.
//!
//! `x-sim-chunk-delay-ms` pauses before each content chunk. `x-sim-cut-after: K` sends at most
//! K content chunks and then fails the body, so the HTTP/1.1 chunked response is aborted (no
//! last chunk): no usage chunk, no `[DONE]`. The tally records what was sent: when the stream
//! ends, when it is cut, or when the client goes away first.

use crate::oai::{Gen, Knobs, TOKEN};
use crate::state::Shared;
use crate::tally::Call;
use axum::body::{Body, Bytes};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::HeaderValue;
use axum::response::Response;
use serde_json::{json, Value};
use std::time::Duration;

/// The pause between the last chunk a cut stream sends and the abort.
const CUT_PAUSE: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Content,
    Usage,
    Done,
    End,
}

struct Stream {
    app: Shared,
    gen: Gen,
    knobs: Knobs,
    id: String,
    created: u64,
    /// The next content chunk, 0-based over `choices × max(N, 1)`.
    pos: u64,
    /// Completion tokens sent so far.
    sent: u64,
    phase: Phase,
    recorded: bool,
}

impl Stream {
    fn record(&mut self, cut: bool) {
        if !self.recorded {
            self.recorded = true;
            let call = Call { kind: self.gen.kind, prompt_tokens: self.gen.prompt_tokens, completion_tokens: self.sent, stream: true, cut };
            self.app.record(call);
        }
    }

    fn chunk(&self, choices: Value, usage: Option<Value>) -> Bytes {
        let object = if self.gen.kind == "chat" { "chat.completion.chunk" } else { "text_completion" };
        let mut v = json!({"id": self.id, "object": object, "created": self.created, "model": self.gen.model, "choices": choices});
        if self.gen.include_usage {
            if let Some(o) = v.as_object_mut() {
                o.insert("usage".into(), usage.unwrap_or(Value::Null));
            }
        }
        Bytes::from(format!("data: {v}\n\n"))
    }

    /// Content chunk `pos`: token `pos / choices` of choice `pos % choices`.
    fn content(&self, pos: u64) -> Bytes {
        let choices = self.gen.choices.max(1);
        let (i, c) = (pos / choices, pos % choices);
        let text = if self.gen.tokens == 0 { "" } else { TOKEN };
        let last = i + 1 >= self.gen.tokens.max(1);
        let finish = if last { json!(self.gen.finish_reason()) } else { Value::Null };
        let choice = if self.gen.kind == "chat" {
            let delta = if i == 0 { json!({"role": "assistant", "content": text}) } else { json!({"content": text}) };
            json!({"index": c, "delta": delta, "logprobs": null, "finish_reason": finish})
        } else {
            json!({"index": c, "text": text, "logprobs": null, "finish_reason": finish})
        };
        self.chunk(json!([choice]), None)
    }

    async fn next(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        loop {
            match self.phase {
                Phase::Content => {
                    let total = self.gen.choices.saturating_mul(self.gen.tokens.max(1));
                    let cut = self.knobs.cut_after.is_some_and(|k| self.sent >= k);
                    if cut || (self.pos >= total && self.knobs.cut_after.is_some()) {
                        self.record(true);
                        self.phase = Phase::End;
                        // Let hyper flush what was sent first: a body error ready at once drops the
                        // connection with the frames still in its write buffer.
                        tokio::time::sleep(CUT_PAUSE).await;
                        return Some(Err(std::io::Error::other("x-sim-cut-after: the stream is cut")));
                    }
                    if self.pos >= total {
                        self.phase = if self.gen.include_usage { Phase::Usage } else { Phase::Done };
                        continue;
                    }
                    if self.knobs.delay_ms > 0 {
                        tokio::time::sleep(Duration::from_millis(self.knobs.delay_ms)).await;
                    }
                    let frame = self.content(self.pos);
                    self.pos += 1;
                    if self.gen.tokens > 0 {
                        self.sent += 1;
                    }
                    return Some(Ok(frame));
                }
                Phase::Usage => {
                    self.phase = Phase::Done;
                    let (p, c) = (self.gen.prompt_tokens, self.sent);
                    let usage = json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p.saturating_add(c)});
                    return Some(Ok(self.chunk(json!([]), Some(usage))));
                }
                Phase::Done => {
                    // Recorded before `[DONE]` goes out, so a client that has read it finds the call
                    // in `GET /sim/usage`.
                    self.record(false);
                    self.phase = Phase::End;
                    return Some(Ok(Bytes::from_static(b"data: [DONE]\n\n")));
                }
                Phase::End => return None,
            }
        }
    }
}

impl Drop for Stream {
    /// A client gone before the end: its call counts what was sent, as cut.
    fn drop(&mut self) {
        self.record(true);
    }
}

async fn step(mut s: Stream) -> Option<(Result<Bytes, std::io::Error>, Stream)> {
    let item = s.next().await?;
    Some((item, s))
}

/// The `text/event-stream` response for a validated streaming request.
pub fn stream_response(app: Shared, gen: Gen, knobs: Knobs, id: String, created: u64) -> Response {
    let s = Stream { app, gen, knobs, id, created, pos: 0, sent: 0, phase: Phase::Content, recorded: false };
    let mut r = Response::new(Body::from_stream(futures_util::stream::unfold(s, step)));
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}
