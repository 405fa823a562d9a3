//! The Redis limiter against a three-node Redis Cluster started here: the
//! same suite as against a single Redis (`redis_limiter.rs`), in one test
//! so the cluster starts once. Keys of the suite's steps are distinct.

mod common;

use std::time::Duration;

use common::RedisCluster;
use common::suite;
use smsgw_rate::RedisLimiterConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limiter_suite_should_pass_on_a_redis_cluster() {
    let cluster = RedisCluster::start();
    let urls = cluster.urls();
    let config = move || RedisLimiterConfig {
        response_timeout: Duration::from_secs(1),
        heartbeat_interval: Duration::from_millis(200),
        pod_ttl: Duration::from_millis(600),
        probe_interval: Duration::from_millis(50),
        ..RedisLimiterConfig::cluster(urls.clone())
    };
    suite::burst_then_rate(&config).await;
    suite::all_keys_or_none(&config).await;
    suite::limits_and_tokens_are_shared_by_pods(&config).await;
    suite::three_pods_should_hold_the_link_rate_exactly(&config).await;
    suite::concurrent_acquisitions_should_share_round_trips(&config).await;
    suite::waiting_should_book_slots_in_order(&config).await;
    suite::health_should_halve_and_restore_a_pool(&config).await;
    suite::pods_should_agree_on_link_health(&config).await;
}
