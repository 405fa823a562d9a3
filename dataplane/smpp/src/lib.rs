//! SMPP links, pools and an SMSC simulator for smsgw.
//!
//! * [`Link`]: one SMSC account ([`LinkConfig`]) with `sessions` binds, each
//!   with a send window of `window` pipelined `submit_sm`, responses matched
//!   by sequence number, enquire_link keep-alive, dead-peer detection,
//!   rebind with jittered exponential backoff, AIMD slow-down and in-order
//!   resend on ESME_RTHROTTLED / ESME_RMSGQFUL. A session whose `submit_sm`
//!   responses time out is taken out of rotation, closed and rebound
//!   ([`LinkState::Stalled`]); a segment whose connection closed before its
//!   response is resubmitted on a healthy session
//!   ([`SegmentOutcome::Resubmitted`], [`UnknownPolicy`]), while one that
//!   timed out on a connection that stays open is reported unknown (a late
//!   response arrives as [`LinkEvent::LateResponse`]).
//! * Receipts and MO messages arrive as [`LinkEvent`]s on the channel given
//!   to [`Link::spawn`]; MO concatenation (UDH or SAR) is reassembled. A
//!   receipt's `deliver_sm_resp` waits for its [`ReceiptAck`]: the consumer
//!   calls [`ReceiptAck::stored`] once it is durable, so an SMSC that gets
//!   no answer (or a temporary error) delivers it again. So does the
//!   `deliver_sm` completing an MO message (a single part, or a set's last).
//! * [`Pool`]: smooth weighted round-robin over links that are up, with
//!   failover; [`Target`] is "a link or a pool".
//! * [`sim`]: an SMSC simulator (library and [`sim::run`]).
//!
//! # Wiring
//!
//! ```no_run
//! # async fn demo() -> Result<(), smsgw_smpp::Error> {
//! use smsgw_smpp::{Address, Link, LinkConfig, LinkEvent, Segment, SubmitRequest};
//! use tokio_util::sync::CancellationToken;
//!
//! let shutdown = CancellationToken::new();
//! let (events_tx, mut events) = tokio::sync::mpsc::channel(10_000);
//! let link = Link::spawn(
//!     LinkConfig::test("127.0.0.1:2775".parse().unwrap()).sessions(4),
//!     events_tx,
//!     shutdown.clone(),
//! )?;
//! tokio::spawn(async move {
//!     while let Some(ev) = events.recv().await {
//!         if let LinkEvent::Receipt(r) = ev { /* store r.smsc_message_id.normalized, then */ r.ack.stored(); }
//!     }
//! });
//! let outcomes = link
//!     .submit(SubmitRequest::new(
//!         Address::new("smsgw", 5, 0),
//!         Address::new("4917012345", 1, 1),
//!         vec![Segment::new(&b"hello"[..])],
//!     ))
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! # Why not rusmppc
//!
//! The PDU types and encoding are rusmpp's. The session is our own loop over
//! a framed TCP stream rather than rusmppc's `Client`: rusmppc drops a
//! request's response slot when it times out (a late `submit_sm_resp` could
//! no longer be tied to its segment), has no send window (its action queue
//! is unbounded) and no per-session pacing, and its default features pull a
//! TLS stack and a DNS resolver of its own.
//!
//! # TLS
//!
//! `tls: true` connects with rustls (ring provider): the SMSC certificate is
//! verified against the system roots plus an optional PEM CA bundle
//! (`tls_ca`) for `tls_server_name` (default the host);
//! `tls_insecure_skip_verify` skips the check and logs a warning. The
//! session loop runs unchanged over the TLS stream. The simulator serves
//! TLS given a certificate and key ([`sim::SimTls`]).

#![warn(missing_docs)]

pub mod codec;
mod config;
mod control;
pub mod deliver;
mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod ids;
mod link;
mod pool;
pub mod rate;
mod session;
pub mod sim;
pub mod time;
mod tls;
mod types;
mod window;

pub use config::{
    Backoff, BindMode, DEFAULT_LATE_RESPONSES, InterfaceVersion, LinkConfig, Password,
    ReassemblyConfig, TonNpi, UnknownPolicy,
};
pub use control::Registry;
pub use error::{
    ESME_RINVDSTADR, ESME_RINVEXPIRY, ESME_RINVMSGLEN, ESME_RINVPRTFLG, ESME_RINVSCHED,
    ESME_RINVSERTYP, ESME_RINVSRCADR, ESME_RSYSERR, Error, Result,
};
pub use ids::{IdFormat, SmscMessageId, normalize_message_id};
pub use link::Link;
pub use pool::{Pool, SmoothWeightedRoundRobin, Target};
pub use session::{ESME_RMSGQFUL, ESME_RTHROTTLED, ESME_RX_T_APPN};
pub use types::{
    Address, LastError, LinkEvent, LinkState, LinkStatus, MobileOriginated, ReassemblyStatus,
    Receipt, ReceiptAck, ReceiptState, Sar, Segment, SegmentOutcome, SessionRole, SessionStatus,
    SubmitRequest, SubmitTag, UnknownReason,
};
