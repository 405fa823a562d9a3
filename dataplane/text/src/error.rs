//! The error type of encoding and decoding.

use std::fmt;

/// Why a text could not be encoded or a payload could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TextError {
    /// The message needs more segments than the link allows
    /// ([`TextOptions::max_segments`](crate::TextOptions::max_segments)) or
    /// than the concatenation method can number (255).
    TooManySegments {
        /// Segments the message needs.
        segments: u32,
        /// The most allowed.
        max: u32,
    },
    /// The message does not fit one `message_payload` TLV (65 535 octets).
    PayloadTooLong {
        /// Octets the payload would take.
        octets: usize,
        /// The most allowed.
        max: usize,
    },
    /// An unpacked GSM 7-bit payload holds an octet above 0x7F.
    InvalidSeptet {
        /// Offset of the octet in the decoded input.
        offset: usize,
        /// The octet.
        value: u8,
    },
    /// A GSM 7-bit payload ends with an escape (0x1B) that has no
    /// character after it.
    DanglingEscape {
        /// Offset of the escape in the decoded input.
        offset: usize,
    },
    /// A UCS-2 payload has an odd number of octets.
    OddUcs2Length {
        /// The payload length in octets.
        len: usize,
    },
    /// A UCS-2 payload holds a high surrogate without a low one after it,
    /// or a low surrogate without a high one before it.
    UnpairedSurrogate {
        /// Offset in octets of the code unit.
        offset: usize,
        /// The code unit.
        unit: u16,
    },
    /// The user data header is malformed: its length runs past the payload,
    /// an information element is truncated, or a known element has the wrong
    /// length.
    InvalidUdh {
        /// What is wrong.
        reason: &'static str,
    },
    /// The UDH names a national language table this crate does not have:
    /// TS 23.038 identifiers 4–13 (Bengali to Urdu) or a reserved one. The
    /// text cannot be read without it, so nothing is guessed.
    UnsupportedLanguage {
        /// The national language identifier.
        id: u8,
    },
    /// A character is in neither GSM 7-bit table asked for
    /// ([`encode_gsm7`](crate::encode_gsm7)).
    Unencodable {
        /// The character.
        character: char,
        /// Its byte offset in the text.
        offset: usize,
    },
    /// A 7-bit packing was asked for with more than 6 fill bits.
    InvalidFillBits {
        /// The fill bit count given.
        fill_bits: u8,
    },
    /// The SMPP data_coding value names an alphabet this crate cannot decode.
    UnsupportedDataCoding {
        /// The data_coding value.
        data_coding: u8,
    },
}

impl fmt::Display for TextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TextError::TooManySegments { segments, max } => {
                write!(
                    f,
                    "message needs {segments} segments, at most {max} allowed"
                )
            }
            TextError::PayloadTooLong { octets, max } => {
                write!(f, "payload of {octets} octets exceeds the maximum of {max}")
            }
            TextError::InvalidSeptet { offset, value } => {
                write!(
                    f,
                    "invalid GSM 7-bit septet {value:#04x} at offset {offset}"
                )
            }
            TextError::DanglingEscape { offset } => {
                write!(
                    f,
                    "GSM 7-bit escape at offset {offset} has no character after it"
                )
            }
            TextError::OddUcs2Length { len } => {
                write!(f, "UCS-2 payload has an odd length of {len} octets")
            }
            TextError::UnpairedSurrogate { offset, unit } => {
                write!(
                    f,
                    "unpaired UTF-16 surrogate {unit:#06x} at offset {offset}"
                )
            }
            TextError::InvalidUdh { reason } => write!(f, "invalid user data header: {reason}"),
            TextError::UnsupportedLanguage { id } => match crate::Language::name_of_id(*id) {
                Some(name) => write!(
                    f,
                    "national language {id} ({name}) shift tables are not supported"
                ),
                None => write!(f, "reserved national language identifier {id}"),
            },
            TextError::Unencodable { character, offset } => write!(
                f,
                "{character:?} at byte {offset} is in neither GSM 7-bit table asked for"
            ),
            TextError::InvalidFillBits { fill_bits } => {
                write!(f, "{fill_bits} fill bits requested, at most 6 possible")
            }
            TextError::UnsupportedDataCoding { data_coding } => {
                write!(f, "unsupported data_coding {data_coding:#04x}")
            }
        }
    }
}

impl std::error::Error for TextError {}
