//! The gRPC service: `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`. Each
//! request is decoded by prost (envoy-types), resolved and decided by mlgate's core
//! (`mlgate_remote::Resolver` → `limits::check_at`) over Redis, and the
//! core's answer is encoded back. Stateless: all counts live in Redis.

use crate::store::{Connection, Redis, RedisStore};
use envoy_types::pb::envoy::service::ratelimit::v3 as rls;
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use mlgate_remote::wire::{self, Descriptor};
use mlgate_remote::{Resolver, ServeError};
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub use rls::rate_limit_service_server::RateLimitServiceServer;

thread_local! {
    /// Each worker thread keeps one Redis connection.
    static CONN: RefCell<Option<Connection>> = const { RefCell::new(None) };
}

/// What the service counts (printed on exit, and on store errors).
#[derive(Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub over_limit: AtomicU64,
    pub bad_requests: AtomicU64,
    pub store_errors: AtomicU64,
    /// When the last store error was logged (ms), to log at most one a second.
    last_logged_ms: AtomicU64,
}

pub struct Service {
    pub resolver: Arc<Resolver<'static>>,
    pub redis: Arc<Redis>,
    pub counters: Arc<Counters>,
    pub stripes: Arc<Stripes>,
}

/// Decisions on one subscription are serialized within this process (striped locks by
/// subscription): racing requests then meet in Redis only across mlgate-rls instances, not
/// as a storm of CAS retries from one. Correctness never depends on it (the CAS does that).
pub struct Stripes(Vec<std::sync::Mutex<()>>);

impl Stripes {
    pub fn new(n: usize) -> Stripes {
        Stripes((0..n.max(1)).map(|_| std::sync::Mutex::new(())).collect())
    }

    fn lock(&self, descriptors: &[Descriptor]) -> Option<std::sync::MutexGuard<'_, ()>> {
        use std::hash::{Hash, Hasher};
        let who = descriptors.iter().flat_map(|d| d.entries.iter()).find(|(k, _)| k == mlgate_remote::KEY_SUBSCRIPTION);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        who.map(|(_, v)| v.as_str()).unwrap_or_default().hash(&mut h);
        let i = usize::try_from(h.finish() % self.0.len().max(1) as u64).unwrap_or(0);
        // A poisoned stripe (a panicking decision) still serializes.
        self.0.get(i).map(|m| m.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The core's request form of a prost `RateLimitRequest`.
pub fn descriptors_of(req: &rls::RateLimitRequest) -> Result<Vec<Descriptor>, String> {
    req.descriptors
        .iter()
        .map(|d| {
            if d.is_negative_hits {
                return Err("is_negative_hits is not supported".to_string());
            }
            Ok(Descriptor {
                entries: d.entries.iter().map(|e| (e.key.clone(), e.value.clone())).collect(),
                hits_addend: d.hits_addend.as_ref().map(|h| h.value),
            })
        })
        .collect()
}

/// A prost `RateLimitResponse` of the core's answer.
pub fn response_of(r: &wire::Response) -> rls::RateLimitResponse {
    let statuses = r
        .statuses
        .iter()
        .map(|s| rls::rate_limit_response::DescriptorStatus {
            code: i32::try_from(s.code).unwrap_or(0),
            current_limit: s.current_limit.as_ref().map(|l| rls::rate_limit_response::RateLimit {
                name: l.name.clone(),
                requests_per_unit: l.requests_per_unit,
                unit: i32::try_from(l.unit).unwrap_or(0),
            }),
            limit_remaining: s.limit_remaining,
            duration_until_reset: s.reset_ms.map(|ms| PbDuration {
                seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
                nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
            }),
            ..Default::default()
        })
        .collect();
    rls::RateLimitResponse { overall_code: i32::try_from(r.overall_code).unwrap_or(0), statuses, ..Default::default() }
}

#[tonic::async_trait]
impl rls::rate_limit_service_server::RateLimitService for Service {
    async fn should_rate_limit(
        &self,
        request: tonic::Request<rls::RateLimitRequest>,
    ) -> Result<tonic::Response<rls::RateLimitResponse>, tonic::Status> {
        let req = request.into_inner();
        let counters = self.counters.clone();
        counters.requests.fetch_add(1, Ordering::Relaxed);
        let descriptors = match descriptors_of(&req) {
            Ok(d) => d,
            Err(m) => {
                counters.bad_requests.fetch_add(1, Ordering::Relaxed);
                return Err(tonic::Status::invalid_argument(m));
            }
        };
        // Decided inline on this gRPC worker thread: a Redis round trip on loopback costs less
        // than handing the work to a blocking thread and back (measured: 116 -> 50 us of
        // mlgate-rls CPU per request). Every Redis call is bounded by --redis-timeout-ms.
        let (result, redis_error) = {
            let _serial = self.stripes.lock(&descriptors);
            CONN.with(|c| {
                let Ok(mut conn) = c.try_borrow_mut() else { return (Err(ServeError::Store), None) };
                let mut store = RedisStore::new(&self.redis, &mut conn);
                let now = now_ms();
                let mut r = self.resolver.decide(&req.domain, &descriptors, req.hits_addend, &mut store, now);
                // Admissions were confirmed by their CAS; a denial read from the cache is
                // decided again on what Redis holds.
                if matches!(&r, Ok(a) if a.overall_code == wire::CODE_OVER_LIMIT) && !store.cached_reads.is_empty() {
                    store.distrust_cache();
                    r = self.resolver.decide(&req.domain, &descriptors, req.hits_addend, &mut store, now);
                }
                (r, store.last_error.take())
            })
        };
        match result {
            Ok(r) => {
                if r.overall_code == wire::CODE_OVER_LIMIT {
                    counters.over_limit.fetch_add(1, Ordering::Relaxed);
                }
                Ok(tonic::Response::new(response_of(&r)))
            }
            Err(ServeError::BadRequest(m)) => {
                counters.bad_requests.fetch_add(1, Ordering::Relaxed);
                Err(tonic::Status::invalid_argument(m))
            }
            Err(ServeError::Store) => {
                counters.store_errors.fetch_add(1, Ordering::Relaxed);
                let now = now_ms();
                let last = counters.last_logged_ms.load(Ordering::Relaxed);
                if now.saturating_sub(last) >= 1000
                    && counters.last_logged_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
                {
                    let why = redis_error.map_or_else(|| "CAS retries exhausted".to_string(), |e| e.to_string());
                    eprintln!(
                        "mlgate-rls: store unavailable ({why}); {} store errors so far",
                        counters.store_errors.load(Ordering::Relaxed)
                    );
                }
                Err(tonic::Status::unavailable("limit store unavailable"))
            }
        }
    }
}
