//! The contract every store backend must meet. Each backend's tests call
//! these functions with a fresh, empty store.

use smsgw_core::users::{StoreError, UserRecord, UserStore};
use std::sync::Arc;

pub mod claims;

/// A user record for tests, unique by `n`.
pub fn user(n: u32) -> UserRecord {
    UserRecord {
        user_id: format!("u{n:04}"),
        email: format!("user{n}@example.com"),
        app_id: format!("app{n:04}"),
        app_name: format!("app {n}"),
        password_hash: "$argon2id$fake".into(),
        secret_hash: "$argon2id$fake".into(),
        admin: false,
        managed_by: None,
        created_at: 1_700_000_000,
        allowed_targets: vec![],
        allowed_sender_ids: vec![],
        rate: None,
        source_addresses: vec![],
        webhook_url: None,
        webhook_secret: None,
        webhook_allow_private: false,
        webhook_options: Default::default(),
        quotas: Default::default(),
        token_generation: 0,
    }
}

/// Create, read by every key, update, list with paging, delete.
pub async fn users_round_trip(store: &dyn UserStore) {
    let u = user(1);
    store.create(&u).await.unwrap();
    assert_eq!(store.get("u0001").await.unwrap().as_ref(), Some(&u));
    assert_eq!(
        store.by_email("USER1@example.com ").await.unwrap().as_ref(),
        Some(&u),
        "email is case-insensitive"
    );
    assert_eq!(store.by_app_id("app0001").await.unwrap().as_ref(), Some(&u));
    assert_eq!(store.get("nope").await.unwrap(), None);

    let mut changed = u.clone();
    changed.admin = true;
    changed.app_name = "renamed".into();
    store.update(&changed).await.unwrap();
    assert_eq!(store.get("u0001").await.unwrap(), Some(changed));
    assert_eq!(
        store.update(&user(2)).await,
        Err(StoreError::NotFound("u0002".into()))
    );

    for n in 2..=5 {
        store.create(&user(n)).await.unwrap();
    }
    let page1 = store.list(None, 2).await.unwrap();
    assert_eq!(
        page1.iter().map(|u| u.user_id.as_str()).collect::<Vec<_>>(),
        ["u0001", "u0002"]
    );
    let page2 = store.list(Some("u0002"), 10).await.unwrap();
    assert_eq!(
        page2.iter().map(|u| u.user_id.as_str()).collect::<Vec<_>>(),
        ["u0003", "u0004", "u0005"]
    );

    assert!(store.delete("u0003").await.unwrap());
    assert!(!store.delete("u0003").await.unwrap());
    assert_eq!(store.by_email("user3@example.com").await.unwrap(), None);
    assert_eq!(store.by_app_id("app0003").await.unwrap(), None);
    // The email is free again after deletion.
    store.create(&user(3)).await.unwrap();
}

/// Unique keys are enforced: email (any case) and app id.
pub async fn users_unique_keys(store: &dyn UserStore) {
    store.create(&user(1)).await.unwrap();
    let mut same_email = user(2);
    same_email.email = "User1@Example.com".into();
    assert!(matches!(
        store.create(&same_email).await,
        Err(StoreError::Conflict { field: "email", .. })
    ));
    let mut same_app = user(3);
    same_app.app_id = "app0001".into();
    assert!(matches!(
        store.create(&same_app).await,
        Err(StoreError::Conflict {
            field: "app_id",
            ..
        })
    ));
    // Nothing of the refused records was written.
    assert_eq!(store.get("u0002").await.unwrap(), None);
    assert_eq!(store.by_app_id("app0002").await.unwrap(), None);
}

/// Of 16 concurrent creations with one email, exactly one succeeds.
pub async fn users_concurrent_registration(store: Arc<dyn UserStore>) {
    let mut tasks = Vec::new();
    for n in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut u = user(100 + n);
            u.email = "race@example.com".into();
            store.create(&u).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(StoreError::Conflict { field: "email", .. }) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(store.list(None, 100).await.unwrap().len(), 1);
}

// ---------------------------------------------------------------------------
// Message store contract
// ---------------------------------------------------------------------------

use smsgw_core::messages::ReceiptUpdate;
use smsgw_core::messages::{
    ClaimRequest, CreateOutcome, MessageRecord, MessageStatus, MessageStore, MessageStoreError,
    ReceiptOutcome, ReceiptState, SegmentRecord, SubmitStatus, SubmitUpdate, Target, unix_now_ms,
};
use std::collections::HashSet;
use std::time::Duration;

/// A run-unique token, so suites can share a long-lived server (Aerospike).
pub fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{tag}-{}-{}-{}",
        std::process::id(),
        unix_now_ms(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A message id as the gateway makes them (a UUIDv7 in its simple form:
/// the time in its first 48 bits), unique in this run.
pub fn message_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:012x}7{:07x}{:012x}",
        unix_now_ms() & 0xffff_ffff_ffff,
        std::process::id() & 0xfff_ffff,
        n & 0xffff_ffff_ffff
    )
}

/// A new message of `segments` segments, created now, with unique ids.
pub fn message(segments: u16) -> MessageRecord {
    let now = unix_now_ms();
    MessageRecord {
        message_id: message_id(),
        app_id: unique("app"),
        transaction_id: unique("tx"),
        task_id: Some("campaign-1".into()),
        source: "SMSGW".into(),
        destination: "+4915112345678".into(),
        encoding: "gsm7".into(),
        target: Target::Pool("eu".into()),
        link: None,
        created_at_ms: now,
        updated_at_ms: now,
        status: MessageStatus::Accepted,
        segments: (0..segments).map(SegmentRecord::new).collect(),
        claimed_by: Some("pod-creator".into()),
        claim_until_ms: now + 5_000,
        text: "hello".into(),
        ton_npi: [0, 0, 1, 1],
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        tracestate: Some("vendor=1".into()),
        callback: None,
        // The client's clock, a little behind the gateway's.
        sent_at_ms: Some(now - 1_500),
        // Options round-trip in every backend (no schedule: that changes
        // when a sweeper may claim it, see `messages_held_until_due`).
        options: smsgw_core::messages::MessageOptions {
            validity_period_s: Some(3_600),
            priority: 2,
            flash: true,
            ..Default::default()
        },
    }
}

/// An accepted `submit_sm_resp` for segment `seq`.
pub fn accepted(m: &MessageRecord, seq: u16, link: &str, smsc_id: &str) -> SubmitUpdate {
    SubmitUpdate {
        message_id: m.message_id.clone(),
        seq,
        outcome: SubmitStatus::Accepted,
        link: link.into(),
        smsc_message_id: Some(smsc_id.into()),
        at_ms: unix_now_ms(),
        resubmitted: false,
    }
}

/// A receipt on `link` for `smsc_id`.
pub fn receipt(link: &str, smsc_id: &str, state: ReceiptState) -> ReceiptUpdate {
    ReceiptUpdate {
        link: link.into(),
        smsc_message_id: smsc_id.into(),
        state,
        error_code: (state != ReceiptState::Delivered && state.is_final()).then_some(34),
        at_ms: unix_now_ms(),
    }
}

fn created(o: CreateOutcome) -> MessageRecord {
    match o {
        CreateOutcome::Created(r) => r,
        CreateOutcome::Existing(r) => panic!("expected Created, got Existing({})", r.message_id),
    }
}

fn applied(o: ReceiptOutcome) -> MessageRecord {
    match o {
        ReceiptOutcome::Applied(r) => r,
        other => panic!("expected Applied, got {other:?}"),
    }
}

/// Asserts that `store` answers `m` by its id and by its (app,
/// transaction).
pub async fn assert_readable(store: &dyn MessageStore, m: &MessageRecord) {
    assert_eq!(
        store.get(&m.message_id).await.unwrap().as_ref(),
        Some(m),
        "by id"
    );
    assert_eq!(
        store
            .by_transaction(&m.app_id, &m.transaction_id)
            .await
            .unwrap()
            .as_ref(),
        Some(m),
        "by (app, transaction)"
    );
}

/// Create, then read by id and by (app, transaction), with and without
/// the client's `sent_at`; unknown keys are None. Also for an id that is
/// not a UUIDv7 (a store may lay those out differently).
pub async fn messages_round_trip(store: &dyn MessageStore) {
    let m = message(2);
    let stored = created(store.create(&m).await.unwrap());
    assert_eq!(stored, m);
    assert_readable(store, &m).await;
    let mut other = message(1);
    other.message_id = unique("msg");
    other.sent_at_ms = None;
    created(store.create(&other).await.unwrap());
    assert_readable(store, &other).await;
    assert_eq!(store.get(&unique("nope")).await.unwrap(), None);
    assert_eq!(store.get(&message_id()).await.unwrap(), None);
    assert_eq!(
        store.by_transaction(&m.app_id, "other").await.unwrap(),
        None
    );
    // A submit for an unknown message or segment is an error, not a panic.
    let mut s = accepted(&m, 0, "l1", &unique("sid"));
    s.message_id = unique("nope");
    assert!(matches!(
        store.record_submit(&s).await,
        Err(smsgw_core::messages::MessageStoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.record_submit(&accepted(&m, 9, "l1", "x")).await,
        Err(smsgw_core::messages::MessageStoreError::NoSuchSegment { seq: 9, .. })
    ));
}

/// The same (app, transaction) again yields the first message, unchanged.
pub async fn messages_idempotent_create(store: &dyn MessageStore) {
    let first = message(1);
    created(store.create(&first).await.unwrap());
    let mut again = message(1);
    again.app_id = first.app_id.clone();
    again.transaction_id = first.transaction_id.clone();
    again.destination = "+33600000000".into();
    match store.create(&again).await.unwrap() {
        CreateOutcome::Existing(r) => assert_eq!(r, first),
        CreateOutcome::Created(r) => panic!("second create made {}", r.message_id),
    }
    assert_eq!(store.get(&again.message_id).await.unwrap(), None);
    // Another app may use the same transaction id.
    let mut other_app = message(1);
    other_app.transaction_id = first.transaction_id.clone();
    created(store.create(&other_app).await.unwrap());
}

/// Of 16 concurrent creates with one (app, transaction), exactly one is
/// Created and every answer carries the same message id.
pub async fn messages_concurrent_create(store: Arc<dyn MessageStore>) {
    let base = message(1);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store = store.clone();
        let mut m = message(1);
        m.app_id = base.app_id.clone();
        m.transaction_id = base.transaction_id.clone();
        tasks.push(tokio::spawn(async move { store.create(&m).await }));
    }
    let mut ids = HashSet::new();
    let mut created_n = 0;
    for t in tasks {
        match t.await.unwrap().unwrap() {
            CreateOutcome::Created(r) => {
                created_n += 1;
                ids.insert(r.message_id);
            }
            CreateOutcome::Existing(r) => {
                ids.insert(r.message_id);
            }
        }
    }
    assert_eq!(created_n, 1);
    assert_eq!(ids.len(), 1, "every caller sees one message id: {ids:?}");
    let id = ids.into_iter().next().unwrap();
    let by_tx = store
        .by_transaction(&base.app_id, &base.transaction_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_tx.message_id, id);
}

/// A receipt is matched through (link, SMSC id); a repeat is a duplicate;
/// the same id on another link is not this message.
pub async fn messages_receipt_matching(store: &dyn MessageStore) {
    let m = created(store.create(&message(1)).await.unwrap());
    let sid = unique("sid");
    let after = store
        .record_submit(&accepted(&m, 0, "l1", &sid))
        .await
        .unwrap();
    assert_eq!(after.status, MessageStatus::Pending);
    assert_eq!(after.link.as_deref(), Some("l1"));
    assert_eq!(
        after.segments[0].smsc_message_id.as_deref(),
        Some(sid.as_str())
    );

    let r = applied(
        store
            .apply_receipt(&receipt("l1", &sid, ReceiptState::Enroute))
            .await
            .unwrap(),
    );
    assert_eq!(r.status, MessageStatus::Pending);
    let r = applied(
        store
            .apply_receipt(&receipt("l1", &sid, ReceiptState::Delivered))
            .await
            .unwrap(),
    );
    assert_eq!(r.status, MessageStatus::Delivered);
    assert_eq!(r.segments[0].receipt, Some(ReceiptState::Delivered));
    assert!(matches!(
        store
            .apply_receipt(&receipt("l1", &sid, ReceiptState::Delivered))
            .await
            .unwrap(),
        ReceiptOutcome::Duplicate(_)
    ));
    // A late intermediate receipt does not undo the final state.
    assert!(matches!(
        store
            .apply_receipt(&receipt("l1", &sid, ReceiptState::Enroute))
            .await
            .unwrap(),
        ReceiptOutcome::Duplicate(_)
    ));
    assert_eq!(
        store.get(&m.message_id).await.unwrap().unwrap().status,
        MessageStatus::Delivered
    );
    assert_eq!(
        store
            .apply_receipt(&receipt("l2", &sid, ReceiptState::Delivered))
            .await
            .unwrap(),
        ReceiptOutcome::Parked,
        "same SMSC id on another link is another message"
    );
}

/// A receipt arriving before its submit_sm_resp is parked, then applied
/// when the mapping is written; a parked final state survives a later
/// intermediate one.
pub async fn messages_receipt_before_submit_resp(store: &dyn MessageStore) {
    let m = created(store.create(&message(2)).await.unwrap());
    let (s0, s1) = (unique("sid"), unique("sid"));
    assert_eq!(
        store
            .apply_receipt(&receipt("l1", &s0, ReceiptState::Delivered))
            .await
            .unwrap(),
        ReceiptOutcome::Parked
    );
    assert_eq!(
        store
            .apply_receipt(&receipt("l1", &s0, ReceiptState::Enroute))
            .await
            .unwrap(),
        ReceiptOutcome::Parked
    );
    let r = store
        .record_submit(&accepted(&m, 0, "l1", &s0))
        .await
        .unwrap();
    assert_eq!(r.segments[0].receipt, Some(ReceiptState::Delivered));
    assert_eq!(
        r.status,
        MessageStatus::Pending,
        "segment 1 not submitted yet"
    );
    // Parked receipt consumed: a repeat now matches directly.
    assert!(matches!(
        store
            .apply_receipt(&receipt("l1", &s0, ReceiptState::Delivered))
            .await
            .unwrap(),
        ReceiptOutcome::Duplicate(_)
    ));
    store
        .apply_receipt(&receipt("l1", &s1, ReceiptState::Delivered))
        .await
        .unwrap();
    let r = store
        .record_submit(&accepted(&m, 1, "l1", &s1))
        .await
        .unwrap();
    assert_eq!(r.status, MessageStatus::Delivered);
    assert_eq!(store.get(&m.message_id).await.unwrap().unwrap(), r);
}

/// Three segments, receipts out of order: delivered only when all are.
pub async fn messages_multipart_delivered_when_all_are(store: &dyn MessageStore) {
    let m = created(store.create(&message(3)).await.unwrap());
    let sids: Vec<String> = (0..3).map(|_| unique("sid")).collect();
    for (seq, sid) in sids.iter().enumerate() {
        let seq = u16::try_from(seq).unwrap();
        store
            .record_submit(&accepted(&m, seq, "l1", sid))
            .await
            .unwrap();
    }
    for (i, expect) in [
        (2, MessageStatus::Pending),
        (0, MessageStatus::Pending),
        (1, MessageStatus::Delivered),
    ] {
        let r = applied(
            store
                .apply_receipt(&receipt("l1", &sids[i], ReceiptState::Delivered))
                .await
                .unwrap(),
        );
        assert_eq!(r.status, expect, "after the receipt of segment {i}");
    }
}

/// One segment failing for good fails the message; a refused submit
/// rejects it.
pub async fn messages_failed_segment(store: &dyn MessageStore) {
    let m = created(store.create(&message(2)).await.unwrap());
    let (s0, s1) = (unique("sid"), unique("sid"));
    store
        .record_submit(&accepted(&m, 0, "l1", &s0))
        .await
        .unwrap();
    store
        .record_submit(&accepted(&m, 1, "l1", &s1))
        .await
        .unwrap();
    store
        .apply_receipt(&receipt("l1", &s0, ReceiptState::Delivered))
        .await
        .unwrap();
    let r = applied(
        store
            .apply_receipt(&receipt("l1", &s1, ReceiptState::Undeliverable))
            .await
            .unwrap(),
    );
    assert_eq!(r.status, MessageStatus::Failed);
    assert_eq!(r.segments[1].error_code, Some(34));

    let m = created(store.create(&message(1)).await.unwrap());
    let r = store
        .record_submit(&SubmitUpdate {
            outcome: SubmitStatus::Rejected {
                command_status: 0x45,
            },
            smsc_message_id: None,
            ..accepted(&m, 0, "l1", "")
        })
        .await
        .unwrap();
    assert_eq!(r.status, MessageStatus::Rejected);
    assert_eq!(store.get(&m.message_id).await.unwrap().unwrap(), r);

    // A resubmitted segment keeps its mark through the backend.
    let m = created(store.create(&message(2)).await.unwrap());
    let r = store
        .record_submit(&SubmitUpdate {
            resubmitted: true,
            ..accepted(&m, 1, "l1", "r1")
        })
        .await
        .unwrap();
    assert!(r.possible_duplicate() && r.segments[1].resubmitted);
    assert!(!r.segments[0].resubmitted);
    assert_eq!(store.get(&m.message_id).await.unwrap().unwrap(), r);
}

/// A receipt nobody knows is parked, not an error.
pub async fn messages_unknown_receipt_is_parked(store: &dyn MessageStore) {
    for state in [
        ReceiptState::Delivered,
        ReceiptState::Expired,
        ReceiptState::Enroute,
    ] {
        assert_eq!(
            store
                .apply_receipt(&receipt("l9", &unique("ghost"), state))
                .await
                .unwrap(),
            ReceiptOutcome::Parked
        );
    }
}

/// `record_submit_change` and `apply_receipt_change` answer the status
/// before the change next to the record after it: a submit outcome, an
/// intermediate and a final receipt, a duplicate, a parked receipt, and a
/// parked receipt applied by the submit outcome that maps it.
pub async fn messages_status_before_and_after(store: &dyn MessageStore) {
    let m = created(store.create(&message(2)).await.unwrap());
    let (s0, s1) = (unique("sid"), unique("sid"));
    let c = store
        .record_submit_change(&accepted(&m, 0, "l1", &s0))
        .await
        .unwrap();
    assert_eq!(
        (c.before, c.after(), c.moved()),
        (MessageStatus::Accepted, MessageStatus::Pending, true)
    );
    assert_eq!(c.record, store.get(&m.message_id).await.unwrap().unwrap());
    let r = store
        .apply_receipt_change(&receipt("l1", &s0, ReceiptState::Enroute))
        .await
        .unwrap();
    let c = r.applied().expect("applied");
    assert_eq!(
        (c.before, c.after()),
        (MessageStatus::Pending, MessageStatus::Pending)
    );
    let c = store
        .record_submit_change(&accepted(&m, 1, "l1", &s1))
        .await
        .unwrap();
    assert_eq!(
        (c.before, c.after()),
        (MessageStatus::Pending, MessageStatus::Pending)
    );
    let r = store
        .apply_receipt_change(&receipt("l1", &s0, ReceiptState::Delivered))
        .await
        .unwrap();
    let c = r.applied().expect("applied");
    assert_eq!(
        (c.before, c.after()),
        (MessageStatus::Pending, MessageStatus::Pending),
        "segment 1 is not delivered yet"
    );
    let r = store
        .apply_receipt_change(&receipt("l1", &s1, ReceiptState::Delivered))
        .await
        .unwrap();
    let c = r.applied().expect("applied");
    assert_eq!(
        (c.before, c.after(), c.moved()),
        (MessageStatus::Pending, MessageStatus::Delivered, true)
    );
    let r = store
        .apply_receipt_change(&receipt("l1", &s1, ReceiptState::Delivered))
        .await
        .unwrap();
    assert!(matches!(r.outcome, ReceiptOutcome::Duplicate(_)), "{r:?}");
    assert_eq!(r.before, Some(MessageStatus::Delivered));
    assert_eq!(r.applied(), None);

    // Parked first, then applied by the submit outcome that maps it.
    let m = created(store.create(&message(1)).await.unwrap());
    let s2 = unique("sid");
    let r = store
        .apply_receipt_change(&receipt("l1", &s2, ReceiptState::Delivered))
        .await
        .unwrap();
    assert_eq!((r.outcome, r.before), (ReceiptOutcome::Parked, None));
    let c = store
        .record_submit_change(&accepted(&m, 0, "l1", &s2))
        .await
        .unwrap();
    assert_eq!(
        (c.before, c.after()),
        (MessageStatus::Accepted, MessageStatus::Delivered)
    );
}

/// Every segment outcome of one submission in one write: all or none (a
/// segment out of range, or updates of two messages, write nothing), the
/// status before the first and after the last, each SMSC id indexed (a
/// receipt parked for one of them applied).
pub async fn messages_submission_at_once(store: &dyn MessageStore) {
    let m = created(store.create(&message(3)).await.unwrap());
    let (s0, s2) = (unique("sid"), unique("sid"));
    let mut out_of_range = accepted(&m, 3, "l1", &unique("sid"));
    out_of_range.seq = 3;
    let err = store
        .record_submits(&[accepted(&m, 0, "l1", &s0), out_of_range])
        .await
        .unwrap_err();
    assert!(
        matches!(err, MessageStoreError::NoSuchSegment { seq: 3, .. }),
        "{err:?}"
    );
    let other = created(store.create(&message(1)).await.unwrap());
    assert!(
        store
            .record_submits(&[
                accepted(&m, 0, "l1", &s0),
                accepted(&other, 0, "l1", &unique("sid"))
            ])
            .await
            .is_err()
    );
    let unchanged = store.get(&m.message_id).await.unwrap().unwrap();
    assert!(
        unchanged
            .segments
            .iter()
            .all(|s| s.submit == SubmitStatus::Pending),
        "nothing written: {unchanged:?}"
    );
    // A receipt for the third segment came before its response.
    store
        .apply_receipt(&receipt("l1", &s2, ReceiptState::Delivered))
        .await
        .unwrap();
    let mut rejected = accepted(&m, 1, "l1", "");
    rejected.outcome = SubmitStatus::Rejected {
        command_status: 0x45,
    };
    rejected.smsc_message_id = None;
    let c = store
        .record_submits(&[
            accepted(&m, 0, "l1", &s0),
            rejected,
            accepted(&m, 2, "l1", &s2),
        ])
        .await
        .unwrap();
    assert_eq!(
        (c.before, c.after()),
        (MessageStatus::Accepted, MessageStatus::Rejected)
    );
    let segs = &c.record.segments;
    assert_eq!(segs[0].smsc_message_id.as_deref(), Some(s0.as_str()));
    assert!(matches!(
        segs[1].submit,
        SubmitStatus::Rejected {
            command_status: 0x45
        }
    ));
    assert_eq!(
        segs[2].receipt,
        Some(ReceiptState::Delivered),
        "the parked receipt applied"
    );
    let r = store
        .apply_receipt(&receipt("l1", &s0, ReceiptState::Delivered))
        .await
        .unwrap();
    assert!(matches!(r, ReceiptOutcome::Applied(_)), "{r:?}");
    assert_eq!(store.get(&m.message_id).await.unwrap().unwrap(), {
        let ReceiptOutcome::Applied(rec) = r else {
            unreachable!()
        };
        rec
    });
}

/// A message held by its schedule (`schedule_delivery_time`, kept by
/// the gateway) is claimed by no sweeper before its due time however old
/// it is, and by the first after it without waiting for the stale period,
/// as fresh (not in doubt: nobody tried to send it). One scheduled at the
/// SMSC is an ordinary message.
pub async fn messages_held_until_due(store: &dyn MessageStore) {
    let now = unix_now_ms();
    let held = |due: u64| {
        let mut m = message(1);
        m.created_at_ms = now - 60_000;
        m.claimed_by = None;
        m.claim_until_ms = 0;
        m.options.schedule_delivery_ms = Some(due);
        m
    };
    let due_soon = created(store.create(&held(now + 20_000)).await.unwrap());
    let due_later = created(store.create(&held(now + 3_600_000)).await.unwrap());
    let mut at_smsc = held(now + 3_600_000);
    at_smsc.options.schedule_at_smsc = true;
    let at_smsc = created(store.create(&at_smsc).await.unwrap());
    assert_readable(store, &due_soon).await;
    let req = |owner: &str, now_ms: u64| ClaimRequest {
        owner: owner.into(),
        created_before_ms: now_ms - 30_000,
        now_ms,
        lease: Duration::from_secs(30),
        limit: 1_000,
    };
    let ids = |claimed: Vec<smsgw_core::messages::Claimed>| {
        claimed
            .into_iter()
            .map(|c| {
                assert!(!c.in_doubt(), "{c:?}");
                c.record.message_id
            })
            .collect::<HashSet<_>>()
    };
    let first = ids(store
        .claim_stale_accepted(&req("early", now))
        .await
        .unwrap());
    assert!(!first.contains(&due_soon.message_id), "not due yet");
    assert!(!first.contains(&due_later.message_id));
    assert!(first.contains(&at_smsc.message_id), "the SMSC's schedule");
    let due = ids(store
        .claim_stale_accepted(&req("on-time", now + 20_000))
        .await
        .unwrap());
    assert!(due.contains(&due_soon.message_id), "due: claimed");
    assert!(!due.contains(&due_later.message_id), "still held");
    let stored = store.get(&due_soon.message_id).await.unwrap().unwrap();
    assert_eq!(stored.claimed_by.as_deref(), Some("on-time"));
    assert_eq!(stored.options, due_soon.options);
}

/// Eight concurrent sweepers claim 20 stale accepted messages: each
/// exactly once. Leased, young and submitted messages are not claimed;
/// an expired lease can be claimed again.
pub async fn messages_claim_exactly_once(store: Arc<dyn MessageStore>) {
    let now = unix_now_ms();
    let mut stale = HashSet::new();
    for _ in 0..20 {
        let mut m = message(1);
        m.created_at_ms = now - 60_000;
        m.claim_until_ms = now - 30_000; // the creator's lease ran out
        stale.insert(created(store.create(&m).await.unwrap()).message_id);
    }
    let young = created(store.create(&message(1)).await.unwrap());
    let mut leased = message(1);
    leased.created_at_ms = now - 60_000;
    leased.claim_until_ms = now + 60_000;
    let leased = created(store.create(&leased).await.unwrap());
    let mut submitted = message(1);
    submitted.created_at_ms = now - 60_000;
    submitted.claim_until_ms = 0;
    let submitted = created(store.create(&submitted).await.unwrap());
    store
        .record_submit(&accepted(&submitted, 0, "l1", &unique("sid")))
        .await
        .unwrap();

    let req = |owner: &str, now_ms: u64| ClaimRequest {
        owner: owner.into(),
        created_before_ms: now - 10_000,
        now_ms,
        lease: Duration::from_secs(30),
        limit: 1_000,
    };
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        let r = req(&format!("sweeper-{i}"), now);
        tasks.push(tokio::spawn(
            async move { store.claim_stale_accepted(&r).await },
        ));
    }
    let mut seen: Vec<String> = Vec::new();
    for t in tasks {
        for c in t.await.unwrap().unwrap() {
            let rec = c.record;
            assert!(rec.claimed_by.as_deref().unwrap().starts_with("sweeper-"));
            assert_eq!(rec.claim_until_ms, now + 30_000);
            if stale.contains(&rec.message_id) {
                // The creator's lease lapsed without an outcome: it may
                // have sent the message before it stopped.
                assert_eq!(c.previous_owner.as_deref(), Some("pod-creator"));
            }
            seen.push(rec.message_id);
        }
    }
    let ours: Vec<&String> = seen.iter().filter(|id| stale.contains(*id)).collect();
    assert_eq!(ours.len(), 20, "each stale message claimed exactly once");
    assert_eq!(ours.iter().collect::<HashSet<_>>().len(), 20);
    for other in [&young.message_id, &leased.message_id, &submitted.message_id] {
        assert!(!seen.contains(other), "{other} must not be claimed");
    }
    // Leases held: nothing of ours again.
    let again = store
        .claim_stale_accepted(&req("late", now + 1))
        .await
        .unwrap();
    assert!(again.iter().all(|c| !stale.contains(&c.record.message_id)));
    // Leases expired: claimable again (the claimer died before submitting).
    let later = store
        .claim_stale_accepted(&req("rescuer", now + 31_000))
        .await
        .unwrap();
    let rescued: Vec<_> = later
        .iter()
        .filter(|c| stale.contains(&c.record.message_id))
        .collect();
    assert_eq!(rescued.len(), 20);
    assert!(rescued.iter().all(|c| c.in_doubt()));
    let one = &rescued[0].record;
    let stored = store.get(&one.message_id).await.unwrap().unwrap();
    assert_eq!(stored.claimed_by.as_deref(), Some("rescuer"));
    // A holder that sent nothing gives its lease back: only its own, and
    // the next claim finds the message not in doubt.
    let until = one.claim_until_ms;
    assert!(
        !store
            .release_claim(&one.message_id, "sweeper-0", until)
            .await
            .unwrap()
    );
    assert!(
        !store
            .release_claim(&one.message_id, "rescuer", until + 1)
            .await
            .unwrap()
    );
    assert!(
        store
            .release_claim(&one.message_id, "rescuer", until)
            .await
            .unwrap()
    );
    let stored = store.get(&one.message_id).await.unwrap().unwrap();
    assert_eq!((stored.claimed_by, stored.claim_until_ms), (None, 0));
    let next = store
        .claim_stale_accepted(&req("next", now + 32_000))
        .await
        .unwrap();
    let fresh = next
        .iter()
        .find(|c| c.record.message_id == one.message_id)
        .expect("a released message is claimable at once");
    assert!(!fresh.in_doubt(), "{fresh:?}");
    // A submitted message is never released.
    assert!(
        !store
            .release_claim(&submitted.message_id, "pod-creator", 0)
            .await
            .unwrap()
    );
    assert!(
        !store
            .release_claim("no-such-message", "next", 0)
            .await
            .unwrap()
    );
}

/// With a store whose TTL is `ttl` (short, ≥ 1 s): a message, its
/// idempotency key and its index entry are gone after the TTL, and the
/// transaction id can be used again.
pub async fn messages_expire_after_ttl(store: &dyn MessageStore, ttl: Duration) {
    let m = created(store.create(&message(1)).await.unwrap());
    let sid = unique("sid");
    store
        .record_submit(&accepted(&m, 0, "l1", &sid))
        .await
        .unwrap();
    assert!(store.get(&m.message_id).await.unwrap().is_some());
    tokio::time::sleep(ttl + Duration::from_millis(1_200)).await;
    store.purge_expired().await.unwrap();
    assert_eq!(store.get(&m.message_id).await.unwrap(), None);
    assert_eq!(
        store
            .by_transaction(&m.app_id, &m.transaction_id)
            .await
            .unwrap(),
        None
    );
    let outcome = store
        .apply_receipt(&receipt("l1", &sid, ReceiptState::Delivered))
        .await
        .unwrap();
    assert!(
        matches!(outcome, ReceiptOutcome::Parked | ReceiptOutcome::Orphaned),
        "{outcome:?}"
    );
    let mut again = message(1);
    again.app_id = m.app_id.clone();
    again.transaction_id = m.transaction_id.clone();
    created(store.create(&again).await.unwrap());
}

/// An outbox event for tests: `n`-th of ordering key `key`.
pub fn event(key: &str, n: u32) -> smsgw_core::outbox::OutboxEvent {
    smsgw_core::outbox::OutboxEvent {
        event_id: format!("ev_{key}_{n}"),
        app_id: "app0001".into(),
        key: key.into(),
        kind: "delivered".into(),
        callback: None,
        body: format!("{{\"n\":{n}}}"),
        created_at_ms: 1_700_000_000_000 + u64::from(n),
    }
}

/// Appended events are claimed once each, in order, by one consumer;
/// acknowledged ones are gone; an empty outbox answers nothing after its
/// wait.
pub async fn outbox_claim_and_ack(o: &dyn smsgw_core::outbox::Outbox) {
    let evs = [event("a", 1), event("b", 1), event("a", 2)];
    o.append(&evs).await.unwrap();
    let got = o.claim("p1", 10, Duration::from_secs(1)).await.unwrap();
    // In order per key (keys may be spread over partitions).
    let ids: Vec<_> = got.iter().map(|c| c.event.event_id.as_str()).collect();
    let pos = |id: &str| ids.iter().position(|i| *i == id).expect(id);
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(pos("ev_a_1") < pos("ev_a_2"), "{ids:?}");
    pos("ev_b_1");
    assert_eq!(got[pos("ev_a_1")].event, evs[0]);
    let again = o.claim("p1", 10, Duration::from_millis(100)).await.unwrap();
    assert!(again.is_empty(), "claimed twice: {again:?}");
    o.ack(&[got[0].position.clone(), got[1].position.clone()])
        .await
        .unwrap();
    // A claim waiting for events gets one appended meanwhile.
    let (got2, ()) = tokio::join!(o.claim("p1", 10, Duration::from_secs(5)), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        o.append(&[event("c", 1)]).await.unwrap();
    });
    let got2 = got2.unwrap();
    assert_eq!(got2.len(), 1);
    assert_eq!(got2[0].event.event_id, "ev_c_1");
    o.ack(&[got[2].position.clone(), got2[0].position.clone()])
        .await
        .unwrap();
    assert!(matches!(
        o.ack(&["not a position".into()]).await,
        Err(smsgw_core::outbox::OutboxError::BadPosition(_))
    ));
}

/// An app's events read back from a cursor: every appended event is in
/// its app's log, in order, whatever its delivery; a bad cursor is an
/// error.
pub async fn outbox_pull(o: &dyn smsgw_core::outbox::Outbox) {
    let mut other = event("x", 9);
    other.app_id = "app0002".into();
    o.append(&[event("p", 1), other, event("p", 2), event("q", 1)])
        .await
        .unwrap();
    let all = o.read("app0001", None, 100).await.unwrap();
    let bodies: Vec<_> = all.iter().map(|l| l.body.as_str()).collect();
    assert_eq!(bodies, [r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":1}"#]);
    let rest = o.read("app0001", Some(&all[0].cursor), 100).await.unwrap();
    assert_eq!(rest, all[1..].to_vec());
    let one = o.read("app0001", Some(&all[0].cursor), 1).await.unwrap();
    assert_eq!(one, all[1..2].to_vec());
    assert!(
        o.read("app0001", Some(&all[2].cursor), 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(o.read("app0002", None, 100).await.unwrap().len(), 1);
    assert!(matches!(
        o.read("app0001", Some("garbage"), 10).await,
        Err(smsgw_core::outbox::OutboxError::BadPosition(_))
    ));
}

/// Periods of a test day.
fn quota_periods(day: &str) -> smsgw_core::quotas::QuotaPeriods {
    let now = smsgw_core::messages::unix_now_ms();
    smsgw_core::quotas::QuotaPeriods {
        day: day.into(),
        day_end_ms: now + 3_600_000,
        month: day[..6].into(),
        month_end_ms: now + 7_200_000,
    }
}

/// Daily and monthly quotas refuse past their count, a refund gives the
/// count and segments back, a new day starts at zero, and a top-up id is
/// applied once.
pub async fn quotas_count_refund_and_top_up(ledger: &dyn smsgw_core::quotas::QuotaLedger) {
    use smsgw_core::quotas::{QuotaCharge, QuotaDecision, QuotaLimits, QuotaPeriod};
    let p = quota_periods("20261207");
    let limits = QuotaLimits {
        daily: Some(2),
        monthly: Some(2),
        prepaid: true,
    };
    let charge = |p, segments| QuotaCharge {
        app_id: "app-q",
        periods: p,
        limits,
        segments,
    };
    assert_eq!(
        ledger.charge(&charge(&p, 1)).await.unwrap(),
        QuotaDecision::InsufficientBalance {
            balance: 0,
            needed: 1
        }
    );
    let t = ledger.top_up("app-q", 5, Some("invoice-1")).await.unwrap();
    assert_eq!((t.balance, t.applied), (5, true));
    let t = ledger.top_up("app-q", 5, Some("invoice-1")).await.unwrap();
    assert_eq!((t.balance, t.applied), (5, false));
    let QuotaDecision::Charged(first) = ledger.charge(&charge(&p, 2)).await.unwrap() else {
        panic!("first message refused")
    };
    assert!(matches!(
        ledger.charge(&charge(&p, 2)).await.unwrap(),
        QuotaDecision::Charged(_)
    ));
    assert_eq!(
        ledger.charge(&charge(&p, 1)).await.unwrap(),
        QuotaDecision::Exceeded {
            period: QuotaPeriod::Daily,
            limit: 2
        }
    );
    let u = ledger.usage("app-q", &p).await.unwrap();
    assert_eq!((u.day_used, u.month_used, u.balance), (2, 2, 1));
    ledger.refund(&first).await.unwrap();
    let u = ledger.usage("app-q", &p).await.unwrap();
    assert_eq!((u.day_used, u.month_used, u.balance), (1, 1, 3));
    // Next day: the day starts at zero, the month goes on to its quota.
    let next = quota_periods("20261208");
    assert!(matches!(
        ledger.charge(&charge(&next, 1)).await.unwrap(),
        QuotaDecision::Charged(_)
    ));
    assert_eq!(
        ledger.charge(&charge(&next, 1)).await.unwrap(),
        QuotaDecision::Exceeded {
            period: QuotaPeriod::Monthly,
            limit: 2
        }
    );
    let u = ledger.usage("app-q", &next).await.unwrap();
    assert_eq!((u.day_used, u.month_used, u.balance), (1, 2, 2));
    // Another app is untouched.
    let u = ledger.usage("app-other", &next).await.unwrap();
    assert_eq!((u.day_used, u.month_used, u.balance), (0, 0, 0));
}

/// Of many concurrent charges against a quota of 10, exactly 10 pass.
pub async fn quotas_concurrent_charges(ledger: Arc<dyn smsgw_core::quotas::QuotaLedger>) {
    use smsgw_core::quotas::{QuotaCharge, QuotaDecision, QuotaLimits};
    let p = Arc::new(quota_periods("20261207"));
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let (ledger, p) = (ledger.clone(), p.clone());
        tasks.push(tokio::spawn(async move {
            let c = QuotaCharge {
                app_id: "app-c",
                periods: &p,
                limits: QuotaLimits {
                    daily: Some(10),
                    ..Default::default()
                },
                segments: 1,
            };
            matches!(ledger.charge(&c).await.unwrap(), QuotaDecision::Charged(_))
        }));
    }
    let mut passed = 0;
    for t in tasks {
        passed += usize::from(t.await.unwrap());
    }
    assert_eq!(passed, 10);
}
