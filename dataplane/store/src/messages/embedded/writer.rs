//! The embedded store's single writer: group commit (every queued write
//! in one logged batch and one redb transaction), the write-ahead log, and
//! checkpoints (a durable redb commit, then an empty log). The operations
//! themselves are [`super::tables`].

use super::tables::{Done, Op, Tables, WAL_SEQ};
use crate::messages::backend;
pub use crate::wal::Checkpoints;
use crate::wal::{self, LogWriter};
use redb::Durability;
use smsgw_core::messages::MessageStoreError;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How long a batch of receipts (and sweeper work) alone waits for a
/// create or submit outcome to share its log sync with. Each sync is a
/// disk write the creates queue behind (at 1,000 sends/s, three writes per
/// message and small batches made ~1,300 syncs/s that kept the log busy
/// half the time); waiting lets them ride along with the next one instead.
const LINGER: Duration = Duration::from_millis(2);

/// Most writes committed in one transaction.
pub const MAX_BATCH: usize = 512;
pub(super) type Reply<T> = oneshot::Sender<Result<T, MessageStoreError>>;

pub(super) enum Job {
    Op(Op, Reply<Done>),
    /// Make everything so far durable in redb and empty the log.
    Checkpoint(Reply<()>),
}

/// Moves every job already queued into `batch` (up to [`MAX_BATCH`]).
fn drain(rx: &mpsc::Receiver<Job>, batch: &mut Vec<Job>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(j) => batch.push(j),
            Err(_) => break,
        }
    }
}

/// A batch with nothing urgent waits up to [`LINGER`] for more jobs, and
/// goes as soon as an urgent one comes (with everything queued by then).
fn linger(rx: &mpsc::Receiver<Job>, batch: &mut Vec<Job>) {
    let until = Instant::now() + LINGER;
    while batch.len() < MAX_BATCH {
        let Ok(j) = rx.recv_timeout(until.saturating_duration_since(Instant::now())) else {
            return;
        };
        let urgent = j.urgent();
        batch.push(j);
        if urgent {
            drain(rx, batch);
            return;
        }
    }
}

impl Job {
    /// Whether a caller may be waiting on this job to answer a client: a
    /// create (a send is answered once it is accepted), a submit outcome
    /// (a send that asked for the SMSC's answer waits for it), or a
    /// checkpoint. Receipts and the
    /// sweeper's work are answered after the next batch's sync like every
    /// write, but do not get a sync of their own at once.
    fn urgent(&self) -> bool {
        matches!(
            self,
            Job::Op(
                Op::Create { .. } | Op::Submit { .. } | Op::Submits { .. },
                _
            ) | Job::Checkpoint(_)
        )
    }
}

/// The store's single writer: owns the log and every redb write.
pub(super) struct Writer {
    pub(super) log: LogWriter,
}

impl Writer {
    /// Applies the logged batches past the last checkpoint, then
    /// checkpoints.
    pub(super) fn replay(&mut self, frames: Vec<wal::Frame>) -> Result<(), MessageStoreError> {
        let n = frames.len();
        for (seq, payload) in frames {
            let ops: Vec<Op> = serde_json::from_slice(&payload)
                .map_err(|e| backend(format!("write-ahead log batch {seq} is unreadable: {e}")))?;
            self.apply(seq, ops.iter())?;
            self.log.replayed(seq);
        }
        self.log.after_replay(n).map_err(backend)
    }

    pub(super) fn run(mut self, rx: &mpsc::Receiver<Job>) {
        let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
        loop {
            let first = if let Some(left) = self.log.until_due() {
                match rx.recv_timeout(left) {
                    Ok(j) => j,
                    Err(RecvTimeoutError::Timeout) => {
                        self.log.checkpoint_if_due();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match rx.recv() {
                    Ok(j) => j,
                    Err(_) => break,
                }
            };
            batch.push(first);
            drain(rx, &mut batch);
            if !batch.iter().any(Job::urgent) {
                linger(rx, &mut batch);
            }
            self.run_batch(&mut batch);
            self.log.checkpoint_if_due();
        }
        self.log.finish();
    }

    /// Runs the queued jobs in order: the operations between two
    /// checkpoint requests form one logged batch.
    fn run_batch(&mut self, batch: &mut Vec<Job>) {
        let mut ops = Vec::new();
        for job in batch.drain(..) {
            match job {
                Job::Op(op, reply) => ops.push((op, reply)),
                Job::Checkpoint(reply) => {
                    self.commit(std::mem::take(&mut ops));
                    let r = self.log.checkpoint().map_err(backend);
                    let _ = reply.send(r);
                }
            }
        }
        self.commit(ops);
    }

    /// Logs `ops` as one batch, applies them, answers each.
    fn commit(&mut self, ops: Vec<(Op, Reply<Done>)>) {
        if ops.is_empty() {
            return;
        }
        let results = self.log_and_apply(ops.iter().map(|(op, _)| op));
        match results {
            Ok(results) => {
                for ((_, reply), r) in ops.into_iter().zip(results) {
                    let _ = reply.send(r);
                }
            }
            Err(e) => {
                for (_, reply) in ops {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    fn log_and_apply<'a>(
        &mut self,
        ops: impl Iterator<Item = &'a Op> + Clone,
    ) -> Result<Vec<Result<Done, MessageStoreError>>, MessageStoreError> {
        if let Some(why) = self.log.poisoned() {
            return Err(backend(why));
        }
        let payload = serde_json::to_vec(&ops.clone().collect::<Vec<_>>()).map_err(backend)?;
        let seq = self.log.log(&payload).map_err(backend)?;
        self.apply(seq, ops)
            .map_err(|e| backend(self.log.poison(format!("message store commit failed: {e}"))))
    }

    /// Applies logged batch `seq` in one redb transaction, committed
    /// without a sync (the log holds it durably).
    fn apply<'a>(
        &self,
        seq: u64,
        ops: impl Iterator<Item = &'a Op>,
    ) -> Result<Vec<Result<Done, MessageStoreError>>, MessageStoreError> {
        let mut txn = self.log.db().begin_write().map_err(backend)?;
        txn.set_durability(Durability::None).map_err(backend)?;
        let results = {
            let mut t = Tables::open(&txn)?;
            let results = ops.map(|op| op.apply(&mut t)).collect();
            t.meta.insert(WAL_SEQ, seq).map_err(backend)?;
            results
        };
        txn.commit().map_err(backend)?;
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smsgw_core::messages::{SubmitStatus, SubmitUpdate};

    fn job(op: Op) -> Job {
        Job::Op(op, tokio::sync::oneshot::channel().0)
    }

    #[test]
    fn submission_outcomes_are_synced_at_once_housekeeping_waits_for_the_batch() {
        let update = SubmitUpdate {
            message_id: "m".into(),
            seq: 0,
            outcome: SubmitStatus::Accepted,
            link: "l".into(),
            smsc_message_id: Some("1".into()),
            at_ms: 0,
            resubmitted: false,
        };
        assert!(
            job(Op::Submits {
                updates: vec![update.clone()],
                now: 0,
                ttl: 1,
            })
            .urgent()
        );
        assert!(
            job(Op::Submit {
                s: update,
                now: 0,
                ttl: 1
            })
            .urgent()
        );
        assert!(
            !job(Op::Purge {
                now: 0,
                ttl: 1,
                parked_ttl: 1
            })
            .urgent()
        );
    }
}
