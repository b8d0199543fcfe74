//! The vocabulary of the descriptors both sides read and write, and the gRPC method mlgate
//! calls. Operators running another RLS match on these strings.

/// Descriptor entry keys.
pub const KEY_LIMIT: &str = "limit";
pub const KEY_SUBSCRIPTION: &str = "subscription";
pub const KEY_COUNTER: &str = "counter";
/// The entry of a token settle descriptor: `<admitted_ms>:<quota_period>:<reserved>`.
pub const KEY_SETTLE: &str = "settle";
/// `limit` values of quotas (`q:<product>`) and bandwidth reports (`b:<product>`).
pub const QUOTA_PREFIX: &str = "q:";
pub const BANDWIDTH_PREFIX: &str = "b:";
/// `current_limit.name` of a quota status: which part of the quota it is about.
pub const QUOTA_CALLS: &str = "quota_calls";
pub const QUOTA_BANDWIDTH: &str = "quota_bandwidth";
/// `current_limit.name` of a token limit's `OVER_LIMIT` status: its tokens per minute (429)
/// or its token quota (403).
pub const TOKEN_RATE: &str = "tokens_per_minute";
pub const TOKEN_QUOTA: &str = "token_quota";

/// The gRPC service and method mlgate calls.
pub const SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
pub const METHOD: &str = "ShouldRateLimit";
