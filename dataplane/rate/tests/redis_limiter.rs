//! The Redis limiter against a real `redis-server` started here.

mod common;

use std::time::{Duration, Instant};

use common::RedisProc;
use common::suite;
use smsgw_core::limits::{LimitError, LimiterMode, RateKey, RateLimit, RateLimiter};
use smsgw_rate::{FailMode, RedisLimiter, RedisLimiterConfig};
use smsgw_store::testing::RedisServer;

fn config(url: &str) -> RedisLimiterConfig {
    RedisLimiterConfig {
        // Generous: the machine running the tests may be busy.
        response_timeout: Duration::from_secs(1),
        heartbeat_interval: Duration::from_millis(200),
        pod_ttl: Duration::from_millis(600),
        probe_interval: Duration::from_millis(50),
        ..RedisLimiterConfig::single(url)
    }
}

macro_rules! suite_test {
    ($name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let server = RedisServer::start();
            let url = server.url();
            suite::$name(&move || config(&url)).await;
        }
    };
}

suite_test!(burst_then_rate);
suite_test!(all_keys_or_none);
suite_test!(limits_and_tokens_are_shared_by_pods);
suite_test!(three_pods_should_hold_the_link_rate_exactly);
suite_test!(concurrent_acquisitions_should_share_round_trips);
suite_test!(waiting_should_book_slots_in_order);
suite_test!(health_should_halve_and_restore_a_pool);
suite_test!(pods_should_agree_on_link_health);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_should_refuse_at_once_when_redis_is_gone() {
    let server = RedisServer::start();
    let cfg = RedisLimiterConfig {
        fail_mode: FailMode::Closed,
        response_timeout: Duration::from_millis(100),
        ..config(&server.url())
    };
    let l = RedisLimiter::connect(cfg, Duration::from_secs(10)).await;
    let link = [RateKey::link("l")];
    l.set_limit(&link[0], Some(RateLimit::new(100.0, 10)))
        .await
        .unwrap();
    assert!(l.try_acquire(&link, 1).await.unwrap().is_allowed());
    drop(server);
    let t = Instant::now();
    let err = l.try_acquire(&link, 1).await.unwrap_err();
    assert!(matches!(err, LimitError::Unavailable { .. }), "{err:?}");
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(l.mode(), LimiterMode::FailClosed);
    // Degraded: no more waiting on Redis.
    let t = Instant::now();
    assert!(l.try_acquire(&link, 1).await.is_err());
    assert!(t.elapsed() < Duration::from_millis(20), "{:?}", t.elapsed());
    assert!(l.status().last_error.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_should_give_each_pod_its_share_then_recover() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = RedisProc::start_on(port, &[]).expect("redis-server");
    let cfg = || RedisLimiterConfig {
        response_timeout: Duration::from_millis(100),
        ..config(&server.url())
    };
    let a = RedisLimiter::connect(cfg(), Duration::from_secs(10)).await;
    let b = RedisLimiter::connect(cfg(), Duration::from_secs(10)).await;
    // Both heartbeats seen: wait for them, not for a fixed time.
    let deadline = Instant::now() + Duration::from_secs(10);
    while (a.live_pods(), b.live_pods()) != (2, 2) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!((a.live_pods(), b.live_pods()), (2, 2));
    let link = [RateKey::link("l")];
    a.set_limit(&link[0], Some(RateLimit::new(1.0, 10)))
        .await
        .unwrap();
    drop(server);
    // The first call finds Redis gone and answers from the share: burst 5.
    let mut n = 0;
    while a.try_acquire(&link, 1).await.unwrap().is_allowed() {
        n += 1;
    }
    assert_eq!(n, 5);
    assert_eq!(a.mode(), LimiterMode::FailOpen);
    assert_eq!(a.status().mode, LimiterMode::FailOpen);
    // Redis comes back empty: the limiter reconnects, writes its limits
    // back and shares again.
    let server = RedisProc::start_on(port, &[]).expect("redis-server on the same port");
    assert!(
        a.wait_ready(Duration::from_secs(5)).await,
        "{:?}",
        a.status()
    );
    let client = redis::Client::open(server.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let rate: Option<f64> = redis::cmd("HGET")
        .arg(a.redis_key(&link[0]))
        .arg("r")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(rate, Some(1.0));
    let mut n = 0;
    while a.try_acquire(&link, 1).await.unwrap().is_allowed() {
        n += 1;
    }
    assert_eq!(n, 10, "the full shared burst again");
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_redis_should_not_hold_up_acquisitions() {
    let server = RedisServer::start();
    let cfg = RedisLimiterConfig {
        response_timeout: Duration::from_millis(100),
        ..config(&server.url())
    };
    let l = RedisLimiter::connect(cfg, Duration::from_secs(10)).await;
    let link = [RateKey::link("slow")];
    l.set_limit(&link[0], Some(RateLimit::new(1000.0, 100)))
        .await
        .unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    // Every client's commands wait for 1 s: a Redis that is alive but
    // far too slow.
    let () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1000)
        .arg("ALL")
        .query_async(&mut c)
        .await
        .unwrap();
    let t = Instant::now();
    let d = l.try_acquire(&link, 1).await.unwrap();
    assert!(d.is_allowed(), "fail-open share");
    assert!(
        t.elapsed() < Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(l.mode(), LimiterMode::FailOpen);
    assert!(l.wait_ready(Duration::from_secs(5)).await);
    assert_eq!(l.mode(), LimiterMode::Shared);
}

/// The acceptance scenario at library level: three pods sharing one Redis,
/// one link at 500/s with burst 50, flat out for 10 s. The issue's window
/// (at the SMSC) is 4,750–5,300 submits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "takes 10 s: cargo test -p smsgw-rate --test redis_limiter -- --ignored"]
async fn three_pods_flat_out_for_10_s_should_land_in_the_acceptance_window() {
    let server = RedisServer::start();
    let url = server.url();
    let (admitted, acquires, trips) = suite::flat_out(&move || config(&url), 3, 4, 10.0).await;
    eprintln!(
        "admitted {admitted} of {acquires} acquisitions, {trips} round trips ({:.3} per acquisition)",
        trips as f64 / acquires as f64
    );
    assert!((4_750..=5_300).contains(&admitted), "{admitted}");
}
