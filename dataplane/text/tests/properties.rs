//! Property tests: round trips through every encoding and concatenation
//! method, agreement of `analyze` and `encode`, and decoders that never
//! panic on arbitrary octets.

use proptest::prelude::*;
use smsgw_text::{
    Concat, EncodedMessage, Encoding, Language, NationalLanguages, NationalShift, SarParts,
    TextOptions, analyze, decode, decode_gsm7, decode_gsm7_packed, decode_latin1, decode_payload,
    decode_ucs2, encode, fill_bits, pack_payload, pack_septets, parse_udh, split, split_on_air,
    unpack_septets,
};
use unicode_segmentation::UnicodeSegmentation;

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

/// Texts rich in clusters of several characters: flags, ZWJ sequences,
/// skin tones, variation selectors, combining marks (some piled up longer
/// than a part), `\r\n`, mixed with plain letters of every alphabet.
fn cluster_text() -> impl Strategy<Value = String> {
    let pieces = vec![
        "a",
        "Ж",
        "ş",
        "€",
        "😀",
        "🇩🇪",
        "🇹🇷",
        "👍🏽",
        "👨\u{200D}👩\u{200D}👧",
        "❤\u{FE0F}",
        "e\u{301}",
        "\u{301}",
        "\u{200D}",
        "🏽",
        "\r\n",
        "\r",
        "\n",
        "\u{301}\u{302}\u{303}\u{304}\u{305}\u{306}\u{307}\u{308}\u{309}\u{30A}",
    ];
    prop_oneof![
        prop::collection::vec(prop::sample::select(pieces), 0..250).prop_map(|v| v.concat()),
        "[a-z\r\n€]{0,400}",
        "[a-zð\r\n]{0,400}",
    ]
}

/// Octets a segment takes on the radio side: its UDH (plus the 8-bit
/// concatenation element an SMSC adds for SAR parts sized for it) and its
/// body, GSM 7-bit packed.
fn air_octets(m: &EncodedMessage, seg: &smsgw_text::Segment, opts: &TextOptions) -> usize {
    let mut payload = seg.payload.clone();
    if opts.concat == Concat::Sar && opts.sar_parts == SarParts::UdhSized && m.segments.len() > 1 {
        let ie = [0x00, 3, 1, 2, 1];
        if seg.udh_len > 0 {
            payload[0] += 5;
            payload.splice(1..1, ie);
        } else {
            payload.splice(0..0, [5, 0x00, 3, 1, 2, 1]);
        }
    }
    let udh_len = if payload.len() > seg.payload.len() || seg.udh_len > 0 {
        1 + payload[0] as usize
    } else {
        0
    };
    match m.encoding {
        // TP-UD of TS 23.040: the UDH, fill bits, then 7 bits a septet
        // (TP-UDL counts septets, so no padding septet is needed).
        Encoding::Gsm7 => {
            udh_len + (fill_bits(udh_len) as usize + 7 * (payload.len() - udh_len)).div_ceil(8)
        }
        _ => payload.len(),
    }
}

/// Units of a text slice in the chosen encoding.
fn units(text: &str, encoding: Encoding) -> u32 {
    match encoding {
        Encoding::Ucs2 => text.encode_utf16().count() as u32,
        Encoding::Latin1 => text.chars().count() as u32,
        // Only `\r\n` is a GSM cluster of several characters; it costs 2.
        Encoding::Gsm7 => text.chars().count() as u32,
    }
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
        prop::sample::select(vec![SarParts::UdhSized, SarParts::Full]),
        prop::option::of(1u16..=6),
    )
        .prop_map(
            |(allow_latin1, langs, concat, sar_parts, max_segments)| TextOptions {
                allow_latin1,
                national: langs.into_iter().collect::<NationalLanguages>(),
                concat,
                max_segments,
                sar_parts,
            },
        )
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
        let limit = opts.max_segments.map_or(255, u32::from);
        match encode(&text, &opts, reference) {
            Ok(m) => {
                prop_assert!(analysis.segments <= limit, "{} segments over the limit {limit}", analysis.segments);
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
            Err(e) => {
                prop_assert!(analysis.segments > limit, "{e}");
                prop_assert_eq!(e, smsgw_text::TextError::TooManySegments { segments: analysis.segments, max: limit });
            }
        }
    }

    #[test]
    fn parts_fit_their_method_keep_clusters_whole_and_join_to_the_text(
        text in prop_oneof![text(), cluster_text()],
        opts in options(),
        reference in any::<u16>(),
    ) {
        let s = split(&text, &opts);
        let a = s.analysis;
        prop_assert_eq!(a, analyze(&text, &opts));
        prop_assert_eq!(s.parts.len() as u32, a.segments);
        // The parts cover the text in order.
        let joined: String = s.parts.iter().map(|p| &text[p.range.clone()]).collect();
        prop_assert_eq!(&joined, &text);
        let starts: Vec<usize> = text.grapheme_indices(true).map(|(i, _)| i).collect();
        for (i, p) in s.parts.iter().enumerate() {
            let t = &text[p.range.clone()];
            prop_assert_eq!(p.characters as usize, t.chars().count());
            prop_assert_eq!(p.graphemes as usize, t.graphemes(true).count());
            prop_assert!(p.units <= a.per_segment);
            if i == 0 {
                continue;
            }
            // A part starts on a cluster boundary unless that cluster is
            // longer than a whole part.
            let at = p.range.start;
            if starts.binary_search(&at).is_err() {
                let (c0, g) = text
                    .grapheme_indices(true)
                    .find(|(c0, g)| *c0 < at && at < c0 + g.len())
                    .unwrap();
                prop_assert!(
                    units(g, a.encoding) > a.per_segment,
                    "cluster {:?} at {} cut at {} though it fits a part", g, c0, at
                );
            }
            // Greedy: the previous part had no room for what opens this one.
            let next = text[at..].graphemes(true).next().unwrap();
            let next = if units(next, a.encoding) > a.per_segment {
                &next[..next.chars().next().unwrap().len_utf8()]
            } else {
                next
            };
            let prev = &s.parts[i - 1];
            let cost = if a.encoding == Encoding::Gsm7 {
                analyze(next, &TextOptions::default().with_concat(Concat::MessagePayload)).units.max(1)
            } else {
                units(next, a.encoding)
            };
            // National tables may make a character cheaper than the
            // default alphabet does: only assert for the default tables.
            if a.shift.is_none() {
                prop_assert!(prev.units + cost > a.per_segment, "part {} left room", i - 1);
            }
        }
        let Ok(m) = encode(&text, &opts, reference) else {
            prop_assert!(a.segments > opts.max_segments.map_or(255, u32::from));
            return Ok(());
        };
        prop_assert_eq!(m.segments.len(), s.parts.len());
        for (seg, part) in m.segments.iter().zip(&s.parts) {
            // Each part decodes alone to its slice of the text.
            prop_assert_eq!(decode(m.encoding, a.shift, seg.body()).unwrap(), &text[part.range.clone()]);
            if opts.concat == Concat::MessagePayload {
                prop_assert!(seg.payload.len() <= 65_535);
            } else {
                prop_assert!(air_octets(&m, seg, &opts) <= 140, "{} octets on the air", air_octets(&m, seg, &opts));
            }
        }
        prop_assert_eq!(reassemble(&m), text);
    }

    #[test]
    fn message_payload_estimate_cuts_like_an_smsc_adding_a_udh(
        text in prop_oneof![text(), cluster_text()],
        opts in options(),
    ) {
        let opts = opts.with_concat(Concat::MessagePayload);
        let sent = analyze(&text, &opts);
        let s = split_on_air(&text, &opts);
        let a = s.analysis;
        prop_assert_eq!((a.encoding, a.shift, a.units), (sent.encoding, sent.shift, sent.units));
        prop_assert_eq!(s.parts.len() as u32, a.segments);
        let joined: String = s.parts.iter().map(|p| &text[p.range.clone()]).collect();
        prop_assert_eq!(&joined, &text);
        prop_assert!(s.parts.iter().all(|p| p.units <= a.per_segment));
        // Where UDH concatenation would choose the same alphabet, it
        // cuts the same parts.
        let udh = split(&text, &opts.with_concat(Concat::Udh8));
        if (udh.analysis.encoding, udh.analysis.shift) == (a.encoding, a.shift) {
            prop_assert_eq!(udh.parts, s.parts);
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
