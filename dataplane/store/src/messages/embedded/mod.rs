//! Embedded message store on redb, for standalone mode: one file on disk,
//! ACID transactions, records kept across restarts.
//!
//! All writes go through one writer thread that **group-commits**: it takes
//! every write waiting in its queue (up to `MAX_BATCH`), appends them as
//! one frame to a write-ahead log (`wal`: one `write` and one
//! `fdatasync`), applies them in one redb write transaction committed
//! without a sync (`Durability::None`: redb keeps the pages in memory) and
//! answers each caller after both. A batch of receipts alone waits up to
//! `LINGER` for a create or submit outcome to share its sync (those are
//! what clients wait on). redb allows one write transaction at a
//! time anyway, so this serialises writes exactly as redb would — which is
//! what makes `create` and claims atomic. Every [`Checkpoints::every`] (or
//! sooner when the log grows past [`Checkpoints::log_bytes`]) the writer
//! makes redb durable (one commit that writes the pages of all the batches
//! since the last checkpoint, and the last batch number) and starts the
//! log over. On open, the batches logged after the last checkpoint are applied
//! again: each operation is logged with every input it reads (its clock
//! included), so replaying them over the checkpoint gives the same state.
//!
//! Why a log instead of a durable redb commit per batch: such a commit
//! writes every page the batch touched (≈ 19 `pwrite`s for a batch of 7
//! writes at 1,000 messages/s) before its `fdatasync`; the log writes one
//! frame. Reads run on the blocking pool against committed data (redb
//! readers see non-durable commits).
//!
//! Expiry: reads treat records past their TTL as absent; [`purge_expired`]
//! (run it periodically, e.g. every minute) deletes them and their keys.
//!
//! Layout: this module (the store: its queue, reads, and the trait),
//! `writer` (group commit, the log, checkpoints, replay), `tables` (the
//! tables and the pure operations a logged write applies); the log file's
//! frames are `crate::wal`'s (shared with the outbox); a record's bytes
//! are `messages::record_codec`'s, shared with the other stores.
//!
//! [`purge_expired`]: smsgw_core::messages::MessageStore::purge_expired

mod tables;
mod writer;

pub use writer::Checkpoints;

use super::{MessageStoreOptions, backend, ms};
use crate::wal::LogWriter;
use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use smsgw_core::messages::{
    ClaimRequest, Claimed, CreateOutcome, MessageRecord, MessageStore, MessageStoreError,
    ReceiptChange, ReceiptOutcome, ReceiptUpdate, StatusChange, SubmitUpdate, unix_now_ms,
};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use tables::{Done, MSGS, Op, PARKED, PURGE_BATCH, TXS, Tables, WAL_SEQ, get_record, live, tx_key};
use tokio::sync::oneshot;
use writer::{Job, Writer};

struct Inner {
    db: Arc<Database>,
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<JoinHandle<()>>,
    opts: MessageStoreOptions,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue ends the writer after its current batch and a
        // last checkpoint; wait for it so the file is released (a reopen
        // right after works).
        self.jobs.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// Messages in a redb file on local disk (standalone mode), with a
/// write-ahead log next to it (`<file>-wal`).
#[derive(Clone)]
pub struct EmbeddedMessageStore {
    inner: Arc<Inner>,
}

impl EmbeddedMessageStore {
    /// Opens (or creates) the store file at `path` with default
    /// [`Checkpoints`]. Use a file of its own (redb locks it; the user
    /// store has another).
    pub fn open(path: &Path, opts: MessageStoreOptions) -> Result<Self, MessageStoreError> {
        Self::open_with(path, opts, Checkpoints::default())
    }

    /// Opens (or creates) the store file at `path`, applies what its log
    /// holds past the last checkpoint, and starts the writer.
    pub fn open_with(
        path: &Path,
        opts: MessageStoreOptions,
        checkpoints: Checkpoints,
    ) -> Result<Self, MessageStoreError> {
        let db = Arc::new(
            Database::builder()
                .set_cache_size(opts.cache_bytes)
                .create(path)
                .map_err(backend)?,
        );
        let txn = db.begin_write().map_err(backend)?;
        let checkpoint = {
            let t = Tables::open(&txn)?;
            t.meta
                .get(WAL_SEQ)
                .map_err(backend)?
                .map_or(0, |v| v.value())
        };
        txn.commit().map_err(backend)?;
        let (log, frames) =
            LogWriter::open(db.clone(), path, checkpoint, checkpoints, "message store")
                .map_err(backend)?;
        let mut writer = Writer { log };
        writer.replay(frames)?;
        let (jobs, rx) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("smsgw-msgstore-writer".into())
            .spawn(move || writer.run(&rx))
            .map_err(backend)?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                jobs: Some(jobs),
                writer: Some(writer),
                opts,
            }),
        })
    }

    fn send(&self, job: Job) -> Result<(), MessageStoreError> {
        self.inner
            .jobs
            .as_ref()
            .ok_or_else(|| backend("store closed"))?
            .send(job)
            .map_err(|_| backend("message store writer stopped"))
    }

    /// Runs `op` in the next group-committed batch; resolves after it is
    /// logged and applied. `pick` takes the answer's expected variant.
    async fn write<T>(&self, op: Op, pick: fn(Done) -> Option<T>) -> Result<T, MessageStoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::Op(op, tx))?;
        let done = rx
            .await
            .map_err(|_| backend("message store writer stopped"))??;
        pick(done).ok_or_else(|| backend("message store writer: answer of another kind"))
    }

    /// Makes every write so far durable in the redb file itself and
    /// starts the log over (the writer also does this on its own, see
    /// [`Checkpoints`], and when the store is dropped).
    pub async fn checkpoint(&self) -> Result<(), MessageStoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::Checkpoint(tx))?;
        rx.await
            .map_err(|_| backend("message store writer stopped"))?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, MessageStoreError> + Send + 'static,
    ) -> Result<T, MessageStoreError> {
        let db = self.inner.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(backend)?
    }

    fn ttl_ms(&self) -> u64 {
        ms(self.inner.opts.ttl)
    }
}

#[async_trait]
impl MessageStore for EmbeddedMessageStore {
    async fn create(&self, rec: &MessageRecord) -> Result<CreateOutcome, MessageStoreError> {
        let mut rec = rec.clone();
        rec.status = rec.derive_status();
        let op = Op::Create {
            rec: Box::new(rec),
            now: unix_now_ms(),
            ttl: self.ttl_ms(),
        };
        self.write(op, |d| match d {
            Done::Created(o) => Some(o),
            _ => None,
        })
        .await
    }

    async fn get(&self, message_id: &str) -> Result<Option<MessageRecord>, MessageStoreError> {
        let id = message_id.to_owned();
        let ttl = self.ttl_ms();
        self.read(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let t = txn.open_table(MSGS).map_err(backend)?;
            Ok(live(get_record(&t, &id)?, ttl, unix_now_ms()))
        })
        .await
    }

    async fn by_transaction(
        &self,
        app_id: &str,
        transaction_id: &str,
    ) -> Result<Option<MessageRecord>, MessageStoreError> {
        let tk = tx_key(app_id, transaction_id);
        let ttl = self.ttl_ms();
        self.read(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let txs = txn.open_table(TXS).map_err(backend)?;
            let Some(id) = txs.get(tk.as_str()).map_err(backend)? else {
                return Ok(None);
            };
            let t = txn.open_table(MSGS).map_err(backend)?;
            Ok(live(get_record(&t, id.value())?, ttl, unix_now_ms()))
        })
        .await
    }

    async fn record_submit(&self, s: &SubmitUpdate) -> Result<MessageRecord, MessageStoreError> {
        Ok(self.record_submit_change(s).await?.record)
    }

    async fn apply_receipt(&self, r: &ReceiptUpdate) -> Result<ReceiptOutcome, MessageStoreError> {
        Ok(self.apply_receipt_change(r).await?.outcome)
    }

    async fn record_submit_change(
        &self,
        s: &SubmitUpdate,
    ) -> Result<StatusChange, MessageStoreError> {
        self.record_submits(std::slice::from_ref(s)).await
    }

    async fn record_submits(
        &self,
        updates: &[SubmitUpdate],
    ) -> Result<StatusChange, MessageStoreError> {
        let op = Op::Submits {
            updates: updates.to_vec(),
            now: unix_now_ms(),
            ttl: self.ttl_ms(),
        };
        self.write(op, |d| match d {
            Done::Submitted(r) => Some(r),
            _ => None,
        })
        .await
    }

    async fn apply_receipt_change(
        &self,
        r: &ReceiptUpdate,
    ) -> Result<ReceiptChange, MessageStoreError> {
        let op = Op::Receipt {
            r: r.clone(),
            now: unix_now_ms(),
            ttl: self.ttl_ms(),
        };
        self.write(op, |d| match d {
            Done::Receipt(o) => Some(o),
            _ => None,
        })
        .await
    }

    async fn claim_stale_accepted(
        &self,
        req: &ClaimRequest,
    ) -> Result<Vec<Claimed>, MessageStoreError> {
        let op = Op::Claim {
            owner: req.owner.clone(),
            created_before_ms: req.created_before_ms,
            now_ms: req.now_ms,
            lease_ms: ms(req.lease),
            limit: req.limit,
            ttl: self.ttl_ms(),
        };
        self.write(op, |d| match d {
            Done::Claimed(v) => Some(v),
            _ => None,
        })
        .await
    }

    async fn release_claim(
        &self,
        message_id: &str,
        owner: &str,
        until_ms: u64,
    ) -> Result<bool, MessageStoreError> {
        let op = Op::Release {
            message_id: message_id.to_owned(),
            owner: owner.to_owned(),
            until_ms,
            now: unix_now_ms(),
            ttl: self.ttl_ms(),
        };
        self.write(op, |d| match d {
            Done::Released(r) => Some(r),
            _ => None,
        })
        .await
    }

    async fn purge_expired(&self) -> Result<u64, MessageStoreError> {
        let mut total = 0;
        loop {
            let n = self.purge_expired_pass().await?;
            total += n;
            if n < Self::PURGE_BATCH as u64 {
                return Ok(total);
            }
        }
    }
}

impl EmbeddedMessageStore {
    /// Most expired messages one purge pass removes: a pass is one write
    /// of the writer's queue, so other writes wait behind at most this
    /// much work; `purge_expired` runs passes until one removes fewer.
    pub const PURGE_BATCH: usize = PURGE_BATCH;

    /// One purge pass: removes up to [`Self::PURGE_BATCH`] messages past
    /// their TTL (oldest first, with their idempotency keys and index
    /// entries) and the parked receipts past theirs; answers how many
    /// messages it removed. Freed pages are reused by later writes, so the
    /// file stops growing once purges keep up with the traffic.
    pub async fn purge_expired_pass(&self) -> Result<u64, MessageStoreError> {
        let op = Op::Purge {
            now: unix_now_ms(),
            ttl: self.ttl_ms(),
            parked_ttl: ms(self.inner.opts.parked_ttl),
        };
        self.write(op, |d| match d {
            Done::Purged(n) => Some(n),
            _ => None,
        })
        .await
    }

    /// Number of receipts parked now (tests, metrics).
    pub async fn parked_len(&self) -> Result<u64, MessageStoreError> {
        self.read(|db| {
            let txn = db.begin_read().map_err(backend)?;
            txn.open_table(PARKED)
                .map_err(backend)?
                .len()
                .map_err(backend)
        })
        .await
    }
}
