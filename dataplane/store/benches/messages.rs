//! Message store throughput: per message one `create`, one `record_submit`
//! (accepted, with an SMSC id) and one `apply_receipt` (DELIVRD), with many
//! messages in flight, for the embedded (redb) and Redis backends.
//!
//!     cargo bench -p smsgw-store --bench messages

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

fn run(
    rt: &tokio::runtime::Runtime,
    store: &Arc<dyn MessageStore>,
    n: u64,
    in_flight: usize,
) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        futures::stream::iter(0..n)
            .map(|_| {
                let s = store.clone();
                tokio::spawn(async move { one(&*s).await })
            })
            .buffer_unordered(in_flight)
            .for_each(|r| async { r.unwrap() })
            .await;
        start.elapsed()
    })
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
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
                b.iter_custom(|iters| run(&rt, store, iters, k));
            });
        }
    }
    g.finish();
    drop(server);
}

criterion_group!(benches, bench);
criterion_main!(benches);
