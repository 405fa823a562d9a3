use super::*;
use crate::testing::{ADMIN_KEY, state};
use http::HeaderValue;

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, HeaderValue::from_str(v).unwrap());
    }
    h
}

async fn registered(auth: &Auth, email: &str) -> (Registered, IssuedToken) {
    let r = auth.register(email, "long enough pw", "app").await.unwrap();
    let t = auth
        .login(email, "long enough pw", &r.app_id, None)
        .await
        .unwrap();
    (r, t)
}

#[tokio::test]
async fn registration_validates_each_field_and_refuses_a_taken_email() {
    let (_d, s) = state(Snapshot::default(), None);
    let auth = &s.auth;
    let e = auth
        .register("not-an-email", "long enough pw", "app")
        .await
        .unwrap_err();
    assert!(
        matches!(e, ApiError::InvalidField { field: "email", .. }),
        "{e:?}"
    );
    let e = auth
        .register("a@example.com", "short", "app")
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ApiError::InvalidField {
                field: "password",
                ..
            }
        ),
        "{e:?}"
    );
    let e = auth
        .register("a@example.com", "long enough pw", " ")
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ApiError::InvalidField {
                field: "app_name",
                ..
            }
        ),
        "{e:?}"
    );
    let r = auth
        .register("a@example.com", "long enough pw", "app")
        .await
        .unwrap();
    assert!(r.app_secret.len() >= 40);
    let stored = auth.store().get(&r.user_id).await.unwrap().unwrap();
    assert!(
        stored.secret_hash.starts_with("$argon2id$") && !stored.secret_hash.contains(&r.app_secret)
    );
    assert!(stored.password_hash.starts_with("$argon2id$"));
    let e = auth
        .register("A@Example.com", "long enough pw", "app")
        .await
        .unwrap_err();
    assert!(matches!(e, ApiError::Conflict(_)), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_registrations_of_one_email_let_exactly_one_succeed() {
    let (_d, s) = state(Snapshot::default(), None);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let auth = s.auth.clone();
            tokio::spawn(async move {
                auth.register("race@example.com", "long enough pw", "app")
                    .await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(ApiError::Conflict(_)) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(ok, 1);
}

#[tokio::test]
async fn login_and_machine_tokens_authenticate_with_the_matching_app_id() {
    let (_d, s) = state(Snapshot::default(), None);
    let (r, t) = registered(&s.auth, "b@example.com").await;
    let h = headers(&[
        ("authorization", &format!("Bearer {}", t.token)),
        ("x-app-id", &r.app_id),
    ]);
    assert_eq!(
        s.auth.authenticate(&h).await.unwrap(),
        Caller::User {
            user_id: r.user_id.clone(),
            app_id: r.app_id.clone(),
            admin: false
        }
    );
    let m = s.auth.token(&r.app_id, &r.app_secret, None).await.unwrap();
    let h = headers(&[
        ("authorization", &format!("Bearer {}", m.token)),
        ("x-app-id", &r.app_id),
    ]);
    assert!(s.auth.authenticate(&h).await.is_ok());
    let e = s
        .auth
        .token(&r.app_id, "wrong secret", None)
        .await
        .unwrap_err();
    assert!(matches!(e, ApiError::Unauthenticated(_)));
}

#[tokio::test]
async fn missing_or_bad_credentials_are_unauthenticated() {
    let (_d, s) = state(Snapshot::default(), None);
    let (r, t) = registered(&s.auth, "c@example.com").await;
    let bearer = format!("Bearer {}", t.token);
    let cases: Vec<(HeaderMap, &str)> = vec![
        (headers(&[]), "missing Authorization"),
        (headers(&[("authorization", &bearer)]), "missing X-App-ID"),
        (
            headers(&[("authorization", &bearer), ("x-app-id", "app_other")]),
            "X-App-ID does not match",
        ),
        (
            headers(&[("authorization", "Basic abc"), ("x-app-id", &r.app_id)]),
            "expected Authorization: Bearer",
        ),
        (
            headers(&[("authorization", "Bearer x.y.z"), ("x-app-id", &r.app_id)]),
            "malformed token",
        ),
    ];
    for (h, want) in cases {
        match s.auth.authenticate(&h).await {
            Err(ApiError::Unauthenticated(m)) => assert!(m.contains(want), "{m:?} vs {want:?}"),
            other => panic!("{other:?} for {want}"),
        }
    }
}

#[tokio::test]
async fn failed_logins_are_limited_per_email_with_a_retry_after() {
    let (_d, s) = state(Snapshot::default(), None);
    registered(&s.auth, "d@example.com").await;
    for _ in 0..5 {
        let e = s
            .auth
            .login("d@example.com", "wrong password", "", None)
            .await
            .unwrap_err();
        assert!(matches!(e, ApiError::Unauthenticated(_)));
    }
    let e = s
        .auth
        .login("d@example.com", "long enough pw", "", None)
        .await
        .unwrap_err();
    match e {
        ApiError::TooManyRequests { retry_after_secs } => {
            assert!((1..=900).contains(&retry_after_secs))
        }
        other => panic!("{other:?}"),
    }
    // Another email is unaffected.
    registered(&s.auth, "e@example.com").await;
}

#[tokio::test]
async fn failed_logins_are_limited_per_client_address() {
    let (_d, s) = state(Snapshot::default(), None);
    let ip: IpAddr = "192.0.2.7".parse().unwrap();
    for i in 0..20 {
        let _ = s
            .auth
            .login(
                &format!("nobody{i}@example.com"),
                "wrong password",
                "",
                Some(ip),
            )
            .await;
    }
    let e = s
        .auth
        .login("fresh@example.com", "whatever pw", "", Some(ip))
        .await
        .unwrap_err();
    assert!(matches!(e, ApiError::TooManyRequests { .. }), "{e:?}");
    let other: IpAddr = "192.0.2.8".parse().unwrap();
    let e = s
        .auth
        .login("fresh@example.com", "whatever pw", "", Some(other))
        .await
        .unwrap_err();
    assert!(matches!(e, ApiError::Unauthenticated(_)), "{e:?}");
}

#[tokio::test]
async fn the_admin_key_is_required_to_match_and_unset_means_503() {
    let (_d, unset) = state(Snapshot::default(), None);
    let e = unset
        .auth
        .authenticate_admin(&headers(&[("x-admin-key", "anything")]))
        .await
        .unwrap_err();
    assert!(matches!(e, ApiError::Unavailable(_)), "{e:?}");

    let (_d, s) = state(Snapshot::default(), Some(ADMIN_KEY));
    assert_eq!(
        s.auth
            .authenticate_admin(&headers(&[("x-admin-key", ADMIN_KEY)]))
            .await
            .unwrap(),
        Caller::AdminKey
    );
    let e = s
        .auth
        .authenticate_admin(&headers(&[("x-admin-key", "wrong")]))
        .await
        .unwrap_err();
    assert!(matches!(e, ApiError::Unauthenticated(_)), "{e:?}");
    let e = s.auth.authenticate_admin(&headers(&[])).await.unwrap_err();
    assert!(matches!(e, ApiError::Unauthenticated(_)), "{e:?}");
}

#[tokio::test]
async fn admin_users_pass_non_admins_are_forbidden_and_revocation_is_immediate() {
    let (_d, s) = state(Snapshot::default(), Some(ADMIN_KEY));
    let (r, t) = registered(&s.auth, "f@example.com").await;
    let h = headers(&[
        ("authorization", &format!("Bearer {}", t.token)),
        ("x-app-id", &r.app_id),
    ]);
    let e = s.auth.authenticate_admin(&h).await.unwrap_err();
    assert!(matches!(e, ApiError::PermissionDenied(_)), "{e:?}");
    crate::admin::set_admin(&s, &Caller::AdminKey, &r.user_id, true)
        .await
        .unwrap();
    assert!(
        s.auth.authenticate_admin(&h).await.is_ok(),
        "the store's flag counts, not the token's"
    );
    crate::admin::set_admin(&s, &Caller::AdminKey, &r.user_id, false)
        .await
        .unwrap();
    assert!(matches!(
        s.auth.authenticate_admin(&h).await,
        Err(ApiError::PermissionDenied(_))
    ));
}

/// Pods sharing one user store apply the same snapshot at the same time
/// (found by the cluster in a box: a pod that lost the create race rejected
/// the whole snapshot with "email … is already registered").
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pods_syncing_one_snapshot_at_once_all_accept_it() {
    let snap = smsgw_crds::compile_manifests(
        "apiVersion: smsgw.io/v1alpha1\nkind: User\nmetadata: {name: ops}\nspec: {email: ops@example.com, appName: one, password: 'ops password 1'}\n",
    )
    .unwrap();
    let (_d, s) = state(snap.clone(), None);
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (auth, snap) = (s.auth.clone(), snap.clone());
            tokio::spawn(async move { auth.sync_managed_users(&snap).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let users = s.auth.store().list(None, 10).await.unwrap();
    let ops: Vec<_> = users
        .iter()
        .filter(|u| u.email == "ops@example.com")
        .collect();
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0].managed_by.as_deref(), Some("ops"));
}

#[tokio::test]
async fn managed_users_follow_their_resources_and_cannot_be_deleted_through_the_api() {
    let yaml = |admin: bool, app: &str| {
        format!(
            "apiVersion: smsgw.io/v1alpha1\nkind: User\nmetadata: {{name: ops}}\nspec: {{email: ops@example.com, appName: {app}, admin: {admin}, webhookAllowPrivate: {admin}, password: 'ops password 1'}}\n"
        )
    };
    let snap = smsgw_crds::compile_manifests(&yaml(false, "one")).unwrap();
    let (_d, s) = state(snap.clone(), Some(ADMIN_KEY));
    s.auth.sync_managed_users(&snap).await.unwrap();
    let u = s
        .auth
        .store()
        .by_email("ops@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            u.managed_by.as_deref(),
            u.app_name.as_str(),
            u.admin,
            u.webhook_allow_private
        ),
        (Some("ops"), "one", false, false)
    );
    s.auth
        .login("ops@example.com", "ops password 1", "", None)
        .await
        .unwrap();

    let snap2 = smsgw_crds::compile_manifests(&yaml(true, "two")).unwrap();
    s.auth.sync_managed_users(&snap2).await.unwrap();
    let u2 = s.auth.store().get(&u.user_id).await.unwrap().unwrap();
    assert_eq!(
        (
            u2.app_name.as_str(),
            u2.admin,
            u2.app_id.as_str(),
            u2.webhook_allow_private
        ),
        ("two", true, u.app_id.as_str(), true)
    );

    let e = crate::admin::delete_user(&s, &Caller::AdminKey, &u.user_id)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ApiError::Conflict(m) if m.contains("managed by User resource \"ops\"")),
        "{e:?}"
    );
    assert!(s.auth.store().get(&u.user_id).await.unwrap().is_some());

    s.auth
        .sync_managed_users(&Snapshot::default())
        .await
        .unwrap();
    assert!(
        s.auth.store().get(&u.user_id).await.unwrap().is_none(),
        "removed with its resource"
    );
}

/// What the operator sends: the password and the app secret of the
/// User's credentials Secret as hashes, stored as they are; the app
/// authenticates with the Secret's app id and secret, and a new secret
/// revokes the tokens of the old one.
#[tokio::test]
async fn managed_users_take_the_operators_hashes_and_their_credentials_secrets_app_id() {
    let yaml = |app_secret: &str| {
        format!(
            "apiVersion: smsgw.io/v1alpha1\nkind: User\nmetadata: {{name: bob}}\nspec: {{email: bob@example.com, appName: b, password: 'bob password 1'}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: bob-credentials}}\nstringData: {{appId: app-bob, appSecret: '{app_secret}'}}\n"
        )
    };
    let mut hashes = std::collections::HashMap::new();
    for secret in ["bob password 1", "app secret 1", "app secret 2"] {
        hashes.insert(secret, password::hash(secret.into()).await.unwrap());
    }
    let wire = |app_secret: &str| {
        smsgw_crds::compile_manifests(&yaml(app_secret))
            .unwrap()
            .for_proxies(|s| hashes[s.secret].clone())
    };
    let snap = wire("app secret 1");
    let (_d, s) = state(snap.clone(), None);
    s.auth.sync_managed_users(&snap).await.unwrap();
    let u = s
        .auth
        .store()
        .by_email("bob@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(u.app_id, "app-bob");
    assert_eq!(u.password_hash, hashes["bob password 1"]);
    assert_eq!(u.secret_hash, hashes["app secret 1"]);
    s.auth
        .login("bob@example.com", "bob password 1", "", None)
        .await
        .unwrap();
    let t = s.auth.token("app-bob", "app secret 1", None).await.unwrap();
    let h = headers(&[
        ("authorization", &format!("Bearer {}", t.token)),
        ("x-app-id", "app-bob"),
    ]);
    assert!(s.auth.authenticate(&h).await.is_ok());

    // Applied again: nothing changes.
    s.auth.sync_managed_users(&snap).await.unwrap();
    assert_eq!(
        s.auth.store().get(&u.user_id).await.unwrap(),
        Some(u.clone())
    );

    // The Secret's appSecret changed: the new one works, the old one and
    // its tokens do not.
    let rotated = wire("app secret 2");
    s.auth.sync_managed_users(&rotated).await.unwrap();
    assert!(s.auth.token("app-bob", "app secret 1", None).await.is_err());
    s.auth.token("app-bob", "app secret 2", None).await.unwrap();
    assert!(matches!(
        s.auth.authenticate(&h).await,
        Err(ApiError::Unauthenticated(m)) if m.contains("revoked")
    ));

    // The plain form (a standalone file) of the same secrets changes nothing.
    let stored = s.auth.store().get(&u.user_id).await.unwrap();
    let plain = smsgw_crds::compile_manifests(&yaml("app secret 2")).unwrap();
    s.auth.sync_managed_users(&plain).await.unwrap();
    assert_eq!(s.auth.store().get(&u.user_id).await.unwrap(), stored);
}

#[tokio::test]
async fn registered_users_are_untouched_by_configuration_sync() {
    let (_d, s) = state(Snapshot::default(), None);
    let (r, _) = registered(&s.auth, "g@example.com").await;
    s.auth
        .sync_managed_users(&Snapshot::default())
        .await
        .unwrap();
    assert!(s.auth.store().get(&r.user_id).await.unwrap().is_some());
}

#[tokio::test]
async fn a_reset_secret_or_a_deleted_user_ends_its_tokens() {
    let (_d, s) = state(Snapshot::default(), None);
    let (r, t) = registered(&s.auth, "revoke@example.com").await;
    let h = headers(&[
        ("authorization", &format!("Bearer {}", t.token)),
        ("x-app-id", &r.app_id),
    ]);
    assert!(s.auth.authenticate(&h).await.is_ok());
    s.auth.reset_secret(&r.user_id).await.unwrap();
    match s.auth.authenticate(&h).await {
        Err(ApiError::Unauthenticated(m)) => assert!(m.contains("revoked"), "{m}"),
        other => panic!("{other:?}"),
    }
    // A token issued after the reset works, until the user is deleted.
    let t = s
        .auth
        .login("revoke@example.com", "long enough pw", "", None)
        .await
        .unwrap();
    let h = headers(&[
        ("authorization", &format!("Bearer {}", t.token)),
        ("x-app-id", &r.app_id),
    ]);
    assert!(s.auth.authenticate(&h).await.is_ok());
    s.auth.store().delete(&r.user_id).await.unwrap();
    s.auth.forget(&r.user_id);
    match s.auth.authenticate(&h).await {
        Err(ApiError::Unauthenticated(m)) => assert!(m.contains("no longer exists"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_webhook_secret_is_derived_not_stored() {
    let (_d, s) = state(Snapshot::default(), None);
    let (stored, secret) = s.auth.new_webhook_secret("usr_1");
    assert!(!stored.contains(&secret));
    assert_eq!(
        s.auth.webhook_secret("usr_1", &stored),
        Some(secret.clone())
    );
    assert_ne!(s.auth.webhook_secret("usr_2", &stored), Some(secret));
    // Records from before keep their stored secret.
    assert_eq!(
        s.auth.webhook_secret("usr_1", "plain"),
        Some("plain".into())
    );
    assert_eq!(s.auth.webhook_secret("usr_1", "derived:v1:gone:abc"), None);
}

/// The embedded user store, counting `get`s and answering each 50 ms after
/// it read (a store across the network), so that requests overlap.
/// An authenticator over `auth`'s user store whose every read takes
/// `hold`, and that store (it counts the reads).
fn slow_auth(auth: &Auth, hold: Duration) -> (Arc<SlowGets>, Arc<Auth>) {
    let slow = Arc::new(SlowGets {
        inner: auth.store().clone(),
        gets: Default::default(),
        hold,
    });
    let auth = Arc::new(Auth::new(
        AuthConfig::new(jwt::KeySet::single("test", vec![42u8; 32]), None),
        slow.clone(),
    ));
    (slow, auth)
}

struct SlowGets {
    inner: Arc<dyn UserStore>,
    gets: std::sync::atomic::AtomicUsize,
    /// How long each read takes.
    hold: Duration,
}

#[async_trait::async_trait]
impl UserStore for SlowGets {
    async fn create(&self, user: &UserRecord) -> Result<(), smsgw_core::users::StoreError> {
        self.inner.create(user).await
    }
    async fn update(&self, user: &UserRecord) -> Result<(), smsgw_core::users::StoreError> {
        self.inner.update(user).await
    }
    async fn delete(&self, user_id: &str) -> Result<bool, smsgw_core::users::StoreError> {
        self.inner.delete(user_id).await
    }
    async fn get(
        &self,
        user_id: &str,
    ) -> Result<Option<UserRecord>, smsgw_core::users::StoreError> {
        self.gets.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let user = self.inner.get(user_id).await;
        tokio::time::sleep(self.hold).await;
        user
    }
    async fn by_email(
        &self,
        email: &str,
    ) -> Result<Option<UserRecord>, smsgw_core::users::StoreError> {
        self.inner.by_email(email).await
    }
    async fn by_app_id(
        &self,
        app_id: &str,
    ) -> Result<Option<UserRecord>, smsgw_core::users::StoreError> {
        self.inner.by_app_id(app_id).await
    }
    async fn list(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<UserRecord>, smsgw_core::users::StoreError> {
        self.inner.list(after, limit).await
    }
    async fn put_claim(
        &self,
        claim: &smsgw_core::claims::AddressClaim,
        max_per_app: usize,
    ) -> Result<(), smsgw_core::users::StoreError> {
        self.inner.put_claim(claim, max_per_app).await
    }
    async fn claim(
        &self,
        claim_id: &str,
    ) -> Result<Option<smsgw_core::claims::AddressClaim>, smsgw_core::users::StoreError> {
        self.inner.claim(claim_id).await
    }
    async fn claims_of_app(
        &self,
        app_id: &str,
    ) -> Result<Vec<smsgw_core::claims::AddressClaim>, smsgw_core::users::StoreError> {
        self.inner.claims_of_app(app_id).await
    }
    async fn list_claims(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<smsgw_core::claims::AddressClaim>, smsgw_core::users::StoreError> {
        self.inner.list_claims(after, limit).await
    }
    async fn approve_claim(
        &self,
        claim_id: &str,
        at: u64,
    ) -> Result<Option<smsgw_core::claims::AddressClaim>, smsgw_core::users::StoreError> {
        self.inner.approve_claim(claim_id, at).await
    }
    async fn delete_claim(
        &self,
        claim_id: &str,
        app_id: Option<&str>,
    ) -> Result<Option<smsgw_core::claims::AddressClaim>, smsgw_core::users::StoreError> {
        self.inner.delete_claim(claim_id, app_id).await
    }
}

// A burst of requests that finds a user's cached liveness expired reads the
// user store once, not once a request (16 reads were seen for a burst of
// 100 sends); a change made through this pod (`forget`) is still seen by
// the next request at once, even with a read begun before it in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_with_the_cache_expired_reads_the_user_once_and_a_change_still_shows_at_once() {
    let (_d, s) = state(Snapshot::default(), None);
    let (r, t) = registered(&s.auth, "burst@example.com").await;
    let (slow, auth) = slow_auth(&s.auth, Duration::from_millis(50));
    let h = headers(&[
        ("authorization", &format!("Bearer {}", t.token)),
        ("x-app-id", &r.app_id),
    ]);
    let burst = |auth: Arc<Auth>, h: HeaderMap| async move {
        let calls: Vec<_> = (0..100)
            .map(|_| {
                let (auth, h) = (auth.clone(), h.clone());
                tokio::spawn(async move { auth.authenticate(&h).await })
            })
            .collect();
        let mut answers = Vec::new();
        for c in calls {
            answers.push(c.await.unwrap());
        }
        answers
    };
    for a in burst(auth.clone(), h.clone()).await {
        assert!(a.is_ok(), "{a:?}");
    }
    let gets = slow.gets.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(gets, 1, "{gets} reads of the user for one burst");
    assert!(auth.reading.lock().unwrap().is_empty(), "reads left behind");

    // Tokens revoked while a read that predates it is in flight.
    auth.forget(&r.user_id);
    let before = {
        let (auth, h) = (auth.clone(), h.clone());
        tokio::spawn(async move { auth.authenticate(&h).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut user = s.auth.store().get(&r.user_id).await.unwrap().unwrap();
    user.token_generation += 1;
    s.auth.store().update(&user).await.unwrap();
    auth.forget(&r.user_id);
    assert!(before.await.unwrap().is_ok(), "read before the change");
    for a in burst(auth.clone(), h).await {
        assert!(
            matches!(a, Err(ApiError::Unauthenticated(_))),
            "a revoked token passed: {a:?}"
        );
    }
}

// The reads in flight are a reported memory structure with a bound: past
// `SHARED_READS` users at once a request reads on its own, and every read
// leaves the map when it is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_reads_in_flight_are_reported_and_bounded() {
    let (_d, s) = state(Snapshot::default(), None);
    let (slow, auth) = slow_auth(&s.auth, Duration::from_secs(5));
    let reads = |auth: &Auth| {
        auth.memory()
            .into_iter()
            .find(|m| m.structure == "auth_liveness_reads")
            .expect("reported")
    };
    let calls: Vec<_> = (0..=SHARED_READS)
        .map(|i| {
            let auth = auth.clone();
            tokio::spawn(async move { auth.liveness(&format!("usr_{i}")).await })
        })
        .collect();
    let started = std::time::Instant::now();
    while slow.gets.load(std::sync::atomic::Ordering::SeqCst) <= SHARED_READS {
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "the reads did not all start"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let m = reads(&auth);
    assert_eq!(
        (m.entries, m.capacity, m.evicted),
        (SHARED_READS as u64, SHARED_READS as u64, 1)
    );
    assert!(m.bytes >= 2 * 5 * SHARED_READS as u64, "{} bytes", m.bytes);
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap(), None);
    }
    assert_eq!(reads(&auth).entries, 0);
}
