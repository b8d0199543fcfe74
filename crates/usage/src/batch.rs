//! One worker's usage, counted in its own memory and written out together (issue 20's cut of
//! the per-call host work). Per finished call a host would otherwise add up to six counters and
//! read and write the call's report bucket (a shared-data record of a few hundred bytes); here
//! those become additions to this worker's [`Batch`], and [`Batch::flush`] writes each touched
//! slot once: its counter sums, and its quarter into the [`Timeline`]. Histogram values cannot be
//! summed, so [`Batch::add`] hands them on at once.
//!
//! **Exact, a little later.** Nothing is dropped or estimated: every counter and bucket gets the
//! same sums as call-by-call writes, at the next flush (the Wasm host flushes on its one-second
//! tick, before it serves a report, and when the configuration goes away). A call in a quarter
//! other than the one its slot's entry holds, or a slot past the cap, makes the host flush first.
//!
//! **Bounded.** At most [`BATCH_SLOTS`] slots wait at once, [`BATCH_ENTRY_BYTES`] each; a host
//! flushes when a call finds no room.

use crate::acc::Acc;
use crate::timeline::{quarter_of, Timeline};
use mlgate_core::limits::Store;
use mlgate_core::usage::{updates, Call, Update, METRICS};

/// The slots one worker holds at most between flushes (the memory estimate's).
pub const BATCH_SLOTS: usize = mlgate_core::memory::USAGE_BATCH_SLOTS as usize;

/// What one waiting slot costs (its counters, its quarter and the list's bookkeeping).
pub const BATCH_ENTRY_BYTES: usize = std::mem::size_of::<Entry>();

struct Entry {
    slot: u32,
    /// The hour and quarter the calls in `acc` ended in.
    hour: u64,
    quarter: usize,
    adds: [u64; METRICS],
    acc: Acc,
}

/// This worker's counts not yet written (see the module's notes).
#[derive(Default)]
pub struct Batch {
    entries: Vec<Entry>,
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Counts `call`, which ended at `now_ms`: its counter additions and its report quarter,
    /// here; its histogram values through `record(index, value)` at once. `false` (and nothing
    /// counted): no room for it (the cap, or its slot waits with another quarter); flush, then
    /// add it again.
    pub fn add(&mut self, call: &Call, now_ms: u64, mut record: impl FnMut(usize, u64)) -> bool {
        let (hour, quarter) = quarter_of(now_ms);
        let at = match self.entries.iter().position(|e| e.slot == call.slot) {
            Some(i) if self.entries.get(i).is_some_and(|e| (e.hour, e.quarter) == (hour, quarter)) => i,
            Some(_) => return false,
            None if self.entries.len() >= BATCH_SLOTS => return false,
            None => {
                self.entries.push(Entry { slot: call.slot, hour, quarter, adds: [0; METRICS], acc: Acc::default() });
                self.entries.len() - 1
            }
        };
        let Some(e) = self.entries.get_mut(at) else { return false };
        for u in updates(call) {
            match u {
                Update::Add(i, n) => {
                    if let Some(sum) = e.adds.get_mut(i) {
                        *sum = sum.saturating_add(n);
                    }
                }
                Update::Record(i, v) => record(i, v),
            }
        }
        e.acc.add(&Acc::call(call));
        true
    }

    /// Writes everything waiting: `add(slot, index, n)` for each counter sum, then each slot's
    /// quarter into `timeline` (one read and one write of its record). Empty afterwards.
    pub fn flush(&mut self, timeline: &Timeline, store: &mut dyn Store, mut add: impl FnMut(u32, usize, u64)) {
        for e in self.entries.drain(..) {
            for (i, n) in e.adds.iter().enumerate() {
                if *n > 0 {
                    add(e.slot, i, *n);
                }
            }
            timeline.add(e.slot, e.hour, e.quarter, &e.acc, store);
        }
    }
}
