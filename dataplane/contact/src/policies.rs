//! ContactPolicy specs compiled for checking: parsed time zones, quiet
//! hours in minutes, and the per-message plan (which periods and keys a
//! message touches) that both native engines share.

use arc_swap::ArcSwap;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use sha2::{Digest, Sha256};
use smsgw_core::policy::{PolicyError, PolicyRequest, PolicyState, Reservation, normalize_e164};
use smsgw_crds::{ContactPolicySpec, parse_hh_mm};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// A ContactPolicy that cannot be used as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyConfigError {
    /// `frequency.timeZone` is not an IANA time zone name.
    #[error("policy {policy:?}: unknown time zone {time_zone:?}")]
    UnknownTimeZone {
        /// Policy name.
        policy: String,
        /// The name given.
        time_zone: String,
    },
    /// `quietHours.start` or `.end` is not `HH:MM`.
    #[error("policy {policy:?}: quiet hours {value:?} is not HH:MM")]
    BadQuietHours {
        /// Policy name.
        policy: String,
        /// The value given.
        value: String,
    },
    /// A strategy name of the policy already selects another policy
    /// ([`smsgw_crds::strategy_owners`]); the name keeps selecting that
    /// one.
    #[error("policy {policy:?}: {field}: {reason}")]
    StrategyTaken {
        /// Policy name.
        policy: String,
        /// `metadata.name` or `spec.strategies[i]`.
        field: String,
        /// Which name, and which policy holds it.
        reason: String,
    },
}

/// One policy, ready to check.
#[derive(Clone, Debug)]
pub struct CompiledPolicy {
    /// The policy's (resource) name, whichever of its strategy names a
    /// request used: its counters, dedup keys and reservations are under
    /// it, so every name of one policy counts against the same caps.
    pub name: String,
    /// Messages per destination per calendar day.
    pub daily: Option<u32>,
    /// Messages per destination per ISO week (Monday to Sunday).
    pub weekly: Option<u32>,
    /// Time zone of the calendar periods and, by default, of quiet hours.
    pub time_zone: TimeZone,
    /// Dedup window; `None` means no dedup.
    pub dedup_window: Option<Duration>,
    /// Whether the source is part of the dedup key.
    pub dedup_include_source: bool,
    /// Blacklist names.
    pub blacklists: Vec<String>,
    /// Quiet hours as (start, end) minutes since midnight.
    pub quiet_hours: Option<(u16, u16)>,
    /// Quiet-hours time zones by number prefix (`quietHours.zones`).
    pub quiet_zones: Vec<(String, TimeZone)>,
}

impl CompiledPolicy {
    /// Compiles one spec.
    pub fn compile(name: &str, spec: &ContactPolicySpec) -> Result<Self, PolicyConfigError> {
        let tz_name = spec
            .frequency
            .as_ref()
            .map_or("UTC", |f| f.time_zone.as_str());
        let time_zone = TimeZone::get(tz_name).map_err(|_| PolicyConfigError::UnknownTimeZone {
            policy: name.to_owned(),
            time_zone: tz_name.to_owned(),
        })?;
        let mut quiet_zones = Vec::new();
        for (prefix, zone) in spec.quiet_hours.iter().flat_map(|q| &q.zones) {
            let tz = TimeZone::get(zone).map_err(|_| PolicyConfigError::UnknownTimeZone {
                policy: name.to_owned(),
                time_zone: zone.clone(),
            })?;
            quiet_zones.push((prefix.trim_start_matches('+').to_owned(), tz));
        }
        let quiet_hours = match &spec.quiet_hours {
            None => None,
            Some(q) => {
                let parse = |v: &str| {
                    parse_hh_mm(v).ok_or_else(|| PolicyConfigError::BadQuietHours {
                        policy: name.to_owned(),
                        value: v.to_owned(),
                    })
                };
                Some((parse(&q.start)?, parse(&q.end)?))
            }
        };
        Ok(CompiledPolicy {
            name: name.to_owned(),
            daily: spec.frequency.as_ref().and_then(|f| f.daily),
            weekly: spec.frequency.as_ref().and_then(|f| f.weekly),
            time_zone,
            dedup_window: spec.dedup.as_ref().map(|d| d.window.get()),
            dedup_include_source: spec.dedup.as_ref().is_some_and(|d| d.include_source),
            blacklists: spec.blacklists.clone(),
            quiet_hours,
            quiet_zones,
        })
    }

    /// The zone quiet hours follow for `destination` (E.164 digits):
    /// `destination_tz` when it names a known zone, else the longest
    /// `quietHours.zones` prefix, else the country's zone when it keeps
    /// one, else the policy's zone.
    pub fn quiet_zone(&self, destination: &str, destination_tz: Option<&str>) -> TimeZone {
        destination_tz
            .and_then(|n| TimeZone::get(n).ok())
            .or_else(|| crate::zones::longest_prefix(&self.quiet_zones, destination).cloned())
            .or_else(|| crate::zones::country_zone(destination).cloned())
            .unwrap_or_else(|| self.time_zone.clone())
    }

    /// Whether `now` falls in the quiet hours at `destination` (E.164
    /// digits), in the zone [`Self::quiet_zone`] picks.
    pub fn in_quiet_hours(
        &self,
        now: Timestamp,
        destination: &str,
        destination_tz: Option<&str>,
    ) -> bool {
        let Some((start, end)) = self.quiet_hours else {
            return false;
        };
        let z = now.to_zoned(self.quiet_zone(destination, destination_tz));
        let m = z.hour() as u16 * 60 + z.minute() as u16;
        match start.cmp(&end) {
            std::cmp::Ordering::Less => start <= m && m < end,
            std::cmp::Ordering::Greater => m >= start || m < end,
            std::cmp::Ordering::Equal => false,
        }
    }

    /// What checking `req` at `now` touches, or the refusal decided
    /// without any counter (quiet hours, bad destination).
    pub fn plan(
        &self,
        req: &PolicyRequest<'_>,
        now: Timestamp,
    ) -> Result<Result<Plan, PolicyState>, PolicyError> {
        let destination = normalize_e164(req.destination, None)
            .ok_or_else(|| PolicyError::InvalidDestination(req.destination.to_owned()))?;
        if self.in_quiet_hours(now, &destination, req.destination_time_zone) {
            return Ok(Err(PolicyState::QuietHours));
        }
        let periods = (self.daily.is_some() || self.weekly.is_some())
            .then(|| Periods::at(now, &self.time_zone));
        let dedup = self.dedup_window.map(|w| {
            let mut h = Sha256::new();
            h.update(destination.as_bytes());
            h.update([0]);
            h.update(req.text.as_bytes());
            if self.dedup_include_source {
                h.update([0]);
                h.update(req.source.as_bytes());
            }
            (hex::encode(&h.finalize()[..16]), w)
        });
        Ok(Ok(Plan {
            destination,
            periods,
            dedup,
        }))
    }
}

/// The counters and keys one message touches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Normalised destination.
    pub destination: String,
    /// Calendar periods, when the policy has caps.
    pub periods: Option<Periods>,
    /// Dedup hash and window, when the policy deduplicates.
    pub dedup: Option<(String, Duration)>,
}

impl Plan {
    /// The reservation a passing check under `policy` made.
    pub fn reservation(&self, policy: &CompiledPolicy) -> Option<Reservation> {
        let day = policy
            .daily
            .and(self.periods.as_ref())
            .map(|p| p.day.clone());
        let week = policy
            .weekly
            .and(self.periods.as_ref())
            .map(|p| p.week.clone());
        let dedup = self.dedup.as_ref().map(|(h, _)| h.clone());
        (day.is_some() || week.is_some() || dedup.is_some()).then(|| Reservation {
            strategy: policy.name.clone(),
            destination: self.destination.clone(),
            day,
            week,
            dedup,
        })
    }
}

/// The calendar day and ISO week containing an instant in a time zone,
/// with the instants (Unix ms) at which each ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Periods {
    /// `YYYYMMDD`.
    pub day: String,
    /// End of the day (next local midnight), Unix ms.
    pub day_end_ms: i64,
    /// `YYYYWww` (ISO week-numbering year and week).
    pub week: String,
    /// End of the week (next local Monday 00:00), Unix ms.
    pub week_end_ms: i64,
}

impl Periods {
    /// The periods containing `now` in `tz`.
    pub fn at(now: Timestamp, tz: &TimeZone) -> Periods {
        let z = now.to_zoned(tz.clone());
        let date = z.date();
        let next_midnight = |d: jiff::civil::Date| {
            d.to_zoned(tz.clone())
                .map(|z| z.timestamp().as_millisecond())
                .unwrap_or(now.as_millisecond() + 86_400_000)
        };
        let tomorrow = date.tomorrow().unwrap_or(date);
        let iso = date.iso_week_date();
        let days_left = 7 - i64::from(date.weekday().to_monday_zero_offset());
        let next_monday = date
            .checked_add(jiff::Span::new().days(days_left))
            .unwrap_or(tomorrow);
        Periods {
            day: format!("{:04}{:02}{:02}", date.year(), date.month(), date.day()),
            day_end_ms: next_midnight(tomorrow),
            week: format!("{:04}W{:02}", iso.year(), iso.week()),
            week_end_ms: next_midnight(next_monday),
        }
    }
}

/// The strategies in force, by strategy name: each policy under its
/// resource name and every name of its `spec.strategies`.
#[derive(Clone, Debug, Default)]
pub struct Policies {
    map: HashMap<String, Arc<CompiledPolicy>>,
}

/// Policies shared with the engines and swapped whole on a new snapshot.
pub type SharedPolicies = Arc<ArcSwap<Policies>>;

impl Policies {
    /// Compiles a snapshot's policies, each under every strategy name it
    /// answers to. A policy that does not compile is left out (checks
    /// naming it fail with `UnknownStrategy`) and its error returned; a
    /// strategy name two policies answer to (which a compiled snapshot
    /// never has) selects the first by name, and the other's claim is
    /// returned as an error.
    pub fn compile(
        specs: &BTreeMap<String, ContactPolicySpec>,
    ) -> (Policies, Vec<PolicyConfigError>) {
        let mut compiled = HashMap::new();
        let mut errors = Vec::new();
        for (name, spec) in specs {
            match CompiledPolicy::compile(name, spec) {
                Ok(p) => {
                    compiled.insert(name.as_str(), Arc::new(p));
                }
                Err(e) => errors.push(e),
            }
        }
        let (owners, taken) = smsgw_crds::strategy_owners(
            specs
                .iter()
                .map(|(name, spec)| (name.as_str(), name.as_str(), spec)),
        );
        errors.extend(
            taken
                .into_iter()
                .map(|(policy, e)| PolicyConfigError::StrategyTaken {
                    policy: policy.to_owned(),
                    field: e.field,
                    reason: e.reason,
                }),
        );
        let map = owners
            .into_iter()
            .filter_map(|(strategy, policy)| {
                compiled
                    .get(policy)
                    .map(|p| (strategy.to_owned(), p.clone()))
            })
            .collect();
        (Policies { map }, errors)
    }

    /// Wraps the policies for sharing.
    pub fn shared(self) -> SharedPolicies {
        Arc::new(ArcSwap::from_pointee(self))
    }

    /// A strategy by name.
    pub fn get(&self, name: &str) -> Option<&Arc<CompiledPolicy>> {
        self.map.get(name)
    }

    /// Strategy names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn periods_should_follow_the_policy_time_zone() {
        let paris = TimeZone::get("Europe/Paris").unwrap();
        // 23:30 UTC on Sunday 2026-03-01 is 00:30 Monday 2026-03-02 in Paris.
        let p = Periods::at(ts("2026-03-01T23:30:00Z"), &paris);
        assert_eq!(p.day, "20260302");
        assert_eq!(p.week, "2026W10");
        assert_eq!(p.day_end_ms, ts("2026-03-02T23:00:00Z").as_millisecond());
        assert_eq!(p.week_end_ms, ts("2026-03-08T23:00:00Z").as_millisecond());
        let u = Periods::at(ts("2026-03-01T23:30:00Z"), &TimeZone::UTC);
        assert_eq!(u.day, "20260301");
        assert_eq!(u.week, "2026W09");
        assert_eq!(u.week_end_ms, ts("2026-03-02T00:00:00Z").as_millisecond());
    }

    #[test]
    fn a_day_with_a_dst_change_should_end_at_local_midnight() {
        let paris = TimeZone::get("Europe/Paris").unwrap();
        // 2026-03-29: clocks go forward; that day has 23 hours.
        let p = Periods::at(ts("2026-03-29T10:00:00Z"), &paris);
        assert_eq!(p.day_end_ms, ts("2026-03-29T22:00:00Z").as_millisecond());
    }

    fn spec(yaml: &str) -> ContactPolicySpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn quiet_hours_may_span_midnight_and_follow_the_destination_zone() {
        let p = CompiledPolicy::compile(
            "q",
            &spec("quietHours: {start: '22:00', end: '07:00'}\nfrequency: {daily: 1, timeZone: Europe/Paris}"),
        )
        .unwrap();
        // A North American number has no country zone: the policy's.
        let us = "14155550100";
        assert!(p.in_quiet_hours(ts("2026-06-01T21:30:00Z"), us, None)); // 23:30 Paris
        assert!(!p.in_quiet_hours(ts("2026-06-01T12:00:00Z"), us, None));
        assert!(p.in_quiet_hours(ts("2026-06-01T04:00:00Z"), us, None)); // 06:00 Paris
        // 21:30 UTC is 17:30 in New York: not quiet there.
        assert!(!p.in_quiet_hours(ts("2026-06-01T21:30:00Z"), us, Some("America/New_York")));
        // A Japanese number follows Tokyo: 21:30 UTC is 06:30 there (quiet),
        // 12:00 UTC is 21:00 (not yet).
        assert!(p.in_quiet_hours(ts("2026-06-01T21:30:00Z"), "819012345678", None));
        assert!(!p.in_quiet_hours(ts("2026-06-01T12:00:00Z"), "819012345678", None));
    }

    #[test]
    fn quiet_hour_zone_overrides_should_beat_the_country_table() {
        let p = CompiledPolicy::compile(
            "q",
            &spec(
                "quietHours: {start: '22:00', end: '07:00', zones: {'1415': America/Los_Angeles, '+44': Asia/Tokyo}}",
            ),
        )
        .unwrap();
        // 05:00 UTC: 22:00 in Los Angeles (quiet), 01:00 in UTC (policy zone, quiet).
        let t = ts("2026-06-01T05:00:00Z");
        assert_eq!(
            p.quiet_zone("14155550100", None).iana_name(),
            Some("America/Los_Angeles")
        );
        assert_eq!(p.quiet_zone("12125550100", None).iana_name(), Some("UTC"));
        assert_eq!(
            p.quiet_zone("447700900123", None).iana_name(),
            Some("Asia/Tokyo")
        );
        assert_eq!(
            p.quiet_zone("33612345678", None).iana_name(),
            Some("Europe/Paris")
        );
        assert!(p.in_quiet_hours(t, "14155550100", None));
        // 14:00 UTC: 07:00 in Los Angeles (over), 14:00 UTC (not quiet).
        assert!(!p.in_quiet_hours(ts("2026-06-01T14:00:00Z"), "14155550100", None));
        let bad = CompiledPolicy::compile(
            "q",
            &spec("quietHours: {start: '22:00', end: '07:00', zones: {'1': Nowhere/Land}}"),
        );
        assert!(matches!(
            bad,
            Err(PolicyConfigError::UnknownTimeZone { .. })
        ));
    }

    #[test]
    fn every_strategy_name_should_select_its_policy_and_share_its_counters() {
        let mut specs = BTreeMap::new();
        specs.insert(
            "onbuild-cp1".to_owned(),
            spec("frequency: {daily: 1}\nstrategies: [onbuild_cp1, cp1_build]"),
        );
        specs.insert(
            "zz".to_owned(),
            spec("passAll: true\nstrategies: [health_check, cp1_build]"),
        );
        let (p, errs) = Policies::compile(&specs);
        for s in ["onbuild-cp1", "onbuild_cp1", "cp1_build"] {
            assert_eq!(
                p.get(s).map(|c| c.name.as_str()),
                Some("onbuild-cp1"),
                "{s}"
            );
        }
        assert_eq!(p.get("health_check").map(|c| c.name.as_str()), Some("zz"));
        let hc = p.get("zz").unwrap();
        assert!(hc.daily.is_none() && hc.dedup_window.is_none() && hc.blacklists.is_empty());
        // The later policy's claim on a taken name is refused, not obeyed.
        assert!(
            matches!(&errs[..], [PolicyConfigError::StrategyTaken { policy, field, .. }] if policy == "zz" && field == "spec.strategies[1]"),
            "{errs:?}"
        );
        let mut names: Vec<&str> = p.names().collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "cp1_build",
                "health_check",
                "onbuild-cp1",
                "onbuild_cp1",
                "zz"
            ]
        );
    }

    #[test]
    fn an_unknown_time_zone_should_leave_the_policy_out() {
        let mut specs = BTreeMap::new();
        specs.insert(
            "bad".to_owned(),
            spec("frequency: {daily: 1, timeZone: Mars/Olympus}"),
        );
        specs.insert("good".to_owned(), spec("frequency: {daily: 1}"));
        let (p, errs) = Policies::compile(&specs);
        assert!(p.get("good").is_some());
        assert!(p.get("bad").is_none());
        assert!(matches!(
            errs[..],
            [PolicyConfigError::UnknownTimeZone { .. }]
        ));
    }
}
