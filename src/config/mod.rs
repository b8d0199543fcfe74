//! Configuration: the operator's JSON ([`schema`], private) is parsed and compiled
//! ([`compile`]) into the request-time [`Gateway`] model. Runs once per `on_configure`.
//!
//! Every refusal is one [`ConfigError`] whose `field` is the JSON path of the offending value
//! (`apis[0].operations[2].url_template`), so the single log line the host writes names it.

mod compile;
pub(crate) mod jsonpath;
mod schema;

use crate::model::Gateway;
use std::fmt;

/// A configuration refusal: which field, and why. Never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError { field: field.into(), reason: reason.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid mlgate configuration: {}: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// The environment the configuration is resolved against (the Wasm VM's variables).
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment (in Envoy: `vm_config.environment_variables`).
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// The most calls one sliding window may count (each costs 8 bytes of ring).
pub const MAX_RATE_LIMIT_CALLS: u32 = 10_000;
/// The longest id of an API, operation, product or subscription, in bytes.
pub const MAX_ID_BYTES: usize = 1024;

impl Gateway {
    /// Parses and validates the plugin configuration. Refuses anything doubtful.
    pub fn from_json(json: &[u8], env: &dyn Environment) -> Result<Gateway, ConfigError> {
        if json.is_empty() {
            return Err(ConfigError::new("configuration", "missing (set the plugin's `configuration`)"));
        }
        let raw: schema::RawConfig = serde_json::from_slice(json).map_err(|e| {
            let path = jsonpath::path_at(json, e.line(), e.column());
            let field = if path.is_empty() { "configuration".to_string() } else { path };
            // serde_json's messages name fields and positions; they echo only the offending
            // scalar for type errors, which is never where a key belongs.
            ConfigError::new(field, strip_position(&e.to_string()))
        })?;
        compile::compile(raw, env)
    }
}

/// serde_json appends " at line L column C"; the field path replaces it.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg.get(..i).unwrap_or(msg).to_string(),
        None => msg.to_string(),
    }
}
