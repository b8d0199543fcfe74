//! What mlgate tells later filters and the access log about an admitted call, as filter
//! state. Every value is percent-encoded (form style: bytes outside `A-Z a-z 0-9 - . _ ~`
//! become `%XX`), so no template parameter can add or override a field: a workspace named
//! `x&subscription=bob` exports as `workspace=x%26subscription%3Dbob`.

use super::identify::Identity;
use crate::model::{ExportMetadata, Gateway};
use crate::usage::Matched;
use percent_encoding::{percent_encode, AsciiSet, NON_ALPHANUMERIC};

const VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Appends `k=v` (v encoded), preceded by `&` unless `out` is empty.
fn push_pair(out: &mut String, k: &str, v: &[u8]) {
    if !out.is_empty() {
        out.push('&');
    }
    out.extend(percent_encode(k.as_bytes(), VALUE));
    out.push('=');
    out.extend(percent_encode(v, VALUE));
}

/// `api=…&operation=…&subscription=…&product=…` followed by the template parameters.
pub fn combined(id: &Identity<'_, '_>) -> String {
    let mut out = String::with_capacity(96);
    for (k, v) in [("api", &id.api.id), ("operation", &id.op.id), ("subscription", &id.sub.id), ("product", &id.product.id)] {
        push_pair(&mut out, k, v.as_bytes());
    }
    for (k, v) in &id.params {
        push_pair(&mut out, k, v);
    }
    out
}

/// The template parameters alone, encoded the same way.
pub fn params(id: &Identity<'_, '_>) -> String {
    let mut out = String::with_capacity(48);
    for (k, v) in &id.params {
        push_pair(&mut out, k, v);
    }
    out
}

/// The filter-state properties of a refused call (401, 403, 404, 429, 503), so the access
/// log has its match too: what was matched as far as the request got, in the same shapes as
/// [`properties`] (a 401 knows its API and operation, not its subscription; a 429 knows all).
pub fn refused(gw: &Gateway, m: &Matched, mode: ExportMetadata) -> Vec<(&'static str, String)> {
    let api = m.api.and_then(|a| gw.apis.get(usize::from(a)));
    let op = m.op.and_then(|o| api?.operations.get(usize::from(o)));
    let sub = m.sub.and_then(|s| gw.subscriptions.get(s as usize));
    let product = sub.and_then(|s| gw.products.get(s.product as usize));
    let fields = [
        ("api", "mlgate.api", api.map(|a| &a.id)),
        ("operation", "mlgate.operation", op.map(|o| &o.id)),
        ("subscription", "mlgate.subscription", sub.map(|s| &s.id)),
        ("product", "mlgate.product", product.map(|p| &p.id)),
    ];
    match mode {
        ExportMetadata::Combined => {
            let mut out = String::with_capacity(64);
            for (k, _, v) in fields {
                if let Some(v) = v {
                    push_pair(&mut out, k, v.as_bytes());
                }
            }
            if out.is_empty() {
                Vec::new()
            } else {
                vec![("mlgate", out)]
            }
        }
        ExportMetadata::Fields => {
            fields.into_iter().filter_map(|(_, name, v)| Some((name, percent_encode(v?.as_bytes(), VALUE).to_string()))).collect()
        }
        ExportMetadata::Off => Vec::new(),
    }
}

/// The filter-state properties to set (name under `wasm.`, value) for the configured mode.
pub fn properties(mode: ExportMetadata, id: &Identity<'_, '_>) -> Vec<(&'static str, String)> {
    let enc = |v: &str| percent_encode(v.as_bytes(), VALUE).to_string();
    match mode {
        ExportMetadata::Combined => vec![("mlgate", combined(id))],
        ExportMetadata::Fields => vec![
            ("mlgate.api", enc(&id.api.id)),
            ("mlgate.operation", enc(&id.op.id)),
            ("mlgate.subscription", enc(&id.sub.id)),
            ("mlgate.product", enc(&id.product.id)),
            ("mlgate.params", params(id)),
        ],
        ExportMetadata::Off => Vec::new(),
    }
}
