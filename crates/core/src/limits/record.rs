//! The byte format of limit records, and the sliding-window ring inside them.
//!
//! ```text
//! record   := VERSION u8 | [owner u64, keyed records only] | segment*
//! segment  := id_len u16 | id | kind u8 | payload
//! kind 1 (rate):  n u32 | head u32 | n × u64 admission times (ms), oldest at `head`
//! kind 2 (quota): period_start u64 | calls u64 | bytes u64   (a token quota: tokens in `calls`)
//! kind 3 (tokens per minute): newest second u64 | 61 × u64 tokens, one bucket per second
//! ```
//! All integers little-endian. A record is read defensively: a wrong version, a short
//! header or a segment that does not parse ends what is trusted, and the next write drops
//! the rest. Corrupt state is therefore treated as empty (bounded: at most one window's
//! worth admitted again), never trusted and never a panic.

use crate::config::common::MAX_RATE_LIMIT_CALLS;

pub(super) const VERSION: u8 = 2;
pub(super) const KIND_RATE: u8 = 1;
pub(super) const KIND_QUOTA: u8 = 2;
pub(super) const KIND_TOKENS: u8 = 3;
/// The payload of a tokens-per-minute segment: the newest second and its buckets.
pub(super) const TOKENS_PAYLOAD: usize = 8 + 8 * TOKEN_BUCKETS;
/// One-second buckets in a tokens-per-minute window (a call's tokens count for 60 to 61 s).
pub const TOKEN_BUCKETS: usize = 61;
pub(super) const QUOTA_ID: &[u8] = b"q";
/// Where segments start in a subscription record, and in a keyed (counter-table) record.
pub(super) const SUB_BASE: usize = 1;
pub(super) const KEYED_BASE: usize = 9;

pub(super) fn rd32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).and_then(|s| s.try_into().ok()).map_or(0, u32::from_le_bytes)
}
pub(super) fn rd64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).and_then(|s| s.try_into().ok()).map_or(0, u64::from_le_bytes)
}
pub(super) fn wr32(b: &mut [u8], at: usize, v: u32) {
    if let Some(s) = b.get_mut(at..at + 4) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}
pub(super) fn wr64(b: &mut [u8], at: usize, v: u64) {
    if let Some(s) = b.get_mut(at..at + 8) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

/// An empty record with `base` header bytes (version, and a zero owner for keyed records).
pub(super) fn empty(base: usize) -> Vec<u8> {
    let mut r = vec![0u8; base];
    if let Some(v) = r.first_mut() {
        *v = VERSION;
    }
    r
}

/// Where a segment sits in a record.
#[derive(Debug, Clone, Copy)]
pub(super) struct Seg {
    /// The id's first byte (the length prefix sits two bytes before it).
    pub id_start: usize,
    pub id_end: usize,
    pub kind: u8,
    pub payload: usize,
    pub end: usize,
}

/// The segment starting at `at`, if it is complete and well-formed.
pub(super) fn next_seg(rec: &[u8], at: usize) -> Option<Seg> {
    let len_bytes: [u8; 2] = rec.get(at..at + 2)?.try_into().ok()?;
    let id_start = at + 2;
    let id_end = id_start + usize::from(u16::from_le_bytes(len_bytes));
    let kind = *rec.get(id_end)?;
    let payload = id_end + 1;
    let end = match kind {
        KIND_RATE => {
            let n = rd32(rec, payload);
            if rec.len() < payload + 8 || n == 0 || n > MAX_RATE_LIMIT_CALLS {
                return None;
            }
            payload + 8 + 8 * n as usize
        }
        KIND_QUOTA => payload + 24,
        KIND_TOKENS => payload + TOKENS_PAYLOAD,
        _ => return None,
    };
    (end <= rec.len()).then_some(Seg { id_start, id_end, kind, payload, end })
}

/// Makes `rec` a well-formed record with `base` header bytes: a wrong version or short
/// header starts it afresh, and everything after the last well-formed segment is dropped.
pub(super) fn repair(rec: &mut Vec<u8>, base: usize) {
    if rec.len() < base || rec.first() != Some(&VERSION) {
        *rec = empty(base);
        return;
    }
    let mut at = base;
    while let Some(seg) = next_seg(rec, at) {
        at = seg.end;
    }
    rec.truncate(at);
}

/// The segment of `kind` named `id`, if the record has one.
pub(super) fn find_seg(rec: &[u8], base: usize, kind: u8, id: &[u8]) -> Option<Seg> {
    let mut at = base;
    while let Some(seg) = next_seg(rec, at) {
        if seg.kind == kind && rec.get(seg.id_start..seg.id_end) == Some(id) {
            return Some(seg);
        }
        at = seg.end;
    }
    None
}

fn push_header(rec: &mut Vec<u8>, id: &[u8], kind: u8) {
    // Ids are bounded at configure time (MAX_ID_BYTES), far below u16::MAX.
    let len = u16::try_from(id.len()).unwrap_or(u16::MAX);
    rec.extend_from_slice(&len.to_le_bytes());
    rec.extend_from_slice(id.get(..usize::from(len)).unwrap_or(id));
    rec.push(kind);
}

fn push_rate_segment(rec: &mut Vec<u8>, id: &[u8], times: &[u64]) {
    push_header(rec, id, KIND_RATE);
    rec.extend_from_slice(&u32::try_from(times.len()).unwrap_or(0).to_le_bytes());
    rec.extend_from_slice(&0u32.to_le_bytes());
    for t in times {
        rec.extend_from_slice(&t.to_le_bytes());
    }
}

fn push_quota_segment(rec: &mut Vec<u8>, id: &[u8]) {
    push_header(rec, id, KIND_QUOTA);
    rec.resize(rec.len() + 24, 0);
}

/// The payload offset of the tokens-per-minute segment `id`, added (empty) at the end if the
/// record has none. Only appends, so offsets found before stay valid.
pub(super) fn token_window(rec: &mut Vec<u8>, base: usize, id: &[u8]) -> usize {
    let id = id.get(..id.len().min(usize::from(u16::MAX))).unwrap_or(id);
    if let Some(s) = find_seg(rec, base, KIND_TOKENS, id) {
        return s.payload;
    }
    push_header(rec, id, KIND_TOKENS);
    rec.resize(rec.len() + TOKENS_PAYLOAD, 0);
    rec.len() - TOKENS_PAYLOAD
}

/// What a record must hold for one limit: its id and, for a rate limit, the ring size
/// (`None` is the quota segment).
pub(super) type Need<'a> = (&'a [u8], Option<u32>);

/// Repairs `rec`, then finds or adds the segments `needs`, resizing rings whose limit
/// changed, and returns each one's payload offset (in `needs` order). Segments of other
/// limits are kept untouched.
pub(super) fn prepare<const N: usize>(rec: &mut Vec<u8>, base: usize, needs: &[Need<'_>]) -> [usize; N] {
    repair(rec, base);
    let mut slots = [0usize; N];
    let mut i = 0;
    while let (Some(&(id, ring_n)), Some(slot)) = (needs.get(i), slots.get_mut(i)) {
        let id = id.get(..id.len().min(usize::from(u16::MAX))).unwrap_or(id);
        let kind = if ring_n.is_some() { KIND_RATE } else { KIND_QUOTA };
        match (find_seg(rec, base, kind, id), ring_n) {
            (Some(s), Some(n)) if Ring::n(rec, s.payload) != n as usize => {
                // The limit changed: rebuild this ring in place of the old one, keeping the
                // newest admissions, then start over (offsets after it moved).
                let times = Ring::resized(rec, s.payload, n);
                let mut seg = Vec::with_capacity(11 + id.len() + 8 * times.len());
                push_rate_segment(&mut seg, id, &times);
                rec.splice(s.id_start - 2..s.end, seg);
                i = 0;
                continue;
            }
            (Some(s), _) => *slot = s.payload,
            (None, Some(n)) => {
                push_rate_segment(rec, id, &vec![0u64; n as usize]);
                *slot = rec.len() - 8 - 8 * n as usize;
            }
            (None, None) => {
                push_quota_segment(rec, id);
                *slot = rec.len() - 24;
            }
        }
        i += 1;
    }
    slots
}

/// Ring of the last `n` admission times of a sliding-window rate limit, at payload `p`.
pub(super) struct Ring;

impl Ring {
    pub(super) fn n(rec: &[u8], p: usize) -> usize {
        rd32(rec, p) as usize
    }
    pub(super) fn head(rec: &[u8], p: usize) -> usize {
        rd32(rec, p + 4) as usize % Ring::n(rec, p).max(1)
    }
    fn slot(rec: &[u8], p: usize, i: usize) -> usize {
        p + 8 + 8 * ((Ring::head(rec, p) + i) % Ring::n(rec, p).max(1))
    }
    /// The i-th oldest admission time.
    pub(super) fn at(rec: &[u8], p: usize, i: usize) -> u64 {
        rd64(rec, Ring::slot(rec, p, i))
    }
    /// Admitted now iff the oldest of the last `n` admissions left the window; else the
    /// milliseconds until it does.
    pub(super) fn decide(rec: &[u8], p: usize, now: u64, period: u64) -> Result<(), u64> {
        let free_at = Ring::at(rec, p, 0).saturating_add(period);
        if free_at <= now {
            Ok(())
        } else {
            Err(free_at - now)
        }
    }
    /// Records an admission at `now` (never before the newest, so the ring stays ordered and
    /// time only moves forward). Returns the slot written and the time it held.
    pub(super) fn admit(rec: &mut [u8], p: usize, now: u64) -> (usize, u64) {
        let n = Ring::n(rec, p).max(1);
        let newest = Ring::at(rec, p, n - 1);
        let slot = Ring::slot(rec, p, 0);
        let prev = rd64(rec, slot);
        wr64(rec, slot, now.max(newest));
        wr32(rec, p + 4, u32::try_from((Ring::head(rec, p) + 1) % n).unwrap_or(0));
        (slot, prev)
    }
    /// Takes back one admission recorded at `time`: the entries older than it move one step
    /// newer and the oldest place gets 0 (never). Whatever that place held before had already
    /// left the window when a later admission overwrote it, so 0 decides the same. `false`
    /// when no entry holds `time` (overwritten: it had left the window, nothing to give back).
    pub(super) fn remove(rec: &mut [u8], p: usize, time: u64) -> bool {
        let n = Ring::n(rec, p);
        let Some(i) = (0..n).rev().find(|&i| Ring::at(rec, p, i) == time) else { return false };
        for j in (1..=i).rev() {
            let older = Ring::at(rec, p, j - 1);
            wr64(rec, Ring::slot(rec, p, j), older);
        }
        wr64(rec, Ring::slot(rec, p, 0), 0);
        true
    }
    /// (remaining, ms until the oldest admission in the window leaves it).
    pub(super) fn status(rec: &[u8], p: usize, now: u64, period: u64) -> (u64, u64) {
        let n = Ring::n(rec, p);
        let cutoff = now.saturating_sub(period);
        // Times are ordered oldest first: the first one inside the window by binary search.
        let (mut lo, mut hi) = (0usize, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if Ring::at(rec, p, mid) > cutoff {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        let reset = if lo < n { Ring::at(rec, p, lo).saturating_add(period).saturating_sub(now) } else { 0 };
        (lo as u64, reset)
    }
    /// The newest `min(old n, new n)` admission times, oldest first, in a ring of size `n`.
    fn resized(rec: &[u8], p: usize, n: u32) -> Vec<u64> {
        let (old, n) = (Ring::n(rec, p), n as usize);
        let keep = old.min(n);
        let mut times = vec![0u64; n];
        for (i, t) in times.iter_mut().skip(n - keep).enumerate() {
            *t = Ring::at(rec, p, old - keep + i);
        }
        times
    }
}

/// Quota segment accessors (payload at `p`).
pub(super) struct QuotaSeg;

impl QuotaSeg {
    /// Takes one call back, if the segment is still in `period` and counted one there.
    pub(super) fn take_back(rec: &mut [u8], p: usize, period: u64) -> bool {
        let calls = QuotaSeg::counts(rec, p, period).0;
        if rd64(rec, p) != period || calls == 0 {
            return false;
        }
        wr64(rec, p + 8, calls - 1);
        true
    }
    /// (calls, bytes) counted in the period `cur`, or in a newer one the record already
    /// moved to: a request whose clock reading is older counts into the newer period, so
    /// a record's period never goes back.
    pub(super) fn counts(rec: &[u8], p: usize, cur: u64) -> (u64, u64) {
        if rd64(rec, p) >= cur {
            (rd64(rec, p + 8), rd64(rec, p + 16))
        } else {
            (0, 0)
        }
    }
    /// Moves the segment forward to period `cur` (never back), then adds calls and bytes.
    pub(super) fn add(rec: &mut [u8], p: usize, cur: u64, calls: u64, bytes: u64) -> u64 {
        if rd64(rec, p) < cur {
            wr64(rec, p, cur);
            wr64(rec, p + 8, 0);
            wr64(rec, p + 16, 0);
        }
        let c = rd64(rec, p + 8).saturating_add(calls);
        wr64(rec, p + 8, c);
        wr64(rec, p + 16, rd64(rec, p + 16).saturating_add(bytes));
        c
    }
}
