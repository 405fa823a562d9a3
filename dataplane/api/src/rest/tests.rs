use super::*;
use crate::testing::{ADMIN_KEY, state};
use axum::body::Body;
use axum::http::StatusCode;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

mod openapi;

async fn send(
    app: &Router,
    req: axum::http::Request<Body>,
) -> (StatusCode, Value, axum::http::HeaderMap) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        headers,
    )
}

fn post(path: &str) -> axum::http::request::Builder {
    axum::http::Request::post(path).header(header::CONTENT_TYPE, "application/json")
}

/// Registers a user and returns (app, bearer header value, app id).
async fn user_app() -> (tempfile::TempDir, Router, String, String) {
    let (dir, s) = state(smsgw_crds::Snapshot::default(), Some(ADMIN_KEY));
    let app = router(s);
    let reg = json!({"email": "u@example.com", "password": "long enough pw", "app_name": "a"})
        .to_string();
    let (status, r, _) = send(
        &app,
        post("/api/v1/auth/register").body(Body::from(reg)).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{r}");
    let login =
        json!({"email": "u@example.com", "password": "long enough pw", "app_id": r["app_id"]})
            .to_string();
    let (status, t, _) = send(
        &app,
        post("/api/v1/auth/login").body(Body::from(login)).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{t}");
    (
        dir,
        app,
        format!("Bearer {}", t["token"].as_str().unwrap()),
        r["app_id"].as_str().unwrap().to_owned(),
    )
}

async fn check(
    app: &Router,
    bearer: &str,
    app_id: &str,
    body: impl Into<Body>,
) -> (StatusCode, Value) {
    let req = axum::http::Request::post("/api/v1/sms/check-text-len")
        .header(header::AUTHORIZATION, bearer)
        .header("x-app-id", app_id)
        .body(body.into())
        .unwrap();
    let (s, v, _) = send(app, req).await;
    (s, v)
}

#[tokio::test]
async fn check_text_len_answers_with_the_analysis() {
    let (_d, app, bearer, app_id) = user_app().await;
    let (status, body) = check(
        &app,
        &bearer,
        &app_id,
        json!({"message": "Привет"}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({
            "encoding": "UCS2", "characters": 6, "units": 6, "segments": 1, "per_segment": 70,
            "utf16_units": 6, "graphemes": 6, "national_locking": null, "national_single": null,
            "concatenation": "udh8", "split_by_smsc": false,
            "parts": [{"characters": 6, "graphemes": 6, "units": 6}]
        })
    );
}

#[tokio::test]
async fn check_text_len_without_a_token_is_401() {
    let (_d, app, _bearer, app_id) = user_app().await;
    let req = axum::http::Request::post("/api/v1/sms/check-text-len")
        .header("x-app-id", app_id)
        .body(Body::from(json!({"message": "hi"}).to_string()))
        .unwrap();
    let (status, body, _) = send(&app, req).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthenticated");
}

#[tokio::test]
async fn a_missing_message_is_a_400_naming_the_field() {
    let (_d, app, bearer, app_id) = user_app().await;
    let (status, body) = check(&app, &bearer, &app_id, "{}").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_argument");
    assert_eq!(body["error"]["field"], "message");
    assert_eq!(body["error"]["message"], "message: is required");
}

#[tokio::test]
async fn invalid_json_is_a_400_saying_so() {
    let (_d, app, bearer, app_id) = user_app().await;
    let (status, body) = check(&app, &bearer, &app_id, "{\"message\": ").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid JSON"),
        "{body}"
    );
    let (status, body) = check(&app, &bearer, &app_id, "{\"message\": 5}").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid request"),
        "{body}"
    );
}

#[tokio::test]
async fn a_one_mebibyte_message_is_a_413_with_a_json_body() {
    let (_d, app, bearer, app_id) = user_app().await;
    let big = json!({"message": "a".repeat(1 << 20)}).to_string();
    let (status, body) = check(&app, &bearer, &app_id, big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"]["code"], "payload_too_large");
}

#[tokio::test]
async fn register_refuses_bad_fields_and_duplicates_with_specific_statuses() {
    let (_d, app, _, _) = user_app().await;
    for (body, status, field) in [
        (
            json!({"email": "x", "password": "long enough pw", "app_name": "a"}),
            400,
            Some("email"),
        ),
        (
            json!({"email": "v@example.com", "password": "short", "app_name": "a"}),
            400,
            Some("password"),
        ),
        (
            json!({"password": "long enough pw", "app_name": "a"}),
            400,
            Some("email"),
        ),
        (
            json!({"email": "u@example.com", "password": "long enough pw", "app_name": "a"}),
            409,
            None,
        ),
    ] {
        let (s, v, _) = send(
            &app,
            post("/api/v1/auth/register")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await;
        assert_eq!(s.as_u16(), status, "{v}");
        if let Some(f) = field {
            assert_eq!(v["error"]["field"], f);
        }
    }
}

#[tokio::test]
async fn too_many_failed_logins_get_429_with_retry_after() {
    let (_d, app, _, _) = user_app().await;
    let bad = json!({"email": "u@example.com", "password": "not the password"}).to_string();
    for _ in 0..5 {
        let (s, _, _) = send(
            &app,
            post("/api/v1/auth/login")
                .body(Body::from(bad.clone()))
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let (s, v, h) = send(
        &app,
        post("/api/v1/auth/login").body(Body::from(bad)).unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    let retry: u64 = h[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
}

#[tokio::test]
async fn admin_routes_need_the_admin_key_or_an_admin_and_never_show_hashes() {
    let (_d, app, bearer, app_id) = user_app().await;
    let list = |h: Option<(&'static str, String)>| {
        let mut b = axum::http::Request::get("/api/v1/admin/users");
        if let Some((k, v)) = h {
            b = b.header(k, v);
        }
        b.body(Body::empty()).unwrap()
    };
    let (s, v, _) = send(&app, list(Some(("x-admin-key", ADMIN_KEY.into())))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["users"][0]["email"], "u@example.com");
    let text = v.to_string();
    assert!(!text.contains("argon2") && !text.contains("hash"), "{text}");

    assert_eq!(
        send(&app, list(Some(("x-admin-key", "nope".into()))))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(send(&app, list(None)).await.0, StatusCode::UNAUTHORIZED);
    let req = axum::http::Request::get("/api/v1/admin/users")
        .header(header::AUTHORIZATION, &bearer)
        .header("x-app-id", &app_id)
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, req).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn admin_calls_with_an_unset_admin_key_answer_503() {
    let (_d, s) = state(smsgw_crds::Snapshot::default(), None);
    let app = router(s);
    let req = axum::http::Request::get("/api/v1/admin/users")
        .header("x-admin-key", "x")
        .body(Body::empty())
        .unwrap();
    let (s, v, _) = send(&app, req).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ADMIN_API_KEY")
    );
}

#[tokio::test]
async fn admin_config_is_redacted() {
    let snap = smsgw_crds::compile_manifests(include_str!("../../../../examples/standalone.yaml"))
        .unwrap();
    let (_d, s) = state(snap, Some(ADMIN_KEY));
    let app = router(s);
    let req = axum::http::Request::get("/api/v1/admin/config")
        .header("x-admin-key", ADMIN_KEY)
        .body(Body::empty())
        .unwrap();
    let (status, v, _) = send(&app, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["links"]["local-sim"]["password"], "***");
}

#[tokio::test]
async fn unknown_routes_are_a_json_404() {
    let (_d, s) = state(smsgw_crds::Snapshot::default(), None);
    let app = router(s);
    let (status, v, _) = send(
        &app,
        axum::http::Request::get("/nope")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["code"], "not_found");
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let (_d, app, bearer, app_id) = user_app().await;
    check(&app, &bearer, &app_id, "{}").await;
    let resp = app
        .oneshot(
            axum::http::Request::get("/metrics")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains("smsgw_http_requests_total{route=\"/api/v1/sms/check-text-len\",method=\"POST\",status=\"400\"} 1"),
        "{text}"
    );
}
