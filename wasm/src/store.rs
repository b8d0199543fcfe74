//! Shared data as the core's [`Store`]: the limit records every worker of this Envoy counts in.

use super::abi;
use mlgate_core::{HostError, SetError, Store};

/// Shared data through the raw ABI: every status is a value, never a panic.
pub(crate) struct SharedData;

impl Store for SharedData {
    fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError> {
        abi::get_shared_data(key).map_err(|_| HostError)
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError> {
        match abi::set_shared_data(key, value, cas) {
            abi::OK => Ok(()),
            abi::CAS_MISMATCH => Err(SetError::CasMismatch),
            _ => Err(SetError::Host),
        }
    }
}
