//! The address-claim part of the user store contract.

use super::user;
use smsgw_core::claims::{AddressClaim, AddressKind, ClaimStatus};
use smsgw_core::users::{StoreError, UserStore};
use std::sync::Arc;

/// A pending claim of `address` (with `keyword`) by the app of `user(n)`.
pub fn claim(n: u32, address: &str, keyword: Option<&str>) -> AddressClaim {
    let u = user(n);
    AddressClaim {
        address: address.into(),
        kind: if address.len() <= 6 {
            AddressKind::ShortCode
        } else {
            AddressKind::Number
        },
        keyword: keyword.map(str::to_owned),
        app_id: u.app_id,
        user_id: u.user_id,
        status: ClaimStatus::Pending,
        created_at: 1_700_000_000,
        approved_at: None,
    }
}

/// Put-if-absent (whoever holds the id), the per-app bound, reads by id,
/// app and page, approval (idempotent, never of a released claim), and
/// release by the owner only (or by anyone without an app).
pub async fn claims_put_approve_release(store: &dyn UserStore) {
    let a = claim(1, "4444", None);
    store.put_claim(&a, 3).await.unwrap();
    assert_eq!(store.claim("4444").await.unwrap().as_ref(), Some(&a));
    assert_eq!(
        store.put_claim(&claim(2, "4444", None), 3).await,
        Err(StoreError::Conflict {
            field: "address",
            value: "4444".into()
        }),
        "another app cannot take a held address"
    );
    assert_eq!(
        store.put_claim(&a, 3).await,
        Err(StoreError::Conflict {
            field: "address",
            value: "4444".into()
        }),
        "nor can the same app twice"
    );
    let kw = claim(2, "4444", Some("STOP"));
    store.put_claim(&kw, 3).await.unwrap();
    assert_eq!(kw.id(), "4444:STOP");
    store
        .put_claim(&claim(1, "447700900123", None), 3)
        .await
        .unwrap();
    store.put_claim(&claim(1, "5555", None), 3).await.unwrap();
    assert_eq!(
        store.put_claim(&claim(1, "6666", None), 3).await,
        Err(StoreError::TooManyClaims {
            app_id: "app0001".into(),
            max: 3
        })
    );
    assert_eq!(store.claim("6666").await.unwrap(), None);

    let own: Vec<String> = store
        .claims_of_app("app0001")
        .await
        .unwrap()
        .iter()
        .map(AddressClaim::id)
        .collect();
    assert_eq!(own, ["4444", "447700900123", "5555"]);
    let page1 = store.list_claims(None, 2).await.unwrap();
    let page2 = store.list_claims(Some("4444:STOP"), 10).await.unwrap();
    assert_eq!(
        page1
            .iter()
            .chain(&page2)
            .map(AddressClaim::id)
            .collect::<Vec<_>>(),
        ["4444", "4444:STOP", "447700900123", "5555"]
    );

    let approved = store.approve_claim("4444", 1_700_000_100).await.unwrap();
    let approved = approved.expect("the claim exists");
    assert_eq!(approved.status, ClaimStatus::Approved);
    assert_eq!(approved.approved_at, Some(1_700_000_100));
    assert_eq!(store.claim("4444").await.unwrap(), Some(approved.clone()));
    assert_eq!(
        store.approve_claim("4444", 1_700_000_999).await.unwrap(),
        Some(approved.clone()),
        "approving twice changes nothing"
    );
    assert_eq!(store.approve_claim("9999", 1).await.unwrap(), None);

    assert_eq!(
        store.delete_claim("4444", Some("app0002")).await.unwrap(),
        None,
        "an app cannot release another's claim"
    );
    assert_eq!(
        store.delete_claim("4444", Some("app0001")).await.unwrap(),
        Some(approved)
    );
    assert_eq!(store.claim("4444").await.unwrap(), None);
    assert_eq!(store.approve_claim("4444", 1).await.unwrap(), None);
    assert_eq!(
        store.delete_claim("4444:STOP", None).await.unwrap(),
        Some(kw),
        "an admin rejects any claim"
    );
    // Released ids are free again, and free the app's bound.
    store.put_claim(&claim(2, "4444", None), 3).await.unwrap();
    store.put_claim(&claim(1, "6666", None), 3).await.unwrap();
}

/// Of 16 apps claiming one address at once, exactly one gets it.
pub async fn claims_concurrent_put_lets_exactly_one_win(store: Arc<dyn UserStore>) {
    let mut tasks = Vec::new();
    for n in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.put_claim(&claim(100 + n, "7777", None), 10).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(StoreError::Conflict {
                field: "address", ..
            }) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(store.list_claims(None, 100).await.unwrap().len(), 1);
}

/// Deleting a user frees its app's claims and leaves others' alone.
pub async fn claims_go_with_their_user(store: &dyn UserStore) {
    store.create(&user(1)).await.unwrap();
    store.create(&user(2)).await.unwrap();
    store.put_claim(&claim(1, "4444", None), 10).await.unwrap();
    store
        .put_claim(&claim(1, "4444", Some("WIN")), 10)
        .await
        .unwrap();
    store.put_claim(&claim(2, "5555", None), 10).await.unwrap();
    assert!(store.delete("u0001").await.unwrap());
    assert_eq!(store.claim("4444").await.unwrap(), None);
    assert_eq!(store.claim("4444:WIN").await.unwrap(), None);
    assert!(store.claims_of_app("app0001").await.unwrap().is_empty());
    assert_eq!(
        store
            .list_claims(None, 10)
            .await
            .unwrap()
            .iter()
            .map(AddressClaim::id)
            .collect::<Vec<_>>(),
        ["5555"]
    );
    store.put_claim(&claim(2, "4444", None), 10).await.unwrap();
}
