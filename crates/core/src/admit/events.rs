//! What happened to a request, for the host to count: the core names events, each host maps
//! them to its own counters.

/// One countable event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// 401: no subscription key.
    MissingKey,
    /// 401: unknown key, inactive subscription, or a product without the API.
    InvalidKey,
    /// 404: no API, scheme or operation matches.
    NotFound,
    /// 429 from a rate limit.
    RateLimited,
    /// 403 from a call quota.
    QuotaCalls,
    /// 403 from a bandwidth quota.
    QuotaBandwidth,
    /// The limit store could not be read or updated.
    StoreFailure,
    /// ... and `failure_mode: allow` let the request through uncounted.
    FailureModeAllowed,
    /// A keyed limit shared a counter slot with another value (table full).
    CounterSlotShared,
    /// Store keys created (a gauge of the store's size).
    StoreKeysCreated,
    /// 429 from a token limit's tokens per minute.
    TokenRateLimited,
    /// 403 from a token quota.
    TokenQuota,
    /// 400/413: the body of a call that carries tokens could not be bounded.
    BadBody,
}

impl Event {
    pub const ALL: [Event; 13] = [
        Event::MissingKey,
        Event::InvalidKey,
        Event::NotFound,
        Event::RateLimited,
        Event::QuotaCalls,
        Event::QuotaBandwidth,
        Event::StoreFailure,
        Event::FailureModeAllowed,
        Event::CounterSlotShared,
        Event::StoreKeysCreated,
        Event::TokenRateLimited,
        Event::TokenQuota,
        Event::BadBody,
    ];
}

/// How many of each event one request produced, and the usage slot it counts in.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Events {
    counts: [u32; Event::ALL.len()],
    /// The usage slot of the call (see [`crate::usage`]); `None` for what is not an API call
    /// (a pass-through) or counts nowhere (bandwidth accounting after the fact).
    pub usage: Option<u32>,
    /// What the request was matched to, as far as it got (for a refusal's export).
    pub matched: crate::usage::Matched,
}

impl Event {
    /// The stat every host counts this event in (Envoy adds its own prefix: `wasmcustom.` for
    /// the filter, the dynamic modules' namespace for the native form), and whether it is a
    /// gauge rather than a counter. One table, so both forms export the same names.
    pub fn stat(self) -> (&'static str, bool) {
        match self {
            Event::MissingKey => ("mlgate.missing_key", false),
            Event::InvalidKey => ("mlgate.invalid_key", false),
            Event::NotFound => ("mlgate.not_found", false),
            Event::RateLimited => ("mlgate.rate_limited", false),
            Event::QuotaCalls => ("mlgate.quota_calls_exceeded", false),
            Event::QuotaBandwidth => ("mlgate.quota_bandwidth_exceeded", false),
            Event::StoreFailure => ("mlgate.shared_data_failures", false),
            Event::FailureModeAllowed => ("mlgate.failure_mode_allowed", false),
            Event::CounterSlotShared => ("mlgate.counter_slot_shared", false),
            Event::StoreKeysCreated => ("mlgate.shared_data_keys", true),
            Event::TokenRateLimited => ("mlgate.token_rate_limited", false),
            Event::TokenQuota => ("mlgate.token_quota_exceeded", false),
            Event::BadBody => ("mlgate.bad_request_body", false),
        }
    }

    /// Both quota denials also count in this counter (the name operators already chart).
    pub const QUOTA_EXCEEDED_STAT: &'static str = "mlgate.quota_exceeded";

    pub fn is_quota_denial(self) -> bool {
        matches!(self, Event::QuotaCalls | Event::QuotaBandwidth)
    }
}

impl Events {
    pub fn add(&mut self, e: Event, n: u32) {
        if let Some(c) = self.counts.get_mut(e as usize) {
            *c = c.saturating_add(n);
        }
    }

    pub fn get(&self, e: Event) -> u32 {
        self.counts.get(e as usize).copied().unwrap_or(0)
    }

    /// The events that happened, with their counts.
    pub fn iter(&self) -> impl Iterator<Item = (Event, u32)> + '_ {
        Event::ALL.iter().zip(self.counts.iter()).filter(|(_, n)| **n > 0).map(|(e, n)| (*e, *n))
    }
}
