//! Statistics per link, pool and app: messages submitted, delivered,
//! failed and refused by reason, and throughput. In-process counters of this
//! gateway since it started, shown by the admin API and exported to
//! Prometheus (`smsgw_messages_*_total{scope, name}`, see METRICS.md) from
//! the same calls, so the two never disagree.
//! Plus counters per campaign (the send request's `task_id`) for
//! `/dashboard/stats`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use smsgw_core::bounded::BoundedMap;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Campaigns counted at once; past it the least recently active one is
/// forgotten to make room (task ids are chosen by clients).
pub const MAX_CAMPAIGNS: usize = 10_000;

/// Counters of one link, pool or app.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Counters {
    /// Messages submitted (at least one segment accepted by the SMSC).
    pub submitted: u64,
    /// Messages delivered (every segment's receipt DELIVRD).
    pub delivered: u64,
    /// Messages failed for good (a failed receipt).
    pub failed: u64,
    /// Messages refused before submission, by error code.
    pub rejected: BTreeMap<String, u64>,
    /// Submitted messages per second, averaged since the gateway started.
    pub throughput: f64,
}

/// Every counter, as the admin API shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatsView {
    /// Seconds the counters cover.
    pub uptime_secs: f64,
    /// Per link.
    pub links: BTreeMap<String, Counters>,
    /// Per pool.
    pub pools: BTreeMap<String, Counters>,
    /// Per app.
    pub apps: BTreeMap<String, Counters>,
    /// The rate limiter: the mode in force and its shared store.
    pub limiter: LimiterView,
    /// In a cluster, each pod's share (every link, pool and app summed),
    /// the answering pod first; the maps above then sum every pod. Empty
    /// for one process.
    #[serde(default)]
    pub pods: Vec<PodCounters>,
}

/// One pod's share of the cluster's counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PodCounters {
    /// The pod.
    pub pod: String,
    /// Seconds its counters cover.
    pub uptime_secs: f64,
    /// Its counters, every app summed.
    pub counters: Counters,
}

impl StatsView {
    /// The cluster's view: this pod's (`pod`) and every peer's summed per
    /// link, pool and app, with each pod's share in [`StatsView::pods`].
    /// The limiter and uptime stay this pod's.
    pub fn merged(mut self, pod: &str, peers: Vec<(String, StatsView)>) -> StatsView {
        let share = |pod: &str, v: &StatsView| PodCounters {
            pod: pod.to_owned(),
            uptime_secs: v.uptime_secs,
            counters: v.apps.values().fold(Counters::default(), |mut acc, c| {
                acc.add(c);
                acc
            }),
        };
        let mine = share(pod, &self);
        self.pods = vec![mine];
        for (name, peer) in peers {
            self.pods.push(share(&name, &peer));
            for (mine, theirs) in [
                (&mut self.links, peer.links),
                (&mut self.pools, peer.pools),
                (&mut self.apps, peer.apps),
            ] {
                for (k, c) in theirs {
                    mine.entry(k).or_default().add(&c);
                }
            }
        }
        self
    }
}

impl Counters {
    /// Adds `other` in (throughputs add up: pods send side by side).
    pub fn add(&mut self, other: &Counters) {
        self.submitted += other.submitted;
        self.delivered += other.delivered;
        self.failed += other.failed;
        for (k, n) in &other.rejected {
            *self.rejected.entry(k.clone()).or_default() += n;
        }
        self.throughput += other.throughput;
    }
}

/// The rate limiter as the admin statistics show it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LimiterView {
    /// `in_process`, `shared`, `fail_open` or `fail_closed`.
    pub mode: String,
    /// Gateways sharing the limits (last count seen), when shared.
    pub live_pods: Option<u32>,
    /// Acquisitions answered.
    pub acquires: u64,
    /// Round trips to the shared store (fewer than acquisitions under load:
    /// they are batched).
    pub round_trips: u64,
    /// The shared store's most recent error.
    pub last_error: Option<String>,
}

impl From<smsgw_core::limits::LimiterStatus> for LimiterView {
    fn from(s: smsgw_core::limits::LimiterStatus) -> Self {
        Self {
            mode: s.mode.as_str().to_owned(),
            live_pods: s.live_pods,
            acquires: s.acquires,
            round_trips: s.round_trips,
            last_error: s.last_error,
        }
    }
}

/// Labels of a per-scope message counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabels {
    /// `link`, `pool` or `app`.
    pub scope: &'static str,
    /// The link, pool or app id.
    pub name: String,
}

/// Labels of a refusal counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    /// `link`, `pool` or `app`.
    pub scope: &'static str,
    /// The link, pool or app id.
    pub name: String,
    /// The refusal's error code (`rate_limited`, `daily_cp`, …).
    pub reason: String,
}

/// Labels of a per-link series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LinkLabels {
    /// Link name.
    pub link: String,
}

/// Counters of one campaign (`task_id`) of one app.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CampaignCounters {
    /// The campaign's `task_id`.
    pub task_id: String,
    /// The app that sent it.
    pub app_id: String,
    /// Messages submitted.
    pub submitted: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Messages failed for good.
    pub failed: u64,
    /// Messages refused before submission (any reason).
    pub rejected: u64,
}

/// The live counters.
pub struct Stats {
    started: Instant,
    view: Mutex<StatsView>,
    /// By (app, task id), with the time of the last event.
    campaigns: Mutex<BoundedMap<(String, String), CampaignCounters>>,
    submitted: Family<ScopeLabels, Counter>,
    delivered: Family<ScopeLabels, Counter>,
    failed: Family<ScopeLabels, Counter>,
    refused: Family<RefusedLabels, Counter>,
    receipt_latency: Family<LinkLabels, Histogram>,
    /// Whether the Prometheus series are also kept per app (`scope="app"`).
    per_app_series: std::sync::atomic::AtomicBool,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            per_app_series: std::sync::atomic::AtomicBool::new(false),
            started: Instant::now(),
            view: Mutex::default(),
            campaigns: Mutex::new(BoundedMap::new(
                "campaigns",
                MAX_CAMPAIGNS,
                usize::MAX,
                Duration::MAX,
            )),
            submitted: Family::default(),
            delivered: Family::default(),
            failed: Family::default(),
            refused: Family::default(),
            // 10 ms … ~87 min.
            receipt_latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.01, 2.0, 20))
            }),
        }
    }
}

/// Which counters an event touches.
pub struct Scope<'a> {
    /// App.
    pub app: &'a str,
    /// Link that carried it, if known.
    pub link: Option<&'a str>,
    /// Pool it was sent to, if any.
    pub pool: Option<&'a str>,
    /// Campaign (`task_id`), if the request named one.
    pub task: Option<&'a str>,
}

impl Stats {
    /// Registers the Prometheus series in `registry` (the gateway's,
    /// prefixed `smsgw`).
    pub fn register(&self, registry: &mut Registry) {
        for (name, help, family) in [
            (
                "messages_submitted",
                "Messages submitted (at least one segment accepted by the SMSC), by link, pool and app",
                &self.submitted,
            ),
            (
                "messages_delivered",
                "Messages delivered (every segment DELIVRD), by link, pool and app",
                &self.delivered,
            ),
            (
                "messages_failed",
                "Messages failed for good (a failed receipt), by link, pool and app",
                &self.failed,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "messages_refused",
            "Messages refused before submission, by link, pool, app and reason",
            self.refused.clone(),
        );
        registry.register(
            "receipt_latency_seconds",
            "Time from a segment's submit_sm_resp to its delivery receipt, by link",
            self.receipt_latency.clone(),
        );
    }

    /// Also exports the message series per app (`scope="app"`, one series
    /// per app id). Off by default: `/metrics` is public and would list
    /// every tenant's app id and traffic.
    pub fn set_per_app_series(&self, on: bool) {
        self.per_app_series
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Runs `f` on the counters of every scope of `s`, and `series` with
    /// each scope's name and labels.
    fn each(&self, s: &Scope<'_>, f: impl Fn(&mut Counters), series: impl Fn(&'static str, &str)) {
        let mut v = self.view.lock().unwrap_or_else(|p| p.into_inner());
        f(v.apps.entry(s.app.to_owned()).or_default());
        if self
            .per_app_series
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            series("app", s.app);
        }
        if let Some(l) = s.link {
            f(v.links.entry(l.to_owned()).or_default());
            series("link", l);
        }
        if let Some(p) = s.pool {
            f(v.pools.entry(p.to_owned()).or_default());
            series("pool", p);
        }
    }

    fn campaign(&self, s: &Scope<'_>, f: impl Fn(&mut CampaignCounters)) {
        let Some(task) = s.task.filter(|t| !t.is_empty()) else {
            return;
        };
        let mut map = self.campaigns.lock().unwrap_or_else(|p| p.into_inner());
        let key = (s.app.to_owned(), task.to_owned());
        // Taken out and put back, so the campaign becomes the most recent.
        let mut c = map.remove(&key).unwrap_or_else(|| CampaignCounters {
            task_id: task.to_owned(),
            app_id: s.app.to_owned(),
            ..Default::default()
        });
        f(&mut c);
        let bytes = 2 * (s.app.len() + task.len()) + std::mem::size_of::<CampaignCounters>() + 48;
        map.insert(key, c, bytes, Instant::now());
    }

    /// What the campaign counters hold, for the `smsgw_memory_*` gauges.
    pub fn campaigns_memory(&self) -> smsgw_core::bounded::MemoryUse {
        self.campaigns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .memory()
    }

    /// The `limit` most active campaigns (most messages submitted, then
    /// refused), of every app or only of `app`.
    pub fn top_campaigns(&self, app: Option<&str>, limit: usize) -> Vec<CampaignCounters> {
        let map = self.campaigns.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<CampaignCounters> = map
            .values()
            .filter(|c| app.is_none_or(|a| a == c.app_id))
            .cloned()
            .collect();
        v.sort_by(|a, b| {
            (b.submitted + b.rejected, b.submitted)
                .cmp(&(a.submitted + a.rejected, a.submitted))
                .then_with(|| (&a.app_id, &a.task_id).cmp(&(&b.app_id, &b.task_id)))
        });
        v.truncate(limit);
        v
    }

    fn inc(family: &Family<ScopeLabels, Counter>, scope: &'static str, name: &str) {
        family
            .get_or_create(&ScopeLabels {
                scope,
                name: name.to_owned(),
            })
            .inc();
    }

    /// A message went out.
    pub fn submitted(&self, s: &Scope<'_>) {
        self.each(
            s,
            |c| c.submitted += 1,
            |scope, name| Self::inc(&self.submitted, scope, name),
        );
        self.campaign(s, |c| c.submitted += 1);
    }

    /// A message reached a final state.
    pub fn finished(&self, s: &Scope<'_>, delivered: bool) {
        let family = if delivered {
            &self.delivered
        } else {
            &self.failed
        };
        self.each(
            s,
            |c| {
                if delivered {
                    c.delivered += 1
                } else {
                    c.failed += 1
                }
            },
            |scope, name| Self::inc(family, scope, name),
        );
        self.campaign(s, |c| {
            if delivered {
                c.delivered += 1
            } else {
                c.failed += 1
            }
        });
    }

    /// A message was refused before submission with error `code`.
    pub fn rejected(&self, s: &Scope<'_>, code: &str) {
        self.each(
            s,
            |c| *c.rejected.entry(code.to_owned()).or_default() += 1,
            |scope, name| {
                self.refused
                    .get_or_create(&RefusedLabels {
                        scope,
                        name: name.to_owned(),
                        reason: code.to_owned(),
                    })
                    .inc();
            },
        );
        self.campaign(s, |c| c.rejected += 1);
    }

    /// A delivery receipt arrived `latency` after its segment was submitted
    /// over `link`.
    pub fn receipt_latency(&self, link: &str, latency: std::time::Duration) {
        self.receipt_latency
            .get_or_create(&LinkLabels {
                link: link.to_owned(),
            })
            .observe(latency.as_secs_f64());
    }

    /// The counters now, with throughput filled in.
    pub fn view(&self) -> StatsView {
        let mut v = self.view.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        v.uptime_secs = secs;
        for c in v
            .links
            .values_mut()
            .chain(v.pools.values_mut())
            .chain(v.apps.values_mut())
        {
            c.throughput = c.submitted as f64 / secs;
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// App `a`, link `l` and pool `p`, no campaign.
    const EVERY_SCOPE: Scope<'static> = Scope {
        app: "a",
        link: Some("l"),
        pool: Some("p"),
        task: None,
    };

    #[test]
    fn the_cluster_view_sums_every_pod_and_keeps_each_share() {
        let pod = |n: u64, link: &str| {
            let s = Stats::default();
            for _ in 0..n {
                let scope = Scope {
                    app: "a",
                    link: Some(link),
                    pool: Some("p"),
                    task: None,
                };
                s.submitted(&scope);
                s.finished(&scope, true);
            }
            s.view()
        };
        let v = pod(2, "l1").merged(
            "p-0",
            vec![("p-1".into(), pod(3, "l1")), ("p-2".into(), pod(4, "l2"))],
        );
        assert_eq!(v.links["l1"].submitted, 5);
        assert_eq!(v.links["l2"].delivered, 4);
        assert_eq!(v.pools["p"].submitted, 9);
        assert_eq!(v.apps["a"].delivered, 9);
        let shares: Vec<(&str, u64)> = v
            .pods
            .iter()
            .map(|p| (p.pod.as_str(), p.counters.submitted))
            .collect();
        assert_eq!(
            shares,
            [("p-0", 2), ("p-1", 3), ("p-2", 4)],
            "the answering pod first"
        );
        let json = serde_json::to_string(&v).unwrap();
        let back: StatsView = serde_json::from_str(&json).unwrap();
        assert_eq!(back.pods, v.pods, "what a pod publishes reads back");
    }

    #[test]
    fn events_count_once_per_link_pool_and_app() {
        let s = Stats::default();
        let scope = EVERY_SCOPE;
        s.submitted(&scope);
        s.finished(&scope, true);
        s.rejected(
            &Scope {
                app: "a",
                link: None,
                pool: Some("p"),
                task: None,
            },
            "daily_cp",
        );
        let v = s.view();
        assert_eq!((v.apps["a"].submitted, v.apps["a"].delivered), (1, 1));
        assert_eq!(v.links["l"].submitted, 1);
        assert_eq!(v.pools["p"].rejected["daily_cp"], 1);
        assert!(!v.links["l"].rejected.contains_key("daily_cp"));
    }

    #[test]
    fn campaigns_are_counted_per_app_and_ranked_by_volume() {
        let s = Stats::default();
        let scope = |app, task| Scope {
            app,
            link: Some("l"),
            pool: None,
            task: Some(task),
        };
        for _ in 0..3 {
            s.submitted(&scope("a", "big"));
        }
        s.submitted(&scope("a", "small"));
        s.finished(&scope("a", "small"), false);
        s.rejected(&scope("b", "big"), "daily_cp");
        s.submitted(&Scope {
            task: None,
            ..scope("a", "")
        });
        let all = s.top_campaigns(None, 10);
        let names: Vec<_> = all.iter().map(|c| (&*c.app_id, &*c.task_id)).collect();
        assert_eq!(names, [("a", "big"), ("a", "small"), ("b", "big")]);
        assert_eq!((all[1].submitted, all[1].failed), (1, 1));
        assert_eq!(all[2].rejected, 1);
        assert_eq!(s.top_campaigns(Some("b"), 10).len(), 1);
        assert_eq!(s.top_campaigns(None, 1).len(), 1);
    }

    #[test]
    fn campaigns_past_the_cap_push_out_the_least_recent() {
        let s = Stats::default();
        for i in 0..=MAX_CAMPAIGNS {
            s.submitted(&Scope {
                app: "a",
                link: None,
                pool: None,
                task: Some(&i.to_string()),
            });
        }
        let all = s.top_campaigns(None, usize::MAX);
        assert_eq!(all.len(), MAX_CAMPAIGNS);
        assert!(!all.iter().any(|c| c.task_id == "0"));
    }

    #[test]
    fn per_app_series_are_off_unless_asked_for() {
        let s = Stats::default();
        let mut registry = Registry::with_prefix("smsgw");
        s.register(&mut registry);
        s.submitted(&EVERY_SCOPE);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(!text.contains(r#"scope="app""#), "{text}");
        assert!(text.contains(r#"smsgw_messages_submitted_total{scope="pool",name="p"} 1"#));
        assert_eq!(
            s.view().apps["a"].submitted,
            1,
            "the admin view still has it"
        );
    }

    #[test]
    fn the_same_events_show_in_prometheus() {
        let s = Stats::default();
        s.set_per_app_series(true);
        let mut registry = Registry::with_prefix("smsgw");
        s.register(&mut registry);
        let scope = EVERY_SCOPE;
        s.submitted(&scope);
        s.finished(&scope, false);
        s.rejected(&scope, "rate_limited");
        s.receipt_latency("l", std::time::Duration::from_millis(70));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            r#"smsgw_messages_submitted_total{scope="pool",name="p"} 1"#,
            r#"smsgw_messages_submitted_total{scope="app",name="a"} 1"#,
            r#"smsgw_messages_failed_total{scope="link",name="l"} 1"#,
            r#"smsgw_messages_refused_total{scope="app",name="a",reason="rate_limited"} 1"#,
            r#"smsgw_receipt_latency_seconds_count{link="l"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }
}
