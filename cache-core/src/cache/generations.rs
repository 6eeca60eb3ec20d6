//! Category generations: `invalidate_category` bumps a counter stored in
//! the backend, keys carry their category's generation, and each instance
//! caches the generation it read for `generation_refresh`.

use std::sync::PoisonError;
use std::time::Instant;

use bytes::Bytes;

use super::Cache;
use crate::backend::{SetMode, SetOptions};
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
    /// the generation refresh interval (1 s by default).
    ///
    /// # Errors
    ///
    /// [`InvalidKey`](crate::ErrorKind::InvalidKey) for an invalid category; the
    /// backend's errors.
    pub async fn invalidate_category(&self, category: &str) -> Result<u64> {
        self.check_open()?;
        validate_category(category)?;
        let gen_key = self.generation_key(category);
        let local = self.cached_generation(category).map_or(0, |(g, _)| g);
        let stored = self.track((*self.inner.backend).incr(&gen_key, 1, None).await)?;
        let mut generation = u64::try_from(stored).unwrap_or(0);
        if generation <= local {
            // The stored generation was lost (evicted or cleared): never go
            // back to a generation whose keys may still be alive.
            generation = local + 1;
            let bytes = Bytes::from(generation.to_string());
            self.track(
                self.inner
                    .backend
                    .set(&gen_key, bytes, SetOptions::default())
                    .await,
            )?;
        }
        self.remember_generation(category, generation);
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
        validate_category(category)?;
        let pattern = escape_id_pattern(id_pattern)?;
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

    fn cached_generation(&self, category: &str) -> Option<(u64, Instant)> {
        self.inner
            .generations
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(category)
            .copied()
    }

    fn remember_generation(&self, category: &str, generation: u64) {
        let mut map = self
            .inner
            .generations
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let entry = map
            .entry(category.to_owned())
            .or_insert((0, Instant::now()));
        *entry = (entry.0.max(generation), Instant::now());
    }

    pub(super) async fn generation(&self, category: &str) -> Result<u64> {
        let cached = self.cached_generation(category);
        if let Some((generation, at)) = cached {
            if at.elapsed() < self.inner.generation_refresh {
                return Ok(generation);
            }
        }
        let gen_key = self.generation_key(category);
        let stored = self.track((*self.inner.backend).get(&gen_key).await)?;
        if stored.is_none() {
            // Store generation 0 explicitly: a key that exists can be copied
            // into an L1 (and invalidated there by a backplane), so reading
            // it again is local instead of a round trip per call.
            let zero = Bytes::from_static(b"0");
            let opts = SetOptions::default().with_mode(SetMode::IfAbsent);
            if let Err(err) = (*self.inner.backend).set(&gen_key, zero, opts).await {
                tracing::debug!(error = %err, "storing generation 0 failed");
            }
        }
        let stored = stored
            .and_then(|b| std::str::from_utf8(&b).ok()?.parse::<u64>().ok())
            .unwrap_or(0);
        self.remember_generation(category, stored);
        Ok(stored.max(cached.map_or(0, |(g, _)| g)))
    }
}
