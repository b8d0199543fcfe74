//! Just enough Azure Blob Storage for BES: connection strings, Shared Key requests (read the
//! input blob, create the output container, write the output blob) and a read-only service
//! SAS for the result, as AzureML hands one back.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// The storage REST version for requests and SAS tokens (Azurite supports it).
pub const VERSION: &str = "2019-12-12";
/// The emulator's well-known account (Azurite and the old storage emulator).
pub const DEV_ACCOUNT: &str = "devstoreaccount1";
pub const DEV_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub key: Vec<u8>,
    /// Endpoint without trailing slash, e.g. `http://127.0.0.1:10000/devstoreaccount1`.
    pub endpoint: String,
    /// Path prefix that the endpoint adds (the account name in path-style URLs).
    pub path_prefix: String,
}

impl Account {
    /// Parses an Azure Storage connection string. `dev_endpoint` is where
    /// `UseDevelopmentStorage=true` points (Azurite's blob endpoint).
    pub fn parse(conn: &str, dev_endpoint: &str) -> Result<Account, String> {
        let mut kv = std::collections::HashMap::new();
        for part in conn.split(';').filter(|p| !p.trim().is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| format!("malformed connection string part \"{}\"", first_word(part)))?;
            kv.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
        let dev = kv.get("usedevelopmentstorage").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let name = kv.get("accountname").cloned().or_else(|| dev.then(|| DEV_ACCOUNT.to_string())).ok_or("AccountName is missing")?;
        let key_b64 = kv.get("accountkey").cloned().or_else(|| dev.then(|| DEV_KEY.to_string())).ok_or("AccountKey is missing")?;
        let key = B64.decode(key_b64.as_bytes()).map_err(|_| "AccountKey is not base64".to_string())?;
        let endpoint = match kv.get("blobendpoint") {
            Some(e) => e.trim_end_matches('/').to_string(),
            None if dev => dev_endpoint.trim_end_matches('/').to_string(),
            None => {
                let proto = kv.get("defaultendpointsprotocol").map_or("https", String::as_str);
                let suffix = kv.get("endpointsuffix").map_or("core.windows.net", String::as_str);
                format!("{proto}://{name}.blob.{suffix}")
            }
        };
        let path_prefix = url_path(&endpoint).trim_end_matches('/').to_string();
        Ok(Account { name, key, endpoint, path_prefix })
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

    /// A read-only service SAS for one blob, valid until `expiry` (ISO 8601 UTC).
    pub fn blob_read_sas(&self, container: &str, blob: &str, expiry: &str) -> String {
        let resource = format!("/blob/{}/{container}/{blob}", self.name);
        // sp, st, se, canonicalizedResource, si, sip, spr, sv, sr, snapshot, rscc, rscd, rsce, rscl, rsct
        let sts = format!("r\n\n{expiry}\n{resource}\n\n\n\n{VERSION}\nb\n\n\n\n\n\n");
        let sig = self.sign(&sts);
        format!("?sv={VERSION}&sr=b&sp=r&se={}&sig={}", pct(expiry), pct(&sig))
    }

    fn blob_url(&self, container: &str, blob: &str) -> (String, String) {
        let path = format!("/{container}/{}", blob.split('/').map(pct).collect::<Vec<_>>().join("/"));
        (format!("{}{path}", self.endpoint), path)
    }

    pub async fn get_blob(&self, http: &reqwest::Client, container: &str, blob: &str) -> Result<Vec<u8>, String> {
        let (url, path) = self.blob_url(container, blob);
        let xms = vec![("x-ms-date", httpdate::fmt_http_date(std::time::SystemTime::now())), ("x-ms-version", VERSION.to_string())];
        let auth = self.shared_key("GET", &path, &[], 0, "", &xms);
        let mut req = http.get(&url).header("authorization", auth);
        for (k, v) in &xms {
            req = req.header(*k, v);
        }
        let resp = req.send().await.map_err(|e| format!("blob storage unreachable: {e}"))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("reading blob /{container}/{blob} failed with HTTP {}", status.as_u16()));
        }
        resp.bytes().await.map(|b| b.to_vec()).map_err(|e| format!("reading blob failed: {e}"))
    }

    pub async fn put_blob(&self, http: &reqwest::Client, container: &str, blob: &str, data: Vec<u8>) -> Result<(), String> {
        self.create_container(http, container).await?;
        let (url, path) = self.blob_url(container, blob);
        let xms = vec![
            ("x-ms-blob-type", "BlockBlob".to_string()),
            ("x-ms-date", httpdate::fmt_http_date(std::time::SystemTime::now())),
            ("x-ms-version", VERSION.to_string()),
        ];
        let auth = self.shared_key("PUT", &path, &[], data.len(), "text/csv", &xms);
        let mut req = http.put(&url).header("authorization", auth).header("content-type", "text/csv");
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
        let mut req = http.put(format!("{}{path}?restype=container", self.endpoint)).header("authorization", auth).header("content-length", "0");
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

/// `/container/dir/blob.csv` → (`container`, `dir/blob.csv`).
pub fn split_location(rel: &str) -> Option<(String, String)> {
    let (c, b) = rel.trim_start_matches('/').split_once('/')?;
    (!c.is_empty() && !b.is_empty()).then(|| (c.to_string(), b.to_string()))
}

fn first_word(s: &str) -> &str {
    // Never echo a whole part: it may hold a key.
    s.split(['=', ' ']).next().unwrap_or("")
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
        let sas = a.blob_read_sas("out", "r.csv", "2030-01-01T00:00:00Z");
        assert!(sas.starts_with("?sv=2019-12-12&sr=b&sp=r&se=2030-01-01T00%3A00%3A00Z&sig="), "{sas}");
    }

    #[test]
    fn locations() {
        assert_eq!(split_location("/c/dir/b.csv"), Some(("c".into(), "dir/b.csv".into())));
        assert_eq!(split_location("c"), None);
    }
}
