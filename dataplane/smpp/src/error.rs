//! Errors of this crate.

use std::time::Duration;

/// `ESME_RINVMSGLEN`: message length (or number of segments) invalid.
pub const ESME_RINVMSGLEN: u32 = 0x01;
/// `ESME_RINVPRTFLG`: invalid `priority_flag`.
pub const ESME_RINVPRTFLG: u32 = 0x06;
/// `ESME_RSYSERR`: system error.
pub const ESME_RSYSERR: u32 = 0x08;
/// `ESME_RINVSRCADR`: invalid source address.
pub const ESME_RINVSRCADR: u32 = 0x0A;
/// `ESME_RINVDSTADR`: invalid destination address.
pub const ESME_RINVDSTADR: u32 = 0x0B;
/// `ESME_RINVSERTYP`: invalid `service_type`.
pub const ESME_RINVSERTYP: u32 = 0x15;
/// `ESME_RINVSCHED`: invalid `schedule_delivery_time`.
pub const ESME_RINVSCHED: u32 = 0x61;
/// `ESME_RINVEXPIRY`: invalid `validity_period`.
pub const ESME_RINVEXPIRY: u32 = 0x62;

/// Everything that can go wrong in links, pools and the simulator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The link configuration is unusable (checked when a link is created).
    #[error("link {link}: invalid configuration: {reason}")]
    InvalidConfig {
        /// Link name.
        link: String,
        /// What is wrong.
        reason: String,
    },
    /// The simulator's configuration is unusable (TLS certificate or key).
    #[error("simulator: {reason}")]
    SimConfig {
        /// What is wrong.
        reason: String,
    },
    /// The request cannot be turned into `submit_sm` PDUs (address too long,
    /// no segments, …). Nothing was sent, and sending it again (anywhere)
    /// cannot succeed: a permanent refusal.
    #[error("invalid submit request: {reason}")]
    InvalidRequest {
        /// The SMPP status an SMSC answers such a `submit_sm` with
        /// ([`ESME_RINVDSTADR`], [`ESME_RINVMSGLEN`], …).
        command_status: u32,
        /// What is wrong.
        reason: String,
    },
    /// No session of the link is bound. Nothing was sent.
    #[error("link {link} is down")]
    LinkDown {
        /// Link name.
        link: String,
    },
    /// The link was stopped by control (or is shutting down). Nothing was sent.
    #[error("link {link} is stopped")]
    LinkStopped {
        /// Link name.
        link: String,
    },
    /// No window slot became free within `window_wait`. Nothing was sent.
    #[error("link {link}: send window full, waited {waited:?}")]
    WindowFull {
        /// Link name.
        link: String,
        /// How long the sender waited.
        waited: Duration,
    },
    /// The session closed before any segment of the message was written.
    /// Nothing was sent; retrying is safe.
    #[error("link {link}: not sent: {reason}")]
    NotSent {
        /// Link name.
        link: String,
        /// Why.
        reason: String,
    },
    /// Every link of the pool is down (or refused the message without
    /// sending it).
    #[error("pool {pool}: no link available")]
    NoLinkAvailable {
        /// Pool name.
        pool: String,
    },
    /// A pool was built without members or with zero total weight.
    #[error("pool {pool}: {reason}")]
    InvalidPool {
        /// Pool name.
        pool: String,
        /// What is wrong.
        reason: String,
    },
    /// Connecting to the SMSC failed.
    #[error("connect to {addr}: {source}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TLS handshake with the SMSC failed (certificate not trusted or
    /// not valid for the name, no TLS on the other side, timeout, …).
    #[error("TLS handshake with {addr} failed: {reason}")]
    Tls {
        /// `host:port`.
        addr: String,
        /// Why, as rustls tells it.
        reason: String,
    },
    /// The SMSC answered our bind with an error status.
    #[error("bind rejected with command_status {command_status:#010x}")]
    BindRejected {
        /// The status of the `bind_*_resp`.
        command_status: u32,
    },
    /// A request PDU (bind, unbind, enquire_link) got no response in time.
    #[error("no response to sequence_number {sequence_number} within {timeout:?}")]
    ResponseTimeout {
        /// The request's sequence number.
        sequence_number: u32,
        /// The timeout that passed.
        timeout: Duration,
    },
    /// The peer closed the connection.
    #[error("connection closed by peer")]
    ConnectionClosed,
    /// The peer violated the protocol (undecodable framing, unexpected PDU).
    #[error("protocol error: {reason}")]
    Protocol {
        /// What happened.
        reason: String,
    },
    /// Socket I/O failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl From<crate::codec::CodecError> for Error {
    fn from(e: crate::codec::CodecError) -> Self {
        match e {
            crate::codec::CodecError::Io(e) => Error::Io(e),
            other => Error::Protocol {
                reason: other.to_string(),
            },
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
