//! Answering as the platform smsgw replaces did (issue 19, responses):
//! `--compat-platform-responses` and `--public-dashboard`, on a real
//! gateway, against the default behaviour.

use crate::dashboard::dashboard as get;
use crate::harness::{ADMIN_KEY, Gateway, Sim, ready, sim_config};
use reqwest::Method;
use serde_json::json;
use smsgw_proto::sms::v1::{MessageStatus, SmsRequest, sms_service_client::SmsServiceClient};

fn request(esme: &str, transaction_id: &str) -> SmsRequest {
    SmsRequest {
        transaction_id: transaction_id.into(),
        esme: esme.into(),
        saddr: "12345".into(),
        daddr: "4915100000001".into(),
        message: "compat".into(),
        task_id: "compat-campaign".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn by_default_a_refused_grpc_send_is_an_error_status_and_the_dashboard_needs_credentials() {
    let sim = Sim::start("127.0.0.1:0");
    let gw = Gateway::standalone(&sim_config(sim.addr));
    let creds = ready(&gw, "compat-off@example.com").await;
    let mut c = SmsServiceClient::new(gw.channel().await);
    let e = c
        .send_message(creds.grpc(request("nowhere", "off-1")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let http = reqwest::Client::new();
    let (s, _) = get(http.get(gw.url("/dashboard/stats"))).await;
    assert_eq!(s, 401, "the dashboard needs credentials by default");
}

#[tokio::test]
async fn with_the_compat_settings_a_refused_grpc_send_is_a_platform_sms_response_and_the_dashboard_is_public()
 {
    let sim = Sim::start("127.0.0.1:0");
    // One setting by flag, the other by its environment variable.
    let gw = Gateway::spawn(
        &sim_config(sim.addr),
        &[
            ("ADMIN_API_KEY", ADMIN_KEY),
            ("SMSGW_PUBLIC_DASHBOARD", "true"),
        ],
        &["--compat-platform-responses"],
    );
    let creds = ready(&gw, "compat-on@example.com").await;
    let mut c = SmsServiceClient::new(gw.channel().await);

    // Unknown esme: status OK, SmsResponse{success: false, error, esme}.
    let r = c
        .send_message(creds.grpc(request("nowhere", "on-1")))
        .await
        .expect("a refused send is answered with status OK")
        .into_inner();
    assert!(!r.success, "{r:?}");
    assert!(!r.error.is_empty(), "{r:?}");
    assert_eq!(
        (
            r.esme.as_str(),
            r.error_code.as_str(),
            r.transaction_id.as_str()
        ),
        ("nowhere", "unknown_target", "on-1"),
        "{r:?}"
    );
    assert_eq!(r.status, MessageStatus::Rejected as i32);
    assert!(r.message_id.is_empty(), "{r:?}");
    // An invalid destination likewise.
    let r = c
        .send_message(creds.grpc(SmsRequest {
            daddr: "not a number".into(),
            ..request("default", "on-2")
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.success, r.esme.as_str()), (false, "default"), "{r:?}");
    assert!(!r.error_code.is_empty() && !r.error.is_empty(), "{r:?}");
    // An accepted send is unchanged.
    let r = c
        .send_message(creds.grpc(request("default", "on-3")))
        .await
        .unwrap()
        .into_inner();
    assert!(r.success && !r.message_id.is_empty(), "{r:?}");
    // Failed authentication stays a gRPC status.
    let mut bad = creds.grpc(request("default", "on-4"));
    bad.metadata_mut()
        .insert("authorization", "Bearer x.y.z".parse().unwrap());
    let e = c.send_message(bad).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    // A refusal is still counted under its gRPC code.
    let m = gw.metrics().await;
    assert!(
        m.lines().any(|l| l.contains("SendMessage")
            && l.contains("InvalidArgument")
            && !l.starts_with('#')),
        "a refused send is counted with its gRPC code"
    );

    // REST answers a refused send as the platform's SmsResponse in JSON,
    // with smsgw's HTTP status; other routes keep smsgw's error shape.
    let (s, v) = get(
        gw.authed(&creds, Method::POST, "/api/v1/sms/send")
            .json(&json!({"esme": "nowhere", "source": "SMSGW", "destination": "+4915100000002", "message": "hi", "transaction_id": "rest-1"})),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(
        (
            &v["success"],
            &v["esme"],
            &v["error_code"],
            &v["transaction_id"]
        ),
        (
            &json!(false),
            &json!("nowhere"),
            &json!("unknown_target"),
            &json!("rest-1")
        ),
        "{v}"
    );
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("nowhere")),
        "{v}"
    );
    // A body that is not JSON is refused the same way.
    let (s, v) = get(gw
        .authed(&creds, Method::POST, "/api/v1/sms/send")
        .header("content-type", "application/json")
        .body("{not json"))
    .await;
    assert_eq!((s, &v["success"]), (400, &json!(false)), "{v}");
    assert!(v["error"].is_string() && v["error_code"].is_string(), "{v}");
    // An accepted REST send is unchanged.
    let (s, v) = get(
        gw.authed(&creds, Method::POST, "/api/v1/sms/send")
            .json(&json!({"esme": "default", "source": "SMSGW", "destination": "+4915100000002", "message": "hi", "transaction_id": "rest-2"})),
    )
    .await;
    assert_eq!((s, &v["success"]), (200, &json!(true)), "{v}");
    // Other routes keep smsgw's shape.
    let (s, v) = get(gw.authed(&creds, Method::GET, "/api/v1/sms/no-such-message")).await;
    assert_eq!((s, &v["error"]["code"]), (404, &json!("not_found")), "{v}");

    // The dashboard answers without credentials, every app's campaigns.
    let http = reqwest::Client::new();
    let (s, v) = get(http.get(gw.url("/dashboard/stats"))).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["requests"]["total"].is_u64(), "{v}");
    assert!(
        v["top_campaigns"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["task_id"] == "compat-campaign"),
        "{v}"
    );
    // Credentials sent are still checked.
    let (s, _) = get(http
        .get(gw.url("/dashboard/stats"))
        .header("authorization", "Bearer x.y.z")
        .header("x-app-id", &creds.app_id))
    .await;
    assert_eq!(s, 401);
    let (s, _) = get(gw.authed(&creds, Method::GET, "/dashboard/stats")).await;
    assert_eq!(s, 200);
}
