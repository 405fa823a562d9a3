//! [`Layered`]: the pod's own cap (L1, in process) in front of the shared
//! limits (L2).

use std::sync::Arc;
use std::time::Duration;

use smsgw_core::limits::{
    LimitError, LimiterMode, LimiterStatus, RateDecision, RateKey, RateLimit, RateLimiter,
    RateScope,
};

use super::local::InProcessLimiter;

/// L1 then L2: every acquisition first takes from this pod's global cap (a
/// [`RateScope::Pod`] key kept in process), then from the shared limiter.
/// When L2 refuses (or fails), the L1 tokens are given back.
///
/// [`set_limit`](RateLimiter::set_limit) on a `Pod` key sets the L1 cap;
/// every other key goes to L2. Mode and status are L2's.
pub struct Layered {
    l1: InProcessLimiter,
    pod_key: RateKey,
    l2: Arc<dyn RateLimiter>,
}

impl Layered {
    /// L1 with `pod_cap` (`None`: no pod cap) in front of `l2`.
    pub fn new(pod_cap: Option<RateLimit>, l2: Arc<dyn RateLimiter>) -> Result<Self, LimitError> {
        let pod_key = RateKey::new(RateScope::Pod, "");
        let l1 = InProcessLimiter::new();
        l1.set(&pod_key, pod_cap)?;
        Ok(Self { l1, pod_key, l2 })
    }

    /// The shared limiter behind L1.
    pub fn l2(&self) -> &Arc<dyn RateLimiter> {
        &self.l2
    }
}

#[async_trait::async_trait]
impl RateLimiter for Layered {
    async fn acquire(
        &self,
        keys: &[RateKey],
        cost: u32,
        max_wait: Duration,
    ) -> Result<RateDecision, LimitError> {
        let pod = std::slice::from_ref(&self.pod_key);
        let w1 = match self.l1.acquire_now(pod, cost, max_wait) {
            RateDecision::Allowed { wait } => wait,
            limited => return Ok(limited),
        };
        match self.l2.acquire(keys, cost, max_wait).await {
            Ok(RateDecision::Allowed { wait }) => Ok(RateDecision::Allowed { wait: wait.max(w1) }),
            other => {
                self.l1.refund(pod, cost);
                other
            }
        }
    }

    async fn set_limit(&self, key: &RateKey, limit: Option<RateLimit>) -> Result<(), LimitError> {
        if key.scope == RateScope::Pod {
            self.l1.set(&self.pod_key, limit)
        } else {
            self.l2.set_limit(key, limit).await
        }
    }

    fn mode(&self) -> LimiterMode {
        self.l2.mode()
    }

    fn status(&self) -> LimiterStatus {
        self.l2.status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_pod_cap_should_hold_over_every_key() {
        let l2 = Arc::new(InProcessLimiter::new());
        let layered = Layered::new(Some(RateLimit::new(10.0, 5)), l2).unwrap();
        let mut n = 0;
        for i in 0..100 {
            let key = RateKey::link(format!("l{i}"));
            if layered.try_acquire(&[key], 1).await.unwrap().is_allowed() {
                n += 1;
            }
        }
        assert_eq!(n, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn an_l2_refusal_should_give_the_l1_tokens_back() {
        let l2 = Arc::new(InProcessLimiter::new());
        let layered = Layered::new(Some(RateLimit::new(1.0, 2)), l2).unwrap();
        let link = [RateKey::link("down")];
        layered
            .set_limit(&link[0], Some(RateLimit::ZERO))
            .await
            .unwrap();
        for _ in 0..10 {
            assert!(!layered.try_acquire(&link, 1).await.unwrap().is_allowed());
        }
        // The pod cap is still full.
        let other = [RateKey::link("up")];
        assert!(layered.try_acquire(&other, 1).await.unwrap().is_allowed());
        assert!(layered.try_acquire(&other, 1).await.unwrap().is_allowed());
        assert!(!layered.try_acquire(&other, 1).await.unwrap().is_allowed());
    }
}
