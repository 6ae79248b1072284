//! The write-ahead log: batches are appended and fsynced here before they
//! are acknowledged, then applied to the partition databases without waiting
//! for them to reach the disk. After a crash, entries not yet applied (or not
//! yet flushed) by a database are applied again; every database records the
//! last entry it applied, so nothing is applied twice.
//!
//! Frames: length (u32 LE), CRC-32 of the payload (u32 LE), payload. A torn
//! last frame (a crash mid-append) is cut off when the log is opened.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use super::StoreError;
use super::codec::{Out, WalEntry, decode_wal, encode_wal_into};

/// A segment is closed once it grows past this size.
const SEGMENT_BYTES: u64 = 64 << 20;
/// Largest frame accepted when reading (a bound against corrupt lengths).
const MAX_FRAME: usize = 256 << 20;

fn io(what: &str, path: &Path, error: std::io::Error) -> StoreError {
    StoreError::Io(format!("{what} {}: {error}", path.display()))
}

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    path: PathBuf,
}

/// The log: numbered segment files in one directory.
#[derive(Debug)]
pub(crate) struct Wal {
    dir: PathBuf,
    /// Closed segments and the current one (last), oldest first.
    segments: Vec<Segment>,
    current: File,
    current_bytes: u64,
    next_seq: u64,
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.log"))
}

impl Wal {
    /// Opens the log in `dir` and returns every intact entry in it, oldest
    /// first. `min_next_seq` is the lowest sequence number new entries may
    /// use (the highest number any database has applied, plus one).
    pub(crate) fn open(dir: &Path, min_next_seq: u64) -> Result<(Wal, Vec<WalEntry>), StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
        let mut segments: Vec<Segment> = std::fs::read_dir(dir)
            .map_err(|e| io("listing", dir, e))?
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name();
                let first_seq = name.to_str()?.strip_suffix(".log")?.parse().ok()?;
                Some(Segment {
                    first_seq,
                    path: entry.path(),
                })
            })
            .collect();
        segments.sort_by_key(|s| s.first_seq);

        let mut entries = Vec::new();
        for segment in &segments {
            read_segment(&segment.path, &mut entries)?;
        }
        let next_seq = entries.last().map_or(0, |e| e.wal_seq + 1).max(min_next_seq).max(1);
        // New entries always go to a fresh segment: an old one may end in a
        // torn frame, which was cut off above.
        let path = segment_path(dir, next_seq);
        let current = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io("opening", &path, e))?;
        // An empty segment left by the last run may already have that name.
        segments.retain(|s| s.first_seq != next_seq);
        segments.push(Segment {
            first_seq: next_seq,
            path,
        });
        sync_dir(dir)?;
        Ok((
            Wal {
                dir: dir.to_owned(),
                segments,
                current,
                current_bytes: 0,
                next_seq,
            },
            entries,
        ))
    }

    /// Numbers the entries, appends them and makes them durable.
    pub(crate) fn append(&mut self, entries: &mut [WalEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        if self.current_bytes > SEGMENT_BYTES {
            self.rotate()?;
        }
        let mut frames = Out(Vec::new());
        for entry in entries.iter_mut() {
            entry.wal_seq = self.next_seq;
            self.next_seq += 1;
            // The header is filled in once the payload behind it is encoded.
            let header = frames.0.len();
            frames.0.extend_from_slice(&[0; 8]);
            encode_wal_into(entry, &mut frames);
            let payload = &frames.0[header + 8..];
            let (len, crc) = (payload.len() as u32, crc32fast::hash(payload));
            frames.0[header..header + 4].copy_from_slice(&len.to_le_bytes());
            frames.0[header + 4..header + 8].copy_from_slice(&crc.to_le_bytes());
        }
        let frames = frames.0;
        let path = &self.segments.last().expect("a current segment").path;
        self.current
            .write_all(&frames)
            .map_err(|e| io("appending to", path, e))?;
        self.current.sync_data().map_err(|e| io("syncing", path, e))?;
        self.current_bytes += frames.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), StoreError> {
        let path = segment_path(&self.dir, self.next_seq);
        self.current = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io("opening", &path, e))?;
        self.segments.push(Segment {
            first_seq: self.next_seq,
            path,
        });
        self.current_bytes = 0;
        sync_dir(&self.dir)
    }

    /// Forgets every entry up to and including `seq` (all databases have them
    /// on disk): whole segments are deleted; the current one starts afresh.
    pub(crate) fn truncate_through(&mut self, seq: u64) -> Result<(), StoreError> {
        if seq + 1 >= self.next_seq && self.current_bytes > 0 {
            self.rotate()?;
        }
        while self.segments.len() > 1 && self.segments[1].first_seq <= seq + 1 {
            let old = self.segments.remove(0);
            match std::fs::remove_file(&old.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io("removing", &old.path, e)),
                _ => {}
            }
        }
        Ok(())
    }

    /// Sequence number the next entry will get.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("syncing", dir, e))
}

/// Reads the intact frames of a segment; a torn or corrupt tail is cut off
/// (it was never acknowledged: acknowledgements follow a successful sync).
fn read_segment(path: &Path, entries: &mut Vec<WalEntry>) -> Result<(), StoreError> {
    let file = File::open(path).map_err(|e| io("opening", path, e))?;
    let mut reader = BufReader::new(file);
    let mut good_bytes = 0u64;
    loop {
        let mut header = [0u8; 8];
        match reader.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(io("reading", path, e)),
        }
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        if len > MAX_FRAME {
            break;
        }
        let mut payload = vec![0u8; len];
        if reader.read_exact(&mut payload).is_err() || crc32fast::hash(&payload) != crc {
            break;
        }
        match decode_wal(&payload) {
            Ok(entry) => entries.push(entry),
            Err(_) => break,
        }
        good_bytes += 8 + len as u64;
    }
    let actual = std::fs::metadata(path).map_err(|e| io("inspecting", path, e))?.len();
    if actual > good_bytes {
        tracing::warn!(path = %path.display(), cut = actual - good_bytes, "cutting a torn tail off the write-ahead log");
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| io("opening", path, e))?;
        file.set_len(good_bytes).map_err(|e| io("truncating", path, e))?;
        file.sync_all().map_err(|e| io("syncing", path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use querypulse_domain::{Batch, Window};

    use super::*;

    fn entry(seq: u64) -> WalEntry {
        WalEntry {
            wal_seq: 0,
            received_ms: 1,
            service: "s".into(),
            instance_id: "i".into(),
            batch: Batch::new(
                seq,
                Window {
                    start_ms: 0,
                    length_ms: 10_000,
                },
            ),
        }
    }

    #[test]
    fn entries_survive_reopening_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, old) = Wal::open(dir.path(), 0).unwrap();
        assert!(old.is_empty());
        let mut entries = vec![entry(1), entry(2), entry(3)];
        wal.append(&mut entries).unwrap();
        assert_eq!(entries.iter().map(|e| e.wal_seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        let current = wal.segments.last().unwrap().path.clone();
        drop(wal);
        // A crash in the middle of the next append.
        let mut file = OpenOptions::new().append(true).open(&current).unwrap();
        file.write_all(&[200, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(file);

        let (mut wal, replay) = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(replay.iter().map(|e| e.batch.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        let mut more = vec![entry(4)];
        wal.append(&mut more).unwrap();
        assert_eq!(more[0].wal_seq, 4);
        drop(wal);
        let (_, replay) = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(replay.len(), 4);
    }

    #[test]
    fn truncation_deletes_what_every_database_has() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 10).unwrap();
        let mut first = vec![entry(1), entry(2)];
        wal.append(&mut first).unwrap();
        assert_eq!(first[0].wal_seq, 10);
        wal.truncate_through(11).unwrap();
        let mut second = vec![entry(3)];
        wal.append(&mut second).unwrap();
        drop(wal);
        let (_, replay) = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(replay.iter().map(|e| e.wal_seq).collect::<Vec<_>>(), vec![12]);
    }
}
