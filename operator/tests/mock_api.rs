//! Reconcile steps against a mocked API server (tower-test), as kube-rs'
//! controller-rs `fixtures.rs` does: each test scripts the requests it
//! expects and the answers, in order, and fails on any other request.

use smsgw_leases::testing as common;

use http::{Method, StatusCode};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::Api;
use smsgw_crds::{SmppLink, User};
use smsgw_operator::credentials::ensure_credentials;
use smsgw_operator::hub::{Hub, PodAck};
use smsgw_operator::leader::LeaderElector;
use smsgw_operator::status::{StatusInputs, link_status, write_status};
use std::time::Duration;

fn link(name: &str) -> SmppLink {
    let mut l = SmppLink::new(
        name,
        serde_json::from_value(serde_json::json!({
            "host": "smsc", "port": 2775, "systemId": "smsgw", "sessions": 2
        }))
        .unwrap(),
    );
    l.metadata.namespace = Some("smsgw".into());
    l.metadata.generation = Some(3);
    l
}

fn user(name: &str, generate: bool) -> User {
    let mut u = User::new(
        name,
        serde_json::from_value(serde_json::json!({
            "email": format!("{name}@example.com"), "appName": "a", "generatePassword": generate
        }))
        .unwrap(),
    );
    u.metadata.namespace = Some("smsgw".into());
    u.metadata.uid = Some("uid-1".into());
    u
}

#[tokio::test]
async fn a_link_rejected_by_a_pod_gets_accepted_false_written_to_its_status() {
    let (hub, _rejections) = Hub::new();
    hub.upsert(smsgw_crds::Resource::from(&link("sim")));
    hub.set_ready_pods(["proxy-0".to_owned()].into());
    let version = hub.current().snapshot.as_ref().unwrap().version.clone();
    hub.record_ack(
        "proxy-0",
        PodAck {
            version,
            applied: false,
            error: "cannot resolve host smsc".into(),
            resource: "SmppLink/smsgw/sim".into(),
        },
    );
    let inputs = StatusInputs {
        errors: hub.compile_errors(),
        acks: hub.acks(),
        published: hub.current(),
        lease_holders: [("smsgw-sim-slot-0".to_owned(), "proxy-0".to_owned())].into(),
    };
    let obj = link("sim");
    let now = Time(Timestamp::now());
    let status = link_status(
        &inputs,
        "sim",
        &obj.spec,
        obj.metadata.generation,
        None,
        &now,
    );

    let (client, mut handle) = common::mock_client();
    let api: Api<SmppLink> = Api::namespaced(client, "smsgw");
    let server = tokio::spawn(async move {
        common::expect(
            &mut handle,
            Method::PATCH,
            "/apis/smsgw.io/v1alpha1/namespaces/smsgw/smpplinks/sim/status",
            StatusCode::OK,
            serde_json::to_value(link("sim")).unwrap(),
        )
        .await
    });
    assert!(write_status(&api, "sim", None, &status).await.unwrap());
    let body = server.await.unwrap();
    let st = &body["status"];
    assert_eq!(st["observedGeneration"], 3);
    assert_eq!(st["boundSessions"], 1);
    assert_eq!(st["sessions"][0]["pod"], "proxy-0");
    assert_eq!(st["sessions"][0]["bound"], true);
    assert_eq!(st["sessions"][1]["bound"], false);
    let accepted = st["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Accepted")
        .unwrap();
    assert_eq!(accepted["status"], "False");
    assert_eq!(accepted["reason"], "RejectedByPod");
    assert!(
        accepted["message"]
            .as_str()
            .unwrap()
            .contains("cannot resolve host smsc")
    );
}

#[tokio::test]
async fn an_unchanged_status_is_not_written() {
    let (client, _handle) = common::mock_client();
    let api: Api<SmppLink> = Api::namespaced(client, "smsgw");
    let status = smsgw_crds::SmppLinkStatus::default();
    // A request would hang on the mock with no answer; none is made.
    let wrote = tokio::time::timeout(
        Duration::from_secs(1),
        write_status(&api, "sim", Some(&status), &status),
    )
    .await
    .expect("no request made")
    .unwrap();
    assert!(!wrote);
}

#[tokio::test]
async fn a_users_credentials_secret_is_created_owned_by_the_user() {
    let (client, mut handle) = common::mock_client();
    let secrets: Api<Secret> = Api::namespaced(client, "smsgw");
    let u = user("bob", true);
    let server = tokio::spawn(async move {
        common::expect(
            &mut handle,
            Method::GET,
            "/api/v1/namespaces/smsgw/secrets/bob-credentials",
            StatusCode::NOT_FOUND,
            common::not_found(),
        )
        .await;
        common::expect(
            &mut handle,
            Method::POST,
            "/api/v1/namespaces/smsgw/secrets",
            StatusCode::CREATED,
            serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bob-credentials"}}),
        )
        .await
    });
    let name = ensure_credentials(&secrets, &u).await.unwrap();
    assert_eq!(name, Ok("bob-credentials".to_owned()));
    let created = server.await.unwrap();
    let owner = &created["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "User");
    assert_eq!(owner["name"], "bob");
    assert_eq!(owner["uid"], "uid-1");
    assert_eq!(owner["controller"], true);
    let data = &created["stringData"];
    assert!(data["appId"].as_str().unwrap().starts_with("app-"));
    assert_eq!(data["appSecret"].as_str().unwrap().len(), 40);
    assert_eq!(data["password"].as_str().unwrap().len(), 24);
}

#[tokio::test]
async fn an_existing_complete_credentials_secret_is_left_alone() {
    let (client, mut handle) = common::mock_client();
    let secrets: Api<Secret> = Api::namespaced(client, "smsgw");
    let u = user("alice", false);
    let server = tokio::spawn(async move {
        common::expect(
            &mut handle,
            Method::GET,
            "/api/v1/namespaces/smsgw/secrets/alice-credentials",
            StatusCode::OK,
            serde_json::json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "alice-credentials"},
                "data": {"appId": "YQ==", "appSecret": "Yg=="}}),
        )
        .await;
        // Any further request fails the test.
        common::no_more_requests(&mut handle, "no write expected").await
    });
    assert_eq!(
        ensure_credentials(&secrets, &u).await.unwrap(),
        Ok("alice-credentials".to_owned())
    );
    server.await.unwrap();
    assert_eq!(u.name_any(), "alice");
}

/// A User naming an existing Secret (`spec.existingCredentialsSecret`).
fn imported_user(name: &str, secret: &str) -> User {
    let mut u = User::new(
        name,
        serde_json::from_value(serde_json::json!({
            "email": format!("{name}@example.com"), "appName": "legacy",
            "existingCredentialsSecret": secret
        }))
        .unwrap(),
    );
    u.metadata.namespace = Some("smsgw".into());
    u.metadata.uid = Some("uid-2".into());
    u
}

/// An argon2id PHC string of `password`, as the platform's import brings.
fn imported_hash(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    argon2::Argon2::default()
        .hash_password(
            password.as_bytes(),
            &SaltString::encode_b64(b"imported-salt-16").unwrap(),
        )
        .unwrap()
        .to_string()
}

fn verifies(secret: &str, phc: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    argon2::Argon2::default()
        .verify_password(secret.as_bytes(), &PasswordHash::new(phc).unwrap())
        .is_ok()
}

#[tokio::test]
async fn a_user_naming_an_existing_secret_gets_its_credentials_pushed_and_the_secret_left_alone() {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let hash = imported_hash("carol's old password");
    let stored = serde_json::json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "carol-legacy", "namespace": "smsgw"},
        "data": {"appId": b64("legacy-app-42"), "appSecret": b64("legacy secret 42"),
                 "passwordHash": b64(&hash)}});
    let (client, mut handle) = common::mock_client();
    let secrets: Api<Secret> = Api::namespaced(client, "smsgw");
    let u = imported_user("carol", "carol-legacy");
    let answer = stored.clone();
    let server = tokio::spawn(async move {
        common::expect(
            &mut handle,
            Method::GET,
            "/api/v1/namespaces/smsgw/secrets/carol-legacy",
            StatusCode::OK,
            answer,
        )
        .await;
        // Not owned by the User: no create, patch, update or delete.
        common::no_more_requests(&mut handle, "the existing Secret is only read").await
    });
    let state = ensure_credentials(&secrets, &u).await.unwrap();
    server.await.unwrap();
    assert_eq!(state, Ok("carol-legacy".to_owned()));

    // What the proxies get: the Secret's app id, its secret as a hash that
    // verifies it, and the imported password hash as it is.
    let (hub, _rejections) = Hub::new();
    hub.upsert(smsgw_crds::Resource::from(&u));
    let secret: Secret = serde_json::from_value(stored).unwrap();
    hub.upsert(smsgw_crds::Resource::from(&secret));
    let published = hub.current();
    let snap = published.snapshot.as_ref().unwrap();
    assert!(
        hub.compile_errors().is_empty(),
        "{:?}",
        hub.compile_errors()
    );
    let creds = &snap.app_credentials["carol"];
    assert_eq!(creds.app_id, "legacy-app-42");
    assert_eq!(creds.app_secret, "", "the secret itself never travels");
    assert!(verifies(
        "legacy secret 42",
        creds.app_secret_hash.as_deref().unwrap()
    ));
    assert_eq!(snap.password_hashes["carol"], hash);
    assert!(snap.users.contains_key("carol"));
}

#[tokio::test]
async fn a_missing_or_incomplete_existing_secret_is_reported_and_never_created_or_completed() {
    let (client, mut handle) = common::mock_client();
    let secrets: Api<Secret> = Api::namespaced(client, "smsgw");
    let u = imported_user("dave", "dave-legacy");
    let server = tokio::spawn(async move {
        common::expect(
            &mut handle,
            Method::GET,
            "/api/v1/namespaces/smsgw/secrets/dave-legacy",
            StatusCode::NOT_FOUND,
            common::not_found(),
        )
        .await;
        common::no_more_requests(&mut handle, "a missing existing Secret is not created").await
    });
    let (reason, message) = ensure_credentials(&secrets, &u).await.unwrap().unwrap_err();
    server.await.unwrap();
    assert_eq!(reason, "CredentialsSecretNotFound");
    assert!(message.contains("Secret dave-legacy"), "{message}");

    let (client, mut handle) = common::mock_client();
    let secrets: Api<Secret> = Api::namespaced(client, "smsgw");
    let server = tokio::spawn(async move {
        common::expect(
            &mut handle,
            Method::GET,
            "/api/v1/namespaces/smsgw/secrets/dave-legacy",
            StatusCode::OK,
            serde_json::json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "dave-legacy"}, "data": {"appId": "YQ=="}}),
        )
        .await;
        common::no_more_requests(
            &mut handle,
            "an incomplete existing Secret is not completed",
        )
        .await
    });
    let (reason, message) = ensure_credentials(&secrets, &u).await.unwrap().unwrap_err();
    server.await.unwrap();
    assert_eq!(reason, "CredentialsKeyMissing");
    assert!(message.ends_with("has no key appSecret"), "{message}");
}

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/smsgw/leases";
const LEADER: &str = "/apis/coordination.k8s.io/v1/namespaces/smsgw/leases/leader";

/// `identity`'s `try_acquire_or_renew` of the "leader" Lease against a
/// mocked API server that answers the GET with the Lease `stored` (holder,
/// renewed that many seconds before the answer; `None`: 404), then expects
/// `write` (method, path, answered with that status and the Lease as
/// `identity` holds it now), or no further request when `None`. Returns
/// whether it leads and the body written (`Null` without a write).
async fn elect(
    identity: &'static str,
    stored: Option<(&'static str, i64)>,
    write: Option<(Method, &'static str, StatusCode)>,
) -> (bool, serde_json::Value) {
    let (client, mut handle) = common::mock_client();
    let e = LeaderElector::new(
        Api::namespaced(client, "smsgw"),
        "leader",
        identity,
        Duration::from_secs(15),
    );
    let server = tokio::spawn(async move {
        let (status, answer) = match stored {
            None => (StatusCode::NOT_FOUND, common::not_found()),
            Some((holder, secs)) => {
                let renewed = Timestamp::now() - SignedDuration::from_secs(secs);
                (StatusCode::OK, common::lease("leader", holder, renewed))
            }
        };
        common::expect(&mut handle, Method::GET, LEADER, status, answer).await;
        match write {
            Some((method, path, status)) => {
                let answer = common::lease("leader", identity, Timestamp::now());
                common::expect(&mut handle, method, path, status, answer).await
            }
            None => {
                common::no_more_requests(&mut handle, "no write expected").await;
                serde_json::Value::Null
            }
        }
    });
    let leads = e.try_acquire_or_renew().await.unwrap();
    (leads, server.await.unwrap())
}

#[tokio::test]
async fn leader_election_creates_a_missing_lease() {
    let (leads, sent) = elect(
        "op-a",
        None,
        Some((Method::POST, LEASES, StatusCode::CREATED)),
    )
    .await;
    assert!(leads);
    assert_eq!(sent["spec"]["holderIdentity"], "op-a");
    assert_eq!(sent["spec"]["leaseDurationSeconds"], 15);
}

#[tokio::test]
async fn leader_election_leaves_a_fresh_lease_of_another_replica_alone() {
    // No write to a lease held by another.
    let (leads, _) = elect("op-b", Some(("op-a", 0)), None).await;
    assert!(!leads);
}

#[tokio::test]
async fn leader_election_takes_over_an_expired_lease() {
    let (leads, sent) = elect(
        "op-b",
        Some(("op-a", 60)),
        Some((Method::PUT, LEADER, StatusCode::OK)),
    )
    .await;
    assert!(leads);
    assert_eq!(sent["spec"]["holderIdentity"], "op-b");
    assert_eq!(
        sent["metadata"]["resourceVersion"], "7",
        "optimistic concurrency"
    );
    assert_eq!(sent["spec"]["leaseTransitions"], 1);
}
