//! The embedded outbox: a redb file, one writer thread that commits every
//! queued append and acknowledgement in one durable transaction (group
//! commit: at thousands of events a second one sync carries hundreds), and
//! an in-memory cursor of what this process has handed out. After a
//! restart the cursor starts over, so every unacknowledged event is handed
//! out again.

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use smsgw_core::outbox::{Claimed, Logged, Outbox, OutboxError, OutboxEvent};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};

/// Pending events by sequence number (JSON of [`OutboxEvent`]).
const PENDING: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox_pending");
/// Every event's body by (app, sequence number), for pull.
const LOG: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("outbox_log");
/// (append time ms, sequence number) → app, to drop log entries past the
/// retention.
const LOG_AT: TableDefinition<(u64, u64), &str> = TableDefinition::new("outbox_log_at");
/// `next`: the next sequence number (never reused, so cursors only grow).
const META: TableDefinition<&str, u64> = TableDefinition::new("outbox_meta");

/// Writes committed in one transaction at most.
const MAX_BATCH: usize = 1024;

/// One event to append: app id, body, the event's JSON.
type Row = (String, String, Vec<u8>);

/// How often entries past the retention are removed from the log.
const PURGE_EVERY: Duration = Duration::from_secs(10);

fn backend(e: impl std::fmt::Display) -> OutboxError {
    OutboxError::Backend(e.to_string())
}

enum Job {
    /// (app id, body, event JSON) per event.
    Append(Vec<Row>, oneshot::Sender<Result<(), OutboxError>>),
    Ack(Vec<u64>, oneshot::Sender<Result<(), OutboxError>>),
}

/// The outbox's page cache unless told otherwise: events are appended,
/// read once soon after and acknowledged, so a small cache holds the
/// working set.
pub const DEFAULT_OUTBOX_CACHE: usize = 8 << 20;

/// Events in a redb file on local disk (standalone mode).
pub struct EmbeddedOutbox {
    db: Arc<Database>,
    /// `None` only while dropping.
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// First sequence number not yet handed out by this process.
    cursor: AtomicU64,
    /// Woken after every commit of appends.
    appended: Arc<Notify>,
}

impl EmbeddedOutbox {
    /// Opens (or creates) the outbox file at `path`; its pending events
    /// will be handed out again.
    pub fn open(path: &Path, retention: Duration) -> Result<Self, OutboxError> {
        Self::open_with_cache(path, retention, DEFAULT_OUTBOX_CACHE)
    }

    /// [`EmbeddedOutbox::open`] with a page cache of `cache_bytes` (redb's
    /// read cache and write buffer together).
    pub fn open_with_cache(
        path: &Path,
        retention: Duration,
        cache_bytes: usize,
    ) -> Result<Self, OutboxError> {
        let db = Arc::new(
            Database::builder()
                .set_cache_size(cache_bytes)
                .create(path)
                .map_err(backend)?,
        );
        let txn = db.begin_write().map_err(backend)?;
        let next = {
            let t = txn.open_table(PENDING).map_err(backend)?;
            let pending = t.last().map_err(backend)?.map_or(0, |(k, _)| k.value() + 1);
            txn.open_table(LOG).map_err(backend)?;
            txn.open_table(LOG_AT).map_err(backend)?;
            let m = txn.open_table(META).map_err(backend)?;
            let stored = m.get("next").map_err(backend)?.map_or(0, |v| v.value());
            pending.max(stored)
        };
        txn.commit().map_err(backend)?;
        let (tx, rx) = mpsc::channel::<Job>();
        let appended = Arc::new(Notify::new());
        let (wdb, wnotify) = (db.clone(), appended.clone());
        let handle = std::thread::Builder::new()
            .name("outbox-writer".into())
            .spawn(move || writer(&wdb, next, retention, &rx, &wnotify))
            .map_err(backend)?;
        Ok(Self {
            db,
            jobs: Some(tx),
            writer: Some(handle),
            cursor: AtomicU64::new(0),
            appended,
        })
    }

    /// Events waiting for an acknowledgement.
    pub fn pending(&self) -> Result<u64, OutboxError> {
        use redb::ReadableTableMetadata;
        let txn = self.db.begin_read().map_err(backend)?;
        let t = txn.open_table(PENDING).map_err(backend)?;
        t.len().map_err(backend)
    }

    async fn submit(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<(), OutboxError>>) -> Job,
    ) -> Result<(), OutboxError> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .as_ref()
            .ok_or_else(|| backend("the outbox is closing"))?
            .send(job(tx))
            .map_err(|_| backend("the outbox writer stopped"))?;
        rx.await.map_err(|_| backend("the outbox writer stopped"))?
    }

    fn read_from(&self, from: u64, max: usize) -> Result<Vec<Claimed>, OutboxError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let t = txn.open_table(PENDING).map_err(backend)?;
        let mut out = Vec::new();
        for row in t.range(from..).map_err(backend)? {
            let (k, v) = row.map_err(backend)?;
            let event: OutboxEvent = serde_json::from_slice(v.value()).map_err(backend)?;
            out.push(Claimed {
                position: k.value().to_string(),
                event,
            });
            if out.len() >= max {
                break;
            }
        }
        Ok(out)
    }
}

impl Drop for EmbeddedOutbox {
    /// Stops the writer after what is queued, so the file can be opened
    /// again at once.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// The writer thread: group commits until every sender is gone; drops log
/// entries past `retention` every [`PURGE_EVERY`].
fn writer(
    db: &Database,
    mut next: u64,
    retention: Duration,
    rx: &mpsc::Receiver<Job>,
    appended: &Notify,
) {
    let mut batch: Vec<Job> = Vec::new();
    let mut purged = std::time::Instant::now();
    loop {
        let first = match rx.recv_timeout(PURGE_EVERY) {
            Ok(j) => Some(j),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        if purged.elapsed() >= PURGE_EVERY {
            purged = std::time::Instant::now();
            if let Err(e) = purge(db, retention) {
                tracing::warn!(error = %e, "outbox: cannot drop old log entries");
            }
        }
        let Some(first) = first else { continue };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let start = next;
        let now = smsgw_core::messages::unix_now_ms();
        let result = (|| -> Result<(), OutboxError> {
            let mut txn = db.begin_write().map_err(backend)?;
            txn.set_durability(Durability::Immediate).map_err(backend)?;
            {
                let mut t = txn.open_table(PENDING).map_err(backend)?;
                let mut log = txn.open_table(LOG).map_err(backend)?;
                let mut log_at = txn.open_table(LOG_AT).map_err(backend)?;
                for j in &batch {
                    match j {
                        Job::Append(rows, _) => {
                            for (app, body, e) in rows {
                                t.insert(next, e.as_slice()).map_err(backend)?;
                                log.insert((app.as_str(), next), body.as_bytes())
                                    .map_err(backend)?;
                                log_at.insert((now, next), app.as_str()).map_err(backend)?;
                                next += 1;
                            }
                        }
                        Job::Ack(seqs, _) => {
                            for s in seqs {
                                t.remove(*s).map_err(backend)?;
                            }
                        }
                    }
                }
                let mut m = txn.open_table(META).map_err(backend)?;
                m.insert("next", next).map_err(backend)?;
            }
            txn.commit().map_err(backend)
        })();
        if result.is_err() {
            // Nothing of the batch was written: its numbers are free again.
            next = start;
        }
        let any_append = batch.iter().any(|j| matches!(j, Job::Append(..)));
        for j in batch.drain(..) {
            let (Job::Append(_, reply) | Job::Ack(_, reply)) = j;
            let _ = reply.send(result.clone());
        }
        if any_append && result.is_ok() {
            appended.notify_waiters();
        }
    }
}

/// Removes log entries appended more than `retention` ago.
fn purge(db: &Database, retention: Duration) -> Result<(), OutboxError> {
    let cutoff = smsgw_core::messages::unix_now_ms()
        .saturating_sub(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX));
    let txn = db.begin_write().map_err(backend)?;
    {
        let mut log_at = txn.open_table(LOG_AT).map_err(backend)?;
        let mut log = txn.open_table(LOG).map_err(backend)?;
        let old: Vec<((u64, u64), String)> = log_at
            .range((0, 0)..(cutoff, 0))
            .map_err(backend)?
            .take(100_000)
            .map(|r| r.map(|(k, v)| (k.value(), v.value().to_owned())))
            .collect::<Result<_, _>>()
            .map_err(backend)?;
        for ((at, seq), app) in old {
            log.remove((app.as_str(), seq)).map_err(backend)?;
            log_at.remove((at, seq)).map_err(backend)?;
        }
    }
    txn.commit().map_err(backend)
}

#[async_trait::async_trait]
impl Outbox for EmbeddedOutbox {
    async fn append(&self, events: &[OutboxEvent]) -> Result<(), OutboxError> {
        if events.is_empty() {
            return Ok(());
        }
        let rows = events
            .iter()
            .map(|e| {
                Ok((
                    e.app_id.clone(),
                    e.body.clone(),
                    serde_json::to_vec(e).map_err(backend)?,
                ))
            })
            .collect::<Result<Vec<Row>, OutboxError>>()?;
        self.submit(|r| Job::Append(rows, r)).await
    }

    async fn claim(
        &self,
        _consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Claimed>, OutboxError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register for the wake-up before reading, so an append
            // committed in between is not missed.
            let notified = self.appended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let from = self.cursor.load(Ordering::Acquire);
            let got = self.read_from(from, max)?;
            if let Some(last) = got.last() {
                let last: u64 = last.position.parse().unwrap_or(from);
                self.cursor.store(last + 1, Ordering::Release);
                return Ok(got);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn ack(&self, positions: &[String]) -> Result<(), OutboxError> {
        let seqs = positions
            .iter()
            .map(|p| {
                p.parse::<u64>()
                    .map_err(|_| OutboxError::BadPosition(p.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if seqs.is_empty() {
            return Ok(());
        }
        self.submit(|r| Job::Ack(seqs, r)).await
    }

    async fn read(
        &self,
        app_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Logged>, OutboxError> {
        let from = match after {
            Some(a) => a
                .parse::<u64>()
                .map_err(|_| OutboxError::BadPosition(a.to_owned()))?
                .saturating_add(1),
            None => 0,
        };
        let txn = self.db.begin_read().map_err(backend)?;
        let t = txn.open_table(LOG).map_err(backend)?;
        let mut out = Vec::new();
        for row in t
            .range((app_id, from)..=(app_id, u64::MAX))
            .map_err(backend)?
        {
            let (k, v) = row.map_err(backend)?;
            out.push(Logged {
                cursor: k.value().1.to_string(),
                body: String::from_utf8_lossy(v.value()).into_owned(),
            });
            if out.len() >= limit.max(1) {
                break;
            }
        }
        Ok(out)
    }
}
