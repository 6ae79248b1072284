//! The write-ahead log: batches are appended and fsynced here before they
//! are acknowledged, then applied to the partition databases without waiting
//! for them to reach the disk. After a crash, entries not yet applied (or not
//! yet flushed) by a database are applied again; every database records the
//! last entry it applied, so nothing is applied twice.
//!
//! Frames: length (u32 LE), CRC-32 of the payload (u32 LE), payload. A torn
//! last frame (a crash mid-append) is cut off when the log is opened.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::StoreError;
use super::codec::{Out, WalEntry, decode_wal, encode_wal_into, wal_seq_of};

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
    /// A failed append could not be taken back: start a new segment.
    rotate_after_failure: bool,
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.log"))
}

impl Wal {
    /// Opens the log in `dir` and returns every intact entry in it, oldest
    /// first, and a description of each damaged stretch found between
    /// intact entries (see [`read_segment`]). `min_next_seq` is the lowest
    /// sequence number new entries may use (the highest number any database
    /// has applied, plus one).
    pub(crate) fn open(dir: &Path, min_next_seq: u64) -> Result<(Wal, Vec<WalEntry>, Vec<String>), StoreError> {
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
        let mut damage = Vec::new();
        for segment in &segments {
            read_segment(&segment.path, segment.first_seq, &mut entries, &mut damage)?;
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
                rotate_after_failure: false,
            },
            entries,
            damage,
        ))
    }

    /// Numbers the entries, appends them and makes them durable.
    pub(crate) fn append(&mut self, entries: &mut [WalEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        if self.current_bytes > SEGMENT_BYTES || self.rotate_after_failure {
            self.rotate()?;
            self.rotate_after_failure = false;
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
        let written = self
            .current
            .write_all(&frames)
            .map_err(|e| io("appending to", path, e))
            .and_then(|()| self.current.sync_data().map_err(|e| io("syncing", path, e)));
        if let Err(error) = written {
            // Nothing of a failed append may stay (a disk that filled up
            // mid-write): later frames would follow a partial one. If even
            // that fails, the next append goes to a fresh segment.
            if self.current.set_len(self.current_bytes).is_err() {
                self.rotate_after_failure = true;
            }
            for entry in entries.iter_mut() {
                entry.wal_seq = 0;
            }
            self.next_seq -= entries.len() as u64;
            return Err(error);
        }
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

/// Reads a segment's frames. A bad frame (wrong checksum, length past the
/// end, an entry that does not decode) followed by nothing readable is a
/// torn tail, left by a crash mid-append and never acknowledged (an
/// acknowledgement follows a successful sync): it is cut off. A bad frame
/// followed by good ones is damage to entries that may have been
/// acknowledged: the good frames after it are found again by their own
/// length, checksum and sequence number and kept, and what was lost is
/// described in `damage` and logged as an error; the file is left as it
/// is.
fn read_segment(
    path: &Path,
    first_seq: u64,
    entries: &mut Vec<WalEntry>,
    damage: &mut Vec<String>,
) -> Result<(), StoreError> {
    let data = std::fs::read(path).map_err(|e| io("reading", path, e))?;
    let mut last_seq = None;
    let mut at = 0;
    while at < data.len() {
        if let Some((entry, next)) = frame_at(&data, at, None) {
            last_seq = Some(entry.wal_seq);
            entries.push(entry);
            at = next;
            continue;
        }
        // Where do good frames start again, if anywhere?
        let lowest = last_seq.map_or(first_seq, |s| s + 1);
        let resumed =
            (at + 1..data.len()).find_map(|start| frame_at(&data, start, Some(lowest)).map(|found| (start, found)));
        let Some((start, (entry, next))) = resumed else {
            tracing::warn!(path = %path.display(), cut = data.len() - at, "cutting a torn tail off the write-ahead log");
            let file = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| io("opening", path, e))?;
            file.set_len(at as u64).map_err(|e| io("truncating", path, e))?;
            file.sync_all().map_err(|e| io("syncing", path, e))?;
            return Ok(());
        };
        let lost = match entry.wal_seq.checked_sub(lowest) {
            Some(0) | None => "no entry".to_owned(),
            Some(1) => format!("entry {lowest}"),
            Some(_) => format!("entries {lowest} to {}", entry.wal_seq - 1),
        };
        let message = format!(
            "write-ahead log {}: bytes {at} to {start} are damaged, {lost} lost; the log after them was read",
            path.display()
        );
        tracing::error!("{message}");
        damage.push(message);
        last_seq = Some(entry.wal_seq);
        entries.push(entry);
        at = next;
    }
    Ok(())
}

/// The entry framed at `at` and where the next frame starts, if the frame
/// is whole, its checksum matches and it decodes; with `lowest`, only an
/// entry numbered from `lowest` on (below `lowest` + 2^32) counts, which
/// is checked before the checksum so a search through damaged bytes is
/// cheap.
fn frame_at(data: &[u8], at: usize, lowest: Option<u64>) -> Option<(WalEntry, usize)> {
    let header = data.get(at..at + 8)?;
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    if len > MAX_FRAME {
        return None;
    }
    let payload = data.get(at + 8..at + 8 + len)?;
    if let Some(lowest) = lowest {
        let seq = wal_seq_of(payload)?;
        if seq < lowest || seq - lowest > u64::from(u32::MAX) {
            return None;
        }
    }
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let entry = decode_wal(payload).ok()?;
    Some((entry, at + 8 + len))
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
        let (mut wal, old, _) = Wal::open(dir.path(), 0).unwrap();
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

        let (mut wal, replay, damage) = Wal::open(dir.path(), 0).unwrap();
        assert!(damage.is_empty(), "a torn tail is not damage: {damage:?}");
        assert_eq!(replay.iter().map(|e| e.batch.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        let mut more = vec![entry(4)];
        wal.append(&mut more).unwrap();
        assert_eq!(more[0].wal_seq, 4);
        drop(wal);
        let (_, replay, _) = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(replay.len(), 4);
    }

    #[test]
    fn truncation_deletes_what_every_database_has() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = Wal::open(dir.path(), 10).unwrap();
        let mut first = vec![entry(1), entry(2)];
        wal.append(&mut first).unwrap();
        assert_eq!(first[0].wal_seq, 10);
        wal.truncate_through(11).unwrap();
        let mut second = vec![entry(3)];
        wal.append(&mut second).unwrap();
        drop(wal);
        let (_, replay, _) = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(replay.iter().map(|e| e.wal_seq).collect::<Vec<_>>(), vec![12]);
    }

    #[test]
    fn a_damaged_frame_in_the_middle_loses_only_itself_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = Wal::open(dir.path(), 0).unwrap();
        let mut entries: Vec<WalEntry> = (1..=6).map(entry).collect();
        wal.append(&mut entries).unwrap();
        let current = wal.segments.last().unwrap().path.clone();
        drop(wal);
        // Flip a byte inside the third frame's payload.
        let mut bytes = std::fs::read(&current).unwrap();
        let mut at = 0;
        for _ in 0..2 {
            at += 8 + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        }
        let third = at;
        bytes[third + 12] ^= 0x5a;
        std::fs::write(&current, &bytes).unwrap();

        let (_, replay, damage) = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(
            replay.iter().map(|e| e.batch.seq).collect::<Vec<_>>(),
            vec![1, 2, 4, 5, 6],
            "the frames after the damaged one are kept"
        );
        assert_eq!(damage.len(), 1, "{damage:?}");
        assert!(damage[0].contains("entry 3 lost"), "{damage:?}");
        assert_eq!(
            std::fs::read(&current).unwrap(),
            bytes,
            "the damaged file is left as it was"
        );
        // Opening again finds the same, and loses nothing more.
        let (_, again, damage) = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(again.len(), 5);
        assert_eq!(damage.len(), 1);
    }

    #[test]
    fn a_damaged_last_frame_is_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = Wal::open(dir.path(), 0).unwrap();
        wal.append(&mut [entry(1), entry(2)]).unwrap();
        let current = wal.segments.last().unwrap().path.clone();
        drop(wal);
        let mut bytes = std::fs::read(&current).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0xff;
        std::fs::write(&current, &bytes).unwrap();
        let (_, replay, damage) = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(replay.len(), 1);
        assert!(damage.is_empty(), "{damage:?}");
    }

    /// Where the child process of
    /// `a_failed_append_leaves_no_partial_frame_and_loses_nothing` keeps its
    /// log; set only in that child.
    const CHILD_DIR: &str = "QUERYPULSE_WAL_APPEND_CHILD_DIR";

    /// A disk that fills up mid-append (here: the file-size limit, EFBIG):
    /// the append fails, nothing of it stays in the file, and every entry
    /// appended before it is read back, with no damage reported.
    #[test]
    fn a_failed_append_leaves_no_partial_frame_and_loses_nothing() {
        if let Ok(dir) = std::env::var(CHILD_DIR) {
            // The child: append groups of entries until the limit cuts one.
            let (mut wal, _, _) = Wal::open(Path::new(&dir), 0).unwrap();
            let mut appended = 0u64;
            for group in 0..10_000u64 {
                let mut entries: Vec<WalEntry> = (0..16).map(|i| entry(group * 16 + i + 1)).collect();
                if wal.append(&mut entries).is_err() {
                    assert!(
                        entries.iter().all(|e| e.wal_seq == 0),
                        "a failed append numbers nothing"
                    );
                    // Trying the same again fails the same way, and leaves
                    // nothing either.
                    let mut again: Vec<WalEntry> = (0..16).map(|i| entry(group * 16 + i + 1)).collect();
                    assert!(wal.append(&mut again).is_err());
                    println!("appended {appended}");
                    return;
                }
                appended += 16;
            }
            panic!("the file-size limit never cut an append");
        }
        let dir = tempfile::tempdir().unwrap();
        // SIGXFSZ ignored (inherited across exec), so a write past the limit
        // fails with EFBIG instead of killing the process.
        let output = std::process::Command::new("bash")
            .arg("-c")
            .arg(r#"trap "" XFSZ; ulimit -f 40; exec "$0" --exact "$1" --nocapture --test-threads 1"#)
            .arg(std::env::current_exe().unwrap())
            .arg("wal::tests::a_failed_append_leaves_no_partial_frame_and_loses_nothing")
            .env(CHILD_DIR, dir.path())
            .output()
            .expect("bash runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let appended: u64 = stdout
            .lines()
            // libtest may print the test's name on the same line first.
            .find_map(|l| l.split_once("appended ").map(|(_, n)| n.trim()))
            .expect("the child reports what it appended")
            .parse()
            .unwrap();
        assert!(appended >= 16, "{stdout}");

        // The log ends exactly after its last whole frame.
        for file in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(file.unwrap().path()).unwrap();
            let mut at = 0;
            while at < bytes.len() {
                let (_, next) = frame_at(&bytes, at, None)
                    .unwrap_or_else(|| panic!("a partial frame at byte {at} of {}", bytes.len()));
                at = next;
            }
        }
        let (mut wal, replay, damage) = Wal::open(dir.path(), 0).unwrap();
        assert!(damage.is_empty(), "{damage:?}");
        assert_eq!(
            replay.iter().map(|e| e.batch.seq).collect::<Vec<_>>(),
            (1..=appended).collect::<Vec<_>>()
        );
        // With room again, appends carry on after the last good entry.
        let mut more = vec![entry(appended + 1)];
        wal.append(&mut more).unwrap();
        assert_eq!(more[0].wal_seq, appended + 1);
        drop(wal);
        let (_, replay, _) = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(replay.len() as u64, appended + 1);
    }
}
