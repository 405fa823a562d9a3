//! A bounded Redis connection: commands past `in_flight` wait for a turn
//! before their response timeout starts, so a burst larger than Redis
//! answers within the timeout is served late instead of failing together.

use smsgw_store::RedisConfig;
use smsgw_store::testing::RedisServer;
use std::time::Duration;

/// About 5 ms of Redis CPU per call (Redis runs scripts one at a time).
const BUSY: &str = "local i = 0 while i < tonumber(ARGV[1]) do i = i + 1 end return i";

/// Loop turns of [`BUSY`] that take Redis about 5 ms, measured here.
async fn turns_for_5ms(config: &RedisConfig) -> u64 {
    let mut conn = config.connect().await.unwrap();
    let script = redis::Script::new(BUSY);
    let n = 200_000u64;
    let t = std::time::Instant::now();
    let _: u64 = script.arg(n).invoke_async(&mut conn).await.unwrap();
    let per = t.elapsed().as_secs_f64() / n as f64;
    ((0.005 / per) as u64).max(1_000)
}

/// Fires `calls` busy scripts at once on one bounded connection; answers
/// how many failed.
async fn burst(server: &RedisServer, in_flight: usize, calls: usize) -> usize {
    let mut config = RedisConfig::new(server.url());
    config.response_timeout = Duration::from_millis(300);
    config.in_flight = in_flight;
    let n = turns_for_5ms(&config).await;
    let conn = config.connect_bounded().await.unwrap();
    let script = redis::Script::new(BUSY);
    let results = futures::future::join_all((0..calls).map(|_| {
        let (mut conn, script) = (conn.clone(), script.clone());
        async move {
            let r: redis::RedisResult<u64> = script.arg(n).invoke_async(&mut conn).await;
            r
        }
    }))
    .await;
    results.iter().filter(|r| r.is_err()).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_longer_than_the_timeout_waits_for_turns_instead_of_failing() {
    let server = RedisServer::start();
    // 200 calls of ≈ 5 ms are ≈ 1 s of Redis: with 4 out at once each
    // waits ≈ 20 ms on the wire, far inside the 300 ms timeout.
    assert_eq!(burst(&server, 4, 200).await, 0, "a bounded burst failed");
    // The same burst with every call out at once: the calls queued
    // behind ≈ 300 ms of others time out. This is what the bound is for
    // (and shows the check above can fail).
    let failed = burst(&server, 100_000, 200).await;
    assert!(
        failed > 0,
        "an unbounded burst of 1 s of work should time out"
    );
}
