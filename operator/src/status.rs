//! Status of the five kinds, computed from what the operator knows (pure),
//! and written back through the status subresource.

use crate::hub::{PodAck, Published};
use crate::slots::lease_name;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use serde::Serialize;
use serde::de::DeserializeOwned;
use smsgw_crds::{
    CONDITION_ACCEPTED, CONDITION_READY, Condition, ConfigError, ContactPolicyStatus,
    EsmePoolStatus, MemberStatus, RouteStatus, SessionStatus, SmppLinkSpec, SmppLinkStatus,
    UserStatus,
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

    /// Of the connected proxies that acked anything, how many applied the
    /// current snapshot, and how many there are.
    pub fn applied_by(&self) -> (usize, usize) {
        let version = self.published.snapshot.as_ref().map(|s| s.version.as_str());
        let applied = self
            .acks
            .values()
            .filter(|a| a.applied && Some(a.version.as_str()) == version)
            .count();
        (applied, self.acks.len())
    }

    /// Readiness of a resource that takes effect only once the proxies
    /// apply it (a User can log in, a ContactPolicy is enforced): `detail`
    /// when every connected proxy applied the current snapshot, or when
    /// the resource was already Ready at this generation (a later change
    /// of another resource does not make it flap); `Propagating` else.
    fn in_force<'a>(
        &self,
        old: &[Condition],
        generation: Option<i64>,
        detail: Result<String, (&'a str, String)>,
    ) -> Result<String, (&'a str, String)> {
        let msg = detail?;
        let was_ready = old.iter().any(|c| {
            c.type_ == CONDITION_READY && c.status == "True" && c.observed_generation == generation
        });
        let (applied, pods) = self.applied_by();
        if was_ready || applied == pods {
            Ok(format!("{msg}; in force on every proxy"))
        } else {
            Err((
                "Propagating",
                format!("applied by {applied}/{pods} proxies so far"),
            ))
        }
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
            "Route" => s.routes.contains_key(name),
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
    let detail = if spec.suspended {
        Err((
            "Suspended",
            format!(
                "spec.suspended: {bound}/{} sessions still bound",
                spec.sessions
            ),
        ))
    } else if bound > 0 {
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

/// Status of a User: `credentials` is its Secret's name once that holds
/// the app's credentials, or why not (reason and message of its Ready
/// condition; see [`crate::credentials::CredentialsState`]).
pub fn user_status(
    inputs: &StatusInputs,
    name: &str,
    generation: Option<i64>,
    credentials: Result<String, (&'static str, String)>,
    old: Option<&UserStatus>,
    now: &Time,
) -> UserStatus {
    let secret_name = credentials.as_ref().ok().cloned();
    let unusable = credentials.as_ref().err().cloned();
    let detail = credentials.map(|s| format!("credentials in Secret {s}"));
    let old_c = old.map(|o| o.conditions.as_slice()).unwrap_or_default();
    let detail = inputs.in_force(old_c, generation, detail);
    let mut conditions = conditions(inputs, "User", name, generation, old_c, detail, now);
    // A Secret the User names but cannot use also keeps it out of the
    // snapshot (not accepted); Ready says the cause rather than
    // `NotAccepted`.
    if let Some((reason, message)) = unusable
        && let Some(ready) = conditions.iter_mut().find(|c| c.type_ == CONDITION_READY)
        && ready.reason == "NotAccepted"
    {
        *ready = condition(
            old_c,
            CONDITION_READY,
            false,
            reason,
            message,
            generation,
            now,
        );
    }
    UserStatus {
        observed_generation: generation,
        conditions,
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
    let detail = inputs.in_force(old_c, generation, Ok("in the current snapshot".into()));
    ContactPolicyStatus {
        observed_generation: generation,
        conditions: conditions(
            inputs,
            "ContactPolicy",
            name,
            generation,
            old_c,
            detail,
            now,
        ),
    }
}

/// Status of a Route: Ready once every proxy routes by it.
pub fn route_status(
    inputs: &StatusInputs,
    name: &str,
    generation: Option<i64>,
    old: Option<&RouteStatus>,
    now: &Time,
) -> RouteStatus {
    let old_c = old.map(|o| o.conditions.as_slice()).unwrap_or_default();
    let detail = inputs.in_force(old_c, generation, Ok("in the current snapshot".into()));
    RouteStatus {
        observed_generation: generation,
        conditions: conditions(inputs, "Route", name, generation, old_c, detail, now),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Published;
    use smsgw_crds::{Snapshot, UserSpec};
    use std::sync::Arc;

    fn inputs(version: &str, acks: &[(&str, &str, bool)]) -> StatusInputs {
        let mut snap = Snapshot {
            version: version.into(),
            ..Default::default()
        };
        snap.users.insert(
            "alice".into(),
            serde_json::from_value::<UserSpec>(
                serde_json::json!({"email": "alice@example.com", "appName": "shop"}),
            )
            .unwrap(),
        );
        StatusInputs {
            published: Arc::new(Published {
                snapshot: Some(Arc::new(snap)),
                ..Default::default()
            }),
            acks: acks
                .iter()
                .map(|(pod, v, applied)| {
                    let ack = PodAck {
                        version: (*v).into(),
                        applied: *applied,
                        error: String::new(),
                        resource: String::new(),
                    };
                    ((*pod).to_owned(), ack)
                })
                .collect(),
            ..Default::default()
        }
    }

    fn ready(s: &UserStatus) -> (&str, &str) {
        let c = s
            .conditions
            .iter()
            .find(|c| c.type_ == CONDITION_READY)
            .unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn a_user_is_ready_only_once_every_proxy_applied_it() {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let secret = || Ok("alice-credentials".to_owned());
        // One proxy still runs the previous version: the user cannot log
        // in through it yet.
        let i = inputs("v2", &[("p0", "v2", true), ("p1", "v1", true)]);
        let s = user_status(&i, "alice", Some(1), secret(), None, &now);
        assert_eq!(ready(&s), ("False", "Propagating"), "{s:?}");
        assert!(s.conditions[1].message.contains("1/2"), "{s:?}");
        // A proxy that rejected the version does not count as applied.
        let i = inputs("v2", &[("p0", "v2", true), ("p1", "v2", false)]);
        let s = user_status(&i, "alice", Some(1), secret(), None, &now);
        assert_eq!(ready(&s), ("False", "Propagating"), "{s:?}");
        // Every proxy applied it.
        let i = inputs("v2", &[("p0", "v2", true), ("p1", "v2", true)]);
        let s = user_status(&i, "alice", Some(1), secret(), None, &now);
        assert_eq!(ready(&s), ("True", "Ready"), "{s:?}");
        // A later snapshot (another resource changed) being rolled out does
        // not take a Ready user back to Propagating...
        let i = inputs("v3", &[("p0", "v3", true), ("p1", "v2", true)]);
        let later = user_status(&i, "alice", Some(1), secret(), Some(&s), &now);
        assert_eq!(ready(&later), ("True", "Ready"), "{later:?}");
        assert_eq!(later, s, "no status churn while other changes roll out");
        // ...but a change of the user itself (new generation) waits again.
        let changed = user_status(&i, "alice", Some(2), secret(), Some(&s), &now);
        assert_eq!(ready(&changed), ("False", "Propagating"), "{changed:?}");
    }

    #[test]
    fn a_user_whose_existing_credentials_secret_is_unusable_says_why_and_names_no_secret() {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let i = inputs("v2", &[("p0", "v2", true)]);
        let why = (
            "CredentialsSecretNotFound",
            "Secret legacy named by spec.existingCredentialsSecret does not exist".to_owned(),
        );
        let s = user_status(&i, "alice", Some(1), Err(why.clone()), None, &now);
        assert_eq!(ready(&s), ("False", "CredentialsSecretNotFound"), "{s:?}");
        // Left out of the snapshot by its compile error, it still says why.
        let mut out = inputs("v2", &[("p0", "v2", true)]);
        out.errors.push(smsgw_crds::ConfigError {
            document: 0,
            kind: Some("User".into()),
            name: Some("alice".into()),
            field: "spec.existingCredentialsSecret".into(),
            reason: "Secret \"legacy\" does not exist".into(),
        });
        let s2 = user_status(&out, "alice", Some(1), Err(why), None, &now);
        assert_eq!(ready(&s2), ("False", "CredentialsSecretNotFound"), "{s2:?}");
        assert_eq!(s2.conditions[0].reason, "Invalid", "{s2:?}");
        let c = s
            .conditions
            .iter()
            .find(|c| c.type_ == CONDITION_READY)
            .unwrap();
        assert!(c.message.contains("Secret legacy"), "{s:?}");
        assert_eq!(s.secret_name, None);
    }

    #[test]
    fn a_contact_policy_is_ready_once_every_proxy_applied_it() {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let mut i = inputs("v2", &[("p0", "v1", true)]);
        let mut snap = (**i.published.snapshot.as_ref().unwrap()).clone();
        snap.policies.insert(
            "cp1".into(),
            serde_json::from_value(serde_json::json!({"dedup": {"window": "1h"}})).unwrap(),
        );
        i.published = Arc::new(Published {
            snapshot: Some(Arc::new(snap)),
            ..Default::default()
        });
        let s = policy_status(&i, "cp1", Some(1), None, &now);
        let c = s
            .conditions
            .iter()
            .find(|c| c.type_ == CONDITION_READY)
            .unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "Propagating")
        );
        i.acks.get_mut("p0").unwrap().version = "v2".into();
        let s = policy_status(&i, "cp1", Some(1), None, &now);
        let c = s
            .conditions
            .iter()
            .find(|c| c.type_ == CONDITION_READY)
            .unwrap();
        assert_eq!(c.status, "True", "{s:?}");
    }
}
