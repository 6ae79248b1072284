//! The JSON API under `/api/v1`, and `/healthz`.
//!
//! Reads are open; writes need the admin token (`Authorization: Bearer …`).
//! Every failure is JSON `{"error": "..."}` with a status that says whose
//! fault it is; 5xx details go to the log only.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, TimeZone, Utc};
use querypulse_proto::Fingerprint;
use querypulse_web::source::{AgentSummary, PoolSeries, PoolSummary, QueryDetail, QuerySeries, SlowFilter, SlowQuery};
use querypulse_web::{QueryFilter, QuerySummary, ServiceSummary, Source, SourceError, TimeRange};
use serde::Serialize;
use serde_json::json;

use crate::agent_settings::AgentSettings;
use crate::catalog::Catalog;
use crate::now_ms;
use crate::retention::Retention;
use crate::store::Store;

/// Default range of reads: the last hour.
const DEFAULT_RANGE_MS: i64 = 3_600_000;
/// Longest range one read may cover.
const MAX_RANGE_MS: i64 = 400 * 24 * 3_600_000;
/// Most steps one series request may return.
const MAX_POINTS: i64 = 11_000;
/// Steps chosen automatically: the smallest of these giving at most ~120 points.
const NICE_STEPS_MS: [i64; 10] = [
    10_000,
    30_000,
    60_000,
    300_000,
    900_000,
    1_800_000,
    3_600_000,
    21_600_000,
    86_400_000,
    604_800_000,
];
/// Default and largest number of slow samples per request.
const DEFAULT_SLOW_LIMIT: usize = 100;
const MAX_SLOW_LIMIT: usize = 1_000;

/// Every API failure, as JSON `{"error": "..."}` with a fitting status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed; the message says which parameter and why.
    #[error("{0}")]
    BadRequest(String),
    /// No or a wrong admin token.
    #[error("{0}")]
    Unauthorized(String),
    /// Writes are switched off.
    #[error("{0}")]
    Forbidden(String),
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with what is stored (a name taken, a channel in
    /// use).
    #[error("{0}")]
    Conflict(String),
    /// Something failed inside the collector; details go to the log only.
    #[error("internal error")]
    Internal(String),
}

impl From<SourceError> for ApiError {
    fn from(error: SourceError) -> Self {
        ApiError::Internal(error.0)
    }
}

impl From<querypulse_web::SettingsError> for ApiError {
    fn from(error: querypulse_web::SettingsError) -> Self {
        match error {
            querypulse_web::SettingsError::Invalid(message) => ApiError::BadRequest(message),
            querypulse_web::SettingsError::Internal(detail) => ApiError::Internal(detail),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::BadRequest(rejection.body_text())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        ApiError::BadRequest(format!("invalid JSON body: {}", rejection.body_text()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "API request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

/// What the API needs besides the read source: where settings live.
#[derive(Debug, Clone)]
pub struct Admin {
    /// The catalog database.
    pub catalog: Catalog,
    /// The store, which applies retention changes live.
    pub store: Store,
    /// Token required for writes; writes are refused when `None`.
    pub token: Option<String>,
    /// Settings pushed to every connected agent.
    pub agent_settings: Arc<tokio::sync::watch::Sender<AgentSettings>>,
    /// The alert engine (rules, channels, silences, alerts).
    pub alerts: crate::alerts::Alerts,
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
        .route("/metrics", get(metrics))
        .route("/api/v1/services", get(services))
        .route("/api/v1/queries", get(queries))
        .route("/api/v1/queries/{fingerprint}", get(query_detail))
        .route("/api/v1/queries/{fingerprint}/series", get(query_series))
        .route("/api/v1/pools", get(pools))
        .route("/api/v1/pools/{service}/{instance}/{pool}/series", get(pool_series))
        .route("/api/v1/slow-queries", get(slow_queries))
        .route("/api/v1/agents", get(agents))
        .route("/api/v1/retention", get(get_retention).put(put_retention))
        .route("/api/v1/verify", get(verify_store))
        .route(
            "/api/v1/agent-settings",
            get(get_agent_settings).put(put_agent_settings),
        )
        .merge(crate::alerts::api::routes())
        .route("/api/v1/{*rest}", axum::routing::any(unknown))
        .with_state(Api { source, admin })
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Statements `/metrics` exports unless `limit` says otherwise.
const METRICS_LIMIT: usize = 500;

/// The Prometheus exposition (see [`crate::metrics`]). `window`: the trailing
/// window, 1 minute to 1 day (default 5m); `limit`: statements exported, the
/// ones with the most total time (1 to 100,000; default 500).
async fn metrics(State(api): State<Api>, params: Params) -> Result<Response, ApiError> {
    let params = Parameters::new(params, &["window", "limit"])?;
    let window_ms = match params.get("window") {
        Some(window) => parse_step(window)?,
        None => 300_000,
    };
    if !(60_000..=86_400_000).contains(&window_ms) {
        return Err(ApiError::BadRequest("window must be between 1m and 1d".into()));
    }
    let limit = match params.get("limit") {
        Some(limit) => limit
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=100_000).contains(n))
            .ok_or_else(|| ApiError::BadRequest(format!("limit={limit:?} is not a number from 1 to 100000")))?,
        None => METRICS_LIMIT,
    };
    let now_ms = now_ms();
    let range = summary_range(TimeRange::last(now_ms, window_ms));
    let source = api.source.clone();
    let (queries, pools, agents) = read(move || {
        let filter = QueryFilter { service: None, range };
        Ok((source.queries(&filter)?, source.pools(range)?, source.agents()?))
    })
    .await?;
    let body = crate::metrics::render(crate::metrics::Scrape {
        window_s: window_ms / 1_000,
        limit,
        now_ms,
        queries,
        pools,
        agents,
    });
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response())
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

type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

/// Query parameters, with unknown names refused (a typo should not silently
/// widen a query).
struct Parameters(HashMap<String, String>);

impl Parameters {
    fn new(params: Params, known: &[&str]) -> Result<Parameters, ApiError> {
        let Query(params) = params?;
        if let Some(key) = params.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(ApiError::BadRequest(format!(
                "unknown parameter {key:?}; expected one of {}",
                known.join(", ")
            )));
        }
        Ok(Parameters(params))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    fn range(&self) -> Result<TimeRange, ApiError> {
        parse_range(&self.0)
    }

    fn service(&self) -> Option<String> {
        self.get("service").map(str::to_owned)
    }
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

/// Summaries over long ranges are read from whole hours (and over ranges of
/// an hour or more from whole minutes), so the range widens to those
/// boundaries; the response says which range was used.
fn summary_range(range: TimeRange) -> TimeRange {
    range.for_summary()
}

/// Parses a step: seconds (`60`), or a number with a unit (`10s`, `5m`,
/// `1h`, `1d`).
pub(crate) fn parse_step(value: &str) -> Result<i64, ApiError> {
    let invalid = || {
        ApiError::BadRequest(format!(
            "step={value:?} is not a duration: use seconds or 10s, 5m, 1h, 1d"
        ))
    };
    let value = value.trim();
    let (digits, unit_ms) = match value.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (value, 1_000),
        Some((at, _)) => {
            let unit = match &value[at..] {
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return Err(invalid()),
            };
            (&value[..at], unit)
        }
    };
    let n: i64 = digits.parse().map_err(|_| invalid())?;
    let step = n.checked_mul(unit_ms).ok_or_else(invalid)?;
    if step < 1_000 {
        return Err(ApiError::BadRequest("step must be at least 1s".into()));
    }
    Ok(step)
}

/// The step for a series request: given, or the smallest nice step giving at
/// most ~120 points.
fn step_for(params: &Parameters, range: TimeRange) -> Result<i64, ApiError> {
    let step = match params.get("step") {
        Some(step) => parse_step(step)?,
        None => {
            let wanted = range.length_ms() / 120;
            NICE_STEPS_MS
                .iter()
                .copied()
                .find(|s| *s >= wanted)
                .unwrap_or(NICE_STEPS_MS[NICE_STEPS_MS.len() - 1])
        }
    };
    if range.length_ms() / step > MAX_POINTS {
        return Err(ApiError::BadRequest(format!(
            "step is too small for this range: at most {MAX_POINTS} points per request"
        )));
    }
    Ok(step)
}

fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn fingerprint(value: &str) -> Result<Fingerprint, ApiError> {
    value
        .parse()
        .map_err(|e: querypulse_proto::fingerprint::ParseFingerprintError| ApiError::BadRequest(e.to_string()))
}

/// Checks `service` exists (a typo should be a 404, not an empty list).
async fn known_service(source: &Arc<dyn Source>, service: &Option<String>) -> Result<(), ApiError> {
    let Some(name) = service.clone() else {
        return Ok(());
    };
    let source = source.clone();
    let services = read(move || source.services()).await?;
    if services.iter().any(|s| s.name == name) {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!("unknown service {name:?}")))
    }
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

async fn queries(State(api): State<Api>, params: Params) -> Result<Json<QueriesResponse>, ApiError> {
    let params = Parameters::new(params, &["service", "from", "to"])?;
    let range = summary_range(params.range()?);
    let service = params.service();
    known_service(&api.source, &service).await?;
    let filter = QueryFilter { service, range };
    let source = api.source.clone();
    let mut queries = read(move || source.queries(&filter)).await?;
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

#[derive(Serialize)]
struct DetailResponse {
    from: String,
    to: String,
    #[serde(flatten)]
    detail: QueryDetail,
}

async fn query_detail(
    State(api): State<Api>,
    Path(fp): Path<String>,
    params: Params,
) -> Result<Json<DetailResponse>, ApiError> {
    let fingerprint = fingerprint(&fp)?;
    let params = Parameters::new(params, &["service", "from", "to"])?;
    let range = summary_range(params.range()?);
    let filter = QueryFilter {
        service: params.service(),
        range,
    };
    let source = api.source.clone();
    let detail = read(move || source.query_detail(fingerprint, &filter))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("fingerprint {fingerprint} was never reported")))?;
    Ok(Json(DetailResponse {
        from: rfc3339(range.from_ms),
        to: rfc3339(range.to_ms),
        detail,
    }))
}

#[derive(Serialize)]
struct SeriesResponse<T> {
    from: String,
    to: String,
    #[serde(flatten)]
    series: T,
}

async fn query_series(
    State(api): State<Api>,
    Path(fp): Path<String>,
    params: Params,
) -> Result<Json<SeriesResponse<QuerySeries>>, ApiError> {
    let fingerprint = fingerprint(&fp)?;
    let params = Parameters::new(params, &["service", "from", "to", "step"])?;
    let range = params.range()?;
    let step = step_for(&params, range)?;
    let filter = QueryFilter {
        service: params.service(),
        range,
    };
    let source = api.source.clone();
    let series = read(move || source.query_series(fingerprint, &filter, step))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("fingerprint {fingerprint} was never reported")))?;
    Ok(Json(SeriesResponse {
        from: rfc3339(range.from_ms),
        to: rfc3339(range.to_ms),
        series,
    }))
}

#[derive(Serialize)]
struct PoolsResponse {
    from: String,
    to: String,
    pools: Vec<PoolSummary>,
}

async fn pools(State(api): State<Api>, params: Params) -> Result<Json<PoolsResponse>, ApiError> {
    let params = Parameters::new(params, &["service", "from", "to"])?;
    let range = summary_range(params.range()?);
    let service = params.service();
    known_service(&api.source, &service).await?;
    let source = api.source.clone();
    let mut pools = read(move || source.pools(range)).await?;
    pools.retain(|p| service.as_ref().is_none_or(|s| *s == p.service));
    pools.sort_by(|a, b| {
        b.peak_utilization
            .total_cmp(&a.peak_utilization)
            .then_with(|| a.pool.cmp(&b.pool))
    });
    Ok(Json(PoolsResponse {
        from: rfc3339(range.from_ms),
        to: rfc3339(range.to_ms),
        pools,
    }))
}

async fn pool_series(
    State(api): State<Api>,
    Path((service, instance, pool)): Path<(String, String, String)>,
    params: Params,
) -> Result<Json<SeriesResponse<PoolSeries>>, ApiError> {
    let params = Parameters::new(params, &["from", "to", "step"])?;
    let range = params.range()?;
    let step = step_for(&params, range)?;
    let source = api.source.clone();
    let (s, i, p) = (service.clone(), instance.clone(), pool.clone());
    let series = read(move || source.pool_series(&s, &i, &p, range, step))
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no pool {pool:?} on instance {instance:?} of service {service:?}"
            ))
        })?;
    Ok(Json(SeriesResponse {
        from: rfc3339(range.from_ms),
        to: rfc3339(range.to_ms),
        series,
    }))
}

#[derive(Serialize)]
struct SlowResponse {
    from: String,
    to: String,
    slow_queries: Vec<SlowQuery>,
}

async fn slow_queries(State(api): State<Api>, params: Params) -> Result<Json<SlowResponse>, ApiError> {
    let params = Parameters::new(params, &["service", "fingerprint", "limit", "from", "to"])?;
    let range = params.range()?;
    let fingerprint = params.get("fingerprint").map(fingerprint).transpose()?;
    let limit = match params.get("limit") {
        Some(limit) => limit
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_SLOW_LIMIT).contains(l))
            .ok_or_else(|| ApiError::BadRequest(format!("limit must be a number from 1 to {MAX_SLOW_LIMIT}")))?,
        None => DEFAULT_SLOW_LIMIT,
    };
    let service = params.service();
    known_service(&api.source, &service).await?;
    let filter = SlowFilter {
        service,
        fingerprint,
        range,
        limit,
    };
    let source = api.source.clone();
    let slow_queries = read(move || source.slow_queries(&filter)).await?;
    Ok(Json(SlowResponse {
        from: rfc3339(range.from_ms),
        to: rfc3339(range.to_ms),
        slow_queries,
    }))
}

#[derive(Serialize)]
struct AgentsResponse {
    agents: Vec<AgentSummary>,
}

async fn agents(State(api): State<Api>, params: Params) -> Result<Json<AgentsResponse>, ApiError> {
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

async fn get_retention(State(api): State<Api>) -> Json<Retention> {
    Json(api.admin.store.retention())
}

/// Checks the admin token of a write request.
pub(crate) fn authorize(admin: &Admin, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &admin.token else {
        return Err(ApiError::Forbidden(
            "changes are disabled: start the collector with --admin-token (or QUERYPULSE_ADMIN_TOKEN)".into(),
        ));
    };
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::Unauthorized("this change needs the admin token: Authorization: Bearer <token>".into())
        })?;
    if crate::ingest::constant_time_eq(presented.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized("the admin token is not valid".into()))
    }
}

async fn put_retention(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Result<Json<Retention>, JsonRejection>,
) -> Result<Json<Retention>, ApiError> {
    authorize(&api.admin, &headers)?;
    let Json(retention) = body?;
    api.admin.change_retention(retention).await?;
    Ok(Json(retention))
}

/// Checks that the store's numbers agree (`querypulse verify --url`). Reads
/// every window held, so it needs the admin token.
async fn verify_store(
    State(api): State<Api>,
    headers: HeaderMap,
) -> Result<Json<crate::store::VerifyReport>, ApiError> {
    if api.admin.token.is_none() {
        return Err(ApiError::Forbidden(
            "verifying the store reads all of it, so it needs the admin token: start the collector with \
             --admin-token (or QUERYPULSE_ADMIN_TOKEN)"
                .into(),
        ));
    }
    authorize(&api.admin, &headers)?;
    let store = api.admin.store.clone();
    let report = tokio::task::spawn_blocking(move || {
        crate::store::verify_settled(
            &store,
            crate::verify_cmd::RUNNING_RETRIES,
            crate::verify_cmd::RUNNING_PAUSE,
        )
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the check failed: {e}")))?;
    if !report.is_clean() {
        tracing::warn!(
            problems = report.problems.len(),
            "verify: the store disagrees with itself"
        );
    }
    Ok(Json(report))
}

async fn get_agent_settings(State(api): State<Api>) -> Json<AgentSettings> {
    Json(*api.admin.agent_settings.borrow())
}

async fn put_agent_settings(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Result<Json<AgentSettings>, JsonRejection>,
) -> Result<Json<AgentSettings>, ApiError> {
    authorize(&api.admin, &headers)?;
    let Json(settings) = body?;
    api.admin.change_agent_settings(settings).await?;
    Ok(Json(settings))
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

    #[test]
    fn steps_parse_with_units_and_long_ranges_snap_to_whole_hours() {
        assert_eq!(parse_step("60").unwrap(), 60_000);
        assert_eq!(parse_step("10s").unwrap(), 10_000);
        assert_eq!(parse_step("5m").unwrap(), 300_000);
        assert_eq!(parse_step("1h").unwrap(), 3_600_000);
        assert_eq!(parse_step("1d").unwrap(), 86_400_000);
        for bad in ["", "0", "5x", "-1m", "1.5h", "99999999999999999999d"] {
            assert!(parse_step(bad).is_err(), "{bad}");
        }
        let day = summary_range(TimeRange {
            from_ms: 3_600_000 + 5,
            to_ms: 27 * 3_600_000 - 5,
        });
        assert_eq!((day.from_ms, day.to_ms), (3_600_000, 27 * 3_600_000));
        let short = TimeRange {
            from_ms: 5,
            to_ms: 600_000,
        };
        assert_eq!(summary_range(short), short);
    }
}
