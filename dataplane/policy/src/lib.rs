//! Policies of the smsgw send path.
//!
//! [`rate`]: layered rate limiting (issue 6) — the in-process limiter (L1
//! and standalone), the Redis limiter shared by every pod (L2), link-health
//! rate adjustment, and their metrics.
#![warn(missing_docs)]

pub mod rate;
