//! A bound SMPP session fed an arbitrary PDU stream by the "SMSC" end of an
//! in-memory transport (`tokio::io::duplex`, paused clock): it never
//! panics, answers every request it read before the connection ended (once
//! per request, with the request's sequence number and a well-formed PDU;
//! alert_notification, which has no response, excepted),
//! ends with a reason (`peer unbind` exactly when it read an unbind), and
//! holds no more MO parts than its reassembly bounds.
//!
//! Input: records `[sel: u8][seq: u16 BE][len: u16 BE][body]`; `sel & 15`
//! picks a command id (15: the body goes on the wire as is, so lengths can
//! be broken), `sel >> 4` is the command_status.

#![no_main]

use std::{collections::BTreeMap, time::Duration};

use bytes::{BufMut, BytesMut};
use libfuzzer_sys::fuzz_target;
use smsgw_smpp::{
    LinkConfig, ReassemblyConfig,
    codec::{Frame, SmppCodec},
    fuzzing::run_bound_session,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::Decoder;

const IDS: [u32; 15] = [
    0x0000_0005, // deliver_sm
    0x0000_0015, // enquire_link
    0x0000_0006, // unbind
    0x8000_0004, // submit_sm_resp
    0x8000_0000, // generic_nack
    0x8000_0015, // enquire_link_resp
    0x0000_0102, // alert_notification
    0x0000_0103, // data_sm
    0x0000_0004, // submit_sm
    0x0000_0009, // bind_transceiver
    0x8000_0006, // unbind_resp
    0x0000_000B, // outbind
    0x8000_0005, // deliver_sm_resp
    0x0000_0005, // deliver_sm (twice as likely)
    0x0000_1234, // no such command
];

const LIMITS: ReassemblyConfig = ReassemblyConfig {
    max_pending: 4,
    timeout: Duration::from_secs(60),
    max_bytes: 2048,
};

fn wire(mut data: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    while data.len() >= 5 {
        let sel = data[0];
        let seq = u32::from(u16::from_be_bytes([data[1], data[2]]));
        let len = usize::from(u16::from_be_bytes([data[3], data[4]])).min(data.len() - 5);
        let body = &data[5..5 + len];
        data = &data[5 + len..];
        match IDS.get(usize::from(sel & 15)) {
            None => out.put_slice(body),
            Some(&id) => {
                out.put_u32(16 + len as u32);
                out.put_u32(id);
                out.put_u32(u32::from(sel >> 4));
                out.put_u32(seq);
                out.put_slice(body);
            }
        }
    }
    out.to_vec()
}

/// Sequence numbers of the requests the session must answer, and whether
/// the stream asks it to unbind.
fn expected(stream: &[u8]) -> (BTreeMap<u32, usize>, bool) {
    let mut codec = SmppCodec::default();
    let mut buf = BytesMut::from(stream);
    let mut want = BTreeMap::new();
    while let Ok(Some(frame)) = codec.decode(&mut buf) {
        let (id, seq, unbind) = match &frame {
            // alert_notification has no response PDU.
            Frame::Command(c) if matches!(c.pdu(), Some(rusmpp::Pdu::AlertNotification(_))) => {
                continue;
            }
            Frame::Command(c) => (
                u32::from(c.id()),
                c.sequence_number(),
                matches!(c.pdu(), Some(rusmpp::Pdu::Unbind)),
            ),
            Frame::Malformed {
                command_id,
                sequence_number,
                ..
            } => (*command_id, *sequence_number, false),
        };
        if id & 0x8000_0000 == 0 {
            *want.entry(seq).or_default() += 1;
        }
        if unbind {
            return (want, true);
        }
    }
    (want, false)
}

fuzz_target!(|data: &[u8]| {
    let stream = wire(data);
    let (want, unbinds) = expected(&stream);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let (end, answers) = rt.block_on(async {
        let (ours, peer) = tokio::io::duplex(64 * 1024);
        let (events, mut rx) = tokio::sync::mpsc::channel(16);
        let config = LinkConfig {
            name: "fuzz".into(),
            reassembly: LIMITS,
            ..LinkConfig::default()
        };
        let session = tokio::spawn(run_bound_session(config, ours, events));
        let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let (mut pr, mut pw) = tokio::io::split(peer);
        let write = async {
            // The session may stop reading (unbind, broken length): then
            // the write fails, which is fine.
            let _ = pw.write_all(&stream).await;
            let _ = pw.shutdown().await;
        };
        let read = async {
            let mut out = Vec::new();
            let _ = pr.read_to_end(&mut out).await;
            out
        };
        let ((), out, end) = tokio::join!(write, read, session);
        drain.abort();
        (end.expect("session task"), out)
    });

    let mut codec = SmppCodec::default();
    let mut buf = BytesMut::from(&answers[..]);
    let mut got: BTreeMap<u32, usize> = BTreeMap::new();
    while let Some(frame) = codec.decode(&mut buf).expect("our PDUs frame") {
        let Frame::Command(c) = frame else {
            panic!("we sent a malformed PDU: {frame:?}");
        };
        if u32::from(c.id()) & 0x8000_0000 != 0 {
            *got.entry(c.sequence_number()).or_default() += 1;
        } else {
            assert_eq!(c.id(), rusmpp::CommandId::EnquireLink, "{c:?}");
        }
    }
    assert!(buf.is_empty(), "trailing octets in our output");
    assert_eq!(
        got, want,
        "answers by sequence number (end: {})",
        end.reason
    );
    assert_eq!(end.reason == "peer unbind", unbinds, "{}", end.reason);
    assert!(!end.reason.is_empty());
    assert!(end.pending_sets <= LIMITS.max_pending);
    assert!(end.held_bytes <= LIMITS.max_bytes);
});
