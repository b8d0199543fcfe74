//! Subscriptions and their scopes. APIM scopes a subscription to a product (`"product": "<id>"`,
//! or `"scope": "/products/<id>"`), to one API (`"/apis/<id>"`) or to all APIs (`"/apis"`). A
//! subscription scoped to APIs has no product, so no product's limits: the model gives it an
//! unlisted stand-in product (no limits, not shown in the portal or reports) over its APIs.
//!
//! A product with `subscription_required: false` (APIM's open product) admits calls without a
//! key: they count as its anonymous subscription (record `mlgate/o/<product>`, no key, no id),
//! so per-subscription limits of that product count every keyless caller together, and limits
//! with a `counter` count per caller.

use super::common::ConfigError;
use super::schema::RawSubscription;
use crate::keys::{Digest, KeyIndex};
use crate::model::{Api, Product, Subscription, SubscriptionState};

/// Subscriptions in configuration order, then one anonymous subscription per open product.
pub(super) fn compile(
    raw: Vec<RawSubscription>,
    apis: &[Api],
    products: &mut Vec<Product>,
) -> Result<(Vec<Subscription>, KeyIndex), ConfigError> {
    let mut subscriptions = Vec::with_capacity(raw.len());
    let mut keys = KeyIndex::with_capacity(raw.len() * 2);
    let mut seen_ids = std::collections::HashSet::with_capacity(raw.len());
    for (i, s) in raw.into_iter().enumerate() {
        let field = |f: &str| format!("subscriptions[{i}].{f}");
        super::common::check_id(&s.id, &field("id"))?;
        if !seen_ids.insert(s.id.clone()) {
            return Err(ConfigError::new(field("id"), format!("duplicate subscription id \"{}\"", s.id)));
        }
        let product = scope(s.product.as_deref(), s.scope.as_deref(), apis, products, &field)?;
        let start_ms = match &s.start {
            None => 0,
            Some(t) => crate::time::parse_rfc3339_ms(t)
                .ok_or_else(|| ConfigError::new(field("start"), "not an RFC 3339 timestamp at or after 1970"))?,
        };
        let idx = u32::try_from(subscriptions.len()).map_err(|_| ConfigError::new("subscriptions", "too many subscriptions"))?;
        let mut any_key = false;
        for (slot, plain, hashed) in
            [("primary_key", &s.primary_key, &s.primary_key_sha256), ("secondary_key", &s.secondary_key, &s.secondary_key_sha256)]
        {
            let digest = match (plain, hashed) {
                (Some(_), Some(_)) => return Err(ConfigError::new(field(slot), format!("give {slot} or {slot}_sha256, not both"))),
                (Some(k), None) => {
                    if k.is_empty() {
                        return Err(ConfigError::new(field(slot), "empty key"));
                    }
                    Some(Digest::of(k.as_bytes()))
                }
                (None, Some(h)) => {
                    Some(Digest::from_hex(h).ok_or_else(|| ConfigError::new(field(&format!("{slot}_sha256")), "not 64 hex digits"))?)
                }
                (None, None) => None,
            };
            if let Some(d) = digest {
                any_key = true;
                if !keys.insert(d, idx) {
                    return Err(ConfigError::new(field(slot), "duplicate subscription key (used by another subscription or slot)"));
                }
            }
        }
        if !any_key {
            return Err(ConfigError::new(field("primary_key"), "a subscription needs a primary or secondary key"));
        }
        subscriptions.push(Subscription { record_key: format!("mlgate/s/{}", s.id), id: s.id, product, state: s.state, start_ms });
    }
    for (p, product) in products.iter_mut().enumerate() {
        if product.subscription_required {
            continue;
        }
        let idx = u32::try_from(subscriptions.len()).map_err(|_| ConfigError::new("subscriptions", "too many subscriptions"))?;
        product.anonymous = Some(idx);
        subscriptions.push(Subscription {
            id: String::new(),
            record_key: format!("mlgate/o/{}", product.id),
            product: u32::try_from(p).unwrap_or(u32::MAX),
            state: SubscriptionState::Active,
            start_ms: 0,
        });
    }
    Ok((subscriptions, keys))
}

/// The product a subscription counts under: its own, or the stand-in of its API scope.
fn scope(
    product: Option<&str>,
    scope: Option<&str>,
    apis: &[Api],
    products: &mut Vec<Product>,
    field: &dyn Fn(&str) -> String,
) -> Result<u32, ConfigError> {
    let index = |i: usize| u32::try_from(i).map_err(|_| ConfigError::new(field("scope"), "too many products"));
    let product_id = match (product, scope) {
        (Some(_), Some(_)) => return Err(ConfigError::new(field("scope"), "give product or scope, not both")),
        (None, None) => return Err(ConfigError::new(field("product"), "a subscription needs a product or a scope")),
        (Some(p), None) => Some(p),
        (None, Some(s)) => s.strip_prefix("/products/"),
    };
    if let Some(id) = product_id {
        let f = if product.is_some() { "product" } else { "scope" };
        let p = products.iter().position(|p| p.listed && p.id == id);
        return index(p.ok_or_else(|| ConfigError::new(field(f), format!("no product with id \"{id}\"")))?);
    }
    let scoped: Vec<u16> = match scope {
        Some("/apis") => (0..apis.len()).filter_map(|i| u16::try_from(i).ok()).collect(),
        Some(s) => match s.strip_prefix("/apis/").and_then(|id| apis.iter().position(|a| a.id == id)) {
            Some(i) => vec![u16::try_from(i).map_err(|_| ConfigError::new(field("scope"), "too many APIs"))?],
            None => return Err(ConfigError::new(field("scope"), "expected \"/apis\", \"/apis/<api id>\" or \"/products/<product id>\"")),
        },
        None => Vec::new(),
    };
    // One stand-in per distinct scope.
    if let Some(i) = products.iter().position(|p| !p.listed && p.apis == scoped) {
        return index(i);
    }
    products.push(Product {
        id: String::new(),
        name: String::new(),
        description: String::new(),
        apis: scoped,
        rate_limit: None,
        quota: None,
        token_limit: None,
        subscription_required: true,
        listed: false,
        anonymous: None,
    });
    index(products.len() - 1)
}
