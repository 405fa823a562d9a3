//! The embedded outbox after a crash: a child process appends and
//! acknowledges events, says which calls returned, and is killed with
//! SIGKILL (no destructor, no checkpoint). Every appended event not
//! acknowledged must be handed out again when the outbox is opened, every
//! acknowledged one must not, and the pull log must hold them all —
//! applied from the write-ahead log, since the redb file itself holds only
//! the checkpoint taken when the child opened it.

use redb::{Database, ReadableDatabase, ReadableTableMetadata, TableDefinition};
use smsgw_core::outbox::Outbox;
use smsgw_store::contract;
use smsgw_store::messages::Checkpoints;
use smsgw_store::outbox::EmbeddedOutbox;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

const DIR_ENV: &str = "SMSGW_OUTBOX_CRASH_DIR";
const CHILD: &str = "child_appends_then_waits_to_be_killed";
const DAY: Duration = Duration::from_secs(86_400);

fn outbox(path: &Path) -> EmbeddedOutbox {
    EmbeddedOutbox::open_with(
        path,
        DAY,
        1 << 20,
        // No checkpoint of its own during the test.
        Checkpoints {
            every: Duration::from_secs(3600),
            log_bytes: 1 << 30,
        },
    )
    .unwrap()
}

#[tokio::test]
#[ignore = "the child half of appended_events_survive_a_kill, which runs it"]
async fn child_appends_then_waits_to_be_killed() {
    let dir = std::path::PathBuf::from(std::env::var(DIR_ENV).expect("run by the parent test"));
    let o = outbox(&dir.join("outbox.redb"));
    // Concurrently, so several land in one logged batch.
    let appends = (1..=6u32).map(|n| {
        let o = &o;
        async move { o.append(&[contract::event("k", n)]).await.unwrap() }
    });
    futures::future::join_all(appends).await;
    let got = o.claim("p", 100, Duration::from_secs(1)).await.unwrap();
    assert_eq!(got.len(), 6);
    let acked: Vec<String> = got
        .iter()
        .filter(|c| c.event.event_id.ends_with("_2") || c.event.event_id.ends_with("_5"))
        .map(|c| c.position.clone())
        .collect();
    o.ack(&acked).await.unwrap();
    println!("acked");
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(600));
    panic!("the parent should have killed this process");
}

const PENDING: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox_pending");

#[tokio::test]
async fn appended_events_survive_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    let wal = dir.path().join("outbox.redb-wal");

    smsgw_store::testing::kill_child_once_acked(CHILD, DIR_ENV, dir.path());

    // The redb file alone holds none of it (so what follows is the log's
    // doing).
    assert!(std::fs::metadata(&wal).unwrap().len() > 0);
    {
        let db = Database::open(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(PENDING).unwrap();
        assert_eq!(t.len().unwrap(), 0);
    }

    // A torn frame at the end (a write the crash cut short) is ignored.
    let mut f = std::fs::OpenOptions::new().append(true).open(&wal).unwrap();
    f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 99, 0, 0, 0, 0, 0, 0, 0, 1])
        .unwrap();
    drop(f);

    let o = outbox(&path);
    assert_eq!(o.pending().unwrap(), 4);
    let got = o.claim("p", 100, Duration::from_secs(1)).await.unwrap();
    let ids: Vec<&str> = got.iter().map(|c| c.event.event_id.as_str()).collect();
    assert_eq!(ids, ["ev_k_1", "ev_k_3", "ev_k_4", "ev_k_6"]);
    assert_eq!(got[3].event, contract::event("k", 6));
    // Pull reads every event appended, acknowledged or not.
    let logged = o.read("app0001", None, 100).await.unwrap();
    let bodies: Vec<&str> = logged.iter().map(|l| l.body.as_str()).collect();
    assert_eq!(
        bodies,
        (1..=6)
            .map(|n| format!("{{\"n\":{n}}}"))
            .collect::<Vec<_>>()
    );
    // Numbers are not reused: a new event comes after every old one.
    let last: u64 = got[3].position.parse().unwrap();
    o.append(&[contract::event("k", 7)]).await.unwrap();
    let new = o.claim("p", 100, Duration::from_secs(1)).await.unwrap();
    assert_eq!(new.len(), 1);
    assert!(new[0].position.parse::<u64>().unwrap() > last);

    // Closed cleanly (a checkpoint), then opened again: the same state.
    drop(o);
    let o = outbox(&path);
    assert_eq!(o.pending().unwrap(), 5);
}
