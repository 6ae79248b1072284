//! Seven days of simulated history for `querypulse demo`, written before the
//! dashboard URL is printed, so a first-time user sees trends, rollups and
//! the 7 d / 30 d ranges at once instead of a few seconds of data.
//!
//! It goes through the real ingest path, as an agent speaks it: one `Report`
//! stream per simulated instance, a `Hello`, then numbered 5-minute batches
//! and their acknowledgements. Each history belongs to an earlier process of
//! the instance on the same host, which the live agent replaced a moment ago,
//! as a deploy does; the "silent agents" rule leaves such instances out.
//!
//! The statements are the live demo's own (the same normalizer makes their
//! fingerprints), with latencies calibrated on the live SQLite pools, a daily
//! load cycle, a report statement that slows down as its table grows, and a
//! two-hour incident three days ago in which checkout's pools ran dry.

use std::f64::consts::PI;
use std::time::Duration;

use querypulse_agent::fingerprint::{Dialect, normalize};
use querypulse_domain::{
    Batch, DbSystem, ErrorClassCount, FingerprintText, Gauge, HealthCheckStats, Hello, LatencyHistogram, PoolStats,
    QueryStats, Window,
};
use querypulse_proto::wire::v1::{self as wire, ingest_client::IngestClient};
use querypulse_proto::{CollectorMessage, now_ms};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{Mix, Statement};

/// How far back the history reaches.
pub const HISTORY: Duration = Duration::from_secs(7 * 86_400);
/// Length of a history window: 2,016 windows a week per instance.
const WINDOW_MS: i64 = 300_000;
/// Batches sent ahead of their acknowledgements.
const IN_FLIGHT: usize = 64;
/// Latency draws per statement and window; each stands for an equal share
/// of the window's executions.
const DRAWS: u64 = 40;
/// Executions per second of one instance at peak load (the live demo's
/// workers run about this many).
const PEAK_RATE: f64 = 110.0;
/// The incident: checkout's pools ran dry for two hours, three days ago.
const INCIDENT_AGO_MS: i64 = 3 * 86_400_000;
const INCIDENT_MS: i64 = 2 * 3_600_000;

/// One simulated instance whose history is written.
pub(super) struct Instance<'a> {
    pub service: &'a str,
    pub number: u32,
    /// The host its live agent reports, so the history reads as an earlier
    /// process on the same host.
    pub host: &'a str,
    pub mix: Mix,
}

/// How a statement behaves: median latency and its spread (log-normal),
/// rows per execution, and the error class of every execution, if it fails.
struct Profile {
    median_us: f64,
    sigma: f64,
    rows: u64,
    error: Option<&'static str>,
}

fn profile(statement: Statement) -> Profile {
    let ok = |median_us, sigma, rows| Profile {
        median_us,
        sigma,
        rows,
        error: None,
    };
    let failing = |median_us, class| Profile {
        median_us,
        sigma: 0.5,
        rows: 0,
        error: Some(class),
    };
    match statement {
        Statement::UserById => ok(190.0, 0.6, 1),
        Statement::RecentOrders => ok(260.0, 0.6, 10),
        Statement::PlaceOrder => ok(240.0, 0.6, 1),
        Statement::PayOrder => ok(210.0, 0.6, 1),
        Statement::StatusTotals => ok(6_200.0, 0.25, 3),
        Statement::TopCustomers => ok(7_800.0, 0.2, 10),
        Statement::DuplicateUser => failing(170.0, "23505"),
        Statement::MonthlyReport => ok(180_000.0, 0.35, 1),
        Statement::ProductBySku => ok(200.0, 0.6, 1),
        Statement::ReserveStock => ok(245.0, 0.6, 1),
        Statement::OversellStock => failing(180.0, "23514"),
        Statement::LowStock => ok(220.0, 0.5, 0),
        Statement::MissingTable => failing(135.0, "other"),
    }
}

/// Load at `at_ms` between 0.2 (03:00 UTC) and 1.0 (15:00 UTC).
fn load(at_ms: i64) -> f64 {
    let hour = (at_ms.rem_euclid(86_400_000)) as f64 / 3_600_000.0;
    0.6 + 0.4 * (2.0 * PI * (hour - 15.0) / 24.0).cos()
}

/// Writes the history of `instances` to the collector at `endpoint`, ending
/// at the 5-minute boundary before now; returns the windows acknowledged.
pub(super) async fn write(endpoint: &str, instances: &[Instance<'_>]) -> Result<u64, String> {
    let until_ms = now_ms().div_euclid(WINDOW_MS) * WINDOW_MS;
    let from_ms = until_ms - HISTORY.as_millis() as i64;
    let mut windows = 0;
    for instance in instances {
        windows += write_instance(endpoint, instance, from_ms, until_ms).await?;
    }
    Ok(windows)
}

async fn write_instance(endpoint: &str, instance: &Instance<'_>, from_ms: i64, until_ms: i64) -> Result<u64, String> {
    let name = format!("{}-{}", instance.service, instance.number);
    let fail = |what: String| format!("history of {name}: {what}");
    let mut client = IngestClient::connect(endpoint.to_owned())
        .await
        .map_err(|e| fail(format!("cannot connect: {e}")))?;
    let hello = Hello {
        service: instance.service.to_owned(),
        instance_id: format!("demo-history-{name}"),
        host: instance.host.to_owned(),
        pid: 1_000 + instance.number,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        db_system: DbSystem::Sqlite,
        labels: [("demo".to_owned(), "true".to_owned())].into(),
        started_at_ms: from_ms,
        interval_ms: WINDOW_MS as u32,
    };
    let (tx, rx) = mpsc::channel(IN_FLIGHT + 1);
    tx.send(message(wire::agent_message::Kind::Hello(wire::Hello::from(&hello))))
        .await
        .map_err(|_| fail("the stream closed".into()))?;
    let mut inbound = client
        .report(ReceiverStream::new(rx))
        .await
        .map_err(|e| fail(format!("the collector refused the stream: {}", e.message())))?
        .into_inner();
    let statements = statements(instance.mix);
    let starts: Vec<i64> = (from_ms..until_ms).step_by(WINDOW_MS as usize).collect();
    let (mut sent, mut acked) = (0usize, 0usize);
    while acked < starts.len() {
        while sent < starts.len() && sent - acked < IN_FLIGHT {
            let seq = sent as u64 + 1;
            let batch = batch(instance, &statements, seq, starts[sent], until_ms, sent == 0);
            tx.send(message(wire::agent_message::Kind::Batch(wire::Batch::from(&batch))))
                .await
                .map_err(|_| fail("the stream closed".into()))?;
            sent += 1;
        }
        let reply = inbound
            .message()
            .await
            .map_err(|e| fail(format!("the stream broke: {}", e.message())))?
            .ok_or_else(|| fail("the collector ended the stream".into()))?;
        match CollectorMessage::try_from(reply) {
            Ok(CollectorMessage::Ack { .. }) => acked += 1,
            Ok(CollectorMessage::Reject { seq, reason }) => {
                return Err(fail(format!("window {seq} was rejected: {reason}")));
            }
            Ok(CollectorMessage::Config(_)) => {}
            Err(error) => return Err(fail(format!("malformed reply: {error}"))),
        }
    }
    Ok(acked as u64)
}

fn message(kind: wire::agent_message::Kind) -> wire::AgentMessage {
    wire::AgentMessage { kind: Some(kind) }
}

/// The statements of `mix` with their weights and normalized texts.
fn statements(mix: Mix) -> Vec<(Statement, f64, FingerprintText)> {
    let total: u32 = mix.iter().map(|(_, weight)| weight).sum();
    let mut rng = StdRng::seed_from_u64(1);
    mix.iter()
        .map(|&(statement, weight)| {
            let normalized = normalize(&statement.sql(&mut rng), Dialect::Sqlite);
            let text = FingerprintText {
                fingerprint: normalized.fingerprint,
                text: normalized.text,
            };
            (statement, f64::from(weight) / f64::from(total), text)
        })
        .collect()
}

/// The batch of `instance` for the window starting at `start_ms` of a
/// history ending at `until_ms`: the same numbers whenever it is built.
fn batch(
    instance: &Instance<'_>,
    statements: &[(Statement, f64, FingerprintText)],
    seq: u64,
    start_ms: i64,
    until_ms: i64,
    with_texts: bool,
) -> Batch {
    let mut rng = StdRng::seed_from_u64(start_ms as u64 ^ (u64::from(instance.number) << 48) ^ seq.rotate_left(17));
    let mut batch = Batch::new(
        seq,
        Window {
            start_ms,
            length_ms: WINDOW_MS as u32,
        },
    );
    let ago_ms = until_ms - start_ms;
    let incident = instance.service == "checkout" && (INCIDENT_AGO_MS - INCIDENT_MS..INCIDENT_AGO_MS).contains(&ago_ms);
    let busy = load(start_ms);
    let executions = PEAK_RATE * busy * (WINDOW_MS / 1_000) as f64;
    let mut pool_timeouts = 0;
    let mut acquires = 0;
    for (statement, share, text) in statements {
        let profile = profile(*statement);
        let calls = (executions * share * rng.random_range(0.9..1.1)).round() as u64;
        if calls == 0 {
            continue;
        }
        // Busier hours are a little slower; the reports slow down as the
        // orders table grows over the week.
        let mut median = profile.median_us * (0.85 + 0.3 * busy);
        if matches!(statement, Statement::StatusTotals | Statement::TopCustomers) {
            median *= 1.0 - 0.6 * (ago_ms as f64 / HISTORY.as_millis() as f64).clamp(0.0, 1.0);
        }
        let timeouts = if incident {
            median *= 4.0;
            calls / 25
        } else {
            0
        };
        let stats = window_stats(&mut rng, text, calls, median, &profile, timeouts);
        pool_timeouts += timeouts;
        acquires += calls;
        batch.queries.push(stats);
        if with_texts {
            batch.texts.push(text.clone());
        }
    }
    batch
        .pools
        .push(pool_window(&mut rng, busy, incident, acquires, pool_timeouts));
    batch.health_checks.push(health_window(&mut rng, start_ms));
    batch
}

/// A statement's window: `calls` executions drawn from a log-normal latency
/// around `median_us`, the last `timeouts` of them failed waiting for a
/// connection.
fn window_stats(
    rng: &mut StdRng,
    text: &FingerprintText,
    calls: u64,
    median_us: f64,
    profile: &Profile,
    timeouts: u64,
) -> QueryStats {
    let mut stats = QueryStats::new(text.fingerprint);
    let draws = DRAWS.min(calls);
    let mut latency = LatencyHistogram::new();
    for draw in 0..draws {
        // Shares as equal as whole numbers allow.
        let count = calls / draws + u64::from(draw < calls % draws);
        let normal: f64 = {
            let (u, v): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random());
            (-2.0 * u.ln()).sqrt() * (2.0 * PI * v).cos()
        };
        let micros = (median_us * (profile.sigma * normal).exp()).max(1.0) as u64;
        if latency.record_n(micros, count) {
            stats.outliers += count;
        }
        stats.min_us = if draw == 0 { micros } else { stats.min_us.min(micros) };
        stats.max_us = stats.max_us.max(micros);
        stats.sum_us += micros * count;
        stats.sum_squares_us += (micros as f64) * (micros as f64) * count as f64;
    }
    stats.calls = calls;
    stats.latency = latency;
    let mut classes = Vec::new();
    let failed = if profile.error.is_some() { calls } else { timeouts };
    if let Some(class) = profile.error {
        classes.push(ErrorClassCount {
            class: class.to_owned(),
            count: calls - timeouts.min(calls),
        });
    }
    if timeouts > 0 {
        classes.push(ErrorClassCount {
            class: "pool_timeout".to_owned(),
            count: timeouts.min(calls),
        });
    }
    classes.retain(|c| c.count > 0);
    classes.sort_by(|a, b| a.class.cmp(&b.class));
    stats.error_classes = classes;
    stats.errors = failed;
    stats.rows = profile.rows * (calls - failed);
    stats
}

/// The instance's pool ("main", 3 connections) over a window.
fn pool_window(rng: &mut StdRng, busy: f64, incident: bool, acquires: u64, timeouts: u64) -> PoolStats {
    let peak_in_use = if incident {
        3
    } else {
        (busy * 3.4).round().clamp(1.0, 3.0) as u32
    };
    let waiting = if incident {
        4
    } else {
        u32::from(busy > 0.85) * rng.random_range(1..3)
    };
    let mut acquire_wait = LatencyHistogram::new();
    let mut hold_time = LatencyHistogram::new();
    let wait_us = if incident {
        400_000
    } else {
        (40.0 * busy * busy) as u64 + 5
    };
    acquire_wait.record_n(wait_us, acquires.saturating_sub(timeouts) * 9 / 10);
    acquire_wait.record_n(wait_us * 20, acquires.saturating_sub(timeouts) / 10);
    acquire_wait.record_n(750_000, timeouts);
    hold_time.record_n(if incident { 1_200 } else { 300 }, acquires * 95 / 100);
    hold_time.record_n(180_000, acquires * 5 / 100);
    PoolStats {
        pool: "main".to_owned(),
        db_system: DbSystem::Sqlite,
        max_size: 3,
        min_idle: 0,
        size: Gauge { last: 3, peak: 3 },
        idle: Gauge {
            last: 3 - peak_in_use.min(2),
            peak: 3,
        },
        in_use: Gauge {
            last: peak_in_use.min(2),
            peak: peak_in_use,
        },
        waiting: Gauge {
            last: if incident { 2 } else { 0 },
            peak: waiting,
        },
        acquires,
        releases: acquires - timeouts,
        timeouts,
        errors: 0,
        connections_created: 0,
        connections_closed: 0,
        acquire_wait,
        hold_time,
        leaks: 0,
        leak_threshold_ms: 2_000,
        leak_samples: Vec::new(),
    }
}

/// Health pings every 5 s over a window, all answered.
fn health_window(rng: &mut StdRng, start_ms: i64) -> HealthCheckStats {
    let checks = (WINDOW_MS / 5_000) as u64;
    let mut latency = LatencyHistogram::new();
    for _ in 0..checks {
        latency.record(rng.random_range(60..400));
    }
    HealthCheckStats {
        pool: "main".to_owned(),
        checks,
        failures: 0,
        latency,
        last_check_ms: start_ms + WINDOW_MS - 1_000,
        last_ok: true,
        last_error: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::CHECKOUT_MIX;

    #[test]
    fn windows_are_consistent_and_the_same_whenever_built() {
        let instance = Instance {
            service: "checkout",
            number: 1,
            host: "host",
            mix: CHECKOUT_MIX,
        };
        let statements = statements(CHECKOUT_MIX);
        let start = 1_800_000_000_000 - 1_800_000_000_000 % WINDOW_MS;
        let batch = batch(
            &instance,
            &statements,
            7,
            start,
            start + HISTORY.as_millis() as i64,
            true,
        );
        assert_eq!(
            batch,
            super::batch(
                &instance,
                &statements,
                7,
                start,
                start + HISTORY.as_millis() as i64,
                true
            )
        );
        assert_eq!(batch.texts.len(), statements.len());
        for stats in &batch.queries {
            assert_eq!(stats.latency.count(), stats.calls, "every execution in the histogram");
            assert!(stats.min_us <= stats.max_us && stats.errors <= stats.calls);
            let classes: u64 = stats.error_classes.iter().map(|c| c.count).sum();
            assert_eq!(classes, stats.errors, "error classes add up to the errors");
            let mean = stats.sum_us as f64 / stats.calls as f64;
            assert!((stats.min_us as f64..=stats.max_us as f64).contains(&mean));
        }
        let duplicate = &batch.queries[statements
            .iter()
            .position(|(s, ..)| matches!(s, Statement::DuplicateUser))
            .unwrap()];
        assert_eq!(duplicate.errors, duplicate.calls, "a duplicate insert always fails");
        assert_eq!(
            batch.pools[0].acquires,
            batch.queries.iter().map(|q| q.calls).sum::<u64>()
        );
    }

    #[test]
    fn load_follows_the_day() {
        let at = |hour: i64| load(hour * 3_600_000);
        assert!((at(15) - 1.0).abs() < 1e-9);
        assert!((at(3) - 0.2).abs() < 1e-9);
        assert!(at(9) > at(3) && at(9) < at(15));
    }
}
