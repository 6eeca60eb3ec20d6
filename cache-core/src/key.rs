//! Structured keys: `{prefix}:{category}:{id}[:v{version}]`.

use std::fmt::{self, Write as _};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The longest full key (prefix, category, id and version together) that
/// [`Cache`](crate::Cache) builds, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// The longest category name, in bytes.
pub const MAX_CATEGORY_LEN: usize = 64;

/// A logical cache key: a category (which picks the TTL and can be
/// invalidated as a whole), an id within it, and an optional schema version.
///
/// The id is data, never syntax: `:` `*` `?` `[` `]` `\` `{` `}` `%` in an id
/// are percent-encoded (`:` becomes `%3A`), so a user-controlled id can
/// neither forge a key of another category nor widen a pattern, nor pick a
/// Redis Cluster hash slot. Ids made only of letters, digits and `-_.@/`
/// are stored as they are, so keys stay readable in `redis-cli`.
/// Ids of the shape `h` + 32 lowercase hex digits belong to
/// [`CacheKey::hashed`]: a plain id of that shape is stored with its `h`
/// encoded (`%68…`), so user input cannot write a hashed key's value.
///
/// # Examples
///
/// ```
/// use cache::CacheKey;
///
/// let key = CacheKey::new("user", 42)?;
/// assert_eq!(key.render("app", 0), "app:user:42");
///
/// let forged = CacheKey::new("user", "42:admin:*")?;
/// assert_eq!(forged.render("app", 0), "app:user:42%3Aadmin%3A%2A");
///
/// let v2 = CacheKey::new("user", 42)?.with_version(2);
/// assert_eq!(v2.render("app", 0), "app:user:42:v2");
/// # Ok::<(), cache::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct CacheKey {
    /// The key as it is rendered after the prefix at generation 0:
    /// `{category}:{id}[{tag}][:v{version}]`, the id escaped. One
    /// allocation, and a read copies it whole (32 bytes in all: a read
    /// touches one cache line of the key and one of its text).
    text: Box<str>,
    /// Where the category ends in `text` (at the `:`).
    split: u32,
    /// Where the escaped id ends in `text`.
    id_end: u32,
    version: Option<u32>,
}

impl CacheKey {
    /// A key for `id` in `category`.
    ///
    /// # Errors
    ///
    /// [`InvalidKey`](crate::ErrorKind::InvalidKey) when the category is
    /// empty, longer than [`MAX_CATEGORY_LEN`] or not made of ASCII letters,
    /// digits, `_`, `-` and `.`; or when the id is empty, longer than
    /// [`MAX_KEY_LEN`] or contains a control character.
    pub fn new(category: &str, id: impl fmt::Display) -> Result<Self> {
        thread_local! {
            static SCRATCH: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        validate_category(category)?;
        // The id is written into a buffer of the thread's straight after
        // the category: when it needs no escaping (the common case), the
        // key's one allocation is the exact copy of it.
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut text) => CacheKey::written(&mut text, category, id),
            // Busy only if the id's `Display` builds a key itself.
            Err(_) => CacheKey::written(&mut String::new(), category, id),
        })
    }

    /// The key of `id` in `category` (checked), written through `text`.
    fn written(text: &mut String, category: &str, id: impl fmt::Display) -> Result<Self> {
        text.clear();
        text.push_str(category);
        text.push(':');
        let _ = write!(text, "{id}");
        let raw = &text[category.len() + 1..];
        if raw.is_empty()
            || raw.len() > MAX_KEY_LEN
            || !raw.bytes().all(|b| PLAIN_ID_BYTE[usize::from(b)])
            || is_hashed_id(raw)
        {
            return Ok(CacheKey::joined(category, &escape_id(raw)?));
        }
        // An exact-size copy: boxing it does not reallocate.
        Ok(CacheKey::from_text(
            text.as_str().to_owned(),
            category.len(),
            None,
        ))
    }

    /// A key whose id is a stable hash of a serializable value, e.g. a search
    /// query with its filters.
    ///
    /// The id is `h` followed by the first 32 hex digits (128 bits) of the
    /// SHA-256 of the value's canonical JSON: serde's JSON form with object
    /// keys sorted by their UTF-8 bytes and no whitespace. Two values that
    /// serialize to the same JSON get the same key in every process and every
    /// release; a `HashMap` field hashes the same whatever its order.
    ///
    /// # Errors
    ///
    /// [`InvalidKey`](crate::ErrorKind::InvalidKey) for an invalid category;
    /// [`Codec`](crate::ErrorKind::Codec) when the value cannot be
    /// serialized to JSON (e.g. a map with non-string keys).
    ///
    /// # Examples
    ///
    /// ```
    /// use cache::CacheKey;
    /// use std::collections::HashMap;
    ///
    /// let a = HashMap::from([("q", "rust"), ("lang", "en")]);
    /// let b = HashMap::from([("lang", "en"), ("q", "rust")]);
    /// assert_eq!(CacheKey::hashed("search", &a)?, CacheKey::hashed("search", &b)?);
    /// # Ok::<(), cache::Error>(())
    /// ```
    pub fn hashed<T: Serialize + ?Sized>(category: &str, value: &T) -> Result<Self> {
        validate_category(category)?;
        Ok(CacheKey::joined(category, &stable_hash(value)?))
    }

    /// The same key with a schema version, rendered as a `:v{version}`
    /// suffix. Bump it when the cached type changes shape, so old entries
    /// are not read as the new type.
    #[must_use]
    pub fn with_version(self, version: u32) -> Self {
        self.rebuilt(self.hash_tag(), Some(version))
    }

    /// The same key with a Redis Cluster hash tag: keys with the same tag
    /// are stored in one hash slot, so they live on one node (and a batch of
    /// them is one command). Rendered as `{tag}` right after the id:
    /// `prefix:category:id{tag}[:vN]`. The tag uses the category's
    /// characters (ASCII letters, digits, `_-.`). A prefix with its own
    /// `{…}` takes precedence (Redis hashes the first tag in a key).
    /// Id patterns of [`Cache::invalidate_matching`](crate::Cache::invalidate_matching)
    /// see the tag after the id, so end them with `*` to match tagged keys.
    ///
    /// # Errors
    ///
    /// [`InvalidKey`](crate::ErrorKind::InvalidKey) for an invalid tag.
    ///
    /// # Examples
    ///
    /// ```
    /// use cache::CacheKey;
    ///
    /// let key = CacheKey::new("cart", 42)?.with_hash_tag("user-42")?;
    /// assert_eq!(key.render("shop", 0), "shop:cart:42{user-42}");
    /// # Ok::<(), cache::Error>(())
    /// ```
    pub fn with_hash_tag(self, tag: &str) -> Result<Self> {
        validate_category(tag)
            .map_err(|e| Error::invalid_key(format!("hash tag: {}", e.message())))?;
        Ok(self.rebuilt(Some(tag), self.version))
    }

    /// The hash tag, if any.
    pub fn hash_tag(&self) -> Option<&str> {
        // `{tag}` follows the id; a version suffix (`:v…`) follows it, and
        // a tag has no `:`.
        let rest = &self.text[self.id_end as usize..];
        let rest = match self.version {
            Some(_) => rest.rsplit_once(':').map_or(rest, |(tag, _)| tag),
            None => rest,
        };
        rest.strip_prefix('{')?.strip_suffix('}')
    }

    /// The key as it is rendered after the prefix and its `:` at
    /// generation 0.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// The category.
    pub fn category(&self) -> &str {
        &self.text[..self.split as usize]
    }

    /// The id, escaped as it appears in the stored key.
    pub fn escaped_id(&self) -> &str {
        &self.text[self.split as usize + 1..self.id_end as usize]
    }

    /// A key of a valid category and an escaped id.
    fn joined(category: &str, escaped_id: &str) -> Self {
        CacheKey::build(category, escaped_id, None, None)
    }

    fn build(category: &str, escaped_id: &str, tag: Option<&str>, version: Option<u32>) -> Self {
        let mut text = String::with_capacity(category.len() + escaped_id.len() + 16);
        text.push_str(category);
        text.push(':');
        text.push_str(escaped_id);
        let id_end = text.len();
        if let Some(tag) = tag {
            let _ = write!(text, "{{{tag}}}");
        }
        if let Some(v) = version {
            let _ = write!(text, ":v{v}");
        }
        let mut key = CacheKey::from_text(text, category.len(), version);
        key.id_end = index(id_end);
        key
    }

    /// A key of `text` (`{category}:{id}…`, the category `split` bytes
    /// long), its id running to the end unless the caller says otherwise.
    fn from_text(text: String, split: usize, version: Option<u32>) -> Self {
        let id_end = index(text.len());
        CacheKey {
            text: text.into_boxed_str(),
            split: index(split),
            id_end,
            version,
        }
    }

    /// This key with its tag and version replaced.
    fn rebuilt(&self, tag: Option<&str>, version: Option<u32>) -> Self {
        CacheKey::build(self.category(), self.escaped_id(), tag, version)
    }

    /// The schema version, if any.
    pub fn version(&self) -> Option<u32> {
        self.version
    }

    /// The full key as stored: `{prefix}:{category}[#g]:{id}[:v{version}]`,
    /// where `#g` is added only when the category's generation `g` is not 0
    /// (see [`Cache::invalidate_category`](crate::Cache::invalidate_category)).
    pub fn render(&self, prefix: &str, generation: u64) -> String {
        let mut out = String::with_capacity(prefix.len() + self.text.len() + 16);
        self.render_into(prefix, generation, &mut out);
        out
    }

    /// [`render`](CacheKey::render), appended to `out` (a buffer reused
    /// across calls allocates nothing).
    #[inline]
    pub(crate) fn render_into(&self, prefix: &str, generation: u64, out: &mut String) {
        if generation != 0 {
            return self.render_generation_into(prefix, generation, out);
        }
        out.reserve(prefix.len() + 1 + self.text.len());
        out.push_str(prefix);
        out.push(':');
        out.push_str(&self.text);
    }

    /// [`render_into`](CacheKey::render_into) of a generation after the
    /// first: out of line, so a read's code stays short.
    #[inline(never)]
    fn render_generation_into(&self, prefix: &str, generation: u64, out: &mut String) {
        out.reserve(prefix.len() + self.text.len() + 22);
        out.push_str(prefix);
        out.push(':');
        out.push_str(self.category());
        let _ = write!(out, "#{generation}");
        out.push_str(&self.text[self.split as usize..]);
    }
}

/// The text alone: it determines the other fields (equal keys have equal
/// texts), and a map of keys hashes one string.
impl std::hash::Hash for CacheKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheKey")
            .field("category", &self.category())
            .field("id", &self.escaped_id())
            .field("hash_tag", &self.hash_tag())
            .field("version", &self.version)
            .finish()
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A position in a key's text: a category is at most 64 bytes and an id
/// at most `MAX_KEY_LEN`.
fn index(at: usize) -> u32 {
    u32::try_from(at).unwrap_or(u32::MAX)
}

/// Checks a category name: 1 to [`MAX_CATEGORY_LEN`] bytes of ASCII letters,
/// digits, `_`, `-` and `.`.
///
/// # Errors
///
/// [`InvalidKey`](crate::ErrorKind::InvalidKey) naming what is wrong.
pub fn validate_category(category: &str) -> Result<()> {
    if category.is_empty() {
        return Err(Error::invalid_key("category is empty"));
    }
    if category.len() > MAX_CATEGORY_LEN {
        return Err(Error::invalid_key(format!(
            "category is {} bytes, the limit is {MAX_CATEGORY_LEN}",
            category.len()
        )));
    }
    if category.bytes().all(|b| NAME_BYTE[usize::from(b)]) {
        return Ok(());
    }
    let c = category.chars().find(|c| !is_name_char(*c)).unwrap_or('?');
    Err(Error::invalid_key(format!(
        "category {category:?} contains {c:?}; use ASCII letters, digits, '_', '-' and '.'"
    )))
}

/// Checks a key prefix: 1 to [`MAX_CATEGORY_LEN`] bytes of ASCII letters,
/// digits, `_`, `-`, `.`, `{` and `}` (braces make a Redis Cluster hash
/// tag).
///
/// A prefix never holds `:`, the separator: the first `:` of every key ends
/// its prefix, so the keyspaces of two caches with different prefixes can
/// never overlap, and one cache's `clear` never reaches another's keys.
///
/// # Errors
///
/// [`InvalidKey`](crate::ErrorKind::InvalidKey) naming what is wrong.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() {
        return Err(Error::invalid_key("prefix is empty"));
    }
    if prefix.len() > MAX_CATEGORY_LEN {
        return Err(Error::invalid_key(format!(
            "prefix is {} bytes, the limit is {MAX_CATEGORY_LEN}",
            prefix.len()
        )));
    }
    if let Some(c) = prefix
        .chars()
        .find(|c| !(is_name_char(*c) || matches!(c, '{' | '}')))
    {
        return Err(Error::invalid_key(format!(
            "prefix {prefix:?} contains {c:?}; use ASCII letters, digits and '_-.{{}}' \
             (':' separates the prefix from the category, so two caches' keys could collide)"
        )));
    }
    Ok(())
}

const fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// The bytes an id is stored with as they are: printable ASCII but for the
/// escaped characters. Any other byte (a control character, one of a
/// multi-byte character) takes the checked way through [`escape_id`].
const PLAIN_ID_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0x20;
    while b < 0x7f {
        table[b] = !needs_escape(b as u8 as char);
        b += 1;
    }
    table
};

/// The bytes of a category, as [`is_name_char`].
const NAME_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x80 {
        table[b] = is_name_char(b as u8 as char);
        b += 1;
    }
    table
};

/// Whether `c` is percent-encoded in an id.
const fn needs_escape(c: char) -> bool {
    matches!(c, ':' | '*' | '?' | '[' | ']' | '\\' | '{' | '}' | '%')
}

/// Percent-encodes the characters that are syntax in keys and patterns.
///
/// # Errors
///
/// [`InvalidKey`](crate::ErrorKind::InvalidKey) when `id` is empty, longer
/// than [`MAX_KEY_LEN`] or contains a control character.
pub fn escape_id(id: &str) -> Result<String> {
    if id.is_empty() {
        return Err(Error::invalid_key("id is empty"));
    }
    if id.len() > MAX_KEY_LEN {
        return Err(Error::invalid_key(format!(
            "id is {} bytes, the limit is {MAX_KEY_LEN}",
            id.len()
        )));
    }
    let mut out = String::with_capacity(id.len());
    for c in id.chars() {
        if c.is_control() {
            return Err(Error::invalid_key(format!(
                "id contains the control character {c:?}"
            )));
        }
        push_escaped(&mut out, c);
    }
    if is_hashed_id(&out) {
        // The id space of `CacheKey::hashed` is reserved: a plain id that
        // looks like a hash gets its `h` encoded, so user input can never
        // write the value served for a hashed key.
        out.replace_range(..1, "%68");
    }
    Ok(out)
}

/// Whether `id` has the shape of a [`CacheKey::hashed`] id: `h` and 32
/// lowercase hex digits.
fn is_hashed_id(id: &str) -> bool {
    id.len() == 33
        && id.starts_with('h')
        && id[1..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn push_escaped(out: &mut String, c: char) {
    if needs_escape(c) {
        let _ = write!(out, "%{:02X}", c as u32);
    } else {
        out.push(c);
    }
}

/// Turns a glob over ids into a glob over escaped ids.
///
/// `*` and `?` keep their meaning; `\x` is a literal `x`; other characters
/// are literal and escaped as ids are. A character set (`[...]`) may only
/// hold characters that ids store unescaped.
///
/// # Errors
///
/// [`InvalidKey`](crate::ErrorKind::InvalidKey) for an empty pattern, a
/// control character, or a set holding an escaped character.
pub fn escape_id_pattern(pattern: &str) -> Result<String> {
    if pattern.is_empty() {
        return Err(Error::invalid_key("pattern is empty"));
    }
    if pattern.len() > MAX_KEY_LEN {
        return Err(Error::invalid_key("pattern is too long"));
    }
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c.is_control() {
            return Err(Error::invalid_key("pattern contains a control character"));
        }
        match c {
            '*' | '?' => out.push(c),
            '\\' => match chars.next() {
                Some(lit) => push_escaped(&mut out, lit),
                None => push_escaped(&mut out, '\\'),
            },
            '[' => {
                out.push('[');
                let mut closed = false;
                for s in chars.by_ref() {
                    if s == ']' {
                        closed = true;
                        break;
                    }
                    if needs_escape(s) || s.is_control() {
                        return Err(Error::invalid_key(format!(
                            "a character set in a pattern cannot hold {s:?}"
                        )));
                    }
                    out.push(s);
                }
                if !closed {
                    return Err(Error::invalid_key("unterminated '[' in pattern"));
                }
                out.push(']');
            }
            other => push_escaped(&mut out, other),
        }
    }
    Ok(out)
}

/// The stable hash id used by [`CacheKey::hashed`].
fn stable_hash<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    let json = serde_json::to_value(value).map_err(|e| {
        Error::new(
            crate::ErrorKind::Codec,
            format!("value cannot be hashed into a key: {e}"),
        )
        .with_source(e)
    })?;
    let mut canonical = String::new();
    write_canonical(&json, &mut canonical);
    let digest = Sha256::digest(canonical.as_bytes());
    let mut id = String::with_capacity(33);
    id.push('h');
    for byte in &digest[..16] {
        let _ = write!(id, "{byte:02x}");
    }
    Ok(id)
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{glob_match, ErrorKind};

    #[test]
    fn every_character_is_kept_escaped_or_refused_as_the_checked_way_says() {
        // `new` keeps ids made of the plain bytes as they are, without the
        // checked way (`escape_id`); both must agree on every character.
        let mut chars: Vec<char> = (0u8..=0x7f).map(char::from).collect();
        chars.extend(['\u{80}', '\u{9f}', 'é', 'ß', '€', '😀']);
        for c in chars {
            for id in [c.to_string(), format!("a{c}b"), format!("{c}{c}")] {
                let key = CacheKey::new("c", &id);
                match escape_id(&id) {
                    Ok(escaped) => {
                        let key = key.unwrap_or_else(|e| panic!("{id:?}: {e}"));
                        assert_eq!(key.escaped_id(), escaped, "{id:?}");
                        assert_eq!(key.render("p", 0), format!("p:c:{escaped}"), "{id:?}");
                    }
                    Err(_) => assert_eq!(
                        key.map_err(|e| e.kind()).err(),
                        Some(ErrorKind::InvalidKey),
                        "{id:?}"
                    ),
                }
            }
        }
        for category in ["user", "a-b_c.d", "X9"] {
            assert!(validate_category(category).is_ok(), "{category}");
        }
        for category in ["a:b", "a b", "é", "a\u{0}", "a*"] {
            assert_eq!(
                validate_category(category).map_err(|e| e.kind()).err(),
                Some(ErrorKind::InvalidKey),
                "{category:?}"
            );
        }
    }

    #[test]
    fn tag_and_version_render_in_their_place_whatever_the_order_they_are_set_in() {
        let a = CacheKey::new("cart", 42)
            .unwrap()
            .with_version(2)
            .with_hash_tag("u-1")
            .unwrap();
        let b = CacheKey::new("cart", 42)
            .unwrap()
            .with_hash_tag("old")
            .unwrap()
            .with_version(1)
            .with_hash_tag("u-1")
            .unwrap()
            .with_version(2);
        for key in [&a, &b] {
            assert_eq!(key.render("shop", 0), "shop:cart:42{u-1}:v2");
            assert_eq!(key.render("shop", 7), "shop:cart#7:42{u-1}:v2");
            assert_eq!(key.to_string(), "cart:42{u-1}:v2");
            assert_eq!(
                (
                    key.category(),
                    key.escaped_id(),
                    key.hash_tag(),
                    key.version()
                ),
                ("cart", "42", Some("u-1"), Some(2))
            );
        }
        assert_eq!(a, b);
        let plain = CacheKey::new("cart", 42).unwrap();
        assert_eq!((plain.hash_tag(), plain.version()), (None, None));
        assert_eq!(plain.with_version(3).hash_tag(), None);
    }

    #[test]
    fn plain_ids_are_readable() {
        let key = CacheKey::new("user", "alice@example.com").unwrap();
        assert_eq!(key.render("app", 0), "app:user:alice@example.com");
        assert_eq!(key.render("app", 3), "app:user#3:alice@example.com");
    }

    #[test]
    fn ids_cannot_forge_or_widen() {
        let evil = CacheKey::new("user", "1:v2").unwrap();
        let good = CacheKey::new("user", 1).unwrap().with_version(2);
        assert_ne!(evil.render("app", 0), good.render("app", 0));
        let star = CacheKey::new("user", "*").unwrap().render("app", 0);
        assert!(!glob_match(&star, "app:user:42"));
        assert_eq!(star, "app:user:%2A");
        assert_eq!(
            CacheKey::new("user", "%2A").unwrap().render("app", 0),
            "app:user:%252A"
        );
    }

    #[test]
    fn invalid_keys_are_rejected() {
        for (cat, id) in [
            ("", "1".to_string()),
            ("user", String::new()),
            ("us er", "1".into()),
            ("user", "a\nb".into()),
            ("user", "x".repeat(10 * 1024)),
            ("c".repeat(65).as_str(), "1".into()),
        ] {
            let err = CacheKey::new(cat, &id).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidKey, "{cat:?} {id:?}");
        }
    }

    #[test]
    fn hashed_keys_are_stable_and_order_independent() {
        #[derive(Serialize)]
        struct Query<'a> {
            q: &'a str,
            page: u32,
            filters: std::collections::HashMap<&'a str, &'a str>,
        }
        let mut filters = std::collections::HashMap::new();
        for (k, v) in [("lang", "en"), ("sort", "new"), ("tag", "rust"), ("x", "y")] {
            filters.insert(k, v);
        }
        let key = CacheKey::hashed(
            "search",
            &Query {
                q: "cache",
                page: 2,
                filters,
            },
        )
        .unwrap();
        // Pinned: this value must never change between releases. Computed
        // independently: sha256 of {"filters":{"lang":"en","sort":"new","tag":"rust","x":"y"},"page":2,"q":"cache"}.
        assert_eq!(key.escaped_id(), "h38c9640bd1ac64ce24dcee4836577a66");
    }

    #[test]
    fn plain_ids_cannot_take_a_hashed_id() {
        let hashed = CacheKey::hashed("search", &"rust").unwrap();
        let forged = CacheKey::new("search", hashed.escaped_id()).unwrap();
        assert_ne!(forged.render("app", 0), hashed.render("app", 0));
        assert_eq!(
            forged.escaped_id(),
            format!("%68{}", &hashed.escaped_id()[1..])
        );
        // Ids that only look a little like a hash stay readable.
        for id in ["h123", "hello", "H38C9640BD1AC64CE24DCEE4836577A66"] {
            assert_eq!(CacheKey::new("search", id).unwrap().escaped_id(), id);
        }
        // The encoded form does not collide with an id that is literally
        // `%68…`: that one's `%` is encoded too.
        let literal = CacheKey::new("search", forged.escaped_id()).unwrap();
        assert_ne!(literal.escaped_id(), forged.escaped_id());
    }

    #[test]
    fn prefixes_cannot_overlap_another_caches_keyspace() {
        // `app` + `user` + `x` v2 and `app:user` + `x` v2 once rendered alike.
        let err = validate_prefix("app:user").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidKey);
        assert!(err.message().contains("':'"), "{}", err.message());
        assert!(validate_prefix("app").is_ok());
        assert!(validate_prefix("{shop}").is_ok());
    }

    #[test]
    fn hash_tags_follow_the_id_and_ids_cannot_fake_them() {
        let key = CacheKey::new("cart", 1)
            .unwrap()
            .with_hash_tag("u1")
            .unwrap()
            .with_version(3);
        assert_eq!(key.render("shop", 2), "shop:cart#2:1{u1}:v3");
        let fake = CacheKey::new("cart", "1{u1}").unwrap();
        assert_eq!(fake.render("shop", 0), "shop:cart:1%7Bu1%7D");
        assert!(CacheKey::new("cart", 1)
            .unwrap()
            .with_hash_tag("a}b")
            .is_err());
        assert!(CacheKey::new("cart", 1).unwrap().with_hash_tag("").is_err());
    }

    #[test]
    fn id_patterns_are_escaped_like_ids() {
        let p = escape_id_pattern("order:*").unwrap();
        assert_eq!(p, "order%3A*");
        let id = CacheKey::new("o", "order:17").unwrap();
        assert!(glob_match(&p, id.escaped_id()));
        assert_eq!(escape_id_pattern(r"a\*").unwrap(), "a%2A");
        assert_eq!(escape_id_pattern("[a-c]?").unwrap(), "[a-c]?");
        assert!(escape_id_pattern("[:]").is_err());
        assert!(escape_id_pattern("[ab").is_err());
    }

    #[test]
    fn accessors_and_display_show_each_part() {
        let key = CacheKey::new("cart", "a:b")
            .unwrap()
            .with_hash_tag("u1")
            .unwrap()
            .with_version(3);
        assert_eq!(key.category(), "cart");
        assert_eq!(key.escaped_id(), "a%3Ab");
        assert_eq!(key.hash_tag(), Some("u1"));
        assert_eq!(key.version(), Some(3));
        assert_eq!(key.to_string(), "cart:a%3Ab{u1}:v3");
        let plain = CacheKey::new("user", 42).unwrap();
        assert_eq!((plain.hash_tag(), plain.version()), (None, None));
        assert_eq!(plain.to_string(), "user:42");
    }

    #[test]
    fn name_and_length_limits_are_exact() {
        let max = "c".repeat(MAX_CATEGORY_LEN);
        let over = "c".repeat(MAX_CATEGORY_LEN + 1);
        assert!(validate_category(&max).is_ok());
        assert!(validate_category(&over).is_err());
        assert!(validate_category("a_b-c.D9").is_ok());
        for bad in ["", "a/b", "a:b", "a{b}", "é"] {
            assert!(validate_category(bad).is_err(), "{bad:?}");
        }
        assert!(validate_prefix(&max).is_ok());
        assert!(validate_prefix(&over).is_err());
        assert!(validate_prefix("a_b-c.D9{x}").is_ok());
        for bad in ["", "a/b", "a b", "a*"] {
            let err = validate_prefix(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidKey, "{bad:?}");
        }
        let id = "i".repeat(MAX_KEY_LEN);
        assert_eq!(escape_id(&id).unwrap(), id);
        assert!(escape_id(&"i".repeat(MAX_KEY_LEN + 1)).is_err());
        assert!(escape_id("a\u{7f}").is_err());
    }

    #[test]
    fn every_syntax_character_is_percent_encoded() {
        assert_eq!(
            escape_id(r":*?[]\{}%").unwrap(),
            "%3A%2A%3F%5B%5D%5C%7B%7D%25"
        );
        assert_eq!(escape_id("a-_.@/Z9 é").unwrap(), "a-_.@/Z9 é");
    }

    #[test]
    fn only_the_exact_hash_shape_is_reserved() {
        let hex = "0123456789abcdef0123456789abcdef";
        assert_eq!(escape_id(&format!("h{hex}")).unwrap(), format!("%68{hex}"));
        assert_eq!(
            escape_id(&format!("h{}", "f".repeat(32))).unwrap(),
            format!("%68{}", "f".repeat(32))
        );
        for id in [
            format!("x{hex}"),
            format!("h{}", &hex[1..]),
            format!("h{hex}0"),
            format!("h{}g", &hex[1..]),
            format!("h{}`", &hex[1..]),
        ] {
            assert_eq!(escape_id(&id).unwrap(), id);
        }
    }

    #[test]
    fn id_pattern_edge_cases() {
        assert!(escape_id_pattern("").is_err());
        let long = "p".repeat(MAX_KEY_LEN);
        assert_eq!(escape_id_pattern(&long).unwrap(), long);
        assert!(escape_id_pattern(&"p".repeat(MAX_KEY_LEN + 1)).is_err());
        assert!(escape_id_pattern("a\nb").is_err());
        assert!(escape_id_pattern("[a\u{1}]").is_err());
        assert_eq!(escape_id_pattern(r"a\").unwrap(), "a%5C");
        assert_eq!(escape_id_pattern(r"\:x{").unwrap(), "%3Ax%7B");
        assert_eq!(escape_id_pattern("*[^ab]?").unwrap(), "*[^ab]?");
    }

    #[test]
    fn hashed_ids_of_arrays_and_escaped_keys_are_pinned() {
        // sha256 of [1,"a",{"b":[true,null],"c":{}},[]], first 32 hex digits.
        let value = serde_json::json!([1, "a", {"c": {}, "b": [true, null]}, []]);
        let key = CacheKey::hashed("q", &value).unwrap();
        assert_eq!(key.escaped_id(), "h2efabb370b9e825287ea8b3dbb72bdcc");
        // sha256 of {"":1,"a":[2,3],"b\"":"x"}.
        let value = serde_json::json!({"b\"": "x", "a": [2, 3], "": 1});
        let key = CacheKey::hashed("q", &value).unwrap();
        assert_eq!(key.escaped_id(), "h546c48cbf839a454298566f71b7b6eef");
        assert!(CacheKey::hashed("", &1).is_err());
    }
}
