//! `ContactPolicy`: a named contact-policy strategy (frequency caps, dedup,
//! quiet hours, blacklists), and the strategy names requests select it by
//! (its resource name and `spec.strategies`).

// `#[kube(printcolumn(..), printcolumn(..))]` repeats `type_ = ..` by
// design; clippy reads that as a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use super::shared::{FieldError, defaults};
use crate::Duration;
use crate::status::ContactPolicyStatus;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Per-destination frequency caps over calendar periods: a message to a
/// destination that already got the cap within the current day or week is
/// refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.daily) || has(self.weekly)",
        "message": "set daily, weekly or both"
    },
    {
        "rule": "!has(self.daily) || !has(self.weekly) || self.weekly >= self.daily",
        "message": "weekly must be at least the daily cap",
        "fieldPath": ".weekly"
    }
]))]
pub struct Frequency {
    /// Messages per destination per calendar day (midnight to midnight in
    /// `timeZone`). Absent means no daily cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily: Option<u32>,
    /// Messages per destination per calendar week (Monday 00:00 to Sunday
    /// 24:00 in `timeZone`); at least `daily`. Absent means no weekly
    /// cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weekly: Option<u32>,
    /// IANA time zone the days and weeks follow (`Europe/Paris`).
    /// Default `UTC`.
    #[serde(default = "defaults::utc")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: String,
}

/// Refusal of the same text to the same destination within a window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Dedup {
    /// How long a sent text blocks an identical one to the same
    /// destination, as a duration string (`10m`, `1h`). Must be positive.
    pub window: Duration,
    /// Whether the source address is part of the key, so the same text
    /// from two sender ids is not a duplicate. Default false.
    #[serde(default)]
    pub include_source: bool,
}

/// Hours of the day during which messages are refused, in the
/// destination's local time: the zone of `zones` whose prefix starts the
/// number (longest wins), else the zone of its country when that country
/// keeps one zone, else the policy's `frequency.timeZone`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuietHours {
    /// Start of the quiet period, `HH:MM` (24-hour clock).
    #[schemars(regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub start: String,
    /// End of the quiet period, `HH:MM`; before `start` means the period
    /// spans midnight.
    #[schemars(regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub end: String,
    /// Time zones by number prefix (E.164 digits, no `+`), for countries
    /// that span several zones or to correct the built-in country table,
    /// e.g. `{"1212": America/New_York, "1415": America/Los_Angeles}`.
    /// Values are IANA time zone names.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub zones: BTreeMap<String, String>,
}

/// A named contact-policy strategy; requests choose it by the resource's
/// name or one of `spec.strategies`. Every check set here must pass for a
/// message to be sent.
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "smsgw.io",
    version = "v1alpha1",
    kind = "ContactPolicy",
    namespaced,
    status = "ContactPolicyStatus",
    shortname = "cpol",
    category = "smsgw",
    doc = "A contact-policy strategy (frequency caps, deduplication, blacklists, quiet hours), chosen by requests by its name or one of spec.strategies.",
    printcolumn(
        name = "Daily",
        type_ = "integer",
        json_path = ".spec.frequency.daily",
        description = "Messages per destination per day"
    ),
    printcolumn(
        name = "Weekly",
        type_ = "integer",
        json_path = ".spec.frequency.weekly",
        description = "Messages per destination per week"
    ),
    printcolumn(
        name = "Dedup",
        type_ = "string",
        json_path = ".spec.dedup.window",
        description = "Deduplication window"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the policy is in the pods' configuration"
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
        "rule": "has(self.frequency) || has(self.dedup) || (has(self.blacklists) && size(self.blacklists) > 0) || has(self.quietHours) || (has(self.passAll) && self.passAll)",
        "message": "a policy needs frequency, dedup, blacklists, quietHours or passAll"
    },
    {
        "rule": "!(has(self.passAll) && self.passAll) || !(has(self.frequency) || has(self.dedup) || (has(self.blacklists) && size(self.blacklists) > 0) || has(self.quietHours))",
        "message": "passAll excludes frequency, dedup, blacklists and quietHours"
    }
]))]
pub struct ContactPolicySpec {
    /// Per-destination caps per day and week. Absent means no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency: Option<Frequency>,
    /// Refusal of repeated texts. Absent means no deduplication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup: Option<Dedup>,
    /// Names of the blacklists (imported from S3 or managed through the
    /// admin API) whose numbers are refused, at most 32. Default none.
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub blacklists: Vec<String>,
    /// Hours during which messages are refused. Absent means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietHours>,
    /// More strategy names requests may select this policy by, besides
    /// its resource name: the names clients already send that a resource
    /// name cannot carry (`onbuild_cp1`, `health_check`). Each 1 to 128
    /// visible ASCII characters (no spaces), not DNS-1123 bound; at most
    /// 16; no name may select two policies (a name another policy already
    /// answers to, by resource name or here, is refused on this one).
    /// Counters belong to the policy, not to the name: every name of a
    /// policy counts against the same caps. Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        inner(length(min = 1, max = 128), regex(pattern = r"^[!-~]+$")),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub strategies: Vec<String>,
    /// Checks nothing and passes every message with a valid destination,
    /// counting nothing: a health-check strategy, for probes that send
    /// through the contact-policy step. Excludes every other check.
    /// Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pass_all: bool,
}

/// Longest name in `spec.strategies`.
pub const MAX_STRATEGY_NAME: usize = 128;

/// Most names in `spec.strategies`.
pub const MAX_STRATEGIES: usize = 16;

impl ContactPolicySpec {
    /// Field-level checks that need no other resource.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if let Some(f) = &self.frequency {
            if f.daily.is_none() && f.weekly.is_none() {
                errs.push(FieldError::new(
                    "spec.frequency",
                    "set daily, weekly or both",
                ));
            }
            if let (Some(d), Some(w)) = (f.daily, f.weekly)
                && w < d
            {
                errs.push(FieldError::new(
                    "spec.frequency.weekly",
                    "must be at least the daily cap",
                ));
            }
            if f.time_zone.trim().is_empty() {
                errs.push(FieldError::new(
                    "spec.frequency.timeZone",
                    "must not be empty",
                ));
            }
        }
        if let Some(d) = &self.dedup
            && d.window.get().is_zero()
        {
            errs.push(FieldError::new("spec.dedup.window", "must be positive"));
        }
        if let Some(q) = &self.quiet_hours {
            for (field, v) in [
                ("spec.quietHours.start", &q.start),
                ("spec.quietHours.end", &q.end),
            ] {
                if parse_hh_mm(v).is_none() {
                    errs.push(FieldError::new(
                        field,
                        format!("{v:?} is not a time of day (HH:MM)"),
                    ));
                }
            }
        }
        let checks = self.frequency.is_some()
            || self.dedup.is_some()
            || !self.blacklists.is_empty()
            || self.quiet_hours.is_some();
        if !checks && !self.pass_all {
            errs.push(FieldError::new(
                "spec",
                "a policy needs frequency, dedup, blacklists, quietHours or passAll",
            ));
        }
        if checks && self.pass_all {
            errs.push(FieldError::new(
                "spec.passAll",
                "passAll excludes frequency, dedup, blacklists and quietHours",
            ));
        }
        if self.strategies.len() > MAX_STRATEGIES {
            errs.push(FieldError::new(
                "spec.strategies",
                format!("at most {MAX_STRATEGIES} names"),
            ));
        }
        for (i, s) in self.strategies.iter().enumerate() {
            let field = format!("spec.strategies[{i}]");
            if s.is_empty() || s.len() > MAX_STRATEGY_NAME {
                errs.push(FieldError::new(
                    field,
                    format!("must be 1 to {MAX_STRATEGY_NAME} characters"),
                ));
            } else if !s.bytes().all(|b| b.is_ascii_graphic()) {
                errs.push(FieldError::new(
                    field,
                    format!("{s:?} may hold only visible ASCII characters, no spaces"),
                ));
            } else if self.strategies[..i].contains(s) {
                errs.push(FieldError::new(field, format!("{s:?} is listed twice")));
            }
        }
        errs
    }

    /// The strategy names that select this policy, named `name`: its
    /// resource name, then `spec.strategies` (its own name listed there
    /// again is not repeated).
    pub fn strategy_names<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        std::iter::once(name).chain(
            self.strategies
                .iter()
                .map(String::as_str)
                .filter(move |s| *s != name),
        )
    }
}

/// Which policy each strategy name selects, over `policies` in the order
/// given (a key `K` of the caller's, the resource name, the spec): every
/// name of [`ContactPolicySpec::strategy_names`] to the first policy that
/// answers to it, and an error on each later policy that answers to a name
/// already taken (its resource name as `metadata.name`, an entry of
/// `spec.strategies` by position), naming the policy that holds it. The
/// standalone file checks in document order, the operator in name order.
pub fn strategy_owners<'a, K: Copy>(
    policies: impl IntoIterator<Item = (K, &'a str, &'a ContactPolicySpec)>,
) -> (BTreeMap<&'a str, &'a str>, Vec<(K, FieldError)>) {
    let mut owners: BTreeMap<&'a str, &'a str> = BTreeMap::new();
    let mut errors = Vec::new();
    for (key, name, spec) in policies {
        for s in spec.strategy_names(name) {
            match owners.get(s) {
                Some(owner) => {
                    let field = spec
                        .strategies
                        .iter()
                        .position(|x| x == s)
                        .filter(|_| s != name)
                        .map_or_else(
                            || "metadata.name".to_owned(),
                            |i| format!("spec.strategies[{i}]"),
                        );
                    errors.push((
                        key,
                        FieldError::new(
                            field,
                            format!("strategy {s:?} already selects ContactPolicy {owner:?}; a strategy name selects one policy"),
                        ),
                    ));
                }
                None => {
                    owners.insert(s, name);
                }
            }
        }
    }
    (owners, errors)
}

/// Minutes since midnight of an `HH:MM` time.
pub fn parse_hh_mm(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    // `then`, not `then_some`: `h * 60` overflows for hours past 1092.
    (h < 24 && m < 60 && s.len() == 5).then(|| h * 60 + m)
}
