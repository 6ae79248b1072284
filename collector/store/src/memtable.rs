//! Open windows, in memory.
//!
//! A live batch is logged (fsynced) and then merged here, at raw resolution
//! only; it never touches a partition on the way to its acknowledgement. The
//! 1-minute and 1-hour windows are sums of raw windows, so they are derived
//! when the memtable is flushed (and, for reads, on the fly), which keeps one
//! merge per series and batch instead of three.
//!
//! The memtable holds deltas: what arrived since the last flush. A flush
//! freezes the active table (writes go on into a fresh one), derives the
//! rollups of the frozen one and merges every window into its partition
//! once, on the flushing thread. A late window is simply a delta for an old
//! time: it merges into its own raw, 1-minute and 1-hour windows like any
//! other.
//!
//! Readers add the memtable to what the partitions hold. A flush commits one
//! partition at a time under the tables' write lock and marks it done, so a
//! reader sees every window exactly once: in the frozen table or in the
//! partition, never both.
//!
//! Memory is bounded by [`Limits::memtable_bytes`](super::Limits): the writer
//! freezes the table when it reaches half of it (or after [`FLUSH_EVERY`]),
//! and when the fresh table reaches half of it while the frozen one is still
//! being flushed, waits for that flush, which slows acknowledgements
//! (back-pressure) instead of growing.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use querypulse_domain::{HealthCheckStats, QueryStats};

use super::StoreError;
use super::codec::{In, InstanceQueries, Out, TimedPool, WindowValue, read_query_counters, write_query_counters};
use super::partition::{Tier, ceil, floor};

/// The active table is frozen and flushed at least this often while it
/// holds anything.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_secs(10);

/// Per-instance counters of one window, packed as varints: a fleet of
/// thousands of instances reporting a thousand statements each keeps
/// millions of these open, at about 12 bytes each instead of 56.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PackedInstances(Vec<u8>);

impl PackedInstances {
    pub(crate) fn pack(queries: &InstanceQueries) -> PackedInstances {
        let mut out = Out::default();
        queries.write_plain(&mut out);
        out.0.shrink_to_fit();
        PackedInstances(out.0)
    }

    pub(crate) fn unpack(&self) -> InstanceQueries {
        InstanceQueries::read_plain(&self.0).expect("the memtable decodes what it packed itself")
    }

    fn merge(&mut self, other: &PackedInstances) {
        let mut merged = self.unpack();
        merged.merge(&other.unpack());
        *self = PackedInstances::pack(&merged);
    }

    fn bytes(&self) -> usize {
        self.0.len() + 48
    }
}

/// A statement window, packed as a partition stores it: a window whose
/// histogram fills a hundred buckets takes about 300 bytes instead of
/// 1,800 decoded, so the table holds six times the windows in its bound.
/// A window merges into it without decoding into a histogram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PackedQuery(Vec<u8>);

/// Buffers a memtable reuses across merges of packed windows.
#[derive(Debug, Default)]
pub(crate) struct MergeScratch {
    out: Vec<u8>,
    body: Vec<u8>,
}

impl PackedQuery {
    pub(crate) fn pack(stats: &QueryStats) -> PackedQuery {
        let mut out = Out(Vec::with_capacity(48 + 4 * stats.latency.indexed_buckets().len()));
        stats.write(&mut out);
        out.0.shrink_to_fit();
        PackedQuery(out.0)
    }

    pub(crate) fn unpack(&self) -> QueryStats {
        QueryStats::read(&mut In(&self.0)).expect("the memtable decodes what it packed itself")
    }

    /// Folds `stats` in, exactly as [`QueryStats::merge`] does, in one pass
    /// over the packed bytes: buckets the window does not touch are copied
    /// as they are, so a merge costs about a copy of the window, never a
    /// decode into a histogram and a re-encode.
    fn merge(&mut self, stats: &QueryStats, scratch: &mut MergeScratch) {
        if stats.calls == 0 {
            return;
        }
        let mut input = In(&self.0);
        let mut head = read_query_counters(&mut input).expect("the memtable decodes what it packed itself");
        head.merge_counters(stats);
        let mut out = Out(std::mem::take(&mut scratch.out));
        out.0.clear();
        write_query_counters(&head, &mut out);
        let mut body = Out(std::mem::take(&mut scratch.body));
        body.0.clear();
        let len = add_packed_buckets(input, stats.latency.indexed_buckets(), &mut body)
            .expect("the memtable decodes what it packed itself");
        out.u(len);
        out.0.extend_from_slice(&body.0);
        if out.0.len() == self.0.len() {
            self.0.copy_from_slice(&out.0);
        } else {
            self.0.clear();
            self.0.reserve_exact(out.0.len());
            self.0.extend_from_slice(&out.0);
        }
        scratch.out = out.0;
        scratch.body = body.0;
    }

    fn bytes(&self) -> usize {
        self.0.capacity() + 56
    }
}

/// Writes to `body` the bucket pairs (index delta, count) of the packed
/// buckets at `input` plus `incoming` (strictly increasing by index), as
/// [`Out::buckets`] writes them after their number, which it returns. A
/// packed bucket that neither gains a count nor follows a new bucket is
/// copied byte for byte.
fn add_packed_buckets(mut input: In<'_>, incoming: &[(u16, u64)], body: &mut Out) -> Result<u64, StoreError> {
    let len = input.u()?;
    let mut written = 0u64;
    // The index of the last bucket written, and of the last bucket read.
    let (mut last_written, mut index) = (0u64, 0u64);
    let mut incoming = incoming.iter().map(|&(i, c)| (u64::from(i), c)).peekable();
    for _ in 0..len {
        let pair = input.0;
        let delta = input.u()?;
        let count = input.u()?;
        let pair = &pair[..pair.len() - input.0.len()];
        let previous = index;
        index += delta;
        while let Some(&(new, add)) = incoming.peek() {
            if new >= index {
                break;
            }
            body.u(new - last_written);
            body.u(add);
            (last_written, written) = (new, written + 1);
            incoming.next();
        }
        match incoming.peek() {
            Some(&(new, add)) if new == index => {
                body.u(index - last_written);
                body.u(count.saturating_add(add));
                incoming.next();
            }
            _ if last_written == previous => body.0.extend_from_slice(pair),
            _ => {
                body.u(index - last_written);
                body.u(count);
            }
        }
        (last_written, written) = (index, written + 1);
    }
    for (new, add) in incoming {
        body.u(new - last_written);
        body.u(add);
        (last_written, written) = (new, written + 1);
    }
    Ok(written)
}

/// Raw windows (deltas) of one raw partition, keyed by (series, window start).
#[derive(Debug, Default)]
pub(crate) struct Buffered {
    pub queries: BTreeMap<(u32, i64), PackedQuery>,
    pub instances: BTreeMap<(u32, i64), PackedInstances>,
    pub pools: BTreeMap<(u32, i64), TimedPool>,
    pub health: BTreeMap<(u32, i64), HealthCheckStats>,
    /// Slow-query samples: (key, value) as the partition stores them.
    pub slow: Vec<([u8; 21], Vec<u8>)>,
}

/// One memtable: raw deltas by raw partition start.
#[derive(Debug, Default)]
pub(crate) struct Memtable {
    pub parts: BTreeMap<i64, Buffered>,
    /// Approximate heap bytes.
    pub bytes: usize,
    /// Windows buffered (distinct series and window start).
    pub windows: usize,
    /// The last log entry merged in: every entry up to it is in this table
    /// or an older one.
    pub last_seq: u64,
    /// When the first window was merged in.
    pub opened: Option<Instant>,
    scratch: MergeScratch,
}

fn merge_into<V: Clone>(
    map: &mut BTreeMap<(u32, i64), V>,
    key: (u32, i64),
    value: &V,
    merge: impl FnOnce(&mut V, &V),
) -> bool {
    match map.get_mut(&key) {
        Some(existing) => {
            merge(existing, value);
            false
        }
        None => {
            map.insert(key, value.clone());
            true
        }
    }
}

impl Memtable {
    fn part(&mut self, at: i64) -> &mut Buffered {
        if self.opened.is_none() {
            self.opened = Some(Instant::now());
        }
        self.parts.entry(floor(at, Tier::Raw.partition_ms())).or_default()
    }

    pub(crate) fn add_query(&mut self, series: u32, at: i64, stats: &QueryStats) {
        let part = floor(at, Tier::Raw.partition_ms());
        if self.opened.is_none() {
            self.opened = Some(Instant::now());
        }
        let map = &mut self.parts.entry(part).or_default().queries;
        match map.get_mut(&(series, at)) {
            Some(existing) => {
                let before = existing.bytes();
                existing.merge(stats, &mut self.scratch);
                self.bytes = (self.bytes + existing.bytes()).saturating_sub(before);
            }
            None => {
                // Stored windows carry no fingerprint: readers set it from
                // the series.
                let packed = PackedQuery::pack(stats);
                self.bytes += packed.bytes();
                self.windows += 1;
                map.insert((series, at), packed);
            }
        }
    }

    pub(crate) fn add_instances(&mut self, series: u32, at: i64, packed: &PackedInstances) {
        let map = &mut self.part(at).instances;
        let (added, removed, new) = match map.get_mut(&(series, at)) {
            Some(existing) => {
                let before = existing.bytes();
                existing.merge(packed);
                (existing.bytes(), before, false)
            }
            None => {
                map.insert((series, at), packed.clone());
                (packed.bytes(), 0, true)
            }
        };
        self.bytes = (self.bytes + added).saturating_sub(removed);
        self.windows += usize::from(new);
    }

    pub(crate) fn add_pool(&mut self, series: u32, at: i64, pool: &TimedPool) {
        if merge_into(&mut self.part(at).pools, (series, at), pool, |a, b| a.merge(b)) {
            self.windows += 1;
            self.bytes += 400;
        }
    }

    pub(crate) fn add_health(&mut self, series: u32, at: i64, check: &HealthCheckStats) {
        if merge_into(&mut self.part(at).health, (series, at), check, |a, b| a.merge(b)) {
            self.windows += 1;
            self.bytes += 200;
        }
    }

    pub(crate) fn add_slow(&mut self, at: i64, key: [u8; 21], value: Vec<u8>) {
        self.bytes += 64 + value.len();
        self.part(at).slow.push((key, value));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    pub(crate) fn age(&self) -> Duration {
        self.opened.map_or(Duration::ZERO, |t| t.elapsed())
    }
}

/// The tables readers add to the partitions.
#[derive(Debug, Default)]
pub(crate) struct Tables {
    pub active: Memtable,
    /// The table being flushed, if any.
    pub frozen: Option<Arc<Memtable>>,
    /// Partitions (tier, start) the frozen table's windows have been
    /// committed to: readers skip its contributions there.
    pub committed: HashSet<(Tier, i64)>,
    /// Raw partitions whose frozen slow samples are committed.
    pub slow_committed: HashSet<i64>,
}

/// How the memtable has fared since the store was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemtableStats {
    /// Approximate bytes of the active and the frozen table.
    pub bytes: u64,
    /// Windows buffered in the active and the frozen table.
    pub windows: u64,
    /// Flushes that wrote the tables to the partitions.
    pub flushes: u64,
    /// Flushes started early because the active table reached half of its
    /// bound (a flood of distinct series or windows).
    pub early_flushes: u64,
    /// Times the writer waited for a flush because the active table was
    /// full: ingest slowed down instead of growing.
    pub stalls: u64,
}

/// Raw windows of a value type in a memtable, for readers.
pub(crate) trait Buffer: WindowValue {
    /// Calls `add` with every raw window of `series` starting in `[from,
    /// to)` buffered in `part`.
    fn buffered(part: &Buffered, series: u32, from: i64, to: i64, add: &mut dyn FnMut(i64, Self));
}

fn range<V>(map: &BTreeMap<(u32, i64), V>, series: u32, from: i64, to: i64) -> impl Iterator<Item = (i64, &V)> {
    map.range((series, from)..(series, to)).map(|((_, at), v)| (*at, v))
}

impl Buffer for QueryStats {
    fn buffered(part: &Buffered, series: u32, from: i64, to: i64, add: &mut dyn FnMut(i64, Self)) {
        for (at, v) in range(&part.queries, series, from, to) {
            add(at, v.unpack());
        }
    }
}

impl Buffer for InstanceQueries {
    fn buffered(part: &Buffered, series: u32, from: i64, to: i64, add: &mut dyn FnMut(i64, Self)) {
        for (at, v) in range(&part.instances, series, from, to) {
            add(at, v.unpack());
        }
    }
}

impl Buffer for TimedPool {
    fn buffered(part: &Buffered, series: u32, from: i64, to: i64, add: &mut dyn FnMut(i64, Self)) {
        for (at, v) in range(&part.pools, series, from, to) {
            add(at, v.clone());
        }
    }
}

impl Buffer for HealthCheckStats {
    fn buffered(part: &Buffered, series: u32, from: i64, to: i64, add: &mut dyn FnMut(i64, Self)) {
        for (at, v) in range(&part.health, series, from, to) {
            add(at, v.clone());
        }
    }
}

impl Tables {
    /// The frozen table (flagged `true`) if any, then the active one.
    fn tables(&self) -> impl Iterator<Item = (&Memtable, bool)> {
        self.frozen
            .as_deref()
            .map(|t| (t, true))
            .into_iter()
            .chain([(&self.active, false)])
    }

    /// Calls `each(part, lo, hi, frozen)` for every buffered raw partition
    /// that may hold raw windows whose `tier` window starts in `[from, to)`:
    /// exactly the raw windows in `[lo, hi)`. A raw window at `t` belongs to
    /// the tier window starting at align(t), which lies in [from, to) exactly
    /// when t does in [ceil(from), ceil(to)) (window-aligned).
    fn each_part(&self, tier: Tier, from: i64, to: i64, each: &mut dyn FnMut(&Buffered, i64, i64, bool)) {
        let (lo, hi) = match tier.window_ms() {
            Some(len) => (ceil(from, len), ceil(to, len)),
            None => (from, to),
        };
        let first = floor(lo, Tier::Raw.partition_ms());
        for (table, frozen) in self.tables() {
            for (_, part) in table.parts.range(first..hi) {
                each(part, lo, hi, frozen);
            }
        }
    }

    /// The start of the `tier` window a buffered raw window at `at` adds to,
    /// unless the frozen table's window is committed to that partition.
    fn aligned(&self, tier: Tier, frozen: bool, at: i64) -> Option<i64> {
        let aligned = tier.align(at);
        let committed = frozen && self.committed.contains(&(tier, floor(aligned, tier.partition_ms())));
        (!committed).then_some(aligned)
    }

    /// Calls `add(window start in tier, value)` for every buffered raw window
    /// of `series` whose `tier` window starts in `[from, to)`: the frozen
    /// table's (unless committed to that partition), then the active one's.
    pub(crate) fn visit<V: Buffer>(&self, tier: Tier, series: u32, from: i64, to: i64, add: &mut dyn FnMut(i64, V)) {
        self.each_part(tier, from, to, &mut |part, lo, hi, frozen| {
            V::buffered(part, series, lo, hi, &mut |at, value| {
                if let Some(aligned) = self.aligned(tier, frozen, at) {
                    add(aligned, value);
                }
            });
        });
    }

    /// Like [`Tables::visit`] for statement windows, lent rather than
    /// handed over (reads that fold thousands of series per request).
    pub(crate) fn visit_queries(
        &self,
        tier: Tier,
        series: u32,
        from: i64,
        to: i64,
        add: &mut dyn FnMut(i64, &QueryStats),
    ) {
        self.each_part(tier, from, to, &mut |part, lo, hi, frozen| {
            for (at, value) in range(&part.queries, series, lo, hi) {
                if let Some(aligned) = self.aligned(tier, frozen, at) {
                    add(aligned, &value.unpack());
                }
            }
        });
    }

    /// Starts of the raw partitions the tables hold windows of, overlapping
    /// `[from, to)`.
    pub(crate) fn raw_parts(&self, from: i64, to: i64) -> Vec<i64> {
        self.raw_parts_in(floor(from, Tier::Raw.partition_ms())..to)
    }

    /// Starts of every raw partition the tables hold windows of.
    pub(crate) fn all_raw_parts(&self) -> Vec<i64> {
        self.raw_parts_in(..)
    }

    fn raw_parts_in(&self, starts: impl std::ops::RangeBounds<i64> + Clone) -> Vec<i64> {
        let mut out: Vec<i64> = self
            .tables()
            .flat_map(|(t, _)| t.parts.range(starts.clone()).map(|(start, _)| *start))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Buffered slow samples with keys in `[start, end)` of the raw
    /// partitions starting in `[from, to)`.
    pub(crate) fn slow(&self, start: &[u8], end: &[u8], from: i64, to: i64) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        for (table, frozen) in self.tables() {
            let first = floor(from, Tier::Raw.partition_ms());
            for (part_start, part) in table.parts.range(first..to) {
                if frozen && self.slow_committed.contains(part_start) {
                    continue;
                }
                for (k, v) in &part.slow {
                    if (start..end).contains(&&k[..]) {
                        out.push((k.to_vec(), v.clone()));
                    }
                }
            }
        }
        out
    }

    pub(crate) fn bytes(&self) -> usize {
        self.tables().map(|(t, _)| t.bytes).sum()
    }

    pub(crate) fn windows(&self) -> usize {
        self.tables().map(|(t, _)| t.windows).sum()
    }
}

#[cfg(test)]
mod tests {
    use querypulse_domain::Fingerprint;

    use super::super::codec::InstanceQuery;
    use super::*;

    #[test]
    fn packed_instances_round_trip_and_merge_by_series() {
        let a = InstanceQueries(vec![
            InstanceQuery {
                series: 3,
                calls: 2,
                errors: 1,
                rows: 5,
                sum_us: 300,
                min_us: 100,
                max_us: 200,
            },
            InstanceQuery {
                series: 9,
                calls: 1,
                sum_us: 7,
                min_us: 7,
                max_us: 7,
                ..Default::default()
            },
        ]);
        let b = InstanceQueries(vec![InstanceQuery {
            series: 9,
            calls: 1,
            sum_us: 3,
            min_us: 3,
            max_us: 3,
            ..Default::default()
        }]);
        let mut packed = PackedInstances::pack(&a);
        assert_eq!(packed.unpack(), a);
        packed.merge(&PackedInstances::pack(&b));
        let mut expected = a.clone();
        expected.merge(&b);
        assert_eq!(packed.unpack(), expected);
        assert!(packed.0.len() < 2 * 56, "packed is compact: {} bytes", packed.0.len());
    }

    fn stats(latencies: &[(u64, Option<&str>)]) -> QueryStats {
        let mut stats = QueryStats::new(Fingerprint::OTHER);
        for (micros, class) in latencies {
            stats.record(*micros, 1, *class);
        }
        stats
    }

    proptest::proptest! {
        /// Merging into a packed window gives exactly what merging the
        /// decoded windows gives, whatever their buckets and error classes.
        #[test]
        fn packed_query_merges_exactly_as_decoded_stats(
            windows in proptest::collection::vec(
                proptest::collection::vec(
                    (0u64..5_000_000, proptest::option::of(proptest::sample::select(vec!["23505", "40001", "timeout"]))),
                    0..40,
                ),
                1..8,
            )
        ) {
            let windows: Vec<QueryStats> = windows.iter().map(|w| stats(w)).collect();
            let mut packed = PackedQuery::pack(&windows[0]);
            let mut expected = windows[0].clone();
            let mut scratch = MergeScratch::default();
            // The first window again at the end: its buckets are all there.
            for window in windows[1..].iter().chain([&windows[0]]) {
                packed.merge(window, &mut scratch);
                expected.merge(window);
            }
            proptest::prop_assert_eq!(packed.unpack(), expected);
        }
    }

    #[test]
    fn packed_query_merges_new_buckets_and_growing_counts() {
        let latencies: Vec<(u64, Option<&str>)> = (0..50).map(|i| (100 + i * 997 % 40_000, None)).collect();
        let window = stats(&latencies);
        let subset = stats(&latencies[..10]);
        let mut packed = PackedQuery::pack(&subset);
        let mut expected = subset.clone();
        let mut scratch = MergeScratch::default();
        // New buckets before, between and after the packed ones.
        for other in [
            stats(&[(0, None)]),
            window.clone(),
            stats(&[(4_000_000, Some("timeout"))]),
        ] {
            packed.merge(&other, &mut scratch);
            expected.merge(&other);
            assert_eq!(packed.unpack(), expected);
        }
        // Counts past 127 take a second byte; sums past 16,383 a third.
        let before = packed.0.len();
        for _ in 0..400 {
            packed.merge(&window, &mut scratch);
            expected.merge(&window);
        }
        assert_eq!(packed.unpack(), expected);
        assert!(packed.0.len() > before);
    }

    #[test]
    fn packed_query_is_a_fraction_of_the_decoded_window() {
        let latencies: Vec<(u64, Option<&str>)> = (0..2_000).map(|i| (100 + i * 37 % 90_000, None)).collect();
        let window = stats(&latencies);
        let buckets = window.latency.indexed_buckets().len();
        assert!(buckets > 50, "{buckets} buckets");
        let packed = PackedQuery::pack(&window);
        assert!(
            packed.bytes() * 4 < 16 * buckets,
            "{} bytes packed for {buckets} buckets",
            packed.bytes()
        );
    }

    #[test]
    fn reads_align_raw_windows_to_the_tier_and_skip_committed_frozen_windows() {
        let mut stats = QueryStats::new(Fingerprint::new(1));
        stats.record(1_000, 1, None);
        let mut frozen = Memtable::default();
        frozen.add_query(7, 60_000, &stats);
        frozen.add_query(7, 70_000, &stats);
        let mut tables = Tables {
            frozen: Some(Arc::new(frozen)),
            ..Default::default()
        };
        tables.active.add_query(7, 110_000, &stats);
        tables.active.add_query(8, 110_000, &stats);
        let calls = |tables: &Tables, tier: Tier, from: i64, to: i64| {
            let mut seen = Vec::new();
            tables.visit::<QueryStats>(tier, 7, from, to, &mut |at, v| seen.push((at, v.calls)));
            seen
        };
        assert_eq!(
            calls(&tables, Tier::Raw, 60_000, 110_000),
            vec![(60_000, 1), (70_000, 1)]
        );
        assert_eq!(
            calls(&tables, Tier::Minute, 60_000, 120_000),
            vec![(60_000, 1), (60_000, 1), (60_000, 1)]
        );
        assert_eq!(calls(&tables, Tier::Minute, 0, 60_000), vec![]);
        tables.committed.insert((Tier::Minute, 0));
        assert_eq!(calls(&tables, Tier::Minute, 60_000, 120_000), vec![(60_000, 1)]);
        assert_eq!(
            calls(&tables, Tier::Raw, 60_000, 120_000).len(),
            3,
            "raw not committed yet"
        );
    }
}
