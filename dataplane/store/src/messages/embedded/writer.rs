//! The embedded store's single writer: group commit (every queued write
//! in one logged batch and one redb transaction), the write-ahead log, and
//! checkpoints (a durable redb commit, then an empty log). The operations
//! themselves are [`super::tables`].

use super::tables::{Done, Op, Tables, WAL_SEQ};
use super::wal::{self, Wal};
use crate::messages::backend;
use redb::{Database, Durability};
use smsgw_core::messages::MessageStoreError;
use std::sync::Arc;
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
/// When the embedded store makes redb durable and empties its log.
///
/// A checkpoint holds the writer for one durable redb commit (the pages of
/// every batch since the previous one), so rarer checkpoints delay fewer
/// writes, at the cost of a longer replay after a crash and more memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoints {
    /// At most this long between checkpoints while there are writes
    /// (default 1 s: at 1,000 msg/s a checkpoint then holds the writer
    /// ≈ 4 ms, against 13–28 ms every 5 s, for the same CPU).
    pub every: Duration,
    /// A checkpoint as soon as the log holds this many bytes (default
    /// 32 MiB).
    pub log_bytes: u64,
}

impl Default for Checkpoints {
    fn default() -> Self {
        Self {
            every: Duration::from_secs(1),
            log_bytes: 32 << 20,
        }
    }
}

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
    pub(super) db: Arc<Database>,
    pub(super) wal: Wal,
    /// Number of the next batch logged.
    pub(super) next_seq: u64,
    pub(super) last_checkpoint: Instant,
    /// Batches applied since the last checkpoint.
    pub(super) dirty: bool,
    /// Set when the log or redb failed a write: from then on the log and
    /// redb may disagree, so every write fails until a restart replays.
    pub(super) poisoned: Option<String>,
    pub(super) checkpoints: Checkpoints,
}

impl Writer {
    /// Applies the logged batches past the last checkpoint, then
    /// checkpoints.
    pub(super) fn replay(&mut self, frames: Vec<wal::Frame>) -> Result<(), MessageStoreError> {
        let todo = wal::replayable(frames, self.next_seq - 1);
        let n = todo.len();
        for (seq, payload) in todo {
            let ops: Vec<Op> = serde_json::from_slice(&payload)
                .map_err(|e| backend(format!("write-ahead log batch {seq} is unreadable: {e}")))?;
            self.apply(seq, ops.iter())?;
            self.next_seq = seq + 1;
        }
        if n == 0 {
            // Nothing past the checkpoint: redb is already durable (open
            // just committed), so only the log starts over.
            self.wal.reset();
            return Ok(());
        }
        tracing::info!(
            batches = n,
            "message store: applied the write-ahead log after an unclean stop"
        );
        self.checkpoint()
    }

    pub(super) fn run(mut self, rx: &mpsc::Receiver<Job>) {
        let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
        loop {
            let first = if self.dirty {
                let left = self
                    .checkpoints
                    .every
                    .saturating_sub(self.last_checkpoint.elapsed());
                match rx.recv_timeout(left) {
                    Ok(j) => j,
                    Err(RecvTimeoutError::Timeout) => {
                        self.checkpoint_logged();
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
            if self.dirty
                && (self.last_checkpoint.elapsed() >= self.checkpoints.every
                    || self.wal.len() >= self.checkpoints.log_bytes)
            {
                self.checkpoint_logged();
            }
        }
        if self.dirty {
            self.checkpoint_logged();
        }
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
                    let r = match &self.poisoned {
                        Some(why) => Err(backend(why)),
                        None => self.checkpoint(),
                    };
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
        if let Some(why) = &self.poisoned {
            return Err(backend(why));
        }
        let payload = serde_json::to_vec(&ops.clone().collect::<Vec<_>>()).map_err(backend)?;
        let seq = self.next_seq;
        if let Err(e) = self.wal.append(seq, &payload) {
            return Err(self.poison(format!("write-ahead log append failed: {e}")));
        }
        self.next_seq += 1;
        self.dirty = true;
        self.apply(seq, ops)
            .map_err(|e| self.poison(format!("message store commit failed: {e}")))
    }

    fn poison(&mut self, why: String) -> MessageStoreError {
        tracing::error!(error = %why, "message store: writes stop until a restart");
        self.poisoned = Some(why.clone());
        backend(why)
    }

    /// Applies logged batch `seq` in one redb transaction, committed
    /// without a sync (the log holds it durably).
    fn apply<'a>(
        &self,
        seq: u64,
        ops: impl Iterator<Item = &'a Op>,
    ) -> Result<Vec<Result<Done, MessageStoreError>>, MessageStoreError> {
        let mut txn = self.db.begin_write().map_err(backend)?;
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

    /// One durable redb commit (it persists every non-durable commit
    /// before it, the last batch number included), then an empty log.
    fn checkpoint(&mut self) -> Result<(), MessageStoreError> {
        let started = Instant::now();
        let txn = self.db.begin_write().map_err(backend)?;
        txn.commit().map_err(backend)?;
        tracing::debug!(
            took_ms = started.elapsed().as_secs_f64() * 1e3,
            log_bytes = self.wal.len(),
            "message store: checkpoint"
        );
        self.wal.reset();
        self.dirty = false;
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    /// A checkpoint the writer decided on itself: failures are logged (the
    /// log still holds every batch, so nothing is lost; the next one
    /// retries).
    fn checkpoint_logged(&mut self) {
        if self.poisoned.is_some() {
            return;
        }
        if let Err(e) = self.checkpoint() {
            tracing::error!(error = %e, "message store: checkpoint failed");
            self.last_checkpoint = Instant::now();
        }
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
