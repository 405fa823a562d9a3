//! Cluster-wide numbers (issue 17): every pod publishes its own share
//! (message counters, API calls, campaigns) where the others read it, so
//! `/api/v1/admin/stats`, the admin `GetStats` and `/dashboard/stats`
//! answer for the whole cluster whichever pod is asked, with a per-pod
//! breakdown. Links and CheckESME are merged by the cluster's
//! [`LinkControl`](smsgw_core::links::LinkControl) itself.

use crate::dashboard::RequestStats;
use crate::stats::{CampaignCounters, StatsView};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Campaigns a pod publishes: the most active ones, as many as a dashboard
/// may ask for.
pub const PUBLISHED_CAMPAIGNS: usize = crate::dashboard::MAX_TOP;

/// One pod's share, as it publishes it for the others.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodNumbers {
    /// Message counters.
    pub stats: StatsView,
    /// API calls over the last minute.
    pub requests: RequestStats,
    /// Its most active campaigns (every app).
    pub campaigns: Vec<CampaignCounters>,
    /// Resident memory, bytes.
    pub memory_rss_bytes: Option<u64>,
}

/// The other pods of the cluster, as they last published their numbers.
pub trait Peers: Send + Sync {
    /// This pod's name, as the breakdowns show it.
    fn pod(&self) -> String;
    /// Each live peer's name and last published numbers.
    fn peers(&self) -> Vec<(String, PodNumbers)>;
}

/// Sums API calls of pods serving side by side over the same minute.
pub(crate) fn add_requests(mut a: RequestStats, b: &RequestStats) -> RequestStats {
    a.window_secs = a.window_secs.max(b.window_secs);
    a.total += b.total;
    a.per_second += b.per_second;
    a.errors += b.errors;
    a.server_errors += b.server_errors;
    a.error_rate = if a.total == 0 {
        0.0
    } else {
        a.errors as f64 / a.total as f64
    };
    a
}

/// Campaigns of every pod merged by (app, task id), most messages first,
/// those of `app` only when given, at most `top`.
pub(crate) fn merge_campaigns(
    lists: impl IntoIterator<Item = Vec<CampaignCounters>>,
    app: Option<&str>,
    top: usize,
) -> Vec<CampaignCounters> {
    let mut by: BTreeMap<(String, String), CampaignCounters> = BTreeMap::new();
    for c in lists.into_iter().flatten() {
        if app.is_some_and(|a| a != c.app_id) {
            continue;
        }
        let e = by
            .entry((c.app_id.clone(), c.task_id.clone()))
            .or_insert_with(|| CampaignCounters {
                task_id: c.task_id.clone(),
                app_id: c.app_id.clone(),
                ..Default::default()
            });
        e.submitted += c.submitted;
        e.delivered += c.delivered;
        e.failed += c.failed;
        e.rejected += c.rejected;
    }
    let mut out: Vec<_> = by.into_values().collect();
    let total = |c: &CampaignCounters| c.submitted + c.rejected;
    out.sort_by(|a, b| {
        total(b)
            .cmp(&total(a))
            .then_with(|| a.task_id.cmp(&b.task_id))
    });
    out.truncate(top);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn campaign(app: &str, task: &str, submitted: u64) -> CampaignCounters {
        CampaignCounters {
            task_id: task.into(),
            app_id: app.into(),
            submitted,
            ..Default::default()
        }
    }

    #[test]
    fn campaigns_of_every_pod_add_up_per_app_and_task() {
        let merged = merge_campaigns(
            [
                vec![campaign("a", "t1", 5), campaign("b", "t1", 1)],
                vec![campaign("a", "t1", 7), campaign("a", "t2", 9)],
            ],
            None,
            10,
        );
        assert_eq!(
            merged,
            vec![
                campaign("a", "t1", 12),
                campaign("a", "t2", 9),
                campaign("b", "t1", 1)
            ]
        );
        let mine = merge_campaigns(
            [vec![campaign("b", "t1", 1)], vec![campaign("a", "t1", 3)]],
            Some("b"),
            10,
        );
        assert_eq!(
            mine,
            vec![campaign("b", "t1", 1)],
            "a user sees only their app"
        );
        assert_eq!(merge_campaigns([merged], None, 1).len(), 1);
    }

    #[test]
    fn api_calls_add_up_and_the_error_rate_is_recomputed() {
        let r = |total, errors| RequestStats {
            window_secs: 60.0,
            total,
            per_second: total as f64 / 60.0,
            errors,
            error_rate: errors as f64 / total as f64,
            server_errors: 0,
        };
        let s = add_requests(r(60, 0), &r(120, 30));
        assert_eq!((s.total, s.errors), (180, 30));
        assert!((s.per_second - 3.0).abs() < 1e-9);
        assert!((s.error_rate - 30.0 / 180.0).abs() < 1e-9);
    }
}
