//! The memory lines of `mlgate check`: the core's estimate (`mlgate_core::memory`) for a
//! configuration, at full tables, in words.

use mlgate_core::memory::{Estimate, HISTOGRAMS_PER_SLOT_PER_WORKER, NATIVE_BASELINE, USAGE_BATCH_ENTRY, USAGE_BATCH_SLOTS, WASM_BASELINE};
use mlgate_core::usage::TIMELINE_HOURS;

/// Bytes as B, KiB, MiB or GiB with one decimal (the next unit from 1000 of one).
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 3] = ["KiB", "MiB", "GiB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS.get(unit).copied().unwrap_or("GiB"))
}

/// The summary's memory lines for Envoy with `workers` workers.
pub fn lines(m: &Estimate, workers: u32) -> String {
    let mut t = format!("  memory         at full tables, {workers} workers (README \"Memory\")\n");
    let subs = m.subscription_records;
    let each = subs.bytes.checked_div(subs.entries).unwrap_or(0);
    t.push_str(&format!(
        "    subscription records  {} × {} = {}: one per subscription with a limit, at its first call\n",
        subs.entries,
        size(each),
        size(subs.bytes)
    ));
    if m.counter_tables.is_empty() {
        t.push_str("    counter tables        none\n");
    }
    for c in &m.counter_tables {
        t.push_str(&format!("    counter table         {}: {} slots × {} = {}\n", c.field, c.slots, size(c.slot_bytes), size(c.bytes())));
    }
    if !m.counter_tables.is_empty() {
        t.push_str(&format!(
            "    counter tables        {} of counter_memory_kb {} KB ({}): what any client can fill\n",
            size(m.counter_bytes()),
            m.counter_budget / 1024,
            size(m.counter_budget)
        ));
    }
    let slots = m.usage_stats.entries;
    let histograms = slots * HISTOGRAMS_PER_SLOT_PER_WORKER * u64::from(workers);
    t.push_str(&format!(
        "    usage label sets      {slots}: {} of records, {} of Envoy stats, {} more once their histograms record\n",
        size(m.usage_records.bytes),
        size(m.usage_stats.bytes),
        size(histograms)
    ));
    let tl = m.timeline;
    t.push_str(&format!(
        "    report buckets        {slots} label sets × {TIMELINE_HOURS} hours × {} = {}: four quarter hours a record, the last 24 hours\n",
        size(tl.bytes.checked_div(tl.entries).unwrap_or(0)),
        size(tl.bytes)
    ));
    t.push_str(&format!(
        "    usage batch           {} label sets × {} = {} a worker (Wasm): counts waiting for the next one-second write\n",
        slots.min(USAGE_BATCH_SLOTS),
        size(USAGE_BATCH_ENTRY),
        size(slots.min(USAGE_BATCH_SLOTS) * USAGE_BATCH_ENTRY)
    ));
    t.push_str(&format!("    traffic adds          at most {} over idle\n", size(m.growth(workers))));
    t.push_str(&format!(
        "    idle, over no filter  Wasm {} (V8 and the module {}, stats, the configuration {} and {} in each of {} VMs); native {} (module {})\n",
        size(m.wasm_idle(workers)),
        size(WASM_BASELINE),
        size(m.config_host),
        size(m.config_per_vm),
        workers + 1,
        size(m.native_idle()),
        size(NATIVE_BASELINE)
    ));
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlgate_core::memory::{CounterTable, Table};

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(999), "999 B");
        assert_eq!(size(1023), "1.0 KiB");
        assert_eq!(size(1000 << 10), "1.0 MiB");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(16 << 20), "16.0 MiB");
        assert_eq!(size(3 << 30), "3.0 GiB");
        assert_eq!(size(5000 << 30), "5000.0 GiB");
    }

    #[test]
    fn lines_name_every_table_and_the_cap() {
        let m = Estimate {
            subscription_records: Table { entries: 2, bytes: 2048 },
            counter_tables: vec![CounterTable { field: "apis[0].rate_limit".into(), slots: 4096, slot_bytes: 1024 }],
            counter_budget: 16 << 20,
            usage_records: Table { entries: 3, bytes: 900 },
            timeline: Table { entries: 75, bytes: 75 * 700 },
            usage_stats: Table { entries: 3, bytes: 3 * 36 * 1024 },
            config_per_vm: 1024,
            config_host: 2048,
        };
        let t = lines(&m, 2);
        assert!(t.contains("subscription records  2 × 1.0 KiB = 2.0 KiB"), "{t}");
        assert!(t.contains("counter table         apis[0].rate_limit: 4096 slots × 1.0 KiB = 4.0 MiB"), "{t}");
        assert!(t.contains("counter tables        4.0 MiB of counter_memory_kb 16384 KB (16.0 MiB)"), "{t}");
        assert!(t.contains("usage label sets      3: 900 B of records, 108.0 KiB of Envoy stats, 27.0 KiB more"), "{t}");
        assert!(t.contains("report buckets        3 label sets × 25 hours × 700 B = 51.3 KiB"), "{t}");
        assert!(t.contains(&format!("traffic adds          at most {} over idle", size(m.growth(2)))), "{t}");
        assert!(t.contains("the configuration 2.0 KiB and 1.0 KiB in each of 3 VMs"), "{t}");
        // Every line is indented under the summary's `memory` line.
        assert!(t.lines().skip(1).all(|l| l.starts_with("    ")), "{t}");
        let none = Estimate { counter_tables: vec![], ..m };
        assert!(lines(&none, 1).contains("counter tables        none"));
    }
}
