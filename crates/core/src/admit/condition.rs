//! The `increment_condition` step of a forwarded call: when its response status is known (or
//! it ended without one), the admissions it held in limits that do not count that status are
//! given back ([`crate::limits::give_back`]).

use super::counting::Counting;
use super::events::{Event, Events};
use super::outcome::Forward;
use crate::limits::{self, Ctx, Held, Store};
use crate::model::Gateway;

/// What a call holds in conditional limits, kept by the host until its status is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conditional {
    pub sub: u32,
    pub api: u16,
    pub op: u16,
    pub held: Held,
}

impl Conditional {
    /// `None` for a call that holds nothing (no limit of it has an `increment_condition`).
    pub fn of(fwd: &Forward<'_, '_>) -> Option<Conditional> {
        if !fwd.grant.held.any() {
            return None;
        }
        let id = &fwd.identity;
        Some(Conditional { sub: id.sub_index, api: id.api_index, op: id.op_index, held: fwd.grant.held })
    }
}

/// The call was answered with `status` (0: it ended without a response): gives back what it
/// held in the limits that do not count that status.
pub fn settle_status(gw: &Gateway, c: &Conditional, status: u16, now_ms: u64, store: &mut dyn Store) -> Events {
    let mut events = Events::default();
    let Some(sub) = gw.subscriptions.get(c.sub as usize) else { return events };
    let Some(api) = gw.apis.get(usize::from(c.api)) else { return events };
    let (Some(op), Some(product)) = (api.operations.get(usize::from(c.op)), gw.products.get(sub.product as usize)) else { return events };
    let specs = limits::limits_of(api, op, product);
    let mut store = Counting { inner: store, created: 0 };
    let mut ctx = Ctx { store: &mut store, now_ms, max_retries: gw.settings.max_cas_retries, counter_slots: gw.settings.counter_slots };
    if limits::give_back(&specs, &sub.record_key, &c.held, status, &mut ctx).is_err() {
        events.add(Event::StoreFailure, 1);
    }
    events.add(Event::StoreKeysCreated, store.created);
    events
}
