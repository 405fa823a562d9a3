//! Rate-limiter benchmarks: `cargo bench -p smsgw-rate`.
//!
//! - `in_process/*`: one acquisition on the in-process limiter (one key,
//!   two keys, and 4 threads contending on one key).
//! - `redis/*` (needs `redis-server` on the PATH; skipped otherwise): an
//!   acquisition of three keys (app, link, pool) through the Redis limiter,
//!   one at a time, and with 16 and 64 concurrent callers (batched into
//!   fewer script calls; time per acquisition); then prints round trips per
//!   acquisition at each concurrency.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use smsgw_core::limits::{RateKey, RateLimit, RateLimiter};
use smsgw_rate::{InProcessLimiter, RedisLimiter, RedisLimiterConfig};
use smsgw_store::testing::RedisServer;

fn in_process(c: &mut Criterion) {
    let l = Arc::new(InProcessLimiter::new());
    let link = RateKey::link("l1");
    let app = RateKey::app("a1");
    // Limits high enough that every acquisition is allowed.
    l.set(&link, Some(RateLimit::new(1e12, 1_000_000))).unwrap();
    l.set(&app, Some(RateLimit::new(1e12, 1_000_000))).unwrap();
    let one = [link.clone()];
    let two = [app.clone(), link.clone()];
    let mut g = c.benchmark_group("in_process");
    g.bench_function("acquire_one_key", |b| {
        b.iter(|| black_box(l.acquire_now(&one, 1, Duration::ZERO)))
    });
    g.bench_function("acquire_two_keys", |b| {
        b.iter(|| black_box(l.acquire_now(&two, 1, Duration::ZERO)))
    });
    g.bench_function("acquire_one_key_4_threads", |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            std::thread::scope(|s| {
                for _ in 0..4 {
                    let l = &l;
                    let one = &one;
                    s.spawn(move || {
                        for _ in 0..iters {
                            black_box(l.acquire_now(one, 1, Duration::ZERO));
                        }
                    });
                }
            });
            start.elapsed() / 4
        })
    });
    g.finish();
}

/// Runs `total` acquisitions from `tasks` concurrent tasks on `l`.
async fn concurrent(l: &Arc<RedisLimiter>, keys: &[RateKey], tasks: u64, total: u64) {
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (l, keys) = (l.clone(), keys.to_vec());
        handles.push(tokio::spawn(async move {
            for _ in 0..total / tasks {
                black_box(l.try_acquire(&keys, 1).await.unwrap());
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
}

fn redis(c: &mut Criterion) {
    if std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("redis-server not installed: skipping the redis benchmarks");
        return;
    }
    let server = RedisServer::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let l = Arc::new(rt.block_on(RedisLimiter::connect(
        RedisLimiterConfig {
            response_timeout: Duration::from_secs(1),
            ..RedisLimiterConfig::single(server.url())
        },
        Duration::from_secs(5),
    )));
    // An app, a link and a pool, as the send path asks; never limiting.
    let keys = [RateKey::app("a1"), RateKey::link("l1"), RateKey::pool("p1")];
    rt.block_on(async {
        for k in &keys {
            l.set_limit(k, Some(RateLimit::new(1e12, 1_000_000)))
                .await
                .unwrap();
        }
    });
    let mut g = c.benchmark_group("redis");
    g.bench_function("acquire_three_keys_sequential", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(l.try_acquire(&keys, 1).await.unwrap()) })
    });
    for tasks in [16u64, 64] {
        g.bench_function(format!("acquire_three_keys_{tasks}_concurrent"), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (l, keys) = (l.clone(), keys.clone());
                async move {
                    let iters = iters.max(tasks);
                    let start = std::time::Instant::now();
                    concurrent(&l, &keys, tasks, iters).await;
                    start.elapsed() * (iters / tasks * tasks) as u32 / iters as u32
                }
            })
        });
    }
    g.finish();
    // Round trips per acquisition at each concurrency, measured apart.
    for tasks in [1u64, 16, 64] {
        let before = l.status();
        rt.block_on(concurrent(&l, &keys, tasks, 20_000));
        let after = l.status();
        let acquires = after.acquires - before.acquires;
        let trips = after.round_trips - before.round_trips;
        eprintln!(
            "redis: {tasks} concurrent: {acquires} acquisitions, {trips} round trips, {:.3} per acquisition",
            trips as f64 / acquires as f64
        );
    }
}

criterion_group!(benches, in_process, redis);
criterion_main!(benches);
