//! The `admin` section: a path of its own and the digest of the admin key (the admin API
//! itself is the `mlgate-admin` crate).

use super::common::ConfigError;
use crate::keys::Digest;
use crate::model::{Admin, Api};

/// Checks the `admin` section: a path of its own (not an API's, not the portal's), and a key
/// digest of 64 hex digits.
pub(super) fn compile(path: String, key_sha256: &str, apis: &[Api], portal: Option<&str>) -> Result<Admin, ConfigError> {
    let bad = !path.starts_with('/')
        || path.len() < 2
        || path.len() > 256
        || path.ends_with('/')
        || path.contains("//")
        || path.bytes().any(|b| b <= b' ' || b >= 0x7f || b"?#{}%\"'<>`\\".contains(&b));
    if bad {
        return Err(ConfigError::new(
            "admin.path",
            "a URL path of visible ASCII, starting with '/', without a trailing '/' (e.g. \"/mlgate-admin\")",
        ));
    }
    let under = |a: &str, b: &str| a.starts_with(b) && matches!(a.as_bytes().get(b.len()), None | Some(b'/'));
    if let Some(api) = apis.iter().find(|a| !a.prefix.is_empty() && (under(&path, &a.prefix) || under(&a.prefix, &path))) {
        return Err(ConfigError::new("admin.path", format!("overlaps the path of API \"{}\"", api.id)));
    }
    if portal.is_some_and(|p| under(&path, p) || under(p, &path)) {
        return Err(ConfigError::new("admin.path", "overlaps portal.path"));
    }
    let key = Digest::from_hex(key_sha256).ok_or_else(|| ConfigError::new("admin.key_sha256", "not 64 hex digits"))?;
    Ok(Admin { path, key })
}
