//! Message store backends ([`smsgw_core::messages::MessageStore`]):
//! embedded (redb, group commit), Redis (per-message hash tags, Lua), and
//! Aerospike (generation checks, TTL'd records). Redis and Aerospike are
//! each a [`VersionedKv`]; the message operations over them are written
//! once, in [`KvMessageStore`].

mod aerospike;
mod embedded;
mod kv;
mod record_codec;
mod redis;

pub use aerospike::{AerospikeConfig, AerospikeKv, AerospikeMessageStore};
pub use embedded::{Checkpoints, EmbeddedMessageStore};
pub use kv::{Cas, KvMessageStore, VersionedKv};
pub use redis::{RedisKv, RedisMessageStore};

use smsgw_core::messages::{
    DEFAULT_MESSAGE_TTL, DEFAULT_PARKED_RECEIPT_TTL, MessageStoreError, ReceiptUpdate,
};
use std::time::Duration;

/// Lifetimes every message store backend honours.
///
/// # Defaults
/// `ttl` 86,400 s ([`DEFAULT_MESSAGE_TTL`]), `parked_ttl` 600 s
/// ([`DEFAULT_PARKED_RECEIPT_TTL`]), `index_grace` 600 s
/// ([`DEFAULT_INDEX_GRACE`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageStoreOptions {
    /// How long a message (and its idempotency key and index entries) lives,
    /// counted from its `created_at_ms`.
    pub ttl: Duration,
    /// How long a receipt whose `(link, SMSC id)` is unknown is kept,
    /// waiting for the `submit_sm_resp` that maps it.
    pub parked_ttl: Duration,
    /// How long a segment's `(link, SMSC id)` index entry outlives its
    /// final receipt, so that a duplicate of the receipt is still matched
    /// (Redis and Aerospike; the embedded store keeps it for `ttl`).
    pub index_grace: Duration,
}

/// Default [`MessageStoreOptions::index_grace`]: SMSCs resend a receipt
/// whose `deliver_sm_resp` they missed within minutes.
pub const DEFAULT_INDEX_GRACE: Duration = Duration::from_secs(600);

impl Default for MessageStoreOptions {
    fn default() -> Self {
        Self {
            ttl: DEFAULT_MESSAGE_TTL,
            parked_ttl: DEFAULT_PARKED_RECEIPT_TTL,
            index_grace: DEFAULT_INDEX_GRACE,
        }
    }
}

impl MessageStoreOptions {
    /// Sets `ttl`.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }
    /// Sets `parked_ttl`.
    pub fn parked_ttl(mut self, parked_ttl: Duration) -> Self {
        self.parked_ttl = parked_ttl;
        self
    }
    /// Sets `index_grace`.
    pub fn index_grace(mut self, index_grace: Duration) -> Self {
        self.index_grace = index_grace;
        self
    }
}

/// How often an optimistic (compare-and-set) update is retried before
/// giving up with [`MessageStoreError::Contended`].
const CAS_ATTEMPTS: u32 = 32;

/// How long a create waits for a concurrent creator's record before taking
/// over its idempotency key (Redis and Aerospike backends).
const TAKEOVER_AFTER: Duration = Duration::from_millis(500);

fn backend(e: impl std::fmt::Display) -> MessageStoreError {
    MessageStoreError::Backend(e.to_string())
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Of two receipts parked for one key, the one to keep: a final state
/// beats an intermediate one; otherwise the later one wins.
fn keep_parked(old: ReceiptUpdate, new: ReceiptUpdate) -> ReceiptUpdate {
    if old.state.is_final() && !new.state.is_final() {
        old
    } else {
        new
    }
}
