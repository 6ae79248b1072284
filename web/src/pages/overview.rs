//! `/`: the top queries by total time over the last hour.

use askama::Template;
use axum::extract::State;
use axum::response::Html;

use super::{PageError, read};
use crate::format::{count, duration_ms};
use crate::{Dashboard, QueryFilter, TimeRange, now_ms};

/// Rows shown on the overview.
const TOP: usize = 50;
const HOUR_MS: i64 = 3_600_000;

struct Row {
    fingerprint: String,
    text: String,
    service: String,
    calls: String,
    total: String,
    mean: String,
    p95: String,
    p99: String,
    errors: String,
    failing: bool,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview {
    rows: Vec<Row>,
    services: usize,
}

pub(crate) async fn page(State(dashboard): State<Dashboard>) -> Result<Html<String>, PageError> {
    let source = dashboard.source.clone();
    let filter = QueryFilter {
        service: None,
        range: TimeRange::last(now_ms(), HOUR_MS),
    };
    let (services, mut queries) = read(move || Ok((source.services()?, source.queries(&filter)?))).await?;
    queries.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
    let rows = queries
        .into_iter()
        .take(TOP)
        .map(|q| Row {
            fingerprint: q.fingerprint.to_string(),
            text: q.text,
            service: q.service,
            calls: count(q.calls),
            total: duration_ms(q.total_ms),
            mean: duration_ms(q.mean_ms),
            p95: duration_ms(q.p95_ms),
            p99: duration_ms(q.p99_ms),
            errors: count(q.errors),
            failing: q.errors > 0,
        })
        .collect();
    Ok(Html(
        Overview {
            rows,
            services: services.len(),
        }
        .render()?,
    ))
}
