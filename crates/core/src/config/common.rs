//! What every part of the configuration shares: the refusal type, the environment secrets are
//! read from, and the bounds on ids and windows.

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

/// RFC 9110 token characters.
pub fn is_header_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

pub(super) fn nonempty(v: &str, field: &str) -> Result<(), ConfigError> {
    if v.is_empty() {
        Err(ConfigError::new(field, "must not be empty"))
    } else {
        Ok(())
    }
}

/// Ids name shared-data keys, limit segments and upstream header values: non-empty, bounded,
/// and free of control characters (which no header value may carry).
pub(super) fn check_id(v: &str, field: &str) -> Result<(), ConfigError> {
    nonempty(v, field)?;
    if v.len() > MAX_ID_BYTES {
        return Err(ConfigError::new(field, format!("longer than {MAX_ID_BYTES} bytes")));
    }
    if v.chars().any(char::is_control) {
        return Err(ConfigError::new(field, "contains control characters"));
    }
    Ok(())
}
