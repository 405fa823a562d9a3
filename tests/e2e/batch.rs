//! `POST /api/v1/sms/send-batch` through the binary: one result per
//! message in order, each message accepted or refused on its own, and a
//! batch that is not one refused whole with nothing sent.

use crate::harness::{Gateway, Sim, bound, sim_config};
use crate::messages::{info, wait_status};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

/// Posts a batch; answers the status and the body.
pub(crate) async fn batch(
    gw: &Gateway,
    creds: &crate::harness::Creds,
    body: &Value,
) -> (u16, Value) {
    let r = gw
        .authed(creds, Method::POST, "/api/v1/sms/send-batch")
        .json(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn message(i: usize) -> Value {
    json!({"esme": "default", "source": "SMSGW", "destination": format!("+49151{i:08}"), "message": format!("batch {i}"), "transaction_id": format!("b-{i}")})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answers_each_message_in_order_and_refuses_bad_ones_alone() {
    let sim = Sim::start("127.0.0.1:0");
    let gw = Gateway::standalone(&sim_config(sim.addr));
    let creds = gw.user("batch@example.com").await;
    bound(&gw, &creds).await;

    let mut reused = message(0);
    reused["message"] = json!("another text");
    let body = json!({"messages": [
        message(0),
        {"esme": "default", "source": "SMSGW", "destination": "12", "message": "x"},
        "not a message",
        {"esme": "nowhere", "source": "SMSGW", "destination": "+4915100000001", "message": "x"},
        message(4),
        {"esme": "default", "source": "SMSGW", "destination": "+4915100000002", "message": "x", "sent_at": "soon"},
    ]});
    let (status, r) = batch(&gw, &creds, &body).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        (&r["accepted"], &r["refused"]),
        (&json!(2), &json!(4)),
        "{r}"
    );
    let results = r["results"].as_array().unwrap();
    let seen: Vec<(u64, u64, &str)> = results
        .iter()
        .map(|x| {
            (
                x["index"].as_u64().unwrap(),
                x["status"].as_u64().unwrap(),
                x["error"]["code"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (0, 200, ""),
            (1, 400, "invalid_destination"),
            (2, 400, "invalid_argument"),
            (3, 400, "unknown_target"),
            (4, 200, ""),
            (5, 400, "invalid_sent_at"),
        ]
    );
    let first = &results[0]["response"];
    assert_eq!(first["transaction_id"], "b-0", "{first}");
    let id = first["message_id"].as_str().unwrap();
    wait_status(&gw, &creds, id, "delivered", Duration::from_secs(10)).await;
    let id4 = results[4]["response"]["message_id"].as_str().unwrap();
    wait_status(&gw, &creds, id4, "delivered", Duration::from_secs(10)).await;

    // Repeats are per message too: the same message again is a duplicate,
    // its key for another text a conflict.
    let (status, r) = batch(&gw, &creds, &json!({"messages": [message(0), reused]})).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["results"][0]["response"]["duplicate"], true, "{r}");
    assert_eq!(r["results"][0]["response"]["message_id"], id, "{r}");
    assert_eq!(
        (
            &r["results"][1]["status"],
            &r["results"][1]["error"]["code"]
        ),
        (&json!(409), &json!("transaction_id_reused")),
        "{r}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sim.stop_and_count_submits(),
        2,
        "only the two good messages went out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_messages_go_in_one_batch_and_a_thousand_and_one_or_none_do_not() {
    let sim = Sim::start("127.0.0.1:0");
    let gw = Gateway::standalone(&sim_config(sim.addr));
    let creds = gw.user("batch-1000@example.com").await;
    bound(&gw, &creds).await;

    // Over the limit, empty, or not a batch: refused whole, nothing sent.
    let over: Vec<Value> = (0..1001).map(message).collect();
    for (body, want) in [
        (json!({"messages": over}), (400, "batch_too_large")),
        (json!({"messages": []}), (400, "empty_batch")),
        (json!({"messages": "x"}), (400, "invalid_argument")),
        (json!([message(0)]), (400, "invalid_argument")),
    ] {
        let (status, r) = batch(&gw, &creds, &body).await;
        assert_eq!(
            (status, r["error"]["code"].as_str().unwrap_or("")),
            want,
            "{r}"
        );
    }
    let v = gw
        .authed(&creds, Method::GET, "/api/v1/sms?transaction_id=b-0")
        .send()
        .await
        .unwrap();
    assert_eq!(v.status(), 404, "a refused batch stored nothing");
    // Without credentials: 401, as for a single send.
    let r = reqwest::Client::new()
        .post(gw.url("/api/v1/sms/send-batch"))
        .json(&json!({"messages": [message(0)]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let all: Vec<Value> = (0..1000).map(message).collect();
    let (status, r) = batch(&gw, &creds, &json!({"messages": all})).await;
    assert_eq!(status, 200, "{}", r["error"]);
    assert_eq!((&r["accepted"], &r["refused"]), (&json!(1000), &json!(0)));
    for (i, x) in r["results"].as_array().unwrap().iter().enumerate() {
        assert_eq!(x["index"], i);
        assert_eq!(x["response"]["transaction_id"], format!("b-{i}"), "{x}");
    }
    let last = r["results"][999]["response"]["message_id"]
        .as_str()
        .unwrap();
    assert_eq!(
        info(&gw, &creds, last).await["destination"],
        "4915100000999"
    );
    let ok = crate::harness::eventually(Duration::from_secs(30), async || {
        gw.admin_stats().await["pools"]["default"]["submitted"] == 1000
    })
    .await;
    assert!(ok.is_some(), "{}", gw.admin_stats().await);
}
