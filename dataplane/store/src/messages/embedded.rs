//! Embedded message store on redb, for standalone mode: one file on disk,
//! ACID transactions, records kept across restarts.
//!
//! All writes go through one writer thread that **group-commits**: it takes
//! every write waiting in its queue (up to [`MAX_BATCH`]), appends them as
//! one frame to a write-ahead log ([`wal`]: one `write` and one
//! `fdatasync`), applies them in one redb write transaction committed
//! without a sync (`Durability::None`: redb keeps the pages in memory) and
//! answers each caller after both. A batch of receipts alone waits up to
//! [`LINGER`] for a create or submit outcome to share its sync (those are
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
//! [`purge_expired`]: smsgw_core::messages::MessageStore::purge_expired
//! [`wal`]: super::wal

use super::wal::{self, Wal};
use super::{MessageStoreOptions, backend, keep_parked, ms, record_codec};
use async_trait::async_trait;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table,
    TableDefinition, WriteTransaction,
};
use smsgw_core::messages::{
    ClaimRequest, CreateOutcome, MessageRecord, MessageStatus, MessageStore, MessageStoreError,
    ReceiptOutcome, ReceiptUpdate, SubmitUpdate, unix_now_ms,
};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// message_id → record ([`record_codec`]: binary, or JSON when written by
/// an earlier version).
const MSGS: TableDefinition<&str, &[u8]> = TableDefinition::new("msg");
/// `app \0 transaction_id` → message_id.
const TXS: TableDefinition<&str, &str> = TableDefinition::new("msg_tx");
/// `link \0 smsc_id` → `seq \0 message_id`.
const INDEX: TableDefinition<&str, &str> = TableDefinition::new("msg_smsc_index");
/// `link \0 smsc_id` → JSON of the [`Parked`] receipt.
const PARKED: TableDefinition<&str, &[u8]> = TableDefinition::new("msg_parked");
/// (parked_at_ms, `link \0 smsc_id`) → (), to expire parked receipts.
const PARKED_AT: TableDefinition<(u64, &str), ()> = TableDefinition::new("msg_parked_at");
/// (created_at_ms, message_id) → () while the message is `accepted`.
const ACCEPTED: TableDefinition<(u64, &str), ()> = TableDefinition::new("msg_accepted");
/// (created_at_ms, message_id) → (), every message, to expire them.
const CREATED: TableDefinition<(u64, &str), ()> = TableDefinition::new("msg_created");
/// [`WAL_SEQ`] → number of the last logged batch applied here.
const META: TableDefinition<&str, u64> = TableDefinition::new("msg_meta");
const WAL_SEQ: &str = "wal_seq";

/// Size the log file is zero-filled to when smaller ([`wal`]: appends
/// inside it do not change the file's size, so their `fdatasync` skips the
/// inode). The file is never cut back, so a busier store's log stays at its
/// high-water mark.
const WAL_PREALLOC: u64 = 4 << 20;

/// How long a batch of receipts (and sweeper work) alone waits for a
/// create or submit outcome to share its log sync with. Each sync is a
/// disk write the creates queue behind (at 1,000 sends/s, three writes per
/// message and small batches made ~1,300 syncs/s that kept the log busy
/// half the time); waiting lets them ride along with the next one instead.
const LINGER: Duration = Duration::from_millis(2);

/// Most writes committed in one transaction.
pub const MAX_BATCH: usize = 512;
/// Most messages removed by one purge transaction.
const PURGE_BATCH: usize = 10_000;

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

/// Every table, opened once per group-committed transaction and shared by
/// the batch's operations (opening and closing a redb table costs a lookup
/// and a root update in the table tree each time).
struct Tables<'t> {
    msgs: Table<'t, &'static str, &'static [u8]>,
    txs: Table<'t, &'static str, &'static str>,
    index: Table<'t, &'static str, &'static str>,
    parked: Table<'t, &'static str, &'static [u8]>,
    parked_at: Table<'t, (u64, &'static str), ()>,
    accepted: Table<'t, (u64, &'static str), ()>,
    created: Table<'t, (u64, &'static str), ()>,
    meta: Table<'t, &'static str, u64>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self, MessageStoreError> {
        Ok(Self {
            msgs: txn.open_table(MSGS).map_err(backend)?,
            txs: txn.open_table(TXS).map_err(backend)?,
            index: txn.open_table(INDEX).map_err(backend)?,
            parked: txn.open_table(PARKED).map_err(backend)?,
            parked_at: txn.open_table(PARKED_AT).map_err(backend)?,
            accepted: txn.open_table(ACCEPTED).map_err(backend)?,
            created: txn.open_table(CREATED).map_err(backend)?,
            meta: txn.open_table(META).map_err(backend)?,
        })
    }
}

/// A receipt waiting for its mapping, and when it was parked.
#[derive(serde::Serialize, serde::Deserialize)]
struct Parked {
    at_ms: u64,
    receipt: ReceiptUpdate,
}

fn get_parked(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    k: &str,
) -> Result<Option<Parked>, MessageStoreError> {
    match t.get(k).map_err(backend)? {
        Some(v) => serde_json::from_slice(v.value()).map(Some).map_err(backend),
        None => Ok(None),
    }
}

fn tx_key(app: &str, txid: &str) -> String {
    format!("{app}\0{txid}")
}
fn ix_key(link: &str, smsc_id: &str) -> String {
    format!("{link}\0{smsc_id}")
}

/// One write, as logged: everything it reads besides the store (the clock,
/// the TTLs) is in it, so applying it again after a crash does the same.
#[derive(serde::Serialize, serde::Deserialize)]
enum Op {
    Create {
        rec: Box<MessageRecord>,
        now: u64,
        ttl: u64,
    },
    Submit {
        s: SubmitUpdate,
        now: u64,
        ttl: u64,
    },
    Receipt {
        r: ReceiptUpdate,
        now: u64,
        ttl: u64,
    },
    Claim {
        owner: String,
        created_before_ms: u64,
        now_ms: u64,
        lease_ms: u64,
        limit: usize,
        ttl: u64,
    },
    Purge {
        now: u64,
        ttl: u64,
        parked_ttl: u64,
    },
}

/// What an [`Op`] answers.
enum Done {
    Created(CreateOutcome),
    Submitted(MessageRecord),
    Receipt(ReceiptOutcome),
    Claimed(Vec<MessageRecord>),
    Purged(u64),
}

type Reply<T> = oneshot::Sender<Result<T, MessageStoreError>>;

enum Job {
    Op(Op, Reply<Done>),
    /// Make everything so far durable in redb and empty the log.
    Checkpoint(Reply<()>),
}

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

/// The log's path: the store file's with `-wal` appended.
fn wal_path(path: &Path) -> PathBuf {
    let mut p = OsString::from(path.as_os_str());
    p.push("-wal");
    PathBuf::from(p)
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
        let db = Arc::new(Database::create(path).map_err(backend)?);
        let txn = db.begin_write().map_err(backend)?;
        let checkpoint = {
            let t = Tables::open(&txn)?;
            t.meta
                .get(WAL_SEQ)
                .map_err(backend)?
                .map_or(0, |v| v.value())
        };
        txn.commit().map_err(backend)?;
        let log = wal_path(path);
        let (wal, frames) = Wal::open(&log, WAL_PREALLOC).map_err(|e| {
            backend(format!(
                "cannot open the write-ahead log {}: {e}",
                log.display()
            ))
        })?;
        let mut writer = Writer {
            db: db.clone(),
            wal,
            next_seq: checkpoint + 1,
            last_checkpoint: Instant::now(),
            dirty: false,
            poisoned: None,
            checkpoints,
        };
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
    /// (a send that asked for the SMSC's answer waits for it, and the next
    /// segment is submitted after it), or a checkpoint. Receipts and the
    /// sweeper's work are answered after the next batch's sync like every
    /// write, but do not get a sync of their own at once.
    fn urgent(&self) -> bool {
        matches!(
            self,
            Job::Op(Op::Create { .. } | Op::Submit { .. }, _) | Job::Checkpoint(_)
        )
    }
}

/// The store's single writer: owns the log and every redb write.
struct Writer {
    db: Arc<Database>,
    wal: Wal,
    /// Number of the next batch logged.
    next_seq: u64,
    last_checkpoint: Instant,
    /// Batches applied since the last checkpoint.
    dirty: bool,
    /// Set when the log or redb failed a write: from then on the log and
    /// redb may disagree, so every write fails until a restart replays.
    poisoned: Option<String>,
    checkpoints: Checkpoints,
}

impl Writer {
    /// Applies the logged batches past the last checkpoint, then
    /// checkpoints.
    fn replay(&mut self, frames: Vec<wal::Frame>) -> Result<(), MessageStoreError> {
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

    fn run(mut self, rx: &mpsc::Receiver<Job>) {
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

impl Op {
    /// Applies this write in the batch's transaction. It must check before
    /// it writes: an `Err` does not undo its writes (they are committed with
    /// the rest of the batch, and replayed the same way).
    fn apply(&self, t: &mut Tables<'_>) -> Result<Done, MessageStoreError> {
        match self {
            Op::Create { rec, now, ttl } => create_in(t, rec, *now, *ttl).map(Done::Created),
            Op::Submit { s, now, ttl } => submit_in(t, s, *now, *ttl).map(Done::Submitted),
            Op::Receipt { r, now, ttl } => receipt_in(t, r, *now, *ttl).map(Done::Receipt),
            Op::Claim {
                owner,
                created_before_ms,
                now_ms,
                lease_ms,
                limit,
                ttl,
            } => claim_in(
                t,
                owner,
                *created_before_ms,
                *now_ms,
                now_ms.saturating_add(*lease_ms),
                *limit,
                *ttl,
            )
            .map(Done::Claimed),
            Op::Purge {
                now,
                ttl,
                parked_ttl,
            } => purge_in(t, *now, *ttl, *parked_ttl).map(Done::Purged),
        }
    }
}

fn get_record(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> Result<Option<MessageRecord>, MessageStoreError> {
    match t.get(id).map_err(backend)? {
        Some(v) => record_codec::decode(v.value()).map(Some),
        None => Ok(None),
    }
}

fn live(rec: Option<MessageRecord>, ttl_ms: u64, now: u64) -> Option<MessageRecord> {
    rec.filter(|r| r.created_at_ms.saturating_add(ttl_ms) > now)
}

fn put_msg(t: &mut Tables<'_>, rec: &MessageRecord) -> Result<(), MessageStoreError> {
    t.msgs
        .insert(
            rec.message_id.as_str(),
            record_codec::encode(rec).as_slice(),
        )
        .map_err(backend)?;
    let k = (rec.created_at_ms, rec.message_id.as_str());
    if rec.status == MessageStatus::Accepted {
        t.accepted.insert(k, ()).map_err(backend)?;
    } else {
        t.accepted.remove(k).map_err(backend)?;
    }
    Ok(())
}

/// Removes a message and every key pointing at it.
fn remove_msg(t: &mut Tables<'_>, rec: &MessageRecord) -> Result<(), MessageStoreError> {
    let id = rec.message_id.as_str();
    t.msgs.remove(id).map_err(backend)?;
    let k = (rec.created_at_ms, id);
    t.accepted.remove(k).map_err(backend)?;
    t.created.remove(k).map_err(backend)?;
    let txs = &mut t.txs;
    let tk = tx_key(&rec.app_id, &rec.transaction_id);
    let owned = txs
        .get(tk.as_str())
        .map_err(backend)?
        .is_some_and(|v| v.value() == id);
    if owned {
        txs.remove(tk.as_str()).map_err(backend)?;
    }
    let ix = &mut t.index;
    if let Some(link) = &rec.link {
        for s in &rec.segments {
            if let Some(sid) = &s.smsc_message_id {
                let k = ix_key(link, sid);
                let ours = ix
                    .get(k.as_str())
                    .map_err(backend)?
                    .is_some_and(|v| parse_ix(v.value()).is_some_and(|(_, m)| m == id));
                if ours {
                    ix.remove(k.as_str()).map_err(backend)?;
                }
            }
        }
    }
    Ok(())
}

fn parse_ix(v: &str) -> Option<(u16, &str)> {
    let (seq, id) = v.split_once('\0')?;
    Some((seq.parse().ok()?, id))
}

/// Applies `r` to segment `seq` of message `id` in the batch's transaction.
fn apply_in(
    t: &mut Tables<'_>,
    id: &str,
    seq: u16,
    r: &ReceiptUpdate,
    ttl_ms: u64,
    now: u64,
) -> Result<ReceiptOutcome, MessageStoreError> {
    let Some(mut rec) = live(get_record(&t.msgs, id)?, ttl_ms, now) else {
        return Ok(ReceiptOutcome::Orphaned);
    };
    if !rec.apply_receipt(seq, r) {
        return Ok(ReceiptOutcome::Duplicate(rec));
    }
    put_msg(t, &rec)?;
    Ok(ReceiptOutcome::Applied(rec))
}

fn create_in(
    t: &mut Tables<'_>,
    rec: &MessageRecord,
    now: u64,
    ttl: u64,
) -> Result<CreateOutcome, MessageStoreError> {
    let tk = tx_key(&rec.app_id, &rec.transaction_id);
    let existing = t
        .txs
        .get(tk.as_str())
        .map_err(backend)?
        .map(|v| v.value().to_owned());
    if let Some(id) = existing {
        match get_record(&t.msgs, &id)? {
            Some(old) if old.created_at_ms.saturating_add(ttl) > now => {
                return Ok(CreateOutcome::Existing(old));
            }
            // Expired but not purged yet: the key is free again.
            Some(old) => remove_msg(t, &old)?,
            None => {}
        }
    }
    if t.msgs
        .get(rec.message_id.as_str())
        .map_err(backend)?
        .is_some()
    {
        return Err(backend(format!(
            "message id {:?} already exists",
            rec.message_id
        )));
    }
    t.txs
        .insert(tk.as_str(), rec.message_id.as_str())
        .map_err(backend)?;
    t.created
        .insert((rec.created_at_ms, rec.message_id.as_str()), ())
        .map_err(backend)?;
    put_msg(t, rec)?;
    Ok(CreateOutcome::Created(rec.clone()))
}

fn submit_in(
    t: &mut Tables<'_>,
    s: &SubmitUpdate,
    now: u64,
    ttl: u64,
) -> Result<MessageRecord, MessageStoreError> {
    let rec = live(get_record(&t.msgs, &s.message_id)?, ttl, now);
    let mut rec = rec.ok_or_else(|| MessageStoreError::NotFound {
        message_id: s.message_id.clone(),
    })?;
    rec.record_submit(s)?;
    put_msg(t, &rec)?;
    let Some(sid) = &s.smsc_message_id else {
        return Ok(rec);
    };
    let k = ix_key(&s.link, sid);
    t.index
        .insert(k.as_str(), format!("{}\0{}", s.seq, s.message_id).as_str())
        .map_err(backend)?;
    let parked = get_parked(&t.parked, &k)?;
    if parked.is_some() {
        t.parked.remove(k.as_str()).map_err(backend)?;
    }
    if let Some(parked) = parked
        && let ReceiptOutcome::Applied(updated) =
            apply_in(t, &s.message_id, s.seq, &parked.receipt, ttl, now)?
    {
        rec = updated;
    }
    Ok(rec)
}

fn receipt_in(
    t: &mut Tables<'_>,
    r: &ReceiptUpdate,
    now: u64,
    ttl: u64,
) -> Result<ReceiptOutcome, MessageStoreError> {
    let k = ix_key(&r.link, &r.smsc_message_id);
    let target = t
        .index
        .get(k.as_str())
        .map_err(backend)?
        .and_then(|v| parse_ix(v.value()).map(|(seq, id)| (seq, id.to_owned())));
    if let Some((seq, id)) = target {
        return apply_in(t, &id, seq, r, ttl, now);
    }
    let keep = match get_parked(&t.parked, &k)? {
        Some(old) => keep_parked(old.receipt, r.clone()),
        None => r.clone(),
    };
    let json = serde_json::to_vec(&Parked {
        at_ms: now,
        receipt: keep,
    })
    .map_err(backend)?;
    t.parked
        .insert(k.as_str(), json.as_slice())
        .map_err(backend)?;
    t.parked_at.insert((now, k.as_str()), ()).map_err(backend)?;
    Ok(ReceiptOutcome::Parked)
}

fn claim_in(
    t: &mut Tables<'_>,
    owner: &str,
    created_before_ms: u64,
    now: u64,
    until: u64,
    limit: usize,
    ttl: u64,
) -> Result<Vec<MessageRecord>, MessageStoreError> {
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for e in t
            .accepted
            .range((0u64, "")..(created_before_ms.saturating_add(1), ""))
            .map_err(backend)?
        {
            let (k, _) = e.map_err(backend)?;
            ids.push(k.value().1.to_owned());
        }
        ids
    };
    let mut out = Vec::new();
    for id in ids {
        if out.len() >= limit {
            break;
        }
        let Some(mut rec) = live(get_record(&t.msgs, &id)?, ttl, now) else {
            continue;
        };
        if !rec.claimable(created_before_ms, now) {
            continue;
        }
        rec.claim(owner, until, now);
        put_msg(t, &rec)?;
        out.push(rec);
    }
    Ok(out)
}

/// Removes up to [`PURGE_BATCH`] expired messages and the parked receipts
/// past their own TTL; answers how many messages it removed.
fn purge_in(
    t: &mut Tables<'_>,
    now: u64,
    ttl: u64,
    parked_ttl: u64,
) -> Result<u64, MessageStoreError> {
    let cutoff = now.saturating_sub(ttl);
    let keys: Vec<(u64, String)> = {
        let mut keys = Vec::new();
        for e in t
            .created
            .range((0u64, "")..(cutoff.saturating_add(1), ""))
            .map_err(backend)?
        {
            let (k, _) = e.map_err(backend)?;
            keys.push((k.value().0, k.value().1.to_owned()));
            if keys.len() >= PURGE_BATCH {
                break;
            }
        }
        keys
    };
    for (at, id) in &keys {
        match get_record(&t.msgs, id)? {
            Some(rec) => remove_msg(t, &rec)?,
            None => {
                t.created.remove((*at, id.as_str())).map_err(backend)?;
            }
        }
    }
    // Parked receipts past their own TTL.
    let pcut = now.saturating_sub(parked_ttl);
    let old: Vec<(u64, String)> = t
        .parked_at
        .range((0u64, "")..(pcut.saturating_add(1), ""))
        .map_err(backend)?
        .take(PURGE_BATCH)
        .map(|e| e.map(|(k, _)| (k.value().0, k.value().1.to_owned())))
        .collect::<Result<_, _>>()
        .map_err(backend)?;
    for (at, k) in &old {
        t.parked_at.remove((*at, k.as_str())).map_err(backend)?;
        // Re-parked later (or taken): a newer time, keep it.
        if get_parked(&t.parked, k)?.is_some_and(|p| p.at_ms == *at) {
            t.parked.remove(k.as_str()).map_err(backend)?;
        }
    }
    Ok(keys.len() as u64)
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
        let op = Op::Submit {
            s: s.clone(),
            now: unix_now_ms(),
            ttl: self.ttl_ms(),
        };
        self.write(op, |d| match d {
            Done::Submitted(r) => Some(r),
            _ => None,
        })
        .await
    }

    async fn apply_receipt(&self, r: &ReceiptUpdate) -> Result<ReceiptOutcome, MessageStoreError> {
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
    ) -> Result<Vec<MessageRecord>, MessageStoreError> {
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

    async fn purge_expired(&self) -> Result<u64, MessageStoreError> {
        let mut total = 0;
        loop {
            let op = Op::Purge {
                now: unix_now_ms(),
                ttl: self.ttl_ms(),
                parked_ttl: ms(self.inner.opts.parked_ttl),
            };
            let n = self
                .write(op, |d| match d {
                    Done::Purged(n) => Some(n),
                    _ => None,
                })
                .await?;
            total += n;
            if n < PURGE_BATCH as u64 {
                return Ok(total);
            }
        }
    }
}

impl EmbeddedMessageStore {
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
