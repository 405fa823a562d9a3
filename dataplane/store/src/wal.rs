//! The write-ahead log of the embedded stores (messages and the outbox):
//! one append and one `fdatasync` per group-committed batch, so a batch is
//! durable without redb writing and syncing every page the batch touched.
//!
//! A frame is `len: u32 | crc32: u32 | seq: u64 | payload` (little endian;
//! the CRC covers `seq` and the payload). Frames carry consecutive batch
//! numbers. After a checkpoint (a durable redb commit that records the last
//! batch number it holds) the log is written again from offset 0, over the
//! frames of the earlier round, so a crash can leave stale frames behind
//! the new ones, and a torn frame at the end: [`replayable`] keeps only the
//! unbroken run of numbers that follows the checkpoint.
//!
//! The file is filled with zeros up to its capacity when opened, and never
//! cut back: an append then overwrites blocks that already exist and leaves
//! the file's size alone, so its `fdatasync` writes the data alone. An
//! append that grew the file would make `fdatasync` also write the inode
//! (a second synchronous disk write per batch on ext4).

use redb::Database;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes before a frame's payload.
const HEADER: usize = 16;
/// Largest payload accepted when reading (a frame is one batch of at most
/// `MAX_BATCH` operations; anything bigger is garbage).
const MAX_PAYLOAD: usize = 256 << 20;

/// Size a log file is zero-filled to when smaller (appends inside it do
/// not change the file's size, so their `fdatasync` skips the inode). The
/// file is never cut back, so a busier store's log stays at its high-water
/// mark.
pub(crate) const PREALLOC: u64 = 4 << 20;

/// A store file's log: its path with `-wal` appended.
pub(crate) fn path_for(store: &Path) -> PathBuf {
    let mut p = OsString::from(store.as_os_str());
    p.push("-wal");
    PathBuf::from(p)
}

/// One frame read back: its batch number and payload.
pub(crate) type Frame = (u64, Vec<u8>);

/// An open log file, appended to by the store's writer thread only.
pub(crate) struct Wal {
    file: File,
    /// Bytes of whole frames written since the last reset.
    len: u64,
}

impl Wal {
    /// Opens (or creates) the log at `path`, fills it with zeros up to
    /// `capacity` bytes, and returns it with every frame that reads back
    /// whole, in file order. The caller replays what [`replayable`] keeps
    /// and then [`reset`](Self::reset)s the log.
    pub(crate) fn open(path: &Path, capacity: u64) -> io::Result<(Self, Vec<Frame>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let frames = read_frames(&bytes);
        let mut size = bytes.len() as u64;
        drop(bytes);
        if size < capacity {
            let zeros = vec![0u8; 1 << 20];
            while size < capacity {
                let n = (capacity - size).min(zeros.len() as u64) as usize;
                file.write_all(&zeros[..n])?;
                size += n as u64;
            }
            file.sync_all()?;
        }
        // Until reset, appends go after the frames read (a caller that
        // appends without replaying keeps them).
        let len = frames.iter().map(|(_, p)| (HEADER + p.len()) as u64).sum();
        Ok((Self { file, len }, frames))
    }

    /// Appends one frame and waits until it is on disk (on failure the
    /// caller stops writing: after a failed `fdatasync` the kernel may have
    /// dropped the data, so nothing later can be trusted).
    pub(crate) fn append(&mut self, seq: u64, payload: &[u8]) -> io::Result<()> {
        let frame = encode_frame(seq, payload)?;
        let res = self
            .file
            .write_all_at(&frame, self.len)
            .and_then(|()| self.file.sync_data());
        match res {
            Ok(()) => {
                self.len += frame.len() as u64;
                Ok(())
            }
            // Nothing to undo: the position did not move, so the next
            // append overwrites whatever part of the frame was written.
            Err(e) => Err(e),
        }
    }

    /// Starts the log over at offset 0 after a checkpoint. The frames of
    /// the round before stay in the file until overwritten; they are all
    /// at or below the checkpoint, so replay skips them.
    pub(crate) fn reset(&mut self) {
        self.len = 0;
    }

    /// Bytes written since the last reset.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }
}

/// When an embedded store (messages, outbox) makes redb durable and
/// empties its log.
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

/// The log's half of an embedded store's single writer thread (the
/// message store's and the outbox's): numbering and appending batches,
/// refusing every write after one failed, and checkpoints. The store
/// applies each logged batch to its redb with a commit that does not sync,
/// and records the batch's number there in the same transaction; a
/// checkpoint is one durable redb commit (it persists every commit before
/// it), then an empty log.
pub(crate) struct LogWriter {
    db: Arc<Database>,
    wal: Wal,
    /// Number of the next batch logged.
    next: u64,
    last_checkpoint: Instant,
    /// Batches applied (or redb changed) since the last checkpoint.
    dirty: bool,
    /// Set when the log or redb failed a write: from then on they may
    /// disagree, so every write fails until a restart replays.
    poisoned: Option<String>,
    checkpoints: Checkpoints,
    /// The store, in log lines (`message store`, `outbox`).
    name: &'static str,
}

impl LogWriter {
    /// Opens the log of the store file `store` whose redb `db` holds the
    /// batches up to number `checkpoint`; returns it with the frames to
    /// apply again ([`LogWriter::replayed`] each, then
    /// [`LogWriter::after_replay`]).
    pub(crate) fn open(
        db: Arc<Database>,
        store: &Path,
        checkpoint: u64,
        checkpoints: Checkpoints,
        name: &'static str,
    ) -> Result<(Self, Vec<Frame>), String> {
        let log = path_for(store);
        let (wal, frames) = Wal::open(&log, PREALLOC)
            .map_err(|e| format!("cannot open the write-ahead log {}: {e}", log.display()))?;
        let me = Self {
            db,
            wal,
            next: checkpoint + 1,
            last_checkpoint: Instant::now(),
            dirty: false,
            poisoned: None,
            checkpoints,
            name,
        };
        let todo = replayable(frames, checkpoint);
        Ok((me, todo))
    }

    /// Batch `seq` of the log was applied again.
    pub(crate) fn replayed(&mut self, seq: u64) {
        self.next = seq + 1;
        self.dirty = true;
    }

    /// After the frames [`LogWriter::open`] returned were applied: a
    /// checkpoint if there were any, else (redb is already durable) only
    /// an empty log.
    pub(crate) fn after_replay(&mut self, batches: usize) -> Result<(), String> {
        if batches == 0 {
            self.wal.reset();
            return Ok(());
        }
        tracing::info!(
            batches,
            "{}: applied the write-ahead log after an unclean stop",
            self.name
        );
        self.checkpoint()
    }

    /// Logs `payload` as the next batch and returns its number; it is
    /// durable when this returns. Fails (and from then on always) once a
    /// write failed.
    pub(crate) fn log(&mut self, payload: &[u8]) -> Result<u64, String> {
        if let Some(why) = &self.poisoned {
            return Err(why.clone());
        }
        let seq = self.next;
        if let Err(e) = self.wal.append(seq, payload) {
            return Err(self.poison(format!("write-ahead log append failed: {e}")));
        }
        self.next += 1;
        self.dirty = true;
        Ok(seq)
    }

    /// Refuses every write from now on, for `why`; returns `why`.
    pub(crate) fn poison(&mut self, why: String) -> String {
        tracing::error!(error = %why, "{}: writes stop until a restart", self.name);
        self.poisoned = Some(why.clone());
        why
    }

    /// The store's redb, which each logged batch is applied to.
    pub(crate) fn db(&self) -> &Database {
        &self.db
    }

    /// Why writes are refused, if they are.
    pub(crate) fn poisoned(&self) -> Option<&str> {
        self.poisoned.as_deref()
    }

    /// redb was changed outside a logged batch (work that is simply done
    /// again if a crash loses it): durable at the next checkpoint.
    pub(crate) fn touched(&mut self) {
        self.dirty = true;
    }

    /// How long the writer may wait for work before a checkpoint is due;
    /// `None` when nothing waits for one.
    pub(crate) fn until_due(&self) -> Option<Duration> {
        self.dirty.then(|| {
            self.checkpoints
                .every
                .saturating_sub(self.last_checkpoint.elapsed())
        })
    }

    /// A checkpoint if one is due (by time or by the log's size).
    pub(crate) fn checkpoint_if_due(&mut self) {
        if self.dirty
            && (self.last_checkpoint.elapsed() >= self.checkpoints.every
                || self.wal.len() >= self.checkpoints.log_bytes)
        {
            self.checkpoint_logged();
        }
    }

    /// The last checkpoint, when the writer stops.
    pub(crate) fn finish(&mut self) {
        if self.dirty {
            self.checkpoint_logged();
        }
    }

    /// One durable redb commit (it persists every non-durable commit
    /// before it, the last batch number included), then an empty log.
    pub(crate) fn checkpoint(&mut self) -> Result<(), String> {
        if let Some(why) = &self.poisoned {
            return Err(why.clone());
        }
        let started = Instant::now();
        let txn = self.db.begin_write().map_err(|e| e.to_string())?;
        txn.commit().map_err(|e| e.to_string())?;
        tracing::debug!(
            took_ms = started.elapsed().as_secs_f64() * 1e3,
            log_bytes = self.wal.len(),
            "{}: checkpoint",
            self.name
        );
        self.wal.reset();
        self.dirty = false;
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    /// A checkpoint the writer decided on itself: a failure is logged (the
    /// log still holds every batch, so nothing is lost; the next one
    /// retries).
    fn checkpoint_logged(&mut self) {
        if self.poisoned.is_some() {
            return;
        }
        if let Err(e) = self.checkpoint() {
            tracing::error!(error = %e, "{}: checkpoint failed", self.name);
            self.last_checkpoint = Instant::now();
        }
    }
}

fn encode_frame(seq: u64, payload: &[u8]) -> io::Result<Vec<u8>> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&n| n as usize <= MAX_PAYLOAD)
        .ok_or_else(|| io::Error::other("write-ahead log frame too large"))?;
    let mut frame = Vec::with_capacity(HEADER + payload.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&crc(seq, payload).to_le_bytes());
    frame.extend_from_slice(&seq.to_le_bytes());
    frame.extend_from_slice(payload);
    Ok(frame)
}

fn crc(seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Every whole frame from the start of `bytes`, stopping at the first one
/// that is cut short or fails its checksum (a torn write).
fn read_frames(bytes: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(head) = bytes.get(at..at + HEADER) {
        let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let len = word(0) as usize;
        let sum = word(4);
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&head[8..16]);
        let seq = u64::from_le_bytes(seq);
        if len > MAX_PAYLOAD {
            break;
        }
        let Some(payload) = bytes.get(at + HEADER..at + HEADER + len) else {
            break;
        };
        if crc(seq, payload) != sum {
            break;
        }
        out.push((seq, payload.to_vec()));
        at += HEADER + len;
    }
    out
}

/// Of the frames read back, the ones to replay over a store whose last
/// durable checkpoint holds batch `checkpoint`: those numbered
/// `checkpoint + 1, + 2, …` without a gap. Older frames are already in the
/// store; a gap means what follows is left over from before a reset.
pub(crate) fn replayable(frames: Vec<Frame>, checkpoint: u64) -> Vec<Frame> {
    let mut next = checkpoint + 1;
    let mut out = Vec::new();
    for (seq, payload) in frames {
        if seq < next && out.is_empty() {
            continue;
        }
        if seq != next {
            break;
        }
        out.push((seq, payload));
        next += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(seqs: &[u64]) -> Vec<(u64, Vec<u8>)> {
        seqs.iter().map(|&s| (s, vec![s as u8])).collect()
    }
    fn seqs(f: &[(u64, Vec<u8>)]) -> Vec<u64> {
        f.iter().map(|(s, _)| *s).collect()
    }

    #[test]
    fn frames_read_back_and_stop_at_a_torn_or_corrupt_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (mut wal, old) = Wal::open(&path, 4096).unwrap();
        assert!(old.is_empty());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 4096);
        wal.append(1, b"one").unwrap();
        wal.append(2, b"").unwrap();
        wal.append(3, b"three").unwrap();
        assert!(wal.len() > 0);
        drop(wal);
        let (_, back) = Wal::open(&path, 4096).unwrap();
        assert_eq!(
            back,
            vec![(1, b"one".to_vec()), (2, vec![]), (3, b"three".to_vec())]
        );

        // A torn fourth frame (header and half its payload) is dropped.
        let mut bytes = std::fs::read(&path).unwrap();
        let torn = encode_frame(4, b"fourth frame").unwrap();
        let end = HEADER * 3 + 3 + 5;
        bytes[end..end + torn.len() - 5].copy_from_slice(&torn[..torn.len() - 5]);
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(seqs(&Wal::open(&path, 4096).unwrap().1), vec![1, 2, 3]);

        // A flipped payload byte in frame 3 ends the run before it.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER + 3 + HEADER + HEADER] ^= 0xff; // first payload byte of frame 3
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(seqs(&Wal::open(&path, 4096).unwrap().1), vec![1, 2]);
    }

    #[test]
    fn reset_starts_over_at_offset_zero_and_appends_keep_the_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (mut wal, _) = Wal::open(&path, 4096).unwrap();
        wal.append(1, b"a longer first payload").unwrap();
        wal.append(2, b"b").unwrap();
        wal.reset();
        assert_eq!(wal.len(), 0);
        wal.append(3, b"c").unwrap();
        drop(wal);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 4096);
        // Frame 3 overwrote the start of frame 1: what follows it is torn.
        let (wal, frames) = Wal::open(&path, 4096).unwrap();
        assert_eq!(frames, vec![(3, b"c".to_vec())]);
        assert_eq!(wal.len(), (HEADER + 1) as u64);
    }

    #[test]
    fn replay_takes_the_unbroken_run_after_the_checkpoint() {
        // Everything after a checkpoint at 3.
        assert_eq!(seqs(&replayable(frames(&[4, 5, 6]), 3)), vec![4, 5, 6]);
        // Already checkpointed frames are skipped.
        assert_eq!(seqs(&replayable(frames(&[2, 3, 4, 5]), 3)), vec![4, 5]);
        // New frames 4, 5 written over a longer old round (1..=3 tail
        // left behind after the reset): the stale ones are not replayed.
        assert_eq!(seqs(&replayable(frames(&[4, 5, 2, 3]), 3)), vec![4, 5]);
        // A gap (a frame missing) stops the replay.
        assert_eq!(seqs(&replayable(frames(&[4, 6]), 3)), vec![4]);
        assert!(replayable(frames(&[5, 6]), 3).is_empty());
        // Only stale frames: nothing to do.
        assert!(replayable(frames(&[1, 2, 3]), 3).is_empty());
    }
}
