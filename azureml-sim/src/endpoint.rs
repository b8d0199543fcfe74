//! Storage account names and blob endpoint URLs, as the connection string parser and the
//! allow-list both read them.

/// Azure storage account names: 3 to 24 lower-case letters and digits.
pub fn valid_account_name(name: &str) -> bool {
    (3..=24).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Normalises a blob endpoint URL to `scheme://host[:port][/path]`: scheme and host lower
/// case, the default port dropped, no trailing slash. Refuses every other form: schemes other
/// than http and https, user info (`http://allowed@evil/`), queries, fragments, percent
/// escapes, backslashes, whitespace and non-ASCII, empty, `.` and `..` path segments, and
/// path characters outside RFC 3986's unreserved set.
pub fn normalize_endpoint(url: &str) -> Result<String, String> {
    const BAD: &str = "is not a plain http(s)://host[:port][/path] URL";
    if url.is_empty() || url.len() > 512 || !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("the endpoint {BAD}"));
    }
    if url.contains(['@', '?', '#', '%', '\\']) {
        return Err(format!("the endpoint {BAD} (no user info, query, fragment or escapes)"));
    }
    let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("the endpoint {BAD}"))?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return Err("the endpoint must be http:// or https://".into()),
    };
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    let (host, port) = split_host_port(authority).ok_or_else(|| format!("the endpoint host {BAD}"))?;
    let mut out = format!("{scheme}://{host}");
    if let Some(p) = port.filter(|&p| p != default_port) {
        out.push_str(&format!(":{p}"));
    }
    if let Some(path) = path.trim_end_matches('/').strip_prefix('/') {
        for seg in path.split('/') {
            let ok = !seg.is_empty() && seg != "." && seg != ".." && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
            if !ok {
                return Err(format!("the endpoint path {BAD}"));
            }
            out.push('/');
            out.push_str(seg);
        }
    }
    Ok(out)
}

/// `host[:port]` or `[v6][:port]` → (lower-case host, port). Hosts are DNS names or IPv4
/// literals (letters, digits, `-`, `.`), or bracketed IPv6 literals.
fn split_host_port(authority: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (inner, after) = v6.split_once(']')?;
        if inner.is_empty() || !inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
            return None;
        }
        let port = if after.is_empty() { None } else { Some(after.strip_prefix(':')?) };
        (format!("[{}]", inner.to_ascii_lowercase()), port)
    } else {
        let (h, p) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        let label_ok = |l: &str| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if h.len() > 253 || !h.split('.').all(label_ok) {
            return None;
        }
        (h.to_ascii_lowercase(), p)
    };
    let port = match port {
        None => None,
        Some(p) if (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse::<u16>().ok().filter(|&n| n != 0)?),
        Some(_) => return None,
    };
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: &str = "http://127.0.0.1:10000/devstoreaccount1";

    #[test]
    fn normalizes_endpoints() {
        for (given, want) in [
            ("http://127.0.0.1:10000/devstoreaccount1", DEV),
            ("HTTP://127.0.0.1:10000/devstoreaccount1/", DEV),
            ("http://127.0.0.1:10000/devstoreaccount1///", DEV),
            ("https://Acct.Blob.Core.Windows.NET:443", "https://acct.blob.core.windows.net"),
            ("http://localhost:80/", "http://localhost"),
            ("http://[::1]:10000/a", "http://[::1]:10000/a"),
            ("https://x.example:8443/a/b~c", "https://x.example:8443/a/b~c"),
        ] {
            assert_eq!(normalize_endpoint(given).as_deref(), Ok(want), "{given}");
        }
        for bad in [
            "",
            "127.0.0.1:10000/devstoreaccount1",
            "ftp://127.0.0.1/x",
            "file:///etc/passwd",
            "http://127.0.0.1:10000@evil.example/devstoreaccount1",
            "http://user:pw@127.0.0.1:10000/devstoreaccount1",
            "http://127.0.0.1:10000/devstoreaccount1?x=1",
            "http://127.0.0.1:10000/devstoreaccount1#x",
            "http://127.0.0.1:10000/devstoreaccount1/../other",
            "http://127.0.0.1:10000/./devstoreaccount1",
            "http://127.0.0.1:10000//devstoreaccount1",
            "http://127.0.0.1:10000/dev%73toreaccount1",
            "http://127.0.0.1%2e:10000/x",
            "http://127.0.0.1:10000\\@evil/x",
            "http://127.0.0.1 :10000/x",
            "http://127.0.0.1:10000/dev storeaccount1",
            "http://ex\u{e4}mple.com/x",
            "http://127.0.0.1:0/x",
            "http://127.0.0.1:99999/x",
            "http://127.0.0.1:+80/x",
            "http://127.0.0.1:/x",
            "http://:80/x",
            "http:///x",
            "http://a..b/x",
            "http://[::1/x",
            "http://[::1]x/",
            "http://[]/x",
            "http://a:1:2/x",
        ] {
            assert!(normalize_endpoint(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
