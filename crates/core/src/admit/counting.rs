//! A store wrapper that counts the keys it created (for the key gauge).

use crate::limits::{self, Store};

/// A store that counts the keys it created, for the key gauge.
pub(super) struct Counting<'s> {
    pub(super) inner: &'s mut dyn Store,
    pub(super) created: u32,
}

impl Store for Counting<'_> {
    fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, u32)>, limits::HostError> {
        self.inner.get(key)
    }
    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), limits::SetError> {
        self.inner.set(key, value, cas)
    }
    fn created(&mut self) {
        self.created += 1;
        self.inner.created();
    }
    fn create_absent(&mut self, key: &str, value: &[u8]) -> Result<bool, limits::HostError> {
        self.inner.create_absent(key, value)
    }
}
