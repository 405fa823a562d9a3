//! Message store throughput: per message one `create`, one `record_submit`
//! (accepted, with an SMSC id) and one `apply_receipt` (DELIVRD), with many
//! messages in flight, for the embedded (redb) and Redis backends.
//!
//!     cargo bench -p smsgw-store --bench messages
//!
//! And creates alone against Redis with every index generation live, as in
//! steady state (`redis_steady`).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use smsgw_core::messages::{MessageStore, ReceiptState};
use smsgw_store::RedisConfig;
use smsgw_store::contract::{accepted, message, receipt, unique};
use smsgw_store::messages::{EmbeddedMessageStore, MessageStoreOptions, RedisMessageStore};
use smsgw_store::testing::RedisServer;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One message's life in the store.
async fn one(store: &dyn MessageStore) {
    let m = message(1);
    store.create(&m).await.unwrap();
    let sid = unique("s");
    store
        .record_submit(&accepted(&m, 0, "l1", &sid))
        .await
        .unwrap();
    store
        .apply_receipt(&receipt("l1", &sid, ReceiptState::Delivered))
        .await
        .unwrap();
}

/// The benches' runtime: two workers, as the machine's two cores.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// What a bench does with each message.
#[derive(Clone, Copy)]
enum Work {
    /// Its whole life ([`one`]).
    Lifecycle,
    /// Its create alone.
    Create,
}

/// `n` messages' `work`, `in_flight` at a time.
fn run(
    rt: &tokio::runtime::Runtime,
    store: &Arc<dyn MessageStore>,
    n: u64,
    in_flight: usize,
    work: Work,
) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        futures::stream::iter(0..n)
            .map(|_| {
                let s = store.clone();
                tokio::spawn(async move {
                    match work {
                        Work::Lifecycle => one(&*s).await,
                        Work::Create => drop(s.create(&message(1)).await.unwrap()),
                    }
                })
            })
            .buffer_unordered(in_flight)
            .for_each(|r| async { r.unwrap() })
            .await;
        start.elapsed()
    })
}

/// Creates (a transaction-id lookup that misses, by design, then the
/// index entry and the record) with every index generation live: a TTL of
/// 8 s and 10 s of creates first (the TTL and the widest generation), so a
/// create reads what it reads in steady state at any TTL.
fn steady(c: &mut Criterion) {
    let rt = runtime();
    let server = RedisServer::start();
    let opts = MessageStoreOptions::default().ttl(Duration::from_secs(8));
    let redis: Arc<dyn MessageStore> = Arc::new(
        rt.block_on(RedisMessageStore::connect(
            &RedisConfig::new(server.url()),
            opts,
        ))
        .unwrap(),
    );
    let fill = Instant::now();
    while fill.elapsed() < Duration::from_secs(10) {
        run(&rt, &redis, 1_000, 64, Work::Create);
    }
    let mut info = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let before = script_time(&mut info);
    let mut g = c.benchmark_group("redis_steady");
    g.throughput(Throughput::Elements(1))
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    g.bench_with_input(BenchmarkId::new("create", 64), &64, |b, &k| {
        b.iter_custom(|iters| run(&rt, &redis, iters, k, Work::Create));
    });
    g.finish();
    let after = script_time(&mut info);
    let creates = (after.2 - before.2).max(1) as f64;
    eprintln!(
        "redis_steady: Redis script time {:.1} µs a create, {:.2} HGET a create ({creates} creates)",
        (after.0 - before.0) as f64 / creates,
        (after.1 - before.1) as f64 / creates,
    );
    drop(server);
}

/// Redis's own count (`INFO commandstats`): µs spent in scripts, `HGET`
/// calls (in scripts or not) and record writes (`HSETNX`, one a create).
fn script_time(c: &mut redis::Connection) -> (u64, u64, u64) {
    let info: String = redis::cmd("INFO").arg("commandstats").query(c).unwrap();
    let stat = |cmd: &str, field: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:")))
            .and_then(|l| l.split(',').find_map(|kv| kv.strip_prefix(field)))
            .map_or(0, |v| v.parse().unwrap())
    };
    (
        stat("evalsha", "usec="),
        stat("hget", "calls="),
        stat("hsetnx", "calls="),
    )
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let embedded: Arc<dyn MessageStore> = Arc::new(
        EmbeddedMessageStore::open(
            &dir.path().join("bench.redb"),
            MessageStoreOptions::default(),
        )
        .unwrap(),
    );
    let server = RedisServer::start();
    let redis: Arc<dyn MessageStore> = Arc::new(
        rt.block_on(RedisMessageStore::connect(
            &RedisConfig::new(server.url()),
            MessageStoreOptions::default(),
        ))
        .unwrap(),
    );

    let mut g = c.benchmark_group("message_lifecycle");
    g.throughput(Throughput::Elements(1))
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    for in_flight in [1, 64, 512] {
        for (name, store) in [("embedded", &embedded), ("redis", &redis)] {
            g.bench_with_input(BenchmarkId::new(name, in_flight), &in_flight, |b, &k| {
                b.iter_custom(|iters| run(&rt, store, iters, k, Work::Lifecycle));
            });
        }
    }
    g.finish();
    drop(server);
}

criterion_group!(benches, bench, steady);
criterion_main!(benches);
