//! The life of a message through [`Messaging`] without a socket: the real
//! embedded message and user stores (in a temporary directory), scripted
//! links, the real in-process rate limiter and contact-policy engine, and
//! paused time where time matters.

mod support;

use arc_swap::ArcSwap;
use smsgw_core::limits::{RateKey, RateLimit, RateLimiter};
use smsgw_core::links::{SegmentResult, Submission, SubmitError};
use smsgw_core::messages::{
    MessageStatus, MessageStore, ReceiptOutcome, ReceiptState, ReceiptUpdate, SubmitStatus,
};
use smsgw_core::users::{UserRecord, UserStore};
use smsgw_messaging::lifecycle::Lifecycle;
use smsgw_messaging::trace::RequestTrace;
use smsgw_messaging::{
    AppEvent, Messaging, MessagingError, MobileOriginated, SendRequest, Sender, SentAt, Viewer,
};
use smsgw_store::EmbeddedUserStore;
use smsgw_store::messages::EmbeddedMessageStore;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{ScriptedLinks, Step};
use tokio::sync::oneshot;

const CONFIG: &str = r#"
apiVersion: smsgw.io/v1alpha1
kind: SmppLink
metadata: {name: link-a}
spec:
  host: 127.0.0.1
  port: 2775
  systemId: smsgw
  password: secret
---
apiVersion: smsgw.io/v1alpha1
kind: SmppLink
metadata: {name: link-h}
spec:
  host: 127.0.0.1
  port: 2776
  systemId: smsgw
  password: secret
  unknownPolicy: hold
---
apiVersion: smsgw.io/v1alpha1
kind: SmppLink
metadata: {name: link-s}
spec:
  host: 127.0.0.1
  port: 2777
  systemId: smsgw
  password: secret
  scheduleAtSmsc: true
---
apiVersion: smsgw.io/v1alpha1
kind: EsmePool
metadata: {name: pool-a}
spec:
  members:
    - link: link-a
      weight: 1
---
apiVersion: smsgw.io/v1alpha1
kind: ContactPolicy
metadata: {name: twice-a-day}
spec:
  frequency: {daily: 2, weekly: 10, timeZone: UTC}
---
apiVersion: smsgw.io/v1alpha1
kind: User
metadata: {name: shop}
spec:
  email: shop@example.com
  appName: shop
  password: 'managed pw 12'
  sourceAddresses: ["+4915550001"]
"#;

const USER: &str = "user-1";
const APP: &str = "app-1";
const SENDER: Sender<'static> = Sender {
    user_id: USER,
    app_id: APP,
};

fn user() -> UserRecord {
    UserRecord {
        user_id: USER.into(),
        email: "shop@example.com".into(),
        app_id: APP.into(),
        app_name: "shop".into(),
        password_hash: String::new(),
        secret_hash: String::new(),
        admin: false,
        managed_by: Some("shop".into()),
        created_at: 0,
        allowed_targets: Vec::new(),
        allowed_sender_ids: Vec::new(),
        rate: None,
        source_addresses: Vec::new(),
        webhook_url: None,
        webhook_secret: None,
        webhook_allow_private: false,
        webhook_options: Default::default(),
        quotas: Default::default(),
        token_generation: 0,
    }
}

fn accepted(ids: &[&str]) -> Result<Submission, SubmitError> {
    Ok(Submission {
        link: "link-a".into(),
        results: ids
            .iter()
            .map(|id| SegmentResult::Accepted {
                smsc_message_id: (*id).into(),
            })
            .collect(),
        resubmitted: Vec::new(),
    })
}

fn unavailable() -> Result<Submission, SubmitError> {
    Err(SubmitError::Unavailable("no bind of link-a is up".into()))
}

/// A service, its stores and its scripted links.
struct Fixture {
    messaging: Arc<Messaging>,
    store: Arc<EmbeddedMessageStore>,
    links: Arc<ScriptedLinks>,
    limiter: Arc<smsgw_rate::InProcessLimiter>,
    /// Every lifecycle event the observer saw, as (kind, reason).
    journal: Arc<Mutex<Vec<(&'static str, String)>>>,
    /// The notification outbox.
    outbox: Arc<smsgw_store::outbox::EmbeddedOutbox>,
    /// Holds the stores' files.
    _dir: tempfile::TempDir,
}

async fn fixture(links: ScriptedLinks) -> Fixture {
    fixture_with(links, smsgw_messaging::DEFAULT_SUBMIT_RETRY).await
}

/// A fixture whose background submissions retry for `retry`.
async fn fixture_with(links: ScriptedLinks, retry: Duration) -> Fixture {
    fixture_bounded(
        links,
        retry,
        smsgw_messaging::DEFAULT_BACKGROUND_SUBMISSIONS,
    )
    .await
}

/// A fixture with at most `background` background submissions at once.
async fn fixture_bounded(links: ScriptedLinks, retry: Duration, background: usize) -> Fixture {
    fixture_over(links, retry, background, |s| s).await
}

/// A fixture whose messaging uses `wrap` of the embedded store.
async fn fixture_over(
    links: ScriptedLinks,
    retry: Duration,
    background: usize,
    wrap: impl FnOnce(Arc<EmbeddedMessageStore>) -> Arc<dyn MessageStore>,
) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        EmbeddedMessageStore::open(&dir.path().join("messages.redb"), Default::default()).unwrap(),
    );
    let users = EmbeddedUserStore::open(&dir.path().join("users.redb")).unwrap();
    users.create(&user()).await.unwrap();
    let snapshot = smsgw_crds::compile_manifests(CONFIG).expect("the test configuration compiles");
    let (policies, errors) = smsgw_contact::Policies::compile(&snapshot.policies);
    assert!(errors.is_empty(), "{errors:?}");
    let engine = smsgw_contact::InProcessEngine::new(
        Arc::new(ArcSwap::from_pointee(policies)),
        smsgw_contact::InProcessBlacklists::default(),
    );
    let links = Arc::new(links);
    let limiter = Arc::new(smsgw_rate::InProcessLimiter::new());
    let outbox = Arc::new(
        smsgw_store::outbox::EmbeddedOutbox::open(
            &dir.path().join("outbox.redb"),
            Duration::from_secs(86_400),
        )
        .unwrap(),
    );
    let messaging = Messaging::builder(
        wrap(store.clone()),
        Arc::new(users),
        Arc::new(ArcSwap::from_pointee(snapshot)),
    )
    .outbox(outbox.clone())
    .submit_retry(retry)
    .background_submissions(background)
    .links(links.clone())
    .limiter(limiter.clone())
    .policy(Arc::new(engine))
    .build();
    let journal: Arc<Mutex<Vec<(&'static str, String)>>> = Arc::default();
    let seen = journal.clone();
    assert!(messaging.set_observer(Arc::new(move |ev: &Lifecycle<'_>| {
        let entry = match ev {
            Lifecycle::Accepted { .. } => ("accepted", String::new()),
            Lifecycle::Refused { reason, .. } => ("refused", (*reason).to_owned()),
            Lifecycle::Submitted { .. } => ("submitted", String::new()),
            Lifecycle::Receipt { .. } => ("receipt", String::new()),
            _ => ("other", String::new()),
        };
        seen.lock().unwrap().push(entry);
    })));
    Fixture {
        messaging: Arc::new(messaging),
        store,
        links,
        limiter,
        journal,
        outbox,
        _dir: dir,
    }
}

fn request(tx: &str) -> SendRequest {
    SendRequest {
        transaction_id: tx.into(),
        esme: "link-a".into(),
        source: "ACME".into(),
        destination: "+4917012345".into(),
        message: Some("Hello".into()),
        ..SendRequest::default()
    }
}

fn trace() -> RequestTrace {
    RequestTrace::new("test")
}

fn receipt(smsc_id: &str, state: ReceiptState) -> ReceiptUpdate {
    ReceiptUpdate {
        link: "link-a".into(),
        smsc_message_id: smsc_id.into(),
        state,
        error_code: None,
        at_ms: smsgw_core::messages::unix_now_ms(),
    }
}

/// Sends `request(tx)` and waits for the SMSC's answers.
async fn send_waiting(f: &Fixture, tx: &str) -> smsgw_messaging::SendResponse {
    f.messaging
        .send(
            SENDER,
            SendRequest {
                wait_for_submit: true,
                ..request(tx)
            },
            &trace(),
        )
        .await
        .unwrap()
}

async fn status_of(f: &Fixture, message_id: &str) -> MessageStatus {
    f.store.get(message_id).await.unwrap().unwrap().status
}

#[tokio::test]
async fn a_repeated_transaction_id_answers_the_first_message_and_submits_once() {
    let f = fixture(ScriptedLinks::new(Vec::new(), accepted(&["s1"]))).await;
    let first = send_waiting(&f, "  tx-1 ").await;
    assert!(first.success && !first.duplicate);
    assert_eq!(first.transaction_id, "tx-1", "the key is trimmed");
    assert_eq!(first.status, MessageStatus::Pending);
    assert_eq!(first.link.as_deref(), Some("link-a"));
    let again = f
        .messaging
        .send(SENDER, request("tx-1"), &trace())
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.message_id, first.message_id);
    assert_eq!(again.status, MessageStatus::Pending);
    assert_eq!(again.segment_info[0].smsc_message_id.as_deref(), Some("s1"));
    assert_eq!(f.links.count(), 1, "a repeat is not submitted again");
    let view = f
        .messaging
        .find(Viewer::App(APP), None, Some("tx-1"))
        .await
        .unwrap();
    assert_eq!(view.message_id, first.message_id);
    assert!(matches!(
        f.messaging
            .find(Viewer::App("other-app"), Some(&first.message_id), None)
            .await,
        Err(MessagingError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_transaction_id_reused_for_another_message_is_a_conflict_and_sends_nothing() {
    let f = fixture(ScriptedLinks::new(Vec::new(), accepted(&["s1"]))).await;
    let first = f
        .messaging
        .send(
            SENDER,
            SendRequest {
                wait_for_submit: true,
                sent_at: Some(SentAt::Rfc3339("2026-12-07T08:30:00.250Z".into())),
                ..request("tx-r")
            },
            &trace(),
        )
        .await
        .unwrap();
    for (field, other) in [
        (
            "destination",
            SendRequest {
                destination: "+4917099999".into(),
                ..request("tx-r")
            },
        ),
        (
            "message",
            SendRequest {
                message: Some("Hello again".into()),
                ..request("tx-r")
            },
        ),
        (
            "source",
            SendRequest {
                source: "OTHER".into(),
                ..request("tx-r")
            },
        ),
    ] {
        let e = f
            .messaging
            .send(SENDER, other, &trace())
            .await
            .expect_err(field);
        assert_eq!(e.code(), "transaction_id_reused", "{field}");
        assert!(matches!(e, MessagingError::Conflict { .. }), "{field}");
        assert!(e.to_string().contains(field), "{field}: {e}");
    }
    // The same message again, as normalised (a '+' less, another sent_at,
    // waiting or not), is the idempotent repeat.
    let again = f
        .messaging
        .send(
            SENDER,
            SendRequest {
                destination: "4917012345".into(),
                sent_at: Some(SentAt::Unix {
                    seconds: 1,
                    nanos: 0,
                }),
                ..request("tx-r")
            },
            &trace(),
        )
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.message_id, first.message_id);
    assert_eq!(f.links.count(), 1, "nothing but the first was submitted");
    // The first message is unchanged, with the client's sent_at.
    let view = f
        .messaging
        .find(Viewer::App(APP), Some(&first.message_id), None)
        .await
        .unwrap();
    assert_eq!(
        (view.destination.as_str(), view.sent_at_ms),
        ("4917012345", Some(1_796_632_200_250))
    );
    // A bad sent_at is refused with its code before anything is stored.
    let e = f
        .messaging
        .send(
            SENDER,
            SendRequest {
                sent_at: Some(SentAt::Rfc3339("tomorrow".into())),
                ..request("tx-bad-sent-at")
            },
            &trace(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), "invalid_sent_at");
    assert!(
        f.store
            .by_transaction(APP, "tx-bad-sent-at")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(start_paused = true)]
async fn a_message_no_link_can_take_is_retried_for_the_window_then_left_accepted() {
    let f = fixture(ScriptedLinks::new(Vec::new(), unavailable())).await;
    let r = f
        .messaging
        .send(SENDER, request("tx-retry"), &trace())
        .await
        .unwrap();
    assert_eq!(r.status, MessageStatus::Accepted);
    // The background submission retries for the 10 s retry window, then
    // gives up; paused time runs through it at once.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let tries = f.links.count();
    assert!(tries > 5, "retried with backoff, {tries} tries");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(f.links.count(), tries, "no retry past the window");
    let rec = f.store.get(&r.message_id).await.unwrap().unwrap();
    assert_eq!(rec.status, MessageStatus::Accepted);
    assert_eq!(rec.segments[0].submit, SubmitStatus::Pending);
    // Nothing was sent: the creator gave its lease back, so a sweeper
    // takes the message at once and as fresh (not as possibly sent); it
    // finds no link either and gives it back again.
    // (The release is a store write on the store's own thread, which
    // paused time does not wait for: wait for it in real time.)
    let mut rec = rec;
    for _ in 0..300 {
        if rec.claimed_by.is_none() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        tokio::task::yield_now().await;
        rec = f.store.get(&r.message_id).await.unwrap().unwrap();
    }
    assert_eq!((rec.claimed_by.as_deref(), rec.claim_until_ms), (None, 0));
    assert_eq!(
        f.messaging
            .sweep("pod-b", Duration::ZERO, 10)
            .await
            .unwrap(),
        1
    );
    assert_eq!(f.links.count(), tries + 1);
    let rec = f.store.get(&r.message_id).await.unwrap().unwrap();
    assert_eq!(rec.status, MessageStatus::Accepted);
    assert_eq!(rec.claimed_by, None);
    assert!(!rec.possible_duplicate());
}

/// Links whose first submission never answers (a pod that wrote the
/// `submit_sm` and died before storing its answer), then answer
/// `fallback`. The returned sender must be kept alive meanwhile.
fn hung_then(fallback: Result<Submission, SubmitError>) -> (ScriptedLinks, oneshot::Sender<()>) {
    let (tx, rx) = oneshot::channel();
    let links = ScriptedLinks::new(vec![Step::After(rx, accepted(&["never"]))], fallback);
    (links, tx)
}

/// Sends to `esme` and lets the creator's 2 s lease lapse while its
/// submission hangs in the links (the crash window).
async fn send_into_the_crash_window(f: &Fixture, esme: &str) -> String {
    let r = f
        .messaging
        .send(
            SENDER,
            SendRequest {
                esme: esme.into(),
                ..request("tx-crash")
            },
            &trace(),
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while f.links.count() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the creator hands the message to the links");
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    r.message_id
}

#[tokio::test]
async fn a_message_whose_submitter_stopped_mid_submission_is_resubmitted_marked() {
    let (links, _hung) = hung_then(accepted(&["s2"]));
    let f = fixture_with(links, Duration::ZERO).await;
    let id = send_into_the_crash_window(&f, "link-a").await;
    // The lease lapsed with no outcome: the creator may have written the
    // submit_sm. Under the link's default `resubmit` it goes out again,
    // marked.
    assert_eq!(
        f.messaging
            .sweep("pod-b", Duration::ZERO, 10)
            .await
            .unwrap(),
        1
    );
    assert_eq!(f.links.count(), 2);
    let rec = f.store.get(&id).await.unwrap().unwrap();
    assert_eq!(rec.status, MessageStatus::Pending);
    assert_eq!(rec.segments[0].smsc_message_id.as_deref(), Some("s2"));
    assert!(rec.segments[0].resubmitted, "{rec:?}");
    assert!(rec.possible_duplicate());
}

#[tokio::test]
async fn a_message_whose_submitter_stopped_mid_submission_is_held_unknown_under_hold() {
    let (links, _hung) = hung_then(accepted(&["s2"]));
    let f = fixture_with(links, Duration::ZERO).await;
    let id = send_into_the_crash_window(&f, "link-h").await;
    assert_eq!(
        f.messaging
            .sweep("pod-b", Duration::ZERO, 10)
            .await
            .unwrap(),
        1
    );
    assert_eq!(f.links.count(), 1, "not sent again under `hold`");
    let rec = f.store.get(&id).await.unwrap().unwrap();
    assert_eq!(rec.status, MessageStatus::Unknown);
    assert!(
        matches!(&rec.segments[0].submit, SubmitStatus::Unknown { reason } if reason.contains("in doubt")),
        "{rec:?}"
    );
    assert!(!rec.possible_duplicate());
    assert_eq!(
        f.messaging
            .sweep("pod-c", Duration::ZERO, 10)
            .await
            .unwrap(),
        0,
        "an unknown message is not claimed again"
    );
}

#[tokio::test]
async fn a_message_left_accepted_is_submitted_once_by_the_sweeper() {
    // No retry: the creator tries once, and its lease lapses 2 s later.
    let f = fixture_with(
        ScriptedLinks::new(vec![Step::Answer(unavailable())], accepted(&["s9"])),
        Duration::ZERO,
    )
    .await;
    let mut events = f.messaging.subscribe();
    let r = f
        .messaging
        .send(SENDER, request("tx-sweep"), &trace())
        .await
        .unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let sweeper = tokio::spawn(f.messaging.clone().run_sweeper(
        "pod-b".into(),
        Duration::from_secs(1),
        cancel.clone(),
    ));
    // The sweeper claims it once the creator's lease lapses; the app hears
    // of the submission.
    let ev = tokio::time::timeout(Duration::from_secs(60), events.recv())
        .await
        .expect("the sweeper submits the message")
        .unwrap();
    let AppEvent::Status {
        message_id, status, ..
    } = ev
    else {
        panic!("{ev:?}")
    };
    assert_eq!(
        (message_id.as_str(), status),
        (r.message_id.as_str(), MessageStatus::Pending)
    );
    let rec = f.store.get(&r.message_id).await.unwrap().unwrap();
    assert_eq!(rec.claimed_by.as_deref(), Some("pod-b"));
    assert_eq!(rec.segments[0].smsc_message_id.as_deref(), Some("s9"));
    assert!(
        !rec.possible_duplicate(),
        "the creator sent nothing, so the sweeper's copy is the only one"
    );
    assert_eq!(f.links.count(), 2, "the creator's try and the sweeper's");
    cancel.cancel();
    sweeper.await.unwrap();
    assert_eq!(
        f.messaging
            .sweep("pod-c", Duration::ZERO, 10)
            .await
            .unwrap(),
        0,
        "a submitted message is not claimed again"
    );
    assert_eq!(f.links.count(), 2);
}

#[tokio::test]
async fn a_receipt_before_the_submit_response_is_applied_when_the_response_comes() {
    let (release, gate) = tokio::sync::oneshot::channel();
    let f = fixture(ScriptedLinks::new(
        vec![Step::After(gate, accepted(&["early"]))],
        unavailable(),
    ))
    .await;
    let sending = {
        let m = f.messaging.clone();
        tokio::spawn(async move {
            m.send(
                SENDER,
                SendRequest {
                    wait_for_submit: true,
                    ..request("tx-early")
                },
                &trace(),
            )
            .await
        })
    };
    f.links.submitted.notified().await;
    let out = f
        .messaging
        .on_receipt(receipt("early", ReceiptState::Delivered))
        .await
        .unwrap();
    assert_eq!(out, ReceiptOutcome::Parked);
    release.send(()).unwrap();
    let r = sending.await.unwrap().unwrap();
    assert_eq!(r.status, MessageStatus::Delivered);
    assert_eq!(status_of(&f, &r.message_id).await, MessageStatus::Delivered);
    assert_eq!(r.segment_info[0].receipt_state.as_deref(), Some("DELIVRD"));
}

/// The embedded store with the faults a test turns on: creations fail
/// while `failing_create` is set; the first `record_submits` waits for
/// `submit_gate` (telling `submit_entered`), a store slower than the
/// SMSC's receipt.
struct FaultyStore {
    inner: Arc<EmbeddedMessageStore>,
    failing_create: std::sync::atomic::AtomicBool,
    submit_gate: Mutex<Option<oneshot::Receiver<()>>>,
    submit_entered: Arc<tokio::sync::Notify>,
}

impl FaultyStore {
    /// `inner` with no fault on.
    fn over(inner: Arc<EmbeddedMessageStore>) -> Self {
        Self {
            inner,
            failing_create: false.into(),
            submit_gate: Mutex::new(None),
            submit_entered: Arc::default(),
        }
    }
}

#[async_trait::async_trait]
impl MessageStore for FaultyStore {
    async fn create(
        &self,
        rec: &smsgw_core::messages::MessageRecord,
    ) -> Result<smsgw_core::messages::CreateOutcome, smsgw_core::messages::MessageStoreError> {
        if self
            .failing_create
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(smsgw_core::messages::MessageStoreError::Backend(
                "disk full".into(),
            ));
        }
        self.inner.create(rec).await
    }
    async fn get(
        &self,
        id: &str,
    ) -> Result<Option<smsgw_core::messages::MessageRecord>, smsgw_core::messages::MessageStoreError>
    {
        self.inner.get(id).await
    }
    async fn by_transaction(
        &self,
        app_id: &str,
        tx: &str,
    ) -> Result<Option<smsgw_core::messages::MessageRecord>, smsgw_core::messages::MessageStoreError>
    {
        self.inner.by_transaction(app_id, tx).await
    }
    async fn record_submit(
        &self,
        s: &smsgw_core::messages::SubmitUpdate,
    ) -> Result<smsgw_core::messages::MessageRecord, smsgw_core::messages::MessageStoreError> {
        self.inner.record_submit(s).await
    }
    async fn apply_receipt(
        &self,
        r: &ReceiptUpdate,
    ) -> Result<ReceiptOutcome, smsgw_core::messages::MessageStoreError> {
        self.inner.apply_receipt(r).await
    }
    async fn record_submits(
        &self,
        u: &[smsgw_core::messages::SubmitUpdate],
    ) -> Result<smsgw_core::messages::StatusChange, smsgw_core::messages::MessageStoreError> {
        let gate = self.submit_gate.lock().unwrap().take();
        if let Some(gate) = gate {
            self.submit_entered.notify_one();
            let _ = gate.await;
        }
        self.inner.record_submits(u).await
    }
    async fn claim_stale_accepted(
        &self,
        req: &smsgw_core::messages::ClaimRequest,
    ) -> Result<Vec<smsgw_core::messages::Claimed>, smsgw_core::messages::MessageStoreError> {
        self.inner.claim_stale_accepted(req).await
    }
    async fn release_claim(
        &self,
        message_id: &str,
        owner: &str,
        until_ms: u64,
    ) -> Result<bool, smsgw_core::messages::MessageStoreError> {
        self.inner.release_claim(message_id, owner, until_ms).await
    }
}

/// The SMSC answered and sent its receipt while the pod was still writing
/// the answer down: the receipt waits for that write instead of being
/// parked, then applies, and the app's events stay in order.
#[tokio::test]
async fn a_receipt_while_the_submission_is_being_recorded_waits_for_it_and_is_applied() {
    use smsgw_core::outbox::Outbox;
    let (open, gate) = oneshot::channel();
    let entered = Arc::new(tokio::sync::Notify::new());
    let seen = entered.clone();
    let f = fixture_over(
        ScriptedLinks::new(Vec::new(), accepted(&["held-1"])),
        smsgw_messaging::DEFAULT_SUBMIT_RETRY,
        smsgw_messaging::DEFAULT_BACKGROUND_SUBMISSIONS,
        move |inner| {
            Arc::new(FaultyStore {
                submit_gate: Mutex::new(Some(gate)),
                submit_entered: seen,
                ..FaultyStore::over(inner)
            })
        },
    )
    .await;
    let sending = {
        let m = f.messaging.clone();
        tokio::spawn(async move {
            m.send(
                SENDER,
                SendRequest {
                    wait_for_submit: true,
                    ..request("tx-held")
                },
                &trace(),
            )
            .await
        })
    };
    entered.notified().await;
    let held = f
        .messaging
        .memory()
        .into_iter()
        .find(|m| m.structure == "recording_submits")
        .expect("the gauge is reported");
    assert_eq!(
        held.entries, 1,
        "the SMSC id is marked while it is recorded"
    );
    let receipt_task = {
        let m = f.messaging.clone();
        tokio::spawn(async move {
            m.on_receipt(receipt("held-1", ReceiptState::Delivered))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !receipt_task.is_finished(),
        "the receipt waits for the submission's record instead of parking"
    );
    open.send(()).unwrap();
    let r = sending.await.unwrap().unwrap();
    let out = receipt_task.await.unwrap().unwrap();
    match out {
        ReceiptOutcome::Applied(rec) => assert_eq!(rec.status, MessageStatus::Delivered),
        other => panic!("expected the receipt applied, got {other:?}"),
    }
    assert_eq!(status_of(&f, &r.message_id).await, MessageStatus::Delivered);
    let kinds: Vec<String> = f
        .outbox
        .claim("t", 10, Duration::from_millis(100))
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.event.kind)
        .collect();
    assert_eq!(kinds, ["pending", "delivered"], "events in order");
    let after = f
        .messaging
        .memory()
        .into_iter()
        .find(|m| m.structure == "recording_submits")
        .unwrap();
    assert_eq!(after.entries, 0, "nothing is left marked");
    // A receipt for an id no submission is recording does not wait.
    let other = tokio::time::timeout(
        Duration::from_secs(2),
        f.messaging
            .on_receipt(receipt("not-recorded", ReceiptState::Delivered)),
    )
    .await
    .expect("no wait")
    .unwrap();
    assert_eq!(other, ReceiptOutcome::Parked);
}

/// Links that leave the first submission's segment unknown (no answer in
/// time), then take nothing.
fn unknown_once() -> ScriptedLinks {
    ScriptedLinks::new(
        vec![Step::Answer(Ok(Submission {
            link: "link-a".into(),
            results: vec![SegmentResult::Unknown {
                reason: "no submit_sm_resp within 5s".into(),
            }],
            resubmitted: Vec::new(),
        }))],
        unavailable(),
    )
}

#[tokio::test]
async fn a_late_submit_response_settles_the_unknown_segment_by_its_tag() {
    let f = fixture(unknown_once()).await;
    let r = send_waiting(&f, "tx-late").await;
    assert_eq!(r.status, MessageStatus::Unknown);
    // The submit carried the message id as its correlation tag: the link
    // (on whichever pod holds the bind) returns it with a late answer.
    let sent = f.links.calls.lock().unwrap()[0].1.tag.clone();
    assert_eq!(sent.as_deref(), Some(r.message_id.as_str()));
    // Answers that settle nothing: no tag (the link had forgotten the
    // submit), a message that does not exist, a segment it does not have.
    for segment in [
        None,
        Some(("no-such-message", 0)),
        Some((r.message_id.as_str(), 3)),
    ] {
        assert!(
            !f.messaging
                .on_late_response("link-a", segment, 0, Some("x".into()))
                .await
                .unwrap(),
            "{segment:?} settles nothing"
        );
    }
    assert_eq!(f.messaging.late_unmatched(), 3);
    let rec = f.store.get(&r.message_id).await.unwrap().unwrap();
    assert_eq!(rec.status, MessageStatus::Unknown, "still unknown");
    let mut events = f.messaging.subscribe();
    assert!(
        f.messaging
            .on_late_response(
                "link-a",
                Some((r.message_id.as_str(), 0)),
                0,
                Some("late-id".into())
            )
            .await
            .unwrap()
    );
    let rec = f.store.get(&r.message_id).await.unwrap().unwrap();
    assert_eq!(rec.status, MessageStatus::Pending);
    assert_eq!(rec.segments[0].submit, SubmitStatus::Accepted);
    assert!(matches!(
        events.recv().await.unwrap(),
        AppEvent::Status {
            status: MessageStatus::Pending,
            ..
        }
    ));
    assert_eq!(f.messaging.late_unmatched(), 3);
    let out = f
        .messaging
        .on_receipt(receipt("late-id", ReceiptState::Delivered))
        .await
        .unwrap();
    assert!(matches!(out, ReceiptOutcome::Applied(ref m) if m.status == MessageStatus::Delivered));
    let stats = f.messaging.stats.view();
    assert_eq!(stats.links["link-a"].delivered, 1);
}

#[tokio::test]
async fn a_late_rejection_rejects_the_message() {
    let f = fixture(unknown_once()).await;
    let r = send_waiting(&f, "tx-late-rejected").await;
    assert!(
        f.messaging
            .on_late_response("link-a", Some((r.message_id.as_str(), 0)), 0x45, None)
            .await
            .unwrap()
    );
    let rec = f.store.get(&r.message_id).await.unwrap().unwrap();
    assert_eq!(rec.status, MessageStatus::Rejected);
    assert_eq!(
        rec.segments[0].submit,
        SubmitStatus::Rejected {
            command_status: 0x45
        }
    );
}

#[tokio::test]
async fn a_permanent_refusal_rejects_the_message_at_once_and_is_never_retried() {
    // The link cannot put the message into a submit_sm (as an SMSC would
    // refuse it): no retry within the retry period, no sweep later.
    let f = fixture(ScriptedLinks::new(
        vec![Step::Answer(Err(SubmitError::Refused {
            command_status: 0x0B,
            reason: "destination address: too long".into(),
        }))],
        unavailable(),
    ))
    .await;
    let r = send_waiting(&f, "tx-refused").await;
    assert_eq!(r.status, MessageStatus::Rejected);
    assert_eq!(f.links.count(), 1, "tried once, not retried");
    let rec = f.store.get(&r.message_id).await.unwrap().unwrap();
    assert_eq!(rec.status, MessageStatus::Rejected);
    assert!(rec.segments.iter().all(|s| s.submit
        == SubmitStatus::Rejected {
            command_status: 0x0B
        }));
    // Nothing is left `accepted` for the sweeper.
    let claimed = f
        .messaging
        .sweep("pod-b", Duration::ZERO, 100)
        .await
        .unwrap();
    assert_eq!(claimed, 0);
    assert_eq!(f.links.count(), 1);
}

#[tokio::test]
async fn background_submissions_hold_their_bound_and_a_send_waits_for_a_free_one() {
    // No link takes anything: each background submission holds its slot
    // for its 1 s retry period.
    let f = fixture_bounded(
        ScriptedLinks::new(Vec::new(), unavailable()),
        Duration::from_secs(1),
        2,
    )
    .await;
    for tx in ["tx-slot-1", "tx-slot-2"] {
        let r = f
            .messaging
            .send(SENDER, request(tx), &trace())
            .await
            .unwrap();
        assert_eq!(r.status, MessageStatus::Accepted);
    }
    let held = f
        .messaging
        .memory()
        .into_iter()
        .find(|m| m.structure == "background_submissions")
        .unwrap();
    assert_eq!((held.entries, held.capacity), (2, 2));
    assert!(held.bytes > 0, "the task state is counted");
    // A third send waits while both slots are held ...
    let t = trace();
    let third = f.messaging.send(SENDER, request("tx-slot-3"), &t);
    tokio::pin!(third);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut third)
            .await
            .is_err(),
        "a send past the bound must wait for a slot"
    );
    // ... and goes through once a retry period ends and frees one.
    let r = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("a slot frees when a retry period ends")
        .unwrap();
    assert_eq!(r.status, MessageStatus::Accepted);
}

/// Sends `req` expecting a refusal with `code`; nothing is stored or
/// submitted, and the refusal is journaled and counted.
async fn refused(f: &Fixture, req: SendRequest, code: &str) -> MessagingError {
    let tx = req.transaction_id.trim().to_owned();
    let before = f.links.count();
    let e = f
        .messaging
        .send(SENDER, req, &trace())
        .await
        .expect_err("refused");
    assert_eq!(e.code(), code, "{e:?}");
    assert_eq!(
        f.store.by_transaction(APP, &tx).await.unwrap(),
        None,
        "nothing stored"
    );
    assert_eq!(f.links.count(), before, "nothing submitted");
    assert_eq!(
        f.journal.lock().unwrap().last().cloned(),
        Some(("refused", code.to_owned()))
    );
    assert!(f.messaging.stats.view().apps[APP].rejected[code] >= 1);
    e
}

#[tokio::test]
async fn refusals_store_and_submit_nothing() {
    let f = fixture(ScriptedLinks::new(Vec::new(), accepted(&["s1"]))).await;
    refused(
        &f,
        SendRequest {
            esme: "nowhere".into(),
            ..request("tx-a")
        },
        "unknown_target",
    )
    .await;
    refused(
        &f,
        SendRequest {
            esme: "   ".into(),
            ..request("tx-b")
        },
        "invalid_esme",
    )
    .await;
    refused(
        &f,
        SendRequest {
            destination: "12".into(),
            ..request("tx-c")
        },
        "invalid_destination",
    )
    .await;
    refused(
        &f,
        SendRequest {
            strategy: " no-such-policy ".into(),
            ..request("tx-d")
        },
        "unknown_strategy",
    )
    .await;
    refused(
        &f,
        SendRequest {
            message: Some(String::new()),
            ..request("tx-e")
        },
        "invalid_message",
    )
    .await;
    refused(&f, request(&"x".repeat(129)), "invalid_transaction_id").await;
}

#[tokio::test]
async fn over_the_rate_limit_a_send_is_refused_with_a_retry_after() {
    let f = fixture(ScriptedLinks::new(Vec::new(), accepted(&["s1"]))).await;
    f.limiter
        .set_limit(&RateKey::link("link-a"), Some(RateLimit::new(1.0, 1)))
        .await
        .unwrap();
    send_waiting(&f, "tx-1").await;
    let e = refused(&f, request("tx-2"), "rate_limited").await;
    match e {
        MessagingError::RateLimited {
            retry_after_secs,
            scope,
        } => {
            assert!(retry_after_secs >= 1);
            assert_eq!(scope, "link \"link-a\"");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_contact_policy_refusal_is_forbidden_and_a_repeat_counts_once() {
    let f = fixture(ScriptedLinks::new(Vec::new(), accepted(&["s1"]))).await;
    // Waiting for the submission, so none is still running when a
    // refusal is checked for submitting nothing.
    let with_policy = |tx: &str| SendRequest {
        strategy: " twice-a-day ".into(),
        wait_for_submit: true,
        ..request(tx)
    };
    let first = f
        .messaging
        .send(SENDER, with_policy("tx-1"), &trace())
        .await
        .unwrap();
    // A repeat of the same transaction is answered with the first message
    // and its count is given back: a second message still passes.
    let again = f
        .messaging
        .send(SENDER, with_policy("tx-1"), &trace())
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.message_id, first.message_id);
    f.messaging
        .send(SENDER, with_policy("tx-2"), &trace())
        .await
        .unwrap();
    let e = refused(&f, with_policy("tx-3"), "daily_cp").await;
    assert!(matches!(
        e,
        MessagingError::Refused {
            forbidden: true,
            ..
        }
    ));
}

#[tokio::test]
async fn a_mobile_originated_message_goes_to_the_app_owning_its_address() {
    let f = fixture(ScriptedLinks::new(Vec::new(), unavailable())).await;
    let mut events = f.messaging.subscribe();
    let to = f
        .messaging
        .on_mobile_originated(MobileOriginated {
            link: "link-a".into(),
            source: "4917099999".into(),
            destination: "4915550001".into(),
            data_coding: 0,
            payload: b"STOP".to_vec(),
            text: Ok("STOP".into()),
            complete: true,
        })
        .await
        .unwrap();
    assert_eq!(to.as_deref(), Some(APP));
    match events.recv().await.unwrap() {
        AppEvent::MobileOriginated {
            app_id,
            link,
            source,
            message,
            ..
        } => {
            assert_eq!(
                (
                    app_id.as_str(),
                    link.as_str(),
                    source.as_str(),
                    message.as_str()
                ),
                (APP, "link-a", "4917099999", "STOP")
            );
        }
        other => panic!("{other:?}"),
    }
    let nobody = f
        .messaging
        .on_mobile_originated(MobileOriginated {
            link: "link-a".into(),
            source: "4917099999".into(),
            destination: "4915550002".into(),
            data_coding: 0,
            payload: b"hi".to_vec(),
            text: Ok("hi".into()),
            complete: true,
        })
        .await
        .unwrap();
    assert_eq!(nobody, None);
    assert!(events.try_recv().is_err(), "no app is told");
}

#[tokio::test]
async fn a_mobile_originated_message_with_parts_missing_tells_the_app_so() {
    let f = fixture(ScriptedLinks::new(Vec::new(), unavailable())).await;
    let mut events = f.messaging.subscribe();
    let mo = |complete| MobileOriginated {
        link: "link-a".into(),
        source: "4917099999".into(),
        destination: "4915550001".into(),
        data_coding: 0,
        payload: b"first part, third part".to_vec(),
        text: Ok("first part, third part".into()),
        complete,
    };
    for complete in [false, true] {
        f.messaging
            .on_mobile_originated(mo(complete))
            .await
            .unwrap();
        let event = events.recv().await.unwrap();
        let AppEvent::MobileOriginated { incomplete, .. } = &event else {
            panic!("{event:?}");
        };
        assert_eq!(*incomplete, !complete);
        // The webhook body names it only when it is so.
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json.get("incomplete"),
            (!complete).then_some(&serde_json::Value::Bool(true))
        );
    }
}

#[tokio::test]
async fn wait_for_submit_tries_once_and_answers_the_message_still_accepted() {
    let f = fixture(ScriptedLinks::new(Vec::new(), unavailable())).await;
    let r = send_waiting(&f, "tx-wait").await;
    assert_eq!(f.links.count(), 1, "no retry while the client waits");
    assert!(r.success);
    assert_eq!(
        (r.status, r.link.as_deref()),
        (MessageStatus::Accepted, None)
    );
    let rec = f.store.get(&r.message_id).await.unwrap().unwrap();
    assert_eq!(rec.status, MessageStatus::Accepted);
    assert_eq!(rec.segments[0].submit, SubmitStatus::Pending);
}

#[tokio::test]
async fn a_target_the_links_do_not_know_yet_leaves_the_stored_message_accepted() {
    // The configuration knew the link when the message was accepted; the
    // links do not (a change applied in between): the message exists, so
    // the answer is "accepted", not an internal error.
    let f = fixture(ScriptedLinks::new(
        Vec::new(),
        Err(SubmitError::UnknownTarget("link-a".into())),
    ))
    .await;
    let r = send_waiting(&f, "tx-gone").await;
    assert!(r.success);
    assert_eq!(r.status, MessageStatus::Accepted);
    let rec = f.store.get(&r.message_id).await.unwrap().unwrap();
    assert_eq!(rec.status, MessageStatus::Accepted);
    assert_eq!(rec.segments[0].submit, SubmitStatus::Pending);
}

#[tokio::test]
async fn a_rejected_submission_answers_failure_and_tells_the_app() {
    let f = fixture(ScriptedLinks::new(
        Vec::new(),
        Ok(Submission {
            link: "link-a".into(),
            results: vec![SegmentResult::Rejected {
                command_status: 0x0B,
            }],
            resubmitted: Vec::new(),
        }),
    ))
    .await;
    let mut events = f.messaging.subscribe();
    let r = send_waiting(&f, "tx-rejected").await;
    assert!(!r.success);
    assert_eq!(r.status, MessageStatus::Rejected);
    assert_eq!(r.segment_info[0].submit_status, "rejected");
    assert_eq!(r.segment_info[0].error_code, Some(0x0B));
    assert!(matches!(
        events.try_recv().unwrap(),
        AppEvent::Status { status: MessageStatus::Rejected, ref message_id, .. } if *message_id == r.message_id
    ));
    assert_eq!(status_of(&f, &r.message_id).await, MessageStatus::Rejected);
}

#[tokio::test]
async fn receipts_correlate_by_link_and_smsc_id_and_apply_once() {
    let f = fixture(ScriptedLinks::new(Vec::new(), accepted(&["s1"]))).await;
    let r = send_waiting(&f, "tx-receipt").await;
    assert_eq!(r.status, MessageStatus::Pending);
    let mut events = f.messaging.subscribe();
    // The same SMSC id on another link is another message: parked.
    let other = f
        .messaging
        .on_receipt(ReceiptUpdate {
            link: "link-b".into(),
            ..receipt("s1", ReceiptState::Delivered)
        })
        .await
        .unwrap();
    assert_eq!(other, ReceiptOutcome::Parked);
    assert_eq!(status_of(&f, &r.message_id).await, MessageStatus::Pending);
    assert!(events.try_recv().is_err(), "nothing changed, nobody told");
    let out = f
        .messaging
        .on_receipt(receipt("s1", ReceiptState::Undeliverable))
        .await
        .unwrap();
    assert!(matches!(out, ReceiptOutcome::Applied(ref m) if m.status == MessageStatus::Failed));
    assert!(matches!(
        events.try_recv().unwrap(),
        AppEvent::Status {
            status: MessageStatus::Failed,
            ..
        }
    ));
    // The SMSC repeats it: a duplicate, no second event, counted once.
    let again = f
        .messaging
        .on_receipt(receipt("s1", ReceiptState::Undeliverable))
        .await
        .unwrap();
    assert!(matches!(again, ReceiptOutcome::Duplicate(_)));
    assert!(events.try_recv().is_err(), "a duplicate tells nobody");
    let stats = f.messaging.stats.view();
    assert_eq!(stats.links["link-a"].failed, 1);
    let view = f
        .messaging
        .find(Viewer::App(APP), Some(&r.message_id), None)
        .await
        .unwrap();
    assert_eq!(view.status, MessageStatus::Failed);
    assert_eq!(view.segments[0].receipt_state.as_deref(), Some("UNDELIV"));
}

#[tokio::test]
async fn views_show_an_app_its_own_messages_and_an_admin_any_by_id() {
    let f = fixture(ScriptedLinks::new(Vec::new(), accepted(&["s1"]))).await;
    let r = f
        .messaging
        .send(
            SENDER,
            SendRequest {
                wait_for_submit: true,
                task_id: "campaign-7".into(),
                ..request("tx-view")
            },
            &trace(),
        )
        .await
        .unwrap();
    let by_id = f
        .messaging
        .find(Viewer::App(APP), Some(&r.message_id), None)
        .await
        .unwrap();
    let by_tx = f
        .messaging
        .find(Viewer::App(APP), None, Some("tx-view"))
        .await
        .unwrap();
    assert_eq!(by_id, by_tx);
    assert_eq!(
        (
            by_id.esme.as_str(),
            by_id.link.as_deref(),
            by_id.task_id.as_deref(),
            by_id.destination.as_str(),
            by_id.encoding.as_str(),
            by_id.status,
        ),
        (
            "link-a",
            Some("link-a"),
            Some("campaign-7"),
            "4917012345",
            "GSM7",
            MessageStatus::Pending
        )
    );
    assert_eq!(by_id.segments[0].seq, 1, "segments are numbered from 1");
    assert_eq!(by_id.segments[0].smsc_message_id.as_deref(), Some("s1"));
    let admin = f
        .messaging
        .find(Viewer::Admin, Some(&r.message_id), None)
        .await
        .unwrap();
    assert_eq!(admin, by_id);
    for (viewer, id, tx, expected) in [
        (
            Viewer::App("app-2"),
            Some(r.message_id.as_str()),
            None,
            "not_found",
        ),
        (Viewer::App("app-2"), None, Some("tx-view"), "not_found"),
        (Viewer::Admin, None, Some("tx-view"), "transaction_id"),
        (Viewer::App(APP), None, None, "message_id"),
        (Viewer::App(APP), Some(""), Some(""), "message_id"),
    ] {
        let e = f.messaging.find(viewer, id, tx).await.unwrap_err();
        let got = match &e {
            MessagingError::NotFound(_) => "not_found",
            MessagingError::InvalidField { field, .. } => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(got, expected, "{viewer:?} {id:?} {tx:?}");
    }
}

#[tokio::test]
async fn a_resubmitted_segment_marks_the_message_possible_duplicate_everywhere_the_app_looks() {
    let f = fixture(ScriptedLinks::new(
        Vec::new(),
        Ok(Submission {
            link: "link-a".into(),
            results: vec![
                SegmentResult::Accepted {
                    smsc_message_id: "s1".into(),
                },
                SegmentResult::Accepted {
                    smsc_message_id: "s2".into(),
                },
            ],
            resubmitted: vec![1],
        }),
    ))
    .await;
    let mut events = f.messaging.subscribe();
    let r = f
        .messaging
        .send(
            SENDER,
            SendRequest {
                wait_for_submit: true,
                message: Some("x".repeat(200)),
                ..request("tx-dup")
            },
            &trace(),
        )
        .await
        .unwrap();
    assert_eq!(r.segments, 2);
    assert!(!r.segment_info[0].resubmitted, "segment 1 went out once");
    assert!(r.segment_info[1].resubmitted, "segment 2 went out twice");
    assert!(matches!(
        events.try_recv().unwrap(),
        AppEvent::Status {
            possible_duplicate: true,
            ..
        }
    ));
    // A receipt for the resubmitted copy settles it, and the mark stays.
    f.messaging
        .on_receipt(receipt("s1", ReceiptState::Delivered))
        .await
        .unwrap();
    f.messaging
        .on_receipt(receipt("s2", ReceiptState::Delivered))
        .await
        .unwrap();
    let view = f
        .messaging
        .find(Viewer::App(APP), Some(&r.message_id), None)
        .await
        .unwrap();
    assert_eq!(view.status, MessageStatus::Delivered);
    assert!(view.possible_duplicate);
    assert!(view.segments[1].resubmitted && !view.segments[0].resubmitted);
    let mut last = None;
    while let Ok(ev) = events.try_recv() {
        last = Some(ev);
    }
    assert!(matches!(
        last,
        Some(AppEvent::Status {
            status: MessageStatus::Delivered,
            possible_duplicate: true,
            ..
        })
    ));
    // A message sent once is not marked.
    let g = fixture(ScriptedLinks::new(Vec::new(), accepted(&["s9"]))).await;
    let once = send_waiting(&g, "tx-once").await;
    let view = g
        .messaging
        .find(Viewer::App(APP), Some(&once.message_id), None)
        .await
        .unwrap();
    assert!(!view.possible_duplicate && !view.segments[0].resubmitted);
}

#[tokio::test]
async fn each_status_change_is_in_the_outbox_with_a_stable_id_before_the_receipt_returns() {
    use smsgw_core::outbox::Outbox;
    let f = fixture(ScriptedLinks::new(Vec::new(), accepted(&["ob-1"]))).await;
    let r = send_waiting(&f, "tx-outbox").await;
    f.messaging
        .on_receipt(receipt("ob-1", ReceiptState::Delivered))
        .await
        .unwrap();
    let got = f
        .outbox
        .claim("t", 10, Duration::from_millis(100))
        .await
        .unwrap();
    let kinds: Vec<(&str, &str)> = got
        .iter()
        .map(|c| (c.event.kind.as_str(), c.event.event_id.as_str()))
        .collect();
    let (pending, delivered) = (
        format!("ev_{}_pending", r.message_id),
        format!("ev_{}_delivered", r.message_id),
    );
    assert_eq!(
        kinds,
        [
            ("pending", pending.as_str()),
            ("delivered", delivered.as_str())
        ],
        "accepted is not an event; submitted and delivered are, in order"
    );
    let body: serde_json::Value = serde_json::from_str(&got[1].event.body).unwrap();
    assert_eq!(body["event_id"], delivered.as_str());
    assert_eq!(body["status"], "delivered");
    assert_eq!(got[1].event.key, r.message_id);
    // The SMSC delivers the receipt again (e.g. the gateway died before it
    // answered): the event is appended again with the same id.
    f.messaging
        .on_receipt(receipt("ob-1", ReceiptState::Delivered))
        .await
        .unwrap();
    let again = f
        .outbox
        .claim("t", 10, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].event.event_id, delivered);
}

/// A request with message options set as JSON (the REST form).
fn with_options(tx: &str, options: serde_json::Value) -> SendRequest {
    let mut v = serde_json::json!({
        "transaction_id": tx, "esme": "link-a", "source": "ACME",
        "destination": "+4917012345", "message": "Hello",
    });
    for (k, o) in options.as_object().unwrap() {
        v[k] = o.clone();
    }
    serde_json::from_value(v).unwrap()
}

#[tokio::test]
async fn message_options_reach_the_link_and_stay_on_the_record() {
    let f = fixture(ScriptedLinks::new(Vec::new(), accepted(&["s1"]))).await;
    let req = SendRequest {
        wait_for_submit: true,
        ..with_options(
            "tx-opts",
            serde_json::json!({"validity_period": 3600, "priority": 2, "flash": true}),
        )
    };
    let r = f.messaging.send(SENDER, req, &trace()).await.unwrap();
    assert_eq!(r.status, MessageStatus::Pending);
    let (_, msg) = f.links.calls.lock().unwrap()[0].clone();
    assert_eq!(msg.priority, 2);
    assert_eq!(msg.validity_period_s, Some(3_600));
    assert_eq!(msg.data_coding, 0x10, "flash GSM 7-bit: class 0");
    assert_eq!(msg.schedule_delivery_ms, None);
    let view = f
        .messaging
        .find(Viewer::App(APP), Some(&r.message_id), None)
        .await
        .unwrap();
    assert_eq!(
        (view.validity_period, view.priority, view.flash),
        (Some(3_600), 2, true)
    );
    assert_eq!(view.schedule_delivery_time_ms, None);
    // UCS-2 flash: 0x18; a plain message keeps data_coding 0 and no options.
    let uni = with_options(
        "tx-flash-ucs2",
        serde_json::json!({"flash": true, "message": "Привет"}),
    );
    f.messaging.send(SENDER, uni, &trace()).await.unwrap();
    let plain = f
        .messaging
        .send(SENDER, request("tx-plain"), &trace())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while f.links.count() < 3 {
            f.links.submitted.notified().await;
        }
    })
    .await
    .unwrap();
    let calls = f.links.calls.lock().unwrap().clone();
    let coding = |text: &str| {
        calls
            .iter()
            .find(|(_, m)| m.segments[0].payload.len() == text.encode_utf16().count() * 2)
            .map(|(_, m)| m.data_coding)
    };
    assert_eq!(coding("Привет"), Some(0x18), "flash UCS-2: class 0");
    let stored = f.store.get(&plain.message_id).await.unwrap().unwrap();
    assert!(stored.options.is_default());
    assert!(
        calls
            .iter()
            .any(|(_, m)| m.data_coding == 0 && m.priority == 0)
    );
}

#[tokio::test]
async fn each_bad_option_is_refused_with_its_code_and_nothing_is_stored() {
    let f = fixture(ScriptedLinks::new(Vec::new(), accepted(&["s1"]))).await;
    for (n, (option, code)) in [
        (
            serde_json::json!({"validity_period": 30}),
            "invalid_validity_period",
        ),
        (
            serde_json::json!({"validity_period": "1h"}),
            "invalid_validity_period",
        ),
        (serde_json::json!({"priority": 9}), "invalid_priority"),
        (serde_json::json!({"flash": "yes"}), "invalid_flash"),
        (
            serde_json::json!({"schedule_delivery_time": "2020-01-01T00:00:00Z"}),
            "invalid_schedule_delivery_time",
        ),
        (
            serde_json::json!({"schedule_delivery_time": "2999-01-01T00:00:00Z"}),
            "invalid_schedule_delivery_time",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let tx = format!("tx-bad-option-{n}");
        let e = f
            .messaging
            .send(SENDER, with_options(&tx, option.clone()), &trace())
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{option}");
        assert!(f.store.by_transaction(APP, &tx).await.unwrap().is_none());
    }
    assert_eq!(f.links.count(), 0);
}

#[tokio::test]
async fn a_scheduled_message_is_held_until_due_then_submitted_by_the_sweeper() {
    let f = fixture(ScriptedLinks::new(Vec::new(), accepted(&["s7"]))).await;
    let now = smsgw_core::messages::unix_now_ms();
    let due = now + 1_500;
    let at = jiff::Timestamp::from_millisecond(due as i64)
        .unwrap()
        .to_string();
    let req = SendRequest {
        // Nothing to wait for: answered at once, held.
        wait_for_submit: true,
        ..with_options(
            "tx-later",
            serde_json::json!({"schedule_delivery_time": at}),
        )
    };
    let r = f.messaging.send(SENDER, req, &trace()).await.unwrap();
    assert_eq!(r.status, MessageStatus::Accepted);
    let rec = f.store.get(&r.message_id).await.unwrap().unwrap();
    assert_eq!(rec.options.schedule_delivery_ms, Some(due));
    assert!(!rec.options.schedule_at_smsc);
    assert_eq!(rec.claimed_by, None, "no submitter holds it");
    let cancel = tokio_util::sync::CancellationToken::new();
    let sweeper = tokio::spawn(f.messaging.clone().run_sweeper(
        "pod-b".into(),
        Duration::from_secs(30),
        cancel.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(f.links.count(), 0, "not before its time");
    tokio::time::timeout(Duration::from_secs(10), async {
        while f.links.count() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("submitted once due, without waiting the 30 s stale period");
    let sent_at = smsgw_core::messages::unix_now_ms();
    assert!(sent_at >= due, "{sent_at} < {due}");
    let (_, msg) = f.links.calls.lock().unwrap()[0].clone();
    assert_eq!(
        msg.schedule_delivery_ms, None,
        "the gateway held it: due now, no schedule for the SMSC"
    );
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let rec = f.store.get(&r.message_id).await.unwrap().unwrap();
            if rec.status == MessageStatus::Pending {
                assert!(!rec.possible_duplicate(), "held, not in doubt");
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    cancel.cancel();
    sweeper.await.unwrap();
    assert_eq!(f.links.count(), 1);
}

#[tokio::test]
async fn a_link_that_schedules_at_the_smsc_gets_the_time_at_once() {
    let f = fixture(ScriptedLinks::new(Vec::new(), accepted(&["s8"]))).await;
    let due = smsgw_core::messages::unix_now_ms() + 3_600_000;
    let at = jiff::Timestamp::from_millisecond(due as i64)
        .unwrap()
        .to_string();
    let req = SendRequest {
        esme: "link-s".into(),
        wait_for_submit: true,
        ..with_options("tx-smsc", serde_json::json!({"schedule_delivery_time": at}))
    };
    let r = f.messaging.send(SENDER, req, &trace()).await.unwrap();
    assert_eq!(r.status, MessageStatus::Pending, "submitted at once");
    let (target, msg) = f.links.calls.lock().unwrap()[0].clone();
    assert_eq!(target, "link-s");
    assert_eq!(msg.schedule_delivery_ms, Some(due));
    let view = f
        .messaging
        .find(Viewer::App(APP), Some(&r.message_id), None)
        .await
        .unwrap();
    assert_eq!(view.schedule_delivery_time_ms, Some(due));
    assert!(view.schedule_at_smsc);
}

#[tokio::test]
async fn a_quota_charge_is_given_back_when_the_store_fails() {
    use smsgw_core::quotas::{QuotaLedger, QuotaLimits};
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FaultyStore {
        failing_create: true.into(),
        ..FaultyStore::over(Arc::new(
            EmbeddedMessageStore::open(&dir.path().join("messages.redb"), Default::default())
                .unwrap(),
        ))
    });
    let users = Arc::new(EmbeddedUserStore::open(&dir.path().join("users.redb")).unwrap());
    users
        .create(&UserRecord {
            quotas: QuotaLimits {
                daily: Some(5),
                monthly: None,
                prepaid: true,
            },
            ..user()
        })
        .await
        .unwrap();
    users.top_up(APP, 3, None).await.unwrap();
    let snapshot = smsgw_crds::compile_manifests(CONFIG).unwrap();
    let messaging = Arc::new(
        Messaging::builder(
            store.clone(),
            users.clone(),
            Arc::new(ArcSwap::from_pointee(snapshot)),
        )
        .links(Arc::new(ScriptedLinks::new(Vec::new(), accepted(&["s1"]))))
        .quotas(users.clone())
        .build(),
    );
    let e = messaging
        .send(SENDER, request("q-1"), &trace())
        .await
        .expect_err("the store fails");
    assert_eq!(e.code(), "internal");
    let a = messaging.account(SENDER).await.unwrap();
    assert_eq!(a.balance, Some(3), "the segments are given back");
    assert_eq!(a.daily.as_ref().unwrap().used, 0, "the count is given back");

    store
        .failing_create
        .store(false, std::sync::atomic::Ordering::SeqCst);
    messaging
        .send(SENDER, request("q-1"), &trace())
        .await
        .unwrap();
    let a = messaging.account(SENDER).await.unwrap();
    assert_eq!((a.balance, a.daily.unwrap().used), (Some(2), 1));
}
