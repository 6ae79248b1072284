//! `/api/v1/agents` and `/api/v1/agent-settings`.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::HeaderMap;
use querypulse_domain::source::AgentSummary;
use serde::Serialize;

use super::auth::authorize;
use super::error::ApiError;
use super::params::{Parameters, Params, known_service};
use super::{Api, read};
use crate::agent_settings::AgentSettings;

#[derive(Serialize)]
pub(super) struct AgentsResponse {
    agents: Vec<AgentSummary>,
}

pub(super) async fn agents(State(api): State<Api>, params: Params) -> Result<Json<AgentsResponse>, ApiError> {
    let params = Parameters::new(params, &["service"])?;
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

pub(super) async fn get_agent_settings(State(api): State<Api>) -> Json<AgentSettings> {
    Json(*api.admin.agent_settings.borrow())
}

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
