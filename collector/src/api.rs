//! The JSON API under `/api/v1`, and `/healthz`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, TimeZone, Utc};
use querypulse_web::{QueryFilter, QuerySummary, ServiceSummary, Source, SourceError, TimeRange};
use serde::Serialize;
use serde_json::json;

use crate::now_ms;

/// Default range of reads: the last hour.
const DEFAULT_RANGE_MS: i64 = 3_600_000;
/// Longest range one read may cover.
const MAX_RANGE_MS: i64 = 400 * 24 * 3_600_000;

/// Every API failure, as JSON `{"error": "..."}` with a fitting status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed; the message says which parameter and why.
    #[error("{0}")]
    BadRequest(String),
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Something failed inside the collector; details go to the log only.
    #[error("internal error")]
    Internal(String),
}

impl From<SourceError> for ApiError {
    fn from(error: SourceError) -> Self {
        ApiError::Internal(error.0)
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::BadRequest(rejection.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "API request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

#[derive(Clone)]
struct Api {
    source: Arc<dyn Source>,
}

/// The API routes, reading through `source`.
pub fn router(source: Arc<dyn Source>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/services", get(services))
        .route("/api/v1/queries", get(queries))
        .route("/api/v1/{*rest}", axum::routing::any(unknown))
        .with_state(Api { source })
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn unknown() -> ApiError {
    ApiError::NotFound("no such API endpoint; see /api/v1/services and /api/v1/queries".into())
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
struct ServicesResponse {
    services: Vec<ServiceSummary>,
}

async fn services(State(api): State<Api>) -> Result<Json<ServicesResponse>, ApiError> {
    let mut services = read(move || api.source.services()).await?;
    services.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(ServicesResponse { services }))
}

#[derive(Serialize)]
struct QueriesResponse {
    from: String,
    to: String,
    queries: Vec<QuerySummary>,
}

/// Parses a time parameter: RFC 3339 (`2026-11-27T10:00:00Z`) or Unix epoch
/// milliseconds.
pub(crate) fn parse_time(name: &str, value: &str) -> Result<i64, ApiError> {
    let value = value.trim();
    let invalid = || {
        ApiError::BadRequest(format!(
            "{name}={value:?} is not a time: use RFC 3339 (2026-11-27T10:00:00Z) or Unix epoch milliseconds"
        ))
    };
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        let ms: i64 = value.parse().map_err(|_| invalid())?;
        return Utc
            .timestamp_millis_opt(ms)
            .single()
            .map(|t| t.timestamp_millis())
            .ok_or_else(invalid);
    }
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_millis())
        .map_err(|_| invalid())
}

/// The `from`/`to` range of a request; the last hour by default.
pub(crate) fn parse_range(params: &HashMap<String, String>) -> Result<TimeRange, ApiError> {
    let now = now_ms();
    let to = params
        .get("to")
        .map(|v| parse_time("to", v))
        .transpose()?
        .unwrap_or(now);
    let from = params
        .get("from")
        .map(|v| parse_time("from", v))
        .transpose()?
        .unwrap_or(to - DEFAULT_RANGE_MS);
    if from >= to {
        return Err(ApiError::BadRequest("from must be earlier than to".into()));
    }
    if to - from > MAX_RANGE_MS {
        return Err(ApiError::BadRequest("the range may cover at most 400 days".into()));
    }
    Ok(TimeRange {
        from_ms: from,
        to_ms: to,
    })
}

fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn reject_unknown(params: &HashMap<String, String>, known: &[&str]) -> Result<(), ApiError> {
    match params.keys().find(|k| !known.contains(&k.as_str())) {
        Some(key) => Err(ApiError::BadRequest(format!(
            "unknown parameter {key:?}; expected one of {}",
            known.join(", ")
        ))),
        None => Ok(()),
    }
}

async fn queries(
    State(api): State<Api>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<QueriesResponse>, ApiError> {
    let Query(params) = params?;
    reject_unknown(&params, &["service", "from", "to"])?;
    let range = parse_range(&params)?;
    let service = params.get("service").filter(|s| !s.is_empty()).cloned();
    let filter = QueryFilter {
        service: service.clone(),
        range,
    };
    let source = api.source.clone();
    let mut queries = read(move || {
        if let Some(name) = &service
            && !source.services()?.iter().any(|s| &s.name == name)
        {
            return Ok(None);
        }
        source.queries(&filter).map(Some)
    })
    .await?
    .ok_or_else(|| {
        ApiError::NotFound(format!(
            "unknown service {:?}",
            params.get("service").cloned().unwrap_or_default()
        ))
    })?;
    queries.sort_by(|a, b| {
        b.total_ms
            .total_cmp(&a.total_ms)
            .then_with(|| a.fingerprint.cmp(&b.fingerprint))
    });
    Ok(Json(QueriesResponse {
        from: rfc3339(range.from_ms),
        to: rfc3339(range.to_ms),
        queries,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_rfc3339_or_epoch_millis() {
        assert_eq!(parse_time("from", "1700000000000").unwrap(), 1_700_000_000_000);
        assert_eq!(parse_time("from", "2023-11-14T22:13:20Z").unwrap(), 1_700_000_000_000);
        assert_eq!(
            parse_time("from", "2023-11-14T23:13:20+01:00").unwrap(),
            1_700_000_000_000
        );
        for bad in [
            "yesterday",
            "",
            "-5",
            "2023-13-01T00:00:00Z",
            "99999999999999999999",
            "1e12",
        ] {
            let err = parse_time("from", bad).unwrap_err();
            assert!(
                matches!(err, ApiError::BadRequest(ref m) if m.contains("from=")),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn ranges_must_be_ordered_and_bounded() {
        let params = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let range = parse_range(&params(&[("from", "1000"), ("to", "2000")])).unwrap();
        assert_eq!((range.from_ms, range.to_ms), (1_000, 2_000));
        let default = parse_range(&params(&[("to", "7200000")])).unwrap();
        assert_eq!(default.from_ms, 3_600_000);
        assert!(parse_range(&params(&[("from", "2000"), ("to", "1000")])).is_err());
        assert!(parse_range(&params(&[("from", "0"), ("to", "99999999999999")])).is_err());
    }
}
