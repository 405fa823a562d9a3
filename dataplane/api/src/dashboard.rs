//! `GET /dashboard/stats`: what an operator's dashboard polls — API calls
//! per second and error rate over the last minute, the most active
//! campaigns (`task_id`), and this process's CPU, memory and the disk of
//! its data directory.

use crate::auth::Caller;
use crate::metrics::WINDOW_SECS;
use crate::stats::CampaignCounters;
use crate::{ApiError, ApiState};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

/// Campaigns listed by default, and at most.
pub const DEFAULT_TOP: usize = 10;
/// Largest `top` accepted.
pub const MAX_TOP: usize = 100;

/// The dashboard's numbers.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DashboardStats {
    /// Seconds since this gateway process started counting.
    pub uptime_secs: f64,
    /// API calls (REST and gRPC, each message of a send stream counted)
    /// over the last minute; health, metrics, documentation and dashboard
    /// requests are not counted.
    pub requests: RequestStats,
    /// Most active campaigns by `task_id` (all apps for admins, the
    /// caller's app for users), most messages first.
    pub top_campaigns: Vec<CampaignCounters>,
    /// This process.
    pub process: ProcessStats,
    /// The file system of the data directory; absent when the gateway has
    /// none or it cannot be read.
    pub disk: Option<DiskStats>,
    /// In a cluster, each pod's API calls and memory, the answering pod
    /// first (`requests` and `top_campaigns` then sum every pod; `process`
    /// and `disk` are the answering pod's). Empty for one process.
    pub pods: Vec<PodDashboard>,
}

/// One pod's share of the dashboard.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PodDashboard {
    /// The pod.
    pub pod: String,
    /// Its API calls over the last minute.
    pub requests: RequestStats,
    /// Its resident memory, bytes.
    pub memory_rss_bytes: Option<u64>,
}

/// Calls and errors over the last minute.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RequestStats {
    /// Seconds covered (60, or the uptime when shorter).
    pub window_secs: f64,
    /// Calls answered in the window.
    pub total: u64,
    /// Calls per second.
    pub per_second: f64,
    /// Calls answered with an error (HTTP status >= 400, gRPC code not OK).
    pub errors: u64,
    /// `errors / total` (0 when there were no calls).
    pub error_rate: f64,
    /// Calls that failed on the gateway's side (HTTP 5xx and the gRPC
    /// equivalents).
    pub server_errors: u64,
}

/// CPU and memory of this process.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProcessStats {
    /// CPU used since the previous dashboard request (or since start), in
    /// percent of one core (200 = two cores busy).
    pub cpu_percent: Option<f64>,
    /// CPU seconds used since the process started (user + system).
    pub cpu_seconds_total: Option<f64>,
    /// Cores available to the process.
    pub cores: u32,
    /// Resident memory, bytes.
    pub memory_rss_bytes: Option<u64>,
    /// Virtual memory, bytes.
    pub memory_virtual_bytes: Option<u64>,
}

/// Space on the file system of the data directory.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DiskStats {
    /// The data directory.
    pub path: String,
    /// Size of the file system, bytes.
    pub total_bytes: u64,
    /// Bytes in use.
    pub used_bytes: u64,
    /// Bytes this process may still write.
    pub available_bytes: u64,
    /// `used / total` in percent.
    pub used_percent: f64,
}

/// What the dashboard keeps between requests: the data directory and the
/// previous CPU sample.
pub struct Dashboard {
    started: Instant,
    data_dir: Option<PathBuf>,
    last_cpu: Mutex<(Instant, Option<f64>)>,
}

impl Dashboard {
    /// A dashboard over `data_dir` (whose disk is reported), sampling CPU
    /// from now on.
    pub fn new(data_dir: Option<PathBuf>) -> Self {
        Self {
            started: Instant::now(),
            data_dir,
            last_cpu: Mutex::new((Instant::now(), cpu_seconds())),
        }
    }

    /// CPU percent since the previous call, and the total CPU seconds.
    fn cpu(&self) -> (Option<f64>, Option<f64>) {
        let now = Instant::now();
        let total = cpu_seconds();
        let mut last = self.last_cpu.lock().unwrap_or_else(|p| p.into_inner());
        let wall = now.duration_since(last.0).as_secs_f64();
        let percent = match (total, last.1) {
            (Some(t), Some(prev)) if wall > 0.0 => Some(((t - prev) / wall * 100.0).max(0.0)),
            _ => None,
        };
        *last = (now, total);
        (percent, total)
    }
}

impl Default for Dashboard {
    fn default() -> Self {
        Self::new(None)
    }
}

/// The dashboard as `caller` may see it: admins see every app's campaigns,
/// users only their own app's; no caller (the public dashboard) every app's.
pub async fn stats(
    state: &ApiState,
    caller: Option<&Caller>,
    top: Option<usize>,
) -> Result<DashboardStats, ApiError> {
    let top = top.unwrap_or(DEFAULT_TOP);
    if !(1..=MAX_TOP).contains(&top) {
        return Err(ApiError::InvalidField {
            field: "top",
            reason: format!("must be between 1 and {MAX_TOP}"),
        });
    }
    let app = match caller {
        // No caller: the public dashboard (`--public-dashboard`), which
        // showed every campaign on the platform.
        None | Some(Caller::AdminKey) => None,
        Some(Caller::User {
            user_id, app_id, ..
        }) => {
            // The admin flag is re-read, so a revoked admin sees only their app.
            let admin = state
                .auth
                .store()
                .get(user_id)
                .await?
                .is_some_and(|u| u.admin);
            (!admin).then_some(app_id.as_str())
        }
    };
    let d = &state.dashboard;
    let (cpu_percent, cpu_seconds_total) = d.cpu();
    let (rss, virt) = memory();
    let mut requests = request_stats(state);
    let mut top_campaigns = state.messages.stats.top_campaigns(app, top);
    let mut pods = Vec::new();
    if let Some(c) = &state.cluster {
        let peers = c.peers();
        pods.push(PodDashboard {
            pod: c.pod(),
            requests: requests.clone(),
            memory_rss_bytes: rss,
        });
        let mut lists = vec![top_campaigns];
        for (pod, n) in peers {
            requests = crate::cluster::add_requests(requests, &n.requests);
            pods.push(PodDashboard {
                pod,
                requests: n.requests,
                memory_rss_bytes: n.memory_rss_bytes,
            });
            lists.push(n.campaigns);
        }
        top_campaigns = crate::cluster::merge_campaigns(lists, app, top);
    }
    Ok(DashboardStats {
        uptime_secs: d.started.elapsed().as_secs_f64(),
        requests,
        top_campaigns,
        pods,
        process: ProcessStats {
            cpu_percent,
            cpu_seconds_total,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            memory_rss_bytes: rss,
            memory_virtual_bytes: virt,
        },
        disk: d.data_dir.as_deref().and_then(disk),
    })
}

/// API calls of this process over the last minute.
pub(crate) fn request_stats(state: &ApiState) -> RequestStats {
    let w = state.metrics.recent.totals();
    RequestStats {
        window_secs: w.secs.min(WINDOW_SECS as f64),
        total: w.calls,
        per_second: w.calls as f64 / w.secs,
        errors: w.errors,
        error_rate: if w.calls == 0 {
            0.0
        } else {
            w.errors as f64 / w.calls as f64
        },
        server_errors: w.server_errors,
    }
}

/// User + system CPU seconds of this process, from `/proc/self/stat`
/// (Linux; `None` elsewhere).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name (which may hold spaces):
    // state is field 3, utime 14 and stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = rustix::param::clock_ticks_per_second();
    (ticks > 0).then(|| (utime + stime) as f64 / ticks as f64)
}

/// Resident and virtual memory of this process, from `/proc/self/statm`.
pub(crate) fn memory() -> (Option<u64>, Option<u64>) {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return (None, None);
    };
    let page = rustix::param::page_size() as u64;
    let mut f = statm
        .split_ascii_whitespace()
        .map(|v| v.parse::<u64>().ok().map(|p| p * page));
    let virt = f.next().flatten();
    let rss = f.next().flatten();
    (rss, virt)
}

/// Space on the file system holding `path`.
fn disk(path: &Path) -> Option<DiskStats> {
    let s = rustix::fs::statvfs(path).ok()?;
    let total = s.f_blocks * s.f_frsize;
    let free = s.f_bfree * s.f_frsize;
    let used = total.saturating_sub(free);
    Some(DiskStats {
        path: path.display().to_string(),
        total_bytes: total,
        used_bytes: used,
        available_bytes: s.f_bavail * s.f_frsize,
        used_percent: if total == 0 {
            0.0
        } else {
            used as f64 * 100.0 / total as f64
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_reads_its_own_cpu_memory_and_disk() {
        // Burn a little CPU so the total is above zero.
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(cpu_seconds().expect("linux /proc") > 0.0);
        let (rss, virt) = memory();
        assert!(rss.unwrap() > 1 << 20 && virt.unwrap() >= rss.unwrap());
        let dir = tempfile::tempdir().unwrap();
        let d = disk(dir.path()).unwrap();
        assert!(d.total_bytes > 0 && d.available_bytes <= d.total_bytes);
        assert!((0.0..=100.0).contains(&d.used_percent));
    }

    #[test]
    fn cpu_percent_is_measured_between_two_samples() {
        let d = Dashboard::new(None);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (percent, total) = d.cpu();
        assert!(percent.unwrap() >= 0.0 && total.unwrap() > 0.0);
    }
}
