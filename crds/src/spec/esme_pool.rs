//! `EsmePool`: a weighted set of links that answers like one link.

// `#[kube(printcolumn(..), printcolumn(..))]` repeats `type_ = ..` by
// design; clippy reads that as a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use super::shared::{FieldError, defaults};
use crate::status::EsmePoolStatus;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A member of a pool, named.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolMember {
    /// Name of an SmppLink in the same namespace.
    #[schemars(length(min = 1, max = 63))]
    pub link: String,
    /// Share of the pool's traffic this link gets, relative to the other
    /// members' weights (smooth weighted round-robin), 1 to 1000.
    /// Default 1.
    #[serde(default = "defaults::one_u32")]
    #[schemars(range(min = 1, max = 1000))]
    pub weight: u32,
}

/// Members of a pool chosen by label: every SmppLink whose labels include
/// all of `matchLabels`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemberSelector {
    /// Labels an SmppLink must carry (all of them, with these values) to
    /// be a member. Must not be empty.
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "size(self) > 0",
        "message": "matchLabels must hold at least one label"
    }]))]
    pub match_labels: BTreeMap<String, String>,
    /// Weight of each selected link, 1 to 1000. Default 1.
    #[serde(default = "defaults::one_u32")]
    #[schemars(range(min = 1, max = 1000))]
    pub weight: u32,
}

/// A weighted set of links that answers like one link: messages sent to
/// the pool go to a healthy member by smooth weighted round-robin.
#[derive(CustomResource, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "smsgw.io",
    version = "v1alpha1",
    kind = "EsmePool",
    namespaced,
    status = "EsmePoolStatus",
    shortname = "ep",
    category = "smsgw",
    doc = "A weighted set of SmppLinks that answers like one link.",
    printcolumn(
        name = "Members",
        type_ = "string",
        json_path = ".spec.members[*].link",
        description = "Links named as members"
    ),
    printcolumn(
        name = "Healthy",
        type_ = "integer",
        json_path = ".status.healthyMembers",
        description = "Members with at least one bound session"
    ),
    printcolumn(
        name = "Rate",
        type_ = "integer",
        json_path = ".status.effectiveRate",
        description = "Sum of the healthy members' rates (msg/s)"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the pool is configured and has a healthy member"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "size(self.members) > 0 || (has(self.selectors) && size(self.selectors) > 0)",
        "message": "a pool needs members or selectors"
    },
    {
        "rule": "self.members.all(m, self.members.exists_one(o, o.link == m.link))",
        "message": "a link is listed twice in members",
        "fieldPath": ".members"
    }
]))]
pub struct EsmePoolSpec {
    /// Links by name, with their weights; at most 32.
    #[schemars(length(max = 32))]
    pub members: Vec<PoolMember>,
    /// Links by label; each link selected joins with the selector's weight
    /// (a link also named in `members` keeps its named weight); at most 8.
    /// Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub selectors: Vec<MemberSelector>,
}

impl EsmePoolSpec {
    /// Field-level checks that need no other resource.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if self.members.is_empty() && self.selectors.is_empty() {
            errs.push(FieldError::new(
                "spec.members",
                "must hold at least one link (or set selectors)",
            ));
        }
        for (i, sel) in self.selectors.iter().enumerate() {
            if sel.match_labels.is_empty() {
                errs.push(FieldError::new(
                    format!("spec.selectors[{i}].matchLabels"),
                    "must hold at least one label",
                ));
            }
            if sel.weight == 0 || sel.weight > 1000 {
                errs.push(FieldError::new(
                    format!("spec.selectors[{i}].weight"),
                    "must be between 1 and 1000",
                ));
            }
        }
        for (i, m) in self.members.iter().enumerate() {
            if m.weight == 0 || m.weight > 1000 {
                errs.push(FieldError::new(
                    format!("spec.members[{i}].weight"),
                    "must be between 1 and 1000",
                ));
            }
            if self.members[..i].iter().any(|o| o.link == m.link) {
                errs.push(FieldError::new(
                    format!("spec.members[{i}].link"),
                    format!("link {:?} listed twice", m.link),
                ));
            }
        }
        errs
    }
}
