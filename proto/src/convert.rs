//! Conversions between wire messages and domain types. Decoding validates
//! every field, so a domain value is always well formed: counts agree with
//! histograms, names are bounded, histograms have the shared configuration.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use crate::wire::v1 as wire;
use querypulse_domain::Fingerprint;
use querypulse_domain::LatencyHistogram;
use querypulse_domain::stats::*;

/// Longest service, instance, host, pool or label name accepted.
pub const MAX_NAME_LEN: usize = 128;
/// Longest normalized or raw statement text accepted.
pub const MAX_TEXT_LEN: usize = 64 * 1024;
/// Most labels in a `Hello`.
pub const MAX_LABELS: usize = 32;
/// Longest error class or error message accepted.
pub const MAX_ERROR_LEN: usize = 1024;
/// Most leak samples per pool and window.
pub const MAX_LEAK_SAMPLES: usize = 64;
/// Largest pool a batch may describe (`max_size`, and its connections when
/// `max_size` is not known); no pool comes near it.
pub const MAX_POOL_SIZE: u32 = 1_000_000;
/// Most tasks a batch may report waiting for one pool.
pub const MAX_POOL_WAITERS: u32 = 100_000_000;
/// Latest window start a batch may carry (9999-12-31T23:59:59.999Z): any
/// later and its end would not be a time.
pub const MAX_WINDOW_START_MS: i64 = 253_402_300_799_999;
/// How far outside its window a slow-query sample may be stamped (a query
/// recorded as its window closes, a clock stepping).
pub const SAMPLE_SLACK_MS: i64 = 3_600_000;
/// How long before its window a leaked connection may have been acquired.
pub const MAX_LEAK_AGE_MS: i64 = 30 * 86_400_000;

/// A field of a wire message that does not hold a valid value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// Path of the field, e.g. `batch.queries[3].latency_histogram`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ValidationError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ValidationError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for ValidationError {}

type Result<T> = std::result::Result<T, ValidationError>;

fn check_name(field: &str, value: &str, required: bool) -> Result<()> {
    if required && value.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(ValidationError::new(field, format!("longer than {MAX_NAME_LEN} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(ValidationError::new(field, "contains control characters"));
    }
    Ok(())
}

fn check_len(field: &str, value: &str, max: usize) -> Result<()> {
    if value.len() > max {
        return Err(ValidationError::new(field, format!("longer than {max} bytes")));
    }
    Ok(())
}

fn histogram(field: &str, bytes: &[u8], expected_count: u64) -> Result<LatencyHistogram> {
    let histogram = LatencyHistogram::decode(bytes).map_err(|e| ValidationError::new(field, e.to_string()))?;
    if histogram.count() != expected_count {
        return Err(ValidationError::new(
            field,
            format!("holds {} values but the count says {expected_count}", histogram.count()),
        ));
    }
    Ok(histogram)
}

impl From<wire::DbSystem> for DbSystem {
    fn from(value: wire::DbSystem) -> Self {
        match value {
            wire::DbSystem::Unspecified => DbSystem::Unspecified,
            wire::DbSystem::Postgresql => DbSystem::Postgresql,
            wire::DbSystem::Mysql => DbSystem::Mysql,
            wire::DbSystem::Mariadb => DbSystem::Mariadb,
            wire::DbSystem::Sqlite => DbSystem::Sqlite,
            wire::DbSystem::Other => DbSystem::Other,
        }
    }
}

impl From<DbSystem> for wire::DbSystem {
    fn from(value: DbSystem) -> Self {
        match value {
            DbSystem::Unspecified => wire::DbSystem::Unspecified,
            DbSystem::Postgresql => wire::DbSystem::Postgresql,
            DbSystem::Mysql => wire::DbSystem::Mysql,
            DbSystem::Mariadb => wire::DbSystem::Mariadb,
            DbSystem::Sqlite => wire::DbSystem::Sqlite,
            DbSystem::Other => wire::DbSystem::Other,
        }
    }
}

fn db_system(raw: i32) -> DbSystem {
    // An engine added in a later protocol revision reads as `Other`.
    wire::DbSystem::try_from(raw)
        .map(DbSystem::from)
        .unwrap_or(DbSystem::Other)
}

impl TryFrom<wire::Hello> for Hello {
    type Error = ValidationError;

    fn try_from(hello: wire::Hello) -> Result<Self> {
        check_name("hello.service", &hello.service, true)?;
        check_name("hello.instance_id", &hello.instance_id, true)?;
        check_name("hello.host", &hello.host, false)?;
        check_name("hello.agent_version", &hello.agent_version, false)?;
        if hello.labels.len() > MAX_LABELS {
            return Err(ValidationError::new(
                "hello.labels",
                format!("more than {MAX_LABELS} labels"),
            ));
        }
        for (key, value) in &hello.labels {
            check_name("hello.labels", key, true)?;
            check_name(&format!("hello.labels[{key}]"), value, false)?;
        }
        if hello.interval_ms != 0 && !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&hello.interval_ms) {
            return Err(ValidationError::new(
                "hello.interval_ms",
                format!("must be between {MIN_INTERVAL_MS} and {MAX_INTERVAL_MS}"),
            ));
        }
        Ok(Hello {
            db_system: db_system(hello.db_system),
            service: hello.service,
            instance_id: hello.instance_id,
            host: hello.host,
            pid: hello.pid,
            agent_version: hello.agent_version,
            labels: hello.labels.into_iter().collect::<BTreeMap<_, _>>(),
            started_at_ms: hello.started_at_unix_ms,
            interval_ms: hello.interval_ms,
        })
    }
}

impl From<&Hello> for wire::Hello {
    fn from(hello: &Hello) -> Self {
        wire::Hello {
            service: hello.service.clone(),
            instance_id: hello.instance_id.clone(),
            host: hello.host.clone(),
            pid: hello.pid,
            agent_version: hello.agent_version.clone(),
            db_system: wire::DbSystem::from(hello.db_system) as i32,
            labels: hello.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            started_at_unix_ms: hello.started_at_ms,
            interval_ms: hello.interval_ms,
        }
    }
}

fn query_stats(at: &str, q: wire::QueryStats) -> Result<QueryStats> {
    let field = |name: &str| format!("{at}.{name}");
    if q.errors > q.calls {
        return Err(ValidationError::new(field("errors"), "exceeds calls"));
    }
    if q.outliers > q.calls {
        return Err(ValidationError::new(field("outliers"), "exceeds calls"));
    }
    if q.calls > 0 && q.min_us > q.max_us {
        return Err(ValidationError::new(field("min_us"), "exceeds max_us"));
    }
    if !q.sum_squares_us.is_finite() || q.sum_squares_us < 0.0 {
        return Err(ValidationError::new(
            field("sum_squares_us"),
            "must be a finite, non-negative number",
        ));
    }
    let mut error_classes = Vec::with_capacity(q.error_classes.len());
    let mut class_total: u64 = 0;
    for (i, class) in q.error_classes.into_iter().enumerate() {
        let name = format!("{at}.error_classes[{i}].class");
        check_name(&name, &class.class, true)?;
        class_total = class_total.saturating_add(class.count);
        error_classes.push(ErrorClassCount {
            class: class.class,
            count: class.count,
        });
    }
    if class_total != q.errors {
        return Err(ValidationError::new(
            field("error_classes"),
            format!("add up to {class_total} but errors is {}", q.errors),
        ));
    }
    error_classes.sort_by(|a, b| a.class.cmp(&b.class));
    if error_classes.windows(2).any(|w| w[0].class == w[1].class) {
        return Err(ValidationError::new(field("error_classes"), "lists a class twice"));
    }
    Ok(QueryStats {
        fingerprint: Fingerprint::new(q.fingerprint),
        latency: histogram(&field("latency_histogram"), &q.latency_histogram, q.calls)?,
        calls: q.calls,
        errors: q.errors,
        error_classes,
        rows: q.rows,
        sum_us: q.sum_us,
        sum_squares_us: q.sum_squares_us,
        min_us: if q.calls == 0 { 0 } else { q.min_us },
        max_us: q.max_us,
        outliers: q.outliers,
    })
}

fn gauge(g: Option<wire::GaugeStats>) -> Gauge {
    let g = g.unwrap_or_default();
    // A peak below the last value is a torn read on the agent; the last value
    // was seen, so it is at least the peak.
    Gauge {
        last: g.last,
        peak: g.peak.max(g.last),
    }
}

fn pool_stats(at: &str, p: wire::PoolStats, window: Window) -> Result<PoolStats> {
    let field = |name: &str| format!("{at}.{name}");
    for (i, leak) in p.leak_samples.iter().enumerate() {
        let acquired = leak.acquired_at_unix_ms;
        if acquired < window.start_ms - MAX_LEAK_AGE_MS || acquired > window.end_ms() + SAMPLE_SLACK_MS {
            return Err(ValidationError::new(
                field(&format!("leak_samples[{i}].acquired_at_unix_ms")),
                format!("{acquired} is not within 30 days before the batch's window"),
            ));
        }
    }
    check_name(&field("pool"), &p.pool, true)?;
    if p.leak_samples.len() > MAX_LEAK_SAMPLES {
        return Err(ValidationError::new(
            field("leak_samples"),
            format!("more than {MAX_LEAK_SAMPLES}"),
        ));
    }
    let connections_limit = if p.max_size > 0 { p.max_size } else { MAX_POOL_SIZE };
    if p.max_size > MAX_POOL_SIZE {
        return Err(ValidationError::new(
            field("max_size"),
            format!("exceeds {MAX_POOL_SIZE}"),
        ));
    }
    for (name, gauge) in [("size", &p.size), ("idle", &p.idle), ("in_use", &p.in_use)] {
        let highest = gauge.as_ref().map_or(0, |g| g.peak.max(g.last));
        if highest > connections_limit {
            let limit = if p.max_size > 0 {
                "max_size"
            } else {
                "the largest pool size"
            };
            return Err(ValidationError::new(
                field(name),
                format!("{highest} connections exceed {limit} ({connections_limit})"),
            ));
        }
    }
    if p.waiting
        .as_ref()
        .is_some_and(|g| g.peak.max(g.last) > MAX_POOL_WAITERS)
    {
        return Err(ValidationError::new(
            field("waiting"),
            format!("exceeds {MAX_POOL_WAITERS}"),
        ));
    }
    let acquire_wait = LatencyHistogram::decode(&p.acquire_wait_histogram)
        .map_err(|e| ValidationError::new(field("acquire_wait_histogram"), e.to_string()))?;
    let hold_time = LatencyHistogram::decode(&p.hold_time_histogram)
        .map_err(|e| ValidationError::new(field("hold_time_histogram"), e.to_string()))?;
    Ok(PoolStats {
        db_system: db_system(p.db_system),
        max_size: p.max_size,
        min_idle: p.min_idle,
        size: gauge(p.size),
        idle: gauge(p.idle),
        in_use: gauge(p.in_use),
        waiting: gauge(p.waiting),
        acquires: p.acquires,
        releases: p.releases,
        timeouts: p.timeouts,
        errors: p.errors,
        connections_created: p.connections_created,
        connections_closed: p.connections_closed,
        acquire_wait,
        hold_time,
        leaks: p.leaks,
        leak_threshold_ms: p.leak_threshold_ms,
        leak_samples: p
            .leak_samples
            .into_iter()
            .map(|s| LeakSample {
                acquired_at_ms: s.acquired_at_unix_ms,
                held_ms: s.held_ms,
                last_fingerprint: (s.last_fingerprint != 0).then(|| Fingerprint::new(s.last_fingerprint)),
            })
            .collect(),
        pool: p.pool,
    })
}

fn health_check(at: &str, h: wire::HealthCheckStats) -> Result<HealthCheckStats> {
    let field = |name: &str| format!("{at}.{name}");
    check_name(&field("pool"), &h.pool, true)?;
    if h.failures > h.checks {
        return Err(ValidationError::new(field("failures"), "exceeds checks"));
    }
    check_len(&field("last_error"), &h.last_error, MAX_ERROR_LEN)?;
    Ok(HealthCheckStats {
        latency: histogram(&field("latency_histogram"), &h.latency_histogram, h.checks)?,
        pool: h.pool,
        checks: h.checks,
        failures: h.failures,
        last_check_ms: h.last_check_unix_ms,
        last_ok: h.last_ok,
        last_error: h.last_error,
    })
}

fn slow_sample(at: &str, s: wire::SlowQuerySample, window: Window) -> Result<SlowQuerySample> {
    let field = |name: &str| format!("{at}.{name}");
    if s.at_unix_ms < window.start_ms - SAMPLE_SLACK_MS || s.at_unix_ms > window.end_ms() + SAMPLE_SLACK_MS {
        return Err(ValidationError::new(
            field("at_unix_ms"),
            format!(
                "{} is more than {} s outside the batch's window",
                s.at_unix_ms,
                SAMPLE_SLACK_MS / 1_000
            ),
        ));
    }
    check_len(&field("error_class"), &s.error_class, MAX_ERROR_LEN)?;
    check_name(&field("pool"), &s.pool, false)?;
    check_len(&field("raw_text"), &s.raw_text, MAX_TEXT_LEN)?;
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    Ok(SlowQuerySample {
        fingerprint: Fingerprint::new(s.fingerprint),
        at_ms: s.at_unix_ms,
        duration_us: s.duration_us,
        rows: s.rows,
        error_class: non_empty(s.error_class),
        pool: non_empty(s.pool),
        raw_text: non_empty(s.raw_text),
    })
}

/// Converts each item of a repeated field whose `key` must be unique in the
/// batch (a fingerprint or a pool name).
fn unique<W, D, K: std::hash::Hash + Eq>(
    section: &str,
    key_field: &str,
    items: Vec<W>,
    key: impl Fn(&W) -> K,
    convert: impl Fn(&str, W) -> Result<D>,
) -> Result<Vec<D>> {
    let mut seen = HashSet::with_capacity(items.len());
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let at = format!("{section}[{i}]");
        if !seen.insert(key(&item)) {
            return Err(ValidationError::new(
                format!("{at}.{key_field}"),
                "appears twice in the batch",
            ));
        }
        out.push(convert(&at, item)?);
    }
    Ok(out)
}

impl TryFrom<wire::Batch> for Batch {
    type Error = ValidationError;

    fn try_from(batch: wire::Batch) -> Result<Self> {
        if batch.seq == 0 {
            return Err(ValidationError::new("batch.seq", "sequence numbers start at 1"));
        }
        if !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&batch.window_length_ms) {
            return Err(ValidationError::new(
                "batch.window_length_ms",
                format!("must be between {MIN_INTERVAL_MS} and {MAX_INTERVAL_MS}"),
            ));
        }
        if !(0..=MAX_WINDOW_START_MS).contains(&batch.window_start_unix_ms) {
            return Err(ValidationError::new(
                "batch.window_start_unix_ms",
                format!("must be between 0 and {MAX_WINDOW_START_MS}"),
            ));
        }
        let window = Window {
            start_ms: batch.window_start_unix_ms,
            length_ms: batch.window_length_ms,
        };
        let queries = unique(
            "batch.queries",
            "fingerprint",
            batch.queries,
            |q| q.fingerprint,
            query_stats,
        )?;
        let pools = unique(
            "batch.pools",
            "pool",
            batch.pools,
            |p| p.pool.clone(),
            |at, p| pool_stats(at, p, window),
        )?;
        let health_checks = unique(
            "batch.health_checks",
            "pool",
            batch.health_checks,
            |h| h.pool.clone(),
            health_check,
        )?;
        let slow_queries = batch
            .slow_queries
            .into_iter()
            .enumerate()
            .map(|(i, s)| slow_sample(&format!("batch.slow_queries[{i}]"), s, window))
            .collect::<Result<Vec<_>>>()?;
        let mut texts = Vec::with_capacity(batch.fingerprint_texts.len());
        for (i, t) in batch.fingerprint_texts.into_iter().enumerate() {
            let at = format!("batch.fingerprint_texts[{i}].text");
            if t.text.is_empty() {
                return Err(ValidationError::new(at, "must not be empty"));
            }
            check_len(&at, &t.text, MAX_TEXT_LEN)?;
            texts.push(FingerprintText {
                fingerprint: Fingerprint::new(t.fingerprint),
                text: t.text,
            });
        }
        let c = batch.counters.unwrap_or_default();
        Ok(Batch {
            seq: batch.seq,
            window,
            queries,
            pools,
            health_checks,
            slow_queries,
            texts,
            counters: AgentCounters {
                dropped_batches: c.dropped_batches,
                rejected_batches: c.rejected_batches,
                overflow_fingerprints: c.overflow_fingerprints,
                overflow_calls: c.overflow_calls,
                dropped_samples: c.dropped_samples,
                dropped_records: c.dropped_records,
                send_errors: c.send_errors,
                reconnects: c.reconnects,
                outbox_bytes: c.outbox_bytes,
                outbox_batches: c.outbox_batches,
            },
        })
    }
}

fn wire_gauge(g: Gauge) -> Option<wire::GaugeStats> {
    Some(wire::GaugeStats {
        last: g.last,
        peak: g.peak,
    })
}

impl From<&QueryStats> for wire::QueryStats {
    fn from(q: &QueryStats) -> Self {
        wire::QueryStats {
            fingerprint: q.fingerprint.get(),
            calls: q.calls,
            errors: q.errors,
            error_classes: q
                .error_classes
                .iter()
                .map(|c| wire::ErrorClassCount {
                    class: c.class.clone(),
                    count: c.count,
                })
                .collect(),
            rows: q.rows,
            sum_us: q.sum_us,
            sum_squares_us: q.sum_squares_us,
            min_us: q.min_us,
            max_us: q.max_us,
            latency_histogram: q.latency.encode(),
            outliers: q.outliers,
        }
    }
}

impl From<&Batch> for wire::Batch {
    fn from(batch: &Batch) -> Self {
        let c = batch.counters;
        wire::Batch {
            seq: batch.seq,
            window_start_unix_ms: batch.window.start_ms,
            window_length_ms: batch.window.length_ms,
            queries: batch.queries.iter().map(wire::QueryStats::from).collect(),
            pools: batch
                .pools
                .iter()
                .map(|p| wire::PoolStats {
                    pool: p.pool.clone(),
                    db_system: wire::DbSystem::from(p.db_system) as i32,
                    max_size: p.max_size,
                    min_idle: p.min_idle,
                    size: wire_gauge(p.size),
                    idle: wire_gauge(p.idle),
                    in_use: wire_gauge(p.in_use),
                    waiting: wire_gauge(p.waiting),
                    acquires: p.acquires,
                    releases: p.releases,
                    timeouts: p.timeouts,
                    errors: p.errors,
                    connections_created: p.connections_created,
                    connections_closed: p.connections_closed,
                    acquire_wait_histogram: p.acquire_wait.encode(),
                    hold_time_histogram: p.hold_time.encode(),
                    leaks: p.leaks,
                    leak_threshold_ms: p.leak_threshold_ms,
                    leak_samples: p
                        .leak_samples
                        .iter()
                        .map(|s| wire::LeakSample {
                            acquired_at_unix_ms: s.acquired_at_ms,
                            held_ms: s.held_ms,
                            last_fingerprint: s.last_fingerprint.map_or(0, Fingerprint::get),
                        })
                        .collect(),
                })
                .collect(),
            health_checks: batch
                .health_checks
                .iter()
                .map(|h| wire::HealthCheckStats {
                    pool: h.pool.clone(),
                    checks: h.checks,
                    failures: h.failures,
                    latency_histogram: h.latency.encode(),
                    last_check_unix_ms: h.last_check_ms,
                    last_ok: h.last_ok,
                    last_error: h.last_error.clone(),
                })
                .collect(),
            slow_queries: batch
                .slow_queries
                .iter()
                .map(|s| wire::SlowQuerySample {
                    fingerprint: s.fingerprint.get(),
                    at_unix_ms: s.at_ms,
                    duration_us: s.duration_us,
                    rows: s.rows,
                    error_class: s.error_class.clone().unwrap_or_default(),
                    pool: s.pool.clone().unwrap_or_default(),
                    raw_text: s.raw_text.clone().unwrap_or_default(),
                })
                .collect(),
            fingerprint_texts: batch
                .texts
                .iter()
                .map(|t| wire::FingerprintText {
                    fingerprint: t.fingerprint.get(),
                    text: t.text.clone(),
                })
                .collect(),
            counters: Some(wire::AgentCounters {
                dropped_batches: c.dropped_batches,
                rejected_batches: c.rejected_batches,
                overflow_fingerprints: c.overflow_fingerprints,
                overflow_calls: c.overflow_calls,
                dropped_samples: c.dropped_samples,
                dropped_records: c.dropped_records,
                send_errors: c.send_errors,
                reconnects: c.reconnects,
                outbox_bytes: c.outbox_bytes,
                outbox_batches: c.outbox_batches,
            }),
        }
    }
}

impl TryFrom<wire::AgentMessage> for AgentMessage {
    type Error = ValidationError;

    fn try_from(message: wire::AgentMessage) -> Result<Self> {
        match message.kind {
            Some(wire::agent_message::Kind::Hello(hello)) => Ok(AgentMessage::Hello(hello.try_into()?)),
            Some(wire::agent_message::Kind::Batch(batch)) => Ok(AgentMessage::Batch(batch.try_into()?)),
            None => Err(ValidationError::new("message", "neither hello nor batch is set")),
        }
    }
}

impl From<&AgentMessage> for wire::AgentMessage {
    fn from(message: &AgentMessage) -> Self {
        let kind = match message {
            AgentMessage::Hello(hello) => wire::agent_message::Kind::Hello(hello.into()),
            AgentMessage::Batch(batch) => wire::agent_message::Kind::Batch(batch.into()),
        };
        wire::AgentMessage { kind: Some(kind) }
    }
}

impl From<&CollectorMessage> for wire::CollectorMessage {
    fn from(message: &CollectorMessage) -> Self {
        use wire::collector_message::Kind;
        let kind = match message {
            CollectorMessage::Ack { seq, duplicate } => Kind::Ack(wire::Ack {
                seq: *seq,
                duplicate: *duplicate,
            }),
            CollectorMessage::Reject { seq, reason } => Kind::Reject(wire::Reject {
                seq: *seq,
                reason: reason.clone(),
            }),
            CollectorMessage::Config(c) => Kind::Config(wire::Config {
                slow_threshold_us: c.slow_threshold_us,
                max_samples_per_fingerprint: c.max_samples_per_fingerprint,
                max_samples_per_window: c.max_samples_per_window,
                interval_ms: c.interval_ms,
            }),
        };
        wire::CollectorMessage { kind: Some(kind) }
    }
}

impl TryFrom<wire::CollectorMessage> for CollectorMessage {
    type Error = ValidationError;

    fn try_from(message: wire::CollectorMessage) -> Result<Self> {
        use wire::collector_message::Kind;
        match message.kind {
            Some(Kind::Ack(ack)) => Ok(CollectorMessage::Ack {
                seq: ack.seq,
                duplicate: ack.duplicate,
            }),
            Some(Kind::Reject(reject)) => Ok(CollectorMessage::Reject {
                seq: reject.seq,
                reason: reject.reason,
            }),
            Some(Kind::Config(c)) => {
                if let Some(interval) = c.interval_ms
                    && !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&interval)
                {
                    return Err(ValidationError::new(
                        "config.interval_ms",
                        format!("must be between {MIN_INTERVAL_MS} and {MAX_INTERVAL_MS}"),
                    ));
                }
                Ok(CollectorMessage::Config(ConfigUpdate {
                    slow_threshold_us: c.slow_threshold_us,
                    max_samples_per_fingerprint: c.max_samples_per_fingerprint,
                    max_samples_per_window: c.max_samples_per_window,
                    interval_ms: c.interval_ms,
                }))
            }
            None => Err(ValidationError::new("message", "no kind is set")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_batch() -> Batch {
        let fp = Fingerprint::of_normalized("select * from users where id = ?");
        let mut q = QueryStats::new(fp);
        q.record(1_200, 1, None);
        q.record(80_000, 0, Some("57014"));
        let mut pool = PoolStats {
            pool: "main".into(),
            max_size: 10,
            ..PoolStats::default()
        };
        pool.acquire_wait.record(35);
        pool.in_use = Gauge { last: 3, peak: 9 };
        let mut health = HealthCheckStats {
            pool: "main".into(),
            checks: 1,
            last_ok: true,
            ..Default::default()
        };
        health.latency.record(400);
        Batch {
            queries: vec![q],
            pools: vec![pool],
            health_checks: vec![health],
            slow_queries: vec![SlowQuerySample {
                fingerprint: fp,
                at_ms: 1_700_000_000_123,
                duration_us: 80_000,
                rows: 0,
                error_class: Some("57014".into()),
                pool: Some("main".into()),
                raw_text: None,
            }],
            texts: vec![FingerprintText {
                fingerprint: fp,
                text: "select * from users where id = ?".into(),
            }],
            counters: AgentCounters {
                dropped_batches: 2,
                reconnects: 1,
                ..Default::default()
            },
            ..Batch::new(
                9,
                Window {
                    start_ms: 1_700_000_000_000,
                    length_ms: 10_000,
                },
            )
        }
    }

    #[test]
    fn what_real_pools_and_samples_report_is_accepted() {
        let mut wire = wire::Batch::from(&sample_batch());
        // A full pool with a crowd waiting; a sample stamped as its window
        // closed; a pool whose size is not known.
        wire.pools[0].in_use = Some(wire::GaugeStats { last: 10, peak: 10 });
        wire.pools[0].waiting = Some(wire::GaugeStats {
            last: 5_000,
            peak: 9_000,
        });
        wire.slow_queries[0].at_unix_ms = 1_700_000_010_050;
        assert!(Batch::try_from(wire.clone()).is_ok());
        wire.pools[0].max_size = 0;
        wire.pools[0].in_use = Some(wire::GaugeStats { last: 40, peak: 64 });
        assert!(Batch::try_from(wire).is_ok());
    }

    #[test]
    fn a_batch_survives_the_wire_unchanged() {
        let batch = sample_batch();
        let decoded = Batch::try_from(wire::Batch::from(&batch)).unwrap();
        assert_eq!(decoded, batch);
    }

    #[track_caller]
    fn assert_rejected(mutate: impl FnOnce(&mut wire::Batch), field: &str) {
        let mut wire = wire::Batch::from(&sample_batch());
        mutate(&mut wire);
        let err = Batch::try_from(wire).expect_err("the batch should be rejected");
        assert!(err.field.contains(field), "expected an error on {field}, got {err}");
    }

    #[test]
    fn inconsistent_or_hostile_fields_are_rejected_with_their_name() {
        assert_rejected(|b| b.seq = 0, "batch.seq");
        assert_rejected(|b| b.window_length_ms = 10, "window_length_ms");
        assert_rejected(|b| b.queries[0].errors = 5, "errors");
        assert_rejected(|b| b.queries[0].calls = 3, "latency_histogram");
        assert_rejected(|b| b.queries[0].sum_squares_us = f64::NAN, "sum_squares_us");
        assert_rejected(|b| b.queries[0].sum_squares_us = -1.0, "sum_squares_us");
        assert_rejected(|b| b.queries[0].min_us = u64::MAX, "min_us");
        assert_rejected(|b| b.queries[0].latency_histogram = vec![1, 2, 3], "latency_histogram");
        assert_rejected(|b| b.queries[0].error_classes[0].count = 7, "error_classes");
        assert_rejected(|b| b.queries.push(b.queries[0].clone()), "fingerprint");
        assert_rejected(|b| b.pools[0].pool = "x".repeat(500), "pool");
        assert_rejected(
            |b| b.pools[0].acquire_wait_histogram = vec![0; 41],
            "acquire_wait_histogram",
        );
        assert_rejected(|b| b.health_checks[0].failures = 2, "failures");
        // Numbers that would show as nonsense: a pool more than full, a
        // sample stamped at the ends of time, a window no clock can reach.
        assert_rejected(
            |b| b.pools[0].in_use.as_mut().unwrap().peak = u32::MAX,
            "batch.pools[0].in_use",
        );
        assert_rejected(
            |b| b.pools[0].size = Some(wire::GaugeStats { last: 11, peak: 11 }),
            "size",
        );
        assert_rejected(|b| b.pools[0].max_size = u32::MAX, "max_size");
        assert_rejected(
            |b| {
                b.pools[0].max_size = 0;
                b.pools[0].idle = Some(wire::GaugeStats {
                    last: 0,
                    peak: u32::MAX,
                });
            },
            "idle",
        );
        assert_rejected(
            |b| {
                b.pools[0].waiting = Some(wire::GaugeStats {
                    last: u32::MAX,
                    peak: u32::MAX,
                })
            },
            "waiting",
        );
        assert_rejected(|b| b.slow_queries[0].at_unix_ms = i64::MAX, "at_unix_ms");
        assert_rejected(|b| b.slow_queries[0].at_unix_ms = i64::MIN, "at_unix_ms");
        assert_rejected(|b| b.window_start_unix_ms = i64::MAX, "window_start_unix_ms");
        assert_rejected(|b| b.window_start_unix_ms = -1, "window_start_unix_ms");
        assert_rejected(
            |b| {
                b.pools[0].leak_samples.push(wire::LeakSample {
                    acquired_at_unix_ms: i64::MIN,
                    held_ms: 1,
                    last_fingerprint: 0,
                })
            },
            "acquired_at_unix_ms",
        );
        assert_rejected(|b| b.fingerprint_texts[0].text = String::new(), "fingerprint_texts");
        assert_rejected(
            |b| b.fingerprint_texts[0].text = "x".repeat(MAX_TEXT_LEN + 1),
            "fingerprint_texts",
        );
    }

    #[test]
    fn hello_requires_names() {
        let hello = Hello {
            service: "orders".into(),
            instance_id: "abc".into(),
            ..Hello::default()
        };
        assert_eq!(Hello::try_from(wire::Hello::from(&hello)).unwrap(), hello);
        let mut bad = wire::Hello::from(&hello);
        bad.service.clear();
        assert_eq!(Hello::try_from(bad).unwrap_err().field, "hello.service");
        let mut bad = wire::Hello::from(&hello);
        bad.service = "a\u{0}b".into();
        assert!(Hello::try_from(bad).is_err());
    }

    #[test]
    fn collector_messages_round_trip() {
        for message in [
            CollectorMessage::Ack {
                seq: 4,
                duplicate: true,
            },
            CollectorMessage::Reject {
                seq: 5,
                reason: "window too far in the future".into(),
            },
            CollectorMessage::Config(ConfigUpdate {
                slow_threshold_us: Some(250_000),
                ..Default::default()
            }),
        ] {
            let wire = wire::CollectorMessage::from(&message);
            assert_eq!(CollectorMessage::try_from(wire).unwrap(), message);
        }
    }
}
