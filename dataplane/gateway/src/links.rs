//! The SMPP links and pools of a snapshot, held for the gateway's lifetime:
//! built from `SmppLink`/`EsmePool` specs, exposed to the API through
//! [`LinkControl`], their events consumed here.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use smsgw_core::links::{LinkAction, LinkControl, LinkView, SessionView};
use smsgw_crds::{BindMode, InterfaceVersion, MessageIdFormat, SmppLinkSpec, Snapshot};
use smsgw_smpp::{Link, LinkConfig, LinkEvent, LinkState, LinkStatus, Pool, SessionRole};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The link configuration an `SmppLink` spec stands for.
pub fn link_config(name: &str, spec: &SmppLinkSpec) -> LinkConfig {
    let mut c = LinkConfig {
        name: name.to_owned(),
        host: spec.host.clone(),
        port: spec.port,
        tls: spec.tls,
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

/// Every link and pool of the configuration.
pub struct Links {
    links: BTreeMap<String, Link>,
    /// Pools by name; the send path routes through them.
    #[allow(dead_code)]
    pools: BTreeMap<String, Pool>,
    stopped: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl Links {
    /// Starts every link of `snap` (binding in the background) and a task
    /// consuming their events; everything stops when `cancel` fires, links
    /// draining their windows and unbinding first.
    pub fn start(
        snap: &Snapshot,
        cancel: &CancellationToken,
        tracker: &tokio_util::task::TaskTracker,
        metrics: &smsgw_api::metrics::Metrics,
    ) -> anyhow::Result<Arc<Links>> {
        let (tx, rx) = mpsc::channel(65_536);
        let mut links = BTreeMap::new();
        for (name, spec) in &snap.links {
            let link = Link::spawn(link_config(name, spec), tx.clone(), cancel.child_token())
                .map_err(|e| anyhow::anyhow!("link {name:?}: {e}"))?;
            links.insert(name.clone(), link);
        }
        let mut pools = BTreeMap::new();
        for (name, spec) in &snap.pools {
            let members = spec
                .members
                .iter()
                .map(|m| (links[&m.link].clone(), m.weight))
                .collect();
            let pool = Pool::new(name.clone(), members)
                .map_err(|e| anyhow::anyhow!("pool {name:?}: {e}"))?;
            pools.insert(name.clone(), pool);
        }
        let receipts = Family::<ReceiptLabels, Counter>::default();
        let mo = Family::<LinkLabels, Counter>::default();
        let late = Family::<LinkLabels, Counter>::default();
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
        });
        tracker.spawn(consume_events(rx, cancel.clone(), receipts, mo, late));
        for link in links.values() {
            let link = link.clone();
            tracker.spawn(async move { link.closed().await });
        }
        Ok(Arc::new(Links {
            links,
            pools,
            stopped: Default::default(),
        }))
    }
}

/// Consumes link events until shutdown; after the cancellation it keeps
/// draining while events still arrive (sessions unbinding may deliver the
/// last receipts), and stops after a quiet second.
async fn consume_events(
    mut rx: mpsc::Receiver<LinkEvent>,
    cancel: CancellationToken,
    receipts: Family<ReceiptLabels, Counter>,
    mo: Family<LinkLabels, Counter>,
    late: Family<LinkLabels, Counter>,
) {
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
                tracing::debug!(link = %r.link, smsc_message_id = %r.smsc_message_id.normalized, state = ?r.state, "receipt");
                receipts
                    .get_or_create(&ReceiptLabels {
                        link: r.link,
                        state: format!("{:?}", r.state),
                    })
                    .inc();
            }
            LinkEvent::MobileOriginated(m) => {
                tracing::info!(link = %m.link, "mobile-originated message received");
                mo.get_or_create(&LinkLabels { link: m.link }).inc();
            }
            LinkEvent::LateResponse {
                link,
                session,
                sequence_number,
                ..
            } => {
                tracing::info!(%link, session, sequence_number, "late submit_sm_resp");
                late.get_or_create(&LinkLabels { link }).inc();
            }
            LinkEvent::StateChanged {
                link,
                session,
                state,
                reason,
            } => {
                tracing::info!(%link, session, state = state_name(state), reason = reason.as_deref().unwrap_or(""), "session state");
            }
            _ => {}
        }
    }
}

fn state_name(s: LinkState) -> &'static str {
    match s {
        LinkState::Down => "down",
        LinkState::Binding => "binding",
        LinkState::Bound => "bound",
        LinkState::Unbinding => "unbinding",
    }
}

fn ms(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64() * 1000.0)
}

fn view(st: LinkStatus, stopped: bool) -> LinkView {
    LinkView {
        state: if stopped && st.state == LinkState::Down {
            "stopped".into()
        } else {
            state_name(st.state).into()
        },
        name: st.name,
        sessions_bound: st.sessions_bound as u32,
        sessions_total: st.sessions_total as u32,
        in_flight: st.in_flight as u32,
        last_enquire_link_rtt_ms: ms(st.last_enquire_link_rtt),
        last_error: st.last_error.as_ref().map(|e| e.message.clone()),
        last_error_at_ms: st
            .last_error
            .as_ref()
            .and_then(|e| e.at.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64),
        submit_rate: st.submit_rate,
        receipt_rate: st.receipt_rate,
        sessions: st
            .sessions
            .into_iter()
            .map(|s| SessionView {
                index: s.index as u32,
                role: match s.role {
                    SessionRole::Transceiver => "transceiver",
                    SessionRole::Transmitter => "transmitter",
                    SessionRole::Receiver => "receiver",
                }
                .into(),
                state: state_name(s.state).into(),
                in_flight: s.in_flight as u32,
                last_enquire_link_rtt_ms: ms(s.last_enquire_link_rtt),
            })
            .collect(),
    }
}

#[async_trait::async_trait]
impl LinkControl for Links {
    fn links(&self) -> Vec<LinkView> {
        let stopped = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
        self.links
            .iter()
            .map(|(n, l)| view(l.status(), stopped.contains(n)))
            .collect()
    }

    fn link(&self, name: &str) -> Option<LinkView> {
        let stopped = self
            .stopped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name);
        self.links.get(name).map(|l| view(l.status(), stopped))
    }

    async fn control(&self, name: &str, action: LinkAction) -> Option<LinkView> {
        let link = self.links.get(name)?;
        match action {
            LinkAction::Stop => {
                link.stop().await;
                self.stopped
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(name.to_owned());
            }
            LinkAction::Start => {
                self.stopped
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(name);
                link.start();
            }
            LinkAction::Restart => {
                self.stopped
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(name);
                link.restart().await;
            }
        }
        self.link(name)
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
        assert_eq!(c.enquire_link_interval, Duration::from_secs(5));
        assert_eq!(c.reconnect.initial, Duration::from_millis(500));
        assert_eq!(c.message_id_format, smsgw_smpp::IdFormat::Hex);
        assert_eq!((c.destination.ton, c.destination.npi), (1, 1));
        c.validate().unwrap();
    }
}
