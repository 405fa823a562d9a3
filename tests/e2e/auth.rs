//! Authentication and the admin API over the real binary: REST and gRPC.

use crate::harness::{ADMIN_KEY, EXAMPLE_CONFIG, Gateway};
use reqwest::Method;
use serde_json::{Value, json};
use smsgw_proto::admin::v1::{ListUsersRequest, admin_service_client::AdminServiceClient};
use smsgw_proto::auth::v1::{
    LoginRequest, RegisterRequest, auth_service_client::AuthServiceClient,
};
use smsgw_proto::sms::v1::{CheckTextLenRequest, sms_service_client::SmsServiceClient};

#[tokio::test]
async fn register_login_call_and_the_same_call_without_a_token_is_401() {
    let gw = Gateway::standalone(EXAMPLE_CONFIG);
    let creds = gw.user("flow@example.com").await;
    let ok = gw
        .authed(&creds, Method::POST, "/api/v1/sms/check-text-len")
        .json(&json!({"message": "Hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let anon = reqwest::Client::new()
        .post(gw.url("/api/v1/sms/check-text-len"))
        .json(&json!({"message": "Hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 401);
    let body: Value = anon.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthenticated");
    // A token for another app id is refused.
    let other = gw.user("other@example.com").await;
    let wrong = reqwest::Client::new()
        .post(gw.url("/api/v1/sms/check-text-len"))
        .bearer_auth(&creds.token)
        .header("x-app-id", &other.app_id)
        .json(&json!({"message": "Hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
}

#[tokio::test]
async fn machine_tokens_come_from_app_id_and_secret() {
    let gw = Gateway::standalone(EXAMPLE_CONFIG);
    let creds = gw.user("machine@example.com").await;
    let t: Value = reqwest::Client::new()
        .post(gw.url("/api/v1/auth/token"))
        .json(&json!({"app_id": creds.app_id, "app_secret": creds.app_secret}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = t["token"].as_str().unwrap();
    let ok = reqwest::Client::new()
        .post(gw.url("/api/v1/sms/check-text-len"))
        .bearer_auth(token)
        .header("x-app-id", &creds.app_id)
        .json(&json!({"message": "Hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn admin_users_list_shows_the_user_without_password_or_secret_hash() {
    let gw = Gateway::standalone(EXAMPLE_CONFIG);
    let creds = gw.user("listed@example.com").await;
    let resp = reqwest::Client::new()
        .get(gw.url("/api/v1/admin/users"))
        .header("x-admin-key", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["users"][0]["user_id"], creds.user_id.as_str());
    assert_eq!(v["users"][0]["email"], "listed@example.com");
    for forbidden in ["argon2", "hash", "password", &creds.app_secret] {
        assert!(!text.contains(forbidden), "{forbidden:?} in {text}");
    }
    // Non-admin user: 403; wrong key: 401.
    let r = gw
        .authed(&creds, Method::GET, "/api/v1/admin/users")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = reqwest::Client::new()
        .get(gw.url("/api/v1/admin/users"))
        .header("x-admin-key", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn admin_key_calls_answer_503_when_admin_api_key_is_unset() {
    let gw = Gateway::standalone_with(EXAMPLE_CONFIG, &[]);
    let r = reqwest::Client::new()
        .get(gw.url("/api/v1/admin/users"))
        .header("x-admin-key", "anything")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
}

#[tokio::test]
async fn grpc_requires_metadata_and_serves_auth_and_admin() {
    let gw = Gateway::standalone(EXAMPLE_CONFIG);
    let channel = gw.channel().await;
    let mut auth = AuthServiceClient::new(channel.clone());
    let r = auth
        .register(RegisterRequest {
            email: "grpc@example.com".into(),
            password: "grpc password 1".into(),
            app_name: "g".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let e = auth
        .register(RegisterRequest {
            email: "grpc@example.com".into(),
            password: "grpc password 1".into(),
            app_name: "g".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists);
    let t = auth
        .login(LoginRequest {
            email: "grpc@example.com".into(),
            password: "grpc password 1".into(),
            app_id: r.app_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();

    let mut sms = SmsServiceClient::new(channel.clone());
    let e = sms
        .check_text_len(CheckTextLenRequest {
            message: "hi".into(),
            esme: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let mut req = tonic::Request::new(CheckTextLenRequest {
        message: "hi".into(),
        esme: String::new(),
    });
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", t.token).parse().unwrap(),
    );
    req.metadata_mut()
        .insert("x-app-id", r.app_id.parse().unwrap());
    assert_eq!(
        sms.check_text_len(req).await.unwrap().into_inner().encoding,
        "GSM7"
    );

    let mut admin = AdminServiceClient::new(channel);
    let mut req = tonic::Request::new(ListUsersRequest::default());
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", t.token).parse().unwrap(),
    );
    req.metadata_mut()
        .insert("x-app-id", r.app_id.parse().unwrap());
    assert_eq!(
        admin.list_users(req).await.unwrap_err().code(),
        tonic::Code::PermissionDenied
    );
    let mut req = tonic::Request::new(ListUsersRequest::default());
    req.metadata_mut()
        .insert("x-admin-key", ADMIN_KEY.parse().unwrap());
    let users = admin.list_users(req).await.unwrap().into_inner().users;
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].email, "grpc@example.com");
}

#[tokio::test]
async fn managed_users_from_the_file_log_in_and_cannot_be_deleted() {
    let managed = format!(
        "{EXAMPLE_CONFIG}---\napiVersion: smsgw.io/v1alpha1\nkind: User\nmetadata: {{name: ops}}\nspec: {{email: ops@example.com, appName: ops, admin: true, password: 'managed pw 12'}}\n"
    );
    let gw = Gateway::standalone(&managed);
    let t = reqwest::Client::new()
        .post(gw.url("/api/v1/auth/login"))
        .json(&json!({"email": "ops@example.com", "password": "managed pw 12"}))
        .send()
        .await
        .unwrap();
    assert_eq!(t.status(), 200);
    let list = gw.admin_get("/api/v1/admin/users").await;
    let id = list["users"][0]["user_id"].as_str().unwrap();
    assert_eq!(list["users"][0]["managed_by"], "ops");
    let del = reqwest::Client::new()
        .delete(gw.url(&format!("/api/v1/admin/users/{id}")))
        .header("x-admin-key", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 409);
}

#[tokio::test]
async fn no_secret_the_tests_used_appears_in_the_logs() {
    let gw = Gateway::standalone(EXAMPLE_CONFIG);
    let creds = gw.user("secrets@example.com").await;
    // Exercise failure paths too: bad logins, a bad admin key, admin actions.
    let http = reqwest::Client::new();
    http.post(gw.url("/api/v1/auth/login"))
        .json(&json!({"email": "secrets@example.com", "password": "wrong password 1"}))
        .send()
        .await
        .unwrap();
    http.get(gw.url("/api/v1/admin/users"))
        .header("x-admin-key", "wrong-key-xyz")
        .send()
        .await
        .unwrap();
    let reset: Value = http
        .post(gw.url(&format!(
            "/api/v1/admin/users/{}/reset-secret",
            creds.user_id
        )))
        .header("x-admin-key", ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let logs = gw.logs();
    assert!(
        logs.contains("admin action"),
        "admin actions are logged: {logs}"
    );
    crate::harness::assert_no_secrets(
        &logs,
        &[
            "wrong password 1",
            "wrong-key-xyz",
            creds.token.as_str(),
            creds.app_secret.as_str(),
            reset["app_secret"].as_str().unwrap(),
        ],
    );
}
