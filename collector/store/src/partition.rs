//! Time partitions: one directory per (resolution, time span). Expiring data
//! deletes whole directories, so the disk space is returned at once and
//! expiry never scans what it keeps.
//!
//! A partition holds up to three kinds of sources. Runs (`run-*.seg`) are
//! immutable files of window deltas, one per memtable flush (merged with each
//! other as they accumulate); a key may be in several runs, and readers add
//! them up. The sled database (`live`, or `overlay` once sealed) holds what a
//! log replay wrote, as complete values. A sealed segment (`sealed.seg`) is
//! the whole partition folded into compressed chunks once its span is over.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use super::StoreError;
use super::fold;
use super::segment::{self, Segment};

/// What a series holds, for folding its windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SeriesKind {
    Query,
    Instances,
    Pool,
    Health,
}

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

/// One partition: an open sled database while its time span is current, a
/// sealed segment file once it is over (plus a small sled overlay for the
/// rare window that arrives later still).
#[derive(Debug)]
pub(crate) struct Partition {
    pub tier: Tier,
    pub start_ms: i64,
    dir: PathBuf,
    live: Option<sled::Db>,
    sealed: Option<Segment>,
    overlay: OnceLock<sled::Db>,
    /// Changes to the runs since the partition was opened.
    generation: AtomicU64,
    /// Held shared by a read, exclusively while the runs change: a read sees
    /// the runs a merge consumed or the run it wrote, never both.
    applying: RwLock<()>,
    /// Flushed memtables, oldest first (changed under `applying`).
    runs: RwLock<Vec<Arc<Run>>>,
    /// Numbers run file names apart.
    run_names: AtomicU64,
}

/// One run: window deltas of the memtable flushes up to log entry `seq`.
#[derive(Debug)]
pub(crate) struct Run {
    /// The last log entry whose windows the run holds.
    pub seq: u64,
    /// Tells runs of the same entry apart (a merge names its run after the
    /// newest run it consumed); never reused within a partition.
    number: u64,
    pub bytes: u64,
    path: PathBuf,
    segment: Segment,
}

impl Run {
    fn open(path: PathBuf) -> Result<Run, StoreError> {
        let (seq, number) =
            run_name(&path).ok_or_else(|| StoreError::Corrupt(format!("{}: not a run name", path.display())))?;
        let bytes = std::fs::metadata(&path)
            .map_err(|e| StoreError::Io(format!("inspecting {}: {e}", path.display())))?
            .len();
        Ok(Run {
            seq,
            number,
            bytes,
            segment: Segment::open(&path)?,
            path,
        })
    }

    /// Every entry of the run, in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Result<Entry, StoreError>> + '_ {
        self.segment.iter()
    }

    /// Deletes a run that was written but never installed (its flush
    /// failed): left on disk, the next start would load it beside the run a
    /// retry writes, and count its windows twice.
    pub(crate) fn discard(self) {
        if let Err(error) = std::fs::remove_file(&self.path) {
            tracing::warn!(%error, path = %self.path.display(), "removing a run of a failed flush failed");
        }
    }
}

/// The log entry and the number in a run's file name, `run-<seq>-<n>.seg`.
fn run_name(path: &Path) -> Option<(u64, u64)> {
    let name = path.file_name()?.to_str()?.strip_prefix("run-")?.strip_suffix(".seg")?;
    let (seq, n) = name.split_once('-')?;
    Some((seq.parse().ok()?, n.parse().ok()?))
}

pub(crate) use super::segment::Entry;

const LIVE: &str = "live";
const SEALED: &str = "sealed.seg";
const OVERLAY: &str = "overlay";
const SEALING: &str = "sealing.seg";

impl Partition {
    pub(crate) fn end_ms(&self) -> i64 {
        self.start_ms + self.tier.partition_ms()
    }

    /// Whether the partition has been sealed.
    pub(crate) fn is_sealed(&self) -> bool {
        self.sealed.is_some()
    }

    /// Whether a sealed partition took late writes since it was sealed.
    pub(crate) fn has_overlay(&self) -> bool {
        self.overlay.get().is_some()
    }

    fn mutable(&self) -> Option<&sled::Db> {
        self.live.as_ref().or(self.overlay.get())
    }

    /// The value of `key`.
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let _reading = self.applying.read().unwrap_or_else(|p| p.into_inner());
        if let Some(db) = self.mutable()
            && let Some(value) = db.get(key)?
        {
            return Ok(Some(value.to_vec()));
        }
        match &self.sealed {
            Some(segment) => segment.get(key),
            None => Ok(None),
        }
    }

    /// Entries with keys in `[start, end)`, in key order, runs included: a
    /// key may come several times (a window's deltas), and the caller adds
    /// the values up.
    pub(crate) fn range(&self, start: &[u8], end: &[u8]) -> Result<Vec<Entry>, StoreError> {
        let _reading = self.applying.read().unwrap_or_else(|p| p.into_inner());
        let mut out = self.range_stored(start, end)?;
        let runs = self.runs.read().unwrap_or_else(|p| p.into_inner());
        if runs.is_empty() {
            return Ok(out);
        }
        for run in runs.iter() {
            out.extend(run.segment.range(start..end)?);
        }
        // Stable: equal keys keep their order (stored value first).
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn range_stored(&self, start: &[u8], end: &[u8]) -> Result<Vec<Entry>, StoreError> {
        let mutable = self
            .mutable()
            .into_iter()
            .flat_map(|db| db.range(start..end))
            .map(sled_entry);
        match &self.sealed {
            None => mutable.collect(),
            Some(segment) => merge(segment.range(start..end)?.into_iter().map(Ok), mutable).collect(),
        }
    }

    /// The last log entry the partition holds every window of (database and
    /// runs).
    pub(crate) fn applied_log(&self) -> Result<u64, StoreError> {
        let stored = match self.get(super::codec::key::APPLIED_LOG)? {
            Some(bytes) => u64::from_be_bytes(
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("applied log position".into()))?,
            ),
            None => 0,
        };
        Ok(stored.max(self.runs_applied()))
    }

    fn runs_applied(&self) -> u64 {
        let runs = self.runs.read().unwrap_or_else(|p| p.into_inner());
        runs.iter().map(|r| r.seq).max().unwrap_or(0)
    }

    /// The runs, oldest first.
    pub(crate) fn runs(&self) -> Vec<Arc<Run>> {
        self.runs.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Writes `entries` (strictly increasing keys) as a new run holding the
    /// windows of log entries up to `seq`, durably, without showing it to
    /// readers yet ([`Partition::install_run`] does).
    pub(crate) fn write_run(
        &self,
        seq: u64,
        entries: impl Iterator<Item = Result<Entry, StoreError>>,
    ) -> Result<Run, StoreError> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| StoreError::Io(format!("creating {}: {e}", self.dir.display())))?;
        let n = self.run_names.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("run-{seq:020}-{n:06}.seg"));
        segment::write(&path, entries, segment::RUN_LEVEL)?;
        sync_dir(&self.dir)?;
        Run::open(path)
    }

    /// Shows a run to readers (and to the log replay).
    pub(crate) fn install_run(&self, run: Run) {
        self.replace_runs(&[], Some(run));
    }

    /// Replaces `consumed` runs by `merged` (which holds their sum) at once,
    /// then deletes the consumed files.
    pub(crate) fn replace_runs(&self, consumed: &[Arc<Run>], merged: Option<Run>) {
        {
            let _applying = self.applying.write().unwrap_or_else(|p| p.into_inner());
            let mut runs = self.runs.write().unwrap_or_else(|p| p.into_inner());
            runs.retain(|r| !consumed.iter().any(|c| Arc::ptr_eq(r, c)));
            if let Some(run) = merged {
                runs.push(Arc::new(run));
                runs.sort_by_key(|r| r.seq);
            }
            self.generation.fetch_add(1, Ordering::Release);
        }
        for run in consumed {
            if let Err(error) = std::fs::remove_file(&run.path) {
                tracing::warn!(%error, path = %run.path.display(), "removing a merged run failed");
            }
        }
    }

    /// Changes every time the runs change: sealing checks that nothing was
    /// written while it ran.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Every entry of the sealed segment (not the overlay), read lazily
    /// from the file and checked, whatever the block cache holds; empty for
    /// a live partition.
    pub(crate) fn sealed_entries(&self) -> impl Iterator<Item = Result<Entry, StoreError>> + '_ {
        self.sealed.iter().flat_map(|segment| segment.iter_from_disk())
    }

    /// Every entry of the sealed segment and the database (not the runs),
    /// in key order, read lazily.
    pub(crate) fn entries_base(&self) -> impl Iterator<Item = Result<Entry, StoreError>> + '_ {
        let mutable = self.mutable().into_iter().flat_map(|db| db.iter()).map(sled_entry);
        merge(self.sealed.iter().flat_map(|segment| segment.iter()), mutable)
    }

    fn remove_dir(&self, name: &str) -> Result<(), StoreError> {
        let path = self.dir.join(name);
        match std::fs::remove_dir_all(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::Io(format!("removing {}: {e}", path.display()))),
        }
    }
}

fn sled_entry(entry: sled::Result<(sled::IVec, sled::IVec)>) -> Result<Entry, StoreError> {
    Ok(entry?)
}

/// Merges two key-ordered entry streams; on equal keys the entry of `newer`
/// wins.
fn merge<'a>(
    older: impl Iterator<Item = Result<Entry, StoreError>> + 'a,
    newer: impl Iterator<Item = Result<Entry, StoreError>> + 'a,
) -> impl Iterator<Item = Result<Entry, StoreError>> + 'a {
    let (mut older, mut newer) = (older.peekable(), newer.peekable());
    std::iter::from_fn(move || {
        let take_newer = match (older.peek(), newer.peek()) {
            (Some(Ok(a)), Some(Ok(b))) if a.0 == b.0 => {
                older.next();
                true
            }
            (Some(Ok(a)), Some(Ok(b))) => b.0 < a.0,
            (Some(Err(_)), _) | (None, None) => false,
            (_, Some(Err(_))) | (None, Some(_)) => true,
            (Some(_), None) => false,
        };
        if take_newer { newer.next() } else { older.next() }
    })
}

/// Every open partition.
#[derive(Debug)]
pub(crate) struct Partitions {
    root: PathBuf,
    open: RwLock<BTreeMap<(Tier, i64), Arc<Partition>>>,
}

fn open_db(path: &Path, tier: Tier) -> Result<sled::Db, StoreError> {
    open_sled(
        sled::Config::new()
            .path(path)
            .cache_capacity(tier.cache_bytes())
            .flush_every_ms(Some(1_000)),
    )
}

/// How long opening a database waits for a lock that this process released.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens a sled database. sled locks its file; when the store was closed a
/// moment ago in this process, sled's background writers may still hold the
/// lock, so a busy lock is retried for [`LOCK_WAIT`] before it is reported
/// (another process holding it, a running collector, is reported then).
pub(crate) fn open_sled(config: sled::Config) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    let mut pause = std::time::Duration::from_millis(5);
    loop {
        match config.open() {
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                if std::time::Instant::now() >= deadline {
                    return Err(StoreError::Sled(sled::Error::Io(e)));
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(200));
            }
            result => return Ok(result?),
        }
    }
}

fn open_partition(tier: Tier, start_ms: i64, dir: PathBuf) -> Result<Partition, StoreError> {
    std::fs::create_dir_all(&dir).map_err(|e| StoreError::Io(format!("creating {}: {e}", dir.display())))?;
    // A sealing that did not finish before a stop leaves its file behind.
    for leftover in [SEALING, "sealing.tmp"] {
        match std::fs::remove_file(dir.join(leftover)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(StoreError::Io(format!(
                    "removing {}: {e}",
                    dir.join(leftover).display()
                )));
            }
            _ => {}
        }
    }
    let runs = open_runs(&dir)?;
    let run_names = AtomicU64::new(runs.iter().map(|r| r.number + 1).max().unwrap_or(1));
    let sealed_path = dir.join(SEALED);
    if sealed_path.exists() {
        let mut partition = Partition {
            tier,
            start_ms,
            sealed: Some(Segment::open(&sealed_path)?),
            live: None,
            overlay: OnceLock::new(),
            generation: AtomicU64::new(0),
            applying: RwLock::new(()),
            runs: RwLock::new(Vec::new()),
            run_names,
            dir,
        };
        // Left over when a crash came between sealing and cleaning up: the
        // database and the runs the sealed segment holds.
        partition.remove_dir(LIVE)?;
        let sealed_through = partition.applied_log()?;
        let (folded, kept): (Vec<_>, Vec<_>) = runs.into_iter().partition(|r| r.seq <= sealed_through);
        for run in folded {
            std::fs::remove_file(&run.path)
                .map_err(|e| StoreError::Io(format!("removing {}: {e}", run.path.display())))?;
        }
        partition.runs = RwLock::new(kept);
        if partition.dir.join(OVERLAY).exists() {
            let overlay = open_db(&partition.dir.join(OVERLAY), tier)?;
            let _ = partition.overlay.set(overlay);
        }
        return Ok(partition);
    }
    // Stores written before runs existed keep windows in a database.
    let live = match dir.join(LIVE).exists() {
        true => Some(open_db(&dir.join(LIVE), tier)?),
        false => None,
    };
    Ok(Partition {
        tier,
        start_ms,
        dir,
        live,
        sealed: None,
        overlay: OnceLock::new(),
        generation: AtomicU64::new(0),
        applying: RwLock::new(()),
        runs: RwLock::new(runs),
        run_names,
    })
}

/// The runs in a partition directory, oldest first; a run left half
/// written by a crash (under its temporary name) is deleted.
fn open_runs(dir: &Path) -> Result<Vec<Arc<Run>>, StoreError> {
    let listing = match std::fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::Io(format!("listing {}: {e}", dir.display()))),
    };
    let mut runs = Vec::new();
    for entry in listing.flatten() {
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !name.starts_with("run-") {
            continue;
        }
        if name.ends_with(".tmp") {
            std::fs::remove_file(&path).map_err(|e| StoreError::Io(format!("removing {}: {e}", path.display())))?;
        } else if name.ends_with(".seg") {
            runs.push(Arc::new(Run::open(path)?));
        }
    }
    runs.sort_by_key(|r| r.seq);
    Ok(runs)
}

/// Moves a damaged partition's directory to `quarantine/` beside `root`,
/// under a name no earlier quarantine took; returns where it went.
fn quarantine(root: &Path, tier: Tier, start_ms: i64, dir: &Path) -> Result<PathBuf, StoreError> {
    let parent = root.parent().unwrap_or(root).join("quarantine");
    std::fs::create_dir_all(&parent).map_err(|e| StoreError::Io(format!("creating {}: {e}", parent.display())))?;
    let target = (0..)
        .map(|n| parent.join(format!("{}-{start_ms}-{n}", tier.name())))
        .find(|candidate| !candidate.exists())
        .expect("a free name");
    std::fs::rename(dir, &target).map_err(|e| StoreError::Io(format!("moving {} aside: {e}", dir.display())))?;
    sync_dir(&parent)?;
    sync_dir(&root.join(tier.name()))?;
    Ok(target)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::Io(format!("syncing {}: {e}", dir.display())))
}

impl Partitions {
    /// Opens every partition found under `root`, and says what it had to
    /// leave out: a partition whose files are damaged beyond reading (a
    /// segment or run whose index fails its checksum) is moved whole to
    /// `quarantine/` beside `root`, kept for inspection, and the store
    /// starts without it.
    pub(crate) fn open(root: &Path) -> Result<(Partitions, Vec<String>), StoreError> {
        let mut open = BTreeMap::new();
        let mut problems = Vec::new();
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
                let partition = match open_partition(tier, start_ms, entry.path()) {
                    Ok(partition) => partition,
                    Err(StoreError::Corrupt(reason)) => {
                        let moved = quarantine(root, tier, start_ms, &entry.path())?;
                        let problem = format!(
                            "{} partition starting {start_ms} is damaged ({reason}); moved to {} and left out, so its windows are missing",
                            tier.name(),
                            moved.display()
                        );
                        tracing::error!("{problem}");
                        problems.push(problem);
                        continue;
                    }
                    Err(error) => return Err(error),
                };
                open.insert((tier, start_ms), Arc::new(partition));
            }
        }
        let partitions = Partitions {
            root: root.to_owned(),
            open: RwLock::new(open),
        };
        Ok((partitions, problems))
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
        let dir = self.root.join(tier.name()).join(start_ms.to_string());
        let partition = Arc::new(open_partition(tier, start_ms, dir)?);
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
        let path = partition.dir.clone();
        drop(partition);
        std::fs::remove_dir_all(&path).map_err(|e| StoreError::Io(format!("removing {}: {e}", path.display())))
    }

    /// Writes `partition`'s whole content (sealed segment, database and
    /// runs) folded into chunks as a new sealed segment next to it, under a
    /// temporary name, and returns it with the runs it folded in. Runs
    /// beside the writer: [`Partitions::install_sealed`] checks that nothing
    /// was written meanwhile.
    pub(crate) fn write_sealed(
        partition: &Partition,
        kind_of: &dyn Fn(u32) -> Option<SeriesKind>,
    ) -> Result<(PathBuf, Vec<Arc<Run>>), StoreError> {
        let path = partition.dir.join(SEALING);
        let runs = partition.runs();
        let applied = partition.applied_log()?;
        let mut sources: Vec<Box<dyn Iterator<Item = Result<Entry, StoreError>> + '_>> =
            vec![Box::new(partition.entries_base())];
        for run in &runs {
            sources.push(Box::new(run.iter()));
        }
        segment::write(
            &path,
            fold::Fold::new(partition.tier, sources, kind_of, applied),
            segment::SEALED_LEVEL,
        )?;
        Ok((path, runs))
    }

    /// Replaces `partition` with its sealed form written to `sealed`, then
    /// deletes the live database or overlay it came from.
    pub(crate) fn install_sealed(
        &self,
        partition: &Arc<Partition>,
        sealed: &Path,
        folded: &[Arc<Run>],
    ) -> Result<(), StoreError> {
        let target = partition.dir.join(SEALED);
        std::fs::rename(sealed, &target).map_err(|e| StoreError::Io(format!("renaming {}: {e}", sealed.display())))?;
        sync_dir(&partition.dir)?;
        let kept: Vec<Arc<Run>> = partition
            .runs()
            .into_iter()
            .filter(|r| !folded.iter().any(|f| Arc::ptr_eq(r, f)))
            .collect();
        let replacement = Partition {
            tier: partition.tier,
            start_ms: partition.start_ms,
            dir: partition.dir.clone(),
            live: None,
            sealed: Some(Segment::open(&target)?),
            overlay: OnceLock::new(),
            generation: AtomicU64::new(0),
            applying: RwLock::new(()),
            runs: RwLock::new(kept),
            run_names: AtomicU64::new(partition.run_names.load(Ordering::Relaxed)),
        };
        self.write_map()
            .insert((partition.tier, partition.start_ms), Arc::new(replacement));
        partition.remove_dir(LIVE)?;
        partition.remove_dir(OVERLAY)?;
        for run in folded {
            std::fs::remove_file(&run.path)
                .map_err(|e| StoreError::Io(format!("removing {}: {e}", run.path.display())))?;
        }
        Ok(())
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
        let (partitions, _) = Partitions::open(dir.path()).unwrap();
        let p = partitions.get_or_create(Tier::Raw, 7 * HOUR_MS).unwrap();
        assert_eq!(p.start_ms, 6 * HOUR_MS);
        // Bytes zstd cannot shrink.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..100_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 32) as u8
            })
            .collect();
        let run = p
            .write_run(1, std::iter::once(Ok((b"k"[..].into(), noise.into()))))
            .unwrap();
        p.install_run(run);
        let before = disk_bytes(dir.path());
        drop(p);
        assert_eq!(partitions.overlapping(Tier::Raw, 0, 24 * HOUR_MS).len(), 1);
        partitions.remove(Tier::Raw, 6 * HOUR_MS).unwrap();
        assert!(partitions.get(Tier::Raw, 7 * HOUR_MS).is_none());
        assert!(disk_bytes(dir.path()) + 50_000 < before);
        let (reopened, _) = Partitions::open(dir.path()).unwrap();
        assert!(reopened.all().is_empty());
    }
}
