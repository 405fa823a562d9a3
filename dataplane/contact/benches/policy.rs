//! Contact-policy check cost: in process and on Redis (one Lua round
//! trip), one at a time and with 64 checks in flight, against a bare
//! Redis round trip (PING) as the floor.
//!
//!     cargo bench -p smsgw-contact --bench policy

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use smsgw_contact::{InProcessBlacklists, InProcessEngine, Policies, RedisBlacklists, RedisEngine};
use smsgw_core::policy::{BlacklistSink, PolicyEngine, PolicyRequest};
use smsgw_store::testing::RedisServer;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const POLICIES: &str = r#"
cp1:
  frequency: {daily: 1000000, weekly: 1000000, timeZone: Europe/Paris}
  blacklists: [default]
cp2:
  frequency: {daily: 1000000, weekly: 1000000}
  dedup: {window: 1h}
  blacklists: [default]
"#;

static N: AtomicU64 = AtomicU64::new(0);

async fn one(e: &dyn PolicyEngine, strategy: &str) {
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dest = format!("+336{:08}", n % 10_000_000);
    let text = format!("code {n}");
    let d = e
        .check(&PolicyRequest {
            strategy,
            app_id: "app",
            source: "ACME",
            destination: &dest,
            text: &text,
            destination_time_zone: None,
        })
        .await
        .unwrap();
    assert!(d.verdict.pass);
}

fn run(
    rt: &tokio::runtime::Runtime,
    e: &Arc<dyn PolicyEngine>,
    strategy: &'static str,
    n: u64,
    in_flight: usize,
) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        if in_flight == 1 {
            for _ in 0..n {
                one(&**e, strategy).await;
            }
        } else {
            futures::stream::iter(0..n)
                .map(|_| {
                    let e = e.clone();
                    tokio::spawn(async move { one(&*e, strategy).await })
                })
                .buffer_unordered(in_flight)
                .for_each(|r| async { r.unwrap() })
                .await;
        }
        start.elapsed()
    })
}

async fn fill(sink: &dyn BlacklistSink) {
    let mut l = sink.begin("default").await.unwrap();
    for chunk in 0..10 {
        let nums: Vec<String> = (0..10_000)
            .map(|i| format!("44790{:07}", chunk * 10_000 + i))
            .collect();
        l.add(&nums, &["4470".into(), "1900".into()]).await.unwrap();
    }
    l.commit().await.unwrap();
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let specs: BTreeMap<String, smsgw_crds::ContactPolicySpec> =
        serde_yaml::from_str(POLICIES).unwrap();
    let policies = Policies::compile(&specs).0.shared();

    let bl = InProcessBlacklists::new();
    rt.block_on(fill(&bl));
    let memory: Arc<dyn PolicyEngine> = Arc::new(InProcessEngine::new(policies.clone(), bl));

    let server = RedisServer::start();
    let conn = rt.block_on(async {
        redis::Client::open(server.url())
            .unwrap()
            .get_connection_manager()
            .await
            .unwrap()
    });
    rt.block_on(fill(&RedisBlacklists::new(conn.clone(), "smsgw")));
    let redis: Arc<dyn PolicyEngine> = Arc::new(RedisEngine::new(conn.clone(), "smsgw", policies));

    let mut g = c.benchmark_group("policy");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("in_process_cp1", |b| {
        b.iter_custom(|n| run(&rt, &memory, "cp1", n, 1))
    });
    g.bench_function("in_process_cp2_dedup", |b| {
        b.iter_custom(|n| run(&rt, &memory, "cp2", n, 1))
    });
    g.bench_function("redis_cp1_sequential", |b| {
        b.iter_custom(|n| run(&rt, &redis, "cp1", n, 1))
    });
    g.bench_function("redis_cp1_in_flight_64", |b| {
        b.iter_custom(|n| run(&rt, &redis, "cp1", n, 64))
    });
    g.bench_function("redis_cp2_in_flight_64", |b| {
        b.iter_custom(|n| run(&rt, &redis, "cp2", n, 64))
    });
    g.bench_function("redis_ping_in_flight_64", |b| {
        b.iter_custom(|n| {
            rt.block_on(async {
                let start = Instant::now();
                futures::stream::iter(0..n)
                    .map(|_| {
                        let mut c = conn.clone();
                        tokio::spawn(async move {
                            let _: String = redis::cmd("PING").query_async(&mut c).await.unwrap();
                        })
                    })
                    .buffer_unordered(64)
                    .for_each(|r| async { r.unwrap() })
                    .await;
                start.elapsed()
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
