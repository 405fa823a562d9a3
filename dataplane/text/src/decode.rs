//! Decoders for every encoding and the user data header parser.
//!
//! They take arbitrary octets (mobile-originated traffic, SMSC quirks) and
//! return errors rather than panic.

use crate::encode::{IEI_CONCAT_8, IEI_CONCAT_16, IEI_LOCKING_SHIFT, IEI_SINGLE_SHIFT};
use crate::tables::{ESC, Tables};
use crate::{Encoding, Language, NationalShift, TextError, unpack_septets};

/// Decodes unpacked GSM 7-bit text (one septet per octet, the SMPP form
/// for data_coding 0) with the given national shift tables.
///
/// Per TS 23.038 §6.2.1.1, an escape followed by a septet the single shift
/// table leaves undefined reads as that septet of the locking table, and
/// two escapes in a row read as a space. To reassemble a concatenated
/// message, join the segment bodies first and decode once, so that an
/// escape pair split by another sender still decodes.
///
/// # Errors
///
/// [`TextError::InvalidSeptet`] for an octet above 0x7F,
/// [`TextError::DanglingEscape`] when the text ends with an escape.
pub fn decode_gsm7(septets: &[u8], shift: NationalShift) -> Result<String, TextError> {
    let tables = Tables::for_shift(shift);
    let mut out = String::with_capacity(septets.len());
    let mut i = 0;
    while i < septets.len() {
        let s = septets[i];
        if s >= 0x80 {
            return Err(TextError::InvalidSeptet {
                offset: i,
                value: s,
            });
        }
        if s == ESC {
            let Some(&next) = septets.get(i + 1) else {
                return Err(TextError::DanglingEscape { offset: i });
            };
            if next >= 0x80 {
                return Err(TextError::InvalidSeptet {
                    offset: i + 1,
                    value: next,
                });
            }
            let c = if next == ESC {
                ' '
            } else {
                tables
                    .single
                    .char(next)
                    .or_else(|| tables.locking.char(next))
                    .unwrap_or(' ')
            };
            out.push(c);
            i += 2;
        } else {
            out.push(tables.locking.char(s).unwrap_or(' '));
            i += 1;
        }
    }
    Ok(out)
}

/// Decodes GSM 7-bit packed text that starts after `fill_bits` fill bits
/// (see [`fill_bits`](crate::fill_bits)); a trailing `<CR>` padding septet
/// is dropped (see [`unpack_septets`]).
///
/// # Errors
///
/// [`TextError::InvalidFillBits`] for more than 6 fill bits,
/// [`TextError::DanglingEscape`] when the text ends with an escape.
pub fn decode_gsm7_packed(
    octets: &[u8],
    fill_bits: u8,
    shift: NationalShift,
) -> Result<String, TextError> {
    decode_gsm7(&unpack_septets(octets, fill_bits)?, shift)
}

/// Decodes ISO 8859-1 (SMPP data_coding 3); every octet is a character.
pub fn decode_latin1(octets: &[u8]) -> String {
    octets.iter().map(|&b| char::from(b)).collect()
}

/// Decodes UCS-2 big-endian, accepting UTF-16 surrogate pairs (SMPP
/// data_coding 8). Join the bodies of a concatenated message before
/// decoding.
///
/// # Errors
///
/// [`TextError::OddUcs2Length`] for an odd octet count,
/// [`TextError::UnpairedSurrogate`] for a lone surrogate.
pub fn decode_ucs2(octets: &[u8]) -> Result<String, TextError> {
    if !octets.len().is_multiple_of(2) {
        return Err(TextError::OddUcs2Length { len: octets.len() });
    }
    let unit = |k: usize| u16::from_be_bytes([octets[2 * k], octets[2 * k + 1]]);
    let n = octets.len() / 2;
    let mut out = String::with_capacity(n);
    let mut i = 0;
    while i < n {
        let u = unit(i);
        let c = match u {
            0xD800..=0xDBFF => match (i + 1 < n).then(|| unit(i + 1)) {
                Some(lo @ 0xDC00..=0xDFFF) => {
                    i += 1;
                    0x10000 + ((u32::from(u) - 0xD800) << 10) + (u32::from(lo) - 0xDC00)
                }
                _ => {
                    return Err(TextError::UnpairedSurrogate {
                        offset: 2 * i,
                        unit: u,
                    });
                }
            },
            0xDC00..=0xDFFF => {
                return Err(TextError::UnpairedSurrogate {
                    offset: 2 * i,
                    unit: u,
                });
            }
            _ => u32::from(u),
        };
        out.push(char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER));
        i += 1;
    }
    Ok(out)
}

/// Decodes a message body (no UDH) in `encoding`; GSM 7-bit is taken
/// unpacked.
///
/// # Errors
///
/// Those of [`decode_gsm7`] and [`decode_ucs2`].
pub fn decode(encoding: Encoding, shift: NationalShift, body: &[u8]) -> Result<String, TextError> {
    match encoding {
        Encoding::Gsm7 => decode_gsm7(body, shift),
        Encoding::Latin1 => Ok(decode_latin1(body)),
        Encoding::Ucs2 => decode_ucs2(body),
    }
}

/// A concatenation element of a UDH (IEI 0x00 or 0x08).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConcatInfo {
    /// The reference shared by every segment of the message.
    pub reference: u16,
    /// Whether the reference is 16-bit (IEI 0x08) rather than 8-bit.
    pub wide_reference: bool,
    /// Segments in the message (1..=255).
    pub total: u8,
    /// This segment's number (1..=total).
    pub seq: u8,
}

/// The elements of a user data header this crate understands; others are
/// skipped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Udh {
    /// Octets of the UDH including the UDHL octet: the body starts there.
    pub len: usize,
    /// Concatenation, if present and valid. Per TS 23.040 §9.2.3.24.1 an
    /// element with a zero total, a zero sequence number or a sequence
    /// number above the total is ignored.
    pub concat: Option<ConcatInfo>,
    /// National language single shift identifier (IEI 0x24), raw.
    pub single_shift: Option<u8>,
    /// National language locking shift identifier (IEI 0x25), raw.
    pub locking_shift: Option<u8>,
}

impl Udh {
    /// The national shift tables the UDH selects.
    ///
    /// # Errors
    ///
    /// [`TextError::UnsupportedLanguage`] for an identifier this crate has
    /// no tables for (identifier 0 means the default table).
    pub fn shift(&self) -> Result<NationalShift, TextError> {
        let lang = |id: Option<u8>| match id {
            None | Some(0) => Ok(None),
            Some(id) => Language::from_id(id)
                .map(Some)
                .ok_or(TextError::UnsupportedLanguage { id }),
        };
        Ok(NationalShift {
            locking: lang(self.locking_shift)?,
            single: lang(self.single_shift)?,
        })
    }
}

fn udh_err(reason: &'static str) -> TextError {
    TextError::InvalidUdh { reason }
}

/// Splits a payload that starts with a user data header (UDHI set) into the
/// parsed header and the body after it.
///
/// # Errors
///
/// [`TextError::InvalidUdh`] when the payload is empty, the UDHL runs past
/// the payload, an element runs past the UDH, or a known element has the
/// wrong length.
pub fn parse_udh(payload: &[u8]) -> Result<(Udh, &[u8]), TextError> {
    let (&udhl, rest) = payload
        .split_first()
        .ok_or_else(|| udh_err("payload is empty"))?;
    let udhl = udhl as usize;
    if udhl > rest.len() {
        return Err(udh_err("UDH length exceeds the payload"));
    }
    let (mut ies, body) = rest.split_at(udhl);
    let mut udh = Udh {
        len: 1 + udhl,
        ..Udh::default()
    };
    while let [iei, len, tail @ ..] = ies {
        let len = *len as usize;
        if len > tail.len() {
            return Err(udh_err("information element exceeds the UDH"));
        }
        let (data, next) = tail.split_at(len);
        match *iei {
            IEI_CONCAT_8 | IEI_CONCAT_16 => {
                let (reference, total, seq, wide) = match (*iei, data) {
                    (IEI_CONCAT_8, &[r, t, s]) => (u16::from(r), t, s, false),
                    (IEI_CONCAT_16, &[hi, lo, t, s]) => (u16::from_be_bytes([hi, lo]), t, s, true),
                    _ => return Err(udh_err("concatenation element has the wrong length")),
                };
                if total != 0 && seq != 0 && seq <= total {
                    udh.concat = Some(ConcatInfo {
                        reference,
                        wide_reference: wide,
                        total,
                        seq,
                    });
                }
            }
            IEI_SINGLE_SHIFT | IEI_LOCKING_SHIFT => {
                let &[id] = data else {
                    return Err(udh_err("national language element has the wrong length"));
                };
                if *iei == IEI_SINGLE_SHIFT {
                    udh.single_shift = Some(id);
                } else {
                    udh.locking_shift = Some(id);
                }
            }
            _ => {}
        }
        ies = next;
    }
    if !ies.is_empty() {
        return Err(udh_err("truncated information element"));
    }
    Ok((udh, body))
}

/// A decoded `short_message` / `message_payload`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedPayload {
    /// The header, when UDHI was set.
    pub udh: Option<Udh>,
    /// The encoding the data_coding named.
    pub encoding: Encoding,
    /// The text of this payload alone.
    pub text: String,
}

/// Decodes one SMPP payload: parses the UDH when `udhi` (esm_class 0x40)
/// is set, applies its national shift tables, and decodes the body by
/// `data_coding` (see [`Encoding::from_data_coding`]; GSM 7-bit unpacked).
///
/// For a concatenated message prefer [`parse_udh`] on each segment, then
/// [`decode`] of the joined bodies, so pairs split across segments by other
/// senders still decode.
///
/// # Errors
///
/// [`TextError::UnsupportedDataCoding`], and those of [`parse_udh`],
/// [`Udh::shift`] and [`decode`].
pub fn decode_payload(
    data_coding: u8,
    udhi: bool,
    payload: &[u8],
) -> Result<DecodedPayload, TextError> {
    let encoding = Encoding::from_data_coding(data_coding)
        .ok_or(TextError::UnsupportedDataCoding { data_coding })?;
    let (udh, body) = if udhi {
        let (udh, body) = parse_udh(payload)?;
        (Some(udh), body)
    } else {
        (None, payload)
    };
    let shift = match (&udh, encoding) {
        (Some(u), Encoding::Gsm7) => u.shift()?,
        _ => NationalShift::NONE,
    };
    Ok(DecodedPayload {
        udh,
        encoding,
        text: decode(encoding, shift, body)?,
    })
}

/// Decodes a message reassembled from parts in `encoding`, each part given
/// with its parsed UDH (`None` without one) and its body after the UDH.
///
/// The national shift tables a part's UDH selects apply to that part (GSM
/// 7-bit only). The bodies of consecutive parts that select the same tables
/// are joined before decoding, so an escape pair or a surrogate pair that
/// another sender split across parts still decodes.
///
/// # Errors
///
/// [`TextError::UnsupportedLanguage`] when a GSM 7-bit part names a
/// national language this crate has no tables for, and those of
/// [`decode`].
pub fn decode_parts<'a>(
    encoding: Encoding,
    parts: impl IntoIterator<Item = (Option<&'a Udh>, &'a [u8])>,
) -> Result<String, TextError> {
    let mut out = String::new();
    let mut run: Vec<u8> = Vec::new();
    let mut run_shift = NationalShift::NONE;
    for (udh, body) in parts {
        let shift = match (udh, encoding) {
            (Some(u), Encoding::Gsm7) => u.shift()?,
            _ => NationalShift::NONE,
        };
        if shift != run_shift && !run.is_empty() {
            out.push_str(&decode(encoding, run_shift, &run)?);
            run.clear();
        }
        run_shift = shift;
        run.extend_from_slice(body);
    }
    out.push_str(&decode(encoding, run_shift, &run)?);
    Ok(out)
}
