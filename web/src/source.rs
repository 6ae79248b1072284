//! What the dashboard reads, and the trait the collector implements to serve
//! it. The JSON API returns the same types, so the page and the API always
//! agree on every number.

use querypulse_proto::{Fingerprint, QueryStats};
use serde::Serialize;

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
}

/// Which queries to summarize.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryFilter {
    /// Only this service; all services when `None`.
    pub service: Option<String>,
    /// Windows starting in this range.
    pub range: TimeRange,
}

/// One fingerprint of one service over a time range, every instance and window
/// merged. Percentiles come from the merged histogram.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
}

impl QuerySummary {
    /// Summarizes merged statistics.
    pub fn new(service: String, text: String, stats: &QueryStats) -> QuerySummary {
        let ms = |us: f64| us / 1_000.0;
        // A percentile estimate never lies outside the exactly known extremes.
        let quantile = |q: f64| {
            stats
                .latency
                .quantile_us(q)
                .map(|us| ms(us.clamp(stats.min_us as f64, stats.max_us as f64)))
                .unwrap_or(0.0)
        };
        QuerySummary {
            fingerprint: stats.fingerprint,
            text,
            service,
            calls: stats.calls,
            errors: stats.errors,
            total_ms: ms(stats.sum_us as f64),
            mean_ms: ms(stats.mean_us().unwrap_or(0.0)),
            min_ms: ms(stats.min_us as f64),
            max_ms: ms(stats.max_us as f64),
            stddev_ms: ms(stats.stddev_us().unwrap_or(0.0)),
            p50_ms: quantile(0.50),
            p95_ms: quantile(0.95),
            p99_ms: quantile(0.99),
        }
    }
}

/// One service seen by the collector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceSummary {
    /// Service name.
    pub name: String,
    /// Instances that ever reported.
    pub instances: usize,
    /// Last batch from any instance, Unix epoch milliseconds.
    pub last_seen_ms: i64,
}

/// A read failed inside the collector.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

/// The collector's read side, as the dashboard sees it. Methods may block on
/// storage; callers run them off the async executor.
pub trait Source: Send + Sync + 'static {
    /// Every service, by name.
    fn services(&self) -> Result<Vec<ServiceSummary>, SourceError>;

    /// Per-fingerprint summaries for the filter, in no particular order.
    fn queries(&self, filter: &QueryFilter) -> Result<Vec<QuerySummary>, SourceError>;
}
