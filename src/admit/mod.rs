//! Where a request is judged: [`admit`] takes the request as the host read it (hostile
//! bytes), the clock, a lazy view of the connection and the limit store, and returns one
//! [`Admission`] the host only has to apply: a local reply, a pass-through, or a forward
//! with its upstream rewrite, its export and its response headers; plus the events to count.
//!
//! The steps, in order: [`identify`] (API by URL suffix, scheme, operation by template,
//! subscription key), limits ([`crate::limits`]), then the rewrite plan ([`rewrite`]) and the
//! filter-state export ([`export`]). Failure mode and denial kinds are decided here.

mod events;
pub mod export;
mod identify;
mod rewrite;

pub use events::{Event, Events};
pub use identify::Identity;

use crate::limits::{self, Ctx, DenialKind, Grant, Plan, Spec, Store, Verdict, MAX_SPECS};
use crate::model::{Counter, FailureMode, Gateway};
use crate::reply::{self, Reply};

/// The request as the host hands it over: pseudo-headers and every header as raw bytes
/// (lower-case names, as Envoy delivers them). Nothing here is assumed to be UTF-8.
pub struct Request<'r> {
    pub method: &'r [u8],
    pub path: &'r [u8],
    pub scheme: &'r [u8],
    pub authority: &'r [u8],
    pub headers: &'r [(&'r [u8], &'r [u8])],
}

impl<'r> Request<'r> {
    /// Builds the view from a header list that contains the pseudo-headers.
    pub fn from_headers(headers: &'r [(&'r [u8], &'r [u8])]) -> Request<'r> {
        let mut r = Request { method: b"", path: b"", scheme: b"", authority: b"", headers };
        for (k, v) in headers {
            match *k {
                b":method" => r.method = v,
                b":path" => r.path = v,
                b":scheme" => r.scheme = v,
                b":authority" => r.authority = v,
                _ => {}
            }
        }
        r
    }

    /// The first value of a header (`lc_name` lower-case).
    pub fn header(&self, lc_name: &[u8]) -> Option<&'r [u8]> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(lc_name)).map(|(_, v)| *v)
    }
}

/// What the host knows about the downstream connection, asked for only when needed (each
/// answer may cost a host call).
pub trait Connection {
    /// The client address Envoy established (no port), for `counter: "ip"`.
    fn address(&mut self) -> Option<Vec<u8>>;
    /// Whether the downstream connection is TLS (a client header cannot say so).
    fn is_tls(&mut self) -> bool;
}

/// Envoy's `source.address` (`ip:port` or `[v6]:port`) without its port and brackets: what
/// `counter: "ip"` counts. Both hosts read the attribute and hand it here.
pub fn address_without_port(mut a: Vec<u8>) -> Vec<u8> {
    if let Some(i) = a.iter().rposition(|&b| b == b':') {
        if a.get(i + 1..).is_some_and(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit)) {
            a.truncate(i);
        }
    }
    a.retain(|&b| b != b'[' && b != b']');
    a
}

/// What the host must do with a request.
pub enum Outcome<'g, 'r> {
    /// Answer now; nothing goes upstream.
    Reply(Reply),
    /// Outside every API and the operator lets such requests through: remove the client's
    /// copies of the identity headers (listed here only when present), change nothing else.
    PassThrough { strip: [Option<&'g str>; 2] },
    /// Authenticated, matched and within limits: rewrite and send upstream.
    Forward(Forward<'g, 'r>),
}

/// The outcome and the events to count, whatever the outcome.
pub struct Admission<'g, 'r> {
    pub outcome: Outcome<'g, 'r>,
    pub events: Events,
}

/// An admitted request: who called what, and what changes on its way up and back.
pub struct Forward<'g, 'r> {
    pub identity: Identity<'g, 'r>,
    /// The upstream `:path`: suffix removed, subscription key removed from the query.
    pub upstream_path: Vec<u8>,
    /// The limits' grant: response headers, and whether body bytes must be counted.
    pub grant: Grant,
}

impl Forward<'_, '_> {
    /// Response headers to add: `RateLimit-*` (unless turned off) and APIM's optional
    /// remaining/total headers.
    pub fn response_headers(&self, gw: &Gateway) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if gw.settings.rate_limit_headers {
            if let Some(s) = self.grant.rate_limit {
                out.extend(s.headers().into_iter().map(|(k, v)| (k.to_string(), v)));
            }
        }
        out.extend(self.grant.headers.iter().cloned());
        out
    }
}

/// Judges one request. Pure but for the store and the connection it is handed.
pub fn admit<'g, 'r>(
    gw: &'g Gateway,
    req: &Request<'r>,
    now_ms: u64,
    conn: &mut dyn Connection,
    store: &mut dyn Store,
) -> Admission<'g, 'r> {
    let mut local = LocalLimits::new(store);
    // A store here always decides at once.
    admit_with(gw, req, now_ms, conn, &mut local)
        .unwrap_or_else(|| Admission { outcome: Outcome::Reply(reply::limits_unavailable()), events: Events::default() })
}

/// Where a request's limits are decided: over a [`Store`] here ([`LocalLimits`]), or by a
/// remote store (`crate::rls`), which answers later.
pub trait Limits {
    /// The verdict on `plan`, or `None` while it is being decided elsewhere (the host pauses
    /// the request, and judges it again with the answer).
    fn check(&mut self, gw: &Gateway, who: Option<&Identity<'_, '_>>, plan: &Plan<'_, '_>, now_ms: u64) -> Option<Verdict>;
    /// What an `Unavailable` verdict does: the operator's choice for this store.
    fn failure_mode(&self, gw: &Gateway) -> FailureMode {
        gw.settings.failure_mode
    }
    /// Store keys the last `check` created (for the key gauge).
    fn keys_created(&self) -> u32 {
        0
    }
}

/// Limits decided here, over a store (shared data, or the tests' map).
pub struct LocalLimits<'s> {
    store: &'s mut dyn Store,
    created: u32,
}

impl<'s> LocalLimits<'s> {
    pub fn new(store: &'s mut dyn Store) -> Self {
        LocalLimits { store, created: 0 }
    }
}

impl Limits for LocalLimits<'_> {
    fn check(&mut self, gw: &Gateway, _who: Option<&Identity<'_, '_>>, plan: &Plan<'_, '_>, now_ms: u64) -> Option<Verdict> {
        let mut store = Counting { inner: &mut *self.store, created: 0 };
        let mut ctx = Ctx { store: &mut store, now_ms, max_retries: gw.settings.max_cas_retries, counter_slots: gw.settings.counter_slots };
        let verdict = limits::check(plan, &mut ctx);
        self.created = store.created;
        Some(verdict)
    }
    fn keys_created(&self) -> u32 {
        self.created
    }
}

/// [`admit`] with the limits decided by `limits`; `None` while they are being decided
/// elsewhere (nothing was counted or answered yet).
pub fn admit_with<'g, 'r>(
    gw: &'g Gateway,
    req: &Request<'r>,
    now_ms: u64,
    conn: &mut dyn Connection,
    limits: &mut dyn Limits,
) -> Option<Admission<'g, 'r>> {
    let mut events = Events::default();
    let mut matched = crate::usage::Matched::default();
    let identified = identify::identify(gw, req, conn, &mut matched);
    if !matches!(identified, Err(identify::Early::PassThrough)) {
        // Every judged call counts in one usage slot; a pass-through is not an API call.
        events.usage = gw.usage.slot(gw, &matched);
        events.matched = matched;
    }
    let identity = match identified {
        Ok(id) => id,
        Err(identify::Early::Reply(r, e)) => {
            events.add(e, 1);
            return Some(Admission { outcome: Outcome::Reply(r), events });
        }
        Err(identify::Early::PassThrough) => {
            let s = &gw.settings;
            let present = |name: &'g str| req.header(name.as_bytes()).map(|_| name);
            let strip = [present(&s.subscription_id_header), present(&s.product_id_header)];
            return Some(Admission { outcome: Outcome::PassThrough { strip }, events });
        }
    };

    let specs = gw.limits_of(identity.api, identity.op, identity.product);
    let mut grant = Grant::default();
    if specs.iter().any(Option::is_some) {
        let verdict = judge_limits(gw, req, conn, &identity, &specs, now_ms, limits)?;
        events.add(Event::StoreKeysCreated, limits.keys_created());
        match verdict {
            Verdict::Admit(g) => {
                events.add(Event::CounterSlotShared, g.shared_counter_slots);
                grant = g;
            }
            Verdict::Deny(kind, r) => {
                events.add(
                    match kind {
                        DenialKind::RateLimit => Event::RateLimited,
                        DenialKind::QuotaCalls => Event::QuotaCalls,
                        DenialKind::QuotaBandwidth => Event::QuotaBandwidth,
                    },
                    1,
                );
                return Some(Admission { outcome: Outcome::Reply(r), events });
            }
            Verdict::Unavailable => {
                events.add(Event::StoreFailure, 1);
                match limits.failure_mode(gw) {
                    FailureMode::Deny => return Some(Admission { outcome: Outcome::Reply(reply::limits_unavailable()), events }),
                    FailureMode::Allow => events.add(Event::FailureModeAllowed, 1),
                }
            }
        }
    }

    let upstream_path = rewrite::upstream_path(identity.api, identity.rest, identity.query);
    Some(Admission { outcome: Outcome::Forward(Forward { identity, upstream_path, grant }), events })
}

/// Resolves what keyed limits count per, then decides.
fn judge_limits(
    gw: &Gateway,
    req: &Request<'_>,
    conn: &mut dyn Connection,
    identity: &Identity<'_, '_>,
    specs: &[Option<Spec<'_>>; MAX_SPECS],
    now_ms: u64,
    limits: &mut dyn Limits,
) -> Option<Verdict> {
    // The client address is fetched once, and only if an `ip` limit applies.
    let needs_ip = specs.iter().flatten().any(|s| matches!(s, Spec::Rate(rl) if rl.counter == Counter::Ip));
    let ip = if needs_ip { conn.address().unwrap_or_default() } else { Vec::new() };
    let mut values: [&[u8]; MAX_SPECS] = [&[]; MAX_SPECS];
    for (v, spec) in values.iter_mut().zip(specs.iter()) {
        if let Some(Spec::Rate(rl)) = spec {
            *v = match &rl.counter {
                Counter::Subscription => &[],
                Counter::Ip => &ip,
                Counter::Header(name) => req.header(name.as_bytes()).unwrap_or_default(),
            };
        }
    }
    let plan = Plan { specs: *specs, values, record_key: &identity.sub.record_key, start_ms: identity.sub.start_ms };
    limits.check(gw, Some(identity), &plan, now_ms)
}

/// Counts the body bytes of an admitted call against its subscription's bandwidth quota.
pub fn record_bandwidth(gw: &Gateway, sub_index: u32, bytes: u64, now_ms: u64, store: &mut dyn Store) -> Events {
    let mut events = Events::default();
    let Some(sub) = gw.subscriptions.get(sub_index as usize) else { return events };
    let Some(quota) = gw.products.get(sub.product as usize).and_then(|p| p.quota.as_ref()) else { return events };
    let mut store = Counting { inner: store, created: 0 };
    let mut ctx = Ctx { store: &mut store, now_ms, max_retries: gw.settings.max_cas_retries, counter_slots: gw.settings.counter_slots };
    if limits::add_bandwidth(&sub.record_key, sub.start_ms, quota, bytes, &mut ctx).is_err() {
        events.add(Event::StoreFailure, 1);
    }
    events.add(Event::StoreKeysCreated, store.created);
    events
}

/// A store that counts the keys it created, for the key gauge.
struct Counting<'s> {
    inner: &'s mut dyn Store,
    created: u32,
}

impl Store for Counting<'_> {
    fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, u32)>, limits::HostError> {
        self.inner.get(key)
    }
    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), limits::SetError> {
        self.inner.set(key, value, cas)
    }
    fn created(&mut self) {
        self.created += 1;
        self.inner.created();
    }
    fn create_absent(&mut self, key: &str, value: &[u8]) -> Result<bool, limits::HostError> {
        self.inner.create_absent(key, value)
    }
}
