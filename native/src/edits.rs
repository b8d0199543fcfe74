//! From the core's complete upstream header list to the few edits Envoy's ABI can make.
//!
//! The Wasm host replaces the whole header map in one call; the dynamic-module ABI has no such
//! call, only set (replace every value of one name, or remove it) and add. So the shim compares
//! the core's [`mlgate::Forward::upstream_headers`] with what the client sent, name by name, and
//! changes exactly the names whose values differ. No policy lives here: what goes upstream is
//! the core's list, whatever it contains.

/// One name to change: its new values in order, or none to remove it.
#[derive(Debug, PartialEq, Eq)]
pub struct Edit {
    /// Lower-case (Envoy's header maps are).
    pub name: Vec<u8>,
    pub values: Vec<Vec<u8>>,
}

/// The edits that turn `original` into `wanted` (names compared ASCII case-insensitively; the
/// order of different names is not significant in HTTP, the order of one name's values is).
pub fn diff(original: &[(&[u8], &[u8])], wanted: &[(&[u8], &[u8])]) -> Vec<Edit> {
    let mut names: Vec<&[u8]> = Vec::with_capacity(original.len() + wanted.len());
    for (k, _) in original.iter().chain(wanted) {
        if !names.iter().any(|n| n.eq_ignore_ascii_case(k)) {
            names.push(k);
        }
    }
    let mut out = Vec::new();
    for name in names {
        let (before, after) = (values_of(original, name), values_of(wanted, name));
        if before != after {
            out.push(Edit { name: name.to_ascii_lowercase(), values: after.into_iter().map(<[u8]>::to_vec).collect() });
        }
    }
    out
}

fn values_of<'a>(list: &[(&[u8], &'a [u8])], name: &[u8]) -> Vec<&'a [u8]> {
    list.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| *v).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit(name: &str, values: &[&str]) -> Edit {
        Edit { name: name.as_bytes().to_vec(), values: values.iter().map(|v| v.as_bytes().to_vec()).collect() }
    }

    #[test]
    fn changes_only_what_differs() {
        let original: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":path", b"/api/x?subscription-key=k&a=1"),
            (b":authority", b"gw"),
            (b"ocp-apim-subscription-key", b"k"),
            (b"x-mlgate-product-id", b"gold"),
            (b"x-mlgate-product-id", b"platinum"),
            (b"content-type", b"application/json"),
        ];
        let wanted: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":path", b"/x?a=1"),
            (b":authority", b"backend"),
            (b"content-type", b"application/json"),
            (b"authorization", b"Bearer b"),
            (b"X-Mlgate-Subscription-Id", b"alice"),
            (b"x-mlgate-product-id", b"starter"),
        ];
        assert_eq!(
            diff(&original, &wanted),
            vec![
                edit(":path", &["/x?a=1"]),
                edit(":authority", &["backend"]),
                edit("ocp-apim-subscription-key", &[]),
                edit("x-mlgate-product-id", &["starter"]),
                edit("authorization", &["Bearer b"]),
                edit("x-mlgate-subscription-id", &["alice"]),
            ]
        );
    }

    #[test]
    fn identical_lists_need_no_edit_and_value_order_counts() {
        let a: Vec<(&[u8], &[u8])> = vec![(b"x", b"1"), (b"y", b"2"), (b"x", b"3")];
        assert!(diff(&a, &a).is_empty());
        let b: Vec<(&[u8], &[u8])> = vec![(b"y", b"2"), (b"x", b"1"), (b"x", b"3")];
        assert!(diff(&a, &b).is_empty(), "order across names is not significant");
        let c: Vec<(&[u8], &[u8])> = vec![(b"x", b"3"), (b"y", b"2"), (b"x", b"1")];
        assert_eq!(diff(&a, &c), vec![edit("x", &["3", "1"])]);
    }

    #[test]
    fn any_bytes() {
        let a: Vec<(&[u8], &[u8])> = vec![(b"k", b"\xff\x00\x80")];
        let b: Vec<(&[u8], &[u8])> = vec![(b"k", b"\xff\x00\x81")];
        assert_eq!(diff(&a, &b), vec![Edit { name: b"k".to_vec(), values: vec![b"\xff\x00\x81".to_vec()] }]);
    }
}
