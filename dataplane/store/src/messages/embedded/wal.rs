//! The embedded store's write-ahead log: one append and one `fdatasync`
//! per group-committed batch, so a batch is durable without redb writing
//! and syncing every page the batch touched.
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

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Bytes before a frame's payload.
const HEADER: usize = 16;
/// Largest payload accepted when reading (a frame is one batch of at most
/// `MAX_BATCH` operations; anything bigger is garbage).
const MAX_PAYLOAD: usize = 256 << 20;

/// One frame read back: its batch number and payload.
pub(super) type Frame = (u64, Vec<u8>);

/// An open log file, appended to by the store's writer thread only.
pub(super) struct Wal {
    file: File,
    /// Bytes of whole frames written since the last reset.
    len: u64,
}

impl Wal {
    /// Opens (or creates) the log at `path`, fills it with zeros up to
    /// `capacity` bytes, and returns it with every frame that reads back
    /// whole, in file order. The caller replays what [`replayable`] keeps
    /// and then [`reset`](Self::reset)s the log.
    pub(super) fn open(path: &Path, capacity: u64) -> io::Result<(Self, Vec<Frame>)> {
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
    pub(super) fn append(&mut self, seq: u64, payload: &[u8]) -> io::Result<()> {
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
    pub(super) fn reset(&mut self) {
        self.len = 0;
    }

    /// Bytes written since the last reset.
    pub(super) fn len(&self) -> u64 {
        self.len
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
pub(super) fn replayable(frames: Vec<Frame>, checkpoint: u64) -> Vec<Frame> {
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
