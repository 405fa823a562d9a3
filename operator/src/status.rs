//! Status of the four kinds, computed from what the operator knows (pure),
//! and written back through the status subresource.

use crate::hub::{PodAck, Published};
use crate::slots::lease_name;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use serde::Serialize;
use serde::de::DeserializeOwned;
use smsgw_crds::{
    CONDITION_ACCEPTED, CONDITION_READY, Condition, ConfigError, ContactPolicyStatus,
    EsmePoolStatus, MemberStatus, SessionStatus, SmppLinkSpec, SmppLinkStatus, UserStatus,
};
use std::collections::BTreeMap;

/// Everything a status is computed from.
#[derive(Clone, Debug, Default)]
pub struct StatusInputs {
    /// Errors of the last compile.
    pub errors: Vec<ConfigError>,
    /// Every connected pod's last ack.
    pub acks: BTreeMap<String, PodAck>,
    /// The current publication.
    pub published: std::sync::Arc<Published>,
    /// Holder of each unexpired bind-slot Lease, by Lease name.
    pub lease_holders: BTreeMap<String, String>,
}

impl StatusInputs {
    /// Why `kind`/`name` is not accepted: compile errors, then pods'
    /// rejections of the current version that name it. Empty when
    /// accepted.
    pub fn problems(&self, kind: &str, name: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .errors
            .iter()
            .filter(|e| e.kind.as_deref() == Some(kind) && e.name.as_deref() == Some(name))
            .map(|e| {
                if e.field.is_empty() {
                    e.reason.clone()
                } else {
                    format!("{}: {}", e.field, e.reason)
                }
            })
            .collect();
        let version = self.published.snapshot.as_ref().map(|s| s.version.as_str());
        for (pod, ack) in &self.acks {
            let names_it = ack
                .resource
                .split('/')
                .collect::<Vec<_>>()
                .as_slice()
                .first()
                .is_some_and(|k| *k == kind)
                && ack.resource.rsplit('/').next() == Some(name);
            if !ack.applied && Some(ack.version.as_str()) == version && names_it {
                out.push(format!("rejected by pod {pod}: {}", ack.error));
            }
        }
        out
    }

    /// Whether the resource is in the current snapshot.
    fn in_snapshot(&self, kind: &str, name: &str) -> bool {
        let Some(s) = &self.published.snapshot else {
            return false;
        };
        match kind {
            "SmppLink" => s.links.contains_key(name),
            "EsmePool" => s.pools.contains_key(name),
            "User" => s.users.contains_key(name),
            "ContactPolicy" => s.policies.contains_key(name),
            _ => false,
        }
    }

    /// The bind slots of a link: assigned pod, and bound when that pod
    /// holds the slot's Lease.
    pub fn sessions(&self, link: &str, spec: &SmppLinkSpec) -> Vec<SessionStatus> {
        (0..spec.sessions)
            .map(|slot| {
                let lease = lease_name(link, slot);
                let pod = self
                    .published
                    .slots
                    .get(&crate::slots::SlotId::new(link, slot))
                    .cloned()
                    .unwrap_or_default();
                let bound = !pod.is_empty() && self.lease_holders.get(&lease) == Some(&pod);
                SessionStatus {
                    slot,
                    lease,
                    pod,
                    bound,
                }
            })
            .collect()
    }
}

/// A condition, keeping `lastTransitionTime` from `old` when the status
/// did not change.
pub fn condition(
    old: &[Condition],
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let since = old
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// `Accepted` and `Ready` for a resource; `ready_detail` is `Ok(message)`
/// or `Err((reason, message))` for the kind-specific part of readiness.
fn conditions(
    inputs: &StatusInputs,
    kind: &str,
    name: &str,
    generation: Option<i64>,
    old: &[Condition],
    ready_detail: Result<String, (&str, String)>,
    now: &Time,
) -> Vec<Condition> {
    let problems = inputs.problems(kind, name);
    let accepted = problems.is_empty() && inputs.in_snapshot(kind, name);
    let accepted_c = if accepted {
        condition(
            old,
            CONDITION_ACCEPTED,
            true,
            "Compiled",
            "in the current snapshot".into(),
            generation,
            now,
        )
    } else if problems.is_empty() {
        condition(
            old,
            CONDITION_ACCEPTED,
            false,
            "Pending",
            "not compiled yet".into(),
            generation,
            now,
        )
    } else {
        let rejected = problems.iter().any(|p| p.starts_with("rejected by pod"));
        let reason = if rejected { "RejectedByPod" } else { "Invalid" };
        condition(
            old,
            CONDITION_ACCEPTED,
            false,
            reason,
            problems.join("; "),
            generation,
            now,
        )
    };
    let ready_c = match (accepted, ready_detail) {
        (false, _) => condition(
            old,
            CONDITION_READY,
            false,
            "NotAccepted",
            accepted_c.message.clone(),
            generation,
            now,
        ),
        (true, Ok(msg)) => condition(old, CONDITION_READY, true, "Ready", msg, generation, now),
        (true, Err((reason, msg))) => {
            condition(old, CONDITION_READY, false, reason, msg, generation, now)
        }
    };
    vec![accepted_c, ready_c]
}

/// Status of an SmppLink.
pub fn link_status(
    inputs: &StatusInputs,
    name: &str,
    spec: &SmppLinkSpec,
    generation: Option<i64>,
    old: Option<&SmppLinkStatus>,
    now: &Time,
) -> SmppLinkStatus {
    let sessions = inputs.sessions(name, spec);
    let bound = sessions.iter().filter(|s| s.bound).count() as u32;
    let detail = if bound > 0 {
        Ok(format!("{bound}/{} sessions bound", spec.sessions))
    } else {
        Err(("NotBound", format!("0/{} sessions bound", spec.sessions)))
    };
    let old_c = old.map(|o| o.conditions.as_slice()).unwrap_or_default();
    SmppLinkStatus {
        observed_generation: generation,
        conditions: conditions(inputs, "SmppLink", name, generation, old_c, detail, now),
        bound_sessions: bound,
        sessions,
    }
}

/// Status of an EsmePool: members as compiled, healthy when bound.
pub fn pool_status(
    inputs: &StatusInputs,
    name: &str,
    generation: Option<i64>,
    old: Option<&EsmePoolStatus>,
    now: &Time,
) -> EsmePoolStatus {
    let mut members = Vec::new();
    let mut rate: Option<u32> = Some(0);
    if let Some(snap) = &inputs.published.snapshot
        && let Some(pool) = snap.pools.get(name)
    {
        for m in &pool.members {
            let healthy = snap
                .links
                .get(&m.link)
                .is_some_and(|l| inputs.sessions(&m.link, l).iter().any(|s| s.bound));
            if healthy {
                let link_rate = snap.links.get(&m.link).and_then(|l| l.rate);
                rate = match (rate, link_rate) {
                    (Some(a), Some(b)) => Some(a.saturating_add(b)),
                    _ => None,
                };
            }
            members.push(MemberStatus {
                link: m.link.clone(),
                weight: m.weight,
                healthy,
            });
        }
    }
    let healthy = members.iter().filter(|m| m.healthy).count() as u32;
    let detail = if healthy > 0 {
        Ok(format!("{healthy}/{} members healthy", members.len()))
    } else {
        Err((
            "NoHealthyMember",
            format!("0/{} members healthy", members.len()),
        ))
    };
    let old_c = old.map(|o| o.conditions.as_slice()).unwrap_or_default();
    EsmePoolStatus {
        observed_generation: generation,
        conditions: conditions(inputs, "EsmePool", name, generation, old_c, detail, now),
        healthy_members: healthy,
        effective_rate: if healthy > 0 { rate } else { Some(0) },
        members,
    }
}

/// Status of a User; `secret_name` once its credentials Secret exists.
pub fn user_status(
    inputs: &StatusInputs,
    name: &str,
    generation: Option<i64>,
    secret_name: Option<String>,
    old: Option<&UserStatus>,
    now: &Time,
) -> UserStatus {
    let detail = match &secret_name {
        Some(s) => Ok(format!("credentials in Secret {s}")),
        None => Err((
            "NoCredentials",
            "credentials Secret not created yet".to_owned(),
        )),
    };
    let old_c = old.map(|o| o.conditions.as_slice()).unwrap_or_default();
    UserStatus {
        observed_generation: generation,
        conditions: conditions(inputs, "User", name, generation, old_c, detail, now),
        secret_name,
    }
}

/// Status of a ContactPolicy.
pub fn policy_status(
    inputs: &StatusInputs,
    name: &str,
    generation: Option<i64>,
    old: Option<&ContactPolicyStatus>,
    now: &Time,
) -> ContactPolicyStatus {
    let old_c = old.map(|o| o.conditions.as_slice()).unwrap_or_default();
    ContactPolicyStatus {
        observed_generation: generation,
        conditions: conditions(
            inputs,
            "ContactPolicy",
            name,
            generation,
            old_c,
            Ok("in the current snapshot".into()),
            now,
        ),
    }
}

/// Writes `status` through the status subresource (JSON merge patch),
/// unless it equals `old`. Returns whether it patched.
pub async fn write_status<K, S>(
    api: &Api<K>,
    name: &str,
    old: Option<&S>,
    status: &S,
) -> Result<bool, kube::Error>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if old == Some(status) {
        return Ok(false);
    }
    let patch = serde_json::json!({ "status": status });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(true)
}
