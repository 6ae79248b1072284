//! The read side: ranges of windows, covered by the coarsest resolution that
//! fits exactly.

use std::collections::BTreeMap;

use querypulse_domain::{DenseHistogram, Fingerprint, HealthCheckStats, PoolStats, QueryStats, SlowQuerySample};

use super::codec::{
    In, InstanceQueries, InstanceQuery, TimedPool, WindowValue, decode_chunk, decode_slow, key, read_query_counters,
    scan_query_chunk,
};
use super::memtable::Buffer;
use super::partition::{Tier, ceil, floor};
use super::registry::{InstanceRecord, SeriesKey};
use super::{Store, StoreError};

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;

/// A pool's steps and its health checks' steps.
pub type PoolSteps = (Vec<(i64, PoolStats)>, Vec<(i64, HealthCheckStats)>);

/// One slow-query sample with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlowSample {
    /// Service name.
    pub service: String,
    /// Instance id.
    pub instance_id: String,
    /// The sample.
    pub sample: SlowQuerySample,
}

/// One pool of one instance over a range.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolWindow {
    /// Service name.
    pub service: String,
    /// Instance id.
    pub instance_id: String,
    /// Pool name.
    pub pool: String,
    /// Every window in the range folded together (counters summed, peaks
    /// maximal, last values of the latest window).
    pub stats: PoolStats,
    /// Health checks over the range, when the pool is pinged.
    pub health: Option<HealthCheckStats>,
    /// Start of the latest window in the range.
    pub last_window_ms: i64,
}

/// Statement statistics folded window by window; histograms accumulate in a
/// dense array, so merging hundreds of windows allocates nothing per window.
#[derive(Default)]
struct QueryFold {
    head: Option<QueryStats>,
    dense: DenseHistogram,
}

impl QueryFold {
    fn add_stats(&mut self, stats: &QueryStats) {
        match &mut self.head {
            Some(head) => head.merge(stats),
            None => self.head = Some(stats.clone()),
        }
    }

    /// A window held in memory: its histogram into the dense accumulator,
    /// nothing cloned.
    fn add_window(&mut self, stats: &QueryStats) {
        if stats.calls == 0 {
            return;
        }
        self.dense.add(&stats.latency);
        match &mut self.head {
            Some(head) => head.merge_counters(stats),
            None => {
                let mut head = QueryStats::new(stats.fingerprint);
                head.merge_counters(stats);
                self.head = Some(head);
            }
        }
    }

    fn add_encoded(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.add_value(&mut In::with_format(bytes, "window")?)
    }

    /// A stored window's value (without its format byte).
    fn add_value(&mut self, input: &mut In<'_>) -> Result<(), StoreError> {
        let counters = read_query_counters(input)?;
        input.histogram_into(&mut self.dense)?;
        self.add_stats(&counters);
        Ok(())
    }

    /// The folded statistics (`None` without calls); the fold is empty after.
    fn finish(&mut self) -> Option<QueryStats> {
        let dense = self.dense.take();
        let mut head = self.head.take()?;
        head.latency.add(&dense);
        (head.calls > 0).then_some(head)
    }
}

/// The segments that cover `[from, to)` exactly, in time order: raw windows at
/// the ragged edges, 1-minute windows for whole minutes, 1-hour windows for
/// whole hours.
pub(crate) fn cover(from: i64, to: i64) -> Vec<(Tier, i64, i64)> {
    let mut segments = Vec::with_capacity(5);
    let mut push = |tier, a: i64, b: i64| {
        if a < b {
            segments.push((tier, a, b));
        }
    };
    let (m_from, m_to) = (ceil(from, MINUTE_MS), floor(to, MINUTE_MS));
    if m_from >= m_to {
        push(Tier::Raw, from, to);
        return segments;
    }
    let (h_from, h_to) = (ceil(from, HOUR_MS), floor(to, HOUR_MS));
    push(Tier::Raw, from, m_from);
    if h_from < h_to {
        push(Tier::Minute, m_from, h_from);
        push(Tier::Hour, h_from, h_to);
        push(Tier::Minute, h_to, m_to);
    } else {
        push(Tier::Minute, m_from, m_to);
    }
    push(Tier::Raw, m_to, to);
    segments
}

/// The resolution for steps of `step_ms`: the coarsest whose windows divide
/// the step.
pub fn tier_for_step(step_ms: i64) -> Tier {
    if step_ms >= HOUR_MS && step_ms % HOUR_MS == 0 {
        Tier::Hour
    } else if step_ms >= MINUTE_MS && step_ms % MINUTE_MS == 0 {
        Tier::Minute
    } else {
        Tier::Raw
    }
}

impl Store {
    /// Windows of `series` in `tier` starting in `[from, to)`, by time.
    pub(crate) fn windows<V: Buffer>(
        &self,
        tier: Tier,
        series: u32,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, V)>, StoreError> {
        let mut found: BTreeMap<i64, V> = BTreeMap::new();
        let mut add = |at: i64, value: V| match found.get_mut(&at) {
            Some(existing) => existing.merge(&value),
            None => {
                found.insert(at, value);
            }
        };
        let scan_from = floor(from, tier.chunk_ms());
        let tables = self.tables();
        for partition in self.partitions().overlapping(tier, scan_from, to) {
            let start = key::window(series, scan_from.max(partition.start_ms), key::SINGLE);
            let end = key::window(series, to.min(partition.end_ms()), key::SINGLE);
            // A window is in a sealed chunk, in singles (runs, each a
            // delta), or (written late, after sealing) in both, and then
            // they add up, the chunk first: it was written first.
            let mut singles = Vec::new();
            for (k, v) in partition.range(&start, &end)? {
                let Some((_, at, kind)) = key::parse_window(&k) else {
                    continue;
                };
                if kind == key::CHUNK {
                    for (t, value) in decode_chunk::<V>(&v)? {
                        if (from..to).contains(&t) {
                            add(t, value);
                        }
                    }
                } else if (from..to).contains(&at) {
                    singles.push((at, v));
                }
            }
            for (at, v) in singles {
                add(at, V::decode(&v)?);
            }
        }
        // Open windows, not yet flushed.
        tables.visit::<V>(tier, series, from, to, &mut add);
        Ok(found.into_iter().collect())
    }

    /// `series` folded over `[from, to)`, or `None` without data.
    pub(crate) fn merged<V: Buffer>(
        &self,
        series: u32,
        from: i64,
        to: i64,
        hourly: bool,
    ) -> Result<Option<V>, StoreError> {
        let mut merged: Option<V> = None;
        for (tier, a, b) in cover(from, to) {
            let windows = if tier == Tier::Hour && !hourly {
                self.windows::<V>(Tier::Minute, series, a, b)?
            } else {
                self.windows::<V>(tier, series, a, b)?
            };
            for (_, value) in windows {
                match &mut merged {
                    Some(m) => m.merge(&value),
                    None => merged = Some(value),
                }
            }
        }
        Ok(merged)
    }

    /// `series` folded into steps of `step_ms` from `from` (aligned down to
    /// the resolution used), keyed by step start.
    pub(crate) fn steps<V: Buffer>(
        &self,
        series: u32,
        from: i64,
        to: i64,
        step_ms: i64,
        hourly: bool,
    ) -> Result<Vec<(i64, V)>, StoreError> {
        let mut tier = tier_for_step(step_ms);
        if tier == Tier::Hour && !hourly {
            tier = Tier::Minute;
        }
        let from = tier.window_ms().map_or(from, |len| floor(from, len));
        let mut buckets: BTreeMap<i64, V> = BTreeMap::new();
        for (at, value) in self.windows::<V>(tier, series, from, to)? {
            let bucket = from + floor(at - from, step_ms);
            match buckets.get_mut(&bucket) {
                Some(existing) => existing.merge(&value),
                None => {
                    buckets.insert(bucket, value);
                }
            }
        }
        Ok(buckets.into_iter().collect())
    }

    /// Every service: (name, id, fingerprints, fingerprints folded into `other`).
    pub fn services(&self) -> Vec<(String, u32, usize, u64)> {
        let registry = self.registry();
        registry
            .services()
            .into_iter()
            .map(|(name, id)| (name, id, registry.fingerprint_count(id), registry.overflow(id)))
            .collect()
    }

    /// The id of a service, if it ever reported.
    pub fn service_id(&self, name: &str) -> Option<u32> {
        self.registry().existing_service(name)
    }

    /// Every instance that ever reported.
    pub fn instances(&self) -> Vec<InstanceRecord> {
        self.registry().instances()
    }

    /// Those of `fingerprints` whose text the store lacks (answered from
    /// memory under one lock: ingest asks it for every batch).
    pub fn lacking_texts(&self, fingerprints: impl IntoIterator<Item = Fingerprint>) -> Vec<Fingerprint> {
        self.registry().lacking_texts(fingerprints)
    }

    /// The normalized text of a fingerprint.
    pub fn text(&self, fingerprint: Fingerprint) -> Result<Option<String>, StoreError> {
        self.registry().text(fingerprint)
    }

    /// Folds every window of query series `series` covering `[from, to)`
    /// into `fold`, decoding histograms straight into its dense accumulator.
    fn fold_query(&self, series: u32, from: i64, to: i64, fold: &mut QueryFold) -> Result<(), StoreError> {
        let tables = self.tables();
        for (tier, a, b) in cover(from, to) {
            let scan_from = floor(a, tier.chunk_ms());
            for partition in self.partitions().overlapping(tier, scan_from, b) {
                let start = key::window(series, scan_from.max(partition.start_ms), key::SINGLE);
                let end = key::window(series, b.min(partition.end_ms()), key::SINGLE);
                // Chunks and singles add up (see `windows`).
                for (k, v) in partition.range(&start, &end)? {
                    let Some((_, at, kind)) = key::parse_window(&k) else {
                        continue;
                    };
                    if kind == key::CHUNK {
                        scan_query_chunk(&v, a, b, &mut |input| fold.add_value(input))?;
                    } else if (a..b).contains(&at) {
                        fold.add_encoded(&v)?;
                    }
                }
            }
            tables.visit_queries(tier, series, a, b, &mut |_, stats| fold.add_window(stats));
        }
        Ok(())
    }

    /// Fingerprints of a service with their statistics over `[from, to)`
    /// (only those with calls). Large services are read on two threads.
    pub fn query_stats(&self, service: u32, from: i64, to: i64) -> Result<Vec<QueryStats>, StoreError> {
        let mut series = self.registry().query_series(service);
        // In key order: neighbouring series share blocks of a sealed
        // segment, so each block is decompressed once, not once per series.
        series.sort_unstable_by_key(|(_, id)| *id);
        let read = |part: &[(Fingerprint, u32)]| -> Result<Vec<QueryStats>, StoreError> {
            let mut fold = QueryFold::default();
            let mut out = Vec::new();
            for (fingerprint, series) in part {
                self.fold_query(*series, from, to, &mut fold)?;
                if let Some(mut stats) = fold.finish() {
                    stats.fingerprint = *fingerprint;
                    out.push(stats);
                }
            }
            Ok(out)
        };
        if series.len() < 64 {
            let mut out = read(&series)?;
            out.sort_unstable_by_key(|s| s.fingerprint);
            return Ok(out);
        }
        let (first, second) = series.split_at(series.len() / 2);
        let (a, b) = std::thread::scope(|scope| {
            let other = scope.spawn(|| read(second));
            (read(first), other.join())
        });
        let mut out = a?;
        out.extend(b.map_err(|_| StoreError::Corrupt("a read thread panicked".into()))??);
        out.sort_unstable_by_key(|s| s.fingerprint);
        Ok(out)
    }

    /// Every fingerprint of a service merged over `[from, to)`: one series
    /// read (the service's total), whatever the number of fingerprints.
    /// `None` when nothing was recorded. Equal to merging
    /// [`Store::query_stats`], which it falls back to for a range that
    /// starts before the store kept totals (an upgraded store).
    pub fn service_stats(&self, service: u32, from: i64, to: i64) -> Result<Option<QueryStats>, StoreError> {
        let mut fold = QueryFold::default();
        if from >= self.shared.service_totals_since {
            if let Some(series) = self.registry().series_id(&SeriesKey::Service { service }) {
                self.fold_query(series, from, to, &mut fold)?;
            }
            return Ok(fold.finish().map(|mut stats| {
                stats.fingerprint = Fingerprint::OTHER;
                stats
            }));
        }
        let mut merged: Option<QueryStats> = None;
        for stats in self.query_stats(service, from, to)? {
            match &mut merged {
                Some(m) => m.merge(&stats),
                None => merged = Some(stats),
            }
        }
        Ok(merged.map(|mut stats| {
            stats.fingerprint = Fingerprint::OTHER;
            stats
        }))
    }

    /// Services that have reported `fingerprint`.
    pub fn services_of(&self, fingerprint: Fingerprint) -> Vec<(String, u32)> {
        let registry = self.registry();
        registry
            .services()
            .into_iter()
            .filter(|(_, id)| {
                registry
                    .series_id(&SeriesKey::Query {
                        service: *id,
                        fingerprint,
                    })
                    .is_some()
            })
            .collect()
    }

    /// One fingerprint of one service over `[from, to)`.
    pub fn query(
        &self,
        service: u32,
        fingerprint: Fingerprint,
        from: i64,
        to: i64,
    ) -> Result<Option<QueryStats>, StoreError> {
        let Some(series) = self.registry().series_id(&SeriesKey::Query { service, fingerprint }) else {
            return Ok(None);
        };
        let mut fold = QueryFold::default();
        self.fold_query(series, from, to, &mut fold)?;
        Ok(fold.finish().map(|mut s| {
            s.fingerprint = fingerprint;
            s
        }))
    }

    /// One fingerprint of one service in steps of `step_ms`.
    pub fn query_steps(
        &self,
        service: u32,
        fingerprint: Fingerprint,
        from: i64,
        to: i64,
        step_ms: i64,
    ) -> Result<Vec<(i64, QueryStats)>, StoreError> {
        let Some(series) = self.registry().series_id(&SeriesKey::Query { service, fingerprint }) else {
            return Ok(Vec::new());
        };
        self.steps::<QueryStats>(series, from, to, step_ms, true)
    }

    /// Per-instance counters of one fingerprint of one service over `[from,
    /// to)` (kept at raw and 1-minute resolution).
    pub fn instance_breakdown(
        &self,
        service: &str,
        fingerprint: Fingerprint,
        from: i64,
        to: i64,
    ) -> Result<Vec<(InstanceRecord, InstanceQuery)>, StoreError> {
        let registry = self.registry();
        let Some(service_id) = registry.existing_service(service) else {
            return Ok(Vec::new());
        };
        let Some(query_series) = registry.series_id(&SeriesKey::Query {
            service: service_id,
            fingerprint,
        }) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for instance in registry.instances().into_iter().filter(|i| i.service == service) {
            let Some(series) = registry.series_id(&SeriesKey::InstanceQueries {
                instance: instance.instance_id.clone(),
            }) else {
                continue;
            };
            let Some(record) = self.merged::<InstanceQueries>(series, from, to, false)? else {
                continue;
            };
            if let Some(entry) = record.0.iter().find(|e| e.series == query_series)
                && entry.calls > 0
            {
                out.push((instance, *entry));
            }
        }
        Ok(out)
    }

    /// Every pool with windows in `[from, to)`.
    pub fn pools(&self, from: i64, to: i64) -> Result<Vec<PoolWindow>, StoreError> {
        let registry = self.registry();
        let health: BTreeMap<(String, String), u32> = registry
            .pool_series(true)
            .into_iter()
            .map(|(i, p, id)| ((i, p), id))
            .collect();
        let mut out = Vec::new();
        for (instance_id, pool, series) in registry.pool_series(false) {
            let windows = self.windows_covered::<TimedPool>(series, from, to)?;
            let Some(last_window_ms) = windows.last().map(|(t, _)| *t) else {
                continue;
            };
            let mut folded = windows[0].1.clone();
            for (_, w) in &windows[1..] {
                folded.merge(w);
            }
            let mut stats = folded.stats;
            stats.pool = pool.clone();
            let health = match health.get(&(instance_id.clone(), pool.clone())) {
                Some(id) => self.merged::<HealthCheckStats>(*id, from, to, true)?.map(|mut h| {
                    h.pool = pool.clone();
                    h
                }),
                None => None,
            };
            let service = registry.instance(&instance_id).map(|i| i.service).unwrap_or_default();
            out.push(PoolWindow {
                service,
                instance_id,
                pool,
                stats,
                health,
                last_window_ms,
            });
        }
        Ok(out)
    }

    /// The windows covering `[from, to)` exactly, in time order.
    fn windows_covered<V: Buffer>(&self, series: u32, from: i64, to: i64) -> Result<Vec<(i64, V)>, StoreError> {
        let mut out = Vec::new();
        for (tier, a, b) in cover(from, to) {
            out.extend(self.windows::<V>(tier, series, a, b)?);
        }
        Ok(out)
    }

    /// One pool in steps of `step_ms`, with its health checks.
    pub fn pool_steps(
        &self,
        instance_id: &str,
        pool: &str,
        from: i64,
        to: i64,
        step_ms: i64,
    ) -> Result<Option<PoolSteps>, StoreError> {
        let registry = self.registry();
        let key = SeriesKey::Pool {
            instance: instance_id.to_owned(),
            pool: pool.to_owned(),
        };
        let Some(series) = registry.series_id(&key) else {
            return Ok(None);
        };
        let pools = self
            .steps::<TimedPool>(series, from, to, step_ms, true)?
            .into_iter()
            .map(|(at, timed)| (at, timed.stats))
            .collect();
        let health = match registry.series_id(&SeriesKey::Health {
            instance: instance_id.to_owned(),
            pool: pool.to_owned(),
        }) {
            Some(id) => self.steps::<HealthCheckStats>(id, from, to, step_ms, true)?,
            None => Vec::new(),
        };
        Ok(Some((pools, health)))
    }

    /// Slow-query samples in `[from, to)`, newest first.
    pub fn slow_samples(
        &self,
        service: Option<u32>,
        fingerprint: Option<Fingerprint>,
        from: i64,
        to: i64,
        limit: usize,
    ) -> Result<Vec<SlowSample>, StoreError> {
        let registry = self.registry();
        let mut out = Vec::new();
        let (start, end) = (
            [&[b'q'][..], &key::time(from)[..]].concat(),
            [&[b'q'][..], &key::time(to)[..]].concat(),
        );
        let tables = self.tables();
        // Raw partitions newest first, each with the samples the memtable
        // still holds for it (a partition may exist only there so far).
        let mut partitions: BTreeMap<i64, Option<_>> = self
            .partitions()
            .overlapping(Tier::Raw, from, to)
            .into_iter()
            .map(|p| (p.start_ms, Some(p)))
            .collect();
        for part_start in tables.raw_parts(from, to) {
            partitions.entry(part_start).or_insert(None);
        }
        let part_ms = Tier::Raw.partition_ms();
        for (part_start, partition) in partitions.into_iter().rev() {
            let mut entries: Vec<(Vec<u8>, Vec<u8>)> = match partition {
                Some(partition) => partition
                    .range(&start, &end)?
                    .into_iter()
                    .map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .collect(),
                None => Vec::new(),
            };
            entries.extend(tables.slow(&start, &end, part_start, part_start + part_ms));
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            for (k, v) in entries.into_iter().rev() {
                if out.len() >= limit {
                    return Ok(out);
                }
                let Some((_, service_id)) = key::parse_slow(&k) else {
                    continue;
                };
                if service.is_some_and(|s| s != service_id) {
                    continue;
                }
                let (instance_id, sample) = decode_slow(&v)?;
                if fingerprint.is_some_and(|f| f != sample.fingerprint) {
                    continue;
                }
                let service = registry.service_name(service_id).unwrap_or_default();
                out.push(SlowSample {
                    service,
                    instance_id,
                    sample,
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cover_uses_the_coarsest_exact_windows_in_time_order() {
        let h = HOUR_MS;
        let m = MINUTE_MS;
        assert_eq!(
            cover(10_000, 3 * h + 2 * m + 5_000),
            vec![
                (Tier::Raw, 10_000, m),
                (Tier::Minute, m, h),
                (Tier::Hour, h, 3 * h),
                (Tier::Minute, 3 * h, 3 * h + 2 * m),
                (Tier::Raw, 3 * h + 2 * m, 3 * h + 2 * m + 5_000),
            ]
        );
        assert_eq!(cover(0, 2 * h), vec![(Tier::Hour, 0, 2 * h)]);
        assert_eq!(cover(5_000, 50_000), vec![(Tier::Raw, 5_000, 50_000)]);
        assert_eq!(
            cover(30_000, 150_000),
            vec![
                (Tier::Raw, 30_000, m),
                (Tier::Minute, m, 2 * m),
                (Tier::Raw, 2 * m, 150_000)
            ]
        );
        assert!(cover(5, 5).is_empty());
    }

    #[test]
    fn steps_pick_the_resolution_that_divides_them() {
        assert_eq!(tier_for_step(10_000), Tier::Raw);
        assert_eq!(tier_for_step(90_000), Tier::Raw);
        assert_eq!(tier_for_step(5 * MINUTE_MS), Tier::Minute);
        assert_eq!(tier_for_step(HOUR_MS), Tier::Hour);
        assert_eq!(tier_for_step(6 * HOUR_MS), Tier::Hour);
    }
}
