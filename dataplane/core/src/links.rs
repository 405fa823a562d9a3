//! SMPP links as the API sees them: their state, and the control actions
//! admins take. The gateway implements [`LinkControl`] over its SMPP links;
//! the API only knows this trait.

use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// State of a link, for CheckESME and the admin API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LinkView {
    /// Link name.
    pub name: String,
    /// `down`, `binding`, `bound`, `unbinding`, `stopped` (by an admin) or
    /// `suspended` (by its SmppLink's `spec.suspended`).
    pub state: String,
    /// Sessions currently bound.
    pub sessions_bound: u32,
    /// Sessions configured.
    pub sessions_total: u32,
    /// `submit_sm` awaiting a response, all sessions.
    pub in_flight: u32,
    /// Round trip of the most recent enquire_link, in milliseconds.
    pub last_enquire_link_rtt_ms: Option<f64>,
    /// The most recent error, if any.
    pub last_error: Option<String>,
    /// When it happened, Unix milliseconds.
    pub last_error_at_ms: Option<u64>,
    /// Accepted `submit_sm` per second, recent average.
    pub submit_rate: f64,
    /// Receipts per second, recent average.
    pub receipt_rate: f64,
    /// Per-session details.
    pub sessions: Vec<SessionView>,
}

/// State of one bind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionView {
    /// Index within the link.
    pub index: u32,
    /// `transceiver`, `transmitter` or `receiver`.
    pub role: String,
    /// `down`, `binding`, `bound` or `unbinding`.
    pub state: String,
    /// `submit_sm` awaiting a response on this bind.
    pub in_flight: u32,
    /// Last enquire_link round trip, in milliseconds.
    pub last_enquire_link_rtt_ms: Option<f64>,
    /// The pod holding this bind, in a cluster (absent for one process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

/// What an admin can do to a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkAction {
    /// Bind the link's sessions.
    Start,
    /// Drain every window and unbind; stays down until started.
    Stop,
    /// Stop, then start.
    Restart,
}

impl std::str::FromStr for LinkAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "start" => Ok(Self::Start),
            "stop" => Ok(Self::Stop),
            "restart" => Ok(Self::Restart),
            other => Err(format!(
                "unknown link action {other:?}; expected start, stop or restart"
            )),
        }
    }
}

/// An address with its type of number and numbering plan.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Address {
    /// Digits, or an alphanumeric sender (SMPP carries at most 20
    /// characters).
    pub addr: String,
    /// Type of number.
    pub ton: u8,
    /// Numbering plan indicator.
    pub npi: u8,
}

impl Address {
    /// An address with explicit TON/NPI.
    pub fn new(addr: impl Into<String>, ton: u8, npi: u8) -> Self {
        Self {
            addr: addr.into(),
            ton,
            npi,
        }
    }
}

/// SAR concatenation values of one segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SarParts {
    /// Reference shared by the parts.
    pub msg_ref_num: u16,
    /// Number of parts.
    pub total_segments: u8,
    /// This part's number, 1-based.
    pub segment_seqnum: u8,
}

/// One SMS part, encoded: the bytes that go into `short_message` (or
/// `message_payload`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundSegment {
    /// Encoded bytes (user data header included when `udhi`).
    pub payload: Vec<u8>,
    /// SAR TLVs, when the link concatenates that way.
    pub sar: Option<SarParts>,
    /// Send in the `message_payload` TLV instead of `short_message`.
    pub message_payload: bool,
}

/// A message ready for an SMSC: addresses, data coding and its segments,
/// which go out in order over one bind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundMessage {
    /// Source address.
    pub source: Address,
    /// Destination address.
    pub destination: Address,
    /// SMPP data_coding.
    pub data_coding: u8,
    /// Whether payloads start with a user data header (esm_class 0x40).
    pub udhi: bool,
    /// Ask the SMSC for delivery receipts.
    pub registered_delivery: bool,
    /// The parts, in order.
    pub segments: Vec<OutboundSegment>,
    /// SMPP `priority_flag` (0 to 3); also the order in which messages
    /// waiting for a send window get it (higher first).
    pub priority: u8,
    /// SMPP `validity_period`, relative to the submission, in seconds;
    /// `None`: the SMSC's default.
    pub validity_period_s: Option<u32>,
    /// SMPP `schedule_delivery_time`, ms since the Unix epoch (sent as an
    /// absolute UTC time); `None`: deliver at once.
    pub schedule_delivery_ms: Option<u64>,
    /// Correlation, opaque to the links (the message id): a segment's
    /// `submit_sm_resp` arriving after its timeout comes back with it and
    /// the segment's index, on whichever pod holds the bind, so the caller
    /// keeps no map of its own of the segments awaiting an answer.
    pub tag: Option<Arc<str>>,
}

/// What became of one segment at the SMSC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SegmentResult {
    /// Accepted; the id is normalised per the link's id format.
    Accepted {
        /// Normalised SMSC message id.
        smsc_message_id: String,
    },
    /// Refused with an SMPP command_status.
    Rejected {
        /// The command_status.
        command_status: u32,
    },
    /// Sent, but no answer in time (or the connection was lost): it may
    /// or may not have been accepted. Not resent by the caller (the link
    /// resubmits by its own policy, see [`Submission::resubmitted`]). A late
    /// answer comes back as a link event with the message's
    /// [`OutboundMessage::tag`].
    Unknown {
        /// Why.
        reason: String,
    },
    /// Never sent (e.g. the message was cut short by a shutdown).
    NotSent {
        /// Why.
        reason: String,
    },
}

/// The outcome of a submission: the link that carried it and one result
/// per segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submission {
    /// Link that carried the message.
    pub link: String,
    /// Results, in segment order.
    pub results: Vec<SegmentResult>,
    /// Positions of the segments submitted more than once: an earlier
    /// `submit_sm` went out but its connection closed before any answer,
    /// and the link's `resubmit` policy sent it again (the result above is
    /// the last copy's). The SMSC may hold both copies.
    pub resubmitted: Vec<u16>,
}

/// Why nothing of a message was sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// No link or pool has that name.
    #[error("no link or pool named {0:?}")]
    UnknownTarget(String),
    /// No link of the target is bound, or every window stayed full: safe
    /// to try again later.
    #[error("{0}")]
    Unavailable(String),
    /// The link refused the message itself, as an SMSC would (a field SMPP
    /// cannot carry: an address over 20 characters, more than 255
    /// segments, …): permanent, trying again cannot succeed. Nothing was
    /// sent; `command_status` is the SMPP status an SMSC answers such a
    /// `submit_sm` with.
    #[error("refused by the link (command_status {command_status:#010x}): {reason}")]
    Refused {
        /// The SMPP status that says why (e.g. `ESME_RINVDSTADR`).
        command_status: u32,
        /// What is wrong.
        reason: String,
    },
}

/// The links the gateway holds.
#[async_trait::async_trait]
pub trait LinkControl: Send + Sync + 'static {
    /// Every link, ordered by name.
    fn links(&self) -> Vec<LinkView>;
    /// One link, if it exists.
    fn link(&self, name: &str) -> Option<LinkView>;
    /// Applies `action` to a link and returns its state afterwards; `None`
    /// when no link has that name.
    async fn control(&self, name: &str, action: LinkAction) -> Option<LinkView>;
    /// Submits a message through a link or pool (`target`), all segments on
    /// one bind, in order.
    async fn submit(&self, target: &str, msg: OutboundMessage) -> Result<Submission, SubmitError>;
}

/// A gateway with no links (tests, or a configuration without any).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoLinks;

#[async_trait::async_trait]
impl LinkControl for NoLinks {
    fn links(&self) -> Vec<LinkView> {
        Vec::new()
    }
    fn link(&self, _name: &str) -> Option<LinkView> {
        None
    }
    async fn control(&self, _name: &str, _action: LinkAction) -> Option<LinkView> {
        None
    }
    async fn submit(&self, target: &str, _msg: OutboundMessage) -> Result<Submission, SubmitError> {
        Err(SubmitError::UnknownTarget(target.to_owned()))
    }
}
