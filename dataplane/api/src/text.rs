//! CheckTextLen: encoding analysis of a text, shared by REST and gRPC.

use crate::ApiError;
use serde::{Deserialize, Serialize};
use smsgw_crds::Snapshot;
use smsgw_text::{Analysis, TextOptions, analyze};

/// Longest text, in characters, the API analyses or sends. A 255-part
/// message holds at most 39,015 GSM septets; this leaves room for
/// `message_payload` links while refusing absurd inputs early.
pub const MAX_MESSAGE_CHARS: usize = 65_535;

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
    /// Segments needed.
    pub segments: u32,
    /// Units per segment at this segment count.
    pub per_segment: u32,
}

impl From<Analysis> for CheckTextLenResponse {
    fn from(a: Analysis) -> Self {
        Self {
            encoding: a.encoding.as_str().to_owned(),
            characters: a.characters,
            units: a.units,
            segments: a.segments,
            per_segment: a.per_segment,
        }
    }
}

/// Checks that a message is present, not empty and not absurdly long.
pub fn validate_message(message: Option<&str>) -> Result<&str, ApiError> {
    let m = message.ok_or(ApiError::InvalidField {
        field: "message",
        reason: "is required".into(),
    })?;
    if m.is_empty() {
        return Err(ApiError::InvalidField {
            field: "message",
            reason: "must not be empty".into(),
        });
    }
    // Cheap upper bound first: bytes >= characters.
    if m.len() > MAX_MESSAGE_CHARS && m.chars().count() > MAX_MESSAGE_CHARS {
        return Err(ApiError::InvalidField {
            field: "message",
            reason: format!("longer than {MAX_MESSAGE_CHARS} characters"),
        });
    }
    Ok(m)
}

/// Text options for an optional target name: the target's encoding rules,
/// or the gateway defaults when no target is named.
pub fn options_for(config: &Snapshot, esme: Option<&str>) -> Result<TextOptions, ApiError> {
    match esme.filter(|e| !e.is_empty()) {
        None => Ok(TextOptions::default()),
        Some(name) => config
            .text_options(name)
            .ok_or_else(|| ApiError::UnknownTarget(name.to_owned())),
    }
}

/// Analyses `message` under the rules of `esme` (or the defaults).
pub fn check_text_len(
    config: &Snapshot,
    message: Option<&str>,
    esme: Option<&str>,
) -> Result<CheckTextLenResponse, ApiError> {
    let message = validate_message(message)?;
    let opts = options_for(config, esme)?;
    Ok(analyze(message, &opts).into())
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

    #[test]
    fn an_unknown_esme_is_refused() {
        let e = check_text_len(&Snapshot::default(), Some("hi"), Some("nowhere")).unwrap_err();
        assert_eq!(e, ApiError::UnknownTarget("nowhere".into()));
    }
}
