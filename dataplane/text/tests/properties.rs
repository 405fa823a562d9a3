//! Property tests: round trips through every encoding and concatenation
//! method, agreement of `analyze` and `encode`, and decoders that never
//! panic on arbitrary octets.

use proptest::prelude::*;
use smsgw_text::{
    Concat, EncodedMessage, Encoding, Language, NationalLanguages, NationalShift, TextOptions,
    analyze, decode, decode_gsm7, decode_gsm7_packed, decode_latin1, decode_payload, decode_ucs2,
    encode, pack_payload, pack_septets, parse_udh, unpack_septets,
};

/// Characters that exercise every table: default alphabet, extension
/// table, national tables, Latin-1, other BMP scripts, astral planes.
fn interesting_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => prop::sample::select(
            "abcXYZ019 .,!?@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà\n\r".chars().collect::<Vec<_>>()
        ),
        2 => prop::sample::select("^{}\\[~]|€\u{0C}".chars().collect::<Vec<_>>()),
        2 => prop::sample::select(
            "ŞşĞğİıçÁáÍíÓóÚúÂâÃãÊêÔôÕõÀÁªº∞`".chars().collect::<Vec<_>>()
        ),
        1 => (0xA0u32..0x100).prop_map(|u| char::from_u32(u).unwrap()),
        1 => prop::sample::select("ЖПриветשלוםこんにちは—“”".chars().collect::<Vec<_>>()),
        1 => prop::sample::select("😀🎉𝄞".chars().collect::<Vec<_>>()),
        1 => any::<char>(),
    ]
}

/// Texts mostly of one "flavour" so that every encoding gets chosen.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(interesting_char(), 0..500).prop_map(|v| v.into_iter().collect()),
        "[a-z {}€]{0,400}",
        "[a-zŞşĞğİıçü ]{0,400}",
        "[a-zàáíóúñ¿ ]{0,400}",
        "[a-zãõêçâ ]{0,400}",
        "[a-zÿþ ]{0,400}",
        "[Ж😀]{0,200}",
    ]
}

fn options() -> impl Strategy<Value = TextOptions> {
    (
        any::<bool>(),
        prop::sample::subsequence(Language::ALL.to_vec(), 0..=3),
        prop::sample::select(vec![
            Concat::Udh8,
            Concat::Udh16,
            Concat::Sar,
            Concat::MessagePayload,
        ]),
    )
        .prop_map(|(allow_latin1, langs, concat)| TextOptions {
            allow_latin1,
            national: langs.into_iter().collect::<NationalLanguages>(),
            concat,
            max_segments: None,
        })
}

/// Joins the segment bodies (after each UDH) and decodes them once.
fn reassemble(m: &EncodedMessage) -> String {
    let mut body = Vec::new();
    let mut shift = NationalShift::NONE;
    for s in &m.segments {
        if m.udhi {
            let (udh, b) = parse_udh(&s.payload).expect("own UDH parses");
            assert_eq!(udh.len, s.udh_len);
            shift = udh.shift().expect("own languages are supported");
            body.extend_from_slice(b);
        } else {
            body.extend_from_slice(&s.payload);
        }
    }
    decode(m.encoding, shift, &body).expect("own payload decodes")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn encode_then_reassemble_gives_the_text_back(text in text(), opts in options(), reference in any::<u16>()) {
        let analysis = analyze(&text, &opts);
        match encode(&text, &opts, reference) {
            Ok(m) => {
                prop_assert_eq!(m.analysis, analysis);
                prop_assert_eq!(m.segments.len() as u32, analysis.segments);
                prop_assert_eq!(reassemble(&m), text.clone());
                // Every segment fits one SMS (unless message_payload).
                for (i, s) in m.segments.iter().enumerate() {
                    let body = s.body();
                    match m.encoding {
                        Encoding::Gsm7 => {
                            prop_assert!(body.len() as u32 <= analysis.per_segment);
                            prop_assert!(body.last() != Some(&0x1B), "escape split");
                            if opts.concat != Concat::MessagePayload {
                                prop_assert!(pack_payload(&s.payload, s.udh_len > 0).unwrap().len() <= 140);
                            }
                        }
                        Encoding::Latin1 => prop_assert!(body.len() as u32 <= analysis.per_segment),
                        Encoding::Ucs2 => {
                            prop_assert!(body.len() as u32 <= 2 * analysis.per_segment);
                            if body.len() >= 2 {
                                let last = u16::from_be_bytes([body[body.len() - 2], body[body.len() - 1]]);
                                prop_assert!(!(0xD800..0xDC00).contains(&last), "surrogate split");
                            }
                        }
                    }
                    if opts.concat != Concat::MessagePayload {
                        prop_assert!(s.payload.len() <= 140 || m.encoding == Encoding::Gsm7);
                    }
                    if opts.concat == Concat::Sar && m.segments.len() > 1 {
                        let sar = s.sar.expect("SAR info");
                        prop_assert_eq!(sar.msg_ref_num, reference);
                        prop_assert_eq!(sar.segment_seqnum as usize, i + 1);
                        prop_assert_eq!(sar.total_segments as usize, m.segments.len());
                    }
                }
            }
            Err(e) => prop_assert!(analysis.segments > 255, "{e}"),
        }
    }

    #[test]
    fn analysis_counts_are_consistent(text in text(), opts in options()) {
        let a = analyze(&text, &opts);
        prop_assert_eq!(a.characters as usize, text.chars().count());
        match a.encoding {
            Encoding::Ucs2 => prop_assert_eq!(a.units as usize, text.encode_utf16().count()),
            Encoding::Latin1 => {
                prop_assert!(opts.allow_latin1);
                prop_assert_eq!(a.units, a.characters);
            }
            Encoding::Gsm7 => prop_assert!(a.units >= a.characters),
        }
        prop_assert!(a.shift.is_none() || a.encoding == Encoding::Gsm7);
        if let Some(l) = a.shift.locking { prop_assert!(opts.national.contains(l)); }
        if let Some(l) = a.shift.single { prop_assert!(opts.national.contains(l)); }
        // National tables must pay for themselves.
        if !a.shift.is_none() {
            let plain = analyze(&text, &opts.with_national(NationalLanguages::NONE));
            prop_assert!(a.segments < plain.segments);
        }
        prop_assert_eq!(a.segments == 0, text.is_empty());
    }

    #[test]
    fn analyze_never_panics_on_arbitrary_strings(text in any::<String>(), opts in options()) {
        let a = analyze(&text, &opts);
        prop_assert_eq!(a.characters as usize, text.chars().count());
    }

    #[test]
    fn gsm_packing_round_trips(text in "[a-zA-Z0-9 @£$€{}\r\n]{0,200}", fill in 0u8..=6) {
        let m = encode(&text, &TextOptions::default().with_concat(Concat::MessagePayload), 0).unwrap();
        prop_assume!(m.encoding == Encoding::Gsm7);
        let body = m.segments.first().map(|s| s.body().to_vec()).unwrap_or_default();
        let packed = pack_septets(&body, fill).unwrap();
        let back = decode_gsm7_packed(&packed, fill, NationalShift::NONE).unwrap();
        // TS 23.038 doubles a trailing <CR> that ends on an octet boundary.
        prop_assert!(back == text || back == format!("{text}\r"), "{:?} != {:?}", back, text);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn decoders_never_panic_on_arbitrary_octets(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        fill in 0u8..=8,
        data_coding in prop::sample::select(vec![0u8, 1, 3, 4, 8, 0xF1, 0xFF]),
        udhi in any::<bool>(),
        locking in prop::option::of(prop::sample::select(Language::ALL.to_vec())),
        single in prop::option::of(prop::sample::select(Language::ALL.to_vec())),
    ) {
        let shift = NationalShift { locking, single };
        let _ = decode_gsm7(&bytes, shift);
        let _ = decode_gsm7_packed(&bytes, fill, shift);
        let _ = decode_latin1(&bytes);
        let _ = decode_ucs2(&bytes);
        let _ = unpack_septets(&bytes, fill);
        let _ = pack_septets(&bytes, fill);
        let _ = pack_payload(&bytes, udhi);
        if let Ok((udh, body)) = parse_udh(&bytes) {
            prop_assert_eq!(udh.len + body.len(), bytes.len());
            let _ = udh.shift();
        }
        let _ = decode_payload(data_coding, udhi, &bytes);
    }

    #[test]
    fn valid_septets_always_decode(septets in prop::collection::vec(0u8..0x80, 0..300)) {
        let ok = decode_gsm7(&septets, NationalShift::NONE);
        prop_assert!(ok.is_ok() || septets.last() == Some(&0x1B));
    }
}
