//! `/queries/{fingerprint}`: one statement in depth — its text, latency
//! percentiles and calls/errors over time, the instances that ran it, its
//! error classes, recent slow samples, alerts about it, and how it compares
//! with the previous period.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use querypulse_domain::Fingerprint;

use super::{Layout, PageError, Request, aligned, html};
use crate::chart::{self, BLUE, GREY, ORANGE, RED, Series};
use crate::format::{ago, count, duration_ms, percent, timestamp};
use crate::source::{QuerySummary, SlowFilter};
use crate::trend::{Trend, compare};
use crate::{Dashboard, QueryFilter};
use querypulse_domain::source::step_for;

/// Points per chart, about.
const CHART_POINTS: i64 = 120;
/// Slow samples listed.
const SLOW_SAMPLES: usize = 20;

/// Totals of a fingerprint over a range, every service in the filter merged
/// (percentiles: the busiest service's, since histograms are per service).
#[derive(Debug, Clone, Default)]
struct Totals {
    calls: u64,
    errors: u64,
    total_ms: f64,
    mean_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
}

impl Totals {
    fn of(services: &[QuerySummary]) -> Totals {
        let calls: u64 = services.iter().map(|s| s.calls).sum();
        let total_ms: f64 = services.iter().map(|s| s.total_ms).sum();
        let busiest = services.iter().max_by_key(|s| s.calls);
        Totals {
            calls,
            errors: services.iter().map(|s| s.errors).sum(),
            total_ms,
            mean_ms: if calls == 0 { 0.0 } else { total_ms / calls as f64 },
            p95_ms: busiest.map_or(0.0, |s| s.p95_ms),
            p99_ms: busiest.map_or(0.0, |s| s.p99_ms),
        }
    }

    fn error_rate(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.errors as f64 / self.calls as f64
        }
    }
}

struct Compared {
    what: &'static str,
    now: String,
    before: String,
    trend: Trend,
}

struct ServiceRow {
    service: String,
    calls: String,
    errors: String,
    error_rate: String,
    total: String,
    mean: String,
    min: String,
    p50: String,
    p95: String,
    p99: String,
    max: String,
    stddev: String,
    rows: String,
}

struct InstanceRow {
    service: String,
    instance: String,
    host: String,
    calls: String,
    share: String,
    errors: String,
    total: String,
    mean: String,
    min: String,
    max: String,
}

struct SlowRow {
    at: String,
    ago: String,
    service: String,
    instance: String,
    duration: String,
    rows: String,
    error: String,
    pool: String,
    raw: String,
}

struct AlertRow {
    rule: String,
    state: String,
    summary: String,
    since: String,
}

struct RuleRow {
    name: String,
    href: String,
    kind: String,
    scope: String,
    severity: String,
    enabled: bool,
}

/// The query rules watching `fingerprint`: scoped to it, or to every
/// statement of a service that runs it (or of every service).
fn watching(
    rules: &[crate::alerting::RuleInfo],
    kinds: &[crate::alerting::RuleKindInfo],
    fingerprint: Fingerprint,
    ran_by: &[&str],
) -> Vec<RuleRow> {
    let per_statement: Vec<&str> = kinds
        .iter()
        .filter(|k| k.scope.iter().any(|s| s == "fingerprint"))
        .map(|k| k.name.as_str())
        .collect();
    rules
        .iter()
        .filter(|r| per_statement.contains(&r.kind.as_str()))
        .filter(|r| match &r.scope.fingerprint {
            Some(f) => *f == fingerprint.to_string(),
            None => r.scope.service.as_deref().is_none_or(|s| ran_by.contains(&s)),
        })
        .map(|r| RuleRow {
            name: r.name.clone(),
            href: format!("/alerts/rules?evaluate={}#evaluation", r.id),
            kind: r.kind.replace('_', " "),
            scope: match (&r.scope.fingerprint, &r.scope.service) {
                (Some(_), _) => "this statement".to_owned(),
                (None, Some(service)) => format!("every statement of {service}"),
                (None, None) => "every statement".to_owned(),
            },
            severity: r.severity.to_string(),
            enabled: r.enabled,
        })
        .collect()
}

#[derive(Template)]
#[template(path = "query.html")]
struct QueryPage {
    layout: Layout,
    fingerprint: String,
    text: String,
    compared: Vec<Compared>,
    previous_label: String,
    services: Vec<ServiceRow>,
    latency_chart: String,
    calls_chart: String,
    step: String,
    instances: Vec<InstanceRow>,
    error_classes: Vec<(String, String, String)>,
    slow: Vec<SlowRow>,
    slow_href: String,
    alerts: Option<Vec<AlertRow>>,
    rules: Option<Vec<RuleRow>>,
    api_href: String,
}

pub(crate) async fn page(
    State(dashboard): State<Dashboard>,
    request: Request,
    Path(fingerprint): Path<String>,
) -> Result<Response, PageError> {
    let fingerprint: Fingerprint = fingerprint
        .parse()
        .map_err(|e: querypulse_domain::fingerprint::ParseFingerprintError| PageError::BadRequest(e.to_string()))?;
    let view = request.view.clone();
    let range = view.range.for_summary();
    let previous = range.previous();
    let step = step_for(range.length_ms(), CHART_POINTS);
    let chart_range = aligned(range, step);
    let source = dashboard.source.clone();
    let service = view.service.clone();
    let key = format!("detail|{fingerprint}|{}", view.cache_key());
    let bundle = dashboard
        .cache
        .get(key, move || {
            let filter = QueryFilter {
                service: service.clone(),
                range,
            };
            let Some(detail) = source.query_detail(fingerprint, &filter)? else {
                return Ok((Vec::new(), None, None, None, Vec::new(), None));
            };
            let before = source.query_detail(
                fingerprint,
                &QueryFilter {
                    service: service.clone(),
                    range: previous,
                },
            )?;
            let series = source.query_series(
                fingerprint,
                &QueryFilter {
                    service: service.clone(),
                    range: chart_range,
                },
                step,
            )?;
            let slow = source.slow_queries(&SlowFilter {
                service: service.clone(),
                fingerprint: Some(fingerprint),
                range,
                limit: SLOW_SAMPLES,
            })?;
            Ok((
                source.services()?,
                Some(detail),
                before,
                series,
                slow,
                source.alerts(range)?,
            ))
        })
        .await?;
    let computed = bundle.computed;
    let (services, detail, before, series, slow, alerts) = (*bundle.value).clone();
    let Some(detail) = detail else {
        return Err(PageError::NotFound(format!(
            "No statement with fingerprint {fingerprint} was reported{}. The queries page lists every fingerprint.",
            view.service
                .as_deref()
                .map(|s| format!(" by service {s}"))
                .unwrap_or_default()
        )));
    };

    let now = Totals::of(&detail.services);
    let then = before.map(|b| Totals::of(&b.services)).unwrap_or_default();
    let compared = vec![
        Compared {
            what: "calls",
            now: count(now.calls),
            before: count(then.calls),
            trend: compare(now.calls as f64, then.calls as f64, false),
        },
        Compared {
            what: "mean",
            now: duration_ms(now.mean_ms),
            before: duration_ms(then.mean_ms),
            trend: compare(now.mean_ms, then.mean_ms, true),
        },
        Compared {
            what: "p95",
            now: duration_ms(now.p95_ms),
            before: duration_ms(then.p95_ms),
            trend: compare(now.p95_ms, then.p95_ms, true),
        },
        Compared {
            what: "p99",
            now: duration_ms(now.p99_ms),
            before: duration_ms(then.p99_ms),
            trend: compare(now.p99_ms, then.p99_ms, true),
        },
        Compared {
            what: "error rate",
            now: percent(now.error_rate()),
            before: percent(then.error_rate()),
            trend: compare(now.error_rate(), then.error_rate(), true),
        },
        Compared {
            what: "total time",
            now: duration_ms(now.total_ms),
            before: duration_ms(then.total_ms),
            trend: compare(now.total_ms, then.total_ms, true),
        },
    ];

    let points = series.map(|s| s.points).unwrap_or_default();
    let pick = |f: fn(&crate::source::QueryPoint) -> f64| points.iter().map(|p| (p.start_ms, f(p))).collect();
    let latency_chart = chart::lines(
        "latency percentiles over time",
        chart_range,
        step,
        &[
            Series::new("p50", GREY, pick(|p| p.p50_ms)),
            Series::new("p95", BLUE, pick(|p| p.p95_ms)),
            Series::new("p99", ORANGE, pick(|p| p.p99_ms)),
        ],
        duration_ms,
    );
    let calls_chart = chart::bars(
        "calls and errors over time",
        chart_range,
        step,
        &[
            Series::new("ok", BLUE, pick(|p| (p.calls - p.errors) as f64)),
            Series::new("errors", RED, pick(|p| p.errors as f64)),
        ],
        |v| count(v.round() as u64),
    );

    let services_rows = detail
        .services
        .iter()
        .map(|s| ServiceRow {
            service: s.service.clone(),
            calls: count(s.calls),
            errors: count(s.errors),
            error_rate: percent(s.error_rate()),
            total: duration_ms(s.total_ms),
            mean: duration_ms(s.mean_ms),
            min: duration_ms(s.min_ms),
            p50: duration_ms(s.p50_ms),
            p95: duration_ms(s.p95_ms),
            p99: duration_ms(s.p99_ms),
            max: duration_ms(s.max_ms),
            stddev: duration_ms(s.stddev_ms),
            rows: count(s.rows),
        })
        .collect();
    let instance_calls: u64 = detail.instances.iter().map(|i| i.calls).sum();
    let instances = detail
        .instances
        .iter()
        .map(|i| InstanceRow {
            service: i.service.clone(),
            instance: i.instance_id.clone(),
            host: i.host.clone(),
            calls: count(i.calls),
            share: percent(if instance_calls == 0 {
                0.0
            } else {
                i.calls as f64 / instance_calls as f64
            }),
            errors: count(i.errors),
            total: duration_ms(i.total_ms),
            mean: duration_ms(i.mean_ms),
            min: duration_ms(i.min_ms),
            max: duration_ms(i.max_ms),
        })
        .collect();
    let mut classes: BTreeMap<String, u64> = BTreeMap::new();
    for s in &detail.services {
        for (class, n) in &s.error_classes {
            *classes.entry(class.clone()).or_default() += n;
        }
    }
    let mut classes: Vec<(String, u64)> = classes.into_iter().collect();
    classes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let error_classes = classes
        .into_iter()
        .map(|(class, n)| {
            let share = percent(if now.errors == 0 {
                0.0
            } else {
                n as f64 / now.errors as f64
            });
            (class, count(n), share)
        })
        .collect();
    let slow_rows = slow
        .iter()
        .map(|s| SlowRow {
            at: timestamp(s.at_ms),
            ago: ago(request.now, s.at_ms),
            service: s.service.clone(),
            instance: s.instance_id.clone(),
            duration: duration_ms(s.duration_ms),
            rows: count(s.rows),
            error: s.error_class.clone().unwrap_or_default(),
            pool: s.pool.clone().unwrap_or_default(),
            raw: s.raw_text.clone().unwrap_or_default(),
        })
        .collect();
    let ran_by: Vec<&str> = detail.services.iter().map(|s| s.service.as_str()).collect();
    let alerts = alerts.map(|all| {
        all.into_iter()
            .filter(|a| a.references(fingerprint, &ran_by))
            .map(|a| AlertRow {
                rule: a.rule,
                state: format!("{:?}", a.state).to_lowercase(),
                summary: a.summary,
                since: ago(request.now, a.started_ms),
            })
            .collect()
    });
    let rules = match &dashboard.alerting {
        Some(alerting) => {
            let rules = alerting.rules().await.map_err(super::alerts::failed)?;
            Some(watching(&rules, &alerting.kinds(), fingerprint, &ran_by))
        }
        None => None,
    };

    let path = format!("/queries/{fingerprint}");
    let mut layout = request.layout(&format!("Query {fingerprint}"), "queries", &path, &services);
    layout.computed(computed);
    html(QueryPage {
        layout,
        fingerprint: fingerprint.to_string(),
        text: detail.text.clone(),
        compared,
        previous_label: format!("{} – {} UTC", timestamp(previous.from_ms), timestamp(previous.to_ms)),
        services: services_rows,
        latency_chart,
        calls_chart,
        step: crate::format::span((step / 1_000) as u64),
        instances,
        error_classes,
        slow: slow_rows,
        slow_href: view.href("/slow", &[("fingerprint", &fingerprint.to_string())]),
        alerts,
        rules,
        api_href: format!("/api/v1/queries/{fingerprint}?{}", view_api_query(&view)),
    })
}

/// The API parameters for the same range and service.
fn view_api_query(view: &crate::view::View) -> String {
    let range = view.range.for_summary();
    let mut query = format!("from={}&to={}", range.from_ms, range.to_ms);
    if let Some(service) = &view.service {
        query.push_str(&format!("&service={}", crate::view::encode(service)));
    }
    query
}
