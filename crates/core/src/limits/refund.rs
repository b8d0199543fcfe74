//! `increment_condition`: a call is counted at admission like any other (so a limit is never
//! exceeded while calls are in flight), and holds that admission until its status is known;
//! one whose status does not count gives it back here. The limit is therefore exact for the
//! calls that count; the price is that calls still in flight hold their places briefly.

use super::keyed;
use super::record::{self, SUB_BASE};
use super::spec::{self, Ctx, Held, Spec, MAX_SPECS};
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
        if *spec.counter() == Counter::Subscription {
            in_record = true;
        } else {
            result = result.and(keyed::give_back(spec, at.slot, at.mark, ctx));
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
            if spec.counts(status) || *spec.counter() != Counter::Subscription {
                continue;
            }
            changed |= spec::take_back(rec, SUB_BASE, spec, at.mark);
        }
        if changed {
            Step::Write(())
        } else {
            Step::Keep(())
        }
    });
    result.and(written)
}
