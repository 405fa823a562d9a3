//! Embedded message store on redb, for standalone mode: one file on disk,
//! ACID transactions, records kept across restarts.
//!
//! All writes go through one writer thread that **group-commits**: it takes
//! every write waiting in its queue (up to [`MAX_BATCH`]), runs them in one
//! redb write transaction and answers each caller only after the commit
//! (fsync) returned. redb allows one write transaction at a time anyway, so
//! this serialises writes exactly as redb would — which is what makes
//! `create` and claims atomic — but pays one fsync per batch instead of one
//! per operation. Reads run on the blocking pool against committed data.
//!
//! Expiry: reads treat records past their TTL as absent; [`purge_expired`]
//! (run it periodically, e.g. every minute) deletes them and their keys.
//!
//! [`purge_expired`]: smsgw_core::messages::MessageStore::purge_expired

use super::{MessageStoreOptions, backend, keep_parked, ms, record_codec};
use async_trait::async_trait;
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table, TableDefinition,
    WriteTransaction,
};
use smsgw_core::messages::{
    ClaimRequest, CreateOutcome, MessageRecord, MessageStatus, MessageStore, MessageStoreError,
    ReceiptOutcome, ReceiptUpdate, SubmitUpdate, unix_now_ms,
};
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::{mpsc, oneshot};

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

/// Most writes committed in one transaction.
pub const MAX_BATCH: usize = 512;
/// Most messages removed by one purge transaction.
const PURGE_BATCH: usize = 10_000;

type Reply = Box<dyn FnOnce(Result<(), MessageStoreError>) + Send>;
type Job = Box<dyn FnOnce(&mut Tables<'_>) -> Reply + Send>;

/// Every table, opened once per group-committed transaction and shared by
/// the batch's jobs (opening and closing a redb table costs a lookup and
/// a root update in the table tree each time).
struct Tables<'t> {
    msgs: Table<'t, &'static str, &'static [u8]>,
    txs: Table<'t, &'static str, &'static str>,
    index: Table<'t, &'static str, &'static str>,
    parked: Table<'t, &'static str, &'static [u8]>,
    parked_at: Table<'t, (u64, &'static str), ()>,
    accepted: Table<'t, (u64, &'static str), ()>,
    created: Table<'t, (u64, &'static str), ()>,
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

struct Inner {
    db: Arc<Database>,
    jobs: Option<mpsc::UnboundedSender<Job>>,
    writer: Option<JoinHandle<()>>,
    opts: MessageStoreOptions,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue ends the writer after its current batch; wait
        // for it so the file is released (a reopen right after works).
        self.jobs.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// Messages in a redb file on local disk (standalone mode).
#[derive(Clone)]
pub struct EmbeddedMessageStore {
    inner: Arc<Inner>,
}

impl EmbeddedMessageStore {
    /// Opens (or creates) the store file at `path`. Use a file of its own
    /// (redb locks it; the user store has another).
    pub fn open(path: &Path, opts: MessageStoreOptions) -> Result<Self, MessageStoreError> {
        let db = Arc::new(Database::create(path).map_err(backend)?);
        let txn = db.begin_write().map_err(backend)?;
        drop(Tables::open(&txn)?);
        txn.commit().map_err(backend)?;
        let (jobs, rx) = mpsc::unbounded_channel();
        let wdb = db.clone();
        let writer = std::thread::Builder::new()
            .name("smsgw-msgstore-writer".into())
            .spawn(move || writer_loop(&wdb, rx))
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

    /// Runs `f` in the next group-committed write transaction; resolves
    /// after the commit. `f` must check before it writes: an `Err` does not
    /// undo its writes (they are committed with the rest of the batch).
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Tables<'_>) -> Result<T, MessageStoreError> + Send + 'static,
    ) -> Result<T, MessageStoreError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |txn| {
            let r = f(txn);
            Box::new(move |commit: Result<(), MessageStoreError>| {
                let _ = tx.send(commit.and(r));
            })
        });
        self.inner
            .jobs
            .as_ref()
            .ok_or_else(|| backend("store closed"))?
            .send(job)
            .map_err(|_| backend("message store writer stopped"))?;
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

fn writer_loop(db: &Database, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let txn = match db.begin_write() {
            Ok(t) => t,
            Err(e) => {
                let e = backend(e);
                // Jobs answer through their reply; run none of them.
                for job in batch.drain(..) {
                    drop(job);
                }
                tracing::error!(error = %e, "message store: cannot begin a write transaction");
                continue;
            }
        };
        let replies: Vec<Reply> = match Tables::open(&txn) {
            Ok(mut tables) => batch.drain(..).map(|job| job(&mut tables)).collect(),
            Err(e) => {
                tracing::error!(error = %e, "message store: cannot open the tables");
                batch.clear();
                continue;
            }
        };
        let commit = txn.commit().map_err(backend);
        for reply in replies {
            reply(commit.clone());
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

#[async_trait]
impl MessageStore for EmbeddedMessageStore {
    async fn create(&self, rec: &MessageRecord) -> Result<CreateOutcome, MessageStoreError> {
        let mut rec = rec.clone();
        rec.status = rec.derive_status();
        let ttl = self.ttl_ms();
        self.write(move |t| {
            let now = unix_now_ms();
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
            put_msg(t, &rec)?;
            Ok(CreateOutcome::Created(rec))
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
        let s = s.clone();
        let ttl = self.ttl_ms();
        self.write(move |t| {
            let now = unix_now_ms();
            let rec = live(get_record(&t.msgs, &s.message_id)?, ttl, now);
            let mut rec = rec.ok_or_else(|| MessageStoreError::NotFound {
                message_id: s.message_id.clone(),
            })?;
            rec.record_submit(&s)?;
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
        })
        .await
    }

    async fn apply_receipt(&self, r: &ReceiptUpdate) -> Result<ReceiptOutcome, MessageStoreError> {
        let r = r.clone();
        let ttl = self.ttl_ms();
        self.write(move |t| {
            let now = unix_now_ms();
            let k = ix_key(&r.link, &r.smsc_message_id);
            let target = t
                .index
                .get(k.as_str())
                .map_err(backend)?
                .and_then(|v| parse_ix(v.value()).map(|(seq, id)| (seq, id.to_owned())));
            if let Some((seq, id)) = target {
                return apply_in(t, &id, seq, &r, ttl, now);
            }
            let keep = match get_parked(&t.parked, &k)? {
                Some(old) => keep_parked(old.receipt, r),
                None => r,
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
        })
        .await
    }

    async fn claim_stale_accepted(
        &self,
        req: &ClaimRequest,
    ) -> Result<Vec<MessageRecord>, MessageStoreError> {
        let req = req.clone();
        let ttl = self.ttl_ms();
        self.write(move |t| {
            let ids: Vec<String> = {
                let mut ids = Vec::new();
                for e in t
                    .accepted
                    .range((0u64, "")..(req.created_before_ms.saturating_add(1), ""))
                    .map_err(backend)?
                {
                    let (k, _) = e.map_err(backend)?;
                    ids.push(k.value().1.to_owned());
                }
                ids
            };
            let until = req.now_ms.saturating_add(ms(req.lease));
            let mut out = Vec::new();
            for id in ids {
                if out.len() >= req.limit {
                    break;
                }
                let Some(mut rec) = live(get_record(&t.msgs, &id)?, ttl, req.now_ms) else {
                    continue;
                };
                if !rec.claimable(req.created_before_ms, req.now_ms) {
                    continue;
                }
                rec.claim(&req.owner, until, req.now_ms);
                put_msg(t, &rec)?;
                out.push(rec);
            }
            Ok(out)
        })
        .await
    }

    async fn purge_expired(&self) -> Result<u64, MessageStoreError> {
        let ttl = self.ttl_ms();
        let parked_ttl = ms(self.inner.opts.parked_ttl);
        let mut total = 0;
        loop {
            let n = self
                .write(move |t| {
                    let now = unix_now_ms();
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
