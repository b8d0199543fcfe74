//! The limit store of the native form: one table in the Envoy process, shared by every worker,
//! with the semantics of proxy-wasm shared data that the core's [`Store`] protocol is written
//! for. So the same limit code, record format and creation protocol run unchanged: a set with
//! `cas == 0` writes unconditionally, a set on a missing key is not CAS-checked, keys are never
//! deleted, and every write gets a fresh token from one process-wide counter. Creation is an
//! exact set-if-absent under the lock ([`Store::create_absent`]), so the sentinel-token trick
//! that shared data needs is not used here.
//!
//! Bounded by configuration, as in the Wasm form: the core creates keys only for configured
//! subscriptions that passed the key check and for at most `counter_slots` slots per keyed
//! limit; values are records whose size the configured limits fix.
//!
//! Sharded by key so workers deciding for different subscriptions do not wait on one lock; a
//! shard is held only for one map operation (no callback into Envoy, no allocation beyond the
//! copy of one record).

use mlgate_core::{HostError, SetError, Store};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

const SHARDS: usize = 16;

type Shard = Mutex<HashMap<String, (Vec<u8>, u32)>>;

/// The process-wide table. A static of the module: it lives as long as the module is loaded,
/// so counts survive every reconfiguration (load the module with `do_not_close: true` so
/// removing the last listener that uses it does not unload it and reset them).
static TABLE: LazyLock<[Shard; SHARDS]> = LazyLock::new(|| std::array::from_fn(|_| Mutex::new(HashMap::new())));
static LAST_TOKEN: AtomicU32 = AtomicU32::new(0);

/// A fresh CAS token: unique across the process (0 is "unconditional", never a token).
fn next_token() -> u32 {
    loop {
        let t = LAST_TOKEN.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        if t != 0 {
            return t;
        }
    }
}

fn shard(key: &str) -> MutexGuard<'static, HashMap<String, (Vec<u8>, u32)>> {
    // FNV-1a: cheap, and keys are ours (record keys of configured ids), not an attacker's.
    let h = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let i = usize::try_from(h % SHARDS as u64).unwrap_or(0);
    // `i < SHARDS`, so the fallback is never used; it only spares an unchecked index.
    static FALLBACK: LazyLock<Shard> = LazyLock::new(|| Mutex::new(HashMap::new()));
    let m = TABLE.get(i).unwrap_or(&*FALLBACK);
    // No panic can happen while a shard is held (map operations only); should one ever poison
    // it, the map itself is intact: keep serving rather than fail every request after.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The table, as the core's [`Store`]. Zero-sized: every worker's handle is the same table.
pub struct ProcessStore;

impl Store for ProcessStore {
    fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError> {
        Ok(shard(key).get(key).map(|(v, cas)| (v.clone(), *cas)))
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError> {
        let mut m = shard(key);
        match m.get_mut(key) {
            Some(entry) => {
                if cas != 0 && cas != entry.1 {
                    return Err(SetError::CasMismatch);
                }
                entry.0.clear();
                entry.0.extend_from_slice(value);
                entry.1 = next_token();
            }
            None => {
                m.insert(key.to_string(), (value.to_vec(), next_token()));
            }
        }
        Ok(())
    }

    /// Exact "set if absent" under the shard lock: no sentinel write needed (the default
    /// protocol exists for proxy-wasm shared data, which has no such call).
    fn create_absent(&mut self, key: &str, value: &[u8]) -> Result<bool, HostError> {
        let mut m = shard(key);
        if m.contains_key(key) {
            return Ok(false);
        }
        m.insert(key.to_string(), (value.to_vec(), next_token()));
        Ok(true)
    }
}

/// How many keys the table holds (for tests and the key gauge's cross-check).
pub fn len() -> usize {
    TABLE.iter().map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_data_semantics() {
        let mut s = ProcessStore;
        let k = "store-test/semantics";
        assert_eq!(s.get(k), Ok(None));
        // A set on a missing key is not CAS-checked.
        s.set(k, b"a", 12345).unwrap();
        let (v, t1) = s.get(k).unwrap().unwrap();
        assert_eq!(v, b"a");
        assert_ne!(t1, 0);
        assert_eq!(s.set(k, b"b", t1.wrapping_add(1)), Err(SetError::CasMismatch));
        s.set(k, b"b", t1).unwrap();
        let (v, t2) = s.get(k).unwrap().unwrap();
        assert_eq!(v, b"b");
        assert_ne!(t1, t2);
        // The old token no longer matches; 0 always writes.
        assert_eq!(s.set(k, b"c", t1), Err(SetError::CasMismatch));
        s.set(k, b"c", 0).unwrap();
        assert_eq!(s.get(k).unwrap().unwrap().0, b"c");
    }

    #[test]
    fn create_absent_never_overwrites() {
        let mut s = ProcessStore;
        let k = "store-test/create";
        assert_eq!(s.create_absent(k, b"first"), Ok(true));
        assert_eq!(s.create_absent(k, b"second"), Ok(false));
        mlgate_core::create_if_absent(&mut s, k, b"third").unwrap();
        assert_eq!(s.get(k).unwrap().unwrap().0, b"first");
        assert_eq!(s.get(mlgate_core::SENTINEL_KEY), Ok(None), "no sentinel key");
    }

    /// Many threads doing read-modify-CAS on one counter: no update is lost.
    #[test]
    fn cas_loop_is_exact_across_threads() {
        let k = "store-test/counter";
        let threads: Vec<_> = (0..8)
            .map(|_| {
                std::thread::spawn(move || {
                    let mut s = ProcessStore;
                    for _ in 0..1000 {
                        loop {
                            let (v, cas) = s.get(k).unwrap().map_or((0u64, 0), |(v, c)| (u64::from_le_bytes(v.try_into().unwrap()), c));
                            let next = (v + 1).to_le_bytes();
                            // cas 0 on first creation would be unconditional: create first.
                            if cas == 0 {
                                mlgate_core::create_if_absent(&mut s, k, &0u64.to_le_bytes()).unwrap();
                                continue;
                            }
                            if s.set(k, &next, cas).is_ok() {
                                break;
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let v = ProcessStore.get(k).unwrap().unwrap().0;
        assert_eq!(u64::from_le_bytes(v.try_into().unwrap()), 8000);
    }
}
