//! Status of the four kinds, written by the operator through the status
//! subresource.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A standard Kubernetes condition (`type`, `status`, `reason`, `message`,
/// `observedGeneration`, `lastTransitionTime`), as in `metav1.Condition`.
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// Condition type set on every kind: `True` once the resource is part of
/// the snapshot every ready pod applied, `False` with the reason otherwise.
pub const CONDITION_READY: &str = "Ready";

/// Condition type: `True` when the resource compiled into the current
/// snapshot, `False` (reason `Invalid`, message naming field and cause)
/// when the operator or a pod refused it.
pub const CONDITION_ACCEPTED: &str = "Accepted";

/// Status of an SmppLink.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SmppLinkStatus {
    /// `metadata.generation` of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Latest observations: `Accepted` (compiled into the snapshot) and
    /// `Ready` (accepted, and at least one session bound).
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Number of sessions bound right now, all pods together (the scale
    /// subresource's status replicas). Never above `spec.sessions`.
    #[serde(default)]
    pub bound_sessions: u32,
    /// One entry per bind slot (`0` to `spec.sessions - 1`): which pod
    /// holds it and whether its bind is up.
    #[serde(default)]
    pub sessions: Vec<SessionStatus>,
}

/// One bind slot of a link.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionStatus {
    /// Slot index, 0-based, below `spec.sessions`.
    pub slot: u32,
    /// Name of the Lease guarding the slot (`smsgw-<link>-slot-<slot>`).
    pub lease: String,
    /// Pod the slot is assigned to; empty while unassigned (no ready pod).
    #[serde(default)]
    pub pod: String,
    /// Whether that pod reports the bind as up.
    #[serde(default)]
    pub bound: bool,
}

/// Status of an EsmePool.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EsmePoolStatus {
    /// `metadata.generation` of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Latest observations: `Accepted` and `Ready` (a healthy member).
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Number of members with at least one bound session.
    #[serde(default)]
    pub healthy_members: u32,
    /// Sum of the healthy members' `spec.rate`, in messages per second;
    /// absent when a healthy member has no rate (unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_rate: Option<u32>,
    /// Every member (named or selected), its weight and health.
    #[serde(default)]
    pub members: Vec<MemberStatus>,
}

/// One member of a pool as compiled.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// SmppLink name.
    pub link: String,
    /// Weight in the pool.
    pub weight: u32,
    /// Whether the link has at least one bound session.
    pub healthy: bool,
}

/// Status of a User.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserStatus {
    /// `metadata.generation` of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Latest observations: `Accepted` and `Ready`.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Name of the Secret (owned by this User) holding `appId`,
    /// `appSecret` and, when generated, `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
}

/// Status of a Route.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    /// `metadata.generation` of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Latest observations: `Accepted` and `Ready`.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Status of a ContactPolicy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContactPolicyStatus {
    /// `metadata.generation` of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Latest observations: `Accepted` and `Ready`.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
