//! A 1,000,000-line blacklist from S3 into Redis: under 30 s with bounded
//! memory. Its own test binary, so the peak RSS measured (VmHWM) is this
//! load's and not another test's.

mod common;

use common::S3Server;
use smsgw_archive::{BlacklistSource, LoadOptions, load_blacklist};
use smsgw_contact::RedisBlacklists;
use smsgw_store::testing::RedisServer;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_line_blacklist_should_load_fast_in_bounded_memory() {
    let lines: u64 = std::env::var("BLACKLIST_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let s3 = S3Server::start().await;
    // Written straight into the server's directory, so the fixture never
    // sits in this process's memory.
    let path = s3.object_path("blacklists/big/numbers.csv");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    writeln!(f, "msisdn,added").unwrap();
    for i in 0..lines {
        if i % 100_000 == 99_999 {
            writeln!(f, "garbage-{i}").unwrap();
        } else {
            writeln!(f, "+44 7{:09},2026-01-01", i).unwrap();
        }
    }
    f.flush().unwrap();
    drop(f);
    let size = std::fs::metadata(&path).unwrap().len();

    let redis = RedisServer::start();
    let conn = redis::Client::open(redis.url())
        .unwrap()
        .get_connection_manager()
        .await
        .unwrap();
    let sink = RedisBlacklists::new(conn.clone(), "smsgw");
    let source = BlacklistSource {
        name: "big".into(),
        store: Arc::new(s3.store()),
        prefix: "blacklists/big/".into(),
    };
    let rss_before = common::peak_rss_kib();
    let t0 = Instant::now();
    let report = load_blacklist(&source, &sink, &LoadOptions::default())
        .await
        .unwrap();
    let elapsed = t0.elapsed();
    let rss_after = common::peak_rss_kib();
    let malformed = lines / 100_000;
    assert_eq!(report.lines, lines + 1);
    assert_eq!(report.malformed, malformed);
    assert_eq!(report.numbers, lines - malformed);
    assert_eq!(sink.len("big").await.unwrap(), (lines - malformed, 0));
    let mut c = conn.clone();
    let used: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut c)
        .await
        .unwrap();
    let redis_mem = used
        .lines()
        .find(|l| l.starts_with("used_memory_human:"))
        .unwrap_or("")
        .to_owned();
    eprintln!(
        "blacklist load: {} lines ({:.1} MiB) in {:.2?}; peak RSS {} KiB before, {} KiB after (+{} KiB); redis {}",
        lines + 1,
        size as f64 / (1 << 20) as f64,
        elapsed,
        rss_before,
        rss_after,
        rss_after.saturating_sub(rss_before),
        redis_mem
    );
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
    // Memory must not grow with the file: a 1 M-line list as Strings
    // would take over 60 MiB in this process.
    assert!(
        rss_after.saturating_sub(rss_before) < 48 * 1024,
        "peak RSS grew by {} KiB",
        rss_after - rss_before
    );
}
