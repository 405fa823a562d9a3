//! The S3 client (aws-sdk-s3) against a real S3-compatible server:
//! single and multipart uploads, listing past a page, retries of a server
//! that went away, refused credentials and bad settings.

mod common;

use bytes::Bytes;
use common::{ACCESS_KEY, BUCKET, S3Server};
use futures::TryStreamExt;
use smsgw_archive::{ArchiveError, ObjectStore, S3Config, S3Store};
use std::time::Duration;

async fn read_all(store: &S3Store, key: &str) -> Vec<u8> {
    store
        .get(key)
        .await
        .unwrap()
        .map_ok(|b| b.to_vec())
        .try_concat()
        .await
        .unwrap()
}

/// Bytes that do not repeat in any short period (a journal batch is
/// gzip: nothing a server could shortcut).
fn noise(len: usize) -> Bytes {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

#[tokio::test]
async fn a_large_object_should_go_up_in_parts_and_come_back_whole() {
    let s3 = S3Server::start().await;
    let mut config = s3.config();
    config.multipart_threshold = 6 << 20;
    config.part_size = 5 << 20;
    let store = S3Store::new(&config).unwrap();
    let body = noise((12 << 20) + 12345);
    store
        .put("journal/big.jsonl.gz", body.clone())
        .await
        .unwrap();

    let parts: Vec<String> = s3
        .requests()
        .into_iter()
        .filter(|r| r.contains("partNumber="))
        .collect();
    assert_eq!(parts.len(), 3, "12 MiB in 5 MiB parts: {parts:?}");
    let requests = s3.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("POST") && r.contains("?uploads")),
        "{requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("POST") && r.contains("uploadId=")),
        "completed: {requests:?}"
    );
    assert_eq!(read_all(&store, "journal/big.jsonl.gz").await, body);
    assert_eq!(
        std::fs::read(s3.object_path("journal/big.jsonl.gz")).unwrap(),
        body,
        "the server holds the parts joined in order"
    );

    // Below the threshold: one PUT, no parts.
    let before = s3.requests().len();
    store
        .put("journal/small.jsonl.gz", noise(1 << 20))
        .await
        .unwrap();
    let after = &s3.requests()[before..];
    assert!(
        after
            .iter()
            .all(|r| !r.contains("partNumber") && !r.contains("uploads")),
        "{after:?}"
    );
    assert_eq!(
        read_all(&store, "journal/small.jsonl.gz").await,
        noise(1 << 20)
    );
}

#[tokio::test]
async fn list_should_follow_continuation_past_one_page() {
    let s3 = S3Server::start().await;
    // s3s-fs answers up to 1000 keys a page: 1005 need two.
    for i in 0..1005 {
        let path = s3.object_path(&format!("lists/k{i:05}.csv"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }
    let store = s3.store();
    let keys = store.list("lists/").await.unwrap();
    assert_eq!(keys.len(), 1005);
    assert_eq!(keys[0], "lists/k00000.csv");
    assert_eq!(keys[1004], "lists/k01004.csv");
    assert!(keys.windows(2).all(|w| w[0] < w[1]));
    assert!(store.list("nothing/").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_put_should_be_retried_by_the_sdk_while_the_server_comes_back() {
    let mut s3 = S3Server::start().await;
    let mut config = s3.config();
    config.max_attempts = 10;
    config.timeout = Duration::from_secs(5);
    let store = S3Store::new(&config).unwrap();
    s3.stop().await;
    let put = tokio::spawn({
        let store = store.clone();
        async move { store.put("k/retried", Bytes::from_static(b"hello")).await }
    });
    // The SDK backs off (jittered, ~1 s on average by the third try);
    // restart the server while it is retrying.
    tokio::time::sleep(Duration::from_millis(300)).await;
    s3.restart().await;
    put.await
        .unwrap()
        .expect("a retry reached the restarted server");
    assert_eq!(read_all(&store, "k/retried").await, b"hello");

    // One attempt only: the failure is reported, not hidden.
    let mut once = s3.config();
    once.max_attempts = 1;
    let store = S3Store::new(&once).unwrap();
    s3.stop().await;
    let e = store
        .put("k/once", Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(matches!(e, ArchiveError::S3 { op: "put", .. }), "{e}");
}

#[tokio::test]
async fn wrong_credentials_should_fail_with_the_reason_and_no_secret() {
    let s3 = S3Server::start().await;
    let mut config = s3.config();
    config.secret_key = "not-the-secret-key".into();
    let store = S3Store::new(&config).unwrap();
    let e = store
        .put("k/denied", Bytes::from_static(b"x"))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("S3 put failed"), "{e}");
    assert!(!e.contains("not-the-secret-key"), "{e}");
    assert!(!s3.object_path("k/denied").exists());
}

#[test]
fn unusable_settings_should_be_refused_with_what_is_wrong() {
    let base = S3Config::new("http://127.0.0.1:9", BUCKET, ACCESS_KEY, "secret");
    let refused = |c: S3Config| match S3Store::new(&c) {
        Err(ArchiveError::Config(m)) => m,
        other => panic!("{other:?}"),
    };
    let mut c = base.clone();
    c.endpoint = "not a url".into();
    assert!(refused(c).contains("S3 endpoint"));
    let mut c = base.clone();
    c.endpoint = "ftp://host".into();
    assert!(refused(c).contains("http(s)://"));
    let mut c = base.clone();
    c.secret_key = String::new();
    assert!(refused(c).contains("both"));
    let mut c = base.clone();
    c.part_size = 1 << 20;
    assert!(refused(c).contains("5 MiB"));
    let mut c = base.clone();
    c.bucket = String::new();
    assert!(refused(c).contains("bucket"));
    // No keys at all: the standard AWS chain, resolved on first use.
    let mut c = base;
    c.access_key = String::new();
    c.secret_key = String::new();
    assert!(S3Store::new(&c).is_ok());
}
