//! The store contract, run against every backend that can run here.
//! Aerospike (when it lands) runs only with `AEROSPIKE_HOSTS` set.

use smsgw_store::contract;
use smsgw_store::testing::RedisServer;
use smsgw_store::{EmbeddedUserStore, RedisConfig, RedisUserStore};
use std::sync::Arc;

fn embedded() -> (tempfile::TempDir, EmbeddedUserStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedUserStore::open(&dir.path().join("users.redb")).unwrap();
    (dir, store)
}

async fn redis() -> (RedisServer, RedisUserStore) {
    let server = RedisServer::start();
    let store = RedisUserStore::connect(&RedisConfig::new(server.url()))
        .await
        .unwrap();
    (server, store)
}

#[tokio::test]
async fn embedded_users_round_trip() {
    let (_d, s) = embedded();
    contract::users_round_trip(&s).await;
}

#[tokio::test]
async fn embedded_users_unique_keys() {
    let (_d, s) = embedded();
    contract::users_unique_keys(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_concurrent_registration_lets_exactly_one_win() {
    let (_d, s) = embedded();
    contract::users_concurrent_registration(Arc::new(s)).await;
}

#[tokio::test]
async fn embedded_users_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.redb");
    {
        let s = EmbeddedUserStore::open(&path).unwrap();
        use smsgw_core::users::UserStore;
        s.create(&contract::user(7)).await.unwrap();
    }
    let s = EmbeddedUserStore::open(&path).unwrap();
    use smsgw_core::users::UserStore;
    assert_eq!(s.get("u0007").await.unwrap(), Some(contract::user(7)));
}

#[tokio::test]
async fn redis_users_round_trip() {
    let (_r, s) = redis().await;
    contract::users_round_trip(&s).await;
}

#[tokio::test]
async fn redis_users_unique_keys() {
    let (_r, s) = redis().await;
    contract::users_unique_keys(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_concurrent_registration_lets_exactly_one_win() {
    let (_r, s) = redis().await;
    contract::users_concurrent_registration(Arc::new(s)).await;
}

#[tokio::test]
async fn redis_unreachable_is_a_backend_error_not_a_hang() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = std::time::Instant::now();
    let r = RedisUserStore::connect(&RedisConfig::new(format!("redis://127.0.0.1:{port}"))).await;
    assert!(matches!(r, Err(smsgw_core::users::StoreError::Backend(_))));
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}
