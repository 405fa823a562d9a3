//! TLS on the gateway's own ports (issue 23): REST and gRPC over TLS with a
//! CA made here, the certificate rotated under the running process, a
//! plain-text client refused, mutual TLS, and the CLI and load tool
//! speaking TLS.

use crate::harness::{ADMIN_KEY, Gateway, SMSGW, Sim, assert_no_secrets, eventually};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// A CA and one certificate it signed (for 127.0.0.1 and localhost).
struct Pki {
    ca: String,
    cert: String,
    key: String,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, name);
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        Pki {
            ca: ca_pem,
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// Writes `name.crt`, `name.key` and `name-ca.crt` into `dir` (each
    /// by rename, as the kubelet and cert-manager do).
    fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
        let put = |file: String, text: &str| {
            let path = dir.join(file);
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
            path
        };
        let key = put(format!("{name}.key"), &self.key);
        let cert = put(format!("{name}.crt"), &self.cert);
        let ca = put(format!("{name}-ca.crt"), &self.ca);
        (cert, key, ca)
    }

    /// The key's base64 body, which must never reach the logs.
    fn key_body(&self) -> &str {
        self.key.lines().nth(1).unwrap()
    }
}

/// An HTTPS client trusting only `ca`, presenting `identity` when given.
fn https(ca: &str, identity: Option<&Pki>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .timeout(Duration::from_secs(10));
    if let Some(id) = identity {
        b = b.identity(
            reqwest::Identity::from_pem(format!("{}{}", id.cert, id.key).as_bytes()).unwrap(),
        );
    }
    b.build().unwrap()
}

/// A gRPC channel over TLS to `gw`, trusting only `ca`.
async fn grpc_tls(
    gw: &Gateway,
    ca: &str,
    identity: Option<&Pki>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(&id.cert, &id.key));
    }
    Endpoint::from_shared(format!("https://{}", gw.grpc))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

async fn serving(channel: Channel) -> Result<i32, tonic::Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|r| r.into_inner().status)
}

const SERVING: i32 = 1;

async fn healthy(http: &reqwest::Client, gw: &Gateway) -> Result<u16, reqwest::Error> {
    http.get(format!("https://{}/healthy", gw.rest))
        .send()
        .await
        .map(|r| r.status().as_u16())
}

fn smsgw(args: &[&str]) -> (bool, String) {
    let out = Command::new(SMSGW)
        .args(args)
        .env("ADMIN_API_KEY", ADMIN_KEY)
        .env_remove("SMSGW_CA")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn rest_and_grpc_serve_tls_follow_a_rotated_certificate_and_refuse_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let first = Pki::new("smsgw e2e CA one");
    let (cert, key, ca1) = first.write(dir.path(), "server");
    let sim = Sim::start("127.0.0.1:0");
    let gw = Gateway::standalone_with_args(
        &crate::harness::sim_config(sim.addr),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--tls-reload-interval",
            "200ms",
        ],
    );
    let pid = gw.pid();

    // REST and gRPC (ALPN h2) over TLS, verified against the test CA.
    let http1 = https(&first.ca, None);
    assert_eq!(healthy(&http1, &gw).await.unwrap(), 200);
    let creds = Gateway::user_at(&http1, &format!("https://{}", gw.rest), "tls@example.com").await;
    let links: serde_json::Value = http1
        .get(format!("https://{}/api/v1/smpp/links", gw.rest))
        .bearer_auth(&creds.token)
        .header("x-app-id", &creds.app_id)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(links["links"].is_array(), "{links}");
    let channel = grpc_tls(&gw, &first.ca, None).await.expect("TLS channel");
    assert_eq!(serving(channel.clone()).await.unwrap(), SERVING);
    let mut sms = smsgw_proto::sms::v1::sms_service_client::SmsServiceClient::new(channel);
    let analysed = sms
        .check_text_len(creds.grpc(smsgw_proto::sms::v1::CheckTextLenRequest {
            message: "hello".into(),
            ..Default::default()
        }))
        .await
        .expect("an authenticated call over TLS");
    assert_eq!(analysed.into_inner().segments, 1);

    // Plain text on the TLS ports gets no answer from either server.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/healthy", gw.rest))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    let plain_grpc = Endpoint::from_shared(format!("http://{}", gw.grpc))
        .unwrap()
        .timeout(Duration::from_secs(10))
        .connect_lazy();
    assert!(serving(plain_grpc).await.is_err(), "plain gRPC answered");
    // A client that does not trust the CA does not get through either.
    let stranger = https(&Pki::new("another CA").ca, None);
    assert!(healthy(&stranger, &gw).await.is_err());

    // The CLI and the load tool over TLS.
    let server = format!("https://{}", gw.grpc);
    let (ok, out) = smsgw(&["links", "--server", &server, "--ca", ca1.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(out.contains("sim-link"), "{out}");
    let (ok, out) = smsgw(&["links", "--server", &server]);
    assert!(!ok, "the system roots do not trust the test CA: {out}");
    let rest = format!("https://{}", gw.rest);
    for mode in ["grpc-stream", "rest"] {
        let (ok, out) = smsgw(&[
            "bench",
            "--rest",
            &rest,
            "--grpc",
            &server,
            "--ca",
            ca1.to_str().unwrap(),
            "--mode",
            mode,
            "--esme",
            "sim-link",
            "--count",
            "20",
        ]);
        assert!(ok && out.contains("20 sent, 0 failed"), "{mode}: {out}");
    }

    // Rotation: a certificate of another CA replaces the files; new
    // connections get it without a restart, old trust no longer works.
    let second = Pki::new("smsgw e2e CA two");
    second.write(dir.path(), "server");
    let http2 = https(&second.ca, None);
    let took = eventually(Duration::from_secs(20), async || {
        healthy(&http2, &gw).await.is_ok()
    })
    .await;
    assert!(took.is_some(), "the rotated certificate was never served");
    assert!(healthy(&https(&first.ca, None), &gw).await.is_err());
    // Each listener reloads on its own tick (and a tick between the
    // writes of the certificate and the key keeps the old pair): the
    // gRPC listener may take one interval more than REST.
    let mut channel = None;
    eventually(Duration::from_secs(20), async || {
        channel = grpc_tls(&gw, &second.ca, None).await.ok();
        channel.is_some()
    })
    .await;
    let channel = channel.expect("gRPC after rotation");
    assert_eq!(serving(channel).await.unwrap(), SERVING);
    let old_trust_refused = match grpc_tls(&gw, &first.ca, None).await {
        Err(_) => true,
        Ok(c) => serving(c).await.is_err(),
    };
    assert!(old_trust_refused, "gRPC still served the old certificate");
    assert_eq!(gw.pid(), pid);

    let logs = gw.logs();
    assert!(logs.contains("TLS certificate reloaded"), "{logs}");
    assert_no_secrets(&logs, &[first.key_body(), second.key_body()]);
}

#[tokio::test]
async fn with_a_client_ca_only_clients_with_its_certificates_get_through() {
    let dir = tempfile::tempdir().unwrap();
    let server = Pki::new("smsgw e2e server CA");
    let clients = Pki::new("smsgw e2e client CA");
    let outsider = Pki::new("not the client CA");
    let (cert, key, _) = server.write(dir.path(), "server");
    let (client_cert, client_key, client_ca) = clients.write(dir.path(), "client");
    let gw = Gateway::standalone_with_args(
        crate::harness::EXAMPLE_CONFIG,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--tls-client-ca",
            client_ca.to_str().unwrap(),
        ],
    );

    assert!(healthy(&https(&server.ca, None), &gw).await.is_err());
    assert!(
        healthy(&https(&server.ca, Some(&outsider)), &gw)
            .await
            .is_err()
    );
    assert_eq!(
        healthy(&https(&server.ca, Some(&clients)), &gw)
            .await
            .unwrap(),
        200
    );

    // tonic connects lazily at the handshake: the refusal shows on connect
    // or on the first call.
    let refused = match grpc_tls(&gw, &server.ca, None).await {
        Err(_) => true,
        Ok(c) => serving(c).await.is_err(),
    };
    assert!(refused, "gRPC without a client certificate answered");
    let channel = grpc_tls(&gw, &server.ca, Some(&clients)).await.unwrap();
    assert_eq!(serving(channel).await.unwrap(), SERVING);

    let dir_path = dir.path().join("server-ca.crt");
    let (ok, out) = smsgw(&[
        "links",
        "--server",
        &format!("https://{}", gw.grpc),
        "--ca",
        dir_path.to_str().unwrap(),
        "--client-cert",
        client_cert.to_str().unwrap(),
        "--client-key",
        client_key.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let (ok, out) = smsgw(&[
        "links",
        "--server",
        &format!("https://{}", gw.grpc),
        "--ca",
        dir_path.to_str().unwrap(),
    ]);
    assert!(
        !ok,
        "the CLI got through without a client certificate: {out}"
    );
}

#[test]
fn tls_options_on_a_plain_address_are_refused_clearly() {
    let (ok, out) = smsgw(&[
        "links",
        "--server",
        "http://127.0.0.1:1",
        "--ca",
        "/nonexistent.pem",
    ]);
    assert!(!ok);
    assert!(out.contains("not https://"), "{out}");
    let (status, logs) = crate::harness::run_to_end(&[
        "standalone",
        "--config",
        "/nonexistent.yaml",
        "--tls-cert",
        "/nonexistent.crt",
    ]);
    assert!(!status.success());
    assert!(logs.contains("--tls-key"), "{logs}");
}
