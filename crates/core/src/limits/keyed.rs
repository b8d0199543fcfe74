//! Counter tables for `rate-limit-by-key` (`counter: ip | header:<name>`): each keyed limit
//! counts in a bounded table of `counter_slots` records (`mlgate/c/<limit id>/<slot>`), so
//! shared-data memory is bounded by configuration, never by what clients send.
//!
//! A value hashes to a first slot and probes a few more: it takes its own slot, or a free one
//! (never used, or all its admissions expired). If every probe is busy it shares the first
//! one: counts merge, which only ever admits fewer for a value, never more.

use super::record::{self, prepare, rd64, wr64, Need, Ring, KEYED_BASE};
use super::spec::{decide, Ctx, Grant, Spec};
use super::store::{cas_update, load, HostError, Step};
use crate::model::RateLimit;
use crate::reply::Reply;

const PROBES: u32 = 4;

fn fnv1a(seed: u64, parts: &[&[u8]]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn record_key(id: &str, slot: u32) -> String {
    format!("mlgate/c/{id}/{slot}")
}

/// How to take back an admission in a keyed record if a later limit denies.
pub(super) struct Undo {
    key: String,
    /// The table slot counted in.
    pub(super) slot: u32,
    /// The admission time our commit wrote into the ring.
    pub(super) time: u64,
    /// What that ring slot held before.
    prev: u64,
}

pub(super) enum Commit {
    /// Counted; how to undo it, and this limit's status after counting.
    Admitted(Undo, Option<super::spec::RateLimitStatus>),
    Denied(Reply),
}

/// Owner tag 0 means "never owned".
fn owner_of(id: &str, value: &[u8]) -> u64 {
    fnv1a(0x6d6c_6761_7465, &[id.as_bytes(), value]) | 1
}

/// Decides and counts one call of `value` against the keyed limit `rl`.
pub(super) fn commit(rl: &RateLimit, value: &[u8], ctx: &mut Ctx<'_>, grant: &mut Grant) -> Result<Commit, HostError> {
    let id = rl.id.as_str();
    let owner = owner_of(id, value);
    let slots_n = ctx.counter_slots.max(1);
    let first = u32::try_from(fnv1a(0, &[id.as_bytes(), value]) % u64::from(slots_n)).unwrap_or(0);
    let now = ctx.now_ms;
    let need: [Need<'_>; 1] = [(id.as_bytes(), Some(rl.calls))];
    let spec = Spec::Rate(rl);
    let empty = record::empty(KEYED_BASE);
    let idle = |rec: &[u8], p: usize| Ring::status(rec, p, now, rl.period_ms).0 == 0;

    // Pick the slot: ours, else a free one, else share the first probe.
    let mut chosen = None;
    for i in 0..PROBES.min(slots_n) {
        let slot = (first + i) % slots_n;
        let key = record_key(id, slot);
        let (mut rec, _) = load(ctx.store, &key, &empty)?;
        let [p]: [usize; 1] = prepare(&mut rec, KEYED_BASE, &need);
        let tag = rd64(&rec, 1);
        if tag == owner || tag == 0 || idle(&rec, p) {
            chosen = Some((key, slot));
            break;
        }
    }
    let shared = chosen.is_none();
    let (key, slot) = chosen.unwrap_or_else(|| (record_key(id, first), first));
    if shared {
        grant.shared_counter_slots += 1;
    }

    let mut local = Grant::default();
    let outcome = cas_update(ctx.store, &key, &empty, ctx.max_retries, |rec| {
        let [p]: [usize; 1] = prepare(rec, KEYED_BASE, &need);
        let tag = rd64(rec, 1);
        let mut claimed_meanwhile = false;
        if tag != owner && !shared {
            // Taking over a free slot: the previous owner's expired admissions stay, and
            // they no longer count in the window anyway.
            if tag == 0 || idle(rec, p) {
                wr64(rec, 1, owner);
            } else {
                // Someone claimed it meanwhile; count with them (conservative).
                claimed_meanwhile = true;
            }
        }
        if let Err((_, r)) = decide(rec, p, &spec, now, 0) {
            return Step::Keep(Err(r));
        }
        local = Grant::default();
        let (slot, prev) = Ring::admit(rec, p, now);
        let (remaining, reset) = Ring::status(rec, p, now, rl.period_ms);
        local.offer(u64::from(rl.calls), remaining, super::spec::ceil_secs(reset));
        if let Some(h) = &rl.remaining_calls_header {
            local.headers.push((h.clone(), remaining.to_string()));
        }
        if let Some(h) = &rl.total_calls_header {
            local.headers.push((h.clone(), rl.calls.to_string()));
        }
        Step::Write(Ok((rd64(rec, slot), prev, claimed_meanwhile)))
    })?;
    match outcome {
        Err(r) => Ok(Commit::Denied(r)),
        Ok((time, prev, claimed_meanwhile)) => {
            if claimed_meanwhile {
                grant.shared_counter_slots += 1;
            }
            if let Some(s) = local.rate_limit {
                grant.offer(s.limit, s.remaining, s.reset_secs);
            }
            grant.headers.append(&mut local.headers);
            Ok(Commit::Admitted(Undo { key, slot, time, prev }, local.rate_limit))
        }
    }
}

/// Takes back keyed admissions after a later denial: the newest ring entry equal to our
/// admission time gets its previous value back. Best effort: a failure leaves the
/// admission counted, which errs on the side of admitting fewer.
pub(super) fn rollback(undo: &[Undo], ctx: &mut Ctx<'_>) {
    let empty = record::empty(KEYED_BASE);
    for u in undo.iter().rev() {
        let _ = cas_update(ctx.store, &u.key, &empty, ctx.max_retries, |rec| {
            record::repair(rec, KEYED_BASE);
            let Some(seg) = record::next_seg(rec, KEYED_BASE) else { return Step::Keep(()) };
            let p = seg.payload;
            let n = Ring::n(rec, p);
            let Some(i) = (0..n).rev().find(|&i| Ring::at(rec, p, i) == u.time) else { return Step::Keep(()) };
            let idx = (Ring::head(rec, p) + i) % n.max(1);
            if i + 1 == n {
                // Our admission is still the newest: step the ring back.
                wr64(rec, p + 8 + 8 * idx, u.prev);
                record::wr32(rec, p + 4, u32::try_from(idx).unwrap_or(0));
            } else {
                let v = u.prev.min(Ring::at(rec, p, 0));
                wr64(rec, p + 8 + 8 * idx, v);
            }
            Step::Write(())
        });
    }
}

/// Gives back an admission a call held in slot `slot` of `rl`'s table (its status did not
/// count): the ring entry written at `time` is taken out.
pub(super) fn give_back(rl: &RateLimit, slot: u32, time: u64, ctx: &mut Ctx<'_>) -> Result<(), HostError> {
    let key = record_key(&rl.id, slot);
    cas_update(ctx.store, &key, &record::empty(KEYED_BASE), ctx.max_retries, |rec| {
        record::repair(rec, KEYED_BASE);
        match record::find_seg(rec, KEYED_BASE, record::KIND_RATE, rl.id.as_bytes()) {
            Some(seg) if Ring::remove(rec, seg.payload, time) => Step::Write(()),
            _ => Step::Keep(()),
        }
    })
}
