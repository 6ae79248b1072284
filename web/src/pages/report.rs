//! `/report`: the performance report over a range (24 h by default), also as
//! Markdown (`?format=md`), standalone HTML (`?format=html`) and JSON
//! (`?format=json`) — what `querypulse report` prints.

use askama::Template;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

use super::{Layout, PageError, Request, html, read, secured};
use crate::Dashboard;
use crate::report::{Report, ReportView};

#[derive(Template)]
#[template(path = "report.html")]
struct ReportPage {
    layout: Layout,
    report: ReportView,
    formats: Vec<(&'static str, String)>,
}

pub(crate) async fn page(State(dashboard): State<Dashboard>, request: Request) -> Result<Response, PageError> {
    let request = request.default_range("24h");
    let view = request.view.clone();
    let format = request.param("format");
    let format = format.as_str();
    if !matches!(format, "" | "md" | "html" | "json") {
        return Err(PageError::BadRequest(format!(
            "format={format:?} is not one of md, html, json"
        )));
    }
    let source = dashboard.source.clone();
    let (range, service) = (view.range, view.service.clone());
    let report = dashboard
        .cache
        .get(format!("report|{}", view.cache_key()), move || {
            Report::build(source.as_ref(), range, service.clone())
        })
        .await?;
    let (computed, report) = (report.computed, report.value);
    let source = dashboard.source.clone();
    let services = read(move || source.services()).await?;
    let typed =
        |content_type: &'static str, body: String| secured(([(CONTENT_TYPE, content_type)], body).into_response());
    match format {
        "md" => Ok(typed("text/markdown; charset=utf-8", report.to_markdown())),
        "json" => Ok(typed("application/json", report.to_json())),
        "html" => {
            // A downloaded report links back to this dashboard.
            let host = request
                .headers
                .get(axum::http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)))
                .map(|h| format!("http://{h}"))
                .unwrap_or_default();
            Ok(typed("text/html; charset=utf-8", report.to_html(&host)?))
        }
        _ => {
            let formats = [("Markdown", "md"), ("HTML", "html"), ("JSON", "json")]
                .iter()
                .map(|(label, f)| (*label, view.href("/report", &[("format", f)])))
                .collect();
            let mut layout = request.layout("Report", "report", "/report", &services);
            layout.computed(computed);
            html(ReportPage {
                layout,
                report: ReportView::new(&report, ""),
                formats,
            })
        }
    }
}
