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
use crate::endpoint::{normalize_endpoint, valid_account_name};

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

    /// Whether `endpoint` (normalised) is the endpoint of an allowed account: a SAS URL's
    /// base, which names no account of its own.
    pub fn permits_endpoint(&self, endpoint: &str) -> bool {
        self.entries.iter().any(|e| e.endpoint == endpoint)
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
