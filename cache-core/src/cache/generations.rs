//! Category generations: `invalidate_category` bumps a counter stored in
//! the backend, keys carry their category's generation, and each instance
//! caches the generation it read for `generation_refresh`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt, Shared, WeakShared};

use super::Cache;
use crate::backend::{SetMode, SetOptions};
use crate::coarse::Ticks;
use crate::codec::Codec;
use crate::error::Result;
use crate::key::{escape_id_pattern, validate_category};
use crate::stats::Stat;

impl<C: Codec> Cache<C> {
    /// Makes every key of `category` unreachable in O(1), by bumping the
    /// category's generation (stored in the backend under
    /// `{prefix}:#gen:{category}`); returns the new generation.
    ///
    /// Old entries are not deleted: they age out by their TTL. This instance
    /// sees the bump at once; other instances sharing the backend within
    /// the generation refresh interval (1 s by default; under an L1 with no
    /// backplane, generations are read from the shared tier, see
    /// [`CacheBuilder::generation_backend`](super::CacheBuilder::generation_backend)),
    /// or, with a backplane and a refresh of 0 (what `cache::open` sets up),
    /// as soon as the backplane's message arrives. If the stored
    /// generation is lost (a `clear()`, or the key evicted), the running
    /// instances that knew it raise it again, and all agree again within
    /// one refresh interval of their next call; if none knew it (all
    /// restarted meanwhile), the category counts again from 0 and entries
    /// written under a generation it reaches again are served until their
    /// TTL (forever with [`Ttl::Never`](crate::Ttl::Never)).
    ///
    /// # Errors
    ///
    /// [`InvalidKey`](crate::ErrorKind::InvalidKey) for an invalid category; the
    /// backend's errors.
    pub async fn invalidate_category(&self, category: &str) -> Result<u64> {
        self.check_open()?;
        self.callers(validate_category(category))?;
        let gen_key = self.generation_key(category);
        let started = Instant::now();
        let local = self.known_generation(category).map_or(0, |k| k.generation);
        // Until the bump is known here, the cached generation is not to be
        // trusted: if this call is dropped after the backend applied the
        // incr, the next call reads the new generation back.
        self.distrust_generation(category);
        let stored = match self.track(
            (*self.inner.generation_backend)
                .incr(&gen_key, 1, None)
                .await,
        ) {
            Ok(stored) => u64::try_from(stored).unwrap_or(0),
            Err(err) if err.is_retryable() => {
                // The backend is unreachable: this instance moves on at
                // once, and its first read of the generation once the
                // backend answers raises the stored one to it (see
                // `generation`), so the bump reaches the other instances
                // after the outage instead of being lost.
                let generation = local + 1;
                tracing::warn!(error = %err, category, "category bump deferred until the backend answers");
                self.remember_generation(category, generation, started, false);
                self.inner.counters.inc(Stat::Deletes, 1);
                return Ok(generation);
            }
            Err(err) => return Err(err),
        };
        // The stored generation was lost (evicted or cleared) if it is not
        // past the one this instance used: never go back to a generation
        // whose keys may still be alive.
        let generation = if stored <= local {
            self.raise_generation(&gen_key, stored, local + 1).await?
        } else {
            stored
        };
        self.remember_generation(category, generation, started, false);
        self.inner.counters.inc(Stat::Deletes, 1);
        Ok(generation)
    }

    /// Removes the keys of `category` whose id matches `id_pattern`, a Redis
    /// glob over ids (`*`, `?`, `[a-z]`, `\x` for a literal `x`); returns
    /// how many. This scans (`SCAN` on Redis): prefer
    /// [`invalidate_category`](Cache::invalidate_category) for a whole
    /// category.
    ///
    /// # Errors
    ///
    /// [`InvalidKey`](crate::ErrorKind::InvalidKey) for an invalid category or
    /// pattern; [`Unsupported`](crate::ErrorKind::Unsupported) when the backend has
    /// no pattern delete; the backend's errors.
    pub async fn invalidate_matching(&self, category: &str, id_pattern: &str) -> Result<u64> {
        self.check_open()?;
        self.callers(validate_category(category))?;
        let pattern = self.callers(escape_id_pattern(id_pattern))?;
        let generation = self.generation(category).await?;
        let tag = if generation == 0 {
            String::new()
        } else {
            format!("#{generation}")
        };
        let full = format!(
            "{}:{category}{tag}:{pattern}",
            crate::glob_escape(&self.inner.prefix)
        );
        // Keys with a version suffix too.
        let _write = self.inner.writes.begin_all();
        let removed = self.track((*self.inner.backend).delete_matching(&full).await)?
            + self.track(
                self.inner
                    .backend
                    .delete_matching(&format!("{full}:v*"))
                    .await,
            )?;
        self.inner.counters.inc(Stat::Deletes, removed);
        Ok(removed)
    }
    fn generation_key(&self, category: &str) -> String {
        format!("{}:#gen:{category}", self.inner.prefix)
    }

    fn known_generation(&self, category: &str) -> Option<KnownGeneration> {
        self.inner.generations.known(category)
    }

    /// Makes the next call read the generation of `category` again.
    fn distrust_generation(&self, category: &str) {
        self.inner.generations.update(|map| {
            if let Some(known) = map.get_mut(category) {
                known.distrusted = true;
            }
        });
    }

    /// Records `generation`, read (or written) by a call that started at
    /// `started`; `created` when this instance has just created the stored
    /// generation. A newer answer recorded meanwhile by a concurrent call
    /// is kept.
    fn remember_generation(
        &self,
        category: &str,
        generation: u64,
        started: Instant,
        created: bool,
    ) {
        let now = Instant::now();
        let refresh = self.inner.generation_refresh;
        self.inner.generations.update(|map| {
            let known = map.entry(category.to_owned()).or_insert(KnownGeneration {
                generation,
                read_at: started,
                created_at: None,
                distrusted: false,
            });
            if known.read_at > started && known.generation > generation {
                return;
            }
            let created_at = if created {
                Some(now)
            } else {
                known
                    .created_at
                    .filter(|at| now.duration_since(*at) < refresh)
            };
            *known = KnownGeneration {
                generation,
                read_at: started,
                created_at,
                distrusted: false,
            };
        });
    }

    /// Makes the stored generation at least `floor`, atomically (`incr`
    /// by the difference from `stored`, the value last read); returns the
    /// stored generation after it. Racing raises only go higher, which
    /// invalidates a little more, never less.
    async fn raise_generation(&self, gen_key: &str, stored: u64, floor: u64) -> Result<u64> {
        let delta = i64::try_from(floor.saturating_sub(stored)).unwrap_or(i64::MAX);
        let raised = self.track(
            (*self.inner.generation_backend)
                .incr(gen_key, delta, None)
                .await,
        )?;
        Ok(u64::try_from(raised).unwrap_or(0))
    }

    /// [`raise_generation`](Cache::raise_generation), or `None` when the
    /// backend is unreachable (or failing open): the caller then uses what
    /// this instance knows, unremembered, so the next call reads again.
    async fn try_raise(&self, gen_key: &str, stored: u64, floor: u64) -> Result<Option<u64>> {
        match self.raise_generation(gen_key, stored, floor).await {
            Ok(raised) => Ok(Some(raised)),
            Err(err) if err.is_retryable() => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// The generation of `category` keys are rendered with.
    ///
    /// Read from the backend at most once per `generation_refresh`. The
    /// stored generation wins over the one this instance knows, except when
    /// it went back (the key was cleared, or evicted and created again):
    /// then this instance raises it, so every instance converges on a
    /// generation no older than any of them used. An instance that created
    /// the stored generation itself trusts it for only
    /// [`PROBATION_TRUST`] during one refresh interval, so it sees such a
    /// raise within 50 ms: after a `clear()` or an eviction, all instances
    /// agree again within one refresh interval of their next call.
    ///
    /// Reads of one category whose trust ran out together read it once:
    /// the first starts the read and all await it (see
    /// [`Generations::join_or_start`]). The read is shared, not owned by
    /// the call that started it: whichever waiting call is polled drives
    /// it, so it finishes even if that call is dropped or no longer
    /// polled, with no task to spawn (no runtime needed, and none that
    /// must be driven while a caller blocks on the read). With a refresh
    /// of 0 each reads it itself: a read must see the bumps made before
    /// it started.
    pub(super) async fn generation(&self, category: &str) -> Result<u64> {
        if let Some(generation) = self.trusted_generation(category) {
            return Ok(generation);
        }
        if self.inner.generation_refresh.is_zero() {
            return self.read_generation(category).await;
        }
        let generations = &self.inner.generations;
        let read = generations.join_or_start(category, || {
            let cache = self.clone();
            let category = category.to_owned();
            async move { cache.read_generation(&category).await }.boxed()
        });
        let result = read.clone().await;
        generations.finish(category, &read);
        result
    }

    /// Reads `category`'s generation from the backend (see
    /// [`generation`](Cache::generation)).
    async fn read_generation(&self, category: &str) -> Result<u64> {
        let known = self.known_generation(category);
        let local = known.map_or(0, |k| k.generation);
        let gen_key = self.generation_key(category);
        let started = Instant::now();
        let stored = self
            .track((*self.inner.generation_backend).get(&gen_key).await)?
            .map(|b| std::str::from_utf8(&b).ok()?.parse::<u64>().ok());
        let (generation, created) = match stored {
            Some(Some(stored)) if stored >= local => (stored, false),
            Some(Some(stored)) => match self.try_raise(&gen_key, stored, local).await? {
                Some(raised) => (raised, false),
                None => return Ok(local),
            },
            None | Some(None) if local > 0 => match self.try_raise(&gen_key, 0, local).await? {
                Some(raised) => (raised, false),
                None => return Ok(local),
            },
            Some(None) => (0, false),
            None => {
                // Store generation 0 explicitly: a key that exists can be
                // copied into an L1 (and invalidated there by a backplane),
                // so reading it again is local instead of a round trip.
                let zero = Bytes::from_static(b"0");
                let opts = SetOptions::default().with_mode(SetMode::IfAbsent);
                match (*self.inner.generation_backend)
                    .set(&gen_key, zero, opts)
                    .await
                {
                    Ok(created) => (0, created),
                    Err(err) => {
                        tracing::debug!(error = %err, "storing generation 0 failed");
                        (0, false)
                    }
                }
            }
        };
        self.remember_generation(category, generation, started, created);
        Ok(generation)
    }
}

impl<C: Codec> Cache<C> {
    /// The generation of `category` when it needs no read from the
    /// backend: known and trusted now. Reads no lock when this thread has
    /// looked it up since the last change (see [`Generations::trusted`]).
    pub(super) fn trusted_generation(&self, category: &str) -> Option<u64> {
        self.inner
            .generations
            .trusted(category, self.inner.generation_refresh)
    }
}

/// How long an instance trusts a generation it created itself, during the
/// refresh interval after creating it (another instance may raise it).
const PROBATION_TRUST: Duration = Duration::from_millis(50);

/// The generations an instance knows, by category.
///
/// Every read of a key looks its category's generation up here, so the
/// common case takes no lock: each thread keeps a memo of what it looked
/// up (the table's `version` then, and until when the generation is
/// trusted), valid while the version is unchanged. Every change of the
/// table bumps the version, under its write lock; a memo is used only if
/// no change was made since it was taken, so it answers exactly what the
/// table would. Reading a lock, even shared, writes to it: two threads
/// reading one lock bounce its cache line between their cores.
pub(super) struct Generations {
    /// Tells this table's memos from another's (never reused, unlike an
    /// address).
    id: u64,
    version: AtomicU64,
    map: RwLock<HashMap<String, KnownGeneration>>,
    /// The reads of generations from the backend in flight, by category,
    /// with the table's version when each started. Held weakly: a read
    /// lives while a call awaits it (a read every caller dropped is gone,
    /// not left unpolled here for a later call to join).
    reads: Mutex<HashMap<String, (u64, WeakShared<Read>)>>,
}

/// A read of a generation from the backend.
type Read = BoxFuture<'static, Result<u64>>;

/// One thread's memo of one category's generation in one table.
struct Memo {
    table: u64,
    version: u64,
    category: Box<str>,
    generation: u64,
    /// A deadline on the coarse clock: a read of the precise one costs
    /// more than the rest of the lookup.
    until: Ticks,
}

/// The most memos a thread keeps; when full, it starts over.
const MEMOS: usize = 32;

thread_local! {
    static MEMOS_OF_THREAD: RefCell<Vec<Memo>> = const { RefCell::new(Vec::new()) };
}

impl Generations {
    pub(super) fn new() -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Generations {
            id: NEXT_ID.fetch_add(1, Relaxed),
            version: AtomicU64::new(0),
            map: RwLock::new(HashMap::new()),
            reads: Mutex::default(),
        }
    }

    /// Joins the read of `category`'s generation in flight, or starts one
    /// (`start` makes it), for the caller to await.
    ///
    /// Joins only a read that started since the table last changed: after
    /// an `invalidate_category` here, a read started before it could answer
    /// the generation before the bump.
    fn join_or_start(&self, category: &str, start: impl FnOnce() -> Read) -> Shared<Read> {
        let mut reads = self.reads.lock().unwrap_or_else(PoisonError::into_inner);
        let version = self.version.load(Acquire);
        let joined = reads
            .get(category)
            .filter(|(started, _)| *started == version)
            .and_then(|(_, read)| read.upgrade());
        if let Some(read) = joined {
            return read;
        }
        let read = start().shared();
        if let Some(weak) = read.downgrade() {
            reads.insert(category.to_owned(), (version, weak));
        }
        read
    }

    /// Takes `read`, done, out of the table of reads in flight (unless a
    /// later read took its place): a call arriving after its answer starts
    /// a read of its own rather than take this one.
    fn finish(&self, category: &str, read: &Shared<Read>) {
        let mut reads = self.reads.lock().unwrap_or_else(PoisonError::into_inner);
        let current = reads.get(category).and_then(|(_, weak)| weak.upgrade());
        if current.is_some_and(|current| current.ptr_eq(read)) {
            reads.remove(category);
        }
    }

    fn known(&self, category: &str) -> Option<KnownGeneration> {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(category)
            .copied()
    }

    /// Changes the table (and its version, so every memo is retaken).
    fn update(&self, change: impl FnOnce(&mut HashMap<String, KnownGeneration>)) {
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        change(&mut map);
        self.version.fetch_add(1, Release);
    }

    /// The generation of `category` if it is known and trusted now.
    ///
    /// Inlined into every read: a lookup of this thread's memo. The table
    /// is read out of line ([`trusted_from_table`](Self::trusted_from_table)),
    /// so the read's own code stays short.
    #[inline]
    pub(super) fn trusted(&self, category: &str, refresh: Duration) -> Option<u64> {
        // Read before the precise clock below: the memo's deadline counts
        // from it.
        let now = Ticks::now();
        let version = self.version.load(Acquire);
        let memo = MEMOS_OF_THREAD.with(|memos| {
            let memos = memos.try_borrow().ok()?;
            let memo = memos
                .iter()
                .find(|m| m.table == self.id && *m.category == *category)?;
            (memo.version == version).then_some((memo.generation, memo.until))
        });
        if let Some((generation, until)) = memo {
            return (now < until).then_some(generation);
        }
        self.trusted_from_table(category, refresh, now)
    }

    /// [`trusted`](Self::trusted) when this thread has no valid memo of
    /// `category`: reads the table and memoizes what it read.
    #[cold]
    #[inline(never)]
    fn trusted_from_table(&self, category: &str, refresh: Duration, now: Ticks) -> Option<u64> {
        let (known, version) = {
            let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
            (map.get(category).copied()?, self.version.load(Relaxed))
        };
        let precise = Instant::now();
        let until = known.trusted_until(refresh, precise)?;
        // No memo when the trust left is within the coarse clock's slack:
        // the next reads take this way.
        let Some(until) = now.deadline(until.saturating_duration_since(precise)) else {
            return Some(known.generation);
        };
        MEMOS_OF_THREAD.with(|memos| {
            let Ok(mut memos) = memos.try_borrow_mut() else {
                return;
            };
            memos.retain(|m| !(m.table == self.id && *m.category == *category));
            if memos.len() >= MEMOS {
                memos.clear();
            }
            memos.push(Memo {
                table: self.id,
                version,
                category: category.into(),
                generation: known.generation,
                until,
            });
        });
        Some(known.generation)
    }
}

/// What an instance knows of a category's generation.
#[derive(Debug, Clone, Copy)]
pub(super) struct KnownGeneration {
    generation: u64,
    /// When the call that read it started.
    read_at: Instant,
    /// When this instance created the stored generation, if lately.
    created_at: Option<Instant>,
    /// A bump of it may have been applied without this instance knowing.
    distrusted: bool,
}

impl KnownGeneration {
    /// Until when it is trusted, if it is at `now`: for `refresh` after it
    /// was read (for [`PROBATION_TRUST`] while this instance's creation of
    /// it is recent), never once distrusted.
    fn trusted_until(&self, refresh: Duration, now: Instant) -> Option<Instant> {
        if self.distrusted {
            return None;
        }
        let trust = match self.created_at {
            Some(at) if now.saturating_duration_since(at) < refresh => PROBATION_TRUST.min(refresh),
            _ => refresh,
        };
        let until = self.read_at.checked_add(trust)?;
        (now < until).then_some(until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::task::Poll;

    /// A read of `generation` that answers once `open` is set.
    fn read_when(open: &Arc<AtomicBool>, generation: u64) -> impl FnOnce() -> Read {
        let open = Arc::clone(open);
        move || {
            futures_util::future::poll_fn(move |cx| {
                if open.load(Relaxed) {
                    return Poll::Ready(Ok(generation));
                }
                cx.waker().wake_by_ref();
                Poll::Pending
            })
            .boxed()
        }
    }

    fn never() -> Read {
        futures_util::future::pending().boxed()
    }

    #[test]
    fn a_read_is_joined_until_the_table_changes_and_then_replaced() {
        let generations = Generations::new();
        let first = generations.join_or_start("user", never);
        assert!(generations.join_or_start("user", never).ptr_eq(&first));
        assert!(!generations.join_or_start("order", never).ptr_eq(&first));
        // A change of the table (an invalidation here) since the first
        // read started: a later call reads again rather than join it.
        generations.update(|_| {});
        let second = generations.join_or_start("user", never);
        assert!(!second.ptr_eq(&first));
        // The first read ending leaves the second in the table.
        generations.finish("user", &first);
        assert!(generations.join_or_start("user", never).ptr_eq(&second));
        generations.finish("user", &second);
        assert!(!generations.join_or_start("user", never).ptr_eq(&second));
    }

    /// A read every caller dropped is gone: the next call starts one
    /// rather than join a read nobody drives.
    #[test]
    fn a_read_nobody_awaits_is_not_joined() {
        let generations = Generations::new();
        let first = generations.join_or_start("user", never);
        let weak = first.downgrade().unwrap();
        drop(first);
        let second = generations.join_or_start("user", never);
        assert!(weak.upgrade().is_none());
        assert!(generations.join_or_start("user", never).ptr_eq(&second));
    }

    /// Every waiter gets the answer, and whichever is polled drives the
    /// read: here the one that joined last, alone.
    #[tokio::test]
    async fn the_answer_reaches_every_waiter() {
        let generations = Generations::new();
        let open = Arc::new(AtomicBool::new(false));
        let starter = generations.join_or_start("user", read_when(&open, 3));
        let waiters: Vec<_> = (0..3)
            .map(|_| generations.join_or_start("user", read_when(&open, 9)))
            .collect();
        open.store(true, Relaxed);
        for waiter in waiters.into_iter().rev() {
            assert_eq!(waiter.await.unwrap(), 3);
        }
        assert_eq!(starter.await.unwrap(), 3);
    }
}
