//! Kubernetes wiring: watchers feeding the [`Hub`], and the status loop
//! writing conditions, Users' credentials Secrets and Events back.

use crate::credentials::ensure_credentials;
use crate::hub::{Hub, Rejection, slots_from_lease_holders};
use crate::status::{
    StatusInputs, link_status, policy_status, pool_status, route_status, user_status, write_status,
};
use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ObjectReference, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use smsgw_crds::{CONDITION_ACCEPTED, ContactPolicy, EsmePool, Resource, Route, SmppLink, User};
use smsgw_leases::live_holder;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

/// What the controllers need to know.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// Namespace watched (the release namespace).
    pub namespace: String,
    /// Label selector of the proxy pods.
    pub proxy_selector: String,
    /// Name of this operator pod, for Events.
    pub pod_name: String,
    /// How often status is rewritten even without a change (lease
    /// expiries are not events).
    pub resync: Duration,
}

/// Ready pods among `pods`: Ready condition True, not being deleted.
pub fn ready_pods<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> BTreeSet<String> {
    pods.into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .map(|p| p.name_any())
        .collect()
}

/// Holders of the unexpired bind-slot Leases (`smsgw-*-slot-*`) at `now`.
pub fn slot_lease_holders<'a>(
    leases: impl IntoIterator<Item = &'a Lease>,
    now: Timestamp,
) -> BTreeMap<String, String> {
    leases
        .into_iter()
        .filter(|l| l.name_any().contains("-slot-"))
        .filter_map(|l| Some((l.name_any(), live_holder(l, now)?.to_owned())))
        .collect()
}

fn reflect<K>(
    api: Api<K>,
    cfg: watcher::Config,
) -> (Store<K>, impl Stream<Item = ()> + Send + 'static)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, cfg)
        .default_backoff()
        .reflect(writer)
        .filter_map(|ev| async move {
            match ev {
                Ok(_) => Some(()),
                Err(e) => {
                    tracing::warn!(error = %e, "watch failed; retrying");
                    None
                }
            }
        });
    (reader, stream)
}

/// Runs the watchers and the status loop until `cancel`.
pub async fn run(
    client: Client,
    cfg: ControllerConfig,
    hub: Hub,
    mut rejections: mpsc::UnboundedReceiver<Rejection>,
    cancel: CancellationToken,
) {
    let ns = cfg.namespace.as_str();
    let all = watcher::Config::default();
    let (links, links_w) = reflect(Api::<SmppLink>::namespaced(client.clone(), ns), all.clone());
    let (pools, pools_w) = reflect(Api::<EsmePool>::namespaced(client.clone(), ns), all.clone());
    let (users, users_w) = reflect(Api::<User>::namespaced(client.clone(), ns), all.clone());
    let (policies, policies_w) = reflect(
        Api::<ContactPolicy>::namespaced(client.clone(), ns),
        all.clone(),
    );
    let (routes, routes_w) = reflect(Api::<Route>::namespaced(client.clone(), ns), all.clone());
    let (secrets, secrets_w) = reflect(Api::<Secret>::namespaced(client.clone(), ns), all.clone());
    let (pods, pods_w) = reflect(
        Api::<Pod>::namespaced(client.clone(), ns),
        watcher::Config::default().labels(&cfg.proxy_selector),
    );
    let (leases, leases_w) = reflect(Api::<Lease>::namespaced(client.clone(), ns), all);

    let changed = Arc::new(Notify::new());
    let feed = {
        let (hub, changed) = (hub.clone(), changed.clone());
        let (links, pools, users, policies, routes, secrets, pods) = (
            links.clone(),
            pools.clone(),
            users.clone(),
            policies.clone(),
            routes.clone(),
            secrets.clone(),
            pods.clone(),
        );
        move |kind: &'static str| {
            let resources = match kind {
                "SmppLink" => resources(&links),
                "EsmePool" => resources(&pools),
                "User" => resources(&users),
                "ContactPolicy" => resources(&policies),
                "Route" => resources(&routes),
                "Secret" => resources(&secrets),
                _ => {
                    let p = pods.state();
                    hub.set_ready_pods(ready_pods(p.iter().map(|p| p.as_ref())));
                    changed.notify_one();
                    return;
                }
            };
            hub.replace_kind(kind, resources);
            changed.notify_one();
        }
    };
    let watchers = futures::stream::select_all([
        links_w.map(|_| "SmppLink").boxed(),
        pools_w.map(|_| "EsmePool").boxed(),
        users_w.map(|_| "User").boxed(),
        policies_w.map(|_| "ContactPolicy").boxed(),
        routes_w.map(|_| "Route").boxed(),
        secrets_w.map(|_| "Secret").boxed(),
        pods_w.map(|_| "Pod").boxed(),
        leases_w.map(|_| "Lease").boxed(),
    ]);
    let watch_task = {
        let (changed, hub, leases) = (changed.clone(), hub.clone(), leases.clone());
        watchers.for_each(move |kind| {
            if kind == "Lease" {
                hub.set_lease_holders(slots_from_lease_holders(&slot_lease_holders(
                    leases.state().iter().map(|l| l.as_ref()),
                    Timestamp::now(),
                )));
                changed.notify_one();
            } else {
                feed(kind);
            }
            async {}
        })
    };

    let reporter = Reporter {
        controller: "smsgw-operator".into(),
        instance: Some(cfg.pod_name.clone()),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let status_task = async {
        let mut published = hub.subscribe();
        loop {
            tokio::select! {
                _ = changed.notified() => {}
                _ = published.changed() => {}
                _ = hub.acks_changed() => {}
                _ = tokio::time::sleep(cfg.resync) => {}
                Some(r) = rejections.recv() => { reject_event(&recorder, &links, &pools, &users, &policies, &routes, &r).await; }
            }
            // Let bursts of events settle.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let inputs = StatusInputs {
                errors: hub.compile_errors(),
                acks: hub.acks(),
                published: hub.current(),
                lease_holders: slot_lease_holders(
                    leases.state().iter().map(|l| l.as_ref()),
                    Timestamp::now(),
                ),
            };
            if let Err(e) = write_all(
                &client, ns, &inputs, &recorder, &links, &pools, &users, &policies, &routes,
            )
            .await
            {
                tracing::warn!(error = %e, "status update failed; retrying");
            }
        }
    };
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = watch_task => {}
        _ = status_task => {}
    }
}

/// Every object of `store` as the hub's input.
fn resources<K>(store: &Store<K>) -> Vec<Resource>
where
    K: kube::Resource<DynamicType = ()> + Clone,
    for<'a> Resource: From<&'a K>,
{
    store
        .state()
        .iter()
        .map(|o| Resource::from(o.as_ref()))
        .collect()
}

/// A reference to the object of `store` named `name`, if there is one.
fn object_ref<K>(store: &Store<K>, name: &str) -> Option<ObjectReference>
where
    K: kube::Resource<DynamicType = ()> + Clone,
{
    store
        .state()
        .into_iter()
        .find(|o| o.name_any() == name)
        .map(|o| o.object_ref(&()))
}

async fn reject_event(
    recorder: &Recorder,
    links: &Store<SmppLink>,
    pools: &Store<EsmePool>,
    users: &Store<User>,
    policies: &Store<ContactPolicy>,
    routes: &Store<Route>,
    r: &Rejection,
) {
    // "Kind/namespace/name" (or "Kind/name").
    let parts: Vec<&str> = r.ack.resource.split('/').collect();
    let (Some(kind), Some(name)) = (parts.first(), parts.last()) else {
        return;
    };
    let reference = match *kind {
        "SmppLink" => object_ref(links, name),
        "EsmePool" => object_ref(pools, name),
        "User" => object_ref(users, name),
        "ContactPolicy" => object_ref(policies, name),
        "Route" => object_ref(routes, name),
        _ => None,
    };
    if let Some(reference) = reference {
        let ev = Event {
            type_: EventType::Warning,
            reason: "RejectedByPod".into(),
            note: Some(format!(
                "pod {} rejected version {}: {}",
                r.pod, r.ack.version, r.ack.error
            )),
            action: "ApplySnapshot".into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&ev, &reference).await {
            tracing::warn!(error = %e, "cannot publish Event");
        }
    }
}

/// A Warning Event when a resource's Accepted condition turns False.
async fn invalid_event<K: kube::Resource<DynamicType = ()>>(
    recorder: &Recorder,
    obj: &K,
    was: &[smsgw_crds::Condition],
    now: &[smsgw_crds::Condition],
) {
    let find = |cs: &[smsgw_crds::Condition]| {
        cs.iter()
            .find(|c| c.type_ == CONDITION_ACCEPTED)
            .map(|c| (c.status.clone(), c.message.clone()))
    };
    let (before, after) = (find(was), find(now));
    if let Some((status, message)) = &after
        && status == "False"
        && before != after
        && !message.starts_with("not compiled")
    {
        let ev = Event {
            type_: EventType::Warning,
            reason: "Invalid".into(),
            note: Some(message.chars().take(1000).collect()),
            action: "Compile".into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, "cannot publish Event");
        }
    }
}

/// Writes `status` of `obj` unless it equals `old` ([`write_status`]),
/// and after a write a Warning Event if its Accepted condition turned
/// False ([`invalid_event`]); `conditions` reads a status' conditions.
async fn write_and_report<K, S>(
    api: &Api<K>,
    recorder: &Recorder,
    obj: &K,
    old: Option<&S>,
    status: &S,
    conditions: impl Fn(&S) -> &[smsgw_crds::Condition],
) -> Result<(), kube::Error>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: serde::Serialize + PartialEq,
{
    if write_status(api, &obj.name_any(), old, status).await? {
        let was = old.map(&conditions).unwrap_or_default();
        invalid_event(recorder, obj, was, conditions(status)).await;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn write_all(
    client: &Client,
    ns: &str,
    inputs: &StatusInputs,
    recorder: &Recorder,
    links: &Store<SmppLink>,
    pools: &Store<EsmePool>,
    users: &Store<User>,
    policies: &Store<ContactPolicy>,
    routes: &Store<Route>,
) -> Result<(), kube::Error> {
    let now = Time(Timestamp::now());
    let api: Api<SmppLink> = Api::namespaced(client.clone(), ns);
    for o in links.state() {
        let old = o.status.as_ref();
        let s = link_status(
            inputs,
            &o.name_any(),
            &o.spec,
            o.metadata.generation,
            old,
            &now,
        );
        write_and_report(&api, recorder, o.as_ref(), old, &s, |x| &x.conditions).await?;
    }
    let api: Api<EsmePool> = Api::namespaced(client.clone(), ns);
    for o in pools.state() {
        let old = o.status.as_ref();
        let s = pool_status(inputs, &o.name_any(), o.metadata.generation, old, &now);
        write_and_report(&api, recorder, o.as_ref(), old, &s, |x| &x.conditions).await?;
    }
    let api: Api<User> = Api::namespaced(client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    for o in users.state() {
        let credentials = ensure_credentials(&secrets, &o).await?;
        let old = o.status.as_ref();
        let s = user_status(
            inputs,
            &o.name_any(),
            o.metadata.generation,
            credentials,
            old,
            &now,
        );
        write_and_report(&api, recorder, o.as_ref(), old, &s, |x| &x.conditions).await?;
    }
    let api: Api<ContactPolicy> = Api::namespaced(client.clone(), ns);
    for o in policies.state() {
        let old = o.status.as_ref();
        let s = policy_status(inputs, &o.name_any(), o.metadata.generation, old, &now);
        write_and_report(&api, recorder, o.as_ref(), old, &s, |x| &x.conditions).await?;
    }
    let api: Api<Route> = Api::namespaced(client.clone(), ns);
    for o in routes.state() {
        let old = o.status.as_ref();
        let s = route_status(inputs, &o.name_any(), o.metadata.generation, old, &now);
        write_and_report(&api, recorder, o.as_ref(), old, &s, |x| &x.conditions).await?;
    }
    Ok(())
}
