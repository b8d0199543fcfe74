//! The API key: the server keeps only a SHA-256 digest of the expected `Authorization` value
//! and compares digests in constant time.

use sha2::{Digest, Sha256};

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Equality in time independent of where the inputs differ. Comparing digests of the key
/// also hides its length.
pub fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= std::hint::black_box(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_compare() {
        let a = sha256(b"Bearer k");
        assert!(ct_eq(&a, &sha256(b"Bearer k")));
        for i in 0..32 {
            let mut b = a;
            b[i] ^= 1;
            assert!(!ct_eq(&a, &b), "differs at {i}");
        }
        assert!(!ct_eq(&a, &sha256(b"Bearer K")));
        assert!(!ct_eq(&a, &sha256(b"")));
    }
}
