//! `Route`: one row of the routing table that picks a link or pool for a
//! send that names none (`esme` omitted), as Jasmin's MT routes and
//! Kannel's `smsbox-route`/`allowed-prefix` do.

// `#[kube(printcolumn(..), printcolumn(..))]` repeats `type_ = ..` by
// design; clippy reads that as a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use super::contact_policy::parse_hh_mm;
use super::shared::FieldError;
use crate::status::RouteStatus;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Most entries in each of a route's match lists.
pub const MAX_ROUTE_MATCHES: usize = 256;

/// Days a [`RouteWindow`] may name.
pub const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// When a route applies: a time of day range in a time zone, on some days.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteWindow {
    /// Start, `HH:MM` (24-hour clock), inclusive.
    #[schemars(regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub start: String,
    /// End, `HH:MM`, exclusive; before `start` means the window spans
    /// midnight; equal to `start` means the whole day.
    #[schemars(regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub end: String,
    /// IANA time zone of `start`, `end` and `days`. Default `UTC`.
    #[serde(default = "utc")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: String,
    /// Days the window opens on (`mon` … `sun`, the day `start` falls on
    /// for a window spanning midnight). Empty means every day. Default
    /// empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 7))]
    pub days: Vec<String>,
}

fn utc() -> String {
    "UTC".into()
}

/// A routing rule: messages sent without `esme` that match every condition
/// set here go to `target`. Routes are tried by ascending `order`, then by
/// name; the first match wins. A route with no condition is a default
/// route (it matches every message), so give it the highest order.
#[derive(CustomResource, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "smsgw.io",
    version = "v1alpha1",
    kind = "Route",
    namespaced,
    status = "RouteStatus",
    shortname = "smsroute",
    category = "smsgw",
    doc = "A routing rule: sends that omit esme and match its conditions go to its link or pool; tried by order, first match wins.",
    printcolumn(
        name = "Order",
        type_ = "integer",
        json_path = ".spec.order",
        description = "Position in the routing table (lower first)"
    ),
    printcolumn(
        name = "Target",
        type_ = "string",
        json_path = ".spec.target",
        description = "SmppLink or EsmePool the matching messages go to"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the route is in force on every proxy"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteSpec {
    /// Position in the table: lower is tried first; equal orders are tried
    /// by resource name. Default 100.
    #[serde(default = "default_order")]
    #[schemars(range(min = 0, max = 1_000_000))]
    pub order: u32,
    /// Name of the SmppLink or EsmePool that matching messages go to.
    #[schemars(length(min = 1, max = 63))]
    pub target: String,
    /// Destination number prefixes (E.164 digits, a leading `+` is
    /// ignored); the message's destination must start with one. Empty
    /// means any destination. Default empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub destination_prefixes: Vec<String>,
    /// Sender ids (source addresses); the message's source must be one.
    /// Empty means any. Default empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub senders: Vec<String>,
    /// App ids (the `X-App-ID` of the sending app); the sender must be one.
    /// Empty means any app. Default empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub apps: Vec<String>,
    /// When the route applies. Absent means always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<RouteWindow>,
}

fn default_order() -> u32 {
    100
}

impl RouteSpec {
    /// Whether the route has no condition (a default route).
    pub fn is_default(&self) -> bool {
        self.destination_prefixes.is_empty()
            && self.senders.is_empty()
            && self.apps.is_empty()
            && self.window.is_none()
    }

    /// Field-level checks that need no other resource.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if self.target.trim().is_empty() {
            errs.push(FieldError::new("spec.target", "must name a link or pool"));
        }
        for (field, list) in [
            ("spec.destinationPrefixes", &self.destination_prefixes),
            ("spec.senders", &self.senders),
            ("spec.apps", &self.apps),
        ] {
            if list.len() > MAX_ROUTE_MATCHES {
                errs.push(FieldError::new(
                    field,
                    format!("at most {MAX_ROUTE_MATCHES} entries"),
                ));
            }
            for (i, v) in list.iter().enumerate() {
                if v.trim().is_empty() {
                    errs.push(FieldError::new(
                        format!("{field}[{i}]"),
                        "must not be empty",
                    ));
                }
            }
        }
        for (i, p) in self.destination_prefixes.iter().enumerate() {
            let digits = p.strip_prefix('+').unwrap_or(p);
            if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                errs.push(FieldError::new(
                    format!("spec.destinationPrefixes[{i}]"),
                    format!("{p:?} is not a number prefix (1 to 15 digits, optional +)"),
                ));
            }
        }
        if let Some(w) = &self.window {
            for (field, v) in [("spec.window.start", &w.start), ("spec.window.end", &w.end)] {
                if parse_hh_mm(v).is_none() {
                    errs.push(FieldError::new(
                        field,
                        format!("{v:?} is not a time of day (HH:MM)"),
                    ));
                }
            }
            if jiff::tz::TimeZone::get(&w.time_zone).is_err() {
                errs.push(FieldError::new(
                    "spec.window.timeZone",
                    format!("{:?} is not an IANA time zone", w.time_zone),
                ));
            }
            for (i, d) in w.days.iter().enumerate() {
                if !WEEKDAYS.contains(&d.to_ascii_lowercase().as_str()) {
                    errs.push(FieldError::new(
                        format!("spec.window.days[{i}]"),
                        format!("{d:?} is not a day (mon, tue, wed, thu, fri, sat, sun)"),
                    ));
                }
            }
        }
        errs
    }
}
