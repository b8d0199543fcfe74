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
}

impl Event {
    pub const ALL: [Event; 10] = [
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
