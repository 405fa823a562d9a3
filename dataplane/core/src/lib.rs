//! Domain types of smsgw and the traits the rest of the dataplane meets at.
//!
//! Pure: no sockets, no Kubernetes, no gRPC. Backends (`smsgw-store`) and
//! front ends (`smsgw-api`) depend on this crate, never on each other.
#![warn(missing_docs)]

pub mod bounded;
pub mod claims;
pub mod limits;
pub mod links;
pub mod messages;
pub mod outbox;
pub mod policy;
pub mod quotas;
pub mod users;

/// Seconds since the Unix epoch, the time unit of stored records.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
