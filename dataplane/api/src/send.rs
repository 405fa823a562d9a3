//! The message lifecycle, shared by REST and gRPC: validate, encode,
//! persist (idempotent on app id + transaction id), submit over a link or
//! pool, record every segment's outcome, apply receipts, notify.

use crate::auth::Caller;
use crate::{ApiError, ApiState};
use serde::{Deserialize, Serialize};
use smsgw_core::links::{
    Address, OutboundMessage, OutboundSegment, SarParts, SegmentResult, SubmitError,
};
use smsgw_core::messages::{
    CreateOutcome, MessageRecord, MessageStatus, MessageStore, ReceiptOutcome, ReceiptState,
    ReceiptUpdate, SegmentRecord, SubmitStatus, SubmitUpdate, Target, unix_now_ms,
};
use smsgw_core::users::UserRecord;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// A message to send, from either API.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
pub struct SendRequest {
    /// Campaign id.
    #[serde(default)]
    pub task_id: String,
    /// Idempotency key; generated when empty.
    #[serde(default)]
    pub transaction_id: String,
    /// Target link or pool.
    #[schema(required)]
    #[serde(default)]
    pub esme: String,
    /// Source address.
    #[serde(default, alias = "saddr")]
    pub source: String,
    /// Destination address.
    #[schema(required)]
    #[serde(default, alias = "daddr")]
    pub destination: String,
    /// Text.
    #[schema(required)]
    #[serde(default)]
    pub message: Option<String>,
    /// Source TON (default 0; 5 for alphanumeric senders).
    #[serde(default)]
    pub ston: Option<u8>,
    /// Source NPI (default 0).
    #[serde(default)]
    pub snpi: Option<u8>,
    /// Destination TON (default: the link's, normally 1).
    #[serde(default)]
    pub dton: Option<u8>,
    /// Destination NPI (default: the link's, normally 1).
    #[serde(default)]
    pub dnpi: Option<u8>,
    /// Contact-policy strategy; empty for none.
    #[serde(default)]
    pub strategy: String,
    /// Answer only once every segment has an SMSC outcome.
    #[serde(default)]
    pub wait_for_submit: bool,
    /// Over the rate limit, wait (up to 5 s) for capacity instead of 429.
    #[serde(default)]
    pub wait_for_capacity: bool,
}

/// Longest wait for rate-limit capacity with `wait_for_capacity`.
const CAPACITY_WAIT: Duration = Duration::from_secs(5);

/// One segment as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
}

/// A message as clients see it (SmsInfo, GET /api/v1/sms/{id}).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MessageView {
    /// Gateway message id.
    pub message_id: String,
    /// Transaction id.
    pub transaction_id: String,
    /// Campaign id.
    pub task_id: Option<String>,
    /// `accepted`, `pending`, `delivered`, `failed`, `rejected`, `unknown`.
    pub status: String,
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
}

/// The answer to a send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
    pub status: String,
    /// Link that carried it, when submitted.
    pub link: Option<String>,
    /// Per-segment outcomes (with wait_for_submit).
    pub segment_info: Vec<SegmentView>,
    /// True when this answers a repeated transaction id.
    pub duplicate: bool,
}

/// Something an app is told about (gRPC WatchEvents, webhooks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
        status: String,
        /// When, Unix ms.
        at_ms: u64,
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

/// Log target of the message lifecycle: one info line per state change
/// (`event` = `accepted`, `submitted`, `delivered`, `failed`, `rejected`,
/// `unknown`, or `refused` before anything was stored), with `message_id`,
/// `transaction_id`, `app_id` and `trace_id`. Filter with
/// `RUST_LOG=smsgw::message=info`.
pub const MESSAGE_LOG: &str = "smsgw::message";

/// Status name as the APIs spell it.
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
fn submit_reason(s: &SubmitStatus) -> Option<String> {
    match s {
        SubmitStatus::Rejected { command_status } => Some(format!(
            "SMSC refused with command_status 0x{command_status:08X}"
        )),
        SubmitStatus::Unknown { reason } => Some(reason.clone()),
        SubmitStatus::Pending | SubmitStatus::Accepted => None,
    }
}

fn segment_view(s: &SegmentRecord) -> SegmentView {
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
    }
}

/// The client view of a stored message.
pub fn message_view(r: &MessageRecord) -> MessageView {
    MessageView {
        message_id: r.message_id.clone(),
        transaction_id: r.transaction_id.clone(),
        task_id: r.task_id.clone(),
        status: status_name(r.status).into(),
        esme: r.target.name().to_owned(),
        link: r.link.clone(),
        source: r.source.clone(),
        destination: r.destination.clone(),
        encoding: r.encoding.clone(),
        segments: r.segments.iter().map(segment_view).collect(),
        created_at_ms: r.created_at_ms,
        updated_at_ms: r.updated_at_ms,
    }
}

/// The answer to a send of `rec` to `esme` that was accepted: no link or
/// segment outcomes yet, not a repeat.
fn accepted_response(rec: &MessageRecord, esme: String) -> SendResponse {
    SendResponse {
        success: true,
        esme,
        message_id: rec.message_id.clone(),
        transaction_id: rec.transaction_id.clone(),
        segments: rec.segments.len() as u32,
        status: status_name(rec.status).into(),
        link: None,
        segment_info: Vec::new(),
        duplicate: false,
    }
}

/// Why a send was refused before anything was stored, with a code per cause.
fn refused(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::SendRefused {
        code,
        message: message.into(),
        forbidden: false,
    }
}

fn forbidden(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::SendRefused {
        code,
        message: message.into(),
        forbidden: true,
    }
}

/// The message service: everything after authentication.
pub struct Messages {
    store: Arc<dyn MessageStore>,
    events: broadcast::Sender<AppEvent>,
    users: Mutex<HashMap<String, (Arc<UserRecord>, Instant)>>,
    /// Segments whose outcome is unknown, by (link, session, sequence), so a
    /// late submit_sm_resp can settle them.
    late: Mutex<HashMap<PendingKey, (String, u16, Instant)>>,
    reference: std::sync::atomic::AtomicU16,
    /// App rate limits last written to the limiter, and when: rewritten
    /// only when the rate changes or the entry is older than
    /// [`USER_CACHE`], so the send path does not write a limit (a store
    /// round trip with a shared limiter) for every message.
    app_limits: Mutex<HashMap<String, (u32, Instant)>>,
    /// Bounds background submissions: when every slot is taken, `send`
    /// waits, which holds clients back instead of queueing without limit.
    submit_slots: Arc<tokio::sync::Semaphore>,
    /// Counters for the admin statistics.
    pub stats: crate::stats::Stats,
    observer: std::sync::OnceLock<crate::lifecycle::Observer>,
}

/// How long a background submission is retried while nothing can be sent
/// before the message is left to the sweeper.
const SUBMIT_RETRY: Duration = Duration::from_secs(10);

/// Background submissions in flight at once, per gateway.
const SUBMIT_SLOTS: usize = 8192;

/// How long a segment with an unknown outcome waits for a late answer.
const LATE_WINDOW: Duration = Duration::from_secs(600);

/// (link, session, sequence number) of a submit_sm awaiting a late answer.
type PendingKey = (String, u32, u32);

/// How long a user record is cached for quota checks on the send path.
const USER_CACHE: Duration = Duration::from_secs(5);

impl Messages {
    /// A service over a message store.
    pub fn new(store: Arc<dyn MessageStore>) -> Self {
        Self {
            store,
            events: broadcast::channel(16_384).0,
            users: Mutex::new(HashMap::new()),
            late: Mutex::new(HashMap::new()),
            reference: std::sync::atomic::AtomicU16::new(rand::random()),
            app_limits: Mutex::new(HashMap::new()),
            submit_slots: Arc::new(tokio::sync::Semaphore::new(SUBMIT_SLOTS)),
            stats: crate::stats::Stats::default(),
            observer: std::sync::OnceLock::new(),
        }
    }

    /// Sets the observer of every message state change (the journal);
    /// there is at most one, so a second call is refused (`false`).
    pub fn set_observer(&self, observer: crate::lifecycle::Observer) -> bool {
        self.observer.set(observer).is_ok()
    }

    fn observe(&self, ev: crate::lifecycle::Lifecycle<'_>) {
        if let Some(o) = self.observer.get() {
            o(&ev);
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn MessageStore> {
        &self.store
    }

    /// Times every store call into `hist` from now on.
    pub(crate) fn time_store(
        &mut self,
        hist: prometheus_client::metrics::family::Family<
            crate::metrics::StoreOpLabels,
            prometheus_client::metrics::histogram::Histogram,
        >,
    ) {
        self.store = Arc::new(crate::metrics::TimedStore::new(self.store.clone(), hist));
    }

    /// The one place a stored message's change is reported. When its status
    /// differs from `before` (`None`: the message was just accepted): one
    /// info line under [`MESSAGE_LOG`], and the delivered/failed counters
    /// when it became final. Then, for a message that existed before, its
    /// app is told (WatchEvents, webhooks).
    fn changed(&self, before: Option<MessageStatus>, rec: &MessageRecord) {
        if before != Some(rec.status) {
            let event = match rec.status {
                MessageStatus::Pending => "submitted",
                other => status_name(other),
            };
            tracing::info!(
                target: MESSAGE_LOG,
                event,
                message_id = %rec.message_id,
                transaction_id = %rec.transaction_id,
                app_id = %rec.app_id,
                esme = rec.target.name(),
                link = rec.link.as_deref().unwrap_or(""),
                segments = rec.segments.len(),
                trace_id = rec.trace_id(),
                "message {event}"
            );
            match rec.status {
                MessageStatus::Delivered => self.stats.finished(&scope_of(rec), true),
                MessageStatus::Failed => self.stats.finished(&scope_of(rec), false),
                _ => {}
            }
        }
        if before.is_some() {
            self.notify(rec);
        }
    }

    /// Subscribes to every app's events (callers filter by app).
    pub fn subscribe(&self) -> broadcast::Receiver<AppEvent> {
        self.events.subscribe()
    }

    /// Publishes an event (no subscriber is fine).
    pub fn publish(&self, ev: AppEvent) {
        let _ = self.events.send(ev);
    }

    fn notify(&self, r: &MessageRecord) {
        self.publish(AppEvent::Status {
            app_id: r.app_id.clone(),
            message_id: r.message_id.clone(),
            transaction_id: r.transaction_id.clone(),
            status: status_name(r.status).into(),
            at_ms: r.updated_at_ms,
        });
    }

    async fn user(&self, state: &ApiState, user_id: &str) -> Result<Arc<UserRecord>, ApiError> {
        if let Some((u, at)) = self
            .users
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(user_id)
            && at.elapsed() < USER_CACHE
        {
            return Ok(u.clone());
        }
        let u =
            state.auth.store().get(user_id).await?.ok_or_else(|| {
                ApiError::Unauthenticated("the token's user no longer exists".into())
            })?;
        let u = Arc::new(u);
        self.users
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(user_id.to_owned(), (u.clone(), Instant::now()));
        Ok(u)
    }

    /// Applies a delivery receipt; unknown ids are parked by the store and
    /// counted, never an error for the caller.
    pub async fn on_receipt(&self, r: ReceiptUpdate) -> Result<ReceiptOutcome, ApiError> {
        let started = crate::trace::enabled().then(std::time::SystemTime::now);
        let out = self
            .store
            .apply_receipt(&r)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        self.observe(crate::lifecycle::Lifecycle::Receipt {
            update: &r,
            record: match &out {
                ReceiptOutcome::Applied(rec) | ReceiptOutcome::Duplicate(rec) => Some(rec),
                ReceiptOutcome::Parked | ReceiptOutcome::Orphaned => None,
            },
        });
        if let (Some(start), ReceiptOutcome::Applied(rec) | ReceiptOutcome::Duplicate(rec)) =
            (started, &out)
        {
            use opentelemetry::KeyValue;
            crate::trace::receipt(
                rec,
                start,
                vec![
                    KeyValue::new("smsgw.link", r.link.clone()),
                    KeyValue::new("smpp.smsc_message_id", r.smsc_message_id.clone()),
                    KeyValue::new("smpp.receipt_state", receipt_name(r.state)),
                    KeyValue::new("smsgw.status", status_name(rec.status)),
                    KeyValue::new(
                        "smsgw.duplicate",
                        matches!(out, ReceiptOutcome::Duplicate(_)),
                    ),
                ],
            );
        }
        if let ReceiptOutcome::Applied(rec) = &out {
            // The status before this receipt: the same record without it.
            let mut before = rec.clone();
            if let Some(seg) = before.segments.iter_mut().find(|s| {
                s.smsc_message_id.as_deref() == Some(r.smsc_message_id.as_str())
                    && rec.link.as_deref() == Some(r.link.as_str())
            }) {
                if let (Some(sent), Some(at)) = (seg.submitted_at_ms, seg.receipt_at_ms) {
                    self.stats
                        .receipt_latency(&r.link, Duration::from_millis(at.saturating_sub(sent)));
                }
                seg.receipt = None;
            }
            tracing::debug!(message_id = %rec.message_id, link = %r.link, state = receipt_name(r.state), status = status_name(rec.status), "receipt applied");
            self.changed(Some(before.derive_status()), rec);
        }
        Ok(out)
    }

    /// Remembers where a late submit_sm_resp would belong. Entries older
    /// than [`LATE_WINDOW`] are dropped once the map grows, so segments whose
    /// answer never comes cannot grow it without bound.
    fn remember_late(&self, key: PendingKey, value: (String, u16, Instant)) {
        let mut late = self.late.lock().unwrap_or_else(|p| p.into_inner());
        if late.len() >= 10_000 {
            late.retain(|_, (_, _, at)| at.elapsed() < LATE_WINDOW);
        }
        late.insert(key, value);
    }

    /// Settles a segment whose submit_sm_resp came after its timeout.
    pub async fn on_late_response(
        &self,
        link: &str,
        session: u32,
        sequence: u32,
        command_status: u32,
        smsc_message_id: Option<String>,
    ) -> Result<bool, ApiError> {
        let key = (link.to_owned(), session, sequence);
        let Some((message_id, seq, _)) = self
            .late
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key)
        else {
            return Ok(false);
        };
        let outcome = match (&smsc_message_id, command_status) {
            (Some(_), 0) => SubmitStatus::Accepted,
            _ => SubmitStatus::Rejected { command_status },
        };
        let rec = self
            .store
            .record_submit(&SubmitUpdate {
                message_id,
                seq,
                outcome,
                link: link.to_owned(),
                smsc_message_id,
                at_ms: unix_now_ms(),
            })
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        tracing::info!(message_id = %rec.message_id, link, "late submit_sm_resp settled a segment");
        // The status before: the same record with the segment still unknown.
        let mut before = rec.clone();
        if let Some(s) = before.segments.get_mut(usize::from(seq)) {
            s.submit = SubmitStatus::Unknown {
                reason: String::new(),
            };
        }
        self.changed(Some(before.derive_status()), &rec);
        Ok(true)
    }
}

/// The statistics scope of a stored message.
fn scope_of(r: &MessageRecord) -> crate::stats::Scope<'_> {
    crate::stats::Scope {
        app: &r.app_id,
        link: r.link.as_deref(),
        pool: match &r.target {
            Target::Pool(p) => Some(p),
            Target::Link(_) => None,
        },
        task: r.task_id.as_deref(),
    }
}

/// Validated, encoded message, ready to persist and submit.
struct Prepared {
    record: MessageRecord,
    outbound: OutboundMessage,
    rate: Option<u32>,
}

fn validate_destination(d: &str) -> Result<String, ApiError> {
    let digits = d.trim().trim_start_matches('+');
    if digits.is_empty() {
        return Err(refused("invalid_destination", "destination: is required"));
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) || !(4..=15).contains(&digits.len()) {
        return Err(refused(
            "invalid_destination",
            format!("destination: {d:?} is not an E.164 number (4 to 15 digits, optional '+')"),
        ));
    }
    Ok(digits.to_owned())
}

/// Source address and its TON/NPI: digits (up to 15), or an alphanumeric
/// sender of up to 11 characters (TON 5, NPI 0 unless given).
fn validate_source(s: &str, ton: Option<u8>, npi: Option<u8>) -> Result<Address, ApiError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(refused("invalid_source", "source: is required"));
    }
    let digits = s.trim_start_matches('+');
    if digits.bytes().all(|b| b.is_ascii_digit()) && !digits.is_empty() {
        if digits.len() > 15 {
            return Err(refused(
                "invalid_source",
                "source: a numeric sender has at most 15 digits",
            ));
        }
        return Ok(Address {
            addr: digits.to_owned(),
            ton: ton.unwrap_or(0),
            npi: npi.unwrap_or(0),
        });
    }
    if s.chars().count() > 11
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " -_.&".contains(c))
    {
        return Err(refused(
            "invalid_source",
            format!(
                "source: {s:?} is neither a number nor an alphanumeric sender of at most 11 characters"
            ),
        ));
    }
    Ok(Address {
        addr: s.to_owned(),
        ton: ton.unwrap_or(5),
        npi: npi.unwrap_or(0),
    })
}

fn new_message_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

async fn prepare(
    state: &ApiState,
    caller: &Caller,
    req: &SendRequest,
) -> Result<Prepared, ApiError> {
    let Caller::User {
        user_id, app_id, ..
    } = caller
    else {
        return Err(forbidden(
            "user_required",
            "sending needs a user's token, not the admin key",
        ));
    };
    let user = state.messages.user(state, user_id).await?;
    let config = state.config.load();
    let esme = req.esme.trim();
    if esme.is_empty() {
        return Err(refused(
            "invalid_esme",
            "esme: is required (a link or pool name)",
        ));
    }
    let target = if config.links.contains_key(esme) {
        Target::Link(esme.to_owned())
    } else if config.pools.contains_key(esme) {
        Target::Pool(esme.to_owned())
    } else {
        return Err(refused(
            "unknown_target",
            format!("esme: no link or pool named {esme:?}"),
        ));
    };
    if !user.allowed_targets.is_empty() && !user.allowed_targets.iter().any(|t| t == esme) {
        return Err(forbidden(
            "target_not_allowed",
            format!("esme: this app may not send through {esme:?}"),
        ));
    }
    let destination = validate_destination(&req.destination)?;
    let source = validate_source(&req.source, req.ston, req.snpi)?;
    if !user.allowed_sender_ids.is_empty() && !user.allowed_sender_ids.contains(&source.addr) {
        return Err(forbidden(
            "sender_not_allowed",
            format!("source: this app may not send as {:?}", source.addr),
        ));
    }
    let text = crate::text::validate_message(req.message.as_deref())
        .map_err(|e| refused("invalid_message", e.to_string()))?;
    let reference = state
        .messages
        .reference
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let encoded = encode_for(&config, esme, text, reference)?;
    let link_defaults = match &target {
        Target::Link(l) => config.links.get(l),
        Target::Pool(p) => config
            .pools
            .get(p)
            .and_then(|p| p.members.first())
            .and_then(|m| config.links.get(&m.link)),
    }
    .map(|l| (l.defaults.dest_ton, l.defaults.dest_npi))
    .unwrap_or((1, 1));
    let now = unix_now_ms();
    let transaction_id = if req.transaction_id.trim().is_empty() {
        uuid::Uuid::new_v4().to_string()
    } else {
        req.transaction_id.trim().to_owned()
    };
    if transaction_id.len() > 128 {
        return Err(refused(
            "invalid_transaction_id",
            "transaction_id: at most 128 characters",
        ));
    }
    let record = MessageRecord {
        message_id: new_message_id(),
        app_id: app_id.clone(),
        transaction_id,
        task_id: (!req.task_id.is_empty()).then(|| req.task_id.clone()),
        source: source.addr.clone(),
        destination: destination.clone(),
        encoding: encoded.encoding.as_str().to_owned(),
        target,
        link: None,
        created_at_ms: now,
        updated_at_ms: now,
        status: MessageStatus::Accepted,
        segments: (0..encoded.segments.len() as u16)
            .map(SegmentRecord::new)
            .collect(),
        // The accepting gateway holds the message while it submits (and
        // retries); a sweeper elsewhere may take it only once this lapses,
        // so the two never both submit it.
        claimed_by: Some("creator".into()),
        claim_until_ms: now + (SUBMIT_RETRY + Duration::from_secs(2)).as_millis() as u64,
        text: text.to_owned(),
        ton_npi: [
            source.ton,
            source.npi,
            req.dton.unwrap_or(link_defaults.0),
            req.dnpi.unwrap_or(link_defaults.1),
        ],
        // Set by the caller from the request's trace.
        traceparent: None,
        tracestate: None,
    };
    let outbound = outbound_from(&encoded, &record);
    Ok(Prepared {
        record,
        outbound,
        rate: user.rate,
    })
}

/// Encodes `text` by the rules of target `esme`, with its own error codes.
fn encode_for(
    config: &smsgw_crds::Snapshot,
    esme: &str,
    text: &str,
    reference: u16,
) -> Result<smsgw_text::EncodedMessage, ApiError> {
    let opts = crate::text::options_for(config, Some(esme))?;
    smsgw_text::encode(text, &opts, reference).map_err(|e| match e {
        smsgw_text::TextError::TooManySegments { segments, max } => refused(
            "too_many_segments",
            format!("message: needs {segments} segments, {esme:?} allows at most {max}"),
        ),
        other => refused("invalid_message", format!("message: {other}")),
    })
}

/// The SMPP form of an encoded message for a stored record's addresses.
fn outbound_from(encoded: &smsgw_text::EncodedMessage, rec: &MessageRecord) -> OutboundMessage {
    let payload = matches!(encoded.concat, smsgw_text::Concat::MessagePayload);
    let [ston, snpi, dton, dnpi] = rec.ton_npi;
    OutboundMessage {
        source: Address {
            addr: rec.source.clone(),
            ton: ston,
            npi: snpi,
        },
        destination: Address {
            addr: rec.destination.clone(),
            ton: dton,
            npi: dnpi,
        },
        data_coding: encoded.data_coding,
        udhi: encoded.udhi,
        registered_delivery: true,
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
    }
}

/// Claims messages left `accepted` longer than `stale` (their pod died, or
/// no link was up) and submits them. The claim is atomic in the store, so
/// of several pods sweeping at once exactly one submits each message.
pub async fn sweep(
    state: &ApiState,
    owner: &str,
    stale: Duration,
    limit: usize,
) -> Result<usize, ApiError> {
    let now = unix_now_ms();
    let claimed = state
        .messages
        .store
        .claim_stale_accepted(&smsgw_core::messages::ClaimRequest {
            owner: owner.to_owned(),
            created_before_ms: now.saturating_sub(stale.as_millis() as u64),
            now_ms: now,
            lease: stale.max(Duration::from_secs(30)),
            limit,
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let n = claimed.len();
    for rec in claimed {
        let target = rec.target.name().to_owned();
        let config = state.config.load();
        let reference = state
            .messages
            .reference
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let encoded = match encode_for(&config, &target, &rec.text, reference) {
            Ok(e) if e.segments.len() == rec.segments.len() => e,
            Ok(_) | Err(_) => {
                tracing::warn!(message_id = %rec.message_id, %target, "stale message no longer encodes as it did; left for review");
                continue;
            }
        };
        tracing::info!(message_id = %rec.message_id, %target, "sweeper submitting a stale accepted message");
        let msg = outbound_from(&encoded, &rec);
        submit(state, rec, msg).await?;
    }
    Ok(n)
}

/// Sends one message: validation, idempotent persistence, submission (in
/// the background unless `wait_for_submit`).
///
/// `trace` is the request's trace (the client's context and, when spans
/// are exported, the API span); it is finished here with the outcome.
pub async fn send(
    state: &ApiState,
    caller: &Caller,
    req: SendRequest,
    trace: crate::trace::RequestTrace,
) -> Result<SendResponse, ApiError> {
    let target = req.esme.trim().to_owned();
    let task = req.task_id.clone();
    let transaction_id = req.transaction_id.trim().to_owned();
    let destination = req.destination.clone();
    let result = send_inner(state, caller, req, &trace).await;
    if let (Err(e), Caller::User { app_id, .. }) = (&result, caller)
        && !matches!(e, ApiError::Internal(_))
    {
        state
            .messages
            .observe(crate::lifecycle::Lifecycle::Refused {
                app_id,
                transaction_id: &transaction_id,
                destination: &destination,
                reason: e.code(),
            });
        let config = state.config.load();
        let scope = crate::stats::Scope {
            app: app_id,
            link: config
                .links
                .contains_key(&target)
                .then_some(target.as_str()),
            pool: config
                .pools
                .contains_key(&target)
                .then_some(target.as_str()),
            task: Some(&task),
        };
        state.messages.stats.rejected(&scope, e.code());
        tracing::info!(
            target: MESSAGE_LOG,
            event = "refused",
            message_id = "",
            transaction_id = %transaction_id,
            app_id = %app_id,
            esme = %target,
            reason = e.code(),
            trace_id = %trace.trace_id(),
            "message refused"
        );
    }
    if crate::trace::enabled() {
        if let Ok(r) = &result {
            trace.set(opentelemetry::KeyValue::new(
                "smsgw.message_id",
                r.message_id.clone(),
            ));
        }
        trace.finish(
            result
                .as_ref()
                .err()
                .map(|e| (e.code(), e.http_status().as_u16())),
        );
    }
    result
}

async fn send_inner(
    state: &ApiState,
    caller: &Caller,
    req: SendRequest,
    trace: &crate::trace::RequestTrace,
) -> Result<SendResponse, ApiError> {
    let mut p = prepare(state, caller, &req).await?;
    (p.record.traceparent, p.record.tracestate) = trace.carrier();
    let esme = req.esme.trim().to_owned();
    let step = trace.step("smsgw.rate_limit");
    limit(state, &p, &esme, req.wait_for_capacity).await?;
    drop(step);
    let step = (!req.strategy.trim().is_empty())
        .then(|| trace.step("smsgw.contact_policy"))
        .flatten();
    let reservation = check_policy(state, &p.record, &req.strategy).await?;
    drop(step);
    let step = trace.step("smsgw.persist");
    let created = state.messages.store.create(&p.record).await;
    drop(step);
    let created = match created {
        Ok(c) => c,
        Err(e) => {
            release(state, reservation).await;
            return Err(ApiError::Internal(e.to_string()));
        }
    };
    let rec = match created {
        CreateOutcome::Existing(existing) => {
            // A repeat counts against no contact policy.
            release(state, reservation).await;
            return Ok(SendResponse {
                link: existing.link.clone(),
                segment_info: existing.segments.iter().map(segment_view).collect(),
                duplicate: true,
                ..accepted_response(&existing, esme)
            });
        }
        CreateOutcome::Created(rec) => rec,
    };
    state.messages.changed(None, &rec);
    state
        .messages
        .observe(crate::lifecycle::Lifecycle::Accepted {
            record: &rec,
            strategy: req.strategy.trim(),
        });
    if req.wait_for_submit {
        let rec = submit(state, rec, p.outbound).await?;
        return Ok(SendResponse {
            success: !matches!(rec.status, MessageStatus::Rejected),
            link: rec.link.clone(),
            segment_info: rec.segments.iter().map(segment_view).collect(),
            ..accepted_response(&rec, esme)
        });
    }
    let response = accepted_response(&rec, esme);
    let st = state.clone();
    let permit = state
        .messages
        .submit_slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = submit_retrying(&st, rec, p.outbound).await {
            tracing::warn!(error = %e, "background submission failed; the sweeper will retry");
        }
        drop(permit);
    });
    Ok(response)
}

/// [`submit`], retried for a few seconds while nothing could be sent (every
/// window full, links rebinding), before leaving the message to the sweeper.
async fn submit_retrying(
    state: &ApiState,
    rec: MessageRecord,
    msg: OutboundMessage,
) -> Result<MessageRecord, ApiError> {
    let target = rec.target.name().to_owned();
    let span = crate::trace::SubmitSpan::start(&rec);
    let mut delay = Duration::from_millis(20);
    let deadline = Instant::now() + SUBMIT_RETRY;
    loop {
        match state.links.submit(&target, msg.clone()).await {
            Ok(submission) => return record_submission(state, rec, submission, span).await,
            Err(SubmitError::Unavailable(reason)) if Instant::now() < deadline => {
                tracing::debug!(message_id = %rec.message_id, %target, %reason, "not submitted yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(500));
            }
            Err(SubmitError::Unavailable(reason)) => {
                tracing::warn!(message_id = %rec.message_id, %target, %reason, "not submitted; left for the sweeper");
                if let Some(s) = span {
                    s.finish(None, Some(&reason));
                }
                return Ok(rec);
            }
            Err(e) => {
                if let Some(s) = span {
                    s.finish(None, Some(&e.to_string()));
                }
                return Err(ApiError::Internal(e.to_string()));
            }
        }
    }
}

/// Takes the message's segments from the app's and the target's rate
/// limits (one limiter call for all keys); over the limit → 429 with a
/// retry-after, or a wait for capacity when asked.
async fn limit(state: &ApiState, p: &Prepared, esme: &str, wait: bool) -> Result<(), ApiError> {
    use smsgw_core::limits::{RateDecision, RateKey, RateLimit};
    let app = RateKey::app(&p.record.app_id);
    if let Some(rate) = p.rate {
        // Apps registered through the API carry their rate on the record.
        let stale = {
            let mut known = state
                .messages
                .app_limits
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match known.get(&p.record.app_id) {
                Some((r, at)) if *r == rate && at.elapsed() < USER_CACHE => false,
                _ => {
                    known.insert(p.record.app_id.clone(), (rate, Instant::now()));
                    true
                }
            }
        };
        if stale {
            let _ = state
                .limiter
                .set_limit(&app, Some(RateLimit::new(f64::from(rate), rate)))
                .await;
        }
    }
    let target = match &p.record.target {
        Target::Link(_) => RateKey::link(esme),
        Target::Pool(_) => RateKey::pool(esme),
    };
    let max_wait = if wait { CAPACITY_WAIT } else { Duration::ZERO };
    match state
        .limiter
        .acquire(&[app, target], p.record.segments.len() as u32, max_wait)
        .await
    {
        Ok(RateDecision::Allowed { wait }) => {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            Ok(())
        }
        Ok(RateDecision::Limited { retry_after, key }) => Err(ApiError::RateLimited {
            retry_after_secs: retry_after.as_secs_f64().ceil().max(1.0) as u64,
            scope: format!("{:?} {:?}", key.scope, key.name).to_lowercase(),
        }),
        Ok(_) => Ok(()),
        Err(e) => Err(ApiError::Unavailable(format!(
            "rate limiter unavailable: {e}"
        ))),
    }
}

/// Runs the contact-policy strategy, if the request names one. A refusal
/// carries the verdict's state as its error code (`daily_cp`, …).
async fn check_policy(
    state: &ApiState,
    rec: &MessageRecord,
    strategy: &str,
) -> Result<Option<smsgw_core::policy::Reservation>, ApiError> {
    use smsgw_core::policy::{PolicyError, PolicyRequest, PolicyState};
    let strategy = strategy.trim();
    if strategy.is_empty() {
        return Ok(None);
    }
    let Some(engine) = &state.policy else {
        return Err(refused(
            "unknown_strategy",
            format!("strategy: no contact policy {strategy:?} is configured"),
        ));
    };
    let req = PolicyRequest {
        strategy,
        app_id: &rec.app_id,
        source: &rec.source,
        destination: &rec.destination,
        text: &rec.text,
        destination_time_zone: None,
    };
    let started = std::time::Instant::now();
    let decision = engine.check(&req).await;
    state
        .metrics
        .policy_duration
        .observe(started.elapsed().as_secs_f64());
    let outcome = match &decision {
        Ok(d) if d.verdict.pass => Some("pass"),
        Ok(d) => Some(match d.verdict.state {
            PolicyState::DailyCp => "daily_cp",
            PolicyState::WeeklyCp => "weekly_cp",
            PolicyState::Blacklist => "blacklist",
            PolicyState::Duplicate => "duplicate",
            PolicyState::QuietHours => "quiet_hours",
            _ => "policy_refused",
        }),
        // Unknown strategies and bad input are refusals, not decisions.
        Err(PolicyError::UnknownStrategy(_) | PolicyError::InvalidDestination(_)) => None,
        Err(_) => Some("error"),
    };
    if let Some(outcome) = outcome {
        state.metrics.observe_policy(strategy, outcome);
    }
    match decision {
        Ok(d) if d.verdict.pass => Ok(d.reservation),
        Ok(_) => {
            let code = outcome.unwrap_or("policy_refused");
            tracing::info!(app_id = %rec.app_id, strategy, state = code, "refused by contact policy");
            Err(forbidden(
                code,
                format!("contact policy {strategy:?} refused the message: {code}"),
            ))
        }
        Err(PolicyError::UnknownStrategy(s)) => Err(refused(
            "unknown_strategy",
            format!("strategy: no contact policy {s:?} is configured"),
        )),
        Err(PolicyError::InvalidDestination(d)) => Err(refused(
            "invalid_destination",
            format!("destination: {d:?} is not an E.164 number"),
        )),
        Err(e) => Err(ApiError::Unavailable(format!(
            "contact policy unavailable: {e}"
        ))),
    }
}

async fn release(state: &ApiState, reservation: Option<smsgw_core::policy::Reservation>) {
    if let (Some(engine), Some(r)) = (&state.policy, reservation)
        && let Err(e) = engine.release(&r).await
    {
        tracing::warn!(error = %e, "contact-policy count not taken back");
    }
}

/// Submits a persisted message and records each segment's outcome. When
/// nothing could be sent (no link up), the message stays `accepted` for
/// the sweeper.
async fn submit(
    state: &ApiState,
    rec: MessageRecord,
    msg: OutboundMessage,
) -> Result<MessageRecord, ApiError> {
    let target = rec.target.name().to_owned();
    let span = crate::trace::SubmitSpan::start(&rec);
    let submission = match state.links.submit(&target, msg).await {
        Ok(s) => s,
        Err(e) => {
            if let Some(s) = span {
                s.finish(None, Some(&e.to_string()));
            }
            return match e {
                SubmitError::Unavailable(reason) => {
                    tracing::warn!(message_id = %rec.message_id, %target, %reason, "not submitted; left for the sweeper");
                    Ok(rec)
                }
                e => Err(ApiError::Internal(e.to_string())),
            };
        }
    };
    record_submission(state, rec, submission, span).await
}

/// Records the outcome of each segment of a submission.
async fn record_submission(
    state: &ApiState,
    rec: MessageRecord,
    submission: smsgw_core::links::Submission,
    span: Option<crate::trace::SubmitSpan>,
) -> Result<MessageRecord, ApiError> {
    let before = rec.status;
    let mut latest = rec;
    for (seq, result) in submission.results.into_iter().enumerate() {
        let seq = seq as u16;
        let (outcome, id) = match result {
            SegmentResult::Accepted { smsc_message_id } => {
                (SubmitStatus::Accepted, Some(smsc_message_id))
            }
            SegmentResult::Rejected { command_status } => {
                (SubmitStatus::Rejected { command_status }, None)
            }
            SegmentResult::Unknown { reason, pending } => {
                if let Some((session, sequence)) = pending {
                    state.messages.remember_late(
                        (submission.link.clone(), session, sequence),
                        (latest.message_id.clone(), seq, Instant::now()),
                    );
                }
                (SubmitStatus::Unknown { reason }, None)
            }
            SegmentResult::NotSent { reason } => (
                SubmitStatus::Unknown {
                    reason: format!("not sent: {reason}"),
                },
                None,
            ),
        };
        let error = submit_reason(&outcome);
        let traced = span.as_ref().map(|_| {
            let name = match &outcome {
                SubmitStatus::Accepted => "accepted",
                SubmitStatus::Rejected { .. } => "rejected",
                SubmitStatus::Unknown { .. } | SubmitStatus::Pending => "unknown",
            };
            let mut attrs = Vec::new();
            if let Some(id) = &id {
                attrs.push(opentelemetry::KeyValue::new(
                    "smpp.smsc_message_id",
                    id.clone(),
                ));
            }
            if let SubmitStatus::Rejected { command_status } = &outcome {
                attrs.push(opentelemetry::KeyValue::new(
                    "smpp.command_status",
                    i64::from(*command_status),
                ));
            }
            if let Some(e) = &error {
                attrs.push(opentelemetry::KeyValue::new("smsgw.reason", e.clone()));
            }
            (name, attrs)
        });
        let recorded = state
            .messages
            .store
            .record_submit(&SubmitUpdate {
                message_id: latest.message_id.clone(),
                seq,
                outcome,
                link: submission.link.clone(),
                smsc_message_id: id.clone(),
                at_ms: unix_now_ms(),
            })
            .await
            .map_err(|e| ApiError::Internal(e.to_string()));
        if let (Some(s), Some((name, attrs))) = (&span, traced) {
            s.segment(seq, name, attrs);
        }
        latest = match recorded {
            Ok(r) => r,
            Err(e) => {
                if let Some(s) = span {
                    s.finish(Some(&submission.link), Some(&e.to_string()));
                }
                return Err(e);
            }
        };
        state
            .messages
            .observe(crate::lifecycle::Lifecycle::Submitted {
                record: &latest,
                link: &submission.link,
                segment: seq,
                smsc_message_id: id.as_deref(),
                error,
            });
    }
    if latest
        .segments
        .iter()
        .any(|s| s.submit == SubmitStatus::Accepted)
    {
        state.messages.stats.submitted(&scope_of(&latest));
    }
    if let Some(s) = span {
        s.finish(Some(&submission.link), None);
    }
    state.messages.changed(Some(before), &latest);
    Ok(latest)
}

/// A message of the caller's app, by message id or transaction id.
pub async fn info(
    state: &ApiState,
    caller: &Caller,
    message_id: Option<&str>,
    transaction_id: Option<&str>,
) -> Result<MessageView, ApiError> {
    let store = &state.messages.store;
    let rec = match (
        message_id.filter(|s| !s.is_empty()),
        transaction_id.filter(|s| !s.is_empty()),
        caller,
    ) {
        (Some(id), _, _) => store.get(id).await,
        (None, Some(tx), Caller::User { app_id, .. }) => store.by_transaction(app_id, tx).await,
        (None, Some(_), Caller::AdminKey) => {
            return Err(ApiError::InvalidField {
                field: "transaction_id",
                reason: "needs a user's token".into(),
            });
        }
        (None, None, _) => {
            return Err(ApiError::InvalidField {
                field: "message_id",
                reason: "give message_id or transaction_id".into(),
            });
        }
    }
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    match (rec, caller) {
        (Some(r), Caller::User { app_id, .. }) if &r.app_id == app_id => Ok(message_view(&r)),
        (Some(r), Caller::AdminKey) => Ok(message_view(&r)),
        _ => Err(ApiError::NotFound("no such message".into())),
    }
}
