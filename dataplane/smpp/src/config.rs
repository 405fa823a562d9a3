//! Link configuration.

use std::{net::SocketAddr, time::Duration};

use serde::Deserialize;

use crate::{Error, ids::IdFormat};

/// A password that never shows up in `Debug` output or logs.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The password itself; only the bind PDU should call this.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

/// How a link binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BindMode {
    /// Each session is one `bind_transceiver`.
    #[default]
    Transceiver,
    /// Each session is a `bind_transmitter` (submits) plus a `bind_receiver`
    /// (receipts and MO), i.e. `2 × sessions` connections.
    TransmitterReceiver,
}

/// SMPP interface version announced in the bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum InterfaceVersion {
    /// SMPP 3.4 (`0x34`).
    #[default]
    #[serde(rename = "3.4")]
    V34,
    /// SMPP 5.0 (`0x50`).
    #[serde(rename = "5.0")]
    V50,
}

/// Exponential, jittered, capped reconnect backoff.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default)]
pub struct Backoff {
    /// First delay after a failure.
    #[serde(with = "humantime_serde")]
    pub initial: Duration,
    /// Upper bound for the delay.
    #[serde(with = "humantime_serde")]
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// Delay before attempt number `attempt` (0-based): `initial × 2^attempt`
    /// capped at `max`, then "equal jitter" (uniform in `[d/2, d]`).
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self
            .initial
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.max);
        let half = base / 2;
        let jitter = rand::random_range(0.0..=1.0);
        half + half.mul_f64(jitter)
    }
}

/// Default TON/NPI for an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
pub struct TonNpi {
    /// Type of number.
    pub ton: u8,
    /// Numbering plan indicator.
    pub npi: u8,
}

/// Inbound (MO) concatenation reassembly limits.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default)]
pub struct ReassemblyConfig {
    /// Most incomplete multipart messages kept; the oldest is surfaced
    /// incomplete when a new one would exceed this.
    pub max_pending: usize,
    /// An incomplete set older than this is surfaced incomplete.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Most payload octets held in incomplete sets; the oldest sets are
    /// surfaced incomplete until the parts held fit again. Without it a
    /// peer could park `max_pending` × 255 parts of up to 64 KiB each.
    pub max_bytes: usize,
}

impl Default for ReassemblyConfig {
    fn default() -> Self {
        Self {
            max_pending: 1024,
            timeout: Duration::from_secs(60),
            max_bytes: 8 * 1024 * 1024,
        }
    }
}

/// What a link does with a `submit_sm` whose connection closed before its
/// response came (a dropped connection, or a session closed as stalled):
/// no answer can come for it any more, and the SMSC may or may not have
/// taken it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownPolicy {
    /// Submit it again on a healthy session of the link (at least once:
    /// the SMSC may hold both copies), reported as
    /// [`crate::SegmentOutcome::Resubmitted`] so the caller can mark the
    /// message as a possible duplicate.
    #[default]
    Resubmit,
    /// Leave it [`crate::SegmentOutcome::Unknown`] for an operator.
    Hold,
}

/// One SMSC account: where to connect, how to bind, how hard to push.
///
/// # Defaults
///
/// | field | default |
/// |---|---|
/// | `port` | 2775 |
/// | `tls` | false; `tls_ca` none (system roots), `tls_server_name` = `host`, `tls_insecure_skip_verify` false |
/// | `system_type` | empty |
/// | `bind_mode` | transceiver |
/// | `interface_version` | 3.4 |
/// | `sessions` | 1 |
/// | `window` | 10 |
/// | `rate` / `burst` | unlimited / 1 |
/// | `response_timeout` | 10 s |
/// | `stall_after_timeouts` | 1 |
/// | `unknown_policy` | resubmit |
/// | `resubmit_wait` | 30 s |
/// | `window_wait` | 5 s |
/// | `enquire_link_interval` | 30 s |
/// | `reconnect` | 500 ms doubling up to 30 s, jittered |
/// | `drain_timeout` | 10 s |
/// | `throttle_retries` | 16 |
/// | `source` / `destination` TON/NPI | 0/0 and 1/1 |
/// | `message_id_format` | opaque; `receipt_id_format` = same |
/// | `reassembly` | 1024 sets, 8 MiB of parts, 60 s |
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct LinkConfig {
    /// Link name (unique in the gateway), used in logs, events, errors.
    pub name: String,
    /// SMSC host name or address.
    pub host: String,
    /// SMSC port.
    pub port: u16,
    /// Connect over TLS (rustls). The SMSC's certificate is verified against
    /// the system roots plus `tls_ca`, for `tls_server_name`; a failed
    /// handshake is an [`Error::Tls`] and the session rebinds with backoff.
    pub tls: bool,
    /// Extra CA certificates (PEM bundle) trusted for this link, besides the
    /// system roots. Needs `tls`.
    pub tls_ca: Option<String>,
    /// Name the SMSC's certificate must be valid for, also sent as SNI
    /// (default: `host`). A DNS name or an IP address. Needs `tls`.
    pub tls_server_name: Option<String>,
    /// Accept any certificate (no chain or name check; the handshake
    /// signature is still verified). For tests and broken SMSCs only: the
    /// link logs a warning when it starts. Needs `tls`.
    pub tls_insecure_skip_verify: bool,
    /// `system_id` of the bind (at most 15 characters).
    pub system_id: String,
    /// Bind password (at most 8 characters). Never logged.
    pub password: Password,
    /// `system_type` of the bind (at most 12 characters).
    pub system_type: String,
    /// Transceiver, or transmitter + receiver.
    pub bind_mode: BindMode,
    /// SMPP 3.4 or 5.0.
    pub interface_version: InterfaceVersion,
    /// Number of binds (sessions) to keep open.
    pub sessions: usize,
    /// Most `submit_sm` awaiting a response, per session.
    pub window: usize,
    /// Most `submit_sm` per second over the whole link (`None`: unlimited).
    pub rate: Option<f64>,
    /// Burst allowed above `rate`.
    pub burst: u32,
    /// How long a `submit_sm` (or bind, unbind, enquire_link) may wait for
    /// its response. A `submit_sm` past it becomes an
    /// [`crate::SegmentOutcome::Unknown`] and is never resent.
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
    /// This many `submit_sm` response timeouts in a row on one connection
    /// (no response in time between them) mark its session stalled: it
    /// takes no new submits at once, is closed and rebinds, and the other
    /// `submit_sm` awaiting a response on it become
    /// [`crate::SegmentOutcome::Unknown`] right away. 0: never (only a
    /// failed enquire_link closes a silent connection).
    pub stall_after_timeouts: u32,
    /// What becomes of a `submit_sm` whose connection closed before its
    /// response: resubmitted on a healthy session, or held unknown. A
    /// `submit_sm` that timed out on a connection that stays open is always
    /// held (its late response may still settle it).
    pub unknown_policy: UnknownPolicy,
    /// With [`UnknownPolicy::Resubmit`]: how long a resubmission waits for
    /// a healthy session (and a window slot) before the segment stays
    /// unknown.
    #[serde(with = "humantime_serde")]
    pub resubmit_wait: Duration,
    /// How long a sender waits for a free window slot before
    /// [`Error::WindowFull`].
    #[serde(with = "humantime_serde")]
    pub window_wait: Duration,
    /// Interval between our `enquire_link`s. A peer that does not answer one
    /// within `response_timeout` is declared dead.
    #[serde(with = "humantime_serde")]
    pub enquire_link_interval: Duration,
    /// Reconnect/rebind backoff.
    pub reconnect: Backoff,
    /// Deadline for draining the window before `unbind` on stop/shutdown.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// How often one segment is resent after ESME_RTHROTTLED/ESME_RMSGQFUL
    /// before its outcome becomes `Rejected` with that status.
    pub throttle_retries: u32,
    /// Default source TON/NPI (used by callers building a request).
    pub source: TonNpi,
    /// Default destination TON/NPI.
    pub destination: TonNpi,
    /// Format of the ids in `submit_sm_resp`.
    pub message_id_format: IdFormat,
    /// Format of the ids in receipts (`None`: same as `message_id_format`).
    pub receipt_id_format: Option<IdFormat>,
    /// MO reassembly limits.
    pub reassembly: ReassemblyConfig,
    /// Spawned stopped (SmppLink `spec.suspended`): no session binds until
    /// [`crate::Link::start`].
    #[serde(default)]
    pub start_stopped: bool,
    /// `submit_sm` that timed out remembered at most, per link (split
    /// evenly over its sessions), so that a late `submit_sm_resp` comes
    /// back with its [`crate::SubmitTag`]; each is kept ten response
    /// timeouts. Past the bound a timed-out submit is not remembered: its
    /// late answer, if it comes, carries no tag. About 100 bytes each.
    #[serde(default = "default_late_responses")]
    pub late_responses: usize,
}

/// [`LinkConfig::late_responses`] unless set.
pub const DEFAULT_LATE_RESPONSES: usize = 100_000;

fn default_late_responses() -> usize {
    DEFAULT_LATE_RESPONSES
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            name: "link".into(),
            host: "127.0.0.1".into(),
            port: 2775,
            tls: false,
            tls_ca: None,
            tls_server_name: None,
            tls_insecure_skip_verify: false,
            system_id: String::new(),
            password: Password::default(),
            system_type: String::new(),
            bind_mode: BindMode::Transceiver,
            interface_version: InterfaceVersion::V34,
            sessions: 1,
            window: 10,
            rate: None,
            burst: 1,
            response_timeout: Duration::from_secs(10),
            stall_after_timeouts: 1,
            unknown_policy: UnknownPolicy::Resubmit,
            resubmit_wait: Duration::from_secs(30),
            window_wait: Duration::from_secs(5),
            enquire_link_interval: Duration::from_secs(30),
            reconnect: Backoff::default(),
            drain_timeout: Duration::from_secs(10),
            throttle_retries: 16,
            source: TonNpi { ton: 0, npi: 0 },
            destination: TonNpi { ton: 1, npi: 1 },
            message_id_format: IdFormat::Opaque,
            receipt_id_format: None,
            reassembly: ReassemblyConfig::default(),
            start_stopped: false,
            late_responses: DEFAULT_LATE_RESPONSES,
        }
    }
}

macro_rules! setters {
    ($($(#[$m:meta])* $name:ident: $ty:ty),* $(,)?) => {
        $(
            $(#[$m])*
            pub fn $name(mut self, v: $ty) -> Self {
                self.$name = v;
                self
            }
        )*
    };
}

impl LinkConfig {
    /// A test fixture for the simulator at `addr`: credentials `smsgw` /
    /// `secret`, one session, window 16, short timers (response timeout 2 s,
    /// enquire_link every 5 s, reconnect 50 ms..1 s).
    pub fn test(addr: SocketAddr) -> Self {
        Self {
            name: "test".into(),
            host: addr.ip().to_string(),
            port: addr.port(),
            system_id: "smsgw".into(),
            password: Password::new("secret"),
            window: 16,
            response_timeout: Duration::from_secs(2),
            window_wait: Duration::from_secs(2),
            enquire_link_interval: Duration::from_secs(5),
            reconnect: Backoff {
                initial: Duration::from_millis(50),
                max: Duration::from_secs(1),
            },
            drain_timeout: Duration::from_secs(2),
            ..Self::default()
        }
    }

    setters! {
        /// Sets `name`.
        name: String,
        /// Sets `late_responses`.
        late_responses: usize,
        /// Sets `tls`.
        tls: bool,
        /// Sets `tls_ca` (a PEM bundle).
        tls_ca: Option<String>,
        /// Sets `tls_server_name`.
        tls_server_name: Option<String>,
        /// Sets `tls_insecure_skip_verify`.
        tls_insecure_skip_verify: bool,
        /// Sets `system_id`.
        system_id: String,
        /// Sets `password`.
        password: Password,
        /// Sets `bind_mode`.
        bind_mode: BindMode,
        /// Sets `interface_version`.
        interface_version: InterfaceVersion,
        /// Sets `sessions`.
        sessions: usize,
        /// Sets `window`.
        window: usize,
        /// Sets `rate`.
        rate: Option<f64>,
        /// Sets `burst`.
        burst: u32,
        /// Sets `response_timeout`.
        response_timeout: Duration,
        /// Sets `stall_after_timeouts`.
        stall_after_timeouts: u32,
        /// Sets `unknown_policy`.
        unknown_policy: UnknownPolicy,
        /// Sets `start_stopped`.
        start_stopped: bool,
        /// Sets `resubmit_wait`.
        resubmit_wait: Duration,
        /// Sets `window_wait`.
        window_wait: Duration,
        /// Sets `enquire_link_interval`.
        enquire_link_interval: Duration,
        /// Sets `reconnect`.
        reconnect: Backoff,
        /// Sets `drain_timeout`.
        drain_timeout: Duration,
        /// Sets `throttle_retries`.
        throttle_retries: u32,
        /// Sets `message_id_format`.
        message_id_format: IdFormat,
        /// Sets `receipt_id_format`.
        receipt_id_format: Option<IdFormat>,
        /// Sets `reassembly`.
        reassembly: ReassemblyConfig,
    }

    /// The id format of receipts.
    pub fn receipt_ids(&self) -> IdFormat {
        self.receipt_id_format.unwrap_or(self.message_id_format)
    }

    /// Timed-out submits each session remembers at most: `late_responses`
    /// split evenly over the sessions.
    pub fn late_responses_per_session(&self) -> usize {
        self.late_responses.div_ceil(self.sessions.max(1))
    }

    /// Whether a running link can move from `self` to `new` without new
    /// binds ([`crate::Link::retune`]): they differ at most in pacing
    /// (`rate`, `burst`), timeouts and retries (`response_timeout`,
    /// `stall_after_timeouts`, `unknown_policy`, `resubmit_wait`,
    /// `window_wait`, `drain_timeout`, `throttle_retries`,
    /// `late_responses`), the reconnect
    /// backoff, the keep-alive interval (from the next bind) and the
    /// default TON/NPI of outgoing messages. Everything a bind or the
    /// sessions are made of (address, TLS, credentials, bind mode,
    /// sessions, window, id formats, reassembly, suspension) needs new
    /// binds.
    pub fn retunable_to(&self, new: &LinkConfig) -> bool {
        let mut probe = new.clone();
        probe.rate = self.rate;
        probe.burst = self.burst;
        probe.response_timeout = self.response_timeout;
        probe.stall_after_timeouts = self.stall_after_timeouts;
        probe.unknown_policy = self.unknown_policy;
        probe.resubmit_wait = self.resubmit_wait;
        probe.window_wait = self.window_wait;
        probe.enquire_link_interval = self.enquire_link_interval;
        probe.reconnect = self.reconnect;
        probe.drain_timeout = self.drain_timeout;
        probe.throttle_retries = self.throttle_retries;
        probe.late_responses = self.late_responses;
        probe.source = self.source;
        probe.destination = self.destination;
        probe == *self
    }

    /// Checks limits that rusmpp and the protocol impose, and the TLS
    /// settings (CA bundle parses, server name is a DNS name or address).
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |reason: String| {
            Err(Error::InvalidConfig {
                link: self.name.clone(),
                reason,
            })
        };
        if self.system_id.is_empty() || self.system_id.len() > 15 {
            return bad("system_id must have 1..=15 characters".into());
        }
        if self.password.expose().len() > 8 {
            return bad("password must have at most 8 characters".into());
        }
        if self.system_type.len() > 12 {
            return bad("system_type must have at most 12 characters".into());
        }
        if self.sessions == 0 || self.sessions > 64 {
            return bad("sessions must be in 1..=64".into());
        }
        if self.window == 0 || self.window > 10_000 {
            return bad("window must be in 1..=10000".into());
        }
        if let Some(r) = self.rate
            && !(r > 0.0 && r.is_finite())
        {
            return bad(format!("rate must be positive, got {r}"));
        }
        if self.response_timeout.is_zero() || self.enquire_link_interval.is_zero() {
            return bad("response_timeout and enquire_link_interval must be > 0".into());
        }
        crate::tls::TlsClient::new(self).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_deserializes_with_defaults_and_humane_durations() {
        let c: LinkConfig = serde_json::from_str(
            r#"{"name":"l100","host":"smsc","system_id":"a","password":"p",
                "interface_version":"5.0","bind_mode":"transmitter_receiver",
                "sessions":4,"response_timeout":"3s","message_id_format":"hex",
                "reconnect":{"initial":"100ms"}}"#,
        )
        .unwrap();
        assert_eq!(c.sessions, 4);
        assert_eq!(c.window, 10);
        assert_eq!(c.response_timeout, Duration::from_secs(3));
        assert_eq!(c.reconnect.initial, Duration::from_millis(100));
        assert_eq!(c.reconnect.max, Duration::from_secs(30));
        assert_eq!(c.interface_version, InterfaceVersion::V50);
        assert_eq!(c.receipt_ids(), IdFormat::Hex);
        assert!(!format!("{c:?}").contains("\"p\""));
    }

    #[test]
    fn tls_settings_are_checked_and_errors_name_the_field() {
        let base = LinkConfig::test("127.0.0.1:1".parse().unwrap());
        base.clone().tls(true).validate().unwrap();
        let e = |c: LinkConfig| c.validate().unwrap_err().to_string();
        assert_eq!(
            e(base.clone().tls_ca(Some("x".into()))),
            "link test: invalid configuration: tls_ca needs tls: true"
        );
        assert!(
            e(base.clone().tls(true).tls_ca(Some("not pem".into()))).contains("tls_ca: no PEM"),
            "{}",
            e(base.clone().tls(true).tls_ca(Some("not pem".into())))
        );
        let bad_name = e(base
            .clone()
            .tls(true)
            .tls_server_name(Some("bad name!".into())));
        assert!(
            bad_name.contains("tls_server_name: \"bad name!\""),
            "{bad_name}"
        );
        assert!(
            e(base.tls_insecure_skip_verify(true)).contains("tls_insecure_skip_verify needs tls")
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for attempt in 0..30 {
            let d = b.delay(attempt);
            assert!(d <= Duration::from_secs(1));
        }
        assert!(b.delay(0) >= Duration::from_millis(50));
        assert!(b.delay(10) >= Duration::from_millis(500));
    }
}
