//! A link against a raw TCP "SMSC" that misbehaves on purpose.

use std::time::Duration;

use smsgw_smpp::{Link, LinkConfig, LinkEvent, LinkState};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpSocket,
    sync::mpsc,
    time::timeout,
};
use tokio_util::sync::CancellationToken;

/// An SMSC that floods enquire_link and never reads the answers must not
/// make the session buffer them without bound: it closes the connection
/// and says why.
#[tokio::test]
async fn a_peer_that_never_reads_its_answers_is_disconnected_with_the_reason() {
    let socket = TcpSocket::new_v4().unwrap();
    // Small buffers on the SMSC side so our answers back up quickly.
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let (tx, mut events) = mpsc::channel(1024);
    let _link = Link::spawn(LinkConfig::test(addr), tx, cancel.clone()).unwrap();

    let (mut conn, _) = listener.accept().await.unwrap();
    // The bind: answer bind_transceiver_resp with its sequence number.
    let mut header = [0u8; 16];
    conn.read_exact(&mut header).await.unwrap();
    let len = u32::from_be_bytes(header[0..4].try_into().unwrap()) as usize;
    let mut body = vec![0u8; len - 16];
    conn.read_exact(&mut body).await.unwrap();
    assert_eq!(
        &header[4..8],
        &0x0000_0009u32.to_be_bytes(),
        "bind_transceiver"
    );
    let mut resp = Vec::new();
    resp.extend_from_slice(&20u32.to_be_bytes());
    resp.extend_from_slice(&0x8000_0009u32.to_be_bytes());
    resp.extend_from_slice(&0u32.to_be_bytes());
    resp.extend_from_slice(&header[12..16]);
    resp.extend_from_slice(b"sim\0");
    conn.write_all(&resp).await.unwrap();

    let mut flood = Vec::with_capacity(16 * 4096);
    for seq in 1..=4096u32 {
        flood.extend_from_slice(&16u32.to_be_bytes());
        flood.extend_from_slice(&0x0000_0015u32.to_be_bytes());
        flood.extend_from_slice(&0u32.to_be_bytes());
        flood.extend_from_slice(&seq.to_be_bytes());
    }
    // Never read; write until the session hangs up.
    tokio::spawn(async move { while conn.write_all(&flood).await.is_ok() {} });
    let down = async {
        loop {
            match events.recv().await {
                Some(LinkEvent::StateChanged {
                    state: LinkState::Down,
                    reason: Some(reason),
                    ..
                }) => return reason,
                Some(_) => {}
                None => panic!("events closed"),
            }
        }
    };
    let reason = timeout(Duration::from_secs(30), down)
        .await
        .expect("the session gives up on a peer that does not read");
    assert!(reason.contains("does not read"), "{reason}");
    cancel.cancel();
}
