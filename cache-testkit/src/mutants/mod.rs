//! The mutant gallery: backends with one realistic bug each, which the
//! conformance suite must fail.
//!
//! A conformance suite is only as good as the bugs it catches. Each
//! [`Mutant`] is the [`Reference`] backend (which passes the whole suite)
//! with one method done wrong, the way backends really get it wrong: a
//! namespace not escaped, a TTL in the wrong unit, a count of keys asked
//! for rather than removed, a check-then-set that is not atomic, an expired
//! entry still visible to one operation. `cache-testkit/tests/mutants.rs`
//! runs the suite on every mutant and checks that it fails, naming the case
//! that catches it; and that every case catches at least one mutant (or
//! says why none can exist), so no case is dead weight.
//!
//! Adding a case to the suite? Add the mutant it catches here.
//!
//! # Examples
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use cache_testkit::mutants::Mutant;
//!
//! let report = cache_testkit::run_all_concurrently(|| async { Mutant::ClearUnescaped.backend() }, 16).await;
//! assert!(report.failed("clear_namespace_is_literal"), "{report}");
//! # }
//! ```

mod reference;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use cache_core::{
    check_key, check_namespace, glob_match, CacheBackend, Capabilities, Error, ErrorKind, Health,
    HealthStatus, KeyTtl, Result, SetMode, SetOptions, MAX_KEY_LEN,
};

pub use reference::Reference;
use reference::{expiry, not_an_integer, parse_redis_int, Entry};

macro_rules! gallery {
    ($($(#[doc = $doc:literal])+ $variant:ident => $name:literal,)+) => {
        /// One realistic bug, on top of the [`Reference`] backend. The docs of
        /// each variant say what is wrong.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Mutant {
            $($(#[doc = $doc])+ $variant,)+
        }

        impl Mutant {
            /// Every mutant of the gallery.
            pub const ALL: &'static [Mutant] = &[$(Mutant::$variant),+];

            /// A snake_case name for the bug (the mutant's test is
            /// `mutant_<name>`).
            pub fn name(self) -> &'static str {
                match self {
                    $(Mutant::$variant => $name,)+
                }
            }
        }
    };
}

gallery! {
    // ------------------------------------------------------------ keys
    /// `expire` returns `Ok(false)` for an empty key instead of checking it.
    ExpireAcceptsEmptyKey => "expire_accepts_empty_key",
    /// `delete_many` skips empty keys instead of refusing them.
    DeleteManySkipsEmptyKeys => "delete_many_skips_empty_keys",
    /// `exists` checks that the key is not empty, but not its length.
    ExistsAcceptsOversizeKey => "exists_accepts_oversize_key",
    /// `ttl` checks that the key is not empty, but not its length.
    TtlAcceptsOversizeKey => "ttl_accepts_oversize_key",
    /// `get` allows one byte more than `max_key_len` (`>` vs `>=`).
    GetAllowsOneByteTooMany => "get_allows_one_byte_too_many",
    /// The capabilities declare keys of 2048 bytes; the checks allow 1024.
    CapabilitiesOverstateKeyLen => "capabilities_overstate_key_len",
    /// `set` and `get` turn non-ASCII characters into `?` (as if the key
    /// were a file name), so distinct keys collide.
    NonAsciiKeysCollide => "non_ascii_keys_collide",
    /// `scan` answers an empty pattern with no keys instead of `InvalidKey`.
    ScanAcceptsEmptyPattern => "scan_accepts_empty_pattern",
    /// `delete_matching` refuses an empty pattern but not an overlong one.
    DeleteMatchingAcceptsLongPatterns => "delete_matching_accepts_long_patterns",
    /// `scan` limits patterns to `max_key_len` bytes, refusing the escaped
    /// form of a valid key.
    ScanLimitsPatternsToKeyLen => "scan_limits_patterns_to_key_len",

    // ------------------------------------------------------------ values
    /// `get` reads an empty value as a miss.
    EmptyValueIsMiss => "empty_value_is_miss",
    /// `set` stores values as text (`String::from_utf8_lossy`), mangling
    /// bytes that are not UTF-8.
    ValuesStoredAsText => "values_stored_as_text",
    /// `set` keeps only the first 512 KiB of a value.
    SetTruncatesAt512Kib => "set_truncates_at_512_kib",
    /// `set` does not check the value's size.
    OversizeValueAccepted => "oversize_value_accepted",
    /// `set` refuses a value of exactly `max_value_size` (`>=` vs `>`).
    ValueLimitOffByOne => "value_limit_off_by_one",
    /// `set` writes a value in two steps (first half, then the rest), so a
    /// concurrent reader can see half a value.
    SetWritesInTwoSteps => "set_writes_in_two_steps",

    // ------------------------------------------------------------ reads and writes
    /// `get` of a missing key is an error instead of `Ok(None)`.
    MissIsAnError => "miss_is_an_error",
    /// `get_now` answers a miss for every key (a fast path that forgot to
    /// look), while `get` reads them.
    GetNowAlwaysMisses => "get_now_always_misses",
    /// `get_now_joined` reads its second part alone (a fast path that
    /// dropped the first: a `Cache`'s prefix), while `get` reads the
    /// joined key.
    GetNowJoinedDropsTheHead => "get_now_joined_drops_the_head",
    /// `set` returns `false` even when it wrote (a reply misread).
    SetReportsFalse => "set_reports_false",
    /// `set` never overwrites a live value (memcached's `add`, not `set`).
    SetNeverOverwrites => "set_never_overwrites",
    /// `set` without a TTL keeps the TTL of the value it replaces.
    SetKeepsOldTtl => "set_keeps_old_ttl",
    /// `get_many` returns the hits first, then the misses.
    GetManyHitsFirst => "get_many_hits_first",
    /// `get_many` of no keys sends `MGET` with no arguments and fails.
    GetManyOfNoKeysFails => "get_many_of_no_keys_fails",
    /// `set_many` drops the last item (an off-by-one loop).
    SetManyDropsLast => "set_many_drops_last",
    /// `set_many` ignores its TTL.
    SetManyIgnoresTtl => "set_many_ignores_ttl",
    /// `set_many` with a zero TTL stores the values without a TTL.
    SetManyZeroTtlStoresForever => "set_many_zero_ttl_stores_forever",
    /// `IfAbsent` is a check, then a separate write: two writers can both
    /// win.
    SetIfAbsentCheckThenSet => "set_if_absent_check_then_set",
    /// `IfAbsent` is ignored: the write always happens.
    SetIfAbsentOverwrites => "set_if_absent_overwrites",
    /// `IfAbsent` returns the opposite of whether it wrote.
    SetIfAbsentReplyInverted => "set_if_absent_reply_inverted",
    /// `IfAbsent` treats an expired entry still in the map as present.
    SetIfAbsentSeesExpired => "set_if_absent_sees_expired",
    /// A zero TTL stores the value without a TTL.
    ZeroTtlStoresForever => "zero_ttl_stores_forever",
    /// A zero-TTL `set` removes the value but returns `true`.
    ZeroTtlSetReturnsTrue => "zero_ttl_set_returns_true",
    /// A zero TTL removes the value in `IfAbsent` mode too.
    ZeroTtlRemovesInEveryMode => "zero_ttl_removes_in_every_mode",
    /// `delete` returns `true` whether or not the key existed.
    DeleteAlwaysTrue => "delete_always_true",
    /// `delete` returns `false` even when it removed the key.
    DeleteReportsFalse => "delete_reports_false",
    /// `delete_many` returns how many keys it was given.
    DeleteManyCountsKeysGiven => "delete_many_counts_keys_given",
    /// `exists` reads `EXISTS`'s count as "more than one".
    ExistsNeedsTwo => "exists_needs_two",

    // ------------------------------------------------------------ TTLs and expiry
    /// `set` reads a TTL's milliseconds as seconds.
    SetTtlMillisAsSeconds => "set_ttl_millis_as_seconds",
    /// `set` sends whole seconds (`EX`, at least 1) although the backend
    /// declares `sub_second_ttl`.
    SetTtlInWholeSeconds => "set_ttl_in_whole_seconds",
    /// `set` without a TTL applies a default of 100 ms.
    MissingTtlBecomesDefault => "missing_ttl_becomes_default",
    /// `ttl` reports whole seconds, rounded down.
    TtlFloorsToSeconds => "ttl_floors_to_seconds",
    /// `ttl` reports the TTL the key was written with (kept beside it by
    /// `set`), not what is left.
    TtlReportsOriginal => "ttl_reports_original",
    /// `ttl` of a missing key is `Persistent` (Redis's -2 read as -1).
    TtlOfMissingIsPersistent => "ttl_of_missing_is_persistent",
    /// `ttl` of a key without TTL is `Missing` (any negative `PTTL` read as
    /// missing).
    TtlOfPersistentIsMissing => "ttl_of_persistent_is_missing",
    /// `exists` does not check expiry.
    ExistsIgnoresExpiry => "exists_ignores_expiry",
    /// `ttl` does not check expiry (an expired key reports `Expires(0)`).
    TtlIgnoresExpiry => "ttl_ignores_expiry",
    /// `get_many` does not check expiry.
    GetManyIgnoresExpiry => "get_many_ignores_expiry",
    /// `scan` lists expired keys.
    ScanListsExpired => "scan_lists_expired",
    /// `delete_matching` counts the expired keys it removes.
    DeleteMatchingCountsExpired => "delete_matching_counts_expired",
    /// `expire` reads a TTL's milliseconds as seconds.
    ExpireMillisAsSeconds => "expire_millis_as_seconds",
    /// `expire` returns `true` whether or not the key existed.
    ExpireMissingReturnsTrue => "expire_missing_returns_true",
    /// `expire(None)` answers like Redis's `PERSIST`: `false` for a key
    /// that has no TTL.
    ExpireNoneAnswersLikePersist => "expire_none_answers_like_persist",
    /// `expire` with a zero TTL removes the TTL instead of the key.
    ExpireZeroRemovesTtl => "expire_zero_removes_ttl",

    // ------------------------------------------------------------ incr
    /// `incr` stores counters as 8 bytes of binary (and the backend
    /// declares `atomic_incr = false`, which does not excuse it).
    IncrStoresBinary => "incr_stores_binary",
    /// `incr` creates a key without the TTL it was given.
    IncrCreatesWithoutTtl => "incr_creates_without_ttl",
    /// `incr` of an existing key gives it the TTL passed.
    IncrResetsTtl => "incr_resets_ttl",
    /// `incr` adds the absolute value of a negative delta.
    IncrAddsAbsDelta => "incr_adds_abs_delta",
    /// `incr` parses with `str::parse`, which accepts `+1`, `01` and `-0`.
    IncrLenientParse => "incr_lenient_parse",
    /// `incr` wraps around on overflow.
    IncrWraps => "incr_wraps",
    /// `incr` reads, then writes in a separate step (declaring
    /// `atomic_incr`): concurrent increments are lost.
    IncrReadsThenWrites => "incr_reads_then_writes",

    // ------------------------------------------------------------ patterns and clear
    /// `scan` lists the first key twice (as a `SCAN` that is not deduped).
    ScanRepeatsKeys => "scan_repeats_keys",
    /// `delete_matching`'s `*` does not cross `:` (a path-style glob).
    StarStopsAtColons => "star_stops_at_colons",
    /// `delete_matching`'s `?` matches any run of characters, like `*`.
    QuestionMarkMatchesAnyRun => "question_mark_matches_any_run",
    /// `delete_matching` ignores `^` in a character class.
    ClassNegationIgnored => "class_negation_ignored",
    /// `delete_matching` drops backslashes: escaped metacharacters match as
    /// metacharacters.
    DeleteMatchingIgnoresEscapes => "delete_matching_ignores_escapes",
    /// `delete_matching` matches case-insensitively (an SQL `LIKE`).
    MatchingIgnoresCase => "matching_ignores_case",
    /// `clear(ns)` deletes the pattern `ns*` without escaping `ns`.
    ClearUnescaped => "clear_unescaped",
    /// `clear` returns 1 when it removed anything (the number of batches).
    ClearCountsBatches => "clear_counts_batches",
    /// `clear("")` clears everything instead of refusing.
    ClearEmptyNamespaceClearsAll => "clear_empty_namespace_clears_all",
    /// The capabilities say no `pattern_delete`, yet the pattern operations
    /// run instead of failing with `Unsupported`.
    HidesPatternDelete => "hides_pattern_delete",

    // ------------------------------------------------------------ the rest
    /// `health` reports `Degraded` while the backend holds no data.
    HealthDegradedWhenEmpty => "health_degraded_when_empty",
    /// `name` is empty.
    EmptyName => "empty_name",
}

impl Mutant {
    /// A fresh backend with this bug.
    pub fn backend(self) -> Arc<dyn CacheBackend> {
        Arc::new(Mutated {
            bug: self,
            inner: Reference::new(),
            given_ttls: std::sync::Mutex::default(),
        })
    }
}

/// The [`Reference`] backend with one bug.
struct Mutated {
    bug: Mutant,
    inner: Reference,
    /// The TTL each key was last written with ([`Mutant::TtlReportsOriginal`]).
    given_ttls: std::sync::Mutex<std::collections::HashMap<String, Duration>>,
}

fn oversize_key_check(key: &str, op: &'static str) -> Result<()> {
    check_key(key, MAX_KEY_LEN).map_err(|e| e.context("mutant", op))
}

fn empty_key_check(key: &str, op: &'static str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid_key("key is empty").context("mutant", op));
    }
    Ok(())
}

/// `key` with every non-ASCII character replaced by `?`.
fn ascii_only(key: &str) -> String {
    key.chars()
        .map(|c| if c.is_ascii() { c } else { '?' })
        .collect()
}

/// `pattern` with each unescaped `?` replaced by `*`.
fn question_marks_as_stars(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut escaped = false;
    for c in pattern.chars() {
        out.push(if c == '?' && !escaped { '*' } else { c });
        escaped = c == '\\' && !escaped;
    }
    out
}

impl Mutated {
    /// `delete_matching` with its own matcher, for the pattern mutants.
    fn delete_where(&self, pattern: &str, matches: impl Fn(&str) -> bool) -> Result<u64> {
        Reference::check_pattern(pattern, "delete_matching")?;
        let now = Instant::now();
        let mut removed = 0;
        self.inner.lock().retain(|k, e| {
            if !matches(k) {
                return true;
            }
            removed += u64::from(e.live(now));
            false
        });
        Ok(removed)
    }
}

#[async_trait]
impl CacheBackend for Mutated {
    fn name(&self) -> &'static str {
        match self.bug {
            Mutant::EmptyName => "",
            _ => "mutant",
        }
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = self.inner.capabilities();
        match self.bug {
            Mutant::IncrStoresBinary => caps.atomic_incr = false,
            Mutant::CapabilitiesOverstateKeyLen => caps.max_key_len = 2 * MAX_KEY_LEN,
            Mutant::HidesPatternDelete => caps.pattern_delete = false,
            _ => {}
        }
        caps
    }

    fn get_now(&self, _key: &str) -> Option<Result<Option<Bytes>>> {
        match self.bug {
            Mutant::GetNowAlwaysMisses => Some(Ok(None)),
            _ => None,
        }
    }

    fn get_now_joined(&self, _head: &str, tail: &str) -> Option<Result<Option<Bytes>>> {
        match self.bug {
            Mutant::GetNowJoinedDropsTheHead => {
                Some(Ok(Reference::live_value(&self.inner.lock(), tail)))
            }
            _ => None,
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        match self.bug {
            Mutant::MissIsAnError => match self.inner.get(key).await? {
                Some(v) => Ok(Some(v)),
                None => Err(Error::new(ErrorKind::Backend, "not found").context("mutant", "get")),
            },
            Mutant::EmptyValueIsMiss => Ok(self.inner.get(key).await?.filter(|v| !v.is_empty())),
            Mutant::GetAllowsOneByteTooMany => {
                check_key(key, MAX_KEY_LEN + 1).map_err(|e| e.context("mutant", "get"))?;
                Ok(Reference::live_value(&self.inner.lock(), key))
            }
            Mutant::NonAsciiKeysCollide => self.inner.get(&ascii_only(key)).await,
            _ => self.inner.get(key).await,
        }
    }

    async fn set(&self, key: &str, value: Bytes, opts: SetOptions) -> Result<bool> {
        let zero = opts.ttl.is_some_and(|d| d.is_zero());
        match self.bug {
            Mutant::NonAsciiKeysCollide => self.inner.set(&ascii_only(key), value, opts).await,
            Mutant::ValuesStoredAsText => {
                let text = String::from_utf8_lossy(&value).into_owned();
                self.inner.set(key, Bytes::from(text), opts).await
            }
            Mutant::SetTruncatesAt512Kib => {
                let keep = value.len().min(512 << 10);
                self.inner.set(key, value.slice(..keep), opts).await
            }
            Mutant::OversizeValueAccepted if !zero => {
                oversize_key_check(key, "set")?;
                let mut map = self.inner.lock();
                if opts.mode == SetMode::IfAbsent && Reference::live_value(&map, key).is_some() {
                    return Ok(false);
                }
                map.insert(key.to_owned(), Entry::new(value, opts.ttl));
                Ok(true)
            }
            Mutant::ValueLimitOffByOne if value.len() >= Reference::MAX_VALUE_SIZE => {
                Err(Error::new(ErrorKind::InvalidValue, "value too large").context("mutant", "set"))
            }
            Mutant::SetWritesInTwoSteps if opts.mode == SetMode::Always && !zero => {
                oversize_key_check(key, "set")?;
                Reference::check_value(&value, "set")?;
                let half = value.len() / 2;
                self.inner
                    .lock()
                    .insert(key.to_owned(), Entry::new(value.slice(..half), opts.ttl));
                tokio::task::yield_now().await;
                let mut map = self.inner.lock();
                let entry = map
                    .entry(key.to_owned())
                    .or_insert_with(|| Entry::new(Bytes::new(), opts.ttl));
                let mut whole = entry.value.to_vec();
                whole.extend_from_slice(&value[half..]);
                entry.value = Bytes::from(whole);
                Ok(true)
            }
            Mutant::SetReportsFalse => {
                self.inner.set(key, value, opts).await?;
                Ok(false)
            }
            Mutant::SetNeverOverwrites if opts.mode == SetMode::Always => {
                let nx = opts.with_mode(SetMode::IfAbsent);
                self.inner.set(key, value, nx).await
            }
            Mutant::SetKeepsOldTtl if opts.ttl.is_none() => {
                let old = {
                    let map = self.inner.lock();
                    let now = Instant::now();
                    map.get(key)
                        .filter(|e| e.live(now))
                        .and_then(|e| e.expires_at)
                };
                let wrote = self.inner.set(key, value, opts).await?;
                if let (true, Some(at)) = (wrote, old) {
                    if let Some(e) = self.inner.lock().get_mut(key) {
                        e.expires_at = Some(at);
                    }
                }
                Ok(wrote)
            }
            Mutant::SetIfAbsentCheckThenSet if opts.mode == SetMode::IfAbsent && !zero => {
                if self.inner.exists(key).await? {
                    return Ok(false);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                let always = opts.with_mode(SetMode::Always);
                self.inner.set(key, value, always).await
            }
            Mutant::SetIfAbsentOverwrites if opts.mode == SetMode::IfAbsent => {
                self.inner
                    .set(key, value, opts.with_mode(SetMode::Always))
                    .await
            }
            Mutant::SetIfAbsentReplyInverted if opts.mode == SetMode::IfAbsent && !zero => {
                Ok(!self.inner.set(key, value, opts).await?)
            }
            Mutant::SetIfAbsentSeesExpired if opts.mode == SetMode::IfAbsent => {
                if self.inner.lock().contains_key(key) {
                    oversize_key_check(key, "set")?;
                    return Ok(false);
                }
                self.inner.set(key, value, opts).await
            }
            Mutant::ZeroTtlStoresForever if zero => {
                self.inner.set(key, value, opts.with_ttl(None)).await
            }
            Mutant::ZeroTtlSetReturnsTrue if zero => {
                self.inner.set(key, value, opts).await?;
                Ok(true)
            }
            Mutant::ZeroTtlRemovesInEveryMode if zero => {
                self.inner.delete(key).await?;
                Ok(false)
            }
            Mutant::SetTtlMillisAsSeconds => {
                let ttl = opts
                    .ttl
                    .map(|d| Duration::from_secs(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)));
                self.inner.set(key, value, opts.with_ttl(ttl)).await
            }
            Mutant::SetTtlInWholeSeconds if !zero => {
                let ttl = opts.ttl.map(|d| Duration::from_secs(d.as_secs().max(1)));
                self.inner.set(key, value, opts.with_ttl(ttl)).await
            }
            Mutant::TtlReportsOriginal => {
                if let (Some(ttl), Ok(mut given)) = (opts.ttl, self.given_ttls.lock()) {
                    given.insert(key.to_owned(), ttl);
                }
                self.inner.set(key, value, opts).await
            }
            Mutant::MissingTtlBecomesDefault if opts.ttl.is_none() => {
                let ttl = Some(Duration::from_millis(100));
                self.inner.set(key, value, opts.with_ttl(ttl)).await
            }
            _ => self.inner.set(key, value, opts).await,
        }
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        match self.bug {
            Mutant::DeleteAlwaysTrue => {
                self.inner.delete(key).await?;
                Ok(true)
            }
            Mutant::DeleteReportsFalse => {
                self.inner.delete(key).await?;
                Ok(false)
            }
            _ => self.inner.delete(key).await,
        }
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        match self.bug {
            Mutant::ExistsAcceptsOversizeKey => {
                empty_key_check(key, "exists")?;
                Ok(Reference::live_value(&self.inner.lock(), key).is_some())
            }
            Mutant::ExistsIgnoresExpiry => {
                oversize_key_check(key, "exists")?;
                Ok(self.inner.lock().contains_key(key))
            }
            Mutant::ExistsNeedsTwo => {
                let count = u64::from(self.inner.exists(key).await?);
                Ok(count > 1)
            }
            _ => self.inner.exists(key).await,
        }
    }

    async fn ttl(&self, key: &str) -> Result<KeyTtl> {
        match self.bug {
            Mutant::TtlAcceptsOversizeKey => {
                empty_key_check(key, "ttl")?;
                if self.inner.lock().contains_key(key) {
                    return self.inner.ttl(key).await;
                }
                Ok(KeyTtl::Missing)
            }
            Mutant::TtlIgnoresExpiry => {
                oversize_key_check(key, "ttl")?;
                let now = Instant::now();
                Ok(match self.inner.lock().get(key) {
                    None => KeyTtl::Missing,
                    Some(e) => match e.expires_at {
                        None => KeyTtl::Persistent,
                        Some(at) => KeyTtl::Expires(at.saturating_duration_since(now)),
                    },
                })
            }
            Mutant::TtlFloorsToSeconds => Ok(match self.inner.ttl(key).await? {
                KeyTtl::Expires(d) => KeyTtl::Expires(Duration::from_secs(d.as_secs())),
                other => other,
            }),
            Mutant::TtlReportsOriginal => Ok(match self.inner.ttl(key).await? {
                KeyTtl::Expires(d) => {
                    let given = self
                        .given_ttls
                        .lock()
                        .ok()
                        .and_then(|t| t.get(key).copied());
                    KeyTtl::Expires(given.unwrap_or(d))
                }
                other => other,
            }),
            Mutant::TtlOfMissingIsPersistent => Ok(match self.inner.ttl(key).await? {
                KeyTtl::Missing => KeyTtl::Persistent,
                other => other,
            }),
            Mutant::TtlOfPersistentIsMissing => Ok(match self.inner.ttl(key).await? {
                KeyTtl::Persistent => KeyTtl::Missing,
                other => other,
            }),
            _ => self.inner.ttl(key).await,
        }
    }

    async fn expire(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
        match self.bug {
            Mutant::ExpireAcceptsEmptyKey if key.is_empty() => Ok(false),
            Mutant::ExpireMillisAsSeconds => {
                let ttl = ttl
                    .map(|d| Duration::from_secs(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)));
                self.inner.expire(key, ttl).await
            }
            Mutant::ExpireMissingReturnsTrue => {
                self.inner.expire(key, ttl).await?;
                Ok(true)
            }
            Mutant::ExpireNoneAnswersLikePersist if ttl.is_none() => {
                oversize_key_check(key, "expire")?;
                let now = Instant::now();
                match self.inner.lock().get_mut(key) {
                    Some(e) if e.live(now) && e.expires_at.is_some() => {
                        e.expires_at = None;
                        Ok(true)
                    }
                    _ => Ok(false),
                }
            }
            Mutant::ExpireZeroRemovesTtl if ttl.is_some_and(|d| d.is_zero()) => {
                self.inner.expire(key, None).await
            }
            _ => self.inner.expire(key, ttl).await,
        }
    }

    async fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64> {
        let now = Instant::now();
        match self.bug {
            Mutant::IncrStoresBinary => {
                oversize_key_check(key, "incr")?;
                let mut map = self.inner.lock();
                match map.get_mut(key) {
                    Some(e) if e.live(now) => {
                        let bytes: [u8; 8] = e.value[..]
                            .try_into()
                            .map_err(|_| not_an_integer("not a counter"))?;
                        let next = i64::from_be_bytes(bytes)
                            .checked_add(delta)
                            .ok_or_else(|| not_an_integer("overflow"))?;
                        e.value = Bytes::copy_from_slice(&next.to_be_bytes());
                        Ok(next)
                    }
                    _ => {
                        let value = Bytes::copy_from_slice(&delta.to_be_bytes());
                        map.insert(key.to_owned(), Entry::new(value, ttl));
                        Ok(delta)
                    }
                }
            }
            Mutant::IncrCreatesWithoutTtl => self.inner.incr(key, delta, None).await,
            Mutant::IncrResetsTtl => {
                let n = self.inner.incr(key, delta, ttl).await?;
                if let Some(e) = self.inner.lock().get_mut(key) {
                    e.expires_at = expiry(ttl);
                }
                Ok(n)
            }
            Mutant::IncrAddsAbsDelta => self.inner.incr(key, delta.saturating_abs(), ttl).await,
            Mutant::IncrLenientParse | Mutant::IncrWraps => {
                oversize_key_check(key, "incr")?;
                let lenient = self.bug == Mutant::IncrLenientParse;
                let mut map = self.inner.lock();
                match map.get_mut(key) {
                    Some(e) if e.live(now) => {
                        let current = if lenient {
                            std::str::from_utf8(&e.value)
                                .ok()
                                .and_then(|s| s.parse::<i64>().ok())
                        } else {
                            parse_redis_int(&e.value)
                        }
                        .ok_or_else(|| not_an_integer("not an integer"))?;
                        let next = if lenient {
                            current
                                .checked_add(delta)
                                .ok_or_else(|| not_an_integer("overflow"))?
                        } else {
                            current.wrapping_add(delta)
                        };
                        e.value = Bytes::from(next.to_string());
                        Ok(next)
                    }
                    _ => {
                        let value = Bytes::from(delta.to_string());
                        map.insert(key.to_owned(), Entry::new(value, ttl));
                        Ok(delta)
                    }
                }
            }
            Mutant::IncrReadsThenWrites => {
                oversize_key_check(key, "incr")?;
                let current = {
                    let map = self.inner.lock();
                    map.get(key).filter(|e| e.live(now)).cloned()
                };
                tokio::task::yield_now().await;
                let (value, expires_at) = match current {
                    Some(e) => (
                        parse_redis_int(&e.value)
                            .ok_or_else(|| not_an_integer("not an integer"))?,
                        e.expires_at,
                    ),
                    None => (0, expiry(ttl)),
                };
                let next = value
                    .checked_add(delta)
                    .ok_or_else(|| not_an_integer("overflow"))?;
                self.inner.lock().insert(
                    key.to_owned(),
                    Entry {
                        value: Bytes::from(next.to_string()),
                        expires_at,
                    },
                );
                Ok(next)
            }
            _ => self.inner.incr(key, delta, ttl).await,
        }
    }

    async fn health(&self) -> Result<Health> {
        match self.bug {
            Mutant::HealthDegradedWhenEmpty if self.inner.lock().is_empty() => {
                Ok(Health::new(HealthStatus::Degraded, Duration::ZERO))
            }
            _ => self.inner.health().await,
        }
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        match self.bug {
            Mutant::GetManyHitsFirst => {
                let got = self.inner.get_many(keys).await?;
                let (mut hits, misses): (Vec<_>, Vec<_>) =
                    got.into_iter().partition(Option::is_some);
                hits.extend(misses);
                Ok(hits)
            }
            Mutant::GetManyOfNoKeysFails if keys.is_empty() => Err(Error::new(
                ErrorKind::Backend,
                "ERR wrong number of arguments for 'mget' command",
            )
            .context("mutant", "get_many")),
            Mutant::GetManyIgnoresExpiry => {
                for key in keys {
                    oversize_key_check(key, "get_many")?;
                }
                let map = self.inner.lock();
                Ok(keys
                    .iter()
                    .map(|k| map.get(*k).map(|e| e.value.clone()))
                    .collect())
            }
            _ => self.inner.get_many(keys).await,
        }
    }

    async fn set_many(&self, items: &[(&str, Bytes)], ttl: Option<Duration>) -> Result<()> {
        match self.bug {
            Mutant::SetManyDropsLast => {
                let keep = items.len().saturating_sub(1);
                self.inner.set_many(&items[..keep], ttl).await
            }
            Mutant::SetManyIgnoresTtl => self.inner.set_many(items, None).await,
            Mutant::SetManyZeroTtlStoresForever if ttl.is_some_and(|d| d.is_zero()) => {
                self.inner.set_many(items, None).await
            }
            _ => self.inner.set_many(items, ttl).await,
        }
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        match self.bug {
            Mutant::DeleteManySkipsEmptyKeys => {
                let keys: Vec<&str> = keys.iter().copied().filter(|k| !k.is_empty()).collect();
                self.inner.delete_many(&keys).await
            }
            Mutant::DeleteManyCountsKeysGiven => {
                self.inner.delete_many(keys).await?;
                Ok(keys.len() as u64)
            }
            _ => self.inner.delete_many(keys).await,
        }
    }

    async fn scan(&self, pattern: &str) -> Result<Vec<String>> {
        match self.bug {
            Mutant::ScanAcceptsEmptyPattern if pattern.is_empty() => Ok(Vec::new()),
            Mutant::ScanLimitsPatternsToKeyLen if pattern.len() > MAX_KEY_LEN => {
                Err(Error::invalid_key("pattern too long").context("mutant", "scan"))
            }
            Mutant::ScanListsExpired => {
                Reference::check_pattern(pattern, "scan")?;
                let mut keys: Vec<String> = self
                    .inner
                    .lock()
                    .keys()
                    .filter(|k| glob_match(pattern, k))
                    .cloned()
                    .collect();
                keys.sort_unstable();
                Ok(keys)
            }
            Mutant::ScanRepeatsKeys => {
                let mut keys = self.inner.scan(pattern).await?;
                if let Some(first) = keys.first().cloned() {
                    keys.push(first);
                }
                Ok(keys)
            }
            _ => self.inner.scan(pattern).await,
        }
    }

    async fn delete_matching(&self, pattern: &str) -> Result<u64> {
        match self.bug {
            Mutant::DeleteMatchingAcceptsLongPatterns if !pattern.is_empty() => {
                let mut map = self.inner.lock();
                let keys = Reference::matching(&map, pattern);
                Ok(keys
                    .iter()
                    .map(|k| u64::from(Reference::remove(&mut map, k)))
                    .sum())
            }
            Mutant::DeleteMatchingCountsExpired => {
                Reference::check_pattern(pattern, "delete_matching")?;
                let mut map = self.inner.lock();
                let before = map.len();
                map.retain(|k, _| !glob_match(pattern, k));
                Ok((before - map.len()) as u64)
            }
            Mutant::StarStopsAtColons => self.delete_where(pattern, |k| {
                glob_match(pattern, k) && k.matches(':').count() == pattern.matches(':').count()
            }),
            Mutant::QuestionMarkMatchesAnyRun => {
                let loose = question_marks_as_stars(pattern);
                self.delete_where(pattern, |k| glob_match(&loose, k))
            }
            Mutant::ClassNegationIgnored => {
                let loose = pattern.replace("[^", "[");
                self.delete_where(pattern, |k| glob_match(&loose, k))
            }
            Mutant::DeleteMatchingIgnoresEscapes => {
                let loose = pattern.replace('\\', "");
                self.delete_where(pattern, |k| glob_match(&loose, k))
            }
            Mutant::MatchingIgnoresCase => {
                let lower = pattern.to_lowercase();
                self.delete_where(pattern, |k| glob_match(&lower, &k.to_lowercase()))
            }
            _ => self.inner.delete_matching(pattern).await,
        }
    }

    async fn clear(&self, namespace: &str) -> Result<u64> {
        match self.bug {
            Mutant::ClearUnescaped => {
                check_namespace(namespace).map_err(|e| e.context("mutant", "clear"))?;
                self.inner.delete_matching(&format!("{namespace}*")).await
            }
            Mutant::ClearCountsBatches => Ok(u64::from(self.inner.clear(namespace).await? > 0)),
            Mutant::ClearEmptyNamespaceClearsAll if namespace.is_empty() => {
                let mut map = self.inner.lock();
                let removed = map.len() as u64;
                map.clear();
                Ok(removed)
            }
            _ => self.inner.clear(namespace).await,
        }
    }
}
