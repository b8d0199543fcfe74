//! The stats this VM defines at configure time: one per core event, and the usage metrics of
//! every slot (tables shared with the dynamic module in `mlgate-envoy`), plus this worker's view
//! of the min/max extremes.

use super::abi;
use super::store::SharedData;
use mlgate_core::usage::{Call, Kind};
use mlgate_core::{Events, Gateway};
use mlgate_envoy::stats::{EventStats, SlotTable};
use mlgate_usage::batch::Batch;
use mlgate_usage::extremes::Extremes;
use mlgate_usage::timeline::Timeline;
use std::cell::RefCell;
use std::rc::{Rc, Weak};

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
/// this worker's view of the extremes, and its [`Batch`] of counter sums and report buckets not
/// yet written. Per request: the histogram values (two host calls), additions in VM memory, and
/// the extremes (no host call unless the call is outside what this worker has seen). The batch
/// goes out on the tick ([`TICK_MS`]), before this worker serves a report, when it is full, and
/// when the configuration goes away.
pub(crate) struct Usage {
    ids: SlotTable<u32>,
    extremes: RefCell<Extremes>,
    timeline: Timeline,
    batch: RefCell<Batch>,
}

/// How often each worker writes its batch: reports and counters lag by at most this.
pub(crate) const TICK_MS: u32 = 1000;

thread_local! {
    /// Every configuration's usage alive in this VM: the current one, and one replaced by a
    /// reconfiguration while its last streams finish (they count into it).
    static LIVE: RefCell<Vec<Weak<Usage>>> = const { RefCell::new(Vec::new()) };
}

/// Writes the batch of every configuration alive in this VM (this worker's counts).
pub(crate) fn flush_all() {
    let live: Vec<Rc<Usage>> = LIVE.with(|l| l.try_borrow().map(|l| l.iter().filter_map(Weak::upgrade).collect()).unwrap_or_default());
    for u in &live {
        u.flush();
    }
}

impl Usage {
    /// The usage of a configuration just accepted, known to [`flush_all`].
    pub(crate) fn shared(gw: &Gateway) -> Rc<Usage> {
        let u = Rc::new(Usage::define(gw));
        LIVE.with(|l| {
            if let Ok(mut l) = l.try_borrow_mut() {
                l.retain(|w| w.strong_count() > 0);
                l.push(Rc::downgrade(&u));
            }
        });
        u
    }

    fn define(gw: &Gateway) -> Usage {
        let ids = SlotTable::define(gw, |kind, name| {
            let kind = match kind {
                Kind::Counter => abi::COUNTER,
                Kind::Gauge => abi::GAUGE,
                Kind::Histogram => abi::HISTOGRAM,
            };
            abi::define_metric(kind, &name)
        });
        Usage { ids, extremes: RefCell::new(Extremes::new(gw.usage.len())), timeline: Timeline::new(gw), batch: RefCell::new(Batch::new()) }
    }

    pub(crate) fn id(&self, slot: u32, index: usize) -> Option<u32> {
        self.ids.get(slot, index).copied()
    }

    /// Counts one finished call. `now_ms`: the wall clock the call ended at (its report
    /// bucket's quarter).
    pub(crate) fn record(&self, gw: &Gateway, call: &Call, now_ms: u64) {
        let histogram = |i: usize, v: u64| {
            // Bench builds with `ablate-metrics` update no metric here.
            if let Some(id) = self.id(call.slot, i).filter(|_| !cfg!(feature = "ablate-metrics")) {
                abi::record_metric(id, v);
            }
        };
        if let Ok(mut batch) = self.batch.try_borrow_mut() {
            if !batch.add(call, now_ms, histogram) {
                // Full, or the call's slot waits with an earlier quarter: out with it first.
                self.write(&mut batch);
                batch.add(call, now_ms, histogram);
            }
        }
        if let Ok(mut ex) = self.extremes.try_borrow_mut() {
            let mut gauge = |i: usize, v: u64| {
                if let Some(id) = self.id(call.slot, i) {
                    abi::record_metric(id, v);
                }
            };
            ex.observe(gw, call.slot, call.api_time_us, call.service_time_us, &mut SharedData, &mut gauge);
        }
    }

    /// Writes this worker's batch: each waiting counter sum, each slot's report bucket.
    pub(crate) fn flush(&self) {
        if let Ok(mut batch) = self.batch.try_borrow_mut() {
            if !batch.is_empty() {
                self.write(&mut batch);
            }
        }
    }

    fn write(&self, batch: &mut Batch) {
        batch.flush(&self.timeline, &mut SharedData, |slot, i, n| {
            if let Some(id) = self.id(slot, i).filter(|_| !cfg!(feature = "ablate-metrics")) {
                abi::increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX));
            }
        });
    }
}

impl Drop for Usage {
    /// A configuration replaced or removed: what its last streams counted still goes out.
    fn drop(&mut self) {
        self.flush();
    }
}
