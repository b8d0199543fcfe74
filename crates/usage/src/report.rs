//! APIM's reports — `byApi`, `byOperation`, `byProduct`, `bySubscription` — computed from the
//! usage metrics as the host reads them back: one source of truth, no second count. The scope
//! is what those metrics hold: this Envoy process since it started (Prometheus keeps history,
//! and sums over a fleet).
//!
//! The shape is APIM's collection, `{"value": [records], "count": N}`, each record with
//! `ReportRecordContract`'s field names. Ids are APIM's identifier paths (`/apis/<id>`,
//! `/apis/<id>/operations/<id>`, `/products/<id>`, `/subscriptions/<id>`); times are in
//! milliseconds, as APIM reports them. Every configured API, operation, product (and, with
//! per-subscription metrics, subscription) has a record, in configuration order, also when
//! it has no calls yet.
//!
//! Beyond `ReportRecordContract`, every record ends with the tokens the backends reported
//! (`promptTokens`, `completionTokens`, `totalTokens`: APIM's `llm-emit-token-metric` names,
//! from the `mlgate_prompt_tokens` and `mlgate_completion_tokens` counters; 0 where none).

use mlgate_core::model::Gateway;
use mlgate_core::usage::{calls, request_bytes, response_bytes, Bucket, Slot};
use mlgate_core::usage::{API_TIME_MAX, API_TIME_MIN, API_TIME_SUM, COMPLETION_TOKENS, PROMPT_TOKENS, SERVICE_CALLS};
use mlgate_core::usage::{SERVICE_TIME_MAX, SERVICE_TIME_MIN, SERVICE_TIME_SUM};

/// The reports, by their APIM names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    ByApi,
    ByOperation,
    ByProduct,
    BySubscription,
}

impl Report {
    pub fn from_name(name: &[u8]) -> Option<Report> {
        match name {
            b"byApi" => Some(Report::ByApi),
            b"byOperation" => Some(Report::ByOperation),
            b"byProduct" => Some(Report::ByProduct),
            b"bySubscription" => Some(Report::BySubscription),
            _ => None,
        }
    }
}

/// One record's sums, from one or more slots.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Acc {
    calls: [u64; 4],
    bandwidth: u64,
    api_sum_us: u64,
    service_sum_us: u64,
    service_calls: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    api_min: Option<u64>,
    api_max: Option<u64>,
    service_min: Option<u64>,
    service_max: Option<u64>,
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
    fn read(slot: u32, s: &Slot, value: &mut dyn FnMut(u32, usize) -> u64) -> Acc {
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

    fn add(&mut self, o: &Acc) {
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

    fn total(&self) -> u64 {
        self.calls.iter().fold(0u64, |t, c| t.saturating_add(*c))
    }
}

/// Microseconds as APIM's milliseconds (a JSON number).
fn ms(us: u64) -> String {
    thousandths(us)
}

/// The mean in milliseconds, rounded half up to the microsecond.
fn avg_ms(sum_us: u64, n: u64) -> String {
    if n == 0 {
        return "0".to_string();
    }
    thousandths(sum_us.saturating_mul(2).saturating_add(n) / n.saturating_mul(2))
}

/// `n / 1000` as a decimal without trailing zeros (`1035` → `1.035`, `20` → `0.02`,
/// `3000` → `3`). Integer formatting only: float formatting would cost ~12 KB of .wasm.
pub fn thousandths(n: u64) -> String {
    let (whole, frac) = (n / 1000, n % 1000);
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:03}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

pub use mlgate_core::json::push_str;

fn field_str(out: &mut String, k: &str, v: &str) {
    out.push('"');
    out.push_str(k);
    out.push_str("\":");
    push_str(out, v);
    out.push(',');
}

fn field_raw(out: &mut String, k: &str, v: &str) {
    out.push('"');
    out.push_str(k);
    out.push_str("\":");
    out.push_str(v);
    out.push(',');
}

/// A record: the identifying fields (already written into `head`), then the numbers.
fn record(out: &mut String, head: &str, a: &Acc) {
    out.push('{');
    out.push_str(head);
    let [success, blocked, failed, other] = a.calls;
    for (k, v) in [
        ("callCountSuccess", success),
        ("callCountBlocked", blocked),
        ("callCountFailed", failed),
        ("callCountOther", other),
        ("callCountTotal", a.total()),
        ("bandwidth", a.bandwidth),
    ] {
        field_raw(out, k, &v.to_string());
    }
    field_raw(out, "apiTimeAvg", &avg_ms(a.api_sum_us, a.total()));
    field_raw(out, "apiTimeMin", &ms(a.api_min.unwrap_or(0)));
    field_raw(out, "apiTimeMax", &ms(a.api_max.unwrap_or(0)));
    field_raw(out, "serviceTimeAvg", &avg_ms(a.service_sum_us, a.service_calls));
    field_raw(out, "serviceTimeMin", &ms(a.service_min.unwrap_or(0)));
    field_raw(out, "serviceTimeMax", &ms(a.service_max.unwrap_or(0)));
    for (k, v) in [
        ("promptTokens", a.prompt_tokens),
        ("completionTokens", a.completion_tokens),
        ("totalTokens", a.prompt_tokens.saturating_add(a.completion_tokens)),
    ] {
        field_raw(out, k, &v.to_string());
    }
    out.pop();
    out.push('}');
}

/// The report as JSON, reading each metric through `value(slot, index)`. `None` for
/// `bySubscription` when per-subscription metrics are off (there is nothing to read).
pub fn report(gw: &Gateway, kind: Report, value: &mut dyn FnMut(u32, usize) -> u64) -> Option<String> {
    let plan = &gw.usage;
    // Where each API's operations start in a flat list of every operation.
    let mut op_base = Vec::with_capacity(gw.apis.len());
    let mut n_ops = 0usize;
    for api in &gw.apis {
        op_base.push(n_ops);
        n_ops += api.operations.len();
    }
    let groups = match kind {
        Report::ByApi => gw.apis.len(),
        Report::ByOperation => n_ops,
        Report::ByProduct => gw.products.len(),
        Report::BySubscription if plan.per_subscription => gw.subscriptions.len(),
        Report::BySubscription => return None,
    };
    let mut accs = vec![Acc::default(); groups];
    for (i, s) in plan.slots().iter().enumerate() {
        let group = match kind {
            Report::ByApi => s.api.map(usize::from),
            Report::ByOperation => s.api.zip(s.op).and_then(|(a, o)| Some(op_base.get(usize::from(a))? + usize::from(o))),
            Report::ByProduct => s.product.map(|p| p as usize),
            Report::BySubscription => s.sub.map(|u| u as usize),
        };
        let (Some(acc), Ok(slot)) = (group.and_then(|g| accs.get_mut(g)), u32::try_from(i)) else { continue };
        acc.add(&Acc::read(slot, s, value));
    }

    let mut out = String::with_capacity(64 + 480 * groups);
    out.push_str("{\"value\":[");
    let mut head = String::new();
    let mut accs = accs.iter();
    let mut first = true;
    let mut emit = |out: &mut String, head: &str, acc: Option<&Acc>| {
        if !first {
            out.push(',');
        }
        first = false;
        record(out, head, acc.unwrap_or(&Acc::default()));
    };
    match kind {
        Report::ByApi => {
            for api in &gw.apis {
                head.clear();
                field_str(&mut head, "name", &api.name);
                field_str(&mut head, "apiId", &format!("/apis/{}", api.id));
                emit(&mut out, &head, accs.next());
            }
        }
        Report::ByOperation => {
            for api in &gw.apis {
                for op in &api.operations {
                    head.clear();
                    field_str(&mut head, "name", &op.name);
                    field_str(&mut head, "apiId", &format!("/apis/{}", api.id));
                    field_str(&mut head, "operationId", &format!("/apis/{}/operations/{}", api.id, op.id));
                    emit(&mut out, &head, accs.next());
                }
            }
        }
        Report::ByProduct => {
            for p in &gw.products {
                head.clear();
                field_str(&mut head, "name", &p.name);
                field_str(&mut head, "productId", &format!("/products/{}", p.id));
                emit(&mut out, &head, accs.next());
            }
        }
        Report::BySubscription => {
            for s in &gw.subscriptions {
                head.clear();
                // The id, not the subscription's free-text name: operators write anything there.
                field_str(&mut head, "name", &s.id);
                if let Some(p) = gw.products.get(s.product as usize) {
                    field_str(&mut head, "productId", &format!("/products/{}", p.id));
                }
                field_str(&mut head, "subscriptionId", &format!("/subscriptions/{}", s.id));
                emit(&mut out, &head, accs.next());
            }
        }
    }
    out.push_str("],\"count\":");
    out.push_str(&groups.to_string());
    out.push('}');
    Some(out)
}
