//! Statistics per link, pool and app for the admin API: messages
//! submitted, delivered, failed and refused by reason, and throughput.
//! In-process counters of this gateway since it started, plus counters
//! per campaign (the send request's `task_id`) for `/dashboard/stats`.

use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Instant;

/// Campaigns counted at once; past it the least recently active one is
/// forgotten to make room (task ids are chosen by clients).
pub const MAX_CAMPAIGNS: usize = 10_000;

/// Counters of one link, pool or app.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
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
}

/// The rate limiter as the admin statistics show it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
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

/// Counters of one campaign (`task_id`) of one app.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
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
    campaigns: Mutex<HashMap<(String, String), (CampaignCounters, Instant)>>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            view: Mutex::default(),
            campaigns: Mutex::default(),
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
    fn each(&self, s: &Scope<'_>, f: impl Fn(&mut Counters)) {
        let mut v = self.view.lock().unwrap_or_else(|p| p.into_inner());
        f(v.apps.entry(s.app.to_owned()).or_default());
        if let Some(l) = s.link {
            f(v.links.entry(l.to_owned()).or_default());
        }
        if let Some(p) = s.pool {
            f(v.pools.entry(p.to_owned()).or_default());
        }
    }

    fn campaign(&self, s: &Scope<'_>, f: impl Fn(&mut CampaignCounters)) {
        let Some(task) = s.task.filter(|t| !t.is_empty()) else {
            return;
        };
        let mut map = self.campaigns.lock().unwrap_or_else(|p| p.into_inner());
        let key = (s.app.to_owned(), task.to_owned());
        if !map.contains_key(&key)
            && map.len() >= MAX_CAMPAIGNS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        let (c, at) = map.entry(key).or_insert_with(|| {
            let c = CampaignCounters {
                task_id: task.to_owned(),
                app_id: s.app.to_owned(),
                ..Default::default()
            };
            (c, Instant::now())
        });
        f(c);
        *at = Instant::now();
    }

    /// The `limit` most active campaigns (most messages submitted, then
    /// refused), of every app or only of `app`.
    pub fn top_campaigns(&self, app: Option<&str>, limit: usize) -> Vec<CampaignCounters> {
        let map = self.campaigns.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<CampaignCounters> = map
            .values()
            .map(|(c, _)| c)
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

    /// A message went out.
    pub fn submitted(&self, s: &Scope<'_>) {
        self.each(s, |c| c.submitted += 1);
        self.campaign(s, |c| c.submitted += 1);
    }

    /// A message reached a final state.
    pub fn finished(&self, s: &Scope<'_>, delivered: bool) {
        self.each(s, |c| {
            if delivered {
                c.delivered += 1
            } else {
                c.failed += 1
            }
        });
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
        self.each(s, |c| *c.rejected.entry(code.to_owned()).or_default() += 1);
        self.campaign(s, |c| c.rejected += 1);
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

    #[test]
    fn events_count_once_per_link_pool_and_app() {
        let s = Stats::default();
        let scope = Scope {
            app: "a",
            link: Some("l"),
            pool: Some("p"),
            task: None,
        };
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
}
