//! The recording side: per-fingerprint statistics of the current window.
//!
//! Recording takes one shard lock chosen by the statement's hash, never
//! awaits and never does I/O. Normalizing happens once per distinct raw
//! statement; after that a statement is found by the hash of its raw text.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use querypulse_proto::{AgentCounters, Batch, ConfigUpdate, Fingerprint, QueryStats, SlowQuerySample, Window};
use rustc_hash::FxHasher;

use crate::fingerprint::{Dialect, normalize};
use crate::outcome::Outcome;

type FxBuild = BuildHasherDefault<FxHasher>;

/// Raw statements remembered per shard before the cache starts over.
const RAW_CACHE_PER_SHARD: usize = 4_096;
const SHARDS: usize = 16;

/// Settings the collector may change while the agent runs.
#[derive(Debug)]
pub(crate) struct LiveSettings {
    pub slow_threshold_us: AtomicU64,
    pub max_samples_per_fingerprint: AtomicU64,
    pub max_samples_per_window: AtomicU64,
    pub interval_ms: AtomicU64,
}

/// Counters of the agent's own health, shipped with every batch.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub dropped_batches: AtomicU64,
    pub rejected_batches: AtomicU64,
    pub overflow_fingerprints: AtomicU64,
    pub overflow_calls: AtomicU64,
    pub dropped_samples: AtomicU64,
    pub dropped_records: AtomicU64,
    pub send_errors: AtomicU64,
    pub reconnects: AtomicU64,
    pub outbox_bytes: AtomicU64,
    pub outbox_batches: AtomicU64,
    pub acked_batches: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> AgentCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        AgentCounters {
            dropped_batches: get(&self.dropped_batches),
            rejected_batches: get(&self.rejected_batches),
            overflow_fingerprints: get(&self.overflow_fingerprints),
            overflow_calls: get(&self.overflow_calls),
            dropped_samples: get(&self.dropped_samples),
            dropped_records: get(&self.dropped_records),
            send_errors: get(&self.send_errors),
            reconnects: get(&self.reconnects),
            outbox_bytes: get(&self.outbox_bytes),
            outbox_batches: get(&self.outbox_batches),
        }
    }
}

#[derive(Default)]
struct Shard {
    by_raw: HashMap<u64, Fingerprint, FxBuild>,
    stats: HashMap<Fingerprint, QueryStats, FxBuild>,
}

#[derive(Default)]
struct Registry {
    texts: HashMap<Fingerprint, Arc<str>, FxBuild>,
}

#[derive(Default)]
struct SlowLog {
    samples: Vec<SlowQuerySample>,
    per_fingerprint: HashMap<Fingerprint, u32, FxBuild>,
}

/// The aggregation state of one agent.
pub(crate) struct Recorder {
    dialect: Dialect,
    max_fingerprints: usize,
    capture_raw_text: bool,
    shards: Box<[Mutex<Shard>]>,
    registry: Mutex<Registry>,
    slow: Mutex<SlowLog>,
    pub settings: LiveSettings,
    pub counters: Counters,
    pub pools: crate::pool::PoolRegistry,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("dialect", &self.dialect)
            .field("max_fingerprints", &self.max_fingerprints)
            .finish_non_exhaustive()
    }
}

/// A poisoned lock only means another thread panicked while recording; the
/// statistics are still usable, and recording must never panic in turn.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) struct RecorderConfig {
    pub dialect: Dialect,
    pub max_fingerprints: usize,
    pub capture_raw_text: bool,
    pub slow_threshold: Duration,
    pub max_samples_per_fingerprint: u32,
    pub max_samples_per_window: u32,
    pub interval: Duration,
}

impl Recorder {
    pub(crate) fn new(config: RecorderConfig) -> Recorder {
        Recorder {
            dialect: config.dialect,
            max_fingerprints: config.max_fingerprints,
            capture_raw_text: config.capture_raw_text,
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            registry: Mutex::new(Registry::default()),
            slow: Mutex::new(SlowLog::default()),
            settings: LiveSettings {
                slow_threshold_us: AtomicU64::new(duration_us(config.slow_threshold)),
                max_samples_per_fingerprint: AtomicU64::new(u64::from(config.max_samples_per_fingerprint)),
                max_samples_per_window: AtomicU64::new(u64::from(config.max_samples_per_window)),
                interval_ms: AtomicU64::new(config.interval.as_millis() as u64),
            },
            counters: Counters::default(),
            pools: Default::default(),
        }
    }

    /// Records one execution of `sql`.
    pub(crate) fn record(&self, sql: &str, elapsed: Duration, outcome: Outcome, pool: Option<&str>) {
        let micros = duration_us(elapsed);
        let raw_hash = FxBuild::default().hash_one(sql);
        let shard = &self.shards[(raw_hash as usize) % SHARDS];
        let mut shard = lock(shard);
        let fingerprint = match shard.by_raw.get(&raw_hash) {
            Some(fingerprint) => *fingerprint,
            None => {
                let fingerprint = self.register(sql);
                if shard.by_raw.len() >= RAW_CACHE_PER_SHARD {
                    shard.by_raw.clear();
                }
                shard.by_raw.insert(raw_hash, fingerprint);
                fingerprint
            }
        };
        if fingerprint == Fingerprint::OTHER {
            self.counters.overflow_calls.fetch_add(1, Ordering::Relaxed);
        }
        let class = outcome.error_class();
        shard
            .stats
            .entry(fingerprint)
            .or_insert_with(|| QueryStats::new(fingerprint))
            .record(micros, outcome.row_count(), class.as_ref().map(|c| c.as_str()));
        drop(shard);

        if micros >= self.settings.slow_threshold_us.load(Ordering::Relaxed) {
            self.sample_slow(fingerprint, sql, micros, outcome, pool);
        }
    }

    /// Normalizes a statement seen for the first time and registers its
    /// fingerprint, or answers [`Fingerprint::OTHER`] past the cap.
    fn register(&self, sql: &str) -> Fingerprint {
        let normalized = normalize(sql, self.dialect);
        let mut registry = lock(&self.registry);
        if registry.texts.contains_key(&normalized.fingerprint) {
            return normalized.fingerprint;
        }
        if registry.texts.len() >= self.max_fingerprints {
            self.counters.overflow_fingerprints.fetch_add(1, Ordering::Relaxed);
            return Fingerprint::OTHER;
        }
        registry
            .texts
            .insert(normalized.fingerprint, Arc::from(normalized.text));
        normalized.fingerprint
    }

    fn sample_slow(&self, fingerprint: Fingerprint, sql: &str, micros: u64, outcome: Outcome, pool: Option<&str>) {
        let per_fingerprint = self.settings.max_samples_per_fingerprint.load(Ordering::Relaxed);
        let per_window = self.settings.max_samples_per_window.load(Ordering::Relaxed);
        let mut slow = lock(&self.slow);
        let taken = slow.per_fingerprint.get(&fingerprint).copied().unwrap_or(0);
        if u64::from(taken) >= per_fingerprint || slow.samples.len() as u64 >= per_window {
            self.counters.dropped_samples.fetch_add(1, Ordering::Relaxed);
            return;
        }
        slow.per_fingerprint.insert(fingerprint, taken + 1);
        let raw_text = self.capture_raw_text.then(|| {
            let mut cut = sql.len().min(crate::fingerprint::MAX_TEXT_LEN);
            while !sql.is_char_boundary(cut) {
                cut -= 1;
            }
            sql[..cut].to_owned()
        });
        slow.samples.push(SlowQuerySample {
            fingerprint,
            at_ms: crate::now_ms(),
            duration_us: micros,
            rows: outcome.row_count(),
            error_class: outcome.error_class().map(|c| c.as_str().to_owned()),
            pool: pool.map(str::to_owned),
            raw_text,
        });
    }

    /// Takes everything recorded since the last harvest as the batch of
    /// `window`. Fingerprint texts are attached by the sender, per stream.
    pub(crate) fn harvest(&self, seq: u64, window: Window) -> Batch {
        let mut merged: HashMap<Fingerprint, QueryStats, FxBuild> = HashMap::default();
        for shard in self.shards.iter() {
            let stats = std::mem::take(&mut lock(shard).stats);
            for (fingerprint, stats) in stats {
                match merged.get_mut(&fingerprint) {
                    Some(existing) => existing.merge(&stats),
                    None => {
                        merged.insert(fingerprint, stats);
                    }
                }
            }
        }
        let slow = std::mem::take(&mut *lock(&self.slow));
        let mut batch = Batch::new(seq, window);
        batch.queries = merged.into_values().collect();
        batch.queries.sort_by_key(|q| q.fingerprint);
        batch.slow_queries = slow.samples;
        batch.counters = self.counters.snapshot();
        self.pools.harvest_into(&mut batch);
        batch
    }

    /// The normalized text of a registered fingerprint.
    pub(crate) fn text(&self, fingerprint: Fingerprint) -> Option<Arc<str>> {
        if fingerprint == Fingerprint::OTHER {
            return Some(Arc::from(Fingerprint::OTHER_TEXT));
        }
        lock(&self.registry).texts.get(&fingerprint).cloned()
    }

    /// Applies settings pushed by the collector.
    pub(crate) fn apply(&self, update: ConfigUpdate) {
        let settings = &self.settings;
        if let Some(us) = update.slow_threshold_us {
            settings.slow_threshold_us.store(us, Ordering::Relaxed);
        }
        if let Some(n) = update.max_samples_per_fingerprint {
            settings
                .max_samples_per_fingerprint
                .store(u64::from(n), Ordering::Relaxed);
        }
        if let Some(n) = update.max_samples_per_window {
            settings.max_samples_per_window.store(u64::from(n), Ordering::Relaxed);
        }
        if let Some(ms) = update.interval_ms {
            settings.interval_ms.store(u64::from(ms), Ordering::Relaxed);
        }
        tracing::info!(?update, "querypulse agent applied settings from the collector");
    }

    /// Number of distinct fingerprints registered.
    pub(crate) fn fingerprint_count(&self) -> usize {
        lock(&self.registry).texts.len()
    }
}

/// Microseconds, saturating; a duration is never negative.
pub(crate) fn duration_us(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder(max_fingerprints: usize) -> Recorder {
        Recorder::new(RecorderConfig {
            dialect: Dialect::Generic,
            max_fingerprints,
            capture_raw_text: false,
            slow_threshold: Duration::from_millis(100),
            max_samples_per_fingerprint: 2,
            max_samples_per_window: 3,
            interval: Duration::from_secs(10),
        })
    }

    fn window() -> Window {
        Window {
            start_ms: 0,
            length_ms: 10_000,
        }
    }

    #[test]
    fn statements_differing_in_literals_share_one_entry() {
        let r = recorder(10);
        r.record(
            "select * from t where id = 1",
            Duration::from_micros(100),
            Outcome::rows(1),
            None,
        );
        r.record(
            "select * from t where id = 2",
            Duration::from_micros(300),
            Outcome::sqlstate("23505"),
            None,
        );
        let batch = r.harvest(1, window());
        assert_eq!(batch.queries.len(), 1);
        let q = &batch.queries[0];
        assert_eq!((q.calls, q.errors, q.rows, q.min_us, q.max_us), (2, 1, 1, 100, 300));
        assert_eq!(r.text(q.fingerprint).as_deref(), Some("select * from t where id = ?"));
        assert!(
            r.harvest(2, window()).queries.is_empty(),
            "a harvest starts a new window"
        );
    }

    #[test]
    fn fingerprints_beyond_the_cap_count_into_other() {
        let r = recorder(2);
        for table in ["a", "b", "c", "d"] {
            r.record(
                &format!("select * from {table}"),
                Duration::from_micros(10),
                Outcome::OK,
                None,
            );
        }
        r.record(
            "select * from d where x = 1",
            Duration::from_micros(10),
            Outcome::OK,
            None,
        );
        let batch = r.harvest(1, window());
        let other = batch
            .queries
            .iter()
            .find(|q| q.fingerprint == Fingerprint::OTHER)
            .unwrap();
        assert_eq!(other.calls, 3);
        assert_eq!(batch.counters.overflow_calls, 3);
        assert_eq!(batch.counters.overflow_fingerprints, 3);
        assert_eq!(r.fingerprint_count(), 2);
    }

    #[test]
    fn slow_samples_are_rate_limited_per_fingerprint_and_window() {
        let r = recorder(10);
        for i in 0..5 {
            r.record(
                &format!("select {i} from a"),
                Duration::from_millis(150),
                Outcome::OK,
                Some("main"),
            );
        }
        r.record("select 1 from b", Duration::from_millis(150), Outcome::OK, None);
        r.record("select 1 from c", Duration::from_millis(150), Outcome::OK, None);
        r.record("select 1 from d", Duration::from_millis(50), Outcome::OK, None);
        let batch = r.harvest(1, window());
        assert_eq!(batch.slow_queries.len(), 3);
        assert_eq!(batch.counters.dropped_samples, 4);
        assert!(batch.slow_queries.iter().all(|s| s.raw_text.is_none()));
        assert_eq!(batch.slow_queries[0].pool.as_deref(), Some("main"));
    }
}
