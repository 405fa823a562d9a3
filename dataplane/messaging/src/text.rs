//! A text checked and encoded by the rules of its target, and the SMPP form
//! of a stored message.

use crate::MessagingError;
use smsgw_core::links::{Address, OutboundMessage, OutboundSegment, SarParts};
use smsgw_core::messages::MessageRecord;
use smsgw_crds::Snapshot;
use smsgw_text::TextOptions;

/// Longest text, in characters, the API analyses or sends. A 255-part
/// message holds at most 39,015 GSM septets; this leaves room for
/// `message_payload` links while refusing absurd inputs early.
pub const MAX_MESSAGE_CHARS: usize = 65_535;

/// Checks that a message is present, not empty and not absurdly long.
pub fn validate_message(message: Option<&str>) -> Result<&str, MessagingError> {
    let m = message.ok_or(MessagingError::InvalidField {
        field: "message",
        reason: "is required".into(),
    })?;
    if m.is_empty() {
        return Err(MessagingError::InvalidField {
            field: "message",
            reason: "must not be empty".into(),
        });
    }
    // Cheap upper bound first: bytes >= characters.
    if m.len() > MAX_MESSAGE_CHARS && m.chars().count() > MAX_MESSAGE_CHARS {
        return Err(MessagingError::InvalidField {
            field: "message",
            reason: format!("longer than {MAX_MESSAGE_CHARS} characters"),
        });
    }
    Ok(m)
}

/// Text options for an optional target name: the target's encoding rules,
/// or the gateway defaults when no target is named.
pub fn options_for(config: &Snapshot, esme: Option<&str>) -> Result<TextOptions, MessagingError> {
    match esme.filter(|e| !e.is_empty()) {
        None => Ok(TextOptions::default()),
        Some(name) => config
            .text_options(name)
            .ok_or_else(|| MessagingError::UnknownTarget(name.to_owned())),
    }
}

/// Encodes `text` by the rules of target `esme`, with its own error codes.
/// A `flash` message is never Latin-1 (which has no class-0 form: such a
/// text goes as UCS-2) and carries the class-0 data_coding of its
/// alphabet.
pub(crate) fn encode_for(
    config: &Snapshot,
    esme: &str,
    text: &str,
    reference: u16,
    flash: bool,
) -> Result<smsgw_text::EncodedMessage, MessagingError> {
    let mut opts = options_for(config, Some(esme))?;
    if flash {
        opts.allow_latin1 = false;
    }
    let mut encoded = smsgw_text::encode(text, &opts, reference);
    if flash && let Ok(e) = &mut encoded {
        e.data_coding = e.encoding.flash_data_coding().unwrap_or(e.data_coding);
    }
    encoded.map_err(|e| match e {
        smsgw_text::TextError::TooManySegments { segments, max } => MessagingError::refused(
            "too_many_segments",
            format!("message: needs {segments} segments, {esme:?} allows at most {max}"),
        ),
        other => MessagingError::refused("invalid_message", format!("message: {other}")),
    })
}

/// The SMPP form of an encoded message for a stored record's addresses.
pub(crate) fn outbound_from(
    encoded: &smsgw_text::EncodedMessage,
    rec: &MessageRecord,
) -> OutboundMessage {
    let payload = matches!(encoded.concat, smsgw_text::Concat::MessagePayload);
    let [ston, snpi, dton, dnpi] = rec.ton_npi;
    OutboundMessage {
        source: Address::new(rec.source.clone(), ston, snpi),
        destination: Address::new(rec.destination.clone(), dton, dnpi),
        data_coding: encoded.data_coding,
        udhi: encoded.udhi,
        registered_delivery: true,
        priority: rec.options.priority,
        validity_period_s: rec.options.validity_period_s,
        // Only a schedule the SMSC keeps goes in the submit_sm; one the
        // gateway held is due now.
        schedule_delivery_ms: rec
            .options
            .schedule_delivery_ms
            .filter(|_| rec.options.schedule_at_smsc),
        segments: encoded
            .segments
            .iter()
            .map(|s| OutboundSegment {
                payload: s.payload.clone(),
                sar: s.sar.map(|s| SarParts {
                    msg_ref_num: s.msg_ref_num,
                    total_segments: s.total_segments,
                    segment_seqnum: s.segment_seqnum,
                }),
                message_payload: payload,
            })
            .collect(),
        tag: Some(rec.message_id.as_str().into()),
    }
}
