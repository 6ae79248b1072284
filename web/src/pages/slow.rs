//! `/slow`: the slow-query log, newest first, filterable, each sample linked
//! to its query's page.

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use querypulse_domain::Fingerprint;

use super::{Layout, PageError, Request, html, query_href, read};
use crate::Dashboard;
use crate::format::{ago, count, duration_ms, timestamp};
use crate::source::SlowFilter;

/// Samples shown by default, and at most.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1_000;

struct Row {
    at: String,
    ago: String,
    href: String,
    text: String,
    raw: String,
    service: String,
    instance: String,
    duration: String,
    rows: String,
    error: String,
    pool: String,
}

#[derive(Template)]
#[template(path = "slow.html")]
struct SlowPage {
    layout: Layout,
    rows: Vec<Row>,
    text: String,
    fingerprint: String,
    min_ms: String,
    limit: usize,
    filtered: bool,
}

pub(crate) async fn page(State(dashboard): State<Dashboard>, request: Request) -> Result<Response, PageError> {
    let view = request.view.clone();
    let get = |name: &str| request.param(name);
    let text = get("q");
    let fingerprint_text = get("fingerprint");
    let fingerprint = match fingerprint_text.as_str() {
        "" => None,
        f => Some(
            f.parse::<Fingerprint>()
                .map_err(|e| PageError::BadRequest(e.to_string()))?,
        ),
    };
    let min_text = get("min_ms");
    let min_ms = match min_text.as_str() {
        "" => None,
        m => Some(
            m.parse::<f64>()
                .ok()
                .filter(|m| m.is_finite() && *m >= 0.0)
                .ok_or_else(|| PageError::BadRequest(format!("min_ms={m:?} must be a number of milliseconds")))?,
        ),
    };
    let limit = match get("limit").as_str() {
        "" => DEFAULT_LIMIT,
        l => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| PageError::BadRequest(format!("limit must be a number from 1 to {MAX_LIMIT}")))?,
    };
    let needle = text.to_lowercase();
    let post_filter = !needle.is_empty() || min_ms.is_some();
    let filter = SlowFilter {
        service: view.service.clone(),
        fingerprint,
        range: view.range,
        // Filters the store does not apply are applied to the newest samples.
        limit: if post_filter { MAX_LIMIT } else { limit },
    };
    let source = dashboard.source.clone();
    let (services, samples) = read(move || Ok((source.services()?, source.slow_queries(&filter)?))).await?;
    let rows = samples
        .into_iter()
        .filter(|s| needle.is_empty() || s.text.to_lowercase().contains(&needle))
        .filter(|s| min_ms.is_none_or(|m| s.duration_ms >= m))
        .take(limit)
        .map(|s| Row {
            at: timestamp(s.at_ms),
            ago: ago(request.now, s.at_ms),
            href: query_href(&view, &s.fingerprint),
            text: s.text,
            raw: s.raw_text.unwrap_or_default(),
            service: s.service,
            instance: s.instance_id,
            duration: duration_ms(s.duration_ms),
            rows: count(s.rows),
            error: s.error_class.unwrap_or_default(),
            pool: s.pool.unwrap_or_default(),
        })
        .collect();
    let keep = [
        ("q", text.as_str()),
        ("fingerprint", fingerprint_text.as_str()),
        ("min_ms", min_text.as_str()),
    ];
    let layout = request.layout_keeping("Slow-query log", "slow", "/slow", &services, &keep);
    html(SlowPage {
        layout,
        rows,
        filtered: post_filter || fingerprint.is_some(),
        text,
        fingerprint: fingerprint_text,
        min_ms: min_text,
        limit,
    })
}
