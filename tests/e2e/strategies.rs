//! The platform's strategy names (`cp1`, `onbuild_cp1`, `cp2`, `blacklist`,
//! `health_check`) through the binary, with the shipped examples'
//! ContactPolicies on each native engine, and with the MCP flow of `mcp/`
//! (Node-RED 4 from npm): the same sends get the same answers.

use crate::harness::{Creds, EXAMPLE_CONFIG, Gateway, Sim, eventually, ready, sim_config};
use crate::policy::send;
use serde_json::{Value, json};
use smsgw_contact::testing::NodeRed;
use smsgw_store::testing::RedisServer;
use std::path::Path;
use std::time::Duration;

/// The number the `default` blacklist holds.
const BLOCKED: &str = "+4915100009999";

/// The shipped standalone example, its link pointed at `sim`.
fn example_on(sim: &Sim) -> String {
    let at = "  host: 127.0.0.1\n  port: 2775\n";
    assert!(EXAMPLE_CONFIG.contains(at), "the example's link moved");
    EXAMPLE_CONFIG.replacen(
        at,
        &format!(
            "  host: \"{}\"\n  port: {}\n",
            sim.addr.ip(),
            sim.addr.port()
        ),
        1,
    )
}

/// The cluster example's ContactPolicies, with a link and pool to `sim`.
fn cluster_policies_on(sim: &Sim) -> String {
    let policies = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/cluster/40-policies.yaml"),
    )
    .unwrap();
    format!("{}---\n{policies}", sim_config(sim.addr))
}

/// A data directory whose local bucket `lists` holds the `default`
/// blacklist (`--blacklist default=lists/default/`, no S3).
fn data_with_blacklist() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let lists = dir.path().join("objects/lists/default");
    std::fs::create_dir_all(&lists).unwrap();
    std::fs::write(lists.join("numbers.csv"), format!("{BLOCKED}\n")).unwrap();
    dir
}

const BLACKLIST_ARGS: [&str; 2] = ["--blacklist", "default=lists/default/"];

fn msg(strategy: &str, dest: &str, text: &str) -> Value {
    json!({"esme": "default", "source": "SMSGW", "destination": dest, "message": text, "strategy": strategy})
}

/// Sends and checks the answer: 200, or the refusal's status and code.
async fn expect(gw: &Gateway, creds: &Creds, strategy: &str, dest: &str, text: &str, want: &str) {
    let (status, v, _) = send(gw, creds, msg(strategy, dest, text)).await;
    let got = match status {
        200 => "ok".to_owned(),
        s => format!("{s} {}", v["error"]["code"].as_str().unwrap_or("?")),
    };
    assert_eq!(got, want, "{strategy} to {dest} ({text:?}): {v}");
}

/// What the MCP flow's strategies do, sent through `gw` (fresh counters).
async fn the_platform_strategies_behave_as_the_flows(gw: &Gateway, creds: &Creds) {
    let d = |n: u32| format!("+4915100009{n:03}");
    // The blacklist is loaded at start, in the background.
    let loaded = eventually(Duration::from_secs(10), async || {
        send(gw, creds, msg("blacklist", BLOCKED, "x")).await.0 == 403
    })
    .await;
    assert!(loaded.is_some(), "the default blacklist never took effect");
    expect(gw, creds, "blacklist", BLOCKED, "x", "403 blacklist").await;
    // blacklist: the list only, no cap.
    for _ in 0..4 {
        expect(gw, creds, "blacklist", &d(1), "x", "ok").await;
    }
    // cp1: 3 a day per destination, then daily_cp; never a listed number.
    for _ in 0..3 {
        expect(gw, creds, "cp1", &d(2), "x", "ok").await;
    }
    expect(gw, creds, "cp1", &d(2), "x", "403 daily_cp").await;
    expect(gw, creds, "cp1", BLOCKED, "x", "403 blacklist").await;
    // onbuild_cp1: cp1's rules with counters of its own.
    for _ in 0..3 {
        expect(gw, creds, "onbuild_cp1", &d(2), "x", "ok").await;
    }
    expect(gw, creds, "onbuild_cp1", &d(2), "x", "403 daily_cp").await;
    expect(gw, creds, "onbuild_cp1", BLOCKED, "x", "403 blacklist").await;
    // cp2: the same text to the same destination is a duplicate for 24 h,
    // one message a day, never a listed number.
    expect(gw, creds, "cp2", &d(3), "hello", "ok").await;
    expect(gw, creds, "cp2", &d(3), "hello", "403 duplicate").await;
    expect(gw, creds, "cp2", &d(3), "other", "403 daily_cp").await;
    expect(gw, creds, "cp2", BLOCKED, "x", "403 blacklist").await;
    // health_check: everything passes, nothing counts.
    for s in ["health_check", "healthcheck", "health_check"] {
        expect(gw, creds, s, BLOCKED, "ping", "ok").await;
    }
    expect(gw, creds, "cp3", &d(4), "x", "400 unknown_strategy").await;
}

/// The native engines also answer to the policies' resource names, which
/// count against the same caps as their strategy names.
async fn resource_names_share_the_counters(gw: &Gateway, creds: &Creds) {
    let d = "+4915100009002"; // onbuild_cp1's cap is reached for it
    expect(gw, creds, "onbuild-cp1", d, "x", "403 daily_cp").await;
    expect(gw, creds, "health-check", BLOCKED, "x", "ok").await;
    expect(gw, creds, "onbuild-cp1", "+4915100009005", "x", "ok").await;
    for _ in 0..2 {
        expect(gw, creds, "onbuild_cp1", "+4915100009005", "x", "ok").await;
    }
    expect(
        gw,
        creds,
        "onbuild_cp1",
        "+4915100009005",
        "x",
        "403 daily_cp",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_answer_the_platform_strategies_in_process() {
    let sim = Sim::start("127.0.0.1:0");
    for (i, config) in [example_on(&sim), cluster_policies_on(&sim)]
        .iter()
        .enumerate()
    {
        let data = data_with_blacklist();
        let gw = Gateway::standalone_in(config, data.path(), &BLACKLIST_ARGS);
        let creds = ready(&gw, &format!("strategies-{i}@example.com")).await;
        the_platform_strategies_behave_as_the_flows(&gw, &creds).await;
        resource_names_share_the_counters(&gw, &creds).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_answers_the_platform_strategies_on_redis() {
    let redis = RedisServer::start();
    let sim = Sim::start("127.0.0.1:0");
    let data = data_with_blacklist();
    let url = redis.url();
    let mut args = vec!["--policy-engine", "redis", "--policy-redis-url", &url];
    args.extend(BLACKLIST_ARGS);
    let gw = Gateway::standalone_in(&example_on(&sim), data.path(), &args);
    let creds = ready(&gw, "strategies-redis@example.com").await;
    the_platform_strategies_behave_as_the_flows(&gw, &creds).await;
    resource_names_share_the_counters(&gw, &creds).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mcp_flow_answers_the_platform_strategies_the_same_way() {
    const TOKEN: &str = "e2e-mcp-token-strategies-0123";
    let redis = RedisServer::start();
    // The flow's built-in strategies, nothing added.
    let nr = NodeRed::start(&redis.url(), TOKEN, "{}").await;
    let sim = Sim::start("127.0.0.1:0");
    let data = data_with_blacklist();
    let (url, check) = (redis.url(), nr.check_url());
    let mut args = vec![
        "--policy-engine",
        "mcp",
        "--mcp-url",
        &check,
        "--mcp-token",
        TOKEN,
        "--mcp-fail-mode",
        "closed",
        "--policy-redis-url",
        &url,
    ];
    args.extend(BLACKLIST_ARGS);
    let gw = Gateway::standalone_in(&sim_config(sim.addr), data.path(), &args);
    let creds = ready(&gw, "strategies-mcp@example.com").await;
    the_platform_strategies_behave_as_the_flows(&gw, &creds).await;
}
