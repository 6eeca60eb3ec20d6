//! [`Compressed`]: a codec wrapper that LZ4-compresses large encoded values.

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::Codec;
use crate::error::{Error, ErrorKind, Result};

/// Encoded values at least this long (1 KiB) are compressed by default.
pub const DEFAULT_COMPRESSION_THRESHOLD: usize = 1024;

/// The first bytes of a compressed value: 0xFF never starts JSON text, and
/// in MessagePack it is a complete value (-1) that nothing can follow, so
/// no plain value of either codec starts with these four bytes. (The
/// fail-safe envelope uses `0xFF C E 1`; this is `0xFF C Z 1`.)
const MAGIC: [u8; 4] = [0xFF, b'C', b'Z', 1];
/// The magic and the uncompressed length (u32, big-endian).
const HEADER: usize = MAGIC.len() + 4;
/// LZ4 expands at most about 255:1, so a header that claims more than this
/// per compressed byte is corrupt (and is refused before allocating).
const MAX_RATIO: usize = 255;

/// A [`Codec`] that compresses the inner codec's output with LZ4 (the pure
/// Rust `lz4_flex`) when it is at least `threshold` bytes long. Needs the
/// `compression` feature.
///
/// - Compressed values start with a 4-byte marker that neither JSON nor
///   MessagePack output can start with, then the uncompressed length and
///   the LZ4 block. Values below the threshold, and values that LZ4 does
///   not make smaller, are stored exactly as the inner codec wrote them, so
///   small values stay readable by other programs (JSON interop) and values
///   written before compression was turned on still decode.
/// - Decoding bytes without the marker hands them to the inner codec as
///   they are; corrupt compressed bytes are a [`Codec`](ErrorKind::Codec)
///   error, never a panic, and a length claim that LZ4 cannot produce is
///   refused before any allocation.
///
/// An inner codec of your own must not write values that start with
/// `0xFF 'C' 'Z' 1`.
///
/// # Examples
///
/// ```
/// use cache::{Codec, Compressed, JsonCodec};
///
/// let codec = Compressed::new(JsonCodec).with_threshold(64);
/// let small = codec.encode(&"hi")?;
/// assert_eq!(&small[..], b"\"hi\""); // below the threshold: plain JSON
/// let big = vec!["the same words again"; 100];
/// let bytes = codec.encode(&big)?;
/// assert!(bytes.len() < serde_json::to_vec(&big).unwrap().len() / 4);
/// assert_eq!(codec.decode::<Vec<String>>(&bytes)?, big);
/// # Ok::<(), cache::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Compressed<C> {
    inner: C,
    threshold: usize,
}

impl<C: Codec> Compressed<C> {
    /// Compresses `inner`'s output from
    /// [`DEFAULT_COMPRESSION_THRESHOLD`] bytes on.
    pub fn new(inner: C) -> Self {
        Compressed {
            inner,
            threshold: DEFAULT_COMPRESSION_THRESHOLD,
        }
    }

    /// Compresses encoded values of at least `bytes` bytes (0: all).
    #[must_use]
    pub fn with_threshold(mut self, bytes: usize) -> Self {
        self.threshold = bytes;
        self
    }

    /// The threshold in bytes.
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// The inner codec.
    pub fn inner(&self) -> &C {
        &self.inner
    }
}

impl<C: Codec + Default> Default for Compressed<C> {
    fn default() -> Self {
        Compressed::new(C::default())
    }
}

impl<C: Codec> Codec for Compressed<C> {
    fn name(&self) -> &'static str {
        match self.inner.name() {
            "json" => "json+lz4",
            "msgpack" => "msgpack+lz4",
            _ => "lz4",
        }
    }

    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Bytes> {
        let plain = self.inner.encode(value)?;
        if plain.len() < self.threshold {
            return Ok(plain);
        }
        Ok(compress(&plain).unwrap_or(plain))
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T> {
        match bytes.strip_prefix(&MAGIC[..]) {
            Some(rest) => self.inner.decode(&decompress(rest)?),
            None => self.inner.decode(bytes),
        }
    }
}

/// `plain` compressed with its header; `None` when that is not smaller
/// (or `plain` is too long for the header's length field).
fn compress(plain: &[u8]) -> Option<Bytes> {
    let len = u32::try_from(plain.len()).ok()?;
    let max = HEADER + lz4_flex::block::get_maximum_output_size(plain.len());
    let mut out = BytesMut::with_capacity(max);
    out.put_slice(&MAGIC);
    out.put_u32(len);
    out.resize(max, 0);
    let written = lz4_flex::block::compress_into(plain, &mut out[HEADER..]).ok()?;
    out.truncate(HEADER + written);
    (out.len() < plain.len()).then(|| out.freeze())
}

/// The bytes after the magic (length and LZ4 block), decompressed.
fn decompress(rest: &[u8]) -> Result<Vec<u8>> {
    let Some((len, block)) = rest.split_first_chunk::<4>() else {
        return Err(corrupt("the header is cut short"));
    };
    let len = u32::from_be_bytes(*len) as usize;
    if len > block.len().saturating_mul(MAX_RATIO) {
        return Err(corrupt("the length does not fit the compressed size"));
    }
    let mut out = vec![0; len];
    match lz4_flex::block::decompress_into(block, &mut out) {
        Ok(n) if n == len => Ok(out),
        Ok(_) => Err(corrupt("the block is shorter than its length")),
        Err(err) => Err(
            Error::new(ErrorKind::Codec, format!("lz4 decompress failed: {err}"))
                .with_operation("decode")
                .with_source(err),
        ),
    }
}

fn corrupt(why: &str) -> Error {
    Error::new(ErrorKind::Codec, format!("corrupt compressed value: {why}"))
        .with_operation("decode")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::JsonCodec;

    #[test]
    fn a_claimed_length_lz4_cannot_reach_is_refused_before_allocating() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        bytes.extend_from_slice(&[0x10, b'a']);
        let err = Compressed::new(JsonCodec)
            .decode::<String>(&bytes)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec);
        assert!(err.to_string().contains("does not fit"), "{err}");
    }

    #[test]
    fn names_follow_the_inner_codec() {
        assert_eq!(Compressed::new(JsonCodec).name(), "json+lz4");
        assert_eq!(Compressed::<JsonCodec>::default().threshold(), 1024);
    }
}
