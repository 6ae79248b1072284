//! `/queries`: every fingerprint in range, sortable and filterable, with a
//! p95 sparkline per row.

use askama::Template;
use axum::extract::State;
use axum::response::Response;

use super::overview::QueryRow;
use super::{Layout, PageError, Request, aligned, html, read};
use crate::chart::{BLUE, sparkline};
use crate::format::percent;
use crate::source::QuerySummary;
use crate::{Dashboard, QueryFilter};
use querypulse_domain::source::step_for;

/// Rows per page (each with a sparkline read from the store).
pub(crate) const PAGE_SIZE: usize = 50;
/// Points per sparkline, about.
const SPARK_POINTS: i64 = 24;

/// Sort keys: URL value, column heading, and whether the column is numeric
/// (sorted largest first by default).
const SORTS: [(&str, &str); 7] = [
    ("total", "Total"),
    ("calls", "Calls"),
    ("mean", "Mean"),
    ("p95", "p95"),
    ("p99", "p99"),
    ("errors", "Errors"),
    ("error_rate", "Error rate"),
];

fn key(sort: &str, q: &QuerySummary) -> f64 {
    match sort {
        "calls" => q.calls as f64,
        "mean" => q.mean_ms,
        "p95" => q.p95_ms,
        "p99" => q.p99_ms,
        "errors" => q.errors as f64,
        "error_rate" => q.error_rate(),
        _ => q.total_ms,
    }
}

struct Row {
    q: QueryRow,
    fingerprint: String,
    error_rate: String,
    spark: String,
}

struct Heading {
    label: &'static str,
    href: String,
    on: bool,
    arrow: &'static str,
}

#[derive(Template)]
#[template(path = "queries.html")]
struct QueriesPage {
    layout: Layout,
    headings: Vec<Heading>,
    rows: Vec<Row>,
    text: String,
    sort: String,
    dir: String,
    matched: usize,
    total: usize,
    first: usize,
    previous: Option<String>,
    next: Option<String>,
    any_service: bool,
}

pub(crate) async fn page(State(dashboard): State<Dashboard>, request: Request) -> Result<Response, PageError> {
    let view = request.view.clone();
    let get = |name: &str| request.param(name);
    let sort = match get("sort") {
        s if s.is_empty() => "total".to_owned(),
        s if SORTS.iter().any(|(k, _)| *k == s) => s,
        s => {
            return Err(PageError::BadRequest(format!(
                "sort={s:?} is not one of total, calls, mean, p95, p99, errors, error_rate"
            )));
        }
    };
    let dir = match get("dir").as_str() {
        "" | "desc" => "desc",
        "asc" => "asc",
        d => return Err(PageError::BadRequest(format!("dir={d:?} must be asc or desc"))),
    };
    let text = get("q");
    let page: usize = match get("page").as_str() {
        "" => 1,
        p => p
            .parse()
            .ok()
            .filter(|p| *p >= 1)
            .ok_or_else(|| PageError::BadRequest(format!("page={p:?} must be a number from 1")))?,
    };

    let range = view.range.for_summary();
    let step = step_for(range.length_ms(), SPARK_POINTS);
    let spark_range = aligned(range, step);
    let summaries = super::summaries(&dashboard, &view).await?;
    let total = summaries.value.len();
    let needle = text.to_lowercase();
    let mut queries: Vec<&QuerySummary> = summaries
        .value
        .iter()
        .filter(|q| {
            needle.is_empty() || q.text.to_lowercase().contains(&needle) || q.fingerprint.to_string().contains(&needle)
        })
        .collect();
    queries.sort_by(|a, b| {
        let order = key(&sort, b).total_cmp(&key(&sort, a));
        let order = if dir == "asc" { order.reverse() } else { order };
        order.then_with(|| a.fingerprint.cmp(&b.fingerprint))
    });
    let matched = queries.len();
    let mut rows = Vec::new();
    for q in queries.into_iter().skip((page - 1) * PAGE_SIZE).take(PAGE_SIZE) {
        let source = dashboard.source.clone();
        let (fingerprint, service) = (q.fingerprint, q.service.clone());
        let key = format!("spark|{fingerprint}|{service}|{}", view.cache_key());
        let points = dashboard
            .cache
            .get(key, move || {
                let filter = QueryFilter {
                    service: Some(service.clone()),
                    range: spark_range,
                };
                Ok(source
                    .query_series(fingerprint, &filter, step)?
                    .map(|s| s.points.iter().map(|p| (p.start_ms, p.p95_ms)).collect::<Vec<_>>())
                    .unwrap_or_default())
            })
            .await?;
        rows.push((q.clone(), points.value));
    }
    let source = dashboard.source.clone();
    let services = read(move || source.services()).await?;
    let rows = rows
        .into_iter()
        .map(|(q, points)| Row {
            q: QueryRow::new(&view, &q),
            fingerprint: q.fingerprint.to_string(),
            error_rate: percent(q.error_rate()),
            spark: sparkline(spark_range, step, points.as_slice(), BLUE),
        })
        .collect();
    let headings = SORTS
        .iter()
        .map(|(k, label)| {
            let on = *k == sort;
            let flip = if on && dir == "desc" { "asc" } else { "desc" };
            Heading {
                label,
                href: view.href("/queries", &[("q", &text), ("sort", k), ("dir", flip)]),
                on,
                arrow: match (on, dir) {
                    (false, _) => "",
                    (true, "asc") => " ▲",
                    (true, _) => " ▼",
                },
            }
        })
        .collect();
    let page_href = |n: usize| {
        view.href(
            "/queries",
            &[("q", &text), ("sort", &sort), ("dir", dir), ("page", &n.to_string())],
        )
    };
    let previous = (page > 1).then(|| page_href(page - 1));
    let next = (page * PAGE_SIZE < matched).then(|| page_href(page + 1));
    let keep = [("q", text.as_str()), ("sort", sort.as_str()), ("dir", dir)];
    let mut layout = request.layout_keeping("Queries", "queries", "/queries", &services, &keep);
    layout.computed(summaries.computed);
    html(QueriesPage {
        layout,
        headings,
        rows,
        text,
        sort,
        dir: dir.to_owned(),
        matched,
        total,
        first: (page - 1) * PAGE_SIZE + 1,
        previous,
        next,
        any_service: !services.is_empty(),
    })
}
