//! Message options (issue 19) through the real binary: `validity_period`,
//! `priority` and `flash` reach the SMSC in every submit_sm over REST,
//! batch and gRPC and show in lookups; a `schedule_delivery_time` is held
//! by the gateway until due, across a SIGKILL and restart, or passed to
//! the SMSC by a link with `scheduleAtSmsc`; priority 3 overtakes
//! priority 0 at a backed-up link's window; each bad option is refused
//! with its own code and nothing is stored or sent. The SMSC is the
//! in-process simulator, which records what each submit_sm carried.

use crate::harness::{Creds, Gateway, eventually};
use crate::messages::{info, send};
use reqwest::Method;
use serde_json::{Value, json};
use smsgw_proto::sms::v1::{SmsInfoRequest, SmsRequest, sms_service_client::SmsServiceClient};
use smsgw_smpp::sim::{self, SeenSubmit, SimConfig, SimHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// A link `name` to `sim`: one session of `window`, plus `extra` spec
/// lines.
fn link(name: &str, sim: &SimHandle, window: u32, extra: &str) -> String {
    let a = sim.addr();
    format!(
        "apiVersion: smsgw.io/v1alpha1\nkind: SmppLink\nmetadata: {{name: {name}}}\nspec:\n  \
         host: \"{ip}\"\n  port: {port}\n  systemId: smsgw\n  password: secret\n  \
         sessions: 1\n  window: {window}\n  responseTimeout: 5s\n  \
         reconnect: {{initial: 100ms, max: 500ms}}\n{extra}",
        ip = a.ip(),
        port = a.port()
    )
}

async fn simulator(cancel: &CancellationToken) -> SimHandle {
    sim::run(
        SimConfig {
            track_submits: true,
            ..SimConfig::default()
        },
        cancel.clone(),
    )
    .await
    .expect("simulator starts")
}

/// Waits until every link has its one session bound.
async fn bound(gw: &Gateway, creds: &Creds) {
    crate::harness::bound_sessions(gw, creds, 1).await;
}

/// The submit_sm the simulator accepted for `destination` (digits), once
/// it has (up to `within`).
async fn seen(sim: &SimHandle, destination: &str, within: Duration) -> SeenSubmit {
    let mut found = None;
    eventually(within, async || {
        found = sim
            .seen_submits()
            .into_iter()
            .find(|s| s.destination == destination);
        found.is_some()
    })
    .await;
    found.unwrap_or_else(|| panic!("no submit_sm to {destination}"))
}

fn body(destination: &str, esme: &str, options: Value) -> Value {
    let mut b =
        json!({"esme": esme, "source": "SMSGW", "destination": destination, "message": "options"});
    for (k, v) in options.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validity_priority_and_flash_reach_the_smsc_over_rest_batch_and_grpc() {
    let cancel = CancellationToken::new();
    let sim = simulator(&cancel).await;
    let gw = Gateway::standalone(&link("opts", &sim, 10, ""));
    let creds = gw.user("options@example.com").await;
    bound(&gw, &creds).await;

    let (s, r) = send(
        &gw,
        &creds,
        body(
            "4915100000101",
            "opts",
            json!({"validity_period": 3600, "priority": 2, "flash": true}),
        ),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    let sm = seen(&sim, "4915100000101", Duration::from_secs(10)).await;
    assert_eq!(sm.validity_period, "000000010000000R", "relative, 1 hour");
    assert_eq!(sm.priority_flag, 2);
    assert_eq!(sm.data_coding, 0x10, "flash GSM 7-bit: class 0");
    assert_eq!(sm.schedule_delivery_time, "");
    let v = info(&gw, &creds, r["message_id"].as_str().unwrap()).await;
    assert_eq!(
        (&v["validity_period"], &v["priority"], &v["flash"]),
        (&json!(3600), &json!(2), &json!(true)),
        "{v}"
    );

    // A UCS-2 flash message: 0x18. A plain one: nothing set.
    let mut uni = body("4915100000102", "opts", json!({"flash": true}));
    uni["message"] = json!("Привет");
    assert_eq!(send(&gw, &creds, uni).await.0, 200);
    assert_eq!(
        send(&gw, &creds, body("4915100000103", "opts", json!({})))
            .await
            .0,
        200
    );
    let sm = seen(&sim, "4915100000102", Duration::from_secs(10)).await;
    assert_eq!(sm.data_coding, 0x18, "flash UCS-2: class 0");
    let sm = seen(&sim, "4915100000103", Duration::from_secs(10)).await;
    assert_eq!(
        (
            sm.data_coding,
            sm.priority_flag,
            sm.validity_period.as_str()
        ),
        (0, 0, "")
    );

    // Batch: each message its own options.
    let (status, r) = crate::batch::batch(
        &gw,
        &creds,
        &json!({"messages": [
            body("4915100000104", "opts", json!({"priority": 3, "validity_period": 604800})),
            body("4915100000105", "opts", json!({"priority": 1})),
            body("4915100000106", "opts", json!({"priority": 4})),
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        (&r["accepted"], &r["refused"]),
        (&json!(2), &json!(1)),
        "{r}"
    );
    assert_eq!(r["results"][2]["error"]["code"], "invalid_priority", "{r}");
    let sm = seen(&sim, "4915100000104", Duration::from_secs(10)).await;
    assert_eq!(
        (sm.priority_flag, sm.validity_period.as_str()),
        (3, "000007000000000R")
    );
    assert_eq!(
        seen(&sim, "4915100000105", Duration::from_secs(10))
            .await
            .priority_flag,
        1
    );

    // gRPC: the same options in, and out of SmsInfo.
    let mut c = SmsServiceClient::new(gw.channel().await);
    let r = c
        .send_message(creds.grpc(SmsRequest {
            esme: "opts".into(),
            saddr: "SMSGW".into(),
            daddr: "4915100000107".into(),
            message: "grpc options".into(),
            validity_period: Some(120),
            priority: Some(3),
            flash: true,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(r.success, "{r:?}");
    let sm = seen(&sim, "4915100000107", Duration::from_secs(10)).await;
    assert_eq!(
        (
            sm.priority_flag,
            sm.data_coding,
            sm.validity_period.as_str()
        ),
        (3, 0x10, "000000000200000R")
    );
    let i = c
        .sms_info(creds.grpc(SmsInfoRequest {
            message_id: r.message_id,
            transaction_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((i.validity_period, i.priority, i.flash), (120, 3, true));
    assert_eq!(i.schedule_delivery_time, None);
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_option_is_refused_with_its_code_and_nothing_is_stored_or_sent() {
    let cancel = CancellationToken::new();
    let sim = simulator(&cancel).await;
    let gw = Gateway::standalone(&link("opts", &sim, 10, ""));
    let creds = gw.user("bad-options@example.com").await;
    bound(&gw, &creds).await;
    let past = rfc3339(now_ms() - 60_000);
    let far = rfc3339(now_ms() + 8 * 86_400_000);
    for (n, (options, code)) in [
        (json!({"validity_period": 59}), "invalid_validity_period"),
        (
            json!({"validity_period": 604_801}),
            "invalid_validity_period",
        ),
        (json!({"validity_period": "1h"}), "invalid_validity_period"),
        (json!({"priority": 4}), "invalid_priority"),
        (json!({"priority": "urgent"}), "invalid_priority"),
        (json!({"flash": "yes"}), "invalid_flash"),
        (
            json!({"schedule_delivery_time": past}),
            "invalid_schedule_delivery_time",
        ),
        (
            json!({"schedule_delivery_time": far}),
            "invalid_schedule_delivery_time",
        ),
        (
            json!({"schedule_delivery_time": "at noon"}),
            "invalid_schedule_delivery_time",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let tx = format!("bad-option-{n}");
        let mut b = body(&format!("49151000002{n:02}"), "opts", options.clone());
        b["transaction_id"] = json!(tx);
        let (s, v) = send(&gw, &creds, b).await;
        assert_eq!(
            (s, &v["error"]["code"]),
            (400, &json!(code)),
            "{options}: {v}"
        );
        let lookup = gw
            .authed(
                &creds,
                Method::GET,
                &format!("/api/v1/sms?transaction_id={tx}"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(lookup.status().as_u16(), 404, "{options}: nothing stored");
    }
    let mut c = SmsServiceClient::new(gw.channel().await);
    for (req, field) in [
        (
            SmsRequest {
                priority: Some(7),
                ..Default::default()
            },
            "priority",
        ),
        (
            SmsRequest {
                validity_period: Some(10),
                ..Default::default()
            },
            "validity_period",
        ),
        (
            SmsRequest {
                schedule_delivery_time: Some(prost_types::Timestamp {
                    seconds: 1,
                    nanos: 0,
                }),
                ..Default::default()
            },
            "schedule_delivery_time",
        ),
    ] {
        let e = c
            .send_message(creds.grpc(SmsRequest {
                esme: "opts".into(),
                saddr: "SMSGW".into(),
                daddr: "4915100000299".into(),
                message: "x".into(),
                ..req
            }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(field), "{e:?}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sim.seen_submits().is_empty(), "nothing reached the SMSC");
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_message_is_held_until_due_across_a_kill_and_restart_or_left_to_the_smsc() {
    held_across_a_restart(&[], "embedded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_redis_store_a_scheduled_message_is_held_across_a_kill_and_restart() {
    let redis = smsgw_store::testing::RedisServer::start();
    let url = redis.url();
    held_across_a_restart(
        &[
            "--store",
            "redis",
            "--store-redis-url",
            &url,
            "--redis-url",
            &url,
        ],
        "redis",
    )
    .await;
}

/// The scheduled-message drill on a gateway started with `args` (its
/// store): held until due across a SIGKILL and restart on the same data,
/// or passed on at once by a `scheduleAtSmsc` link.
async fn held_across_a_restart(args: &[&str], tag: &str) {
    let cancel = CancellationToken::new();
    let sim = simulator(&cancel).await;
    let config = [
        link("held", &sim, 10, ""),
        link("at-smsc", &sim, 10, "  scheduleAtSmsc: true\n"),
    ]
    .join("---\n");
    let dir = tempfile::tempdir().unwrap();
    let email = format!("scheduled-{tag}@example.com");
    let email = email.as_str();
    let gw = Gateway::standalone_in(&config, dir.path(), args);
    let creds = gw.user(email).await;
    bound(&gw, &creds).await;

    let due = now_ms() + 8_000;
    let at = rfc3339(due);
    let (s, held) = send(
        &gw,
        &creds,
        body(
            "4915100000301",
            "held",
            json!({"schedule_delivery_time": at, "priority": 1}),
        ),
    )
    .await;
    assert_eq!(s, 200, "{held}");
    assert_eq!(held["status"], "accepted");
    let held_id = held["message_id"].as_str().unwrap().to_owned();
    let (s, smsc) = send(
        &gw,
        &creds,
        body(
            "4915100000302",
            "at-smsc",
            json!({"schedule_delivery_time": at}),
        ),
    )
    .await;
    assert_eq!(s, 200, "{smsc}");
    // The SMSC's schedule: submitted at once, the time in the submit_sm.
    let sm = seen(&sim, "4915100000302", Duration::from_secs(5)).await;
    let asked = smsgw_smpp::time::parse(&sm.schedule_delivery_time, SystemTime::now())
        .unwrap_or_else(|| panic!("{sm:?}"));
    let asked = asked.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    assert_eq!(asked, due / 100 * 100, "{sm:?}: to the tenth of a second");
    assert!(sm.schedule_delivery_time.ends_with("00+"), "UTC: {sm:?}");
    let v = info(&gw, &creds, smsc["message_id"].as_str().unwrap()).await;
    assert_eq!(
        (&v["schedule_delivery_time_ms"], &v["schedule_at_smsc"]),
        (&json!(due), &json!(true)),
        "{v}"
    );

    // Held by the gateway: not submitted before its time...
    tokio::time::sleep(Duration::from_secs(2)).await;
    let v = info(&gw, &creds, &held_id).await;
    assert_eq!(
        (
            &v["status"],
            &v["schedule_delivery_time_ms"],
            &v["schedule_at_smsc"]
        ),
        (&json!("accepted"), &json!(due), &json!(false)),
        "{v}"
    );
    assert!(
        !sim.seen_submits()
            .iter()
            .any(|s| s.destination == "4915100000301"),
        "submitted before its time"
    );
    // ...nor lost with the gateway (SIGKILL), and submitted once due by
    // the restarted one.
    drop(gw);
    let gw = Gateway::standalone_in(&config, dir.path(), args);
    let creds = gw.login_again(&creds, email).await;
    let sm = seen(&sim, "4915100000301", Duration::from_secs(20)).await;
    let at_ms = sm.at.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    assert!(at_ms >= due, "submitted {} ms early", due - at_ms);
    assert!(at_ms < due + 5_000, "submitted {} ms late", at_ms - due);
    assert_eq!(sm.schedule_delivery_time, "", "held here, not by the SMSC");
    assert_eq!(sm.priority_flag, 1);
    let v =
        crate::messages::wait_status(&gw, &creds, &held_id, "delivered", Duration::from_secs(10))
            .await;
    assert_eq!(v["possible_duplicate"], false, "{v}");
    let once = sim
        .seen_submits()
        .iter()
        .filter(|s| s.destination == "4915100000301")
        .count();
    assert_eq!(once, 1, "submitted exactly once");
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_3_overtakes_priority_0_at_a_backed_up_window() {
    let cancel = CancellationToken::new();
    let sim = simulator(&cancel).await;
    // One session with a window of one, answered after 300 ms: every
    // message waits for the one before.
    let gw = Gateway::standalone(&link("slow", &sim, 1, ""));
    let creds = gw.user("priority@example.com").await;
    bound(&gw, &creds).await;
    sim.set_response_delay(Some(Duration::from_millis(300)));
    for i in 0..8 {
        let (s, v) = send(
            &gw,
            &creds,
            body(&format!("49151000004{i:02}"), "slow", json!({})),
        )
        .await;
        assert_eq!(s, 200, "{v}");
    }
    for i in 0..3 {
        let (s, v) = send(
            &gw,
            &creds,
            body(
                &format!("49151000005{i:02}"),
                "slow",
                json!({"priority": 3}),
            ),
        )
        .await;
        assert_eq!(s, 200, "{v}");
    }
    let ok = eventually(Duration::from_secs(20), async || {
        sim.seen_submits().len() >= 11
    })
    .await;
    assert!(ok.is_some(), "{:?}", sim.seen_submits());
    let order: Vec<u8> = sim.seen_submits().iter().map(|s| s.priority_flag).collect();
    let last_urgent = order.iter().rposition(|p| *p == 3).unwrap();
    let before = order[..last_urgent].iter().filter(|p| **p == 0).count();
    // In arrival order all eight would go first; the urgent ones wait at
    // most for those already in flight or handed a slot when they came.
    assert!(
        before <= 4,
        "priority 0 ahead of the last priority 3: {order:?}"
    );
    assert_eq!(order.iter().filter(|p| **p == 0).count(), 8, "{order:?}");
    cancel.cancel();
}
