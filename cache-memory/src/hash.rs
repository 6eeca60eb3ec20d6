//! The key hasher of the memory backend: a keyed folded-multiply hash.
//!
//! The standard library's SipHash-1-3 costs about 20 ns on an 11-byte key,
//! as much as the rest of a map lookup. This hasher is in the family of
//! foldhash and wyhash (hashbrown's default is foldhash): a 64x64->128-bit
//! multiply whose halves are xor-ed, a few nanoseconds per key, with a
//! random 128-bit seed per map taken from the standard library's
//! `RandomState`. Like foldhash it is not a cryptographic PRF, but an
//! attacker who does not see hash values cannot aim keys at one bucket.
//!
//! This file is self-contained (no `crate::` paths) so the comparison bench
//! can compile the very same hasher into its raw-`DashMap` baseline.

use std::hash::{BuildHasher, Hash, Hasher};

/// Odd 64-bit constants (the fractional digits of pi), mixed with the seed.
const K0: u64 = 0x243f_6a88_85a3_08d3;
const K1: u64 = 0x1319_8a2e_0370_7344;
const K2: u64 = 0xa409_3822_299f_31d0;

#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

#[inline(always)]
fn read8(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

#[inline(always)]
fn read4(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u64::from(u32::from_le_bytes(word))
}

/// Builds [`KeyHasher`]s with one random seed (one per map).
#[derive(Clone, Debug)]
pub(crate) struct KeyHasherBuilder {
    seed: u64,
    seed2: u64,
}

impl Default for KeyHasherBuilder {
    fn default() -> Self {
        let random = std::collections::hash_map::RandomState::new();
        KeyHasherBuilder {
            seed: random.hash_one(K0),
            seed2: random.hash_one(K1) | 1,
        }
    }
}

impl KeyHasherBuilder {
    /// `self.hash_one(key)`, the hash a map of `Arc<str>` keys gives `key`,
    /// always inlined: `hash_one` may stay out of line behind a call.
    #[inline(always)]
    #[allow(clippy::manual_hash_one, reason = "hash_one is the call this avoids")]
    pub(crate) fn hash_key(&self, key: &str) -> u64 {
        let mut hasher = self.build_hasher();
        key.hash(&mut hasher);
        hasher.finish()
    }

    /// [`hash_key`](Self::hash_key) of the key `key` holds, from its words:
    /// what [`KeyHasher::write_from`] computes of them.
    #[inline(always)]
    pub(crate) fn hash_short(&self, key: &ShortKey) -> u64 {
        let len = key.len;
        let [a, b, c, d] = key.words;
        let mut acc = self.seed.rotate_left(len as u32).wrapping_add(len as u64);
        let (a, b) = if len <= 16 {
            (a, b)
        } else {
            // The one 16-byte block a key of 17 to 32 bytes has before
            // its last 16 bytes.
            acc = fold(a ^ K1 ^ acc, b ^ self.seed2);
            (c, d)
        };
        let mut hasher = KeyHasher {
            acc: fold(a ^ K1 ^ acc, b ^ K2 ^ self.seed2),
            seed2: self.seed2,
        };
        // As `str`'s `Hash` ends.
        hasher.write_u8(0xff);
        hasher.finish()
    }

    /// [`hash_key`](Self::hash_key) of `head` followed by `tail`, read
    /// where the two lie: the same hash, without joining them first.
    #[inline(always)]
    #[allow(dead_code, reason = "the bench's copy of this file joins no keys")]
    pub(crate) fn hash_joined(&self, head: &str, tail: &str) -> u64 {
        let mut hasher = self.build_hasher();
        hasher.write_from(&Joined(head.as_bytes(), tail.as_bytes()));
        // As `str`'s `Hash` ends.
        hasher.write_u8(0xff);
        hasher.finish()
    }
}

/// The first `bytes.len()` (under 8) bytes of `bytes`, little-endian, in
/// at most two loads.
#[inline(always)]
fn read_short(bytes: &[u8]) -> u64 {
    let len = bytes.len();
    if len >= 4 {
        read4(bytes, 0) | read4(bytes, len - 4) << (8 * (len - 4))
    } else if len > 0 {
        u64::from(bytes[0])
            | u64::from(bytes[len / 2]) << (8 * (len / 2))
            | u64::from(bytes[len - 1]) << (8 * (len - 1))
    } else {
        0
    }
}

/// What the hash reads its bytes from: one slice, or two read as one.
trait Source {
    fn len(&self) -> usize;
    /// The 8 bytes at `at`, little-endian.
    fn read8(&self, at: usize) -> u64;
    /// The 4 bytes at `at`, little-endian.
    fn read4(&self, at: usize) -> u64;
    fn byte(&self, at: usize) -> u8;
}

impl Source for [u8] {
    #[inline(always)]
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }
    #[inline(always)]
    fn read8(&self, at: usize) -> u64 {
        read8(self, at)
    }
    #[inline(always)]
    fn read4(&self, at: usize) -> u64 {
        read4(self, at)
    }
    #[inline(always)]
    fn byte(&self, at: usize) -> u8 {
        self[at]
    }
}

/// Two slices read as if joined.
struct Joined<'a>(&'a [u8], &'a [u8]);

impl Joined<'_> {
    /// The `n` (8 or 4) bytes at `at`: read by `read` from the slice that
    /// holds them, or put together when they straddle the two.
    #[inline(always)]
    fn window(&self, at: usize, n: usize, read: fn(&[u8], usize) -> u64) -> u64 {
        let head = self.0.len();
        if at + n <= head {
            read(self.0, at)
        } else if at >= head {
            read(self.1, at - head)
        } else {
            self.straddling(at, n)
        }
    }

    /// The `n` (8 or 4) bytes at `at`, which straddle the two slices.
    #[inline(always)]
    fn straddling(&self, at: usize, n: usize) -> u64 {
        let from_head = &self.0[at..];
        let k = from_head.len();
        let rest = n - k;
        let low = read_short(from_head);
        // A whole word of the tail when it has one: the bytes past `rest`
        // are shifted out of the word (`n` is 8 whenever the tail is that
        // long: 4-byte reads are made of keys under 8 bytes).
        let high = if self.1.len() >= 8 {
            read8(self.1, 0)
        } else {
            read_short(&self.1[..rest])
        };
        low | high << (8 * k)
    }
}

impl Source for Joined<'_> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.0.len() + self.1.len()
    }
    #[inline(always)]
    fn read8(&self, at: usize) -> u64 {
        self.window(at, 8, read8)
    }
    #[inline(always)]
    fn read4(&self, at: usize) -> u64 {
        self.window(at, 4, read4)
    }
    #[inline(always)]
    fn byte(&self, at: usize) -> u8 {
        match self.0.get(at) {
            Some(&b) => b,
            None => self.1[at - self.0.len()],
        }
    }
}

/// The two words a key of at most 16 bytes is hashed from: between them
/// they hold every byte of it.
#[inline(always)]
fn pair<S: Source + ?Sized>(bytes: &S) -> (u64, u64) {
    let len = bytes.len();
    if len >= 8 {
        (bytes.read8(0), bytes.read8(len - 8))
    } else if len >= 4 {
        (bytes.read4(0), bytes.read4(len - 4))
    } else if len > 0 {
        let lo = u64::from(bytes.byte(0)) | u64::from(bytes.byte(len / 2)) << 8;
        (lo, u64::from(bytes.byte(len - 1)))
    } else {
        (0, 0)
    }
}

/// The longest key a [`ShortKey`] holds.
const SHORT_KEY: usize = 32;

/// A key of at most 32 bytes as the words its hash is made of: two for a
/// key of up to 16 bytes, four (at 0, 8, `len - 16` and `len - 8`) for a
/// longer one. The words hold every byte of the key, so a key of the same
/// length is this one exactly when its words are these: a stored key is
/// compared with a few loads, not a call to `memcmp` per part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ShortKey {
    len: usize,
    words: [u64; 4],
}

impl ShortKey {
    /// `head` followed by `tail`, read where the two lie; `None` when
    /// longer than 32 bytes.
    #[inline(always)]
    pub(crate) fn joined(head: &str, tail: &str) -> Option<ShortKey> {
        ShortKey::read(&Joined(head.as_bytes(), tail.as_bytes()))
    }

    /// Whether `key` is this key.
    #[inline(always)]
    pub(crate) fn is(&self, key: &str) -> bool {
        key.len() == self.len && ShortKey::read(key.as_bytes()).is_some_and(|k| k == *self)
    }

    #[inline(always)]
    fn read<S: Source + ?Sized>(bytes: &S) -> Option<ShortKey> {
        let len = bytes.len();
        let words = if len <= 16 {
            let (a, b) = pair(bytes);
            [a, b, 0, 0]
        } else if len <= SHORT_KEY {
            [
                bytes.read8(0),
                bytes.read8(8),
                bytes.read8(len - 16),
                bytes.read8(len - 8),
            ]
        } else {
            return None;
        };
        Some(ShortKey { len, words })
    }
}

impl BuildHasher for KeyHasherBuilder {
    type Hasher = KeyHasher;

    #[inline(always)]
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher {
            acc: self.seed,
            seed2: self.seed2,
        }
    }
}

/// The hasher [`KeyHasherBuilder`] builds.
#[derive(Clone, Debug)]
pub(crate) struct KeyHasher {
    acc: u64,
    seed2: u64,
}

impl KeyHasher {
    /// [`Hasher::write`] of the bytes `bytes` holds.
    #[inline(always)]
    fn write_from<S: Source + ?Sized>(&mut self, bytes: &S) {
        let len = bytes.len();
        // The length enters through a seed-dependent rotation, so keys of
        // different lengths never differ by a fixed, seed-free amount.
        let mut acc = self.acc.rotate_left(len as u32).wrapping_add(len as u64);
        let (a, b) = if len <= 16 {
            pair(bytes)
        } else {
            let mut at = 0;
            while len - at > 16 {
                acc = fold(bytes.read8(at) ^ K1 ^ acc, bytes.read8(at + 8) ^ self.seed2);
                at += 16;
            }
            (bytes.read8(len - 16), bytes.read8(len - 8))
        };
        self.acc = fold(a ^ K1 ^ acc, b ^ K2 ^ self.seed2);
    }
}

impl Hasher for KeyHasher {
    #[inline(always)]
    fn write(&mut self, bytes: &[u8]) {
        self.write_from(bytes);
    }

    #[inline(always)]
    fn write_u8(&mut self, i: u8) {
        // `str`'s `Hash` ends with `write_u8(0xff)`; one add is enough to
        // keep prefix-free, the final fold mixes it.
        self.acc = self.acc.wrapping_add(u64::from(i));
    }

    #[inline(always)]
    fn write_u64(&mut self, i: u64) {
        self.acc = fold(i ^ K1 ^ self.acc, K2 ^ self.seed2);
    }

    #[inline(always)]
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }

    #[inline(always)]
    fn finish(&self) -> u64 {
        fold(self.acc ^ K0, self.seed2).rotate_left(23)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn distinct_keys_hash_apart() {
        let builder = KeyHasherBuilder::default();
        let mut seen = HashSet::new();
        let mut top7 = [0usize; 128];
        for i in 0..200_000 {
            for key in [format!("user:{i:06}"), format!("k{i}"), format!("{i}")] {
                let h = builder.hash_one(key.as_str());
                seen.insert(h);
                top7[(h >> 57) as usize] += 1;
            }
        }
        assert_eq!(seen.len(), 600_000);
        // The top 7 bits (hashbrown's tag) are evenly used.
        assert!(top7.iter().all(|&n| n > 3_500 && n < 6_000), "{top7:?}");
        // Prefixes differ: "a" + "" vs "" + "a" are different keys.
        assert_ne!(builder.hash_one(("a", "")), builder.hash_one(("", "a")));
    }

    /// The hash of a key read in two parts is the hash of the key, for
    /// every length up to 40 bytes and every split, whichever reads of the
    /// hash straddle the two parts.
    #[test]
    fn hash_joined_is_hash_key_of_the_joined_key() {
        let builder = KeyHasherBuilder::default();
        for len in 0..=40usize {
            let key: String = (0..len)
                .map(|i| char::from(b'!' + (i * 7 % 90) as u8))
                .collect();
            for split in 0..=len {
                let (head, tail) = key.split_at(split);
                assert_eq!(
                    builder.hash_joined(head, tail),
                    builder.hash_key(&key),
                    "len {len}, split {split}"
                );
            }
        }
    }

    /// A key of up to 32 bytes read in two parts as a [`ShortKey`] hashes
    /// as the key does, for every split; a longer one is no `ShortKey`.
    #[test]
    fn hash_short_is_hash_key_of_the_joined_key() {
        let builder = KeyHasherBuilder::default();
        for len in 0..=40usize {
            let key = test_key(len);
            for split in 0..=len {
                let (head, tail) = key.split_at(split);
                let short = ShortKey::joined(head, tail);
                if len > SHORT_KEY {
                    assert_eq!(short, None, "len {len}");
                    continue;
                }
                let short = short.expect("a key of at most 32 bytes");
                assert_eq!(
                    builder.hash_short(&short),
                    builder.hash_key(&key),
                    "len {len}, split {split}"
                );
            }
        }
    }

    /// A `ShortKey` is exactly the key it was read from: not a key of
    /// another length, nor one that differs in any single byte.
    #[test]
    fn a_short_key_is_its_key_and_no_other() {
        for len in 0..=SHORT_KEY {
            let key = test_key(len);
            for split in 0..=len {
                let (head, tail) = key.split_at(split);
                let short = ShortKey::joined(head, tail).expect("a short key");
                assert!(short.is(&key), "len {len}, split {split}");
                assert!(!short.is(&format!("{key}!")), "len {len}, longer");
                for at in 0..len {
                    let mut other = key.clone().into_bytes();
                    other[at] = b'~';
                    let other = String::from_utf8(other).expect("ASCII");
                    assert!(!short.is(&other), "len {len}, split {split}, byte {at}");
                }
            }
        }
    }

    /// A key of `len` ASCII bytes, all different from `~`.
    fn test_key(len: usize) -> String {
        (0..len)
            .map(|i| char::from(b'!' + (i * 7 % 90) as u8))
            .collect()
    }

    #[test]
    fn hash_key_is_hash_one() {
        let builder = KeyHasherBuilder::default();
        for key in ["", "a", "user:000123", "cache:user:000123:a-longer-id"] {
            assert_eq!(builder.hash_key(key), builder.hash_one(key), "{key}");
        }
    }

    #[test]
    fn seeds_differ_per_map() {
        let (a, b) = (KeyHasherBuilder::default(), KeyHasherBuilder::default());
        assert_ne!(a.hash_one("user:1"), b.hash_one("user:1"));
    }

    #[test]
    fn every_byte_and_the_length_matter() {
        let builder = KeyHasherBuilder::default();
        let hash = |bytes: &[u8]| {
            let mut h = builder.build_hasher();
            h.write(bytes);
            h.finish()
        };
        let mut seen = HashSet::new();
        for len in 0..=40usize {
            let base: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37)).collect();
            assert!(seen.insert(hash(&base)), "len {len}");
            for at in 0..len {
                for flip in [1u8, 0x80] {
                    let mut changed = base.clone();
                    changed[at] ^= flip;
                    assert_ne!(hash(&changed), hash(&base), "len {len}, byte {at}");
                }
            }
        }
    }

    #[test]
    fn integers_and_the_str_terminator_are_hashed() {
        let builder = KeyHasherBuilder::default();
        assert_ne!(builder.hash_one(1u64), builder.hash_one(2u64));
        assert_ne!(builder.hash_one(1usize), builder.hash_one(2usize));
        assert_eq!(builder.hash_one(5usize), builder.hash_one(5u64));
        // `str` hashes its bytes then `0xff`: not the same as the bytes alone.
        let mut bytes = builder.build_hasher();
        bytes.write(b"ab");
        assert_ne!(builder.hash_one("ab"), bytes.finish());
        let mut a = builder.build_hasher();
        a.write_u8(1);
        let mut b = builder.build_hasher();
        b.write_u8(2);
        assert_ne!(a.finish(), b.finish());
    }

    #[test]
    fn the_second_seed_is_odd_and_random() {
        let seeds: HashSet<u64> = (0..64).map(|_| KeyHasherBuilder::default().seed2).collect();
        assert!(seeds.iter().all(|s| s & 1 == 1), "{seeds:?}");
        assert!(seeds.len() > 60);
    }
}
