//! A JSON text as the deserializer of its top-level value, with a short
//! way for a string that needs no unescaping.
//!
//! `serde_json` reads a string in steps, looking for an escape eight bytes
//! at a time, then copying; a value that is one plain string is found by
//! one pass over its bytes, sixteen at a time in vector instructions (a
//! 64-byte string decodes in ~250 fewer instructions: `Cache::get::<String>`
//! on memory 1,387 -> 1,136). Everything else, and every string inside a
//! structure, is `serde_json`'s own reading of the same text.

use serde::de::{self, DeserializeOwned, Visitor};
use serde_json::de::StrRead;

/// Reads `text` as `serde_json::from_str` does: a text that starts with a
/// quote through [`JsonText`], any other with `serde_json` itself.
#[inline]
pub(super) fn from_str<T: DeserializeOwned>(text: &str) -> serde_json::Result<T> {
    if text.starts_with('"') {
        T::deserialize(JsonText(text))
    } else {
        from_str_out_of_line(text)
    }
}

/// `serde_json::from_str`, kept out of line: inlined, it makes its caller
/// too big to inline the string's way (+30 instructions a string).
#[inline(never)]
fn from_str_out_of_line<T: DeserializeOwned>(text: &str) -> serde_json::Result<T> {
    serde_json::from_str(text)
}

/// A whole JSON text that starts with a quote, read as one value.
struct JsonText<'de>(&'de str);

impl<'de> JsonText<'de> {
    /// The contents of the text if it is exactly one string with no
    /// escape and no control character (`"` then such bytes then `"`,
    /// nothing around them): what `serde_json` would read it as, unchanged.
    fn plain_string(&self) -> Option<&'de str> {
        let inner = self.0.strip_prefix('"')?.strip_suffix('"')?;
        (!has_special_byte(inner.as_bytes())).then_some(inner)
    }

    /// Reads the value with `serde_json`, as `serde_json::from_str` does:
    /// the value, then nothing but whitespace.
    fn parse<T>(
        self,
        read: impl FnOnce(&mut serde_json::Deserializer<StrRead<'de>>) -> serde_json::Result<T>,
    ) -> serde_json::Result<T> {
        let mut json = serde_json::Deserializer::from_str(self.0);
        let value = read(&mut json)?;
        json.end()?;
        Ok(value)
    }
}

/// Whether `bytes` hold a byte a JSON string cannot hold as it is: one
/// that ends the string, starts an escape, or is a control character.
///
/// Sixteen bytes at a time (the last sixteen overlapping the ones before
/// when the length is not a multiple of 16): the compiler checks a chunk
/// with a few vector instructions (~20 for 16 bytes, against ~50 for
/// eight bytes read as a `u64` and tested bit-wise).
fn has_special_byte(bytes: &[u8]) -> bool {
    let Some(last) = bytes.len().checked_sub(16) else {
        return bytes.iter().any(|&b| special_byte(b));
    };
    if chunk_has_special_byte(&bytes[last..]) {
        return true;
    }
    bytes.chunks_exact(16).any(chunk_has_special_byte)
}

/// The test of one 16-byte chunk: no early exit inside it, so it is
/// vector code.
#[inline(always)]
fn chunk_has_special_byte(chunk: &[u8]) -> bool {
    let Ok(chunk) = <&[u8; 16]>::try_from(chunk) else {
        return true;
    };
    chunk
        .iter()
        .fold(0u8, |found, &b| found | u8::from(special_byte(b)))
        != 0
}

fn special_byte(b: u8) -> bool {
    (b < 0x20) | (b == b'"') | (b == b'\\')
}

/// Methods that hand the text to `serde_json` as it is.
macro_rules! forward {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {
        $(
            fn $method<V: Visitor<'de>>(
                self,
                $($arg: $ty,)*
                visitor: V,
            ) -> serde_json::Result<V::Value> {
                self.parse(|json| de::Deserializer::$method(json, $($arg,)* visitor))
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for JsonText<'de> {
    type Error = serde_json::Error;

    /// A plain string is visited as `serde_json` visits it: borrowed.
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> serde_json::Result<V::Value> {
        match self.plain_string() {
            Some(text) => visitor.visit_borrowed_str(text),
            None => self.parse(|json| de::Deserializer::deserialize_any(json, visitor)),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> serde_json::Result<V::Value> {
        match self.plain_string() {
            Some(text) => visitor.visit_borrowed_str(text),
            None => self.parse(|json| de::Deserializer::deserialize_str(json, visitor)),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> serde_json::Result<V::Value> {
        self.deserialize_str(visitor)
    }

    /// A text that starts with a quote is not `null`: `Some` of the same
    /// text (as `serde_json` reads it), so an `Option<String>` takes the
    /// short way too.
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> serde_json::Result<V::Value> {
        visitor.visit_some(self)
    }

    forward! {
        deserialize_bool();
        deserialize_i8();
        deserialize_i16();
        deserialize_i32();
        deserialize_i64();
        deserialize_i128();
        deserialize_u8();
        deserialize_u16();
        deserialize_u32();
        deserialize_u64();
        deserialize_u128();
        deserialize_f32();
        deserialize_f64();
        deserialize_char();
        deserialize_bytes();
        deserialize_byte_buf();
        deserialize_unit();
        deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str);
        deserialize_seq();
        deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map();
        deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_identifier();
        deserialize_ignored_any();
    }
}

#[cfg(test)]
mod tests {
    use super::has_special_byte;

    fn special(b: u8) -> bool {
        b < 0x20 || b == b'"' || b == b'\\'
    }

    /// Every byte value at every place of texts of 1 to 40 bytes (short,
    /// whole words, a last word overlapping the one before), alone among
    /// plain bytes and beside the bytes nearest the special ones.
    #[test]
    fn finds_a_special_byte_wherever_it_is_and_only_then() {
        for len in 1..=40 {
            for at in 0..len {
                for b in 0..=u8::MAX {
                    let mut text = vec![b'a'; len];
                    text[at] = b;
                    assert_eq!(has_special_byte(&text), special(b), "{text:?}");
                    for near in [0x1f, 0x20, 0x21, 0x23, 0x5b, 0x5d, 0x7f, 0x80, 0xff] {
                        let mut text = text.clone();
                        text[(at + 1) % len] = near;
                        let expected = text.iter().any(|&b| special(b));
                        assert_eq!(has_special_byte(&text), expected, "{text:?}");
                    }
                }
            }
        }
        assert!(!has_special_byte(b""));
    }
}
