//! The decision: is one more call allowed by every limit that applies, and if so count it in
//! all of them at once. Counter-table limits are committed first, then the subscription's
//! record in one compare-and-swap; a later denial undoes the earlier commits.

use super::keyed;
use super::record::{self, prepare, rd64, Need, QuotaSeg, QUOTA_ID, SUB_BASE};
use super::spec::{count, decide, period_start, Ctx, DenialKind, Grant, PerLimit, Plan, Spec, Verdict, MAX_SPECS};
use super::store::{cas_update, HostError, Step};
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
    let mut undo: Vec<keyed::Undo> = Vec::new();
    let mut needs: [Need<'_>; MAX_SPECS] = [(&[], None); MAX_SPECS];
    let mut sub_specs: [Option<Spec<'_>>; MAX_SPECS] = [None; MAX_SPECS];
    // The index in `plan.specs` of each subscription-record limit.
    let mut sub_at = [0usize; MAX_SPECS];
    let mut n_sub = 0;

    // Keyed counters first (their admissions are the cheapest to undo), then the subscription.
    for (i, (spec, value)) in plan.specs.iter().zip(plan.values.iter()).enumerate() {
        let (need, spec) = match spec {
            Some(Spec::Rate(rl)) if rl.counter != Counter::Subscription => {
                match keyed::commit(rl, value, ctx, &mut grant) {
                    Ok(keyed::Commit::Admitted(u, status)) => {
                        undo.push(u);
                        if let Some(s) = per.statuses.get_mut(i) {
                            *s = status;
                        }
                    }
                    Ok(keyed::Commit::Denied(r)) => {
                        keyed::rollback(&undo, ctx);
                        per.denied_at = Some(i);
                        return Verdict::Deny(DenialKind::RateLimit, r);
                    }
                    Err(HostError) => {
                        keyed::rollback(&undo, ctx);
                        return Verdict::Unavailable;
                    }
                }
                continue;
            }
            Some(s @ Spec::Rate(rl)) => ((rl.id.as_bytes(), Some(rl.calls)), *s),
            Some(s @ Spec::Quota(_)) => ((QUOTA_ID, None), *s),
            None => continue,
        };
        if let (Some(n), Some(c), Some(at)) = (needs.get_mut(n_sub), sub_specs.get_mut(n_sub), sub_at.get_mut(n_sub)) {
            *n = need;
            *c = Some(spec);
            *at = i;
            n_sub += 1;
        }
    }
    if n_sub > 0 {
        let needs = needs.get(..n_sub).unwrap_or(&[]);
        let now = ctx.now_ms;
        let start = plan.start_ms;
        let outcome = cas_update(ctx.store, plan.record_key, &record::empty(SUB_BASE), ctx.max_retries, |rec| {
            let slots: [usize; MAX_SPECS] = prepare(rec, SUB_BASE, needs);
            // Decide everything first; write nothing unless all admit.
            for (j, (p, spec)) in slots.iter().zip(sub_specs.iter().flatten()).enumerate() {
                if let Err(d) = decide(rec, *p, spec, now, start) {
                    return Step::Keep(Err((d, j)));
                }
            }
            let mut local = Grant::default();
            let mut each = [None; MAX_SPECS];
            for ((p, spec), e) in slots.iter().zip(sub_specs.iter().flatten()).zip(each.iter_mut()) {
                let mut one = Grant::default();
                count(rec, *p, spec, now, start, &mut one);
                if let Some(s) = one.rate_limit {
                    local.offer(s.limit, s.remaining, s.reset_secs);
                }
                *e = one.rate_limit;
                local.headers.append(&mut one.headers);
                local.count_bandwidth |= one.count_bandwidth;
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
