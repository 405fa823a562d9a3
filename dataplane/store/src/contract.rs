//! The contract every store backend must meet. Each backend's tests call
//! these functions with a fresh, empty store.

use smsgw_core::users::{StoreError, UserRecord, UserStore};
use std::sync::Arc;

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
