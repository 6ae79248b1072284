//! Measuring what a rule looks at, from the stored windows of its window:
//! one value per series (service, fingerprint, pool, instance).
//!
//! Percentiles come from histograms merged over every window and instance in
//! range — never from an average of percentiles.

use querypulse_proto::histogram::bucket_bounds;
use querypulse_proto::{LatencyHistogram, QueryStats};

use super::rules::{Labels, Rule, RuleKind};
use crate::store::{Store, StoreError};

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
            None => {
                let mut merged: Option<QueryStats> = None;
                for stats in store.query_stats(id, from, to)? {
                    match &mut merged {
                        Some(m) => m.merge(&stats),
                        None => merged = Some(stats),
                    }
                }
                (merged, String::new())
            }
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
    use super::*;

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
