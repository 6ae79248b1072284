//! `/api/v1/agents` and `/api/v1/agent-settings`.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::HeaderMap;
use querypulse_domain::source::AgentSummary;
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::authorize;
use super::error::ApiError;
use super::openapi::{ReadErrors, WriteErrors};
use super::params::{Parameters, Params, ServiceParams, known_service};
use super::{Api, read};
use crate::agent_settings::AgentSettings;

/// Reporting instances.
#[derive(Serialize, ToSchema)]
pub(super) struct AgentsResponse {
    /// By service, the most recently seen first.
    agents: Vec<AgentSummary>,
}

/// Instances that have reported: who they are, when last seen, and the
/// agents' own counters (dropped batches, overflow, send errors).
#[utoipa::path(
    get,
    path = "/api/v1/agents",
    tag = "agents",
    params(ServiceParams),
    responses((status = 200, description = "OK.", body = AgentsResponse), ReadErrors),
    security((), ("read_token" = []), ("admin_token" = [])),
)]
pub(super) async fn agents(State(api): State<Api>, params: Params) -> Result<Json<AgentsResponse>, ApiError> {
    let params = Parameters::new::<ServiceParams>(params)?;
    let service = params.service();
    known_service(&api.source, &service).await?;
    let source = api.source.clone();
    let mut agents = read(move || source.agents()).await?;
    agents.retain(|a| service.as_ref().is_none_or(|s| *s == a.service));
    agents.sort_by(|a, b| {
        a.service
            .cmp(&b.service)
            .then_with(|| b.last_seen_ms.cmp(&a.last_seen_ms))
    });
    Ok(Json(AgentsResponse { agents }))
}

/// The settings pushed to every connected agent.
#[utoipa::path(
    get,
    path = "/api/v1/agent-settings",
    tag = "agents",
    responses((status = 200, description = "OK.", body = AgentSettings), ReadErrors),
    security((), ("read_token" = []), ("admin_token" = [])),
)]
pub(super) async fn get_agent_settings(State(api): State<Api>) -> Json<AgentSettings> {
    Json(*api.admin.agent_settings.borrow())
}

/// Changes the settings pushed to agents; connected agents get them at once.
#[utoipa::path(
    put,
    path = "/api/v1/agent-settings",
    tag = "agents",
    request_body = AgentSettings,
    responses((status = 200, description = "The settings now in force.", body = AgentSettings), WriteErrors),
    security(("admin_token" = [])),
)]
pub(super) async fn put_agent_settings(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Result<Json<AgentSettings>, JsonRejection>,
) -> Result<Json<AgentSettings>, ApiError> {
    authorize(&api.admin, &headers)?;
    let Json(settings) = body?;
    api.admin.change_agent_settings(settings).await?;
    Ok(Json(settings))
}
