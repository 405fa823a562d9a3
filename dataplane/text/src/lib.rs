//! Text engine of the SMS gateway: picks the cheapest SMS alphabet for a
//! text, counts its characters, units and segments, splits and encodes it
//! into SMPP payloads, and decodes payloads (and their user data headers)
//! back into text.
//!
//! Pure and allocation-light: [`analyze`] does not touch the heap, and the
//! crate depends on nothing beyond `std` and `unicode-segmentation`.
//!
//! # Alphabets
//!
//! * GSM 03.38 7-bit default alphabet ([`Encoding::Gsm7`], data_coding 0):
//!   one septet per character, two (escape + character) for the extension
//!   table. National language locking and single shift tables of
//!   3GPP TS 23.038 (Turkish, Spanish, Portuguese) are used when the link
//!   enables them ([`TextOptions::national`]) **and** they save segments;
//!   they cost 3 UDH octets each in every segment.
//! * Latin-1 ([`Encoding::Latin1`], data_coding 3), only when the link
//!   allows it ([`TextOptions::allow_latin1`]).
//! * UCS-2 ([`Encoding::Ucs2`], data_coding 8), UTF-16 big-endian in
//!   practice: characters outside the BMP take a surrogate pair.
//!
//! The encoding with the fewest segments wins; ties go to GSM 7-bit with
//! the default tables, then Latin-1, then UCS-2, and only then to national
//! shift tables (which not every handset supports).
//!
//! # Segments
//!
//! A message fits one SMS of 140 octets (160 septets, 140 Latin-1 octets,
//! 70 UCS-2 units) or is split into parts that each carry a concatenation
//! header ([`Concat`]). Segments are filled greedily with whole extended
//! grapheme clusters (Unicode UAX #29: a flag, a ZWJ sequence, a letter
//! with its combining marks or a skin tone, `\r\n`), so a character a reader
//! sees as one never straddles two parts; only a cluster longer than a
//! whole part is cut, at a character boundary. An escape pair or a
//! surrogate pair is never split. A segment may therefore hold fewer units
//! than [`Analysis::per_segment`]; [`analyze`], [`split`] and [`encode`]
//! share that packing, so the counts always agree. An empty text has 0
//! segments (callers reject empty messages).
//!
//! Parts sent with SAR TLVs ([`Concat::Sar`]) leave room for the
//! concatenation UDH the SMSC adds on the radio side (153/134/67 units)
//! unless the link says otherwise ([`SarParts`]).
//!
//! GSM 7-bit payloads are produced *unpacked* (one septet per octet, the
//! SMPP convention for data_coding 0); [`pack_payload`] and
//! [`pack_septets`] produce the packed form where a link needs it.

#![warn(missing_docs)]

mod decode;
mod encode;
mod error;
mod split;
mod tables;

use std::fmt;
use std::str::FromStr;

pub use decode::{
    ConcatInfo, DecodedPayload, Udh, decode, decode_gsm7, decode_gsm7_packed, decode_latin1,
    decode_parts, decode_payload, decode_ucs2, parse_udh,
};
pub use encode::{
    EncodedMessage, SarInfo, Segment, encode, encode_gsm7, fill_bits, pack_payload, pack_septets,
    unpack_septets,
};
pub use error::TextError;
pub use split::{Part, Split, TextCounts, count, split, split_on_air};
pub use tables::{Language, NationalLanguages, NationalShift, ParseLanguageError};

use tables::Tables;

/// Octets of user data in one SMS.
pub const SMS_OCTETS: u32 = 140;

/// The most octets a `message_payload` TLV carries.
pub const MESSAGE_PAYLOAD_OCTETS: u32 = 65_535;

/// The alphabet a message is sent in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// GSM 03.38 7-bit default alphabet (with optional national shift
    /// tables); units are septets. SMPP data_coding 0.
    Gsm7,
    /// ISO 8859-1; units are octets. SMPP data_coding 3.
    Latin1,
    /// UCS-2 / UTF-16 big-endian; units are UTF-16 code units. SMPP
    /// data_coding 8.
    Ucs2,
}

impl Encoding {
    /// `"GSM7"`, `"LATIN1"` or `"UCS2"`.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Encoding::Gsm7 => "GSM7",
            Encoding::Latin1 => "LATIN1",
            Encoding::Ucs2 => "UCS2",
        }
    }

    /// The SMPP data_coding value: 0, 3 or 8.
    pub const fn data_coding(&self) -> u8 {
        match self {
            Encoding::Gsm7 => 0,
            Encoding::Latin1 => 3,
            Encoding::Ucs2 => 8,
        }
    }

    /// The data_coding of a flash message (message class 0, TS 23.038
    /// general data coding with a class): 0x10 for GSM 7-bit, 0x18 for
    /// UCS-2; `None` for Latin-1, which has no class-0 form (encode a
    /// flash message without it).
    pub const fn flash_data_coding(&self) -> Option<u8> {
        match self {
            Encoding::Gsm7 => Some(0x10),
            Encoding::Latin1 => None,
            Encoding::Ucs2 => Some(0x18),
        }
    }

    /// The encoding of an SMPP data_coding value: 0 (SMSC default alphabet,
    /// taken as GSM 7-bit), 3 and 8, plus the TS 23.038 §4 coding groups an
    /// SMSC passes through from the handset's TP-DCS where SMPP defines no
    /// value of its own (a flash message, a voicemail indication):
    ///
    /// * general data coding with a message class, uncompressed:
    ///   0x10..=0x13 GSM 7-bit, 0x18..=0x1B UCS-2;
    /// * message waiting indication groups: 0xC0..=0xDF (discard / store,
    ///   GSM 7-bit), 0xE0..=0xEF (store, UCS-2);
    /// * data coding / message class: 0xF0..=0xF3 GSM 7-bit.
    ///
    /// Others give `None`: 8-bit data (SMPP 2 and 4, 0x14..=0x17,
    /// 0xF4..=0xF7), compressed text (0x20..=0x3F), the SMPP alphabets not
    /// implemented here (1, 5..=7, 9..) and reserved values.
    pub const fn from_data_coding(data_coding: u8) -> Option<Self> {
        match data_coding {
            0 | 0x10..=0x13 | 0xC0..=0xDF | 0xF0..=0xF3 => Some(Encoding::Gsm7),
            3 => Some(Encoding::Latin1),
            8 | 0x18..=0x1B | 0xE0..=0xEF => Some(Encoding::Ucs2),
            _ => None,
        }
    }

    /// Octets one unit takes in a payload (a GSM septet is sent unpacked).
    pub(crate) const fn octets_per_unit(self) -> u32 {
        match self {
            Encoding::Gsm7 | Encoding::Latin1 => 1,
            Encoding::Ucs2 => 2,
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the parts of a long message are tied together; chosen per link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Concat {
    /// UDH with the 8-bit reference concatenation element (IEI 0x00,
    /// 5 octets + UDHL). The default.
    #[default]
    Udh8,
    /// UDH with the 16-bit reference concatenation element (IEI 0x08,
    /// 6 octets + UDHL).
    Udh16,
    /// SMPP `sar_msg_ref_num` / `sar_total_segments` / `sar_segment_seqnum`
    /// TLVs per segment ([`Segment::sar`]); no concatenation UDH.
    Sar,
    /// One `message_payload` TLV with the whole text; never split, the SMSC
    /// segments it.
    MessagePayload,
}

impl Concat {
    /// The configuration name: `"udh8"`, `"udh16"`, `"sar"` or
    /// `"message_payload"`.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Concat::Udh8 => "udh8",
            Concat::Udh16 => "udh16",
            Concat::Sar => "sar",
            Concat::MessagePayload => "message_payload",
        }
    }

    /// How restrictive the method is for a pool whose members differ:
    /// the higher, the smaller the parts and the more SMSCs accept it.
    /// A concatenation UDH is plain SMPP that every SMSC passes on, so it
    /// ranks above SAR TLVs of the same part size; `message_payload`
    /// (optional in SMPP 3.4, never split here) ranks lowest.
    const fn restrictiveness(self, sar_parts: SarParts) -> u8 {
        match (self, sar_parts) {
            (Concat::Udh16, _) => 4,
            (Concat::Udh8, _) => 3,
            (Concat::Sar, SarParts::UdhSized) => 2,
            (Concat::Sar, SarParts::Full) => 1,
            (Concat::MessagePayload, _) => 0,
        }
    }
}

/// How much of an SMS each part sent with SAR TLVs ([`Concat::Sar`]) fills.
///
/// An SMSC that receives SAR TLVs turns them into a concatenation UDH on the
/// radio side, and that UDH takes room in every part; parts cut at the full
/// 160/140/70 units then no longer fit and are split again or refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SarParts {
    /// Leave room for the 8-bit reference concatenation UDH (6 octets):
    /// 153 GSM septets, 134 Latin-1 octets or 67 UCS-2 units per part, as
    /// Jasmin and most SMSCs split. The default.
    #[default]
    UdhSized,
    /// Fill the whole 140 octets: 160 GSM septets, 140 Latin-1 octets or 70
    /// UCS-2 units per part, for SMSCs that document that they take SAR
    /// parts of that size.
    Full,
}

impl SarParts {
    /// The configuration name: `"udh"` or `"full"`.
    pub const fn as_str(&self) -> &'static str {
        match self {
            SarParts::UdhSized => "udh",
            SarParts::Full => "full",
        }
    }
}

impl fmt::Display for SarParts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Concat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing a [`Concat`] from text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseConcatError {
    /// The text that names no concatenation method.
    pub input: String,
}

impl fmt::Display for ParseConcatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown concatenation method {:?} (expected udh8, udh16, sar or message_payload)",
            self.input
        )
    }
}

impl std::error::Error for ParseConcatError {}

impl FromStr for Concat {
    type Err = ParseConcatError;

    /// Case-insensitive; `-` and `_` are interchangeable.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm: String = s
            .trim()
            .chars()
            .map(|c| {
                if c == '-' {
                    '_'
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect();
        match norm.as_str() {
            "udh8" | "udh" => Ok(Concat::Udh8),
            "udh16" => Ok(Concat::Udh16),
            "sar" => Ok(Concat::Sar),
            "message_payload" | "payload" => Ok(Concat::MessagePayload),
            _ => Err(ParseConcatError {
                input: s.to_owned(),
            }),
        }
    }
}

/// What a link supports, deciding encoding and segmentation.
///
/// # Defaults
///
/// GSM 7-bit default alphabet or UCS-2 only (no Latin-1, no national shift
/// tables), 8-bit reference UDH concatenation, SAR parts sized for a UDH,
/// no segment limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TextOptions {
    /// Whether the link accepts Latin-1 (data_coding 3).
    pub allow_latin1: bool,
    /// National languages whose shift tables the link (and its
    /// subscribers' handsets) support.
    pub national: NationalLanguages,
    /// How the parts of a long message are tied together.
    pub concat: Concat,
    /// The most segments a message may have; [`encode`] fails beyond it.
    pub max_segments: Option<u16>,
    /// How much of an SMS a SAR part fills (only with [`Concat::Sar`]).
    pub sar_parts: SarParts,
}

impl TextOptions {
    /// These options with Latin-1 allowed or not.
    #[must_use]
    pub const fn with_latin1(mut self, allow: bool) -> Self {
        self.allow_latin1 = allow;
        self
    }

    /// These options with the given national languages enabled.
    #[must_use]
    pub const fn with_national(mut self, national: NationalLanguages) -> Self {
        self.national = national;
        self
    }

    /// These options with the given concatenation method.
    #[must_use]
    pub const fn with_concat(mut self, concat: Concat) -> Self {
        self.concat = concat;
        self
    }

    /// These options with the given segment limit.
    #[must_use]
    pub const fn with_max_segments(mut self, max: Option<u16>) -> Self {
        self.max_segments = max;
        self
    }

    /// These options with the given SAR part size.
    #[must_use]
    pub const fn with_sar_parts(mut self, sar_parts: SarParts) -> Self {
        self.sar_parts = sar_parts;
        self
    }

    /// Options under which a text fits both `self` and `other`, for a pool
    /// whose members may carry it: Latin-1 and national languages only if
    /// both allow them, the smaller segment limit, and the more restrictive
    /// concatenation (smaller parts; a UDH before SAR TLVs of the same size,
    /// both before `message_payload`).
    #[must_use]
    pub fn most_restrictive(self, other: TextOptions) -> TextOptions {
        let mut national = NationalLanguages::NONE;
        for l in self.national.iter().filter(|l| other.national.contains(*l)) {
            national.insert(l);
        }
        let max_segments = match (self.max_segments, other.max_segments) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let (concat, sar_parts) = if other.concat.restrictiveness(other.sar_parts)
            > self.concat.restrictiveness(self.sar_parts)
        {
            (other.concat, other.sar_parts)
        } else {
            (self.concat, self.sar_parts)
        };
        TextOptions {
            allow_latin1: self.allow_latin1 && other.allow_latin1,
            national,
            concat,
            max_segments,
            sar_parts,
        }
    }

    /// Octets of the concatenation information element each part of a
    /// split message carries in its UDH, or would carry once the SMSC turned
    /// SAR TLVs into one.
    const fn concat_ie_octets(&self) -> u32 {
        match (self.concat, self.sar_parts) {
            (Concat::Udh8, _) | (Concat::Sar, SarParts::UdhSized) => 5,
            (Concat::Udh16, _) => 6,
            (Concat::Sar, SarParts::Full) | (Concat::MessagePayload, _) => 0,
        }
    }
}

/// The result of [`analyze`]: the chosen encoding and the counts that go
/// with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Analysis {
    /// The cheapest encoding the link allows.
    pub encoding: Encoding,
    /// Unicode scalar values in the text.
    pub characters: u32,
    /// Units in the chosen encoding: septets (escape pairs count 2),
    /// octets, or UTF-16 code units.
    pub units: u32,
    /// Segments (SMS parts) the message takes; 0 for an empty text, always
    /// 1 with [`Concat::MessagePayload`] otherwise (one submit_sm; the SMSC
    /// splits it as it sees fit).
    pub segments: u32,
    /// Unit capacity of each segment in the chosen layout: e.g. 160 for a
    /// one-part GSM text, 153 per part with 8-bit UDH, 70/67 for UCS-2.
    /// With [`Concat::MessagePayload`] the capacity of the TLV.
    pub per_segment: u32,
    /// National shift tables chosen (GSM 7-bit only); each one adds a
    /// 3-octet element to the UDH of every segment.
    pub shift: NationalShift,
}

impl Analysis {
    /// The SMPP data_coding of the chosen encoding.
    pub const fn data_coding(&self) -> u8 {
        self.encoding.data_coding()
    }
}

/// Unit capacities of a message layout.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout {
    /// Units when the message is one segment.
    pub(crate) single: u32,
    /// Units per segment when it is split.
    pub(crate) multi: u32,
    /// `message_payload`: never split.
    pub(crate) unsplit: bool,
}

/// Octets of a UDH made of information elements totalling `ies` octets.
pub(crate) const fn udh_octets(ies: u32) -> u32 {
    if ies == 0 { 0 } else { ies + 1 }
}

/// Units that fit in `octets` octets of SMS user data.
const fn units_in(encoding: Encoding, octets: u32, udh: u32) -> u32 {
    match encoding {
        // Septets are packed on the air: a UDH of n octets (with fill bits)
        // takes ceil(8n / 7) septet positions of the 160.
        Encoding::Gsm7 => (octets * 8 - udh * 8) / 7,
        Encoding::Latin1 => octets - udh,
        Encoding::Ucs2 => (octets - udh) / 2,
    }
}

impl Layout {
    pub(crate) const fn new(encoding: Encoding, opts: &TextOptions, shift: NationalShift) -> Self {
        let national = 3 * shift.ie_count();
        if let Concat::MessagePayload = opts.concat {
            let cap = (MESSAGE_PAYLOAD_OCTETS - udh_octets(national)) / encoding.octets_per_unit();
            return Layout {
                single: cap,
                multi: cap,
                unsplit: true,
            };
        }
        Layout {
            single: units_in(encoding, SMS_OCTETS, udh_octets(national)),
            multi: units_in(
                encoding,
                SMS_OCTETS,
                udh_octets(national + opts.concat_ie_octets()),
            ),
            unsplit: false,
        }
    }
}

/// Greedy segment packing shared by [`analyze`], [`split`] and [`encode`]:
/// a cluster (see [`split::pack`]) goes into the current segment if it fits
/// whole, else it opens the next one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Packer {
    cap: u32,
    used: u32,
    segments: usize,
}

impl Packer {
    pub(crate) const fn new(cap: u32) -> Self {
        Packer {
            cap,
            used: 0,
            segments: 0,
        }
    }

    /// Adds a cluster of `cost` units; true when it opens a new segment.
    #[inline]
    pub(crate) fn push(&mut self, cost: u32) -> bool {
        if self.segments == 0 || self.used + cost > self.cap {
            self.segments += 1;
            self.used = cost;
            true
        } else {
            self.used += cost;
            false
        }
    }

    pub(crate) const fn segments(&self) -> usize {
        self.segments
    }
}

/// Segments and per-segment capacity for `total` units in `layout`;
/// `pack` counts the parts of a multipart message at a part capacity.
fn count_segments(total: usize, layout: Layout, pack: impl FnOnce(u32) -> usize) -> (usize, u32) {
    if total == 0 {
        (0, layout.single)
    } else if layout.unsplit || total <= layout.single as usize {
        (1, layout.single)
    } else {
        (pack(layout.multi), layout.multi)
    }
}

/// Parts of a GSM 7-bit or Latin-1 text of `units` units at capacity `cap`:
/// computed when every character costs one unit and no `\r\n` cluster can
/// straddle a boundary, else packed greedily.
fn pack_narrow(
    text: &str,
    encoding: Encoding,
    tables: Tables,
    units: usize,
    uniform: bool,
    cap: u32,
) -> usize {
    if uniform && !text.contains("\r\n") {
        units.div_ceil(cap as usize)
    } else {
        split::pack(text, encoding, tables, cap, |_| {})
    }
}

/// One pass over the text: everything needed to price every encoding.
struct Scan {
    characters: usize,
    /// Septets with the default tables (meaningful when `gsm_ok`).
    gsm_units: usize,
    gsm_ok: bool,
    latin1_ok: bool,
    utf16_units: usize,
}

/// Default-alphabet septets of an all-ASCII slice, and whether a byte
/// outside the alphabet was seen: one table load and add per byte.
#[inline]
fn ascii_septets(bytes: &[u8]) -> (usize, bool) {
    let mut units = 0usize;
    let mut bad = false;
    // Chunks keep both halves of the packed sums from overflowing.
    for chunk in bytes.chunks(1 << 30) {
        let (mut x, mut y) = (0u64, 0u64);
        let mut pairs = chunk.chunks_exact(2);
        for p in &mut pairs {
            x += tables::ASCII_COST[usize::from(p[0] & 0x7F)];
            y += tables::ASCII_COST[usize::from(p[1] & 0x7F)];
        }
        for &b in pairs.remainder() {
            x += tables::ASCII_COST[usize::from(b & 0x7F)];
        }
        let sum = x + y;
        units += (sum & (tables::ASCII_BAD - 1)) as usize;
        bad |= sum >= tables::ASCII_BAD;
    }
    (units, bad)
}

/// Prices the text in one pass. ASCII runs take the table fast path; once
/// neither GSM nor (if wanted) Latin-1 is possible, the rest is only
/// counted (characters and UTF-16 units straight from the UTF-8 bytes).
#[inline]
fn scan(text: &str, want_latin1: bool) -> Scan {
    let bytes = text.as_bytes();
    if bytes.is_ascii() {
        let (units, bad) = ascii_septets(bytes);
        return Scan {
            characters: bytes.len(),
            gsm_units: units,
            gsm_ok: !bad,
            latin1_ok: true,
            utf16_units: bytes.len(),
        };
    }
    let mut s = Scan {
        characters: 0,
        gsm_units: 0,
        gsm_ok: true,
        latin1_ok: true,
        utf16_units: 0,
    };
    let mut i = 0;
    loop {
        let rest = &bytes[i..];
        let run = rest.iter().position(|&b| b >= 0x80).unwrap_or(rest.len());
        if run > 0 {
            if s.gsm_ok {
                let (units, bad) = ascii_septets(&rest[..run]);
                s.gsm_units += units;
                s.gsm_ok = !bad;
            }
            s.characters += run;
            s.utf16_units += run;
            i += run;
        }
        let Some(c) = text.get(i..).and_then(|t| t.chars().next()) else {
            break;
        };
        i += c.len_utf8();
        s.characters += 1;
        s.utf16_units += c.len_utf16();
        s.latin1_ok &= (c as u32) < 0x100;
        if s.gsm_ok {
            let cost = tables::default_cost(c);
            s.gsm_units += cost as usize;
            s.gsm_ok = cost != 0;
        }
        if !(s.gsm_ok || want_latin1 && s.latin1_ok) {
            // Only UCS-2 is left: count the remaining characters (bytes that
            // are not continuation bytes) and surrogate pairs (4-byte leads).
            let (mut chars, mut astral) = (0usize, 0usize);
            for &b in &bytes[i..] {
                chars += usize::from((b as i8) >= -0x40);
                astral += usize::from(b >= 0xF0);
            }
            s.characters += chars;
            s.utf16_units += chars + astral;
            break;
        }
    }
    s
}

/// A priced encoding choice.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Choice {
    pub(crate) encoding: Encoding,
    pub(crate) shift: NationalShift,
    pub(crate) characters: usize,
    pub(crate) units: usize,
    pub(crate) segments: usize,
    pub(crate) per_segment: u32,
}

fn price_gsm(
    text: &str,
    tables: Tables,
    shift: NationalShift,
    units: usize,
    chars: usize,
    opts: &TextOptions,
) -> Choice {
    let layout = Layout::new(Encoding::Gsm7, opts, shift);
    let (segments, per_segment) = count_segments(units, layout, |cap| {
        pack_narrow(text, Encoding::Gsm7, tables, units, units == chars, cap)
    });
    Choice {
        encoding: Encoding::Gsm7,
        shift,
        characters: chars,
        units,
        segments,
        per_segment,
    }
}

/// Septets of `text` with `tables`, or `None` if a character is missing.
fn gsm_units(text: &str, tables: Tables) -> Option<usize> {
    let mut units = 0usize;
    for c in text.chars() {
        match tables.cost(c) {
            0 => return None,
            n => units += n as usize,
        }
    }
    Some(units)
}

/// The best national shift combination, if any can encode the text.
fn best_national(text: &str, opts: &TextOptions, chars: usize) -> Option<Choice> {
    let lockings = std::iter::once(None).chain(
        opts.national
            .iter()
            .filter(|l| l.has_locking_table())
            .map(Some),
    );
    let mut best: Option<Choice> = None;
    for locking in lockings {
        for single in std::iter::once(None).chain(opts.national.iter().map(Some)) {
            let shift = NationalShift { locking, single };
            if shift.is_none() {
                continue;
            }
            let tables = Tables::for_shift(shift);
            let Some(units) = gsm_units(text, tables) else {
                continue;
            };
            let c = price_gsm(text, tables, shift, units, chars, opts);
            let key = |c: &Choice| (c.segments, c.shift.ie_count(), c.units);
            if best.as_ref().is_none_or(|b| key(&c) < key(b)) {
                best = Some(c);
            }
        }
    }
    best
}

pub(crate) fn choose(text: &str, opts: &TextOptions) -> Choice {
    let s = scan(text, opts.allow_latin1);
    let mut best: Option<Choice> = None;
    if s.gsm_ok {
        best = Some(price_gsm(
            text,
            Tables::for_shift(NationalShift::NONE),
            NationalShift::NONE,
            s.gsm_units,
            s.characters,
            opts,
        ));
    }
    if opts.allow_latin1 && s.latin1_ok {
        let layout = Layout::new(Encoding::Latin1, opts, NationalShift::NONE);
        let tables = Tables::for_shift(NationalShift::NONE);
        let (segments, per_segment) = count_segments(s.characters, layout, |cap| {
            pack_narrow(text, Encoding::Latin1, tables, s.characters, true, cap)
        });
        if best.is_none_or(|b| segments < b.segments) {
            best = Some(Choice {
                encoding: Encoding::Latin1,
                shift: NationalShift::NONE,
                characters: s.characters,
                units: s.characters,
                segments,
                per_segment,
            });
        }
    }
    let mut best = match best {
        // UCS-2 cannot beat a single segment.
        Some(b) if b.segments <= 1 => b,
        other => {
            let layout = Layout::new(Encoding::Ucs2, opts, NationalShift::NONE);
            let tables = Tables::for_shift(NationalShift::NONE);
            let (segments, per_segment) = count_segments(s.utf16_units, layout, |cap| {
                split::pack(text, Encoding::Ucs2, tables, cap, |_| {})
            });
            match other {
                Some(b) if b.segments <= segments => b,
                _ => Choice {
                    encoding: Encoding::Ucs2,
                    shift: NationalShift::NONE,
                    characters: s.characters,
                    units: s.utf16_units,
                    segments,
                    per_segment,
                },
            }
        }
    };
    // National tables only when enabled and only when they save segments
    // (with at most one segment nothing can be saved).
    if !opts.national.is_empty()
        && best.segments > 1
        && let Some(n) = best_national(text, opts, s.characters)
        && n.segments < best.segments
    {
        best = n;
    }
    best
}

/// Picks the cheapest encoding for `text` on a link with `opts` and counts
/// characters, units and segments. Never allocates and never fails; a text
/// too long for the link shows in [`Analysis::segments`] (and makes
/// [`encode`] fail).
///
/// ```
/// use smsgw_text::{analyze, Encoding, TextOptions};
/// let a = analyze("Hello", &TextOptions::default());
/// assert_eq!((a.encoding, a.characters, a.units, a.segments), (Encoding::Gsm7, 5, 5, 1));
/// ```
pub fn analyze(text: &str, opts: &TextOptions) -> Analysis {
    analyze_from(choose(text, opts))
}

pub(crate) fn analyze_from(c: Choice) -> Analysis {
    Analysis {
        encoding: c.encoding,
        characters: saturate(c.characters),
        units: saturate(c.units),
        segments: saturate(c.segments),
        per_segment: c.per_segment,
        shift: c.shift,
    }
}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;
