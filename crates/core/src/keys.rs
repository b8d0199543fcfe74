//! Where a caller is identified: subscription keys are held only as SHA-256 digests, looked
//! up by digest prefix, and confirmed with a constant-time comparison. A presented key is
//! hashed once; nothing here ever formats a key or a digest into a message.

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
        for (out, pair) in d.iter_mut().zip(b.chunks_exact(2)) {
            let [hi, lo] = pair else { return None };
            *out = (hex_val(*hi)? << 4) | hex_val(*lo)?;
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

/// A pass-through hasher for the `u64` bucket keys (already uniformly distributed).
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
///
/// Buckets are keyed by the first 8 bytes of the digest; the full 32 bytes are then confirmed
/// with [`Digest::ct_eq`]. The bucket lookup's timing can tell an attacker at most whether
/// the first 8 bytes of SHA-256 of *their own* input exist, which does not help them find a
/// key (that would take a preimage); the confirmation does not even leak where it differs.
#[derive(Default)]
pub struct KeyIndex {
    map: HashMap<u64, (Digest, u32), BuildHasherDefault<IdentityHasher>>,
}

fn bucket(d: &Digest) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(d.0.get(..8).unwrap_or(&[0; 8]));
    u64::from_le_bytes(b)
}

impl KeyIndex {
    pub fn with_capacity(n: usize) -> Self {
        KeyIndex { map: HashMap::with_capacity_and_hasher(n, Default::default()) }
    }

    /// False if the digest (or, with odds of 2^-64, its 8-byte bucket) is already present.
    pub fn insert(&mut self, d: Digest, sub: u32) -> bool {
        let b = bucket(&d);
        if self.map.contains_key(&b) {
            return false;
        }
        self.map.insert(b, (d, sub));
        true
    }

    /// The subscription whose primary or secondary key is `key` (any bytes).
    pub fn find(&self, key: &[u8]) -> Option<u32> {
        let d = Digest::of(key);
        let (stored, sub) = self.map.get(&bucket(&d))?;
        stored.ct_eq(&d).then_some(*sub)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Decodes a query parameter value as forms do (`+` is a space, `%XX` a byte); malformed
/// escapes stay as they are. The result is bytes: a key need not be UTF-8 to be compared.
pub fn query_decode(raw: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !raw.contains(&b'+') {
        return percent_encoding::percent_decode(raw).into();
    }
    let spaced: Vec<u8> = raw.iter().map(|&b| if b == b'+' { b' ' } else { b }).collect();
    std::borrow::Cow::Owned(percent_encoding::percent_decode(&spaced).collect())
}
