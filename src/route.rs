//! Where a request is matched: API by URL suffix (in `gateway.rs`), then operation by
//! APIM URL template (`/workspaces/{workspace}/jobs/{jobid}?api-version={apiversion}`).
//!
//! The path part of every template goes into one `matchit` radix tree per API; operations
//! that share a path (e.g. `bes-status` GET and `bes-delete` DELETE) share a node and are told
//! apart by method and by the query parameters their templates require.

use crate::config::RateLimitConfig;

/// A parsed URL template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The path in matchit syntax (APIM's `{name}` is the same).
    pub path: String,
    /// Names of the path parameters, in order.
    pub path_params: Vec<String>,
    /// Required query parameters: (query name, capture). A capture binds the value to a
    /// template parameter; a literal requires that exact value.
    pub query: Vec<(String, QueryPart)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryPart {
    Capture(String),
    Literal(String),
}

#[derive(Debug)]
pub struct Operation {
    pub id: String,
    /// Names this operation's rate-limit state inside records (`o:<api>/<op>`).
    pub limit_id: String,
    pub name: String,
    pub method: String,
    pub template: Template,
    pub rate_limit: Option<RateLimitConfig>,
}

fn is_param_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Template {
    pub fn parse(t: &str) -> Result<Template, String> {
        let (path, query) = match t.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (t, None),
        };
        if !path.starts_with('/') {
            return Err("must start with '/'".into());
        }
        if path.contains('#') || path.contains("//") {
            return Err("'#' and empty segments are not allowed".into());
        }
        let mut path_params = Vec::new();
        for seg in path.split('/').skip(1) {
            if seg.contains(['{', '}']) {
                let name = seg
                    .strip_prefix('{')
                    .and_then(|s| s.strip_suffix('}'))
                    .filter(|n| is_param_name(n))
                    .ok_or_else(|| format!("segment \"{seg}\": a parameter must be a whole segment like {{name}}"))?;
                if path_params.iter().any(|p| p == name) {
                    return Err(format!("parameter \"{name}\" appears twice"));
                }
                path_params.push(name.to_string());
            }
        }
        let mut q = Vec::new();
        if let Some(query) = query {
            for pair in query.split('&') {
                let (name, value) = pair.split_once('=').ok_or_else(|| format!("query part \"{pair}\": expected name={{param}}"))?;
                if name.is_empty() || name.contains(['{', '}', '#']) {
                    return Err(format!("query part \"{pair}\": bad parameter name"));
                }
                if q.iter().any(|(n, _): &(String, QueryPart)| n == name) {
                    return Err(format!("query parameter \"{name}\" appears twice"));
                }
                let part = if value.contains(['{', '}']) {
                    let cap = value
                        .strip_prefix('{')
                        .and_then(|s| s.strip_suffix('}'))
                        .filter(|n| is_param_name(n))
                        .ok_or_else(|| format!("query part \"{pair}\": expected {{param}}"))?;
                    if path_params.iter().any(|p| p == cap)
                        || q.iter().any(|(_, p)| matches!(p, QueryPart::Capture(c) if c == cap))
                    {
                        return Err(format!("parameter \"{cap}\" appears twice"));
                    }
                    QueryPart::Capture(cap.to_string())
                } else {
                    QueryPart::Literal(value.to_string())
                };
                q.push((name.to_string(), part));
            }
        }
        Ok(Template { path: path.to_string(), path_params, query: q })
    }
}

/// All operations of one API, ready to match.
#[derive(Default)]
pub struct Route {
    pub operations: Vec<Operation>,
    tree: matchit::Router<Vec<u16>>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route").field("operations", &self.operations).finish()
    }
}

/// A matched operation and its template parameters (borrowed from the request).
#[derive(Debug, PartialEq, Eq)]
pub struct Matched<'r, 'q> {
    pub op: u16,
    /// (template name, raw value) for path and query captures, in template order.
    pub params: Vec<(&'r str, &'q str)>,
}

impl Route {
    /// Builds the tree. On error, returns the index of the offending operation.
    pub fn build(operations: Vec<Operation>) -> Result<Route, (usize, String)> {
        let mut tree: matchit::Router<Vec<u16>> = matchit::Router::new();
        let mut groups: Vec<(String, Vec<u16>)> = Vec::new();
        for (i, op) in operations.iter().enumerate() {
            if let Some(g) = groups.iter_mut().find(|(p, _)| *p == op.template.path) {
                let clash = g.1.iter().any(|&j| {
                    let other = &operations[j as usize];
                    other.method == op.method && other.template.query == op.template.query
                });
                if clash {
                    return Err((i, "same method and template as another operation".into()));
                }
                g.1.push(i as u16);
            } else {
                groups.push((op.template.path.clone(), vec![i as u16]));
            }
        }
        // Operations in a group are tried in order: most query requirements first.
        for (path, mut ids) in groups {
            let first = ids[0] as usize;
            ids.sort_by_key(|&j| std::cmp::Reverse(operations[j as usize].template.query.len()));
            tree.insert(path.as_str(), ids).map_err(|e| (first, format!("conflicts with another template: {e}")))?;
        }
        Ok(Route { operations, tree })
    }

    /// Matches `path` (already without the API suffix) and the raw query string.
    pub fn find<'r, 'q>(&'r self, method: &str, path: &'q str, query: &'q str) -> Option<Matched<'r, 'q>> {
        let m = self.tree.at(path).ok()?;
        'ops: for &idx in m.value.iter() {
            let op = &self.operations[idx as usize];
            if op.method != method {
                continue;
            }
            let mut params = Vec::with_capacity(op.template.path_params.len() + op.template.query.len());
            for (k, v) in m.params.iter() {
                // matchit hands back the names we inserted, which live in `self.tree`; map
                // them to our own copies so the result borrows only `self.operations`.
                let name = op.template.path_params.iter().find(|p| p.as_str() == k).map(String::as_str);
                if let Some(name) = name {
                    if v.is_empty() {
                        continue 'ops;
                    }
                    params.push((name, v));
                }
            }
            for (name, part) in &op.template.query {
                let Some(value) = query_value(query, name) else { continue 'ops };
                match part {
                    QueryPart::Capture(c) => {
                        if value.is_empty() {
                            continue 'ops;
                        }
                        params.push((c.as_str(), value))
                    }
                    QueryPart::Literal(l) => {
                        if value != l {
                            continue 'ops;
                        }
                    }
                }
            }
            return Some(Matched { op: idx, params });
        }
        None
    }
}

/// The raw value of the first `name=` parameter of a query string, if present.
pub fn query_value<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}
