//! Measuring what a rule looks at, from the stored windows of its window:
//! one value per series (service, fingerprint, pool, instance).
//!
//! Percentiles come from histograms merged over every window and instance in
//! range — never from an average of percentiles.

use querypulse_domain::histogram::bucket_bounds;
use querypulse_domain::{LatencyHistogram, QueryStats};

use super::rules::{Labels, Rule, RuleKind};
use querypulse_store::{Store, StoreError};

/// One measured series.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Which series (`service`, `fingerprint`, `pool`, `instance`, `host`).
    pub labels: Labels,
    /// The measured value, in the unit of the rule's kind.
    pub value: f64,
}

fn labels<const N: usize>(pairs: [(&str, &str); N]) -> Labels {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

/// Measures `rule` over `[now_ms - window, now_ms)`. Blocking (reads the
/// store).
pub fn measure(store: &Store, rule: &Rule, now_ms: i64) -> Result<Vec<Sample>, StoreError> {
    let from = now_ms - i64::try_from(rule.window.as_millis()).unwrap_or(i64::MAX / 2);
    match rule.kind {
        RuleKind::QueryLatency | RuleKind::QueryErrorRate | RuleKind::SlowQueryCount => {
            query_samples(store, rule, from, now_ms)
        }
        RuleKind::PoolUtilization
        | RuleKind::PoolAcquireWait
        | RuleKind::PoolTimeouts
        | RuleKind::HealthCheckFailures => pool_samples(store, rule, from, now_ms),
        RuleKind::AgentSilent => Ok(silence_samples(store, rule, now_ms)),
    }
}

fn query_samples(store: &Store, rule: &Rule, from: i64, to: i64) -> Result<Vec<Sample>, StoreError> {
    let mut out = Vec::new();
    for (service, id, ..) in store.services() {
        if rule.scope.service.as_ref().is_some_and(|s| *s != service) {
            continue;
        }
        let (stats, fingerprint) = match rule.scope.fingerprint {
            Some(fp) => (store.query(id, fp, from, to)?, fp.to_string()),
            None => (store.service_stats(id, from, to)?, String::new()),
        };
        let Some(stats) = stats.filter(|s| s.calls > 0) else {
            continue;
        };
        let value = match rule.kind {
            RuleKind::QueryLatency => latency_ms(&stats, rule.percentile.unwrap_or(99.0)),
            RuleKind::QueryErrorRate => {
                if stats.calls < rule.min_calls.unwrap_or(1) {
                    continue;
                }
                stats.errors as f64 / stats.calls as f64
            }
            _ => slower_than(&stats.latency, rule.slow_ms.unwrap_or(1_000.0)) as f64,
        };
        let mut l = labels([("service", service.as_str())]);
        if !fingerprint.is_empty() {
            l.insert("fingerprint".into(), fingerprint);
        }
        out.push(Sample { labels: l, value });
    }
    Ok(out)
}

/// A percentile of the merged histogram in ms, within the exactly known
/// extremes.
fn latency_ms(stats: &QueryStats, percentile: f64) -> f64 {
    stats
        .latency
        .quantile_us(percentile / 100.0)
        .map(|us| us.clamp(stats.min_us as f64, stats.max_us as f64) / 1_000.0)
        .unwrap_or(0.0)
}

/// Executions at or above `slow_ms`, to the histogram's precision (the
/// bucket holding `slow_ms` counts as slow).
fn slower_than(histogram: &LatencyHistogram, slow_ms: f64) -> u64 {
    let slow_us = (slow_ms * 1_000.0) as u64;
    histogram
        .indexed_buckets()
        .iter()
        .filter(|(index, _)| bucket_bounds(*index).1 >= slow_us)
        .map(|(_, count)| *count)
        .sum()
}

fn pool_samples(store: &Store, rule: &Rule, from: i64, to: i64) -> Result<Vec<Sample>, StoreError> {
    let scope = &rule.scope;
    let mut out = Vec::new();
    for pool in store.pools(from, to)? {
        if scope.service.as_ref().is_some_and(|s| *s != pool.service)
            || scope.instance.as_ref().is_some_and(|i| *i != pool.instance_id)
            || scope.pool.as_ref().is_some_and(|p| *p != pool.pool)
        {
            continue;
        }
        let stats = &pool.stats;
        let value = match rule.kind {
            RuleKind::PoolUtilization if stats.max_size > 0 => stats.peak_utilization(),
            RuleKind::PoolAcquireWait => stats
                .acquire_wait
                .quantile_us(rule.percentile.unwrap_or(99.0) / 100.0)
                .map_or(0.0, |us| us / 1_000.0),
            RuleKind::PoolTimeouts => stats.timeouts as f64,
            RuleKind::HealthCheckFailures => match &pool.health {
                Some(health) => health.failures as f64,
                None => continue,
            },
            _ => continue,
        };
        out.push(Sample {
            labels: labels([
                ("service", pool.service.as_str()),
                ("instance", pool.instance_id.as_str()),
                ("pool", pool.pool.as_str()),
            ]),
            value,
        });
    }
    Ok(out)
}

/// Intervals since each instance last reported. Instances silent longer than
/// `forget_after`, and instances replaced by a newer process of the same
/// service on the same host (a restart), are left out.
fn silence_samples(store: &Store, rule: &Rule, now_ms: i64) -> Vec<Sample> {
    let forget_ms = rule
        .forget_after
        .map_or(i64::MAX, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let instances = store.instances();
    let mut out = Vec::new();
    for instance in instances.iter().filter(|i| i.batches > 0) {
        if rule.scope.service.as_ref().is_some_and(|s| *s != instance.service)
            || rule.scope.instance.as_ref().is_some_and(|i| *i != instance.instance_id)
        {
            continue;
        }
        let silent_ms = (now_ms - instance.last_seen_ms).max(0);
        if silent_ms > forget_ms {
            continue;
        }
        let replaced = instances.iter().any(|other| {
            other.instance_id != instance.instance_id
                && other.service == instance.service
                && other.host == instance.host
                && other.started_at_ms > instance.started_at_ms
                && other.last_seen_ms > instance.last_seen_ms
        });
        if replaced {
            continue;
        }
        let interval_ms = i64::from(instance.interval_ms.max(1_000));
        out.push(Sample {
            labels: labels([
                ("service", instance.service.as_str()),
                ("instance", instance.instance_id.as_str()),
                ("host", instance.host.as_str()),
            ]),
            value: silent_ms as f64 / interval_ms as f64,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use querypulse_domain::{Batch, Fingerprint, FingerprintText, Gauge, HealthCheckStats, Hello, PoolStats, Window};
    use serde_json::json;

    use super::*;
    use crate::rules::RuleInput;
    use querypulse_domain::Clock;
    use querypulse_store::Retention;
    use querypulse_store::{BatchRequest, Limits, StoreWriter};

    /// 2026-11-27T10:00:00Z.
    const NOW: i64 = 1_795_773_600_000;
    const TEXT: &str = "select * from orders where id = ?";

    fn rule(value: serde_json::Value) -> Rule {
        serde_json::from_value::<RuleInput>(value)
            .unwrap()
            .validate(|_| true)
            .unwrap()
    }

    fn request(instance: &str, started_at_ms: i64, batch: Batch) -> BatchRequest {
        BatchRequest {
            hello: Arc::new(Hello {
                service: "orders".into(),
                instance_id: instance.into(),
                host: "web-1".into(),
                started_at_ms,
                interval_ms: 10_000,
                ..Hello::default()
            }),
            batch,
            texts: vec![FingerprintText {
                fingerprint: Fingerprint::of_normalized(TEXT),
                text: TEXT.into(),
            }],
        }
    }

    /// Two instances of `orders`: 100 executions (4 failed, 3 at 2 s), a
    /// pool at 9 of 10 with 2 timeouts and waits, 2 failed health checks.
    fn store_with_windows(dir: &std::path::Path) -> (Store, StoreWriter) {
        let clock = Clock::manual(NOW);
        let (store, mut writer) = Store::open(dir, Retention::default(), Limits::default(), clock.clone()).unwrap();
        let window = Window {
            start_ms: NOW,
            length_ms: 10_000,
        };
        let mut requests = Vec::new();
        for (i, instance) in ["a", "b"].into_iter().enumerate() {
            let mut batch = Batch::new(1, window);
            let mut stats = QueryStats::new(Fingerprint::of_normalized(TEXT));
            for n in 0..50u64 {
                let us = if i == 0 && n < 3 { 2_000_000 } else { 1_000 + n * 10 };
                stats.record(us, 1, (n < 2).then_some("40001"));
            }
            batch.queries.push(stats);
            let mut pool = PoolStats {
                pool: "main".into(),
                max_size: 10,
                in_use: Gauge {
                    last: 3,
                    peak: 9 - i as u32,
                },
                timeouts: 1,
                ..PoolStats::default()
            };
            pool.acquire_wait.record(250_000);
            batch.pools.push(pool);
            batch.health_checks.push(HealthCheckStats {
                pool: "main".into(),
                checks: 3,
                failures: 1,
                ..HealthCheckStats::default()
            });
            let request = request(instance, NOW - 60_000 + i as i64, batch);
            writer.register(&request.hello).unwrap();
            requests.push(request);
        }
        clock.set(NOW + 10_000);
        writer.write(requests).unwrap();
        (store, writer)
    }

    fn values(samples: &[Sample], label: &str) -> Vec<(String, f64)> {
        let mut out: Vec<(String, f64)> = samples
            .iter()
            .map(|s| (s.labels.get(label).cloned().unwrap_or_default(), s.value))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[test]
    fn every_kind_measures_the_merged_windows_of_its_series() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _writer) = store_with_windows(dir.path());
        let at = NOW + 20_000;
        let measure = |r: serde_json::Value| measure(&store, &rule(r), at).unwrap();

        let p99 = measure(json!({"name": "p", "kind": "query_latency", "threshold": 1, "percentile": 99}));
        assert_eq!(values(&p99, "service").len(), 1, "one series for the whole service");
        let p99 = p99[0].value;
        assert!(
            (1_980.0..=2_000.0).contains(&p99),
            "3 of 100 executions took 2 s: p99 {p99} ms"
        );
        let p95 = measure(json!({"name": "p", "kind": "query_latency", "threshold": 1, "percentile": 95}))[0].value;
        assert!(p95 < 2.0, "p95 is among the fast executions: {p95} ms");

        let errors = measure(json!({"name": "e", "kind": "query_error_rate", "threshold": 0.01}));
        assert_eq!(errors[0].value, 0.04);
        let too_few = measure(json!({"name": "e", "kind": "query_error_rate", "threshold": 0.01, "min_calls": 101}));
        assert!(too_few.is_empty(), "fewer calls than min_calls: not judged");
        let slow = measure(json!({"name": "s", "kind": "slow_query_count", "threshold": 1, "slow_ms": 1000}));
        assert_eq!(slow[0].value, 3.0);
        let by_fingerprint = measure(
            json!({"name": "f", "kind": "query_latency", "threshold": 1, "percentile": 50,
            "scope": {"fingerprint": Fingerprint::of_normalized(TEXT).to_string()}}),
        );
        assert_eq!(
            by_fingerprint[0].labels["fingerprint"],
            Fingerprint::of_normalized(TEXT).to_string()
        );

        let utilization = measure(json!({"name": "u", "kind": "pool_utilization", "threshold": 0.9}));
        assert_eq!(
            values(&utilization, "instance"),
            [("a".to_owned(), 0.9), ("b".to_owned(), 0.8)]
        );
        assert_eq!(utilization[0].labels["pool"], "main");
        let wait = measure(
            json!({"name": "w", "kind": "pool_acquire_wait", "threshold": 100, "percentile": 99,
            "scope": {"instance": "a"}}),
        );
        assert_eq!(wait.len(), 1);
        assert!((249.0..=251.0).contains(&wait[0].value), "{}", wait[0].value);
        let timeouts =
            measure(json!({"name": "t", "kind": "pool_timeouts", "threshold": 1, "scope": {"pool": "main"}}));
        assert_eq!(
            values(&timeouts, "instance"),
            [("a".to_owned(), 1.0), ("b".to_owned(), 1.0)]
        );
        let health = measure(json!({"name": "h", "kind": "health_check_failures", "threshold": 1}));
        assert_eq!(health.iter().map(|s| s.value).sum::<f64>(), 2.0);
        let nothing = measure(json!({"name": "n", "kind": "pool_timeouts", "threshold": 1, "scope": {"service": "x"}}));
        assert!(nothing.is_empty());
        let later = super::measure(
            &store,
            &rule(json!({"name": "u", "kind": "pool_utilization", "threshold": 0.9})),
            NOW + 120_000,
        );
        assert!(
            later.unwrap().is_empty(),
            "windows older than the rule's window are not read"
        );
    }

    #[test]
    fn silent_instances_are_named_unless_replaced_on_their_host_or_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut writer) = store_with_windows(dir.path());
        let silent = rule(json!({"name": "s", "kind": "agent_silent", "threshold": 3}));
        // Both last reported at NOW + 10 s, every 10 s.
        let samples = measure(&store, &silent, NOW + 45_000).unwrap();
        assert_eq!(
            values(&samples, "instance"),
            [("a".to_owned(), 3.5), ("b".to_owned(), 3.5)]
        );
        // `b` started after `a` on the same host and reports on: `a` was
        // restarted into `b`, it is not missing.
        let later = request(
            "b",
            NOW - 59_999,
            Batch::new(
                2,
                Window {
                    start_ms: NOW + 10_000,
                    length_ms: 10_000,
                },
            ),
        );
        store.clock().set(NOW + 20_000);
        writer.write(vec![later]).unwrap();
        let samples = measure(&store, &silent, NOW + 45_000).unwrap();
        assert_eq!(values(&samples, "instance"), [("b".to_owned(), 2.5)]);
        assert_eq!(samples[0].labels["host"], "web-1");
        let forgotten = measure(&store, &silent, NOW + 20_000 + 3_600_001).unwrap();
        assert!(forgotten.is_empty(), "silent longer than forget_after");
    }

    #[test]
    fn slow_executions_are_counted_from_the_histogram() {
        let mut h = LatencyHistogram::new();
        for us in [10_000, 900_000, 1_000_000, 1_500_000, 30_000_000] {
            h.record(us);
        }
        assert_eq!(slower_than(&h, 1_000.0), 3);
        assert_eq!(slower_than(&h, 0.001), 5);
    }
}
