//! The store contract, run against every backend that can run here.
//! Aerospike runs only with `--ignored` and `AEROSPIKE_HOSTS` set.

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

// ---------------------------------------------------------------------------
// Message store contract: embedded, Redis, and Aerospike when
// `AEROSPIKE_HOSTS` is set.
// ---------------------------------------------------------------------------

mod messages {
    use smsgw_core::messages::MessageStore;
    use smsgw_store::RedisConfig;
    use smsgw_store::contract;
    use smsgw_store::messages::{
        AerospikeConfig, AerospikeMessageStore, EmbeddedMessageStore, MessageStoreOptions,
        RedisMessageStore,
    };
    use smsgw_store::testing::RedisServer;
    use std::sync::Arc;
    use std::time::Duration;

    const SHORT_TTL: Duration = Duration::from_secs(1);

    /// A fresh embedded store, and what keeps it alive.
    async fn embedded(
        opts: MessageStoreOptions,
    ) -> (Box<dyn std::any::Any>, Arc<dyn MessageStore>) {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedMessageStore::open(&dir.path().join("messages.redb"), opts).unwrap();
        (Box::new(dir), Arc::new(s))
    }

    async fn redis(opts: MessageStoreOptions) -> (Box<dyn std::any::Any>, Arc<dyn MessageStore>) {
        let server = RedisServer::start();
        let s = RedisMessageStore::connect(&RedisConfig::new(server.url()), opts)
            .await
            .unwrap();
        (Box::new(server), Arc::new(s))
    }

    /// The Aerospike store at `AEROSPIKE_HOSTS`. No Aerospike server can
    /// run on the build machines, so these tests are `#[ignore]`d: run them
    /// with `--ignored` and the variable set; without it they fail.
    async fn aerospike(opts: MessageStoreOptions) -> Made {
        let hosts = std::env::var("AEROSPIKE_HOSTS")
            .expect("AEROSPIKE_HOSTS must name the Aerospike seed hosts (host:port[,…])");
        let mut cfg = AerospikeConfig::new(hosts);
        if let Ok(ns) = std::env::var("AEROSPIKE_NAMESPACE") {
            cfg.namespace = ns;
        }
        let s = AerospikeMessageStore::connect(&cfg, opts).await.unwrap();
        Some((Box::new(()), Arc::new(s)))
    }

    macro_rules! contract_for {
        ($backend:ident, $make:ident $(, #[$attr:meta])*) => {
            mod $backend {
                use super::*;

                $(#[$attr])*
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn round_trip() {
                    let Some((_k, s)) = $make(MessageStoreOptions::default()).await else {
                        return;
                    };
                    contract::messages_round_trip(&*s).await;
                }

                $(#[$attr])*
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn same_transaction_twice_yields_the_same_message() {
                    let Some((_k, s)) = $make(MessageStoreOptions::default()).await else {
                        return;
                    };
                    contract::messages_idempotent_create(&*s).await;
                }

                $(#[$attr])*
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn concurrent_creates_let_exactly_one_win() {
                    let Some((_k, s)) = $make(MessageStoreOptions::default()).await else {
                        return;
                    };
                    contract::messages_concurrent_create(s).await;
                }

                $(#[$attr])*
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn receipts_are_matched_by_link_and_smsc_id() {
                    let Some((_k, s)) = $make(MessageStoreOptions::default()).await else {
                        return;
                    };
                    contract::messages_receipt_matching(&*s).await;
                }

                $(#[$attr])*
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn a_receipt_before_its_submit_resp_is_parked_then_applied() {
                    let Some((_k, s)) = $make(MessageStoreOptions::default()).await else {
                        return;
                    };
                    contract::messages_receipt_before_submit_resp(&*s).await;
                }

                $(#[$attr])*
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn a_multipart_message_is_delivered_when_every_segment_is() {
                    let Some((_k, s)) = $make(MessageStoreOptions::default()).await else {
                        return;
                    };
                    contract::messages_multipart_delivered_when_all_are(&*s).await;
                }

                $(#[$attr])*
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn a_failed_segment_fails_the_message() {
                    let Some((_k, s)) = $make(MessageStoreOptions::default()).await else {
                        return;
                    };
                    contract::messages_failed_segment(&*s).await;
                }

                $(#[$attr])*
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn unknown_receipts_are_parked_not_errors() {
                    let Some((_k, s)) = $make(MessageStoreOptions::default()).await else {
                        return;
                    };
                    contract::messages_unknown_receipt_is_parked(&*s).await;
                }

                $(#[$attr])*
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn changes_answer_the_status_before_and_after() {
                    let Some((_k, s)) = $make(MessageStoreOptions::default()).await else {
                        return;
                    };
                    contract::messages_status_before_and_after(&*s).await;
                }

                $(#[$attr])*
                #[tokio::test]
                async fn a_submission_records_every_segment_at_once() {
                    let Some((_k, s)) = $make(MessageStoreOptions::default()).await else {
                        return;
                    };
                    contract::messages_submission_at_once(&*s).await;
                }

                $(#[$attr])*
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn stale_accepted_messages_are_claimed_exactly_once() {
                    let Some((_k, s)) = $make(MessageStoreOptions::default()).await else {
                        return;
                    };
                    contract::messages_claim_exactly_once(s).await;
                }

                $(#[$attr])*
                #[tokio::test]
                async fn scheduled_messages_are_held_until_due() {
                    let Some((_k, s)) = $make(MessageStoreOptions::default()).await else {
                        return;
                    };
                    contract::messages_held_until_due(&*s).await;
                }

                $(#[$attr])*
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn messages_expire_after_their_ttl() {
                    let opts = MessageStoreOptions::default().ttl(SHORT_TTL);
                    let Some((_k, s)) = $make(opts).await else {
                        return;
                    };
                    contract::messages_expire_after_ttl(&*s, SHORT_TTL).await;
                }
            }
        };
    }

    type Made = Option<(Box<dyn std::any::Any>, Arc<dyn MessageStore>)>;
    async fn some_embedded(o: MessageStoreOptions) -> Made {
        Some(embedded(o).await)
    }
    async fn some_redis(o: MessageStoreOptions) -> Made {
        Some(redis(o).await)
    }

    contract_for!(embedded_store, some_embedded);
    contract_for!(redis_store, some_redis);
    contract_for!(
        aerospike_store,
        aerospike,
        #[ignore = "needs an Aerospike server: AEROSPIKE_HOSTS=host:3000 cargo test -p smsgw-store --test contract aerospike -- --ignored"]
    );

    #[tokio::test]
    async fn embedded_messages_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("messages.redb");
        let m = contract::message(2);
        let sid = contract::unique("sid");
        {
            let s = EmbeddedMessageStore::open(&path, MessageStoreOptions::default()).unwrap();
            s.create(&m).await.unwrap();
            s.record_submit(&contract::accepted(&m, 0, "l1", &sid))
                .await
                .unwrap();
            // Parked before the restart, applied after it.
            s.apply_receipt(&contract::receipt(
                "l1",
                "early",
                smsgw_core::messages::ReceiptState::Delivered,
            ))
            .await
            .unwrap();
        }
        let s = EmbeddedMessageStore::open(&path, MessageStoreOptions::default()).unwrap();
        let back = s.get(&m.message_id).await.unwrap().unwrap();
        assert_eq!(
            back.segments[0].smsc_message_id.as_deref(),
            Some(sid.as_str())
        );
        assert_eq!(
            s.by_transaction(&m.app_id, &m.transaction_id)
                .await
                .unwrap()
                .unwrap()
                .message_id,
            m.message_id
        );
        let r = s
            .apply_receipt(&contract::receipt(
                "l1",
                &sid,
                smsgw_core::messages::ReceiptState::Delivered,
            ))
            .await
            .unwrap();
        assert!(matches!(
            r,
            smsgw_core::messages::ReceiptOutcome::Applied(_)
        ));
        let r = s
            .record_submit(&contract::accepted(&m, 1, "l1", "early"))
            .await
            .unwrap();
        assert_eq!(r.status, smsgw_core::messages::MessageStatus::Delivered);
        assert_eq!(s.parked_len().await.unwrap(), 0);
    }
}

#[tokio::test]
async fn embedded_outbox_claims_and_acks() {
    let dir = tempfile::tempdir().unwrap();
    let o =
        smsgw_store::outbox::EmbeddedOutbox::open(&dir.path().join("outbox.redb"), DAY).unwrap();
    contract::outbox_claim_and_ack(&o).await;
    assert_eq!(o.pending().unwrap(), 0);
}

#[tokio::test]
async fn embedded_outbox_hands_out_unacknowledged_events_again_after_a_reopen() {
    use smsgw_core::outbox::Outbox;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    {
        let o = smsgw_store::outbox::EmbeddedOutbox::open(&path, DAY).unwrap();
        o.append(&[
            contract::event("a", 1),
            contract::event("a", 2),
            contract::event("b", 1),
        ])
        .await
        .unwrap();
        let got = o.claim("p", 10, Duration::from_secs(1)).await.unwrap();
        assert_eq!(got.len(), 3);
        o.ack(&[got[0].position.clone()]).await.unwrap();
    }
    let o = smsgw_store::outbox::EmbeddedOutbox::open(&path, DAY).unwrap();
    let got = o.claim("p", 10, Duration::from_secs(1)).await.unwrap();
    let ids: Vec<_> = got.iter().map(|c| c.event.event_id.as_str()).collect();
    assert_eq!(ids, ["ev_a_2", "ev_b_1"]);
    // New events come after them.
    o.append(&[contract::event("c", 1)]).await.unwrap();
    let more = o.claim("p", 10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(more[0].event.event_id, "ev_c_1");
}

const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);

#[tokio::test]
async fn embedded_outbox_pull() {
    let dir = tempfile::tempdir().unwrap();
    let o =
        smsgw_store::outbox::EmbeddedOutbox::open(&dir.path().join("outbox.redb"), DAY).unwrap();
    contract::outbox_pull(&o).await;
}

#[tokio::test]
async fn embedded_outbox_cursors_keep_growing_after_everything_was_delivered_and_reopened() {
    use smsgw_core::outbox::Outbox;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    let first = {
        let o = smsgw_store::outbox::EmbeddedOutbox::open(&path, DAY).unwrap();
        o.append(&[contract::event("a", 1)]).await.unwrap();
        let got = o
            .claim("p", 10, std::time::Duration::from_secs(1))
            .await
            .unwrap();
        o.ack(&[got[0].position.clone()]).await.unwrap();
        o.read("app0001", None, 10).await.unwrap()
    };
    let o = smsgw_store::outbox::EmbeddedOutbox::open(&path, DAY).unwrap();
    o.append(&[contract::event("a", 2)]).await.unwrap();
    let after = o.read("app0001", Some(&first[0].cursor), 10).await.unwrap();
    assert_eq!(after.len(), 1, "the new event comes after the old cursor");
    assert_eq!(after[0].body, r#"{"n":2}"#);
}

async fn redis_outbox(server: &RedisServer) -> smsgw_store::outbox::RedisOutbox {
    smsgw_store::outbox::RedisOutbox::connect(&RedisConfig::new(server.url()), DAY)
        .await
        .unwrap()
}

#[tokio::test]
async fn redis_outbox_claims_and_acks() {
    let r = RedisServer::start();
    contract::outbox_claim_and_ack(&redis_outbox(&r).await).await;
}

#[tokio::test]
async fn redis_outbox_pull() {
    let r = RedisServer::start();
    contract::outbox_pull(&redis_outbox(&r).await).await;
}

#[tokio::test]
async fn redis_outbox_events_a_pod_held_come_back_when_it_restarts_under_its_name() {
    use smsgw_core::outbox::Outbox;
    use std::time::Duration;
    let r = RedisServer::start();
    let before = redis_outbox(&r).await;
    before.heartbeat("pod-a").await.unwrap();
    let evs: Vec<_> = (1..=6).map(|n| contract::event("m", n)).collect();
    before.append(&evs).await.unwrap();
    let held = before
        .claim("pod-a", 100, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(held.len(), 6);
    before.ack(&[held[0].position.clone()]).await.unwrap();
    // Killed (no release) and started again at once as the same pod: its
    // leases are still its own.
    drop(before);
    let after = redis_outbox(&r).await;
    let got = after
        .claim("pod-a", 100, Duration::from_millis(200))
        .await
        .unwrap();
    let ids: Vec<_> = got.iter().map(|c| c.event.event_id.as_str()).collect();
    let want: Vec<_> = held[1..]
        .iter()
        .map(|c| c.event.event_id.as_str())
        .collect();
    assert_eq!(
        ids, want,
        "what the previous process read and did not acknowledge, in order"
    );
    // Searched once: what it now holds is not handed out again.
    assert!(
        after
            .claim("pod-a", 100, Duration::from_millis(200))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outbox_events_a_dead_pod_held_go_to_another_pod_in_order() {
    use smsgw_core::outbox::Outbox;
    use std::time::Duration;
    let r = RedisServer::start();
    let lease = Duration::from_secs(2);
    let a = redis_outbox(&r).await.with_lease(lease);
    let b = redis_outbox(&r).await.with_lease(lease);
    // Pod a takes every partition (it is alone), then b joins: b gets
    // none while a lives.
    a.heartbeat("pod-a").await.unwrap();
    let evs: Vec<_> = (1..=20)
        .map(|n| contract::event(&format!("m{}", n % 5), n))
        .collect();
    a.append(&evs).await.unwrap();
    let held = a.claim("pod-a", 100, Duration::from_secs(1)).await.unwrap();
    assert_eq!(held.len(), 20);
    assert!(
        b.claim("pod-b", 100, Duration::from_millis(200))
            .await
            .unwrap()
            .is_empty()
    );
    a.ack(&[held[0].position.clone()]).await.unwrap();
    // a dies (no more heartbeats): after its lease b takes the partitions
    // and the 19 events a read but never acknowledged, each key in order.
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while got.len() < 19 && std::time::Instant::now() < deadline {
        got.extend(
            b.claim("pod-b", 100, Duration::from_millis(200))
                .await
                .unwrap(),
        );
    }
    let mut ids: Vec<_> = got.iter().map(|c| c.event.event_id.clone()).collect();
    let want: Vec<_> = held[1..].iter().map(|c| c.event.event_id.clone()).collect();
    for key in 0..5 {
        let k = format!("ev_m{key}_");
        let of = |v: &Vec<String>| {
            v.iter()
                .filter(|i| i.starts_with(&k))
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(of(&ids), of(&want), "order of key m{key}");
    }
    ids.sort();
    let mut want = want;
    want.sort();
    assert_eq!(ids, want);
    // Acknowledged by b, they are gone for good.
    b.ack(&got.iter().map(|c| c.position.clone()).collect::<Vec<_>>())
        .await
        .unwrap();
    let c = redis_outbox(&r).await.with_lease(lease);
    tokio::time::sleep(lease + Duration::from_millis(500)).await;
    assert!(
        c.claim("pod-c", 100, Duration::from_millis(300))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn embedded_quotas_count_refund_and_top_up() {
    let (_d, s) = embedded();
    contract::quotas_count_refund_and_top_up(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_quotas_let_exactly_the_quota_through_concurrent_charges() {
    let (_d, s) = embedded();
    contract::quotas_concurrent_charges(Arc::new(s)).await;
}

#[tokio::test]
async fn embedded_balance_should_survive_a_reopen() {
    use smsgw_core::quotas::QuotaLedger;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.redb");
    {
        let s = EmbeddedUserStore::open(&path).unwrap();
        s.top_up("app-r", 7, None).await.unwrap();
    }
    let s = EmbeddedUserStore::open(&path).unwrap();
    let t = s.top_up("app-r", 1, None).await.unwrap();
    assert_eq!(t.balance, 8);
}

#[tokio::test]
async fn redis_quotas_count_refund_and_top_up() {
    let (_r, s) = redis().await;
    contract::quotas_count_refund_and_top_up(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_quotas_let_exactly_the_quota_through_concurrent_charges() {
    let (_r, s) = redis().await;
    contract::quotas_concurrent_charges(Arc::new(s)).await;
}
