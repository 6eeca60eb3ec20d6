//! Time to live: per write ([`Ttl`]) and per category ([`TtlPolicy`]).

use std::collections::HashMap;
use std::time::Duration;

/// How long a written value lives.
///
/// A zero duration means "do not store": the write removes any existing
/// value instead. (Durations cannot be negative; configuration that takes
/// signed seconds maps zero and negative numbers to `After(Duration::ZERO)`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ttl {
    /// The TTL the cache's [`TtlPolicy`] gives the key's category.
    #[default]
    Default,
    /// The value never expires (it may still be evicted).
    Never,
    /// The value expires after this long.
    After(Duration),
}

impl Ttl {
    /// `Ttl::After` of `secs` seconds.
    pub fn secs(secs: u64) -> Self {
        Ttl::After(Duration::from_secs(secs))
    }

    /// `Ttl::After` of `ms` milliseconds.
    pub fn millis(ms: u64) -> Self {
        Ttl::After(Duration::from_millis(ms))
    }

    /// A TTL from signed seconds, as configuration files write it: a
    /// positive number is `After`, zero or negative means "do not store".
    pub fn from_signed_secs(secs: i64) -> Self {
        Ttl::After(Duration::from_secs(secs.max(0).unsigned_abs()))
    }

    /// The concrete expiry: `None` for never, `Some(d)` otherwise, looking
    /// up `Default` in `policy` for `category`.
    pub fn resolve(self, policy: &dyn TtlPolicy, category: &str) -> Option<Duration> {
        match self {
            Ttl::Default => policy.ttl_for(category),
            Ttl::Never => None,
            Ttl::After(d) => Some(d),
        }
    }
}

impl From<Duration> for Ttl {
    fn from(d: Duration) -> Self {
        Ttl::After(d)
    }
}

/// Decides the TTL of values written with [`Ttl::Default`], by category.
///
/// Modelled on moka's `Expiry`: a method returning `Option<Duration>`,
/// `None` meaning "never expires". Implement it for policies of your own
/// (e.g. a TTL read from a feature flag).
///
/// # Examples
///
/// ```
/// use cache::{CategoryTtl, TtlPolicy};
/// use std::time::Duration;
///
/// let policy = CategoryTtl::new(Some(Duration::from_secs(60)))
///     .with_category("rates", Some(Duration::from_secs(300)))
///     .with_category("config", None);
/// assert_eq!(policy.ttl_for("rates"), Some(Duration::from_secs(300)));
/// assert_eq!(policy.ttl_for("config"), None);
/// assert_eq!(policy.ttl_for("other"), Some(Duration::from_secs(60)));
/// ```
pub trait TtlPolicy: Send + Sync + 'static {
    /// The TTL for a value of `category` written with [`Ttl::Default`];
    /// `None` for never.
    fn ttl_for(&self, category: &str) -> Option<Duration>;
}

/// The standard [`TtlPolicy`]: a default TTL, overrides per category, and an
/// optional jitter that spreads expiries so keys written together do not all
/// expire (and reload) together.
#[derive(Debug, Clone, Default)]
pub struct CategoryTtl {
    default: Option<Duration>,
    categories: HashMap<String, Option<Duration>>,
    jitter: f64,
}

impl CategoryTtl {
    /// A policy whose categories all get `default` (`None`: never expire).
    pub fn new(default: Option<Duration>) -> Self {
        CategoryTtl {
            default,
            categories: HashMap::new(),
            jitter: 0.0,
        }
    }

    /// Gives `category` its own TTL.
    #[must_use]
    pub fn with_category(mut self, category: impl Into<String>, ttl: Option<Duration>) -> Self {
        self.categories.insert(category.into(), ttl);
        self
    }

    /// Spreads each TTL uniformly over `ttl * (1 ± fraction)`; `fraction`
    /// is clamped to `0.0..=0.5`. A zero TTL stays zero.
    #[must_use]
    pub fn with_jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_finite() {
            fraction.clamp(0.0, 0.5)
        } else {
            0.0
        };
        self
    }

    /// The TTL for `category` before jitter.
    pub fn base_ttl(&self, category: &str) -> Option<Duration> {
        self.categories
            .get(category)
            .copied()
            .unwrap_or(self.default)
    }
}

impl TtlPolicy for CategoryTtl {
    fn ttl_for(&self, category: &str) -> Option<Duration> {
        let base = self.base_ttl(category)?;
        if self.jitter == 0.0 || base.is_zero() {
            return Some(base);
        }
        let factor = 1.0 + self.jitter * (fastrand::f64() * 2.0 - 1.0);
        // `mul_f64` panics when the product does not fit a `Duration`; a
        // TTL that long is "forever" for any cache, so keep the base then.
        let jittered = Duration::try_from_secs_f64(base.as_secs_f64() * factor).unwrap_or(base);
        Some(jittered.max(Duration::from_millis(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_bounds_and_varies() {
        let policy = CategoryTtl::new(Some(Duration::from_secs(100))).with_jitter(0.1);
        let samples: Vec<_> = (0..200).map(|_| policy.ttl_for("x").unwrap()).collect();
        assert!(samples
            .iter()
            .all(|d| *d >= Duration::from_secs(90) && *d <= Duration::from_secs(110)));
        let distinct: std::collections::HashSet<_> = samples.iter().collect();
        assert!(distinct.len() > 100);
    }

    #[test]
    fn jitter_on_a_very_long_ttl_does_not_panic() {
        let policy = CategoryTtl::new(Some(Duration::MAX)).with_jitter(0.5);
        for _ in 0..100 {
            let ttl = policy.ttl_for("x").unwrap();
            assert!(ttl >= Duration::MAX / 3, "{ttl:?}");
        }
    }

    #[test]
    fn signed_seconds_map_to_do_not_store() {
        assert_eq!(Ttl::from_signed_secs(-5), Ttl::After(Duration::ZERO));
        assert_eq!(Ttl::from_signed_secs(0), Ttl::After(Duration::ZERO));
        assert_eq!(Ttl::from_signed_secs(7), Ttl::secs(7));
    }

    #[test]
    fn resolve_uses_policy_only_for_default() {
        let policy = CategoryTtl::new(Some(Duration::from_secs(5)));
        assert_eq!(
            Ttl::Default.resolve(&policy, "a"),
            Some(Duration::from_secs(5))
        );
        assert_eq!(Ttl::Never.resolve(&policy, "a"), None);
        assert_eq!(
            Ttl::millis(5).resolve(&policy, "a"),
            Some(Duration::from_millis(5))
        );
    }

    #[test]
    fn constructors_give_exact_durations() {
        assert_eq!(Ttl::secs(3), Ttl::After(Duration::from_secs(3)));
        assert_eq!(Ttl::millis(7), Ttl::After(Duration::from_millis(7)));
        assert_eq!(
            Ttl::from(Duration::from_nanos(9)),
            Ttl::After(Duration::from_nanos(9))
        );
    }

    #[test]
    fn categories_override_the_default() {
        let policy = CategoryTtl::new(Some(Duration::from_secs(60)))
            .with_category("rates", Some(Duration::from_secs(300)))
            .with_category("config", None);
        assert_eq!(policy.base_ttl("rates"), Some(Duration::from_secs(300)));
        assert_eq!(policy.base_ttl("config"), None);
        assert_eq!(policy.base_ttl("other"), Some(Duration::from_secs(60)));
        assert_eq!(policy.ttl_for("rates"), Some(Duration::from_secs(300)));
        assert_eq!(policy.ttl_for("config"), None);
        assert_eq!(policy.ttl_for("other"), Some(Duration::from_secs(60)));
        assert_eq!(CategoryTtl::new(None).ttl_for("other"), None);
    }

    #[test]
    fn jitter_spreads_both_ways_and_keeps_zero() {
        let policy = CategoryTtl::new(Some(Duration::from_secs(100))).with_jitter(0.1);
        let samples: Vec<_> = (0..400).map(|_| policy.ttl_for("x").unwrap()).collect();
        assert!(samples.iter().any(|d| *d < Duration::from_secs(95)));
        assert!(samples.iter().any(|d| *d > Duration::from_secs(105)));
        // A zero TTL ("do not store") stays zero whatever the jitter.
        let zero = CategoryTtl::new(Some(Duration::ZERO)).with_jitter(0.5);
        assert_eq!(zero.ttl_for("x"), Some(Duration::ZERO));
        // The fraction is clamped to 0.5, and NaN turns jitter off.
        let wide = CategoryTtl::new(Some(Duration::from_secs(100))).with_jitter(5.0);
        for _ in 0..200 {
            let d = wide.ttl_for("x").unwrap();
            assert!(d >= Duration::from_secs(50) && d <= Duration::from_secs(150));
        }
        let nan = CategoryTtl::new(Some(Duration::from_secs(100))).with_jitter(f64::NAN);
        assert_eq!(nan.ttl_for("x"), Some(Duration::from_secs(100)));
    }
}
