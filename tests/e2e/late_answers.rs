//! Late answers (issue 15): a `submit_sm` answered after its timeout settles
//! its segment on the pod holding the bind, even when another pod accepted
//! the message and handed it over: the submit carries the message's id as
//! its correlation tag, and the late answer comes back with it.

use crate::harness::{ADMIN_KEY, Gateway, Sim, eventually, sim_config};
use crate::messages::{send, wait_status};
use serde_json::json;
use std::time::Duration;

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// The harness's configuration (link `sim-link` to `addr`) with one session
/// whose `submit_sm` time out after 1 s on a connection that stays open (no
/// stall detection, a slow keep-alive), so that an answer after it is a
/// late one.
fn late_config(addr: std::net::SocketAddr) -> String {
    let c = sim_config(addr)
        .replace("  sessions: 2\n", "  sessions: 1\n")
        .replace(
            "  enquireLinkInterval: 1s\n",
            "  enquireLinkInterval: 60s\n  stallAfterTimeouts: 0\n",
        );
    assert!(c.contains("stallAfterTimeouts: 0") && c.contains("sessions: 1"));
    c
}

#[tokio::test]
async fn a_late_answer_on_the_pod_holding_the_bind_settles_a_message_another_pod_accepted() {
    let redis = smsgw_store::testing::RedisServer::start();
    let url = redis.url();
    // The SMSC answers the first submit_sm (a warm-up) at once, holds its
    // answer to the second for 3 s, past the link's 1 s response timeout,
    // then sends it (and the receipt).
    let sim = Sim::start_with(
        "127.0.0.1:0",
        &["--stall-after-submits", "2", "--stall-for", "3s"],
    );
    // Nothing listens where pod b's copy of the link points: b never binds
    // and hands every message for sim-link to a.
    let dead: std::net::SocketAddr = free_addr().parse().unwrap();
    let keys = "k1=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    let env = [("ADMIN_API_KEY", ADMIN_KEY), ("SMSGW_JWT_KEYS", keys)];
    let (listen_a, listen_b) = (free_addr(), free_addr());
    let pod = |name: &str, listen: &str| -> Vec<String> {
        [
            "--store",
            "redis",
            "--redis-url",
            url.as_str(),
            "--pod-name",
            name,
            "--dispatch-listen",
            listen,
            "--dispatch-token",
            "dispatch-token-late",
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let args_a = pod("late-a", &listen_a);
    let args_b = pod("late-b", &listen_b);
    let args_a: Vec<&str> = args_a.iter().map(String::as_str).collect();
    let args_b: Vec<&str> = args_b.iter().map(String::as_str).collect();
    let a = Gateway::spawn(&late_config(sim.addr), &env, &args_a);
    let b = Gateway::spawn(&late_config(dead), &env, &args_b);
    let creds = a.user("late-answers@example.com").await;
    // b sees a's bind (its view merges every pod's).
    let seen = eventually(Duration::from_secs(15), async || {
        b.links(&creds).await["links"][0]["sessions_bound"] == 1
    })
    .await;
    assert!(seen.is_some(), "pod b never saw pod a's bind");
    // Seeing the bind is not yet reaching it: on a loaded machine b's first
    // hand-off can fail (the message then waits, `accepted`, for a
    // sweeper). Warm up until one hand-off through b is submitted at a.
    let mut tries = 0;
    let warm = eventually(Duration::from_secs(15), async || {
        tries += 1;
        let (status, r) = send(
            &b,
            &creds,
            json!({
                "esme": "sim-link", "source": "SMSGW", "destination": "4915100000076",
                "message": "warm-up", "transaction_id": format!("warm-{tries}"),
                "wait_for_submit": true,
            }),
        )
        .await;
        status == 200 && r["status"] != "accepted"
    })
    .await;
    assert!(warm.is_some(), "no hand-off from pod b reached pod a");

    let (status, r) = send(
        &b,
        &creds,
        json!({
            "esme": "sim-link", "source": "SMSGW", "destination": "4915100000077",
            "message": "answered late", "transaction_id": "late-1", "wait_for_submit": true,
        }),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["status"], "unknown", "timed out at the SMSC: {r}");
    let id = r["message_id"].as_str().unwrap().to_owned();
    // The held answer settles the segment on pod a, and the receipt that
    // follows it delivers the message, seen from either pod.
    let v = wait_status(&b, &creds, &id, "delivered", Duration::from_secs(20)).await;
    assert_eq!(v["possible_duplicate"], false, "{v}");
    let m = a.metrics().await;
    assert!(
        m.contains(r#"smsgw_smpp_late_responses_total{link="sim-link"} 1"#),
        "{m}"
    );
    assert!(
        m.contains("smsgw_smpp_late_responses_unmatched_total 0"),
        "the late answer settled its segment on the holder: {m}"
    );
    let m = b.metrics().await;
    assert!(
        m.contains(r#"smsgw_dispatch_forwarded_total{outcome="submitted"} 2"#),
        "the warm-up and the message, each handed to pod a: {m}"
    );
}
