//! What comes back from the SMSCs: delivery receipts, submit_sm_resp that
//! arrive after their timeout, and mobile-originated messages.

use crate::MessagingError;
use crate::claims::MoOwner;
use crate::lifecycle::Lifecycle;
use crate::service::Messaging;
use crate::views::{AppEvent, receipt_name, status_name};
use smsgw_core::bounded::MemoryUse;
use smsgw_core::messages::{
    MessageStoreError, ReceiptOutcome, ReceiptUpdate, SubmitStatus, SubmitUpdate, unix_now_ms,
};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// SMSC ids (by link) this pod may be recording at once
/// (`smsgw_memory_*{structure="recording_submits"}`): past it a
/// submission's receipts are not held for it and may be parked, as
/// without the hold.
pub const RECORDING_ENTRIES: usize = 65_536;

/// How long a receipt waits at most for the record of its submission.
const RECORDING_WAIT: Duration = Duration::from_secs(5);

/// The SMSC ids (by link) whose `submit_sm_resp` this pod is recording
/// now. A receipt for one of them waits until that record and its event
/// are written, then finds its mapping: under load most receipts arrive
/// before their submission is stored (an SMSC may report within
/// milliseconds of its answer; a shared store takes longer), and a
/// receipt parked costs the store a lookup that misses, the parked
/// receipt and its pick-up (BENCHMARKS.md, session 17). Waiting also keeps
/// the events in order: `pending` before `delivered`.
#[derive(Default)]
pub(crate) struct Recording {
    ids: Mutex<HashMap<(String, String), watch::Receiver<()>>>,
    /// Ids not held because the map was full.
    evicted: AtomicU64,
}

/// Ids being recorded by one submission; dropping it releases the
/// receipts waiting for them.
pub(crate) struct RecordingGuard<'a> {
    recording: &'a Recording,
    keys: Vec<(String, String)>,
    rx: watch::Receiver<()>,
    // Dropped after `drop` has removed the keys: wakes the waiters.
    _done: watch::Sender<()>,
}

impl Recording {
    fn ids(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), watch::Receiver<()>>> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks `ids` of `link` as being recorded until the guard is dropped.
    pub(crate) fn start<'i>(
        &self,
        link: &str,
        ids: impl Iterator<Item = &'i str>,
    ) -> RecordingGuard<'_> {
        let (done, rx) = watch::channel(());
        let mut keys = Vec::new();
        let mut map = self.ids();
        for id in ids {
            if map.len() >= RECORDING_ENTRIES {
                self.evicted.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let key = (link.to_owned(), id.to_owned());
            map.insert(key.clone(), rx.clone());
            keys.push(key);
        }
        RecordingGuard {
            recording: self,
            keys,
            rx,
            _done: done,
        }
    }

    /// Waits (at most [`RECORDING_WAIT`]) while this pod records the
    /// submission of `smsc_message_id` on `link`; false at once when it
    /// does not.
    async fn wait(&self, link: &str, smsc_message_id: &str) -> bool {
        let rx = self
            .ids()
            .get(&(link.to_owned(), smsc_message_id.to_owned()))
            .cloned();
        let Some(mut rx) = rx else {
            return false;
        };
        // Nothing is ever sent: the sender's drop ends the wait.
        let _ = tokio::time::timeout(RECORDING_WAIT, rx.changed()).await;
        true
    }

    /// Entries held now, for the `smsgw_memory_*` gauges.
    pub(crate) fn memory(&self) -> MemoryUse {
        let map = self.ids();
        let bytes = map
            .keys()
            .map(|(l, i)| (l.len() + i.len() + 96) as u64)
            .sum();
        MemoryUse {
            structure: "recording_submits",
            entries: map.len() as u64,
            bytes,
            capacity: RECORDING_ENTRIES as u64,
            evicted: self.evicted.load(Ordering::Relaxed),
        }
    }
}

impl Drop for RecordingGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.recording.ids();
        for key in self.keys.drain(..) {
            // Another submission may hold the same id now (an SMSC reusing
            // ids): leave its entry.
            if map.get(&key).is_some_and(|rx| rx.same_channel(&self.rx)) {
                map.remove(&key);
            }
        }
    }
}

/// A mobile-originated message as a link received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MobileOriginated {
    /// Link it arrived on.
    pub link: String,
    /// Sender's address.
    pub source: String,
    /// Recipient's address (one of a User's `sourceAddresses`, or an
    /// address an app claimed).
    pub destination: String,
    /// SMPP data_coding of `payload`.
    pub data_coding: u8,
    /// The user data (the parts' payloads after their headers, in order).
    pub payload: Vec<u8>,
    /// The text as the link decoded it, or why it cannot be read.
    pub text: Result<String, smsgw_text::TextError>,
    /// False when parts of a concatenated message never arrived and the
    /// link stopped waiting: `payload` and `text` hold the parts that did.
    pub complete: bool,
}

impl Messaging {
    /// Applies a delivery receipt; unknown ids are parked by the store and
    /// counted, never an error for the caller.
    pub async fn on_receipt(&self, r: ReceiptUpdate) -> Result<ReceiptOutcome, MessagingError> {
        let started = crate::trace::enabled().then(std::time::SystemTime::now);
        if self.recording.wait(&r.link, &r.smsc_message_id).await {
            self.metrics.receipts_held.inc();
        }
        let change = self
            .store
            .apply_receipt_change(&r)
            .await
            .map_err(|e| MessagingError::Internal(e.to_string()))?;
        let out = &change.outcome;
        self.observe(Lifecycle::Receipt {
            update: &r,
            record: match out {
                ReceiptOutcome::Applied(rec) | ReceiptOutcome::Duplicate(rec) => Some(rec),
                ReceiptOutcome::Parked | ReceiptOutcome::Orphaned => None,
            },
        });
        if let (Some(start), ReceiptOutcome::Applied(rec) | ReceiptOutcome::Duplicate(rec)) =
            (started, out)
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
        if let (ReceiptOutcome::Applied(rec), Some(before)) = (out, change.before) {
            if rec.link.as_deref() == Some(r.link.as_str())
                && let Some(seg) = rec
                    .segments
                    .iter()
                    .find(|s| s.smsc_message_id.as_deref() == Some(r.smsc_message_id.as_str()))
                && let (Some(sent), Some(at)) = (seg.submitted_at_ms, seg.receipt_at_ms)
            {
                self.stats
                    .receipt_latency(&r.link, Duration::from_millis(at.saturating_sub(sent)));
            }
            tracing::debug!(message_id = %rec.message_id, link = %r.link, state = receipt_name(r.state), status = status_name(rec.status), "receipt applied");
            self.changed(Some(before), rec);
            // Only once the event is in the outbox may the SMSC forget the
            // receipt (an error here asks it to deliver it again).
            self.notify(before, rec, false).await?;
        } else if let ReceiptOutcome::Duplicate(rec) = out {
            self.notify(rec.status, rec, true).await?;
        }
        Ok(change.outcome)
    }

    /// Settles a segment whose submit_sm_resp came after its timeout.
    /// `segment` is what the link returned with the answer: the message's
    /// [`OutboundMessage::tag`] (its id) and the segment's index; `None`
    /// when the link had forgotten the submit (past its window or bound).
    /// False when no segment was settled (no tag, or the message is no
    /// longer stored): counted in [`Messaging::late_unmatched`], the
    /// segment stays `unknown`.
    ///
    /// [`OutboundMessage::tag`]: smsgw_core::links::OutboundMessage::tag
    pub async fn on_late_response(
        &self,
        link: &str,
        segment: Option<(&str, u16)>,
        command_status: u32,
        smsc_message_id: Option<String>,
    ) -> Result<bool, MessagingError> {
        let unmatched = || {
            self.late_unmatched
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(false)
        };
        let Some((message_id, seq)) = segment else {
            return unmatched();
        };
        let message_id = message_id.to_owned();
        let outcome = match (&smsc_message_id, command_status) {
            (Some(_), 0) => SubmitStatus::Accepted,
            _ => SubmitStatus::Rejected { command_status },
        };
        let change = self
            .store
            .record_submit_change(&SubmitUpdate {
                message_id,
                seq,
                outcome,
                link: link.to_owned(),
                smsc_message_id,
                at_ms: unix_now_ms(),
                resubmitted: false,
            })
            .await;
        let change = match change {
            Ok(c) => c,
            Err(MessageStoreError::NotFound { .. } | MessageStoreError::NoSuchSegment { .. }) => {
                return unmatched();
            }
            Err(e) => return Err(MessagingError::Internal(e.to_string())),
        };
        tracing::info!(message_id = %change.record.message_id, link, "late submit_sm_resp settled a segment");
        self.changed(Some(change.before), &change.record);
        self.notify(change.before, &change.record, false).await?;
        Ok(true)
    }

    /// Delivers a mobile-originated message, decoded to text, to the app
    /// owning its destination address (a User's `sourceAddresses` first,
    /// then an app's approved claim of the text's first word on it, then
    /// of the bare address); returns
    /// that app's id once its event is in the outbox, `None` when no app
    /// owns the address (dropped and logged). An error means it was not
    /// kept (the owner could not be looked up, the outbox append failed):
    /// the link must not tell the SMSC it was received, so that the SMSC
    /// delivers it again. A text that
    /// cannot be read (a national language without tables here, a
    /// malformed header) reaches the app as the reason and the raw user
    /// data, never as a guess; a data_coding the gateway does not know is
    /// passed as UTF-8 (lossy).
    pub async fn on_mobile_originated(
        &self,
        m: MobileOriginated,
    ) -> Result<Option<String>, MessagingError> {
        let (text, text_error) = match &m.text {
            Ok(t) => (t.clone(), None),
            Err(smsgw_text::TextError::UnsupportedDataCoding { .. }) => {
                (String::from_utf8_lossy(&m.payload).into_owned(), None)
            }
            Err(e) => {
                tracing::info!(link = %m.link, error = %e, "mobile-originated text cannot be decoded");
                (String::new(), Some(e.to_string()))
            }
        };
        let undecoded_payload = text_error.is_some().then(|| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(&m.payload)
        });
        let app_id = match self.mo_owner(&m.destination, &text).await {
            Some(MoOwner::Claimed(c)) => c.app_id.clone(),
            Some(MoOwner::Managed(email)) => match self.users.by_email(&email).await {
                Ok(Some(u)) => u.app_id,
                Ok(None) => return Ok(None),
                // The caller logs it (once) and has the SMSC deliver again.
                Err(e) => return Err(MessagingError::Users(e)),
            },
            None => {
                tracing::info!(link = %m.link, "mobile-originated message to an address no app owns");
                return Ok(None);
            }
        };
        let (link, complete) = (m.link.clone(), m.complete);
        let ev = AppEvent::MobileOriginated {
            app_id: app_id.clone(),
            link: m.link,
            source: m.source,
            destination: m.destination,
            message: text,
            at_ms: unix_now_ms(),
            text_error,
            undecoded_payload,
            data_coding: m.data_coding,
            incomplete: !m.complete,
        };
        if let Some(outbox) = &self.outbox {
            let event_id = format!("ev_mo_{}", uuid::Uuid::now_v7().simple());
            let out = smsgw_core::outbox::OutboxEvent {
                body: crate::service::event_body(&ev, &event_id),
                key: event_id.clone(),
                event_id,
                app_id: app_id.clone(),
                kind: "mo".into(),
                callback: None,
                created_at_ms: unix_now_ms(),
            };
            if let Err(e) = outbox.append(std::slice::from_ref(&out)).await {
                // The caller logs it (once) and has the SMSC deliver again.
                return Err(MessagingError::Internal(format!(
                    "appending the event for app {app_id} to the outbox: {e}"
                )));
            }
        }
        tracing::info!(%link, %app_id, complete, "mobile-originated message delivered to its app");
        self.publish(ev);
        Ok(Some(app_id))
    }
}
