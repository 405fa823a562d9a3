//! The journal against a real S3-compatible server: batching, outage and
//! spill, exactly-once delivery, bounded spill, graceful shutdown.

mod common;

use async_trait::async_trait;
use bytes::Bytes;
use common::S3Server;
use futures::TryStreamExt;
use smsgw_archive::store::ByteStream;
use smsgw_archive::{ArchiveError, EventKind, Journal, JournalConfig, JournalEvent, ObjectStore};
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn config(dir: &std::path::Path) -> JournalConfig {
    let mut c = JournalConfig::new("pod-a", dir);
    c.batch_max_bytes = 64 * 1024;
    c.batch_max_age = Duration::from_millis(200);
    c.retry_min = Duration::from_millis(50);
    c.retry_max = Duration::from_millis(250);
    c
}

fn accepted(i: u64) -> EventKind {
    EventKind::Accepted {
        message_id: format!("m{i}"),
        app_id: "app".into(),
        esme: "link1".into(),
        source: "ACME".into(),
        destination: "33600000001".into(),
        segments: 1,
        strategy: Some("cp1".into()),
    }
}

/// Every event in every object under `journal/`, by id → count.
async fn events_in(store: &dyn ObjectStore) -> (HashMap<String, u32>, Vec<String>) {
    let keys = store.list("journal/").await.unwrap();
    let mut counts = HashMap::new();
    for k in &keys {
        let body: Vec<Bytes> = store.get(k).await.unwrap().try_collect().await.unwrap();
        let body = body.concat();
        let mut gz = flate2::read::GzDecoder::new(&body[..]);
        let mut text = String::new();
        gz.read_to_string(&mut text).unwrap();
        for line in text.lines() {
            let ev: JournalEvent = serde_json::from_str(line).unwrap();
            *counts.entry(ev.id).or_insert(0) += 1;
        }
    }
    (counts, keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_should_reach_s3_exactly_once_across_an_outage() {
    let outage: u64 = std::env::var("JOURNAL_OUTAGE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let mut s3 = S3Server::start().await;
    let spill = tempfile::tempdir().unwrap();
    let store = Arc::new(s3.store());
    let (journal, task) = Journal::start(config(spill.path()), store.clone(), None)
        .await
        .unwrap();

    // A producer at ~4 000 events/s for the whole run.
    let producer = {
        let journal = journal.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            loop {
                tick.tick().await;
                for _ in 0..20 {
                    journal.record(accepted(n));
                    n += 1;
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    s3.stop().await;
    tokio::time::sleep(Duration::from_secs(outage)).await;
    let spilled = journal.stats().outbox_bytes.load(Ordering::Relaxed);
    s3.restart().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    producer.abort();
    let _ = producer.await;
    let left = task.shutdown(Duration::from_secs(20)).await;
    assert_eq!(left, 0, "the outbox drains on shutdown");

    let stats = journal.stats();
    let recorded = stats.events_recorded.load(Ordering::Relaxed);
    assert_eq!(stats.events_dropped.load(Ordering::Relaxed), 0);
    assert!(
        stats.upload_failures.load(Ordering::Relaxed) > 0,
        "the outage was seen"
    );
    assert!(spilled > 0, "batches spilled to disk during the outage");
    assert_eq!(stats.outbox_bytes.load(Ordering::Relaxed), 0);
    assert_eq!(
        stats.batches_sealed.load(Ordering::Relaxed),
        stats.batches_uploaded.load(Ordering::Relaxed)
    );
    let (counts, keys) = events_in(store.as_ref()).await;
    assert_eq!(counts.len() as u64, recorded, "every event is in S3");
    assert!(counts.values().all(|&c| c == 1), "and only once");
    eprintln!(
        "journal outage: {recorded} events in {} objects, {} failed uploads, {spilled} bytes spilled",
        keys.len(),
        stats.upload_failures.load(Ordering::Relaxed)
    );
    // Keys: journal/YYYY/MM/DD/HH/pod-a-<seq>.jsonl.gz, sequence unbroken.
    let mut seqs: Vec<u64> = keys
        .iter()
        .map(|k| {
            let parts: Vec<&str> = k.split('/').collect();
            assert_eq!(parts.len(), 6, "{k}");
            let name = parts[5];
            assert!(
                name.starts_with("pod-a-") && name.ends_with(".jsonl.gz"),
                "{k}"
            );
            name[6..22].parse().unwrap()
        })
        .collect();
    seqs.sort();
    assert_eq!(seqs, (0..keys.len() as u64).collect::<Vec<_>>());
}

/// Stores every put, then reports a failure for the first put of each key
/// (a lost response): the retry must reuse the key.
struct LostResponses {
    inner: Arc<dyn ObjectStore>,
    seen: Mutex<HashSet<String>>,
}

#[async_trait]
impl ObjectStore for LostResponses {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), ArchiveError> {
        self.inner.put(key, body).await?;
        if self.seen.lock().unwrap().insert(key.to_owned()) {
            return Err(ArchiveError::S3 {
                op: "put",
                reason: "connection reset (test)".into(),
            });
        }
        Ok(())
    }
    async fn get(&self, key: &str) -> Result<ByteStream, ArchiveError> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, ArchiveError> {
        self.inner.list(prefix).await
    }
}

#[tokio::test]
async fn a_retried_upload_should_overwrite_not_duplicate() {
    let s3 = S3Server::start().await;
    let spill = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(s3.store());
    let flaky = Arc::new(LostResponses {
        inner: store.clone(),
        seen: Mutex::default(),
    });
    let (journal, task) = Journal::start(config(spill.path()), flaky.clone(), None)
        .await
        .unwrap();
    for i in 0..500 {
        journal.record(accepted(i));
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    assert_eq!(task.shutdown(Duration::from_secs(10)).await, 0);
    let (counts, keys) = events_in(store.as_ref()).await;
    assert_eq!(counts.len(), 500);
    assert!(counts.values().all(|&c| c == 1));
    assert!(keys.len() >= 5, "several batches: {keys:?}");
    assert_eq!(flaky.seen.lock().unwrap().len(), keys.len());
}

#[tokio::test]
async fn past_the_spill_bound_the_journal_should_drop_alert_and_never_block() {
    let mut s3 = S3Server::start().await;
    s3.stop().await;
    let spill = tempfile::tempdir().unwrap();
    let mut c = config(spill.path());
    c.spill_max_bytes = 4 * 1024;
    c.batch_max_bytes = 2 * 1024;
    let (journal, task) = Journal::start(c, Arc::new(s3.store()), None).await.unwrap();
    let t0 = std::time::Instant::now();
    for i in 0..5_000 {
        journal.record(accepted(i));
    }
    assert!(t0.elapsed() < Duration::from_secs(1), "record never waits");
    let stats = journal.stats().clone();
    // The journal task works through the 5,000 events on its own; give a
    // loaded machine time, but stop as soon as the alert is up.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while stats.overflow.load(Ordering::Relaxed) == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Once raised, the alert stays up while S3 is down, even when a later
    // (smaller) batch fits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stats.overflow.load(Ordering::Relaxed), 1, "alert raised");
    assert!(stats.events_dropped.load(Ordering::Relaxed) > 0);
    assert!(stats.outbox_bytes.load(Ordering::Relaxed) <= 4 * 1024);
    assert_eq!(stats.s3_up.load(Ordering::Relaxed), 0);
    // S3 down at shutdown: what is spilled stays on disk.
    let left = task.shutdown(Duration::from_millis(200)).await;
    assert!(left > 0);
}

#[tokio::test]
async fn shutdown_should_flush_and_a_restart_should_upload_what_was_left() {
    let mut s3 = S3Server::start().await;
    let spill = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(s3.store());
    let mut c = config(spill.path());
    c.batch_max_age = Duration::from_secs(3600);

    // S3 up: the open batch is sealed and uploaded on shutdown.
    let (journal, task) = Journal::start(c.clone(), store.clone(), None)
        .await
        .unwrap();
    for i in 0..10 {
        journal.record(accepted(i));
    }
    assert_eq!(task.shutdown(Duration::from_secs(30)).await, 0);
    assert_eq!(events_in(store.as_ref()).await.0.len(), 10);

    // S3 down: the batch stays in the spill directory...
    s3.stop().await;
    let (journal, task) = Journal::start(c.clone(), store.clone(), None)
        .await
        .unwrap();
    for i in 0..7 {
        journal.record(accepted(100 + i));
    }
    assert_eq!(task.shutdown(Duration::from_millis(300)).await, 1);

    // ...and goes up after the next start, under the next sequence number.
    s3.restart().await;
    let (_journal, task) = Journal::start(c, store.clone(), None).await.unwrap();
    assert_eq!(task.shutdown(Duration::from_secs(5)).await, 0);
    let (counts, keys) = events_in(store.as_ref()).await;
    assert_eq!(counts.len(), 17);
    assert_eq!(keys.len(), 2);
    assert!(
        keys[1].ends_with("pod-a-0000000000000001.jsonl.gz"),
        "{keys:?}"
    );
}

#[tokio::test]
async fn statistics_should_be_journaled_periodically() {
    let s3 = S3Server::start().await;
    let spill = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(s3.store());
    let mut c = config(spill.path());
    c.stats_interval = Duration::from_millis(100);
    let stats_fn: smsgw_archive::StatsFn = Arc::new(|| serde_json::json!({"sent": 42}));
    let (_journal, task) = Journal::start(c, store.clone(), Some(stats_fn))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(550)).await;
    assert_eq!(task.shutdown(Duration::from_secs(5)).await, 0);
    let (counts, _) = events_in(store.as_ref()).await;
    assert!(counts.len() >= 3, "{} stats events", counts.len());
}
