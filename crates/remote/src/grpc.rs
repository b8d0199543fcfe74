//! The check as a plain HTTP/2 request, for a host that has HTTP calls but no gRPC call (Envoy's
//! dynamic modules): gRPC is a POST to `/<service>/<method>` whose body is one message behind a
//! 5-byte prefix (a compression flag, then the length, big-endian), and whose status is
//! `grpc-status` (in the trailers, or in the headers of a trailers-only answer).
//!
//! A host that only sees the answer's headers and body (the dynamic-module callout hands no
//! trailers over) reads it as: HTTP 200, no `grpc-status` other than `0` in the headers, and a
//! body that is exactly one uncompressed message. Anything else is a failed call: a timeout or
//! a refused connection (Envoy answers those itself, 504 or 503), an error status, a body cut or
//! padded. A service that sent a message and then an error status in the trailers would be
//! read by its message; mlgate-rls never does (its errors are trailers-only).

use super::names::{METHOD, SERVICE};

/// The request's headers: `:authority` is the cluster's name (Envoy routes the call by cluster,
/// the name only has to be a valid authority for the request to be built).
pub fn request_headers(cluster: &str) -> [(&'static str, String); 5] {
    [
        (":method", "POST".to_string()),
        (":path", format!("/{SERVICE}/{METHOD}")),
        (":authority", cluster.to_string()),
        ("content-type", "application/grpc".to_string()),
        ("te", "trailers".to_string()),
    ]
}

/// One message as a gRPC body.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let len = u32::try_from(message.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(message.len() + 5);
    out.push(0);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// The answer's message, from its `:status`, its `grpc-status` header if any, and its body
/// (the whole of it: the host concatenates the chunks). `None`: a failed call.
pub fn message<'b>(status: Option<&[u8]>, grpc_status: Option<&[u8]>, body: &'b [u8]) -> Option<&'b [u8]> {
    if status != Some(b"200".as_slice()) || grpc_status.is_some_and(|s| s != b"0") {
        return None;
    }
    let (prefix, rest) = body.split_at_checked(5)?;
    let [flag, len @ ..] = prefix else { return None };
    let len: [u8; 4] = len.try_into().ok()?;
    // Compressed (flag 1) was never asked for; the length must be the rest of the body exactly.
    (*flag == 0 && usize::try_from(u32::from_be_bytes(len)).ok() == Some(rest.len())).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn a_framed_message_reads_back_and_anything_else_fails() {
        let body = frame(b"\x08\x01");
        assert_eq!(body, b"\x00\x00\x00\x00\x02\x08\x01");
        assert_eq!(message(Some(b"200"), None, &body), Some(&b"\x08\x01"[..]));
        assert_eq!(message(Some(b"200"), Some(b"0"), &body), Some(&b"\x08\x01"[..]));
        // An empty message is a message (all defaults).
        assert_eq!(message(Some(b"200"), None, &frame(b"")), Some(&b""[..]));
        for (status, grpc, body) in [
            (Some(&b"504"[..]), None, &body[..]),
            (None, None, &body[..]),
            (Some(b"200"), Some(&b"14"[..]), &body[..]),
            (Some(b"200"), None, b""),
            (Some(b"200"), None, b"\x00\x00\x00"),
            (Some(b"200"), None, b"\x00\x00\x00\x00\x03\x08\x01"),
            (Some(b"200"), None, b"\x00\x00\x00\x00\x01\x08\x01"),
            (Some(b"200"), None, b"\x01\x00\x00\x00\x02\x08\x01"),
            (Some(b"200"), None, b"\x00\xff\xff\xff\xff"),
        ] {
            assert_eq!(message(status, grpc, body), None, "{status:?} {grpc:?} {body:?}");
        }
    }

    #[test]
    fn the_request_names_the_method_and_the_cluster() {
        let h = request_headers("rls");
        assert!(h.contains(&(":path", "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit".to_string())));
        assert!(h.contains(&(":authority", "rls".to_string())));
        assert!(h.contains(&("content-type", "application/grpc".to_string())));
    }
}
