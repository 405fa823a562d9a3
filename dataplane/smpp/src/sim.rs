//! An SMSC simulator: binds, submit_sm with ids in a chosen format, delayed
//! receipts with a configurable mix of outcomes, MO injection, and faults on
//! demand (throttling, slow or missing responses, dropped connections,
//! refused binds, SMSC-initiated unbind, stalls that keep the socket open,
//! connections dropped after K submits or between a submit and its
//! response). With [`SimConfig::tls`] it speaks TLS (rustls) instead of
//! plain TCP.
//!
//! Built for load: each connection decodes everything a read returned,
//! writes all responses into one buffer and hands it to its writer task in
//! one piece, so one core answers well over 50,000 `submit_sm`/s.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use bytes::{BufMut, Bytes, BytesMut};
use rusmpp::{
    Command, CommandId, CommandStatus, Pdu,
    pdus::{DeliverSm, SubmitSm},
    tlvs::{MessageDeliveryRequestTlvValue, TlvValue},
    types::{COctetString, OctetString},
    values::{
        DataCoding, ErrorCodeNetworkType, EsmClass, MessageState, NetworkErrorCode, Npi, Ton,
    },
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpListener,
    sync::mpsc,
    time::{Instant, sleep_until},
};
use tokio_util::{codec::Decoder, sync::CancellationToken};
use tracing::{debug, info, warn};

use crate::{
    codec::{Frame, SmppCodec, encode_into},
    deliver::format_smpp_date,
    error::{Error, Result},
    types::{Address, Sar},
};

/// How the simulator spells message ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimIdFormat {
    /// Upper-case hex, zero padded to 8 digits (`"0000007B"`).
    Hex,
    /// Decimal, zero padded to 10 digits (`"0000000123"`).
    #[default]
    Decimal,
    /// UUID-like (`"6f1c…-…"`), upper case in responses and lower case in
    /// receipts.
    Uuid,
}

/// Relative weights of receipt outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default)]
pub struct ReceiptMix {
    /// DELIVRD.
    pub delivered: u32,
    /// UNDELIV.
    pub undeliverable: u32,
    /// EXPIRED.
    pub expired: u32,
    /// REJECTD.
    pub rejected: u32,
}

impl Default for ReceiptMix {
    fn default() -> Self {
        Self {
            delivered: 1,
            undeliverable: 0,
            expired: 0,
            rejected: 0,
        }
    }
}

/// Which connections a [`SimStall`] freezes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StallScope {
    /// Only the connection that received the triggering `submit_sm`.
    #[default]
    Connection,
    /// Every connection, and those accepted while the stall lasts (an SMSC
    /// process that was SIGSTOPped).
    All,
}

/// A stall: the SMSC stops answering while it keeps its sockets open.
///
/// It begins with the `after_submits`-th `submit_sm` received after it was
/// armed (0: at once, for [`StallScope::All`]; at the next `submit_sm` for
/// [`StallScope::Connection`]). For `duration` nothing is written to the
/// stalled connections: no `submit_sm_resp` (the triggering one included),
/// no `enquire_link_resp`, no receipts, no bind responses. Requests are
/// still read and counted. When the stall ends, everything held back goes
/// out in order, on the connections that are still open, as a SIGCONTed
/// SMSC would answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct SimStall {
    /// Which `submit_sm` (counted from arming, over all connections) starts
    /// the stall.
    pub after_submits: u64,
    /// How long the stall lasts.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// The stalled connections.
    #[serde(default)]
    pub scope: StallScope,
}

/// A dropped connection: the connection that receives the
/// `after_submits`-th `submit_sm` (counted from arming, over all
/// connections, at least 1) is closed (TCP FIN) right after its response,
/// or with `before_response` right before it (that `submit_sm` is read and
/// counted, never answered; earlier responses still go out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct SimDrop {
    /// Which `submit_sm` triggers the drop.
    pub after_submits: u64,
    /// Close before answering it instead of after.
    #[serde(default)]
    pub before_response: bool,
}

/// Simulator settings.
///
/// # Defaults
///
/// Listens on `127.0.0.1:0`; accepts `smsgw` / `secret`; decimal ids (also
/// in receipts); receipts after 50 ms, all DELIVRD, in text form plus
/// `receipted_message_id` / `message_state` / `network_error_code` TLVs.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default)]
pub struct SimConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Accepted system_id.
    pub system_id: String,
    /// Accepted password.
    pub password: String,
    /// Format of ids in submit_sm_resp.
    pub id_format: SimIdFormat,
    /// Format of ids in receipts (`None`: same as `id_format`).
    pub receipt_id_format: Option<SimIdFormat>,
    /// Delay between submit_sm_resp and the receipt.
    #[serde(with = "humantime_serde")]
    pub receipt_delay: Duration,
    /// Outcome weights.
    pub receipt_mix: ReceiptMix,
    /// Add TLVs to receipts (the text form is always present).
    pub receipt_tlvs: bool,
    /// Send the receipts that fall due within one `receipt_delay` window in
    /// reverse order (the last part's receipt first), to exercise receipt
    /// correlation that must not depend on order.
    pub reverse_receipts: bool,
    /// Serve TLS with this certificate and key (`None`: plain TCP).
    pub tls: Option<SimTls>,
    /// Count the accepted submit_sm per (destination, short message), so
    /// [`SimHandle::submissions`] can tell a message submitted twice. Memory
    /// grows with every distinct message: for tests, not for load.
    pub track_submits: bool,
    /// With `track_submits`: also append each accepted submit_sm to this
    /// file before it is answered, and count the ones already in it at
    /// start, so the ledger outlives a SIGKILL of the simulator (the fault
    /// drill "SMSC killed and restarted"). One line per submission: the
    /// destination and the short message, hex, separated by a space.
    pub ledger: Option<std::path::PathBuf>,
    /// A stall armed at start (`None`: none; see [`SimHandle::arm_stall`]).
    pub stall: Option<SimStall>,
    /// A dropped connection armed at start (`None`: none; see
    /// [`SimHandle::arm_drop`]).
    pub drop_connection: Option<SimDrop>,
    /// Keep each receipt until a `deliver_sm_resp` with ESME_ROK answers it,
    /// as SMSCs do: one answered with an error, or left unanswered when its
    /// connection closes, is delivered again on a receiving connection
    /// (the one bound next, if none is).
    pub redeliver_receipts: bool,
}

/// The simulator's TLS identity: a PEM certificate chain (leaf first) and
/// the PEM private key (PKCS#8, PKCS#1 or SEC1) of the leaf.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
pub struct SimTls {
    /// PEM certificate chain, leaf first.
    pub cert_pem: String,
    /// PEM private key. Not shown by `Debug`.
    pub key_pem: String,
}

impl std::fmt::Debug for SimTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimTls")
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &format_args!("***"))
            .finish()
    }
}

impl SimTls {
    /// Reads the certificate chain and key from PEM files.
    pub fn from_files(cert: &std::path::Path, key: &std::path::Path) -> Result<SimTls> {
        let read = |what: &str, p: &std::path::Path| {
            std::fs::read_to_string(p).map_err(|e| Error::SimConfig {
                reason: format!("TLS {what} {}: {e}", p.display()),
            })
        };
        Ok(SimTls {
            cert_pem: read("certificate", cert)?,
            key_pem: read("key", key)?,
        })
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            system_id: "smsgw".into(),
            password: "secret".into(),
            id_format: SimIdFormat::Decimal,
            receipt_id_format: None,
            receipt_delay: Duration::from_millis(50),
            receipt_mix: ReceiptMix::default(),
            receipt_tlvs: true,
            reverse_receipts: false,
            tls: None,
            track_submits: false,
            ledger: None,
            stall: None,
            drop_connection: None,
            redeliver_receipts: false,
        }
    }
}

impl SimConfig {
    /// Sets `id_format`.
    pub fn id_format(mut self, f: SimIdFormat) -> Self {
        self.id_format = f;
        self
    }
    /// Sets `receipt_id_format`.
    pub fn receipt_id_format(mut self, f: SimIdFormat) -> Self {
        self.receipt_id_format = Some(f);
        self
    }
    /// Sets `receipt_delay`.
    pub fn receipt_delay(mut self, d: Duration) -> Self {
        self.receipt_delay = d;
        self
    }
    /// Sets `receipt_mix`.
    pub fn receipt_mix(mut self, m: ReceiptMix) -> Self {
        self.receipt_mix = m;
        self
    }
    /// Sets `receipt_tlvs`.
    pub fn receipt_tlvs(mut self, on: bool) -> Self {
        self.receipt_tlvs = on;
        self
    }
    /// Serves TLS with `tls`.
    pub fn tls(mut self, tls: SimTls) -> Self {
        self.tls = Some(tls);
        self
    }
    /// Arms a stall at start: see [`SimStall`].
    pub fn stall(mut self, after_submits: u64, duration: Duration, scope: StallScope) -> Self {
        self.stall = Some(SimStall {
            after_submits,
            duration,
            scope,
        });
        self
    }
    /// Sets `redeliver_receipts`.
    pub fn redeliver_receipts(mut self, on: bool) -> Self {
        self.redeliver_receipts = on;
        self
    }
    /// Arms a dropped connection at start: see [`SimDrop`].
    pub fn drop_after(mut self, after_submits: u64, before_response: bool) -> Self {
        self.drop_connection = Some(SimDrop {
            after_submits,
            before_response,
        });
        self
    }
}

/// Counter snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SimCounters {
    /// Accepted binds.
    pub binds: u64,
    /// Refused binds.
    pub binds_refused: u64,
    /// submit_sm received (answered or not).
    pub submits: u64,
    /// submit_sm answered with ESME_RTHROTTLED.
    pub throttled: u64,
    /// Receipts sent.
    pub receipts_sent: u64,
    /// deliver_sm_resp received.
    pub deliver_sm_resps: u64,
    /// enquire_link received.
    pub enquire_links: u64,
    /// enquire_link_resp received (answers to [`SimHandle::enquire_link_all`]).
    pub enquire_link_resps: u64,
    /// submit_sm answered with generic_nack.
    pub nacked: u64,
    /// unbind received.
    pub unbinds: u64,
    /// TCP connections accepted.
    pub connections: u64,
    /// TLS handshakes that failed (or timed out), with TLS on.
    pub tls_failures: u64,
    /// Most connections bound at once since start (or the last
    /// [`SimHandle::reset_peak_bound`]).
    pub peak_bound: u64,
    /// Stalls that began ([`SimStall`]; one per stall, whatever its scope).
    pub stalls: u64,
    /// Connections closed by a [`SimDrop`].
    pub drops: u64,
    /// Receipts delivered again ([`SimConfig::redeliver_receipts`]).
    pub receipts_redelivered: u64,
    /// deliver_sm_resp that answered a receipt (or an MO) with an error
    /// status.
    pub receipts_refused: u64,
    /// Most submit_sm accepted within any one second (a sliding window),
    /// with `track_submits` on; since start or the last
    /// [`SimHandle::reset_peak_bound`]. What an SMSC enforcing a rate
    /// would see.
    pub peak_submits_per_second: u64,
}

/// Accepted submit_sm counted per (destination, short message), with
/// `track_submits` on.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Submissions {
    /// Distinct (destination, short message) pairs accepted.
    pub distinct: u64,
    /// Every pair accepted more than once: destination, the short message
    /// (lossy UTF-8) and how many times.
    pub repeated: Vec<(String, String, u64)>,
}

/// One accepted submit_sm as the simulator received it
/// ([`SimHandle::seen_submits`], with `track_submits` on): what a test
/// asserts the gateway passed to the SMSC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenSubmit {
    /// `destination_addr`.
    pub destination: String,
    /// The short message (or `message_payload`), lossy UTF-8.
    pub text: String,
    /// `data_coding`.
    pub data_coding: u8,
    /// `priority_flag`.
    pub priority_flag: u8,
    /// `validity_period` as sent (empty when none).
    pub validity_period: String,
    /// `schedule_delivery_time` as sent (empty when none).
    pub schedule_delivery_time: String,
    /// When the simulator accepted it.
    pub at: SystemTime,
}

/// One bound connection, as [`SimHandle::connections`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimConnection {
    /// Connection id (increasing in accept order).
    pub id: u64,
    /// submit_sm received on it.
    pub submits: u64,
    /// Whether it is stalled now (its own stall or one of scope `All`).
    pub stalled: bool,
}

#[derive(Debug, Default)]
struct Counters {
    binds: AtomicU64,
    binds_refused: AtomicU64,
    submits: AtomicU64,
    throttled: AtomicU64,
    receipts_sent: AtomicU64,
    deliver_sm_resps: AtomicU64,
    enquire_links: AtomicU64,
    enquire_link_resps: AtomicU64,
    nacked: AtomicU64,
    unbinds: AtomicU64,
    connections: AtomicU64,
    tls_failures: AtomicU64,
    peak_bound: AtomicU64,
    stalls: AtomicU64,
    drops: AtomicU64,
    receipts_redelivered: AtomicU64,
    receipts_refused: AtomicU64,
    peak_submits_per_second: AtomicU64,
}

#[derive(Debug, Default)]
struct Faults {
    throttle_next: AtomicU64,
    nack_next: AtomicU64,
    throttle_permille: AtomicU32,
    response_delay_ms: AtomicU64,
    drop_responses: AtomicBool,
    refuse_binds: AtomicBool,
    ignore_enquire_link: AtomicBool,
    /// Total submit count that starts the armed stall (0: none armed).
    stall_at: AtomicU64,
    stall: Mutex<Option<SimStall>>,
    /// Until when every connection is stalled (scope `All`).
    stall_all_until: Mutex<Option<Instant>>,
    /// Total submit count that triggers the armed drop (0: none armed).
    drop_at: AtomicU64,
    drop_before_response: AtomicBool,
}

/// Until when one connection holds back everything it would write.
#[derive(Debug, Default)]
struct StallGate {
    until: Mutex<Option<Instant>>,
}

impl StallGate {
    fn stall(&self, until: Instant) {
        let mut u = self.until.lock().expect("stall lock");
        *u = Some(u.map_or(until, |u| u.max(until)));
    }

    /// The later of this connection's and the global stall end, if either
    /// is still ahead.
    fn until(&self, faults: &Faults) -> Option<Instant> {
        let own = *self.until.lock().expect("stall lock");
        let all = *faults.stall_all_until.lock().expect("stall lock");
        let now = Instant::now();
        own.into_iter().chain(all).filter(|u| *u > now).max()
    }
}

#[derive(Debug, Clone)]
struct ConnEntry {
    id: u64,
    tx: mpsc::UnboundedSender<Bytes>,
    seq: Arc<AtomicU32>,
    receives: bool,
    kill: CancellationToken,
    submits: Arc<AtomicU64>,
    gate: Arc<StallGate>,
}

/// How many times each (source, short message) was submitted, for
/// `--track-submits`.
type SubmitCounts = HashMap<(Vec<u8>, Vec<u8>), u64>;

#[derive(Debug)]
struct SimState {
    config: SimConfig,
    counters: Counters,
    faults: Faults,
    conns: Mutex<Vec<ConnEntry>>,
    next_msg: AtomicU64,
    next_conn: AtomicU64,
    rr: AtomicU64,
    salt: u64,
    submitted: Mutex<SubmitCounts>,
    /// Every accepted submit_sm's options, in arrival order, with
    /// `track_submits` on.
    seen: Mutex<Vec<SeenSubmit>>,
    /// The file [`SimConfig::ledger`] appends to.
    ledger: Option<Mutex<std::fs::File>>,
    /// When each submit_sm of the last second was accepted, with
    /// `track_submits` on.
    recent: Mutex<std::collections::VecDeque<std::time::Instant>>,
    /// Receipts sent and not yet answered with ESME_ROK, by (connection,
    /// sequence number), with `redeliver_receipts` on.
    unacked: Mutex<HashMap<(u64, u32), DeliverSm>>,
    /// Receipts to deliver again, with `redeliver_receipts` on.
    redeliver: Mutex<Vec<DeliverSm>>,
}

impl SimState {
    /// Counts an accepted submit_sm in the sliding second and raises the
    /// peak.
    fn count_recent_submit(&self) {
        let now = std::time::Instant::now();
        let mut recent = self.recent.lock().expect("recent lock");
        recent.push_back(now);
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            recent.pop_front();
        }
        self.counters
            .peak_submits_per_second
            .fetch_max(recent.len() as u64, Ordering::Relaxed);
    }

    /// Counts a `submit_sm` on a connection and fires the armed faults it
    /// triggers; returns whether the connection must be dropped now, and
    /// whether before the response.
    fn on_submit(&self, gate: &StallGate) -> Option<bool> {
        let n = self.counters.submits.fetch_add(1, Ordering::Relaxed) + 1;
        let f = &self.faults;
        if f.stall_at.load(Ordering::Relaxed) == n
            && f.stall_at
                .compare_exchange(n, 0, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            && let Some(st) = *f.stall.lock().expect("stall lock")
        {
            self.start_stall(st, Some(gate));
        }
        if f.drop_at.load(Ordering::Relaxed) == n
            && f.drop_at
                .compare_exchange(n, 0, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.counters.drops.fetch_add(1, Ordering::Relaxed);
            return Some(f.drop_before_response.load(Ordering::Relaxed));
        }
        None
    }

    fn start_stall(&self, st: SimStall, gate: Option<&StallGate>) {
        let until = Instant::now() + st.duration;
        self.counters.stalls.fetch_add(1, Ordering::Relaxed);
        match (st.scope, gate) {
            (StallScope::All, _) => {
                let mut u = self.faults.stall_all_until.lock().expect("stall lock");
                *u = Some(u.map_or(until, |u| u.max(until)));
            }
            (StallScope::Connection, Some(g)) => g.stall(until),
            (StallScope::Connection, None) => {}
        }
        info!(duration = ?st.duration, scope = ?st.scope, "stall begins");
    }

    fn arm_stall(&self, st: SimStall) {
        if st.after_submits == 0 && st.scope == StallScope::All {
            self.faults.stall_at.store(0, Ordering::Relaxed);
            self.start_stall(st, None);
            return;
        }
        *self.faults.stall.lock().expect("stall lock") = Some(st);
        let now = self.counters.submits.load(Ordering::Relaxed);
        self.faults
            .stall_at
            .store(now + st.after_submits.max(1), Ordering::Relaxed);
    }

    fn arm_drop(&self, d: SimDrop) {
        self.faults
            .drop_before_response
            .store(d.before_response, Ordering::Relaxed);
        let now = self.counters.submits.load(Ordering::Relaxed);
        self.faults
            .drop_at
            .store(now + d.after_submits.max(1), Ordering::Relaxed);
    }

    /// Remembers a receipt sent on `conn` as `seq` until it is answered.
    fn sent_receipt(&self, conn: u64, seq: u32, pdu: &DeliverSm) {
        self.unacked
            .lock()
            .expect("unacked lock")
            .insert((conn, seq), pdu.clone());
    }

    /// A deliver_sm_resp for `seq` on `conn`: the receipt is done with when
    /// `ok`, else queued to be delivered again.
    fn answered_receipt(&self, conn: u64, seq: u32, ok: bool) {
        let Some(pdu) = self
            .unacked
            .lock()
            .expect("unacked lock")
            .remove(&(conn, seq))
        else {
            return;
        };
        if !ok {
            self.redeliver.lock().expect("redeliver lock").push(pdu);
        }
    }

    /// Queues the receipts left unanswered on a closed connection to be
    /// delivered again.
    fn connection_closed(&self, conn: u64) {
        if !self.config.redeliver_receipts {
            return;
        }
        let mut left: Vec<((u64, u32), DeliverSm)> = Vec::new();
        self.unacked.lock().expect("unacked lock").retain(|k, v| {
            if k.0 == conn {
                left.push((*k, v.clone()));
                false
            } else {
                true
            }
        });
        left.sort_by_key(|(k, _)| k.1);
        if !left.is_empty() {
            info!(
                conn_id = conn,
                receipts = left.len(),
                "receipts left unanswered on a closed connection; delivering them again"
            );
        }
        self.redeliver
            .lock()
            .expect("redeliver lock")
            .extend(left.into_iter().map(|(_, p)| p));
    }

    fn receiver(&self) -> Option<ConnEntry> {
        let conns = self.conns.lock().expect("conns lock");
        let rx: Vec<_> = conns.iter().filter(|c| c.receives).collect();
        if rx.is_empty() {
            return None;
        }
        let i = self.rr.fetch_add(1, Ordering::Relaxed) as usize % rx.len();
        Some(rx[i].clone())
    }
}

/// Control and counters of a running simulator.
#[derive(Debug, Clone)]
pub struct SimHandle {
    addr: SocketAddr,
    state: Arc<SimState>,
}

/// Starts the simulator: binds the listener and serves until `cancel`.
pub async fn run(config: SimConfig, cancel: CancellationToken) -> Result<SimHandle> {
    let acceptor = match &config.tls {
        Some(t) => Some(tokio_rustls::TlsAcceptor::from(
            crate::tls::server_config(&t.cert_pem, &t.key_pem).map_err(|reason| {
                Error::SimConfig {
                    reason: format!("TLS {reason}"),
                }
            })?,
        )),
        None => None,
    };
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let (stall, drop_connection) = (config.stall, config.drop_connection);
    let (submitted, ledger) = match &config.ledger {
        Some(path) => open_ledger(path)?,
        None => (HashMap::new(), None),
    };
    let state = Arc::new(SimState {
        config,
        counters: Counters::default(),
        faults: Faults::default(),
        conns: Mutex::new(Vec::new()),
        next_msg: AtomicU64::new(1),
        next_conn: AtomicU64::new(1),
        rr: AtomicU64::new(0),
        salt: rand::random(),
        submitted: Mutex::new(submitted),
        seen: Mutex::new(Vec::new()),
        ledger,
        recent: Mutex::new(std::collections::VecDeque::new()),
        unacked: Mutex::new(HashMap::new()),
        redeliver: Mutex::new(Vec::new()),
    });
    if state.config.redeliver_receipts {
        tokio::spawn(redeliver_loop(state.clone(), cancel.clone()));
    }
    if let Some(st) = stall {
        state.arm_stall(st);
    }
    if let Some(d) = drop_connection {
        state.arm_drop(d);
    }
    info!(%addr, tls = acceptor.is_some(), "SMSC simulator listening");
    let st = state.clone();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = cancel.cancelled() => break,
            };
            match accepted {
                Ok((stream, peer)) => {
                    st.counters.connections.fetch_add(1, Ordering::Relaxed);
                    let _ = stream.set_nodelay(true);
                    let kill = cancel.child_token();
                    let Some(acceptor) = acceptor.clone() else {
                        let (r, w) = stream.into_split();
                        tokio::spawn(serve(st.clone(), r, w, peer, kill));
                        continue;
                    };
                    let st = st.clone();
                    tokio::spawn(async move {
                        let hs =
                            tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                        match hs.await {
                            Ok(Ok(tls)) => {
                                let (r, w) = tokio::io::split(tls);
                                serve(st, r, w, peer, kill).await;
                            }
                            Ok(Err(e)) => {
                                st.counters.tls_failures.fetch_add(1, Ordering::Relaxed);
                                debug!(%peer, error = %e, "TLS handshake failed");
                            }
                            Err(_) => {
                                st.counters.tls_failures.fetch_add(1, Ordering::Relaxed);
                                debug!(%peer, "TLS handshake timed out");
                            }
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    Ok(SimHandle { addr, state })
}

impl SimHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// All counters.
    pub fn counters(&self) -> SimCounters {
        let c = &self.state.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SimCounters {
            binds: l(&c.binds),
            binds_refused: l(&c.binds_refused),
            submits: l(&c.submits),
            throttled: l(&c.throttled),
            receipts_sent: l(&c.receipts_sent),
            deliver_sm_resps: l(&c.deliver_sm_resps),
            enquire_links: l(&c.enquire_links),
            enquire_link_resps: l(&c.enquire_link_resps),
            nacked: l(&c.nacked),
            unbinds: l(&c.unbinds),
            connections: l(&c.connections),
            tls_failures: l(&c.tls_failures),
            peak_bound: l(&c.peak_bound),
            stalls: l(&c.stalls),
            drops: l(&c.drops),
            receipts_redelivered: l(&c.receipts_redelivered),
            receipts_refused: l(&c.receipts_refused),
            peak_submits_per_second: l(&c.peak_submits_per_second),
        }
    }

    /// Starts the peak of bound connections over from the number bound now,
    /// and the peak of submits per second from zero.
    pub fn reset_peak_bound(&self) {
        let now = self.bound_connections() as u64;
        self.state.counters.peak_bound.store(now, Ordering::Relaxed);
        self.state.recent.lock().expect("recent lock").clear();
        self.state
            .counters
            .peak_submits_per_second
            .store(0, Ordering::Relaxed);
    }

    /// The accepted submit_sm per (destination, short message); empty
    /// unless the config's `track_submits` is on.
    pub fn submissions(&self) -> Submissions {
        let map = self.state.submitted.lock().expect("submitted lock");
        let mut repeated: Vec<_> = map
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|((d, t), n)| {
                (
                    String::from_utf8_lossy(d).into_owned(),
                    String::from_utf8_lossy(t).into_owned(),
                    *n,
                )
            })
            .collect();
        repeated.sort();
        Submissions {
            distinct: map.len() as u64,
            repeated,
        }
    }

    /// Every accepted (destination, short message) pair with how many times
    /// it was accepted, sorted, with `track_submits` on (empty otherwise).
    pub fn all_submissions(&self) -> Vec<(String, String, u64)> {
        let map = self.state.submitted.lock().expect("submitted lock");
        let mut all: Vec<_> = map
            .iter()
            .map(|((d, t), n)| {
                (
                    String::from_utf8_lossy(d).into_owned(),
                    String::from_utf8_lossy(t).into_owned(),
                    *n,
                )
            })
            .collect();
        all.sort();
        all
    }

    /// Every accepted submit_sm, in the order the simulator accepted them,
    /// with `track_submits` on (empty otherwise).
    pub fn seen_submits(&self) -> Vec<SeenSubmit> {
        self.state.seen.lock().expect("seen lock").clone()
    }

    /// The bound connections, oldest first.
    pub fn connections(&self) -> Vec<SimConnection> {
        let conns = self.state.conns.lock().expect("conns lock").clone();
        conns
            .iter()
            .map(|c| SimConnection {
                id: c.id,
                submits: c.submits.load(Ordering::Relaxed),
                stalled: c.gate.until(&self.state.faults).is_some(),
            })
            .collect()
    }

    /// Arms a stall (replacing one armed before): see [`SimStall`].
    pub fn arm_stall(&self, stall: SimStall) {
        self.state.arm_stall(stall);
    }

    /// Stalls the bound connection `id` for `duration` from now (no-op when
    /// it is not bound): see [`SimStall`].
    pub fn stall_connection(&self, id: u64, duration: Duration) {
        let conns = self.state.conns.lock().expect("conns lock").clone();
        if let Some(c) = conns.iter().find(|c| c.id == id) {
            self.state.start_stall(
                SimStall {
                    after_submits: 0,
                    duration,
                    scope: StallScope::Connection,
                },
                Some(&c.gate),
            );
        }
    }

    /// Arms a dropped connection (replacing one armed before): see
    /// [`SimDrop`].
    pub fn arm_drop(&self, drop: SimDrop) {
        self.state.arm_drop(drop);
    }

    /// Accepted binds so far.
    pub fn binds(&self) -> u64 {
        self.counters().binds
    }

    /// submit_sm received so far.
    pub fn submits(&self) -> u64 {
        self.counters().submits
    }

    /// Receipts sent so far.
    pub fn receipts_sent(&self) -> u64 {
        self.counters().receipts_sent
    }

    /// Connections currently bound.
    pub fn bound_connections(&self) -> usize {
        self.state.conns.lock().expect("conns lock").len()
    }

    /// Answers the next `n` submit_sm with ESME_RTHROTTLED.
    pub fn throttle_next(&self, n: u64) {
        self.state.faults.throttle_next.store(n, Ordering::Relaxed);
    }

    /// Answers the next `n` submit_sm with generic_nack (ESME_RSYSERR).
    pub fn nack_next(&self, n: u64) {
        self.state.faults.nack_next.store(n, Ordering::Relaxed);
    }

    /// Sends `enquire_link` on every bound connection.
    pub fn enquire_link_all(&self) {
        let conns = self.state.conns.lock().expect("conns lock").clone();
        for c in conns {
            let mut b = BytesMut::new();
            let seq = c.seq.fetch_add(1, Ordering::Relaxed);
            encode_into(
                &Command::new(CommandStatus::EsmeRok, seq, Pdu::EnquireLink),
                &mut b,
            );
            let _ = c.tx.send(b.freeze());
        }
    }

    /// Answers this fraction (0..=1) of submit_sm with ESME_RTHROTTLED.
    pub fn set_throttle_rate(&self, fraction: f64) {
        let p = (fraction.clamp(0.0, 1.0) * 1000.0).round() as u32;
        self.state
            .faults
            .throttle_permille
            .store(p, Ordering::Relaxed);
    }

    /// Delays every submit_sm_resp by `delay` (`None`: answer at once).
    pub fn set_response_delay(&self, delay: Option<Duration>) {
        let ms = delay.map_or(0, |d| d.as_millis() as u64);
        self.state
            .faults
            .response_delay_ms
            .store(ms, Ordering::Relaxed);
    }

    /// Stops answering submit_sm (they are counted, never answered).
    pub fn set_drop_responses(&self, on: bool) {
        self.state
            .faults
            .drop_responses
            .store(on, Ordering::Relaxed);
    }

    /// Refuses every bind with ESME_RBINDFAIL.
    pub fn set_refuse_binds(&self, on: bool) {
        self.state.faults.refuse_binds.store(on, Ordering::Relaxed);
    }

    /// Stops answering enquire_link (a "dead" peer that keeps the socket).
    pub fn set_ignore_enquire_link(&self, on: bool) {
        self.state
            .faults
            .ignore_enquire_link
            .store(on, Ordering::Relaxed);
    }

    /// Closes every connection abruptly.
    pub fn drop_connections(&self) {
        let conns = std::mem::take(&mut *self.state.conns.lock().expect("conns lock"));
        for c in conns {
            c.kill.cancel();
        }
    }

    /// Sends `unbind` on every bound connection (SMSC-initiated unbind).
    pub fn unbind_all(&self) {
        let conns = self.state.conns.lock().expect("conns lock").clone();
        for c in conns {
            let mut b = BytesMut::new();
            let seq = c.seq.fetch_add(1, Ordering::Relaxed);
            encode_into(
                &Command::new(CommandStatus::EsmeRok, seq, Pdu::Unbind),
                &mut b,
            );
            let _ = c.tx.send(b.freeze());
        }
    }

    /// Sends a deliver_sm to one receiving connection (round robin).
    pub fn deliver(&self, pdu: DeliverSm) -> Result<()> {
        let c = self.state.receiver().ok_or_else(|| Error::Protocol {
            reason: "no bound receiver connection".into(),
        })?;
        let mut b = BytesMut::new();
        let seq = c.seq.fetch_add(1, Ordering::Relaxed);
        encode_into(
            &Command::new(CommandStatus::EsmeRok, seq, Pdu::DeliverSm(pdu)),
            &mut b,
        );
        c.tx.send(b.freeze()).map_err(|_| Error::ConnectionClosed)
    }

    /// Injects a mobile-originated part: `payload` already carries its UDH
    /// when `esm_class` has UDHI (0x40); `sar` adds SAR TLVs.
    pub fn deliver_mo(
        &self,
        source: &Address,
        destination: &Address,
        data_coding: u8,
        esm_class: u8,
        payload: &[u8],
        sar: Option<Sar>,
    ) -> Result<()> {
        let bad = |e: String| Error::InvalidRequest {
            command_status: crate::error::ESME_RSYSERR,
            reason: e,
        };
        let mut tlvs = Vec::new();
        if let Some(s) = sar {
            tlvs.push(MessageDeliveryRequestTlvValue::SarMsgRefNum(s.ref_num));
            tlvs.push(MessageDeliveryRequestTlvValue::SarTotalSegments(s.total));
            tlvs.push(MessageDeliveryRequestTlvValue::SarSegmentSeqnum(s.seq));
        }
        let pdu = DeliverSm::builder()
            .source_addr_ton(Ton::from(source.ton))
            .source_addr_npi(Npi::from(source.npi))
            .source_addr(
                COctetString::from_string(source.addr.clone()).map_err(|e| bad(e.to_string()))?,
            )
            .dest_addr_ton(Ton::from(destination.ton))
            .dest_addr_npi(Npi::from(destination.npi))
            .destination_addr(
                COctetString::from_string(destination.addr.clone())
                    .map_err(|e| bad(e.to_string()))?,
            )
            .esm_class(EsmClass::from(esm_class))
            .data_coding(DataCoding::from(data_coding))
            .short_message(OctetString::from_slice(payload).map_err(|e| bad(e.to_string()))?)
            .tlvs(tlvs)
            .build();
        self.deliver(pdu)
    }
}

/// A mobile-originated text as a handset sends it, for
/// [`SimHandle::deliver_mo_text`]: the alphabet and national shift tables
/// are the ones given (not the cheapest), the text is cut every
/// `units_per_part` units (even inside an escape or surrogate pair, as a
/// careless sender would), and the parts go out in the order given.
///
/// # Defaults
///
/// GSM 7-bit with the default tables, one part, 8-bit UDH concatenation
/// when there are several, reference 1, no extra header elements.
#[derive(Debug, Clone)]
pub struct MoText {
    text: String,
    encoding: smsgw_text::Encoding,
    shift: smsgw_text::NationalShift,
    concat: smsgw_text::Concat,
    units_per_part: Option<usize>,
    order: Vec<usize>,
    extra_ies: Vec<(u8, Vec<u8>)>,
    reference: u16,
}

impl MoText {
    /// `text` with the defaults.
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            encoding: smsgw_text::Encoding::Gsm7,
            shift: smsgw_text::NationalShift::NONE,
            concat: smsgw_text::Concat::Udh8,
            units_per_part: None,
            order: Vec::new(),
            extra_ies: Vec::new(),
            reference: 1,
        }
    }

    /// The text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Sends it in `encoding`.
    pub fn encoding(mut self, encoding: smsgw_text::Encoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// GSM 7-bit with these national shift tables, announced in every
    /// part's UDH (IEI 0x25 locking, 0x24 single).
    pub fn shift(mut self, shift: smsgw_text::NationalShift) -> Self {
        self.encoding = smsgw_text::Encoding::Gsm7;
        self.shift = shift;
        self
    }

    /// Cuts the text every `units` septets, octets or UTF-16 units.
    pub fn units_per_part(mut self, units: usize) -> Self {
        self.units_per_part = Some(units.max(1));
        self
    }

    /// Ties the parts with a UDH (8- or 16-bit reference) or SAR TLVs.
    pub fn concat(mut self, concat: smsgw_text::Concat) -> Self {
        self.concat = concat;
        self
    }

    /// Sends the parts in this order (0-based part indices).
    pub fn order(mut self, order: impl Into<Vec<usize>>) -> Self {
        self.order = order.into();
        self
    }

    /// Adds an information element (IEI, data) to every part's UDH, e.g.
    /// an application port element, so that even a single part has a UDH.
    pub fn extra_ie(mut self, iei: u8, data: impl Into<Vec<u8>>) -> Self {
        self.extra_ies.push((iei, data.into()));
        self
    }

    /// The concatenation reference.
    pub fn reference(mut self, reference: u16) -> Self {
        self.reference = reference;
        self
    }

    /// The deliver_sm payloads (UDH included), UDHI and SAR TLVs of the
    /// parts, in sending order.
    fn parts(&self) -> Result<Vec<MoWirePart>> {
        use smsgw_text::{Concat, Encoding};
        let bad = |reason: String| Error::InvalidRequest {
            command_status: crate::error::ESME_RSYSERR,
            reason,
        };
        let (body, unit) = match self.encoding {
            Encoding::Gsm7 => (
                smsgw_text::encode_gsm7(&self.text, self.shift).map_err(|e| bad(e.to_string()))?,
                1,
            ),
            Encoding::Latin1 => (
                self.text
                    .chars()
                    .map(|c| {
                        u8::try_from(u32::from(c)).map_err(|_| bad(format!("{c:?} is not Latin-1")))
                    })
                    .collect::<Result<Vec<u8>>>()?,
                1,
            ),
            Encoding::Ucs2 => (
                self.text
                    .encode_utf16()
                    .flat_map(u16::to_be_bytes)
                    .collect(),
                2,
            ),
        };
        let per = self.units_per_part.map_or(body.len().max(1), |u| u * unit);
        let chunks: Vec<&[u8]> = body.chunks(per).collect();
        let total = u8::try_from(chunks.len()).map_err(|_| bad("more than 255 parts".into()))?;
        let multipart = total > 1;
        if multipart && self.concat == Concat::MessagePayload {
            return Err(bad("message_payload MO is one part".into()));
        }
        let order: Vec<usize> = if self.order.is_empty() {
            (0..chunks.len()).collect()
        } else {
            self.order.clone()
        };
        order
            .into_iter()
            .map(|i| {
                let chunk = chunks
                    .get(i)
                    .ok_or_else(|| bad(format!("no part {i} of {total}")))?;
                let seq = i as u8 + 1;
                let mut ies = Vec::new();
                match self.concat {
                    Concat::Udh8 if multipart => {
                        ies.extend_from_slice(&[0x00, 3, self.reference as u8, total, seq])
                    }
                    Concat::Udh16 if multipart => {
                        let [hi, lo] = self.reference.to_be_bytes();
                        ies.extend_from_slice(&[0x08, 4, hi, lo, total, seq]);
                    }
                    _ => {}
                }
                if let Some(l) = self.shift.locking {
                    ies.extend_from_slice(&[0x25, 1, l.id()]);
                }
                if let Some(l) = self.shift.single {
                    ies.extend_from_slice(&[0x24, 1, l.id()]);
                }
                for (iei, data) in &self.extra_ies {
                    ies.push(*iei);
                    ies.push(data.len() as u8);
                    ies.extend_from_slice(data);
                }
                let mut payload = Vec::new();
                if !ies.is_empty() {
                    payload.push(ies.len() as u8);
                    payload.extend_from_slice(&ies);
                }
                payload.extend_from_slice(chunk);
                let sar = (multipart && self.concat == Concat::Sar).then_some(Sar {
                    ref_num: self.reference,
                    total,
                    seq,
                });
                Ok((payload, !ies.is_empty(), sar))
            })
            .collect()
    }
}

impl SimHandle {
    /// Sends `mo` from `source` to `destination` as one deliver_sm per part
    /// (see [`MoText`]); returns how many parts went out.
    pub fn deliver_mo_text(
        &self,
        source: &Address,
        destination: &Address,
        mo: &MoText,
    ) -> Result<usize> {
        let parts = mo.parts()?;
        for (payload, udhi, sar) in &parts {
            let esm = if *udhi { 0x40 } else { 0 };
            self.deliver_mo(
                source,
                destination,
                mo.encoding.data_coding(),
                esm,
                payload,
                *sar,
            )?;
        }
        Ok(parts.len())
    }
}

fn format_id(n: u64, f: SimIdFormat, salt: u64, for_receipt: bool) -> String {
    match f {
        SimIdFormat::Hex => format!("{n:08X}"),
        SimIdFormat::Decimal => format!("{n:010}"),
        SimIdFormat::Uuid => {
            let h = n ^ salt;
            let s = format!(
                "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
                (h >> 32) as u32,
                (h >> 16) as u16,
                (h & 0xfff) as u16,
                (n & 0xfff) as u16,
                n
            );
            if for_receipt { s } else { s.to_uppercase() }
        }
    }
}

struct ReceiptJob {
    due: Instant,
    n: u64,
    source: Address,
    destination: Address,
    submitted: SystemTime,
    text: Vec<u8>,
}

fn pick_state(mix: &ReceiptMix) -> (&'static str, MessageState, u16) {
    let total = mix.delivered + mix.undeliverable + mix.expired + mix.rejected;
    if total == 0 {
        return ("DELIVRD", MessageState::Delivered, 0);
    }
    let mut r = rand::random_range(0..total);
    for (w, s) in [
        (mix.delivered, ("DELIVRD", MessageState::Delivered, 0)),
        (
            mix.undeliverable,
            ("UNDELIV", MessageState::Undeliverable, 1),
        ),
        (mix.expired, ("EXPIRED", MessageState::Expired, 0)),
        (mix.rejected, ("REJECTD", MessageState::Rejected, 11)),
    ] {
        if r < w {
            return s;
        }
        r -= w;
    }
    ("DELIVRD", MessageState::Delivered, 0)
}

fn receipt_pdu(state: &SimState, job: &ReceiptJob) -> Option<DeliverSm> {
    let cfg = &state.config;
    let fmt = cfg.receipt_id_format.unwrap_or(cfg.id_format);
    let id = format_id(job.n, fmt, state.salt, true);
    let (stat, mstate, err) = pick_state(&cfg.receipt_mix);
    let text_prefix: String = String::from_utf8_lossy(&job.text)
        .chars()
        .take(20)
        .collect();
    let text = format!(
        "id:{id} sub:001 dlvrd:{} submit date:{} done date:{} stat:{stat} err:{err:03} text:{text_prefix}",
        if mstate == MessageState::Delivered {
            "001"
        } else {
            "000"
        },
        format_smpp_date(job.submitted, false),
        format_smpp_date(SystemTime::now(), false),
    );
    let mut text = text.into_bytes();
    text.truncate(254);
    let mut tlvs = Vec::new();
    if cfg.receipt_tlvs {
        tlvs.push(MessageDeliveryRequestTlvValue::ReceiptedMessageId(
            COctetString::from_string(id).ok()?,
        ));
        tlvs.push(MessageDeliveryRequestTlvValue::MessageState(mstate));
        if err != 0 {
            tlvs.push(MessageDeliveryRequestTlvValue::NetworkErrorCode(
                NetworkErrorCode::new(ErrorCodeNetworkType::Gsm, err),
            ));
        }
    }
    Some(
        DeliverSm::builder()
            .source_addr_ton(Ton::from(job.destination.ton))
            .source_addr_npi(Npi::from(job.destination.npi))
            .source_addr(COctetString::from_string(job.destination.addr.clone()).ok()?)
            .dest_addr_ton(Ton::from(job.source.ton))
            .dest_addr_npi(Npi::from(job.source.npi))
            .destination_addr(COctetString::from_string(job.source.addr.clone()).ok()?)
            .esm_class(EsmClass::from(0x04))
            .short_message(OctetString::from_vec(text).ok()?)
            .tlvs(tlvs)
            .build(),
    )
}

/// One MO part as the simulator sends it: the short_message payload (UDH
/// included), whether UDHI is set, and the SAR TLVs when SAR is used.
type MoWirePart = (Vec<u8>, bool, Option<Sar>);

async fn receipt_loop(
    state: Arc<SimState>,
    own: Option<ConnEntry>,
    mut jobs: mpsc::UnboundedReceiver<ReceiptJob>,
    kill: CancellationToken,
) {
    let mut batch = std::collections::VecDeque::with_capacity(256);
    let own_id = own.as_ref().map(|c| c.id);
    send_receipts(&state, own, &mut jobs, &mut batch, kill).await;
    if state.config.redeliver_receipts {
        // The connection is gone: what it still owed, another gets.
        if let Some(c) = &own_id {
            state.connection_closed(*c);
        }
        while let Ok(j) = jobs.try_recv() {
            batch.push_back(j);
        }
        let pdus: Vec<DeliverSm> = batch
            .iter()
            .filter_map(|j| receipt_pdu(&state, j))
            .collect();
        state.redeliver.lock().expect("redeliver lock").extend(pdus);
    }
}

/// Sends the receipts `jobs` brings as they fall due, until `kill` or the
/// end of `jobs`; what was not sent is left in `batch`.
async fn send_receipts(
    state: &Arc<SimState>,
    own: Option<ConnEntry>,
    jobs: &mut mpsc::UnboundedReceiver<ReceiptJob>,
    batch: &mut std::collections::VecDeque<ReceiptJob>,
    kill: CancellationToken,
) {
    let mut incoming = Vec::with_capacity(256);
    loop {
        let n = tokio::select! {
            n = jobs.recv_many(&mut incoming, 256) => n,
            _ = kill.cancelled() => return,
        };
        if n == 0 {
            return;
        }
        batch.extend(incoming.drain(..));
        if state.config.reverse_receipts {
            // Gather everything due within the window of the first job,
            // then send it newest first.
            let until = batch[0].due;
            loop {
                tokio::select! {
                    _ = sleep_until(until) => break,
                    more = jobs.recv() => match more {
                        Some(j) => batch.push_back(j),
                        None => break,
                    },
                    _ = kill.cancelled() => return,
                }
            }
            batch.make_contiguous().reverse();
            for j in batch.iter_mut() {
                j.due = until;
            }
        }
        let mut out: Option<Outgoing> = None;
        while let Some(due) = batch.front().map(|j| j.due) {
            if due > Instant::now() {
                if let Some(o) = out.take() {
                    flush_receipts(state, o);
                }
                tokio::select! {
                    _ = sleep_until(due) => {}
                    _ = kill.cancelled() => {
                        if let Some(o) = out {
                            state.redeliver.lock().expect("redeliver lock")
                                .extend(o.sent.into_iter().map(|(_, p)| p));
                        }
                        return;
                    }
                }
            }
            let job = batch.pop_front().expect("a job is due");
            let target = match (&out, &own) {
                (Some(o), _) => Some(o.conn.clone()),
                (None, Some(c)) => Some(c.clone()),
                (None, None) => state.receiver(),
            };
            let Some(pdu) = receipt_pdu(state, &job) else {
                continue;
            };
            let Some(target) = target else {
                if state.config.redeliver_receipts {
                    state.redeliver.lock().expect("redeliver lock").push(pdu);
                } else {
                    debug!("no receiver bound; receipt dropped");
                }
                continue;
            };
            let o = out.get_or_insert_with(|| Outgoing {
                conn: target.clone(),
                buf: BytesMut::new(),
                sent: Vec::new(),
            });
            let seq = target.seq.fetch_add(1, Ordering::Relaxed);
            if state.config.redeliver_receipts {
                o.sent.push((seq, pdu.clone()));
            }
            encode_into(
                &Command::new(CommandStatus::EsmeRok, seq, Pdu::DeliverSm(pdu)),
                &mut o.buf,
            );
            state.counters.receipts_sent.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(o) = out.take() {
            flush_receipts(state, o);
        }
    }
}

/// Receipts encoded for one connection, not yet written.
struct Outgoing {
    conn: ConnEntry,
    buf: BytesMut,
    /// Sequence number and PDU of each, with `redeliver_receipts` on.
    sent: Vec<(u32, DeliverSm)>,
}

/// Writes encoded receipts to their connection and, with
/// `redeliver_receipts` on, keeps them until answered; if the connection
/// is gone, they are queued to be delivered again.
fn flush_receipts(state: &SimState, o: Outgoing) {
    for (seq, pdu) in &o.sent {
        state.sent_receipt(o.conn.id, *seq, pdu);
    }
    if o.conn.tx.send(o.buf.freeze()).is_err() {
        state.connection_closed(o.conn.id);
    }
}

/// Delivers the receipts queued again (refused, or left unanswered on a
/// closed connection) on a receiving connection, every 100 ms.
async fn redeliver_loop(state: Arc<SimState>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        let pdus = std::mem::take(&mut *state.redeliver.lock().expect("redeliver lock"));
        if pdus.is_empty() {
            continue;
        }
        let Some(target) = state.receiver() else {
            state.redeliver.lock().expect("redeliver lock").extend(pdus);
            continue;
        };
        let mut buf = BytesMut::new();
        for pdu in pdus {
            let seq = target.seq.fetch_add(1, Ordering::Relaxed);
            state.sent_receipt(target.id, seq, &pdu);
            encode_into(
                &Command::new(CommandStatus::EsmeRok, seq, Pdu::DeliverSm(pdu)),
                &mut buf,
            );
            state
                .counters
                .receipts_redelivered
                .fetch_add(1, Ordering::Relaxed);
        }
        if target.tx.send(buf.freeze()).is_err() {
            // Closed meanwhile: its close queues them again.
            state.connection_closed(target.id);
        }
    }
}

fn put_header(out: &mut BytesMut, len: usize, id: u32, status: u32, seq: u32) {
    out.put_u32(len as u32);
    out.put_u32(id);
    out.put_u32(status);
    out.put_u32(seq);
}

async fn write_loop(
    mut w: impl AsyncWrite + Unpin,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    state: Arc<SimState>,
    gate: Arc<StallGate>,
) {
    let mut batch = Vec::with_capacity(64);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    while rx.recv_many(&mut batch, 64).await > 0 {
        crate::session::gather(&mut rx, &mut batch, 64).await;
        // A stalled connection holds back everything until the stall ends.
        while let Some(until) = gate.until(&state.faults) {
            sleep_until(until).await;
        }
        if batch.len() == 1 {
            let b = batch.pop().expect("one");
            if w.write_all(&b).await.is_err() || w.flush().await.is_err() {
                return;
            }
            continue;
        }
        for b in batch.drain(..) {
            buf.extend_from_slice(&b);
        }
        if w.write_all(&buf).await.is_err() || w.flush().await.is_err() {
            return;
        }
        buf.clear();
    }
    // A clean end (TLS close_notify, TCP FIN) once every response is out.
    let _ = w.shutdown().await;
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Bound {
    No,
    Tx,
    Rx,
    Trx,
}

async fn serve(
    state: Arc<SimState>,
    mut r: impl AsyncRead + Unpin,
    w: impl AsyncWrite + Unpin + Send + 'static,
    peer: SocketAddr,
    kill: CancellationToken,
) {
    let conn_id = state.next_conn.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let gate = Arc::new(StallGate::default());
    let submits = Arc::new(AtomicU64::new(0));
    let writer = tokio::spawn(write_loop(w, rx, state.clone(), gate.clone()));
    let seq = Arc::new(AtomicU32::new(1));
    let mut codec = SmppCodec::default();
    let mut inbuf = BytesMut::with_capacity(64 * 1024);
    let mut out = BytesMut::with_capacity(64 * 1024);
    let mut bound = Bound::No;
    let mut receipts: Option<mpsc::UnboundedSender<ReceiptJob>> = None;
    let mut close = false;
    debug!(%peer, conn_id, "connection");
    'conn: loop {
        let n = tokio::select! {
            n = r.read_buf(&mut inbuf) => n,
            _ = kill.cancelled() => break,
        };
        match n {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        loop {
            if close {
                break;
            }
            let frame = match codec.decode(&mut inbuf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    warn!(error = %e, "undecodable stream; closing");
                    break 'conn;
                }
            };
            let cmd = match frame {
                Frame::Command(c) => c,
                Frame::Malformed {
                    command_id,
                    sequence_number,
                    ..
                } => {
                    if command_id & 0x8000_0000 == 0 {
                        put_header(&mut out, 16, 0x8000_0000, 0x08, sequence_number);
                    }
                    continue;
                }
            };
            let s = cmd.sequence_number();
            match cmd.id() {
                CommandId::BindTransceiver
                | CommandId::BindTransmitter
                | CommandId::BindReceiver => {
                    let (sys, pwd) = match cmd.pdu() {
                        Some(Pdu::BindTransceiver(b)) => {
                            (b.system_id.as_str(), b.password.as_str())
                        }
                        Some(Pdu::BindTransmitter(b)) => {
                            (b.system_id.as_str(), b.password.as_str())
                        }
                        Some(Pdu::BindReceiver(b)) => (b.system_id.as_str(), b.password.as_str()),
                        _ => ("", ""),
                    };
                    let resp_id = u32::from(cmd.id()) | 0x8000_0000;
                    let status = if bound != Bound::No {
                        0x05 // ESME_RALYBND
                    } else if state.faults.refuse_binds.load(Ordering::Relaxed) {
                        0x0D
                    } else if sys != state.config.system_id {
                        0x0F
                    } else if pwd != state.config.password {
                        0x0E
                    } else {
                        0
                    };
                    if status != 0 {
                        state.counters.binds_refused.fetch_add(1, Ordering::Relaxed);
                        put_header(&mut out, 16, resp_id, status, s);
                        continue;
                    }
                    let binds = state.counters.binds.fetch_add(1, Ordering::Relaxed) + 1;
                    // Binds are rare (a few per link life): logged, so a
                    // test of the sim as a process can count them.
                    info!(conn_id, binds, "bind accepted");
                    bound = match cmd.id() {
                        CommandId::BindTransceiver => Bound::Trx,
                        CommandId::BindTransmitter => Bound::Tx,
                        _ => Bound::Rx,
                    };
                    let name = b"SMSCSIM\0";
                    put_header(&mut out, 16 + name.len(), resp_id, 0, s);
                    out.put_slice(name);
                    let entry = ConnEntry {
                        id: conn_id,
                        tx: tx.clone(),
                        seq: seq.clone(),
                        receives: bound != Bound::Tx,
                        kill: kill.clone(),
                        submits: submits.clone(),
                        gate: gate.clone(),
                    };
                    {
                        let mut conns = state.conns.lock().expect("conns lock");
                        conns.push(entry.clone());
                        state
                            .counters
                            .peak_bound
                            .fetch_max(conns.len() as u64, Ordering::Relaxed);
                    }
                    if bound != Bound::Rx {
                        let (jtx, jrx) = mpsc::unbounded_channel();
                        receipts = Some(jtx);
                        let own = (bound == Bound::Trx).then_some(entry);
                        tokio::spawn(receipt_loop(state.clone(), own, jrx, kill.clone()));
                    }
                }
                CommandId::SubmitSm => {
                    submits.fetch_add(1, Ordering::Relaxed);
                    match state.on_submit(&gate) {
                        Some(true) => {
                            info!(conn_id, "dropping the connection before a submit_sm_resp");
                            close = true;
                            continue;
                        }
                        Some(false) => {
                            info!(conn_id, "dropping the connection after a submit_sm_resp");
                            close = true;
                        }
                        None => {}
                    }
                    if !matches!(bound, Bound::Tx | Bound::Trx) {
                        put_header(&mut out, 16, 0x8000_0004, 0x04, s);
                        continue;
                    }
                    let f = &state.faults;
                    if f.drop_responses.load(Ordering::Relaxed) {
                        continue;
                    }
                    if f.nack_next
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                        .is_ok()
                    {
                        state.counters.nacked.fetch_add(1, Ordering::Relaxed);
                        put_header(&mut out, 16, 0x8000_0000, 0x08, s);
                        continue;
                    }
                    let throttle = f
                        .throttle_next
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                        .is_ok()
                        || {
                            let p = f.throttle_permille.load(Ordering::Relaxed);
                            p > 0 && rand::random_range(0..1000) < p
                        };
                    let delay = f.response_delay_ms.load(Ordering::Relaxed);
                    let mut resp = BytesMut::new();
                    let target = if delay > 0 { &mut resp } else { &mut out };
                    if throttle {
                        state.counters.throttled.fetch_add(1, Ordering::Relaxed);
                        put_header(target, 16, 0x8000_0004, 0x58, s);
                    } else {
                        if state.config.track_submits
                            && let Some(Pdu::SubmitSm(sm)) = cmd.pdu()
                        {
                            let key = (
                                sm.destination_addr.as_str().as_bytes().to_vec(),
                                submitted_text(sm),
                            );
                            if let Some(ledger) = &state.ledger {
                                use std::io::Write as _;
                                let line = format!("{} {}\n", to_hex(&key.0), to_hex(&key.1));
                                // Written (to the OS) before the answer,
                                // so a kill after it loses nothing.
                                let _ = ledger
                                    .lock()
                                    .expect("ledger lock")
                                    .write_all(line.as_bytes());
                            }
                            state.seen.lock().expect("seen lock").push(SeenSubmit {
                                destination: String::from_utf8_lossy(&key.0).into_owned(),
                                text: String::from_utf8_lossy(&key.1).into_owned(),
                                data_coding: u8::from(sm.data_coding),
                                priority_flag: u8::from(sm.priority_flag),
                                validity_period: sm.validity_period.as_str().to_owned(),
                                schedule_delivery_time: sm
                                    .schedule_delivery_time
                                    .as_str()
                                    .to_owned(),
                                at: SystemTime::now(),
                            });
                            *state
                                .submitted
                                .lock()
                                .expect("submitted lock")
                                .entry(key)
                                .or_default() += 1;
                            state.count_recent_submit();
                        }
                        let n = state.next_msg.fetch_add(1, Ordering::Relaxed);
                        let id = format_id(n, state.config.id_format, state.salt, false);
                        put_header(target, 17 + id.len(), 0x8000_0004, 0, s);
                        target.put_slice(id.as_bytes());
                        target.put_u8(0);
                        if let (Some(Pdu::SubmitSm(sm)), Some(jobs)) = (cmd.pdu(), &receipts)
                            && u8::from(sm.registered_delivery) & 0x03 != 0
                        {
                            let _ = jobs.send(receipt_job(&state, n, sm, delay));
                        }
                    }
                    if delay > 0 {
                        let tx = tx.clone();
                        let resp = resp.freeze();
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                            let _ = tx.send(resp);
                        });
                    }
                }
                CommandId::EnquireLink => {
                    state.counters.enquire_links.fetch_add(1, Ordering::Relaxed);
                    if !state.faults.ignore_enquire_link.load(Ordering::Relaxed) {
                        put_header(&mut out, 16, 0x8000_0015, 0, s);
                    }
                }
                CommandId::Unbind => {
                    state.counters.unbinds.fetch_add(1, Ordering::Relaxed);
                    put_header(&mut out, 16, 0x8000_0006, 0, s);
                    close = true;
                }
                CommandId::UnbindResp => close = true,
                CommandId::DeliverSmResp => {
                    state
                        .counters
                        .deliver_sm_resps
                        .fetch_add(1, Ordering::Relaxed);
                    let ok = u32::from(cmd.status()) == 0;
                    if !ok {
                        state
                            .counters
                            .receipts_refused
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    state.answered_receipt(conn_id, s, ok);
                }
                CommandId::EnquireLinkResp => {
                    state
                        .counters
                        .enquire_link_resps
                        .fetch_add(1, Ordering::Relaxed);
                }
                CommandId::GenericNack => {}
                id if id.is_response() => {}
                _ => put_header(&mut out, 16, 0x8000_0000, 0x03, s),
            }
        }
        if !out.is_empty() {
            let _ = tx.send(out.split().freeze());
        }
        if close {
            break;
        }
    }
    state
        .conns
        .lock()
        .expect("conns lock")
        .retain(|c| c.id != conn_id);
    state.connection_closed(conn_id);
    kill.cancel();
    drop(tx);
    drop(receipts);
    if close {
        let _ = tokio::time::timeout(Duration::from_millis(200), writer).await;
    } else {
        writer.abort();
    }
    // Again, for receipts sent on it while it was closing.
    state.connection_closed(conn_id);
    debug!(conn_id, "connection closed");
}

/// Reads the ledger at `path` (absent: empty) into counts, and opens it
/// for appending.
fn open_ledger(path: &std::path::Path) -> Result<(SubmitCounts, Option<Mutex<std::fs::File>>)> {
    let bad = |reason: String| Error::SimConfig {
        reason: format!("ledger {}: {reason}", path.display()),
    };
    let mut counts = SubmitCounts::new();
    match std::fs::read_to_string(path) {
        Ok(text) => {
            for line in text.lines() {
                // A line cut short by a kill mid-write is not a submission.
                let Some((d, t)) = line.split_once(' ') else {
                    continue;
                };
                if let (Some(d), Some(t)) = (from_hex(d), from_hex(t)) {
                    *counts.entry((d, t)).or_default() += 1;
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(bad(e.to_string())),
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| bad(e.to_string()))?;
    Ok((counts, Some(Mutex::new(file))))
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The text of a submit_sm: its short message, or its message_payload TLV.
fn submitted_text(sm: &SubmitSm) -> Vec<u8> {
    let mut text = sm.short_message().as_ref().to_vec();
    if text.is_empty() {
        for tlv in sm.tlvs() {
            if let Some(TlvValue::MessagePayload(p)) = tlv.value() {
                text = p.value.as_ref().to_vec();
            }
        }
    }
    text
}

fn receipt_job(state: &SimState, n: u64, sm: &SubmitSm, delay_ms: u64) -> ReceiptJob {
    let text = submitted_text(sm);
    ReceiptJob {
        due: Instant::now() + state.config.receipt_delay + Duration::from_millis(delay_ms),
        n,
        source: Address::new(
            sm.source_addr.as_str(),
            u8::from(sm.source_addr_ton),
            u8::from(sm.source_addr_npi),
        ),
        destination: Address::new(
            sm.destination_addr.as_str(),
            u8::from(sm.dest_addr_ton),
            u8::from(sm.dest_addr_npi),
        ),
        submitted: SystemTime::now(),
        text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn dates_and_ids_are_formatted_like_an_smsc() {
        assert_eq!(
            format_smpp_date(UNIX_EPOCH + Duration::from_secs(1_704_209_465), false),
            "2401021531"
        );
        assert_eq!(format_id(123, SimIdFormat::Hex, 0, false), "0000007B");
        assert_eq!(format_id(123, SimIdFormat::Decimal, 0, false), "0000000123");
        let u = format_id(123, SimIdFormat::Uuid, 42, false);
        assert_eq!(u.len(), 36);
        assert_eq!(
            format_id(123, SimIdFormat::Uuid, 42, true),
            u.to_lowercase()
        );
    }
}
