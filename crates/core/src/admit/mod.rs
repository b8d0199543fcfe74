//! Where a request is judged: [`admit`] takes the request as the host read it (hostile
//! bytes), the clock, a lazy view of the connection and the limit store, and returns one
//! [`Admission`] the host only has to apply: a local reply, a pass-through, or a forward
//! with its upstream rewrite, its export and its response headers; plus the events to count.
//!
//! The steps, in order: [`identify`] (API by URL suffix, scheme, operation by template,
//! subscription key), limits ([`crate::limits`]), then the rewrite plan ([`rewrite`]) and the
//! filter-state export ([`export`]). Failure mode and denial kinds are decided here.

pub mod condition;
mod counting;
mod events;
pub mod export;
mod identify;
mod outcome;
mod request;
mod rewrite;
pub mod tokens;

pub use events::{Event, Events};
pub use identify::Identity;
pub use outcome::{Admission, Forward, Outcome};
pub use request::{address_without_port, Connection, Request};
pub use rewrite::Edit;

use crate::limits::{self, Ctx, DenialKind, Grant, Plan, Spec, Store, Verdict, MAX_SPECS};
use crate::model::{Counter, FailureMode, Gateway};
use crate::reply;
use counting::Counting;

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
/// remote store (the Wasm host's `rls.rs` over `mlgate-remote`), which answers later.
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
        events.usage = gw.usage_slot(&matched);
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

    let (token_plan, new_body, stream) = match tokens::bound(gw, &identity, req) {
        tokens::Step::Go(plan, body, stream) => (plan, body, stream),
        tokens::Step::ReadBody => {
            let upstream_path = rewrite::upstream_path(identity.api, identity.rest, identity.query);
            let metered = tokens::Metered { sub: identity.sub_index, api: identity.api_index, charge: None };
            let tokens = Some(Box::new(tokens::TokenForward { body: None, stream: false, metered }));
            let fwd = Forward { identity, upstream_path, grant: Grant::default(), tokens };
            return Some(Admission { outcome: Outcome::ReadBody(fwd), events: Events::default() });
        }
        tokens::Step::Refuse(r, e) => {
            events.add(e, 1);
            return Some(Admission { outcome: Outcome::Reply(r), events });
        }
    };
    let specs = limits::limits_of(identity.api, identity.op, identity.product);
    let mut grant = Grant::default();
    if specs.iter().any(Option::is_some) || token_plan.limits.iter().any(Option::is_some) {
        let verdict = judge_limits(gw, req, conn, &identity, (&specs, token_plan), now_ms, limits)?;
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
                        DenialKind::TokenRate => Event::TokenRateLimited,
                        DenialKind::TokenQuota => Event::TokenQuota,
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
    let tokens = identity.op.tokens.map(|_| {
        Box::new(tokens::TokenForward {
            body: new_body,
            stream,
            metered: tokens::Metered { sub: identity.sub_index, api: identity.api_index, charge: grant.tokens },
        })
    });
    Some(Admission { outcome: Outcome::Forward(Forward { identity, upstream_path, grant, tokens }), events })
}

/// Resolves what keyed limits count per, then decides.
fn judge_limits(
    gw: &Gateway,
    req: &Request<'_>,
    conn: &mut dyn Connection,
    identity: &Identity<'_, '_>,
    (specs, tokens): (&[Option<Spec<'_>>; MAX_SPECS], limits::tokens::TokenPlan<'_>),
    now_ms: u64,
    limits: &mut dyn Limits,
) -> Option<Verdict> {
    // The client address is fetched once, and only if an `ip` limit applies.
    let needs_ip = specs.iter().flatten().any(|s| *s.counter() == Counter::Ip);
    let ip = if needs_ip { conn.address().unwrap_or_default() } else { Vec::new() };
    let mut values: [&[u8]; MAX_SPECS] = [&[]; MAX_SPECS];
    for (v, spec) in values.iter_mut().zip(specs.iter()) {
        if let Some(spec) = spec {
            *v = match spec.counter() {
                Counter::Subscription => &[],
                Counter::Ip => &ip,
                Counter::Header(name) => req.header(name.as_bytes()).unwrap_or_default(),
            };
        }
    }
    let plan = Plan { specs: *specs, values, record_key: &identity.sub.record_key, start_ms: identity.sub.start_ms, tokens };
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
