//! What the dashboard reads, and the trait the collector implements to serve
//! it. The JSON API returns the same types, so the page and the API always
//! agree on every number.

use std::collections::BTreeMap;

use crate::{Fingerprint, HealthCheckStats, LatencyHistogram, PoolStats, QueryStats};
use serde::Serialize;

/// The steps charts and series are drawn at, all ones the store reads
/// exactly (raw 10 s windows, whole minutes, whole hours). The dashboard and
/// the API's automatic `step` both choose from this one list.
pub const STEPS_MS: [i64; 12] = [
    10_000,
    30_000,
    60_000,
    300_000,
    900_000,
    1_800_000,
    3_600_000,
    10_800_000,
    21_600_000,
    43_200_000,
    86_400_000,
    604_800_000,
];

/// The smallest of [`STEPS_MS`] giving at most about `points` steps over
/// `range_ms` (the largest when none does).
pub fn step_for(range_ms: i64, points: i64) -> i64 {
    let wanted = range_ms / points.max(1);
    STEPS_MS
        .iter()
        .copied()
        .find(|s| *s >= wanted)
        .unwrap_or(STEPS_MS[STEPS_MS.len() - 1])
}

/// A half-open time range `[from_ms, to_ms)`, Unix epoch milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TimeRange {
    /// Start (inclusive).
    pub from_ms: i64,
    /// End (exclusive).
    pub to_ms: i64,
}

impl TimeRange {
    /// The range ending at `now_ms` and reaching back `length_ms`.
    pub fn last(now_ms: i64, length_ms: i64) -> TimeRange {
        TimeRange {
            from_ms: now_ms - length_ms,
            to_ms: now_ms,
        }
    }

    /// Length in milliseconds.
    pub fn length_ms(&self) -> i64 {
        self.to_ms - self.from_ms
    }

    /// The range of the same length just before this one.
    pub fn previous(&self) -> TimeRange {
        TimeRange {
            from_ms: self.from_ms - self.length_ms(),
            to_ms: self.from_ms,
        }
    }

    /// The range a summary reads: ranges of 6 h or more widen to whole hours,
    /// of 1 h or more to whole minutes, so they are read from rollups. The
    /// API and the dashboard both summarize this range, so their numbers agree.
    pub fn for_summary(self) -> TimeRange {
        let snap = |step: i64| TimeRange {
            from_ms: self.from_ms.div_euclid(step) * step,
            to_ms: -((-self.to_ms).div_euclid(step) * step),
        };
        match self.length_ms() {
            l if l >= 6 * 3_600_000 => snap(3_600_000),
            l if l >= 3_600_000 => snap(60_000),
            _ => self,
        }
    }
}

/// Which queries to summarize.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryFilter {
    /// Only this service; all services when `None`.
    pub service: Option<String>,
    /// Windows starting in this range.
    pub range: TimeRange,
}

fn ms(us: f64) -> f64 {
    us / 1_000.0
}

/// A quantile of `histogram` in milliseconds, clamped to the exactly known
/// extremes when given; 0 when empty.
pub fn quantile_ms(histogram: &LatencyHistogram, quantile: f64, bounds: Option<(u64, u64)>) -> f64 {
    histogram
        .quantile_us(quantile)
        .map(|us| match bounds {
            Some((min, max)) => us.clamp(min as f64, max as f64),
            None => us,
        })
        .map(ms)
        .unwrap_or(0.0)
}

/// One fingerprint of one service over a time range, every instance and window
/// merged. Percentiles come from the merged histogram.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QuerySummary {
    /// 16 hex digits.
    pub fingerprint: Fingerprint,
    /// Normalized statement.
    pub text: String,
    /// Service that ran it.
    pub service: String,
    /// Executions.
    pub calls: u64,
    /// Failed executions.
    pub errors: u64,
    /// Rows returned or affected.
    pub rows: u64,
    /// Total time spent, milliseconds.
    pub total_ms: f64,
    /// Mean latency, milliseconds.
    pub mean_ms: f64,
    /// Fastest execution, milliseconds.
    pub min_ms: f64,
    /// Slowest execution, milliseconds.
    pub max_ms: f64,
    /// Population standard deviation, milliseconds.
    pub stddev_ms: f64,
    /// Median, milliseconds.
    pub p50_ms: f64,
    /// 95th percentile, milliseconds.
    pub p95_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Failures by class (SQLSTATE, `timeout`, …).
    pub error_classes: BTreeMap<String, u64>,
}

impl QuerySummary {
    /// Summarizes merged statistics.
    pub fn new(service: String, text: String, stats: &QueryStats) -> QuerySummary {
        let bounds = Some((stats.min_us, stats.max_us));
        QuerySummary {
            fingerprint: stats.fingerprint,
            text,
            service,
            calls: stats.calls,
            errors: stats.errors,
            rows: stats.rows,
            total_ms: ms(stats.sum_us as f64),
            mean_ms: ms(stats.mean_us().unwrap_or(0.0)),
            min_ms: ms(stats.min_us as f64),
            max_ms: ms(stats.max_us as f64),
            stddev_ms: ms(stats.stddev_us().unwrap_or(0.0)),
            p50_ms: quantile_ms(&stats.latency, 0.50, bounds),
            p95_ms: quantile_ms(&stats.latency, 0.95, bounds),
            p99_ms: quantile_ms(&stats.latency, 0.99, bounds),
            error_classes: stats.error_classes.iter().map(|c| (c.class.clone(), c.count)).collect(),
        }
    }

    /// Failed share of calls, 0..1.
    pub fn error_rate(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.errors as f64 / self.calls as f64
        }
    }
}

/// One step of a query's history.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueryPoint {
    /// Step start, Unix epoch milliseconds.
    pub start_ms: i64,
    /// Executions.
    pub calls: u64,
    /// Failed executions.
    pub errors: u64,
    /// Mean latency, milliseconds.
    pub mean_ms: f64,
    /// Median, milliseconds.
    pub p50_ms: f64,
    /// 95th percentile, milliseconds.
    pub p95_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
}

impl QueryPoint {
    /// One step from merged statistics.
    pub fn new(start_ms: i64, stats: &QueryStats) -> QueryPoint {
        let bounds = Some((stats.min_us, stats.max_us));
        QueryPoint {
            start_ms,
            calls: stats.calls,
            errors: stats.errors,
            mean_ms: ms(stats.mean_us().unwrap_or(0.0)),
            p50_ms: quantile_ms(&stats.latency, 0.50, bounds),
            p95_ms: quantile_ms(&stats.latency, 0.95, bounds),
            p99_ms: quantile_ms(&stats.latency, 0.99, bounds),
        }
    }
}

/// A query's history in steps.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QuerySeries {
    /// Resolution the steps were built from: `raw`, `1m` or `1h`.
    pub resolution: &'static str,
    /// Step length, milliseconds.
    pub step_ms: i64,
    /// Steps with data, oldest first.
    pub points: Vec<QueryPoint>,
}

/// One instance's share of a fingerprint.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InstanceBreakdown {
    /// Service name.
    pub service: String,
    /// Instance id.
    pub instance_id: String,
    /// Host name.
    pub host: String,
    /// Executions.
    pub calls: u64,
    /// Failed executions.
    pub errors: u64,
    /// Total time, milliseconds.
    pub total_ms: f64,
    /// Mean latency, milliseconds.
    pub mean_ms: f64,
    /// Fastest, milliseconds.
    pub min_ms: f64,
    /// Slowest, milliseconds.
    pub max_ms: f64,
}

impl InstanceBreakdown {
    /// Builds a row from per-instance counters.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        service: String,
        instance_id: String,
        host: String,
        calls: u64,
        errors: u64,
        sum_us: u64,
        min_us: u64,
        max_us: u64,
    ) -> InstanceBreakdown {
        InstanceBreakdown {
            service,
            instance_id,
            host,
            calls,
            errors,
            total_ms: ms(sum_us as f64),
            mean_ms: if calls == 0 {
                0.0
            } else {
                ms(sum_us as f64 / calls as f64)
            },
            min_ms: ms(min_us as f64),
            max_ms: ms(max_us as f64),
        }
    }
}

/// Everything known about one fingerprint over a range.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueryDetail {
    /// 16 hex digits.
    pub fingerprint: Fingerprint,
    /// Normalized statement.
    pub text: String,
    /// One summary per service that ran it in the range.
    pub services: Vec<QuerySummary>,
    /// Per-instance counters (kept at raw and 1-minute resolution: ranges
    /// older than the 1-minute retention have none).
    pub instances: Vec<InstanceBreakdown>,
}

/// Health checks of one pool over a range.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthSummary {
    /// Checks run.
    pub checks: u64,
    /// Checks failed.
    pub failures: u64,
    /// Share of checks that succeeded, 0..1 (1 without checks).
    pub success_rate: f64,
    /// Median check latency, milliseconds.
    pub latency_p50_ms: f64,
    /// 95th percentile check latency, milliseconds.
    pub latency_p95_ms: f64,
    /// Whether the last check succeeded.
    pub last_ok: bool,
    /// Error of the last failed check.
    pub last_error: String,
    /// When the last check finished, Unix epoch milliseconds.
    pub last_check_ms: i64,
}

impl HealthSummary {
    /// Summarizes merged health checks.
    pub fn new(h: &HealthCheckStats) -> HealthSummary {
        HealthSummary {
            checks: h.checks,
            failures: h.failures,
            success_rate: if h.checks == 0 {
                1.0
            } else {
                (h.checks - h.failures) as f64 / h.checks as f64
            },
            latency_p50_ms: quantile_ms(&h.latency, 0.50, None),
            latency_p95_ms: quantile_ms(&h.latency, 0.95, None),
            last_ok: h.last_ok,
            last_error: h.last_error.clone(),
            last_check_ms: h.last_check_ms,
        }
    }
}

/// A gauge: value at the end of the range and highest value in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GaugeSummary {
    /// Value at the end of the range.
    pub last: u32,
    /// Highest value in the range.
    pub peak: u32,
}

/// One pool of one instance over a range.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PoolSummary {
    /// Service name.
    pub service: String,
    /// Instance id.
    pub instance_id: String,
    /// Pool name.
    pub pool: String,
    /// Database engine.
    pub db_system: &'static str,
    /// Configured maximum connections.
    pub max_size: u32,
    /// Configured minimum idle connections.
    pub min_idle: u32,
    /// Open connections.
    pub size: GaugeSummary,
    /// Idle connections.
    pub idle: GaugeSummary,
    /// Connections in use.
    pub in_use: GaugeSummary,
    /// Tasks waiting for a connection.
    pub waiting: GaugeSummary,
    /// In use over maximum at the end of the range, 0..1.
    pub utilization: f64,
    /// Highest in use over maximum in the range, 0..1.
    pub peak_utilization: f64,
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
    /// 95th percentile acquire wait, milliseconds.
    pub acquire_wait_p95_ms: f64,
    /// 99th percentile acquire wait, milliseconds.
    pub acquire_wait_p99_ms: f64,
    /// 95th percentile hold time, milliseconds.
    pub hold_time_p95_ms: f64,
    /// Connections held past the leak threshold.
    pub leaks: u64,
    /// Health checks, when the pool is pinged.
    pub health: Option<HealthSummary>,
    /// Start of the latest window, Unix epoch milliseconds.
    pub last_window_ms: i64,
}

impl PoolSummary {
    /// Summarizes a pool's windows folded over a range.
    pub fn new(
        service: String,
        instance_id: String,
        p: &PoolStats,
        health: Option<&HealthCheckStats>,
        last_window_ms: i64,
    ) -> PoolSummary {
        let share = |n: u32| {
            if p.max_size == 0 {
                0.0
            } else {
                f64::from(n) / f64::from(p.max_size)
            }
        };
        let gauge = |g: crate::Gauge| GaugeSummary {
            last: g.last,
            peak: g.peak,
        };
        PoolSummary {
            service,
            instance_id,
            pool: p.pool.clone(),
            db_system: p.db_system.as_str(),
            max_size: p.max_size,
            min_idle: p.min_idle,
            size: gauge(p.size),
            idle: gauge(p.idle),
            in_use: gauge(p.in_use),
            waiting: gauge(p.waiting),
            utilization: share(p.in_use.last),
            peak_utilization: share(p.in_use.peak),
            acquires: p.acquires,
            releases: p.releases,
            timeouts: p.timeouts,
            errors: p.errors,
            connections_created: p.connections_created,
            connections_closed: p.connections_closed,
            acquire_wait_p95_ms: quantile_ms(&p.acquire_wait, 0.95, None),
            acquire_wait_p99_ms: quantile_ms(&p.acquire_wait, 0.99, None),
            hold_time_p95_ms: quantile_ms(&p.hold_time, 0.95, None),
            leaks: p.leaks,
            health: health.map(HealthSummary::new),
            last_window_ms,
        }
    }
}

/// One step of a pool's history.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PoolPoint {
    /// Step start, Unix epoch milliseconds.
    pub start_ms: i64,
    /// Open connections.
    pub size: GaugeSummary,
    /// Idle connections.
    pub idle: GaugeSummary,
    /// Connections in use.
    pub in_use: GaugeSummary,
    /// Tasks waiting.
    pub waiting: GaugeSummary,
    /// Peak in use over maximum, 0..1.
    pub utilization: f64,
    /// 95th percentile acquire wait, milliseconds.
    pub acquire_wait_p95_ms: f64,
    /// 99th percentile acquire wait, milliseconds.
    pub acquire_wait_p99_ms: f64,
    /// Acquisitions.
    pub acquires: u64,
    /// Timeouts.
    pub timeouts: u64,
    /// Other acquire errors.
    pub errors: u64,
    /// Health checks run.
    pub health_checks: u64,
    /// Health checks failed.
    pub health_failures: u64,
    /// 95th percentile health-check latency, milliseconds.
    pub health_latency_p95_ms: f64,
}

impl PoolPoint {
    /// One step from a pool window and its health checks.
    pub fn new(start_ms: i64, p: &PoolStats, health: Option<&HealthCheckStats>) -> PoolPoint {
        let gauge = |g: crate::Gauge| GaugeSummary {
            last: g.last,
            peak: g.peak,
        };
        PoolPoint {
            start_ms,
            size: gauge(p.size),
            idle: gauge(p.idle),
            in_use: gauge(p.in_use),
            waiting: gauge(p.waiting),
            utilization: p.peak_utilization(),
            acquire_wait_p95_ms: quantile_ms(&p.acquire_wait, 0.95, None),
            acquire_wait_p99_ms: quantile_ms(&p.acquire_wait, 0.99, None),
            acquires: p.acquires,
            timeouts: p.timeouts,
            errors: p.errors,
            health_checks: health.map_or(0, |h| h.checks),
            health_failures: health.map_or(0, |h| h.failures),
            health_latency_p95_ms: health.map_or(0.0, |h| quantile_ms(&h.latency, 0.95, None)),
        }
    }
}

/// A pool's history in steps.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PoolSeries {
    /// Resolution the steps were built from.
    pub resolution: &'static str,
    /// Step length, milliseconds.
    pub step_ms: i64,
    /// Steps with data, oldest first.
    pub points: Vec<PoolPoint>,
}

/// Which slow-query samples to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlowFilter {
    /// Only this service.
    pub service: Option<String>,
    /// Only this fingerprint.
    pub fingerprint: Option<Fingerprint>,
    /// Samples taken in this range.
    pub range: TimeRange,
    /// At most this many, newest first.
    pub limit: usize,
}

/// One slow execution.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SlowQuery {
    /// When it finished, Unix epoch milliseconds.
    pub at_ms: i64,
    /// Service.
    pub service: String,
    /// Instance id.
    pub instance_id: String,
    /// The statement.
    pub fingerprint: Fingerprint,
    /// Normalized text.
    pub text: String,
    /// Latency, milliseconds.
    pub duration_ms: f64,
    /// Rows returned or affected.
    pub rows: u64,
    /// Error class when it failed.
    pub error_class: Option<String>,
    /// Pool it ran on.
    pub pool: Option<String>,
    /// Raw statement, only when the service opted in.
    pub raw_text: Option<String>,
}

/// One agent instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentSummary {
    /// Service name.
    pub service: String,
    /// Instance id.
    pub instance_id: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Agent version.
    pub agent_version: String,
    /// Database engine.
    pub db_system: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Agent start, Unix epoch milliseconds.
    pub started_at_ms: i64,
    /// First contact, Unix epoch milliseconds.
    pub first_seen_ms: i64,
    /// Last report, Unix epoch milliseconds.
    pub last_seen_ms: i64,
    /// Aggregation interval, milliseconds.
    pub interval_ms: u32,
    /// Batches applied.
    pub batches: u64,
    /// True when nothing arrived for three intervals.
    pub silent: bool,
    /// The agent's own counters as last reported.
    pub counters: crate::AgentCounters,
}

/// One service seen by the collector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceSummary {
    /// Service name.
    pub name: String,
    /// Instances that ever reported.
    pub instances: usize,
    /// Last batch from any instance, Unix epoch milliseconds.
    pub last_seen_ms: i64,
    /// Distinct fingerprints stored.
    pub fingerprints: usize,
    /// Fingerprints folded into `other` by the collector's per-service cap.
    pub overflow_fingerprints: u64,
}

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum AlertSeverity {
    /// For information; does not change a service's status.
    Info,
    /// Needs a look soon.
    Warning,
    /// Needs a look now.
    Critical,
}

/// Where an alert is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// The condition holds but not yet for the rule's `for`.
    Pending,
    /// Firing (and notified).
    Firing,
    /// Firing, but a silence holds its notifications.
    Silenced,
    /// It fired and stopped.
    Resolved,
}

impl AlertSeverity {
    /// Every severity, most urgent first.
    pub const ALL: [AlertSeverity; 3] = [AlertSeverity::Critical, AlertSeverity::Warning, AlertSeverity::Info];

    /// The name used in JSON, labels and forms.
    pub const fn as_str(self) -> &'static str {
        match self {
            AlertSeverity::Critical => "critical",
            AlertSeverity::Warning => "warning",
            AlertSeverity::Info => "info",
        }
    }

    /// The severity named `name`.
    pub fn parse(name: &str) -> Option<AlertSeverity> {
        AlertSeverity::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl std::fmt::Display for AlertSeverity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AlertState {
    /// The name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Silenced => "silenced",
            AlertState::Resolved => "resolved",
        }
    }
}

impl std::fmt::Display for AlertState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One alert, as the dashboard shows it: on the overview (firing), on a
/// query's page (those that reference it) and in the report (those in range).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AlertSummary {
    /// The rule's name.
    pub rule: String,
    /// Severity of the rule.
    pub severity: AlertSeverity,
    /// Current state.
    pub state: AlertState,
    /// One line saying what is wrong.
    pub summary: String,
    /// The service it is about, if any.
    pub service: Option<String>,
    /// The statement it is about, if any.
    pub fingerprint: Option<Fingerprint>,
    /// The pool it is about, if any (`instance/pool`).
    pub pool: Option<String>,
    /// When it started, Unix epoch milliseconds.
    pub started_ms: i64,
    /// When it resolved.
    pub resolved_ms: Option<i64>,
    /// Every label of the alert.
    pub labels: BTreeMap<String, String>,
}

impl AlertSummary {
    /// Whether the alert is about `fingerprint`: raised for that statement,
    /// or for all of the statements of `services` (a service-wide query rule,
    /// whose alerts name a service and neither a statement, a pool nor an
    /// instance).
    pub fn references(&self, fingerprint: Fingerprint, services: &[&str]) -> bool {
        match self.fingerprint {
            Some(f) => f == fingerprint,
            None => {
                self.pool.is_none()
                    && !self.labels.contains_key("instance")
                    && self.service.as_deref().is_some_and(|s| services.contains(&s))
            }
        }
    }
}

/// How far one remote-write destination has got.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RemoteWriteStatus {
    /// The destination's name.
    pub name: String,
    /// The end of the last interval sent (Unix ms); 0 before the first.
    pub sent_until_ms: i64,
    /// Seconds between the last send and `sent_until_ms`.
    pub lag_seconds: f64,
    /// Native histogram samples accepted by the destination.
    pub histograms_sent: u64,
    /// Float samples accepted.
    pub samples_sent: u64,
    /// Requests accepted.
    pub requests: u64,
    /// Bytes (snappy-compressed, as sent) of the requests accepted.
    pub bytes_sent: u64,
    /// Requests retried (5xx, 429, no connection).
    pub retries: u64,
    /// Requests refused with another 4xx, dropped as Prometheus' client does.
    pub dropped_requests: u64,
    /// Calls that reached the store after their interval had been sent,
    /// added to later samples.
    pub late_calls: u64,
    /// The last failure, while requests fail.
    pub last_error: Option<String>,
}

/// How the collector's store fares: its memory for open windows (the
/// memtable) and its disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StoreHealth {
    /// Bytes of open windows held in memory now (approximate).
    pub memtable_bytes: u64,
    /// The bound on them.
    pub memtable_limit_bytes: u64,
    /// Open windows held in memory now.
    pub memtable_windows: u64,
    /// Flushes of open windows to disk since the collector started.
    pub flushes: u64,
    /// Flushes that came before their interval because half of the memory
    /// was full.
    pub early_flushes: u64,
    /// Times ingest waited for a flush because the memory was full.
    pub stalls: u64,
    /// Bytes on disk, every file of the store.
    pub disk_bytes: u64,
    /// Bytes free on the store's file system (0 when unknown).
    pub disk_free_bytes: u64,
    /// What is wrong with the store (damage found on disk, with what was
    /// lost); empty when all is well.
    pub problems: Vec<String>,
}

/// A read failed inside the collector.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

/// The collector's read side, as the dashboard and the API see it. Methods
/// may block on storage; callers run them off the async executor.
pub trait Source: Send + Sync + 'static {
    /// Every service, by name.
    fn services(&self) -> Result<Vec<ServiceSummary>, SourceError>;

    /// Per-fingerprint summaries for the filter, in no particular order.
    fn queries(&self, filter: &QueryFilter) -> Result<Vec<QuerySummary>, SourceError>;

    /// One fingerprint in detail; `None` when it was never reported (by the
    /// filter's service, when given).
    fn query_detail(&self, fingerprint: Fingerprint, filter: &QueryFilter) -> Result<Option<QueryDetail>, SourceError>;

    /// One fingerprint's history in steps of `step_ms` (every service merged,
    /// or the filter's service); `None` when it was never reported.
    fn query_series(
        &self,
        fingerprint: Fingerprint,
        filter: &QueryFilter,
        step_ms: i64,
    ) -> Result<Option<QuerySeries>, SourceError>;

    /// Every pool with data in `range`.
    fn pools(&self, range: TimeRange) -> Result<Vec<PoolSummary>, SourceError>;

    /// One pool's history; `None` when the pool is unknown.
    fn pool_series(
        &self,
        service: &str,
        instance_id: &str,
        pool: &str,
        range: TimeRange,
        step_ms: i64,
    ) -> Result<Option<PoolSeries>, SourceError>;

    /// Slow-query samples, newest first.
    fn slow_queries(&self, filter: &SlowFilter) -> Result<Vec<SlowQuery>, SourceError>;

    /// Every agent instance.
    fn agents(&self) -> Result<Vec<AgentSummary>, SourceError>;

    /// Alerts active at any time in `range` (firing, pending or silenced now,
    /// or resolved within it), newest first. `None` means this collector has
    /// no alert engine: pages then say so instead of claiming "no alerts".
    fn alerts(&self, range: TimeRange) -> Result<Option<Vec<AlertSummary>>, SourceError> {
        let _ = range;
        Ok(None)
    }
    /// How the store fares; `None` when the source has no store of its own.
    fn store_health(&self) -> Result<Option<StoreHealth>, SourceError> {
        Ok(None)
    }
    /// Each remote-write destination's progress; empty when there is none.
    fn remote_write(&self) -> Result<Vec<RemoteWriteStatus>, SourceError> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alert_references_its_statement_or_every_statement_of_its_service() {
        let statement = Fingerprint::of_normalized("select 1");
        let alert = |labels: &[(&str, &str)]| {
            let labels: BTreeMap<String, String> =
                labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
            AlertSummary {
                rule: "r".into(),
                severity: AlertSeverity::Warning,
                state: AlertState::Firing,
                summary: String::new(),
                service: labels.get("service").cloned(),
                fingerprint: labels.get("fingerprint").and_then(|f| f.parse().ok()),
                pool: labels.get("pool").cloned(),
                started_ms: 0,
                resolved_ms: None,
                labels,
            }
        };
        let own = alert(&[("service", "a"), ("fingerprint", &statement.to_string())]);
        assert!(own.references(statement, &[]));
        let other = Fingerprint::of_normalized("select 2").to_string();
        assert!(!alert(&[("service", "a"), ("fingerprint", &other)]).references(statement, &["a"]));
        assert!(alert(&[("service", "a")]).references(statement, &["a"]));
        assert!(!alert(&[("service", "b")]).references(statement, &["a"]));
        assert!(!alert(&[("service", "a"), ("pool", "main")]).references(statement, &["a"]));
        assert!(
            !alert(&[("service", "a"), ("instance", "a-1")]).references(statement, &["a"]),
            "agent silence"
        );
    }
}
