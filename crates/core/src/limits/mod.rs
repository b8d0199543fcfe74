//! Rate limits and quotas, exact across Envoy workers.
//!
//! Every decision is a read, a pure decision and a compare-and-swap write on a [`Store`]; a
//! conflict re-reads and decides again. So with a limit of N, exactly N requests are admitted
//! per window however many workers race.
//!
//! - [`store`]: the store protocol (the trait, create-if-absent, the one CAS loop).
//! - [`record`]: the byte format of records and the sliding-window ring.
//! - [`spec`]: what is decided (limits, plan, verdicts) and the decision of one limit.
//! - [`decide`]: the decision over a subscription's record; all limits or none.
//! - [`tokens`]: token limits: a call's bound reserved, then settled to its usage.
//! - [`refund`]: `increment_condition`: a held admission given back when its status does not count.
//! - [`keyed`]: bounded counter tables for `counter: ip | header:<name>`.
//! - [`usage`]: read-only: how much of each limit a subscription has used ("My subscription").
//!
//! One *subscription record* (`mlgate/s/<subscription id>`) holds every limit counted per
//! subscription: the product's rate limit and quota, and API- and operation-scoped rate
//! limits. Several limits on one request are therefore decided and counted in one atomic
//! write. Keys are created only for configured subscriptions and table slots, never for what
//! a client sends, so store memory is bounded by configuration, not by traffic.

mod decide;
mod keyed;
mod record;
mod refund;
mod spec;
mod store;
pub mod tokens;
mod usage;

pub use decide::{add_bandwidth, check, check_at, settle_tokens};
pub use refund::give_back;
pub use spec::{limits_of, Ctx, DenialKind, Grant, Held, HeldAt, PerLimit, Plan, RateLimitStatus, Spec, Verdict, MAX_SPECS};
pub use store::{create_if_absent, HostError, SetError, Store, SENTINEL_KEY};
pub use usage::{token_usage, usage, TokenUse, Usage};

impl RateLimitStatus {
    /// The three `RateLimit-*` response headers.
    pub fn headers(&self) -> [(&'static str, String); 3] {
        [
            ("ratelimit-limit", self.limit.to_string()),
            ("ratelimit-remaining", self.remaining.to_string()),
            ("ratelimit-reset", self.reset_secs.to_string()),
        ]
    }
}
