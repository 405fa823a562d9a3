//! A link: one SMSC account with its sessions.

use std::{
    collections::BTreeSet,
    str::FromStr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use arc_swap::{ArcSwap, ArcSwapOption};
use rusmpp::{
    pdus::SubmitSm,
    tlvs::MessageSubmissionRequestTlvValue,
    types::{AnyOctetString, COctetString, EmptyOrFullCOctetString, OctetString},
    values::{
        DataCoding, EsmClass, MessagePayload, Npi, PriorityFlag, RegisteredDelivery, ServiceType,
        Ton,
    },
};
use tokio::{
    sync::{mpsc, watch},
    time::{Instant, timeout_at},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument, debug, warn};

use crate::{
    config::{BindMode, LinkConfig, UnknownPolicy},
    deliver::Reassembler,
    error::{
        ESME_RINVDSTADR, ESME_RINVEXPIRY, ESME_RINVMSGLEN, ESME_RINVPRTFLG, ESME_RINVSCHED,
        ESME_RINVSERTYP, ESME_RINVSRCADR, Error, Result,
    },
    rate::{Gcra, RateMeter},
    session::{Session, supervise},
    tls::TlsClient,
    types::{
        LinkEvent, LinkState, LinkStatus, SegmentOutcome, SessionRole, SubmitRequest, SubmitTag,
    },
};

/// State shared by the sessions of a link.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The link's name (never changes; also in `config`).
    pub(crate) name: String,
    /// The configuration in force; [`Link::retune`] swaps in new
    /// settings that need no new bind.
    pub(crate) config: ArcSwap<LinkConfig>,
    pub(crate) events: mpsc::Sender<LinkEvent>,
    pub(crate) reassembler: Mutex<Reassembler>,
    pub(crate) submit_meter: RateMeter,
    /// Segments submitted again after their connection closed before a
    /// response ([`UnknownPolicy::Resubmit`]), ever.
    pub(crate) resubmitted: std::sync::atomic::AtomicU64,
    /// Timed-out submits not remembered for a late answer (at the
    /// `late_responses` bound), ever.
    pub(crate) late_forgotten: std::sync::atomic::AtomicU64,
    pub(crate) receipt_meter: RateMeter,
    /// Submit pacing from `rate`/`burst`, replaced by [`Link::retune`].
    pub(crate) gcra: ArcSwapOption<Gcra>,
    /// TLS connector, when the link uses TLS.
    pub(crate) tls: Option<TlsClient>,
    /// true: sessions should be bound.
    pub(crate) desired: watch::Sender<bool>,
    pub(crate) cancel: CancellationToken,
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    sessions: Vec<Arc<Session>>,
    next: AtomicUsize,
    tracker: TaskTracker,
    /// Serialises changes of the link's running state and its open slots.
    gates: Mutex<()>,
}

/// A running link. Cheap to clone; all clones control the same sessions.
///
/// Create with [`Link::spawn`]; every session binds in the background and
/// rebinds with backoff after failures. Events (receipts, MO, late
/// responses, state changes) go to the `events` channel given at spawn; it
/// must be consumed, since a full channel holds back reading from the SMSC.
#[derive(Debug, Clone)]
pub struct Link {
    inner: Arc<Inner>,
}

impl Link {
    /// Validates `config` and starts its sessions on the current tokio
    /// runtime. Sessions end when `cancel` (or [`Link::shutdown`]) fires,
    /// after draining their window and unbinding.
    pub fn spawn(
        config: LinkConfig,
        events: mpsc::Sender<LinkEvent>,
        cancel: CancellationToken,
    ) -> Result<Link> {
        Self::spawn_gated(config, events, cancel, None)
    }

    /// [`Link::spawn`] with bind-slot gating: only the sessions of the
    /// slots in `open_slots` bind (slot `i` is session `i`, and in
    /// transmitter/receiver mode also receiver `sessions + i`);
    /// [`Link::set_open_slots`] changes the set later. `None` opens every
    /// slot, as [`Link::spawn`] does.
    pub fn spawn_gated(
        config: LinkConfig,
        events: mpsc::Sender<LinkEvent>,
        cancel: CancellationToken,
        open_slots: Option<&BTreeSet<u32>>,
    ) -> Result<Link> {
        config.validate()?;
        let open = |slot: u32| open_slots.is_none_or(|s| s.contains(&slot));
        let tls = TlsClient::new(&config)?;
        if config.tls_insecure_skip_verify {
            tracing::warn!(
                link = %config.name,
                "tls_insecure_skip_verify: the SMSC certificate is NOT verified; anyone on the path can read and change this link's traffic"
            );
        }
        let gcra = config.rate.map(|r| Gcra::new(r, config.burst.max(1)));
        let mut sessions = Vec::new();
        let role = match config.bind_mode {
            BindMode::Transceiver => SessionRole::Transceiver,
            BindMode::TransmitterReceiver => SessionRole::Transmitter,
        };
        for i in 0..config.sessions {
            let slot = i as u32;
            sessions.push(Arc::new(Session::new(
                i,
                role,
                config.window,
                slot,
                open(slot),
            )));
        }
        if config.bind_mode == BindMode::TransmitterReceiver {
            for i in 0..config.sessions {
                let slot = i as u32;
                sessions.push(Arc::new(Session::new(
                    config.sessions + i,
                    SessionRole::Receiver,
                    config.window,
                    slot,
                    open(slot),
                )));
            }
        }
        // A link spawned stopped binds nothing: its sessions are told before
        // their supervisors run.
        let running = !config.start_stopped;
        if !running {
            sessions.iter().for_each(|s| s.refresh(false));
        }
        let shared = Arc::new(Shared {
            reassembler: Mutex::new(Reassembler::new(config.reassembly)),
            name: config.name.clone(),
            config: ArcSwap::from_pointee(config),
            events,
            submit_meter: RateMeter::default(),
            resubmitted: std::sync::atomic::AtomicU64::new(0),
            late_forgotten: std::sync::atomic::AtomicU64::new(0),
            receipt_meter: RateMeter::default(),
            gcra: ArcSwapOption::from(gcra.map(Arc::new)),
            tls,
            desired: watch::Sender::new(running),
            cancel: cancel.child_token(),
        });
        let tracker = TaskTracker::new();
        for s in &sessions {
            let span = tracing::info_span!(
                "smpp_session",
                link = %shared.name,
                system_id = %shared.config.load().system_id,
                session = s.index,
                role = ?s.role,
            );
            tracker.spawn(supervise(shared.clone(), s.clone()).instrument(span));
        }
        tracker.close();
        Ok(Link {
            inner: Arc::new(Inner {
                shared,
                sessions,
                next: AtomicUsize::new(0),
                tracker,
                gates: Mutex::new(()),
            }),
        })
    }

    /// Link name.
    pub fn name(&self) -> &str {
        &self.inner.shared.name
    }

    /// The configuration it runs with (the latest [`Link::retune`]d).
    pub fn config(&self) -> Arc<LinkConfig> {
        self.inner.shared.config.load_full()
    }

    /// Applies `new` in place when it differs from the running
    /// configuration only in settings a bound session can take without a
    /// new bind ([`LinkConfig::retunable_to`]: rate and burst, timeouts,
    /// the unknown-outcome policy, reconnect backoff, defaults of outgoing
    /// messages); sessions stay bound and messages in their windows are not
    /// disturbed. A new rate starts with a full burst. Returns `false`,
    /// changing nothing, when `new` needs new binds (address,
    /// credentials, TLS, sessions, window, bind mode, suspension) or is
    /// invalid: replace the link then.
    pub fn retune(&self, new: LinkConfig) -> bool {
        let shared = &self.inner.shared;
        let old = shared.config.load_full();
        if !old.retunable_to(&new) || new.validate().is_err() {
            return false;
        }
        if (old.rate, old.burst) != (new.rate, new.burst) {
            shared
                .gcra
                .store(new.rate.map(|r| Arc::new(Gcra::new(r, new.burst.max(1)))));
        }
        debug!(link = %new.name, "link settings changed in place; sessions stay bound");
        shared.config.store(Arc::new(new));
        true
    }

    /// True when at least one session that can submit is bound.
    pub fn is_up(&self) -> bool {
        self.inner
            .sessions
            .iter()
            .any(|s| s.role != SessionRole::Receiver && s.state() == LinkState::Bound)
    }

    /// Waits until a submit-capable session is bound, up to `within`.
    pub async fn wait_bound(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut rxs: Vec<_> = self
            .inner
            .sessions
            .iter()
            .filter(|s| s.role != SessionRole::Receiver)
            .map(|s| s.state.subscribe())
            .collect();
        loop {
            if self.is_up() {
                return true;
            }
            let changed =
                futures::future::select_all(rxs.iter_mut().map(|r| Box::pin(r.changed())));
            if timeout_at(deadline, changed).await.is_err() {
                return self.is_up();
            }
        }
    }

    /// Waits until every session (receivers included) is bound, up to `within`.
    pub async fn wait_all_bound(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        for s in &self.inner.sessions {
            let mut rx = s.state.subscribe();
            if timeout_at(deadline, rx.wait_for(|st| *st == LinkState::Bound))
                .await
                .is_err()
            {
                return false;
            }
        }
        true
    }

    fn pick(&self) -> Option<&Arc<Session>> {
        let sessions = &self.inner.sessions;
        let n = sessions.len();
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let mut best: Option<(&Arc<Session>, usize)> = None;
        for k in 0..n {
            let s = &sessions[(start + k) % n];
            if s.role == SessionRole::Receiver || s.state() != LinkState::Bound {
                continue;
            }
            let free = s.window.available();
            if best.is_none_or(|(_, f)| free > f) {
                best = Some((s, free));
            }
        }
        best.map(|(s, _)| s)
    }

    /// Sends every segment of `msg` on one session, in order, pipelined
    /// within the window; returns one outcome per segment.
    ///
    /// `Err` means nothing was sent: [`Error::LinkDown`],
    /// [`Error::LinkStopped`], [`Error::WindowFull`] and [`Error::NotSent`]
    /// may succeed elsewhere or later; [`Error::InvalidRequest`] never does
    /// (it carries the status an SMSC would refuse it with). Once the first
    /// segment is out, problems are reported per segment.
    ///
    /// With [`UnknownPolicy::Resubmit`] (the default), a segment whose
    /// connection closed before its response (dropped, or closed as
    /// stalled) is submitted again on a healthy session of the link, waiting
    /// up to `resubmit_wait` for one, and reported as
    /// [`SegmentOutcome::Resubmitted`]; segments left unsent behind it
    /// (window full, session lost) are sent there too.
    pub async fn submit(&self, msg: SubmitRequest) -> Result<Vec<SegmentOutcome>> {
        let shared = &self.inner.shared;
        let link = &shared.name;
        let pdus = build_pdus(&msg)?;
        if shared.cancel.is_cancelled() || !*shared.desired.borrow() {
            return Err(Error::LinkStopped { link: link.clone() });
        }
        let session = self
            .pick()
            .ok_or_else(|| Error::LinkDown { link: link.clone() })?
            .clone();
        let all: Vec<(u16, &SubmitSm)> = pdus
            .iter()
            .enumerate()
            .map(|(i, p)| (i as u16, p))
            .collect();
        let tag = msg.tag.as_ref();
        let deadline = Instant::now() + shared.config.load().window_wait;
        let (mut outcomes, mut orphaned): (Vec<_>, Vec<_>) = self
            .send_on(&session, &all, tag, deadline)
            .await?
            .into_iter()
            .unzip();
        if shared.config.load().unknown_policy == UnknownPolicy::Resubmit {
            self.resubmit(&pdus, tag, &mut outcomes, &mut orphaned)
                .await;
        }
        Ok(outcomes)
    }

    /// Sends `pdus` (each with its segment's index in the request) on
    /// `session`, in order, pipelined within its window (waiting for a
    /// slot until `deadline`); one outcome per PDU, with the flag
    /// "unknown, and no answer can come any more". A PDU that times out
    /// is remembered with `tag` and its index, for a late answer. `Err`
    /// when the first PDU was not sent.
    async fn send_on(
        &self,
        session: &Arc<Session>,
        pdus: &[(u16, &SubmitSm)],
        tag: Option<&Arc<str>>,
        deadline: Instant,
    ) -> Result<Vec<(SegmentOutcome, bool)>> {
        let shared = &self.inner.shared;
        let link = &shared.name;
        let started = Instant::now();
        // Every segment of a message has its priority.
        let priority = pdus.first().map_or(0, |(_, p)| u8::from(p.priority_flag));
        let mut sent = Vec::with_capacity(pdus.len());
        let mut not_sent: Option<String> = None;
        for (i, (_, pdu)) in pdus.iter().enumerate() {
            let permit = match timeout_at(deadline, session.window.acquire(priority)).await {
                Ok(p) => p,
                _ => {
                    let waited = started.elapsed();
                    if i == 0 {
                        return Err(Error::WindowFull {
                            link: link.clone(),
                            waited,
                        });
                    }
                    not_sent = Some(format!("send window full, waited {waited:?}"));
                    break;
                }
            };
            match session.send(shared, pdu).await {
                Ok(s) => sent.push((permit, s)),
                Err(reason) => {
                    if i == 0 {
                        return Err(Error::NotSent {
                            link: link.clone(),
                            reason,
                        });
                    }
                    not_sent = Some(reason);
                    break;
                }
            }
        }
        let mut outcomes = Vec::with_capacity(pdus.len());
        for (&(segment, pdu), (permit, s)) in pdus.iter().zip(sent) {
            let tag = tag.map(|t| SubmitTag {
                tag: t.clone(),
                segment,
            });
            outcomes.push(session.outcome(shared, pdu, s, tag).await);
            drop(permit);
        }
        while outcomes.len() < pdus.len() {
            outcomes.push((
                SegmentOutcome::NotSent {
                    reason: not_sent.clone().unwrap_or_default(),
                },
                false,
            ));
        }
        Ok(outcomes)
    }

    /// [`UnknownPolicy::Resubmit`]: sends again, on a healthy session, the
    /// segments whose connection closed before their response
    /// (`orphaned`) and those never sent, for up to `resubmit_wait`.
    async fn resubmit(
        &self,
        pdus: &[SubmitSm],
        tag: Option<&Arc<str>>,
        outcomes: &mut [SegmentOutcome],
        orphaned: &mut [bool],
    ) {
        /// Resubmission rounds at most (each a fresh session).
        const ROUNDS: usize = 3;
        let shared = &self.inner.shared;
        let deadline = Instant::now() + shared.config.load().resubmit_wait;
        for _ in 0..ROUNDS {
            let todo: Vec<usize> = (0..pdus.len())
                .filter(|&i| {
                    orphaned[i] || matches!(outcomes[i].last(), SegmentOutcome::NotSent { .. })
                })
                .collect();
            if todo.is_empty() || shared.cancel.is_cancelled() {
                return;
            }
            let session = loop {
                if let Some(s) = self.pick() {
                    break s.clone();
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || !self.wait_bound(left).await {
                    warn!(
                        link = %shared.name,
                        segments = todo.len(),
                        "no healthy session to resubmit on within resubmit_wait; left unknown"
                    );
                    return;
                }
            };
            let batch: Vec<(u16, &SubmitSm)> = todo.iter().map(|&i| (i as u16, &pdus[i])).collect();
            let window_deadline = deadline.min(Instant::now() + shared.config.load().window_wait);
            let results = match self.send_on(&session, &batch, tag, window_deadline).await {
                Ok(r) => r,
                Err(e) => {
                    debug!(link = %shared.name, error = %e, "resubmission not sent; trying again");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            for (&i, (outcome, lost)) in todo.iter().zip(results) {
                let before = std::mem::replace(
                    &mut outcomes[i],
                    SegmentOutcome::NotSent {
                        reason: String::new(),
                    },
                );
                outcomes[i] = match before {
                    SegmentOutcome::Unknown { session, reason } if orphaned[i] => {
                        shared.resubmitted.fetch_add(1, Ordering::Relaxed);
                        SegmentOutcome::Resubmitted {
                            first: reason,
                            first_session: session,
                            resubmits: 1,
                            outcome: Box::new(outcome),
                        }
                    }
                    SegmentOutcome::Resubmitted {
                        first,
                        first_session,
                        resubmits,
                        ..
                    } => {
                        shared.resubmitted.fetch_add(1, Ordering::Relaxed);
                        SegmentOutcome::Resubmitted {
                            first,
                            first_session,
                            resubmits: resubmits + 1,
                            outcome: Box::new(outcome),
                        }
                    }
                    // Never sent before: this is its first submission.
                    _ => outcome,
                };
                orphaned[i] = lost;
            }
        }
    }

    /// Current status (for CheckESME and metrics).
    pub fn status(&self) -> LinkStatus {
        let shared = &self.inner.shared;
        let sessions: Vec<_> = self.inner.sessions.iter().map(|s| s.status()).collect();
        let count = |st: LinkState| sessions.iter().filter(|s| s.state == st).count();
        let bound = count(LinkState::Bound);
        let state = if bound > 0 {
            LinkState::Bound
        } else if count(LinkState::Stalled) > 0 {
            LinkState::Stalled
        } else if count(LinkState::Unbinding) > 0 {
            LinkState::Unbinding
        } else if count(LinkState::Binding) > 0 {
            LinkState::Binding
        } else {
            LinkState::Down
        };
        LinkStatus {
            name: shared.name.clone(),
            state,
            sessions_bound: bound,
            sessions_total: sessions.len(),
            in_flight: sessions.iter().map(|s| s.in_flight).sum(),
            last_enquire_link_rtt: self
                .inner
                .sessions
                .iter()
                .filter_map(|s| s.last_rtt())
                .max(),
            last_error: sessions
                .iter()
                .filter_map(|s| s.last_error.clone())
                .max_by_key(|e| e.at),
            submit_rate: shared.submit_meter.rate(),
            resubmitted: shared.resubmitted.load(Ordering::Relaxed),
            receipt_rate: shared.receipt_meter.rate(),
            sessions,
            mo_reassembly: self.reassembly(),
        }
    }

    /// The MO reassembly buffer's status alone (what
    /// [`Link::status`]'s `mo_reassembly` holds, without reading every
    /// session): for a memory gauge read at each scrape.
    pub fn reassembly(&self) -> crate::ReassemblyStatus {
        self.inner
            .shared
            .reassembler
            .lock()
            .expect("reassembler lock")
            .status()
    }

    /// Submits that timed out and are remembered for a late answer, as
    /// the `late_responses` structure of the `smsgw_memory_*` gauges
    /// (bound: [`LinkConfig::late_responses`]).
    pub fn late_memory(&self) -> smsgw_core::bounded::MemoryUse {
        let (mut entries, mut bytes) = (0, 0);
        for s in &self.inner.sessions {
            let (n, b) = s.late_memory();
            entries += n;
            bytes += b;
        }
        let per_entry =
            std::mem::size_of::<(u32, SubmitTag)>() + smsgw_core::bounded::ENTRY_OVERHEAD;
        let cfg = self.inner.shared.config.load();
        smsgw_core::bounded::MemoryUse {
            structure: "late_responses",
            entries: entries as u64,
            bytes: (bytes + entries * per_entry) as u64,
            capacity: (cfg.late_responses_per_session() * cfg.sessions) as u64,
            evicted: self.inner.shared.late_forgotten.load(Ordering::Relaxed),
        }
    }

    /// The MO reassembly buffer as the `mo_reassembly` structure of the
    /// `smsgw_memory_*` gauges (bound: its `max_pending` sets).
    pub fn reassembly_memory(&self) -> smsgw_core::bounded::MemoryUse {
        let r = self.reassembly();
        smsgw_core::bounded::MemoryUse {
            structure: "mo_reassembly",
            entries: r.sets as u64,
            bytes: (r.held_bytes + r.sets * smsgw_core::bounded::ENTRY_OVERHEAD) as u64,
            capacity: r.max_sets as u64,
            evicted: r.evicted,
        }
    }

    /// Stops the link: every session drains its window (up to
    /// `drain_timeout`), unbinds and stays down until [`Link::start`].
    /// Returns once all sessions are down.
    pub async fn stop(&self) {
        self.set_running(false);
        for s in &self.inner.sessions {
            let mut rx = s.state.subscribe();
            let _ = rx.wait_for(|st| *st == LinkState::Down).await;
        }
    }

    /// Whether the link is meant to be bound: false after [`Link::stop`]
    /// (until [`Link::start`]) and for a link spawned stopped
    /// ([`LinkConfig::start_stopped`]).
    pub fn is_running(&self) -> bool {
        *self.inner.shared.desired.borrow()
    }

    /// (Re)starts a stopped link; sessions bind in the background.
    pub fn start(&self) {
        self.set_running(true);
    }

    fn set_running(&self, running: bool) {
        let _g = self.inner.gates.lock().expect("gates lock");
        self.inner.shared.desired.send_replace(running);
        for s in &self.inner.sessions {
            s.refresh(running);
        }
    }

    /// Sets the bind slots this process holds: sessions of other slots
    /// drain their window and unbind (or stay down), those of the slots
    /// in `open` bind (while the link runs).
    pub fn set_open_slots(&self, open: &BTreeSet<u32>) {
        let _g = self.inner.gates.lock().expect("gates lock");
        let running = *self.inner.shared.desired.borrow();
        for s in &self.inner.sessions {
            s.set_slot_open(open.contains(&s.slot));
            s.refresh(running);
        }
    }

    /// Whether every session of bind slot `slot` is down (none bound,
    /// binding or unbinding).
    pub fn slot_is_down(&self, slot: u32) -> bool {
        self.inner
            .sessions
            .iter()
            .filter(|s| s.slot == slot)
            .all(|s| s.state() == LinkState::Down)
    }

    /// [`Link::stop`] then [`Link::start`].
    pub async fn restart(&self) {
        self.stop().await;
        self.start();
    }

    /// Drains, unbinds and ends every session; returns when they are gone.
    pub async fn shutdown(&self) {
        self.inner.shared.cancel.cancel();
        self.inner.tracker.wait().await;
    }

    /// Waits until every session task has ended (after cancellation).
    pub async fn closed(&self) {
        self.inner.tracker.wait().await;
    }
}

fn bad(command_status: u32, reason: impl Into<String>) -> Error {
    Error::InvalidRequest {
        command_status,
        reason: reason.into(),
    }
}

/// Turns a request into one `submit_sm` per segment.
pub(crate) fn build_pdus(req: &SubmitRequest) -> Result<Vec<SubmitSm>> {
    if req.segments.is_empty() {
        return Err(bad(ESME_RINVMSGLEN, "no segments"));
    }
    if req.segments.len() > 255 {
        return Err(bad(ESME_RINVMSGLEN, "more than 255 segments"));
    }
    let source = COctetString::<1, 21>::from_string(req.source.addr.clone())
        .map_err(|e| bad(ESME_RINVSRCADR, format!("source address: {e}")))?;
    let destination = COctetString::<1, 21>::from_string(req.destination.addr.clone())
        .map_err(|e| bad(ESME_RINVDSTADR, format!("destination address: {e}")))?;
    if destination.is_empty() {
        return Err(bad(ESME_RINVDSTADR, "empty destination address"));
    }
    let service_type = ServiceType::new(
        COctetString::from_string(req.service_type.clone())
            .map_err(|e| bad(ESME_RINVSERTYP, format!("service_type: {e}")))?,
    );
    if req.priority > 3 {
        return Err(bad(
            ESME_RINVPRTFLG,
            format!("priority_flag {} is not 0 to 3", req.priority),
        ));
    }
    let time = |t: Option<String>, what: &str, status: u32| {
        t.map_or(Ok(EmptyOrFullCOctetString::empty()), |t| {
            EmptyOrFullCOctetString::<17>::from_str(&t)
                .map_err(|e| bad(status, format!("{what}: {e}")))
        })
    };
    let validity_period = time(
        req.validity_period.map(crate::time::relative),
        "validity_period",
        ESME_RINVEXPIRY,
    )?;
    let schedule = time(
        req.schedule_delivery_time.map(crate::time::absolute),
        "schedule_delivery_time",
        ESME_RINVSCHED,
    )?;
    let mut out = Vec::with_capacity(req.segments.len());
    for seg in &req.segments {
        let mut tlvs = Vec::new();
        let short = if seg.use_message_payload || seg.payload.len() > 254 {
            tlvs.push(MessageSubmissionRequestTlvValue::MessagePayload(
                MessagePayload::new(AnyOctetString::from_bytes(seg.payload.clone())),
            ));
            OctetString::empty()
        } else {
            OctetString::from_bytes(seg.payload.clone())
                .map_err(|e| bad(ESME_RINVMSGLEN, format!("segment: {e}")))?
        };
        if let Some(sar) = seg.sar {
            tlvs.push(MessageSubmissionRequestTlvValue::SarMsgRefNum(sar.ref_num));
            tlvs.push(MessageSubmissionRequestTlvValue::SarTotalSegments(
                sar.total,
            ));
            tlvs.push(MessageSubmissionRequestTlvValue::SarSegmentSeqnum(sar.seq));
        }
        out.push(
            SubmitSm::builder()
                .service_type(service_type.clone())
                .source_addr_ton(Ton::from(req.source.ton))
                .source_addr_npi(Npi::from(req.source.npi))
                .source_addr(source.clone())
                .dest_addr_ton(Ton::from(req.destination.ton))
                .dest_addr_npi(Npi::from(req.destination.npi))
                .destination_addr(destination.clone())
                .esm_class(EsmClass::from(req.esm_class))
                .protocol_id(req.protocol_id)
                .priority_flag(PriorityFlag::from(req.priority))
                .schedule_delivery_time(schedule.clone())
                .validity_period(validity_period.clone())
                .registered_delivery(RegisteredDelivery::from(req.registered_delivery))
                .data_coding(DataCoding::from(req.data_coding))
                .short_message(short)
                .tlvs(tlvs)
                .build(),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Address, Segment};
    use std::time::UNIX_EPOCH;

    fn request() -> SubmitRequest {
        SubmitRequest::new(
            Address::new("ACME", 5, 0),
            Address::new("4917012345", 1, 1),
            vec![Segment::new(b"one".to_vec()), Segment::new(b"two".to_vec())],
        )
    }

    #[test]
    fn message_options_reach_every_submit_sm_of_a_message() {
        let at = UNIX_EPOCH + Duration::from_millis(1_796_632_205_250);
        let req = SubmitRequest {
            priority: 3,
            data_coding: 0x10,
            validity_period: Some(Duration::from_secs(3_600)),
            schedule_delivery_time: Some(at),
            ..request()
        };
        let pdus = build_pdus(&req).unwrap();
        assert_eq!(pdus.len(), 2);
        for pdu in &pdus {
            assert_eq!(u8::from(pdu.priority_flag), 3);
            assert_eq!(u8::from(pdu.data_coding), 0x10);
            assert_eq!(pdu.validity_period.as_str(), "000000010000000R");
            assert_eq!(pdu.schedule_delivery_time.as_str(), "261207083005200+");
        }
        // None set: the fields stay empty, as before.
        let plain = build_pdus(&request()).unwrap();
        assert!(plain[0].validity_period.is_empty());
        assert!(plain[0].schedule_delivery_time.is_empty());
        assert_eq!(u8::from(plain[0].priority_flag), 0);
        let bad = SubmitRequest {
            priority: 4,
            ..request()
        };
        assert!(matches!(
            build_pdus(&bad),
            Err(Error::InvalidRequest { .. })
        ));
    }
}
