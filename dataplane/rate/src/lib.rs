//! Rate limiting on the smsgw send path (issue 6): the implementations of
//! [`smsgw_core::limits::RateLimiter`].
//!
//! - [`InProcessLimiter`]: GCRA in this process. The standalone limiter,
//!   and the per-pod cap (L1).
//! - [`RedisLimiter`]: GCRA in Redis (one Lua script, all keys of a request
//!   at once, all or nothing), shared by every pod (L2); concurrent
//!   acquisitions of a pod are batched into one script call; fail-open or
//!   fail-closed when Redis is unreachable.
//! - [`Layered`]: L1 in front of L2.
//! - [`HealthAdjuster`]: sets link and pool limits from link health.
//! - [`LimiterMetrics`] / [`Metered`]: Prometheus metrics.
//!
//! The send path calls [`acquire_within`] (or `RateLimiter::acquire`
//! directly) once per message with the message's keys and its segment
//! count.
#![warn(missing_docs)]

mod gcra;
mod health;
mod layered;
mod local;
mod metrics;
mod redis;

pub use health::{DEFAULT_HEALTH_INTERVAL, HealthAdjuster, LinkHealth, RateConfig, compute_limits};
pub use layered::Layered;
pub use local::{DEFAULT_ZERO_RATE_RETRY, InProcessLimiter};
pub use metrics::{LimiterMetrics, Metered};
pub use redis::{FailMode, RedisLimiter, RedisLimiterConfig};

use smsgw_core::limits::{LimitError, RateDecision, RateKey, RateLimiter};
use tokio::time::Instant;

/// Acquires `cost` tokens of every key, waiting for capacity until
/// `deadline` at the latest: books the earliest slot before the deadline
/// (one call to the limiter, no polling), sleeps until it, and returns
/// `Allowed`. Returns `Limited` at once (with its `retry_after`) when no
/// slot before the deadline is free. A deadline in the past asks without
/// waiting.
pub async fn acquire_within<L: RateLimiter + ?Sized>(
    limiter: &L,
    keys: &[RateKey],
    cost: u32,
    deadline: Instant,
) -> Result<RateDecision, LimitError> {
    let max_wait = deadline.saturating_duration_since(Instant::now());
    let decision = limiter.acquire(keys, cost, max_wait).await?;
    if let RateDecision::Allowed { wait } = decision
        && !wait.is_zero()
    {
        tokio::time::sleep(wait).await;
    }
    Ok(decision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use smsgw_core::limits::RateLimit;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn acquire_within_should_sleep_until_the_booked_slot() {
        let l = InProcessLimiter::new();
        let k = RateKey::link("l");
        l.set(&k, Some(RateLimit::new(10.0, 1))).unwrap();
        let start = Instant::now();
        let deadline = start + Duration::from_millis(250);
        for i in 0..3u64 {
            let d = acquire_within(&l, std::slice::from_ref(&k), 1, deadline)
                .await
                .unwrap();
            assert!(d.is_allowed());
            assert_eq!(Instant::now() - start, Duration::from_millis(100 * i));
        }
        let d = acquire_within(&l, std::slice::from_ref(&k), 1, deadline)
            .await
            .unwrap();
        assert!(!d.is_allowed(), "the next slot is after the deadline");
    }
}
