//! Bind-slot Leases against a mocked API server (tower-test): one pod's
//! [`SlotLeases`] requests and answers, and the [`SlotKeeper`] loop gating
//! a fake set of links under paused time.

use http::{Method, StatusCode};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::Api;
use smsgw_leases::testing::{Handle, expect, lease, mock_client, no_more_requests, not_found};
use smsgw_leases::{Claim, LeaseTiming, SlotGate, SlotId, SlotKeeper, SlotLeases};
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

/// Slot 0's Lease as the mocked API server answers proxy-a's GET of it.
#[derive(Clone, Copy)]
enum Stored {
    /// 404: no Lease yet.
    Absent,
    /// Held by a pod (`""`: by none), renewed that many seconds before
    /// the answer.
    HeldBy(&'static str, i64),
    /// 500: the API server is in trouble.
    Unavailable,
}

/// The write of slot 0's Lease proxy-a is expected to make next, and the
/// API server's answer.
#[derive(Clone, Copy)]
enum Write {
    /// POST of a new Lease, created.
    Create,
    /// PUT taking the Lease over, accepted.
    TakeOver,
    /// PUT emptying the holder, accepted.
    Release,
    /// PUT answered 409: another pod wrote first.
    LoseRace,
}

/// Expects the GET of slot 0's Lease and answers it with `stored`.
async fn read_slot0(handle: &mut Handle, stored: Stored) {
    let (status, answer) = match stored {
        Stored::Absent => (StatusCode::NOT_FOUND, not_found()),
        Stored::HeldBy(pod, secs) => (StatusCode::OK, lease("smsgw-sim-slot-0", pod, ago(secs))),
        Stored::Unavailable => (StatusCode::INTERNAL_SERVER_ERROR, server_error()),
    };
    expect(handle, Method::GET, SLOT0, status, answer).await;
}

/// Expects `write` of slot 0's Lease and answers it; returns the body
/// written.
async fn write_slot0(handle: &mut Handle, write: Write) -> serde_json::Value {
    let written = |holder| lease("smsgw-sim-slot-0", holder, Timestamp::now());
    let (method, path, status, answer) = match write {
        Write::Create => (
            Method::POST,
            LEASES,
            StatusCode::CREATED,
            written("proxy-a"),
        ),
        Write::TakeOver => (Method::PUT, SLOT0, StatusCode::OK, written("proxy-a")),
        Write::Release => (Method::PUT, SLOT0, StatusCode::OK, written("")),
        Write::LoseRace => (Method::PUT, SLOT0, StatusCode::CONFLICT, conflict()),
    };
    expect(handle, method, path, status, answer).await
}

/// proxy-a's `sync` of slot 0 (`wanted` or not) against a mocked API
/// server that answers the GET with `stored`, then expects `write`, or no
/// further request when `None`. Returns the claim and the body written
/// (`Null` without a write).
async fn sync_slot0(
    wanted: bool,
    stored: Stored,
    write: Option<Write>,
) -> (Claim, serde_json::Value) {
    let (client, mut handle) = mock_client();
    let server = tokio::spawn(async move {
        read_slot0(&mut handle, stored).await;
        match write {
            Some(write) => write_slot0(&mut handle, write).await,
            None => {
                no_more_requests(&mut handle, "no write expected").await;
                serde_json::Value::Null
            }
        }
    });
    let claim = leases(client, "proxy-a")
        .sync(&slot0(), wanted)
        .await
        .unwrap();
    (claim, server.await.unwrap())
}

#[tokio::test]
async fn a_pod_acquires_a_free_slot_by_creating_its_lease() {
    let (claim, sent) = sync_slot0(true, Stored::Absent, Some(Write::Create)).await;
    assert_eq!(claim, Claim::Held);
    assert_eq!(sent["metadata"]["name"], "smsgw-sim-slot-0");
    assert_eq!(sent["metadata"]["labels"]["smsgw.io/link"], "sim");
    assert_eq!(sent["spec"]["holderIdentity"], "proxy-a");
    assert_eq!(sent["spec"]["leaseDurationSeconds"], 15);
}

#[tokio::test]
async fn a_pod_cannot_take_a_slot_a_live_other_pod_holds() {
    // No write to a live pod's Lease.
    let (claim, _) = sync_slot0(true, Stored::HeldBy("proxy-b", 3), None).await;
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
}

#[tokio::test]
async fn a_pod_takes_over_an_expired_slot_with_the_resource_version_it_read() {
    let (claim, sent) =
        sync_slot0(true, Stored::HeldBy("proxy-b", 60), Some(Write::TakeOver)).await;
    assert_eq!(claim, Claim::Held);
    assert_eq!(sent["spec"]["holderIdentity"], "proxy-a");
    assert_eq!(sent["metadata"]["resourceVersion"], "7");
    assert_eq!(sent["spec"]["leaseTransitions"], 1);
}

#[tokio::test]
async fn of_two_pods_racing_for_an_expired_slot_the_one_answered_409_stays_away() {
    // proxy-c wrote first: the resourceVersion no longer matches.
    let (claim, _) = sync_slot0(true, Stored::HeldBy("proxy-b", 60), Some(Write::LoseRace)).await;
    assert!(matches!(claim, Claim::Lost { .. }), "{claim:?}");
}

#[tokio::test]
async fn a_holder_releases_a_slot_it_no_longer_wants() {
    let (claim, sent) = sync_slot0(false, Stored::HeldBy("proxy-a", 2), Some(Write::Release)).await;
    assert_eq!(claim, Claim::Free);
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

/// proxy-a's [`SlotKeeper`] of slot 0 running against a mocked API
/// server, gating fake links.
struct Keeper {
    handle: Handle,
    gate: Arc<FakeLinks>,
    /// The operator's assignment (slot 0 at first).
    wanted: watch::Sender<BTreeSet<SlotId>>,
    cancel: CancellationToken,
    run: tokio::task::JoinHandle<()>,
}

fn start_keeper() -> Keeper {
    let (client, handle) = mock_client();
    let gate = Arc::new(FakeLinks::default());
    let (wanted, wanted_rx) = watch::channel(BTreeSet::from([slot0()]));
    let keeper = SlotKeeper::new(leases(client, "proxy-a"), gate.clone(), wanted_rx);
    let cancel = CancellationToken::new();
    let run = tokio::spawn(keeper.run(cancel.clone()));
    Keeper {
        handle,
        gate,
        wanted,
        cancel,
        run,
    }
}

#[tokio::test(start_paused = true)]
async fn a_pod_that_cannot_renew_stops_binding_the_slot_before_the_lease_expires() {
    let start = Instant::now();
    let Keeper {
        mut handle,
        gate,
        wanted: _wanted,
        cancel,
        run,
    } = start_keeper();
    // Acquired at once; every renewal after fails (API server in trouble).
    read_slot0(&mut handle, Stored::Absent).await;
    write_slot0(&mut handle, Write::Create).await;
    let failing = tokio::spawn(async move {
        loop {
            read_slot0(&mut handle, Stored::Unavailable).await;
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
    let mut k = start_keeper();
    // proxy-b died 13 s ago: its Lease has 2 s left.
    read_slot0(&mut k.handle, Stored::HeldBy("proxy-b", 13)).await;
    let first = Instant::now();
    assert!(!k.gate.is_open("sim", 0));
    // Paused time jumps to the retry; the Lease has expired by now.
    read_slot0(&mut k.handle, Stored::HeldBy("proxy-b", 60)).await;
    let waited = first.elapsed();
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(3),
        "retried after {waited:?}, not the 5 s period"
    );
    let sent = write_slot0(&mut k.handle, Write::TakeOver).await;
    assert_eq!(sent["spec"]["holderIdentity"], "proxy-a");
    until("slot opened", || k.gate.is_open("sim", 0)).await;
    k.cancel.cancel();
    // Shutdown: the slot closes, then its Lease is released.
    read_slot0(&mut k.handle, Stored::HeldBy("proxy-a", 0)).await;
    let sent = write_slot0(&mut k.handle, Write::Release).await;
    assert!(sent["spec"]["holderIdentity"].is_null());
    k.run.await.unwrap();
    assert!(!k.gate.is_open("sim", 0));
}

#[tokio::test(start_paused = true)]
async fn a_slot_assigned_elsewhere_is_closed_and_released_once_down() {
    let mut k = start_keeper();
    read_slot0(&mut k.handle, Stored::Absent).await;
    write_slot0(&mut k.handle, Write::Create).await;
    until("slot opened", || k.gate.is_open("sim", 0)).await;
    // The operator moves slot 0 to another pod.
    k.wanted.send_replace(BTreeSet::new());
    read_slot0(&mut k.handle, Stored::HeldBy("proxy-a", 0)).await;
    let sent = write_slot0(&mut k.handle, Write::Release).await;
    assert!(sent["spec"]["holderIdentity"].is_null());
    assert!(!k.gate.is_open("sim", 0), "closed before the release");
    k.cancel.cancel();
    k.run.await.unwrap();
    no_more_requests(&mut k.handle, "nothing after the release").await;
}
