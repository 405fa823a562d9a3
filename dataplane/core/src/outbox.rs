//! The notification outbox: every event an app is told about (a status
//! change, an inbound message) is appended here, durably, by the step that
//! caused it, and removed only once its receiver has acknowledged it.
//!
//! Delivery is at least once: an event is handed out again after a restart
//! (embedded backend) or when the pod that held it dies (shared backend),
//! so receivers deduplicate on [`OutboxEvent::event_id`], which is stable:
//! the same change always yields the same id.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Event kinds an app can choose from (`events` of its webhook settings or
/// of a send's callback): the status words of the APIs, and `mo`.
pub const EVENT_KINDS: [&str; 6] = [
    "pending",
    "delivered",
    "failed",
    "rejected",
    "unknown",
    "mo",
];

/// The final statuses, selected together by the mask word `final`.
pub const FINAL_KINDS: [&str; 3] = ["delivered", "failed", "rejected"];

/// A per-message destination that replaces the app's webhook for the
/// events of that message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Callback {
    /// `http(s)://…` URL, checked like the app's webhook.
    pub url: String,
    /// Event kinds wanted (see [`EventMask`]); `None`: every kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<EventMask>,
}

/// A set of event kinds ([`EVENT_KINDS`]), `final` standing for
/// [`FINAL_KINDS`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct EventMask(pub Vec<String>);

/// Why an event mask is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event kind {0:?}; use pending, delivered, failed, rejected, unknown, mo or final")]
pub struct UnknownEventKind(pub String);

impl EventMask {
    /// A mask from words, checking each (lower-cased, `final` expanded).
    pub fn parse<S: AsRef<str>>(words: &[S]) -> Result<Self, UnknownEventKind> {
        let mut out: Vec<String> = Vec::new();
        for w in words {
            let w = w.as_ref().trim().to_ascii_lowercase();
            let add: Vec<&str> = if w == "final" {
                FINAL_KINDS.to_vec()
            } else if let Some(k) = EVENT_KINDS.iter().find(|k| **k == w) {
                vec![*k]
            } else {
                return Err(UnknownEventKind(w));
            };
            for k in add {
                if !out.iter().any(|o| o == k) {
                    out.push(k.to_owned());
                }
            }
        }
        Ok(Self(out))
    }

    /// Whether events of `kind` pass.
    pub fn wants(&self, kind: &str) -> bool {
        self.0
            .iter()
            .any(|k| k == kind || (k == "final" && FINAL_KINDS.contains(&kind)))
    }
}

/// Whether an optional mask (`None`: everything) lets `kind` through.
pub fn wanted(mask: Option<&EventMask>, kind: &str) -> bool {
    mask.is_none_or(|m| m.wants(kind))
}

/// One notification, as appended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEvent {
    /// Stable id: the same change always gets the same id, so a receiver
    /// can drop what it has seen.
    pub event_id: String,
    /// The app it belongs to.
    pub app_id: String,
    /// Ordering key: events with one key are delivered in append order
    /// (the message id; an inbound message's own id).
    pub key: String,
    /// One of [`EVENT_KINDS`].
    pub kind: String,
    /// The message's own destination, replacing the app's webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<Callback>,
    /// The JSON object the receiver gets (it carries `event_id`).
    pub body: String,
    /// When it was appended, Unix ms (retries stop a configured time after).
    pub created_at_ms: u64,
}

/// An event handed to a deliverer, with its place in the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimed {
    /// Backend position, given back to [`Outbox::ack`].
    pub position: String,
    /// The event.
    pub event: OutboxEvent,
}

/// An event as an app reads it back (pull): its place in the app's log
/// and its JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logged {
    /// Opaque cursor: read from here on to get the events after it.
    pub cursor: String,
    /// The JSON object a webhook would have got.
    pub body: String,
}

/// Why an outbox operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// The backend failed (I/O, connection, corruption).
    #[error("outbox backend failed: {0}")]
    Backend(String),
    /// A position or cursor given back is not one this backend hands out.
    #[error("bad outbox position {0:?}")]
    BadPosition(String),
}

/// Durable, at-least-once event queue shared by the pods using the same
/// backend.
#[async_trait::async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Appends events durably (they survive a crash once this returns),
    /// in order.
    async fn append(&self, events: &[OutboxEvent]) -> Result<(), OutboxError>;

    /// Up to `max` events not yet acknowledged and not handed to a live
    /// deliverer, oldest first (per ordering key); waits up to `wait` when
    /// there are none. `consumer` names this pod: a shared backend hands
    /// the events a dead consumer held to another one.
    async fn claim(
        &self,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Claimed>, OutboxError>;

    /// Removes delivered (or dropped) events.
    async fn ack(&self, positions: &[String]) -> Result<(), OutboxError>;

    /// An app's events after `after` (from the oldest kept without it),
    /// at most `limit`, in append order. Every event appended is in its
    /// app's log for the retention period, whatever its delivery.
    async fn read(
        &self,
        app_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Logged>, OutboxError>;

    /// `consumer` stops: a shared backend hands what it held to another
    /// consumer at once instead of after its lease.
    async fn release(&self, _consumer: &str) -> Result<(), OutboxError> {
        Ok(())
    }

    /// Keeps the events `consumer` holds its own (a shared backend hands
    /// the events of a consumer that stops calling this to another one).
    async fn heartbeat(&self, _consumer: &str) -> Result<(), OutboxError> {
        Ok(())
    }
}

/// The deterministic id of the event telling that `message_id` reached
/// `status` (a status word of [`EVENT_KINDS`]).
pub fn status_event_id(message_id: &str, status: &str) -> String {
    format!("ev_{message_id}_{status}")
}

/// Default time an undeliverable event is retried before it is dropped.
pub const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(86_400);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_expands_to_the_final_statuses_and_unknown_words_are_refused() {
        let m = EventMask::parse(&["final", "mo"]).unwrap();
        assert!(m.wants("delivered") && m.wants("failed") && m.wants("rejected") && m.wants("mo"));
        assert!(!m.wants("pending") && !m.wants("unknown"));
        assert_eq!(
            EventMask::parse(&["delivrd"]),
            Err(UnknownEventKind("delivrd".into()))
        );
        assert!(wanted(None, "pending"));
    }
}
