//! What the core's benchmarks share (natively with criterion, `benches/core.rs`; in V8,
//! `examples/wasm_decide.rs`): the configuration with 1,000 subscriptions, a request per
//! subscription, and shared data as an in-memory map with the host's CAS semantics.

use mlgate_core::{Connection, Gateway, HostError, ProcessEnv, SetError, Store};
use std::collections::HashMap;

/// FNV-1a: the stand-in store should cost as little as the host's hash map, not SipHash.
#[derive(Default)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        self.0 = h;
    }
}

/// Shared data as the host keeps it: a map of value + CAS token.
#[derive(Default)]
pub struct Mem {
    map: HashMap<String, (Vec<u8>, u32), std::hash::BuildHasherDefault<Fnv>>,
    cas: u32,
}

impl Store for Mem {
    fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError> {
        Ok(self.map.get(key).cloned())
    }
    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError> {
        self.cas += 1;
        match self.map.get_mut(key) {
            Some(e) if cas != 0 && cas != e.1 => Err(SetError::CasMismatch),
            Some(e) => {
                // The host copies the value into its own buffer, as here.
                e.0.clear();
                e.0.extend_from_slice(value);
                e.1 = self.cas;
                Ok(())
            }
            None => {
                self.map.insert(key.to_string(), (value.to_vec(), self.cas));
                Ok(())
            }
        }
    }
}

pub const SUBS: usize = 1000;

/// A connection that is never asked anything expensive (no `ip` limits here).
pub struct NoConn;

impl Connection for NoConn {
    fn address(&mut self) -> Option<Vec<u8>> {
        None
    }
    fn is_tls(&mut self) -> bool {
        false
    }
}

pub fn config(limits: bool) -> Gateway {
    let product_limits = if limits {
        r#", "rate_limit": {"calls": 100, "renewal_period": 1}, "quota": {"calls": 1000000000000, "renewal_period": 86400}"#
    } else {
        ""
    };
    let subs: Vec<String> = (0..SUBS)
        .map(|i| format!(r#"{{"id": "sub-{i:06}", "product": "bench", "state": "active", "primary_key": "bench-key-{i:06}"}}"#))
        .collect();
    let json = format!(
        r#"{{"apis": [{{"id": "azureml-demo", "name": "AzureML Demo API", "path": "azureml-demo",
            "service_url": "https://ussouthcentral.services.azureml.net", "operations": "azureml-studio",
            "backend_credentials": [{{"workspace": "*", "service": "*", "api_key": "k"}}]}}],
          "products": [{{"id": "bench", "name": "Bench", "apis": ["azureml-demo"]{}}}],
          "subscriptions": [{}]}}"#,
        product_limits,
        subs.join(",")
    );
    match Gateway::from_json(json.as_bytes(), &ProcessEnv) {
        Ok(g) => g,
        Err(e) => panic!("{e}"),
    }
}

pub fn headers(i: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    [
        (":method", "POST".to_string()),
        (":path", "/azureml-demo/workspaces/ws1/services/svc1/execute?api-version=2.0&details=true".to_string()),
        (":scheme", "http".to_string()),
        (":authority", "gw.example.com".to_string()),
        ("content-type", "application/json".to_string()),
        ("ocp-apim-subscription-key", format!("bench-key-{:06}", i % SUBS)),
    ]
    .into_iter()
    .map(|(k, v)| (k.as_bytes().to_vec(), v.into_bytes()))
    .collect()
}
