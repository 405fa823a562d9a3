//! The embedded store after a crash: a child process writes through the
//! store, says which writes were acknowledged, and is killed with SIGKILL
//! (no destructor, no checkpoint). Everything acknowledged must be there
//! when the store is opened again — applied from the write-ahead log,
//! since the redb file itself holds only the last checkpoint.

use redb::{Database, ReadableDatabase, TableDefinition};
use smsgw_core::messages::{
    CreateOutcome, MessageRecord, MessageStore, ReceiptOutcome, ReceiptState,
};
use smsgw_store::contract;
use smsgw_store::messages::{Checkpoints, EmbeddedMessageStore, MessageStoreOptions};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

const DIR_ENV: &str = "SMSGW_CRASH_TEST_DIR";
const CHILD: &str = "child_writes_then_waits_to_be_killed";

/// What the child wrote and had acknowledged.
#[derive(serde::Serialize, serde::Deserialize)]
struct Acked {
    /// Created, segment 0 submitted, then checkpointed.
    before: MessageRecord,
    /// Created after the checkpoint; every segment submitted.
    after: MessageRecord,
    after_sids: Vec<String>,
    /// Created after the checkpoint, nothing else.
    bare: MessageRecord,
}

fn store(path: &Path) -> EmbeddedMessageStore {
    EmbeddedMessageStore::open_with(
        path,
        MessageStoreOptions::default(),
        // No checkpoint of its own during the test: only the explicit one.
        Checkpoints {
            every: Duration::from_secs(3600),
            log_bytes: 1 << 20,
        },
    )
    .unwrap()
}

#[tokio::test]
#[ignore = "the child half of acknowledged_writes_survive_a_kill, which runs it"]
async fn child_writes_then_waits_to_be_killed() {
    let dir = std::path::PathBuf::from(std::env::var(DIR_ENV).expect("run by the parent test"));
    let s = store(&dir.join("messages.redb"));

    let before = contract::message(2);
    s.create(&before).await.unwrap();
    s.record_submit(&contract::accepted(&before, 0, "l1", "before-0"))
        .await
        .unwrap();
    s.checkpoint().await.unwrap();

    let after = contract::message(3);
    s.create(&after).await.unwrap();
    let after_sids: Vec<String> = (0..3).map(|i| format!("AB{i:02X}")).collect();
    // Concurrently, so several land in one logged batch.
    let submits = (0..3u16).map(|i| {
        let s = s.clone();
        let u = contract::accepted(&after, i, "l1", &after_sids[usize::from(i)]);
        async move { s.record_submit(&u).await.unwrap() }
    });
    futures::future::join_all(submits).await;
    let r = s
        .apply_receipt(&contract::receipt(
            "l1",
            &after_sids[1],
            ReceiptState::Delivered,
        ))
        .await
        .unwrap();
    assert!(matches!(r, ReceiptOutcome::Applied(_)));
    let r = s
        .apply_receipt(&contract::receipt("l1", "early", ReceiptState::Delivered))
        .await
        .unwrap();
    assert_eq!(r, ReceiptOutcome::Parked);
    let bare = contract::message(1);
    s.create(&bare).await.unwrap();

    let acked = Acked {
        before,
        after,
        after_sids,
        bare,
    };
    std::fs::write(dir.join("acked.json"), serde_json::to_vec(&acked).unwrap()).unwrap();
    println!("acked");
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(600));
    panic!("the parent should have killed this process");
}

const MSGS: TableDefinition<&str, &[u8]> = TableDefinition::new("msg");

/// Which of the acknowledged messages the redb file itself holds (opened
/// directly, without the store and its log).
fn in_redb(path: &Path, acked: &Acked) -> [bool; 3] {
    let db = Database::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    let t = txn.open_table(MSGS).unwrap();
    [&acked.before, &acked.after, &acked.bare]
        .map(|m| t.get(m.message_id.as_str()).unwrap().is_some())
}

#[tokio::test]
async fn acknowledged_writes_survive_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("messages.redb");
    let wal = dir.path().join("messages.redb-wal");

    smsgw_store::testing::kill_child_once_acked(CHILD, DIR_ENV, dir.path());
    let acked: Acked =
        serde_json::from_slice(&std::fs::read(dir.path().join("acked.json")).unwrap()).unwrap();

    // The redb file alone: the checkpointed message, not the later ones
    // (so what follows is the log's doing).
    assert!(std::fs::metadata(&wal).unwrap().len() > 0);
    {
        let db = Database::open(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(MSGS).unwrap();
        assert!(t.get(acked.before.message_id.as_str()).unwrap().is_some());
        assert!(t.get(acked.after.message_id.as_str()).unwrap().is_none());
        assert!(t.get(acked.bare.message_id.as_str()).unwrap().is_none());
    }

    // A torn frame at the end (a write the crash cut short) is ignored.
    let mut f = std::fs::OpenOptions::new().append(true).open(&wal).unwrap();
    f.write_all(&[
        200, 0, 0, 0, 1, 2, 3, 4, 99, 0, 0, 0, 0, 0, 0, 0, b'[', b'{',
    ])
    .unwrap();
    drop(f);

    let s = store(&path);
    let before = s.get(&acked.before.message_id).await.unwrap().unwrap();
    assert_eq!(
        before.segments[0].smsc_message_id.as_deref(),
        Some("before-0")
    );
    let after = s.get(&acked.after.message_id).await.unwrap().unwrap();
    let sids: Vec<Option<String>> = after
        .segments
        .iter()
        .map(|g| g.smsc_message_id.clone())
        .collect();
    assert_eq!(
        sids,
        acked
            .after_sids
            .iter()
            .cloned()
            .map(Some)
            .collect::<Vec<_>>()
    );
    assert_eq!(after.segments[1].receipt, Some(ReceiptState::Delivered));
    assert_eq!(after.segments[0].receipt, None);
    assert_eq!(s.parked_len().await.unwrap(), 1);
    let bare = s
        .by_transaction(&acked.bare.app_id, &acked.bare.transaction_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bare.message_id, acked.bare.message_id);

    // Idempotency survived: the same transaction again is the same message.
    let mut again = contract::message(3);
    again.app_id = acked.after.app_id.clone();
    again.transaction_id = acked.after.transaction_id.clone();
    match s.create(&again).await.unwrap() {
        CreateOutcome::Existing(m) => assert_eq!(m.message_id, acked.after.message_id),
        other => panic!("expected the existing message, got {other:?}"),
    }

    // The recovered store takes writes, and a clean close keeps them.
    let r = s
        .apply_receipt(&contract::receipt(
            "l1",
            &acked.after_sids[0],
            ReceiptState::Delivered,
        ))
        .await
        .unwrap();
    assert!(matches!(r, ReceiptOutcome::Applied(_)));
    drop(s);
    assert_eq!(
        in_redb(&path, &acked),
        [true, true, true],
        "replayed writes are checkpointed into the redb file"
    );
    let s = store(&path);
    let after = s.get(&acked.after.message_id).await.unwrap().unwrap();
    assert_eq!(after.segments[0].receipt, Some(ReceiptState::Delivered));
    assert_eq!(after.segments[1].receipt, Some(ReceiptState::Delivered));
    assert_eq!(s.parked_len().await.unwrap(), 1);
}
