//! The stats a configuration defines: one per core event (the names of the Wasm form) plus
//! `mlgate.panics`, and the usage metrics of every slot (tables shared with the Wasm host in
//! `mlgate-envoy`), with the values the admin reports read mirrored in the process.

use super::abi::callout::ConfigHook;
use super::abi::{ConfigCtx, Filter, MetricKind};
use crate::store::ProcessStore;
use mlgate_core::usage::{Call, Kind};
use mlgate_core::{Events, Gateway};
use mlgate_envoy::stats::{EventStats, SlotTable};
use mlgate_remote::flow::{self, Counts};
use mlgate_usage::extremes::Extremes;
use mlgate_usage::timeline::Timeline;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

/// Envoy stat ids of mlgate's metrics, one per core event.
pub(crate) struct Stats {
    events: EventStats<usize>,
    /// Native only: panics caught at the FFI boundary.
    pub(crate) panics: Option<usize>,
    /// The remote store's `mlgate.rls_*` (`flow::STATS` order), defined only with one.
    rls: [Option<usize>; 6],
}

impl Stats {
    pub(crate) fn define(ctx: &ConfigCtx, remote: bool) -> Stats {
        Stats {
            events: EventStats::define(|name, gauge| ctx.define_metric(name, gauge)),
            panics: ctx.define_metric("mlgate.panics", false),
            rls: flow::STATS.map(|(name, gauge)| if remote { ctx.define_metric(name, gauge) } else { None }),
        }
    }

    pub(crate) fn count(&self, f: &Filter, events: &Events) {
        self.events.count(events, |id, gauge, n| f.increment_metric(id, gauge, n));
    }

    /// Events counted on the main thread (a report's answer): counters only, there being no
    /// filter to move a gauge through.
    pub(crate) fn count_main(&self, hook: &ConfigHook, events: &Events) {
        self.events.count(events, |id, gauge, n| {
            if !gauge {
                hook.increment_counter(id, n);
            }
        });
    }

    /// What the remote store's flow counted, through a stream's filter.
    pub(crate) fn rls(&self, f: &Filter, c: &Counts) {
        for ((id, v), (_, gauge)) in self.rls.iter().zip(c.values()).zip(flow::STATS) {
            match (id, v.signum()) {
                (Some(id), 1) => f.increment_metric(*id, gauge, v.unsigned_abs()),
                (Some(id), -1) => f.decrement_gauge(*id, v.unsigned_abs()),
                _ => {}
            }
        }
    }

    /// The same on the main thread (reports' answers): counters only (no breaker moves there).
    pub(crate) fn rls_main(&self, hook: &ConfigHook, c: &Counts) {
        for ((id, v), (_, gauge)) in self.rls.iter().zip(c.values()).zip(flow::STATS) {
            if let (Some(id), 1.., false) = (id, v, gauge) {
                hook.increment_counter(*id, v.unsigned_abs());
            }
        }
    }
}

/// One usage metric: Envoy's id, and for counters and gauges its value mirrored in the
/// process, because the HTTP-filter ABI cannot read a stat back and the admin reports read
/// them (the Wasm host asks Envoy with `proxy_get_metric`). Mirrors are shared by name, like
/// Envoy's stats, so a reconfiguration carries the values on exactly as Envoy's do.
pub(crate) struct Metric {
    id: usize,
    kind: MetricKind,
    pub(crate) value: Option<Arc<AtomicU64>>,
}

/// Every mirror by metric name (process-wide, like Envoy's stat store).
pub(crate) static MIRRORS: LazyLock<Mutex<HashMap<String, Arc<AtomicU64>>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// The usage metrics of one configuration ([`mlgate_core::usage`]): each slot's metrics, defined
/// at configure time, and the min/max extremes.
pub(crate) struct Usage {
    metrics: SlotTable<Metric>,
    /// One view of the extremes for every worker: they share memory, so one view means fewer
    /// store round trips than one per worker (the Wasm form's VMs cannot share).
    extremes: Mutex<Extremes>,
    /// The report buckets (each slot's label fingerprint).
    timeline: Timeline,
}

impl Usage {
    pub(crate) fn define(gw: &Gateway, ctx: &ConfigCtx) -> Usage {
        let mut mirrors = MIRRORS.lock().unwrap_or_else(PoisonError::into_inner);
        let metrics = SlotTable::define(gw, |kind, name| {
            let kind = match kind {
                Kind::Counter => MetricKind::Counter,
                Kind::Gauge => MetricKind::Gauge,
                Kind::Histogram => MetricKind::Histogram,
            };
            let id = ctx.define(&name, kind)?;
            let value = (kind != MetricKind::Histogram).then(|| Arc::clone(mirrors.entry(name).or_default()));
            Some(Metric { id, kind, value })
        });
        Usage { metrics, extremes: Mutex::new(Extremes::new(gw.usage.len())), timeline: Timeline::new(gw) }
    }

    pub(crate) fn metric(&self, slot: u32, index: usize) -> Option<&Metric> {
        self.metrics.get(slot, index)
    }

    /// Counts one finished call: up to eight updates, and the extremes (no store access
    /// unless the call is outside what has been seen).
    /// `wall_ms`: the wall clock the call ended at (its report bucket is a quarter of UTC; the
    /// stream's own clock is monotonic).
    pub(crate) fn record(&self, f: &Filter, gw: &Gateway, call: &Call, wall_ms: u64) {
        self.metrics.record(
            call,
            |m, n| {
                f.increment_metric(m.id, m.kind == MetricKind::Gauge, n);
                if let Some(v) = &m.value {
                    v.fetch_add(n, Ordering::Relaxed);
                }
            },
            |m, v| f.record_histogram(m.id, v),
        );
        let mut ex = self.extremes.lock().unwrap_or_else(PoisonError::into_inner);
        let mut gauge = |i: usize, v: u64| {
            if let Some(m) = self.metric(call.slot, i) {
                f.set_gauge(m.id, v);
                if let Some(mirror) = &m.value {
                    mirror.store(v, Ordering::Relaxed);
                }
            }
        };
        ex.observe(gw, call.slot, call.api_time_us, call.service_time_us, &mut ProcessStore, &mut gauge);
        drop(ex);
        self.timeline.record(call, wall_ms, &mut ProcessStore);
    }
}
