//! CheckTextLen: encoding analysis of a text, shared by REST and gRPC.

use crate::ApiError;
use serde::{Deserialize, Serialize};
use smsgw_crds::Snapshot;
use smsgw_text::{Concat, Split, TextOptions, count, split_on_air};

pub use smsgw_messaging::text::MAX_MESSAGE_CHARS;

/// `POST /api/v1/sms/check-text-len` body.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckTextLenRequest {
    /// The text to analyse.
    pub message: Option<String>,
    /// Optional link or pool whose encoding options apply.
    #[serde(default)]
    pub esme: Option<String>,
}

/// Encoding analysis as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckTextLenResponse {
    /// `GSM7`, `LATIN1` or `UCS2`.
    pub encoding: String,
    /// Unicode scalar values.
    pub characters: u32,
    /// Septets, octets or UTF-16 code units.
    pub units: u32,
    /// Segments needed. With `split_by_smsc` the segments the SMSC will
    /// most likely cut the text into.
    pub segments: u32,
    /// Units each segment carries at this segment count.
    pub per_segment: u32,
    /// UTF-16 code units of the text (JavaScript's and Java's `length`).
    pub utf16_units: u32,
    /// Extended grapheme clusters: the characters a reader sees (a flag, an
    /// emoji with its skin tone or a ZWJ family counts one).
    pub graphemes: u32,
    /// National language locking shift table chosen (`turkish`,
    /// `portuguese`), GSM 7-bit only; null for the default alphabet.
    pub national_locking: Option<String>,
    /// National language single shift table chosen (`turkish`, `spanish`,
    /// `portuguese`), GSM 7-bit only; null for the default extension table.
    pub national_single: Option<String>,
    /// How the target joins segments: `udh8`, `udh16`, `sar` or
    /// `message_payload`.
    pub concatenation: String,
    /// True on a `message_payload` target: the gateway sends the text in
    /// one submit_sm and the SMSC splits it; `segments`, `per_segment` and
    /// `parts` are then what an SMSC splitting with an 8-bit reference
    /// header sends.
    pub split_by_smsc: bool,
    /// The segments in order, with what each holds.
    pub parts: Vec<TextPart>,
}

/// What one segment of a text holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TextPart {
    /// Unicode scalar values in the segment.
    pub characters: u32,
    /// Extended grapheme clusters in the segment.
    pub graphemes: u32,
    /// Units the segment takes, at most `per_segment`.
    pub units: u32,
}

impl CheckTextLenResponse {
    /// The response for `text` cut as `split` says, on a target with
    /// concatenation `concat`.
    pub fn new(text: &str, split: &Split, concat: Concat) -> Self {
        let a = split.analysis;
        let counts = count(text);
        Self {
            encoding: a.encoding.as_str().to_owned(),
            characters: a.characters,
            units: a.units,
            segments: a.segments,
            per_segment: a.per_segment,
            utf16_units: counts.utf16_units,
            graphemes: counts.graphemes,
            national_locking: a.shift.locking.map(|l| l.as_str().to_owned()),
            national_single: a.shift.single.map(|l| l.as_str().to_owned()),
            concatenation: concat.as_str().to_owned(),
            split_by_smsc: concat == Concat::MessagePayload,
            parts: split
                .parts
                .iter()
                .map(|p| TextPart {
                    characters: p.characters,
                    graphemes: p.graphemes,
                    units: p.units,
                })
                .collect(),
        }
    }
}

/// Checks that a message is present, not empty and not absurdly long.
pub fn validate_message(message: Option<&str>) -> Result<&str, ApiError> {
    Ok(smsgw_messaging::text::validate_message(message)?)
}

/// Text options for an optional target name: the target's encoding rules,
/// or the gateway defaults when no target is named.
pub fn options_for(config: &Snapshot, esme: Option<&str>) -> Result<TextOptions, ApiError> {
    Ok(smsgw_messaging::text::options_for(config, esme)?)
}

/// Analyses `message` under the rules of `esme` (or the defaults).
pub fn check_text_len(
    config: &Snapshot,
    message: Option<&str>,
    esme: Option<&str>,
) -> Result<CheckTextLenResponse, ApiError> {
    let message = validate_message(message)?;
    let opts = options_for(config, esme)?;
    let split = split_on_air(message, &opts);
    Ok(CheckTextLenResponse::new(message, &split, opts.concat))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(m: &str) -> CheckTextLenResponse {
        check_text_len(&Snapshot::default(), Some(m), None).unwrap()
    }

    #[test]
    fn acceptance_values_of_the_foundation_issue_hold() {
        let r = check("Hello");
        assert_eq!(
            (r.encoding.as_str(), r.characters, r.segments),
            ("GSM7", 5, 1)
        );
        let r = check(&"a".repeat(161));
        assert_eq!((r.encoding.as_str(), r.segments), ("GSM7", 2));
        let r = check("€");
        assert_eq!((r.encoding.as_str(), r.units), ("GSM7", 2));
        let r = check("Привет");
        assert_eq!((r.encoding.as_str(), r.units, r.segments), ("UCS2", 6, 1));
        let r = check(&"Ж".repeat(71));
        assert_eq!((r.encoding.as_str(), r.segments), ("UCS2", 2));
        let r = check("😀");
        assert_eq!((r.encoding.as_str(), r.units), ("UCS2", 2));
    }

    #[test]
    fn missing_empty_and_huge_messages_are_refused_naming_the_field() {
        let s = Snapshot::default();
        for m in [None, Some(""), Some(&*"a".repeat(MAX_MESSAGE_CHARS + 1))] {
            let e = check_text_len(&s, m, None).unwrap_err();
            assert!(
                matches!(
                    e,
                    ApiError::InvalidField {
                        field: "message",
                        ..
                    }
                ),
                "{e:?}"
            );
        }
    }

    /// The shipped example with the link's `encoding` replaced (a YAML flow
    /// mapping) and a second link `tr` enabling Turkish tables.
    fn config(encoding: &str) -> Snapshot {
        let example = include_str!("../../../examples/standalone.yaml");
        let old = "  encoding:\n    latin1: false\n    nationalLanguages: []\n    concatenation: udh8\n    maxSegments: 10\n";
        assert!(example.contains(old), "example link layout changed");
        let yaml = example.replace(old, &format!("  encoding: {encoding}\n"));
        let tr = example
            .split("---")
            .nth(1)
            .unwrap()
            .replacen("name: local-sim", "name: tr", 1)
            .replace(old, "  encoding: {nationalLanguages: [turkish]}\n");
        smsgw_crds::compile_manifests(&format!("{yaml}---{tr}")).unwrap()
    }

    #[test]
    fn graphemes_utf16_units_and_parts_are_counted() {
        let r = check("👍🏽 ok");
        assert_eq!(
            (r.characters, r.utf16_units, r.graphemes, r.units),
            (5, 7, 4, 7)
        );
        let r = check(&"a".repeat(200));
        assert_eq!((r.segments, r.per_segment), (2, 153));
        let units: Vec<u32> = r.parts.iter().map(|p| p.units).collect();
        assert_eq!(units, [153, 47]);
        // A flag never straddles two parts.
        let r = check(&format!("{}🇹🇷{}", "Ж".repeat(66), "Ж".repeat(10)));
        let parts: Vec<(u32, u32, u32)> = r
            .parts
            .iter()
            .map(|p| (p.characters, p.graphemes, p.units))
            .collect();
        assert_eq!(parts, [(66, 66, 66), (12, 11, 14)]);
        assert_eq!((r.concatenation.as_str(), r.split_by_smsc), ("udh8", false));
    }

    #[test]
    fn the_national_tables_chosen_are_named() {
        let snap = config("{concatenation: udh8}");
        let text = "Şişli'de güzel bir gün geçirdik, ığdır çok uzak. ".repeat(4);
        let r = check_text_len(&snap, Some(&text), Some("tr")).unwrap();
        assert_eq!(r.encoding, "GSM7");
        assert_eq!(r.national_locking.as_deref(), Some("turkish"));
        assert_eq!(r.parts.len() as u32, r.segments);
        let plain = check_text_len(&snap, Some(&text), Some("local-sim")).unwrap();
        assert_eq!(plain.encoding, "UCS2");
        assert_eq!(
            (plain.national_locking, plain.national_single),
            (None, None)
        );
        // A pool of both only uses what both support.
        let pooled = check_text_len(&snap, Some(&text), Some("default")).unwrap();
        assert_eq!(pooled.encoding, "UCS2");
    }

    #[test]
    fn a_message_payload_link_says_the_smsc_splits() {
        let snap = config("{concatenation: messagePayload}");
        let text = "a".repeat(200);
        let r = check_text_len(&snap, Some(&text), Some("local-sim")).unwrap();
        assert_eq!(r.concatenation, "message_payload");
        assert!(r.split_by_smsc);
        assert_eq!((r.segments, r.per_segment, r.units), (2, 153, 200));
        assert_eq!(r.parts.len(), 2);
        let r = check_text_len(&snap, Some("hi"), Some("local-sim")).unwrap();
        assert_eq!((r.segments, r.split_by_smsc), (1, true));
    }

    #[test]
    fn sar_links_count_udh_sized_parts_unless_told_otherwise() {
        let text = "a".repeat(300);
        let snap = config("{concatenation: sar}");
        let r = check_text_len(&snap, Some(&text), Some("local-sim")).unwrap();
        assert_eq!(
            (r.concatenation.as_str(), r.segments, r.per_segment),
            ("sar", 2, 153)
        );
        let snap = config("{concatenation: sar, sarPartSize: full}");
        let r = check_text_len(&snap, Some(&text), Some("local-sim")).unwrap();
        assert_eq!((r.segments, r.per_segment), (2, 160));
    }

    #[test]
    fn an_unknown_esme_is_refused() {
        let e = check_text_len(&Snapshot::default(), Some("hi"), Some("nowhere")).unwrap_err();
        assert_eq!(e, ApiError::UnknownTarget("nowhere".into()));
    }
}
