//! Requests, outcomes, events and status: what the gateway sees.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::ids::SmscMessageId;

pub use smsgw_core::links::Address;
pub use smsgw_core::messages::ReceiptState;

/// SAR TLVs of one segment (`sar_msg_ref_num`, `sar_total_segments`,
/// `sar_segment_seqnum`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sar {
    /// Reference shared by all segments of the message.
    pub ref_num: u16,
    /// Number of segments.
    pub total: u8,
    /// 1-based index of this segment.
    pub seq: u8,
}

/// One already-encoded segment (UDH included if the message uses one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The bytes of `short_message` (or of `message_payload`).
    pub payload: Bytes,
    /// SAR TLVs to attach, if concatenation is signalled by TLV.
    pub sar: Option<Sar>,
    /// Send `payload` in the `message_payload` TLV with an empty
    /// `short_message` (for payloads over 254 bytes).
    pub use_message_payload: bool,
}

impl Segment {
    /// A plain segment carried in `short_message`.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Self {
            payload: payload.into(),
            sar: None,
            use_message_payload: false,
        }
    }
}

/// One message to send: all its segments go on the same session, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitRequest {
    /// Source address.
    pub source: Address,
    /// Destination address.
    pub destination: Address,
    /// `data_coding` of every segment.
    pub data_coding: u8,
    /// `esm_class` (set the UDHI bit 0x40 when the segments carry a UDH).
    pub esm_class: u8,
    /// `registered_delivery` (1 requests a final receipt).
    pub registered_delivery: u8,
    /// `service_type` (empty by default).
    pub service_type: String,
    /// `protocol_id`.
    pub protocol_id: u8,
    /// `priority_flag` (0 to 3); also the order in which submits waiting
    /// for a session's send window get it: higher first, in arrival order
    /// within a priority.
    pub priority: u8,
    /// `validity_period`, relative to the submission ([`crate::time::relative`]);
    /// `None`: empty (the SMSC's default).
    pub validity_period: Option<std::time::Duration>,
    /// `schedule_delivery_time`, absolute UTC ([`crate::time::absolute`]);
    /// `None`: empty (deliver at once).
    pub schedule_delivery_time: Option<std::time::SystemTime>,
    /// The segments.
    pub segments: Vec<Segment>,
    /// The caller's correlation (opaque here): a late `submit_sm_resp` of
    /// a segment comes back with it as a [`SubmitTag`]
    /// ([`LinkEvent::LateResponse`]).
    pub tag: Option<Arc<str>>,
}

/// What a late `submit_sm_resp` is correlated by: the request's
/// [`SubmitRequest::tag`] and the index of the segment it answers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubmitTag {
    /// [`SubmitRequest::tag`].
    pub tag: Arc<str>,
    /// 0-based index of the segment in its request.
    pub segment: u16,
}

impl SubmitRequest {
    /// A request with one segment per payload, receipt requested, DCS 0.
    pub fn new(source: Address, destination: Address, segments: Vec<Segment>) -> Self {
        Self {
            source,
            destination,
            data_coding: 0,
            esm_class: 0,
            registered_delivery: 1,
            service_type: String::new(),
            protocol_id: 0,
            priority: 0,
            validity_period: None,
            schedule_delivery_time: None,
            segments,
            tag: None,
        }
    }
}

/// Why a segment's fate is unknown. The segment must not be resent blindly:
/// the SMSC may have accepted it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnknownReason {
    /// No `submit_sm_resp` within the response timeout. A late response is
    /// reported as [`LinkEvent::LateResponse`] with the same session and
    /// sequence number, and the request's [`SubmitTag`].
    ResponseTimeout {
        /// Sequence number of the `submit_sm`.
        sequence_number: u32,
        /// The timeout that passed.
        timeout: Duration,
    },
    /// The connection closed after the `submit_sm` was handed to it and
    /// before its response came back.
    ConnectionLost {
        /// Sequence number of the `submit_sm`.
        sequence_number: u32,
    },
    /// The `submit_sm_resp` could not be decoded.
    MalformedResponse {
        /// Sequence number of the `submit_sm`.
        sequence_number: u32,
        /// Decoder message.
        reason: String,
    },
}

impl std::fmt::Display for UnknownReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UnknownReason::ResponseTimeout {
                sequence_number,
                timeout,
            } => write!(
                f,
                "no submit_sm_resp for sequence {sequence_number} within {timeout:?}"
            ),
            UnknownReason::ConnectionLost { sequence_number } => write!(
                f,
                "connection lost before submit_sm_resp for sequence {sequence_number}"
            ),
            UnknownReason::MalformedResponse {
                sequence_number,
                reason,
            } => write!(
                f,
                "undecodable submit_sm_resp for sequence {sequence_number}: {reason}"
            ),
        }
    }
}

/// What happened to one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SegmentOutcome {
    /// The SMSC accepted the segment.
    Accepted {
        /// The SMSC's message id, raw and normalised.
        smsc_message_id: SmscMessageId,
        /// Session index it went out on.
        session: usize,
        /// Sequence number of the accepted `submit_sm`.
        sequence_number: u32,
    },
    /// The SMSC refused the segment (`command_status` ≠ 0, including a
    /// throttling status after `throttle_retries` resends, or generic_nack).
    Rejected {
        /// The status.
        command_status: u32,
    },
    /// Sent, but its fate is unknown (see [`UnknownReason`]).
    Unknown {
        /// Session index it went out on.
        session: usize,
        /// Why.
        reason: UnknownReason,
    },
    /// Definitely not sent (window full or session lost before writing the
    /// PDU); resending is safe.
    NotSent {
        /// Why.
        reason: String,
    },
    /// Its first `submit_sm` went out, but the connection closed before any
    /// response (dropped, or closed as stalled), so no answer can come for
    /// it; under [`crate::UnknownPolicy::Resubmit`] the link submitted it
    /// again on a healthy session. The SMSC may hold both copies: the
    /// message is a possible duplicate.
    Resubmitted {
        /// Why the first copy's fate is unknown.
        first: UnknownReason,
        /// Session the first copy went out on.
        first_session: usize,
        /// Submissions after the first (at least 1).
        resubmits: u32,
        /// What became of the last submission (never `Resubmitted`).
        outcome: Box<SegmentOutcome>,
    },
}

impl SegmentOutcome {
    /// The outcome of the last submission of the segment: itself, or what
    /// a [`SegmentOutcome::Resubmitted`] segment ended as.
    pub fn last(&self) -> &SegmentOutcome {
        match self {
            SegmentOutcome::Resubmitted { outcome, .. } => outcome,
            other => other,
        }
    }

    /// True when the segment was submitted more than once (the SMSC may
    /// hold duplicates).
    pub fn is_resubmitted(&self) -> bool {
        matches!(self, SegmentOutcome::Resubmitted { .. })
    }
}

/// A delivery receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Link it arrived on.
    pub link: String,
    /// SMSC message id (normalised in `.normalized`).
    pub smsc_message_id: SmscMessageId,
    /// Reported state.
    pub state: ReceiptState,
    /// Network or SMSC error code (`network_error_code` TLV or `err:`).
    pub error_code: Option<u32>,
    /// `done date` (interpreted as UTC).
    pub done_at: Option<SystemTime>,
    /// True for an intermediate notification (esm_class 0x20).
    pub intermediate: bool,
    /// Answers the SMSC: its `deliver_sm_resp` goes out only once the
    /// consumer calls [`ReceiptAck::stored`]; if every copy of the receipt
    /// is dropped without that, the SMSC is answered with a temporary
    /// error (`ESME_RX_T_APPN`) so that it delivers the receipt again.
    pub ack: ReceiptAck,
}

/// The pending answer to one `deliver_sm` carrying a receipt (see
/// [`Receipt::ack`]) or the part that completes a mobile-originated
/// message (see [`MobileOriginated::ack`]). Clones share it: the first [`ReceiptAck::stored`]
/// answers `ESME_ROK`; when the last clone is dropped unanswered the SMSC
/// gets a temporary error and sends the receipt again. Acks never make two
/// receipts differ (`PartialEq` ignores them). [`ReceiptAck::default`] is
/// answered by nobody (a receipt made outside a session).
#[derive(Clone, Default)]
pub struct ReceiptAck(
    Option<std::sync::Arc<std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>>>,
);

impl ReceiptAck {
    /// An ack and the receiver its session awaits: `Ok(())` once stored,
    /// `Err` when every clone was dropped unanswered.
    pub(crate) fn pair() -> (ReceiptAck, tokio::sync::oneshot::Receiver<()>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (
            ReceiptAck(Some(std::sync::Arc::new(std::sync::Mutex::new(Some(tx))))),
            rx,
        )
    }

    /// The receipt is durably stored (or was already): the SMSC may
    /// forget it. Idempotent.
    pub fn stored(&self) {
        if let Some(slot) = &self.0
            && let Some(tx) = slot.lock().expect("ack lock").take()
        {
            let _ = tx.send(());
        }
    }

    /// Whether a session awaits this answer (false once answered, or for a
    /// receipt made outside a session).
    pub fn is_pending(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|slot| slot.lock().expect("ack lock").is_some())
    }
}

impl std::fmt::Debug for ReceiptAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_pending() {
            "ReceiptAck(pending)"
        } else {
            "ReceiptAck"
        })
    }
}

impl PartialEq for ReceiptAck {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for ReceiptAck {}

/// A mobile-originated message (reassembled if it was concatenated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MobileOriginated {
    /// Link it arrived on.
    pub link: String,
    /// Sender.
    pub source: Address,
    /// Recipient (our short code / number).
    pub destination: Address,
    /// `data_coding` of the parts.
    pub data_coding: u8,
    /// `esm_class` of the (first) part.
    pub esm_class: u8,
    /// Raw user data: the parts' payloads after their UDH, in order (for a
    /// message without UDHI, `short_message` or `message_payload` as
    /// received).
    pub payload: Bytes,
    /// Number of parts it was assembled from.
    pub parts: u8,
    /// False when parts were missing at the reassembly timeout / eviction;
    /// `payload` then holds the parts that arrived, in order.
    pub complete: bool,
    /// The text, decoded by `data_coding` with the national language shift
    /// tables each part's UDH selects; or why it cannot be read: a national
    /// language without tables here
    /// ([`TextError::UnsupportedLanguage`](smsgw_text::TextError)), a
    /// malformed header or payload, an unknown data_coding.
    pub text: Result<String, smsgw_text::TextError>,
    /// Answers the SMSC for the `deliver_sm` that completed this message (a
    /// single part, or the last part of a set): its `deliver_sm_resp` goes
    /// out once the consumer calls [`ReceiptAck::stored`], as for a
    /// receipt; dropped unanswered, the SMSC gets a temporary error and
    /// delivers it again. Earlier parts of a set are answered when they
    /// arrive (the SMSC's window would otherwise stall waiting for the
    /// rest), so a set is held in memory until its last part. A message
    /// surfaced incomplete (timeout, eviction) has nobody to answer.
    pub ack: ReceiptAck,
}

/// Coarse state of a link or session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LinkState {
    /// Not connected.
    #[default]
    Down,
    /// Connecting or binding.
    Binding,
    /// Bound and usable.
    Bound,
    /// Draining the window and unbinding.
    Unbinding,
    /// Stopped answering: `submit_sm` responses timed out
    /// ([`crate::LinkConfig::stall_after_timeouts`] in a row). Out of
    /// rotation (no new submits), closed and rebinding; stays so until the
    /// rebind succeeds (then [`LinkState::Bound`]) or fails (then
    /// [`LinkState::Down`]).
    Stalled,
}

/// Something that happened on a link, for the gateway to act on.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum LinkEvent {
    /// A delivery receipt.
    Receipt(Receipt),
    /// A mobile-originated message.
    MobileOriginated(MobileOriginated),
    /// A `submit_sm_resp` arrived after its segment was reported
    /// [`SegmentOutcome::Unknown`] (or for a sequence number the session no
    /// longer awaits).
    LateResponse {
        /// Link.
        link: String,
        /// Session index.
        session: usize,
        /// Sequence number of the `submit_sm`.
        sequence_number: u32,
        /// Status of the response.
        command_status: u32,
        /// The id, when the response accepted the message.
        smsc_message_id: Option<SmscMessageId>,
        /// The request's tag and the segment's index; `None` when the
        /// request had no tag, or the session no longer held the submit
        /// (ten response timeouts after it timed out, or past the
        /// [`crate::LinkConfig::late_responses`] bound): the answer then
        /// settles nothing.
        tag: Option<SubmitTag>,
    },
    /// A session changed state.
    StateChanged {
        /// Link.
        link: String,
        /// Session index.
        session: usize,
        /// New state.
        state: LinkState,
        /// Why (error message on failures).
        reason: Option<String>,
    },
}

/// An error with the time it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastError {
    /// Message.
    pub message: String,
    /// When.
    pub at: SystemTime,
}

/// Role of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionRole {
    /// bind_transceiver.
    Transceiver,
    /// bind_transmitter.
    Transmitter,
    /// bind_receiver.
    Receiver,
}

/// Status of one session.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionStatus {
    /// Index within the link.
    pub index: usize,
    /// Bind role.
    pub role: SessionRole,
    /// State.
    pub state: LinkState,
    /// `submit_sm` awaiting a response.
    pub in_flight: usize,
    /// Current AIMD send-rate cap after throttling (`None`: not throttled).
    pub throttled_rate: Option<f64>,
    /// `submit_sm` answered ESME_RTHROTTLED or ESME_RMSGQFUL since the
    /// session was created (each is resent, up to `throttle_retries`).
    pub throttled: u64,
    /// Connections closed because they stalled
    /// ([`LinkState::Stalled`]) since the session was created.
    pub stalls: u64,
    /// `submit_sm` settled [`crate::SegmentOutcome::Unknown`]
    /// (connection lost) because their connection was closed as stalled,
    /// besides the ones whose own response timed out, since the session was
    /// created.
    pub stall_unknown: u64,
    /// Round trip of the last answered enquire_link.
    pub last_enquire_link_rtt: Option<Duration>,
    /// Last error on this session.
    pub last_error: Option<LastError>,
}

/// Status of a link, as CheckESME reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkStatus {
    /// Link name.
    pub name: String,
    /// Bound if any session is bound; else Stalled (if any session is),
    /// Unbinding, Binding or Down.
    pub state: LinkState,
    /// Sessions currently bound.
    pub sessions_bound: usize,
    /// Sessions configured.
    pub sessions_total: usize,
    /// `submit_sm` awaiting a response, all sessions.
    pub in_flight: usize,
    /// Most recent enquire_link round trip over all sessions.
    pub last_enquire_link_rtt: Option<Duration>,
    /// Most recent error over all sessions.
    pub last_error: Option<LastError>,
    /// Accepted `submit_sm` per second (EWMA, ~10 s).
    pub submit_rate: f64,
    /// Segments submitted again because their connection closed before
    /// a response ([`crate::UnknownPolicy::Resubmit`]), since the link
    /// started.
    pub resubmitted: u64,
    /// Receipts per second (EWMA, ~10 s).
    pub receipt_rate: f64,
    /// Per-session details.
    pub sessions: Vec<SessionStatus>,
    /// Concatenated MO parts waiting for the rest of their set.
    pub mo_reassembly: ReassemblyStatus,
}

/// What a link's MO reassembly holds (incomplete concatenated messages)
/// and its bound ([`crate::ReassemblyConfig`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReassemblyStatus {
    /// Incomplete sets held.
    pub sets: usize,
    /// Payload octets held in them.
    pub held_bytes: usize,
    /// The bound on sets.
    pub max_sets: usize,
    /// Sets surfaced incomplete to make room (at a bound), since start.
    pub evicted: u64,
}
