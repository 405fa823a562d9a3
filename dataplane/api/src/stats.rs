//! Statistics per link, pool and app for the admin API: messages
//! submitted, delivered, failed and refused by reason, and throughput.
//! In-process counters of this gateway since it started.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

/// Counters of one link, pool or app.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
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
#[derive(Debug, Clone, Default, Serialize)]
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
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
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

/// The live counters.
pub struct Stats {
    started: Instant,
    view: Mutex<StatsView>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            view: Mutex::default(),
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

    /// A message went out.
    pub fn submitted(&self, s: &Scope<'_>) {
        self.each(s, |c| c.submitted += 1);
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
    }

    /// A message was refused before submission with error `code`.
    pub fn rejected(&self, s: &Scope<'_>, code: &str) {
        self.each(s, |c| *c.rejected.entry(code.to_owned()).or_default() += 1);
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
        };
        s.submitted(&scope);
        s.finished(&scope, true);
        s.rejected(
            &Scope {
                app: "a",
                link: None,
                pool: Some("p"),
            },
            "daily_cp",
        );
        let v = s.view();
        assert_eq!((v.apps["a"].submitted, v.apps["a"].delivered), (1, 1));
        assert_eq!(v.links["l"].submitted, 1);
        assert_eq!(v.pools["p"].rejected["daily_cp"], 1);
        assert!(!v.links["l"].rejected.contains_key("daily_cp"));
    }
}
