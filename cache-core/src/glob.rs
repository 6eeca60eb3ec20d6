//! Redis-compatible glob matching, for backends that match keys themselves.

/// Whether `text` matches the Redis glob `pattern`, byte for byte as Redis's
/// `stringmatchlen` decides it (the rules `SCAN MATCH`, `KEYS` and
/// `delete_matching` use):
///
/// - `*` any run of bytes (also none), `?` exactly one byte;
/// - `[abc]` one of the set, `[^abc]` none of it, `[a-z]` a range (a reversed
///   range `[z-a]` is the same range), `\x` inside a set is a literal `x`;
/// - `\x` outside a set is a literal `x`;
/// - an unterminated `[` matches as if the set ended at the pattern's end.
///
/// Matching is case-sensitive and on bytes, not characters: `?` matches one
/// byte of a multi-byte UTF-8 character.
///
/// # Examples
///
/// ```
/// use cache::glob_match;
///
/// assert!(glob_match("user:*", "user:42"));
/// assert!(glob_match("h[ae]llo", "hello"));
/// assert!(!glob_match("h[^e]llo", "hello"));
/// assert!(glob_match(r"a\*b", "a*b"));
/// assert!(!glob_match(r"a\*b", "axb"));
/// ```
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let mut skip_longer = false;
    match_impl(pattern.as_bytes(), text.as_bytes(), &mut skip_longer, 0)
}

/// Byte at `i`, or 0 past the end (the C original reads the terminating NUL).
fn at(p: &[u8], i: usize) -> u8 {
    p.get(i).copied().unwrap_or(0)
}

fn match_impl(pattern: &[u8], string: &[u8], skip_longer: &mut bool, nesting: u32) -> bool {
    // Same protection against abusive patterns as Redis.
    if nesting > 1000 {
        return false;
    }
    let (mut p, mut s) = (0usize, 0usize);
    while p < pattern.len() && s < string.len() {
        match pattern[p] {
            b'*' => {
                while p + 1 < pattern.len() && pattern[p + 1] == b'*' {
                    p += 1;
                }
                if p + 1 == pattern.len() {
                    return true;
                }
                while s < string.len() {
                    if match_impl(&pattern[p + 1..], &string[s..], skip_longer, nesting + 1) {
                        return true;
                    }
                    if *skip_longer {
                        return false;
                    }
                    s += 1;
                }
                *skip_longer = true;
                return false;
            }
            b'?' => s += 1,
            b'[' => {
                p += 1;
                let not = at(pattern, p) == b'^';
                if not {
                    p += 1;
                }
                let c = string[s];
                let mut matched = false;
                loop {
                    if at(pattern, p) == b'\\' && pattern.len() - p >= 2 {
                        p += 1;
                        if pattern[p] == c {
                            matched = true;
                        }
                    } else if at(pattern, p) == b']' {
                        break;
                    } else if p >= pattern.len() {
                        // Unterminated set: step back so the advance below
                        // lands exactly on the end.
                        p -= 1;
                        break;
                    } else if pattern.len() - p >= 3 && pattern[p + 1] == b'-' {
                        let (mut start, mut end) = (pattern[p], pattern[p + 2]);
                        if start > end {
                            std::mem::swap(&mut start, &mut end);
                        }
                        p += 2;
                        if c >= start && c <= end {
                            matched = true;
                        }
                    } else if pattern[p] == c {
                        matched = true;
                    }
                    p += 1;
                }
                if not {
                    matched = !matched;
                }
                if !matched {
                    return false;
                }
                s += 1;
            }
            b'\\' => {
                if pattern.len() - p >= 2 {
                    p += 1;
                }
                if pattern[p] != string[s] {
                    return false;
                }
                s += 1;
            }
            other => {
                if other != string[s] {
                    return false;
                }
                s += 1;
            }
        }
        p += 1;
        if s == string.len() {
            while at(pattern, p) == b'*' {
                p += 1;
            }
            break;
        }
    }
    p >= pattern.len() && s == string.len()
}

/// Escapes every glob metacharacter (`*`, `?`, `[`, `]`, `\`) in `literal`,
/// so the result, used as a pattern, matches exactly `literal`.
///
/// # Examples
///
/// ```
/// use cache::{glob_escape, glob_match};
///
/// let pattern = format!("{}*", glob_escape("app[1]:"));
/// assert!(glob_match(&pattern, "app[1]:user:42"));
/// assert!(!glob_match(&pattern, "app1:user:42"));
/// ```
pub fn glob_escape(literal: &str) -> String {
    let mut out = String::with_capacity(literal.len() + 4);
    for ch in literal.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_and_questions() {
        // Like Redis, an empty text only matches an empty pattern.
        assert!(!glob_match("*", ""));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("a*", "a"));
        assert!(glob_match("a*c", "abbbc"));
        assert!(!glob_match("a*c", "abbb"));
        assert!(glob_match("a**c", "ac"));
        assert!(glob_match("?", "x"));
        assert!(!glob_match("?", ""));
        assert!(!glob_match("?", "xy"));
        assert!(glob_match("*a*b*", "xxaxxbxx"));
        assert!(!glob_match("", "a"));
        assert!(glob_match("", ""));
    }

    #[test]
    fn classes() {
        assert!(glob_match("[abc]", "b"));
        assert!(!glob_match("[abc]", "d"));
        assert!(glob_match("[^abc]", "d"));
        assert!(!glob_match("[^abc]", "a"));
        assert!(glob_match("[a-c]x", "bx"));
        assert!(glob_match("[c-a]x", "bx"));
        assert!(!glob_match("[a-c]x", "dx"));
        assert!(glob_match(r"[\]]", "]"));
        assert!(glob_match(r"[\-]", "-"));
        // As in Redis, `a-]` reads as the range a..']', so the set is unterminated.
        assert!(!glob_match("[a-]", "-"));
        // unterminated set: the set runs to the end of the pattern
        assert!(glob_match("[ab", "a"));
        assert!(!glob_match("[ab", "c"));
    }

    #[test]
    fn escapes() {
        assert!(glob_match(r"\*", "*"));
        assert!(!glob_match(r"\*", "x"));
        assert!(glob_match(r"\?x", "?x"));
        assert!(glob_match(r"a\\b", r"a\b"));
        assert!(glob_match(r"a\", r"a\"));
        for lit in ["a*b", "q?[x]", r"back\slash", "plain"] {
            assert!(glob_match(&glob_escape(lit), lit), "{lit}");
        }
        assert!(!glob_match(&glob_escape("a*"), "abc"));
    }

    #[test]
    fn abusive_patterns_terminate() {
        let pattern = "a*".repeat(40) + "b";
        let text = "a".repeat(60);
        assert!(!glob_match(&pattern, &text));
    }

    #[test]
    fn range_ends_are_inclusive() {
        for (text, hit) in [
            ("`", false),
            ("a", true),
            ("b", true),
            ("c", true),
            ("d", false),
        ] {
            assert_eq!(glob_match("[a-c]", text), hit, "{text}");
            assert_eq!(glob_match("[c-a]", text), hit, "{text}");
            assert_eq!(glob_match("[^a-c]", text), !hit, "{text}");
        }
        // A range that ends the pattern, in an unterminated set.
        assert!(glob_match("[a-c", "b"));
        assert!(!glob_match("[a-c", "d"));
        assert!(glob_match("x[ab", "xb"));
        assert!(!glob_match("x[ab", "xbb"));
        // The `^` of a negated set is not a member of it, nor is the `[`.
        assert!(glob_match("[^a]", "^"));
        assert!(glob_match("[^a]", "["));
        assert!(!glob_match("[^a]", "a"));
    }

    /// A range needs three bytes left in the pattern (`a-c`), wherever the
    /// set starts: `[a-` is a set of `a` and `-`, and a range after a
    /// prefix is still a range.
    #[test]
    fn ranges_need_three_bytes_left() {
        assert!(glob_match("[a-", "a"));
        assert!(glob_match("[a-", "-"));
        assert!(!glob_match("[a-", "b"));
        assert!(glob_match("xx[a-c]", "xxb"));
        assert!(!glob_match("xx[a-c]", "xx-"));
        // After a range the set goes on at the byte after its end.
        assert!(glob_match("[abc-e]x", "dx"));
        assert!(glob_match("[abc-e]x", "bx"));
        assert!(!glob_match("[abc-e]x", "fx"));
    }

    #[test]
    fn escapes_at_the_end_of_a_set() {
        // `\]` escapes the `]`: the set is unterminated and holds `]`.
        assert!(glob_match(r"[\]", "]"));
        assert!(!glob_match(r"[\]", r"\"));
        // A lone `\` at the end of the pattern is a literal backslash.
        assert!(glob_match(r"[\", r"\"));
        assert!(!glob_match(r"[\", "x"));
        assert!(glob_match(r"\", r"\"));
        assert!(!glob_match(r"\", "x"));
    }

    #[test]
    fn stars_then_more_pattern() {
        assert!(glob_match("a*b*", "ab"));
        assert!(glob_match("a***", "a"));
        assert!(glob_match("*?", "x"));
        assert!(!glob_match("*?", ""));
        assert!(glob_match("*b", "aab"));
        assert!(!glob_match("*b", "aba"));
        assert!(glob_match("a*b?d", "axxbcd"));
        assert!(!glob_match("ab", "a"));
        assert!(!glob_match("a", "ab"));
    }

    #[test]
    fn nesting_limit_is_1000_stars() {
        let text = "a".repeat(1001);
        assert!(glob_match(&"*a".repeat(1000), &text[..1000]));
        assert!(!glob_match(&"*a".repeat(1001), &text));
        // A run of stars is one star: it costs one level, not one per star.
        assert!(glob_match(&("*".repeat(1001) + "a"), "a"));
    }

    #[test]
    fn escape_covers_every_metacharacter() {
        assert_eq!(glob_escape(r"a*b?c[d]e\f"), r"a\*b\?c\[d\]e\\f");
        assert_eq!(glob_escape("plain:é"), "plain:é");
    }
}
