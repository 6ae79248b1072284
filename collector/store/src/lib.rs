#![doc = include_str!("../README.md")]
//!
//! # Design
//!
//! - **Durability**: every accepted batch is appended to a write-ahead log
//!   and fsynced (one fsync per group of batches) before it is acknowledged.
//!   Nothing else is on the acknowledgement's path.
//! - **Memtable**: an acknowledged batch is merged into an in-memory table
//!   of open raw windows (deltas since the last flush); the 1-minute and
//!   1-hour windows are sums of raw windows, derived when the table is
//!   flushed and, for reads, on the fly. Its size is bounded
//!   ([`Limits::memtable_bytes`]): half fills while the other half is
//!   flushed, and a full half makes ingest wait.
//! - **Runs**: a flush, on threads of its own (one per core), writes each partition's
//!   windows once, as an immutable compressed file of deltas, named after
//!   the last log entry it holds; readers add a window's deltas up. Runs
//!   are merged as they accumulate (size-tiered). No read-modify-write,
//!   so a window costs the same however many series exist.
//! - **Partitions**: windows live in directories per resolution and time
//!   span ([`Tier`]); expiry deletes whole directories.
//! - **Series**: keys are series id then window start, big-endian, so a range
//!   scan of one series is a time range. Query series are per service, every
//!   instance merged (histograms added, never averaged); per-instance
//!   counters (all statements of one instance and window in one packed
//!   record), pools and health checks have their own series. Each service
//!   also has a total series, every statement merged as it arrives, so a
//!   service-wide read ([`Store::service_stats`], the alert rules) reads one
//!   series instead of thousands.
//! - **Registry**: service and series ids and statement texts live in
//!   memory and in a sled database; new ones are written there once per
//!   group of batches, and synced by the flush before any run refers to
//!   them.
//! - **Late windows** are deltas for an old time: they merge into their own
//!   raw, 1-minute and 1-hour windows like any other. Merges do not depend
//!   on the order windows arrive in (a pool's "last" values go by window
//!   time, then by log order).
//! - **Sealing**: once a partition's span has passed, a background thread
//!   folds everything it holds into one immutable file of zstd blocks
//!   (`sealed.seg`), each series' windows as compressed chunks, and deletes
//!   the runs it folded. A window that arrives later still goes to a new run
//!   beside the sealed file, folded into a new sealed file once the
//!   partition has been quiet for 5 minutes.
//! - **Time**: every decision by the time (replay, sealing, retention)
//!   reads the [`Clock`] given to [`Store::open`]. Checks that the store
//!   agrees with itself: [`verify`].
//! - **Older stores**: windows that versions before the runs wrote to a
//!   sled database per partition are still read, and folded in when the
//!   partition is sealed.
//!
//! One writer ([`StoreWriter`]) owns every change; readers ([`Store`]) run
//! concurrently.

mod codec;
mod flush;
mod fold;
mod maintain;
mod memtable;
mod partition;
mod read;
mod registry;
mod retention;
mod segment;
mod verify;
mod wal;
mod write;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use codec::InstanceQuery;
pub use maintain::MaintenanceReport;
pub use memtable::MemtableStats;
pub use partition::{Tier, floor};
pub use read::{PoolWindow, SlowSample, tier_for_step};
pub use registry::{InstanceRecord, SeriesKey};
pub use verify::{Problem, VerifyReport, verify, verify_settled};
pub use write::{ApplyOutcome, BatchRequest};

use partition::Partitions;
use querypulse_domain::Clock;
use registry::Registry;
pub use retention::{MAX_MAX_BYTES, MAX_RETENTION_SECS, MIN_MAX_BYTES, Retention, RetentionError};
use wal::Wal;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled reported an error (I/O, or corruption it detected).
    #[error("storage: {0}")]
    Sled(#[from] sled::Error),
    /// A file operation failed.
    #[error("storage I/O: {0}")]
    Io(String),
    /// A stored record does not decode.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The file system is (nearly) full: nothing was written.
    #[error("disk full: {0}")]
    DiskFull(String),
}

impl From<StoreError> for querypulse_domain::source::SourceError {
    fn from(error: StoreError) -> Self {
        querypulse_domain::source::SourceError(error.to_string())
    }
}

/// Bounds on what one service may create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Fingerprints per service; statements beyond it are folded into the
    /// service's `other` series and counted.
    pub max_fingerprints_per_service: usize,
    /// Instances per service; batches of further instances are rejected.
    pub max_instances_per_service: usize,
    /// Slow-query samples kept per service and raw partition (6 h).
    pub max_slow_samples: u64,
    /// Bytes the memtable of open windows may take (approximately: the
    /// packed windows and an estimate of the map's overhead are counted, not
    /// the allocator's): half fills while the other half is flushed; a full
    /// half waits for the flush of the other (ingest slows down instead of
    /// growing). A half should hold two windows of every statement series
    /// (about 600 bytes each), else flushes come before the interval ends.
    pub memtable_bytes: usize,
    /// Free bytes kept on the store's file system: below them, batches and
    /// new instances are refused with [`StoreError::DiskFull`] (nothing is
    /// written, so nothing can be half written), and taken again as soon as
    /// space returns. Running out for real would leave sled's databases
    /// failing every write until a restart.
    pub min_free_disk_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_fingerprints_per_service: 10_000,
            max_instances_per_service: 5_000,
            max_slow_samples: 5_000,
            memtable_bytes: 1 << 30,
            min_free_disk_bytes: 256 << 20,
        }
    }
}

/// Counters of the memtable's flushes.
#[derive(Debug, Default)]
struct MemtableCounters {
    flushes: AtomicU64,
    early_flushes: AtomicU64,
    stalls: AtomicU64,
}

struct Shared {
    dir: PathBuf,
    registry: Registry,
    partitions: Partitions,
    /// Open windows not yet in the partitions (see [`memtable`]).
    tables: RwLock<memtable::Tables>,
    memtable: MemtableCounters,
    retention: RwLock<Retention>,
    limits: Limits,
    clock: Clock,
    /// Windows from this time on are in the services' total series too
    /// (see [`registry::SeriesKey::Service`]).
    service_totals_since: i64,
    /// What was found wrong on disk when the store opened (see
    /// [`Store::problems`]).
    problems: std::sync::Mutex<Vec<String>>,
    /// Set while the disk is too full to write (see [`Store::check_disk`]).
    disk_full: std::sync::Mutex<Option<String>>,
}

/// The read side of the store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.shared.dir)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`, replays whatever the
    /// write-ahead log holds that the databases do not, and returns the read
    /// handle and the one writer. Every decision by the time (replay,
    /// compaction, sealing, retention) reads `clock`.
    pub fn open(
        dir: &Path,
        retention: Retention,
        limits: Limits,
        clock: Clock,
    ) -> Result<(Store, StoreWriter), StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Io(format!("creating {}: {e}", dir.display())))?;
        let meta = partition::open_sled(sled::Config::new().path(dir.join("meta")).cache_capacity(16 << 20))?;
        let registry = Registry::load(meta)?;
        let (partitions, damaged) = Partitions::open(&dir.join("partitions"))?;
        // A store written before service totals existed has windows without
        // them up to its newest raw partition's end at most.
        let newest = partitions
            .all()
            .iter()
            .filter(|p| p.tier == Tier::Raw)
            .map(|p| p.end_ms())
            .max()
            .unwrap_or(i64::MIN);
        let service_totals_since = registry.service_totals_since(newest.max(clock.now_ms()))?;
        let store = Store {
            shared: Arc::new(Shared {
                dir: dir.to_owned(),
                registry,
                partitions,
                tables: RwLock::new(memtable::Tables::default()),
                memtable: MemtableCounters::default(),
                retention: RwLock::new(retention),
                limits,
                clock,
                service_totals_since,
                problems: std::sync::Mutex::new(damaged),
                disk_full: std::sync::Mutex::new(None),
            }),
        };
        let mut applied = write::applied_log(store.shared.registry.meta())?;
        for partition in store.shared.partitions.all() {
            applied = applied.max(partition.applied_log()?);
        }
        let (wal, entries, damage) = Wal::open(&dir.join("wal"), applied + 1)?;
        store.shared.problems.lock().expect("problems lock").extend(damage);
        let mut writer = StoreWriter::new(store.clone(), wal);
        if !entries.is_empty() {
            tracing::info!(entries = entries.len(), "replaying the write-ahead log");
            writer.replay(entries)?;
        }
        writer.checkpoint()?;
        Ok((store, writer))
    }

    /// What is wrong with the store: damage found on disk when it opened
    /// that could not be repaired without losing data (a damaged stretch of
    /// the write-ahead log, with the entries lost; a partition too damaged
    /// to open, moved to `quarantine/`), each already logged as an error,
    /// and, while it lasts, a full disk refusing writes. Empty when all is
    /// well.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = self.shared.problems.lock().expect("problems lock").clone();
        if let Some(full) = self.shared.disk_full.lock().expect("disk lock").clone() {
            problems.push(full);
        }
        problems
    }

    /// Bytes free for the store on its file system, if the system says.
    pub fn free_disk_bytes(&self) -> Option<u64> {
        let stat = rustix::fs::statvfs(&self.shared.dir).ok()?;
        Some(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    /// `Err(DiskFull)` while the store's file system has less than
    /// [`Limits::min_free_disk_bytes`] free; the condition shows in
    /// [`Store::problems`] until space returns.
    pub(crate) fn check_disk(&self) -> Result<(), StoreError> {
        let keep = self.shared.limits.min_free_disk_bytes;
        let free = self.free_disk_bytes();
        let mut full = self.shared.disk_full.lock().expect("disk lock");
        match free {
            Some(free) if free < keep => {
                let message = format!(
                    "the disk of {} has {} MiB free, under the {} MiB kept free: batches are refused until space is freed",
                    self.shared.dir.display(),
                    free >> 20,
                    keep >> 20
                );
                *full = Some(message.clone());
                Err(StoreError::DiskFull(message))
            }
            _ => {
                *full = None;
                Ok(())
            }
        }
    }

    /// Current retention settings.
    pub fn retention(&self) -> Retention {
        *self.shared.retention.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the retention settings; the writer applies them at its next
    /// maintenance pass.
    pub fn set_retention(&self, retention: Retention) {
        *self.shared.retention.write().unwrap_or_else(|p| p.into_inner()) = retention;
    }

    /// The clock the store decides by.
    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    /// The store's time now, milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        self.shared.clock.now_ms()
    }

    /// The limits the store enforces.
    pub fn limits(&self) -> Limits {
        self.shared.limits
    }

    /// Bytes on disk, every file of the store included.
    pub fn disk_bytes(&self) -> u64 {
        partition::disk_bytes(&self.shared.dir)
    }

    /// How the memtable of open windows fares: its size now, its flushes,
    /// and how often ingest had to wait for one.
    pub fn memtable_stats(&self) -> MemtableStats {
        let tables = self.tables();
        let counters = &self.shared.memtable;
        MemtableStats {
            bytes: tables.bytes() as u64,
            windows: tables.windows() as u64,
            flushes: counters.flushes.load(Ordering::Relaxed),
            early_flushes: counters.early_flushes.load(Ordering::Relaxed),
            stalls: counters.stalls.load(Ordering::Relaxed),
        }
    }

    fn registry(&self) -> &Registry {
        &self.shared.registry
    }

    /// What series `id` holds, for folding its windows.
    fn series_kind(&self, id: u32) -> Option<partition::SeriesKind> {
        use partition::SeriesKind;
        Some(match self.registry().series(id)? {
            SeriesKey::Query { .. } | SeriesKey::Service { .. } => SeriesKind::Query,
            SeriesKey::InstanceQueries { .. } => SeriesKind::Instances,
            SeriesKey::Pool { .. } => SeriesKind::Pool,
            SeriesKey::Health { .. } => SeriesKind::Health,
        })
    }

    /// The memtable, for a read: held while the partitions are read too, so
    /// a flush committing meanwhile cannot make a window count twice.
    fn tables(&self) -> RwLockReadGuard<'_, memtable::Tables> {
        self.shared.tables.read().unwrap_or_else(|p| p.into_inner())
    }

    fn tables_mut(&self) -> RwLockWriteGuard<'_, memtable::Tables> {
        self.shared.tables.write().unwrap_or_else(|p| p.into_inner())
    }

    fn partitions(&self) -> &Partitions {
        &self.shared.partitions
    }
}

/// The one writer: ingest, compaction, retention and checkpoints all go
/// through it, so no two changes ever race.
pub struct StoreWriter {
    store: Store,
    wal: Wal,
    state: write::WriterState,
}

impl Drop for StoreWriter {
    fn drop(&mut self) {
        // What a running flush has not made durable is still in the log.
        if let Err(error) = self.finish_flush() {
            tracing::warn!(%error, "finishing a memtable flush failed; the log will be replayed at the next start");
        }
        // A sealing thread holds its partition open; finish it so the store
        // can be opened again at once.
        if let Err(error) = self.wait_for_sealing() {
            tracing::warn!(%error, "finishing a partition sealing failed");
        }
    }
}

impl std::fmt::Debug for StoreWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreWriter")
            .field("next_log_entry", &self.wal.next_seq())
            .finish_non_exhaustive()
    }
}

impl StoreWriter {
    fn new(store: Store, wal: Wal) -> StoreWriter {
        StoreWriter {
            store,
            wal,
            state: write::WriterState::default(),
        }
    }

    /// The read handle of this writer's store.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

#[cfg(test)]
mod tests;

/// Hooks for tests outside this crate that need what a crash leaves behind
/// or how reads split a range; compiled only with the `testing` feature
/// (the collector's model-based test enables it as a dev-dependency).
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing {
    use querypulse_domain::Batch;

    use super::{StoreError, StoreWriter, Tier};

    /// Appends a batch to the write-ahead log and fsyncs it without applying
    /// it: what a crash between the fsync and the apply leaves. The next
    /// open replays it.
    pub fn log_without_applying(
        writer: &mut StoreWriter,
        service: &str,
        instance_id: &str,
        batch: Batch,
        received_ms: i64,
    ) -> Result<(), StoreError> {
        let mut entries = vec![super::codec::WalEntry {
            wal_seq: 0,
            received_ms,
            service: service.into(),
            instance_id: instance_id.into(),
            batch,
        }];
        writer.wal.append(&mut entries)
    }

    /// The resolutions a read of `[from, to)` uses, in time order.
    pub fn cover(from: i64, to: i64) -> Vec<(Tier, i64, i64)> {
        super::read::cover(from, to)
    }

    /// Starts a flush of the memtable in the background (after the running
    /// one, if any, has finished) and returns at once.
    pub fn start_flush(writer: &mut StoreWriter) -> Result<(), StoreError> {
        writer.finish_flush()?;
        writer.start_flush()
    }

    /// Waits until background sealing has finished; returns how many
    /// partitions it sealed.
    pub fn wait_for_sealing(writer: &mut StoreWriter) -> Result<usize, StoreError> {
        writer.wait_for_sealing()
    }
}
