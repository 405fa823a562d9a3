//! Every state change of a message, for an observer such as the gateway's
//! S3 journal. Unlike the [`crate::AppEvent`] broadcast (which a slow
//! subscriber may lag behind and lose), the observer is called in line,
//! once per event, and must not block.

use smsgw_core::messages::{MessageRecord, ReceiptUpdate};
use std::sync::Arc;

/// A state change of a message.
#[derive(Debug)]
#[non_exhaustive]
pub enum Lifecycle<'a> {
    /// The message was stored; it will be submitted.
    Accepted {
        /// The stored record.
        record: &'a MessageRecord,
        /// Contact-policy strategy it passed, empty for none.
        strategy: &'a str,
    },
    /// A send was refused before anything was stored.
    Refused {
        /// Sending application.
        app_id: &'a str,
        /// Client's transaction id, empty when none was given.
        transaction_id: &'a str,
        /// Destination as given.
        destination: &'a str,
        /// Error code (`daily_cp`, `blacklist`, `rate_limited`, …).
        reason: &'a str,
    },
    /// The SMSC answered one segment's submit_sm (or its outcome is
    /// unknown).
    Submitted {
        /// The record after the answer.
        record: &'a MessageRecord,
        /// Link that carried it.
        link: &'a str,
        /// Segment index, from 0.
        segment: u16,
        /// The SMSC's message id, when it accepted the segment.
        smsc_message_id: Option<&'a str>,
        /// Why the segment is not accepted (refusal or unknown outcome).
        error: Option<String>,
    },
    /// A delivery receipt arrived.
    Receipt {
        /// The receipt.
        update: &'a ReceiptUpdate,
        /// The message it was applied to; `None` when it could not be
        /// matched (yet).
        record: Option<&'a MessageRecord>,
    },
}

/// Called for every [`Lifecycle`] event; must return quickly.
pub type Observer = Arc<dyn Fn(&Lifecycle<'_>) + Send + Sync>;
