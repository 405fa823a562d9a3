//! deliver_sm bodies (receipts in text or TLV form, MO parts with UDH or
//! SAR TLVs or message_payload) decoded, classified and pushed through MO
//! reassembly with small bounds: nothing panics, the reassembler never
//! holds more sets or octets than its bounds, and everything it holds comes
//! out when it expires.
//!
//! Input: one octet of knobs, then records `[seconds: u8][len: u16 BE]
//! [deliver_sm body]`.

#![no_main]

use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use libfuzzer_sys::fuzz_target;
use rusmpp::Pdu;
use smsgw_smpp::{
    IdFormat, ReassemblyConfig,
    codec::{Frame, SmppCodec},
    deliver::{Delivered, ESM_INTERMEDIATE, Reassembler, classify},
};
use tokio_util::codec::Decoder;

const LIMITS: ReassemblyConfig = ReassemblyConfig {
    max_pending: 4,
    timeout: Duration::from_secs(60),
    max_bytes: 2048,
};

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, mut rest)) = data.split_first() else {
        return;
    };
    let ids = [IdFormat::Opaque, IdFormat::Hex, IdFormat::Decimal][usize::from(knobs % 3)];
    let mut codec = SmppCodec::default();
    let mut reassembler = Reassembler::new(LIMITS);
    let mut now = Instant::now();
    let mut seq = 0u32;
    while rest.len() >= 3 {
        let advance = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let body = &rest[3..3 + len];
        rest = &rest[3 + len..];
        seq += 1;
        now += Duration::from_secs(u64::from(advance));

        let mut buf = BytesMut::new();
        buf.put_u32(16 + body.len() as u32);
        buf.put_u32(0x0000_0005);
        buf.put_u32(0);
        buf.put_u32(seq);
        buf.put_slice(body);
        let frame = codec
            .decode(&mut buf)
            .expect("framed")
            .expect("whole frame");
        assert!(buf.is_empty());
        let Frame::Command(cmd) = frame else {
            continue;
        };
        let Some(Pdu::DeliverSm(d)) = cmd.pdu() else {
            // Only a deliver_sm without a body decodes without its PDU.
            assert!(cmd.pdu().is_none() && body.is_empty(), "{cmd:?}");
            continue;
        };
        let out = match classify("fuzz", d, ids) {
            None => continue,
            Some(Delivered::Receipt(r)) => {
                let esm = u8::from(d.esm_class);
                assert_eq!(r.intermediate, esm & 0x3C == ESM_INTERMEDIATE);
                continue;
            }
            Some(Delivered::Mo(part)) => {
                let mut out = reassembler.push("fuzz", part, now);
                out.extend(reassembler.expire("fuzz", now));
                out
            }
        };
        for mo in out {
            assert!(mo.parts >= 1);
        }
        assert!(reassembler.pending() <= LIMITS.max_pending);
        assert!(
            reassembler.held_bytes() <= LIMITS.max_bytes,
            "{} octets held",
            reassembler.held_bytes()
        );
    }
    let rest = reassembler.expire("fuzz", now + LIMITS.timeout);
    assert!(rest.iter().all(|m| !m.complete));
    assert_eq!((reassembler.pending(), reassembler.held_bytes()), (0, 0));
});
