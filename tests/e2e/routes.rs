//! Routing rules through the binary: a send without `esme` goes where the
//! first matching Route says (by destination prefix, sender, app and time
//! window, in `order`), the default route catches the rest, and a send no
//! route matches is refused with `no_route` and nothing stored.

use crate::harness::{Gateway, Sim, bound, run_to_end, sim_config, write_config};
use crate::messages::{send, wait_status};
use reqwest::Method;
use serde_json::json;
use smsgw_proto::sms::v1::{SmsRequest, sms_service_client::SmsServiceClient};
use std::net::SocketAddr;
use std::time::Duration;

/// Links `sim-link` (to `a`, in pool `default`) and `kenya-link` (to `b`),
/// plus `routes` (YAML documents).
fn config(a: SocketAddr, b: SocketAddr, routes: &str) -> String {
    let second = sim_config(b)
        .split("---")
        .next()
        .unwrap()
        .replace("name: sim-link", "name: kenya-link");
    format!("{}---\n{second}---\n{routes}", sim_config(a))
}

const ROUTES: &str = r#"apiVersion: smsgw.io/v1alpha1
kind: Route
metadata: {name: kenya}
spec:
  order: 10
  target: kenya-link
  destinationPrefixes: ["+254"]
---
apiVersion: smsgw.io/v1alpha1
kind: Route
metadata: {name: bank-alerts}
spec:
  order: 5
  target: kenya-link
  senders: [MYBANK]
---
apiVersion: smsgw.io/v1alpha1
kind: Route
metadata: {name: other-app-only}
spec:
  order: 1
  target: kenya-link
  window: {start: "00:00", end: "00:00", days: []}
  apps: [no-such-app]
---
apiVersion: smsgw.io/v1alpha1
kind: Route
metadata: {name: fallback}
spec:
  order: 1000
  target: default
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_without_esme_should_go_where_the_first_matching_route_says() {
    let (a, b) = (Sim::start("127.0.0.1:0"), Sim::start("127.0.0.1:0"));
    let gw = Gateway::standalone(&config(a.addr, b.addr, ROUTES));
    let creds = gw.user("routes@example.com").await;
    bound(&gw, &creds).await;

    // (destination, source) → the target the table must choose.
    let cases = [
        ("+254712345678", "SMSGW", "kenya-link", "kenya-link"),
        ("+4915112345678", "MYBANK", "kenya-link", "kenya-link"),
        ("+4915112345678", "SMSGW", "default", "sim-link"),
    ];
    for (i, (destination, source, esme, link)) in cases.iter().enumerate() {
        let (status, r) = send(
            &gw,
            &creds,
            json!({"source": source, "destination": destination, "message": format!("routed {i}"), "transaction_id": format!("route-{i}")}),
        )
        .await;
        assert_eq!(status, 200, "{destination} from {source}: {r}");
        assert_eq!(r["esme"], *esme, "{destination} from {source}: {r}");
        let id = r["message_id"].as_str().unwrap();
        let v = wait_status(&gw, &creds, id, "delivered", Duration::from_secs(10)).await;
        assert_eq!(
            (v["esme"].as_str(), v["link"].as_str()),
            (Some(*esme), Some(*link)),
            "{v}"
        );
    }
    // A named esme still wins over the table.
    let (status, r) = send(
        &gw,
        &creds,
        json!({"esme": "sim-link", "source": "SMSGW", "destination": "+254700000001", "message": "named", "transaction_id": "named"}),
    )
    .await;
    assert_eq!((status, r["esme"].as_str()), (200, Some("sim-link")), "{r}");
    // gRPC routes the same way.
    let mut client = SmsServiceClient::new(gw.channel().await);
    let r = client
        .send_message(creds.grpc(SmsRequest {
            transaction_id: "route-grpc".into(),
            saddr: "SMSGW".into(),
            daddr: "254733000000".into(),
            message: "over grpc".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.esme, "kenya-link", "{r:?}");
    let id = r.message_id.clone();
    wait_status(&gw, &creds, &id, "delivered", Duration::from_secs(10)).await;
    drop(gw);
    // Exactly the three messages routed to Kenya reached its SMSC.
    assert_eq!(b.stop_and_count_submits(), 3);
    assert_eq!(a.stop_and_count_submits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_no_route_matches_should_be_refused_and_store_nothing() {
    let (a, b) = (Sim::start("127.0.0.1:0"), Sim::start("127.0.0.1:0"));
    let kenya_only = ROUTES.split("---").next().unwrap();
    let gw = Gateway::standalone(&config(a.addr, b.addr, kenya_only));
    let creds = gw.user("noroute@example.com").await;
    bound(&gw, &creds).await;
    let (status, r) = send(
        &gw,
        &creds,
        json!({"source": "SMSGW", "destination": "+4915112345678", "message": "nowhere", "transaction_id": "no-route-1"}),
    )
    .await;
    assert_eq!(status, 400, "{r}");
    assert_eq!(r["error"]["code"], "no_route", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("4915112345678"),
        "{r}"
    );
    let lookup = gw
        .authed(&creds, Method::GET, "/api/v1/sms?transaction_id=no-route-1")
        .send()
        .await
        .unwrap();
    assert_eq!(lookup.status(), 404, "a refused send must store nothing");
    // A bad destination is refused as such before any route is tried.
    let (status, r) = send(
        &gw,
        &creds,
        json!({"source": "SMSGW", "destination": "12", "message": "bad"}),
    )
    .await;
    assert_eq!(
        (status, r["error"]["code"].as_str()),
        (400, Some("invalid_destination")),
        "{r}"
    );
    drop(gw);
    assert_eq!(a.stop_and_count_submits() + b.stop_and_count_submits(), 0);
}

#[test]
fn a_route_to_a_target_that_does_not_exist_should_stop_the_gateway_with_the_field_named() {
    let sim: SocketAddr = "127.0.0.1:9".parse().unwrap();
    for (spec, field) in [
        ("{target: nowhere}", "spec.target"),
        (
            "{target: default, window: {start: \"8:00\", end: \"18:00\"}}",
            "spec.window.start",
        ),
        (
            "{target: default, window: {start: \"08:00\", end: \"18:00\", timeZone: Mars/Olympus}}",
            "spec.window.timeZone",
        ),
    ] {
        let file = write_config(&config(
            sim,
            sim,
            &format!(
                "apiVersion: smsgw.io/v1alpha1\nkind: Route\nmetadata: {{name: lost}}\nspec: {spec}\n"
            ),
        ));
        let (status, stderr) =
            run_to_end(&["standalone", "--config", file.path().to_str().unwrap()]);
        assert!(!status.success(), "{stderr}");
        assert!(stderr.contains("Route \"lost\""), "{stderr}");
        assert!(stderr.contains(field), "{field}: {stderr}");
    }
}
