//! Just enough Azure Blob Storage for BES: connection strings, Shared Key requests (read the
//! input blob, create the output container, write the output blob) and a read-only service
//! SAS for the result, as AzureML hands one back.

use crate::endpoint::{normalize_endpoint, valid_account_name};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// The storage REST version for requests and SAS tokens (Azurite supports it).
pub const VERSION: &str = "2019-12-12";
/// The emulator's well-known account (Azurite and the old storage emulator).
pub const DEV_ACCOUNT: &str = "devstoreaccount1";
pub const DEV_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub key: Vec<u8>,
    /// Normalised endpoint (see [`normalize_endpoint`]), e.g. `http://127.0.0.1:10000/devstoreaccount1`.
    pub endpoint: String,
    /// Path prefix that the endpoint adds (the account name in path-style URLs).
    pub path_prefix: String,
    /// The endpoint `EndpointSuffix` names when a `BlobEndpoint` overrides it: unused for
    /// requests, but checked against the allow-list too, so that no foreign name passes.
    pub suffix_endpoint: Option<String>,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Account").field("name", &self.name).field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}

/// Longer connection strings are refused (real ones are a few hundred bytes).
pub const MAX_CONNECTION_STRING: usize = 4096;

/// Connection string settings, lower case → as documented. Other services' endpoints are
/// accepted (Azurite's documented string names them) and never used.
const SETTINGS: [(&str, &str); 11] = [
    ("usedevelopmentstorage", "UseDevelopmentStorage"),
    ("developmentstorageproxyuri", "DevelopmentStorageProxyUri"),
    ("defaultendpointsprotocol", "DefaultEndpointsProtocol"),
    ("accountname", "AccountName"),
    ("accountkey", "AccountKey"),
    ("blobendpoint", "BlobEndpoint"),
    ("endpointsuffix", "EndpointSuffix"),
    ("sharedaccesssignature", "SharedAccessSignature"),
    ("queueendpoint", "QueueEndpoint"),
    ("tableendpoint", "TableEndpoint"),
    ("fileendpoint", "FileEndpoint"),
];

impl Account {
    /// Parses an Azure Storage connection string, strictly: unknown and repeated settings
    /// (in any letter case) are refused, as are `DevelopmentStorageProxyUri`, development
    /// storage mixed with explicit settings, and endpoints that are not plain URLs.
    /// `dev_endpoint` is where `UseDevelopmentStorage=true` points (Azurite's blob endpoint).
    /// Error messages name settings, never their values.
    pub fn parse(conn: &str, dev_endpoint: &str) -> Result<Account, String> {
        if conn.len() > MAX_CONNECTION_STRING {
            return Err(format!("the connection string is longer than {MAX_CONNECTION_STRING} bytes"));
        }
        let mut kv = std::collections::HashMap::new();
        for part in conn.split(';').filter(|p| !p.trim().is_empty()) {
            let (k, v) = part.split_once('=').ok_or("malformed connection string: a setting without \"=\"")?;
            let k = k.trim().to_ascii_lowercase();
            let Some(&(key, name)) = SETTINGS.iter().find(|(key, _)| *key == k) else {
                return Err(format!("unsupported connection string setting \"{}\"", printable(&k)));
            };
            match key {
                "developmentstorageproxyuri" => return Err(format!("{name} is not supported")),
                "sharedaccesssignature" => return Err(format!("{name} is not supported; give AccountName and AccountKey")),
                _ => {}
            }
            if kv.insert(key, v.trim()).is_some() {
                return Err(format!("{name} is given more than once"));
            }
        }
        if let Some(dev) = kv.get("usedevelopmentstorage") {
            if !dev.eq_ignore_ascii_case("true") {
                return Err("UseDevelopmentStorage must be true when given".into());
            }
            if kv.len() > 1 {
                return Err("UseDevelopmentStorage=true cannot be combined with other settings".into());
            }
            let endpoint = normalize_endpoint(dev_endpoint).map_err(|e| format!("the development storage URL: {e}"))?;
            let key = B64.decode(DEV_KEY).map_err(|_| "AccountKey is not base64".to_string())?;
            return Ok(Account::new(DEV_ACCOUNT.into(), &key, endpoint, None));
        }
        let name = *kv.get("accountname").ok_or("AccountName is missing")?;
        if !valid_account_name(name) {
            return Err("AccountName must be 3 to 24 lower-case letters and digits".into());
        }
        let key_b64 = kv.get("accountkey").filter(|k| !k.is_empty()).ok_or("AccountKey is missing")?;
        let key = B64.decode(key_b64.as_bytes()).map_err(|_| "AccountKey is not base64".to_string())?;
        let proto = kv.get("defaultendpointsprotocol").map_or("https".to_string(), |p| p.to_ascii_lowercase());
        if proto != "http" && proto != "https" {
            return Err("DefaultEndpointsProtocol must be http or https".into());
        }
        let from_suffix = |suffix: &str| {
            let ok = !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            ok.then(|| normalize_endpoint(&format!("{proto}://{name}.blob.{suffix}")).ok())
                .flatten()
                .ok_or("EndpointSuffix is not a host name suffix")
        };
        let suffix = kv.get("endpointsuffix").copied();
        let (endpoint, suffix_endpoint) = match kv.get("blobendpoint") {
            Some(e) => (normalize_endpoint(e).map_err(|e| format!("BlobEndpoint: {e}"))?, suffix.map(from_suffix).transpose()?),
            None => (from_suffix(suffix.unwrap_or("core.windows.net"))?, None),
        };
        Ok(Account::new(name.to_string(), &key, endpoint, suffix_endpoint))
    }

    fn new(name: String, key: &[u8], endpoint: String, suffix_endpoint: Option<String>) -> Account {
        let path_prefix = url_path(&endpoint).trim_end_matches('/').to_string();
        Account { name, key: key.to_vec(), endpoint, path_prefix, suffix_endpoint }
    }

    fn sign(&self, string_to_sign: &str) -> String {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else { return String::new() };
        mac.update(string_to_sign.as_bytes());
        B64.encode(mac.finalize().into_bytes())
    }

    /// `Authorization: SharedKey` for a request (Blob service, version 2015-02-21+ rules).
    fn shared_key(&self, verb: &str, path: &str, query: &[(&str, &str)], len: usize, ctype: &str, xms: &[(&str, String)]) -> String {
        let mut headers: Vec<(String, &str)> = xms.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.as_str())).collect();
        headers.sort();
        let mut s = format!("{verb}\n\n\n{}\n\n{ctype}\n\n\n\n\n\n\n", if len == 0 { String::new() } else { len.to_string() });
        for (k, v) in headers {
            s.push_str(&format!("{k}:{v}\n"));
        }
        s.push_str(&format!("/{}{}{}", self.name, self.path_prefix, path));
        let mut q: Vec<_> = query.iter().map(|(k, v)| (k.to_ascii_lowercase(), *v)).collect();
        q.sort();
        for (k, v) in q {
            s.push_str(&format!("\n{k}:{v}"));
        }
        format!("SharedKey {}:{}", self.name, self.sign(&s))
    }

    /// A read-only service SAS for one blob, valid from `start` until `expiry` (ISO 8601 UTC).
    pub fn blob_read_sas(&self, container: &str, blob: &str, start: &str, expiry: &str) -> String {
        let resource = format!("/blob/{}/{container}/{blob}", self.name);
        // sp, st, se, canonicalizedResource, si, sip, spr, sv, sr, snapshot, rscc, rscd, rsce, rscl, rsct
        let sts = format!("r\n{start}\n{expiry}\n{resource}\n\n\n\n{VERSION}\nb\n\n\n\n\n\n");
        let sig = self.sign(&sts);
        format!("?sv={VERSION}&sr=b&sp=r&st={}&se={}&sig={}", pct(start), pct(expiry), pct(&sig))
    }

    fn blob_url(&self, container: &str, blob: &str) -> (String, String) {
        let path = blob_path(container, blob);
        (format!("{}{path}", self.endpoint), path)
    }

    /// Reads a blob of at most `max` bytes; a longer one is an error, found from its
    /// Content-Length or, without one, after reading `max` bytes.
    pub async fn get_blob(&self, http: &reqwest::Client, container: &str, blob: &str, max: usize) -> Result<Vec<u8>, String> {
        let (url, path) = self.blob_url(container, blob);
        let xms = vec![("x-ms-date", httpdate::fmt_http_date(std::time::SystemTime::now())), ("x-ms-version", VERSION.to_string())];
        let auth = self.shared_key("GET", &path, &[], 0, "", &xms);
        let mut req = http.get(&url).header("authorization", auth);
        for (k, v) in &xms {
            req = req.header(*k, v);
        }
        let resp = req.send().await.map_err(|e| format!("blob storage unreachable: {e}"))?;
        read_capped(resp, container, blob, max).await
    }

    pub async fn put_blob(&self, http: &reqwest::Client, container: &str, blob: &str, data: Vec<u8>, ctype: &str) -> Result<(), String> {
        self.create_container(http, container).await?;
        let (url, path) = self.blob_url(container, blob);
        let xms = vec![
            ("x-ms-blob-type", "BlockBlob".to_string()),
            ("x-ms-date", httpdate::fmt_http_date(std::time::SystemTime::now())),
            ("x-ms-version", VERSION.to_string()),
        ];
        let auth = self.shared_key("PUT", &path, &[], data.len(), ctype, &xms);
        let mut req = http.put(&url).header("authorization", auth).header("content-type", ctype);
        for (k, v) in &xms {
            req = req.header(*k, v);
        }
        let resp = req.body(data).send().await.map_err(|e| format!("blob storage unreachable: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("writing blob /{container}/{blob} failed with HTTP {}", resp.status().as_u16()));
        }
        Ok(())
    }

    async fn create_container(&self, http: &reqwest::Client, container: &str) -> Result<(), String> {
        let path = format!("/{container}");
        let xms = vec![("x-ms-date", httpdate::fmt_http_date(std::time::SystemTime::now())), ("x-ms-version", VERSION.to_string())];
        let auth = self.shared_key("PUT", &path, &[("restype", "container")], 0, "", &xms);
        let mut req =
            http.put(format!("{}{path}?restype=container", self.endpoint)).header("authorization", auth).header("content-length", "0");
        for (k, v) in &xms {
            req = req.header(*k, v);
        }
        let resp = req.send().await.map_err(|e| format!("blob storage unreachable: {e}"))?;
        match resp.status().as_u16() {
            201 | 409 => Ok(()),
            s => Err(format!("creating container {container} failed with HTTP {s}")),
        }
    }
}

/// Why a `RelativeLocation` is not `/container/blob`.
#[derive(Debug, PartialEq, Eq)]
pub enum LocationError {
    /// No container segment (`blob.csv`, `/`).
    NoContainer,
    BadContainer,
    BadBlob,
}

/// `/container/dir/blob.csv` → (`container`, `dir/blob.csv`). The container name has at most
/// 63 lower-case letters, digits and single hyphens, no hyphen at either end (Azure's rules,
/// less the 3-character minimum); the blob name has at most 1024 characters, no control
/// characters and no empty, `.` or `..` segments (which a URL would resolve out of the
/// container).
pub fn split_location(rel: &str) -> Result<(String, String), LocationError> {
    let (c, b) = rel.trim_start_matches('/').split_once('/').ok_or(LocationError::NoContainer)?;
    if c.is_empty() {
        return Err(LocationError::NoContainer);
    }
    let container_ok = c.len() <= 63
        && c.bytes().all(|x| x.is_ascii_lowercase() || x.is_ascii_digit() || x == b'-')
        && !c.starts_with('-')
        && !c.ends_with('-')
        && !c.contains("--");
    if !container_ok {
        return Err(LocationError::BadContainer);
    }
    let blob_ok = !b.is_empty()
        && b.chars().count() <= 1024
        && !b.chars().any(char::is_control)
        && b.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..");
    if !blob_ok {
        return Err(LocationError::BadBlob);
    }
    Ok((c.to_string(), b.to_string()))
}

/// The URL path of a blob, `/container/blob` with each blob segment percent-encoded.
pub fn blob_path(container: &str, blob: &str) -> String {
    format!("/{container}/{}", blob.split('/').map(pct).collect::<Vec<_>>().join("/"))
}

/// Reads a blob response of at most `max` bytes; a longer one is an error, found from its
/// Content-Length or, without one, after reading `max` bytes.
pub async fn read_capped(mut resp: reqwest::Response, container: &str, blob: &str, max: usize) -> Result<Vec<u8>, String> {
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("reading blob /{container}/{blob} failed with HTTP {}", status.as_u16()));
    }
    let too_large = || format!("blob /{container}/{blob} is larger than the {max}-byte limit");
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut data = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("reading blob failed: {e}"))? {
        if data.len().saturating_add(chunk.len()) > max {
            return Err(too_large());
        }
        data.extend_from_slice(&chunk);
    }
    Ok(data)
}

/// A setting name fit to echo: letters and digits only, at most 40.
fn printable(s: &str) -> String {
    s.chars().filter(char::is_ascii_alphanumeric).take(40).collect()
}

fn url_path(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.find('/').map_or("", |i| &rest[i..])
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dev_storage_and_explicit_strings() {
        let a = Account::parse("UseDevelopmentStorage=true", "http://127.0.0.1:10000/devstoreaccount1/").unwrap();
        assert_eq!(a.name, DEV_ACCOUNT);
        assert_eq!(a.endpoint, "http://127.0.0.1:10000/devstoreaccount1");
        assert_eq!(a.path_prefix, "/devstoreaccount1");
        let a = Account::parse(
            &format!("DefaultEndpointsProtocol=http;AccountName=acct;AccountKey={DEV_KEY};BlobEndpoint=http://127.0.0.1:1/acct;"),
            "unused",
        )
        .unwrap();
        assert_eq!((a.name.as_str(), a.endpoint.as_str()), ("acct", "http://127.0.0.1:1/acct"));
        let a = Account::parse(&format!("AccountName=prod;AccountKey={DEV_KEY}"), "unused").unwrap();
        assert_eq!(a.endpoint, "https://prod.blob.core.windows.net");
        assert_eq!(a.path_prefix, "");
        assert!(Account::parse("AccountName=x", "u").is_err());
        assert!(Account::parse("AccountName=x;AccountKey=%%%", "u").is_err());
    }

    #[test]
    fn sas_has_the_documented_fields() {
        let a = Account::parse("UseDevelopmentStorage=true", "http://127.0.0.1:10000/devstoreaccount1").unwrap();
        let sas = a.blob_read_sas("out", "r.csv", "2029-12-31T00:00:00Z", "2030-01-01T00:00:00Z");
        assert!(sas.starts_with("?sv=2019-12-12&sr=b&sp=r&st=2029-12-31T00%3A00%3A00Z&se=2030-01-01T00%3A00%3A00Z&sig="), "{sas}");
    }

    #[test]
    fn locations() {
        assert_eq!(split_location("/c/dir/b.csv"), Ok(("c".into(), "dir/b.csv".into())));
        assert_eq!(split_location("c"), Err(LocationError::NoContainer));
        assert_eq!(split_location("/b.csv"), Err(LocationError::NoContainer));
        assert_eq!(split_location("//b.csv"), Err(LocationError::NoContainer));
        assert_eq!(split_location("/C/b.csv"), Err(LocationError::BadContainer));
        assert_eq!(split_location("/c/"), Err(LocationError::BadBlob));
    }

    #[test]
    fn locations_refuse_path_tricks() {
        assert_eq!(split_location("out-1/a/b c.csv"), Ok(("out-1".into(), "a/b c.csv".into())));
        for bad in ["/c/../x", "/c/./x", "/c/a//b", "/c/", "/C/x", "/c_1/x", "/-c/x", "/c-/x", "/a--b/x", "/c/x\n", "/c/x\u{0}"] {
            assert!(split_location(bad).is_err(), "{bad:?}");
        }
        assert!(split_location(&format!("/{}/x", "c".repeat(64))).is_err());
        assert!(split_location(&format!("/c/{}", "x".repeat(1025))).is_err());
    }

    #[test]
    fn debug_hides_the_key() {
        let a = Account::parse(
            &format!("AccountName=devstoreaccount1;AccountKey={DEV_KEY};BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1"),
            "unused",
        )
        .unwrap();
        let dbg = format!("{a:?}");
        assert!(dbg.contains("devstoreaccount1") && !dbg.contains("key") && !dbg.contains("69, 98"), "{dbg}");
    }
}
