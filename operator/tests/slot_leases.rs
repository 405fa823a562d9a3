//! Bind-slot Leases against a mocked API server (tower-test): one pod's
//! [`SlotLeases`] requests and answers, and the [`SlotKeeper`] loop gating
//! a fake set of links under paused time.

mod common;

use common::{Handle, expect, lease, mock_client, not_found};
use http::{Method, StatusCode};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::Api;
use smsgw_operator::slot_lease::{Claim, LeaseTiming, SlotGate, SlotKeeper, SlotLeases};
use smsgw_operator::slots::SlotId;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/smsgw/leases";
const SLOT0: &str = "/apis/coordination.k8s.io/v1/namespaces/smsgw/leases/smsgw-sim-slot-0";

fn leases(client: kube::Client, pod: &str) -> SlotLeases {
    SlotLeases::new(
        Api::namespaced(client, "smsgw"),
        pod,
        LeaseTiming::new(Duration::from_secs(15)),
    )
}

fn slot0() -> SlotId {
    SlotId::new("sim", 0)
}

fn ago(secs: i64) -> Timestamp {
    Timestamp::now() - SignedDuration::from_secs(secs)
}

fn conflict() -> serde_json::Value {
    serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409, "message": "the object has been modified"})
}

fn server_error() -> serde_json::Value {
    serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "InternalError", "code": 500, "message": "etcd timeout"})
}

async fn no_more_requests(handle: &mut Handle) -> bool {
    // A timeout, or the client gone.
    match tokio::time::timeout(Duration::from_millis(300), handle.next_request()).await {
        Err(_) | Ok(None) => true,
        Ok(Some((req, _))) => panic!("unexpected request: {} {}", req.method(), req.uri()),
    }
}

#[tokio::test]
async fn a_pod_acquires_a_free_slot_by_creating_its_lease() {
    let (client, mut handle) = mock_client();
    let server = tokio::spawn(async move {
        expect(
            &mut handle,
            Method::GET,
            SLOT0,
            StatusCode::NOT_FOUND,
            not_found(),
        )
        .await;
        expect(
            &mut handle,
            Method::POST,
            LEASES,
            StatusCode::CREATED,
            lease("smsgw-sim-slot-0", "proxy-a", Timestamp::now()),
        )
        .await
    });
    let claim = leases(client, "proxy-a")
        .sync(&slot0(), true)
        .await
        .unwrap();
    assert_eq!(claim, Claim::Held);
    let sent = server.await.unwrap();
    assert_eq!(sent["metadata"]["name"], "smsgw-sim-slot-0");
    assert_eq!(sent["metadata"]["labels"]["smsgw.io/link"], "sim");
    assert_eq!(sent["spec"]["holderIdentity"], "proxy-a");
    assert_eq!(sent["spec"]["leaseDurationSeconds"], 15);
}

#[tokio::test]
async fn a_pod_cannot_take_a_slot_a_live_other_pod_holds() {
    let (client, mut handle) = mock_client();
    let server = tokio::spawn(async move {
        expect(
            &mut handle,
            Method::GET,
            SLOT0,
            StatusCode::OK,
            lease("smsgw-sim-slot-0", "proxy-b", ago(3)),
        )
        .await;
        no_more_requests(&mut handle).await
    });
    let claim = leases(client, "proxy-a")
        .sync(&slot0(), true)
        .await
        .unwrap();
    match claim {
        Claim::Lost { holder, expires_in } => {
            assert_eq!(holder.as_deref(), Some("proxy-b"));
            // 15 s from a renewal 3 s before the answer (the clock is read
            // before the request).
            let left = expires_in.unwrap();
            assert!(left > Duration::from_secs(11) && left <= Duration::from_millis(12_100));
        }
        other => panic!("expected Lost, got {other:?}"),
    }
    assert!(server.await.unwrap(), "no write to a live pod's Lease");
}

#[tokio::test]
async fn a_pod_takes_over_an_expired_slot_with_the_resource_version_it_read() {
    let (client, mut handle) = mock_client();
    let server = tokio::spawn(async move {
        expect(
            &mut handle,
            Method::GET,
            SLOT0,
            StatusCode::OK,
            lease("smsgw-sim-slot-0", "proxy-b", ago(60)),
        )
        .await;
        expect(
            &mut handle,
            Method::PUT,
            SLOT0,
            StatusCode::OK,
            lease("smsgw-sim-slot-0", "proxy-a", Timestamp::now()),
        )
        .await
    });
    let claim = leases(client, "proxy-a")
        .sync(&slot0(), true)
        .await
        .unwrap();
    assert_eq!(claim, Claim::Held);
    let sent = server.await.unwrap();
    assert_eq!(sent["spec"]["holderIdentity"], "proxy-a");
    assert_eq!(sent["metadata"]["resourceVersion"], "7");
    assert_eq!(sent["spec"]["leaseTransitions"], 1);
}

#[tokio::test]
async fn of_two_pods_racing_for_an_expired_slot_the_one_answered_409_stays_away() {
    let (client, mut handle) = mock_client();
    let server = tokio::spawn(async move {
        expect(
            &mut handle,
            Method::GET,
            SLOT0,
            StatusCode::OK,
            lease("smsgw-sim-slot-0", "proxy-b", ago(60)),
        )
        .await;
        // proxy-c wrote first: the resourceVersion no longer matches.
        expect(
            &mut handle,
            Method::PUT,
            SLOT0,
            StatusCode::CONFLICT,
            conflict(),
        )
        .await;
    });
    let claim = leases(client, "proxy-a")
        .sync(&slot0(), true)
        .await
        .unwrap();
    assert!(matches!(claim, Claim::Lost { .. }), "{claim:?}");
    server.await.unwrap();
}

#[tokio::test]
async fn a_holder_releases_a_slot_it_no_longer_wants() {
    let (client, mut handle) = mock_client();
    let server = tokio::spawn(async move {
        expect(
            &mut handle,
            Method::GET,
            SLOT0,
            StatusCode::OK,
            lease("smsgw-sim-slot-0", "proxy-a", ago(2)),
        )
        .await;
        expect(
            &mut handle,
            Method::PUT,
            SLOT0,
            StatusCode::OK,
            lease("smsgw-sim-slot-0", "", Timestamp::now()),
        )
        .await
    });
    let claim = leases(client, "proxy-a")
        .sync(&slot0(), false)
        .await
        .unwrap();
    assert_eq!(claim, Claim::Free);
    let sent = server.await.unwrap();
    assert!(sent["spec"]["holderIdentity"].is_null(), "{sent}");
    assert_eq!(sent["metadata"]["resourceVersion"], "7");
}

/// Links of a pod as the keeper sees them: which slots are open, and when
/// each change happened. A closed slot is down at once.
#[derive(Default)]
struct FakeLinks {
    open: Mutex<BTreeMap<String, BTreeSet<u32>>>,
    changes: Mutex<Vec<(Instant, String, BTreeSet<u32>)>>,
}

impl SlotGate for FakeLinks {
    fn set_open_slots(&self, link: &str, slots: &BTreeSet<u32>) {
        self.open
            .lock()
            .unwrap()
            .insert(link.to_owned(), slots.clone());
        self.changes
            .lock()
            .unwrap()
            .push((Instant::now(), link.to_owned(), slots.clone()));
    }

    fn slot_is_down(&self, link: &str, slot: u32) -> bool {
        !self
            .open
            .lock()
            .unwrap()
            .get(link)
            .is_some_and(|s| s.contains(&slot))
    }
}

impl FakeLinks {
    fn is_open(&self, link: &str, slot: u32) -> bool {
        !self.slot_is_down(link, slot)
    }
}

async fn until(what: &str, f: impl Fn() -> bool) {
    for _ in 0..10_000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out: {what}");
}

#[tokio::test(start_paused = true)]
async fn a_pod_that_cannot_renew_stops_binding_the_slot_before_the_lease_expires() {
    let (client, mut handle) = mock_client();
    let gate = Arc::new(FakeLinks::default());
    let (_wanted_tx, wanted) = watch::channel(BTreeSet::from([slot0()]));
    let keeper = SlotKeeper::new(leases(client, "proxy-a"), gate.clone(), wanted);
    let cancel = CancellationToken::new();
    let start = Instant::now();
    let run = tokio::spawn(keeper.run(cancel.clone()));
    // Acquired at once; every renewal after fails (API server in trouble).
    expect(
        &mut handle,
        Method::GET,
        SLOT0,
        StatusCode::NOT_FOUND,
        not_found(),
    )
    .await;
    expect(
        &mut handle,
        Method::POST,
        LEASES,
        StatusCode::CREATED,
        lease("smsgw-sim-slot-0", "proxy-a", Timestamp::now()),
    )
    .await;
    let failing = tokio::spawn(async move {
        loop {
            expect(
                &mut handle,
                Method::GET,
                SLOT0,
                StatusCode::INTERNAL_SERVER_ERROR,
                server_error(),
            )
            .await;
        }
    });
    until("slot opened", || gate.is_open("sim", 0)).await;
    until("slot closed", || !gate.is_open("sim", 0)).await;
    let closed = gate.changes.lock().unwrap().last().unwrap().0 - start;
    // Renewals are tried every 5 s; the slot closes 10 s after the last
    // successful one, 5 s before the Lease would expire for the others.
    assert!(
        closed >= Duration::from_secs(9) && closed <= Duration::from_secs(10),
        "closed after {closed:?}"
    );
    assert!(closed < Duration::from_secs(15));
    failing.abort();
    cancel.cancel();
    let _ = run.await;
}

#[tokio::test(start_paused = true)]
async fn a_dead_pods_slot_is_taken_when_its_lease_expires_not_a_period_later() {
    let (client, mut handle) = mock_client();
    let gate = Arc::new(FakeLinks::default());
    let (_wanted_tx, wanted) = watch::channel(BTreeSet::from([slot0()]));
    let keeper = SlotKeeper::new(leases(client, "proxy-a"), gate.clone(), wanted);
    let cancel = CancellationToken::new();
    let run = tokio::spawn(keeper.run(cancel.clone()));
    // proxy-b died 13 s ago: its Lease has 2 s left.
    expect(
        &mut handle,
        Method::GET,
        SLOT0,
        StatusCode::OK,
        lease("smsgw-sim-slot-0", "proxy-b", ago(13)),
    )
    .await;
    let first = Instant::now();
    assert!(!gate.is_open("sim", 0));
    // Paused time jumps to the retry; the Lease has expired by now.
    expect(
        &mut handle,
        Method::GET,
        SLOT0,
        StatusCode::OK,
        lease("smsgw-sim-slot-0", "proxy-b", ago(60)),
    )
    .await;
    let waited = first.elapsed();
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(3),
        "retried after {waited:?}, not the 5 s period"
    );
    let sent = expect(
        &mut handle,
        Method::PUT,
        SLOT0,
        StatusCode::OK,
        lease("smsgw-sim-slot-0", "proxy-a", Timestamp::now()),
    )
    .await;
    assert_eq!(sent["spec"]["holderIdentity"], "proxy-a");
    until("slot opened", || gate.is_open("sim", 0)).await;
    cancel.cancel();
    // Shutdown: the slot closes, then its Lease is released.
    expect(
        &mut handle,
        Method::GET,
        SLOT0,
        StatusCode::OK,
        lease("smsgw-sim-slot-0", "proxy-a", Timestamp::now()),
    )
    .await;
    let sent = expect(
        &mut handle,
        Method::PUT,
        SLOT0,
        StatusCode::OK,
        lease("smsgw-sim-slot-0", "", Timestamp::now()),
    )
    .await;
    assert!(sent["spec"]["holderIdentity"].is_null());
    run.await.unwrap();
    assert!(!gate.is_open("sim", 0));
}

#[tokio::test(start_paused = true)]
async fn a_slot_assigned_elsewhere_is_closed_and_released_once_down() {
    let (client, mut handle) = mock_client();
    let gate = Arc::new(FakeLinks::default());
    let (wanted_tx, wanted) = watch::channel(BTreeSet::from([slot0()]));
    let keeper = SlotKeeper::new(leases(client, "proxy-a"), gate.clone(), wanted);
    let cancel = CancellationToken::new();
    let run = tokio::spawn(keeper.run(cancel.clone()));
    expect(
        &mut handle,
        Method::GET,
        SLOT0,
        StatusCode::NOT_FOUND,
        not_found(),
    )
    .await;
    expect(
        &mut handle,
        Method::POST,
        LEASES,
        StatusCode::CREATED,
        lease("smsgw-sim-slot-0", "proxy-a", Timestamp::now()),
    )
    .await;
    until("slot opened", || gate.is_open("sim", 0)).await;
    // The operator moves slot 0 to another pod.
    wanted_tx.send_replace(BTreeSet::new());
    expect(
        &mut handle,
        Method::GET,
        SLOT0,
        StatusCode::OK,
        lease("smsgw-sim-slot-0", "proxy-a", Timestamp::now()),
    )
    .await;
    let sent = expect(
        &mut handle,
        Method::PUT,
        SLOT0,
        StatusCode::OK,
        lease("smsgw-sim-slot-0", "", Timestamp::now()),
    )
    .await;
    assert!(sent["spec"]["holderIdentity"].is_null());
    assert!(!gate.is_open("sim", 0), "closed before the release");
    cancel.cancel();
    run.await.unwrap();
    assert!(no_more_requests(&mut handle).await);
}
