//! What mlgate tells later filters and the access log about an admitted call, as filter
//! state. Every value is percent-encoded (form style: bytes outside `A-Z a-z 0-9 - . _ ~`
//! become `%XX`), so no template parameter can add or override a field: a workspace named
//! `x&subscription=bob` exports as `workspace=x%26subscription%3Dbob`.

use super::Identity;
use crate::model::ExportMetadata;
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
