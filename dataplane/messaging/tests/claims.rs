//! MO routing to apps registered through the API, without a socket: the
//! real embedded user store and outbox (in a temporary directory), a
//! configuration with one managed user.

use arc_swap::ArcSwap;
use smsgw_core::claims::{ClaimStatus, MAX_CLAIMS_PER_APP};
use smsgw_core::outbox::Outbox;
use smsgw_core::users::UserStore;
use smsgw_messaging::{AppEvent, CLAIM_CACHE, Messaging, MessagingError, MobileOriginated};
use smsgw_store::EmbeddedUserStore;
use smsgw_store::messages::EmbeddedMessageStore;
use smsgw_store::outbox::EmbeddedOutbox;
use std::sync::Arc;
use std::time::Duration;

const CONFIG: &str = r#"
apiVersion: smsgw.io/v1alpha1
kind: User
metadata: {name: shop}
spec:
  email: shop@example.com
  appName: shop
  password: 'managed pw 12'
  sourceAddresses: ["+49 1555 0001", "ACME"]
"#;

struct Fixture {
    messaging: Messaging,
    users: Arc<EmbeddedUserStore>,
    outbox: Arc<EmbeddedOutbox>,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        EmbeddedMessageStore::open(&dir.path().join("messages.redb"), Default::default()).unwrap(),
    );
    let users = Arc::new(EmbeddedUserStore::open(&dir.path().join("users.redb")).unwrap());
    let mut shop = smsgw_store::contract::user(1);
    shop.email = "shop@example.com".into();
    shop.app_id = "shop-app".into();
    users.create(&shop).await.unwrap();
    let outbox = Arc::new(
        EmbeddedOutbox::open(&dir.path().join("outbox.redb"), Duration::from_secs(86_400)).unwrap(),
    );
    let snapshot = smsgw_crds::compile_manifests(CONFIG).expect("the test configuration compiles");
    let messaging = Messaging::builder(
        store,
        users.clone(),
        Arc::new(ArcSwap::from_pointee(snapshot)),
    )
    .outbox(outbox.clone())
    .build();
    Fixture {
        messaging,
        users,
        outbox,
        _dir: dir,
    }
}

fn mo(to: &str, text: &str) -> MobileOriginated {
    MobileOriginated {
        link: "link-a".into(),
        source: "4917099999".into(),
        destination: to.into(),
        data_coding: 0,
        payload: text.as_bytes().to_vec(),
        text: Ok(text.into()),
        complete: true,
    }
}

async fn claimed(f: &Fixture, app: &str, address: &str, keyword: Option<&str>) -> String {
    let c = f
        .messaging
        .claim_address(&format!("user-{app}"), app, address, keyword)
        .await
        .unwrap();
    assert_eq!(c.status, ClaimStatus::Pending);
    c.id()
}

fn code(r: Result<impl std::fmt::Debug, MessagingError>) -> &'static str {
    r.expect_err("refused").code()
}

#[tokio::test]
async fn an_approved_short_code_claim_gets_its_mo_through_the_outbox_and_the_stream() {
    let f = fixture().await;
    let mut events = f.messaging.subscribe();
    let id = claimed(&f, "app-b", "4444", None).await;
    assert_eq!(
        f.messaging
            .on_mobile_originated(mo("4444", "hi"))
            .await
            .unwrap(),
        None,
        "a pending claim receives nothing"
    );
    assert!(events.try_recv().is_err());
    assert!(f.outbox.read("app-b", None, 10).await.unwrap().is_empty());

    let approved = f.messaging.approve_address_claim(&id).await.unwrap();
    assert_eq!(approved.status, ClaimStatus::Approved);
    assert_eq!(
        f.messaging
            .on_mobile_originated(mo("+4444", "hi"))
            .await
            .unwrap()
            .as_deref(),
        Some("app-b"),
        "the approval is seen at once on this pod, and '+' is ignored"
    );
    match events.recv().await.unwrap() {
        AppEvent::MobileOriginated {
            app_id, message, ..
        } => assert_eq!((app_id.as_str(), message.as_str()), ("app-b", "hi")),
        other => panic!("{other:?}"),
    }
    let logged = f.outbox.read("app-b", None, 10).await.unwrap();
    assert_eq!(logged.len(), 1);
    let body: serde_json::Value = serde_json::from_str(&logged[0].body).unwrap();
    assert_eq!(body["type"], "mobile_originated", "{body}");
    assert_eq!(body["message"], "hi");

    f.messaging.release_address("app-b", &id).await.unwrap();
    assert_eq!(
        f.messaging
            .on_mobile_originated(mo("4444", "hi"))
            .await
            .unwrap(),
        None,
        "a released claim receives nothing, at once on this pod"
    );
}

#[tokio::test]
async fn managed_users_come_first_then_keywords_then_the_bare_address() {
    let f = fixture().await;
    let bare = claimed(&f, "app-b", "4444", None).await;
    let stop = claimed(&f, "app-c", "4444", Some("stop")).await;
    assert_eq!(stop, "4444:STOP");
    f.messaging.approve_address_claim(&bare).await.unwrap();
    f.messaging.approve_address_claim(&stop).await.unwrap();
    for (text, app) in [
        ("  Stop please", "app-c"),
        ("STOP", "app-c"),
        ("stop.", "app-c"),
        ("STOPPED", "app-b"),
        ("hello stop", "app-b"),
        ("", "app-b"),
    ] {
        assert_eq!(
            f.messaging
                .on_mobile_originated(mo("4444", text))
                .await
                .unwrap()
                .as_deref(),
            Some(app),
            "{text:?}"
        );
    }
    // A keyword claim alone does not take the rest of the address.
    let win = claimed(&f, "app-c", "5555", Some("WIN")).await;
    f.messaging.approve_address_claim(&win).await.unwrap();
    assert_eq!(
        f.messaging
            .on_mobile_originated(mo("5555", "win"))
            .await
            .unwrap()
            .as_deref(),
        Some("app-c")
    );
    assert_eq!(
        f.messaging
            .on_mobile_originated(mo("5555", "lose"))
            .await
            .unwrap(),
        None
    );

    // A claim approved before a User resource listed the address (here:
    // written to the store directly) loses to the resource.
    let mut c = smsgw_store::contract::claims::claim(9, "4915550001", None);
    c.app_id = "app-b".into();
    f.users.put_claim(&c, 10).await.unwrap();
    f.users.approve_claim("4915550001", 1).await.unwrap();
    assert_eq!(
        f.messaging
            .on_mobile_originated(mo("4915550001", "hi"))
            .await
            .unwrap()
            .as_deref(),
        Some("shop-app"),
        "a managed number matches however it is written"
    );
    assert_eq!(
        f.messaging
            .on_mobile_originated(mo(" ACME", "hi"))
            .await
            .unwrap()
            .as_deref(),
        Some("shop-app"),
        "a managed alphanumeric address matches as written"
    );
}

#[tokio::test]
async fn claims_are_refused_with_a_code_that_says_why() {
    let f = fixture().await;
    let m = &f.messaging;
    assert_eq!(
        code(m.claim_address("u", "app-b", "12", None).await),
        "invalid_address"
    );
    assert_eq!(
        code(m.claim_address("u", "app-b", "ACME", None).await),
        "invalid_address"
    );
    assert_eq!(
        code(
            m.claim_address("u", "app-b", "4444", Some("two words"))
                .await
        ),
        "invalid_keyword"
    );
    assert_eq!(
        code(m.claim_address("u", "app-b", "+49 1555 0001", None).await),
        "address_managed",
        "a managed user's address, however written"
    );
    assert_eq!(
        code(
            m.claim_address("u", "app-b", "4915550001", Some("STOP"))
                .await
        ),
        "address_managed",
        "nor a keyword on it"
    );
    claimed(&f, "app-b", "4444", None).await;
    assert_eq!(
        code(m.claim_address("u", "app-c", "4444", None).await),
        "address_taken"
    );
    assert_eq!(
        code(m.claim_address("u", "app-b", "4444", None).await),
        "already_claimed"
    );
    assert_eq!(
        code(m.release_address("app-c", "4444").await),
        "not_found",
        "an app cannot release another's claim"
    );
    assert_eq!(
        code(m.release_address("app-b", "4444:a b").await),
        "invalid_claim_id"
    );
    assert_eq!(code(m.approve_address_claim("5555").await), "not_found");
    for n in 1..MAX_CLAIMS_PER_APP {
        claimed(&f, "app-b", &format!("{}", 10_000 + n), None).await;
    }
    assert_eq!(
        code(m.claim_address("u", "app-b", "9999", None).await),
        "too_many_claims"
    );
    assert_eq!(
        m.address_claims("app-b").await.unwrap().len(),
        MAX_CLAIMS_PER_APP
    );
    let (pending, next) = m
        .list_address_claims(Some(ClaimStatus::Pending), None, 10)
        .await
        .unwrap();
    assert_eq!(pending.len(), 10);
    assert_eq!(next.as_deref(), Some(pending[9].id().as_str()));
}

#[tokio::test(start_paused = true)]
async fn an_approval_on_another_pod_is_seen_within_the_cache_time() {
    let f = fixture().await;
    let id = claimed(&f, "app-b", "4444", None).await;
    assert_eq!(
        f.messaging
            .on_mobile_originated(mo("4444", "hi"))
            .await
            .unwrap(),
        None
    );
    // Another pod approves: this one's cache still holds the pending claim.
    f.users.approve_claim(&id, 1).await.unwrap();
    assert_eq!(
        f.messaging
            .on_mobile_originated(mo("4444", "hi"))
            .await
            .unwrap(),
        None
    );
    tokio::time::advance(CLAIM_CACHE).await;
    assert_eq!(
        f.messaging
            .on_mobile_originated(mo("4444", "hi"))
            .await
            .unwrap()
            .as_deref(),
        Some("app-b")
    );
}

/// An outbox whose appends fail (a backend down), reads served by a real
/// one: fault injection for the MO path.
struct AppendsFail(Arc<EmbeddedOutbox>);

#[async_trait::async_trait]
impl Outbox for AppendsFail {
    async fn append(
        &self,
        _: &[smsgw_core::outbox::OutboxEvent],
    ) -> Result<(), smsgw_core::outbox::OutboxError> {
        Err(smsgw_core::outbox::OutboxError::Backend(
            "injected: backend down".into(),
        ))
    }
    async fn claim(
        &self,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<smsgw_core::outbox::Claimed>, smsgw_core::outbox::OutboxError> {
        self.0.claim(consumer, max, wait).await
    }
    async fn ack(&self, positions: &[String]) -> Result<(), smsgw_core::outbox::OutboxError> {
        self.0.ack(positions).await
    }
    async fn read(
        &self,
        app_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<smsgw_core::outbox::Logged>, smsgw_core::outbox::OutboxError> {
        self.0.read(app_id, after, limit).await
    }
}

// The link answers the SMSC only for an MO this returns Ok for (issue 18):
// one that could not be put in the outbox is an error, and no app hears of
// it before it is durable (the SMSC delivers it again).
#[tokio::test]
async fn an_mo_the_outbox_cannot_take_is_an_error_and_reaches_no_app() {
    let f = fixture().await;
    let failing = Messaging::builder(
        Arc::new(
            EmbeddedMessageStore::open(&f._dir.path().join("m2.redb"), Default::default()).unwrap(),
        ),
        f.users.clone(),
        Arc::new(ArcSwap::from_pointee(
            smsgw_crds::compile_manifests(CONFIG).unwrap(),
        )),
    )
    .outbox(Arc::new(AppendsFail(f.outbox.clone())))
    .build();
    let mut events = failing.subscribe();
    let out = failing.on_mobile_originated(mo("4915550001", "hi")).await;
    assert!(
        matches!(out, Err(MessagingError::Internal(ref e)) if e.contains("backend down")),
        "{out:?}"
    );
    assert!(
        events.try_recv().is_err(),
        "no app is told of an MO not kept"
    );
    assert!(
        f.outbox
            .read("shop-app", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // The same MO with a working outbox reaches its app.
    assert_eq!(
        f.messaging
            .on_mobile_originated(mo("4915550001", "hi"))
            .await
            .unwrap()
            .as_deref(),
        Some("shop-app")
    );
    assert_eq!(f.outbox.read("shop-app", None, 10).await.unwrap().len(), 1);
}
