//! The limit store in Redis: mlgate's [`Store`] protocol (versioned get, compare-and-swap set,
//! create-if-absent) over one Redis hash per record.
//!
//! ```text
//! <record key>  (a hash)   v = the record's bytes (mlgate's own format, the same as in shared data)
//!                          n = version, 1..=4294967295, the CAS token (never 0, which means "any")
//!                          w = the ids of the last 8 writes, for retries after a lost reply
//! ```
//!
//! Every write is one Lua script (`EVALSHA`, reloaded after `NOSCRIPT`) that touches only the
//! one key it names in `KEYS[1]`, so it runs unchanged on Redis Cluster: a decision never
//! needs two keys in one atomic step (all of a subscription's limits live in one record, and
//! keyed counters are separate records that the core commits first and undoes on a denial).
//!
//! **A lost reply.** If Redis applied a write but the reply was lost (connection reset,
//! timeout), retrying the same CAS would fail (the version moved, by our own write), and
//! re-deciding would count the request twice. So each write carries a random id; the script
//! remembers the last 8, and a retry whose id is there answers "applied" without writing
//! again. After a connection error a write is retried on a new connection (twice at most)
//! with the same id. If a write is never confirmed the decision fails (the filter then
//! applies `on_failure`): the request may have been counted once, never twice.

use mlgate_core::{HostError, SetError, Store};
use redis::cluster::ClusterClient;
use redis::{Client, ConnectionLike, RedisError, Script};
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

const CAS: &str = include_str!("cas.lua");
const CREATE: &str = include_str!("create.lua");

/// Unique write ids: a per-process random key hashed with a counter (16 hex digits).
struct Ids {
    seed: RandomState,
    next: AtomicU64,
}

impl Ids {
    fn next(&self) -> u64 {
        let mut h = self.seed.build_hasher();
        h.write_u64(self.next.fetch_add(1, Ordering::Relaxed));
        h.finish()
    }
}

/// A connection to a Redis server, or to a Redis Cluster (which routes each command by its key).
pub type Connection = Box<dyn ConnectionLike + Send>;

enum Backend {
    Single(Client),
    Cluster(ClusterClient),
}

/// Shared by every connection: where Redis is, the scripts, the id source.
pub struct Redis {
    backend: Backend,
    timeout: Duration,
    cas: Script,
    create: Script,
    ids: Ids,
    /// The last value and version this process read or wrote per record. Admissions never
    /// trust it (their CAS fails on a stale version, and the core reads again); a denial
    /// decided on it is decided again from Redis (see `service`). Bounded: records exist only
    /// for configured subscriptions and counter slots; it is cleared if it ever grows past
    /// `CACHE_MAX`.
    cache: Mutex<HashMap<String, (Vec<u8>, u32)>>,
}

const CACHE_MAX: usize = 1_000_000;

impl Redis {
    /// `url`: `redis://host:port[/db]`; with `cluster`, seed nodes of a Redis Cluster
    /// (`redis://host:port`, comma-separated). `timeout` bounds connecting, each read and
    /// each write.
    pub fn new(url: &str, timeout: Duration, cluster: bool) -> Result<Redis, RedisError> {
        let backend = if cluster {
            let seeds: Vec<&str> = url.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
            Backend::Cluster(ClusterClient::builder(seeds).connection_timeout(timeout).response_timeout(timeout).build()?)
        } else {
            Backend::Single(Client::open(url)?)
        };
        Ok(Redis {
            backend,
            timeout,
            cas: Script::new(CAS),
            create: Script::new(CREATE),
            ids: Ids { seed: RandomState::new(), next: AtomicU64::new(1) },
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn cached(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner).get(key).cloned()
    }

    fn remember(&self, key: &str, value: Option<(&[u8], u32)>) {
        let mut c = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        match value {
            Some((v, n)) => {
                if c.len() >= CACHE_MAX {
                    c.clear();
                }
                match c.get_mut(key) {
                    Some(e) => {
                        e.0.clear();
                        e.0.extend_from_slice(v);
                        e.1 = n;
                    }
                    None => {
                        c.insert(key.to_string(), (v.to_vec(), n));
                    }
                }
            }
            None => {
                c.remove(key);
            }
        }
    }

    pub fn connect(&self) -> Result<Connection, RedisError> {
        match &self.backend {
            Backend::Single(client) => {
                let c = client.get_connection_with_timeout(self.timeout)?;
                c.set_read_timeout(Some(self.timeout))?;
                c.set_write_timeout(Some(self.timeout))?;
                Ok(Box::new(c))
            }
            Backend::Cluster(client) => Ok(Box::new(client.get_connection()?)),
        }
    }
}

/// One connection's view of the store (each worker thread keeps its own connection).
pub struct RedisStore<'r> {
    redis: &'r Redis,
    conn: &'r mut Option<Connection>,
    /// The last error, for the service's log.
    pub last_error: Option<RedisError>,
    /// Reads may be answered from the process's cache of records.
    pub use_cache: bool,
    /// Records this store answered from the cache (a denial on them is decided again).
    pub cached_reads: Vec<String>,
}

/// A connection error: the connection is dropped and the operation may be retried.
fn broken(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_unrecoverable_error()
}

impl<'r> RedisStore<'r> {
    pub fn new(redis: &'r Redis, conn: &'r mut Option<Connection>) -> Self {
        RedisStore { redis, conn, last_error: None, use_cache: true, cached_reads: Vec::new() }
    }

    /// Drops the cached copies this store read, and reads from Redis from now on.
    pub fn distrust_cache(&mut self) {
        for k in std::mem::take(&mut self.cached_reads) {
            self.redis.remember(&k, None);
        }
        self.use_cache = false;
    }

    /// Runs `op` on the connection (connecting if needed); after a connection error, drops it
    /// and tries again on a new one, `retries` times.
    fn run<T>(
        &mut self,
        retries: u32,
        mut op: impl FnMut(&Redis, &mut dyn ConnectionLike) -> redis::RedisResult<T>,
    ) -> Result<T, RedisError> {
        let mut attempt = 0;
        loop {
            let result = match self.conn {
                Some(c) => op(self.redis, c.as_mut()),
                None => match self.redis.connect() {
                    Ok(c) => op(self.redis, self.conn.insert(c).as_mut()),
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let retry = broken(&e);
                    if retry {
                        *self.conn = None;
                    }
                    if !retry || attempt >= retries {
                        return Err(e);
                    }
                    attempt += 1;
                }
            }
        }
    }

    fn fail<T>(&mut self, e: RedisError) -> Result<T, HostError> {
        self.last_error = Some(e);
        Err(HostError)
    }
}

impl Store for RedisStore<'_> {
    fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError> {
        if self.use_cache {
            if let Some(hit) = self.redis.cached(key) {
                self.cached_reads.push(key.to_string());
                return Ok(Some(hit));
            }
        }
        let got = self.run(1, |_, c| redis::cmd("HMGET").arg(key).arg("v").arg("n").query::<(Option<Vec<u8>>, Option<u32>)>(c));
        match got {
            Ok((Some(v), Some(n))) if n != 0 => {
                self.redis.remember(key, Some((&v, n)));
                Ok(Some((v, n)))
            }
            // Absent, or a hash mlgate did not write: treat as absent (a CAS on it fails).
            Ok(_) => Ok(None),
            Err(e) => self.fail(e),
        }
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError> {
        let id = format!("{:016x}", self.redis.ids.next());
        let r = self.run(2, |r, c| r.cas.key(key).arg(cas.to_string()).arg(value).arg(&id).invoke::<i64>(c));
        match r {
            Ok(0) => {
                self.redis.remember(key, None);
                Err(SetError::CasMismatch)
            }
            Ok(n) => {
                // The new version; -1 (applied by an earlier try) leaves it unknown.
                let known = u32::try_from(n).ok().filter(|v| *v != 0);
                self.redis.remember(key, known.map(|v| (value, v)));
                Ok(())
            }
            Err(e) => {
                self.redis.remember(key, None);
                self.last_error = Some(e);
                Err(SetError::Host)
            }
        }
    }

    /// `SET NX` semantics in one script: creates the hash (value, a random first version) only
    /// if the key does not exist. The first version is random so that a record deleted and
    /// created again (by an operator) does not reuse a token a writer still holds.
    fn create_absent(&mut self, key: &str, value: &[u8]) -> Result<bool, HostError> {
        let first = (self.redis.ids.next() % u64::from(u32::MAX)) + 1;
        match self.run(2, |r, c| r.create.key(key).arg(value).arg(first).invoke::<i64>(c)) {
            Ok(n) => {
                let created = n == 1;
                let v = u32::try_from(first).ok().filter(|_| created);
                self.redis.remember(key, v.map(|v| (value, v)));
                Ok(created)
            }
            Err(e) => self.fail(e),
        }
    }
}
