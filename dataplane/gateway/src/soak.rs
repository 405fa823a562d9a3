//! The soak mode of `smsgw bench` (`--duration` with `--soak-csv`): while
//! the load runs, samples the gateway process — resident memory
//! (`/proc/<pid>/status` VmRSS), CPU (`/proc/<pid>/stat` utime + stime) —
//! and the load's own counters every `--sample-every`, one CSV row each,
//! flushed as it goes so a run cut short keeps what it measured.
//! `scripts/soak_plot.py` turns the CSV into a PNG (RSS and msg/s over time).

use anyhow::Context;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The CSV's header; one row per sample follows.
pub(crate) const HEADER: &str = "elapsed_s,rss_kib,cpu_percent,sent_per_s,accepted_per_s,delivered_per_s,sent_total,accepted_total,delivered_total,failed_total,data_dir_bytes,rss_anon_kib,rss_file_kib,threads";

/// The `/proc/<pid>/status` fields sampled after `VmRSS`: what part of the
/// resident set is heap (anonymous) and what is file pages, and the
/// thread count (each thread has its own allocator heap).
const STATUS_FIELDS: [&str; 3] = ["RssAnon:", "RssFile:", "Threads:"];

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ: 100 on every
/// Linux architecture the gateway ships for).
const TICKS_PER_SEC: f64 = 100.0;

/// The load's counters, shared with the sampler.
#[derive(Debug, Default)]
pub(crate) struct LoadCounters {
    /// Messages handed to the gateway.
    pub(crate) sent: AtomicU64,
    /// Messages answered as accepted.
    pub(crate) accepted: AtomicU64,
    /// Delivered status events seen (with `--wait-receipts`).
    pub(crate) delivered: Arc<AtomicU64>,
    /// Sends that failed.
    pub(crate) failed: AtomicU64,
}

/// What the sampler samples and where it writes.
#[derive(Debug, Clone)]
pub(crate) struct Soak {
    /// The CSV file.
    pub(crate) csv: PathBuf,
    /// The gateway's process id.
    pub(crate) pid: u32,
    /// Its data directory, whose size is sampled too (optional).
    pub(crate) data_dir: Option<PathBuf>,
    /// Time between samples.
    pub(crate) every: Duration,
}

/// Resident set of `pid` in KiB.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmRSS:")
}

/// A numeric field of `/proc/<pid>/status` (`kB` values in KiB).
fn status_field(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let v = status.lines().find_map(|l| l.strip_prefix(field))?.trim();
    v.strip_suffix("kB").unwrap_or(v).trim().parse().ok()
}

/// User plus system CPU time of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count from its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) … utime(14) stime(15) → indexes 11 and 12.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Bytes of the regular files under `dir` (recursively).
pub(crate) fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

impl Soak {
    /// Checks the process can be read and creates the CSV with its header.
    pub(crate) fn open(&self) -> anyhow::Result<std::fs::File> {
        rss_kib(self.pid).with_context(|| {
            format!(
                "cannot read the resident memory of process {} (/proc/{}/status)",
                self.pid, self.pid
            )
        })?;
        let mut f = std::fs::File::create(&self.csv)
            .with_context(|| format!("cannot create {}", self.csv.display()))?;
        writeln!(f, "{HEADER}")?;
        Ok(f)
    }

    /// Samples every `every` until `stop` is cancelled, then once more.
    pub(crate) async fn run(
        self,
        mut out: std::fs::File,
        start: Instant,
        load: Arc<LoadCounters>,
        stop: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<()> {
        let mut last = (start, cpu_ticks(self.pid).unwrap_or(0), [0u64; 3]);
        let mut tick = tokio::time::interval_at((start + self.every).into(), self.every);
        loop {
            let stopping = tokio::select! {
                _ = tick.tick() => false,
                () = stop.cancelled() => true,
            };
            let now = Instant::now();
            let cpu = cpu_ticks(self.pid).unwrap_or(last.1);
            let totals = [
                load.sent.load(Ordering::Relaxed),
                load.accepted.load(Ordering::Relaxed),
                load.delivered.load(Ordering::Relaxed),
            ];
            let secs = now.duration_since(last.0).as_secs_f64().max(1e-3);
            let rate = |i: usize| totals[i].saturating_sub(last.2[i]) as f64 / secs;
            writeln!(
                out,
                "{:.1},{},{:.1},{:.0},{:.0},{:.0},{},{},{},{},{},{}",
                now.duration_since(start).as_secs_f64(),
                rss_kib(self.pid).map_or(String::new(), |v| v.to_string()),
                cpu.saturating_sub(last.1) as f64 / TICKS_PER_SEC / secs * 100.0,
                rate(0),
                rate(1),
                rate(2),
                totals[0],
                totals[1],
                totals[2],
                load.failed.load(Ordering::Relaxed),
                self.data_dir
                    .as_deref()
                    .map_or(String::new(), |d| dir_bytes(d).to_string()),
                STATUS_FIELDS
                    .map(|f| status_field(self.pid, f).map_or(String::new(), |v| v.to_string()))
                    .join(","),
            )?;
            out.flush()?;
            last = (now, cpu, totals);
            if stopping {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_can_be_sampled() {
        let pid = std::process::id();
        assert!(rss_kib(pid).is_some_and(|k| k > 0));
        assert!(cpu_ticks(pid).is_some());
        assert!(status_field(pid, "RssAnon:").is_some_and(|k| k > 0));
        assert!(status_field(pid, "Threads:").is_some_and(|n| n >= 1));
        assert_eq!(rss_kib(u32::MAX), None, "no such process");
    }
}
