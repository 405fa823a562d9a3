//! Rate limits and contact policies on the send path, through the binary.

use crate::harness::{Creds, Gateway, Sim, bound, sim_config};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

pub(crate) async fn send(gw: &Gateway, creds: &Creds, body: Value) -> (u16, Value, Option<String>) {
    let r = gw
        .authed(creds, Method::POST, "/api/v1/sms/send")
        .json(&body)
        .send()
        .await
        .unwrap();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (r.status().as_u16(), r.json().await.unwrap(), retry)
}

const POLICY: &str = "---\napiVersion: smsgw.io/v1alpha1\nkind: ContactPolicy\nmetadata: {name: cp1}\nspec: {frequency: {daily: 2, weekly: 5, timeZone: Europe/Berlin}}\n";

#[tokio::test]
async fn a_daily_cap_refuses_the_third_message_to_a_destination_with_its_state() {
    let sim = Sim::start("127.0.0.1:0");
    let gw = Gateway::standalone(&format!("{}{POLICY}", sim_config(sim.addr)));
    let creds = gw.user("cp@example.com").await;
    bound(&gw, &creds).await;
    let msg = |dest: &str, strategy: &str| json!({"esme": "sim-link", "source": "SMSGW", "destination": dest, "message": "hi", "strategy": strategy});
    for _ in 0..2 {
        let (s, v, _) = send(&gw, &creds, msg("4915100000100", "cp1")).await;
        assert_eq!(s, 200, "{v}");
    }
    let (s, v, _) = send(&gw, &creds, msg("4915100000100", "cp1")).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"]["code"], "daily_cp");
    // Other destinations, and sends without a strategy, are not affected.
    assert_eq!(send(&gw, &creds, msg("4915100000101", "cp1")).await.0, 200);
    assert_eq!(send(&gw, &creds, msg("4915100000100", "")).await.0, 200);
    let (s, v, _) = send(&gw, &creds, msg("4915100000100", "nope")).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("unknown_strategy"))
    );
    // A repeated transaction id does not count again.
    let mut once = msg("4915100000102", "cp1");
    once["transaction_id"] = json!("tx-cp");
    for _ in 0..3 {
        assert_eq!(send(&gw, &creds, once.clone()).await.0, 200);
    }
    assert_eq!(
        send(&gw, &creds, msg("4915100000102", "cp1")).await.0,
        200,
        "the repeats were counted"
    );
    // Admin statistics count the refusals per app and per link.
    let stats: Value = reqwest::Client::new()
        .get(gw.url("/api/v1/admin/stats"))
        .header("x-admin-key", crate::harness::ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stats["apps"][&creds.app_id]["rejected"]["daily_cp"], 1,
        "{stats}"
    );
    assert_eq!(
        stats["apps"][&creds.app_id]["rejected"]["unknown_strategy"], 1,
        "{stats}"
    );
    assert_eq!(
        stats["links"]["sim-link"]["rejected"]["daily_cp"], 1,
        "{stats}"
    );
}

#[tokio::test]
async fn over_the_link_rate_sends_get_429_with_retry_after_or_wait_for_capacity() {
    let sim = Sim::start("127.0.0.1:0");
    let config =
        sim_config(sim.addr).replace("  window: 16\n", "  window: 16\n  rate: 2\n  burst: 2\n");
    let gw = Gateway::standalone(&config);
    let creds = gw.user("rate@example.com").await;
    bound(&gw, &creds).await;
    let body = json!({"esme": "sim-link", "source": "SMSGW", "destination": "4915100000200", "message": "r"});
    let mut codes = Vec::new();
    for _ in 0..3 {
        codes.push(send(&gw, &creds, body.clone()).await);
    }
    assert_eq!(codes[0].0, 200);
    assert_eq!(codes[1].0, 200);
    let (s, v, retry) = &codes[2];
    assert_eq!(*s, 429, "{v}");
    assert_eq!(v["error"]["code"], "rate_limited");
    assert!(
        retry
            .as_deref()
            .is_some_and(|r| r.parse::<u64>().unwrap() >= 1)
    );
    let mut wait = body.clone();
    wait["wait_for_capacity"] = json!(true);
    let started = std::time::Instant::now();
    let (s, v, _) = send(&gw, &creds, wait).await;
    assert_eq!(s, 200, "{v}");
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "it waited for a token"
    );
}
