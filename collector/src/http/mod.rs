//! The JSON API under `/api/v1`, and `/healthz`.
//!
//! Reads are open; writes need the admin token (`Authorization: Bearer …`).
//! Every failure is JSON `{"error": "..."}` with a status that says whose
//! fault it is; 5xx details go to the log only.

mod agents;
mod alerts;
mod auth;
mod error;
pub(crate) mod metrics;
mod openapi;
mod params;
mod pools;
mod queries;
pub(crate) mod serve;
mod storage;

use std::sync::Arc;

use axum::extract::State;
use axum::{Json, Router};
use querypulse_domain::source::{Source, SourceError};
use serde::Serialize;
use utoipa::{OpenApi as _, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::agent_settings::AgentSettings;
use crate::settings_db::SettingsDb;
use querypulse_store::Store;

pub(crate) use auth::authorize;
pub use error::ApiError;
pub(crate) use params::parse_time;

/// What the API needs besides the read source: where settings live.
#[derive(Debug, Clone)]
pub struct Admin {
    /// The settings database.
    pub settings_db: SettingsDb,
    /// The store, which applies retention changes live.
    pub store: Store,
    /// Token required for writes; writes are refused when `None`.
    pub token: Option<String>,
    /// Settings pushed to every connected agent.
    pub agent_settings: Arc<tokio::sync::watch::Sender<AgentSettings>>,
    /// The alert engine (rules, channels, silences, alerts).
    pub alerts: querypulse_alerts::Alerts,
    /// How far each remote-write destination has got.
    pub remote_write: crate::remote_write::Status,
}

#[derive(Clone)]
pub(crate) struct Api {
    source: Arc<dyn Source>,
    pub(crate) admin: Admin,
    /// The OpenAPI document, as served.
    openapi: bytes::Bytes,
}

/// The API routes and their OpenAPI document. Every route is registered
/// through `routes!`, which takes its path and methods from the handler's
/// `#[utoipa::path]`: a route cannot exist without its description.
fn documented_routes() -> (Router<Api>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(metrics::metrics))
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(queries::services))
        .routes(routes!(queries::queries))
        .routes(routes!(queries::query_detail))
        .routes(routes!(queries::query_series))
        .routes(routes!(queries::slow_queries))
        .routes(routes!(pools::pools))
        .routes(routes!(pools::pool_series))
        .routes(routes!(agents::agents))
        .routes(routes!(agents::get_agent_settings, agents::put_agent_settings))
        .routes(routes!(storage::get_retention, storage::put_retention))
        .routes(routes!(storage::verify_store))
        .merge(alerts::routes())
        .split_for_parts()
}

/// The API routes.
pub fn router(source: Arc<dyn Source>, admin: Admin) -> Router {
    let (routes, document) = documented_routes();
    let openapi = document
        .to_json()
        .expect("the OpenAPI document serializes")
        .into_bytes()
        .into();
    routes
        .route("/api/v1/{*rest}", axum::routing::any(unknown))
        .with_state(Api { source, admin, openapi })
}

/// Headers every HTTP response carries: `X-Content-Type-Options: nosniff`,
/// so a browser never reads a JSON answer (which may quote what agents
/// sent) as HTML or script.
pub async fn security_headers(mut response: axum::response::Response) -> axum::response::Response {
    response.headers_mut().insert(
        axum::http::header::X_CONTENT_TYPE_OPTIONS,
        axum::http::HeaderValue::from_static("nosniff"),
    );
    response
}

/// Whether the collector is well.
#[derive(Serialize, ToSchema)]
struct Health {
    /// `ok`, or `degraded` when something needs an operator (the collector
    /// still serves and ingests what it can).
    #[schema(pattern = "^(ok|degraded)$")]
    status: &'static str,
    /// What is wrong, when degraded: a full disk, damaged files set aside,
    /// a log that had to be resynchronized.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    problems: Vec<String>,
}

/// `ok`, or `degraded` with the problems found (the collector still serves
/// and ingests; an operator should look). Always 200 while the process is
/// alive, and open even when reads need a token.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "collector",
    responses((status = 200, description = "OK.", body = Health)),
)]
async fn healthz(State(api): State<Api>) -> Result<Json<Health>, ApiError> {
    let source = api.source.clone();
    let problems = read(move || source.store_health())
        .await?
        .map(|health| health.problems)
        .unwrap_or_default();
    let status = if problems.is_empty() { "ok" } else { "degraded" };
    Ok(Json(Health { status, problems }))
}

async fn unknown() -> ApiError {
    ApiError::NotFound("no such API endpoint; see the API section of the README".into())
}

async fn read<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, SourceError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::Internal(format!("read task failed: {e}")))?
        .map_err(ApiError::from)
}

/// A history in steps over a range.
#[derive(Serialize, ToSchema)]
struct SeriesResponse<T> {
    /// Start of the range covered (RFC 3339).
    from: String,
    /// End of the range covered (exclusive).
    to: String,
    #[serde(flatten)]
    series: T,
}
