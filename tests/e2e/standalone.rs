//! The foundation's acceptance: standalone mode serving health, metrics and
//! CheckTextLen over REST and gRPC, refusing bad input and bad files.

use crate::harness::{EXAMPLE_CONFIG, Gateway, run_to_end, write_config};
use serde_json::{Value, json};
use smsgw_proto::sms::v1::{CheckTextLenRequest, sms_service_client::SmsServiceClient};

/// (message, encoding, characters, units, segments) from the issue.
type Case = (String, &'static str, Option<u32>, Option<u32>, Option<u32>);

fn acceptance_cases() -> Vec<Case> {
    vec![
        ("Hello".into(), "GSM7", Some(5), None, Some(1)),
        ("a".repeat(161), "GSM7", None, None, Some(2)),
        ("€".into(), "GSM7", None, Some(2), None),
        ("Привет".into(), "UCS2", None, Some(6), Some(1)),
        ("Ж".repeat(71), "UCS2", None, None, Some(2)),
        ("😀".into(), "UCS2", None, Some(2), None),
    ]
}

#[tokio::test]
async fn standalone_answers_health_and_check_text_len_over_rest_and_grpc() {
    let gw = Gateway::standalone(EXAMPLE_CONFIG);
    let http = reqwest::Client::new();
    let resp = http.get(gw.url("/healthy")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let creds = gw.user("texts@example.com").await;

    let mut grpc = SmsServiceClient::new(gw.channel().await);
    for (message, encoding, characters, units, segments) in acceptance_cases() {
        let rest: Value = gw
            .authed(&creds, reqwest::Method::POST, "/api/v1/sms/check-text-len")
            .json(&json!({ "message": message }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let g = grpc
            .check_text_len(creds.grpc(CheckTextLenRequest {
                message: message.clone(),
                esme: String::new(),
            }))
            .await
            .unwrap()
            .into_inner();
        let label = &message[..message.len().min(12)];
        assert_eq!(rest["encoding"], encoding, "REST {label}");
        assert_eq!(g.encoding, encoding, "gRPC {label}");
        for (name, want, r, gv) in [
            ("characters", characters, &rest["characters"], g.characters),
            ("units", units, &rest["units"], g.units),
            ("segments", segments, &rest["segments"], g.segments),
        ] {
            if let Some(want) = want {
                assert_eq!(r.as_u64(), Some(want as u64), "REST {name} of {label}");
                assert_eq!(gv, want, "gRPC {name} of {label}");
            }
        }
        assert_eq!(rest["per_segment"].as_u64(), Some(g.per_segment as u64));
    }
}

#[tokio::test]
async fn bad_rest_requests_get_specific_errors_and_the_server_stays_up() {
    let gw = Gateway::standalone(EXAMPLE_CONFIG);
    let http = reqwest::Client::new();
    let creds = gw.user("bad-rest@example.com").await;
    let cases: Vec<(String, u16, &str)> = vec![
        ("{}".into(), 400, "message: is required"),
        (
            json!({"message": ""}).to_string(),
            400,
            "message: must not be empty",
        ),
        ("{\"message\": \"unterminated".into(), 400, "invalid JSON"),
        ("not json at all".into(), 400, "invalid JSON"),
        (
            json!({"message": "x".repeat(1 << 20)}).to_string(),
            413,
            "request body larger than",
        ),
        (
            json!({"message": "hi", "esme": "ghost"}).to_string(),
            400,
            "unknown esme \"ghost\"",
        ),
    ];
    for (body, status, message) in cases {
        let resp = gw
            .authed(&creds, reqwest::Method::POST, "/api/v1/sms/check-text-len")
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status().as_u16(),
            status,
            "{}",
            &body[..body.len().min(40)]
        );
        let v: Value = resp.json().await.unwrap();
        let got = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            got.starts_with(message),
            "{got:?} should start with {message:?}"
        );
    }
    assert_eq!(
        http.get(gw.url("/healthy")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn bad_grpc_requests_get_invalid_argument_and_the_server_stays_up() {
    let gw = Gateway::standalone(EXAMPLE_CONFIG);
    let mut grpc = SmsServiceClient::new(gw.channel().await);
    let creds = gw.user("bad-grpc@example.com").await;
    let err = grpc
        .check_text_len(creds.grpc(CheckTextLenRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(err.message(), "message: must not be empty");

    let huge = CheckTextLenRequest {
        message: "x".repeat(1 << 20),
        esme: String::new(),
    };
    let err = grpc.check_text_len(creds.grpc(huge)).await.unwrap_err();
    // tonic refuses an over-limit message before our handler runs.
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");
    assert!(
        err.message().contains("message length too large"),
        "{err:?}"
    );

    let ok = grpc
        .check_text_len(creds.grpc(CheckTextLenRequest {
            message: "still here".into(),
            esme: "local-sim".into(),
        }))
        .await
        .unwrap();
    assert_eq!(ok.into_inner().segments, 1);
}

#[tokio::test]
async fn grpc_health_and_reflection_are_served() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };

    let gw = Gateway::standalone(EXAMPLE_CONFIG);
    let channel = gw.channel().await;
    let status = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: "sms.v1.SmsService".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);

    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection answer {resp:?}")
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"sms.v1.SmsService"), "{names:?}");
}

#[tokio::test]
async fn metrics_are_exposed_in_prometheus_format() {
    let gw = Gateway::standalone(EXAMPLE_CONFIG);
    let http = reqwest::Client::new();
    let creds = gw.user("metrics@example.com").await;
    gw.authed(&creds, reqwest::Method::POST, "/api/v1/sms/check-text-len")
        .json(&json!({"message": "Привет"}))
        .send()
        .await
        .unwrap();
    let text = http
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("smsgw_text_analyses_total{encoding=\"UCS2\"} 1"),
        "{text}"
    );
    assert!(text.contains("smsgw_config_links 1"), "{text}");
}

#[test]
fn sigterm_shuts_the_gateway_down_cleanly() {
    let gw = Gateway::standalone(EXAMPLE_CONFIG);
    let status = gw.terminate();
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn an_invalid_file_is_refused_naming_document_field_and_reason() {
    let bad = EXAMPLE_CONFIG.replace("- link: local-sim", "- link: nowhere");
    let file = write_config(&bad);
    let (status, stderr) = run_to_end(&["standalone", "--config", file.path().to_str().unwrap()]);
    assert!(!status.success());
    assert!(
        stderr.contains("document 2 (EsmePool \"default\"), field spec.members[0].link: no SmppLink named \"nowhere\""),
        "{stderr}"
    );
}

#[test]
fn check_config_accepts_the_example() {
    let file = write_config(EXAMPLE_CONFIG);
    let out = std::process::Command::new(crate::harness::SMSGW)
        .args(["check-config", file.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1 link(s), 1 pool(s)"), "{stdout}");
}

#[test]
fn secrets_do_not_appear_in_the_logs() {
    let gw = Gateway::standalone(EXAMPLE_CONFIG);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let logs = gw.logs();
    assert!(!logs.contains("secret\""), "{logs}");
    assert!(logs.contains("configuration loaded"), "{logs}");
}
