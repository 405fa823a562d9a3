//! Bind slots in the cluster (`smsgw serve --bind-leases`): the links of
//! the pod bind only the sessions of the slots whose Lease the pod holds.
//!
//! [`Gates`] is the pod's side of [`SlotGate`]: it remembers which slots of
//! each link are open, applies them to the running link, and keeps a link
//! that replaces another (its spec changed) closed until the old one has
//! unbound, so the pod never holds two binds of one slot. The Leases
//! themselves are held by `smsgw_leases::SlotKeeper`, fed
//! with the slots the operator assigns to this pod.

use smsgw_leases::{LeaseTiming, SlotGate, SlotId, SlotKeeper, SlotLeases};
use smsgw_smpp::Link;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Default)]
struct State {
    /// Slots this pod holds, by link.
    open: BTreeMap<String, BTreeSet<u32>>,
    /// The links in force.
    current: BTreeMap<String, Link>,
    /// Replaced or removed links still draining and unbinding, with an id
    /// each.
    retiring: BTreeMap<String, Vec<(u64, Link)>>,
    next_id: u64,
}

/// Which bind slots of each link may bind, shared by the links and the
/// Lease keeper.
#[derive(Default)]
pub struct Gates {
    state: Mutex<State>,
}

impl Gates {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The slots a link spawned now starts with: none while a predecessor
    /// of the same name is still running (`replacing`) or unbinding, else
    /// those held.
    pub fn initial(&self, link: &str, replacing: bool) -> BTreeSet<u32> {
        let st = self.lock();
        if replacing || st.retiring.contains_key(link) {
            BTreeSet::new()
        } else {
            st.open.get(link).cloned().unwrap_or_default()
        }
    }

    /// Installs the links now in force and the ones retired by the change;
    /// each retired link is forgotten once closed, and then its successor
    /// opens the slots held.
    pub fn install(
        self: &Arc<Self>,
        current: &BTreeMap<String, Link>,
        retired: Vec<(String, Link)>,
        tracker: &TaskTracker,
    ) {
        let mut st = self.lock();
        st.current = current.clone();
        let keep: BTreeSet<String> = retired.iter().map(|(n, _)| n.clone()).collect();
        // Slots opened while the links were being built.
        for (name, link) in &st.current {
            if !keep.contains(name) && !st.retiring.contains_key(name) {
                link.set_open_slots(st.open.get(name).unwrap_or(&BTreeSet::new()));
            }
        }
        for (name, link) in retired {
            let id = st.next_id;
            st.next_id += 1;
            st.retiring
                .entry(name.clone())
                .or_default()
                .push((id, link.clone()));
            let gates = self.clone();
            tracker.spawn(async move {
                link.closed().await;
                gates.retired(&name, id);
            });
        }
    }

    fn retired(&self, name: &str, id: u64) {
        let mut st = self.lock();
        if let Some(v) = st.retiring.get_mut(name) {
            v.retain(|(i, _)| *i != id);
            if v.is_empty() {
                st.retiring.remove(name);
                if let (Some(link), Some(open)) = (st.current.get(name), st.open.get(name)) {
                    link.set_open_slots(open);
                }
            }
        }
    }
}

impl SlotGate for Gates {
    fn set_open_slots(&self, link: &str, slots: &BTreeSet<u32>) {
        let mut st = self.lock();
        st.open.insert(link.to_owned(), slots.clone());
        if !st.retiring.contains_key(link)
            && let Some(l) = st.current.get(link)
        {
            l.set_open_slots(slots);
        }
    }

    fn slot_is_down(&self, link: &str, slot: u32) -> bool {
        let st = self.lock();
        st.current.get(link).is_none_or(|l| l.slot_is_down(slot))
            && st
                .retiring
                .get(link)
                .is_none_or(|v| v.iter().all(|(_, l)| l.slot_is_down(slot)))
    }
}

/// The slots `assigned` by the operator (link → slot indexes) that exist in
/// the configuration in force (`sessions` by link).
pub fn wanted(
    assigned: &BTreeMap<String, Vec<u32>>,
    sessions: &BTreeMap<String, u32>,
) -> BTreeSet<SlotId> {
    assigned
        .iter()
        .filter_map(|(link, slots)| Some((link, slots, *sessions.get(link)?)))
        .flat_map(|(link, slots, n)| {
            slots
                .iter()
                .filter(move |s| **s < n)
                .map(move |s| SlotId::new(link.as_str(), *s))
        })
        .collect()
}

/// Starts the Lease keeper of pod `pod` in `namespace` (in-cluster
/// Kubernetes configuration), gating `gates`, holding what `wanted`
/// names; it releases its Leases when `cancel` fires.
pub async fn start(
    pod: &str,
    namespace: &str,
    duration: Duration,
    gates: Arc<Gates>,
    wanted: watch::Receiver<BTreeSet<SlotId>>,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !namespace.is_empty(),
        "--bind-leases needs the pod's namespace (--pod-namespace / SMSGW_POD_NAMESPACE)"
    );
    let leases = SlotLeases::in_cluster(namespace, pod, LeaseTiming::new(duration))
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "--bind-leases: no Kubernetes client configuration (in-cluster or kubeconfig): {e}"
            )
        })?;
    tracing::info!(%pod, %namespace, ?duration, "bind slots gated by Leases");
    tracker.spawn(SlotKeeper::new(leases, gates, wanted).run(cancel));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wanted_slots_are_those_assigned_within_the_links_sessions() {
        let assigned: BTreeMap<String, Vec<u32>> =
            [("a".into(), vec![0, 3]), ("gone".into(), vec![0])].into();
        let sessions: BTreeMap<String, u32> = [("a".into(), 2), ("b".into(), 2)].into();
        assert_eq!(
            wanted(&assigned, &sessions),
            BTreeSet::from([SlotId::new("a", 0)])
        );
    }

    #[test]
    fn a_link_replacing_another_starts_closed() {
        let g = Gates::default();
        g.set_open_slots("a", &[0, 1].into());
        assert_eq!(g.initial("a", false), BTreeSet::from([0, 1]));
        assert!(g.initial("a", true).is_empty());
        assert!(g.initial("b", false).is_empty());
        assert!(g.slot_is_down("a", 0), "no link runs");
    }
}
