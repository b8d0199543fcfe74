//! Where a caller is identified: subscription keys are held only as SHA-256 digests, looked
//! up by digest, and confirmed with a constant-time comparison. A presented key is hashed
//! once; nothing here ever formats a key or a digest into a message.

use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// SHA-256 of a subscription key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Digest(pub [u8; 32]);

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Digest(..)")
    }
}

impl std::hash::Hash for Digest {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The digest is already uniformly distributed; its first 8 bytes are a fine hash.
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(b));
    }
}

impl Digest {
    pub fn of(key: &[u8]) -> Digest {
        let mut d = [0u8; 32];
        d.copy_from_slice(&Sha256::digest(key));
        Digest(d)
    }

    /// Parses 64 hex digits (either case).
    pub fn from_hex(hex: &str) -> Option<Digest> {
        let b = hex.as_bytes();
        if b.len() != 64 {
            return None;
        }
        let mut d = [0u8; 32];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            d[i] = (hex_val(pair[0])? << 4) | hex_val(pair[1])?;
        }
        Some(Digest(d))
    }

    /// Equality whose time does not depend on where the digests differ.
    pub fn ct_eq(&self, other: &Digest) -> bool {
        let mut acc = 0u8;
        for (a, b) in self.0.iter().zip(other.0.iter()) {
            acc |= a ^ b;
        }
        // black_box keeps the optimiser from turning the fold into an early exit.
        std::hint::black_box(acc) == 0
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A pass-through hasher for keys that hash themselves with `write_u64`.
#[derive(Default)]
pub struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Digest → subscription index. Lookup cost does not grow with the number of subscriptions.
#[derive(Debug, Default)]
pub struct KeyIndex {
    map: HashMap<Digest, (Digest, u32), BuildHasherDefault<IdentityHasher>>,
}

impl KeyIndex {
    pub fn with_capacity(n: usize) -> Self {
        KeyIndex { map: HashMap::with_capacity_and_hasher(n, Default::default()) }
    }

    /// False if the digest is already present.
    pub fn insert(&mut self, d: Digest, sub: u32) -> bool {
        if self.map.contains_key(&d) {
            return false;
        }
        self.map.insert(d, (d, sub));
        true
    }

    /// The subscription whose primary or secondary key is `key`.
    pub fn find(&self, key: &[u8]) -> Option<u32> {
        let d = Digest::of(key);
        let (stored, sub) = self.map.get(&d)?;
        stored.ct_eq(&d).then_some(*sub)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Percent-decodes a query parameter value (`+` is a space, as in forms). `None` if the
/// escapes are malformed or the result is not UTF-8-free-of-controls.
pub fn percent_decode(v: &str) -> Option<std::borrow::Cow<'_, str>> {
    if !v.bytes().any(|b| b == b'%' || b == b'+') {
        return Some(std::borrow::Cow::Borrowed(v));
    }
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hi = hex_val(*b.get(i + 1)?)?;
                let lo = hex_val(*b.get(i + 2)?)?;
                out.push((hi << 4) | lo);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().map(std::borrow::Cow::Owned)
}
