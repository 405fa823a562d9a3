//! Rate limiting as the gateway runs it: the limiter chosen by the flags
//! (in process, or Redis shared by every gateway, behind this pod's own
//! cap), its metrics, and the link-health loop that sets link and pool
//! limits from the cluster-wide view of which links are up.

use crate::cli::{RateFailMode, RateLimitArgs};
use smsgw_api::ApiState;
use smsgw_core::limits::{RateLimit, RateLimiter};
use smsgw_core::links::LinkControl;
use smsgw_rate::{
    FailMode, HealthAdjuster, InProcessLimiter, Layered, LimiterMetrics, Metered, RateConfig,
    RedisLimiter, RedisLimiterConfig,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The gateway's limiter and what keeps its limits current.
pub(crate) struct Limiting {
    /// What the send path calls (metered; L1 then L2).
    pub(crate) limiter: Arc<dyn RateLimiter>,
    /// The shared limiter, when limits live in Redis.
    redis: Option<Arc<RedisLimiter>>,
    /// Link health as last computed (cluster-wide when shared). Links not
    /// checked yet count as up, so a new configuration applies its
    /// configured values at once instead of refusing while links bind.
    view: Mutex<HashMap<String, bool>>,
    /// When this pod last saw each link bound (see [`LastBound`]).
    last_bound: Mutex<LastBound>,
    interval: Duration,
}

/// When this pod last saw each link bound. A link that was bound here at
/// the previous check still counts as up here: a session restart shorter
/// than the health interval (a configuration change, a rebind) must not
/// zero the link's and its pools' rates on every pod for an interval,
/// refusing clients with 429 while the link is back in milliseconds. A
/// link down for longer counts as down from the check after.
#[derive(Debug, Default)]
struct LastBound(HashMap<String, std::time::Instant>);

impl LastBound {
    /// Whether `link` counts as up here, given whether it is `bound` now;
    /// `grace` is how long a link last seen bound still counts as up.
    fn up(&mut self, link: &str, bound: bool, now: std::time::Instant, grace: Duration) -> bool {
        if bound {
            self.0.insert(link.to_owned(), now);
            return true;
        }
        self.0
            .get(link)
            .is_some_and(|t| now.saturating_duration_since(*t) <= grace)
    }

    /// Forgets links no longer configured.
    fn retain(&mut self, configured: impl Fn(&str) -> bool) {
        self.0.retain(|k, _| configured(k));
    }
}

impl Limiting {
    /// Builds the limiter the flags ask for and registers its metrics.
    /// With Redis, waits up to 5 s for a first connection; if Redis does
    /// not answer, the gateway starts anyway in the fail mode and joins
    /// once Redis answers.
    pub(crate) async fn build(
        args: &RateLimitArgs,
        pod: &str,
        registry: &smsgw_api::metrics::Metrics,
    ) -> anyhow::Result<Limiting> {
        let metrics = LimiterMetrics::new();
        registry.with_registry(|r| metrics.register(r));
        let pod_cap = match args.pod_rate {
            None => None,
            Some(rate) if rate.is_finite() && rate > 0.0 => Some(RateLimit::new(
                rate,
                args.pod_burst
                    .unwrap_or(rate.ceil().min(f64::from(u32::MAX)) as u32),
            )),
            Some(rate) => anyhow::bail!("--pod-rate {rate}: must be a positive number"),
        };
        let (l2, redis): (Arc<dyn RateLimiter>, _) = if args.redis_urls.is_empty() {
            metrics.set_mode(smsgw_core::limits::LimiterMode::InProcess);
            (Arc::new(InProcessLimiter::new()), None)
        } else {
            let mut config = if args.cluster {
                RedisLimiterConfig::cluster(args.redis_urls.clone())
            } else {
                if args.redis_urls.len() > 1 {
                    anyhow::bail!(
                        "--rate-limit-redis-url has {} URLs: several are only for a cluster (add --rate-limit-redis-cluster)",
                        args.redis_urls.len()
                    );
                }
                RedisLimiterConfig::single(args.redis_urls[0].clone())
            };
            config.pod_id = pod.to_owned();
            config.response_timeout = args.timeout;
            config.fail_mode = match args.fail_mode {
                RateFailMode::Open => FailMode::Open,
                RateFailMode::Closed => FailMode::Closed,
            };
            config.metrics = Some(metrics.clone());
            let redis = Arc::new(RedisLimiter::connect(config, Duration::from_secs(5)).await);
            if redis.mode().is_degraded() {
                tracing::warn!(
                    mode = %redis.mode(),
                    "the rate-limit Redis does not answer yet; limiting in the fail mode until it does"
                );
            } else {
                tracing::info!(
                    live_pods = redis.live_pods(),
                    "rate limits shared through Redis"
                );
            }
            (redis.clone() as Arc<dyn RateLimiter>, Some(redis))
        };
        let layered: Arc<dyn RateLimiter> = match pod_cap {
            Some(cap) => Arc::new(Layered::new(Some(cap), l2).map_err(|e| anyhow::anyhow!("{e}"))?),
            None => l2,
        };
        Ok(Limiting {
            limiter: Arc::new(Metered::new(layered, metrics)),
            redis,
            view: Mutex::default(),
            last_bound: Mutex::default(),
            interval: args.link_health_interval,
        })
    }

    /// Sets every link, pool and app limit of the configuration in force,
    /// absolutely, from the last health view (links not seen yet count as
    /// up).
    pub(crate) async fn apply(&self, state: &ApiState) {
        let config = RateConfig::from_snapshot(&state.config.load());
        let view = self.view.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let health = move |name: &str| view.get(name).copied().unwrap_or(true);
        let adjuster = HealthAdjuster::new(self.limiter.clone(), Arc::new(health));
        if let Err(e) = adjuster.adjust(&config).await {
            tracing::warn!(error = %e, "rate limits not applied");
        }
    }

    /// One health check: this gateway's view of each configured link (a
    /// bound session), shared with the other gateways when limits live in
    /// Redis, then the limits set from the cluster-wide view.
    pub(crate) async fn check(&self, state: &ApiState, links: &dyn LinkControl) {
        let config = RateConfig::from_snapshot(&state.config.load());
        let now = std::time::Instant::now();
        // One interval and a half: the previous check's sighting counts
        // even when this tick runs late.
        let grace = self.interval + self.interval / 2;
        let local: Vec<(String, bool)> = {
            let mut last = self.last_bound.lock().unwrap_or_else(|p| p.into_inner());
            last.retain(|name| config.links.contains_key(name));
            config
                .links
                .keys()
                .map(|name| {
                    let bound = links.link(name).is_some_and(|v| v.sessions_bound > 0);
                    (name.clone(), last.up(name, bound, now, grace))
                })
                .collect()
        };
        let shared = match &self.redis {
            // Reports outlive three missed checks, then a dead pod's
            // sessions stop counting.
            Some(r) => match r.share_health(&local, self.interval * 3).await {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::debug!(error = %e, "link health not shared; using this gateway's view");
                    None
                }
            },
            None => None,
        };
        let view: HashMap<String, bool> = match shared {
            Some(v) => local.iter().map(|(n, _)| n.clone()).zip(v).collect(),
            None => local.into_iter().collect(),
        };
        *self.view.lock().unwrap_or_else(|p| p.into_inner()) = view;
        self.apply(state).await;
    }

    /// Checks link health every interval until `cancel`; the first check
    /// one interval from now (links are still binding).
    pub(crate) async fn run(
        self: Arc<Self>,
        state: ApiState,
        links: Arc<dyn LinkControl>,
        cancel: CancellationToken,
    ) {
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + self.interval, self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.check(&state, links.as_ref()).await,
                () = cancel.cancelled() => return,
            }
        }
    }

    /// Leaves the shared live-pod set, so the other gateways' fail-open
    /// shares grow at once.
    pub(crate) async fn leave(&self) {
        if let Some(r) = &self.redis {
            r.leave().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LastBound;
    use std::time::{Duration, Instant};

    #[test]
    fn a_restart_shorter_than_the_interval_keeps_the_link_up_a_longer_outage_does_not() {
        let (t0, i) = (Instant::now(), Duration::from_secs(1));
        let grace = i + i / 2;
        let mut l = LastBound::default();
        // Never bound here: down at once (a pod holding no bind of the
        // link must not make it look up).
        assert!(!l.up("sim", false, t0, grace));
        assert!(l.up("sim", true, t0, grace));
        // The next check (a tick late) catches the session restarting.
        assert!(
            l.up("sim", false, t0 + i + i / 4, grace),
            "a blip is not an outage"
        );
        // Still down at the check after: the link is down.
        assert!(!l.up("sim", false, t0 + 2 * i, grace));
        assert!(l.up("sim", true, t0 + 3 * i, grace), "back up at once");
        l.retain(|n| n != "sim");
        assert!(
            !l.up("sim", false, t0 + 3 * i, grace),
            "forgotten with its configuration"
        );
    }
}
