//! Fuzzes every decoder of smsgw-text with arbitrary octets: none may panic,
//! and whatever the UDH parser accepts must be consistent.
//!
//! Run with `cargo +nightly fuzz run decode` from this directory.

#![no_main]

use libfuzzer_sys::fuzz_target;
use smsgw_text::{
    Language, NationalShift, decode_gsm7, decode_gsm7_packed, decode_latin1, decode_payload,
    decode_ucs2, pack_payload, parse_udh, unpack_septets,
};

fuzz_target!(|data: &[u8]| {
    // The first octet picks the knobs; the rest is the payload.
    let Some((&knobs, payload)) = data.split_first() else {
        return;
    };
    let lang = |n: u8| match n % 4 {
        0 => None,
        n => Language::from_id(n),
    };
    let shift = NationalShift {
        locking: lang(knobs),
        single: lang(knobs >> 2),
    };
    let fill = (knobs >> 4) % 8;
    let udhi = knobs & 0x80 != 0;
    let data_coding = [0u8, 3, 8, 0xF2][usize::from(knobs >> 5 & 3)];

    let _ = decode_gsm7(payload, shift);
    let _ = decode_gsm7_packed(payload, fill, shift);
    let _ = decode_latin1(payload);
    let _ = decode_ucs2(payload);
    let _ = unpack_septets(payload, fill);
    let _ = pack_payload(payload, udhi);
    if let Ok((udh, body)) = parse_udh(payload) {
        assert_eq!(udh.len + body.len(), payload.len());
        if let Some(c) = udh.concat {
            assert!(c.seq >= 1 && c.seq <= c.total);
        }
        let _ = udh.shift();
    }
    let _ = decode_payload(data_coding, udhi, payload);
});
