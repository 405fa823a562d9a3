use super::*;
use axum::body::Body;
use axum::http::StatusCode;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

async fn call(body: impl Into<Body>) -> (StatusCode, Value) {
    let app = router(ApiState::new(smsgw_crds::Snapshot::default()));
    let req = Request::post("/api/v1/sms/check-text-len")
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .unwrap();
    let resp = app.oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn check_text_len_answers_with_the_analysis() {
    let (status, body) = call(json!({"message": "Привет"}).to_string()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"encoding": "UCS2", "characters": 6, "units": 6, "segments": 1, "per_segment": 70})
    );
}

#[tokio::test]
async fn a_missing_message_is_a_400_naming_the_field() {
    let (status, body) = call("{}").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_argument");
    assert_eq!(body["error"]["field"], "message");
    assert_eq!(body["error"]["message"], "message: is required");
}

#[tokio::test]
async fn invalid_json_is_a_400_saying_so() {
    let (status, body) = call("{\"message\": ").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid JSON"),
        "{body}"
    );
    let (status, body) = call("{\"message\": 5}").await;
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
    let big = json!({"message": "a".repeat(1 << 20)}).to_string();
    let (status, body) = call(big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"]["code"], "payload_too_large");
}

#[tokio::test]
async fn unknown_routes_are_a_json_404() {
    let app = router(ApiState::new(smsgw_crds::Snapshot::default()));
    let resp = app
        .oneshot(Request::get("/nope").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let state = ApiState::new(smsgw_crds::Snapshot::default());
    let app = router(state.clone());
    let req = Request::post("/api/v1/sms/check-text-len")
        .body(Body::from("{}"))
        .unwrap();
    app.clone().oneshot(req).await.unwrap();
    let resp = app
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
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
