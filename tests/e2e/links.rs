//! SMPP links through the real binary: binding to a simulator process,
//! CheckESME over gRPC and REST, dead-peer detection, rebinding, control.

use crate::harness::{ADMIN_KEY, Gateway, Sim, eventually, sim_config};
use reqwest::Method;
use serde_json::Value;
use smsgw_proto::admin::v1::{
    ControlLinkRequest, LinkAction, admin_service_client::AdminServiceClient,
};
use smsgw_proto::sms::v1::{CheckEsmeRequest, sms_service_client::SmsServiceClient};
use std::time::Duration;

async fn grpc_state(gw: &Gateway, creds: &crate::harness::Creds, esme: &str) -> (String, u32) {
    let mut c = SmsServiceClient::new(gw.channel().await);
    let r = c
        .check_esme(creds.grpc(CheckEsmeRequest { esme: esme.into() }))
        .await
        .unwrap()
        .into_inner();
    let l = &r.links[0];
    (l.state.clone(), l.sessions_bound)
}

#[tokio::test]
async fn the_link_binds_goes_down_when_the_smsc_dies_and_comes_back_without_a_restart() {
    let sim = Sim::start("127.0.0.1:0");
    let addr = sim.addr;
    let gw = Gateway::standalone(&sim_config(addr));
    let creds = gw.user("links@example.com").await;

    let bound = eventually(Duration::from_secs(10), async || {
        grpc_state(&gw, &creds, "sim-link").await == ("bound".into(), 2)
    })
    .await;
    assert!(bound.is_some(), "link never bound");
    let rest = gw.links(&creds).await;
    assert_eq!(rest["links"][0]["name"], "sim-link");
    assert_eq!(rest["links"][0]["state"], "bound");
    assert_eq!(rest["links"][0]["sessions_bound"], 2);
    // A pool answers with its member links.
    assert_eq!(grpc_state(&gw, &creds, "default").await.0, "bound");

    // A frozen SMSC keeps its sockets open but answers nothing: the link must
    // notice within one enquire_link interval plus the response timeout.
    sim.signal("STOP");
    let down = eventually(Duration::from_secs(6), async || {
        grpc_state(&gw, &creds, "sim-link").await.1 == 0
    })
    .await;
    let took = down.expect("a silent SMSC was never noticed");
    assert!(
        took <= Duration::from_millis(2000 + 1000),
        "noticed after {took:?} (interval 1s + timeout 1s)"
    );
    sim.signal("CONT");
    sim.kill();

    // A new SMSC on the same address: the gateway rebinds by itself.
    let sim2 = Sim::start(&addr.to_string());
    let back = eventually(Duration::from_secs(10), async || {
        grpc_state(&gw, &creds, "sim-link").await == ("bound".into(), 2)
    })
    .await;
    assert!(
        back.is_some(),
        "link did not come back: {:?}",
        gw.links(&creds).await
    );
    drop(sim2);
}

#[tokio::test]
async fn a_tls_smsc_is_bound_with_the_ca_from_a_secret_in_the_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let id = rcgen::generate_simple_self_signed(["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("smsc.crt"), dir.path().join("smsc.key"));
    std::fs::write(&cert, id.cert.pem()).unwrap();
    std::fs::write(&key, id.signing_key.serialize_pem()).unwrap();
    let sim = Sim::start_with(
        "127.0.0.1:0",
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let config = sim_config(sim.addr).replace(
        "  password: secret\n",
        "  password: secret\n  tls: true\n  tlsServerName: localhost\n  tlsCaSecretRef: {name: smsc-ca, key: ca.crt}\n",
    ) + &format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: smsc-ca}}\nstringData:\n  ca.crt: {:?}\n",
        id.cert.pem()
    );
    let gw = Gateway::standalone(&config);
    let creds = gw.user("tls@example.com").await;
    let bound = eventually(Duration::from_secs(10), async || {
        grpc_state(&gw, &creds, "sim-link").await == ("bound".into(), 2)
    })
    .await;
    assert!(bound.is_some(), "{}", gw.links(&creds).await);
    let rest = gw.links(&creds).await;
    assert_eq!(rest["links"][0]["state"], "bound", "{rest}");
    assert_eq!(rest["links"][0]["sessions_bound"], 2, "{rest}");
}

#[tokio::test]
async fn a_killed_smsc_shows_the_link_down_with_the_error() {
    let sim = Sim::start("127.0.0.1:0");
    let gw = Gateway::standalone(&sim_config(sim.addr));
    let creds = gw.user("killed@example.com").await;
    assert!(
        eventually(Duration::from_secs(10), async || grpc_state(
            &gw, &creds, ""
        )
        .await
        .1 == 2)
        .await
        .is_some()
    );
    sim.kill();
    let down = eventually(Duration::from_secs(3), async || {
        grpc_state(&gw, &creds, "").await.0 != "bound"
    })
    .await;
    assert!(down.is_some());
    let rest = gw.links(&creds).await;
    assert!(rest["links"][0]["last_error"].is_string(), "{rest}");
}

#[tokio::test]
async fn admins_stop_and_start_links_at_run_time() {
    let sim = Sim::start("127.0.0.1:0");
    let gw = Gateway::standalone(&sim_config(sim.addr));
    let creds = gw.user("ctl@example.com").await;
    assert!(
        eventually(Duration::from_secs(10), async || grpc_state(
            &gw, &creds, ""
        )
        .await
        .1 == 2)
        .await
        .is_some()
    );

    let http = reqwest::Client::new();
    let r: Value = http
        .post(gw.url("/api/v1/admin/links/sim-link/stop"))
        .header("x-admin-key", ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["state"], "stopped", "{r}");
    // It stays down: no rebind while stopped.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(grpc_state(&gw, &creds, "").await, ("stopped".into(), 0));

    let mut admin = AdminServiceClient::new(gw.channel().await);
    let mut req = tonic::Request::new(ControlLinkRequest {
        name: "sim-link".into(),
        action: LinkAction::Start as i32,
    });
    req.metadata_mut()
        .insert("x-admin-key", ADMIN_KEY.parse().unwrap());
    admin.control_link(req).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), async || grpc_state(
            &gw, &creds, ""
        )
        .await
        .1 == 2)
        .await
        .is_some()
    );

    // Unknown links and actions are refused, and users may not control links.
    let r = http
        .post(gw.url("/api/v1/admin/links/ghost/stop"))
        .header("x-admin-key", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = http
        .post(gw.url("/api/v1/admin/links/sim-link/explode"))
        .header("x-admin-key", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = gw
        .authed(&creds, Method::POST, "/api/v1/admin/links/sim-link/stop")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let mut c = SmsServiceClient::new(gw.channel().await);
    let e = c
        .check_esme(creds.grpc(CheckEsmeRequest {
            esme: "ghost".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn with_simulator_the_example_link_binds_to_the_built_in_smsc() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = crate::harness::EXAMPLE_CONFIG.replace("port: 2775", &format!("port: {port}"));
    let listen = format!("127.0.0.1:{port}");
    let gw = Gateway::standalone_with_args(
        &config,
        &["--with-simulator", "--simulator-listen", &listen],
    );
    let creds = gw.user("demo@example.com").await;
    let bound = eventually(Duration::from_secs(10), async || {
        grpc_state(&gw, &creds, "local-sim").await.0 == "bound"
    })
    .await;
    assert!(bound.is_some());
    // Wait off the runtime, so this test's gRPC connections can see the
    // server's GOAWAY and close (the server drains them before exiting).
    let status = tokio::task::spawn_blocking(move || gw.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}
