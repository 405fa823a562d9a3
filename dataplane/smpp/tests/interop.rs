//! Interop against an SMPP implementation not written here: node-smpp
//! (npm `smpp`, pinned in tests/interop/package.json) acting as SMSC.
//!
//! Needs Node.js and npm on PATH; the test fails (does not skip) without
//! them. `npm ci` runs into tests/interop when node_modules is missing.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use smsgw_smpp::{
    Address, IdFormat, Link, LinkConfig, LinkEvent, LinkState, ReceiptState, Segment,
    SegmentOutcome, SubmitRequest,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn require(tool: &str) {
    match Command::new(tool).arg("--version").output() {
        Ok(o) if o.status.success() => {}
        other => panic!(
            "the interop test needs `{tool}` on PATH (install Node.js >= 18 with npm); \
             running `{tool} --version` gave {other:?}"
        ),
    }
}

fn start_node_smsc() -> (KillOnDrop, SocketAddr) {
    require("node");
    require("npm");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
    if !dir.join("node_modules/smpp").exists() {
        let st = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("run npm ci");
        assert!(st.success(), "npm ci failed in {}", dir.display());
    }
    let mut child = Command::new("node")
        .arg("server.js")
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn node server.js");
    let stdout = child.stdout.take().expect("stdout");
    let guard = KillOnDrop(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read port from node");
    let port: u16 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("node server printed {line:?}, expected a port"));
    (guard, SocketAddr::from(([127, 0, 0, 1], port)))
}

#[tokio::test]
async fn node_smpp_smsc_binds_accepts_a_submit_and_delivers_its_receipt() {
    let (_node, addr) = start_node_smsc();
    let cancel = CancellationToken::new();
    let (tx, mut events) = mpsc::channel(100);
    let link = Link::spawn(
        LinkConfig::test(addr)
            .name("node".into())
            .message_id_format(IdFormat::Hex)
            .enquire_link_interval(Duration::from_millis(200)),
        tx,
        cancel.clone(),
    )
    .unwrap();
    assert!(
        link.wait_bound(Duration::from_secs(10)).await,
        "bind to node-smpp: {:?}",
        link.status()
    );

    let out = link
        .submit(SubmitRequest::new(
            Address::new("smsgw", 5, 0),
            Address::new("4917012345", 1, 1),
            vec![Segment::new(&b"hello from smsgw"[..])],
        ))
        .await
        .unwrap();
    let SegmentOutcome::Accepted {
        smsc_message_id, ..
    } = &out[0]
    else {
        panic!("not accepted: {out:?}")
    };
    assert_eq!(smsc_message_id.raw, "00000001");

    let receipt = loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Some(LinkEvent::Receipt(r))) => break r,
            Ok(Some(_)) => continue,
            other => panic!("no receipt from node-smpp: {other:?}"),
        }
    };
    assert_eq!(
        receipt.smsc_message_id.normalized,
        smsc_message_id.normalized
    );
    assert_eq!(receipt.state, ReceiptState::Delivered);

    // enquire_link round trips against node-smpp too.
    tokio::time::timeout(Duration::from_secs(5), async {
        while link.status().last_enquire_link_rtt.is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("enquire_link answered");

    link.shutdown().await;
    assert_eq!(link.status().state, LinkState::Down);
    let err = link.status().last_error;
    assert!(err.is_none(), "clean unbind expected, got {err:?}");
}
