//! Link health → limits: a link that is down gets rate and burst 0, each
//! pool's rate is the sum of its healthy members' rates, and recovery
//! restores the configured values. Every value is set absolutely, every
//! interval, so pods racing each other (or a Redis that lost its data)
//! converge on the same values and never drift.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use smsgw_core::limits::{LimitError, RateKey, RateLimit, RateLimiter};
use smsgw_crds::Snapshot;

/// Default interval between two health checks.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(10);

/// The configured (healthy) limits: links, pools with their members, apps.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RateConfig {
    /// Links by name: their configured limit (`None`: unlimited).
    pub links: BTreeMap<String, Option<RateLimit>>,
    /// Pools by name: their member links.
    pub pools: BTreeMap<String, Vec<String>>,
    /// Apps by app id: their configured limit (`None`: unlimited).
    pub apps: BTreeMap<String, Option<RateLimit>>,
}

impl RateConfig {
    /// Links (`spec.rate`, `spec.burst`, burst defaulting to the rate),
    /// pools (their resolved members) and apps (`quotas.rate` of each User
    /// whose app id is known, burst equal to the rate) of a snapshot.
    pub fn from_snapshot(snap: &Snapshot) -> Self {
        let links = snap
            .links
            .iter()
            .map(|(name, spec)| {
                let limit = spec
                    .rate
                    .map(|r| RateLimit::new(f64::from(r), spec.burst.unwrap_or(r)));
                (name.clone(), limit)
            })
            .collect();
        let pools = snap
            .pools
            .iter()
            .map(|(name, spec)| {
                let members = spec.members.iter().map(|m| m.link.clone()).collect();
                (name.clone(), members)
            })
            .collect();
        let apps = snap
            .users
            .iter()
            .filter_map(|(user, spec)| {
                let creds = snap.app_credentials.get(user)?;
                let limit = spec.quotas.rate.map(|r| RateLimit::new(f64::from(r), r));
                Some((creds.app_id.clone(), limit))
            })
            .collect();
        Self { links, pools, apps }
    }
}

/// Whether a link is up (at least one bind answering enquire_link). In a
/// deployment of several pods this must be the cluster-wide view, or pods
/// disagree and overwrite each other's values every interval.
pub trait LinkHealth: Send + Sync + 'static {
    /// Whether the link named `link` is up.
    fn is_up(&self, link: &str) -> bool;
}

impl<F: Fn(&str) -> bool + Send + Sync + 'static> LinkHealth for F {
    fn is_up(&self, link: &str) -> bool {
        self(link)
    }
}

/// The limits for `config` given each link's health: configured values
/// for links that are up, zero for links that are down, and for each pool
/// the sum of its healthy members' rates and bursts (unlimited if a
/// healthy member is unlimited, zero if none is healthy). Apps keep their
/// configured values. Ordered: links, pools, apps.
pub fn compute_limits(
    config: &RateConfig,
    health: &dyn LinkHealth,
) -> Vec<(RateKey, Option<RateLimit>)> {
    let mut up = BTreeMap::new();
    let mut out = Vec::with_capacity(config.links.len() + config.pools.len() + config.apps.len());
    for (name, limit) in &config.links {
        let is_up = health.is_up(name);
        up.insert(name.as_str(), is_up);
        let value = if is_up { *limit } else { Some(RateLimit::ZERO) };
        out.push((RateKey::link(name.clone()), value));
    }
    for (name, members) in &config.pools {
        let mut sum = Some(RateLimit::ZERO);
        for m in members {
            // A member unknown to the configuration counts as down.
            let healthy = up.get(m.as_str()).copied().unwrap_or(false);
            if !healthy {
                continue;
            }
            sum = match (sum, config.links.get(m).copied().flatten()) {
                (Some(s), Some(l)) => Some(RateLimit::new(
                    s.rate + l.rate,
                    s.burst.saturating_add(l.burst),
                )),
                _ => None,
            };
        }
        out.push((RateKey::pool(name.clone()), sum));
    }
    for (app, limit) in &config.apps {
        out.push((RateKey::app(app.clone()), *limit));
    }
    out
}

/// Sets link and pool limits from link health, every interval.
///
/// # Defaults
///
/// Interval 10 s ([`DEFAULT_HEALTH_INTERVAL`]).
pub struct HealthAdjuster {
    limiter: Arc<dyn RateLimiter>,
    health: Arc<dyn LinkHealth>,
    interval: Duration,
}

impl HealthAdjuster {
    /// An adjuster setting `limiter`'s limits from `health`.
    pub fn new(limiter: Arc<dyn RateLimiter>, health: Arc<dyn LinkHealth>) -> Self {
        Self {
            limiter,
            health,
            interval: DEFAULT_HEALTH_INTERVAL,
        }
    }

    /// Sets the interval between checks.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// One check: computes every limit and sets each absolutely. Returns
    /// what was set. Tries every key even when one fails; the first error
    /// is returned after.
    pub async fn adjust(
        &self,
        config: &RateConfig,
    ) -> Result<Vec<(RateKey, Option<RateLimit>)>, LimitError> {
        let limits = compute_limits(config, self.health.as_ref());
        let mut first_err = None;
        for (key, limit) in &limits {
            if let Err(e) = self.limiter.set_limit(key, *limit).await {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(limits),
        }
    }

    /// Checks every interval (the first at once) with the configuration
    /// `config` returns at that moment, forever; errors are logged and the
    /// next interval tries again. Run it in a task that the gateway's
    /// shutdown cancels.
    pub async fn run<C>(self, config: C)
    where
        C: Fn() -> Arc<RateConfig> + Send + Sync,
    {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.adjust(&config()).await {
                tracing::warn!(error = %e, "link-health rate adjustment failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    fn config() -> RateConfig {
        let mut c = RateConfig::default();
        c.links.insert("a".into(), Some(RateLimit::new(100.0, 10)));
        c.links.insert("b".into(), Some(RateLimit::new(300.0, 30)));
        c.links.insert("free".into(), None);
        c.pools.insert("p".into(), vec!["a".into(), "b".into()]);
        c.pools.insert("q".into(), vec!["a".into(), "free".into()]);
        c.apps.insert("app1".into(), Some(RateLimit::new(5.0, 5)));
        c
    }

    fn limits_with_down(down: &[&str]) -> BTreeMap<RateKey, Option<RateLimit>> {
        let down: BTreeSet<String> = down.iter().map(|s| s.to_string()).collect();
        compute_limits(&config(), &move |l: &str| !down.contains(l))
            .into_iter()
            .collect()
    }

    #[test]
    fn healthy_links_should_get_their_configured_values_and_pools_the_sum() {
        let l = limits_with_down(&[]);
        assert_eq!(l[&RateKey::link("a")], Some(RateLimit::new(100.0, 10)));
        assert_eq!(l[&RateKey::pool("p")], Some(RateLimit::new(400.0, 40)));
        assert_eq!(
            l[&RateKey::pool("q")],
            None,
            "an unlimited member makes the pool unlimited"
        );
        assert_eq!(l[&RateKey::link("free")], None);
        assert_eq!(l[&RateKey::app("app1")], Some(RateLimit::new(5.0, 5)));
    }

    #[test]
    fn a_down_link_should_get_zero_and_leave_its_pools() {
        let l = limits_with_down(&["b"]);
        assert_eq!(l[&RateKey::link("b")], Some(RateLimit::ZERO));
        assert_eq!(l[&RateKey::pool("p")], Some(RateLimit::new(100.0, 10)));
        let l = limits_with_down(&["a", "b", "free"]);
        assert_eq!(l[&RateKey::pool("p")], Some(RateLimit::ZERO));
        assert_eq!(l[&RateKey::pool("q")], Some(RateLimit::ZERO));
        assert_eq!(l[&RateKey::link("free")], Some(RateLimit::ZERO));
    }

    #[test]
    fn equal_pools_should_halve_when_one_of_two_members_is_down() {
        let mut c = RateConfig::default();
        c.links.insert("x".into(), Some(RateLimit::new(250.0, 25)));
        c.links.insert("y".into(), Some(RateLimit::new(250.0, 25)));
        c.pools.insert("p".into(), vec!["x".into(), "y".into()]);
        let up = compute_limits(&c, &|_: &str| true);
        let down = compute_limits(&c, &|l: &str| l != "y");
        assert_eq!(up[2].1, Some(RateLimit::new(500.0, 50)));
        assert_eq!(down[2].1, Some(RateLimit::new(250.0, 25)));
    }

    #[test]
    fn a_snapshot_should_give_link_pool_and_app_limits() {
        let yaml = r#"
apiVersion: smsgw.io/v1alpha1
kind: SmppLink
metadata: {name: l1, labels: {tier: bulk}}
spec: {host: 127.0.0.1, port: 2775, systemId: s, password: p, rate: 500, burst: 50}
---
apiVersion: smsgw.io/v1alpha1
kind: SmppLink
metadata: {name: l2}
spec: {host: 127.0.0.1, port: 2775, systemId: s, password: p, rate: 200}
---
apiVersion: smsgw.io/v1alpha1
kind: EsmePool
metadata: {name: p1}
spec: {members: [{link: l1}, {link: l2, weight: 2}]}
"#;
        let snap = smsgw_crds::compile_manifests(yaml).expect("valid");
        let c = RateConfig::from_snapshot(&snap);
        assert_eq!(c.links["l1"], Some(RateLimit::new(500.0, 50)));
        assert_eq!(c.links["l2"], Some(RateLimit::new(200.0, 200)));
        assert_eq!(c.pools["p1"], vec!["l1".to_owned(), "l2".to_owned()]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_adjuster_should_set_values_absolutely_every_interval() {
        let limiter = Arc::new(crate::InProcessLimiter::new());
        let down = Arc::new(Mutex::new(BTreeSet::<String>::new()));
        let d = down.clone();
        let health = Arc::new(move |l: &str| !d.lock().unwrap().contains(l));
        let adjuster =
            HealthAdjuster::new(limiter.clone(), health).interval(Duration::from_secs(10));
        let cfg = Arc::new(config());
        tokio::spawn(adjuster.run(move || cfg.clone()));
        tokio::time::sleep(Duration::from_millis(1)).await;
        let p = RateKey::pool("p");
        assert_eq!(limiter.limit(&p), Some(RateLimit::new(400.0, 40)));
        // A pod racing with stale values is overwritten at the next check.
        limiter.set(&p, Some(RateLimit::new(1.0, 1))).unwrap();
        down.lock().unwrap().insert("b".into());
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(limiter.limit(&p), Some(RateLimit::new(100.0, 10)));
        assert_eq!(limiter.limit(&RateKey::link("b")), Some(RateLimit::ZERO));
        down.lock().unwrap().clear();
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(limiter.limit(&p), Some(RateLimit::new(400.0, 40)));
        assert_eq!(
            limiter.limit(&RateKey::link("b")),
            Some(RateLimit::new(300.0, 30))
        );
    }
}
