//! Store backends: an embedded one on disk (redb) for standalone mode, and
//! Redis, shared by every pod of a cluster. Both implement the traits of
//! `smsgw-core` and pass the same contract suite (`contract`, built for
//! tests and with the `testing` feature).
#![warn(missing_docs)]

mod embedded;
pub mod messages;
pub mod outbox;
mod quotas;
mod redis_store;
mod wal;

pub use embedded::{EmbeddedUserStore, USER_STORE_CACHE};
pub use redis_store::{BoundedConnection, DEFAULT_IN_FLIGHT, RedisConfig, RedisUserStore};

#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(any(test, feature = "testing"))]
pub mod contract;
