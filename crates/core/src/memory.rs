//! What a configuration costs in Envoy's memory, and the cap on the one table that grows with
//! values clients choose. The costs are measured (README "Memory": Envoy 1.40, 2 workers, RSS
//! of the process); `mlgate check` prints this estimate for a configuration.
//!
//! | table | entries | created by | cost of one |
//! |---|---|---|---|
//! | subscription records `mlgate/s/<id>` | one per subscription with a limit | its first call with a valid key | [`entry`] of its record |
//! | counter tables `mlgate/c/<limit>/<slot>` | `counter_slots` per keyed limit | a new counter value (any client) | [`entry`] of one ring |
//! | usage records `mlgate/u/<labels>` | one per usage label set | the first call counted there | [`entry`] of 32 bytes |
//! | report buckets `mlgate/t/<slot>/<hour>` | [`TIMELINE_HOURS`] per usage label set | its first call in that hour | [`entry`] of [`TIMELINE_RECORD`] bytes (four quarter-hour buckets) |
//! | usage stats (Envoy's) | 27 per label set | configure (histograms grow when used) | [`STATS_PER_SLOT`] + [`HISTOGRAMS_PER_SLOT_PER_WORKER`] |
//!
//! Only counter tables grow with what an attacker sends (every new `x-client` value, every
//! address), so only they have a cap: the sum of every keyed limit's full table may not exceed
//! `counter_memory_kb` (default [`DEFAULT_COUNTER_MEMORY_KB`]), or the configuration is refused.

use crate::model::{Api, Counter, Gateway, LimitsStore, OnFailure, Product, Quota, RateLimit, TokenLimit};
use crate::usage::{TIMELINE_HOURS, TIMELINE_RECORD};

/// The default of `counter_memory_kb`: 16 MiB for every keyed limit's table together, so full
/// tables and everything else mlgate keeps stay within 32 MiB over idle.
pub const DEFAULT_COUNTER_MEMORY_KB: u32 = 16 * 1024;
/// What one store entry costs beyond its key and value bytes: the host's map node and the
/// allocations of key and value. Measured 140 bytes in the Wasm form (proxy-wasm shared data)
/// and 250 in the native form (its table, with the hash table's growth).
pub const ENTRY_OVERHEAD: u64 = 256;
/// Envoy's memory for the 27 stats of one usage label set, defined at configure. Measured 31 to
/// 35 KiB (1,995 label sets: +59.6 MiB Wasm, +67.6 MiB native).
pub const STATS_PER_SLOT: u64 = 36 << 10;
/// What a label set's histograms add once a worker has recorded into them. Measured 3.3 to 4.4
/// KiB per worker (1,200 label sets used on 2 workers: +7.6 MiB Wasm, +10.2 MiB native).
pub const HISTOGRAMS_PER_SLOT_PER_WORKER: u64 = 9 << 9;
/// The label sets one Wasm worker holds in its usage batch between writes (`mlgate-usage`'s
/// `batch`), and what each costs at most (its 29 sums, its quarter's sums, bookkeeping).
pub const USAGE_BATCH_SLOTS: u64 = 256;
pub const USAGE_BATCH_ENTRY: u64 = 400;
/// The compiled configuration per subscription in each Wasm VM's linear memory (measured 530
/// bytes: 8,000 subscriptions grow a VM's memory from 1,152 to 5,376 KiB).
pub const CONFIG_PER_SUBSCRIPTION: u64 = 512;
/// The configuration per subscription outside the VMs: Envoy's copies of the plugin's JSON,
/// and the native module's compiled model (measured 0.5 KiB Wasm, 0.7 to 0.9 KiB native).
pub const HOST_PER_SUBSCRIPTION: u64 = 1024;
/// Envoy with mlgate.wasm, idle, over Envoy without a filter (2 workers, 10 subscriptions): V8
/// and the compiled module, mostly heap that compilation freed and the allocator kept
/// (measured 47 MiB).
pub const WASM_BASELINE: u64 = 48 << 20;
/// The same for the native module (measured 5.2 MiB).
pub const NATIVE_BASELINE: u64 = 6 << 20;

/// The bytes of a usage record's value (the min/max extremes of one label set).
const USAGE_RECORD: u64 = 32;
/// A rate segment's header: id length (2), kind (1), n (4), head (4).
const RATE_HEADER: u64 = 11;
/// A quota segment's header without the id (length, kind) and its payload.
const QUOTA_SEGMENT: u64 = 3 + 24;
/// A tokens-per-minute segment's payload: the newest second and 61 buckets.
const TOKENS_PAYLOAD: u64 = 8 + 8 * 61;

/// The memory of one store entry with `key` and `value` bytes: both, the host's overhead, and
/// the allocator's rounding of a large value (at most 1/16 of it).
pub fn entry(key: u64, value: u64) -> u64 {
    ENTRY_OVERHEAD + key + value + value / 16
}

fn rate_segment(rl: &RateLimit) -> u64 {
    RATE_HEADER + rl.id.len() as u64 + 8 * u64::from(rl.calls)
}

fn digits(mut n: u32) -> u64 {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// One keyed limit's table at full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterTable {
    /// Where the limit is configured (`apis[0].rate_limit`).
    pub field: String,
    pub slots: u32,
    /// One slot's record: key `mlgate/c/<id>/<slot>`, version, owner tag, the ring.
    pub slot_bytes: u64,
}

/// One slot of keyed limit `rl`'s table of `slots`: key `mlgate/c/<id>/<slot>` (the widest
/// slot number), version, owner tag, the ring.
pub fn slot_bytes(rl: &RateLimit, slots: u32) -> u64 {
    keyed_slot(&rl.id, rate_segment(rl), slots)
}

fn keyed_slot(id: &str, segment: u64, slots: u32) -> u64 {
    let key = "mlgate/c/".len() as u64 + id.len() as u64 + 1 + digits(slots.saturating_sub(1));
    entry(key, 9 + segment)
}

/// A quota's segment in the subscription record (none for a quota by key).
fn per_sub_quota(q: &Option<Quota>) -> u64 {
    q.as_ref().filter(|q| q.counter == Counter::Subscription).map_or(0, |q| QUOTA_SEGMENT + q.id.len() as u64)
}

/// Every limit counted by key: where it is configured, its id, and its segment's bytes.
fn keyed_limits<'g>(apis: &'g [Api], products: &'g [Product]) -> Vec<(String, &'g str, u64)> {
    let mut out = Vec::new();
    let mut add = |field: String, rl: &'g Option<RateLimit>, q: &'g Option<Quota>| {
        if let Some(rl) = rl.as_ref().filter(|r| r.counter != Counter::Subscription) {
            out.push((format!("{field}.rate_limit"), rl.id.as_str(), rate_segment(rl)));
        }
        if let Some(q) = q.as_ref().filter(|q| q.counter != Counter::Subscription) {
            out.push((format!("{field}.quota"), q.id.as_str(), QUOTA_SEGMENT + q.id.len() as u64));
        }
    };
    for (i, a) in apis.iter().enumerate() {
        add(format!("apis[{i}]"), &a.rate_limit, &a.quota);
        for (j, o) in a.operations.iter().enumerate() {
            add(format!("apis[{i}].operations[{j}]"), &o.rate_limit, &o.quota);
        }
    }
    for (i, p) in products.iter().enumerate() {
        add(format!("products[{i}]"), &p.rate_limit, &p.quota);
    }
    out
}

impl CounterTable {
    pub fn bytes(&self) -> u64 {
        u64::from(self.slots) * self.slot_bytes
    }
}

/// Every keyed limit's table, `slots` slots each, with where the limit is configured.
pub fn counter_tables(apis: &[Api], products: &[Product], slots: u32) -> Vec<CounterTable> {
    keyed_limits(apis, products)
        .into_iter()
        .map(|(field, id, segment)| CounterTable { field, slots, slot_bytes: keyed_slot(id, segment, slots) })
        .collect()
}

/// Whether this Envoy keeps counter tables: always with shared data, and with a rate limit
/// service whose `on_failure` is `local`.
pub fn local_tables(store: &LimitsStore) -> bool {
    match store {
        LimitsStore::SharedData => true,
        LimitsStore::Rls(r) => r.on_failure == OnFailure::Local,
    }
}

/// `Err(KB the full tables would take)` when that exceeds `budget_kb` (the configure-time
/// refusal; plain loops, as this is in the .wasm).
pub fn check_counter_budget(apis: &[Api], products: &[Product], slots: u32, budget_kb: u32) -> Result<(), u64> {
    let total = counter_tables(apis, products, slots).iter().fold(0u64, |t, c| t.saturating_add(c.bytes()));
    if total <= u64::from(budget_kb) * 1024 {
        Ok(())
    } else {
        Err(total.div_ceil(1024))
    }
}

/// A table's entries and their bytes together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Table {
    pub entries: u64,
    pub bytes: u64,
}

/// What a configuration costs in Envoy's memory (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Estimate {
    pub subscription_records: Table,
    /// Empty when the limits are counted in a rate limit service with no local fallback.
    pub counter_tables: Vec<CounterTable>,
    /// `counter_memory_kb` in bytes.
    pub counter_budget: u64,
    pub usage_records: Table,
    /// The report buckets: [`TIMELINE_HOURS`] hour records per label set, each holding four
    /// quarter hours (`mlgate-usage`'s timeline).
    pub timeline: Table,
    /// Label sets, and Envoy's memory for their stats as defined at configure.
    pub usage_stats: Table,
    /// The compiled configuration in one Wasm VM (beyond an empty one).
    pub config_per_vm: u64,
    /// The configuration outside the VMs (Envoy's copies; the native module's model).
    pub config_host: u64,
}

impl Estimate {
    pub fn counter_bytes(&self) -> u64 {
        self.counter_tables.iter().map(CounterTable::bytes).sum()
    }

    /// Every store entry at full (the CAS sentinel included).
    pub fn store_bytes(&self) -> u64 {
        self.subscription_records.bytes + self.counter_bytes() + self.usage_records.bytes + self.timeline.bytes + entry(19, 1)
    }

    /// What traffic can add to an idle Envoy with `workers` workers: every store entry, every
    /// label set's histograms recorded into on every worker, and each worker's full usage batch
    /// (the Wasm form's). (Per in-flight stream and per connection there is more, which ends
    /// with them: README "Memory".)
    pub fn growth(&self, workers: u32) -> u64 {
        let batch = self.usage_stats.entries.min(USAGE_BATCH_SLOTS) * USAGE_BATCH_ENTRY;
        self.store_bytes() + (self.usage_stats.entries * HISTOGRAMS_PER_SLOT_PER_WORKER + batch) * u64::from(workers)
    }

    /// Idle Envoy with mlgate.wasm over Envoy without a filter: the baseline, the stats and
    /// the configuration, in Envoy and in the main thread's VM and each worker's.
    pub fn wasm_idle(&self, workers: u32) -> u64 {
        WASM_BASELINE + self.usage_stats.bytes + self.config_host + self.config_per_vm * (u64::from(workers) + 1)
    }

    /// The same for the native module (one configuration for every worker).
    pub fn native_idle(&self) -> u64 {
        NATIVE_BASELINE + self.usage_stats.bytes + self.config_host
    }
}

fn token_segments(tl: &TokenLimit) -> u64 {
    let window = tl.tokens_per_minute.map_or(0, |_| 3 + tl.id.len() as u64 + TOKENS_PAYLOAD);
    window + tl.quota.map_or(0, |_| QUOTA_SEGMENT + tl.quota_id.len() as u64)
}

/// The bytes of a subscription record of product `p`: every per-subscription limit it can meet.
fn subscription_record(gw: &Gateway, p: &Product) -> u64 {
    let per_sub = |rl: &Option<RateLimit>| rl.as_ref().filter(|r| r.counter == Counter::Subscription).map_or(0, rate_segment);
    let tokens = |tl: &Option<TokenLimit>| tl.as_ref().map_or(0, token_segments);
    let mut rec = 1 + per_sub(&p.rate_limit) + per_sub_quota(&p.quota) + tokens(&p.token_limit);
    for api in p.apis.iter().filter_map(|&i| gw.apis.get(usize::from(i))) {
        rec += per_sub(&api.rate_limit) + per_sub_quota(&api.quota) + tokens(&api.token_limit);
        rec += api.operations.iter().map(|o| per_sub(&o.rate_limit) + per_sub_quota(&o.quota)).sum::<u64>();
    }
    rec
}

/// The estimate for a configuration.
pub fn estimate(gw: &Gateway) -> Estimate {
    let mut subs = Table::default();
    for sub in &gw.subscriptions {
        let Some(p) = gw.products.get(sub.product as usize) else { continue };
        let rec = subscription_record(gw, p);
        if rec > 1 {
            subs.entries += 1;
            subs.bytes += entry(sub.record_key.len() as u64, rec);
        }
    }
    let counter_tables = if local_tables(&gw.settings.limits_store) {
        counter_tables(&gw.apis, &gw.products, gw.settings.counter_slots)
    } else {
        Vec::new()
    };
    let slots = gw.usage.len() as u32;
    let mut usage_records = Table::default();
    for slot in 0..slots {
        usage_records.entries += 1;
        usage_records.bytes += entry("mlgate/u/".len() as u64 + gw.usage_labels(slot).len() as u64, USAGE_RECORD);
    }
    // Keys `mlgate/t/<slot>/<hour % TIMELINE_HOURS>` (arithmetic: no key is formatted here).
    let mut timeline = Table::default();
    for slot in 0..slots {
        for hour in 0..TIMELINE_HOURS as u32 {
            timeline.entries += 1;
            timeline.bytes += entry("mlgate/t/".len() as u64 + digits(slot) + 1 + digits(hour), TIMELINE_RECORD);
        }
    }
    Estimate {
        subscription_records: subs,
        counter_tables,
        counter_budget: u64::from(gw.settings.counter_memory_kb) * 1024,
        usage_records,
        timeline,
        usage_stats: Table { entries: u64::from(slots), bytes: u64::from(slots) * STATS_PER_SLOT },
        config_per_vm: gw.subscriptions.len() as u64 * CONFIG_PER_SUBSCRIPTION,
        config_host: gw.subscriptions.len() as u64 * HOST_PER_SUBSCRIPTION,
    }
}
