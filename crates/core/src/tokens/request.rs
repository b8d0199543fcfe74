//! The request side of a token-metered call: an upper bound of its tokens from the body, and
//! the body to forward when the bound needs a field the client left out.
//!
//! **The bound.** Prompt tokens: every BPE token (byte-level, or SentencePiece with byte
//! fallback) covers at least one byte of the text, and the text sits inside the body's JSON
//! strings, whose escaped form is never shorter than the text. So the body's length in bytes
//! bounds the tokens of its text, and the JSON around each message (at least
//! `{"role":"user","content":""}`, 28 bytes) covers the chat template's few tokens per
//! message. Media parts (`image_url`, `input_audio`, `file`, …) are not text: each adds
//! [`MEDIA_PART_TOKENS`]. Completion tokens: `max_tokens` / `max_completion_tokens` (the larger
//! when both are given), times `n` (and `best_of` for completions); when neither is given, the
//! operator's `default_max_completion_tokens`, written into the forwarded body as
//! `max_tokens` so the backend cannot exceed it. Embeddings have no completion.
//!
//! **Streams.** A `"stream": true` call is forwarded with `stream_options.include_usage` set,
//! so the backend's last event carries the call's usage.

use super::lexer::{integer, Event, Kind, Lexer, Text};
use crate::model::TokenOp;
use crate::reply::Reply;

/// What one media part (image, audio, file) adds to the prompt bound. GPT-4o-class tile
/// counting charges at most 1,445 tokens for an image at its largest size (8 tiles × 170 + 85).
pub const MEDIA_PART_TOKENS: u64 = 2_000;
/// The largest completion bound a request may ask for (per choice).
pub const MAX_COMPLETION_TOKENS: u64 = 1 << 24;
/// The most choices (`n`, `best_of`) one request may ask for.
pub const MAX_CHOICES: u64 = 128;

const MEDIA_TYPES: [&[u8]; 8] = [b"image_url", b"image", b"input_image", b"input_audio", b"audio", b"file", b"input_file", b"video_url"];

/// The token bound of a request, and the body to forward instead of the client's, if any.
#[derive(Debug, PartialEq, Eq)]
pub struct TokenRequest {
    pub prompt_bound: u64,
    pub completion_bound: u64,
    pub stream: bool,
    pub body: Option<Vec<u8>>,
}

/// 400 for a body mlgate cannot bound.
pub fn bad_body(message: &str) -> Reply {
    Reply::json(400, message)
}

/// A top-level member we read: where its value is, and what it was.
#[derive(Default, Clone, Copy)]
struct Member {
    seen: bool,
    start: usize,
    end: usize,
    kind: Option<Kind>,
    value: Option<u64>,
    object: bool,
}

const MAX_TOKENS: usize = 0;
const MAX_COMPLETION: usize = 1;
const N: usize = 2;
const BEST_OF: usize = 3;
const STREAM: usize = 4;
const STREAM_OPTIONS: usize = 5;
const NAMES: [&[u8]; 6] = [b"max_tokens", b"max_completion_tokens", b"n", b"best_of", b"stream", b"stream_options"];

#[derive(Default)]
struct Seen {
    top_object: bool,
    members: usize,
    fields: [Member; 6],
    duplicate: Option<usize>,
    media: u64,
    /// Inside `stream_options`, and whether it asks for usage.
    in_options: bool,
    include_usage: bool,
}

impl Seen {
    fn member(&mut self, key: Option<&Text>) -> Option<&mut Member> {
        let i = NAMES.iter().position(|n| key.is_some_and(|k| k.is(n)))?;
        let m = self.fields.get_mut(i)?;
        if m.seen {
            self.duplicate = Some(i);
            return None;
        }
        m.seen = true;
        Some(m)
    }

    fn on(&mut self, ev: Event<'_>) {
        match ev {
            Event::Open { depth: 0, object, .. } => self.top_object = object,
            Event::Open { depth: 1, key, object, start } => {
                self.members += 1;
                let options = key.is_some_and(|k| k.is(b"stream_options"));
                if let Some(m) = self.member(key) {
                    *m = Member { seen: true, start, end: start, kind: None, value: None, object };
                }
                self.in_options = options && object;
            }
            Event::Close { depth: 2, end } if self.in_options => {
                self.in_options = false;
                if let Some(m) = self.fields.get_mut(STREAM_OPTIONS) {
                    m.end = end;
                }
            }
            Event::Scalar { depth: 1, key, kind, text, start, end } => {
                self.members += 1;
                if let Some(m) = self.member(key) {
                    *m = Member { seen: true, start, end, kind: Some(kind), value: integer(kind, text), object: false };
                }
            }
            Event::Scalar { depth, key, kind, text, .. } => {
                if depth == 2 && self.in_options && key.is_some_and(|k| k.is(b"include_usage")) {
                    self.include_usage = kind == Kind::True;
                }
                if kind == Kind::Str && key.is_some_and(|k| k.is(b"type")) && MEDIA_TYPES.iter().any(|t| text.is(t)) {
                    self.media += 1;
                }
            }
            _ => {}
        }
    }
}

/// Reads a request body of a token-metered operation. `default_max`: the operator's
/// `default_max_completion_tokens` when a token limit applies (`None`: no limit applies, so
/// the call is only metered, and a body without a completion bound is forwarded as it is).
pub fn inspect(op: TokenOp, body: &[u8], default_max: Option<u64>) -> Result<TokenRequest, Reply> {
    let mut seen = Seen::default();
    let mut lex = Lexer::new();
    let parsed = lex.feed(body, &mut |ev| seen.on(ev)).and_then(|()| lex.finish(&mut |ev| seen.on(ev)));
    if parsed.is_err() {
        return Err(bad_body("The request body is not valid JSON (or nests deeper than 64 levels)."));
    }
    if !seen.top_object {
        return Err(bad_body("The request body must be a JSON object."));
    }
    if let Some(i) = seen.duplicate {
        let name = NAMES.get(i).and_then(|n| std::str::from_utf8(n).ok()).unwrap_or("field");
        return Err(bad_body(&format!("The request body gives '{name}' more than once.")));
    }
    let f = seen.fields;
    let get = |i: usize| f.get(i).copied().unwrap_or_default();
    let prompt_bound = (body.len() as u64).saturating_add(seen.media.saturating_mul(MEDIA_PART_TOKENS));
    if op == TokenOp::Embeddings {
        return Ok(TokenRequest { prompt_bound, completion_bound: 0, stream: false, body: None });
    }

    // A count field: absent or null, else a non-negative integer within `max`.
    let count = |i: usize, max: u64, name: &str| -> Result<Option<u64>, Reply> {
        let m = get(i);
        match (m.seen, m.kind, m.value) {
            (false, ..) | (true, Some(Kind::Null), _) => Ok(None),
            (true, Some(Kind::Num), Some(v)) if v <= max => Ok(Some(v)),
            _ => Err(bad_body(&format!("'{name}' must be an integer from 0 to {max}."))),
        }
    };
    let max_tokens = count(MAX_TOKENS, MAX_COMPLETION_TOKENS, "max_tokens")?;
    let max_completion = count(MAX_COMPLETION, MAX_COMPLETION_TOKENS, "max_completion_tokens")?;
    let choices = count(N, MAX_CHOICES, "n")?.unwrap_or(1).max(count(BEST_OF, MAX_CHOICES, "best_of")?.unwrap_or(1)).max(1);
    let stream = match get(STREAM) {
        m if !m.seen || m.kind == Some(Kind::Null) || m.kind == Some(Kind::False) => false,
        m if m.kind == Some(Kind::True) => true,
        _ => return Err(bad_body("'stream' must be true or false.")),
    };
    let options = get(STREAM_OPTIONS);
    if options.seen && !options.object && options.kind != Some(Kind::Null) {
        return Err(bad_body("'stream_options' must be an object."));
    }

    let mut inserts: Vec<String> = Vec::new();
    let mut replaces: Vec<(usize, usize, String)> = Vec::new();
    let per_choice = match (max_tokens.max(max_completion), default_max) {
        (Some(n), _) => n,
        (None, None) => 0,
        (None, Some(d)) => {
            // A `null` is replaced in place; an absent field is added.
            let m = get(MAX_TOKENS);
            if m.seen {
                replaces.push((m.start, m.end, d.to_string()));
            } else {
                inserts.push(format!("\"max_tokens\":{d}"));
            }
            d
        }
    };
    if stream && !seen.include_usage {
        const USAGE: &str = "{\"include_usage\":true}";
        if options.seen {
            replaces.push((options.start, options.end, USAGE.to_string()));
        } else {
            inserts.push(format!("\"stream_options\":{USAGE}"));
        }
    }
    let body = (!inserts.is_empty() || !replaces.is_empty()).then(|| rewrite(body, &inserts, seen.members > 0, &mut replaces));
    Ok(TokenRequest { prompt_bound, completion_bound: per_choice.saturating_mul(choices), stream, body })
}

/// The body with `inserts` added as the first members of the top object and `replaces` (value
/// spans) substituted.
fn rewrite(body: &[u8], inserts: &[String], had_members: bool, replaces: &mut [(usize, usize, String)]) -> Vec<u8> {
    let extra: usize = inserts.iter().map(|s| s.len() + 1).sum::<usize>() + replaces.iter().map(|r| r.2.len()).sum::<usize>();
    let mut out = Vec::with_capacity(body.len() + extra);
    let open = body.iter().position(|&b| b == b'{').unwrap_or(0);
    out.extend_from_slice(body.get(..=open).unwrap_or_default());
    let mut at = open + 1;
    if !inserts.is_empty() {
        out.extend_from_slice(inserts.join(",").as_bytes());
        if had_members {
            out.push(b',');
        }
    }
    replaces.sort_by_key(|r| r.0);
    for (start, end, with) in replaces.iter() {
        out.extend_from_slice(body.get(at..*start).unwrap_or_default());
        out.extend_from_slice(with.as_bytes());
        at = *end;
    }
    out.extend_from_slice(body.get(at..).unwrap_or_default());
    out
}
