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

use mlgate::{HostError, SetError, Store};
use redis::{Client, Connection, RedisError, Script};
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
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

/// Shared by every connection: where Redis is, the scripts, the id source.
pub struct Redis {
    client: Client,
    timeout: Duration,
    cas: Script,
    create: Script,
    ids: Ids,
}

impl Redis {
    /// `url`: `redis://host:port[/db]`. `timeout` bounds connecting, each read and each write.
    pub fn new(url: &str, timeout: Duration) -> Result<Redis, RedisError> {
        Ok(Redis {
            client: Client::open(url)?,
            timeout,
            cas: Script::new(CAS),
            create: Script::new(CREATE),
            ids: Ids { seed: RandomState::new(), next: AtomicU64::new(1) },
        })
    }

    pub fn connect(&self) -> Result<Connection, RedisError> {
        let c = self.client.get_connection_with_timeout(self.timeout)?;
        c.set_read_timeout(Some(self.timeout))?;
        c.set_write_timeout(Some(self.timeout))?;
        Ok(c)
    }
}

/// One connection's view of the store (each worker thread keeps its own connection).
pub struct RedisStore<'r> {
    redis: &'r Redis,
    conn: &'r mut Option<Connection>,
    /// The last error, for the service's log.
    pub last_error: Option<RedisError>,
}

/// A connection error: the connection is dropped and the operation may be retried.
fn broken(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_unrecoverable_error()
}

impl<'r> RedisStore<'r> {
    pub fn new(redis: &'r Redis, conn: &'r mut Option<Connection>) -> Self {
        RedisStore { redis, conn, last_error: None }
    }

    /// Runs `op` on the connection (connecting if needed); after a connection error, drops it
    /// and tries again on a new one, `retries` times.
    fn run<T>(&mut self, retries: u32, mut op: impl FnMut(&Redis, &mut Connection) -> redis::RedisResult<T>) -> Result<T, RedisError> {
        let mut attempt = 0;
        loop {
            let result = match self.conn {
                Some(c) => op(self.redis, c),
                None => match self.redis.connect() {
                    Ok(c) => op(self.redis, self.conn.insert(c)),
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
        let got = self.run(1, |_, c| redis::cmd("HMGET").arg(key).arg("v").arg("n").query::<(Option<Vec<u8>>, Option<u32>)>(c));
        match got {
            Ok((Some(v), Some(n))) if n != 0 => Ok(Some((v, n))),
            // Absent, or a hash mlgate did not write: treat as absent (a CAS on it fails).
            Ok(_) => Ok(None),
            Err(e) => self.fail(e),
        }
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError> {
        let id = format!("{:016x}", self.redis.ids.next());
        let r = self.run(2, |r, c| r.cas.key(key).arg(cas.to_string()).arg(value).arg(&id).invoke::<i64>(c));
        match r {
            Ok(0) => Err(SetError::CasMismatch),
            Ok(_) => Ok(()),
            Err(e) => {
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
            Ok(n) => Ok(n == 1),
            Err(e) => self.fail(e),
        }
    }
}
