//! The routing table compiled from the snapshot's [`RouteSpec`]s: what a
//! send that omits `esme` is matched against, in order, first match wins.

use crate::spec::{RouteSpec, WEEKDAYS, parse_hh_mm};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use std::collections::BTreeMap;

/// The message facts a route can match on.
#[derive(Clone, Copy, Debug)]
pub struct RouteQuery<'a> {
    /// Destination, E.164 digits without `+`.
    pub destination: &'a str,
    /// Source address (sender id).
    pub source: &'a str,
    /// App id of the sender.
    pub app_id: &'a str,
}

/// The route a message matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteChoice<'a> {
    /// Route (resource) name.
    pub route: &'a str,
    /// Link or pool name.
    pub target: &'a str,
}

#[derive(Debug)]
struct Window {
    start: u16,
    end: u16,
    tz: TimeZone,
    /// Bit `i` set: open on day `i` (0 = Monday); all set when none named.
    days: u8,
}

impl Window {
    fn open(&self, now: Timestamp) -> bool {
        let z = now.to_zoned(self.tz.clone());
        let minute = z.hour() as u16 * 60 + z.minute() as u16;
        let today = z.weekday().to_monday_zero_offset() as u8;
        let yesterday = (today + 6) % 7;
        let on = |day: u8| self.days & (1 << day) != 0;
        match self.start.cmp(&self.end) {
            std::cmp::Ordering::Equal => on(today),
            std::cmp::Ordering::Less => on(today) && self.start <= minute && minute < self.end,
            // Spans midnight: the part after midnight belongs to the day
            // the window opened on.
            std::cmp::Ordering::Greater => {
                (minute >= self.start && on(today)) || (minute < self.end && on(yesterday))
            }
        }
    }
}

#[derive(Debug)]
struct Compiled {
    name: String,
    target: String,
    prefixes: Vec<String>,
    senders: Vec<String>,
    apps: Vec<String>,
    window: Option<Window>,
}

impl Compiled {
    fn matches(&self, q: &RouteQuery<'_>, now: Timestamp) -> bool {
        (self.prefixes.is_empty() || self.prefixes.iter().any(|p| q.destination.starts_with(p)))
            && (self.senders.is_empty() || self.senders.iter().any(|s| s == q.source))
            && (self.apps.is_empty() || self.apps.iter().any(|a| a == q.app_id))
            && self.window.as_ref().is_none_or(|w| w.open(now))
    }
}

/// Routes in the order they are tried (ascending `order`, then name).
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Compiled>,
}

impl RouteTable {
    /// Compiles routes by name. A route whose window cannot be read (the
    /// compile of the snapshot refuses those, so only a hand-built map has
    /// them) is left out rather than matching always.
    pub fn compile(routes: &BTreeMap<String, RouteSpec>) -> RouteTable {
        let mut specs: Vec<(&String, &RouteSpec)> = routes.iter().collect();
        specs.sort_by_key(|(name, spec)| (spec.order, *name));
        let routes = specs
            .into_iter()
            .filter_map(|(name, spec)| {
                let window = match &spec.window {
                    None => None,
                    Some(w) => {
                        let days = if w.days.is_empty() {
                            0x7f
                        } else {
                            w.days.iter().fold(0u8, |acc, d| {
                                let lower = d.to_ascii_lowercase();
                                WEEKDAYS
                                    .iter()
                                    .position(|x| *x == lower)
                                    .map_or(acc, |i| acc | (1 << i))
                            })
                        };
                        Some(Window {
                            start: parse_hh_mm(&w.start)?,
                            end: parse_hh_mm(&w.end)?,
                            tz: TimeZone::get(&w.time_zone).ok()?,
                            days,
                        })
                    }
                };
                Some(Compiled {
                    name: name.clone(),
                    target: spec.target.clone(),
                    prefixes: spec
                        .destination_prefixes
                        .iter()
                        .map(|p| p.trim_start_matches('+').to_owned())
                        .collect(),
                    senders: spec.senders.clone(),
                    apps: spec.apps.clone(),
                    window,
                })
            })
            .collect();
        RouteTable { routes }
    }

    /// Whether the table has no route (every send must name its `esme`).
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The first route that `q` matches at `now`.
    pub fn choose(&self, q: &RouteQuery<'_>, now: Timestamp) -> Option<RouteChoice<'_>> {
        self.routes
            .iter()
            .find(|r| r.matches(q, now))
            .map(|r| RouteChoice {
                route: &r.name,
                target: &r.target,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(yaml: &str) -> RouteTable {
        let routes: BTreeMap<String, RouteSpec> = serde_yaml::from_str(yaml).unwrap();
        for (name, r) in &routes {
            assert!(r.validate().is_empty(), "{name}: {:?}", r.validate());
        }
        RouteTable::compile(&routes)
    }

    fn q<'a>(destination: &'a str, source: &'a str, app_id: &'a str) -> RouteQuery<'a> {
        RouteQuery {
            destination,
            source,
            app_id,
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_lowest_order_that_matches_should_win_and_the_default_route_catch_the_rest() {
        let t = table(
            r#"
default: {order: 1000, target: fallback}
kenya: {order: 10, target: ke-link, destinationPrefixes: ["+254"]}
kenya-bank: {order: 5, target: ke-priority, destinationPrefixes: ["254"], senders: [MYBANK]}
app-a: {order: 20, target: pool-a, apps: [app-a]}
"#,
        );
        let now = ts("2026-12-07T12:00:00Z");
        let pick = |d, s, a| t.choose(&q(d, s, a), now).map(|c| c.target);
        assert_eq!(pick("254712345678", "MYBANK", "x"), Some("ke-priority"));
        assert_eq!(pick("254712345678", "OTHER", "app-a"), Some("ke-link"));
        assert_eq!(pick("4915112345678", "OTHER", "app-a"), Some("pool-a"));
        assert_eq!(pick("4915112345678", "OTHER", "app-b"), Some("fallback"));
        assert_eq!(
            t.choose(&q("4915112345678", "OTHER", "app-b"), now)
                .unwrap()
                .route,
            "default"
        );
    }

    #[test]
    fn equal_orders_should_be_tried_by_name_and_no_match_should_give_none() {
        let t = table(
            r#"
b: {order: 1, target: tb, destinationPrefixes: ["44"]}
a: {order: 1, target: ta, destinationPrefixes: ["4"]}
"#,
        );
        let now = ts("2026-12-07T12:00:00Z");
        assert_eq!(
            t.choose(&q("447700900000", "S", "x"), now).unwrap().target,
            "ta"
        );
        assert!(t.choose(&q("15551234567", "S", "x"), now).is_none());
        assert!(RouteTable::default().is_empty());
    }

    #[test]
    fn a_window_should_follow_its_time_zone_days_and_midnight() {
        let t = table(
            r#"
office: {order: 1, target: day, window: {start: "08:00", end: "18:00", timeZone: Africa/Nairobi, days: [mon, tue, wed, thu, fri]}}
night: {order: 2, target: night, window: {start: "22:00", end: "06:00", days: [fri]}}
"#,
        );
        let at = |s| {
            t.choose(&q("254700000000", "S", "x"), ts(s))
                .map(|c| c.target)
        };
        // Monday 2026-12-07, 05:30 UTC = 08:30 in Nairobi (UTC+3).
        assert_eq!(at("2026-12-07T05:30:00Z"), Some("day"));
        // 04:30 UTC = 07:30 Nairobi: closed.
        assert_eq!(at("2026-12-07T04:30:00Z"), None);
        // 15:00 UTC = 18:00 Nairobi: the end is exclusive.
        assert_eq!(at("2026-12-07T15:00:00Z"), None);
        // Saturday 2026-12-12 10:00 Nairobi: not a listed day.
        assert_eq!(at("2026-12-12T07:00:00Z"), None);
        // Friday 2026-12-11 23:00 UTC, and the small hours of Saturday
        // after it, belong to Friday's night window.
        assert_eq!(at("2026-12-11T23:00:00Z"), Some("night"));
        assert_eq!(at("2026-12-12T05:59:00Z"), Some("night"));
        // Saturday night is not Friday's.
        assert_eq!(at("2026-12-12T23:00:00Z"), None);
    }

    #[test]
    fn bad_route_fields_should_be_named() {
        let r: RouteSpec = serde_yaml::from_str(
            r#"{target: " ", destinationPrefixes: ["12a", ""], window: {start: "25:00", end: "8:00", timeZone: Mars/Olympus, days: [funday]}}"#,
        )
        .unwrap();
        let fields: Vec<String> = r.validate().into_iter().map(|e| e.field).collect();
        for f in [
            "spec.target",
            "spec.destinationPrefixes[0]",
            "spec.destinationPrefixes[1]",
            "spec.window.start",
            "spec.window.end",
            "spec.window.timeZone",
            "spec.window.days[0]",
        ] {
            assert!(fields.iter().any(|x| x == f), "{f} missing in {fields:?}");
        }
        let ok: RouteSpec = serde_yaml::from_str("{target: t}").unwrap();
        assert!(ok.validate().is_empty());
        assert!(ok.is_default());
        assert_eq!(ok.order, 100);
    }
}
