//! Submission: a persisted message handed to [`LinkControl::submit`], each
//! segment's outcome recorded; and the sweeper, which submits messages
//! left `accepted` (their pod died, or no link was up).
//!
//! [`LinkControl::submit`]: smsgw_core::links::LinkControl::submit

use crate::MessagingError;
use crate::lifecycle::Lifecycle;
use crate::service::{Messaging, scope_of};
use crate::text::{encode_for, outbound_from};
use crate::trace::SubmitSpan;
use crate::views::submit_reason;
use smsgw_core::links::{OutboundMessage, SegmentResult, Submission, SubmitError};
use smsgw_core::messages::{ClaimRequest, MessageRecord, SubmitStatus, SubmitUpdate, unix_now_ms};
use smsgw_crds::{Snapshot, UnknownPolicy};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Messages the sweeper claims per round; a full batch is followed by
/// another round at once.
pub const SWEEP_BATCH: usize = 256;

/// Longest pause between two sweeps: how late after its due time a
/// message held for its schedule may go out.
pub const SWEEP_EVERY_MAX: Duration = Duration::from_secs(2);

/// Longest pause between two purges of expired records.
const PURGE_EVERY: Duration = Duration::from_secs(10);

/// Why a segment held in doubt is `unknown`.
const IN_DOUBT: &str =
    "in doubt: the gateway submitting it stopped before the SMSC's answer was stored";

/// Whether messages to `target` whose submission is in doubt are held
/// (`unknownPolicy: hold`) rather than resubmitted: a link's own policy;
/// for a pool, hold when any member holds (the message may have gone
/// out on that one).
fn holds_unknown(config: &Snapshot, target: &str) -> bool {
    let hold = |link: &str| {
        config
            .links
            .get(link)
            .is_some_and(|l| l.unknown_policy == UnknownPolicy::Hold)
    };
    match config.pools.get(target) {
        Some(pool) => pool.members.iter().any(|m| hold(&m.link)),
        None => hold(target),
    }
}

impl Messaging {
    /// Submits a persisted message and records each segment's outcome.
    /// While nothing can be sent (every window full, links rebinding) it is
    /// tried again with a growing pause for up to `retry` (zero: once);
    /// then the message stays `accepted` for the sweeper.
    ///
    /// `in_doubt`: the message may have reached the SMSC already (its last
    /// holder stopped in the crash window, [`Claimed::in_doubt`]); every
    /// segment is then marked resubmitted, and a message that cannot be
    /// sent keeps its lease so that the next claimer knows it too.
    ///
    /// [`Claimed::in_doubt`]: smsgw_core::messages::Claimed::in_doubt
    pub(crate) async fn submit(
        &self,
        rec: MessageRecord,
        msg: OutboundMessage,
        retry: Duration,
        in_doubt: bool,
    ) -> Result<MessageRecord, MessagingError> {
        let target = rec.target.name().to_owned();
        let span = SubmitSpan::start(&rec);
        let mut delay = Duration::from_millis(20);
        let deadline = Instant::now() + retry;
        loop {
            match self.links.submit(&target, msg.clone()).await {
                Ok(mut submission) => {
                    if in_doubt {
                        submission.resubmitted = (0..submission.results.len() as u16).collect();
                    }
                    return self.record_submission(rec, submission, span).await;
                }
                Err(SubmitError::Unavailable(reason)) if Instant::now() < deadline => {
                    tracing::debug!(message_id = %rec.message_id, %target, %reason, "not submitted yet; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(500));
                }
                Err(SubmitError::Refused {
                    command_status,
                    reason,
                }) => {
                    // Permanent: the link cannot put this message into a
                    // submit_sm at all, so no retry or sweep can send it.
                    // Every segment is rejected with the status an SMSC
                    // would have given, and the message fails now.
                    tracing::warn!(message_id = %rec.message_id, %target, command_status, %reason, "refused by the link; the message fails");
                    let submission = Submission {
                        link: target,
                        results: rec
                            .segments
                            .iter()
                            .map(|_| SegmentResult::Rejected { command_status })
                            .collect(),
                        resubmitted: Vec::new(),
                    };
                    return self.record_submission(rec, submission, span).await;
                }
                Err(e) => {
                    // Unavailable past the retry period, or a target the
                    // links do not know although the configuration did when
                    // the message was accepted (a change applied between
                    // the two): the message is stored, so it stays
                    // `accepted` for the sweeper rather than failing a
                    // request whose message exists.
                    let reason = e.to_string();
                    tracing::warn!(message_id = %rec.message_id, %target, %reason, "not submitted; left for the sweeper");
                    if let Some(s) = span {
                        s.finish(None, Some(&reason));
                    }
                    // Nothing was sent: give the lease back, so that the
                    // sweeper submits it as fresh rather than as possibly
                    // sent (unless it was in doubt before this attempt).
                    if !in_doubt
                        && let Some(owner) = &rec.claimed_by
                        && let Err(e) = self
                            .store
                            .release_claim(&rec.message_id, owner, rec.claim_until_ms)
                            .await
                    {
                        tracing::warn!(message_id = %rec.message_id, error = %e, "the submission lease of a message not sent could not be given back; the sweeper will resubmit it marked as a possible duplicate");
                    }
                    return Ok(rec);
                }
            }
        }
    }

    /// Records the outcome of each segment of a submission, all in one
    /// store write.
    async fn record_submission(
        &self,
        rec: MessageRecord,
        submission: Submission,
        span: Option<SubmitSpan>,
    ) -> Result<MessageRecord, MessagingError> {
        let before = rec.status;
        let message_id = rec.message_id.clone();
        let mut updates = Vec::with_capacity(submission.results.len());
        let mut segments = Vec::with_capacity(submission.results.len());
        for (seq, result) in submission.results.into_iter().enumerate() {
            let seq = seq as u16;
            let (outcome, id) = match result {
                SegmentResult::Accepted { smsc_message_id } => {
                    (SubmitStatus::Accepted, Some(smsc_message_id))
                }
                SegmentResult::Rejected { command_status } => {
                    (SubmitStatus::Rejected { command_status }, None)
                }
                SegmentResult::Unknown { reason } => (SubmitStatus::Unknown { reason }, None),
                SegmentResult::NotSent { reason } => (
                    SubmitStatus::Unknown {
                        reason: format!("not sent: {reason}"),
                    },
                    None,
                ),
            };
            let error = submit_reason(&outcome);
            let traced = span.as_ref().map(|_| {
                let name = match &outcome {
                    SubmitStatus::Accepted => "accepted",
                    SubmitStatus::Rejected { .. } => "rejected",
                    SubmitStatus::Unknown { .. } | SubmitStatus::Pending => "unknown",
                };
                let mut attrs = Vec::new();
                if let Some(id) = &id {
                    attrs.push(opentelemetry::KeyValue::new(
                        "smpp.smsc_message_id",
                        id.clone(),
                    ));
                }
                if let SubmitStatus::Rejected { command_status } = &outcome {
                    attrs.push(opentelemetry::KeyValue::new(
                        "smpp.command_status",
                        i64::from(*command_status),
                    ));
                }
                if let Some(e) = &error {
                    attrs.push(opentelemetry::KeyValue::new("smsgw.reason", e.clone()));
                }
                (name, attrs)
            });
            updates.push(SubmitUpdate {
                message_id: message_id.clone(),
                seq,
                outcome,
                link: submission.link.clone(),
                smsc_message_id: id.clone(),
                at_ms: unix_now_ms(),
                resubmitted: submission.resubmitted.contains(&seq),
            });
            segments.push((seq, id, error, traced));
        }
        // Receipts that come for these ids before the record and its event
        // are written wait for them (dropped at the return).
        let _recording = self.recording.start(
            &submission.link,
            updates.iter().filter_map(|u| u.smsc_message_id.as_deref()),
        );
        let recorded = self
            .store
            .record_submits(&updates)
            .await
            .map_err(|e| MessagingError::Internal(e.to_string()));
        let latest = match recorded {
            Ok(c) => c.record,
            Err(e) => {
                if let Some(s) = span {
                    s.finish(Some(&submission.link), Some(&e.to_string()));
                }
                return Err(e);
            }
        };
        for (seq, id, error, traced) in segments {
            if let (Some(s), Some((name, attrs))) = (&span, traced) {
                s.segment(seq, name, attrs);
            }
            self.observe(Lifecycle::Submitted {
                record: &latest,
                link: &submission.link,
                segment: seq,
                smsc_message_id: id.as_deref(),
                error,
            });
        }
        if latest
            .segments
            .iter()
            .any(|s| s.submit == SubmitStatus::Accepted)
        {
            self.stats.submitted(&scope_of(&latest));
        }
        if let Some(s) = span {
            s.finish(Some(&submission.link), None);
        }
        self.changed(Some(before), &latest);
        if let Err(e) = self.notify(before, &latest, false).await {
            tracing::warn!(message_id = %latest.message_id, error = %e, "the status event of a submission could not be appended to the outbox");
        }
        Ok(latest)
    }

    /// Claims messages left `accepted` longer than `stale` (their pod died,
    /// or no link was up) and submits them, each once, without retrying.
    /// The claim is atomic in the store, so of several pods sweeping at once
    /// exactly one submits each message. Returns how many were claimed.
    pub async fn sweep(
        &self,
        owner: &str,
        stale: Duration,
        limit: usize,
    ) -> Result<usize, MessagingError> {
        let now = unix_now_ms();
        let claimed = self
            .store
            .claim_stale_accepted(&ClaimRequest {
                owner: owner.to_owned(),
                created_before_ms: now.saturating_sub(stale.as_millis() as u64),
                now_ms: now,
                lease: stale.max(Duration::from_secs(30)),
                limit,
            })
            .await
            .map_err(|e| MessagingError::Internal(e.to_string()))?;
        let n = claimed.len();
        for claim in claimed {
            let in_doubt = claim.in_doubt();
            let rec = claim.record;
            let target = rec.target.name().to_owned();
            let config = self.config.load();
            if in_doubt {
                let hold = holds_unknown(&config, &target);
                let policy = self.metrics.in_doubt(hold);
                tracing::warn!(message_id = %rec.message_id, %target, previous_owner = ?claim.previous_owner, policy, "stale message whose submitter stopped before the SMSC's answer was stored: it may have been sent");
                if hold {
                    let results = rec
                        .segments
                        .iter()
                        .map(|_| SegmentResult::Unknown {
                            reason: IN_DOUBT.to_owned(),
                        })
                        .collect();
                    let submission = Submission {
                        link: target,
                        results,
                        resubmitted: Vec::new(),
                    };
                    self.record_submission(rec, submission, None).await?;
                    continue;
                }
            }
            let encoded = match encode_for(
                &config,
                &target,
                &rec.text,
                self.next_reference(),
                rec.options.flash,
            ) {
                Ok(e) if e.segments.len() == rec.segments.len() => e,
                Ok(_) | Err(_) => {
                    tracing::warn!(message_id = %rec.message_id, %target, "stale message no longer encodes as it did; left for review");
                    continue;
                }
            };
            tracing::info!(message_id = %rec.message_id, %target, "sweeper submitting a stale accepted message");
            let msg = outbound_from(&encoded, &rec);
            self.submit(rec, msg, Duration::ZERO, in_doubt).await?;
        }
        Ok(n)
    }

    /// Every few seconds (a third of `after`, between 200 ms and
    /// [`SWEEP_EVERY_MAX`], so that a scheduled message goes out at most
    /// that long after its due time), submits messages left `accepted`
    /// past `after` and held ones now due as `owner` (this pod's name),
    /// and purges expired records (at most every [`PURGE_EVERY`]); until
    /// `cancel` fires.
    pub async fn run_sweeper(
        self: Arc<Self>,
        owner: String,
        after: Duration,
        cancel: CancellationToken,
    ) {
        let every = (after / 3).clamp(Duration::from_millis(200), SWEEP_EVERY_MAX);
        let mut purged = Instant::now();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = cancel.cancelled() => return,
            }
            match self.sweep(&owner, after, SWEEP_BATCH).await {
                // A full batch: there may be more; go again at once.
                Ok(SWEEP_BATCH) => {
                    tick.reset_immediately();
                    tracing::info!(claimed = SWEEP_BATCH, "sweeper submitted stale messages");
                }
                Ok(0) => {}
                Ok(n) => tracing::info!(claimed = n, "sweeper submitted stale messages"),
                Err(e) => tracing::warn!(error = ?e, "sweep failed"),
            }
            if purged.elapsed() >= PURGE_EVERY.min(every * 3) {
                purged = Instant::now();
                if let Err(e) = self.store.purge_expired().await {
                    tracing::warn!(error = %e, "purging expired messages failed");
                }
            }
        }
    }
}
