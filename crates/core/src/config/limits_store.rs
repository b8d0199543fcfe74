//! `limits_store` as the operator writes it, compiled into the model's [`LimitsStore`]: where
//! limits are counted. Absent or `"shared_data"`: in this Envoy's shared data. `{"rls": {...}}`:
//! in a remote store reached over Envoy's rate limit service protocol (`mlgate-rls`, or any RLS
//! v3 implementation).

use super::common::ConfigError;
use crate::model::{LimitsStore, OnFailure, RlsSettings};
use serde::Deserialize;
use std::fmt;

/// `limits_store` as written: a name, or an object.
pub enum RawLimitsStore {
    Name(String),
    Rls(RawRls),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStoreObject {
    rls: RawRls,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRls {
    cluster: String,
    #[serde(default = "default_domain")]
    domain: String,
    #[serde(default = "default_timeout")]
    timeout_ms: u32,
    #[serde(default)]
    on_failure: Option<String>,
    #[serde(default = "default_breaker_failures")]
    breaker_failures: u32,
    #[serde(default = "default_breaker_open")]
    breaker_open_ms: u32,
}

fn default_domain() -> String {
    "mlgate".into()
}
fn default_timeout() -> u32 {
    50
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_open() -> u32 {
    1000
}

// A visitor instead of `#[serde(untagged)]` (which buffers the input and costs Wasm size).
impl<'de> Deserialize<'de> for RawLimitsStore {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawLimitsStore;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"shared_data\" or {\"rls\": {\"cluster\": ..., \"domain\": ..., \"timeout_ms\": ..., \"on_failure\": ...}}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawLimitsStore, E> {
                Ok(RawLimitsStore::Name(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RawLimitsStore, A::Error> {
                let o = RawStoreObject::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(RawLimitsStore::Rls(o.rls))
            }
        }
        d.deserialize_any(V)
    }
}

/// Validates `limits_store`; each refusal names its field.
pub fn compile(raw: Option<&RawLimitsStore>) -> Result<LimitsStore, ConfigError> {
    let r = match raw {
        None => return Ok(LimitsStore::SharedData),
        Some(RawLimitsStore::Name(n)) if n == "shared_data" => return Ok(LimitsStore::SharedData),
        Some(RawLimitsStore::Name(_)) => {
            return Err(ConfigError::new("limits_store", "expected \"shared_data\" or {\"rls\": {...}}"));
        }
        Some(RawLimitsStore::Rls(r)) => r,
    };
    let f = |name: &str| format!("limits_store.rls.{name}");
    if r.cluster.is_empty() || r.cluster.len() > 255 || !r.cluster.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError::new(f("cluster"), "an Envoy cluster name (1..255 visible ASCII characters)"));
    }
    if r.domain.is_empty() || r.domain.len() > 255 || r.domain.chars().any(char::is_control) {
        return Err(ConfigError::new(f("domain"), "1..255 characters, no control characters"));
    }
    if r.timeout_ms == 0 || r.timeout_ms > 60_000 {
        return Err(ConfigError::new(f("timeout_ms"), "must be 1..=60000"));
    }
    let on_failure = match r.on_failure.as_deref() {
        None | Some("deny") => OnFailure::Deny,
        Some("allow") => OnFailure::Allow,
        Some("local") => OnFailure::Local,
        Some(_) => return Err(ConfigError::new(f("on_failure"), "expected \"deny\", \"allow\" or \"local\"")),
    };
    if r.breaker_failures == 0 || r.breaker_failures > 10_000 {
        return Err(ConfigError::new(f("breaker_failures"), "must be 1..=10000"));
    }
    if r.breaker_open_ms == 0 || r.breaker_open_ms > 3_600_000 {
        return Err(ConfigError::new(f("breaker_open_ms"), "must be 1..=3600000"));
    }
    Ok(LimitsStore::Rls(RlsSettings {
        cluster: r.cluster.clone(),
        domain: r.domain.clone(),
        timeout_ms: r.timeout_ms,
        on_failure,
        breaker_failures: r.breaker_failures,
        breaker_open_ms: u64::from(r.breaker_open_ms),
    }))
}
