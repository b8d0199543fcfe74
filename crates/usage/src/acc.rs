//! One report record's sums, from whichever source the report reads: the usage metrics (the
//! process's life) or the timeline's quarter-hour buckets (a time window). Both end here, so a
//! record is the same JSON whatever it was read from.

use mlgate_core::usage::{calls, request_bytes, response_bytes, Bucket, Call, Slot};
use mlgate_core::usage::{API_TIME_MAX, API_TIME_MIN, API_TIME_SUM, COMPLETION_TOKENS, PROMPT_TOKENS, SERVICE_CALLS};
use mlgate_core::usage::{SERVICE_TIME_MAX, SERVICE_TIME_MIN, SERVICE_TIME_SUM};

/// One record's sums, from one or more slots (or buckets). Times in microseconds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Acc {
    pub calls: [u64; 4],
    pub bandwidth: u64,
    pub api_sum_us: u64,
    pub service_sum_us: u64,
    pub service_calls: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub api_min: Option<u64>,
    pub api_max: Option<u64>,
    pub service_min: Option<u64>,
    pub service_max: Option<u64>,
}

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn max_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

impl Acc {
    /// Reads one slot's metrics. A gauge still at zero has not been set yet: no extreme.
    pub fn read(slot: u32, s: &Slot, value: &mut dyn FnMut(u32, usize) -> u64) -> Acc {
        let mut get = |i: usize| if s.has(i) { value(slot, i) } else { 0 };
        let mut a = Acc::default();
        for (c, b) in a.calls.iter_mut().zip(Bucket::ALL) {
            *c = get(calls(b));
            a.bandwidth = a.bandwidth.saturating_add(get(request_bytes(b))).saturating_add(get(response_bytes(b)));
        }
        a.api_sum_us = get(API_TIME_SUM);
        a.service_sum_us = get(SERVICE_TIME_SUM);
        a.service_calls = get(SERVICE_CALLS);
        a.prompt_tokens = get(PROMPT_TOKENS);
        a.completion_tokens = get(COMPLETION_TOKENS);
        let nonzero = |v: u64| (v > 0).then_some(v);
        if a.calls.iter().any(|c| *c > 0) {
            a.api_min = nonzero(get(API_TIME_MIN));
            a.api_max = nonzero(get(API_TIME_MAX));
        }
        if a.service_calls > 0 {
            a.service_min = nonzero(get(SERVICE_TIME_MIN));
            a.service_max = nonzero(get(SERVICE_TIME_MAX));
        }
        a
    }

    /// One finished call, as the metrics count it (the timeline's buckets).
    pub fn call(c: &Call) -> Acc {
        let mut a = Acc::default();
        if let Some(n) = a.calls.get_mut(Bucket::of(c.status) as usize) {
            *n = 1;
        }
        a.bandwidth = c.request_bytes.saturating_add(c.response_bytes);
        a.api_sum_us = c.api_time_us;
        a.api_min = Some(c.api_time_us);
        a.api_max = Some(c.api_time_us);
        if let Some(t) = c.service_time_us {
            a.service_calls = 1;
            a.service_sum_us = t;
            a.service_min = Some(t);
            a.service_max = Some(t);
        }
        a.prompt_tokens = c.prompt_tokens;
        a.completion_tokens = c.completion_tokens;
        a
    }

    pub fn add(&mut self, o: &Acc) {
        for (c, d) in self.calls.iter_mut().zip(o.calls) {
            *c = c.saturating_add(d);
        }
        self.bandwidth = self.bandwidth.saturating_add(o.bandwidth);
        self.api_sum_us = self.api_sum_us.saturating_add(o.api_sum_us);
        self.service_sum_us = self.service_sum_us.saturating_add(o.service_sum_us);
        self.service_calls = self.service_calls.saturating_add(o.service_calls);
        self.prompt_tokens = self.prompt_tokens.saturating_add(o.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(o.completion_tokens);
        self.api_min = min_opt(self.api_min, o.api_min);
        self.api_max = max_opt(self.api_max, o.api_max);
        self.service_min = min_opt(self.service_min, o.service_min);
        self.service_max = max_opt(self.service_max, o.service_max);
    }

    pub fn total(&self) -> u64 {
        self.calls.iter().fold(0u64, |t, c| t.saturating_add(*c))
    }

    /// The mean API time in microseconds, rounded half up (0 without calls).
    pub fn api_avg_us(&self) -> u64 {
        avg(self.api_sum_us, self.total())
    }

    /// The mean backend time in microseconds, rounded half up (0 without backend calls).
    pub fn service_avg_us(&self) -> u64 {
        avg(self.service_sum_us, self.service_calls)
    }
}

fn avg(sum: u64, n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    sum.saturating_mul(2).saturating_add(n) / n.saturating_mul(2)
}
