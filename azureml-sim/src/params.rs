//! `GlobalParameters`, the web service parameters: the experiment publishes the Feature
//! Hashing module's two settings under their property names, "Hashing bitsize" (1..=31) and
//! "N-grams" (0..=10), each optional with the server's `--bitsize` / `--ngrams` as default
//! (Microsoft's web-service-parameters page names "the number of bits for the Feature Hashing
//! module" as its example). Values are JSON integers or strings of digits, as the generated
//! clients send them; an empty string or `null` means the default. Any other name is
//! BadUserArgument / UnexpectedParameter, a bad value BadUserArgument / UserParameterInvalid.

use crate::errors::{shown, REQUEST_BODY_INVALID, UNEXPECTED_PARAMETER, USER_PARAMETER_INVALID};
use crate::hashing::Hashing;
use axum::response::Response;
use serde_json::{json, Value};

pub const BITSIZE: &str = "Hashing bitsize";
pub const NGRAMS: &str = "N-grams";

/// The hashing settings for one call: the defaults, overridden by the request's
/// `GlobalParameters` (absent or `null`: none).
pub fn hashing(default: Hashing, params: Option<&Value>) -> Result<Hashing, Response> {
    let mut h = default;
    let params = match params {
        None | Some(Value::Null) => return Ok(h),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(REQUEST_BODY_INVALID.reply(&[])),
    };
    for (name, value) in params {
        let (slot, range) = match name.as_str() {
            BITSIZE => (&mut h.bitsize, 1..=31),
            NGRAMS => (&mut h.ngrams, 0..=10),
            _ => return Err(UNEXPECTED_PARAMETER.reply(&[])),
        };
        let n = match value {
            Value::Null => continue,
            Value::String(s) if s.trim().is_empty() => continue,
            Value::String(s) => s.trim().parse::<u32>().ok(),
            Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            _ => None,
        };
        match n.filter(|n| range.contains(n)) {
            Some(n) => *slot = n,
            None => {
                let msg = format!(
                    "The web service parameter \"{name}\" must be an integer from {} to {}; got {}.",
                    range.start(),
                    range.end(),
                    shown(&value.to_string())
                );
                return Err(USER_PARAMETER_INVALID.reply(&[&msg]));
            }
        }
    }
    Ok(h)
}

/// The parameters as a job keeps them: both, as numbers (parsed again when the job runs).
pub fn stored(h: Hashing) -> Value {
    json!({BITSIZE: h.bitsize, NGRAMS: h.ngrams})
}
