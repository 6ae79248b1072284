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
mod params;
mod pools;
mod queries;
pub(crate) mod serve;
mod storage;

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use querypulse_domain::source::{Source, SourceError};
use serde::Serialize;
use serde_json::json;

use crate::agent_settings::AgentSettings;
use crate::settings_db::SettingsDb;
use querypulse_store::Store;

pub(crate) use auth::authorize;
pub use error::ApiError;
pub(crate) use params::{parse_range, parse_time};

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
}

/// The API routes.
pub fn router(source: Arc<dyn Source>, admin: Admin) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::metrics))
        .route("/api/v1/services", get(queries::services))
        .route("/api/v1/queries", get(queries::queries))
        .route("/api/v1/queries/{fingerprint}", get(queries::query_detail))
        .route("/api/v1/queries/{fingerprint}/series", get(queries::query_series))
        .route("/api/v1/pools", get(pools::pools))
        .route(
            "/api/v1/pools/{service}/{instance}/{pool}/series",
            get(pools::pool_series),
        )
        .route("/api/v1/slow-queries", get(queries::slow_queries))
        .route("/api/v1/agents", get(agents::agents))
        .route(
            "/api/v1/retention",
            get(storage::get_retention).put(storage::put_retention),
        )
        .route("/api/v1/verify", get(storage::verify_store))
        .route(
            "/api/v1/agent-settings",
            get(agents::get_agent_settings).put(agents::put_agent_settings),
        )
        .merge(alerts::routes())
        .route("/api/v1/{*rest}", axum::routing::any(unknown))
        .with_state(Api { source, admin })
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

/// `ok`, or `degraded` with the problems found (the collector still serves
/// and ingests; an operator should look). Always 200: the process is alive.
async fn healthz(State(api): State<Api>) -> Result<Json<serde_json::Value>, ApiError> {
    let source = api.source.clone();
    let problems = read(move || source.store_health())
        .await?
        .map(|health| health.problems)
        .unwrap_or_default();
    Ok(Json(if problems.is_empty() {
        json!({ "status": "ok" })
    } else {
        json!({ "status": "degraded", "problems": problems })
    }))
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

#[derive(Serialize)]
struct SeriesResponse<T> {
    from: String,
    to: String,
    #[serde(flatten)]
    series: T,
}
