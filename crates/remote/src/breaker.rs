//! The circuit breaker in front of the remote store: after `failures` consecutive failures it
//! opens, and requests skip the store (straight to `on_failure`) instead of each waiting for
//! the timeout. After `open_ms` one request probes the store; its success closes the breaker,
//! its failure opens it for another `open_ms`. One breaker per Wasm VM (per Envoy worker):
//! no host call on the hot path, and each worker learns of an outage by itself.

/// Breaker state. Times are the host clock in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Breaker {
    /// Consecutive failures while closed.
    failures: u32,
    /// `Some(t)`: open; no call before `t`.
    open_until: Option<u64>,
    /// A probe is out since this time (while open).
    probe_since: Option<u64>,
}

/// What to do with the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Ask the store.
    Call,
    /// Ask the store: the first request after the open period (its answer decides).
    Probe,
    /// Do not ask: the store is known to be down.
    Skip,
}

impl Breaker {
    /// Whether the next request calls the store. A probe that never reported back (its answer
    /// can only be lost if the host drops the call) is given up after `lost_after_ms`.
    pub fn gate(&mut self, now: u64, lost_after_ms: u64) -> Gate {
        let Some(until) = self.open_until else { return Gate::Call };
        if now < until {
            return Gate::Skip;
        }
        match self.probe_since {
            Some(t) if now < t.saturating_add(lost_after_ms) => Gate::Skip,
            _ => {
                self.probe_since = Some(now);
                Gate::Probe
            }
        }
    }

    /// The store answered.
    pub fn success(&mut self) {
        *self = Breaker::default();
    }

    /// The store failed (error status, timeout, undecodable answer, or the call could not
    /// be made). Opens after `threshold` in a row, or at once if the probe (`probe`: this was
    /// the call [`Gate::Probe`] let through) failed; calls made before it opened are ignored.
    pub fn failure(&mut self, now: u64, probe: bool, threshold: u32, open_ms: u64) {
        if self.open_until.is_some() {
            if probe && self.probe_since.is_some() {
                self.open_until = Some(now.saturating_add(open_ms));
                self.probe_since = None;
            }
            return;
        }
        self.failures = self.failures.saturating_add(1);
        if self.failures >= threshold {
            self.open_until = Some(now.saturating_add(open_ms));
            self.probe_since = None;
        }
    }

    pub fn is_open(&self) -> bool {
        self.open_until.is_some()
    }
}
