//! Unit tests of analysis, encoding and decoding.

use super::*;

fn default_opts() -> TextOptions {
    TextOptions::default()
}

fn a(text: &str) -> Analysis {
    analyze(text, &default_opts())
}

/// Reassembles an encoded message the way the SMPP layer would.
fn reassemble(m: &EncodedMessage) -> String {
    let mut body = Vec::new();
    let mut shift = NationalShift::NONE;
    for s in &m.segments {
        if m.udhi {
            let (udh, b) = parse_udh(&s.payload).unwrap();
            shift = udh.shift().unwrap();
            body.extend_from_slice(b);
        } else {
            body.extend_from_slice(&s.payload);
        }
    }
    decode(m.encoding, shift, &body).unwrap()
}

// ---- acceptance values -----------------------------------------------------

#[test]
fn hello_is_one_gsm_segment_of_five_units() {
    let r = a("Hello");
    assert_eq!(r.encoding, Encoding::Gsm7);
    assert_eq!(
        (r.characters, r.units, r.segments, r.per_segment),
        (5, 5, 1, 160)
    );
    assert_eq!(r.shift, NationalShift::NONE);
}

#[test]
fn one_hundred_sixty_one_letters_take_two_gsm_segments() {
    let r = a(&"a".repeat(161));
    assert_eq!(
        (r.encoding, r.units, r.segments, r.per_segment),
        (Encoding::Gsm7, 161, 2, 153)
    );
}

#[test]
fn euro_sign_is_one_character_of_two_septets() {
    let r = a("€");
    assert_eq!(
        (r.encoding, r.characters, r.units, r.segments),
        (Encoding::Gsm7, 1, 2, 1)
    );
}

#[test]
fn cyrillic_greeting_is_six_ucs2_units() {
    let r = a("Привет");
    assert_eq!(
        (r.encoding, r.characters, r.units, r.segments, r.per_segment),
        (Encoding::Ucs2, 6, 6, 1, 70)
    );
}

#[test]
fn seventy_one_cyrillic_letters_take_two_ucs2_segments() {
    let r = a(&"Ж".repeat(71));
    assert_eq!(
        (r.encoding, r.units, r.segments, r.per_segment),
        (Encoding::Ucs2, 71, 2, 67)
    );
    assert_eq!(a(&"Ж".repeat(70)).segments, 1);
}

#[test]
fn emoji_is_one_character_of_two_ucs2_units() {
    let r = a("😀");
    assert_eq!(
        (r.encoding, r.characters, r.units, r.segments),
        (Encoding::Ucs2, 1, 2, 1)
    );
}

#[test]
fn empty_text_has_zero_segments_and_encodes_to_nothing() {
    let r = a("");
    assert_eq!(
        (r.encoding, r.characters, r.units, r.segments),
        (Encoding::Gsm7, 0, 0, 0)
    );
    let m = encode("", &default_opts(), 1).unwrap();
    assert!(m.segments.is_empty());
    assert!(!m.udhi);
}

#[test]
fn encoding_names_and_data_codings() {
    assert_eq!(Encoding::Gsm7.as_str(), "GSM7");
    assert_eq!(Encoding::Latin1.as_str(), "LATIN1");
    assert_eq!(Encoding::Ucs2.as_str(), "UCS2");
    assert_eq!(
        [Encoding::Gsm7, Encoding::Latin1, Encoding::Ucs2].map(|e| e.data_coding()),
        [0, 3, 8]
    );
    for e in [Encoding::Gsm7, Encoding::Latin1, Encoding::Ucs2] {
        assert_eq!(Encoding::from_data_coding(e.data_coding()), Some(e));
    }
    assert_eq!(Encoding::from_data_coding(4), None);
}

#[test]
fn a_flash_data_coding_is_class_0_of_the_same_alphabet() {
    for e in [Encoding::Gsm7, Encoding::Ucs2] {
        let dc = e.flash_data_coding().unwrap();
        assert_eq!(dc & 0xF3, 0x10, "general data coding, class 0: {dc:#04x}");
        assert_eq!(Encoding::from_data_coding(dc), Some(e));
    }
    assert_eq!(Encoding::Latin1.flash_data_coding(), None);
}

#[test]
fn data_codings_of_ts_23_038_groups_name_their_alphabet() {
    let of = |range: std::ops::RangeInclusive<u8>| {
        range.map(Encoding::from_data_coding).collect::<Vec<_>>()
    };
    let all = |n: usize, e: Option<Encoding>| vec![e; n];
    // General data coding with a message class (flash messages and the
    // like): bits 3..2 give the alphabet.
    assert_eq!(of(0x10..=0x13), all(4, Some(Encoding::Gsm7)));
    assert_eq!(of(0x14..=0x17), all(4, None), "8-bit data is not text");
    assert_eq!(of(0x18..=0x1B), all(4, Some(Encoding::Ucs2)));
    assert_eq!(of(0x1C..=0x1F), all(4, None), "reserved alphabet");
    assert_eq!(of(0x20..=0x3F), all(32, None), "compressed");
    assert_eq!(of(0x40..=0xBF), all(128, None));
    // Message waiting indication: discard and store in GSM 7-bit, store
    // in UCS-2.
    assert_eq!(of(0xC0..=0xDF), all(32, Some(Encoding::Gsm7)));
    assert_eq!(of(0xE0..=0xEF), all(16, Some(Encoding::Ucs2)));
    // Data coding / message class: bit 2 chooses GSM 7-bit or 8-bit data.
    assert_eq!(of(0xF0..=0xF3), all(4, Some(Encoding::Gsm7)));
    assert_eq!(of(0xF4..=0xF7), all(4, None));
    // SMPP's own values: IA5, octets, JIS, Cyrillic, Hebrew, pictograms…
    for dc in [1, 2, 4, 5, 6, 7, 9, 10, 13, 14] {
        assert_eq!(Encoding::from_data_coding(dc), None, "{dc}");
    }
}

#[test]
fn concat_parses_from_config_names() {
    assert_eq!("udh8".parse::<Concat>().unwrap(), Concat::Udh8);
    assert_eq!("UDH16".parse::<Concat>().unwrap(), Concat::Udh16);
    assert_eq!("sar".parse::<Concat>().unwrap(), Concat::Sar);
    assert_eq!(
        "message-payload".parse::<Concat>().unwrap(),
        Concat::MessagePayload
    );
    assert!("carrier-pigeon".parse::<Concat>().is_err());
    for c in [
        Concat::Udh8,
        Concat::Udh16,
        Concat::Sar,
        Concat::MessagePayload,
    ] {
        assert_eq!(c.to_string().parse::<Concat>().unwrap(), c);
    }
}

// ---- boundaries ------------------------------------------------------------

#[test]
fn gsm_boundaries_follow_160_and_153() {
    assert_eq!(a(&"a".repeat(160)).segments, 1);
    assert_eq!(a(&"a".repeat(160)).per_segment, 160);
    assert_eq!(a(&"a".repeat(153 * 2)).segments, 2);
    assert_eq!(a(&"a".repeat(153 * 2 + 1)).segments, 3);
    // Escapes count two septets.
    assert_eq!(a(&"{".repeat(80)).segments, 1);
    assert_eq!(a(&"{".repeat(81)).segments, 2);
}

#[test]
fn sixteen_bit_reference_costs_one_more_unit_per_segment() {
    let o = default_opts().with_concat(Concat::Udh16);
    let r = analyze(&"a".repeat(161), &o);
    assert_eq!((r.segments, r.per_segment), (2, 152));
    assert_eq!(analyze(&"a".repeat(304), &o).segments, 2);
    assert_eq!(analyze(&"a".repeat(305), &o).segments, 3);
    let r = analyze(&"Ж".repeat(71), &o);
    assert_eq!((r.segments, r.per_segment), (2, 66));
    let o = o.with_latin1(true);
    let r = analyze(&"ÿ".repeat(141), &o);
    assert_eq!(
        (r.encoding, r.segments, r.per_segment),
        (Encoding::Latin1, 2, 133)
    );
}

#[test]
fn ucs2_boundaries_follow_70_and_67() {
    assert_eq!(a(&"Ж".repeat(67 * 2)).segments, 2);
    assert_eq!(a(&"Ж".repeat(67 * 2 + 1)).segments, 3);
}

#[test]
fn sar_parts_leave_room_for_the_udh_the_smsc_adds_unless_told_otherwise() {
    let sar = default_opts().with_concat(Concat::Sar);
    // Issue 25: a 300-character GSM text reached the SMSC as 160 + 140.
    let r = analyze(&"a".repeat(300), &sar);
    assert_eq!((r.segments, r.per_segment), (2, 153));
    let r = analyze(&"a".repeat(160), &sar);
    assert_eq!((r.segments, r.per_segment), (1, 160));
    let r = analyze(&"Ж".repeat(71), &sar);
    assert_eq!((r.segments, r.per_segment), (2, 67));
    let latin = sar.with_latin1(true);
    let r = analyze(&"ð".repeat(141), &latin);
    assert_eq!((r.encoding, r.per_segment), (Encoding::Latin1, 134));
    let m = encode(&"a".repeat(300), &sar, 9).unwrap();
    let sizes: Vec<usize> = m.segments.iter().map(|s| s.payload.len()).collect();
    assert_eq!(sizes, [153, 147]);

    let full = sar.with_sar_parts(SarParts::Full);
    let r = analyze(&"a".repeat(300), &full);
    assert_eq!((r.segments, r.per_segment), (2, 160));
    let r = analyze(&"Ж".repeat(140), &full);
    assert_eq!((r.segments, r.per_segment), (2, 70));
    // The option means nothing to the other methods.
    for concat in [Concat::Udh8, Concat::Udh16, Concat::MessagePayload] {
        let o = default_opts().with_concat(concat);
        let t = "a".repeat(400);
        assert_eq!(
            analyze(&t, &o),
            analyze(&t, &o.with_sar_parts(SarParts::Full))
        );
    }
}

#[test]
fn sar_and_message_payload_carry_no_concatenation_udh() {
    let sar = default_opts().with_concat(Concat::Sar);
    let m = encode(&"a".repeat(161), &sar, 1).unwrap();
    assert!(!m.udhi && m.segments.iter().all(|s| s.udh_len == 0));
    let mp = default_opts().with_concat(Concat::MessagePayload);
    let r = analyze(&"a".repeat(1000), &mp);
    assert_eq!((r.segments, r.units, r.per_segment), (1, 1000, 65_535));
    let r = analyze(&"Ж".repeat(1000), &mp);
    assert_eq!(
        (r.encoding, r.segments, r.per_segment),
        (Encoding::Ucs2, 1, 32_767)
    );
}

#[test]
fn escape_pair_at_a_segment_boundary_moves_to_the_next_segment() {
    // 152 + 2 + 152 = 306 septets = 2 × 153, but the euro cannot be split.
    let text = format!("{}€{}", "a".repeat(152), "b".repeat(152));
    let r = a(&text);
    assert_eq!((r.units, r.segments), (306, 3));
    let m = encode(&text, &default_opts(), 7).unwrap();
    assert_eq!(m.segments.len(), 3);
    assert_eq!(m.segments[0].body(), "a".repeat(152).as_bytes());
    assert_eq!(&m.segments[1].body()[..2], &[0x1B, 0x65]);
    assert_eq!(m.segments[1].body().len(), 153);
    assert_eq!(m.segments[2].body(), b"b");
    for s in &m.segments {
        assert_ne!(
            s.body().last(),
            Some(&0x1B),
            "escape split from its character"
        );
    }
    assert_eq!(reassemble(&m), text);
}

#[test]
fn surrogate_pair_at_a_segment_boundary_moves_to_the_next_segment() {
    // 66 + 2 + 66 = 134 units = 2 × 67, but the emoji cannot be split.
    let text = format!("{}😀{}", "Ж".repeat(66), "Ж".repeat(66));
    let r = a(&text);
    assert_eq!((r.encoding, r.units, r.segments), (Encoding::Ucs2, 134, 3));
    let m = encode(&text, &default_opts(), 7).unwrap();
    assert_eq!(m.segments.len(), 3);
    assert_eq!(m.segments[0].body().len(), 132);
    assert_eq!(&m.segments[1].body()[..4], &[0xD8, 0x3D, 0xDE, 0x00]);
    assert_eq!(reassemble(&m), text);
}

// ---- encoding choice -------------------------------------------------------

#[test]
fn latin1_is_used_only_when_the_link_allows_it() {
    let text = "Grüße aus Köln — no, without the dash: Grüße aus Köln ð";
    let text = text.replace('—', "-");
    assert_eq!(a(&text).encoding, Encoding::Ucs2);
    let r = analyze(&text, &default_opts().with_latin1(true));
    assert_eq!(r.encoding, Encoding::Latin1);
    assert_eq!(r.units, r.characters);
    assert_eq!(r.per_segment, 140);
    // GSM wins ties.
    assert_eq!(
        analyze("Grüße", &default_opts().with_latin1(true)).encoding,
        Encoding::Gsm7
    );
    // Latin-1 beats GSM when escapes would cost a segment.
    let braces = "{}".repeat(50);
    assert_eq!(a(&braces).segments, 2);
    let r = analyze(&braces, &default_opts().with_latin1(true));
    assert_eq!((r.encoding, r.segments), (Encoding::Latin1, 1));
    let m = encode(&braces, &default_opts().with_latin1(true), 0).unwrap();
    assert_eq!(m.data_coding, 3);
    assert_eq!(reassemble(&m), braces);
}

fn turkish_text() -> String {
    "Şişli'de güzel bir gün geçirdik, ığdır çok uzak. ".repeat(3)
}

#[test]
fn national_tables_are_not_used_unless_enabled() {
    let r = a(&turkish_text());
    assert_eq!(r.encoding, Encoding::Ucs2);
    assert_eq!(r.shift, NationalShift::NONE);
    let spanish_only = default_opts().with_national(Language::Spanish.into());
    assert_eq!(
        analyze(&turkish_text(), &spanish_only).encoding,
        Encoding::Ucs2
    );
}

#[test]
fn turkish_locking_table_is_chosen_when_it_saves_segments() {
    let text = turkish_text();
    let o = default_opts().with_national(Language::Turkish.into());
    let r = analyze(&text, &o);
    assert_eq!(r.encoding, Encoding::Gsm7);
    assert_eq!(r.shift.locking, Some(Language::Turkish));
    assert_eq!(r.shift.single, None);
    assert_eq!(r.units as usize, text.chars().count());
    // 150 septets: one segment with a 4-octet UDH (155 septets).
    assert_eq!((r.segments, r.per_segment), (1, 155));
    assert!(a(&text).segments > 1);
    let m = encode(&text, &o, 9).unwrap();
    assert!(m.udhi);
    assert_eq!(m.segments.len(), 1);
    assert_eq!(&m.segments[0].payload[..4], &[0x03, 0x25, 0x01, 0x01]);
    assert_eq!(reassemble(&m), text);
}

#[test]
fn national_tables_are_not_used_when_they_save_nothing() {
    let o = default_opts().with_national(NationalLanguages::all());
    let r = analyze("Şişli", &o);
    assert_eq!((r.encoding, r.segments), (Encoding::Ucs2, 1));
    assert_eq!(r.shift, NationalShift::NONE);
    let r = analyze("plain text", &o);
    assert_eq!((r.encoding, r.shift), (Encoding::Gsm7, NationalShift::NONE));
}

#[test]
fn national_tables_can_beat_escapes_of_the_default_alphabet() {
    // 100 euro signs: 200 septets (2 segments) by default; 100 septets with
    // the Turkish locking table, which has the euro.
    let text = "€".repeat(100);
    assert_eq!(a(&text).segments, 2);
    let o = default_opts().with_national(Language::Turkish.into());
    let r = analyze(&text, &o);
    assert_eq!(
        (r.segments, r.units, r.shift.locking),
        (1, 100, Some(Language::Turkish))
    );
}

#[test]
fn spanish_single_shift_table_is_chosen_for_accented_text() {
    let text = "¿Cuándo llegarás? Mañana a las ocho, según lo acordado, sí. ".repeat(2);
    let o = default_opts().with_national(Language::Spanish.into());
    let r = analyze(&text, &o);
    assert_eq!(r.encoding, Encoding::Gsm7);
    assert_eq!(
        r.shift,
        NationalShift {
            locking: None,
            single: Some(Language::Spanish)
        }
    );
    assert_eq!(a(&text).encoding, Encoding::Ucs2);
    assert!(r.segments < a(&text).segments);
    let m = encode(&text, &o, 3).unwrap();
    assert_eq!(&m.segments[0].payload[..4], &[0x03, 0x24, 0x01, 0x02]);
    assert_eq!(reassemble(&m), text);
}

#[test]
fn portuguese_tables_and_multipart_udh_combine() {
    let text = "Não há informação sobre a ação; você já pôs o endereço? Êxito! ".repeat(4);
    let o = default_opts().with_national(NationalLanguages::all());
    let r = analyze(&text, &o);
    assert_eq!(r.encoding, Encoding::Gsm7);
    assert_eq!(r.shift.locking, Some(Language::Portuguese));
    assert!(r.segments > 1 && r.segments < a(&text).segments);
    let m = encode(&text, &o, 0xAB).unwrap();
    assert_eq!(m.segments.len() as u32, r.segments);
    let udh = &m.segments[0].payload[..m.segments[0].udh_len];
    assert_eq!(
        udh[..6],
        [udh.len() as u8 - 1, 0x00, 0x03, 0xAB, r.segments as u8, 1]
    );
    assert!(udh.windows(3).any(|w| w == [0x25, 0x01, 0x03]));
    assert_eq!(reassemble(&m), text);
}

#[test]
fn shift_table_udh_capacities() {
    let one = NationalShift {
        locking: Some(Language::Turkish),
        single: None,
    };
    let two = NationalShift {
        locking: Some(Language::Turkish),
        single: Some(Language::Turkish),
    };
    let o = |c: Concat| default_opts().with_concat(c);
    let l = Layout::new(Encoding::Gsm7, &o(Concat::Udh8), one);
    assert_eq!((l.single, l.multi), (155, 149));
    let l = Layout::new(Encoding::Gsm7, &o(Concat::Udh8), two);
    assert_eq!((l.single, l.multi), (152, 146));
    let l = Layout::new(Encoding::Gsm7, &o(Concat::Udh16), two);
    assert_eq!((l.single, l.multi), (152, 145));
    // SAR: the SMSC adds its concatenation element to our UDH.
    let l = Layout::new(Encoding::Gsm7, &o(Concat::Sar), one);
    assert_eq!((l.single, l.multi), (155, 149));
    let full = o(Concat::Sar).with_sar_parts(SarParts::Full);
    let l = Layout::new(Encoding::Gsm7, &full, one);
    assert_eq!((l.single, l.multi), (155, 155));
}

// ---- encoding --------------------------------------------------------------

#[test]
fn eight_bit_udh_segments_carry_reference_total_and_sequence() {
    let m = encode(&"a".repeat(161), &default_opts(), 0x1234).unwrap();
    assert!(m.udhi);
    assert_eq!((m.encoding, m.data_coding), (Encoding::Gsm7, 0));
    assert_eq!(m.segments.len(), 2);
    assert_eq!(
        &m.segments[0].payload[..6],
        &[0x05, 0x00, 0x03, 0x34, 0x02, 0x01]
    );
    assert_eq!(
        &m.segments[1].payload[..6],
        &[0x05, 0x00, 0x03, 0x34, 0x02, 0x02]
    );
    assert_eq!(m.segments[0].payload.len(), 6 + 153);
    assert_eq!(m.segments[1].body(), b"aaaaaaaa");
    assert!(m.segments.iter().all(|s| s.sar.is_none()));
}

#[test]
fn sixteen_bit_udh_segments_carry_the_full_reference() {
    let o = default_opts().with_concat(Concat::Udh16);
    let m = encode(&"Ж".repeat(100), &o, 0x1234).unwrap();
    assert_eq!(m.data_coding, 8);
    assert_eq!(
        &m.segments[0].payload[..7],
        &[0x06, 0x08, 0x04, 0x12, 0x34, 0x02, 0x01]
    );
    assert_eq!(m.segments[0].body().len(), 66 * 2);
    assert_eq!(reassemble(&m), "Ж".repeat(100));
}

#[test]
fn single_segment_messages_have_no_udh() {
    let m = encode("Hello", &default_opts(), 1).unwrap();
    assert!(!m.udhi);
    assert_eq!(m.segments.len(), 1);
    assert_eq!(m.segments[0].payload, b"Hello");
    assert_eq!(m.segments[0].udh_len, 0);
}

#[test]
fn sar_segments_report_tlvs_instead_of_udh() {
    let o = default_opts().with_concat(Concat::Sar);
    let m = encode(&"a".repeat(200), &o, 0xBEEF).unwrap();
    assert!(!m.udhi);
    assert_eq!(m.segments.len(), 2);
    assert_eq!(m.segments[0].payload.len(), 153);
    for (i, s) in m.segments.iter().enumerate() {
        assert_eq!(
            s.sar,
            Some(SarInfo {
                msg_ref_num: 0xBEEF,
                total_segments: 2,
                segment_seqnum: i as u8 + 1
            })
        );
    }
    assert_eq!(encode("hi", &o, 1).unwrap().segments[0].sar, None);
}

#[test]
fn message_payload_is_never_split() {
    let o = default_opts().with_concat(Concat::MessagePayload);
    let text = "€uro ".repeat(400);
    let m = encode(&text, &o, 1).unwrap();
    assert_eq!(m.segments.len(), 1);
    assert!(!m.udhi);
    assert_eq!(m.segments[0].payload.len(), 2400);
    assert_eq!(reassemble(&m), text);
    let err = encode(&"a".repeat(70_000), &o, 1).unwrap_err();
    assert_eq!(
        err,
        TextError::PayloadTooLong {
            octets: 70_000,
            max: 65_535
        }
    );
}

#[test]
fn segment_limits_are_enforced() {
    let o = default_opts().with_max_segments(Some(1));
    assert_eq!(
        encode(&"a".repeat(161), &o, 1).unwrap_err(),
        TextError::TooManySegments {
            segments: 2,
            max: 1
        }
    );
    assert!(encode(&"a".repeat(160), &o, 1).is_ok());
    let err = encode(&"a".repeat(153 * 256), &default_opts(), 1).unwrap_err();
    assert_eq!(
        err,
        TextError::TooManySegments {
            segments: 256,
            max: 255
        }
    );
    assert_eq!(a(&"a".repeat(153 * 256)).segments, 256);
}

// ---- packing ---------------------------------------------------------------

#[test]
fn packing_matches_the_classic_example() {
    let packed = pack_septets(b"hellohello", 0).unwrap();
    assert_eq!(
        packed,
        [0xE8, 0x32, 0x9B, 0xFD, 0x46, 0x97, 0xD9, 0xEC, 0x37]
    );
    assert_eq!(unpack_septets(&packed, 0).unwrap(), b"hellohello");
    assert_eq!(
        decode_gsm7_packed(&packed, 0, NationalShift::NONE).unwrap(),
        "hellohello"
    );
}

#[test]
fn seven_spare_bits_are_padded_with_carriage_return() {
    // 7 septets = 49 bits: 7 bits spare in the 7th octet.
    let packed = pack_septets(b"1234567", 0).unwrap();
    assert_eq!(packed.len(), 7);
    assert_eq!(packed[6] >> 1, 0x0D);
    assert_eq!(unpack_septets(&packed, 0).unwrap(), b"1234567");
    // 8 septets end exactly on an octet boundary; no padding.
    assert_eq!(pack_septets(b"12345678", 0).unwrap().len(), 7);
    assert_eq!(
        unpack_septets(&pack_septets(b"12345678", 0).unwrap(), 0).unwrap(),
        b"12345678"
    );
    // A real trailing CR on a boundary is doubled, per TS 23.038.
    let packed = pack_septets(b"1234567\r", 0).unwrap();
    assert_eq!(unpack_septets(&packed, 0).unwrap(), b"1234567\r\r");
}

#[test]
fn packed_payload_keeps_the_udh_and_inserts_fill_bits() {
    assert_eq!(fill_bits(6), 1);
    assert_eq!(fill_bits(7), 0);
    assert_eq!(fill_bits(0), 0);
    let m = encode(&"a".repeat(161), &default_opts(), 5).unwrap();
    let s = &m.segments[0];
    let packed = pack_payload(&s.payload, true).unwrap();
    assert_eq!(&packed[..6], &s.payload[..6]);
    // 1 fill bit + 153 septets = 1072 bits = 134 octets: 140 in all.
    assert_eq!(packed.len(), 140);
    assert_eq!(
        decode_gsm7_packed(&packed[6..], 1, NationalShift::NONE).unwrap(),
        "a".repeat(153)
    );
    assert!(pack_payload(&[9, 1, 2], true).is_err());
    assert!(pack_septets(b"a", 7).is_err());
}

// ---- decoding --------------------------------------------------------------

#[test]
fn gsm_decoder_handles_escapes_per_the_standard() {
    let n = NationalShift::NONE;
    assert_eq!(decode_gsm7(&[0x1B, 0x65, 0x00, 0x10], n).unwrap(), "€@Δ");
    // Undefined extension: the default-table character; ESC ESC: space.
    assert_eq!(decode_gsm7(&[0x1B, 0x41], n).unwrap(), "A");
    assert_eq!(decode_gsm7(&[0x1B, 0x1B, 0x41], n).unwrap(), " A");
    assert_eq!(
        decode_gsm7(&[0x41, 0x1B], n),
        Err(TextError::DanglingEscape { offset: 1 })
    );
    assert_eq!(
        decode_gsm7(&[0x41, 0x80], n),
        Err(TextError::InvalidSeptet {
            offset: 1,
            value: 0x80
        })
    );
    assert_eq!(
        decode_gsm7(&[0x1B, 0xFF], n),
        Err(TextError::InvalidSeptet {
            offset: 1,
            value: 0xFF
        })
    );
    let tr = NationalShift {
        locking: Some(Language::Turkish),
        single: Some(Language::Turkish),
    };
    assert_eq!(decode_gsm7(&[0x07, 0x1B, 0x53, 0x04], tr).unwrap(), "ıŞ€");
}

#[test]
fn ucs2_decoder_accepts_pairs_and_rejects_lone_surrogates() {
    assert_eq!(
        decode_ucs2(&[0x04, 0x16, 0xD8, 0x3D, 0xDE, 0x00]).unwrap(),
        "Ж😀"
    );
    assert_eq!(
        decode_ucs2(&[0x00]),
        Err(TextError::OddUcs2Length { len: 1 })
    );
    assert_eq!(
        decode_ucs2(&[0x00, 0x41, 0xD8, 0x3D]),
        Err(TextError::UnpairedSurrogate {
            offset: 2,
            unit: 0xD83D
        })
    );
    assert_eq!(
        decode_ucs2(&[0xDE, 0x00, 0x00, 0x41]),
        Err(TextError::UnpairedSurrogate {
            offset: 0,
            unit: 0xDE00
        })
    );
}

#[test]
fn latin1_decoder_maps_every_octet() {
    assert_eq!(decode_latin1(&[0x47, 0xFC, 0xDF, 0xFF]), "Güßÿ");
}

#[test]
fn udh_parser_reads_concatenation_and_national_elements() {
    let p = [
        0x0C, 0x08, 0x04, 0x12, 0x34, 0x03, 0x02, 0x24, 0x01, 0x02, 0x25, 0x01, 0x01, 0x41,
    ];
    let (udh, body) = parse_udh(&p).unwrap();
    assert_eq!(udh.len, 13);
    assert_eq!(
        udh.concat,
        Some(ConcatInfo {
            reference: 0x1234,
            wide_reference: true,
            total: 3,
            seq: 2
        })
    );
    assert_eq!(
        udh.shift().unwrap(),
        NationalShift {
            locking: Some(Language::Turkish),
            single: Some(Language::Spanish)
        }
    );
    assert_eq!(body, b"A");
    // Unknown elements are skipped; an invalid sequence number is ignored.
    let (udh, body) = parse_udh(&[0x08, 0x70, 0x01, 0x00, 0x00, 0x03, 0x07, 0x02, 0x00]).unwrap();
    assert_eq!(udh.concat, None);
    assert!(body.is_empty());
}

#[test]
fn udh_parser_rejects_malformed_headers() {
    for bad in [
        &[][..],
        &[0x05, 0x00, 0x03, 0x01][..],
        &[0x04, 0x00, 0x03, 0x01, 0x02][..],
        &[0x03, 0x00, 0x02, 0x01][..],
        &[0x01, 0x00][..],
        &[0x03, 0x24, 0x02, 0x01][..],
    ] {
        assert!(
            matches!(parse_udh(bad), Err(TextError::InvalidUdh { .. })),
            "{bad:?}"
        );
    }
    let (udh, _) = parse_udh(&[0x03, 0x25, 0x01, 0x0D]).unwrap();
    assert_eq!(udh.shift(), Err(TextError::UnsupportedLanguage { id: 13 }));
}

#[test]
fn payload_decoder_applies_udh_and_data_coding() {
    let d = decode_payload(0, true, &[0x03, 0x25, 0x01, 0x01, 0x07]).unwrap();
    assert_eq!(d.text, "ı");
    assert_eq!(d.encoding, Encoding::Gsm7);
    assert_eq!(decode_payload(8, false, &[0x04, 0x16]).unwrap().text, "Ж");
    assert_eq!(decode_payload(3, false, &[0xE9]).unwrap().text, "é");
    assert_eq!(
        decode_payload(4, false, &[]),
        Err(TextError::UnsupportedDataCoding { data_coding: 4 })
    );
}

#[test]
fn every_default_alphabet_character_round_trips() {
    let all: String = (0u8..0x80)
        .filter(|&s| s != 0x1B)
        .map(|s| decode_gsm7(&[s], NationalShift::NONE).unwrap())
        .collect::<String>()
        + "^{}\\[~]|€\u{0C}";
    let r = a(&all);
    assert_eq!(r.encoding, Encoding::Gsm7);
    assert_eq!(r.units, 127 + 2 * 10);
    let m = encode(&all, &default_opts(), 1).unwrap();
    assert_eq!(reassemble(&m), all);
}

// ---- grapheme clusters -----------------------------------------------------

/// The texts of the parts `split` cuts `text` into.
fn part_texts<'t>(text: &'t str, opts: &TextOptions) -> Vec<&'t str> {
    split(text, opts)
        .parts
        .into_iter()
        .map(|p| &text[p.range])
        .collect()
}

#[test]
fn ucs2_parts_never_cut_a_flag_a_zwj_sequence_a_skin_tone_or_a_variation() {
    for cluster in [
        "🇩🇪",                     // regional indicator pair, 4 units
        "👨\u{200D}👩\u{200D}👧", // ZWJ family, 8 units
        "👍🏽",                     // skin tone modifier, 4 units
        "❤\u{FE0F}",              // variation selector, 2 units
        "e\u{301}",               // combining acute, 2 units
    ] {
        // 66 units, then the cluster straddles the 67-unit boundary.
        let text = format!("{}{cluster}{}", "Ж".repeat(66), "Ж".repeat(10));
        let o = default_opts();
        let parts = part_texts(&text, &o);
        assert_eq!(parts.len(), 2, "{cluster:?}");
        assert_eq!(parts[0], "Ж".repeat(66), "{cluster:?}");
        assert!(parts[1].starts_with(cluster), "{cluster:?}");
        let m = encode(&text, &o, 3).unwrap();
        assert_eq!(m.segments.len(), 2);
        assert_eq!(m.segments[0].body().len(), 66 * 2);
        assert_eq!(reassemble(&m), text);
        assert_eq!(analyze(&text, &o).segments, 2);
    }
}

#[test]
fn a_cluster_longer_than_a_part_is_cut_at_the_hard_limit() {
    // One base letter with 100 combining marks: 101 units, more than 67.
    let zalgo = format!("a{}", "\u{301}".repeat(100));
    let text = format!("ЖЖ{zalgo}");
    let s = split(&text, &default_opts());
    let units: Vec<u32> = s.parts.iter().map(|p| p.units).collect();
    assert_eq!(units, [67, 36]);
    let m = encode(&text, &default_opts(), 1).unwrap();
    assert_eq!(reassemble(&m), text);
    // A surrogate pair inside an oversized cluster still stays whole.
    let long = format!("Ж{}", "👍\u{200D}".repeat(30));
    for p in &split(&long, &default_opts()).parts {
        assert!(p.units <= 67);
        assert!(long.is_char_boundary(p.range.start));
    }
    assert_eq!(
        reassemble(&encode(&long, &default_opts(), 1).unwrap()),
        long
    );
}

#[test]
fn crlf_stays_in_one_gsm_or_latin1_part() {
    let text = format!("{}\r\n{}", "a".repeat(152), "b".repeat(10));
    let parts = part_texts(&text, &default_opts());
    assert_eq!(parts, ["a".repeat(152), format!("\r\n{}", "b".repeat(10))]);
    assert_eq!(analyze(&text, &default_opts()).segments, 2);
    let text = format!("{}\r\n{}", "a".repeat(152), "b".repeat(152));
    // 306 septets fit two parts of 153 only if the pair were cut.
    assert_eq!(analyze(&text, &default_opts()).segments, 3);
    // 1 + 132 + 2 + 133 = 268 octets = 2 × 134, but the pair moves.
    let latin = format!("ð{}\r\n{}", "a".repeat(132), "b".repeat(133));
    let o = default_opts().with_latin1(true);
    let a = analyze(&latin, &o);
    assert_eq!((a.encoding, a.segments), (Encoding::Latin1, 3));
    assert_eq!(reassemble(&encode(&latin, &o, 1).unwrap()), latin);
}

/// The GSM and Latin-1 packing walks characters and keeps only `\r\n`
/// together; that is exact only if no other pair of their characters forms
/// one extended grapheme cluster.
#[test]
fn crlf_is_the_only_cluster_of_gsm_and_latin1_characters() {
    use unicode_segmentation::UnicodeSegmentation;
    let mut chars: Vec<char> = (0u32..0x100).filter_map(char::from_u32).collect();
    for t in [
        &tables::DEFAULT_LOCKING,
        &tables::TURKISH_LOCKING,
        &tables::PORTUGUESE_LOCKING,
    ] {
        chars.extend(t.iter().copied());
    }
    for t in [
        tables::DEFAULT_SINGLE,
        tables::TURKISH_SINGLE,
        tables::SPANISH_SINGLE,
        tables::PORTUGUESE_SINGLE,
    ] {
        chars.extend(t.iter().map(|&(_, c)| c));
    }
    chars.sort_unstable();
    chars.dedup();
    let mut pair = String::new();
    for &c in &chars {
        for &d in &chars {
            pair.clear();
            pair.push(c);
            pair.push(d);
            let n = pair.graphemes(true).count();
            let expected = if (c, d) == ('\r', '\n') { 1 } else { 2 };
            assert_eq!(n, expected, "{c:?} {d:?}");
        }
    }
}

#[test]
fn split_reports_per_part_counts_and_text_counts_all_three_measures() {
    let text = format!("{}👍🏽ok", "Ж".repeat(66));
    let s = split(&text, &default_opts());
    assert_eq!(s.analysis.segments, 2);
    let got: Vec<(u32, u32, u32)> = s
        .parts
        .iter()
        .map(|p| (p.units, p.characters, p.graphemes))
        .collect();
    assert_eq!(got, [(66, 66, 66), (6, 4, 3)]);
    assert_eq!(
        count(&text),
        TextCounts {
            scalar_values: 70,
            utf16_units: 72,
            graphemes: 69
        }
    );
    assert!(split("", &default_opts()).parts.is_empty());
    let one = split("hi", &default_opts().with_concat(Concat::MessagePayload));
    assert_eq!(one.parts.len(), 1);
    assert_eq!(one.parts[0].range, 0..2);
}

// ---- pools -----------------------------------------------------------------

#[test]
fn the_most_restrictive_options_fit_every_member() {
    let udh8 = default_opts();
    let udh16 = default_opts().with_concat(Concat::Udh16);
    let sar = default_opts().with_concat(Concat::Sar);
    let sar_full = sar.with_sar_parts(SarParts::Full);
    let payload = default_opts().with_concat(Concat::MessagePayload);
    let order = [payload, sar_full, sar, udh8, udh16];
    for (i, a) in order.iter().enumerate() {
        for (j, b) in order.iter().enumerate() {
            let m = a.most_restrictive(*b);
            let want = order[i.max(j)];
            assert_eq!((m.concat, m.sar_parts), (want.concat, want.sar_parts));
        }
    }
    let tr = NationalLanguages::from(Language::Turkish);
    let a = udh8
        .with_latin1(true)
        .with_national(tr.with(Language::Spanish))
        .with_max_segments(Some(5));
    let b = payload
        .with_national(tr.with(Language::Portuguese))
        .with_max_segments(None);
    let m = a.most_restrictive(b);
    assert_eq!(
        m,
        TextOptions {
            allow_latin1: false,
            national: tr,
            concat: Concat::Udh8,
            max_segments: Some(5),
            sar_parts: SarParts::UdhSized,
        }
    );
}

// ---- inbound ----------------------------------------------------------------

#[test]
fn unsupported_national_languages_are_named_not_guessed() {
    let (udh, _) = parse_udh(&[0x03, 0x24, 0x01, 0x06]).unwrap();
    let e = udh.shift().unwrap_err();
    assert_eq!(e, TextError::UnsupportedLanguage { id: 6 });
    assert_eq!(
        e.to_string(),
        "national language 6 (hindi) shift tables are not supported"
    );
    assert_eq!(
        TextError::UnsupportedLanguage { id: 99 }.to_string(),
        "reserved national language identifier 99"
    );
    for id in 4..=13 {
        assert!(Language::from_id(id).is_none());
        assert!(Language::name_of_id(id).is_some());
    }
    for l in Language::ALL {
        assert_eq!(Language::name_of_id(l.id()), Some(l.as_str()));
    }
    // A payload with such a header is refused, not decoded with the
    // default tables.
    assert_eq!(
        decode_payload(0, true, &[0x03, 0x25, 0x01, 0x0B, 0x41]),
        Err(TextError::UnsupportedLanguage { id: 11 })
    );
}

#[test]
fn parts_are_decoded_with_their_own_tables_and_pairs_split_by_senders_rejoin() {
    let tr = NationalShift {
        locking: Some(Language::Turkish),
        single: None,
    };
    let udh_tr = Udh {
        locking_shift: Some(1),
        ..Udh::default()
    };
    // Turkish locking: 0x1D is ş.
    let text = decode_parts(
        Encoding::Gsm7,
        [
            (Some(&udh_tr), &[0x1D, 0x1D][..]),
            (Some(&udh_tr), &[0x1D][..]),
        ],
    )
    .unwrap();
    assert_eq!(text, "şşş");
    assert_eq!(decode(Encoding::Gsm7, tr, &[0x1D]).unwrap(), "ş");
    // Without the header the same septets read as the default alphabet.
    let text = decode_parts(
        Encoding::Gsm7,
        [(Some(&udh_tr), &[0x1D][..]), (None, &[0x1D][..])],
    )
    .unwrap();
    assert_eq!(text, "şæ");
    // An escape pair split across two parts (same tables) still decodes.
    let text = decode_parts(
        Encoding::Gsm7,
        [(None, &[b'a', 0x1B][..]), (None, &[0x65][..])],
    )
    .unwrap();
    assert_eq!(text, "a€");
    // So does a surrogate pair in UCS-2.
    let text = decode_parts(
        Encoding::Ucs2,
        [(None, &[0xD8, 0x3D][..]), (None, &[0xDE, 0x00][..])],
    )
    .unwrap();
    assert_eq!(text, "😀");
    let udh_hi = Udh {
        single_shift: Some(6),
        ..Udh::default()
    };
    assert_eq!(
        decode_parts(Encoding::Gsm7, [(Some(&udh_hi), &b"a"[..])]),
        Err(TextError::UnsupportedLanguage { id: 6 })
    );
    // Shift elements mean nothing to UCS-2.
    assert_eq!(
        decode_parts(Encoding::Ucs2, [(Some(&udh_hi), &[0x04, 0x16][..])]).unwrap(),
        "Ж"
    );
}

#[test]
fn gsm7_encodes_with_the_tables_asked_for_and_names_what_does_not_fit() {
    let tr = NationalShift {
        locking: Some(Language::Turkish),
        single: Some(Language::Turkish),
    };
    // Turkish locking: ş 0x1D, İ 0x40, € 0x04; { from the single shift.
    let septets = encode_gsm7("şİ€{", tr).unwrap();
    assert_eq!(septets, [0x1D, 0x40, 0x04, 0x1B, 0x28]);
    assert_eq!(decode_gsm7(&septets, tr).unwrap(), "şİ€{");
    assert_eq!(
        encode_gsm7("aş", NationalShift::NONE),
        Err(TextError::Unencodable {
            character: 'ş',
            offset: 1
        })
    );
}
