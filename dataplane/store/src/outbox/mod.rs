//! Outbox backends ([`smsgw_core::outbox::Outbox`]): embedded (redb, one
//! writer thread, group commit) for standalone mode, and Redis Streams
//! (partitions leased to pods, consumer groups, `XAUTOCLAIM` on takeover;
//! one writer task, appends in batches) for a cluster.

mod embedded;
mod redis;

pub use embedded::{DEFAULT_OUTBOX_CACHE, EmbeddedOutbox};
pub use redis::{PARTITIONS, RedisOutbox};
