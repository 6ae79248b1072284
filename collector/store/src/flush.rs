//! Flushing the memtable into the partitions, on a thread of its own.
//!
//! The writer freezes the active table and starts a flush; ingest goes on
//! into a fresh table meanwhile, so the flush uses the second core instead of
//! delaying acknowledgements. A flush derives the 1-minute and 1-hour
//! windows from the frozen raw windows, a block of series at a time, and
//! streams each block's windows, as deltas, to a new run per partition: an
//! immutable, compressed file, written once, synced, then renamed into
//! place. Only a few blocks are decoded or encoded at once, so a flush needs
//! little memory beside the frozen table, however large that is. Nothing
//! is read back and no database is touched, which is what makes a window
//! cost the same however many series exist. Only once every run is in place
//! does the writer drop the log entries the flush covered.
//!
//! After a crash, a partition has either a flush's run or not, and the run's
//! name carries the last log entry it holds: the log replay applies exactly
//! what is missing, partition by partition. Runs are merged (smallest first)
//! as they accumulate, and folded into chunks when the partition is sealed.
//!
//! While a flush runs, maintenance that replaces partitions (sealing,
//! retention) waits for the next pass.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::codec::{WindowValue, key};
use super::fold::Fold;
use super::memtable::{FLUSH_EVERY, Memtable};
use super::partition::{Entry, Partition, Run, Tier};
use super::write::{PartitionWrites, derive_rollups};
use super::{Store, StoreError, StoreWriter};

/// Series whose rollups are derived and encoded together: the unit a flush
/// streams. A decoded rollup takes a few KiB a series, so a block of 512
/// costs a few MiB; 4,096 made the flush's working set ~160 MB at 2,000 x
/// 300. Tests use small blocks, so that every flush they run crosses blocks
/// and rounds.
const SERIES_PER_STEP: u64 = if cfg!(any(test, feature = "testing")) { 8 } else { 512 };

/// A flush running in the background.
#[derive(Debug)]
pub(crate) struct FlushJob {
    thread: JoinHandle<FlushResult>,
}

/// The last log entry the flush made durable in the partitions.
type FlushResult = Result<u64, StoreError>;

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
            .extend(series_range(&part.queries, from, to).map(|(k, v)| (*k, v.unpack())));
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

/// Threads a flush spreads its work over: the cores there are (ingest
/// waits for a flush when the memtable is full, so the flush is what limits
/// throughput then), four at most.
fn flush_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4)
}

/// `work` applied to every item on up to [`flush_threads`] threads; the
/// results in item order.
fn in_parallel<T: Send, R: Send>(items: Vec<T>, work: impl Fn(T) -> R + Sync) -> Vec<R> {
    let threads = flush_threads().min(items.len());
    if threads <= 1 {
        return items.into_iter().map(work).collect();
    }
    let count = items.len();
    let queue = Mutex::new(items.into_iter().enumerate());
    let done = Mutex::new(Vec::with_capacity(count));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().unwrap_or_else(|p| p.into_inner()).next();
                    let Some((at, item)) = next else { break };
                    let result = work(item);
                    done.lock().unwrap_or_else(|p| p.into_inner()).push((at, result));
                }
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_else(|p| p.into_inner());
    done.sort_by_key(|(at, _)| *at);
    done.into_iter().map(|(_, result)| result).collect()
}

/// Runs a partition keeps before the smallest are merged.
pub(crate) const MAX_RUNS: usize = 12;
/// Runs merged at once.
const MERGE_RUNS: usize = 8;

/// Writes the frozen `table` into the partitions, one new run per
/// partition; on success the store no longer shows the table (its windows
/// are in the runs). Partitions committed by an earlier, failed attempt are
/// skipped.
fn flush(store: &Store, table: &Memtable) -> Result<u64, StoreError> {
    let started = std::time::Instant::now();
    // Series ids and texts first: no partition may refer to an id that a
    // crash could lose.
    store.registry().sync()?;
    let synced = std::time::Instant::now();
    let last = table.last_seq;
    let blocks = max_series(table).map_or(1, |max| u64::from(max) / SERIES_PER_STEP + 1);
    let threads = flush_threads() as u64;
    let committed = store.tables().committed.clone();
    // Blocks are encoded a round at a time (one per thread) and streamed, in
    // block order, to one run writer per partition: a flush holds a few
    // blocks' windows decoded and encoded, never the whole table's.
    let written: Vec<Result<(Arc<Partition>, Run), StoreError>> = std::thread::scope(|scope| {
        let mut writers = BTreeMap::new();
        'rounds: for round in (0..blocks).step_by(threads as usize) {
            let encoded = in_parallel((round..(round + threads).min(blocks)).collect(), |block| {
                encode_block(table, block, last)
            });
            for block in encoded {
                for (at, entries) in block {
                    if entries.is_empty() || committed.contains(&at) {
                        continue;
                    }
                    let (tx, _) = writers.entry(at).or_insert_with(|| {
                        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Entry>>(2);
                        let writer = scope.spawn(move || {
                            let partition = store.partitions().get_or_create(at.0, at.1)?;
                            let run = partition.write_run(last, rx.into_iter().flatten().map(Ok))?;
                            Ok((partition, run))
                        });
                        (tx, writer)
                    });
                    // A writer that stopped has failed: its error is below.
                    if tx.send(entries).is_err() {
                        break 'rounds;
                    }
                }
            }
        }
        writers
            .into_values()
            .map(|(tx, writer)| {
                drop(tx);
                writer
                    .join()
                    .unwrap_or_else(|_| Err(StoreError::Io("a run writer panicked".into())))
            })
            .collect()
    });
    let encoded = std::time::Instant::now();
    let mut runs = Vec::with_capacity(written.len());
    let mut failed = None;
    for outcome in written {
        match outcome {
            Ok(run) => runs.push(run),
            Err(error) => failed = Some(error),
        }
    }
    // The meta database holds the instances' records and the markers of
    // applied batches up to `last`: durable before the log drops them.
    let outcome = match failed {
        Some(error) => Err(error),
        None => store.registry().sync(),
    };
    if let Err(error) = outcome {
        for (_, run) in runs {
            run.discard();
        }
        return Err(error);
    }
    let mut written = Vec::with_capacity(runs.len());
    {
        let mut tables = store.tables_mut();
        for (partition, run) in runs {
            let at = (partition.tier, partition.start_ms);
            partition.install_run(run);
            tables.committed.insert(at);
            if at.0 == Tier::Raw {
                tables.slow_committed.insert(at.1);
            }
            written.push(partition);
        }
        tables.frozen = None;
        tables.committed.clear();
        tables.slow_committed.clear();
    }
    let installed = std::time::Instant::now();
    for merged in in_parallel(written, |partition| merge_runs(store, &partition)) {
        merged?;
    }
    tracing::debug!(
        windows = table.windows,
        bytes = table.bytes,
        registry_ms = (synced - started).as_millis() as u64,
        write_ms = (encoded - synced).as_millis() as u64,
        install_ms = (installed - encoded).as_millis() as u64,
        merge_ms = installed.elapsed().as_millis() as u64,
        "flush phases"
    );
    Ok(last)
}

/// The entries of series block `block` (raw windows and their rollups) per
/// partition, each partition's in key order: slow samples (block 0 only)
/// sort before windows, and blocks cover ascending series ranges.
fn encode_block(table: &Memtable, block: u64, last: u64) -> Vec<((Tier, i64), Vec<Entry>)> {
    let from = block * SERIES_PER_STEP;
    let mut writes = block_writes(table, from, from + SERIES_PER_STEP);
    derive_rollups(&mut writes, last);
    writes
        .into_iter()
        .map(|(at, w)| {
            let mut entries = Vec::new();
            encode_deltas(w, &mut entries);
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            (at, entries)
        })
        .collect()
}

/// Every window of `w` as a single-window delta, and its slow samples.
pub(crate) fn encode_deltas(w: PartitionWrites, out: &mut Vec<Entry>) {
    fn single<V: WindowValue>(out: &mut Vec<Entry>, series: u32, at: i64, value: &V) {
        out.push((key::window(series, at, key::SINGLE)[..].into(), value.encode().into()));
    }
    for ((series, at), v) in &w.queries {
        single(out, *series, *at, v);
    }
    for ((series, at), v) in &w.instances {
        single(out, *series, *at, v);
    }
    for ((series, at), v) in &w.pools {
        single(out, *series, *at, v);
    }
    for ((series, at), v) in &w.health {
        single(out, *series, *at, v);
    }
    for (k, v) in w.slow {
        out.push((k[..].into(), v.into()));
    }
}

/// Merges runs of `partition` while it has more than [`MAX_RUNS`]: the
/// [`MERGE_RUNS`] consecutive runs (by log entry) with the fewest bytes, so
/// reads stay a few files per partition and each window is rewritten a few
/// times at most (size-tiered, as log-structured stores do). Only
/// consecutive runs merge: values of one key then still fold in the order
/// the log has them, which the "last" values of pools and health checks
/// depend on.
pub(crate) fn merge_runs(store: &Store, partition: &Partition) -> Result<(), StoreError> {
    loop {
        let runs = partition.runs();
        if runs.len() <= MAX_RUNS {
            return Ok(());
        }
        let start = (0..=runs.len() - MERGE_RUNS)
            .min_by_key(|&i| runs[i..i + MERGE_RUNS].iter().map(|r| r.bytes).sum::<u64>())
            .unwrap_or(0);
        let runs = &runs[start..start + MERGE_RUNS];
        let seq = runs.iter().map(|r| r.seq).max().unwrap_or(0);
        let kind_of = |series: u32| store.series_kind(series);
        let sources = runs
            .iter()
            .map(|r| Box::new(r.iter()) as Box<dyn Iterator<Item = _>>)
            .collect();
        let merged = partition.write_run(seq, Fold::singles(partition.tier, sources, &kind_of))?;
        partition.replace_runs(runs, Some(merged));
    }
}

impl StoreWriter {
    /// Starts a flush when the active table is due (old enough, or half of
    /// the bound); when it is at half of the bound while the previous flush
    /// still runs, waits for that flush first, so ingest slows down instead
    /// of growing.
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
            // Two halves: the active table fills while the frozen one is
            // flushed; a full half waits for the other, so both together stay
            // within the bound (give or take the batch just merged into each).
            if !early {
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
        let last = job
            .thread
            .join()
            .map_err(|_| StoreError::Io("the memtable flush thread panicked".into()))??;
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
        let thread = std::thread::Builder::new()
            .name("querypulse-flush".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                let outcome = flush(&store, &frozen);
                tracing::debug!(
                    windows = frozen.windows,
                    bytes = frozen.bytes,
                    ms = started.elapsed().as_millis() as u64,
                    ok = outcome.is_ok(),
                    "flushed the memtable"
                );
                outcome
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
