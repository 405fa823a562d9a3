//! Per-link gauges read from the links' status at scrape time (see
//! METRICS.md): state, sessions, window occupancy, enquire_link round trip
//! SMSC throttling and stalled sessions. Nothing is updated on the SMPP hot path.

use crate::links::Links;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::Weak;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LinkLabels {
    link: String,
}

/// The collector; holds the links weakly so it never keeps them alive.
#[derive(Debug)]
pub(crate) struct LinkGauges(pub(crate) Weak<Links>);

impl Collector for LinkGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let statuses = self.0.upgrade().map(|l| l.statuses()).unwrap_or_default();
        let gauge = || Family::<LinkLabels, Gauge>::default();
        let (up, bound, total, in_flight, window) = (gauge(), gauge(), gauge(), gauge(), gauge());
        let rtt = Family::<LinkLabels, Gauge<f64, AtomicU64>>::default();
        let (mut throttled, mut stalls, mut stall_unknown, mut resubmitted) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (st, window_per_session) in &statuses {
            let l = LinkLabels {
                link: st.name.clone(),
            };
            up.get_or_create(&l)
                .set(i64::from(st.state == smsgw_smpp::LinkState::Bound));
            bound.get_or_create(&l).set(st.sessions_bound as i64);
            total.get_or_create(&l).set(st.sessions_total as i64);
            in_flight.get_or_create(&l).set(st.in_flight as i64);
            window
                .get_or_create(&l)
                .set((window_per_session * st.sessions_total) as i64);
            if let Some(d) = st.last_enquire_link_rtt {
                rtt.get_or_create(&l).set(d.as_secs_f64());
            }
            let sum =
                |f: fn(&smsgw_smpp::SessionStatus) -> u64| st.sessions.iter().map(f).sum::<u64>();
            throttled.push((l.clone(), sum(|s| s.throttled)));
            stalls.push((l.clone(), sum(|s| s.stalls)));
            stall_unknown.push((l.clone(), sum(|s| s.stall_unknown)));
            resubmitted.push((l, st.resubmitted));
        }
        for (name, help, family) in [
            (
                "link_up",
                "1 while at least one session of the link is bound",
                &up,
            ),
            ("link_sessions_bound", "Sessions bound, by link", &bound),
            ("link_sessions", "Sessions configured, by link", &total),
            (
                "link_in_flight",
                "submit_sm awaiting a response over all sessions (window occupancy), by link",
                &in_flight,
            ),
            (
                "link_window",
                "Window capacity over all configured sessions, by link",
                &window,
            ),
        ] {
            family.encode(encoder.encode_descriptor(name, help, None, family.metric_type())?)?;
        }
        rtt.encode(encoder.encode_descriptor(
            "link_enquire_link_rtt_seconds",
            "Round trip of the last answered enquire_link, by link",
            None,
            rtt.metric_type(),
        )?)?;
        for (name, help, counts) in [
            (
                "link_throttled",
                "submit_sm answered ESME_RTHROTTLED or ESME_RMSGQFUL (then resent), by link",
                throttled,
            ),
            (
                "link_stalls",
                "Sessions closed as stalled (submit_sm response timeouts in a row), by link",
                stalls,
            ),
            (
                "link_stall_unknown",
                "submit_sm still awaiting a response when their session was closed as stalled, by link",
                stall_unknown,
            ),
            (
                "link_resubmitted",
                "Segments submitted again because their session closed before the SMSC answered (unknownPolicy resubmit), by link",
                resubmitted,
            ),
        ] {
            let mut enc = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (labels, n) in counts {
                ConstCounter::new(n).encode(enc.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
