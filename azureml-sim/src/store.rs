//! A BES input or output blob, as a job names it (an `AzureBlobDataReference`): through a
//! connection string (`ConnectionString` + `RelativeLocation`, requests signed with the
//! account key) or through a SAS URL (`BaseLocation` + `RelativeLocation` + `SasBlobToken`,
//! requests carrying the token); either way on an account of the allow-list. And the job's
//! `Results` entry for an output, as AzureML writes it: `ConnectionString: null`, where the
//! blob is and a read SAS (with `st=` and `se=`).

use crate::blob::{blob_path, read_capped, Account, VERSION};
use crate::clock::iso8601;
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

pub enum Store {
    Key(Account),
    /// A normalised blob endpoint and a SAS token (without its `?`).
    Sas {
        endpoint: String,
        token: String,
    },
}

pub struct BlobRef {
    pub store: Store,
    pub container: String,
    pub blob: String,
}

/// How long a result's SAS is valid, and how far back its start lies (for clocks behind ours).
const SAS_VALIDITY_SECS: u64 = 24 * 3600;
const SAS_SKEW_SECS: u64 = 5 * 60;

/// A SAS token as a query string (an optional leading `?`): at most 2048 characters of
/// RFC 3986 query characters short of `#`, `?` and spaces, with a `sig=` parameter.
pub fn sas_token(t: &str) -> Option<String> {
    let t = t.strip_prefix('?').unwrap_or(t);
    let chars_ok = t.bytes().all(|b| b.is_ascii_alphanumeric() || b"%&=-._~:+/,".contains(&b));
    let ok = !t.is_empty() && t.len() <= 2048 && chars_ok && t.split('&').any(|p| p.len() > 4 && p.starts_with("sig="));
    ok.then(|| t.to_string())
}

impl BlobRef {
    fn endpoint(&self) -> &str {
        match &self.store {
            Store::Key(a) => &a.endpoint,
            Store::Sas { endpoint, .. } => endpoint,
        }
    }

    fn sas_url(&self, token: &str) -> String {
        format!("{}{}?{token}", self.endpoint(), blob_path(&self.container, &self.blob))
    }

    /// Reads the blob, at most `max` bytes.
    pub async fn get(&self, http: &reqwest::Client, max: usize) -> Result<Vec<u8>, String> {
        match &self.store {
            Store::Key(a) => a.get_blob(http, &self.container, &self.blob, max).await,
            Store::Sas { token, .. } => {
                let req = http.get(self.sas_url(token)).header("x-ms-version", VERSION);
                let resp = req.send().await.map_err(|e| format!("blob storage unreachable: {e}"))?;
                read_capped(resp, &self.container, &self.blob, max).await
            }
        }
    }

    /// Writes the blob (a block blob of content type `ctype`); with a key, the container is
    /// created first, with a SAS it must exist.
    pub async fn put(&self, http: &reqwest::Client, data: Vec<u8>, ctype: &str) -> Result<(), String> {
        match &self.store {
            Store::Key(a) => a.put_blob(http, &self.container, &self.blob, data, ctype).await,
            Store::Sas { token, .. } => {
                let req = http
                    .put(self.sas_url(token))
                    .header("x-ms-version", VERSION)
                    .header("x-ms-blob-type", "BlockBlob")
                    .header("content-type", ctype);
                let resp = req.body(data).send().await.map_err(|e| format!("blob storage unreachable: {e}"))?;
                if !resp.status().is_success() {
                    return Err(format!("writing blob /{}/{} failed with HTTP {}", self.container, self.blob, resp.status().as_u16()));
                }
                Ok(())
            }
        }
    }

    /// The job's `Results` entry for this output: no connection string (never the account
    /// key the job was submitted with), the blob's place and a SAS to read it: a read-only
    /// one minted with the account key, valid from 5 minutes ago for 24 hours, or the
    /// caller's own token for an output given by SAS.
    pub fn result(&self) -> Value {
        let sas = match &self.store {
            Store::Key(a) => {
                let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
                let (start, expiry) = (iso8601(now.saturating_sub(SAS_SKEW_SECS)), iso8601(now + SAS_VALIDITY_SECS));
                a.blob_read_sas(&self.container, &self.blob, &start, &expiry)
            }
            Store::Sas { token, .. } => format!("?{token}"),
        };
        json!({
            "ConnectionString": null,
            "RelativeLocation": format!("{}/{}", self.container, self.blob),
            "BaseLocation": format!("{}/", self.endpoint()),
            "SasBlobToken": sas,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sas_tokens() {
        assert_eq!(sas_token("?sv=2019-12-12&sr=b&sp=r&sig=a%2Bb").as_deref(), Some("sv=2019-12-12&sr=b&sp=r&sig=a%2Bb"));
        assert_eq!(sas_token("sp=r&sig=ab+/=").as_deref(), Some("sp=r&sig=ab+/="));
        for bad in ["", "?", "sv=1&sp=r", "sig=", "sig=a#x", "sig=a b", "sig=a?b", "sig=a\n", &format!("sig={}", "a".repeat(2048))] {
            assert_eq!(sas_token(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn results_have_no_connection_string_and_a_dated_sas() {
        let a = Account::parse("UseDevelopmentStorage=true", "http://127.0.0.1:10000/devstoreaccount1").unwrap();
        let r = BlobRef { store: Store::Key(a), container: "out".into(), blob: "d/r.csv".into() }.result();
        assert_eq!(r["ConnectionString"], Value::Null);
        assert_eq!(r["BaseLocation"], "http://127.0.0.1:10000/devstoreaccount1/");
        assert_eq!(r["RelativeLocation"], "out/d/r.csv");
        let sas = r["SasBlobToken"].as_str().unwrap();
        assert!(sas.starts_with("?sv=") && sas.contains("&sp=r&") && sas.contains("&st=") && sas.contains("&se=") && sas.contains("&sig="));
        let store = Store::Sas { endpoint: "http://127.0.0.1:10000/devstoreaccount1".into(), token: "sp=rw&sig=x".into() };
        let r = BlobRef { store, container: "out".into(), blob: "r.csv".into() }.result();
        assert_eq!((r["ConnectionString"].clone(), r["SasBlobToken"].as_str()), (Value::Null, Some("?sp=rw&sig=x")));
    }
}
