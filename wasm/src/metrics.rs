//! The stats this VM defines at configure time: one per core event, and the usage metrics of
//! every slot (tables shared with the dynamic module in `mlgate-envoy`), plus this worker's view
//! of the min/max extremes.

use super::abi;
use super::store::SharedData;
use mlgate_core::usage::{Call, Kind};
use mlgate_core::{Events, Gateway};
use mlgate_envoy::stats::{EventStats, SlotTable};
use mlgate_usage::extremes::Extremes;
use mlgate_usage::timeline::Timeline;
use std::cell::RefCell;

/// Counter ids in Envoy's stats (`wasmcustom.mlgate.*`), one per core event.
#[derive(Clone, Copy)]
pub(crate) struct Stats(EventStats<u32>);

impl Stats {
    pub(crate) fn define() -> Stats {
        Stats(EventStats::define(|name, gauge| abi::define_metric(if gauge { abi::GAUGE } else { abi::COUNTER }, name)))
    }

    pub(crate) fn count(&self, events: &Events) {
        self.0.count(events, |id, _, n| abi::increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX)));
    }
}

/// The usage metrics of one configuration ([`mlgate_core::usage`]): each slot's metric ids and
/// this worker's view of the extremes and of the report buckets. Per request: a table lookup
/// and the increments, and one read and write of the call's bucket record.
pub(crate) struct Usage {
    ids: SlotTable<u32>,
    extremes: RefCell<Extremes>,
    timeline: Timeline,
}

impl Usage {
    pub(crate) fn define(gw: &Gateway) -> Usage {
        let ids = SlotTable::define(gw, |kind, name| {
            let kind = match kind {
                Kind::Counter => abi::COUNTER,
                Kind::Gauge => abi::GAUGE,
                Kind::Histogram => abi::HISTOGRAM,
            };
            abi::define_metric(kind, &name)
        });
        Usage { ids, extremes: RefCell::new(Extremes::new(gw.usage.len())), timeline: Timeline::new(gw) }
    }

    pub(crate) fn id(&self, slot: u32, index: usize) -> Option<u32> {
        self.ids.get(slot, index).copied()
    }

    /// Counts one finished call: up to eight increments, and the extremes (no host call
    /// unless the call is outside what this worker has seen).
    /// `now_ms`: the wall clock the call ended at (its report bucket's quarter).
    pub(crate) fn record(&self, gw: &Gateway, call: &Call, now_ms: u64) {
        // Bench builds with `ablate-metrics` update no metric here.
        if !cfg!(feature = "ablate-metrics") {
            self.ids.record(
                call,
                |id, n| abi::increment_metric(*id, i64::try_from(n).unwrap_or(i64::MAX)),
                |id, v| abi::record_metric(*id, v),
            );
        }
        if let Ok(mut ex) = self.extremes.try_borrow_mut() {
            let mut gauge = |i: usize, v: u64| {
                if let Some(id) = self.id(call.slot, i) {
                    abi::record_metric(id, v);
                }
            };
            ex.observe(gw, call.slot, call.api_time_us, call.service_time_us, &mut SharedData, &mut gauge);
        }
        self.timeline.record(call, now_ms, &mut SharedData);
    }
}
