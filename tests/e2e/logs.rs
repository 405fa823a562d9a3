//! JSON logs: one line per message state change under `smsgw::message`,
//! with the ids an operator greps for, and no secrets.

use crate::harness::{Gateway, Sim, assert_no_secrets, bound, eventually, sim_config};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

/// The `smsgw::message` lines logged so far, parsed.
fn lifecycle(gw: &Gateway) -> Vec<Value> {
    gw.logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "smsgw::message")
        .collect()
}

#[tokio::test]
async fn each_state_change_of_a_message_is_one_json_line_with_its_ids() {
    let sim = Sim::start("127.0.0.1:0");
    let gw = Gateway::standalone(&sim_config(sim.addr));
    let creds = gw.user("logs@example.com").await;
    bound(&gw, &creds).await;
    let send = |body: Value| {
        gw.authed(&creds, Method::POST, "/api/v1/sms/send")
            .json(&body)
            .send()
    };
    let r: Value = send(json!({"esme": "default", "source": "SMSGW", "destination": "+4915112340001", "message": "log me", "transaction_id": "tx-log-1"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = r["message_id"].as_str().unwrap().to_owned();
    let refused = send(json!({"esme": "default", "source": "SMSGW", "destination": "12", "message": "x", "transaction_id": "tx-log-2"}))
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);

    let mut events = Vec::new();
    let done = eventually(Duration::from_secs(10), async || {
        events = lifecycle(&gw)
            .into_iter()
            .filter(|v| v["message_id"] == id.as_str())
            .collect();
        events.iter().any(|v| v["event"] == "delivered")
    })
    .await;
    assert!(done.is_some(), "no delivered line for {id}: {events:?}");
    let names: Vec<&str> = events
        .iter()
        .map(|v| v["event"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["accepted", "submitted", "delivered"], "{events:?}");
    for v in &events {
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["transaction_id"], "tx-log-1");
        assert_eq!(v["app_id"], creds.app_id.as_str());
        assert!(v["trace_id"].is_string(), "no trace_id field: {v}");
        assert!(v["timestamp"].is_string());
    }
    assert_eq!(events[1]["link"], "sim-link");
    let refusal = lifecycle(&gw)
        .into_iter()
        .find(|v| v["transaction_id"] == "tx-log-2")
        .expect("the refusal is logged");
    assert_eq!(
        (refusal["event"].as_str(), refusal["reason"].as_str()),
        (Some("refused"), Some("invalid_destination"))
    );
    assert_no_secrets(&gw.logs(), &[&creds.token, &creds.app_secret]);
}
