//! The life of a message, over the core traits and nothing else: no
//! transport, no SMPP, no store backend.
//!
//! ```text
//! SendRequest ─normalize─▶ accept (target, addresses, text, rate limits,
//!     contact policy, persist) ─▶ submit (LinkControl, retried, then the
//!     sweeper) ─▶ receipts / late responses ─▶ AppEvent (WatchEvents,
//!     webhooks) + Lifecycle (journal)
//! ```
//!
//! [`Messaging`] holds what the stages need (a `MessageStore`, a
//! `UserStore`, a `RateLimiter`, an optional `PolicyEngine`, the gateway's
//! `LinkControl` and the configuration in force). The REST and gRPC
//! servers (`smsgw-api`) authenticate, call it, and turn its
//! [`MessagingError`]s into HTTP codes and gRPC statuses; the gateway feeds
//! it what the links receive.
#![warn(missing_docs)]

mod accept;
mod claims;
mod error;
pub mod lifecycle;
pub mod metrics;
pub mod quotas;
mod receipts;
pub mod request;
mod routing;
mod service;
pub mod stats;
mod submit;
pub mod text;
pub mod trace;
pub mod views;

pub use claims::{CLAIM_CACHE, CLAIM_CACHE_ENTRIES};
pub use error::MessagingError;
pub use receipts::{MobileOriginated, RECORDING_ENTRIES};
pub use request::{SendRequest, SentAt};
pub use service::{
    DEFAULT_BACKGROUND_SUBMISSIONS, DEFAULT_SUBMIT_RETRY, MESSAGE_LOG, Messaging, MessagingBuilder,
    Sender, USER_CACHE_ENTRIES, Unlimited,
};
pub use submit::SWEEP_BATCH;
pub use views::{AppEvent, MessageView, SegmentView, SendResponse, Viewer};
