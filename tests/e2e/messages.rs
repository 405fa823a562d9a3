//! The message lifecycle through real processes: gateway + SMSC simulator,
//! REST, gRPC and the stream, through to receipts visible in SmsInfo.

use crate::harness::{Creds, Gateway, Sim, bound, eventually, sim_config};
use reqwest::Method;
use serde_json::{Value, json};
use smsgw_proto::admin::v1::{GetStatsRequest, admin_service_client::AdminServiceClient};
use smsgw_proto::sms::v1::{
    MessageStatus, SmsInfoRequest, SmsRequest, sms_service_client::SmsServiceClient,
};
use std::collections::HashSet;
use std::time::Duration;

pub(crate) async fn send(gw: &Gateway, creds: &Creds, body: Value) -> (u16, Value) {
    let r = gw
        .authed(creds, Method::POST, "/api/v1/sms/send")
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

pub(crate) async fn info(gw: &Gateway, creds: &Creds, id: &str) -> Value {
    gw.authed(creds, Method::GET, &format!("/api/v1/sms/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub(crate) async fn wait_status(
    gw: &Gateway,
    creds: &Creds,
    id: &str,
    want: &str,
    within: Duration,
) -> Value {
    let mut last = Value::Null;
    let ok = eventually(within, async || {
        last = info(gw, creds, id).await;
        last["status"] == want
    })
    .await;
    assert!(ok.is_some(), "message {id} never became {want}: {last}");
    last
}

#[tokio::test]
async fn a_rest_send_is_accepted_submitted_and_delivered() {
    let sim = Sim::start("127.0.0.1:0");
    let gw = Gateway::standalone(&sim_config(sim.addr));
    let creds = gw.user("rest-send@example.com").await;
    bound(&gw, &creds).await;
    let (status, r) = send(
        &gw,
        &creds,
        json!({"esme": "default", "source": "SMSGW", "destination": "+4915112345678", "message": "Hello", "transaction_id": "tx-rest-1"}),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        (
            r["success"].as_bool(),
            r["status"].as_str(),
            r["segments"].as_u64()
        ),
        (Some(true), Some("accepted"), Some(1))
    );
    let id = r["message_id"].as_str().unwrap();
    let v = wait_status(&gw, &creds, id, "delivered", Duration::from_secs(10)).await;
    assert_eq!(v["link"], "sim-link");
    let stats = gw.admin_stats().await;
    assert_eq!(stats["pools"]["default"]["submitted"], 1, "{stats}");
    // A gateway alone limits in process.
    assert_eq!(stats["limiter"]["mode"], "in_process", "{stats}");
    assert!(
        stats["limiter"]["acquires"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    assert_eq!(stats["links"]["sim-link"]["delivered"], 1, "{stats}");
    assert_eq!(stats["apps"][&creds.app_id]["delivered"], 1, "{stats}");
    assert_eq!(v["esme"], "default");
    assert_eq!(v["destination"], "4915112345678");
    assert_eq!(v["segments"][0]["receipt_state"], "DELIVRD");
    assert_eq!(v["segments"][0]["submit_status"], "accepted");
    assert!(v["segments"][0]["smsc_message_id"].is_string());
    // Lookup by transaction id.
    let by_tx: Value = gw
        .authed(&creds, Method::GET, "/api/v1/sms?transaction_id=tx-rest-1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_tx["message_id"], id);
    // Another app cannot see it.
    let other = gw.user("other-app@example.com").await;
    let r = gw
        .authed(&other, Method::GET, &format!("/api/v1/sms/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn a_repeated_transaction_id_is_the_same_message_and_another_message_under_it_is_409() {
    let sim = Sim::start("127.0.0.1:0");
    let gw = Gateway::standalone(&sim_config(sim.addr));
    let creds = gw.user("dup@example.com").await;
    bound(&gw, &creds).await;
    let body = json!({"esme": "sim-link", "source": "12345", "destination": "4915100000001", "message": "once", "transaction_id": "same-tx", "sent_at": "2026-12-07T09:30:00.250+01:00"});
    let (_, first) = send(&gw, &creds, body.clone()).await;
    let id = first["message_id"].as_str().unwrap().to_owned();
    let v = wait_status(&gw, &creds, &id, "delivered", Duration::from_secs(10)).await;
    assert_eq!(v["sent_at_ms"], 1_796_632_200_250u64, "{v}");
    // The same message again (another sent_at, a '+' more) is a repeat.
    let mut repeat = body.clone();
    repeat["sent_at"] = json!("2026-12-07T08:31:00Z");
    repeat["destination"] = json!("+4915100000001");
    let (status, second) = send(&gw, &creds, repeat).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["message_id"], id.as_str());
    assert_eq!(second["duplicate"], true);
    // The key of that message for another one is refused.
    for (field, value) in [
        ("destination", "4915100000002"),
        ("message", "twice"),
        ("source", "54321"),
    ] {
        let mut other = body.clone();
        other[field] = json!(value);
        let (status, e) = send(&gw, &creds, other).await;
        assert_eq!(
            (status, &e["error"]["code"]),
            (409, &json!("transaction_id_reused")),
            "{field}: {e}"
        );
    }
    // A malformed sent_at is refused with its own code.
    let mut bad = body.clone();
    bad["transaction_id"] = json!("bad-sent-at");
    bad["sent_at"] = json!("07/12/2026");
    let (status, e) = send(&gw, &creds, bad).await;
    assert_eq!(
        (status, &e["error"]["code"]),
        (400, &json!("invalid_sent_at")),
        "{e}"
    );
    // The first message is unchanged.
    let v = info(&gw, &creds, &id).await;
    assert_eq!(
        (&v["destination"], &v["sent_at_ms"], &v["status"]),
        (
            &json!("4915100000001"),
            &json!(1_796_632_200_250u64),
            &json!("delivered")
        ),
        "{v}"
    );

    // gRPC: sent_at in, sent_at out; a reused key is ALREADY_EXISTS.
    let mut c = SmsServiceClient::new(gw.channel().await);
    let sent_at = prost_types::Timestamp {
        seconds: 1_796_632_200,
        nanos: 250_000_000,
    };
    let req = SmsRequest {
        transaction_id: "grpc-tx".into(),
        esme: "sim-link".into(),
        saddr: "12345".into(),
        daddr: "4915100000003".into(),
        message: "grpc once".into(),
        sent_at: Some(sent_at),
        wait_for_submit: true,
        ..Default::default()
    };
    let r = c
        .send_message(creds.grpc(req.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(r.success, "{r:?}");
    let i = c
        .sms_info(creds.grpc(SmsInfoRequest {
            message_id: String::new(),
            transaction_id: "grpc-tx".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (i.message_id.as_str(), i.sent_at),
        (r.message_id.as_str(), Some(sent_at))
    );
    let e = c
        .send_message(creds.grpc(SmsRequest {
            message: "grpc twice".into(),
            ..req.clone()
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
    assert!(e.message().contains("transaction_id"), "{e:?}");
    let e = c
        .send_message(creds.grpc(SmsRequest {
            transaction_id: "grpc-bad-sent-at".into(),
            sent_at: Some(prost_types::Timestamp {
                seconds: -1,
                nanos: 0,
            }),
            ..req.clone()
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    // A message sent without sent_at shows none.
    let plain = c
        .send_message(creds.grpc(SmsRequest {
            transaction_id: "grpc-plain".into(),
            sent_at: None,
            ..req
        }))
        .await
        .unwrap()
        .into_inner();
    let i = c
        .sms_info(creds.grpc(SmsInfoRequest {
            message_id: plain.message_id,
            transaction_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(i.sent_at, None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sim.stop_and_count_submits(),
        3,
        "a repeat or a refused reuse was submitted"
    );
}

#[tokio::test]
async fn a_three_segment_message_with_receipts_out_of_order_is_delivered() {
    let sim = Sim::start_with(
        "127.0.0.1:0",
        &["--reverse-receipts", "--receipt-delay", "300ms"],
    );
    let gw = Gateway::standalone(&sim_config(sim.addr));
    let creds = gw.user("multi@example.com").await;
    bound(&gw, &creds).await;
    let text = "x".repeat(400); // 3 GSM segments of 153
    let (status, r) =
        send(&gw, &creds, json!({"esme": "sim-link", "source": "SMSGW", "destination": "4915100000002", "message": text, "wait_for_submit": true}))
            .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["segments"], 3);
    let ids: Vec<&str> = r["segment_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["smsc_message_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    let v = wait_status(
        &gw,
        &creds,
        r["message_id"].as_str().unwrap(),
        "delivered",
        Duration::from_secs(10),
    )
    .await;
    let segs = v["segments"].as_array().unwrap();
    assert!(segs.iter().all(|s| s["receipt_state"] == "DELIVRD"), "{v}");
    // Reversed: the last part's receipt came first.
    let at = |i: usize| segs[i]["receipt_at_ms"].as_u64().unwrap();
    assert!(at(2) <= at(0), "receipts were not out of order: {v}");
}

#[tokio::test]
async fn a_failed_receipt_fails_the_message() {
    let sim = Sim::start_with("127.0.0.1:0", &["--receipt-mix", "0,1,0,0"]);
    let gw = Gateway::standalone(&sim_config(sim.addr));
    let creds = gw.user("fail@example.com").await;
    bound(&gw, &creds).await;
    let (_, r) = send(&gw, &creds, json!({"esme": "sim-link", "source": "SMSGW", "destination": "4915100000003", "message": "doomed"})).await;
    let v = wait_status(
        &gw,
        &creds,
        r["message_id"].as_str().unwrap(),
        "failed",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(v["segments"][0]["receipt_state"], "UNDELIV");
}

#[tokio::test]
async fn bad_sends_get_their_own_error_codes_and_store_nothing() {
    let sim = Sim::start("127.0.0.1:0");
    let gw = Gateway::standalone(&sim_config(sim.addr));
    let creds = gw.user("bad-send@example.com").await;
    let ok = json!({"esme": "sim-link", "source": "SMSGW", "destination": "4915100000004", "message": "hi"});
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    for (body, status, code) in [
        (
            with("destination", json!("12ab")),
            400,
            "invalid_destination",
        ),
        (with("destination", json!("")), 400, "invalid_destination"),
        (
            with("source", json!("MuchTooLongSender")),
            400,
            "invalid_source",
        ),
        (with("esme", json!("nowhere")), 400, "unknown_target"),
        (with("message", json!("")), 400, "invalid_message"),
        (
            with("message", json!("y".repeat(160 * 12))),
            400,
            "too_many_segments",
        ),
    ] {
        let (s, v) = send(&gw, &creds, body).await;
        assert_eq!(s, status, "{v}");
        assert_eq!(v["error"]["code"], code, "{v}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sim.stop_and_count_submits(), 0);
}

#[tokio::test]
async fn grpc_send_and_sms_info_follow_the_message_to_its_receipt() {
    let sim = Sim::start("127.0.0.1:0");
    let gw = Gateway::standalone(&sim_config(sim.addr));
    let creds = gw.user("grpc-send@example.com").await;
    bound(&gw, &creds).await;
    let mut c = SmsServiceClient::new(gw.channel().await);
    let r = c
        .send_message(creds.grpc(SmsRequest {
            esme: "default".into(),
            saddr: "SMSGW".into(),
            daddr: "4915100000005".into(),
            message: "Привет".into(),
            wait_for_submit: true,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(r.success, "{r:?}");
    assert!(
        !r.transaction_id.is_empty(),
        "a transaction id is generated"
    );
    assert_eq!(r.segment_info[0].submit_status, "accepted");
    assert_eq!(r.link, "sim-link");
    let ok = eventually(Duration::from_secs(10), async || {
        let i = c
            .sms_info(creds.grpc(SmsInfoRequest {
                message_id: r.message_id.clone(),
                transaction_id: String::new(),
            }))
            .await
            .unwrap()
            .into_inner();
        i.status == MessageStatus::Delivered as i32 && i.encoding == "UCS2"
    })
    .await;
    assert!(ok.is_some());
    let e = c
        .send_message(creds.grpc(SmsRequest {
            esme: "default".into(),
            saddr: "S".into(),
            daddr: "1".into(),
            message: "x".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    // admin.v1 GetStats counts the same and shows the limiter.
    let mut admin = AdminServiceClient::new(gw.channel().await);
    let mut req = tonic::Request::new(GetStatsRequest::default());
    req.metadata_mut()
        .insert("x-admin-key", crate::harness::ADMIN_KEY.parse().unwrap());
    let stats = admin.get_stats(req).await.unwrap().into_inner();
    let link = stats.links.iter().find(|c| c.name == "sim-link").unwrap();
    assert_eq!(link.submitted, 1, "{stats:?}");
    let limiter = stats.limiter.expect("limiter status");
    assert_eq!(limiter.mode, "in_process");
    assert_eq!(limiter.live_pods, 0, "not shared");
}

#[tokio::test]
async fn the_stream_answers_every_request_once_and_bad_ones_fail_alone() {
    let sim = Sim::start("127.0.0.1:0");
    let gw = Gateway::standalone(&sim_config(sim.addr));
    let creds = gw.user("stream@example.com").await;
    bound(&gw, &creds).await;
    let mut reqs: Vec<SmsRequest> = (0..300)
        .map(|i| SmsRequest {
            transaction_id: format!("s-{i}"),
            esme: "default".into(),
            saddr: "SMSGW".into(),
            daddr: format!("49151{i:08}"),
            message: format!("stream message {i}"),
            ..Default::default()
        })
        .collect();
    reqs.insert(
        100,
        SmsRequest {
            transaction_id: "bad-dest".into(),
            esme: "default".into(),
            saddr: "SMSGW".into(),
            daddr: "nope".into(),
            message: "x".into(),
            ..Default::default()
        },
    );
    reqs.insert(
        200,
        SmsRequest {
            transaction_id: "bad-esme".into(),
            esme: "ghost".into(),
            saddr: "SMSGW".into(),
            daddr: "4915100000000".into(),
            message: "x".into(),
            ..Default::default()
        },
    );
    let mut c = SmsServiceClient::new(gw.channel().await);
    let mut out = c
        .send_message_stream(creds.grpc(tokio_stream::iter(reqs)))
        .await
        .unwrap()
        .into_inner();
    let mut seen = HashSet::new();
    let mut ids = Vec::new();
    while let Some(r) = out.message().await.unwrap() {
        assert!(
            seen.insert(r.transaction_id.clone()),
            "two answers for {}",
            r.transaction_id
        );
        match r.transaction_id.as_str() {
            "bad-dest" => assert_eq!(
                (r.success, r.error_code.as_str()),
                (false, "invalid_destination")
            ),
            "bad-esme" => assert_eq!(
                (r.success, r.error_code.as_str()),
                (false, "unknown_target")
            ),
            _ => {
                assert!(r.success, "{r:?}");
                ids.push(r.message_id);
            }
        }
    }
    assert_eq!(seen.len(), 302);
    let mut pending = ids;
    let done = eventually(Duration::from_secs(20), async || {
        let mut still = Vec::new();
        for id in &pending {
            let i = c
                .sms_info(creds.grpc(SmsInfoRequest {
                    message_id: id.clone(),
                    transaction_id: String::new(),
                }))
                .await
                .unwrap()
                .into_inner();
            if i.status != MessageStatus::Delivered as i32 {
                still.push(id.clone());
            }
        }
        pending = still;
        pending.is_empty()
    })
    .await;
    assert!(done.is_some(), "{} messages never delivered", pending.len());
    assert_eq!(sim.stop_and_count_submits(), 300);
}

#[tokio::test]
async fn an_smsc_that_freezes_mid_window_leaves_segments_unknown_and_nothing_is_resent_under_hold()
{
    let sim = Sim::start("127.0.0.1:0");
    // `unknownPolicy: hold` (the default `resubmit` is tested in faults.rs).
    let config = sim_config(sim.addr).replace(
        "messageIdFormat: hex",
        "messageIdFormat: hex\n  unknownPolicy: hold",
    );
    let gw = Gateway::standalone(&config);
    let creds = gw.user("freeze@example.com").await;
    bound(&gw, &creds).await;
    sim.signal("STOP");
    let (status, r) =
        send(&gw, &creds, json!({"esme": "sim-link", "source": "SMSGW", "destination": "4915100000006", "message": "into the void", "wait_for_submit": true}))
            .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["status"], "unknown", "{r}");
    assert_eq!(r["segment_info"][0]["submit_status"], "unknown");
    sim.signal("CONT");
    // The link comes back; the unknown segment is never resent. If the
    // session was still open, the SMSC's late answer settles it (and its
    // receipt follows); if the gateway had already dropped the dead session,
    // it stays unknown. Either way the SMSC saw it exactly once.
    bound(&gw, &creds).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let v = info(&gw, &creds, r["message_id"].as_str().unwrap()).await;
    let st = v["status"].as_str().unwrap();
    assert!(st == "delivered" || st == "unknown", "{v}");
    if st == "delivered" {
        assert_eq!(
            v["segments"][0]["submit_status"], "accepted",
            "settled by the late submit_sm_resp: {v}"
        );
    }
    assert_eq!(
        sim.stop_and_count_submits(),
        1,
        "resent after an unknown outcome"
    );
}

#[tokio::test]
async fn accepted_messages_survive_a_dead_link_and_are_swept_out_when_it_returns() {
    let sim = Sim::start("127.0.0.1:0");
    let addr = sim.addr;
    let gw = Gateway::standalone_with_args(&sim_config(addr), &["--sweep-after", "1s"]);
    let creds = gw.user("sweep@example.com").await;
    bound(&gw, &creds).await;
    sim.kill();
    let (_, r) = send(&gw, &creds, json!({"esme": "default", "source": "SMSGW", "destination": "4915100000007", "message": "later"})).await;
    let id = r["message_id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(info(&gw, &creds, &id).await["status"], "accepted");
    let sim2 = Sim::start(&addr.to_string());
    wait_status(&gw, &creds, &id, "delivered", Duration::from_secs(25)).await;
    // The in-process retry and the sweeper never both submit it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sim2.stop_and_count_submits(), 1);
}

#[tokio::test]
async fn a_gateway_restart_keeps_every_record() {
    let sim = Sim::start("127.0.0.1:0");
    let dir = tempfile::tempdir().unwrap();
    let config = sim_config(sim.addr);
    let gw = Gateway::standalone_in(&config, dir.path(), &[]);
    let creds = gw.user("restart@example.com").await;
    bound(&gw, &creds).await;
    let (_, r) = send(&gw, &creds, json!({"esme": "default", "source": "SMSGW", "destination": "4915100000008", "message": "keep me", "transaction_id": "keep"})).await;
    let id = r["message_id"].as_str().unwrap().to_owned();
    wait_status(&gw, &creds, &id, "delivered", Duration::from_secs(10)).await;
    let status = tokio::task::spawn_blocking(move || gw.terminate())
        .await
        .unwrap();
    assert!(status.success());

    let gw = Gateway::standalone_in(&config, dir.path(), &[]);
    // The same user logs in again (users persist too) and sees the message.
    let t: Value = reqwest::Client::new()
        .post(gw.url("/api/v1/auth/login"))
        .json(&json!({"email": "restart@example.com", "password": "e2e password 123"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let creds = Creds {
        token: t["token"].as_str().unwrap().into(),
        ..creds
    };
    let v = info(&gw, &creds, &id).await;
    assert_eq!(v["status"], "delivered", "{v}");
    let (_, again) = send(&gw, &creds, json!({"esme": "default", "source": "SMSGW", "destination": "4915100000008", "message": "keep me", "transaction_id": "keep"})).await;
    assert_eq!(
        again["message_id"],
        id.as_str(),
        "idempotency survives the restart"
    );
}

#[tokio::test]
async fn status_changes_reach_the_app_webhook_signed_and_retried() {
    use axum::http::{HeaderMap, StatusCode};
    use std::sync::{Arc, Mutex};
    type Seen = Arc<Mutex<Vec<(HeaderMap, String)>>>;
    let seen: Seen = Arc::default();
    let s2 = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let seen = s2.clone();
            async move {
                let mut v = seen.lock().unwrap();
                v.push((headers, body));
                // The very first delivery fails, to exercise the retry.
                if v.len() == 1 {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let sim = Sim::start("127.0.0.1:0");
    // The receiver is on loopback, which webhooks may reach only with
    // --webhook-allow-private.
    let gw = Gateway::standalone_with_args(&sim_config(sim.addr), &["--webhook-allow-private"]);
    let creds = gw.user("hook@example.com").await;
    bound(&gw, &creds).await;
    let set: Value = gw
        .authed(&creds, Method::PUT, "/api/v1/settings/webhook")
        .json(&json!({"url": hook}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = set["secret"].as_str().unwrap().to_owned();
    let bad = gw
        .authed(&creds, Method::PUT, "/api/v1/settings/webhook")
        .json(&json!({"url": "ftp://x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let (_, r) = send(&gw, &creds, json!({"esme": "sim-link", "source": "SMSGW", "destination": "4915100000009", "message": "hooked"})).await;
    let id = r["message_id"].as_str().unwrap().to_owned();
    let got = eventually(Duration::from_secs(15), async || {
        seen.lock()
            .unwrap()
            .iter()
            .any(|(_, b)| b.contains(&id) && b.contains("\"delivered\""))
    })
    .await;
    assert!(
        got.is_some(),
        "no delivered event reached the webhook: {:?}",
        seen.lock().unwrap()
    );
    let seen = seen.lock().unwrap();
    assert!(seen.len() >= 2, "the failed first delivery was retried");
    for (h, body) in seen.iter() {
        let ts: u64 = h["x-smsgw-timestamp"].to_str().unwrap().parse().unwrap();
        let sig = h["x-smsgw-signature"].to_str().unwrap();
        assert_eq!(
            sig,
            smsgw_api::webhook::sign(&secret, ts, body.as_bytes()),
            "bad signature on {body}"
        );
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["type"], "status");
        assert_eq!(v["message_id"], id.as_str());
    }
}

#[tokio::test]
async fn with_the_redis_backend_two_gateways_share_users_messages_and_receipts() {
    let redis = smsgw_store::testing::RedisServer::start();
    let sim = Sim::start("127.0.0.1:0");
    let config = sim_config(sim.addr);
    let url = redis.url();
    let args = [
        "--store",
        "redis",
        "--store-redis-url",
        &url,
        "--redis-url",
        &url,
    ];
    let a = Gateway::standalone_with_args(&config, &args);
    let creds = a.user("redis@example.com").await;
    bound(&a, &creds).await;
    let body = json!({"esme": "default", "source": "SMSGW", "destination": "4915100000300", "message": "shared", "transaction_id": "redis-tx", "sent_at": "2026-12-07T08:30:00.250Z"});
    let (status, r) = send(&a, &creds, body.clone()).await;
    assert_eq!(status, 200, "{r}");
    let id = r["message_id"].as_str().unwrap().to_owned();
    wait_status(&a, &creds, &id, "delivered", Duration::from_secs(10)).await;

    // A second gateway on the same Redis (its own data dir, same JWT keys
    // would be needed for tokens: log in again there) sees the user, the
    // message with its receipt, and the idempotency key.
    let b = Gateway::standalone_with_args(&config, &args);
    let t: Value = reqwest::Client::new()
        .post(b.url("/api/v1/auth/login"))
        .json(&json!({"email": "redis@example.com", "password": "e2e password 123"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let creds_b = Creds {
        token: t["token"]
            .as_str()
            .expect("login on the second gateway")
            .into(),
        ..creds.clone()
    };
    let seen = info(&b, &creds_b, &id).await;
    assert_eq!(
        (&seen["status"], &seen["sent_at_ms"]),
        (&json!("delivered"), &json!(1_796_632_200_250u64)),
        "{seen}"
    );
    bound(&b, &creds_b).await;
    let (_, again) = send(&b, &creds_b, body).await;
    assert_eq!(
        again["message_id"],
        id.as_str(),
        "the idempotency key is shared through Redis"
    );
    assert_eq!(again["duplicate"], true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sim.stop_and_count_submits(), 1);
}
