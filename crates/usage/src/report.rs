//! APIM's reports — `byApi`, `byOperation`, `byProduct`, `bySubscription`, `byTime` — as
//! `{"value": [records], "count": N}` (with `nextLink` when `$top` left records out), each
//! record with `ReportRecordContract`'s field names. Ids are APIM's identifier paths
//! (`/apis/<id>`, `/apis/<id>/operations/<id>`, `/products/<id>`, `/subscriptions/<id>`); times
//! are in milliseconds, as APIM reports them.
//!
//! Two sources, one record shape ([`Acc`]): without a `timestamp` clause in `$filter` the
//! numbers are the usage metrics as the host reads them back (this Envoy process since it
//! started; Prometheus keeps history and sums over a fleet); with one, and always for `byTime`,
//! they are the timeline's quarter-hour buckets in that window ([`crate::timeline`]: the last 24
//! hours at most). `byApi` … `bySubscription` have a record per configured API, operation,
//! product (and, with per-subscription metrics, subscription), in configuration order, also when
//! it has no calls; `byTime` has one per interval with calls, oldest first, each with
//! `timestamp` (the interval's start) and `interval` (`PT15M`, …).
//!
//! Beyond `ReportRecordContract`, every record ends with the tokens the backends reported
//! (`promptTokens`, `completionTokens`, `totalTokens`: APIM's `llm-emit-token-metric` names,
//! from the `mlgate_prompt_tokens` and `mlgate_completion_tokens` counters; 0 where none).

pub use crate::acc::Acc;
use crate::query::{duration, Field, Invalid, Query};
use crate::timeline::{self, fingerprint};
use mlgate_core::local::LocalHost;
use mlgate_core::model::Gateway;
use mlgate_core::usage::{Slot, QUARTER_MS};
use std::cmp::Ordering;

/// The reports, by their APIM names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    ByApi,
    ByOperation,
    ByProduct,
    BySubscription,
    ByTime,
}

impl Report {
    pub fn from_name(name: &[u8]) -> Option<Report> {
        match name {
            b"byApi" => Some(Report::ByApi),
            b"byOperation" => Some(Report::ByOperation),
            b"byProduct" => Some(Report::ByProduct),
            b"bySubscription" => Some(Report::BySubscription),
            b"byTime" => Some(Report::ByTime),
            _ => None,
        }
    }
}

/// Why there is no report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// `bySubscription` (or a `subscriptionId` filter) without per-subscription metrics.
    NoSubscriptions,
    /// A parameter the request got wrong (a 400).
    Invalid(Invalid),
}

/// Microseconds as APIM's milliseconds (a JSON number).
fn ms(us: u64) -> String {
    thousandths(us)
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
    field_raw(out, "apiTimeAvg", &ms(a.api_avg_us()));
    field_raw(out, "apiTimeMin", &ms(a.api_min.unwrap_or(0)));
    field_raw(out, "apiTimeMax", &ms(a.api_max.unwrap_or(0)));
    field_raw(out, "serviceTimeAvg", &ms(a.service_avg_us()));
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

/// Whether an `eq` filter (`None`: none) names `id`, bare or as `<prefix><id>`.
fn names(filter: &Option<String>, prefix: &str, id: &str) -> bool {
    filter.as_deref().is_none_or(|f| f == id || f.strip_prefix(prefix) == Some(id))
}

fn names_op(filter: &Option<String>, api: &str, op: &str) -> bool {
    filter
        .as_deref()
        .is_none_or(|f| f == op || f.strip_prefix("/apis/").and_then(|r| r.strip_prefix(api)) == Some(&format!("/operations/{op}")))
}

/// Whether the calls of slot `s` pass the query's identifier filters.
fn passes(gw: &Gateway, q: &Query, s: &Slot) -> bool {
    let api = s.api.and_then(|a| gw.apis.get(usize::from(a)));
    let op = api.zip(s.op).and_then(|(a, o)| a.operations.get(usize::from(o)));
    let product = s.product.and_then(|p| gw.products.get(p as usize));
    let sub = s.sub.and_then(|u| gw.subscriptions.get(u as usize));
    (q.api.is_none() || api.is_some_and(|a| names(&q.api, "/apis/", &a.id)))
        && (q.operation.is_none() || api.zip(op).is_some_and(|(a, o)| names_op(&q.operation, &a.id, &o.id)))
        && (q.product.is_none() || product.is_some_and(|p| names(&q.product, "/products/", &p.id)))
        && (q.subscription.is_none() || sub.is_some_and(|u| names(&q.subscription, "/subscriptions/", &u.id)))
}

/// One record before it is written: its identifying fields, what it sorts by, its sums.
struct Row {
    head: String,
    name: String,
    timestamp: u64,
    acc: Acc,
}

fn number(r: &Row, f: Field) -> u64 {
    let a = &r.acc;
    let [success, blocked, failed, other] = a.calls;
    match f {
        Field::Name | Field::Timestamp => r.timestamp,
        Field::CallCountSuccess => success,
        Field::CallCountBlocked => blocked,
        Field::CallCountFailed => failed,
        Field::CallCountOther => other,
        Field::CallCountTotal => a.total(),
        Field::Bandwidth => a.bandwidth,
        Field::ApiTimeAvg => a.api_avg_us(),
        Field::ApiTimeMin => a.api_min.unwrap_or(0),
        Field::ApiTimeMax => a.api_max.unwrap_or(0),
        Field::ServiceTimeAvg => a.service_avg_us(),
        Field::ServiceTimeMin => a.service_min.unwrap_or(0),
        Field::ServiceTimeMax => a.service_max.unwrap_or(0),
        Field::PromptTokens => a.prompt_tokens,
        Field::CompletionTokens => a.completion_tokens,
        Field::TotalTokens => a.prompt_tokens.saturating_add(a.completion_tokens),
    }
}

fn compare(a: &Row, b: &Row, order: &[(Field, bool)]) -> Ordering {
    for &(f, desc) in order {
        let o = match f {
            Field::Name => a.name.cmp(&b.name),
            _ => number(a, f).cmp(&number(b, f)),
        };
        let o = if desc { o.reverse() } else { o };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

/// `rows` in a stable order by `order`: a bottom-up merge sort of indices (a few hundred bytes
/// of .wasm, where the standard library's sort costs kilobytes).
fn sorted(rows: Vec<Row>, order: &[(Field, bool)]) -> Vec<Row> {
    let n = rows.len();
    let mut idx: Vec<usize> = (0..n).collect();
    let mut out = vec![0usize; n];
    let before = |a: usize, b: usize| match (rows.get(a), rows.get(b)) {
        (Some(x), Some(y)) => compare(x, y, order) != Ordering::Greater,
        _ => true,
    };
    let mut width = 1;
    while width < n {
        let mut start = 0;
        while start < n {
            let mid = start.saturating_add(width).min(n);
            let end = start.saturating_add(2 * width).min(n);
            let (mut a, mut b) = (start, mid);
            for slot in out.get_mut(start..end).unwrap_or_default() {
                let (x, y) = (idx.get(a).copied(), idx.get(b).copied());
                let take_a = match (x, y) {
                    (Some(x), Some(y)) if a < mid && b < end => before(x, y),
                    _ => a < mid,
                };
                *slot = if take_a { x } else { y }.unwrap_or(0);
                if take_a {
                    a += 1;
                } else {
                    b += 1;
                }
            }
            start = end;
        }
        std::mem::swap(&mut idx, &mut out);
        width *= 2;
    }
    let mut rows: Vec<Option<Row>> = rows.into_iter().map(Some).collect();
    idx.into_iter().filter_map(|i| rows.get_mut(i).and_then(Option::take)).collect()
}

/// The report of the metrics (this process's life) with no options: what the admin API
/// answers without a query. `None` for `bySubscription` without per-subscription metrics.
pub fn report(gw: &Gateway, kind: Report, value: &mut dyn FnMut(u32, usize) -> u64) -> Option<String> {
    struct Metrics<'v>(&'v mut dyn FnMut(u32, usize) -> u64, NoStore);
    impl LocalHost for Metrics<'_> {
        fn store(&mut self) -> &mut dyn mlgate_core::limits::Store {
            // Never asked: without a window the metrics answer.
            &mut self.1
        }
        fn metric(&mut self, slot: u32, index: usize) -> Option<u64> {
            Some((self.0)(slot, index))
        }
    }
    struct NoStore;
    impl mlgate_core::limits::Store for NoStore {
        fn get(&mut self, _: &str) -> Result<Option<(Vec<u8>, u32)>, mlgate_core::limits::HostError> {
            Ok(None)
        }
        fn set(&mut self, _: &str, _: &[u8], _: u32) -> Result<(), mlgate_core::limits::SetError> {
            Err(mlgate_core::limits::SetError::Host)
        }
    }
    let q = Query { window: None, ..Query::default() };
    answer(gw, kind, &q, &mut Metrics(value, NoStore), 0, &mut |_| String::new()).ok()
}

/// The report for query `q` at `now_ms`: numbers from the host's metrics, or from the
/// timeline in its store when `q` has a time window (and for `byTime`). `next_link(skip)` is
/// the URL of the page that starts at record `skip`, when `$top` leaves records out.
pub fn answer(
    gw: &Gateway,
    kind: Report,
    q: &Query,
    host: &mut dyn LocalHost,
    now_ms: u64,
    next_link: &mut dyn FnMut(usize) -> String,
) -> Result<String, Refused> {
    let plan = &gw.usage;
    if (kind == Report::BySubscription || q.subscription.is_some()) && !plan.per_subscription {
        return Err(Refused::NoSubscriptions);
    }
    let interval = match (kind, q.interval_ms) {
        (Report::ByTime, Some(i)) => i,
        (Report::ByTime, None) => {
            return Err(Refused::Invalid(Invalid { target: "interval", message: "byTime needs an interval (PT15M, PT1H, …).".into() }))
        }
        _ => 0,
    };
    let (from, to) = q.window.unwrap_or((0, u64::MAX));
    let mut rows = Vec::new();
    if kind == Report::ByTime {
        // Intervals from the window's first quarter; without a lower bound, from a multiple of
        // the interval since the epoch (P1D: UTC midnight) at or before the oldest kept quarter.
        let origin = match q.window {
            Some((from, _)) if from > timeline::oldest(now_ms) => from.div_ceil(QUARTER_MS).saturating_mul(QUARTER_MS),
            _ => timeline::oldest(now_ms) / interval * interval,
        };
        // One sum per interval from the origin to the current quarter (at most 100 quarters).
        let last = now_ms.min(to).saturating_sub(origin) / interval;
        let mut by = vec![Acc::default(); usize::try_from(last.saturating_add(1).min(128)).unwrap_or(128)];
        for (i, s) in plan.slots().iter().enumerate() {
            let Ok(slot) = u32::try_from(i) else { break };
            if passes(gw, q, s) {
                let mut visit = |start: u64, a: &Acc| {
                    if let Some(sum) = usize::try_from(start.saturating_sub(origin) / interval).ok().and_then(|k| by.get_mut(k)) {
                        sum.add(a);
                    }
                };
                timeline::quarters(host.store(), slot, fingerprint(gw, slot), now_ms, from.max(origin), to, &mut visit);
            }
        }
        let iv = duration(interval);
        for (k, acc) in (0u64..).zip(by).filter(|(_, a)| a.total() > 0) {
            let timestamp = origin.saturating_add(k.saturating_mul(interval));
            let mut head = String::new();
            field_str(&mut head, "timestamp", &mlgate_core::time::format_rfc3339(timestamp));
            field_str(&mut head, "interval", &iv);
            rows.push(Row { head, name: String::new(), timestamp, acc });
        }
    } else {
        rows = grouped(gw, kind, q, host, now_ms);
    }
    if !q.order.is_empty() {
        rows = sorted(rows, &q.order);
    }
    let count = rows.len();
    let shown = rows.iter().skip(q.skip).take(q.top.unwrap_or(usize::MAX));
    let mut out = String::with_capacity(64 + 480 * count.min(1000));
    out.push_str("{\"value\":[");
    let mut n = 0usize;
    for r in shown {
        if n > 0 {
            out.push(',');
        }
        n += 1;
        record(&mut out, &r.head, &r.acc);
    }
    out.push_str("],\"count\":");
    out.push_str(&count.to_string());
    let next = q.skip.saturating_add(n);
    if next < count {
        out.push_str(",\"nextLink\":");
        push_str(&mut out, &next_link(next));
    }
    out.push('}');
    Ok(out)
}

/// The rows of `byApi` … `bySubscription`: one per configured entity the filters leave, with
/// the sums of the slots that count there.
fn grouped(gw: &Gateway, kind: Report, q: &Query, host: &mut dyn LocalHost, now_ms: u64) -> Vec<Row> {
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
        _ => gw.subscriptions.len(),
    };
    let mut accs = vec![Acc::default(); groups];
    for (i, s) in plan.slots().iter().enumerate() {
        let group = match kind {
            Report::ByApi => s.api.map(usize::from),
            Report::ByOperation => s.api.zip(s.op).and_then(|(a, o)| Some(op_base.get(usize::from(a))? + usize::from(o))),
            Report::ByProduct => s.product.map(|p| p as usize),
            _ => s.sub.map(|u| u as usize),
        };
        let (Some(acc), Ok(slot)) = (group.and_then(|g| accs.get_mut(g)), u32::try_from(i)) else { continue };
        if !passes(gw, q, s) {
            continue;
        }
        match q.window {
            None => acc.add(&Acc::read(slot, s, &mut |slot, index| host.metric(slot, index).unwrap_or(0))),
            Some((from, to)) => timeline::quarters(host.store(), slot, fingerprint(gw, slot), now_ms, from, to, &mut |_, a| acc.add(a)),
        }
    }

    // Each configured entity in order: its identifying fields, its name, and whether the
    // filters on its own identifiers leave it in the report.
    let mut entities: Vec<(String, String, bool)> = Vec::with_capacity(groups);
    match kind {
        Report::ByApi => {
            for api in &gw.apis {
                let mut head = String::new();
                field_str(&mut head, "name", &api.name);
                field_str(&mut head, "apiId", &format!("/apis/{}", api.id));
                entities.push((head, api.name.clone(), names(&q.api, "/apis/", &api.id)));
            }
        }
        Report::ByOperation => {
            for api in &gw.apis {
                for op in &api.operations {
                    let mut head = String::new();
                    field_str(&mut head, "name", &op.name);
                    field_str(&mut head, "apiId", &format!("/apis/{}", api.id));
                    field_str(&mut head, "operationId", &format!("/apis/{}/operations/{}", api.id, op.id));
                    let listed = names(&q.api, "/apis/", &api.id) && names_op(&q.operation, &api.id, &op.id);
                    entities.push((head, op.name.clone(), listed));
                }
            }
        }
        Report::ByProduct => {
            for p in &gw.products {
                let mut head = String::new();
                field_str(&mut head, "name", &p.name);
                field_str(&mut head, "productId", &format!("/products/{}", p.id));
                // The stand-in product of API-scoped subscriptions is no product: not listed.
                entities.push((head, p.name.clone(), p.listed && names(&q.product, "/products/", &p.id)));
            }
        }
        _ => {
            for s in &gw.subscriptions {
                let mut head = String::new();
                // The id, not the subscription's free-text name: operators write anything there.
                field_str(&mut head, "name", &s.id);
                let product = gw.products.get(s.product as usize);
                if let Some(p) = product.filter(|p| p.listed) {
                    field_str(&mut head, "productId", &format!("/products/{}", p.id));
                }
                field_str(&mut head, "subscriptionId", &format!("/subscriptions/{}", s.id));
                // An open product's keyless calls have no subscription: not listed here.
                let listed = !s.id.is_empty()
                    && names(&q.subscription, "/subscriptions/", &s.id)
                    && product.is_some_and(|p| names(&q.product, "/products/", &p.id));
                entities.push((head, s.id.clone(), listed));
            }
        }
    }
    entities
        .into_iter()
        .zip(accs)
        .filter(|((_, _, listed), _)| *listed)
        .map(|((head, name, _), acc)| Row { head, name, timestamp: 0, acc })
        .collect()
}
