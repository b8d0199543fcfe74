//! The response side of a token-metered call: the backend's `usage`, read from the response
//! as it passes, chunk by chunk, without holding the body. A JSON response's top-level
//! `usage` object, or for `text/event-stream` the `usage` of the last event that has one (the
//! final chunk `stream_options.include_usage` asks for). State: one lexer and a few numbers.

use super::lexer::{integer, Event, Lexer};

/// What the backend reported for a call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    pub prompt: u64,
    pub completion: u64,
    pub total: u64,
}

#[derive(Debug, Default)]
struct Reading {
    in_usage: bool,
    prompt: Option<u64>,
    completion: Option<u64>,
    total: Option<u64>,
    /// A complete `usage` object was read (kept as the call's, the last one wins).
    found: Option<TokenUsage>,
}

impl Reading {
    fn on(&mut self, ev: Event<'_>) {
        match ev {
            Event::Open { depth: 1, key, object: true, .. } if key.is_some_and(|k| k.is(b"usage")) => {
                self.in_usage = true;
                (self.prompt, self.completion, self.total) = (None, None, None);
            }
            Event::Scalar { depth: 2, key: Some(k), kind, text, .. } if self.in_usage => {
                let v = integer(kind, text);
                if k.is(b"prompt_tokens") {
                    self.prompt = v;
                } else if k.is(b"completion_tokens") {
                    self.completion = v;
                } else if k.is(b"total_tokens") {
                    self.total = v;
                }
            }
            Event::Close { depth: 2, .. } if self.in_usage => {
                self.in_usage = false;
                let (prompt, completion) = (self.prompt.unwrap_or(0), self.completion.unwrap_or(0));
                // `total_tokens` when given (it can hold more than the two, e.g. reasoning),
                // never less than their sum.
                let sum = prompt.saturating_add(completion);
                if self.prompt.is_some() || self.total.is_some() {
                    self.found = Some(TokenUsage { prompt, completion, total: self.total.unwrap_or(sum).max(sum) });
                }
            }
            _ => {}
        }
    }
}

/// Reads usage from a response body fed in chunks.
#[derive(Debug)]
pub struct Meter {
    sse: bool,
    lex: Lexer,
    reading: Reading,
    /// SSE: where in the current line we are (`None`: past the field name, inside `data:`'s
    /// value or an ignored line), and the field name's first bytes.
    line: [u8; 5],
    line_len: u8,
    in_data: bool,
    skip_line: bool,
    /// SSE: the event's data failed to parse (e.g. `[DONE]`); ignored until the event ends.
    bad_event: bool,
    /// The last usage seen in a complete event (SSE) or the body (JSON).
    usage: Option<TokenUsage>,
}

impl Meter {
    /// `sse`: the response is `text/event-stream`.
    pub fn new(sse: bool) -> Meter {
        Meter {
            sse,
            lex: Lexer::new(),
            reading: Reading::default(),
            line: [0; 5],
            line_len: 0,
            in_data: false,
            skip_line: false,
            bad_event: false,
            usage: None,
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        if !self.sse {
            let reading = &mut self.reading;
            if self.lex.feed(chunk, &mut |ev| reading.on(ev)).is_ok() {
                self.usage = reading.found.or(self.usage);
            }
            return;
        }
        for &b in chunk {
            self.sse_byte(b);
        }
    }

    fn sse_byte(&mut self, b: u8) {
        if b == b'\n' {
            if !self.in_data && !self.skip_line && self.line_len == 0 {
                self.end_event();
            }
            if self.in_data && !self.bad_event {
                // Lines of one event's data join with a newline, which is JSON whitespace.
                self.data(b"\n");
            }
            (self.in_data, self.skip_line, self.line_len) = (false, false, 0);
            return;
        }
        if b == b'\r' {
            return;
        }
        if self.in_data {
            if !self.bad_event {
                self.data(&[b]);
            }
            return;
        }
        if self.skip_line {
            return;
        }
        if let Some(slot) = self.line.get_mut(usize::from(self.line_len)) {
            *slot = b;
            self.line_len += 1;
        }
        if self.line_len == 5 {
            if &self.line == b"data:" {
                self.in_data = true;
            } else {
                self.skip_line = true;
            }
        } else if !b"data:".starts_with(self.line.get(..usize::from(self.line_len)).unwrap_or_default()) {
            self.skip_line = true;
        }
    }

    fn data(&mut self, bytes: &[u8]) {
        let reading = &mut self.reading;
        if self.lex.feed(bytes, &mut |ev| reading.on(ev)).is_err() {
            self.bad_event = true;
        }
    }

    /// A blank line ends an SSE event: its usage counts if its data was one whole JSON value.
    fn end_event(&mut self) {
        if !self.bad_event && self.lex.done() {
            if let Some(u) = self.reading.found {
                self.usage = Some(u);
            }
        }
        self.lex = Lexer::new();
        self.reading = Reading::default();
        self.bad_event = false;
    }

    /// The usage the backend reported, if a complete one passed.
    pub fn usage(&self) -> Option<TokenUsage> {
        self.usage
    }
}
