//! `smsgw serve`: the gateway in a cluster. Its configuration comes from the
//! operator's snapshot server (`config.v1.ConfigService/Watch`): the pod
//! says Hello, applies every snapshot pushed (at most once per version) and
//! acknowledges or rejects it. When the operator is away, the gateway keeps
//! serving with the last snapshot it applied and reconnects with backoff.
//!
//! Applying a snapshot syncs the managed users, swaps the configuration the
//! API reads and starts the links the first time; later, links whose spec
//! changed are replaced, removed ones stop, added ones start, and pools are
//! rebuilt ([`Links::update`]). With `--bind-leases` the bind slots the
//! operator assigns to the pod go to the Lease keeper ([`crate::bind_slots`]):
//! a link binds only the sessions of the slots whose Lease the pod holds;
//! without it every pod binds every session of each link.

use crate::cli::ServeArgs;
use crate::links::Links;
use crate::runtime::Gateway;
use smsgw_core::links::{
    LinkAction, LinkControl, LinkView, OutboundMessage, Submission, SubmitError,
};
use smsgw_crds::Snapshot;
use smsgw_leases::SlotId;
use smsgw_proto::config::v1 as pb;
use smsgw_proto::config::v1::config_service_client::ConfigServiceClient;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The links of the gateway, set by the first snapshot applied; until then
/// it behaves as a gateway without links.
#[derive(Default)]
pub struct LinkSet {
    current: RwLock<Option<Arc<Links>>>,
    /// Bind-slot gates (`--bind-leases`), set before the first snapshot.
    gates: std::sync::OnceLock<Arc<crate::bind_slots::Gates>>,
}

impl LinkSet {
    fn get(&self) -> Option<Arc<Links>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set(&self, links: Arc<Links>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(links);
    }

    /// Gates the links started from now on by bind slots.
    pub(crate) fn gate(&self, gates: Arc<crate::bind_slots::Gates>) {
        let _ = self.gates.set(gates);
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

/// Why a snapshot was not applied: what goes into a negative Ack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// Why.
    pub error: String,
    /// The resource concerned, `Kind/namespace/name`, or empty.
    pub resource: String,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.resource.is_empty() {
            write!(f, "cannot apply the configuration: {}", self.error)
        } else {
            write!(
                f,
                "cannot apply the configuration: {}: {}",
                self.resource, self.error
            )
        }
    }
}

impl Rejection {
    fn of(kind: &str, namespace: &str, name: &str, error: String) -> Self {
        Self {
            error,
            resource: format!("{kind}/{namespace}/{name}"),
        }
    }
}

/// Checks what the gateway relies on when it applies a snapshot: every
/// spec's field rules, and pools naming only links of the snapshot.
pub fn validate(snap: &Snapshot, namespace: &str) -> Result<(), Rejection> {
    let first = |kind: &str, name: &str, errs: Vec<smsgw_crds::FieldError>| match errs.first() {
        Some(e) => Err(Rejection::of(
            kind,
            namespace,
            name,
            format!("{}: {}", e.field, e.reason),
        )),
        None => Ok(()),
    };
    for (name, spec) in &snap.links {
        first("SmppLink", name, spec.validate())?;
    }
    for (name, spec) in &snap.pools {
        first("EsmePool", name, spec.validate())?;
        if let Some((i, m)) = spec
            .members
            .iter()
            .enumerate()
            .find(|(_, m)| !snap.links.contains_key(&m.link))
        {
            return Err(Rejection::of(
                "EsmePool",
                namespace,
                name,
                format!("spec.members[{i}].link: no SmppLink {:?}", m.link),
            ));
        }
    }
    for (name, spec) in &snap.users {
        first("User", name, spec.validate())?;
    }
    for (name, spec) in &snap.policies {
        first("ContactPolicy", name, spec.validate())?;
    }
    Ok(())
}

/// Names of the entries that differ between two maps (added, removed or
/// changed), in order.
fn changed<V: PartialEq>(old: &BTreeMap<String, V>, new: &BTreeMap<String, V>) -> Vec<String> {
    let mut out: Vec<String> = old
        .iter()
        .filter(|(k, v)| new.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect();
    out.extend(new.keys().filter(|k| !old.contains_key(*k)).cloned());
    out.sort();
    out
}

impl Gateway {
    /// Applies a snapshot: validates it, syncs the managed users, swaps the
    /// configuration in force and, the first time, starts the links and the
    /// sweeper and becomes ready. `namespace` names rejected resources.
    pub(crate) async fn apply(&self, snap: Snapshot, namespace: &str) -> Result<(), Rejection> {
        validate(&snap, namespace)?;
        self.state
            .auth
            .sync_managed_users(&snap)
            .await
            .map_err(|e| Rejection {
                error: format!("cannot apply User resources: {e}"),
                resource: String::new(),
            })?;
        let old = self.state.config.load_full();
        let version = snap.version.clone();
        let (links, pools) = (snap.links.len(), snap.pools.len());
        if let Some(running) = self.links.get() {
            let replaced = running.update(&snap).map_err(|e| Rejection {
                error: format!("{e:#}"),
                resource: String::new(),
            })?;
            let pools_changed = changed(&old.pools, &snap.pools);
            if !replaced.is_empty() || !pools_changed.is_empty() {
                tracing::info!(links = ?replaced, pools = ?pools_changed, "links started/stopped and pools rebuilt");
            }
            self.state.config.store(Arc::new(snap));
        } else {
            self.state.config.store(Arc::new(snap));
            let started = Links::start(
                &self.state.config.load(),
                &self.cancel,
                &self.tracker,
                &self.state.metrics,
                self.state.clone(),
                self.links.gates.get().cloned(),
            )
            .map_err(|e| {
                // Leave the gateway unconfigured: the next version may do.
                self.state.config.store(old.clone());
                Rejection {
                    error: format!("{e:#}"),
                    resource: String::new(),
                }
            })?;
            self.links.set(started);
            self.tracker.spawn(crate::runtime::sweeper(
                self.state.clone(),
                self.pod.clone(),
                self.sweep_after,
                self.cancel.clone(),
            ));
            // Link health: a link that is down gets rate 0 and each pool
            // the sum of its healthy members, set absolutely every interval.
            self.tracker.spawn(self.rate.clone().run(
                self.state.clone(),
                self.links.clone(),
                self.cancel.clone(),
            ));
            self.state.ready.store(true, Ordering::Release);
        }
        self.apply_limits_and_policies().await;
        self.state.metrics.config_links.set(links as i64);
        tracing::info!(%version, links, pools, "configuration applied");
        Ok(())
    }

    /// Sets the rate limits of links, pools and apps (as link health was
    /// last seen) and swaps in the snapshot's compiled contact policies.
    async fn apply_limits_and_policies(&self) {
        self.rate.apply(&self.state).await;
        let snap = self.state.config.load_full();
        let (compiled, errors) = smsgw_contact::Policies::compile(&snap.policies);
        for e in errors {
            tracing::warn!(error = %e, "contact policy left out");
        }
        self.policies.store(Arc::new(compiled));
    }

    /// The version in force, if any.
    fn held_version(&self) -> String {
        if self.state.ready.load(Ordering::Acquire) {
            self.state.config.load().version.clone()
        } else {
            String::new()
        }
    }
}

/// `smsgw serve`: starts the servers at once (not ready), follows the
/// operator's snapshots until SIGINT/SIGTERM.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let gateway = Arc::new(Gateway::build(&args.gateway).await?);
    let endpoint = tonic::transport::Endpoint::from_shared(args.config_server.clone())
        .map_err(|e| anyhow::anyhow!("--config-server {:?}: {e}", args.config_server))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10));
    tracing::info!(server = %args.config_server, pod = %gateway.pod, "waiting for a configuration snapshot");
    let wanted = if args.bind_leases {
        let gates = Arc::new(crate::bind_slots::Gates::default());
        gateway.links.gate(gates.clone());
        let (tx, rx) = tokio::sync::watch::channel(Default::default());
        crate::bind_slots::start(
            &gateway.pod,
            &args.pod_namespace,
            args.bind_lease_duration,
            gates,
            rx,
            gateway.cancel.clone(),
            &gateway.tracker,
        )
        .await?;
        Some(tx)
    } else {
        None
    };
    let watch = Watch {
        gateway: gateway.clone(),
        endpoint,
        namespace: args.pod_namespace.clone(),
        retry_max: args.config_retry_max,
        wanted,
    };
    gateway.tracker.spawn(watch.run(gateway.cancel.clone()));
    gateway.run().await
}

struct Watch {
    gateway: Arc<Gateway>,
    endpoint: tonic::transport::Endpoint,
    namespace: String,
    retry_max: Duration,
    /// The bind slots assigned to the pod, for the Lease keeper
    /// (`--bind-leases`).
    wanted: Option<tokio::sync::watch::Sender<BTreeSet<SlotId>>>,
}

impl Watch {
    /// Keeps a Watch stream open until `cancel`, reconnecting with
    /// exponential backoff (reset once a stream delivered a snapshot).
    async fn run(self, cancel: CancellationToken) {
        let initial = Duration::from_millis(200).min(self.retry_max);
        let mut backoff = initial;
        loop {
            let mut received = false;
            let outcome = tokio::select! {
                r = self.session(&mut received) => r,
                () = cancel.cancelled() => return,
            };
            if received {
                backoff = initial;
            }
            let held = self.gateway.held_version();
            match outcome {
                Ok(()) => {
                    tracing::warn!(retry_in = ?backoff, held = %held, "the snapshot server closed the stream; serving with the last snapshot")
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, held = %held, "snapshot server unreachable; serving with the last snapshot")
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = cancel.cancelled() => return,
            }
            backoff = (backoff * 2).min(self.retry_max);
        }
    }

    /// One stream: Hello, then apply and ack each snapshot until it ends.
    async fn session(&self, received: &mut bool) -> Result<(), tonic::Status> {
        let channel = self
            .endpoint
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("cannot connect: {e}")))?;
        let mut client = ConfigServiceClient::new(channel);
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let hello = pb::Hello {
            pod: self.gateway.pod.clone(),
            version: self.gateway.held_version(),
        };
        let _ = tx
            .send(pb::PodMessage {
                msg: Some(pb::pod_message::Msg::Hello(hello)),
            })
            .await;
        let mut stream = client
            .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        tracing::info!("connected to the snapshot server");
        while let Some(msg) = stream.message().await? {
            *received = true;
            let ack = self.handle(msg).await;
            if tx
                .send(pb::PodMessage {
                    msg: Some(pb::pod_message::Msg::Ack(ack)),
                })
                .await
                .is_err()
            {
                break;
            }
        }
        Ok(())
    }

    /// Applies one pushed snapshot (unless its version is in force already)
    /// and says how it went.
    async fn handle(&self, msg: pb::Snapshot) -> pb::Ack {
        let assigned: BTreeMap<String, Vec<u32>> = msg
            .bind_slots
            .iter()
            .map(|(l, s)| (l.clone(), s.slots.clone()))
            .collect();
        let outcome = if msg.version == self.gateway.held_version() {
            Ok(())
        } else {
            match decode(&msg.snapshot_json) {
                Ok(snap) => self.gateway.apply(snap, &self.namespace).await,
                Err(e) => Err(e),
            }
        };
        self.assign(&msg.version, &assigned);
        match outcome {
            Ok(()) => pb::Ack {
                version: msg.version,
                applied: true,
                ..Default::default()
            },
            Err(r) => {
                tracing::warn!(version = %msg.version, resource = %r.resource, error = %r.error, "snapshot rejected; keeping the configuration in force");
                pb::Ack {
                    version: msg.version,
                    applied: false,
                    error: r.error,
                    resource: r.resource,
                }
            }
        }
    }
}

impl Watch {
    /// Hands the slots assigned to the pod (those of links in force) to the
    /// Lease keeper; without `--bind-leases` they are only logged.
    fn assign(&self, version: &str, assigned: &BTreeMap<String, Vec<u32>>) {
        let Some(tx) = &self.wanted else {
            if !assigned.is_empty() {
                tracing::debug!(%version, bind_slots = ?assigned, "bind slots assigned (not gated: every link runs all its sessions)");
            }
            return;
        };
        let sessions: BTreeMap<String, u32> = if self.gateway.held_version().is_empty() {
            BTreeMap::new()
        } else {
            let snap = self.gateway.state.config.load();
            snap.links
                .iter()
                .map(|(n, s)| (n.clone(), s.sessions))
                .collect()
        };
        let wanted = crate::bind_slots::wanted(assigned, &sessions);
        tx.send_if_modified(|w| {
            let changed = *w != wanted;
            if changed {
                tracing::info!(%version, bind_slots = ?assigned, "bind slots assigned");
                *w = wanted;
            }
            changed
        });
    }
}

/// Parses a snapshot's JSON. The error names only the position and class,
/// never the content (the snapshot holds SMSC passwords).
fn decode(json: &[u8]) -> Result<Snapshot, Rejection> {
    serde_json::from_slice(json).map_err(|e| Rejection {
        error: format!(
            "snapshot JSON does not parse ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        ),
        resource: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Snapshot {
        smsgw_crds::compile_manifests(include_str!("../../../examples/standalone.yaml"))
            .expect("the example compiles")
    }

    #[test]
    fn the_example_snapshot_is_valid_and_a_pool_of_an_unknown_link_is_not() {
        let mut snap = example();
        assert_eq!(validate(&snap, "ns"), Ok(()));
        snap.links.remove("local-sim");
        let r = validate(&snap, "ns").unwrap_err();
        assert_eq!(r.resource, "EsmePool/ns/default");
        assert!(r.error.contains("local-sim"), "{r:?}");
    }

    #[test]
    fn a_link_that_breaks_a_field_rule_is_named() {
        let mut snap = example();
        snap.links.get_mut("local-sim").unwrap().sessions = 0;
        let r = validate(&snap, "").unwrap_err();
        assert_eq!(r.resource, "SmppLink//local-sim");
    }

    #[test]
    fn decode_errors_do_not_echo_the_content() {
        let mut v = serde_json::to_value(example()).unwrap();
        v["links"]["local-sim"]["port"] = serde_json::json!("hunter2-secret");
        let r = decode(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(!r.error.contains("hunter2"), "{}", r.error);
        assert!(decode(&serde_json::to_vec(&example()).unwrap()).is_ok());
    }

    #[test]
    fn changes_list_added_removed_and_changed_entries() {
        let old: BTreeMap<String, u32> = [("a".into(), 1), ("b".into(), 2), ("c".into(), 3)].into();
        let new: BTreeMap<String, u32> = [("a".into(), 1), ("b".into(), 5), ("d".into(), 4)].into();
        assert_eq!(changed(&old, &new), ["b", "c", "d"]);
        assert!(changed(&old, &old).is_empty());
    }

    #[tokio::test]
    async fn a_link_set_without_links_knows_no_target() {
        let set = LinkSet::default();
        assert!(set.links().is_empty());
        assert!(set.link("x").is_none());
        assert!(set.get().is_none());
    }
}
