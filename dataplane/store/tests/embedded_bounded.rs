//! The embedded store stays bounded at steady traffic: messages past their
//! TTL are purged in passes of bounded work, and the space they held is
//! reused, so the data directory stops growing over repeated
//! write-then-expire cycles.

use futures::future::join_all;
use smsgw_core::messages::MessageStore;
use smsgw_store::contract;
use smsgw_store::messages::{Checkpoints, EmbeddedMessageStore, MessageStoreOptions};
use std::path::Path;
use std::time::Duration;

/// Long enough that a chunk of 500 creates and submits finishes within it on
/// a loaded 2-core CI machine (at 300 ms `record_submit` sometimes found its
/// message already expired); the sleeps below follow it.
const TTL: Duration = Duration::from_millis(1_500);

fn store(path: &Path, cache: usize) -> EmbeddedMessageStore {
    EmbeddedMessageStore::open_with(
        path,
        MessageStoreOptions::default().ttl(TTL).cache_bytes(cache),
        Checkpoints::default(),
    )
    .unwrap()
}

/// Creates `n` single-segment messages, each submitted (so every index
/// is written), in concurrent chunks (the writer group-commits them).
async fn write(s: &EmbeddedMessageStore, n: usize) {
    for chunk in 0..n.div_ceil(500) {
        let k = 500.min(n - chunk * 500);
        join_all((0..k).map(|_| async move {
            let m = contract::message(1);
            s.create(&m).await.unwrap();
            s.record_submit(&contract::accepted(
                &m,
                0,
                "l1",
                &format!("sid-{}", m.message_id),
            ))
            .await
            .unwrap();
        }))
        .await;
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

#[tokio::test]
async fn a_purge_pass_removes_at_most_its_batch_and_the_rest_follows() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir.path().join("messages.redb"), 4 << 20);
    let n = EmbeddedMessageStore::PURGE_BATCH + 1_500;
    write(&s, n).await;
    tokio::time::sleep(TTL + Duration::from_millis(200)).await;
    assert_eq!(
        s.purge_expired_pass().await.unwrap(),
        EmbeddedMessageStore::PURGE_BATCH as u64
    );
    assert_eq!(s.purge_expired_pass().await.unwrap(), 1_500);
    assert_eq!(s.purge_expired_pass().await.unwrap(), 0);
    // The whole purge answers the total, and nothing of what it removed is
    // readable.
    let m = contract::message(1);
    s.create(&m).await.unwrap();
    tokio::time::sleep(TTL + Duration::from_millis(200)).await;
    assert_eq!(s.purge_expired().await.unwrap(), 1);
    assert_eq!(s.get(&m.message_id).await.unwrap(), None);
    assert_eq!(
        s.by_transaction(&m.app_id, &m.transaction_id)
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn the_data_directory_stops_growing_over_write_and_expire_cycles() {
    const PER_CYCLE: usize = 3_000;
    let dir = tempfile::tempdir().unwrap();
    // A small cache, as on a small VM: the file must not depend on it.
    let s = store(&dir.path().join("messages.redb"), 2 << 20);
    let mut sizes = Vec::new();
    for _ in 0..10 {
        write(&s, PER_CYCLE).await;
        tokio::time::sleep(TTL + Duration::from_millis(100)).await;
        assert_eq!(s.purge_expired().await.unwrap(), PER_CYCLE as u64);
        s.checkpoint().await.unwrap();
        sizes.push(dir_bytes(dir.path()));
    }
    // After the first cycles have grown the file to its working size, the
    // pages freed by each purge hold the next cycle's messages: the second
    // half of the run needs no more room than the first cycles did (a
    // store that kept every message would have grown about fivefold; the
    // file's size moves by whole regions, hence the margin).
    eprintln!("data directory after each cycle: {sizes:?}");
    let warm = *sizes[..3].iter().max().unwrap();
    let late = *sizes[5..].iter().max().unwrap();
    assert!(
        late <= warm + warm / 2,
        "the data directory kept growing: {sizes:?}"
    );
    let last = *sizes.last().unwrap();
    // And the file holds far less than every message ever written would.
    let per_message = last as f64 / (10 * PER_CYCLE) as f64;
    assert!(
        per_message < 400.0,
        "{per_message:.0} B per message ever written: {sizes:?}"
    );
}
