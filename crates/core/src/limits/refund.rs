//! `increment_condition`: a call is counted at admission like any other (so a limit is never
//! exceeded while calls are in flight), and holds that admission until its status is known;
//! one whose status does not count gives it back here. The limit is therefore exact for the
//! calls that count; the price is that calls still in flight hold their places briefly.

use super::keyed;
use super::record::{self, rd64, wr64, QuotaSeg, Ring, KIND_QUOTA, KIND_RATE, QUOTA_ID, SUB_BASE};
use super::spec::{Ctx, Held, Spec, MAX_SPECS};
use super::store::{cas_update, HostError, Step};
use crate::model::Counter;

/// Gives back the admissions `held` (indices of `specs`) in every limit that does not count a
/// call answered with `status` (0: the call ended without a response).
pub fn give_back(
    specs: &[Option<Spec<'_>>; MAX_SPECS],
    record_key: &str,
    held: &Held,
    status: u16,
    ctx: &mut Ctx<'_>,
) -> Result<(), HostError> {
    let mut result = Ok(());
    let mut in_record = false;
    for (spec, at) in specs.iter().zip(held.at) {
        let (Some(spec), Some(at)) = (spec, at) else { continue };
        if spec.counts(status) {
            continue;
        }
        match spec {
            Spec::Rate(rl) if rl.counter != Counter::Subscription => {
                result = result.and(keyed::give_back(rl, at.slot, at.mark, ctx));
            }
            _ => in_record = true,
        }
    }
    if !in_record {
        return result;
    }
    let written = cas_update(ctx.store, record_key, &record::empty(SUB_BASE), ctx.max_retries, |rec| {
        record::repair(rec, SUB_BASE);
        let mut changed = false;
        for (spec, at) in specs.iter().zip(held.at) {
            let (Some(spec), Some(at)) = (spec, at) else { continue };
            if spec.counts(status) {
                continue;
            }
            changed |= match spec {
                Spec::Rate(rl) if rl.counter == Counter::Subscription => {
                    record::find_seg(rec, SUB_BASE, KIND_RATE, rl.id.as_bytes()).is_some_and(|s| Ring::remove(rec, s.payload, at.mark))
                }
                Spec::Rate(_) => false,
                // Only in the period it was counted in: a renewed quota starts from zero anyway.
                Spec::Quota(_) => match record::find_seg(rec, SUB_BASE, KIND_QUOTA, QUOTA_ID) {
                    Some(s) if rd64(rec, s.payload) == at.mark && QuotaSeg::counts(rec, s.payload, at.mark).0 > 0 => {
                        let calls = rd64(rec, s.payload + 8);
                        wr64(rec, s.payload + 8, calls - 1);
                        true
                    }
                    _ => false,
                },
            };
        }
        if changed {
            Step::Write(())
        } else {
            Step::Keep(())
        }
    });
    result.and(written)
}
