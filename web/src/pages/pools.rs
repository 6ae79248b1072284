//! `/pools` and `/pools/{service}/{instance}/{pool}`: every connection pool
//! with its status light, utilization bar, size / active / idle / waiting,
//! acquire waits, checkouts, timeouts and errors with rates, peaks, health
//! checks, the trend over 5-minute windows, and charts over time.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;

use super::overview::{NOW_MS, UtilizationBar, now_by_pool, pool_status};
use super::{Layout, PageError, Request, aligned, html, pool_href, read};
use crate::chart::{self, BLUE, GREEN, GREY, ORANGE, RED, Series};
use crate::format::{ago, count, duration_ms, percent, rate, timestamp};
use crate::source::{PoolPoint, PoolSummary, Source, SourceError};
use crate::status::Assessment;
use crate::trend::{Trend, latest_window};
use crate::{Dashboard, TimeRange};
use querypulse_domain::source::step_for;

/// Trend windows: 5 minutes each, the latest against the ones before it.
const TREND_STEP_MS: i64 = 5 * 60_000;
const TREND_WINDOWS: i64 = 6;
/// Points per chart, about.
const CHART_POINTS: i64 = 120;

/// One pool as a row (list) or a header (detail).
pub(crate) struct PoolView {
    href: String,
    name: String,
    service: String,
    instance: String,
    db_system: &'static str,
    status: Assessment,
    bar: UtilizationBar,
    utilization: String,
    peak_utilization: String,
    max_size: u32,
    min_idle: u32,
    size: (u32, u32),
    active: (u32, u32),
    idle: (u32, u32),
    waiting: (u32, u32),
    wait_p95: String,
    wait_p99: String,
    hold_p95: String,
    checkouts: String,
    checkout_rate: String,
    timeouts: String,
    timeout_rate: String,
    errors: String,
    error_rate: String,
    created: String,
    closed: String,
    leaks: String,
    health: Option<HealthView>,
    utilization_trend: Trend,
    wait_trend: Trend,
    last_window: String,
}

pub(crate) struct HealthView {
    success: String,
    checks: String,
    failures: String,
    p50: String,
    p95: String,
    last: String,
    last_ok: bool,
    last_error: String,
}

/// The 5-minute windows ending at the range's end, oldest first.
fn trend_points(source: &dyn Source, p: &PoolSummary, range: TimeRange) -> Result<Vec<PoolPoint>, SourceError> {
    let to = range.to_ms;
    let from = (to - TREND_WINDOWS * TREND_STEP_MS).max(range.from_ms);
    let window = aligned(
        TimeRange {
            from_ms: from,
            to_ms: to,
        },
        TREND_STEP_MS,
    );
    Ok(source
        .pool_series(&p.service, &p.instance_id, &p.pool, window, TREND_STEP_MS)?
        .map(|s| s.points)
        .unwrap_or_default())
}

fn pool_view(
    view: &crate::view::View,
    p: &PoolSummary,
    status: Assessment,
    trend: &[PoolPoint],
    length_ms: i64,
    now: i64,
) -> PoolView {
    let utilizations: Vec<f64> = trend.iter().map(|w| w.utilization).collect();
    let waits: Vec<f64> = trend.iter().map(|w| w.acquire_wait_p95_ms).collect();
    PoolView {
        href: pool_href(view, &p.service, &p.instance_id, &p.pool),
        name: p.pool.clone(),
        service: p.service.clone(),
        instance: p.instance_id.clone(),
        db_system: p.db_system,
        status,
        bar: UtilizationBar::new(p),
        utilization: percent(p.utilization),
        peak_utilization: percent(p.peak_utilization),
        max_size: p.max_size,
        min_idle: p.min_idle,
        size: (p.size.last, p.size.peak),
        active: (p.in_use.last, p.in_use.peak),
        idle: (p.idle.last, p.idle.peak),
        waiting: (p.waiting.last, p.waiting.peak),
        wait_p95: duration_ms(p.acquire_wait_p95_ms),
        wait_p99: duration_ms(p.acquire_wait_p99_ms),
        hold_p95: duration_ms(p.hold_time_p95_ms),
        checkouts: count(p.acquires),
        checkout_rate: rate(p.acquires, length_ms),
        timeouts: count(p.timeouts),
        timeout_rate: rate(p.timeouts, length_ms),
        errors: count(p.errors),
        error_rate: rate(p.errors, length_ms),
        created: count(p.connections_created),
        closed: count(p.connections_closed),
        leaks: count(p.leaks),
        health: p.health.as_ref().map(|h| HealthView {
            success: percent(h.success_rate),
            checks: count(h.checks),
            failures: count(h.failures),
            p50: duration_ms(h.latency_p50_ms),
            p95: duration_ms(h.latency_p95_ms),
            last: ago(now, h.last_check_ms),
            last_ok: h.last_ok,
            last_error: h.last_error.clone(),
        }),
        utilization_trend: latest_window(&utilizations, true),
        wait_trend: latest_window(&waits, true),
        last_window: ago(now, p.last_window_ms),
    }
}

#[derive(Template)]
#[template(path = "pools.html")]
struct PoolsPage {
    layout: Layout,
    pools: Vec<PoolView>,
}

pub(crate) async fn page(State(dashboard): State<Dashboard>, request: Request) -> Result<Response, PageError> {
    let view = request.view.clone();
    let range = view.range.for_summary();
    let now_range = TimeRange::last(request.now, NOW_MS);
    let source = dashboard.source.clone();
    let service = view.service.clone();
    let (services, pools) = read(move || {
        let mut pools = source.pools(range)?;
        pools.retain(|p| service.as_ref().is_none_or(|s| *s == p.service));
        pools.sort_by(|a, b| {
            b.peak_utilization
                .total_cmp(&a.peak_utilization)
                .then_with(|| (&a.service, &a.instance_id, &a.pool).cmp(&(&b.service, &b.instance_id, &b.pool)))
        });
        let now = now_by_pool(source.pools(now_range)?);
        let mut out = Vec::with_capacity(pools.len());
        for p in pools {
            let trend = trend_points(source.as_ref(), &p, range)?;
            let status = pool_status(&now, &p);
            out.push((p, status, trend));
        }
        Ok((source.services()?, out))
    })
    .await?;
    let pools = pools
        .iter()
        .map(|(p, status, trend)| pool_view(&view, p, status.clone(), trend, range.length_ms(), request.now))
        .collect();
    let layout = request.layout("Pools", "pools", "/pools", &services);
    html(PoolsPage { layout, pools })
}

struct WindowRow {
    start: String,
    utilization: String,
    waiting: u32,
    wait_p95: String,
    acquires: String,
    timeouts: String,
    errors: String,
    health: String,
}

#[derive(Template)]
#[template(path = "pool.html")]
struct PoolPage {
    layout: Layout,
    pool: Option<PoolView>,
    name: String,
    service: String,
    instance: String,
    connections_chart: String,
    wait_chart: String,
    checkouts_chart: String,
    health_chart: String,
    step: String,
    windows: Vec<WindowRow>,
}

pub(crate) async fn detail(
    State(dashboard): State<Dashboard>,
    request: Request,
    Path((service, instance, pool)): Path<(String, String, String)>,
) -> Result<Response, PageError> {
    let view = request.view.clone();
    let range = view.range.for_summary();
    let step = step_for(range.length_ms(), CHART_POINTS);
    let chart_range = aligned(range, step);
    let now_range = TimeRange::last(request.now, NOW_MS);
    let source = dashboard.source.clone();
    let (s, i, p) = (service.clone(), instance.clone(), pool.clone());
    let (services, series, summary) = read(move || {
        let Some(series) = source.pool_series(&s, &i, &p, chart_range, step)? else {
            return Ok((Vec::new(), None, None));
        };
        let find = |pools: Vec<PoolSummary>| {
            pools
                .into_iter()
                .find(|x| x.service == s && x.instance_id == i && x.pool == p)
        };
        let summary = match find(source.pools(range)?) {
            Some(summary) => {
                let now = now_by_pool(source.pools(now_range)?);
                let status = pool_status(&now, &summary);
                let trend = trend_points(source.as_ref(), &summary, range)?;
                Some((summary, status, trend))
            }
            None => None,
        };
        Ok((source.services()?, Some(series), summary))
    })
    .await?;
    let Some(series) = series else {
        return Err(PageError::NotFound(format!(
            "No pool {pool:?} on instance {instance:?} of service {service:?}. The pools page lists every pool."
        )));
    };
    let points = &series.points;
    let pick = |f: fn(&PoolPoint) -> f64| points.iter().map(|p| (p.start_ms, f(p))).collect::<Vec<_>>();
    let connections_chart = chart::lines(
        "connections over time",
        chart_range,
        step,
        &[
            Series::new("in use (peak)", BLUE, pick(|p| f64::from(p.in_use.peak))),
            Series::new("idle", GREEN, pick(|p| f64::from(p.idle.last))),
            Series::new("open", GREY, pick(|p| f64::from(p.size.peak))),
            Series::new("waiting (peak)", RED, pick(|p| f64::from(p.waiting.peak))),
        ],
        |v| format!("{v:.0}"),
    );
    let wait_chart = chart::lines(
        "acquire wait over time",
        chart_range,
        step,
        &[
            Series::new("acquire wait p95", BLUE, pick(|p| p.acquire_wait_p95_ms)),
            Series::new("p99", ORANGE, pick(|p| p.acquire_wait_p99_ms)),
        ],
        duration_ms,
    );
    let checkouts_chart = chart::bars(
        "checkouts, timeouts and errors over time",
        chart_range,
        step,
        &[
            Series::new("checkouts", BLUE, pick(|p| p.acquires as f64)),
            Series::new("timeouts", RED, pick(|p| p.timeouts as f64)),
            Series::new("errors", ORANGE, pick(|p| p.errors as f64)),
        ],
        |v| count(v.round() as u64),
    );
    let health_chart = chart::lines(
        "health-check latency over time",
        chart_range,
        step,
        &[Series::new(
            "health check p95",
            GREEN,
            points
                .iter()
                .filter(|p| p.health_checks > 0)
                .map(|p| (p.start_ms, p.health_latency_p95_ms))
                .collect(),
        )],
        duration_ms,
    );
    let windows = summary
        .as_ref()
        .map(|(_, _, trend)| {
            trend
                .iter()
                .rev()
                .map(|w| WindowRow {
                    start: timestamp(w.start_ms),
                    utilization: percent(w.utilization),
                    waiting: w.waiting.peak,
                    wait_p95: duration_ms(w.acquire_wait_p95_ms),
                    acquires: count(w.acquires),
                    timeouts: count(w.timeouts),
                    errors: count(w.errors),
                    health: if w.health_checks == 0 {
                        "–".to_owned()
                    } else {
                        percent((w.health_checks - w.health_failures) as f64 / w.health_checks as f64)
                    },
                })
                .collect()
        })
        .unwrap_or_default();
    let pool_view =
        summary.map(|(p, status, trend)| pool_view(&view, &p, status, &trend, range.length_ms(), request.now));
    let path = format!(
        "/pools/{}/{}/{}",
        crate::view::encode(&service),
        crate::view::encode(&instance),
        crate::view::encode(&pool)
    );
    let layout = request.layout(&format!("Pool {pool}"), "pools", &path, &services);
    html(PoolPage {
        layout,
        pool: pool_view,
        name: pool,
        service,
        instance,
        connections_chart,
        wait_chart,
        checkouts_chart,
        health_chart,
        step: crate::format::span((step / 1_000) as u64),
        windows,
    })
}
