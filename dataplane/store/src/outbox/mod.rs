//! Outbox backends ([`smsgw_core::outbox::Outbox`]): embedded (redb, one
//! writer thread, group commit) for standalone mode.

mod embedded;

pub use embedded::EmbeddedOutbox;
