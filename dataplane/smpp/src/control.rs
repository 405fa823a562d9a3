//! The links in the core's terms: a [`smsgw_core::links::OutboundMessage`]
//! becomes a [`SubmitRequest`], what became of it a
//! [`smsgw_core::links::Submission`], a refusal a
//! [`smsgw_core::links::SubmitError`] (permanent or not), a
//! [`LinkStatus`] a [`smsgw_core::links::LinkView`]; and a [`Registry`]
//! of links and pools is the [`LinkControl`] the API submits through.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use smsgw_core::links::{
    LinkAction, LinkControl, LinkView, OutboundMessage, SegmentResult, SessionView, Submission,
    SubmitError,
};

use crate::{
    Error, Link, LinkState, LinkStatus, Pool, Sar, Segment, SegmentOutcome, SessionRole,
    SubmitRequest, Target,
};

/// The links and pools of one configuration, by name: what the API's
/// [`LinkControl`] sees of this process's SMPP side (views, admin stop /
/// start / restart, submission to a link or pool). Building it from a
/// configuration, and replacing it when that changes, is the caller's.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    /// Links by name.
    pub links: BTreeMap<String, Link>,
    /// Pools by name; their members are among `links`.
    pub pools: BTreeMap<String, Arc<Pool>>,
}

impl Registry {
    /// The link or pool named `name`.
    pub fn target(&self, name: &str) -> Option<Target> {
        if let Some(l) = self.links.get(name) {
            Some(Target::Link(l.clone()))
        } else {
            self.pools.get(name).map(|p| Target::Pool(p.clone()))
        }
    }
}

#[async_trait::async_trait]
impl LinkControl for Registry {
    fn links(&self) -> Vec<LinkView> {
        self.links.values().map(Link::view).collect()
    }

    fn link(&self, name: &str) -> Option<LinkView> {
        self.links.get(name).map(Link::view)
    }

    /// Stops, starts or restarts a link. A suspended link
    /// ([`crate::LinkConfig::start_stopped`]) is left as it is: only its
    /// configuration resumes it.
    async fn control(&self, name: &str, action: LinkAction) -> Option<LinkView> {
        let link = self.links.get(name)?;
        if !link.config().start_stopped {
            match action {
                LinkAction::Stop => link.stop().await,
                LinkAction::Start => link.start(),
                LinkAction::Restart => link.restart().await,
            }
        }
        Some(link.view())
    }

    async fn submit(&self, target: &str, msg: OutboundMessage) -> Result<Submission, SubmitError> {
        self.target(target)
            .ok_or_else(|| SubmitError::UnknownTarget(target.to_owned()))?
            .submit_message(msg)
            .await
    }
}

impl Link {
    /// The link as the API shows it: `suspended` or `stopped` (by an
    /// admin) once its sessions are down.
    pub fn view(&self) -> LinkView {
        self.status()
            .view(!self.is_running(), self.config().start_stopped)
    }
}

impl LinkState {
    /// The state's name in views and logs: `down`, `binding`, `bound`,
    /// `unbinding` or `stalled`.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Down => "down",
            LinkState::Binding => "binding",
            LinkState::Bound => "bound",
            LinkState::Unbinding => "unbinding",
            LinkState::Stalled => "stalled",
        }
    }
}

impl From<OutboundMessage> for SubmitRequest {
    fn from(msg: OutboundMessage) -> Self {
        SubmitRequest {
            data_coding: msg.data_coding,
            esm_class: if msg.udhi { 0x40 } else { 0 },
            registered_delivery: u8::from(msg.registered_delivery),
            priority: msg.priority,
            validity_period: msg
                .validity_period_s
                .map(|s| Duration::from_secs(u64::from(s))),
            schedule_delivery_time: msg
                .schedule_delivery_ms
                .map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
            tag: msg.tag,
            ..SubmitRequest::new(
                msg.source,
                msg.destination,
                msg.segments
                    .into_iter()
                    .map(|s| Segment {
                        payload: s.payload.into(),
                        sar: s.sar.map(|p| Sar {
                            ref_num: p.msg_ref_num,
                            total: p.total_segments,
                            seq: p.segment_seqnum,
                        }),
                        use_message_payload: s.message_payload,
                    })
                    .collect(),
            )
        }
    }
}

impl From<SegmentOutcome> for SegmentResult {
    /// The outcome of the segment's last submission (a resubmitted
    /// segment's is its last copy's; that it was resubmitted is in
    /// [`Submission::resubmitted`]).
    fn from(o: SegmentOutcome) -> Self {
        match o {
            SegmentOutcome::Accepted {
                smsc_message_id, ..
            } => SegmentResult::Accepted {
                smsc_message_id: smsc_message_id.normalized,
            },
            SegmentOutcome::Rejected { command_status } => {
                SegmentResult::Rejected { command_status }
            }
            SegmentOutcome::Unknown { reason, .. } => SegmentResult::Unknown {
                reason: reason.to_string(),
            },
            SegmentOutcome::NotSent { reason } => SegmentResult::NotSent { reason },
            SegmentOutcome::Resubmitted { outcome, .. } => SegmentResult::from(*outcome),
        }
    }
}

impl From<Error> for SubmitError {
    /// A request no SMSC would take is refused for good
    /// ([`SubmitError::Refused`], with its SMPP status); everything else
    /// that kept a message from going out may pass (a link down, a full
    /// window, a pool with nothing up).
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidRequest {
                command_status,
                reason,
            } => SubmitError::Refused {
                command_status,
                reason,
            },
            other => SubmitError::Unavailable(other.to_string()),
        }
    }
}

impl Target {
    /// Submits a message in the core's terms: every segment on one bind,
    /// in order; the link that carried it, each segment's result and which
    /// were resubmitted. A late answer to a segment that timed out comes
    /// back as a [`crate::LinkEvent::LateResponse`] with the message's
    /// [`OutboundMessage::tag`].
    pub async fn submit_message(&self, msg: OutboundMessage) -> Result<Submission, SubmitError> {
        let (link, outcomes) = self.submit_via(SubmitRequest::from(msg)).await?;
        Ok(Submission {
            link,
            resubmitted: outcomes
                .iter()
                .enumerate()
                .filter(|(_, o)| o.is_resubmitted())
                .map(|(i, _)| i as u16)
                .collect(),
            results: outcomes.into_iter().map(SegmentResult::from).collect(),
        })
    }
}

impl LinkStatus {
    /// The link as the API shows it. `stopped` (by an admin) and
    /// `suspended` (by its SmppLink's `spec.suspended`) show once its
    /// sessions are down, suspension first.
    pub fn view(self, stopped: bool, suspended: bool) -> LinkView {
        let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        LinkView {
            state: if suspended && self.state == LinkState::Down {
                "suspended".into()
            } else if stopped && self.state == LinkState::Down {
                "stopped".into()
            } else {
                self.state.as_str().into()
            },
            name: self.name,
            sessions_bound: self.sessions_bound as u32,
            sessions_total: self.sessions_total as u32,
            in_flight: self.in_flight as u32,
            last_enquire_link_rtt_ms: ms(self.last_enquire_link_rtt),
            last_error: self.last_error.as_ref().map(|e| e.message.clone()),
            last_error_at_ms: self
                .last_error
                .as_ref()
                .and_then(|e| e.at.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as u64),
            submit_rate: self.submit_rate,
            receipt_rate: self.receipt_rate,
            sessions: self
                .sessions
                .into_iter()
                .map(|s| SessionView {
                    index: s.index as u32,
                    role: match s.role {
                        SessionRole::Transceiver => "transceiver",
                        SessionRole::Transmitter => "transmitter",
                        SessionRole::Receiver => "receiver",
                    }
                    .into(),
                    state: s.state.as_str().into(),
                    in_flight: s.in_flight as u32,
                    last_enquire_link_rtt_ms: ms(s.last_enquire_link_rtt),
                    pod: None,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ESME_RINVDSTADR, UnknownReason};
    use smsgw_core::links::{Address, OutboundSegment, SarParts};

    #[test]
    fn an_outbound_message_becomes_its_submit_request() {
        let msg = OutboundMessage {
            source: Address::new("SHOP", 5, 0),
            destination: Address::new("4915112345678", 1, 1),
            data_coding: 8,
            udhi: true,
            registered_delivery: true,
            segments: vec![OutboundSegment {
                payload: vec![1, 2],
                sar: Some(SarParts {
                    msg_ref_num: 7,
                    total_segments: 2,
                    segment_seqnum: 1,
                }),
                message_payload: true,
            }],
            priority: 2,
            validity_period_s: Some(60),
            schedule_delivery_ms: Some(1_000),
            tag: Some("m-1".into()),
        };
        let r = SubmitRequest::from(msg);
        assert_eq!(r.source, Address::new("SHOP", 5, 0));
        assert_eq!(r.destination, Address::new("4915112345678", 1, 1));
        assert_eq!(
            (
                r.data_coding,
                r.esm_class,
                r.registered_delivery,
                r.priority
            ),
            (8, 0x40, 1, 2)
        );
        assert_eq!(r.validity_period, Some(Duration::from_secs(60)));
        assert_eq!(
            r.schedule_delivery_time,
            Some(UNIX_EPOCH + Duration::from_millis(1_000))
        );
        assert_eq!(r.tag.as_deref(), Some("m-1"));
        assert_eq!(r.segments[0].payload.as_ref(), &[1, 2]);
        assert_eq!(
            r.segments[0].sar,
            Some(Sar {
                ref_num: 7,
                total: 2,
                seq: 1
            })
        );
        assert!(r.segments[0].use_message_payload);
    }

    #[test]
    fn only_a_request_no_smsc_would_take_is_refused_for_good() {
        let e = SubmitError::from(Error::InvalidRequest {
            command_status: ESME_RINVDSTADR,
            reason: "destination address: too long".into(),
        });
        assert_eq!(
            e,
            SubmitError::Refused {
                command_status: ESME_RINVDSTADR,
                reason: "destination address: too long".into()
            }
        );
        for e in [
            Error::LinkDown { link: "a".into() },
            Error::WindowFull {
                link: "a".into(),
                waited: Duration::from_secs(1),
            },
            Error::NoLinkAvailable { pool: "p".into() },
        ] {
            assert!(matches!(SubmitError::from(e), SubmitError::Unavailable(_)));
        }
    }

    #[test]
    fn a_resubmitted_segment_reports_its_last_copy() {
        let o = SegmentOutcome::Resubmitted {
            first: UnknownReason::ConnectionLost { sequence_number: 3 },
            first_session: 0,
            resubmits: 1,
            outcome: Box::new(SegmentOutcome::Rejected {
                command_status: 0x45,
            }),
        };
        assert_eq!(
            SegmentResult::from(o),
            SegmentResult::Rejected {
                command_status: 0x45
            }
        );
    }
}
