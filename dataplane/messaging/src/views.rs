//! Messages as clients see them: the answer to a send, a stored message,
//! and the events an app is told about. The status stays a
//! [`MessageStatus`] here; it becomes a word (`"accepted"`, …) only when a
//! transport serialises it.

use serde::{Deserialize, Serialize};
use smsgw_core::messages::{
    MessageRecord, MessageStatus, ReceiptState, SegmentRecord, SubmitStatus,
};

/// One segment as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SegmentView {
    /// 1-based segment number.
    pub seq: u16,
    /// SMSC message id (normalised), once accepted.
    pub smsc_message_id: Option<String>,
    /// `pending`, `accepted`, `rejected` or `unknown`.
    pub submit_status: String,
    /// Receipt state (`DELIVRD`, `UNDELIV`, …), once received.
    pub receipt_state: Option<String>,
    /// command_status of a rejection, or the receipt's error code.
    pub error_code: Option<u32>,
    /// Why the outcome is unknown or rejected.
    pub reason: Option<String>,
    /// Submit time, Unix ms.
    pub submitted_at_ms: Option<u64>,
    /// Receipt time, Unix ms.
    pub receipt_at_ms: Option<u64>,
    /// Submitted more than once (its first copy's connection closed
    /// before the SMSC answered): the recipient may get it twice.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resubmitted: bool,
}

/// A message as clients see it (SmsInfo, GET /api/v1/sms/{id}).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageView {
    /// Gateway message id.
    pub message_id: String,
    /// Transaction id.
    pub transaction_id: String,
    /// Campaign id.
    pub task_id: Option<String>,
    /// `accepted`, `pending`, `delivered`, `failed`, `rejected`, `unknown`.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub status: MessageStatus,
    /// Requested link or pool.
    pub esme: String,
    /// Link that carried it.
    pub link: Option<String>,
    /// Source.
    pub source: String,
    /// Destination.
    pub destination: String,
    /// `GSM7`, `LATIN1` or `UCS2`.
    pub encoding: String,
    /// Segments.
    pub segments: Vec<SegmentView>,
    /// Accepted at, Unix ms.
    pub created_at_ms: u64,
    /// Last change, Unix ms.
    pub updated_at_ms: u64,
    /// The send's `sent_at` (the client's own creation time, as it gave
    /// it), Unix ms; null when the send had none.
    #[serde(default)]
    pub sent_at_ms: Option<u64>,
    /// Some segment went to the SMSC more than once (resubmitted after
    /// its connection closed before an answer, per the link's `resubmit`
    /// policy): the recipient may get it twice.
    #[serde(default)]
    pub possible_duplicate: bool,
    /// The send's `validity_period` (seconds from submission); null
    /// without one.
    #[serde(default)]
    pub validity_period: Option<u32>,
    /// The send's `schedule_delivery_time`, Unix ms; null without one.
    #[serde(default)]
    pub schedule_delivery_time_ms: Option<u64>,
    /// With a schedule: the SMSC keeps it (the link's `scheduleAtSmsc`;
    /// submitted at once) rather than the gateway (held, `accepted`,
    /// until due).
    #[serde(default)]
    pub schedule_at_smsc: bool,
    /// The send's `priority`, 0 to 3.
    #[serde(default)]
    pub priority: u8,
    /// A flash (class 0) message.
    #[serde(default)]
    pub flash: bool,
}

/// The answer to a send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SendResponse {
    /// Accepted (and, with wait_for_submit, submitted).
    pub success: bool,
    /// The requested target.
    pub esme: String,
    /// Gateway message id.
    pub message_id: String,
    /// Transaction id (given or generated).
    pub transaction_id: String,
    /// Segments.
    pub segments: u32,
    /// Status now.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub status: MessageStatus,
    /// Link that carried it, when submitted.
    pub link: Option<String>,
    /// Per-segment outcomes (with wait_for_submit).
    pub segment_info: Vec<SegmentView>,
    /// True when this answers a repeated transaction id.
    pub duplicate: bool,
}

/// Something an app is told about (gRPC WatchEvents, webhooks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AppEvent {
    /// A message changed status.
    Status {
        /// App that owns the message.
        app_id: String,
        /// Message id.
        message_id: String,
        /// Transaction id.
        transaction_id: String,
        /// New status.
        #[cfg_attr(feature = "openapi", schema(value_type = String))]
        status: MessageStatus,
        /// When, Unix ms.
        at_ms: u64,
        /// Some segment went to the SMSC more than once: the recipient
        /// may get it twice.
        #[serde(default)]
        possible_duplicate: bool,
    },
    /// A mobile-originated message to one of the app's addresses.
    MobileOriginated {
        /// App that owns the destination address.
        app_id: String,
        /// Link it arrived on.
        link: String,
        /// Sender.
        source: String,
        /// Recipient.
        destination: String,
        /// Text; empty when `text_error` is set.
        message: String,
        /// When, Unix ms.
        at_ms: u64,
        /// Why the text could not be decoded (e.g. a national language the
        /// gateway has no tables for); absent when it was.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text_error: Option<String>,
        /// With `text_error`: the parts' user data joined (headers
        /// removed), base64.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        undecoded_payload: Option<String>,
        /// SMPP data_coding of the message.
        #[serde(default)]
        data_coding: u8,
        /// True when parts of a concatenated message never arrived and the
        /// gateway stopped waiting: `message` (or `undecoded_payload`)
        /// holds the parts that did; absent otherwise.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        incomplete: bool,
    },
}

impl AppEvent {
    /// The app the event belongs to.
    pub fn app_id(&self) -> &str {
        match self {
            AppEvent::Status { app_id, .. } | AppEvent::MobileOriginated { app_id, .. } => app_id,
        }
    }
}

/// Status name as the APIs spell it (the same word its JSON form has).
pub fn status_name(s: MessageStatus) -> &'static str {
    match s {
        MessageStatus::Accepted => "accepted",
        MessageStatus::Pending => "pending",
        MessageStatus::Delivered => "delivered",
        MessageStatus::Failed => "failed",
        MessageStatus::Rejected => "rejected",
        MessageStatus::Unknown => "unknown",
    }
}

/// Receipt state as SMSCs spell it.
pub fn receipt_name(s: ReceiptState) -> &'static str {
    match s {
        ReceiptState::Delivered => "DELIVRD",
        ReceiptState::Undeliverable => "UNDELIV",
        ReceiptState::Expired => "EXPIRED",
        ReceiptState::Rejected => "REJECTD",
        ReceiptState::Deleted => "DELETED",
        ReceiptState::Accepted => "ACCEPTD",
        ReceiptState::Enroute => "ENROUTE",
        ReceiptState::Unknown => "UNKNOWN",
    }
}

/// Why a segment is not accepted by the SMSC (refused, or outcome unknown).
pub(crate) fn submit_reason(s: &SubmitStatus) -> Option<String> {
    match s {
        SubmitStatus::Rejected { command_status } => Some(format!(
            "SMSC refused with command_status 0x{command_status:08X}"
        )),
        SubmitStatus::Unknown { reason } => Some(reason.clone()),
        SubmitStatus::Pending | SubmitStatus::Accepted => None,
    }
}

/// The client view of one stored segment.
pub fn segment_view(s: &SegmentRecord) -> SegmentView {
    let (submit_status, code) = match &s.submit {
        SubmitStatus::Pending => ("pending", None),
        SubmitStatus::Accepted => ("accepted", None),
        SubmitStatus::Rejected { command_status } => ("rejected", Some(*command_status)),
        SubmitStatus::Unknown { .. } => ("unknown", None),
    };
    let reason = submit_reason(&s.submit);
    SegmentView {
        seq: s.seq + 1,
        smsc_message_id: s.smsc_message_id.clone(),
        submit_status: submit_status.into(),
        receipt_state: s.receipt.map(|r| receipt_name(r).into()),
        error_code: s.error_code.or(code),
        reason,
        submitted_at_ms: s.submitted_at_ms,
        receipt_at_ms: s.receipt_at_ms,
        resubmitted: s.resubmitted,
    }
}

/// The client view of a stored message.
pub fn message_view(r: &MessageRecord) -> MessageView {
    MessageView {
        message_id: r.message_id.clone(),
        transaction_id: r.transaction_id.clone(),
        task_id: r.task_id.clone(),
        status: r.status,
        esme: r.target.name().to_owned(),
        link: r.link.clone(),
        source: r.source.clone(),
        destination: r.destination.clone(),
        encoding: r.encoding.clone(),
        segments: r.segments.iter().map(segment_view).collect(),
        created_at_ms: r.created_at_ms,
        updated_at_ms: r.updated_at_ms,
        sent_at_ms: r.sent_at_ms,
        possible_duplicate: r.possible_duplicate(),
        validity_period: r.options.validity_period_s,
        schedule_delivery_time_ms: r.options.schedule_delivery_ms,
        schedule_at_smsc: r.options.schedule_delivery_ms.is_some() && r.options.schedule_at_smsc,
        priority: r.options.priority,
        flash: r.options.flash,
    }
}

/// The answer to a send of `rec` to `esme` that was accepted: no link or
/// segment outcomes yet, not a repeat.
pub(crate) fn accepted_response(rec: &MessageRecord, esme: String) -> SendResponse {
    SendResponse {
        success: true,
        esme,
        message_id: rec.message_id.clone(),
        transaction_id: rec.transaction_id.clone(),
        segments: rec.segments.len() as u32,
        status: rec.status,
        link: None,
        segment_info: Vec::new(),
        duplicate: false,
    }
}

/// Who looks a message up.
#[derive(Debug, Clone, Copy)]
pub enum Viewer<'a> {
    /// A user of this app: sees its app's messages only.
    App(&'a str),
    /// An administrator: sees any message, by id only.
    Admin,
}

impl crate::Messaging {
    /// A message the viewer may see, by message id or (for an app) by its
    /// transaction id.
    pub async fn find(
        &self,
        viewer: Viewer<'_>,
        message_id: Option<&str>,
        transaction_id: Option<&str>,
    ) -> Result<MessageView, crate::MessagingError> {
        use crate::MessagingError;
        let store = &self.store;
        let rec = match (
            message_id.filter(|s| !s.is_empty()),
            transaction_id.filter(|s| !s.is_empty()),
            viewer,
        ) {
            (Some(id), _, _) => store.get(id).await,
            (None, Some(tx), Viewer::App(app_id)) => store.by_transaction(app_id, tx).await,
            (None, Some(_), Viewer::Admin) => {
                return Err(MessagingError::InvalidField {
                    field: "transaction_id",
                    reason: "needs a user's token".into(),
                });
            }
            (None, None, _) => {
                return Err(MessagingError::InvalidField {
                    field: "message_id",
                    reason: "give message_id or transaction_id".into(),
                });
            }
        }
        .map_err(|e| MessagingError::Internal(e.to_string()))?;
        match (rec, viewer) {
            (Some(r), Viewer::App(app_id)) if r.app_id == app_id => Ok(message_view(&r)),
            (Some(r), Viewer::Admin) => Ok(message_view(&r)),
            _ => Err(MessagingError::NotFound("no such message".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_serialise_as_the_words_the_apis_always_used() {
        for s in [
            MessageStatus::Accepted,
            MessageStatus::Pending,
            MessageStatus::Delivered,
            MessageStatus::Failed,
            MessageStatus::Rejected,
            MessageStatus::Unknown,
        ] {
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::Value::String(status_name(s).into())
            );
        }
    }
}
