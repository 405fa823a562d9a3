//! Message store backends ([`smsgw_core::messages::MessageStore`]):
//! embedded (redb, group commit), Redis (per-message hash tags, Lua), and
//! Aerospike (generation checks, TTL'd records). Redis and Aerospike are
//! each a [`VersionedKv`]; the message operations over them are written
//! once, in [`KvMessageStore`].

mod aerospike;
mod embedded;
mod kv;
pub(crate) mod record_codec;
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
/// ([`DEFAULT_INDEX_GRACE`]), `cache_bytes` 32 MiB
/// ([`DEFAULT_STORE_CACHE`]).
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
    /// The embedded store's page cache (redb's, read cache and write
    /// buffer together), in bytes; Redis and Aerospike ignore it.
    pub cache_bytes: usize,
}

/// Default [`MessageStoreOptions::index_grace`]: SMSCs resend a receipt
/// whose `deliver_sm_resp` they missed within minutes.
pub const DEFAULT_INDEX_GRACE: Duration = Duration::from_secs(600);

/// The embedded message store's page cache unless told otherwise
/// (`--store-cache`): modest, for a small VM. redb's own default is 1 GiB,
/// which a busy store fills.
pub const DEFAULT_STORE_CACHE: usize = 32 << 20;

impl Default for MessageStoreOptions {
    fn default() -> Self {
        Self {
            ttl: DEFAULT_MESSAGE_TTL,
            parked_ttl: DEFAULT_PARKED_RECEIPT_TTL,
            index_grace: DEFAULT_INDEX_GRACE,
            cache_bytes: DEFAULT_STORE_CACHE,
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
    /// Sets `cache_bytes`.
    pub fn cache_bytes(mut self, bytes: usize) -> Self {
        self.cache_bytes = bytes;
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

/// The message every update of one submission is for; an error when there
/// are none, or they name several messages.
pub(crate) fn one_message(
    updates: &[smsgw_core::messages::SubmitUpdate],
) -> Result<&str, smsgw_core::messages::MessageStoreError> {
    let id = updates
        .first()
        .map(|s| s.message_id.as_str())
        .ok_or_else(|| backend("a submission without segments"))?;
    if updates.iter().any(|s| s.message_id != id) {
        return Err(backend("one submission's updates name several messages"));
    }
    Ok(id)
}
