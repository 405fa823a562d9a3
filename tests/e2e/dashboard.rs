//! `GET /dashboard/stats` and the API documentation on a real gateway.

use crate::harness::{ADMIN_KEY, Gateway, Sim, bound, eventually, sim_config};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

/// A request's status and JSON body (`null` when it has none).
pub(crate) async fn dashboard(req: reqwest::RequestBuilder) -> (u16, Value) {
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_dashboard_moves_with_sends_and_shows_each_user_only_their_campaigns() {
    let sim = Sim::start("127.0.0.1:0");
    let gw = Gateway::standalone(&sim_config(sim.addr));
    let http = reqwest::Client::new();
    let (s, _) = dashboard(http.get(gw.url("/dashboard/stats"))).await;
    assert_eq!(s, 401, "the dashboard needs credentials");

    let alice = gw.user("dash-a@example.com").await;
    let bob = gw.user("dash-b@example.com").await;
    bound(&gw, &alice).await;
    let before = dashboard(gw.authed(&alice, Method::GET, "/dashboard/stats"))
        .await
        .1;
    let msg = |task: &str, dest: &str| json!({"esme": "default", "source": "SMSGW", "destination": dest, "message": "hi", "task_id": task});
    for i in 0..3 {
        let r = gw
            .authed(&alice, Method::POST, "/api/v1/sms/send")
            .json(&msg("spring-sale", &format!("+49151000000{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // A refusal (bad destination) counts for the campaign and as an error.
    let r = gw
        .authed(&alice, Method::POST, "/api/v1/sms/send")
        .json(&msg("spring-sale", "not a number"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = gw
        .authed(&bob, Method::POST, "/api/v1/sms/send")
        .json(&msg("bobs-campaign", "+4915100000009"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Receipts arrive in the background; wait until alice's are counted.
    let mut v = Value::Null;
    let ok = eventually(Duration::from_secs(10), async || {
        v = dashboard(gw.authed(&alice, Method::GET, "/dashboard/stats"))
            .await
            .1;
        v["top_campaigns"][0]["delivered"] == 3
    })
    .await;
    assert!(ok.is_some(), "receipts never counted: {v}");
    let top = v["top_campaigns"].as_array().unwrap();
    assert_eq!(top.len(), 1, "alice sees only her app's campaigns: {v}");
    assert_eq!(
        (
            &top[0]["task_id"],
            &top[0]["app_id"],
            &top[0]["submitted"],
            &top[0]["rejected"]
        ),
        (
            &json!("spring-sale"),
            &json!(alice.app_id),
            &json!(3),
            &json!(1)
        ),
        "{v}"
    );
    let calls = |v: &Value| v["requests"]["total"].as_u64().unwrap();
    assert!(calls(&v) >= calls(&before) + 5, "{before}\n{v}");
    assert!(v["requests"]["errors"].as_u64().unwrap() >= 1, "{v}");
    let rate = v["requests"]["error_rate"].as_f64().unwrap();
    assert!(rate > 0.0 && rate < 1.0, "{v}");
    assert!(v["requests"]["per_second"].as_f64().unwrap() > 0.0, "{v}");
    assert!(
        v["process"]["memory_rss_bytes"].as_u64().unwrap() > 1 << 20,
        "{v}"
    );
    assert!(
        v["process"]["cpu_seconds_total"].as_f64().unwrap() > 0.0,
        "{v}"
    );
    assert!(v["process"]["cpu_percent"].as_f64().unwrap() >= 0.0, "{v}");
    let disk = &v["disk"];
    assert!(
        disk["total_bytes"].as_u64().unwrap() >= disk["available_bytes"].as_u64().unwrap()
            && disk["total_bytes"].as_u64().unwrap() > 0,
        "{v}"
    );

    // The admin key sees every app's campaigns, the busiest first.
    let (s, all) = dashboard(
        http.get(gw.url("/dashboard/stats?top=5"))
            .header("x-admin-key", ADMIN_KEY),
    )
    .await;
    assert_eq!(s, 200, "{all}");
    let names: Vec<&str> = all["top_campaigns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["task_id"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["spring-sale", "bobs-campaign"], "{all}");
    let (s, e) = dashboard(
        http.get(gw.url("/dashboard/stats?top=0"))
            .header("x-admin-key", ADMIN_KEY),
    )
    .await;
    assert_eq!((s, &e["error"]["field"]), (400, &json!("top")), "{e}");
}

#[tokio::test]
async fn the_openapi_document_and_docs_page_are_public() {
    let gw = Gateway::standalone(crate::harness::EXAMPLE_CONFIG);
    let http = reqwest::Client::new();
    let r = http
        .get(gw.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/api/v1/sms/send"]["post"].is_object());
    assert!(doc["paths"]["/dashboard/stats"]["get"].is_object());
    let r = http.get(gw.url("/docs")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("api/v1/openapi.json"));
}
