//! The metric ids a host defines at configure time, and what one request adds to them. Ids are
//! the host's (`u32` in proxy-wasm, `usize` in the dynamic-module ABI); defining, adding and
//! recording are the host's calls, handed in as closures. Per request: table lookups and the
//! host's increments, no name formatted, nothing allocated.

use mlgate_core::admit::{Event, Events};
use mlgate_core::model::Gateway;
use mlgate_core::usage::{self, Call, Kind, Update};

/// One stat per core event (`mlgate.*`), and the sum of both quota kinds
/// ([`Event::QUOTA_EXCEEDED_STAT`], the name operators already chart).
#[derive(Clone, Copy)]
pub struct EventStats<Id> {
    by_event: [Option<Id>; Event::ALL.len()],
    quota_exceeded: Option<Id>,
}

impl<Id: Copy> EventStats<Id> {
    /// `define(name, is_gauge)` is the host's metric definition.
    pub fn define(mut define: impl FnMut(&'static str, bool) -> Option<Id>) -> Self {
        let mut by_event = [None; Event::ALL.len()];
        for (slot, e) in by_event.iter_mut().zip(Event::ALL) {
            let (name, gauge) = e.stat();
            *slot = define(name, gauge);
        }
        EventStats { by_event, quota_exceeded: define(Event::QUOTA_EXCEEDED_STAT, false) }
    }

    /// Adds `events`: `add(id, is_gauge, n)` is the host's increment.
    pub fn count(&self, events: &Events, mut add: impl FnMut(Id, bool, u64)) {
        for (e, n) in events.iter() {
            if let Some(id) = self.by_event.get(e as usize).copied().flatten() {
                add(id, e.stat().1, u64::from(n));
            }
            if e.is_quota_denial() {
                if let Some(id) = self.quota_exceeded {
                    add(id, false, u64::from(n));
                }
            }
        }
    }
}

/// The usage metrics of one configuration: per slot of the core's [`usage::Plan`], the host's
/// handle `M` of each of its [`usage::METRICS`] metrics (none where the slot has no such metric).
pub struct SlotTable<M> {
    cells: Vec<Option<M>>,
}

impl<M> SlotTable<M> {
    /// Defines every metric of every slot: `define(kind, name)` is the host's definition (the
    /// name without Envoy's `wasmcustom.`). Configure time only.
    pub fn define(gw: &Gateway, mut define: impl FnMut(Kind, String) -> Option<M>) -> Self {
        let mut cells: Vec<Option<M>> = Vec::new();
        cells.resize_with(gw.usage.len().saturating_mul(usage::METRICS), || None);
        for slot in 0..gw.usage.len() {
            let Ok(slot32) = u32::try_from(slot) else { break };
            for (i, kind, name) in gw.usage_definitions(slot32) {
                let Some(m) = define(kind, name) else { continue };
                if let Some(cell) = cells.get_mut(slot * usage::METRICS + i) {
                    *cell = Some(m);
                }
            }
        }
        SlotTable { cells }
    }

    /// The handle of metric `index` of `slot`.
    pub fn get(&self, slot: u32, index: usize) -> Option<&M> {
        if index >= usage::METRICS {
            return None;
        }
        self.cells.get((slot as usize).checked_mul(usage::METRICS)?.checked_add(index)?)?.as_ref()
    }

    /// Counts one finished call: up to eight updates (`add` for counters, `record` for
    /// histograms). The min/max gauges are the host's ([`mlgate_usage::extremes`]).
    pub fn record(&self, call: &Call, mut add: impl FnMut(&M, u64), mut record: impl FnMut(&M, u64)) {
        for u in usage::updates(call) {
            match u {
                Update::Add(i, n) => {
                    if let Some(m) = self.get(call.slot, i) {
                        add(m, n);
                    }
                }
                Update::Record(i, v) => {
                    if let Some(m) = self.get(call.slot, i) {
                        record(m, v);
                    }
                }
            }
        }
    }
}
