//! One module per page; templates under `templates/` mirror them.

pub(crate) mod agents;
pub(crate) mod alerts;
pub(crate) mod channels;
pub(crate) mod overview;
pub(crate) mod pools;
pub(crate) mod queries;
pub(crate) mod query;
pub(crate) mod report;
pub(crate) mod rules;
pub(crate) mod settings;
pub(crate) mod slow;

use std::collections::HashMap;

use askama::Template;
use axum::extract::{FromRequestParts, Query};
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};

use crate::ServiceSummary;
use crate::auth::Visitor;
use crate::cache::Cached;
use crate::chart::escape;
use crate::view::{BadParameter, PRESETS, REFRESH, View, datetime_local};
use crate::{Dashboard, now_ms};

/// The navigation, in order: (path, label, key).
pub(crate) const NAV: &[(&str, &str, &str)] = &[
    ("/", "Overview", "overview"),
    ("/queries", "Queries", "queries"),
    ("/slow", "Slow log", "slow"),
    ("/pools", "Pools", "pools"),
    ("/agents", "Agents", "agents"),
    ("/alerts", "Alerts", "alerts"),
    ("/alerts/rules", "Rules", "rules"),
    ("/alerts/channels", "Channels", "channels"),
    ("/report", "Report", "report"),
    ("/settings", "Settings", "settings"),
];

/// Range shown when the URL names none.
const DEFAULT_RANGE: &str = "1h";

/// What the dashboard pages send with every response: no caching (pages
/// carry CSRF tokens and live numbers), no scripts at all, no framing.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// A page that could not be rendered: a short explanation, never internals
/// (those go to the log).
#[derive(Debug)]
pub(crate) enum PageError {
    /// A parameter is wrong; the message says which.
    BadRequest(String),
    /// The thing asked for does not exist.
    NotFound(String),
    /// Not allowed without signing in (or at all).
    Forbidden(String),
    /// Something failed inside.
    Internal(String),
}

impl From<crate::SourceError> for PageError {
    fn from(error: crate::SourceError) -> Self {
        PageError::Internal(error.0)
    }
}

impl From<askama::Error> for PageError {
    fn from(error: askama::Error) -> Self {
        PageError::Internal(error.to_string())
    }
}

impl From<BadParameter> for PageError {
    fn from(error: BadParameter) -> Self {
        PageError::BadRequest(error.0)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            PageError::BadRequest(m) => (StatusCode::BAD_REQUEST, "That request does not work", m),
            PageError::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", m),
            PageError::Forbidden(m) => (StatusCode::FORBIDDEN, "Not allowed", m),
            PageError::Internal(detail) => {
                tracing::error!(error = %detail, "dashboard page failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "The collector could not read its data; see its log.".to_owned(),
                )
            }
        };
        let body = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>querypulse: {title}</title>\
             <style>body{{font:15px/1.5 system-ui,sans-serif;margin:3rem auto;max-width:40rem;color:#1d2330}}\
             a{{color:#2454c5}}</style></head><body><h1>{title}</h1><p class=\"error\">{}</p>\
             <p><a href=\"/\">Back to the overview</a></p></body></html>",
            escape(&message)
        );
        secured((status, Html(body)).into_response())
    }
}

/// Adds the headers every dashboard response carries.
pub(crate) fn secured(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Renders a page.
pub(crate) fn html(page: impl Template) -> Result<Response, PageError> {
    Ok(secured(Html(page.render()?).into_response()))
}

/// Runs a blocking read of the source off the async executor.
pub(crate) async fn read<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, crate::SourceError> + Send + 'static,
) -> Result<T, PageError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| PageError::Internal(format!("read task failed: {e}")))?
        .map_err(PageError::from)
}

pub(crate) async fn not_found() -> PageError {
    PageError::NotFound("There is no page here. The navigation at the top lists every page.".into())
}

/// One request's URL state and visitor.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub view: View,
    pub visitor: Visitor,
    pub now: i64,
    pub params: HashMap<String, String>,
    pub headers: HeaderMap,
}

impl FromRequestParts<Dashboard> for Request {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, dashboard: &Dashboard) -> Result<Request, PageError> {
        let Query(params) = Query::<HashMap<String, String>>::from_request_parts(parts, dashboard)
            .await
            .map_err(|e| PageError::BadRequest(e.body_text()))?;
        let now = now_ms();
        Ok(Request {
            view: View::parse(&params, DEFAULT_RANGE, now)?,
            visitor: dashboard.sessions.visitor(&parts.headers),
            now,
            params,
            headers: parts.headers.clone(),
        })
    }
}

impl Request {
    /// A page's own parameter, trimmed; empty when absent.
    pub fn param(&self, name: &str) -> String {
        self.params.get(name).map(|v| v.trim()).unwrap_or_default().to_owned()
    }

    /// Uses `key` as the range when the URL names none.
    pub fn default_range(mut self, key: &str) -> Request {
        if !["range", "from", "to"].iter().any(|p| self.params.contains_key(*p)) {
            self.view = self.view.with_range(key, self.now);
        }
        self
    }

    /// The frame around a page: navigation, range picker, sign-in state.
    /// `keep` are the page's own parameters the picker carries along.
    pub fn layout(&self, title: &str, active: &'static str, path: &str, services: &[ServiceSummary]) -> Layout {
        self.layout_keeping(title, active, path, services, &[])
    }

    pub fn layout_keeping(
        &self,
        title: &str,
        active: &'static str,
        path: &str,
        services: &[ServiceSummary],
        keep: &[(&str, &str)],
    ) -> Layout {
        let mut services: Vec<String> = services.iter().map(|s| s.name.clone()).collect();
        services.sort();
        let view = &self.view;
        let nav = NAV
            .iter()
            .map(|(p, label, key)| NavLink {
                href: view.href(p, &[]),
                label,
                key,
                active: *key == active,
            })
            .collect();
        let presets = PRESETS
            .iter()
            .map(|(key, label, _)| NavLink {
                href: view.with_range(key, self.now).href(path, keep),
                label,
                key,
                active: view.range_key == *key,
            })
            .collect();
        let refresh = REFRESH.iter().map(|s| (*s, view.refresh == Some(*s))).collect();
        Layout {
            title: title.to_owned(),
            nav,
            presets,
            path: path.to_owned(),
            range_label: view.label(),
            custom: view.range_key == "custom",
            from_input: datetime_local(view.range.from_ms),
            to_input: datetime_local(view.range.to_ms),
            service: view.service.clone().unwrap_or_default(),
            services,
            refresh,
            refresh_seconds: view.refresh,
            keep: keep
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            view_fields: view.pairs().into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            picker: !matches!(active, "settings" | "agents" | "rules" | "channels"),
            signed_in: self.visitor.signed_in(),
            writes_enabled: self.visitor.writes_enabled,
            csrf: self.visitor.csrf.clone().unwrap_or_default(),
            generated: crate::format::timestamp(self.now),
            as_of: String::new(),
        }
    }
}

/// A link in the navigation or the range picker.
#[derive(Debug, Clone)]
pub(crate) struct NavLink {
    pub href: String,
    pub label: &'static str,
    pub key: &'static str,
    pub active: bool,
}

/// What `base.html` needs.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub title: String,
    pub nav: Vec<NavLink>,
    pub presets: Vec<NavLink>,
    pub path: String,
    pub range_label: String,
    pub custom: bool,
    pub from_input: String,
    pub to_input: String,
    pub service: String,
    pub services: Vec<String>,
    pub refresh: Vec<(u32, bool)>,
    pub refresh_seconds: Option<u32>,
    pub keep: Vec<(String, String)>,
    pub view_fields: Vec<(String, String)>,
    pub picker: bool,
    pub signed_in: bool,
    pub writes_enabled: bool,
    pub csrf: String,
    pub generated: String,
    /// How old the page's numbers are, when they come from the cache.
    pub as_of: String,
}

impl Layout {
    /// Says how old the numbers are when they were computed a while ago.
    pub fn computed(&mut self, at: std::time::Instant) {
        let age = at.elapsed().as_secs();
        if age >= 1 {
            self.as_of = format!("numbers as of {age} s ago");
        }
    }
}

/// Every fingerprint's summary over the view (cached, see `cache`).
pub(crate) async fn summaries(
    dashboard: &Dashboard,
    view: &View,
) -> Result<Cached<Vec<crate::QuerySummary>>, PageError> {
    let source = dashboard.source.clone();
    let filter = crate::QueryFilter {
        service: view.service.clone(),
        range: view.range.for_summary(),
    };
    dashboard
        .cache
        .get(format!("queries|{}", view.cache_key()), move || source.queries(&filter))
        .await
}

/// Every pool's summary over the view (cached).
pub(crate) async fn pool_summaries(
    dashboard: &Dashboard,
    view: &View,
) -> Result<Cached<Vec<crate::source::PoolSummary>>, PageError> {
    let source = dashboard.source.clone();
    let range = view.range.for_summary();
    dashboard
        .cache
        .get(format!("pools|{}", view.cache_key()), move || source.pools(range))
        .await
}

/// Link to a query's page.
pub(crate) fn query_href(view: &View, fingerprint: &querypulse_domain::Fingerprint) -> String {
    view.href(&format!("/queries/{fingerprint}"), &[])
}

/// Link to a pool's page.
pub(crate) fn pool_href(view: &View, service: &str, instance: &str, pool: &str) -> String {
    use crate::view::encode;
    view.href(
        &format!("/pools/{}/{}/{}", encode(service), encode(instance), encode(pool)),
        &[],
    )
}

/// The range aligned down to `step` at the start, so steps line up with the
/// store's windows.
pub(crate) fn aligned(range: crate::TimeRange, step: i64) -> crate::TimeRange {
    crate::TimeRange {
        from_ms: range.from_ms.div_euclid(step) * step,
        to_ms: range.to_ms,
    }
}
