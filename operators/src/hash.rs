//! Stable, fast hashing for keys, lines and input names.
//!
//! Exchange pacts and checkpointed keyed state must route a key to the same
//! worker in every run and every process, so nothing here uses `RandomState`.
//! xxh3 is both fast on short keys and well distributed.

use xxhash_rust::xxh3::xxh3_64;

/// Hash of a key's text, used to route the record to the worker that owns the key.
#[inline]
pub fn key_hash(key: &str) -> u64 {
    xxh3_64(key.as_bytes())
}

/// Hash of a raw input line (without its line terminator), used for exact-duplicate detection.
#[inline]
pub fn line_hash(line: &[u8]) -> u64 {
    // Distinct seed so a line hash never equals the key hash of the same text.
    xxhash_rust::xxh3::xxh3_64_with_seed(line, 0x6d69_6c6c_7261_6365)
}

/// Hash of any bytes (input names, file contents).
#[inline]
pub fn bytes_hash(bytes: &[u8]) -> u64 {
    xxh3_64(bytes)
}

/// Picks the owner of `hash` among `peers` workers.
///
/// Uses the high bits of the hash so owners stay well spread even when
/// callers also use the low bits for hash-table buckets.
#[inline]
pub fn owner(hash: u64, peers: usize) -> usize {
    ((hash >> 32).wrapping_mul(peers as u64) >> 32) as usize
}

/// A fast, deterministic hasher for short strings in lookup tables (vocabularies).
///
/// FxHash's multiply-rotate over 8-byte words: much cheaper than SipHash, and
/// tables keyed by declared values need no protection against flooding.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }
}

/// A `BuildHasher` for [`FxHasher`].
pub type FxBuild = std::hash::BuildHasherDefault<FxHasher>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_stable_across_runs() {
        // Fixed values (the reference xxh3 of the Python `xxhash` package): a
        // change here would re-route keys and break checkpoints and duplicate windows.
        assert_eq!(key_hash(""), 0x2d06_8005_38d3_94c2);
        assert_eq!(key_hash("acct-000001"), 0x4c51_5aa7_224e_ccb7);
        assert_eq!(key_hash("x"), 0xeaf0_6c64_80b2_cd11);
        assert_eq!(bytes_hash(b"x"), key_hash("x"));
        assert_eq!(line_hash(b""), 0xbcc7_13b0_da11_2bae);
        assert_eq!(line_hash(b"acct-000001"), 0x0bb3_0a9a_d301_6649);
        assert_eq!(line_hash(b"x"), 0x868b_313f_d576_ca59);
        assert_eq!(
            owner(0x4c51_5aa7_224e_ccb7, 4),
            ((0x4c51_5aa7u64 * 4) >> 32) as usize
        );
    }

    #[test]
    fn owner_spreads_over_peers() {
        let mut counts = [0usize; 4];
        for i in 0..10_000 {
            counts[owner(key_hash(&format!("acct-{i:06}")), 4)] += 1;
        }
        for c in counts {
            assert!((2_200..2_800).contains(&c), "{counts:?}");
        }
        assert!((0..1000).all(|i| owner(key_hash(&i.to_string()), 1) == 0));
    }
}
