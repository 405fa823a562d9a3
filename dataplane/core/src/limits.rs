//! Rate limiting as the send path sees it: the [`RateLimiter`] trait, the
//! keys it limits (per app, per link, per pool, and the pod's own cap) and
//! its decisions.
//!
//! The send path calls [`RateLimiter::acquire`] once per message with every
//! key the message counts against (its app, its link or pool) and its cost
//! in segments. Implementations live in `smsgw-rate`: an in-process one
//! (standalone mode, and the per-pod L1) and a Redis one shared by every pod
//! (L2). Limits are set absolutely with [`RateLimiter::set_limit`]; a key
//! without a limit is unlimited.
//!
//! # Waiting for capacity
//!
//! `acquire` takes a `max_wait`. With `Duration::ZERO` it answers at once:
//! [`RateDecision::Allowed`] (send now) or [`RateDecision::Limited`] (answer
//! 429 / `RESOURCE_EXHAUSTED` with the `retry_after`). With a positive
//! `max_wait` the limiter may *book* capacity in the near future and answer
//! `Allowed { wait }`: the caller sleeps `wait` and then sends. Booking is
//! fair (first come, first served) and costs no more round trips than an
//! immediate answer, unlike polling.

use std::fmt;
use std::time::Duration;

/// What a [`RateKey`] limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RateScope {
    /// An application (the User's `quotas.rate`); the name is the app id.
    App,
    /// An SMPP link (`SmppLink.spec.rate` / `burst`); the name is the link's.
    Link,
    /// A pool: the sum of its healthy members' rates; the name is the pool's.
    Pool,
    /// The gateway pod's own cap (L1, in-process, never shared); the name
    /// is free (one key per pod, usually `""`).
    Pod,
}

impl RateScope {
    /// Lower-case name, as used in Redis keys and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::App => "app",
            Self::Link => "link",
            Self::Pool => "pool",
            Self::Pod => "pod",
        }
    }
}

impl fmt::Display for RateScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One limited thing: a scope and a name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RateKey {
    /// What kind of thing.
    pub scope: RateScope,
    /// Its name (app id, link name, pool name).
    pub name: String,
}

impl RateKey {
    /// A key of `scope` named `name`.
    pub fn new(scope: RateScope, name: impl Into<String>) -> Self {
        Self {
            scope,
            name: name.into(),
        }
    }
    /// The key of an application (by app id).
    pub fn app(app_id: impl Into<String>) -> Self {
        Self::new(RateScope::App, app_id)
    }
    /// The key of a link.
    pub fn link(name: impl Into<String>) -> Self {
        Self::new(RateScope::Link, name)
    }
    /// The key of a pool.
    pub fn pool(name: impl Into<String>) -> Self {
        Self::new(RateScope::Pool, name)
    }
}

impl fmt::Display for RateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.scope, self.name)
    }
}

/// A rate with a burst: `rate` tokens (segments) per second refill a bucket
/// of `burst` tokens (GCRA, equivalent to a token bucket).
///
/// `rate == 0` refuses everything (a link that is down). A `burst` of 0 is
/// treated as 1. A request costing more than `burst` passes when the bucket
/// is full, and the debt it leaves is paid before the next one passes, so
/// the long-run rate holds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Tokens per second, ≥ 0.
    pub rate: f64,
    /// Bucket size in tokens.
    pub burst: u32,
}

impl RateLimit {
    /// `rate` per second with a bucket of `burst`.
    pub fn new(rate: f64, burst: u32) -> Self {
        Self { rate, burst }
    }
    /// The limit that refuses everything (rate and burst 0).
    pub const ZERO: RateLimit = RateLimit {
        rate: 0.0,
        burst: 0,
    };
    /// Whether it refuses everything.
    pub fn is_zero(&self) -> bool {
        self.rate <= 0.0
    }
}

/// The answer to [`RateLimiter::acquire`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RateDecision {
    /// The tokens are taken from every key. Send after `wait` (zero unless
    /// the caller allowed waiting).
    Allowed {
        /// How long to wait before sending; ≤ the `max_wait` asked for.
        wait: Duration,
    },
    /// Nothing was taken. Try again after `retry_after`.
    Limited {
        /// When the tokens asked for are expected to be available.
        retry_after: Duration,
        /// The key that refused (the first, if several).
        key: RateKey,
    },
}

impl RateDecision {
    /// Allowed with no wait.
    pub const NOW: RateDecision = RateDecision::Allowed {
        wait: Duration::ZERO,
    };
    /// Whether the tokens were taken.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allowed { .. })
    }
}

/// Which mode a limiter is in: shows in metrics and in the admin
/// statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LimiterMode {
    /// Limits kept in this process only (standalone mode).
    InProcess,
    /// Limits shared by every pod (Redis reachable).
    Shared,
    /// The shared store is unreachable: each key limited in process to its
    /// share of the cap (cap ÷ live pods).
    FailOpen,
    /// The shared store is unreachable: every request refused.
    FailClosed,
}

impl LimiterMode {
    /// Every mode, for metric label sets.
    pub const ALL: [LimiterMode; 4] = [
        Self::InProcess,
        Self::Shared,
        Self::FailOpen,
        Self::FailClosed,
    ];
    /// `in_process`, `shared`, `fail_open` or `fail_closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProcess => "in_process",
            Self::Shared => "shared",
            Self::FailOpen => "fail_open",
            Self::FailClosed => "fail_closed",
        }
    }
    /// Whether the limiter is degraded (its shared store unreachable).
    pub fn is_degraded(self) -> bool {
        matches!(self, Self::FailOpen | Self::FailClosed)
    }
}

impl fmt::Display for LimiterMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// State of a limiter for the admin statistics.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct LimiterStatus {
    /// Mode in force.
    pub mode: LimiterMode,
    /// Live pods sharing the limits (the last count seen), when shared.
    pub live_pods: Option<u32>,
    /// Acquisitions answered so far.
    pub acquires: u64,
    /// Round trips to the shared store so far (acquisitions are batched:
    /// fewer round trips than acquisitions under load).
    pub round_trips: u64,
    /// The most recent error of the shared store, if any.
    pub last_error: Option<String>,
}

impl LimiterStatus {
    /// A status with only the mode known.
    pub fn new(mode: LimiterMode) -> Self {
        Self {
            mode,
            live_pods: None,
            acquires: 0,
            round_trips: 0,
            last_error: None,
        }
    }
}

/// Why a limiter could not decide.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    /// The shared store is unreachable or too slow and the limiter is
    /// configured to fail closed (map to 503 / `UNAVAILABLE`).
    #[error("rate limiter unavailable (failing closed): {reason}")]
    Unavailable {
        /// What went wrong.
        reason: String,
    },
    /// A limit could not be stored (the shared store failed).
    #[error("could not set the limit of {key}: {reason}")]
    SetLimit {
        /// The key.
        key: RateKey,
        /// What went wrong.
        reason: String,
    },
    /// The limit is invalid (negative or not finite rate).
    #[error("invalid limit for {key}: {reason}")]
    InvalidLimit {
        /// The key.
        key: RateKey,
        /// Why.
        reason: String,
    },
}

/// Rate limits shared by the send path: per app, per link, per pool.
///
/// Implementations are exact (never admit more than rate × time + burst
/// per key), never block longer than `max_wait` plus a bounded store
/// timeout, and take tokens from every key of one call or from none.
#[async_trait::async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Takes `cost` tokens (segments) from every key at once, all or
    /// nothing. With `max_wait > 0` capacity up to `max_wait` ahead may be
    /// booked: the answer is then `Allowed { wait }` and the caller sends
    /// after `wait`. Keys without a limit are not counted.
    async fn acquire(
        &self,
        keys: &[RateKey],
        cost: u32,
        max_wait: Duration,
    ) -> Result<RateDecision, LimitError>;

    /// Sets the limit of a key absolutely (`None`: unlimited). Never a
    /// delta, so writers racing each other with the same inputs agree.
    async fn set_limit(&self, key: &RateKey, limit: Option<RateLimit>) -> Result<(), LimitError>;

    /// Mode in force, for metrics and the admin statistics.
    fn mode(&self) -> LimiterMode;

    /// Statistics for the admin API. Default: the mode only.
    fn status(&self) -> LimiterStatus {
        LimiterStatus::new(self.mode())
    }

    /// [`acquire`](Self::acquire) without waiting.
    async fn try_acquire(&self, keys: &[RateKey], cost: u32) -> Result<RateDecision, LimitError> {
        self.acquire(keys, cost, Duration::ZERO).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_should_display_as_scope_and_name() {
        assert_eq!(RateKey::link("l1").to_string(), "link:l1");
        assert_eq!(RateKey::app("a").scope, RateScope::App);
    }

    #[test]
    fn modes_should_tell_when_degraded() {
        assert!(LimiterMode::FailOpen.is_degraded());
        assert!(!LimiterMode::Shared.is_degraded());
        assert_eq!(LimiterMode::FailClosed.as_str(), "fail_closed");
    }
}
