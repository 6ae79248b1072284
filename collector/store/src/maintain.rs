//! Background work of the writer: retention and the size cap, sealing
//! closed partitions, checkpoints. Each pass is bounded in time so ingest
//! never waits long.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::codec::key;
use super::partition::{Partition, Partitions, Run, Tier};
use super::{StoreError, StoreWriter};

/// Databases a replay wrote to are flushed at least this often.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(30);

/// A partition is sealed once its span ended this long ago: windows that
/// agents send a little late still go to its runs first, and the sealed file
/// is written once.
const SEAL_AFTER_MS: i64 = 15 * 60_000;

/// A sealed partition's overlay of late writes is folded into a new sealed
/// file once it has not changed for this long.
const OVERLAY_IDLE_MS: i64 = 5 * 60_000;

/// A partition being rewritten as a sealed segment on a background thread.
#[derive(Debug)]
pub(crate) struct SealJob {
    partition: Arc<Partition>,
    generation: u64,
    thread: JoinHandle<Result<Sealed, StoreError>>,
}

/// A sealed file written beside its partition and the runs folded into it.
type Sealed = (PathBuf, Vec<Arc<Run>>);

/// What one maintenance pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Partitions deleted by retention or the size cap.
    pub partitions_dropped: usize,
    /// Partitions replaced by their sealed form.
    pub partitions_sealed: usize,
    /// Whether a checkpoint was taken.
    pub checkpointed: bool,
}

impl StoreWriter {
    /// Runs one maintenance pass at the store clock's time: retention and
    /// size cap, sealing (on a background thread), a checkpoint when one is
    /// due, and a memtable flush when one is due.
    pub fn maintain(&mut self) -> Result<MaintenanceReport, StoreError> {
        let now_ms = self.store.now_ms();
        self.poll_flush()?;
        let mut report = MaintenanceReport::default();
        // Sealing and retention replace partitions: they wait while a flush
        // writes to them.
        if !self.flush_running() {
            report.partitions_dropped = self.expire(now_ms)?;
            report.partitions_sealed = self.seal(now_ms)?;
            if self.state.last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                self.sync()?;
                report.checkpointed = true;
            }
        }
        self.flush_if_due()?;
        Ok(report)
    }

    /// Writes everything the memtable holds to the partitions, flushes every
    /// database written since the last checkpoint, then drops the log
    /// entries they now hold on disk.
    pub fn checkpoint(&mut self) -> Result<(), StoreError> {
        self.flush_now()?;
        self.sync()
    }

    /// Brings the store to rest: flushes the memtable, then seals every
    /// partition whose time has come, waiting for each (benchmarks and tests
    /// measure the steady state this way).
    pub fn settle(&mut self) -> Result<(), StoreError> {
        self.checkpoint()?;
        loop {
            let report = self.maintain()?;
            if self.wait_for_sealing()? == 0 && report.partitions_sealed == 0 {
                return Ok(());
            }
        }
    }

    /// Syncs the registry and drops the log entries a replay wrote to runs.
    fn sync(&mut self) -> Result<(), StoreError> {
        self.store.registry().sync()?;
        if let Some(applied) = self.state.applied_since_checkpoint.take() {
            self.wal.truncate_through(applied)?;
        }
        self.state.last_checkpoint = Instant::now();
        Ok(())
    }

    /// Deletes partitions past their retention, then, while the store is over
    /// its size cap, the partition oldest relative to its tier's retention.
    fn expire(&mut self, now_ms: i64) -> Result<usize, StoreError> {
        let retention = self.store.retention();
        let keep_ms = |tier: Tier| {
            1_000
                * match tier {
                    Tier::Raw => retention.raw_seconds,
                    Tier::Minute => retention.minute_seconds,
                    Tier::Hour => retention.hour_seconds,
                } as i64
        };
        let store = self.store.clone();
        let partitions = store.partitions();
        let mut dropped = 0;
        for partition in partitions.all() {
            if partition.end_ms() <= now_ms - keep_ms(partition.tier) {
                self.drop_partition(&partition)?;
                dropped += 1;
            }
        }
        if let Some(max_bytes) = retention.max_bytes {
            while store.disk_bytes() > max_bytes {
                // The partition whose age is the largest share of its tier's
                // retention, never the newest one of a tier.
                let mut newest: BTreeMap<Tier, i64> = BTreeMap::new();
                for p in partitions.all() {
                    let start = newest.entry(p.tier).or_insert(p.start_ms);
                    *start = (*start).max(p.start_ms);
                }
                let victim = partitions
                    .all()
                    .into_iter()
                    .filter(|p| newest.get(&p.tier) != Some(&p.start_ms))
                    .max_by(|a, b| {
                        let share = |p: &Partition| (now_ms - p.end_ms()) as f64 / keep_ms(p.tier).max(1) as f64;
                        share(a).total_cmp(&share(b))
                    });
                let Some(victim) = victim else {
                    tracing::warn!(
                        max_bytes,
                        "store is over its size cap but only current partitions remain"
                    );
                    break;
                };
                tracing::warn!(
                    tier = victim.tier.name(),
                    start_ms = victim.start_ms,
                    max_bytes,
                    "size cap: dropping a partition early"
                );
                self.drop_partition(&victim)?;
                dropped += 1;
            }
        }
        self.expire_markers(now_ms - keep_ms(Tier::Raw) - 86_400_000)?;
        // An instance silent for longer than any tier keeps data has nothing
        // left to show: it leaves the agents list (and the export) instead of
        // staying there, silent, for ever. If it comes back it registers anew.
        let longest = [Tier::Raw, Tier::Minute, Tier::Hour]
            .map(keep_ms)
            .into_iter()
            .max()
            .unwrap_or(0);
        let forgotten = self.store.registry().forget_instances(now_ms - longest)?;
        if !forgotten.is_empty() {
            tracing::info!(
                instances = forgotten.len(),
                "forgot instances silent for longer than any of their data is kept"
            );
        }
        Ok(dropped)
    }

    fn drop_partition(&mut self, partition: &Partition) -> Result<(), StoreError> {
        let (tier, start) = (partition.tier, partition.start_ms);
        if self
            .state
            .sealing
            .as_ref()
            .is_some_and(|job| (job.partition.tier, job.partition.start_ms) == (tier, start))
        {
            self.wait_for_sealing()?;
        }
        self.state.overlays_seen.remove(&(tier, start));
        tracing::info!(tier = tier.name(), start_ms = start, "dropping an expired partition");
        self.state
            .slow_counts
            .retain(|(part, _), _| tier != Tier::Raw || *part != start);
        self.store.partitions().remove(tier, start)
    }

    /// Deletes applied-batch markers of days before `before_ms`: batches that
    /// old are refused anyway.
    fn expire_markers(&mut self, before_ms: i64) -> Result<(), StoreError> {
        let meta = self.store.registry().meta();
        let end = {
            let mut k = vec![b'a'];
            k.extend_from_slice(&key::time(before_ms));
            k
        };
        let mut batch = sled::Batch::default();
        let mut any = false;
        for k in meta.range(&b"a"[..]..&end[..]).keys() {
            batch.remove(k?);
            any = true;
        }
        if any {
            meta.apply_batch(batch)?;
        }
        Ok(())
    }

    /// Installs a finished background sealing, then starts the next one: the
    /// oldest closed partition that is still a live database, or a sealed
    /// one whose overlay of late writes has gone quiet. Returns how many
    /// partitions were installed sealed (0 or 1).
    fn seal(&mut self, now_ms: i64) -> Result<usize, StoreError> {
        let mut sealed = 0;
        if self.state.sealing.as_ref().is_some_and(|job| job.thread.is_finished()) {
            sealed = self.wait_for_sealing()?;
        }
        if self.state.sealing.is_some() {
            return Ok(sealed);
        }
        let partitions = self.store.partitions();
        let all = partitions.all();
        self.state
            .overlays_seen
            .retain(|at, _| all.iter().any(|p| (p.tier, p.start_ms) == *at && late_writes(p)));
        for partition in all {
            if partition.end_ms() + SEAL_AFTER_MS > now_ms {
                continue;
            }
            if partition.is_sealed() {
                if !late_writes(&partition) {
                    continue;
                }
                let generation = partition.generation();
                let seen = self
                    .state
                    .overlays_seen
                    .entry((partition.tier, partition.start_ms))
                    .or_insert((generation, now_ms));
                if seen.0 != generation {
                    *seen = (generation, now_ms);
                }
                if now_ms - seen.1 < OVERLAY_IDLE_MS {
                    continue;
                }
            }
            // Sealing folds everything (runs, and the database of a store
            // written before runs) into chunks.
            let generation = partition.generation();
            let job_partition = partition.clone();
            let store = self.store.clone();
            let thread = std::thread::Builder::new()
                .name("querypulse-seal".into())
                .spawn(move || Partitions::write_sealed(&job_partition, &|series| store.series_kind(series)))
                .map_err(|e| StoreError::Io(format!("starting the sealing thread: {e}")))?;
            tracing::debug!(
                tier = partition.tier.name(),
                start_ms = partition.start_ms,
                "sealing a partition"
            );
            self.state.sealing = Some(SealJob {
                partition,
                generation,
                thread,
            });
            break;
        }
        Ok(sealed)
    }

    /// Waits for the background sealing, if one runs, and installs its
    /// result unless the partition was written meanwhile (it is then sealed
    /// again later). Returns how many partitions were installed (0 or 1).
    pub(crate) fn wait_for_sealing(&mut self) -> Result<usize, StoreError> {
        if self.state.sealing.is_none() {
            return Ok(0);
        }
        // Installing replaces the partition: a flush must not be writing to
        // the one it replaces.
        self.finish_flush()?;
        let Some(job) = self.state.sealing.take() else {
            return Ok(0);
        };
        let written = job
            .thread
            .join()
            .map_err(|_| StoreError::Io("the sealing thread panicked".into()))?;
        let (path, folded) = match written {
            Ok(written) => written,
            Err(error) => {
                tracing::warn!(%error, start_ms = job.partition.start_ms, "sealing a partition failed; it stays as it is");
                return Ok(0);
            }
        };
        let partitions = self.store.partitions();
        let current = partitions.get(job.partition.tier, job.partition.start_ms);
        let unchanged =
            current.is_some_and(|p| Arc::ptr_eq(&p, &job.partition)) && job.partition.generation() == job.generation;
        if !unchanged {
            let _ = std::fs::remove_file(&path);
            return Ok(0);
        }
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        partitions.install_sealed(&job.partition, &path, &folded)?;
        let key = (job.partition.tier, job.partition.start_ms);
        self.state.overlays_seen.remove(&key);
        tracing::info!(tier = key.0.name(), start_ms = key.1, bytes, "sealed a partition");
        Ok(1)
    }
}

/// Whether a sealed partition took writes since it was sealed (a replay's
/// overlay, or runs of late windows).
fn late_writes(partition: &Partition) -> bool {
    partition.has_overlay() || !partition.runs().is_empty()
}
