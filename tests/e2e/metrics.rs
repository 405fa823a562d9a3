//! The metrics catalogue (METRICS.md) against what a running gateway
//! exports, and the Grafana dashboard shipped with the chart against the
//! catalogue.

use crate::harness::{Gateway, Sim, bound, eventually, sim_config};
use reqwest::Method;
use serde_json::{Value, json};
use smsgw_proto::sms::v1::{CheckTextLenRequest, sms_service_client::SmsServiceClient};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const CATALOGUE: &str = include_str!("../../METRICS.md");
const DASHBOARD: &str = include_str!("../../charts/smsgw/dashboards/smsgw.json");

/// Series names of METRICS.md's tables, with their type.
fn catalogue() -> BTreeMap<String, String> {
    CATALOGUE
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix("`smsgw_")?.strip_suffix('`')?;
            Some((format!("smsgw_{name}"), cells.get(2)?.to_string()))
        })
        .collect()
}

/// Series names in a Prometheus text exposition (`# TYPE` lines; counters
/// are queried with `_total`), with their type.
fn exported(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.strip_prefix("# TYPE ")?.split_whitespace();
            let (name, kind) = (it.next()?, it.next()?);
            let name = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            Some((name, kind.to_owned()))
        })
        .collect()
}

const POLICY: &str = "---\napiVersion: smsgw.io/v1alpha1\nkind: ContactPolicy\nmetadata: {name: cp1}\nspec: {frequency: {daily: 5, weekly: 10, timeZone: Europe/Berlin}}\n";

#[tokio::test]
async fn every_exported_metric_is_in_the_catalogue_and_every_catalogued_one_is_exported() {
    // Half the receipts fail, so delivered and failed both occur.
    let sim = Sim::start_with("127.0.0.1:0", &["--receipt-mix", "1,1,0,0"]);
    // With the journal on (a local bucket), so its and the S3 series show.
    let gw = Gateway::standalone_with_args(
        &format!("{}{POLICY}", sim_config(sim.addr)),
        &[
            "--journal-bucket",
            "journal",
            "--journal-batch-age",
            "200ms",
            "--metrics-per-app",
        ],
    );
    let creds = gw.user("metrics@example.com").await;
    bound(&gw, &creds).await;
    for i in 0..6 {
        let r = gw
            .authed(&creds, Method::POST, "/api/v1/sms/send")
            .json(&json!({"esme": "default", "source": "SMSGW", "destination": format!("+49151000002{i:02}"), "message": "hi", "strategy": "cp1"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // A refusal, a text analysis over REST and one over gRPC.
    let r = gw
        .authed(&creds, Method::POST, "/api/v1/sms/send")
        .json(&json!({"esme": "default", "source": "SMSGW", "destination": "12", "message": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    gw.authed(&creds, Method::POST, "/api/v1/sms/check-text-len")
        .json(&json!({"message": "hi"}))
        .send()
        .await
        .unwrap();
    SmsServiceClient::new(gw.channel().await)
        .check_text_len(creds.grpc(CheckTextLenRequest {
            message: "hi".into(),
            esme: String::new(),
        }))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let scrape = async || {
        http.get(gw.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let mut text = String::new();
    let ready = eventually(Duration::from_secs(10), async || {
        text = scrape().await;
        text.contains("smsgw_messages_delivered_total{")
            && text.contains("smsgw_messages_failed_total{")
            && text.contains("smsgw_link_enquire_link_rtt_seconds{")
            && text.contains(r#"smsgw_s3_request_duration_seconds_count{op="put",result="ok"}"#)
    })
    .await;
    assert!(
        ready.is_some(),
        "receipts or enquire_link never showed:\n{text}"
    );
    // Scraping once more counts the scrape itself.
    let text = scrape().await;
    let (catalogue, exported) = (catalogue(), exported(&text));
    assert!(catalogue.len() >= 25, "catalogue not parsed: {catalogue:?}");
    let missing: Vec<_> = catalogue
        .keys()
        .filter(|n| !exported.contains_key(*n))
        .collect();
    let undocumented: Vec<_> = exported
        .keys()
        .filter(|n| !catalogue.contains_key(*n))
        .collect();
    assert!(
        missing.is_empty() && undocumented.is_empty(),
        "in METRICS.md but not exported: {missing:?}\nexported but not in METRICS.md: {undocumented:?}\n{text}"
    );
    for (name, kind) in &exported {
        assert_eq!(
            &catalogue[name], kind,
            "{name}: METRICS.md says another type"
        );
    }
    // The counters behind the dashboard count what happened.
    for line in [
        r#"smsgw_messages_submitted_total{scope="pool",name="default"} 6"#,
        r#"smsgw_policy_decisions_total{strategy="cp1",outcome="pass"} 6"#,
        r#"smsgw_link_up{link="sim-link"} 1"#,
        r#"smsgw_link_sessions_bound{link="sim-link"} 2"#,
        r#"smsgw_link_window{link="sim-link"} 32"#,
    ] {
        assert!(text.contains(line), "{line} missing in\n{text}");
    }
    assert!(
        text.contains(&format!(
            r#"smsgw_messages_refused_total{{scope="app",name="{}",reason="invalid_destination"}} 1"#,
            creds.app_id
        )),
        "{text}"
    );
}

/// Every PromQL expression (panel targets and template queries).
fn expressions(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                    _ => expressions(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| expressions(v, out)),
        _ => {}
    }
}

#[test]
fn the_dashboard_queries_only_catalogued_metrics_and_covers_the_catalogue() {
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("dashboard is JSON");
    assert_eq!(dashboard["uid"], "smsgw-overview");
    let catalogue = catalogue();
    let mut exprs = Vec::new();
    expressions(&dashboard, &mut exprs);
    assert!(exprs.len() > 20, "{exprs:?}");
    let mut used = BTreeSet::new();
    for e in &exprs {
        let balanced = |open: char, close: char| {
            e.chars().try_fold(0i32, |depth, c| {
                let d = depth + i32::from(c == open) - i32::from(c == close);
                (d >= 0).then_some(d)
            }) == Some(0)
        };
        assert!(
            balanced('(', ')') && balanced('{', '}') && balanced('[', ']'),
            "unbalanced: {e}"
        );
        let mut rest = e.as_str();
        while let Some(at) = rest.find("smsgw_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|b| catalogue.get(*b).is_some_and(|t| t == "histogram"))
                })
                .unwrap_or(&name)
                .to_owned();
            assert!(
                catalogue.contains_key(&base),
                "{name} in the dashboard is not in METRICS.md: {e}"
            );
            used.insert(base);
        }
    }
    let uncovered: Vec<_> = catalogue.keys().filter(|n| !used.contains(*n)).collect();
    assert!(uncovered.is_empty(), "no panel shows {uncovered:?}");
    // Every panel queries through the dashboard's data-source variable.
    for p in dashboard["panels"].as_array().unwrap() {
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
            assert!(!p["targets"].as_array().unwrap().is_empty());
        }
    }
}
