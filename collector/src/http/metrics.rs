//! `GET /metrics`: the fleet's numbers in the Prometheus text format (0.0.4),
//! for Prometheus to scrape and Grafana to chart next to everything else.
//!
//! Every `querypulse_query_*` and `querypulse_pool_*` series is a gauge over
//! the trailing window (`window`, 5 minutes by default), read from the same
//! store and merged the same way as the API and the dashboard: the latency
//! quantiles are true fleet-wide percentiles of the merged histograms, which
//! Prometheus cannot recover from per-instance summaries. The agents' own
//! counters are cumulative since each agent started, so they are counters.
//!
//! Statements (one series set per service and fingerprint) are the `limit`
//! (500 by default) with the most total time in the window; how many were
//! left out is exported too.

use std::fmt::Write;

use querypulse_domain::source::{AgentSummary, PoolSummary, QuerySummary, StoreHealth};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use querypulse_domain::source::{QueryFilter, TimeRange};

use super::error::ApiError;
use super::openapi::ReadErrors;
use super::params::{MetricsParams, Parameters, Params, parse_step, summary_range};
use super::{Api, read};
use crate::remote_write::DestinationStatus;
use querypulse_domain::now_ms;

/// What one scrape exports.
pub(crate) struct Scrape {
    pub window_s: i64,
    pub limit: usize,
    pub now_ms: i64,
    pub queries: Vec<QuerySummary>,
    pub pools: Vec<PoolSummary>,
    pub agents: Vec<AgentSummary>,
    pub store: Option<StoreHealth>,
    pub remote_write: Vec<DestinationStatus>,
}

/// Longest statement text put in a label; longer texts are cut with `…`.
const MAX_LABEL_TEXT: usize = 256;

/// Latency quantiles exported for every statement, one metric each (a
/// `quantile` label belongs to summaries, whose count and sum are
/// cumulative; these are gauges over the window).
const QUANTILES: [Column<QuerySummary>; 3] = [
    (
        "querypulse_query_latency_p50_seconds",
        "Fleet-wide median latency in the window, from the merged histograms of every instance.",
        |q| q.p50_ms / 1_000.0,
    ),
    (
        "querypulse_query_latency_p95_seconds",
        "Fleet-wide 95th percentile latency in the window, from the merged histograms of every instance.",
        |q| q.p95_ms / 1_000.0,
    ),
    (
        "querypulse_query_latency_p99_seconds",
        "Fleet-wide 99th percentile latency in the window, from the merged histograms of every instance.",
        |q| q.p99_ms / 1_000.0,
    ),
];

/// One exported metric over a list of rows: its name, its help text and
/// the value of a row.
type Column<T> = (&'static str, &'static str, fn(&T) -> f64);

struct Exposition {
    out: String,
}

impl Exposition {
    /// One family of `kind` per column, each with a sample per row labelled
    /// by `labels`.
    fn columns<T>(
        &mut self,
        kind: &str,
        columns: &[Column<T>],
        rows: &[T],
        labels: impl Fn(&T) -> Vec<(&'static str, String)>,
    ) {
        for (name, help, value) in columns {
            self.family(name, kind, help);
            for row in rows {
                let labels = labels(row);
                let labels: Vec<(&str, &str)> = labels.iter().map(|(l, v)| (*l, v.as_str())).collect();
                self.sample(name, &labels, value(row));
            }
        }
    }

    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, text)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{label}=\"");
                escape_into(&mut self.out, text);
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
    }
}

/// A label value as the text format wants it: backslash, double quote and
/// line feed escaped.
fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A sample value: integers without a fraction, the rest as Rust prints
/// them (which Prometheus parses), and the text format's spellings for
/// infinities and NaN.
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{value}")
    }
}

/// `text` cut to [`MAX_LABEL_TEXT`] bytes on a character boundary, ending
/// with `…` when cut (remote write's `text` label too).
pub(crate) fn cut(text: &str) -> String {
    if text.len() <= MAX_LABEL_TEXT {
        return text.to_owned();
    }
    let mut end = MAX_LABEL_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Renders one scrape.
pub(crate) fn render(mut scrape: Scrape) -> String {
    let mut x = Exposition { out: String::new() };
    x.family(
        "querypulse_window_seconds",
        "gauge",
        "Length of the trailing window the querypulse_query_* and querypulse_pool_* gauges cover.",
    );
    x.sample("querypulse_window_seconds", &[], scrape.window_s as f64);

    scrape.queries.sort_by(|a, b| {
        b.total_ms
            .total_cmp(&a.total_ms)
            .then_with(|| a.service.cmp(&b.service))
            .then_with(|| a.fingerprint.cmp(&b.fingerprint))
    });
    let left_out = scrape.queries.len().saturating_sub(scrape.limit);
    scrape.queries.truncate(scrape.limit);
    x.family(
        "querypulse_queries_left_out",
        "gauge",
        "Statements with calls in the window not exported because of the limit parameter.",
    );
    x.sample("querypulse_queries_left_out", &[], left_out as f64);

    let statement = |q: &QuerySummary| {
        vec![
            ("service", q.service.clone()),
            ("fingerprint", q.fingerprint.to_string()),
        ]
    };
    x.columns(
        "gauge",
        &[(
            "querypulse_query_info",
            "The normalized text of each exported statement (value 1).",
            |_| 1.0,
        )],
        &scrape.queries,
        |q| {
            let mut labels = statement(q);
            labels.push(("text", cut(&q.text)));
            labels
        },
    );
    let per_query: [Column<QuerySummary>; 4] = [
        (
            "querypulse_query_calls",
            "Executions in the window, all instances of the service.",
            |q| q.calls as f64,
        ),
        ("querypulse_query_errors", "Failed executions in the window.", |q| {
            q.errors as f64
        }),
        (
            "querypulse_query_rows",
            "Rows returned or affected in the window.",
            |q| q.rows as f64,
        ),
        (
            "querypulse_query_time_seconds",
            "Total execution time in the window.",
            |q| q.total_ms / 1_000.0,
        ),
    ];
    x.columns("gauge", &per_query, &scrape.queries, statement);
    x.columns("gauge", &QUANTILES, &scrape.queries, statement);

    render_pools(&mut x, &scrape.pools);
    render_agents(&mut x, &scrape.agents, scrape.now_ms);
    if let Some(store) = &scrape.store {
        render_store(&mut x, store);
    }
    render_remote_write(&mut x, &scrape.remote_write, scrape.now_ms);
    x.out
}

/// The collector's own store: memory for open windows, flushes, waits, disk.
fn render_store(x: &mut Exposition, store: &StoreHealth) {
    let families: [(&str, &str, &str, u64); 9] = [
        (
            "querypulse_store_memtable_bytes",
            "gauge",
            "Bytes of open windows held in memory (approximate).",
            store.memtable_bytes,
        ),
        (
            "querypulse_store_memtable_limit_bytes",
            "gauge",
            "Bound on the memory for open windows (memtable_mb).",
            store.memtable_limit_bytes,
        ),
        (
            "querypulse_store_memtable_windows",
            "gauge",
            "Open windows held in memory.",
            store.memtable_windows,
        ),
        (
            "querypulse_store_flushes_total",
            "counter",
            "Flushes of open windows to disk.",
            store.flushes,
        ),
        (
            "querypulse_store_early_flushes_total",
            "counter",
            "Flushes before the end of their interval because half of the memory was full.",
            store.early_flushes,
        ),
        (
            "querypulse_store_stalls_total",
            "counter",
            "Times ingest waited for a flush because the memory for open windows was full.",
            store.stalls,
        ),
        (
            "querypulse_store_disk_bytes",
            "gauge",
            "Bytes on disk, every file of the store.",
            store.disk_bytes,
        ),
        (
            "querypulse_store_disk_free_bytes",
            "gauge",
            "Bytes free on the store's file system; below min_free_disk_mb batches are refused.",
            store.disk_free_bytes,
        ),
        (
            "querypulse_store_problems",
            "gauge",
            "Problems found with the store (damaged files, data lost); /healthz lists them.",
            store.problems.len() as u64,
        ),
    ];
    for (name, kind, help, value) in families {
        x.family(name, kind, help);
        x.sample(name, &[], value as f64);
    }
}

/// Each remote-write destination: how far behind it is, what it took.
fn render_remote_write(x: &mut Exposition, destinations: &[DestinationStatus], now_ms: i64) {
    if destinations.is_empty() {
        return;
    }
    let rows: Vec<DestinationStatus> = destinations
        .iter()
        .map(|d| DestinationStatus {
            lag_seconds: if d.sent_until_ms > 0 {
                (now_ms - d.sent_until_ms).max(0) as f64 / 1_000.0
            } else {
                f64::NAN
            },
            ..d.clone()
        })
        .collect();
    let labels = |d: &DestinationStatus| vec![("destination", d.name.clone())];
    let gauges: [Column<DestinationStatus>; 2] = [
        (
            "querypulse_remote_write_sent_until_timestamp_seconds",
            "End of the last interval the destination accepted.",
            |d| d.sent_until_ms as f64 / 1_000.0,
        ),
        (
            "querypulse_remote_write_lag_seconds",
            "How far behind now the destination is (the backlog waits in the store).",
            |d| d.lag_seconds,
        ),
    ];
    let counters: [Column<DestinationStatus>; 7] = [
        (
            "querypulse_remote_write_histograms_total",
            "Native histogram samples the destination accepted.",
            |d| d.histograms_sent as f64,
        ),
        (
            "querypulse_remote_write_samples_total",
            "Float samples the destination accepted.",
            |d| d.samples_sent as f64,
        ),
        (
            "querypulse_remote_write_requests_total",
            "Requests the destination accepted.",
            |d| d.requests as f64,
        ),
        (
            "querypulse_remote_write_bytes_total",
            "Bytes (compressed, as sent) of the requests the destination accepted.",
            |d| d.bytes_sent as f64,
        ),
        (
            "querypulse_remote_write_retries_total",
            "Requests retried after a 5xx, a 429 or no connection.",
            |d| d.retries as f64,
        ),
        (
            "querypulse_remote_write_late_calls_total",
            "Calls that reached the store after their interval was sent, added to later samples.",
            |d| d.late_calls as f64,
        ),
        (
            "querypulse_remote_write_dropped_requests_total",
            "Requests refused with another 4xx and dropped, as Prometheus does.",
            |d| d.dropped_requests as f64,
        ),
    ];
    x.columns("gauge", &gauges, &rows, labels);
    x.columns("counter", &counters, &rows, labels);
}

fn render_pools(x: &mut Exposition, pools: &[PoolSummary]) {
    let per_pool: [Column<PoolSummary>; 12] = [
        (
            "querypulse_pool_max_connections",
            "Configured maximum connections.",
            |p| f64::from(p.max_size),
        ),
        (
            "querypulse_pool_connections",
            "Open connections at the end of the window.",
            |p| f64::from(p.size.last),
        ),
        (
            "querypulse_pool_in_use",
            "Connections checked out at the end of the window.",
            |p| f64::from(p.in_use.last),
        ),
        (
            "querypulse_pool_in_use_peak",
            "Most connections checked out at once in the window.",
            |p| f64::from(p.in_use.peak),
        ),
        (
            "querypulse_pool_idle",
            "Idle connections at the end of the window.",
            |p| f64::from(p.idle.last),
        ),
        (
            "querypulse_pool_waiting_peak",
            "Most tasks waiting for a connection at once in the window.",
            |p| f64::from(p.waiting.peak),
        ),
        (
            "querypulse_pool_utilization_peak",
            "Peak share of the maximum connections in use in the window (0 to 1).",
            |p| p.peak_utilization,
        ),
        ("querypulse_pool_acquires", "Connections acquired in the window.", |p| {
            p.acquires as f64
        }),
        (
            "querypulse_pool_timeouts",
            "Acquisitions that timed out in the window.",
            |p| p.timeouts as f64,
        ),
        (
            "querypulse_pool_leaks",
            "Connections held past the leak threshold in the window.",
            |p| p.leaks as f64,
        ),
        (
            "querypulse_pool_acquire_wait_p99_seconds",
            "99th percentile of the time to acquire a connection in the window.",
            |p| p.acquire_wait_p99_ms / 1_000.0,
        ),
        (
            "querypulse_pool_hold_time_p95_seconds",
            "95th percentile of the time a connection was held in the window.",
            |p| p.hold_time_p95_ms / 1_000.0,
        ),
    ];
    let pool = |p: &PoolSummary| {
        vec![
            ("service", p.service.clone()),
            ("instance", p.instance_id.clone()),
            ("pool", p.pool.clone()),
        ]
    };
    x.columns("gauge", &per_pool, pools, pool);
    x.family(
        "querypulse_pool_health_up",
        "gauge",
        "1 when the pool's last health check in the window passed, 0 when it failed.",
    );
    for p in pools {
        if let Some(health) = &p.health {
            x.sample(
                "querypulse_pool_health_up",
                &[("service", &p.service), ("instance", &p.instance_id), ("pool", &p.pool)],
                if health.last_ok { 1.0 } else { 0.0 },
            );
        }
    }
}

fn render_agents(x: &mut Exposition, agents: &[AgentSummary], now_ms: i64) {
    x.family(
        "querypulse_agent_up",
        "gauge",
        "1 while the instance reports, 0 once nothing arrived for three intervals.",
    );
    for a in agents {
        x.sample(
            "querypulse_agent_up",
            &[("service", &a.service), ("instance", &a.instance_id), ("host", &a.host)],
            if a.silent { 0.0 } else { 1.0 },
        );
    }
    x.family(
        "querypulse_agent_last_report_age_seconds",
        "gauge",
        "Seconds since the instance's last batch arrived.",
    );
    for a in agents {
        x.sample(
            "querypulse_agent_last_report_age_seconds",
            &[("service", &a.service), ("instance", &a.instance_id)],
            (now_ms - a.last_seen_ms).max(0) as f64 / 1_000.0,
        );
    }
    let counters: [Column<AgentSummary>; 5] = [
        (
            "querypulse_agent_dropped_batches_total",
            "Batches the agent dropped because its outbox was full.",
            |a| a.counters.dropped_batches as f64,
        ),
        (
            "querypulse_agent_overflow_fingerprints_total",
            "Statements the agent counted into `other` past its fingerprint cap.",
            |a| a.counters.overflow_fingerprints as f64,
        ),
        (
            "querypulse_agent_dropped_samples_total",
            "Slow-query samples the agent dropped to its rate limits.",
            |a| a.counters.dropped_samples as f64,
        ),
        (
            "querypulse_agent_send_errors_total",
            "Times the agent lost or could not reach the collector.",
            |a| a.counters.send_errors as f64,
        ),
        (
            "querypulse_agent_reconnects_total",
            "Times the agent reconnected to the collector.",
            |a| a.counters.reconnects as f64,
        ),
    ];
    x.columns("counter", &counters, agents, |a| {
        vec![("service", a.service.clone()), ("instance", a.instance_id.clone())]
    });
}

/// Statements `/metrics` exports unless `limit` says otherwise.
pub(super) const METRICS_LIMIT: usize = 500;

/// The Prometheus text exposition: fleet-wide statement and pool series over
/// a trailing window, and the collector's own health.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "collector",
    params(MetricsParams),
    responses(
        (status = 200, description = "Prometheus text format 0.0.4.", body = String, content_type = "text/plain"),
        ReadErrors,
    ),
    security((), ("read_token" = []), ("admin_token" = [])),
)]
pub(super) async fn metrics(State(api): State<Api>, params: Params) -> Result<Response, ApiError> {
    let params = Parameters::new::<MetricsParams>(params)?;
    let window_ms = match params.get("window") {
        Some(window) => parse_step(window)?,
        None => 300_000,
    };
    if !(60_000..=86_400_000).contains(&window_ms) {
        return Err(ApiError::BadRequest("window must be between 1m and 1d".into()));
    }
    let limit = match params.get("limit") {
        Some(limit) => limit
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=100_000).contains(n))
            .ok_or_else(|| ApiError::BadRequest(format!("limit={limit:?} is not a number from 1 to 100000")))?,
        None => METRICS_LIMIT,
    };
    let now_ms = now_ms();
    let range = summary_range(TimeRange::last(now_ms, window_ms));
    let source = api.source.clone();
    let remote_write = api.admin.remote_write.snapshot();
    let (queries, pools, agents, store) = read(move || {
        let filter = QueryFilter { service: None, range };
        Ok((
            source.queries(&filter)?,
            source.pools(range)?,
            source.agents()?,
            source.store_health()?,
        ))
    })
    .await?;
    let body = render(Scrape {
        window_s: window_ms / 1_000,
        limit,
        now_ms,
        queries,
        pools,
        agents,
        store,
        remote_write,
    });
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_long_texts_cut() {
        let mut x = Exposition { out: String::new() };
        x.sample("m", &[("text", "a \"b\" c\\d\ne")], 1.5);
        assert_eq!(x.out, "m{text=\"a \\\"b\\\" c\\\\d\\ne\"} 1.5\n");
        let long = "é".repeat(200);
        let label = cut(&long);
        assert!(label.ends_with('…') && label.len() <= MAX_LABEL_TEXT + '…'.len_utf8());
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(3.0), "3");
    }
}
