//! Which storage accounts BES may touch. A job names its input and output storage in
//! connection strings the caller writes; without a check the sim would fetch from (and write
//! to) any URL a caller names: an open proxy to the cloud metadata service, the loopback
//! interface or any other account. The sim only talks to the accounts it was started with:
//! the development storage (`--dev-storage`, account `devstoreaccount1`) and each
//! `--allow-storage URL`.
//!
//! Endpoints are compared after a strict normalisation ([`normalize_endpoint`]) that refuses
//! anything a URL parser could read in more than one way (user info, percent escapes, dot
//! segments, queries, non-ASCII), so the string that was checked is the string requested.

use crate::blob::{Account, DEV_ACCOUNT};

/// One storage account the sim may use: its normalised blob endpoint and its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    pub endpoint: String,
    pub account: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<Allowed>,
}

impl AllowList {
    /// The development storage (`devstoreaccount1` at `dev_endpoint`) plus each extra URL: a
    /// path-style endpoint (`http://host:port/account`, the account is the last path segment)
    /// or a host-style one (`https://account.blob.core.windows.net`, the first host label).
    pub fn new(dev_endpoint: &str, extra: &[String]) -> Result<AllowList, String> {
        let dev = normalize_endpoint(dev_endpoint).map_err(|e| format!("--dev-storage: {e}"))?;
        let mut entries = vec![Allowed { endpoint: dev, account: DEV_ACCOUNT.to_string() }];
        for url in extra {
            let endpoint = normalize_endpoint(url).map_err(|e| format!("--allow-storage {url}: {e}"))?;
            let account = account_of(&endpoint).ok_or_else(|| {
                format!("--allow-storage {url}: cannot tell the account name (use http://host:port/ACCOUNT or https://ACCOUNT.blob.SUFFIX)")
            })?;
            entries.push(Allowed { endpoint, account });
        }
        Ok(AllowList { entries })
    }

    #[cfg(test)]
    pub fn entries(&self) -> &[Allowed] {
        &self.entries
    }

    fn has(&self, endpoint: &str, account: &str) -> bool {
        self.entries.iter().any(|e| e.endpoint == endpoint && e.account == account)
    }

    /// Ok if every endpoint the connection string named belongs to an allowed account of that
    /// name. The message names no value from the connection string.
    pub fn permits(&self, a: &Account) -> Result<(), String> {
        let named = std::iter::once(&a.endpoint).chain(a.suffix_endpoint.as_ref());
        for endpoint in named {
            if !self.has(endpoint, &a.name) {
                return Err(
                    "the storage account or endpoint is not one this server was started with (see azureml-sim --allow-storage)".into()
                );
            }
        }
        Ok(())
    }
}

/// The account an allowed endpoint serves: the last path segment (path-style, as Azurite),
/// else the account label of a host-style `ACCOUNT.blob.SUFFIX` endpoint (as Azure).
fn account_of(endpoint: &str) -> Option<String> {
    let rest = endpoint.split_once("://")?.1;
    let (host, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    let name = match path.rsplit('/').next().filter(|s| !s.is_empty()) {
        Some(last) => last,
        None => {
            let host = host.split(':').next().filter(|h| !h.starts_with('['))?;
            let labels: Vec<&str> = host.split('.').collect();
            (labels.len() >= 3 && labels[1] == "blob").then_some(labels[0])?
        }
    };
    valid_account_name(name).then(|| name.to_string())
}

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
    use crate::blob::DEV_KEY;

    const DEV: &str = "http://127.0.0.1:10000/devstoreaccount1";

    fn dev_only() -> AllowList {
        AllowList::new(DEV, &[]).unwrap()
    }

    /// Parses and checks a connection string as BES does.
    fn check(list: &AllowList, conn: &str) -> Result<Account, String> {
        let a = Account::parse(conn, DEV)?;
        list.permits(&a)?;
        Ok(a)
    }

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

    #[test]
    fn default_allows_only_dev_storage() {
        let list = dev_only();
        assert_eq!(list.entries(), &[Allowed { endpoint: DEV.into(), account: DEV_ACCOUNT.into() }]);
        let a = check(&list, "UseDevelopmentStorage=true").unwrap();
        assert_eq!(a.endpoint, DEV);
        // The explicit Azurite string (as the e2e tests and Azurite's docs write it).
        let explicit = format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEV_KEY};BlobEndpoint={DEV};\
             QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
        );
        assert!(check(&list, &explicit).is_ok());
        // Case and whitespace of keys do not matter; a trailing slash does not either.
        assert!(check(&list, &format!(" accountname = devstoreaccount1 ; ACCOUNTKEY={DEV_KEY} ; blobEndpoint={DEV}/ ")).is_ok());
        assert!(check(&list, "usedevelopmentstorage=TRUE").is_ok());
    }

    #[test]
    fn refuses_hostile_connection_strings() {
        let list = dev_only();
        let k = DEV_KEY;
        for bad in [
            // Foreign endpoints: metadata service, other local ports, other hosts.
            format!("AccountName=devstoreaccount1;AccountKey={k};BlobEndpoint=http://169.254.169.254/"),
            format!("AccountName=devstoreaccount1;AccountKey={k};BlobEndpoint=http://169.254.169.254/devstoreaccount1"),
            format!("AccountName=devstoreaccount1;AccountKey={k};BlobEndpoint=http://127.0.0.1:10001/devstoreaccount1"),
            format!("AccountName=devstoreaccount1;AccountKey={k};BlobEndpoint=http://localhost:10000/devstoreaccount1"),
            format!("AccountName=devstoreaccount1;AccountKey={k};BlobEndpoint=http://127.1:10000/devstoreaccount1"),
            format!("AccountName=devstoreaccount1;AccountKey={k};BlobEndpoint=http://0x7f000001:10000/devstoreaccount1"),
            format!("AccountName=devstoreaccount1;AccountKey={k};BlobEndpoint=https://127.0.0.1:10000/devstoreaccount1"),
            format!("AccountName=devstoreaccount1;AccountKey={k};BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1/sub"),
            format!("AccountName=devstoreaccount1;AccountKey={k};BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1@evil.example/"),
            format!("AccountName=devstoreaccount1;AccountKey={k};BlobEndpoint=http://127.0.0.1:10000@evil.example/devstoreaccount1"),
            format!("AccountName=devstoreaccount1;AccountKey={k};BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1/../x"),
            format!("AccountName=devstoreaccount1;AccountKey={k};BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1?x"),
            // Another account at the dev endpoint.
            format!("AccountName=otheraccount;AccountKey={k};BlobEndpoint={DEV}"),
            format!("AccountName=DevStoreAccount1;AccountKey={k};BlobEndpoint={DEV}"),
            // Endpoint suffixes, with and without a BlobEndpoint that would win.
            format!("DefaultEndpointsProtocol=https;AccountName=x;AccountKey={k};EndpointSuffix=evil.example"),
            format!("DefaultEndpointsProtocol=https;AccountName=devstoreaccount1;AccountKey={k};EndpointSuffix=evil.example"),
            format!(
                "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={k};BlobEndpoint={DEV};EndpointSuffix=evil.example"
            ),
            format!("AccountName=devstoreaccount1;AccountKey={k}"),
            format!("DefaultEndpointsProtocol=gopher;AccountName=devstoreaccount1;AccountKey={k};BlobEndpoint={DEV}"),
            // Development storage through a proxy, or mixed with explicit settings.
            "UseDevelopmentStorage=true;DevelopmentStorageProxyUri=http://169.254.169.254".into(),
            "UseDevelopmentStorage=true;developmentstorageproxyuri=http://127.0.0.1".into(),
            "UseDevelopmentStorage=true;BlobEndpoint=http://169.254.169.254/devstoreaccount1".into(),
            format!("UseDevelopmentStorage=true;AccountName=devstoreaccount1;AccountKey={k}"),
            "UseDevelopmentStorage=false".into(),
            "UseDevelopmentStorage=yes".into(),
            // Duplicate keys, whichever copy a parser would keep.
            format!("AccountName=devstoreaccount1;AccountKey={k};BlobEndpoint={DEV};BlobEndpoint=http://169.254.169.254/devstoreaccount1"),
            format!("AccountName=devstoreaccount1;AccountKey={k};BlobEndpoint=http://169.254.169.254/devstoreaccount1;blobendpoint={DEV}"),
            format!("AccountName=devstoreaccount1;AccountKey={k};BLOBENDPOINT={DEV};BlobEndpoint={DEV}"),
            "UseDevelopmentStorage=true;USEDEVELOPMENTSTORAGE=true".into(),
            // Unknown or unsupported settings.
            format!("AccountName=devstoreaccount1;AccountKey={k};BlobEndpoint={DEV};Proxy=http://evil"),
            format!("BlobEndpoint={DEV};SharedAccessSignature=sv=2019-12-12&sig=x"),
            // Garbage, and a key too long to be one.
            format!("AccountName=devstoreaccount1;AccountKey={};BlobEndpoint={DEV}", "QUFB".repeat(2000)),
            format!("AccountName=devstoreaccount1;AccountKey={k};BlobEndpoint"),
            format!("AccountName=devstoreaccount1;AccountKey=;BlobEndpoint={DEV}"),
            format!("AccountName=devstoreaccount1;AccountKey={k};BlobEndpoint= "),
            format!("AccountName=devstoreaccount1;AccountKey={k};BlobEndpoint=http://127.0.0.1:10000/devstore\naccount1"),
            String::new(),
        ] {
            let r = check(&list, &bad);
            assert!(r.is_err(), "accepted {bad:?}");
            // Never echo the key.
            let msg = r.unwrap_err();
            assert!(!msg.contains(&k[..20]) && !msg.contains("169.254") && !msg.contains("evil"), "{msg}");
        }
    }

    #[test]
    fn extra_accounts_by_flag() {
        let extra = vec!["https://prodacct.blob.core.windows.net/".to_string(), "http://10.0.0.5:10000/teamacct".to_string()];
        let list = AllowList::new(DEV, &extra).unwrap();
        assert_eq!(list.entries()[1], Allowed { endpoint: "https://prodacct.blob.core.windows.net".into(), account: "prodacct".into() });
        assert_eq!(list.entries()[2], Allowed { endpoint: "http://10.0.0.5:10000/teamacct".into(), account: "teamacct".into() });
        let k = DEV_KEY;
        // The portal's string and an explicit endpoint both resolve to the allowed account.
        assert!(check(
            &list,
            &format!("DefaultEndpointsProtocol=https;AccountName=prodacct;AccountKey={k};EndpointSuffix=core.windows.net")
        )
        .is_ok());
        assert!(check(&list, &format!("AccountName=prodacct;AccountKey={k}")).is_ok());
        assert!(check(&list, &format!("AccountName=prodacct;AccountKey={k};BlobEndpoint=https://prodacct.blob.core.windows.net")).is_ok());
        assert!(check(&list, &format!("AccountName=teamacct;AccountKey={k};BlobEndpoint=http://10.0.0.5:10000/teamacct")).is_ok());
        // Still not: a sibling account on the same suffix, http instead of https, another suffix.
        assert!(check(&list, &format!("AccountName=otheracct;AccountKey={k}")).is_err());
        assert!(check(&list, &format!("DefaultEndpointsProtocol=http;AccountName=prodacct;AccountKey={k}")).is_err());
        assert!(check(&list, &format!("AccountName=prodacct;AccountKey={k};EndpointSuffix=core.chinacloudapi.cn")).is_err());
        assert!(check(&list, &format!("AccountName=teamacct;AccountKey={k};BlobEndpoint=http://10.0.0.5:10000/prodacct")).is_err());
        // Bad flags are refused at start-up.
        for bad in [
            "http://127.0.0.1:10000",
            "http://127.0.0.1:10000/Upper",
            "https://[::1]",
            "ftp://x.blob.core.windows.net",
            "https://a@b.example/c",
        ] {
            assert!(AllowList::new(DEV, &[bad.to_string()]).is_err(), "{bad}");
        }
        assert!(AllowList::new("not a url", &[]).is_err());
    }
}
