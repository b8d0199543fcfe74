//! The unpacker of the preset text `build.rs` packs (LZ77): a byte `c < 0x80` is followed by
//! `c + 1` literal bytes; a byte `c >= 0x80` copies `(c & 0x7f) + 3` bytes from `offset` bytes
//! back (two bytes, little-endian). Also compiled into `build.rs`, which checks its packing with
//! it. A malformed input gives a wrong text, never a panic.

pub(crate) fn unpack(packed: &[u8], len: usize) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(len);
    let mut p = packed.iter();
    while let Some(&c) = p.next() {
        if c < 0x80 {
            out.extend(p.by_ref().take(usize::from(c) + 1));
        } else {
            let offset = usize::from(p.next().copied().unwrap_or(0)) | usize::from(p.next().copied().unwrap_or(0)) << 8;
            for _ in 0..usize::from(c & 0x7f) + 3 {
                let b = out.len().checked_sub(offset).and_then(|k| out.get(k)).copied().unwrap_or(0);
                out.push(b);
            }
        }
    }
    out
}
