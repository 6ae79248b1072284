//! `/`: what an on-call engineer opens first — every service's status, firing
//! alerts, the top queries by total time, the pools closest to running dry,
//! and the agents that went silent or are losing data.

use std::collections::{BTreeMap, HashMap};

use askama::Template;
use axum::extract::State;
use axum::response::Response;

use super::{Layout, PageError, Request, html, pool_href, query_href, read};
use crate::format::{ago, count, duration_ms, percent, plural};
use crate::source::{AlertState, PoolSummary, QuerySummary};
use crate::status::{self, Assessment};
use crate::{Dashboard, TimeRange};

/// Queries listed.
const TOP_QUERIES: usize = 10;
/// Pools listed.
const TOP_POOLS: usize = 5;
/// A pool's status light reflects this much of its latest history.
pub(crate) const NOW_MS: i64 = 5 * 60_000;

pub(crate) struct ServiceRow {
    pub name: String,
    pub href: String,
    pub status: Assessment,
    pub instances: String,
    pub last_seen: String,
    pub calls: String,
    pub errors: String,
    pub failing: bool,
    pub total: String,
}

pub(crate) struct QueryRow {
    pub href: String,
    pub text: String,
    pub service: String,
    pub calls: String,
    pub total: String,
    pub mean: String,
    pub p95: String,
    pub p99: String,
    pub errors: String,
    pub failing: bool,
}

impl QueryRow {
    pub fn new(view: &crate::view::View, q: &QuerySummary) -> QueryRow {
        QueryRow {
            href: query_href(view, &q.fingerprint),
            text: q.text.clone(),
            service: q.service.clone(),
            calls: count(q.calls),
            total: duration_ms(q.total_ms),
            mean: duration_ms(q.mean_ms),
            p95: duration_ms(q.p95_ms),
            p99: duration_ms(q.p99_ms),
            errors: count(q.errors),
            failing: q.errors > 0,
        }
    }
}

pub(crate) struct PoolRow {
    pub href: String,
    pub name: String,
    pub service: String,
    pub instance: String,
    pub status: Assessment,
    pub in_use: String,
    pub bar: UtilizationBar,
    pub waiting: String,
    pub wait_p99: String,
    pub timeouts: String,
}

/// A utilization bar: width (now) and a mark at the peak, in percent.
#[derive(Debug, Clone)]
pub(crate) struct UtilizationBar {
    pub now: String,
    pub peak: String,
    pub class: &'static str,
    pub title: String,
}

impl UtilizationBar {
    pub fn new(p: &PoolSummary) -> UtilizationBar {
        let pct = |x: f64| format!("{:.1}", (x * 100.0).clamp(0.0, 100.0));
        UtilizationBar {
            now: pct(p.utilization),
            peak: pct(p.peak_utilization),
            class: if p.utilization >= 1.0 {
                "full"
            } else if p.peak_utilization >= status::EXHAUSTION {
                "hot"
            } else {
                ""
            },
            title: format!(
                "{} in use now, peak {}",
                percent(p.utilization),
                percent(p.peak_utilization)
            ),
        }
    }
}

pub(crate) struct AgentRow {
    pub service: String,
    pub instance: String,
    pub host: String,
    pub last_seen: String,
    pub problem: String,
}

pub(crate) struct AlertRow {
    pub rule: String,
    pub severity: &'static str,
    pub summary: String,
    pub since: String,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview {
    layout: Layout,
    cards: Vec<(String, String, String)>,
    services: Vec<ServiceRow>,
    alerts: Option<Vec<AlertRow>>,
    alerts_href: String,
    queries: Vec<QueryRow>,
    queries_href: String,
    pools: Vec<PoolRow>,
    pools_href: String,
    agents: Vec<AgentRow>,
    agents_total: usize,
}

/// Pool summaries of the latest few minutes, keyed by (instance, pool).
pub(crate) fn now_by_pool(now: Vec<PoolSummary>) -> HashMap<(String, String), PoolSummary> {
    now.into_iter()
        .map(|p| ((p.instance_id.clone(), p.pool.clone()), p))
        .collect()
}

pub(crate) fn pool_status(now: &HashMap<(String, String), PoolSummary>, p: &PoolSummary) -> Assessment {
    status::pool(now.get(&(p.instance_id.clone(), p.pool.clone())).unwrap_or(p))
}

pub(crate) async fn page(State(dashboard): State<Dashboard>, request: Request) -> Result<Response, PageError> {
    let view = request.view.clone();
    let range = view.range.for_summary();
    let now_range = TimeRange::last(request.now, NOW_MS);
    let queries = super::summaries(&dashboard, &view).await?;
    let pools = super::pool_summaries(&dashboard, &view).await?;
    let source = dashboard.source.clone();
    let (services, pools_now, agents, alerts) = read(move || {
        Ok((
            source.services()?,
            source.pools(now_range)?,
            source.agents()?,
            source.alerts(range)?,
        ))
    })
    .await?;
    let computed = queries.computed.min(pools.computed);
    let (queries, pools) = (queries.value, pools.value);
    let in_view = |service: &str| view.service.as_deref().is_none_or(|s| s == service);
    let firing: Vec<_> = alerts
        .iter()
        .flatten()
        .filter(|a| a.state == AlertState::Firing)
        .cloned()
        .collect();

    let mut per_service: BTreeMap<&str, (u64, u64, f64)> = BTreeMap::new();
    for q in queries.iter() {
        let entry = per_service.entry(q.service.as_str()).or_default();
        entry.0 += q.calls;
        entry.1 += q.errors;
        entry.2 += q.total_ms;
    }
    let mut service_rows: Vec<ServiceRow> = services
        .iter()
        .filter(|s| in_view(&s.name))
        .map(|s| {
            let (calls, errors, total) = per_service.get(s.name.as_str()).copied().unwrap_or_default();
            let reporting = agents.iter().filter(|a| a.service == s.name && !a.silent).count();
            ServiceRow {
                name: s.name.clone(),
                href: view.href("/queries", &[("service", &s.name)]),
                status: status::service(&s.name, &pools_now, &agents, &firing),
                instances: format!("{reporting} of {}", s.instances),
                last_seen: ago(request.now, s.last_seen_ms),
                calls: count(calls),
                errors: count(errors),
                failing: errors > 0,
                total: duration_ms(total),
            }
        })
        .collect();
    service_rows.sort_by(|a, b| b.status.health.cmp(&a.status.health).then_with(|| a.name.cmp(&b.name)));

    let (calls, errors, total) = per_service
        .values()
        .fold((0, 0, 0.0), |(c, e, t), (c2, e2, t2)| (c + c2, e + e2, t + t2));
    let healthy = service_rows
        .iter()
        .filter(|s| s.status.health == status::Health::Healthy)
        .count();
    let cards = vec![
        (count(calls), "calls".to_owned(), view.label()),
        (
            count(errors),
            "errors".to_owned(),
            format!(
                "{} of calls",
                percent(if calls == 0 { 0.0 } else { errors as f64 / calls as f64 })
            ),
        ),
        (
            duration_ms(total),
            "time in queries".to_owned(),
            "all instances".to_owned(),
        ),
        (
            format!("{healthy} / {}", service_rows.len()),
            "services healthy".to_owned(),
            plural(pools.iter().filter(|p| in_view(&p.service)).count() as u64, "pool"),
        ),
    ];

    let mut top: Vec<&QuerySummary> = queries.iter().collect();
    top.sort_by(|a, b| {
        b.total_ms
            .total_cmp(&a.total_ms)
            .then_with(|| a.fingerprint.cmp(&b.fingerprint))
    });
    let query_rows = top.iter().take(TOP_QUERIES).map(|q| QueryRow::new(&view, q)).collect();

    let now_pools = now_by_pool(pools_now);
    let mut closest: Vec<&PoolSummary> = pools.iter().filter(|p| in_view(&p.service)).collect();
    closest.sort_by(|a, b| {
        b.peak_utilization
            .total_cmp(&a.peak_utilization)
            .then_with(|| b.waiting.peak.cmp(&a.waiting.peak))
    });
    let pool_rows = closest
        .into_iter()
        .take(TOP_POOLS)
        .map(|p| PoolRow {
            href: pool_href(&view, &p.service, &p.instance_id, &p.pool),
            name: p.pool.clone(),
            service: p.service.clone(),
            instance: p.instance_id.clone(),
            status: pool_status(&now_pools, p),
            in_use: format!("{} / {}", p.in_use.last, p.max_size),
            bar: UtilizationBar::new(p),
            waiting: format!("{} (peak {})", p.waiting.last, p.waiting.peak),
            wait_p99: duration_ms(p.acquire_wait_p99_ms),
            timeouts: count(p.timeouts),
        })
        .collect();

    let agents_total = agents.iter().filter(|a| in_view(&a.service)).count();
    let agent_rows = agents
        .iter()
        .filter(|a| in_view(&a.service))
        .filter_map(|a| {
            let drops = status::agent_drops(a);
            let problem = match (a.silent, drops) {
                (true, 0) => "silent".to_owned(),
                (true, n) => format!("silent; {} batches or records dropped", count(n)),
                (false, 0) => return None,
                (false, n) => format!("{} batches or records dropped", count(n)),
            };
            Some(AgentRow {
                service: a.service.clone(),
                instance: a.instance_id.clone(),
                host: a.host.clone(),
                last_seen: ago(request.now, a.last_seen_ms),
                problem,
            })
        })
        .collect();

    let alert_rows = alerts.map(|_| {
        firing
            .iter()
            .filter(|a| a.service.as_deref().is_none_or(in_view))
            .map(|a| AlertRow {
                rule: a.rule.clone(),
                severity: match a.severity {
                    crate::source::AlertSeverity::Critical => "critical",
                    crate::source::AlertSeverity::Warning => "degraded",
                    crate::source::AlertSeverity::Info => "healthy",
                },
                summary: a.summary.clone(),
                since: ago(request.now, a.started_ms),
            })
            .collect()
    });

    let mut layout = request.layout("Overview", "overview", "/", &services);
    layout.computed(computed);
    html(Overview {
        layout,
        cards,
        services: service_rows,
        alerts: alert_rows,
        alerts_href: view.href("/alerts", &[]),
        queries: query_rows,
        queries_href: view.href("/queries", &[]),
        pools: pool_rows,
        pools_href: view.href("/pools", &[]),
        agents: agent_rows,
        agents_total,
    })
}
