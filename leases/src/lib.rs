//! Bind-slot Leases: the cap on a link's binds across all pods. Shared by
//! the operator (which reads the holders for status and its assignment)
//! and the proxy pods (which hold the Leases), so the proxy binary does
//! not link the operator's controllers.
//!
//! Slot `i` of link `L` is guarded by the `coordination.k8s.io/v1` Lease
//! `smsgw-L-slot-i` ([`lease_name`]). A proxy pod binds the sessions of a
//! slot only while it holds that Lease (`holderIdentity` =
//! pod name): it renews it every third of the lease duration and closes the
//! slot (its sessions drain and unbind) once a third of the duration is
//! left without a successful renewal, so the sessions are gone before
//! anyone else may take the Lease. A pod takes a Lease only when it is
//! free (no holder) or expired (`renewTime + leaseDurationSeconds` passed),
//! and every write carries the `resourceVersion` it read, so of two pods
//! racing for a slot one gets 409 Conflict and stays away.
//!
//! Which pod *should* hold a slot is the operator's assignment
//! (`smsgw_operator::slots::assign_slots`, pushed to each pod in its
//! snapshot). A pod gives up a slot that is no longer assigned to it only after its
//! sessions of that slot are down, so a slot that moves is bound by at
//! most one pod at any time.
//!
//! Layout: [`SlotId`] (a slot and its Lease name), [`decide`] (pure: what
//! to do given a Lease and the clock), [`SlotLeases`] (one get + one write
//! per slot), [`SlotKeeper`] (the loop a pod runs, gating its links
//! through [`SlotGate`]).
//!
//! Clocks: expiry is judged on `renewTime` against the wall clock of the
//! pod looking (as `kubectl` and the operator's status do); the holder
//! judges its own deadline on its monotonic clock from the moment it *sent*
//! the renewal, so the holder stops first as long as clock skew between
//! nodes stays below a third of the lease duration.
#![warn(missing_docs)]

#[cfg(feature = "testing")]
pub mod testing;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, PostParams};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Label on every bind-slot Lease: the SmppLink it belongs to.
pub const LINK_LABEL: &str = "smsgw.io/link";

/// One bind slot of one link.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlotId {
    /// SmppLink name.
    pub link: String,
    /// Slot index, below the link's `sessions`.
    pub slot: u32,
}

impl SlotId {
    /// A slot of `link`.
    pub fn new(link: impl Into<String>, slot: u32) -> Self {
        Self {
            link: link.into(),
            slot,
        }
    }

    /// Name of the Lease guarding the slot: `smsgw-<link>-slot-<slot>`.
    pub fn lease_name(&self) -> String {
        lease_name(&self.link, self.slot)
    }
}

/// Name of the Lease guarding slot `slot` of `link`.
pub fn lease_name(link: &str, slot: u32) -> String {
    format!("smsgw-{link}-slot-{slot}")
}

/// The holder of `lease` if it has one and the Lease has not expired at
/// `now` (`renewTime`, else `acquireTime`, plus `leaseDurationSeconds`,
/// 15 s when unset).
pub fn live_holder(lease: &Lease, now: Timestamp) -> Option<&str> {
    let spec = lease.spec.as_ref()?;
    let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty())?;
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?.0;
    let secs = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    (renewed + SignedDuration::from_secs(secs) > now).then_some(holder)
}

/// How long until `lease` expires at `now` (zero when it has).
pub fn expires_in(lease: &Lease, now: Timestamp) -> Duration {
    let Some(spec) = lease.spec.as_ref() else {
        return Duration::ZERO;
    };
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return Duration::ZERO;
    };
    let secs = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    let left = renewed.0 + SignedDuration::from_secs(secs) - now;
    Duration::try_from(left).unwrap_or(Duration::ZERO)
}

/// What a pod does about one slot's Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// There is no Lease yet: create it, held by this pod.
    Create,
    /// The Lease is free or expired: take it over.
    TakeOver,
    /// This pod holds the Lease: renew it.
    Renew,
    /// This pod holds the Lease and no longer wants it: clear the holder.
    Release,
    /// Another pod holds the Lease and it has not expired: stay away.
    Wait {
        /// The other pod.
        holder: String,
    },
    /// Nothing to do (not wanted, not held).
    Nothing,
}

/// Decides what pod `me` does with the Lease of a slot (`None`: no Lease
/// object) at `now`. `want`: the slot is assigned to `me` and should be
/// held; when false, a Lease `me` holds is released (the caller makes sure
/// its sessions are down first).
pub fn decide(lease: Option<&Lease>, me: &str, want: bool, now: Timestamp) -> Action {
    let Some(lease) = lease else {
        return if want {
            Action::Create
        } else {
            Action::Nothing
        };
    };
    let holder = lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty());
    match (holder == Some(me), want) {
        (true, true) => Action::Renew,
        (true, false) => Action::Release,
        (false, false) => Action::Nothing,
        (false, true) => match live_holder(lease, now) {
            Some(other) => Action::Wait {
                holder: other.to_owned(),
            },
            None => Action::TakeOver,
        },
    }
}

/// Timing of the bind-slot Leases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTiming {
    /// `leaseDurationSeconds`: how long a Lease stays valid unrenewed.
    pub duration: Duration,
}

impl LeaseTiming {
    /// Timing for a lease duration (at least one second).
    pub fn new(duration: Duration) -> Self {
        Self {
            duration: duration.max(Duration::from_secs(1)),
        }
    }

    /// How often a holder renews: a third of the duration.
    pub fn renew_every(&self) -> Duration {
        self.duration / 3
    }

    /// How long after sending a successful renewal the holder may keep
    /// binding: two thirds of the duration, leaving the last third for its
    /// sessions to drain and unbind before the Lease can expire.
    pub fn hold_for(&self) -> Duration {
        self.duration * 2 / 3
    }

    fn seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }
}

/// A pod's claim on one slot, as its Lease answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// This pod holds the Lease (created, taken over or renewed).
    Held,
    /// Another pod holds it, or won a race for it (409 Conflict).
    Lost {
        /// The other pod, when known.
        holder: Option<String>,
        /// When its Lease expires unless renewed, when known.
        expires_in: Option<Duration>,
    },
    /// The Lease is not (or no longer) held by this pod.
    Free,
}

/// One pod's access to the bind-slot Leases of its namespace.
#[derive(Clone)]
pub struct SlotLeases {
    api: Api<Lease>,
    identity: String,
    timing: LeaseTiming,
}

impl SlotLeases {
    /// Leases in `api`'s namespace, held as `identity` (the pod name).
    pub fn new(api: Api<Lease>, identity: &str, timing: LeaseTiming) -> Self {
        Self {
            api,
            identity: identity.to_owned(),
            timing,
        }
    }

    /// Leases in `namespace` through the Kubernetes client configuration
    /// of the environment (in-cluster service account, else kubeconfig).
    pub async fn in_cluster(
        namespace: &str,
        identity: &str,
        timing: LeaseTiming,
    ) -> Result<Self, kube::Error> {
        let client = kube::Client::try_default().await?;
        Ok(Self::new(
            Api::namespaced(client, namespace),
            identity,
            timing,
        ))
    }

    /// The pod name the Leases are held as.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The timing in use.
    pub fn timing(&self) -> LeaseTiming {
        self.timing
    }

    /// Reads the slot's Lease and acts on it ([`decide`]): with `want`,
    /// creates, takes over or renews it; without, releases it if held.
    /// A 409 Conflict (another pod wrote first) is [`Claim::Lost`].
    pub async fn sync(&self, slot: &SlotId, want: bool) -> Result<Claim, kube::Error> {
        let name = slot.lease_name();
        let now = Timestamp::now();
        let current = self.api.get_opt(&name).await?;
        let action = decide(current.as_ref(), &self.identity, want, now);
        let conflict = |r: Result<Lease, kube::Error>, ok: Claim| match r {
            Ok(_) => Ok(ok),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Claim::Lost {
                holder: None,
                expires_in: None,
            }),
            Err(e) => Err(e),
        };
        let pp = PostParams::default();
        match action {
            Action::Nothing => Ok(Claim::Free),
            Action::Wait { holder } => Ok(Claim::Lost {
                holder: Some(holder),
                expires_in: current.as_ref().map(|l| expires_in(l, now)),
            }),
            Action::Create => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name),
                        labels: Some(
                            [
                                (LINK_LABEL.to_owned(), slot.link.clone()),
                                ("app.kubernetes.io/managed-by".into(), "smsgw".into()),
                            ]
                            .into(),
                        ),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(self.timing.seconds()),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                conflict(self.api.create(&pp, &lease).await, Claim::Held)
            }
            Action::TakeOver | Action::Renew | Action::Release => {
                let mut lease = current.expect("decide saw a Lease");
                let spec = lease.spec.get_or_insert_with(Default::default);
                let (result, ok) = match action {
                    Action::Release => {
                        spec.holder_identity = None;
                        spec.acquire_time = None;
                        spec.renew_time = None;
                        (Claim::Free, Claim::Free)
                    }
                    Action::TakeOver => {
                        spec.holder_identity = Some(self.identity.clone());
                        spec.acquire_time = Some(MicroTime(now));
                        spec.renew_time = Some(MicroTime(now));
                        spec.lease_duration_seconds = Some(self.timing.seconds());
                        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                        (Claim::Held, Claim::Held)
                    }
                    _ => {
                        spec.renew_time = Some(MicroTime(now));
                        spec.lease_duration_seconds = Some(self.timing.seconds());
                        (Claim::Held, Claim::Held)
                    }
                };
                // replace sends the resourceVersion read above: a write in
                // between makes the API server answer 409.
                let r = self.api.replace(&slot.lease_name(), &pp, &lease).await;
                match conflict(r, ok) {
                    // A release that lost a race is still "not ours".
                    Ok(Claim::Lost { .. }) if result == Claim::Free => Ok(Claim::Free),
                    other => other,
                }
            }
        }
    }
}

/// What [`SlotKeeper`] opens and closes: the links of the pod.
pub trait SlotGate: Send + Sync {
    /// The slots of `link` whose sessions may bind now; the others drain
    /// and unbind (or stay down).
    fn set_open_slots(&self, link: &str, slots: &BTreeSet<u32>);
    /// Whether every session of `slot` of `link` is down (true for a link
    /// the pod does not run).
    fn slot_is_down(&self, link: &str, slot: u32) -> bool;
}

/// The loop a proxy pod runs: holds the Leases of the slots assigned to
/// it, opens exactly the slots it holds, gives back the slots no longer
/// assigned once their sessions are down, and closes a slot whose Lease it
/// could not renew in time.
pub struct SlotKeeper {
    leases: SlotLeases,
    gate: Arc<dyn SlotGate>,
    wanted: watch::Receiver<BTreeSet<SlotId>>,
    /// Held slots → until when they may stay open.
    held: BTreeMap<SlotId, Instant>,
    /// Slots opened on the gate, by link (to send only changes).
    opened: BTreeMap<String, BTreeSet<u32>>,
    /// Per-request bound, so a hanging API call cannot outlast a hold.
    request_timeout: Duration,
    /// Earliest expiry of a wanted Lease another pod holds: the next round
    /// runs then, so a dead pod's slot moves without waiting a full period.
    retry_at: Option<Instant>,
}

impl SlotKeeper {
    /// A keeper holding the slots `wanted` names (the operator's
    /// assignment for this pod), gating `gate`.
    pub fn new(
        leases: SlotLeases,
        gate: Arc<dyn SlotGate>,
        wanted: watch::Receiver<BTreeSet<SlotId>>,
    ) -> Self {
        let request_timeout = leases.timing.renew_every() / 2;
        Self {
            leases,
            gate,
            wanted,
            held: BTreeMap::new(),
            opened: BTreeMap::new(),
            request_timeout,
            retry_at: None,
        }
    }

    /// The slots held now, with the instant each must be closed by.
    pub fn held(&self) -> &BTreeMap<SlotId, Instant> {
        &self.held
    }

    /// Closes the slots whose hold ran out (renewals failed for two thirds
    /// of the lease duration) and sets the gate to exactly the held and
    /// wanted slots.
    pub fn enforce(&mut self) {
        let now = Instant::now();
        self.held.retain(|id, until| {
            let keep = *until > now;
            if !keep {
                tracing::warn!(link = %id.link, slot = id.slot, "bind-slot Lease not renewed in time; unbinding the slot");
            }
            keep
        });
        let wanted = self.wanted.borrow().clone();
        let mut open: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
        for id in self.held.keys().filter(|id| wanted.contains(*id)) {
            open.entry(id.link.clone()).or_default().insert(id.slot);
        }
        let links: BTreeSet<String> = open.keys().chain(self.opened.keys()).cloned().collect();
        for link in links {
            let slots = open.get(&link).cloned().unwrap_or_default();
            if self.opened.get(&link) != Some(&slots) {
                self.gate.set_open_slots(&link, &slots);
            }
        }
        open.retain(|_, s| !s.is_empty());
        self.opened = open;
    }

    async fn sync(&self, id: &SlotId, want: bool) -> Result<Claim, String> {
        match tokio::time::timeout(self.request_timeout, self.leases.sync(id, want)).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.request_timeout)),
        }
    }

    /// One round: renews or takes the wanted slots, releases the unwanted
    /// held ones whose sessions are down, then [`SlotKeeper::enforce`]s.
    pub async fn round(&mut self) {
        self.enforce();
        let wanted = self.wanted.borrow().clone();
        let ids: BTreeSet<SlotId> = wanted.iter().chain(self.held.keys()).cloned().collect();
        self.retry_at = None;
        for id in ids {
            let want = wanted.contains(&id);
            // An unwanted slot is renewed until its sessions are down, then
            // released.
            let release = !want && self.gate.slot_is_down(&id.link, id.slot);
            let sent = Instant::now();
            match self.sync(&id, !release).await {
                Ok(Claim::Held) => {
                    if !self.held.contains_key(&id) {
                        tracing::info!(link = %id.link, slot = id.slot, "bind-slot Lease acquired");
                    }
                    self.held.insert(id, sent + self.leases.timing.hold_for());
                }
                Ok(Claim::Free) => {
                    if self.held.remove(&id).is_some() {
                        tracing::info!(link = %id.link, slot = id.slot, "bind-slot Lease released");
                    }
                }
                Ok(Claim::Lost { holder, expires_in }) => {
                    if let Some(left) = expires_in {
                        // A little after the expiry, so the other pod's
                        // clock has passed it too.
                        let at = Instant::now() + left + Duration::from_millis(200);
                        self.retry_at = Some(self.retry_at.map_or(at, |r| r.min(at)));
                    }
                    if self.held.remove(&id).is_some() {
                        tracing::warn!(link = %id.link, slot = id.slot, holder = ?holder, "bind-slot Lease lost; unbinding the slot");
                    } else {
                        tracing::debug!(link = %id.link, slot = id.slot, holder = ?holder, "bind slot held by another pod; waiting");
                    }
                }
                Err(e) => {
                    tracing::warn!(link = %id.link, slot = id.slot, error = %e, "bind-slot Lease request failed; retrying")
                }
            }
            self.enforce();
        }
    }

    /// Runs rounds every [`LeaseTiming::renew_every`] and whenever the
    /// assignment changes, closing slots on time between rounds. On
    /// `cancel` (shutdown) it closes every slot and releases each Lease
    /// once the slot's sessions are down (waiting at most one lease
    /// duration), so a replacement pod can take them at once.
    pub async fn run(mut self, cancel: CancellationToken) {
        let every = self.leases.timing.renew_every();
        let mut next = Instant::now();
        loop {
            let deadline = self.held.values().min().copied();
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep_until(self.retry_at.map_or(next, |r| r.min(next))) => {
                    self.round().await;
                    next = Instant::now() + every;
                }
                r = self.wanted.changed() => {
                    if r.is_err() { break }
                    self.round().await;
                }
                () = tokio::time::sleep_until(deadline.unwrap_or(next)), if deadline.is_some() => self.enforce(),
            }
        }
        self.shutdown().await;
    }

    /// Closes every slot and releases each held Lease once its sessions
    /// are down (at most one lease duration).
    pub async fn shutdown(&mut self) {
        for (link, _) in std::mem::take(&mut self.opened) {
            self.gate.set_open_slots(&link, &BTreeSet::new());
        }
        let give_up = Instant::now() + self.leases.timing.duration;
        while !self.held.is_empty() && Instant::now() < give_up {
            let ids: Vec<SlotId> = self.held.keys().cloned().collect();
            for id in ids {
                if self.gate.slot_is_down(&id.link, id.slot) {
                    match self.sync(&id, false).await {
                        Ok(_) => {
                            self.held.remove(&id);
                        }
                        Err(e) => {
                            tracing::warn!(link = %id.link, slot = id.slot, error = %e, "cannot release the bind-slot Lease; it expires on its own");
                            self.held.remove(&id);
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed_ago: i64) -> Lease {
        let now = Timestamp::now();
        Lease {
            metadata: ObjectMeta {
                name: Some("smsgw-sim-slot-0".into()),
                resource_version: Some("5".into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(now - SignedDuration::from_secs(renewed_ago))),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_missing_lease_is_created_only_when_wanted() {
        let now = Timestamp::now();
        assert_eq!(decide(None, "p1", true, now), Action::Create);
        assert_eq!(decide(None, "p1", false, now), Action::Nothing);
    }

    #[test]
    fn a_fresh_lease_of_another_pod_is_left_alone() {
        let l = lease(Some("p2"), 3);
        assert_eq!(
            decide(Some(&l), "p1", true, Timestamp::now()),
            Action::Wait {
                holder: "p2".into()
            }
        );
        assert_eq!(
            decide(Some(&l), "p1", false, Timestamp::now()),
            Action::Nothing
        );
    }

    #[test]
    fn an_expired_or_free_lease_is_taken_over() {
        let now = Timestamp::now();
        assert_eq!(
            decide(Some(&lease(Some("p2"), 16)), "p1", true, now),
            Action::TakeOver
        );
        assert_eq!(
            decide(Some(&lease(None, 1)), "p1", true, now),
            Action::TakeOver
        );
        assert_eq!(
            decide(Some(&lease(Some(""), 1)), "p1", true, now),
            Action::TakeOver
        );
    }

    #[test]
    fn the_holder_renews_while_wanted_and_releases_after() {
        let now = Timestamp::now();
        let l = lease(Some("p1"), 4);
        assert_eq!(decide(Some(&l), "p1", true, now), Action::Renew);
        assert_eq!(decide(Some(&l), "p1", false, now), Action::Release);
        // Even its own expired Lease: nobody wrote since, so renewing is safe.
        let old = lease(Some("p1"), 60);
        assert_eq!(decide(Some(&old), "p1", true, now), Action::Renew);
    }

    #[test]
    fn live_holder_honours_the_duration() {
        let now = Timestamp::now();
        let left = expires_in(&lease(Some("p2"), 5), now);
        assert!(left > Duration::from_secs(9) && left <= Duration::from_millis(10_100));
        assert_eq!(expires_in(&lease(Some("p2"), 60), now), Duration::ZERO);
        assert_eq!(live_holder(&lease(Some("p2"), 14), now), Some("p2"));
        assert_eq!(live_holder(&lease(Some("p2"), 16), now), None);
        assert_eq!(live_holder(&lease(None, 0), now), None);
    }

    #[test]
    fn a_holder_stops_a_third_of_the_duration_before_expiry() {
        let t = LeaseTiming::new(Duration::from_secs(15));
        assert_eq!(t.renew_every(), Duration::from_secs(5));
        assert_eq!(t.hold_for(), Duration::from_secs(10));
        assert_eq!(t.seconds(), 15);
        assert_eq!(LeaseTiming::new(Duration::ZERO).seconds(), 1);
    }
}
