//! Counter tables for `rate-limit-by-key` and `quota-by-key` (`counter: ip | header:<name>`): each keyed limit
//! counts in a bounded table of `counter_slots` records (`mlgate/c/<limit id>/<slot>`), so
//! shared-data memory is bounded by configuration, never by what clients send.
//!
//! A value hashes to a first slot and probes a few more: it takes its own slot, or a free one
//! (never used, or all its admissions expired). If every probe is busy it shares the first
//! one: counts merge, which only ever admits fewer for a value, never more.

use super::record::{self, prepare, rd64, wr64, Need, QuotaSeg, Ring, KEYED_BASE};
use super::spec::{self, count, decide, period_start, Ctx, Grant, Spec};
use super::store::{cas_update, load, HostError, Step};
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

/// How to take back an admission in a keyed record: if a later limit denies, or (held under an
/// `increment_condition`) when its status does not count.
pub(super) struct Undo<'g> {
    key: String,
    spec: Spec<'g>,
    /// The table slot counted in.
    pub(super) slot: u32,
    /// What [`count`] returned: the admission time written into the ring, or the quota period.
    pub(super) mark: u64,
}

pub(super) enum Commit<'g> {
    /// Counted; how to undo it, and this limit's status after counting.
    Admitted(Undo<'g>, Option<super::spec::RateLimitStatus>),
    Denied(Reply),
}

/// Owner tag 0 means "never owned".
fn owner_of(id: &str, value: &[u8]) -> u64 {
    fnv1a(0x6d6c_6761_7465, &[id.as_bytes(), value]) | 1
}

/// What a keyed record holds for `spec`: a ring of its calls, or a quota segment.
fn need_of<'s>(spec: &'s Spec<'_>) -> Need<'s> {
    match spec {
        Spec::Rate(rl) => (rl.id.as_bytes(), Some(rl.calls)),
        Spec::Quota(q) => (q.id.as_bytes(), None),
    }
}

/// Whether a slot's counts are all in the past (free to take over).
fn idle(rec: &[u8], p: usize, spec: &Spec<'_>, now: u64) -> bool {
    match spec {
        Spec::Rate(rl) => Ring::status(rec, p, now, rl.period_ms).0 == 0,
        Spec::Quota(q) => QuotaSeg::counts(rec, p, period_start(now, q.anchor_ms, q.period_ms)) == (0, 0),
    }
}

/// Decides and counts one call of `value` against the keyed limit `spec`.
pub(super) fn commit<'g>(spec: &Spec<'g>, value: &[u8], ctx: &mut Ctx<'_>, grant: &mut Grant) -> Result<Commit<'g>, HostError> {
    let id = spec.id();
    let owner = owner_of(id, value);
    let slots_n = ctx.counter_slots.max(1);
    let first = u32::try_from(fnv1a(0, &[id.as_bytes(), value]) % u64::from(slots_n)).unwrap_or(0);
    let now = ctx.now_ms;
    let need: [Need<'_>; 1] = [need_of(spec)];
    let empty = record::empty(KEYED_BASE);

    // Pick the slot: ours, else a free one, else share the first probe.
    let mut chosen = None;
    for i in 0..PROBES.min(slots_n) {
        let slot = (first + i) % slots_n;
        let key = record_key(id, slot);
        let (mut rec, _) = load(ctx.store, &key, &empty)?;
        let [p]: [usize; 1] = prepare(&mut rec, KEYED_BASE, &need);
        let tag = rd64(&rec, 1);
        if tag == owner || tag == 0 || idle(&rec, p, spec, now) {
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
            // Taking over a free slot: the previous owner's counts stay, and they are all in
            // the past anyway.
            if tag == 0 || idle(rec, p, spec, now) {
                wr64(rec, 1, owner);
            } else {
                // Someone claimed it meanwhile; count with them (conservative).
                claimed_meanwhile = true;
            }
        }
        // A quota's period before our count: a quota counted by key starts its periods on its
        // grid (its start argument is not used).
        if let Err((_, r)) = decide(rec, p, spec, now, 0) {
            return Step::Keep(Err(r));
        }
        local = Grant::default();
        let mark = count(rec, p, spec, now, 0, &mut local);
        Step::Write(Ok((mark, claimed_meanwhile)))
    })?;
    match outcome {
        Err(r) => Ok(Commit::Denied(r)),
        Ok((mark, claimed_meanwhile)) => {
            if claimed_meanwhile {
                grant.shared_counter_slots += 1;
            }
            if let Some(s) = local.rate_limit {
                grant.offer(s.limit, s.remaining, s.reset_secs);
            }
            grant.headers.append(&mut local.headers);
            grant.count_bandwidth |= local.count_bandwidth;
            Ok(Commit::Admitted(Undo { key, spec: *spec, slot, mark }, local.rate_limit))
        }
    }
}

/// Takes back keyed admissions after a later denial. Best effort: a failure leaves the
/// admission counted, which errs on the side of admitting fewer.
pub(super) fn rollback(undo: &[Undo<'_>], ctx: &mut Ctx<'_>) {
    for u in undo.iter().rev() {
        let _ = take_back(&u.key, &u.spec, u.mark, ctx);
    }
}

/// Gives back an admission a call held in slot `slot` of `spec`'s table (its status did not
/// count).
pub(super) fn give_back(spec: &Spec<'_>, slot: u32, mark: u64, ctx: &mut Ctx<'_>) -> Result<(), HostError> {
    take_back(&record_key(spec.id(), slot), spec, mark, ctx)
}

fn take_back(key: &str, spec: &Spec<'_>, mark: u64, ctx: &mut Ctx<'_>) -> Result<(), HostError> {
    cas_update(ctx.store, key, &record::empty(KEYED_BASE), ctx.max_retries, |rec| {
        record::repair(rec, KEYED_BASE);
        if spec::take_back(rec, KEYED_BASE, spec, mark) {
            Step::Write(())
        } else {
            Step::Keep(())
        }
    })
}
