//! The Redis message store's footprint and its reading of the layout of
//! the version before, against a real `redis-server`.

use smsgw_core::messages::{
    MessageRecord, MessageStatus, MessageStore, ReceiptOutcome, ReceiptState, ReceiptUpdate,
    SegmentRecord, SubmitStatus, SubmitUpdate, Target, unix_now_ms,
};
use smsgw_store::RedisConfig;
use smsgw_store::contract::assert_readable;
use smsgw_store::messages::{MessageStoreOptions, RedisMessageStore};
use smsgw_store::testing::{RedisServer, packed, record_bytes};
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
        sent_at_ms: None,
        options: Default::default(),
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
        assert_delivered(store, &sid).await;
    }
}

/// A second DELIVRD receipt for `sid` is matched as a duplicate.
async fn assert_duplicate(store: &RedisMessageStore, sid: &str) {
    let again = store
        .apply_receipt(&receipt(sid, ReceiptState::Delivered))
        .await
        .unwrap();
    assert!(matches!(again, ReceiptOutcome::Duplicate(_)), "{again:?}");
}

/// A DELIVRD receipt for `sid` is applied and delivers its message.
async fn assert_delivered(store: &RedisMessageStore, sid: &str) {
    match store
        .apply_receipt(&receipt(sid, ReceiptState::Delivered))
        .await
        .unwrap()
    {
        ReceiptOutcome::Applied(r) => assert_eq!(r.status, MessageStatus::Delivered),
        other => panic!("receipt of {sid}: {other:?}"),
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

/// Writes `n()` delivered messages from `from` as the version before this
/// one laid them out (each in keys of its own): the record as a binary
/// string, the transaction key holding the packed id, the index hash.
async fn write_v2(c: &mut redis::aio::MultiplexedConnection, from: u32, index: bool) {
    for n in from..from + n() {
        let mut m = message(n);
        let sid = smsc_id(n);
        m.status = MessageStatus::Delivered;
        m.claimed_by = None;
        m.claim_until_ms = 0;
        m.segments[0].smsc_message_id = Some(sid.clone());
        m.segments[0].submit = SubmitStatus::Accepted;
        m.segments[0].receipt = Some(ReceiptState::Delivered);
        m.segments[0].error_code = Some(0);
        m.segments[0].submitted_at_ms = Some(m.created_at_ms + 12);
        m.segments[0].receipt_at_ms = Some(m.created_at_ms + 2_000);
        put_v2(c, &m, index.then_some(sid.as_str())).await;
    }
}

/// `m` in the layout of the version before this one, with its index
/// entry for `sid` if given.
async fn put_v2(c: &mut redis::aio::MultiplexedConnection, m: &MessageRecord, sid: Option<&str>) {
    let exp = m.created_at_ms + 86_400_000;
    let key = |kind: u8, parts: &[&str]| {
        let mut k = b"smsgw:".to_vec();
        k.push(kind);
        for p in parts {
            k.extend(packed(p));
        }
        k
    };
    let mut pipe = redis::pipe();
    pipe.cmd("SET")
        .arg(key(b'm', &[&m.message_id]))
        .arg(record_bytes(m))
        .arg("PXAT")
        .arg(exp)
        .ignore()
        .cmd("SET")
        .arg(key(b't', &[&m.app_id, &m.transaction_id]))
        .arg(packed(&m.message_id))
        .arg("PXAT")
        .arg(exp)
        .ignore();
    if let Some(sid) = sid {
        let ik = key(b'i', &[LINK, sid]);
        pipe.cmd("HSET")
            .arg(&ik)
            .arg("m")
            .arg(packed(&m.message_id))
            .arg("s")
            .arg(0)
            .ignore()
            .cmd("PEXPIREAT")
            .arg(&ik)
            .arg(exp)
            .ignore();
    }
    let () = pipe.query_async(c).await.unwrap();
}

/// Redis memory per stored and delivered single-segment message, index
/// included. The target is at most 400 bytes: records in buckets by the
/// time in their id and both indexes in shared listpack hashes take ~360
/// once the SMSC-id index entry's grace has passed, ~410 within it, at
/// 2,000 messages (~350 and ~395 at 100,000: BENCHMARKS.md). The layout of
/// the version before (a record, its transaction key and its index entry
/// each a key of its own), written the same way, takes ~560 and ~700; the
/// one before that more than three times ours.
#[tokio::test]
async fn a_delivered_message_should_take_a_fraction_of_the_memory_it_took() {
    // Within the index entry's grace (the default, 600 s).
    let with_index = per_message(MessageStoreOptions::default(), true).await;
    // After it: a grace of 1 ms, so the entries go at the final receipt.
    let opts = MessageStoreOptions::default().index_grace(Duration::from_millis(1));
    let settled = per_message(opts, false).await;
    eprintln!(
        "bytes per message: {} with index ({} in the layout before), {} after its grace ({} before); {} two layouts before",
        with_index.ours, with_index.v2, settled.ours, settled.v2, settled.v1
    );
    assert!(settled.ours <= 400, "{settled:?}");
    assert!(with_index.ours <= 480, "{with_index:?}");
    assert!(settled.ours + 150 <= settled.v2, "{settled:?}");
    assert!(with_index.ours + 150 <= with_index.v2, "{with_index:?}");
    assert!(settled.v1 > 3 * settled.ours, "{settled:?}");
}

/// Waits until the SMSC-id index has no leaves left (their entries' grace
/// over). Redis reclaims expired keys by sampling (and stops while fewer
/// than a tenth of the keys with a TTL are expired) or when they are
/// touched: a `SCAN` pass touches them all.
async fn settle(c: &mut redis::aio::MultiplexedConnection) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut cursor = 0u64;
        let mut index = 0;
        loop {
            let (next, found): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(10_000)
                .query_async(c)
                .await
                .unwrap();
            index += found
                .iter()
                .filter(|k| k.starts_with(b"{smsgw:x:") && !k.ends_with(b"}l"))
                .count();
            if next == 0 {
                break;
            }
            cursor = next;
        }
        if index == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{index} index leaves left"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Bytes per message: ours, the layout before and the one before that.
#[derive(Debug)]
struct PerMessage {
    ours: i64,
    v2: i64,
    v1: i64,
}

/// Redis memory per message after storing and delivering `n()` of them
/// (with their index entries, or once those are gone), and per message
/// of the layouts before, written the same way.
async fn per_message(opts: MessageStoreOptions, index: bool) -> PerMessage {
    let server = RedisServer::start();
    let store = RedisMessageStore::connect(&RedisConfig::new(server.url()), opts)
        .await
        .unwrap();
    let mut c = conn(&server).await;
    let count = n();
    let per = |bytes: i64| bytes / i64::from(n());
    // Warm up: scripts loaded, connections open.
    deliver(&store, 1_000_000).await;
    if !index {
        settle(&mut c).await;
    }
    let before = used_memory(&mut c).await;
    deliver(&store, 0).await;
    if !index {
        settle(&mut c).await;
    }
    let ours = per(used_memory(&mut c).await - before);
    eprintln!("{} keys for {} messages", dbsize(&mut c).await, 2 * count);
    for (kind, what) in [
        (&b"smsgw:r"[..], "record bucket"),
        (b"{smsgw:t:", "transaction-id shard"),
        (b"{smsgw:x:", "SMSC-id shard"),
    ] {
        let mut pattern = kind.to_vec();
        pattern.push(b'*');
        let (_, found): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(0)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1_000)
            .query_async(&mut c)
            .await
            .unwrap();
        // An index leaf, not the shard's list of generations.
        let Some(k) = found.iter().find(|k| !k.ends_with(b"}l")) else {
            continue;
        };
        let bytes: i64 = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(k)
            .query_async(&mut c)
            .await
            .unwrap();
        let ty: String = redis::cmd("TYPE").arg(k).query_async(&mut c).await.unwrap();
        let fields: i64 = if ty == "hash" {
            redis::cmd("HLEN").arg(k).query_async(&mut c).await.unwrap()
        } else {
            1
        };
        let encoding: String = redis::cmd("OBJECT")
            .arg("ENCODING")
            .arg(k)
            .query_async(&mut c)
            .await
            .unwrap();
        eprintln!(
            "MEMORY USAGE of a {what} ({ty}, {encoding}, {fields} fields): {bytes} B, {} B a field",
            bytes / fields
        );
    }
    let before = used_memory(&mut c).await;
    write_v2(&mut c, 3_000_000, index).await;
    let v2 = per(used_memory(&mut c).await - before);
    let before = used_memory(&mut c).await;
    write_v1(&mut c, 2_000_000).await;
    let v1 = per(used_memory(&mut c).await - before);
    PerMessage { ours, v2, v1 }
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

    assert_readable(&store, &m).await;
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
    assert_duplicate(&store, &sid).await;
    // The record stays in the old layout (pods of the version before read
    // it during the upgrade), and no receipt was left parked.
    let t: String = redis::cmd("TYPE")
        .arg(format!("{{smsgw:m:{}}}", m.message_id))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(t, "hash");
    let parked: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("{smsgw:x:*}p*")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(parked.is_empty(), "{parked:?}");

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

/// A message written in the layout of the version before this one (a
/// record, its transaction key and its index entry each a key of its own)
/// is still found by id and by transaction (and its key still decides
/// idempotency), and takes its receipt, in place.
#[tokio::test]
async fn messages_written_in_keys_of_their_own_should_still_work() {
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
    put_v2(&mut c, &m, Some(&sid)).await;

    assert_readable(&store, &m).await;
    let mut again = message(1);
    again.message_id = message(2).message_id;
    match store.create(&again).await.unwrap() {
        smsgw_core::messages::CreateOutcome::Existing(r) => assert_eq!(r, m),
        other => panic!("expected Existing, got {other:?}"),
    }
    assert_eq!(store.get(&again.message_id).await.unwrap(), None);
    let delivered = match store
        .apply_receipt(&receipt(&sid, ReceiptState::Delivered))
        .await
        .unwrap()
    {
        ReceiptOutcome::Applied(r) => r,
        other => panic!("expected Applied, got {other:?}"),
    };
    assert_eq!(delivered.status, MessageStatus::Delivered);
    assert_readable(&store, &delivered).await;
    assert_duplicate(&store, &sid).await;
    // Updated in place: still a key of its own; nothing in a bucket.
    let mut own = b"smsgw:m".to_vec();
    own.extend(packed(&m.message_id));
    let t: String = redis::cmd("TYPE")
        .arg(own)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(t, "string");
    let buckets: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("smsgw:r*")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(buckets.is_empty(), "{buckets:?}");

    // A message created now, next to it, goes to a bucket and works.
    let fresh = message(2);
    store.create(&fresh).await.unwrap();
    assert_readable(&store, &fresh).await;
    let sid2 = smsc_id(2);
    store.record_submit(&submit(&fresh, &sid2)).await.unwrap();
    assert!(matches!(
        store
            .apply_receipt(&receipt(&sid2, ReceiptState::Delivered))
            .await
            .unwrap(),
        ReceiptOutcome::Applied(_)
    ));
    let buckets: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("smsgw:r*")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(buckets.len(), 1, "{buckets:?}");
}

/// A message's memory is reclaimed after its TTL and at most one
/// generation of the indexes (`ttl / 4`): with a TTL of 1 s, nothing of
/// a delivered message (record, transaction id, SMSC id, the lists of
/// generations) is left 1.25 s after its creation (plus a margin for
/// Redis to notice); a message still awaiting its receipt neither.
#[tokio::test]
async fn a_message_should_leave_nothing_behind_once_its_ttl_and_a_generation_are_over() {
    let server = RedisServer::start();
    let ttl = Duration::from_secs(1);
    let store = RedisMessageStore::connect(
        &RedisConfig::new(server.url()),
        MessageStoreOptions::default().ttl(ttl),
    )
    .await
    .unwrap();
    let mut c = conn(&server).await;
    for n in 0..50 {
        let m = message(n);
        store.create(&m).await.unwrap();
        let sid = smsc_id(n);
        store.record_submit(&submit(&m, &sid)).await.unwrap();
        if n % 2 == 0 {
            store
                .apply_receipt(&receipt(&sid, ReceiptState::Delivered))
                .await
                .unwrap();
        }
    }
    assert!(dbsize(&mut c).await > 0);
    tokio::time::sleep(ttl + ttl / 4 + Duration::from_millis(300)).await;
    // Expired keys go when touched (or sampled): touch them all.
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut c)
        .await
        .unwrap();
    for k in &keys {
        let _: i64 = redis::cmd("EXISTS")
            .arg(k)
            .query_async(&mut c)
            .await
            .unwrap();
    }
    let left: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(
        left.is_empty(),
        "{:?}",
        left.iter()
            .map(|k| String::from_utf8_lossy(k))
            .collect::<Vec<_>>()
    );
}

/// The version before cut the indexes into generations `ttl / 8` wide,
/// this one `ttl / 4`: a store reads the generations of any width, so a
/// message indexed in generations 3 h wide (a 12 h TTL here, as the
/// version before did with 24 h) is found by a store of 6 h generations
/// (24 h TTL), by its transaction (still taken) and by its SMSC id (its
/// receipt applied once, a duplicate matched), and the reverse.
#[tokio::test]
async fn index_generations_of_another_width_should_still_be_read() {
    let server = RedisServer::start();
    let connect = |ttl: Duration| {
        let url = server.url();
        async move {
            RedisMessageStore::connect(
                &RedisConfig::new(url),
                MessageStoreOptions::default().ttl(ttl),
            )
            .await
            .unwrap()
        }
    };
    let narrow = connect(Duration::from_secs(12 * 3600)).await;
    let wide = connect(Duration::from_secs(24 * 3600)).await;
    for (n, (writer, reader)) in [(&narrow, &wide), (&wide, &narrow)].into_iter().enumerate() {
        let n = n as u32;
        let m = message(n);
        writer.create(&m).await.unwrap();
        let mut again = message(n);
        again.message_id = message(n + 100).message_id;
        match reader.create(&again).await.unwrap() {
            smsgw_core::messages::CreateOutcome::Existing(r) => {
                assert_eq!(r.message_id, m.message_id)
            }
            other => panic!("expected Existing, got {other:?}"),
        }
        let sid = smsc_id(n);
        writer.record_submit(&submit(&m, &sid)).await.unwrap();
        assert_delivered(reader, &sid).await;
        assert_duplicate(writer, &sid).await;
    }
}
