//! Splitting a text into SMPP payloads, and GSM 7-bit packing.

use crate::tables::{ESC, Tables};
use crate::{Analysis, Concat, Encoding, NationalShift, TextError, TextOptions};

/// The most segments an 8-bit "total segments" field can number.
const MAX_NUMBERED: u32 = 255;

/// UDH information element identifiers.
pub(crate) const IEI_CONCAT_8: u8 = 0x00;
pub(crate) const IEI_CONCAT_16: u8 = 0x08;
pub(crate) const IEI_SINGLE_SHIFT: u8 = 0x24;
pub(crate) const IEI_LOCKING_SHIFT: u8 = 0x25;

/// A text encoded for one link: what [`encode`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedMessage {
    /// The analysis the encoding follows (encoding, counts, shift tables).
    pub analysis: Analysis,
    /// The alphabet of every payload.
    pub encoding: Encoding,
    /// The SMPP data_coding for every segment (0, 3 or 8).
    pub data_coding: u8,
    /// Whether the payloads start with a user data header: set esm_class
    /// bit 0x40 (UDHI) on every submit_sm.
    pub udhi: bool,
    /// How the segments are tied together.
    pub concat: Concat,
    /// The segments in order; empty for an empty text. With
    /// [`Concat::MessagePayload`] one segment whose payload goes in the
    /// `message_payload` TLV.
    pub segments: Vec<Segment>,
}

/// One part of an encoded message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// `short_message` (or `message_payload`) octets: the UDH, if any,
    /// then the text units (GSM septets unpacked, one per octet).
    pub payload: Vec<u8>,
    /// Octets of UDH at the start of `payload` (UDHL included); 0 without.
    pub udh_len: usize,
    /// The SAR TLVs to send with this segment ([`Concat::Sar`] with more
    /// than one segment only).
    pub sar: Option<SarInfo>,
}

impl Segment {
    /// The text units after the UDH.
    pub fn body(&self) -> &[u8] {
        &self.payload[self.udh_len..]
    }
}

/// SMPP segmentation-and-reassembly TLV values of one segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SarInfo {
    /// `sar_msg_ref_num`: the same for every segment of a message.
    pub msg_ref_num: u16,
    /// `sar_total_segments`.
    pub total_segments: u8,
    /// `sar_segment_seqnum`, from 1.
    pub segment_seqnum: u8,
}

/// Appends the units of `c` in `encoding` to `out`.
#[inline]
fn push_char(out: &mut Vec<u8>, c: char, encoding: Encoding, tables: Tables) {
    match encoding {
        Encoding::Gsm7 => {
            if let Some(s) = tables.locking.septet(c) {
                out.push(s);
            } else if let Some(s) = tables.single.septet(c) {
                out.extend_from_slice(&[ESC, s]);
            } else {
                // analyze() only picks tables that encode every character.
                debug_assert!(false, "{c:?} not in the chosen GSM tables");
                out.push(b'?');
            }
        }
        Encoding::Latin1 => {
            debug_assert!((c as u32) < 0x100);
            out.push(c as u32 as u8);
        }
        Encoding::Ucs2 => {
            let mut buf = [0u16; 2];
            for u in c.encode_utf16(&mut buf).iter() {
                out.extend_from_slice(&u.to_be_bytes());
            }
        }
    }
}

/// Appends the UDH of one segment (nothing when it has no elements).
fn push_udh(
    out: &mut Vec<u8>,
    concat: Option<(Concat, u16, u8, u8)>,
    shift: NationalShift,
) -> usize {
    let start = out.len();
    out.push(0); // UDHL, patched below
    match concat {
        Some((Concat::Udh8, reference, total, seq)) => {
            out.extend_from_slice(&[IEI_CONCAT_8, 3, reference as u8, total, seq]);
        }
        Some((Concat::Udh16, reference, total, seq)) => {
            let [hi, lo] = reference.to_be_bytes();
            out.extend_from_slice(&[IEI_CONCAT_16, 4, hi, lo, total, seq]);
        }
        _ => {}
    }
    if let Some(l) = shift.single {
        out.extend_from_slice(&[IEI_SINGLE_SHIFT, 1, l.id()]);
    }
    if let Some(l) = shift.locking {
        out.extend_from_slice(&[IEI_LOCKING_SHIFT, 1, l.id()]);
    }
    let len = out.len() - start;
    if len == 1 {
        out.truncate(start);
        0
    } else {
        out[start] = (len - 1) as u8;
        len
    }
}

/// Encodes `text` for a link with `opts` into per-segment payloads.
///
/// `reference` is the concatenation reference shared by the segments (only
/// its low 8 bits with [`Concat::Udh8`]); callers keep a counter per
/// destination or link. The encoding and the segment count are exactly
/// those of [`analyze`](crate::analyze) and the parts those of
/// [`split`](crate::split): a grapheme cluster that fits a part, an escape
/// pair or a surrogate pair never straddles two segments.
///
/// # Errors
///
/// [`TextError::TooManySegments`] beyond `opts.max_segments` or 255
/// segments; [`TextError::PayloadTooLong`] when a
/// [`Concat::MessagePayload`] text exceeds the TLV.
pub fn encode(text: &str, opts: &TextOptions, reference: u16) -> Result<EncodedMessage, TextError> {
    let choice = crate::choose(text, opts);
    let analysis = crate::analyze_from(choice);
    let segments = analysis.segments;
    let limit = opts
        .max_segments
        .map_or(MAX_NUMBERED, |m| u32::from(m).min(MAX_NUMBERED));
    if segments > limit {
        return Err(TextError::TooManySegments {
            segments,
            max: limit,
        });
    }
    if opts.concat == Concat::MessagePayload && analysis.units > analysis.per_segment {
        let udh = crate::udh_octets(3 * analysis.shift.ie_count()) as usize;
        return Err(TextError::PayloadTooLong {
            octets: udh + choice.units * analysis.encoding.octets_per_unit() as usize,
            max: crate::MESSAGE_PAYLOAD_OCTETS as usize,
        });
    }

    // Parts cut exactly as analyze() counts them.
    let tables = Tables::for_shift(analysis.shift);
    let starts = crate::split::part_starts(text, &analysis);
    let total = starts.len();
    debug_assert_eq!(total as u32, segments);
    let multipart = total > 1;
    let per_unit = analysis.encoding.octets_per_unit() as usize;
    let mut out = Vec::with_capacity(total);
    for (i, (&a, &b)) in starts
        .iter()
        .zip(starts.iter().skip(1).chain([&text.len()]))
        .enumerate()
    {
        let seq = (i + 1) as u8;
        let part = &text[a..b];
        let mut payload = Vec::with_capacity(16 + per_unit * part.len());
        let concat_ie = (multipart && matches!(opts.concat, Concat::Udh8 | Concat::Udh16))
            .then_some((opts.concat, reference, total as u8, seq));
        let udh_len = push_udh(&mut payload, concat_ie, analysis.shift);
        for c in part.chars() {
            push_char(&mut payload, c, analysis.encoding, tables);
        }
        let sar = (multipart && opts.concat == Concat::Sar).then_some(SarInfo {
            msg_ref_num: reference,
            total_segments: total as u8,
            segment_seqnum: seq,
        });
        out.push(Segment {
            payload,
            udh_len,
            sar,
        });
    }
    Ok(EncodedMessage {
        analysis,
        encoding: analysis.encoding,
        data_coding: analysis.encoding.data_coding(),
        udhi: out.iter().any(|s| s.udh_len > 0),
        concat: opts.concat,
        segments: out,
    })
}

/// Encodes `text` as unpacked GSM 7-bit septets (one per octet) with the
/// given national shift tables, whether or not they are the cheapest: the
/// inverse of [`decode_gsm7`](crate::decode_gsm7), for callers that must
/// produce a given table (a handset simulator, tests).
///
/// # Errors
///
/// [`TextError::Unencodable`] for a character neither table holds.
pub fn encode_gsm7(text: &str, shift: NationalShift) -> Result<Vec<u8>, TextError> {
    let tables = Tables::for_shift(shift);
    let mut out = Vec::with_capacity(text.len());
    for (offset, c) in text.char_indices() {
        if tables.cost(c) == 0 {
            return Err(TextError::Unencodable {
                character: c,
                offset,
            });
        }
        push_char(&mut out, c, Encoding::Gsm7, tables);
    }
    Ok(out)
}

/// Fill bits that align GSM 7-bit packed text after a UDH of `udh_len`
/// octets (UDHL included) to a septet boundary: 0..=6.
pub const fn fill_bits(udh_len: usize) -> u8 {
    ((7 - (udh_len * 8) % 7) % 7) as u8
}

/// Packs septets (one per octet, the low 7 bits used) into GSM 7-bit
/// packed form after `fill_bits` zero bits (see [`fill_bits`]).
///
/// Follows TS 23.038 §6.1.2.3.1: when 7 bits would be left over in the last
/// octet a `<CR>` septet is added so that the receiver does not read an
/// `@`, and when the text itself ends with `<CR>` exactly on an octet
/// boundary another `<CR>` is added (read back as `<CR><CR>`, which the
/// standard defines to mean the same).
///
/// # Errors
///
/// [`TextError::InvalidFillBits`] for more than 6 fill bits.
pub fn pack_septets(septets: &[u8], fill_bits: u8) -> Result<Vec<u8>, TextError> {
    if fill_bits > 6 {
        return Err(TextError::InvalidFillBits { fill_bits });
    }
    let fill = fill_bits as usize;
    let mut bits = fill + 7 * septets.len();
    let pad = matches!((bits % 8, septets.last()), (1, _) | (0, Some(&0x0D)));
    if pad {
        bits += 7;
    }
    let mut out = vec![0u8; bits.div_ceil(8)];
    let mut pos = fill;
    for &s in septets.iter().chain(pad.then_some(&0x0Du8)) {
        let v = u16::from(s & 0x7F) << (pos % 8);
        let i = pos / 8;
        out[i] |= v as u8;
        if let Some(next) = out.get_mut(i + 1) {
            *next |= (v >> 8) as u8;
        }
        pos += 7;
    }
    Ok(out)
}

/// Unpacks GSM 7-bit packed octets (after `fill_bits` fill bits) into one
/// septet per octet; the inverse of [`pack_septets`]. A `<CR>` that ends
/// exactly on the last octet boundary is taken as padding and dropped.
///
/// # Errors
///
/// [`TextError::InvalidFillBits`] for more than 6 fill bits.
pub fn unpack_septets(octets: &[u8], fill_bits: u8) -> Result<Vec<u8>, TextError> {
    if fill_bits > 6 {
        return Err(TextError::InvalidFillBits { fill_bits });
    }
    let avail = (octets.len() * 8).saturating_sub(fill_bits as usize);
    let n = avail / 7;
    let mut out = Vec::with_capacity(n);
    let mut pos = fill_bits as usize;
    for _ in 0..n {
        let i = pos / 8;
        let lo = u16::from(octets[i]);
        let hi = u16::from(octets.get(i + 1).copied().unwrap_or(0));
        out.push((((hi << 8) | lo) >> (pos % 8)) as u8 & 0x7F);
        pos += 7;
    }
    if avail.is_multiple_of(7) && out.last() == Some(&0x0D) {
        out.pop();
    }
    Ok(out)
}

/// Converts an unpacked GSM 7-bit payload (as in [`Segment::payload`]:
/// optional UDH, then one septet per octet) to the packed form: the UDH
/// unchanged, fill bits, then the packed septets.
///
/// # Errors
///
/// [`TextError::InvalidUdh`] when `udhi` is set and the UDH length runs past
/// the payload.
pub fn pack_payload(payload: &[u8], udhi: bool) -> Result<Vec<u8>, TextError> {
    let udh_len = if udhi {
        let len = 1 + *payload.first().ok_or(TextError::InvalidUdh {
            reason: "payload is empty",
        })? as usize;
        if len > payload.len() {
            return Err(TextError::InvalidUdh {
                reason: "UDH length exceeds the payload",
            });
        }
        len
    } else {
        0
    };
    let mut out = payload[..udh_len].to_vec();
    out.extend(pack_septets(&payload[udh_len..], fill_bits(udh_len))?);
    Ok(out)
}
