//! Connection pools seen from the inside: checkouts, waits, hold times, leaks,
//! size gauges with their peaks, and health checks, per pool and window.
//!
//! A [`PoolMonitor`] is the recording handle of one pool. Integrations (sqlx,
//! deadpool, bb8) drive it for you; any other pool can be watched by calling it
//! directly. Recording never awaits and never does I/O: counters and peaks are
//! atomics, the two histograms sit behind a lock held for a few nanoseconds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use querypulse_proto::convert::{MAX_ERROR_LEN, MAX_LEAK_SAMPLES, MAX_NAME_LEN};
use querypulse_proto::{Batch, DbSystem, Gauge, HealthCheckStats, LatencyHistogram, LeakSample, PoolStats};

use crate::now_ms;
use crate::recorder::duration_us;

/// How often health checks run unless configured otherwise.
pub const DEFAULT_HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(30);
/// How long one health check may take before it counts as failed.
pub const DEFAULT_HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// How often pools that report no events of their own (deadpool, bb8) are
/// sampled for their gauges and peaks.
pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_millis(250);
/// Leaked connections described in detail per pool and window; the rest are
/// only counted.
pub const LEAK_SAMPLES_PER_WINDOW: usize = 8;

const _: () = assert!(LEAK_SAMPLES_PER_WINDOW <= MAX_LEAK_SAMPLES);

/// What a pool reports about itself at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolSample {
    /// Open connections, idle and in use.
    pub size: u32,
    /// Idle connections.
    pub idle: u32,
    /// Tasks waiting for a connection, when the pool knows; `None` uses the
    /// monitor's own count of tasks inside [`PoolMonitor::begin_acquire`].
    pub waiting: Option<u32>,
    /// Configured maximum connections.
    pub max_size: u32,
    /// Configured minimum idle connections.
    pub min_idle: u32,
    /// Counters the pool keeps itself, cumulative since it started.
    pub totals: PoolTotals,
}

/// Cumulative counters some pools keep (bb8 does); the monitor turns them
/// into per-window counts. `None` means the pool does not count it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolTotals {
    /// Successful acquisitions.
    pub acquires: Option<u64>,
    /// Acquisitions that timed out.
    pub timeouts: Option<u64>,
    /// Physical connections opened.
    pub connections_created: Option<u64>,
    /// Physical connections closed.
    pub connections_closed: Option<u64>,
}

type Probe = Arc<dyn Fn() -> Option<PoolSample> + Send + Sync>;

#[derive(Debug, Default)]
struct GaugeCell {
    last: AtomicU32,
    peak: AtomicU32,
}

impl GaugeCell {
    fn set(&self, value: u32) {
        self.last.store(value, Ordering::Relaxed);
        self.peak.fetch_max(value, Ordering::Relaxed);
    }

    /// The window's gauge; the next window's peak starts from the last value.
    fn take(&self) -> Gauge {
        let last = self.last.load(Ordering::Relaxed);
        let peak = self.peak.swap(last, Ordering::Relaxed).max(last);
        Gauge { last, peak }
    }
}

/// A per-window counter fed either by events or by a pool's cumulative total.
#[derive(Debug, Default)]
struct Counter {
    window: AtomicU64,
    /// Highest cumulative total seen, so a total that goes backwards (a torn
    /// read, a pool that recounts) is never counted twice.
    total_seen: AtomicU64,
}

impl Counter {
    fn add(&self, n: u64) {
        self.window.fetch_add(n, Ordering::Relaxed);
    }

    fn observe_total(&self, total: Option<u64>) {
        if let Some(total) = total {
            let before = self.total_seen.fetch_max(total, Ordering::Relaxed);
            if total > before {
                self.add(total - before);
            }
        }
    }

    fn take(&self) -> u64 {
        self.window.swap(0, Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
struct Counters {
    acquires: Counter,
    releases: Counter,
    timeouts: Counter,
    errors: Counter,
    created: Counter,
    closed: Counter,
    leaks: Counter,
}

#[derive(Debug, Default)]
struct Histograms {
    acquire_wait: LatencyHistogram,
    hold_time: LatencyHistogram,
    leak_samples: Vec<LeakSample>,
}

#[derive(Debug, Default)]
struct HealthWindow {
    checks: u64,
    failures: u64,
    latency: LatencyHistogram,
    last_check_ms: i64,
    last_ok: bool,
    last_error: String,
}

#[derive(Debug)]
struct Held {
    since: Instant,
    at_ms: i64,
    reported: bool,
}

/// The shared state of one pool.
pub(crate) struct PoolEntry {
    name: String,
    db_system: DbSystem,
    max_size: AtomicU32,
    min_idle: AtomicU32,
    size: GaugeCell,
    idle: GaugeCell,
    in_use: GaugeCell,
    waiting: GaugeCell,
    /// Tasks inside `begin_acquire` .. resolution.
    pending: AtomicU32,
    /// Connections checked out through this monitor and not yet released.
    checked_out: AtomicU32,
    /// The probe reported `waiting` itself; our own count is then not used.
    probe_knows_waiting: AtomicBool,
    /// The pool reported its state (probe or `observe`); the in-use gauge
    /// then comes from it, not from our count of checkouts.
    pool_reports_state: AtomicBool,
    counters: Counters,
    histograms: Mutex<Histograms>,
    health: Mutex<HealthWindow>,
    /// 0 when leak detection is off.
    leak_threshold_ms: AtomicU64,
    next_checkout: AtomicU64,
    held: Mutex<HashMap<u64, Held>>,
    probe: Mutex<Option<Probe>>,
}

impl std::fmt::Debug for PoolEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolEntry")
            .field("name", &self.name)
            .field("db_system", &self.db_system)
            .finish_non_exhaustive()
    }
}

/// A poisoned lock only means a thread panicked while recording; the numbers
/// are still usable, and recording must never panic in turn.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Cuts `text` to at most `max` bytes on a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    let mut cut = text.len().min(max);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}

/// A pool name the collector accepts: 1 to 128 bytes, no control characters.
fn sanitize_name(name: &str) -> String {
    let cleaned: String = name.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let cleaned = truncate(cleaned.trim(), MAX_NAME_LEN);
    if cleaned.is_empty() {
        "default".to_owned()
    } else {
        cleaned.to_owned()
    }
}

impl PoolEntry {
    fn new(name: String, db_system: DbSystem) -> PoolEntry {
        PoolEntry {
            name,
            db_system,
            max_size: AtomicU32::new(0),
            min_idle: AtomicU32::new(0),
            size: GaugeCell::default(),
            idle: GaugeCell::default(),
            in_use: GaugeCell::default(),
            waiting: GaugeCell::default(),
            pending: AtomicU32::new(0),
            checked_out: AtomicU32::new(0),
            probe_knows_waiting: AtomicBool::new(false),
            pool_reports_state: AtomicBool::new(false),
            counters: Counters::default(),
            histograms: Mutex::new(Histograms::default()),
            health: Mutex::new(HealthWindow::default()),
            leak_threshold_ms: AtomicU64::new(0),
            next_checkout: AtomicU64::new(0),
            held: Mutex::new(HashMap::new()),
            probe: Mutex::new(None),
        }
    }

    fn observe(&self, sample: PoolSample) {
        self.pool_reports_state.store(true, Ordering::Relaxed);
        self.max_size.store(sample.max_size, Ordering::Relaxed);
        self.min_idle.store(sample.min_idle, Ordering::Relaxed);
        self.size.set(sample.size);
        self.idle.set(sample.idle);
        self.in_use.set(sample.size.saturating_sub(sample.idle));
        if let Some(waiting) = sample.waiting {
            self.probe_knows_waiting.store(true, Ordering::Relaxed);
            self.waiting.set(waiting);
        }
        let c = &self.counters;
        c.acquires.observe_total(sample.totals.acquires);
        c.timeouts.observe_total(sample.totals.timeouts);
        c.created.observe_total(sample.totals.connections_created);
        c.closed.observe_total(sample.totals.connections_closed);
    }

    /// Reads the pool through its probe, or falls back to the monitor's own
    /// counts. Returns false when the probe says the pool is gone.
    fn refresh(&self) -> bool {
        let probe = lock(&self.probe).clone();
        let alive = match probe {
            Some(probe) => match probe() {
                Some(sample) => {
                    self.observe(sample);
                    true
                }
                None => {
                    *lock(&self.probe) = None;
                    false
                }
            },
            None => {
                if !self.pool_reports_state.load(Ordering::Relaxed) {
                    self.in_use.set(self.checked_out.load(Ordering::Relaxed));
                }
                true
            }
        };
        if !self.probe_knows_waiting.load(Ordering::Relaxed) {
            self.waiting.set(self.pending.load(Ordering::Relaxed));
        }
        alive
    }

    fn leak_threshold(&self) -> Option<Duration> {
        match self.leak_threshold_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    fn count_leak(&self, acquired_at_ms: i64, held_for: Duration) {
        self.counters.leaks.add(1);
        let mut histograms = lock(&self.histograms);
        if histograms.leak_samples.len() < LEAK_SAMPLES_PER_WINDOW {
            histograms.leak_samples.push(LeakSample {
                acquired_at_ms,
                held_ms: u64::try_from(held_for.as_millis()).unwrap_or(u64::MAX),
                last_fingerprint: None,
            });
        }
    }

    /// Counts connections held past the threshold that were not reported yet.
    fn scan_leaks(&self) {
        let Some(threshold) = self.leak_threshold() else {
            return;
        };
        let now = Instant::now();
        let mut leaked = Vec::new();
        for held in lock(&self.held).values_mut() {
            let held_for = now.saturating_duration_since(held.since);
            if !held.reported && held_for >= threshold {
                held.reported = true;
                leaked.push((held.at_ms, held_for));
            }
        }
        for (acquired_at_ms, held_for) in leaked {
            self.count_leak(acquired_at_ms, held_for);
        }
    }

    fn harvest(&self) -> (PoolStats, Option<HealthCheckStats>) {
        self.refresh();
        self.scan_leaks();
        let histograms = std::mem::take(&mut *lock(&self.histograms));
        let c = &self.counters;
        let stats = PoolStats {
            pool: self.name.clone(),
            db_system: self.db_system,
            max_size: self.max_size.load(Ordering::Relaxed),
            min_idle: self.min_idle.load(Ordering::Relaxed),
            size: self.size.take(),
            idle: self.idle.take(),
            in_use: self.in_use.take(),
            waiting: self.waiting.take(),
            acquires: c.acquires.take(),
            releases: c.releases.take(),
            timeouts: c.timeouts.take(),
            errors: c.errors.take(),
            connections_created: c.created.take(),
            connections_closed: c.closed.take(),
            acquire_wait: histograms.acquire_wait,
            hold_time: histograms.hold_time,
            leaks: c.leaks.take(),
            leak_threshold_ms: self.leak_threshold_ms.load(Ordering::Relaxed),
            leak_samples: histograms.leak_samples,
        };
        let health = {
            let mut health = lock(&self.health);
            (health.checks > 0).then(|| {
                let window = std::mem::take(&mut *health);
                // The last result outlives the window it was seen in.
                health.last_check_ms = window.last_check_ms;
                health.last_ok = window.last_ok;
                HealthCheckStats {
                    pool: self.name.clone(),
                    checks: window.checks,
                    failures: window.failures,
                    latency: window.latency,
                    last_check_ms: window.last_check_ms,
                    last_ok: window.last_ok,
                    last_error: window.last_error,
                }
            })
        };
        (stats, health)
    }
}

/// Every pool of one agent.
#[derive(Debug, Default)]
pub(crate) struct PoolRegistry {
    pools: Mutex<Vec<Arc<PoolEntry>>>,
}

impl PoolRegistry {
    /// The entry called `name`, created on first use.
    pub(crate) fn register(&self, name: &str, db_system: DbSystem) -> Arc<PoolEntry> {
        let name = sanitize_name(name);
        let mut pools = lock(&self.pools);
        if let Some(entry) = pools.iter().find(|p| p.name == name) {
            return entry.clone();
        }
        let entry = Arc::new(PoolEntry::new(name, db_system));
        pools.push(entry.clone());
        entry
    }

    /// Adds one window of every pool to `batch`. A pool nobody records into
    /// any more ships its last window and is forgotten.
    pub(crate) fn harvest_into(&self, batch: &mut Batch) {
        let pools: Vec<Arc<PoolEntry>> = lock(&self.pools).clone();
        for entry in &pools {
            let (stats, health) = entry.harvest();
            batch.pools.push(stats);
            batch.health_checks.extend(health);
        }
        drop(pools);
        // Only the registry holds an entry whose monitors are all gone.
        lock(&self.pools).retain(|entry| Arc::strong_count(entry) > 1);
    }
}

/// The recording handle of one connection pool; cheap to clone. Get one from
/// [`crate::Agent::pool_monitor`].
///
/// Integrations drive it for you. To watch another pool, report its state
/// with [`PoolMonitor::set_probe`] (or [`PoolMonitor::observe`]) and wrap its
/// acquire in [`PoolMonitor::begin_acquire`]:
///
/// ```no_run
/// # async fn run(agent: querypulse_agent::Agent) {
/// use querypulse_agent::DbSystem;
///
/// let monitor = agent.pool_monitor("reports", DbSystem::Postgresql);
/// let pending = monitor.begin_acquire();
/// // let conn = my_pool.get().await;
/// let checkout = pending.acquired(); // or .timed_out() / .failed()
/// // ... use the connection ...
/// drop(checkout); // released: the hold time is recorded
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PoolMonitor {
    entry: Arc<PoolEntry>,
}

impl PoolMonitor {
    pub(crate) fn new(entry: Arc<PoolEntry>) -> PoolMonitor {
        PoolMonitor { entry }
    }

    /// The pool's name as reported (control characters replaced, at most 128
    /// bytes).
    pub fn name(&self) -> &str {
        &self.entry.name
    }

    /// The engine behind the pool.
    pub fn db_system(&self) -> DbSystem {
        self.entry.db_system
    }

    /// Reports connections held longer than `threshold` as leaks (counted once
    /// per checkout, a few sampled per window), like HikariCP's
    /// `leakDetectionThreshold`. `None` (the default) turns detection off and
    /// costs nothing.
    pub fn set_leak_threshold(&self, threshold: Option<Duration>) {
        let ms = threshold.map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1));
        self.entry.leak_threshold_ms.store(ms, Ordering::Relaxed);
    }

    /// The leak threshold, if leak detection is on.
    pub fn leak_threshold(&self) -> Option<Duration> {
        self.entry.leak_threshold()
    }

    /// Gives the monitor a way to read the pool at any moment: at every
    /// harvest and whenever [`PoolMonitor::sample`] is called. The probe
    /// returns `None` once the pool is gone, and is then dropped.
    pub fn set_probe(&self, probe: impl Fn() -> Option<PoolSample> + Send + Sync + 'static) {
        *lock(&self.entry.probe) = Some(Arc::new(probe));
    }

    /// Reads the pool through its probe now, so gauges and peaks are current.
    /// Returns false when the pool is gone.
    pub fn sample(&self) -> bool {
        self.entry.refresh()
    }

    /// Records the pool's state as seen from outside (for pools without a
    /// probe).
    pub fn observe(&self, sample: PoolSample) {
        self.entry.observe(sample);
    }

    /// A physical connection was opened.
    pub fn connection_created(&self) {
        self.entry.counters.created.add(1);
    }

    /// A physical connection was closed.
    pub fn connection_closed(&self) {
        self.entry.counters.closed.add(1);
    }

    /// A task starts waiting for a connection. Resolve the returned handle
    /// with [`PendingAcquire::acquired`], [`PendingAcquire::timed_out`] or
    /// [`PendingAcquire::failed`]; dropping it unresolved (a cancelled acquire)
    /// only stops counting the task as waiting.
    pub fn begin_acquire(&self) -> PendingAcquire {
        let entry = &self.entry;
        let pending = entry.pending.fetch_add(1, Ordering::Relaxed) + 1;
        if !entry.probe_knows_waiting.load(Ordering::Relaxed) {
            entry.waiting.set(pending);
        }
        PendingAcquire {
            entry: Some(entry.clone()),
            started: Instant::now(),
        }
    }

    /// Records one health check of the pool: how long it took and whether it
    /// succeeded (with the error message when it did not).
    pub fn record_health_check(&self, elapsed: Duration, result: Result<(), &str>) {
        let mut health = lock(&self.entry.health);
        health.checks += 1;
        health.latency.record(duration_us(elapsed));
        health.last_check_ms = now_ms();
        match result {
            Ok(()) => {
                health.last_ok = true;
            }
            Err(error) => {
                health.failures += 1;
                health.last_ok = false;
                health.last_error = truncate(error, MAX_ERROR_LEN).to_owned();
            }
        }
    }
}

/// A task waiting for a connection; see [`PoolMonitor::begin_acquire`].
#[derive(Debug)]
#[must_use = "resolve the acquire with acquired(), timed_out() or failed()"]
pub struct PendingAcquire {
    entry: Option<Arc<PoolEntry>>,
    started: Instant,
}

impl PendingAcquire {
    fn finish(mut self) -> (Arc<PoolEntry>, Duration) {
        let entry = self.entry.take().expect("a pending acquire is resolved once");
        stop_waiting(&entry);
        (entry, self.started.elapsed())
    }

    /// The connection was handed out: counts the acquire and its wait, and
    /// starts timing how long it is held.
    pub fn acquired(self) -> Checkout {
        let (entry, waited) = self.finish();
        entry.counters.acquires.add(1);
        lock(&entry.histograms).acquire_wait.record(duration_us(waited));
        entry.checked_out.fetch_add(1, Ordering::Relaxed);
        let held = entry.leak_threshold().map(|_| {
            let id = entry.next_checkout.fetch_add(1, Ordering::Relaxed);
            let held = Held {
                since: Instant::now(),
                at_ms: now_ms(),
                reported: false,
            };
            lock(&entry.held).insert(id, held);
            id
        });
        entry.refresh();
        Checkout {
            entry,
            since: Instant::now(),
            held,
        }
    }

    /// The pool's acquire timeout expired.
    pub fn timed_out(self) {
        let (entry, _) = self.finish();
        entry.counters.timeouts.add(1);
    }

    /// The acquire failed for another reason (connect error, closed pool).
    pub fn failed(self) {
        let (entry, _) = self.finish();
        entry.counters.errors.add(1);
    }
}

fn stop_waiting(entry: &PoolEntry) {
    let pending = entry.pending.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
    if !entry.probe_knows_waiting.load(Ordering::Relaxed) {
        entry.waiting.set(pending);
    }
}

impl Drop for PendingAcquire {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            stop_waiting(&entry);
        }
    }
}

/// A checked-out connection; dropping it records the release and how long
/// the connection was held.
#[derive(Debug)]
pub struct Checkout {
    entry: Arc<PoolEntry>,
    since: Instant,
    held: Option<u64>,
}

impl Checkout {
    /// How long the connection has been held so far.
    pub fn held_for(&self) -> Duration {
        self.since.elapsed()
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        let entry = &self.entry;
        let held_for = self.since.elapsed();
        entry.counters.releases.add(1);
        lock(&entry.histograms).hold_time.record(duration_us(held_for));
        entry.checked_out.fetch_sub(1, Ordering::Relaxed);
        if let Some(id) = self.held
            && let Some(held) = lock(&entry.held).remove(&id)
            && !held.reported
            && entry.leak_threshold().is_some_and(|threshold| held_for >= threshold)
        {
            entry.count_leak(held.at_ms, held_for);
        }
        entry.refresh();
    }
}

/// Keeps the statistics of a pool that reports no events of its own
/// (deadpool, bb8): samples it every [`DEFAULT_SAMPLE_INTERVAL`] so peaks
/// between windows are seen. Sampling stops when this is dropped or the pool
/// is gone.
#[cfg(any(feature = "deadpool", feature = "bb8"))]
#[derive(Debug)]
pub struct PoolWatch {
    monitor: PoolMonitor,
    sampler: tokio::task::JoinHandle<()>,
}

#[cfg(any(feature = "deadpool", feature = "bb8"))]
impl PoolWatch {
    /// Starts sampling through `monitor`'s probe. Must run inside a Tokio
    /// runtime.
    pub(crate) fn start(monitor: PoolMonitor) -> PoolWatch {
        monitor.sample();
        let sampling = monitor.clone();
        let sampler = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(DEFAULT_SAMPLE_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if !sampling.sample() {
                    return;
                }
                sampling.entry.scan_leaks();
            }
        });
        PoolWatch { monitor, sampler }
    }

    /// The monitor the pool is recorded into (for health checks of your own,
    /// or checkouts timed with [`PoolMonitor::begin_acquire`]).
    pub fn monitor(&self) -> &PoolMonitor {
        &self.monitor
    }
}

#[cfg(any(feature = "deadpool", feature = "bb8"))]
impl Drop for PoolWatch {
    fn drop(&mut self) {
        self.sampler.abort();
        // The probe may hold the pool itself: let it go.
        self.monitor.set_probe(|| None);
    }
}

#[cfg(test)]
mod tests {
    use querypulse_proto::Window;

    use super::*;

    fn harvest(registry: &PoolRegistry) -> Batch {
        let mut batch = Batch::new(
            1,
            Window {
                start_ms: 0,
                length_ms: 10_000,
            },
        );
        registry.harvest_into(&mut batch);
        batch
    }

    #[test]
    fn checkouts_count_waits_holds_and_outcomes() {
        let registry = PoolRegistry::default();
        let monitor = PoolMonitor::new(registry.register("main", DbSystem::Sqlite));
        let first = monitor.begin_acquire();
        let second = monitor.begin_acquire();
        let third = monitor.begin_acquire();
        let checkout = first.acquired();
        second.timed_out();
        drop(third);
        monitor.begin_acquire().failed();
        drop(checkout);

        let batch = harvest(&registry);
        let pool = &batch.pools[0];
        assert_eq!(pool.pool, "main");
        assert_eq!(pool.db_system, DbSystem::Sqlite);
        assert_eq!((pool.acquires, pool.releases, pool.timeouts, pool.errors), (1, 1, 1, 1));
        assert_eq!(pool.waiting, Gauge { last: 0, peak: 3 });
        assert_eq!(pool.in_use, Gauge { last: 0, peak: 1 });
        assert_eq!(pool.acquire_wait.count(), 1);
        assert_eq!(pool.hold_time.count(), 1);
        assert!(batch.health_checks.is_empty(), "no check ran, none is reported");

        let next = harvest(&registry);
        let pool = &next.pools[0];
        assert_eq!((pool.acquires, pool.releases), (0, 0), "a harvest starts a new window");
        assert_eq!(pool.waiting, Gauge { last: 0, peak: 0 });
    }

    #[test]
    fn probed_totals_become_window_counts_and_never_go_backwards() {
        let registry = PoolRegistry::default();
        let monitor = PoolMonitor::new(registry.register("bb8", DbSystem::Postgresql));
        let sample = |acquires, created| PoolSample {
            size: 4,
            idle: 1,
            waiting: Some(2),
            max_size: 8,
            min_idle: 1,
            totals: PoolTotals {
                acquires: Some(acquires),
                connections_created: Some(created),
                ..PoolTotals::default()
            },
        };
        monitor.observe(sample(10, 4));
        monitor.observe(sample(9, 4));
        monitor.observe(sample(15, 5));
        let pool = harvest(&registry).pools.remove(0);
        assert_eq!((pool.acquires, pool.connections_created), (15, 5));
        assert_eq!((pool.max_size, pool.min_idle), (8, 1));
        assert_eq!(pool.in_use, Gauge { last: 3, peak: 3 });
        assert_eq!(pool.waiting, Gauge { last: 2, peak: 2 });
        monitor.observe(sample(16, 5));
        assert_eq!(harvest(&registry).pools[0].acquires, 1);
    }

    #[test]
    fn connections_held_past_the_threshold_are_leaks_counted_once() {
        let registry = PoolRegistry::default();
        let monitor = PoolMonitor::new(registry.register("main", DbSystem::Mysql));
        monitor.set_leak_threshold(Some(Duration::from_millis(1)));
        let leaked = monitor.begin_acquire().acquired();
        let returned_late = monitor.begin_acquire().acquired();
        std::thread::sleep(Duration::from_millis(5));
        drop(returned_late);
        let pool = harvest(&registry).pools.remove(0);
        assert_eq!(pool.leaks, 2, "one found at release, one still held at harvest");
        assert_eq!(pool.leak_samples.len(), 2);
        assert!(pool.leak_samples.iter().all(|s| s.held_ms >= 1));
        assert_eq!(pool.leak_threshold_ms, 1);
        drop(leaked);
        assert_eq!(
            harvest(&registry).pools[0].leaks,
            0,
            "a reported leak is not counted again"
        );
    }

    #[test]
    fn health_checks_report_failures_and_the_last_error() {
        let registry = PoolRegistry::default();
        let monitor = PoolMonitor::new(registry.register("main", DbSystem::Postgresql));
        monitor.record_health_check(Duration::from_millis(2), Ok(()));
        monitor.record_health_check(Duration::from_millis(3), Err(&"x".repeat(5_000)));
        let batch = harvest(&registry);
        let health = &batch.health_checks[0];
        assert_eq!((health.checks, health.failures, health.last_ok), (2, 1, false));
        assert_eq!(health.latency.count(), 2);
        assert_eq!(health.last_error.len(), MAX_ERROR_LEN);
        assert!(health.last_check_ms > 0);
    }

    #[test]
    fn names_are_made_acceptable_and_shared_and_unused_pools_are_forgotten() {
        let registry = PoolRegistry::default();
        let a = PoolMonitor::new(registry.register("ma\nin", DbSystem::Sqlite));
        let b = PoolMonitor::new(registry.register("ma in", DbSystem::Sqlite));
        assert_eq!(a.name(), "ma in");
        drop(a.begin_acquire().acquired());
        drop(b.begin_acquire().acquired());
        assert_eq!(
            PoolMonitor::new(registry.register("", DbSystem::Sqlite)).name(),
            "default"
        );
        assert_eq!(
            PoolMonitor::new(registry.register(&"p".repeat(300), DbSystem::Sqlite))
                .name()
                .len(),
            128
        );
        let batch = harvest(&registry);
        assert_eq!(batch.pools.len(), 3);
        assert_eq!(batch.pools[0].acquires, 2, "one name, one pool");
        drop((a, b));
        assert_eq!(harvest(&registry).pools.len(), 1, "the last window is shipped");
        assert!(harvest(&registry).pools.is_empty());
    }
}
