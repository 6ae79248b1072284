//! The alerting API: rules, channels and silences (CRUD; changes need the
//! admin token), alerts and their history, dry runs and test notifications.

use std::collections::HashMap;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{Api, ApiError, authorize, parse_range};
use querypulse_alerts::{Alerts, AlertsError};
use querypulse_alerts::{Channel, ChannelInput, HistoryFilter, RuleInput, Silence, SilenceInput, StoredRule};
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
pub(crate) fn routes() -> Router<Api> {
    Router::new()
        .route("/api/v1/rules", get(list_rules).post(create_rule))
        .route("/api/v1/rules/{id}", get(get_rule).put(update_rule).delete(delete_rule))
        .route("/api/v1/rules/{id}/evaluate", post(evaluate_rule))
        .route("/api/v1/channels", get(list_channels).post(create_channel))
        .route(
            "/api/v1/channels/{id}",
            get(get_channel).put(update_channel).delete(delete_channel),
        )
        .route("/api/v1/channels/{id}/test", post(test_channel))
        .route("/api/v1/silences", get(list_silences).post(create_silence))
        .route(
            "/api/v1/silences/{id}",
            get(get_silence).put(update_silence).delete(delete_silence),
        )
        .route("/api/v1/alerts", get(list_alerts))
        .route("/api/v1/alerts/history", get(history))
}

fn alerts(api: &Api) -> &Alerts {
    &api.admin.alerts
}

fn id(what: &str, raw: &str) -> Result<i64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::BadRequest(format!("{what} id {raw:?} is not a number")))
}

/// A rule as the API returns it: the dashboard's `RuleInfo`, serialized.
fn rule_json(stored: &StoredRule) -> Value {
    serde_json::to_value(stored.info()).unwrap_or_default()
}

fn created(value: Value) -> Response {
    (StatusCode::CREATED, Json(value)).into_response()
}

// -- rules -------------------------------------------------------------------

async fn list_rules(State(api): State<Api>) -> Result<Json<Value>, ApiError> {
    let rules: Vec<Value> = alerts(&api).store().rules().await?.iter().map(rule_json).collect();
    Ok(Json(json!({ "rules": rules })))
}

async fn get_rule(State(api): State<Api>, Path(raw): Path<String>) -> Result<Json<Value>, ApiError> {
    let id = id("rule", &raw)?;
    let stored = alerts(&api)
        .store()
        .rule(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no rule {id}")))?;
    Ok(Json(rule_json(&stored)))
}

async fn create_rule(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Result<Json<RuleInput>, JsonRejection>,
) -> Result<Response, ApiError> {
    authorize(&api.admin, &headers)?;
    let Json(input) = body?;
    let stored = alerts(&api).create_rule(input).await?;
    Ok(created(rule_json(&stored)))
}

async fn update_rule(
    State(api): State<Api>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Result<Json<RuleInput>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    authorize(&api.admin, &headers)?;
    let id = id("rule", &raw)?;
    let Json(input) = body?;
    let stored = alerts(&api).update_rule(id, input).await?;
    Ok(Json(rule_json(&stored)))
}

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

async fn evaluate_rule(State(api): State<Api>, Path(raw): Path<String>) -> Result<Json<Value>, ApiError> {
    let id = id("rule", &raw)?;
    let result = alerts(&api).dry_run(id).await?;
    Ok(Json(serde_json::to_value(result).unwrap_or_default()))
}

// -- channels ----------------------------------------------------------------

/// A channel as the API returns it: the dashboard's `ChannelInfo`, serialized.
fn channel_json(id: i64, channel: &Channel) -> Value {
    serde_json::to_value(channel.info(id)).unwrap_or_default()
}

async fn list_channels(State(api): State<Api>) -> Result<Json<Value>, ApiError> {
    let channels: Vec<Value> = alerts(&api)
        .store()
        .channels()
        .await?
        .iter()
        .map(|(id, c)| channel_json(*id, c))
        .collect();
    Ok(Json(json!({ "channels": channels })))
}

async fn get_channel(State(api): State<Api>, Path(raw): Path<String>) -> Result<Json<Value>, ApiError> {
    let id = id("channel", &raw)?;
    let channel = alerts(&api)
        .store()
        .channel(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no channel {id}")))?;
    Ok(Json(channel_json(id, &channel)))
}

async fn create_channel(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Result<Json<ChannelInput>, JsonRejection>,
) -> Result<Response, ApiError> {
    authorize(&api.admin, &headers)?;
    let Json(input) = body?;
    let (id, channel) = alerts(&api).create_channel(input).await?;
    Ok(created(channel_json(id, &channel)))
}

async fn update_channel(
    State(api): State<Api>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Result<Json<ChannelInput>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    authorize(&api.admin, &headers)?;
    let id = id("channel", &raw)?;
    let Json(input) = body?;
    let channel = alerts(&api).update_channel(id, input).await?;
    Ok(Json(channel_json(id, &channel)))
}

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

async fn test_channel(
    State(api): State<Api>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&api.admin, &headers)?;
    let id = id("channel", &raw)?;
    match alerts(&api).test_channel(id).await {
        Ok(()) => Ok(Json(json!({ "delivered": true })).into_response()),
        Err(AlertsError::Delivery(e)) => Ok((
            StatusCode::BAD_GATEWAY,
            Json(json!({ "delivered": false, "error": e.0 })),
        )
            .into_response()),
        Err(other) => Err(other.into()),
    }
}

// -- silences ----------------------------------------------------------------

/// A silence as the API returns it: the dashboard's `SilenceInfo`, serialized.
fn silence_json(id: i64, silence: &Silence, now: i64) -> Value {
    serde_json::to_value(silence.info(id, now)).unwrap_or_default()
}

async fn list_silences(State(api): State<Api>) -> Result<Json<Value>, ApiError> {
    let now = now_ms();
    let silences: Vec<Value> = alerts(&api)
        .store()
        .silences()
        .await?
        .iter()
        .map(|(id, s)| silence_json(*id, s, now))
        .collect();
    Ok(Json(json!({ "silences": silences })))
}

async fn get_silence(State(api): State<Api>, Path(raw): Path<String>) -> Result<Json<Value>, ApiError> {
    let id = id("silence", &raw)?;
    let (_, silence) = alerts(&api)
        .store()
        .silences()
        .await?
        .into_iter()
        .find(|(i, _)| *i == id)
        .ok_or_else(|| ApiError::NotFound(format!("no silence {id}")))?;
    Ok(Json(silence_json(id, &silence, now_ms())))
}

async fn create_silence(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Result<Json<SilenceInput>, JsonRejection>,
) -> Result<Response, ApiError> {
    authorize(&api.admin, &headers)?;
    let Json(input) = body?;
    let (id, silence) = alerts(&api).create_silence(input).await?;
    Ok(created(silence_json(id, &silence, now_ms())))
}

async fn update_silence(
    State(api): State<Api>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Result<Json<SilenceInput>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    authorize(&api.admin, &headers)?;
    let id = id("silence", &raw)?;
    let Json(input) = body?;
    let silence = alerts(&api).update_silence(id, input).await?;
    Ok(Json(silence_json(id, &silence, now_ms())))
}

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

async fn list_alerts(State(api): State<Api>) -> Result<Json<Value>, ApiError> {
    let alerts = alerts(&api).alerts().await?;
    Ok(Json(json!({ "alerts": alerts })))
}

async fn history(
    State(api): State<Api>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(params) = params?;
    if let Some(key) = params
        .keys()
        .find(|k| !["rule", "from", "to", "limit"].contains(&k.as_str()))
    {
        return Err(ApiError::BadRequest(format!(
            "unknown parameter {key:?}; expected one of rule, from, to, limit"
        )));
    }
    let range = parse_range(&params)?;
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
    let history: Vec<Value> = events
        .iter()
        .map(|e| {
            let mut v = serde_json::to_value(e).unwrap_or_default();
            if let Some(map) = v.as_object_mut() {
                map.insert("at".into(), rfc3339(e.entry.at_ms).into());
            }
            v
        })
        .collect();
    Ok(Json(json!({
        "from": rfc3339(range.from_ms),
        "to": rfc3339(range.to_ms),
        "history": history,
    })))
}
