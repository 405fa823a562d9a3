//! Property tests of inbound text (issue 25): whatever a handset or an
//! SMSC sends — GSM 7-bit with any national shift tables announced in
//! every part's UDH, Latin-1 or UCS-2, cut anywhere (inside an escape pair
//! or a surrogate pair), tied with an 8- or 16-bit reference UDH or SAR
//! TLVs, with other information elements beside them, in any order, with
//! the SMPP data_coding or a TS 23.038 group value of that alphabet — the
//! deliver_sm PDUs classified and reassembled give back the exact text.
//! And what the gateway itself encodes for any link setting, delivered
//! back as MO, decodes to the text it was made from.

use std::time::Instant;

use proptest::prelude::*;
use rusmpp::{
    pdus::DeliverSm,
    tlvs::MessageDeliveryRequestTlvValue,
    types::{AnyOctetString, COctetString, OctetString},
    values::{DataCoding, EsmClass, MessagePayload},
};
use smsgw_smpp::{
    IdFormat, MobileOriginated, ReassemblyConfig,
    deliver::{Delivered, Reassembler, classify},
};
use smsgw_text::{
    Concat, Encoding, Language, NationalLanguages, NationalShift, SarParts, TextOptions, encode,
    encode_gsm7,
};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        ..ProptestConfig::default()
    }
}

/// One deliver_sm as an SMSC sends it.
struct Wire {
    data_coding: u8,
    udhi: bool,
    short_message: Vec<u8>,
    message_payload: Option<Vec<u8>>,
    sar: Option<(u16, u8, u8)>,
}

fn pdu(w: &Wire) -> DeliverSm {
    let mut tlvs = Vec::new();
    if let Some((r, t, s)) = w.sar {
        tlvs.push(MessageDeliveryRequestTlvValue::SarMsgRefNum(r));
        tlvs.push(MessageDeliveryRequestTlvValue::SarTotalSegments(t));
        tlvs.push(MessageDeliveryRequestTlvValue::SarSegmentSeqnum(s));
    }
    if let Some(p) = &w.message_payload {
        tlvs.push(MessageDeliveryRequestTlvValue::MessagePayload(
            MessagePayload::new(AnyOctetString::from_slice(p)),
        ));
    }
    DeliverSm::builder()
        .source_addr(COctetString::from_string("905321234567".to_owned()).unwrap())
        .destination_addr(COctetString::from_string("4444".to_owned()).unwrap())
        .esm_class(EsmClass::from(if w.udhi { 0x40 } else { 0 }))
        .data_coding(DataCoding::from(w.data_coding))
        .short_message(OctetString::from_slice(&w.short_message).unwrap())
        .tlvs(tlvs)
        .build()
}

/// Classifies and reassembles the PDUs in the given order; the messages
/// that come out.
fn receive(wires: &[Wire], order: &[usize]) -> (Vec<MobileOriginated>, Reassembler) {
    let mut r = Reassembler::new(ReassemblyConfig::default());
    let now = Instant::now();
    let mut out = Vec::new();
    for &i in order {
        match classify("l", &pdu(&wires[i]), IdFormat::Opaque) {
            Some(Delivered::Mo(part)) => out.extend(r.push("l", part, now)),
            other => panic!("part {i} is not MO: {other:?}"),
        }
    }
    (out, r)
}

/// Characters of every GSM table (default, extension, Turkish, Spanish,
/// Portuguese), Latin-1 and beyond; the text keeps those its alphabet has.
fn any_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => prop::sample::select(
            "abcXYZ019 .,!?@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà\n\r"
                .chars()
                .collect::<Vec<_>>()
        ),
        2 => prop::sample::select("^{}\\[~]|€\u{0C}".chars().collect::<Vec<_>>()),
        4 => prop::sample::select(
            "ŞşĞğİıçÁáÍíÓóÚúÂâÃãÊêÔôÕõÀªº∞`ÊÔ".chars().collect::<Vec<_>>()
        ),
        1 => (0xA0u32..0x100).prop_map(|u| char::from_u32(u).unwrap()),
        1 => prop::sample::select("Ж😀🇹🇷👍🏽\u{200D}\u{FE0F}こ".chars().collect::<Vec<_>>()),
        1 => any::<char>(),
    ]
}

/// Every pair of tables a sender may announce (Spanish has no locking
/// table: announcing it means the default one).
fn shift() -> impl Strategy<Value = NationalShift> {
    let lang = || prop::option::of(prop::sample::select(Language::ALL.to_vec()));
    (lang(), lang()).prop_map(|(locking, single)| NationalShift { locking, single })
}

/// How a sender ties its parts.
#[derive(Clone, Copy, Debug)]
enum Tie {
    Udh8,
    Udh16,
    Sar,
}

/// What a sender sends: the text, its alphabet and tables, the cut points
/// (fractions of the body), the tie, extra IEs before or after the others,
/// the reference and the order of the parts.
#[derive(Debug)]
struct Sent {
    text: String,
    encoding: Encoding,
    /// The data_coding sent: the SMPP value, or a TS 23.038 group value
    /// with the same alphabet (a flash message, a voicemail indication).
    data_coding: u8,
    shift: NationalShift,
    body: Vec<u8>,
    cuts: Vec<usize>,
    tie: Tie,
    extra_first: Option<(u8, Vec<u8>)>,
    extra_last: Option<(u8, Vec<u8>)>,
    reference: u16,
}

/// Information elements handsets put beside the text: application ports
/// (8- and 16-bit), a text formatting element, a special SMS indication.
fn extra_ie() -> impl Strategy<Value = Option<(u8, Vec<u8>)>> {
    prop::option::of(prop::sample::select(vec![
        (0x05u8, vec![0x0B, 0x84, 0x23, 0xF0]),
        (0x04, vec![0x10, 0x20]),
        (0x0A, vec![0, 4, 0x10]),
        (0x01, vec![0x80, 0x01]),
    ]))
}

fn sent() -> impl Strategy<Value = Sent> {
    (
        prop::collection::vec(any_char(), 1..160),
        prop::sample::select(vec![Encoding::Gsm7, Encoding::Latin1, Encoding::Ucs2]),
        shift(),
        prop::collection::vec(any::<u16>(), 0..6),
        prop::sample::select(vec![Tie::Udh8, Tie::Udh16, Tie::Sar]),
        extra_ie(),
        extra_ie(),
        (any::<u16>(), any::<prop::sample::Index>()),
    )
        .prop_filter_map(
            "text without characters of its alphabet",
            |(chars, encoding, shift, cuts, tie, extra_first, extra_last, (reference, dcs))| {
                let (text, body, shift): (String, Vec<u8>, _) = match encoding {
                    Encoding::Gsm7 => {
                        let text: String = chars
                            .into_iter()
                            .filter(|c| encode_gsm7(&c.to_string(), shift).is_ok())
                            .collect();
                        let body = encode_gsm7(&text, shift).ok()?;
                        (text, body, shift)
                    }
                    Encoding::Latin1 => {
                        let text: String = chars
                            .into_iter()
                            .filter(|&c| u32::from(c) < 0x100)
                            .collect();
                        let body = text.chars().map(|c| c as u8).collect();
                        (text, body, NationalShift::NONE)
                    }
                    Encoding::Ucs2 => {
                        let text: String = chars.into_iter().collect();
                        let body = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
                        (text, body, NationalShift::NONE)
                    }
                };
                if text.is_empty() {
                    return None;
                }
                // Cut points anywhere in the body (on a UTF-16 unit for
                // UCS-2), at most 120 octets apart so every part fits a
                // short_message beside its UDH.
                let step = if encoding == Encoding::Ucs2 { 2 } else { 1 };
                let units = body.len() / step;
                let mut cuts: Vec<usize> = cuts
                    .into_iter()
                    .map(|c| usize::from(c) % units * step)
                    .filter(|&c| c > 0)
                    .collect();
                let mut at = 0;
                while body.len() - at > 120 {
                    at += 120;
                    cuts.push(at);
                }
                cuts.sort_unstable();
                cuts.dedup();
                let data_coding = *dcs.get(match encoding {
                    Encoding::Gsm7 => &[0x00, 0x10, 0x13, 0xC1, 0xD8, 0xF0, 0xF3][..],
                    Encoding::Latin1 => &[0x03],
                    Encoding::Ucs2 => &[0x08, 0x18, 0x1B, 0xE0, 0xEF],
                });
                Some(Sent {
                    text,
                    encoding,
                    data_coding,
                    shift,
                    body,
                    cuts,
                    tie,
                    extra_first,
                    extra_last,
                    reference,
                })
            },
        )
}

impl Sent {
    fn wires(&self) -> Vec<Wire> {
        let bounds: Vec<usize> = std::iter::once(0)
            .chain(self.cuts.iter().copied())
            .chain([self.body.len()])
            .collect();
        let total = (bounds.len() - 1) as u8;
        let multipart = total > 1;
        bounds
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                let seq = i as u8 + 1;
                let mut ies = Vec::new();
                let mut ie = |iei: u8, data: &[u8]| {
                    ies.push(iei);
                    ies.push(data.len() as u8);
                    ies.extend_from_slice(data);
                };
                if let Some((iei, data)) = &self.extra_first {
                    ie(*iei, data);
                }
                match self.tie {
                    Tie::Udh8 if multipart => ie(0x00, &[self.reference as u8, total, seq]),
                    Tie::Udh16 if multipart => {
                        let [hi, lo] = self.reference.to_be_bytes();
                        ie(0x08, &[hi, lo, total, seq]);
                    }
                    _ => {}
                }
                if let Some(l) = self.shift.locking {
                    ie(0x25, &[l.id()]);
                }
                if let Some(l) = self.shift.single {
                    ie(0x24, &[l.id()]);
                }
                if let Some((iei, data)) = &self.extra_last {
                    ie(*iei, data);
                }
                let mut short_message = Vec::new();
                if !ies.is_empty() {
                    short_message.push(ies.len() as u8);
                    short_message.extend_from_slice(&ies);
                }
                short_message.extend_from_slice(&self.body[w[0]..w[1]]);
                Wire {
                    data_coding: self.data_coding,
                    udhi: !ies.is_empty(),
                    short_message,
                    message_payload: None,
                    sar: (multipart && matches!(self.tie, Tie::Sar)).then_some((
                        self.reference,
                        total,
                        seq,
                    )),
                }
            })
            .collect()
    }
}

/// A permutation of `0..n` drawn from `seed`.
fn shuffled(n: usize, seed: &[u16]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    for (i, s) in seed.iter().enumerate().take(n) {
        order.swap(i, i + usize::from(*s) % (n - i));
    }
    order
}

/// Texts mostly of one flavour, so that every alphabet and every set of
/// national tables gets chosen.
fn gateway_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(any_char(), 1..400).prop_map(|v| v.into_iter().collect()),
        "[a-zŞşĞğİıçüö {€]{1,400}",
        "[a-zàáíóúñ¿¡ç ]{1,400}",
        "[a-zãõêçâÔ∞ ]{1,400}",
        "[a-zÿþ ]{1,400}",
        "[aЖ😀]{1,200}",
    ]
}

/// Every link setting the gateway encodes for: each concatenation method
/// and SAR part size, each set of national languages, with and without
/// Latin-1.
fn every_link_setting() -> Vec<TextOptions> {
    let mut all = Vec::new();
    for concat in [
        Concat::Udh8,
        Concat::Udh16,
        Concat::Sar,
        Concat::MessagePayload,
    ] {
        for sar_parts in [SarParts::UdhSized, SarParts::Full] {
            for langs in 0..8u8 {
                let national: NationalLanguages = Language::ALL
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| langs & (1 << i) != 0)
                    .map(|(_, l)| l)
                    .collect();
                for latin1 in [false, true] {
                    all.push(
                        TextOptions::default()
                            .with_concat(concat)
                            .with_sar_parts(sar_parts)
                            .with_national(national)
                            .with_latin1(latin1),
                    );
                }
            }
        }
    }
    all
}

proptest! {
    #![proptest_config(config())]

    /// Text a handset sends in any alphabet and tables, cut anywhere,
    /// tied any way, with other elements in its UDH, arriving in any order,
    /// comes out once, complete, as the exact text, with the user data of
    /// its parts (headers removed) joined.
    #[test]
    fn mo_in_any_tables_and_parts_arrives_as_the_exact_text(
        s in sent(),
        seed in prop::collection::vec(any::<u16>(), 8),
    ) {
        let wires = s.wires();
        let order = shuffled(wires.len(), &seed);
        let (out, r) = receive(&wires, &order);
        prop_assert_eq!(out.len(), 1, "{:?}", out);
        let mo = &out[0];
        prop_assert!(mo.complete);
        prop_assert_eq!(mo.parts as usize, wires.len());
        prop_assert_eq!(mo.data_coding, s.data_coding);
        prop_assert_eq!(Encoding::from_data_coding(mo.data_coding), Some(s.encoding));
        prop_assert_eq!(&mo.payload[..], &s.body[..]);
        prop_assert_eq!(mo.text.as_deref(), Ok(s.text.as_str()));
        prop_assert_eq!((r.pending(), r.held_bytes()), (0, 0));
    }

    /// What the gateway encodes for a link (any alphabet, tables,
    /// concatenation and SAR part size), delivered back as MO part by part
    /// in any order (a `message_payload` message in its TLV), decodes to
    /// the text it was made from.
    #[test]
    fn what_the_gateway_encodes_decodes_back_when_delivered(
        text in gateway_text(),
        opts in prop::sample::select(every_link_setting()),
        reference in any::<u16>(),
        seed in prop::collection::vec(any::<u16>(), 8),
    ) {
        let m = encode(&text, &opts, reference).expect("400 characters fit 255 parts");
        let wires: Vec<Wire> = m
            .segments
            .iter()
            .map(|seg| {
                let (short_message, message_payload) = if m.concat == Concat::MessagePayload {
                    (Vec::new(), Some(seg.payload.clone()))
                } else {
                    (seg.payload.clone(), None)
                };
                Wire {
                    data_coding: m.data_coding,
                    udhi: m.udhi,
                    short_message,
                    message_payload,
                    sar: seg.sar.map(|s| (s.msg_ref_num, s.total_segments, s.segment_seqnum)),
                }
            })
            .collect();
        let order = shuffled(wires.len(), &seed);
        let (out, _) = receive(&wires, &order);
        prop_assert_eq!(out.len(), 1);
        prop_assert!(out[0].complete);
        prop_assert_eq!(out[0].text.as_deref(), Ok(text.as_str()));
    }
}
