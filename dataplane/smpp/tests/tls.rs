//! Links over TLS against the in-repo simulator serving TLS on loopback,
//! with certificates generated at test time.

use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use smsgw_smpp::{
    Address, Error, Link, LinkConfig, LinkEvent, LinkState, Segment, SegmentOutcome, SubmitRequest,
    sim::{self, SimConfig, SimHandle, SimTls},
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(5);

/// A CA and a server certificate it signed for `localhost` and 127.0.0.1.
struct Pki {
    ca_pem: String,
    server: SimTls,
}

fn pki() -> Pki {
    pki_named("smsgw test CA")
}

fn pki_named(ca_name: &str) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    Pki {
        ca_pem,
        server: SimTls {
            cert_pem: leaf.pem(),
            key_pem: key.serialize_pem(),
        },
    }
}

async fn tls_sim(pki: &Pki, cancel: &CancellationToken) -> SimHandle {
    sim::run(SimConfig::default().tls(pki.server.clone()), cancel.clone())
        .await
        .expect("TLS simulator starts")
}

fn spawn(cfg: LinkConfig, cancel: &CancellationToken) -> (Link, mpsc::Receiver<LinkEvent>) {
    let (tx, rx) = mpsc::channel(1000);
    (
        Link::spawn(cfg, tx, cancel.clone()).expect("link spawns"),
        rx,
    )
}

/// A TLS simulator with a fresh PKI and a link to it configured by `cfg`.
struct Setup {
    pki: Pki,
    sim: SimHandle,
    link: Link,
    events: mpsc::Receiver<LinkEvent>,
    cancel: CancellationToken,
}

async fn setup(cfg: impl FnOnce(LinkConfig, &Pki) -> LinkConfig) -> Setup {
    let pki = pki();
    let cancel = CancellationToken::new();
    let sim = tls_sim(&pki, &cancel).await;
    let (link, events) = spawn(cfg(LinkConfig::test(sim.addr()).tls(true), &pki), &cancel);
    Setup {
        pki,
        sim,
        link,
        events,
        cancel,
    }
}

fn msg(text: &str) -> SubmitRequest {
    SubmitRequest::new(
        Address::new("smsgw", 5, 0),
        Address::new("4917012345", 1, 1),
        vec![Segment::new(text.as_bytes().to_vec())],
    )
}

/// Waits until the link has recorded an error and at least `handshakes`
/// handshakes failed at the simulator; returns the error.
async fn refused(link: &Link, sim: &SimHandle, handshakes: u64) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let st = link.status();
        if let Some(e) = &st.last_error
            && sim.counters().tls_failures >= handshakes
        {
            return e.message.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no handshake failure recorded: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn binds_submits_and_gets_the_receipt_over_tls_with_an_extra_ca() {
    let Setup {
        sim,
        link,
        mut events,
        cancel,
        ..
    } = setup(|c, pki| c.sessions(2).tls_ca(Some(pki.ca_pem.clone()))).await;
    assert!(link.wait_all_bound(WAIT).await, "{:?}", link.status());
    let out = link.submit(msg("hello over TLS")).await.unwrap();
    let id = match &out[0] {
        SegmentOutcome::Accepted {
            smsc_message_id, ..
        } => smsc_message_id.normalized.clone(),
        other => panic!("not accepted: {other:?}"),
    };
    let receipt = loop {
        match tokio::time::timeout(WAIT, events.recv()).await {
            Ok(Some(LinkEvent::Receipt(r))) => break r,
            Ok(Some(_)) => continue,
            other => panic!("no receipt: {other:?}"),
        }
    };
    assert_eq!(receipt.smsc_message_id.normalized, id);
    // The keep-alive works over TLS too: the SMSC's enquire_link is answered.
    sim.enquire_link_all();
    let deadline = tokio::time::Instant::now() + WAIT;
    while sim.counters().enquire_link_resps < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "enquire_link unanswered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sim.counters().tls_failures, 0);
    // Shutdown unbinds cleanly over TLS.
    link.shutdown().await;
    assert_eq!(sim.counters().unbinds, 2);
    assert_eq!(link.status().state, LinkState::Down);
    cancel.cancel();
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_is_refused_and_the_link_keeps_retrying() {
    let other = pki_named("another CA");
    let Setup {
        sim, link, cancel, ..
    } = setup(|c, _| c.tls_ca(Some(other.ca_pem))).await;
    // Two failed handshakes: the session retries with backoff.
    let err = refused(&link, &sim, 2).await;
    let addr = sim.addr();
    assert!(
        err.starts_with(&format!("TLS handshake with {addr} failed: ")),
        "{err}"
    );
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert!(!link.is_up());
    assert_eq!(link.status().sessions_bound, 0);
    assert_eq!(
        sim.binds(),
        0,
        "no bind (and no password) sent to an unverified SMSC"
    );
    assert!(matches!(
        link.submit(msg("x")).await,
        Err(Error::LinkDown { .. })
    ));
    cancel.cancel();
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused() {
    let Setup {
        pki,
        sim,
        link,
        cancel,
        ..
    } = setup(|c, pki| {
        c.tls_ca(Some(pki.ca_pem.clone()))
            .tls_server_name(Some("smsc.example.com".into()))
    })
    .await;
    let err = refused(&link, &sim, 1).await;
    assert!(err.contains("TLS handshake with"), "{err}");
    assert!(err.contains("not valid for name"), "{err}");
    assert!(err.contains("smsc.example.com"), "{err}");
    assert_eq!(sim.binds(), 0);

    // The name the certificate does carry, as an override of the host.
    let (good, _events) = spawn(
        LinkConfig::test(sim.addr())
            .name("by-name".into())
            .tls(true)
            .tls_ca(Some(pki.ca_pem.clone()))
            .tls_server_name(Some("localhost".into())),
        &cancel,
    );
    assert!(good.wait_bound(WAIT).await, "{:?}", good.status());
    cancel.cancel();
}

#[tokio::test]
async fn without_the_ca_the_system_roots_do_not_trust_a_private_ca() {
    let Setup {
        sim, link, cancel, ..
    } = setup(|c, _| c).await;
    let err = refused(&link, &sim, 1).await;
    assert!(err.contains("UnknownIssuer"), "{err}");
    cancel.cancel();
}

#[tokio::test]
async fn insecure_skip_verify_binds_to_any_certificate() {
    let Setup { link, cancel, .. } = setup(|c, _| {
        c.tls_server_name(Some("smsc.example.com".into()))
            .tls_insecure_skip_verify(true)
    })
    .await;
    assert!(link.wait_bound(WAIT).await, "{:?}", link.status());
    let out = link.submit(msg("x")).await.unwrap();
    assert!(matches!(out[0], SegmentOutcome::Accepted { .. }), "{out:?}");
    cancel.cancel();
}

#[tokio::test]
async fn a_tls_link_to_a_plain_smsc_fails_the_handshake_and_a_plain_link_to_a_tls_smsc_fails_to_bind()
 {
    let pki = pki();
    let cancel = CancellationToken::new();
    let plain = sim::run(SimConfig::default(), cancel.clone())
        .await
        .unwrap();
    let (link, _events) = spawn(
        LinkConfig::test(plain.addr())
            .tls(true)
            .tls_insecure_skip_verify(true),
        &cancel,
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    let err = loop {
        if let Some(e) = link.status().last_error {
            break e.message;
        }
        assert!(tokio::time::Instant::now() < deadline, "no error");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(err.starts_with("TLS handshake with"), "{err}");

    let tls = tls_sim(&pki, &cancel).await;
    let (link, _events) = spawn(LinkConfig::test(tls.addr()), &cancel);
    refused(&link, &tls, 1).await;
    assert!(!link.is_up());
    cancel.cancel();
}

#[tokio::test]
async fn bad_tls_material_is_refused_up_front() {
    let (tx, _rx) = mpsc::channel(1);
    let err = Link::spawn(
        LinkConfig::test("127.0.0.1:9".parse().unwrap())
            .tls(true)
            .tls_ca(Some(
                "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n".into(),
            )),
        tx,
        CancellationToken::new(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("link test: invalid configuration: tls_ca: "),
        "{err}"
    );

    let pki = pki();
    let err = sim::run(
        SimConfig::default().tls(SimTls {
            cert_pem: pki.server.cert_pem,
            key_pem: "no key".into(),
        }),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().starts_with("simulator: TLS private key"),
        "{err}"
    );
    let shown = format!(
        "{:?}",
        SimTls {
            cert_pem: String::new(),
            key_pem: "SECRET".into()
        }
    );
    assert!(!shown.contains("SECRET"), "{shown}");
}
