//! Feature Hashing as AzureML Studio's module computes it (Vowpal Wabbit underneath):
//! whitespace tokens hashed as-is with MurmurHash3 x86 32-bit (seed 0); n-grams combine the
//! hashes of adjacent tokens as `h(prev) * 27942141 + h(next)` (wrapping u32); each feature
//! lands in column `hash & (2^bitsize - 1)`, and a column counts its features.

use std::collections::BTreeMap;

/// VW's `quadratic_constant`, used to combine n-gram hashes.
pub const NGRAM_MULTIPLIER: u32 = 27_942_141;

/// MurmurHash3, x86 32-bit variant.
pub fn murmur3_32(data: &[u8], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mut h = seed;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let tail = chunks.remainder();
    let mut k = 0u32;
    for (i, &b) in tail.iter().enumerate() {
        k |= u32::from(b) << (8 * i);
    }
    if !tail.is_empty() {
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
    }
    h ^= data.len() as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hashing {
    /// 1..=31: the output has 2^bitsize columns.
    pub bitsize: u32,
    /// 1 = tokens only, 2 = tokens and bigrams, … up to 10.
    pub ngrams: u32,
}

impl Hashing {
    pub fn columns(&self) -> usize {
        1usize << self.bitsize
    }

    /// The columns one text's features land in, with their counts (absent: 0). Sparse, so a
    /// large bitsize costs memory only for the cells written out.
    pub fn sparse(&self, text: &str) -> BTreeMap<u32, u32> {
        let mask = (1u64 << self.bitsize) as u32 - 1;
        let hashes: Vec<u32> = text.split_whitespace().map(|t| murmur3_32(t.as_bytes(), 0)).collect();
        let mut counts = BTreeMap::new();
        let n = self.ngrams.max(1) as usize;
        for start in 0..hashes.len() {
            let mut h = 0u32;
            for (len, &next) in hashes[start..].iter().take(n).enumerate() {
                h = if len == 0 { next } else { h.wrapping_mul(NGRAM_MULTIPLIER).wrapping_add(next) };
                *counts.entry(h & mask).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Counts per output column for one text, column by column.
    pub fn counts(&self, text: &str) -> impl Iterator<Item = u32> {
        let sparse = self.sparse(text);
        (0..self.columns() as u64).map(move |i| sparse.get(&(i as u32)).copied().unwrap_or(0))
    }

    /// Counts per output column for one text.
    pub fn features(&self, text: &str) -> Vec<u32> {
        self.counts(text).collect()
    }

    /// Output column names: the text column, then `<col>_HashingFeature.<i>`.
    pub fn column_names(&self, col: &str) -> Vec<String> {
        std::iter::once(col.to_string()).chain((0..self.columns()).map(|i| format!("{col}_HashingFeature.{i}"))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur3_reference_vectors() {
        // Published MurmurHash3_x86_32 vectors (seed 0 unless noted).
        assert_eq!(murmur3_32(b"", 0), 0);
        assert_eq!(murmur3_32(b"", 1), 0x514e_28b7);
        assert_eq!(murmur3_32(b"hello", 0), 0x248b_fa47);
        assert_eq!(murmur3_32(b"The quick brown fox jumps over the lazy dog", 0), 0x2e4f_f723);
        assert_eq!(murmur3_32(b"test", 0), 0xba6b_d213);
    }

    #[test]
    fn golden_good_day_bitsize3_bigrams() {
        let h = Hashing { bitsize: 3, ngrams: 2 };
        let c = h.features("This is a good day");
        // 5 tokens + 4 bigrams; golden counts per column, checked against the independent Python implementation in golden/check.py.
        assert_eq!(c.iter().sum::<u32>(), 9);
        assert_eq!(c, GOOD_DAY_3_2);
    }

    #[test]
    fn golden_unigrams_only_and_other_bitsizes() {
        let h = Hashing { bitsize: 3, ngrams: 1 };
        assert_eq!(h.features("This is a good day"), GOOD_DAY_3_1);
        let h = Hashing { bitsize: 2, ngrams: 2 };
        assert_eq!(h.features("hello world"), HELLO_WORLD_2_2);
        let h = Hashing { bitsize: 4, ngrams: 2 };
        assert_eq!(h.features("The quick brown fox"), QUICK_FOX_4_2);
    }

    #[test]
    fn case_and_whitespace() {
        let h = Hashing { bitsize: 10, ngrams: 2 };
        // No lower-casing: "Day" and "day" are different features.
        assert_ne!(h.features("good Day"), h.features("good day"));
        // Any whitespace separates tokens.
        assert_eq!(h.features("good \t day\n"), h.features("good day"));
        assert_eq!(h.features("").iter().sum::<u32>(), 0);
        assert_eq!(h.features("one").iter().sum::<u32>(), 1);
    }

    #[test]
    fn column_names() {
        let h = Hashing { bitsize: 1, ngrams: 2 };
        assert_eq!(h.column_names("Col2"), vec!["Col2", "Col2_HashingFeature.0", "Col2_HashingFeature.1"]);
    }

    pub const GOOD_DAY_3_2: [u32; 8] = [1, 1, 2, 2, 0, 2, 0, 1];
    pub const GOOD_DAY_3_1: [u32; 8] = [0, 1, 1, 0, 0, 2, 0, 1];
    pub const HELLO_WORLD_2_2: [u32; 4] = [0, 0, 1, 2];
    pub const QUICK_FOX_4_2: [u32; 16] = [1, 0, 0, 0, 0, 0, 1, 0, 0, 3, 0, 0, 0, 2, 0, 0];
}
