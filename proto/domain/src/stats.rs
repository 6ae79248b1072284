//! What an agent reports: its hello, and per window the statistics of each
//! statement, pool and health check. The wire crate (`querypulse-proto`)
//! converts its generated types to and from these at the gRPC boundary;
//! nothing else handles wire types.

use std::collections::BTreeMap;

use crate::fingerprint::Fingerprint;
use crate::histogram::LatencyHistogram;

/// Bounds of an aggregation interval, milliseconds.
pub const MIN_INTERVAL_MS: u32 = 1_000;
/// Bounds of an aggregation interval, milliseconds.
pub const MAX_INTERVAL_MS: u32 = 3_600_000;

/// The database engine behind a service or a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DbSystem {
    /// Not reported.
    #[default]
    Unspecified,
    /// PostgreSQL.
    Postgresql,
    /// MySQL.
    Mysql,
    /// MariaDB.
    Mariadb,
    /// SQLite.
    Sqlite,
    /// Any other engine.
    Other,
}

impl DbSystem {
    /// The OpenTelemetry `db.system` name.
    pub fn as_str(self) -> &'static str {
        match self {
            DbSystem::Unspecified => "",
            DbSystem::Postgresql => "postgresql",
            DbSystem::Mysql => "mysql",
            DbSystem::Mariadb => "mariadb",
            DbSystem::Sqlite => "sqlite",
            DbSystem::Other => "other_sql",
        }
    }
}

/// Who is reporting: the first message of every stream.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Hello {
    /// Logical service name.
    pub service: String,
    /// Random id per process start.
    pub instance_id: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Agent library version.
    pub agent_version: String,
    /// Main database engine.
    pub db_system: DbSystem,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
    /// Agent start, Unix epoch milliseconds.
    pub started_at_ms: i64,
    /// The agent's aggregation interval, milliseconds.
    pub interval_ms: u32,
}

/// An aggregation window: `[start_ms, start_ms + length_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window {
    /// Start, Unix epoch milliseconds.
    pub start_ms: i64,
    /// Length, milliseconds.
    pub length_ms: u32,
}

impl Window {
    /// The window of `length_ms` that contains `at_ms`, aligned to multiples of
    /// the length since the epoch.
    pub fn containing(at_ms: i64, length_ms: u32) -> Window {
        let length = i64::from(length_ms.max(1));
        Window {
            start_ms: at_ms.div_euclid(length) * length,
            length_ms,
        }
    }

    /// End of the window (exclusive), Unix epoch milliseconds.
    pub fn end_ms(self) -> i64 {
        self.start_ms + i64::from(self.length_ms)
    }
}

/// One aggregation window of one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Per-instance sequence number, from 1.
    pub seq: u64,
    /// The window measured.
    pub window: Window,
    /// Statement statistics per fingerprint.
    pub queries: Vec<QueryStats>,
    /// Pool statistics per pool.
    pub pools: Vec<PoolStats>,
    /// Health checks per pool.
    pub health_checks: Vec<HealthCheckStats>,
    /// Slow statement samples.
    pub slow_queries: Vec<SlowQuerySample>,
    /// Normalized texts of fingerprints.
    pub texts: Vec<FingerprintText>,
    /// The agent's own counters, cumulative.
    pub counters: AgentCounters,
}

impl Batch {
    /// An empty batch for `window`.
    pub fn new(seq: u64, window: Window) -> Batch {
        Batch {
            seq,
            window,
            queries: Vec::new(),
            pools: Vec::new(),
            health_checks: Vec::new(),
            slow_queries: Vec::new(),
            texts: Vec::new(),
            counters: AgentCounters::default(),
        }
    }

    /// Every fingerprint the batch refers to (query stats and slow samples).
    pub fn referenced_fingerprints(&self) -> impl Iterator<Item = Fingerprint> + '_ {
        self.queries
            .iter()
            .map(|q| q.fingerprint)
            .chain(self.slow_queries.iter().map(|s| s.fingerprint))
    }
}

/// Failures of one class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorClassCount {
    /// SQLSTATE, `timeout`, `pool_timeout`, `io` or `other`.
    pub class: String,
    /// How many.
    pub count: u64,
}

/// Statistics of one fingerprint over one window (or, once merged, over any
/// set of windows and instances).
#[derive(Debug, Clone, PartialEq)]
pub struct QueryStats {
    /// The statement.
    pub fingerprint: Fingerprint,
    /// Executions.
    pub calls: u64,
    /// Failed executions.
    pub errors: u64,
    /// Failures by class, sorted by class.
    pub error_classes: Vec<ErrorClassCount>,
    /// Rows returned or affected.
    pub rows: u64,
    /// Sum of latencies, microseconds.
    pub sum_us: u64,
    /// Sum of squared latencies, microseconds squared.
    pub sum_squares_us: f64,
    /// Smallest latency, microseconds (0 when `calls` is 0).
    pub min_us: u64,
    /// Largest latency, microseconds.
    pub max_us: u64,
    /// Latency distribution.
    pub latency: LatencyHistogram,
    /// Latencies above the histogram's range.
    pub outliers: u64,
}

impl QueryStats {
    /// Empty statistics for `fingerprint`.
    pub fn new(fingerprint: Fingerprint) -> QueryStats {
        QueryStats {
            fingerprint,
            calls: 0,
            errors: 0,
            error_classes: Vec::new(),
            rows: 0,
            sum_us: 0,
            sum_squares_us: 0.0,
            min_us: 0,
            max_us: 0,
            latency: LatencyHistogram::new(),
            outliers: 0,
        }
    }

    /// Records one execution.
    pub fn record(&mut self, micros: u64, rows: u64, error_class: Option<&str>) {
        self.min_us = if self.calls == 0 {
            micros
        } else {
            self.min_us.min(micros)
        };
        self.max_us = self.max_us.max(micros);
        self.calls += 1;
        self.rows = self.rows.saturating_add(rows);
        self.sum_us = self.sum_us.saturating_add(micros);
        self.sum_squares_us += (micros as f64) * (micros as f64);
        if self.latency.record(micros) {
            self.outliers += 1;
        }
        if let Some(class) = error_class {
            self.errors += 1;
            add_error_class(&mut self.error_classes, class, 1);
        }
    }

    /// Adds `other` into `self` exactly: counters add, extremes combine and
    /// histograms merge bucket by bucket.
    pub fn merge(&mut self, other: &QueryStats) {
        if other.calls == 0 {
            return;
        }
        self.merge_counters(other);
        self.latency.add(&other.latency);
    }

    /// [`QueryStats::merge`] without the histogram: for folds that
    /// accumulate histograms elsewhere (a dense array).
    pub fn merge_counters(&mut self, other: &QueryStats) {
        if other.calls == 0 {
            return;
        }
        self.min_us = if self.calls == 0 {
            other.min_us
        } else {
            self.min_us.min(other.min_us)
        };
        self.max_us = self.max_us.max(other.max_us);
        self.calls = self.calls.saturating_add(other.calls);
        self.errors = self.errors.saturating_add(other.errors);
        for class in &other.error_classes {
            add_error_class(&mut self.error_classes, &class.class, class.count);
        }
        self.rows = self.rows.saturating_add(other.rows);
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
        self.sum_squares_us += other.sum_squares_us;
        self.outliers = self.outliers.saturating_add(other.outliers);
    }

    /// Mean latency in microseconds, `None` without calls.
    pub fn mean_us(&self) -> Option<f64> {
        (self.calls > 0).then(|| self.sum_us as f64 / self.calls as f64)
    }

    /// Population standard deviation of latency in microseconds.
    pub fn stddev_us(&self) -> Option<f64> {
        let mean = self.mean_us()?;
        let variance = self.sum_squares_us / self.calls as f64 - mean * mean;
        Some(variance.max(0.0).sqrt())
    }
}

fn add_error_class(classes: &mut Vec<ErrorClassCount>, class: &str, count: u64) {
    match classes.binary_search_by(|c| c.class.as_str().cmp(class)) {
        Ok(at) => classes[at].count = classes[at].count.saturating_add(count),
        Err(at) => classes.insert(
            at,
            ErrorClassCount {
                class: class.to_owned(),
                count,
            },
        ),
    }
}

/// A gauge over a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Gauge {
    /// Value at the end of the window.
    pub last: u32,
    /// Highest value during the window.
    pub peak: u32,
}

/// One connection held past the leak threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeakSample {
    /// When it was acquired, Unix epoch milliseconds.
    pub acquired_at_ms: i64,
    /// How long it had been held, milliseconds.
    pub held_ms: u64,
    /// Last statement run on it, if known.
    pub last_fingerprint: Option<Fingerprint>,
}

/// Statistics of one pool over one window.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PoolStats {
    /// Pool name.
    pub pool: String,
    /// Engine behind the pool.
    pub db_system: DbSystem,
    /// Configured maximum connections.
    pub max_size: u32,
    /// Configured minimum idle connections.
    pub min_idle: u32,
    /// Open connections.
    pub size: Gauge,
    /// Idle connections.
    pub idle: Gauge,
    /// Connections in use.
    pub in_use: Gauge,
    /// Tasks waiting for a connection.
    pub waiting: Gauge,
    /// Successful acquisitions.
    pub acquires: u64,
    /// Releases.
    pub releases: u64,
    /// Acquisitions that timed out.
    pub timeouts: u64,
    /// Acquisitions that failed otherwise.
    pub errors: u64,
    /// Connections opened.
    pub connections_created: u64,
    /// Connections closed.
    pub connections_closed: u64,
    /// Time waiting to acquire.
    pub acquire_wait: LatencyHistogram,
    /// Time held between acquire and release.
    pub hold_time: LatencyHistogram,
    /// Connections held past the leak threshold.
    pub leaks: u64,
    /// Leak threshold, milliseconds; 0 when off.
    pub leak_threshold_ms: u64,
    /// A few leaked connections.
    pub leak_samples: Vec<LeakSample>,
}

impl Gauge {
    /// Combines an earlier window's gauge with a later one's.
    pub fn then(self, later: Gauge) -> Gauge {
        Gauge {
            last: later.last,
            peak: self.peak.max(later.peak),
        }
    }
}

impl PoolStats {
    /// Folds a later window of the same pool into `self`: counters and
    /// histograms add, peaks take the maximum, "last" values and the
    /// configuration come from the later window.
    pub fn merge_later(&mut self, later: &PoolStats) {
        self.db_system = later.db_system;
        self.max_size = later.max_size;
        self.min_idle = later.min_idle;
        self.size = self.size.then(later.size);
        self.idle = self.idle.then(later.idle);
        self.in_use = self.in_use.then(later.in_use);
        self.waiting = self.waiting.then(later.waiting);
        self.acquires = self.acquires.saturating_add(later.acquires);
        self.releases = self.releases.saturating_add(later.releases);
        self.timeouts = self.timeouts.saturating_add(later.timeouts);
        self.errors = self.errors.saturating_add(later.errors);
        self.connections_created = self.connections_created.saturating_add(later.connections_created);
        self.connections_closed = self.connections_closed.saturating_add(later.connections_closed);
        self.acquire_wait.add(&later.acquire_wait);
        self.hold_time.add(&later.hold_time);
        self.leaks = self.leaks.saturating_add(later.leaks);
        self.leak_threshold_ms = later.leak_threshold_ms;
        self.leak_samples.extend(later.leak_samples.iter().cloned());
        let keep = self.leak_samples.len().saturating_sub(MAX_KEPT_LEAK_SAMPLES);
        self.leak_samples.drain(..keep);
    }

    /// In-use connections over the maximum size, using the window's peak
    /// (0 when the maximum is unknown).
    pub fn peak_utilization(&self) -> f64 {
        if self.max_size == 0 {
            0.0
        } else {
            f64::from(self.in_use.peak) / f64::from(self.max_size)
        }
    }
}

/// Leak samples kept per pool window after merging.
pub const MAX_KEPT_LEAK_SAMPLES: usize = 8;

/// Health checks of one pool over one window.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HealthCheckStats {
    /// Pool checked.
    pub pool: String,
    /// Checks run.
    pub checks: u64,
    /// Checks failed.
    pub failures: u64,
    /// Check latency.
    pub latency: LatencyHistogram,
    /// When the last check finished, Unix epoch milliseconds.
    pub last_check_ms: i64,
    /// Whether the last check succeeded.
    pub last_ok: bool,
    /// Error of the last failed check.
    pub last_error: String,
}

impl HealthCheckStats {
    /// Folds a later window of the same pool's checks into `self`. The last
    /// check is the one with the newest time, whichever window is folded
    /// first (a window that arrives late does not replace it); of two checks
    /// at the same time, the one folded in last.
    pub fn merge_later(&mut self, later: &HealthCheckStats) {
        self.checks = self.checks.saturating_add(later.checks);
        self.failures = self.failures.saturating_add(later.failures);
        self.latency.add(&later.latency);
        if later.last_check_ms > self.last_check_ms || (later.last_check_ms == self.last_check_ms && later.checks > 0) {
            self.last_check_ms = later.last_check_ms;
            self.last_ok = later.last_ok;
            self.last_error.clone_from(&later.last_error);
        }
    }
}

/// One execution slower than the threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlowQuerySample {
    /// The statement.
    pub fingerprint: Fingerprint,
    /// When it finished, Unix epoch milliseconds.
    pub at_ms: i64,
    /// Latency, microseconds.
    pub duration_us: u64,
    /// Rows returned or affected.
    pub rows: u64,
    /// Error class when it failed.
    pub error_class: Option<String>,
    /// Pool it ran on.
    pub pool: Option<String>,
    /// Raw statement, only when the service opted in.
    pub raw_text: Option<String>,
}

/// The normalized text of a fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FingerprintText {
    /// The fingerprint.
    pub fingerprint: Fingerprint,
    /// Normalized statement.
    pub text: String,
}

/// The agent's own counters, cumulative since it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentCounters {
    /// Batches dropped from a full outbox.
    pub dropped_batches: u64,
    /// Batches the collector rejected.
    pub rejected_batches: u64,
    /// Fingerprints refused by the cardinality cap.
    pub overflow_fingerprints: u64,
    /// Executions counted into `other`.
    pub overflow_calls: u64,
    /// Slow samples suppressed by rate limits.
    pub dropped_samples: u64,
    /// Executions not recorded.
    pub dropped_records: u64,
    /// Failed connects and broken streams.
    pub send_errors: u64,
    /// Streams opened after the first.
    pub reconnects: u64,
    /// Outbox bytes (gauge).
    pub outbox_bytes: u64,
    /// Outbox batches (gauge).
    pub outbox_batches: u64,
}

/// Settings the collector pushes to agents; `None` keeps the agent's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConfigUpdate {
    /// Slow-query threshold, microseconds.
    pub slow_threshold_us: Option<u64>,
    /// Slow samples per fingerprint per window.
    pub max_samples_per_fingerprint: Option<u32>,
    /// Slow samples per window.
    pub max_samples_per_window: Option<u32>,
    /// Aggregation interval, milliseconds.
    pub interval_ms: Option<u32>,
}

/// What the collector tells an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CollectorMessage {
    /// The batch is durable.
    Ack {
        /// Its sequence number.
        seq: u64,
        /// It had been applied before and was ignored.
        duplicate: bool,
    },
    /// The batch will never be accepted.
    Reject {
        /// Its sequence number.
        seq: u64,
        /// Why.
        reason: String,
    },
    /// New settings.
    Config(ConfigUpdate),
}

/// What an agent tells the collector.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentMessage {
    /// Introduction.
    Hello(Hello),
    /// A window of measurements.
    Batch(Batch),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_align_to_their_length_including_before_the_epoch() {
        assert_eq!(Window::containing(12_345, 10_000).start_ms, 10_000);
        assert_eq!(Window::containing(20_000, 10_000).start_ms, 20_000);
        assert_eq!(Window::containing(-1, 10_000).start_ms, -10_000);
        assert_eq!(Window::containing(12_345, 10_000).end_ms(), 20_000);
    }

    #[test]
    fn merged_stats_equal_stats_recorded_in_one_place() {
        let fp = Fingerprint::new(7);
        let (mut a, mut b, mut all) = (QueryStats::new(fp), QueryStats::new(fp), QueryStats::new(fp));
        for (i, us) in [5u64, 900, 42, 7_000, 3].into_iter().enumerate() {
            let class = (i % 2 == 0).then_some(if i == 0 { "23505" } else { "timeout" });
            let target = if i < 2 { &mut a } else { &mut b };
            target.record(us, 1, class);
            all.record(us, 1, class);
        }
        a.merge(&b);
        assert_eq!(a, all);
        assert_eq!(a.calls, 5);
        assert_eq!(a.errors, 3);
        assert_eq!(a.min_us, 3);
        assert_eq!(a.max_us, 7_000);
        assert_eq!(
            a.error_classes,
            vec![
                ErrorClassCount {
                    class: "23505".into(),
                    count: 1
                },
                ErrorClassCount {
                    class: "timeout".into(),
                    count: 2
                }
            ]
        );
    }

    #[test]
    fn merging_into_empty_takes_the_other_minimum() {
        let fp = Fingerprint::new(7);
        let mut empty = QueryStats::new(fp);
        let mut other = QueryStats::new(fp);
        other.record(50, 0, None);
        empty.merge(&other);
        assert_eq!(empty.min_us, 50);
        empty.merge(&QueryStats::new(fp));
        assert_eq!(empty.min_us, 50);
    }

    #[test]
    fn pool_windows_fold_counters_peaks_and_last_values() {
        let mut earlier = PoolStats {
            pool: "main".into(),
            max_size: 10,
            acquires: 5,
            ..PoolStats::default()
        };
        earlier.in_use = Gauge { last: 9, peak: 10 };
        earlier.acquire_wait.record(100);
        let mut later = PoolStats {
            pool: "main".into(),
            max_size: 12,
            acquires: 7,
            timeouts: 1,
            ..PoolStats::default()
        };
        later.in_use = Gauge { last: 2, peak: 4 };
        later.acquire_wait.record(300);
        earlier.merge_later(&later);
        assert_eq!((earlier.acquires, earlier.timeouts, earlier.max_size), (12, 1, 12));
        assert_eq!(earlier.in_use, Gauge { last: 2, peak: 10 });
        assert_eq!(earlier.acquire_wait.count(), 2);
        assert!((earlier.peak_utilization() - 10.0 / 12.0).abs() < 1e-9);
    }

    #[test]
    fn stddev_of_constant_latency_is_zero() {
        let mut s = QueryStats::new(Fingerprint::new(1));
        for _ in 0..10 {
            s.record(100, 0, None);
        }
        assert_eq!(s.mean_us(), Some(100.0));
        assert_eq!(s.stddev_us(), Some(0.0));
    }
}
