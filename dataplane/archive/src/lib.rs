//! The S3 side of smsgw:
//!
//! - [`journal`]: every message event and periodic statistics as
//!   gzip-compressed JSON lines under time-partitioned, deterministic
//!   keys, batched by size and time, spilled to a bounded local directory
//!   while S3 is down.
//! - [`blacklist`]: CSV blacklists streamed from S3 into a
//!   [`smsgw_core::policy::BlacklistSink`] (Redis or in process) and
//!   swapped in atomically, on a schedule and on demand.
//! - [`store`]: the object stores both use: S3 (`aws-sdk-s3`, the
//!   standard credential chain, multipart for large objects) or a local
//!   directory.
#![warn(missing_docs)]

pub mod blacklist;
pub mod journal;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use blacklist::{
    BlacklistImporter, BlacklistSource, LoadOptions, LoadReport, MalformedLine, load_blacklist,
};
pub use journal::{
    EventKind, Journal, JournalConfig, JournalEvent, JournalStats, JournalTask, StatsFn,
};
pub use store::{ByteStream, LocalStore, ObjectStore, S3Config, S3Store};

/// Why an archive operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// A setting is unusable (endpoint URL, bucket name, object key).
    #[error("archive configuration: {0}")]
    Config(String),
    /// An S3 request failed or was refused.
    #[error("S3 {op} failed: {reason}")]
    S3 {
        /// Operation (`put`, `get`, `list`, …).
        op: &'static str,
        /// The SDK's error with its causes (never credentials).
        reason: String,
    },
    /// Local file I/O failed (spill directory, local store).
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The blacklist sink (Redis, memory) failed.
    #[error("blacklist sink: {0}")]
    Sink(#[source] smsgw_core::policy::PolicyError),
    /// No blacklist of that name is configured.
    #[error("no blacklist {0:?} is configured")]
    UnknownList(String),
}
