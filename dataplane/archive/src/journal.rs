//! The message journal: every event (accepted, refused, submitted,
//! receipt) and periodic statistics, as gzip-compressed JSON lines in S3.
//!
//! # How a batch travels
//! [`Journal::record`] never waits: it queues the event (a full queue
//! drops it and counts it). A batcher task appends events to a gzip
//! stream and seals the batch when it reaches `batch_max_bytes`
//! (uncompressed) or `batch_max_age`. A sealed batch gets the next
//! sequence number of this pod (persisted in the spill directory) and is
//! written to the *outbox* (`<spill_dir>/outbox/`) under a name that
//! determines its object key:
//!
//! ```text
//! <key_prefix>/YYYY/MM/DD/HH/<pod>-<seq:016>.jsonl.gz   (hour of the batch's first event, UTC)
//! ```
//!
//! An uploader task PUTs outbox files in sequence order and deletes each
//! once S3 has it. While S3 is down the outbox grows (that is the spill)
//! and uploads resume in order when it is back; a retried upload uses the
//! same key, so an object is never duplicated. Past `spill_max_bytes` new
//! batches are dropped, counted, and [`JournalStats::overflow`] is raised
//! (the alert), while sending goes on. [`JournalTask::shutdown`] seals the
//! open batch and uploads the outbox within a deadline; whatever is left
//! stays on disk and goes up after the next start.

use crate::ArchiveError;
use crate::store::ObjectStore;
use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One journal line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JournalEvent {
    /// Unique event id (`<pod>-<boot ms>-<n>` when the journal assigns it).
    pub id: String,
    /// When it happened, Unix milliseconds.
    pub at_ms: i64,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened to a message, or a statistics sample.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// The gateway accepted a message.
    Accepted {
        /// Message id.
        message_id: String,
        /// Sending application.
        app_id: String,
        /// Link or pool asked for.
        esme: String,
        /// Source address.
        source: String,
        /// Destination address.
        destination: String,
        /// Segments.
        segments: u32,
        /// Contact-policy strategy, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        strategy: Option<String>,
    },
    /// The gateway refused a message.
    Refused {
        /// Client's transaction id, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        transaction_id: Option<String>,
        /// Sending application.
        app_id: String,
        /// Destination address.
        destination: String,
        /// Why (`daily_cp`, `blacklist`, `rate_limited`, …).
        reason: String,
    },
    /// A segment went to the SMSC.
    Submitted {
        /// Message id.
        message_id: String,
        /// Link that carried it.
        link: String,
        /// Segment number, from 1.
        segment: u32,
        /// The SMSC's message id, when it accepted the segment.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        smsc_message_id: Option<String>,
        /// Why the segment is not accepted (the SMSC refused it, or its
        /// outcome is unknown).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// The segment went to the SMSC more than once (resubmitted after
        /// its connection closed before an answer): the recipient may get
        /// it twice.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        possible_duplicate: bool,
    },
    /// A delivery receipt arrived.
    Receipt {
        /// Message id it was matched to, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message_id: Option<String>,
        /// Link it came on.
        link: String,
        /// The SMSC's message id.
        smsc_message_id: String,
        /// Delivery state (`DELIVRD`, `UNDELIV`, …).
        state: String,
    },
    /// Periodic statistics.
    Stats {
        /// Free-form sample.
        stats: serde_json::Value,
    },
}

/// Journal settings.
///
/// # Defaults
/// Key prefix `journal`, batches of 8 MiB uncompressed or 10 s, spill
/// bound 1 GiB, queue of 100 000 events, upload retry 250 ms doubling to
/// 30 s, statistics every 60 s.
#[derive(Clone, Debug)]
pub struct JournalConfig {
    /// Pod name, part of every key (unique per writer).
    pub pod: String,
    /// First component of every key.
    pub key_prefix: String,
    /// Directory of the outbox and the sequence file; must survive a
    /// restart of the process for the at-least-once guarantee.
    pub spill_dir: PathBuf,
    /// Most bytes the outbox may hold.
    pub spill_max_bytes: u64,
    /// Uncompressed bytes that seal a batch.
    pub batch_max_bytes: usize,
    /// Age of a batch's first event that seals it.
    pub batch_max_age: Duration,
    /// Events queued between `record` and the batcher.
    pub queue: usize,
    /// First retry delay after a failed upload.
    pub retry_min: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Interval of `stats` events, when a statistics source is given.
    pub stats_interval: Duration,
}

impl JournalConfig {
    /// Defaults for a pod and spill directory.
    pub fn new(pod: impl Into<String>, spill_dir: impl Into<PathBuf>) -> Self {
        Self {
            pod: pod.into(),
            key_prefix: "journal".into(),
            spill_dir: spill_dir.into(),
            spill_max_bytes: 1 << 30,
            batch_max_bytes: 8 << 20,
            batch_max_age: Duration::from_secs(10),
            queue: 100_000,
            retry_min: Duration::from_millis(250),
            retry_max: Duration::from_secs(30),
            stats_interval: Duration::from_secs(60),
        }
    }
}

/// Counters and gauges of the journal, for the gateway's metrics.
#[derive(Debug, Default)]
pub struct JournalStats {
    /// Events queued.
    pub events_recorded: AtomicU64,
    /// Events lost: queue full or batch dropped past the spill bound.
    pub events_dropped: AtomicU64,
    /// Batches sealed into the outbox.
    pub batches_sealed: AtomicU64,
    /// Batches in S3.
    pub batches_uploaded: AtomicU64,
    /// Failed upload attempts.
    pub upload_failures: AtomicU64,
    /// Bytes waiting in the outbox.
    pub outbox_bytes: AtomicU64,
    /// 1 once a batch had to be dropped because the outbox was full (the
    /// alert); back to 0 only when an upload frees space, so the alert does
    /// not flap while S3 is still down and a smaller batch happens to fit.
    pub overflow: AtomicU64,
    /// 1 when the last upload attempt succeeded (or none failed yet).
    pub s3_up: AtomicU64,
}

/// A source of statistics samples.
pub type StatsFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

struct Shared {
    tx: mpsc::Sender<JournalEvent>,
    stats: Arc<JournalStats>,
    id_base: String,
    next_id: AtomicU64,
}

/// Handle to record events; cheap to clone.
#[derive(Clone)]
pub struct Journal {
    shared: Arc<Shared>,
}

/// The journal's tasks; shut them down to flush.
pub struct JournalTask {
    cancel: CancellationToken,
    batcher: JoinHandle<()>,
    uploader: JoinHandle<()>,
    upload_deadline: Arc<std::sync::Mutex<Option<tokio::time::Instant>>>,
    stats: Arc<JournalStats>,
    outbox: PathBuf,
}

fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> ArchiveError {
    move |source| ArchiveError::Io { op, source }
}

impl Journal {
    /// Starts the batcher and uploader writing to `store`; batches left in
    /// the outbox by an earlier run are uploaded first.
    pub async fn start(
        config: JournalConfig,
        store: Arc<dyn ObjectStore>,
        stats_source: Option<StatsFn>,
    ) -> Result<(Journal, JournalTask), ArchiveError> {
        let outbox = config.spill_dir.join("outbox");
        tokio::fs::create_dir_all(&outbox)
            .await
            .map_err(io("create outbox"))?;
        let pending = scan_outbox(&outbox).await?;
        let stats = Arc::new(JournalStats::default());
        stats.s3_up.store(1, Ordering::Relaxed);
        stats
            .outbox_bytes
            .store(pending.iter().map(|f| f.size).sum(), Ordering::Relaxed);
        let seq_file = config.spill_dir.join("seq");
        let stored_seq = match tokio::fs::read_to_string(&seq_file).await {
            Ok(s) => s.trim().parse::<u64>().unwrap_or(0),
            Err(_) => 0,
        };
        let next_seq = pending
            .iter()
            .map(|f| f.seq + 1)
            .max()
            .unwrap_or(0)
            .max(stored_seq);
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let cancel = CancellationToken::new();
        let wake = Arc::new(Notify::new());
        let sealed_all = CancellationToken::new();
        let upload_deadline = Arc::new(std::sync::Mutex::new(None));
        let journal = Journal {
            shared: Arc::new(Shared {
                tx,
                stats: stats.clone(),
                id_base: format!("{}-{}", config.pod, jiff::Timestamp::now().as_millisecond()),
                next_id: AtomicU64::new(0),
            }),
        };
        let batcher = tokio::spawn(
            Batcher {
                config: config.clone(),
                rx,
                stats: stats.clone(),
                outbox: outbox.clone(),
                seq_file,
                next_seq,
                wake: wake.clone(),
                stats_source,
                journal: journal.clone(),
            }
            .run(cancel.clone(), sealed_all.clone()),
        );
        let uploader = tokio::spawn(
            Uploader {
                config,
                store,
                stats: stats.clone(),
                outbox: outbox.clone(),
                wake,
                deadline: upload_deadline.clone(),
            }
            .run(sealed_all),
        );
        Ok((
            journal,
            JournalTask {
                cancel,
                batcher,
                uploader,
                upload_deadline,
                stats,
                outbox,
            },
        ))
    }

    /// Queues an event with a fresh id and the current time.
    pub fn record(&self, kind: EventKind) {
        let n = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        self.record_event(JournalEvent {
            id: format!("{}-{n}", self.shared.id_base),
            at_ms: jiff::Timestamp::now().as_millisecond(),
            kind,
        });
    }

    /// Queues an event as given; never waits (a full queue drops it).
    pub fn record_event(&self, event: JournalEvent) {
        match self.shared.tx.try_send(event) {
            Ok(()) => {
                self.shared
                    .stats
                    .events_recorded
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.shared
                    .stats
                    .events_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Counters and gauges.
    pub fn stats(&self) -> &Arc<JournalStats> {
        &self.shared.stats
    }
}

impl JournalTask {
    /// Stops taking events, seals the open batch and uploads the outbox,
    /// giving uploads until `deadline` from now. Returns the number of
    /// batches left in the outbox (uploaded after the next start).
    pub async fn shutdown(self, deadline: Duration) -> usize {
        *self
            .upload_deadline
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(tokio::time::Instant::now() + deadline);
        self.cancel.cancel();
        let _ = self.batcher.await;
        let _ = self.uploader.await;
        scan_outbox(&self.outbox).await.map_or(0, |v| v.len())
    }

    /// Counters and gauges.
    pub fn stats(&self) -> &Arc<JournalStats> {
        &self.stats
    }
}

struct OutboxFile {
    seq: u64,
    hour: String,
    path: PathBuf,
    size: u64,
}

/// Outbox file name: `<seq:016>-<YYYYMMDDHH>.jsonl.gz`.
fn parse_outbox_name(name: &str) -> Option<(u64, String)> {
    let stem = name.strip_suffix(".jsonl.gz")?;
    let (seq, hour) = stem.split_once('-')?;
    (hour.len() == 10 && hour.bytes().all(|b| b.is_ascii_digit()))
        .then_some(())
        .and(seq.parse().ok().map(|s| (s, hour.to_owned())))
}

async fn scan_outbox(dir: &Path) -> Result<Vec<OutboxFile>, ArchiveError> {
    let mut out = Vec::new();
    let mut rd = tokio::fs::read_dir(dir).await.map_err(io("scan outbox"))?;
    while let Some(e) = rd.next_entry().await.map_err(io("scan outbox"))? {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some((seq, hour)) = parse_outbox_name(&name) {
            let size = e.metadata().await.map(|m| m.len()).unwrap_or(0);
            out.push(OutboxFile {
                seq,
                hour,
                path: e.path(),
                size,
            });
        }
    }
    out.sort_by_key(|f| f.seq);
    Ok(out)
}

/// The object key of batch `seq` of `pod` whose first event is in `hour`
/// (`YYYYMMDDHH`, UTC).
pub fn object_key(prefix: &str, pod: &str, hour: &str, seq: u64) -> String {
    format!(
        "{prefix}/{}/{}/{}/{}/{pod}-{seq:016}.jsonl.gz",
        &hour[0..4],
        &hour[4..6],
        &hour[6..8],
        &hour[8..10]
    )
}

struct Open {
    gz: GzEncoder<Vec<u8>>,
    raw_bytes: usize,
    first_at_ms: i64,
    opened: tokio::time::Instant,
}

struct Batcher {
    config: JournalConfig,
    rx: mpsc::Receiver<JournalEvent>,
    stats: Arc<JournalStats>,
    outbox: PathBuf,
    seq_file: PathBuf,
    next_seq: u64,
    wake: Arc<Notify>,
    stats_source: Option<StatsFn>,
    journal: Journal,
}

impl Batcher {
    async fn run(mut self, cancel: CancellationToken, sealed_all: CancellationToken) {
        let mut open: Option<Open> = None;
        let mut stats_tick = tokio::time::interval(self.config.stats_interval);
        stats_tick.tick().await;
        let mut line = Vec::with_capacity(512);
        loop {
            let age_deadline = open.as_ref().map(|o| o.opened + self.config.batch_max_age);
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                ev = self.rx.recv() => match ev {
                    Some(ev) => self.append(&mut open, &ev, &mut line).await,
                    None => break,
                },
                () = sleep_until_opt(age_deadline) => {
                    if let Some(o) = open.take() {
                        self.seal(o).await;
                    }
                }
                _ = stats_tick.tick(), if self.stats_source.is_some() => {
                    if let Some(f) = &self.stats_source {
                        self.journal.record(EventKind::Stats { stats: f() });
                    }
                }
            }
        }
        // Drain what was queued before the shutdown.
        self.rx.close();
        while let Some(ev) = self.rx.recv().await {
            self.append(&mut open, &ev, &mut line).await;
        }
        if let Some(o) = open.take() {
            self.seal(o).await;
        }
        sealed_all.cancel();
        self.wake.notify_one();
    }

    async fn append(&mut self, open: &mut Option<Open>, ev: &JournalEvent, line: &mut Vec<u8>) {
        line.clear();
        if serde_json::to_writer(&mut *line, ev).is_err() {
            self.stats.events_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        line.push(b'\n');
        let o = open.get_or_insert_with(|| Open {
            gz: GzEncoder::new(Vec::with_capacity(64 * 1024), Compression::fast()),
            raw_bytes: 0,
            first_at_ms: ev.at_ms,
            opened: tokio::time::Instant::now(),
        });
        // Writing into a Vec cannot fail.
        let _ = o.gz.write_all(line);
        o.raw_bytes += line.len();
        if o.raw_bytes >= self.config.batch_max_bytes
            && let Some(o) = open.take()
        {
            self.seal(o).await;
        }
    }

    async fn seal(&mut self, o: Open) {
        let Ok(body) = o.gz.finish() else { return };
        let used = self.stats.outbox_bytes.load(Ordering::Relaxed);
        if used + body.len() as u64 > self.config.spill_max_bytes {
            let lines = count_lines_gz(&body);
            self.stats
                .events_dropped
                .fetch_add(lines, Ordering::Relaxed);
            if self.stats.overflow.swap(1, Ordering::Relaxed) == 0 {
                tracing::error!(
                    outbox_bytes = used,
                    bound = self.config.spill_max_bytes,
                    "journal spill directory full: dropping batches until S3 catches up"
                );
            }
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let hour = jiff::Timestamp::from_millisecond(o.first_at_ms)
            .unwrap_or_else(|_| jiff::Timestamp::now())
            .strftime("%Y%m%d%H")
            .to_string();
        let name = format!("{seq:016}-{hour}.jsonl.gz");
        let tmp = self.outbox.join(format!("{name}.tmp"));
        let len = body.len() as u64;
        let write = async {
            tokio::fs::write(&tmp, &body).await?;
            tokio::fs::rename(&tmp, self.outbox.join(&name)).await?;
            let seq_tmp = self.seq_file.with_extension("tmp");
            tokio::fs::write(&seq_tmp, (seq + 1).to_string()).await?;
            tokio::fs::rename(&seq_tmp, &self.seq_file).await
        };
        match write.await {
            Ok(()) => {
                self.stats.outbox_bytes.fetch_add(len, Ordering::Relaxed);
                self.stats.batches_sealed.fetch_add(1, Ordering::Relaxed);
                self.wake.notify_one();
            }
            Err(e) => {
                let lines = count_lines_gz(&body);
                self.stats
                    .events_dropped
                    .fetch_add(lines, Ordering::Relaxed);
                self.stats.overflow.store(1, Ordering::Relaxed);
                tracing::error!(error = %e, "journal batch could not be written to the spill directory; dropped");
            }
        }
    }
}

fn count_lines_gz(body: &[u8]) -> u64 {
    use std::io::Read;
    let mut d = flate2::read::GzDecoder::new(body);
    let mut buf = [0u8; 16 * 1024];
    let mut n = 0;
    while let Ok(k) = d.read(&mut buf) {
        if k == 0 {
            break;
        }
        n += buf[..k].iter().filter(|&&b| b == b'\n').count() as u64;
    }
    n
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

struct Uploader {
    config: JournalConfig,
    store: Arc<dyn ObjectStore>,
    stats: Arc<JournalStats>,
    outbox: PathBuf,
    wake: Arc<Notify>,
    deadline: Arc<std::sync::Mutex<Option<tokio::time::Instant>>>,
}

impl Uploader {
    fn deadline(&self) -> Option<tokio::time::Instant> {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn run(self, sealed_all: CancellationToken) {
        let mut delay = self.config.retry_min;
        loop {
            let files = match scan_outbox(&self.outbox).await {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!(error = %e, "journal outbox unreadable");
                    Vec::new()
                }
            };
            if files.is_empty() {
                if sealed_all.is_cancelled() {
                    return;
                }
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = sealed_all.cancelled() => {}
                }
                continue;
            }
            for f in files {
                loop {
                    if let Some(d) = self.deadline()
                        && tokio::time::Instant::now() >= d
                    {
                        return;
                    }
                    match self.upload(&f).await {
                        Ok(()) => {
                            delay = self.config.retry_min;
                            break;
                        }
                        Err(e) => {
                            self.stats.upload_failures.fetch_add(1, Ordering::Relaxed);
                            if self.stats.s3_up.swap(0, Ordering::Relaxed) == 1 {
                                tracing::warn!(error = %e, "journal upload failed; spilling to disk and retrying");
                            }
                            let wake_at = tokio::time::Instant::now() + delay;
                            let wake_at = self.deadline().map_or(wake_at, |d| wake_at.min(d));
                            tokio::time::sleep_until(wake_at).await;
                            delay = (delay * 2).min(self.config.retry_max);
                        }
                    }
                }
            }
        }
    }

    async fn upload(&self, f: &OutboxFile) -> Result<(), ArchiveError> {
        let body = tokio::fs::read(&f.path).await.map_err(io("read outbox"))?;
        let key = object_key(&self.config.key_prefix, &self.config.pod, &f.hour, f.seq);
        let put = self.store.put(&key, Bytes::from(body));
        // Never wait past the shutdown deadline for one PUT.
        match self.deadline() {
            Some(d) => tokio::time::timeout_at(d, put)
                .await
                .map_err(|_| ArchiveError::S3 {
                    op: "put",
                    reason: "shutdown deadline".into(),
                })??,
            None => put.await?,
        }
        tokio::fs::remove_file(&f.path)
            .await
            .map_err(io("remove uploaded batch"))?;
        self.stats.outbox_bytes.fetch_sub(f.size, Ordering::Relaxed);
        self.stats.batches_uploaded.fetch_add(1, Ordering::Relaxed);
        if self.stats.overflow.swap(0, Ordering::Relaxed) == 1 {
            tracing::info!("journal outbox has room again");
        }
        if self.stats.s3_up.swap(1, Ordering::Relaxed) == 0 {
            tracing::info!("journal uploads resumed");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_should_be_time_partitioned_and_ordered() {
        assert_eq!(
            object_key("journal", "pod-a", "2026030114", 7),
            "journal/2026/03/01/14/pod-a-0000000000000007.jsonl.gz"
        );
        assert_eq!(
            parse_outbox_name("0000000000000007-2026030114.jsonl.gz"),
            Some((7, "2026030114".into()))
        );
        assert_eq!(
            parse_outbox_name("0000000000000007-2026030114.jsonl.gz.tmp"),
            None
        );
    }

    #[test]
    fn events_should_serialise_as_flat_tagged_lines() {
        let ev = JournalEvent {
            id: "e1".into(),
            at_ms: 5,
            kind: EventKind::Refused {
                transaction_id: None,
                app_id: "a".into(),
                destination: "331".into(),
                reason: "daily_cp".into(),
            },
        };
        let s = serde_json::to_string(&ev).unwrap();
        assert_eq!(
            s,
            r#"{"id":"e1","at_ms":5,"type":"refused","app_id":"a","destination":"331","reason":"daily_cp"}"#
        );
        assert_eq!(serde_json::from_str::<JournalEvent>(&s).unwrap(), ev);
    }
}
