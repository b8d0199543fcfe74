//! The store protocol: what a limit store must offer (get, compare-and-swap set) and the one
//! read–decide–write loop every writer uses. Proxy-wasm shared data is one store, the test
//! suite's in-memory map another; a remote store plugs in behind the same trait.

/// The operations mlgate needs, with proxy-wasm shared-data semantics: values are versioned
/// by a CAS token, `cas == 0` writes unconditionally, the CAS is not checked when a key does
/// not exist yet, keys can never be deleted.
pub trait Store {
    /// The value and its CAS token, or `None` if the key does not exist.
    fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError>;
    /// Writes if `cas` still matches (or is 0, or the key does not exist yet).
    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError>;
    /// Told when [`create_if_absent`] created a key (for the key-count gauge).
    fn created(&mut self) {}
    /// Creates `key` with `value` unless it exists; `Ok(true)` if this call created it. A
    /// store with a native "set if not exists" (Redis `SET NX`) overrides this; the default
    /// is the sentinel-token trick that proxy-wasm shared data needs (see [`create_if_absent`]).
    fn create_absent(&mut self, key: &str, value: &[u8]) -> Result<bool, HostError> {
        self.set(SENTINEL_KEY, b"", 0).map_err(|_| HostError)?;
        let token = match self.get(SENTINEL_KEY)? {
            Some((_, cas)) if cas != 0 => cas,
            _ => return Err(HostError),
        };
        match self.set(key, value, token) {
            Ok(()) => Ok(true),
            Err(SetError::CasMismatch) => Ok(false),
            Err(SetError::Host) => Err(HostError),
        }
    }
}

/// The store could not be read or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetError {
    CasMismatch,
    Host,
}

/// The key whose fresh CAS token makes "create if absent" safe (see [`create_if_absent`]).
pub const SENTINEL_KEY: &str = "mlgate/cas-sentinel";

/// Creates `key` with `value` unless it exists; never overwrites a value another worker wrote.
///
/// The host ignores the CAS of a set on a missing key, and a set with CAS 0 always writes.
/// So we write with a CAS that no existing value can carry: the token the host just issued
/// for our own write of the sentinel key. Tokens come from one process-wide counter, so that
/// token belongs to the sentinel alone; on an existing key the set fails with a mismatch.
pub fn create_if_absent(store: &mut dyn Store, key: &str, value: &[u8]) -> Result<(), HostError> {
    if store.create_absent(key, value)? {
        store.created();
    }
    Ok(())
}

/// Reads `key`, creating it as `empty` if absent. Returns the value and its CAS token.
pub(super) fn load(store: &mut dyn Store, key: &str, empty: &[u8]) -> Result<(Vec<u8>, u32), HostError> {
    if let Some(v) = store.get(key)? {
        return Ok(v);
    }
    create_if_absent(store, key, empty)?;
    store.get(key)?.ok_or(HostError)
}

/// What one pass of a [`cas_update`] decided.
pub(super) enum Step<T> {
    /// Write the changed record, then return `T` (re-run on a CAS conflict).
    Write(T),
    /// Return `T` without writing.
    Keep(T),
}

/// The read–decide–write loop: reads `key` (creating it as `empty`), lets `decide` change the
/// record, and writes it back with the token it was read with. A conflict means another
/// worker wrote in between: read and decide again, up to `retries` times.
pub(super) fn cas_update<T>(
    store: &mut dyn Store,
    key: &str,
    empty: &[u8],
    retries: u32,
    mut decide: impl FnMut(&mut Vec<u8>) -> Step<T>,
) -> Result<T, HostError> {
    for _ in 0..retries {
        let (mut rec, cas) = load(store, key, empty)?;
        match decide(&mut rec) {
            Step::Keep(t) => return Ok(t),
            Step::Write(t) => match store.set(key, &rec, cas) {
                Ok(()) => return Ok(t),
                Err(SetError::CasMismatch) => continue,
                Err(SetError::Host) => return Err(HostError),
            },
        }
    }
    Err(HostError)
}
