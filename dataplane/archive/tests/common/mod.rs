//! Shared by this crate's tests: the S3 server (from `testing`) and peak RSS.
#![allow(dead_code)]

pub use smsgw_archive::testing::*;

/// Peak resident set of this process (VmHWM), in KiB.
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
