//! [`InProcessLimiter`]: GCRA in this process. The standalone limiter, the
//! per-pod L1, and the fail-open fallback of the Redis limiter.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use smsgw_core::limits::{
    LimitError, LimiterMode, LimiterStatus, RateDecision, RateKey, RateLimit, RateLimiter,
};
use tokio::time::Instant;

use super::gcra::{Bucket, Earliest};

/// Default `retry_after` of a key whose rate is 0 (a link that is down).
pub const DEFAULT_ZERO_RATE_RETRY: Duration = Duration::from_secs(1);

/// Rate limits kept in this process (GCRA per key), exact and lock-light:
/// one short mutex per key, taken in key order when a request spans several
/// keys; the key map is read-locked on the hot path and write-locked only by
/// [`set_limit`](RateLimiter::set_limit).
///
/// Time is tokio's clock, so tests can pause it.
///
/// # Defaults
///
/// No key is limited until [`set_limit`](RateLimiter::set_limit); a key
/// with rate 0 answers `Limited` with a `retry_after` of 1 s
/// ([`DEFAULT_ZERO_RATE_RETRY`]).
#[derive(Debug)]
pub struct InProcessLimiter {
    keys: RwLock<HashMap<RateKey, Arc<Mutex<Bucket>>>>,
    base: Instant,
    zero_rate_retry: Duration,
    acquires: AtomicU64,
}

impl Default for InProcessLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl InProcessLimiter {
    /// A limiter with no limits.
    pub fn new() -> Self {
        Self {
            keys: RwLock::default(),
            base: Instant::now(),
            zero_rate_retry: DEFAULT_ZERO_RATE_RETRY,
            acquires: AtomicU64::new(0),
        }
    }

    /// Sets the `retry_after` answered for keys with rate 0.
    pub fn with_zero_rate_retry(mut self, retry: Duration) -> Self {
        self.zero_rate_retry = retry;
        self
    }

    fn now_us(&self) -> f64 {
        self.base.elapsed().as_secs_f64() * 1e6
    }

    /// The buckets of `keys` that have a limit, sorted by key and without
    /// duplicates (the lock order).
    fn buckets(&self, keys: &[RateKey]) -> Vec<(RateKey, Arc<Mutex<Bucket>>)> {
        let map = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let mut found: Vec<(RateKey, Arc<Mutex<Bucket>>)> = keys
            .iter()
            .filter_map(|k| map.get(k).map(|b| (k.clone(), b.clone())))
            .collect();
        drop(map);
        if found.len() > 1 {
            found.sort_by(|a, b| a.0.cmp(&b.0));
            found.dedup_by(|a, b| a.0 == b.0);
        }
        found
    }

    /// The decision for `keys` at `now` (µs), booking the tokens when
    /// allowed.
    fn decide(&self, keys: &[RateKey], cost: u32, max_wait: Duration) -> RateDecision {
        self.acquires.fetch_add(1, Ordering::Relaxed);
        let found = self.buckets(keys);
        if found.is_empty() {
            return RateDecision::NOW;
        }
        let mut guards: Vec<_> = found
            .iter()
            .map(|(_, b)| b.lock().unwrap_or_else(|p| p.into_inner()))
            .collect();
        let now = self.now_us();
        let mut allow_at = now;
        let mut limiting = None;
        for (i, g) in guards.iter().enumerate() {
            match g.earliest(now, cost) {
                Earliest::Unlimited => {}
                Earliest::Never => {
                    return RateDecision::Limited {
                        retry_after: self.zero_rate_retry,
                        key: found[i].0.clone(),
                    };
                }
                Earliest::At(at) => {
                    if at > allow_at {
                        allow_at = at;
                        limiting = Some(i);
                    }
                }
            }
        }
        let wait = allow_at - now;
        if wait <= max_wait.as_secs_f64() * 1e6 {
            for g in guards.iter_mut() {
                g.book(allow_at, cost);
            }
            RateDecision::Allowed { wait: micros(wait) }
        } else {
            RateDecision::Limited {
                retry_after: micros(wait),
                key: found[limiting.unwrap_or(0)].0.clone(),
            }
        }
    }

    /// Gives back `cost` tokens of `keys` taken by an acquisition that was
    /// not used after all (e.g. a later limit refused it). Never fills a
    /// bucket beyond its burst.
    pub fn refund(&self, keys: &[RateKey], cost: u32) {
        let now = self.now_us();
        for (_, b) in self.buckets(keys) {
            b.lock()
                .unwrap_or_else(|p| p.into_inner())
                .refund(now, cost);
        }
    }

    /// Sets a limit without going through the async trait.
    pub fn set(&self, key: &RateKey, limit: Option<RateLimit>) -> Result<(), LimitError> {
        let mut map = self.keys.write().unwrap_or_else(|p| p.into_inner());
        match limit {
            None => {
                map.remove(key);
            }
            Some(limit) => {
                validate(key, &limit)?;
                map.entry(key.clone())
                    .or_default()
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .limit = Some(limit);
            }
        }
        Ok(())
    }

    /// The limit of a key, if any.
    pub fn limit(&self, key: &RateKey) -> Option<RateLimit> {
        let map = self.keys.read().unwrap_or_else(|p| p.into_inner());
        map.get(key)
            .and_then(|b| b.lock().unwrap_or_else(|p| p.into_inner()).limit)
    }

    /// Synchronous [`acquire`](RateLimiter::acquire) (it never waits itself).
    pub fn acquire_now(&self, keys: &[RateKey], cost: u32, max_wait: Duration) -> RateDecision {
        self.decide(keys, cost, max_wait)
    }
}

/// Rejects negative or non-finite rates.
pub(crate) fn validate(key: &RateKey, limit: &RateLimit) -> Result<(), LimitError> {
    if !limit.rate.is_finite() || limit.rate < 0.0 {
        return Err(LimitError::InvalidLimit {
            key: key.clone(),
            reason: format!("rate {} is not a finite number ≥ 0", limit.rate),
        });
    }
    Ok(())
}

/// A non-negative number of microseconds as a duration, rounded up.
pub(crate) fn micros(us: f64) -> Duration {
    if us <= 0.0 {
        Duration::ZERO
    } else {
        Duration::from_micros(us.ceil() as u64)
    }
}

#[async_trait::async_trait]
impl RateLimiter for InProcessLimiter {
    async fn acquire(
        &self,
        keys: &[RateKey],
        cost: u32,
        max_wait: Duration,
    ) -> Result<RateDecision, LimitError> {
        Ok(self.decide(keys, cost, max_wait))
    }

    async fn set_limit(&self, key: &RateKey, limit: Option<RateLimit>) -> Result<(), LimitError> {
        self.set(key, limit)
    }

    fn mode(&self) -> LimiterMode {
        LimiterMode::InProcess
    }

    fn status(&self) -> LimiterStatus {
        let mut s = LimiterStatus::new(LimiterMode::InProcess);
        s.acquires = self.acquires.load(Ordering::Relaxed);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link() -> RateKey {
        RateKey::link("l1")
    }

    fn app() -> RateKey {
        RateKey::app("a1")
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_without_limit_should_be_unlimited() {
        let l = InProcessLimiter::new();
        for _ in 0..10_000 {
            assert!(l.try_acquire(&[link()], 3).await.unwrap().is_allowed());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_burst_should_pass_then_the_rate() {
        let l = InProcessLimiter::new();
        l.set_limit(&link(), Some(RateLimit::new(500.0, 50)))
            .await
            .unwrap();
        let mut n = 0;
        while l.try_acquire(&[link()], 1).await.unwrap().is_allowed() {
            n += 1;
        }
        assert_eq!(n, 50);
        match l.try_acquire(&[link()], 1).await.unwrap() {
            RateDecision::Limited { retry_after, key } => {
                assert_eq!(key, link());
                assert_eq!(retry_after, Duration::from_millis(2));
            }
            other => panic!("{other:?}"),
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        let mut n = 0;
        while l.try_acquire(&[link()], 1).await.unwrap().is_allowed() {
            n += 1;
        }
        assert_eq!(n, 50, "refilled to the burst, not beyond");
    }

    #[tokio::test(start_paused = true)]
    async fn exactly_rate_times_time_plus_burst_should_pass_in_a_window() {
        let l = InProcessLimiter::new();
        l.set_limit(&link(), Some(RateLimit::new(500.0, 50)))
            .await
            .unwrap();
        let mut n = 0;
        for _ in 0..10_000 {
            if l.try_acquire(&[link()], 1).await.unwrap().is_allowed() {
                n += 1;
            }
            tokio::time::advance(Duration::from_micros(250)).await;
        }
        // 2.5 s of time (ends just before 2.5 s): 50 + 500 · 2.49975
        assert!((1298..=1300).contains(&n), "{n}");
    }

    #[tokio::test(start_paused = true)]
    async fn all_keys_or_none_should_be_charged() {
        let l = InProcessLimiter::new();
        l.set_limit(&link(), Some(RateLimit::new(10.0, 10)))
            .await
            .unwrap();
        l.set_limit(&app(), Some(RateLimit::new(10.0, 2)))
            .await
            .unwrap();
        assert!(
            l.try_acquire(&[app(), link()], 1)
                .await
                .unwrap()
                .is_allowed()
        );
        assert!(
            l.try_acquire(&[app(), link()], 1)
                .await
                .unwrap()
                .is_allowed()
        );
        let d = l.try_acquire(&[app(), link()], 1).await.unwrap();
        assert!(
            matches!(d, RateDecision::Limited { ref key, .. } if *key == app()),
            "{d:?}"
        );
        // The refusal took nothing from the link: 8 left.
        let mut n = 0;
        while l.try_acquire(&[link()], 1).await.unwrap().is_allowed() {
            n += 1;
        }
        assert_eq!(n, 8);
    }

    #[tokio::test(start_paused = true)]
    async fn a_down_link_should_refuse_with_the_configured_retry() {
        let l = InProcessLimiter::new().with_zero_rate_retry(Duration::from_secs(10));
        l.set_limit(&link(), Some(RateLimit::ZERO)).await.unwrap();
        assert_eq!(
            l.try_acquire(&[link()], 1).await.unwrap(),
            RateDecision::Limited {
                retry_after: Duration::from_secs(10),
                key: link()
            }
        );
        l.set_limit(&link(), None).await.unwrap();
        assert!(l.try_acquire(&[link()], 1).await.unwrap().is_allowed());
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_should_book_the_next_free_slot_in_order() {
        let l = InProcessLimiter::new();
        l.set_limit(&link(), Some(RateLimit::new(100.0, 1)))
            .await
            .unwrap();
        let max = Duration::from_millis(35);
        let waits: Vec<_> = (0..5).map(|_| l.acquire_now(&[link()], 1, max)).collect();
        let ms = |m| RateDecision::Allowed {
            wait: Duration::from_millis(m),
        };
        assert_eq!(waits[..4], [ms(0), ms(10), ms(20), ms(30)]);
        assert!(
            matches!(waits[4], RateDecision::Limited { retry_after, .. } if retry_after == Duration::from_millis(40))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_refund_should_give_tokens_back() {
        let l = InProcessLimiter::new();
        l.set_limit(&link(), Some(RateLimit::new(1.0, 3)))
            .await
            .unwrap();
        assert!(l.try_acquire(&[link()], 3).await.unwrap().is_allowed());
        assert!(!l.try_acquire(&[link()], 1).await.unwrap().is_allowed());
        l.refund(&[link()], 2);
        assert!(l.try_acquire(&[link()], 2).await.unwrap().is_allowed());
        assert!(!l.try_acquire(&[link()], 1).await.unwrap().is_allowed());
    }

    #[tokio::test]
    async fn invalid_limits_should_be_refused() {
        let l = InProcessLimiter::new();
        let err = l
            .set_limit(&link(), Some(RateLimit::new(f64::NAN, 1)))
            .await
            .unwrap_err();
        assert!(matches!(err, LimitError::InvalidLimit { .. }));
    }
}
