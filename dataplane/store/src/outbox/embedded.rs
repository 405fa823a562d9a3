//! The embedded outbox: a redb file, one writer thread that logs every
//! queued append and acknowledgement as one batch of its write-ahead log
//! (group commit: at thousands of events a second one sync carries
//! hundreds) and applies it to redb, checkpointing redb every second; and
//! an in-memory cursor of what this process has handed out. After a
//! restart the cursor starts over, so every unacknowledged event is handed
//! out again.

use crate::messages::Checkpoints;
use crate::wal::{self, LogWriter};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use smsgw_core::outbox::{Claimed, Logged, Outbox, OutboxError, OutboxEvent};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, oneshot};

/// Pending events by sequence number ([`encode_event`]).
const PENDING: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox_pending");
/// Every event's body by (app, sequence number), for pull.
const LOG: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("outbox_log");
/// (append time ms, sequence number) → app, to drop log entries past the
/// retention.
const LOG_AT: TableDefinition<(u64, u64), &str> = TableDefinition::new("outbox_log_at");
/// `next`: the next sequence number (never reused, so cursors only grow);
/// [`WAL_SEQ`]: the number of the last logged batch applied.
const META: TableDefinition<&str, u64> = TableDefinition::new("outbox_meta");
/// [`META`] key of the last logged batch applied.
const WAL_SEQ: &str = "wal_seq";

/// Writes committed in one transaction at most.
const MAX_BATCH: usize = 1024;

/// One event to append: app id, body, the event's bytes ([`encode_event`]).
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
        Self::open_with(path, retention, cache_bytes, Checkpoints::default())
    }

    /// Opens (or creates) the outbox file at `path` with its write-ahead
    /// log next to it (`<file>-wal`), applies what the log holds past the
    /// last checkpoint, and starts the writer.
    pub fn open_with(
        path: &Path,
        retention: Duration,
        cache_bytes: usize,
        checkpoints: Checkpoints,
    ) -> Result<Self, OutboxError> {
        let db = Arc::new(
            Database::builder()
                .set_cache_size(cache_bytes)
                .create(path)
                .map_err(backend)?,
        );
        let txn = db.begin_write().map_err(backend)?;
        let (next, checkpoint) = {
            let t = txn.open_table(PENDING).map_err(backend)?;
            let pending = t.last().map_err(backend)?.map_or(0, |(k, _)| k.value() + 1);
            txn.open_table(LOG).map_err(backend)?;
            txn.open_table(LOG_AT).map_err(backend)?;
            let m = txn.open_table(META).map_err(backend)?;
            let stored = m.get("next").map_err(backend)?.map_or(0, |v| v.value());
            let checkpoint = m.get(WAL_SEQ).map_err(backend)?.map_or(0, |v| v.value());
            (pending.max(stored), checkpoint)
        };
        txn.commit().map_err(backend)?;
        let (log, frames) = LogWriter::open(db.clone(), path, checkpoint, checkpoints, "outbox")
            .map_err(backend)?;
        let mut writer = Writer {
            log,
            next,
            retention,
        };
        writer.replay(frames)?;
        let (tx, rx) = mpsc::channel::<Job>();
        let appended = Arc::new(Notify::new());
        let wnotify = appended.clone();
        let handle = std::thread::Builder::new()
            .name("outbox-writer".into())
            .spawn(move || writer.run(&rx, &wnotify))
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
            let event = decode_event(v.value())?;
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

/// Appends `b` with its length (`u32`, little endian) in front.
fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    // A row is far below 4 GiB (the gateway's bodies are kilobytes).
    out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(b);
}

/// The first `n` bytes of `p`, moving `p` past them.
fn take<'a>(p: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, rest) = (p.get(..n)?, p.get(n..)?);
    *p = rest;
    Some(head)
}

/// A little-endian `u64` from the front of `p`.
fn u64_(p: &mut &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(take(p, 8)?.try_into().ok()?))
}

/// Bytes [`bytes`] wrote, from the front of `p`.
fn read_bytes<'a>(p: &mut &'a [u8]) -> Option<&'a [u8]> {
    let n = u32::from_le_bytes(take(p, 4)?.try_into().ok()?);
    take(p, n as usize)
}

/// A string [`bytes`] wrote, from the front of `p`.
fn read_str(p: &mut &[u8]) -> Option<String> {
    String::from_utf8(read_bytes(p)?.to_vec()).ok()
}

/// First byte of a pending event stored by [`encode_event`]; earlier
/// versions stored JSON, which starts with `{`.
const EVENT_V1: u8 = 1;

/// A pending event's bytes: [`EVENT_V1`], the append time (`u64`), then
/// event id, app id, key, kind, body and the callback's JSON (empty: none)
/// as [`bytes`] — no JSON escaping of the body inside JSON, which cost
/// more than the rest of writing and reading an event.
fn encode_event(e: &OutboxEvent) -> Result<Vec<u8>, OutboxError> {
    let callback = match &e.callback {
        Some(c) => serde_json::to_vec(c).map_err(backend)?,
        None => Vec::new(),
    };
    let mut out = Vec::with_capacity(
        33 + e.event_id.len()
            + e.app_id.len()
            + e.key.len()
            + e.kind.len()
            + e.body.len()
            + callback.len(),
    );
    out.push(EVENT_V1);
    out.extend_from_slice(&e.created_at_ms.to_le_bytes());
    for b in [&e.event_id, &e.app_id, &e.key, &e.kind, &e.body] {
        bytes(&mut out, b.as_bytes());
    }
    bytes(&mut out, &callback);
    Ok(out)
}

/// A pending event from its stored bytes ([`encode_event`]'s, or JSON).
fn decode_event(b: &[u8]) -> Result<OutboxEvent, OutboxError> {
    let Some((&EVENT_V1, mut p)) = b.split_first() else {
        return serde_json::from_slice(b).map_err(backend);
    };
    let p = &mut p;
    (|| {
        let created_at_ms = u64_(p)?;
        let (event_id, app_id, key, kind, body) = (
            read_str(p)?,
            read_str(p)?,
            read_str(p)?,
            read_str(p)?,
            read_str(p)?,
        );
        let callback = match read_bytes(p)? {
            [] => None,
            json => Some(serde_json::from_slice(json).ok()?),
        };
        p.is_empty().then_some(OutboxEvent {
            event_id,
            app_id,
            key,
            kind,
            callback,
            body,
            created_at_ms,
        })
    })()
    .ok_or_else(|| backend("a pending event is unreadable"))
}

/// One logged batch's payload (little endian): the append time (Unix
/// ms, `u64`), then per operation a tag — `1` append: sequence number
/// (`u64`), app id, body and event ([`encode_event`]), each as
/// [`bytes`]; `2` acknowledgement: sequence number (`u64`).
fn encode_batch(batch: &[Job], mut next: u64, now: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        8 + batch
            .iter()
            .map(|j| match j {
                Job::Append(rows, _) => rows
                    .iter()
                    .map(|(a, b, e)| 21 + a.len() + b.len() + e.len())
                    .sum(),
                Job::Ack(seqs, _) => 9 * seqs.len(),
            })
            .sum::<usize>(),
    );
    out.extend_from_slice(&now.to_le_bytes());
    for j in batch {
        match j {
            Job::Append(rows, _) => {
                for (app, body, e) in rows {
                    out.push(1);
                    out.extend_from_slice(&next.to_le_bytes());
                    bytes(&mut out, app.as_bytes());
                    bytes(&mut out, body.as_bytes());
                    bytes(&mut out, e);
                    next += 1;
                }
            }
            Job::Ack(seqs, _) => {
                for s in seqs {
                    out.push(2);
                    out.extend_from_slice(&s.to_le_bytes());
                }
            }
        }
    }
    out
}

/// One operation of a logged batch, borrowed from its payload.
#[derive(Debug, PartialEq)]
enum LogOp<'a> {
    Append {
        seq: u64,
        app: &'a str,
        body: &'a [u8],
        event: &'a [u8],
    },
    Ack(u64),
}

/// The append time and operations of a payload [`encode_batch`] wrote;
/// `None` if it does not read whole.
fn decode_batch(p: &[u8]) -> Option<(u64, Vec<LogOp<'_>>)> {
    let mut p = p;
    let now = u64_(&mut p)?;
    let mut ops = Vec::new();
    while let Some((&tag, rest)) = p.split_first() {
        p = rest;
        ops.push(match tag {
            1 => LogOp::Append {
                seq: u64_(&mut p)?,
                app: std::str::from_utf8(read_bytes(&mut p)?).ok()?,
                body: read_bytes(&mut p)?,
                event: read_bytes(&mut p)?,
            },
            2 => LogOp::Ack(u64_(&mut p)?),
            _ => return None,
        });
    }
    Some((now, ops))
}

/// The outbox's single writer: group commit through the write-ahead log
/// ([`LogWriter`]), each batch then applied to redb without a sync, and
/// checkpoints — as the embedded message store does. A durable redb commit
/// per batch cost the gateway a tenth of its CPU at 15,000 msg/s (every
/// touched page written and synced each time).
struct Writer {
    log: LogWriter,
    /// Next event sequence number.
    next: u64,
    retention: Duration,
}

impl Writer {
    /// Applies the logged batches past the last checkpoint, then
    /// checkpoints.
    fn replay(&mut self, frames: Vec<wal::Frame>) -> Result<(), OutboxError> {
        let n = frames.len();
        for (seq, payload) in frames {
            self.apply(seq, &payload)?;
            self.log.replayed(seq);
        }
        self.log.after_replay(n).map_err(backend)
    }

    /// Group commits until every sender is gone (then a last checkpoint);
    /// drops log entries past the retention every [`PURGE_EVERY`].
    fn run(mut self, rx: &mpsc::Receiver<Job>, appended: &Notify) {
        let mut batch: Vec<Job> = Vec::new();
        let mut purged = Instant::now();
        loop {
            let wait = self
                .log
                .until_due()
                .map_or(PURGE_EVERY, |d| d.min(PURGE_EVERY));
            let first = match rx.recv_timeout(wait) {
                Ok(j) => Some(j),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            if purged.elapsed() >= PURGE_EVERY && self.log.poisoned().is_none() {
                purged = Instant::now();
                match purge(self.log.db(), self.retention) {
                    // Durable at the next checkpoint; lost with a crash
                    // before it, it is done again.
                    Ok(()) => self.log.touched(),
                    Err(e) => tracing::warn!(error = %e, "outbox: cannot drop old log entries"),
                }
            }
            if let Some(first) = first {
                batch.push(first);
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(j) => batch.push(j),
                        Err(_) => break,
                    }
                }
                let result = self.commit(&batch);
                let any_append = batch.iter().any(|j| matches!(j, Job::Append(..)));
                for j in batch.drain(..) {
                    let (Job::Append(_, reply) | Job::Ack(_, reply)) = j;
                    let _ = reply.send(result.clone());
                }
                if any_append && result.is_ok() {
                    appended.notify_waiters();
                }
            }
            self.log.checkpoint_if_due();
        }
        self.log.finish();
    }

    /// Logs `batch` (its appends numbered from `next`), then applies it.
    fn commit(&mut self, batch: &[Job]) -> Result<(), OutboxError> {
        let payload = encode_batch(batch, self.next, smsgw_core::messages::unix_now_ms());
        let seq = self.log.log(&payload).map_err(backend)?;
        self.apply(seq, &payload)
            .map_err(|e| backend(self.log.poison(format!("outbox commit failed: {e}"))))
    }

    /// Applies logged batch `seq` in one redb transaction, committed
    /// without a sync (the log holds it durably). Applying a batch again
    /// changes nothing more (an append overwrites itself, an
    /// acknowledgement of an absent event is none).
    fn apply(&mut self, seq: u64, payload: &[u8]) -> Result<(), OutboxError> {
        let (now, ops) = decode_batch(payload)
            .ok_or_else(|| backend(format!("write-ahead log batch {seq} is unreadable")))?;
        let mut txn = self.log.db().begin_write().map_err(backend)?;
        txn.set_durability(Durability::None).map_err(backend)?;
        let mut next = self.next;
        {
            let mut t = txn.open_table(PENDING).map_err(backend)?;
            let mut log = txn.open_table(LOG).map_err(backend)?;
            let mut log_at = txn.open_table(LOG_AT).map_err(backend)?;
            for op in ops {
                match op {
                    LogOp::Append {
                        seq,
                        app,
                        body,
                        event,
                    } => {
                        t.insert(seq, event).map_err(backend)?;
                        log.insert((app, seq), body).map_err(backend)?;
                        log_at.insert((now, seq), app).map_err(backend)?;
                        next = next.max(seq + 1);
                    }
                    LogOp::Ack(s) => {
                        t.remove(s).map_err(backend)?;
                    }
                }
            }
            let mut m = txn.open_table(META).map_err(backend)?;
            m.insert("next", next).map_err(backend)?;
            m.insert(WAL_SEQ, seq).map_err(backend)?;
        }
        txn.commit().map_err(backend)?;
        self.next = next;
        Ok(())
    }
}

/// Removes log entries appended more than `retention` ago.
fn purge(db: &Database, retention: Duration) -> Result<(), OutboxError> {
    let cutoff = smsgw_core::messages::unix_now_ms()
        .saturating_sub(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX));
    let mut txn = db.begin_write().map_err(backend)?;
    txn.set_durability(Durability::None).map_err(backend)?;
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
            .map(|e| Ok((e.app_id.clone(), e.body.clone(), encode_event(e)?)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_batch_reads_back_as_written_and_a_cut_one_not_at_all() {
        let (tx, _) = oneshot::channel();
        let (tx2, _) = oneshot::channel();
        let batch = [
            Job::Append(
                vec![
                    ("app-1".into(), "{\"a\":1}".into(), b"{\"e\":1}".to_vec()),
                    ("app-ü".into(), String::new(), b"{}".to_vec()),
                ],
                tx,
            ),
            Job::Ack(vec![3, u64::MAX], tx2),
        ];
        let p = encode_batch(&batch, 41, 1_700_000_000_123);
        let (now, ops) = decode_batch(&p).unwrap();
        assert_eq!(now, 1_700_000_000_123);
        assert_eq!(
            ops,
            vec![
                LogOp::Append {
                    seq: 41,
                    app: "app-1",
                    body: b"{\"a\":1}",
                    event: b"{\"e\":1}"
                },
                LogOp::Append {
                    seq: 42,
                    app: "app-ü",
                    body: b"",
                    event: b"{}"
                },
                LogOp::Ack(3),
                LogOp::Ack(u64::MAX),
            ]
        );
        // Cut short: nothing, or (cut between two operations) the ones
        // before the cut — the log's frame checksum is what refuses a torn
        // batch; this only never reads past the end.
        let mut whole = 0;
        for cut in 0..p.len() {
            match decode_batch(&p[..cut]) {
                None => {}
                Some((_, got)) => {
                    assert!(got.len() < ops.len() && got[..] == ops[..got.len()]);
                    whole += 1;
                }
            }
        }
        assert_eq!(whole, 4, "the time alone, then after each of 3 operations");
        let mut bad = p.clone();
        bad[8] = 9;
        assert_eq!(decode_batch(&bad), None);
    }

    #[test]
    fn a_pending_event_reads_back_whether_stored_binary_or_as_json_and_a_cut_one_is_an_error() {
        let plain = OutboxEvent {
            event_id: "ev_m1_delivered".into(),
            app_id: "app-ü".into(),
            key: "m1".into(),
            kind: "delivered".into(),
            callback: None,
            body: "{\"type\":\"status\",\"message\":\"a\\\"b\"}".into(),
            created_at_ms: 1_700_000_000_123,
        };
        let with_callback = OutboxEvent {
            callback: Some(smsgw_core::outbox::Callback {
                url: "https://example.com/cb".into(),
                events: Some(smsgw_core::outbox::EventMask(vec!["final".into()])),
            }),
            body: String::new(),
            ..plain.clone()
        };
        for e in [plain, with_callback] {
            let b = encode_event(&e).unwrap();
            assert_eq!(b[0], EVENT_V1);
            assert_eq!(decode_event(&b).unwrap(), e);
            // As an earlier version stored it.
            assert_eq!(decode_event(&serde_json::to_vec(&e).unwrap()).unwrap(), e);
            for cut in 0..b.len() {
                assert!(decode_event(&b[..cut]).is_err(), "cut at {cut}");
            }
            let mut longer = b.clone();
            longer.push(0);
            assert!(decode_event(&longer).is_err());
        }
    }
}
