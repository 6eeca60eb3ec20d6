//! The one error type of the cache.

use std::fmt;
use std::sync::Arc;

/// A `Result` whose error is the cache's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, as a caller needs to know it to decide what to do.
///
/// The list grows (`#[non_exhaustive]`): match the kinds you handle and treat
/// the rest as [`ErrorKind::Backend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The backend could not be reached: refused, reset, DNS, auth, closed.
    /// Retryable.
    Connection,
    /// The backend did not answer in time. Retryable.
    Timeout,
    /// A value could not be encoded or decoded by the codec.
    Codec,
    /// A key (or key component, or pattern) is empty, too long or contains
    /// characters that are not allowed.
    InvalidKey,
    /// A value cannot be stored or used: larger than the backend accepts, or
    /// not an integer where one is needed (`incr`), or an overflow.
    InvalidValue,
    /// The configuration is invalid, or names a backend that is not
    /// compiled in.
    Config,
    /// The backend does not support this operation (see its
    /// [`Capabilities`](crate::Capabilities)).
    Unsupported,
    /// The loader passed to `get_or_set` failed; its error is the `source()`.
    Loader,
    /// The cache or backend was closed with `close()`.
    Closed,
    /// The backend answered with an error that is not one of the above.
    Backend,
}

impl ErrorKind {
    /// A short, stable, snake_case name, fit for a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connection => "connection",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Codec => "codec",
            ErrorKind::InvalidKey => "invalid_key",
            ErrorKind::InvalidValue => "invalid_value",
            ErrorKind::Config => "config",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Loader => "loader",
            ErrorKind::Closed => "closed",
            ErrorKind::Backend => "backend",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type Source = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// The error of every cache operation.
///
/// It carries a [`kind`](Error::kind), the backend and operation it came from
/// (when known), a message, and the underlying cause as
/// [`source()`](std::error::Error::source).
///
/// `Display` prints the kind, backend, operation and message, and is
/// enough to act on by itself, since many logs print nothing else. Where
/// the cause is another library's error whose text is the useful detail
/// (a decoding's reason, a parser's, a `get_or_set` loader's error), the
/// message ends with that text, less what would put data in a log: a
/// decoding's reason has the stored values it quotes replaced by `…`
/// (in `Debug` too), a configuration's has its URLs' passwords redacted.
/// The Redis backend's messages say in their own words what happened
/// (refused, timed out, wrong password).
/// `source()` is the cause itself, to downcast or to print as a chain
/// (a chain printer such as `anyhow`'s `{:#}` then shows such a text
/// twice).
///
/// `Error` is `Clone` (the cause is shared), so one failure can be handed to
/// every waiter of a single-flight load.
///
/// # Examples
///
/// ```
/// use cache::{Error, ErrorKind};
///
/// let err = Error::new(ErrorKind::Timeout, "no answer within 250ms")
///     .with_backend("redis")
///     .with_operation("get");
/// assert!(err.is_retryable());
/// assert_eq!(err.to_string(), "timeout in redis get: no answer within 250ms");
/// ```
#[derive(Clone)]
pub struct Error(Box<Inner>);

/// An error's fields, boxed: every `Result` of the crate carries an
/// `Error`, and one pointer keeps the `Ok` path's values small (a
/// `Result<Option<Bytes>>` is 40 bytes, not 88) where they are moved on
/// every call; errors are rare, and their allocation is beside the cost
/// of formatting their message.
#[derive(Clone)]
struct Inner {
    kind: ErrorKind,
    message: String,
    backend: Option<&'static str>,
    operation: Option<&'static str>,
    source: Option<Source>,
}

impl Error {
    /// An error of `kind` with a message saying what happened.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error(Box::new(Inner {
            kind,
            message: message.into(),
            backend: None,
            operation: None,
            source: None,
        }))
    }

    /// Sets the backend the error came from (e.g. `"memory"`, `"redis"`).
    #[must_use]
    pub fn with_backend(mut self, backend: &'static str) -> Self {
        self.0.backend = Some(backend);
        self
    }

    /// Sets the operation that failed (e.g. `"get"`).
    #[must_use]
    pub fn with_operation(mut self, operation: &'static str) -> Self {
        self.0.operation = Some(operation);
        self
    }

    /// Sets the underlying cause, returned by `source()`.
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.0.source = Some(Arc::new(source));
        self
    }

    /// Sets the underlying cause from a boxed error.
    #[must_use]
    pub fn with_boxed_source(mut self, source: Box<dyn std::error::Error + Send + Sync>) -> Self {
        self.0.source = Some(Arc::from(source));
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// This error's own message (without kind, backend or cause).
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The backend the error came from, when known.
    pub fn backend(&self) -> Option<&'static str> {
        self.0.backend
    }

    /// The operation that failed, when known.
    pub fn operation(&self) -> Option<&'static str> {
        self.0.operation
    }

    /// Whether trying the same call again may succeed: true for
    /// [`Connection`](ErrorKind::Connection) and
    /// [`Timeout`](ErrorKind::Timeout).
    pub fn is_retryable(&self) -> bool {
        matches!(self.0.kind, ErrorKind::Connection | ErrorKind::Timeout)
    }

    /// Shorthand for an [`InvalidKey`](ErrorKind::InvalidKey) error.
    pub fn invalid_key(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidKey, message)
    }

    /// Shorthand for an [`Unsupported`](ErrorKind::Unsupported) error naming
    /// the operation.
    pub fn unsupported(backend: &'static str, operation: &'static str) -> Self {
        Error::new(
            ErrorKind::Unsupported,
            "operation not supported by this backend",
        )
        .with_backend(backend)
        .with_operation(operation)
    }

    /// Fills in backend and operation where they are not set yet.
    #[must_use]
    pub fn context(mut self, backend: &'static str, operation: &'static str) -> Self {
        self.0.backend.get_or_insert(backend);
        self.0.operation.get_or_insert(operation);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.kind)?;
        match (self.0.backend, self.0.operation) {
            (Some(b), Some(o)) => write!(f, " in {b} {o}")?,
            (Some(b), None) => write!(f, " in {b}")?,
            (None, Some(o)) => write!(f, " in {o}")?,
            (None, None) => {}
        }
        write!(f, ": {}", self.0.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.0.kind)
            .field("message", &self.0.message);
        if let Some(b) = self.0.backend {
            d.field("backend", &b);
        }
        if let Some(o) = self.0.operation {
            d.field("operation", &o);
        }
        if let Some(s) = &self.0.source {
            // A decoder's text quotes the stored data: as in the message,
            // not its values (`source()` itself has them).
            let text = s.to_string();
            match self.0.kind {
                ErrorKind::Codec => d.field("source", &without_stored_values(&text)),
                _ => d.field("source", &text),
            };
        }
        d.finish()
    }
}

/// `text`, a decoder's message, with the stored values it quotes replaced
/// by `…`: each double-quoted string (serde writes an unexpected string as
/// `string "…"`, escaping `"` and `\` in it), and each backticked value
/// before the word `expected` (serde writes an unexpected number,
/// character or variant as ``integer `…` ``), except a field's name
/// (``unknown field `nme` ``), which is the type's, not the data's. What
/// follows `expected` is the type's too. An unclosed quote hides the rest.
pub(crate) fn without_stored_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find(['"', '`']) {
        out.push_str(&rest[..open]);
        let quote = &rest[open..=open];
        let body = &rest[open + 1..];
        let end = if quote == "\"" {
            closing_quote(body)
        } else {
            body.find('`')
        };
        let keep = quote == "`" && (out.contains("expected") || out.ends_with("field "));
        out.push_str(quote);
        let Some(end) = end else {
            out.push('…');
            return out;
        };
        out.push_str(if keep { &body[..end] } else { "…" });
        out.push_str(quote);
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Where the string `body` (after its opening `"`) ends: its first `"`
/// not escaped by a `\`.
fn closing_quote(body: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i),
            _ => {}
        }
    }
    None
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// `url` with its passwords replaced by `***`, for messages and `Debug`:
/// the password of the user info (`user:password@host`, also before a
/// cluster's or Sentinels' host list) and the value of a `pass` or
/// `password` query key (as in `redis+unix:///run/redis.sock?pass=…`).
///
/// # Examples
///
/// ```
/// use cache::redact_url;
///
/// assert_eq!(redact_url("redis://app:s3cret@cache:6379/0"), "redis://app:***@cache:6379/0");
/// assert_eq!(redact_url("redis+unix:///run/r.sock?pass=s3cret"), "redis+unix:///run/r.sock?pass=***");
/// assert_eq!(redact_url("memory://?max_entries=10"), "memory://?max_entries=10");
/// ```
pub fn redact_url(url: &str) -> String {
    let (mut out, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    // Everything before the last `@` is user info, even with a `/`, `?` or
    // `#` in an unescaped password: hiding a path that holds an `@` is
    // harmless, printing a password is not.
    let after = match rest.rsplit_once('@') {
        Some((userinfo, after)) => {
            match userinfo.split_once(':') {
                Some((user, _password)) => out.push_str(&format!("{user}:***")),
                None => out.push_str(userinfo),
            }
            out.push('@');
            after
        }
        None => rest,
    };
    let (before_fragment, fragment) = match after.split_once('#') {
        Some((before, fragment)) => (before, Some(fragment)),
        None => (after, None),
    };
    match before_fragment.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            for (i, pair) in query.split('&').enumerate() {
                if i > 0 {
                    out.push('&');
                }
                match pair.split_once('=') {
                    Some((key @ ("pass" | "password"), _)) => {
                        out.push_str(key);
                        out.push_str("=***");
                    }
                    _ => out.push_str(pair),
                }
            }
        }
        None => out.push_str(before_fragment),
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn redact_url_hides_every_password() {
        let cases = [
            ("redis://u:p@h:1/0", "redis://u:***@h:1/0"),
            ("redis://:p@h", "redis://:***@h"),
            ("redis://u@h", "redis://u@h"),
            ("redis://h:1/0", "redis://h:1/0"),
            ("redis://u:p:q@h", "redis://u:***@h"),
            ("redis://u:p@q@h", "redis://u:***@h"),
            (
                "redis+cluster://:pw@h1:1,h2:2",
                "redis+cluster://:***@h1:1,h2:2",
            ),
            (
                "redis+unix:///s.sock?db=1&pass=p&user=u",
                "redis+unix:///s.sock?db=1&pass=***&user=u",
            ),
            (
                "unix:///s.sock?password=p#f",
                "unix:///s.sock?password=***#f",
            ),
            (
                "redis://h/0?protocol=resp3#x@y:z",
                "redis://h/0?protocol=resp3#x@y:z",
            ),
            ("redis://h?passes=1", "redis://h?passes=1"),
            ("not a url", "not a url"),
        ];
        for (url, redacted) in cases {
            assert_eq!(redact_url(url), redacted, "{url}");
        }
    }

    #[test]
    fn the_stored_values_a_decoder_quotes_are_left_out() {
        for (text, shown) in [
            (
                r#"invalid type: string "a@b.c", expected u64 at line 1 column 9"#,
                r#"invalid type: string "…", expected u64 at line 1 column 9"#,
            ),
            (
                r#"string "say \"hi\" \\", then "x""#,
                r#"string "…", then "…""#,
            ),
            (
                "invalid value: integer `4111111111111111`, expected u8",
                "invalid value: integer `…`, expected u8",
            ),
            (
                "unknown variant `ada@x.io`, expected one of `Admin`, `User`",
                "unknown variant `…`, expected one of `Admin`, `User`",
            ),
            (
                "unknown field `nme`, expected `id` or `name`",
                "unknown field `nme`, expected `id` or `name`",
            ),
            ("missing field `id`", "missing field `id`"),
            (r#"unterminated "abc"#, r#"unterminated "…"#),
            ("character `é` and `", "character `…` and `…"),
            ("no quotes", "no quotes"),
        ] {
            assert_eq!(without_stored_values(text), shown, "{text}");
        }
    }

    #[test]
    fn display_is_own_message_and_source_is_the_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = Error::new(ErrorKind::Connection, "cannot connect")
            .with_backend("redis")
            .with_source(io);
        assert_eq!(err.to_string(), "connection in redis: cannot connect");
        assert_eq!(err.source().unwrap().to_string(), "refused");
        assert!(err.is_retryable());
        assert!(!Error::invalid_key("empty").is_retryable());
    }

    #[test]
    fn an_error_is_one_pointer_so_results_stay_small() {
        assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
        assert_eq!(std::mem::size_of::<Result<Option<bytes::Bytes>>>(), 40);
        let err = Error::new(ErrorKind::Timeout, "slow")
            .with_backend("redis")
            .with_operation("get");
        let copy = err.clone();
        assert_eq!(copy.to_string(), "timeout in redis get: slow");
        assert_eq!(copy.kind(), ErrorKind::Timeout);
    }

    #[test]
    fn context_does_not_overwrite() {
        let err = Error::new(ErrorKind::Backend, "x")
            .with_operation("incr")
            .context("memory", "get");
        assert_eq!(err.operation(), Some("incr"));
        assert_eq!(err.backend(), Some("memory"));
    }
}
