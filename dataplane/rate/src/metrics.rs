//! Prometheus metrics of the rate limiters. Register them once with
//! [`LimiterMetrics::register`] in the gateway's registry (prefix
//! `smsgw`):
//!
//! - `smsgw_rate_limit_decisions_total{scope, outcome}`: outcome is
//!   `allowed`, `delayed` (allowed after a booked wait), `limited` or
//!   `error`; allowed and delayed count once per scope of the request
//!   (`none` when no key), limited counts the scope of the key that refused.
//! - `smsgw_rate_limiter_mode{mode}`: 1 for the mode in force, 0 for the
//!   others (`in_process`, `shared`, `fail_open`, `fail_closed`).
//! - `smsgw_rate_limit_store_round_trips_total`: script calls to Redis.
//! - `smsgw_rate_limit_store_batch_size`: acquisitions per script call.
//! - `smsgw_rate_limit_store_errors_total`: failed or timed-out calls.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use smsgw_core::limits::{
    LimitError, LimiterMode, LimiterStatus, RateDecision, RateKey, RateLimit, RateLimiter,
};

/// Labels of a decision.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `app`, `link`, `pool`, `pod` or `none`.
    pub scope: &'static str,
    /// `allowed`, `delayed`, `limited` or `error`.
    pub outcome: &'static str,
}

/// Labels of the mode gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabels {
    /// A [`LimiterMode`] name.
    pub mode: &'static str,
}

/// The limiters' metrics; cheap to clone (handles to the same series).
#[derive(Clone)]
pub struct LimiterMetrics {
    /// `rate_limit_decisions_total`.
    pub decisions: Family<DecisionLabels, Counter>,
    /// `rate_limiter_mode`.
    pub mode: Family<ModeLabels, Gauge>,
    /// `rate_limit_store_round_trips_total`.
    pub round_trips: Counter,
    /// `rate_limit_store_batch_size`.
    pub batch_size: Histogram,
    /// `rate_limit_store_errors_total`.
    pub store_errors: Counter,
}

impl Default for LimiterMetrics {
    fn default() -> Self {
        Self {
            decisions: Family::default(),
            mode: Family::default(),
            round_trips: Counter::default(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            store_errors: Counter::default(),
        }
    }
}

impl LimiterMetrics {
    /// Fresh, unregistered metrics.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers every series in `registry` (the gateway's, prefixed
    /// `smsgw`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "rate_limit_decisions",
            "Rate-limit decisions by scope and outcome",
            self.decisions.clone(),
        );
        registry.register(
            "rate_limiter_mode",
            "Rate-limiter mode in force (1) and the others (0)",
            self.mode.clone(),
        );
        registry.register(
            "rate_limit_store_round_trips",
            "Script calls to the shared rate-limit store",
            self.round_trips.clone(),
        );
        registry.register(
            "rate_limit_store_batch_size",
            "Acquisitions per script call to the shared rate-limit store",
            self.batch_size.clone(),
        );
        registry.register(
            "rate_limit_store_errors",
            "Failed or timed-out calls to the shared rate-limit store",
            self.store_errors.clone(),
        );
    }

    /// Sets the mode gauge: 1 for `mode`, 0 for the others.
    pub fn set_mode(&self, mode: LimiterMode) {
        for m in LimiterMode::ALL {
            self.mode
                .get_or_create(&ModeLabels { mode: m.as_str() })
                .set(i64::from(m == mode));
        }
    }

    /// Counts one decision.
    pub fn observe(&self, keys: &[RateKey], result: &Result<RateDecision, LimitError>) {
        let count = |scope: &'static str, outcome: &'static str| {
            self.decisions
                .get_or_create(&DecisionLabels { scope, outcome })
                .inc();
        };
        match result {
            Ok(RateDecision::Allowed { wait }) => {
                let outcome = if wait.is_zero() { "allowed" } else { "delayed" };
                let mut scopes: Vec<&'static str> = keys.iter().map(|k| k.scope.as_str()).collect();
                scopes.sort_unstable();
                scopes.dedup();
                if scopes.is_empty() {
                    count("none", outcome);
                }
                for s in scopes {
                    count(s, outcome);
                }
            }
            Ok(RateDecision::Limited { key, .. }) => count(key.scope.as_str(), "limited"),
            Err(_) => count("none", "error"),
            Ok(_) => count("none", "other"),
        }
    }
}

/// A limiter that counts its decisions and shows its mode in
/// [`LimiterMetrics`].
pub struct Metered {
    inner: Arc<dyn RateLimiter>,
    metrics: LimiterMetrics,
}

impl Metered {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn RateLimiter>, metrics: LimiterMetrics) -> Self {
        metrics.set_mode(inner.mode());
        Self { inner, metrics }
    }
}

#[async_trait::async_trait]
impl RateLimiter for Metered {
    async fn acquire(
        &self,
        keys: &[RateKey],
        cost: u32,
        max_wait: Duration,
    ) -> Result<RateDecision, LimitError> {
        let result = self.inner.acquire(keys, cost, max_wait).await;
        self.metrics.observe(keys, &result);
        self.metrics.set_mode(self.inner.mode());
        result
    }

    async fn set_limit(&self, key: &RateKey, limit: Option<RateLimit>) -> Result<(), LimitError> {
        self.inner.set_limit(key, limit).await
    }

    fn mode(&self) -> LimiterMode {
        self.inner.mode()
    }

    fn status(&self) -> LimiterStatus {
        self.inner.status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InProcessLimiter;
    use prometheus_client::encoding::text::encode;

    #[tokio::test(start_paused = true)]
    async fn decisions_and_mode_should_show_in_the_registry() {
        let metrics = LimiterMetrics::new();
        let mut registry = Registry::with_prefix("smsgw");
        metrics.register(&mut registry);
        let inner = Arc::new(InProcessLimiter::new());
        let link = RateKey::link("l");
        inner.set(&link, Some(RateLimit::new(1.0, 1))).unwrap();
        let m = Metered::new(inner, metrics);
        let keys = [RateKey::app("a"), link];
        assert!(m.try_acquire(&keys, 1).await.unwrap().is_allowed());
        assert!(!m.try_acquire(&keys, 1).await.unwrap().is_allowed());
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for line in [
            r#"smsgw_rate_limit_decisions_total{scope="link",outcome="allowed"} 1"#,
            r#"smsgw_rate_limit_decisions_total{scope="app",outcome="allowed"} 1"#,
            r#"smsgw_rate_limit_decisions_total{scope="link",outcome="limited"} 1"#,
            r#"smsgw_rate_limiter_mode{mode="in_process"} 1"#,
            r#"smsgw_rate_limiter_mode{mode="fail_open"} 0"#,
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }
}
