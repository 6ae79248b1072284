//! The recording side: per-fingerprint statistics of the current window.
//!
//! Recording is the only part of the agent on the service's own request path,
//! so it never awaits, never does I/O and, once a statement is known, never
//! allocates. The state is split into a few *stripes* (about one per CPU),
//! each behind its own lock. A thread keeps recording into the same stripe, so
//! in steady state every lock is taken by one thread only and costs one
//! uncontended compare-exchange to take and a plain store to release (a spin
//! lock: nobody ever sleeps on a stripe, so releasing has no waiter to wake);
//! when a stripe is busy (another thread, or the harvest) the thread moves to
//! the next free one instead of waiting, the way striped counters such as
//! Java's `LongAdder` spread contention. Threads on one hot statement therefore
//! never serialize on a shared lock, and memory grows with the number of
//! stripes, not with the number of threads.
//!
//! Each stripe caches raw statement hash → fingerprint, so a statement is
//! normalized once (on first sight, into a shared bounded index) and afterwards
//! found by the hash of its raw text. Latencies go into sorted (bucket, count)
//! pairs (4 bytes per non-empty bucket), so thousands of rare fingerprints
//! stay small; a fingerprint that fills many buckets on a stripe gets a dense
//! array there, where a record is an index instead of a binary search.
//!
//! The harvest goes fingerprint by fingerprint, taking its entry from each
//! stripe under that stripe's lock, merging them into a [`LatencyHistogram`]
//! and encoding it for the wire at once. Every record happens entirely under
//! one stripe lock, so it lands either before its entry on that stripe is
//! taken or after it, never both and never neither: the merged batch is
//! exactly what one place would have counted.

use std::cell::Cell;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use querypulse_proto::histogram::{BUCKETS, HIGHEST_US, bucket_index};
use querypulse_proto::wire::v1 as wire;
use querypulse_proto::{
    AgentCounters, Batch, ConfigUpdate, ErrorClassCount, Fingerprint, LatencyHistogram, QueryStats, SlowQuerySample,
    Window,
};
use rustc_hash::FxHasher;
use spin::mutex::{SpinMutex, SpinMutexGuard};

use crate::fingerprint::{Dialect, normalize};
use crate::outcome::{ErrorClass, Outcome};

type FxBuild = BuildHasherDefault<FxHasher>;

/// Raw statements each stripe remembers before its cache starts over.
const RAW_CACHE_PER_STRIPE: usize = 4_096;
/// Raw statements the shared index remembers before it starts over. A stripe
/// that misses its own cache looks here before normalizing again.
const RAW_INDEX_LEN: usize = 65_536;
/// Upper bound on stripes, whatever the CPU count.
const MAX_STRIPES: usize = 64;
/// Distinct latency buckets a fingerprint fills on one stripe in one window
/// before its counts move from the sparse histogram (a binary search per
/// record, 4 bytes a bucket) to a dense array (an index per record, ~20 KB).
/// Only statements recorded hundreds of times per window pay for the array.
const DENSE_AFTER_BUCKETS: usize = 256;
/// Records of one fingerprint on one stripe in one window after which its
/// counts move to the dense array whatever the buckets: 20 KB is nothing to a
/// statement that hot, and an index beats a binary search.
const DENSE_AFTER_CALLS: u64 = 4_096;

thread_local! {
    /// The stripe this thread records into, before reducing it to a recorder's
    /// stripe count. Shared by every recorder in the process (it is a hint,
    /// not a registration), so several agents in one process need no
    /// per-thread bookkeeping. `usize::MAX` until the thread first records.
    static STRIPE_HINT: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Hands new threads their first stripe round-robin, so the first threads of
/// a process start apart instead of discovering each other by contention.
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

fn stripe_hint() -> usize {
    STRIPE_HINT.with(|hint| {
        let mut value = hint.get();
        if value == usize::MAX {
            value = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) & (usize::MAX >> 1);
            hint.set(value);
        }
        value
    })
}

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
    /// Calls counted into `other`; added at each harvest, not per record.
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

/// One stripe's share of the current window. Its lock is padded onto its own
/// cache lines so that threads on neighbouring stripes do not slow each other.
///
/// A spin lock rather than [`Mutex`]: a `Mutex` releases with an atomic swap
/// (it must learn whether a sleeper needs waking), which on the recording path
/// cost about as much as taking it. Here release is a plain store, and every
/// lock is held for one entry's worth of work, tens of nanoseconds, so a
/// thread that must wait (see [`Stripe::wait`]) spins briefly, then yields.
#[repr(align(128))]
struct Stripe(SpinMutex<StripeState>);

impl Stripe {
    /// Takes the lock, waiting for it: only the harvest, and a recording
    /// thread that found every stripe busy, ever wait.
    fn wait(&self) -> SpinMutexGuard<'_, StripeState> {
        let mut spins = 0u32;
        loop {
            if let Some(guard) = self.0.try_lock() {
                return guard;
            }
            // The holder may have been preempted; let it run.
            if spins < 64 {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

#[derive(Default)]
struct StripeState {
    by_raw: HashMap<u64, Fingerprint, FxBuild>,
    stats: HashMap<Fingerprint, Box<Slot>, FxBuild>,
}

/// One fingerprint's statistics on one stripe, on cache lines of their own.
/// Every record writes them; kept inline in the map they could share a line
/// with another stripe's map (small allocations sit side by side), and two
/// threads on different stripes would contend for it after all.
#[repr(align(128))]
#[derive(Default)]
struct Slot(WindowStats);

impl StripeState {
    fn record(&mut self, fingerprint: Fingerprint, micros: u64, outcome: Outcome) {
        self.stats.entry(fingerprint).or_default().0.record(micros, outcome);
    }

    fn remember(&mut self, raw_hash: u64, fingerprint: Fingerprint) {
        if self.by_raw.len() >= RAW_CACHE_PER_STRIPE {
            self.by_raw.clear();
        }
        self.by_raw.insert(raw_hash, fingerprint);
    }
}

/// One fingerprint's statistics in one stripe for the current window.
///
/// Unlike [`QueryStats`] nothing here allocates per record: error classes stay
/// [`ErrorClass`] values until the harvest turns them into strings, and the sum
/// of squares is an integer, exact until it is shipped.
#[derive(Default)]
struct WindowStats {
    calls: u64,
    errors: u64,
    rows: u64,
    sum_us: u64,
    sum_squares_us: u128,
    min_us: u64,
    max_us: u64,
    outliers: u64,
    error_classes: Vec<(ErrorClass, u64)>,
    latency: StripeLatency,
}

/// One fingerprint's latency counts on one stripe: sorted (bucket, count)
/// pairs of 4 bytes while few buckets are filled, a dense array once many
/// are, or once one bucket counts past 65,535 in a window (a statement that
/// busy pays 20 KB gladly). The pairs keep their capacity from window to
/// window, so a known statement records without allocating.
enum StripeLatency {
    Sparse(Vec<(u16, u16)>),
    Dense(Box<[u64]>),
}

impl Default for StripeLatency {
    fn default() -> Self {
        StripeLatency::Sparse(Vec::new())
    }
}

impl StripeLatency {
    /// Records one latency; true when it was above the histogram's range.
    fn record(&mut self, micros: u64) -> bool {
        let index = bucket_index(micros);
        let counted = match self {
            StripeLatency::Dense(counts) => {
                counts[usize::from(index)] += 1;
                true
            }
            StripeLatency::Sparse(buckets) => match buckets.binary_search_by_key(&index, |(i, _)| *i) {
                Ok(at) if buckets[at].1 < u16::MAX => {
                    buckets[at].1 += 1;
                    true
                }
                // A count past 65,535 in one window needs the wide array.
                Ok(_) => false,
                Err(at) => {
                    buckets.insert(at, (index, 1));
                    if buckets.len() > DENSE_AFTER_BUCKETS {
                        self.densify();
                    }
                    true
                }
            },
        };
        if !counted {
            self.densify();
            if let StripeLatency::Dense(counts) = self {
                counts[usize::from(index)] += 1;
            }
        }
        micros > HIGHEST_US
    }

    /// Moves the sparse pairs into the dense array (nothing when dense).
    fn densify(&mut self) {
        if let StripeLatency::Sparse(buckets) = self {
            let mut counts = vec![0u64; BUCKETS].into_boxed_slice();
            for (i, count) in buckets.iter() {
                counts[usize::from(*i)] = u64::from(*count);
            }
            *self = StripeLatency::Dense(counts);
        }
    }

    /// The window's histogram, leaving `self` empty. `keep` says whether the
    /// fingerprint was busy enough to keep a dense array for the next window.
    fn take(&mut self, keep: bool) -> LatencyHistogram {
        let buckets: Vec<(u16, u64)> = match self {
            StripeLatency::Sparse(buckets) => {
                let window = buckets.iter().map(|(i, c)| (*i, u64::from(*c))).collect();
                buckets.clear();
                window
            }
            StripeLatency::Dense(counts) => {
                let window = (0..BUCKETS as u16)
                    .zip(counts.iter())
                    .filter(|(_, count)| **count > 0)
                    .map(|(index, count)| (index, *count))
                    .collect();
                counts.fill(0);
                if !keep {
                    *self = StripeLatency::default();
                }
                window
            }
        };
        LatencyHistogram::from_buckets(buckets).expect("indices in order and in range")
    }
}

impl WindowStats {
    fn record(&mut self, micros: u64, outcome: Outcome) {
        self.min_us = if self.calls == 0 {
            micros
        } else {
            self.min_us.min(micros)
        };
        self.max_us = self.max_us.max(micros);
        self.calls += 1;
        if self.calls == DENSE_AFTER_CALLS {
            // A hot statement: its counts get an array of their own, where a
            // record is an index and writes land far from anyone else's.
            self.latency.densify();
        }
        self.sum_us = self.sum_us.saturating_add(micros);
        // Below 2^64 squared stays below 2^128.
        self.sum_squares_us = self
            .sum_squares_us
            .saturating_add(u128::from(micros) * u128::from(micros));
        if self.latency.record(micros) {
            self.outliers += 1;
        }
        match outcome {
            Outcome::Ok { rows } => self.rows = self.rows.saturating_add(rows),
            Outcome::Error(class) => {
                self.errors += 1;
                self.count_error(class);
            }
        }
    }

    fn count_error(&mut self, class: ErrorClass) {
        match self.error_classes.iter_mut().find(|(c, _)| *c == class) {
            Some((_, n)) => *n = n.saturating_add(1),
            None => self.error_classes.push((class, 1)),
        }
    }

    /// The window's statistics as shipped, leaving `self` empty for the next
    /// window. A busy fingerprint keeps its allocations so the next window
    /// records without allocating; a quieter one gives a dense array back.
    fn take_window(&mut self, fingerprint: Fingerprint) -> QueryStats {
        // Fewer calls than that could not have needed the dense array.
        let latency = self.latency.take(self.calls >= DENSE_AFTER_BUCKETS as u64);
        let mut error_classes: Vec<ErrorClassCount> = self
            .error_classes
            .drain(..)
            .map(|(class, count)| ErrorClassCount {
                class: class.as_str().to_owned(),
                count,
            })
            .collect();
        error_classes.sort_by(|a, b| a.class.cmp(&b.class));
        // Two classes may print alike (an invalid SQLSTATE prints as `other`).
        error_classes.dedup_by(|later, earlier| {
            let same = later.class == earlier.class;
            if same {
                earlier.count = earlier.count.saturating_add(later.count);
            }
            same
        });
        let stats = QueryStats {
            fingerprint,
            calls: self.calls,
            errors: self.errors,
            error_classes,
            rows: self.rows,
            sum_us: self.sum_us,
            sum_squares_us: self.sum_squares_us as f64,
            min_us: self.min_us,
            max_us: self.max_us,
            latency,
            outliers: self.outliers,
        };
        *self = WindowStats {
            error_classes: std::mem::take(&mut self.error_classes),
            latency: std::mem::take(&mut self.latency),
            ..WindowStats::default()
        };
        stats
    }
}

#[derive(Default)]
struct Registry {
    texts: HashMap<Fingerprint, Arc<str>, FxBuild>,
    /// Raw statement hash → fingerprint, shared by the stripes (bounded).
    by_raw: HashMap<u64, Fingerprint, FxBuild>,
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
    /// A power of two in length, so a thread's hint maps to a stripe by a mask.
    stripes: Box<[Stripe]>,
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
            .field("stripes", &self.stripes.len())
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

/// About one stripe per CPU: no more threads than that run at once, so no
/// more stripes are needed to keep them apart.
fn stripe_count() -> usize {
    std::thread::available_parallelism()
        .map_or(4, NonZeroUsize::get)
        .next_power_of_two()
        .clamp(2, MAX_STRIPES)
}

impl Recorder {
    pub(crate) fn new(config: RecorderConfig) -> Recorder {
        Recorder {
            dialect: config.dialect,
            max_fingerprints: config.max_fingerprints,
            capture_raw_text: config.capture_raw_text,
            stripes: (0..stripe_count())
                .map(|_| Stripe(SpinMutex::new(StripeState::default())))
                .collect(),
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
        let raw_hash = raw_hash(sql);
        let known = self.with_stripe(|stripe| {
            let fingerprint = stripe.by_raw.get(&raw_hash).copied()?;
            stripe.record(fingerprint, micros, outcome);
            Some(fingerprint)
        });
        let fingerprint = match known {
            Some(fingerprint) => fingerprint,
            None => {
                // First sight on this stripe: resolve it without holding the
                // stripe, so normalizing a long statement delays nobody.
                let fingerprint = self.resolve(raw_hash, sql);
                self.with_stripe(|stripe| {
                    stripe.remember(raw_hash, fingerprint);
                    stripe.record(fingerprint, micros, outcome);
                });
                fingerprint
            }
        };
        if micros >= self.settings.slow_threshold_us.load(Ordering::Relaxed) {
            self.sample_slow(fingerprint, sql, micros, outcome, pool);
        }
    }

    /// Runs `f` on this thread's stripe, or on the next free one when that is
    /// busy; the thread then stays on the stripe it found free. Only when every
    /// stripe is busy (more threads recording at this instant than stripes)
    /// does it wait, on its own stripe.
    fn with_stripe<R>(&self, f: impl FnOnce(&mut StripeState) -> R) -> R {
        let mask = self.stripes.len() - 1;
        let hint = stripe_hint();
        for step in 0..=mask {
            let at = hint.wrapping_add(step);
            let Some(mut guard) = self.stripes[at & mask].0.try_lock() else {
                continue;
            };
            if step > 0 {
                STRIPE_HINT.with(|h| h.set(at & (usize::MAX >> 1)));
            }
            return f(&mut guard);
        }
        f(&mut self.stripes[hint & mask].wait())
    }

    /// The fingerprint of a raw statement this stripe has not seen: from the
    /// shared index, or by normalizing it and registering the result, or
    /// [`Fingerprint::OTHER`] past the cap.
    fn resolve(&self, raw_hash: u64, sql: &str) -> Fingerprint {
        if let Some(fingerprint) = lock(&self.registry).by_raw.get(&raw_hash) {
            return *fingerprint;
        }
        let normalized = normalize(sql, self.dialect);
        let mut registry = lock(&self.registry);
        let fingerprint = if registry.texts.contains_key(&normalized.fingerprint) {
            normalized.fingerprint
        } else if registry.texts.len() >= self.max_fingerprints {
            self.counters.overflow_fingerprints.fetch_add(1, Ordering::Relaxed);
            Fingerprint::OTHER
        } else {
            registry
                .texts
                .insert(normalized.fingerprint, Arc::from(normalized.text));
            normalized.fingerprint
        };
        if registry.by_raw.len() >= RAW_INDEX_LEN {
            registry.by_raw.clear();
        }
        registry.by_raw.insert(raw_hash, fingerprint);
        fingerprint
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
    /// `window`, in its wire form. Fingerprint texts are attached by the
    /// sender, per stream. Each fingerprint's histogram is encoded as soon as
    /// its stripes are merged, so the harvest never holds a second, wider
    /// copy of every histogram the stripes keep.
    pub(crate) fn harvest(&self, seq: u64, window: Window) -> wire::Batch {
        let mut queries = Vec::new();
        let batch = self.harvest_with(seq, window, |stats| queries.push(wire::QueryStats::from(&stats)));
        let mut batch = wire::Batch::from(&batch);
        batch.queries = queries;
        batch
    }

    /// Hands every fingerprint's statistics of the window to `emit`, in
    /// fingerprint order, and returns the rest of the batch.
    ///
    /// One fingerprint at a time: its entry is taken from each stripe under
    /// that stripe's lock, held only for that entry, so a recording thread
    /// waits at most for one entry's take. A record lands either before its
    /// stripe's entry is taken or after, never both and never neither, so the
    /// merged window is exactly what one place would have counted.
    fn harvest_with(&self, seq: u64, window: Window, mut emit: impl FnMut(QueryStats)) -> Batch {
        let mut fingerprints: Vec<Fingerprint> = Vec::new();
        for stripe in self.stripes.iter() {
            fingerprints.extend(stripe.wait().stats.keys().copied());
        }
        fingerprints.sort_unstable();
        fingerprints.dedup();
        for fingerprint in fingerprints {
            let mut total: Option<QueryStats> = None;
            for stripe in self.stripes.iter() {
                let window = {
                    let mut stripe = stripe.wait();
                    let Some(Slot(stats)) = stripe.stats.get_mut(&fingerprint).map(|slot| &mut **slot) else {
                        continue;
                    };
                    if stats.calls == 0 {
                        // Idle on this stripe for a whole window: give its memory back.
                        stripe.stats.remove(&fingerprint);
                        continue;
                    }
                    stats.take_window(fingerprint)
                };
                match &mut total {
                    Some(total) => total.merge(&window),
                    None => total = Some(window),
                }
            }
            let Some(total) = total else { continue };
            // Calls beyond the cap are counted here rather than on every
            // record, where a shared counter would be one more contended
            // cache line.
            if fingerprint == Fingerprint::OTHER {
                self.counters.overflow_calls.fetch_add(total.calls, Ordering::Relaxed);
            }
            emit(total);
        }
        let slow = std::mem::take(&mut *lock(&self.slow));
        let mut batch = Batch::new(seq, window);
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

/// The key a raw statement is cached under. A 64-bit hash of good quality
/// (XXH3, which picks AVX2 at run time for long inputs: 1 KB in about 20 ns,
/// against about 35 ns for FxHash, whose weak mixing also makes colliding
/// statements easier to come by), so that two distinct raw statements
/// practically never share an entry.
fn raw_hash(sql: &str) -> u64 {
    twox_hash::XxHash3_64::oneshot(sql.as_bytes())
}

/// Microseconds, saturating; a duration is never negative.
pub(crate) fn duration_us(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    #[test]
    fn stripe_counts_stay_exact_across_the_dense_switch_and_past_u16() {
        let mut latency = super::StripeLatency::default();
        let values: Vec<u64> = (0..300u64).map(|i| 10 + i * 37).collect();
        for v in &values {
            latency.record(*v);
            latency.record(*v);
        }
        assert!(
            matches!(latency, super::StripeLatency::Dense(_)),
            "300 buckets are dense"
        );
        let mut expected = querypulse_proto::LatencyHistogram::new();
        for v in &values {
            expected.record_n(*v, 2);
        }
        assert_eq!(latency.take(false), expected);
        assert!(
            matches!(latency, super::StripeLatency::Sparse(_)),
            "a quiet window gives the array back"
        );

        // A bucket at the sparse count's limit moves to the wide array
        // without losing the record that overflowed it.
        let at = querypulse_proto::histogram::bucket_index(500);
        let mut latency = super::StripeLatency::default();
        let records = u64::from(u16::MAX) + 2;
        for _ in 0..records {
            latency.record(500);
        }
        assert!(
            matches!(latency, super::StripeLatency::Dense(_)),
            "one bucket past 65,535 is dense"
        );
        let histogram = latency.take(true);
        assert_eq!(histogram.count(), records);
        assert_eq!(histogram.indexed_buckets(), &[(at, records)][..]);
    }

    use super::*;

    #[test]
    fn a_hot_statement_moves_to_the_dense_array_with_every_count() {
        let mut stats = WindowStats::default();
        let calls = DENSE_AFTER_CALLS + 10;
        for i in 0..calls {
            stats.record(100 + i % 3, Outcome::OK);
        }
        assert!(matches!(stats.latency, StripeLatency::Dense(_)), "few buckets, but hot");
        let window = stats.take_window(Fingerprint::new(7));
        assert_eq!(window.calls, calls);
        assert_eq!(window.latency.count(), calls);
        assert_eq!(window.latency.indexed_buckets().len(), 3);
    }

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

    /// A harvest as the collector receives it: the wire batch, decoded.
    fn harvested(r: &Recorder, seq: u64) -> Batch {
        Batch::try_from(r.harvest(seq, window())).expect("a harvested batch decodes")
    }

    /// The window open now, as the aggregator would harvest it (samples
    /// carry the time they were recorded, which must lie in it).
    fn window() -> Window {
        Window::containing(crate::now_ms(), 10_000)
    }

    /// Statistics of fingerprints held in the stripes, for memory tests.
    fn tracked(r: &Recorder) -> Vec<(Fingerprint, u64, bool)> {
        r.stripes
            .iter()
            .flat_map(|stripe| {
                stripe
                    .wait()
                    .stats
                    .iter()
                    .map(|(fp, slot)| (*fp, slot.0.calls, matches!(slot.0.latency, StripeLatency::Sparse(_))))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// What thread `t` records as its `i`-th execution: two statement shapes
    /// with varying literals, latencies up to 50 ms, some failures.
    fn execution(t: u64, i: u64) -> (String, u64, Outcome) {
        let sql = if i.is_multiple_of(2) {
            format!("select * from orders where id = {}", i % 50)
        } else {
            format!("update stock set n = n - 1 where sku = '{}'", (i + t) % 13)
        };
        let micros = (i * 7_919 + t * 104_729) % 50_000 + 1;
        let outcome = if i.is_multiple_of(97) {
            Outcome::sqlstate("23505")
        } else if i.is_multiple_of(211) {
            Outcome::Error(ErrorClass::Timeout)
        } else {
            Outcome::rows(i % 5)
        };
        (sql, micros, outcome)
    }

    /// The statistics a single `QueryStats` per fingerprint would hold after
    /// recording every execution one by one. Latencies are small enough that
    /// the floating-point sum of squares is exact in any order.
    fn recorded_in_one_place(threads: u64, per_thread: u64) -> Vec<QueryStats> {
        let mut expected: HashMap<Fingerprint, QueryStats> = HashMap::new();
        for t in 0..threads {
            for i in 0..per_thread {
                let (sql, micros, outcome) = execution(t, i);
                let fingerprint = normalize(&sql, Dialect::Generic).fingerprint;
                let class = outcome.error_class();
                expected
                    .entry(fingerprint)
                    .or_insert_with(|| QueryStats::new(fingerprint))
                    .record(micros, outcome.row_count(), class.as_ref().map(|c| c.as_str()));
            }
        }
        let mut expected: Vec<QueryStats> = expected.into_values().collect();
        expected.sort_by_key(|q| q.fingerprint);
        expected
    }

    fn run(r: &Recorder, t: u64, per_thread: u64) {
        for i in 0..per_thread {
            let (sql, micros, outcome) = execution(t, i);
            r.record(&sql, Duration::from_micros(micros), outcome, None);
        }
    }

    #[test]
    fn several_threads_on_the_same_statements_add_up_exactly() {
        let r = recorder(10);
        let (threads, per_thread) = (4, 5_000);
        std::thread::scope(|scope| {
            for t in 0..threads {
                let r = &r;
                scope.spawn(move || run(r, t, per_thread));
            }
        });
        let batch = harvested(&r, 1);
        assert_eq!(batch.queries, recorded_in_one_place(threads, per_thread));
        assert!(batch.queries.iter().all(|q| !q.error_classes.is_empty()));
    }

    #[test]
    fn nothing_recorded_around_a_harvest_is_lost_or_counted_twice() {
        let r = recorder(10);
        let (threads, per_thread) = (3, 20_000);
        let finished = AtomicUsize::new(0);
        let mut batches = Vec::new();
        std::thread::scope(|scope| {
            for t in 0..threads {
                let (r, finished) = (&r, &finished);
                scope.spawn(move || {
                    run(r, t, per_thread);
                    finished.fetch_add(1, Ordering::SeqCst);
                });
            }
            // Harvest over and over while the threads record.
            while finished.load(Ordering::SeqCst) < threads as usize {
                batches.push(harvested(&r, batches.len() as u64 + 1));
                std::thread::yield_now();
            }
        });
        batches.push(harvested(&r, batches.len() as u64 + 1));
        assert!(batches.len() > 2, "the harvest ran while recording");

        let mut total: HashMap<Fingerprint, QueryStats> = HashMap::new();
        for q in batches.iter().flat_map(|b| &b.queries) {
            total
                .entry(q.fingerprint)
                .or_insert_with(|| QueryStats::new(q.fingerprint))
                .merge(q);
        }
        for expected in recorded_in_one_place(threads, per_thread) {
            let got = &total[&expected.fingerprint];
            assert_eq!(
                (got.calls, got.errors, got.rows, got.sum_us, got.min_us, got.max_us),
                (
                    expected.calls,
                    expected.errors,
                    expected.rows,
                    expected.sum_us,
                    expected.min_us,
                    expected.max_us
                )
            );
            assert_eq!(got.sum_squares_us, expected.sum_squares_us);
            assert_eq!(got.error_classes, expected.error_classes);
            assert_eq!(got.latency, expected.latency);
        }
    }

    #[test]
    fn idle_fingerprints_give_their_memory_back_and_hot_ones_keep_it() {
        let r = recorder(10);
        r.record("select 1 from rare", Duration::from_micros(10), Outcome::OK, None);
        for us in 0..1_000 {
            r.record("select 1 from hot", Duration::from_micros(us * 37), Outcome::OK, None);
        }
        harvested(&r, 1);
        let after_first = tracked(&r);
        assert_eq!(after_first.len(), 2, "both are kept, emptied, for the next window");
        assert!(after_first.iter().all(|(_, calls, _)| *calls == 0));
        assert!(
            after_first.iter().any(|(_, _, compact)| !compact),
            "the hot histogram keeps its array"
        );

        r.record("select 1 from hot", Duration::from_micros(5), Outcome::OK, None);
        harvested(&r, 2);
        let after_second = tracked(&r);
        assert_eq!(after_second.len(), 1, "the rare one was idle for a window");
        assert!(after_second[0].2, "one call does not keep a 20 KB array");
        harvested(&r, 3);
        assert!(tracked(&r).is_empty());
        assert_eq!(r.fingerprint_count(), 2, "known fingerprints stay registered");
    }

    #[test]
    fn agents_in_one_process_keep_their_own_statistics() {
        let (a, b) = (recorder(10), recorder(10));
        for _ in 0..3 {
            a.record("select 1", Duration::from_micros(10), Outcome::OK, None);
        }
        b.record("select 1", Duration::from_micros(10), Outcome::OK, None);
        assert_eq!(harvested(&a, 1).queries[0].calls, 3);
        assert_eq!(harvested(&b, 1).queries[0].calls, 1);
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
        let batch = harvested(&r, 1);
        assert_eq!(batch.queries.len(), 1);
        let q = &batch.queries[0];
        assert_eq!((q.calls, q.errors, q.rows, q.min_us, q.max_us), (2, 1, 1, 100, 300));
        assert_eq!(r.text(q.fingerprint).as_deref(), Some("select * from t where id = ?"));
        assert!(harvested(&r, 2).queries.is_empty(), "a harvest starts a new window");
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
        let batch = harvested(&r, 1);
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
        let batch = harvested(&r, 1);
        assert_eq!(batch.slow_queries.len(), 3);
        assert_eq!(batch.counters.dropped_samples, 4);
        assert!(batch.slow_queries.iter().all(|s| s.raw_text.is_none()));
        assert_eq!(batch.slow_queries[0].pool.as_deref(), Some("main"));
    }
}
