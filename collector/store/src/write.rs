//! The write path: validate, log (fsync), apply to every resolution.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use querypulse_domain::{
    Batch, DenseHistogram, Fingerprint, FingerprintText, HealthCheckStats, Hello, PoolStats, QueryStats,
};

use super::codec::{InstanceQueries, InstanceQuery, TimedPool, WalEntry, WindowValue, encode_slow, key};
use super::memtable::PackedInstances;
use super::partition::{Tier, floor};
use super::registry::{SeriesKey, applied_key};
use super::{StoreError, StoreWriter};

/// What happened to a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// Logged and applied.
    Applied,
    /// The same (instance, seq) was applied before; nothing was written.
    Duplicate,
    /// The batch can never be applied; nothing was written.
    Rejected(String),
}

/// A batch handed to the writer by an ingest stream.
#[derive(Debug)]
pub struct BatchRequest {
    /// Who sent it.
    pub hello: Arc<Hello>,
    /// The batch.
    pub batch: Batch,
    /// Texts the stream carried for the fingerprints the batch refers to.
    pub texts: Vec<FingerprintText>,
}

/// The writer's own bookkeeping (rebuilt after a restart).
#[derive(Debug)]
pub(crate) struct WriterState {
    /// Slow samples written per (raw partition, service).
    pub slow_counts: HashMap<(i64, u32), u64>,
    pub slow_unique: u64,
    /// Highest log entry applied since the last checkpoint.
    pub applied_since_checkpoint: Option<u64>,
    pub last_checkpoint: Instant,
    /// The partition being sealed in the background, if any.
    pub sealing: Option<super::maintain::SealJob>,
    /// Sealed partitions with an overlay: the overlay's generation and when
    /// it was first seen unchanged.
    pub overlays_seen: HashMap<(Tier, i64), (u64, i64)>,
    /// The memtable flush running in the background, if any.
    pub flushing: Option<super::flush::FlushJob>,
}

impl Default for WriterState {
    fn default() -> Self {
        WriterState {
            slow_counts: HashMap::new(),
            slow_unique: 0,
            applied_since_checkpoint: None,
            last_checkpoint: Instant::now(),
            sealing: None,
            overlays_seen: HashMap::new(),
            flushing: None,
        }
    }
}

/// The last log entry a database has applied.
pub(crate) fn applied_log(db: &sled::Db) -> Result<u64, StoreError> {
    decode_applied(db.get(key::APPLIED_LOG)?.as_deref())
}

fn decode_applied(bytes: Option<&[u8]>) -> Result<u64, StoreError> {
    Ok(match bytes {
        Some(bytes) => u64::from_be_bytes(
            bytes
                .try_into()
                .map_err(|_| StoreError::Corrupt("applied log position".into()))?,
        ),
        None => 0,
    })
}

/// Writes accumulated for one partition.
#[derive(Default)]
pub(crate) struct PartitionWrites {
    pub queries: BTreeMap<(u32, i64), QueryStats>,
    pub instances: BTreeMap<(u32, i64), InstanceQueries>,
    pub pools: BTreeMap<(u32, i64), TimedPool>,
    pub health: BTreeMap<(u32, i64), HealthCheckStats>,
    pub slow: Vec<([u8; 21], Vec<u8>)>,
    pub last_entry: u64,
}

fn merge_entry<V: WindowValue>(map: &mut BTreeMap<(u32, i64), V>, key: (u32, i64), value: &V) {
    match map.get_mut(&key) {
        Some(existing) => existing.merge(value),
        None => {
            map.insert(key, value.clone());
        }
    }
}

/// Adds the 1-minute and 1-hour writes implied by the raw writes. Every
/// partition written by the group records `last` as applied: any entry of the
/// group that concerns it is in these writes.
pub(crate) fn derive_rollups(writes: &mut BTreeMap<(Tier, i64), PartitionWrites>, last: u64) {
    let raw: Vec<((Tier, i64), PartitionWrites)> = std::mem::take(writes).into_iter().collect();
    for (_, w) in &raw {
        for tier in [Tier::Minute, Tier::Hour] {
            for ((series, at), value) in &w.queries {
                let at = tier.align(*at);
                let target = writes.entry((tier, floor(at, tier.partition_ms()))).or_default();
                merge_entry(&mut target.queries, (*series, at), value);
            }
            if tier != Tier::Hour {
                for ((series, at), value) in &w.instances {
                    let at = tier.align(*at);
                    let target = writes.entry((tier, floor(at, tier.partition_ms()))).or_default();
                    merge_entry(&mut target.instances, (*series, at), value);
                }
            }
            for ((series, at), value) in &w.pools {
                let at = tier.align(*at);
                let target = writes.entry((tier, floor(at, tier.partition_ms()))).or_default();
                merge_entry(&mut target.pools, (*series, at), value);
            }
            for ((series, at), value) in &w.health {
                let at = tier.align(*at);
                let target = writes.entry((tier, floor(at, tier.partition_ms()))).or_default();
                merge_entry(&mut target.health, (*series, at), value);
            }
        }
    }
    for (key, w) in raw {
        writes.insert(key, w);
    }
    for w in writes.values_mut() {
        w.last_entry = last;
    }
}

/// Series ids of one log entry, resolved before anything is written.
struct Resolved<'a> {
    service: u32,
    /// Borrowed from the entry, owned only where the cap folded several
    /// fingerprints into one series.
    queries: Vec<(u32, Cow<'a, QueryStats>)>,
    /// The service's series of every statement merged, with their sum.
    total: Option<(u32, QueryStats)>,
    instance: u32,
    pools: Vec<(u32, &'a PoolStats)>,
    health: Vec<(u32, &'a HealthCheckStats)>,
}

impl StoreWriter {
    /// Records an agent's `Hello`.
    pub fn register(&mut self, hello: &Hello) -> Result<(), StoreError> {
        self.store.check_disk()?;
        self.store.registry().register(hello, self.store.now_ms())
    }

    /// Validates, logs and applies a group of batches; one fsync covers the
    /// group. Outcomes are in request order. An error means nothing of the
    /// group may be acknowledged (the agents resend; duplicates are caught).
    pub fn write(&mut self, requests: Vec<BatchRequest>) -> Result<Vec<ApplyOutcome>, StoreError> {
        self.store.check_disk()?;
        let now_ms = self.store.now_ms();
        let registry = self.store.registry();
        let limits = self.store.limits();
        let mut outcomes = Vec::with_capacity(requests.len());
        let mut entries = Vec::with_capacity(requests.len());
        let mut in_group = HashSet::new();
        let mut new_instances: HashMap<String, usize> = HashMap::new();
        for request in requests {
            let BatchRequest { hello, batch, texts } = request;
            let marker = applied_key(batch.window.start_ms, &hello.instance_id, batch.seq);
            if !in_group.insert(marker.clone()) || registry.meta().contains_key(&marker)? {
                outcomes.push(ApplyOutcome::Duplicate);
                continue;
            }
            let offered: HashSet<Fingerprint> = texts.iter().map(|t| t.fingerprint).collect();
            let unknown = registry
                .lacking_texts(batch.referenced_fingerprints())
                .into_iter()
                .find(|fp| !offered.contains(fp));
            if let Some(fingerprint) = unknown {
                outcomes.push(ApplyOutcome::Rejected(format!(
                    "fingerprint {fingerprint} is unknown: its text was never sent on this stream"
                )));
                continue;
            }
            if registry.instance(&hello.instance_id).is_none_or(|i| i.batches == 0) {
                // Instances restart with new ids on every deploy: the limit is
                // on instances reporting within the last hour.
                let known = registry.active_instance_count(&hello.service, now_ms - 3_600_000);
                let pending = new_instances.entry(hello.service.clone()).or_default();
                if known + *pending >= limits.max_instances_per_service {
                    outcomes.push(ApplyOutcome::Rejected(format!(
                        "service {} has reached its limit of {} instances",
                        hello.service, limits.max_instances_per_service
                    )));
                    continue;
                }
                *pending += 1;
            }
            let mut batch = batch;
            batch.texts = texts
                .into_iter()
                .filter(|t| !registry.has_text(t.fingerprint))
                .collect();
            entries.push(WalEntry {
                wal_seq: 0,
                received_ms: now_ms,
                service: hello.service.clone(),
                instance_id: hello.instance_id.clone(),
                batch,
            });
            outcomes.push(ApplyOutcome::Applied);
        }
        if entries.is_empty() {
            return Ok(outcomes);
        }
        self.wal.append(&mut entries)?;
        self.apply(&entries)?;
        self.flush_if_due()?;
        Ok(outcomes)
    }

    /// Applies log entries found at startup to every database that has not
    /// applied them yet.
    pub(crate) fn replay(&mut self, entries: Vec<WalEntry>) -> Result<(), StoreError> {
        // Windows past the raw retention are refused at ingest; a log entry
        // that aged past it while the collector was down is dropped the same
        // way (its partitions would be expired at the next pass anyway).
        let oldest = self.store.now_ms() - self.store.retention().raw_seconds as i64 * 1_000;
        let entries: Vec<WalEntry> = entries
            .into_iter()
            .filter(|e| e.batch.window.end_ms() >= oldest)
            .collect();
        for chunk in entries.chunks(256) {
            self.apply_replayed(chunk)?;
        }
        Ok(())
    }

    fn resolve<'a>(
        &self,
        entry: &'a WalEntry,
        count_overflow: bool,
        batch: &mut sled::Batch,
    ) -> Result<(Resolved<'a>, bool), StoreError> {
        let registry = self.store.registry();
        let cap = self.store.limits().max_fingerprints_per_service;
        let (service, mut created) = registry.service_id(&entry.service)?;
        for text in &entry.batch.texts {
            created |= registry.insert_text(text.fingerprint, &text.text)?;
        }
        let mut queries: BTreeMap<u32, Cow<'_, QueryStats>> = BTreeMap::new();
        let mut overflow = 0;
        for stats in &entry.batch.queries {
            let series_key = SeriesKey::Query {
                service,
                fingerprint: stats.fingerprint,
            };
            let id = match registry.series_id(&series_key) {
                Some(id) => id,
                None if registry.fingerprint_count(service) < cap || stats.fingerprint == Fingerprint::OTHER => {
                    let (id, new) = registry.series_id_or_create(&series_key)?;
                    created |= new;
                    id
                }
                None => {
                    overflow += 1;
                    let other = SeriesKey::Query {
                        service,
                        fingerprint: Fingerprint::OTHER,
                    };
                    let (id, new) = registry.series_id_or_create(&other)?;
                    created |= new;
                    id
                }
            };
            match queries.get_mut(&id) {
                Some(existing) => existing.to_mut().merge(stats),
                None => {
                    queries.insert(id, Cow::Borrowed(stats));
                }
            }
        }
        if overflow > 0 && count_overflow {
            registry.add_overflow(service, overflow, batch);
        }
        let total = if entry.batch.queries.is_empty() {
            None
        } else {
            let (id, new) = registry.series_id_or_create(&SeriesKey::Service { service })?;
            created |= new;
            let mut sum = QueryStats::new(Fingerprint::OTHER);
            let mut latency = DenseHistogram::new();
            for stats in queries.values().filter(|s| s.calls > 0) {
                sum.merge_counters(stats);
                latency.add(&stats.latency);
            }
            sum.latency = latency.take();
            Some((id, sum))
        };
        let (instance, new) = registry.series_id_or_create(&SeriesKey::InstanceQueries {
            instance: entry.instance_id.clone(),
        })?;
        created |= new;
        let mut pools = Vec::new();
        for pool in &entry.batch.pools {
            let key = SeriesKey::Pool {
                instance: entry.instance_id.clone(),
                pool: pool.pool.clone(),
            };
            let (id, new) = registry.series_id_or_create(&key)?;
            created |= new;
            pools.push((id, pool));
        }
        let mut health = Vec::new();
        for check in &entry.batch.health_checks {
            let key = SeriesKey::Health {
                instance: entry.instance_id.clone(),
                pool: check.pool.clone(),
            };
            let (id, new) = registry.series_id_or_create(&key)?;
            created |= new;
            health.push((id, check));
        }
        let resolved = Resolved {
            service,
            queries: queries.into_iter().collect(),
            total,
            instance,
            pools,
            health,
        };
        Ok((resolved, created))
    }

    /// Applies freshly logged entries: resolves their series and merges
    /// their windows into the memtable (raw resolution; rollups are derived
    /// when it is flushed). No partition is touched on the way to the
    /// acknowledgement.
    fn apply(&mut self, entries: &[WalEntry]) -> Result<(), StoreError> {
        let registry = self.store.registry().clone();
        let mut meta_batch = sled::Batch::default();
        let mut resolved = Vec::with_capacity(entries.len());
        for entry in entries {
            // Ids and texts reach the disk before any partition refers to
            // them: the flush writes and syncs them first.
            let (r, _) = self.resolve(entry, true, &mut meta_batch)?;
            resolved.push(r);
        }
        let max_slow = self.store.limits().max_slow_samples;
        {
            let mut tables = self.store.tables_mut();
            let table = &mut tables.active;
            for (entry, r) in entries.iter().zip(&resolved) {
                let batch = &entry.batch;
                let at = batch.window.start_ms;
                for (series, stats) in r.all_queries() {
                    table.add_query(series, at, stats);
                }
                table.add_instances(r.instance, at, &PackedInstances::pack(&r.instance_counters()));
                for (series, pool) in &r.pools {
                    let timed = TimedPool {
                        stats: (*pool).clone(),
                        latest_ms: at,
                        latest_seq: entry.wal_seq,
                    };
                    table.add_pool(*series, at, &timed);
                }
                for (series, check) in &r.health {
                    table.add_health(*series, at, check);
                }
                let part_start = floor(at, Tier::Raw.partition_ms());
                for sample in &batch.slow_queries {
                    if let Some(unique) = self.state.slow_slot(part_start, r.service, entry.wal_seq, max_slow) {
                        table.add_slow(
                            at,
                            key::slow(sample.at_ms, r.service, unique),
                            encode_slow(&entry.instance_id, sample),
                        );
                    }
                }
                table.last_seq = entry.wal_seq;
            }
        }
        for entry in entries {
            record_applied(&registry, entry, &mut meta_batch);
        }
        if let Some(last) = entries.last() {
            meta_batch.insert(key::APPLIED_LOG, &last.wal_seq.to_be_bytes()[..]);
        }
        // New ids and texts in one write for the group.
        registry.write_pending()?;
        registry.meta().apply_batch(meta_batch)?;
        Ok(())
    }

    /// Applies log entries found at startup straight to every partition
    /// that has not applied them yet (each records the last entry it has).
    fn apply_replayed(&mut self, entries: &[WalEntry]) -> Result<(), StoreError> {
        let registry = self.store.registry().clone();
        let meta_applied = applied_log(registry.meta())?;
        let mut meta_batch = sled::Batch::default();
        let mut created = false;
        let mut resolved = Vec::with_capacity(entries.len());
        for entry in entries {
            // The overflow count lives in the meta database: an entry it has
            // already applied is not counted again when replayed.
            let count_overflow = meta_applied < entry.wal_seq;
            let (r, new) = self.resolve(entry, count_overflow, &mut meta_batch)?;
            created |= new;
            resolved.push(r);
        }
        // Ids and texts must be on disk before any partition refers to them.
        if created {
            registry.sync()?;
        }

        let mut writes: BTreeMap<(Tier, i64), PartitionWrites> = BTreeMap::new();
        let mut applied_by: HashMap<(Tier, i64), u64> = HashMap::new();
        let max_slow = self.store.limits().max_slow_samples;
        // A replay must skip each tier its partitions already hold, so it
        // goes entry by entry and tier by tier.
        for (entry, r) in entries.iter().zip(&resolved) {
            let batch = &entry.batch;
            for tier in Tier::ALL {
                let at = tier.align(batch.window.start_ms);
                let part_start = floor(at, tier.partition_ms());
                let applied = match applied_by.get(&(tier, part_start)) {
                    Some(applied) => *applied,
                    None => {
                        let applied = match self.store.partitions().get(tier, at) {
                            Some(partition) => partition.applied_log()?,
                            None => 0,
                        };
                        applied_by.insert((tier, part_start), applied);
                        applied
                    }
                };
                if applied >= entry.wal_seq {
                    continue;
                }
                let w = writes.entry((tier, part_start)).or_default();
                w.last_entry = w.last_entry.max(entry.wal_seq);
                for (series, stats) in r.all_queries() {
                    merge_entry(&mut w.queries, (series, at), stats);
                }
                // Per-instance breakdowns are kept at raw and 1-minute
                // resolution: instances come and go with every deploy, and a
                // year of hourly records of dead instances would outweigh
                // everything else.
                if tier != Tier::Hour {
                    merge_entry(&mut w.instances, (r.instance, at), &r.instance_counters());
                }
                for (series, pool) in &r.pools {
                    let timed = TimedPool {
                        stats: (*pool).clone(),
                        latest_ms: batch.window.start_ms,
                        latest_seq: entry.wal_seq,
                    };
                    merge_entry(&mut w.pools, (*series, at), &timed);
                }
                for (series, check) in &r.health {
                    merge_entry(&mut w.health, (*series, at), check);
                }
                if tier == Tier::Raw {
                    for sample in &batch.slow_queries {
                        if let Some(unique) = self.state.slow_slot(part_start, r.service, entry.wal_seq, max_slow) {
                            w.slow.push((
                                key::slow(sample.at_ms, r.service, unique),
                                encode_slow(&entry.instance_id, sample),
                            ));
                        }
                    }
                }
            }
            if meta_applied < entry.wal_seq {
                record_applied(&registry, entry, &mut meta_batch);
            }
        }
        // Each partition's share goes to a run of its own, like a flush: a
        // partition's sources then add up in the order the log has them.
        for ((tier, start), w) in writes {
            let last_entry = w.last_entry;
            let mut entries = Vec::new();
            super::flush::encode_deltas(w, &mut entries);
            if entries.is_empty() {
                continue;
            }
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            let partition = self.store.partitions().get_or_create(tier, start)?;
            let run = partition.write_run(last_entry, entries.into_iter().map(Ok))?;
            partition.install_run(run);
            super::flush::merge_runs(&self.store, &partition)?;
        }
        if let Some(last) = entries.last() {
            meta_batch.insert(key::APPLIED_LOG, &last.wal_seq.to_be_bytes()[..]);
            self.state.applied_since_checkpoint = Some(last.wal_seq);
        }
        registry.meta().apply_batch(meta_batch)?;
        Ok(())
    }
}

impl Resolved<'_> {
    /// Every query window of the entry: its statements' and the service's
    /// total.
    fn all_queries(&self) -> impl Iterator<Item = (u32, &QueryStats)> {
        let statements = self.queries.iter().map(|(series, stats)| (*series, stats.as_ref()));
        statements.chain(self.total.iter().map(|(series, stats)| (*series, stats)))
    }

    /// The instance's counters of every statement of the entry.
    fn instance_counters(&self) -> InstanceQueries {
        InstanceQueries(
            self.queries
                .iter()
                .map(|(series, stats)| InstanceQuery::from_stats(*series, stats))
                .collect(),
        )
    }
}

/// Records in the meta database that `entry` was applied: its marker (so a
/// resend is a duplicate) and its instance's record.
fn record_applied(registry: &super::registry::Registry, entry: &WalEntry, meta_batch: &mut sled::Batch) {
    let batch = &entry.batch;
    meta_batch.insert(
        applied_key(batch.window.start_ms, &entry.instance_id, batch.seq),
        &[][..],
    );
    registry.touch_instance(
        &entry.service,
        &entry.instance_id,
        batch.seq,
        &batch.counters,
        entry.received_ms,
        meta_batch,
    );
}

impl WriterState {
    /// The unique part of the key of the next slow sample of `service` in
    /// the raw partition starting at `part_start`, or `None` once the
    /// partition holds as many as it keeps.
    fn slow_slot(&mut self, part_start: i64, service: u32, wal_seq: u64, max: u64) -> Option<u64> {
        let count = self.slow_counts.entry((part_start, service)).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        self.slow_unique += 1;
        Some((wal_seq << 16) | (self.slow_unique & 0xffff))
    }
}
