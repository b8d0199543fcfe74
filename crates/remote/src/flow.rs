//! The host's side of a remote check, as both Envoy hosts run it over their own calls (the Wasm
//! host's gRPC call, the dynamic module's HTTP callout): the first pass (ask, or decide at once
//! when the breaker is open), the second pass with the answer, the breakers of one worker, the
//! reports a finished call sends (bandwidth, a token settle) and what their failure means, and
//! what each step counts. The host dispatches, pauses, resumes and owns the state; nothing here
//! calls a host.

use super::breaker::Breaker;
use super::client::{self, Answered, Ask};
use mlgate_core::admit::tokens::Metered;
use mlgate_core::admit::{admit_with, Admission, Connection, Outcome, Request};
use mlgate_core::tokens::TokenUsage;
use mlgate_core::{Events, Gateway, LimitsStore, OnFailure, RlsSettings, Store};

/// The remote store's settings, if the configuration names one.
pub fn settings(gw: &Gateway) -> Option<&RlsSettings> {
    match &gw.settings.limits_store {
        LimitsStore::Rls(r) => Some(r),
        LimitsStore::SharedData => None,
    }
}

/// What the remote store's flow counts (the hosts' `mlgate.rls_*` stats), added up by the steps
/// below and handed to the host's stats after each.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub calls: u64,
    pub failures: u64,
    pub skipped: u64,
    pub local: u64,
    /// The gauge of open breakers: +1 when one opens, -1 when it closes.
    pub breaker_open: i64,
    pub settle_failures: u64,
}

/// The stats' names (without the host's prefix) and whether each is a gauge, in the order of
/// [`Counts::values`].
pub const STATS: [(&str, bool); 6] = [
    ("mlgate.rls_calls", false),
    ("mlgate.rls_failures", false),
    ("mlgate.rls_breaker_skipped", false),
    ("mlgate.rls_local_fallback", false),
    ("mlgate.rls_breaker_open", true),
    ("mlgate.rls_settle_failures", false),
];

impl Counts {
    /// The counts in [`STATS`] order (counters are never negative).
    pub fn values(&self) -> [i64; 6] {
        let c = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        [c(self.calls), c(self.failures), c(self.skipped), c(self.local), self.breaker_open, c(self.settle_failures)]
    }

    pub fn is_empty(&self) -> bool {
        *self == Counts::default()
    }
}

/// One worker's breakers, one per store (cluster): a short list, a worker has few stores.
#[derive(Debug, Default)]
pub struct Breakers(Vec<(String, Breaker)>);

impl Breakers {
    /// Runs `f` on this store's breaker; an opening or a closing moves the gauge.
    pub fn with<T>(&mut self, cluster: &str, counts: &mut Counts, f: impl FnOnce(&mut Breaker) -> T) -> T {
        let i = match self.0.iter().position(|(c, _)| c == cluster) {
            Some(i) => i,
            None => {
                self.0.push((cluster.to_string(), Breaker::default()));
                self.0.len() - 1
            }
        };
        let Some((_, br)) = self.0.get_mut(i) else { return f(&mut Breaker::default()) };
        let was_open = br.is_open();
        let out = f(br);
        match (was_open, br.is_open()) {
            (false, true) => counts.breaker_open += 1,
            (true, false) => counts.breaker_open -= 1,
            _ => {}
        }
        out
    }

    /// A call's outcome (`probe`: the call the breaker let through to probe the store).
    pub fn record(&mut self, settings: &RlsSettings, ok: bool, probe: bool, now_ms: u64, counts: &mut Counts) {
        if ok {
            self.with(&settings.cluster, counts, Breaker::success);
            return;
        }
        counts.failures += 1;
        let (threshold, open_ms) = (settings.breaker_failures, settings.breaker_open_ms);
        self.with(&settings.cluster, counts, |b| b.failure(now_ms, probe, threshold, open_ms));
    }

    pub fn is_open(&mut self, cluster: &str) -> bool {
        self.with(cluster, &mut Counts::default(), |b| b.is_open())
    }
}

/// The request being judged, and what judging it reads and writes.
pub struct Judge<'a, 'g, 'r> {
    pub gw: &'g Gateway,
    pub req: &'a Request<'r>,
    pub now_ms: u64,
    pub conn: &'a mut dyn Connection,
    pub shared: &'a mut dyn Store,
}

/// The first pass over a request under a remote store. (Returned once and taken apart at once,
/// so the admission stays unboxed.)
#[allow(clippy::large_enum_variant)]
pub enum First<'g, 'r> {
    /// Decided without asking (no limits apply, or the breaker is open and `on_failure` said);
    /// `local`: decided over shared data (tokens it reserved are settled there).
    Decided { admission: Admission<'g, 'r>, local: bool },
    /// Ask the store with this `RateLimitRequest` (`probe`: the breaker's probe), and pause.
    Ask { request: Vec<u8>, probe: bool },
}

/// The first pass: the decision, unless the store must be asked.
pub fn first<'g, 'r>(settings: &RlsSettings, breakers: &mut Breakers, j: Judge<'_, 'g, 'r>, counts: &mut Counts) -> First<'g, 'r> {
    let (decided, request, probe, skipped, local) = breakers.with(&settings.cluster, counts, |breaker| {
        let mut ask = Ask::new(settings, breaker, j.shared);
        let decided = admit_with(j.gw, j.req, j.now_ms, j.conn, &mut ask);
        (decided, ask.request.take(), ask.probe, ask.skipped, ask.fell_back_local)
    });
    counts.skipped += u64::from(skipped);
    counts.local += u64::from(local);
    match decided {
        Some(admission) => First::Decided { admission, local },
        None => {
            counts.calls += 1;
            First::Ask { request: request.unwrap_or_default(), probe }
        }
    }
}

/// The second pass, with the store's answer (`Err`: the call failed; an unusable answer is a
/// failure too, and `on_failure` decides). Returns the decision and whether it was made over
/// shared data.
pub fn second<'g, 'r>(
    settings: &RlsSettings,
    answer: Result<&[u8], ()>,
    j: Judge<'_, 'g, 'r>,
    counts: &mut Counts,
) -> (Admission<'g, 'r>, bool) {
    let mut answered = Answered::new(settings, answer, j.shared);
    // `Answered` always decides; were it not to, the request is refused, never paused again.
    let a = admit_with(j.gw, j.req, j.now_ms, j.conn, &mut answered)
        .unwrap_or_else(|| Admission { outcome: Outcome::Reply(mlgate_core::reply::internal_error()), events: Events::default() });
    counts.local += u64::from(answered.fell_back_local);
    (a, answered.fell_back_local)
}

/// Whether an answer is usable (decodes, with a known overall code): what the breaker records.
pub fn usable(answer: Result<&[u8], ()>) -> bool {
    client::usable(answer)
}

/// What a finished call reports to the store, and what its failure means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// Body bytes for a bandwidth quota: counted in shared data instead if it fails under
    /// `on_failure: local`, else lost (uncounted).
    Bandwidth { sub: u32, bytes: u64 },
    /// A token settle: if it fails, the reservation stays charged.
    Settle,
}

/// What the end of a stream does with a report.
pub enum Finish {
    /// Done here (no remote store, or shared data counted it): these events.
    Done(Events),
    /// Send this `RateLimitRequest` (fire and forget; [`report_failed`] if it cannot be sent
    /// or fails).
    Send(Report, Vec<u8>),
}

/// An admitted call's body bytes for its bandwidth quota: counted here, or a report to send.
pub fn bandwidth(gw: &Gateway, sub: u32, bytes: u64, now_ms: u64, shared: &mut dyn Store) -> Finish {
    let Some(settings) = settings(gw) else { return Finish::Done(mlgate_core::record_bandwidth(gw, sub, bytes, now_ms, shared)) };
    let s = gw.subscriptions.get(sub as usize);
    let Some((s, product)) = s.and_then(|s| Some((s, gw.products.get(s.product as usize)?))) else {
        return Finish::Done(Events::default());
    };
    Finish::Send(Report::Bandwidth { sub, bytes }, client::bandwidth_request(settings, &s.id, &product.id, bytes))
}

/// A finished call's token reservation settled to its usage where it was made: in shared data
/// (`local`: the call was decided there, or no remote store), or a settle to send. Without a
/// usage, or when it equals the reservation, nothing is sent (the reservation stands).
pub fn settle(gw: &Gateway, local: bool, m: &Metered, usage: Option<TokenUsage>, now_ms: u64, shared: &mut dyn Store) -> Finish {
    let Some(settings) = settings(gw).filter(|_| !local) else {
        return Finish::Done(mlgate_core::admit::tokens::settle(gw, m, usage, now_ms, shared));
    };
    match usage.and_then(|u| super::tokens::settle_request(settings, gw, m, u.total)) {
        Some(request) => Finish::Send(Report::Settle, request),
        None => Finish::Done(Events::default()),
    }
}

/// A report was not sent (the breaker was open, the host would not make the call) or failed:
/// the bandwidth counted in shared data under `on_failure: local`, a settle counted as failed.
pub fn report_failed(report: Report, gw: &Gateway, now_ms: u64, shared: &mut dyn Store, counts: &mut Counts) -> Events {
    match report {
        Report::Bandwidth { sub, bytes } if settings(gw).is_some_and(|s| s.on_failure == OnFailure::Local) => {
            counts.local += 1;
            mlgate_core::record_bandwidth(gw, sub, bytes, now_ms, shared)
        }
        Report::Bandwidth { .. } => Events::default(),
        Report::Settle => {
            counts.settle_failures += 1;
            Events::default()
        }
    }
}
