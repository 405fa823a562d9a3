//! The Redis message store's footprint and its reading of the layout of
//! the version before, against a real `redis-server`.

use smsgw_core::messages::{
    MessageRecord, MessageStatus, MessageStore, ReceiptOutcome, ReceiptState, ReceiptUpdate,
    SegmentRecord, SubmitStatus, SubmitUpdate, Target, unix_now_ms,
};
use smsgw_store::RedisConfig;
use smsgw_store::messages::{MessageStoreOptions, RedisMessageStore};
use smsgw_store::testing::RedisServer;
use std::time::Duration;

const LINK: &str = "smsc-a";

/// Message `n` as the gateway makes it: a UUIDv7-shaped id, a UUIDv4
/// transaction id, a pod as the lease holder, a trace context, a
/// 46-character text.
fn message(n: u32) -> MessageRecord {
    let now = unix_now_ms();
    let rnd = u128::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
    let tx = format!("{:032x}", rnd ^ 0x5555);
    MessageRecord {
        message_id: format!("{:012x}7{:019x}", now, rnd >> 52),
        app_id: "app-1".into(),
        transaction_id: format!(
            "{}-{}-4{}-a{}-{}",
            &tx[..8],
            &tx[8..12],
            &tx[13..16],
            &tx[17..20],
            &tx[20..]
        ),
        task_id: None,
        source: "ACME".into(),
        destination: format!("4477009{n:05}"),
        encoding: "gsm7".into(),
        target: Target::Link(LINK.into()),
        link: Some(LINK.into()),
        created_at_ms: now,
        updated_at_ms: now,
        status: MessageStatus::Accepted,
        segments: vec![SegmentRecord::new(0)],
        claimed_by: Some("smsgw-7d9f8c6b5-x2x4z".into()),
        claim_until_ms: now + 30_000,
        text: "Your code is 482913. It expires in 10 minutes.".into(),
        ton_npi: [5, 0, 1, 1],
        traceparent: Some(format!("00-{:032x}-{:016x}-01", rnd, rnd >> 64)),
        tracestate: None,
        callback: None,
    }
}

fn smsc_id(n: u32) -> String {
    (3_000_000_000u64 + u64::from(n)).to_string()
}

fn submit(m: &MessageRecord, sid: &str) -> SubmitUpdate {
    SubmitUpdate {
        message_id: m.message_id.clone(),
        seq: 0,
        outcome: SubmitStatus::Accepted,
        link: LINK.into(),
        smsc_message_id: Some(sid.into()),
        at_ms: unix_now_ms(),
        resubmitted: false,
    }
}

fn receipt(sid: &str, state: ReceiptState) -> ReceiptUpdate {
    ReceiptUpdate {
        link: LINK.into(),
        smsc_message_id: sid.into(),
        state,
        error_code: Some(0),
        at_ms: unix_now_ms(),
    }
}

async fn conn(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn used_memory(c: &mut redis::aio::MultiplexedConnection) -> i64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(c)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

async fn dbsize(c: &mut redis::aio::MultiplexedConnection) -> i64 {
    redis::cmd("DBSIZE").query_async(c).await.unwrap()
}

/// Messages a measurement stores: 2,000, or `REDIS_RECORD_MESSAGES`
/// (BENCHMARKS.md runs 100,000).
fn n() -> u32 {
    std::env::var("REDIS_RECORD_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

/// Stores and delivers `n()` messages from `from`, one at a time.
async fn deliver(store: &RedisMessageStore, from: u32) {
    for n in from..from + n() {
        let m = message(n);
        store.create(&m).await.unwrap();
        let sid = smsc_id(n);
        store.record_submit(&submit(&m, &sid)).await.unwrap();
        match store
            .apply_receipt(&receipt(&sid, ReceiptState::Delivered))
            .await
            .unwrap()
        {
            ReceiptOutcome::Applied(r) => assert_eq!(r.status, MessageStatus::Delivered),
            other => panic!("receipt of {n}: {other:?}"),
        }
    }
}

/// Writes `n()` delivered messages from `from` as the version before laid
/// them out: a hash of version and JSON, the transaction key, the index
/// hash; all with the message's expiry.
async fn write_v1(c: &mut redis::aio::MultiplexedConnection, from: u32) {
    for n in from..from + n() {
        let mut m = message(n);
        let sid = smsc_id(n);
        m.status = MessageStatus::Delivered;
        m.segments[0].smsc_message_id = Some(sid.clone());
        m.segments[0].submit = SubmitStatus::Accepted;
        m.segments[0].receipt = Some(ReceiptState::Delivered);
        m.segments[0].error_code = Some(0);
        m.segments[0].submitted_at_ms = Some(m.created_at_ms + 12);
        m.segments[0].receipt_at_ms = Some(m.created_at_ms + 2_000);
        put_v1(c, &m, &sid).await;
    }
}

async fn put_v1(c: &mut redis::aio::MultiplexedConnection, m: &MessageRecord, sid: &str) {
    let exp = m.created_at_ms + 86_400_000;
    let mk = format!("{{smsgw:m:{}}}", m.message_id);
    let tk = format!("{{smsgw:t:{}:{}}}", m.app_id, m.transaction_id);
    let ik = format!("{{smsgw:i:{LINK}:{sid}}}");
    let () = redis::pipe()
        .cmd("HSET")
        .arg(&mk)
        .arg("v")
        .arg(3)
        .arg("j")
        .arg(serde_json::to_string(m).unwrap())
        .ignore()
        .cmd("PEXPIREAT")
        .arg(&mk)
        .arg(exp)
        .ignore()
        .cmd("SET")
        .arg(&tk)
        .arg(&m.message_id)
        .arg("PXAT")
        .arg(exp)
        .ignore()
        .cmd("HSET")
        .arg(&ik)
        .arg("m")
        .arg(&m.message_id)
        .arg("s")
        .arg(0)
        .ignore()
        .cmd("PEXPIREAT")
        .arg(&ik)
        .arg(exp)
        .ignore()
        .query_async(c)
        .await
        .unwrap();
}

/// Redis memory per stored and delivered single-segment message, index
/// included. The target is at most 400 bytes; this layout takes ~570 once
/// the index entry's grace has passed, ~730 within it (each key costs
/// ~130 bytes of Redis's own before its name and value: see BENCHMARKS.md).
/// The layout of the version before, written the same way, takes more than
/// twice that.
#[tokio::test]
async fn a_delivered_message_should_take_a_fraction_of_the_memory_it_took() {
    // Within the index entry's grace (the default, 600 s).
    let (with_index, _) = per_message(MessageStoreOptions::default(), 3).await;
    // After it: a grace of 1 ms, so the entries go at the final receipt.
    let opts = MessageStoreOptions::default().index_grace(Duration::from_millis(1));
    let (settled, v1) = per_message(opts, 2).await;
    eprintln!(
        "bytes per message: {with_index} with index, {settled} after its grace; {v1} as before"
    );
    assert!(settled <= 600, "{settled} bytes per message");
    assert!(
        with_index <= 800,
        "{with_index} bytes per message with its index"
    );
    assert!(v1 > 2 * settled, "{v1} before against {settled}");
}

/// Waits until Redis holds `keys` keys. Redis reclaims expired keys by
/// sampling (and stops while fewer than a tenth of the keys with a TTL are
/// expired) or when they are touched: a `SCAN` pass touches them all.
async fn settle(c: &mut redis::aio::MultiplexedConnection, keys: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while dbsize(c).await != keys {
        assert!(
            std::time::Instant::now() < deadline,
            "{} keys, not {keys}",
            dbsize(c).await
        );
        let mut cursor = 0u64;
        loop {
            let (next, _): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(10_000)
                .query_async(c)
                .await
                .unwrap();
            if next == 0 {
                break;
            }
            cursor = next;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Redis memory per message after storing and delivering `n()` of them
/// (once `keys` keys a message are left), and per message of the layout
/// of the version before.
async fn per_message(opts: MessageStoreOptions, keys: i64) -> (i64, i64) {
    let server = RedisServer::start();
    let store = RedisMessageStore::connect(&RedisConfig::new(server.url()), opts)
        .await
        .unwrap();
    let mut c = conn(&server).await;
    // Warm up: scripts loaded, connections open.
    deliver(&store, 1_000_000).await;
    settle(&mut c, keys * i64::from(n())).await;
    let before = used_memory(&mut c).await;
    deliver(&store, 0).await;
    settle(&mut c, 2 * keys * i64::from(n())).await;
    let ours = (used_memory(&mut c).await - before) / i64::from(n());
    for kind in ["smsgw:m*", "smsgw:t*", "smsgw:i*"] {
        let (_, found): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(0)
            .arg("MATCH")
            .arg(kind)
            .arg("COUNT")
            .arg(1_000)
            .query_async(&mut c)
            .await
            .unwrap();
        if let Some(k) = found.first() {
            let bytes: i64 = redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(k)
                .query_async(&mut c)
                .await
                .unwrap();
            eprintln!("MEMORY USAGE of a {kind} key: {bytes} B");
        }
    }
    let before_v1 = used_memory(&mut c).await;
    write_v1(&mut c, 2_000_000).await;
    let v1 = (used_memory(&mut c).await - before_v1) / i64::from(n());
    (ours, v1)
}

/// A day of messages written by the version before stays readable and
/// updatable: by id, by transaction (and its key still decides
/// idempotency), and by receipt.
#[tokio::test]
async fn messages_written_by_the_version_before_should_still_work() {
    let server = RedisServer::start();
    let store = RedisMessageStore::connect(
        &RedisConfig::new(server.url()),
        MessageStoreOptions::default(),
    )
    .await
    .unwrap();
    let mut c = conn(&server).await;

    // Submitted (accepted by the SMSC), awaiting its receipt.
    let mut m = message(1);
    let sid = smsc_id(1);
    m.status = MessageStatus::Pending;
    m.segments[0].smsc_message_id = Some(sid.clone());
    m.segments[0].submit = SubmitStatus::Accepted;
    m.segments[0].submitted_at_ms = Some(m.created_at_ms + 12);
    put_v1(&mut c, &m, &sid).await;

    assert_eq!(store.get(&m.message_id).await.unwrap(), Some(m.clone()));
    assert_eq!(
        store
            .by_transaction(&m.app_id, &m.transaction_id)
            .await
            .unwrap(),
        Some(m.clone())
    );
    // The same transaction again (another id): the existing message.
    let mut again = message(1);
    again.message_id = "0190f3a2b4c57d8e9fa0b1c2d3e4f5a6".into();
    match store.create(&again).await.unwrap() {
        smsgw_core::messages::CreateOutcome::Existing(r) => assert_eq!(r, m),
        other => panic!("expected Existing, got {other:?}"),
    }
    assert_eq!(store.get(&again.message_id).await.unwrap(), None);
    // Its receipt is matched through the old index entry and applied.
    let delivered = match store
        .apply_receipt(&receipt(&sid, ReceiptState::Delivered))
        .await
        .unwrap()
    {
        ReceiptOutcome::Applied(r) => r,
        other => panic!("expected Applied, got {other:?}"),
    };
    assert_eq!(delivered.status, MessageStatus::Delivered);
    assert_eq!(store.get(&m.message_id).await.unwrap(), Some(delivered));
    // A duplicate of it is one.
    assert!(matches!(
        store
            .apply_receipt(&receipt(&sid, ReceiptState::Delivered))
            .await
            .unwrap(),
        ReceiptOutcome::Duplicate(_)
    ));
    // The record stays in the old layout (pods of the version before read
    // it during the upgrade), and no receipt was left parked.
    let t: String = redis::cmd("TYPE")
        .arg(format!("{{smsgw:m:{}}}", m.message_id))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(t, "hash");
    let index: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("smsgw:i*")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(index.is_empty(), "{index:?}");

    // A message created now, next to it, works as ever.
    let fresh = message(2);
    store.create(&fresh).await.unwrap();
    let sid2 = smsc_id(2);
    store.record_submit(&submit(&fresh, &sid2)).await.unwrap();
    assert!(matches!(
        store
            .apply_receipt(&receipt(&sid2, ReceiptState::Delivered))
            .await
            .unwrap(),
        ReceiptOutcome::Applied(_)
    ));
}
