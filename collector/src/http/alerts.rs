//! The alerting API: rules, channels and silences (CRUD; changes need the
//! admin token), alerts and their history, dry runs and test notifications.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{ReadErrors, WriteErrors};
use super::params::{HistoryParams, Parameters, Params};
use super::{Api, ApiError, authorize};
use querypulse_alerts::{Alerts, AlertsError, HistoryEvent};
use querypulse_alerts::{ChannelInput, HistoryFilter, RuleInput, SilenceInput};
use querypulse_domain::alerting::{ActiveAlert, ChannelInfo, Evaluation, RuleInfo, SilenceInfo};
use querypulse_domain::now_ms;
use querypulse_domain::rfc3339;

/// Default and largest number of history entries per request.
const DEFAULT_HISTORY_LIMIT: i64 = 500;
const MAX_HISTORY_LIMIT: i64 = 10_000;

impl From<AlertsError> for ApiError {
    fn from(error: AlertsError) -> Self {
        match error {
            AlertsError::Invalid(e) => ApiError::BadRequest(e.to_string()),
            AlertsError::NotFound(m) => ApiError::NotFound(m),
            AlertsError::Conflict(m) => ApiError::Conflict(m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// The alerting routes, merged into the API router.
pub(super) fn routes() -> OpenApiRouter<Api> {
    OpenApiRouter::new()
        .routes(routes!(list_rules, create_rule))
        .routes(routes!(get_rule, update_rule, delete_rule))
        .routes(routes!(evaluate_rule))
        .routes(routes!(list_channels, create_channel))
        .routes(routes!(get_channel, update_channel, delete_channel))
        .routes(routes!(test_channel))
        .routes(routes!(list_silences, create_silence))
        .routes(routes!(get_silence, update_silence, delete_silence))
        .routes(routes!(list_alerts))
        .routes(routes!(history))
}

fn alerts(api: &Api) -> &Alerts {
    &api.admin.alerts
}

fn id(what: &str, raw: &str) -> Result<i64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::BadRequest(format!("{what} id {raw:?} is not a number")))
}

fn created<T: Serialize>(value: T) -> Response {
    (StatusCode::CREATED, Json(value)).into_response()
}

// -- rules -------------------------------------------------------------------

/// Every rule.
#[derive(Serialize, ToSchema)]
struct RulesResponse {
    /// By id.
    rules: Vec<RuleInfo>,
}

/// Alert rules: the built-in defaults and those added.
#[utoipa::path(
    get,
    path = "/api/v1/rules",
    tag = "alerts",
    responses((status = 200, description = "OK.", body = RulesResponse), ReadErrors),
    security((), ("read_token" = []), ("admin_token" = [])),
)]
async fn list_rules(State(api): State<Api>) -> Result<Json<RulesResponse>, ApiError> {
    let rules = alerts(&api).store().rules().await?.iter().map(|r| r.info()).collect();
    Ok(Json(RulesResponse { rules }))
}

/// One rule.
#[utoipa::path(
    get,
    path = "/api/v1/rules/{id}",
    tag = "alerts",
    params(("id" = i64, Path, description = "Rule id.")),
    responses((status = 200, description = "OK.", body = RuleInfo), ReadErrors),
    security((), ("read_token" = []), ("admin_token" = [])),
)]
async fn get_rule(State(api): State<Api>, Path(raw): Path<String>) -> Result<Json<RuleInfo>, ApiError> {
    let id = id("rule", &raw)?;
    let stored = alerts(&api)
        .store()
        .rule(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no rule {id}")))?;
    Ok(Json(stored.info()))
}

/// Adds a rule. Missing or invalid fields are named in the 400's message.
#[utoipa::path(
    post,
    path = "/api/v1/rules",
    tag = "alerts",
    request_body = RuleInput,
    responses((status = 201, description = "The rule as stored.", body = RuleInfo), WriteErrors),
    security(("admin_token" = [])),
)]
async fn create_rule(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Result<Json<RuleInput>, JsonRejection>,
) -> Result<Response, ApiError> {
    authorize(&api.admin, &headers)?;
    let Json(input) = body?;
    let stored = alerts(&api).create_rule(input).await?;
    Ok(created(stored.info()))
}

/// Replaces a rule. A rule read with GET can be sent back as it is.
#[utoipa::path(
    put,
    path = "/api/v1/rules/{id}",
    tag = "alerts",
    params(("id" = i64, Path, description = "Rule id.")),
    request_body = RuleInput,
    responses((status = 200, description = "The rule as stored.", body = RuleInfo), WriteErrors),
    security(("admin_token" = [])),
)]
async fn update_rule(
    State(api): State<Api>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Result<Json<RuleInput>, JsonRejection>,
) -> Result<Json<RuleInfo>, ApiError> {
    authorize(&api.admin, &headers)?;
    let id = id("rule", &raw)?;
    let Json(input) = body?;
    let stored = alerts(&api).update_rule(id, input).await?;
    Ok(Json(stored.info()))
}

/// Deletes a rule and resolves its alerts.
#[utoipa::path(
    delete,
    path = "/api/v1/rules/{id}",
    tag = "alerts",
    params(("id" = i64, Path, description = "Rule id.")),
    responses((status = 204, description = "Deleted."), WriteErrors),
    security(("admin_token" = [])),
)]
async fn delete_rule(
    State(api): State<Api>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    authorize(&api.admin, &headers)?;
    let id = id("rule", &raw)?;
    alerts(&api).delete_rule(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Evaluates a rule now without changing any alert: what each series'
/// value is and what state it would go to.
#[utoipa::path(
    post,
    path = "/api/v1/rules/{id}/evaluate",
    tag = "alerts",
    params(("id" = i64, Path, description = "Rule id.")),
    responses((status = 200, description = "OK.", body = Evaluation), ReadErrors),
    security((), ("read_token" = []), ("admin_token" = [])),
)]
async fn evaluate_rule(State(api): State<Api>, Path(raw): Path<String>) -> Result<Json<Evaluation>, ApiError> {
    let id = id("rule", &raw)?;
    Ok(Json(alerts(&api).dry_run(id).await?))
}

// -- channels ----------------------------------------------------------------

/// Every notification channel.
#[derive(Serialize, ToSchema)]
struct ChannelsResponse {
    /// By id; secrets and passwords are not shown.
    channels: Vec<ChannelInfo>,
}

/// Notification channels: webhook, email, Alertmanager, log.
#[utoipa::path(
    get,
    path = "/api/v1/channels",
    tag = "alerts",
    responses((status = 200, description = "OK.", body = ChannelsResponse), ReadErrors),
    security((), ("read_token" = []), ("admin_token" = [])),
)]
async fn list_channels(State(api): State<Api>) -> Result<Json<ChannelsResponse>, ApiError> {
    let channels = alerts(&api)
        .store()
        .channels()
        .await?
        .iter()
        .map(|(id, c)| c.info(*id))
        .collect();
    Ok(Json(ChannelsResponse { channels }))
}

/// One channel.
#[utoipa::path(
    get,
    path = "/api/v1/channels/{id}",
    tag = "alerts",
    params(("id" = i64, Path, description = "Channel id.")),
    responses((status = 200, description = "OK.", body = ChannelInfo), ReadErrors),
    security((), ("read_token" = []), ("admin_token" = [])),
)]
async fn get_channel(State(api): State<Api>, Path(raw): Path<String>) -> Result<Json<ChannelInfo>, ApiError> {
    let id = id("channel", &raw)?;
    let channel = alerts(&api)
        .store()
        .channel(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no channel {id}")))?;
    Ok(Json(channel.info(id)))
}

/// Adds a channel.
#[utoipa::path(
    post,
    path = "/api/v1/channels",
    tag = "alerts",
    request_body = ChannelInput,
    responses((status = 201, description = "The channel as stored.", body = ChannelInfo), WriteErrors),
    security(("admin_token" = [])),
)]
async fn create_channel(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Result<Json<ChannelInput>, JsonRejection>,
) -> Result<Response, ApiError> {
    authorize(&api.admin, &headers)?;
    let Json(input) = body?;
    let (id, channel) = alerts(&api).create_channel(input).await?;
    Ok(created(channel.info(id)))
}

/// Replaces a channel.
#[utoipa::path(
    put,
    path = "/api/v1/channels/{id}",
    tag = "alerts",
    params(("id" = i64, Path, description = "Channel id.")),
    request_body = ChannelInput,
    responses((status = 200, description = "The channel as stored.", body = ChannelInfo), WriteErrors),
    security(("admin_token" = [])),
)]
async fn update_channel(
    State(api): State<Api>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Result<Json<ChannelInput>, JsonRejection>,
) -> Result<Json<ChannelInfo>, ApiError> {
    authorize(&api.admin, &headers)?;
    let id = id("channel", &raw)?;
    let Json(input) = body?;
    let channel = alerts(&api).update_channel(id, input).await?;
    Ok(Json(channel.info(id)))
}

/// Deletes a channel no rule uses (409 otherwise).
#[utoipa::path(
    delete,
    path = "/api/v1/channels/{id}",
    tag = "alerts",
    params(("id" = i64, Path, description = "Channel id.")),
    responses((status = 204, description = "Deleted."), WriteErrors),
    security(("admin_token" = [])),
)]
async fn delete_channel(
    State(api): State<Api>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    authorize(&api.admin, &headers)?;
    let id = id("channel", &raw)?;
    alerts(&api).delete_channel(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Whether a test notification got through.
#[derive(Serialize, ToSchema)]
struct Delivery {
    /// The receiver accepted it.
    delivered: bool,
    /// Why not, when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Sends a test notification through a channel, bounded by the channel's
/// timeout.
#[utoipa::path(
    post,
    path = "/api/v1/channels/{id}/test",
    tag = "alerts",
    params(("id" = i64, Path, description = "Channel id.")),
    responses(
        (status = 200, description = "Delivered.", body = Delivery),
        (status = 502, description = "The receiver refused it, failed or timed out; `error` says which.", body = Delivery),
        WriteErrors,
    ),
    security(("admin_token" = [])),
)]
async fn test_channel(
    State(api): State<Api>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&api.admin, &headers)?;
    let id = id("channel", &raw)?;
    match alerts(&api).test_channel(id).await {
        Ok(()) => Ok(Json(Delivery {
            delivered: true,
            error: None,
        })
        .into_response()),
        Err(AlertsError::Delivery(e)) => Ok((
            StatusCode::BAD_GATEWAY,
            Json(Delivery {
                delivered: false,
                error: Some(e.0),
            }),
        )
            .into_response()),
        Err(other) => Err(other.into()),
    }
}

// -- silences ----------------------------------------------------------------

/// Every silence.
#[derive(Serialize, ToSchema)]
struct SilencesResponse {
    /// By id, expired ones included.
    silences: Vec<SilenceInfo>,
}

/// Silences: matchers that mute notifications for a while.
#[utoipa::path(
    get,
    path = "/api/v1/silences",
    tag = "alerts",
    responses((status = 200, description = "OK.", body = SilencesResponse), ReadErrors),
    security((), ("read_token" = []), ("admin_token" = [])),
)]
async fn list_silences(State(api): State<Api>) -> Result<Json<SilencesResponse>, ApiError> {
    let now = now_ms();
    let silences = alerts(&api)
        .store()
        .silences()
        .await?
        .iter()
        .map(|(id, s)| s.info(*id, now))
        .collect();
    Ok(Json(SilencesResponse { silences }))
}

/// One silence.
#[utoipa::path(
    get,
    path = "/api/v1/silences/{id}",
    tag = "alerts",
    params(("id" = i64, Path, description = "Silence id.")),
    responses((status = 200, description = "OK.", body = SilenceInfo), ReadErrors),
    security((), ("read_token" = []), ("admin_token" = [])),
)]
async fn get_silence(State(api): State<Api>, Path(raw): Path<String>) -> Result<Json<SilenceInfo>, ApiError> {
    let id = id("silence", &raw)?;
    let (_, silence) = alerts(&api)
        .store()
        .silences()
        .await?
        .into_iter()
        .find(|(i, _)| *i == id)
        .ok_or_else(|| ApiError::NotFound(format!("no silence {id}")))?;
    Ok(Json(silence.info(id, now_ms())))
}

/// Adds a silence.
#[utoipa::path(
    post,
    path = "/api/v1/silences",
    tag = "alerts",
    request_body = SilenceInput,
    responses((status = 201, description = "The silence as stored.", body = SilenceInfo), WriteErrors),
    security(("admin_token" = [])),
)]
async fn create_silence(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Result<Json<SilenceInput>, JsonRejection>,
) -> Result<Response, ApiError> {
    authorize(&api.admin, &headers)?;
    let Json(input) = body?;
    let (id, silence) = alerts(&api).create_silence(input).await?;
    Ok(created(silence.info(id, now_ms())))
}

/// Replaces a silence (to end one early, set `ends_at` to now).
#[utoipa::path(
    put,
    path = "/api/v1/silences/{id}",
    tag = "alerts",
    params(("id" = i64, Path, description = "Silence id.")),
    request_body = SilenceInput,
    responses((status = 200, description = "The silence as stored.", body = SilenceInfo), WriteErrors),
    security(("admin_token" = [])),
)]
async fn update_silence(
    State(api): State<Api>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Result<Json<SilenceInput>, JsonRejection>,
) -> Result<Json<SilenceInfo>, ApiError> {
    authorize(&api.admin, &headers)?;
    let id = id("silence", &raw)?;
    let Json(input) = body?;
    let silence = alerts(&api).update_silence(id, input).await?;
    Ok(Json(silence.info(id, now_ms())))
}

/// Deletes a silence.
#[utoipa::path(
    delete,
    path = "/api/v1/silences/{id}",
    tag = "alerts",
    params(("id" = i64, Path, description = "Silence id.")),
    responses((status = 204, description = "Deleted."), WriteErrors),
    security(("admin_token" = [])),
)]
async fn delete_silence(
    State(api): State<Api>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    authorize(&api.admin, &headers)?;
    let id = id("silence", &raw)?;
    alerts(&api).delete_silence(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// -- alerts ------------------------------------------------------------------

/// Alerts pending, firing or silenced.
#[derive(Serialize, ToSchema)]
struct AlertsResponse {
    /// Every alert not resolved.
    alerts: Vec<ActiveAlert>,
}

/// Alerts now: pending, firing or silenced, with their values and labels.
#[utoipa::path(
    get,
    path = "/api/v1/alerts",
    tag = "alerts",
    responses((status = 200, description = "OK.", body = AlertsResponse), ReadErrors),
    security((), ("read_token" = []), ("admin_token" = [])),
)]
async fn list_alerts(State(api): State<Api>) -> Result<Json<AlertsResponse>, ApiError> {
    let alerts = alerts(&api).alerts().await?;
    Ok(Json(AlertsResponse { alerts }))
}

/// One entry of the alert history.
#[derive(Serialize, ToSchema)]
struct HistoryItem {
    #[serde(flatten)]
    event: HistoryEvent,
    /// When (RFC 3339).
    at: String,
}

/// The alert history over a range.
#[derive(Serialize, ToSchema)]
struct HistoryResponse {
    /// Start of the range covered (RFC 3339).
    from: String,
    /// End of the range covered (exclusive).
    to: String,
    /// Newest first.
    history: Vec<HistoryItem>,
}

/// The alert history: every transition (pending, firing, resolved,
/// silenced) and every notification sent or failed, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/alerts/history",
    tag = "alerts",
    params(HistoryParams),
    responses((status = 200, description = "OK.", body = HistoryResponse), ReadErrors),
    security((), ("read_token" = []), ("admin_token" = [])),
)]
async fn history(State(api): State<Api>, params: Params) -> Result<Json<HistoryResponse>, ApiError> {
    let params = Parameters::new::<HistoryParams>(params)?;
    let range = params.range()?;
    let rule_id = params.get("rule").map(|r| id("rule", r)).transpose()?;
    let limit = match params.get("limit") {
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=MAX_HISTORY_LIMIT).contains(l))
            .ok_or_else(|| ApiError::BadRequest(format!("limit must be a number from 1 to {MAX_HISTORY_LIMIT}")))?,
        None => DEFAULT_HISTORY_LIMIT,
    };
    let events = alerts(&api)
        .store()
        .history(HistoryFilter {
            rule_id,
            from_ms: range.from_ms,
            to_ms: range.to_ms,
            limit,
        })
        .await?;
    let history = events
        .into_iter()
        .map(|event| HistoryItem {
            at: rfc3339(event.entry.at_ms),
            event,
        })
        .collect();
    Ok(Json(HistoryResponse {
        from: rfc3339(range.from_ms),
        to: rfc3339(range.to_ms),
        history,
    }))
}
