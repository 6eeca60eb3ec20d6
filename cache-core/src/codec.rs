//! Codecs turn typed values into the bytes a backend stores.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};

mod json_text;

/// Encodes values to bytes and back.
///
/// The methods are generic, so a codec is a type parameter of
/// [`Cache`](crate::Cache) rather than a trait object. Implement it for a
/// format of your own (e.g. with a version byte, or compression).
///
/// # Errors
///
/// Both methods fail with [`ErrorKind::Codec`] and the format's error as
/// the source.
pub trait Codec: Send + Sync + 'static {
    /// A short name for logs and metrics (`"json"`).
    fn name(&self) -> &'static str;

    /// Encodes `value`.
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Bytes>;

    /// Decodes a `T` from `bytes`.
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T>;
}

/// JSON via serde_json: the default, and the interoperable choice (the
/// stored bytes are exactly the JSON text, readable by `redis-cli GET` and
/// by services in other languages).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonCodec;

impl Codec for JsonCodec {
    fn name(&self) -> &'static str {
        "json"
    }

    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Bytes> {
        serde_json::to_vec(value)
            .map(Bytes::from)
            .map_err(|e| codec_error("json", "encode", e))
    }

    /// Checks that `bytes` are UTF-8 once, then parses them as text: the
    /// parser then skips the check of each string it reads, which from
    /// bytes it makes string by string, a few bytes at a time (a 64-byte
    /// string decodes in ~120 fewer instructions, a 214-byte struct in
    /// ~1,180 fewer). JSON text is UTF-8 (RFC 8259), so this accepts what
    /// `serde_json::from_slice` accepts, except invalid UTF-8 inside a
    /// string that `T` skips, which `from_slice` lets through. A value
    /// that is one string with no escape is read in one pass over its
    /// bytes (a 64-byte string in ~250 fewer instructions); an error of
    /// `T`'s own on such a string (e.g. not an IP address) then carries no
    /// line and column.
    #[inline(always)]
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T> {
        let text = std::str::from_utf8(bytes).map_err(|e| codec_error("json", "decode", e))?;
        json_text::from_str(text).map_err(|e| codec_error("json", "decode", e))
    }
}

/// MessagePack via rmp-serde, with struct fields as maps (so adding a field
/// to a type still decodes old values). Smaller and faster than JSON, not
/// human-readable. Needs the `msgpack` feature.
#[cfg(feature = "msgpack")]
#[derive(Debug, Clone, Copy, Default)]
pub struct MsgPackCodec;

#[cfg(feature = "msgpack")]
impl Codec for MsgPackCodec {
    fn name(&self) -> &'static str {
        "msgpack"
    }

    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Bytes> {
        rmp_serde::to_vec_named(value)
            .map(Bytes::from)
            .map_err(|e| codec_error("msgpack", "encode", e))
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T> {
        rmp_serde::from_slice(bytes).map_err(|e| codec_error("msgpack", "decode", e))
    }
}

/// A codec picked at run time (from configuration): the codec of the
/// [`Cache`](crate::Cache) that `cache::open` returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum AnyCodec {
    /// [`JsonCodec`].
    #[default]
    Json,
    /// [`MsgPackCodec`] (needs the `msgpack` feature).
    #[cfg(feature = "msgpack")]
    MsgPack,
}

impl AnyCodec {
    /// The codec named `name` (`"json"`, `"msgpack"`).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] for an unknown name, or `msgpack` without the
    /// `msgpack` feature.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "json" => Ok(AnyCodec::Json),
            #[cfg(feature = "msgpack")]
            "msgpack" => Ok(AnyCodec::MsgPack),
            #[cfg(not(feature = "msgpack"))]
            "msgpack" => Err(Error::new(
                ErrorKind::Config,
                "codec \"msgpack\" is not compiled in: enable the `msgpack` feature",
            )),
            other => Err(Error::new(
                ErrorKind::Config,
                format!("unknown codec {other:?}; known: json, msgpack"),
            )),
        }
    }
}

impl Codec for AnyCodec {
    fn name(&self) -> &'static str {
        match self {
            AnyCodec::Json => JsonCodec.name(),
            #[cfg(feature = "msgpack")]
            AnyCodec::MsgPack => MsgPackCodec.name(),
        }
    }

    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Bytes> {
        match self {
            AnyCodec::Json => JsonCodec.encode(value),
            #[cfg(feature = "msgpack")]
            AnyCodec::MsgPack => MsgPackCodec.encode(value),
        }
    }

    #[inline(always)]
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T> {
        match self {
            AnyCodec::Json => JsonCodec.decode(bytes),
            #[cfg(feature = "msgpack")]
            AnyCodec::MsgPack => MsgPackCodec.decode(bytes),
        }
    }
}

#[cold]
fn codec_error(
    codec: &'static str,
    op: &'static str,
    source: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    // The reason is in the message: it is what says which field or type
    // did not fit, and many logs print only `Display`. Not the values it
    // quotes: they are the stored data (a name, an email, a token), which
    // stays in `source()` only.
    let reason = crate::error::without_stored_values(&source.to_string());
    Error::new(ErrorKind::Codec, format!("{codec} {op} failed: {reason}"))
        .with_operation(op)
        .with_source(source)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct User {
        id: u64,
        name: String,
    }

    #[test]
    fn json_bytes_are_the_json_text() {
        let bytes = JsonCodec
            .encode(&User {
                id: 1,
                name: "a".into(),
            })
            .unwrap();
        assert_eq!(&bytes[..], br#"{"id":1,"name":"a"}"#);
    }

    #[test]
    fn undecodable_bytes_are_codec_errors() {
        let err = JsonCodec.decode::<User>(b"\x00\xffnot json").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec);
        let err = JsonCodec.decode::<User>(br#"{"id":"x"}"#).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec);
    }

    #[test]
    fn json_decodes_what_from_slice_decodes_and_rejects_what_it_rejects() {
        let inputs: [&[u8]; 12] = [
            br#""plain""#,
            "\"h\u{e9}llo \u{20ac} \u{1f600}\"".as_bytes(),
            br#""\u00e9\ud83d\ude00\n\"\\""#,
            br#"{"id":1,"name":"a","extra":[1,2.5,null,true]}"#,
            br#"  [1, "two", {"three": 3}]  "#,
            b"\"\xff\xfe\"",
            b"\"caf\xc3\"",
            b"[\"ok\", \"\xed\xa0\x80\"]",
            br#""\ud800""#,
            br#""unterminated"#,
            b"",
            br#"{"id":1}trailing"#,
        ];
        for input in inputs {
            let ours = JsonCodec.decode::<serde_json::Value>(input);
            let theirs = serde_json::from_slice::<serde_json::Value>(input);
            match (ours, theirs) {
                (Ok(ours), Ok(theirs)) => assert_eq!(ours, theirs, "{input:?}"),
                (Err(err), Err(_)) => {
                    assert_eq!(err.kind(), ErrorKind::Codec, "{input:?}");
                    assert!(std::error::Error::source(&err).is_some(), "{input:?}");
                }
                (ours, theirs) => panic!("{input:?}: ours {ours:?}, from_slice {theirs:?}"),
            }
        }
    }

    /// Decodes `input` as `T` with [`JsonCodec`] and with
    /// `serde_json::from_slice`: both decode it to the same value, or both
    /// reject it.
    fn decodes_as_from_slice<T>(input: &[u8])
    where
        T: DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let ours = JsonCodec.decode::<T>(input);
        let theirs = serde_json::from_slice::<T>(input);
        match (ours, theirs) {
            (Ok(ours), Ok(theirs)) => assert_eq!(ours, theirs, "{input:?}"),
            (Err(err), Err(_)) => assert_eq!(err.kind(), ErrorKind::Codec, "{input:?}"),
            (ours, theirs) => panic!(
                "{input:?} as {}: ours {ours:?}, from_slice {theirs:?}",
                std::any::type_name::<T>()
            ),
        }
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Name(String);

    #[derive(Debug, Deserialize, PartialEq)]
    enum Color {
        Red,
    }

    /// Every way a top-level value is read: the short way for a plain
    /// string (`String`, `Option`, `Value`, a type read from `&str`) and
    /// `serde_json`'s for the rest, each as `from_slice` reads it.
    #[test]
    fn a_top_level_value_decodes_as_from_slice_decodes_it() {
        let inputs: [&[u8]; 23] = [
            br#""plain""#,
            br#""""#,
            br#""127.0.0.1""#,
            br#""Red""#,
            br#""x""#,
            "\"h\u{e9}llo \u{1f600}\"".as_bytes(),
            br#""esc\"aped""#,
            br#""back\\slash""#,
            br#""\u0041""#,
            b"\"tab\there\"",
            b"\"del\x7f\"",
            br#"  "padded"  "#,
            br#""trailing" x"#,
            br#""a"b""#,
            br#"""#,
            br#""open"#,
            br#""end\""#,
            b"null",
            b" null ",
            b"12",
            br#"["a"]"#,
            br#"{"a":"b"}"#,
            b"\"\xff\"",
        ];
        for input in inputs {
            decodes_as_from_slice::<String>(input);
            decodes_as_from_slice::<Option<String>>(input);
            decodes_as_from_slice::<serde_json::Value>(input);
            decodes_as_from_slice::<std::net::IpAddr>(input);
            decodes_as_from_slice::<char>(input);
            decodes_as_from_slice::<Name>(input);
            decodes_as_from_slice::<Color>(input);
            decodes_as_from_slice::<Vec<String>>(input);
            decodes_as_from_slice::<Option<u8>>(input);
        }
    }

    proptest::proptest! {
        /// Any text between quotes (escapes, quotes, control characters,
        /// non-ASCII, whitespace around) decodes as `from_slice` decodes it.
        #[test]
        fn a_quoted_text_decodes_as_from_slice_decodes_it(
            text in r#"\s?"(\PC|[\x00-\x1f"\\]|\\u00[0-9a-f]{2}){0,40}"?\s?"#,
        ) {
            decodes_as_from_slice::<String>(text.as_bytes());
            decodes_as_from_slice::<Option<String>>(text.as_bytes());
            decodes_as_from_slice::<serde_json::Value>(text.as_bytes());
        }

        /// A plain string (the short way), of printable ASCII or any
        /// character but a quote, a backslash or a control one.
        #[test]
        fn a_plain_string_decodes_as_from_slice_decodes_it(
            text in r#""([ !#-\[\]-~]|[^\x00-\x1f"\\]){0,40}""#,
        ) {
            decodes_as_from_slice::<String>(text.as_bytes());
            decodes_as_from_slice::<serde_json::Value>(text.as_bytes());
        }
    }

    #[test]
    fn json_rejects_invalid_utf8_even_in_a_skipped_field() {
        // `from_slice` does not check a string it skips; stored bytes that
        // are not UTF-8 are not JSON text, whichever fields `T` reads.
        let input = b"{\"id\":1,\"name\":\"a\",\"extra\":\"\xff\"}";
        assert!(serde_json::from_slice::<User>(input).is_ok());
        let err = JsonCodec.decode::<User>(input).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec);
    }

    #[test]
    fn unencodable_values_are_codec_errors() {
        let mut map = std::collections::HashMap::new();
        map.insert(vec![1u8], 1);
        let err = JsonCodec.encode(&map).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec);
    }

    #[cfg(feature = "msgpack")]
    #[test]
    fn msgpack_round_trips() {
        let user = User {
            id: 7,
            name: "b".into(),
        };
        let bytes = MsgPackCodec.encode(&user).unwrap();
        assert_eq!(MsgPackCodec.decode::<User>(&bytes).unwrap(), user);
        assert!(MsgPackCodec.decode::<User>(b"\xc1").is_err());
    }

    #[test]
    fn names_and_run_time_choice() {
        assert_eq!(JsonCodec.name(), "json");
        assert_eq!(AnyCodec::Json.name(), "json");
        assert_eq!(AnyCodec::from_name("json").unwrap(), AnyCodec::Json);
        let err = AnyCodec::from_name("yaml").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        #[cfg(not(feature = "msgpack"))]
        assert_eq!(
            AnyCodec::from_name("msgpack").unwrap_err().kind(),
            ErrorKind::Config
        );
        #[cfg(feature = "msgpack")]
        {
            assert_eq!(MsgPackCodec.name(), "msgpack");
            assert_eq!(AnyCodec::MsgPack.name(), "msgpack");
            assert_eq!(AnyCodec::from_name("msgpack").unwrap(), AnyCodec::MsgPack);
        }
    }

    #[test]
    fn any_codec_encodes_and_decodes_like_json() {
        let user = User {
            id: 3,
            name: "c".into(),
        };
        let bytes = AnyCodec::Json.encode(&user).unwrap();
        assert_eq!(&bytes[..], br#"{"id":3,"name":"c"}"#);
        assert_eq!(AnyCodec::Json.decode::<User>(&bytes).unwrap(), user);
        let err = AnyCodec::Json.decode::<User>(b"nope").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec);
        assert_eq!(err.operation(), Some("decode"));
        assert!(std::error::Error::source(&err).is_some());
        let json = JsonCodec.decode::<User>(&bytes).unwrap();
        assert_eq!(json, user);
    }
}
