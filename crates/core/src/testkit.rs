//! Test fixtures for this crate's tests and the crates above (their dev-dependency enables the
//! `testkit` feature): a demo configuration and an in-memory store with the host's semantics.
//! Never in a shipped build.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use crate::admit::{admit, Admission, Connection, Events, Outcome, Request};
use crate::config::common::Environment;
use crate::limits::{HostError, SetError, Store};
use crate::local::LocalHost;
use crate::model::Gateway;
use crate::reply::Reply;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

pub struct Env(pub Vec<(&'static str, &'static str)>);

impl Environment for Env {
    fn var(&self, name: &str) -> Option<String> {
        self.0.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }
}

/// The shipped demo's settings (`envoy/demo.yaml`): the `RateLimit-*` headers and the
/// combined export on, both off by default.
pub fn demo() -> serde_json::Value {
    serde_json::json!({
        "rate_limit_headers": true,
        "export_metadata": "combined",
        "apis": [{
            "id": "azureml-demo", "name": "AzureML Demo API", "path": "azureml-demo",
            "service_url": "https://ussouthcentral.services.azureml.net",
            "operations": "azureml-studio",
            "backend_credentials": [
                {"workspace": "*", "service": "*", "api_key": "any-key"},
                {"workspace": "ws1", "service": "*", "api_key": "ws1-key"},
                {"workspace": "ws1", "service": "svc1", "api_key": "ws1-svc1-key"}
            ]
        }, {
            "id": "other", "name": "Other", "path": "other",
            "service_url": "http://127.0.0.1:9999/base/",
            "subscription_key_header": "X-Key", "subscription_key_query": "key",
            "operations": [{"id": "ping", "name": "Ping", "method": "GET", "url_template": "/ping/{id}?v={version}&mode=fast"}],
            "backend_credentials": [{"workspace": "*", "service": "*", "api_key": "other-key"}]
        }],
        "products": [
            {"id": "starter", "name": "Starter", "apis": ["azureml-demo"],
             "rate_limit": {"calls": 5, "renewal_period": 60},
             "quota": {"calls": 100, "renewal_period": 604800}},
            {"id": "unlimited", "name": "Unlimited", "apis": ["azureml-demo", "other"]}
        ],
        "subscriptions": [
            {"id": "alice", "product": "starter", "state": "active", "primary_key": "alice-1", "secondary_key": "alice-2"},
            {"id": "bob", "product": "unlimited", "state": "active",
             "primary_key_sha256": crate::testkit::sha_hex("bob-1")},
            {"id": "carol", "product": "starter", "state": "suspended", "primary_key": "carol-1"}
        ]
    })
}

pub fn sha_hex(s: &str) -> String {
    crate::keys::Digest::of(s.as_bytes()).0.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn gateway(v: &serde_json::Value) -> Gateway {
    Gateway::from_json(v.to_string().as_bytes(), &Env(vec![])).expect("valid config")
}

pub fn headers(pairs: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    pairs.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec())).collect()
}

/// The demo with its first product (`starter`, over `azureml-demo`) replaced by `limits`: the
/// product's limit fields.
pub fn starter_with(limits: serde_json::Value) -> serde_json::Value {
    let mut c = demo();
    let mut p = limits;
    p["id"] = serde_json::json!("starter");
    p["name"] = serde_json::json!("Starter");
    p["apis"] = serde_json::json!(["azureml-demo"]);
    c["products"][0] = p;
    c
}

/// The demo's RRS call by alice (`alice-1`), with an `x-client` header (for keyed limits).
pub fn alice_rrs(client: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    headers(&[
        (":method", "POST"),
        (":path", "/azureml-demo/workspaces/w/services/s/execute?api-version=2.0&details=true"),
        (":scheme", "http"),
        (":authority", "gw"),
        ("ocp-apim-subscription-key", "alice-1"),
        ("x-client", client),
    ])
}

/// The borrowed view a host hands to `admit`.
pub fn view(h: &[(Vec<u8>, Vec<u8>)]) -> Vec<(&[u8], &[u8])> {
    h.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect()
}

/// Envoy's header map after `edits`: names lower-cased; add appends, replace sets the one
/// value in place, remove drops every value.
pub fn apply_edits(original: &[(&[u8], &[u8])], edits: &[crate::admit::Edit<'_>]) -> Vec<(Vec<u8>, Vec<u8>)> {
    use crate::admit::Edit;
    let mut map: Vec<(Vec<u8>, Vec<u8>)> = original.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.to_vec())).collect();
    for e in edits {
        match *e {
            Edit::Add(n, v) => map.push((n.to_ascii_lowercase(), v.to_vec())),
            Edit::Replace(n, v) => {
                let n = n.to_ascii_lowercase();
                assert_eq!(map.iter().filter(|(k, _)| *k == n).count(), 1, "replace of a name that is not there once");
                if let Some(e) = map.iter_mut().find(|(k, _)| *k == n) {
                    e.1 = v.to_vec();
                }
            }
            Edit::Remove(n) => {
                let n = n.to_ascii_lowercase();
                map.retain(|(k, _)| *k != n);
            }
        }
    }
    map.sort();
    map
}

/// [`crate::Forward::upstream_headers`] as [`apply_edits`] returns a map: names lower-cased, sorted.
pub fn sorted_upstream(list: &[(&[u8], &[u8])]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = list.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.to_vec())).collect();
    out.sort();
    out
}

/// A downstream connection with a fixed address and TLS state; counts what was asked.
#[derive(Default)]
pub struct Conn {
    pub ip: Option<Vec<u8>>,
    pub tls: bool,
    pub address_calls: u32,
    pub tls_calls: u32,
}

impl Connection for Conn {
    fn address(&mut self) -> Option<Vec<u8>> {
        self.address_calls += 1;
        self.ip.clone()
    }
    fn is_tls(&mut self) -> bool {
        self.tls_calls += 1;
        self.tls
    }
}

/// One request through the whole pipeline, reduced to owned values for assertions.
#[derive(Debug)]
pub struct Got {
    /// 200 for a forward, the reply's status otherwise, 0 for a pass-through.
    pub status: u16,
    pub reply: Option<Reply>,
    pub response_headers: Vec<(String, String)>,
    pub count_bandwidth: bool,
    pub events: Events,
}

pub fn run_full(gw: &Gateway, store: &mut dyn Store, now: u64, h: &[(Vec<u8>, Vec<u8>)], conn: &mut Conn) -> Got {
    let v = view(h);
    let req = Request::from_headers(&v);
    let Admission { outcome, events } = admit(gw, &req, now, conn, store);
    match outcome {
        Outcome::Reply(r) => Got { status: r.status, reply: Some(r), response_headers: vec![], count_bandwidth: false, events },
        Outcome::PassThrough { .. } => Got { status: 0, reply: None, response_headers: vec![], count_bandwidth: false, events },
        // 100 Continue: the host would read the body and judge the request again.
        Outcome::ReadBody(_) => Got { status: 100, reply: None, response_headers: vec![], count_bandwidth: false, events },
        Outcome::Forward(f) => {
            Got { status: 200, reply: None, response_headers: f.response_headers(gw), count_bandwidth: f.grant.count_bandwidth, events }
        }
    }
}

/// An in-memory shared-data map with the host's rules: one global CAS counter, `cas == 0`
/// writes unconditionally, a missing key ignores the CAS. Hooks simulate other workers.
#[derive(Default)]
pub struct Inner {
    pub map: HashMap<String, (Vec<u8>, u32)>,
    pub next_cas: u32,
    pub sets: u32,
    pub gets: u32,
    pub fail_gets: bool,
    pub fail_sets: bool,
    /// Fail this many upcoming sets with CasMismatch (as if another worker wrote first).
    pub forced_conflicts: u32,
}

/// Another worker's action, run once right before a store's next set.
pub type Hook = Rc<RefCell<Option<Box<dyn FnMut()>>>>;

#[derive(Clone, Default)]
pub struct MemStore {
    pub inner: Rc<RefCell<Inner>>,
    /// Runs once, right before this handle's next set: another worker acting in between.
    pub before_set: Hook,
}

impl MemStore {
    pub fn keys(&self) -> usize {
        self.inner.borrow().map.len()
    }
    pub fn bytes(&self) -> usize {
        self.inner.borrow().map.iter().map(|(k, v)| k.len() + v.0.len()).sum()
    }
}

impl Store for MemStore {
    fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError> {
        let mut i = self.inner.borrow_mut();
        i.gets += 1;
        if i.fail_gets {
            return Err(HostError);
        }
        Ok(i.map.get(key).cloned())
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError> {
        let hook = self.before_set.borrow_mut().take();
        if let Some(mut h) = hook {
            h();
        }
        let mut i = self.inner.borrow_mut();
        i.sets += 1;
        if i.fail_sets {
            return Err(SetError::Host);
        }
        if i.forced_conflicts > 0 && key != crate::limits::SENTINEL_KEY && i.map.contains_key(key) {
            i.forced_conflicts -= 1;
            i.next_cas += 1;
            let c = i.next_cas;
            if let Some(e) = i.map.get_mut(key) {
                e.1 = c;
            }
            return Err(SetError::CasMismatch);
        }
        let exists = i.map.get(key).map(|e| e.1);
        if let Some(current) = exists {
            if cas != 0 && cas != current {
                return Err(SetError::CasMismatch);
            }
        }
        i.next_cas += 1;
        let c = i.next_cas;
        i.map.insert(key.to_string(), (value.to_vec(), c));
        Ok(())
    }
}

/// What local endpoints read, with a store and no metrics (the portal's tests).
pub struct StoreHost {
    pub store: MemStore,
}

impl LocalHost for StoreHost {
    fn store(&mut self) -> &mut dyn Store {
        &mut self.store
    }
    fn metric(&mut self, _slot: u32, _index: usize) -> Option<u64> {
        None
    }
}
