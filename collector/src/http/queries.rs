//! `/api/v1/services`, `/api/v1/queries…` and `/api/v1/slow-queries`.

use axum::Json;
use axum::extract::{Path, State};
use querypulse_domain::source::{QueryDetail, QuerySeries, SlowFilter, SlowQuery};
use querypulse_domain::source::{QueryFilter, QuerySummary, ServiceSummary};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::openapi::ReadErrors;
use super::params::{Parameters, Params, QuerySeriesParams, SlowParams, SummaryParams};
use super::params::{fingerprint, known_service, rfc3339, step_for, summary_range};
use super::{Api, SeriesResponse, read};

/// Default and largest number of slow samples per request.
pub(super) const DEFAULT_SLOW_LIMIT: usize = 100;
pub(super) const MAX_SLOW_LIMIT: usize = 1_000;
/// Every service that has reported.
#[derive(Serialize, ToSchema)]
pub(super) struct ServicesResponse {
    /// By name.
    services: Vec<ServiceSummary>,
}

/// Services that have reported, with their instance and statement counts.
#[utoipa::path(
    get,
    path = "/api/v1/services",
    tag = "queries",
    responses((status = 200, description = "OK.", body = ServicesResponse), ReadErrors),
    security((), ("read_token" = []), ("admin_token" = [])),
)]
pub(super) async fn services(State(api): State<Api>) -> Result<Json<ServicesResponse>, ApiError> {
    let mut services = read(move || api.source.services()).await?;
    services.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(ServicesResponse { services }))
}

/// Statements over a range, the most total time first.
#[derive(Serialize, ToSchema)]
pub(super) struct QueriesResponse {
    /// Start of the range covered (RFC 3339).
    from: String,
    /// End of the range covered (exclusive).
    to: String,
    /// One per service and statement; percentiles from the fleet-wide merged
    /// histogram.
    queries: Vec<QuerySummary>,
}

/// Top statements: calls, errors, total and mean time, and fleet-wide
/// p50/p95/p99 over a range, the most total time first.
#[utoipa::path(
    get,
    path = "/api/v1/queries",
    tag = "queries",
    params(SummaryParams),
    responses((status = 200, description = "OK.", body = QueriesResponse), ReadErrors),
    security((), ("read_token" = []), ("admin_token" = [])),
)]
pub(super) async fn queries(State(api): State<Api>, params: Params) -> Result<Json<QueriesResponse>, ApiError> {
    let params = Parameters::new::<SummaryParams>(params)?;
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

/// One statement over a range.
#[derive(Serialize, ToSchema)]
pub(super) struct DetailResponse {
    /// Start of the range covered (RFC 3339).
    from: String,
    /// End of the range covered (exclusive).
    to: String,
    #[serde(flatten)]
    detail: QueryDetail,
}

/// One statement: its summary per service and its instances over a range.
#[utoipa::path(
    get,
    path = "/api/v1/queries/{fingerprint}",
    tag = "queries",
    params(
        ("fingerprint" = String, Path, description = "16 lowercase hex digits.", pattern = "^[0-9a-f]{16}$"),
        SummaryParams,
    ),
    responses((status = 200, description = "OK.", body = DetailResponse), ReadErrors),
    security((), ("read_token" = []), ("admin_token" = [])),
)]
pub(super) async fn query_detail(
    State(api): State<Api>,
    Path(fp): Path<String>,
    params: Params,
) -> Result<Json<DetailResponse>, ApiError> {
    let fingerprint = fingerprint(&fp)?;
    let params = Parameters::new::<SummaryParams>(params)?;
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

/// A statement's history in steps: calls, errors, mean and p50/p95/p99.
#[utoipa::path(
    get,
    path = "/api/v1/queries/{fingerprint}/series",
    tag = "queries",
    params(
        ("fingerprint" = String, Path, description = "16 lowercase hex digits.", pattern = "^[0-9a-f]{16}$"),
        QuerySeriesParams,
    ),
    responses((status = 200, description = "OK.", body = SeriesResponse<QuerySeries>), ReadErrors),
    security((), ("read_token" = []), ("admin_token" = [])),
)]
pub(super) async fn query_series(
    State(api): State<Api>,
    Path(fp): Path<String>,
    params: Params,
) -> Result<Json<SeriesResponse<QuerySeries>>, ApiError> {
    let fingerprint = fingerprint(&fp)?;
    let params = Parameters::new::<QuerySeriesParams>(params)?;
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

/// Slow executions sampled by the agents.
#[derive(Serialize, ToSchema)]
pub(super) struct SlowResponse {
    /// Start of the range covered (RFC 3339).
    from: String,
    /// End of the range covered (exclusive).
    to: String,
    /// Newest first.
    slow_queries: Vec<SlowQuery>,
}

/// The slow-query log: executions over the agents' slow threshold, newest
/// first.
#[utoipa::path(
    get,
    path = "/api/v1/slow-queries",
    tag = "queries",
    params(SlowParams),
    responses((status = 200, description = "OK.", body = SlowResponse), ReadErrors),
    security((), ("read_token" = []), ("admin_token" = [])),
)]
pub(super) async fn slow_queries(State(api): State<Api>, params: Params) -> Result<Json<SlowResponse>, ApiError> {
    let params = Parameters::new::<SlowParams>(params)?;
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
