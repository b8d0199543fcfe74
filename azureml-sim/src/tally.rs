//! What the LLM calls reported, per process: totals over every call since the last reset and
//! the last `LOG_CAP` calls one by one. `GET /sim/usage` shows it and `POST /sim/usage/reset`
//! clears it, so end-to-end tests can sum the tokens that went through the gateway.

use serde_json::{json, Value};
use std::collections::VecDeque;

/// The per-call log keeps this many of the latest calls; the totals count every call.
pub const LOG_CAP: usize = 10_000;

/// One LLM call as the sim reported (or, for a stream, actually sent) it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// `chat`, `completions` or `embeddings`.
    pub kind: &'static str,
    pub prompt_tokens: u64,
    /// For a stream: one per content chunk sent (a cut stream counts what it sent).
    pub completion_tokens: u64,
    pub stream: bool,
    /// The stream ended without its `[DONE]`: cut by `x-sim-cut-after` or by the client.
    pub cut: bool,
}

#[derive(Default)]
pub struct Tally {
    calls: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    log: VecDeque<Call>,
}

impl Tally {
    pub fn record(&mut self, call: Call) {
        self.calls = self.calls.saturating_add(1);
        self.prompt_tokens = self.prompt_tokens.saturating_add(call.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(call.completion_tokens);
        if self.log.len() >= LOG_CAP {
            self.log.pop_front();
        }
        self.log.push_back(call);
    }

    pub fn reset(&mut self) {
        *self = Tally::default();
    }

    /// `{"calls", "prompt_tokens", "completion_tokens", "total_tokens", "log": [{"kind",
    /// "prompt_tokens", "completion_tokens", "total_tokens", "stream", "cut"}]}`, the log oldest
    /// first.
    pub fn to_json(&self) -> Value {
        let log: Vec<Value> = self
            .log
            .iter()
            .map(|c| {
                json!({"kind": c.kind, "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
                       "total_tokens": c.prompt_tokens.saturating_add(c.completion_tokens), "stream": c.stream, "cut": c.cut})
            })
            .collect();
        json!({"calls": self.calls, "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
               "total_tokens": self.prompt_tokens.saturating_add(self.completion_tokens), "log": log})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_count_every_call_and_the_log_is_bounded() {
        let mut t = Tally::default();
        let call = Call { kind: "chat", prompt_tokens: 2, completion_tokens: 3, stream: false, cut: false };
        for _ in 0..LOG_CAP + 5 {
            t.record(call);
        }
        let v = t.to_json();
        assert_eq!(v["calls"], LOG_CAP as u64 + 5);
        assert_eq!(v["total_tokens"], 5 * (LOG_CAP as u64 + 5));
        assert_eq!(v["log"].as_array().unwrap().len(), LOG_CAP);
        t.reset();
        assert_eq!(t.to_json(), json!({"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "log": []}));
    }
}
