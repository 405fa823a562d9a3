//! The external MCP client against the real Node-RED 4 flow in `mcp/`
//! (installed from npm with `npm ci` when missing), on a real Redis.

use smsgw_contact::testing::{NodeRed, free_port};
use smsgw_contact::{FailMode, McpClient, McpConfig, Policies, RedisBlacklists, RedisEngine};
use smsgw_core::policy::{
    BlacklistSink, PolicyEngine, PolicyError, PolicyRequest, PolicyState, Verdict,
};
use smsgw_store::testing::RedisServer;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const TOKEN: &str = "test-token-0123456789";

async fn start_node_red(redis_url: &str) -> NodeRed {
    NodeRed::start(
        redis_url,
        TOKEN,
        r#"{"cp1":{"daily":2,"weekly":5,"blacklists":["default"]}}"#,
    )
    .await
}

fn req<'a>(strategy: &'a str, dest: &'a str) -> PolicyRequest<'a> {
    PolicyRequest {
        strategy,
        app_id: "app",
        source: "ACME",
        destination: dest,
        text: "hello",
        destination_time_zone: None,
    }
}

fn client(url: &str, token: Option<&str>, mode: FailMode) -> McpClient {
    let mut c = McpConfig::new(url);
    c.token = token.map(str::to_owned);
    c.timeout = Duration::from_secs(2);
    c.fail_mode = mode;
    McpClient::new(c).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_client_should_get_node_red_verdicts() {
    let redis = RedisServer::start();
    let nr = start_node_red(&redis.url()).await;
    let url = format!("http://127.0.0.1:{}/api/v1/check", nr.port);
    let mcp = client(&url, Some(TOKEN), FailMode::Closed);
    assert!(mcp.health().await);

    // cp1: a daily cap of 2.
    let a = "+33 6 00 00 00 01";
    for _ in 0..2 {
        assert_eq!(
            mcp.check(&req("cp1", a)).await.unwrap().verdict,
            Verdict::OK
        );
    }
    assert_eq!(
        mcp.check(&req("cp1", a)).await.unwrap().verdict,
        Verdict::refuse(PolicyState::DailyCp)
    );

    // The flow keeps the native engine's key layout: both see one count.
    let conn = redis::Client::open(redis.url())
        .unwrap()
        .get_connection_manager()
        .await
        .unwrap();
    let specs: BTreeMap<String, smsgw_crds::ContactPolicySpec> =
        serde_yaml::from_str("cp1: {frequency: {daily: 2, weekly: 5}, blacklists: [default]}")
            .unwrap();
    let native = RedisEngine::new(conn.clone(), "smsgw", Policies::compile(&specs).0.shared());
    assert_eq!(
        native.check(&req("cp1", a)).await.unwrap().verdict.state,
        PolicyState::DailyCp
    );

    // Blacklists loaded the gateway's way are seen by the flow.
    let bl = RedisBlacklists::new(conn, "smsgw");
    let mut load = bl.begin("default").await.unwrap();
    load.add(&["447911123456".into()], &["4930".into()])
        .await
        .unwrap();
    load.commit().await.unwrap();
    for (strategy, dest) in [
        ("blacklist", "+447911123456"),
        ("cp1", "00447911123456"),
        ("blacklist", "+49301234567"),
    ] {
        assert_eq!(
            mcp.check(&req(strategy, dest)).await.unwrap().verdict,
            Verdict::refuse(PolicyState::Blacklist),
            "{strategy} {dest}"
        );
    }
    assert_eq!(
        mcp.check(&req("blacklist", "+447911000000"))
            .await
            .unwrap()
            .verdict,
        Verdict::OK
    );

    // cp2 deduplicates (and has a daily cap of 1).
    let b = "+33600000002";
    assert_eq!(
        mcp.check(&req("cp2", b)).await.unwrap().verdict,
        Verdict::OK
    );
    assert!(!mcp.check(&req("cp2", b)).await.unwrap().verdict.pass);

    // Unknown strategy.
    assert_eq!(
        mcp.check(&req("nope", a)).await.unwrap_err(),
        PolicyError::UnknownStrategy("nope".into())
    );

    // A wrong token is a failure: refused when closed, passed when open.
    let bad = client(&url, Some("wrong"), FailMode::Closed);
    assert!(matches!(
        bad.check(&req("cp1", "+33600000003")).await,
        Err(PolicyError::Backend(_))
    ));
    let open = client(&url, None, FailMode::Open);
    assert_eq!(
        open.check(&req("cp1", "+33600000003"))
            .await
            .unwrap()
            .verdict,
        Verdict::OK
    );
    assert_eq!(open.stats.fail_open_passes.load(Ordering::Relaxed), 1);

    // Node-RED's metrics count per strategy.
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", nr.port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"mcp_checks_total{strategy="cp1",state="daily_cp"} 1"#),
        "{metrics}"
    );

    // Redis down: the flow answers 503 and its health fails.
    drop(redis);
    assert!(matches!(
        mcp.check(&req("cp1", "+33600000004")).await,
        Err(PolicyError::Backend(_))
    ));
    assert!(!mcp.health().await);
}

#[tokio::test]
async fn an_unreachable_mcp_should_follow_the_fail_mode() {
    let url = format!("http://127.0.0.1:{}/api/v1/check", free_port());
    let closed = client(&url, Some(TOKEN), FailMode::Closed);
    assert!(closed.check(&req("cp1", "+33600000001")).await.is_err());
    assert_eq!(closed.stats.failures.load(Ordering::Relaxed), 1);
    let open = client(&url, Some(TOKEN), FailMode::Open);
    assert!(
        open.check(&req("cp1", "+33600000001"))
            .await
            .unwrap()
            .verdict
            .pass
    );
    assert!(!open.health().await);
}

#[tokio::test]
async fn a_slow_mcp_should_time_out() {
    // A listener that accepts and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let mut c = McpConfig::new(format!("http://127.0.0.1:{port}/api/v1/check"));
    c.timeout = Duration::from_millis(200);
    c.fail_mode = FailMode::Closed;
    let mcp = McpClient::new(c).unwrap();
    let t0 = Instant::now();
    assert_eq!(
        mcp.check(&req("cp1", "+33600000001")).await.unwrap_err(),
        PolicyError::Timeout(Duration::from_millis(200))
    );
    assert!(t0.elapsed() < Duration::from_secs(2));
    hold.abort();
}
