//! Acceptance: a normalised request checked against the configuration and
//! the sender's permissions, encoded, taken from the rate limits, passed
//! through the contact policy and persisted (idempotent on app id +
//! transaction id). Then it is handed to [`crate::submit`].

use crate::request::{Normalized, validate_destination, validate_source};
use crate::service::{Messaging, Sender};
use crate::text::{encode_for, outbound_from, validate_message};
use crate::trace::RequestTrace;
use crate::views::{accepted_response, segment_view};
use crate::{MessagingError, SendResponse};
use smsgw_core::links::OutboundMessage;
use smsgw_core::messages::{
    CreateOutcome, MessageRecord, MessageStatus, SegmentRecord, Target, unix_now_ms,
};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;

/// Longest wait for rate-limit capacity with `wait_for_capacity`.
const CAPACITY_WAIT: Duration = Duration::from_secs(5);

/// Validated, encoded message, ready to persist and submit.
pub(crate) struct Prepared {
    pub(crate) record: MessageRecord,
    pub(crate) outbound: OutboundMessage,
    /// The app's own rate, from its user record.
    rate: Option<u32>,
    /// The app's quotas, from its user record.
    quotas: smsgw_core::quotas::QuotaLimits,
}

fn new_message_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// A repeated transaction id must repeat the message: the same
/// destination, text and sender (as normalised; the target, campaign and
/// `sent_at` may differ, as a client's retry can). Otherwise it is refused
/// as `transaction_id_reused` (409) instead of answering for the first
/// message as if it were this one. A stored record without its text
/// (written before the text was kept) is compared by its addresses only.
fn reused_for_another(existing: &MessageRecord, new: &MessageRecord) -> Result<(), MessagingError> {
    let differs = [
        ("destination", existing.destination != new.destination),
        (
            "message",
            !existing.text.is_empty() && existing.text != new.text,
        ),
        ("source", existing.source != new.source),
    ]
    .into_iter()
    .filter_map(|(field, differs)| differs.then_some(field))
    .collect::<Vec<_>>();
    if differs.is_empty() {
        return Ok(());
    }
    Err(MessagingError::Conflict {
        code: "transaction_id_reused",
        message: format!(
            "transaction_id {:?} belongs to message {} with another {}; use a new transaction_id for a new message",
            existing.transaction_id,
            existing.message_id,
            differs.join(" and ")
        ),
    })
}

/// Whether the SMSC keeps a schedule for messages to `target`: the link's
/// `scheduleAtSmsc`; for a pool, only when every member says so (else the
/// gateway holds the message, whichever member carries it).
fn schedules_at_smsc(config: &smsgw_crds::Snapshot, target: &Target) -> bool {
    let link = |name: &str| config.links.get(name).is_some_and(|l| l.schedule_at_smsc);
    match target {
        Target::Link(l) => link(l),
        Target::Pool(p) => config
            .pools
            .get(p)
            .is_some_and(|p| !p.members.is_empty() && p.members.iter().all(|m| link(&m.link))),
    }
}

impl Messaging {
    /// Accepts a normalised request and submits it (waiting for the SMSC's
    /// answers with `wait_for_submit`, else in the background).
    pub(crate) async fn accept(
        self: &Arc<Self>,
        sender: Sender<'_>,
        req: &Normalized,
        trace: &RequestTrace,
    ) -> Result<SendResponse, MessagingError> {
        let mut p = self.prepare(sender, req).await?;
        (p.record.traceparent, p.record.tracestate) = trace.carrier();
        // The target named, or the one a route chose.
        let esme = p.record.target.name().to_owned();
        let step = trace.step("smsgw.rate_limit");
        self.limit(&p, &esme, req.wait_for_capacity).await?;
        drop(step);
        let step = req
            .strategy
            .as_ref()
            .and_then(|_| trace.step("smsgw.contact_policy"));
        let reservation = self
            .check_policy(&p.record, req.strategy.as_deref())
            .await?;
        drop(step);
        // Quotas and balance, counted now and given back below if the
        // message is not stored.
        let charged = match self
            .charge_quota(&p.record.app_id, p.quotas, p.record.segments.len())
            .await
        {
            Ok(c) => c,
            Err(e) => {
                self.release(reservation).await;
                return Err(e);
            }
        };
        let step = trace.step("smsgw.persist");
        let created = self.store.create(&p.record).await;
        drop(step);
        let created = match created {
            Ok(c) => c,
            Err(e) => {
                self.release(reservation).await;
                self.refund_quota(charged).await;
                return Err(MessagingError::Internal(e.to_string()));
            }
        };
        let rec = match created {
            CreateOutcome::Existing(existing) => {
                // A repeat counts against no contact policy or quota.
                self.release(reservation).await;
                self.refund_quota(charged).await;
                reused_for_another(&existing, &p.record)?;
                return Ok(SendResponse {
                    link: existing.link.clone(),
                    segment_info: existing.segments.iter().map(segment_view).collect(),
                    duplicate: true,
                    ..accepted_response(&existing, esme)
                });
            }
            CreateOutcome::Created(rec) => rec,
        };
        self.changed(None, &rec);
        self.observe(crate::lifecycle::Lifecycle::Accepted {
            record: &rec,
            strategy: req.strategy.as_deref().unwrap_or(""),
        });
        if rec.options.held_until_ms().is_some() {
            // Held for its schedule: the sweeper submits it once due
            // (`wait_for_submit` cannot wait that long).
            tracing::debug!(message_id = %rec.message_id, due_ms = ?rec.options.schedule_delivery_ms, "held until its schedule");
            return Ok(accepted_response(&rec, esme));
        }
        if req.wait_for_submit {
            let rec = self.submit(rec, p.outbound, Duration::ZERO, false).await?;
            return Ok(SendResponse {
                success: !matches!(rec.status, MessageStatus::Rejected),
                link: rec.link.clone(),
                segment_info: rec.segments.iter().map(segment_view).collect(),
                ..accepted_response(&rec, esme)
            });
        }
        let response = accepted_response(&rec, esme);
        let permit = self
            .submit_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| MessagingError::Internal(e.to_string()))?;
        let this = self.clone();
        let retry = self.submit_retry;
        let task = async move {
            if let Err(e) = this.submit(rec, p.outbound, retry, false).await {
                tracing::warn!(error = ?e, "background submission failed; the sweeper will retry");
            }
            drop(permit);
        };
        if self.submit_task_bytes.load(Ordering::Relaxed) == 0 {
            self.submit_task_bytes
                .store(std::mem::size_of_val(&task) as u64, Ordering::Relaxed);
        }
        tokio::spawn(task);
        Ok(response)
    }

    /// Checks a request against the configuration and the sender's record,
    /// in a fixed order, and builds the record to store.
    async fn prepare(
        &self,
        sender: Sender<'_>,
        req: &Normalized,
    ) -> Result<Prepared, MessagingError> {
        let user = self.user(sender.user_id).await?;
        let config = self.config.load();
        let routed;
        // Addresses checked for routing, kept so they are not checked twice.
        let mut addresses = None;
        let esme = if req.esme.is_empty() {
            // No target named: the routing table chooses from the
            // message's addresses (checked here first, so a route is
            // never matched against a malformed number).
            let destination = validate_destination(&req.destination)?;
            let (ston, snpi) = req.source_ton_npi;
            let source = validate_source(&req.source, ston, snpi)?;
            routed = self.route(
                &config,
                &smsgw_crds::RouteQuery {
                    destination: &destination,
                    source: &source.addr,
                    app_id: sender.app_id,
                },
            )?;
            addresses = Some((destination, source));
            routed.as_str()
        } else {
            req.esme.as_str()
        };
        let target = if config.links.contains_key(esme) {
            Target::Link(esme.to_owned())
        } else if config.pools.contains_key(esme) {
            Target::Pool(esme.to_owned())
        } else {
            return Err(MessagingError::refused(
                "unknown_target",
                format!("esme: no link or pool named {esme:?}"),
            ));
        };
        if !user.allowed_targets.is_empty() && !user.allowed_targets.iter().any(|t| t == esme) {
            return Err(MessagingError::forbidden(
                "target_not_allowed",
                format!("esme: this app may not send through {esme:?}"),
            ));
        }
        let (destination, source) = match addresses {
            Some(checked) => checked,
            None => {
                let (ston, snpi) = req.source_ton_npi;
                (
                    validate_destination(&req.destination)?,
                    validate_source(&req.source, ston, snpi)?,
                )
            }
        };
        if !user.allowed_sender_ids.is_empty() && !user.allowed_sender_ids.contains(&source.addr) {
            return Err(MessagingError::forbidden(
                "sender_not_allowed",
                format!("source: this app may not send as {:?}", source.addr),
            ));
        }
        let callback = req.callback()?;
        let text = validate_message(req.message.as_deref())
            .map_err(|e| MessagingError::refused("invalid_message", e.to_string()))?;
        let now = unix_now_ms();
        let mut options = req.options(now, self.message_ttl)?;
        if options.schedule_delivery_ms.is_some() {
            options.schedule_at_smsc = schedules_at_smsc(&config, &target);
        }
        let encoded = encode_for(&config, esme, text, self.next_reference(), options.flash)?;
        let link_defaults = match &target {
            Target::Link(l) => config.links.get(l),
            Target::Pool(p) => config
                .pools
                .get(p)
                .and_then(|p| p.members.first())
                .and_then(|m| config.links.get(&m.link)),
        }
        .map(|l| (l.defaults.dest_ton, l.defaults.dest_npi))
        .unwrap_or((1, 1));
        let sent_at_ms = req.sent_at_ms()?;
        let transaction_id = req.transaction_id()?;
        // A message held for its schedule has no submitter until it is
        // due: no lease; the sweeper claims it then (as fresh).
        let held = options.held_until_ms().is_some();
        let (dton, dnpi) = req.destination_ton_npi;
        let record = MessageRecord {
            message_id: new_message_id(),
            app_id: sender.app_id.to_owned(),
            transaction_id,
            task_id: req.task_id.clone(),
            source: source.addr.clone(),
            destination: destination.clone(),
            encoding: encoded.encoding.as_str().to_owned(),
            target,
            link: None,
            created_at_ms: now,
            updated_at_ms: now,
            status: MessageStatus::Accepted,
            segments: (0..encoded.segments.len() as u16)
                .map(SegmentRecord::new)
                .collect(),
            // The accepting gateway holds the message while it submits (and
            // retries); a sweeper elsewhere may take it only once this lapses,
            // so the two never both submit it.
            claimed_by: (!held).then(|| "creator".into()),
            claim_until_ms: if held {
                0
            } else {
                now + (self.submit_retry + Duration::from_secs(2)).as_millis() as u64
            },
            text: text.to_owned(),
            ton_npi: [
                source.ton,
                source.npi,
                dton.unwrap_or(link_defaults.0),
                dnpi.unwrap_or(link_defaults.1),
            ],
            // Set by the caller from the request's trace.
            traceparent: None,
            tracestate: None,
            callback,
            sent_at_ms,
            options,
        };
        let outbound = outbound_from(&encoded, &record);
        Ok(Prepared {
            record,
            outbound,
            rate: user.rate,
            quotas: user.quotas,
        })
    }

    /// Takes the message's segments from the app's and the target's rate
    /// limits (one limiter call for all keys); over the limit → refused
    /// with a retry-after, or a wait for capacity when asked.
    async fn limit(&self, p: &Prepared, esme: &str, wait: bool) -> Result<(), MessagingError> {
        use smsgw_core::limits::{RateDecision, RateKey, RateLimit};
        let app = RateKey::app(&p.record.app_id);
        if let Some(rate) = p.rate {
            // Apps registered through the API carry their rate on the record.
            let stale = {
                let mut known = self.app_limits.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now().into_std();
                match known.get(&p.record.app_id, now) {
                    Some(r) if *r == rate => false,
                    _ => {
                        let bytes = 2 * p.record.app_id.len() + 4;
                        known.insert(p.record.app_id.clone(), rate, bytes, now);
                        true
                    }
                }
            };
            if stale {
                let _ = self
                    .limiter
                    .set_limit(&app, Some(RateLimit::new(f64::from(rate), rate)))
                    .await;
            }
        }
        let target = match &p.record.target {
            Target::Link(_) => RateKey::link(esme),
            Target::Pool(_) => RateKey::pool(esme),
        };
        let max_wait = if wait { CAPACITY_WAIT } else { Duration::ZERO };
        match self
            .limiter
            .acquire(&[app, target], p.record.segments.len() as u32, max_wait)
            .await
        {
            Ok(RateDecision::Allowed { wait }) => {
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                Ok(())
            }
            Ok(RateDecision::Limited { retry_after, key }) => Err(MessagingError::RateLimited {
                retry_after_secs: retry_after.as_secs_f64().ceil().max(1.0) as u64,
                scope: format!("{:?} {:?}", key.scope, key.name).to_lowercase(),
            }),
            Ok(_) => Ok(()),
            Err(e) => Err(MessagingError::Unavailable(format!(
                "rate limiter unavailable: {e}"
            ))),
        }
    }

    /// Runs the contact-policy strategy, if the request names one. A refusal
    /// carries the verdict's state as its error code (`daily_cp`, …).
    async fn check_policy(
        &self,
        rec: &MessageRecord,
        strategy: Option<&str>,
    ) -> Result<Option<smsgw_core::policy::Reservation>, MessagingError> {
        use smsgw_core::policy::{PolicyError, PolicyRequest, PolicyState};
        let Some(strategy) = strategy else {
            return Ok(None);
        };
        let Some(engine) = &self.policy else {
            return Err(MessagingError::refused(
                "unknown_strategy",
                format!("strategy: no contact policy {strategy:?} is configured"),
            ));
        };
        let req = PolicyRequest {
            strategy,
            app_id: &rec.app_id,
            source: &rec.source,
            destination: &rec.destination,
            text: &rec.text,
            destination_time_zone: None,
        };
        let started = std::time::Instant::now();
        let decision = engine.check(&req).await;
        self.metrics
            .policy_duration
            .observe(started.elapsed().as_secs_f64());
        let outcome = match &decision {
            Ok(d) if d.verdict.pass => Some("pass"),
            Ok(d) => Some(match d.verdict.state {
                PolicyState::DailyCp => "daily_cp",
                PolicyState::WeeklyCp => "weekly_cp",
                PolicyState::Blacklist => "blacklist",
                PolicyState::Duplicate => "duplicate",
                PolicyState::QuietHours => "quiet_hours",
                _ => "policy_refused",
            }),
            // Unknown strategies and bad input are refusals, not decisions.
            Err(PolicyError::UnknownStrategy(_) | PolicyError::InvalidDestination(_)) => None,
            Err(_) => Some("error"),
        };
        if let Some(outcome) = outcome {
            self.metrics.observe_policy(strategy, outcome);
        }
        match decision {
            Ok(d) if d.verdict.pass => Ok(d.reservation),
            Ok(_) => {
                let code = outcome.unwrap_or("policy_refused");
                tracing::info!(app_id = %rec.app_id, strategy, state = code, "refused by contact policy");
                Err(MessagingError::forbidden(
                    code,
                    format!("contact policy {strategy:?} refused the message: {code}"),
                ))
            }
            Err(PolicyError::UnknownStrategy(s)) => Err(MessagingError::refused(
                "unknown_strategy",
                format!("strategy: no contact policy {s:?} is configured"),
            )),
            Err(PolicyError::InvalidDestination(d)) => Err(MessagingError::refused(
                "invalid_destination",
                format!("destination: {d:?} is not an E.164 number"),
            )),
            Err(e) => Err(MessagingError::Unavailable(format!(
                "contact policy unavailable: {e}"
            ))),
        }
    }

    /// Gives back a contact-policy count taken for a message that was not
    /// stored (or was a repeat).
    async fn release(&self, reservation: Option<smsgw_core::policy::Reservation>) {
        if let (Some(engine), Some(r)) = (&self.policy, reservation)
            && let Err(e) = engine.release(&r).await
        {
            tracing::warn!(error = %e, "contact-policy count not taken back");
        }
    }
}
