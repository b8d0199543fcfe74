//! Configuration: the operator's JSON ([`schema`], private) is parsed and compiled
//! ([`compile`]) into the request-time [`Gateway`] model. Runs once per `on_configure`.
//!
//! Every refusal is one [`ConfigError`] whose `field` is the JSON path of the offending value
//! (`apis[0].operations[2].url_template`), so the single log line the host writes names it.

mod admin;
pub mod common;
mod compile;
pub(crate) mod jsonpath;
mod limits;
pub mod limits_store;
mod presets;
mod schema;
mod subscriptions;
mod tokens;

pub use common::{ConfigError, Environment, ProcessEnv, MAX_ID_BYTES, MAX_RATE_LIMIT_CALLS};

use crate::model::Gateway;

impl Gateway {
    /// Parses and validates the plugin configuration. Refuses anything doubtful.
    pub fn from_json(json: &[u8], env: &dyn Environment) -> Result<Gateway, ConfigError> {
        if json.is_empty() {
            return Err(ConfigError::new("configuration", "missing (set the plugin's `configuration`)"));
        }
        let raw: schema::RawConfig = serde_json::from_slice(json).map_err(|e| {
            let path = jsonpath::path_at(json, e.line(), e.column(), e.is_syntax() || e.is_eof());
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
