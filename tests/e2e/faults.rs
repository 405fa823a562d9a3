//! An SMSC that drops or stalls a session (issue 21), through the real
//! binary against `smsgw smsc-sim` with fault injection: nothing the
//! gateway acknowledged is lost, and the only messages the SMSC got twice
//! are the ones marked `possible_duplicate`.

use crate::harness::{Creds, Gateway, Sim, bound, sim_config};
use crate::messages::{info, send, wait_status};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

const MESSAGES: usize = 12;

fn free_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

async fn sim_stats(admin: &str) -> Value {
    reqwest::get(format!("http://{admin}/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Sends `MESSAGES` messages one after the other (each waits for its
/// submission), each with its own text, and returns their ids by text
/// once every one is delivered.
async fn send_all(gw: &Gateway, creds: &Creds, tag: &str) -> Vec<(String, String)> {
    let mut sent = Vec::new();
    for i in 0..MESSAGES {
        let text = format!("{tag} {i}");
        let r = gw
            .authed(creds, Method::POST, "/api/v1/sms/send")
            .json(&json!({
                "esme": "sim-link", "source": "SMSGW",
                "destination": format!("+491510000{i:04}"), "message": text,
                "transaction_id": format!("{tag}-{i}"), "wait_for_submit": true,
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        let v: Value = r.json().await.unwrap();
        sent.push((text, v["message_id"].as_str().unwrap().to_owned()));
    }
    sent
}

/// Every acknowledged message reached the SMSC and is delivered, and the
/// texts the SMSC took twice are all marked `possible_duplicate`. Returns
/// the marked texts and those the SMSC took twice.
async fn assert_nothing_lost_and_duplicates_marked(
    gw: &Gateway,
    creds: &Creds,
    admin: &str,
    sent: &[(String, String)],
) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut marked = BTreeSet::new();
    for (text, id) in sent {
        let v = wait_status(gw, creds, id, "delivered", Duration::from_secs(20)).await;
        if v["possible_duplicate"] == true {
            assert!(
                v["segments"][0]["resubmitted"] == true,
                "a marked message names its resubmitted segment: {v}"
            );
            marked.insert(text.clone());
        } else {
            assert_eq!(v["possible_duplicate"], false, "{v}");
        }
    }
    let stats = sim_stats(admin).await;
    assert_eq!(
        stats["submissions"]["distinct"], MESSAGES,
        "every acknowledged message reached the SMSC: {stats}"
    );
    let twice: BTreeSet<String> = stats["submissions"]["repeated"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[1].as_str().unwrap().to_owned())
        .collect();
    assert!(
        twice.is_subset(&marked),
        "duplicates only where marked: {stats}"
    );
    let metrics = gw.metrics().await;
    let line = format!(
        "smsgw_link_resubmitted_total{{link=\"sim-link\"}} {}",
        marked.len()
    );
    assert!(metrics.contains(&line), "{line} not in the metrics");
    (marked, twice)
}

#[tokio::test]
async fn a_connection_dropped_between_a_submit_and_its_response_loses_nothing() {
    let admin = free_port();
    let sim = Sim::start_with(
        "127.0.0.1:0",
        &[
            "--drop-after-submits",
            "5",
            "--drop-before-response",
            "--track-submits",
            "--redeliver-receipts",
            "--admin-listen",
            &admin,
        ],
    );
    let gw = Gateway::standalone(&sim_config(sim.addr));
    let creds = gw.user("faults-drop@example.com").await;
    bound(&gw, &creds).await;
    let sent = send_all(&gw, &creds, "drop").await;
    let (marked, twice) =
        assert_nothing_lost_and_duplicates_marked(&gw, &creds, &admin, &sent).await;
    // The 5th was read, never answered, its connection closed: sent again
    // on a healthy session and marked (this SMSC did not keep the lost
    // copy, so it took no message twice).
    assert_eq!(marked, BTreeSet::from(["drop 4".to_owned()]));
    assert!(twice.is_empty(), "{twice:?}");
    assert_eq!(sim_stats(&admin).await["counters"]["drops"], 1);
}

#[tokio::test]
async fn a_stalled_session_loses_nothing_and_its_resubmissions_are_marked() {
    let admin = free_port();
    // The connection that gets the 5th submit_sm stops answering for 30 s
    // (far longer than the test): only the gateway's stall detection (a
    // 1 s response timeout) and resubmission can get its message through.
    let sim = Sim::start_with(
        "127.0.0.1:0",
        &[
            "--stall-after-submits",
            "5",
            "--stall-for",
            "30s",
            "--track-submits",
            "--redeliver-receipts",
            "--admin-listen",
            &admin,
        ],
    );
    let gw = Gateway::standalone(&sim_config(sim.addr));
    let creds = gw.user("faults-stall@example.com").await;
    bound(&gw, &creds).await;
    let sent = send_all(&gw, &creds, "stall").await;
    let (marked, twice) =
        assert_nothing_lost_and_duplicates_marked(&gw, &creds, &admin, &sent).await;
    // The stalled connection took the 5th (its answer held back) before
    // it was closed: that one went out twice, and is marked.
    assert!(twice.contains("stall 4"), "{twice:?}");
    assert_eq!(marked, twice);
    assert_eq!(sim_stats(&admin).await["counters"]["stalls"], 1);
}

#[tokio::test]
async fn a_gateway_killed_with_receipts_outstanding_gets_every_one_after_restart() {
    let admin = free_port();
    // Receipts come 300 ms after each submit, so the last ones are still
    // owed when the gateway is killed; the SMSC keeps every receipt it got
    // no ESME_ROK for, and the gateway answers only once it stored one.
    let sim = Sim::start_with(
        "127.0.0.1:0",
        &[
            "--receipt-delay",
            "300ms",
            "--redeliver-receipts",
            "--track-submits",
            "--admin-listen",
            &admin,
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let config = sim_config(sim.addr);
    let email = "faults-kill@example.com";
    let gw = Gateway::standalone_in(&config, dir.path(), &[]);
    let creds = gw.user(email).await;
    bound(&gw, &creds).await;
    let sent = send_all(&gw, &creds, "kill").await;
    drop(gw); // SIGKILL
    let gw = Gateway::standalone_in(&config, dir.path(), &[]);
    let creds = gw.login_again(&creds, email).await;
    for (_, id) in &sent {
        let v = wait_status(&gw, &creds, id, "delivered", Duration::from_secs(20)).await;
        assert_eq!(v["possible_duplicate"], false, "{v}");
    }
    let stats = sim_stats(&admin).await;
    assert_eq!(stats["submissions"]["distinct"], MESSAGES, "{stats}");
    assert_eq!(
        stats["submissions"]["repeated"].as_array().unwrap().len(),
        0,
        "nothing submitted twice: {stats}"
    );
    assert!(
        stats["counters"]["receipts_redelivered"].as_u64().unwrap() >= 1,
        "receipts owed at the kill came on the new bind: {stats}"
    );
}

#[tokio::test]
async fn an_smsc_frozen_mid_window_gets_the_unknown_segment_again_marked_once_it_answers() {
    let admin = free_port();
    let sim = Sim::start_with(
        "127.0.0.1:0",
        &[
            "--track-submits",
            "--redeliver-receipts",
            "--admin-listen",
            &admin,
        ],
    );
    let gw = Gateway::standalone(&sim_config(sim.addr));
    let creds = gw.user("faults-freeze@example.com").await;
    bound(&gw, &creds).await;
    sim.signal("STOP");
    let send = gw
        .authed(&creds, Method::POST, "/api/v1/sms/send")
        .json(&json!({
            "esme": "sim-link", "source": "SMSGW", "destination": "4915100000099",
            "message": "into the freeze", "transaction_id": "freeze-1", "wait_for_submit": true,
        }))
        .send();
    let send = tokio::spawn(send);
    // Frozen for 3 s (both sessions time out and are closed as stalled),
    // well within the link's 30 s wait for a healthy session to resubmit on.
    tokio::time::sleep(Duration::from_secs(3)).await;
    sim.signal("CONT");
    let r = send.await.unwrap().unwrap();
    assert_eq!(r.status(), 200);
    let r: Value = r.json().await.unwrap();
    // Under the default `resubmit` the segment whose session was closed
    // unanswered goes out again once a session is healthy: delivered, and
    // marked, since the frozen SMSC may have kept the first copy.
    let v = wait_status(
        &gw,
        &creds,
        r["message_id"].as_str().unwrap(),
        "delivered",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(v["possible_duplicate"], true, "{v}");
    let stats = sim_stats(&admin).await;
    assert_eq!(stats["submissions"]["distinct"], 1, "{stats}");
}

/// The crash window: a gateway killed after its submit_sm went out and
/// before the SMSC's answer was stored. After the restart the sweeper
/// finds the message still `accepted` with its submitter's lease lapsed,
/// so it may have reached the SMSC: under `policy` it goes out again
/// marked, or stays `unknown`. Answers the message's record and the
/// simulator's statistics.
async fn killed_mid_submission(policy: &str) -> (Value, Value, String) {
    let admin = free_port();
    // The connection that reads the first submit_sm never answers it (for
    // longer than the test), so the gateway is killed while waiting.
    let sim = Sim::start_with(
        "127.0.0.1:0",
        &[
            "--stall-after-submits",
            "1",
            "--stall-for",
            "120s",
            "--track-submits",
            "--admin-listen",
            &admin,
        ],
    );
    let config = sim_config(sim.addr)
        .replace("responseTimeout: 1s", "responseTimeout: 60s")
        .replace(
            "  messageIdFormat: hex\n",
            &format!("  messageIdFormat: hex\n  unknownPolicy: {policy}\n"),
        );
    let dir = tempfile::tempdir().unwrap();
    let email = format!("faults-window-{policy}@example.com");
    let gw = Gateway::standalone_in(&config, dir.path(), &[]);
    let creds = gw.user(&email).await;
    bound(&gw, &creds).await;
    let (status, r) = send(
        &gw,
        &creds,
        json!({
            "esme": "sim-link", "source": "SMSGW", "destination": "4915100000042",
            "message": "in the crash window", "transaction_id": "window-1",
        }),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    let id = r["message_id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sim_stats(&admin).await["submissions"]["distinct"] != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the SMSC never read the submit_sm"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(gw); // SIGKILL, the submit_sm unanswered
    let gw = Gateway::standalone_in(&config, dir.path(), &["--sweep-after", "1s"]);
    let creds = gw.login_again(&creds, &email).await;
    let want = if policy == "hold" {
        "unknown"
    } else {
        "delivered"
    };
    // The creator's lease (its 10 s retry window and 2 s) must lapse first.
    let v = wait_status(&gw, &creds, &id, want, Duration::from_secs(40)).await;
    let metrics = gw.metrics().await;
    (v, sim_stats(&admin).await, metrics)
}

#[tokio::test]
async fn a_gateway_killed_before_storing_a_submit_answer_resubmits_it_marked() {
    let (v, stats, metrics) = killed_mid_submission("resubmit").await;
    assert_eq!(v["possible_duplicate"], true, "{v}");
    assert_eq!(v["segments"][0]["resubmitted"], true, "{v}");
    assert_eq!(stats["submissions"]["distinct"], 1, "{stats}");
    let twice = stats["submissions"]["repeated"].as_array().unwrap();
    assert_eq!(twice.len(), 1, "the SMSC got it twice, marked: {stats}");
    assert!(
        metrics.contains("smsgw_sweeper_in_doubt_total{policy=\"resubmit\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_gateway_killed_before_storing_a_submit_answer_holds_it_unknown_under_hold() {
    let (v, stats, metrics) = killed_mid_submission("hold").await;
    assert_eq!(v["possible_duplicate"], false, "{v}");
    assert_eq!(stats["submissions"]["distinct"], 1, "{stats}");
    assert_eq!(
        stats["submissions"]["repeated"].as_array().unwrap().len(),
        0,
        "not sent again: {stats}"
    );
    assert!(
        metrics.contains("smsgw_sweeper_in_doubt_total{policy=\"hold\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_smsc_restarted_with_the_same_message_ids_settles_each_message_with_its_own_receipts() {
    // The simulator numbers its message ids from 1 in hex: restarted, it
    // hands out the same ids again, as SMSCs that keep no counter do.
    let sim = Sim::start("127.0.0.1:0");
    let addr = sim.addr;
    let gw = Gateway::standalone(&sim_config(addr));
    let creds = gw.user("faults-reuse@example.com").await;
    bound(&gw, &creds).await;
    let send_three = async |tag: &str| {
        let mut out = Vec::new();
        for i in 0..3 {
            let (status, r) = send(
                &gw,
                &creds,
                json!({
                    "esme": "sim-link", "source": "SMSGW",
                    "destination": format!("49151000077{i:02}"), "message": format!("{tag} {i}"),
                    "transaction_id": format!("{tag}-{i}"), "wait_for_submit": true,
                }),
            )
            .await;
            assert_eq!(status, 200, "{r}");
            let id = r["message_id"].as_str().unwrap().to_owned();
            out.push(wait_status(&gw, &creds, &id, "delivered", Duration::from_secs(20)).await);
        }
        out
    };
    let smsc_ids = |msgs: &[Value]| -> BTreeSet<String> {
        msgs.iter()
            .map(|m| {
                m["segments"][0]["smsc_message_id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    let before = send_three("before").await;
    sim.kill();
    let _sim = Sim::start(&addr.to_string());
    bound(&gw, &creds).await;
    let after = send_three("after").await;
    assert_eq!(
        smsc_ids(&before),
        smsc_ids(&after),
        "the restarted SMSC reused its ids"
    );
    // Each new message got its own receipt, and the earlier messages with
    // the same SMSC ids were not touched by them.
    for old in &before {
        let now = info(&gw, &creds, old["message_id"].as_str().unwrap()).await;
        assert_eq!(
            &now, old,
            "a receipt for a reused id changed an earlier message"
        );
    }
}

#[tokio::test]
async fn the_simulator_lists_each_submit_sm_with_when_it_arrived() {
    // What the cluster benchmark (scenario 7) times accept → submit_sm by.
    let admin = free_port();
    let sim = Sim::start_with(
        "127.0.0.1:0",
        &["--track-submits", "--admin-listen", &admin],
    );
    let gw = Gateway::standalone(&sim_config(sim.addr));
    let creds = gw.user("faults-seen@example.com").await;
    bound(&gw, &creds).await;
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    let before = now_ms();
    let sent = send_all(&gw, &creds, "seen").await;
    let after = now_ms();
    let seen = |from: usize| {
        let admin = admin.clone();
        async move {
            let r = reqwest::get(format!("http://{admin}/seen?from={from}"))
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let all = seen(0).await;
    assert_eq!(all["total"], MESSAGES, "{all}");
    let submits = all["submits"].as_array().unwrap();
    // In the order they were sent (each waited for its submission), each
    // stamped within the sends.
    for (i, s) in submits.iter().enumerate() {
        assert_eq!(s[0], format!("491510000{i:04}"), "{all}");
        let at = s[1].as_u64().unwrap();
        assert!(
            (before..=after).contains(&at),
            "{at} not in {before}..={after}"
        );
    }
    assert_eq!(sent.len(), MESSAGES);
    // `from` skips what was read before; past the end, nothing.
    let tail = seen(MESSAGES - 2).await;
    assert_eq!(tail["from"], MESSAGES - 2);
    assert_eq!(tail["submits"].as_array().unwrap().len(), 2);
    assert_eq!(tail["submits"][1], submits[MESSAGES - 1]);
    let past = seen(1_000_000).await;
    assert_eq!(past["total"], MESSAGES);
    assert!(past["submits"].as_array().unwrap().is_empty());
}
