//! Messages, their segments, and the store that keeps them.
//!
//! A [`MessageRecord`] is written before anything is submitted (idempotent
//! on `(app_id, transaction_id)`), updated once per segment when the SMSC
//! answers the `submit_sm`, and again when receipts arrive. Receipts are
//! matched through an index from `(link, SMSC message id)` to
//! `(message_id, seq)`; the SMSC id is always the *normalised* key (the
//! smpp crate's `normalize_message_id` per the link's id format), never the
//! raw string.
//!
//! The domain rules live here, as pure functions every backend uses:
//! [`SegmentRecord::apply_receipt`] (which receipt wins) and
//! [`MessageRecord::derive_status`] (a message's status from its segments).
//! Backends only make the read-modify-write atomic.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Default record lifetime: 24 hours, as the platform smsgw replaces.
pub const DEFAULT_MESSAGE_TTL: Duration = Duration::from_secs(86_400);

/// Default lifetime of a receipt parked because its `(link, SMSC id)` was
/// not (yet) known: 10 minutes. A `submit_sm_resp` arrives within seconds
/// of its receipt or never.
pub const DEFAULT_PARKED_RECEIPT_TTL: Duration = Duration::from_secs(600);

/// Milliseconds since the Unix epoch, the time unit of message records.
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Where the client asked the message to go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Target {
    /// One SmppLink by name.
    Link(String),
    /// An EsmePool by name; the router picks a member link.
    Pool(String),
}

impl Target {
    /// The link or pool name.
    pub fn name(&self) -> &str {
        match self {
            Target::Link(n) | Target::Pool(n) => n,
        }
    }
}

/// Status of a whole message, derived from its segments
/// ([`MessageRecord::derive_status`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// Persisted; no segment has an answer from the SMSC yet. A message
    /// stuck here past a timeout is claimed by a sweeper and submitted.
    Accepted,
    /// Submitted, waiting for (more) receipts.
    Pending,
    /// Every segment was delivered.
    Delivered,
    /// A segment failed for good: a final receipt other than delivered.
    Failed,
    /// The SMSC refused a segment (`submit_sm_resp` with an error status).
    Rejected,
    /// A segment's submission has an unknown fate (no `submit_sm_resp`),
    /// so no receipt can ever be matched to it.
    Unknown,
}

impl MessageStatus {
    /// True when nothing can change the status any more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            MessageStatus::Delivered | MessageStatus::Failed | MessageStatus::Rejected
        )
    }
}

/// The state a delivery receipt reports (the `stat:` field, or the
/// `message_state` TLV); the smpp crate parses receipts into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptState {
    /// DELIVRD.
    Delivered,
    /// UNDELIV.
    Undeliverable,
    /// EXPIRED.
    Expired,
    /// REJECTD.
    Rejected,
    /// DELETED.
    Deleted,
    /// ACCEPTD (intermediate).
    Accepted,
    /// ENROUTE (intermediate).
    Enroute,
    /// UNKNOWN, or a state the parser did not know (final).
    Unknown,
}

impl ReceiptState {
    /// True for states after which no further receipt is expected.
    pub fn is_final(self) -> bool {
        !matches!(self, ReceiptState::Enroute | ReceiptState::Accepted)
    }

    /// True for final states other than delivered.
    pub fn is_failure(self) -> bool {
        self.is_final() && self != ReceiptState::Delivered
    }
}

/// The SMSC's answer to one segment's `submit_sm`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SubmitStatus {
    /// Not submitted yet (or definitely not sent, so it may be resent).
    Pending,
    /// The SMSC accepted it and returned a message id.
    Accepted,
    /// The SMSC refused it.
    Rejected {
        /// The `command_status` of the `submit_sm_resp` (or `generic_nack`).
        command_status: u32,
    },
    /// Sent, but no answer came (timeout, connection lost).
    Unknown {
        /// Why the fate is unknown.
        reason: String,
    },
}

/// One segment (one `submit_sm`) of a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRecord {
    /// Position in the message, from 0.
    pub seq: u16,
    /// The SMSC's message id, normalised per the link's id format.
    #[serde(default)]
    pub smsc_message_id: Option<String>,
    /// The SMSC's answer to the `submit_sm`.
    pub submit: SubmitStatus,
    /// The latest receipt state applied (see [`SegmentRecord::apply_receipt`]).
    #[serde(default)]
    pub receipt: Option<ReceiptState>,
    /// Network or SMSC error code of the receipt.
    #[serde(default)]
    pub error_code: Option<u32>,
    /// When the `submit_sm_resp` was recorded (ms since epoch).
    #[serde(default)]
    pub submitted_at_ms: Option<u64>,
    /// When the latest receipt was applied (its `done date`, or arrival).
    #[serde(default)]
    pub receipt_at_ms: Option<u64>,
    /// Submitted more than once: an earlier `submit_sm` went out but its
    /// connection closed before any answer, and the link's `resubmit`
    /// policy sent it again. The SMSC may have taken both copies.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resubmitted: bool,
}

impl SegmentRecord {
    /// A segment not yet submitted.
    pub fn new(seq: u16) -> Self {
        Self {
            seq,
            smsc_message_id: None,
            submit: SubmitStatus::Pending,
            receipt: None,
            error_code: None,
            submitted_at_ms: None,
            receipt_at_ms: None,
            resubmitted: false,
        }
    }

    /// Applies a receipt; returns false when it changes nothing.
    ///
    /// A final state is never overwritten (receipts are re-sent by SMSCs,
    /// and an intermediate one may overtake the final one); the same
    /// intermediate state twice is a duplicate too.
    pub fn apply_receipt(
        &mut self,
        state: ReceiptState,
        error_code: Option<u32>,
        at_ms: u64,
    ) -> bool {
        match self.receipt {
            Some(cur) if cur.is_final() => false,
            Some(cur) if cur == state => false,
            _ => {
                self.receipt = Some(state);
                self.error_code = error_code;
                self.receipt_at_ms = Some(at_ms);
                true
            }
        }
    }

    /// True when this segment can no longer be delivered.
    pub fn failed_for_good(&self) -> bool {
        matches!(self.submit, SubmitStatus::Rejected { .. })
            || self.receipt.is_some_and(ReceiptState::is_failure)
    }
}

/// A message as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    /// Stable id handed to the client (unique).
    pub message_id: String,
    /// The application that sent it.
    pub app_id: String,
    /// The client's idempotency key, unique per app.
    pub transaction_id: String,
    /// Optional client grouping id (a campaign, a batch).
    #[serde(default)]
    pub task_id: Option<String>,
    /// Sender address.
    pub source: String,
    /// Recipient address.
    pub destination: String,
    /// Data coding chosen (`gsm7`, `latin1`, `ucs2`, …).
    pub encoding: String,
    /// The link or pool the client asked for.
    pub target: Target,
    /// The link that carries it, once chosen.
    #[serde(default)]
    pub link: Option<String>,
    /// Creation time (ms since epoch); the TTL counts from here.
    pub created_at_ms: u64,
    /// Last change (ms since epoch).
    pub updated_at_ms: u64,
    /// Derived from `segments`; kept in the record for reads and indexes.
    pub status: MessageStatus,
    /// One entry per `submit_sm`, `seq` 0..n.
    pub segments: Vec<SegmentRecord>,
    /// Pod holding the submission lease (the creator, or a sweeper).
    #[serde(default)]
    pub claimed_by: Option<String>,
    /// End of that lease (ms since epoch); 0 when none.
    #[serde(default)]
    pub claim_until_ms: u64,
    /// The text as submitted, kept (for the record's TTL) so that a sweeper
    /// on another pod can submit a message whose pod died before it did.
    #[serde(default)]
    pub text: String,
    /// TON/NPI of source and destination as resolved at acceptance:
    /// `[source_ton, source_npi, dest_ton, dest_npi]`.
    #[serde(default)]
    pub ton_npi: [u8; 4],
    /// The W3C `traceparent` of the request that accepted the message (its
    /// API span, or the client's context), so that its submission and
    /// receipts, on whichever pod, join the same trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The W3C `tracestate` that came with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
    /// The message's own destination for its events (`callback_url` of
    /// the send), replacing the app's webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<crate::outbox::Callback>,
    /// The client's `sent_at` (ms since epoch): when the client says it
    /// created the message (its own clock, kept as given, for auditing;
    /// not the acceptance time, which is `created_at_ms`, nor a segment's
    /// submission, which is its `submitted_at_ms`). `None` when the
    /// request carried none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at_ms: Option<u64>,
    /// The options the client set on the message (validity, schedule,
    /// priority, flash); all absent on records written before them.
    #[serde(default, skip_serializing_if = "MessageOptions::is_default")]
    pub options: MessageOptions,
}

/// Highest message priority (`priority` 0 to 3, SMPP `priority_flag`).
pub const MAX_PRIORITY: u8 = 3;

/// Options a client sets on a message, kept on its record and passed to
/// the SMSC in each `submit_sm`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageOptions {
    /// How long the SMSC keeps trying to deliver it, in seconds from its
    /// submission (SMPP relative `validity_period`); `None`: the SMSC's
    /// default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validity_period_s: Option<u32>,
    /// When it is to be delivered (ms since epoch): held by the gateway
    /// until then, or passed to the SMSC as `schedule_delivery_time` when
    /// [`MessageOptions::schedule_at_smsc`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_delivery_ms: Option<u64>,
    /// The schedule is the SMSC's (the target link's `scheduleAtSmsc`):
    /// submitted at once with `schedule_delivery_time`, not held here.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub schedule_at_smsc: bool,
    /// 0 (default) to [`MAX_PRIORITY`]: SMPP `priority_flag`, and the
    /// order in which messages waiting for a link's send window get it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: u8,
    /// A flash message (class 0: shown, not stored, by the handset).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flash: bool,
}

fn is_zero(v: &u8) -> bool {
    *v == 0
}

impl MessageOptions {
    /// True when no option is set (the record carries none).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// When the gateway holds the message until: its schedule, unless
    /// that is the SMSC's.
    pub fn held_until_ms(&self) -> Option<u64> {
        self.schedule_delivery_ms.filter(|_| !self.schedule_at_smsc)
    }
}

impl MessageRecord {
    /// Where the message sits in the index of `accepted` messages a
    /// sweeper reads ([`MessageStore::claim_stale_accepted`]): the time it
    /// is held until when the gateway holds it (a schedule), else its
    /// creation.
    pub fn listed_at_ms(&self) -> u64 {
        self.options.held_until_ms().unwrap_or(self.created_at_ms)
    }

    /// True when a segment was submitted more than once, so the recipient
    /// may get it twice (the link's `resubmit` policy after a connection
    /// lost before the SMSC answered).
    pub fn possible_duplicate(&self) -> bool {
        self.segments.iter().any(|s| s.resubmitted)
    }

    /// The trace id of [`MessageRecord::traceparent`] (32 hex digits), empty
    /// without one.
    pub fn trace_id(&self) -> &str {
        self.traceparent
            .as_deref()
            .and_then(|t| t.get(3..35))
            .unwrap_or("")
    }

    /// Derives the message status from its segments:
    ///
    /// 1. any segment refused at submit → [`MessageStatus::Rejected`];
    /// 2. any final receipt other than delivered → [`MessageStatus::Failed`];
    /// 3. any segment whose submission fate is unknown → [`MessageStatus::Unknown`];
    /// 4. every segment delivered → [`MessageStatus::Delivered`];
    /// 5. no segment answered yet → [`MessageStatus::Accepted`];
    /// 6. otherwise [`MessageStatus::Pending`].
    pub fn derive_status(&self) -> MessageStatus {
        let segs = &self.segments;
        if segs
            .iter()
            .any(|s| matches!(s.submit, SubmitStatus::Rejected { .. }))
        {
            MessageStatus::Rejected
        } else if segs
            .iter()
            .any(|s| s.receipt.is_some_and(ReceiptState::is_failure))
        {
            MessageStatus::Failed
        } else if segs
            .iter()
            .any(|s| matches!(s.submit, SubmitStatus::Unknown { .. }) && s.receipt.is_none())
        {
            MessageStatus::Unknown
        } else if !segs.is_empty()
            && segs
                .iter()
                .all(|s| s.receipt == Some(ReceiptState::Delivered))
        {
            MessageStatus::Delivered
        } else if segs
            .iter()
            .all(|s| s.submit == SubmitStatus::Pending && s.receipt.is_none())
        {
            MessageStatus::Accepted
        } else {
            MessageStatus::Pending
        }
    }

    /// Records one segment's submit outcome (and the link and SMSC id), and
    /// re-derives the status. Errors when `seq` is not a segment.
    pub fn record_submit(&mut self, s: &SubmitUpdate) -> Result<(), MessageStoreError> {
        let seg = self.segments.get_mut(usize::from(s.seq)).ok_or_else(|| {
            MessageStoreError::NoSuchSegment {
                message_id: self.message_id.clone(),
                seq: s.seq,
            }
        })?;
        seg.submit = s.outcome.clone();
        seg.smsc_message_id = s.smsc_message_id.clone();
        seg.submitted_at_ms = Some(s.at_ms);
        seg.resubmitted |= s.resubmitted;
        self.link = Some(s.link.clone());
        self.touch(s.at_ms);
        Ok(())
    }

    /// Applies a receipt to segment `seq`; false when nothing changed (or
    /// no such segment).
    pub fn apply_receipt(&mut self, seq: u16, r: &ReceiptUpdate) -> bool {
        let Some(seg) = self.segments.get_mut(usize::from(seq)) else {
            return false;
        };
        if !seg.apply_receipt(r.state, r.error_code, r.at_ms) {
            return false;
        }
        self.touch(r.at_ms);
        true
    }

    /// Whether a sweeper may claim this message at `now_ms`: still
    /// [`MessageStatus::Accepted`], no live lease, and either held until a
    /// time now past ([`MessageOptions::held_until_ms`]: nobody submits it
    /// before) or created at or before `created_before_ms`.
    pub fn claimable(&self, created_before_ms: u64, now_ms: u64) -> bool {
        self.status == MessageStatus::Accepted
            && self.claim_until_ms <= now_ms
            && match self.options.held_until_ms() {
                Some(due) => due <= now_ms,
                None => self.created_at_ms <= created_before_ms,
            }
    }

    /// Sets the submission lease; answers who held it before (see
    /// [`Claimed::previous_owner`]).
    pub fn claim(&mut self, owner: &str, until_ms: u64, now_ms: u64) -> Option<String> {
        let previous = self.claimed_by.replace(owner.to_owned());
        self.claim_until_ms = until_ms;
        self.updated_at_ms = self.updated_at_ms.max(now_ms);
        previous
    }

    /// Ends the lease `owner` took until `until_ms`, when it is still that
    /// lease on a message still [`MessageStatus::Accepted`]: its holder gives
    /// the message back having sent nothing, so the next claimer submits it
    /// as fresh, not as one that may have reached the SMSC. False (nothing
    /// changed) when the lease is another's or the message moved on.
    pub fn release(&mut self, owner: &str, until_ms: u64) -> bool {
        if self.status != MessageStatus::Accepted
            || self.claimed_by.as_deref() != Some(owner)
            || self.claim_until_ms != until_ms
        {
            return false;
        }
        self.claimed_by = None;
        self.claim_until_ms = 0;
        true
    }

    fn touch(&mut self, at_ms: u64) {
        self.updated_at_ms = self.updated_at_ms.max(at_ms);
        self.status = self.derive_status();
    }

    /// Expiry time (ms since epoch) under `ttl`.
    pub fn expires_at_ms(&self, ttl: Duration) -> u64 {
        self.created_at_ms
            .saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
    }
}

/// One segment's submit outcome, for [`MessageStore::record_submit`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitUpdate {
    /// The message.
    pub message_id: String,
    /// The segment, from 0.
    pub seq: u16,
    /// What the SMSC answered.
    pub outcome: SubmitStatus,
    /// The link it went out on.
    pub link: String,
    /// The SMSC message id, normalised per the link's id format (`Some`
    /// only when accepted).
    pub smsc_message_id: Option<String>,
    /// When the answer came (ms since epoch).
    pub at_ms: u64,
    /// The segment was submitted more than once (see
    /// [`SegmentRecord::resubmitted`]); the mark stays once set.
    pub resubmitted: bool,
}

/// A delivery receipt, for [`MessageStore::apply_receipt`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptUpdate {
    /// The link it arrived on (any bind, any pod).
    pub link: String,
    /// The SMSC message id, normalised per the link's id format.
    pub smsc_message_id: String,
    /// Reported state.
    pub state: ReceiptState,
    /// Network or SMSC error code.
    pub error_code: Option<u32>,
    /// `done date`, or arrival time (ms since epoch).
    pub at_ms: u64,
}

/// Result of [`MessageStore::create`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreateOutcome {
    /// The record was stored; it is the one returned (its `message_id` is
    /// the caller's, or — when a creator died half-way — the id the
    /// idempotency key already held). The caller submits it.
    Created(MessageRecord),
    /// `(app_id, transaction_id)` was already taken: the existing record.
    /// The caller must not submit again.
    Existing(MessageRecord),
}

impl CreateOutcome {
    /// The stored record, either way.
    pub fn record(&self) -> &MessageRecord {
        match self {
            CreateOutcome::Created(r) | CreateOutcome::Existing(r) => r,
        }
    }
}

/// Result of [`MessageStore::apply_receipt`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReceiptOutcome {
    /// Matched and applied; the updated record.
    Applied(MessageRecord),
    /// Matched, but the segment already had this or a final state.
    Duplicate(MessageRecord),
    /// No mapping for `(link, SMSC id)` yet: kept for the parked-receipt
    /// TTL and applied by [`MessageStore::record_submit`] if the mapping
    /// appears. The caller counts and logs it; it is never an error.
    Parked,
    /// The mapping exists but its message is gone (expired). Count it as
    /// unknown.
    Orphaned,
}

/// A record after a change, with the status it had just before: what a
/// caller needs to tell whether (and how) the message moved, without
/// rebuilding the earlier record. Result of
/// [`MessageStore::record_submit_change`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusChange {
    /// The status before the change.
    pub before: MessageStatus,
    /// The record after it; its `status` is the status after.
    pub record: MessageRecord,
}

impl StatusChange {
    /// The status after the change.
    pub fn after(&self) -> MessageStatus {
        self.record.status
    }

    /// Whether the change moved the message to another status.
    pub fn moved(&self) -> bool {
        self.before != self.record.status
    }
}

/// Result of [`MessageStore::apply_receipt_change`]: the outcome, and the
/// status of the matched message just before the receipt (`None` when
/// parked or orphaned; equal to the status after for a duplicate).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiptChange {
    /// What happened to the receipt.
    pub outcome: ReceiptOutcome,
    /// The matched message's status before the receipt.
    pub before: Option<MessageStatus>,
}

impl ReceiptChange {
    /// The change to the message, when the receipt was applied.
    pub fn applied(&self) -> Option<StatusChange> {
        match (&self.outcome, self.before) {
            (ReceiptOutcome::Applied(record), Some(before)) => Some(StatusChange {
                before,
                record: record.clone(),
            }),
            _ => None,
        }
    }
}

/// A sweeper's claim request, for [`MessageStore::claim_stale_accepted`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimRequest {
    /// The claiming pod (its name).
    pub owner: String,
    /// Only messages created at or before this time (ms since epoch), or
    /// held until a time at or before `now_ms` (a schedule): a backend
    /// reads its index of accepted messages ([`MessageRecord::listed_at_ms`])
    /// up to the later of the two.
    pub created_before_ms: u64,
    /// Now (ms since epoch): leases ending before it are expired.
    pub now_ms: u64,
    /// How long the claim holds.
    pub lease: Duration,
    /// At most this many messages per call.
    pub limit: usize,
}

/// A message a sweeper claimed ([`MessageStore::claim_stale_accepted`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimed {
    /// The record, under the new lease.
    pub record: MessageRecord,
    /// Who held the submission lease before it lapsed. A lease is taken
    /// before a message is handed to a link (by its creator, or a sweeper)
    /// and given back ([`MessageStore::release_claim`]) only when nothing
    /// was sent; so `Some` means its holder may have written the
    /// `submit_sm`s and stopped before their answers were stored (the
    /// crash window): the SMSC may hold the message already. `None`:
    /// nobody tried, or nothing was sent.
    pub previous_owner: Option<String>,
}

impl Claimed {
    /// True when the message may have reached the SMSC already (see
    /// [`Claimed::previous_owner`]).
    pub fn in_doubt(&self) -> bool {
        self.previous_owner.is_some()
    }
}

/// Why a message store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageStoreError {
    /// No message with that id (or it expired).
    #[error("no message {message_id:?}")]
    NotFound {
        /// The id asked for.
        message_id: String,
    },
    /// The message has no segment `seq`.
    #[error("message {message_id:?} has no segment {seq}")]
    NoSuchSegment {
        /// The message.
        message_id: String,
        /// The segment asked for.
        seq: u16,
    },
    /// An optimistic update lost the race too many times in a row.
    #[error("message {message_id:?} is contended; gave up after {attempts} attempts")]
    Contended {
        /// The message.
        message_id: String,
        /// How often it was tried.
        attempts: u32,
    },
    /// The backend failed (I/O, connection, corruption).
    #[error("message store backend failed: {0}")]
    Backend(String),
}

/// Persistent messages, shared by every pod using the same backend.
///
/// Records expire `ttl` after `created_at_ms` (default
/// [`DEFAULT_MESSAGE_TTL`]), together with their idempotency key and index
/// entries.
#[async_trait::async_trait]
pub trait MessageStore: Send + Sync + 'static {
    /// Stores a new message, atomically on `(app_id, transaction_id)`: of
    /// any number of concurrent creations with one key, on any pods,
    /// exactly one gets [`CreateOutcome::Created`]; the others get
    /// [`CreateOutcome::Existing`] with the same `message_id`.
    async fn create(&self, rec: &MessageRecord) -> Result<CreateOutcome, MessageStoreError>;

    /// A message by id; `None` when unknown or expired.
    async fn get(&self, message_id: &str) -> Result<Option<MessageRecord>, MessageStoreError>;

    /// A message by the client's idempotency key.
    async fn by_transaction(
        &self,
        app_id: &str,
        transaction_id: &str,
    ) -> Result<Option<MessageRecord>, MessageStoreError>;

    /// Records a segment's submit outcome. When accepted with an SMSC id,
    /// also writes the `(link, SMSC id) → (message, seq)` index and applies
    /// a receipt parked for that key. Returns the updated record.
    async fn record_submit(&self, s: &SubmitUpdate) -> Result<MessageRecord, MessageStoreError>;

    /// Matches a receipt through the index and applies it; parks it when the
    /// key is not (yet) known.
    async fn apply_receipt(&self, r: &ReceiptUpdate) -> Result<ReceiptOutcome, MessageStoreError>;

    /// [`MessageStore::record_submit_change`] for every segment of one
    /// submission (all of one message) at once: the record takes every
    /// outcome in one atomic write, so a crash cannot leave some segments
    /// answered and the others `pending` for ever (such a message is no
    /// longer claimable by a sweeper). Index entries follow, as for one
    /// segment. Answers the status before and the record after all of
    /// them.
    async fn record_submits(
        &self,
        updates: &[SubmitUpdate],
    ) -> Result<StatusChange, MessageStoreError>;

    /// [`MessageStore::record_submit`], answering also the status the
    /// message had just before. The backends read it in the same atomic
    /// step as the change; this default reads the record first, so a
    /// concurrent change in between can show as the "before" (good enough
    /// for a store without concurrent writers, such as a test's).
    async fn record_submit_change(
        &self,
        s: &SubmitUpdate,
    ) -> Result<StatusChange, MessageStoreError> {
        let before = self.get(&s.message_id).await?.map(|r| r.status);
        let record = self.record_submit(s).await?;
        Ok(StatusChange {
            before: before.unwrap_or(record.status),
            record,
        })
    }

    /// [`MessageStore::apply_receipt`], answering also the matched
    /// message's status just before the receipt. The backends read it in
    /// the same atomic step; this default derives it from the record after
    /// with the receipt's segment cleared (exact unless the segment held an
    /// earlier receipt).
    async fn apply_receipt_change(
        &self,
        r: &ReceiptUpdate,
    ) -> Result<ReceiptChange, MessageStoreError> {
        let outcome = self.apply_receipt(r).await?;
        let before = match &outcome {
            ReceiptOutcome::Applied(rec) => {
                let mut earlier = rec.clone();
                if let Some(seg) = earlier.segments.iter_mut().find(|s| {
                    s.smsc_message_id.as_deref() == Some(r.smsc_message_id.as_str())
                        && rec.link.as_deref() == Some(r.link.as_str())
                }) {
                    seg.receipt = None;
                }
                Some(earlier.derive_status())
            }
            ReceiptOutcome::Duplicate(rec) => Some(rec.status),
            ReceiptOutcome::Parked | ReceiptOutcome::Orphaned => None,
        };
        Ok(ReceiptChange { outcome, before })
    }

    /// Claims messages stuck in [`MessageStatus::Accepted`]
    /// ([`MessageRecord::claimable`]) for `req.owner`, setting the lease.
    /// Atomic per message: of concurrent claimers, on any pods, exactly one
    /// gets each message. Returns the claimed records.
    async fn claim_stale_accepted(
        &self,
        req: &ClaimRequest,
    ) -> Result<Vec<Claimed>, MessageStoreError>;

    /// Gives back the submission lease `owner` holds until `until_ms`
    /// ([`MessageRecord::release`]), after a submission that sent nothing,
    /// so that the next claim does not count the message as possibly sent
    /// ([`Claimed::in_doubt`]). Answers whether it was released (false: not
    /// that lease any more, or the message moved on or expired).
    async fn release_claim(
        &self,
        message_id: &str,
        owner: &str,
        until_ms: u64,
    ) -> Result<bool, MessageStoreError>;

    /// Removes expired records where the backend has no native expiry;
    /// returns how many messages were removed. Backends with native TTL
    /// (Redis, Aerospike) return 0.
    async fn purge_expired(&self) -> Result<u64, MessageStoreError> {
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u16) -> MessageRecord {
        MessageRecord {
            message_id: "m1".into(),
            app_id: "a".into(),
            transaction_id: "t".into(),
            task_id: None,
            source: "s".into(),
            destination: "d".into(),
            encoding: "gsm7".into(),
            target: Target::Link("l".into()),
            link: None,
            created_at_ms: 0,
            updated_at_ms: 0,
            status: MessageStatus::Accepted,
            segments: (0..n).map(SegmentRecord::new).collect(),
            claimed_by: None,
            claim_until_ms: 0,
            text: String::new(),
            ton_npi: [0, 0, 1, 1],
            traceparent: None,
            tracestate: None,
            callback: None,
            sent_at_ms: None,
            options: MessageOptions::default(),
        }
    }

    fn submit(seq: u16, outcome: SubmitStatus) -> SubmitUpdate {
        SubmitUpdate {
            message_id: "m1".into(),
            seq,
            outcome,
            link: "l".into(),
            smsc_message_id: Some(format!("id{seq}")),
            at_ms: 5,
            resubmitted: false,
        }
    }

    fn receipt(state: ReceiptState) -> ReceiptUpdate {
        ReceiptUpdate {
            link: "l".into(),
            smsc_message_id: "x".into(),
            state,
            error_code: None,
            at_ms: 9,
        }
    }

    #[test]
    fn status_is_delivered_only_when_every_segment_is() {
        let mut m = rec(2);
        assert_eq!(m.derive_status(), MessageStatus::Accepted);
        m.record_submit(&submit(0, SubmitStatus::Accepted)).unwrap();
        assert_eq!(m.status, MessageStatus::Pending);
        m.record_submit(&submit(1, SubmitStatus::Accepted)).unwrap();
        assert!(m.apply_receipt(1, &receipt(ReceiptState::Delivered)));
        assert_eq!(m.status, MessageStatus::Pending);
        assert!(m.apply_receipt(0, &receipt(ReceiptState::Delivered)));
        assert_eq!(m.status, MessageStatus::Delivered);
    }

    #[test]
    fn a_resubmitted_segment_marks_the_message_a_possible_duplicate_for_good() {
        let mut m = rec(2);
        m.record_submit(&submit(0, SubmitStatus::Accepted)).unwrap();
        assert!(!m.possible_duplicate());
        m.record_submit(&SubmitUpdate {
            resubmitted: true,
            ..submit(1, SubmitStatus::Accepted)
        })
        .unwrap();
        assert!(m.possible_duplicate() && m.segments[1].resubmitted);
        // A later answer for the same segment (a late response) keeps it.
        m.record_submit(&submit(1, SubmitStatus::Accepted)).unwrap();
        assert!(m.possible_duplicate());
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["segments"][1]["resubmitted"], true);
        assert!(json["segments"][0].get("resubmitted").is_none());
    }

    #[test]
    fn a_final_receipt_is_never_overwritten() {
        let mut s = SegmentRecord::new(0);
        assert!(s.apply_receipt(ReceiptState::Enroute, None, 1));
        assert!(!s.apply_receipt(ReceiptState::Enroute, None, 2));
        assert!(s.apply_receipt(ReceiptState::Undeliverable, Some(11), 3));
        assert!(!s.apply_receipt(ReceiptState::Delivered, None, 4));
        assert_eq!(s.receipt, Some(ReceiptState::Undeliverable));
        assert_eq!(s.error_code, Some(11));
        assert!(s.failed_for_good());
    }

    #[test]
    fn rejected_and_failed_and_unknown_segments_decide_the_status() {
        let mut m = rec(3);
        m.record_submit(&submit(0, SubmitStatus::Accepted)).unwrap();
        m.record_submit(&submit(
            1,
            SubmitStatus::Unknown {
                reason: "timeout".into(),
            },
        ))
        .unwrap();
        assert_eq!(m.status, MessageStatus::Unknown);
        m.apply_receipt(0, &receipt(ReceiptState::Expired));
        assert_eq!(m.status, MessageStatus::Failed);
        m.record_submit(&submit(
            2,
            SubmitStatus::Rejected {
                command_status: 0x58,
            },
        ))
        .unwrap();
        assert_eq!(m.status, MessageStatus::Rejected);
        assert!(m.status.is_final());
    }

    #[test]
    fn a_segment_out_of_range_is_an_error() {
        let mut m = rec(1);
        assert_eq!(
            m.record_submit(&submit(3, SubmitStatus::Accepted)),
            Err(MessageStoreError::NoSuchSegment {
                message_id: "m1".into(),
                seq: 3
            })
        );
        assert!(!m.apply_receipt(3, &receipt(ReceiptState::Delivered)));
    }

    #[test]
    fn only_unleased_old_accepted_messages_are_claimable() {
        let mut m = rec(1);
        m.created_at_ms = 100;
        assert!(m.claimable(100, 1000));
        assert!(!m.claimable(99, 1000), "too young");
        assert_eq!(m.claim("pod-a", 2000, 1000), None);
        assert!(!m.claimable(100, 1999), "lease held");
        assert!(m.claimable(100, 2000), "lease expired");
        assert_eq!(
            m.claim("pod-b", 3000, 2000).as_deref(),
            Some("pod-a"),
            "the lapsed holder is answered"
        );
        m.record_submit(&submit(0, SubmitStatus::Accepted)).unwrap();
        assert!(!m.claimable(100, 5000), "no longer accepted");
    }

    #[test]
    fn a_held_message_is_claimable_once_due_and_not_before() {
        let mut m = rec(1);
        m.created_at_ms = 100;
        m.options.schedule_delivery_ms = Some(5_000);
        assert_eq!(m.listed_at_ms(), 5_000, "listed at its due time");
        assert!(!m.claimable(1_000, 4_999), "not yet due, although old");
        assert!(m.claimable(0, 5_000), "due: no wait for the stale period");
        m.options.schedule_at_smsc = true;
        assert_eq!(m.options.held_until_ms(), None, "the SMSC's schedule");
        assert_eq!(m.listed_at_ms(), 100);
        assert!(!m.claimable(99, 10_000), "a fresh message like any other");
        assert!(m.claimable(100, 1_000));
    }

    #[test]
    fn only_the_holder_releases_its_own_lease_of_an_accepted_message() {
        let mut m = rec(1);
        m.claim("pod-a", 2000, 1000);
        assert!(!m.release("pod-b", 2000), "another's lease");
        assert!(!m.release("pod-a", 2500), "a later lease of the same pod");
        assert!(m.release("pod-a", 2000));
        assert_eq!((m.claimed_by.as_deref(), m.claim_until_ms), (None, 0));
        assert_eq!(m.claim("pod-b", 3000, 2000), None, "nobody held it");
        m.record_submit(&submit(0, SubmitStatus::Accepted)).unwrap();
        assert!(!m.release("pod-b", 3000), "no longer accepted");
        assert_eq!(m.claimed_by.as_deref(), Some("pod-b"));
    }

    #[test]
    fn the_trace_context_is_optional_in_stored_records() {
        let mut m = rec(1);
        let old = serde_json::to_string(&m).unwrap();
        assert!(
            !old.contains("traceparent") && !old.contains("sent_at"),
            "absent fields are not written"
        );
        let back: MessageRecord = serde_json::from_str(&old).unwrap();
        assert_eq!(back, m, "records written before tracing still read");
        assert_eq!(m.trace_id(), "");
        m.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        assert_eq!(m.trace_id(), "0af7651916cd43dd8448eb211c80319c");
        m.sent_at_ms = Some(1_780_000_000_000);
        let again: MessageRecord =
            serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(again, m);
    }
}
