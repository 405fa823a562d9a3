//! The SMPP links and pools of a snapshot, held for the gateway's lifetime:
//! built from `SmppLink`/`EsmePool` specs, exposed to the API through
//! [`LinkControl`], their events consumed here.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use smsgw_core::links::{
    LinkAction, LinkControl, LinkView, OutboundMessage, Submission, SubmitError,
};
use smsgw_core::messages::{ReceiptOutcome, ReceiptUpdate, unix_now_ms};
use smsgw_crds::{
    BindMode, InterfaceVersion, MessageIdFormat, SmppLinkSpec, Snapshot, UnknownPolicy,
};
use smsgw_smpp::{Link, LinkConfig, LinkEvent, LinkStatus, Pool, Registry};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The link configuration an `SmppLink` spec stands for.
pub fn link_config(name: &str, spec: &SmppLinkSpec) -> LinkConfig {
    let mut c = LinkConfig {
        name: name.to_owned(),
        host: spec.host.clone(),
        port: spec.port,
        tls: spec.tls,
        tls_ca: spec.tls_ca.clone(),
        tls_server_name: spec.tls_server_name.clone(),
        tls_insecure_skip_verify: spec.tls_insecure_skip_verify,
        system_id: spec.system_id.clone(),
        password: smsgw_smpp::Password::new(spec.password.clone().unwrap_or_default()),
        system_type: spec.system_type.clone(),
        bind_mode: match spec.bind_mode {
            BindMode::Transceiver => smsgw_smpp::BindMode::Transceiver,
            BindMode::TransmitterReceiver => smsgw_smpp::BindMode::TransmitterReceiver,
        },
        interface_version: match spec.interface_version {
            InterfaceVersion::V34 => smsgw_smpp::InterfaceVersion::V34,
            InterfaceVersion::V50 => smsgw_smpp::InterfaceVersion::V50,
        },
        sessions: spec.sessions as usize,
        window: spec.window as usize,
        rate: spec.rate.map(f64::from),
        burst: spec.burst.or(spec.rate).unwrap_or(1),
        response_timeout: spec.response_timeout.get(),
        stall_after_timeouts: spec.stall_after_timeouts,
        start_stopped: spec.suspended,
        unknown_policy: match spec.unknown_policy {
            UnknownPolicy::Resubmit => smsgw_smpp::UnknownPolicy::Resubmit,
            UnknownPolicy::Hold => smsgw_smpp::UnknownPolicy::Hold,
        },
        enquire_link_interval: spec.enquire_link_interval.get(),
        reconnect: smsgw_smpp::Backoff {
            initial: spec.reconnect.initial.get(),
            max: spec.reconnect.max.get(),
        },
        message_id_format: match spec.message_id_format {
            MessageIdFormat::String => smsgw_smpp::IdFormat::Opaque,
            MessageIdFormat::Hex => smsgw_smpp::IdFormat::Hex,
            MessageIdFormat::Decimal => smsgw_smpp::IdFormat::Decimal,
        },
        ..LinkConfig::default()
    };
    c.source = smsgw_smpp::TonNpi {
        ton: spec.defaults.source_ton,
        npi: spec.defaults.source_npi,
    };
    c.destination = smsgw_smpp::TonNpi {
        ton: spec.defaults.dest_ton,
        npi: spec.defaults.dest_npi,
    };
    c
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReceiptLabels {
    link: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LinkLabels {
    link: String,
}

/// Every link and pool of the configuration; [`Links::update`] replaces
/// the links whose spec changed and rebuilds the pools.
pub struct Links {
    current: std::sync::RwLock<Arc<Current>>,
    /// Bind-slot gates, when sessions bind only with a slot Lease.
    gates: Option<Arc<crate::bind_slots::Gates>>,
    /// Every link's [`LinkConfig::late_responses`] (`--late-responses`).
    late_responses: usize,
    events: mpsc::Sender<LinkEvent>,
    cancel: CancellationToken,
    tracker: tokio_util::task::TaskTracker,
}

/// The links and pools in force (the [`Registry`] the API submits
/// through), with the specs they were built from.
struct Current {
    registry: Registry,
    /// Each link's spec and the token stopping it alone.
    specs: BTreeMap<String, (SmppLinkSpec, CancellationToken)>,
}

impl std::ops::Deref for Current {
    type Target = Registry;
    fn deref(&self) -> &Registry {
        &self.registry
    }
}

impl Links {
    /// Starts every link of `snap` (binding in the background) and a task
    /// consuming their events; everything stops when `cancel` fires, links
    /// draining their windows and unbinding first. With `gates`, sessions
    /// bind only in the slots the gates open.
    pub fn start(
        snap: &Snapshot,
        cancel: &CancellationToken,
        tracker: &tokio_util::task::TaskTracker,
        metrics: &smsgw_api::metrics::Metrics,
        state: smsgw_api::ApiState,
        gates: Option<Arc<crate::bind_slots::Gates>>,
        late_responses: usize,
    ) -> anyhow::Result<Arc<Links>> {
        let (tx, rx) = mpsc::channel(65_536);
        let (current, _, _) = build(
            snap,
            None,
            &tx,
            cancel,
            tracker,
            gates.as_deref(),
            late_responses,
        )?;
        if let Some(g) = &gates {
            g.install(&current.links, Vec::new(), tracker);
        }
        let receipts = Family::<ReceiptLabels, Counter>::default();
        let mo = Family::<LinkLabels, Counter>::default();
        let late = Family::<LinkLabels, Counter>::default();
        let unmatched = Family::<LinkLabels, Counter>::default();
        metrics.with_registry(|r| {
            r.register(
                "smpp_receipts",
                "Delivery receipts received, by link and state",
                receipts.clone(),
            );
            r.register(
                "smpp_mobile_originated",
                "Mobile-originated messages received, by link",
                mo.clone(),
            );
            r.register(
                "smpp_late_responses",
                "submit_sm_resp arriving after their timeout, by link",
                late.clone(),
            );
            r.register(
                "smpp_receipts_unmatched",
                "Delivery receipts whose SMSC id matched no message (yet), by link",
                unmatched.clone(),
            );
        });
        // Every link's rare-event series exist from the start at 0, so
        // rate() and alerts see them before the first event.
        for link in snap.links.keys() {
            let l = LinkLabels { link: link.clone() };
            for f in [&mo, &late, &unmatched] {
                let _ = f.get_or_create(&l);
            }
        }
        let counters = EventCounters {
            receipts,
            mo,
            late,
            unmatched,
        };
        tracker.spawn(consume_events(rx, cancel.clone(), counters, state));
        let links = Arc::new(Links {
            current: std::sync::RwLock::new(Arc::new(current)),
            gates,
            late_responses,
            events: tx,
            cancel: cancel.clone(),
            tracker: tracker.clone(),
        });
        metrics.with_registry(|r| {
            r.register_collector(Box::new(crate::link_metrics::LinkGauges(Arc::downgrade(
                &links,
            ))));
        });
        let weak = Arc::downgrade(&links);
        metrics.add_memory_source(move || {
            weak.upgrade()
                .map(|l| vec![l.reassembly_memory(), l.late_memory()])
                .unwrap_or_default()
        });
        Ok(links)
    }

    /// The MO reassembly buffers of every link, as one bounded structure of
    /// the `smsgw_memory_*` gauges (`mo_reassembly`; bound: the links'
    /// `max_pending` sets together).
    fn reassembly_memory(&self) -> smsgw_core::bounded::MemoryUse {
        let current = self.current();
        smsgw_core::bounded::MemoryUse::total(
            "mo_reassembly",
            current.links.values().map(Link::reassembly_memory),
        )
    }

    /// The submits every link remembers for a late answer, as one bounded
    /// structure of the `smsgw_memory_*` gauges (`late_responses`; bound:
    /// `--late-responses` per link).
    fn late_memory(&self) -> smsgw_core::bounded::MemoryUse {
        let current = self.current();
        smsgw_core::bounded::MemoryUse::total(
            "late_responses",
            current.links.values().map(Link::late_memory),
        )
    }

    /// Every link's status and its window per session, for the metrics.
    pub(crate) fn statuses(&self) -> Vec<(LinkStatus, usize)> {
        self.current()
            .links
            .values()
            .map(|l| (l.status(), l.config().window))
            .collect()
    }

    /// Follows a new snapshot: links whose pacing, timeouts or defaults
    /// changed take them in place, sessions bound
    /// ([`smsgw_smpp::LinkConfig::retunable_to`]); links whose spec changed
    /// otherwise are replaced (the
    /// new one binds while the old one drains its window and unbinds),
    /// removed ones stop, added ones start, unchanged ones keep their
    /// sessions; pools are rebuilt. Returns the names of the links started
    /// or stopped. On error nothing changes.
    pub fn update(&self, snap: &Snapshot) -> anyhow::Result<Vec<String>> {
        let prev = self.current();
        let (next, changed, retired) = build(
            snap,
            Some(&prev),
            &self.events,
            &self.cancel,
            &self.tracker,
            self.gates.as_deref(),
            self.late_responses,
        )?;
        if let Some(g) = &self.gates {
            let old = retired
                .iter()
                .map(|(name, link, _)| (name.clone(), link.clone()))
                .collect();
            g.install(&next.links, old, &self.tracker);
        }
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        for (_, _, token) in retired {
            token.cancel();
        }
        Ok(changed)
    }

    /// Whether this pod holds a bound, submit-capable session of `target`
    /// (a link, or any member of a pool); `None` when no link or pool has
    /// that name. Cross-pod dispatch asks this before submitting here.
    pub(crate) fn up_here(&self, target: &str) -> Option<bool> {
        let current = self.current();
        if let Some(l) = current.links.get(target) {
            Some(l.is_up())
        } else {
            current.pools.get(target).map(|p| p.is_up())
        }
    }

    /// Whether the link's SmppLink suspends it (`spec.suspended`).
    pub(crate) fn is_suspended(&self, name: &str) -> bool {
        self.current()
            .links
            .get(name)
            .is_some_and(|l| l.config().start_stopped)
    }

    /// Whether an admin stopped the link on this pod.
    pub(crate) fn is_stopped(&self, name: &str) -> bool {
        self.current()
            .links
            .get(name)
            .is_some_and(|l| !l.is_running())
    }

    /// The member links of `target`: itself for a link, the members for a
    /// pool, nothing when unknown.
    pub(crate) fn members(&self, target: &str) -> Vec<String> {
        let current = self.current();
        if current.links.contains_key(target) {
            vec![target.to_owned()]
        } else {
            current.pools.get(target).map_or_else(Vec::new, |p| {
                p.links().iter().map(|l| l.name().to_owned()).collect()
            })
        }
    }

    /// Whether a message for `target` whose fate is unknown is sent again
    /// (`unknownPolicy: resubmit`, the default): true unless every member
    /// link says `hold`. Cross-pod dispatch asks this when a hand-off is
    /// lost.
    pub(crate) fn resubmits_unknown(&self, target: &str) -> bool {
        let current = self.current();
        let members = self.members(target);
        members.is_empty()
            || members.iter().any(|m| {
                current
                    .specs
                    .get(m)
                    .is_none_or(|(spec, _)| spec.unknown_policy == UnknownPolicy::Resubmit)
            })
    }

    /// Every link with whether this pod holds it up (a submit-capable
    /// session bound), by name.
    pub(crate) fn up_links(&self) -> Vec<(String, bool)> {
        self.current()
            .links
            .iter()
            .map(|(n, l)| (n.clone(), l.is_up()))
            .collect()
    }

    fn current(&self) -> Arc<Current> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The links retired by a change, with the tokens stopping them.
type Retired = Vec<(String, Link, CancellationToken)>;

/// The links and pools of `snap`, reusing the links of `prev` whose spec
/// is unchanged; also the names of links started or retired, and the
/// retired links with the tokens stopping them (to fire once `next` is in
/// force). With `gates`, new links start with the slots the gates hold
/// open (none for a link replacing a running one).
fn build(
    snap: &Snapshot,
    prev: Option<&Current>,
    events: &mpsc::Sender<LinkEvent>,
    cancel: &CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
    gates: Option<&crate::bind_slots::Gates>,
    late_responses: usize,
) -> anyhow::Result<(Current, Vec<String>, Retired)> {
    let mut links = BTreeMap::new();
    let mut specs = BTreeMap::new();
    let mut changed = Vec::new();
    let mut spawned = Vec::new();
    let mut retuned = Vec::new();
    for (name, spec) in &snap.links {
        if let Some(p) = prev.filter(|p| p.specs.get(name).is_some_and(|(s, _)| s == spec)) {
            links.insert(name.clone(), p.links[name].clone());
            specs.insert(name.clone(), p.specs[name].clone());
            continue;
        }
        // A change of pacing, timeouts or defaults only: the running link
        // takes it in place, its sessions stay bound (issue 17).
        let config = LinkConfig {
            late_responses,
            ..link_config(name, spec)
        };
        if let Some((p, link)) = prev.and_then(|p| Some((p, p.links.get(name)?)))
            && link.config().retunable_to(&config)
            && config.validate().is_ok()
        {
            links.insert(name.clone(), link.clone());
            let token = p.specs[name].1.clone();
            specs.insert(name.clone(), (spec.clone(), token));
            retuned.push((link.clone(), config));
            continue;
        }
        let token = cancel.child_token();
        let replacing = prev.is_some_and(|p| p.links.contains_key(name));
        let open = gates.map(|g| g.initial(name, replacing));
        let link = match Link::spawn_gated(config, events.clone(), token.clone(), open.as_ref()) {
            Ok(l) => l,
            Err(e) => {
                spawned.iter().for_each(CancellationToken::cancel);
                token.cancel();
                anyhow::bail!("link {name:?}: {e}");
            }
        };
        spawned.push(token.clone());
        links.insert(name.clone(), link);
        specs.insert(name.clone(), (spec.clone(), token));
        changed.push(name.clone());
    }
    let mut pools = BTreeMap::new();
    for (name, spec) in &snap.pools {
        let members = spec
            .members
            .iter()
            .filter_map(|m| Some((links.get(&m.link)?.clone(), m.weight)))
            .collect();
        match Pool::new(name.clone(), members) {
            Ok(pool) => pools.insert(name.clone(), Arc::new(pool)),
            Err(e) => {
                spawned.iter().for_each(CancellationToken::cancel);
                anyhow::bail!("pool {name:?}: {e}");
            }
        };
    }
    let mut retired = Vec::new();
    for (name, (spec, token)) in prev.map(|p| &p.specs).into_iter().flatten() {
        if snap.links.get(name) != Some(spec) && !retuned.iter().any(|(l, _)| l.name() == name) {
            let old = prev.and_then(|p| p.links.get(name)).cloned();
            if let Some(old) = old {
                retired.push((name.clone(), old, token.clone()));
            } else {
                token.cancel();
            }
            if !changed.contains(name) {
                changed.push(name.clone());
            }
        }
    }
    // Only now that the whole configuration is built: on an error above
    // nothing changed.
    for (link, config) in retuned {
        link.retune(config);
    }
    for name in &changed {
        if let Some(link) = links.get(name) {
            let link = link.clone();
            tracker.spawn(async move { link.closed().await });
        }
    }
    changed.sort();
    Ok((
        Current {
            registry: Registry { links, pools },
            specs,
        },
        changed,
        retired,
    ))
}

struct EventCounters {
    receipts: Family<ReceiptLabels, Counter>,
    mo: Family<LinkLabels, Counter>,
    late: Family<LinkLabels, Counter>,
    unmatched: Family<LinkLabels, Counter>,
}

/// Consumes link events until shutdown; after the cancellation it keeps
/// draining while events still arrive (sessions unbinding may deliver the
/// last receipts), and stops after a quiet second. Receipts and late
/// responses are applied to the message store in their own tasks, so a slow
/// store never stops the SMPP sessions from reading.
async fn consume_events(
    mut rx: mpsc::Receiver<LinkEvent>,
    cancel: CancellationToken,
    counters: EventCounters,
    state: smsgw_api::ApiState,
) {
    let messages = state.messages.clone();
    let inflight = Arc::new(tokio::sync::Semaphore::new(4096));
    let counters = Arc::new(counters);
    loop {
        let ev = if cancel.is_cancelled() {
            match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
                Ok(Some(ev)) => ev,
                _ => break,
            }
        } else {
            tokio::select! {
                ev = rx.recv() => match ev { Some(ev) => ev, None => break },
                () = cancel.cancelled() => continue,
            }
        };
        match ev {
            LinkEvent::Receipt(r) => {
                counters
                    .receipts
                    .get_or_create(&ReceiptLabels {
                        link: r.link.clone(),
                        state: format!("{:?}", r.state),
                    })
                    .inc();
                let update = ReceiptUpdate {
                    link: r.link.clone(),
                    smsc_message_id: r.smsc_message_id.normalized.clone(),
                    state: r.state,
                    error_code: r.error_code,
                    at_ms: unix_now_ms(),
                };
                let Ok(permit) = inflight.clone().acquire_owned().await else {
                    break;
                };
                let (messages, counters) = (messages.clone(), counters.clone());
                tokio::spawn(async move {
                    let outcome = messages.on_receipt(update).await;
                    if outcome.is_ok() {
                        // Stored (applied, a duplicate, parked for a message
                        // not yet known, or for one already gone): only now
                        // may the SMSC forget it. Not stored: dropping the
                        // ack asks the SMSC to deliver it again.
                        r.ack.stored();
                    }
                    match outcome {
                        Ok(ReceiptOutcome::Parked | ReceiptOutcome::Orphaned) => {
                            tracing::info!(link = %r.link, smsc_message_id = %r.smsc_message_id.normalized, "receipt for an unknown SMSC id kept for later");
                            counters
                                .unmatched
                                .get_or_create(&LinkLabels { link: r.link })
                                .inc();
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = ?e, link = %r.link, "receipt not applied"),
                    }
                    drop(permit);
                });
            }
            LinkEvent::MobileOriginated(m) => {
                counters
                    .mo
                    .get_or_create(&LinkLabels {
                        link: m.link.clone(),
                    })
                    .inc();
                let link = m.link.clone();
                match messages
                    .on_mobile_originated(smsgw_messaging::MobileOriginated {
                        link: m.link,
                        source: m.source.addr,
                        destination: m.destination.addr,
                        data_coding: m.data_coding,
                        payload: m.payload.to_vec(),
                        text: m.text,
                        complete: m.complete,
                    })
                    .await
                {
                    // In the outbox (or owned by no app, which a second
                    // delivery would not change): the SMSC may forget it.
                    // Not kept: dropping the ack asks for it again.
                    Ok(_) => m.ack.stored(),
                    Err(e) => {
                        tracing::warn!(error = ?e, %link, "mobile-originated message not kept; the SMSC is asked to deliver it again")
                    }
                }
            }
            LinkEvent::LateResponse {
                link,
                command_status,
                smsc_message_id,
                tag,
                ..
            } => {
                counters
                    .late
                    .get_or_create(&LinkLabels { link: link.clone() })
                    .inc();
                let id = smsc_message_id.map(|i| i.normalized);
                let segment = tag.as_ref().map(|t| (&*t.tag, t.segment));
                if let Err(e) = messages
                    .on_late_response(&link, segment, command_status, id)
                    .await
                {
                    tracing::warn!(error = ?e, %link, "late response not applied");
                }
            }
            LinkEvent::StateChanged {
                link,
                session,
                state,
                reason,
            } => {
                tracing::info!(%link, session, state = state.as_str(), reason = reason.as_deref().unwrap_or(""), "session state");
            }
            _ => {}
        }
    }
    // Let in-flight receipt updates finish before shutdown completes.
    let _ = inflight.acquire_many(4096).await;
}

#[async_trait::async_trait]
impl LinkControl for Links {
    fn links(&self) -> Vec<LinkView> {
        self.current().registry.links()
    }

    fn link(&self, name: &str) -> Option<LinkView> {
        self.current().registry.link(name)
    }

    async fn submit(&self, target: &str, msg: OutboundMessage) -> Result<Submission, SubmitError> {
        let current = self.current();
        current.registry.submit(target, msg).await
    }

    /// Stops, starts or restarts a link on this pod. A suspended link
    /// (`spec.suspended`) is left as it is: only its SmppLink resumes it.
    async fn control(&self, name: &str, action: LinkAction) -> Option<LinkView> {
        let current = self.current();
        current.registry.control(name, action).await
    }
}

/// The links of the gateway, set by the first snapshot applied; until then
/// it behaves as a gateway without links.
#[derive(Default)]
pub struct LinkSet {
    current: std::sync::RwLock<Option<Arc<Links>>>,
    /// Bind-slot gates (`--bind-leases`), set before the first snapshot.
    gates: std::sync::OnceLock<Arc<crate::bind_slots::Gates>>,
}

impl LinkSet {
    /// The running links, once the first snapshot started them.
    pub(crate) fn get(&self) -> Option<Arc<Links>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Holds the links the first snapshot started.
    pub(crate) fn set(&self, links: Arc<Links>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(links);
    }

    /// Gates the links started from now on by bind slots.
    pub(crate) fn gate(&self, gates: Arc<crate::bind_slots::Gates>) {
        let _ = self.gates.set(gates);
    }

    /// The bind-slot gates, with `--bind-leases`.
    pub(crate) fn gates(&self) -> Option<Arc<crate::bind_slots::Gates>> {
        self.gates.get().cloned()
    }
}

#[async_trait::async_trait]
impl LinkControl for LinkSet {
    fn links(&self) -> Vec<LinkView> {
        self.get().map(|l| l.links()).unwrap_or_default()
    }

    fn link(&self, name: &str) -> Option<LinkView> {
        self.get()?.link(name)
    }

    async fn control(&self, name: &str, action: LinkAction) -> Option<LinkView> {
        self.get()?.control(name, action).await
    }

    async fn submit(&self, target: &str, msg: OutboundMessage) -> Result<Submission, SubmitError> {
        match self.get() {
            Some(l) => l.submit(target, msg).await,
            None => Err(SubmitError::UnknownTarget(target.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spec_field_reaches_the_link_config() {
        let snap = smsgw_crds::compile_manifests(include_str!("../../../examples/standalone.yaml"))
            .unwrap();
        let c = link_config("local-sim", &snap.links["local-sim"]);
        assert_eq!(
            (c.host.as_str(), c.port, c.system_id.as_str()),
            ("127.0.0.1", 2775, "smsgw")
        );
        assert_eq!(c.password.expose(), "secret");
        assert_eq!(
            (c.sessions, c.window, c.rate, c.burst),
            (2, 64, Some(1000.0), 200)
        );
        assert_eq!(c.response_timeout, Duration::from_secs(5));
        assert_eq!(c.stall_after_timeouts, 1);
        let mut stall = snap.links["local-sim"].clone();
        stall.stall_after_timeouts = 3;
        assert_eq!(link_config("local-sim", &stall).stall_after_timeouts, 3);
        assert_eq!(c.unknown_policy, smsgw_smpp::UnknownPolicy::Resubmit);
        stall.unknown_policy = UnknownPolicy::Hold;
        assert_eq!(
            link_config("local-sim", &stall).unknown_policy,
            smsgw_smpp::UnknownPolicy::Hold
        );
        assert_eq!(c.enquire_link_interval, Duration::from_secs(5));
        assert_eq!(c.reconnect.initial, Duration::from_millis(500));
        assert_eq!(c.message_id_format, smsgw_smpp::IdFormat::Hex);
        assert_eq!((c.destination.ton, c.destination.npi), (1, 1));
        c.validate().unwrap();
        assert!(!c.tls);

        let mut tls = snap.links["local-sim"].clone();
        tls.tls = true;
        tls.tls_server_name = Some("localhost".into());
        tls.tls_insecure_skip_verify = true;
        let c = link_config("local-sim", &tls);
        assert!(c.tls && c.tls_insecure_skip_verify);
        assert_eq!(c.tls_server_name.as_deref(), Some("localhost"));
        c.validate().unwrap();
        tls.tls_insecure_skip_verify = false;
        tls.tls_ca = Some("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".into());
        let c = link_config("local-sim", &tls);
        assert_eq!(c.tls_ca, tls.tls_ca);
        // Reaching the TLS stack: the bundle is parsed, and this one is empty.
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("tls_ca"), "{e}");
    }

    #[tokio::test]
    async fn a_link_set_without_links_knows_no_target() {
        let set = LinkSet::default();
        assert!(set.links().is_empty());
        assert!(set.link("x").is_none());
        assert!(set.get().is_none());
    }
}
