//! The address-claim contract of the user store, on every backend that
//! can run here: embedded (redb) and Redis (a real `redis-server` on an
//! ephemeral port).

use smsgw_store::contract::claims;
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
async fn embedded_claims_are_put_if_absent_approved_and_released() {
    let (_d, s) = embedded();
    claims::claims_put_approve_release(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_concurrent_claims_let_exactly_one_app_win() {
    let (_d, s) = embedded();
    claims::claims_concurrent_put_lets_exactly_one_win(Arc::new(s)).await;
}

#[tokio::test]
async fn embedded_claims_go_with_their_user() {
    let (_d, s) = embedded();
    claims::claims_go_with_their_user(&s).await;
}

#[tokio::test]
async fn embedded_claims_survive_a_reopen() {
    use smsgw_core::users::UserStore;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.redb");
    let c = claims::claim(1, "4444", Some("STOP"));
    {
        let s = EmbeddedUserStore::open(&path).unwrap();
        s.put_claim(&c, 10).await.unwrap();
    }
    let s = EmbeddedUserStore::open(&path).unwrap();
    assert_eq!(s.claim("4444:STOP").await.unwrap(), Some(c));
}

#[tokio::test]
async fn redis_claims_are_put_if_absent_approved_and_released() {
    let (_r, s) = redis().await;
    claims::claims_put_approve_release(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_concurrent_claims_let_exactly_one_app_win() {
    let (_r, s) = redis().await;
    claims::claims_concurrent_put_lets_exactly_one_win(Arc::new(s)).await;
}

#[tokio::test]
async fn redis_claims_go_with_their_user() {
    let (_r, s) = redis().await;
    claims::claims_go_with_their_user(&s).await;
}
