//! Where a request is matched: API by URL suffix (in `gateway.rs`), then operation by
//! APIM URL template (`/workspaces/{workspace}/jobs/{jobid}?api-version={apiversion}`).
//!
//! The path part of every template goes into one `matchit` radix tree per API; operations
//! that share a path (e.g. `bes-status` GET and `bes-delete` DELETE) share a node and are told
//! apart by method and by the query parameters their templates require.

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
                    if path_params.iter().any(|p| p == cap) || q.iter().any(|(_, p)| matches!(p, QueryPart::Capture(c) if c == cap)) {
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

/// All operations of one API, ready to match. Operation `i` here is operation `i` of the
/// API in the model.
#[derive(Default)]
pub struct Route {
    /// (method, template) per operation.
    ops: Vec<(String, Template)>,
    tree: matchit::Router<Vec<u16>>,
}

/// A matched operation and its template parameters (borrowed from the request).
#[derive(Debug, PartialEq, Eq)]
pub struct Matched<'r, 'q> {
    pub op: u16,
    /// (template name, raw value) for path and query captures, in template order.
    pub params: Vec<(&'r str, &'q [u8])>,
}

impl Route {
    /// Builds the tree. On error, returns the index of the offending operation.
    pub fn build(ops: Vec<(String, Template)>) -> Result<Route, (usize, String)> {
        if ops.len() > usize::from(u16::MAX) {
            return Err((0, "too many operations".into()));
        }
        let mut tree: matchit::Router<Vec<u16>> = matchit::Router::new();
        let mut groups: Vec<(&str, Vec<u16>)> = Vec::new();
        for (i, (method, t)) in ops.iter().enumerate() {
            let i16 = u16::try_from(i).map_err(|_| (i, "too many operations".to_string()))?;
            if let Some(g) = groups.iter_mut().find(|(p, _)| *p == t.path) {
                let clash = g.1.iter().filter_map(|&j| ops.get(usize::from(j))).any(|(m, o)| m == method && o.query == t.query);
                if clash {
                    return Err((i, "same method and template as another operation".into()));
                }
                g.1.push(i16);
            } else {
                groups.push((t.path.as_str(), vec![i16]));
            }
        }
        // Operations in a group are tried in order: most query requirements first.
        for (path, mut ids) in groups {
            let first = ids.first().map_or(0, |&j| usize::from(j));
            ids.sort_by_key(|&j| std::cmp::Reverse(ops.get(usize::from(j)).map_or(0, |(_, t)| t.query.len())));
            tree.insert(path, ids).map_err(|e| (first, format!("conflicts with another template: {e}")))?;
        }
        Ok(Route { ops, tree })
    }

    /// The method and template of operation `i`.
    pub fn operation(&self, i: usize) -> Option<(&str, &Template)> {
        self.ops.get(i).map(|(m, t)| (m.as_str(), t))
    }

    /// Matches `path` (already without the API suffix) and the raw query string.
    pub fn find<'r, 'q>(&'r self, method: &[u8], path: &'q str, query: &'q [u8]) -> Option<Matched<'r, 'q>> {
        let m = self.tree.at(path).ok()?;
        'ops: for &idx in m.value.iter() {
            let Some((op_method, t)) = self.ops.get(usize::from(idx)) else { continue };
            if op_method.as_bytes() != method {
                continue;
            }
            let mut params = Vec::with_capacity(t.path_params.len() + t.query.len());
            for (k, v) in m.params.iter() {
                // matchit hands back the names we inserted, which live in `self.tree`; map
                // them to our own copies so the result borrows only `self.ops`.
                if let Some(name) = t.path_params.iter().find(|p| p.as_str() == k) {
                    if v.is_empty() {
                        continue 'ops;
                    }
                    params.push((name.as_str(), v.as_bytes()));
                }
            }
            for (name, part) in &t.query {
                let Some(value) = query_value(query, name.as_bytes()) else { continue 'ops };
                match part {
                    QueryPart::Capture(c) => {
                        if value.is_empty() {
                            continue 'ops;
                        }
                        params.push((c.as_str(), value))
                    }
                    QueryPart::Literal(l) => {
                        if value != l.as_bytes() {
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
pub fn query_value<'q>(query: &'q [u8], name: &[u8]) -> Option<&'q [u8]> {
    query.split(|&b| b == b'&').find_map(|pair| {
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => pair.split_at(i),
            None => (pair, &b"="[..]),
        };
        (k == name).then(|| v.get(1..).unwrap_or(b""))
    })
}
