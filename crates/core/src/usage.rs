//! Usage metrics: which stats a call counts in, its outcome bucket, and what to add to them.
//! The same stats are read back for APIM's reports, and the min/max gauges kept exact across
//! workers, by the `mlgate-usage` crate. The host only defines, adds and reads.
//!
//! **Slots.** Every call the gateway judges counts in exactly one *slot*: the labels it is
//! known by. The table is compiled with the configuration ([`Plan`]) and indexed by the
//! model's indices, so a request finds its slot by arithmetic, and the host keeps the metric
//! ids of each slot in a table: no name is formatted and nothing is allocated per request.
//!
//! | slot | calls that count there |
//! |---|---|
//! | (no labels) | 404: outside every API (with `unmatched_requests: reject`) |
//! | `api` | 404: the API's suffix, but no operation (or scheme) matches |
//! | `api`, `operation` | 401: no key, or a key that is not an active subscription's with this API |
//! | `api`, `operation`, `product` [, `subscription`] | every identified call: admitted, 403, 429, 5xx |
//!
//! With `metrics.per_subscription`, identified calls carry a `subscription` label too and the
//! last row has one slot per subscription instead of one per product.
//!
//! **Names.** proxy-wasm metrics have no labels, so they travel in the stat name, encoded as
//! Istio encodes its own (`<label>=.=<value>;.;`), before the metric's name:
//! `wasmcustom.api=.=azureml-demo;.;operation=.=rrs-execute;.;product=.=starter;.;outcome=.=success;.;mlgate_calls`.
//! A stats tag per label (`(api=\.=(.*?);\.;)`, what Istio's `extraStatTags` adds) turns that
//! into `mlgate_calls{api="azureml-demo",…}` in `/stats/prometheus`. Label values are the ids,
//! percent-encoded like the filter-state export (bytes outside `A-Z a-z 0-9 - . _ ~` become
//! `%XX`), so no id can end a label early or add one.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};

/// A report time bucket: a quarter hour of UTC, as APIM's `byTime` intervals (multiples of 15
/// minutes). `mlgate-usage`'s timeline keeps them per slot in the store.
pub const QUARTER_MS: u64 = 15 * 60 * 1000;
/// The timeline keeps one record per slot per hour (its four quarters), for this many hours in a
/// ring: the current hour and the 24 before it, so every quarter of the last 24 hours is there.
pub const TIMELINE_HOURS: u64 = 25;
/// The bytes of one quarter in a timeline record: calls by outcome and backend calls (u32 each),
/// bandwidth, the two time sums, the two token counts and the four extremes (u64 each).
pub const TIMELINE_QUARTER: u64 = 5 * 4 + 9 * 8;
/// The bytes of one timeline record's value: the slot's label fingerprint (u64), the hour (u32)
/// and its four quarters.
pub const TIMELINE_RECORD: u64 = 8 + 4 + 4 * TIMELINE_QUARTER;

/// The key of slot `slot`'s timeline record for hour `hour` (hours since the epoch): slot
/// numbers and a ring position, so the keys are bounded by the slots whatever the labels.
pub fn timeline_key(slot: u32, hour: u64) -> String {
    format!("mlgate/t/{slot}/{}", hour % TIMELINE_HOURS)
}

/// What a label value keeps unencoded (the rest becomes `%XX`).
pub const LABEL_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// APIM's report buckets of the response status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// Up to 301, 304, 307.
    Success = 0,
    /// 401, 403, 429: refused by the gateway's key check or limits.
    Blocked = 1,
    /// 400 and 500–599.
    Failed = 2,
    /// Everything else (404 among them), and no response at all (status 0).
    Other = 3,
}

impl Bucket {
    pub const ALL: [Bucket; 4] = [Bucket::Success, Bucket::Blocked, Bucket::Failed, Bucket::Other];

    pub fn of(status: u16) -> Bucket {
        match status {
            100..=301 | 304 | 307 => Bucket::Success,
            401 | 403 | 429 => Bucket::Blocked,
            400 | 500..=599 => Bucket::Failed,
            _ => Bucket::Other,
        }
    }

    /// The `outcome` label.
    pub fn label(self) -> &'static str {
        match self {
            Bucket::Success => "success",
            Bucket::Blocked => "blocked",
            Bucket::Failed => "failed",
            Bucket::Other => "other",
        }
    }
}

/// How a metric is kept by the host (proxy-wasm's metric types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// The metrics counted per outcome: (name, kind). Index `4 * i + bucket` in a slot's table.
pub const PER_OUTCOME: [(&str, Kind); 5] = [
    ("mlgate_calls", Kind::Counter),
    ("mlgate_request_bytes", Kind::Counter),
    ("mlgate_response_bytes", Kind::Counter),
    ("mlgate_api_time_milliseconds", Kind::Histogram),
    ("mlgate_service_time_milliseconds", Kind::Histogram),
];
const CALLS: usize = 0;
const REQUEST_BYTES: usize = 1;
const RESPONSE_BYTES: usize = 2;
const API_TIME: usize = 3;
const SERVICE_TIME: usize = 4;

/// The metrics per slot alone (no outcome): exact sums and extremes, what APIM's reports
/// need beyond the counters (Envoy's histograms cannot be read back, and their sums are
/// approximate). Index `20 + i` in a slot's table.
pub const PER_SLOT: [(&str, Kind); 9] = [
    ("mlgate_api_time_microseconds_sum", Kind::Counter),
    ("mlgate_service_time_microseconds_sum", Kind::Counter),
    ("mlgate_service_calls", Kind::Counter),
    ("mlgate_api_time_min_microseconds", Kind::Gauge),
    ("mlgate_api_time_max_microseconds", Kind::Gauge),
    ("mlgate_service_time_min_microseconds", Kind::Gauge),
    ("mlgate_service_time_max_microseconds", Kind::Gauge),
    ("mlgate_prompt_tokens", Kind::Counter),
    ("mlgate_completion_tokens", Kind::Counter),
];
pub const API_TIME_SUM: usize = 20;
pub const SERVICE_TIME_SUM: usize = 21;
pub const SERVICE_CALLS: usize = 22;
pub const API_TIME_MIN: usize = 23;
pub const API_TIME_MAX: usize = 24;
pub const SERVICE_TIME_MIN: usize = 25;
pub const SERVICE_TIME_MAX: usize = 26;
/// Tokens the backends reported (calls that carry tokens).
pub const PROMPT_TOKENS: usize = 27;
pub const COMPLETION_TOKENS: usize = 28;
/// Metrics in one slot's table.
pub const METRICS: usize = 29;

/// The index of a per-outcome metric in a slot's table.
const fn at(metric: usize, b: Bucket) -> usize {
    4 * metric + b as usize
}

/// The index of `mlgate_calls{outcome=b}` (what the reports read).
pub fn calls(b: Bucket) -> usize {
    at(CALLS, b)
}
pub fn request_bytes(b: Bucket) -> usize {
    at(REQUEST_BYTES, b)
}
pub fn response_bytes(b: Bucket) -> usize {
    at(RESPONSE_BYTES, b)
}

/// The most slots one configuration may have. Each costs up to 27 Envoy stats, about 60 KB of
/// Envoy's memory and 195 lines of `/stats/prometheus` (measured: 1,000 subscriptions with
/// `per_subscription` and 5 operations are 5,000 slots, 135,000 stats, +306 MiB, 976,000
/// lines); so this bounds a configuration at roughly 600 MB of stats.
pub const MAX_SLOTS: usize = 10_000;

/// What a request was matched to, as far as it got: indices into the model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Matched {
    pub api: Option<u16>,
    pub op: Option<u16>,
    /// Set only once the key is an active subscription's whose product has the API.
    pub sub: Option<u32>,
}

/// The labels of one slot (indices into the model).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub api: Option<u16>,
    pub op: Option<u16>,
    pub product: Option<u32>,
    pub sub: Option<u32>,
    /// The operation carries tokens: the slot has the token counters.
    pub tokens: bool,
}

impl Slot {
    /// Calls with a product are the only ones that can go upstream, or be refused by a limit.
    fn identified(&self) -> bool {
        self.product.is_some()
    }

    /// Whether this slot has metric `index`. A slot without a product only ever counts a
    /// 401 (blocked) or a 404 (other), and never reaches a backend.
    pub fn has(&self, index: usize) -> bool {
        if index >= METRICS {
            return false;
        }
        if self.identified() {
            return self.tokens || index < PROMPT_TOKENS;
        }
        match index {
            i if i < 4 * PER_OUTCOME.len() => {
                let (metric, bucket) = (i / 4, i % 4);
                metric != SERVICE_TIME && (bucket == Bucket::Blocked as usize || bucket == Bucket::Other as usize)
            }
            API_TIME_SUM | API_TIME_MIN | API_TIME_MAX => true,
            _ => false,
        }
    }
}

/// The slot table of a configuration.
pub struct Plan {
    pub per_subscription: bool,
    slots: Vec<Slot>,
    /// Per API: its own slot; `(api, op j)` without a product is this + 1 + j.
    api_base: Vec<u32>,
    /// Per product: for each of its APIs, where that API's operations start in a product's
    /// block (the block of the product, or of each of its subscriptions).
    product_apis: Vec<Vec<(u16, u32)>>,
    /// Per product, or per subscription with `per_subscription`: where its block starts.
    block_base: Vec<u32>,
}

impl Plan {
    /// The table of a configuration, from its shape: each API's number of operations, each
    /// product's APIs, each subscription's product. `Err` when it would exceed [`MAX_SLOTS`].
    pub fn build(ops_per_api: &[usize], products: &[&[u16]], sub_products: &[u32], per_subscription: bool) -> Result<Plan, usize> {
        let mut slots = vec![Slot { api: None, op: None, product: None, sub: None, tokens: false }];
        let mut api_base = Vec::with_capacity(ops_per_api.len());
        for (a, ops) in ops_per_api.iter().enumerate() {
            let a = u16::try_from(a).ok();
            api_base.push(u32::try_from(slots.len()).unwrap_or(u32::MAX));
            slots.push(Slot { api: a, op: None, product: None, sub: None, tokens: false });
            for o in 0..*ops {
                slots.push(Slot { api: a, op: u16::try_from(o).ok(), product: None, sub: None, tokens: false });
            }
        }
        let mut product_apis = Vec::with_capacity(products.len());
        let mut block_len = Vec::with_capacity(products.len());
        for p in products {
            let mut offsets: Vec<(u16, u32)> = Vec::with_capacity(p.len());
            let mut len = 0u32;
            for &a in *p {
                if offsets.iter().any(|(b, _)| *b == a) {
                    continue;
                }
                offsets.push((a, len));
                len = len.saturating_add(ops_per_api.get(usize::from(a)).map_or(0, |n| *n as u32));
            }
            product_apis.push(offsets);
            block_len.push(len);
        }
        let mut block_base = Vec::new();
        let mut push_block = |slots: &mut Vec<Slot>, p: usize, sub: Option<u32>| -> Result<(), usize> {
            block_base.push(u32::try_from(slots.len()).unwrap_or(u32::MAX));
            let product = u32::try_from(p).ok();
            for &(a, _) in product_apis.get(p).map(Vec::as_slice).unwrap_or_default() {
                let ops = ops_per_api.get(usize::from(a)).copied().unwrap_or(0);
                if slots.len() + ops > MAX_SLOTS {
                    return Err(slots.len() + ops);
                }
                for o in 0..ops {
                    slots.push(Slot { api: Some(a), op: u16::try_from(o).ok(), product, sub, tokens: false });
                }
            }
            Ok(())
        };
        if per_subscription {
            for (s, product) in sub_products.iter().enumerate() {
                push_block(&mut slots, *product as usize, u32::try_from(s).ok())?;
            }
        } else {
            for p in 0..products.len() {
                push_block(&mut slots, p, None)?;
            }
        }
        if slots.len() > MAX_SLOTS {
            return Err(slots.len());
        }
        Ok(Plan { per_subscription, slots, api_base, product_apis, block_base })
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Gives the token counters to the identified slots of the operations `carries(api, op)`.
    pub fn mark_tokens(&mut self, carries: impl Fn(u16, u16) -> bool) {
        for s in &mut self.slots {
            s.tokens = s.product.is_some() && matches!((s.api, s.op), (Some(a), Some(o)) if carries(a, o));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    pub fn get(&self, slot: u32) -> Option<&Slot> {
        self.slots.get(slot as usize)
    }

    /// The slot a call counts in (`product`: the product of `m.sub`). Arithmetic and one short
    /// scan of the product's APIs.
    pub fn slot(&self, m: &Matched, product: Option<u32>) -> Option<u32> {
        let Some(api) = m.api else { return Some(0) };
        let base = *self.api_base.get(usize::from(api))?;
        let Some(op) = m.op else { return Some(base) };
        let Some(sub) = m.sub else { return Some(base + 1 + u32::from(op)) };
        let product = product?;
        let (_, offset) = self.product_apis.get(product as usize)?.iter().find(|(a, _)| *a == api)?;
        let block = if self.per_subscription { self.block_base.get(sub as usize) } else { self.block_base.get(product as usize) };
        Some(block? + offset + u32::from(op))
    }
}

/// Every metric of slot `s` the host must define, with the slot's encoded `labels`: (index in
/// the slot's table, kind, full name without Envoy's `wasmcustom.`). Configure time only.
pub fn definitions(s: &Slot, labels: &str) -> Vec<(usize, Kind, String)> {
    let mut out = Vec::with_capacity(METRICS);
    for (m, (name, kind)) in PER_OUTCOME.iter().enumerate() {
        for b in Bucket::ALL {
            let i = at(m, b);
            if s.has(i) {
                out.push((i, *kind, format!("{labels}outcome=.={};.;{name}", b.label())));
            }
        }
    }
    for (j, (name, kind)) in PER_SLOT.iter().enumerate() {
        let i = 4 * PER_OUTCOME.len() + j;
        if s.has(i) {
            out.push((i, *kind, format!("{labels}{name}")));
        }
    }
    out
}

/// One finished call, as the host measured it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    pub slot: u32,
    /// The response status sent downstream (0: none).
    pub status: u16,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// From the request headers to the end of the stream.
    pub api_time_us: u64,
    /// From the request headers to the backend's response headers; `None` when the call
    /// never went upstream.
    pub service_time_us: Option<u64>,
    /// The usage its backend reported (0 for calls that carry no tokens).
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// What the host does to one metric of the call's slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    /// Counter: add.
    Add(usize, u64),
    /// Histogram: record a value.
    Record(usize, u64),
}

/// The updates for one call: at most 10, none of them zero additions.
pub fn updates(call: &Call) -> impl Iterator<Item = Update> {
    let b = Bucket::of(call.status);
    let svc = call.service_time_us;
    [
        Some(Update::Add(at(CALLS, b), 1)),
        (call.request_bytes > 0).then_some(Update::Add(at(REQUEST_BYTES, b), call.request_bytes)),
        (call.response_bytes > 0).then_some(Update::Add(at(RESPONSE_BYTES, b), call.response_bytes)),
        Some(Update::Record(at(API_TIME, b), call.api_time_us / 1000)),
        (call.api_time_us > 0).then_some(Update::Add(API_TIME_SUM, call.api_time_us)),
        svc.map(|t| Update::Record(at(SERVICE_TIME, b), t / 1000)),
        svc.filter(|t| *t > 0).map(|t| Update::Add(SERVICE_TIME_SUM, t)),
        svc.map(|_| Update::Add(SERVICE_CALLS, 1)),
        (call.prompt_tokens > 0).then_some(Update::Add(PROMPT_TOKENS, call.prompt_tokens)),
        (call.completion_tokens > 0).then_some(Update::Add(COMPLETION_TOKENS, call.completion_tokens)),
    ]
    .into_iter()
    .flatten()
}
