//! Configuration push (issue 8): the operator's snapshot server (in-process,
//! its index fed directly, without Kubernetes) and two real `smsgw serve`
//! processes exchange versions; the gateways keep serving while the
//! operator is away and come back to it.

use crate::harness::{ADMIN_KEY, EXAMPLE_CONFIG, Gateway, Sim, eventually, sim_config};
use serde_json::{Value, json};
use smsgw_operator::hub::Hub;
use smsgw_operator::server::SnapshotServer;
use std::net::SocketAddr;
use std::time::Duration;

/// The snapshot server on its own runtime, so that stopping it drops every
/// stream at once (as a dying operator pod would).
struct Operator {
    rt: Option<tokio::runtime::Runtime>,
    addr: SocketAddr,
}

impl Operator {
    /// Serves `hub` on `addr` (port 0: an ephemeral one).
    fn start(hub: &Hub, addr: SocketAddr) -> Operator {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let service = SnapshotServer::new(hub.clone()).into_service();
        rt.spawn(async move {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.set_reuseaddr(true).unwrap();
            socket.bind(addr).unwrap();
            let listener = socket.listen(64).unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        let addr = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Operator { rt: Some(rt), addr }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving and drops every open stream.
    fn stop(mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn feed(hub: &Hub, yaml: &str) {
    for (_, r) in smsgw_crds::parse_manifests(yaml).expect("manifests parse") {
        hub.upsert(r);
    }
}

/// Feeds `yaml` and waits (20 s) until every pod applied the version it
/// compiles to; returns that version.
async fn feed_and_apply(hub: &Hub, pods: &[&str], yaml: &str) -> String {
    feed(hub, yaml);
    let v = current_version(hub);
    assert!(
        eventually(Duration::from_secs(20), async || all_applied(hub, pods, &v))
            .await
            .is_some(),
        "acks: {:?}",
        hub.acks()
    );
    v
}

fn current_version(hub: &Hub) -> String {
    hub.current()
        .snapshot
        .as_ref()
        .expect("a snapshot compiled")
        .version
        .clone()
}

/// Whether every pod's last ack applied `version`.
fn all_applied(hub: &Hub, pods: &[&str], version: &str) -> bool {
    let acks = hub.acks();
    pods.iter().all(|p| {
        acks.get(*p)
            .is_some_and(|a| a.applied && a.version == version)
    })
}

/// `(name, sessions bound)` of every link, from the admin API.
async fn links(gw: &Gateway) -> Vec<(String, u64)> {
    let v: Value = reqwest::Client::new()
        .get(gw.url("/api/v1/admin/links"))
        .header("x-admin-key", ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap().to_owned(),
                l["sessions_bound"].as_u64().unwrap(),
            )
        })
        .collect()
}

async fn status(gw: &Gateway, path: &str) -> u16 {
    reqwest::get(gw.url(path))
        .await
        .map_or(0, |r| r.status().as_u16())
}

const POLICY_PUSHED: &str = r#"apiVersion: smsgw.io/v1alpha1
kind: ContactPolicy
metadata: {name: cp-push}
spec:
  frequency: {daily: 5, weekly: 20, timeZone: UTC}
"#;

#[tokio::test]
async fn two_gateways_follow_the_operators_versions_and_survive_its_absence() {
    let (hub, _rejections) = Hub::new();
    let operator = Operator::start(&hub, "127.0.0.1:0".parse().unwrap());
    let pods = ["gw-a", "gw-b"];

    // Before any snapshot exists the gateways serve, but are not ready.
    let a = Gateway::serve(&operator.url(), pods[0]);
    let b = Gateway::serve(&operator.url(), pods[1]);
    for gw in [&a, &b] {
        assert_eq!(status(gw, "/healthy").await, 200);
        assert_eq!(status(gw, "/ready").await, 503, "{}", gw.logs());
    }

    // v1: the example's resources.
    feed(&hub, EXAMPLE_CONFIG);
    let v1 = current_version(&hub);
    assert!(
        eventually(Duration::from_secs(20), async || all_applied(
            &hub, &pods, &v1
        ))
        .await
        .is_some(),
        "acks: {:?}\nlogs a:\n{}",
        hub.acks(),
        a.logs()
    );
    for gw in [&a, &b] {
        assert!(
            eventually(Duration::from_secs(5), async || status(gw, "/ready").await
                == 200)
            .await
            .is_some()
        );
        let config = gw.admin_get("/api/v1/admin/config").await;
        assert_eq!(config["version"], v1.as_str(), "{config}");
        assert!(config["pools"]["default"].is_object(), "{config}");
        assert!(config["policies"]["cp-push"].is_null(), "{config}");
        // The SMSC password travels in the snapshot but is never logged.
        assert!(!gw.logs().contains("\"secret\""), "{}", gw.logs());
    }

    // v2: a new ContactPolicy, and a new link to a real SMSC which the
    // pool `default` now uses: both gateways start it live and bind.
    let sim = Sim::start("127.0.0.1:0");
    feed(
        &hub,
        &format!("{POLICY_PUSHED}---\n{}", sim_config(sim.addr)),
    );
    let v2 = current_version(&hub);
    assert_ne!(v1, v2);
    assert!(
        eventually(Duration::from_secs(20), async || all_applied(
            &hub, &pods, &v2
        ))
        .await
        .is_some(),
        "acks: {:?}",
        hub.acks()
    );
    for gw in [&a, &b] {
        let config = gw.admin_get("/api/v1/admin/config").await;
        assert_eq!(config["version"], v2.as_str());
        assert_eq!(config["policies"]["cp-push"]["frequency"]["daily"], 5);
        assert_eq!(config["pools"]["default"]["members"][0]["link"], "sim-link");
        assert!(
            eventually(Duration::from_secs(10), async || links(gw)
                .await
                .contains(&("sim-link".to_owned(), 2)))
            .await
            .is_some(),
            "{:?}",
            links(gw).await
        );
    }

    // A new rate and response timeout are taken in place (issue 17): the
    // sessions stay bound, the SMSC sees no new bind. A new window needs
    // new sessions: both gateways bind again.
    let binds = sim.binds();
    assert_eq!(binds, 4, "2 sessions on each gateway");
    let retuned =
        sim_config(sim.addr).replace("responseTimeout: 1s", "responseTimeout: 2s\n  rate: 50");
    let v = feed_and_apply(&hub, &pods, &format!("{POLICY_PUSHED}---\n{retuned}")).await;
    for gw in [&a, &b] {
        let config = gw.admin_get("/api/v1/admin/config").await;
        assert_eq!(config["version"], v.as_str());
        assert_eq!(config["links"]["sim-link"]["rate"], 50, "{config}");
    }
    // A replaced link would have bound again within its 100 ms backoff.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sim.binds(), binds, "a new rate must not rebind");
    for gw in [&a, &b] {
        assert!(links(gw).await.contains(&("sim-link".to_owned(), 2)));
    }
    let rewindowed = retuned.replace("window: 16", "window: 8");
    // From here on, "v2" is this version.
    let v2 = feed_and_apply(&hub, &pods, &format!("{POLICY_PUSHED}---\n{rewindowed}")).await;
    assert!(
        eventually(Duration::from_secs(10), async || sim.binds() == binds + 4)
            .await
            .is_some(),
        "a new window binds new sessions: {} binds",
        sim.binds()
    );

    // The operator goes away: both keep serving with v2.
    let addr = operator.addr;
    operator.stop();
    let creds = a.user("push@example.com").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    for gw in [&a, &b] {
        assert_eq!(status(gw, "/healthy").await, 200);
        assert_eq!(status(gw, "/ready").await, 200);
        assert_eq!(
            gw.admin_get("/api/v1/admin/config").await["version"],
            v2.as_str()
        );
    }
    let r: Value = a
        .authed(&creds, reqwest::Method::POST, "/api/v1/sms/check-text-len")
        .json(&json!({ "message": "still here" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["characters"], 10, "{r}");
    assert!(
        a.logs().contains("serving with the last snapshot"),
        "{}",
        a.logs()
    );

    // The operator comes back on the same address with a change made
    // meanwhile: both reconnect and apply it.
    feed(
        &hub,
        &EXAMPLE_CONFIG.replace("      weight: 1", "      weight: 7"),
    );
    hub.remove("SmppLink", "sim-link");
    let v3 = current_version(&hub);
    assert_ne!(v2, v3);
    let operator = Operator::start(&hub, addr);
    assert!(
        eventually(Duration::from_secs(20), async || all_applied(
            &hub, &pods, &v3
        ))
        .await
        .is_some(),
        "acks: {:?}\nlogs b:\n{}",
        hub.acks(),
        b.logs()
    );
    for gw in [&a, &b] {
        let config = gw.admin_get("/api/v1/admin/config").await;
        assert_eq!(config["version"], v3.as_str());
        assert_eq!(config["pools"]["default"]["members"][0]["weight"], 7);
        assert_eq!(
            config["pools"]["default"]["members"][0]["link"],
            "local-sim"
        );
        let names: Vec<String> = links(gw).await.into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["local-sim"]);
        assert_eq!(config["policies"]["cp-push"]["frequency"]["daily"], 5);
    }
    operator.stop();
    assert!(a.terminate().success());
    assert!(b.terminate().success());
}

const BOB: &str = r#"apiVersion: smsgw.io/v1alpha1
kind: User
metadata: {name: bob}
spec: {email: bob@example.com, appName: bob, passwordSecretRef: {name: bob-login, key: password}}
---
apiVersion: v1
kind: Secret
metadata: {name: bob-login}
stringData: {password: bob login password}
---
apiVersion: v1
kind: Secret
metadata: {name: bob-credentials}
stringData: {appId: app-bob, appSecret: bobs app secret 0123456789}
"#;

/// Issue 23: a user's password and its app secret reach the gateway only
/// as hashes, and still authenticate there: the password logs in, the
/// credentials Secret's app id and secret get a machine token. Neither
/// shows in the admin view or the log.
#[tokio::test]
async fn a_users_secrets_travel_as_hashes_and_still_authenticate() {
    let (hub, _rejections) = Hub::new();
    let operator = Operator::start(&hub, "127.0.0.1:0".parse().unwrap());
    let gw = Gateway::serve(&operator.url(), "gw-a");
    feed(&hub, &format!("{EXAMPLE_CONFIG}---\n{BOB}"));
    let version = current_version(&hub);
    let published = String::from_utf8(hub.current().snapshot_json.to_vec()).unwrap();
    let secrets = ["bob login password", "bobs app secret 0123456789"];
    for secret in secrets {
        assert!(
            !published.contains(secret),
            "{secret:?} is sent: {published}"
        );
    }
    assert!(
        eventually(Duration::from_secs(20), async || all_applied(
            &hub,
            &["gw-a"],
            &version
        ))
        .await
        .is_some(),
        "acks: {:?}\nlogs:\n{}",
        hub.acks(),
        gw.logs()
    );
    let client = reqwest::Client::new();
    for (path, body) in [
        (
            "/api/v1/auth/login",
            json!({"email": "bob@example.com", "password": secrets[0]}),
        ),
        (
            "/api/v1/auth/token",
            json!({"app_id": "app-bob", "app_secret": secrets[1]}),
        ),
    ] {
        let r = client.post(gw.url(path)).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}: {}", r.text().await.unwrap());
    }
    let config = gw.admin_get("/api/v1/admin/config").await;
    assert_eq!(config["password_hashes"]["bob"], "***", "{config}");
    assert_eq!(
        config["app_credentials"]["bob"]["appSecretHash"], "***",
        "{config}"
    );
    let shown = format!("{config}{}", gw.logs());
    for secret in secrets {
        assert!(!shown.contains(secret), "{secret:?} shown: {shown}");
    }
    assert!(!shown.contains("$argon2id$"), "a hash shown: {shown}");
}
