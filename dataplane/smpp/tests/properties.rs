//! Property tests of what an SMSC sends us: receipts in every dialect we
//! know map to the right state, id, error and date; SMPP dates format back
//! to the digits they came from; concatenation UDHs parse back to what was
//! encoded; deliver_sm PDUs re-encode to the same PDU; MO reassembly does
//! not depend on the order (or repetition) of the parts. The fuzz targets
//! in `fuzz/` check the same code against arbitrary input (FUZZING.md).

use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use rusmpp::{
    Command, CommandStatus, Pdu,
    pdus::DeliverSm,
    tlvs::MessageDeliveryRequestTlvValue,
    types::{COctetString, OctetString},
    values::{DataCoding, ErrorCodeNetworkType, EsmClass, MessageState, NetworkErrorCode},
};
use smsgw_smpp::{
    Address, IdFormat, ReassemblyConfig, ReceiptState,
    codec::{Frame, SmppCodec, encode_into},
    deliver::{
        Delivered, MoPart, Reassembler, TextReceipt, classify, format_smpp_date, parse_smpp_date,
        state_from_text,
    },
};
use tokio_util::codec::Decoder;

fn config() -> ProptestConfig {
    // A few hundred cases each: the whole file runs in about a second.
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

/// `stat:` words seen in the field, with the state each means.
const STATS: &[(&str, ReceiptState)] = &[
    ("DELIVRD", ReceiptState::Delivered),
    ("DELIVERED", ReceiptState::Delivered),
    ("UNDELIV", ReceiptState::Undeliverable),
    ("UNDELIVERABLE", ReceiptState::Undeliverable),
    ("EXPIRED", ReceiptState::Expired),
    ("REJECTD", ReceiptState::Rejected),
    ("REJECTED", ReceiptState::Rejected),
    ("DELETED", ReceiptState::Deleted),
    ("ACCEPTD", ReceiptState::Accepted),
    ("ACCEPTED", ReceiptState::Accepted),
    ("ENROUTE", ReceiptState::Enroute),
    ("UNKNOWN", ReceiptState::Unknown),
];

/// The same states as the `message_state` TLV carries them.
fn tlv_state(s: ReceiptState) -> MessageState {
    match s {
        ReceiptState::Delivered => MessageState::Delivered,
        ReceiptState::Undeliverable => MessageState::Undeliverable,
        ReceiptState::Expired => MessageState::Expired,
        ReceiptState::Rejected => MessageState::Rejected,
        ReceiptState::Deleted => MessageState::Deleted,
        ReceiptState::Accepted => MessageState::Accepted,
        ReceiptState::Enroute => MessageState::Enroute,
        ReceiptState::Unknown => MessageState::Unknown,
    }
}

/// A UTC calendar time an SMSC could report (days up to 28: later days of
/// short months roll over, like the SMSCs that send them).
#[derive(Debug, Clone, Copy)]
struct Civil {
    y: u32,
    mo: u32,
    d: u32,
    h: u32,
    mi: u32,
    s: u32,
}

fn civil() -> impl Strategy<Value = Civil> {
    (
        0u32..100,
        1u32..=12,
        1u32..=28,
        0u32..24,
        0u32..60,
        0u32..60,
    )
        .prop_map(|(y, mo, d, h, mi, s)| Civil { y, mo, d, h, mi, s })
}

impl Civil {
    /// Seconds since 1970 by counting days year by year and month by
    /// month (year 20YY; seconds only when `seconds`).
    fn unix_secs(&self, seconds: bool) -> u64 {
        let leap =
            |y: u32| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
        let year = 2000 + self.y;
        let mut days: u64 = (1970..year).map(|y| if leap(y) { 366 } else { 365 }).sum();
        let lengths = [
            31,
            if leap(year) { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ];
        days += lengths[..(self.mo - 1) as usize].iter().sum::<u64>();
        days += u64::from(self.d - 1);
        let s = if seconds { u64::from(self.s) } else { 0 };
        days * 86_400 + u64::from(self.h) * 3600 + u64::from(self.mi) * 60 + s
    }

    fn digits(&self, seconds: bool) -> String {
        let base = format!(
            "{:02}{:02}{:02}{:02}{:02}",
            self.y, self.mo, self.d, self.h, self.mi
        );
        if seconds {
            format!("{base}{:02}", self.s)
        } else {
            base
        }
    }
}

/// How one SMSC spells its receipts.
#[derive(Debug, Clone)]
struct Dialect {
    /// Order of the fields id, sub, dlvrd, submit date, done date, stat,
    /// err (text always comes last).
    order: Vec<usize>,
    /// Keys upper-cased (`ID:`), as some SMSCs do.
    upper_keys: bool,
    /// Spaces between fields.
    gap: usize,
    /// A space after the colon (`id: 42`).
    space_after_colon: bool,
    /// Done date with seconds.
    seconds: bool,
    /// sub:/dlvrd: present.
    counters: bool,
}

fn dialect() -> impl Strategy<Value = Dialect> {
    (
        Just((0..7).collect::<Vec<usize>>()).prop_shuffle(),
        any::<bool>(),
        1usize..4,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(order, upper_keys, gap, space_after_colon, seconds, counters)| Dialect {
                order,
                upper_keys,
                gap,
                space_after_colon,
                seconds,
                counters,
            },
        )
}

#[derive(Debug, Clone)]
struct ReceiptCase {
    dialect: Dialect,
    id: String,
    stat: usize,
    /// Lower-cased stat word, as a few SMSCs send it.
    lower_stat: bool,
    err: u32,
    done: Civil,
    text: String,
}

fn receipt_case() -> impl Strategy<Value = ReceiptCase> {
    (
        dialect(),
        prop_oneof![
            "[0-9A-F]{1,16}",
            "[0-9]{1,20}",
            "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        ],
        0..STATS.len(),
        any::<bool>(),
        0u32..1000,
        civil(),
        "[A-Za-z0-9 ]{0,20}",
    )
        .prop_map(
            |(dialect, id, stat, lower_stat, err, done, text)| ReceiptCase {
                dialect,
                id,
                stat,
                lower_stat,
                err,
                done,
                text,
            },
        )
}

impl ReceiptCase {
    fn render(&self) -> String {
        let d = &self.dialect;
        let stat = if self.lower_stat {
            STATS[self.stat].0.to_ascii_lowercase()
        } else {
            STATS[self.stat].0.to_owned()
        };
        let fields: [(&str, String); 7] = [
            ("id", self.id.clone()),
            ("sub", "001".into()),
            ("dlvrd", "001".into()),
            ("submit date", "2001010000".into()),
            ("done date", self.done.digits(d.seconds)),
            ("stat", stat),
            ("err", format!("{:03}", self.err)),
        ];
        let sep = if d.space_after_colon { ": " } else { ":" };
        let mut parts: Vec<String> = d
            .order
            .iter()
            .map(|&i| &fields[i])
            .filter(|(k, _)| d.counters || (*k != "sub" && *k != "dlvrd"))
            .map(|(k, v)| {
                let k = if d.upper_keys {
                    k.to_ascii_uppercase()
                } else {
                    (*k).to_owned()
                };
                format!("{k}{sep}{v}")
            })
            .collect();
        parts.push(format!(
            "{}{sep}{}",
            if d.upper_keys { "TEXT" } else { "text" },
            self.text
        ));
        parts.join(&" ".repeat(d.gap))
    }
}

fn deliver_sm(esm: u8, short: &[u8], tlvs: Vec<MessageDeliveryRequestTlvValue>) -> DeliverSm {
    DeliverSm::builder()
        .source_addr(COctetString::from_string("4917012345".to_owned()).unwrap())
        .destination_addr(COctetString::from_string("1234".to_owned()).unwrap())
        .esm_class(EsmClass::from(esm))
        .short_message(OctetString::from_slice(short).unwrap())
        .tlvs(tlvs)
        .build()
}

fn receipt_of(d: &DeliverSm, ids: IdFormat) -> smsgw_smpp::Receipt {
    match classify("l", d, ids) {
        Some(Delivered::Receipt(r)) => r,
        other => panic!("not a receipt: {other:?}"),
    }
}

proptest! {
    #![proptest_config(config())]

    /// Every dialect: fields in any order, keys in either case, extra
    /// spaces, with or without seconds and counters.
    #[test]
    fn text_receipts_in_every_dialect_map_to_the_right_state(case in receipt_case()) {
        let text = case.render();
        let fields = TextReceipt::parse(&text);
        prop_assert_eq!(fields.id, Some(case.id.as_str()), "{}", text);
        let want_state = STATS[case.stat].1;
        prop_assert_eq!(fields.stat.map(state_from_text), Some(want_state), "{}", text);
        let r = receipt_of(&deliver_sm(0x04, text.as_bytes(), vec![]), IdFormat::Opaque);
        prop_assert_eq!(r.state, want_state);
        prop_assert_eq!(&r.smsc_message_id.raw, &case.id);
        prop_assert_eq!(r.error_code, Some(case.err));
        prop_assert!(!r.intermediate);
        let done = r.done_at.expect("done date parses");
        let secs = done.duration_since(UNIX_EPOCH).unwrap().as_secs();
        prop_assert_eq!(secs, case.done.unix_secs(case.dialect.seconds));
        let mut want = case.done.digits(case.dialect.seconds);
        if !case.dialect.seconds {
            want.push_str("00");
        }
        prop_assert_eq!(format_smpp_date(done, true), want);
    }

    /// The TLV form (receipted_message_id, message_state,
    /// network_error_code) wins over the text, and a hex id and its decimal
    /// spelling meet at the same correlation key.
    #[test]
    fn tlv_receipts_map_to_the_right_state(
        n in any::<u64>(),
        stat in 0..STATS.len(),
        err in 1u16..1000,
        intermediate in any::<bool>(),
    ) {
        let want = STATS[stat].1;
        let tlvs = vec![
            MessageDeliveryRequestTlvValue::ReceiptedMessageId(
                COctetString::from_string(format!("{n:X}")).unwrap(),
            ),
            MessageDeliveryRequestTlvValue::MessageState(tlv_state(want)),
            MessageDeliveryRequestTlvValue::NetworkErrorCode(NetworkErrorCode::new(
                ErrorCodeNetworkType::Gsm,
                err,
            )),
        ];
        let esm = if intermediate { 0x20 } else { 0x04 };
        let d = deliver_sm(esm, b"id:0 stat:BOGUS err:999", tlvs);
        let r = receipt_of(&d, IdFormat::Hex);
        prop_assert_eq!(r.state, want);
        prop_assert_eq!(r.error_code, Some(u32::from(err)));
        prop_assert_eq!(r.intermediate, intermediate);
        prop_assert_eq!(&r.smsc_message_id.normalized, &n.to_string());
        let decimal = receipt_of(
            &deliver_sm(0x04, format!("id:{n:020} stat:DELIVRD").as_bytes(), vec![]),
            IdFormat::Decimal,
        );
        prop_assert_eq!(decimal.smsc_message_id.normalized, r.smsc_message_id.normalized);
    }

    /// `YYMMDDhhmm[ss]` parses to the instant a plain day count gives
    /// (independent of the library's calendar arithmetic), and that instant
    /// formats back to the digits; anything else of that shape that is not
    /// a time is refused.
    #[test]
    fn smpp_dates_format_back_to_their_digits(c in civil(), seconds in any::<bool>()) {
        let digits = c.digits(seconds);
        let t = parse_smpp_date(&digits).expect("a valid date parses");
        let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs();
        let counted = c.unix_secs(seconds);
        prop_assert_eq!(secs, counted, "{}", digits);
        prop_assert_eq!(format_smpp_date(t, seconds), digits.clone());
        prop_assert_eq!(format_smpp_date(t, !seconds).len(), if seconds { 10 } else { 12 });
        let bad_month = format!("{}{}{}", &digits[..2], 13 + c.mo % 87, &digits[4..]);
        prop_assert!(parse_smpp_date(&bad_month).is_none(), "{}", bad_month);
        prop_assert!(parse_smpp_date(&digits[..9]).is_none());
    }

    /// A concatenation IE (8- or 16-bit reference), after any other IEs,
    /// parses back to its reference, total, sequence and the body after
    /// the UDH; 8- and 16-bit references never collide; an element whose
    /// sequence number is beyond its total is ignored (TS 23.040).
    #[test]
    fn concat_udh_parses_back_to_what_was_encoded(
        reference in any::<u16>(),
        wide in any::<bool>(),
        total in 1u8..=255,
        seq in 1u8..=255,
        others in prop::collection::vec(prop_oneof![
            (prop::sample::select(vec![0x24u8, 0x25]), prop::collection::vec(any::<u8>(), 1..=1)),
            (prop::sample::select(vec![0x0Au8, 0x70]), prop::collection::vec(any::<u8>(), 0..4)),
        ], 0..3),
        body in prop::collection::vec(any::<u8>(), 0..140),
    ) {
        let mut udh = Vec::new();
        for (iei, data) in &others {
            udh.push(*iei);
            udh.push(data.len() as u8);
            udh.extend_from_slice(data);
        }
        if wide {
            udh.extend_from_slice(&[0x08, 4]);
            udh.extend_from_slice(&reference.to_be_bytes());
        } else {
            udh.extend_from_slice(&[0x00, 3, reference as u8]);
        }
        udh.extend_from_slice(&[total, seq]);
        let mut payload = vec![udh.len() as u8];
        payload.extend_from_slice(&udh);
        payload.extend_from_slice(&body);
        let Some(Delivered::Mo(part)) = classify("l", &deliver_sm(0x40, &payload, vec![]), IdFormat::Opaque) else {
            panic!("not MO");
        };
        let want_ref = if wide { 0x1_0000 | u32::from(reference) } else { u32::from(reference as u8) };
        let want = (seq <= total).then_some((want_ref, total, seq));
        prop_assert_eq!(part.concat, want);
        prop_assert_eq!(&part.payload[..], &body[..]);
    }

    /// A deliver_sm (any addresses, esm_class, data_coding, payload, SAR
    /// TLVs) survives encode → frame → decode unchanged, and classifies the
    /// same after the round trip.
    #[test]
    fn deliver_sm_reencodes_to_the_same_pdu(
        src in "[0-9]{1,20}",
        dst in "[A-Za-z0-9]{1,20}",
        esm in prop::sample::select(vec![0x00u8, 0x04, 0x20, 0x40]),
        dc in any::<u8>(),
        short in prop::collection::vec(any::<u8>(), 0..=254),
        sar in proptest::option::of((any::<u16>(), 1u8..=255, 1u8..=255)),
        seq in 1u32..0x7FFF_FFFF,
    ) {
        let mut tlvs = Vec::new();
        if let Some((r, t, s)) = sar {
            tlvs.push(MessageDeliveryRequestTlvValue::SarMsgRefNum(r));
            tlvs.push(MessageDeliveryRequestTlvValue::SarTotalSegments(t));
            tlvs.push(MessageDeliveryRequestTlvValue::SarSegmentSeqnum(s));
        }
        let d = DeliverSm::builder()
            .source_addr(COctetString::from_string(src).unwrap())
            .destination_addr(COctetString::from_string(dst).unwrap())
            .esm_class(EsmClass::from(esm))
            .data_coding(DataCoding::from(dc))
            .short_message(OctetString::from_slice(&short).unwrap())
            .tlvs(tlvs)
            .build();
        let cmd = Command::new(CommandStatus::EsmeRok, seq, Pdu::DeliverSm(d.clone()));
        let mut buf = BytesMut::new();
        encode_into(&cmd, &mut buf);
        let Some(Frame::Command(back)) = SmppCodec::default().decode(&mut buf).unwrap() else {
            panic!("our own deliver_sm does not decode");
        };
        prop_assert!(buf.is_empty());
        prop_assert_eq!(back.sequence_number(), seq);
        let Some(Pdu::DeliverSm(back)) = back.pdu() else { panic!("not a deliver_sm") };
        prop_assert_eq!(back, &d);
        let once = format!("{:?}", classify("l", &d, IdFormat::Opaque));
        let twice = format!("{:?}", classify("l", back, IdFormat::Opaque));
        prop_assert_eq!(once, twice);
    }
}

fn part(reference: u32, total: u8, seq: u8, body: &[u8]) -> MoPart {
    MoPart {
        source: Address::new("4917", 1, 1),
        destination: Address::new("1234", 0, 0),
        data_coding: 0,
        esm_class: if seq == 1 { 0x40 } else { 0x41 },
        payload: Bytes::copy_from_slice(body),
        concat: Some((reference, total, seq)),
        udh: None,
    }
}

/// Parts of two messages (one with an 8-bit, one with a 16-bit reference
/// of the same low value), interleaved in any order, with repeats of
/// parts not yet complete.
/// Part bodies of two messages, and the arrival order as (message, part).
type Arrivals = (Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<(usize, usize)>);

fn arrivals() -> impl Strategy<Value = Arrivals> {
    let bodies = || prop::collection::vec(prop::collection::vec(any::<u8>(), 0..20), 2..8);
    (bodies(), bodies()).prop_flat_map(|(a, b)| {
        let mut order: Vec<(usize, usize)> = (0..a.len()).map(|i| (0, i)).collect();
        order.extend((0..b.len()).map(|i| (1, i)));
        let n = order.len();
        (
            Just(a),
            Just(b),
            (
                Just(order).prop_shuffle(),
                prop::collection::vec(0..n, 0..4),
            ),
        )
            .prop_map(|(a, b, (mut order, repeats))| {
                // A repeat goes right after the first arrival of its part,
                // unless that arrival completes its message.
                for r in repeats {
                    let p = order[r];
                    let at = order.iter().position(|&x| x == p).unwrap();
                    let last = order.iter().rposition(|&x| x.0 == p.0).unwrap();
                    if at < last {
                        order.insert(at + 1, p);
                    }
                }
                (a, b, order)
            })
    })
}

proptest! {
    #![proptest_config(config())]

    /// Whatever the order of the parts (and repeats before completion),
    /// each message comes out exactly once, complete, with its parts in
    /// sequence order and the first part's header, and nothing stays held.
    #[test]
    fn reassembly_is_order_independent((a, b, order) in arrivals()) {
        let mut r = Reassembler::new(ReassemblyConfig::default());
        let now = Instant::now();
        let msgs = [(7u32, &a), (0x1_0007, &b)];
        let mut out = Vec::new();
        for (m, i) in order {
            let (reference, bodies) = msgs[m];
            let p = part(reference, bodies.len() as u8, i as u8 + 1, &bodies[i]);
            out.extend(r.push("l", p, now));
        }
        prop_assert_eq!(out.len(), 2);
        prop_assert_eq!((r.pending(), r.held_bytes()), (0, 0));
        for (reference, bodies) in msgs {
            let want: Vec<u8> = bodies.concat();
            let mo = out.iter().find(|mo| mo.payload[..] == want[..] && mo.parts as usize == bodies.len());
            let mo = mo.unwrap_or_else(|| panic!("message {reference:#x} missing from {out:?}"));
            prop_assert!(mo.complete);
            prop_assert_eq!(mo.esm_class, 0x40, "the first part's esm_class");
        }
        prop_assert!(r.expire("l", now + Duration::from_secs(3600)).is_empty());
    }

    /// However parts that never complete arrive, the buffer holds at most
    /// its bounds, and every part comes out exactly once (completed,
    /// evicted or expired).
    #[test]
    fn reassembly_holds_at_most_its_bounds(
        parts in prop::collection::vec((0u32..6, 2u8..5, 1u8..5, 0usize..300), 1..60),
        max_pending in 1usize..4,
        max_bytes in 0usize..1000,
    ) {
        let cfg = ReassemblyConfig { max_pending, max_bytes, ..ReassemblyConfig::default() };
        let mut r = Reassembler::new(cfg);
        let now = Instant::now();
        let mut out_bytes = 0;
        let mut in_bytes = 0;
        let mut seen = std::collections::HashSet::new();
        for (i, (reference, total, seq, len)) in parts.into_iter().enumerate() {
            let seq = seq.min(total);
            if !seen.insert((reference, total, seq)) {
                continue; // a repeat replaces its slot: the unit test covers it
            }
            in_bytes += len;
            let t = now + Duration::from_millis(i as u64);
            for mo in r.push("l", part(reference, total, seq, &vec![0; len]), t) {
                out_bytes += mo.payload.len();
            }
            prop_assert!(r.pending() <= max_pending);
            prop_assert!(r.held_bytes() <= max_bytes, "{} > {}", r.held_bytes(), max_bytes);
            // What it holds is exactly what went in and did not come out.
            prop_assert_eq!(in_bytes - out_bytes, r.held_bytes());
        }
        for mo in r.expire("l", now + Duration::from_secs(3600)) {
            out_bytes += mo.payload.len();
        }
        prop_assert_eq!(out_bytes, in_bytes);
        prop_assert_eq!((r.pending(), r.held_bytes()), (0, 0));
    }
}
