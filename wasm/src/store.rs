//! Shared data as the core's [`Store`]: the limit records every worker of this Envoy counts in.

use super::abi;
use mlgate_core::{HostError, SetError, Store};
use std::cell::RefCell;
use std::collections::HashMap;

/// Shared data through the raw ABI: every status is a value, never a panic.
pub(crate) struct SharedData;

/// Bench builds with `ablate-cas` only (`cfg!` is false otherwise, and this is never touched):
/// the same get/set/CAS answered from a map in this VM, no host call, so the variant measures
/// what shared data itself costs.
const LOCAL: bool = cfg!(feature = "ablate-cas");

thread_local! {
    static MAP: RefCell<HashMap<String, (Vec<u8>, u32)>> = RefCell::new(HashMap::new());
}

impl Store for SharedData {
    fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError> {
        if LOCAL {
            return Ok(MAP.with(|m| m.borrow().get(key).cloned()));
        }
        abi::get_shared_data(key).map_err(|_| HostError)
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError> {
        if LOCAL {
            return MAP.with(|m| local_set(&mut m.borrow_mut(), key, value, cas));
        }
        match abi::set_shared_data(key, value, cas) {
            abi::OK => Ok(()),
            abi::CAS_MISMATCH => Err(SetError::CasMismatch),
            _ => Err(SetError::Host),
        }
    }
}

/// Shared data's rule: `cas` 0 writes unconditionally, any other must be the current one.
fn local_set(m: &mut HashMap<String, (Vec<u8>, u32)>, key: &str, value: &[u8], cas: u32) -> Result<(), SetError> {
    let next = match m.get(key) {
        Some((_, current)) if cas != 0 && cas != *current => return Err(SetError::CasMismatch),
        Some((_, current)) => current.wrapping_add(1).max(1),
        None => 1,
    };
    m.insert(key.to_owned(), (value.to_vec(), next));
    Ok(())
}
