//! Time partitions: one sled database per (resolution, time span), in its own
//! directory. Expiring data deletes whole directories, so the disk space is
//! returned at once and expiry never scans what it keeps.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::StoreError;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;

/// A resolution of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    /// Windows as the agents sent them (10 s by default).
    Raw,
    /// 1-minute rollups.
    Minute,
    /// 1-hour rollups.
    Hour,
}

impl Tier {
    /// Finest first.
    pub const ALL: [Tier; 3] = [Tier::Raw, Tier::Minute, Tier::Hour];

    /// Directory and API name.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Raw => "raw",
            Tier::Minute => "1m",
            Tier::Hour => "1h",
        }
    }

    /// Length of one window of this tier; raw windows have the agents' length.
    pub fn window_ms(self) -> Option<i64> {
        match self {
            Tier::Raw => None,
            Tier::Minute => Some(MINUTE_MS),
            Tier::Hour => Some(HOUR_MS),
        }
    }

    /// Time span of one partition (one database directory).
    pub fn partition_ms(self) -> i64 {
        match self {
            Tier::Raw => 6 * HOUR_MS,
            Tier::Minute => DAY_MS,
            Tier::Hour => 30 * DAY_MS,
        }
    }

    /// Time span compacted into one chunk (a divisor of the partition span).
    pub fn chunk_ms(self) -> i64 {
        match self {
            Tier::Raw => HOUR_MS,
            Tier::Minute => 6 * HOUR_MS,
            Tier::Hour => 15 * DAY_MS,
        }
    }

    /// Start of the window of this tier holding `time_ms` (raw: unchanged).
    pub fn align(self, time_ms: i64) -> i64 {
        match self.window_ms() {
            Some(len) => floor(time_ms, len),
            None => time_ms,
        }
    }

    fn cache_bytes(self) -> u64 {
        match self {
            Tier::Raw => 32 << 20,
            Tier::Minute | Tier::Hour => 8 << 20,
        }
    }
}

/// `time` rounded down to a multiple of `step`.
pub fn floor(time: i64, step: i64) -> i64 {
    time.div_euclid(step) * step
}

/// `time` rounded up to a multiple of `step`.
pub fn ceil(time: i64, step: i64) -> i64 {
    -floor(-time, step)
}

/// One partition database.
#[derive(Debug)]
pub(crate) struct Partition {
    pub tier: Tier,
    pub start_ms: i64,
    pub db: sled::Db,
    path: PathBuf,
}

impl Partition {
    pub(crate) fn end_ms(&self) -> i64 {
        self.start_ms + self.tier.partition_ms()
    }
}

/// Every open partition.
#[derive(Debug)]
pub(crate) struct Partitions {
    root: PathBuf,
    open: RwLock<BTreeMap<(Tier, i64), Arc<Partition>>>,
}

fn open_db(path: &Path, tier: Tier) -> Result<sled::Db, StoreError> {
    Ok(sled::Config::new()
        .path(path)
        .cache_capacity(tier.cache_bytes())
        .flush_every_ms(Some(1_000))
        .open()?)
}

impl Partitions {
    /// Opens every partition found under `root`.
    pub(crate) fn open(root: &Path) -> Result<Partitions, StoreError> {
        let mut open = BTreeMap::new();
        for tier in Tier::ALL {
            let dir = root.join(tier.name());
            std::fs::create_dir_all(&dir).map_err(|e| StoreError::Io(format!("creating {}: {e}", dir.display())))?;
            let entries =
                std::fs::read_dir(&dir).map_err(|e| StoreError::Io(format!("listing {}: {e}", dir.display())))?;
            for entry in entries {
                let entry = entry.map_err(|e| StoreError::Io(e.to_string()))?;
                let Some(start_ms) = entry.file_name().to_str().and_then(|n| n.parse::<i64>().ok()) else {
                    continue;
                };
                let path = entry.path();
                let db = open_db(&path, tier)?;
                open.insert(
                    (tier, start_ms),
                    Arc::new(Partition {
                        tier,
                        start_ms,
                        db,
                        path,
                    }),
                );
            }
        }
        Ok(Partitions {
            root: root.to_owned(),
            open: RwLock::new(open),
        })
    }

    fn read_map(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<(Tier, i64), Arc<Partition>>> {
        self.open.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_map(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<(Tier, i64), Arc<Partition>>> {
        self.open.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The partition of `tier` holding `time_ms`, if it exists.
    pub(crate) fn get(&self, tier: Tier, time_ms: i64) -> Option<Arc<Partition>> {
        self.read_map()
            .get(&(tier, floor(time_ms, tier.partition_ms())))
            .cloned()
    }

    /// The partition of `tier` holding `time_ms`, created when missing.
    pub(crate) fn get_or_create(&self, tier: Tier, time_ms: i64) -> Result<Arc<Partition>, StoreError> {
        if let Some(partition) = self.get(tier, time_ms) {
            return Ok(partition);
        }
        let start_ms = floor(time_ms, tier.partition_ms());
        let mut open = self.write_map();
        if let Some(partition) = open.get(&(tier, start_ms)) {
            return Ok(partition.clone());
        }
        let path = self.root.join(tier.name()).join(start_ms.to_string());
        let db = open_db(&path, tier)?;
        let partition = Arc::new(Partition {
            tier,
            start_ms,
            db,
            path,
        });
        open.insert((tier, start_ms), partition.clone());
        Ok(partition)
    }

    /// Partitions of `tier` overlapping `[from_ms, to_ms)`, oldest first.
    pub(crate) fn overlapping(&self, tier: Tier, from_ms: i64, to_ms: i64) -> Vec<Arc<Partition>> {
        let first = floor(from_ms, tier.partition_ms());
        self.read_map()
            .range((tier, first)..(tier, to_ms.max(first)))
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// Every partition.
    pub(crate) fn all(&self) -> Vec<Arc<Partition>> {
        self.read_map().values().cloned().collect()
    }

    /// Closes a partition and deletes its directory. Readers that still hold
    /// it finish on the unlinked files.
    pub(crate) fn remove(&self, tier: Tier, start_ms: i64) -> Result<(), StoreError> {
        let Some(partition) = self.write_map().remove(&(tier, start_ms)) else {
            return Ok(());
        };
        let path = partition.path.clone();
        drop(partition);
        std::fs::remove_dir_all(&path).map_err(|e| StoreError::Io(format!("removing {}: {e}", path.display())))
    }
}

/// Bytes used by the files below `path`.
pub(crate) fn disk_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => disk_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_never_cross_partitions_and_windows_nest() {
        for tier in Tier::ALL {
            assert_eq!(tier.partition_ms() % tier.chunk_ms(), 0, "{tier:?}");
        }
        assert_eq!(Tier::Minute.align(125_000), 120_000);
        assert_eq!(Tier::Hour.align(-1), -HOUR_MS);
        assert_eq!(ceil(125_000, MINUTE_MS), 180_000);
        assert_eq!(ceil(120_000, MINUTE_MS), 120_000);
    }

    #[test]
    fn removing_a_partition_deletes_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let partitions = Partitions::open(dir.path()).unwrap();
        let p = partitions.get_or_create(Tier::Raw, 7 * HOUR_MS).unwrap();
        assert_eq!(p.start_ms, 6 * HOUR_MS);
        p.db.insert(b"k", vec![0u8; 100_000]).unwrap();
        p.db.flush().unwrap();
        let before = disk_bytes(dir.path());
        drop(p);
        assert_eq!(partitions.overlapping(Tier::Raw, 0, 24 * HOUR_MS).len(), 1);
        partitions.remove(Tier::Raw, 6 * HOUR_MS).unwrap();
        assert!(partitions.get(Tier::Raw, 7 * HOUR_MS).is_none());
        assert!(disk_bytes(dir.path()) + 50_000 < before);
        let reopened = Partitions::open(dir.path()).unwrap();
        assert!(reopened.all().is_empty());
    }
}
