//! The decision: is one more call allowed by every limit that applies, and if so count it in
//! all of them at once. Counter-table limits are committed first, then the subscription's
//! record in one compare-and-swap; a later denial undoes the earlier commits.

use super::keyed;
use super::record::{self, prepare, rd64, Need, QuotaSeg, QUOTA_ID, SUB_BASE};
use super::spec::{count, decide, period_start, Ctx, DenialKind, Grant, PerLimit, Plan, Spec, Verdict, MAX_SPECS};
use super::spec::{HeldAt, TokenCharge};
use super::store::{cas_update, HostError, Step};
use super::tokens::{self as tok, Segs};
use crate::model::{Counter, Quota};

/// Decides and counts one request against every limit in `plan`. `Admit` means it was
/// counted in all of them; a denial counted nowhere.
pub fn check(plan: &Plan<'_, '_>, ctx: &mut Ctx<'_>) -> Verdict {
    check_at(plan, ctx, &mut PerLimit::default())
}

/// [`check`], also telling which limit denied, or each limit's status (a remote store
/// answers per limit).
pub fn check_at(plan: &Plan<'_, '_>, ctx: &mut Ctx<'_>, per: &mut PerLimit) -> Verdict {
    let mut grant = Grant::default();
    let mut undo: Vec<keyed::Undo<'_>> = Vec::new();
    let mut needs: [Need<'_>; MAX_SPECS] = [(&[], None); MAX_SPECS];
    let mut sub_specs: [Option<Spec<'_>>; MAX_SPECS] = [None; MAX_SPECS];
    // The index in `plan.specs` of each subscription-record limit.
    let mut sub_at = [0usize; MAX_SPECS];
    let mut n_sub = 0;

    // Keyed counters first (their admissions are the cheapest to undo), then the subscription.
    for (i, (spec, value)) in plan.specs.iter().zip(plan.values.iter()).enumerate() {
        let (need, spec) = match spec {
            Some(spec) if *spec.counter() != Counter::Subscription => {
                match keyed::commit(spec, value, ctx, &mut grant) {
                    Ok(keyed::Commit::Admitted(u, status)) => {
                        if spec.conditional() {
                            if let Some(h) = grant.held.at.get_mut(i) {
                                *h = Some(HeldAt { mark: u.mark, slot: u.slot });
                            }
                        }
                        undo.push(u);
                        if let Some(s) = per.statuses.get_mut(i) {
                            *s = status;
                        }
                    }
                    Ok(keyed::Commit::Denied(r)) => {
                        keyed::rollback(&undo, ctx);
                        per.denied_at = Some(i);
                        let kind = match spec {
                            Spec::Rate(_) => DenialKind::RateLimit,
                            Spec::Quota(_) => DenialKind::QuotaCalls,
                        };
                        return Verdict::Deny(kind, r);
                    }
                    Err(HostError) => {
                        keyed::rollback(&undo, ctx);
                        return Verdict::Unavailable;
                    }
                }
                continue;
            }
            Some(s @ Spec::Rate(rl)) => ((rl.id.as_bytes(), Some(rl.calls)), *s),
            Some(s @ Spec::Quota(q)) => ((q.id.as_bytes(), None), *s),
            None => continue,
        };
        if let (Some(n), Some(c), Some(at)) = (needs.get_mut(n_sub), sub_specs.get_mut(n_sub), sub_at.get_mut(n_sub)) {
            *n = need;
            *c = Some(spec);
            *at = i;
            n_sub += 1;
        }
    }
    let tokens = &plan.tokens;
    let token_limits = tokens.limits.iter().flatten().count();
    if n_sub > 0 || token_limits > 0 {
        let needs = needs.get(..n_sub).unwrap_or(&[]);
        let now = ctx.now_ms;
        let start = plan.start_ms;
        let quota_needs = token_quota_needs(tokens);
        let outcome = cas_update(ctx.store, plan.record_key, &record::empty(SUB_BASE), ctx.max_retries, |rec| {
            let slots: [usize; MAX_SPECS] = prepare(rec, SUB_BASE, needs);
            let segs = token_segs(rec, tokens, &quota_needs);
            // Decide everything first; write nothing unless all admit.
            for (j, (p, spec)) in slots.iter().zip(sub_specs.iter().flatten()).enumerate() {
                if let Err(d) = decide(rec, *p, spec, now, start) {
                    return Step::Keep(Err((d, j)));
                }
            }
            for (tl, s) in tokens.limits.iter().zip(segs) {
                if let Some(tl) = tl {
                    if let Err(d) = tok::decide(rec, s, tl, tokens.cost, now) {
                        return Step::Keep(Err((d, MAX_SPECS)));
                    }
                }
            }
            let mut local = Grant::default();
            let mut each = [None; MAX_SPECS];
            for (((p, spec), e), at) in slots.iter().zip(sub_specs.iter().flatten()).zip(each.iter_mut()).zip(sub_at) {
                let mut one = Grant::default();
                let mark = count(rec, *p, spec, now, start, &mut one);
                if let (true, Some(h)) = (spec.conditional(), local.held.at.get_mut(at)) {
                    *h = Some(HeldAt { mark, slot: 0 });
                }
                if let Some(s) = one.rate_limit {
                    local.offer(s.limit, s.remaining, s.reset_secs);
                }
                *e = one.rate_limit;
                local.headers.append(&mut one.headers);
                local.count_bandwidth |= one.count_bandwidth;
            }
            if token_limits > 0 {
                let mut charge = TokenCharge { admitted_ms: now, reserved: tokens.cost, quota_periods: [0; 2] };
                for ((tl, s), period) in tokens.limits.iter().zip(segs).zip(charge.quota_periods.iter_mut()) {
                    if let Some(tl) = tl {
                        *period = tok::count(rec, s, tl, tokens.cost, now, &mut local);
                    }
                }
                local.tokens = Some(charge);
            }
            Step::Write(Ok((local, each)))
        });
        match outcome {
            Ok(Ok((local, each))) => {
                if let Some(s) = local.rate_limit {
                    grant.offer(s.limit, s.remaining, s.reset_secs);
                }
                for (at, st) in sub_at.iter().zip(each).take(n_sub) {
                    if let Some(slot) = per.statuses.get_mut(*at) {
                        *slot = st;
                    }
                }
                grant.headers.extend(local.headers);
                grant.count_bandwidth |= local.count_bandwidth;
                for (g, l) in grant.held.at.iter_mut().zip(local.held.at) {
                    *g = g.or(l);
                }
                grant.tokens = local.tokens;
            }
            Ok(Err(((kind, r), j))) => {
                keyed::rollback(&undo, ctx);
                per.denied_at = sub_at.get(j).copied();
                return Verdict::Deny(kind, r);
            }
            Err(HostError) => {
                keyed::rollback(&undo, ctx);
                return Verdict::Unavailable;
            }
        }
    }
    Verdict::Admit(grant)
}

/// Adds body bytes to a subscription's bandwidth quota (after the response).
pub fn add_bandwidth(record_key: &str, start_ms: u64, quota: &Quota, bytes: u64, ctx: &mut Ctx<'_>) -> Result<(), HostError> {
    if quota.bandwidth_bytes.is_none() || bytes == 0 {
        return Ok(());
    }
    let need: [Need<'_>; 1] = [(QUOTA_ID, None)];
    let now = ctx.now_ms;
    cas_update(ctx.store, record_key, &record::empty(SUB_BASE), ctx.max_retries, |rec| {
        let [p]: [usize; 1] = prepare(rec, SUB_BASE, &need);
        let cur = period_start(now, start_ms, quota.period_ms).max(rd64(rec, p));
        QuotaSeg::add(rec, p, cur, 0, bytes);
        Step::Write(())
    })
}

/// The quota segments of a call's token limits (ids in `TokenPlan::limits` order; an empty id
/// where a limit has no quota).
fn token_quota_needs<'g>(tokens: &tok::TokenPlan<'g>) -> [Option<Need<'g>>; 2] {
    let mut out = [None, None];
    for (tl, o) in tokens.limits.iter().zip(out.iter_mut()) {
        if let Some(tl) = tl.filter(|t| t.quota.is_some()) {
            *o = Some((tl.quota_id.as_bytes(), None));
        }
    }
    out
}

/// Finds or adds the segments of a call's token limits (after `prepare` placed the call
/// limits'; only appends, so their offsets hold).
fn token_segs(rec: &mut Vec<u8>, tokens: &tok::TokenPlan<'_>, quota_needs: &[Option<Need<'_>>; 2]) -> [Segs; 2] {
    let mut segs = [Segs::default(); 2];
    for ((tl, need), s) in tokens.limits.iter().zip(quota_needs).zip(segs.iter_mut()) {
        let Some(tl) = tl else { continue };
        if let Some(need) = need {
            let [p]: [usize; 1] = prepare(rec, SUB_BASE, std::slice::from_ref(need));
            s.quota = Some(p);
        }
        s.window = tok::window_of(rec, SUB_BASE, tl);
    }
    segs
}

/// Settles a call's reserved tokens to `actual` in every token limit it was counted in.
pub fn settle_tokens(
    record_key: &str,
    tokens: &tok::TokenPlan<'_>,
    charge: &TokenCharge,
    actual: u64,
    ctx: &mut Ctx<'_>,
) -> Result<(), HostError> {
    if actual == charge.reserved || tokens.limits.iter().all(Option::is_none) {
        return Ok(());
    }
    let quota_needs = token_quota_needs(tokens);
    cas_update(ctx.store, record_key, &record::empty(SUB_BASE), ctx.max_retries, |rec| {
        let segs = token_segs(rec, tokens, &quota_needs);
        for (s, period) in segs.iter().zip(charge.quota_periods) {
            tok::settle(rec, *s, charge, period, actual);
        }
        Step::Write(())
    })
}
