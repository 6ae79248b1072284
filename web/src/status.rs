//! Health at a glance: a status light for every pool and service, with the
//! reasons behind it.
//!
//! A service's status is the worst of its pools' (as of the last few
//! minutes), its agents' and its firing alerts'. Alerts come through
//! [`Source::alerts`](crate::Source::alerts): once the alert engine reports
//! them they count here without any change to this module.

use crate::format::{duration_ms, percent, plural};
use crate::source::{AgentSummary, AlertSeverity, AlertState, AlertSummary, PoolSummary};

/// Utilization from which a pool counts as close to exhaustion (the alert
/// engine's default threshold too).
pub(crate) const EXHAUSTION: f64 = 0.9;
/// Acquire wait (p99) from which a pool counts as slow to hand out connections.
pub(crate) const SLOW_ACQUIRE_MS: f64 = 100.0;

/// A status light.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Health {
    Healthy,
    Degraded,
    Critical,
}

impl Health {
    /// CSS class and the word shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Critical => "critical",
        }
    }
}

/// A status with what led to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Assessment {
    pub health: Health,
    pub reasons: Vec<String>,
}

impl Assessment {
    fn healthy() -> Assessment {
        Assessment {
            health: Health::Healthy,
            reasons: Vec::new(),
        }
    }

    fn raise(&mut self, health: Health, reason: String) {
        self.health = self.health.max(health);
        self.reasons.push(reason);
    }

    /// The light's class.
    pub fn class(&self) -> &'static str {
        self.health.as_str()
    }

    /// The reasons as one line, or "all good".
    pub fn summary(&self) -> String {
        if self.reasons.is_empty() {
            "no problems".to_owned()
        } else {
            self.reasons.join("; ")
        }
    }
}

/// A pool's state from a summary of its last few minutes.
pub(crate) fn pool(p: &PoolSummary) -> Assessment {
    let mut a = Assessment::healthy();
    if let Some(h) = &p.health
        && h.checks > 0
        && !h.last_ok
    {
        let error = if h.last_error.is_empty() {
            "failed"
        } else {
            &h.last_error
        };
        a.raise(Health::Critical, format!("last health check failed: {error}"));
    }
    if p.timeouts > 0 {
        a.raise(Health::Critical, plural(p.timeouts, "acquire timeout"));
    }
    if p.utilization >= EXHAUSTION && p.waiting.last > 0 {
        a.raise(
            Health::Critical,
            format!(
                "exhausted: {} of {} in use, {} waiting",
                p.in_use.last, p.max_size, p.waiting.last
            ),
        );
    } else if p.peak_utilization >= EXHAUSTION {
        a.raise(
            Health::Degraded,
            format!("in use peaked at {}", percent(p.peak_utilization)),
        );
    }
    if p.waiting.peak > 0 && p.waiting.last == 0 {
        a.raise(
            Health::Degraded,
            format!("up to {} waited", plural(u64::from(p.waiting.peak), "task")),
        );
    }
    if p.errors > 0 {
        a.raise(Health::Degraded, plural(p.errors, "acquire error"));
    }
    if let Some(h) = &p.health
        && h.failures > 0
        && h.last_ok
    {
        a.raise(
            Health::Degraded,
            format!("health checks {} ok", percent(h.success_rate)),
        );
    }
    if p.acquire_wait_p99_ms >= SLOW_ACQUIRE_MS {
        a.raise(
            Health::Degraded,
            format!("acquire wait p99 {}", duration_ms(p.acquire_wait_p99_ms)),
        );
    }
    a
}

/// A service's state: the worst of its pools (`pools_now`: summaries of the
/// last few minutes), its agents and its firing alerts.
pub(crate) fn service(
    name: &str,
    pools_now: &[PoolSummary],
    agents: &[AgentSummary],
    alerts: &[AlertSummary],
) -> Assessment {
    let mut a = Assessment::healthy();
    for alert in alerts
        .iter()
        .filter(|al| al.state == AlertState::Firing && al.service.as_deref() == Some(name))
    {
        let health = match alert.severity {
            AlertSeverity::Critical => Health::Critical,
            AlertSeverity::Warning => Health::Degraded,
            AlertSeverity::Info => Health::Healthy,
        };
        a.raise(health, format!("alert {} firing", alert.rule));
    }
    for p in pools_now.iter().filter(|p| p.service == name) {
        let pool = pool(p);
        if pool.health > Health::Healthy {
            a.raise(pool.health, format!("pool {}: {}", p.pool, pool.summary()));
        }
    }
    let mine: Vec<&AgentSummary> = agents.iter().filter(|i| i.service == name).collect();
    let silent = mine.iter().filter(|i| i.silent).count();
    if !mine.is_empty() && silent == mine.len() {
        a.raise(Health::Degraded, "no instance is reporting".to_owned());
    }
    a
}

/// Whether an agent is losing data (or the collector is refusing it).
pub(crate) fn agent_drops(agent: &AgentSummary) -> u64 {
    let c = &agent.counters;
    c.dropped_batches + c.rejected_batches + c.dropped_records
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{GaugeSummary, HealthSummary};

    fn pool_with(edit: impl FnOnce(&mut PoolSummary)) -> PoolSummary {
        let mut p = PoolSummary {
            service: "svc".into(),
            instance_id: "i".into(),
            pool: "main".into(),
            db_system: "sqlite",
            max_size: 10,
            min_idle: 0,
            size: GaugeSummary { last: 4, peak: 4 },
            idle: GaugeSummary { last: 2, peak: 4 },
            in_use: GaugeSummary { last: 2, peak: 3 },
            waiting: GaugeSummary { last: 0, peak: 0 },
            utilization: 0.2,
            peak_utilization: 0.3,
            acquires: 100,
            releases: 100,
            timeouts: 0,
            errors: 0,
            connections_created: 4,
            connections_closed: 0,
            acquire_wait_p95_ms: 0.1,
            acquire_wait_p99_ms: 0.2,
            hold_time_p95_ms: 3.0,
            leaks: 0,
            health: Some(HealthSummary {
                checks: 10,
                failures: 0,
                success_rate: 1.0,
                latency_p50_ms: 1.0,
                latency_p95_ms: 2.0,
                last_ok: true,
                last_error: String::new(),
                last_check_ms: 1,
            }),
            last_window_ms: 0,
        };
        edit(&mut p);
        p
    }

    #[test]
    fn pools_light_up_by_how_close_they_are_to_running_dry() {
        assert_eq!(pool(&pool_with(|_| {})).health, Health::Healthy);
        let peaked = pool(&pool_with(|p| p.peak_utilization = 0.95));
        assert_eq!(peaked.health, Health::Degraded);
        assert!(peaked.summary().contains("95"), "{}", peaked.summary());
        let dry = pool(&pool_with(|p| {
            p.utilization = 1.0;
            p.in_use.last = 10;
            p.waiting.last = 4;
        }));
        assert_eq!(dry.health, Health::Critical);
        assert!(dry.summary().contains("10 of 10 in use, 4 waiting"));
        let down = pool(&pool_with(|p| {
            let h = p.health.as_mut().unwrap();
            h.last_ok = false;
            h.last_error = "connection refused".into();
        }));
        assert_eq!(down.health, Health::Critical);
    }

    #[test]
    fn a_service_takes_the_worst_of_its_pools_and_firing_alerts() {
        let calm = pool_with(|_| {});
        let alert = AlertSummary {
            rule: "p99 too slow".into(),
            severity: AlertSeverity::Critical,
            state: AlertState::Firing,
            summary: String::new(),
            service: Some("svc".into()),
            fingerprint: None,
            pool: None,
            started_ms: 0,
            resolved_ms: None,
            labels: Default::default(),
        };
        assert_eq!(
            service("svc", std::slice::from_ref(&calm), &[], &[]).health,
            Health::Healthy
        );
        let s = service("svc", std::slice::from_ref(&calm), &[], std::slice::from_ref(&alert));
        assert_eq!(s.health, Health::Critical);
        assert!(s.summary().contains("p99 too slow"));
        let info = AlertSummary {
            severity: AlertSeverity::Info,
            ..alert.clone()
        };
        let s = service("svc", std::slice::from_ref(&calm), &[], &[info]);
        assert_eq!(s.health, Health::Healthy, "an info alert is listed but changes nothing");
        assert!(s.summary().contains("p99 too slow"));
        let resolved = AlertSummary {
            state: AlertState::Resolved,
            ..alert
        };
        assert_eq!(service("svc", &[calm], &[], &[resolved]).health, Health::Healthy);
        let busy = pool_with(|p| p.peak_utilization = 0.92);
        assert_eq!(
            service("other", std::slice::from_ref(&busy), &[], &[]).health,
            Health::Healthy
        );
        assert_eq!(service("svc", &[busy], &[], &[]).health, Health::Degraded);
    }
}
