//! A report request's query options, as APIM's Reports API takes them: `$filter`, `$top`,
//! `$skip`, `$orderby` and (for `byTime`) `interval`. Every byte is a client's: anything this
//! does not understand is an error with the parameter it is about, never a guess and never a
//! panic.
//!
//! `$filter` is clauses joined by `and` (no `or`, `not` or parentheses):
//!
//! | field | operators | value |
//! |---|---|---|
//! | `timestamp` | `ge`, `gt`, `le`, `lt` | `datetime'2026-06-01T00:00:00'`, `'…'` or bare; RFC 3339, UTC unless it has an offset |
//! | `apiId`, `operationId`, `productId`, `subscriptionId` | `eq` | `'/apis/<id>'` (APIM's identifier path) or `'<id>'` |
//!
//! `interval` is an ISO 8601 duration (`PT15M`, `PT1H`, `P1D`, `P1DT12H`), a non-zero
//! multiple of 15 minutes. `$orderby` is up to four fields, each `asc` (default) or `desc`.

use mlgate_core::keys::query_decode;
use mlgate_core::usage::QUARTER_MS;

/// The longest `$filter` taken, and the most clauses in it.
const MAX_FILTER: usize = 2048;
const MAX_CLAUSES: usize = 16;
const MAX_ORDER: usize = 4;
/// The longest `interval` taken: 31 days (longer adds nothing over 25 hours of buckets).
const MAX_INTERVAL_MS: u64 = 31 * 24 * 3_600_000;

/// A parameter the request got wrong: which one, and why (APIM's `details[].target`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub target: &'static str,
    pub message: String,
}

fn invalid(target: &'static str, message: &str) -> Invalid {
    Invalid { target, message: message.to_string() }
}

/// `<what>: '<value>'` (at most 64 characters of the client's value): one formatting site for
/// every message that quotes the request, as each costs code in the .wasm.
fn bad(target: &'static str, what: &str, value: &str) -> Invalid {
    let value: String = value.chars().take(64).collect();
    Invalid { target, message: format!("{what}: '{value}'") }
}

/// A sort key of `$orderby`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Name,
    Timestamp,
    CallCountSuccess,
    CallCountBlocked,
    CallCountFailed,
    CallCountOther,
    CallCountTotal,
    Bandwidth,
    ApiTimeAvg,
    ApiTimeMin,
    ApiTimeMax,
    ServiceTimeAvg,
    ServiceTimeMin,
    ServiceTimeMax,
    PromptTokens,
    CompletionTokens,
    TotalTokens,
}

const FIELDS: [(&str, Field); 17] = [
    ("name", Field::Name),
    ("timestamp", Field::Timestamp),
    ("callCountSuccess", Field::CallCountSuccess),
    ("callCountBlocked", Field::CallCountBlocked),
    ("callCountFailed", Field::CallCountFailed),
    ("callCountOther", Field::CallCountOther),
    ("callCountTotal", Field::CallCountTotal),
    ("bandwidth", Field::Bandwidth),
    ("apiTimeAvg", Field::ApiTimeAvg),
    ("apiTimeMin", Field::ApiTimeMin),
    ("apiTimeMax", Field::ApiTimeMax),
    ("serviceTimeAvg", Field::ServiceTimeAvg),
    ("serviceTimeMin", Field::ServiceTimeMin),
    ("serviceTimeMax", Field::ServiceTimeMax),
    ("promptTokens", Field::PromptTokens),
    ("completionTokens", Field::CompletionTokens),
    ("totalTokens", Field::TotalTokens),
];

/// A report request's options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Quarter starts in `[from_ms, to_ms]` (UTC milliseconds), when `$filter` names `timestamp`.
    pub window: Option<(u64, u64)>,
    /// `eq` filters on identifiers, as given (`/apis/x` or `x`).
    pub api: Option<String>,
    pub operation: Option<String>,
    pub product: Option<String>,
    pub subscription: Option<String>,
    pub top: Option<usize>,
    pub skip: usize,
    /// (field, descending), first key first.
    pub order: Vec<(Field, bool)>,
    /// `byTime`'s interval in milliseconds.
    pub interval_ms: Option<u64>,
}

/// Parses a request's query string (after `?`). Parameters other than the five are ignored
/// (`api-version` among them); one of the five given twice is an error.
pub fn parse(query: &[u8]) -> Result<Query, Invalid> {
    let mut q = Query::default();
    let mut seen = [false; 5];
    for pair in query.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (pair.get(..i).unwrap_or_default(), pair.get(i + 1..).unwrap_or_default()),
            None => (pair, &b""[..]),
        };
        let name = query_decode(k);
        let Some(i) = [&b"$filter"[..], b"$top", b"$skip", b"$orderby", b"interval"].iter().position(|n| *n == &name[..]) else { continue };
        let target = ["$filter", "$top", "$skip", "$orderby", "interval"].get(i).copied().unwrap_or("$filter");
        match seen.get_mut(i) {
            Some(true) => return Err(bad(target, "given more than once", target)),
            Some(s) => *s = true,
            None => continue,
        }
        let raw = query_decode(v);
        let value = std::str::from_utf8(&raw).map_err(|_| bad(target, "not UTF-8", target))?;
        match i {
            0 => filter(value, &mut q)?,
            1 => q.top = Some(number(value, target, 1)?),
            2 => q.skip = number(value, target, 0)?,
            3 => q.order = orderby(value)?,
            _ => q.interval_ms = Some(interval(value)?),
        }
    }
    Ok(q)
}

fn number(v: &str, target: &'static str, min: usize) -> Result<usize, Invalid> {
    let n = (!v.is_empty() && v.len() <= 9 && v.bytes().all(|b| b.is_ascii_digit())).then(|| v.parse::<usize>().ok()).flatten();
    match n {
        Some(n) if n >= min => Ok(n),
        _ if min == 0 => Err(bad(target, "$skip must be a whole number from 0 to 999999999", v)),
        _ => Err(bad(target, "$top must be a whole number from 1 to 999999999", v)),
    }
}

/// The words of a filter: runs of non-space, where a quoted string (`'…'`, `''` inside is a
/// quote) is part of its word whatever it holds.
fn words(s: &str) -> Result<Vec<&str>, Invalid> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
            i += 1;
            continue;
        }
        let start = i;
        while let Some(&c) = b.get(i) {
            if c.is_ascii_whitespace() {
                break;
            }
            i += 1;
            if c == b'\'' {
                loop {
                    match (b.get(i), b.get(i + 1)) {
                        (Some(b'\''), Some(b'\'')) => i += 2,
                        (Some(b'\''), _) => {
                            i += 1;
                            break;
                        }
                        (Some(_), _) => i += 1,
                        (None, _) => return Err(invalid("$filter", "$filter has a quote that is never closed.")),
                    }
                }
            }
        }
        out.push(s.get(start..i).ok_or_else(|| invalid("$filter", "$filter is malformed."))?);
    }
    Ok(out)
}

/// A literal's text: `datetime'…'`, `'…'` (with `''` for a quote) or a bare word.
fn literal(w: &str) -> Result<String, Invalid> {
    let quoted = w.strip_prefix("datetime").filter(|r| r.starts_with('\'')).unwrap_or(w);
    match quoted.strip_prefix('\'') {
        Some(rest) => match rest.strip_suffix('\'') {
            Some(inner) => Ok(inner.replace("''", "'")),
            None => Err(bad("$filter", "$filter has a malformed literal", w)),
        },
        None => Ok(w.to_string()),
    }
}

/// A timestamp: RFC 3339, with `Z` assumed when it names no offset (APIM's examples send
/// `datetime'2017-06-01T00:00:00'`).
fn timestamp(v: &str) -> Result<u64, Invalid> {
    let has_zone = v.ends_with(['Z', 'z']) || v.get(19..).is_some_and(|t| t.contains(['+', '-']));
    let full = if has_zone { v.to_string() } else { format!("{v}Z") };
    mlgate_core::time::parse_rfc3339_ms(&full)
        .ok_or_else(|| bad("$filter", "$filter: not a timestamp (yyyy-MM-ddTHH:mm:ss, UTC unless an offset is given)", v))
}

fn filter(s: &str, q: &mut Query) -> Result<(), Invalid> {
    if s.len() > MAX_FILTER {
        return Err(invalid("$filter", "$filter is longer than 2048 characters."));
    }
    let w = words(s)?;
    if w.iter().any(|w| w.starts_with('(') || w.ends_with(')')) {
        return Err(invalid("$filter", "$filter takes no parentheses: clauses joined by 'and'."));
    }
    let (mut from, mut to) = (0u64, u64::MAX);
    let mut timed = false;
    let mut clauses = 0;
    let mut rest = w.as_slice();
    loop {
        let [field, op, value, tail @ ..] = rest else {
            return Err(invalid("$filter", "$filter must be clauses '<field> <operator> <value>' joined by 'and'."));
        };
        clauses += 1;
        if clauses > MAX_CLAUSES {
            return Err(invalid("$filter", "$filter has more than 16 clauses."));
        }
        let v = literal(value)?;
        match (*field, *op) {
            ("timestamp", "ge" | "gt" | "le" | "lt") => {
                let t = timestamp(&v)?;
                timed = true;
                match *op {
                    "ge" => from = from.max(t),
                    "gt" => from = from.max(t.saturating_add(1)),
                    "le" => to = to.min(t),
                    _ => to = to.min(t.saturating_sub(1)),
                }
            }
            ("timestamp", _) => return Err(bad("$filter", "$filter: timestamp takes ge, gt, le or lt, not", op)),
            ("apiId" | "operationId" | "productId" | "subscriptionId", "eq") => {
                let slot = match *field {
                    "apiId" => &mut q.api,
                    "operationId" => &mut q.operation,
                    "productId" => &mut q.product,
                    _ => &mut q.subscription,
                };
                if slot.replace(v).is_some() {
                    return Err(bad("$filter", "$filter names a field twice", field));
                }
            }
            ("apiId" | "operationId" | "productId" | "subscriptionId", _) => {
                return Err(bad("$filter", "$filter: identifiers take eq, not", op))
            }
            ("userId" | "apiRegion", _) => return Err(bad("$filter", "$filter: mlgate has no users and one region, so no", field)),
            _ => {
                return Err(bad(
                    "$filter",
                    "$filter: not a field it filters on (timestamp, apiId, operationId, productId, subscriptionId)",
                    field,
                ))
            }
        }
        match tail {
            [] => break,
            ["and", more @ ..] => rest = more,
            [other, ..] => return Err(bad("$filter", "$filter joins clauses with 'and' only, not", other)),
        }
    }
    if timed {
        q.window = Some((from, to));
    }
    Ok(())
}

fn orderby(s: &str) -> Result<Vec<(Field, bool)>, Invalid> {
    let mut out = Vec::new();
    for key in s.split(',') {
        let mut w = key.split_ascii_whitespace();
        let (Some(name), dir, None) = (w.next(), w.next(), w.next()) else {
            return Err(invalid("$orderby", "$orderby is '<field> [asc|desc]', comma-separated."));
        };
        let name = if name == "displayName" { "name" } else { name };
        let Some(field) = FIELDS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f) else {
            return Err(bad("$orderby", "$orderby: not a field of the report's records", name));
        };
        let desc = match dir {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(d) => return Err(bad("$orderby", "$orderby: neither asc nor desc", d)),
        };
        if out.len() == MAX_ORDER {
            return Err(invalid("$orderby", "$orderby takes at most 4 fields."));
        }
        out.push((field, desc));
    }
    Ok(out)
}

/// An ISO 8601 duration of days, hours, minutes and seconds, in milliseconds: a non-zero
/// multiple of 15 minutes.
pub fn interval(s: &str) -> Result<u64, Invalid> {
    let bad = || bad("interval", "interval must be an ISO 8601 duration that is a non-zero multiple of 15 minutes (PT15M, PT1H, P1D)", s);
    let rest = s.strip_prefix('P').ok_or_else(bad)?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) if !t.is_empty() => (d, t),
        Some(_) => return Err(bad()),
        None => (rest, ""),
    };
    let mut total = 0u64;
    for (part, units) in [(date, &[('D', 86_400_000u64)][..]), (time, &[('H', 3_600_000), ('M', 60_000), ('S', 1000)][..])] {
        let mut p = part;
        let mut allowed = units;
        while !p.is_empty() {
            let digits = p.bytes().take_while(u8::is_ascii_digit).count();
            let (n, after) = p.split_at_checked(digits).ok_or_else(bad)?;
            let unit = after.chars().next().ok_or_else(bad)?;
            let at = allowed.iter().position(|(u, _)| *u == unit).ok_or_else(bad)?;
            let ms = allowed.get(at).map(|(_, ms)| *ms).ok_or_else(bad)?;
            if n.is_empty() || n.len() > 6 {
                return Err(bad());
            }
            let n: u64 = n.parse().map_err(|_| bad())?;
            total = total.saturating_add(n.saturating_mul(ms));
            allowed = allowed.get(at + 1..).unwrap_or_default();
            p = after.get(1..).unwrap_or_default();
        }
    }
    if total == 0 || !total.is_multiple_of(QUARTER_MS) {
        return Err(bad());
    }
    if total > MAX_INTERVAL_MS {
        return Err(invalid("interval", "interval may be at most 31 days (P31D)."));
    }
    Ok(total)
}

/// An interval as `XmlConvert.ToString(TimeSpan)` writes it: `PT15M`, `PT1H30M`, `P1D`, `P1DT6H`.
pub fn duration(ms: u64) -> String {
    let (d, h, m) = (ms / 86_400_000, ms % 86_400_000 / 3_600_000, ms % 3_600_000 / 60_000);
    let mut out = String::from("P");
    if d > 0 {
        out.push_str(&format!("{d}D"));
    }
    if h > 0 || m > 0 {
        out.push('T');
        if h > 0 {
            out.push_str(&format!("{h}H"));
        }
        if m > 0 {
            out.push_str(&format!("{m}M"));
        }
    }
    out
}
