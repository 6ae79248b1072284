//! Sealed partitions: an immutable, sorted file of keys and values in
//! zstd-compressed blocks, written once a partition's time span is over.
//!
//! sled needs well over twice the bytes of what it holds and never gives
//! space back; a closed partition is therefore rewritten into this compact
//! form (the way Prometheus turns its head into blocks). Reads binary-search
//! an in-memory index of block first keys and decompress the few blocks a
//! range touches.
//!
//! Layout: `magic` · blocks · index · footer. A block is a zstd frame, with
//! a checksum of its content, of a run of `(varint key length, key, varint
//! value length, value)` (segments written before checksums were added have
//! frames without one, and still read). The index lists
//! per block its first key, offset and compressed length; the footer holds the
//! index offset and length, the index's CRC-32 and the magic again.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::StoreError;
use super::codec::{In, Out};

const MAGIC: &[u8; 8] = b"QPSEG001";
/// Uncompressed bytes per block.
const BLOCK_BYTES: usize = 64 * 1024;
/// Decompressed blocks kept per segment.
const CACHED_BLOCKS: usize = 8;
const FOOTER_LEN: usize = 8 + 8 + 4 + 8;
/// zstd level of sealed segments, written once per partition: worth the
/// time for the bytes.
pub(crate) const SEALED_LEVEL: i32 = 3;
/// zstd level of runs, written by every memtable flush: fast.
pub(crate) const RUN_LEVEL: i32 = 1;

fn io(what: &str, path: &Path, error: std::io::Error) -> StoreError {
    StoreError::Io(format!("{what} {}: {error}", path.display()))
}

fn corrupt(path: &Path, what: &str) -> StoreError {
    StoreError::Corrupt(format!("{}: {what}", path.display()))
}

/// A key and its value (sled's reference-counted bytes, so handing out an
/// entry of a cached block or of a live database copies nothing large).
pub(crate) type Entry = (sled::IVec, sled::IVec);

/// Writes `entries` (strictly increasing keys) as a segment at `path`,
/// durably: written to a temporary file, synced, renamed into place. Blocks
/// are compressed at zstd `level`.
pub(crate) fn write(
    path: &Path,
    entries: impl Iterator<Item = Result<Entry, StoreError>>,
    level: i32,
) -> Result<(), StoreError> {
    let temp = path.with_extension("tmp");
    let file = File::create(&temp).map_err(|e| io("creating", &temp, e))?;
    let mut out = BufWriter::new(file);
    out.write_all(MAGIC).map_err(|e| io("writing", &temp, e))?;
    let mut offset = MAGIC.len() as u64;
    let mut index = Out::default();
    let mut blocks = 0u64;
    let mut block = Out::default();
    let mut first_key: Option<sled::IVec> = None;
    let mut previous: Option<sled::IVec> = None;
    // Each block's zstd frame carries a checksum of its content, which
    // decompression checks: a damaged block is an error, never other
    // numbers.
    let compressing = |e: std::io::Error| StoreError::Io(format!("compressing: {e}"));
    let mut compressor = zstd::bulk::Compressor::new(level).map_err(compressing)?;
    compressor
        .set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))
        .map_err(compressing)?;
    let mut flush_block = |block: &mut Out, first_key: &mut Option<sled::IVec>, out: &mut BufWriter<File>| {
        let Some(first) = first_key.take() else {
            return Ok(());
        };
        let compressed = compressor.compress(&block.0).map_err(compressing)?;
        out.write_all(&compressed).map_err(|e| io("writing", &temp, e))?;
        index.bytes(&first);
        index.u(offset);
        index.u(compressed.len() as u64);
        index.u(block.0.len() as u64);
        offset += compressed.len() as u64;
        blocks += 1;
        block.0.clear();
        Ok::<(), StoreError>(())
    };
    for entry in entries {
        let (key, value) = entry?;
        if previous.as_ref().is_some_and(|p| *p >= key) {
            return Err(StoreError::Corrupt("segment keys must increase".into()));
        }
        if first_key.is_none() {
            first_key = Some(key.clone());
        }
        block.bytes(&key);
        block.bytes(&value);
        previous = Some(key);
        if block.0.len() >= BLOCK_BYTES {
            flush_block(&mut block, &mut first_key, &mut out)?;
        }
    }
    flush_block(&mut block, &mut first_key, &mut out)?;
    let mut index_bytes = Out::default();
    index_bytes.u(blocks);
    index_bytes.0.extend_from_slice(&index.0);
    out.write_all(&index_bytes.0).map_err(|e| io("writing", &temp, e))?;
    let mut footer = Vec::with_capacity(FOOTER_LEN);
    footer.extend_from_slice(&offset.to_le_bytes());
    footer.extend_from_slice(&(index_bytes.0.len() as u64).to_le_bytes());
    footer.extend_from_slice(&crc32fast::hash(&index_bytes.0).to_le_bytes());
    footer.extend_from_slice(MAGIC);
    out.write_all(&footer).map_err(|e| io("writing", &temp, e))?;
    let file = out.into_inner().map_err(|e| io("writing", &temp, e.into_error()))?;
    file.sync_all().map_err(|e| io("syncing", &temp, e))?;
    drop(file);
    std::fs::rename(&temp, path).map_err(|e| io("renaming", &temp, e))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("syncing", dir, e))?;
    }
    Ok(())
}

#[derive(Debug)]
struct Block {
    first_key: Vec<u8>,
    offset: u64,
    len: u32,
    plain_len: u32,
}

/// An open segment.
#[derive(Debug)]
pub(crate) struct Segment {
    path: PathBuf,
    file: File,
    blocks: Vec<Block>,
    cache: Mutex<Vec<(usize, Arc<Vec<Entry>>)>>,
    /// Blocks found damaged (each logged once).
    damaged: Mutex<std::collections::HashSet<usize>>,
}

impl Segment {
    /// Opens a segment and reads its index; a torn or foreign file is an
    /// error (sealing writes to a temporary name first, so a torn segment is
    /// never under the final name).
    pub(crate) fn open(path: &Path) -> Result<Segment, StoreError> {
        let file = File::open(path).map_err(|e| io("opening", path, e))?;
        let len = file.metadata().map_err(|e| io("inspecting", path, e))?.len();
        if len < (MAGIC.len() + FOOTER_LEN) as u64 {
            return Err(corrupt(path, "too short for a segment"));
        }
        let mut footer = [0u8; FOOTER_LEN];
        file.read_exact_at(&mut footer, len - FOOTER_LEN as u64)
            .map_err(|e| io("reading", path, e))?;
        if &footer[20..] != MAGIC {
            return Err(corrupt(path, "not a segment"));
        }
        let index_offset = u64::from_le_bytes(footer[..8].try_into().expect("8 bytes"));
        let index_len = u64::from_le_bytes(footer[8..16].try_into().expect("8 bytes"));
        let crc = u32::from_le_bytes(footer[16..20].try_into().expect("4 bytes"));
        if index_offset.checked_add(index_len) != Some(len - FOOTER_LEN as u64) {
            return Err(corrupt(path, "index out of place"));
        }
        let mut index = vec![0u8; index_len as usize];
        file.read_exact_at(&mut index, index_offset)
            .map_err(|e| io("reading", path, e))?;
        if crc32fast::hash(&index) != crc {
            return Err(corrupt(path, "index checksum mismatch"));
        }
        let mut input = In(&index);
        let count = input.u()?;
        let mut blocks = Vec::with_capacity(count.min(1 << 20) as usize);
        for _ in 0..count {
            let first_key = input.bytes()?.to_vec();
            let offset = input.u()?;
            let len = u32::try_from(input.u()?).map_err(|_| corrupt(path, "block length"))?;
            let plain_len = u32::try_from(input.u()?).map_err(|_| corrupt(path, "block length"))?;
            if offset + u64::from(len) > index_offset {
                return Err(corrupt(path, "block beyond the index"));
            }
            blocks.push(Block {
                first_key,
                offset,
                len,
                plain_len,
            });
        }
        Ok(Segment {
            path: path.to_owned(),
            file,
            blocks,
            cache: Mutex::new(Vec::new()),
            damaged: Mutex::new(std::collections::HashSet::new()),
        })
    }

    fn block(&self, at: usize) -> Result<Arc<Vec<Entry>>, StoreError> {
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, entries)) = cache.iter().find(|(i, _)| *i == at) {
                return Ok(entries.clone());
            }
        }
        let entries = self.read_block(at)?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHED_BLOCKS {
            cache.remove(0);
        }
        cache.push((at, entries.clone()));
        Ok(entries)
    }

    /// Block `at`, read from the file and checked (not from the cache).
    fn read_block(&self, at: usize) -> Result<Arc<Vec<Entry>>, StoreError> {
        let block = &self.blocks[at];
        let mut compressed = vec![0u8; block.len as usize];
        self.file
            .read_exact_at(&mut compressed, block.offset)
            .map_err(|e| io("reading", &self.path, e))?;
        let plain = super::codec::decompress(&compressed, block.plain_len as usize).map_err(|e| {
            let error = format!("{}: block {at} is damaged ({e})", self.path.display());
            // Once per block: reads touching it fail each time.
            if self.damaged.lock().unwrap_or_else(|p| p.into_inner()).insert(at) {
                tracing::error!("{error}; reads that need it fail, run `querypulse verify`");
            }
            StoreError::Corrupt(error)
        })?;
        let mut input = In(&plain);
        let mut entries = Vec::new();
        while !input.is_empty() {
            let key = sled::IVec::from(input.bytes()?);
            entries.push((key, sled::IVec::from(input.bytes()?)));
        }
        Ok(Arc::new(entries))
    }

    /// The blocks that may hold keys in `range`.
    fn blocks_for(&self, range: &Range<&[u8]>) -> Range<usize> {
        // The last block whose first key is at or before the start.
        let first = self
            .blocks
            .partition_point(|b| b.first_key.as_slice() <= range.start)
            .saturating_sub(1);
        let end = self.blocks.partition_point(|b| b.first_key.as_slice() < range.end);
        first..end.max(first)
    }

    /// Every entry with a key in `range`, in key order.
    pub(crate) fn range(&self, range: Range<&[u8]>) -> Result<Vec<Entry>, StoreError> {
        let mut out = Vec::new();
        for at in self.blocks_for(&range) {
            let block = self.block(at)?;
            let start = block.partition_point(|(k, _)| k.as_ref() < range.start);
            for (k, v) in &block[start..] {
                if k.as_ref() >= range.end {
                    break;
                }
                out.push((k.clone(), v.clone()));
            }
        }
        Ok(out)
    }

    /// The value of one key.
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let at = self.blocks.partition_point(|b| b.first_key.as_slice() <= key);
        if at == 0 {
            return Ok(None);
        }
        let block = self.block(at - 1)?;
        Ok(block
            .binary_search_by(|(k, _)| k.as_ref().cmp(key))
            .ok()
            .map(|i| block[i].1.to_vec()))
    }

    /// Every entry, in key order (for rewriting the segment).
    pub(crate) fn iter(&self) -> impl Iterator<Item = Result<Entry, StoreError>> + '_ {
        (0..self.blocks.len()).flat_map(move |at| match self.block(at) {
            Ok(entries) => entries.iter().cloned().map(Ok).collect::<Vec<_>>(),
            Err(e) => vec![Err(e)],
        })
    }

    /// Every entry, in key order, each block read from the file and
    /// checked, whatever the cache holds (for `querypulse verify`).
    pub(crate) fn iter_from_disk(&self) -> impl Iterator<Item = Result<Entry, StoreError>> + '_ {
        (0..self.blocks.len()).flat_map(move |at| match self.read_block(at) {
            Ok(entries) => entries.iter().cloned().map(Ok).collect::<Vec<_>>(),
            Err(e) => vec![Err(e)],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(n: u32) -> Vec<Entry> {
        (0..n)
            .map(|i| {
                (
                    format!("key-{i:08}").into_bytes().into(),
                    vec![(i % 251) as u8; (i % 300) as usize].into(),
                )
            })
            .collect()
    }

    #[test]
    fn ranges_and_gets_find_exactly_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.seg");
        let all = entries(20_000);
        write(&path, all.iter().cloned().map(Ok), SEALED_LEVEL).unwrap();
        let segment = Segment::open(&path).unwrap();
        assert!(segment.blocks.len() > 10, "{} blocks", segment.blocks.len());
        assert_eq!(
            segment
                .range(b"key-00000100".as_slice()..b"key-00000105".as_slice())
                .unwrap(),
            all[100..105].to_vec()
        );
        assert_eq!(segment.range(b"a".as_slice()..b"z".as_slice()).unwrap().len(), 20_000);
        assert!(segment.range(b"key-9".as_slice()..b"z".as_slice()).unwrap().is_empty());
        assert!(segment.range(b"a".as_slice()..b"b".as_slice()).unwrap().is_empty());
        assert_eq!(segment.get(b"key-00019999").unwrap(), Some(all[19_999].1.to_vec()));
        assert_eq!(segment.get(b"key-00000000").unwrap(), Some(all[0].1.to_vec()));
        assert_eq!(segment.get(b"key-0000000").unwrap(), None);
        assert_eq!(segment.get(b"zzz").unwrap(), None);
        assert_eq!(segment.iter().collect::<Result<Vec<_>, _>>().unwrap(), all);
    }

    #[test]
    fn empty_segments_and_damaged_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.seg");
        write(&path, std::iter::empty(), RUN_LEVEL).unwrap();
        let segment = Segment::open(&path).unwrap();
        assert!(segment.range(b"a".as_slice()..b"z".as_slice()).unwrap().is_empty());
        assert_eq!(segment.get(b"a").unwrap(), None);

        let path = dir.path().join("p.seg");
        write(&path, entries(500).into_iter().map(Ok), SEALED_LEVEL).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() - FOOTER_LEN - 3;
        bytes[at] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert!(Segment::open(&path).is_err(), "a damaged index is detected");
        std::fs::write(&path, b"short").unwrap();
        assert!(Segment::open(&path).is_err());
        assert!(
            write(
                &path,
                vec![Ok((b"b".into(), b"".into())), Ok((b"a".into(), b"".into()))].into_iter(),
                RUN_LEVEL
            )
            .is_err()
        );
    }

    #[test]
    fn a_flipped_byte_in_a_block_fails_its_reads_and_never_changes_a_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.seg");
        let written = entries(3_000);
        write(&path, written.clone().into_iter().map(Ok), SEALED_LEVEL).unwrap();
        let clean = std::fs::read(&path).unwrap();
        let segment = Segment::open(&path).unwrap();
        let blocks_end = segment.blocks.last().map(|b| b.offset + u64::from(b.len)).unwrap() as usize;
        assert!(segment.blocks.len() > 1, "several blocks");
        drop(segment);
        let everything = b"".as_slice()..b"\xff\xff\xff\xff\xff".as_slice();
        let mut failed = 0;
        for at in (MAGIC.len()..blocks_end).step_by(97) {
            let mut bytes = clean.clone();
            bytes[at] ^= 0x10;
            std::fs::write(&path, &bytes).unwrap();
            let segment = Segment::open(&path).expect("the index is intact");
            match segment.range(everything.clone()) {
                Err(StoreError::Corrupt(message)) => {
                    assert!(message.contains("is damaged"), "{message}");
                    failed += 1;
                }
                Err(other) => panic!("byte {at}: {other}"),
                Ok(read) => assert_eq!(read, written, "byte {at} changed what the segment holds"),
            }
        }
        assert!(failed > 0);
    }

    #[test]
    fn compresses_alike_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.seg");
        let alike: Vec<Entry> = (0..10_000u32)
            .map(|i| (i.to_be_bytes().as_slice().into(), b"window 1 2 3 4 5".repeat(4).into()))
            .collect();
        let logical: usize = alike.iter().map(|(k, v)| k.len() + v.len()).sum();
        write(&path, alike.into_iter().map(Ok), SEALED_LEVEL).unwrap();
        let on_disk = std::fs::metadata(&path).unwrap().len() as usize;
        assert!(on_disk * 10 < logical, "{on_disk} B on disk for {logical} B");
    }
}
