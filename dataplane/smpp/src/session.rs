//! One bind: connect, bind, keep alive, read, write, drain, unbind, rebind.
//!
//! Each session is a supervisor task that loops over connections. A bound
//! connection has a writer task (batches every queued PDU into one buffer and
//! one `write_all`) and the session task itself, which reads PDUs, matches
//! responses to pending requests by sequence number, answers the SMSC's
//! requests and drives enquire_link, draining and unbinding.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime},
};

use bytes::BytesMut;
use futures::StreamExt;
use rusmpp::{
    Command, CommandStatus, Pdu,
    pdus::{BindReceiver, BindTransceiver, BindTransmitter, DeliverSmResp, SubmitSm},
    types::COctetString,
    values::{InterfaceVersion as RusmppVersion, Npi, Ton},
};
use tokio::{
    io::AsyncWriteExt,
    net::TcpStream,
    sync::{mpsc, oneshot, watch},
    time::{Instant, sleep, sleep_until, timeout},
};
use tokio_util::{codec::FramedRead, sync::CancellationToken};
use tracing::{debug, info, warn};

use crate::{
    codec::{Frame, SmppCodec, encode_into},
    config::{InterfaceVersion, LinkConfig},
    deliver::{Delivered, classify},
    error::Error,
    ids::SmscMessageId,
    link::Shared,
    rate::{Aimd, RateMeter},
    tls::{BoxRead, BoxWrite, TlsClient},
    types::{
        LastError, LinkEvent, LinkState, ReceiptAck, SegmentOutcome, SessionRole, SessionStatus,
        SubmitTag, UnknownReason,
    },
};

/// The answer owed to one receipt's `deliver_sm`: resolves to its sequence
/// number and whether the consumer stored the receipt.
struct AwaitedAck {
    seq: u32,
    rx: oneshot::Receiver<()>,
}

impl std::future::Future for AwaitedAck {
    type Output = (u32, bool);

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<(u32, bool)> {
        let seq = self.seq;
        std::pin::Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| (seq, r.is_ok()))
    }
}

/// The `deliver_sm_resp` of a receipt, sent only once its fate is known:
/// OK when stored, else a temporary error so the SMSC delivers it again.
fn receipt_answer(seq: u32, stored: bool) -> Command {
    let status = if stored { 0 } else { ESME_RX_T_APPN };
    if !stored {
        warn!(
            sequence_number = seq,
            "receipt or mobile-originated message not stored; answered with a temporary error so the SMSC delivers it again"
        );
    }
    Command::new(
        CommandStatus::from(status),
        seq,
        Pdu::DeliverSmResp(DeliverSmResp::default()),
    )
}

/// Answers the receipts and MO still awaiting their consumer, each as soon
/// as it is stored, for at most `within`: the session is ending (`why`),
/// and what is left unanswered the SMSC delivers again.
async fn answer_owed(
    acks: &mut AwaitedAcks,
    within: Duration,
    send: impl Fn(Command),
    why: &'static str,
) {
    let deadline = Instant::now() + within;
    while !acks.is_empty() {
        match tokio::time::timeout_at(deadline, acks.next()).await {
            Ok(Some((s, stored))) => send(receipt_answer(s, stored)),
            _ => {
                warn!(
                    unanswered = acks.len(),
                    why, "receipts or MO not stored in time are left unanswered"
                );
                break;
            }
        }
    }
}

/// Receipts whose `deliver_sm_resp` waits for them to be stored.
type AwaitedAcks = futures::stream::FuturesUnordered<AwaitedAck>;

/// What a connection owes and is owed: answers to our requests, and
/// answers to the SMSC's receipts once stored.
struct Owed<'a> {
    pending: &'a PendingMap,
    acks: &'a mut AwaitedAcks,
}

/// ESME_RMSGQFUL.
pub const ESME_RMSGQFUL: u32 = 0x14;
/// ESME_RTHROTTLED.
pub const ESME_RTHROTTLED: u32 = 0x58;
const ESME_RSYSERR: u32 = 0x08;
/// ESME_RX_T_APPN, "ESME receiver temporary app error": the answer to a
/// receipt that could not be stored, so the SMSC delivers it again.
pub const ESME_RX_T_APPN: u32 = 0x64;
const ESME_RINVCMDID: u32 = 0x03;

/// Most PDUs queued for an SMSC that does not read them (responses to its
/// requests, beyond the send window of our own): past it the connection
/// is closed rather than buffering without bound.
pub(crate) const MAX_QUEUED_PDUS: usize = 4096;

/// What a pending request gets back.
#[derive(Debug)]
pub(crate) enum Reply {
    Response {
        status: u32,
        message_id: Option<String>,
    },
    Malformed {
        reason: String,
    },
    ConnectionLost,
}

#[derive(Debug)]
enum Pending {
    Waiting(oneshot::Sender<Reply>),
    TimedOut {
        since: Instant,
        tag: Option<SubmitTag>,
    },
}

#[derive(Debug, Default)]
struct PendingInner {
    closed: bool,
    waiting: usize,
    /// Entries that timed out, remembered for a late answer.
    timed_out: usize,
    /// Bytes of the tags of `timed_out`.
    tag_bytes: usize,
    /// submit_sm response timeouts since the last response in time.
    timeouts_in_row: u32,
    map: HashMap<u32, Pending>,
}

/// Requests of one connection awaiting their response, by sequence number.
#[derive(Debug, Default)]
pub(crate) struct PendingMap {
    inner: Mutex<PendingInner>,
    /// Fires when the connection is found stalled (too many response
    /// timeouts in a row); the connection task then closes it.
    stalled: CancellationToken,
}

/// Bytes a remembered tag holds.
fn tag_len(tag: &Option<SubmitTag>) -> usize {
    tag.as_ref().map_or(0, |t| t.tag.len())
}

enum Resolved {
    Waiter(oneshot::Sender<Reply>),
    Late(Option<SubmitTag>),
    Unknown,
}

impl PendingMap {
    fn insert(&self, seq: u32, tx: oneshot::Sender<Reply>) -> bool {
        let mut g = self.inner.lock().expect("pending lock");
        if g.closed {
            return false;
        }
        g.waiting += 1;
        g.map.insert(seq, Pending::Waiting(tx));
        true
    }

    fn remove_waiting(&self, seq: u32) {
        let mut g = self.inner.lock().expect("pending lock");
        if let Some(Pending::Waiting(_)) = g.map.remove(&seq) {
            g.waiting -= 1;
        }
    }

    fn resolve(&self, seq: u32) -> Resolved {
        let mut g = self.inner.lock().expect("pending lock");
        match g.map.remove(&seq) {
            Some(Pending::Waiting(tx)) => {
                g.waiting -= 1;
                g.timeouts_in_row = 0;
                Resolved::Waiter(tx)
            }
            Some(Pending::TimedOut { tag, .. }) => {
                g.timed_out -= 1;
                g.tag_bytes -= tag_len(&tag);
                Resolved::Late(tag)
            }
            None => Resolved::Unknown,
        }
    }

    /// Marks a waiting entry as timed out, remembering `tag` for its late
    /// answer while fewer than `bound` are remembered (past it the entry is
    /// dropped: a late answer then finds no tag, and `forgotten` counts
    /// it); false if it was resolved meanwhile. The `stall_after`-th
    /// timeout in a row (0: never) marks the connection stalled.
    fn time_out(
        &self,
        seq: u32,
        stall_after: u32,
        tag: Option<SubmitTag>,
        bound: usize,
        forgotten: &AtomicU64,
    ) -> bool {
        let mut g = self.inner.lock().expect("pending lock");
        let remember = g.timed_out < bound;
        match g.map.get_mut(&seq) {
            Some(p @ Pending::Waiting(_)) => {
                if remember {
                    let bytes = tag_len(&tag);
                    *p = Pending::TimedOut {
                        since: Instant::now(),
                        tag,
                    };
                    g.timed_out += 1;
                    g.tag_bytes += bytes;
                } else {
                    g.map.remove(&seq);
                    forgotten.fetch_add(1, Ordering::Relaxed);
                }
                g.waiting -= 1;
                g.timeouts_in_row += 1;
                if stall_after > 0 && g.timeouts_in_row >= stall_after {
                    self.stalled.cancel();
                }
                true
            }
            _ => false,
        }
    }

    fn sweep(&self, older_than: Duration) {
        let now = Instant::now();
        let mut g = self.inner.lock().expect("pending lock");
        let (mut dropped, mut bytes) = (0, 0);
        g.map.retain(|_, p| match p {
            Pending::TimedOut { since, tag } => {
                let keep = now.duration_since(*since) < older_than;
                if !keep {
                    dropped += 1;
                    bytes += tag_len(tag);
                }
                keep
            }
            Pending::Waiting(_) => true,
        });
        g.timed_out -= dropped;
        g.tag_bytes -= bytes;
    }

    /// Timed-out submits remembered now and the bytes of their tags.
    pub(crate) fn late_memory(&self) -> (usize, usize) {
        let g = self.inner.lock().expect("pending lock");
        (g.timed_out, g.tag_bytes)
    }

    /// Closes the map; every waiting request gets
    /// [`Reply::ConnectionLost`]. Returns how many were waiting.
    fn close(&self) -> usize {
        let drained: Vec<Pending> = {
            let mut g = self.inner.lock().expect("pending lock");
            g.closed = true;
            g.waiting = 0;
            g.timed_out = 0;
            g.tag_bytes = 0;
            g.map.drain().map(|(_, p)| p).collect()
        };
        let mut waiting = 0;
        for p in drained {
            if let Pending::Waiting(tx) = p {
                waiting += 1;
                let _ = tx.send(Reply::ConnectionLost);
            }
        }
        waiting
    }

    pub(crate) fn waiting(&self) -> usize {
        self.inner.lock().expect("pending lock").waiting
    }

    /// Closes the map to new requests if none is waiting, atomically with
    /// [`PendingMap::insert`]: once it answers true no submit_sm can slip
    /// in behind the unbind that follows (its sender is told the
    /// connection closed, so it is sent elsewhere, never lost unanswered).
    fn seal_if_idle(&self) -> bool {
        let mut g = self.inner.lock().expect("pending lock");
        if g.waiting == 0 {
            g.closed = true;
        }
        g.closed
    }

    /// Closes the map to new requests, leaving the waiting ones waiting.
    fn seal(&self) {
        self.inner.lock().expect("pending lock").closed = true;
    }
}

/// Handle on the live connection of a session.
#[derive(Debug, Clone)]
pub(crate) struct Conn {
    tx: mpsc::UnboundedSender<Command>,
    pending: Arc<PendingMap>,
    /// PDUs handed to the writer and not yet written.
    queued: Arc<AtomicUsize>,
}

/// A `submit_sm` handed to the writer, awaiting its response.
#[derive(Debug)]
pub(crate) struct Sent {
    seq: u32,
    rx: oneshot::Receiver<Reply>,
    pending: Arc<PendingMap>,
}

/// One session (bind) of a link.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) index: usize,
    pub(crate) role: SessionRole,
    pub(crate) window: Arc<crate::window::Window>,
    seq: AtomicU32,
    pub(crate) state: watch::Sender<LinkState>,
    conn: Mutex<Option<Conn>>,
    aimd: Aimd,
    /// submit_sm answered ESME_RTHROTTLED or ESME_RMSGQFUL, ever.
    throttled: std::sync::atomic::AtomicU64,
    /// Connections closed as stalled, ever.
    stalls: std::sync::atomic::AtomicU64,
    /// submit_sm that were awaiting a response (not yet timed out) when
    /// their connection was closed as stalled, ever.
    stall_unknown: std::sync::atomic::AtomicU64,
    meter: RateMeter,
    last_rtt: Mutex<Option<Duration>>,
    last_error: Mutex<Option<LastError>>,
    /// Bind slot of the session (its index modulo the link's `sessions`).
    pub(crate) slot: u32,
    /// Whether the session's bind slot is held by this process (always,
    /// unless the link is gated by bind-slot leases).
    slot_open: std::sync::atomic::AtomicBool,
    /// Whether the session should be bound: the link runs and its slot is
    /// open. The supervisor follows it.
    pub(crate) run: watch::Sender<bool>,
}

impl Session {
    pub(crate) fn new(
        index: usize,
        role: SessionRole,
        window: usize,
        slot: u32,
        open: bool,
    ) -> Self {
        Self {
            slot,
            slot_open: std::sync::atomic::AtomicBool::new(open),
            run: watch::Sender::new(open),
            index,
            role,
            window: crate::window::Window::new(window),
            seq: AtomicU32::new(1),
            state: watch::Sender::new(LinkState::Down),
            conn: Mutex::new(None),
            aimd: Aimd::default(),
            throttled: std::sync::atomic::AtomicU64::new(0),
            stalls: std::sync::atomic::AtomicU64::new(0),
            stall_unknown: std::sync::atomic::AtomicU64::new(0),
            meter: RateMeter::default(),
            last_rtt: Mutex::new(None),
            last_error: Mutex::new(None),
        }
    }

    pub(crate) fn state(&self) -> LinkState {
        *self.state.borrow()
    }

    /// Opens or closes the session's bind slot.
    pub(crate) fn set_slot_open(&self, open: bool) {
        self.slot_open.store(open, Ordering::Relaxed);
    }

    /// Recomputes whether the session should run, given whether its link
    /// runs; the supervisor binds or drains and unbinds accordingly.
    pub(crate) fn refresh(&self, link_running: bool) {
        let run = link_running && self.slot_open.load(Ordering::Relaxed);
        self.run
            .send_if_modified(|r| std::mem::replace(r, run) != run);
    }

    fn next_seq(&self) -> u32 {
        loop {
            let s = self.seq.fetch_add(1, Ordering::Relaxed) & 0x7FFF_FFFF;
            if s != 0 {
                return s;
            }
        }
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.conn
            .lock()
            .expect("conn lock")
            .as_ref()
            .map_or(0, |c| c.pending.waiting())
    }

    pub(crate) fn last_error(&self) -> Option<LastError> {
        self.last_error.lock().expect("error lock").clone()
    }

    pub(crate) fn last_rtt(&self) -> Option<Duration> {
        *self.last_rtt.lock().expect("rtt lock")
    }

    fn record_error(&self, message: String) {
        *self.last_error.lock().expect("error lock") = Some(LastError {
            message,
            at: SystemTime::now(),
        });
    }

    pub(crate) fn status(&self) -> SessionStatus {
        SessionStatus {
            index: self.index,
            role: self.role,
            state: self.state(),
            in_flight: self.in_flight(),
            throttled_rate: self.aimd.rate(),
            throttled: self.throttled.load(std::sync::atomic::Ordering::Relaxed),
            stalls: self.stalls.load(Ordering::Relaxed),
            stall_unknown: self.stall_unknown.load(Ordering::Relaxed),
            last_enquire_link_rtt: self.last_rtt(),
            last_error: self.last_error(),
        }
    }

    fn set_state(&self, shared: &Shared, state: LinkState, reason: Option<String>) {
        let changed = self.state.send_replace(state) != state;
        if changed {
            debug!(?state, ?reason, "session state");
            let _ = shared.events.try_send(LinkEvent::StateChanged {
                link: shared.name.clone(),
                session: self.index,
                state,
                reason,
            });
        }
    }

    /// The current connection's remembered timed-out submits (see
    /// [`PendingMap::late_memory`]); zeros while unbound.
    pub(crate) fn late_memory(&self) -> (usize, usize) {
        self.conn
            .lock()
            .expect("conn lock")
            .as_ref()
            .map_or((0, 0), |c| c.pending.late_memory())
    }

    /// Takes a stalled connection out of rotation at once: no new submit
    /// goes to it (its connection task then closes it and rebinds).
    fn take_out_of_rotation(&self, shared: &Shared, pending: &Arc<PendingMap>) {
        let mut conn = self.conn.lock().expect("conn lock");
        if !conn
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(&c.pending, pending))
        {
            return;
        }
        *conn = None;
        drop(conn);
        let reason = stall_reason(&shared.config.load());
        warn!(%reason, "session stalled; out of rotation, rebinding");
        self.record_error(reason.clone());
        self.set_state(shared, LinkState::Stalled, Some(reason));
    }

    /// Paces, then hands one `submit_sm` to the writer. `Err` means it was
    /// definitely not sent.
    pub(crate) async fn send(&self, shared: &Shared, pdu: &SubmitSm) -> Result<Sent, String> {
        let now = Instant::now();
        let mut at = now;
        if let Some(g) = shared.gcra.load_full() {
            at = at.max(g.reserve(now));
        }
        if let Some(a) = self.aimd.reserve(now) {
            at = at.max(a);
        }
        if at > now {
            sleep_until(at).await;
        }
        let conn = self
            .conn
            .lock()
            .expect("conn lock")
            .clone()
            .ok_or_else(|| "session is not bound".to_owned())?;
        let seq = self.next_seq();
        let (tx, rx) = oneshot::channel();
        if !conn.pending.insert(seq, tx) {
            return Err("connection closed".into());
        }
        let cmd = Command::new(CommandStatus::EsmeRok, seq, Pdu::SubmitSm(pdu.clone()));
        conn.queued.fetch_add(1, Ordering::Relaxed);
        if conn.tx.send(cmd).is_err() {
            conn.queued.fetch_sub(1, Ordering::Relaxed);
            conn.pending.remove_waiting(seq);
            return Err("connection closed".into());
        }
        Ok(Sent {
            seq,
            rx,
            pending: conn.pending,
        })
    }

    /// Awaits the response of `sent`, resending on throttling. The flag is
    /// true when the outcome is unknown and no answer can come for it any
    /// more (its connection closed, or was found stalled and is being
    /// closed): the SMSC may or may not have taken it.
    pub(crate) async fn outcome(
        &self,
        shared: &Shared,
        pdu: &SubmitSm,
        mut sent: Sent,
        tag: Option<SubmitTag>,
    ) -> (SegmentOutcome, bool) {
        let cfg = shared.config.load_full();
        let mut retries = 0;
        loop {
            let reply = match timeout(cfg.response_timeout, &mut sent.rx).await {
                Ok(Ok(reply)) => reply,
                Ok(Err(_)) => Reply::ConnectionLost,
                Err(_) => {
                    if sent.pending.time_out(
                        sent.seq,
                        cfg.stall_after_timeouts,
                        tag.clone(),
                        cfg.late_responses_per_session(),
                        &shared.late_forgotten,
                    ) {
                        warn!(
                            sequence_number = sent.seq,
                            "submit_sm response timeout; outcome unknown"
                        );
                        let stalled = sent.pending.stalled.is_cancelled();
                        if stalled {
                            self.take_out_of_rotation(shared, &sent.pending);
                        }
                        return (
                            SegmentOutcome::Unknown {
                                session: self.index,
                                reason: UnknownReason::ResponseTimeout {
                                    sequence_number: sent.seq,
                                    timeout: cfg.response_timeout,
                                },
                            },
                            stalled,
                        );
                    }
                    match sent.rx.try_recv() {
                        Ok(reply) => reply,
                        Err(_) => Reply::ConnectionLost,
                    }
                }
            };
            match reply {
                Reply::Response {
                    status: 0,
                    message_id,
                } => {
                    self.aimd.accepted();
                    self.meter.mark();
                    shared.submit_meter.mark();
                    return (
                        SegmentOutcome::Accepted {
                            smsc_message_id: SmscMessageId::new(
                                message_id.unwrap_or_default(),
                                cfg.message_id_format,
                            ),
                            session: self.index,
                            sequence_number: sent.seq,
                        },
                        false,
                    );
                }
                Reply::Response { status, .. }
                    if (status == ESME_RTHROTTLED || status == ESME_RMSGQFUL)
                        && retries < cfg.throttle_retries =>
                {
                    retries += 1;
                    self.aimd.throttled(self.meter.rate());
                    self.throttled
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    debug!(
                        sequence_number = sent.seq,
                        status,
                        retries,
                        rate = ?self.aimd.rate(),
                        "throttled; resending"
                    );
                    match self.send(shared, pdu).await {
                        Ok(s) => sent = s,
                        Err(reason) => {
                            return (
                                SegmentOutcome::NotSent {
                                    reason: format!("throttled, then {reason}"),
                                },
                                false,
                            );
                        }
                    }
                }
                Reply::Response { status, .. } => {
                    return (
                        SegmentOutcome::Rejected {
                            command_status: status,
                        },
                        false,
                    );
                }
                Reply::Malformed { reason } => {
                    return (
                        SegmentOutcome::Unknown {
                            session: self.index,
                            reason: UnknownReason::MalformedResponse {
                                sequence_number: sent.seq,
                                reason,
                            },
                        },
                        false,
                    );
                }
                Reply::ConnectionLost => {
                    return (
                        SegmentOutcome::Unknown {
                            session: self.index,
                            reason: UnknownReason::ConnectionLost {
                                sequence_number: sent.seq,
                            },
                        },
                        true,
                    );
                }
            }
        }
    }
}

pub(crate) enum End {
    Shutdown,
    Stopped,
    PeerUnbind,
    /// Closed because `submit_sm` responses timed out.
    Stalled,
    Failed(Error),
}

fn stall_reason(cfg: &LinkConfig) -> String {
    format!(
        "stalled: {} submit_sm response timeout(s) of {:?} in a row",
        cfg.stall_after_timeouts, cfg.response_timeout
    )
}

pub(crate) type Reader = FramedRead<BoxRead, SmppCodec>;

/// Runs a session until the link's cancellation token fires.
pub(crate) async fn supervise(shared: Arc<Shared>, session: Arc<Session>) {
    let mut desired = session.run.subscribe();
    let mut attempt: u32 = 0;
    // After a stall the session reports `Stalled` until it is bound again
    // (or the rebind fails).
    let mut after_stall = false;
    loop {
        // Wait until the link should run.
        loop {
            if shared.cancel.is_cancelled() {
                session.set_state(&shared, LinkState::Down, Some("shutdown".into()));
                return;
            }
            if *desired.borrow_and_update() {
                break;
            }
            tokio::select! {
                _ = shared.cancel.cancelled() => {}
                r = desired.changed() => if r.is_err() { return },
            }
        }
        if !after_stall {
            session.set_state(&shared, LinkState::Binding, None);
        }
        after_stall = false;
        let config = shared.config.load_full();
        let bound = tokio::select! {
            r = connect_and_bind(&config, shared.tls.as_ref(), session.role, session.next_seq()) => Some(r),
            _ = shared.cancel.cancelled() => None,
            _ = desired.wait_for(|running| !running) => None,
        };
        let failure = match bound {
            None => {
                session.set_state(&shared, LinkState::Down, Some("stopped".into()));
                continue;
            }
            Some(Ok((reader, writer))) => {
                attempt = 0;
                info!("bound");
                match run_connection(&shared, &session, reader, writer, &mut desired).await {
                    End::Shutdown => {
                        session.set_state(&shared, LinkState::Down, Some("shutdown".into()));
                        info!("unbound for shutdown");
                        return;
                    }
                    End::Stopped => {
                        session.set_state(&shared, LinkState::Down, Some("stopped".into()));
                        info!("unbound (stopped)");
                        continue;
                    }
                    End::PeerUnbind => {
                        info!("SMSC unbound; rebinding");
                        session.record_error("unbind from SMSC".into());
                        session.set_state(
                            &shared,
                            LinkState::Down,
                            Some("unbind from SMSC".into()),
                        );
                        let d = shared.config.load().reconnect.delay(0);
                        tokio::select! {
                            _ = sleep(d) => {}
                            _ = shared.cancel.cancelled() => {}
                        }
                        continue;
                    }
                    End::Stalled => {
                        let reason = stall_reason(&shared.config.load());
                        session.set_state(&shared, LinkState::Stalled, Some(reason));
                        after_stall = true;
                        let d = shared.config.load().reconnect.delay(0);
                        attempt = 1;
                        tokio::select! {
                            _ = sleep(d) => {}
                            _ = shared.cancel.cancelled() => {}
                            _ = desired.wait_for(|running| !running) => {}
                        }
                        if shared.cancel.is_cancelled() || !*desired.borrow() {
                            after_stall = false;
                            session.set_state(&shared, LinkState::Down, Some("stopped".into()));
                        }
                        continue;
                    }
                    End::Failed(e) => e,
                }
            }
            Some(Err(e)) => e,
        };
        let msg = failure.to_string();
        warn!(error = %msg, attempt, "session failed");
        session.record_error(msg.clone());
        session.set_state(&shared, LinkState::Down, Some(msg));
        let d = shared.config.load().reconnect.delay(attempt);
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = sleep(d) => {}
            _ = shared.cancel.cancelled() => {}
            _ = desired.wait_for(|running| !running) => {}
        }
    }
}

fn bind_pdu(cfg: &LinkConfig, role: SessionRole) -> Result<Pdu, Error> {
    let bad = |what: &str| Error::InvalidConfig {
        link: cfg.name.clone(),
        reason: format!("{what} is not a valid SMPP string"),
    };
    let system_id =
        COctetString::from_string(cfg.system_id.clone()).map_err(|_| bad("system_id"))?;
    let password =
        COctetString::from_string(cfg.password.expose().to_owned()).map_err(|_| bad("password"))?;
    let system_type =
        COctetString::from_string(cfg.system_type.clone()).map_err(|_| bad("system_type"))?;
    let version = match cfg.interface_version {
        InterfaceVersion::V34 => RusmppVersion::Smpp3_4,
        InterfaceVersion::V50 => RusmppVersion::Smpp5_0,
    };
    let range = COctetString::empty();
    Ok(match role {
        SessionRole::Transceiver => Pdu::BindTransceiver(BindTransceiver::new(
            system_id,
            password,
            system_type,
            version,
            Ton::Unknown,
            Npi::Unknown,
            range,
        )),
        SessionRole::Transmitter => Pdu::BindTransmitter(BindTransmitter::new(
            system_id,
            password,
            system_type,
            version,
            Ton::Unknown,
            Npi::Unknown,
            range,
        )),
        SessionRole::Receiver => Pdu::BindReceiver(BindReceiver::new(
            system_id,
            password,
            system_type,
            version,
            Ton::Unknown,
            Npi::Unknown,
            range,
        )),
    })
}

/// Connects (TCP, then the TLS handshake when configured), both within
/// `response_timeout` each, and returns the two halves of the stream.
async fn connect(cfg: &LinkConfig, tls: Option<&TlsClient>) -> Result<(BoxRead, BoxWrite), Error> {
    let addr = format!("{}:{}", cfg.host, cfg.port);
    let stream = match timeout(cfg.response_timeout, TcpStream::connect(&addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(source)) => return Err(Error::Connect { addr, source }),
        Err(_) => {
            return Err(Error::Connect {
                addr,
                source: std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
            });
        }
    };
    stream.set_nodelay(true)?;
    let Some(tls) = tls else {
        let (r, w) = stream.into_split();
        return Ok((Box::new(r), Box::new(w)));
    };
    match timeout(cfg.response_timeout, tls.handshake(stream)).await {
        Ok(Ok(halves)) => Ok(halves),
        Ok(Err(e)) => Err(Error::Tls {
            addr,
            reason: e.to_string(),
        }),
        Err(_) => Err(Error::Tls {
            addr,
            reason: format!("no handshake within {:?}", cfg.response_timeout),
        }),
    }
}

async fn connect_and_bind(
    cfg: &LinkConfig,
    tls: Option<&TlsClient>,
    role: SessionRole,
    seq: u32,
) -> Result<(Reader, BoxWrite), Error> {
    let (r, mut w) = connect(cfg, tls).await?;
    let mut reader = FramedRead::with_capacity(r, SmppCodec::default(), 64 * 1024);
    let mut buf = BytesMut::new();
    encode_into(
        &Command::new(CommandStatus::EsmeRok, seq, bind_pdu(cfg, role)?),
        &mut buf,
    );
    w.write_all(&buf).await?;
    // TLS buffers what the socket did not take; plain TCP flushes for free.
    w.flush().await?;
    let deadline = Instant::now() + cfg.response_timeout;
    loop {
        let frame = match timeout(deadline - Instant::now(), reader.next()).await {
            Err(_) => {
                return Err(Error::ResponseTimeout {
                    sequence_number: seq,
                    timeout: cfg.response_timeout,
                });
            }
            Ok(None) => return Err(Error::ConnectionClosed),
            Ok(Some(f)) => f?,
        };
        match frame {
            Frame::Command(c) if c.sequence_number() == seq => {
                let status = u32::from(c.status());
                if status != 0 {
                    return Err(Error::BindRejected {
                        command_status: status,
                    });
                }
                return Ok((reader, w));
            }
            Frame::Command(c) if c.id() == rusmpp::CommandId::EnquireLink => {
                buf.clear();
                encode_into(
                    &Command::new(
                        CommandStatus::EsmeRok,
                        c.sequence_number(),
                        Pdu::EnquireLinkResp,
                    ),
                    &mut buf,
                );
                w.write_all(&buf).await?;
                w.flush().await?;
            }
            other => debug!(?other, "ignored while binding"),
        }
    }
}

/// After a write loop's first PDU: lets the tasks already woken run
/// first (`yield_now` waits for the runtime's next turn), then takes
/// what they queued, up to `max` in `batch` — so one write carries the
/// PDUs of a burst, not a syscall each (at 15,000 msg/s the gateway made
/// ~2.3 `sendto` a message).
pub(crate) async fn gather<T>(rx: &mut mpsc::UnboundedReceiver<T>, batch: &mut Vec<T>, max: usize) {
    if batch.len() >= max {
        return;
    }
    tokio::task::yield_now().await;
    while batch.len() < max {
        match rx.try_recv() {
            Ok(t) => batch.push(t),
            Err(_) => break,
        }
    }
}

async fn write_loop(
    mut w: BoxWrite,
    mut rx: mpsc::UnboundedReceiver<Command>,
    queued: Arc<AtomicUsize>,
) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut batch = Vec::with_capacity(256);
    loop {
        if rx.recv_many(&mut batch, 256).await == 0 {
            break;
        }
        gather(&mut rx, &mut batch, 256).await;
        let n = batch.len();
        for cmd in batch.drain(..) {
            encode_into(&cmd, &mut buf);
        }
        w.write_all(&buf).await?;
        w.flush().await?;
        buf.clear();
        queued.fetch_sub(n, Ordering::Relaxed);
    }
    let _ = w.shutdown().await;
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Draining {
        deadline: Instant,
        shutdown: bool,
    },
    Unbinding {
        seq: u32,
        deadline: Instant,
        shutdown: bool,
    },
}

pub(crate) async fn run_connection(
    shared: &Shared,
    session: &Session,
    mut reader: Reader,
    writer: BoxWrite,
    desired: &mut watch::Receiver<bool>,
) -> End {
    let cfg = shared.config.load_full();
    let (tx, rx) = mpsc::unbounded_channel::<Command>();
    let pending = Arc::new(PendingMap::default());
    let queued = Arc::new(AtomicUsize::new(0));
    let mut writer = tokio::spawn(write_loop(writer, rx, queued.clone()));
    *session.conn.lock().expect("conn lock") = Some(Conn {
        tx: tx.clone(),
        pending: pending.clone(),
        queued: queued.clone(),
    });
    session.set_state(shared, LinkState::Bound, None);

    let interval = cfg.enquire_link_interval;
    let mut enquire = tokio::time::interval_at(Instant::now() + interval, interval);
    enquire.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut drain_tick = tokio::time::interval(Duration::from_millis(10));
    let mut ping: Option<(u32, Instant)> = None;
    let mut phase = Phase::Running;
    let mut acks = AwaitedAcks::new();
    let send = |cmd: Command| {
        queued.fetch_add(1, Ordering::Relaxed);
        if tx.send(cmd).is_err() {
            queued.fetch_sub(1, Ordering::Relaxed);
        }
    };
    let most_queued = MAX_QUEUED_PDUS + cfg.window;

    let end = loop {
        let ping_deadline = ping.map(|(_, t)| t + cfg.response_timeout);
        let unbind_deadline = match phase {
            Phase::Unbinding { deadline, .. } => Some(deadline),
            _ => None,
        };
        tokio::select! {
            biased;
            _ = pending.stalled.cancelled() => {
                // Tell the SMSC, without waiting for its answer.
                send(Command::new(CommandStatus::EsmeRok, session.next_seq(), Pdu::Unbind));
                break match phase {
                    Phase::Running => End::Stalled,
                    Phase::Draining { shutdown, .. } | Phase::Unbinding { shutdown, .. } => {
                        if shutdown { End::Shutdown } else { End::Stopped }
                    }
                };
            }
            Some((seq, stored)) = acks.next(), if !acks.is_empty() => {
                send(receipt_answer(seq, stored));
            }
            frame = reader.next() => {
                let frame = match frame {
                    None => {
                        // The SMSC closed its side: what it sent before is
                        // still answered once stored (it may read on).
                        answer_owed(&mut acks, cfg.response_timeout, &send, "connection closed by peer").await;
                        break End::Failed(Error::ConnectionClosed);
                    }
                    Some(Err(e)) => break End::Failed(e.into()),
                    Some(Ok(f)) => f,
                };
                match frame {
                    Frame::Command(cmd) => {
                        if let Some(end) = handle_inbound(shared, session, Owed { pending: &pending, acks: &mut acks }, cmd, &send, &mut ping, phase).await {
                            break end;
                        }
                    }
                    Frame::Malformed { command_id, command_status, sequence_number, body, reason } => {
                        warn!(command_id, sequence_number, %reason, "malformed PDU");
                        session.record_error(format!("malformed PDU {command_id:#x}: {reason}"));
                        if command_id & 0x8000_0000 != 0 {
                            if let Resolved::Waiter(w) = pending.resolve(sequence_number) {
                                // Lenient submit_sm_resp: an id without its NUL
                                // terminator (or with trailing junk) still counts.
                                let id = lenient_message_id(&body);
                                let reply = if command_id == 0x8000_0004 && (command_status != 0 || id.is_some()) {
                                    Reply::Response { status: command_status, message_id: id }
                                } else {
                                    Reply::Malformed { reason }
                                };
                                let _ = w.send(reply);
                            }
                        } else {
                            let status = CommandStatus::from(ESME_RSYSERR);
                            let pdu = if command_id == 0x0000_0005 {
                                Pdu::DeliverSmResp(DeliverSmResp::default())
                            } else {
                                Pdu::GenericNack
                            };
                            send(Command::new(status, sequence_number, pdu));
                        }
                    }
                }
                let q = queued.load(Ordering::Relaxed);
                if q > most_queued {
                    break End::Failed(Error::Protocol {
                        reason: format!("the SMSC does not read what we send: {q} PDUs queued for it"),
                    });
                }
            }
            _ = enquire.tick() => {
                if ping.is_none() && phase == Phase::Running {
                    let seq = session.next_seq();
                    ping = Some((seq, Instant::now()));
                    send(Command::new(CommandStatus::EsmeRok, seq, Pdu::EnquireLink));
                }
                pending.sweep(cfg.response_timeout * 10);
                let expired = shared.reassembler.lock().expect("reassembler lock")
                    .expire(&cfg.name, std::time::Instant::now());
                for mo in expired {
                    let _ = shared.events.send(LinkEvent::MobileOriginated(mo)).await;
                }
            }
            _ = sleep_until(ping_deadline.unwrap_or_else(Instant::now)), if ping_deadline.is_some() => {
                let (seq, _) = ping.expect("ping set");
                break End::Failed(Error::ResponseTimeout { sequence_number: seq, timeout: cfg.response_timeout });
            }
            _ = shared.cancel.cancelled(), if phase == Phase::Running => {
                phase = Phase::Draining { deadline: Instant::now() + cfg.drain_timeout, shutdown: true };
                session.set_state(shared, LinkState::Unbinding, Some("shutdown".into()));
            }
            r = desired.changed(), if phase == Phase::Running => {
                if r.is_err() || !*desired.borrow_and_update() {
                    phase = Phase::Draining { deadline: Instant::now() + cfg.drain_timeout, shutdown: r.is_err() };
                    session.set_state(shared, LinkState::Unbinding, Some("stopped".into()));
                }
            }
            _ = drain_tick.tick(), if matches!(phase, Phase::Draining { .. }) => {
                // Sealed when idle: a submit racing this check either got
                // in first (then we wait for its answer) or is refused.
                let idle = acks.is_empty() && pending.seal_if_idle();
                if let Phase::Draining { deadline, shutdown } = phase
                    && (idle || Instant::now() >= deadline)
                {
                    if !idle {
                        pending.seal();
                        warn!(in_flight = pending.waiting(), receipts_unanswered = acks.len(), "drain deadline passed; unbinding with requests in flight");
                    }
                    *session.conn.lock().expect("conn lock") = None;
                    let seq = session.next_seq();
                    send(Command::new(CommandStatus::EsmeRok, seq, Pdu::Unbind));
                    phase = Phase::Unbinding { seq, deadline: Instant::now() + cfg.response_timeout, shutdown };
                }
            }
            _ = sleep_until(unbind_deadline.unwrap_or_else(Instant::now)), if unbind_deadline.is_some() => {
                if let Phase::Unbinding { shutdown, .. } = phase {
                    warn!("no unbind_resp; closing");
                    break if shutdown { End::Shutdown } else { End::Stopped };
                }
            }
            r = &mut writer => {
                let e = match r {
                    Ok(Ok(())) => Error::ConnectionClosed,
                    Ok(Err(e)) => Error::Io(e),
                    Err(e) => Error::Protocol { reason: format!("writer task: {e}") },
                };
                break End::Failed(e);
            }
        }
    };
    *session.conn.lock().expect("conn lock") = None;
    let unanswered = pending.close();
    if matches!(end, End::Stalled) {
        session.stalls.fetch_add(1, Ordering::Relaxed);
        session
            .stall_unknown
            .fetch_add(unanswered as u64, Ordering::Relaxed);
        if unanswered > 0 {
            warn!(
                unanswered,
                "submit_sm awaiting a response on the stalled connection are unknown"
            );
        }
    }
    drop(tx);
    // Let the writer flush what is queued (unbind_resp, unbind), briefly.
    if !writer.is_finished() {
        let _ = timeout(Duration::from_millis(500), &mut writer).await;
        writer.abort();
    }
    end
}

/// The printable prefix of a submit_sm_resp body, if any.
fn lenient_message_id(body: &[u8]) -> Option<String> {
    let end = body
        .iter()
        .position(|b| !b.is_ascii_graphic())
        .unwrap_or(body.len());
    (end > 0).then(|| String::from_utf8_lossy(&body[..end]).into_owned())
}

async fn handle_inbound(
    shared: &Shared,
    session: &Session,
    owed: Owed<'_>,
    cmd: Command,
    send: &impl Fn(Command),
    ping: &mut Option<(u32, Instant)>,
    phase: Phase,
) -> Option<End> {
    let Owed { pending, acks } = owed;
    let seq = cmd.sequence_number();
    let status = u32::from(cmd.status());
    let cfg = shared.config.load_full();
    match cmd.pdu() {
        Some(Pdu::SubmitSmResp(_)) | None if cmd.id() == rusmpp::CommandId::SubmitSmResp => {
            let message_id = match cmd.pdu() {
                Some(Pdu::SubmitSmResp(r)) => Some(r.message_id().as_str().to_owned()),
                _ => None,
            };
            match pending.resolve(seq) {
                Resolved::Waiter(w) => {
                    let _ = w.send(Reply::Response { status, message_id });
                }
                resolved @ (Resolved::Late(_) | Resolved::Unknown) => {
                    // A late answer: with its tag when the session still
                    // remembered the submit. Without (forgotten past its
                    // window or bound, or a sequence never sent) it is
                    // reported too, so that it is counted, and settles
                    // nothing.
                    let tag = match resolved {
                        Resolved::Late(tag) => {
                            info!(sequence_number = seq, status, "late submit_sm_resp");
                            tag
                        }
                        _ => {
                            warn!(
                                sequence_number = seq,
                                "submit_sm_resp for a sequence no longer awaited"
                            );
                            None
                        }
                    };
                    let _ = shared
                        .events
                        .send(LinkEvent::LateResponse {
                            link: cfg.name.clone(),
                            session: session.index,
                            sequence_number: seq,
                            command_status: status,
                            smsc_message_id: message_id
                                .filter(|_| status == 0)
                                .map(|id| SmscMessageId::new(id, cfg.message_id_format)),
                            tag,
                        })
                        .await;
                }
            }
        }
        Some(Pdu::EnquireLinkResp) => {
            if let Some((s, at)) = *ping
                && s == seq
            {
                *session.last_rtt.lock().expect("rtt lock") = Some(at.elapsed());
                *ping = None;
            }
        }
        Some(Pdu::EnquireLink) => {
            send(Command::new(
                CommandStatus::EsmeRok,
                seq,
                Pdu::EnquireLinkResp,
            ));
        }
        Some(Pdu::DeliverSm(d)) => {
            match classify(&cfg.name, d, cfg.receipt_ids()) {
                Some(Delivered::Receipt(mut r)) => {
                    shared.receipt_meter.mark();
                    let (ack, rx) = ReceiptAck::pair();
                    r.ack = ack;
                    acks.push(AwaitedAck { seq, rx });
                    // Dropped with the event if nobody consumes it: then
                    // the SMSC is asked to deliver it again.
                    let _ = shared.events.send(LinkEvent::Receipt(r)).await;
                    return None;
                }
                Some(Delivered::Mo(part)) => {
                    let mut out = shared.reassembler.lock().expect("reassembler lock").push(
                        &cfg.name,
                        part,
                        std::time::Instant::now(),
                    );
                    // The message this part completes (at most one; sets
                    // evicted to make room are incomplete) is answered once
                    // stored, like a receipt; a part that only waits for the
                    // rest of its set is answered now.
                    let completed = out.iter_mut().find(|mo| mo.complete).map(|mo| {
                        let (ack, rx) = ReceiptAck::pair();
                        mo.ack = ack;
                        acks.push(AwaitedAck { seq, rx });
                    });
                    for mo in out {
                        let _ = shared.events.send(LinkEvent::MobileOriginated(mo)).await;
                    }
                    if completed.is_some() {
                        return None;
                    }
                }
                None => warn!(sequence_number = seq, "receipt without message id"),
            }
            send(Command::new(
                CommandStatus::EsmeRok,
                seq,
                Pdu::DeliverSmResp(DeliverSmResp::default()),
            ));
        }
        Some(Pdu::Unbind) => {
            // Receipts read before the unbind are answered first, as soon
            // as they are stored (for at most a response timeout): left
            // unanswered, the SMSC would deliver them all again.
            answer_owed(acks, cfg.response_timeout, send, "peer unbind").await;
            send(Command::new(CommandStatus::EsmeRok, seq, Pdu::UnbindResp));
            return Some(End::PeerUnbind);
        }
        Some(Pdu::UnbindResp) => {
            if let Phase::Unbinding {
                seq: s, shutdown, ..
            } = phase
                && s == seq
            {
                return Some(if shutdown {
                    End::Shutdown
                } else {
                    End::Stopped
                });
            }
        }
        Some(Pdu::GenericNack) => match pending.resolve(seq) {
            Resolved::Waiter(w) => {
                let status = if status == 0 { ESME_RSYSERR } else { status };
                let _ = w.send(Reply::Response {
                    status,
                    message_id: None,
                });
            }
            _ => {
                if matches!(*ping, Some((s, _)) if s == seq) {
                    *ping = None;
                }
                warn!(sequence_number = seq, status, "generic_nack");
                session.record_error(format!("generic_nack {status:#010x} for sequence {seq}"));
            }
        },
        Some(Pdu::AlertNotification(_)) => {}
        _ if cmd.id().is_response() => {
            debug!(id = ?cmd.id(), sequence_number = seq, "unexpected response");
        }
        _ => {
            send(Command::new(
                CommandStatus::from(ESME_RINVCMDID),
                seq,
                Pdu::GenericNack,
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_write_takes_what_the_tasks_already_woken_queue_up_to_its_bound() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        tx.send(0).unwrap();
        // Ready to run, but on this one thread only once the loop yields.
        let more = tx.clone();
        tokio::spawn(async move {
            for i in 1..10 {
                more.send(i).unwrap();
            }
        });
        let mut batch = Vec::new();
        rx.recv_many(&mut batch, 64).await;
        assert_eq!(batch, [0]);
        gather(&mut rx, &mut batch, 64).await;
        assert_eq!(batch, (0..10).collect::<Vec<_>>());

        batch.clear();
        for i in 0..10 {
            tx.send(i).unwrap();
        }
        rx.recv_many(&mut batch, 1).await;
        gather(&mut rx, &mut batch, 4).await;
        assert_eq!(batch, [0, 1, 2, 3]);
    }

    #[test]
    fn a_drained_map_is_sealed_before_the_unbind_so_no_submit_slips_in_behind_it() {
        let p = PendingMap::default();
        let (tx, _rx) = oneshot::channel();
        assert!(p.insert(1, tx));
        assert!(!p.seal_if_idle(), "one request is still waiting");
        let (tx, _rx2) = oneshot::channel();
        assert!(p.insert(2, tx), "not sealed: requests still go out");
        assert!(matches!(p.resolve(1), Resolved::Waiter(_)));
        assert!(matches!(p.resolve(2), Resolved::Waiter(_)));
        assert!(p.seal_if_idle(), "idle: sealed");
        let (tx, mut rx) = oneshot::channel();
        assert!(
            !p.insert(3, tx),
            "a submit after the seal is refused, so its sender sends it elsewhere"
        );
        assert!(rx.try_recv().is_err());
        assert_eq!(p.waiting(), 0);
    }

    #[test]
    fn a_forced_seal_keeps_the_waiting_requests_for_their_answers() {
        let p = PendingMap::default();
        let (tx, mut rx) = oneshot::channel();
        assert!(p.insert(7, tx));
        p.seal();
        let (tx2, _rx2) = oneshot::channel();
        assert!(!p.insert(8, tx2));
        assert_eq!(p.waiting(), 1);
        assert_eq!(p.close(), 1);
        assert!(matches!(rx.try_recv(), Ok(Reply::ConnectionLost)));
    }
}
