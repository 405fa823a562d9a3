//! The operator's core, free of Kubernetes: the index of resources, its
//! compilation into the current snapshot (the same `smsgw_crds::compile`
//! standalone mode uses), the bind-slot assignment, and the pods' acks.
//!
//! Watchers feed the index ([`Hub::upsert`], [`Hub::remove`]); the snapshot
//! server reads [`Hub::subscribe`] and reports acks ([`Hub::record_ack`]);
//! the status writer reads [`Hub::compile_errors`] and the rejections.

use crate::hashes::SecretHashes;
use crate::slots::{Assignment, SlotId, assign_slots};
use smsgw_crds::{ConfigError, Resource, Snapshot};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};

/// Identifies one resource of the index: kind and name (the operator
/// watches one namespace).
pub type ResourceKey = (String, String);

/// What the pods are told: the snapshot (if any compiled yet) and who holds
/// which bind slot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Published {
    /// The compiled configuration in the form proxies get (users'
    /// secrets hashed: [`Snapshot::for_proxies`]); `None` until the first
    /// compile.
    pub snapshot: Option<Arc<Snapshot>>,
    /// `snapshot` as JSON, as sent on the wire.
    pub snapshot_json: Arc<Vec<u8>>,
    /// Bind slot → pod.
    pub slots: Assignment,
}

/// A pod's verdict on a version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodAck {
    /// Version acknowledged.
    pub version: String,
    /// Whether the pod applied it.
    pub applied: bool,
    /// Why it was rejected (empty when applied).
    pub error: String,
    /// Resource the rejection concerns, `Kind/namespace/name`, or empty.
    pub resource: String,
}

/// A rejection, for the status writer: which pod refused which version,
/// and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// Pod name.
    pub pod: String,
    /// The pod's ack.
    pub ack: PodAck,
}

#[derive(Default)]
struct State {
    resources: BTreeMap<ResourceKey, Resource>,
    errors: Vec<ConfigError>,
    ready_pods: BTreeSet<String>,
    acks: BTreeMap<String, PodAck>,
    /// Who holds each slot's Lease now: where a slot the published
    /// assignment does not place yet (an operator that just started)
    /// stays, so a restart does not move bound sessions.
    holders: Assignment,
    /// The hashes users' secrets are published as.
    hashes: SecretHashes,
}

/// Shared state of the operator. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    state: Arc<Mutex<State>>,
    published: watch::Sender<Arc<Published>>,
    rejections: mpsc::UnboundedSender<Rejection>,
    /// Woken when a pod acks a version it had not acked before: the status
    /// writer re-checks which resources are in force on every proxy.
    acked: Arc<tokio::sync::Notify>,
}

impl Hub {
    /// An empty hub, and the receiving end of pod rejections.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Rejection>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (published, _) = watch::channel(Arc::new(Published::default()));
        (
            Self {
                state: Arc::default(),
                published,
                rejections: tx,
                acked: Arc::default(),
            },
            rx,
        )
    }

    /// Adds or replaces a resource and republishes.
    pub fn upsert(&self, resource: Resource) {
        let key = (resource.kind().to_owned(), resource.name().to_owned());
        let mut st = self.state.lock().expect("hub lock");
        if st.resources.get(&key) == Some(&resource) {
            return;
        }
        st.resources.insert(key, resource);
        self.republish(&mut st);
    }

    /// Replaces every resource of `kind` at once (a watcher's initial list
    /// or re-list) and republishes.
    pub fn replace_kind(&self, kind: &str, resources: Vec<Resource>) {
        let mut st = self.state.lock().expect("hub lock");
        st.resources.retain(|(k, _), _| k != kind);
        for r in resources {
            st.resources
                .insert((r.kind().to_owned(), r.name().to_owned()), r);
        }
        self.republish(&mut st);
    }

    /// Removes a resource and republishes.
    pub fn remove(&self, kind: &str, name: &str) {
        let mut st = self.state.lock().expect("hub lock");
        if st
            .resources
            .remove(&(kind.to_owned(), name.to_owned()))
            .is_some()
        {
            self.republish(&mut st);
        }
    }

    /// Sets the pods bind slots may go to and reassigns them.
    pub fn set_ready_pods(&self, pods: BTreeSet<String>) {
        let mut st = self.state.lock().expect("hub lock");
        if st.ready_pods == pods {
            return;
        }
        st.ready_pods = pods;
        self.republish(&mut st);
    }

    /// Records the live holders of the bind-slot Leases (see
    /// [`slots_from_lease_holders`]); used at the next assignment, no
    /// republish of its own.
    pub fn set_lease_holders(&self, holders: Assignment) {
        self.state.lock().expect("hub lock").holders = holders;
    }

    /// The current publication.
    pub fn current(&self) -> Arc<Published> {
        self.published.borrow().clone()
    }

    /// Follows the publications (the current one first).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Published>> {
        self.published.subscribe()
    }

    /// Errors of the last compile: resources left out of the snapshot.
    pub fn compile_errors(&self) -> Vec<ConfigError> {
        self.state.lock().expect("hub lock").errors.clone()
    }

    /// A copy of every resource in the index.
    pub fn resources(&self) -> Vec<Resource> {
        let st = self.state.lock().expect("hub lock");
        st.resources.values().cloned().collect()
    }

    /// Records a pod's ack; a rejection is also sent to the status writer.
    pub fn record_ack(&self, pod: &str, ack: PodAck) {
        let mut st = self.state.lock().expect("hub lock");
        if !ack.applied {
            let _ = self.rejections.send(Rejection {
                pod: pod.to_owned(),
                ack: ack.clone(),
            });
        }
        if st.acks.get(pod) != Some(&ack) {
            st.acks.insert(pod.to_owned(), ack);
            self.acked.notify_one();
        }
    }

    /// Resolves once a pod acked something new since the last call
    /// (a permit is kept when nobody waits).
    pub async fn acks_changed(&self) {
        self.acked.notified().await
    }

    /// Forgets a pod's ack (its stream closed).
    pub fn forget_pod(&self, pod: &str) {
        self.state.lock().expect("hub lock").acks.remove(pod);
    }

    /// Every pod's last ack.
    pub fn acks(&self) -> BTreeMap<String, PodAck> {
        self.state.lock().expect("hub lock").acks.clone()
    }

    fn republish(&self, st: &mut State) {
        let resources: Vec<Resource> = st.resources.values().cloned().collect();
        let (compiled, errors) = compile_best_effort(resources);
        st.errors = errors;
        let State {
            resources, hashes, ..
        } = &mut *st;
        let snapshot = hashes.proxies_form(&compiled, |name| {
            resources
                .get(&("User".to_owned(), name.to_owned()))
                .map(Resource::metadata)
        });
        drop(compiled);
        let links: BTreeMap<String, u32> = snapshot
            .links
            .iter()
            .map(|(n, l)| (n.clone(), l.sessions))
            .collect();
        let prev = self.published.borrow().clone();
        // The published assignment wins; Lease holders fill the rest.
        let mut current = st.holders.clone();
        current.extend(prev.slots.iter().map(|(k, v)| (k.clone(), v.clone())));
        let slots = assign_slots(&links, &st.ready_pods, &current);
        let unchanged_snapshot = prev
            .snapshot
            .as_ref()
            .is_some_and(|s| s.version == snapshot.version);
        if unchanged_snapshot && prev.slots == slots {
            return;
        }
        let (snapshot, snapshot_json) = if unchanged_snapshot {
            (prev.snapshot.clone(), prev.snapshot_json.clone())
        } else {
            let json = serde_json::to_vec(&snapshot).expect("snapshot serialises");
            tracing::info!(version = %snapshot.version, links = snapshot.links.len(), pools = snapshot.pools.len(), users = snapshot.users.len(), policies = snapshot.policies.len(), "snapshot compiled");
            (Some(Arc::new(snapshot)), Arc::new(json))
        };
        self.published.send_replace(Arc::new(Published {
            snapshot,
            snapshot_json,
            slots,
        }));
    }
}

/// Compiles what can be compiled: resources that `compile` refuses are
/// left out (and so are, in turn, those that referred to them) until the
/// rest compiles, so one bad resource does not hold back every other
/// change. Returns the snapshot and every error met on the way.
pub fn compile_best_effort(mut resources: Vec<Resource>) -> (Snapshot, Vec<ConfigError>) {
    let mut all_errors = Vec::new();
    // Field-level rules first (the API server's CEL rules check the same,
    // but a resource may predate a rule or come from elsewhere).
    resources.retain(|r| {
        let errors = validate_resource(r);
        let ok = errors.is_empty();
        all_errors.extend(errors);
        ok
    });
    loop {
        let numbered: Vec<(usize, Resource)> = resources
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, r)| (i + 1, r))
            .collect();
        match smsgw_crds::compile(&numbered) {
            Ok(snap) => return (snap, all_errors),
            Err(errors) => {
                let bad: BTreeSet<(String, String)> = errors
                    .iter()
                    .filter_map(|e| Some((e.kind.clone()?, e.name.clone()?)))
                    .collect();
                let before = resources.len();
                resources.retain(|r| !bad.contains(&(r.kind().to_owned(), r.name().to_owned())));
                all_errors.extend(errors);
                if resources.len() == before {
                    // Nothing attributable left out: give up on an empty one.
                    return (
                        smsgw_crds::compile(&[]).expect("nothing compiles"),
                        all_errors,
                    );
                }
            }
        }
    }
}

/// Field-level validation of one resource (what `parse_manifests` checks
/// per document), as errors naming it.
pub fn validate_resource(r: &Resource) -> Vec<ConfigError> {
    r.validate()
        .into_iter()
        .map(|e| ConfigError {
            document: 0,
            kind: Some(r.kind().to_owned()),
            name: Some(r.name().to_owned()),
            field: e.field,
            reason: e.reason,
        })
        .collect()
}

/// The assignment the live bind-slot Leases describe: Lease name
/// (`smsgw-<link>-slot-<i>`) → holder, as `controller::slot_lease_holders`
/// reads them, turned into slot → pod. Names that do not parse are skipped.
pub fn slots_from_lease_holders(holders: &BTreeMap<String, String>) -> Assignment {
    holders
        .iter()
        .filter_map(|(name, pod)| {
            let (link, slot) = name.strip_prefix("smsgw-")?.rsplit_once("-slot-")?;
            Some((SlotId::new(link, slot.parse().ok()?), pod.clone()))
        })
        .collect()
}

#[cfg(test)]
mod seed_tests {
    use super::*;

    fn link(name: &str, sessions: u32) -> Resource {
        let spec: smsgw_crds::SmppLinkSpec = serde_json::from_value(serde_json::json!({
            "host": "smsc", "port": 2775, "systemId": "s", "password": "p", "sessions": sessions
        }))
        .unwrap();
        Resource::from(&smsgw_crds::SmppLink::new(name, spec))
    }

    #[test]
    fn a_fresh_operator_should_leave_slots_with_their_lease_holders() {
        let holders: BTreeMap<String, String> = [
            ("smsgw-my-slot-link-slot-0", "p2"),
            ("smsgw-my-slot-link-slot-1", "p1"),
            ("smsgw-my-slot-link-slot-2", "p2"),
            ("smsgw-my-slot-link-slot-3", "p1"),
            ("not-a-slot", "p3"),
            ("smsgw-x-slot-nan", "p3"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
        let seed = slots_from_lease_holders(&holders);
        assert_eq!(seed.len(), 4);
        assert_eq!(seed[&SlotId::new("my-slot-link", 0)], "p2");
        let (hub, _rx) = Hub::new();
        hub.set_lease_holders(seed.clone());
        hub.replace_kind("SmppLink", vec![link("my-slot-link", 4)]);
        hub.set_ready_pods(["p1".to_owned(), "p2".to_owned()].into());
        // Without the holders, p1 would get slots 0 and 2 (least loaded,
        // then name order); with them, nothing moves.
        assert_eq!(hub.current().slots, seed);
        // A pod that went away still loses its slots.
        hub.set_ready_pods(["p1".to_owned()].into());
        assert!(hub.current().slots.values().all(|p| p == "p1"));
    }
}
