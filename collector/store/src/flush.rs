//! Flushing the memtable into the partitions, on a thread of its own.
//!
//! The writer freezes the active table and starts a flush; ingest goes on
//! into a fresh table meanwhile, so the flush uses the second core instead of
//! delaying acknowledgements. A flush derives the 1-minute and 1-hour
//! windows from the frozen raw windows, a block of series at a time (so the
//! decoded rollups of only one block are in memory at once), merges every
//! window into what its partition holds, and builds one sled batch per
//! partition. It then commits the batches, each atomically with the
//! partition's last applied log entry, and syncs them. Only then does the
//! writer drop the log entries the flush covered.
//!
//! After a crash, a partition has either every window of a flush or none of
//! it, and its last applied entry says which: the log replay applies exactly
//! what is missing, partition by partition.
//!
//! While a flush runs, maintenance that rewrites partitions (compaction,
//! sealing, retention) waits for the next pass.

use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use super::codec::key;
use super::memtable::{FLUSH_EVERY, Memtable};
use super::partition::{Partition, Tier};
use super::write::{PartitionWrites, derive_rollups, encode_into};
use super::{Store, StoreError, StoreWriter};

/// Series whose rollups are derived and encoded together.
const SERIES_PER_STEP: u64 = 4_096;

/// A flush running in the background.
#[derive(Debug)]
pub(crate) struct FlushJob {
    thread: JoinHandle<FlushResult>,
}

#[derive(Debug)]
struct FlushResult {
    /// The writer's record of chunks marked for compaction, handed back.
    pending_chunks: HashSet<(Tier, u32, i64)>,
    /// The last log entry the flush made durable in the partitions.
    outcome: Result<u64, StoreError>,
}

fn series_range<V>(map: &BTreeMap<(u32, i64), V>, from: u64, to: u64) -> impl Iterator<Item = (&(u32, i64), &V)> {
    let lo = Bound::Included((from as u32, i64::MIN));
    let hi = match u32::try_from(to) {
        Ok(to) => Bound::Excluded((to, i64::MIN)),
        Err(_) => Bound::Unbounded,
    };
    map.range((lo, hi))
}

/// Raw writes of the frozen `table` for series ids in `[from, to)`.
fn block_writes(table: &Memtable, from: u64, to: u64) -> BTreeMap<(Tier, i64), PartitionWrites> {
    let mut writes: BTreeMap<(Tier, i64), PartitionWrites> = BTreeMap::new();
    for (part_start, part) in &table.parts {
        let w = writes.entry((Tier::Raw, *part_start)).or_default();
        w.queries
            .extend(series_range(&part.queries, from, to).map(|(k, v)| (*k, v.clone())));
        w.instances
            .extend(series_range(&part.instances, from, to).map(|(k, v)| (*k, v.unpack())));
        w.pools
            .extend(series_range(&part.pools, from, to).map(|(k, v)| (*k, v.clone())));
        w.health
            .extend(series_range(&part.health, from, to).map(|(k, v)| (*k, v.clone())));
        if from == 0 {
            w.slow.extend(part.slow.iter().cloned());
        }
    }
    writes
}

fn max_series(table: &Memtable) -> Option<u32> {
    table
        .parts
        .values()
        .flat_map(|p| {
            [
                p.queries.keys().next_back().map(|k| k.0),
                p.instances.keys().next_back().map(|k| k.0),
                p.pools.keys().next_back().map(|k| k.0),
                p.health.keys().next_back().map(|k| k.0),
            ]
        })
        .flatten()
        .max()
}

/// Writes the frozen `table` into the partitions and syncs them; on success
/// the store no longer shows the table (its windows are in the partitions).
/// Partitions committed by an earlier, failed attempt are skipped.
fn flush(store: &Store, table: &Memtable, pending: &mut HashSet<(Tier, u32, i64)>) -> Result<u64, StoreError> {
    // Series ids and texts first: no partition may refer to an id that a
    // crash could lose.
    store.registry().meta().flush()?;
    let last = table.last_seq;
    let mut batches: BTreeMap<(Tier, i64), (Arc<Partition>, sled::Batch)> = BTreeMap::new();
    let blocks = max_series(table).map_or(1, |max| u64::from(max) / SERIES_PER_STEP + 1);
    for block in 0..blocks {
        let from = block * SERIES_PER_STEP;
        let mut writes = block_writes(table, from, from + SERIES_PER_STEP);
        derive_rollups(&mut writes, last);
        for ((tier, start), w) in writes {
            let (partition, batch) = match batches.entry((tier, start)) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    let partition = store.partitions().get_or_create(tier, start)?;
                    e.insert((partition, sled::Batch::default()))
                }
            };
            encode_into(partition, w, pending, batch)?;
        }
    }
    let built = std::time::Instant::now();
    let mut written = Vec::with_capacity(batches.len());
    {
        let mut tables = store.tables_mut();
        for ((tier, start), (partition, mut batch)) in batches {
            if tables.committed.contains(&(tier, start)) {
                continue;
            }
            batch.insert(key::APPLIED_LOG, &last.to_be_bytes()[..]);
            partition.apply(batch)?;
            tables.committed.insert((tier, start));
            if tier == Tier::Raw {
                tables.slow_committed.insert(start);
            }
            written.push(partition);
        }
    }
    let committed = std::time::Instant::now();
    for partition in &written {
        partition.flush()?;
    }
    tracing::debug!(
        commit_ms = (committed - built).as_millis() as u64,
        sync_ms = committed.elapsed().as_millis() as u64,
        "flush committed and synced"
    );
    // The meta database holds the instances' records and the markers of
    // applied batches up to `last`: durable before the log drops them.
    store.registry().meta().flush()?;
    let mut tables = store.tables_mut();
    tables.frozen = None;
    tables.committed.clear();
    tables.slow_committed.clear();
    Ok(last)
}

impl StoreWriter {
    /// Starts a flush when the active table is due (old enough, or half of
    /// its bound); when it is full while a flush runs, waits for that flush
    /// first, so ingest slows down instead of growing.
    pub(crate) fn flush_if_due(&mut self) -> Result<(), StoreError> {
        self.poll_flush()?;
        let limit = self.store.limits().memtable_bytes;
        let (bytes, age, empty) = {
            let tables = self.store.tables();
            (tables.active.bytes, tables.active.age(), tables.active.is_empty())
        };
        if empty {
            return Ok(());
        }
        let early = bytes >= limit / 2;
        if !early && age < FLUSH_EVERY {
            return Ok(());
        }
        if self.state.flushing.is_some() {
            if bytes < limit {
                return Ok(());
            }
            self.store.shared.memtable.stalls.fetch_add(1, Ordering::Relaxed);
            self.finish_flush()?;
        }
        if early && age < FLUSH_EVERY {
            self.store.shared.memtable.early_flushes.fetch_add(1, Ordering::Relaxed);
        }
        self.start_flush()
    }

    /// Whether a flush is running.
    pub(crate) fn flush_running(&self) -> bool {
        self.state.flushing.is_some()
    }

    /// Finishes a flush that has ended, without waiting for a running one.
    pub(crate) fn poll_flush(&mut self) -> Result<(), StoreError> {
        if self.state.flushing.as_ref().is_some_and(|job| job.thread.is_finished()) {
            self.finish_flush()?;
        }
        Ok(())
    }

    /// Waits for the running flush, if any, and drops the log entries it
    /// made durable. A failed flush leaves its table frozen (still read, its
    /// entries still in the log); the next flush retries it.
    pub(crate) fn finish_flush(&mut self) -> Result<(), StoreError> {
        let Some(job) = self.state.flushing.take() else {
            return Ok(());
        };
        let result = job
            .thread
            .join()
            .map_err(|_| StoreError::Io("the memtable flush thread panicked".into()))?;
        self.state.pending_chunks = result.pending_chunks;
        let last = result.outcome?;
        self.store.shared.memtable.flushes.fetch_add(1, Ordering::Relaxed);
        self.wal.truncate_through(last)
    }

    /// Freezes the active table (unless an earlier flush left one frozen)
    /// and flushes it on a new thread.
    pub(crate) fn start_flush(&mut self) -> Result<(), StoreError> {
        debug_assert!(self.state.flushing.is_none());
        let frozen = {
            let mut tables = self.store.tables_mut();
            match &tables.frozen {
                Some(frozen) => frozen.clone(),
                None if tables.active.is_empty() => return Ok(()),
                None => {
                    let frozen = Arc::new(std::mem::take(&mut tables.active));
                    tables.frozen = Some(frozen.clone());
                    frozen
                }
            }
        };
        let store = self.store.clone();
        let mut pending_chunks = std::mem::take(&mut self.state.pending_chunks);
        let thread = std::thread::Builder::new()
            .name("querypulse-flush".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                let outcome = flush(&store, &frozen, &mut pending_chunks);
                tracing::debug!(
                    windows = frozen.windows,
                    bytes = frozen.bytes,
                    ms = started.elapsed().as_millis() as u64,
                    ok = outcome.is_ok(),
                    "flushed the memtable"
                );
                FlushResult {
                    pending_chunks,
                    outcome,
                }
            })
            .map_err(|e| StoreError::Io(format!("starting the memtable flush thread: {e}")))?;
        self.state.flushing = Some(FlushJob { thread });
        Ok(())
    }

    /// Flushes everything the memtable holds and waits for it.
    pub(crate) fn flush_now(&mut self) -> Result<(), StoreError> {
        self.finish_flush()?;
        loop {
            let done = {
                let tables = self.store.tables();
                tables.frozen.is_none() && tables.active.is_empty()
            };
            if done {
                return Ok(());
            }
            self.start_flush()?;
            self.finish_flush()?;
        }
    }
}
