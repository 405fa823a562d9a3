//! Blacklist import from a real S3-compatible server into a real Redis.

mod common;

use bytes::Bytes;
use common::S3Server;
use smsgw_archive::{BlacklistImporter, BlacklistSource, LoadOptions, ObjectStore};
use smsgw_contact::{InProcessBlacklists, RedisBlacklists};
use smsgw_core::policy::BlacklistSink;
use smsgw_store::testing::RedisServer;
use std::sync::Arc;

#[tokio::test]
async fn a_blacklist_should_stream_from_s3_into_redis_and_replace_the_old_one() {
    let s3 = S3Server::start().await;
    let store = Arc::new(s3.store());
    store
        .put(
            "lists/default/a.csv",
            Bytes::from_static(
                b"number,reason\n+33 6 12 34 56 78,opt-out\n0033612345679;x\nnot-a-number\n\n# comment\n+4479*\r\n",
            ),
        )
        .await
        .unwrap();
    // No newline at the end; a malformed line on line 2.
    store
        .put(
            "lists/default/b.csv",
            Bytes::from_static(b"447911123456\n12\n\"+49 30 1234567\""),
        )
        .await
        .unwrap();
    store
        .put("lists/other/c.csv", Bytes::from_static(b"33600000000\n"))
        .await
        .unwrap();

    let redis = RedisServer::start();
    let conn = redis::Client::open(redis.url())
        .unwrap()
        .get_connection_manager()
        .await
        .unwrap();
    let sink = RedisBlacklists::new(conn, "smsgw");
    let importer = BlacklistImporter::new(
        vec![BlacklistSource {
            name: "default".into(),
            store: store.clone(),
            prefix: "lists/default/".into(),
        }],
        Arc::new(sink.clone()),
        LoadOptions::default(),
    );
    let report = importer.load("default").await.unwrap();
    assert_eq!(report.objects, 2);
    assert_eq!(report.numbers, 4);
    assert_eq!(report.prefixes, 1);
    assert_eq!(report.malformed, 2);
    let where_: Vec<(&str, u64)> = report
        .malformed_lines
        .iter()
        .map(|m| (m.object.as_str(), m.line))
        .collect();
    assert_eq!(
        where_,
        [("lists/default/a.csv", 4), ("lists/default/b.csv", 2)]
    );
    assert_eq!(report.malformed_lines[0].content, "not-a-number");
    assert_eq!(sink.len("default").await.unwrap(), (4, 1));
    for n in [
        "33612345678",
        "33612345679",
        "447911123456",
        "49301234567",
        "447900000001",
    ] {
        assert!(sink.contains("default", n).await.unwrap(), "{n}");
    }
    assert!(!sink.contains("default", "33600000000").await.unwrap());

    // A new version replaces the old list whole.
    store
        .put("lists/default/a.csv", Bytes::from_static(b"33600000001\n"))
        .await
        .unwrap();
    store
        .put("lists/default/b.csv", Bytes::from_static(b""))
        .await
        .unwrap();
    let report = importer.load("default").await.unwrap();
    assert_eq!((report.numbers, report.malformed), (1, 0));
    assert_eq!(sink.len("default").await.unwrap(), (1, 0));
    assert!(!sink.contains("default", "33612345678").await.unwrap());

    // An unknown list and an S3 outage are errors; the list in force stays.
    assert!(importer.load("nope").await.is_err());
    let mut s3 = s3;
    s3.stop().await;
    assert!(importer.load("default").await.is_err());
    assert_eq!(sink.len("default").await.unwrap(), (1, 0));
    assert!(importer.last_reports()["default"].is_err());
}

#[tokio::test]
async fn chunk_boundaries_and_overlong_lines_should_not_break_lines() {
    let s3 = S3Server::start().await;
    let store = Arc::new(s3.store());
    // 20 000 numbers, plus one 5 KiB line in the middle.
    let mut csv = String::new();
    for i in 0..10_000u64 {
        csv.push_str(&format!("+33 6{:08}\n", i));
    }
    csv.push_str(&"9".repeat(5000));
    csv.push('\n');
    for i in 10_000..20_000u64 {
        csv.push_str(&format!("0033 6{:08}\r\n", i));
    }
    store
        .put("bl/x.csv", Bytes::from(csv.into_bytes()))
        .await
        .unwrap();
    let sink = InProcessBlacklists::new();
    let opts = LoadOptions {
        batch: 777,
        ..LoadOptions::default()
    };
    let source = BlacklistSource {
        name: "x".into(),
        store,
        prefix: "bl/".into(),
    };
    let report = smsgw_archive::load_blacklist(&source, &sink as &dyn BlacklistSink, &opts)
        .await
        .unwrap();
    assert_eq!(report.numbers, 20_000);
    assert_eq!(report.malformed, 1);
    assert_eq!(report.malformed_lines[0].line, 10_001);
    assert_eq!(report.lines, 20_001);
    assert_eq!(sink.len("x"), (20_000, 0));
    assert!(sink.contains("x", "33600019999"));
}
